//! End-to-end behaviour of plan/apply/destroy/rebuild against the in-process simulator:
//! creation, idempotency proven by the simulator's own counters, in-place updates, resize,
//! shrink refusal, set shrink under the guard rules, crash adoption, foreign VMs, faults.

use crate::common;

use common::{Harness, DEMO};
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner};
use hyops_pve::commands::rebuild::rebuild_inner;
use hyops_pve::sim::{FaultAction, FaultRule};

fn names(h: &Harness) -> Vec<String> {
    let mut n: Vec<String> = h.vms().into_iter().map(|(_, n)| n).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_the_pool_and_publishes_outputs() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(names(&h), vec!["dev-app-01", "dev-app-02", "dev-db-01"]);
    let st = h.state_json();
    assert_eq!(st["status"], "ok");
    assert_eq!(
        st["outputs"]["vm_keys"],
        serde_json::json!(["app-01", "app-02", "db-01"])
    );
    assert_eq!(
        st["outputs"]["vm_names"],
        serde_json::json!(["dev-app-01", "dev-app-02", "dev-db-01"])
    );
    assert_eq!(st["outputs"]["vms"]["app-01"]["ipv4_address"], "10.20.0.11");
    let mac = st["outputs"]["vms"]["app-01"]["mac_address_primary"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = h.config_of("dev-app-01");
    assert!(
        cfg["net0"].contains(&mac),
        "MAC read back from Proxmox: {} vs {mac}",
        cfg["net0"]
    );
    assert!(cfg["scsi0"].contains("size=40G"), "{}", cfg["scsi0"]);
    assert_eq!(cfg["cores"], "2");
    assert!(cfg["description"].contains("hyops-pve:v1;env=dev"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_apply_with_the_same_inputs_sends_zero_writes() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let before = h.sim.counters();
    apply_inner(&ctx, None, None).await.unwrap();
    let after = h.sim.counters();
    assert_eq!(after.writes, before.writes, "re-apply wrote to Proxmox");
    assert_eq!(
        plan_inner(&ctx, true, None).await.unwrap(),
        0,
        "plan shows no changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_vm_publishes_its_grown_disk_and_a_reapply_publishes_the_same_outputs() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let first = h.state_json()["outputs"]["vms"].clone();
    // The template disk is 32G; the clone was grown to disk_size_gb (40) before it started.
    assert!(h.config_of("dev-app-01")["scsi0"].contains("size=40G"));
    assert_eq!(first["app-01"]["disk_gb"], 40, "{first:#}");
    // An unchanged VM publishes from what the plan read: the same facts, field for field.
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.state_json()["outputs"]["vms"], first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_cores_memory_tags_nic_and_ipconfig_updates_in_place() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let ids_before = h.vms();
    let changed = DEMO
        .replace("cpu_cores: 2", "cpu_cores: 4\ntags: [platform, onprem, blue]")
        .replace("memory_mb: 2048", "memory_mb: 4096")
        .replace("10.20.0.11/24", "10.20.0.111/24")
        .replace(
            "      - bridge: vmbr0\n        ipv4: {address: 10.20.0.21/24, gateway: 10.20.0.1}",
            "      - bridge: vmbr0\n        vlan_id: 30\n        ipv4: {address: 10.20.0.21/24, gateway: 10.20.0.1}",
        );
    let ctx2 = h.ctx(&h.overlay("o2.yml", &changed)).await;
    let before = h.sim.counters();
    apply_inner(&ctx2, None, None).await.unwrap();
    let after = h.sim.counters();
    assert_eq!(h.vms(), ids_before, "no VM was replaced");
    let clone = "/nodes/{node}/qemu/{vmid}/clone";
    assert_eq!(after.get("POST", clone), before.get("POST", clone));
    assert_eq!(
        after.get("DELETE", "/nodes/{node}/qemu/{vmid}"),
        before.get("DELETE", "/nodes/{node}/qemu/{vmid}")
    );
    let app = h.config_of("dev-app-01");
    assert_eq!(app["cores"], "4");
    assert_eq!(app["memory"], "4096");
    assert!(app["ipconfig0"].contains("10.20.0.111/24"));
    assert!(app["tags"].contains("blue"));
    assert!(h.config_of("dev-db-01")["net0"].contains("tag=30"));
    // and converged: nothing more to do
    assert_eq!(plan_inner(&ctx2, true, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_the_disk_resizes_and_a_smaller_size_keeps_the_disk() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let grown = h
        .ctx(&h.overlay(
            "g.yml",
            &DEMO.replace("disk_size_gb: 40", "disk_size_gb: 64"),
        ))
        .await;
    apply_inner(&grown, None, None).await.unwrap();
    assert!(h.config_of("dev-app-01")["scsi0"].contains("size=64G"));
    assert_eq!(h.state_json()["outputs"]["vms"]["app-01"]["disk_gb"], 64);
    // disk_size_gb is "at least": asking for less keeps the disk, writes nothing, and the
    // outputs publish the real size
    let smaller = h
        .ctx(&h.overlay(
            "s.yml",
            &DEMO.replace("disk_size_gb: 40", "disk_size_gb: 50"),
        ))
        .await;
    let before = h.sim.counters();
    apply_inner(&smaller, None, None).await.unwrap();
    assert_eq!(h.sim.counters().writes, before.writes, "nothing to write");
    assert!(h.config_of("dev-app-01")["scsi0"].contains("size=64G"));
    assert_eq!(h.state_json()["outputs"]["vms"]["app-01"]["disk_gb"], 64);
    assert_eq!(plan_inner(&smaller, true, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_vm_follows_the_vm_set_guard() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let without_db = DEMO.split("  db-01:").next().unwrap().to_string();
    let ctx2 = h.ctx(&h.overlay("o2.yml", &without_db)).await;
    let err = apply_inner(&ctx2, None, None).await.unwrap_err();
    assert!(
        err.message.contains("vm set collision detected"),
        "{}",
        err.message
    );
    assert_eq!(names(&h).len(), 3);
    let allowed = format!("allow_vm_set_replace: true\n{without_db}");
    let ctx3 = h.ctx(&h.overlay("o3.yml", &allowed)).await;
    apply_inner(&ctx3, None, None).await.unwrap();
    assert_eq!(names(&h), vec!["dev-app-01", "dev-app-02"]);
    assert_eq!(
        h.state_json()["outputs"]["vm_keys"],
        serde_json::json!(["app-01", "app-02"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_only_our_vms_and_marks_the_state_destroyed() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    destroy_inner(&ctx, None).await.unwrap();
    assert!(names(&h).is_empty());
    let st = h.state_json();
    assert_eq!(st["status"], "destroyed");
    assert_eq!(st["outputs"], serde_json::json!({}));
    assert_eq!(st["output_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_destroys_and_reapplies_with_new_vmids() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let clone = "/nodes/{node}/qemu/{vmid}/clone";
    let clones_before = h.sim.counters().get("POST", clone);
    let deletes_before = h.sim.counters().get("DELETE", "/nodes/{node}/qemu/{vmid}");
    assert_eq!(rebuild_inner(&ctx, None).await.unwrap(), 0);
    assert_eq!(names(&h), vec!["dev-app-01", "dev-app-02", "dev-db-01"]);
    assert_eq!(
        h.sim.counters().get("POST", clone),
        clones_before + 3,
        "the VMs were recreated"
    );
    assert_eq!(
        h.sim.counters().get("DELETE", "/nodes/{node}/qemu/{vmid}"),
        deletes_before + 3
    );
    let dir = h.root().join("logs/rebuild/platform__onprem__platform-vm");
    let run = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("rebuild_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_killed_mid_way_is_adopted_by_the_next_apply_without_duplicates() {
    let h = Harness::start_with(hyops_pve::sim::SimConfig {
        time_scale: 0.01,
        ..Default::default()
    })
    .await;
    let overlay = h.overlay("o.yml", DEMO);
    let ctx = h.ctx(&overlay).await;
    // Kill the apply as soon as the first clone exists (the process "crashes"): dropping
    // the apply future mid-flight is what a SIGKILL does to the engine's side.
    let crash_point = async {
        for _ in 0..1000 {
            if !h.vms().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = apply_inner(&ctx, None, None) => panic!("apply finished before the crash point: {:?}", r.map_err(|e| e.message)),
        _ = crash_point => {}
    }
    assert!(
        !h.vms().is_empty(),
        "the crash happened after a clone started"
    );
    // The operator re-runs later: requests the dead process had already sent are processed
    // by Proxmox (here: the simulator) meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..1000 {
        if h.sim.running_tasks() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ctx = h.ctx(&overlay).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(
        names(&h),
        vec!["dev-app-01", "dev-app-02", "dev-db-01"],
        "no duplicate, no orphan"
    );
    assert_eq!(plan_inner(&ctx, true, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_vm_with_a_similar_name_is_never_touched() {
    let h = Harness::start().await;
    // Someone else's VM named like ours, created straight through the API.
    h.clone_raw(4000, "dev-app-01").await;
    h.settle().await;
    let foreign_before = h.sim.state().vms.get(&4000).unwrap().clone();
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    destroy_inner(&ctx, None).await.unwrap();
    let foreign_after = h.sim.state().vms.get(&4000).cloned();
    assert_eq!(
        foreign_after,
        Some(foreign_before),
        "the foreign VM is untouched"
    );
    assert_eq!(names(&h), vec!["dev-app-01"], "only the foreign VM remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_at_a_few_percent_still_converge() {
    let h = Harness::start().await;
    for (method, path) in [
        ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
        ("POST", "/nodes/{node}/qemu/{vmid}/config"),
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
        ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ] {
        h.sim.add_fault(
            FaultRule::on(
                method,
                path,
                FaultAction::Http {
                    status: 500,
                    message: "injected server error".into(),
                },
            )
            .rate(0.04),
        );
        h.sim
            .add_fault(FaultRule::on(method, path, FaultAction::LockTimeout).rate(0.04));
    }
    h.sim.add_fault(
        FaultRule::on(
            "POST",
            "/nodes/{node}/qemu/{vmid}/clone",
            FaultAction::TaskFail {
                message: "clone failed: injected".into(),
            },
        )
        .rate(0.04),
    );
    let ctx = h.ctx(&h.overlay("o.yml", &DEMO.replace("vms:\n", "vms:\n  web-01:\n    role: web\n    interfaces: [{bridge: vmbr0}]\n  web-02:\n    role: web\n    interfaces: [{bridge: vmbr0}]\n"))).await;
    apply_inner(&ctx, None, None).await.unwrap();
    h.sim.clear_faults();
    assert_eq!(
        names(&h),
        vec![
            "dev-app-01",
            "dev-app-02",
            "dev-db-01",
            "dev-web-01",
            "dev-web-02"
        ]
    );
    assert_eq!(plan_inner(&ctx, true, None).await.unwrap(), 0, "converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_applies_only_while_proxmox_still_matches_it() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    let saved = h.dir.path().join("plan.json");
    assert_eq!(plan_inner(&ctx, true, Some(&saved)).await.unwrap(), 2);
    apply_inner(&ctx, None, Some(&saved)).await.unwrap();
    assert_eq!(names(&h).len(), 3);
    // A plan made now, then a change behind its back: applying it is refused.
    let grown = h
        .ctx(&h.overlay("g.yml", &DEMO.replace("cpu_cores: 2", "cpu_cores: 3")))
        .await;
    let saved2 = h.dir.path().join("plan2.json");
    assert_eq!(plan_inner(&grown, true, Some(&saved2)).await.unwrap(), 2);
    let client = h.raw_client();
    let vmid = h
        .vms()
        .into_iter()
        .find(|(_, n)| n == "dev-app-01")
        .unwrap()
        .0;
    let r = client
        .put(format!("{}/nodes/pve1/qemu/{vmid}/config", h.sim.url()))
        .header("Authorization", h.sim.token_header())
        .form(&[("memory", "3072")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let before = h.sim.counters().writes;
    let err = apply_inner(&grown, None, Some(&saved2)).await.unwrap_err();
    assert!(err.message.contains("no longer matches"), "{}", err.message);
    assert_eq!(
        h.sim.counters().writes,
        before,
        "a stale plan writes nothing"
    );
}
