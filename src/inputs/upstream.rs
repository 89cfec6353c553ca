//! The input rules `hyops` itself runs for `platform/onprem/platform-vm`, statement for
//! statement and message for message, on the Python data model: the addressing contract
//! (`hyops/runtime/addressing_contract.py`, raised bare), the module validator
//! (`hyops/validators/platform/onprem/_proxmox_vm.py` and `platform_vm.py`: helper errors
//! wrapped once, `ValueError`s wrapped by the registry), and the check that the resolved
//! inputs can be written to `inputs_resolved.json` (`json.dumps(..., sort_keys=True)`).
//! Values are read with Python's semantics: `isinstance` (a bool is not an int),
//! `str(v or "").strip()`, `repr()` in messages, dict keys of any type.
//!
//! Not here: the NetBox reachability probe of the addressing contract (the NetBox engine
//! owns it) and anything that reads state. Knows nothing about the typed model.

use std::cmp::Ordering;

use num_bigint::BigInt;

use crate::yaml::{py_repr_str, py_strip, PyDict, PyValue};

use super::error::ValidationFailure;
use super::pyval::{ip_address, ip_interface, IfaceParsed, IpParsed};

type Rule = Result<(), ValidationFailure>;

fn helper(msg: String) -> ValidationFailure {
    ValidationFailure::helper(msg)
}
fn fail(msg: String) -> ValidationFailure {
    ValidationFailure::validator(msg)
}

/// `d.get(key)`, with `None` for an explicit null as Python's `is None` checks read it.
fn get<'a>(d: &'a PyDict, key: &str) -> Option<&'a PyValue> {
    match d.get(key) {
        None | Some(PyValue::None) => None,
        Some(v) => Some(v),
    }
}

fn str_or_empty(v: Option<&PyValue>) -> String {
    PyValue::str_or_empty(v)
}

// ---------------------------------------------------------------------------------------------
// common.py helpers (ModuleValidationError: not wrapped by the validator registry)
// ---------------------------------------------------------------------------------------------

fn require_mapping<'a>(
    v: Option<&'a PyValue>,
    field: &str,
) -> Result<&'a PyDict, ValidationFailure> {
    match v {
        Some(PyValue::Dict(d)) => Ok(d),
        _ => Err(helper(format!("{field} must be a mapping"))),
    }
}

fn require_non_empty_str(v: Option<&PyValue>, field: &str) -> Result<String, ValidationFailure> {
    match v {
        Some(PyValue::Str(s)) if !py_strip(s).is_empty() => Ok(py_strip(s).to_string()),
        _ => Err(helper(format!("{field} must be a non-empty string"))),
    }
}

fn require_positive_int(v: Option<&PyValue>, field: &str) -> Result<BigInt, ValidationFailure> {
    let Some(PyValue::Int(n)) = v else {
        return Err(helper(format!("{field} must be an integer")));
    };
    if *n < BigInt::from(1) {
        return Err(helper(format!("{field} must be >= 1")));
    }
    Ok(n.clone())
}

