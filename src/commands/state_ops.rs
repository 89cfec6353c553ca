//! The driver commands that change which VMs a slot owns without converging them, on the
//! same engine path as apply (run frame, slot lock, preflight phase, observe):
//! - `import`: adopt an existing VM by VMID into a logical key (the ownership marker is
//!   written, nothing else), then report the slot's outputs read back from Proxmox;
//! - `state_unlock`: release a stale slot lock, named by its holder's run id;
//! - `state_detach`: forget one VM (or every VM) of the slot without touching Proxmox, after
//!   an exact VMID check, through the slot's detach record.
//!
//! Like [`super::phases`], they never write HyOps module state: hyops records their results.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::apply::engine;
use crate::apply::import::{import_vm, observe_slot, ImportRequest};
use crate::commands::context::Ctx;
use crate::commands::phases::{
    clone_lock_wait, destroy_prepare, identity, plan_phase, preflight_phase, prior_ids,
    record_result, Preflighted, Run,
};
use crate::commands::stop::Stop;
use crate::commands::CliError;
use crate::hyops::protocol::{DetachSelection, DetachTarget, ImportTarget};
use crate::hyops::runid::utc_now;
use crate::hyops::{force_unlock, write_json_atomic, DetachedVm, DetachedVms, DriverResult};
use crate::inputs::LifecycleCommand;
use crate::plan::diff::VmAction;

