//! The remove step: graceful shutdown (bounded), a hard stop when the guest ignores it, then
//! delete with purge. A VM already gone counts as removed; `protection mode enabled` fails
//! at once (permanent, sent once); an unknown outcome is settled by reading the VM's status.

use crate::apply::executor::StepError;
use crate::apply::steps::{run_step, submit_wait_confirm, Confirm, VmCtx};
use crate::pve::ErrorClass;

/// Shut `ctx.vmid` down within the shutdown timeout, then stop it hard when the guest
/// ignores that. A stopped VM is left alone; a VM already gone counts as stopped.
pub(crate) async fn power_off(ctx: &VmCtx<'_>) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let t = &exec.timeouts;
    ctx.read();
    let running = match client.vm_status(node, vmid).await {
        Ok(st) => st.is_running(),
        Err(e) if e.classify() == ErrorClass::NotFound => return Ok(()),
        Err(e) => return Err(ctx.other("shutdown", e.to_string())),
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
        return Ok(());
    }
    let timeout_s = t.shutdown.as_secs().min(u32::MAX as u64) as u32;
    let wait = exec.wait_opts(t.shutdown + t.shutdown_grace);
    let graceful = run_step(
        ctx,
        "shutdown",
        crate::retry::RetryPolicy::once(),
        Some((node, None)),
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
            Some((node, None)),
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
    Ok(())
}

/// Remove `ctx.vmid` from `ctx.node`.
pub(crate) async fn remove(ctx: &VmCtx<'_>) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let t = &exec.timeouts;
    ctx.read();
    match client.vm_status(node, vmid).await {
        Ok(_) => {}
        Err(e) if e.classify() == ErrorClass::NotFound => return Ok(()),
        Err(e) => return Err(ctx.other("shutdown", e.to_string())),
    }
    power_off(ctx).await?;
    let wait = exec.wait_opts(t.delete);
    run_step(
        ctx,
        "delete",
        t.policy(t.delete),
        Some((node, None)),
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
