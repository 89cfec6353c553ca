//! The migrate step: a fresh clone made on the template's node moves offline to its own node
//! (`POST …/migrate` with `targetstorage`), the route `plan::placement` chose because Proxmox
//! clones straight to another node only from shared storage (qemu-server `clone_vm`:
//! `can't clone VM to node '…' (VM uses local storage)`). An unknown outcome is settled by
//! asking the cluster where the VM is.

use crate::apply::executor::StepError;
use crate::apply::steps::{run_step, submit_wait_confirm, Confirm, VmCtx};

/// Move `ctx.vmid` from `from` to `to`, copying its local disks to `targetstorage`.
pub(crate) async fn migrate(
    ctx: &VmCtx<'_>,
    from: &str,
    to: &str,
    targetstorage: Option<&str>,
) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let wait = exec.wait_opts(exec.timeouts.clone);
    let arrived = || async {
        Ok(match client.vm_node(vmid).await? {
            Some(n) if n == to => Confirm::Done,
            _ => Confirm::NotDone,
        })
    };
    run_step(
        ctx,
        "migrate",
        exec.timeouts.policy(exec.timeouts.clone),
        Some((to, targetstorage)),
        || async {
            // already there (an earlier attempt whose answer was lost): done
            ctx.read();
            if let Ok(Confirm::Done) = arrived().await {
                return Ok(());
            }
            submit_wait_confirm(
                ctx,
                &wait,
                || async {
                    client
                        .migrate(from, vmid, to, targetstorage)
                        .await
                        .map(Some)
                },
                arrived,
            )
            .await
        },
    )
    .await
}
