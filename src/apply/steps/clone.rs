//! The clone step: race-safe VMID choice and one `qmclone` per logical key.
//!
//! The outcome rule (issue 7): once a clone was sent, its outcome is learned only from its
//! task or by re-reading the cluster; no second clone is sent for the key while the first
//! one's fate is unknown. When the task status cannot be read, the task is polled to the
//! clone deadline; when that or the submission itself ends "outcome unknown", the cluster is
//! re-read for the clone (its VMID, a VM with our marker under the target name, or one still
//! under `lock: clone`) during a settle window. Found: wait for its lock to go and adopt it.
//! Provably not there (the cluster was readable and showed nothing, or someone else holds
//! the id, or the VM vanished because its task failed): a new clone is safe. Unreadable: the
//! step fails and nothing is resent (the next apply finds the clone by its marker).

use crate::apply::executor::StepError;
use crate::apply::limits::Place;
use crate::apply::steps::{run_step, AttemptError, VmCtx};
use crate::inputs::model::CloneMode;
use crate::plan::desired::DesiredVm;
use crate::pve::{
    is_id_conflict, AllocateRequest, CloneAllocation, CloneParams, ErrorClass, Ownership, PveError,
    ResourceType, WaitOptions,
};
use crate::retry::{Classify, Disposition, RetryError, RetryPolicy};

/// Clone the template for `want`; returns the new VMID.
pub(crate) async fn clone_vm(ctx: &VmCtx<'_>, want: &DesiredVm) -> Result<u32, StepError> {
    let exec = ctx.exec;
    let full = want.clone_mode == CloneMode::Full;
    // The plan's route (plan::placement): the clone goes to the template's node, straight to
    // another node only when Proxmox can (all volumes and the target storage shared); else
    // the migrate step moves it afterwards.
    let route = &want.route;
    let clone_node = clone_node(want);
    let storage = if full { route.storage.clone() } else { None };
    let params = CloneParams {
        newid: want.requested_vmid.unwrap_or(0),
        name: Some(want.physical_name.0.clone()),
        description: Some(want.marker.to_description()),
        full: Some(full),
        storage: storage.clone(),
        format: None,
        target: route.target.clone(),
        pool: None,
    };
    let marker_line = want.marker.to_line();
    let policy = exec.timeouts.policy(exec.timeouts.clone);
    let in_flight = InFlight::default();
    // The work happens on the storage written (a linked clone's volumes are made where the
    // template's are; `storage` names the same one for the usual template) and on the
    // template's node, which runs the qmclone task.
    let result = run_step(
        ctx,
        "clone",
        policy,
        Some(Place::Clone {
            storage: storage.as_deref().unwrap_or(&want.storage),
            task_node: &clone_node,
        }),
        || attempt(ctx, want, &params, &marker_line, &in_flight),
    )
    .await;
    match result {
        // Cancelling abandons the wait, not the task: say where the clone goes on.
        Err(StepError::Cancelled { step, key, .. }) if in_flight.get().is_some() => {
            let (vmid, node) = in_flight.get().unwrap_or_default();
            Err(StepError::Cancelled {
                step,
                key,
                vmid: vmid.to_string(),
                after: format!(
                    "; its clone task keeps running on node {node}, and the next apply waits for it and adopts VM {vmid} by its ownership marker"
                ),
            })
        }
        r => r,
    }
}

/// The clone this step has sent and not yet seen end (VMID, node running its task): what a
/// cancellation leaves running on the cluster.
#[derive(Default)]
struct InFlight(std::sync::Mutex<Option<(u32, String)>>);

