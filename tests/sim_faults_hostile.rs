//! The fault file under hostile input: windows that never end, non-finite numbers, and rules
//! whose path or trigger names no Proxmox API call (a typo used to make a chaos run silently
//! fault-free). Found by the hostile test pass on issue 7.

use hyops_pve::sim::faults::{CallInfo, FaultState};
use hyops_pve::sim::FaultPlan;

const TASK_STATUS: &str = "/nodes/{node}/tasks/{upid}/status";
const CLONE: &str = "/nodes/{node}/qemu/{vmid}/clone";

fn call<'a>(method: &'a str, template: &'a str, now_ms: u64) -> CallInfo<'a> {
    CallInfo {
        method,
        template,
        path: template,
        vmid: None,
        now_ms,
    }
}

#[test]
fn a_window_that_never_ends_keeps_firing_instead_of_overflowing() {
    // `duration_s: 1.0e+300` is "never ends". The end used to be computed as start + u64::MAX:
    // a panic inside the simulator's request handler in debug builds, and in release a
    // window that wrapped around and never fired.
    let plan = FaultPlan::from_yaml(&format!(
        "rules:\n  - method: GET\n    path: {TASK_STATUS}\n    window: {{after: \"POST {CLONE}\", start_s: 0, duration_s: 1.0e+300}}\n    action: {{kind: reset}}\n"
    ))
    .unwrap();
    let mut s = FaultState::new(plan, 1);
    s.fire(&call("POST", CLONE, 5_000));
    assert_eq!(s.fire(&call("GET", TASK_STATUS, 6_000)).len(), 1);
    assert_eq!(
        s.fire(&call("GET", TASK_STATUS, u64::MAX / 2)).len(),
        1,
        "still inside a window that never ends"
    );
}

#[test]
fn a_window_that_starts_beyond_the_end_of_time_never_fires_and_never_panics() {
    let plan = FaultPlan::from_yaml(
        "rules:\n  - window: {start_s: 1.0e+300, duration_s: 1.0e+300}\n    action: {kind: reset}\n",
    )
    .unwrap();
    let mut s = FaultState::new(plan, 1);
    // A simulator at time scale 0 reports u64::MAX / 4 as its clock.
    assert!(s.fire(&call("GET", "/version", u64::MAX / 4)).is_empty());
}

#[test]
fn non_finite_window_numbers_are_refused_by_name() {
    for (yaml, needle) in [
        (
            "rules: [{window: {start_s: .nan}, action: {kind: reset}}]",
            "start_s",
        ),
        (
            "rules: [{window: {duration_s: .nan}, action: {kind: reset}}]",
            "duration_s",
        ),
        (
            "rules: [{window: {start_s: .inf}, action: {kind: reset}}]",
            "start_s",
        ),
    ] {
        let e = FaultPlan::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(
            e.contains(needle) && e.contains("faults.rules[1]"),
            "{yaml}: {e}"
        );
    }
}

#[test]
fn a_rule_path_that_names_no_api_call_is_refused() {
    let yaml = "rules:\n  - method: POST\n    path: /nodes/{node}/qemu/{vmid}/clonee\n    action: {kind: lost_reply}\n";
    let e = FaultPlan::from_yaml(yaml).unwrap_err().to_string();
    assert!(
        e.contains("faults.rules[1]") && e.contains("/nodes/{node}/qemu/{vmid}/clonee"),
        "{e}"
    );
}

#[test]
fn a_rule_whose_method_never_meets_its_path_is_refused() {
    // The clone endpoint is POST only: a GET rule on it can never fire.
    let yaml = format!("rules:\n  - method: GET\n    path: {CLONE}\n    action: {{kind: reset}}\n");
    let e = FaultPlan::from_yaml(&yaml).unwrap_err().to_string();
    assert!(e.contains("faults.rules[1]") && e.contains("GET"), "{e}");
}

#[test]
fn a_window_trigger_that_names_no_api_call_is_refused() {
    for after in [
        "GETT /version",
        "POST /nodes/{node}/qemu/{vmid}/clonee",
        "write /nodes/{node}/qemu/{vmid}/clone",
    ] {
        let yaml = format!(
            "rules:\n  - window: {{after: \"{after}\", duration_s: 5}}\n    action: {{kind: reset}}\n"
        );
        let e = FaultPlan::from_yaml(&yaml).expect_err(after).to_string();
        assert!(
            e.contains("faults.rules[1]") && e.contains("window.after"),
            "{after}: {e}"
        );
    }
}

#[test]
fn concrete_paths_globs_and_every_example_fault_file_still_parse() {
    FaultPlan::from_yaml(
        "rules:\n  - path: /nodes/pve1/qemu/100/config\n    action: {kind: reset}\n  - path: /nodes/*/qemu/*/status/*\n    action: {kind: reset}\n  - method: write\n    path: /nodes/{node}/qemu/{vmid}/config\n    action: {kind: lost_reply}\n  - window: {after: \"POST /nodes/{node}/qemu/{vmid}/clone\", duration_s: 30}\n    action: {kind: reset}\n",
    )
    .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("faults") {
            FaultPlan::from_file(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "examples/faults.chaos.yml is checked");
}

#[test]
fn the_readme_fault_file_example_parses_and_names_real_api_calls() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = readme
        .split("## Fault injection")
        .nth(1)
        .expect("README has a Fault injection section");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section shows a fault file");
    let plan = FaultPlan::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(plan.rules.len() >= 3);
}

#[test]
fn a_number_written_as_yaml_1_1_text_is_refused_by_field_name() {
    // PyYAML (YAML 1.1) reads `1e300` as a string; the refusal names the field and the value.
    let e = FaultPlan::from_yaml(
        "rules:\n  - window: {start_s: 0, duration_s: 1e300}\n    action: {kind: reset}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("faults.rules[1].window.duration_s") && e.contains("1e300"),
        "{e}"
    );
}
