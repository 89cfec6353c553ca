//! The resize step: grow one disk to an absolute size. Every attempt re-reads the current
//! size first (growing to the current size is a no-op; a size below the current one is
//! never sent), so an unknown outcome is settled by that same re-read.

use crate::apply::executor::StepError;
use crate::apply::steps::{run_step, submit_wait_confirm, AttemptError, Confirm, VmCtx};
use crate::plan::props;
use crate::pve::{DiskSize, DiskSlot};

/// Grow `disk` of `ctx.vmid` to `to_bytes` (bytes).
pub(crate) async fn resize(ctx: &VmCtx<'_>, disk: &str, to_bytes: u64) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let slot: DiskSlot = disk
        .parse()
        .map_err(|e| ctx.other("resize", format!("disk {disk}: {e}")))?;
    let wait = exec.wait_opts(exec.timeouts.resize);
    let size_now = || async {
        let cfg = client.vm_config(node, vmid, false).await?;
        let spec = cfg.raw.get(disk).cloned().unwrap_or_default();
        Ok::<_, crate::pve::PveError>(props::disk_size_bytes(&spec))
    };
    let storage = || async {
        let cfg = client.vm_config(node, vmid, false).await.ok()?;
        cfg.raw
            .get(disk)
            .and_then(|s| s.split(':').next())
            .map(str::to_string)
    };
    let storage = storage().await;
    ctx.read();
    run_step(
        ctx,
        "resize",
        exec.timeouts.policy(exec.timeouts.resize),
        Some((node, storage.as_deref())),
        || async {
            ctx.read();
            let current = size_now().await.map_err(AttemptError::pve)?;
            if current.is_some_and(|c| c >= to_bytes) {
                return Ok(());
            }
            submit_wait_confirm(
                ctx,
                &wait,
                || async {
                    client
                        .resize(node, vmid, slot, DiskSize(to_bytes))
                        .await
                        .map(Some)
                },
                || async {
                    Ok(match size_now().await? {
                        Some(c) if c >= to_bytes => Confirm::Done,
                        _ => Confirm::NotDone,
                    })
                },
            )
            .await
        },
    )
    .await
}
