//! Never a stall: a VM of ours left under `lock: clone` (a clone interrupted by a node crash,
//! pve-api-notes §4: "the engine should report this, not loop on it"). Observing the pool
//! waited a fixed 600 real seconds per such VM — unscaled by the engine's time scale, with no
//! word to the operator — before `plan`, `apply` or `destroy` went on to report it. Found by
//! the hostile test pass on issue 7: a `--sim` apply interrupted mid-clone saved such a VM,
//! and every later run sat silent for ten minutes.

use crate::common;

use std::time::Duration;

use common::Harness;
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner};

const DEMO: &str = include_str!("../examples/inputs.sim-demo.yml");

/// Apply the demo pool, then leave app-01's VM under a `lock: clone` nothing will clear.
async fn pool_with_a_stale_clone_lock() -> (Harness, std::path::PathBuf, u32) {
    let h = Harness::start().await;
    let overlay = h.overlay("demo.yml", DEMO);
    let ctx = h.scaled_ctx(&overlay).await;
    apply_inner(&ctx, None, None).await.expect("first apply");
    h.settle().await;
    let vmid = h.state_json()["outputs"]["vm_ids"]["app-01"]
        .as_u64()
        .unwrap() as u32;
    {
        let mut st = h.sim.state();
        let vm = st.vms.get_mut(&vmid).unwrap();
        vm.config.insert("lock".into(), "clone".into());
    }
    (h, overlay, vmid)
}

/// Far above the engine's scaled clone deadline (1800 s × 0.0005 ≈ 1 s), far below the
/// unscaled 600 s the observation used to wait.
const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_does_not_stall_on_a_vm_left_under_clone_lock_and_names_it() {
    let (h, overlay, vmid) = pool_with_a_stale_clone_lock().await;
    let ctx = h.scaled_ctx(&overlay).await;
    let e = tokio::time::timeout(BOUND, plan_inner(&ctx, false, None))
        .await
        .expect("plan finished within the engine's own (scaled) clone deadline")
        .expect_err("a plan against a half-made clone is refused");
    assert!(
        e.message.contains(&format!("vmid {vmid}")) && e.message.contains("qm unlock"),
        "names the locked VM and what to do: {}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_does_not_stall_on_a_vm_left_under_clone_lock() {
    let (h, overlay, _) = pool_with_a_stale_clone_lock().await;
    let ctx = h.scaled_ctx(&overlay).await;
    // The locked VM cannot be deleted (PVE refuses a locked VM); the point is that the run
    // ends, promptly, with its state recorded.
    let _ = tokio::time::timeout(BOUND, destroy_inner(&ctx, None))
        .await
        .expect("destroy finished within the engine's own (scaled) clone deadline");
    let status = h.state_json()["status"].clone();
    assert!(status == "error" || status == "destroyed", "{status}");
}
