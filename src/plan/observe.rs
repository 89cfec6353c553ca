//! Reading the observed model from Proxmox: one `/cluster/resources?type=vm` listing, then
//! the configs of the candidate VMs, read concurrently. Classification into ours / not ours
//! is [`crate::plan::observed::classify`]. Knows nothing about state files.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::plan::marker::OwnershipMarker;
use crate::plan::observed::{
    candidate_vmids, classify, ClusterShape, ObservedPool, ObservedVm, PendingValue, PowerState,
    PriorIds, ResourceRow,
};
use crate::pve::{next_start_config, ClusterResource, PveClient, PveError, ResourceType, VmConfig};
use crate::retry::{Classify, Disposition, RetryError, RetryPolicy};

/// How many config reads run at once: as many as the client has connections.
fn read_concurrency(client: &PveClient) -> usize {
    client.max_connections().max(1)
}
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

/// Turn a typed config into the planner's observed VM (its raw map moves, not copied: a
/// plan of 10 000 VMs reads 10 000 of them).
pub fn observed_vm(row: &ResourceRow, cfg: VmConfig) -> ObservedVm {
    let marker = cfg
        .description
        .as_deref()
        .and_then(OwnershipMarker::parse_description);
    let mut config = cfg.raw;
    config.remove("digest");
    if cfg.sshkeys.is_empty() {
        config.remove("sshkeys");
    } else {
        config.insert("sshkeys".into(), cfg.sshkeys.join("\n"));
    }
    ObservedVm {
        vmid: row.vmid,
        node: row.node.clone(),
        name: cfg.name.unwrap_or_else(|| row.name.clone()),
        status: row.status,
        lock: cfg.lock.filter(|l| !l.is_empty()),
        config,
        digest: cfg.digest.unwrap_or_default(),
        marker,
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

/// List the whole cluster in one request: its VMs, and its nodes and storages (shared or
/// per node) for the executor's concurrency (pve-api-notes.md §2.7).
pub async fn list_cluster(
    client: &PveClient,
) -> Result<(Vec<ResourceRow>, ClusterShape), ObserveError> {
    let all = client
        .cluster_resources(None)
        .await
        .map_err(ObserveError::Resources)?;
    let mut shape = ClusterShape::default();
    for r in &all {
        match r.kind.as_str() {
            "node" => {
                if let Some(n) = &r.node {
                    if !shape.nodes.contains(n) {
                        shape.nodes.push(n.clone());
                    }
                }
            }
            "storage" => {
                if let Some(s) = &r.storage {
                    *shape.storages.entry(s.clone()).or_insert(false) |= r.shared;
                }
            }
            _ => {}
        }
    }
    Ok((all.iter().filter_map(resource_row).collect(), shape))
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
    // Each read is its own task, so answers are decoded on every worker while other requests
    // are on the wire (decoded in this task, 32 answers arriving together queued behind each
    // other and held their connections idle). Twice the pool's reads are started so a freed
    // connection is taken at once. A read counts in the caller's call account, as before; a
    // dropped observe (Ctrl-C) aborts the reads it started.
    let account = PveClient::current_account();
    let reads = stream::iter(wanted.iter().filter_map(|id| by_id.get(id).copied()))
        .map(|row| {
            let (client, row, account) = (client.clone(), row.clone(), account.clone());
            AbortOnDrop(tokio::spawn(async move {
                let read = read_one(&client, &row, clone_lock_wait);
                match account {
                    Some(a) => PveClient::account(a, read).await,
                    None => read.await,
                }
            }))
        })
        .buffer_unordered(read_concurrency(client) * 2)
        .collect::<Vec<_>>()
        .await;
    let mut configs = Vec::with_capacity(reads.len());
    for r in reads {
        let r = match r {
            Ok(r) => r,
            // a read that panicked: the panic goes on as if the read had run here
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // aborted only by a runtime shutting down, which ends this future too
            Err(_) => continue,
        };
        if let Some(vm) = r? {
            configs.push(vm);
        }
    }
    // The unmarked namesakes, noted before the configs move into the pool (no copy of
    // every config: 10 000 VMs hold tens of MB of them).
    let namesakes: Vec<(u32, String, String)> = configs
        .iter()
        .filter(|vm| expected_names.contains(&vm.name) && vm.marker.is_none())
        .map(|vm| (vm.vmid, vm.name.clone(), vm.node.clone()))
        .collect();
    let mut pool = classify(identity, rows, configs, prior);
    let managed_ids: BTreeSet<u32> = pool.managed.values().map(|m| m.vm.vmid).collect();
    for (vmid, name, node) in namesakes {
        if !managed_ids.contains(&vmid) {
            pool.warnings.push(format!(
                "VM {vmid} '{name}' on node {node} has a name this module uses but carries no hyops-pve ownership marker and is in no previous state; it is not touched"
            ));
        }
    }
    Ok(pool)
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl Classify for VmRead {
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
            match read_vm(client, row).await {
                Ok(vm) => {
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
                Err(e) if e.0.pve().classify() == crate::pve::ErrorClass::NotFound => {
                    Ok(Some(None))
                }
                Err(e) => Err(e),
            }
        })
        .await;
    match polled {
        Ok(v) => Ok(v.value),
        Err(RetryError::Final { error, .. }) => Err(error.0.into_observe(row)),
        // Still under lock: clone after the wait: plan against what it shows.
        Err(_) => read_vm(client, row)
            .await
            .map(Some)
            .map_err(|e| e.0.into_observe(row)),
    }
}

/// A failed read of one candidate, remembering which endpoint failed.
struct VmRead(ReadFailure);
enum ReadFailure {
    Config(PveError),
    Pending(PveError),
}

impl ReadFailure {
    fn pve(&self) -> &PveError {
        match self {
            ReadFailure::Config(e) | ReadFailure::Pending(e) => e,
        }
    }
    fn into_observe(self, row: &ResourceRow) -> ObserveError {
        let (vmid, node) = (row.vmid, row.node.clone());
        match self {
            ReadFailure::Config(source) => ObserveError::Config { vmid, node, source },
            ReadFailure::Pending(source) => ObserveError::Pending { vmid, node, source },
        }
    }
}

/// One candidate in one request. A stopped VM: its config. A running VM: its pending
/// answer, which holds both the config its next start gets (what `GET …/config` answers)
/// and what it runs now (`value`), so what it keeps pending needs no second read (stopped
/// VMs have nothing pending that the next start would not apply anyway).
async fn read_vm(client: &PveClient, row: &ResourceRow) -> Result<ObservedVm, VmRead> {
    if row.status == PowerState::Running {
        let rows = client
            .vm_pending(&row.node, row.vmid)
            .await
            .map_err(|e| VmRead(ReadFailure::Pending(e)))?;
        let mut vm = observed_vm(row, next_start_config(&rows));
        vm.pending = pending_map(&rows);
        Ok(vm)
    } else {
        client
            .vm_config(&row.node, row.vmid, false)
            .await
            .map(|cfg| observed_vm(row, cfg))
            .map_err(|e| VmRead(ReadFailure::Config(e)))
    }
}
