//! What a run says when its record is incomplete: evidence files it could not write after it
//! changed things (a full disk, a failing device), or a module state it could not write. The
//! messages name the files and the OS error, which VMs exist or changed, and what to do next
//! (free space, then run the command again, which converges). Knows nothing about how the
//! files are written.
//!
//! The rule they serve: once a run has changed Proxmox, an evidence write that fails does not
//! stop it; its state is still recorded (`error`, previous outputs kept, as after any failed
//! apply, contract §3.4), and the run fails naming every file that is missing or incomplete.
//! Before the first change, such a failure stops the run (nothing to protect yet).

use std::path::Path;

use crate::apply::executor::VmOutcome;
use crate::hyops::{EvidenceFailures, HyopsError};
use crate::plan::diff::VmAction;

/// How many VMs of one group are named before the rest is counted.
const NAMED_PER_GROUP: usize = 6;

/// The VMs an apply or destroy touched, by what happened to them: `4 created (app-01 vmid 100
/// on pve1, …)`, `1 failed (db-01)`, `2 unchanged`. `"no VM"` when there were none.
pub fn vm_changes(outcomes: &[VmOutcome]) -> String {
    const ORDER: [&str; 6] = [
        "created",
        "replaced",
        "updated",
        "removed",
        "failed",
        "unchanged",
    ];
    let group = |o: &VmOutcome| {
        if o.status != "ok" {
            return "failed";
        }
        match o.action {
            VmAction::Create => "created",
            VmAction::Replace => "replaced",
            VmAction::Update => "updated",
            VmAction::Delete => "removed",
            VmAction::Noop => "unchanged",
        }
    };
    let mut parts = Vec::new();
    for label in ORDER {
        let members: Vec<&VmOutcome> = outcomes.iter().filter(|o| group(o) == label).collect();
        if members.is_empty() {
            continue;
        }
        if label == "unchanged" {
            parts.push(format!("{} unchanged", members.len()));
            continue;
        }
        let named: Vec<String> = members
            .iter()
            .take(NAMED_PER_GROUP)
            .map(|o| match o.vmid {
                Some(id) if !o.node.is_empty() => format!("{} vmid {id} on {}", o.key, o.node),
                Some(id) => format!("{} vmid {id}", o.key),
                None => o.key.clone(),
            })
            .collect();
        let more = members.len().saturating_sub(NAMED_PER_GROUP);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        parts.push(format!(
            "{} {label} ({}{tail})",
            members.len(),
            named.join(", ")
        ));
    }
    if parts.is_empty() {
        "no VM".into()
    } else {
        parts.join(", ")
    }
}

/// True when the run changed something in Proxmox (or may have: a failed step).
pub fn changed_anything(outcomes: &[VmOutcome]) -> bool {
    outcomes
        .iter()
        .any(|o| o.action != VmAction::Noop || o.status != "ok")
}

/// What to do about storage that refused a write: free space when it is full, else make it
/// writable (upstream's wording for a full runtime root, `hyops/runtime/storage.py`
/// `format_runtime_storage_error`: "local runtime storage is full. Free disk space, …").
pub fn storage_advice(storage_full: bool, root: &Path) -> String {
    if storage_full {
        format!(
            "local runtime storage is full: free disk space on the filesystem of {}",
            root.display()
        )
    } else {
        format!(
            "check that {} is writable (permissions, a read-only or failing filesystem)",
            root.display()
        )
    }
}

/// Where the evidence failed: the directory of the first file that could not be written
/// (`--out-dir` may be on another filesystem than the root), else `root`. The storage advice
/// names this place.
pub fn failed_place(failures: &EvidenceFailures, root: &Path) -> std::path::PathBuf {
    failures
        .all()
        .first()
        .and_then(|f| f.path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root.to_path_buf())
}

/// What running `command` again does after this run.
fn converges(command: &str) -> &'static str {
    match command {
        "destroy" => {
            "it removes what is left (nothing already removed is touched) and records the state"
        }
        "import" => "it finds the VM already imported and records the state",
        _ => "it adopts the VMs above and converges without creating any twice",
    }
}

