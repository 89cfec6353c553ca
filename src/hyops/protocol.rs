//! The HyOps driver protocol (§3.3, §6.3): the request a driver receives (as serde types, and
//! validated field by field into a [`ParsedRequest`]) and the result it returns. Knows
//! nothing about Proxmox API calls or the planner.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::contract::{DRIVER_REF, PACK_ID, PROFILE};

/// `execution` of a request: `{driver, profile, pack_id, hooks}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestExecution {
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub pack_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Value>,
}

/// `requirements` of a request: `{credentials: [...]}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub credentials: Vec<String>,
}

/// `runtime` of a request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestRuntime {
    #[serde(default)]
    pub root: String,
    #[serde(default)]
    pub env: String,
    #[serde(default)]
    pub logs_dir: String,
    #[serde(default)]
    pub meta_dir: String,
    #[serde(default)]
    pub state_dir: String,
    #[serde(default)]
    pub credentials_dir: String,
    #[serde(default)]
    pub work_dir: String,
    #[serde(default)]
    pub allow_state_drift_recreate: bool,
}

/// `import` of an import request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSpec {
    pub resource_address: String,
    pub resource_id: String,
}

/// The request a driver receives from `_apply_execute.run_single` (§6.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverRequest {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_command: Option<String>,
    pub run_id: String,
    pub module_ref: String,
    /// `""` when none.
    #[serde(default)]
    pub state_instance: String,
    #[serde(default)]
    pub module_dir: String,
    #[serde(default)]
    pub inputs: Map<String, Value>,
    pub execution: RequestExecution,
    #[serde(default)]
    pub requirements: Requirements,
    pub runtime: RequestRuntime,
    pub evidence_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

impl DriverRequest {
    /// The command that drives behaviour: `lifecycle_command` for a preflight request,
    /// otherwise `command`; `deploy` is normalised to `apply`.
    pub fn effective_command(&self) -> String {
        let c = self.command.trim().to_ascii_lowercase();
        let eff = match (&*c, &self.lifecycle_command) {
            ("preflight", Some(l)) if !l.trim().is_empty() => l.trim().to_ascii_lowercase(),
            _ => c,
        };
        normalize_command(&eff)
    }
}

/// `deploy` → `apply`; every other command unchanged.
pub fn normalize_command(command: &str) -> String {
    match command {
        "deploy" => "apply".to_string(),
        other => other.to_string(),
    }
}

/// `driver` of a result: `{ref, profile, pack_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverIdentity {
    #[serde(rename = "ref")]
    pub driver_ref: String,
    pub profile: String,
    pub pack_id: String,
}

impl Default for DriverIdentity {
    fn default() -> Self {
        Self {
            driver_ref: DRIVER_REF.to_string(),
            profile: PROFILE.to_string(),
            pack_id: PACK_ID.to_string(),
        }
    }
}

/// `status` of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    Ok,
    Error,
}

/// The driver's result, also written as `driver_result.json` (§3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverResult {
    pub status: ResultStatus,
    pub run_id: String,
    pub command: String,
    pub driver: DriverIdentity,
    #[serde(default)]
    pub normalized_outputs: Map<String, Value>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default = "local_backend")]
    pub backend_binding: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `state_detach` only: what was detached (contract §3.3; hyops records it in the state's
    /// `detached_resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_detach: Option<Value>,
}

fn local_backend() -> BTreeMap<String, Value> {
    BTreeMap::from([("mode".to_string(), Value::String("local".to_string()))])
}

