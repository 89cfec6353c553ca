//! Host keys, trust on first use: a `known_hosts` file owned by the engine (OpenSSH format, so
//! `ssh -o UserKnownHostsFile=<file>` can use it too). Each line is
//! `[host]:port <type> <base64> hyops-pve:<identity>` where the identity names the machine the
//! key was learned from (`vmid=123,uuid=…` for a VM, empty for a bastion or node).
//!
//! Rules:
//! - an unknown host is learned (first use);
//! - a known key is accepted;
//! - a different key from a host whose recorded VM identity differs from the one now expected
//!   (the engine re-created the VM: new VMID or new SMBIOS UUID) replaces the old entry;
//! - any other different key is an error naming the host and both fingerprints.
//!
//! Knows nothing about the readiness gate or HyOps paths (the caller gives the file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::{HashAlg, PublicKey};

/// What a check concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// The key was already recorded.
    Known,
    /// First use: the key is now recorded.
    Learned,
    /// The VM was re-created by the engine; its old entry was replaced.
    Replaced { old_identity: String },
}

/// Host key failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error("host key mismatch for {host}: it presented {presented} but {file} records {recorded}{for_identity}. This is either a re-installed host or a man-in-the-middle; if the host was re-installed on purpose, remove its line from {file} and run again")]
    Mismatch {
        host: String,
        presented: String,
        recorded: String,
        file: String,
        for_identity: String,
    },
    #[error("known_hosts file {file}: {detail}")]
    Io { file: String, detail: String },
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    host: String,
    key: String,
    identity: String,
}

impl Entry {
    fn line(&self) -> String {
        format!("{} {} hyops-pve:{}", self.host, self.key, self.identity)
    }
}

/// The engine's known_hosts file.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
    /// Serialises read-modify-write across concurrent probes of this process.
    lock: Mutex<()>,
}

