//! Reading the observed model from Proxmox: one `/cluster/resources?type=vm` listing, then
//! the configs of the candidate VMs, read concurrently. Classification into ours / not ours
//! is [`crate::plan::observed::classify`]. Knows nothing about state files.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::inputs::model::LogicalVmKey;
use crate::plan::marker::OwnershipMarker;
use crate::plan::observed::{
    candidate_vmids, classify, ObservedPool, ObservedVm, PendingValue, PowerState, PriorIds,
    ResourceRow,
};
use crate::pve::{ClusterResource, PveClient, PveError, ResourceType, VmConfig};
use crate::retry::{Classify, Disposition, RetryError, RetryPolicy};

/// How many config reads run at once.
const READ_CONCURRENCY: usize = 8;
/// How long (at time scale 1) to wait for a candidate under `lock: clone` (a clone still
/// running, possibly from a run that crashed) before planning against what it shows. Callers
/// pass it scaled by the engine's time scale, like every other engine deadline.
pub const CLONE_LOCK_WAIT: Duration = Duration::from_secs(600);

/// Errors while observing.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("listing VMs via GET /cluster/resources failed: {0}")]
    Resources(#[source] PveError),
    #[error("reading the pending changes of VM {vmid} on node {node} failed: {source}")]
    Pending {
        vmid: u32,
        node: String,
        #[source]
        source: PveError,
    },
    #[error("reading the config of VM {vmid} on node {node} failed: {source}")]
    Config {
        vmid: u32,
        node: String,
        #[source]
        source: PveError,
    },
}

/// Map a `/cluster/resources` row to the planner's row (qemu VMs only).
pub fn resource_row(r: &ClusterResource) -> Option<ResourceRow> {
    if !r.is_qemu() {
        return None;
    }
    let vmid = r.vmid?;
    Some(ResourceRow {
        vmid,
        node: r.node.clone().unwrap_or_default(),
        name: r.name.clone().unwrap_or_default(),
        status: match r.status.as_deref() {
            Some("running") => PowerState::Running,
            Some("stopped") => PowerState::Stopped,
            _ => PowerState::Other,
        },
        template: r.template,
        lock: r.lock.clone().filter(|l| !l.is_empty()),
        tags: r
            .tags
            .as_deref()
            .map(|t| crate::plan::props::tag_set(t).into_iter().collect())
            .unwrap_or_default(),
    })
}

/// Turn a typed config into the planner's observed VM.
pub fn observed_vm(row: &ResourceRow, cfg: &VmConfig) -> ObservedVm {
    let mut config = cfg.raw.clone();
    config.remove("digest");
    if cfg.sshkeys.is_empty() {
        config.remove("sshkeys");
    } else {
        config.insert("sshkeys".into(), cfg.sshkeys.join("\n"));
    }
    ObservedVm {
        vmid: row.vmid,
        node: row.node.clone(),
        name: cfg.name.clone().unwrap_or_else(|| row.name.clone()),
        status: row.status,
        lock: cfg.lock.clone().filter(|l| !l.is_empty()),
        config,
        digest: cfg.digest.clone().unwrap_or_default(),
        marker: cfg
            .description
            .as_deref()
            .and_then(OwnershipMarker::parse_description),
        pending: BTreeMap::new(),
    }
}

/// The keys of a `GET …/pending` answer that wait for the next start.
pub fn pending_map(rows: &[crate::pve::PendingEntry]) -> BTreeMap<String, PendingValue> {
    rows.iter()
        .filter(|r| r.is_pending() && r.key != "digest")
        .map(|r| {
            (
                r.key.clone(),
                PendingValue {
                    current: r.value.clone(),
                    pending: if r.delete.unwrap_or(0) > 0 {
                        None
                    } else {
                        r.pending.clone()
                    },
                },
            )
        })
        .collect()
}

/// List the cluster's VMs.
pub async fn list_vms(client: &PveClient) -> Result<Vec<ResourceRow>, ObserveError> {
    let all = client
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .map_err(ObserveError::Resources)?;
    Ok(all.iter().filter_map(resource_row).collect())
}

