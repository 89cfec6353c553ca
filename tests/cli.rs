//! The command line as an operator meets it: exit codes, the upstream messages, the example
//! overlays, and the README's first command against the embedded simulator.

use assert_cmd::Command;
use predicates::prelude::*;

fn bin() -> Command {
    let mut c = Command::cargo_bin("hyops-pve").unwrap();
    c.env_remove("HYOPS_ENV")
        .env_remove("HYOPS_RUNTIME_ROOT")
        .env_remove("HYOPS_INPUTS_JSON")
        .env("HYOPS_PVE_SIM_TIME_SCALE", "0.0005");
    c
}

fn examples(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A runtime root whose `core/onprem/template-image` state publishes `ubuntu-24.04`.
fn root_with_template() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let state = root
        .path()
        .join("state/modules/core__onprem__template-image/latest.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(
        &state,
        r#"{"status": "ok", "outputs": {"template_vm_ids": {"ubuntu-24.04": 9000}}}"#,
    )
    .unwrap();
    root
}

#[test]
fn every_example_overlay_validates() {
    // IPAM overlays validate against the simulated root (it is its own NetBox and SDN
    // authority); the static ones against a bare root.
    let home = tempfile::tempdir().unwrap();
    for ex in [
        "inputs.min.yml",
        "inputs.typical.yml",
        "inputs.enterprise.yml",
    ] {
        bin()
            .args([
                "validate",
                "--sim",
                "--env",
                "dev",
                "--inputs",
                &examples(ex),
            ])
            .env("HYOPS_PVE_SIM_HOME", home.path())
            .assert()
            .success()
            .stdout(predicate::str::contains("validate ok"));
    }
    let root = root_with_template();
    for ex in ["inputs.single-static.yml", "inputs.sim-demo.yml"] {
        bin()
            .args(["validate", "--root"])
            .arg(root.path())
            .args(["--inputs", &examples(ex)])
            .env("HYOPS_ENV", "dev")
            .assert()
            .success()
            .stdout(predicate::str::contains("validate ok"));
    }
}

#[test]
fn validate_refuses_a_missing_template_state_as_hyops_does() {
    let root = tempfile::tempdir().unwrap();
    bin()
        .args(["validate", "--root"])
        .arg(root.path())
        .args(["--inputs", &examples("inputs.typical.yml")])
        .env("HYOPS_ENV", "dev")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "ERR: template_state_ref not found in env state: core/onprem/template-image (run: hyops deploy --module core/onprem/template-image --inputs <inputs.yml>)",
        ));
}

#[test]
fn validate_json_prints_the_resolved_model() {
    let home = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["validate", "--json", "--sim", "--env", "dev"])
        .args(["--inputs", &examples("inputs.typical.yml")])
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"]["vms"]["app-01"]["physical_name"], "dev-app-01");
    assert_eq!(v["model"]["cpu_cores"], 4);
}

#[test]
fn an_overlay_with_neither_vms_nor_vm_name_fails_with_the_upstream_message() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("o.yml");
    std::fs::write(&overlay, "require_ipam: false\ntemplate_vm_id: 9000\n").unwrap();
    bin()
        .args(["validate", "--root"])
        .arg(dir.path())
        .arg("--inputs")
        .arg(&overlay)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "ERR: input validation failed for platform/onprem/platform-vm: validator failed for module_ref=platform/onprem/platform-vm: either inputs.vms (non-empty map) or inputs.vm_name is required",
        ));
}

#[test]
fn another_module_is_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    bin()
        .args(["validate", "--module", "platform.onprem.netbox", "--root"])
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not supported by hyops-pve"));
}

#[test]
fn env_and_root_are_exclusive() {
    bin()
        .args(["validate", "--env", "dev", "--root", "/tmp/x"])
        .assert()
        .code(64)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn skip_preflight_needs_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    bin()
        .args(["apply", "--skip-preflight", "--root"])
        .arg(dir.path())
        .args(["--inputs", &examples("inputs.sim-demo.yml")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--skip-preflight for a mutating command requires --preflight-bypass-reason",
        ));
}

#[test]
fn rebuild_refuses_a_mismatched_confirm_module() {
    bin()
        .args(["rebuild", "--yes", "--env", "dev", "--confirm-module", "platform/onprem/netbox"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "ERR: --confirm-module mismatch; expected 'platform/onprem/platform-vm' but got 'platform/onprem/netbox'",
        ));
}

