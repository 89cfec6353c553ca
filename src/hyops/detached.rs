//! The detach record of a module slot: `<root>/state/detached/<module_id>[__<inst>].json`,
//! the VMs `hyops state detach` made this engine forget. Terraform's `state rm` forgets a
//! resource without touching the provider; our ownership also lives in the VM (the marker in
//! its description), so forgetting without touching Proxmox needs this record: a VMID listed
//! here is never managed, adopted, updated or destroyed by this slot, whatever its marker
//! says. A record is dropped once its VM is gone from the cluster (its VMID may be reused).
//!
//! This is the engine's own file, not HyOps module state (`latest.json` stays hyops').
//! Plain values only; knows nothing about Proxmox API calls or the planner.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{HyopsError, Result};
use super::fsio::{read_json_opt, write_json_atomic};
use super::paths::{slot_name, ModuleRef, RuntimeRoot, StateInstance};

/// One forgotten VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedVm {
    pub vmid: u32,
    /// The logical key it was managed under.
    pub key: String,
    pub name: String,
    pub node: String,
    /// The `state_detach` run that forgot it, and when (UTC).
    pub run_id: String,
    pub detached_at: String,
}

/// The detach record of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedVms {
    #[serde(default)]
    pub module_ref: String,
    /// `latest` or `instance:<name>`.
    #[serde(default)]
    pub slot: String,
    #[serde(default)]
    pub vms: Vec<DetachedVm>,
}

impl DetachedVms {
    /// Read the slot's record (empty when none).
    pub fn read(
        root: &RuntimeRoot,
        module_ref: &ModuleRef,
        instance: Option<&StateInstance>,
    ) -> Result<Self> {
        let path = root.detached_file(module_ref, instance);
        match read_json_opt(&path)? {
            None => Ok(Self {
                module_ref: module_ref.to_string(),
                slot: slot_name(instance),
                vms: Vec::new(),
            }),
            Some(v @ Value::Object(_)) => serde_json::from_value(v).map_err(|e| HyopsError::Json {
                path: path.clone(),
                detail: format!("not a hyops-pve detach record: {e}"),
            }),
            Some(_) => Err(HyopsError::NotAnObject { path }),
        }
    }

    /// Write the record atomically (0600).
    pub fn write(
        &self,
        root: &RuntimeRoot,
        module_ref: &ModuleRef,
        instance: Option<&StateInstance>,
    ) -> Result<()> {
        let path = root.detached_file(module_ref, instance);
        let value = serde_json::to_value(self).map_err(|e| HyopsError::Json {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_json_atomic(&path, &value)
    }

    /// The forgotten VMIDs.
    pub fn vmids(&self) -> BTreeSet<u32> {
        self.vms.iter().map(|v| v.vmid).collect()
    }

    /// Add (or refresh) one VM's record.
    pub fn add(&mut self, vm: DetachedVm) {
        self.vms.retain(|v| v.vmid != vm.vmid);
        self.vms.push(vm);
        self.vms.sort_by_key(|v| v.vmid);
    }

    /// Keep only the records whose VMID `present` says still exists; true when any was
    /// dropped (the caller then writes the record).
    pub fn retain_present(&mut self, present: impl Fn(u32) -> bool) -> bool {
        let before = self.vms.len();
        self.vms.retain(|v| present(v.vmid));
        self.vms.len() != before
    }
}
