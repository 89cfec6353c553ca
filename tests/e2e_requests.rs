//! Request accounting and economy (issue 9): the journal and `apply_report.api_calls` count
//! every request the simulator saw (plan phase included); a create needs one `nextid` per
//! apply, not per VM, and no config read twice; a no-op apply reads each VM once (in the
//! plan; a running VM's pending answer holds its config) and writes nothing; the report says
//! what concurrency the windows settled on.

use crate::common;

use common::Harness;
use hyops_pve::commands::module::apply_inner;
use serde_json::Value;

const POOL_HEADER: &str = "disk_size_gb: 40\npost_apply_ssh_readiness: {connectivity_wait_s: 60}\n";

fn run_file(h: &Harness, run_id: &str, name: &str) -> String {
    std::fs::read_to_string(
        h.root()
            .join("logs/module/platform__onprem__platform-vm")
            .join(run_id)
            .join(name),
    )
    .unwrap()
}

fn journal_calls(journal: &str) -> u64 {
    journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "end")
        .filter_map(|v| v["api_calls"].as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_and_the_report_count_every_request_the_simulator_saw() {
    let h = Harness::start().await;
    let ctx = h
        .scaled_ctx(&h.overlay("p.yml", &common::pool::pool_overlay(8, POOL_HEADER)))
        .await;
    let run = apply_inner(&ctx, None, None).await.unwrap();
    let seen = h.sim.counters().total;
    let report: Value = serde_json::from_str(&run_file(&h, &run, "apply_report.json")).unwrap();
    assert_eq!(report["api_calls"], seen, "the report counts every request");
    let journal = run_file(&h, &run, "apply_journal.jsonl");
    assert_eq!(
        journal_calls(&journal),
        seen,
        "the journal counts every request"
    );
    // the plan phase has its own line
    assert!(journal
        .lines()
        .any(|l| l.contains("\"action\":\"plan\"") && l.contains("\"event\":\"end\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_is_created_with_one_nextid_and_one_config_read_per_vm() {
    let h = Harness::start().await;
    let ctx = h
        .scaled_ctx(&h.overlay("p.yml", &common::pool::pool_overlay(12, POOL_HEADER)))
        .await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.calls("GET", "/cluster/nextid"), 1);
    // one per VM after its clone, and the template's (its boot disk, read by the plan)
    assert_eq!(h.calls("GET", "/nodes/{node}/qemu/{vmid}/config"), 12 + 1);
    // the read-back after the apply: one read per (running) VM, config and pending at once
    assert_eq!(h.calls("GET", "/nodes/{node}/qemu/{vmid}/pending"), 12);
    assert_eq!(
        h.calls("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
        0
    );
    // task ends are learned from node listings, not one status read per task and poll
    assert_eq!(h.calls("GET", "/nodes/{node}/tasks/{upid}/status"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_apply_reads_each_vm_once_asks_no_agent_and_writes_nothing() {
    let h = Harness::start().await;
    let ctx = h
        .scaled_ctx(&h.overlay("p.yml", &common::pool::pool_overlay(10, POOL_HEADER)))
        .await;
    apply_inner(&ctx, None, None).await.unwrap();
    // A VM whose agent had not answered within the first apply's (scaled) budget has no
    // recorded addresses; the contract is that such a VM is asked once, every other VM never.
    // On a quiet machine that is none; under load, a few.
    let unrecorded = h.state_json()["outputs"]["vms"]
        .as_object()
        .unwrap()
        .values()
        .filter(|vm| {
            vm["ipv4_addresses"].as_array().is_none_or(|nics| {
                nics.iter()
                    .all(|a| a.as_array().is_none_or(|a| a.is_empty()))
            })
        })
        .count() as u64;
    let before = h.sim.counters();
    let run = apply_inner(&ctx, None, None).await.unwrap();
    let after = h.sim.counters();
    let delta = |m: &str, p: &str| after.get(m, p) - before.get(m, p);
    assert_eq!(after.writes, before.writes, "no write");
    // a running VM's pending answer is its config too; the other config read is the template's
    assert_eq!(delta("GET", "/nodes/{node}/qemu/{vmid}/pending"), 10);
    assert_eq!(delta("GET", "/nodes/{node}/qemu/{vmid}/config"), 1);
    // static addresses recorded by the first apply cannot have changed: no agent read for them
    assert_eq!(
        delta(
            "GET",
            "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"
        ),
        unrecorded
    );
    let report: Value = serde_json::from_str(&run_file(&h, &run, "apply_report.json")).unwrap();
    assert_eq!(report["writes"], 0);
    // the outputs still carry the guest addresses
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(
            h.root()
                .join("state/modules/platform__onprem__platform-vm/latest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["outputs"]["vms"]["vm-003"]["ipv4_addresses"],
        serde_json::json!([["10.40.0.13"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_what_concurrency_each_window_settled_on() {
    let h = Harness::start().await;
    let ctx = h
        .scaled_ctx(&h.overlay("p.yml", &common::pool::pool_overlay(6, POOL_HEADER)))
        .await;
    let run = apply_inner(&ctx, None, None).await.unwrap();
    let report: Value = serde_json::from_str(&run_file(&h, &run, "apply_report.json")).unwrap();
    let windows: Vec<&str> = report["concurrency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window"].as_str().unwrap())
        .collect();
    // clones under their storage (local-lvm, per node) and the template node's long-task
    // window; config/resize/start under the VM node's short-task window
    assert!(windows.contains(&"storage:local-lvm@pve1"), "{windows:?}");
    assert!(windows.contains(&"node:pve1:long"), "{windows:?}");
    assert!(windows.contains(&"node:pve1:short"), "{windows:?}");
    for w in report["concurrency"].as_array().unwrap() {
        assert!(w["settled"].as_u64().unwrap() >= 1);
        assert!(w["completed"].as_u64().unwrap() >= 1);
    }
}
