//! The remove step: graceful shutdown (bounded), a hard stop when the guest ignores it, then
//! delete with purge. A VM already gone counts as removed; `protection mode enabled` fails
//! at once (permanent, sent once); an unknown outcome is settled by reading the VM's status.

use crate::apply::executor::StepError;
use crate::apply::limits::Place;
use crate::apply::steps::{run_step, submit_wait_confirm, AttemptError, Confirm, VmCtx};
use crate::pve::ErrorClass;
use crate::retry::RetryPolicy;

/// Shut `ctx.vmid` down within the shutdown timeout, then stop it hard when the guest
/// ignores that. A stopped VM is left alone. Returns whether the VM exists (a VM already
/// gone counts as stopped).
pub(crate) async fn power_off(ctx: &VmCtx<'_>) -> Result<bool, StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let t = &exec.timeouts;
    // A step of its own, so its request is journalled like every other.
    let running = run_step(ctx, "status", RetryPolicy::once(), None, || async {
        match client.vm_status(node, vmid).await {
            Ok(st) => Ok(Some(st.is_running())),
            Err(e) if e.classify() == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(AttemptError::pve(e)),
        }
    })
    .await?;
    let Some(running) = running else {
        return Ok(false);
    };
    let stopped = || async {
        Ok(match client.vm_status(node, vmid).await {
            Ok(st) if st.is_running() => Confirm::NotDone,
            Ok(_) => Confirm::Done,
            Err(e) if e.classify() == ErrorClass::NotFound => Confirm::Done,
            Err(e) => return Err(e),
        })
    };
    if !running {
        return Ok(true);
    }
    let timeout_s = t.shutdown.as_secs().min(u32::MAX as u64) as u32;
    let wait = exec.wait_opts(t.shutdown + t.shutdown_grace);
    let graceful = run_step(
        ctx,
        "shutdown",
        RetryPolicy::once(),
        Some(Place::Node(node)),
        || async {
            submit_wait_confirm(
                ctx,
                &wait,
                || async {
                    client
                        .shutdown(node, vmid, Some(timeout_s), false)
                        .await
                        .map(Some)
                },
                stopped,
            )
            .await
        },
    )
    .await;
    if let Err(e) = graceful {
        if matches!(e, StepError::Cancelled { .. }) {
            return Err(e);
        }
        let wait = exec.wait_opts(t.delete);
        run_step(
            ctx,
            "stop",
            t.policy(t.delete),
            Some(Place::Node(node)),
            || async {
                submit_wait_confirm(
                    ctx,
                    &wait,
                    || async { client.stop(node, vmid).await.map(Some) },
                    stopped,
                )
                .await
            },
        )
        .await?;
    }
    Ok(true)
}

/// Remove `ctx.vmid` from `ctx.node`.
pub(crate) async fn remove(ctx: &VmCtx<'_>) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let t = &exec.timeouts;
    // power_off's status read also tells whether there is anything to delete
    if !power_off(ctx).await? {
        return Ok(());
    }
    let wait = exec.wait_opts(t.delete);
    run_step(
        ctx,
        "delete",
        t.policy(t.delete),
        Some(Place::Node(node)),
        || async {
            let r = submit_wait_confirm(
                ctx,
                &wait,
                || async { client.delete_vm(node, vmid, true, true).await.map(Some) },
                || async {
                    Ok(match client.vm_status(node, vmid).await {
                        Err(e) if e.classify() == ErrorClass::NotFound => Confirm::Done,
                        Err(e) => return Err(e),
                        Ok(_) => Confirm::NotDone,
                    })
                },
            )
            .await;
            match r {
                Err(e) if e.class() == Some(ErrorClass::NotFound) => Ok(()),
                other => other,
            }
        },
    )
    .await
}
