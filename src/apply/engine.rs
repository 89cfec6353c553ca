//! The engine entry points the CLI (and later the HyOps driver mode) call: make a plan
//! (observe + desired + diff), apply a plan, destroy a slot. They return reports; writing
//! HyOps state stays with the caller. Knows nothing about flags or where state lives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::executor::{Executor, KnownVm, VmOutcome};
use crate::apply::journal::{now_ts, JournalEvent};
use crate::apply::limits::WindowReport;
use crate::apply::outputs::module_outputs;
use crate::hyops::{
    template_absent_error, template_missing_in_shrink_warning, template_not_a_template_error,
};
use crate::inputs::model::{LogicalVmKey, ModuleInputs};
use crate::plan::artifact::{desired_digest, PlanArtifact, PLAN_KIND, PLAN_SCHEMA_VERSION};
use crate::plan::desired::{
    desired_vm, DesiredError, DesiredVm, PendingAllocations, TargetDefaults, TemplateRef,
};
use crate::plan::diff::{diff, summarize, PlanError, VmAction, VmPlan};
use crate::plan::marker::OwnershipMarker;
use crate::plan::observe::{list_cluster, list_vms, observe, ObserveError, CLONE_LOCK_WAIT};
use crate::plan::observed::{ClusterShape, ObservedPool, PowerState, PriorIds, ResourceRow};
use crate::plan::placement::{gather, place};
use crate::plan::template::{disk_bytes, template_boot_disk, volume_storages};
use crate::pve::{ErrorClass, PveClient, PveError};

/// Env, module and slot: the identity every ownership marker of this run carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotIdentity {
    pub env: String,
    pub module_ref: String,
    /// `latest` or `instance:<name>`.
    pub slot: String,
}

impl SlotIdentity {
    /// The marker of `key` in this slot, for a VM cloned from `template_vmid`.
    pub fn marker(&self, key: &str, template_vmid: u32, inputs: &ModuleInputs) -> OwnershipMarker {
        OwnershipMarker {
            env: self.env.clone(),
            slot: self.slot.clone(),
            module_ref: self.module_ref.clone(),
            key: key.to_string(),
            template_vmid,
            clone_mode: inputs.clone_mode,
        }
    }
    /// A marker used only for slot comparisons.
    pub fn probe_marker(&self) -> OwnershipMarker {
        OwnershipMarker {
            env: self.env.clone(),
            slot: self.slot.clone(),
            module_ref: self.module_ref.clone(),
            key: String::new(),
            template_vmid: 0,
            clone_mode: Default::default(),
        }
    }
}

