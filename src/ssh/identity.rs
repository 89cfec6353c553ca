//! Who we are when we authenticate: an explicit private key file, or (like `ssh` with no
//! `-i`) the ssh-agent plus the default identity files that exist. Keys are loaded once and
//! never printed; only their paths and fingerprints reach evidence. Knows nothing about
//! targets or HyOps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::PrivateKey;

/// One way to prove who we are.
#[derive(Clone)]
pub enum AuthSource {
    /// A private key loaded from a file.
    KeyFile { path: PathBuf, key: Arc<PrivateKey> },
    /// The ssh-agent at this socket.
    Agent { socket: PathBuf },
}

impl std::fmt::Debug for AuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthSource::KeyFile { path, key } => write!(
                f,
                "KeyFile({}, {})",
                path.display(),
                super::known_hosts::fingerprint(key.public_key())
            ),
            AuthSource::Agent { socket } => write!(f, "Agent({})", socket.display()),
        }
    }
}

/// Failures loading identities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("file not found: {0}")]
    NotFound(String),
    #[error("private key {path} is passphrase-protected; load it into ssh-agent (ssh-add {path}) and unset the key file, or use an unencrypted deploy key")]
    Encrypted { path: String },
    #[error("cannot read private key {path}: {detail}")]
    Unreadable { path: String, detail: String },
    #[error("no SSH identity available: set an ssh_private_key_file, start an ssh-agent (SSH_AUTH_SOCK), or create ~/.ssh/id_ed25519")]
    None,
}

/// The identities to try, in order.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    pub sources: Vec<AuthSource>,
    /// The explicit key file, when one was configured (shown as `-i` in evidence).
    pub key_file: Option<PathBuf>,
}

/// Load one private key file (unencrypted OpenSSH or PEM).
pub fn load_key_file(path: &Path) -> Result<Arc<PrivateKey>, IdentityError> {
    if !path.exists() {
        return Err(IdentityError::NotFound(path.display().to_string()));
    }
    // A key file is a few KB; read it with a bound (a device or FIFO reports 0 bytes).
    let unreadable = |detail: String| IdentityError::Unreadable {
        path: path.display().to_string(),
        detail,
    };
    let text = crate::fsread::read_text_at_most(path, 1 << 20).map_err(unreadable)?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(k) => Ok(Arc::new(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(IdentityError::Encrypted {
            path: path.display().to_string(),
        }),
        Err(e) => Err(IdentityError::Unreadable {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

impl Identities {
    /// Exactly this key file (`-i path`).
    pub fn key_file(path: &Path) -> Result<Self, IdentityError> {
        let key = load_key_file(path)?;
        Ok(Self {
            sources: vec![AuthSource::KeyFile {
                path: path.to_path_buf(),
                key,
            }],
            key_file: Some(path.to_path_buf()),
        })
    }

    /// What `ssh` uses without `-i`: the agent (when `agent_socket` is set and exists), then
    /// each of `default_files` that exists and loads (unloadable ones are skipped, as `ssh`
    /// skips them in batch mode).
    pub fn defaults(agent_socket: Option<PathBuf>, default_files: &[PathBuf]) -> Self {
        let mut sources = Vec::new();
        if let Some(sock) = agent_socket.filter(|s| s.exists()) {
            sources.push(AuthSource::Agent { socket: sock });
        }
        for f in default_files {
            match load_key_file(f) {
                Ok(key) => sources.push(AuthSource::KeyFile {
                    path: f.clone(),
                    key,
                }),
                Err(e) => {
                    tracing::debug!(file = %f.display(), error = %e, "skipping default identity")
                }
            }
        }
        Self {
            sources,
            key_file: None,
        }
    }

    /// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` under `home`.
    pub fn default_files(home: &Path) -> Vec<PathBuf> {
        ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| home.join(".ssh").join(n))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::ssh_key::LineEnding;

    #[test]
    fn a_missing_key_file_says_file_not_found() {
        let e = Identities::key_file(Path::new("/nonexistent/key")).unwrap_err();
        assert_eq!(e.to_string(), "file not found: /nonexistent/key");
    }

    #[test]
    fn an_unencrypted_key_file_loads() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
        std::fs::write(&p, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let ids = Identities::key_file(&p).unwrap();
        assert_eq!(ids.sources.len(), 1);
        assert_eq!(ids.key_file.as_deref(), Some(p.as_path()));
    }

    #[test]
    fn defaults_skip_missing_files_and_agents() {
        let d = tempfile::tempdir().unwrap();
        let ids = Identities::defaults(
            Some(d.path().join("no-agent.sock")),
            &Identities::default_files(d.path()),
        );
        assert!(ids.is_empty());
    }
}