fn require_str_list(v: Option<&PyValue>, field: &str) -> Result<Vec<String>, ValidationFailure> {
    let Some(PyValue::List(items)) = v else {
        return Err(helper(format!("{field} must be a list")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| require_non_empty_str(Some(item), &format!("{field}[{}]", i + 1)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// _proxmox_vm.py helpers
// ---------------------------------------------------------------------------------------------

/// `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn is_vm_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$` (full match).
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The placeholder rule: upper-cased, `-` → `_`; starts with `CHANGE_ME` or contains
/// `CHANGE_ME_` / `REPLACE_`.
pub fn is_placeholder(s: &str) -> bool {
    let u = py_strip(s).to_uppercase().replace('-', "_");
    u.starts_with("CHANGE_ME") || u.contains("CHANGE_ME_") || u.contains("REPLACE_")
}

/// `_reject_placeholder`: a non-empty string (helper error) that is not a placeholder
/// (validator error, the stripped value shown with `repr`).
fn reject_placeholder(v: Option<&PyValue>, field: &str) -> Result<String, ValidationFailure> {
    let token = require_non_empty_str(v, field)?;
    if is_placeholder(&token) {
        return Err(fail(format!(
            "{field} must not contain placeholder values (found {})",
            py_repr_str(&token)
        )));
    }
    Ok(token)
}

/// `_require_vm_name`: a non-empty string, lower-cased, matching the key pattern.
fn require_vm_name(v: Option<&PyValue>, field: &str) -> Result<String, ValidationFailure> {
    let name = require_non_empty_str(v, field)?.to_lowercase();
    if !is_vm_key(&name) {
        return Err(fail(format!(
            "{field} must match ^[a-z0-9][a-z0-9-]{{0,62}}$"
        )));
    }
    Ok(name)
}

// ---------------------------------------------------------------------------------------------
// addressing contract (§1.9) — raised bare, outside the validator registry
// ---------------------------------------------------------------------------------------------

fn unknown_keys(d: &PyDict, allowed: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = d
        .keys()
        .map(PyValue::py_str)
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    out.sort();
    out
}

/// `validate_addressing_contract` (every command). The NetBox probe is not part of this layer.
pub fn addressing_contract(inputs: &PyDict) -> Rule {
    let Some(raw) = get(inputs, "addressing") else {
        return Ok(());
    };
    let err = |m: &str| Err(ValidationFailure::addressing(m));
    let PyValue::Dict(addr) = raw else {
        return err("inputs.addressing must be a mapping when set");
    };
    let unknown = unknown_keys(addr, &["mode", "ipam"]);
    if !unknown.is_empty() {
        return err(&format!(
            "inputs.addressing has unknown keys: {}",
            unknown.join(", ")
        ));
    }
    let mode = str_or_empty(addr.get("mode")).to_lowercase();
    if mode != "static" && mode != "ipam" {
        return err("inputs.addressing.mode must be one of: static, ipam");
    }
    let raw_ipam = addr.get("ipam");
    if mode == "static" {
        // `raw_ipam not in (None, {})`
        let none_or_empty = match raw_ipam {
            None | Some(PyValue::None) => true,
            Some(PyValue::Dict(d)) => d.is_empty(),
            _ => false,
        };
        if !none_or_empty {
            return err("inputs.addressing.ipam is only allowed when inputs.addressing.mode=ipam");
        }
        return Ok(());
    }
    let Some(PyValue::Dict(ipam)) = raw_ipam else {
        return err("inputs.addressing.ipam must be a mapping when inputs.addressing.mode=ipam");
    };
    let unknown = unknown_keys(
        ipam,
        &[
            "provider",
            "network_state_ref",
            "ssh_proxy_jump_host",
            "ssh_proxy_jump_user",
            "ssh_proxy_jump_key_file",
        ],
    );
    if !unknown.is_empty() {
        return err(&format!(
            "inputs.addressing.ipam has unknown keys: {}",
            unknown.join(", ")
        ));
    }
    if str_or_empty(ipam.get("provider")).to_lowercase() != "netbox" {
        return err(
            "inputs.addressing.ipam.provider must be 'netbox' when inputs.addressing.mode=ipam",
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the module validator (§1.14)
// ---------------------------------------------------------------------------------------------

/// `platform_vm.validate`: skipped when `_hyops_lifecycle_command` is `destroy`; else the
/// pool rules (which dispatch to the single-VM rules) and the readiness rules.
pub fn platform_vm(inputs: &PyValue) -> Rule {
    // validate_module_inputs: `inputs must be a mapping` (ModuleValidationError).
    let PyValue::Dict(data) = inputs else {
        return Err(helper("inputs must be a mapping".into()));
    };
    platform_vm_dict(data)
}

/// [`platform_vm`] for inputs already known to be a mapping.
pub fn platform_vm_dict(data: &PyDict) -> Rule {
    if str_or_empty(data.get("_hyops_lifecycle_command")).to_lowercase() == "destroy" {
        return Ok(());
    }
    vm_pool_inputs(data)?;
    post_apply_ssh_readiness(data)
}

fn require_ipam(data: &PyDict) -> Rule {
    let Some(raw) = get(data, "require_ipam") else {
        return Ok(());
    };
    let PyValue::Bool(require) = raw else {
        return Err(fail(
            "inputs.require_ipam must be a boolean when set".into(),
        ));
    };
    if !require {
        return Ok(());
    }
    let Some(PyValue::Dict(addr)) = data.get("addressing") else {
        return Err(fail(
            "inputs.addressing is required when inputs.require_ipam=true".into(),
        ));
    };
    if str_or_empty(addr.get("mode")).to_lowercase() != "ipam" {
        return Err(fail(
            "inputs.addressing.mode must be ipam when inputs.require_ipam=true".into(),
        ));
    }
    let Some(PyValue::Dict(ipam)) = addr.get("ipam") else {
        return Err(fail(
            "inputs.addressing.ipam must be a mapping when inputs.require_ipam=true".into(),
        ));
    };
    if str_or_empty(ipam.get("provider")).to_lowercase() != "netbox" {
        return Err(fail(
            "inputs.addressing.ipam.provider must be netbox when inputs.require_ipam=true".into(),
        ));
    }
    Ok(())
}

fn allow_vm_set_replace(data: &PyDict) -> Rule {
    match get(data, "allow_vm_set_replace") {
        None | Some(PyValue::Bool(_)) => Ok(()),
        Some(_) => Err(fail(
            "inputs.allow_vm_set_replace must be a boolean when set".into(),
        )),
    }
}

fn template(data: &PyDict) -> Rule {
    let state_ref = str_or_empty(data.get("template_state_ref"));
    match get(data, "template_vm_id") {
        None => {
            if state_ref.is_empty() {
                return Err(fail("inputs.template_state_ref is required (recommended: core/onprem/template-image); inputs.template_vm_id is only for explicit override".into()));
            }
        }
        Some(v) => {
            require_positive_int(Some(v), "inputs.template_vm_id")?;
        }
    }
    if matches!(get(data, "template_state_ref"), Some(v) if !matches!(v, PyValue::Str(_))) {
        return Err(fail(
            "inputs.template_state_ref must be a string when set".into(),
        ));
    }
    if matches!(get(data, "template_key"), Some(v) if !matches!(v, PyValue::Str(_))) {
        return Err(fail("inputs.template_key must be a string when set".into()));
    }
    if matches!(get(data, "build_image"), Some(v) if !matches!(v, PyValue::Bool(_))) {
        return Err(fail("inputs.build_image must be a boolean when set".into()));
    }
    Ok(())
}

fn sizes(data: &PyDict) -> Rule {
    require_positive_int(get(data, "cpu_cores"), "inputs.cpu_cores")?;
    require_positive_int(get(data, "memory_mb"), "inputs.memory_mb")?;
    require_positive_int(get(data, "disk_size_gb"), "inputs.disk_size_gb")?;
    Ok(())
}

fn dns_and_tags(data: &PyDict) -> Rule {
    let servers = require_str_list(get(data, "dns_servers"), "inputs.dns_servers")?;
    if servers.is_empty() {
        return Err(fail(
            "inputs.dns_servers must contain at least one item".into(),
        ));
    }
    for (i, s) in servers.iter().enumerate() {
        match ip_address(s) {
            Err(exc) => {
                return Err(fail(format!(
                    "inputs.dns_servers[{}] is invalid: {exc}",
                    i + 1
                )))
            }
            Ok(IpParsed::V6) => {
                return Err(fail(format!("inputs.dns_servers[{}] must be IPv4", i + 1)))
            }
            Ok(IpParsed::V4(_)) => {}
        }
    }
    let tags = require_str_list(get(data, "tags"), "inputs.tags")?;
    if tags.is_empty() {
        return Err(fail("inputs.tags must contain at least one tag".into()));
    }
    Ok(())
}

fn vm_pool_inputs(data: &PyDict) -> Rule {
    require_ipam(data)?;
    allow_vm_set_replace(data)?;
    template(data)?;
    sizes(data)?;
    require_non_empty_str(get(data, "cpu_type"), "inputs.cpu_type")?;
    require_non_empty_str(get(data, "os_type"), "inputs.os_type")?;
    require_non_empty_str(get(data, "dns_domain"), "inputs.dns_domain")?;
    dns_and_tags(data)?;

    let vm_name = str_or_empty(data.get("vm_name"));
    let vms = match get(data, "vms") {
        None => None,
        Some(PyValue::Dict(d)) => Some(d),
        Some(_) => return Err(fail("inputs.vms must be a mapping when set".into())),
    };
    let vms = match vms {
        Some(d) if !d.is_empty() => d,
        _ => {
            if vm_name.is_empty() {
                return Err(fail(
                    "either inputs.vms (non-empty map) or inputs.vm_name is required".into(),
                ));
            }
            return single_vm_inputs(data);
        }
    };

    let module_ifaces = data.get("interfaces");
    let has_module_ifaces = matches!(module_ifaces, Some(PyValue::List(l)) if !l.is_empty());
    if has_module_ifaces {
        interfaces(module_ifaces, "inputs.interfaces")?;
    }

    for (raw_key, cfg) in vms.iter() {
        let key = require_vm_name(Some(raw_key), "inputs.vms.<name>")?;
        let cfg = require_mapping(Some(cfg), &format!("inputs.vms[{key}]"))?;
        if let Some(role) = get(cfg, "role") {
            require_non_empty_str(Some(role), &format!("inputs.vms[{key}].role"))?;
        }
        if let Some(id) = get(cfg, "vm_id") {
            require_positive_int(Some(id), &format!("inputs.vms[{key}].vm_id"))?;
        }
        match get(cfg, "interfaces") {
            Some(ifaces) => interfaces(Some(ifaces), &format!("inputs.vms[{key}].interfaces"))?,
            None if !has_module_ifaces => {
                return Err(fail(format!(
                    "inputs.vms[{key}].interfaces is required when module-level inputs.interfaces is empty"
                )))
            }
            None => {}
        }
    }
    Ok(())
}

fn single_vm_inputs(data: &PyDict) -> Rule {
    require_ipam(data)?;
    allow_vm_set_replace(data)?;
    require_vm_name(get(data, "vm_name"), "inputs.vm_name")?;
    if let Some(id) = get(data, "vm_id") {
        require_positive_int(Some(id), "inputs.vm_id")?;
    }
    template(data)?;
    sizes(data)?;

    let mac = require_non_empty_str(get(data, "vm_mac"), "inputs.vm_mac")?;
    if !is_mac(&mac) {
        return Err(fail(
            "inputs.vm_mac must be a valid MAC address (AA:BB:CC:DD:EE:FF)".into(),
        ));
    }
    let cidr = require_non_empty_str(get(data, "vm_ipv4_cidr"), "inputs.vm_ipv4_cidr")?;
    let gw = require_non_empty_str(get(data, "vm_gateway"), "inputs.vm_gateway")?;
    let net = match ip_interface(&cidr) {
        Err(exc) => return Err(fail(format!("inputs.vm_ipv4_cidr is invalid: {exc}"))),
        Ok(IfaceParsed::V6) => {
            return Err(fail(
                "inputs.vm_ipv4_cidr must be an IPv4 interface CIDR".into(),
            ))
        }
        Ok(IfaceParsed::V4(n)) => n,
    };
    match ip_address(&gw) {
        Err(exc) => return Err(fail(format!("inputs.vm_gateway is invalid: {exc}"))),
        Ok(IpParsed::V6) => return Err(fail("inputs.vm_gateway must be IPv4".into())),
        Ok(IpParsed::V4(ip)) => {
            if !net.trunc().contains(&ip) {
                return Err(fail(
                    "inputs.vm_gateway must be within inputs.vm_ipv4_cidr network".into(),
                ));
            }
        }
    }
    require_non_empty_str(get(data, "cpu_type"), "inputs.cpu_type")?;
    require_non_empty_str(get(data, "dns_domain"), "inputs.dns_domain")?;
    dns_and_tags(data)
}

/// `_validate_interfaces`: `field` is `inputs.interfaces` or `inputs.vms[<vm>].interfaces`.
pub(crate) fn interfaces(value: Option<&PyValue>, field: &str) -> Rule {
    let items = match value {
        Some(PyValue::List(l)) if !l.is_empty() => l,
        _ => return Err(fail(format!("{field} must be a non-empty list"))),
    };
    for (i, item) in items.iter().enumerate() {
        let idx = i + 1;
        let nic_field = format!("{field}[{idx}]");
        let nic = require_mapping(Some(item), &nic_field)?;
        reject_placeholder(nic.get("bridge"), &format!("{nic_field}.bridge"))?;

        // `mac is not None and str(mac).strip() != ""`
        if let Some(mac) = get(nic, "mac_address") {
            let text = mac.py_str();
            let text = py_strip(&text);
            if !text.is_empty() && !is_mac(text) {
                return Err(fail(format!(
                    "{nic_field}.mac_address must be a valid MAC address"
                )));
            }
        }

        let Some(ipv4) = get(nic, "ipv4") else {
            continue;
        };
        let ipv4 = require_mapping(Some(ipv4), &format!("{nic_field}.ipv4"))?;
        let address =
            reject_placeholder(ipv4.get("address"), &format!("{nic_field}.ipv4.address"))?;
        let gateway = str_or_empty(ipv4.get("gateway"));

        if address.to_lowercase() == "dhcp" {
            if !gateway.is_empty() {
                return Err(fail(format!(
                    "{nic_field}.ipv4.gateway must be empty when address is dhcp"
                )));
            }
            continue;
        }
        let net = match ip_interface(&address) {
            Err(exc) => return Err(fail(format!("{nic_field}.ipv4.address is invalid: {exc}"))),
            Ok(IfaceParsed::V6) => {
                return Err(fail(format!("{nic_field}.ipv4.address must be IPv4")))
            }
            Ok(IfaceParsed::V4(n)) => n,
        };
        if idx == 1 {
            if gateway.is_empty() {
                return Err(fail(format!(
                    "{nic_field}.ipv4.gateway is required for static primary NIC"
                )));
            }
            let gw_value = PyValue::str(gateway.clone());
            reject_placeholder(Some(&gw_value), &format!("{nic_field}.ipv4.gateway"))?;
            match ip_address(&gateway) {
                Err(exc) => {
                    return Err(fail(format!("{nic_field}.ipv4.gateway is invalid: {exc}")))
                }
                Ok(IpParsed::V6) => {
                    return Err(fail(format!("{nic_field}.ipv4.gateway must be IPv4")))
                }
                Ok(IpParsed::V4(ip)) => {
                    let network = net.trunc();
                    if !network.contains(&ip) {
                        return Err(fail(format!(
                            "{nic_field}.ipv4.gateway must be within {network}"
                        )));
                    }
                }
            }
        } else if !gateway.is_empty() {
            return Err(fail(format!(
                "{nic_field}.ipv4.gateway is only allowed on interfaces[1]"
            )));
        }
    }
    Ok(())
}

fn post_apply_ssh_readiness(data: &PyDict) -> Rule {
    let raw = match get(data, "post_apply_ssh_readiness") {
        None | Some(PyValue::Bool(_)) => return Ok(()),
        Some(PyValue::Dict(d)) => d,
        Some(_) => {
            return Err(fail(
                "inputs.post_apply_ssh_readiness must be a boolean or mapping when set".into(),
            ))
        }
    };
    for field in ["enabled", "required", "ssh_proxy_jump_auto"] {
        if matches!(get(raw, field), Some(v) if !matches!(v, PyValue::Bool(_))) {
            return Err(fail(format!(
                "inputs.post_apply_ssh_readiness.{field} must be a boolean when set"
            )));
        }
    }
    for field in [
        "target_port",
        "connectivity_timeout_s",
        "connectivity_wait_s",
        "ssh_proxy_jump_port",
    ] {
        let Some(v) = get(raw, field) else { continue };
        let PyValue::Int(n) = v else {
            return Err(fail(format!(
                "inputs.post_apply_ssh_readiness.{field} must be an integer when set"
            )));
        };
        if field == "connectivity_wait_s" {
            if *n < BigInt::from(0) {
                return Err(fail(
                    "inputs.post_apply_ssh_readiness.connectivity_wait_s must be >= 0".into(),
                ));
            }
        } else if *n < BigInt::from(1) {
            return Err(fail(format!(
                "inputs.post_apply_ssh_readiness.{field} must be >= 1"
            )));
        }
    }
    for field in [
        "target_user",
        "ssh_proxy_jump_host",
        "ssh_proxy_jump_user",
        "ssh_private_key_file",
    ] {
        if matches!(get(raw, field), Some(v) if !matches!(v, PyValue::Str(_))) {
            return Err(fail(format!(
                "inputs.post_apply_ssh_readiness.{field} must be a string when set"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// inputs_resolved.json: json.dumps(inputs, indent=2, sort_keys=True)
// ---------------------------------------------------------------------------------------------

/// The comparison class of a dict key under `sorted()`: keys of two classes cannot be
/// compared, and `json.dumps(sort_keys=True)` raises `TypeError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyClass {
    Number,
    Str,
    None,
    Date,
    NaiveDateTime,
    AwareDateTime,
}

fn key_class(k: &PyValue) -> KeyClass {
    match k {
        PyValue::Bool(_) | PyValue::Int(_) | PyValue::Float(_) => KeyClass::Number,
        PyValue::Str(_) => KeyClass::Str,
        PyValue::Date(_) => KeyClass::Date,
        PyValue::DateTime(dt) if dt.tz_offset_s.is_some() => KeyClass::AwareDateTime,
        PyValue::DateTime(_) => KeyClass::NaiveDateTime,
        _ => KeyClass::None,
    }
}

fn child_path(path: &str, key: &PyValue) -> String {
    let shown = match key {
        PyValue::Str(s) => s.clone(),
        other => other.py_repr(),
    };
    if path.ends_with(".vms") {
        format!("{path}[{shown}]")
    } else {
        format!("{path}.{shown}")
    }
}

/// Whether `hyops` can write these inputs with `json.dumps(..., sort_keys=True)`: every
/// mapping's keys must be mutually orderable (all numbers, all strings, …) and be of a JSON
/// key type, and no value may be a date or datetime. Upstream crashes with a `TypeError`
/// where this returns an error; the error here names the field instead.
pub fn recordable(v: &PyValue, path: &str) -> Result<(), String> {
    match v {
        PyValue::Dict(d) => {
            let mut keys: Vec<&PyValue> = d.keys().collect();
            if let Some(first) = keys.first() {
                let class = key_class(first);
                if let Some(other) = keys.iter().find(|k| key_class(k) != class) {
                    return Err(format!(
                        "{path} has keys of types that cannot be sorted together ({} and {}: {} and {}); hyops cannot write these inputs to inputs_resolved.json (json.dumps fails). Use string keys (quote them).",
                        first.type_name(),
                        other.type_name(),
                        first.py_repr(),
                        other.py_repr()
                    ));
                }
                if matches!(
                    class,
                    KeyClass::Date | KeyClass::NaiveDateTime | KeyClass::AwareDateTime
                ) {
                    return Err(format!(
                        "{path} has a YAML timestamp key ({}); hyops cannot write these inputs to inputs_resolved.json (json.dumps fails). Quote the key.",
                        first.py_str()
                    ));
                }
                if class == KeyClass::Number || class == KeyClass::Str {
                    keys.sort_by(|a, b| match (a, b) {
                        (PyValue::Str(x), PyValue::Str(y)) => x.cmp(y),
                        _ => crate::yaml::value::num_cmp(a, b).unwrap_or(Ordering::Equal),
                    });
                }
            }
            for k in keys {
                if let Some(child) = d.get_key(k) {
                    recordable(child, &child_path(path, k))?;
                }
            }
            Ok(())
        }
        PyValue::List(items) => {
            for (i, item) in items.iter().enumerate() {
                recordable(item, &format!("{path}[{}]", i + 1))?;
            }
            Ok(())
        }
        PyValue::Date(_) | PyValue::DateTime(_) => Err(format!(
            "{path} is a YAML timestamp ({}); hyops cannot write it to inputs_resolved.json (json.dumps fails). Quote it to pass it as text.",
            v.py_str()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::safe_load;

    fn doc(text: &str) -> PyValue {
        safe_load(text).unwrap()
    }

    #[test]
    fn mixed_key_types_cannot_be_recorded() {
        assert!(recordable(&doc("a: 1\n1: 2\n"), "inputs").is_err());
        assert!(recordable(&doc("x: {1: a, 2: b}\n"), "inputs").is_ok());
        assert!(recordable(&doc("x: [2001-01-01]\n"), "inputs").is_err());
        assert!(recordable(&doc("x: {yes: a, 2: b}\n"), "inputs").is_ok());
    }

    #[test]
    fn vm_keys_must_be_strings() {
        let f = platform_vm(&doc(
            "require_ipam: false\ntemplate_state_ref: x\ncpu_cores: 1\nmemory_mb: 1\ndisk_size_gb: 1\ncpu_type: host\nos_type: l26\ndns_domain: d\ndns_servers: [8.8.8.8]\ntags: [a]\nvms: {1: {interfaces: [{bridge: vmbr0}]}}\n",
        ))
        .unwrap_err();
        assert_eq!(f.message, "inputs.vms.<name> must be a non-empty string");
    }
}
