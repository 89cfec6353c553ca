//! Evidence directories and the CLI-side evidence records (§3.2, §6.1): `meta.json`,
//! `inputs_resolved.json`, `preflight_decision.json`, `rebuild_summary.json`,
//! `driver_result.json`. All writes go through [`super::fsio::write_json_atomic`]. Also the
//! tally of evidence writes that failed once a run had started changing things
//! ([`EvidenceFailures`]): such a run goes on to record its state and reports them at its end.
//! Knows nothing about Proxmox API calls or the planner.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{json, Value};

use super::contract::{DRIVER_REF, PACK_ID, PROFILE, PUBLISH_KEYS, REQUIRED_CREDENTIALS};
use super::error::{io_storage_full, HyopsError, Result};
use super::fsio::{
    ensure_dir, sort_keys, write_json_atomic, write_json_atomic_ser, write_text_atomic,
};
use super::paths::{ModuleRef, RuntimeRoot, StateInstance};
use super::protocol::DriverResult;
use super::runid::utc_now;

/// `<root>/logs/module/<module_id>/<run_id>/`, or `<out_dir>/module/<module_id>/<run_id>/`.
/// The module id never includes the state instance.
pub fn evidence_dir(
    root: &RuntimeRoot,
    out_dir: Option<&Path>,
    module_ref: &ModuleRef,
    run_id: &str,
) -> PathBuf {
    let base = out_dir.map_or_else(|| root.logs_dir(), Path::to_path_buf);
    base.join("module")
        .join(module_ref.module_id())
        .join(run_id)
}

/// `<root>/logs/rebuild/<module_id>/<run_id>/`.
pub fn rebuild_dir(root: &RuntimeRoot, module_ref: &ModuleRef, run_id: &str) -> PathBuf {
    root.logs_dir()
        .join("rebuild")
        .join(module_ref.module_id())
        .join(run_id)
}

/// Create an evidence dir (0700 for new levels).
pub fn create_evidence_dir(dir: &Path) -> Result<()> {
    ensure_dir(dir)
}

/// `meta.json` of a module run (§3.2).
pub fn write_meta(
    evidence_dir: &Path,
    command: &str,
    run_id: &str,
    module_ref: &ModuleRef,
    root: &RuntimeRoot,
    preflight: &Value,
) -> Result<PathBuf> {
    let meta = json!({
        "command": command,
        "run_id": run_id,
        "module_ref": module_ref.as_str(),
        "execution": {"driver": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID, "hooks": {}},
        "requirements": {"credentials": REQUIRED_CREDENTIALS},
        "dependencies": {"items": [], "warnings": []},
        "outputs": {"publish": PUBLISH_KEYS},
        "paths": {
            "runtime_root": root.path().to_string_lossy(),
            "env": root.env(),
            "evidence_dir": evidence_dir.to_string_lossy(),
            "state_dir": root.state_dir().to_string_lossy(),
        },
        "preflight": preflight,
    });
    let p = evidence_dir.join("meta.json");
    write_json_atomic(&p, &meta)?;
    Ok(p)
}

/// `inputs_resolved.json` = `{module_ref, state_instance, inputs}`; `state_instance` is
/// `""` when none (as in the driver request).
pub fn write_inputs_resolved(
    evidence_dir: &Path,
    module_ref: &ModuleRef,
    instance: Option<&StateInstance>,
    inputs: &Value,
) -> Result<PathBuf> {
    let v = json!({
        "module_ref": module_ref.as_str(),
        "state_instance": instance.map_or("", |i| i.as_str()),
        "inputs": inputs,
    });
    let p = evidence_dir.join("inputs_resolved.json");
    write_json_atomic(&p, &v)?;
    Ok(p)
}

/// Write the driver result as `driver_result.json` (and return the path).
pub fn write_driver_result(evidence_dir: &Path, result: &DriverResult) -> Result<PathBuf> {
    let p = evidence_dir.join("driver_result.json");
    write_json_atomic_ser(&p, &result.sorted())?;
    Ok(p)
}

