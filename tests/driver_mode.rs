//! `hyops-pve driver` (contract §6.3) in-process and as a process: request validation naming
//! the field, results that are always objects, no HyOps state written, the slot lock, and
//! the state commands (import, state_unlock, state_detach) against the simulator.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Harness, DEMO};
use hyops_pve::commands::driver::{run_request_text, run_request_text_with};
use hyops_pve::hyops::{
    acquire_lock, DriverResult, ModuleRef, ResultStatus, RuntimeRoot, DRIVER_REF, MODULE_REF,
    PACK_ID, PROFILE,
};
use hyops_pve::inputs::{merge_operator_inputs, parse_overlay, spec_defaults};
use hyops_pve::yaml::PyValue;
use serde_json::{json, Value};

/// The inputs hyops would hand the driver: spec defaults with the overlay merged on.
fn resolved_inputs(yaml: &str) -> Value {
    let PyValue::Dict(mut inputs) = PyValue::from(&spec_defaults()) else {
        panic!("spec defaults are a mapping")
    };
    merge_operator_inputs(&mut inputs, &parse_overlay(yaml).unwrap());
    PyValue::Dict(inputs).to_json("inputs").unwrap()
}

fn evidence(h: &Harness, run_id: &str) -> PathBuf {
    h.root()
        .join("logs/module/platform__onprem__platform-vm")
        .join(run_id)
}

/// A request in the shape `_apply_execute.run_single` builds.
fn request(h: &Harness, command: &str, run_id: &str, inputs: &Value) -> Value {
    let root = h.root().display().to_string();
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
        "evidence_dir": evidence(h, run_id).display().to_string(),
    })
}

fn env(h: &Harness) -> Vec<(String, String)> {
    vec![
        ("HOME".to_string(), h.dir.path().display().to_string()),
        ("HYOPS_PVE_LOCK_WAIT_S".to_string(), "0".to_string()),
    ]
}

/// Run a request; SSH (snippets, the readiness gate) goes to the simulator's in-process
/// network, as the CLI tests' contexts do.
async fn run(h: &Harness, req: &Value) -> DriverResult {
    run_with_env(h, req, env(h)).await
}

async fn run_with_env(h: &Harness, req: &Value, env: Vec<(String, String)>) -> DriverResult {
    run_request_text_with(
        &req.to_string(),
        env,
        Some(std::sync::Arc::new(h.sim.ssh())),
    )
    .await
}

fn latest(h: &Harness) -> PathBuf {
    h.root()
        .join("state/modules/platform__onprem__platform-vm/latest.json")
}

fn ok(r: &DriverResult) {
    assert_eq!(r.status, ResultStatus::Ok, "{:?}", r.error);
}

fn error_of(r: &DriverResult) -> String {
    assert_eq!(r.status, ResultStatus::Error, "{r:?}");
    r.error.clone().unwrap_or_default()
}

/// The VMID of logical key `key` (physical name `dev-<key>`: the requests run in env dev).
fn vmid_of(h: &Harness, key: &str) -> u32 {
    let name = format!("dev-{key}");
    h.vms()
        .into_iter()
        .find(|(_, n)| *n == name)
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no VM named {name}: {:?}", h.vms()))
}

