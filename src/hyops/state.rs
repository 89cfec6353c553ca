//! Module state files (§3.4), published-output normalisation (§3.5), rerun inputs (§3.6),
//! the `module_state.json` evidence record and reading VM ids out of a legacy Terraform
//! state for adoption. Works on plain `serde_json::Value`s; knows nothing about Proxmox API
//! calls or the planner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::contract::{DRIVER_REF, PACK_ID, PROFILE, PUBLISH_KEYS, REQUIRED_CREDENTIALS};
use super::error::{HyopsError, Result};
use super::fsio::{
    check_json, read_json_opt, sort_keys, write_atomic_reserved, write_bytes_atomic,
    write_json_atomic, Reserve, Sorted, SortedMap, SortedRaw, SortedWith,
};
use super::paths::{ModuleRef, RuntimeRoot, StateInstance};
use super::runid::utc_now;

/// The `execution` block of a state file written by this engine.
pub fn execution_block(backend: Option<&Value>) -> Value {
    json!({
        "driver": DRIVER_REF,
        "profile": PROFILE,
        "pack_id": PACK_ID,
        "backend": backend.cloned().unwrap_or_else(|| json!({"mode": "local"})),
    })
}

fn requirements_block() -> Value {
    json!({ "credentials": REQUIRED_CREDENTIALS })
}

/// Build `input_contract` from resolved inputs (§3.4): only the keys that are present.
pub fn build_input_contract(resolved_inputs: &Value) -> Value {
    let mut out = Map::new();
    let Some(inputs) = resolved_inputs.as_object() else {
        return Value::Object(out);
    };
    if let Some(addr) = inputs.get("addressing").and_then(Value::as_object) {
        if let Some(mode) = addr.get("mode").and_then(Value::as_str) {
            let mode = mode.trim().to_ascii_lowercase();
            if !mode.is_empty() {
                out.insert("addressing_mode".into(), Value::String(mode));
            }
        }
        if let Some(provider) = addr
            .get("ipam")
            .and_then(Value::as_object)
            .and_then(|i| i.get("provider"))
            .and_then(Value::as_str)
        {
            let p = provider.trim().to_ascii_lowercase();
            if !p.is_empty() {
                out.insert("ipam_provider".into(), Value::String(p));
            }
        }
    }
    if let Some(v) = inputs.get("require_ipam") {
        if let Some(b) = as_bool(v) {
            out.insert("require_ipam".into(), Value::Bool(b));
        }
    }
    for key in [
        "inventory_state_ref",
        "project_state_ref",
        "network_state_ref",
        "router_state_ref",
    ] {
        if let Some(s) = inputs.get(key).and_then(Value::as_str) {
            if !s.trim().is_empty() {
                out.insert(key.into(), Value::String(s.trim().to_string()));
            }
        }
    }
    if let Some(b) = inputs.get("inventory_requires_ipam").and_then(as_bool) {
        out.insert("inventory_requires_ipam".into(), Value::Bool(b));
    }
    Value::Object(out)
}

/// Lenient bool: JSON bools, `"true"/"false"/"yes"/"no"/"1"/"0"/"on"/"off"`, 0/1.
pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" | "y" => Some(true),
            "false" | "no" | "0" | "off" | "n" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `driver_outputs(result)`: the first object among `normalized_outputs.published_outputs`,
/// `.outputs`, `.terragrunt_outputs`.
pub fn driver_outputs(normalized_outputs: &Value) -> Option<&Map<String, Value>> {
    ["published_outputs", "outputs", "terragrunt_outputs"]
        .iter()
        .find_map(|k| normalized_outputs.get(*k).and_then(Value::as_object))
}

/// Select the publish list and normalise (§3.5): `vm_keys` from `outputs.vms` key order,
/// `vm_names` overwritten with each entry's `vm_name` (falling back to the logical key).
pub fn publish_outputs(raw: &Map<String, Value>) -> Map<String, Value> {
    let mut selected = Map::new();
    for key in PUBLISH_KEYS.iter().chain(["vms"].iter()) {
        if let Some(v) = raw.get(*key) {
            selected.insert((*key).to_string(), v.clone());
        }
    }
    publish_outputs_owned(selected)
}

