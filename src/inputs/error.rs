//! Errors of the inputs layer. The `Display` of every variant is the exact operator text the
//! upstream HyOps CLI prints after `ERR: `, so callers print it verbatim. Knows nothing about
//! where inputs come from or what consumes them.

use thiserror::Error;

/// The module this engine serves; every validation message is scoped to it.
pub const MODULE_REF: &str = "platform/onprem/platform-vm";

/// How a validation message reaches the operator (contract §1.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A `common.py` helper (`ModuleValidationError`): not wrapped by the validator registry.
    Helper,
    /// A plain `ValueError` raised by the module validator: wrapped as
    /// `validator failed for module_ref=platform/onprem/platform-vm: <msg>`.
    Validator,
    /// Raised by `validate_addressing_contract`, outside the validator registry and outside
    /// `resolve_module`'s wrapping: printed bare (`inputs.addressing.mode must be one of: …`).
    Addressing,
}

/// One failed validation rule: the rule's own message plus how it is wrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationFailure {
    pub kind: FailureKind,
    /// The rule's message exactly as the contract lists it (e.g. `inputs.tags must contain at least one tag`).
    pub message: String,
}

impl ValidationFailure {
    pub(crate) fn helper(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Helper,
            message: message.into(),
        }
    }
    pub(crate) fn validator(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Validator,
            message: message.into(),
        }
    }
    pub(crate) fn addressing(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Addressing,
            message: message.into(),
        }
    }

    /// The text after `input validation failed for platform/onprem/platform-vm: `.
    pub fn wrapped_text(&self) -> String {
        match self.kind {
            FailureKind::Validator => {
                format!(
                    "validator failed for module_ref={MODULE_REF}: {}",
                    self.message
                )
            }
            FailureKind::Helper | FailureKind::Addressing => self.message.clone(),
        }
    }

    /// The whole operator text, as `hyops` prints it after `ERR: `.
    pub fn operator_text(&self) -> String {
        match self.kind {
            FailureKind::Addressing => self.message.clone(),
            FailureKind::Helper | FailureKind::Validator => format!(
                "input validation failed for {MODULE_REF}: {}",
                self.wrapped_text()
            ),
        }
    }
}

/// Everything that can stop input resolution.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InputsError {
    /// A validator or addressing-contract rule failed.
    #[error("{}", .0.operator_text())]
    Validation(ValidationFailure),
    /// `inputs.preset_ref` set: this module's spec has no presets.
    #[error("{MODULE_REF}: inputs.preset_ref provided but spec.inputs.presets is not defined")]
    PresetRefUnsupported,
    /// The `--inputs` file could not be read or parsed (size, UTF-8, YAML).
    #[error("failed to load inputs file {path}: {reason}")]
    Overlay { path: String, reason: String },
    /// The resolved inputs of a driver request are not a mapping.
    #[error("driver request field inputs must be a mapping of resolved inputs, found {0}")]
    PreparedNotMapping(String),
    /// The `--inputs` file's top level is truthy but not a mapping (upstream's exact text).
    #[error("invalid YAML object: {0}")]
    NotAMapping(String),
    /// An error `hyops` raises while resolving the inputs (a state reference that cannot be
    /// read, `ssh_keys_from_init` without its readiness, `preset_ref` of the wrong type…),
    /// printed as is.
    #[error("{0}")]
    Resolve(String),
    /// Inputs `hyops` would accept but could not write to `inputs_resolved.json` (its
    /// `json.dumps` fails: timestamps, keys of mixed types): refused with the field named.
    #[error("{0}")]
    Unrecordable(String),
    /// A value hyops-pve cannot carry (an integer past 64 bits or past the field's own type,
    /// NaN, an infinity): refused with a range message, never replaced.
    #[error("{0}")]
    OutOfRange(String),
    /// `HYOPS_INPUTS_JSON` / `HYOPS_INPUT_*` problems (e.g. `HYOPS_INPUTS_JSON must be a JSON object`).
    #[error("{0}")]
    EnvOverride(String),
    /// Driver-time contract errors (bridge aliases, `build_image=true`), printed unwrapped.
    #[error("{0}")]
    Contract(String),
    /// A module other than `platform/onprem/platform-vm` was asked for.
    #[error("module '{0}' is not supported by hyops-pve (supported: {MODULE_REF})")]
    UnsupportedModule(String),
}

impl InputsError {
    /// The innermost message, without the `input validation failed …` / `validator failed …`
    /// wrapping (for tests, evidence and structured logs).
    pub fn message(&self) -> String {
        match self {
            InputsError::Validation(f) => f.message.clone(),
            InputsError::Overlay { reason, .. } => reason.clone(),
            InputsError::EnvOverride(m)
            | InputsError::Contract(m)
            | InputsError::Resolve(m)
            | InputsError::Unrecordable(m)
            | InputsError::OutOfRange(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The failed rule, when this is a validation error.
    pub fn validation(&self) -> Option<&ValidationFailure> {
        match self {
            InputsError::Validation(f) => Some(f),
            _ => None,
        }
    }
}

impl From<ValidationFailure> for InputsError {
    fn from(f: ValidationFailure) -> Self {
        InputsError::Validation(f)
    }
}
