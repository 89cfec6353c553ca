//! IPAM through `hyops-pve driver` (contract §6.3), in-process against the Proxmox simulator
//! and the embedded NetBox: the NetBox steps run on the engine path the driver shares with
//! the CLI — allocation before the plan (`ipam_allocations.json`), the inventory sync after
//! the readiness gate and the destroy sync (`hook_netbox_sync.json`) — so `hyops apply` with
//! the native driver reserves and syncs exactly as `hyops-pve apply` does.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::netbox::{self, IPAM_POOL};
use common::Harness;
use hyops_pve::commands::driver::run_request_text_with;
use hyops_pve::commands::simroot::{sim_netbox_seed, write_netbox_root};
use hyops_pve::hyops::{
    publish_outputs, write_json_atomic, DriverResult, ResultStatus, DRIVER_REF, MODULE_REF,
    PACK_ID, PROFILE,
};
use hyops_pve::inputs::{merge_operator_inputs, parse_overlay, spec_defaults};
use hyops_pve::sim::netbox::{NetboxSim, NetboxSimConfig, NetboxSimHandle};
use hyops_pve::sim::ssh::SimSshConfig;
use hyops_pve::sim::SimConfig;
use hyops_pve::yaml::PyValue;
use serde_json::{json, Value};

/// The simulator (its node carrying the SDN gateways, so the host-side probe passes), the
/// embedded NetBox, and a root that is its own NetBox and SDN authority.
struct Setup {
    h: Harness,
    netbox: NetboxSimHandle,
}

impl Setup {
    async fn start() -> Setup {
        let mut bridges = BTreeMap::new();
        for (vnet, _, cidr) in hyops_pve::commands::simroot::SIM_SDN {
            let gw = cidr.replace(".0/24", ".1/24");
            bridges.insert(vnet.to_string(), vec![gw]);
        }
        let h = Harness::start_with(SimConfig {
            time_scale: 0.0005,
            ssh: SimSshConfig {
                bridge_addresses: bridges,
                ..SimSshConfig::default()
            },
            ..SimConfig::default()
        })
        .await;
        let netbox = NetboxSim::start_with(NetboxSimConfig::default(), sim_netbox_seed().unwrap())
            .await
            .unwrap();
        write_netbox_root(
            &h.root(),
            netbox.url(),
            &netbox.token,
            Some(&netbox.ca_fingerprint_sha256),
        )
        .unwrap();
        Setup { h, netbox }
    }

    fn evidence(&self, run_id: &str) -> PathBuf {
        self.h
            .root()
            .join("logs/module/platform__onprem__platform-vm")
            .join(run_id)
    }

    /// A request in the shape hyops' `_apply_execute.run_single` builds, with the inputs
    /// hyops resolved (spec defaults with the overlay merged on).
    fn request(&self, command: &str, run_id: &str) -> Value {
        let PyValue::Dict(mut inputs) = PyValue::from(&spec_defaults()) else {
            panic!("spec defaults are a mapping")
        };
        merge_operator_inputs(&mut inputs, &parse_overlay(IPAM_POOL).unwrap());
        let inputs = PyValue::Dict(inputs).to_json("inputs").unwrap();
        let root = self.h.root().display().to_string();
        json!({
            "command": command,
            "run_id": run_id,
            "module_ref": MODULE_REF,
            "state_instance": "",
            "module_dir": "/modules/platform/onprem/platform-vm",
            "inputs": inputs,
            "execution": {"driver": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID, "hooks": {}},
            "requirements": {"credentials": ["proxmox"]},
            "runtime": {
                "root": root, "env": "dev", "logs_dir": format!("{root}/logs"),
                "meta_dir": format!("{root}/meta"), "state_dir": format!("{root}/state"),
                "credentials_dir": format!("{root}/credentials"), "work_dir": format!("{root}/work"),
                "allow_state_drift_recreate": false
            },
            "evidence_dir": self.evidence(run_id).display().to_string(),
        })
    }

    /// Run a request as `hyops-pve driver` would, SSH going to the simulator's network.
    async fn run(&self, command: &str, run_id: &str) -> DriverResult {
        let root = self.h.root().display().to_string();
        let env = vec![
            ("HOME".to_string(), self.h.dir.path().display().to_string()),
            ("HYOPS_PVE_LOCK_WAIT_S".to_string(), "0".to_string()),
            ("HYOPS_NETBOX_AUTHORITY_ROOT".to_string(), root.clone()),
            ("HYOPS_SDN_AUTHORITY_ROOT".to_string(), root),
            ("HYOPS_NETBOX_API_PROBE_WAIT_S".to_string(), "0".to_string()),
        ];
        let req = self.request(command, run_id);
        run_request_text_with(&req.to_string(), env, Some(Arc::new(self.h.sim.ssh()))).await
    }

