//! The input rules of `platform/onprem/platform-vm`, message for message (contract §1.9 and
//! §1.14): the addressing contract, the upstream pool/single-VM validator, the
//! `post_apply_ssh_readiness` rules, and this engine's own extension rules (clone mode, NIC
//! model/firewall/mtu/vlan, per-VM node, limits) written in the same style. Rules run in the
//! upstream order and stop at the first failure. Works on the merged JSON tree; knows nothing
//! about the typed model, Proxmox or the filesystem.

use serde_json::{Map, Value};

use super::error::ValidationFailure;
use super::pyval::{
    as_int, get, ip_address, ip_interface, py_plain_str, py_str, IfaceParsed, IpParsed,
};

type Rule = Result<(), ValidationFailure>;

fn helper(msg: String) -> ValidationFailure {
    ValidationFailure::helper(msg)
}
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

/// Keys a pool VM entry may carry; anything else is dropped with a warning.
pub const KNOWN_VM_KEYS: &[&str] = &[
    "role",
    "vm_id",
    "vm_name",
    "interfaces",
    "cloud_init_user_data",
    "cloud_init_network_data",
    "cloud_init_meta_data",
    "node_name",
    "proxmox_node",
];

// ---------------------------------------------------------------------------------------------
// common.py helpers (ModuleValidationError: not wrapped by the validator registry)
// ---------------------------------------------------------------------------------------------

fn require_mapping<'a>(
    v: Option<&'a Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, ValidationFailure> {
    match v {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(helper(format!("{field} must be a mapping"))),
    }
}

fn require_non_empty_str(v: Option<&Value>, field: &str) -> Result<String, ValidationFailure> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(helper(format!("{field} must be a non-empty string"))),
    }
}

fn require_positive_int(v: Option<&Value>, field: &str) -> Result<i128, ValidationFailure> {
    let Some(n) = v.and_then(as_int) else {
        return Err(helper(format!("{field} must be an integer")));
    };
    if n < 1 {
        return Err(helper(format!("{field} must be >= 1")));
    }
    Ok(n)
}