/// [`publish_outputs`] taking the raw outputs by value: the published values are moved, not
/// copied (the outputs of a 10 000-VM pool are tens of MB as JSON values).
pub fn publish_outputs_owned(mut raw: Map<String, Value>) -> Map<String, Value> {
    let (keys, names) = match raw.get("vms").and_then(Value::as_object) {
        Some(vms) => {
            let keys: Vec<Value> = vms.keys().map(|k| Value::String(k.clone())).collect();
            let names: Vec<Value> = vms
                .iter()
                .map(|(k, payload)| {
                    let physical = payload
                        .get("vm_name")
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .unwrap_or(k);
                    Value::String(physical.to_string())
                })
                .collect();
            (Some(keys), Some(names))
        }
        None => (None, None),
    };
    let mut out = Map::new();
    for key in PUBLISH_KEYS {
        if let Some(v) = raw.remove(*key) {
            out.insert((*key).to_string(), v);
        }
    }
    if let (Some(keys), Some(names)) = (keys, names) {
        out.insert("vm_keys".into(), Value::Array(keys));
        out.insert("vm_names".into(), Value::Array(names));
    }
    out
}

/// See [`ModuleState::read_prior_view`].
#[derive(serde::Deserialize)]
struct PriorView {
    #[serde(default)]
    outputs: Option<ObjectOnly<PriorOutputsView>>,
}

#[derive(serde::Deserialize)]
struct PriorOutputsView {
    #[serde(default)]
    vm_ids: Option<Map<String, Value>>,
    #[serde(default)]
    vms: Option<std::collections::BTreeMap<String, ObjectOnly<PriorVmView>>>,
}

#[derive(serde::Deserialize)]
struct PriorVmView {
    #[serde(default)]
    vm_name: Option<Value>,
    #[serde(default)]
    ipv4_addresses: Option<Value>,
}