/// The error of a run whose evidence is incomplete after it changed (or touched) Proxmox:
/// `apply changed Proxmox but its evidence is incomplete: cannot write …/apply_report.json:
/// No space left on device (os error 28); also not written: …; VMs: 4 created (…); local
/// runtime storage is full: …, then run apply again: it adopts …`. `None` when every
/// evidence write succeeded.
pub fn incomplete_evidence(
    command: &str,
    failures: &EvidenceFailures,
    outcomes: &[VmOutcome],
    root: &Path,
) -> Option<String> {
    let summary = failures.summary()?;
    let what = if changed_anything(outcomes) {
        "changed Proxmox"
    } else {
        "changed nothing in Proxmox"
    };
    Some(format!(
        "{command} {what} but its evidence is incomplete: {summary}; VMs: {}; {}, then run {command} again: {}",
        vm_changes(outcomes),
        storage_advice(failures.storage_full(), &failed_place(failures, root)),
        converges(command)
    ))
}

/// `error` joined with the incomplete-evidence message when there is one.
pub fn with_incomplete_evidence(
    error: Option<String>,
    command: &str,
    failures: &EvidenceFailures,
    outcomes: &[VmOutcome],
    root: &Path,
) -> Option<String> {
    match (
        error,
        incomplete_evidence(command, failures, outcomes, root),
    ) {
        (Some(e), Some(lost)) => Some(format!("{e}; and {lost}")),
        (e, lost) => e.or(lost),
    }
}

/// The error when a run's module state could not be written (`state_error`): what the run
/// did (`done`, e.g. `apply failed: …` or `apply converged in Proxmox`), that the state was not
/// recorded and what it still says, and what to do next.
pub fn state_not_recorded(
    command: &str,
    done: &str,
    state_error: &HyopsError,
    still_says: &str,
    root: &Path,
) -> String {
    format!(
        "{done}; and the module state could not be recorded: {state_error} (the state file still says {still_says}); {}, then run {command} again: {}",
        storage_advice(state_error.storage_full(), root),
        converges(command)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hyops::EvidenceFailure;

    fn outcome(key: &str, action: VmAction, status: &str, vmid: Option<u32>) -> VmOutcome {
        VmOutcome {
            key: key.into(),
            action,
            vmid,
            node: "pve1".into(),
            status: status.into(),
            error: None,
            duration_ms: 0,
            api_calls: 0,
            facts: None,
            host_identity: None,
        }
    }

    #[test]
    fn the_vm_changes_name_each_group_with_its_vmids() {
        let o = [
            outcome("app-01", VmAction::Create, "ok", Some(100)),
            outcome("app-02", VmAction::Update, "ok", Some(101)),
            outcome("db-01", VmAction::Create, "error", None),
            outcome("db-02", VmAction::Noop, "ok", Some(103)),
        ];
        assert_eq!(
            vm_changes(&o),
            "1 created (app-01 vmid 100 on pve1), 1 updated (app-02 vmid 101 on pve1), 1 failed (db-01), 1 unchanged"
        );
        assert!(changed_anything(&o));
        assert!(!changed_anything(&o[3..]));
        assert_eq!(vm_changes(&[]), "no VM");
    }

    #[test]
    fn a_large_group_names_six_vms_and_counts_the_rest() {
        let o: Vec<VmOutcome> = (0..10)
            .map(|i| outcome(&format!("vm-{i}"), VmAction::Create, "ok", Some(100 + i)))
            .collect();
        let line = vm_changes(&o);
        assert!(
            line.starts_with("10 created (vm-0 vmid 100 on pve1"),
            "{line}"
        );
        assert!(
            line.ends_with("vm-5 vmid 105 on pve1 and 4 more)"),
            "{line}"
        );
    }

    #[test]
    fn the_storage_advice_names_the_filesystem_where_the_evidence_failed() {
        let root = Path::new("/srv/hyops/envs/dev");
        let failures = EvidenceFailures::default();
        assert_eq!(
            failed_place(&failures, root),
            root,
            "nothing failed: the root"
        );
        failures.record(EvidenceFailure {
            path: "/mnt/evidence/module/x/apply-1/apply_journal.jsonl".into(),
            error: "No space left on device (os error 28)".into(),
            detail: None,
            storage_full: true,
        });
        let advice = storage_advice(true, &failed_place(&failures, root));
        assert_eq!(
            advice,
            "local runtime storage is full: free disk space on the filesystem of /mnt/evidence/module/x/apply-1"
        );
    }
}