/// The known_hosts host token: `host` for port 22, `[host]:port` otherwise (OpenSSH).
pub fn host_token(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:…` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The `<type> <base64>` form of a key (no comment).
pub fn key_text(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh()
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn fingerprint_of_text(text: &str) -> String {
    PublicKey::from_openssh(text)
        .map(|k| fingerprint(&k))
        .unwrap_or_else(|_| "<unparsable key>".into())
}

impl KnownHosts {
    /// A store at `path` (created on first write, mode 0600, parent 0700).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, detail: impl ToString) -> HostKeyError {
        HostKeyError::Io {
            file: self.path.display().to_string(),
            detail: detail.to_string(),
        }
    }

    fn read(&self) -> Result<Vec<Entry>, HostKeyError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_err(e)),
        };
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let host = parts.next()?.to_string();
                let kind = parts.next()?;
                let b64 = parts.next()?;
                let identity = parts
                    .next()
                    .and_then(|c| c.strip_prefix("hyops-pve:"))
                    .unwrap_or("")
                    .to_string();
                Some(Entry {
                    host,
                    key: format!("{kind} {b64}"),
                    identity,
                })
            })
            .collect())
    }

    fn write(&self, entries: &[Entry]) -> Result<(), HostKeyError> {
        let mut text = String::new();
        for e in entries {
            text.push_str(&e.line());
            text.push('\n');
        }
        super::files::write_private_atomic(&self.path, text.as_bytes()).map_err(|e| self.io_err(e))
    }

    /// Check `key` presented by `host:port`. `identity` is the VM the engine expects there
    /// (`vmid=…,uuid=…`), or `""` for a bastion or node.
    pub fn check(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
        identity: &str,
    ) -> Result<HostKeyVerdict, HostKeyError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let token = host_token(host, port);
        let presented = key_text(key);
        let mut entries = self.read()?;
        let for_host: Vec<&Entry> = entries.iter().filter(|e| e.host == token).collect();
        if for_host.iter().any(|e| e.key == presented) {
            return Ok(HostKeyVerdict::Known);
        }
        if for_host.is_empty() {
            entries.push(Entry {
                host: token,
                key: presented,
                identity: identity.to_string(),
            });
            self.write(&entries)?;
            return Ok(HostKeyVerdict::Learned);
        }
        let recreated = !identity.is_empty() && for_host.iter().all(|e| e.identity != identity);
        if recreated {
            let old: BTreeSet<String> = for_host.iter().map(|e| e.identity.clone()).collect();
            entries.retain(|e| e.host != token);
            entries.push(Entry {
                host: token,
                key: presented,
                identity: identity.to_string(),
            });
            self.write(&entries)?;
            return Ok(HostKeyVerdict::Replaced {
                old_identity: old.into_iter().collect::<Vec<_>>().join(" "),
            });
        }
        let recorded: Vec<String> = for_host
            .iter()
            .map(|e| fingerprint_of_text(&e.key))
            .collect();
        Err(HostKeyError::Mismatch {
            host: token,
            presented: fingerprint(key),
            recorded: recorded.join(", "),
            file: self.path.display().to_string(),
            for_identity: if identity.is_empty() {
                String::new()
            } else {
                format!(" for the same VM ({identity})")
            },
        })
    }

    /// Forget every entry recorded for one of `vmids` (VMs the engine destroyed). Returns
    /// how many lines were removed.
    pub fn forget_vmids(&self, vmids: &[u32]) -> Result<usize, HostKeyError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = self.read()?;
        let before = entries.len();
        entries.retain(|e| {
            !e.identity
                .split(',')
                .filter_map(|p| p.strip_prefix("vmid="))
                .any(|v| v.parse::<u32>().is_ok_and(|v| vmids.contains(&v)))
        });
        let removed = before - entries.len();
        if removed > 0 {
            self.write(&entries)?;
        }
        Ok(removed)
    }
}

/// The identity a VM's host key is recorded under: `vmid=<id>[,uuid=<smbios uuid>]`.
pub fn vm_identity(vmid: u32, smbios_uuid: Option<&str>) -> String {
    match smbios_uuid.filter(|u| !u.is_empty()) {
        Some(u) => format!("vmid={vmid},uuid={u}"),
        None => format!("vmid={vmid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::PrivateKey;

    fn key(seed: u8) -> PublicKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
            .public_key()
            .clone()
    }

    fn store() -> (tempfile::TempDir, KnownHosts) {
        let d = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(d.path().join("ssh/known_hosts"));
        (d, kh)
    }

    #[test]
    fn first_use_learns_then_the_same_key_is_known() {
        let (_d, kh) = store();
        assert_eq!(
            kh.check("10.0.0.5", 22, &key(1), "vmid=101").unwrap(),
            HostKeyVerdict::Learned
        );
        assert_eq!(
            kh.check("10.0.0.5", 22, &key(1), "vmid=101").unwrap(),
            HostKeyVerdict::Known
        );
        let text = std::fs::read_to_string(kh.path()).unwrap();
        assert!(text.starts_with("10.0.0.5 ssh-ed25519 "), "{text}");
        assert!(text.trim_end().ends_with("hyops-pve:vmid=101"), "{text}");
    }

    #[test]
    fn a_changed_key_for_the_same_vm_is_an_error_naming_host_and_fingerprints() {
        let (_d, kh) = store();
        kh.check("10.0.0.5", 22, &key(1), "vmid=101").unwrap();
        let e = kh
            .check("10.0.0.5", 22, &key(2), "vmid=101")
            .unwrap_err()
            .to_string();
        assert!(e.contains("host key mismatch for 10.0.0.5"), "{e}");
        assert!(e.contains(&fingerprint(&key(2))), "{e}");
        assert!(e.contains(&fingerprint(&key(1))), "{e}");
        // Nothing was replaced.
        assert_eq!(
            kh.check("10.0.0.5", 22, &key(1), "vmid=101").unwrap(),
            HostKeyVerdict::Known
        );
    }

    #[test]
    fn a_recreated_vm_replaces_its_old_entry() {
        let (_d, kh) = store();
        kh.check("10.0.0.5", 22, &key(1), "vmid=101").unwrap();
        assert_eq!(
            kh.check("10.0.0.5", 22, &key(2), "vmid=105").unwrap(),
            HostKeyVerdict::Replaced {
                old_identity: "vmid=101".into()
            }
        );
        assert_eq!(
            kh.check("10.0.0.5", 22, &key(2), "vmid=105").unwrap(),
            HostKeyVerdict::Known
        );
        let text = std::fs::read_to_string(kh.path()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn a_bastion_key_change_is_never_replaced() {
        let (_d, kh) = store();
        kh.check("192.0.2.10", 2222, &key(1), "").unwrap();
        let e = kh.check("192.0.2.10", 2222, &key(2), "").unwrap_err();
        assert!(e.to_string().contains("[192.0.2.10]:2222"), "{e}");
    }

    #[test]
    fn ports_are_distinct_hosts() {
        let (_d, kh) = store();
        kh.check("127.0.0.1", 2201, &key(1), "").unwrap();
        assert_eq!(
            kh.check("127.0.0.1", 2202, &key(2), "").unwrap(),
            HostKeyVerdict::Learned
        );
    }

    #[test]
    fn forgetting_a_destroyed_vm_removes_only_its_lines() {
        let (_d, kh) = store();
        kh.check("10.0.0.5", 22, &key(1), "vmid=101,uuid=a")
            .unwrap();
        kh.check("10.0.0.6", 22, &key(2), "vmid=102").unwrap();
        kh.check("bastion", 22, &key(3), "").unwrap();
        assert_eq!(kh.forget_vmids(&[101]).unwrap(), 1);
        assert_eq!(
            kh.check("10.0.0.5", 22, &key(9), "vmid=101,uuid=a")
                .unwrap(),
            HostKeyVerdict::Learned
        );
        assert_eq!(
            kh.check("10.0.0.6", 22, &key(2), "vmid=102").unwrap(),
            HostKeyVerdict::Known
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, kh) = store();
        kh.check("h", 22, &key(1), "").unwrap();
        let mode = std::fs::metadata(kh.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
