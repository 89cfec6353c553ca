//! The node-level read endpoints common clients use (proxmoxer, Ansible's `proxmox_kvm` and
//! `proxmox_vm_info`, the engine's placement checks): `GET /nodes`, `/nodes/{node}/qemu`,
//! `/nodes/{node}/network`, `/nodes/{node}/storage` and
//! `/nodes/{node}/capabilities/qemu/cpu`. Row shapes follow the return schemas in
//! `pve-apidoc.json` (PVE 9.1); the filters follow pve-manager's `API2/Network.pm` and
//! `API2/Storage/Status.pm`. Knows nothing about the wire format.

use super::api::agent_enabled;
use super::check::split_list;
use super::core::{ApiError, Call, Sim};
use super::spec::NamedFormat;
use serde_json::{json, Value};

/// The CPU count of every simulated node: `maxcpu` of `GET /nodes` and `/cluster/resources`,
/// and the most vCPUs a VM may start with (qemu-server `config_to_command`: `die "MAX
/// $allowed_vcpus vcpus allowed per VM on this node"` when `sockets` × `cores` exceeds
/// `$cpuinfo->{cpus}`).
pub const NODE_CPUS: u64 = 32;

/// `GET /nodes`: every cluster node, online.
pub fn nodes(sim: &Sim) -> Value {
    let state = sim.state();
    Value::Array(
        state
            .cluster
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "node": n, "status": "online", "type": "node", "id": format!("node/{n}"),
                    "cpu": 0.05, "maxcpu": NODE_CPUS, "mem": 8u64 << 30, "maxmem": 256u64 << 30,
                    "uptime": 86400, "level": "",
                    "ssl_fingerprint": "00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
                })
            })
            .collect(),
    )
}

fn memory_mib(cfg: &std::collections::BTreeMap<String, String>) -> u64 {
    cfg.get("memory")
        .and_then(|m| m.split(',').next())
        .and_then(|m| m.trim_start_matches("current=").parse::<u64>().ok())
        .unwrap_or(512)
}

/// `GET /nodes/{node}/qemu`: the VMs whose config lives on the node.
pub fn qemu_list(sim: &Sim, call: &Call) -> Value {
    let state = sim.state();
    let now = sim.clock.now_ms();
    let rows = state
        .vms
        .values()
        .filter(|v| v.node == call.node())
        .map(|v| {
            let disk = v
                .drives()
                .into_iter()
                .find(|(k, f, _)| {
                    !f.ends_with("-cloudinit")
                        && !k.starts_with("unused")
                        && !v.config[k].contains("media=cdrom")
                })
                .map(|d| d.2)
                .unwrap_or(0);
            let status = if v.running { "running" } else { "stopped" };
            let mut row = json!({
                "vmid": v.vmid, "name": v.name(), "status": status,
                "cpus": v.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
                "maxmem": memory_mib(&v.config) << 20, "maxdisk": disk, "mem": 0, "cpu": 0,
                "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                "uptime": if v.running { now.saturating_sub(v.started_at_ms.unwrap_or(0)) / 1000 } else { 0 },
            });
            if v.is_template() {
                row["template"] = json!(1);
            }
            if let Some(l) = v.lock() {
                row["lock"] = json!(l);
            }
            if let Some(t) = v.config.get("tags") {
                row["tags"] = json!(t);
            }
            if v.running {
                row["pid"] = json!(10_000 + v.vmid);
                row["qmpstatus"] = json!("running");
            }
            if call.flag("full") {
                row["agent"] = json!(if agent_enabled(v) { 1 } else { 0 });
            }
            row
        })
        .collect();
    Value::Array(rows)
}

