//! `preflight`, `validate`, `plan`, `apply`, `destroy` and `state show` for
//! `platform/onprem/platform-vm`: the CLI front-ends of the engine path in
//! [`super::phases`]. These functions own the HyOps state transitions (`running` → `ok` |
//! `error`, `destroyed`), the CLI-side evidence (`meta.json`, `preflight_decision.json`,
//! `result.json`, `module_state.json`) and what is printed; the phases and the engine
//! ([`crate::apply::engine`]) only return results.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::cli::{ModuleArgs, PreflightBypass, StateShowArgs};
use crate::commands::context::{require_inputs, Ctx};
use crate::commands::evidence_loss;
use crate::commands::output;
use crate::commands::phases::{
    apply_phase, destroy_execute, destroy_prepare, make_plan_observed, plan_phase, preflight_phase,
    print_plan, start_run, write_plan_json, Applied, Preflighted, Run,
};
/// The checks of `validate` (shared with the driver mode; tests and benches call it here).
pub use crate::commands::phases::{validate_report, ValidateOutcome};
use crate::commands::stop::Stop;
use crate::commands::{CliError, EXIT_CANCELLED, EXIT_CHANGES, EXIT_OK};
use crate::hyops::{
    self, build_input_contract, publish_outputs_owned, write_cli_result, write_driver_result,
    write_json_atomic, write_module_state_record, write_module_state_record_of, write_rerun_inputs,
    DriverResult, ModuleState, OkRecord, PreflightDecision, RunPrefix, RunningRecord,
};
use crate::inputs::{sanitize_rerun_inputs, LifecycleCommand};

/// The longest `--preflight-bypass-reason`, in characters (upstream
/// `hyops/runtime/preflight_decision.py` `MAX_BYPASS_REASON_LENGTH`).
const MAX_BYPASS_REASON_CHARS: usize = 500;

/// Check the preflight bypass flags of a mutating command (`apply`, `destroy`, `rebuild`) in
/// upstream's order and words (`validate_preflight_bypass`, preflight_decision.py): a reason
/// without `--skip-preflight`, a reason that is not one printable line, one over 500
/// characters, and `--skip-preflight` without a reason are refused. Returns the trimmed reason
/// when preflight is bypassed, `None` when it runs. Control characters are refused as upstream
/// does (below 32 and 127), and also the C1 controls (128–159), which a terminal would act on
/// when the decision record is shown.
pub(crate) fn check_bypass(bypass: &PreflightBypass) -> Result<Option<String>, CliError> {
    let reason = bypass
        .preflight_bypass_reason
        .as_deref()
        .map(str::trim)
        .unwrap_or("");
    if !reason.is_empty() && !bypass.skip_preflight {
        return Err(CliError::msg(
            "--preflight-bypass-reason requires --skip-preflight",
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(CliError::msg(
            "--preflight-bypass-reason must be a single printable line",
        ));
    }
    if reason.chars().count() > MAX_BYPASS_REASON_CHARS {
        return Err(CliError::msg(format!(
            "--preflight-bypass-reason must not exceed {MAX_BYPASS_REASON_CHARS} characters"
        )));
    }
    if !bypass.skip_preflight {
        return Ok(None);
    }
    if reason.is_empty() {
        return Err(CliError::msg(
            "--skip-preflight for a mutating command requires --preflight-bypass-reason",
        ));
    }
    Ok(Some(reason.to_string()))
}

/// `hyops-pve preflight`.
pub async fn preflight(args: &ModuleArgs, strict: bool) -> Result<i32, CliError> {
    require_inputs(args, &super::procenv::map()?, "preflight")?;
    let mut ctx = Ctx::new(args).await?;
    let result = match ctx.require_existing_root() {
        Ok(()) => preflight_inner(&ctx, strict).await,
        Err(e) => Err(e),
    };
    ctx.finish().await?;
    result
}

pub async fn preflight_inner(ctx: &Ctx, strict: bool) -> Result<i32, CliError> {
    let run = start_run(ctx, RunPrefix::Preflight, false)?;
    let mut decision = PreflightDecision::new("apply", None);
    let outcome = preflight_phase(ctx, &run, LifecycleCommand::Preflight, strict, false).await;
    let (ok, error) = match &outcome {
        Ok(_) => (true, None),
        Err(e) => (false, Some(e.message.clone())),
    };
    decision.complete(ok, error.as_deref());
    decision.write(&run.evidence).map_err(CliError::hyops)?;
    let warnings = outcome
        .as_ref()
        .map(|p| p.warnings.clone())
        .unwrap_or_default();
    let checks: Vec<Value> = outcome
        .as_ref()
        .map(|p| {
            p.checks
                .checks
                .iter()
                .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail, "mandatory": c.mandatory}))
                .collect()
        })
        .unwrap_or_default();
    let summary = json!({
        "ok": ok,
        "code": if ok { 0 } else { 1 },
        "target": "module",
        "runtime_root": ctx.root.path().display().to_string(),
        "results": checks
            .iter()
            .cloned()
            .chain(warnings.iter().map(|w| json!({"check": "warning", "ok": true, "detail": w})))
            .collect::<Vec<_>>(),
        "module_preflight": {
            "module_ref": ctx.module_ref.as_str(),
            "driver": hyops::DRIVER_REF,
            "run_id": run.run_id,
            "evidence_dir": run.evidence.display().to_string(),
            "status": if ok { "ok" } else { "error" },
            "error": error,
            "required_credentials": hyops::REQUIRED_CREDENTIALS,
            "outputs_publish": hyops::PUBLISH_KEYS,
        }
    });
    write_json_atomic(&run.evidence.join("preflight_result.json"), &summary)
        .map_err(CliError::hyops)?;
    if let Value::Object(fields) = &summary {
        for (k, v) in fields {
            output::field(k, v.clone());
        }
    }
    for c in &checks {
        let mark = if c["ok"] == true { "ok  " } else { "FAIL" };
        output::result_line(&format!(
            "{mark} {}: {}",
            c["check"].as_str().unwrap_or(""),
            c["detail"].as_str().unwrap_or("")
        ));
    }
    for w in &warnings {
        output::warn(w);
    }
    match error {
        None => {
            output::result_line(&format!("preflight ok: {}", ctx.module_ref.as_str()));
            Ok(EXIT_OK)
        }
        Some(e) => Err(CliError::msg(e)),
    }
}

