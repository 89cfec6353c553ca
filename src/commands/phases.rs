//! The engine path every module command runs, shared by the CLI commands
//! ([`super::module`], [`super::rebuild`]) and the HyOps driver mode ([`super::driver`]):
//! opening the run (run id, evidence dir, slot lock), resolving the inputs, the preflight
//! phase, the plan, executing it and destroying. Each phase writes the engine's evidence
//! (`plan.json`, the journal, the reports, `driver_result.json`) and returns a driver-shaped
//! result ([`DriverResult`], contract §3.3).
//!
//! It never writes HyOps module state (`latest.json`, rerun inputs): in the CLI that is
//! [`super::module`]'s job, in driver mode it is hyops'. It prints to stdout only through
//! [`Ctx::human`] (never in driver mode, where stdout carries the result).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::apply::engine::{self, ApplyReport, DestroyReport, PlanRequest, SlotIdentity};
use crate::apply::executor::{Executor, KnownVm, Timeouts};
use crate::apply::journal::Journal;
use crate::apply::limits::{Limits, Scheduler};
use crate::apply::snippets as apply_snippets;
use crate::commands::context::Ctx;
use crate::commands::evidence_loss;
use crate::commands::ipam::{self, IpamOutcome, IpamPrepared};
use crate::commands::netbox_sync;
use crate::commands::output;
use crate::commands::progress::progress_for;
use crate::commands::stop::Stop;
use crate::commands::CliError;
use crate::hyops::read_proxmox_ready;
use crate::hyops::state_refs::RootStateContracts;
use crate::hyops::{
    self, acquire_lock, check_vm_set_guards, evidence_dir, new_run_id, read_tfstate_vms,
    resolve_template, template_source_hint, write_driver_result, write_inputs_resolved,
    write_json_atomic, write_meta, write_text_atomic, DetachedVms, DriverResult, EvidenceFailure,
    EvidenceFailures, ModuleState, PreflightOptions, ProxmoxCredentials, RunLock, RunPrefix,
};
use crate::inputs::model::{
    CloudInitMode, ConcurrencyLimits, LogicalVmKey, ModuleInputs, TemplateSource,
};
use crate::inputs::{
    resolve_inputs_with_warnings, resolve_prepared_inputs, LifecycleCommand, ResolveRequest,
    ResolvedInputs, StateHooks,
};
use crate::plan::artifact::PlanArtifact;
use crate::plan::checks::check_inputs;
use crate::plan::desired::TargetDefaults;
use crate::plan::diff::VmAction;
use crate::plan::observed::{ClusterShape, ObservedPool, PriorIds};
use crate::plan::render::render;
use crate::pve::PveClient;
use crate::ssh::gate::{required_failure_message, GateEnv, GateReport};
use crate::ssh::node::{NodeSsh, NodeSshTarget};
use crate::ssh::SshContext;

/// One module run's frame: its id, evidence dir, (for mutating commands) the slot lock, and
/// the evidence writes that failed once it had changed something (see
/// [`super::evidence_loss`]: the run goes on to its state record and fails at its end).
pub struct Run {
    pub run_id: String,
    pub evidence: PathBuf,
    pub _lock: Option<RunLock>,
    pub evidence_failures: EvidenceFailures,
}

impl Run {
    /// True when this run holds the slot lock (mutating commands).
    pub fn holds_lock(&self) -> bool {
        self._lock.is_some()
    }
}

/// Open the run: a new run id and evidence dir (CLI), or the ones hyops chose (driver mode);
/// with `lock`, the slot lock, waiting up to `--lock-wait-s`.
pub fn start_run(ctx: &Ctx, prefix: RunPrefix, lock: bool) -> Result<Run, CliError> {
    let (run_id, evidence) = match &ctx.driver {
        Some(frame) => (frame.run_id.clone(), frame.evidence_dir.clone()),
        None => {
            let run_id = new_run_id(prefix);
            let evidence = evidence_dir(
                &ctx.root,
                ctx.args.out_dir.as_deref(),
                &ctx.module_ref,
                &run_id,
            );
            (run_id, evidence)
        }
    };
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
        evidence_failures: EvidenceFailures::default(),
    })
}

