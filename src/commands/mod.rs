//! The CLI layer's commands: they resolve the runtime root, call the engine and own every
//! HyOps state write (the engine returns driver-shaped results). Output lines and exit codes
//! follow hyops: `run record: <dir>`, `progress: phase=…`, `ERR: …`; 0 ok, 1 error, 130
//! cancelled, and `plan --detailed-exitcode` 2 for changes.

pub mod context;
pub mod driver;
pub mod evidence_loss;
pub mod heap;
pub mod hints;
pub mod ipam;
pub mod module;
pub mod netbox_dataset;
pub mod netbox_sync;
pub mod output;
pub mod phases;
pub mod procenv;
pub mod progress;
pub mod rebuild;
pub mod simroot;
pub mod simserve;
pub mod state_ops;
pub mod stop;

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crate::cli::{Cli, Command, SimAction, StateAction};
use crate::hyops::HyopsError;

/// Exit codes (README "Exit codes"). No error of any kind exits with [`EXIT_CHANGES`].
pub const EXIT_OK: i32 = 0;
/// The command ran and failed (validation, credentials, preflight, plan, apply, destroy).
pub const EXIT_ERROR: i32 = 1;
/// `plan --detailed-exitcode` only: the plan has changes.
pub const EXIT_CHANGES: i32 = 2;
/// The command line could not be parsed (unknown flag, missing or bad value, conflicting
/// flags): `EX_USAGE` of sysexits(3), never clap's default 2.
pub const EXIT_USAGE: i32 = 64;
/// A bug: hyops-pve panicked (`EX_SOFTWARE`). The state of a mutating run stays `running`
/// and the next apply adopts what it left.
pub const EXIT_INTERNAL: i32 = 70;
/// Cancelled by the operator (Ctrl-C, or `rebuild` not confirmed).
pub const EXIT_CANCELLED: i32 = 130;

/// A command failure: one human message (already carrying the context an operator needs).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_ERROR,
        }
    }
    /// The error of the runtime-root layer; a full filesystem also says what to do.
    pub fn hyops(e: HyopsError) -> Self {
        if e.storage_full() {
            return Self::msg(format!(
                "{e}; local runtime storage is full: free disk space, then run the command again"
            ));
        }
        Self::msg(e.to_string())
    }
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_CANCELLED,
        }
    }
}

