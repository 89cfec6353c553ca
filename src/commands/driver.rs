//! `hyops-pve driver`: the HyOps driver mode (contract §6.3). Reads one driver request (JSON,
//! from stdin or `--request FILE`), runs it on the same engine path as the CLI commands
//! ([`super::phases`], [`super::state_ops`]) and answers one result document on stdout:
//! `{status, run_id, command, driver, normalized_outputs, warnings, backend_binding, error?,
//! state_detach?}`. Progress and logs go to stderr (the HyOps plug-in streams them into
//! hyops' logs).
//!
//! In this mode hyops owns the module state: nothing here writes `latest.json`, rerun inputs
//! or hyops' own evidence files (`meta.json`, `inputs_resolved.json`, `result.json`, …). The
//! driver writes its evidence into the request's `evidence_dir`: `driver_meta.json`,
//! `backend_binding.json`, `driver_inputs.json`, `driver_result.json`, and the engine's files
//! (plan, journal, reports). Mutating commands take the same slot lock as the CLI.
//!
//! SIGINT and SIGTERM (hyops' Ctrl-C, the plug-in's timeout, a CI cancel) are watched from
//! the process' start: the run stops as the CLI's does (started steps end and are journalled,
//! phases that change nothing are abandoned) and the driver still answers one result, `status:
//! error` naming the signal.
//!
//! A malformed request never crashes the driver: it gets `status: error` with a message
//! naming the field. Exit code: 0 when the result is `ok`, 1 otherwise; the result document is
//! always printed (a missing or unparsable document means the process itself failed).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::cli::ModuleArgs;
use crate::commands::context::{Ctx, DriverFrame};
use crate::commands::output;
use crate::commands::phases::{
    apply_phase, destroy_execute, destroy_prepare, plan_phase, preflight_offline, preflight_phase,
    preflight_sdn_ipam, reachable_client, resolve, start_run, validate_report,
    write_inputs_evidence,
};
use crate::commands::state_ops::{detach_phase, import_phase, unlock_phase};
use crate::commands::stop::Stop;
use crate::commands::{CliError, EXIT_ERROR, EXIT_OK};
use crate::hyops::protocol::{parse_request, DriverCommand, Lifecycle, ParsedRequest};
use crate::hyops::{
    self, write_driver_result, write_json_atomic, DriverResult, RunPrefix, RuntimeRoot, DRIVER_REF,
    PACK_ID, PROFILE, PUBLISH_KEYS, REQUIRED_CREDENTIALS,
};
use crate::inputs::LifecycleCommand;
use crate::ssh::Dialer;

/// Default seconds a mutating driver command waits for another run holding the slot lock.
pub const DEFAULT_LOCK_WAIT_S: u64 = 30;
/// Env var overriding [`DEFAULT_LOCK_WAIT_S`].
pub const LOCK_WAIT_ENV: &str = "HYOPS_PVE_LOCK_WAIT_S";

/// The largest driver request read (bytes). hyops' requests are a few KiB (the resolved
/// inputs, cloud-init user data included); anything near this is not a request, and reading
/// it unbounded would let one runaway input take the runner's memory (a parsed request holds
/// about six times its size) and end in an OOM kill with no result.
pub const MAX_REQUEST_BYTES: u64 = crate::fsread::DEFAULT_LIMIT as u64;

/// Read at most [`MAX_REQUEST_BYTES`] of a request from `reader` (`what` names the source in
/// the error).
fn read_request(reader: impl Read, what: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    reader
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the driver request from {what}: {e}"))?;
    if buf.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "driver request field request: larger than {} MiB (from {what}); a hyops request is a few KiB, so this is not one (check the inputs for a runaway value)",
            MAX_REQUEST_BYTES >> 20
        ));
    }
    String::from_utf8(buf)
        .map_err(|e| format!("driver request field request: not valid JSON: not UTF-8 ({e})"))
}

/// `hyops-pve driver` from the process entry: its own async runtime, and a panic (a bug)
/// still answers one error result (exit 70), so hyops never reads a non-object.
pub fn main(request_file: Option<&Path>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            print_result(&DriverResult::error(
                "",
                "unknown",
                format!("cannot start the async runtime: {e}"),
            ));
            return EXIT_ERROR;
        }
    };
    let outcome = super::guard(|| Ok(runtime.block_on(driver(request_file))));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            print_result(&DriverResult::error("", "unknown", e.message));
            e.code
        }
    };
    // A result document that could not be written whole is not a success.
    let code = super::stdout_checked(code);
    // The queued progress and log lines out before the process exits (bounded: an unread
    // stderr must not keep it alive); the plug-in keeps them in hyops-pve.log.
    output::flush_stderr(std::time::Duration::from_secs(2));
    code
}

