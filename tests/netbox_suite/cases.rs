//! The allocator and sync test bodies, written once and run against every NetBox target
//! (`targets.rs`). Each body uses only its own zone and subnet, so bodies run in parallel
//! against one real NetBox.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyops_pve::netbox::ipam::{
    self, allocate, check_explicit, find_by_identities, preview, AllocateOptions, ExplicitRequest,
    IpamAction, NicRequest, Pool,
};
use hyops_pve::netbox::objects::IpRecord;
use hyops_pve::netbox::sync::{
    destroy_sync, sync_vms, SyncNic, SyncOptions, SyncVm, VmRef, MANAGED_TAG, STALE_TAG,
};
use hyops_pve::netbox::NetboxClient;
use serde_json::Value;

use super::targets::Target;

fn req(vm: &str, bridge: &str, idx: usize, pool: Pool) -> NicRequest {
    NicRequest {
        vm_key: vm.to_string(),
        bridge: bridge.to_string(),
        nic_index: idx,
        pool,
        vlan_id: None,
        published: None,
    }
}

fn opts(zone: &str) -> AllocateOptions {
    AllocateOptions {
        zone: zone.to_string(),
        used_hosts: BTreeSet::new(),
        settle: Duration::from_secs(3),
    }
}

async fn records(client: &NetboxClient, pool: &Pool) -> Vec<IpRecord> {
    client
        .list(
            "/api/ipam/ip-addresses/",
            &[("parent".to_string(), pool.network.to_string())],
        )
        .await
        .expect("list IPs")
        .iter()
        .filter_map(IpRecord::from_value)
        .filter(|r| r.host().is_some_and(|h| pool.network.contains(&h)))
        .collect()
}

fn addr(d: &ipam::NicDecision) -> Ipv4Addr {
    d.address
        .as_deref()
        .and_then(|a| a.split('/').next())
        .and_then(|h| h.parse().ok())
        .expect("an address")
}

pub async fn ordered_allocation_on_a_fresh_range(t: Target) {
    let zone = t.zone("ordered");
    let pool = t.pool(10);
    let c = t.client();
    let reqs: Vec<NicRequest> = ["app-01", "app-02", "db-01"]
        .iter()
        .map(|vm| NicRequest {
            vlan_id: Some(10),
            ..req(vm, "vnetmgmt", 1, pool)
        })
        .collect();
    let got = allocate(&c, &opts(&zone), &reqs).await.expect("allocate");
    let addrs: Vec<String> = got.iter().map(|d| d.address.clone().unwrap()).collect();
    assert_eq!(
        addrs,
        vec![
            format!("{}/24", t.host(2)),
            format!("{}/24", t.host(3)),
            format!("{}/24", t.host(4))
        ],
        "lowest hosts first, in request order, with the subnet mask"
    );
    assert!(got.iter().all(|d| d.action == IpamAction::Allocated));
    let recs = records(&c, &pool).await;
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(r.status, "reserved");
        assert!(r.description.starts_with(&format!("hyops:{zone}:")));
    }
    // The pool objects upstream ensures exist with upstream's descriptions.
    let ranges = c
        .list(
            "/api/ipam/ip-ranges/",
            &[("start_address".into(), pool.start.to_string())],
        )
        .await
        .unwrap();
    let range = ranges
        .iter()
        .find(|r| r["description"] == format!("hyops static pool {zone} vnetmgmt"))
        .expect("the static pool range");
    assert_eq!(range["start_address"], format!("{}/24", pool.start));
    let prefixes = c
        .list(
            "/api/ipam/prefixes/",
            &[("prefix".into(), pool.network.to_string())],
        )
        .await
        .unwrap();
    let p = prefixes
        .iter()
        .find(|p| p["prefix"] == pool.network.to_string())
        .expect("prefix");
    assert_eq!(p["description"], format!("hyops {zone} vnetmgmt"));
    assert_eq!(p["vlan"]["vid"], 10);
    assert_eq!(p["role"]["slug"], "hyops-static");
    assert_eq!(p["scope"]["slug"], zone.as_str());
}

