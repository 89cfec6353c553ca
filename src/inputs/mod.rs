//! Inputs: spec defaults, overlay merge, env overrides, validation, naming and bridge aliases
//! for `platform/onprem/platform-vm`. Produces a typed [`model::ModuleInputs`]. Knows nothing
//! about Proxmox API calls or the plan; state reads come in through [`StateContracts`].
//!
//! The one entry point is [`resolve_inputs`]. It runs `hyops`' own resolution first, on the
//! Python data model ([`crate::yaml::PyValue`]) so every value, key and message is what
//! `hyops` sees (contract §1.2, §1.8, §1.9, §1.14, §1.15):
//! 1. the `--inputs` file read with `yaml.safe_load` semantics (YAML 1.1) and bounds;
//!    `preset_ref` refused on the overlay;
//! 2. spec defaults ([`spec_defaults`]) with the overlay merged on
//!    ([`merge_operator_inputs`]: mappings recurse, lists replace, a blank string never
//!    erases a non-blank one);
//! 3. `HYOPS_INPUTS_JSON` and `HYOPS_INPUT_<path>` in environment order
//!    ([`apply_env_overrides`], `json.loads` semantics), from the request, never the process;
//! 4. the state references `hyops` resolves for every module (`target_state_ref`,
//!    `network_state_ref`) through [`StateContracts`];
//! 5. the addressing contract ([`upstream::addressing_contract`], every command, bare
//!    messages); the module validator ([`upstream::platform_vm`], skipped for destroy);
//!    `ssh_keys_from_init` through [`StateContracts`];
//! 6. the check that `hyops` could write the result to `inputs_resolved.json`
//!    ([`upstream::recordable`]).
//!
//! Then this engine's part, on JSON: the values are carried into `serde_json` (an integer
//! past 64 bits, NaN or an infinity is refused with a range message, never replaced); field
//! aliases folded (`proxmox_node`, `storage_pool`, `storage_snippets`); the engine-extension
//! rules and the ranges of the typed model ([`validate_engine_extensions`], skipped for
//! destroy); for apply/deploy/plan/validate/preflight/rebuild the bridge alias rewrite
//! ([`rewrite_bridge_aliases`]) and the `build_image=true` contract error; and the typed
//! model ([`build_model`], lenient so destroy always gets keys, names, VMIDs). Keys nothing
//! reads are reported as warnings with the closest known key ([`known`]).
//!
//! Engine extensions over upstream (upstream silently drops or lacks these):
//! - module `clone_mode`: `full` (default) | `linked`;
//! - module `cloud_init_mode`: `snippets` (default, as upstream: `cicustom` snippets over node
//!   SSH) | `native` (Proxmox's native cloud-init keys only, no node SSH);
//! - `post_apply_ssh_readiness.wait_cloud_init` (bool, default false): the gate also waits for
//!   `cloud-init status --wait`;
//! - module `limits: {global, per_node, per_storage}`: positive ints, scheduling limits;
//! - per-VM `node_name` (alias `proxmox_node`): the node a VM lands on;
//! - NIC `model` (Proxmox enum, default `virtio`), `firewall` (bool, default false),
//!   `mtu` (1..=65520), `vlan_id` (1..=4094);
//! - operator `node_name`/`datastore_id`/`snippets_datastore_id`/`network_bridge` win over the
//!   credentials (decided quirk, contract §10.2 #1);
//! - `ssh_public_key` becomes the only `ssh_keys` entry when `ssh_keys` is empty;
//! - in single-VM mode, non-empty module `interfaces` are validated with the NIC rules.
//!
//! Not here: the NetBox reachability probe, VM-set guards and template resolution (they
//! need state and run in the command layer, in the driver contract's order).

pub mod aliases;
pub mod build;
pub mod defaults;
pub mod error;
pub mod known;
pub mod model;
pub mod naming;
pub mod overlay;
pub(crate) mod pyval;
pub mod sanitize;
pub mod upstream;
pub mod validate;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value;

use crate::yaml::{PyDict, PyValue};

