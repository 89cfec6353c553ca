//! Cloud-init snippet delivery over node SSH (SFTP), as the bpg provider does for upstream's
//! `proxmox_virtual_environment_file` resources, but content-addressed: the file name carries
//! the content hash ([`crate::plan::desired::snippet_file_name`]), so
//! - a file that is already there is never written again (a re-apply writes nothing),
//! - a changed content is a new file and a changed `cicustom`, which the plan shows and the
//!   executor applies in place (config write, then cloud-init regenerate on a running VM),
//! - files no VM points at any more are removed after the apply, and all of a VM's files on
//!   destroy.
//!
//! The snippets directory of a storage is asked from the node (`pvesm path
//! <storage>:snippets/<probe>`), so `dir`, NFS, CephFS storages all work. Uploads are
//! atomic: a temporary name, then `rename` (which never overwrites). Knows nothing about
//! Proxmox API calls or HyOps state.

use std::collections::{BTreeMap, BTreeSet};

use super::client::SshSession;
use super::node::{NodeSsh, NodeSshError};
use crate::plan::desired::{is_snippet_file_of, SnippetFile};

/// What a sync or cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnippetReport {
    /// `node:storage:file` written.
    pub uploaded: Vec<String>,
    /// Files that were already in place.
    pub present: usize,
    /// `node:storage:file` removed.
    pub removed: Vec<String>,
}

/// Snippet failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnippetError {
    #[error(transparent)]
    Node(#[from] NodeSshError),
    #[error("snippets storage id '{storage}' is not a valid Proxmox storage id (pve-storage-id: [a-z][a-z0-9._-]*)")]
    BadStorage { storage: String },
    #[error("node {node}: SFTP on the snippets directory {dir} of storage '{storage}' failed: {detail}. The storage must have content type 'snippets' enabled (pvesm set {storage} --content ...,snippets) and {user} must be able to write there")]
    Sftp {
        node: String,
        storage: String,
        dir: String,
        user: String,
        detail: String,
    },
    #[error("cannot tell which snippet files other VMs of the same name still use ({0}); nothing was removed")]
    Namesakes(String),
}

/// `pve-storage-id`: `[a-z][a-z0-9\-_.]*`.
fn valid_storage_id(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_lowercase())
        && c.all(|ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_' | '.')
        })
}

/// The snippets directory of `storage` on `node`.
pub async fn snippets_dir(
    ssh: &NodeSsh,
    node: &str,
    storage: &str,
) -> Result<String, SnippetError> {
    if !valid_storage_id(storage) {
        return Err(SnippetError::BadStorage {
            storage: storage.to_string(),
        });
    }
    let out = ssh
        .run(
            node,
            &format!("pvesm path {storage}:snippets/hyops-pve-probe.yaml"),
        )
        .await?;
    let path = out.stdout.trim();
    match path.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() => Ok(dir.to_string()),
        _ => Err(SnippetError::Node(NodeSshError::Other {
            node: node.to_string(),
            detail: format!("`pvesm path` gave no path for storage '{storage}': {path:?}"),
        })),
    }
}

/// Upload every file in `wanted` (node → files) that is not already on its node.
pub async fn sync(
    ssh: &NodeSsh,
    wanted: &BTreeMap<String, Vec<SnippetFile>>,
) -> Result<SnippetReport, SnippetError> {
    let mut report = SnippetReport::default();
    for (node, files) in wanted {
        let mut by_storage: BTreeMap<&str, Vec<&SnippetFile>> = BTreeMap::new();
        for f in files {
            by_storage.entry(f.storage.as_str()).or_default().push(f);
        }
        for (storage, files) in by_storage {
            let dir = snippets_dir(ssh, node, storage).await?;
            let session = ssh.session(node).await?;
            let (uploaded, present) =
                upload_into(&session, &dir, &files)
                    .await
                    .map_err(|detail| SnippetError::Sftp {
                        node: node.clone(),
                        storage: storage.to_string(),
                        dir: dir.clone(),
                        user: ssh.target().user.clone(),
                        detail,
                    })?;
            report.present += present;
            report.uploaded.extend(
                uploaded
                    .into_iter()
                    .map(|f| format!("{node}:{storage}:{f}")),
            );
        }
    }
    Ok(report)
}