#[test]
fn an_ipam_overlay_without_netbox_state_fails_with_the_upstream_readiness_message() {
    let home = tempfile::tempdir().unwrap();
    let root = root_with_template();
    bin()
        .args(["validate", "--root"])
        .arg(root.path())
        .args(["--inputs", &examples("inputs.min.yml")])
        .env("HYOPS_ENV", "dev")
        .env("HOME", home.path())
        .env_remove("HYOPS_NETBOX_AUTHORITY_ROOT")
        .env_remove("HYOPS_NETBOX_AUTHORITY_ENV")
        .env_remove("HYOPS_SDN_AUTHORITY_ROOT")
        .env_remove("HYOPS_SDN_AUTHORITY_ENV")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "ERR: managed bridge(s) require network_sdn state: failed to read core/onprem/network-sdn: {}/.hybridops/envs/shared/state/modules/core__onprem__network-sdn/latest.json. Requested bridges: [vnetmgmt]",
            home.path().display()
        )));
    // With the SDN authority in place, NetBox readiness is next.
    let shared = home.path().join(".hybridops/envs/shared");
    hyops_pve::commands::simroot::write_netbox_root(
        &shared,
        "http://127.0.0.1:9",
        &hyops_pve::secret::Secret::new("x"),
        None,
    )
    .unwrap();
    std::fs::remove_file(shared.join("state/modules/platform__onprem__netbox/latest.json"))
        .unwrap();
    bin()
        .args(["validate", "--root"])
        .arg(root.path())
        .args(["--inputs", &examples("inputs.min.yml")])
        .env("HYOPS_ENV", "dev")
        .env("HOME", home.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "ERR: ipam requires netbox ready: netbox state not found (run: hyops blueprint --env shared --ref onprem/bootstrap-netbox@v1) OR: set HYOPS_NETBOX_AUTHORITY_ENV and apply NetBox there (authority_root={})",
            shared.display()
        )));
}

/// The newest evidence dir of `prefix` runs under a sim home.
fn latest_run(home: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    let dir = home.join("envs/dev/logs/module/platform__onprem__platform-vm");
    let mut runs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    runs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    runs.pop().unwrap()
}

fn json_at(p: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// apply, re-apply (a no-op), plan (no changes), destroy, plan (changes) with one example.
fn apply_reapply_destroy(example: &str, vms: usize) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let overlay = examples(example);
    let run = |cmd: &[&str]| {
        let mut c = bin();
        c.args(cmd)
            .args(["--sim", "--env", "dev", "--inputs", &overlay])
            .env("HYOPS_PVE_SIM_HOME", home.path());
        c
    };
    run(&["apply"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("apply ok: {vms} created")))
        .stderr(predicate::str::contains("run record: "));
    run(&["apply"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{vms} unchanged; 0 API writes"
        )));
    run(&["plan", "--detailed-exitcode"]).assert().code(0);
    run(&["destroy"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "destroy ok: {vms} VM(s) removed"
        )));
    run(&["plan", "--detailed-exitcode"]).assert().code(2);
    let state = home
        .path()
        .join("envs/dev/state/modules/platform__onprem__platform-vm/latest.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(v["status"], "destroyed");
    home
}

#[test]
fn the_readme_first_command_allocates_from_the_embedded_netbox_and_reapplies_as_a_noop() {
    let home = tempfile::tempdir().unwrap();
    let overlay = examples("inputs.typical.yml");
    let apply = || {
        let mut c = bin();
        c.args(["apply", "--sim", "--env", "dev", "--inputs", &overlay])
            .env("HYOPS_PVE_SIM_HOME", home.path());
        c
    };
    apply().assert().success().stdout(
        predicate::str::contains("apply ok: 2 created")
            .and(predicate::str::contains(
                "nic0 vnetmgmt: allocated 10.10.0.2/24 (first free in 10.10.0.2-10.10.0.119; hyops:hybzone:app-01:vnetmgmt:1)",
            ))
            .and(predicate::str::contains("allocated 10.10.0.3/24")),
    );
    let first = latest_run(home.path(), "apply-");
    let alloc = json_at(first.join("ipam_allocations.json"));
    assert_eq!(alloc["status"], "ok");
    assert_eq!(alloc["allocations"][1]["address"], "10.10.0.3/24");
    let sync = json_at(first.join("hook_netbox_sync.json"));
    assert_eq!(sync["rc"], 0, "{sync}");
    assert_eq!(sync["summary"]["vms_created"], 2);
    let st = json_at(
        home.path()
            .join("envs/dev/state/modules/platform__onprem__platform-vm/latest.json"),
    );
    assert_eq!(
        st["outputs"]["vms"]["app-01"]["interfaces_configured"][0]["ipv4"],
        serde_json::json!({"address": "10.10.0.2/24", "gateway": "10.10.0.1"})
    );
    // Second apply: no Proxmox writes and no NetBox writes.
    apply()
        .assert()
        .success()
        .stdout(predicate::str::contains("2 unchanged; 0 API writes").and(
            predicate::str::contains("reuse 10.10.0.2/24 (hyops:hybzone:app-01:vnetmgmt:1)"),
        ));
    let second = latest_run(home.path(), "apply-");
    assert_ne!(first, second);
    assert_eq!(
        json_at(second.join("ipam_allocations.json"))["requests"]["writes"],
        0
    );
    assert_eq!(
        json_at(second.join("hook_netbox_sync.json"))["summary"]["writes"],
        0
    );
}