pub use aliases::{fold_field_aliases, resolve_bridge_alias, rewrite_bridge_aliases};
pub use build::{build_model, BuildContext};
pub use defaults::spec_defaults;
pub use error::{FailureKind, InputsError, ValidationFailure, MODULE_REF};
pub use known::unknown_key_warnings;
pub use model::*;
pub use naming::{name_prefix, physical_name};
pub use overlay::{
    apply_env_overrides, load_overlay_file, merge_operator_inputs, parse_overlay, value_kind,
    OverlayParseError,
};
pub use sanitize::sanitize_rerun_inputs;
pub use validate::{
    check_ranges, check_vm_key_collisions, validate_addressing_contract,
    validate_engine_extensions, validate_platform_vm, NIC_MODELS,
};

/// The lifecycle command the inputs are resolved for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleCommand {
    Apply,
    Deploy,
    Plan,
    Validate,
    Preflight,
    Destroy,
    Rebuild,
    Import,
}

impl LifecycleCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleCommand::Apply => "apply",
            LifecycleCommand::Deploy => "deploy",
            LifecycleCommand::Plan => "plan",
            LifecycleCommand::Validate => "validate",
            LifecycleCommand::Preflight => "preflight",
            LifecycleCommand::Destroy => "destroy",
            LifecycleCommand::Rebuild => "rebuild",
            LifecycleCommand::Import => "import",
        }
    }
    /// The module validator runs for everything but destroy (contract §1.14).
    pub fn runs_validator(self) -> bool {
        self != LifecycleCommand::Destroy
    }
    /// Driver-time contract steps (bridge aliases, `build_image`) run for these (§1.8, §1.15).
    pub fn runs_contract(self) -> bool {
        matches!(
            self,
            LifecycleCommand::Apply
                | LifecycleCommand::Deploy
                | LifecycleCommand::Plan
                | LifecycleCommand::Validate
                | LifecycleCommand::Preflight
                | LifecycleCommand::Rebuild
        )
    }
}

impl fmt::Display for LifecycleCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LifecycleCommand {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_lowercase().as_str() {
            "apply" => LifecycleCommand::Apply,
            "deploy" => LifecycleCommand::Deploy,
            "plan" => LifecycleCommand::Plan,
            "validate" => LifecycleCommand::Validate,
            "preflight" => LifecycleCommand::Preflight,
            "destroy" => LifecycleCommand::Destroy,
            "rebuild" => LifecycleCommand::Rebuild,
            "import" => LifecycleCommand::Import,
            other => return Err(format!("unknown lifecycle command: {other}")),
        })
    }
}

/// The state reads input resolution needs, in `hyops`' order (implemented over a runtime
/// root by [`crate::hyops::state_refs::RootStateContracts`]). Errors are the operator text.
pub trait StateContracts: Send + Sync {
    /// The state-reference resolvers `hyops` runs before validation for every module
    /// (`target_state_ref`, `network_state_ref`).
    fn check_state_refs(&self, inputs: &PyDict) -> Result<(), String>;
    /// `_resolve_ssh_keys_from_init` (after validation): may fill `ssh_keys`.
    fn ssh_keys_from_init(&self, inputs: &mut PyDict) -> Result<(), String>;
}

/// A shared [`StateContracts`] (cloneable, printable).
#[derive(Clone)]
pub struct StateHooks(pub Arc<dyn StateContracts>);

impl fmt::Debug for StateHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateHooks")
    }
}

/// Everything [`resolve_inputs`] needs; nothing is read from the process environment.
#[derive(Clone, Debug)]
pub struct ResolveRequest {
    /// The `--inputs` file, if any.
    pub overlay_path: Option<PathBuf>,
    pub command: LifecycleCommand,
    /// The runtime env name (`HYOPS_ENV`, or `--env` when that is unset). When `None`, the
    /// `HYOPS_ENV` entry of `env` is used.
    pub runtime_env: Option<String>,
    /// The environment variables to honour (`HYOPS_INPUTS_JSON`, `HYOPS_INPUT_*`,
    /// `HYOPS_ENV`), in process-environment order: `HYOPS_INPUT_*` apply in this order.
    pub env: Vec<(String, String)>,
    /// The credentials' `network_bridge` (default bridge of the single-VM NIC; `vmbr0` if unset).
    pub credentials_network_bridge: Option<String>,
    /// State reads (`target_state_ref`, `network_state_ref`, `ssh_keys_from_init`); `None`
    /// skips them (no runtime root).
    pub state: Option<StateHooks>,
}

