//! The simulator's cost model (issue 9): concurrent full-clone copies share a storage's
//! bandwidth (each no faster than one stream), and allocations serialise on the storage lock,
//! whose waiters time out with Proxmox's messages when too many queue (pve-storage
//! `Plugin.pm` 759–774: a flock for local storage, a pmxcfs lock for shared storage).

use crate::sim_support;

use hyops_pve::sim::{ClusterDescription, LatencyModel, SimConfig};
use sim_support::{start_with, T};
use std::time::{Duration, Instant};

const CLUSTER: &str = "
nodes: [n1]
storages:
  - {id: pool, type: rbd, shared: true, content: [images], bandwidth_mbs: 400, stream_mbs: 100}
  - {id: disk, type: lvmthin, shared: false, content: [images], bandwidth_mbs: 400}
templates:
  - {vmid: 9000, name: tpl, node: n1, storage: pool, disk_gb: 8, data_gb: 1}
  - {vmid: 9100, name: tpl-local, node: n1, storage: disk, disk_gb: 8, data_gb: 1}
";

/// Lock timeouts are faithful from time scale 0.01 up (below it, waits get a real-time floor,
/// see `sim::locks`).
async fn sim(scale: f64, latency: LatencyModel) -> T {
    start_with(SimConfig {
        cluster: ClusterDescription::from_yaml(CLUSTER).unwrap(),
        time_scale: scale,
        latency,
        tls: false,
        ..SimConfig::default()
    })
    .await
}

/// Clone 9000 to `n` new ids at once; returns the exit statuses and the real time taken.
async fn clones(t: &T, src: u32, first: u32, n: u32) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let storage = if src == 9000 { "pool" } else { "disk" };
    let form = [("full", "1"), ("storage", storage)];
    let runs = (0..n).map(|i| t.clone_vm("n1", src, first + i, &form));
    let out = futures::future::join_all(runs).await;
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_run_at_one_stream_each_until_the_storage_is_saturated_then_share_it() {
    // 1 GiB at 100 MB/s per stream: ~10.7 s of copy; the storage serves 4 streams at full rate.
    let t = sim(0.01, LatencyModel::default()).await;
    let (s1, alone) = clones(&t, 9000, 200, 1).await;
    let (s4, four) = clones(&t, 9000, 300, 4).await;
    let (s8, eight) = clones(&t, 9000, 400, 8).await;
    assert!(s1.iter().chain(&s4).chain(&s8).all(|s| s == "OK"));
    let r4 = four.as_secs_f64() / alone.as_secs_f64();
    let r8 = eight.as_secs_f64() / alone.as_secs_f64();
    // four streams fit in 400 MB/s (only the allocations queue: ~0.6 s each);
    // eight share it, each at 50 MB/s: the copy takes twice as long
    assert!(
        r4 < 1.35,
        "4 clones took {r4:.2}× one clone ({four:?} vs {alone:?})"
    );
    assert!(
        (1.6..2.6).contains(&r8),
        "8 clones took {r8:.2}× one clone ({eight:?} vs {alone:?})"
    );
}

fn slow_allocation() -> LatencyModel {
    // each allocation holds the storage lock for 4 s: the fourth waiter passes 10 s
    LatencyModel {
        storage_alloc_ms: 4000,
        ..LatencyModel::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_waiters_on_a_shared_storage_lock_fail_with_the_cfs_lock_timeout() {
    let t = sim(0.01, slow_allocation()).await;
    let (statuses, _) = clones(&t, 9000, 500, 6).await;
    let failed: Vec<&String> = statuses.iter().filter(|s| *s != "OK").collect();
    assert!(!failed.is_empty() && failed.len() < 6, "{statuses:?}");
    for s in failed {
        assert_eq!(
            s,
            "clone failed: cfs-lock 'storage-pool' error: got lock request timeout"
        );
    }
    // a failed clone leaves nothing behind
    let st = t.h.state();
    let made = st.vms.keys().filter(|id| (500..506).contains(*id)).count();
    assert_eq!(
        made,
        statuses.iter().filter(|s| *s == "OK").count(),
        "only the successful clones exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_waiters_on_a_local_storage_flock_fail_with_the_pve_storage_timeout() {
    let t = sim(0.01, slow_allocation()).await;
    let (statuses, _) = clones(&t, 9100, 600, 6).await;
    let failed: Vec<&String> = statuses.iter().filter(|s| *s != "OK").collect();
    assert!(!failed.is_empty() && failed.len() < 6, "{statuses:?}");
    for s in failed {
        assert_eq!(
            s,
            "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-disk' - got timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_waiters_on_the_storage_lock_all_get_it() {
    // the default 300 ms allocation: six clones queue at most ~3.6 s for the lock
    let t = sim(0.002, LatencyModel::default()).await;
    let (statuses, _) = clones(&t, 9100, 700, 6).await;
    assert!(statuses.iter().all(|s| s == "OK"), "{statuses:?}");
}
