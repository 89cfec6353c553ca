//! The state reads `hyops` does while resolving inputs, with its exact messages: module
//! state references (`core/onprem/template-image#inst`) normalised and located as
//! `hyops/runtime/module_state.py` does, state files read as `json.loads(read_text())`
//! (Python's error texts), the `target_state_ref` and `network_state_ref` resolvers that run
//! before validation for every module, and `ssh_keys_from_init` after it. Implements
//! [`crate::inputs::StateContracts`]. Reads files only; knows nothing about Proxmox or the
//! planner.

use std::path::{Path, PathBuf};

use crate::inputs::overlay::{decode_utf8, os_error_text};
use crate::inputs::StateContracts;
use crate::yaml::{json, py_repr_str, py_strip, PyDict, PyValue};

use super::paths::RuntimeRoot;

/// Python's `str(exc)` for a failure reading a JSON state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadStateError {
    /// `FileNotFoundError(path)`: its text is the path alone.
    NotFound(String),
    /// Any other exception, as Python prints it.
    Other(String),
}

impl std::fmt::Display for ReadStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadStateError::NotFound(m) | ReadStateError::Other(m) => f.write_str(m),
        }
    }
}

/// `hyops.runtime.state.read_json(path)`: `json.loads(path.read_text(encoding="utf-8"))`.
pub fn read_json(path: &Path) -> Result<PyValue, String> {
    let bytes = std::fs::read(path).map_err(|e| os_error_text(&e, path))?;
    let text = decode_utf8(&bytes)?;
    json::loads(&text).map_err(|e| e.to_string())
}

/// [`read_json`] building only what `keep` selects (the same errors; see
/// [`json::loads_only`]).
pub fn read_json_only(path: &Path, keep: json::Keep) -> Result<PyValue, String> {
    let bytes = std::fs::read(path).map_err(|e| os_error_text(&e, path))?;
    let text = decode_utf8(&bytes)?;
    json::loads_only(&text, keep).map_err(|e| e.to_string())
}

/// `normalize_module_ref`: dots become slashes, repeated and outer slashes go, and the result
/// must match `^[a-z0-9](?:[a-z0-9._/-]*[a-z0-9])?$`; anything else is `""`.
pub fn normalize_module_ref(value: &str) -> String {
    let v = py_strip(value);
    if v.is_empty() {
        return String::new();
    }
    let v = v.replace('.', "/");
    let parts: Vec<&str> = v.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return String::new();
    }
    let v = parts.join("/");
    let b = v.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = ok_char(&b[0])
        && ok_char(&b[b.len() - 1])
        && b.iter()
            .all(|c| ok_char(c) || matches!(c, b'.' | b'_' | b'/' | b'-'));
    if ok {
        v
    } else {
        String::new()
    }
}

/// `normalize_state_instance`: stripped, lower-cased, `^[a-z0-9][a-z0-9_.-]{0,63}$`.
fn normalize_state_instance(value: &str) -> Result<Option<String>, String> {
    let raw = py_strip(value).to_lowercase();
    if raw.is_empty() {
        return Ok(None);
    }
    let b = raw.as_bytes();
    let ok = b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(Some(raw))
    } else {
        Err("state_instance must match ^[a-z0-9][a-z0-9_.-]{0,63}$".into())
    }
}

/// `split_module_state_ref`: `(module_ref, instance)`; errors are Python's `ValueError` texts.
pub fn split_module_state_ref(module_ref: &str) -> Result<(String, Option<String>), String> {
    let raw = py_strip(module_ref);
    if raw.is_empty() {
        return Err("module_ref is required".into());
    }
    let (base, inst) = match raw.split_once('#') {
        Some((b, s)) => (py_strip(b), normalize_state_instance(s)?),
        None => (raw, None),
    };
    let r = normalize_module_ref(base);
    if r.is_empty() {
        return Err(format!("invalid module_ref: {}", py_repr_str(module_ref)));
    }
    Ok((r, inst))
}

/// `normalize_module_state_ref`: `ref` or `ref#instance`.
pub fn normalize_module_state_ref(module_ref: &str) -> Result<String, String> {
    let (r, inst) = split_module_state_ref(module_ref)?;
    Ok(match inst {
        Some(i) => format!("{r}#{i}"),
        None => r,
    })
}

