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
    let root = root_with_template();
    for ex in [
        "inputs.min.yml",
        "inputs.typical.yml",
        "inputs.enterprise.yml",
        "inputs.single-static.yml",
        "inputs.sim-demo.yml",
    ] {
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
    let root = root_with_template();
    let out = bin()
        .args(["validate", "--json", "--root"])
        .arg(root.path())
        .args(["--inputs", &examples("inputs.typical.yml")])
        .env("HYOPS_ENV", "dev")
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
fn an_ipam_overlay_fails_clearly_instead_of_falling_back_to_static() {
    let home = tempfile::tempdir().unwrap();
    bin()
        .args([
            "plan",
            "--sim",
            "--env",
            "dev",
            "--inputs",
            &examples("inputs.typical.yml"),
        ])
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("NetBox IPAM")
                .and(predicate::str::contains("never falls back to static")),
        );
}

#[test]
fn the_readme_first_command_applies_then_reapplies_as_a_noop_then_destroys() {
    let home = tempfile::tempdir().unwrap();
    let demo = examples("inputs.sim-demo.yml");
    let apply = || {
        let mut c = bin();
        c.args(["apply", "--sim", "--env", "dev", "--inputs", &demo])
            .env("HYOPS_PVE_SIM_HOME", home.path());
        c
    };
    apply()
        .assert()
        .success()
        .stdout(predicate::str::contains("apply ok: 3 created"))
        .stderr(predicate::str::contains("run record: "));
    apply()
        .assert()
        .success()
        .stdout(predicate::str::contains("3 unchanged; 0 API writes"));
    bin()
        .args([
            "plan",
            "--sim",
            "--env",
            "dev",
            "--detailed-exitcode",
            "--inputs",
            &demo,
        ])
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .code(0);
    bin()
        .args(["destroy", "--sim", "--env", "dev", "--inputs", &demo])
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("destroy ok: 3 VM(s) removed"));
    bin()
        .args([
            "plan",
            "--sim",
            "--env",
            "dev",
            "--detailed-exitcode",
            "--inputs",
            &demo,
        ])
        .env("HYOPS_PVE_SIM_HOME", home.path())
        .assert()
        .code(2);
    let state = home
        .path()
        .join("envs/dev/state/modules/platform__onprem__platform-vm/latest.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(v["status"], "destroyed");
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