/// The one result document, on one stdout line.
fn print_result(result: &DriverResult) {
    let text = serde_json::to_string(&result.to_value()).unwrap_or_else(|_| {
        r#"{"status":"error","error":"hyops-pve driver could not serialise its result"}"#
            .to_string()
    });
    super::output::write_stdout(&format!("{text}\n"));
}

/// Run `hyops-pve driver`: read the request, print the result; returns the exit code.
pub async fn driver(request_file: Option<&Path>) -> i32 {
    // Watched before the request is read: a signal at any point still gets one result.
    let stop = Stop::watch();
    let text = match request_file {
        Some(p) => crate::fsread::read_text_at_most(p, crate::fsread::DEFAULT_LIMIT)
            .map_err(|e| format!("cannot read the driver request {}: {e}", p.display())),
        // hyops' plug-in writes the request here: bounded as a --request file is.
        None => read_request(std::io::stdin().lock(), "stdin"),
    };
    let result = match text {
        Ok(t) => run_request_text_env(&t, super::procenv::vars(), None, &stop).await,
        Err(e) => DriverResult::error("", "unknown", e),
    };
    print_result(&result);
    if result.error.is_none() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

/// Handle one request given as text with an explicit environment: parse, run, and write
/// `driver_result.json` into the evidence dir when the request named a usable one. Never
/// panics on bad input; every failure is an error result.
pub async fn run_request_text(text: &str, env: Vec<(String, String)>) -> DriverResult {
    run_request_text_with(text, env, None).await
}

/// [`run_request_text`] with SSH (node snippets, the readiness gate) going through `dialer`
/// instead of TCP: for embedders and tests running the driver against an in-process
/// simulator. Installs no signal handler (the embedder owns the process' signals).
pub async fn run_request_text_with(
    text: &str,
    env: Vec<(String, String)>,
    dialer: Option<Arc<dyn Dialer>>,
) -> DriverResult {
    run_request_text_stoppable(text, env, dialer, &Stop::manual()).await
}

/// [`run_request_text_with`] stopped by `stop` (the process' SIGINT/SIGTERM in `hyops-pve
/// driver`; an embedder's own request otherwise): the result is then `status: error`
/// naming the signal.
pub async fn run_request_text_stoppable(
    text: &str,
    env: Vec<(String, String)>,
    dialer: Option<Arc<dyn Dialer>>,
    stop: &Stop,
) -> DriverResult {
    run_request_text_env(text, Ok(env), dialer, stop).await
}

/// What can be known of a request that is refused before it runs, for its error result: the
/// `run_id` and `command` it names (empty and `unknown` when it names none).
fn request_head(value: &Value) -> (String, String) {
    let run_id = value
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let command = value
        .get("command")
        .and_then(Value::as_str)
        .map(|c| hyops::protocol::normalize_command(&c.trim().to_ascii_lowercase()))
        .unwrap_or_else(|| "unknown".into());
    (run_id, command)
}

/// [`run_request_text_stoppable`] with the process environment as read
/// ([`super::procenv::vars`]): a variable hyops-pve reads that is not valid UTF-8 refuses the
/// request before anything else (hyops' own copy of such a value, carried into the request as
/// a lone surrogate, would otherwise surface as a confusing JSON error), answering with the
/// run id and command the request names, and `driver_result.json` in its evidence dir.
async fn run_request_text_env(
    text: &str,
    env: Result<Vec<(String, String)>, super::procenv::NotUnicode>,
    dialer: Option<Arc<dyn Dialer>>,
    stop: &Stop,
) -> DriverResult {
    let parsed: Result<Value, _> = serde_json::from_str(text);
    let env = match env {
        Ok(env) => env,
        Err(e) => {
            let Ok(value) = parsed else {
                return DriverResult::error("", "unknown", e.to_string());
            };
            let (run_id, command) = request_head(&value);
            let result = DriverResult::error(&run_id, &command, e.to_string());
            if let Some(dir) = usable_evidence_dir(&value) {
                let _ = hyops::evidence::create_evidence_dir(&dir);
                let _ = write_driver_result(&dir, &result);
            }
            return result;
        }
    };
    let value: Value = match parsed {
        Ok(v) => v,
        Err(e) => {
            return DriverResult::error(
                "",
                "unknown",
                format!("driver request field request: not valid JSON: {e}"),
            )
        }
    };
    // What can be known of a bad request still goes into its error result.
    let (run_id, command) = request_head(&value);
    let req = match parse_request(&value) {
        Ok(r) => r,
        Err(e) => {
            let result = DriverResult::error(&run_id, &command, e.to_string());
            if let Some(dir) = usable_evidence_dir(&value) {
                let _ = hyops::evidence::create_evidence_dir(&dir);
                let _ = write_driver_result(&dir, &result);
            }
            return result;
        }
    };
    let name = req.command.name();
    let mut result = match run_request(&req, env, dialer, stop).await {
        Ok(r) => r,
        Err(e) => DriverResult::error(&req.run_id, name, e.message),
    };
    // The phases write driver_result.json on their paths; this makes it final on every path.
    // hyops reads the result from stdout, but a run whose record is missing fails, naming it
    // (unless its message already does).
    let written = hyops::evidence::create_evidence_dir(&req.evidence_dir)
        .and_then(|()| write_driver_result(&req.evidence_dir, &result));
    if let Err(e) = written {
        let named = result
            .error
            .as_deref()
            .is_some_and(|m| m.contains("driver_result.json"));
        if !named {
            let note = CliError::hyops(e).message;
            result.error = Some(match result.error.take() {
                Some(m) => format!("{m}; and its result could not be recorded: {note}"),
                None => format!("{name} succeeded but its result could not be recorded: {note}"),
            });
            result.status = hyops::ResultStatus::Error;
        }
    }
    result
}

fn usable_evidence_dir(value: &Value) -> Option<PathBuf> {
    let p = PathBuf::from(value.get("evidence_dir")?.as_str()?.trim());
    p.is_absolute().then_some(p)
}

fn lock_wait(env: &[(String, String)]) -> Result<u64, CliError> {
    let value = env
        .iter()
        .rev()
        .find(|(k, _)| k == LOCK_WAIT_ENV)
        .map(|(_, v)| v.trim());
    match value {
        None | Some("") => Ok(DEFAULT_LOCK_WAIT_S),
        Some(v) => v.parse().map_err(|_| {
            CliError::msg(format!(
                "{LOCK_WAIT_ENV}={v:?} is not a whole number of seconds"
            ))
        }),
    }
}

/// The message of a run stopped by `sig` before it changed anything.
fn stopped_before_change(command: &str, sig: &str) -> CliError {
    CliError::cancelled(format!(
        "{command} cancelled by the operator ({sig}) before any change"
    ))
}

async fn run_request(
    req: &ParsedRequest,
    env: Vec<(String, String)>,
    dialer: Option<Arc<dyn Dialer>>,
    stop: &Stop,
) -> Result<DriverResult, CliError> {
    let name = req.command.name();
    let args = ModuleArgs {
        module: req.module_ref.clone(),
        root: Some(req.runtime_root.clone()),
        state_instance: req.state_instance.as_ref().map(|i| i.as_str().to_string()),
        lock_wait_s: lock_wait(&env)?,
        ..ModuleArgs::default()
    };
    let frame = DriverFrame {
        run_id: req.run_id.clone(),
        evidence_dir: req.evidence_dir.clone(),
        inputs: req.inputs.clone(),
    };
    let mut ctx = Ctx::for_driver(
        args,
        env,
        RuntimeRoot::at(&req.runtime_root),
        req.runtime_env.clone(),
        req.state_instance.clone(),
        frame,
    )?;
    ctx.ssh_dialer = dialer;
    hyops::evidence::create_evidence_dir(&req.evidence_dir).map_err(CliError::hyops)?;
    write_driver_meta(&ctx, req)?;
    if let Some(sig) = stop.requested_by() {
        return Err(stopped_before_change(name, sig));
    }
    match &req.command {
        // hyops prints a failed preflight as `preflight failed: <error>`: no second prefix.
        DriverCommand::Preflight(lifecycle) => {
            let outcome = stop
                .race(preflight(&ctx, *lifecycle))
                .await
                .map_err(|sig| stopped_before_change(name, sig))?;
            outcome.map_err(|e| CliError {
                message: e
                    .message
                    .strip_prefix("preflight failed: ")
                    .map(str::to_string)
                    .unwrap_or(e.message),
                code: e.code,
            })
        }
        DriverCommand::Apply => {
            let run = start_run(&ctx, RunPrefix::Apply, true)?;
            output::progress("progress: phase=preflight");
            // hyops ran the driver preflight already (or the operator bypassed it): failed
            // API-free checks are warnings here; the engine's own needs still fail the run.
            let pf = stop
                .race(preflight_phase(
                    &ctx,
                    &run,
                    LifecycleCommand::Apply,
                    false,
                    true,
                ))
                .await
                .map_err(|sig| {
                    CliError::cancelled(format!(
                        "apply cancelled by the operator ({sig}) during preflight, before any change"
                    ))
                })??;
            Ok(apply_phase(&ctx, &run, &pf, None, stop).await?.result)
        }
        DriverCommand::Plan => {
            let run = start_run(&ctx, RunPrefix::Plan, false)?;
            // A plan changes nothing: a stop request abandons it.
            let plan = stop
                .race(async {
                    let pf =
                        preflight_phase(&ctx, &run, LifecycleCommand::Plan, false, false).await?;
                    plan_phase(&ctx, &run, &pf).await
                })
                .await
                .map_err(|sig| stopped_before_change(name, sig))??;
            let mut normalized = Map::new();
            normalized.insert("outputs".into(), json!({}));
            normalized.insert("command".into(), json!("plan"));
            normalized.insert("plan_summary".into(), json!(plan.summary));
            normalized.insert("has_changes".into(), json!(plan.summary.has_changes()));
            normalized.insert(
                "plan_file".into(),
                json!(run.evidence.join("plan.json").display().to_string()),
            );
            let mut result = DriverResult::ok(&run.run_id, "plan", normalized);
            result.warnings = plan.warnings.clone();
            Ok(result)
        }
        DriverCommand::Validate => {
            let run = start_run(&ctx, RunPrefix::Validate, false)?;
            let outcome = validate_report(&ctx).await;
            let report = outcome.result?;
            let model = &report["model"];
            let mut normalized = Map::new();
            normalized.insert("outputs".into(), json!({}));
            normalized.insert("command".into(), json!("validate"));
            normalized.insert(
                "validate".into(),
                json!({
                    "template_vm_id": report["template_vm_id"],
                    "vm_keys": model["vms"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
                }),
            );
            write_json_atomic(&run.evidence.join("driver_validate.json"), &report)
                .map_err(CliError::hyops)?;
            let mut result = DriverResult::ok(&run.run_id, "validate", normalized);
            result.warnings = outcome.warnings;
            Ok(result)
        }
        DriverCommand::Destroy => {
            // hyops records no `running` state for destroy (contract §3.4): nothing to write
            // between the preparation and the deletes.
            let run = start_run(&ctx, RunPrefix::Destroy, true)?;
            let prep = destroy_prepare(&ctx, &run, "destroy")?;
            Ok(destroy_execute(&ctx, &run, &prep, stop).await.result)
        }
        DriverCommand::Import(target) => {
            let run = start_run(&ctx, RunPrefix::Import, true)?;
            import_phase(&ctx, &run, target, stop).await
        }
        DriverCommand::StateUnlock { lock_id } => {
            let run = start_run(&ctx, RunPrefix::Preflight, false)?;
            unlock_phase(&ctx, &run, lock_id)
        }
        DriverCommand::StateDetach(target) => {
            let run = start_run(&ctx, RunPrefix::Destroy, true)?;
            detach_phase(&ctx, &run, target, stop).await
        }
    }
}

/// The driver preflight for `lifecycle`: for apply/plan/import the full preflight phase
/// (inputs and contract steps, API-free checks, VM-set guards, template, Proxmox
/// reachability); for validate the same without the Proxmox call (validate makes none); for
/// destroy only what destroy needs (lenient inputs, credentials, Proxmox reachability: a
/// vanished template must not block a destroy).
async fn preflight(ctx: &Ctx, lifecycle: Lifecycle) -> Result<DriverResult, CliError> {
    let run = start_run(ctx, RunPrefix::Preflight, false)?;
    let mut info = Map::new();
    info.insert("module_ref".into(), json!(ctx.module_ref.as_str()));
    info.insert("profile_ref".into(), json!(PROFILE));
    info.insert("pack_id".into(), json!(PACK_ID));
    info.insert("required_credentials".into(), json!(REQUIRED_CREDENTIALS));
    info.insert("lifecycle_command".into(), json!(lifecycle.as_str()));
    let warnings = if lifecycle == Lifecycle::Destroy {
        let creds = ctx.credentials()?;
        let resolved = resolve(ctx, LifecycleCommand::Destroy, Some(&creds))?;
        write_inputs_evidence(ctx, &run, "preflight", &resolved)?;
        reachable_client(ctx, &creds).await?;
        resolved.warnings
    } else {
        let command = match lifecycle {
            Lifecycle::Plan => LifecycleCommand::Plan,
            Lifecycle::Validate => LifecycleCommand::Validate,
            Lifecycle::Import => LifecycleCommand::Import,
            _ => LifecycleCommand::Apply,
        };
        // `validate` makes no Proxmox API call (nor do upstream's driver preflight and
        // terragrunt validate): its preflight must not need the API either. The SDN and IPAM
        // checks run for every lifecycle, as upstream's contract runs them.
        let mut pf = preflight_offline(ctx, &run, command, false, false)?;
        if lifecycle != Lifecycle::Validate {
            reachable_client(ctx, &pf.creds).await?;
        }
        preflight_sdn_ipam(ctx, &mut pf).await?;
        info.insert("template_vm_id".into(), json!(pf.template_vmid));
        info.insert(
            "checks".into(),
            json!(pf
                .checks
                .checks
                .iter()
                .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail, "mandatory": c.mandatory}))
                .collect::<Vec<_>>()),
        );
        pf.warnings
    };
    let mut normalized = Map::new();
    normalized.insert("preflight".into(), Value::Object(info));
    let mut result = DriverResult::ok(&run.run_id, "preflight", normalized);
    result.warnings = warnings;
    write_driver_result(&run.evidence, &result).map_err(CliError::hyops)?;
    Ok(result)
}