/// State refs `hyops` also looks up under another name.
fn state_ref_aliases(r: &str) -> &'static [&'static str] {
    match r {
        "platform/postgresql-ha" => &["platform/onprem/postgresql-ha"],
        "platform/onprem/postgresql-ha" => &["platform/postgresql-ha"],
        "platform/postgresql-ha-backup" => &["platform/onprem/postgresql-ha-backup"],
        "platform/onprem/postgresql-ha-backup" => &["platform/postgresql-ha-backup"],
        _ => &[],
    }
}

/// `read_module_state(state_dir, ref)`: the first existing candidate file (the ref, then its
/// aliases), read with [`read_json`]; it must hold a JSON object.
pub fn read_module_state(state_dir: &Path, module_ref: &str) -> Result<PyDict, ReadStateError> {
    let (r, inst) = split_module_state_ref(module_ref).map_err(ReadStateError::Other)?;
    let mut refs = vec![r.clone()];
    refs.extend(state_ref_aliases(&r).iter().map(|s| s.to_string()));
    let candidates: Vec<PathBuf> = refs
        .iter()
        .map(|cand| {
            let dir = state_dir.join("modules").join(cand.replace('/', "__"));
            match &inst {
                Some(i) => dir.join("instances").join(format!("{i}.json")),
                None => dir.join("latest.json"),
            }
        })
        .collect();
    let path = candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or(&candidates[0]);
    if !path.exists() {
        return Err(ReadStateError::NotFound(path.display().to_string()));
    }
    match read_json(path).map_err(ReadStateError::Other)? {
        PyValue::Dict(d) => Ok(d),
        _ => Err(ReadStateError::Other(format!(
            "invalid module state file: {}",
            path.display()
        ))),
    }
}

/// `str(state.get("status") or "").strip().lower()`.
pub fn state_status(state: &PyDict) -> String {
    PyValue::str_or_empty(state.get("status")).to_lowercase()
}

