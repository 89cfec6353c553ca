//! Template resolution from the template-image state (§3.7, §1.15 step 5): every message.

use std::path::Path;

use hyops_pve::hyops::*;
use serde_json::{json, Value};

const REF: &str = "core/onprem/template-image";

fn put(root: &Path, rel: &str, v: &Value) {
    write_json_atomic(
        &root
            .join("state/modules/core__onprem__template-image")
            .join(rel),
        v,
    )
    .unwrap();
}

fn err(r: &RuntimeRoot, state_ref: &str, key: Option<&str>) -> String {
    resolve_template(r, state_ref, key).unwrap_err().to_string()
}

#[test]
fn missing_state_names_the_ref_and_the_fix() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        err(&RuntimeRoot::at(d.path()), REF, None),
        "template_state_ref not found in env state: core/onprem/template-image (run: hyops deploy --module core/onprem/template-image --inputs <inputs.yml>)"
    );
}

#[test]
fn unreadable_state_is_failed_to_read() {
    let d = tempfile::tempdir().unwrap();
    let p = d
        .path()
        .join("state/modules/core__onprem__template-image/latest.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, "{not json").unwrap();
    let e = err(&RuntimeRoot::at(d.path()), REF, None);
    assert!(
        e.starts_with("failed to read template_state_ref core/onprem/template-image: "),
        "{e}"
    );
}

#[test]
fn not_ok_status_is_not_ready_with_status_or_unknown() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "latest.json",
        &json!({"status": "Running", "outputs": {}}),
    );
    assert_eq!(
        err(&r, REF, None),
        "template_state_ref exists but is not ready: core/onprem/template-image status=running"
    );
    put(d.path(), "latest.json", &json!({"outputs": {}}));
    assert_eq!(
        err(&r, REF, None),
        "template_state_ref exists but is not ready: core/onprem/template-image status=unknown"
    );
}

#[test]
fn non_dict_outputs_are_no_usable_outputs() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": [1]}),
    );
    assert_eq!(
        err(&RuntimeRoot::at(d.path()), REF, None),
        "template_state_ref has no usable outputs: core/onprem/template-image"
    );
}

#[test]
fn unresolvable_lists_sorted_output_keys_with_and_without_key() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": {"zeta": 1, "template_vm_id": 9000, "alpha": {}}}),
    );
    assert_eq!(
        err(&r, REF, Some("ubuntu-24.04")),
        "unable to resolve template VM ID from template_state_ref=core/onprem/template-image key=ubuntu-24.04; outputs keys: [alpha, template_vm_id, zeta]",
        "no scalar fallback when a key is given"
    );
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": {"template_vm_id": 0, "b": 1}}),
    );
    assert_eq!(
        err(&r, REF, None),
        "unable to resolve template VM ID from template_state_ref=core/onprem/template-image; outputs keys: [b, template_vm_id]"
    );
}

#[test]
fn keyed_lookup_follows_map_order_and_dict_field_order() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": {
            "vms": {"u": 7},
            "templates": {"u": {"id": 5, "vm_id": 0, "template_id": 6}},
            "template_vm_id": 1
        }}),
    );
    let (id, w) = resolve_template(&r, REF, Some("u")).unwrap();
    assert_eq!(
        id, 6,
        "templates before vms; template_id before vm_id/id; zero skipped"
    );
    assert_eq!(
        w,
        vec![
            "resolved template_vm_id=6 from template_state_ref=core/onprem/template-image"
                .to_string()
        ]
    );
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": {"template_vm_ids": {"u": 9001}, "templates": {"u": {"vm_id": 5}}}}),
    );
    assert_eq!(resolve_template(&r, REF, Some("u")).unwrap().0, 9001);
}

#[test]
fn scalars_are_used_without_a_key() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "latest.json",
        &json!({"status": "ok", "outputs": {"vm_id": 77, "id": 78}}),
    );
    assert_eq!(
        resolve_template(&RuntimeRoot::at(d.path()), REF, None)
            .unwrap()
            .0,
        77
    );
}

#[test]
fn instance_suffix_reads_the_instance_file() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    put(
        d.path(),
        "instances/template_image_ubuntu_22_04.json",
        &json!({"status": "ok", "outputs": {"template_vm_id": 9022}}),
    );
    let sref = "core/onprem/template-image#template_image_ubuntu_22_04";
    let (id, w) = resolve_template(&r, sref, None).unwrap();
    assert_eq!(id, 9022);
    assert_eq!(
        w[0],
        format!("resolved template_vm_id=9022 from template_state_ref={sref}")
    );
    assert!(
        err(&r, "core/onprem/template-image#other", None).starts_with(
            "template_state_ref not found in env state: core/onprem/template-image#other"
        )
    );
}

#[test]
fn fixed_messages_are_verbatim() {
    assert_eq!(BUILD_IMAGE_UNSUPPORTED, "build_image=true is not supported yet for this module; build an image first and reference it via template_state_ref (try: template_state_ref=core/onprem/template-image, template_key=ubuntu-24.04)");
    assert_eq!(
        TEMPLATE_KEY_IGNORED,
        "template_key ignored because template_state_ref is not set"
    );
    assert_eq!(
        template_absent_error(&template_source_hint(107, None)),
        "configured template_vm_id=107, but no VM/template with that ID exists on the Proxmox host. Rebuild or reseed the template first (for example: core/onprem/template-image or core/onprem/vyos-template-seed)."
    );
    assert_eq!(
        template_source_hint(9000, Some(REF)),
        "template_vm_id=9000 resolved from template_state_ref=core/onprem/template-image"
    );
    assert_eq!(template_not_a_template_error(5), "template_vm_id=5 exists on the Proxmox host but is not marked as a template. Fix the source VM or rebuild the template before continuing.");
}
