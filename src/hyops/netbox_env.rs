//! NetBox environment hydration (§4.1): the authority root, `credentials/netbox.env`, the
//! URL from NetBox state outputs, the token from the runtime vault, explicit process env
//! winning, `/api` suffix normalisation and the exact missing-values error. Resolution only;
//! knows nothing about HTTP, IPAM allocation or the planner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{HyopsError, Result};
use super::fsio::read_json_opt;
use super::paths::{env_root, RuntimeRoot};
use super::vault::{parse_env_file, read_vault_env};
use crate::secret::Secret;

/// Module id of the NetBox state in the authority root.
pub const NETBOX_MODULE_ID: &str = "platform__onprem__netbox";

/// The warning for a vault that cannot be opened (§4.1 step 3), verbatim.
pub const NETBOX_VAULT_LOCKED_WARNING: &str = "runtime vault unavailable for NETBOX_API_TOKEN (vault locked or GPG not unlocked); run: hyops vault password >/dev/null";

/// The vault read timeout for the NetBox token: `HYOPS_NETBOX_VAULT_READ_TIMEOUT_S`,
/// default 6 s, clamped to 2..=30 s; an unparsable value gives the default.
pub fn netbox_vault_read_timeout(env: &BTreeMap<String, String>) -> std::time::Duration {
    let secs = env
        .get("HYOPS_NETBOX_VAULT_READ_TIMEOUT_S")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(6.0)
        .clamp(2.0, 30.0);
    std::time::Duration::from_secs_f64(secs)
}

/// The NetBox authority root: `HYOPS_NETBOX_AUTHORITY_ROOT` (relative → against the runtime
/// root), else `HYOPS_NETBOX_AUTHORITY_ENV` (→ `<home>/.hybridops/envs/<name>`), else
/// `<home>/.hybridops/envs/shared`.
pub fn netbox_authority_root(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    home: &Path,
) -> Result<PathBuf> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(p) = get("HYOPS_NETBOX_AUTHORITY_ROOT") {
        let p = Path::new(p);
        return Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.path().join(p)
        });
    }
    if let Some(name) = get("HYOPS_NETBOX_AUTHORITY_ENV") {
        return env_root(home, name);
    }
    env_root(home, "shared")
}

fn netbox_state(root: &Path) -> Result<Option<Value>> {
    read_json_opt(
        &root
            .join("state")
            .join("modules")
            .join(NETBOX_MODULE_ID)
            .join("latest.json"),
    )
}

/// NetBox readiness: the authority's NetBox state must exist with `status: ok`.
pub fn netbox_ready(authority_root: &Path) -> Result<()> {
    match netbox_state(authority_root)? {
        None => Err(HyopsError::Contract(format!(
            "ipam requires netbox ready: netbox state not found (run: hyops blueprint --env shared --ref onprem/bootstrap-netbox@v1) OR: set HYOPS_NETBOX_AUTHORITY_ENV and apply NetBox there (authority_root={})",
            authority_root.display()
        ))),
        Some(v) => {
            let status = v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if status == "ok" {
                Ok(())
            } else {
                Err(HyopsError::Contract(format!(
                    "ipam requires netbox ready: netbox state is not ready: status={}",
                    if status.is_empty() { "unknown" } else { &status }
                )))
            }
        }
    }
}

/// What hydration found. The token is a [`Secret`].
#[derive(Debug, Clone, Default)]
pub struct NetboxEnv {
    pub api_url: Option<String>,
    pub api_token: Option<Secret>,
    /// TLS for an https NetBox (hyops-pve extensions; upstream uses the system roots):
    /// `NETBOX_TLS_FINGERPRINT` (SHA-256 pin of the server certificate),
    /// `NETBOX_CA_FILE` (PEM bundle), `NETBOX_SKIP_TLS` (no verification, labs only).
    /// Read from the process env first, then from `credentials/netbox.env`.
    pub tls_fingerprint: Option<String>,
    pub ca_file: Option<String>,
    pub skip_tls: bool,
    pub warnings: Vec<String>,
}