/// A change that breaks one field of a good request.
type Mutation = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn each_malformed_field_gets_an_error_result_naming_it() {
    let h = Harness::start().await;
    let good = request(&h, "apply", "apply-x", &resolved_inputs(DEMO));
    let cases: Vec<(&str, Mutation)> = vec![
        ("command", Box::new(|r| r["command"] = json!("frobnicate"))),
        ("command", Box::new(|r| r["command"] = json!(7))),
        (
            "run_id",
            Box::new(|r| {
                r.as_object_mut()
                    .unwrap()
                    .remove("run_id")
                    .map(drop)
                    .unwrap_or(())
            }),
        ),
        (
            "module_ref",
            Box::new(|r| r["module_ref"] = json!("platform/onprem/netbox")),
        ),
        (
            "state_instance",
            Box::new(|r| r["state_instance"] = json!("Bad Slot")),
        ),
        (
            "inputs",
            Box::new(|r| r["inputs"] = json!(["not", "a", "map"])),
        ),
        ("runtime", Box::new(|r| r["runtime"] = json!("nope"))),
        (
            "runtime.root",
            Box::new(|r| r["runtime"]["root"] = json!("relative/root")),
        ),
        (
            "runtime.state_dir",
            Box::new(|r| r["runtime"]["state_dir"] = json!("/elsewhere/state")),
        ),
        ("evidence_dir", Box::new(|r| r["evidence_dir"] = json!(""))),
        (
            "execution.driver",
            Box::new(|r| r["execution"]["driver"] = json!("iac/terragrunt")),
        ),
        (
            "lifecycle_command",
            Box::new(|r| {
                r["command"] = json!("preflight");
                r["lifecycle_command"] = json!("rebuild");
            }),
        ),
        ("import", Box::new(|r| r["command"] = json!("import"))),
        (
            "import.resource_id",
            Box::new(|r| {
                r["command"] = json!("import");
                r["import"] = json!({"resource_address": "app-01", "resource_id": "vm-abc"});
            }),
        ),
        (
            "state.force",
            Box::new(|r| {
                r["command"] = json!("state_unlock");
                r["state"] = json!({"lock_id": "apply-1"});
            }),
        ),
        (
            "state.lock_id",
            Box::new(|r| {
                r["command"] = json!("state_unlock");
                r["state"] = json!({"force": true});
            }),
        ),
        (
            "state.expected_resource_id",
            Box::new(|r| {
                r["command"] = json!("state_detach");
                r["state"] = json!({"force": true, "resource_address": "app-01", "expected_resource_id": "101,102"});
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut req = good.clone();
        mutate(&mut req);
        let r = run(&h, &req).await;
        let err = error_of(&r);
        assert!(
            err.starts_with(&format!("driver request field {field}:")),
            "field {field}: {err}"
        );
    }
    assert!(!latest(&h).exists(), "a rejected request changes nothing");
    assert!(h.vms().is_empty());
}

#[tokio::test]
async fn text_that_is_not_a_json_object_gets_an_error_result() {
    let h = Harness::start().await;
    for text in ["", "{", "[1,2]", "\"apply\"", "null"] {
        let r = run_request_text(text, env(&h)).await;
        let err = error_of(&r);
        assert!(
            err.contains("driver request field request:"),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn the_process_always_prints_one_result_object_even_for_garbage() {
    for stdin in [
        "",
        "garbage",
        "[]",
        "{\"command\": \"preflight\"}",
        "\u{0}\u{1}{",
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
            .arg("driver")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{stdin:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.is_object(), "{text}");
        assert_eq!(v["status"], "error");
        assert!(v["normalized_outputs"].is_object());
        assert!(v["error"]
            .as_str()
            .unwrap()
            .starts_with("driver request field"));
    }
}

#[tokio::test]
async fn preflight_answers_an_object_with_the_checks_and_writes_no_state() {
    let h = Harness::start().await;
    let mut req = request(&h, "preflight", "apply-p1", &resolved_inputs(DEMO));
    req["lifecycle_command"] = json!("apply");
    let r = run(&h, &req).await;
    ok(&r);
    assert_eq!(r.command, "preflight");
    let pre = &r.normalized_outputs["preflight"];
    assert_eq!(pre["module_ref"], MODULE_REF);
    assert_eq!(pre["template_vm_id"], 9000);
    assert!(pre["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
    assert!(!latest(&h).exists());
    assert!(h.vms().is_empty());
}

#[tokio::test]
async fn apply_returns_outputs_and_evidence_but_never_writes_hyops_state() {
    let h = Harness::start().await;
    let r = run(
        &h,
        &request(&h, "deploy", "apply-a1", &resolved_inputs(DEMO)),
    )
    .await;
    ok(&r);
    assert_eq!(r.command, "apply");
    let outputs = &r.normalized_outputs["outputs"];
    for name in ["app-01", "app-02", "db-01"] {
        assert_eq!(
            outputs["vm_ids"][name].as_u64().unwrap() as u32,
            vmid_of(&h, name),
            "{outputs}"
        );
    }
    assert!(!latest(&h).exists(), "hyops owns latest.json");
    assert!(!h
        .root()
        .join("config/modules/platform__onprem__platform-vm/latest.inputs.yml")
        .exists());
    let ev = evidence(&h, "apply-a1");
    for f in [
        "driver_meta.json",
        "backend_binding.json",
        "driver_inputs.json",
        "driver_result.json",
        "plan.json",
        "apply_journal.jsonl",
        "apply_report.json",
        "post_apply_ssh_readiness.json",
    ] {
        assert!(ev.join(f).exists(), "{f}");
    }
    // The readiness gate ran (through the simulator's in-process SSH) and its summary is
    // where the Terragrunt driver puts it.
    assert!(
        r.normalized_outputs["post_apply_ssh_readiness"].is_object(),
        "{:?}",
        r.normalized_outputs
    );
    for f in [
        "meta.json",
        "inputs_resolved.json",
        "result.json",
        "module_state.json",
    ] {
        assert!(!ev.join(f).exists(), "{f} is hyops' to write");
    }
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("driver_result.json")).unwrap())
            .unwrap();
    assert_eq!(written, r.to_value());
}

/// Hold the latest slot's lock as run `run_id` (this process, so the holder is alive).
fn hold_lock(h: &Harness, run_id: &str) -> hyops_pve::hyops::RunLock {
    acquire_lock(
        &RuntimeRoot::at(&h.root()),
        &ModuleRef::parse(MODULE_REF).unwrap(),
        None,
        run_id,
        std::time::Duration::ZERO,
    )
    .unwrap()
}

#[tokio::test]
async fn a_mutating_request_on_a_held_slot_fails_naming_the_holder() {
    let h = Harness::start().await;
    let _held = hold_lock(&h, "apply-holder-123");
    let r = run(
        &h,
        &request(&h, "apply", "apply-second", &resolved_inputs(DEMO)),
    )
    .await;
    let err = error_of(&r);
    assert!(err.contains("run_id=apply-holder-123"), "{err}");
    assert!(h.vms().is_empty());
}

#[tokio::test]
async fn a_failed_vm_makes_the_result_an_error_with_the_engine_message() {
    use hyops_pve::sim::{FaultAction, FaultRule};
    let h = Harness::start().await;
    h.sim.add_fault(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        FaultAction::Http {
            status: 403,
            message: "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)".into(),
        },
    ));
    let r = run(
        &h,
        &request(&h, "apply", "apply-f1", &resolved_inputs(DEMO)),
    )
    .await;
    let err = error_of(&r);
    assert!(err.starts_with("apply failed:"), "{err}");
    assert!(err.contains("Permission check failed"), "{err}");
    assert!(
        err.contains("per-VM errors:") && err.contains("apply_report.json"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(
        r.normalized_outputs["vms"].as_array().map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn import_writes_only_the_marker_and_reports_the_vm_in_the_outputs() {
    let h = Harness::start().await;
    h.clone_raw(321, "legacy-app").await;
    h.settle().await;
    let before = h.config_of("legacy-app");
    let mut req = request(&h, "import", "import-i1", &resolved_inputs(DEMO));
    req["import"] =
        json!({"resource_address": "module.vms[\"app-01\"]", "resource_id": "pve1/321"});
    let r = run(&h, &req).await;
    ok(&r);
    assert_eq!(r.normalized_outputs["outputs"]["vm_ids"]["app-01"], 321);
    assert_eq!(r.normalized_outputs["imported"]["marker_written"], true);
    let after = h.config_of("legacy-app");
    let changed: Vec<&String> = after
        .keys()
        .chain(before.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    let mut changed: Vec<&str> = changed.into_iter().map(String::as_str).collect();
    changed.sort();
    changed.dedup();
    assert_eq!(changed, ["description", "tags"], "{before:?} -> {after:?}");
    assert!(after["description"].contains("key=app-01"));
    assert!(after["tags"].split(';').any(|t| t == "hyops-pve"));
    assert_eq!(h.vms().len(), 1, "import creates nothing");
    // The next apply converges the imported VM instead of cloning a new one for app-01.
    let r = run(
        &h,
        &request(&h, "apply", "apply-i2", &resolved_inputs(DEMO)),
    )
    .await;
    ok(&r);
    assert_eq!(r.normalized_outputs["outputs"]["vm_ids"]["app-01"], 321);
    assert_eq!(h.vms().len(), 3);
}

#[tokio::test]
async fn import_refuses_templates_foreign_markers_and_unknown_keys() {
    let h = Harness::start().await;
    let ok_apply = run(
        &h,
        &request(&h, "apply", "apply-x0", &resolved_inputs(DEMO)),
    )
    .await;
    ok(&ok_apply);
    let app02 = vmid_of(&h, "app-02");
    // A VM of another slot (state instance "side").
    let side = resolved_inputs(
        "require_ipam: false\nssh_username: opsadmin\npost_apply_ssh_readiness: {connectivity_wait_s: 30}\nvms:\n  side-01:\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.31/24, gateway: 10.20.0.1}\n",
    );
    let mut side_req = request(&h, "apply", "apply-side", &side);
    side_req["state_instance"] = json!("side");
    ok(&run(&h, &side_req).await);
    let side01 = vmid_of(&h, "side-01");
    let cases = [
        ("app-01", "9000".to_string(), "is a template"),
        ("web-09", app02.to_string(), "not in inputs.vms"),
        (
            "app-01",
            side01.to_string(),
            "carries the marker of another owner",
        ),
        (
            "app-01",
            app02.to_string(),
            "already belongs to this slot as app-02",
        ),
        ("app-01", "4242".to_string(), "does not exist"),
    ];
    for (i, (key, id, why)) in cases.iter().enumerate() {
        let mut req = request(
            &h,
            "import",
            &format!("import-r{i}"),
            &resolved_inputs(DEMO),
        );
        req["import"] = json!({"resource_address": key, "resource_id": id});
        let err = error_of(&run(&h, &req).await);
        assert!(err.contains(why), "{key} {id}: {err}");
    }
}

#[tokio::test]
async fn state_detach_forgets_a_vm_without_touching_proxmox() {
    let h = Harness::start().await;
    ok(&run(
        &h,
        &request(&h, "apply", "apply-d0", &resolved_inputs(DEMO)),
    )
    .await);
    let app01 = vmid_of(&h, "app-01");
    let before = h.config_of("dev-app-01");
    let writes = h.sim.counters().writes;
    let mut req = request(
        &h,
        "state_detach",
        "state-detach-d1",
        &resolved_inputs(DEMO),
    );
    req["state"] = json!({"resource_address": "vms[\"app-01\"]", "expected_resource_id": app01.to_string(), "force": true});
    let r = run(&h, &req).await;
    ok(&r);
    assert_eq!(
        r.state_detach.as_ref().unwrap()["actual_resource_id"],
        app01.to_string()
    );
    assert_eq!(h.sim.counters().writes, writes, "no Proxmox write");
    assert_eq!(h.config_of("dev-app-01"), before);
    // The slot no longer owns it: an apply makes a new app-01 and a destroy leaves the old one.
    ok(&run(
        &h,
        &request(&h, "apply", "apply-d2", &resolved_inputs(DEMO)),
    )
    .await);
    let app01s: Vec<u32> = h
        .vms()
        .into_iter()
        .filter(|(_, n)| n == "dev-app-01")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(app01s.len(), 2, "{:?}", h.vms());
    ok(&run(
        &h,
        &request(&h, "destroy", "destroy-d3", &resolved_inputs(DEMO)),
    )
    .await);
    assert_eq!(h.vms(), vec![(app01, "dev-app-01".to_string())]);
}

#[tokio::test]
async fn state_detach_refuses_a_vmid_mismatch_with_the_upstream_wording() {
    let h = Harness::start().await;
    ok(&run(
        &h,
        &request(&h, "apply", "apply-m0", &resolved_inputs(DEMO)),
    )
    .await);
    let app01 = vmid_of(&h, "app-01");
    let mut req = request(
        &h,
        "state_detach",
        "state-detach-m1",
        &resolved_inputs(DEMO),
    );
    req["state"] =
        json!({"resource_address": "app-01", "expected_resource_id": "999", "force": true});
    let err = error_of(&run(&h, &req).await);
    assert_eq!(
        err,
        format!("state detach refused: resource id mismatch for app-01: expected='999' actual='{app01}'")
    );
    assert!(!h
        .root()
        .join("state/detached/platform__onprem__platform-vm.json")
        .exists());
}

fn write_stale_lock(root: &Path, run_id: &str) -> PathBuf {
    let p = root.join("state/locks/platform__onprem__platform-vm.lock");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        &p,
        json!({"run_id": run_id, "pid": 999_999_999u32, "host": "gone", "started_at": "2026-01-01T00:00:00Z"})
            .to_string(),
    )
    .unwrap();
    p
}

#[tokio::test]
async fn state_unlock_removes_a_stale_lock_named_by_its_run_id() {
    let h = Harness::start().await;
    let lock = write_stale_lock(&h.root(), "apply-dead-1");
    let mut req = request(&h, "state_unlock", "state-unlock-u1", &Value::Null);
    req.as_object_mut().unwrap().remove("inputs");
    req["state"] = json!({"lock_id": "apply-dead-2", "force": true});
    let err = error_of(&run(&h, &req).await);
    assert!(err.contains("lock id mismatch"), "{err}");
    assert!(lock.exists());
    req["state"] = json!({"lock_id": "apply-dead-1", "force": true});
    let r = run(&h, &req).await;
    ok(&r);
    assert_eq!(
        r.normalized_outputs["state_unlock"]["action"],
        "removed_stale_record"
    );
    assert!(!lock.exists());
}

#[tokio::test]
async fn state_unlock_refuses_a_lock_held_by_a_live_run() {
    let h = Harness::start().await;
    let _held = hold_lock(&h, "apply-live-1");
    let mut req = request(&h, "state_unlock", "state-unlock-u2", &Value::Null);
    req.as_object_mut().unwrap().remove("inputs");
    req["state"] = json!({"lock_id": "apply-live-1", "force": true});
    let err = error_of(&run(&h, &req).await);
    assert!(err.contains("held by a live run"), "{err}");
}

use crate::optional;

#[test]
fn the_written_spec_keeps_the_upstream_defaults_and_publish_list() {
    let upstream = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/upstream/hybridops-core/modules/platform/onprem/platform-vm/spec.yml");
    let Some(text) = optional::require("upstream hyops sources", "UPSTREAM", || {
        std::fs::read_to_string(&upstream).map_err(|e| format!("{}: {e}", upstream.display()))
    }) else {
        return;
    };
    let up: Value = hyops_pve::yaml::safe_load(&text)
        .unwrap()
        .to_json("spec")
        .unwrap();
    let ours = hyops_pve::hyops::modspec::platform_vm_spec();
    assert_eq!(ours["inputs"]["defaults"], up["inputs"]["defaults"]);
    assert_eq!(ours["outputs"]["publish"], up["outputs"]["publish"]);
    assert_eq!(ours["requirements"], up["requirements"]);
    assert_eq!(ours["module_ref"], up["module_ref"]);
    assert_eq!(ours["execution"]["hooks"], up["execution"]["hooks"]);
    assert_eq!(ours["execution"]["driver"], DRIVER_REF);
}

#[tokio::test]
async fn a_pool_made_by_the_cli_is_left_unchanged_by_a_driver_apply_on_the_same_root() {
    let h = Harness::start().await;
    let overlay = h.overlay("pool.yml", DEMO);
    let ctx = h.ctx(&overlay).await; // HYOPS_ENV=dev, --root
    hyops_pve::commands::module::apply_inner(&ctx, None, None)
        .await
        .unwrap();
    let writes = h.sim.counters().writes;
    // hyops --root without --env sends runtime.env "", with HYOPS_ENV in the process env.
    let mut req = request(&h, "apply", "apply-c2", &resolved_inputs(DEMO));
    req["runtime"]["env"] = json!("");
    let mut e = env(&h);
    e.push(("HYOPS_ENV".into(), "dev".into()));
    let r = run_with_env(&h, &req, e).await;
    ok(&r);
    assert_eq!(r.normalized_outputs["writes"], 0);
    assert_eq!(h.sim.counters().writes, writes);
    assert_eq!(h.vms().len(), 3);
}

#[tokio::test]
async fn state_detach_of_the_whole_slot_needs_every_vmid_and_then_destroy_touches_nothing() {
    let h = Harness::start().await;
    ok(&run(
        &h,
        &request(&h, "apply", "apply-w0", &resolved_inputs(DEMO)),
    )
    .await);
    let ids: Vec<String> = ["app-01", "app-02", "db-01"]
        .iter()
        .map(|k| vmid_of(&h, k).to_string())
        .collect();
    let mut req = request(
        &h,
        "state_detach",
        "state-detach-w1",
        &resolved_inputs(DEMO),
    );
    req["state"] =
        json!({"resource_address": "*", "expected_resource_id": ids[..2].join(","), "force": true});
    let err = error_of(&run(&h, &req).await);
    assert!(err.contains("resource id mismatch for *"), "{err}");
    req["state"]["expected_resource_id"] = json!(ids.join(","));
    ok(&run(&h, &req).await);
    let before = h.vms();
    ok(&run(
        &h,
        &request(&h, "destroy", "destroy-w2", &resolved_inputs(DEMO)),
    )
    .await);
    assert_eq!(
        h.vms(),
        before,
        "detached VMs are not this slot's to destroy"
    );
}

#[tokio::test]
async fn a_detach_record_is_dropped_once_its_vm_is_gone() {
    let h = Harness::start().await;
    ok(&run(
        &h,
        &request(&h, "apply", "apply-g0", &resolved_inputs(DEMO)),
    )
    .await);
    let app01 = vmid_of(&h, "app-01");
    let mut req = request(
        &h,
        "state_detach",
        "state-detach-g1",
        &resolved_inputs(DEMO),
    );
    req["state"] = json!({"resource_address": "app-01", "expected_resource_id": app01.to_string(), "force": true});
    ok(&run(&h, &req).await);
    let record = h
        .root()
        .join("state/detached/platform__onprem__platform-vm.json");
    let vms_in = |p: &Path| -> usize {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["vms"].as_array().unwrap().len()
    };
    assert_eq!(vms_in(&record), 1);
    // Someone removes the forgotten VM; its VMID may now be reused by anyone.
    let c = h.raw_client();
    let base = format!("{}/nodes/pve1/qemu/{app01}", h.sim.url());
    for (method, url) in [
        (reqwest::Method::POST, format!("{base}/status/stop")),
        (reqwest::Method::DELETE, format!("{base}?purge=1")),
    ] {
        let r = c
            .request(method, url)
            .header("Authorization", h.sim.token_header())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        h.settle().await;
    }
    ok(&run(
        &h,
        &request(&h, "apply", "apply-g2", &resolved_inputs(DEMO)),
    )
    .await);
    assert_eq!(
        vms_in(&record),
        0,
        "the record of a VM that is gone is dropped"
    );
}

/// DEMO with a VM name Proxmox's `dns-name` format refuses (hyops' own validator accepts it).
fn demo_with_refused_name() -> String {
    let bad = DEMO.replace(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    vm_name: web_01\n",
    );
    assert_ne!(bad, DEMO, "the DEMO overlay changed shape");
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_proxmox_would_refuse_fails_a_driver_apply_naming_the_field_before_any_write() {
    let h = Harness::start().await;
    let before = h.sim.counters();
    let r = run(
        &h,
        &request(
            &h,
            "apply",
            "apply-c1",
            &resolved_inputs(&demo_with_refused_name()),
        ),
    )
    .await;
    let err = error_of(&r);
    assert!(
        err.contains("inputs.vms[app-01].vm_name=\"web_01\""),
        "{err}"
    );
    assert!(err.contains("nothing was sent to Proxmox"), "{err}");
    assert_eq!(
        h.sim.counters().writes,
        before.writes,
        "nothing was written"
    );
    assert!(h.vms().is_empty(), "no VM was cloned");
    assert!(!latest(&h).exists());
    assert!(
        !evidence(&h, "apply-c1")
            .join("apply_journal.jsonl")
            .exists(),
        "the executor never started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_preflight_hyops_runs_first_refuses_the_same_value() {
    let h = Harness::start().await;
    let mut req = request(
        &h,
        "preflight",
        "apply-c2",
        &resolved_inputs(&demo_with_refused_name()),
    );
    req["lifecycle_command"] = json!("apply");
    let err = error_of(&run(&h, &req).await);
    assert!(
        err.contains("inputs.vms[app-01].vm_name=\"web_01\""),
        "{err}"
    );
    assert!(h.vms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_apply_reports_the_post_apply_verification() {
    let h = Harness::start().await;
    let r = run(
        &h,
        &request(&h, "apply", "apply-v1", &resolved_inputs(DEMO)),
    )
    .await;
    ok(&r);
    assert_eq!(r.normalized_outputs["converged"], true, "{r:?}");
    assert!(r.normalized_outputs.get("divergences").is_none());
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(evidence(&h, "apply-v1").join("apply_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["converged"], true, "{report}");
    assert_eq!(report["divergences"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_apply_whose_convergence_cannot_be_proven_is_an_error_naming_why() {
    // How many VM listings a clean apply of DEMO makes: the last one is the verification's
    // re-read (it runs after every step ended).
    let listings = {
        let h = Harness::start().await;
        ok(&run(
            &h,
            &request(&h, "apply", "apply-v2", &resolved_inputs(DEMO)),
        )
        .await);
        h.calls("GET", "/cluster/resources")
    };
    use hyops_pve::sim::{FaultAction, FaultRule};
    let h = Harness::start().await;
    h.sim.add_fault(
        FaultRule::on(
            "GET",
            "/cluster/resources",
            FaultAction::Http {
                status: 403,
                message: "Permission check failed (/vms, VM.Audit)".into(),
            },
        )
        .nth(listings),
    );
    let r = run(
        &h,
        &request(&h, "apply", "apply-v3", &resolved_inputs(DEMO)),
    )
    .await;
    let err = error_of(&r);
    assert!(err.contains("did not converge"), "{err}");
    assert_eq!(r.normalized_outputs["converged"], false, "{r:?}");
    let divergences = r.normalized_outputs["divergences"].to_string();
    assert!(
        divergences.contains("convergence is unproven") && divergences.contains("VM.Audit"),
        "{divergences}"
    );
}

/// The request of `driver_signal` written to a file (the child reads it with --request).
fn request_file(h: &Harness, req: &Value) -> PathBuf {
    let p = h.dir.path().join("request.json");
    std::fs::write(&p, req.to_string()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_driver_apply_ends_the_steps_and_answers_one_result() {
    use hyops_pve::sim::{FaultAction, FaultRule};
    use std::io::{BufRead, BufReader};
    let h = Harness::start().await;
    // Clones that take ~100 real seconds: the executor is mid-rollout when the signal comes.
    h.sim.add_fault(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        FaultAction::SlowTask {
            extra_ms: 200_000_000,
        },
    ));
    let inputs = resolved_inputs(
        "require_ipam: false\ncloud_init_mode: native\npost_apply_ssh_readiness: {enabled: false}\nvms:\n  app-01:\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}\n",
    );
    let file = request_file(&h, &request(&h, "apply", "apply-s1", &inputs));
    let home = h.dir.path().to_path_buf();
    let journal_file = evidence(&h, "apply-s1").join("apply_journal.jsonl");
    let outcome = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
            .args(["driver", "--request"])
            .arg(&file)
            .env("HOME", &home)
            .env("HYOPS_PVE_LOCK_WAIT_S", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        // The rollout phase has begun.
        let err = child.stderr.take().unwrap();
        let mut lines = BufReader::new(err).lines().map_while(Result::ok);
        let mut seen = Vec::new();
        for l in lines.by_ref() {
            let started = l.contains("progress: phase=apply");
            seen.push(l);
            if started {
                break;
            }
        }
        assert!(
            seen.last()
                .is_some_and(|l| l.contains("progress: phase=apply")),
            "the driver never reached the rollout: {seen:#?}"
        );
        std::thread::spawn(move || for _ in lines {});
        // Signal once a step has started (the journal has its start line): mid-rollout,
        // however loaded the machine is.
        let t = std::time::Instant::now();
        while !std::fs::read_to_string(&journal_file).is_ok_and(|j| j.contains("\"start\"")) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(60),
                "no step started: {seen:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: kill(2) on the pid of the child this test spawned; no memory is touched.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let t = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > std::time::Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the driver did not stop within 60 s of SIGTERM: {seen:#?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        (status, stdout.join().unwrap())
    })
    .await
    .unwrap();
    let (status, stdout) = outcome;
    assert_eq!(status.code(), Some(1), "{status:?} {stdout}");
    assert_eq!(stdout.lines().count(), 1, "one result document: {stdout}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["status"], "error", "{doc}");
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.starts_with("apply cancelled by the operator (SIGTERM)"),
        "{err}"
    );
    let ev = evidence(&h, "apply-s1");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("driver_result.json")).unwrap())
            .unwrap();
    assert_eq!(written, doc);
    // Every journalled step that started has its end line.
    let journal = std::fs::read_to_string(ev.join("apply_journal.jsonl")).unwrap();
    let mut open: std::collections::BTreeMap<(String, String), i32> = Default::default();
    for line in journal.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let key = (
            e["vm"].as_str().unwrap().to_string(),
            e["action"].as_str().unwrap().to_string(),
        );
        *open.entry(key).or_default() += if e["event"] == "start" { 1 } else { -1 };
    }
    assert!(!open.is_empty(), "the rollout had started: {journal}");
    assert!(
        open.values().all(|n| *n == 0),
        "a step without its end line: {open:?}\n{journal}"
    );
    assert!(!latest(&h).exists(), "hyops owns latest.json");
}

#[tokio::test]
async fn a_refused_import_keeps_the_detach_record_and_the_next_apply_leaves_the_detached_vm() {
    let h = Harness::start().await;
    ok(&run(
        &h,
        &request(&h, "apply", "apply-k0", &resolved_inputs(DEMO)),
    )
    .await);
    let old = vmid_of(&h, "app-01");
    let mut req = request(
        &h,
        "state_detach",
        "state-detach-k1",
        &resolved_inputs(DEMO),
    );
    req["state"] = json!({"resource_address": "app-01", "expected_resource_id": old.to_string(), "force": true});
    ok(&run(&h, &req).await);
    // The slot makes a new app-01; the detached one stays in Proxmox, forgotten.
    ok(&run(
        &h,
        &request(&h, "apply", "apply-k2", &resolved_inputs(DEMO)),
    )
    .await);
    let record = h
        .root()
        .join("state/detached/platform__onprem__platform-vm.json");
    let record_vmids = || -> Vec<u64> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
        v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["vmid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(record_vmids(), vec![u64::from(old)]);
    // Importing the old VM back into the key the new one holds is refused ...
    let mut req = request(&h, "import", "import-k3", &resolved_inputs(DEMO));
    req["import"] = json!({"resource_address": "app-01", "resource_id": old.to_string()});
    let err = error_of(&run(&h, &req).await);
    assert!(err.contains("already managed by VM"), "{err}");
    // ... and changes nothing: the VM is still detached, so the next apply leaves it alone
    // instead of deleting it as a duplicate clone of app-01.
    assert_eq!(record_vmids(), vec![u64::from(old)]);
    ok(&run(
        &h,
        &request(&h, "apply", "apply-k4", &resolved_inputs(DEMO)),
    )
    .await);
    assert!(
        h.vms().iter().any(|(id, _)| *id == old),
        "the detached VM {old} was deleted: {:?}",
        h.vms()
    );
}

/// The VM's address as `terraform state list` prints it for the upstream pack.
const TF_ADDRESS_APP01: &str =
    "module.vm_multi.module.vm[\"app-01\"].proxmox_virtual_environment_vm.vm";

#[tokio::test]
async fn state_detach_and_import_accept_the_terraform_address_of_the_vm() {
    let h = Harness::start().await;
    ok(&run(
        &h,
        &request(&h, "apply", "apply-t0", &resolved_inputs(DEMO)),
    )
    .await);
    let app01 = vmid_of(&h, "app-01");
    let mut req = request(
        &h,
        "state_detach",
        "state-detach-t1",
        &resolved_inputs(DEMO),
    );
    req["state"] = json!({"resource_address": TF_ADDRESS_APP01, "expected_resource_id": app01.to_string(), "force": true});
    let r = run(&h, &req).await;
    ok(&r);
    assert_eq!(r.state_detach.as_ref().unwrap()["vms"][0]["key"], "app-01");
    let mut req = request(&h, "import", "import-t2", &resolved_inputs(DEMO));
    req["import"] = json!({"resource_address": format!("{TF_ADDRESS_APP01}[0]"), "resource_id": app01.to_string()});
    let r = run(&h, &req).await;
    ok(&r);
    assert_eq!(r.normalized_outputs["imported"]["key"], "app-01");
}

#[test]
fn an_address_names_the_key_of_a_vm_and_never_of_another_resource() {
    use hyops_pve::hyops::protocol::logical_key_of_address;
    for (address, key) in [
        ("app-01", Some("app-01")),
        ("vms.app-01", Some("app-01")),
        ("vms[\"app-01\"]", Some("app-01")),
        (
            "module.x.proxmox_virtual_environment_vm.vm[\"app-01\"]",
            Some("app-01"),
        ),
        (TF_ADDRESS_APP01, Some("app-01")),
        (
            "module.vms.module.vm[\"db-01\"].proxmox_virtual_environment_vm.vm[0]",
            Some("db-01"),
        ),
        // The VM's cloud-init snippet is not the VM.
        (
            "module.vm_multi.module.vm[\"app-01\"].proxmox_virtual_environment_file.cloud_init_user_data[0]",
            None,
        ),
        (
            "module.x.proxmox_virtual_environment_file.ci[\"app-01\"]",
            None,
        ),
        ("module.vm[\"app-01\"].something_else", None),
        ("module.vm[\"app 01\"]", None),
        ("vms[\"\"]", None),
    ] {
        assert_eq!(
            logical_key_of_address(address).as_deref(),
            key,
            "{address}"
        );
    }
}

/// Point the harness root's credentials at a port nothing listens on.
fn make_proxmox_unreachable(h: &Harness) {
    let tfvars = h.root().join("credentials/proxmox.credentials.tfvars");
    let text = std::fs::read_to_string(&tfvars).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("proxmox_url") {
                "proxmox_url = \"https://127.0.0.1:1/api2/json\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&tfvars, text + "\n").unwrap();
}

#[tokio::test]
async fn validate_and_its_preflight_need_no_proxmox_but_the_apply_preflight_does() {
    let h = Harness::start().await;
    make_proxmox_unreachable(&h);
    let mut pre = request(&h, "preflight", "validate-u1", &resolved_inputs(DEMO));
    pre["lifecycle_command"] = json!("validate");
    ok(&run(&h, &pre).await);
    ok(&run(
        &h,
        &request(&h, "validate", "validate-u1", &resolved_inputs(DEMO)),
    )
    .await);
    let mut pre = request(&h, "preflight", "apply-u2", &resolved_inputs(DEMO));
    pre["lifecycle_command"] = json!("apply");
    let err = error_of(&run(&h, &pre).await);
    assert!(err.contains("is not reachable"), "{err}");
}

#[test]
fn a_request_larger_than_the_cap_is_an_error_result_not_an_unbounded_read() {
    use hyops_pve::commands::driver::MAX_REQUEST_BYTES;
    let size = usize::try_from(MAX_REQUEST_BYTES).unwrap() + 1;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
        .arg("driver")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A JSON string padded past the cap; the driver may stop reading (a broken pipe here).
    let writer = std::thread::spawn(move || {
        let mut body = vec![b'x'; size];
        body[0] = b'"';
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "error");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.starts_with("driver request field request: larger than 64 MiB"),
        "{err}"
    );
}

#[tokio::test]
async fn a_driver_apply_whose_evidence_cannot_be_written_answers_an_error_naming_the_file_and_the_vms(
) {
    let h = Harness::start().await;
    let inputs = resolved_inputs(DEMO);
    let run_id = "apply-20260101T000000Z-0000df01";
    let _full =
        hyops_pve::hyops::fsio::faults::inject(hyops_pve::hyops::fsio::faults::WriteFault {
            under: h.root(),
            file_name: Some("apply_report.json".into()),
            armed_by: None,
            after: 0,
            failures: None,
            errno: libc::ENOSPC,
        });
    let r = run(&h, &request(&h, "apply", run_id, &inputs)).await;
    let e = error_of(&r);
    assert!(
        e.starts_with(&format!(
            "apply changed Proxmox but its evidence is incomplete: cannot write {}: No space left on device (os error 28); ",
            evidence(&h, run_id).join("apply_report.json").display()
        )),
        "{e}"
    );
    assert!(e.contains("VMs: 3 created (app-01 vmid "), "{e}");
    // hyops records the state from this result; the outputs are still in it
    assert!(r.normalized_outputs["outputs"]["vms"]["app-01"].is_object());
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(evidence(&h, run_id).join("driver_result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["status"], "error");
    assert!(!latest(&h).exists(), "the driver never writes the state");
}

/// `hyops-pve driver --request <file>` as hyops' plug-in runs it, with `name=value` added to
/// its environment (`value` given as bytes: it may be no UTF-8).
async fn driver_process(
    h: &Harness,
    req: &Value,
    name: &str,
    value: &[u8],
) -> std::process::Output {
    use std::os::unix::ffi::OsStrExt;
    let file = request_file(h, req);
    let home = h.dir.path().to_path_buf();
    let (name, value) = (name.to_string(), value.to_vec());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
            .args(["driver", "--request"])
            .arg(&file)
            .env("HOME", &home)
            .env("HYOPS_PVE_LOCK_WAIT_S", "0")
            .env(name, std::ffi::OsStr::from_bytes(&value))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_ignores_an_unrelated_variable_that_is_not_utf8() {
    // Before: `command: unknown`, exit 70 and the raw value in the result's error.
    let h = Harness::start().await;
    let req = request(&h, "validate", "validate-e1", &resolved_inputs(DEMO));
    let out = driver_process(&h, &req, "UNRELATED_LATIN1", b"caf\xe9-MARKER-4711").await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["command"], "validate", "{doc}");
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !String::from_utf8_lossy(bytes).contains("MARKER-4711"),
            "{what}: {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_variable_that_is_not_utf8_fails_the_request_naming_only_the_variable() {
    let h = Harness::start().await;
    let req = request(&h, "apply", "apply-e2", &resolved_inputs(DEMO));
    let out = driver_process(&h, &req, "PROXMOX_TOKEN_SECRET", b"s3cr\xe9t-MARKER-4711").await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "error", "{doc}");
    // the request's own run id and command, not `unknown`
    assert_eq!(doc["command"], "apply", "{doc}");
    assert_eq!(doc["run_id"], "apply-e2", "{doc}");
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.starts_with("environment variable PROXMOX_TOKEN_SECRET is not valid UTF-8"),
        "{err}"
    );
    let written =
        std::fs::read_to_string(evidence(&h, "apply-e2").join("driver_result.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), doc);
    for (what, text) in [
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("stderr", String::from_utf8_lossy(&out.stderr).into_owned()),
        ("driver_result.json", written),
    ] {
        assert!(!text.contains("MARKER-4711"), "{what}: {text}");
    }
    assert!(
        !evidence(&h, "apply-e2")
            .join("apply_journal.jsonl")
            .exists(),
        "refused before the rollout"
    );
}