impl From<procenv::NotUnicode> for CliError {
    fn from(e: procenv::NotUnicode) -> Self {
        Self::msg(e.to_string())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The log subscriber: events of `hyops_pve` at `warn` (`debug` with `--verbose` or hyops'
/// `HYOPS_VERBOSE`), or what `HYOPS_PVE_LOG` says, as [`LogFormat`] lines on stderr through
/// [`output::LogWriter`]. Colours only where [`output::colour_stderr`] allows them: a file, a
/// pipe and the plug-in's `hyops-pve.log` never get escape codes.
fn init_tracing(verbose: bool) {
    let filter = if verbose {
        "hyops_pve=debug"
    } else {
        "hyops_pve=warn"
    };
    // A HYOPS_PVE_LOG that is not UTF-8 is refused by the command's own read of the
    // environment; a directive that does not parse leaves the default.
    let env_filter = procenv::var("HYOPS_PVE_LOG")
        .ok()
        .flatten()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(output::colour_stderr())
        // A failed log write (a closed stderr: `hyops-pve apply --verbose … 2>&1 | head`) is
        // dropped like every other output line. By default the subscriber reports it with
        // eprintln!, which panics on that same closed stderr and aborted the run half-way.
        // (Set before `event_format`, which keeps it.)
        .log_internal_errors(false)
        .event_format(LogFormat)
        .with_writer(output::LogWriter)
        .try_init();
}

/// One log line: `WARN: <message>` (the README's stderr format for warnings, the same as
/// [`output::warn`]'s lines) and `ERROR: <message>`; below `WARN` (`--verbose`, `HYOPS_PVE_LOG`)
/// `DEBUG: <RFC 3339 time> <message> <fields>`, the time for following a run's latency. The
/// level is coloured only when the writer allows ANSI.
struct LogFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        use tracing_subscriber::fmt::time::FormatTime;
        let level = *event.metadata().level();
        let (label, colour) = match level {
            Level::ERROR => ("ERROR", "31"),
            Level::WARN => ("WARN", "33"),
            Level::INFO => ("INFO", "32"),
            Level::DEBUG => ("DEBUG", "34"),
            Level::TRACE => ("TRACE", "35"),
        };
        if writer.has_ansi_escapes() {
            write!(writer, "\x1b[{colour}m{label}:\x1b[0m ")?;
        } else {
            write!(writer, "{label}: ")?;
        }
        // tracing orders levels by verbosity: ERROR < WARN < INFO < DEBUG < TRACE
        if level > Level::WARN {
            tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
            writer.write_char(' ')?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Parse `args` (the program name first) and run; returns the process exit code. A command
/// line clap refuses exits [`EXIT_USAGE`] (with the `--json` envelope when `--json` is among
/// the arguments); `--help` and `--version` exit 0.
pub fn run_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match <Cli as clap::Parser>::try_parse_from(&args) {
        Ok(cli) => run(cli),
        Err(e) => usage_error(&e, &args),
    }
}

fn usage_error(e: &clap::Error, args: &[OsString]) -> i32 {
    use clap::error::ErrorKind;
    // clap writes help/version to stdout and errors to stderr; a failed write is ignored.
    let rendered = e.render().to_string();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        output::write_stdout(&rendered);
        return stdout_checked(EXIT_OK);
    }
    output::write_stderr(&rendered);
    if !rendered.ends_with('\n') {
        output::write_stderr("\n");
    }
    output::flush_stderr(std::time::Duration::from_secs(2));
    if args.iter().any(|a| a == "--json") {
        let message: Vec<&str> = rendered
            .lines()
            .take_while(|l| !l.starts_with("Usage:"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let message = message.join(" ");
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        let sink = output::Sink::new(true);
        let mut doc = sink.envelope("", EXIT_USAGE, Some(message));
        doc["command"] = command_from_args(args).map_or(serde_json::Value::Null, Into::into);
        output::print_envelope(&doc, &Default::default());
    }
    EXIT_USAGE
}

/// The command named on a command line clap could not parse, if any.
fn command_from_args(args: &[OsString]) -> Option<&'static str> {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .collect();
    Some(match (words.first().copied()?, words.get(1).copied()) {
        ("preflight", _) => "preflight",
        ("validate", _) => "validate",
        ("plan", _) => "plan",
        ("apply" | "deploy", _) => "apply",
        ("destroy", _) => "destroy",
        ("rebuild", _) => "rebuild",
        ("state", Some("show")) => "state show",
        ("state", _) => "state",
        ("version", _) => "version",
        ("completions", _) => "completions",
        ("sim", Some("serve")) => "sim serve",
        ("sim", _) => "sim",
        ("driver", _) => "driver",
        ("hyops-setup", _) => "hyops-setup",
        _ => return None,
    })
}

/// The envelope's `command` for a parsed command line.
pub fn command_name(cli: &Cli) -> &'static str {
    match &cli.command {
        Command::Preflight { .. } => "preflight",
        Command::Validate { .. } => "validate",
        Command::Plan { .. } => "plan",
        Command::Apply { .. } => "apply",
        Command::Destroy { .. } => "destroy",
        Command::Rebuild { .. } => "rebuild",
        Command::State { .. } => "state show",
        Command::Version { .. } => "version",
        Command::Completions { .. } => "completions",
        Command::Sim { .. } => "sim serve",
        Command::Driver { .. } => "driver",
        Command::HyopsSetup { .. } => "hyops-setup",
    }
}

fn wants_json(cli: &Cli) -> bool {
    match &cli.command {
        Command::Preflight { module, .. }
        | Command::Validate { module }
        | Command::Plan { module, .. }
        | Command::Apply { module, .. }
        | Command::Destroy { module, .. }
        | Command::Rebuild { module, .. } => module.json,
        Command::State {
            action: StateAction::Show { args },
        } => args.json,
        Command::Version { json } => *json,
        Command::Sim {
            action: SimAction::Serve { json, .. },
        } => *json,
        Command::Completions { .. } | Command::Driver { .. } | Command::HyopsSetup { .. } => false,
    }
}

/// Run a parsed command line; returns the exit code. Prints the one `ERR:` line on stderr and,
/// with `--json`, the envelope on stdout. A panic is caught here and exits [`EXIT_INTERNAL`].
pub fn run(cli: Cli) -> i32 {
    let verbose = match &cli.command {
        Command::Preflight { module, .. }
        | Command::Validate { module }
        | Command::Plan { module, .. }
        | Command::Apply { module, .. }
        | Command::Destroy { module, .. }
        | Command::Rebuild { module, .. } => module.verbose,
        // hyops -v sets HYOPS_VERBOSE=1 for its drivers.
        // A HYOPS_VERBOSE that is not UTF-8 is refused by the driver's own read of the
        // environment; here it only means "not verbose".
        Command::Driver { .. } => procenv::var("HYOPS_VERBOSE")
            .ok()
            .flatten()
            .is_some_and(|v| !v.trim().is_empty() && v.trim() != "0"),
        _ => false,
    };
    init_tracing(verbose);
    // Driver mode prints exactly one result document on stdout, whatever happens: it runs
    // outside a CLI command's output (no envelope, no human lines; progress still on stderr).
    if let Command::Driver { request } = &cli.command {
        return driver::main(request.as_deref());
    }
    let command = command_name(&cli);
    let sink = output::Sink::new(wants_json(&cli));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return finish(
                &sink,
                command,
                Err(CliError::msg(format!(
                    "cannot start the async runtime: {e}"
                ))),
            )
        }
    };
    let result = guard(|| runtime.block_on(output::scoped(sink.clone(), dispatch(cli))));
    // Tasks still running (e.g. a blocking password command) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    finish(&sink, command, result)
}

