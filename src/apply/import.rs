//! Import and detach on the Proxmox side: observe one slot, and adopt an existing VM into a
//! logical key by writing the ownership marker. An import changes nothing but the marker:
//! the marker line is added to the VM's `description` (the operator's own lines are kept)
//! and the `hyops-pve` discovery tag is added to its `tags` (the index by which later runs
//! find marked VMs), in one config write guarded by the config digest. Name, resources, NICs
//! and power state are left as they are; the next apply converges them like any other drift.
//! Knows nothing about flags, HyOps state files or where evidence lives.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::apply::engine::SlotIdentity;
use crate::inputs::model::{LogicalVmKey, ModuleInputs};
use crate::plan::desired::MANAGED_TAG;
use crate::plan::diff::merge_description;
use crate::plan::marker::OwnershipMarker;
use crate::plan::observe::{list_vms, observe, ObserveError};
use crate::plan::observed::{ObservedPool, PriorIds};
use crate::plan::props::tag_set;
use crate::pve::{ConfigUpdate, PveClient, PveError};

/// Import failures; each names the VM or key and the way out.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("import refused: VM {vmid} does not exist in the cluster (GET /cluster/resources lists no VM with that VMID)")]
    NoSuchVm { vmid: u32 },
    #[error(
        "import refused: VM {vmid} is on node {actual}, not {requested} as the resource id says"
    )]
    WrongNode {
        vmid: u32,
        requested: String,
        actual: String,
    },
    #[error("import refused: VM {vmid} is a template; import adopts VMs, not templates")]
    Template { vmid: u32 },
    #[error("import refused: logical key {key} is not in inputs.vms (requested keys: {requested}); add it to the inputs first")]
    UnknownKey { key: String, requested: String },
    #[error("import refused: VM {vmid} is locked (lock={lock}); wait for the running task or clear the lock, then retry")]
    Locked { vmid: u32, lock: String },
    #[error("import refused: VM {vmid} carries the marker of another owner (env={env} module={module} slot={slot} key={key}); it is not adopted")]
    ForeignMarker {
        vmid: u32,
        env: String,
        module: String,
        slot: String,
        key: String,
    },
    #[error("import refused: VM {vmid} already belongs to this slot as {other}; it cannot also be {key}")]
    OtherKey {
        vmid: u32,
        key: String,
        other: String,
    },
    #[error("import refused: {key} is already managed by VM {managed} in this slot; destroy it or detach it (hyops state detach) before importing VM {vmid}")]
    KeyTaken {
        key: String,
        managed: u32,
        vmid: u32,
    },
    #[error("reading the config of VM {vmid} on node {node} failed: {source}")]
    Read {
        vmid: u32,
        node: String,
        #[source]
        source: PveError,
    },
    #[error("writing the ownership marker of VM {vmid} on node {node} failed: {source} (nothing else was changed; retry the import)")]
    Write {
        vmid: u32,
        node: String,
        #[source]
        source: PveError,
    },
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub key: String,
    pub vmid: u32,
    pub node: String,
    pub name: String,
    /// False when the VM already carried this slot's marker for the key (nothing written).
    pub marker_written: bool,
}

/// Observe this slot: every VM it provably owns (see [`crate::plan::observed::classify`]).
/// `names` are physical names worth reading besides the tagged VMs and prior VMIDs. A VM
/// under `lock: clone` is waited for up to `clone_lock_wait` (already scaled by the
/// engine's time scale, see [`crate::plan::observe::CLONE_LOCK_WAIT`]).
pub async fn observe_slot(
    client: &PveClient,
    identity: &SlotIdentity,
    prior: &PriorIds,
    names: &BTreeSet<String>,
    clone_lock_wait: Duration,
) -> Result<ObservedPool, ObserveError> {
    let rows = list_vms(client).await?;
    let mut expected = names.clone();
    expected.extend(prior.hyops.values().filter_map(|(_, n)| n.clone()));
    observe(
        client,
        &identity.probe_marker(),
        &rows,
        prior,
        &expected,
        clone_lock_wait,
    )
    .await
}

/// What to import, and the slot as observed before the import.
#[derive(Clone, Copy)]
pub struct ImportRequest<'a> {
    pub inputs: &'a ModuleInputs,
    /// The template the inputs name (goes into the marker).
    pub template_vmid: u32,
    pub key: &'a str,
    pub vmid: u32,
    /// The node the resource id names, if any.
    pub node: Option<&'a str>,
    pub observed: &'a ObservedPool,
}

