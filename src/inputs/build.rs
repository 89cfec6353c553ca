//! Builds the typed [`ModuleInputs`] from the merged JSON tree. Lenient by design: it never
//! fails and never panics, so a `destroy` (which skips validation) still gets keys, names and
//! VMIDs; a wrong-typed value falls back to the spec default (or the pack's fallback). After
//! validation every value it reads is well-formed. Knows nothing about files, env or Proxmox.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use super::model::*;
use super::naming::{name_prefix, physical_name};
use super::pyval::{
    as_int, as_int_lenient, get, ip_interface, non_blank_str, parse_ipv4, IfaceParsed,
};
use super::validate::NIC_MODELS;
use crate::yaml::py_strip;

/// What the builder needs besides the inputs tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildContext<'a> {
    /// The runtime env (`HYOPS_ENV`), last candidate for the name prefix.
    pub env: Option<&'a str>,
    /// The credentials' `network_bridge`, default bridge of the single-VM NIC.
    pub credentials_network_bridge: Option<&'a str>,
}

fn bool_or(data: &Map<String, Value>, key: &str, default: bool) -> bool {
    match get(data, key) {
        Some(Value::Bool(b)) => *b,
        _ => default,
    }
}

fn pos_int_or(data: &Map<String, Value>, key: &str, default: u64) -> u64 {
    get(data, key)
        .and_then(as_int)
        .filter(|n| *n >= 1)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(default)
}

fn str_or(data: &Map<String, Value>, key: &str, default: &str) -> String {
    non_blank_str(get(data, key)).unwrap_or_else(|| default.to_string())
}

fn opt_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(as_int)
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| non_blank_str(Some(x))).collect(),
        Some(Value::String(s)) if !py_strip(s).is_empty() => vec![py_strip(s).to_string()],
        _ => Vec::new(),
    }
}