/// `as_bool(value, default=False)` of `hyops.runtime.coerce`.
pub fn as_bool(v: Option<&PyValue>) -> bool {
    match v {
        None | Some(PyValue::None) => false,
        Some(PyValue::Bool(b)) => *b,
        Some(PyValue::Int(_) | PyValue::Float(_)) => v.is_some_and(PyValue::truthy),
        Some(PyValue::Str(s)) => matches!(
            py_strip(s).to_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
        Some(_) => false,
    }
}

/// `ipv4_from_token`: an IPv4 address (or the address of an interface), not loopback.
fn ipv4_from_token(raw: &PyValue) -> Option<String> {
    let token = PyValue::str_or_empty(Some(raw));
    if token.is_empty() {
        return None;
    }
    let addr = if token.contains('/') {
        match crate::inputs::pyval::ip_interface(&token).ok()? {
            crate::inputs::pyval::IfaceParsed::V4(net) => net.addr(),
            crate::inputs::pyval::IfaceParsed::V6 => return None,
        }
    } else {
        match crate::inputs::pyval::ip_address(&token).ok()? {
            crate::inputs::pyval::IpParsed::V4(ip) => ip,
            crate::inputs::pyval::IpParsed::V6 => return None,
        }
    };
    if addr.is_loopback() {
        return None;
    }
    Some(addr.to_string())
}

/// `pick_ipv4`.
fn pick_ipv4(v: Option<&PyValue>) -> Option<String> {
    match v? {
        PyValue::None => None,
        PyValue::Dict(d) => d.get("address").and_then(|a| pick_ipv4(Some(a))),
        PyValue::List(items) => items.iter().find_map(|i| pick_ipv4(Some(i))),
        other => ipv4_from_token(other),
    }
}

/// `resolve_vm_ipv4(outputs, vm_key=...)`.
fn resolve_vm_ipv4(outputs: &PyDict, vm_key: &str) -> Option<String> {
    if let Some(PyValue::Dict(vms)) = outputs.get("vms") {
        if let Some(PyValue::Dict(vm)) = vms.get(vm_key) {
            for key in ["ipv4_address", "ipv4_configured_primary", "ipv4_addresses"] {
                if let Some(ip) = pick_ipv4(vm.get(key)) {
                    return Some(ip);
                }
            }
        }
    }
    for top in [
        "ipv4_configured_primary",
        "ipv4_addresses",
        "ipv4_addresses_all",
    ] {
        if let Some(PyValue::Dict(bucket)) = outputs.get(top) {
            if let Some(ip) = bucket.get(vm_key).and_then(|v| pick_ipv4(Some(v))) {
                return Some(ip);
            }
        }
    }
    None
}

/// The state-contract reads of one runtime root.
#[derive(Clone, Debug)]
pub struct RootStateContracts {
    state_dir: PathBuf,
    meta_dir: PathBuf,
}

impl RootStateContracts {
    pub fn new(root: &RuntimeRoot) -> Self {
        Self {
            state_dir: root.state_dir(),
            meta_dir: root.meta_dir(),
        }
    }

    /// The state of a `<field>=<ref>` resolver, read and required `ok`, with the resolvers'
    /// shared messages (`... state is unavailable: ...`, `... is not ready (status=...)`).
    fn ready_state(&self, field: &str, r: &str, instead: &str) -> Result<PyDict, String> {
        let state = read_module_state(&self.state_dir, r).map_err(|e| {
            format!(
                "{field}={r} state is unavailable: {e}. Re-apply upstream module '{r}' or provide {instead} explicitly."
            )
        })?;
        let status = state_status(&state);
        if status != "ok" {
            let shown = if status.is_empty() {
                "missing"
            } else {
                &status
            };
            return Err(format!(
                "{field}={r} is not ready (status={shown}). Re-apply upstream module '{r}' or provide {instead} explicitly."
            ));
        }
        Ok(state)
    }

    /// `resolve_target_host_from_state` (errors only: `target_host` is not a platform-vm
    /// input, so the resolved host is not kept).
    fn target_state_ref(&self, inputs: &PyDict) -> Result<(), String> {
        if !PyValue::str_or_empty(inputs.get("target_host")).is_empty() {
            return Ok(());
        }
        let raw = PyValue::str_or_empty(inputs.get("target_state_ref"));
        if raw.is_empty() {
            return Ok(());
        }
        let r = normalize_module_state_ref(&raw)
            .map_err(|_| format!("inputs.target_state_ref is invalid: {}", py_repr_str(&raw)))?;
        let vm_key = PyValue::str_or_empty(inputs.get("target_vm_key"));
        if vm_key.is_empty() {
            return Err("inputs.target_vm_key is required when inputs.target_state_ref is set and inputs.target_host is empty".into());
        }
        let state = self.ready_state("target_state_ref", &r, "inputs.target_host")?;
        let empty = PyDict::new();
        let outputs = match state.get("outputs") {
            Some(PyValue::Dict(o)) => o,
            _ => &empty,
        };
        if resolve_vm_ipv4(outputs, &vm_key).is_some() {
            return Ok(());
        }
        let mut candidates: Vec<String> = match outputs.get("vms") {
            Some(PyValue::Dict(vms)) => vms
                .keys()
                .map(PyValue::py_str)
                .filter(|k| !k.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        candidates.sort();
        let tail = if candidates.is_empty() {
            "state does not publish outputs.vms".to_string()
        } else {
            format!("available vm keys: {}", candidates.join(", "))
        };
        Err(format!(
            "unable to resolve inputs.target_host from target_state_ref={r} for target_vm_key={}. {tail}",
            py_repr_str(&vm_key)
        ))
    }

    /// `resolve_network_contract_from_state` (errors only; the GCP outputs it copies are not
    /// platform-vm inputs).
    fn network_state_ref(&self, inputs: &PyDict) -> Result<(), String> {
        let raw = PyValue::str_or_empty(inputs.get("network_state_ref"));
        if raw.is_empty() {
            return Ok(());
        }
        let r = normalize_module_state_ref(&raw)
            .map_err(|_| format!("inputs.network_state_ref is invalid: {}", py_repr_str(&raw)))?;
        let state = self.ready_state("network_state_ref", &r, "inputs.private_network")?;
        let empty = PyDict::new();
        let outputs = match state.get("outputs") {
            Some(PyValue::Dict(o)) => o,
            _ => &empty,
        };
        let network = ["network_self_link", "private_network", "network_name"]
            .iter()
            .map(|k| outputs.get(k))
            .find(|v| v.is_some_and(PyValue::truthy))
            .flatten();
        if PyValue::str_or_empty(network).is_empty() {
            return Err(format!(
                "network_state_ref={r} does not publish required output network_self_link or network_name."
            ));
        }
        Ok(())
    }
}

impl StateContracts for RootStateContracts {
    fn check_state_refs(&self, inputs: &PyDict) -> Result<(), String> {
        // Upstream order: target host first; the other resolvers (for keys platform-vm never
        // reads) run in between; the network contract near the end.
        self.target_state_ref(inputs)?;
        self.network_state_ref(inputs)
    }

    fn ssh_keys_from_init(&self, inputs: &mut PyDict) -> Result<(), String> {
        if let Some(PyValue::List(items)) = inputs.get("ssh_keys") {
            if items
                .iter()
                .any(|i| !PyValue::str_or_empty(Some(i)).is_empty())
            {
                return Ok(());
            }
        }
        if !as_bool(inputs.get("ssh_keys_from_init")) {
            return Ok(());
        }
        let target = PyValue::str_or_empty(inputs.get("ssh_keys_init_target")).to_lowercase();
        let target = if target.is_empty() {
            "gcp".to_string()
        } else {
            target
        };
        let shown = py_repr_str(&target);
        let marker_path = self.meta_dir.join(format!("{target}.ready.json"));
        let marker = read_json(&marker_path).map_err(|exc| {
            format!(
                "inputs.ssh_keys_from_init=true but readiness for init target={shown} is unavailable: {exc}. Run 'hyops init {target} --env <env> --force' or provide inputs.ssh_keys explicitly."
            )
        })?;
        let PyValue::Dict(marker) = marker else {
            return Err(format!(
                "'{}' object has no attribute 'get'",
                marker.type_name()
            ));
        };
        let status = state_status(&marker);
        if status != "ready" {
            let st = if status.is_empty() {
                "missing"
            } else {
                &status
            };
            return Err(format!(
                "inputs.ssh_keys_from_init=true but init target={shown} is not ready (status={st}). Run 'hyops init {target} --env <env> --force' or provide inputs.ssh_keys explicitly."
            ));
        }
        let empty = PyDict::new();
        let context = match marker.get("context") {
            Some(PyValue::Dict(c)) => c,
            _ => &empty,
        };
        let mut keys: Vec<String> = Vec::new();
        if let Some(PyValue::List(items)) = context.get("ssh_public_keys") {
            keys.extend(
                items
                    .iter()
                    .map(|i| PyValue::str_or_empty(Some(i)))
                    .filter(|k| !k.is_empty()),
            );
        }
        let single = match context.get("ssh_public_key") {
            Some(v) if v.truthy() => Some(v),
            _ => marker.get("ssh_public_key"),
        };
        let single = PyValue::str_or_empty(single);
        if !single.is_empty() {
            keys.push(single);
        }
        let mut deduped: Vec<String> = Vec::new();
        for k in keys {
            if !deduped.contains(&k) {
                deduped.push(k);
            }
        }
        if deduped.is_empty() {
            return Err(format!(
                "inputs.ssh_keys_from_init=true but init target={shown} does not publish ssh_public_key in readiness metadata. Re-run 'hyops init {target} --env <env> --force' with a local public key present or --ssh-public-key, or provide inputs.ssh_keys explicitly."
            ));
        }
        inputs.set(
            "ssh_keys",
            PyValue::List(deduped.into_iter().map(PyValue::Str).collect()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_refs_normalise_as_upstream() {
        assert_eq!(
            normalize_module_ref(" core.onprem.template-image "),
            "core/onprem/template-image"
        );
        assert_eq!(normalize_module_ref("//core//x/"), "core/x");
        assert_eq!(normalize_module_ref("Core/X"), "");
        assert_eq!(
            split_module_state_ref("core/onprem/template-image#Img_1"),
            Ok(("core/onprem/template-image".into(), Some("img_1".into())))
        );
        assert_eq!(
            split_module_state_ref("Core/X"),
            Err("invalid module_ref: 'Core/X'".into())
        );
        assert_eq!(
            split_module_state_ref("core/x#-bad"),
            Err("state_instance must match ^[a-z0-9][a-z0-9_.-]{0,63}$".into())
        );
    }

    #[test]
    fn missing_state_is_not_found_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_module_state(dir.path(), "core/onprem/network-sdn").unwrap_err();
        assert_eq!(
            e,
            ReadStateError::NotFound(
                dir.path()
                    .join("modules/core__onprem__network-sdn/latest.json")
                    .display()
                    .to_string()
            )
        );
    }

    #[test]
    fn broken_state_reads_as_python_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("modules/core__x/latest.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "{\"status\": ").unwrap();
        assert_eq!(
            read_module_state(dir.path(), "core/x")
                .unwrap_err()
                .to_string(),
            "Expecting value: line 1 column 12 (char 11)"
        );
        std::fs::write(&p, "[]").unwrap();
        assert_eq!(
            read_module_state(dir.path(), "core/x")
                .unwrap_err()
                .to_string(),
            format!("invalid module state file: {}", p.display())
        );
    }
}
