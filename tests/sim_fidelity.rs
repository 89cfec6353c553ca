//! Simulator fidelity for issue 8: it refuses what Proxmox refuses, with Proxmox's texts
//! (qemu-server@e6352be6 `API2/Qemu.pm`, `QemuServer.pm`, `QemuMigrate.pm`; pve-storage
//! `Storage.pm`; pve-common `JSONSchema.pm`, `Network.pm`), keeps pending config on running VMs
//! as qemu-server 9.2 does (hot-pluggable or not), serves the read endpoints common clients
//! use, never repeats a MAC across restarts, and delays failed logins like PVE.

use crate::sim_support;

use hyops_pve::sim::model::{BridgeDesc, StorageDesc};
use hyops_pve::sim::{ClusterDescription, SimConfig, SimState};
use serde_json::Value;
use sim_support::{start, start_with, T};

fn rows(v: &Value) -> Vec<Value> {
    v["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn clone_to_another_node_of_a_template_on_local_storage_is_refused_even_to_shared_storage() {
    let t = start(0.001).await;
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[
                ("newid", "300"),
                ("target", "pve2"),
                ("storage", "ceph-vm"),
                ("full", "1"),
            ],
        )
        .await;
    assert_eq!(code, 500, "{v}");
    assert_eq!(
        v["message"],
        "can't clone VM to node 'pve2' (VM uses local storage)\n"
    );
}

#[tokio::test]
async fn clone_to_another_node_onto_non_shared_storage_is_refused() {
    let t = start(0.001).await;
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[
                ("newid", "301"),
                ("target", "pve2"),
                ("storage", "local-lvm"),
                ("full", "1"),
            ],
        )
        .await;
    assert_eq!(code, 500, "{v}");
    assert_eq!(
        v["message"],
        "can't clone to non-shared storage 'local-lvm'\n"
    );
}

#[tokio::test]
async fn clone_onto_a_storage_the_node_lacks_is_refused() {
    let mut cluster = ClusterDescription::default_cluster();
    cluster.storages.push(StorageDesc {
        id: "fast-pve2".into(),
        kind: "lvmthin".into(),
        shared: false,
        nodes: Some(vec!["pve2".into()]),
        content: vec!["images".into()],
        total_gb: 100,
        bandwidth_mbs: 100.0,
        stream_mbs: None,
    });
    let t = start_with(SimConfig {
        cluster,
        time_scale: 0.001,
        tls: false,
        ..SimConfig::default()
    })
    .await;
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "302"), ("storage", "fast-pve2"), ("full", "1")],
        )
        .await;
    assert_eq!(code, 500, "{v}");
    assert_eq!(
        v["message"],
        "storage 'fast-pve2' is not available on node 'pve1'\n"
    );
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "302"), ("storage", "nope"), ("full", "1")],
        )
        .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (500, Some("storage 'nope' does not exist\n"))
    );
}

#[tokio::test]
async fn a_vm_name_that_is_not_a_dns_name_is_refused_by_the_clone() {
    let t = start(0.001).await;
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "303"), ("name", "web_01")],
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["errors"]["name"],
        "invalid format - value does not look like a valid DNS name"
    );
}

#[tokio::test]
async fn a_multicast_mac_is_refused_by_the_config_write() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 304, &[]).await, "OK");
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/304/config",
            &[("net0", "virtio=A3:E9:00:00:00:01,bridge=vmbr0")],
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["errors"]["net0.macaddr"],
        "invalid format - value does not look like a valid unicast MAC address"
    );
}

#[tokio::test]
async fn an_unknown_cpu_model_is_refused_by_the_config_write() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 305, &[]).await, "OK");
    let (code, v) = t
        .put("/nodes/pve1/qemu/305/config", &[("cpu", "pentium9")])
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["errors"]["cpu"],
        "invalid format - Built-in cputype 'pentium9' is not defined (missing 'custom-' prefix?)"
    );
    let (code, v) = t
        .put("/nodes/pve1/qemu/305/config", &[("cpu", "x86-64-v2-AES")])
        .await;
    assert_eq!(code, 200, "{v}");
}

#[tokio::test]
async fn starting_a_vm_on_a_missing_bridge_fails_in_the_task() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 306, &[]).await, "OK");
    let (code, _) = t
        .put(
            "/nodes/pve1/qemu/306/config",
            &[("net0", "virtio,bridge=vmbr9")],
        )
        .await;
    assert_eq!(code, 200, "a stopped VM takes any bridge name");
    let r = t.post("/nodes/pve1/qemu/306/status/start", &[]).await;
    assert_eq!(t.task(r).await, "bridge 'vmbr9' does not exist");
}

