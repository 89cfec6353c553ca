//! `apply_journal.jsonl`: one JSON line per executor event (an action's start and end, its
//! result, duration, attempts and API calls). Lines are appended and flushed as they happen,
//! so a run killed mid-way still leaves a readable journal. Knows nothing about Proxmox.

use std::fs::{File, OpenOptions};
use std::io::Write;
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
    /// `clone`, `config`, `cloudinit`, `resize`, `start`, `readiness`, `facts`, `shutdown`,
    /// `stop`, `delete`.
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
        })
    }

    /// A journal that records nothing (plan-only paths, tests).
    pub fn disabled(run_id: &str) -> Self {
        Self {
            path: PathBuf::new(),
            file: Mutex::new(None),
            run_id: run_id.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Append one event. A write failure is logged, not fatal: the journal is evidence, and
    /// losing a line must not abandon VMs half-way.
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
        if let Some(f) = guard.as_mut() {
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
                tracing::warn!(path = %self.path.display(), error = %e, "apply journal write failed");
            }
        }
    }
}

/// Current UTC time as RFC 3339 with milliseconds.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
