//! Snippet storage and the guest's view of cloud-init, for the simulated SSH side.
//!
//! - Snippet files live per storage instance: a shared storage has one bucket, a per-node
//!   storage one bucket per node (PVE `storage.cfg` `shared`). Files are what node SSH (SFTP)
//!   wrote; only storages with `snippets` in their content can hold them.
//! - Paths as `pvesm path` reports them: `local` is `/var/lib/vz` (PVE's default `dir`
//!   storage), any other storage `/mnt/pve/<id>` (PVE's mount point for network storages).
//! - At start and at `PUT …/cloudinit`, PVE reads the `cicustom` volumes into the cloud-init
//!   drive (`QemuServer/Cloudinit.pm` `read_cloudinit_snippets_file`; a missing file fails
//!   with `unable to open file '<path>' - No such file or directory`), so the guest sees the
//!   content as it was then, not later edits.
//! - The accounts a guest accepts come from that user-data (cloud-init `cc_users_groups` and
//!   `cc_ssh`: each `users[]` entry's `ssh_authorized_keys`, top-level `ssh_authorized_keys`
//!   for the default user) or, without a `user=` snippet, from PVE's generated user-data
//!   (`ciuser` or the image default user, `sshkeys`).
//!
//! Pure data helpers; knows nothing about SSH transport or HTTP.

use std::collections::BTreeMap;

use super::model::{SimState, Vm};

/// The image's default cloud-init user (Ubuntu cloud images).
pub const DEFAULT_GUEST_USER: &str = "ubuntu";

/// The bucket key of storage `storage` as seen from `node`, when it can hold snippets there.
pub fn bucket(state: &SimState, storage: &str, node: &str) -> Option<String> {
    let s = state.cluster.storage_on(storage, node)?;
    if !s.content.iter().any(|c| c == "snippets") {
        return None;
    }
    Some(if s.shared {
        storage.to_string()
    } else {
        format!("{storage}@{node}")
    })
}

/// The filesystem root of a storage (`pvesm path` prefix).
pub fn storage_root(storage: &str) -> String {
    if storage == "local" {
        "/var/lib/vz".into()
    } else {
        format!("/mnt/pve/{storage}")
    }
}

/// `pvesm path <storage>:snippets/<file>`.
pub fn volume_path(storage: &str, file: &str) -> String {
    format!("{}/snippets/{file}", storage_root(storage))
}

/// Which bucket and file a path on `node` names: `<root>/snippets/<file>`.
pub fn path_to_bucket(state: &SimState, node: &str, path: &str) -> Option<(String, String)> {
    for s in &state.cluster.storages {
        let dir = format!("{}/snippets/", storage_root(&s.id));
        if let Some(file) = path.strip_prefix(&dir) {
            if file.is_empty() || file.contains('/') {
                return None;
            }
            return bucket(state, &s.id, node).map(|b| (b, file.to_string()));
        }
    }
    None
}

/// The snippets directory of a bucket-capable storage on `node`, if `path` is one.
pub fn dir_to_bucket(state: &SimState, node: &str, path: &str) -> Option<String> {
    let p = path.trim_end_matches('/');
    state.cluster.storages.iter().find_map(|s| {
        (p == format!("{}/snippets", storage_root(&s.id)))
            .then(|| bucket(state, &s.id, node))
            .flatten()
    })
}

