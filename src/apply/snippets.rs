//! The snippet phases of an apply: before any VM is written, upload the cloud-init snippet
//! files the plan needs (content-addressed: files already there are not written again);
//! after the rollout, remove the files no VM of this slot points at any more. Built on
//! [`crate::ssh::snippets`]. Knows nothing about flags or where state lives.
//!
//! Files are found by VM name (`<name>-cloud-init-<kind>-<hash>.yaml`), and Proxmox allows two
//! VMs with one name (another env or module with the same `name_prefix`, a hand-made VM, one
//! that upstream's Terraform made with `<name>-cloud-init-user.yaml`). So before removing,
//! every file a namesake VM that is not one of ours points at (`cicustom`) is kept: a cleanup
//! never breaks another VM's next cloud-init rebuild.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::executor::VmOutcome;
use crate::plan::artifact::PlanArtifact;
use crate::plan::desired::SnippetFile;
use crate::plan::diff::VmAction;
use crate::pve::{PveClient, ResourceType};
use crate::ssh::node::NodeSsh;
use crate::ssh::snippets::{self, SnippetError, SnippetReport};

/// The snippet file names a `cicustom` value points at (`user=local:snippets/a.yaml,…` →
/// `a.yaml`).
pub fn cicustom_files(cicustom: &str) -> Vec<String> {
    cicustom
        .split(',')
        .filter_map(|part| part.split_once('=').map(|(_, v)| v.trim()))
        .filter_map(|vol| vol.split_once(':').map(|(_, path)| path))
        .map(|path| path.rsplit('/').next().unwrap_or(path).to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

/// The files that VMs named like one of `names` but not among `ours` (VMIDs) point at: a
/// cluster listing, then one config read per such namesake (none in the usual case). Only
/// asked when a file would be removed.
async fn namesakes_files(
    client: &PveClient,
    names: &BTreeSet<String>,
    ours: &BTreeSet<u32>,
) -> Result<BTreeSet<String>, SnippetError> {
    let rows = client
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .map_err(|e| SnippetError::Namesakes(e.to_string()))?;
    let mut keep = BTreeSet::new();
    for r in rows {
        let (Some(vmid), Some(node), Some(name)) = (r.vmid, r.node.as_ref(), r.name.as_ref())
        else {
            continue;
        };
        if r.kind != "qemu" || ours.contains(&vmid) || !names.contains(name) {
            continue;
        }
        let cfg = client
            .vm_config(node, vmid, false)
            .await
            .map_err(|e| SnippetError::Namesakes(e.to_string()))?;
        if let Some(cc) = cfg.raw.get("cicustom") {
            keep.extend(cicustom_files(cc));
        }
    }
    Ok(keep)
}

fn names_of(owners: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> BTreeSet<String> {
    owners
        .values()
        .flat_map(|s| s.values().flatten().cloned())
        .collect()
}

/// Node → snippet files of the VMs this plan writes (create, update, replace).
pub fn wanted(plan: &PlanArtifact) -> BTreeMap<String, Vec<SnippetFile>> {
    let mut out: BTreeMap<String, Vec<SnippetFile>> = BTreeMap::new();
    for p in &plan.vms {
        if matches!(p.action, VmAction::Noop | VmAction::Delete) {
            continue;
        }
        if let Some(d) = &p.desired {
            let files = d.snippet_files();
            if !files.is_empty() {
                out.entry(d.node.clone()).or_default().extend(files);
            }
        }
    }
    out
}

/// True when the plan writes or removes any VM (only then do snippets need syncing: a
/// no-op apply opens no SSH session).
pub fn touches_vms(plan: &PlanArtifact) -> bool {
    plan.vms.iter().any(|p| p.action != VmAction::Noop)
}

/// Upload what the plan needs (before the executor runs).
pub async fn deliver(ssh: &NodeSsh, plan: &PlanArtifact) -> Result<SnippetReport, SnippetError> {
    snippets::sync(ssh, &wanted(plan)).await
}

/// After the rollout: remove snippet files of this slot's VMs that no VM points at. Only VMs
/// that ended ok are cleaned (a failed update may still point at its old file); deleted VMs
/// lose all their files. `storage` is the module's snippets storage (where deleted VMs' files
/// were).
pub async fn cleanup(
    ssh: &NodeSsh,
    client: &PveClient,
    plan: &PlanArtifact,
    outcomes: &[VmOutcome],
    storage: &str,
) -> Result<SnippetReport, SnippetError> {
    let ok: BTreeSet<&str> = outcomes
        .iter()
        .filter(|o| o.status == "ok")
        .map(|o| o.key.as_str())
        .collect();
    let mut keep = BTreeSet::new();
    let mut owners: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for p in &plan.vms {
        if let Some(d) = &p.desired {
            keep.extend(d.snippet_files().into_iter().map(|f| f.file));
        }
        if p.action == VmAction::Noop || !ok.contains(p.key.0.as_str()) {
            continue;
        }
        let st = p
            .desired
            .as_ref()
            .map(|d| d.snippets_storage.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| storage.to_string());
        owners
            .entry(p.node.clone())
            .or_default()
            .entry(st)
            .or_default()
            .insert(p.physical_name.clone());
    }
    if owners.is_empty() {
        return Ok(SnippetReport::default());
    }
    let ours: BTreeSet<u32> = plan
        .vms
        .iter()
        .filter_map(|p| p.vmid)
        .chain(outcomes.iter().filter_map(|o| o.vmid))
        .collect();
    if !snippets::any_stale(ssh, &owners, &keep).await? {
        return Ok(SnippetReport::default());
    }
    keep.extend(namesakes_files(client, &names_of(&owners), &ours).await?);
    snippets::remove_stale(ssh, &owners, &keep).await
}

/// Remove every snippet file of destroyed VMs (`(node, physical name, vmid)`) that no
/// namesake VM still points at.
pub async fn remove_destroyed(
    ssh: &NodeSsh,
    client: &PveClient,
    destroyed: &[(String, String, u32)],
    storage: &str,
) -> Result<SnippetReport, SnippetError> {
    let mut owners: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (node, name, _) in destroyed {
        owners
            .entry(node.clone())
            .or_default()
            .entry(storage.to_string())
            .or_default()
            .insert(name.clone());
    }
    if owners.is_empty() {
        return Ok(SnippetReport::default());
    }
    if !snippets::any_stale(ssh, &owners, &BTreeSet::new()).await? {
        return Ok(SnippetReport::default());
    }
    let ours: BTreeSet<u32> = destroyed.iter().map(|d| d.2).collect();
    let keep = namesakes_files(client, &names_of(&owners), &ours).await?;
    snippets::remove_stale(ssh, &owners, &keep).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cicustom_names_its_files() {
        assert_eq!(
            cicustom_files("user=local:snippets/a-cloud-init-user-0123456789ab.yaml,network=nfs:snippets/b.yaml"),
            ["a-cloud-init-user-0123456789ab.yaml", "b.yaml"]
        );
        assert!(cicustom_files("").is_empty());
    }
}