/// `hyops-pve validate`: what `hyops validate` refuses before any API call, in its order —
/// input resolution and validation (state references, `ssh_keys_from_init` included), then
/// the driver contract's API-free steps: bridge aliases, `build_image`, the VM-set guards and
/// the template resolved from its `core/onprem/template-image` state.
pub async fn validate(args: &ModuleArgs) -> Result<i32, CliError> {
    require_inputs(args, &super::procenv::map()?, "validate")?;
    let mut ctx = Ctx::new(args).await?;
    let result = validate_inner(&ctx).await;
    ctx.finish().await?;
    result
}

pub async fn validate_inner(ctx: &Ctx) -> Result<i32, CliError> {
    let outcome = validate_report(ctx).await;
    for w in &outcome.warnings {
        output::warn(w);
    }
    let out = outcome.result?;
    for key in [
        "module_ref",
        "state_instance",
        "env",
        "template_vm_id",
        "model",
    ] {
        output::field(key, out[key].clone());
    }
    if !output::is_json() {
        output::result_text(&crate::yaml::to_yaml(&out));
    }
    let vms = out
        .get("model")
        .and_then(|m| m.get("vms"))
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    output::result_line(&format!(
        "validate ok: {} ({vms} VM(s))",
        ctx.module_ref.as_str()
    ));
    Ok(EXIT_OK)
}

/// `hyops-pve plan`.
pub async fn plan(
    args: &ModuleArgs,
    detailed_exitcode: bool,
    out: Option<&Path>,
) -> Result<i32, CliError> {
    require_inputs(args, &super::procenv::map()?, "plan")?;
    let mut ctx = Ctx::new(args).await?;
    let result = match ctx.require_existing_root() {
        Ok(()) => plan_inner(&ctx, detailed_exitcode, out).await,
        Err(e) => Err(e),
    };
    ctx.finish().await?;
    result
}