impl InFlight {
    fn set(&self, v: Option<(u32, String)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
    fn get(&self) -> Option<(u32, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The node the clone call goes to: the route's (always the template's node).
pub(crate) fn clone_node(want: &DesiredVm) -> String {
    if want.route.clone_node.is_empty() {
        want.template.node.clone()
    } else {
        want.route.clone_node.clone()
    }
}

async fn attempt(
    ctx: &VmCtx<'_>,
    want: &DesiredVm,
    params: &CloneParams,
    marker_line: &str,
    in_flight: &InFlight,
) -> Result<u32, AttemptError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let clone_node = clone_node(want);
    let req = AllocateRequest {
        node: &clone_node,
        template_vmid: want.template.vmid,
        params,
        ownership: Ownership::Marker(marker_line),
        start_hint: want.requested_vmid,
        range: want.requested_vmid.map(|v| v..=v),
        max_attempts: if want.requested_vmid.is_some() { 1 } else { 8 },
        wait: None,
    };
    let allocated = client.allocate_vmid_and_clone(&req).await;
    let (vmid, upid) = match allocated {
        Ok(CloneAllocation::Submitted { vmid, upid, .. }) => {
            in_flight.set(Some((vmid, upid.node.clone())));
            (vmid, upid)
        }
        Ok(CloneAllocation::Adopted { vmid, .. }) | Ok(CloneAllocation::Completed { vmid, .. }) => {
            return Ok(vmid)
        }
        Err(PveError::Clone { newid, source, .. })
            if source.disposition() == Disposition::OutcomeUnknown =>
        {
            return resolve(ctx, want, marker_line, newid, *source, in_flight).await;
        }
        Err(e) => return Err(AttemptError::pve(e)),
    };
    // the clone holds its storage and node permits until its end is seen
    let wait = WaitOptions {
        eager: true,
        ..exec.wait_opts(exec.timeouts.clone)
    };
    let watched = client.watch_task(&upid, &wait).await;
    // Only an unknown outcome leaves the clone possibly running; any other end is seen.
    if !matches!(&watched, Err(e) if e.disposition() == Disposition::OutcomeUnknown) {
        in_flight.set(None);
    }
    match watched {
        Ok(_) => Ok(vmid),
        // Someone took the id between our probe and the task: this process never offers it
        // again, so the next attempt clones to another id.
        Err(e) if is_id_conflict(&e, vmid) => Err(AttemptError::with(e, Disposition::Transient)),
        Err(e) if e.disposition() == Disposition::OutcomeUnknown => {
            resolve(ctx, want, marker_line, vmid, e, in_flight).await
        }
        Err(e) => Err(AttemptError::pve(e)),
    }
}

/// What the cluster shows about a clone whose outcome is unknown.
enum Seen {
    /// A VM carrying our marker (the clone), on this node.
    Ours(u32, String),
    /// The clone's VMID is held by a VM that is not ours: our clone never happened.
    Taken,
}

/// A read error inside the settle loop: keep looking through transient ones.
struct Look(PveError);
impl Classify for Look {
    fn disposition(&self) -> Disposition {
        match self.0.disposition() {
            Disposition::Permanent => Disposition::Permanent,
            _ => Disposition::Transient,
        }
    }
}

/// Re-read the cluster for the clone sent to `newid` (see the module doc).
async fn resolve(
    ctx: &VmCtx<'_>,
    want: &DesiredVm,
    marker_line: &str,
    newid: u32,
    cause: PveError,
    in_flight: &InFlight,
) -> Result<u32, AttemptError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let name = want.physical_name.0.as_str();
    let settle = RetryPolicy {
        max_elapsed: exec.timeouts.unknown_settle,
        max_attempts: 0,
        ..exec.timeouts.poll_policy(exec.timeouts.unknown_settle)
    };
    tracing::debug!(vm = %ctx.key, newid, error = %cause, "clone outcome unknown; re-reading the cluster");
    let seen = settle
        .poll(Some(&exec.cancel), || async {
            let rows = client
                .cluster_resources(Some(ResourceType::Vm))
                .await
                .map_err(Look)?;
            let mut taken = false;
            for r in rows {
                let (Some(vmid), Some(node)) = (r.vmid, r.node.clone()) else {
                    continue;
                };
                let cloning = r.lock.as_deref() == Some("clone");
                if r.template || (vmid != newid && r.name.as_deref() != Some(name) && !cloning) {
                    continue;
                }
                match client.vm_config(&node, vmid, false).await {
                    Ok(cfg) if cfg.description_contains(marker_line) => {
                        return Ok(Some(Seen::Ours(vmid, node)))
                    }
                    Ok(_) if vmid == newid => taken = true,
                    Ok(_) => {}
                    Err(e) if e.classify() == ErrorClass::NotFound => {}
                    Err(e) => return Err(Look(e)),
                }
            }
            Ok(if taken { Some(Seen::Taken) } else { None })
        })
        .await;
    match seen {
        Ok(s) => match s.value {
            Seen::Ours(vmid, node) => {
                in_flight.set(Some((vmid, node.clone())));
                settle_clone(ctx, vmid, &node, cause, in_flight).await
            }
            Seen::Taken => {
                in_flight.set(None);
                Err(AttemptError::with(cause, Disposition::Transient))
            }
        },
        // Readable all along and nothing there: the clone did not happen.
        Err(RetryError::GaveUp { last: None, .. }) => {
            in_flight.set(None);
            Err(AttemptError::with(cause, Disposition::Transient))
        }
        Err(RetryError::Cancelled { .. }) => Err(AttemptError::other(
            format!("cancelled while looking for the clone to VMID {newid} ({cause})"),
            Disposition::OutcomeUnknown,
        )),
        Err(e) => Err(AttemptError::other(
            format!(
                "clone to VMID {newid}: outcome unknown ({cause}) and the cluster could not be re-read ({}); not resending; the next apply finds the clone by its ownership marker",
                e.last().map(|l| l.0.to_string()).unwrap_or_default()
            ),
            Disposition::OutcomeUnknown,
        )),
    }
}

/// Wait for our clone `vmid` to leave `lock: clone` (its task still running). It may move to
/// its target node at the end; when it vanishes, its task failed and PVE removed it.
async fn settle_clone(
    ctx: &VmCtx<'_>,
    vmid: u32,
    node: &str,
    cause: PveError,
    in_flight: &InFlight,
) -> Result<u32, AttemptError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let node = std::sync::Mutex::new(node.to_string());
    let current = || match node.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let polled = exec
        .timeouts
        .poll_policy(exec.timeouts.clone)
        .poll(Some(&exec.cancel), || async {
            let here = current();
            match client.vm_status(&here, vmid).await {
                Ok(st) if st.lock.is_none() => Ok(Some(true)),
                Ok(_) => Ok(None),
                Err(e) if e.classify() == ErrorClass::NotFound => {
                    match client.vm_node(vmid).await.map_err(Look)? {
                        // moved to its target node at the end of the clone: look there
                        Some(n) => {
                            if let Ok(mut g) = node.lock() {
                                *g = n;
                            }
                            Ok(None)
                        }
                        None => Ok(Some(false)),
                    }
                }
                Err(e) => Err(Look(e)),
            }
        })
        .await;
    match polled {
        Ok(v) if v.value => Ok(vmid),
        // gone: its task failed and PVE removed it, so a new clone is safe
        Ok(_) => {
            in_flight.set(None);
            Err(AttemptError::with(cause, Disposition::Transient))
        }
        Err(e) => Err(AttemptError::other(
            format!(
                "clone to VMID {vmid}: outcome was unknown ({cause}); the VM carries our marker but did not settle before the clone deadline ({}); not resending",
                e.last().map(|l| l.0.to_string()).unwrap_or_else(|| "still locked".into())
            ),
            Disposition::OutcomeUnknown,
        )),
    }
}
