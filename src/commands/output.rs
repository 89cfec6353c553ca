//! The CLI's output edge: where every byte a command prints goes, and the `--json` envelope.
//!
//! Rules (README "Output and exit codes"):
//! - stdout carries results only: the human result lines, or with `--json` exactly one JSON
//!   document, the envelope (`docs/schemas/cli-envelope.schema.json`), on success and on
//!   failure alike;
//! - stderr carries everything a human watches while it runs: `run record:`, `progress:`,
//!   `WARN:`, `ERR:`; `--json` does not change stderr;
//! - no write can panic: a closed pipe (`hyops-pve … | head`) silently drops what follows, and
//!   the command still finishes its work and its state writes;
//! - stderr never blocks the work: every stderr line goes through one writer thread behind a
//!   bounded queue; a progress line that finds the queue full (nobody reads the pipe, e.g.
//!   hyops running the binary as a subprocess) is dropped and counted, never waited for.
//!   Other lines (`ERR:`, `WARN:`, …) wait for room for a bounded time, in order.
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

    /// The envelope for a command that ended with `code` and, on failure, `error`. The
    /// command's fields move into it (a 10 000-VM apply's outputs are not copied): it is
    /// made once, when it is printed.
    pub fn envelope(&self, command: &str, code: i32, error: Option<&str>) -> Value {
        let mut p = self.parts();
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
        for (k, v) in std::mem::take(&mut p.fields) {
            if !RESERVED.contains(&k.as_str()) {
                doc.insert(k, v);
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

/// Lines queued for the stderr thread at most.
const STDERR_QUEUE: usize = 1024;
/// How long a line that must not be dropped waits for room in the queue.
const STDERR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

enum StderrMsg {
    Text(String),
    Flush(std::sync::mpsc::Sender<()>),
}

struct StderrQueue {
    tx: std::sync::mpsc::SyncSender<StderrMsg>,
    dropped: std::sync::atomic::AtomicU64,
    reported: std::sync::atomic::AtomicU64,
}

/// The one stderr writer: a thread that does the blocking writes (started on first use).
fn stderr_queue() -> &'static StderrQueue {
    static Q: std::sync::OnceLock<StderrQueue> = std::sync::OnceLock::new();
    Q.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<StderrMsg>(STDERR_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("hyops-stderr".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        StderrMsg::Text(t) => {
                            let mut err = std::io::stderr().lock();
                            let _ = err.write_all(t.as_bytes());
                            let _ = err.flush();
                        }
                        StderrMsg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            });
        if spawned.is_err() {
            // no thread: the queue fills and lines are dropped, which never blocks
            tracing::warn!("cannot start the stderr writer thread; progress lines are dropped");
        }
        StderrQueue {
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
            reported: std::sync::atomic::AtomicU64::new(0),
        }
    })
}

/// Queue a line that may be dropped; never waits.
fn stderr_droppable(text: String) {
    use std::sync::atomic::Ordering;
    let q = stderr_queue();
    let dropped = q.dropped.load(Ordering::Relaxed);
    let reported = q.reported.load(Ordering::Relaxed);
    if dropped > reported {
        let note = format!(
            "progress: {} progress line(s) dropped: stderr is not being read fast enough\n",
            dropped - reported
        );
        if q.tx.try_send(StderrMsg::Text(note)).is_ok() {
            q.reported.store(dropped, Ordering::Relaxed);
        }
    }
    if q.tx.try_send(StderrMsg::Text(text)).is_err() {
        q.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Queue a line that should not be dropped: wait for room (bounded by [`STDERR_WAIT`]).
fn stderr_ordered(text: String) {
    let q = stderr_queue();
    let deadline = std::time::Instant::now() + STDERR_WAIT;
    let mut msg = StderrMsg::Text(text);
    loop {
        match q.tx.try_send(msg) {
            Ok(()) => return,
            Err(std::sync::mpsc::TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => {
                q.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Wait (at most `timeout`) until everything queued for stderr was written; for the end
/// of a command, so its last lines are out before the process exits.
pub fn flush_stderr(timeout: std::time::Duration) {
    let (ack, done) = std::sync::mpsc::channel();
    let q = stderr_queue();
    let deadline = std::time::Instant::now() + timeout;
    let mut msg = StderrMsg::Flush(ack);
    loop {
        match q.tx.try_send(msg) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
}

/// Write to stderr through the writer thread, in order with the progress lines; a closed,
/// failing or unread stderr never panics, and never blocks longer than [`STDERR_WAIT`].
pub fn write_stderr(text: &str) {
    stderr_ordered(text.to_string());
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

/// A human progress line on stderr (`run record: …`, `progress: …`), in every mode. Never
/// waits: when nobody reads stderr, the line is dropped (and the drop counted).
pub fn progress(line: &str) {
    stderr_droppable(format!("{line}\n"));
}

/// A warning: `WARN: <w>` on stderr and an entry of the envelope's `warnings`.
pub fn warn(w: &str) {
    write_stderr(&format!("WARN: {w}\n"));
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
    // Streamed to stdout as it is serialised (a 10 000-VM apply's envelope is tens of MB);
    // serialising a `Value` only fails when stdout does (a closed pipe), and then what cannot
    // be printed is dropped, as every stdout write here.
    let mut out = std::io::BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
    if serde_json::to_writer_pretty(&mut out, doc).is_ok() {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}
