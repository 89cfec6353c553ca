//! Seeding a ready runtime root the way `hyops init proxmox` leaves it: the credentials
//! tfvars (0600), optionally the token secret in the runtime vault instead, and
//! `meta/proxmox.ready.json`. For test fixtures and the simulator; knows nothing about
//! Proxmox API calls.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use super::error::Result;
use super::fsio::{write_json_atomic, write_text_atomic};
use super::paths::RuntimeRoot;
use super::runid::{new_run_id, utc_now, RunPrefix};
use super::vault::write_vault_env;
use crate::secret::Secret;

/// What to write. `Default` gives the `hyops init proxmox` template defaults.
#[derive(Debug, Clone)]
pub struct ReadyRootSeed {
    /// `https://<api_ip>:<port>/api2/json`.
    pub url: String,
    pub token_id: String,
    pub token_secret: Secret,
    pub node: String,
    pub skip_tls: bool,
    pub ca_file: Option<PathBuf>,
    /// Written as `proxmox_tls_fingerprint` when set.
    pub tls_fingerprint: Option<String>,
    /// `runtime.api_ip` of the readiness marker.
    pub api_ip: String,
    pub storage_vm: String,
    pub storage_iso: String,
    pub storage_snippets: String,
    pub bridge: String,
    pub ssh_username: String,
    pub ssh_key: Option<PathBuf>,
    pub ssh_public_key: String,
    /// When set, the token secret goes into `vault/bootstrap.vault.env` (encrypted with
    /// this password) and not into the tfvars.
    pub vault_password: Option<Secret>,
}

impl Default for ReadyRootSeed {
    fn default() -> Self {
        Self {
            url: "https://pve.example.local:8006/api2/json".into(),
            token_id: "automation@pam!infra-token".into(),
            token_secret: Secret::default(),
            node: "pve".into(),
            skip_tls: false,
            ca_file: None,
            tls_fingerprint: None,
            api_ip: "pve.example.local".into(),
            storage_vm: "local-lvm".into(),
            storage_iso: "local".into(),
            storage_snippets: "local".into(),
            bridge: "vmbr0".into(),
            ssh_username: "root".into(),
            ssh_key: None,
            ssh_public_key: String::new(),
            vault_password: None,
        }
    }
}

fn quote(v: &str) -> String {
    format!(
        "\"{}\"",
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// Write the tfvars, the vault (when a password is given) and the readiness marker.
pub fn seed_ready_root(root: &RuntimeRoot, seed: &ReadyRootSeed) -> Result<()> {
    let mut lines = vec![
        format!("proxmox_url = {}", quote(&seed.url)),
        format!("proxmox_token_id = {}", quote(&seed.token_id)),
    ];
    if seed.vault_password.is_none() {
        lines.push(format!(
            "proxmox_token_secret = {}",
            quote(seed.token_secret.expose())
        ));
    }
    lines.push(format!("proxmox_node = {}", quote(&seed.node)));
    lines.push(format!("proxmox_skip_tls = {}", seed.skip_tls));
    if let Some(ca) = &seed.ca_file {
        lines.push(format!(
            "proxmox_ca_file = {}",
            quote(&ca.to_string_lossy())
        ));
    }
    if let Some(fp) = &seed.tls_fingerprint {
        lines.push(format!("proxmox_tls_fingerprint = {}", quote(fp)));
    }
    lines.push(format!(
        "proxmox_ssh_username = {}",
        quote(&seed.ssh_username)
    ));
    let key = seed
        .ssh_key
        .as_ref()
        .map(|k| k.to_string_lossy().into_owned())
        .unwrap_or_default();
    lines.push(format!("proxmox_ssh_key = {}", quote(&key)));
    lines.push(format!("storage_pool = {}", quote(&seed.storage_vm)));
    lines.push(format!("storage_iso = {}", quote(&seed.storage_iso)));
    lines.push(format!(
        "storage_snippets = {}",
        quote(&seed.storage_snippets)
    ));
    lines.push(format!("network_bridge = {}", quote(&seed.bridge)));
    lines.push(format!("ssh_public_key = {}", quote(&seed.ssh_public_key)));
    let mut text = lines.join("\n");
    text.push('\n');
    write_text_atomic(&root.proxmox_tfvars(), &text)?;

    if let Some(pw) = &seed.vault_password {
        let entries = BTreeMap::from([(
            "PROXMOX_TOKEN_SECRET".to_string(),
            seed.token_secret.clone(),
        )]);
        write_vault_env(&root.vault_file(), &entries, pw)?;
    }

    let marker = json!({
        "target": "proxmox",
        "status": "ready",
        "run_id": new_run_id(RunPrefix::Apply).replacen("apply", "init", 1),
        "paths": {
            "config": root.config_dir().join("proxmox.conf").to_string_lossy(),
            "vault": root.vault_file().to_string_lossy(),
            "credentials": root.proxmox_tfvars().to_string_lossy(),
            "evidence_dir": root.logs_dir().join("init").to_string_lossy(),
        },
        "context": {"ssh_public_key": seed.ssh_public_key},
        "runtime": {
            "node": seed.node,
            "api_ip": seed.api_ip,
            "storage_vm": seed.storage_vm,
            "storage_iso": seed.storage_iso,
            "storage_snippets": seed.storage_snippets,
            "bridge": seed.bridge,
            "storage_vm_source": "seed",
            "storage_iso_source": "seed",
            "storage_snippets_source": "seed",
            "bridge_source": "seed",
        },
        "generated_at": utc_now(),
    });
    write_json_atomic(&root.proxmox_ready_file(), &marker)
}