impl ResolveRequest {
    /// A request with no overlay, no env, no credentials bridge and no state.
    pub fn new(command: LifecycleCommand) -> Self {
        Self {
            overlay_path: None,
            command,
            runtime_env: None,
            env: Vec::new(),
            credentials_network_bridge: None,
            state: None,
        }
    }

    fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn effective_env(&self) -> Option<String> {
        self.runtime_env
            .clone()
            .or_else(|| self.env_var("HYOPS_ENV").map(str::to_string))
            .map(|s| crate::yaml::py_strip(&s).to_string())
            .filter(|s| !s.is_empty())
    }
}

/// The outcome of [`resolve_inputs`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedInputs {
    pub model: ModuleInputs,
    /// The merged inputs after overrides and alias rewrites (for `inputs_resolved.json`; pass
    /// it through [`sanitize_rerun_inputs`] before writing rerun inputs).
    pub resolved_json: Value,
    /// Operator-facing warnings, in the order they arose (unknown keys first).
    pub warnings: Vec<String>,
}

/// Resolves the inputs of `platform/onprem/platform-vm` for one command (see module docs).
pub fn resolve_inputs(req: &ResolveRequest) -> Result<ResolvedInputs, InputsError> {
    resolve_inputs_with_warnings(req).1
}

/// [`resolve_inputs`], also handing back the warnings gathered before a failure (unknown
/// keys), so a caller can print them next to the error.
pub fn resolve_inputs_with_warnings(
    req: &ResolveRequest,
) -> (Vec<String>, Result<ResolvedInputs, InputsError>) {
    let overlay = match &req.overlay_path {
        Some(path) => match load_overlay_file(path) {
            Ok(d) => d,
            Err(e) => return (Vec::new(), Err(e)),
        },
        None => PyDict::new(),
    };
    resolve_py(req, &overlay)
}

/// [`resolve_inputs`] with an already-parsed overlay given as JSON (`req.overlay_path` is
/// ignored); the JSON is read as `json.loads` would give it.
pub fn resolve_inputs_with_overlay(
    req: &ResolveRequest,
    overlay: &Value,
) -> Result<ResolvedInputs, InputsError> {
    match PyValue::from(overlay) {
        PyValue::Dict(d) => resolve_py(req, &d).1,
        other if !other.truthy() => resolve_py(req, &PyDict::new()).1,
        _ => Err(InputsError::NotAMapping("<overlay>".into())),
    }
}

/// [`resolve_inputs`] with an already-parsed overlay (`req.overlay_path` is ignored).
pub fn resolve_py(
    req: &ResolveRequest,
    operator: &PyDict,
) -> (Vec<String>, Result<ResolvedInputs, InputsError>) {
    let mut warnings = Vec::new();
    let result = resolve_steps(req, operator, &mut warnings);
    (
        warnings.clone(),
        result.map(|mut r| {
            let mut all = warnings;
            all.append(&mut r.warnings);
            r.warnings = all;
            r
        }),
    )
}