impl DriverResult {
    /// A successful result for `command` (normalised), with our driver identity.
    pub fn ok(run_id: &str, command: &str, normalized_outputs: Map<String, Value>) -> Self {
        Self {
            status: ResultStatus::Ok,
            run_id: run_id.to_string(),
            command: normalize_command(command),
            driver: DriverIdentity::default(),
            normalized_outputs,
            warnings: Vec::new(),
            backend_binding: local_backend(),
            error: None,
            state_detach: None,
        }
    }
    /// A failed result carrying `error`.
    pub fn error(run_id: &str, command: &str, error: impl Into<String>) -> Self {
        Self {
            status: ResultStatus::Error,
            error: Some(error.into()),
            ..Self::ok(run_id, command, Map::new())
        }
    }
    /// The result serialised with sorted keys, nothing copied (what `Sorted(&self.to_value())`
    /// gives, byte for byte): `driver_result.json` and `result.json` carry the whole outputs.
    pub fn sorted(&self) -> SortedResult<'_> {
        SortedResult(self)
    }

    /// The result as a JSON value (for [`super::fsio::write_json_atomic`]).
    pub fn to_value(&self) -> Value {
        // A struct of strings, maps and Values always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// See [`DriverResult::sorted`].
pub struct SortedResult<'a>(&'a DriverResult);

impl Serialize for SortedResult<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use super::fsio::{Sorted, SortedMap};
        use serde::ser::SerializeMap;
        let r = self.0;
        // the members in key order (the serialised names, `ref` inside `driver` included)
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("backend_binding", &BindingSorted(&r.backend_binding))?;
        m.serialize_entry("command", &r.command)?;
        m.serialize_entry("driver", &DriverSorted(&r.driver))?;
        if let Some(e) = &r.error {
            m.serialize_entry("error", e)?;
        }
        m.serialize_entry("normalized_outputs", &SortedMap(&r.normalized_outputs))?;
        m.serialize_entry("run_id", &r.run_id)?;
        if let Some(d) = &r.state_detach {
            m.serialize_entry("state_detach", &Sorted(d))?;
        }
        m.serialize_entry("status", &r.status)?;
        m.serialize_entry("warnings", &r.warnings)?;
        m.end()
    }
}

struct BindingSorted<'a>(&'a BTreeMap<String, Value>);
impl Serialize for BindingSorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, super::fsio::Sorted(v))))
    }
}

struct DriverSorted<'a>(&'a DriverIdentity);
impl Serialize for DriverSorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("pack_id", &self.0.pack_id)?;
        m.serialize_entry("profile", &self.0.profile)?;
        m.serialize_entry("ref", &self.0.driver_ref)?;
        m.end()
    }
}

/// A driver request field that is missing or malformed: the message names the field, what
/// was wrong and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("driver request field {field}: {problem}")]
pub struct RequestError {
    pub field: String,
    pub problem: String,
}

impl RequestError {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// The lifecycle a `preflight` request prepares (`lifecycle_command`; `deploy` is `apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Apply,
    Plan,
    Validate,
    Destroy,
    Import,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Apply => "apply",
            Lifecycle::Plan => "plan",
            Lifecycle::Validate => "validate",
            Lifecycle::Destroy => "destroy",
            Lifecycle::Import => "import",
        }
    }
}

/// What `import` adopts: a VMID (`resource_id`, `101` or `<node>/101` as the bpg provider
/// spells it) into a logical key (`resource_address`: `app-01`, `vms["app-01"]`, or any
/// Terraform address ending in `["app-01"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportTarget {
    pub resource_address: String,
    pub resource_id: String,
    pub key: String,
    pub vmid: u32,
    pub node: Option<String>,
}

/// Which VMs `state_detach` forgets: one logical key, or every VM of the slot (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachSelection {
    Key(String),
    All,
}

/// `state_detach`'s parameters (`request.state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachTarget {
    pub resource_address: String,
    pub expected_resource_id: String,
    pub selection: DetachSelection,
    /// The VMIDs the operator expects the selection to hold (one for a key; for `*` every
    /// managed VMID, comma-separated in the request).
    pub expected_vmids: std::collections::BTreeSet<u32>,
}

/// A validated driver command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverCommand {
    Preflight(Lifecycle),
    Apply,
    Plan,
    Validate,
    Destroy,
    Import(ImportTarget),
    StateUnlock { lock_id: String },
    StateDetach(DetachTarget),
}

