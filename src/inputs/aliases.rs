//! Aliases. (1) Env bridge aliases (contract §1.8): `vnetenv` / `vnetenvdata` on
//! `inputs.interfaces[*].bridge`, `inputs.vms.*.interfaces[*].bridge` and `inputs.vm_bridge`
//! are rewritten for the runtime env, with upstream's exact warnings and errors. (2) Field
//! aliases (contract §1.3): `proxmox_node` → `node_name`, `storage_pool` → `datastore_id`,
//! `storage_snippets` → `snippets_datastore_id` (module level; `proxmox_node` also per VM).
//! Knows nothing about validation or the typed model.

use serde_json::{Map, Value};

use super::pyval::py_repr;

/// `alias → [(env, bridge)]`; env lookups are case-insensitive.
const BRIDGE_ALIASES: &[(&str, &[(&str, &str)])] = &[
    (
        "vnetenv",
        &[
            ("dev", "vnetdev"),
            ("development", "vnetdev"),
            ("stag", "vnetstag"),
            ("stage", "vnetstag"),
            ("staging", "vnetstag"),
            ("prod", "vnetprod"),
            ("production", "vnetprod"),
        ],
    ),
    (
        "vnetenvdata",
        &[
            ("shared", "vnetdata"),
            ("dev", "vnetddev"),
            ("development", "vnetddev"),
            ("stag", "vnetdstg"),
            ("stage", "vnetdstg"),
            ("staging", "vnetdstg"),
            ("prod", "vnetdprd"),
            ("production", "vnetdprd"),
        ],
    ),
];

fn alias_map(alias: &str) -> Option<&'static [(&'static str, &'static str)]> {
    BRIDGE_ALIASES
        .iter()
        .find(|(a, _)| *a == alias)
        .map(|(_, m)| *m)
}

/// Resolves one alias (already lower-cased) for `env`; the error is upstream's exact text.
pub fn resolve_bridge_alias(alias: &str, env: &str) -> Result<String, String> {
    let Some(map) = alias_map(alias) else {
        return Err(format!("unknown env bridge alias: {}", py_repr(alias)));
    };
    let token = crate::yaml::py_strip(env).to_lowercase();
    if let Some((_, bridge)) = map.iter().find(|(e, _)| *e == token) {
        return Ok((*bridge).to_string());
    }
    let mut keys: Vec<&str> = map.iter().map(|(e, _)| *e).collect();
    keys.sort_unstable();
    let supported = keys.join(", ");
    if token.is_empty() {
        return Err(format!(
            "{alias} bridge alias requires HYOPS_ENV to be set (supported: {supported})"
        ));
    }
    Err(format!(
        "{alias} bridge alias is unsupported for env={} (supported: {supported}). Use an explicit bridge (for example vnetmgmt/vnetdata) instead.",
        py_repr(env)
    ))
}

/// Rewrites every bridge alias in place. Returns the warnings; on any failure returns the
/// first error (after attempting every rewrite, as upstream does).
pub fn rewrite_bridge_aliases(inputs: &mut Value, env: &str) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let Value::Object(data) = inputs else {
        return Ok(warnings);
    };
    if let Some(ifaces) = data.get_mut("interfaces") {
        rewrite_ifaces(ifaces, "inputs.interfaces", env, &mut warnings, &mut errors);
    }
    if let Some(Value::Object(vms)) = data.get_mut("vms") {
        for (key, cfg) in vms.iter_mut() {
            if let Value::Object(cfg) = cfg {
                if let Some(ifaces) = cfg.get_mut("interfaces") {
                    let field = format!("inputs.vms[{key}].interfaces");
                    rewrite_ifaces(ifaces, &field, env, &mut warnings, &mut errors);
                }
            }
        }
    }
    if let Some(Value::String(vm_bridge)) = data.get("vm_bridge") {
        let alias = crate::yaml::py_strip(vm_bridge).to_lowercase();
        if alias_map(&alias).is_some() {
            match resolve_bridge_alias(&alias, env) {
                Ok(resolved) => {
                    warnings.push(format!(
                        "resolved inputs.vm_bridge={alias} -> {resolved} (env={env})"
                    ));
                    data.insert("vm_bridge".into(), Value::String(resolved));
                }
                Err(e) => errors.push(e),
            }
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(warnings),
    }
}

fn rewrite_ifaces(
    ifaces: &mut Value,
    field: &str,
    env: &str,
    warnings: &mut Vec<String>,
    errors: &mut Vec<String>,
) {
    let Value::Array(items) = ifaces else { return };
    for (i, nic) in items.iter_mut().enumerate() {
        let Value::Object(nic) = nic else { continue };
        let Some(Value::String(bridge)) = nic.get("bridge") else {
            continue;
        };
        let alias = crate::yaml::py_strip(bridge).to_lowercase();
        if alias_map(&alias).is_none() {
            continue;
        }
        match resolve_bridge_alias(&alias, env) {
            Ok(resolved) => {
                warnings.push(format!(
                    "resolved {field}[{}].bridge={alias} -> {resolved} (env={env})",
                    i + 1
                ));
                nic.insert("bridge".into(), Value::String(resolved));
            }
            Err(e) => errors.push(e),
        }
    }
}

/// Module-level field aliases: `(alias, canonical)`.
pub const FIELD_ALIASES: &[(&str, &str)] = &[
    ("proxmox_node", "node_name"),
    ("storage_pool", "datastore_id"),
    ("storage_snippets", "snippets_datastore_id"),
];

/// Folds field aliases into their canonical keys (module level, and `proxmox_node` per VM).
/// The alias key is removed; when both are set and differ, the canonical key wins and a
/// warning says so.
pub fn fold_field_aliases(inputs: &mut Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Value::Object(data) = inputs else {
        return warnings;
    };
    for (alias, canonical) in FIELD_ALIASES {
        fold_one(data, alias, canonical, "inputs.", &mut warnings);
    }
    if let Some(Value::Object(vms)) = data.get_mut("vms") {
        for (key, cfg) in vms.iter_mut() {
            if let Value::Object(cfg) = cfg {
                let prefix = format!("inputs.vms[{key}].");
                fold_one(cfg, "proxmox_node", "node_name", &prefix, &mut warnings);
            }
        }
    }
    warnings
}

fn fold_one(
    map: &mut Map<String, Value>,
    alias: &str,
    canonical: &str,
    prefix: &str,
    warnings: &mut Vec<String>,
) {
    let Some(alias_value) = map.remove(alias) else {
        return;
    };
    let canonical_set = match map.get(canonical) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !crate::yaml::py_strip(s).is_empty(),
        Some(_) => true,
    };
    if canonical_set {
        if map.get(canonical) != Some(&alias_value) && !alias_value.is_null() {
            warnings.push(format!(
                "{prefix}{alias} ignored because {prefix}{canonical} is set"
            ));
        }
    } else if !alias_value.is_null() {
        map.insert(canonical.to_string(), alias_value);
    }
}
