//! VM-set guards (§1.11) and the three upstream `ProxmoxVmContractDeletionOnlyTests` cases (§8).

use std::path::Path;

use hyops_pve::hyops::*;
use serde_json::{json, Map, Value};

fn mref() -> ModuleRef {
    ModuleRef::parse(MODULE_REF).unwrap()
}

fn state_with(names: &[&str], status: &str) -> Value {
    let vms: Map<String, Value> = names
        .iter()
        .map(|n| ((*n).to_string(), json!({})))
        .collect();
    json!({"status": status, "outputs": {"vms": vms}})
}

fn put(root: &Path, rel: &str, v: &Value) {
    write_json_atomic(
        &root
            .join("state/modules/platform__onprem__platform-vm")
            .join(rel),
        v,
    )
    .unwrap();
}

fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The upstream fixture: an ok state in instance `platform_vms` with the existing names,
/// template 107 probed absent. Returns (warnings, error) like the upstream `_run_contract`.
fn run_contract(existing: &[&str], requested: &[&str], allow: bool) -> (Vec<String>, String) {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "instances/platform_vms.json",
        &state_with(existing, "ok"),
    );
    let inst = StateInstance::parse("platform_vms").unwrap();
    match check_vm_set_guards(&r, &mref(), Some(&inst), &keys(requested), allow) {
        Err(e) => (vec![], e.to_string()),
        Ok(outcome) => {
            let mut warnings = outcome.warnings;
            // The probe reports template 107 absent: what the planner does with the outcome.
            if outcome.deletion_only_shrink {
                warnings.push(template_missing_in_shrink_warning(107));
                (warnings, String::new())
            } else {
                (
                    warnings,
                    template_absent_error(&template_source_hint(107, None)),
                )
            }
        }
    }
}

#[test]
fn upstream_missing_template_is_allowed_for_confirmed_strict_subset() {
    let (warnings, error) = run_contract(&["netbox-01", "pgcore-01"], &["netbox-01"], true);
    assert_eq!(error, "");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("deletion-only VM-set shrink")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w == "allow_vm_set_replace=true: proceeding despite VM set collision for module_ref=platform/onprem/platform-vm; existing_only=['pgcore-01'], requested_only=[]"), "{warnings:?}");
}

#[test]
fn upstream_missing_template_still_blocks_mixed_replacement() {
    let (_, error) = run_contract(
        &["netbox-01", "pgcore-01"],
        &["netbox-01", "replacement-01"],
        true,
    );
    assert!(
        error.contains("no VM/template with that ID exists"),
        "{error}"
    );
}

#[test]
fn upstream_vm_set_shrink_still_requires_explicit_confirmation() {
    let (_, error) = run_contract(&["netbox-01", "pgcore-01"], &["netbox-01"], false);
    assert!(error.contains("allow_vm_set_replace=true"), "{error}");
    assert_eq!(
        error,
        "vm set collision detected: requested VM names differ from existing managed VM names for module_ref=platform/onprem/platform-vm; existing_only=['pgcore-01'], requested_only=[]. This run would replace active VMs. Use a separate env/module scope, or explicitly set inputs.allow_vm_set_replace=true when replacement is intentional."
    );
}

#[test]
fn equal_sets_and_first_deploys_pass_silently() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    assert_eq!(
        check_vm_set_guards(&r, &mref(), None, &keys(&["a"]), false).unwrap(),
        GuardOutcome::default()
    );
    put(d.path(), "latest.json", &state_with(&["a", "b"], "ok"));
    assert_eq!(
        check_vm_set_guards(&r, &mref(), None, &keys(&["b", "a"]), false).unwrap(),
        GuardOutcome::default()
    );
}

#[test]
fn growing_the_set_is_a_collision_without_allow() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(d.path(), "latest.json", &state_with(&["a"], "ok"));
    let e = check_vm_set_guards(&r, &mref(), None, &keys(&["a", "b"]), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("existing_only=[], requested_only=['b']"), "{e}");
    let ok = check_vm_set_guards(&r, &mref(), None, &keys(&["a", "b"]), true).unwrap();
    assert!(!ok.deletion_only_shrink);
}

#[test]
fn states_that_are_not_ok_do_not_count() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(d.path(), "latest.json", &state_with(&["a"], "destroyed"));
    put(d.path(), "instances/x.json", &state_with(&["b"], "error"));
    assert!(check_vm_set_guards(&r, &mref(), None, &keys(&["b"]), false).is_ok());
}

#[test]
fn cross_slot_overlap_is_an_error_even_with_allow() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "latest.json",
        &state_with(&["app-01", "app-02"], "ok"),
    );
    put(
        d.path(),
        "instances/pool.json",
        &state_with(&["app-02", "db-01"], "ok"),
    );
    let inst = StateInstance::parse("other").unwrap();
    let e = check_vm_set_guards(
        &r,
        &mref(),
        Some(&inst),
        &keys(&["app-02", "db-01", "new"]),
        true,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "vm name collision detected across module state slots for module_ref=platform/onprem/platform-vm: requested=['app-02', 'db-01', 'new']; latest overlap=['app-02']; instance:pool overlap=['app-02', 'db-01']. Use one slot consistently (latest or a single state_instance), or destroy the stale slot first."
    );
}

#[test]
fn names_fall_back_to_vm_names_when_vms_is_absent() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": {"vm_names": ["x"]}}),
    );
    let inst = StateInstance::parse("i").unwrap();
    assert!(check_vm_set_guards(&r, &mref(), Some(&inst), &keys(&["x"]), false).is_err());
}

#[test]
fn shrink_warning_text_is_verbatim() {
    assert_eq!(
        template_missing_in_shrink_warning(107),
        "template_vm_id=107 is unavailable; allowing confirmed deletion-only VM-set shrink because allow_vm_set_replace=true"
    );
}
