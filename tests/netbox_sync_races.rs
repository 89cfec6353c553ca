//! The inventory sync when another hyops run sharing the NetBox acts between this run's read
//! and its write: a request of the sync is held at the embedded NetBox's door
//! (`NbFaultAction::Hold`) while the test makes the other run's change, then let through.
//! Event-driven (the gate says when the request arrived), never timed.
//!
//! The race these model: two runs creating the same new cluster make two of that name
//! (NetBox allows it); the younger run removes its empty duplicate. PostgreSQL can make the
//! younger (higher id) cluster visible before the older one commits, so a third run may pick
//! the duplicate as its cluster and then find it gone, or fill it just before it is removed.

use hyops_pve::netbox::objects::ref_id;
use hyops_pve::netbox::sync::{sync_vms, SyncNic, SyncOptions, SyncVm};
use hyops_pve::netbox::{NetboxClient, NetboxConfig};
use hyops_pve::pve::TlsMode;
use hyops_pve::sim::netbox::{
    NbFaultAction, NbFaultRule, NbGate, NetboxSim, NetboxSimConfig, NetboxSimHandle,
};
use serde_json::{json, Value};

fn client(s: &NetboxSimHandle) -> NetboxClient {
    let mut cfg = NetboxConfig::new(s.url(), s.token.clone());
    cfg.tls = TlsMode::Fingerprint(s.ca_fingerprint_sha256.clone());
    cfg.retry = hyops_pve::netbox::default_policy().scaled(0.01);
    NetboxClient::new(cfg).unwrap()
}

fn row(name: &str, cluster: &str) -> SyncVm {
    SyncVm {
        name: name.into(),
        cluster: cluster.into(),
        status: "active".into(),
        vcpus: Some(2),
        memory_mb: Some(2048),
        disk_gb: Some(20),
        role: Some("app".into()),
        tags: vec!["app".into()],
        external_id: "onprem-proxmox:101".into(),
        previous_name: None,
        nics: vec![SyncNic {
            name: "eth0".into(),
            mac: Some("bc:24:11:00:00:01".into()),
            address: Some("10.9.0.2/24".into()),
            assignment: Some("static".into()),
        }],
    }
}

async fn cluster_type(c: &NetboxClient) -> u64 {
    let t = c
        .create(
            "/api/virtualization/cluster-types/",
            &json!({"name": "hyops-managed", "slug": "hyops-managed"}),
        )
        .await
        .unwrap();
    t["id"].as_u64().unwrap()
}

async fn new_cluster(c: &NetboxClient, name: &str, type_id: u64) -> u64 {
    let v = c
        .create(
            "/api/virtualization/clusters/",
            &json!({"name": name, "type": type_id}),
        )
        .await
        .unwrap();
    v["id"].as_u64().unwrap()
}

async fn vm_named(c: &NetboxClient, name: &str) -> Option<Value> {
    c.list(
        "/api/virtualization/virtual-machines/",
        &[("name".into(), name.into())],
    )
    .await
    .unwrap()
    .into_iter()
    .find(|v| v["name"] == name)
}

/// Hold the next request `method path…` at the door.
fn hold(s: &NetboxSimHandle, method: &str, path: &str) -> NbGate {
    let gate = NbGate::new();
    s.add_fault(NbFaultRule {
        method: Some(method.into()),
        path_contains: path.into(),
        times: 1,
        action: NbFaultAction::Hold(gate.clone()),
    });
    gate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_removed_between_the_lookup_and_the_vm_write_is_re_resolved_to_the_oldest_left() {
    let s = NetboxSim::start(NetboxSimConfig::default()).await.unwrap();
    let other = client(&s);
    let ct = cluster_type(&other).await;
    // The cluster this run will find alone: another run's duplicate.
    let duplicate = new_cluster(&other, "onprem-core", ct).await;
    let gate = hold(&s, "POST", "/api/virtualization/virtual-machines/");
    let c = client(&s);
    let sync = tokio::spawn(async move {
        sync_vms(
            &c,
            &[row("app-01", "onprem-core")],
            &[],
            &SyncOptions::default(),
        )
        .await
    });
    gate.arrived().await;
    // Meanwhile the other run's cluster of that name shows up and the empty duplicate is
    // removed by its maker.
    let kept = new_cluster(&other, "onprem-core", ct).await;
    other
        .delete(&format!("/api/virtualization/clusters/{duplicate}/"))
        .await
        .unwrap();
    gate.release();
    let report = sync.await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.vms_created, 1);
    let vm = vm_named(&other, "app-01").await.expect("the VM was synced");
    assert_eq!(ref_id(&vm, "cluster"), Some(kept));
    assert_eq!(vm["primary_ip4"]["address"], "10.9.0.2/24");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_cluster_that_cannot_be_removed_does_not_fail_the_sync() {
    let s = NetboxSim::start(NetboxSimConfig::default()).await.unwrap();
    let other = client(&s);
    cluster_type(&other).await;
    // This run finds no cluster and creates one; while its create is in flight another run
    // creates the same name first (the older one).
    let gate = hold(&s, "POST", "/api/virtualization/clusters/");
    let c = client(&s);
    let sync = tokio::spawn(async move {
        sync_vms(
            &c,
            &[row("app-01", "onprem-core")],
            &[],
            &SyncOptions::default(),
        )
        .await
    });
    gate.arrived().await;
    let ct = other
        .list("/api/virtualization/cluster-types/", &[])
        .await
        .unwrap()[0]["id"]
        .as_u64()
        .unwrap();
    let older = new_cluster(&other, "onprem-core", ct).await;
    // Removing this run's duplicate fails: the other run's VM landed in it between the
    // emptiness check and the delete, and PostgreSQL's foreign key refused it at commit.
    s.add_fault(NbFaultRule {
        method: Some("DELETE".into()),
        path_contains: "/api/virtualization/clusters/".into(),
        times: u32::MAX,
        action: NbFaultAction::Status {
            status: 500,
            retry_after: None,
        },
    });
    gate.release();
    let report = sync.await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let vm = vm_named(&other, "app-01").await.expect("the VM was synced");
    assert_eq!(ref_id(&vm, "cluster"), Some(older), "VMs go to the oldest");
}