/// `result.json` (final) or `preflight_result.json`: the driver's result as the CLI records it.
pub fn write_cli_result(
    evidence_dir: &Path,
    preflight: bool,
    result: &DriverResult,
) -> Result<PathBuf> {
    let name = if preflight {
        "preflight_result.json"
    } else {
        "result.json"
    };
    let p = evidence_dir.join(name);
    write_json_atomic_ser(&p, &result.sorted())?;
    Ok(p)
}

/// `resolved.inputs.yml` (§3.2): the resolved inputs as YAML with sorted keys, 0600. Upstream
/// does not redact this file; the inputs hold no credentials (those live in the runtime
/// root), so the caller passes the resolved inputs as they are.
pub fn write_resolved_inputs_yaml(evidence_dir: &Path, inputs: &Value) -> Result<PathBuf> {
    let p = evidence_dir.join("resolved.inputs.yml");
    write_text_atomic(&p, &crate::yaml::to_yaml(&sort_keys(inputs)))?;
    Ok(p)
}

/// `preflight_decision.json` (§3.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightDecision {
    pub schema_version: u32,
    pub scope: String,
    pub requirement: String,
    pub command: String,
    pub mutating: bool,
    /// `enforce` or `bypass`.
    pub decision: String,
    /// `pending`, `passed`, `failed`, `bypassed`.
    pub status: String,
    pub guarantee: String,
    pub decision_source: String,
    pub reason: String,
    pub recorded_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// True for commands that change infrastructure.
pub fn is_mutating(command: &str) -> bool {
    matches!(
        command,
        "apply" | "deploy" | "destroy" | "import" | "rebuild"
    )
}

impl PreflightDecision {
    /// A fresh decision for `command`; `bypass_reason` set means `--skip-preflight`.
    pub fn new(command: &str, bypass_reason: Option<&str>) -> Self {
        let (decision, status, guarantee, reason) = match bypass_reason {
            Some(r) => (
                "bypass",
                "bypassed",
                "none: preflight skipped by operator",
                r.to_string(),
            ),
            None => (
                "enforce",
                "pending",
                "driver preflight must pass before the command runs",
                "default".to_string(),
            ),
        };
        Self {
            schema_version: 1,
            scope: "driver".into(),
            requirement: "driver-preflight".into(),
            command: command.to_string(),
            mutating: is_mutating(command),
            decision: decision.into(),
            status: status.into(),
            guarantee: guarantee.into(),
            decision_source: "operator-cli".into(),
            reason,
            recorded_at: utc_now(),
            completed_at: None,
            detail: None,
        }
    }
    /// `complete_preflight_decision`: record the outcome.
    pub fn complete(&mut self, passed: bool, detail: Option<&str>) {
        if self.decision == "enforce" {
            self.status = if passed { "passed" } else { "failed" }.into();
        }
        self.completed_at = Some(utc_now());
        self.detail = detail.map(str::to_string);
    }
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let p = dir.join("preflight_decision.json");
        write_json_atomic(&p, &serde_json::to_value(self).unwrap_or(Value::Null))?;
        Ok(p)
    }
}

/// One phase of `rebuild_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseOutcome {
    pub status: String,
    pub exit_code: i32,
}

/// `rebuild_summary.json` = `{command, run_id, module_ref, module_id, status,
/// phases{preflight|destroy|apply: {status, exit_code}}, preflight}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildSummary {
    pub command: String,
    pub run_id: String,
    pub module_ref: String,
    pub module_id: String,
    pub status: String,
    pub phases: std::collections::BTreeMap<String, PhaseOutcome>,
    pub preflight: Value,
}