pub async fn reuse_on_reapply_makes_no_netbox_writes(t: Target) {
    let zone = t.zone("reuse");
    let pool = t.pool(10);
    let reqs = vec![
        NicRequest {
            vlan_id: Some(20),
            ..req("app-01", "vnetmgmt", 1, pool)
        },
        req("app-02", "vnetmgmt", 1, pool),
    ];
    let first = allocate(&t.client(), &opts(&zone), &reqs).await.unwrap();
    let c2 = t.client();
    let second = allocate(&c2, &opts(&zone), &reqs).await.unwrap();
    assert_eq!(
        first.iter().map(|d| &d.address).collect::<Vec<_>>(),
        second.iter().map(|d| &d.address).collect::<Vec<_>>()
    );
    assert!(second.iter().all(|d| d.action == IpamAction::Reuse));
    assert_eq!(
        c2.metrics().writes,
        0,
        "re-apply writes nothing: {:?}",
        c2.metrics()
    );
    // The read-only preview agrees and writes nothing either.
    let c3 = t.client();
    let p = preview(&c3, &zone, &reqs).await.unwrap();
    assert_eq!(
        p[0].describe(),
        format!("reuse {}/24 (hyops:{zone}:app-01:vnetmgmt:1)", t.host(2))
    );
    assert_eq!(c3.metrics().writes, 0);
}