#[test]
fn the_ipam_example_applies_reapplies_and_destroys_on_the_simulator() {
    apply_reapply_destroy("inputs.typical.yml", 2);
}

#[test]
fn the_static_demo_applies_reapplies_and_destroys_on_the_simulator() {
    apply_reapply_destroy("inputs.sim-demo.yml", 3);
}

#[test]
fn version_and_completions_work() {
    bin()
        .arg("version")
        .assert()
        .success()
        .stdout(predicate::str::contains("hyops-pve"));
    bin()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("hyops-pve"));
}

#[test]
fn validate_warns_about_unknown_keys_even_when_it_refuses() {
    let root = root_with_template();
    let overlay = root.path().join("o.yml");
    std::fs::write(
        &overlay,
        "require_ipam: false\nmemroy_mb: 8192\ncpu_cores: many\nvms: {a: {interfaces: [{bridge: vmbr0}]}}\n",
    )
    .unwrap();
    bin()
        .args(["validate", "--root"])
        .arg(root.path())
        .arg("--inputs")
        .arg(&overlay)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "WARN: inputs.memroy_mb is not a platform-vm input and is ignored (did you mean memory_mb?)",
        ))
        .stderr(predicate::str::contains(
            "ERR: input validation failed for platform/onprem/platform-vm: inputs.cpu_cores must be an integer",
        ));
}

/// A copy of every file under `dir` (relative path → bytes), to show nothing was written.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A runtime root as `hyops init proxmox` leaves it: credentials and the template state.
fn real_looking_root(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("credentials")).unwrap();
    std::fs::write(
        root.join("credentials/proxmox.credentials.tfvars"),
        "proxmox_url = \"https://pve.example:8006/api2/json\"\n",
    )
    .unwrap();
    let tpl = root.join("state/modules/core__onprem__template-image/latest.json");
    std::fs::create_dir_all(tpl.parent().unwrap()).unwrap();
    std::fs::write(&tpl, r#"{"status":"ok","outputs":{"template_vm_id":777}}"#).unwrap();
}

#[test]
fn sim_serve_refuses_a_hyops_root_that_holds_real_credentials_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("prod");
    real_looking_root(&root);
    let before = snapshot(&root);
    bin()
        .args(["sim", "serve", "--listen", "127.0.0.1:0", "--hyops-root"])
        .arg(&root)
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "sim serve --hyops-root refuses runtime root {}: it is not a simulator root (it holds credentials/proxmox.credentials.tfvars, state)",
            root.display()
        )))
        .stderr(predicate::str::contains("Nothing was written"));
    assert_eq!(
        snapshot(&root),
        before,
        "the root is left exactly as it was"
    );
}

#[test]
fn sim_serve_refuses_a_hyops_root_inside_the_real_envs_tree() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join(".hybridops/envs/prod");
    bin()
        .args(["sim", "serve", "--listen", "127.0.0.1:0", "--hyops-root"])
        .arg(&root)
        .env("HOME", home.path())
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "sim serve --hyops-root refuses runtime root",
        ))
        .stderr(predicate::str::contains("where the real HyOps envs live"));
    assert!(!root.exists(), "nothing is created in ~/.hybridops");
}

/// Each mutating command, with the bypass flags given as `extra`.
fn mutating_with(command: &str, extra: &[&str]) -> Command {
    let home = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.arg(command)
        .args([
            "--sim",
            "--env",
            "dev",
            "--inputs",
            &examples("inputs.sim-demo.yml"),
        ])
        .args(extra)
        .env("HYOPS_PVE_SIM_HOME", home.path());
    if command == "rebuild" {
        c.arg("--yes");
    }
    // The directory outlives the command only as long as the test needs it: leak it.
    std::mem::forget(home);
    c
}

#[test]
fn a_bypass_reason_without_skip_preflight_is_refused_by_every_mutating_command() {
    for command in ["apply", "destroy", "rebuild"] {
        mutating_with(
            command,
            &["--preflight-bypass-reason", "maintenance window"],
        )
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--preflight-bypass-reason requires --skip-preflight",
        ));
    }
}

#[test]
fn skip_preflight_without_a_reason_is_refused_by_rebuild_too() {
    mutating_with("rebuild", &["--skip-preflight"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--skip-preflight for a mutating command requires --preflight-bypass-reason",
        ));
}

