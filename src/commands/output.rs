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
    /// Fields given already serialised (pretty JSON), by key; `fields` holds a placeholder
    /// in their place (see [`field_serialized`]).
    raw: std::collections::HashMap<String, String>,
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

    /// The fields given serialised ([`field_serialized`]), taken for printing.
    pub fn take_raw(&self) -> std::collections::HashMap<String, String> {
        std::mem::take(&mut self.parts().raw)
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
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if let Err(e) = written {
        note_stdout_error(&e);
    }
}

static STDOUT_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The first error writing stdout other than a closed pipe (`No space left on device (os
/// error 28)`), if any: what was printed is incomplete, so the command must not exit 0.
pub fn stdout_failure() -> Option<&'static str> {
    STDOUT_FAILURE.get().map(String::as_str)
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
            // No thread: the queue fills and lines are dropped, which never blocks. Said
            // directly: a log event would come back here through [`LogWriter`] while this
            // queue is being initialised.
            let _ = std::io::stderr().write_all(
                b"WARN: cannot start the stderr writer thread; progress lines are dropped\n",
            );
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

/// Whether stdout may carry ANSI colours ([`colour_allowed`]).
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    colour_allowed(std::io::stdout().is_terminal())
}

/// Whether stderr may carry ANSI colours ([`colour_allowed`]).
pub fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    colour_allowed(std::io::stderr().is_terminal())
}

/// Colours only on a terminal, and never when `NO_COLOR` is set (to anything: upstream hyops
/// tests its presence, and `hyops --no-color` sets it for its drivers) or `TERM` is `dumb`
/// (upstream's `colour_enabled` in `hyops/runtime/terminal.py`). A file, a pipe, CI logs and
/// the plug-in's `hyops-pve.log` never get escape codes.
pub fn colour_allowed(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none()
        // upstream hyops/runtime/terminal.py: `TERM` stripped, then compared to `dumb`
        && std::env::var_os("TERM").is_none_or(|t| {
            !t.to_string_lossy().trim().eq_ignore_ascii_case("dumb")
        })
}

/// The log subscriber's writer ([`crate::commands`] sets it up): each event is one line
/// queued for the stderr thread like every other stderr line, so log lines keep their order
/// with `progress:` lines and never block the work. `WARN`/`ERROR` lines wait for room
/// (bounded) as `WARN:` lines do; debug lines are dropped when nobody reads stderr.
pub struct LogWriter;

/// One log line being formatted; queued when dropped.
pub struct LogLine {
    buf: Vec<u8>,
    keep: bool,
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.keep {
            stderr_ordered(text);
        } else {
            stderr_droppable(text);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine {
            buf: Vec::new(),
            keep: true,
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogLine {
        LogLine {
            buf: Vec::new(),
            // tracing orders levels by verbosity: ERROR < WARN < INFO < DEBUG < TRACE
            keep: *meta.level() <= tracing::Level::WARN,
        }
    }
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

/// [`field`] for a large value (a 10 000-VM plan): serialised now, in `--json` mode only, to
/// pretty JSON text, so the envelope never holds it as a JSON value tree (several times its
/// text's size). A value that cannot be serialised becomes `null`.
pub fn field_serialized<T: serde::Serialize>(key: &str, value: &T) {
    with_sink(|s| {
        if !s.json {
            return;
        }
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
        let mut p = s.parts();
        p.fields.insert(key.to_string(), Value::Null);
        p.raw.insert(key.to_string(), text);
    });
}

/// Print the envelope of the running command now (status ok), once; the command's end then
/// prints nothing more on stdout. For `sim serve --json`, which reports when it listens.
pub fn print_envelope_now(command: &str) {
    with_sink(|s| {
        if s.json && !s.printed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let doc = s.envelope(command, EXIT_OK, None);
            print_envelope(&doc, &s.take_raw());
        }
    });
}

/// Render the envelope as the single stdout document; a member of `raw` replaces the
/// placeholder of its key (byte for byte what pretty-printing the value in place gives).
pub fn print_envelope(doc: &Value, raw: &std::collections::HashMap<String, String>) {
    // Streamed to stdout as it is serialised (a 10 000-VM apply's envelope is tens of MB);
    // serialising a `Value` only fails when stdout does: a closed pipe drops the rest, any
    // other failure is remembered so the command does not exit 0 (`stdout_failure`).
    let mut out = std::io::BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
    let written = write_envelope(&mut out, doc, raw)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        note_stdout_error(&e);
    }
}

/// Remember a failed stdout write for [`stdout_failure`], unless the reader went away.
fn note_stdout_error(e: &std::io::Error) {
    // A reader that went away (`| head`) is not a failure; a full disk or a failing device
    // under a redirected stdout is: the output is incomplete.
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = STDOUT_FAILURE.set(e.to_string());
    }
}

/// Pretty JSON of `doc` with the members named in `raw` written from their text.
fn write_envelope(
    w: &mut dyn Write,
    doc: &Value,
    raw: &std::collections::HashMap<String, String>,
) -> std::io::Result<()> {
    let map = match doc {
        Value::Object(m) if !raw.is_empty() && !m.is_empty() => m,
        _ => return serde_json::to_writer_pretty(w, doc).map_err(std::io::Error::from),
    };
    w.write_all(b"{")?;
    for (i, (k, v)) in map.iter().enumerate() {
        w.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut *w, k).map_err(std::io::Error::from)?;
        w.write_all(b": ")?;
        let owned;
        let text = match raw.get(k) {
            Some(t) => t.as_str(),
            None => {
                owned = serde_json::to_string_pretty(v).map_err(std::io::Error::from)?;
                owned.as_str()
            }
        };
        // a member at depth 1: every line after its first indented two more spaces
        for (j, line) in text.split('\n').enumerate() {
            if j > 0 {
                w.write_all(b"\n  ")?;
            }
            w.write_all(line.as_bytes())?;
        }
    }
    w.write_all(b"\n}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use std::collections::HashMap;

    fn written(doc: &serde_json::Value, raw: &HashMap<String, String>) -> String {
        let mut out = Vec::new();
        super::write_envelope(&mut out, doc, raw).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_field_given_serialised_prints_as_the_value_would_in_place() {
        let plan = json!({"vms": [{"key": "a\nb", "changes": {}}, []], "summary": {"n": 1}});
        let whole = json!({"schema": "s", "plan": plan, "status": "ok", "empty": {}});
        let mut doc = whole.clone();
        doc["plan"] = serde_json::Value::Null;
        let raw = HashMap::from([(
            "plan".to_string(),
            serde_json::to_string_pretty(&plan).unwrap(),
        )]);
        assert_eq!(
            written(&doc, &raw),
            serde_json::to_string_pretty(&whole).unwrap()
        );
        assert_eq!(
            written(&whole, &HashMap::new()),
            serde_json::to_string_pretty(&whole).unwrap()
        );
    }
}
