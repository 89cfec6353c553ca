//! The integration tests, one test binary (`cargo test` builds and links it once; one binary per
//! file made ~70 binaries of 50-90 MB each and a CI run filled its disk). Each `tests/<name>.rs`
//! is the module `<name>` here, so `cargo test <name>::` runs one file's tests.
//!
//! The support modules below are shared by the files (`use crate::common;`). A file added to
//! `tests/` must be listed here: `every_test_file_is_part_of_the_suite` fails otherwise.

mod cli_support;
mod common;
mod optional;
mod sim_support;
mod upstream_hyops;

mod chaos;
mod cli;
mod cli_env;
mod cli_envelope;
mod cli_exit_codes;
mod cli_hostile;
mod cli_log_lines;
mod cli_operator;
mod cli_process;
mod cli_signals;
mod cli_stderr;
mod clients;
mod conformance;
mod converge_prop;
mod disk_full;
mod driver_ipam;
mod driver_mode;
mod e2e_adoption;
mod e2e_apply;
mod e2e_artifacts;
mod e2e_catch_before_write;
mod e2e_ipam;
mod e2e_requests;
mod e2e_ssh;
mod encoders;
mod engine_fakepve;
mod hyops_atomic;
mod hyops_credentials;
mod hyops_guards;
mod hyops_lock;
mod hyops_plugin;
mod hyops_redaction;
mod hyops_setup;
mod hyops_state;
mod hyops_template;
mod hyops_upstream;
mod hyops_upstream_ipam;
mod hyops_vault;
mod inputs_never_panics;
mod inputs_resolve;
mod inputs_validation;
mod msrv;
mod netbox_client;
mod netbox_suite;
mod netbox_sync_races;
mod never_duplicate;
mod plan_checks;
mod plan_diff;
mod pve_client;
mod pve_task_watch;
mod pve_types;
mod sim_api;
mod sim_cost_model;
mod sim_faults_hostile;
mod sim_fidelity;
mod sim_qemu;
mod sim_spec_conformance;
mod sim_tasks;
mod ssh_gate_sim;
mod ssh_real_sshd;
mod ssh_upstream_parity;
mod stale_clone_lock;
mod upstream_diff;

/// Every `tests/*.rs` file is a module of this suite (with `autotests = false`, cargo would
/// otherwise never build a new file and its tests would silently not run).
#[test]
fn every_test_file_is_part_of_the_suite() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = std::fs::read_to_string(dir.join("suite.rs")).expect("read tests/suite.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read tests/") {
        let path = entry.expect("entry of tests/").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_test_file = path.extension().is_some_and(|e| e == "rs") && stem != "suite";
        if is_test_file && !root.lines().any(|l| l == format!("mod {stem};")) {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "test files not declared in tests/suite.rs (add `mod <name>;`): {missing:?}"
    );
}