/// Upload `files` into the directory `dir` over SFTP on `session`, skipping files that are
/// already there. Returns (uploaded file names, files already present).
pub async fn upload_into(
    session: &SshSession,
    dir: &str,
    files: &[&SnippetFile],
) -> Result<(Vec<String>, usize), String> {
    let sftp = session
        .sftp(std::time::Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let existing = list(&sftp, dir).await?;
    let mut done = BTreeSet::new();
    let mut uploaded = Vec::new();
    let mut present = 0;
    for f in files {
        if existing.contains(&f.file) || !done.insert(f.file.clone()) {
            present += 1;
            continue;
        }
        let tmp = format!("{dir}/.{}.tmp-{}", f.file, std::process::id());
        let dest = format!("{dir}/{}", f.file);
        write_new(&sftp, &tmp, f.content.as_bytes())
            .await
            .map_err(|e| format!("write {tmp}: {e}"))?;
        if let Err(e) = sftp.rename(&tmp, &dest).await {
            let _ = sftp.remove_file(&tmp).await;
            // Another run may have put the same content there first (same name, same
            // content): that is success.
            if !list(&sftp, dir).await?.contains(&f.file) {
                return Err(format!("rename {tmp} -> {dest}: {e}"));
            }
        }
        uploaded.push(f.file.clone());
    }
    let _ = sftp.close().await;
    Ok((uploaded, present))
}

/// Remove, in `dir` on `session`, the snippet files of the VMs named `names` that are not in
/// `keep`. Returns the removed file names.
pub async fn remove_in(
    session: &SshSession,
    dir: &str,
    names: &BTreeSet<String>,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let sftp = session
        .sftp(std::time::Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let mut removed = Vec::new();
    for file in list(&sftp, dir).await? {
        if keep.contains(&file) || !names.iter().any(|n| is_snippet_file_of(n, &file)) {
            continue;
        }
        let path = format!("{dir}/{file}");
        sftp.remove_file(&path)
            .await
            .map_err(|e| format!("remove {path}: {e}"))?;
        removed.push(file);
    }
    let _ = sftp.close().await;
    Ok(removed)
}

/// Create (or truncate) `path` with mode 0640 and write `data`.
async fn write_new(
    sftp: &russh_sftp::client::SftpSession,
    path: &str,
    data: &[u8],
) -> Result<(), String> {
    use russh_sftp::protocol::{FileAttributes, OpenFlags};
    use tokio::io::AsyncWriteExt;
    let mut attrs = FileAttributes::empty();
    attrs.permissions = Some(0o640);
    let mut f = sftp
        .open_with_flags_and_attributes(
            path,
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
            attrs,
        )
        .await
        .map_err(|e| e.to_string())?;
    f.write_all(data).await.map_err(|e| e.to_string())?;
    f.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn list(
    sftp: &russh_sftp::client::SftpSession,
    dir: &str,
) -> Result<BTreeSet<String>, String> {
    let rd = sftp
        .read_dir(dir)
        .await
        .map_err(|e| format!("list {dir}: {e}"))?;
    Ok(rd.map(|e| e.file_name()).collect())
}

/// Remove the snippet files of the VMs named in `owners` (node → storage → physical names)
/// that are not in `keep` (file names).
/// Whether any file [`remove_stale`] would consider exists (files of `owners`' VMs not in
/// `keep`): lets a caller skip costlier checks when there is nothing to remove.
pub async fn any_stale(
    ssh: &NodeSsh,
    owners: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    keep: &BTreeSet<String>,
) -> Result<bool, SnippetError> {
    for (node, storages) in owners {
        for (storage, names) in storages {
            let dir = snippets_dir(ssh, node, storage).await?;
            let session = ssh.session(node).await?;
            let sftp_err = |detail: String| SnippetError::Sftp {
                node: node.clone(),
                storage: storage.clone(),
                dir: dir.clone(),
                user: ssh.target().user.clone(),
                detail,
            };
            let sftp = session
                .sftp(std::time::Duration::from_secs(30))
                .await
                .map_err(|e| sftp_err(e.to_string()))?;
            let files = list(&sftp, &dir).await.map_err(sftp_err)?;
            let _ = sftp.close().await;
            if files
                .iter()
                .any(|f| !keep.contains(f) && names.iter().any(|n| is_snippet_file_of(n, f)))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

pub async fn remove_stale(
    ssh: &NodeSsh,
    owners: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    keep: &BTreeSet<String>,
) -> Result<SnippetReport, SnippetError> {
    let mut report = SnippetReport::default();
    for (node, storages) in owners {
        for (storage, names) in storages {
            let dir = snippets_dir(ssh, node, storage).await?;
            let session = ssh.session(node).await?;
            let removed = remove_in(&session, &dir, names, keep)
                .await
                .map_err(|detail| SnippetError::Sftp {
                    node: node.clone(),
                    storage: storage.clone(),
                    dir: dir.clone(),
                    user: ssh.target().user.clone(),
                    detail,
                })?;
            report
                .removed
                .extend(removed.into_iter().map(|f| format!("{node}:{storage}:{f}")));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_ids_follow_pve_storage_id() {
        assert!(valid_storage_id("local"));
        assert!(valid_storage_id("nfs-snip.1"));
        assert!(!valid_storage_id("Local"));
        assert!(!valid_storage_id("local; rm -rf /"));
        assert!(!valid_storage_id(""));
    }
}
