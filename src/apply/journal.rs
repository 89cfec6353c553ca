//! `apply_journal.jsonl`: one JSON line per executor event (an action's start and end, its
//! result, duration, attempts and API calls). Lines are appended and flushed as they happen,
//! so a run killed mid-way still leaves a readable journal. Knows nothing about Proxmox.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Journal schema version (the `v` field of every line).
pub const JOURNAL_SCHEMA_VERSION: u32 = 1;

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEvent {
    pub v: u32,
    /// RFC 3339 UTC timestamp with milliseconds.
    pub ts: String,
    pub run_id: String,
    pub vm: String,
    pub vmid: Option<u32>,
    pub node: Option<String>,
    /// A step: `clone`, `config`, `cloudinit`, `resize`, `start`, `readiness`, `facts`,
    /// `status`, `shutdown`, `stop`, `delete`; or a run-level line (`vm` is `*`): `plan`
    /// (every request before the execution: preflight, listing, config reads, the VMID seed)
    /// and `task_poll` (the batched task listings). The `api_calls` of all `end` lines add up
    /// to every request of the run.
    pub action: String,
    /// `start` or `end`.
    pub event: String,
    /// On `end`: `ok`, `error`, `skipped`, `cancelled` (Ctrl-C).
    pub result: Option<String>,
    pub duration_ms: Option<u64>,
    pub attempts: Option<u32>,
    pub api_calls: Option<u64>,
    pub error: Option<String>,
}

/// Append-only JSONL writer, shared by all VM pipelines.
pub struct Journal {
    path: PathBuf,
    file: Mutex<Option<File>>,
    run_id: String,
    /// Lines written and lost, and why the first lost one could not be written.
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    written: u64,
    lost: u64,
    /// The first failure's message and whether the filesystem was full.
    first: Option<(String, bool)>,
}

/// Lines a journal could not write (a full disk, a failing device). The journal keeps trying
/// each later line, and never ends in half a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalLoss {
    pub path: PathBuf,
    /// Lines not written.
    pub lines: u64,
    /// Lines written (the journal holds these).
    pub written: u64,
    /// The OS error of the first lost line.
    pub first_error: String,
    /// `ENOSPC` or `EDQUOT`: the filesystem is full.
    pub storage_full: bool,
}

impl std::fmt::Display for JournalLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot write {}: {} ({} of {} line(s) lost)",
            self.path.display(),
            self.first_error,
            self.lines,
            self.lines + self.written
        )
    }
}

/// Journal I/O failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot write apply journal {path}: {source}")]
pub struct JournalError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl Journal {
    /// Open (create or append) the journal with mode 0600.
    pub fn open(path: &Path, run_id: &str) -> Result<Self, JournalError> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(|source| JournalError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(Some(file)),
            run_id: run_id.to_string(),
            tally: Mutex::new(Tally::default()),
        })
    }

    /// A journal that records nothing (plan-only paths, tests).
    pub fn disabled(run_id: &str) -> Self {
        Self {
            path: PathBuf::new(),
            file: Mutex::new(None),
            run_id: run_id.to_string(),
            tally: Mutex::new(Tally::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Append one event. A write failure is not fatal (the journal is evidence, and losing a
    /// line must not abandon VMs half-way): the line is cut back, the first failure is logged
    /// once, and every lost line is counted for [`Self::loss`], which the run reports.
    pub fn record(&self, mut ev: JournalEvent) {
        ev.v = JOURNAL_SCHEMA_VERSION;
        ev.run_id = self.run_id.clone();
        let Ok(mut line) = serde_json::to_string(&ev) else {
            return;
        };
        line.push('\n');
        let mut guard = match self.file.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(f) = guard.as_mut() else {
            return;
        };
        let result = crate::hyops::fsio::append_whole(f, &self.path, line.as_bytes());
        let mut tally = match self.tally.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match result {
            Ok(()) => tally.written += 1,
            Err(e) => {
                tally.lost += 1;
                if tally.first.is_none() {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "apply journal write failed; the run goes on, counts the lines it cannot write and reports them at its end"
                    );
                    tally.first = Some((e.to_string(), crate::hyops::error::io_storage_full(&e)));
                }
            }
        }
    }

    /// The lines this journal could not write, if any.
    pub fn loss(&self) -> Option<JournalLoss> {
        let tally = match self.tally.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (first_error, storage_full) = tally.first.clone()?;
        Some(JournalLoss {
            path: self.path.clone(),
            lines: tally.lost,
            written: tally.written,
            first_error,
            storage_full,
        })
    }
}

/// Current UTC time as RFC 3339 with milliseconds.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(vm: &str) -> JournalEvent {
        JournalEvent {
            v: 0,
            ts: now_ts(),
            run_id: String::new(),
            vm: vm.into(),
            vmid: None,
            node: None,
            action: "clone".into(),
            event: "start".into(),
            result: None,
            duration_ms: None,
            attempts: None,
            api_calls: None,
            error: None,
        }
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_and_the_journal_keeps_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("apply_journal.jsonl");
        let j = Journal::open(&path, "apply-1").unwrap();
        j.record(event("a"));
        assert_eq!(j.loss(), None);
        {
            let _full =
                crate::hyops::fsio::faults::inject(crate::hyops::fsio::faults::WriteFault {
                    under: d.path().to_path_buf(),
                    file_name: None,
                    armed_by: None,
                    after: 0,
                    failures: None,
                    errno: libc::ENOSPC,
                });
            j.record(event("b"));
            j.record(event("c"));
        }
        j.record(event("d"));
        let loss = j.loss().unwrap();
        assert_eq!((loss.lines, loss.written), (2, 2));
        assert!(loss.storage_full);
        assert_eq!(
            loss.to_string(),
            format!(
                "cannot write {}: No space left on device (os error 28) (2 of 4 line(s) lost)",
                path.display()
            )
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let vms: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<JournalEvent>(l).unwrap().vm)
            .collect();
        assert_eq!(vms, ["a", "d"]);
    }
}
