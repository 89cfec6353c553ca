//! The observed model: what Proxmox actually has for this module slot, and which VMs are
//! provably ours. Built from one `/cluster/resources` listing plus the configs of candidate
//! VMs. Pure classification; the HTTP reads live in [`crate::plan::observe`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::inputs::model::LogicalVmKey;
use crate::plan::desired::MANAGED_TAG;
use crate::plan::marker::OwnershipMarker;

/// Power state as the planner needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    Stopped,
    /// paused, suspended, unknown: the planner does not start or stop it.
    #[default]
    Other,
}

/// A config key a running VM has not applied yet (`GET …/pending`): the value it runs with,
/// and the one it gets at its next start (`None`: the key is removed then).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingValue {
    pub current: Option<String>,
    pub pending: Option<String>,
}

/// One VM row of `/cluster/resources?type=vm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRow {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub status: PowerState,
    pub template: bool,
    pub lock: Option<String>,
    pub tags: Vec<String>,
}

/// One VM with its config read back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVm {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub status: PowerState,
    pub lock: Option<String>,
    /// Raw config values (the pending-applied view), `sshkeys` already decoded.
    pub config: BTreeMap<String, String>,
    pub digest: String,
    pub marker: Option<OwnershipMarker>,
    /// Keys a running VM keeps pending, read for managed running VMs only.
    #[serde(default)]
    pub pending: BTreeMap<String, PendingValue>,
}

impl ObservedVm {
    /// Proxmox's `protection` flag: destroy and disk removal are refused while it is set.
    pub fn protected(&self) -> bool {
        self.config
            .get("protection")
            .and_then(|v| crate::pve::parse_bool_str(v))
            .unwrap_or(false)
    }
}

/// Why the engine believes a VM is ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// Its description carries our marker for this env, module and slot.
    Marker,
    /// Its VMID is in the previous HyOps state and its name matches, with no foreign marker.
    PreviousState,
    /// Its VMID is in the Terraform state of this module, with no foreign marker.
    TerraformState,
}

/// A VM the engine manages in this slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedVm {
    pub vm: ObservedVm,
    pub ownership: Ownership,
}

/// Everything observed for this slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedPool {
    pub managed: BTreeMap<LogicalVmKey, ManagedVm>,
    /// Every VMID in the cluster, with its node and name, for vm_id collision checks.
    pub all_vms: BTreeMap<u32, (String, String)>,
    /// Extra VMs carrying our marker for a key that already has a managed VM (a clone an
    /// interrupted run submitted twice). Provably ours and surplus: the plan deletes them.
    pub duplicates: Vec<(LogicalVmKey, ObservedVm)>,
    /// Warnings about VMs we saw but refused to adopt.
    pub warnings: Vec<String>,
}

/// What the cluster listing showed besides VMs: nodes and storages (shared or per node).
/// The executor sizes its concurrency from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShape {
    pub nodes: Vec<String>,
    /// Storage id → shared.
    pub storages: BTreeMap<String, bool>,
}

impl ClusterShape {
    /// Whether `storage` is shared (unknown storages count as local: the safer, smaller
    /// window).
    pub fn shared(&self, storage: &str) -> bool {
        self.storages.get(storage).copied().unwrap_or(false)
    }
}

/// VMIDs the previous runs recorded for this slot: `outputs.vm_ids` of the HyOps state and
/// the Terraform state, by logical key, with the physical name when known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorIds {
    pub hyops: BTreeMap<LogicalVmKey, (u32, Option<String>)>,
    pub terraform: BTreeMap<LogicalVmKey, u32>,
    /// Guest-agent IPv4 addresses per interface the previous apply recorded, by key
    /// (`outputs.vms.<key>.ipv4_addresses`).
    #[serde(default)]
    pub agent_ipv4: BTreeMap<LogicalVmKey, Vec<Vec<std::net::Ipv4Addr>>>,
    /// VMIDs `hyops state detach` made this slot forget: never managed, whatever their
    /// marker says (see [`crate::hyops::detached`]).
    #[serde(default)]
    pub detached: BTreeSet<u32>,
}

/// Which VMs need their config read: those tagged as ours, and those named by prior state.
pub fn candidate_vmids(rows: &[ResourceRow], prior: &PriorIds) -> BTreeSet<u32> {
    let mut out: BTreeSet<u32> = rows
        .iter()
        .filter(|r| !r.template && r.tags.iter().any(|t| t == MANAGED_TAG))
        .map(|r| r.vmid)
        .collect();
    let present: BTreeSet<u32> = rows.iter().map(|r| r.vmid).collect();
    for (vmid, _) in prior.hyops.values() {
        if present.contains(vmid) {
            out.insert(*vmid);
        }
    }
    for vmid in prior.terraform.values() {
        if present.contains(vmid) {
            out.insert(*vmid);
        }
    }
    out
}

