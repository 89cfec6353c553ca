//! Fixed values of the HyOps contract for this engine: the execution block, the publish
//! list, and the verbatim driver-time messages the planner raises (§1.11, §1.15). Plain
//! constants and string builders; knows nothing about Proxmox API calls or the planner.

/// The module this engine serves, and the §1.15 `build_image` error: one definition, in the
/// inputs layer that raises it.
pub use crate::inputs::{BUILD_IMAGE_UNSUPPORTED, MODULE_REF};
/// `execution.driver` written into state and results.
pub const DRIVER_REF: &str = "iac/proxmox-native";
/// `execution.profile`.
pub const PROFILE: &str = "hyops-pve@v1";
/// `execution.pack_id`.
pub const PACK_ID: &str = "hyops-pve/platform-vm@v1";
/// `requirements.credentials`.
pub const REQUIRED_CREDENTIALS: &[&str] = &["proxmox"];
/// The keys of `outputs.publish` for platform-vm (§3.5).
pub const PUBLISH_KEYS: &[&str] = &[
    "vms",
    "vm_ids",
    "vm_keys",
    "vm_names",
    "node_name",
    "ipv4_addresses",
    "ipv4_addresses_all",
    "mac_addresses_primary",
    "mac_addresses_all",
    "tags",
];
/// The template-image module read by template resolution (§3.7).
pub const TEMPLATE_IMAGE_MODULE_REF: &str = "core/onprem/template-image";

/// §1.15 step 3, verbatim.
pub const STATE_DIR_REQUIRED: &str = "runtime.state_dir is required";
/// §1.15 step 5 warning, verbatim.
pub const TEMPLATE_KEY_IGNORED: &str = "template_key ignored because template_state_ref is not set";
/// §1.15 step 6 warning, verbatim.
pub const TEMPLATE_PROBE_SKIPPED_NO_CREDENTIALS: &str =
    "template vm probe skipped: proxmox API or SSH runtime credentials are not available";

/// §1.15 step 6 probe-error warning: `template vm probe skipped: {err}`.
pub fn template_probe_skipped(err: &str) -> String {
    format!("template vm probe skipped: {err}")
}

/// The source hint of the template-absent message: resolved from a state ref, or configured.
pub fn template_source_hint(template_vm_id: u32, template_state_ref: Option<&str>) -> String {
    match template_state_ref.filter(|s| !s.is_empty()) {
        Some(r) => format!("template_vm_id={template_vm_id} resolved from template_state_ref={r}"),
        None => format!("configured template_vm_id={template_vm_id}"),
    }
}

/// §1.15 step 6, VM absent, verbatim.
pub fn template_absent_error(source_hint: &str) -> String {
    format!(
        "{source_hint}, but no VM/template with that ID exists on the Proxmox host. Rebuild or reseed the template first (for example: core/onprem/template-image or core/onprem/vyos-template-seed)."
    )
}

/// §1.15 step 6, VM present but not a template, verbatim.
pub fn template_not_a_template_error(template_vm_id: u32) -> String {
    format!(
        "template_vm_id={template_vm_id} exists on the Proxmox host but is not marked as a template. Fix the source VM or rebuild the template before continuing."
    )
}

/// §1.11: the warning that replaces the template-absent error in a confirmed deletion-only
/// shrink.
pub fn template_missing_in_shrink_warning(template_vm_id: u32) -> String {
    format!(
        "template_vm_id={template_vm_id} is unavailable; allowing confirmed deletion-only VM-set shrink because allow_vm_set_replace=true"
    )
}

/// Format a list the way the upstream Python code prints it: `['a', 'b']`.
pub fn py_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|s| crate::yaml::py_repr_str(s.as_ref()))
        .collect();
    format!("[{}]", inner.join(", "))
}
