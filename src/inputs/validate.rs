//! This engine's own input rules, written in the upstream message style (wrapped like the
//! validator's `ValueError`s): clone mode, limits, NIC model/firewall/mtu/vlan, per-VM node,
//! module overrides, and the module interfaces in single-VM mode; the ranges of the typed
//! model (a number hyops-pve cannot carry is refused, never replaced); and VM keys that name
//! the same VM once trimmed. The upstream rules themselves live in [`super::upstream`]; the
//! JSON entry points [`validate_addressing_contract`] and [`validate_platform_vm`] read the
//! JSON as `json.loads` would give it and run those. Works on the merged JSON tree; knows
//! nothing about the typed model, Proxmox or the filesystem.

use serde_json::{Map, Value};

use crate::yaml::{py_strip, PyValue};

use super::error::{InputsError, ValidationFailure};
use super::pyval::{as_int, get};
use super::upstream;

type Rule = Result<(), ValidationFailure>;

fn fail(msg: String) -> ValidationFailure {
    ValidationFailure::validator(msg)
}

/// The NIC models Proxmox accepts for `net<N>` (engine extension `interfaces[].model`).
pub const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

pub use super::upstream::{is_placeholder, is_vm_key};

/// `validate_addressing_contract` on JSON inputs (see [`upstream::addressing_contract`]).
pub fn validate_addressing_contract(inputs: &Value) -> Rule {
    match PyValue::from(inputs) {
        PyValue::Dict(d) => upstream::addressing_contract(&d),
        _ => Ok(()),
    }
}

/// The module validator on JSON inputs (see [`upstream::platform_vm`]).
pub fn validate_platform_vm(inputs: &Value) -> Rule {
    upstream::platform_vm(&PyValue::from(inputs))
}

// ---------------------------------------------------------------------------------------------
// engine extensions (not upstream; same message style, wrapped like validator ValueErrors)
// ---------------------------------------------------------------------------------------------

