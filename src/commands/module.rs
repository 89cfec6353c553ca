//! `preflight`, `validate`, `plan`, `apply`, `destroy` and `state show` for
//! `platform/onprem/platform-vm`: the CLI front-ends of the engine path in
//! [`super::phases`]. These functions own the HyOps state transitions (`running` → `ok` |
//! `error`, `destroyed`), the CLI-side evidence (`meta.json`, `preflight_decision.json`,
//! `result.json`, `module_state.json`) and what is printed; the phases and the engine
//! ([`crate::apply::engine`]) only return results.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::cli::{ModuleArgs, PreflightBypass};
use crate::commands::context::Ctx;
use crate::commands::phases::{
    apply_result, destroy_phase, execute_plan, make_plan, preflight_phase, print_plan, start_run,
    validate_model, Applied, Preflighted, Run,
};
use crate::commands::{CliError, EXIT_CHANGES, EXIT_ERROR, EXIT_OK};
use crate::hyops::{
    self, build_input_contract, publish_outputs, write_driver_result, write_json_atomic,
    write_module_state_record, write_rerun_inputs, DriverResult, ModuleState, OkRecord,
    PreflightDecision, RunPrefix, RunningRecord,
};
use crate::inputs::{sanitize_rerun_inputs, LifecycleCommand};

pub(crate) fn check_bypass(
    command: &str,
    bypass: &PreflightBypass,
) -> Result<Option<String>, CliError> {
    if !bypass.skip_preflight {
        return Ok(None);
    }
    let reason = bypass
        .preflight_bypass_reason
        .as_deref()
        .map(str::trim)
        .unwrap_or("");
    let printable =
        !reason.is_empty() && reason.len() <= 500 && !reason.chars().any(|c| c.is_control());
    if !printable {
        return Err(CliError::msg(format!(
            "--skip-preflight for a mutating command requires --preflight-bypass-reason (command: {command}; a single printable line of at most 500 characters)"
        )));
    }
    Ok(Some(reason.to_string()))
}

/// `hyops-pve preflight`.
pub async fn preflight(args: &ModuleArgs, strict: bool) -> Result<i32, CliError> {
    let mut ctx = Ctx::new(args).await?;
    let result = preflight_inner(&ctx, strict).await;
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
    if ctx.args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        for c in &checks {
            let mark = if c["ok"] == true { "ok  " } else { "FAIL" };
            println!(
                "{mark} {}: {}",
                c["check"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or("")
            );
        }
        for w in &warnings {
            println!("WARN: {w}");
        }
        if ok {
            println!("preflight ok: {}", ctx.module_ref.as_str());
        }
    }
    match error {
        None => Ok(EXIT_OK),
        Some(e) if ctx.args.json => {
            eprintln!("ERR: {e}");
            Ok(EXIT_ERROR)
        }
        Some(e) => Err(CliError::msg(e)),
    }
}

/// `hyops-pve validate`: inputs, naming, aliases and guards; the template is resolved when
/// its state exists (otherwise a warning: plan/apply check it for real).
pub async fn validate(args: &ModuleArgs) -> Result<i32, CliError> {
    let mut ctx = Ctx::new(args).await?;
    let result = validate_inner(&ctx);
    ctx.finish().await?;
    result
}

pub fn validate_inner(ctx: &Ctx) -> Result<i32, CliError> {
    let (resolved, warnings, template) = validate_model(ctx)?;
    let out = json!({
        "module_ref": ctx.module_ref.as_str(),
        "state_instance": ctx.instance.as_ref().map(|i| i.as_str()),
        "env": ctx.env_name,
        "template_vm_id": template,
        "warnings": warnings,
        "model": resolved.model,
    });
    if ctx.args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for w in &warnings {
            println!("WARN: {w}");
        }
        let yaml = serde_yaml::to_string(&out)
            .map_err(|e| CliError::msg(format!("cannot render the model: {e}")))?;
        print!("{yaml}");
        println!(
            "validate ok: {} ({} VM(s))",
            ctx.module_ref.as_str(),
            resolved.model.vms.len()
        );
    }
    Ok(EXIT_OK)
}

