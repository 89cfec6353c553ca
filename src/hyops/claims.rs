//! IPv4 claims published by platform-vm state slots of this env (contract §4.4 step 1 and
//! §4.6): every IPv4 host in `outputs.vms.*.interfaces_configured[*].ipv4.address` of every
//! `status: ok` slot (`latest` and `instances/*.json`). The allocator skips these hosts; an
//! explicit address claimed by another (vm, bridge, nic) is refused. Reads state files only.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::error::{HyopsError, Result};
use super::fsio::read_json_opt;
use super::paths::{ModuleRef, RuntimeRoot};

/// One published claim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Claim {
    /// `latest` or `instance:<name>`.
    pub slot: String,
    /// The logical VM key (the `outputs.vms` key).
    pub vm_name: String,
    pub bridge: String,
    /// 1-based NIC index.
    pub nic_index: usize,
}

impl Ipv4Claim {
    /// `slot:vm:bridge:idx`, as upstream prints a claim.
    pub fn label(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.slot, self.vm_name, self.bridge, self.nic_index
        )
    }
}

/// Claims of one state payload (`status` must be `ok`).
pub fn claims_from_state(payload: &Value, slot: &str) -> BTreeMap<Ipv4Addr, Vec<Ipv4Claim>> {
    let mut out: BTreeMap<Ipv4Addr, Vec<Ipv4Claim>> = BTreeMap::new();
    let ok = payload
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("ok"));
    if !ok {
        return out;
    }
    let Some(vms) = payload
        .get("outputs")
        .and_then(|o| o.get("vms"))
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (vm_name, vm) in vms {
        let vm_name = vm_name.trim();
        let Some(ifaces) = vm.get("interfaces_configured").and_then(Value::as_array) else {
            continue;
        };
        if vm_name.is_empty() {
            continue;
        }
        for (i, nic) in ifaces.iter().enumerate() {
            let Some(addr) = nic
                .get("ipv4")
                .and_then(|v| v.get("address"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let host = addr.trim().split('/').next().unwrap_or("");
            let Ok(host) = host.parse::<Ipv4Addr>() else {
                continue;
            };
            out.entry(host).or_default().push(Ipv4Claim {
                slot: slot.to_string(),
                vm_name: vm_name.to_string(),
                bridge: nic
                    .get("bridge")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_string(),
                nic_index: i + 1,
            });
        }
    }
    out
}

/// Claims of every ok slot of `module_ref` in this root, by host.
pub fn collect_ipv4_claims(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
) -> Result<BTreeMap<Ipv4Addr, Vec<Ipv4Claim>>> {
    let dir = root.module_state_dir(module_ref);
    let mut files = Vec::new();
    let latest = dir.join("latest.json");
    if latest.exists() {
        files.push(("latest".to_string(), latest));
    }
    let inst_dir = dir.join("instances");
    if inst_dir.is_dir() {
        let mut insts: Vec<_> = std::fs::read_dir(&inst_dir)
            .map_err(|e| {
                HyopsError::Contract(format!(
                    "failed to enumerate platform-vm state instances: {e}"
                ))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        insts.sort();
        for p in insts {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((format!("instance:{stem}"), p));
        }
    }
    let mut out: BTreeMap<Ipv4Addr, Vec<Ipv4Claim>> = BTreeMap::new();
    for (slot, path) in files {
        let payload = read_json_opt(&path).map_err(|e| {
            HyopsError::Contract(format!("failed to read platform-vm state slot {slot}: {e}"))
        })?;
        if let Some(p) = payload {
            for (host, claims) in claims_from_state(&p, &slot) {
                out.entry(host).or_default().extend(claims);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_ok_slots_publish_claims() {
        let state = json!({"status": "ok", "outputs": {"vms": {"app-01": {"interfaces_configured": [
            {"bridge": "vnetmgmt", "ipv4": {"address": "10.10.0.2/24"}},
            {"bridge": "vnetdata", "ipv4": {"address": "dhcp"}}]}}}});
        let c = claims_from_state(&state, "latest");
        let claim = &c[&Ipv4Addr::new(10, 10, 0, 2)][0];
        assert_eq!(claim.label(), "latest:app-01:vnetmgmt:1");
        assert_eq!(c.len(), 1);
        let mut failed = state.clone();
        failed["status"] = json!("error");
        assert!(claims_from_state(&failed, "latest").is_empty());
    }
}
