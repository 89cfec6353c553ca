//! The start step: `POST …/status/start`; `already running` is success, and an unknown
//! outcome is settled by reading the power state.

use crate::apply::executor::StepError;
use crate::apply::steps::{run_step, submit_wait_confirm, Confirm, VmCtx};
use crate::pve::ErrorClass;

/// Start `ctx.vmid`.
pub(crate) async fn start(ctx: &VmCtx<'_>) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let wait = exec.wait_opts(exec.timeouts.start);
    run_step(
        ctx,
        "start",
        exec.timeouts.policy(exec.timeouts.start),
        Some((node, None)),
        || async {
            let r = submit_wait_confirm(
                ctx,
                &wait,
                || async { client.start(node, vmid).await.map(Some) },
                || async {
                    Ok(if client.vm_status(node, vmid).await?.is_running() {
                        Confirm::Done
                    } else {
                        Confirm::NotDone
                    })
                },
            )
            .await;
            match r {
                Err(e) if e.class() == Some(ErrorClass::AlreadyRunning) => Ok(()),
                other => other,
            }
        },
    )
    .await
}