/// Engine-level failures (each message names what failed and what to do).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Desired(#[from] DesiredError),
    #[error(transparent)]
    Checks(#[from] crate::plan::checks::CheckFailure),
    #[error("{0}")]
    Template(String),
    #[error(transparent)]
    BootDisk(#[from] crate::plan::template::BootDiskError),
    #[error(transparent)]
    Placement(#[from] crate::plan::placement::PlacementFailure),
    #[error(transparent)]
    PlacementFacts(#[from] crate::plan::placement::GatherError),
    #[error("template probe for VM {vmid} failed: {source}")]
    TemplateProbe {
        vmid: u32,
        #[source]
        source: PveError,
    },
}

/// What the plan needs besides the inputs.
pub struct PlanRequest<'a> {
    pub inputs: &'a ModuleInputs,
    pub identity: &'a SlotIdentity,
    pub defaults: &'a TargetDefaults,
    pub template_vmid: u32,
    /// `template_vm_id=N resolved from template_state_ref=REF` or `configured template_vm_id=N`.
    pub template_source_hint: String,
    /// The guard confirmed a deletion-only shrink: a missing template is only a warning.
    pub deletion_only_shrink: bool,
    pub prior: &'a PriorIds,
    pub run_id: &'a str,
    pub env: Option<&'a str>,
    pub state_instance: Option<&'a str>,
    /// IPAM NICs NetBox allocates at apply (plan only; empty for apply).
    pub ipam_pending: &'a PendingAllocations,
    /// How long observing waits for a VM under `lock: clone` (a clone in flight) before
    /// planning against it with a warning: [`CLONE_LOCK_WAIT`] times the engine's time scale.
    pub clone_lock_wait: std::time::Duration,
}

/// Find the template, check it is one, and read what the plan needs from its config (boot
/// disk, its size, the storages of its volumes). `Ok(None)` when it does not exist.
async fn probe_template(
    client: &PveClient,
    rows: &[ResourceRow],
    vmid: u32,
) -> Result<Option<TemplateRef>, EngineError> {
    let Some(row) = rows.iter().find(|r| r.vmid == vmid) else {
        return Ok(None);
    };
    // /cluster/resources may lag; the config is authoritative.
    let cfg = match client.vm_config(&row.node, vmid, false).await {
        Ok(cfg) if cfg.template || row.template => cfg,
        Ok(_) => return Err(EngineError::Template(template_not_a_template_error(vmid))),
        Err(e) if e.classify() == ErrorClass::NotFound => return Ok(None),
        Err(source) => return Err(EngineError::TemplateProbe { vmid, source }),
    };
    let boot_disk = template_boot_disk(vmid, &row.node, &cfg.raw)?;
    Ok(Some(TemplateRef {
        vmid,
        node: row.node.clone(),
        disk_bytes: disk_bytes(&cfg.raw, &boot_disk),
        boot_disk,
        storages: volume_storages(&cfg.raw),
        sockets: cfg.raw.get("sockets").and_then(|s| s.trim().parse().ok()),
    }))
}

/// Per-VM `cloud_init_*` overrides that `cloud_init_mode: native` cannot carry: said in the
/// plan, never dropped silently.
fn undelivered_overrides(
    vm: &crate::inputs::model::VmInputs,
    want: &crate::plan::desired::DesiredVm,
) -> Vec<String> {
    use crate::plan::desired::CloudInitDelivery;
    if want.cloud_init != CloudInitDelivery::NativeKeys {
        return Vec::new();
    }
    [
        ("cloud_init_user_data", vm.cloud_init_user_data.is_some()),
        ("cloud_init_network_data", vm.cloud_init_network_data.is_some()),
        ("cloud_init_meta_data", vm.cloud_init_meta_data.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(field, _)| {
        format!(
            "VM {}: inputs.vms.{}.{field} is not delivered with cloud_init_mode: native (only Proxmox's native cloud-init keys are set); use cloud_init_mode: snippets (the default) to deliver it",
            vm.key.0, vm.key.0
        )
    })
    .collect()
}

/// A plan with what was observed to make it.
pub struct Planned {
    pub plan: PlanArtifact,
    /// The desired model per key the diff compared against `observed`.
    pub desired: BTreeMap<LogicalVmKey, std::sync::Arc<crate::plan::desired::DesiredVm>>,
    pub observed: ObservedPool,
    /// Nodes and storages of the cluster (the executor sizes its concurrency from them).
    pub shape: ClusterShape,
}

/// Observe Proxmox (one cluster listing, then the candidates' configs) and compute the plan.
pub async fn make_plan(client: &PveClient, req: &PlanRequest<'_>) -> Result<Planned, EngineError> {
    crate::plan::checks::check_inputs(req.inputs, Some(req.defaults))?;
    let (rows, shape) = list_cluster(client).await?;
    let mut warnings = Vec::new();
    let default_node = req
        .inputs
        .node_name
        .clone()
        .unwrap_or_else(|| req.defaults.node.clone());
    let template = match probe_template(client, &rows, req.template_vmid).await? {
        Some(t) => t,
        None if req.deletion_only_shrink => {
            warnings.push(template_missing_in_shrink_warning(req.template_vmid));
            TemplateRef {
                vmid: req.template_vmid,
                node: default_node.clone(),
                ..TemplateRef::default()
            }
        }
        None => {
            return Err(EngineError::Template(template_absent_error(
                &req.template_source_hint,
            )))
        }
    };
    let mut desired = BTreeMap::new();
    for (key, vm) in &req.inputs.vms {
        let marker = req.identity.marker(&key.0, template.vmid, req.inputs);
        let want = desired_vm(
            req.inputs,
            vm,
            req.defaults,
            &template,
            marker,
            req.ipam_pending,
        )?;
        warnings.extend(undelivered_overrides(vm, &want));
        desired.insert(key.clone(), want);
    }
    // Placement Proxmox would refuse (nodes, bridges, storages, CPU model), and the route of
    // each new VM to its node.
    let mut nodes: BTreeSet<String> = desired.values().map(|d| d.node.clone()).collect();
    nodes.insert(template.node.clone());
    let facts = gather(client, &nodes).await?;
    let storage_field = if req.inputs.datastore_id.is_some() {
        "inputs.datastore_id"
    } else {
        "credentials storage_pool"
    };
    warnings.extend(place(&mut desired, &template, &facts, storage_field)?);
    let mut expected_names: BTreeSet<String> = desired
        .values()
        .map(|d| d.physical_name.0.clone())
        .collect();
    expected_names.extend(req.prior.hyops.values().filter_map(|(_, n)| n.clone()));
    let observed = observe(
        client,
        &req.identity.probe_marker(),
        &rows,
        req.prior,
        &expected_names,
        req.clone_lock_wait,
    )
    .await?;
    warnings.extend(observed.warnings.iter().cloned());
    // Shared from here on: each VM's plan holds its model without a copy.
    let desired: BTreeMap<LogicalVmKey, std::sync::Arc<DesiredVm>> = desired
        .into_iter()
        .map(|(k, v)| (k, std::sync::Arc::new(v)))
        .collect();
    let vms = diff(&desired, &observed, req.inputs.allow_vm_set_replace)?;
    let desired_for_digest = &desired;
    for v in &vms {
        warnings.extend(v.notes.iter().cloned());
    }
    let plan = PlanArtifact {
        schema_version: PLAN_SCHEMA_VERSION,
        kind: PLAN_KIND.to_string(),
        run_id: req.run_id.to_string(),
        created_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        module_ref: req.identity.module_ref.clone(),
        env: req.env.map(str::to_string),
        slot: req.identity.slot.clone(),
        state_instance: req.state_instance.map(str::to_string),
        inputs_digest: desired_digest(desired_for_digest),
        template,
        summary: summarize(&vms),
        vms,
        warnings,
        ipam: Vec::new(),
    };
    Ok(Planned {
        plan,
        desired,
        observed,
        shape,
    })
}

/// The result of an apply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyReport {
    pub outcomes: Vec<VmOutcome>,
    /// What still differs from the plan when Proxmox is observed again after the apply.
    #[serde(default)]
    pub divergences: Vec<Divergence>,
    /// Terraform-shaped outputs (contract §2.7) for every requested VM that ended ok.
    pub outputs: Value,
    pub failed: bool,
    /// Writes the execution sent (0 on a no-op apply).
    pub writes: u64,
    /// Every request of the run: preflight, plan and execution (the journal breaks it down:
    /// the `plan` line, one line per step, the `task_poll` line).
    pub api_calls: u64,
    /// The concurrency each window settled on.
    pub concurrency: Vec<WindowReport>,
}

impl ApplyReport {
    /// One line naming every failed VM and why.
    pub fn error_summary(&self) -> Option<String> {
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter(|o| o.status != "ok")
            .map(|o| format!("{}: {}", o.key, o.error.clone().unwrap_or_default()))
            .collect();
        let mut parts = Vec::new();
        if !failed.is_empty() {
            parts.push(summarize_failures(&failed, self.outcomes.len()));
        }
        if !self.divergences.is_empty() {
            let lines: Vec<String> = self.divergences.iter().map(|d| d.to_string()).collect();
            parts.push(format!(
                "did not converge (Proxmox still differs after the apply; every field is in apply_report.json): {}",
                summarize_failures(&lines, self.outcomes.len())
                    .replacen("VM(s) failed", "VM(s) differ", 1)
                    .replacen("also failed", "also differ", 1)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// One short line for any number of per-VM failures (`"<key>: <error>"` each): the count, the
/// first failure in full (up to 300 characters) and the keys of the next few. The full list
/// belongs in the report files, not in an error line (84 failed VMs once made a 14 KB line).
pub fn summarize_failures(failed: &[String], total: usize) -> String {
    const FIRST_MAX: usize = 300;
    const MORE_KEYS: usize = 5;
    let Some(first) = failed.first() else {
        return format!("0 of {total} VM(s) failed");
    };
    let first = if first.chars().count() > FIRST_MAX {
        let cut: String = first.chars().take(FIRST_MAX).collect();
        format!("{cut}…")
    } else {
        first.clone()
    };
    let mut line = format!("{} of {total} VM(s) failed: {first}", failed.len());
    let rest: Vec<&str> = failed[1..]
        .iter()
        .map(|f| f.split_once(": ").map_or(f.as_str(), |(k, _)| k))
        .collect();
    if !rest.is_empty() {
        let shown = rest
            .iter()
            .take(MORE_KEYS)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let hidden = rest.len().saturating_sub(MORE_KEYS);
        line.push_str(&format!("; also failed: {shown}"));
        if hidden > 0 {
            line.push_str(&format!(" and {hidden} more"));
        }
    }
    line
}

/// A run-level journal line (`vm` `*`): the plan phase or the batched task polls. `end`
/// carries the duration and requests; `None` writes the `start` line.
fn journal_run_line(exec: &Executor, action: &str, end: Option<(u64, u64)>) {
    exec.journal.record(JournalEvent {
        v: 0,
        ts: now_ts(),
        run_id: String::new(),
        vm: "*".into(),
        vmid: None,
        node: None,
        action: action.to_string(),
        event: if end.is_some() { "end" } else { "start" }.into(),
        result: end.map(|_| "ok".into()),
        duration_ms: end.map(|e| e.0),
        attempts: None,
        api_calls: end.map(|e| e.1),
        error: None,
    });
}

/// What the executor may know before it runs: the configs (as the VMs run them) and power
/// states the plan read, and the guest addresses the previous apply recorded.
pub fn known_vms(
    observed: ObservedPool,
    prior: &PriorIds,
) -> std::collections::HashMap<String, KnownVm> {
    observed
        .managed
        .into_iter()
        .map(|(k, m)| {
            let agent_ipv4 = prior.agent_ipv4.get(&k).cloned();
            // The plan read the config as the next start will have it; the outputs report
            // what runs, so keys still pending keep the value the VM runs with.
            let mut config = m.vm.config;
            for (key, p) in m.vm.pending {
                match p.current {
                    Some(v) => config.insert(key, v),
                    None => config.remove(&key),
                };
            }
            (
                k.0,
                KnownVm {
                    running: m.vm.status == PowerState::Running,
                    config,
                    agent_ipv4,
                },
            )
        })
        .collect()
}

/// A VM whose Proxmox state still differs from the plan after the apply, naming each field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub key: String,
    pub vmid: Option<u32>,
    pub node: String,
    pub details: Vec<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VM {} (vmid {}, node {}): {}",
            self.key,
            self.vmid
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into()),
            self.node,
            self.details.join(", ")
        )
    }
}

/// What is left to do for one VM, as the operator reads it.
fn leftovers(p: &VmPlan) -> Vec<String> {
    let mut out = Vec::new();
    match p.action {
        VmAction::Create => out.push("the VM does not exist on Proxmox".to_string()),
        VmAction::Delete => out.push("the VM still exists".to_string()),
        VmAction::Replace => out.push(format!(
            "the VM would still need replacing ({})",
            p.replace_reasons.join(", ")
        )),
        VmAction::Update | VmAction::Noop => {}
    }
    if matches!(p.action, VmAction::Update | VmAction::Noop) {
        for c in &p.changes {
            out.push(format!(
                "{}: Proxmox has {}, the plan wants {}",
                c.field,
                c.before.as_deref().unwrap_or("(unset)"),
                c.after.as_deref().unwrap_or("(deleted)")
            ));
        }
        if let Some(r) = &p.resize {
            out.push(format!(
                "boot disk {} is {}, the plan wants {} GiB",
                r.disk,
                r.from_bytes
                    .map(|b| format!("{} GiB", crate::plan::template::format_gib(b)))
                    .unwrap_or_else(|| "of unknown size".into()),
                crate::plan::template::format_gib(r.to_bytes)
            ));
        }
        if p.start {
            out.push("the VM is stopped".to_string());
        }
        if let Some(r) = &p.restart {
            out.push(format!(
                "the VM still runs without {} (pending until a restart)",
                r.keys.join(", ")
            ));
        }
    }
    out
}

/// Observe Proxmox again after an apply and diff against what the plan wanted. Every VM
/// that still differs is a [`Divergence`] naming the fields; VMs whose pipeline already
/// failed (`skip`) are left out (their error says more).
pub async fn verify_converged(
    client: &PveClient,
    plan: &PlanArtifact,
    identity: &SlotIdentity,
    prior: &PriorIds,
    skip: &BTreeSet<String>,
    clone_lock_wait: std::time::Duration,
) -> Result<Vec<Divergence>, EngineError> {
    let rows = list_vms(client).await?;
    let desired: BTreeMap<LogicalVmKey, std::sync::Arc<DesiredVm>> = plan
        .vms
        .iter()
        .filter_map(|p| p.desired.clone().map(|d| (p.key.clone(), d)))
        .collect();
    let mut names: BTreeSet<String> = desired
        .values()
        .map(|d| d.physical_name.0.clone())
        .collect();
    names.extend(prior.hyops.values().filter_map(|(_, n)| n.clone()));
    let observed = observe(
        client,
        &identity.probe_marker(),
        &rows,
        prior,
        &names,
        clone_lock_wait,
    )
    .await?;
    let again = diff(&desired, &observed, true)?;
    Ok(again
        .iter()
        .filter(|p| !p.is_noop() && !skip.contains(&p.key.0))
        .filter(|p| {
            !skip
                .iter()
                .any(|k| p.key.0.starts_with(&format!("{k}#dup-")))
        })
        .map(|p| Divergence {
            key: p.key.0.clone(),
            vmid: p.vmid,
            node: p.node.clone(),
            details: leftovers(p),
        })
        .collect())
}

/// What post-apply verification needs besides the plan.
pub struct VerifyRequest<'a> {
    pub identity: &'a SlotIdentity,
    /// Also the guest addresses the previous successful apply recorded
    /// ([`PriorIds::agent_ipv4`]), so facts the guest agent does not report right now are
    /// kept, never blanked.
    pub prior: &'a PriorIds,
}

/// The guest addresses the previous apply recorded for `key` (in its outputs, read into
/// `prior`), if they describe the same VM (same VMID).
fn last_known_ipv4(prior: &PriorIds, key: &str, vmid: u32) -> Option<Vec<Vec<std::net::Ipv4Addr>>> {
    let key = LogicalVmKey(key.to_string());
    if prior.hyops.get(&key).map(|(id, _)| *id) != Some(vmid) {
        return None;
    }
    let out: Vec<Vec<std::net::Ipv4Addr>> = prior
        .agent_ipv4
        .get(&key)?
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Execute a plan, then (when it changed anything and was not cancelled) observe Proxmox
/// again: any difference left is a divergence that fails the apply, naming the VM and the
/// field. `plan_ms` is how long
/// everything before took; every request the client made so far is journalled as the `plan`
/// line, the batched task polls as the `task_poll` line, the read-back as the `verify` line.
pub async fn apply_plan(
    exec: &Arc<Executor>,
    plan: &PlanArtifact,
    plan_ms: u64,
    module_node: &str,
    module_tags: &[String],
    verify: Option<VerifyRequest<'_>>,
) -> ApplyReport {
    let before = exec.client.metrics();
    let polls_before = exec.client.task_poll_calls();
    journal_run_line(exec, "plan", None);
    journal_run_line(exec, "plan", Some((plan_ms, before.total)));
    journal_run_line(exec, "task_poll", None);
    let started = std::time::Instant::now();
    let outcomes = exec.execute(&plan.vms).await;
    let polls = exec.client.task_poll_calls().saturating_sub(polls_before);
    journal_run_line(
        exec,
        "task_poll",
        Some((started.elapsed().as_millis() as u64, polls)),
    );
    let mut divergences = Vec::new();
    let changed =
        plan.vms.iter().any(|p| !p.is_noop()) || exec.client.metrics().writes > before.writes;
    let previous = verify.as_ref().map(|v| v.prior);
    // A cancelled run (Ctrl-C, SIGTERM) ends here: its clones may still be running on their
    // nodes (a clone task is not stopped by abandoning its wait), and reading them back would
    // only wait for their locks (up to `CLONE_LOCK_WAIT`) to prove what the next apply adopts
    // anyway; the report of a cancelled run is not published.
    if let (Some(v), true, false) = (verify, changed, exec.cancel.is_cancelled()) {
        let skip: BTreeSet<String> = outcomes
            .iter()
            .filter(|o| o.status != "ok")
            .map(|o| o.key.clone())
            .collect();
        let lock_wait = CLONE_LOCK_WAIT.mul_f64(exec.timeouts.scale);
        journal_run_line(exec, "verify", None);
        let (verify_started, verify_before) = (std::time::Instant::now(), exec.client.metrics());
        let verified =
            verify_converged(&exec.client, plan, v.identity, v.prior, &skip, lock_wait).await;
        journal_run_line(
            exec,
            "verify",
            Some((
                verify_started.elapsed().as_millis() as u64,
                exec.client
                    .metrics()
                    .total
                    .saturating_sub(verify_before.total),
            )),
        );
        match verified {
            Ok(d) => divergences = d,
            Err(e) => divergences.push(Divergence {
                key: "(all)".into(),
                vmid: None,
                node: String::new(),
                details: vec![format!(
                    "reading Proxmox back after the apply failed, so convergence is unproven: {e}"
                )],
            }),
        }
    }
    // Each VM's facts move into the outputs' input and are dropped once its output is
    // built; the readiness gate after this needs only each VM's host-key identity. (Held
    // beside the outputs, the configs of 10 000 VMs were ~29 MB more at the peak, heaptrack.)
    let mut outcomes = outcomes;
    let mut per_vm = BTreeMap::new();
    for (o, p) in outcomes.iter_mut().zip(&plan.vms) {
        let Some(mut facts) = o.facts.take() else {
            continue;
        };
        o.host_identity = Some(facts.host_identity());
        let Some(want) = p.desired.as_ref().filter(|_| p.action != VmAction::Delete) else {
            continue;
        };
        // A guest agent that does not answer right now never blanks what is known.
        if facts.agent_ipv4.is_empty() && facts.running {
            if let Some(known) = previous.and_then(|v| last_known_ipv4(v, &o.key, facts.vmid)) {
                facts.agent_ipv4 = known;
            }
        }
        per_vm.insert(o.key.clone(), (&**want, facts));
    }
    let outputs = module_outputs(per_vm, module_node, module_tags);
    let failed = outcomes.iter().any(|o| o.status != "ok") || !divergences.is_empty();
    let after = exec.client.metrics();
    ApplyReport {
        outputs,
        failed,
        divergences,
        writes: after.writes.saturating_sub(before.writes),
        api_calls: after.total,
        concurrency: exec.scheduler.report(),
        outcomes,
    }
}

/// The result of a destroy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DestroyReport {
    pub outcomes: Vec<VmOutcome>,
    pub failed: bool,
    pub warnings: Vec<String>,
    /// Logical key (as in `outcomes`) → physical VM name, for the cleanup after a destroy
    /// (snippet files, known_hosts entries).
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

/// Destroy every VM this slot provably owns.
pub async fn destroy(
    exec: &Arc<Executor>,
    identity: &SlotIdentity,
    prior: &PriorIds,
    extra_names: &BTreeSet<String>,
) -> Result<DestroyReport, EngineError> {
    let started = std::time::Instant::now();
    let (rows, _) = list_cluster(&exec.client).await?;
    let mut names: BTreeSet<String> = prior
        .hyops
        .values()
        .filter_map(|(_, n)| n.clone())
        .collect();
    names.extend(extra_names.iter().cloned());
    let observed = observe(
        &exec.client,
        &identity.probe_marker(),
        &rows,
        prior,
        &names,
        CLONE_LOCK_WAIT.mul_f64(exec.timeouts.scale),
    )
    .await?;
    // Catch before write: Proxmox refuses to destroy a protected VM, so check every target
    // before the first power change and refuse them all together.
    let protected: Vec<PlanError> = observed
        .managed
        .iter()
        .map(|(k, m)| (k.0.clone(), &m.vm))
        .chain(observed.duplicates.iter().map(|(k, vm)| (k.0.clone(), vm)))
        .filter(|(_, vm)| vm.protected())
        .map(|(key, vm)| PlanError::Protected {
            key,
            vmid: vm.vmid,
            name: vm.name.clone(),
            node: vm.node.clone(),
            action: "destroy",
        })
        .collect();
    PlanError::collect(protected)?;
    let mut vm_names: BTreeMap<String, String> = observed
        .managed
        .iter()
        .map(|(k, m)| (k.0.clone(), m.vm.name.clone()))
        .collect();
    vm_names.extend(
        observed
            .duplicates
            .iter()
            .map(|(k, vm)| (format!("{}#dup-{}", k.0, vm.vmid), vm.name.clone())),
    );
    journal_run_line(exec, "plan", None);
    journal_run_line(
        exec,
        "plan",
        Some((
            started.elapsed().as_millis() as u64,
            exec.client.metrics().total,
        )),
    );
    journal_run_line(exec, "task_poll", None);
    let polls_before = exec.client.task_poll_calls();
    let mut handles = Vec::new();
    let targets = observed
        .managed
        .iter()
        .map(|(k, m)| (k.clone(), m.vm.vmid, m.vm.node.clone()))
        .chain(observed.duplicates.iter().map(|(k, vm)| {
            (
                LogicalVmKey(format!("{}#dup-{}", k.0, vm.vmid)),
                vm.vmid,
                vm.node.clone(),
            )
        }));
    for (key, vmid, node) in targets {
        let me = exec.clone();
        handles.push(tokio::spawn(async move {
            me.destroy_vm(&key.0, vmid, &node).await
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        match h.await {
            Ok(o) => outcomes.push(o),
            Err(e) => outcomes.push(VmOutcome {
                key: "?".into(),
                action: VmAction::Delete,
                vmid: None,
                node: String::new(),
                status: "error".into(),
                error: Some(format!(
                    "internal error: destroy task ended abnormally: {e}"
                )),
                duration_ms: 0,
                api_calls: 0,
                facts: None,
                host_identity: None,
            }),
        }
    }
    let failed = outcomes.iter().any(|o| o.status != "ok");
    journal_run_line(
        exec,
        "task_poll",
        Some((
            started.elapsed().as_millis() as u64,
            exec.client.task_poll_calls().saturating_sub(polls_before),
        )),
    );
    Ok(DestroyReport {
        outcomes,
        failed,
        warnings: observed.warnings,
        names: vm_names,
    })
}