    fn evidence_json(&self, run_id: &str, file: &str) -> Value {
        let p = self.evidence(run_id).join(file);
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    /// What hyops writes after an ok driver apply: `latest.json` with the published outputs.
    fn record_ok_state(&self, result: &DriverResult) {
        let raw = result.normalized_outputs["outputs"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        write_json_atomic(
            &self
                .h
                .root()
                .join("state/modules/platform__onprem__platform-vm/latest.json"),
            &json!({"module_ref": MODULE_REF, "status": "ok", "outputs": publish_outputs(&raw)}),
        )
        .unwrap();
    }
}

fn ok(r: &DriverResult) {
    assert_eq!(r.status, ResultStatus::Ok, "{:?}", r.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_plan_shows_pending_allocations_and_writes_nothing_to_netbox() {
    let s = Setup::start().await;
    let before = s.netbox.counters().writes;
    let r = s.run("plan", "plan-1").await;
    ok(&r);
    assert_eq!(s.netbox.counters().writes, before, "a plan wrote to NetBox");
    let plan = s.evidence_json("plan-1", "plan.json");
    assert_eq!(plan["ipam"][0]["action"], "allocate", "{:#}", plan["ipam"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_apply_allocates_syncs_and_reapplies_with_no_writes_anywhere() {
    let s = Setup::start().await;
    let r = s.run("apply", "apply-1").await;
    ok(&r);
    // Addresses from NetBox, in order, in the outputs hyops publishes.
    let outputs = &r.normalized_outputs["outputs"];
    for (key, last) in [("app-01", 2), ("app-02", 3)] {
        assert_eq!(
            outputs["vms"][key]["interfaces_configured"][0]["ipv4"]["address"],
            format!("10.10.0.{last}/24"),
            "{key}: {outputs:#}"
        );
    }
    let alloc = s.evidence_json("apply-1", "ipam_allocations.json");
    assert_eq!(alloc["status"], "ok", "{alloc:#}");
    let sync = s.evidence_json("apply-1", "hook_netbox_sync.json");
    assert_eq!(sync["rc"], 0, "{sync:#}");
    let vm = netbox::vm(&s.netbox, "dev-app-02")
        .await
        .unwrap_or_else(|| panic!("synced VM: {sync:#}"));
    assert_eq!(vm["primary_ip4"]["address"], "10.10.0.3/24");
    assert_eq!(vm["status"]["value"], "active");
    // The driver writes no HyOps state: hyops does (here: as hyops would).
    let latest =
        s.h.root()
            .join("state/modules/platform__onprem__platform-vm/latest.json");
    assert!(!latest.exists(), "the driver wrote latest.json");
    s.record_ok_state(&r);

    let pve = s.h.sim.counters().writes;
    let nb = s.netbox.counters().writes;
    let again = s.run("apply", "apply-2").await;
    ok(&again);
    assert_eq!(s.h.sim.counters().writes, pve, "Proxmox writes on re-apply");
    assert_eq!(s.netbox.counters().writes, nb, "NetBox writes on re-apply");
    assert_eq!(
        s.evidence_json("apply-2", "hook_netbox_sync.json")["summary"]["writes"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_destroy_soft_retires_the_netbox_vms_and_keeps_the_reservations() {
    let s = Setup::start().await;
    let r = s.run("apply", "apply-1").await;
    ok(&r);
    s.record_ok_state(&r);
    let d = s.run("destroy", "destroy-1").await;
    ok(&d);
    let sync = s.evidence_json("destroy-1", "hook_netbox_sync.json");
    assert_eq!(sync["summary"]["retired"], 2, "{sync:#}");
    let vm = netbox::vm(&s.netbox, "dev-app-01")
        .await
        .expect("kept in NetBox");
    assert_eq!(vm["status"]["value"], "offline");
    assert_eq!(
        netbox::reservations(&s.netbox, "10.10.0.0/24", "hybzone").await,
        ["10.10.0.2/24", "10.10.0.3/24"],
        "reservations are never released"
    );
    // The rebuild through the driver gets the same addresses.
    let again = s.run("apply", "apply-2").await;
    ok(&again);
    assert_eq!(
        again.normalized_outputs["outputs"]["vms"]["app-01"]["interfaces_configured"][0]["ipv4"]
            ["address"],
        "10.10.0.2/24"
    );
}