#[test]
fn a_bypass_reason_that_is_not_one_printable_line_is_refused_by_every_mutating_command() {
    for command in ["apply", "destroy", "rebuild"] {
        for reason in ["line1\nline2", "red \u{1b}[31m", "c1 \u{9b}"] {
            mutating_with(
                command,
                &["--skip-preflight", "--preflight-bypass-reason", reason],
            )
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "--preflight-bypass-reason must be a single printable line",
            ));
        }
    }
}

#[test]
fn a_bypass_reason_over_500_characters_is_refused() {
    let long = "é".repeat(501);
    mutating_with(
        "rebuild",
        &["--skip-preflight", "--preflight-bypass-reason", &long],
    )
    .assert()
    .code(1)
    .stderr(predicate::str::contains(
        "--preflight-bypass-reason must not exceed 500 characters",
    ));
    // 500 characters (1000 bytes) is within the limit: counted in characters, as upstream.
    let at_limit = "é".repeat(500);
    mutating_with(
        "destroy",
        &["--skip-preflight", "--preflight-bypass-reason", &at_limit],
    )
    .assert()
    .success();
}

#[test]
fn a_saved_plan_of_another_env_is_refused_naming_both_envs() {
    let home = tempfile::tempdir().unwrap();
    let plan = home.path().join("p1.json");
    let overlay = examples("inputs.sim-demo.yml");
    bin()
        .args(["plan", "--sim", "--env", "p", "--inputs", &overlay, "--out"])
        .arg(&plan)
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .success();
    bin()
        .args([
            "apply", "--sim", "--env", "p2", "--inputs", &overlay, "--plan",
        ])
        .arg(&plan)
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "was made for env p, but this run is for env p2: a plan applies only where it was made",
        ))
        .stderr(predicate::str::contains("changes differ").not());
    let cluster =
        std::fs::read_to_string(home.path().join("envs/p2/sim/cluster-state.json")).unwrap();
    let created = cluster.contains("p2-app-01");
    assert!(!created, "no VM was created in env p2");
}

/// This user's home in the passwd database (what `std::env::home_dir` and hyops'
/// `Path.home()` fall back to when HOME is unset).
fn passwd_home() -> std::path::PathBuf {
    // SAFETY: getpwuid returns a pointer into static storage or null; the strings are copied
    // out at once, and no other thread of this test calls getpw*.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null(), "no passwd entry for this user");
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        std::path::PathBuf::from(dir.to_str().expect("a UTF-8 home directory"))
    }
}

#[test]
fn with_home_unset_a_hyops_root_in_the_passwd_homes_envs_tree_is_still_refused() {
    let real = passwd_home().join(".hybridops");
    let existed = real.exists();
    let root = real.join(format!("envs/hyops-pve-test-{}", std::process::id()));
    let out = bin()
        .args(["sim", "serve", "--listen", "127.0.0.1:0", "--hyops-root"])
        .arg(&root)
        .env_remove("HOME")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    // Whatever happened, leave the operator's home as it was.
    let created = root.exists();
    let _ = std::fs::remove_dir_all(&root);
    if !existed {
        let _ = std::fs::remove_dir_all(&real);
    }
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("where the real HyOps envs live"),
        "{stderr}"
    );
    assert!(!created, "nothing is created in ~/.hybridops");
}

/// Run `hyops-pve` with `stdout` as its standard output; its exit code and stderr.
fn run_with_stdout(args: &[&str], stdout: std::process::Stdio) -> (Option<i32>, String) {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
        .args(args)
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .env("HYOPS_PVE_SIM_TIME_SCALE", "0.0005")
        .env_remove("HYOPS_ENV")
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_plan_whose_stdout_fills_the_disk_fails_instead_of_exiting_0() {
    // /dev/full: every write fails with ENOSPC, as a redirect onto a full filesystem does.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full (Linux)");
    let overlay = examples("inputs.sim-demo.yml");
    for extra in [&["--json"][..], &[][..]] {
        let mut args = vec!["plan", "--sim", "--env", "dev", "--inputs", &overlay];
        args.extend_from_slice(extra);
        let (code, stderr) = run_with_stdout(&args, full.try_clone().unwrap().into());
        assert_eq!(code, Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(
                "ERR: cannot write stdout: No space left on device (os error 28); what was printed is incomplete"
            ),
            "{extra:?}: {stderr}"
        );
    }
}

#[test]
fn a_reader_that_goes_away_is_not_a_failure() {
    // `hyops-pve plan | head -1`: the reader closed its end; the rest is dropped, exit 0.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let overlay = examples("inputs.sim-demo.yml");
    let (code, stderr) = run_with_stdout(
        &[
            "plan", "--sim", "--env", "dev", "--inputs", &overlay, "--json",
        ],
        writer.into(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("cannot write stdout"), "{stderr}");
}