pub async fn plan_inner(
    ctx: &Ctx,
    detailed_exitcode: bool,
    out: Option<&Path>,
) -> Result<i32, CliError> {
    let run = start_run(ctx, RunPrefix::Plan, false)?;
    let pf = preflight_phase(ctx, &run, LifecycleCommand::Plan, false, false).await?;
    // Plan never writes to NetBox: reuse what it holds, show the rest as pending.
    let mut plan = plan_phase(ctx, &run, &pf).await?;
    if let Some(path) = out {
        write_plan_json(path, &mut plan)?;
    }
    print_plan(&plan);
    output::record_warnings(&plan.warnings);
    output::field("has_changes", json!(plan.summary.has_changes()));
    output::field(
        "plan_file",
        json!(run.evidence.join("plan.json").display().to_string()),
    );
    output::field_serialized("plan", &plan);
    Ok(if detailed_exitcode && plan.summary.has_changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}

/// The planner's inputs of a plan run: the desired model per key and the observed pool
/// (for benchmarks of the pure diff, `benches/rollout.rs`). Runs preflight and the plan
/// phase like `plan` (evidence included).
pub async fn plan_models(
    ctx: &Ctx,
) -> Result<
    (
        std::collections::BTreeMap<
            crate::inputs::model::LogicalVmKey,
            std::sync::Arc<crate::plan::desired::DesiredVm>,
        >,
        crate::plan::observed::ObservedPool,
    ),
    CliError,
> {
    let run = start_run(ctx, RunPrefix::Plan, false)?;
    let pf = preflight_phase(ctx, &run, LifecycleCommand::Plan, false, false).await?;
    let (planned, _) = make_plan_observed(ctx, &run, &pf, None).await?;
    Ok((planned.desired, planned.observed))
}

/// `hyops-pve apply` (alias `deploy`).
pub async fn apply(
    args: &ModuleArgs,
    bypass: &PreflightBypass,
    plan_file: Option<&Path>,
) -> Result<i32, CliError> {
    let reason = check_bypass(bypass)?;
    require_inputs(args, &super::procenv::map()?, "apply")?;
    let mut ctx = Ctx::new(args).await?;
    let result = match ctx.require_existing_root() {
        Ok(()) => apply_inner(&ctx, reason, plan_file).await,
        Err(e) => Err(e),
    };
    ctx.finish().await?;
    result.map(|_| EXIT_OK)
}

/// Apply; returns the run id on success.
pub async fn apply_inner(
    ctx: &Ctx,
    bypass_reason: Option<String>,
    plan_file: Option<&Path>,
) -> Result<String, CliError> {
    let stop = Stop::watch();
    let run = start_run(ctx, RunPrefix::Apply, true)?;
    let mut decision = PreflightDecision::new("apply", bypass_reason.as_deref());
    output::progress("progress: phase=preflight");
    // With a bypass, the same resolution runs (the engine needs it) but its failure is the
    // apply's failure, recorded as such. Preflight changes nothing: a stop abandons it.
    let preflight = stop
        .race(preflight_phase(
            ctx,
            &run,
            LifecycleCommand::Apply,
            false,
            bypass_reason.is_some(),
        ))
        .await
        .map_err(|sig| {
            CliError::cancelled(format!(
                "apply cancelled by the operator ({sig}) during preflight, before any change"
            ))
        })?;
    let pf = match preflight {
        Ok(p) => {
            decision.complete(true, None);
            decision.write(&run.evidence).map_err(CliError::hyops)?;
            p
        }
        Err(e) => {
            decision.complete(false, Some(&e.message));
            let recorded = decision.write(&run.evidence);
            let mut msg = if e.message.starts_with("preflight failed") {
                e.message
            } else {
                format!("preflight failed: {}", e.message)
            };
            // the preflight's own error stays the message (often the same full disk)
            if let Err(w) = recorded {
                msg = format!("{msg}; and its decision could not be recorded: {w}");
            }
            return Err(CliError::msg(msg));
        }
    };
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    let input_contract = build_input_contract(&pf.resolved.resolved_json);
    let rerun_file = ctx
        .root
        .rerun_inputs_file(&ctx.module_ref, ctx.instance.as_ref());
    let resolved_file = run.evidence.join("resolved.inputs.yml");
    state
        .persist_running(&RunningRecord {
            run_id: run.run_id.clone(),
            command: "apply".into(),
            evidence_dir: run.evidence.clone(),
            input_contract: input_contract.clone(),
            rerun_inputs_file: Some(rerun_file.clone()),
            resolved_inputs_file: Some(resolved_file.clone()),
        })
        .map_err(|e| running_not_recorded("apply", &e))?;
    match apply_phase(ctx, &run, &pf, plan_file, &stop).await {
        Ok(applied) => finish_apply(
            ctx,
            &run,
            &pf,
            &state,
            applied,
            input_contract,
            resolved_file,
        ),
        Err(e) => {
            // The phase stopped early (before any VM change, or a stop request): its evidence
            // first (what cannot be written joins the message), then the state.
            let mut message = e.message;
            if let Some(lost) = run.evidence_failures.summary() {
                message = format!("{message}; and its evidence is incomplete: {lost}");
            }
            let mut unwritten = Vec::new();
            let result = DriverResult::error(&run.run_id, "apply", &message);
            if let Err(w) = write_driver_result(&run.evidence, &result) {
                unwritten.push(w.to_string());
            }
            if e.code == crate::commands::EXIT_CANCELLED {
                if let Err(w) = write_json_atomic(
                    &run.evidence.join("cancelled.json"),
                    &json!({"run_id": run.run_id, "reason": message}),
                ) {
                    unwritten.push(w.to_string());
                }
            }
            if !unwritten.is_empty() {
                message = format!("{message}; and {}", unwritten.join("; "));
            }
            Err(record_failure(ctx, &state, "apply", message, e.code))
        }
    }
}

/// The running record (or the room for the run's final record) could not be written: the
/// run stops before any change.
fn running_not_recorded(command: &str, e: &hyops::HyopsError) -> CliError {
    let advice = if e.storage_full() {
        "; local runtime storage is full: free disk space, then run it again"
    } else {
        ""
    };
    CliError::msg(format!(
        "cannot record the running state (the {command} is aborted before any change): {e}{advice}"
    ))
}

/// Record a failed mutating run in the state (`error` with the previous outputs kept,
/// contract §3.4) and return its error; when the state cannot be written either, the message
/// says so and what the state file still says.
fn record_failure(
    ctx: &Ctx,
    state: &ModuleState,
    command: &str,
    message: String,
    code: i32,
) -> CliError {
    match state.persist_error(command, &message) {
        Ok(()) => CliError { message, code },
        Err(e) => CliError {
            message: evidence_loss::state_not_recorded(
                command,
                &message,
                &e,
                "`running` from this run's start",
                ctx.root.path(),
            ),
            code,
        },
    }
}

/// The CLI's state writes after an executed apply: `error` (previous outputs kept) when a
/// VM failed or the run's evidence is incomplete (the rerun inputs and `result.json` are
/// written first, as upstream does), else the published outputs, rerun inputs and `ok`. A
/// state that cannot be written falls back to the smaller `error` record; the message then
/// says the VMs exist and the state was not recorded as `ok`.
fn finish_apply(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    state: &ModuleState,
    applied: Applied,
    input_contract: Value,
    resolved_file: PathBuf,
) -> Result<String, CliError> {
    let Applied {
        plan,
        report,
        mut result,
        phase_warnings,
    } = applied;
    output::record_warnings(&plan.warnings);
    for w in &phase_warnings {
        output::warn(w);
    }
    output::field("plan_summary", json!(plan.summary));
    output::field("writes", json!(report.writes));
    output::field("api_calls", json!(report.api_calls));
    output::field("vms", json!(report.outcomes));
    if let Some(g) = result.normalized_outputs.get("post_apply_ssh_readiness") {
        output::field("post_apply_ssh_readiness", g.clone());
    }
    if let Some(err) = &result.error {
        // Each VM's error was shown once as it happened (progress) and is kept in full in
        // apply_report.json, driver_result.json and the envelope's `vms`; a required gate that
        // failed keeps the new outputs unpublished (§5.6); evidence that could not be written
        // is named with the VMs it concerns. The state and the ERR line get the one-line
        // message.
        return Err(record_failure(
            ctx,
            state,
            "apply",
            err.clone(),
            crate::commands::EXIT_ERROR,
        ));
    }
    drop(plan.vms);
    let rerun_file = run.evidence_failures.keep(write_rerun_inputs(
        &ctx.root,
        &ctx.module_ref,
        ctx.instance.as_ref(),
        &sanitize_rerun_inputs(&pf.resolved.resolved_json),
    ));
    // result.json is driver_result.json (written by the apply); the outputs then move, never
    // copied, into the state and the envelope (10 000 VMs: tens of MB as JSON values).
    run.evidence_failures
        .keep(write_cli_result(&run.evidence, false, &result));
    let root = ctx.root.path();
    let rerun_file = match rerun_file {
        Some(f) if run.evidence_failures.is_empty() => f,
        _ => {
            let message = evidence_loss::incomplete_evidence(
                "apply",
                &run.evidence_failures,
                &report.outcomes,
                root,
            )
            .unwrap_or_else(|| "apply could not record its rerun inputs".into());
            return Err(record_failure(
                ctx,
                state,
                "apply",
                message,
                crate::commands::EXIT_ERROR,
            ));
        }
    };
    let raw = match result.normalized_outputs.shift_remove("outputs") {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    drop(result);
    let rec = OkRecord {
        run_id: run.run_id.clone(),
        evidence_dir: run.evidence.clone(),
        outputs: publish_outputs_owned(raw),
        input_contract,
        rerun_inputs_file: rerun_file.clone(),
        resolved_inputs_file: resolved_file,
        backend_binding: None,
    };
    let state_head = match state.persist_ok_streamed(&rec) {
        Ok(h) => h,
        Err(e) => {
            // The ok record did not fit (or the disk failed): record the failure in the
            // smaller error record, which keeps the previous outputs.
            let message = format!(
                "apply converged in Proxmox but its ok state could not be written: {e}; VMs: {}; {}, then run apply again: it changes nothing and records the new outputs",
                evidence_loss::vm_changes(&report.outcomes),
                evidence_loss::storage_advice(e.storage_full(), root)
            );
            return Err(record_failure(
                ctx,
                state,
                "apply",
                message,
                crate::commands::EXIT_ERROR,
            ));
        }
    };
    if let Err(e) = write_module_state_record_of(
        &run.evidence,
        state.path(),
        &state_head,
        Some(&rec.outputs),
        None,
    ) {
        // The state is recorded (ok): only this record of it is missing.
        return Err(CliError::msg(format!(
            "apply ok and its state is recorded in {}, but its evidence is incomplete: {e}; {}",
            state.path().display(),
            evidence_loss::storage_advice(e.storage_full(), root)
        )));
    }
    output::field("outputs", Value::Object(rec.outputs));
    output::field("state_file", json!(state.path().display().to_string()));
    output::field("rerun_inputs_file", json!(rerun_file.display().to_string()));
    output::result_line(&format!("rerun_inputs: {}", rerun_file.display()));
    let s = &plan.summary;
    output::result_line(&format!(
        "apply ok: {} created, {} updated, {} replaced, {} deleted, {} unchanged; {} API writes",
        s.create, s.update, s.replace, s.delete, s.noop, report.writes
    ));
    output::result_line(&format!("state: {}", state.path().display()));
    Ok(run.run_id.clone())
}

/// `hyops-pve destroy`.
pub async fn destroy(args: &ModuleArgs, bypass: &PreflightBypass) -> Result<i32, CliError> {
    let reason = check_bypass(bypass)?;
    let mut ctx = Ctx::new(args).await?;
    let result = match ctx.require_existing_root() {
        Ok(()) => destroy_inner(&ctx, reason).await,
        Err(e) => Err(e),
    };
    ctx.finish().await?;
    result.map(|_| EXIT_OK)
}

/// Destroy every VM the slot provably owns, with apply's state sequence: `running` before
/// the first delete, then `destroyed`, or `error` with the previous outputs kept (so the
/// next run still knows the VMs that were not removed). The preflight decision (and a
/// `--preflight-bypass-reason`) is recorded in the run's evidence.
pub async fn destroy_inner(ctx: &Ctx, bypass_reason: Option<String>) -> Result<String, CliError> {
    let stop = Stop::watch();
    let run = start_run(ctx, RunPrefix::Destroy, true)?;
    let mut decision = PreflightDecision::new("destroy", bypass_reason.as_deref());
    let prep = destroy_prepare(ctx, &run, "destroy")?;
    decision.complete(true, None);
    decision.write(&run.evidence).map_err(CliError::hyops)?;
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    let contract = build_input_contract(&prep.resolved.resolved_json);
    state
        .persist_running(&RunningRecord {
            run_id: run.run_id.clone(),
            command: "destroy".into(),
            evidence_dir: run.evidence.clone(),
            input_contract: contract.clone(),
            rerun_inputs_file: None,
            resolved_inputs_file: Some(run.evidence.join("resolved.inputs.yml")),
        })
        .map_err(|e| running_not_recorded("destroy", &e))?;
    let destroyed = destroy_execute(ctx, &run, &prep, &stop).await;
    if let Some(report) = &destroyed.report {
        output::field("vms", json!(report.outcomes));
    }
    if let Some(msg) = &destroyed.result.error {
        let code = if destroyed.cancelled {
            EXIT_CANCELLED
        } else {
            crate::commands::EXIT_ERROR
        };
        return Err(record_failure(ctx, &state, "destroy", msg.clone(), code));
    }
    let root = ctx.root.path();
    let value = match state.persist_destroyed(&run.run_id, &run.evidence, &contract) {
        Ok(v) => v,
        Err(e) => {
            let outcomes = destroyed
                .report
                .as_ref()
                .map_or(&[][..], |r| &r.outcomes[..]);
            let message = format!(
                "destroy removed the slot's VMs but its destroyed state could not be written: {e}; VMs: {}; {}, then run destroy again: it finds nothing left to remove and records the state",
                evidence_loss::vm_changes(outcomes),
                evidence_loss::storage_advice(e.storage_full(), root)
            );
            return Err(record_failure(
                ctx,
                &state,
                "destroy",
                message,
                crate::commands::EXIT_ERROR,
            ));
        }
    };
    if let Err(e) = write_module_state_record(&run.evidence, state.path(), &value, None) {
        // The state is recorded (destroyed): only this record of it is missing.
        return Err(CliError::msg(format!(
            "destroy ok and its state is recorded in {}, but its evidence is incomplete: {e}; {}",
            state.path().display(),
            evidence_loss::storage_advice(e.storage_full(), root)
        )));
    }
    for w in &destroyed.result.warnings {
        output::warn(w);
    }
    output::field(
        "destroyed",
        destroyed
            .result
            .normalized_outputs
            .get("destroyed")
            .cloned()
            .unwrap_or(Value::Null),
    );
    output::field("state_file", json!(state.path().display().to_string()));
    output::result_line(&format!(
        "destroy ok: {} VM(s) removed",
        destroyed.report.as_ref().map_or(0, |r| r.outcomes.len())
    ));
    Ok(run.run_id.clone())
}

/// `hyops-pve state show`: reads the slot's state file; starts nothing, creates nothing.
pub async fn state_show(args: &StateShowArgs) -> Result<i32, CliError> {
    let env_vars = super::procenv::map()?;
    let module = crate::inputs::canonical_module_ref(&args.module)
        .map_err(|e| CliError::msg(e.to_string()))?;
    let module_ref = hyops::ModuleRef::parse(module).map_err(CliError::hyops)?;
    let instance =
        hyops::StateInstance::parse_opt(args.state_instance.as_deref()).map_err(CliError::hyops)?;
    let nonblank = |k: &str| {
        env_vars
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let env = args.env.clone().or_else(|| nonblank("HYOPS_ENV"));
    let root = if args.sim {
        let env = env.unwrap_or_else(|| "dev".into());
        hyops::RuntimeRoot::at(&crate::commands::simroot::sim_env_root(&env_vars, &env)?)
    } else {
        let runtime_root_env = nonblank("HYOPS_RUNTIME_ROOT");
        let env_for_root = match (&args.env, &args.root, &runtime_root_env) {
            (Some(e), _, _) => Some(e.clone()),
            (None, None, None) => env.clone(),
            _ => None,
        };
        let home = env_vars.get("HOME").map(PathBuf::from);
        hyops::RuntimeRoot::resolve(&hyops::RootSource {
            env: env_for_root.as_deref(),
            root: args.root.as_deref(),
            runtime_root_env: runtime_root_env.as_deref(),
            home: home.as_deref(),
        })
        .map_err(CliError::hyops)?
    };
    if !root.path().is_dir() {
        let msg = if args.sim {
            format!(
                "the simulator has no runtime root for env {} yet ({} does not exist); `hyops-pve apply --sim --env {}` creates it",
                root.env().unwrap_or("dev"),
                root.path().display(),
                root.env().unwrap_or("dev")
            )
        } else {
            crate::commands::context::missing_root_message(
                root.path(),
                args.env.as_deref().or(root.env()),
            )
        };
        return Err(CliError::msg(msg));
    }
    let state = ModuleState::new(&root, &module_ref, instance.as_ref());
    output::field("state_file", json!(state.path().display().to_string()));
    match state.read().map_err(CliError::hyops)? {
        Some(s) => {
            let value = Value::Object(s);
            output::result_line(&serde_json::to_string_pretty(&value).unwrap_or_default());
            output::field("state", value);
            Ok(EXIT_OK)
        }
        None => Err(CliError::msg(format!(
            "no module state at {} (nothing applied in this slot yet)",
            state.path().display()
        ))),
    }
}

/// The strict preflight rebuild runs before destroying anything.
pub async fn preflight_for_rebuild(ctx: &Ctx) -> Result<(), CliError> {
    let run = start_run(ctx, RunPrefix::Preflight, false)?;
    preflight_phase(ctx, &run, LifecycleCommand::Apply, true, false)
        .await
        .map(|_| ())
}
