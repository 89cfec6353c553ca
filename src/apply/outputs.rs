//! Module outputs in the exact shape of the Terraform path (contract §2.7), built from what
//! Proxmox reports after the apply: MACs read back from the config, tags read back, guest
//! agent addresses. Knows nothing about HTTP or state files; the HyOps layer publishes them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use crate::inputs::model::Ipv4Config;
use crate::plan::desired::{DesiredVm, MANAGED_TAG};
use crate::plan::props;

/// What the executor read back for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmFacts {
    pub vmid: u32,
    pub node: String,
    pub config: BTreeMap<String, String>,
    pub running: bool,
    /// Guest-agent IPv4 addresses per interface, in netN order where the MAC matched, then
    /// any others. Empty when the agent is off or did not answer in time.
    pub agent_ipv4: Vec<Vec<Ipv4Addr>>,
}

impl VmFacts {
    /// The host-key identity of the VM (`vmid=…,uuid=…`): its VMID and the SMBIOS UUID of
    /// its config (`smbios1: uuid=…`), see [`crate::ssh::known_hosts::vm_identity`].
    pub fn host_identity(&self) -> String {
        let uuid = self
            .config
            .get("smbios1")
            .and_then(|s| s.split(',').find_map(|p| p.strip_prefix("uuid=")));
        crate::ssh::known_hosts::vm_identity(self.vmid, uuid)
    }
}

/// One `outputs.vms.<key>` object.
pub fn vm_output(want: &DesiredVm, facts: &VmFacts) -> Value {
    let interfaces_configured: Vec<Value> = want
        .nics
        .iter()
        .map(|nic| {
            let mut o = Map::new();
            o.insert("bridge".into(), json!(nic.bridge));
            if let Some(tag) = nic.vlan_tag {
                o.insert("vlan_id".into(), json!(tag));
            }
            if let Some(mac) = nic.mac {
                o.insert("mac_address".into(), json!(mac.to_string()));
            }
            let ipv4 = match &nic.ipv4 {
                Ipv4Config::Dhcp => json!({"address": "dhcp"}),
                Ipv4Config::Static { address, gateway } => {
                    let mut m = Map::new();
                    m.insert("address".into(), json!(address.to_string()));
                    if let (Some(gw), 0) = (gateway, nic.index) {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(m)
                }
            };
            o.insert("ipv4".into(), ipv4);
            Value::Object(o)
        })
        .collect();
    let ipv4_configured_primary = want
        .nics
        .first()
        .map(|n| match &n.ipv4 {
            Ipv4Config::Dhcp => json!("dhcp"),
            Ipv4Config::Static { address, .. } => json!(address.to_string()),
        })
        .unwrap_or(Value::Null);
    let macs = nic_macs(&facts.config);
    let mac_primary = want
        .nics
        .first()
        .and_then(|n| n.mac.map(|m| m.to_string()))
        .or_else(|| macs.first().cloned());
    let ipv4_addresses: Vec<Vec<String>> = facts
        .agent_ipv4
        .iter()
        .map(|l| l.iter().map(|a| a.to_string()).collect())
        .collect();
    let ipv4_address = facts
        .agent_ipv4
        .iter()
        .flatten()
        .find(|a| !a.is_loopback())
        .map(|a| json!(a.to_string()))
        .unwrap_or(Value::Null);
    let tags: Vec<String> = facts
        .config
        .get("tags")
        .map(|t| {
            props::tag_set(t)
                .into_iter()
                .filter(|t| t != MANAGED_TAG)
                .collect()
        })
        .unwrap_or_default();
    // Built at its exact size (`json!` grows a map by doubling: 32 slots for these 17, and
    // the outputs of 10 000 VMs are held at once).
    exact_object([
        ("vm_id", json!(facts.vmid)),
        ("vm_name", json!(want.physical_name.0)),
        ("node_name", json!(facts.node)),
        ("interfaces_configured", Value::Array(interfaces_configured)),
        ("ipv4_configured_primary", ipv4_configured_primary),
        ("ipv4_address", ipv4_address),
        ("ipv4_addresses", json!(ipv4_addresses)),
        ("mac_address_primary", json!(mac_primary)),
        ("mac_addresses", json!(macs)),
        ("cpu_cores", json!(running_cores(want, facts))),
        ("memory_mb", json!(running_memory(want, facts))),
        ("disk_gb", json!(disk_gb(want, facts))),
        ("tags", json!(tags)),
        ("status", json!(facts.running)),
        ("os_type", json!(want.ostype)),
        (
            "is_windows",
            json!(want.ostype.to_ascii_lowercase().starts_with("win")),
        ),
    ])
}

/// A JSON object of `fields` in this order, allocated at its exact size (`json!` grows a
/// map by doubling; these objects are made per VM and held for the whole pool).
pub fn exact_object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The cores the VM has (read back), else the requested ones.
fn running_cores(want: &DesiredVm, facts: &VmFacts) -> u64 {
    facts
        .config
        .get("cores")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::from(want.cores))
}