impl DriverCommand {
    /// The normalised command name of the result (`deploy` → `apply`).
    pub fn name(&self) -> &'static str {
        match self {
            DriverCommand::Preflight(_) => "preflight",
            DriverCommand::Apply => "apply",
            DriverCommand::Plan => "plan",
            DriverCommand::Validate => "validate",
            DriverCommand::Destroy => "destroy",
            DriverCommand::Import(_) => "import",
            DriverCommand::StateUnlock { .. } => "state_unlock",
            DriverCommand::StateDetach(_) => "state_detach",
        }
    }
}

/// The commands this driver answers, as the error message lists them.
pub const DRIVER_COMMANDS: &str =
    "preflight, apply, deploy, plan, validate, destroy, import, state_unlock, state_detach";

/// A driver request, validated field by field (contract §6.3).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    pub command: DriverCommand,
    pub run_id: String,
    /// The canonical module ref.
    pub module_ref: String,
    /// `""` in the request means none.
    pub state_instance: Option<super::paths::StateInstance>,
    /// `request.inputs` (hyops' resolved inputs; `{}` for the state commands when absent).
    pub inputs: Value,
    pub runtime_root: std::path::PathBuf,
    /// `runtime.env` when non-empty.
    pub runtime_env: Option<String>,
    pub evidence_dir: std::path::PathBuf,
    /// `execution` as sent (for `driver_meta.json`).
    pub execution: Value,
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(RequestError::new(
            field,
            format!(
                "must be a string, found {}",
                crate::inputs::value_kind(other)
            ),
        )),
    }
}

fn req_str(obj: &Map<String, Value>, field: &str, what: &str) -> Result<String, RequestError> {
    match opt_str(obj, field)?.map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(RequestError::new(
            field,
            format!("is missing or empty (expected {what})"),
        )),
    }
}

fn sub_object<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(RequestError::new(
            field,
            format!(
                "must be an object, found {}",
                crate::inputs::value_kind(other)
            ),
        )),
    }
}

fn req_object<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, RequestError> {
    match obj.get(field) {
        Some(Value::Object(m)) => Ok(m),
        None | Some(Value::Null) => {
            Err(RequestError::new(field, "is missing (expected an object)"))
        }
        Some(other) => Err(RequestError::new(
            field,
            format!(
                "must be an object, found {}",
                crate::inputs::value_kind(other)
            ),
        )),
    }
}

fn nested(prefix: &str, e: RequestError) -> RequestError {
    RequestError {
        field: format!("{prefix}.{}", e.field),
        problem: e.problem,
    }
}

fn absolute_path(field: &str, raw: &str) -> Result<std::path::PathBuf, RequestError> {
    let p = std::path::PathBuf::from(raw);
    if !p.is_absolute() {
        return Err(RequestError::new(
            field,
            format!("{raw:?} is not an absolute path"),
        ));
    }
    Ok(p)
}

fn printable_line(field: &str, s: &str) -> Result<(), RequestError> {
    if s.len() > 256 || s.chars().any(char::is_control) {
        return Err(RequestError::new(
            field,
            "must be a single printable line of at most 256 characters",
        ));
    }
    Ok(())
}

/// The Terraform resource type of a Proxmox VM (the bpg provider's).
const TF_VM_TYPE: &str = "proxmox_virtual_environment_vm";