/// `import`: adopt `target.vmid` into `target.key`, then read the slot's outputs back (no
/// writes beyond the marker). `import_report.json` records what was done. A stop request
/// abandons the preflight and the observation (nothing changed yet); the marker write, one
/// API call, runs to its end.
pub async fn import_phase(
    ctx: &Ctx,
    run: &Run,
    target: &ImportTarget,
    stop: &Stop,
) -> Result<DriverResult, CliError> {
    let stopped = |sig: &str| {
        CliError::cancelled(format!(
            "import cancelled by the operator ({sig}) before any change"
        ))
    };
    let pf = stop
        .race(preflight_phase(
            ctx,
            run,
            LifecycleCommand::Import,
            false,
            true,
        ))
        .await
        .map_err(stopped)??;
    let ident = identity(ctx);
    // The slot is observed with its detach record as it is: a detached VM stays forgotten
    // unless this import is accepted (a refused import must not hand it back to the slot,
    // where the next apply would delete it as a duplicate clone of its key).
    let prior = prior_ids(ctx)?;
    let names: BTreeSet<String> = pf
        .resolved
        .model
        .vms
        .values()
        .map(|v| v.physical_name.0.clone())
        .collect();
    let observed = stop
        .race(observe_slot(
            &pf.client,
            &ident,
            &prior,
            &names,
            clone_lock_wait(ctx),
        ))
        .await
        .map_err(stopped)?
        .map_err(|e| CliError::msg(e.to_string()))?;
    let imported = import_vm(
        &pf.client,
        &ident,
        &ImportRequest {
            inputs: &pf.resolved.model,
            template_vmid: pf.template_vmid,
            key: &target.key,
            vmid: target.vmid,
            node: target.node.as_deref(),
            observed: &observed,
        },
    )
    .await
    .map_err(|e| CliError::msg(e.to_string()))?;
    // Accepted: importing a detached VM takes it back, so its detach record goes (the lock
    // is held).
    let mut detached = DetachedVms::read(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .map_err(CliError::hyops)?;
    if detached.retain_present(|vmid| vmid != target.vmid) {
        detached
            .write(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
            .map_err(CliError::hyops)?;
    }
    let report = json!({
        "run_id": run.run_id,
        "resource_address": target.resource_address,
        "resource_id": target.resource_id,
        "imported": imported,
    });
    // The marker is written: a report that cannot be written does not undo the import.
    run.evidence_failures.keep(write_json_atomic(
        &run.evidence.join("import_report.json"),
        &report,
    ));
    let outputs = read_outputs(ctx, run, &pf).await.map_err(|e| {
        CliError::msg(format!(
            "VM {} was imported into {} (marker written: {}), but the slot's outputs could not be read: {}; fix the inputs, then run apply",
            imported.vmid, imported.key, imported.marker_written, e.message
        ))
    })?;
    let mut normalized = Map::new();
    normalized.insert("outputs".into(), outputs);
    normalized.insert("command".into(), json!("import"));
    normalized.insert("imported".into(), json!(imported));
    let mut result = DriverResult::ok(&run.run_id, "import", normalized);
    result.warnings = pf.warnings.clone();
    record_result(
        run,
        ctx.root.path(),
        &mut result,
        &format!(
            "import adopted VM {} into {} (marker written: {})",
            imported.vmid, imported.key, imported.marker_written
        ),
    );
    Ok(result)
}

/// The slot's outputs as Proxmox has them now: the plan's existing VMs, facts read only
/// (`Noop` for each; VMs still to create have no outputs). Makes no write.
async fn read_outputs(ctx: &Ctx, run: &Run, pf: &Preflighted) -> Result<Value, CliError> {
    let mut plan = plan_phase(ctx, run, pf).await?;
    plan.vms
        .retain(|v| v.vmid.is_some() && !matches!(v.action, VmAction::Create | VmAction::Delete));
    for v in &mut plan.vms {
        v.action = VmAction::Noop;
    }
    let (exec, _bar) = pf.executor(ctx, run, Duration::ZERO, plan.vms.len(), Default::default())?;
    // Nothing is changed, so nothing is verified either.
    let report = engine::apply_plan(
        &exec,
        &plan,
        0,
        &pf.module_node(),
        &pf.resolved.model.tags,
        None,
    )
    .await;
    if let Some(err) = report.error_summary() {
        return Err(CliError::msg(err));
    }
    Ok(report.outputs)
}

/// `state_unlock`: release the slot lock held under `lock_id` (the holder's run id) when its
/// run is gone. No lock is taken (that is the point).
pub fn unlock_phase(ctx: &Ctx, run: &Run, lock_id: &str) -> Result<DriverResult, CliError> {
    let unlocked = force_unlock(&ctx.root, &ctx.module_ref, ctx.instance.as_ref(), lock_id)
        .map_err(CliError::hyops)?;
    let mut normalized = Map::new();
    normalized.insert("outputs".into(), json!({}));
    normalized.insert("command".into(), json!("state_unlock"));
    normalized.insert("state_unlock".into(), json!(unlocked));
    let mut result = DriverResult::ok(&run.run_id, "state_unlock", normalized);
    if let Some(h) = &unlocked.holder {
        result.warnings.push(format!(
            "released the lock of run_id={} pid={} host={} (started {})",
            h.run_id, h.pid, h.host, h.started_at
        ));
    }
    record_result(
        run,
        ctx.root.path(),
        &mut result,
        &format!("state_unlock released the lock {lock_id}"),
    );
    Ok(result)
}

/// Python's `repr` of a string, as the upstream refusal message prints it.
fn py_repr(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `state_detach`: forget the selected VMs of this slot without touching Proxmox. The
/// selection's VMIDs must equal `expected_resource_id` exactly (as `terragrunt state show`
/// is checked upstream); the VMs are then listed in the slot's detach record, so no later
/// apply or destroy of this slot manages them, whatever their marker says. A stop request
/// abandons the observation (the record is written after it, in one atomic write).
pub async fn detach_phase(
    ctx: &Ctx,
    run: &Run,
    target: &DetachTarget,
    stop: &Stop,
) -> Result<DriverResult, CliError> {
    let prep = destroy_prepare(ctx, run, "state_detach")?;
    let observed = stop
        .race(observe_slot(
            &prep.client,
            &identity(ctx),
            &prep.prior,
            &prep.names,
            clone_lock_wait(ctx),
        ))
        .await
        .map_err(|sig| {
            CliError::cancelled(format!(
                "state_detach cancelled by the operator ({sig}) before any change"
            ))
        })?
        .map_err(|e| CliError::msg(e.to_string()))?;
    let selected: Vec<(String, u32, String, String)> = match &target.selection {
        DetachSelection::All => observed
            .managed
            .iter()
            .map(|(k, m)| (k.0.clone(), m.vm.vmid, m.vm.name.clone(), m.vm.node.clone()))
            .collect(),
        DetachSelection::Key(key) => observed
            .managed
            .iter()
            .filter(|(k, _)| &k.0 == key)
            .map(|(k, m)| (k.0.clone(), m.vm.vmid, m.vm.name.clone(), m.vm.node.clone()))
            .collect(),
    };
    if selected.is_empty() {
        return Err(CliError::msg(format!(
            "state detach refused: {} names no VM this slot manages (nothing to detach)",
            target.resource_address
        )));
    }
    let actual: BTreeSet<u32> = selected.iter().map(|(_, id, _, _)| *id).collect();
    let actual_id = actual
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if actual != target.expected_vmids {
        return Err(CliError::msg(format!(
            "state detach refused: resource id mismatch for {}: expected={} actual={}",
            target.resource_address,
            py_repr(&target.expected_resource_id),
            py_repr(&actual_id)
        )));
    }
    let mut record = DetachedVms::read(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .map_err(CliError::hyops)?;
    let now = utc_now();
    for (key, vmid, name, node) in &selected {
        record.add(DetachedVm {
            vmid: *vmid,
            key: key.clone(),
            name: name.clone(),
            node: node.clone(),
            run_id: run.run_id.clone(),
            detached_at: now.clone(),
        });
    }
    record
        .write(&ctx.root, &ctx.module_ref, ctx.instance.as_ref())
        .map_err(CliError::hyops)?;
    let detached: Vec<Value> = selected
        .iter()
        .map(|(k, id, name, node)| json!({"key": k, "vmid": id, "name": name, "node": node}))
        .collect();
    let summary = json!({
        "resource_address": target.resource_address,
        "expected_resource_id": target.expected_resource_id,
        "actual_resource_id": actual_id,
        "provider_resource_changed": false,
        "vms": detached,
        "record": ctx.root.detached_file(&ctx.module_ref, ctx.instance.as_ref()).display().to_string(),
    });
    let mut normalized = Map::new();
    normalized.insert("outputs".into(), json!({}));
    normalized.insert("command".into(), json!("state_detach"));
    let mut result = DriverResult::ok(&run.run_id, "state_detach", normalized);
    result.state_detach = Some(summary);
    result.warnings = observed.warnings.clone();
    record_result(
        run,
        ctx.root.path(),
        &mut result,
        &format!("state_detach recorded VMID(s) {actual_id} as detached from this slot"),
    );
    Ok(result)
}
