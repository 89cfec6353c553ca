//! The config step: write the owned config keys that differ from what Proxmox has, and the
//! cloud-init regeneration of a running VM. Every attempt re-reads the config first (so a
//! digest mismatch or an unknown outcome never resends a stale write) and waits out our own
//! clone's `lock: clone` through the policy.

use std::collections::BTreeMap;

use crate::apply::executor::StepError;
use crate::apply::steps::{run_step, submit_wait_confirm, AttemptError, Confirm, VmCtx};
use crate::plan::desired::{net_value, DesiredVm};
use crate::plan::diff::config_value_matches;
use crate::plan::props;
use crate::pve::{ConfigUpdate, VmConfig};
use crate::retry::Disposition;

/// Converge the config of `ctx.vmid` to `planned_set` / `planned_delete`.
pub(crate) async fn configure(
    ctx: &VmCtx<'_>,
    want: &DesiredVm,
    planned_set: &BTreeMap<String, String>,
    planned_delete: &[String],
) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let wait = exec.wait_opts(exec.timeouts.config);
    run_step(
        ctx,
        "config",
        exec.timeouts.policy(exec.timeouts.config),
        Some((node, None)),
        || async {
            ctx.read();
            let cfg = client
                .vm_config(node, vmid, false)
                .await
                .map_err(AttemptError::pve)?;
            if let Some(lock) = &cfg.lock {
                // our clone's task is still finishing, or a backup holds the VM
                return Err(AttemptError::other(
                    format!("VM {vmid} is locked ({lock})"),
                    Disposition::Transient,
                ));
            }
            let Some(update) = build_update(want, &cfg, planned_set, planned_delete) else {
                return Ok(());
            };
            submit_wait_confirm(
                ctx,
                &wait,
                || client.update_config_async(node, vmid, &update),
                || async {
                    let now = client.vm_config(node, vmid, false).await?;
                    Ok(
                        match build_update(want, &now, planned_set, planned_delete) {
                            None => Confirm::Done,
                            Some(_) => Confirm::NotDone,
                        },
                    )
                },
            )
            .await
        },
    )
    .await
}

/// `PUT …/cloudinit` for a running VM whose cloud-init keys changed (idempotent, so an
/// unknown outcome is simply sent again).
pub(crate) async fn regenerate_cloudinit(ctx: &VmCtx<'_>) -> Result<(), StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let wait = exec.wait_opts(exec.timeouts.config);
    run_step(
        ctx,
        "cloudinit",
        exec.timeouts.policy(exec.timeouts.config),
        Some((node, None)),
        || {
            submit_wait_confirm(
                ctx,
                &wait,
                || async { client.cloudinit_regenerate(node, vmid).await.map(|_| None) },
                || async { Ok(Confirm::NotDone) },
            )
        },
    )
    .await
}

/// The config write still needed against `cfg` (None when everything already matches).
pub(crate) fn build_update(
    want: &DesiredVm,
    cfg: &VmConfig,
    planned_set: &BTreeMap<String, String>,
    planned_delete: &[String],
) -> Option<ConfigUpdate> {
    let mut observed = cfg.raw.clone();
    if cfg.sshkeys.is_empty() {
        observed.remove("sshkeys");
    } else {
        observed.insert("sshkeys".into(), cfg.sshkeys.join("\n"));
    }
    let mut update = ConfigUpdate::new();
    let mut any = false;
    for (k, v) in planned_set {
        let before = observed.get(k).map(String::as_str);
        // A `netN` the plan wrote with a MAC (the NIC's own, carried from wherever it was)
        // must match that MAC; the other owned keys compare semantically.
        let desired_now = if k.starts_with("net") && props::net_mac(v).is_some() {
            v.clone()
        } else {
            want.owned_config()
                .get(k)
                .cloned()
                .unwrap_or_else(|| v.clone())
        };
        if config_value_matches(k, before, &desired_now) {
            continue;
        }
        any = true;
        update = if k == "sshkeys" {
            let keys: Vec<String> = v.lines().map(str::to_string).collect();
            update.sshkeys(&keys)
        } else if let Some(idx) = k.strip_prefix("net").and_then(|i| i.parse::<usize>().ok()) {
            // The MAC the plan chose for this NIC, else whatever the VM has on this slot (a
            // clone's fresh one).
            let keep = props::net_mac(v).or_else(|| before.and_then(props::net_mac));
            match want.nics.iter().find(|n| n.index == idx) {
                Some(nic) => update.raw(k, &net_value(nic, keep.as_deref())),
                None => update.raw(k, v),
            }
        } else {
            update.raw(k, v)
        };
    }
    for k in planned_delete {
        if observed.contains_key(k) {
            any = true;
            update = update.delete(k);
        }
    }
    if let Some(d) = &cfg.digest {
        update = update.digest(d);
    }
    any.then_some(update)
}
