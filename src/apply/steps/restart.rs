//! The restart step (`restart_policy: restart`): a running VM keeps changes it cannot take
//! live in `[PENDING]` until its next start (qemu-server `vmconfig_hotplug_pending`), so the
//! apply shuts it down within the shutdown timeout (a hard stop when the guest ignores it)
//! and starts it, which applies the pending config and rebuilds the cloud-init drive.

use crate::apply::executor::StepError;
use crate::apply::steps::{remove::power_off, start::start, VmCtx};

/// Restart `ctx.vmid` so it runs its pending config.
pub(crate) async fn restart(ctx: &VmCtx<'_>) -> Result<(), StepError> {
    power_off(ctx).await?;
    start(ctx).await
}