/// `hyops-pve plan`.
pub async fn plan(
    args: &ModuleArgs,
    detailed_exitcode: bool,
    out: Option<&Path>,
) -> Result<i32, CliError> {
    let mut ctx = Ctx::new(args).await?;
    let result = plan_inner(&ctx, detailed_exitcode, out).await;
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
    let plan = make_plan(ctx, &run, &pf).await?;
    if let Some(path) = out {
        let value = serde_json::to_value(&plan)
            .map_err(|e| CliError::msg(format!("cannot serialise the plan: {e}")))?;
        write_json_atomic(path, &value).map_err(CliError::hyops)?;
    }
    print_plan(ctx, &plan);
    if ctx.args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    }
    Ok(if detailed_exitcode && plan.summary.has_changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}

/// `hyops-pve apply` (alias `deploy`).
pub async fn apply(
    args: &ModuleArgs,
    bypass: &PreflightBypass,
    plan_file: Option<&Path>,
) -> Result<i32, CliError> {
    let reason = check_bypass("apply", bypass)?;
    let mut ctx = Ctx::new(args).await?;
    let result = apply_inner(&ctx, reason, plan_file).await;
    ctx.finish().await?;
    result.map(|_| EXIT_OK)
}

/// Apply; returns the run id on success.
pub async fn apply_inner(
    ctx: &Ctx,
    bypass_reason: Option<String>,
    plan_file: Option<&Path>,
) -> Result<String, CliError> {
    let run = start_run(ctx, RunPrefix::Apply, true)?;
    let mut decision = PreflightDecision::new("apply", bypass_reason.as_deref());
    if ctx.human() {
        println!("progress: phase=preflight");
    }
    // With a bypass, the same resolution runs (the engine needs it) but its failure is the
    // apply's failure, recorded as such.
    let pf = match preflight_phase(
        ctx,
        &run,
        LifecycleCommand::Apply,
        false,
        bypass_reason.is_some(),
    )
    .await
    {
        Ok(p) => {
            decision.complete(true, None);
            decision.write(&run.evidence).map_err(CliError::hyops)?;
            p
        }
        Err(e) => {
            decision.complete(false, Some(&e.message));
            decision.write(&run.evidence).map_err(CliError::hyops)?;
            let msg = if e.message.starts_with("preflight failed") {
                e.message
            } else {
                format!("preflight failed: {}", e.message)
            };
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
        .map_err(|e| {
            CliError::msg(format!(
                "cannot record the running state (the run is aborted before any change): {e}"
            ))
        })?;
    if ctx.human() {
        println!("progress: phase=apply");
    }
    let outcome = match execute_plan(ctx, &run, &pf, plan_file).await {
        Ok((plan, report)) => apply_result(&run, plan, report),
        Err(e) => Err(e),
    };
    match outcome {
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
            let _ = state.persist_error("apply", &e.message);
            let result = DriverResult::error(&run.run_id, "apply", &e.message);
            let _ = write_driver_result(&run.evidence, &result);
            if e.code == crate::commands::EXIT_CANCELLED {
                let _ = write_json_atomic(
                    &run.evidence.join("cancelled.json"),
                    &json!({"run_id": run.run_id, "reason": e.message}),
                );
            }
            Err(e)
        }
    }
}

/// The CLI's state writes after an executed apply: `error` (previous outputs kept) when a
/// VM failed, else the published outputs, rerun inputs and `ok`.
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
        result,
    } = applied;
    if let Some(err) = &result.error {
        let _ = state.persist_error("apply", err);
        if !ctx.args.json {
            for o in report.outcomes.iter().filter(|o| o.status != "ok") {
                eprintln!(
                    "failed: {} (vmid {}): {}",
                    o.key,
                    o.vmid.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    o.error.clone().unwrap_or_default()
                );
            }
        }
        return Err(CliError::msg(err.clone()));
    }
    let raw = report.outputs.as_object().cloned().unwrap_or_default();
    let published = publish_outputs(&raw);
    let rerun_file = write_rerun_inputs(
        &ctx.root,
        &ctx.module_ref,
        ctx.instance.as_ref(),
        &sanitize_rerun_inputs(&pf.resolved.resolved_json),
    )
    .map_err(CliError::hyops)?;
    let state_value = state
        .persist_ok(&OkRecord {
            run_id: run.run_id.clone(),
            evidence_dir: run.evidence.clone(),
            outputs: published.clone(),
            input_contract,
            rerun_inputs_file: rerun_file.clone(),
            resolved_inputs_file: resolved_file,
            backend_binding: None,
        })
        .map_err(CliError::hyops)?;
    write_module_state_record(&run.evidence, state.path(), &state_value, None)
        .map_err(CliError::hyops)?;
    write_json_atomic(&run.evidence.join("result.json"), &result.to_value())
        .map_err(CliError::hyops)?;
    if ctx.args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result.to_value()).unwrap_or_default()
        );
    } else {
        println!("rerun_inputs: {}", rerun_file.display());
        let s = &plan.summary;
        println!(
            "apply ok: {} created, {} updated, {} replaced, {} deleted, {} unchanged; {} API writes",
            s.create, s.update, s.replace, s.delete, s.noop, report.writes
        );
        println!("state: {}", state.path().display());
    }
    Ok(run.run_id.clone())
}

