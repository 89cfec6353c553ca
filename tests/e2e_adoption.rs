//! Adoption of VMs the Terraform path created (VMIDs in the module's tfstate, no marker),
//! and the per-slot lock seen from a second run.

use crate::common;

use std::time::Duration;

use common::{Harness, DEMO};
use hyops_pve::commands::module::apply_inner;
use hyops_pve::hyops::{acquire_lock, ModuleRef, RuntimeRoot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_created_by_the_terraform_path_are_adopted_not_recreated() {
    let h = Harness::start().await;
    // What bpg left behind: three full clones, named as the pack names them, no marker.
    let ids = [("app-01", 201u32), ("app-02", 202), ("db-01", 203)];
    for (key, id) in ids {
        h.clone_raw(id, &format!("dev-{key}")).await;
    }
    h.settle().await;
    let resources: Vec<serde_json::Value> = ids
        .iter()
        .map(|(key, id)| {
            serde_json::json!({
                "module": format!("module.vms.module.vm[\"{key}\"]"),
                "mode": "managed",
                "type": "proxmox_virtual_environment_vm",
                "name": "vm",
                "instances": [{"attributes": {"vm_id": id, "name": format!("dev-{key}")}}]
            })
        })
        .collect();
    let tfstate = h
        .root()
        .join("state/terraform/platform__onprem__platform-vm.tfstate");
    std::fs::create_dir_all(tfstate.parent().unwrap()).unwrap();
    std::fs::write(
        &tfstate,
        serde_json::json!({"version": 4, "resources": resources}).to_string(),
    )
    .unwrap();

    let clones_before = h
        .sim
        .counters()
        .get("POST", "/nodes/{node}/qemu/{vmid}/clone");
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(
        h.sim
            .counters()
            .get("POST", "/nodes/{node}/qemu/{vmid}/clone"),
        clones_before,
        "nothing was cloned"
    );
    let st = h.state_json();
    assert_eq!(
        st["outputs"]["vm_ids"],
        serde_json::json!({"app-01": 201, "app-02": 202, "db-01": 203})
    );
    // Adoption wrote our marker, so the VMs stay ours even without the tfstate.
    assert!(h.config_of("dev-app-01")["description"].contains("key=app-01"));
    std::fs::remove_file(&tfstate).unwrap();
    let before = h.sim.counters().writes;
    apply_inner(&ctx, None, None).await.unwrap();
    assert_eq!(
        h.sim.counters().writes,
        before,
        "converged: the second apply writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_slot_is_refused_while_the_first_holds_the_lock() {
    let h = Harness::start().await;
    let holder = acquire_lock(
        &RuntimeRoot::at(&h.root()),
        &ModuleRef::parse("platform/onprem/platform-vm").unwrap(),
        None,
        "apply-20261125T000000Z-deadbeef",
        Duration::from_secs(1),
    )
    .unwrap();
    let mut args_ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    args_ctx.args.lock_wait_s = 1;
    let err = apply_inner(&args_ctx, None, None).await.unwrap_err();
    assert!(
        err.message.contains("apply-20261125T000000Z-deadbeef"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&std::process::id().to_string()),
        "names the holder's pid: {}",
        err.message
    );
    assert!(h.vms().is_empty(), "nothing was created");
    drop(holder);
    apply_inner(&args_ctx, None, None).await.unwrap();
    assert_eq!(h.vms().len(), 3);
}