/// Builds the model. Logical keys are the `vms` keys as written, surrounding whitespace
/// stripped (the pack keys its Terraform map by `trimspace(key)`; nothing is lower-cased).
pub fn build_model(inputs: &Value, ctx: BuildContext<'_>) -> ModuleInputs {
    let empty = Map::new();
    let data = match inputs {
        Value::Object(m) => m,
        _ => &empty,
    };

    let prefix_name = non_blank_str(get(data, "name_prefix")).unwrap_or_default();
    let context_id = non_blank_str(get(data, "context_id")).unwrap_or_default();
    let prefix = name_prefix(&prefix_name, &context_id, ctx.env);

    let network_bridge = non_blank_str(get(data, "network_bridge"));
    let module_ifaces = nics(get(data, "interfaces"));

    let pool = match get(data, "vms") {
        Some(Value::Object(m)) if !m.is_empty() => Some(m),
        _ => None,
    };
    let mut vms = BTreeMap::new();
    let mode = match pool {
        Some(pool) => {
            for (raw_key, cfg) in pool {
                let key = py_strip(raw_key).to_string();
                if key.is_empty() {
                    continue;
                }
                let cfg = match cfg {
                    Value::Object(c) => c,
                    _ => &empty,
                };
                let own = nics(get(cfg, "interfaces"));
                let vm = VmInputs {
                    key: LogicalVmKey(key.clone()),
                    physical_name: PhysicalVmName(physical_name(
                        &key,
                        &prefix,
                        non_blank_str(get(cfg, "vm_name")).as_deref(),
                    )),
                    role: str_or(cfg, "role", "platform-vm"),
                    vm_id: opt_u32(get(cfg, "vm_id")),
                    node_name: non_blank_str(get(cfg, "node_name"))
                        .or_else(|| non_blank_str(get(cfg, "proxmox_node"))),
                    interfaces: if own.is_empty() {
                        module_ifaces.clone()
                    } else {
                        own
                    },
                    cloud_init_user_data: non_blank_str(get(cfg, "cloud_init_user_data")),
                    cloud_init_network_data: non_blank_str(get(cfg, "cloud_init_network_data"))
                        .or_else(|| non_blank_str(get(data, "cloud_init_network_data"))),
                    cloud_init_meta_data: non_blank_str(get(cfg, "cloud_init_meta_data"))
                        .or_else(|| non_blank_str(get(data, "cloud_init_meta_data"))),
                };
                vms.insert(vm.key.clone(), vm);
            }
            VmMode::Pool
        }
        None => {
            if let Some(name) = non_blank_str(get(data, "vm_name")) {
                let key = name;
                let interfaces = if module_ifaces.is_empty() {
                    vec![single_default_nic(data, network_bridge.as_deref(), ctx)]
                } else {
                    module_ifaces.clone()
                };
                let vm = VmInputs {
                    key: LogicalVmKey(key.clone()),
                    physical_name: PhysicalVmName(physical_name(&key, &prefix, None)),
                    role: str_or(data, "vm_role", "platform-vm"),
                    vm_id: opt_u32(get(data, "vm_id")),
                    node_name: None,
                    interfaces,
                    cloud_init_user_data: non_blank_str(get(data, "cloud_init_user_data")),
                    cloud_init_network_data: non_blank_str(get(data, "cloud_init_network_data")),
                    cloud_init_meta_data: non_blank_str(get(data, "cloud_init_meta_data")),
                };
                vms.insert(vm.key.clone(), vm);
            }
            VmMode::Single
        }
    };

    let template = match opt_u32(get(data, "template_vm_id")) {
        Some(vm_id) => TemplateSource::ExplicitVmId { vm_id },
        None => TemplateSource::StateRef {
            state_ref: non_blank_str(get(data, "template_state_ref")).unwrap_or_default(),
            key: non_blank_str(get(data, "template_key")),
        },
    };

    let mut dns_servers: Vec<Ipv4Addr> = str_list(get(data, "dns_servers"))
        .iter()
        .filter_map(|s| parse_ipv4(s))
        .collect();
    if dns_servers.is_empty() {
        dns_servers.push(Ipv4Addr::new(8, 8, 8, 8));
    }
    let mut tags = str_list(get(data, "tags"));
    if tags.is_empty() {
        tags = vec!["platform".into(), "onprem".into()];
    }
    let mut ssh_keys = str_list(get(data, "ssh_keys"));
    if ssh_keys.is_empty() {
        if let Some(k) = non_blank_str(get(data, "ssh_public_key")) {
            ssh_keys.push(k);
        }
    }
    let ssh_username = non_blank_str(get(data, "ssh_username"));

    let clone_mode = match non_blank_str(get(data, "clone_mode")).map(|s| s.to_lowercase()) {
        Some(s) if s == "linked" => CloneMode::Linked,
        _ => CloneMode::Full,
    };

    let model = ModuleInputs {
        mode,
        vms,
        name_prefix: prefix_name,
        context_id,
        template,
        build_image: bool_or(data, "build_image", false),
        clone_mode,
        cloud_init_mode: match non_blank_str(get(data, "cloud_init_mode")).map(|s| s.to_lowercase())
        {
            Some(s) if s == "native" => CloudInitMode::Native,
            _ => CloudInitMode::Snippets,
        },
        cpu_cores: u32::try_from(pos_int_or(data, "cpu_cores", 2)).unwrap_or(2),
        cpu_type: str_or(data, "cpu_type", "host"),
        memory_mb: pos_int_or(data, "memory_mb", 4096),
        disk_size_gb: pos_int_or(data, "disk_size_gb", 40),
        guest_agent_enabled: bool_or(data, "guest_agent_enabled", true),
        os_type: str_or(data, "os_type", "l26"),
        on_boot: bool_or(data, "on_boot", true),
        dns_domain: str_or(data, "dns_domain", "hybzone.local"),
        dns_servers,
        tags,
        readiness: readiness(data, ssh_username.as_deref()),
        ssh_username,
        ssh_keys,
        cloud_init_user_data: non_blank_str(get(data, "cloud_init_user_data")),
        node_name: non_blank_str(get(data, "node_name")),
        datastore_id: non_blank_str(get(data, "datastore_id")),
        snippets_datastore_id: non_blank_str(get(data, "snippets_datastore_id")),
        network_bridge,
        require_ipam: bool_or(data, "require_ipam", true),
        addressing: addressing(data),
        allow_vm_set_replace: bool_or(data, "allow_vm_set_replace", false),
        limits: limits(data),
        // as written (a non-string is kept printed, so plan::checks can refuse it by value)
        restart_policy: get(data, "restart_policy")
            .map(|v| match v {
                Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "restart".into()),
    };
    model
}

fn single_default_nic(
    data: &Map<String, Value>,
    network_bridge: Option<&str>,
    ctx: BuildContext<'_>,
) -> NicInputs {
    let bridge = network_bridge
        .map(str::to_string)
        .or_else(|| {
            ctx.credentials_network_bridge
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "vmbr0".to_string());
    let ipv4 = non_blank_str(get(data, "vm_ipv4_cidr")).map(|cidr| {
        let gw = non_blank_str(get(data, "vm_gateway"));
        ipv4_config(&cidr, gw.as_deref(), true)
    });
    NicInputs {
        bridge,
        vlan_id: None,
        mac_address: non_blank_str(get(data, "vm_mac")).and_then(|m| m.parse().ok()),
        ipv4: ipv4.flatten(),
        model: "virtio".into(),
        firewall: false,
        mtu: None,
    }
}

fn ipv4_config(address: &str, gateway: Option<&str>, primary: bool) -> Option<Ipv4Config> {
    if address.eq_ignore_ascii_case("dhcp") {
        return Some(Ipv4Config::Dhcp);
    }
    match ip_interface(address) {
        Ok(IfaceParsed::V4(net)) => Some(Ipv4Config::Static {
            address: net,
            gateway: if primary {
                gateway.and_then(parse_ipv4)
            } else {
                None
            },
        }),
        _ => None,
    }
}

fn nics(v: Option<&Value>) -> Vec<NicInputs> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            Value::Object(nic) => Some(nic_from(nic, i == 0)),
            _ => None,
        })
        .collect()
}