/// `hyops-pve destroy`.
pub async fn destroy(args: &ModuleArgs, bypass: &PreflightBypass) -> Result<i32, CliError> {
    let _reason = check_bypass("destroy", bypass)?;
    let mut ctx = Ctx::new(args).await?;
    let result = destroy_inner(&ctx).await;
    ctx.finish().await?;
    result.map(|_| EXIT_OK)
}

pub async fn destroy_inner(ctx: &Ctx) -> Result<String, CliError> {
    let run = start_run(ctx, RunPrefix::Destroy, true)?;
    let destroyed = destroy_phase(ctx, &run).await?;
    if let Some(err) = &destroyed.result.error {
        // A failed destroy leaves the state untouched (contract §3.4).
        return Err(CliError::msg(err.clone()));
    }
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    let contract = build_input_contract(&destroyed.resolved.resolved_json);
    let value = state
        .persist_destroyed(&run.run_id, &run.evidence, &contract)
        .map_err(CliError::hyops)?;
    write_module_state_record(&run.evidence, state.path(), &value, None)
        .map_err(CliError::hyops)?;
    if ctx.args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&destroyed.result.to_value()).unwrap_or_default()
        );
    } else {
        for w in &destroyed.report.warnings {
            println!("WARN: {w}");
        }
        println!(
            "destroy ok: {} VM(s) removed",
            destroyed.report.outcomes.len()
        );
    }
    Ok(run.run_id.clone())
}

/// `hyops-pve state show`.
pub async fn state_show(args: &ModuleArgs) -> Result<i32, CliError> {
    let mut ctx = Ctx::new(args).await?;
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    let result = match state.read().map_err(CliError::hyops)? {
        Some(s) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(s)).unwrap_or_default()
            );
            Ok(EXIT_OK)
        }
        None => Err(CliError::msg(format!(
            "no module state at {} (nothing applied in this slot yet)",
            state.path().display()
        ))),
    };
    ctx.finish().await?;
    result
}

/// The strict preflight rebuild runs before destroying anything.
pub async fn preflight_for_rebuild(ctx: &Ctx) -> Result<(), CliError> {
    let run = start_run(ctx, RunPrefix::Preflight, false)?;
    preflight_phase(ctx, &run, LifecycleCommand::Apply, true, false)
        .await
        .map(|_| ())
}