/// The memory the VM has in MiB (read back, `4096` or `current=4096`), else the requested.
fn running_memory(want: &DesiredVm, facts: &VmFacts) -> u64 {
    facts
        .config
        .get("memory")
        .and_then(|v| props::default_value(v, "current"))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(want.memory_mb)
}

/// The real size of the boot disk in whole GiB (rounded up); `disk_size_gb` is only "at
/// least", so a larger template disk is published as it is.
fn disk_gb(want: &DesiredVm, facts: &VmFacts) -> u64 {
    crate::plan::template::disk_bytes(&facts.config, want.boot_disk())
        .map(crate::plan::template::whole_gib)
        .unwrap_or(want.disk_size_gb)
}

/// MACs of net0, net1, … in index order.
pub fn nic_macs(config: &BTreeMap<String, String>) -> Vec<String> {
    let mut nets: Vec<(usize, String)> = config
        .iter()
        .filter_map(|(k, v)| {
            let idx: usize = k.strip_prefix("net")?.parse().ok()?;
            Some((idx, props::net_mac(v)?))
        })
        .collect();
    nets.sort();
    nets.into_iter().map(|(_, m)| m).collect()
}

/// The full Terraform-shaped output map (before HyOps publishing normalisation).
/// `vms` holds `(desired, facts)` per logical key in key order; each VM's facts are dropped
/// as soon as its output is built.
pub fn module_outputs(
    vms: BTreeMap<String, (&DesiredVm, VmFacts)>,
    module_node: &str,
    module_tags: &[String],
) -> Value {
    let n = vms.len();
    let mut out_vms = Map::with_capacity(n);
    let mut vm_ids = Map::with_capacity(n);
    let mut vm_names = Vec::with_capacity(n);
    let mut ipv4_configured_primary = Map::with_capacity(n);
    let mut ipv4_addresses = Map::with_capacity(n);
    let mut ipv4_addresses_all = Map::with_capacity(n);
    let mut mac_primary = Map::with_capacity(n);
    let mut mac_all = Map::with_capacity(n);
    for (key, (want, facts)) in vms {
        let o = vm_output(want, &facts);
        drop(facts);
        vm_names.push(Value::String(key.clone()));
        vm_ids.insert(key.clone(), o["vm_id"].clone());
        ipv4_configured_primary.insert(key.clone(), o["ipv4_configured_primary"].clone());
        ipv4_addresses.insert(key.clone(), o["ipv4_address"].clone());
        ipv4_addresses_all.insert(key.clone(), o["ipv4_addresses"].clone());
        mac_primary.insert(key.clone(), o["mac_address_primary"].clone());
        mac_all.insert(key.clone(), o["mac_addresses"].clone());
        out_vms.insert(key, o);
    }
    // The maps move in (`json!` would serialise each into a copy).
    exact_object([
        ("vms", Value::Object(out_vms)),
        ("vm_ids", Value::Object(vm_ids)),
        ("vm_names", Value::Array(vm_names)),
        (
            "ipv4_configured_primary",
            Value::Object(ipv4_configured_primary),
        ),
        ("ipv4_addresses", Value::Object(ipv4_addresses)),
        ("ipv4_addresses_all", Value::Object(ipv4_addresses_all)),
        ("mac_addresses_primary", Value::Object(mac_primary)),
        ("mac_addresses_all", Value::Object(mac_all)),
        ("node_name", json!(module_node)),
        ("tags", json!(module_tags)),
    ])
}
