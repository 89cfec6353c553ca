//! The error type of the HyOps runtime-root layer. Messages that are part of the upstream
//! contract are reproduced verbatim; every other message names the file, field or value.
//! Knows nothing about Proxmox API calls or the planner.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing the HyOps runtime root.
#[derive(Debug, thiserror::Error)]
pub enum HyopsError {
    #[error("runtime root: --env and --root are mutually exclusive (env={env:?}, root={root})")]
    RootAndEnvBoth { env: String, root: PathBuf },
    #[error("runtime root: one of --env, --root or HYOPS_RUNTIME_ROOT is required")]
    NoRuntimeRoot,
    #[error("runtime root: --env value {0:?} is not a valid env name")]
    BadEnvName(String),
    #[error("runtime root: $HOME is not set, cannot resolve --env {0}")]
    NoHome(String),
    #[error("invalid state_instance {value:?}: must match ^[a-z0-9][a-z0-9_.-]{{0,63}}$")]
    BadStateInstance { value: String },
    #[error(
        "invalid module_ref {value:?}: expected <domain>/<...>/<name> with [A-Za-z0-9_.-] segments"
    )]
    BadModuleRef { value: String },
    #[error("invalid run id prefix {0:?}: expected one of apply, deploy, plan, validate, destroy, import, preflight, rebuild")]
    BadRunPrefix(String),
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {path}: {detail}")]
    Json { path: PathBuf, detail: String },
    #[error("{path}: expected a JSON object at the top level")]
    NotAnObject { path: PathBuf },
    /// A message fixed by the upstream contract, reproduced verbatim.
    #[error("{0}")]
    Contract(String),
    #[error("vault: {0}")]
    Vault(String),
    #[error("lock: {0}")]
    Lock(String),
    #[error("credentials: {0}")]
    Credentials(String),
}

impl HyopsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = HyopsError> = std::result::Result<T, E>;