#[tokio::test]
async fn starting_a_vm_with_more_vcpus_than_the_node_has_fails_in_the_task() {
    // qemu-server config_to_command: sockets x cores above the node's CPU count (maxcpu of
    // GET /nodes, 32 in the simulator) dies at start; the config write takes it.
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 308, &[]).await, "OK");
    let (code, _) = t
        .put(
            "/nodes/pve1/qemu/308/config",
            &[("cores", "16"), ("sockets", "4")],
        )
        .await;
    assert_eq!(code, 200);
    let r = t.post("/nodes/pve1/qemu/308/status/start", &[]).await;
    assert_eq!(t.task(r).await, "MAX 32 vcpus allowed per VM on this node");
    let (code, _) = t
        .put("/nodes/pve1/qemu/308/config", &[("sockets", "2")])
        .await;
    assert_eq!(code, 200);
    let r = t.post("/nodes/pve1/qemu/308/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
}

#[tokio::test]
async fn starting_a_vm_with_an_mtu_below_576_fails_in_the_task() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 307, &[]).await, "OK");
    let (code, _) = t
        .put(
            "/nodes/pve1/qemu/307/config",
            &[("net0", "virtio,bridge=vmbr0,mtu=500")],
        )
        .await;
    assert_eq!(code, 200);
    let r = t.post("/nodes/pve1/qemu/307/status/start", &[]).await;
    assert_eq!(
        t.task(r).await,
        "netdev net0: MTU '500' is smaller than the IP minimum MTU '576'"
    );
}

#[tokio::test]
async fn a_protected_vm_cannot_be_destroyed() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 308, &[]).await, "OK");
    let (code, _) = t
        .put("/nodes/pve1/qemu/308/config", &[("protection", "1")])
        .await;
    assert_eq!(code, 200);
    let (code, v) = t.delete("/nodes/pve1/qemu/308", &[]).await;
    assert_eq!(code, 500);
    assert_eq!(
        v["message"],
        "can't remove VM 308 - protection mode enabled\n"
    );
}

#[tokio::test]
async fn a_running_vm_keeps_non_hotpluggable_changes_pending() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 309, &[]).await, "OK");
    let r = t.post("/nodes/pve1/qemu/309/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/309/config",
            &[
                ("cores", "4"),
                ("memory", "4096"),
                ("cpu", "x86-64-v2-AES"),
                ("net0", "virtio,bridge=vmbr1"),
                ("ipconfig0", "ip=10.0.0.9/24,gw=10.0.0.1"),
                ("tags", "web"),
            ],
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (_, p) = t.get("/nodes/pve1/qemu/309/pending", &[]).await;
    let pending: Vec<String> = rows(&p)
        .iter()
        .filter(|r| r.get("pending").is_some())
        .map(|r| r["key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(pending, vec!["cores", "cpu", "memory"]);
    let (_, cur) = t
        .get("/nodes/pve1/qemu/309/config", &[("current", "1")])
        .await;
    assert!(
        cur["data"]["net0"]
            .as_str()
            .unwrap()
            .contains("bridge=vmbr1"),
        "network hotplug"
    );
    assert_eq!(
        cur["data"]["ipconfig0"], "ip=10.0.0.9/24,gw=10.0.0.1",
        "cloud-init is fast-plug"
    );
    assert_eq!(cur["data"]["cores"], 2);
}

#[tokio::test]
async fn memory_hotplug_applies_memory_at_once() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 310, &[]).await, "OK");
    let (code, _) = t
        .put(
            "/nodes/pve1/qemu/310/config",
            &[("hotplug", "network,disk,memory")],
        )
        .await;
    assert_eq!(code, 200);
    let r = t.post("/nodes/pve1/qemu/310/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (code, _) = t
        .put("/nodes/pve1/qemu/310/config", &[("memory", "4096")])
        .await;
    assert_eq!(code, 200);
    let (_, cur) = t
        .get("/nodes/pve1/qemu/310/config", &[("current", "1")])
        .await;
    assert_eq!(cur["data"]["memory"], "4096");
}

#[tokio::test]
async fn hotplugging_a_nic_onto_a_missing_bridge_reports_the_bridge() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 311, &[]).await, "OK");
    let r = t.post("/nodes/pve1/qemu/311/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/311/config",
            &[("net1", "virtio,bridge=vmbr9")],
        )
        .await;
    assert_eq!(code, 500, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("net1: hotplug problem - bridge 'vmbr9' does not exist"),
        "{v}"
    );
}