/// The logical key named by an import/detach `resource_address`:
/// - the key itself (`app-01`) or `vms.<key>`;
/// - `vms["app-01"]`, or any address ending in `["app-01"]`;
/// - the Terraform address of the VM as `terraform state list` prints it for the upstream
///   pack, where the key sits on the module (`module.vm_multi.module.vm["app-01"].proxmox_virtual_environment_vm.vm`,
///   optionally with a count index `[0]`), the form [`crate::hyops::read_tfstate_vms`]
///   reads from a Terraform state.
///
/// An address naming another resource of the VM's module (its cloud-init snippet
/// `proxmox_virtual_environment_file`, …) names no VM: `None`.
pub fn logical_key_of_address(address: &str) -> Option<String> {
    let a = address.trim();
    let key = match a.rfind("[\"") {
        Some(start) => {
            let rest = &a[start + 2..];
            let close = rest.find("\"]")?;
            let tail = &rest[close + 2..];
            if !tail.is_empty() && !is_vm_resource_tail(tail) {
                return None;
            }
            // Before the key: a module or resource path, never another resource type.
            let head = &a[..start];
            if head
                .split('.')
                .any(|seg| seg.starts_with("proxmox_virtual_environment_") && seg != TF_VM_TYPE)
            {
                return None;
            }
            &rest[..close]
        }
        None => a.strip_prefix("vms.").unwrap_or(a),
    };
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| key.to_string())
}

