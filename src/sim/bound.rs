//! The rollout lower bound of the simulator's cost model: no client, however it schedules,
//! can roll a pool out on the simulated cluster faster than this. Speed is always stated as
//! a ratio to it (`benches/rollout.rs`).
//!
//! Derivation. Every VM of the rollout needs, in order (simulated ms, [`LatencyModel`]):
//! - `pre`: one listing of the cluster, the clone request, the worker's fixed part
//!   (`clone_base_ms`) and its first volume operation under the storage lock
//!   (`storage_alloc_ms` for a full clone, `linked_clone_ms` for a linked one);
//! - `copy` (full clones only): the template's allocated data at no more than one stream's
//!   rate (`stream_mbs`, the storage's `bandwidth_mbs`, the node's `node_bandwidth_mbs`);
//! - `post`: the cloud-init volume under the storage lock, one read to learn the clone ended,
//!   the config write, the resize task and its read, the start task and its read, then the
//!   guest's boot (`boot_delay_ms`) and the agent read that sees it.
//!
//! Four kinds of bound follow, and the rollout takes at least the largest:
//! 1. **critical path**: `pre + copy + post` of the slowest VM;
//! 2. **bandwidth** of each link `r` (a storage instance, a node's I/O path): the bytes all
//!    copies move through it over its capacity, plus the smallest `pre` before any copy can
//!    start and the smallest remainder after the last byte moved (the last copy's VM still
//!    needs its `post`);
//! 3. **storage lock** of each storage instance: allocations serialise on it, so the sum of
//!    their hold times, plus the smallest time before the first and after the last hold;
//! 4. **task slots** of each node: the minimal task time placed on the node over its slots
//!    (copies at their fastest).
//!
//! Request latency counts once per request the work cannot do without; everything the cost
//! model adds under contention (lock waits, shared bandwidth) only makes a real rollout
//! slower, never faster, so this is a true lower bound of the model. Knows nothing about the
//! engine.

use std::collections::BTreeMap;

use super::latency::LatencyModel;
use super::model::ClusterDescription;

/// One VM of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct VmWork {
    /// The template cloned (a `templates` entry of the cluster).
    pub template_vmid: u32,
    /// Full clone (copies the data) or linked clone.
    pub full: bool,
    /// A full clone's target storage (default: the template's).
    pub storage: Option<String>,
    /// The node the VM ends on (config, resize and start run there).
    pub node: String,
    /// The boot disk is grown after the clone.
    pub resize: bool,
    /// The VM is started.
    pub start: bool,
    /// The rollout waits for the guest agent after the start.
    pub wait_agent: bool,
    /// The rollout waits until the guest's sshd answers (the post-apply SSH readiness gate):
    /// `ssh_boot_ms` after the start at the earliest (a VM's jitter share can be 0).
    pub wait_ssh: bool,
}

/// The bound and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct LowerBound {
    /// The bound, simulated milliseconds.
    pub total_ms: f64,
    /// The term that sets it, e.g. `bandwidth of storage:ceph-vm`.
    pub binding: String,
    /// Every term (name, simulated ms), largest first.
    pub terms: Vec<(String, f64)>,
}

#[derive(Default)]
struct Use {
    busy: f64,
    pre: f64,
    post: f64,
}

impl Use {
    fn add(&mut self, busy: f64, pre: f64, post: f64) {
        if self.busy == 0.0 {
            self.pre = pre;
            self.post = post;
        } else {
            self.pre = self.pre.min(pre);
            self.post = self.post.min(post);
        }
        self.busy += busy;
    }
}

fn instance(cluster: &ClusterDescription, storage: &str, node: &str) -> Result<String, String> {
    let d = cluster
        .storage_on(storage, node)
        .ok_or_else(|| format!("storage {storage} is not available on node {node}"))?;
    Ok(if d.shared {
        storage.to_string()
    } else {
        format!("{storage}@{node}")
    })
}

