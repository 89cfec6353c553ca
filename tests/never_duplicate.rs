//! Issue 7's reproductions, one test each, against the in-process simulator with faults
//! injected through its fault rules: a clone whose task status cannot be read is sent once;
//! duplicates keep the state's VM; VMID allocation holds at 150 and 300 VMs and after a failed
//! clone; permanent Proxmox answers are sent once; oversized answers are refused naming the
//! call; destroy follows apply's state sequence.

use crate::common;

use common::{Harness, DEMO};
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner};
use hyops_pve::pve::{AllocateRequest, CloneParams, Ownership};
use hyops_pve::sim::{FaultAction, FaultRule, FaultWindow, SimConfig};

const CLONE: &str = "/nodes/{node}/qemu/{vmid}/clone";
/// Every task-status read: the node task listings batched waits poll, and single status reads.
const TASK_STATUS: &str = "/nodes/{node}/tasks*";
const DELETE: &str = "/nodes/{node}/qemu/{vmid}";

async fn harness() -> Harness {
    Harness::start_with(SimConfig {
        time_scale: 0.002,
        ..SimConfig::default()
    })
    .await
}

fn one_vm() -> String {
    r#"
require_ipam: false
ssh_username: opsadmin
template_state_ref: core/onprem/template-image
template_key: ubuntu-24.04
disk_size_gb: 40
post_apply_ssh_readiness: {connectivity_wait_s: 30}
vms:
  app-01:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}
"#
    .to_string()
}

/// A pool of `n` full clones with static addresses and no readiness wait (neither the guest
/// agent nor the SSH gate).
fn pool(n: usize) -> String {
    common::pool::pool_overlay(
        n,
        "post_apply_ssh_readiness: {enabled: false}\n\
         limits: {global: 32, per_node: 32, per_storage: 8}\n",
    )
}

/// Clone parameters for client-level allocation tests.
fn bare_clone() -> CloneParams {
    CloneParams {
        newid: 0,
        name: Some("x".into()),
        description: None,
        full: Some(false),
        storage: None,
        format: None,
        target: None,
        pool: None,
    }
}