fn nic_from(nic: &Map<String, Value>, primary: bool) -> NicInputs {
    let ipv4 = match get(nic, "ipv4") {
        None => None,
        Some(Value::Object(m)) => match non_blank_str(get(m, "address")) {
            None => Some(Ipv4Config::Dhcp),
            Some(addr) => ipv4_config(&addr, non_blank_str(get(m, "gateway")).as_deref(), primary),
        },
        Some(_) => None,
    };
    let model = non_blank_str(get(nic, "model"))
        .map(|s| s.to_lowercase())
        .filter(|s| NIC_MODELS.contains(&s.as_str()))
        .unwrap_or_else(|| "virtio".into());
    NicInputs {
        bridge: non_blank_str(get(nic, "bridge")).unwrap_or_default(),
        vlan_id: get(nic, "vlan_id")
            .and_then(as_int_lenient)
            .filter(|n| (1..=4094).contains(n))
            .and_then(|n| u16::try_from(n).ok()),
        mac_address: non_blank_str(get(nic, "mac_address")).and_then(|m| m.parse().ok()),
        ipv4,
        model,
        firewall: bool_or(nic, "firewall", false),
        mtu: get(nic, "mtu")
            .and_then(as_int_lenient)
            .filter(|n| (1..=65520).contains(n))
            .and_then(|n| u16::try_from(n).ok()),
    }
}

