//! The real upstream `hyops` CLI applies an IPAM overlay through the hyops-pve plug-in
//! (`iac/proxmox-native`): hyops resolves and validates, `hyops-pve driver` (a separate
//! process) reserves the addresses in the embedded NetBox, rolls the pool out on the
//! simulator and syncs NetBox; hyops writes the state. Requires upstream hyops and the plug-in
//! in `.venv-hyops` (CI: `HYOPS_REQUIRE_UPSTREAM=1`).

use crate::common;
use crate::upstream_hyops;

use common::netbox::{self, IPAM_POOL};
use hyops_pve::commands::simroot::{sim_netbox_seed, write_netbox_root};
use hyops_pve::sim::netbox::{NetboxSim, NetboxSimConfig, NetboxSimHandle};
use upstream_hyops::{pool_no_gate, World};

const FAST: f64 = 0.0005;

/// The world plus the embedded NetBox, the runtime root being its own NetBox and SDN
/// authority.
async fn world() -> Option<(World, NetboxSimHandle)> {
    let mut w = World::start(FAST).await?;
    let nb = NetboxSim::start_with(NetboxSimConfig::default(), sim_netbox_seed().unwrap())
        .await
        .unwrap();
    write_netbox_root(
        &w.root(),
        nb.url(),
        &nb.token,
        Some(&nb.ca_fingerprint_sha256),
    )
    .unwrap();
    let root = w.root().display().to_string();
    w.env
        .insert("HYOPS_NETBOX_AUTHORITY_ROOT".into(), root.clone());
    w.env.insert("HYOPS_SDN_AUTHORITY_ROOT".into(), root);
    w.env
        .insert("HYOPS_NETBOX_API_PROBE_WAIT_S".into(), "0".into());
    Some((w, nb))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_apply_of_an_ipam_pool_reserves_in_netbox_and_a_second_apply_writes_nothing() {
    let Some((w, nb)) = world().await else {
        return;
    };
    let inputs = w.overlay("ipam.yml", &pool_no_gate(IPAM_POOL));
    let run = w.module("apply", &inputs, &[]).await;
    run.assert_ok();
    let state = w.state(None);
    assert_eq!(state["status"], "ok");
    for (key, last) in [("app-01", 2), ("app-02", 3)] {
        assert_eq!(
            state["outputs"]["vms"][key]["interfaces_configured"][0]["ipv4"]["address"],
            format!("10.10.0.{last}/24"),
            "{key}"
        );
    }
    let ev = std::path::PathBuf::from(state["evidence_dir"].as_str().unwrap());
    for f in ["ipam_allocations.json", "hook_netbox_sync.json"] {
        assert!(ev.join(f).exists(), "{f} in {}", ev.display());
    }
    let sync: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("hook_netbox_sync.json")).unwrap())
            .unwrap();
    assert_eq!(sync["rc"], 0, "{sync:#}");
    assert!(
        sync["summary"]["vms_created"].as_u64() == Some(2),
        "{sync:#}"
    );

    let pve = w.sim.counters().writes;
    let netbox = nb.counters().writes;
    w.module("apply", &inputs, &[]).await.assert_ok();
    assert_eq!(w.sim.counters().writes, pve, "Proxmox writes on re-apply");
    assert_eq!(nb.counters().writes, netbox, "NetBox writes on re-apply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_destroy_of_an_ipam_pool_soft_retires_its_netbox_vms() {
    let Some((w, nb)) = world().await else {
        return;
    };
    let inputs = w.overlay("ipam.yml", &pool_no_gate(IPAM_POOL));
    w.module("apply", &inputs, &[]).await.assert_ok();
    let vm = netbox::vm(&nb, "dev-app-01")
        .await
        .expect("synced by the apply");
    assert_eq!(vm["status"]["value"], "active");
    w.module("destroy", &inputs, &[]).await.assert_ok();
    assert_eq!(w.state(None)["status"], "destroyed");
    assert!(w.vms().is_empty(), "{:?}", w.vms());
    let vm = netbox::vm(&nb, "dev-app-01").await.expect("kept in NetBox");
    assert_eq!(vm["status"]["value"], "offline", "{vm:#}");
}