/// A view struct read from a JSON object only. A derived struct also accepts an array (its
/// fields by position), so without this `[]` or `"outputs": [{..}]` would parse as a view
/// although [`ModuleState::read`] sees no such members (or refuses the file): an array falls
/// back to the whole read.
struct ObjectOnly<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Objects<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Objects<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Objects(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

impl PriorView {
    fn into_map(self) -> Map<String, Value> {
        let mut state = Map::new();
        let Some(ObjectOnly(o)) = self.outputs else {
            return state;
        };
        let mut outputs = Map::new();
        if let Some(ids) = o.vm_ids {
            outputs.insert("vm_ids".into(), Value::Object(ids));
        }
        if let Some(vms) = o.vms {
            let vms: Map<String, Value> = vms
                .into_iter()
                .map(|(k, ObjectOnly(v))| {
                    let mut m = Map::new();
                    if let Some(n) = v.vm_name {
                        m.insert("vm_name".into(), n);
                    }
                    if let Some(a) = v.ipv4_addresses {
                        m.insert("ipv4_addresses".into(), a);
                    }
                    (k, Value::Object(m))
                })
                .collect();
            outputs.insert("vms".into(), Value::Object(vms));
        }
        state.insert("outputs".into(), Value::Object(outputs));
        state
    }
}

/// What `persist_running` needs to know about the run.
#[derive(Debug, Clone)]
pub struct RunningRecord {
    pub run_id: String,
    pub command: String,
    pub evidence_dir: PathBuf,
    pub input_contract: Value,
    pub rerun_inputs_file: Option<PathBuf>,
    pub resolved_inputs_file: Option<PathBuf>,
}

/// What `persist_ok` needs to know about the successful run.
#[derive(Debug, Clone)]
pub struct OkRecord {
    pub run_id: String,
    pub evidence_dir: PathBuf,
    /// Already published outputs (see [`publish_outputs`]).
    pub outputs: Map<String, Value>,
    pub input_contract: Value,
    pub rerun_inputs_file: PathBuf,
    pub resolved_inputs_file: PathBuf,
    /// `backend_binding` of the driver result; `{mode: local}` when absent.
    pub backend_binding: Option<Value>,
}

/// The room [`ModuleState::persist_running`] sets aside for the run's final record beyond the
/// size of the previous state (bytes): the `error` record adds `last_error` (a one-line message
/// of at most a few KiB) to the previous state; an `ok` record of a small pool fits too.
pub const STATE_RESERVE_MARGIN: u64 = 8 << 10;

/// The state file of one module slot: `latest.json` or `instances/<inst>.json`.
#[derive(Debug, Clone)]
pub struct ModuleState {
    module_ref: ModuleRef,
    instance: Option<StateInstance>,
    path: PathBuf,
    /// The room set aside by [`Self::persist_running`] for the run's final record (shared by
    /// clones of this value; the next state write uses it up).
    reserve: std::sync::Arc<std::sync::Mutex<Option<Reserve>>>,
}

fn path_str(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

impl ModuleState {
    pub fn new(
        root: &RuntimeRoot,
        module_ref: &ModuleRef,
        instance: Option<&StateInstance>,
    ) -> Self {
        Self {
            module_ref: module_ref.clone(),
            instance: instance.cloned(),
            path: root.module_state_file(module_ref, instance),
            reserve: Default::default(),
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Read the state; `Ok(None)` when the file does not exist.
    pub fn read(&self) -> Result<Option<Map<String, Value>>> {
        match read_json_opt(&self.path)? {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(HyopsError::NotAnObject {
                path: self.path.clone(),
            }),
        }
    }

    /// The state reduced to what a plan needs of the previous run: `outputs.vm_ids` and, per
    /// `outputs.vms` entry, its `vm_name` and `ipv4_addresses`; every other member is skipped
    /// while parsing (a 10 000-VM state is ~80 MB as JSON values, this a few MB). A state of
    /// any other shape is read whole, as [`Self::read`] does (same result, same errors).
    pub fn read_prior_view(&self) -> Result<Option<Map<String, Value>>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HyopsError::io(&self.path, e)),
        };
        match serde_json::from_str::<ObjectOnly<PriorView>>(&text) {
            Ok(ObjectOnly(view)) => Ok(Some(view.into_map())),
            Err(_) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                Ok(_) => Err(HyopsError::NotAnObject {
                    path: self.path.clone(),
                }),
                Err(e) => Err(HyopsError::Json {
                    path: self.path.clone(),
                    detail: e.to_string(),
                }),
            },
        }
    }

    fn write(&self, state: Map<String, Value>) -> Result<Value> {
        let v = Value::Object(state);
        self.write_ser(&Sorted(&v))?;
        Ok(sort_keys(&v))
    }

    /// Write the state file atomically from a value whose serialisation sorts its keys, into
    /// the room [`Self::persist_running`] set aside when there is one (used up either way).
    fn write_ser<T: serde::Serialize>(&self, value: &T) -> Result<()> {
        let reserve = self
            .reserve
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        write_atomic_reserved(&self.path, reserve, |w| {
            serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)?;
            w.write_all(b"\n")
        })
    }

    /// True while room set aside by [`Self::persist_running`] waits for the final record.
    pub fn has_reserve(&self) -> bool {
        self.reserve
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn base_identity(&self, m: &mut Map<String, Value>) {
        m.insert(
            "module_ref".into(),
            Value::String(self.module_ref.to_string()),
        );
        if let Some(i) = &self.instance {
            m.insert(
                "state_instance".into(),
                Value::String(i.as_str().to_string()),
            );
        }
    }

    /// Before a mutation: the previous state merged with `status: running`, `active_command`,
    /// `updated_at`, `run_id`, `evidence_dir`, `input_contract`, rerun/resolved files. The
    /// previous outputs stay. The caller must abort the run when this fails.
    ///
    /// First, room for the run's final record is set aside beside the state file (the size of
    /// the previous state plus [`STATE_RESERVE_MARGIN`]; see [`Reserve`]) and kept until the
    /// next state write, which writes into it: a disk that fills up during the run (its
    /// evidence, another process) cannot keep the run's `error` or `ok` record from being
    /// written. Without that room the state is not touched and this fails.
    pub fn persist_running(&self, rec: &RunningRecord) -> Result<()> {
        let text = self.read_text()?;
        let prior = self.read_members(text.as_deref())?;
        let room = text.as_ref().map_or(0, |t| t.len() as u64) + STATE_RESERVE_MARGIN;
        let reserve = Reserve::new(&self.path, room)?;
        let mut m = Map::new();
        self.base_identity(&mut m);
        m.insert("status".into(), json!("running"));
        m.insert("active_command".into(), json!(rec.command));
        m.insert("updated_at".into(), json!(utc_now()));
        m.insert("run_id".into(), json!(rec.run_id));
        m.insert("evidence_dir".into(), path_str(&rec.evidence_dir));
        m.insert("input_contract".into(), rec.input_contract.clone());
        let count = match prior.get("outputs") {
            Some(outputs) => object_len(outputs),
            None => {
                m.insert("outputs".into(), json!({}));
                0
            }
        };
        m.insert("output_count".into(), json!(count));
        if let Some(p) = &rec.rerun_inputs_file {
            m.insert("rerun_inputs_file".into(), path_str(p));
        }
        if let Some(p) = &rec.resolved_inputs_file {
            m.insert("resolved_inputs_file".into(), path_str(p));
        }
        // the running record itself is written beside the reserve, not into it
        self.write_merged(&prior, &m, &[])?;
        *self.reserve.lock().unwrap_or_else(|p| p.into_inner()) = Some(reserve);
        Ok(())
    }

    /// The state file's text; `None` when it does not exist.
    pub fn read_text(&self) -> Result<Option<String>> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HyopsError::io(&self.path, e)),
        }
    }

    /// The members of the state text (from [`Self::read_text`]), each as its raw JSON text
    /// (borrowed): what [`Self::read`] gives without building the values; empty without a
    /// file. Errors as [`Self::read`]: text that is not JSON, or JSON that is not an object.
    pub fn read_members<'t>(
        &self,
        text: Option<&'t str>,
    ) -> Result<BTreeMap<String, &'t RawValue>> {
        let Some(text) = text else {
            return Ok(BTreeMap::new());
        };
        let json_error = |e: serde_json::Error| HyopsError::Json {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        // The raw members below only check the syntax; the whole text is checked as a value
        // first, so a state `read` refuses (a number beyond f64, nesting too deep) is refused
        // here the same way, before anything is written.
        check_json(text).map_err(json_error)?;
        // valid JSON (checked above) is an object exactly when it starts with `{`
        if !text.trim_start().starts_with('{') {
            return Err(HyopsError::NotAnObject {
                path: self.path.clone(),
            });
        }
        serde_json::from_str(text).map_err(json_error)
    }

    /// Write the previous members `prior` with `set` put over them and `remove` left out,
    /// keys sorted at every level, without building the previous members as values.
    fn write_merged(
        &self,
        prior: &BTreeMap<String, &RawValue>,
        set: &Map<String, Value>,
        remove: &[&str],
    ) -> Result<()> {
        self.write_ser(&MergedState { prior, set, remove })
    }

    /// A successful apply/deploy/import: a fresh object with every §3.4 key.
    pub fn persist_ok(&self, rec: &OkRecord) -> Result<Value> {
        let mut m = self.persist_ok_streamed(rec)?;
        m.insert("outputs".into(), Value::Object(rec.outputs.clone()));
        Ok(sort_keys(&Value::Object(m)))
    }

    /// [`Self::persist_ok`] without copying the outputs: they are written from `rec` and the
    /// state is returned without them (sorted keys; the caller still holds `rec.outputs`).
    pub fn persist_ok_streamed(&self, rec: &OkRecord) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        self.base_identity(&mut m);
        m.insert("run_id".into(), json!(rec.run_id));
        m.insert("status".into(), json!("ok"));
        m.insert("updated_at".into(), json!(utc_now()));
        m.insert(
            "execution".into(),
            execution_block(rec.backend_binding.as_ref()),
        );
        m.insert("requirements".into(), requirements_block());
        m.insert("dependencies".into(), json!([]));
        m.insert("output_count".into(), json!(rec.outputs.len()));
        m.insert("evidence_dir".into(), path_str(&rec.evidence_dir));
        m.insert("input_contract".into(), rec.input_contract.clone());
        m.insert("rerun_inputs_file".into(), path_str(&rec.rerun_inputs_file));
        m.insert(
            "resolved_inputs_file".into(),
            path_str(&rec.resolved_inputs_file),
        );
        self.write_ser(&SortedWith {
            head: &m,
            key: "outputs",
            value: SortedMap(&rec.outputs),
        })?;
        match sort_keys(&Value::Object(m)) {
            Value::Object(sorted) => Ok(sorted),
            _ => Ok(Map::new()),
        }
    }

    /// A failed mutation: previous merged with `status: error`, `last_error`,
    /// `failed_command`; `active_command` dropped; previous outputs kept.
    pub fn persist_error(&self, command: &str, error: &str) -> Result<()> {
        let text = self.read_text()?;
        let prior = self.read_members(text.as_deref())?;
        let mut m = Map::new();
        self.base_identity(&mut m);
        m.insert("status".into(), json!("error"));
        m.insert("last_error".into(), json!(error));
        m.insert("failed_command".into(), json!(command));
        m.insert("updated_at".into(), json!(utc_now()));
        self.write_merged(&prior, &m, &["active_command"])
    }

    /// A successful destroy: `status: destroyed`, empty outputs, no rerun/resolved files.
    pub fn persist_destroyed(
        &self,
        run_id: &str,
        evidence_dir: &Path,
        input_contract: &Value,
    ) -> Result<Value> {
        let mut m = Map::new();
        self.base_identity(&mut m);
        m.insert("run_id".into(), json!(run_id));
        m.insert("status".into(), json!("destroyed"));
        m.insert("updated_at".into(), json!(utc_now()));
        m.insert("execution".into(), execution_block(None));
        m.insert("requirements".into(), requirements_block());
        m.insert("dependencies".into(), json!([]));
        m.insert("outputs".into(), json!({}));
        m.insert("output_count".into(), json!(0));
        m.insert("evidence_dir".into(), path_str(evidence_dir));
        m.insert("input_contract".into(), input_contract.clone());
        self.write(m)
    }
}

