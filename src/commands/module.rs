//! `preflight`, `validate`, `plan`, `apply`, `destroy` and `state show` for
//! `platform/onprem/platform-vm`. These functions own the HyOps state transitions
//! (`running` → `ok` | `error`, `destroyed`) and the evidence files; the engine
//! ([`crate::apply::engine`]) only returns results.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::apply::engine::{self, ApplyReport, PlanRequest, SlotIdentity};
use crate::apply::executor::{Executor, Timeouts};
use crate::apply::journal::Journal;
use crate::apply::limits::{Limits, Scheduler};
use crate::apply::snippets as apply_snippets;
use crate::cli::{ModuleArgs, PreflightBypass, StateShowArgs};
use crate::commands::context::{require_inputs, Ctx};
use crate::commands::output;
use crate::commands::progress::progress_for;
use crate::commands::{CliError, EXIT_CHANGES, EXIT_OK};
use crate::hyops::read_proxmox_ready;
use crate::hyops::state_refs::RootStateContracts;
use crate::hyops::{
    self, acquire_lock, build_input_contract, check_vm_set_guards, evidence_dir, new_run_id,
    publish_outputs, read_tfstate_vms, resolve_template, template_source_hint, write_driver_result,
    write_inputs_resolved, write_json_atomic, write_meta, write_module_state_record,
    write_rerun_inputs, write_text_atomic, DriverResult, ModuleState, OkRecord, PreflightDecision,
    PreflightOptions, ProxmoxCredentials, RunLock, RunPrefix, RunningRecord,
};
use crate::inputs::model::CloudInitMode;
use crate::inputs::model::{ConcurrencyLimits, LogicalVmKey, ModuleInputs, TemplateSource};
use crate::inputs::{
    resolve_inputs_with_warnings, sanitize_rerun_inputs, LifecycleCommand, ResolveRequest,
    ResolvedInputs, StateHooks,
};
use crate::plan::artifact::PlanArtifact;
use crate::plan::checks::check_inputs;
use crate::plan::desired::TargetDefaults;
use crate::plan::observed::PriorIds;
use crate::plan::render::render;
use crate::pve::PveClient;
use crate::ssh::gate::{required_failure_message, GateEnv, GateReport};
use crate::ssh::node::{NodeSsh, NodeSshTarget};
use crate::ssh::SshContext;

/// One module run's frame: its id, evidence dir and (for mutating commands) the slot lock.
pub struct Run {
    pub run_id: String,
    pub evidence: PathBuf,
    pub _lock: Option<RunLock>,
}

fn start_run(ctx: &Ctx, prefix: RunPrefix, lock: bool) -> Result<Run, CliError> {
    let run_id = new_run_id(prefix);
    let evidence = evidence_dir(
        &ctx.root,
        ctx.args.out_dir.as_deref(),
        &ctx.module_ref,
        &run_id,
    );
    hyops::evidence::create_evidence_dir(&evidence).map_err(CliError::hyops)?;
    output::progress(&format!("run record: {}", evidence.display()));
    output::set_run(&run_id, &evidence);
    let lock = if lock {
        let held = acquire_lock(
            &ctx.root,
            &ctx.module_ref,
            ctx.instance.as_ref(),
            &run_id,
            Duration::from_secs(ctx.args.lock_wait_s),
        )
        .map_err(CliError::hyops)?;
        // With the slot lock held, temp files a killed run left beside this slot's state and
        // rerun inputs are garbage: remove them (only those of processes that are gone).
        let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
        let rerun = ctx
            .root
            .rerun_inputs_file(&ctx.module_ref, ctx.instance.as_ref());
        for target in [state.path(), rerun.as_path()] {
            for removed in hyops::fsio::remove_stale_temps(target) {
                tracing::info!(file = %removed.display(), "removed a temp file left by a killed run");
            }
        }
        Some(held)
    } else {
        None
    };
    Ok(Run {
        run_id,
        evidence,
        _lock: lock,
    })
}

