//! Issue 8 end to end on the simulator: placement Proxmox would refuse is refused by the plan
//! before any write (bridge, storage, node, CPU model, linked clone across nodes), all at once;
//! a template booting from `virtio0` is grown on `virtio0`; `disk_size_gb` below the
//! template's size keeps the disk, warns once and publishes the real size; a protected VM
//! stops destroy before any power change.

use crate::common;

use common::{Harness, DEMO};
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner};
use hyops_pve::sim::model::TemplateDesc;
use hyops_pve::sim::{ClusterDescription, SimConfig};

async fn refused(h: &Harness, overlay: &str) -> String {
    let ctx = h.ctx(&h.overlay("o.yml", overlay)).await;
    let before = h.sim.counters();
    let err = apply_inner(&ctx, None, None).await.unwrap_err();
    assert_eq!(
        h.sim.counters().writes,
        before.writes,
        "a refused plan writes nothing: {}",
        err.message
    );
    assert!(h.vms().is_empty(), "no VM was cloned");
    err.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_missing_on_the_node_is_refused_before_the_clone() {
    let h = Harness::start().await;
    let msg = refused(&h, &DEMO.replacen("bridge: vmbr0", "bridge: vmbr9", 1)).await;
    assert!(
        msg.contains("VM app-01: bridge 'vmbr9' of interfaces[1] does not exist on node pve1"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_placement_problem_is_listed_at_once() {
    let h = Harness::start().await;
    let overlay = DEMO.replacen("bridge: vmbr0", "bridge: vmbr9", 1).replace(
        "require_ipam: false\n",
        "require_ipam: false\ndatastore_id: fast-nvme\ncpu_type: pentium9\n",
    );
    let msg = refused(&h, &overlay).await;
    assert!(msg.contains("placement problem(s)"), "{msg}");
    assert!(msg.contains("bridge 'vmbr9'"), "{msg}");
    assert!(
        msg.contains("storage 'fast-nvme' (inputs.datastore_id) is not available on node pve1"),
        "{msg}"
    );
    assert!(msg.contains("CPU model 'pentium9'"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_vcpus_than_the_node_has_are_refused_before_the_clone() {
    // The simulator's nodes have 32 CPUs (maxcpu); Proxmox's start would fail with
    // "MAX 32 vcpus allowed per VM on this node" after the clone and the config write.
    let h = Harness::start().await;
    let msg = refused(&h, &DEMO.replace("cpu_cores: 2", "cpu_cores: 64")).await;
    assert!(
        msg.contains("VM app-01: cpu_cores 64 = 64 vCPUs, but node pve1 has 32 CPUs")
            && msg.contains("MAX 32 vcpus allowed per VM on this node"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nic_mtu_above_the_bridge_mtu_is_refused_before_the_clone() {
    let h = Harness::start().await;
    let overlay = DEMO.replacen(
        "      - bridge: vmbr0\n",
        "      - bridge: vmbr0\n        mtu: 9000\n",
        1,
    );
    let msg = refused(&h, &overlay).await;
    assert!(
        msg.contains("VM app-01: mtu 9000 of interfaces[1] is above the MTU 1500 of bridge 'vmbr0' on node pve1"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_cluster_is_refused() {
    let h = Harness::start().await;
    let overlay = DEMO.replace(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    node_name: pve9\n",
    );
    let msg = refused(&h, &overlay).await;
    assert!(
        msg.contains(
            "VM app-01: node 'pve9' is not a node of this cluster (nodes: pve1, pve2, pve3)"
        ),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_clone_on_another_node_of_a_local_template_is_refused() {
    let h = Harness::start().await;
    let overlay = DEMO
        .replace(
            "require_ipam: false\n",
            "require_ipam: false\nclone_mode: linked\n",
        )
        .replace(
            "  app-01:\n    role: app\n",
            "  app-01:\n    role: app\n    node_name: pve2\n",
        );
    let msg = refused(&h, &overlay).await;
    assert!(
        msg.contains("clone_mode linked on node pve2 needs the template on that node"),
        "{msg}"
    );
}

fn cluster_with_virtio_template() -> ClusterDescription {
    let mut c = ClusterDescription::default_cluster();
    c.templates = vec![TemplateDesc {
        vmid: 9000,
        name: "ubuntu-24.04".into(),
        node: "pve1".into(),
        storage: "local-lvm".into(),
        disk_gb: 32,
        cores: 2,
        memory_mb: 2048,
        bridge: "vmbr0".into(),
        boot_disk: "virtio0".into(),
        data_gb: None,
    }];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_booting_from_virtio0_is_grown_on_virtio0_and_converges() {
    let h = Harness::start_with(SimConfig {
        cluster: cluster_with_virtio_template(),
        time_scale: 0.0005,
        ..SimConfig::default()
    })
    .await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let cfg = h.config_of("dev-app-01");
    assert!(cfg["virtio0"].contains("size=40G"), "{cfg:?}");
    assert!(!cfg.contains_key("scsi0"));
    assert_eq!(plan_inner(&ctx, true, None).await.unwrap(), 0, "converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_size_below_the_template_keeps_the_disk_warns_and_publishes_the_real_size() {
    let h = Harness::start().await;
    let ctx = h
        .ctx(&h.overlay(
            "o.yml",
            &DEMO.replace("disk_size_gb: 40", "disk_size_gb: 20"),
        ))
        .await;
    let run = apply_inner(&ctx, None, None).await.unwrap();
    assert!(h.config_of("dev-app-01")["scsi0"].contains("size=32G"));
    let st = h.state_json();
    assert_eq!(
        st["outputs"]["vms"]["app-01"]["disk_gb"], 32,
        "the real size"
    );
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            h.root()
                .join("logs/module/platform__onprem__platform-vm")
                .join(&run)
                .join("driver_result.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let warnings: Vec<String> = result["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str().map(str::to_string))
        .filter(|w| w.contains("disk_size_gb is 20"))
        .collect();
    assert_eq!(warnings.len(), 3, "once per VM: {warnings:?}");
    assert_eq!(
        plan_inner(&ctx, true, None).await.unwrap(),
        0,
        "and the next plan agrees"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_refuses_a_protected_vm_before_any_power_change() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let vmid = h
        .vms()
        .into_iter()
        .find(|(_, n)| n == "dev-db-01")
        .map(|(id, _)| id)
        .unwrap();
    let r = h
        .raw_client()
        .put(format!("{}/nodes/pve1/qemu/{vmid}/config", h.sim.url()))
        .header("Authorization", h.sim.token_header())
        .form(&[("protection", "1")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let before = h.sim.counters();
    let err = destroy_inner(&ctx, None).await.unwrap_err();
    assert!(
        err.message.contains(&format!(
            "VM db-01 (vmid {vmid}, 'dev-db-01' on node pve1) has Proxmox protection enabled"
        )),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains(&format!("qm set {vmid} --protection 0")),
        "{}",
        err.message
    );
    assert_eq!(
        h.sim.counters().writes,
        before.writes,
        "nothing was shut down or deleted"
    );
    assert_eq!(h.vms().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_apply_keeps_the_addresses_when_the_agent_does_not_answer() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let before = h.state_json()["outputs"].clone();
    assert_eq!(before["ipv4_addresses"]["app-01"], "10.20.0.11", "{before}");
    // the guest agent stops answering (a reboot, a slow guest)
    h.sim.add_fault(hyops_pve::sim::FaultRule::on(
        "GET",
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        hyops_pve::sim::FaultAction::Http {
            status: 500,
            message: "QEMU guest agent is not running".into(),
        },
    ));
    apply_inner(&ctx, None, None).await.unwrap();
    let after = h.state_json()["outputs"].clone();
    assert_eq!(after["ipv4_addresses"], before["ipv4_addresses"]);
    assert_eq!(
        after["vms"]["app-01"]["ipv4_addresses"],
        before["vms"]["app-01"]["ipv4_addresses"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_on_another_node_than_its_local_template_is_cloned_there_and_migrated() {
    let h = Harness::start().await;
    // template 9000 lives on pve1's local-lvm; Proxmox refuses a clone straight to pve2
    let overlay = DEMO.replace(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    node_name: pve2\n",
    );
    let ctx = h.ctx(&h.overlay("o.yml", &overlay)).await;
    let run = apply_inner(&ctx, None, None).await.unwrap();
    let journal = std::fs::read_to_string(
        h.root()
            .join("logs/module/platform__onprem__platform-vm")
            .join(&run)
            .join("apply_journal.jsonl"),
    )
    .unwrap();
    let migrated = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| e["vm"] == "app-01" && e["action"] == "migrate" && e["result"] == "ok");
    assert!(migrated, "{journal}");
    let (node, disk) = {
        let st = h.sim.state();
        let vm = st
            .vms
            .values()
            .find(|v| v.name() == "dev-app-01")
            .unwrap()
            .clone();
        (vm.node.clone(), vm.config["scsi0"].clone())
    };
    assert_eq!(node, "pve2");
    assert!(
        disk.starts_with("local-lvm:vm-") && disk.contains("size=40G"),
        "{disk}"
    );
    assert_eq!(
        h.state_json()["outputs"]["vms"]["app-01"]["node_name"],
        "pve2"
    );
    assert_eq!(plan_inner(&ctx, true, None).await.unwrap(), 0, "converged");
}

fn running_config(h: &Harness, name: &str) -> std::collections::BTreeMap<String, String> {
    let st = h.sim.state();
    st.vms
        .values()
        .find(|v| v.name() == name)
        .map(|v| v.config.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_cores_on_running_vms_restarts_them_and_outputs_report_what_runs() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let more = h
        .ctx(&h.overlay("m.yml", &DEMO.replace("cpu_cores: 2", "cpu_cores: 4")))
        .await;
    apply_inner(&more, None, None).await.unwrap();
    let cfg = running_config(&h, "dev-app-01");
    assert_eq!(
        cfg["cores"], "4",
        "the VM runs the new value (not only pending)"
    );
    assert!(h.sim.state().vms.values().all(|v| v.pending.is_empty()));
    assert_eq!(h.state_json()["outputs"]["vms"]["app-01"]["cpu_cores"], 4);
    assert_eq!(plan_inner(&more, true, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_defer_leaves_changes_pending_and_outputs_report_what_runs() {
    let h = Harness::start().await;
    let ctx = h.ctx(&h.overlay("o.yml", DEMO)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let deferred = DEMO.replace("cpu_cores: 2", "cpu_cores: 4").replace(
        "require_ipam: false\n",
        "require_ipam: false\nrestart_policy: defer\n",
    );
    let more = h.ctx(&h.overlay("d.yml", &deferred)).await;
    let run = apply_inner(&more, None, None).await.unwrap();
    assert_eq!(
        running_config(&h, "dev-app-01")["cores"],
        "2",
        "still runs 2"
    );
    assert_eq!(
        h.state_json()["outputs"]["vms"]["app-01"]["cpu_cores"],
        2,
        "outputs report what runs"
    );
    let result = std::fs::read_to_string(
        h.root()
            .join("logs/module/platform__onprem__platform-vm")
            .join(&run)
            .join("driver_result.json"),
    )
    .unwrap();
    assert!(
        result.contains("cores stay pending until the VM restarts (restart_policy: defer)"),
        "{result}"
    );
    assert_eq!(
        plan_inner(&more, true, None).await.unwrap(),
        0,
        "nothing more to do until a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_middle_nic_keeps_the_other_nics_macs() {
    // The NIC on vnetmgmt (SDN-managed) needs the runner's network-sdn state.
    let h = Harness::start_with_sdn().await;
    let three = DEMO.replace(
        "      - bridge: vmbr0\n        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}\n",
        "      - bridge: vmbr0\n        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}\n      - bridge: vmbr1\n        ipv4: {address: 10.21.0.11/24}\n      - bridge: vnetmgmt\n        ipv4: {address: 10.22.0.11/24}\n",
    );
    let ctx = h.ctx(&h.overlay("three.yml", &three)).await;
    apply_inner(&ctx, None, None).await.unwrap();
    let mac = |cfg: &std::collections::BTreeMap<String, String>, k: &str| {
        cfg[k].split(',').next().unwrap().to_string()
    };
    let before = h.config_of("dev-app-01");
    let two = three.replace(
        "      - bridge: vmbr1\n        ipv4: {address: 10.21.0.11/24}\n",
        "",
    );
    let ctx2 = h.ctx(&h.overlay("two.yml", &two)).await;
    apply_inner(&ctx2, None, None).await.unwrap();
    let after = h.config_of("dev-app-01");
    assert_eq!(mac(&after, "net0"), mac(&before, "net0"));
    assert_eq!(
        mac(&after, "net1"),
        mac(&before, "net2"),
        "the vnetmgmt NIC kept its MAC"
    );
    assert!(after["net1"].contains("bridge=vnetmgmt"));
    assert!(!after.contains_key("net2"));
    assert_eq!(plan_inner(&ctx2, true, None).await.unwrap(), 0);
}
