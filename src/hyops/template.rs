//! Template VM id resolution from the `core/onprem/template-image` state (§3.7, §1.15
//! step 5), with every upstream message verbatim. Reads one state file; knows nothing about
//! Proxmox API calls or the planner.

use num_bigint::BigInt;
use num_traits::ToPrimitive;

use crate::yaml::{py_strip, PyDict, PyValue};

use super::error::{HyopsError, Result};
use super::paths::RuntimeRoot;
use super::state_refs::{read_module_state, state_status, ReadStateError};

/// The maps searched for `container[template_key]`, in order.
pub const TEMPLATE_MAP_KEYS: &[&str] = &[
    "template_vm_ids",
    "template_ids",
    "vm_ids",
    "templates",
    "images",
    "artifacts",
    "vms",
];
/// The fields read from a dict entry (or from the outputs without a key), in order.
pub const TEMPLATE_ID_FIELDS: &[&str] = &["template_vm_id", "template_id", "vm_id", "id"];

/// Python's `int(token)` for a stripped token: optional sign, ASCII digits, single
/// underscores between digits.
fn py_int_text(token: &str) -> Option<BigInt> {
    let body = token.strip_prefix(['+', '-']).unwrap_or(token);
    let ok = !body.is_empty()
        && !body.starts_with('_')
        && !body.ends_with('_')
        && !body.contains("__")
        && body.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    if !ok {
        return None;
    }
    token.replace('_', "").parse().ok()
}

/// `as_positive_int` of `hyops.runtime.coerce`: a positive int, or a string holding one.
fn as_positive_int(v: Option<&PyValue>) -> Option<BigInt> {
    let n = match v? {
        PyValue::Int(i) => i.clone(),
        PyValue::Str(s) => {
            let t = py_strip(s);
            if t.is_empty() {
                return None;
            }
            py_int_text(t)?
        }
        _ => return None,
    };
    (n > BigInt::from(0)).then_some(n)
}

/// `_pick_template_id`: with a key, search [`TEMPLATE_MAP_KEYS`] for the key (a dict entry's
/// [`TEMPLATE_ID_FIELDS`] first, then the entry itself; no scalar fallback); without a key,
/// the first positive of [`TEMPLATE_ID_FIELDS`] in the outputs.
pub fn pick_template_id(outputs: &PyDict, template_key: Option<&str>) -> Option<BigInt> {
    match template_key.filter(|k| !k.is_empty()) {
        Some(key) => TEMPLATE_MAP_KEYS.iter().find_map(|container| {
            let Some(PyValue::Dict(c)) = outputs.get(container) else {
                return None;
            };
            let entry = c.get(key)?;
            if let PyValue::Dict(m) = entry {
                if let Some(id) = TEMPLATE_ID_FIELDS
                    .iter()
                    .find_map(|f| as_positive_int(m.get(f)))
                {
                    return Some(id);
                }
            }
            as_positive_int(Some(entry))
        }),
        None => TEMPLATE_ID_FIELDS
            .iter()
            .find_map(|f| as_positive_int(outputs.get(f))),
    }
}

fn contract(msg: String) -> HyopsError {
    HyopsError::Contract(msg)
}

/// Resolve the template VM id named by `template_state_ref` (+ optional `template_key`) in
/// this env's state, as the driver contract does (§1.15 step 5; every message verbatim).
/// Returns the id and the `resolved template_vm_id=...` warning. An id past 32 bits is
/// refused with a range message (hyops-pve carries VMIDs as `u32`).
pub fn resolve_template(
    root: &RuntimeRoot,
    state_ref: &str,
    template_key: Option<&str>,
) -> Result<(u32, Vec<String>)> {
    let state_ref = py_strip(state_ref);
    let payload = match read_module_state(&root.state_dir(), state_ref) {
        Ok(p) => p,
        Err(ReadStateError::NotFound(_)) => {
            return Err(contract(format!(
                "template_state_ref not found in env state: {state_ref} (run: hyops deploy --module core/onprem/template-image --inputs <inputs.yml>)"
            )))
        }
        Err(ReadStateError::Other(e)) => {
            return Err(contract(format!(
                "failed to read template_state_ref {state_ref}: {e}"
            )))
        }
    };
    let status = state_status(&payload);
    if status != "ok" {
        let shown = if status.is_empty() {
            "unknown"
        } else {
            &status
        };
        return Err(contract(format!(
            "template_state_ref exists but is not ready: {state_ref} status={shown}"
        )));
    }
    let Some(PyValue::Dict(outputs)) = payload.get("outputs") else {
        return Err(contract(format!(
            "template_state_ref has no usable outputs: {state_ref}"
        )));
    };
    let key = template_key.map(py_strip).filter(|k| !k.is_empty());
    match pick_template_id(outputs, key) {
        Some(id) => match id.to_u32() {
            Some(id) => Ok((
                id,
                vec![format!(
                    "resolved template_vm_id={id} from template_state_ref={state_ref}"
                )],
            )),
            None => Err(contract(format!(
                "template_vm_id={id} resolved from template_state_ref={state_ref} is out of range: hyops-pve carries VMIDs between 1 and 4294967295"
            ))),
        },
        None => {
            let mut keys: Vec<String> = outputs.keys().map(PyValue::py_str).collect();
            keys.sort();
            let key_msg = key.map(|k| format!(" key={k}")).unwrap_or_default();
            Err(contract(format!(
                "unable to resolve template VM ID from template_state_ref={state_ref}{key_msg}; outputs keys: [{}]",
                keys.join(", ")
            )))
        }
    }
}