/// Adopt VM `vmid` into `key` of this slot: check it is a plain VM on the expected node that
/// no other owner marked, that `key` is requested and not held by another VM of the slot, then
/// write the marker (description line + discovery tag). `template_vmid` goes into the marker
/// (the template the inputs name: the imported VM is treated as cloned from it, as a
/// Terraform-created VM is on adoption). `observed` is this slot before the import.
pub async fn import_vm(
    client: &PveClient,
    identity: &SlotIdentity,
    req: &ImportRequest<'_>,
) -> Result<Imported, ImportError> {
    let ImportRequest {
        inputs,
        template_vmid,
        key,
        vmid,
        node,
        observed,
    } = *req;
    let rows = list_vms(client).await?;
    let row = rows
        .iter()
        .find(|r| r.vmid == vmid)
        .ok_or(ImportError::NoSuchVm { vmid })?;
    if let Some(n) = node {
        if n != row.node {
            return Err(ImportError::WrongNode {
                vmid,
                requested: n.to_string(),
                actual: row.node.clone(),
            });
        }
    }
    if row.template {
        return Err(ImportError::Template { vmid });
    }
    let lkey = LogicalVmKey(key.to_string());
    if !inputs.vms.contains_key(&lkey) {
        let requested: Vec<&str> = inputs.vms.keys().map(|k| k.0.as_str()).collect();
        return Err(ImportError::UnknownKey {
            key: key.to_string(),
            requested: requested.join(", "),
        });
    }
    let cfg = client
        .vm_config(&row.node, vmid, false)
        .await
        .map_err(|source| ImportError::Read {
            vmid,
            node: row.node.clone(),
            source,
        })?;
    if cfg.template {
        return Err(ImportError::Template { vmid });
    }
    if let Some(lock) = cfg.lock.clone().filter(|l| !l.is_empty()) {
        return Err(ImportError::Locked { vmid, lock });
    }
    let name = cfg.name.clone().unwrap_or_else(|| row.name.clone());
    let probe = identity.probe_marker();
    let existing = cfg
        .description
        .as_deref()
        .and_then(OwnershipMarker::parse_description);
    let already = match &existing {
        Some(m) if !m.same_slot(&probe) => {
            return Err(ImportError::ForeignMarker {
                vmid,
                env: m.env.clone(),
                module: m.module_ref.clone(),
                slot: m.slot.clone(),
                key: m.key.clone(),
            })
        }
        Some(m) if m.key != key => {
            return Err(ImportError::OtherKey {
                vmid,
                key: key.to_string(),
                other: m.key.clone(),
            })
        }
        Some(_) => true,
        None => false,
    };
    if let Some((other, _)) = observed
        .managed
        .iter()
        .find(|(k, m)| m.vm.vmid == vmid && k.0 != key)
    {
        // Owned through a previous state under another key.
        return Err(ImportError::OtherKey {
            vmid,
            key: key.to_string(),
            other: other.0.clone(),
        });
    }
    if let Some(m) = observed.managed.get(&lkey) {
        if m.vm.vmid != vmid {
            return Err(ImportError::KeyTaken {
                key: key.to_string(),
                managed: m.vm.vmid,
                vmid,
            });
        }
    }
    let tags: BTreeSet<String> = cfg
        .tags
        .as_ref()
        .map(|t| tag_set(&t.0.join(";")))
        .unwrap_or_default();
    if already && tags.contains(MANAGED_TAG) {
        return Ok(Imported {
            key: key.to_string(),
            vmid,
            node: row.node.clone(),
            name,
            marker_written: false,
        });
    }
    let marker = identity.marker(key, template_vmid, inputs);
    let description = merge_description(cfg.description.as_deref(), &marker.to_description());
    let mut all_tags = tags;
    all_tags.insert(MANAGED_TAG.to_string());
    let mut update = ConfigUpdate::new()
        .description(&description)
        .raw("tags", &all_tags.into_iter().collect::<Vec<_>>().join(";"));
    if let Some(d) = &cfg.digest {
        update = update.digest(d);
    }
    client
        .update_config_sync(&row.node, vmid, &update)
        .await
        .map_err(|source| ImportError::Write {
            vmid,
            node: row.node.clone(),
            source,
        })?;
    Ok(Imported {
        key: key.to_string(),
        vmid,
        node: row.node.clone(),
        name,
        marker_written: true,
    })
}