/// Values inferred from one root.
#[derive(Default)]
struct Inferred {
    url: Option<String>,
    token: Option<Secret>,
    tls_fingerprint: Option<String>,
    ca_file: Option<String>,
    skip_tls: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `creds = false` reads only `credentials/netbox.env` (for its TLS keys) and leaves the
/// NetBox state and the vault alone: the URL and token were given explicitly.
fn infer_from_root(
    root: &Path,
    vault_password: Option<&Secret>,
    warnings: &mut Vec<String>,
    creds: bool,
) -> Result<Inferred> {
    let mut inf = Inferred::default();
    let env_file = root.join("credentials").join("netbox.env");
    match std::fs::read_to_string(&env_file) {
        Ok(t) => {
            let kv = parse_env_file(&t);
            inf.url = kv.get("NETBOX_API_URL").and_then(|v| non_empty(v));
            inf.token = kv
                .get("NETBOX_API_TOKEN")
                .and_then(|v| non_empty(v))
                .map(Secret::new);
            inf.tls_fingerprint = kv.get("NETBOX_TLS_FINGERPRINT").and_then(|v| non_empty(v));
            inf.ca_file = kv.get("NETBOX_CA_FILE").and_then(|v| non_empty(v));
            inf.skip_tls = kv.get("NETBOX_SKIP_TLS").and_then(|v| non_empty(v));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(HyopsError::io(&env_file, e)),
    }
    if !creds {
        return Ok(inf);
    }
    if inf.url.is_none() {
        if let Some(outputs) = netbox_state(root)?.as_ref().and_then(|v| v.get("outputs")) {
            inf.url = outputs
                .get("netbox_api_url")
                .and_then(Value::as_str)
                .and_then(non_empty)
                .or_else(|| {
                    outputs
                        .get("netbox_url")
                        .and_then(Value::as_str)
                        .and_then(non_empty)
                        .map(|u| format!("{}/api/", u.trim_end_matches('/')))
                });
        }
    }
    if inf.token.is_none() {
        let vault_file = root.join("vault").join("bootstrap.vault.env");
        if vault_file.exists() {
            let opened = vault_password.and_then(|pw| read_vault_env(&vault_file, pw).ok());
            match opened {
                Some(kv) => {
                    inf.token = kv
                        .get("NETBOX_API_TOKEN")
                        .filter(|s| !s.expose().trim().is_empty())
                        .map(|s| Secret::new(s.expose().trim()));
                }
                None => {
                    if !warnings.iter().any(|w| w == NETBOX_VAULT_LOCKED_WARNING) {
                        warnings.push(NETBOX_VAULT_LOCKED_WARNING.to_string());
                    }
                }
            }
        }
    }
    Ok(inf)
}

/// Strip a trailing `/api` (or `/api/`) back to the base URL.
pub fn normalize_netbox_url(url: &str) -> String {
    let t = url.trim().trim_end_matches('/');
    t.strip_suffix("/api").unwrap_or(t).to_string()
}

/// `hydrate_netbox_env`: explicit process env wins; then the local root's netbox.env, NetBox
/// state URL and vault token; then the authority root (when different), which overrides
/// the locally inferred values.
pub fn hydrate_netbox_env(
    root: &RuntimeRoot,
    authority_root: &Path,
    process_env: &BTreeMap<String, String>,
    vault_password: Option<&Secret>,
) -> Result<NetboxEnv> {
    let mut out = NetboxEnv::default();
    let explicit_url = process_env.get("NETBOX_API_URL").and_then(|v| non_empty(v));
    let explicit_token = process_env
        .get("NETBOX_API_TOKEN")
        .and_then(|v| non_empty(v))
        .map(Secret::new);
    let need_inference = explicit_url.is_none() || explicit_token.is_none();
    // netbox.env is always read: it may hold the TLS settings beside the URL.
    let mut inferred = infer_from_root(
        root.path(),
        vault_password,
        &mut out.warnings,
        need_inference,
    )?;
    {
        if authority_root != root.path() {
            let auth = infer_from_root(
                authority_root,
                vault_password,
                &mut out.warnings,
                need_inference,
            )?;
            if auth.url.is_some() {
                inferred.url = auth.url;
            }
            if auth.token.is_some() {
                inferred.token = auth.token;
            }
            if auth.tls_fingerprint.is_some() {
                inferred.tls_fingerprint = auth.tls_fingerprint;
            }
            if auth.ca_file.is_some() {
                inferred.ca_file = auth.ca_file;
            }
            if auth.skip_tls.is_some() {
                inferred.skip_tls = auth.skip_tls;
            }
        }
    }
    let explicit = |k: &str| process_env.get(k).and_then(|v| non_empty(v));
    out.tls_fingerprint = explicit("NETBOX_TLS_FINGERPRINT").or(inferred.tls_fingerprint);
    out.ca_file = explicit("NETBOX_CA_FILE").or(inferred.ca_file);
    out.skip_tls = explicit("NETBOX_SKIP_TLS")
        .or(inferred.skip_tls)
        .is_some_and(|v| super::credentials::truthy(&v));
    out.api_url = explicit_url
        .or(inferred.url)
        .map(|u| normalize_netbox_url(&u));
    out.api_token = explicit_token.or(inferred.token);
    Ok(out)
}

impl NetboxEnv {
    /// Both values, or the exact §4.1 missing-values error. `env_name` is `HYOPS_ENV`.
    pub fn require(&self, env_name: Option<&str>) -> Result<(String, Secret)> {
        let mut missing = Vec::new();
        if self.api_url.is_none() {
            missing.push("NETBOX_API_URL");
        }
        if self.api_token.is_none() {
            missing.push("NETBOX_API_TOKEN");
        }
        match (&self.api_url, &self.api_token) {
            (Some(u), Some(t)) => Ok((u.clone(), t.clone())),
            _ => {
                let env_name = env_name
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("<env>");
                Err(HyopsError::Contract(format!(
                    "inputs.addressing.mode=ipam requires {}. Run: hyops secrets ensure --env {env_name} NETBOX_API_TOKEN (and ensure NETBOX_API_URL is set via NetBox state or credentials/netbox.env).",
                    missing.join(", ")
                )))
            }
        }
    }
}
