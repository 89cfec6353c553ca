//! VM-set collision guards (§1.11): the per-slot guard with `allow_vm_set_replace` and the
//! deletion-only shrink, and the cross-slot overlap guard over every ok state file of the
//! module. Reads state files only; knows nothing about Proxmox API calls or the planner.

use std::collections::BTreeSet;
use std::path::Path;

use crate::yaml::json::Keep;
use crate::yaml::{py_strip, PyValue};

use super::state_refs::{read_json_only, state_status};

use super::contract::py_list;
use super::error::{HyopsError, Result};
use super::paths::{slot_name, ModuleRef, RuntimeRoot, StateInstance};

/// What the guards decided when the run may continue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuardOutcome {
    pub warnings: Vec<String>,
    /// The requested set is a strict subset of the existing one and replacement is allowed:
    /// a missing template becomes a warning (see
    /// [`super::contract::template_missing_in_shrink_warning`]).
    pub deletion_only_shrink: bool,
}

/// The names of an ok state payload (`_extract_vm_names_from_state_payload`): the keys of
/// `outputs.vms`, else the items of `outputs.vm_names`, as `str(x).strip()`, blanks dropped.
pub fn vm_names_from_state(payload: &PyValue) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(payload) = payload.as_dict() else {
        return out;
    };
    if state_status(payload) != "ok" {
        return out;
    }
    let Some(PyValue::Dict(outputs)) = payload.get("outputs") else {
        return out;
    };
    let text = |v: &PyValue| py_strip(&v.py_str()).to_string();
    if let Some(PyValue::Dict(vms)) = outputs.get("vms") {
        out.extend(vms.keys().map(text).filter(|k| !k.is_empty()));
    }
    if out.is_empty() {
        if let Some(PyValue::List(names)) = outputs.get("vm_names") {
            out.extend(names.iter().map(text).filter(|k| !k.is_empty()));
        }
    }
    out
}

/// What [`vm_names_from_state`] reads of a state: `status`, the keys of `outputs.vms` and
/// `outputs.vm_names`. The rest is checked and dropped (a 10 000-VM state is ~100 MB as
/// values, heaptrack).
const NAMES_OF_STATE: Keep = Keep::Members(&[
    ("status", Keep::All),
    (
        "outputs",
        Keep::Members(&[("vms", Keep::Keys), ("vm_names", Keep::All)]),
    ),
]);

fn read_state(path: &Path) -> std::result::Result<PyValue, String> {
    read_json_only(path, NAMES_OF_STATE)
}

/// Existing managed names per slot, ok states only, in upstream order: `latest` first,
/// then `instance:<stem>` sorted by file name.
pub fn existing_names_by_slot(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
) -> Result<Vec<(String, BTreeSet<String>)>> {
    let mut out = Vec::new();
    let dir = root.module_state_dir(module_ref);
    let latest = dir.join("latest.json");
    if latest.exists() {
        let payload = read_state(&latest).map_err(|e| {
            HyopsError::Contract(format!(
                "failed to read existing module state for collision check: {e}"
            ))
        })?;
        let names = vm_names_from_state(&payload);
        if !names.is_empty() {
            out.push(("latest".to_string(), names));
        }
    }
    let inst_dir = dir.join("instances");
    if inst_dir.is_dir() {
        let entries = std::fs::read_dir(&inst_dir).map_err(|e| {
            HyopsError::Contract(format!(
                "failed to enumerate instance states for collision check: {e}"
            ))
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let payload = read_state(&path).map_err(|e| {
                HyopsError::Contract(format!(
                    "failed to read instance state for collision check: {} ({e})",
                    path.display()
                ))
            })?;
            let names = vm_names_from_state(&payload);
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !names.is_empty() {
                out.push((format!("instance:{stem}"), names));
            }
        }
    }
    Ok(out)
}

fn sorted_vec<'a>(it: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut v: Vec<&str> = it.map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// The `existing_only=[...], requested_only=[...]` part of the collision messages.
pub fn vm_set_diff(existing: &BTreeSet<String>, requested: &BTreeSet<String>) -> String {
    format!(
        "existing_only={}, requested_only={}",
        py_list(&sorted_vec(existing.difference(requested))),
        py_list(&sorted_vec(requested.difference(existing)))
    )
}

/// Run the guards for `requested` logical keys in the slot of `instance`.
pub fn check_vm_set_guards(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
    instance: Option<&StateInstance>,
    requested: &[String],
    allow_vm_set_replace: bool,
) -> Result<GuardOutcome> {
    let requested: BTreeSet<String> = requested
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut outcome = GuardOutcome::default();
    if requested.is_empty() {
        return Ok(outcome);
    }
    let current_slot = slot_name(instance);
    let by_slot = existing_names_by_slot(root, module_ref)?;
    if let Some((_, existing)) = by_slot.iter().find(|(slot, _)| *slot == current_slot) {
        if *existing != requested {
            let diff = vm_set_diff(existing, &requested);
            if !allow_vm_set_replace {
                return Err(HyopsError::Contract(format!(
                    "vm set collision detected: requested VM names differ from existing managed VM names for module_ref={module_ref}; {diff}. This run would replace active VMs. Use a separate env/module scope, or explicitly set inputs.allow_vm_set_replace=true when replacement is intentional."
                )));
            }
            outcome.warnings.push(format!(
                "allow_vm_set_replace=true: proceeding despite VM set collision for module_ref={module_ref}; {diff}"
            ));
            outcome.deletion_only_shrink =
                requested.is_subset(existing) && requested.len() < existing.len();
        }
    }
    let conflicts: Vec<String> = by_slot
        .iter()
        .filter(|(slot, _)| **slot != current_slot)
        .filter_map(|(slot, names)| {
            let overlap = sorted_vec(names.intersection(&requested));
            (!overlap.is_empty()).then(|| format!("{slot} overlap={}", py_list(&overlap)))
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(HyopsError::Contract(format!(
            "vm name collision detected across module state slots for module_ref={module_ref}: requested={}; {}. Use one slot consistently (latest or a single state_instance), or destroy the stale slot first.",
            py_list(&sorted_vec(requested.iter())),
            conflicts.join("; ")
        )));
    }
    Ok(outcome)
}