#[tokio::test]
async fn read_endpoints_list_nodes_vms_bridges_storages_and_cpu_models() {
    let t = start(0.001).await;
    assert_eq!(
        t.clone_vm("pve1", 9000, 312, &[("name", "web")]).await,
        "OK"
    );
    let (_, v) = t.get("/nodes", &[]).await;
    let nodes: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(nodes, vec!["pve1", "pve2", "pve3"]);
    let (_, v) = t.get("/nodes/pve1/qemu", &[]).await;
    let vms: Vec<(u64, &str)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["vmid"].as_u64().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert!(
        vms.contains(&(312, "web")) && vms.contains(&(9000, "ubuntu-24.04")),
        "{vms:?}"
    );
    assert!(!vms.iter().any(|(id, _)| *id == 9001), "9001 lives on pve2");
    let ifaces = |v: &Value| -> Vec<String> {
        rows(v)
            .iter()
            .map(|r| r["iface"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (_, v) = t.get("/nodes/pve1/network", &[]).await;
    assert!(
        ifaces(&v).contains(&"vmbr0".to_string()) && !ifaces(&v).contains(&"vnetmgmt".to_string())
    );
    let (_, v) = t
        .get("/nodes/pve1/network", &[("type", "any_bridge")])
        .await;
    assert!(
        ifaces(&v).contains(&"vnetmgmt".to_string()) && !ifaces(&v).contains(&"eno1".to_string())
    );
    let (_, v) = t.get("/nodes/pve1/storage", &[("content", "images")]).await;
    let st: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["storage"].as_str())
        .collect();
    assert_eq!(st, vec!["local", "local-lvm", "ceph-vm"]);
    let (_, v) = t.get("/nodes/pve1/capabilities/qemu/cpu", &[]).await;
    assert!(rows(&v).iter().any(|m| m["name"] == "host"));
    assert!(rows(&v).iter().any(|m| m["name"] == "x86-64-v2-AES"));
    let (code, v) = t.get("/nodes/pve1/qemu/312/status/current", &[]).await;
    assert_eq!((code, v["data"]["status"].as_str()), (200, Some("stopped")));
}

#[tokio::test]
async fn a_bridge_only_on_some_nodes_is_listed_only_there() {
    let mut cluster = ClusterDescription::default_cluster();
    cluster.bridges.push(BridgeDesc {
        name: "vmbr7".into(),
        nodes: Some(vec!["pve2".into()]),
        kind: "bridge".into(),
        vlan_aware: false,
        mtu: 9000,
    });
    let t = start_with(SimConfig {
        cluster,
        time_scale: 0.001,
        tls: false,
        ..SimConfig::default()
    })
    .await;
    let has = |v: &Value| rows(v).iter().any(|r| r["iface"] == "vmbr7");
    assert!(has(&t.get("/nodes/pve2/network", &[]).await.1));
    assert!(!has(&t.get("/nodes/pve1/network", &[]).await.1));
}

#[tokio::test]
async fn offline_migration_moves_the_vm_and_its_local_disks() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 313, &[("full", "1")]).await, "OK");
    let r = t
        .post("/nodes/pve1/qemu/313/migrate", &[("target", "pve2")])
        .await;
    assert_eq!(t.task(r).await, "OK");
    let cfg = t.config("pve2", 313).await;
    assert!(
        cfg["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-313-disk-0"),
        "{cfg}"
    );
    let (code, _) = t.get("/nodes/pve1/qemu/313/config", &[]).await;
    assert_eq!(code, 500, "the config left pve1");
}

#[tokio::test]
async fn a_linked_clone_on_local_storage_cannot_migrate() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 314, &[("full", "0")]).await, "OK");
    let r = t
        .post("/nodes/pve1/qemu/314/migrate", &[("target", "pve2")])
        .await;
    let exit = t.task(r).await;
    assert!(exit.starts_with("can't migrate 'local-lvm:base-9000-disk-0/vm-314-disk-0' as it's a clone of 'base-9000-disk-0'"), "{exit}");
}

#[tokio::test]
async fn macs_stay_unique_when_a_saved_state_is_reloaded_with_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let first = start(0.001).await;
    assert_eq!(first.clone_vm("pve1", 9000, 315, &[]).await, "OK");
    let mac1 = first.config("pve1", 315).await["net0"]
        .as_str()
        .unwrap()
        .to_string();
    first.h.snapshot_state().save_to(&path).unwrap();
    let state = SimState::load_from(&path).unwrap();
    let h = hyops_pve::sim::Simulator::start_with_state(
        SimConfig {
            time_scale: 0.001,
            tls: false,
            ..SimConfig::default()
        },
        state,
    )
    .await
    .unwrap();
    let second = T {
        h,
        c: reqwest::Client::new(),
    };
    assert_eq!(second.clone_vm("pve1", 9000, 316, &[]).await, "OK");
    let mac2 = second.config("pve1", 316).await["net0"]
        .as_str()
        .unwrap()
        .to_string();
    let mac = |s: &str| s.split(',').next().unwrap_or_default().to_string();
    assert_ne!(
        mac(&mac1),
        mac(&mac2),
        "same seed, same state: a new MAC anyway"
    );
}

#[tokio::test]
async fn a_failed_login_is_delayed_like_pve_by_default() {
    let t = start_with(SimConfig {
        time_scale: 0.05,
        tls: false,
        ..SimConfig::default()
    })
    .await;
    let t0 = std::time::Instant::now();
    let r =
        t.c.post(t.url("/access/ticket"))
            .form(&[("username", "root@pam"), ("password", "wrong")])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        t0.elapsed().as_millis() >= 150,
        "3 s simulated at 0.05 = 150 ms"
    );
}