/// Rules for the fields this engine adds: `clone_mode`, `limits`, module/per-VM `node_name`,
/// module storage/bridge overrides, `ssh_keys`, NIC `model`/`firewall`/`mtu`/`vlan_id`, and the
/// module interfaces in single-VM mode (upstream never checks them there). Call after
/// [`validate_platform_vm`] and after field aliases were folded in.
pub fn validate_engine_extensions(inputs: &Value) -> Rule {
    let Value::Object(data) = inputs else {
        return Ok(());
    };
    if let Some(v) = get(data, "clone_mode") {
        let ok = matches!(v, Value::String(s) if ["full", "linked"].contains(&s.trim().to_lowercase().as_str()));
        if !ok {
            return Err(fail(
                "inputs.clone_mode must be one of: full, linked".into(),
            ));
        }
    }
    if let Some(v) = get(data, "cloud_init_mode") {
        let ok = matches!(v, Value::String(s) if ["snippets", "native"].contains(&s.trim().to_lowercase().as_str()));
        if !ok {
            return Err(fail(
                "inputs.cloud_init_mode must be one of: snippets, native".into(),
            ));
        }
    }
    if let Some(Value::Object(r)) = get(data, "post_apply_ssh_readiness") {
        if matches!(get(r, "wait_cloud_init"), Some(v) if !v.is_boolean()) {
            return Err(fail(
                "inputs.post_apply_ssh_readiness.wait_cloud_init must be a boolean when set".into(),
            ));
        }
    }
    if let Some(v) = get(data, "limits") {
        let Value::Object(limits) = v else {
            return Err(fail("inputs.limits must be a mapping when set".into()));
        };
        let mut unknown: Vec<&str> = limits
            .keys()
            .map(String::as_str)
            .filter(|k| !["global", "per_node", "per_storage"].contains(k))
            .collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            return Err(fail(format!(
                "inputs.limits has unknown keys: {}",
                unknown.join(", ")
            )));
        }
        for key in ["global", "per_node", "per_storage"] {
            if let Some(v) = get(limits, key) {
                let field = format!("inputs.limits.{key}");
                match as_int(v) {
                    None => return Err(fail(format!("{field} must be an integer when set"))),
                    Some(n) if n < 1 => return Err(fail(format!("{field} must be >= 1"))),
                    Some(_) => {}
                }
            }
        }
    }
    for key in [
        "node_name",
        "datastore_id",
        "snippets_datastore_id",
        "network_bridge",
        "ssh_username",
        "ssh_public_key",
    ] {
        if matches!(get(data, key), Some(v) if !v.is_string()) {
            return Err(fail(format!("inputs.{key} must be a string when set")));
        }
    }
    match get(data, "ssh_keys") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !matches!(item, Value::String(s) if !s.trim().is_empty()) {
                    return Err(fail(format!(
                        "inputs.ssh_keys[{}] must be a non-empty string",
                        i + 1
                    )));
                }
            }
        }
        Some(_) => return Err(fail("inputs.ssh_keys must be a list when set".into())),
    }

    let vms = match get(data, "vms") {
        Some(Value::Object(m)) if !m.is_empty() => Some(m),
        _ => None,
    };
    let module_ifaces = get(data, "interfaces");
    match vms {
        None => {
            if let Some(Value::Array(a)) = module_ifaces {
                if !a.is_empty() {
                    upstream::interfaces(
                        Some(&PyValue::from(&Value::Array(a.clone()))),
                        "inputs.interfaces",
                    )?;
                }
            }
            validate_nic_extensions(module_ifaces, "inputs.interfaces")?;
        }
        Some(vms) => {
            validate_nic_extensions(module_ifaces, "inputs.interfaces")?;
            for (raw_key, cfg) in vms {
                let key = py_strip(raw_key);
                let Value::Object(cfg) = cfg else { continue };
                if matches!(get(cfg, "node_name"), Some(v) if !matches!(v, Value::String(s) if !py_strip(s).is_empty()))
                {
                    return Err(fail(format!(
                        "inputs.vms[{key}].node_name must be a non-empty string"
                    )));
                }
                if matches!(get(cfg, "vm_name"), Some(v) if !v.is_string()) {
                    return Err(fail(format!(
                        "inputs.vms[{key}].vm_name must be a string when set"
                    )));
                }
                for ci in [
                    "cloud_init_user_data",
                    "cloud_init_network_data",
                    "cloud_init_meta_data",
                ] {
                    if matches!(get(cfg, ci), Some(v) if !v.is_string()) {
                        return Err(fail(format!(
                            "inputs.vms[{key}].{ci} must be a string when set"
                        )));
                    }
                }
                validate_nic_extensions(
                    get(cfg, "interfaces"),
                    &format!("inputs.vms[{key}].interfaces"),
                )?;
            }
        }
    }
    Ok(())
}

fn validate_nic_extensions(value: Option<&Value>, field: &str) -> Rule {
    let Some(Value::Array(items)) = value else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let nic_field = format!("{field}[{}]", i + 1);
        let Value::Object(nic) = item else { continue };
        if let Some(v) = get(nic, "model") {
            let ok = matches!(v, Value::String(s) if NIC_MODELS.contains(&s.trim().to_lowercase().as_str()));
            if !ok {
                return Err(fail(format!(
                    "{nic_field}.model must be one of: {}",
                    NIC_MODELS.join(", ")
                )));
            }
        }
        if matches!(get(nic, "firewall"), Some(v) if !v.is_boolean()) {
            return Err(fail(format!(
                "{nic_field}.firewall must be a boolean when set"
            )));
        }
        int_in_range(get(nic, "mtu"), &format!("{nic_field}.mtu"), 1, 65520)?;
        int_in_range(
            get(nic, "vlan_id"),
            &format!("{nic_field}.vlan_id"),
            1,
            4094,
        )?;
    }
    Ok(())
}