/// `GET /nodes/{node}/network[?type=…]`. Without `type`: the node's own interfaces (one
/// `eth` uplink and its bridges). `any_local_bridge`: Linux and OVS bridges; `any_bridge`
/// and `include_sdn` also list SDN VNets (inferred from pve-manager 9's filter, which adds
/// the SDN VNets to `any_bridge`).
pub fn network(sim: &Sim, call: &Call) -> Value {
    let state = sim.state();
    let node = call.node();
    let filter = call.get("type");
    let mut rows = vec![json!({
        "iface": "eno1", "type": "eth", "active": 1, "autostart": 1, "exists": 1,
        "method": "manual", "method6": "manual", "families": ["inet"], "priority": 1,
    })];
    for (i, b) in state
        .cluster
        .bridges
        .iter()
        .filter(|b| state.cluster.bridge_on(&b.name, node).is_some())
        .enumerate()
    {
        let row = if b.kind == "vnet" {
            json!({"iface": b.name, "type": "vnet", "active": 1, "zone": "hyops"})
        } else {
            json!({
                "iface": b.name, "type": b.kind, "active": 1, "autostart": 1,
                "bridge_ports": if i == 0 { "eno1" } else { "" },
                "bridge_stp": "off", "bridge_fd": "0",
                "bridge_vlan_aware": if b.vlan_aware { 1 } else { 0 },
                "method": "manual", "method6": "manual", "families": ["inet"],
                "mtu": b.mtu, "priority": i + 2,
            })
        };
        rows.push(row);
    }
    let keep = |t: &str| -> bool {
        match filter {
            None => t != "vnet",
            Some("any_local_bridge") => t == "bridge" || t == "OVSBridge",
            Some("any_bridge") => t == "bridge" || t == "OVSBridge" || t == "vnet",
            Some("include_sdn") => true,
            Some(f) => f == t,
        }
    };
    Value::Array(
        rows.into_iter()
            .filter(|r| keep(r["type"].as_str().unwrap_or_default()))
            .collect(),
    )
}

/// `GET /nodes/{node}/storage[?content=…&storage=…&enabled=1]`: the storages configured for
/// this node (`nodes` in storage.cfg), with usage.
pub fn storage(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let node = call.node();
    let want_content: Vec<&str> = call
        .get("content")
        .map(|c| split_list(c).collect())
        .unwrap_or_default();
    if let Some(t) = call.get("target") {
        if !state.cluster.nodes.iter().any(|n| n == t) {
            return Err(ApiError::e500(format!("no such cluster node '{t}'")));
        }
    }
    let usage = state.storage_usage();
    let mut rows = Vec::new();
    for d in &state.cluster.storages {
        if state.cluster.storage_on(&d.id, node).is_none() {
            continue;
        }
        if call.get("storage").is_some_and(|s| s != d.id) {
            continue;
        }
        if let Some(t) = call.get("target") {
            if state.cluster.storage_on(&d.id, t).is_none() {
                continue;
            }
        }
        if !want_content.is_empty()
            && !want_content
                .iter()
                .any(|c| d.content.iter().any(|x| x == c))
        {
            continue;
        }
        let u = usage.iter().find(|u| u.storage == d.id && u.node == node);
        let total = u.map(|u| u.total_bytes).unwrap_or(0);
        let used = u.map(|u| u.used_bytes).unwrap_or(0);
        rows.push(json!({
            "storage": d.id, "type": d.kind, "content": d.content.join(","),
            "shared": if d.shared { 1 } else { 0 }, "active": 1, "enabled": 1,
            "total": total, "used": used, "avail": total.saturating_sub(used),
            "used_fraction": if total == 0 { 0.0 } else { used as f64 / total as f64 },
        }));
    }
    Ok(Value::Array(rows))
}

/// `GET /nodes/{node}/capabilities/qemu/cpu`: the built-in models, which are the
/// `reported-model` enum of `pve-vm-cpu-conf` in the project spec (QEMU's models, `host`
/// among them) plus qemu-server's x86-64 level models.
pub fn cpu_models(sim: &Sim) -> Value {
    let models: Vec<String> = match sim.spec.formats.get("pve-vm-cpu-conf") {
        Some(NamedFormat::Keys(keys)) => keys
            .get("reported-model")
            .and_then(|s| s.enum_values.clone())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut names = models;
    names.extend(
        super::check::BUILTIN_X86_64_LEVELS
            .iter()
            .map(|m| m.to_string()),
    );
    Value::Array(
        names
            .into_iter()
            .map(|n| {
                let vendor = if n.starts_with("EPYC")
                    || n.starts_with("Opteron")
                    || n == "athlon"
                    || n == "phenom"
                {
                    "AuthenticAMD"
                } else if n.starts_with("cortex") || n == "a64fx" {
                    "ARM"
                } else {
                    "GenuineIntel"
                };
                json!({"name": n, "vendor": vendor, "custom": 0})
            })
            .collect(),
    )
}