/// Which of two marked VMs for one key to keep: the one recorded in the previous state,
/// then a started one, then a configured one (it carries our managed tag, written by the
/// config step), then the older (lower VMID).
fn keep_rank(vm: &ObservedVm, recorded: Option<u32>) -> (bool, bool, bool, std::cmp::Reverse<u32>) {
    let configured = vm.config.get("tags").is_some_and(|t| {
        crate::plan::props::tag_set(t)
            .iter()
            .any(|x| x == MANAGED_TAG)
    });
    (
        recorded == Some(vm.vmid),
        vm.status == PowerState::Running,
        configured,
        std::cmp::Reverse(vm.vmid),
    )
}

/// Decide which observed VMs belong to this slot (`identity` carries env, module, slot).
/// A VM is ours when its marker names this slot, or when prior state names its VMID and it
/// carries no marker of another owner. Anything else is never touched.
pub fn classify(
    identity: &OwnershipMarker,
    rows: &[ResourceRow],
    configs: Vec<ObservedVm>,
    prior: &PriorIds,
) -> ObservedPool {
    let mut pool = ObservedPool {
        all_vms: rows
            .iter()
            .map(|r| (r.vmid, (r.node.clone(), r.name.clone())))
            .collect(),
        ..Default::default()
    };
    let mut by_vmid: BTreeMap<u32, ObservedVm> = configs.into_iter().map(|c| (c.vmid, c)).collect();

    // 1. markers. A VM taken into the pool moves out of `by_vmid` (configs are not copied:
    // a pool of 10 000 VMs holds tens of MB of them); one moved out is managed or surplus,
    // which every later look-up below would skip anyway.
    let ids: Vec<u32> = by_vmid.keys().copied().collect();
    for vmid in ids {
        let Some(vm) = by_vmid.get(&vmid) else {
            continue;
        };
        let Some(m) = &vm.marker else { continue };
        if !m.same_slot(identity) {
            continue;
        }
        if prior.detached.contains(&vm.vmid) {
            pool.warnings.push(format!(
                "VM {} '{}' carries this slot's marker for {} but was detached (hyops state detach); it is not managed",
                vm.vmid, vm.name, m.key
            ));
            continue;
        }
        let key = LogicalVmKey(m.key.clone());
        if let Some(existing) = pool.managed.get(&key) {
            // Two marked VMs for one key (a clone sent twice): keep the one the state
            // records, else the configured/started one, never the bare clone; the other one
            // is surplus.
            let recorded = prior.hyops.get(&key).map(|(id, _)| *id);
            if keep_rank(&existing.vm, recorded) >= keep_rank(vm, recorded) {
                if let Some(vm) = by_vmid.remove(&vmid) {
                    pool.duplicates.push((key, vm));
                }
                continue;
            }
            pool.duplicates.push((key.clone(), existing.vm.clone()));
        }
        if let Some(vm) = by_vmid.remove(&vmid) {
            pool.managed.insert(
                key,
                ManagedVm {
                    vm,
                    ownership: Ownership::Marker,
                },
            );
        }
    }
    // 2. prior HyOps state, then Terraform state
    let prior_sources = prior
        .hyops
        .iter()
        .map(|(k, (id, name))| (k, *id, name.clone(), Ownership::PreviousState))
        .chain(
            prior
                .terraform
                .iter()
                .map(|(k, id)| (k, *id, None, Ownership::TerraformState)),
        );
    for (key, vmid, expected_name, ownership) in prior_sources {
        if pool.managed.contains_key(key) {
            continue;
        }
        if prior.detached.contains(&vmid) {
            continue;
        }
        let Some(vm) = by_vmid.get(&vmid) else {
            continue;
        };
        if let Some(m) = &vm.marker {
            if !m.same_slot(identity) {
                pool.warnings.push(format!(
                    "VM {vmid} is recorded for {key} in a previous state but carries the marker of env={} slot={} key={}; not adopting it",
                    m.env, m.slot, m.key
                ));
                continue;
            }
            if m.key != key.0 {
                continue;
            }
        }
        if let Some(name) = expected_name {
            if name != vm.name {
                pool.warnings.push(format!(
                    "VM {vmid} is recorded for {key} as '{name}' but is now named '{}'; its VMID may have been reused, so it is not adopted",
                    vm.name
                ));
                continue;
            }
        }
        // (a VM already in the pool has left `by_vmid`: found above as gone)
        if let Some(vm) = by_vmid.remove(&vmid) {
            pool.managed
                .insert(key.clone(), ManagedVm { vm, ownership });
        }
    }
    pool
}