pub async fn preview_of_a_fresh_nic_says_allocate_first_free_and_writes_nothing(t: Target) {
    let zone = t.zone("preview");
    let pool = t.pool(5);
    let c = t.client();
    let p = preview(&c, &zone, &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .unwrap();
    assert_eq!(p[0].action, IpamAction::Allocate);
    assert_eq!(
        p[0].describe(),
        format!("allocate (first free in {}-{})", pool.start, pool.end)
    );
    assert_eq!(c.metrics().writes, 0);
    assert!(records(&c, &pool).await.is_empty());
}

pub async fn sixteen_concurrent_allocations_fill_a_16_host_range_then_report_exhaustion(t: Target) {
    let zone = t.zone("conc");
    let pool = t.pool(16);
    let t = Arc::new(t);
    let mut handles = Vec::new();
    for i in 0..16 {
        let t = Arc::clone(&t);
        let zone = zone.clone();
        handles.push(tokio::spawn(async move {
            // One client per task: sixteen independent runners.
            let c = t.client();
            allocate(
                &c,
                &opts(&zone),
                &[req(&format!("vm-{i:02}"), "vnetmgmt", 1, pool)],
            )
            .await
        }));
    }
    let mut hosts = BTreeSet::new();
    for h in handles {
        let d = h.await.unwrap().expect("each of the 16 gets an address");
        let a = addr(&d[0]);
        assert!(pool.contains(a), "{a} is inside the pool");
        hosts.insert(a);
    }
    assert_eq!(hosts.len(), 16, "16 distinct addresses");
    let err = allocate(
        &t.client(),
        &opts(&zone),
        &[req("vm-16", "vnetmgmt", 1, pool)],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ipam allocation failed for vm-16 vnetmgmt: no available IPs in static pool"
    );
    assert_eq!(
        records(&t.client(), &pool).await.len(),
        16,
        "the failed run leaked nothing"
    );
}

pub async fn two_runs_allocating_the_same_identity_end_with_one_record_and_one_address(t: Target) {
    let zone = t.zone("same");
    let pool = t.pool(30);
    let t = Arc::new(t);
    for round in 0..4 {
        let vm = format!("app-{round}");
        let mut handles = Vec::new();
        for _ in 0..2 {
            let t = Arc::clone(&t);
            let (zone, vm) = (zone.clone(), vm.clone());
            handles.push(tokio::spawn(async move {
                allocate(&t.client(), &opts(&zone), &[req(&vm, "vnetmgmt", 1, pool)]).await
            }));
        }
        let mut got = BTreeSet::new();
        for h in handles {
            got.insert(addr(&h.await.unwrap().expect("allocate")[0]));
        }
        assert_eq!(
            got.len(),
            1,
            "round {round}: both runs use the same address"
        );
        let id = ipam::identity(&zone, &vm, "vnetmgmt", 1);
        let found = find_by_identities(&t.client(), std::slice::from_ref(&id))
            .await
            .unwrap();
        assert_eq!(
            found.get(&id).map(Vec::len),
            Some(1),
            "round {round}: one record"
        );
    }
}

pub async fn a_lost_reply_does_not_leak_a_record(t: Target) {
    let zone = t.zone("lost");
    let pool = t.pool(10);
    let dropped = Arc::new(AtomicU32::new(0));
    let d2 = Arc::clone(&dropped);
    let c = t.client_with(|cfg| {
        cfg.lost_reply = Some(Arc::new(move |method: &str, path: &str| {
            method == "POST"
                && path.ends_with("/available-ips/")
                && d2.fetch_add(1, Ordering::SeqCst) == 0
        }));
    });
    let got = allocate(&c, &opts(&zone), &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .expect("allocate resolves the lost reply");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "exactly one POST was sent"
    );
    assert_eq!(addr(&got[0]), pool.start);
    let recs = records(&c, &pool).await;
    assert_eq!(recs.len(), 1, "no second record: {recs:?}");
}

pub async fn hosts_published_by_other_slots_but_unknown_to_netbox_are_skipped(t: Target) {
    let zone = t.zone("used");
    let pool = t.pool(10);
    let mut o = opts(&zone);
    o.used_hosts = [pool.start, t.host(3)].into_iter().collect();
    let got = allocate(&t.client(), &o, &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .unwrap();
    assert_eq!(addr(&got[0]), t.host(4));
}

pub async fn a_short_pool_allocates_in_order_and_names_the_first_nic_that_did_not_fit(t: Target) {
    let zone = t.zone("short");
    let pool = t.pool(2);
    let c = t.client();
    let reqs = vec![
        req("a", "vnetmgmt", 1, pool),
        req("b", "vnetmgmt", 1, pool),
        req("c", "vnetmgmt", 1, pool),
    ];
    let err = allocate(&c, &opts(&zone), &reqs).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ipam allocation failed for c vnetmgmt: no available IPs in static pool"
    );
    let recs = records(&c, &pool).await;
    let mut descs: Vec<&str> = recs.iter().map(|r| r.description.as_str()).collect();
    descs.sort();
    assert_eq!(
        descs,
        vec![
            format!("hyops:{zone}:a:vnetmgmt:1").as_str(),
            format!("hyops:{zone}:b:vnetmgmt:1").as_str()
        ]
    );
}

pub async fn a_range_created_the_upstream_way_is_adopted_and_its_mask_fixed_once(t: Target) {
    let zone = t.zone("upstream");
    let pool = t.pool(10);
    let c = t.client();
    // What upstream's network-sdn import leaves: a range given without masks (NetBox
    // stores /32) and a prefix posted with `site` (ignored by NetBox 4.2+).
    c.create(
        "/api/ipam/ip-ranges/",
        &serde_json::json!({"start_address": pool.start.to_string(), "end_address": pool.end.to_string(), "status": "active"}),
    )
    .await
    .unwrap();
    c.create(
        "/api/ipam/prefixes/",
        &serde_json::json!({"prefix": pool.network.to_string(), "site": 1, "status": "active"}),
    )
    .await
    .unwrap();
    let got = allocate(&c, &opts(&zone), &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .expect("adopts the existing range and prefix");
    assert_eq!(
        got[0].address.as_deref(),
        Some(format!("{}/24", pool.start).as_str())
    );
    let c2 = t.client();
    allocate(&c2, &opts(&zone), &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .unwrap();
    assert_eq!(c2.metrics().writes, 0, "{:?}", c2.metrics());
}

fn explicit(t: &Target, vm: &str, idx: usize, last: u8) -> ExplicitRequest {
    let pool = t.pool(10);
    ExplicitRequest {
        vm_key: vm.into(),
        bridge: "vnetmgmt".into(),
        nic_index: idx,
        requested: format!("{}/24", t.host(last)).parse().unwrap(),
        subnet: pool.network,
        pool_range: pool.range_text(),
        claims: vec![],
    }
}

pub async fn explicit_addresses_get_the_ownership_checks_and_messages(t: Target) {
    let zone = t.zone("explicit");
    let pool = t.pool(10);
    let c = t.client();
    allocate(
        &c,
        &opts(&zone),
        &[
            req("app-01", "vnetmgmt", 1, pool),
            req("app-02", "vnetmgmt", 1, pool),
        ],
    )
    .await
    .unwrap();
    let writes_before = c.metrics().writes;
    let (a, b) = t.subnet();
    // Outside the authoritative subnet (same host, other mask).
    let mut r = explicit(&t, "app-01", 1, 2);
    r.requested = format!("10.{a}.{b}.2/25").parse().unwrap();
    assert_eq!(
        check_explicit(&c, &zone, &[r]).await.unwrap_err(),
        format!("explicit IPAM address 10.{a}.{b}.2/25 for app-01/vnetmgmt is outside the authoritative subnet 10.{a}.{b}.0/24")
    );
    // Not reserved.
    assert_eq!(
        check_explicit(&c, &zone, &[explicit(&t, "app-03", 1, 9)]).await.unwrap_err(),
        format!("explicit IPAM address 10.{a}.{b}.9/24 is not reserved in NetBox for hyops:{zone}:app-03:vnetmgmt:1. Remove ipv4.address and let HybridOps allocate it, or create the reservation through HybridOps first.")
    );
    // Owned by another identity: app-02's address claimed for app-01.
    assert_eq!(
        check_explicit(&c, &zone, &[explicit(&t, "app-01", 1, 3)]).await.unwrap_err(),
        format!("explicit IPAM address 10.{a}.{b}.3/24 is owned by NetBox identity 'hyops:{zone}:app-02:vnetmgmt:1', not 'hyops:{zone}:app-01:vnetmgmt:1'")
    );
    // Published by another slot.
    let mut r = explicit(&t, "app-01", 1, 2);
    r.claims = vec![(
        "other".into(),
        "vnetmgmt".into(),
        1,
        "instance:b:other:vnetmgmt:1".into(),
    )];
    assert_eq!(
        check_explicit(&c, &zone, &[r]).await.unwrap_err(),
        format!("explicit IPAM address 10.{a}.{b}.2/24 is already published by another HybridOps VM state claim: instance:b:other:vnetmgmt:1")
    );
    // Its own reservation passes.
    let ok = check_explicit(&c, &zone, &[explicit(&t, "app-01", 1, 2)])
        .await
        .unwrap();
    assert_eq!(ok[0].action, IpamAction::Explicit);
    assert_eq!(c.metrics().writes, writes_before, "checks never write");
}

fn vm_row(t: &Target, name: &str, vmid: u32, last: u8, mac: &str) -> SyncVm {
    SyncVm {
        name: name.to_string(),
        cluster: format!("c{}", t.n),
        status: "active".into(),
        vcpus: Some(2),
        memory_mb: Some(2048),
        disk_gb: Some(40),
        role: Some("app".into()),
        tags: vec!["platform".into(), "onprem".into(), "app".into()],
        external_id: format!("onprem-proxmox:{}{vmid}", t.n),
        previous_name: None,
        nics: vec![SyncNic {
            name: "eth0".into(),
            mac: Some(mac.to_string()),
            address: Some(format!("{}/24", t.host(last))),
            assignment: Some("static".into()),
        }],
    }
}

async fn vm_by_name(c: &NetboxClient, name: &str) -> Option<Value> {
    c.list(
        "/api/virtualization/virtual-machines/",
        &[("name".into(), name.into())],
    )
    .await
    .unwrap()
    .into_iter()
    .find(|v| v["name"] == name)
}

fn tag_names(v: &Value) -> BTreeSet<String> {
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

pub async fn sync_creates_vm_interface_ip_and_primary_and_a_second_sync_writes_nothing(t: Target) {
    let zone = t.zone("sync");
    let pool = t.pool(10);
    let c = t.client();
    // The reservation made by IPAM is the record the sync assigns.
    allocate(&c, &opts(&zone), &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .unwrap();
    let name = format!("t{}-app-01", t.n);
    let rows = vec![vm_row(&t, &name, 101, 2, "bc:24:11:00:00:01")];
    let rep = sync_vms(&c, &rows, &[], &SyncOptions::default()).await;
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!((rep.processed, rep.vms_created, rep.primary_set), (1, 1, 1));
    let vm = vm_by_name(&c, &name).await.expect("VM created");
    assert_eq!(vm["custom_fields"]["external_id"], rows[0].external_id);
    assert_eq!(vm["role"]["name"], "app");
    assert_eq!(vm["disk"], 40 * 1024);
    assert_eq!(vm["primary_ip4"]["address"], format!("{}/24", t.host(2)));
    let tags = tag_names(&vm);
    for want in ["platform", "app", "ip:static", MANAGED_TAG] {
        assert!(tags.contains(want), "{want} in {tags:?}");
    }
    let ifaces = c
        .list(
            "/api/virtualization/interfaces/",
            &[("virtual_machine_id".into(), vm["id"].to_string())],
        )
        .await
        .unwrap();
    assert_eq!(ifaces.len(), 1);
    assert_eq!(ifaces[0]["mac_address"], "BC:24:11:00:00:01");
    let recs = records(&c, &pool).await;
    assert_eq!(recs.len(), 1, "the reservation is reused, not duplicated");
    assert_eq!(recs[0].status, "reserved");
    assert_eq!(recs[0].assigned_object_id, ifaces[0]["id"].as_u64());
    // Second sync: nothing to write.
    let c2 = t.client();
    let rep2 = sync_vms(&c2, &rows, &[], &SyncOptions::default()).await;
    assert!(rep2.errors.is_empty(), "{:?}", rep2.errors);
    assert_eq!(rep2.writes, 0, "{rep2:?} {:?}", c2.metrics());
}

pub async fn sync_uses_the_configured_address_and_never_touches_another_slots_vms(t: Target) {
    let c = t.client();
    let other = format!("t{}-other-slot", t.n);
    let mine = format!("t{}-mine", t.n);
    let other_rows = vec![vm_row(&t, &other, 201, 5, "bc:24:11:00:00:05")];
    assert!(sync_vms(&c, &other_rows, &[], &SyncOptions::default())
        .await
        .errors
        .is_empty());
    let my_rows = vec![vm_row(&t, &mine, 202, 6, "bc:24:11:00:00:06")];
    let rep = sync_vms(&c, &my_rows, &[], &SyncOptions::default()).await;
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.retired, 0);
    let o = vm_by_name(&c, &other).await.unwrap();
    assert_eq!(
        o["status"]["value"], "active",
        "the other slot's VM is untouched"
    );
    assert!(!tag_names(&o).contains(STALE_TAG));
    let m = vm_by_name(&c, &mine).await.unwrap();
    assert_eq!(m["primary_ip4"]["address"], format!("{}/24", t.host(6)));
}

pub async fn soft_retire_then_reapply_gives_the_same_addresses(t: Target) {
    let zone = t.zone("retire");
    let pool = t.pool(10);
    let c = t.client();
    let reqs = vec![
        req("app-01", "vnetmgmt", 1, pool),
        req("app-02", "vnetmgmt", 1, pool),
    ];
    let first = allocate(&c, &opts(&zone), &reqs).await.unwrap();
    let n1 = format!("t{}-r1", t.n);
    let n2 = format!("t{}-r2", t.n);
    let rows = vec![
        vm_row(&t, &n1, 301, 2, "bc:24:11:00:01:01"),
        vm_row(&t, &n2, 302, 3, "bc:24:11:00:01:02"),
    ];
    assert!(sync_vms(&c, &rows, &[], &SyncOptions::default())
        .await
        .errors
        .is_empty());
    let targets: Vec<VmRef> = rows
        .iter()
        .map(|r| VmRef {
            name: r.name.clone(),
            cluster: r.cluster.clone(),
        })
        .collect();
    let rep = destroy_sync(&c, &targets, false, &SyncOptions::default()).await;
    assert_eq!(
        (rep.targeted, rep.retired, rep.deleted, rep.not_found),
        (2, 2, 0, 0),
        "{rep:?}"
    );
    let vm = vm_by_name(&c, &n1).await.unwrap();
    assert_eq!(vm["status"]["value"], "offline");
    let tags = tag_names(&vm);
    assert!(
        tags.contains(MANAGED_TAG) && tags.contains(STALE_TAG),
        "{tags:?}"
    );
    assert_eq!(records(&c, &pool).await.len(), 2, "reservations are kept");
    // Re-apply: the same addresses, and the sync brings the VMs back.
    let again = allocate(&t.client(), &opts(&zone), &reqs).await.unwrap();
    assert_eq!(
        first.iter().map(|d| &d.address).collect::<Vec<_>>(),
        again.iter().map(|d| &d.address).collect::<Vec<_>>()
    );
    assert!(sync_vms(&c, &rows, &[], &SyncOptions::default())
        .await
        .errors
        .is_empty());
    let vm = vm_by_name(&c, &n1).await.unwrap();
    assert_eq!(vm["status"]["value"], "active");
    assert!(!tag_names(&vm).contains(STALE_TAG));
}

pub async fn hard_delete_removes_the_vm_and_keeps_the_reservation(t: Target) {
    let zone = t.zone("hard");
    let pool = t.pool(10);
    let c = t.client();
    allocate(&c, &opts(&zone), &[req("app-01", "vnetmgmt", 1, pool)])
        .await
        .unwrap();
    let name = format!("t{}-hard", t.n);
    let rows = vec![vm_row(&t, &name, 401, 2, "bc:24:11:00:02:01")];
    assert!(sync_vms(&c, &rows, &[], &SyncOptions::default())
        .await
        .errors
        .is_empty());
    let target = VmRef {
        name: name.clone(),
        cluster: rows[0].cluster.clone(),
    };
    let rep = destroy_sync(
        &c,
        std::slice::from_ref(&target),
        true,
        &SyncOptions::default(),
    )
    .await;
    assert_eq!((rep.deleted, rep.ips_detached), (1, 1), "{rep:?}");
    assert!(vm_by_name(&c, &name).await.is_none());
    let recs = records(&c, &pool).await;
    assert_eq!(
        recs.len(),
        1,
        "NetBox's cascade did not take the reservation"
    );
    assert_eq!(
        recs[0].description,
        format!("hyops:{zone}:app-01:vnetmgmt:1")
    );
    assert_eq!(recs[0].assigned_object_id, None);
    // A second destroy finds nothing and fails nothing.
    let rep = destroy_sync(&c, &[target], true, &SyncOptions::default()).await;
    assert_eq!((rep.not_found, rep.errors.len()), (1, 0));
}

pub async fn a_rebuild_that_swapped_vmids_keeps_each_netbox_vm_by_name(t: Target) {
    let c = t.client();
    let a = format!("t{}-swap-a", t.n);
    let b = format!("t{}-swap-b", t.n);
    let mut rows = vec![
        vm_row(&t, &a, 501, 2, "bc:24:11:00:05:01"),
        vm_row(&t, &b, 502, 3, "bc:24:11:00:05:02"),
    ];
    assert!(sync_vms(&c, &rows, &[], &SyncOptions::default())
        .await
        .errors
        .is_empty());
    // The rebuild gave each VM the other's VMID.
    let (ea, eb) = (rows[0].external_id.clone(), rows[1].external_id.clone());
    rows[0].external_id = eb;
    rows[1].external_id = ea;
    let rep = sync_vms(&c, &rows, &[], &SyncOptions::default()).await;
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let va = vm_by_name(&c, &a).await.expect("a keeps its record");
    let vb = vm_by_name(&c, &b).await.expect("b keeps its record");
    assert_eq!(va["custom_fields"]["external_id"], rows[0].external_id);
    assert_eq!(vb["custom_fields"]["external_id"], rows[1].external_id);
    assert_eq!(va["primary_ip4"]["address"], format!("{}/24", t.host(2)));
}

pub async fn concurrent_syncs_into_one_new_cluster_keep_every_vm_findable(t: Target) {
    // NetBox allows two clusters of one name (no group, no site): racing runs may make two.
    let cluster = format!("c{}-race", t.n);
    let t = Arc::new(t);
    let mut handles = Vec::new();
    for i in 0..4u8 {
        let t = Arc::clone(&t);
        let cluster = cluster.clone();
        handles.push(tokio::spawn(async move {
            let mut row = vm_row(
                &t,
                &format!("t{}-race-{i}", t.n),
                600 + u32::from(i),
                10 + i,
                &format!("bc:24:11:00:06:{i:02x}"),
            );
            row.cluster = cluster;
            sync_vms(&t.client(), &[row], &[], &SyncOptions::default()).await
        }));
    }
    for h in handles {
        let rep = h.await.unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    }
    let targets: Vec<VmRef> = (0..4)
        .map(|i| VmRef {
            name: format!("t{}-race-{i}", t.n),
            cluster: cluster.clone(),
        })
        .collect();
    let rep = destroy_sync(&t.client(), &targets, false, &SyncOptions::default()).await;
    assert_eq!((rep.retired, rep.not_found), (4, 0), "{rep:?}");
}

pub async fn a_renamed_vm_keeps_its_netbox_record_and_an_equal_vmid_elsewhere_is_not_taken(
    t: Target,
) {
    let c = t.client();
    let old = format!("t{}-old-name", t.n);
    let new = format!("t{}-new-name", t.n);
    let foreign = format!("t{}-other-cluster-vm", t.n);
    // Another Proxmox cluster's VM with the same VMID (so the same external id).
    let mut other = vm_row(&t, &foreign, 701, 9, "bc:24:11:00:07:09");
    other.nics[0].address = None;
    assert!(sync_vms(&c, &[other.clone()], &[], &SyncOptions::default())
        .await
        .errors
        .is_empty());
    let mine = vm_row(&t, &old, 701, 2, "bc:24:11:00:07:01");
    assert!(sync_vms(
        &c,
        std::slice::from_ref(&mine),
        &[],
        &SyncOptions::default()
    )
    .await
    .errors
    .is_empty());
    let before = vm_by_name(&c, &old).await.unwrap();
    let mut renamed = mine.clone();
    renamed.name = new.clone();
    renamed.previous_name = Some(old.clone());
    let rep = sync_vms(&c, &[renamed], &[], &SyncOptions::default()).await;
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let after = vm_by_name(&c, &new).await.expect("renamed");
    assert_eq!(after["id"], before["id"], "the same NetBox VM was renamed");
    assert!(vm_by_name(&c, &old).await.is_none());
    assert!(
        vm_by_name(&c, &foreign).await.is_some(),
        "the equal-VMID VM keeps its name"
    );
}
