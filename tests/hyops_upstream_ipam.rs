//! The real upstream `hyops` CLI applies an IPAM overlay through the hyops-pve plug-in
//! (`iac/proxmox-native`): hyops resolves and validates, `hyops-pve driver` (a separate
//! process) reserves the addresses in the embedded NetBox, rolls the pool out on the
//! simulator and syncs NetBox; hyops writes the state. Requires upstream hyops and the plug-in
//! in `.venv-hyops` (CI: `HYOPS_REQUIRE_UPSTREAM=1`).

mod common;
mod upstream_hyops;

use hyops_pve::commands::simroot::{sim_netbox_seed, write_netbox_root};
use hyops_pve::netbox::{NetboxClient, NetboxConfig};
use hyops_pve::pve::TlsMode;
use hyops_pve::sim::netbox::{NetboxSim, NetboxSimConfig, NetboxSimHandle};
use upstream_hyops::World;

const FAST: f64 = 0.0005;

/// Two IPAM VMs on `vnetmgmt` (10.10.0.0/24, static range .2–.119); native cloud-init and no
/// readiness gate, since the driver process cannot reach the in-process simulator's SSH.
const IPAM_POOL: &str = "\
ssh_username: opsadmin
template_state_ref: core/onprem/template-image
template_key: ubuntu-24.04
require_ipam: true
cloud_init_mode: native
addressing:
  mode: ipam
  ipam:
    provider: netbox
post_apply_ssh_readiness: {enabled: false}
vms:
  app-01:
    role: app
    interfaces:
      - bridge: vnetmgmt
  app-02:
    role: app
    interfaces:
      - bridge: vnetmgmt
";

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
    let inputs = w.overlay("ipam.yml", IPAM_POOL);
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

/// The NetBox VM named `name`, if any.
async fn netbox_vm(nb: &NetboxSimHandle, name: &str) -> Option<serde_json::Value> {
    let mut cfg = NetboxConfig::new(nb.url().to_string(), nb.token.clone());
    cfg.tls = TlsMode::Fingerprint(nb.ca_fingerprint_sha256.clone());
    NetboxClient::new(cfg)
        .unwrap()
        .list(
            "/api/virtualization/virtual-machines/",
            &[("name".into(), name.into())],
        )
        .await
        .unwrap()
        .into_iter()
        .find(|v| v["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_destroy_of_an_ipam_pool_soft_retires_its_netbox_vms() {
    let Some((w, nb)) = world().await else {
        return;
    };
    let inputs = w.overlay("ipam.yml", IPAM_POOL);
    w.module("apply", &inputs, &[]).await.assert_ok();
    let vm = netbox_vm(&nb, "dev-app-01")
        .await
        .expect("synced by the apply");
    assert_eq!(vm["status"]["value"], "active");
    w.module("destroy", &inputs, &[]).await.assert_ok();
    assert_eq!(w.state(None)["status"], "destroyed");
    assert!(w.vms().is_empty(), "{:?}", w.vms());
    let vm = netbox_vm(&nb, "dev-app-01").await.expect("kept in NetBox");
    assert_eq!(vm["status"]["value"], "offline", "{vm:#}");
}