fn int_in_range(v: Option<&Value>, field: &str, lo: i128, hi: i128) -> Rule {
    let Some(v) = v else { return Ok(()) };
    let Some(n) = super::pyval::as_int_lenient(v) else {
        return Err(fail(format!("{field} must be an integer when set")));
    };
    if n < lo || n > hi {
        return Err(fail(format!("{field} must be between {lo} and {hi}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// what the typed model can carry
// ---------------------------------------------------------------------------------------------

/// The largest value of each integer field of the typed model (`u32` counts and VMIDs,
/// `u16` ports); smaller values are checked by the upstream and extension rules.
const RANGES: &[(&str, u64)] = &[
    ("cpu_cores", u32::MAX as u64),
    ("vm_id", u32::MAX as u64),
    ("template_vm_id", u32::MAX as u64),
    ("ssh_proxy_jump_port", u16::MAX as u64),
];
const READINESS_RANGES: &[(&str, u64)] = &[
    ("target_port", u16::MAX as u64),
    ("ssh_proxy_jump_port", u16::MAX as u64),
];

fn out_of_range(field: &str, v: &Value, max: u64) -> Result<(), InputsError> {
    match v {
        Value::Number(n) if n.as_u64().is_some_and(|x| x > max) => {
            Err(InputsError::OutOfRange(format!(
                "{field} is out of range: {n} is more than {max}, the largest value hyops-pve carries for it"
            )))
        }
        _ => Ok(()),
    }
}

/// Integers the typed model cannot hold (`cpu_cores: 4294967297`, `vm_id: 4294967296`,
/// `target_port: 70000`) are refused with a range message instead of being replaced by a
/// default or dropped (a deliberate difference: `hyops` accepts any size). Runs for every
/// command, destroy included.
pub fn check_ranges(inputs: &Value) -> Result<(), InputsError> {
    let Value::Object(data) = inputs else {
        return Ok(());
    };
    for (key, max) in RANGES {
        if let Some(v) = data.get(*key) {
            out_of_range(&format!("inputs.{key}"), v, *max)?;
        }
    }
    if let Some(Value::Object(r)) = data.get("post_apply_ssh_readiness") {
        for (key, max) in READINESS_RANGES {
            if let Some(v) = r.get(*key) {
                out_of_range(&format!("inputs.post_apply_ssh_readiness.{key}"), v, *max)?;
            }
        }
    }
    if let Some(Value::Object(vms)) = data.get("vms") {
        for (key, cfg) in vms {
            if let Some(v) = cfg.get("vm_id") {
                out_of_range(
                    &format!("inputs.vms[{}].vm_id", py_strip(key)),
                    v,
                    u32::MAX as u64,
                )?;
            }
        }
    }
    Ok(())
}

/// Two `vms` keys that are the same VM once surrounding whitespace is stripped (`app` and
/// `" app"`): the pack keys its Terraform map by the trimmed key, so hyops would fail at
/// apply; hyops-pve refuses before anything runs instead of folding two VMs into one.
pub fn check_vm_key_collisions(inputs: &Value) -> Result<(), InputsError> {
    let Some(Value::Object(vms)) = inputs.get("vms") else {
        return Ok(());
    };
    let mut seen: Map<String, Value> = Map::new();
    for raw in vms.keys() {
        let key = py_strip(raw).to_string();
        if let Some(Value::String(first)) = seen.get(&key) {
            return Err(InputsError::Contract(format!(
                "inputs.vms has two keys for the VM {key}: {} and {}; keep one",
                crate::yaml::py_repr_str(first),
                crate::yaml::py_repr_str(raw)
            )));
        }
        seen.insert(key, Value::String(raw.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_rule_normalises_case_and_dashes() {
        assert!(is_placeholder("change-me"));
        assert!(is_placeholder("vnet-change-me-1"));
        assert!(is_placeholder("x_replace_me"));
        assert!(!is_placeholder("vmbr0"));
        assert!(!is_placeholder("changeme"));
    }

    #[test]
    fn vm_key_pattern_bounds() {
        assert!(is_vm_key("a"));
        assert!(is_vm_key(&"a".repeat(63)));
        assert!(!is_vm_key(&"a".repeat(64)));
        assert!(!is_vm_key("-a"));
        assert!(!is_vm_key("a_b"));
        assert!(!is_vm_key(""));
    }
}
