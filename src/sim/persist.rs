//! Saving and loading the simulated cluster state as JSON, with an atomic write (temp file in
//! the same directory, then rename). Knows nothing about the running server.

use super::model::SimState;
use std::path::Path;

/// Persistence errors, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("simulator state {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("simulator state {path}: invalid JSON: {msg}")]
    Json { path: String, msg: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> PersistError {
    PersistError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

impl SimState {
    /// Write the state to `path` atomically.
    pub fn save_to(&self, path: &Path) -> Result<(), PersistError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| PersistError::Json {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }

    /// Read a state written by [`SimState::save_to`].
    pub fn load_from(path: &Path) -> Result<Self, PersistError> {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        serde_json::from_str(&text).map_err(|e| PersistError::Json {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::ClusterDescription;

    #[test]
    fn state_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let s = SimState::from_cluster(ClusterDescription::default_cluster());
        s.save_to(&p).unwrap();
        assert_eq!(SimState::load_from(&p).unwrap(), s);
        assert!(SimState::load_from(&dir.path().join("missing.json")).is_err());
    }
}