impl RebuildSummary {
    pub fn new(run_id: &str, module_ref: &ModuleRef) -> Self {
        Self {
            command: "rebuild".into(),
            run_id: run_id.into(),
            module_ref: module_ref.to_string(),
            module_id: module_ref.module_id(),
            status: "running".into(),
            phases: Default::default(),
            preflight: json!({}),
        }
    }
    /// Record a phase (`preflight`, `destroy` or `apply`).
    pub fn phase(&mut self, name: &str, status: &str, exit_code: i32) {
        self.phases.insert(
            name.to_string(),
            PhaseOutcome {
                status: status.into(),
                exit_code,
            },
        );
    }
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let p = dir.join("rebuild_summary.json");
        write_json_atomic(&p, &serde_json::to_value(self).unwrap_or(Value::Null))?;
        Ok(p)
    }
}

/// An evidence file that could not be written (whole or in part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceFailure {
    pub path: PathBuf,
    /// What failed, without the path: the OS error, e.g. `No space left on device (os error
    /// 28)`.
    pub error: String,
    /// What was lost when the file exists but is incomplete (a journal's lost lines).
    pub detail: Option<String>,
    /// `ENOSPC` or `EDQUOT`: the filesystem is full.
    pub storage_full: bool,
}

impl EvidenceFailure {
    /// The failure of a write through [`super::fsio`].
    pub fn from_hyops(e: &HyopsError) -> Self {
        let (path, error) = match e {
            HyopsError::Io { path, source } | HyopsError::Write { path, source } => {
                (path.clone(), source.to_string())
            }
            other => (PathBuf::new(), other.to_string()),
        };
        Self {
            path,
            error,
            detail: None,
            storage_full: e.storage_full(),
        }
    }

    /// The failure of a write of `path`.
    pub fn from_io(path: &Path, e: &std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            error: e.to_string(),
            detail: None,
            storage_full: io_storage_full(e),
        }
    }
}

impl std::fmt::Display for EvidenceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write {}: {}", self.path.display(), self.error)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// The evidence writes of one run that failed after it started changing things (Proxmox,
/// NetBox). Such a failure does not stop the run: its remaining steps and its state record
/// still happen (state is what operators rely on, evidence comes second), and the run then
/// fails naming every file that is missing or incomplete. Shared by the run's phases.
#[derive(Debug, Default)]
pub struct EvidenceFailures(Mutex<Vec<EvidenceFailure>>);

/// How many further files [`EvidenceFailures::summary`] names after the first.
const MORE_FILES: usize = 5;

impl EvidenceFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EvidenceFailure>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, failure: EvidenceFailure) {
        self.lock().push(failure);
    }

    /// The value of a successful write; a failed one is recorded and gives `None`.
    pub fn keep<T>(&self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.record(EvidenceFailure::from_hyops(&e));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every failure, in the order they happened.
    pub fn all(&self) -> Vec<EvidenceFailure> {
        self.lock().clone()
    }

    /// True when one of the failures is a full filesystem.
    pub fn storage_full(&self) -> bool {
        self.lock().iter().any(|f| f.storage_full)
    }

    /// One line: the first failure in full, then the other files by name (at most five, then
    /// how many more); `None` when every write succeeded.
    pub fn summary(&self) -> Option<String> {
        let all = self.lock();
        let first = all.first()?;
        let mut line = first.to_string();
        let rest: Vec<String> = all[1..]
            .iter()
            .map(|f| {
                let name = f.path.file_name().map_or_else(
                    || f.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                match &f.detail {
                    Some(d) => format!("{name} ({d})"),
                    None => name,
                }
            })
            .collect();
        if !rest.is_empty() {
            let shown = rest.iter().take(MORE_FILES).cloned().collect::<Vec<_>>();
            line.push_str(&format!("; also not written: {}", shown.join(", ")));
            if rest.len() > MORE_FILES {
                line.push_str(&format!(" and {} more", rest.len() - MORE_FILES));
            }
        }
        Some(line)
    }
}
