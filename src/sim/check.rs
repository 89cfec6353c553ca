//! Parameter verification as PVE's `JSONSchema.pm` does it, driven by the project spec: unknown
//! and missing parameters, types, ranges, enums, patterns, named format verifiers and property
//! strings (`net0: virtio=…,bridge=vmbr0,tag=10`). Messages follow PVE's wording. Knows nothing
//! about VMs, the cluster model or HTTP.

use super::spec::{lookup_indexed, Endpoint, FormatRef, NamedFormat, Schema, Spec};
use regex::Regex;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

/// Per-parameter error messages, as in PVE's `errors` map.
pub type Errors = BTreeMap<String, String>;

pub const NOT_IN_SCHEMA: &str =
    "property is not defined in schema and the schema does not allow additional properties";
pub const MISSING: &str = "property is missing and it is not optional";

/// Verify all request parameters (path variables included) against an endpoint.
pub fn verify(spec: &Spec, ep: &Endpoint, params: &BTreeMap<String, String>) -> Result<(), Errors> {
    let mut errors = Errors::new();
    for (name, value) in params {
        match spec.param(ep, name) {
            None => {
                errors.insert(name.clone(), NOT_IN_SCHEMA.to_string());
            }
            Some(schema) => check_value(spec, name, schema, value, &mut errors),
        }
        if let Some(req) = spec.param(ep, name).and_then(|s| s.requires.as_ref()) {
            if !params.contains_key(req) {
                errors.insert(
                    req.clone(),
                    format!("missing property - '{name}' requires this property"),
                );
            }
        }
    }
    for (name, schema) in &ep.params {
        if !schema.optional && schema.index.is_none() && !params.contains_key(name) {
            errors.insert(name.clone(), MISSING.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Check one value against its schema; errors go under `path` (or `path.key` for property
/// strings).
pub fn check_value(spec: &Spec, path: &str, schema: &Schema, value: &str, errors: &mut Errors) {
    if let Err(msg) = check_scalar(schema, value) {
        errors.insert(path.to_string(), msg);
        return;
    }
    let Some(format) = &schema.format else {
        return;
    };
    match format {
        FormatRef::Inline(keys) => check_property_string(spec, path, keys, value, errors),
        FormatRef::Named(name) => match spec.formats.get(name) {
            Some(NamedFormat::Keys(keys)) => {
                check_property_string(spec, path, keys, value, errors);
                if !errors
                    .keys()
                    .any(|k| k == path || k.starts_with(&format!("{path}.")))
                {
                    if let Err(msg) = validate_hash_format(spec, name, keys, value) {
                        errors.insert(path.to_string(), format!("invalid format - {msg}"));
                    }
                }
            }
            Some(NamedFormat::Kind(kind)) if kind == "list" => {
                let base = name.trim_end_matches("-list");
                for item in split_list(value) {
                    if let Err(msg) = verify_named(base, item) {
                        errors.insert(path.to_string(), format!("invalid format - {msg}"));
                        return;
                    }
                }
            }
            _ => {
                if let Err(msg) = verify_named(name, value) {
                    errors.insert(path.to_string(), format!("invalid format - {msg}"));
                }
            }
        },
    }
}

fn check_scalar(schema: &Schema, value: &str) -> Result<(), String> {
    match schema.kind.as_deref().unwrap_or("string") {
        "integer" => {
            let ok = value.strip_prefix(['+', '-']).unwrap_or(value);
            if ok.is_empty() || !ok.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("type check ('integer') failed - got '{value}'"));
            }
            let n: f64 = value
                .parse::<i128>()
                .map(|v| v as f64)
                .map_err(|_| format!("type check ('integer') failed - got '{value}'"))?;
            check_range(schema, n)?;
        }
        "number" => {
            let n: f64 = value
                .parse()
                .map_err(|_| format!("type check ('number') failed - got '{value}'"))?;
            check_range(schema, n)?;
        }
        "boolean" => {
            if parse_bool(value).is_none() {
                return Err(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        _ => {
            if let Some(max) = schema.max_length {
                if value.chars().count() > max {
                    return Err(format!("value may only be {max} characters long"));
                }
            }
            if let Some(min) = schema.min_length {
                if value.chars().count() < min {
                    return Err(format!("value must be at least {min} characters long"));
                }
            }
        }
    }
    if let Some(values) = &schema.enum_values {
        if !values.iter().any(|v| v == value) {
            return Err(format!(
                "value '{value}' does not have a value in the enumeration '{}'",
                values.join(", ")
            ));
        }
    }
    if let Some(p) = &schema.pattern {
        if !pattern_matches(p, value) {
            return Err("value does not match the regex pattern".to_string());
        }
    }
    Ok(())
}

fn check_range(schema: &Schema, n: f64) -> Result<(), String> {
    if let Some(min) = schema.minimum {
        if n < min {
            return Err(format!("value must have a minimum value of {min}"));
        }
    }
    if let Some(max) = schema.maximum {
        if n > max {
            return Err(format!("value must have a maximum value of {max}"));
        }
    }
    Ok(())
}

/// PVE's boolean parser: `1|true|yes|on` and `0|false|no|off`, case-insensitive.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Split a `-list` value as PVE does (`[\0\s,;]+`).
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == '\0' || c.is_whitespace() || c == ',' || c == ';')
        .filter(|s| !s.is_empty())
}

/// Whether `value` matches a PVE pattern. PVE anchors patterns (`^(?:…)$`).
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = match cache.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let re = guard
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(&format!("^(?:{pattern})$")).ok());
    // A pattern the regex crate cannot compile never matches: the request is refused
    // rather than silently accepted.
    re.as_ref().is_some_and(|r| r.is_match(value))
}

/// Parse a property string into key → value, with `default_key`, `keyAlias` and `alias`
/// resolved. Errors are keyed by property key.
pub fn parse_property_string(
    keys: &BTreeMap<String, Schema>,
    value: &str,
) -> Result<BTreeMap<String, String>, Errors> {
    let mut out = BTreeMap::new();
    let mut errors = Errors::new();
    let default_key = keys
        .iter()
        .find(|(_, s)| s.default_key)
        .map(|(k, _)| k.clone());
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match &default_key {
                Some(dk) => (dk.clone(), part.to_string()),
                None => {
                    errors.insert(
                        part.to_string(),
                        "value without key, but schema does not define a default key".to_string(),
                    );
                    continue;
                }
            },
        };
        let (k, v) = match keys.get(&k) {
            Some(s) if s.key_alias.is_some() => {
                // `virtio=MAC`: the key names the model, the value is the aliased key's.
                let ka = s.key_alias.clone().unwrap_or_default();
                if out.insert(ka.clone(), k.clone()).is_some() {
                    errors.insert(
                        ka,
                        format!("duplicate key in comma-separated list property: {k}"),
                    );
                }
                (s.alias.clone().unwrap_or(k), v)
            }
            Some(s) if s.alias.is_some() => (s.alias.clone().unwrap_or(k), v),
            _ => (k, v),
        };
        if out.contains_key(&k) {
            errors.insert(
                k.clone(),
                format!("duplicate key in comma-separated list property: {k}"),
            );
            continue;
        }
        out.insert(k, v);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn check_property_string(
    spec: &Spec,
    path: &str,
    keys: &BTreeMap<String, Schema>,
    value: &str,
    errors: &mut Errors,
) {
    let parsed = match parse_property_string(keys, value) {
        Ok(p) => p,
        Err(e) => {
            for (k, msg) in e {
                errors.insert(format!("{path}.{k}"), msg);
            }
            return;
        }
    };
    for (k, v) in &parsed {
        match lookup_indexed(keys, k) {
            None => {
                errors.insert(format!("{path}.{k}"), NOT_IN_SCHEMA.to_string());
            }
            Some(s) => {
                check_value(spec, &format!("{path}.{k}"), s, v, errors);
                if let Some(req) = &s.requires {
                    if !parsed.contains_key(req) {
                        errors.insert(
                            format!("{path}.{req}"),
                            format!("missing property - '{k}' requires this property"),
                        );
                    }
                }
            }
        }
    }
    for (k, s) in keys {
        if !s.optional && s.alias.is_none() && s.key_alias.is_none() && !parsed.contains_key(k) {
            errors.insert(format!("{path}.{k}"), MISSING.to_string());
        }
    }
}

/// The x86-64 micro-architecture level models qemu-server defines besides the QEMU models
/// (`CPUConfig.pm` `$builtin_models_by_arch`, lines 67–84).
pub const BUILTIN_X86_64_LEVELS: &[&str] =
    &["x86-64-v2", "x86-64-v2-AES", "x86-64-v3", "x86-64-v4"];

/// The validator a hash format registers besides its keys (`register_format($name, $fmt,
/// $validator)`). `pve-vm-cpu-conf`: `validate_vm_cpu_conf` (qemu-server `CPUConfig.pm`)
/// refuses an unknown built-in `cputype` and any `custom-` model (the simulator defines none).
fn validate_hash_format(
    _spec: &Spec,
    name: &str,
    keys: &BTreeMap<String, Schema>,
    value: &str,
) -> Result<(), String> {
    if name != "pve-vm-cpu-conf" {
        return Ok(());
    }
    let parsed = parse_property_string(keys, value).unwrap_or_default();
    let Some(cputype) = parsed.get("cputype") else {
        return Err("CPU is missing cputype".into());
    };
    if let Some(custom) = cputype.strip_prefix("custom-") {
        return Err(format!("Custom cputype '{custom}' not found"));
    }
    let known = keys
        .get("reported-model")
        .and_then(|s| s.enum_values.as_ref())
        .is_some_and(|models| models.iter().any(|m| m == cputype))
        || BUILTIN_X86_64_LEVELS.contains(&cputype.as_str());
    if !known {
        return Err(format!(
            "Built-in cputype '{cputype}' is not defined (missing 'custom-' prefix?)"
        ));
    }
    if parsed.contains_key("reported-model") {
        return Err("Property 'reported-model' not allowed in VM-specific CPU config.".into());
    }
    Ok(())
}

fn re(p: &str) -> impl Fn(&str) -> bool + '_ {
    move |v| pattern_matches(p, v)
}

/// The verifiers PVE implements in Perl (`formats` value `"perl-code"` in the dump).
/// Unknown names accept any value (the spec lists each format the simulator meets).
pub fn verify_named(name: &str, v: &str) -> Result<(), String> {
    let ok = match name {
        "pve-node" => re(r"(?i:[a-z0-9]([a-z0-9\-]*[a-z0-9])?)")(v),
        "pve-vmid" => re(r"[1-9][0-9]{2,8}")(v),
        "pve-storage-id" => re(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])")(v),
        "pve-configid" => re(r"(?i:[a-z][a-z0-9_-]+)")(v),
        "pve-poolid" => re(r"[A-Za-z0-9_\-]+")(v),
        "pve-realm" => re(r"[A-Za-z][A-Za-z.\-_\d]+")(v),
        "pve-bridge-id" => re(r"[-_.\w\d]+")(v),
        "dns-name" => re(
            r"(?:[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)*",
        )(v),
        "urlencoded" => {
            if !re(r"[-%a-zA-Z0-9_.!~*'()]*")(v) {
                return Err(format!("invalid urlencoded string: {v}"));
            }
            true
        }
        "mac-addr" => re(r"(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})")(v),
        "pve-tag-list" => split_list(v).all(re(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)")),
        "pve-tag" => re(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)")(v),
        "address" => v.parse::<std::net::IpAddr>().is_ok(),
        "ipv4" => v.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => v.parse::<Ipv6Addr>().is_ok(),
        "address-list" => split_list(v).all(|a| a.parse::<std::net::IpAddr>().is_ok()),
        "CIDR" => v.parse::<ipnet::IpNet>().is_ok(),
        "pve-ipv4-config" => v == "dhcp" || v.parse::<ipnet::Ipv4Net>().is_ok(),
        "pve-ipv6-config" => v == "dhcp" || v == "auto" || v.parse::<ipnet::Ipv6Net>().is_ok(),
        "pve-volume-id" => re(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+")(v),
        "pve-volume-id-or-qm-path" | "pve-volume-id-or-absolute-path" => {
            v == "none"
                || v == "cdrom"
                || v.starts_with('/')
                || verify_named("pve-volume-id", v).is_ok()
        }
        "disk-size" => re(r"\d+(\.\d+)?[KMGT]?")(v),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(named_error(name, v))
    }
}

/// The exact `die` text of each pve-common verifier (`JSONSchema.pm`@f665029e; the storage
/// and bridge ids from `parse_id` / `parse_bridge_id`), without the trailing newline.
fn named_error(name: &str, v: &str) -> String {
    match name {
        "pve-node" => "value does not look like a valid node name".into(),
        "pve-vmid" => "value does not look like a valid VM ID".into(),
        "pve-storage-id" if v.len() < 2 => {
            format!("storage ID '{v}' cannot be shorter than 2 characters")
        }
        "pve-storage-id" => format!("storage ID '{v}' contains illegal characters"),
        "pve-configid" => format!("invalid configuration ID '{v}'"),
        "pve-bridge-id" => format!("invalid bridge ID '{v}'"),
        "dns-name" => "value does not look like a valid DNS name".into(),
        "mac-addr" => "value does not look like a valid unicast MAC address".into(),
        "pve-tag-list" | "pve-tag" => "invalid characters in tag".into(),
        "address" => format!("value does not look like a valid address: {v}"),
        "ipv4" => "value does not look like a valid IPv4 address".into(),
        "ipv6" => "value does not look like a valid IPv6 address".into(),
        "CIDR" => "value does not look like a valid CIDR network".into(),
        "pve-ipv4-config" => "value does not look like a valid ipv4 network configuration".into(),
        "pve-ipv6-config" => "value does not look like a valid ipv6 network configuration".into(),
        "address-list" => format!("value does not look like a valid address: {v}"),
        "disk-size" => format!("value does not look like a valid disk size: {v}"),
        _ => format!("value does not look like a valid {name}: {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::spec::spec;

    fn put_config(params: &[(&str, &str)]) -> Result<(), Errors> {
        let s = spec().unwrap();
        let ep = s
            .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
            .unwrap();
        let mut p: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.insert("node".into(), "pve1".into());
        p.insert("vmid".into(), "100".into());
        verify(s, ep, &p)
    }

    #[test]
    fn net_tag_above_4094_is_refused_under_the_nested_key() {
        let e = put_config(&[("net0", "virtio,bridge=vmbr0,tag=4095")]).unwrap_err();
        assert_eq!(e["net0.tag"], "value must have a maximum value of 4094");
    }

    #[test]
    fn net_with_model_alias_mac_is_accepted() {
        put_config(&[(
            "net1",
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10,mtu=1500",
        )])
        .unwrap();
    }

    #[test]
    fn unknown_model_is_refused() {
        let e = put_config(&[("net0", "virtio2,bridge=vmbr0")]).unwrap_err();
        assert!(e["net0.model"].contains("enumeration"), "{e:?}");
    }

    #[test]
    fn raw_ssh_key_fails_the_urlencoded_format() {
        let e = put_config(&[("sshkeys", "ssh-ed25519 AAAA me")]).unwrap_err();
        assert_eq!(
            e["sshkeys"],
            "invalid format - invalid urlencoded string: ssh-ed25519 AAAA me"
        );
        put_config(&[("sshkeys", "ssh-ed25519%20AAAA%20me")]).unwrap();
    }

    #[test]
    fn ipconfig_gateway_requires_ip() {
        put_config(&[("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1")]).unwrap();
        let e = put_config(&[("ipconfig0", "gw=10.0.0.1")]).unwrap_err();
        assert!(e.contains_key("ipconfig0.ip"), "{e:?}");
        let e = put_config(&[("ipconfig0", "ip=10.0.0.500/24")]).unwrap_err();
        assert!(e["ipconfig0.ip"].starts_with("invalid format"), "{e:?}");
    }

    #[test]
    fn unknown_parameter_and_description_length() {
        let e = put_config(&[("bogus", "1")]).unwrap_err();
        assert_eq!(e["bogus"], NOT_IN_SCHEMA);
        let long = "x".repeat(8193);
        let e = put_config(&[("description", &long)]).unwrap_err();
        assert_eq!(e["description"], "value may only be 8192 characters long");
    }

    #[test]
    fn missing_required_parameter_is_reported() {
        let s = spec().unwrap();
        let ep = s
            .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/resize")
            .unwrap();
        let p: BTreeMap<String, String> = [("node", "pve1"), ("vmid", "100"), ("disk", "scsi0")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(verify(s, ep, &p).unwrap_err()["size"], MISSING);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn property_string_checks_never_panic(v in ".{0,60}") {
            let _ = put_config(&[("net0", &v)]);
            let _ = put_config(&[("ipconfig0", &v)]);
            let _ = put_config(&[("memory", &v), ("tags", &v)]);
        }
    }
}
