//! Template VM id resolution from the `core/onprem/template-image` state (§3.7, §1.15
//! step 5), with every upstream message verbatim. Reads one state file; knows nothing about
//! Proxmox API calls or the planner.

use serde_json::{Map, Value};

use super::error::{HyopsError, Result};
use super::paths::{ModuleRef, RuntimeRoot, StateInstance};

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

fn positive_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    }
    .filter(|x| *x > 0)
}

fn first_positive(m: &Map<String, Value>) -> Option<u32> {
    TEMPLATE_ID_FIELDS
        .iter()
        .find_map(|f| m.get(*f).and_then(positive_id))
}

/// `_pick_template_id`: with a key, search [`TEMPLATE_MAP_KEYS`] for the key (no scalar
/// fallback); without a key, the first positive scalar of [`TEMPLATE_ID_FIELDS`].
pub fn pick_template_id(outputs: &Map<String, Value>, template_key: Option<&str>) -> Option<u32> {
    match template_key.map(str::trim).filter(|k| !k.is_empty()) {
        Some(key) => TEMPLATE_MAP_KEYS.iter().find_map(|container| {
            let entry = outputs.get(*container)?.as_object()?.get(key)?;
            match entry {
                Value::Object(m) => first_positive(m),
                other => positive_id(other),
            }
        }),
        None => first_positive(outputs),
    }
}

/// Split `core/onprem/template-image#inst` into the module ref and the optional instance.
fn parse_state_ref(state_ref: &str) -> Result<(ModuleRef, Option<StateInstance>)> {
    let (module, inst) = match state_ref.split_once('#') {
        Some((m, i)) => (m, Some(i)),
        None => (state_ref, None),
    };
    let module_ref = ModuleRef::parse(module)?;
    let inst = StateInstance::parse_opt(inst)?;
    Ok((module_ref, inst))
}

fn contract(msg: String) -> HyopsError {
    HyopsError::Contract(msg)
}

/// Resolve the template VM id named by `template_state_ref` (+ optional `template_key`) in
/// this env's state. Returns the id and the `resolved template_vm_id=...` warning.
pub fn resolve_template(
    root: &RuntimeRoot,
    state_ref: &str,
    template_key: Option<&str>,
) -> Result<(u32, Vec<String>)> {
    let state_ref = state_ref.trim();
    let (module_ref, inst) = parse_state_ref(state_ref).map_err(|e| {
        contract(format!(
            "failed to read template_state_ref {state_ref}: {e}"
        ))
    })?;
    let path = root.module_state_file(&module_ref, inst.as_ref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(contract(format!(
                "template_state_ref not found in env state: {state_ref} (run: hyops deploy --module core/onprem/template-image --inputs <inputs.yml>)"
            )))
        }
        Err(e) => {
            return Err(contract(format!(
                "failed to read template_state_ref {state_ref}: {e}"
            )))
        }
    };
    let payload: Value = serde_json::from_str(&text).map_err(|e| {
        contract(format!(
            "failed to read template_state_ref {state_ref}: {e}"
        ))
    })?;
    let Some(payload) = payload.as_object() else {
        return Err(contract(format!(
            "failed to read template_state_ref {state_ref}: state is not a JSON object"
        )));
    };
    let status = match payload.get("status") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
        Some(other) => other.to_string().to_ascii_lowercase(),
    };
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
    let Some(outputs) = payload.get("outputs").and_then(Value::as_object) else {
        return Err(contract(format!(
            "template_state_ref has no usable outputs: {state_ref}"
        )));
    };
    let key = template_key.map(str::trim).filter(|k| !k.is_empty());
    match pick_template_id(outputs, key) {
        Some(id) => Ok((
            id,
            vec![format!(
                "resolved template_vm_id={id} from template_state_ref={state_ref}"
            )],
        )),
        None => {
            let mut keys: Vec<&str> = outputs.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let key_msg = key.map(|k| format!(" key={k}")).unwrap_or_default();
            Err(contract(format!(
                "unable to resolve template VM ID from template_state_ref={state_ref}{key_msg}; outputs keys: [{}]",
                keys.join(", ")
            )))
        }
    }
}