fn resolve_steps(
    req: &ResolveRequest,
    operator: &PyDict,
    warnings: &mut Vec<String>,
) -> Result<ResolvedInputs, InputsError> {
    overlay::check_preset_ref(operator)?;
    let mut inputs = match spec_defaults_py() {
        PyValue::Dict(d) => d,
        _ => PyDict::new(),
    };
    merge_operator_inputs(&mut inputs, operator);
    apply_env_overrides(&mut inputs, &req.env)?;
    // `_hyops_lifecycle_command` / `_hyops_invocation_command` are set for validation and
    // popped before anything else sees the inputs: an operator's own values never survive.
    inputs.remove("_hyops_lifecycle_command");
    inputs.remove("_hyops_invocation_command");
    warnings.extend(unknown_key_warnings(&inputs));

    if let Some(state) = &req.state {
        state
            .0
            .check_state_refs(&inputs)
            .map_err(InputsError::Resolve)?;
    }
    upstream::addressing_contract(&inputs)?;
    if req.command.runs_validator() {
        upstream::platform_vm_dict(&inputs)?;
    }
    if let Some(state) = &req.state {
        state
            .0
            .ssh_keys_from_init(&mut inputs)
            .map_err(InputsError::Resolve)?;
    }
    let inputs = PyValue::Dict(inputs);
    upstream::recordable(&inputs, "inputs").map_err(InputsError::Unrecordable)?;
    let inputs = inputs
        .to_json("inputs")
        .map_err(|e| InputsError::OutOfRange(e.to_string()))?;
    engine_steps(req, inputs)
}

/// Inputs a HyOps driver request carries (`request.inputs`): `hyops` has already run its own
/// resolution on them (steps 1–6: defaults, overlay, env overrides, state references, its
/// validator, `ssh_keys_from_init`), so only this engine's part runs, on the JSON as given:
/// unknown-key warnings, ranges, aliases, the engine-extension rules, the driver-time
/// contract steps and the typed model. A non-mapping is an error naming `inputs`.
pub fn resolve_prepared_inputs(
    req: &ResolveRequest,
    inputs: &Value,
) -> Result<ResolvedInputs, InputsError> {
    let PyValue::Dict(dict) = PyValue::from(inputs) else {
        return Err(InputsError::PreparedNotMapping(value_kind(inputs).into()));
    };
    let mut warnings = unknown_key_warnings(&dict);
    let mut resolved = engine_steps(req, inputs.clone())?;
    warnings.append(&mut resolved.warnings);
    resolved.warnings = warnings;
    Ok(resolved)
}

/// This engine's part of the resolution, on JSON (see the module docs).
fn engine_steps(req: &ResolveRequest, mut inputs: Value) -> Result<ResolvedInputs, InputsError> {
    validate::check_ranges(&inputs)?;
    validate::check_vm_key_collisions(&inputs)?;
    let mut own_warnings = fold_field_aliases(&mut inputs);
    if req.command.runs_validator() {
        validate_engine_extensions(&inputs)?;
    }

    let env = req.effective_env();
    if req.command.runs_contract() {
        let rewrites = rewrite_bridge_aliases(&mut inputs, env.as_deref().unwrap_or(""))
            .map_err(InputsError::Contract)?;
        own_warnings.extend(rewrites);
        if let Value::Object(data) = &inputs {
            if pyval::as_bool(data.get("build_image")) {
                return Err(InputsError::Contract(BUILD_IMAGE_UNSUPPORTED.to_string()));
            }
        }
    }

    let model = build_model(
        &inputs,
        BuildContext {
            env: env.as_deref(),
            credentials_network_bridge: req.credentials_network_bridge.as_deref(),
        },
    );
    Ok(ResolvedInputs {
        model,
        resolved_json: inputs,
        warnings: own_warnings,
    })
}

fn spec_defaults_py() -> PyValue {
    PyValue::from(&spec_defaults())
}

/// The §1.15 step 2 error for `build_image: true`.
pub const BUILD_IMAGE_UNSUPPORTED: &str = "build_image=true is not supported yet for this module; build an image first and reference it via template_state_ref (try: template_state_ref=core/onprem/template-image, template_key=ubuntu-24.04)";

/// Canonical module ref: accepts dots for slashes and surrounding blanks; anything but
/// `platform/onprem/platform-vm` is an error.
pub fn canonical_module_ref(s: &str) -> Result<&'static str, InputsError> {
    let normalized = s.trim().replace('.', "/");
    if normalized == MODULE_REF {
        Ok(MODULE_REF)
    } else {
        Err(InputsError::UnsupportedModule(s.trim().to_string()))
    }
}