/// One VM per key, every one recorded in the state.
fn assert_one_per_key(h: &Harness, n: usize) {
    let vms = h.vms();
    assert_eq!(vms.len(), n);
    let names: std::collections::BTreeSet<&String> = vms.iter().map(|(_, n)| n).collect();
    assert_eq!(names.len(), n, "no duplicate names");
    let ids = h.state_json()["outputs"]["vm_ids"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(ids, n);
}

fn state_vmid(h: &Harness, key: &str) -> u64 {
    h.state_json()["outputs"]["vm_ids"][key].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_clone_task_status_for_40s_sends_exactly_one_clone() {
    let h = harness().await;
    h.sim.add_fault(
        FaultRule::on("GET", TASK_STATUS, FaultAction::Reset).window(FaultWindow {
            after: Some(format!("POST {CLONE}")),
            start_s: 0.0,
            duration_s: Some(40.0),
        }),
    );
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &one_vm())).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.calls("POST", CLONE), 1, "exactly one clone was sent");
    assert_eq!(h.vms().len(), 1, "no orphan: {:?}", h.vms());
    let vmid = state_vmid(&h, "app-01");
    assert_eq!(h.vms()[0].0 as u64, vmid);
    let mac = h.state_json()["outputs"]["vms"]["app-01"]["mac_address_primary"].clone();
    // The next apply changes nothing: same VM, same MAC, no delete.
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.calls("DELETE", DELETE), 0);
    assert_eq!(state_vmid(&h, "app-01"), vmid);
    assert_eq!(
        h.state_json()["outputs"]["vms"]["app-01"]["mac_address_primary"],
        mac
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_status_hanging_for_90s_still_gives_one_clone_per_vm() {
    let h = harness().await;
    h.sim.add_fault(
        FaultRule::on("GET", TASK_STATUS, FaultAction::Hang).window(FaultWindow {
            after: Some(format!("POST {CLONE}")),
            start_s: 0.0,
            duration_s: Some(90.0),
        }),
    );
    let two = one_vm().replace(
        "vms:\n",
        "vms:\n  app-02:\n    role: app\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.12/24, gateway: 10.20.0.1}\n",
    );
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &two)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.calls("POST", CLONE), 2, "one clone per VM, not ten");
    assert_eq!(h.vms().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_clone_reply_is_adopted_not_resent() {
    let h = harness().await;
    h.sim
        .add_fault(FaultRule::on("POST", CLONE, FaultAction::LostReply).count(1));
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &one_vm())).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(h.calls("POST", CLONE), 1);
    assert_eq!(h.vms().len(), 1);
    assert_eq!(plan_inner(&ctx, true, None).await.unwrap(), 0, "converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_marked_clones_the_state_vm_survives_not_the_bare_lower_one() {
    let h = harness().await;
    // A foreign VM takes 100 so our VM gets 101.
    h.clone_raw(100, "someone-else").await;
    h.settle().await;
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &one_vm())).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let ours = state_vmid(&h, "app-01") as u32;
    assert_eq!(ours, 101);
    let mac = h.state_json()["outputs"]["vms"]["app-01"]["mac_address_primary"].clone();
    let description = h.config_of("dev-app-01")["description"].clone();
    // A second, bare clone with our marker at the lower id (what a resent clone leaves).
    h.sim.state().vms.remove(&100);
    h.clone_raw(100, "dev-app-01").await;
    h.settle().await;
    h.sim
        .state()
        .vms
        .get_mut(&100)
        .unwrap()
        .config
        .insert("description".into(), description);
    apply_inner(&ctx, None, None).await.unwrap();
    let ids: Vec<u32> = h.vms().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        vec![ours],
        "the bare duplicate went, the state VM stayed"
    );
    assert_eq!(state_vmid(&h, "app-01") as u32, ours);
    assert_eq!(
        h.state_json()["outputs"]["vms"]["app-01"]["mac_address_primary"],
        mac
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_150_vm_pool_allocates_in_one_apply() {
    let h = harness().await;
    let ctx = h.scaled_ctx(&h.overlay("p.yml", &pool(150))).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_one_per_key(&h, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_vm_pool_allocates_in_one_apply() {
    let h = harness().await;
    let ctx = h.scaled_ctx(&h.overlay("p.yml", &pool(300))).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_one_per_key(&h, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_vms_and_one_failed_clone_allocate_in_one_apply() {
    let h = harness().await;
    h.sim.add_fault(
        FaultRule::on(
            "POST",
            CLONE,
            FaultAction::TaskFail {
                message: "clone failed: rbd error: I/O error".into(),
            },
        )
        .nth(1),
    );
    let ctx = h.scaled_ctx(&h.overlay("p.yml", &pool(70))).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_one_per_key(&h, 70);
    assert!(h.calls("POST", CLONE) > 70, "the failed clone was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_in_flight_in_this_process_never_count_as_proxmox_refusals() {
    // 100 clones whose workers have not written their configs yet: /cluster/nextid keeps
    // answering the first of them. The allocator must skip them all without calling them
    // refusals (it used to give up after 64 "consecutive candidates … were taken").
    let h = harness().await;
    h.sim.add_fault(FaultRule::on(
        "POST",
        CLONE,
        FaultAction::SlowTask {
            extra_ms: 100_000_000,
        },
    ));
    let ctx = h.ctx(&h.overlay("o.yml", &one_vm())).await;
    let client = ctx.client(&ctx.credentials().unwrap()).unwrap();
    let params = bare_clone();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let req = AllocateRequest {
            node: "pve1",
            template_vmid: 9000,
            params: &params,
            ownership: Ownership::Marker("never-matches"),
            start_hint: None,
            range: None,
            max_attempts: 1,
            wait: None,
        };
        let a = client.allocate_vmid_and_clone(&req).await.unwrap();
        assert!(ids.insert(a.vmid()), "id {} handed out twice", a.vmid());
    }
    assert_eq!(ids.len(), 100);
    assert!(
        h.calls("GET", "/cluster/nextid") <= 200,
        "at most nextid plus one confirming probe per clone: ids held locally are skipped without asking Proxmox ({})",
        h.calls("GET", "/cluster/nextid")
    );
    h.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_range_names_only_the_ids_proxmox_refused() {
    let h = harness().await;
    for id in [500u32, 501, 502] {
        h.clone_raw(id, &format!("taken-{id}")).await;
    }
    h.settle().await;
    let ctx = h.ctx(&h.overlay("o.yml", &one_vm())).await;
    let client = ctx.client(&ctx.credentials().unwrap()).unwrap();
    let params = bare_clone();
    let req = AllocateRequest {
        node: "pve1",
        template_vmid: 9000,
        params: &params,
        ownership: Ownership::Marker("never-matches"),
        start_hint: Some(500),
        range: Some(500..=502),
        max_attempts: 1,
        wait: None,
    };
    let e = client.allocate_vmid_and_clone(&req).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("no free id left in 500..=502")
            && msg.contains("Proxmox refused 3 ids in 500..=502"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_refused_for_local_storage_is_sent_once() {
    let h = harness().await;
    // The plan itself never sends a clone Proxmox refuses for local storage (issue 8: it
    // clones on the template's node and migrates), so the refusal is injected: Proxmox's own
    // text for a clone to another node from local storage.
    h.sim.add_fault(FaultRule::on(
        "POST",
        CLONE,
        FaultAction::Http {
            status: 500,
            message: "can't clone VM to node 'pve3' (VM uses local storage)".into(),
        },
    ));
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &one_vm())).await;
    let err = apply_inner(&ctx, None, None).await.unwrap_err();
    assert!(
        err.message.contains("VM uses local storage"),
        "{}",
        err.message
    );
    assert_eq!(
        h.calls("POST", CLONE),
        1,
        "a permanent refusal is not resent"
    );
    assert!(h.vms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_vm_is_asked_once_and_destroy_records_the_error_keeping_outputs() {
    let h = harness().await;
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &one_vm())).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let outputs = h.state_json()["outputs"].clone();
    let vmid = state_vmid(&h, "app-01") as u32;
    h.sim
        .state()
        .vms
        .get_mut(&vmid)
        .unwrap()
        .config
        .insert("protection".into(), "1".into());
    let err = destroy_inner(&ctx, Some("maintenance window 42".into()))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("protection mode enabled"),
        "{}",
        err.message
    );
    assert_eq!(
        h.calls("DELETE", DELETE),
        0,
        "refused before any power change or delete (issue 8: catch before write)"
    );
    let st = h.state_json();
    assert_eq!(st["status"], "error");
    assert_eq!(st["failed_command"], "destroy");
    assert_eq!(st["outputs"], outputs, "previous outputs kept");
    let evidence = std::path::PathBuf::from(st["evidence_dir"].as_str().unwrap());
    let decision: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(evidence.join("preflight_decision.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(decision["reason"], "maintenance window 42");
    assert_eq!(decision["decision"], "bypass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_marks_running_before_deleting_then_destroyed() {
    let h = harness().await;
    let ctx = h.scaled_ctx(&h.overlay("o.yml", &one_vm())).await;
    apply_inner(&ctx, None, None).await.unwrap();
    // Hold every delete task until we have looked at the state mid-way.
    h.sim.add_fault(FaultRule::on(
        "DELETE",
        DELETE,
        FaultAction::SlowTask { extra_ms: 200_000 },
    ));
    let root = h.root();
    let watcher = tokio::spawn(async move {
        let p = root.join("state/modules/platform__onprem__platform-vm/latest.json");
        for _ in 0..2000 {
            if let Ok(t) = std::fs::read_to_string(&p) {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if v["status"] == "running" && v["active_command"] == "destroy" {
                    return Some(v);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        None
    });
    destroy_inner(&ctx, None).await.unwrap();
    let running = watcher
        .await
        .unwrap()
        .expect("state said running during the destroy");
    assert!(running["outputs"]["vm_ids"]["app-01"].is_number());
    assert_eq!(h.state_json()["status"], "destroyed");
    assert!(h.vms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_fails_naming_the_call() {
    let h = harness().await;
    h.sim.add_fault(FaultRule::on(
        "GET",
        "/cluster/resources",
        FaultAction::Oversized { bytes: 300_000_000 },
    ));
    let ctx = h
        .ctx_env(
            &h.overlay("o.yml", &one_vm()),
            &[("HYOPS_PVE_MAX_RESPONSE_MIB", "4")],
        )
        .await;
    let err = apply_inner(&ctx, None, None).await.unwrap_err();
    assert!(
        err.message.contains("GET /cluster/resources") && err.message.contains("4194304"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pool_still_converges_with_the_scaled_engine() {
    let h = harness().await;
    let ctx = h.scaled_ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(plan_inner(&ctx, true, None).await.unwrap(), 0);
}