/// The inputs for `command`: the overlay resolved from scratch (CLI; the unknown-key
/// warnings are shown next to a refusal, as they often explain it), or the inputs hyops
/// already resolved (driver mode; this engine's own steps still run).
pub fn resolve(
    ctx: &Ctx,
    command: LifecycleCommand,
    creds: Option<&ProxmoxCredentials>,
) -> Result<ResolvedInputs, CliError> {
    let req = resolve_request(ctx, command, creds);
    let resolved = match &ctx.driver {
        // hyops validated these inputs already; its messages stay single-line and verbatim.
        Some(frame) => resolve_prepared_inputs(&req, &frame.inputs)
            .map_err(|e| CliError::msg(e.to_string()))?,
        None => {
            let (early_warnings, result) = resolve_inputs_with_warnings(&req);
            result.map_err(|e| {
                // The unknown-key warnings often explain the refusal (`memroy_mb`).
                for w in &early_warnings {
                    output::warn(w);
                }
                CliError::msg(crate::commands::hints::explain(&e, &req))
            })?
        }
    };
    if command.runs_validator() {
        // Catch before write: everything Proxmox would refuse, all problems at once. hyops
        // does not check these (it lets Proxmox refuse them after a clone), so the driver
        // runs them on hyops' inputs too.
        let defaults = creds.map(defaults_from);
        check_inputs(&resolved.model, defaults.as_ref())
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    Ok(resolved)
}

/// The resolution request of this run: its overlay, env (in process order), runtime env,
/// credentials bridge and the state references read from the runtime root.
pub fn resolve_request(
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

/// The inputs evidence. In driver mode hyops writes `meta.json`, `inputs_resolved.json` and
/// `resolved.inputs.yml` itself; the driver records what it ran with (after its contract
/// steps, e.g. bridge alias rewrites) in `driver_inputs.json`.
pub fn write_inputs_evidence(
    ctx: &Ctx,
    run: &Run,
    command: &str,
    resolved: &ResolvedInputs,
) -> Result<(), CliError> {
    if ctx.driver.is_some() {
        write_json_atomic(
            &run.evidence.join("driver_inputs.json"),
            &json!({
                "command": command,
                "module_ref": ctx.module_ref.as_str(),
                "state_instance": ctx.instance.as_ref().map_or("", |i| i.as_str()),
                "inputs": resolved.resolved_json,
                "warnings": resolved.warnings,
            }),
        )
        .map_err(CliError::hyops)?;
        return Ok(());
    }
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
pub fn template_vmid(
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
pub fn vm_set_guards(ctx: &Ctx, model: &ModuleInputs) -> Result<hyops::GuardOutcome, CliError> {
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

/// VMIDs recorded for this slot by previous HyOps and Terraform runs, and the VMIDs
/// `hyops state detach` made this slot forget.
pub fn prior_ids(ctx: &Ctx) -> Result<PriorIds, CliError> {
    let mut prior = PriorIds::default();
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    if let Some(s) = state.read_prior_view().map_err(CliError::hyops)? {
        let outputs = s.get("outputs").unwrap_or(&Value::Null);
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
                let addrs: Option<Vec<Vec<std::net::Ipv4Addr>>> = outputs
                    .get("vms")
                    .and_then(|vms| vms.get(k))
                    .and_then(|vm| vm.get("ipv4_addresses"))
                    .and_then(Value::as_array)
                    .map(|ifaces| {
                        ifaces
                            .iter()
                            .filter_map(Value::as_array)
                            .map(|l| {
                                l.iter()
                                    .filter_map(|a| a.as_str().and_then(|a| a.parse().ok()))
                                    .collect()
                            })
                            .collect()
                    });
                if let Some(a) = addrs.filter(|a: &Vec<Vec<_>>| a.iter().any(|l| !l.is_empty())) {
                    prior.agent_ipv4.insert(LogicalVmKey(k.clone()), a);
                }
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
    let detached = DetachedVms::read(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .map_err(CliError::hyops)?;
    prior.detached = detached.vmids();
    // A detached VM is forgotten: its VMID no longer names it in any prior state either.
    prior
        .hyops
        .retain(|_, (id, _)| !prior.detached.contains(id));
    prior.terraform.retain(|_, id| !prior.detached.contains(id));
    Ok(prior)
}

/// Drop detach records whose VM no longer exists in the cluster (its VMID may be reused by
/// a VM that must not be ignored). Only a run holding the slot lock rewrites the record.
pub fn prune_detached(ctx: &Ctx, run: &Run, observed: &ObservedPool) -> Result<(), CliError> {
    if !run.holds_lock() {
        return Ok(());
    }
    let mut detached = DetachedVms::read(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .map_err(CliError::hyops)?;
    if detached.retain_present(|vmid| observed.all_vms.contains_key(&vmid)) {
        detached
            .write(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
            .map_err(CliError::hyops)?;
    }
    Ok(())
}

/// The ownership identity of this slot.
pub fn identity(ctx: &Ctx) -> SlotIdentity {
    SlotIdentity {
        env: ctx.owner_env(),
        module_ref: ctx.module_ref.as_str().to_string(),
        slot: ctx.slot(),
    }
}

/// Scheduling limits: flags over `inputs.limits` over the defaults.
pub fn limits(ctx: &Ctx, inputs: &ModuleInputs) -> Limits {
    Limits::resolve(
        &inputs.limits,
        &ConcurrencyLimits {
            global: ctx.args.max_parallel,
            per_node: ctx.args.max_per_node,
            per_storage: ctx.args.max_per_storage,
        },
    )
}

/// The Proxmox client for `creds`, after one `GET /version` proves the API answers the token.
pub async fn reachable_client(
    ctx: &Ctx,
    creds: &ProxmoxCredentials,
) -> Result<PveClient, CliError> {
    let client = ctx.client(creds)?;
    client.version().await.map_err(|e| {
        let mut msg = format!(
            "preflight failed: Proxmox API at {} is not reachable with the configured token: {e}",
            creds.url
        );
        if let Some(fix) = connect_fix(&e, creds, &ctx.root) {
            msg.push_str(&format!("\n  fix: {fix}"));
        }
        CliError::msg(msg)
    })?;
    Ok(client)
}

/// What to do when the first API call fails for a reason the operator fixes in the
/// credentials: an untrusted or changed certificate, a refused token.
fn connect_fix(
    e: &crate::pve::PveError,
    creds: &ProxmoxCredentials,
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

/// What the plan observed that the executor starts from: the cluster's shape (its windows'
/// sizes) and the configs the plan read (no re-reads). Empty: derived defaults, reads as needed.
#[derive(Default)]
pub struct Observed {
    pub shape: ClusterShape,
    pub known: HashMap<String, KnownVm>,
}

/// Everything checked before a mutating run, without changing anything.
pub struct Preflighted {
    pub creds: ProxmoxCredentials,
    pub resolved: ResolvedInputs,
    pub template_vmid: u32,
    pub template_hint: String,
    pub deletion_only_shrink: bool,
    pub warnings: Vec<String>,
    pub client: PveClient,
    pub checks: hyops::PreflightReport,
    /// IPAM overlays: the NetBox client, SDN authority and per-NIC requests (read-only
    /// checks done).
    pub ipam: Option<IpamPrepared>,
}

impl Preflighted {
    /// The module's node: `inputs.node_name`, else the credentials' node.
    pub fn module_node(&self) -> String {
        self.resolved
            .model
            .node_name
            .clone()
            .unwrap_or_else(|| self.creds.node.clone())
    }

    /// The executor for a plan of `total` VMs, waiting up to `agent_wait` for guest-agent
    /// addresses after a start, its windows sized from `shape`, starting from what the plan
    /// read (`known`).
    pub fn executor(
        &self,
        ctx: &Ctx,
        run: &Run,
        agent_wait: Duration,
        total: usize,
        seen: Observed,
    ) -> Result<(Arc<Executor>, Option<indicatif::ProgressBar>), CliError> {
        let timeouts = Timeouts {
            agent_wait,
            ..Timeouts::default()
        };
        executor(
            ctx,
            run,
            self.client.clone(),
            &self.resolved.model,
            timeouts,
            total,
            seen,
        )
    }
}

/// API-free checks, inputs, guards, template state, then Proxmox reachability, then the SDN
/// and IPAM checks ([`preflight_sdn_ipam`]).
/// With `bypassed` (an operator-approved `--skip-preflight`, or a driver-mode apply whose
/// preflight hyops already ran), failed API-free checks become warnings; what the engine
/// itself needs (inputs, credentials, template, guards) still runs.
pub async fn preflight_phase(
    ctx: &Ctx,
    run: &Run,
    command: LifecycleCommand,
    strict: bool,
    bypassed: bool,
) -> Result<Preflighted, CliError> {
    let mut offline = preflight_offline(ctx, run, command, strict, bypassed)?;
    let client = reachable_client(ctx, &offline.creds).await?;
    let ipam = preflight_sdn_ipam(ctx, &mut offline).await?;
    Ok(Preflighted {
        creds: offline.creds,
        resolved: offline.resolved,
        template_vmid: offline.template_vmid,
        template_hint: offline.template_hint,
        deletion_only_shrink: offline.deletion_only_shrink,
        warnings: offline.warnings,
        client,
        checks: offline.checks,
        ipam,
    })
}

/// The preflight checks after the template, none of them a Proxmox API call: in upstream's
/// order, the SDN managed-bridge guard (every mode, with the host-side gateway probe over
/// node SSH), then the IPAM checks (readiness, credentials, probe, explicit addresses).
/// Read-only: nothing is reserved here. Their warnings join `offline.warnings`.
pub async fn preflight_sdn_ipam(
    ctx: &Ctx,
    offline: &mut OfflinePreflight,
) -> Result<Option<IpamPrepared>, CliError> {
    let bridge_warnings =
        ipam::bridge_guard(ctx, &offline.resolved.resolved_json, Some(&offline.creds)).await?;
    for w in &bridge_warnings {
        output::warn(w);
    }
    offline.warnings.extend(bridge_warnings);
    ipam::ipam_prepare(
        ctx,
        &offline.resolved.model,
        &offline.resolved.resolved_json,
        &mut offline.warnings,
    )
    .await
}

/// What [`preflight_offline`] checked: everything of [`Preflighted`] but the client.
pub struct OfflinePreflight {
    pub creds: ProxmoxCredentials,
    pub resolved: ResolvedInputs,
    pub template_vmid: u32,
    pub template_hint: String,
    pub deletion_only_shrink: bool,
    pub warnings: Vec<String>,
    pub checks: hyops::PreflightReport,
}

/// The API-free part of [`preflight_phase`]: inputs, credentials, the preflight checks, the
/// VM-set guards and the template from its state; no Proxmox call. What a `validate` needs
/// (upstream's driver preflight is API-free too, so `hyops validate` works on a runner that
/// cannot reach Proxmox).
pub fn preflight_offline(
    ctx: &Ctx,
    run: &Run,
    command: LifecycleCommand,
    strict: bool,
    bypassed: bool,
) -> Result<OfflinePreflight, CliError> {
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
    Ok(OfflinePreflight {
        creds,
        resolved,
        template_vmid,
        template_hint,
        deletion_only_shrink: guard.deletion_only_shrink,
        warnings,
        checks: report,
    })
}

/// How long observing waits for a VM under `lock: clone`, scaled by the engine's time scale
/// like every other deadline.
pub fn clone_lock_wait(ctx: &Ctx) -> Duration {
    crate::plan::observe::CLONE_LOCK_WAIT.mul_f64(ctx.time_scale())
}

/// `plan`: observe and diff without changing anything anywhere. For IPAM overlays NetBox is
/// only read: addresses it holds for this slot's identities are reused, the rest show as
/// pending ("allocate (first free in <range>)").
pub async fn plan_phase(ctx: &Ctx, run: &Run, pf: &Preflighted) -> Result<PlanArtifact, CliError> {
    let preview = match &pf.ipam {
        Some(p) => Some(ipam::ipam_preview(p, &pf.resolved.model).await?),
        None => None,
    };
    make_plan(ctx, run, pf, preview.as_ref()).await
}

/// Observe Proxmox and diff: `plan.json` and `plan.txt` in the evidence dir. `ipam` is the
/// NetBox side (allocated or previewed addresses, the per-NIC decisions) of IPAM overlays.
pub async fn make_plan(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    ipam: Option<&IpamOutcome>,
) -> Result<PlanArtifact, CliError> {
    Ok(make_plan_observed(ctx, run, pf, ipam).await?.0.plan)
}

/// [`make_plan`], keeping what was observed to make it (the executor starts from the
/// configs the plan read and sizes its windows from the cluster's shape) and the prior ids.
pub async fn make_plan_observed(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    ipam: Option<&IpamOutcome>,
) -> Result<(engine::Planned, PriorIds), CliError> {
    let prior = prior_ids(ctx)?;
    let defaults = defaults_from(&pf.creds);
    let ident = identity(ctx);
    let no_pending = Default::default();
    let req = PlanRequest {
        inputs: ipam.map(|o| &o.model).unwrap_or(&pf.resolved.model),
        ipam_pending: ipam.map(|o| &o.pending).unwrap_or(&no_pending),
        identity: &ident,
        defaults: &defaults,
        template_vmid: pf.template_vmid,
        template_source_hint: pf.template_hint.clone(),
        deletion_only_shrink: pf.deletion_only_shrink,
        prior: &prior,
        run_id: &run.run_id,
        env: ctx.env_name.as_deref(),
        state_instance: ctx.instance.as_ref().map(|i| i.as_str()),
        clone_lock_wait: clone_lock_wait(ctx),
    };
    let mut planned = engine::make_plan(&pf.client, &req)
        .await
        .map_err(|e| CliError::msg(e.to_string()))?;
    prune_detached(ctx, run, &planned.observed)?;
    let plan = &mut planned.plan;
    let mut warnings = pf.warnings.clone();
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    if let Some(o) = ipam {
        plan.ipam = o.decisions.clone();
    }
    // Nothing has changed in Proxmox yet: a plan that cannot be recorded stops the run here.
    write_plan_json(&run.evidence.join("plan.json"), plan).map_err(plan_not_recorded)?;
    write_text_atomic(&run.evidence.join("plan.txt"), &render(plan, false))
        .map_err(|e| plan_not_recorded(CliError::hyops(e)))?;
    Ok((planned, prior))
}

/// A plan file that could not be written: the run stops before its first Proxmox change.
fn plan_not_recorded(e: CliError) -> CliError {
    CliError {
        message: format!(
            "cannot record the plan, so no VM was changed: {}",
            e.message
        ),
        code: e.code,
    }
}

/// Record the lines the executor's journal could not write among the run's evidence failures.
fn record_journal_loss(run: &Run, exec: &Executor) {
    if let Some(loss) = exec.journal.loss() {
        run.evidence_failures.record(EvidenceFailure {
            path: loss.path.clone(),
            error: loss.first_error.clone(),
            detail: Some(format!(
                "{} of {} line(s) lost",
                loss.lines,
                loss.lines + loss.written
            )),
            storage_full: loss.storage_full,
        });
    }
}

/// Write `plan.json` streamed to disk, one VM at a time: the same bytes as rendering the
/// whole plan, without ever holding it as JSON (10 000 VMs make a 43 MB file).
pub fn write_plan_json(path: &Path, plan: &mut PlanArtifact) -> Result<(), CliError> {
    let vms = std::mem::take(&mut plan.vms);
    let head = serde_json::to_value(&*plan);
    plan.vms = vms;
    let head = head.map_err(|e| CliError::msg(format!("cannot serialise the plan: {e}")))?;
    hyops::fsio::write_atomic_with(path, |w| {
        hyops::fsio::write_json_streamed(
            w,
            &head,
            "vms",
            plan.vms
                .iter()
                .map(|v| serde_json::to_value(v).map_err(std::io::Error::other)),
        )
    })
    .map_err(CliError::hyops)
}

/// Print the plan for a human (nothing with `--json`, nor in driver mode, which runs outside
/// a CLI command's output).
pub fn print_plan(plan: &PlanArtifact) {
    if output::is_json() {
        return;
    }
    let color = output::colour_stdout();
    output::result_text(&render(plan, color));
}

/// The executor for this run: the journal in the evidence dir, the progress display, the
/// scheduling limits.
fn executor(
    ctx: &Ctx,
    run: &Run,
    client: PveClient,
    inputs: &ModuleInputs,
    timeouts: Timeouts,
    total: usize,
    seen: Observed,
) -> Result<(Arc<Executor>, Option<indicatif::ProgressBar>), CliError> {
    let journal = Journal::open(&run.evidence.join("apply_journal.jsonl"), &run.run_id)
        .map_err(|e| {
            if hyops::error::io_storage_full(&e.source) {
                CliError::msg(format!(
                    "{e}; local runtime storage is full: free disk space, then run the command again"
                ))
            } else {
                CliError::msg(e.to_string())
            }
        })?;
    let (progress, bar) = progress_for(total, false);
    let mut exec = Executor::new(
        client,
        Scheduler::new(limits(ctx, inputs), seen.shape),
        Arc::new(journal),
        timeouts.scaled(ctx.time_scale()),
        progress,
    );
    exec.known = std::sync::Mutex::new(seen.known);
    Ok((Arc::new(exec), bar))
}

/// What the apply phases produced: the plan, the engine report, and warnings from the
/// phases around the rollout (snippet cleanup).
pub struct ApplyRun {
    pub plan: PlanArtifact,
    pub report: ApplyReport,
    pub warnings: Vec<String>,
}

/// Node SSH for this root: the API host (`proxmox.ready.json` `api_ip`, else the
/// `proxmox_url` host) as the credentials' node, `proxmox_ssh_username`, the credentials' key.
pub(crate) fn node_ssh(ctx: &Ctx, creds: &ProxmoxCredentials) -> Result<NodeSsh, CliError> {
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
fn snippets_storage(model: &ModuleInputs, creds: &ProxmoxCredentials) -> String {
    model
        .snippets_datastore_id
        .clone()
        .unwrap_or_else(|| creds.storage_snippets.clone())
}

/// Plan (checking a saved plan when given), deliver the cloud-init snippets, execute the
/// plan and verify it converged ([`engine::verify_converged`]: a divergence fails the
/// apply, naming the VM and the field), clean up stale snippets. A stop request (SIGINT,
/// SIGTERM) abandons the observation, or cancels the rollout with a message saying the
/// created VMs are adopted by the next apply.
pub async fn execute_plan(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    plan_file: Option<&Path>,
    stop: &Stop,
) -> Result<ApplyRun, CliError> {
    // IPAM (apply/deploy only): reserve or reuse every address before planning. A stop
    // request abandons it: what was reserved so far carries this slot's identities and the
    // next apply reuses it.
    let allocated = match &pf.ipam {
        Some(p) => Some(
            stop.race(ipam::ipam_allocate(p, &pf.resolved.model, run))
                .await
                .map_err(|sig| {
                    CliError::cancelled(format!(
                        "apply cancelled by the operator ({sig}) during the NetBox IPAM allocation, before any Proxmox change; addresses reserved so far keep this slot's identities and the next apply reuses them"
                    ))
                })??,
        ),
        None => None,
    };
    // Observing Proxmox changes nothing: a stop request abandons it at once.
    let plan_started = std::time::Instant::now();
    let (planned, prior) = stop
        .race(make_plan_observed(ctx, run, pf, allocated.as_ref()))
        .await
        .map_err(|sig| {
            CliError::cancelled(format!(
                "apply cancelled by the operator ({sig}) while observing Proxmox, before any change"
            ))
        })??;
    let engine::Planned {
        plan,
        observed,
        shape,
        ..
    } = planned;
    if plan.has_pending_ipam() {
        return Err(CliError::msg(
            "internal error: the plan still has NICs waiting for a NetBox address; nothing was changed",
        ));
    }
    if let Some(path) = plan_file {
        let text = crate::fsread::read_text_at_most(path, crate::fsread::DEFAULT_LIMIT)
            .map_err(|e| CliError::msg(format!("cannot read plan file {}: {e}", path.display())))?;
        let saved: PlanArtifact = serde_json::from_str(&text).map_err(|e| {
            CliError::msg(format!(
                "plan file {} is not a hyops-pve plan: {e}",
                path.display()
            ))
        })?;
        // A saved plan shows the NICs allocated in this run as pending: compare like with like.
        let fresh = match &allocated {
            Some(o) => plan.with_allocations_pending(&o.decisions),
            None => plan.clone(),
        };
        saved
            .check_still_valid(&fresh, &path.display().to_string())
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    print_plan(&plan);
    let readiness = &pf.resolved.model.readiness;
    // `enabled: false` means no readiness wait at all (not even for the guest agent).
    let agent_wait = if readiness.enabled {
        Duration::from_secs(readiness.connectivity_wait_s)
    } else {
        Duration::ZERO
    };
    if plan
        .vms
        .iter()
        .any(|v| matches!(v.action, VmAction::Create | VmAction::Replace))
    {
        // One `nextid` for the run (it keeps to the datacenter's next-id range); clones then
        // take ids the listing did not show, each confirmed by the clone itself.
        let first_free = pf.client.next_id(None).await.map_err(|e| {
            CliError::msg(format!(
                "apply failed: cannot ask Proxmox for a free VMID (GET /cluster/nextid): {e}"
            ))
        })?;
        pf.client
            .seed_vmids(observed.all_vms.keys().copied(), first_free);
    }
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
    let known = engine::known_vms(observed, &prior);
    let seen = Observed { shape, known };
    let (exec, bar) = pf
        .executor(ctx, run, agent_wait, plan.vms.len(), seen)
        .map_err(|e| CliError {
            message: format!("{}; no VM was changed", e.message),
            code: e.code,
        })?;
    let plan_ms = plan_started.elapsed().as_millis() as u64;
    let module_node = pf.module_node();
    // The post-apply verification re-reads what prior runs recorded for the slot: from the
    // runtime root's state (CLI), or hyops' own `latest.json` in driver mode (the same file,
    // written by hyops). Read again after the plan, which drops detach records whose VM is
    // gone (a clone of this run may have reused such a VMID).
    let prior = prior_ids(ctx)?;
    let ident = identity(ctx);
    let apply = engine::apply_plan(
        &exec,
        &plan,
        plan_ms,
        &module_node,
        &pf.resolved.model.tags,
        Some(engine::VerifyRequest {
            identity: &ident,
            prior: &prior,
        }),
    );
    let report = run_cancellable(&exec, stop, apply).await;
    record_journal_loss(run, &exec);
    let report = match report {
        Ok(r) => r,
        Err(sig) => {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(CliError::cancelled(format!("apply cancelled by the operator ({sig}); every started step was ended and journalled; VMs already created carry the ownership marker and are adopted by the next apply (clone tasks already sent keep running on their nodes: the next apply waits for them)")));
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(ssh) = snippet_ssh {
        let storage = snippets_storage(&pf.resolved.model, &pf.creds);
        match apply_snippets::cleanup(&ssh, &exec.client, &plan, &report.outcomes, &storage).await {
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

/// The post-apply SSH readiness gate over this apply's outputs (contract §5): its evidence
/// (`post_apply_ssh_readiness.json`, `connectivity_*`) goes into the run's evidence dir.
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
    for f in &gate.evidence_failures {
        run.evidence_failures.record(f.clone());
    }
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

/// The whole apply after the preflight phase: (IPAM) allocate, execute the plan, then (after
/// a successful rollout only, as upstream runs it after `terragrunt output`) the readiness
/// gate, then (after the gate passed, as upstream's hook) the NetBox inventory sync, then the
/// result. The gate only waits for SSH: a stop request abandons it (the rollout itself
/// finished; the next apply adopts its VMs); so does the sync (the next apply syncs again).
pub async fn apply_phase(
    ctx: &Ctx,
    run: &Run,
    pf: &Preflighted,
    plan_file: Option<&Path>,
    stop: &Stop,
) -> Result<Applied, CliError> {
    // What the slot published before this run (the sync retires the VMs this run no longer
    // has). The CLI's `running` record and hyops' own (driver mode) keep those outputs.
    // Only its VMs' names and addresses are kept, not the whole state (tens of MB at 10 000
    // VMs) through the apply.
    let prior_vms = {
        let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
        let text = state.read_text().map_err(CliError::hyops)?;
        netbox_sync::prior_vms_of_members(
            &state
                .read_members(text.as_deref())
                .map_err(CliError::hyops)?,
        )
    };
    output::progress("progress: phase=apply");
    let applied = execute_plan(ctx, run, pf, plan_file, stop).await?;
    let gate = if applied.report.failed {
        None
    } else {
        match stop
            .race(readiness_gate(ctx, run, pf, &applied.report))
            .await
        {
            Ok(gate) => Some(gate),
            Err(sig) => return Err(CliError::cancelled(format!(
                "apply cancelled by the operator ({sig}) during the post-apply SSH readiness gate; the rollout itself finished and the next apply adopts its VMs"
            ))),
        }
    };
    // The inventory sync (§4.7): non-strict unless HYOPS_NETBOX_SYNC_STRICT says otherwise.
    let gate_passed = gate.as_ref().is_none_or(|g| g.error.is_none());
    let sync = if applied.report.failed || !gate_passed {
        None
    } else {
        match stop
            .race(netbox_sync::after_apply(
                ctx,
                run,
                &applied.plan,
                &applied.report,
                &prior_vms,
            ))
            .await
        {
            Ok(sync) => Some(sync),
            Err(sig) => return Err(CliError::cancelled(format!(
                "apply cancelled by the operator ({sig}) during the NetBox inventory sync; the rollout finished and passed the readiness gate, and the next apply syncs NetBox again"
            ))),
        }
    };
    Ok(apply_result(run, ctx.root.path(), applied, gate, sync))
}

/// How long the steps get to end (journalled) after a stop request before the run stops
/// anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(20);

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

/// What an apply ended with: the plan, the executor's report, the driver result (`status:
/// error` when a VM failed or the required readiness gate failed; its `error` is the
/// one-line engine message) and the warnings of the phases around the rollout and of the
/// gate (the result's `warnings` has them too, after the plan's).
pub struct Applied {
    pub plan: PlanArtifact,
    pub report: ApplyReport,
    pub result: DriverResult,
    pub phase_warnings: Vec<String>,
}

/// Record an executed apply: `apply_report.json` and `driver_result.json`. The result's
/// `normalized_outputs.outputs` are the Terraform-shaped outputs (contract §2.7) that hyops
/// publishes (§3.5); `post_apply_ssh_readiness` is the gate's summary when it ran. `sync` is
/// the NetBox inventory sync when it ran: its warnings join the result's, and its error
/// (only with `HYOPS_NETBOX_SYNC_STRICT`) fails the apply.
///
/// The rollout has run, so a file that cannot be written does not stop this: the result is
/// then `error`, naming the files, the VMs and what to do next
/// ([`super::evidence_loss::incomplete_evidence`]), and its caller still records the state.
/// `root` is the runtime root (named in that message).
pub fn apply_result(
    run: &Run,
    root: &Path,
    applied: ApplyRun,
    gate: Option<GateReport>,
    sync: Option<Result<Vec<String>, CliError>>,
) -> Applied {
    let ApplyRun {
        plan,
        mut report,
        warnings: mut phase_warnings,
    } = applied;
    let report_value = json!({
        "run_id": run.run_id,
        "failed": report.failed,
        "converged": report.divergences.is_empty(),
        "divergences": report.divergences,
        "writes": report.writes,
        "api_calls": report.api_calls,
        "concurrency": report.concurrency,
        "summary": plan.summary,
        "vms": report.outcomes,
    });
    run.evidence_failures.keep(write_json_atomic(
        &run.evidence.join("apply_report.json"),
        &report_value,
    ));
    drop(report_value);
    let mut normalized = Map::new();
    // moved, not copied: the result carries the outputs from here on
    normalized.insert("outputs".into(), std::mem::take(&mut report.outputs));
    normalized.insert("command".into(), json!("apply"));
    normalized.insert("plan_summary".into(), json!(plan.summary));
    normalized.insert("writes".into(), json!(report.writes));
    // The post-apply verification (a re-read of every VM against the plan): `true` when the
    // cluster matches, else the apply failed and `divergences` names each VM and field.
    normalized.insert("converged".into(), json!(report.divergences.is_empty()));
    if !report.divergences.is_empty() {
        normalized.insert("divergences".into(), json!(report.divergences));
    }
    let mut error = None;
    if let Some(err) = report.error_summary() {
        // Each VM's full error is in apply_report.json and the result's `vms`; the error
        // line (state, ERR, hyops) gets the one-line summary.
        normalized.insert("vms".into(), json!(report.outcomes));
        error = Some(format!(
            "apply failed: {err}; per-VM errors: {}",
            run.evidence.join("apply_report.json").display()
        ));
    } else if let Some(g) = &gate {
        normalized.insert("post_apply_ssh_readiness".into(), g.summary.clone());
        phase_warnings.extend(g.warnings.iter().cloned());
        // A required gate that failed: the new outputs are not published (§5.6).
        error = g.error.as_ref().map(|e| required_failure_message(e));
    }
    if error.is_none() {
        match sync {
            Some(Ok(w)) => phase_warnings.extend(w),
            // HYOPS_NETBOX_SYNC_STRICT: the sync failure fails the apply.
            Some(Err(e)) => error = Some(e.message),
            None => {}
        }
    }
    let mut result = DriverResult::ok(&run.run_id, "apply", Map::new());
    result.normalized_outputs = normalized;
    result.warnings = plan.warnings.clone();
    result.warnings.extend(phase_warnings.iter().cloned());
    let fail = |result: &mut DriverResult| {
        let error = evidence_loss::with_incomplete_evidence(
            error.clone(),
            "apply",
            &run.evidence_failures,
            &report.outcomes,
            root,
        );
        set_error(result, error);
    };
    fail(&mut result);
    if let Err(e) = write_driver_result(&run.evidence, &result) {
        run.evidence_failures
            .record(EvidenceFailure::from_hyops(&e));
        fail(&mut result);
    }
    Applied {
        plan,
        report,
        result,
        phase_warnings,
    }
}

/// Write `driver_result.json` for a run that has done its work (`done` says what, e.g. `import
/// adopted VM 105 into app-01`): evidence that could not be written (this file included) does
/// not undo it, but makes the result an error naming the files after what was done.
pub fn record_result(run: &Run, root: &Path, result: &mut DriverResult, done: &str) {
    let fail = |result: &mut DriverResult| {
        if let Some(lost) = run.evidence_failures.summary() {
            let advice = evidence_loss::storage_advice(
                run.evidence_failures.storage_full(),
                &evidence_loss::failed_place(&run.evidence_failures, root),
            );
            set_error(
                result,
                Some(format!(
                    "{done} but its evidence is incomplete: {lost}; {advice}"
                )),
            );
        }
    };
    fail(result);
    if let Err(e) = write_driver_result(&run.evidence, result) {
        run.evidence_failures
            .record(EvidenceFailure::from_hyops(&e));
        fail(result);
    }
}

/// Make `result` an error result with `error`, or leave it `ok` when there is none.
fn set_error(result: &mut DriverResult, error: Option<String>) {
    if let Some(error) = error {
        result.status = hyops::ResultStatus::Error;
        result.error = Some(error);
    }
}

/// What destroy (and state detach) need, resolved before anything is changed (a failure here
/// changes nothing).
pub struct DestroyPrep {
    pub resolved: ResolvedInputs,
    pub creds: ProxmoxCredentials,
    pub client: PveClient,
    /// VMIDs prior runs recorded for the slot.
    pub prior: PriorIds,
    /// Physical names the inputs request (read besides the tagged VMs).
    pub names: BTreeSet<String>,
    /// The slot's state before this run: the destroy sync (§4.8) retires the VMs it
    /// published.
    pub prior_state: Option<Map<String, Value>>,
}

/// Credentials, inputs (resolved leniently: validation is skipped on destroy, §1.14; they only
/// supply names), the client and the VMIDs prior runs recorded. `command` names the inputs
/// evidence.
pub fn destroy_prepare(ctx: &Ctx, run: &Run, command: &str) -> Result<DestroyPrep, CliError> {
    let creds = ctx.credentials()?;
    let resolved = resolve(ctx, LifecycleCommand::Destroy, Some(&creds))?;
    write_inputs_evidence(ctx, run, command, &resolved)?;
    let client = ctx.client(&creds)?;
    let prior = prior_ids(ctx)?;
    let prior_state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .read()
        .map_err(CliError::hyops)?;
    let names: BTreeSet<String> = resolved
        .model
        .vms
        .values()
        .map(|v| v.physical_name.0.clone())
        .collect();
    Ok(DestroyPrep {
        resolved,
        creds,
        client,
        prior,
        names,
        prior_state,
    })
}

/// After the VMs are gone (even when others failed): their known_hosts entries and their
/// cloud-init snippet files go too; what cannot be removed becomes a warning.
async fn forget_destroyed(ctx: &Ctx, prep: &DestroyPrep, report: &mut DestroyReport) {
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
    let model = &prep.resolved.model;
    if destroyed.is_empty()
        || model.cloud_init_mode != CloudInitMode::Snippets
        || model.is_windows()
    {
        return;
    }
    let storage = snippets_storage(model, &prep.creds);
    let cleaned = match node_ssh(ctx, &prep.creds) {
        Ok(ssh) => {
            let r =
                apply_snippets::remove_destroyed(&ssh, &prep.client, &destroyed, &storage).await;
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

/// What a destroy ended with: the driver result (`status: error` with the one-line message
/// when it failed or was cancelled), the report when the engine ran to its end.
pub struct Destroyed {
    pub report: Option<DestroyReport>,
    pub result: DriverResult,
    /// Ctrl-C stopped it (every started step was ended and journalled).
    pub cancelled: bool,
}

/// Destroy every VM the slot provably owns: `destroy_report.json`, `driver_result.json`.
/// Every failure is in the result, never an `Err` (the caller records the state as it must):
/// an engine failure, a cancellation, and evidence that could not be written once VMs were
/// being removed (the NetBox destroy sync still runs; the result then names the files, the
/// removed VMs and what to do next).
pub async fn destroy_execute(ctx: &Ctx, run: &Run, prep: &DestroyPrep, stop: &Stop) -> Destroyed {
    let ended = |report: Option<DestroyReport>, error: Option<String>, cancelled: bool| {
        destroy_result(run, ctx.root.path(), report, error, Map::new(), cancelled)
    };
    let (exec, bar) = match executor(
        ctx,
        run,
        prep.client.clone(),
        &prep.resolved.model,
        Timeouts::default(),
        prep.names.len().max(prep.prior.hyops.len()),
        Observed::default(),
    ) {
        Ok(x) => x,
        Err(e) => {
            return ended(
                None,
                Some(format!("{}; no VM was changed", e.message)),
                false,
            )
        }
    };
    let ident = identity(ctx);
    let work = engine::destroy(&exec, &ident, &prep.prior, &prep.names);
    let report = run_cancellable(&exec, stop, work).await;
    record_journal_loss(run, &exec);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut report = match report {
        Err(sig) => return ended(None, Some(format!("destroy cancelled by the operator ({sig}); every started step was ended and journalled; run destroy again to remove the rest")), true),
        Ok(Err(e)) => return ended(None, Some(e.to_string()), false),
        Ok(Ok(r)) => r,
    };
    forget_destroyed(ctx, prep, &mut report).await;
    run.evidence_failures.keep(write_json_atomic(
        &run.evidence.join("destroy_report.json"),
        &json!({"run_id": run.run_id, "vms": report.outcomes, "warnings": report.warnings}),
    ));
    // The destroy sync (§4.8) after every VM is gone, from the slot's state before this run;
    // before the state says `destroyed` (the CLI writes it after this, hyops in driver mode).
    // A stop request abandons it; the state then does not say `destroyed` and the next
    // destroy syncs again.
    let mut sync_failure = None;
    if !report.failed {
        match stop
            .race(netbox_sync::after_destroy(
                ctx,
                run,
                prep.prior_state.as_ref(),
            ))
            .await
        {
            Ok(Ok(w)) => report.warnings.extend(w),
            Ok(Err(e)) => sync_failure = Some(e.message),
            Err(sig) => {
                return ended(Some(report), Some(format!("destroy cancelled by the operator ({sig}) during the NetBox destroy sync; the VMs are removed, run destroy again to finish the sync")), true);
            }
        }
    }
    let mut normalized = Map::new();
    let error = if let Some(msg) = sync_failure {
        Some(msg)
    } else if report.failed {
        let failures: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| o.status != "ok")
            .map(|o| format!("{}: {}", o.key, o.error.clone().unwrap_or_default()))
            .collect();
        normalized.insert("vms".into(), json!(report.outcomes));
        Some(format!(
            "destroy failed: {}; per-VM errors: {}",
            engine::summarize_failures(&failures, report.outcomes.len()),
            run.evidence.join("destroy_report.json").display()
        ))
    } else {
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
        None
    };
    destroy_result(run, ctx.root.path(), Some(report), error, normalized, false)
}

/// The destroy's driver result (written as `driver_result.json`): `error` (the engine's
/// failure joined with the evidence the run could not write, see
/// [`evidence_loss::with_incomplete_evidence`]) or `ok` with `normalized`; the report's
/// warnings are the result's.
fn destroy_result(
    run: &Run,
    root: &Path,
    report: Option<DestroyReport>,
    error: Option<String>,
    normalized: Map<String, Value>,
    cancelled: bool,
) -> Destroyed {
    let outcomes = report.as_ref().map_or(&[][..], |r| &r.outcomes[..]);
    let compose = || {
        evidence_loss::with_incomplete_evidence(
            error.clone(),
            "destroy",
            &run.evidence_failures,
            outcomes,
            root,
        )
    };
    let mut result = DriverResult::ok(&run.run_id, "destroy", normalized);
    if let Some(r) = &report {
        result.warnings = r.warnings.clone();
    }
    set_error(&mut result, compose());
    if let Err(e) = write_driver_result(&run.evidence, &result) {
        run.evidence_failures
            .record(EvidenceFailure::from_hyops(&e));
        set_error(&mut result, compose());
    }
    Destroyed {
        report,
        result,
        cancelled,
    }
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

/// The checks of `validate`, without printing: what `hyops validate` refuses before any API
/// call, in its order — input resolution and validation, then the driver contract's API-free
/// steps (bridge aliases, `build_image`, the VM-set guards, the template from its state), then
/// the managed-bridge guard against the network-sdn state (§4.3) and, for IPAM overlays,
/// NetBox readiness and the read-only IPAM checks (§4.1) — never an allocation. In driver
/// mode the inputs are hyops' own (see [`resolve`]).
pub async fn validate_report(ctx: &Ctx) -> ValidateOutcome {
    // Credentials are optional for validate; their bridge is only the single-VM default.
    let creds = ctx.credentials().ok();
    let req = resolve_request(ctx, LifecycleCommand::Validate, creds.as_ref());
    let (mut early_warnings, result) = match &ctx.driver {
        Some(frame) => (Vec::new(), resolve_prepared_inputs(&req, &frame.inputs)),
        None => resolve_inputs_with_warnings(&req),
    };
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
            let message = match &ctx.driver {
                Some(_) => e.to_string(),
                None => crate::commands::hints::explain(&e, &req),
            };
            return ValidateOutcome {
                warnings: early_warnings,
                result: Err(CliError::msg(message)),
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
    let refuse = |warnings: Vec<String>, e: CliError| ValidateOutcome {
        warnings,
        verbatim: Some(e.message.clone()),
        result: Err(e),
    };
    let (template, _) = match checks {
        Ok(t) => t,
        Err(e) => return refuse(warnings, e),
    };
    match ipam::bridge_guard(ctx, &resolved.resolved_json, creds.as_ref()).await {
        Ok(w) => warnings.extend(w),
        Err(e) => return refuse(warnings, e),
    }
    if let Err(e) =
        ipam::ipam_prepare(ctx, &resolved.model, &resolved.resolved_json, &mut warnings).await
    {
        return refuse(warnings, e);
    }
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