/// `cicustom` volumes of a config map (`user`, `network`, `meta`, `vendor` → volume id).
pub fn cicustom_volumes(cicustom: &str) -> BTreeMap<String, String> {
    cicustom
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Read the `cicustom` snippet files of `config` (the values being baked) on `node`.
pub fn bake_custom(
    state: &SimState,
    node: &str,
    config: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let Some(cc) = config.get("cicustom") else {
        return Ok(out);
    };
    for (kind, volid) in cicustom_volumes(cc) {
        let (storage, name) = volid
            .split_once(':')
            .ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
        let file = name
            .strip_prefix("snippets/")
            .ok_or_else(|| format!("{volid} is not in the snippets directory"))?;
        let path = volume_path(storage, file);
        let content = bucket(state, storage, node)
            .and_then(|b| state.snippets.get(&b))
            .and_then(|files| files.get(file))
            .ok_or_else(|| format!("unable to open file '{path}' - No such file or directory"))?;
        out.insert(kind, content.clone());
    }
    Ok(out)
}

/// The (user, authorized keys) pairs a booted guest accepts.
pub fn guest_accounts(
    vm: &Vm,
    custom: Option<&BTreeMap<String, String>>,
) -> Vec<(String, Vec<String>)> {
    if let Some(user_data) = custom.and_then(|c| c.get("user")) {
        return accounts_from_user_data(user_data);
    }
    let baked = &vm.cloudinit_baked;
    let user = baked
        .get("ciuser")
        .cloned()
        .unwrap_or_else(|| DEFAULT_GUEST_USER.to_string());
    let keys: Vec<String> = baked
        .get("sshkeys")
        .map(|k| {
            percent_encoding::percent_decode_str(k)
                .decode_utf8_lossy()
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    vec![(user, keys)]
}

/// Accounts from `#cloud-config` user-data, read as cloud-init reads it (PyYAML `safe_load`,
/// YAML 1.1).
pub fn accounts_from_user_data(text: &str) -> Vec<(String, Vec<String>)> {
    use crate::yaml::PyValue;
    let Ok(PyValue::Dict(doc)) = crate::yaml::safe_load(text) else {
        return Vec::new();
    };
    let str_list = |v: Option<&PyValue>| -> Vec<String> {
        match v {
            Some(PyValue::List(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(|s| s.trim().to_string()))
                .collect(),
            Some(PyValue::Str(s)) => vec![s.trim().to_string()],
            _ => Vec::new(),
        }
    };
    let top_keys = str_list(doc.get("ssh_authorized_keys"));
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    match doc.get("users") {
        Some(PyValue::List(users)) => {
            for u in users {
                match u {
                    PyValue::Str(s) if s == "default" => {
                        out.push((DEFAULT_GUEST_USER.into(), top_keys.clone()))
                    }
                    PyValue::Dict(user) => {
                        if let Some(name) = user.get("name").and_then(PyValue::as_str) {
                            out.push((name.to_string(), str_list(user.get("ssh_authorized_keys"))));
                        }
                    }
                    _ => {}
                }
            }
        }
        // No `users:` key: cloud-init configures the default user.
        _ => out.push((DEFAULT_GUEST_USER.into(), top_keys)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::ClusterDescription;

    #[test]
    fn local_is_per_node_and_has_the_pve_default_path() {
        let s = SimState::from_cluster(ClusterDescription::default_cluster());
        assert_eq!(bucket(&s, "local", "pve2").as_deref(), Some("local@pve2"));
        assert_eq!(bucket(&s, "local-lvm", "pve2"), None);
        assert_eq!(
            volume_path("local", "a.yaml"),
            "/var/lib/vz/snippets/a.yaml"
        );
        assert_eq!(
            path_to_bucket(&s, "pve1", "/var/lib/vz/snippets/a.yaml"),
            Some(("local@pve1".into(), "a.yaml".into()))
        );
        assert_eq!(path_to_bucket(&s, "pve1", "/etc/passwd"), None);
    }

    #[test]
    fn users_block_accounts_are_read_from_generated_user_data() {
        let ud = crate::plan::desired::generated_user_data(
            "app-01",
            "lab",
            "opsadmin",
            &["ssh-ed25519 AAAA k".into()],
            None,
        );
        assert_eq!(
            accounts_from_user_data(&ud),
            vec![(
                "opsadmin".to_string(),
                vec!["ssh-ed25519 AAAA k".to_string()]
            )]
        );
    }

    #[test]
    fn a_missing_snippet_fails_the_bake_with_pves_text() {
        let s = SimState::from_cluster(ClusterDescription::default_cluster());
        let cfg = BTreeMap::from([(
            "cicustom".to_string(),
            "user=local:snippets/x.yaml".to_string(),
        )]);
        assert_eq!(
            bake_custom(&s, "pve1", &cfg).unwrap_err(),
            "unable to open file '/var/lib/vz/snippets/x.yaml' - No such file or directory"
        );
    }
}