/// Write the rerun inputs YAML (0600, atomic) for a slot and return its path. The value
/// must already be sanitised (§3.6); this function only serialises it with sorted keys.
pub fn write_rerun_inputs(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
    instance: Option<&StateInstance>,
    sanitized_inputs: &Value,
) -> Result<PathBuf> {
    let path = root.rerun_inputs_file(module_ref, instance);
    let yaml = crate::yaml::to_yaml(&sort_keys(sanitized_inputs));
    write_bytes_atomic(&path, yaml.as_bytes())?;
    Ok(path)
}

/// Write `<evidence>/module_state.json` after a state write: `{path, published_outputs,
/// publish_policy, rerun_inputs_file, resolved_inputs_file}` plus `{status, detail}` for the
/// running/error persists.
pub fn write_module_state_record(
    evidence_dir: &Path,
    state_path: &Path,
    state: &Value,
    status_detail: Option<(&str, &str)>,
) -> Result<PathBuf> {
    let empty = Map::new();
    write_module_state_record_of(
        evidence_dir,
        state_path,
        state.as_object().unwrap_or(&empty),
        state.get("outputs").and_then(Value::as_object),
        status_detail,
    )
}

/// [`write_module_state_record`] for a state held apart from its outputs (see
/// [`ModuleState::persist_ok_streamed`]).
pub fn write_module_state_record_of(
    evidence_dir: &Path,
    state_path: &Path,
    state: &Map<String, Value>,
    outputs: Option<&Map<String, Value>>,
    status_detail: Option<(&str, &str)>,
) -> Result<PathBuf> {
    let mut published: Vec<String> = outputs
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    published.sort();
    let mut rec = json!({
        "path": state_path.to_string_lossy(),
        "published_outputs": published,
        "publish_policy": { "publish": PUBLISH_KEYS },
        "rerun_inputs_file": state.get("rerun_inputs_file").cloned().unwrap_or(Value::Null),
        "resolved_inputs_file": state.get("resolved_inputs_file").cloned().unwrap_or(Value::Null),
    });
    if let (Some((status, detail)), Some(obj)) = (status_detail, rec.as_object_mut()) {
        obj.insert("status".into(), json!(status));
        obj.insert("detail".into(), json!(detail));
    }
    let path = evidence_dir.join("module_state.json");
    write_json_atomic(&path, &rec)?;
    Ok(path)
}