fn require_str_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, ValidationFailure> {
    let Some(Value::Array(items)) = v else {
        return Err(helper(format!("{field} must be a list")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| require_non_empty_str(Some(item), &format!("{field}[{}]", i + 1)))
        .collect()
}

fn require_vm_name(v: Option<&Value>, field: &str) -> Result<String, ValidationFailure> {
    let name = require_non_empty_str(v, field)?.to_lowercase();
    if !is_vm_key(&name) {
        return Err(fail(format!(
            "{field} must match ^[a-z0-9][a-z0-9-]{{0,62}}$"
        )));
    }
    Ok(name)
}

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

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The placeholder rule: upper-cased, `-` → `_`; starts with `CHANGE_ME` or contains
/// `CHANGE_ME_` / `REPLACE_`.
pub fn is_placeholder(s: &str) -> bool {
    let u = s.to_uppercase().replace('-', "_");
    u.starts_with("CHANGE_ME") || u.contains("CHANGE_ME_") || u.contains("REPLACE_")
}

fn reject_placeholder(value: &str, field: &str) -> Rule {
    if is_placeholder(value) {
        return Err(fail(format!(
            "{field} must not contain placeholder values (found '{value}')"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// addressing contract (§1.9) — raised directly, outside the validator registry
// ---------------------------------------------------------------------------------------------

/// `validate_addressing_contract` (runs for every command). The NetBox probe is not part of
/// this layer.
pub fn validate_addressing_contract(inputs: &Value) -> Rule {
    let Value::Object(data) = inputs else {
        return Ok(());
    };
    let Some(raw) = get(data, "addressing") else {
        return Ok(());
    };
    let err = |m: String| Err(ValidationFailure::addressing(m));
    let Value::Object(addr) = raw else {
        return err("inputs.addressing must be a mapping when set".into());
    };
    let mut unknown: Vec<&str> = addr
        .keys()
        .map(String::as_str)
        .filter(|k| !["mode", "ipam"].contains(k))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        return err(format!(
            "inputs.addressing has unknown keys: {}",
            unknown.join(", ")
        ));
    }
    let mode = py_str(addr.get("mode")).to_lowercase();
    if mode != "static" && mode != "ipam" {
        return err("inputs.addressing.mode must be one of: static, ipam".into());
    }
    let raw_ipam = addr.get("ipam");
    if mode == "static" {
        let absent_or_empty = match raw_ipam {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
        if !absent_or_empty {
            return err(
                "inputs.addressing.ipam is only allowed when inputs.addressing.mode=ipam".into(),
            );
        }
        return Ok(());
    }
    let Some(Value::Object(ipam)) = raw_ipam else {
        return err(
            "inputs.addressing.ipam must be a mapping when inputs.addressing.mode=ipam".into(),
        );
    };
    const IPAM_KEYS: &[&str] = &[
        "provider",
        "network_state_ref",
        "ssh_proxy_jump_host",
        "ssh_proxy_jump_user",
        "ssh_proxy_jump_key_file",
    ];
    let mut unknown: Vec<&str> = ipam
        .keys()
        .map(String::as_str)
        .filter(|k| !IPAM_KEYS.contains(k))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        return err(format!(
            "inputs.addressing.ipam has unknown keys: {}",
            unknown.join(", ")
        ));
    }
    if py_str(ipam.get("provider")).to_lowercase() != "netbox" {
        return err(
            "inputs.addressing.ipam.provider must be 'netbox' when inputs.addressing.mode=ipam"
                .into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// upstream validator (§1.14)
// ---------------------------------------------------------------------------------------------

/// The module validator: `validate_vm_pool_inputs` (which dispatches to the single-VM rules)
/// followed by the `post_apply_ssh_readiness` rules.
pub fn validate_platform_vm(inputs: &Value) -> Rule {
    validate_vm_pool_inputs(inputs)?;
    let Value::Object(data) = inputs else {
        return Ok(());
    };
    validate_post_apply_ssh_readiness(data)
}

fn validate_require_ipam(data: &Map<String, Value>) -> Rule {
    let Some(raw) = get(data, "require_ipam") else {
        return Ok(());
    };
    let Value::Bool(require) = raw else {
        return Err(fail(
            "inputs.require_ipam must be a boolean when set".into(),
        ));
    };
    if !require {
        return Ok(());
    }
    let Some(Value::Object(addr)) = get(data, "addressing") else {
        return Err(fail(
            "inputs.addressing is required when inputs.require_ipam=true".into(),
        ));
    };
    if py_str(addr.get("mode")).to_lowercase() != "ipam" {
        return Err(fail(
            "inputs.addressing.mode must be ipam when inputs.require_ipam=true".into(),
        ));
    }
    let Some(Value::Object(ipam)) = addr.get("ipam") else {
        return Err(fail(
            "inputs.addressing.ipam must be a mapping when inputs.require_ipam=true".into(),
        ));
    };
    if py_str(ipam.get("provider")).to_lowercase() != "netbox" {
        return Err(fail(
            "inputs.addressing.ipam.provider must be netbox when inputs.require_ipam=true".into(),
        ));
    }
    Ok(())
}

fn validate_allow_vm_set_replace(data: &Map<String, Value>) -> Rule {
    match get(data, "allow_vm_set_replace") {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(fail(
            "inputs.allow_vm_set_replace must be a boolean when set".into(),
        )),
    }
}

fn validate_template(data: &Map<String, Value>) -> Rule {
    let state_ref = py_str(data.get("template_state_ref"));
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
    if matches!(get(data, "template_state_ref"), Some(v) if !v.is_string()) {
        return Err(fail(
            "inputs.template_state_ref must be a string when set".into(),
        ));
    }
    if matches!(get(data, "template_key"), Some(v) if !v.is_string()) {
        return Err(fail("inputs.template_key must be a string when set".into()));
    }
    if matches!(get(data, "build_image"), Some(v) if !v.is_boolean()) {
        return Err(fail("inputs.build_image must be a boolean when set".into()));
    }
    Ok(())
}

fn validate_sizes(data: &Map<String, Value>) -> Rule {
    require_positive_int(get(data, "cpu_cores"), "inputs.cpu_cores")?;
    require_positive_int(get(data, "memory_mb"), "inputs.memory_mb")?;
    require_positive_int(get(data, "disk_size_gb"), "inputs.disk_size_gb")?;
    Ok(())
}

fn validate_dns_and_tags(data: &Map<String, Value>) -> Rule {
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

fn validate_vm_pool_inputs(inputs: &Value) -> Rule {
    let data = require_mapping(Some(inputs), "inputs")?;
    validate_require_ipam(data)?;
    validate_allow_vm_set_replace(data)?;
    validate_template(data)?;
    validate_sizes(data)?;
    require_non_empty_str(get(data, "cpu_type"), "inputs.cpu_type")?;
    require_non_empty_str(get(data, "os_type"), "inputs.os_type")?;
    require_non_empty_str(get(data, "dns_domain"), "inputs.dns_domain")?;
    validate_dns_and_tags(data)?;

    let vm_name = py_str(data.get("vm_name"));
    let vms = match get(data, "vms") {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(fail("inputs.vms must be a mapping when set".into())),
    };
    let vms = match vms {
        Some(m) if !m.is_empty() => m,
        _ => {
            if vm_name.is_empty() {
                return Err(fail(
                    "either inputs.vms (non-empty map) or inputs.vm_name is required".into(),
                ));
            }
            return validate_single_vm_inputs(data);
        }
    };

    let module_ifaces = match get(data, "interfaces") {
        Some(Value::Array(a)) if !a.is_empty() => Some(a),
        _ => None,
    };
    if let Some(ifaces) = module_ifaces {
        validate_interfaces(Some(&Value::Array(ifaces.clone())), "inputs.interfaces")?;
    }

    for (raw_key, cfg) in vms {
        let key = require_vm_name(Some(&Value::String(raw_key.clone())), "inputs.vms.<name>")?;
        let cfg = require_mapping(Some(cfg), &format!("inputs.vms[{key}]"))?;
        if let Some(role) = get(cfg, "role") {
            require_non_empty_str(Some(role), &format!("inputs.vms[{key}].role"))?;
        }
        if let Some(id) = get(cfg, "vm_id") {
            require_positive_int(Some(id), &format!("inputs.vms[{key}].vm_id"))?;
        }
        match get(cfg, "interfaces") {
            Some(ifaces) => {
                validate_interfaces(Some(ifaces), &format!("inputs.vms[{key}].interfaces"))?
            }
            None if module_ifaces.is_none() => {
                return Err(fail(format!(
                    "inputs.vms[{key}].interfaces is required when module-level inputs.interfaces is empty"
                )))
            }
            None => {}
        }
    }
    Ok(())
}

fn validate_single_vm_inputs(data: &Map<String, Value>) -> Rule {
    validate_require_ipam(data)?;
    validate_allow_vm_set_replace(data)?;
    require_vm_name(get(data, "vm_name"), "inputs.vm_name")?;
    if let Some(id) = get(data, "vm_id") {
        require_positive_int(Some(id), "inputs.vm_id")?;
    }
    validate_template(data)?;
    validate_sizes(data)?;

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
    validate_dns_and_tags(data)
}

/// `_validate_interfaces`: `field` is `inputs.interfaces` or `inputs.vms[<vm>].interfaces`.
fn validate_interfaces(value: Option<&Value>, field: &str) -> Rule {
    let items = match value {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(fail(format!("{field} must be a non-empty list"))),
    };
    for (i, item) in items.iter().enumerate() {
        let idx = i + 1;
        let nic_field = format!("{field}[{idx}]");
        let nic = require_mapping(Some(item), &nic_field)?;
        let bridge = require_non_empty_str(get(nic, "bridge"), &format!("{nic_field}.bridge"))?;
        reject_placeholder(&bridge, &format!("{nic_field}.bridge"))?;

        let mac = get(nic, "mac_address")
            .map(py_plain_str)
            .unwrap_or_default();
        if !mac.is_empty() && !is_mac(&mac) {
            return Err(fail(format!(
                "{nic_field}.mac_address must be a valid MAC address"
            )));
        }

        let Some(ipv4) = get(nic, "ipv4") else {
            continue;
        };
        let ipv4 = require_mapping(Some(ipv4), &format!("{nic_field}.ipv4"))?;
        let address =
            require_non_empty_str(get(ipv4, "address"), &format!("{nic_field}.ipv4.address"))?;
        reject_placeholder(&address, &format!("{nic_field}.ipv4.address"))?;
        let gateway = py_str(ipv4.get("gateway"));

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
            reject_placeholder(&gateway, &format!("{nic_field}.ipv4.gateway"))?;
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

fn validate_post_apply_ssh_readiness(data: &Map<String, Value>) -> Rule {
    let raw = match get(data, "post_apply_ssh_readiness") {
        None | Some(Value::Bool(_)) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(fail(
                "inputs.post_apply_ssh_readiness must be a boolean or mapping when set".into(),
            ))
        }
    };
    for field in ["enabled", "required", "ssh_proxy_jump_auto"] {
        if matches!(get(raw, field), Some(v) if !v.is_boolean()) {
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
        let Some(n) = as_int(v) else {
            return Err(fail(format!(
                "inputs.post_apply_ssh_readiness.{field} must be an integer when set"
            )));
        };
        if field == "connectivity_wait_s" {
            if n < 0 {
                return Err(fail(
                    "inputs.post_apply_ssh_readiness.connectivity_wait_s must be >= 0".into(),
                ));
            }
        } else if n < 1 {
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
        if matches!(get(raw, field), Some(v) if !v.is_string()) {
            return Err(fail(format!(
                "inputs.post_apply_ssh_readiness.{field} must be a string when set"
            )));
        }
    }
    Ok(())
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
                    validate_interfaces(module_ifaces, "inputs.interfaces")?;
                }
            }
            validate_nic_extensions(module_ifaces, "inputs.interfaces")?;
        }
        Some(vms) => {
            validate_nic_extensions(module_ifaces, "inputs.interfaces")?;
            let mut seen = std::collections::BTreeSet::new();
            for (raw_key, cfg) in vms {
                let key = raw_key.trim().to_lowercase();
                if !seen.insert(key.clone()) {
                    return Err(fail(format!(
                        "inputs.vms has duplicate keys after lower-casing: {key}"
                    )));
                }
                let Value::Object(cfg) = cfg else { continue };
                if matches!(get(cfg, "node_name"), Some(v) if !matches!(v, Value::String(s) if !s.trim().is_empty()))
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