/// The lower bound of rolling out `vms` on `cluster` under `model` (see the module doc).
pub fn rollout_lower_bound(
    model: &LatencyModel,
    cluster: &ClusterDescription,
    vms: &[VmWork],
) -> Result<LowerBound, String> {
    let r = model.request_ms as f64;
    let mut critical: f64 = 0.0;
    let mut links: BTreeMap<String, Use> = BTreeMap::new();
    let mut locks: BTreeMap<String, Use> = BTreeMap::new();
    let mut slots: BTreeMap<String, f64> = BTreeMap::new();
    for vm in vms {
        let t = cluster
            .templates
            .iter()
            .find(|t| t.vmid == vm.template_vmid)
            .ok_or_else(|| format!("template {} is not in the cluster", vm.template_vmid))?;
        let task_node = t.node.as_str();
        let src = instance(cluster, &t.storage, task_node)?;
        // after the clone task: its read, the config write, resize, start, boot, agent read
        let mut tail = r + r + model.config_ms as f64;
        if vm.resize {
            tail += r + model.resize_ms as f64 + r;
        }
        if vm.start {
            tail += r + model.start_ms as f64 + r;
            // the guest boots once; the rollout waits for the later of what it asks for
            let mut boot: f64 = 0.0;
            if vm.wait_agent {
                boot = boot.max(model.boot_delay_ms as f64 + r);
            }
            if vm.wait_ssh {
                boot = boot.max(model.ssh_boot_ms as f64);
            }
            tail += boot;
        }
        let alloc = model.storage_alloc_ms as f64;
        let base = r + r + model.clone_base_ms as f64;
        let (pre, copy, post, task_ms) = if vm.full {
            let st = vm.storage.clone().unwrap_or_else(|| t.storage.clone());
            let dst = instance(cluster, &st, task_node)?;
            let size = t.disk_gb << 30;
            let bytes = cluster.copy_bytes(t.vmid, size) as f64;
            let sd = cluster
                .storage_on(&t.storage, task_node)
                .ok_or_else(|| format!("storage {} missing", t.storage))?;
            let dd = cluster
                .storage_on(&st, task_node)
                .ok_or_else(|| format!("storage {st} missing"))?;
            let stream = sd.stream().min(dd.stream()).min(cluster.node_bandwidth_mbs);
            let copy = bytes / (stream * 1000.0);
            let pre = base + alloc;
            let post = alloc + tail;
            let mut used = vec![
                (format!("storage:{src}"), sd.bandwidth_mbs),
                (format!("node:{task_node}"), cluster.node_bandwidth_mbs),
            ];
            if dst != src {
                used.push((format!("storage:{dst}"), dd.bandwidth_mbs));
            }
            for (k, cap) in used {
                links
                    .entry(k)
                    .or_default()
                    .add(bytes / (cap * 1000.0), pre, post);
            }
            // allocations: the disk, then the cloud-init volume, both on the target storage
            locks.entry(dst).or_default().add(2.0 * alloc, base, tail);
            (
                pre,
                copy,
                post,
                model.clone_base_ms as f64 + 2.0 * alloc + copy,
            )
        } else {
            let linked = model.linked_clone_ms as f64;
            locks
                .entry(src)
                .or_default()
                .add(linked + alloc, base, tail);
            (
                base + linked,
                0.0,
                alloc + tail,
                model.clone_base_ms as f64 + linked + alloc,
            )
        };
        critical = critical.max(pre + copy + post);
        *slots.entry(task_node.to_string()).or_default() += task_ms;
        let mut vm_tasks = 0.0;
        if vm.resize {
            vm_tasks += model.resize_ms as f64;
        }
        if vm.start {
            vm_tasks += model.start_ms as f64;
        }
        *slots.entry(vm.node.clone()).or_default() += vm_tasks;
    }
    let mut terms: Vec<(String, f64)> = vec![("critical path of one VM".into(), critical)];
    for (k, u) in &links {
        terms.push((format!("bandwidth of {k}"), u.pre + u.busy + u.post));
    }
    for (k, u) in &locks {
        terms.push((format!("storage lock of {k}"), u.pre + u.busy + u.post));
    }
    let n_slots = model.node_task_slots.max(1) as f64;
    for (node, busy) in &slots {
        terms.push((format!("task slots of node {node}"), busy / n_slots));
    }
    terms.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (binding, total_ms) = terms
        .first()
        .cloned()
        .unwrap_or_else(|| ("nothing to do".into(), 0.0));
    Ok(LowerBound {
        total_ms,
        binding,
        terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(n: usize, node: &str) -> Vec<VmWork> {
        (0..n)
            .map(|_| VmWork {
                template_vmid: 9000,
                full: true,
                storage: Some("ceph-vm".into()),
                node: node.into(),
                resize: true,
                start: true,
                wait_agent: true,
                wait_ssh: false,
            })
            .collect()
    }

    #[test]
    fn one_vm_is_bound_by_its_own_critical_path() {
        let m = LatencyModel::default();
        let c = ClusterDescription::default_cluster();
        let b = rollout_lower_bound(&m, &c, &work(1, "pve1")).unwrap();
        assert_eq!(b.binding, "critical path of one VM");
        // 2.5 GiB at one 150 MB/s stream ≈ 17.9 s, plus 15 s boot, 2.5 s start, …
        assert!((35_000.0..45_000.0).contains(&b.total_ms), "{b:?}");
    }

    #[test]
    fn many_full_clones_are_bound_by_the_slowest_storage_they_read_or_write() {
        let m = LatencyModel::default();
        let c = ClusterDescription::default_cluster();
        // template on pve1's local-lvm (400 MB/s), clones written to ceph-vm (600 MB/s)
        let b = rollout_lower_bound(&m, &c, &work(100, "pve2")).unwrap();
        assert_eq!(b.binding, "bandwidth of storage:local-lvm@pve1");
        // 100 × 2.5 GiB read through 400 MB/s ≈ 671 s
        let copy = 100.0 * 2.5 * (1u64 << 30) as f64 / 400_000.0;
        assert!(b.total_ms > copy && b.total_ms < copy + 30_000.0, "{b:?}");
    }

    #[test]
    fn waiting_for_ssh_adds_what_sshd_needs_beyond_the_agent() {
        let m = LatencyModel::default();
        let c = ClusterDescription::default_cluster();
        let agent = rollout_lower_bound(&m, &c, &work(1, "pve1")).unwrap();
        let mut w = work(1, "pve1");
        w[0].wait_ssh = true;
        let ssh = rollout_lower_bound(&m, &c, &w).unwrap();
        let extra = m.ssh_boot_ms as f64 - (m.boot_delay_ms + m.request_ms) as f64;
        assert!(
            (ssh.total_ms - agent.total_ms - extra).abs() < 1.0,
            "{agent:?} {ssh:?}"
        );
    }
}