/// Read the candidates and classify them. `expected_names` are physical names this slot
/// wants or had: a VM bearing one is read so a crashed run's clone (marker, no tag yet) is
/// found, and so a foreign namesake can be reported.
pub async fn observe(
    client: &PveClient,
    identity: &OwnershipMarker,
    rows: &[ResourceRow],
    prior: &PriorIds,
    expected_names: &BTreeSet<String>,
    clone_lock_wait: Duration,
) -> Result<ObservedPool, ObserveError> {
    let mut wanted = candidate_vmids(rows, prior);
    for r in rows {
        // A clone in flight may not show its name yet; read it (after its task) so a clone
        // submitted by a run that crashed is found by its marker instead of duplicated.
        if !r.template && (expected_names.contains(&r.name) || r.lock.as_deref() == Some("clone")) {
            wanted.insert(r.vmid);
        }
    }
    let by_id: BTreeMap<u32, &ResourceRow> = rows.iter().map(|r| (r.vmid, r)).collect();
    let reads = stream::iter(wanted.iter().filter_map(|id| by_id.get(id).copied()))
        .map(|row| async move { read_one(client, row, clone_lock_wait).await })
        .buffer_unordered(READ_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut configs = Vec::with_capacity(reads.len());
    for r in reads {
        if let Some(vm) = r? {
            configs.push(vm);
        }
    }
    let mut pool = classify(identity, rows, configs.clone(), prior);
    // What running managed VMs keep pending (one read each; stopped VMs have nothing pending
    // that the next start would not apply anyway).
    let running: Vec<(LogicalVmKey, String, u32)> = pool
        .managed
        .iter()
        .filter(|(_, m)| m.vm.status == PowerState::Running)
        .map(|(k, m)| (k.clone(), m.vm.node.clone(), m.vm.vmid))
        .collect();
    let pendings = stream::iter(running.into_iter().map(|(k, node, vmid)| async move {
        (k, node.clone(), vmid, client.vm_pending(&node, vmid).await)
    }))
    .buffer_unordered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    for (key, node, vmid, res) in pendings {
        let rows = match res {
            Ok(rows) => rows,
            Err(e) if e.classify() == crate::pve::ErrorClass::NotFound => continue,
            Err(source) => return Err(ObserveError::Pending { vmid, node, source }),
        };
        if let Some(m) = pool.managed.get_mut(&key) {
            m.vm.pending = pending_map(&rows);
        }
    }
    let managed_ids: BTreeSet<u32> = pool.managed.values().map(|m| m.vm.vmid).collect();
    for vm in &configs {
        if !managed_ids.contains(&vm.vmid)
            && expected_names.contains(&vm.name)
            && vm.marker.is_none()
        {
            pool.warnings.push(format!(
                "VM {} '{}' on node {} has a name this module uses but carries no hyops-pve ownership marker and is in no previous state; it is not touched",
                vm.vmid, vm.name, vm.node
            ));
        }
    }
    Ok(pool)
}

/// Why a candidate's config could not be read (for the poll loop).
struct ConfigRead(PveError);

impl Classify for ConfigRead {
    fn disposition(&self) -> Disposition {
        // The client already retried transient answers; what reaches here is final.
        Disposition::Permanent
    }
}

async fn read_one(
    client: &PveClient,
    row: &ResourceRow,
    wait: Duration,
) -> Result<Option<ObservedVm>, ObserveError> {
    // A clone still in flight (perhaps from a run that crashed) has a temporary config:
    // wait for the real one (polling on the one retry policy) rather than plan against it.
    let interval = |d: Duration| d.min(wait / 4).max(Duration::from_millis(1));
    let poll = RetryPolicy {
        initial: interval(Duration::from_millis(200)),
        max_interval: interval(Duration::from_secs(5)),
        jitter: 0.0,
        max_elapsed: wait,
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    let warned = std::sync::atomic::AtomicBool::new(false);
    let polled = poll
        .poll(None, || async {
            match client.vm_config(&row.node, row.vmid, false).await {
                Ok(cfg) => {
                    let vm = observed_vm(row, &cfg);
                    Ok(if vm.lock.as_deref() == Some("clone") {
                        if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(
                                "VM {} on node {} is under lock: clone (a clone in flight); waiting up to {} s for it to finish",
                                row.vmid,
                                row.node,
                                wait.as_secs()
                            );
                        }
                        None
                    } else {
                        Some(Some(vm))
                    })
                }
                // Gone between the listing and the read: nothing to manage.
                Err(e) if e.classify() == crate::pve::ErrorClass::NotFound => Ok(Some(None)),
                Err(e) => Err(ConfigRead(e)),
            }
        })
        .await;
    match polled {
        Ok(v) => Ok(v.value),
        Err(RetryError::Final { error, .. }) => Err(ObserveError::Config {
            vmid: row.vmid,
            node: row.node.clone(),
            source: error.0,
        }),
        // Still under lock: clone after the wait: plan against what it shows.
        Err(_) => {
            let cfg = client
                .vm_config(&row.node, row.vmid, false)
                .await
                .map_err(|source| ObserveError::Config {
                    vmid: row.vmid,
                    node: row.node.clone(),
                    source,
                })?;
            Ok(Some(observed_vm(row, &cfg)))
        }
    }
}
