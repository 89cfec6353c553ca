//! The HyOps driver protocol (§3.3, §6.3): the request a driver receives and the result it
//! returns, as serde types. Knows nothing about Proxmox API calls or the planner.

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
    /// The result as a JSON value (for [`super::fsio::write_json_atomic`]).
    pub fn to_value(&self) -> Value {
        // A struct of strings, maps and Values always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