/// One `proxmox_virtual_environment_vm` instance found in a legacy Terraform state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TfstateVm {
    /// The for_each key (resource `index_key`, else the last `["..."]` of the module
    /// address); `None` for a single unkeyed VM.
    pub key: Option<String>,
    pub vm_id: u32,
    /// The Proxmox name attribute, when recorded.
    pub name: Option<String>,
    /// `module.x["k"].proxmox_virtual_environment_vm.vm`-style address.
    pub address: String,
}

fn positive_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    }
    .filter(|x| *x > 0)
}

fn last_bracket_key(module: &str) -> Option<String> {
    let start = module.rfind("[\"")?;
    let rest = &module[start + 2..];
    let end = rest.find("\"]")?;
    Some(rest[..end].to_string())
}

/// Read `state/terraform/<module_id>[__<inst>].tfstate` and list the VM ids of its
/// `proxmox_virtual_environment_vm` resources (attribute `vm_id`, else `id`). A missing file
/// gives an empty list.
pub fn read_tfstate_vms(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
    instance: Option<&StateInstance>,
) -> Result<Vec<TfstateVm>> {
    let path = root.tfstate_file(module_ref, instance);
    let Some(doc) = read_json_opt(&path)? else {
        return Ok(Vec::new());
    };
    Ok(tfstate_vms(&doc))
}

