//! Inputs: spec defaults, overlay merge, env overrides, validation, naming and bridge aliases
//! for `platform/onprem/platform-vm`. Produces a typed [`model::ModuleInputs`]. Knows nothing
//! about Proxmox API calls, HyOps state files or the plan.
//!
//! The one entry point is [`resolve_inputs`]. It runs, in order (contract §1.2, §1.8, §1.15):
//! 1. spec defaults ([`spec_defaults`]);
//! 2. the `--inputs` overlay ([`merge_operator_inputs`]: mappings recurse, lists replace, a
//!    blank string never erases a non-blank one); a file whose top level has an `inputs:`
//!    mapping is unwrapped;
//! 3. env overrides ([`apply_env_overrides`]: `HYOPS_INPUTS_JSON`, `HYOPS_INPUT_<path>`),
//!    read from the request's env map, never from the process;
//! 4. `preset_ref` rejection; field aliases folded (`proxmox_node`, `storage_pool`,
//!    `storage_snippets`);
//! 5. the addressing contract ([`validate_addressing_contract`], every command);
//! 6. the module validator ([`validate_platform_vm`]) and the engine-extension rules
//!    ([`validate_engine_extensions`]) — both skipped for `destroy`;
//! 7. for apply/deploy/plan/validate/preflight/rebuild: bridge alias rewrite
//!    ([`rewrite_bridge_aliases`]) and the `build_image=true` contract error;
//! 8. the typed model ([`build_model`], lenient so destroy always gets keys, names, VMIDs).
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
//! - unknown per-VM keys are dropped (as upstream) but reported as warnings;
//! - in single-VM mode, non-empty module `interfaces` are validated with the NIC rules.
//!
//! Not here: the NetBox reachability probe, `ssh_keys_from_init` (needs the runtime root),
//! VM-set guards and template resolution (they need state).

pub mod aliases;
pub mod build;
pub mod defaults;
pub mod error;
pub mod model;
pub mod naming;
pub mod overlay;
mod pyval;
pub mod sanitize;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{Map, Value};

pub use aliases::{fold_field_aliases, resolve_bridge_alias, rewrite_bridge_aliases};
pub use build::{build_model, BuildContext};
pub use defaults::spec_defaults;
pub use error::{FailureKind, InputsError, ValidationFailure, MODULE_REF};
pub use model::*;
pub use naming::{name_prefix, physical_name};
pub use overlay::{
    apply_env_overrides, load_overlay_file, merge_operator_inputs, parse_overlay_yaml,
};
pub use sanitize::sanitize_rerun_inputs;
pub use validate::{
    validate_addressing_contract, validate_engine_extensions, validate_platform_vm, NIC_MODELS,
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

/// Everything [`resolve_inputs`] needs; nothing is read from the process environment.
#[derive(Clone, Debug)]
pub struct ResolveRequest {
    /// The `--inputs` file, if any.
    pub overlay_path: Option<PathBuf>,
    pub command: LifecycleCommand,
    /// The runtime env name (`HYOPS_ENV`, or `--env` when that is unset). When `None`, the
    /// `HYOPS_ENV` entry of `env` is used.
    pub runtime_env: Option<String>,
    /// The environment variables to honour (`HYOPS_INPUTS_JSON`, `HYOPS_INPUT_*`, `HYOPS_ENV`).
    pub env: BTreeMap<String, String>,
    /// The credentials' `network_bridge` (default bridge of the single-VM NIC; `vmbr0` if unset).
    pub credentials_network_bridge: Option<String>,
}

impl ResolveRequest {
    /// A request with no overlay, no env and no credentials bridge.
    pub fn new(command: LifecycleCommand) -> Self {
        Self {
            overlay_path: None,
            command,
            runtime_env: None,
            env: BTreeMap::new(),
            credentials_network_bridge: None,
        }
    }

    fn effective_env(&self) -> Option<String> {
        self.runtime_env
            .clone()
            .or_else(|| self.env.get("HYOPS_ENV").cloned())
            .map(|s| s.trim().to_string())
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
    /// Operator-facing warnings, in the order they arose.
    pub warnings: Vec<String>,
}

/// Resolves the inputs of `platform/onprem/platform-vm` for one command (see module docs).
pub fn resolve_inputs(req: &ResolveRequest) -> Result<ResolvedInputs, InputsError> {
    let overlay = match &req.overlay_path {
        Some(path) => load_overlay_file(path)?,
        None => Value::Object(Map::new()),
    };
    resolve_inputs_with_overlay(req, &overlay)
}

/// [`resolve_inputs`] with an already-parsed overlay (`req.overlay_path` is ignored).
pub fn resolve_inputs_with_overlay(
    req: &ResolveRequest,
    overlay: &Value,
) -> Result<ResolvedInputs, InputsError> {
    let mut inputs = spec_defaults();
    merge_operator_inputs(&mut inputs, overlay);
    apply_env_overrides(&mut inputs, &req.env)?;
    if let Value::Object(data) = &inputs {
        if pyval::truthy(data.get("preset_ref")) {
            return Err(InputsError::PresetRefUnsupported);
        }
    }
    let mut warnings = fold_field_aliases(&mut inputs);

    validate_addressing_contract(&inputs)?;
    if req.command.runs_validator() {
        validate_platform_vm(&inputs)?;
        validate_engine_extensions(&inputs)?;
    }

    let env = req.effective_env();
    if req.command.runs_contract() {
        let rewrites = rewrite_bridge_aliases(&mut inputs, env.as_deref().unwrap_or(""))
            .map_err(InputsError::Contract)?;
        warnings.extend(rewrites);
        if let Value::Object(data) = &inputs {
            if matches!(data.get("build_image"), Some(Value::Bool(true))) {
                return Err(InputsError::Contract(BUILD_IMAGE_UNSUPPORTED.to_string()));
            }
        }
    }

    let (model, build_warnings) = build_model(
        &inputs,
        BuildContext {
            env: env.as_deref(),
            credentials_network_bridge: req.credentials_network_bridge.as_deref(),
        },
    );
    warnings.extend(build_warnings);
    Ok(ResolvedInputs {
        model,
        resolved_json: inputs,
        warnings,
    })
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
