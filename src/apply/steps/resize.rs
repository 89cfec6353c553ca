//! The resize step: grow one disk to an absolute size. The first attempt takes the current
//! size from the config the previous step read (no re-read); every later attempt re-reads it
//! (growing to the current size is a no-op; a size below the current one is never sent), so
//! an unknown outcome is settled by that same re-read. After a grow, the run's known config
//! carries the new `size=` (as Proxmox writes it: qemu-server's resize_vm sets the drive's
//! size to the new size), so the facts built from it match a fresh read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::apply::executor::StepError;
use crate::apply::limits::Place;
use crate::apply::steps::{run_step, submit_wait_confirm, AttemptError, Confirm, VmCtx};
use crate::plan::props;
use crate::pve::{DiskSize, DiskSlot, DiskSpec};

/// Grow `disk` of `ctx.vmid` to `to_bytes` (bytes). `known` is the VM's config as last read
/// (or written) by this run, if any; after a grow its `disk` entry carries the new size.
pub(crate) async fn resize(
    ctx: &VmCtx<'_>,
    disk: &str,
    to_bytes: u64,
    known: Option<&mut BTreeMap<String, String>>,
) -> Result<(), StepError> {
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
    let known_size = known
        .as_deref()
        .and_then(|c| c.get(disk))
        .map(|s| props::disk_size_bytes(s));
    let first = AtomicBool::new(known_size.is_some());
    let grown = run_step(
        ctx,
        "resize",
        exec.timeouts.policy(exec.timeouts.resize),
        Some(Place::Node(node)),
        || async {
            let current = match known_size {
                Some(k) if first.swap(false, Ordering::Relaxed) => k,
                _ => size_now().await.map_err(AttemptError::pve)?,
            };
            if current.is_some_and(|c| c >= to_bytes) {
                return Ok(false);
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
            .map(|()| true)
        },
    )
    .await?;
    if let (true, Some(config)) = (grown, known) {
        if let Some(spec) = config.get_mut(disk) {
            *spec = with_size(spec, to_bytes);
        }
    }
    Ok(())
}

/// `spec` (a disk's config value) with `size=` set to `bytes`, in Proxmox's key order (see
/// [`DiskSpec`]'s Display). A spec that does not parse keeps its other text and gets the new
/// `size=` in place of the old one.
fn with_size(spec: &str, bytes: u64) -> String {
    match spec.parse::<DiskSpec>() {
        Ok(mut d) => {
            d.size = Some(DiskSize(bytes));
            d.to_string()
        }
        Err(_) => {
            let mut parts: Vec<String> = crate::pve::split_property_string(spec)
                .into_iter()
                .filter(|(k, _)| k != "size")
                .map(|(k, v)| if k.is_empty() { v } else { format!("{k}={v}") })
                .collect();
            parts.push(format!("size={}", DiskSize(bytes)));
            parts.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_disk_spec_carries_the_new_size_where_proxmox_prints_it() {
        assert_eq!(
            with_size(
                "local-lvm:vm-100-disk-0,iothread=1,size=32G,ssd=1",
                40 << 30
            ),
            "local-lvm:vm-100-disk-0,iothread=1,size=40G,ssd=1"
        );
        assert_eq!(
            with_size("local-lvm:vm-100-disk-0", 40 << 30),
            "local-lvm:vm-100-disk-0,size=40G"
        );
    }
}
