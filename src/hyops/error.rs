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
    /// A durable write of `path` failed (its temp file is removed; the previous content of
    /// `path`, if any, is intact).
    #[error("cannot write {path}: {source}")]
    Write {
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

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    /// The file an I/O error is about.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Io { path, .. } | Self::Write { path, .. } => Some(path),
            _ => None,
        }
    }

    /// True when the filesystem is full or the quota is exhausted (`ENOSPC`, `EDQUOT`).
    pub fn storage_full(&self) -> bool {
        match self {
            Self::Io { source, .. } | Self::Write { source, .. } => io_storage_full(source),
            _ => false,
        }
    }
}

/// True for `ENOSPC` and `EDQUOT`: the write needs space the filesystem does not have.
pub fn io_storage_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

pub type Result<T, E = HyopsError> = std::result::Result<T, E>;
