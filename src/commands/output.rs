//! The CLI's output edge: where every byte a command prints goes, and the `--json` envelope.
//!
//! Rules (README "Output and exit codes"):
//! - stdout carries results only: the human result lines, or with `--json` exactly one JSON
//!   document, the envelope (`docs/schemas/cli-envelope.schema.json`), on success and on
//!   failure alike;
//! - stderr carries everything a human watches while it runs: `run record:`, `progress:`,
//!   `WARN:`, `ERR:`; `--json` does not change stderr;
//! - no write can panic: a closed pipe (`hyops-pve … | head`) silently drops what follows, and
//!   the command still finishes its work and its state writes.
//!
//! Commands report through the free functions here; they reach the [`Sink`] of the running
//! command through a task-local set by [`crate::commands::run`]. Called outside a command
//! (library use, tests calling the `*_inner` functions), results and envelope fields are
//! dropped and stderr lines are still written. Knows nothing about what the commands do.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::commands::{EXIT_CANCELLED, EXIT_OK};

/// Envelope `schema` value; bump on an incompatible change of the envelope.
pub const ENVELOPE_SCHEMA: &str = "hyops-pve/cli-envelope/v1";

/// Keys the envelope itself owns; a command field never overwrites them.
const RESERVED: &[&str] = &[
    "schema",
    "status",
    "command",
    "run_id",
    "exit_code",
    "error",
    "warnings",
    "evidence_dir",
];

#[derive(Debug, Default)]
struct Parts {
    run_id: Option<String>,
    evidence_dir: Option<String>,
    warnings: Vec<String>,
    fields: Map<String, Value>,
}

/// What one command run reports: its mode (human or `--json`) and the envelope parts.
#[derive(Debug)]
pub struct Sink {
    json: bool,
    /// The envelope was already printed (`sim serve --json` prints it once it listens).
    printed: std::sync::atomic::AtomicBool,
    parts: Mutex<Parts>,
}

impl Sink {
    pub fn new(json: bool) -> Arc<Self> {
        Arc::new(Self {
            json,
            printed: std::sync::atomic::AtomicBool::new(false),
            parts: Mutex::new(Parts::default()),
        })
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        // A poisoned lock only means another thread panicked while holding it; the parts are
        // plain data and still usable.
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True in `--json` mode until the envelope has been printed.
    pub fn json_pending(&self) -> bool {
        self.json && !self.printed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The envelope for a command that ended with `code` and, on failure, `error`.
    pub fn envelope(&self, command: &str, code: i32, error: Option<&str>) -> Value {
        let p = self.parts();
        let status = match (code, error) {
            (EXIT_CANCELLED, _) => "cancelled",
            (_, Some(_)) => "error",
            (c, None) if c == EXIT_OK || c == crate::commands::EXIT_CHANGES => "ok",
            _ => "error",
        };
        let mut doc = Map::new();
        doc.insert("schema".into(), json!(ENVELOPE_SCHEMA));
        doc.insert("status".into(), json!(status));
        doc.insert("command".into(), json!(command));
        doc.insert("run_id".into(), json!(p.run_id));
        doc.insert("exit_code".into(), json!(code));
        doc.insert("evidence_dir".into(), json!(p.evidence_dir));
        doc.insert("warnings".into(), json!(p.warnings));
        if let Some(e) = error {
            doc.insert("error".into(), json!(e));
        }
        for (k, v) in &p.fields {
            if !RESERVED.contains(&k.as_str()) {
                doc.insert(k.clone(), v.clone());
            }
        }
        Value::Object(doc)
    }
}

tokio::task_local! {
    static SINK: Arc<Sink>;
}

/// Run `fut` with `sink` as the output of the command it runs.
pub async fn scoped<F: std::future::Future>(sink: Arc<Sink>, fut: F) -> F::Output {
    SINK.scope(sink, fut).await
}

fn with_sink<R>(f: impl FnOnce(&Sink) -> R) -> Option<R> {
    SINK.try_with(|s| f(s)).ok()
}

/// True when the running command prints the `--json` envelope.
pub fn is_json() -> bool {
    with_sink(|s| s.json).unwrap_or(false)
}

/// Write to stdout; a closed or failing stdout is ignored (never a panic).
pub fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Write to stderr; a closed or failing stderr is ignored (never a panic).
pub fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// A human result line on stdout (not printed with `--json`, nor outside a command).
pub fn result_line(line: &str) {
    if with_sink(|s| !s.json).unwrap_or(false) {
        write_stdout(&format!("{line}\n"));
    }
}

/// A human result block on stdout, printed as is (a rendered plan, YAML).
pub fn result_text(text: &str) {
    if with_sink(|s| !s.json).unwrap_or(false) {
        write_stdout(text);
    }
}

/// A human progress line on stderr (`run record: …`, `progress: …`), in every mode.
pub fn progress(line: &str) {
    write_stderr(&format!("{line}\n"));
}

/// A warning: `WARN: <w>` on stderr and an entry of the envelope's `warnings`.
pub fn warn(w: &str) {
    progress(&format!("WARN: {w}"));
    with_sink(|s| s.parts().warnings.push(w.to_string()));
}

/// Record warnings that were already shown (or that the human output shows elsewhere) in the
/// envelope only, skipping ones already recorded.
pub fn record_warnings(ws: &[String]) {
    with_sink(|s| {
        let mut p = s.parts();
        for w in ws {
            if !p.warnings.contains(w) {
                p.warnings.push(w.clone());
            }
        }
    });
}

/// The run this command started: its id and evidence directory (the first one wins, so a
/// rebuild reports its own run, not the apply inside it).
pub fn set_run(run_id: &str, evidence_dir: &std::path::Path) {
    with_sink(|s| {
        let mut p = s.parts();
        if p.run_id.is_none() {
            p.run_id = Some(run_id.to_string());
            p.evidence_dir = Some(evidence_dir.display().to_string());
        }
    });
}

/// A command field of the envelope (`plan`, `outputs`, `state`, …); a later call with the
/// same key replaces the value.
pub fn field(key: &str, value: Value) {
    with_sink(|s| {
        s.parts().fields.insert(key.to_string(), value);
    });
}

/// Print the envelope of the running command now (status ok), once; the command's end then
/// prints nothing more on stdout. For `sim serve --json`, which reports when it listens.
pub fn print_envelope_now(command: &str) {
    with_sink(|s| {
        if s.json && !s.printed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            print_envelope(&s.envelope(command, EXIT_OK, None));
        }
    });
}

/// Render the envelope as the single stdout document.
pub fn print_envelope(doc: &Value) {
    // Serialising a `Value` cannot fail (string keys, no custom Serialize impls).
    let text = serde_json::to_string_pretty(doc).unwrap_or_default();
    write_stdout(&format!("{text}\n"));
}