/// `.proxmox_virtual_environment_vm.<name>` with an optional count index (`[0]`): the VM
/// resource inside a module keyed by the logical key.
fn is_vm_resource_tail(tail: &str) -> bool {
    let Some(rest) = tail.strip_prefix(&format!(".{TF_VM_TYPE}.")) else {
        return false;
    };
    let (name, index) = match rest.split_once('[') {
        Some((n, i)) => (n, Some(i)),
        None => (rest, None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    let index_ok = index.is_none_or(|i| {
        i.strip_suffix(']')
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    });
    name_ok && index_ok
}

/// `101` or `<node>/101` (the bpg provider's import id).
pub fn parse_vm_resource_id(id: &str) -> Option<(Option<String>, u32)> {
    let id = id.trim();
    let (node, vmid) = match id.rsplit_once('/') {
        Some((n, v)) if !n.trim().is_empty() => (Some(n.trim().to_string()), v),
        Some(_) => return None,
        None => (None, id),
    };
    let vmid: u32 = vmid.trim().parse().ok()?;
    (100..=999_999_999).contains(&vmid).then_some((node, vmid))
}

fn parse_import(obj: &Map<String, Value>) -> Result<ImportTarget, RequestError> {
    let import = req_object(obj, "import")?;
    let resource_address = req_str(
        import,
        "resource_address",
        "the logical key to adopt into, e.g. app-01 or vms[\"app-01\"]",
    )
    .map_err(|e| nested("import", e))?;
    let resource_id = req_str(
        import,
        "resource_id",
        "the VMID to adopt, e.g. 101 or pve1/101",
    )
    .map_err(|e| nested("import", e))?;
    let key = logical_key_of_address(&resource_address).ok_or_else(|| {
        RequestError::new(
            "import.resource_address",
            format!("{resource_address:?} names no logical key (expected app-01, vms[\"app-01\"], an address ending in [\"app-01\"] or the VM's Terraform address module.vm_multi.module.vm[\"app-01\"].proxmox_virtual_environment_vm.vm)"),
        )
    })?;
    let (node, vmid) = parse_vm_resource_id(&resource_id).ok_or_else(|| {
        RequestError::new(
            "import.resource_id",
            format!("{resource_id:?} is not a VMID (expected 100..999999999, optionally as <node>/<vmid>)"),
        )
    })?;
    Ok(ImportTarget {
        resource_address,
        resource_id,
        key,
        vmid,
        node,
    })
}

fn require_force(state: &Map<String, Value>, command: &str) -> Result<(), RequestError> {
    match state.get("force") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(RequestError::new(
            "state.force",
            format!("{command} requires force=true"),
        )),
    }
}

fn parse_detach(obj: &Map<String, Value>) -> Result<DetachTarget, RequestError> {
    let state = req_object(obj, "state")?;
    require_force(state, "state_detach")?;
    let resource_address = req_str(
        state,
        "resource_address",
        "a logical key (app-01, vms[\"app-01\"]) or * for every VM of the slot",
    )
    .map_err(|e| nested("state", e))?;
    let expected_resource_id = req_str(
        state,
        "expected_resource_id",
        "the VMID the key holds (for *, every VMID of the slot, comma-separated)",
    )
    .map_err(|e| nested("state", e))?;
    let selection = match resource_address.trim() {
        "*" | "vms" | "vms[*]" => DetachSelection::All,
        a => DetachSelection::Key(logical_key_of_address(a).ok_or_else(|| {
            RequestError::new(
                "state.resource_address",
                format!("{resource_address:?} names no logical key (expected app-01, vms[\"app-01\"], the VM's Terraform address module.vm_multi.module.vm[\"app-01\"].proxmox_virtual_environment_vm.vm, or *)"),
            )
        })?),
    };
    let mut expected_vmids = std::collections::BTreeSet::new();
    for part in expected_resource_id.split(',') {
        let (_, vmid) = parse_vm_resource_id(part).ok_or_else(|| {
            RequestError::new(
                "state.expected_resource_id",
                format!(
                    "{part:?} is not a VMID (expected 100..999999999, optionally as <node>/<vmid>)"
                ),
            )
        })?;
        expected_vmids.insert(vmid);
    }
    if matches!(selection, DetachSelection::Key(_)) && expected_vmids.len() != 1 {
        return Err(RequestError::new(
            "state.expected_resource_id",
            "a single logical key holds exactly one VMID",
        ));
    }
    Ok(DetachTarget {
        resource_address,
        expected_resource_id,
        selection,
        expected_vmids,
    })
}

/// Validate a driver request (contract §6.3). Every failure names the field.
pub fn parse_request(value: &Value) -> Result<ParsedRequest, RequestError> {
    let Value::Object(obj) = value else {
        return Err(RequestError::new(
            "request",
            format!(
                "must be a JSON object, found {}",
                crate::inputs::value_kind(value)
            ),
        ));
    };
    let command_raw = req_str(obj, "command", &format!("one of {DRIVER_COMMANDS}"))?;
    let command_lc = command_raw.to_ascii_lowercase();
    let run_id = req_str(
        obj,
        "run_id",
        "the run id hyops made, e.g. apply-20260712T120000Z-abcd1234",
    )?;
    printable_line("run_id", &run_id)?;
    let module_raw = req_str(obj, "module_ref", super::contract::MODULE_REF)?;
    let module_ref = crate::inputs::canonical_module_ref(&module_raw).map_err(|_| {
        RequestError::new(
            "module_ref",
            format!(
                "{module_raw:?} is not served by this driver (it runs {} only)",
                super::contract::MODULE_REF
            ),
        )
    })?;
    let state_instance = super::paths::StateInstance::parse_opt(opt_str(obj, "state_instance")?)
        .map_err(|e| RequestError::new("state_instance", e.to_string()))?;
    let execution = sub_object(obj, "execution")?;
    if let Some(exec) = execution {
        if let Some(d) = opt_str(exec, "driver")
            .map_err(|e| nested("execution", e))?
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            if d != DRIVER_REF {
                return Err(RequestError::new(
                    "execution.driver",
                    format!("{d:?} is not this driver ({DRIVER_REF})"),
                ));
            }
        }
    }
    let runtime = req_object(obj, "runtime")?;
    let root_raw =
        req_str(runtime, "root", "the absolute runtime root").map_err(|e| nested("runtime", e))?;
    let runtime_root = absolute_path("runtime.root", &root_raw)?;
    for (field, sub) in [("state_dir", "state"), ("credentials_dir", "credentials")] {
        if let Some(d) = opt_str(runtime, field)
            .map_err(|e| nested("runtime", e))?
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            let want = runtime_root.join(sub);
            if std::path::Path::new(d.trim_end_matches('/')) != want {
                return Err(RequestError::new(
                    &format!("runtime.{field}"),
                    format!(
                        "{d:?} is not {} (hyops-pve uses the standard runtime layout under runtime.root)",
                        want.display()
                    ),
                ));
            }
        }
    }
    let runtime_env = opt_str(runtime, "env")
        .map_err(|e| nested("runtime", e))?
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    let evidence_raw = req_str(
        obj,
        "evidence_dir",
        "the absolute evidence dir hyops made for this run",
    )?;
    let evidence_dir = absolute_path("evidence_dir", &evidence_raw)?;
    let command = match command_lc.as_str() {
        "preflight" => {
            let lc = opt_str(obj, "lifecycle_command")?
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "apply".into());
            DriverCommand::Preflight(match lc.as_str() {
                "apply" | "deploy" => Lifecycle::Apply,
                "plan" => Lifecycle::Plan,
                "validate" => Lifecycle::Validate,
                "destroy" => Lifecycle::Destroy,
                "import" => Lifecycle::Import,
                other => {
                    return Err(RequestError::new(
                        "lifecycle_command",
                        format!("unsupported lifecycle {other:?} (expected apply, deploy, plan, validate, destroy or import)"),
                    ))
                }
            })
        }
        "apply" | "deploy" => DriverCommand::Apply,
        "plan" => DriverCommand::Plan,
        "validate" => DriverCommand::Validate,
        "destroy" => DriverCommand::Destroy,
        "import" => DriverCommand::Import(parse_import(obj)?),
        "state_unlock" => {
            let state = req_object(obj, "state")?;
            require_force(state, "state_unlock")?;
            let lock_id = req_str(
                state,
                "lock_id",
                "the run_id of the lock holder, as the lock error names it",
            )
            .map_err(|e| nested("state", e))?;
            DriverCommand::StateUnlock { lock_id }
        }
        "state_detach" => DriverCommand::StateDetach(parse_detach(obj)?),
        other => {
            return Err(RequestError::new(
                "command",
                format!("unsupported command for {DRIVER_REF} driver: {other} (expected one of {DRIVER_COMMANDS})"),
            ))
        }
    };
    let needs_inputs = !matches!(
        command,
        DriverCommand::StateUnlock { .. } | DriverCommand::StateDetach(_)
    );
    let inputs = match obj.get("inputs") {
        Some(v @ Value::Object(_)) => v.clone(),
        None | Some(Value::Null) if !needs_inputs => Value::Object(Map::new()),
        None | Some(Value::Null) => {
            return Err(RequestError::new(
                "inputs",
                "is missing (expected the resolved inputs object)",
            ))
        }
        Some(other) => {
            return Err(RequestError::new(
                "inputs",
                format!(
                    "must be an object of resolved inputs, found {}",
                    crate::inputs::value_kind(other)
                ),
            ))
        }
    };
    Ok(ParsedRequest {
        command,
        run_id,
        module_ref: module_ref.to_string(),
        state_instance,
        inputs,
        runtime_root,
        runtime_env,
        evidence_dir,
        execution: execution.cloned().map(Value::Object).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod sorted_result_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_sorted_result_writes_what_sorting_its_json_value_writes() {
        let mut outputs = Map::new();
        outputs.insert("vms".into(), json!({"b": {"z": 1, "a": 2}, "a": {}}));
        outputs.insert("outputs_b".into(), json!([{"y": 1, "x": 2}]));
        let mut r = DriverResult::ok("apply-1", "deploy", outputs);
        r.warnings = vec!["w2".into(), "w1".into()];
        r.backend_binding
            .insert("state".into(), json!({"z": 1, "a": {"d": 1, "c": 2}}));
        for (error, detach) in [
            (None, None),
            (Some("boom".to_string()), Some(json!({"b": 1, "a": 2}))),
        ] {
            r.error = error;
            r.state_detach = detach;
            if r.error.is_some() {
                r.status = ResultStatus::Error;
            }
            assert_eq!(
                serde_json::to_string_pretty(&r.sorted()).unwrap(),
                serde_json::to_string_pretty(&crate::hyops::fsio::sort_keys(&r.to_value()))
                    .unwrap()
            );
        }
    }
}
