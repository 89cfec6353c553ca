//! The project's API spec (`proxmox-api-spec/endpoints.json`) agrees with Proxmox's official
//! schema dump (`../shared/proxmox-api-spec/pve-apidoc.json`) for every endpoint and parameter
//! it lists: names, types, formats, required flags, enums and ranges. Skips (and says so) when
//! the dump is not present.

use crate::optional;

use hyops_pve::sim::spec::{spec, FormatRef, NamedFormat, Schema};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every call the engine makes must be in the project spec.
const ENGINE_CALLS: &[(&str, &str)] = &[
    ("GET", "/version"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/resources"),
    ("POST", "/access/ticket"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/tasks"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    ),
    ("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit"),
    ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending"),
];

#[test]
fn project_spec_lists_every_engine_call() {
    let s = spec().unwrap();
    for (m, p) in ENGINE_CALLS {
        assert!(
            s.endpoint(m, p).is_some(),
            "{m} {p} missing from endpoints.json"
        );
    }
    let cfg = s
        .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
        .unwrap();
    for k in [
        "net0",
        "net31",
        "ipconfig0",
        "ipconfig31",
        "sshkeys",
        "cicustom",
        "memory",
        "agent",
        "tags",
        "cores",
        "sockets",
        "cpu",
        "onboot",
        "ostype",
        "name",
        "description",
        "nameserver",
        "searchdomain",
        "ciuser",
        "delete",
        "digest",
        "scsi0",
        "scsi30",
    ] {
        assert!(s.param(cfg, k).is_some(), "config key {k} missing");
    }
}

fn official_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/proxmox-api-spec/pve-apidoc.json")
}

fn index(node: &Value, out: &mut BTreeMap<String, Value>) {
    if let Some(p) = node["path"].as_str() {
        out.insert(p.to_string(), node["info"].clone());
    }
    for c in node["children"].as_array().into_iter().flatten() {
        index(c, out);
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => s == "1",
        Value::Bool(b) => *b,
        _ => false,
    }
}

/// Compare one schema; push each disagreement.
fn compare(
    at: &str,
    ours: &Schema,
    theirs: &Value,
    formats: &BTreeMap<String, NamedFormat>,
    official_formats: &Value,
    errs: &mut Vec<String>,
) {
    let their_type = theirs["type"].as_str();
    if ours.kind.as_deref() != their_type {
        errs.push(format!(
            "{at}: type {:?} vs official {:?}",
            ours.kind, their_type
        ));
    }
    if ours.optional != truthy(&theirs["optional"]) {
        errs.push(format!(
            "{at}: optional {} vs official {}",
            ours.optional, theirs["optional"]
        ));
    }
    let their_enum: Option<Vec<String>> = theirs["enum"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    if ours.enum_values != their_enum {
        errs.push(format!("{at}: enum differs"));
    }
    for (name, o, t) in [
        ("minimum", ours.minimum, num(&theirs["minimum"])),
        ("maximum", ours.maximum, num(&theirs["maximum"])),
        (
            "maxLength",
            ours.max_length.map(|v| v as f64),
            num(&theirs["maxLength"]),
        ),
    ] {
        if o != t {
            errs.push(format!("{at}: {name} {o:?} vs official {t:?}"));
        }
    }
    if let Some(p) = theirs["pattern"].as_str() {
        if ours.pattern.as_deref() != Some(&p.replace("(?^:", "(?:")) {
            errs.push(format!("{at}: pattern differs"));
        }
    }
    match (&ours.format, &theirs["format"]) {
        (None, Value::Null) => {}
        (Some(FormatRef::Named(n)), Value::String(t)) => {
            if n != t {
                errs.push(format!("{at}: format {n} vs official {t}"));
            }
            if let (Some(NamedFormat::Keys(keys)), Value::Object(tk)) =
                (formats.get(n), &official_formats[n])
            {
                compare_keys(
                    &format!("{at}<{n}>"),
                    keys,
                    tk,
                    formats,
                    official_formats,
                    errs,
                );
            }
        }
        (Some(FormatRef::Inline(keys)), Value::Object(tk)) => {
            compare_keys(at, keys, tk, formats, official_formats, errs);
        }
        (o, t) => errs.push(format!("{at}: format {o:?} vs official {t}")),
    }
}

fn compare_keys(
    at: &str,
    ours: &BTreeMap<String, Schema>,
    theirs: &serde_json::Map<String, Value>,
    formats: &BTreeMap<String, NamedFormat>,
    official_formats: &Value,
    errs: &mut Vec<String>,
) {
    for (k, s) in ours {
        match theirs.get(k) {
            None => errs.push(format!("{at}.{k}: not in the official schema")),
            Some(t) if s.alias.is_some() || s.key_alias.is_some() => {
                if s.alias.as_deref() != t["alias"].as_str() {
                    errs.push(format!("{at}.{k}: alias differs"));
                }
            }
            Some(t) => compare(&format!("{at}.{k}"), s, t, formats, official_formats, errs),
        }
    }
}

#[test]
fn project_spec_agrees_with_the_official_schema() {
    let path = official_path();
    let found = optional::require("official PVE schema", "SHARED_SPEC", || {
        if path.exists() {
            Ok(())
        } else {
            Err(format!("{} not found", path.display()))
        }
    });
    if found.is_none() {
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let dump: Value = serde_json::from_str(&text).unwrap();
    let mut paths = BTreeMap::new();
    for r in dump["root"].as_array().unwrap() {
        index(r, &mut paths);
    }
    let s = spec().unwrap();
    let mut errs = Vec::new();
    let mut checked = 0;
    for ep in &s.endpoints {
        let Some(info) = paths.get(&ep.path).and_then(|i| i.get(&ep.method)) else {
            errs.push(format!(
                "{} {}: not in the official schema",
                ep.method, ep.path
            ));
            continue;
        };
        if ep.protected != truthy(&info["protected"]) {
            errs.push(format!("{} {}: protected differs", ep.method, ep.path));
        }
        let their_ret = info["returns"]["type"].as_str().unwrap_or("null");
        if ep.returns != their_ret {
            errs.push(format!(
                "{} {}: returns {} vs {their_ret}",
                ep.method, ep.path, ep.returns
            ));
        }
        let props = &info["parameters"]["properties"];
        let official_required: Vec<&String> = props
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !truthy(&v["optional"]))
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        for req in official_required {
            if s.param(ep, req).is_none() {
                errs.push(format!("{} {}: required {req} missing", ep.method, ep.path));
            }
        }
        for (name, schema) in &ep.params {
            let names: Vec<String> = match (schema.index, name.strip_suffix("[n]")) {
                (Some((lo, hi)), Some(base)) => (lo..=hi).map(|i| format!("{base}{i}")).collect(),
                _ => vec![name.clone()],
            };
            for n in names {
                let at = format!("{} {} {n}", ep.method, ep.path);
                match props.get(&n) {
                    None => errs.push(format!("{at}: not in the official schema")),
                    Some(t) => {
                        compare(&at, schema, t, &s.formats, &dump["formats"], &mut errs);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 500, "only {checked} parameters compared");
    assert!(
        errs.is_empty(),
        "{} disagreements:\n{}",
        errs.len(),
        errs.join("\n")
    );
}

#[test]
fn comparison_detects_a_changed_maximum() {
    // The checker itself must be able to fail.
    let ours = Schema {
        kind: Some("integer".into()),
        maximum: Some(4095.0),
        optional: true,
        ..Schema::default()
    };
    let theirs = serde_json::json!({"type": "integer", "maximum": 4094, "optional": 1});
    let mut errs = Vec::new();
    compare(
        "net0.tag",
        &ours,
        &theirs,
        &BTreeMap::new(),
        &Value::Null,
        &mut errs,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
}