fn addressing(data: &Map<String, Value>) -> Option<Addressing> {
    let Some(Value::Object(addr)) = get(data, "addressing") else {
        return None;
    };
    let mode = non_blank_str(get(addr, "mode"))?.to_lowercase();
    match mode.as_str() {
        "static" => Some(Addressing::Static),
        "ipam" => {
            let empty = Map::new();
            let ipam = match get(addr, "ipam") {
                Some(Value::Object(m)) => m,
                _ => &empty,
            };
            Some(Addressing::Ipam {
                provider: non_blank_str(get(ipam, "provider"))
                    .map(|s| s.to_lowercase())
                    .unwrap_or_else(|| "netbox".into()),
                network_state_ref: non_blank_str(get(ipam, "network_state_ref")),
                ssh_proxy_jump_host: non_blank_str(get(ipam, "ssh_proxy_jump_host")),
                ssh_proxy_jump_user: non_blank_str(get(ipam, "ssh_proxy_jump_user")),
                ssh_proxy_jump_key_file: non_blank_str(get(ipam, "ssh_proxy_jump_key_file")),
            })
        }
        _ => None,
    }
}

fn readiness(data: &Map<String, Value>, ssh_username: Option<&str>) -> ReadinessConfig {
    let empty = Map::new();
    let mut enabled_override = None;
    let raw = match get(data, "post_apply_ssh_readiness") {
        Some(Value::Object(m)) => m,
        Some(Value::Bool(b)) => {
            enabled_override = Some(*b);
            &empty
        }
        _ => &empty,
    };
    let int_field = |key: &str, min: i128, default: u64| -> u64 {
        get(raw, key)
            .and_then(as_int)
            .filter(|n| *n >= min)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(default)
    };
    let port = |v: Option<&Value>| -> Option<u16> {
        v.and_then(as_int_lenient)
            .filter(|n| *n >= 1)
            .and_then(|n| u16::try_from(n).ok())
    };
    ReadinessConfig {
        enabled: enabled_override.unwrap_or_else(|| bool_or(raw, "enabled", true)),
        required: bool_or(raw, "required", true),
        connectivity_timeout_s: int_field("connectivity_timeout_s", 1, 5),
        connectivity_wait_s: int_field("connectivity_wait_s", 0, 300),
        target_user: Some(
            non_blank_str(get(raw, "target_user"))
                .or_else(|| ssh_username.map(str::to_string))
                .unwrap_or_else(|| "opsadmin".into()),
        ),
        target_port: port(get(raw, "target_port")).unwrap_or(22),
        ssh_proxy_jump_auto: bool_or(raw, "ssh_proxy_jump_auto", true),
        ssh_proxy_jump_host: non_blank_str(get(raw, "ssh_proxy_jump_host"))
            .or_else(|| non_blank_str(get(data, "ssh_proxy_jump_host"))),
        ssh_proxy_jump_user: non_blank_str(get(raw, "ssh_proxy_jump_user"))
            .or_else(|| non_blank_str(get(data, "ssh_proxy_jump_user"))),
        ssh_proxy_jump_port: port(get(raw, "ssh_proxy_jump_port"))
            .or_else(|| port(get(data, "ssh_proxy_jump_port")))
            .unwrap_or(22),
        ssh_private_key_file: non_blank_str(get(raw, "ssh_private_key_file"))
            .or_else(|| non_blank_str(get(data, "ssh_private_key_file"))),
        wait_cloud_init: bool_or(raw, "wait_cloud_init", false),
    }
}

fn limits(data: &Map<String, Value>) -> ConcurrencyLimits {
    let Some(Value::Object(l)) = get(data, "limits") else {
        return ConcurrencyLimits::default();
    };
    let one = |k: &str| {
        get(l, k)
            .and_then(as_int)
            .filter(|n| *n >= 1)
            .and_then(|n| usize::try_from(n).ok())
    };
    ConcurrencyLimits {
        global: one("global"),
        per_node: one("per_node"),
        per_storage: one("per_storage"),
    }
}