/// `driver_meta.json`: what the driver ran and where (never a secret: no env values, no
/// credentials, only which credential providers are available).
fn write_driver_meta(ctx: &Ctx, req: &ParsedRequest) -> Result<(), CliError> {
    let creds_available = ctx.root.proxmox_tfvars().exists()
        || ctx
            .env_vars
            .get("PROXMOX_URL")
            .is_some_and(|u| !u.trim().is_empty());
    let lifecycle = match &req.command {
        DriverCommand::Preflight(l) => Some(l.as_str()),
        _ => None,
    };
    let meta = json!({
        "command": req.command.name(),
        "lifecycle_command": lifecycle,
        "driver": {"ref": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID},
        "engine": {"name": "hyops-pve", "version": env!("CARGO_PKG_VERSION")},
        "module_ref": ctx.module_ref.as_str(),
        "state_instance": ctx.instance.as_ref().map_or("", |i| i.as_str()),
        "run_id": req.run_id,
        "owner_env": ctx.owner_env(),
        "execution": req.execution,
        "requirements": {
            "credentials": REQUIRED_CREDENTIALS,
            "available_credentials": if creds_available { vec!["proxmox"] } else { Vec::new() },
        },
        "outputs": {"publish": PUBLISH_KEYS},
        "paths": {
            "runtime_root": ctx.root.path().display().to_string(),
            "evidence_dir": req.evidence_dir.display().to_string(),
            "state_dir": ctx.root.state_dir().display().to_string(),
            "lock_file": ctx.root.lock_file(&ctx.module_ref, ctx.instance.as_ref()).display().to_string(),
            "detached_file": ctx.root.detached_file(&ctx.module_ref, ctx.instance.as_ref()).display().to_string(),
        },
        "lock_wait_s": ctx.args.lock_wait_s,
    });
    write_json_atomic(&req.evidence_dir.join("driver_meta.json"), &meta)
        .map_err(CliError::hyops)?;
    // As the Terragrunt driver records it (contract §3.2); the result carries the same.
    write_json_atomic(
        &req.evidence_dir.join("backend_binding.json"),
        &json!({"mode": "local"}),
    )
    .map_err(CliError::hyops)
}