/// [`read_tfstate_vms`] on an already parsed document.
pub fn tfstate_vms(doc: &Value) -> Vec<TfstateVm> {
    let mut out = Vec::new();
    let resources = doc.get("resources").and_then(Value::as_array);
    for res in resources.into_iter().flatten() {
        if res.get("type").and_then(Value::as_str) != Some("proxmox_virtual_environment_vm")
            || res
                .get("mode")
                .and_then(Value::as_str)
                .is_some_and(|m| m != "managed")
        {
            continue;
        }
        let module = res.get("module").and_then(Value::as_str).unwrap_or("");
        let rname = res.get("name").and_then(Value::as_str).unwrap_or("");
        for inst in res
            .get("instances")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let attrs = inst.get("attributes");
            let Some(vm_id) = attrs
                .and_then(|a| a.get("vm_id").and_then(positive_u32))
                .or_else(|| attrs.and_then(|a| a.get("id").and_then(positive_u32)))
            else {
                continue;
            };
            let index_key = inst.get("index_key").and_then(|k| match k {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let key = index_key.clone().or_else(|| last_bracket_key(module));
            let mut address = if module.is_empty() {
                format!("proxmox_virtual_environment_vm.{rname}")
            } else {
                format!("{module}.proxmox_virtual_environment_vm.{rname}")
            };
            if let Some(k) = &index_key {
                address.push_str(&format!("[\"{k}\"]"));
            }
            out.push(TfstateVm {
                key,
                vm_id,
                name: attrs
                    .and_then(|a| a.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                address,
            });
        }
    }
    out
}

/// A state written over the previous one: `set` put over the members of `prior` (raw JSON
/// texts), `remove` left out; every object's keys sorted ([`SortedRaw`], [`Sorted`]).
struct MergedState<'a> {
    prior: &'a BTreeMap<String, &'a RawValue>,
    set: &'a Map<String, Value>,
    remove: &'a [&'a str],
}

impl serde::Serialize for MergedState<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut keys: Vec<&str> = self
            .prior
            .keys()
            .map(String::as_str)
            .chain(self.set.keys().map(String::as_str))
            .filter(|k| !self.remove.contains(k))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut m = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            match (self.set.get(k), self.prior.get(k)) {
                (Some(v), _) => m.serialize_entry(k, &Sorted(v))?,
                (None, Some(raw)) => m.serialize_entry(k, &SortedRaw(raw))?,
                (None, None) => {}
            }
        }
        m.end()
    }
}

/// The number of members of a raw JSON object (a repeated key counts once, as in a
/// [`Value`]); 0 for anything else.
fn object_len(raw: &RawValue) -> usize {
    serde_json::from_str::<BTreeMap<String, serde::de::IgnoredAny>>(raw.get())
        .map_or(0, |m| m.len())
}