/// Run `f`; a panic becomes an [`EXIT_INTERNAL`] error naming it as a bug.
pub fn guard(f: impl FnOnce() -> Result<i32, CliError>) -> Result<i32, CliError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(CliError {
                message: format!(
                    "internal error (a bug in hyops-pve, please report it): {what}; a mutating run's state stays 'running' and the next apply adopts what it left"
                ),
                code: EXIT_INTERNAL,
            })
        }
    }
}

/// The exit code for a command result; an error never maps to 0 or [`EXIT_CHANGES`].
pub fn exit_code(result: &Result<i32, CliError>) -> i32 {
    match result {
        Ok(code) => *code,
        Err(e) if e.code == EXIT_OK || e.code == EXIT_CHANGES => EXIT_ERROR,
        Err(e) => e.code,
    }
}

fn finish(sink: &output::Sink, command: &str, result: Result<i32, CliError>) -> i32 {
    let code = exit_code(&result);
    let error = result.err().map(|e| e.message);
    if let Some(m) = &error {
        output::write_stderr(&format!("ERR: {m}\n"));
    }
    if sink.json_pending() {
        let doc = sink.envelope(command, code, error.as_deref());
        output::print_envelope(&doc, &sink.take_raw());
    }
    let code = stdout_checked(code);
    // the command's last stderr lines out before the process exits (bounded: an unread
    // stderr must not keep it alive)
    output::flush_stderr(std::time::Duration::from_secs(2));
    code
}

/// `code`, unless stdout could not be written (a full disk under `> file`): then what the
/// command printed is incomplete, which is said on stderr, and the exit is [`EXIT_ERROR`] (an
/// error already exiting non-zero keeps its code).
pub(crate) fn stdout_checked(code: i32) -> i32 {
    match output::stdout_failure() {
        Some(e) => {
            output::write_stderr(&format!(
                "ERR: cannot write stdout: {e}; what was printed is incomplete (free space where stdout goes, then run the command again)\n"
            ));
            if code == EXIT_OK || code == EXIT_CHANGES {
                EXIT_ERROR
            } else {
                code
            }
        }
        None => code,
    }
}

async fn dispatch(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Preflight { module, strict } => module::preflight(&module, strict).await,
        Command::Validate { module } => module::validate(&module).await,
        Command::Plan {
            module,
            detailed_exitcode,
            out,
        } => module::plan(&module, detailed_exitcode, out.as_deref()).await,
        Command::Apply {
            module,
            bypass,
            plan,
        } => module::apply(&module, &bypass, plan.as_deref()).await,
        Command::Destroy { module, bypass } => module::destroy(&module, &bypass).await,
        Command::Rebuild {
            module,
            bypass,
            yes,
            confirm_module,
        } => rebuild::rebuild(&module, &bypass, yes, confirm_module.as_deref()).await,
        Command::Driver { request } => Ok(driver::driver(request.as_deref()).await),
        Command::HyopsSetup {
            module_root,
            link_modules,
            force,
        } => {
            let tree = crate::hyops::modspec::write_module_tree(
                &module_root,
                link_modules.as_deref(),
                force,
            )
            .map_err(CliError::hyops)?;
            output::result_line(&format!(
                "{} {}",
                if tree.spec_written {
                    "wrote"
                } else {
                    "up to date:"
                },
                tree.spec.display()
            ));
            if !tree.linked.is_empty() {
                output::result_line(&format!(
                    "linked {} module(s) from the base tree",
                    tree.linked.len()
                ));
            }
            output::progress(&format!(
                "next: install the plug-in (pip install integrations/hyops) into hyops' environment, then\n  hyops apply --env <env> --module {} --module-root {} --inputs <overlay.yml>",
                crate::hyops::MODULE_REF,
                module_root.display()
            ));
            Ok(EXIT_OK)
        }
        Command::State {
            action: StateAction::Show { args },
        } => module::state_show(&args).await,
        Command::Version { .. } => {
            let version = env!("CARGO_PKG_VERSION");
            output::field("version", serde_json::json!(version));
            output::field("module", serde_json::json!(crate::hyops::MODULE_REF));
            output::field("driver", serde_json::json!(crate::hyops::DRIVER_REF));
            output::field("profile", serde_json::json!(crate::hyops::PROFILE));
            output::field("pack", serde_json::json!(crate::hyops::PACK_ID));
            output::result_line(&format!("hyops-pve {version}"));
            output::result_line(&format!("module: {}", crate::hyops::MODULE_REF));
            output::result_line(&format!(
                "driver: {} profile: {} pack: {}",
                crate::hyops::DRIVER_REF,
                crate::hyops::PROFILE,
                crate::hyops::PACK_ID
            ));
            Ok(EXIT_OK)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            // Generated into memory first: clap_complete panics when its writer fails (a
            // closed pipe), our writer does not.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "hyops-pve", &mut script);
            output::write_stdout(&String::from_utf8_lossy(&script));
            Ok(EXIT_OK)
        }
        Command::Sim {
            action:
                SimAction::Serve {
                    listen,
                    cluster,
                    time_scale,
                    seed,
                    state,
                    faults,
                    ca_pem,
                    hyops_root,
                    json: _,
                },
        } => {
            simserve::serve(
                &listen, cluster, time_scale, seed, state, faults, ca_pem, hyops_root,
            )
            .await
        }
    }
}
