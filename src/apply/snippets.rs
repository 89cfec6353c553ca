//! The snippet phases of an apply: before any VM is written, upload the cloud-init snippet
//! files the plan needs (content-addressed: files already there are not written again);
//! after the rollout, remove the files no VM of this slot points at any more. Built on
//! [`crate::ssh::snippets`]. Knows nothing about flags or where state lives.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::executor::VmOutcome;
use crate::plan::artifact::PlanArtifact;
use crate::plan::desired::SnippetFile;
use crate::plan::diff::VmAction;
use crate::ssh::node::NodeSsh;
use crate::ssh::snippets::{self, SnippetError, SnippetReport};

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
    snippets::remove_stale(ssh, &owners, &keep).await
}

/// Remove every snippet file of destroyed VMs (`(node, physical name)`).
pub async fn remove_destroyed(
    ssh: &NodeSsh,
    destroyed: &[(String, String)],
    storage: &str,
) -> Result<SnippetReport, SnippetError> {
    let mut owners: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (node, name) in destroyed {
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
    snippets::remove_stale(ssh, &owners, &BTreeSet::new()).await
}