fn resolve(
    ctx: &Ctx,
    command: LifecycleCommand,
    creds: Option<&ProxmoxCredentials>,
) -> Result<ResolvedInputs, CliError> {
    let req = resolve_request(ctx, command, creds);
    let (early_warnings, result) = resolve_inputs_with_warnings(&req);
    let resolved = result.map_err(|e| {
        // The unknown-key warnings often explain the refusal (`memroy_mb`): show them too.
        for w in &early_warnings {
            output::warn(w);
        }
        CliError::msg(crate::commands::hints::explain(&e, &req))
    })?;
    if command.runs_validator() {
        // Catch before write: everything Proxmox would refuse, all problems at once.
        let defaults = creds.map(defaults_from);
        check_inputs(&resolved.model, defaults.as_ref())
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    Ok(resolved)
}

fn resolve_request(
    ctx: &Ctx,
    command: LifecycleCommand,
    creds: Option<&ProxmoxCredentials>,
) -> ResolveRequest {
    ResolveRequest {
        overlay_path: ctx.args.inputs.clone(),
        command,
        runtime_env: ctx.env_name.clone(),
        env: ctx.env_order.clone(),
        credentials_network_bridge: creds.map(|c| c.network_bridge.clone()),
        state: Some(StateHooks(Arc::new(RootStateContracts::new(&ctx.root)))),
    }
}

fn write_inputs_evidence(
    ctx: &Ctx,
    run: &Run,
    command: &str,
    resolved: &ResolvedInputs,
) -> Result<(), CliError> {
    write_meta(
        &run.evidence,
        command,
        &run.run_id,
        &ctx.module_ref,
        &ctx.root,
        &json!({}),
    )
    .map_err(CliError::hyops)?;
    write_inputs_resolved(
        &run.evidence,
        &ctx.module_ref,
        ctx.instance.as_ref(),
        &resolved.resolved_json,
    )
    .map_err(CliError::hyops)?;
    let yaml = crate::yaml::to_yaml(&resolved.resolved_json);
    write_text_atomic(&run.evidence.join("resolved.inputs.yml"), &yaml).map_err(CliError::hyops)?;
    Ok(())
}

fn defaults_from(creds: &ProxmoxCredentials) -> TargetDefaults {
    TargetDefaults {
        node: creds.node.clone(),
        datastore: creds.storage_pool.clone(),
        snippets_datastore: creds.storage_snippets.clone(),
        network_bridge: creds.network_bridge.clone(),
        ssh_username: creds.ssh_username.clone(),
        ssh_public_key: Some(creds.ssh_public_key.clone()).filter(|k| !k.trim().is_empty()),
    }
}

/// The template VMID, with the §1.15 warnings and its source hint.
fn template_vmid(
    ctx: &Ctx,
    inputs: &ModuleInputs,
    warnings: &mut Vec<String>,
) -> Result<(u32, String), CliError> {
    match &inputs.template {
        TemplateSource::ExplicitVmId { vm_id } => Ok((*vm_id, template_source_hint(*vm_id, None))),
        TemplateSource::StateRef { state_ref, key } => {
            let (vmid, w) =
                resolve_template(&ctx.root, state_ref, key.as_deref()).map_err(CliError::hyops)?;
            warnings.extend(w);
            Ok((vmid, template_source_hint(vmid, Some(state_ref))))
        }
    }
}

/// The VM-set guards (contract §1.11) for the requested logical keys.
fn vm_set_guards(ctx: &Ctx, model: &ModuleInputs) -> Result<hyops::GuardOutcome, CliError> {
    let requested: Vec<String> = model.vms.keys().map(|k| k.0.clone()).collect();
    check_vm_set_guards(
        &ctx.root,
        &ctx.module_ref,
        ctx.instance.as_ref(),
        &requested,
        model.allow_vm_set_replace,
    )
    .map_err(CliError::hyops)
}

/// VMIDs recorded for this slot by previous HyOps and Terraform runs.
fn prior_ids(ctx: &Ctx) -> Result<PriorIds, CliError> {
    let mut prior = PriorIds::default();
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    if let Some(s) = state.read().map_err(CliError::hyops)? {
        let outputs = s.get("outputs").cloned().unwrap_or(Value::Null);
        if let Some(ids) = outputs.get("vm_ids").and_then(Value::as_object) {
            for (k, v) in ids {
                let Some(id) = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                else {
                    continue;
                };
                let Ok(id) = u32::try_from(id) else { continue };
                let name = outputs
                    .get("vms")
                    .and_then(|vms| vms.get(k))
                    .and_then(|vm| vm.get("vm_name"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                prior.hyops.insert(LogicalVmKey(k.clone()), (id, name));
            }
        }
    }
    for tf in read_tfstate_vms(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .map_err(CliError::hyops)?
    {
        if let Some(key) = tf.key {
            prior.terraform.insert(LogicalVmKey(key), tf.vm_id);
        }
    }
    Ok(prior)
}

fn identity(ctx: &Ctx) -> SlotIdentity {
    SlotIdentity {
        env: ctx.owner_env(),
        module_ref: ctx.module_ref.as_str().to_string(),
        slot: ctx.slot(),
    }
}

fn limits(ctx: &Ctx, inputs: &ModuleInputs) -> Limits {
    Limits::resolve(
        &inputs.limits,
        &ConcurrencyLimits {
            global: ctx.args.max_parallel,
            per_node: ctx.args.max_per_node,
            per_storage: ctx.args.max_per_storage,
        },
    )
}

fn check_bypass(command: &str, bypass: &PreflightBypass) -> Result<Option<String>, CliError> {
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

/// Everything checked before a mutating run, without changing anything.
struct Preflighted {
    creds: ProxmoxCredentials,
    resolved: ResolvedInputs,
    template_vmid: u32,
    template_hint: String,
    deletion_only_shrink: bool,
    warnings: Vec<String>,
    client: PveClient,
    checks: hyops::PreflightReport,
}

/// API-free checks, inputs, guards, template state, then Proxmox reachability.
/// With `bypassed` (an operator-approved `--skip-preflight`), failed API-free checks become
/// warnings; what the engine itself needs (inputs, credentials, template, guards) still runs.
async fn preflight_phase(
    ctx: &Ctx,
    run: &Run,
    command: LifecycleCommand,
    strict: bool,
    bypassed: bool,
) -> Result<Preflighted, CliError> {
    // Input errors first (they are the operator's to fix in the overlay), then credentials.
    // The vault is decrypted once and serves both the credentials and the preflight checks.
    let vault = ctx.vault();
    let creds = match &vault {
        Ok(v) => ctx.credentials_with(v.as_ref()),
        Err(e) => Err(CliError::msg(e.message.clone())),
    };
    let resolved = resolve(ctx, command, creds.as_ref().ok())?;
    let creds = creds?;
    let vault = vault?;
    write_inputs_evidence(ctx, run, command.as_str(), &resolved)?;
    let mut warnings = resolved.warnings.clone();
    for w in &creds.warnings {
        output::warn(w);
        warnings.push(w.clone());
    }
    if resolved.model.uses_ipam() && command != LifecycleCommand::Destroy {
        return Err(CliError::msg(
            "inputs.addressing.mode=ipam needs NetBox IPAM allocation, which this hyops-pve build does not implement yet; \
             hyops-pve never falls back to static addressing silently. Use require_ipam: false with static or dhcp \
             interfaces (see examples/inputs.sim-demo.yml), or run this module with the Terragrunt driver until NetBox IPAM lands",
        ));
    }
    let (template_ref, template_key) = match &resolved.model.template {
        TemplateSource::StateRef { state_ref, key } => (Some(state_ref.clone()), key.clone()),
        TemplateSource::ExplicitVmId { .. } => (None, None),
    };
    let report = hyops::run_preflight_checks(
        &ctx.root,
        &PreflightOptions {
            min_free_disk_mb: None,
            env: ctx.env_vars.clone(),
            vault: vault.as_ref(),
            template_state_ref: template_ref.as_deref(),
            template_key: template_key.as_deref(),
            strict,
        },
    );
    write_json_atomic(
        &run.evidence.join("preflight_checks.json"),
        &serde_json::to_value(&report).unwrap_or(Value::Null),
    )
    .map_err(CliError::hyops)?;
    for f in report.failures() {
        if !bypassed {
            return Err(CliError::msg(format!(
                "preflight failed: {}: {}",
                f.name, f.detail
            )));
        }
        warnings.push(format!(
            "preflight check {} failed but preflight was bypassed: {}",
            f.name, f.detail
        ));
    }
    let guard = vm_set_guards(ctx, &resolved.model)?;
    warnings.extend(guard.warnings.clone());
    let (template_vmid, template_hint) = template_vmid(ctx, &resolved.model, &mut warnings)?;
    let client = ctx.client(&creds)?;
    client.version().await.map_err(|e| {
        let mut msg = format!(
            "preflight failed: Proxmox API at {} is not reachable with the configured token: {e}",
            creds.url
        );
        if let Some(fix) = connect_fix(&e, &creds, &ctx.root) {
            msg.push_str(&format!("\n  fix: {fix}"));
        }
        CliError::msg(msg)
    })?;
    Ok(Preflighted {
        creds,
        resolved,
        template_vmid,
        template_hint,
        deletion_only_shrink: guard.deletion_only_shrink,
        warnings,
        client,
        checks: report,
    })
}

/// What to do when the first API call fails for a reason the operator fixes in the
/// credentials: an untrusted or changed certificate, a refused token.
fn connect_fix(
    e: &crate::pve::PveError,
    creds: &hyops::ProxmoxCredentials,
    root: &hyops::RuntimeRoot,
) -> Option<String> {
    let file = creds
        .source_file
        .clone()
        .unwrap_or_else(|| root.proxmox_tfvars());
    let file = file.display();
    match e.classify() {
        crate::pve::ErrorClass::Tls if creds.tls.fingerprint_sha256.is_some() => Some(format!(
            "the node's certificate does not match proxmox_tls_fingerprint in {file}; if it was renewed, read the new SHA-256 fingerprint with `pvenode cert info` on the node and update proxmox_tls_fingerprint"
        )),
        crate::pve::ErrorClass::Tls => Some(format!(
            "the node's certificate is not trusted (a fresh Proxmox VE serves a self-signed one): pin it with proxmox_tls_fingerprint = \"<SHA-256 from `pvenode cert info`>\", or trust its CA with proxmox_ca_file = \"<a copy of the node's /etc/pve/pve-root-ca.pem>\", in {file} (or PROXMOX_TLS_FINGERPRINT / PROXMOX_CA_FILE); proxmox_skip_tls = true turns verification off"
        )),
        crate::pve::ErrorClass::Auth => Some(format!(
            "Proxmox refused the API token: check proxmox_token_id (user@realm!tokenname) and proxmox_token_secret in {file} (or the runtime vault), and that the token exists, is not expired and has privilege separation set as intended"
        )),
        _ => None,
    }
}

async fn make_plan(ctx: &Ctx, run: &Run, pf: &Preflighted) -> Result<PlanArtifact, CliError> {
    let prior = prior_ids(ctx)?;
    let defaults = defaults_from(&pf.creds);
    let ident = identity(ctx);
    let req = PlanRequest {
        inputs: &pf.resolved.model,
        identity: &ident,
        defaults: &defaults,
        template_vmid: pf.template_vmid,
        template_source_hint: pf.template_hint.clone(),
        deletion_only_shrink: pf.deletion_only_shrink,
        prior: &prior,
        run_id: &run.run_id,
        env: ctx.env_name.as_deref(),
        state_instance: ctx.instance.as_ref().map(|i| i.as_str()),
        clone_lock_wait: crate::plan::observe::CLONE_LOCK_WAIT.mul_f64(ctx.time_scale()),
    };
    let (mut plan, _observed) = engine::make_plan(&pf.client, &req)
        .await
        .map_err(|e| CliError::msg(e.to_string()))?;
    let mut warnings = pf.warnings.clone();
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    let value = serde_json::to_value(&plan)
        .map_err(|e| CliError::msg(format!("cannot serialise the plan: {e}")))?;
    write_json_atomic(&run.evidence.join("plan.json"), &value).map_err(CliError::hyops)?;
    write_text_atomic(&run.evidence.join("plan.txt"), &render(&plan, false))
        .map_err(CliError::hyops)?;
    Ok(plan)
}

fn print_plan(_ctx: &Ctx, plan: &PlanArtifact) {
    if output::is_json() {
        return;
    }
    use std::io::IsTerminal;
    let color = std::io::stdout().is_terminal();
    output::result_text(&render(plan, color));
}

/// `hyops-pve preflight`.
pub async fn preflight(args: &ModuleArgs, strict: bool) -> Result<i32, CliError> {
    require_inputs(args, &std::env::vars().collect(), "preflight")?;
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
    require_inputs(args, &std::env::vars().collect(), "validate")?;
    let mut ctx = Ctx::new(args).await?;
    let result = validate_inner(&ctx);
    ctx.finish().await?;
    result
}

/// What `validate` found: the warnings so far (shown even on failure) and either the report
/// (`module_ref`, `state_instance`, `env`, `template_vm_id`, `warnings`, `model`) or the
/// refusal. Prints nothing (the differential test against upstream calls it).
pub struct ValidateOutcome {
    pub warnings: Vec<String>,
    pub result: Result<Value, CliError>,
    /// The refusal exactly as hyops prints it, without the CLI's second line naming the
    /// offending value (`None` on success).
    pub verbatim: Option<String>,
}

/// The checks of `validate`, without printing.
pub fn validate_report(ctx: &Ctx) -> ValidateOutcome {
    // Credentials are optional for validate; their bridge is only the single-VM default.
    let creds = ctx.credentials().ok();
    let req = resolve_request(ctx, LifecycleCommand::Validate, creds.as_ref());
    let (mut early_warnings, result) = resolve_inputs_with_warnings(&req);
    // A mistyped --env is worth saying whatever else is wrong; validate itself needs no root
    // and creates none.
    let root_warning = (!ctx.root.path().is_dir()).then(|| {
        crate::commands::context::missing_root_message(
            ctx.root.path(),
            ctx.args.env.as_deref().or(ctx.env_name.as_deref()),
        )
    });
    let resolved = match result {
        Ok(r) => r,
        Err(e) => {
            early_warnings.extend(root_warning);
            return ValidateOutcome {
                warnings: early_warnings,
                result: Err(CliError::msg(crate::commands::hints::explain(&e, &req))),
                verbatim: Some(e.to_string()),
            };
        }
    };
    let mut warnings = resolved.warnings.clone();
    warnings.extend(root_warning);
    // Catch before write: everything Proxmox would refuse, all problems at once (a deliberate
    // difference from hyops, which lets Proxmox refuse them after a clone).
    let defaults = creds.as_ref().map(defaults_from);
    if let Err(e) = check_inputs(&resolved.model, defaults.as_ref()) {
        let msg = e.to_string();
        return ValidateOutcome {
            warnings,
            verbatim: Some(msg.clone()),
            result: Err(CliError::msg(msg)),
        };
    }
    let checks = vm_set_guards(ctx, &resolved.model).and_then(|guard| {
        warnings.extend(guard.warnings);
        template_vmid(ctx, &resolved.model, &mut warnings)
    });
    let (template, _) = match checks {
        Ok(t) => t,
        Err(e) => {
            return ValidateOutcome {
                warnings,
                verbatim: Some(e.message.clone()),
                result: Err(e),
            }
        }
    };
    let out = json!({
        "module_ref": ctx.module_ref.as_str(),
        "state_instance": ctx.instance.as_ref().map(|i| i.as_str()),
        "env": ctx.env_name,
        "template_vm_id": template,
        "warnings": warnings.clone(),
        "model": resolved.model,
    });
    ValidateOutcome {
        warnings,
        result: Ok(out),
        verbatim: None,
    }
}

pub fn validate_inner(ctx: &Ctx) -> Result<i32, CliError> {
    let outcome = validate_report(ctx);
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
    require_inputs(args, &std::env::vars().collect(), "plan")?;
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
    let plan = make_plan(ctx, &run, &pf).await?;
    if let Some(path) = out {
        let value = serde_json::to_value(&plan)
            .map_err(|e| CliError::msg(format!("cannot serialise the plan: {e}")))?;
        write_json_atomic(path, &value).map_err(CliError::hyops)?;
    }
    print_plan(ctx, &plan);
    output::record_warnings(&plan.warnings);
    output::field("has_changes", json!(plan.summary.has_changes()));
    output::field(
        "plan_file",
        json!(run.evidence.join("plan.json").display().to_string()),
    );
    output::field("plan", serde_json::to_value(&plan).unwrap_or(Value::Null));
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
    require_inputs(args, &std::env::vars().collect(), "apply")?;
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
    output::progress("progress: phase=apply");
    let outcome = apply_engine(ctx, &run, &pf, plan_file, &stop).await;
    // The gate runs after a successful rollout only, as upstream runs it after
    // `terragrunt output`; it only waits for SSH, so a stop request abandons it.
    let outcome = match outcome {
        Ok(applied) if !applied.report.failed => {
            match stop
                .race(readiness_gate(ctx, &run, &pf, &applied.report))
                .await
            {
                Ok(gate) => Ok((applied, Some(gate))),
                Err(sig) => Err(CliError::cancelled(format!(
                    "apply cancelled by the operator ({sig}) during the post-apply SSH readiness gate; the rollout itself finished and the next apply adopts its VMs"
                ))),
            }
        }
        Ok(applied) => Ok((applied, None)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((applied, gate)) => finish_apply(
            ctx,
            &run,
            &pf,
            &state,
            applied,
            gate,
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

/// What the apply phases produced besides the engine report.
struct ApplyRun {
    plan: PlanArtifact,
    report: ApplyReport,
    /// Warnings from the phases around the rollout (snippet cleanup).
    warnings: Vec<String>,
}

/// Node SSH for this root: the API host (`proxmox.ready.json` `api_ip`, else the
/// `proxmox_url` host) as the credentials' node, `proxmox_ssh_username`, the credentials' key.
fn node_ssh(ctx: &Ctx, creds: &ProxmoxCredentials) -> Result<NodeSsh, CliError> {
    let api_ip = read_proxmox_ready(&ctx.root)
        .ok()
        .flatten()
        .and_then(|r| r.api_ip)
        .filter(|h| !h.trim().is_empty());
    let api_host = api_ip.or_else(|| creds.host()).ok_or_else(|| {
        CliError::msg(format!(
            "node SSH needs the Proxmox host address, but neither meta/proxmox.ready.json runtime.api_ip nor proxmox_url ({}) gives one",
            creds.url
        ))
    })?;
    let target = NodeSshTarget {
        api_host,
        api_node: creds.node.clone(),
        port: 22,
        user: creds.ssh_username.clone(),
    };
    let ssh_ctx = SshContext {
        identities: Arc::new(ctx.node_identities(creds)?),
        known_hosts: ctx.known_hosts(),
    };
    Ok(NodeSsh::new(
        target,
        ctx.dialer(),
        ssh_ctx,
        Duration::from_secs(15),
    ))
}

/// The module's effective snippets storage.
fn snippets_storage(pf: &Preflighted) -> String {
    pf.resolved
        .model
        .snippets_datastore_id
        .clone()
        .unwrap_or_else(|| pf.creds.storage_snippets.clone())
}

async fn apply_engine(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    plan_file: Option<&Path>,
    stop: &Stop,
) -> Result<ApplyRun, CliError> {
    // Observing Proxmox changes nothing: a stop request abandons it at once.
    let plan = stop.race(make_plan(ctx, run, pf)).await.map_err(|sig| {
        CliError::cancelled(format!(
            "apply cancelled by the operator ({sig}) while observing Proxmox, before any change"
        ))
    })??;
    if let Some(path) = plan_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::msg(format!("cannot read plan file {}: {e}", path.display())))?;
        let saved: PlanArtifact = serde_json::from_str(&text).map_err(|e| {
            CliError::msg(format!(
                "plan file {} is not a hyops-pve plan: {e}",
                path.display()
            ))
        })?;
        saved
            .check_still_valid(&plan, &path.display().to_string())
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    print_plan(ctx, &plan);
    let journal = Journal::open(&run.evidence.join("apply_journal.jsonl"), &run.run_id)
        .map_err(|e| CliError::msg(e.to_string()))?;
    let (progress, bar) = progress_for(plan.vms.len(), false);
    let readiness = &pf.resolved.model.readiness;
    let timeouts = Timeouts {
        // `enabled: false` means no readiness wait at all (not even for the guest agent).
        agent_wait: if readiness.enabled {
            Duration::from_secs(readiness.connectivity_wait_s)
        } else {
            Duration::ZERO
        },
        ..Timeouts::default()
    }
    .scaled(ctx.time_scale());
    // Snippets first: every file a VM will point at is on its node before any config write.
    let mut warnings = Vec::new();
    let snippet_ssh = if pf.resolved.model.cloud_init_mode == CloudInitMode::Snippets
        && !pf.resolved.model.is_windows()
        && apply_snippets::touches_vms(&plan)
    {
        let ssh = node_ssh(ctx, &pf.creds)?;
        let delivered = apply_snippets::deliver(&ssh, &plan).await.map_err(|e| {
            CliError::msg(format!(
                "cloud-init snippet upload failed before any VM was changed: {e}"
            ))
        })?;
        if !delivered.uploaded.is_empty() {
            output::progress(&format!(
                "snippets: {} uploaded, {} already in place",
                delivered.uploaded.len(),
                delivered.present
            ));
        }
        Some(ssh)
    } else {
        None
    };
    let exec = Arc::new(Executor::new(
        pf.client.clone(),
        Scheduler::new(limits(ctx, &pf.resolved.model)),
        Arc::new(journal),
        timeouts,
        progress,
    ));
    let module_node = pf
        .resolved
        .model
        .node_name
        .clone()
        .unwrap_or_else(|| pf.creds.node.clone());
    let prior = prior_ids(ctx)?;
    let ident = identity(ctx);
    let previous_outputs = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .read()
        .map_err(CliError::hyops)?
        .and_then(|s| s.get("outputs").cloned());
    let apply = engine::apply_plan(
        &exec,
        &plan,
        &module_node,
        &pf.resolved.model.tags,
        Some(engine::VerifyRequest {
            identity: &ident,
            prior: &prior,
            previous_outputs: previous_outputs.as_ref(),
        }),
    );
    let report = run_cancellable(&exec, stop, apply).await;
    let report = match report {
        Ok(r) => r,
        Err(sig) => {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(CliError::cancelled(format!("apply cancelled by the operator ({sig}); every started step was ended and journalled; VMs already created carry the ownership marker and are adopted by the next apply")));
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(ssh) = snippet_ssh {
        match apply_snippets::cleanup(
            &ssh,
            &exec.client,
            &plan,
            &report.outcomes,
            &snippets_storage(pf),
        )
        .await
        {
            Ok(r) if !r.removed.is_empty() => output::progress(&format!(
                "snippets: {} stale file(s) removed",
                r.removed.len()
            )),
            Ok(_) => {}
            Err(e) => warnings.push(format!(
                "stale cloud-init snippet files were not removed: {e}"
            )),
        }
        ssh.close().await;
    }
    Ok(ApplyRun {
        plan,
        report,
        warnings,
    })
}

/// The post-apply SSH readiness gate over this apply's outputs.
async fn readiness_gate(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    report: &ApplyReport,
) -> GateReport {
    let api_ip = read_proxmox_ready(&ctx.root)
        .ok()
        .flatten()
        .and_then(|r| r.api_ip);
    let env = GateEnv {
        proxmox_api_ip: api_ip,
        proxmox_ssh_username: Some(pf.creds.ssh_username.clone()),
        evidence_dir: run.evidence.clone(),
        dialer: ctx.dialer(),
        known_hosts: ctx.known_hosts(),
        default_identities: ctx.default_identities(),
        vm_identities: Default::default(),
        home: ctx.env_vars.get("HOME").map(PathBuf::from),
        retry_interval: Duration::from_secs(3),
        max_parallel: 16,
        time_scale: ctx.time_scale(),
    };
    output::progress("progress: phase=post_apply_ssh_readiness");
    let gate = crate::apply::readiness::post_apply_readiness(
        &pf.resolved.model.readiness,
        &report.outputs,
        &report.outcomes,
        env,
    )
    .await;
    {
        let proxy = gate
            .summary
            .get("effective_proxy")
            .and_then(|p| p.get("host"))
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .map(|h| format!(" via {h}"))
            .unwrap_or_default();
        let n = gate
            .summary
            .get("targets")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0);
        output::progress(&format!(
            "post-apply SSH readiness: {} ({n} target(s){proxy}; see {})",
            gate.status(),
            run.evidence.join(crate::ssh::gate::SUMMARY_FILE).display()
        ));
    }
    gate
}

/// How long the steps get to end (journalled) after Ctrl-C before the run stops anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(20);

/// A stop request for one mutating run: SIGINT (Ctrl-C) or SIGTERM (a CI job cancelled,
/// `timeout`, systemd), watched from the run's start to its end, so a signal in any phase
/// (observing Proxmox, the rollout, the readiness gate) is seen instead of killing the
/// process with the state left `running`. Once watched, a signal no longer ends the process
/// by itself (tokio keeps its handler): every phase of the run must race [`Stop::requested`].
pub(crate) struct Stop {
    token: crate::retry::CancellationToken,
    signal: Arc<std::sync::OnceLock<&'static str>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Stop {
    /// Start watching (inside the async runtime).
    pub(crate) fn watch() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let token = crate::retry::CancellationToken::new();
        let which = Arc::new(std::sync::OnceLock::new());
        let (t, w) = (token.clone(), which.clone());
        // Registered here, before the task runs: a signal right after `watch` is not lost.
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        let watcher = tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term)) = (int, term) else {
                // Signals cannot be watched: the default dispositions (terminate) stay.
                return;
            };
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            let _ = w.set(name);
            t.cancel();
        });
        Stop {
            token,
            signal: which,
            watcher,
        }
    }

    /// Resolves once a stop was requested; names the signal.
    pub(crate) async fn requested(&self) -> &'static str {
        self.token.cancelled().await;
        self.signal.get().copied().unwrap_or("SIGINT")
    }

    /// Run `work` unless a stop comes first (then `work` is dropped: only for phases that
    /// change nothing, or whose every write is safe to abandon).
    pub(crate) async fn race<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, &'static str> {
        tokio::select! {
            r = work => Ok(r),
            sig = self.requested() => Err(sig),
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Run `work` until it ends or a stop request: then fire the executor's cancellation token,
/// let the steps end and journal themselves (bounded by [`CANCEL_GRACE`]), and return the
/// signal's name.
async fn run_cancellable<T>(
    exec: &Arc<Executor>,
    stop: &Stop,
    work: impl std::future::Future<Output = T>,
) -> Result<T, &'static str> {
    tokio::pin!(work);
    let sig = tokio::select! {
        r = &mut work => return Ok(r),
        sig = stop.requested() => sig,
    };
    exec.cancel.cancel();
    let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
    Err(sig)
}

#[allow(clippy::too_many_arguments)]
fn finish_apply(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    state: &ModuleState,
    applied: ApplyRun,
    gate: Option<GateReport>,
    input_contract: Value,
    resolved_file: PathBuf,
) -> Result<String, CliError> {
    let plan = &applied.plan;
    let report = applied.report;
    let mut warnings = plan.warnings.clone();
    for w in &applied.warnings {
        output::warn(w);
    }
    warnings.extend(applied.warnings);
    let report_value = json!({
        "run_id": run.run_id,
        "failed": report.failed,
        "converged": report.divergences.is_empty(),
        "divergences": report.divergences,
        "writes": report.writes,
        "api_calls": report.api_calls,
        "summary": plan.summary,
        "vms": report.outcomes,
    });
    write_json_atomic(&run.evidence.join("apply_report.json"), &report_value)
        .map_err(CliError::hyops)?;
    let mut normalized = Map::new();
    normalized.insert("outputs".into(), report.outputs.clone());
    normalized.insert("command".into(), json!("apply"));
    normalized.insert("plan_summary".into(), json!(plan.summary));
    normalized.insert("writes".into(), json!(report.writes));
    output::record_warnings(&plan.warnings);
    output::field("plan_summary", json!(plan.summary));
    output::field("writes", json!(report.writes));
    output::field("api_calls", json!(report.api_calls));
    output::field("vms", json!(report.outcomes));
    if let Some(err) = report.error_summary() {
        // Each VM's error was shown once as it happened (progress) and is kept in full in
        // apply_report.json, driver_result.json and the envelope's `vms`; the state and the
        // ERR line get the one-line summary.
        let _ = state.persist_error("apply", &err);
        let mut result = DriverResult::error(&run.run_id, "apply", &err);
        result.normalized_outputs = normalized;
        result
            .normalized_outputs
            .insert("vms".into(), json!(report.outcomes));
        result.warnings = warnings;
        let _ = write_driver_result(&run.evidence, &result);
        return Err(CliError::msg(format!(
            "apply failed: {err}; per-VM errors: {}",
            run.evidence.join("apply_report.json").display()
        )));
    }
    if let Some(g) = gate {
        normalized.insert("post_apply_ssh_readiness".into(), g.summary.clone());
        output::field("post_apply_ssh_readiness", g.summary.clone());
        for w in &g.warnings {
            output::warn(w);
        }
        warnings.extend(g.warnings.iter().cloned());
        if let Some(e) = &g.error {
            // Required gate failed: state error, the new outputs are not published (§5.6).
            let msg = required_failure_message(e);
            let _ = state.persist_error("apply", &msg);
            let mut result = DriverResult::error(&run.run_id, "apply", &msg);
            result.normalized_outputs = normalized;
            result.warnings = warnings.clone();
            let _ = write_driver_result(&run.evidence, &result);
            return Err(CliError::msg(msg));
        }
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
    let mut result = DriverResult::ok(&run.run_id, "apply", normalized);
    result.warnings = warnings.clone();
    write_driver_result(&run.evidence, &result).map_err(CliError::hyops)?;
    write_json_atomic(&run.evidence.join("result.json"), &result.to_value())
        .map_err(CliError::hyops)?;
    output::field("outputs", json!(published));
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
    let reason = check_bypass("destroy", bypass)?;
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
    let creds = ctx.credentials()?;
    // Validation is skipped on destroy; the lenient model only supplies names.
    let resolved = resolve(ctx, LifecycleCommand::Destroy, Some(&creds))?;
    write_inputs_evidence(ctx, &run, "destroy", &resolved)?;
    decision.complete(true, None);
    decision.write(&run.evidence).map_err(CliError::hyops)?;
    let client = ctx.client(&creds)?;
    let prior = prior_ids(ctx)?;
    let names: BTreeSet<String> = resolved
        .model
        .vms
        .values()
        .map(|v| v.physical_name.0.clone())
        .collect();
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    let contract = build_input_contract(&resolved.resolved_json);
    state
        .persist_running(&RunningRecord {
            run_id: run.run_id.clone(),
            command: "destroy".into(),
            evidence_dir: run.evidence.clone(),
            input_contract: contract.clone(),
            rerun_inputs_file: None,
            resolved_inputs_file: Some(run.evidence.join("resolved.inputs.yml")),
        })
        .map_err(|e| {
            CliError::msg(format!(
                "cannot record the running state (the destroy is aborted before any change): {e}"
            ))
        })?;
    let fail = |msg: String| {
        let _ = state.persist_error("destroy", &msg);
        let _ = write_driver_result(
            &run.evidence,
            &DriverResult::error(&run.run_id, "destroy", &msg),
        );
        msg
    };
    let journal = match Journal::open(&run.evidence.join("apply_journal.jsonl"), &run.run_id) {
        Ok(j) => j,
        Err(e) => return Err(CliError::msg(fail(e.to_string()))),
    };
    let (progress, bar) = progress_for(names.len().max(prior.hyops.len()), false);
    let exec = Arc::new(Executor::new(
        client,
        Scheduler::new(limits(ctx, &resolved.model)),
        Arc::new(journal),
        Timeouts::default().scaled(ctx.time_scale()),
        progress,
    ));
    let ident = identity(ctx);
    let work = engine::destroy(&exec, &ident, &prior, &names);
    let report = run_cancellable(&exec, &stop, work).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = match report {
        Err(sig) => {
            let msg = fail(format!("destroy cancelled by the operator ({sig}); every started step was ended and journalled; run destroy again to remove the rest"));
            return Err(CliError::cancelled(msg));
        }
        Ok(Err(e)) => return Err(CliError::msg(fail(e.to_string()))),
        Ok(Ok(r)) => r,
    };
    write_json_atomic(
        &run.evidence.join("destroy_report.json"),
        &json!({"run_id": run.run_id, "vms": report.outcomes, "warnings": report.warnings}),
    )
    .map_err(CliError::hyops)?;
    output::field("vms", json!(report.outcomes));
    // After the VMs are gone (even when others failed): their known_hosts entries and
    // cloud-init snippet files go too.
    let mut report = report;
    let destroyed: Vec<(String, String, u32)> = report
        .outcomes
        .iter()
        .filter(|o| o.status == "ok")
        .filter_map(|o| {
            let name = report.names.get(&o.key)?;
            Some((o.node.clone(), name.clone(), o.vmid?))
        })
        .collect();
    let vmids: Vec<u32> = destroyed.iter().map(|d| d.2).collect();
    if !vmids.is_empty() {
        if let Err(e) = ctx.known_hosts().forget_vmids(&vmids) {
            report.warnings.push(format!(
                "known_hosts entries of destroyed VMs were not removed: {e}"
            ));
        }
    }
    if !destroyed.is_empty()
        && resolved.model.cloud_init_mode == CloudInitMode::Snippets
        && !resolved.model.is_windows()
    {
        let storage = resolved
            .model
            .snippets_datastore_id
            .clone()
            .unwrap_or_else(|| creds.storage_snippets.clone());
        let cleaned = match node_ssh(ctx, &creds) {
            Ok(ssh) => {
                let r = apply_snippets::remove_destroyed(&ssh, &exec.client, &destroyed, &storage)
                    .await;
                ssh.close().await;
                r.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.message),
        };
        match cleaned {
            Ok(r) if !r.removed.is_empty() => output::progress(&format!(
                "snippets: {} file(s) of destroyed VMs removed",
                r.removed.len()
            )),
            Ok(_) => {}
            Err(e) => report.warnings.push(format!(
                "cloud-init snippet files of destroyed VMs were not removed: {e}"
            )),
        }
    }
    if report.failed {
        let failed: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| o.status != "ok")
            .map(|o| format!("{}: {}", o.key, o.error.clone().unwrap_or_default()))
            .collect();
        let msg = fail(format!(
            "destroy failed: {}; per-VM errors: {}",
            crate::apply::engine::summarize_failures(&failed, report.outcomes.len()),
            run.evidence.join("destroy_report.json").display()
        ));
        return Err(CliError::msg(msg));
    }
    let value = state
        .persist_destroyed(&run.run_id, &run.evidence, &contract)
        .map_err(CliError::hyops)?;
    write_module_state_record(&run.evidence, state.path(), &value, None)
        .map_err(CliError::hyops)?;
    let mut normalized = Map::new();
    normalized.insert("outputs".into(), json!({}));
    normalized.insert("command".into(), json!("destroy"));
    normalized.insert(
        "destroyed".into(),
        json!(report
            .outcomes
            .iter()
            .map(|o| json!({"key": o.key, "vmid": o.vmid}))
            .collect::<Vec<_>>()),
    );
    let mut result = DriverResult::ok(&run.run_id, "destroy", normalized);
    result.warnings = report.warnings.clone();
    write_driver_result(&run.evidence, &result).map_err(CliError::hyops)?;
    for w in &report.warnings {
        output::warn(w);
    }
    output::field(
        "destroyed",
        result
            .normalized_outputs
            .get("destroyed")
            .cloned()
            .unwrap_or(Value::Null),
    );
    output::field("state_file", json!(state.path().display().to_string()));
    output::result_line(&format!(
        "destroy ok: {} VM(s) removed",
        report.outcomes.len()
    ));
    Ok(run.run_id.clone())
}

/// `hyops-pve state show`: reads the slot's state file; starts nothing, creates nothing.
pub async fn state_show(args: &StateShowArgs) -> Result<i32, CliError> {
    let env_vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
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
