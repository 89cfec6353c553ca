//! The real upstream `hyops` CLI runs platform/onprem/platform-vm through the hyops-pve plug-in
//! (`iac/proxmox-native`) against the simulator: hyops writes the state, hyops-pve does the
//! work. Requires upstream hyops and the plug-in in `.venv-hyops` (CI: `HYOPS_REQUIRE_UPSTREAM=1`).

use crate::common;
use crate::upstream_hyops;

use common::DEMO;
use hyops_pve::hyops::PUBLISH_KEYS;
use hyops_pve::sim::{FaultAction, FaultRule};
use serde_json::Value;
use upstream_hyops::{pool, pool_no_gate, World};

const FAST: f64 = 0.0005;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_apply_ends_ok_and_its_state_has_the_simulator_vmids() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    let run = w.module("apply", &inputs, &[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("status=ok"), "{}", run.stdout);
    let state = w.state(None);
    assert_eq!(state["status"], "ok");
    assert_eq!(state["execution"]["driver"], "iac/proxmox-native");
    assert_eq!(
        state["execution"]["backend"],
        serde_json::json!({"mode": "local"})
    );
    let outputs = &state["outputs"];
    let mut keys: Vec<&str> = outputs
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut publish = PUBLISH_KEYS.to_vec();
    publish.sort_unstable();
    assert_eq!(keys, publish);
    let vms = w.vms();
    for key in ["app-01", "app-02", "db-01"] {
        let name = format!("dev-{key}");
        assert_eq!(
            outputs["vm_ids"][key].as_u64(),
            vms.get(&name).map(|v| u64::from(*v))
        );
        assert_eq!(outputs["vms"][key]["vm_name"], name.as_str());
    }
    assert_eq!(
        outputs["vm_keys"],
        serde_json::json!(["app-01", "app-02", "db-01"])
    );
    assert_eq!(
        outputs["vm_names"],
        serde_json::json!(["dev-app-01", "dev-app-02", "dev-db-01"])
    );
    // The configured address is always published; the guest agent's (`ipv4_addresses`) only
    // once the guest reported it: with the gate off nothing waits for the agent (as bpg's
    // `[]` before the agent answers), so under load it may still be null.
    assert_eq!(
        outputs["vms"]["db-01"]["interfaces_configured"][0]["ipv4"]["address"],
        "10.20.0.21/24"
    );
    assert!(
        [serde_json::json!(null), serde_json::json!("10.20.0.21")]
            .contains(&outputs["ipv4_addresses"]["db-01"]),
        "{}",
        outputs["ipv4_addresses"]
    );
    // Rerun inputs are hyops' (sanitised), next to the state.
    let rerun = state["rerun_inputs_file"].as_str().unwrap();
    assert!(std::fs::read_to_string(rerun).unwrap().contains("app-01"));
    // The driver's evidence sits in hyops' run record.
    let ev = std::path::PathBuf::from(state["evidence_dir"].as_str().unwrap());
    for f in [
        "driver_meta.json",
        "driver_result.json",
        "plan.json",
        "apply_journal.jsonl",
        "hyops-pve.log",
        "result.json",
    ] {
        assert!(ev.join(f).exists(), "{f} in {}", ev.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hyops_apply_makes_no_proxmox_writes() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &inputs, &[]).await.assert_ok();
    let first = w.state(None);
    let writes = w.sim.counters().writes;
    w.module("apply", &inputs, &[]).await.assert_ok();
    assert_eq!(
        w.sim.counters().writes,
        writes,
        "the re-apply wrote to Proxmox"
    );
    let second = w.state(None);
    assert_eq!(second["outputs"]["vm_ids"], first["outputs"]["vm_ids"]);
    assert_ne!(second["run_id"], first["run_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_destroy_leaves_the_slot_destroyed_and_no_vms() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &inputs, &[]).await.assert_ok();
    assert_eq!(w.vms().len(), 3);
    w.module("destroy", &inputs, &[]).await.assert_ok();
    let state = w.state(None);
    assert_eq!(state["status"], "destroyed");
    assert_eq!(state["outputs"], serde_json::json!({}));
    assert!(w.vms().is_empty(), "{:?}", w.vms());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_rebuild_recreates_the_pool_and_refuses_a_wrong_confirm_module() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &inputs, &[]).await.assert_ok();
    let before = w.vms();
    let refused = w
        .module(
            "rebuild",
            &inputs,
            &["--yes", "--confirm-module", "platform/onprem/netbox"],
        )
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains(
            "--confirm-module mismatch; expected 'platform/onprem/platform-vm' but got 'platform/onprem/netbox'"
        ),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert_eq!(w.vms(), before, "a refused rebuild touches nothing");
    let clone = ("POST", "/nodes/{node}/qemu/{vmid}/clone");
    let delete = ("DELETE", "/nodes/{node}/qemu/{vmid}");
    let (clones, deletes) = (
        w.sim.counters().get(clone.0, clone.1),
        w.sim.counters().get(delete.0, delete.1),
    );
    w.module(
        "rebuild",
        &inputs,
        &["--yes", "--confirm-module", "platform/onprem/platform-vm"],
    )
    .await
    .assert_ok();
    let after = w.vms();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    // Proxmox reuses the freed VMIDs; the request counters show the destroy and re-clone.
    assert_eq!(w.sim.counters().get(delete.0, delete.1) - deletes, 3);
    assert_eq!(w.sim.counters().get(clone.0, clone.1) - clones, 3);
    let state = w.state(None);
    assert_eq!(state["status"], "ok");
    assert_eq!(
        state["outputs"]["vm_ids"]["app-01"].as_u64(),
        Some(u64::from(after["dev-app-01"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_apply_is_an_error_with_the_engine_message_and_keeps_the_previous_outputs() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &inputs, &[]).await.assert_ok();
    let previous = w.state(None)["outputs"].clone();
    // A config change Proxmox refuses (whichever method carries it: the engine sends option
    // changes as the synchronous PUT).
    for method in ["POST", "PUT"] {
        w.sim.add_fault(FaultRule::on(
            method,
            "/nodes/{node}/qemu/{vmid}/config",
            FaultAction::Http {
                status: 403,
                message: "Permission check failed (/vms/100, VM.Config.Memory)".into(),
            },
        ));
    }
    let grown = w.overlay(
        "grown.yml",
        &pool_no_gate(DEMO).replace("memory_mb: 2048", "memory_mb: 4096"),
    );
    let run = w.module("apply", &grown, &[]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("status=error"), "{}", run.stdout);
    assert!(
        run.stderr.contains("error: apply failed:"),
        "{}",
        run.stderr
    );
    let state = w.state(None);
    assert_eq!(state["status"], "error");
    assert_eq!(state["failed_command"], "apply");
    let last_error = state["last_error"].as_str().unwrap();
    assert!(last_error.starts_with("apply failed:"), "{last_error}");
    assert!(
        last_error.contains("Permission check failed"),
        "{last_error}"
    );
    assert_eq!(state["outputs"], previous, "previous outputs are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_instance_slots_stay_apart() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let blue = w.overlay(
        "blue.yml",
        "require_ipam: false\ncloud_init_mode: native\npost_apply_ssh_readiness: {enabled: false}\nvms:\n  blue-01:\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.1.11/24, gateway: 10.20.1.1}\n",
    );
    let green = w.overlay(
        "green.yml",
        "require_ipam: false\ncloud_init_mode: native\npost_apply_ssh_readiness: {enabled: false}\nvms:\n  green-01:\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.2.11/24, gateway: 10.20.2.1}\n",
    );
    w.module("apply", &blue, &["--state-instance", "blue"])
        .await
        .assert_ok();
    w.module("apply", &green, &["--state-instance", "green"])
        .await
        .assert_ok();
    let b = w.state(Some("blue"));
    let g = w.state(Some("green"));
    assert_eq!(b["state_instance"], "blue");
    assert_eq!(b["outputs"]["vm_keys"], serde_json::json!(["blue-01"]));
    assert_eq!(g["outputs"]["vm_keys"], serde_json::json!(["green-01"]));
    assert!(!w
        .root()
        .join("state/modules/platform__onprem__platform-vm/latest.json")
        .exists());
    // Destroying one slot leaves the other's VM alone.
    w.module("destroy", &blue, &["--state-instance", "blue"])
        .await
        .assert_ok();
    assert_eq!(w.state(Some("blue"))["status"], "destroyed");
    assert_eq!(w.state(Some("green"))["status"], "ok");
    let vms = w.vms();
    assert_eq!(vms.keys().collect::<Vec<_>>(), ["dev-green-01"], "{vms:?}");
    assert_eq!(
        g["outputs"]["vm_ids"]["green-01"].as_u64(),
        Some(u64::from(vms["dev-green-01"]))
    );
}

/// Two `hyops apply` on one slot at once, on a slow simulator (clones take seconds).
async fn two_concurrent_applies(w: &World) -> (upstream_hyops::Run, upstream_hyops::Run) {
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    tokio::join!(
        w.module("apply", &inputs, &[]),
        w.module("apply", &inputs, &[])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_on_one_slot_the_second_fails_naming_the_holder() {
    let Some(mut w) = World::start(0.03).await else {
        return;
    };
    w.env.insert("HYOPS_PVE_LOCK_WAIT_S".into(), "0".into());
    let (a, b) = two_concurrent_applies(&w).await;
    let (winner, loser) = if a.code == 0 { (a, b) } else { (b, a) };
    winner.assert_ok();
    assert_eq!(loser.code, 1, "{}\n{}", loser.stdout, loser.stderr);
    let holder = winner.run_id();
    assert!(!holder.is_empty());
    assert!(
        loser
            .stderr
            .contains(&format!("another hyops-pve run holds the lock for platform/onprem/platform-vm (slot latest): run_id={holder}")),
        "{}",
        loser.stderr
    );
    assert_eq!(w.vms().len(), 3, "{:?}", w.vms());
    assert_eq!(w.state(None)["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_on_one_slot_the_second_waits_and_changes_nothing() {
    let Some(w) = World::start(0.03).await else {
        return;
    };
    let (a, b) = two_concurrent_applies(&w).await;
    a.assert_ok();
    b.assert_ok();
    assert_eq!(w.vms().len(), 3, "{:?}", w.vms());
    let state = w.state(None);
    assert_eq!(state["status"], "ok");
    assert_eq!(
        state["outputs"]["vm_keys"],
        serde_json::json!(["app-01", "app-02", "db-01"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_without_the_binary_gives_one_line_naming_hyops_pve_bin() {
    let Some(mut w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    for bin in ["/nonexistent/hyops-pve", "/bin/false"] {
        w.env.insert("HYOPS_PVE_BIN".into(), bin.into());
        let run = w.module("apply", &inputs, &[]).await;
        assert_eq!(run.code, 1, "{bin}: {}\n{}", run.stdout, run.stderr);
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{bin}: {}", run.stderr);
        assert!(errors[0].contains("HYOPS_PVE_BIN"), "{bin}: {}", errors[0]);
        assert!(errors[0].contains(bin), "{bin}: {}", errors[0]);
    }
    // hyops' PATH lookup: unset and not on PATH.
    w.env.remove("HYOPS_PVE_BIN");
    let args = w.module_args("apply", &inputs, &[]);
    let mut c = w.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.env_remove("HYOPS_PVE_BIN").env("PATH", "/usr/bin:/bin");
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("HYOPS_PVE_BIN is unset and hyops-pve is not on PATH"),
        "{line}"
    );
    assert!(w.vms().is_empty());
    assert!(
        !w.root()
            .join("state/modules/platform__onprem__platform-vm/latest.json")
            .exists(),
        "a failed preflight leaves no state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_set_change_is_refused_with_the_upstream_guard_message() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &inputs, &[]).await.assert_ok();
    let pool = pool_no_gate(DEMO);
    let smaller = w.overlay("smaller.yml", &pool[..pool.find("  db-01:").unwrap()]);
    let run = w.module("apply", &smaller, &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("error: preflight failed: vm set collision detected: requested VM names differ from existing managed VM names for module_ref=platform/onprem/platform-vm; existing_only=['db-01'], requested_only=[]"),
        "{}",
        run.stderr
    );
    assert_eq!(w.vms().len(), 3);
    assert_eq!(
        w.state(None)["status"],
        "ok",
        "a failed preflight leaves the state alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_plan_and_validate_run_through_the_driver() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("validate", &inputs, &[]).await.assert_ok();
    let plan = w.module("plan", &inputs, &[]).await;
    plan.assert_ok();
    let ev = w
        .root()
        .join("logs/module/platform__onprem__platform-vm")
        .join(plan.run_id());
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["normalized_outputs"]["plan_summary"]["create"], 3);
    assert!(w.vms().is_empty(), "plan changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_import_detach_and_unlock_run_through_the_driver() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &inputs, &[]).await.assert_ok();
    let app01 = w.vms()["dev-app-01"].to_string();
    let modules = w.modules().display().to_string();
    let inputs_s = inputs.display().to_string();
    let common = [
        "--env",
        "dev",
        "--module",
        "platform/onprem/platform-vm",
        "--module-root",
        modules.as_str(),
        "--inputs",
        inputs_s.as_str(),
    ];

    // detach app-01: hyops records `detached`, Proxmox keeps the VM.
    let mut detach = vec!["state", "detach"];
    detach.extend(common);
    detach.extend([
        "--resource-address",
        "app-01",
        "--expected-resource-id",
        &app01,
        "--force",
    ]);
    let run = w.hyops(&detach).await;
    run.assert_ok();
    let state = w.state(None);
    assert_eq!(state["status"], "detached");
    assert_eq!(
        state["detached_resources"][0]["actual_resource_id"],
        app01.as_str()
    );
    assert_eq!(w.vms().len(), 3);

    // import it back: hyops records ok with every VM of the slot in the outputs.
    let mut import = vec!["import"];
    import.extend(common);
    import.extend([
        "--resource-address",
        "vms[\"app-01\"]",
        "--resource-id",
        &app01,
    ]);
    w.hyops(&import).await.assert_ok();
    let state = w.state(None);
    assert_eq!(state["status"], "ok");
    assert_eq!(
        state["outputs"]["vm_ids"]["app-01"].as_u64(),
        app01.parse().ok()
    );
    assert_eq!(
        state["outputs"]["vm_keys"],
        serde_json::json!(["app-01", "app-02", "db-01"])
    );

    // unlock a lock left by a dead run, named by its run id.
    let lock = w
        .root()
        .join("state/locks/platform__onprem__platform-vm.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(
        &lock,
        r#"{"run_id":"apply-dead","pid":999999999,"host":"gone","started_at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let mut unlock = vec!["state", "unlock"];
    unlock.extend(common);
    unlock.extend(["--lock-id", "apply-dead", "--force"]);
    w.hyops(&unlock).await.assert_ok();
    assert!(!lock.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_hyops_apply_is_cancelled_and_recorded_by_both() {
    use std::os::unix::process::CommandExt;
    let Some(w) = World::start(0.05).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    let args = w.module_args("apply", &inputs, &[]);
    let mut c = w.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Its own process group, as a terminal's foreground job: Ctrl-C reaches hyops and the
    // hyops-pve child alike.
    c.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // A terminal's foreground job has SIGINT at its default. A test run started in the
    // background (`cargo test &`, nohup, some CI runners) inherits SIGINT ignored, and
    // Python then installs no KeyboardInterrupt handler at all: restore the default.
    // SAFETY: only signal(2), async-signal-safe, runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = c.spawn().unwrap();
    let pgid = child.id() as i32;
    let logs = w.root().join("logs/module/platform__onprem__platform-vm");
    // Wait until the apply call is running (its clones take seconds on this simulator).
    let started = std::time::Instant::now();
    loop {
        let running = std::fs::read_dir(&logs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("hyops-pve.log")).ok());
        if running.is_some_and(|l| l.contains("hyops_pve_apply start")) && w.sim.running_tasks() > 0
        {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "the apply never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // SAFETY: kill(2) on the process group we just created; no memory is touched.
    unsafe {
        libc::kill(-pgid, libc::SIGINT);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled by user"), "{stderr}");
    let state = w.state(None);
    assert_eq!(state["status"], "error");
    assert_eq!(
        state["last_error"],
        "cancelled after provider execution started"
    );
    let ev = std::path::PathBuf::from(state["evidence_dir"].as_str().unwrap());
    assert!(ev.join("cancelled.json").exists());
    let driver: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("driver_result.json")).unwrap())
            .unwrap();
    assert!(
        driver["error"]
            .as_str()
            .unwrap()
            .contains("apply cancelled by the operator (SIGINT)"),
        "{driver}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxmox_fails_the_preflight_with_the_reason_said_once() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.sim.shutdown().await;
    let run = w.module("apply", &inputs, &[]).await;
    assert_eq!(run.code, 1);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(
        line.starts_with("error: preflight failed: Proxmox API at https://127.0.0.1:"),
        "{line}"
    );
    assert_eq!(line.matches("preflight failed").count(), 1, "{line}");
    assert!(!w
        .root()
        .join("state/modules/platform__onprem__platform-vm/latest.json")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyops_apply_against_a_sim_serve_process_records_its_vmids() {
    use std::io::{BufRead, BufReader};
    let Some(w) = World::start(FAST).await else {
        return;
    };
    // The standalone simulator process, with its own ready runtime root.
    let root = w.dir.path().join("served-root");
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
        .args([
            "sim",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.001",
            "--hyops-root",
        ])
        .arg(&root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = sim.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("HyOps runtime root ready:");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let find = |p: &str| {
        banner
            .iter()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p:?} in {banner:#?}"))
            .trim()
            .to_string()
    };
    let (url, auth) = (
        find("Proxmox VE simulator listening on "),
        find("Authorization: "),
    );
    let inputs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inputs.sim-serve.yml");
    let root_s = root.display().to_string();
    let modules = w.modules().display().to_string();
    let inputs_s = inputs.display().to_string();
    let run = w
        .hyops(&[
            "apply",
            "--root",
            &root_s,
            "--module",
            "platform/onprem/platform-vm",
            "--module-root",
            &modules,
            "--inputs",
            &inputs_s,
        ])
        .await;
    let resources: Value = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{url}/cluster/resources?type=vm"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // SAFETY: kill(2) on the simulator process this test spawned.
    unsafe {
        libc::kill(sim.id() as i32, libc::SIGINT);
    }
    let _ = sim.wait();
    run.assert_ok();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("state/modules/platform__onprem__platform-vm/latest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(state["status"], "ok");
    for key in ["app-01", "app-02", "db-01"] {
        let vmid = state["outputs"]["vm_ids"][key].as_u64().unwrap();
        let row = resources["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["vmid"].as_u64() == Some(vmid))
            .unwrap_or_else(|| {
                panic!("VMID {vmid} of {key} is not in the served cluster: {resources}")
            });
        assert_eq!(
            row["name"], key,
            "--root without --env: physical name = key"
        );
    }
}

/// The readiness gate against guests this hyops-pve process cannot reach (the simulator's
/// SSH is in-process): one attempt, direct (no jump host), one-second probes.
const UNREACHABLE_GATE: &str =
    "{connectivity_wait_s: 0, connectivity_timeout_s: 1, ssh_proxy_jump_auto: false";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_only_readiness_gate_that_fails_is_a_warning_and_the_apply_is_ok() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let inputs = w.overlay(
        "pool.yml",
        &pool(DEMO, &format!("{UNREACHABLE_GATE}, required: false}}")),
    );
    let run = w.module("apply", &inputs, &[]).await;
    run.assert_ok();
    let state = w.state(None);
    assert_eq!(state["status"], "ok");
    let ev = std::path::PathBuf::from(state["evidence_dir"].as_str().unwrap());
    assert!(ev.join("post_apply_ssh_readiness.json").exists());
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("result.json")).unwrap()).unwrap();
    assert!(result["normalized_outputs"]["post_apply_ssh_readiness"].is_object());
    let warnings: Vec<&str> = result["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("post-apply SSH readiness failed (warn-only):")),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_readiness_gate_that_fails_is_an_error_and_keeps_the_previous_outputs() {
    let Some(w) = World::start(FAST).await else {
        return;
    };
    let first = w.overlay("pool.yml", &pool_no_gate(DEMO));
    w.module("apply", &first, &[]).await.assert_ok();
    let previous = w.state(None)["outputs"].clone();
    let gated = w.overlay(
        "gated.yml",
        &pool(DEMO, &format!("{UNREACHABLE_GATE}, required: true}}")),
    );
    let run = w.module("apply", &gated, &[]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("error: post-apply SSH readiness failed:"),
        "{}",
        run.stderr
    );
    let state = w.state(None);
    assert_eq!(state["status"], "error");
    let last_error = state["last_error"].as_str().unwrap();
    assert!(
        last_error.starts_with("post-apply SSH readiness failed:")
            && last_error
                .ends_with("(see post_apply_ssh_readiness.json and connectivity_* evidence)"),
        "{last_error}"
    );
    assert_eq!(
        state["outputs"], previous,
        "the new outputs are not published"
    );
    let ev = std::path::PathBuf::from(state["evidence_dir"].as_str().unwrap());
    assert!(ev.join("post_apply_ssh_readiness.json").exists());
}
