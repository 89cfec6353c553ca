//! Proxmox connection credentials (§7): the `credentials/proxmox.credentials.tfvars` file
//! (HCL-ish `key = "value"`), `PROXMOX_*` env fallbacks, the runtime vault's
//! `PROXMOX_TOKEN_SECRET`, defaults, the TLS policy (verify unless told otherwise, optional
//! CA file and SHA-256 pin) and the `meta/proxmox.ready.json` marker. Resolution only;
//! knows nothing about HTTP or the planner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{HyopsError, Result};
use super::fsio::read_json_opt;
use super::paths::RuntimeRoot;
use crate::secret::Secret;

/// Parse HCL-ish tfvars content: `key = "value"` (with `\"`, `\\`, `\n`, `\t` escapes),
/// bare booleans and numbers; `#` and `//` comments (whole-line or trailing). The values
/// may hold secrets: keep the map private to credential resolution.
pub fn parse_tfvars(text: &str) -> BTreeMap<String, String> {
    parse_tfvars_noting(text).0
}

/// A `key = "value` line whose quoted value is never closed: the line is ignored, and the
/// error for a missing key names it (1-based `line`; the value is never kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnclosedValue {
    pub line: usize,
    pub key: String,
}

/// [`parse_tfvars`], also returning the lines it ignored because a quoted value was not
/// closed.
pub fn parse_tfvars_noting(text: &str) -> (BTreeMap<String, String>, Vec<UnclosedValue>) {
    let mut out = BTreeMap::new();
    let mut unclosed = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let Some((k, rest)) = line.split_once('=') else {
            continue;
        };
        let key = k.trim().trim_matches('"');
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        let rest = rest.trim();
        let value = if let Some(body) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = body.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(o) => v.push(o),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => v.push(o),
                }
            }
            if !closed {
                unclosed.push(UnclosedValue {
                    line: index + 1,
                    key: key.to_string(),
                });
                continue;
            }
            v
        } else {
            let end = [rest.find('#'), rest.find("//")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(rest.len());
            rest[..end].trim().to_string()
        };
        out.insert(key.to_string(), value);
    }
    (out, unclosed)
}

/// Lenient truthiness for env/tfvars flags: `1, true, yes, on, y` (case-insensitive).
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "y"
    )
}

/// How the Proxmox API certificate is checked. Verification is the default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsPolicy {
    /// Skip verification entirely (`proxmox_skip_tls = true` or `PROXMOX_SKIP_TLS` truthy).
    pub skip_verify: bool,
    /// Extra CA bundle (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Pinned SHA-256 fingerprint of the server leaf certificate.
    pub fingerprint_sha256: Option<[u8; 32]>,
}

/// `url` with any `user:password@` before the host replaced by `***@` (the text is shown to
/// the operator; it may be malformed, so this works on the raw string).
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_string(),
    }
}

/// Parse a SHA-256 fingerprint: 64 hex digits, optionally `:`-separated, any case.
pub fn parse_fingerprint(field: &str, value: &str) -> Result<[u8; 32]> {
    let hex_only: String = value
        .trim()
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bytes = hex::decode(&hex_only).ok().filter(|b| b.len() == 32);
    let Some(bytes) = bytes else {
        return Err(HyopsError::Credentials(format!(
            "{field}={value:?} is not a SHA-256 fingerprint (64 hex digits, optionally ':'-separated)"
        )));
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Resolved Proxmox credentials. Never serialised; the secret only leaves via `expose()`.
#[derive(Debug, Clone)]
pub struct ProxmoxCredentials {
    /// `https://<host>:<port>/api2/json`.
    pub url: String,
    pub token_id: String,
    pub token_secret: Secret,
    pub node: String,
    pub tls: TlsPolicy,
    pub ssh_username: String,
    pub ssh_key: Option<PathBuf>,
    pub storage_pool: String,
    pub storage_iso: String,
    pub storage_snippets: String,
    pub network_bridge: String,
    pub ssh_public_key: String,
    /// The tfvars file the values came from (when it exists).
    pub source_file: Option<PathBuf>,
    /// `http://` was accepted because `proxmox_allow_http` / `PROXMOX_ALLOW_HTTP` said so.
    pub allow_http: bool,
    /// Operator warnings about these credentials (e.g. the token travels in clear text).
    pub warnings: Vec<String>,
}

impl ProxmoxCredentials {
    /// The host part of the URL (`proxmox_host`).
    pub fn host(&self) -> Option<String> {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    }
}

/// Required keys, their env fallbacks and the placeholders that mean "missing".
const REQUIRED: &[(&str, &str)] = &[
    ("proxmox_url", "PROXMOX_URL"),
    ("proxmox_token_id", "PROXMOX_TOKEN_ID"),
    ("proxmox_token_secret", "PROXMOX_TOKEN_SECRET"),
    ("proxmox_node", "PROXMOX_NODE"),
];

fn is_placeholder(v: &str) -> bool {
    v.trim().is_empty() || v.trim().starts_with("MISSING_PROXMOX_")
}

/// Load the Proxmox credentials of a runtime root. `env` is the process env (passed in);
/// `vault` the decrypted runtime vault, consulted for `PROXMOX_TOKEN_SECRET` when neither the
/// tfvars nor the env has it. Precedence per value: tfvars, env, (vault), default.
pub fn load_proxmox_credentials(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    vault: Option<&BTreeMap<String, Secret>>,
) -> Result<ProxmoxCredentials> {
    let path = env
        .get("HYOPS_PROXMOX_TFVARS")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map_or_else(|| root.proxmox_tfvars(), PathBuf::from);
    // HYOPS_PROXMOX_TFVARS may name any path: read with a bound (a tfvars file is a few KB).
    let (tf, unclosed, source_file) = match crate::fsread::read_at_most(&path, 1 << 20) {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(t) => {
                let (tf, unclosed) = parse_tfvars_noting(&t);
                (tf, unclosed, Some(path.clone()))
            }
            Err(_) => {
                return Err(HyopsError::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "stream did not contain valid UTF-8",
                    ),
                ))
            }
        },
        Ok(None) => {
            return Err(HyopsError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "holds more than 1 MiB; a Proxmox tfvars file is a few KB",
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), Vec::new(), None),
        Err(e) => return Err(HyopsError::io(&path, e)),
    };
    let get = |key: &str, env_key: &str| -> Option<String> {
        tf.get(key)
            .filter(|v| !is_placeholder(v))
            .or_else(|| env.get(env_key).filter(|v| !is_placeholder(v)))
            .map(|v| v.trim().to_string())
    };
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    let mut missing = Vec::new();
    for (key, env_key) in REQUIRED {
        let v = get(key, env_key).or_else(|| {
            (*key == "proxmox_token_secret")
                .then(|| vault.and_then(|m| m.get("PROXMOX_TOKEN_SECRET")))
                .flatten()
                .map(|s| s.expose().trim().to_string())
                .filter(|s| !is_placeholder(s))
        });
        match v {
            Some(v) => {
                values.insert(key, v);
            }
            None => missing.push(*key),
        }
    }
    if !missing.is_empty() {
        // The first line is upstream's verbatim text; the lines after it say what to do.
        let first = if source_file.is_none() && missing.len() == REQUIRED.len() {
            format!(
                "missing required credentials: proxmox (expected credentials in {})",
                root.credentials_dir().display()
            )
        } else {
            format!(
                "proxmox: credential contract missing keys in {}: {}",
                path.display(),
                missing.join(", ")
            )
        };
        return Err(HyopsError::Contract(format!(
            "{first}\n{}",
            missing_credentials_help(
                root,
                env,
                &path,
                source_file.is_some(),
                vault.is_some(),
                &missing,
                &unclosed
            )
        )));
    }
    let take = |k: &str| values.get(k).cloned().unwrap_or_default();
    let url = take("proxmox_url");
    let allow_http = tf.get("proxmox_allow_http").is_some_and(|v| truthy(v))
        || env.get("PROXMOX_ALLOW_HTTP").is_some_and(|v| truthy(v));
    let mut warnings = Vec::new();
    let parsed = url::Url::parse(&url);
    // Userinfo in the URL is a credential Proxmox never uses (the token is a header), and
    // the URL is printed in messages and evidence: refuse it without echoing it.
    let url = redact_userinfo(&url);
    if let Ok(u) = &parsed {
        if !u.username().is_empty() || u.password().is_some() {
            return Err(HyopsError::Credentials(format!(
                "proxmox_url={url:?} carries a user name or password before the host; Proxmox authenticates the API token \
                 (proxmox_token_id / proxmox_token_secret), never URL credentials, and the URL appears in logs and evidence. \
                 Remove the part before '@' in {}",
                path.display()
            )));
        }
    }
    match parsed {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {
            if !allow_http {
                return Err(HyopsError::Credentials(format!(
                    "proxmox_url={url:?} uses http://: the API token would cross the network in clear text, so it is refused. \
                     Use https:// (Proxmox serves its API on https://<host>:8006/api2/json), or accept clear text deliberately \
                     with proxmox_allow_http = true in {} (or PROXMOX_ALLOW_HTTP=1)",
                    path.display()
                )));
            }
            warnings.push(format!(
                "proxmox_url={url:?} uses http://: the API token is sent in clear text (allowed by proxmox_allow_http / PROXMOX_ALLOW_HTTP)"
            ));
        }
        _ => {
            return Err(HyopsError::Credentials(format!(
                "proxmox_url={url:?} is not an https:// URL with a host (expected https://<host>:8006/api2/json)"
            )))
        }
    }
    let opt = |key: &str, env_key: &str| get(key, env_key).filter(|v| !v.is_empty());
    let skip_verify = tf.get("proxmox_skip_tls").is_some_and(|v| truthy(v))
        || env.get("PROXMOX_SKIP_TLS").is_some_and(|v| truthy(v));
    let ca_file = opt("proxmox_ca_file", "PROXMOX_CA_FILE").map(PathBuf::from);
    if let Some(ca) = ca_file.as_ref().filter(|p| !p.is_file()) {
        return Err(HyopsError::Credentials(format!(
            "proxmox_ca_file={} does not exist or is not a file",
            ca.display()
        )));
    }
    let fingerprint_sha256 = match opt("proxmox_tls_fingerprint", "PROXMOX_TLS_FINGERPRINT") {
        Some(f) => Some(parse_fingerprint("proxmox_tls_fingerprint", &f)?),
        None => None,
    };
    let storage_iso = opt("storage_iso", "PROXMOX_STORAGE_ISO").unwrap_or_else(|| "local".into());
    Ok(ProxmoxCredentials {
        url,
        token_id: take("proxmox_token_id"),
        token_secret: Secret::new(take("proxmox_token_secret")),
        node: take("proxmox_node"),
        tls: TlsPolicy {
            skip_verify,
            ca_file,
            fingerprint_sha256,
        },
        ssh_username: opt("proxmox_ssh_username", "PROXMOX_SSH_USERNAME")
            .unwrap_or_else(|| "root".into()),
        ssh_key: opt("proxmox_ssh_key", "PROXMOX_SSH_KEY").map(PathBuf::from),
        storage_pool: opt("storage_pool", "PROXMOX_STORAGE_POOL")
            .unwrap_or_else(|| "local-lvm".into()),
        storage_snippets: opt("storage_snippets", "PROXMOX_STORAGE_SNIPPETS")
            .unwrap_or_else(|| storage_iso.clone()),
        storage_iso,
        network_bridge: opt("network_bridge", "PROXMOX_NETWORK_BRIDGE")
            .unwrap_or_else(|| "vmbr0".into()),
        ssh_public_key: opt("ssh_public_key", "PROXMOX_SSH_PUBLIC_KEY").unwrap_or_default(),
        source_file,
        allow_http,
        warnings,
    })
}

/// The "what to do" lines after a missing-credentials message: the file looked for (and
/// whether `HYOPS_PROXMOX_TFVARS` chose it), the `PROXMOX_*` variables and which are set, the
/// runtime vault, and `hyops init proxmox`. Names only, never a value.
fn missing_credentials_help(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    path: &Path,
    file_exists: bool,
    vault_read: bool,
    missing: &[&str],
    unclosed: &[UnclosedValue],
) -> String {
    let override_set = env
        .get("HYOPS_PROXMOX_TFVARS")
        .is_some_and(|v| !v.trim().is_empty());
    let file_line = match (override_set, file_exists) {
        (true, true) => format!("  read {} (chosen by HYOPS_PROXMOX_TFVARS)", path.display()),
        (true, false) => format!(
            "  looked for {} (chosen by HYOPS_PROXMOX_TFVARS): it does not exist",
            path.display()
        ),
        (false, true) => format!(
            "  read {} (set HYOPS_PROXMOX_TFVARS to use another file)",
            path.display()
        ),
        (false, false) => format!(
            "  looked for {}: it does not exist (HYOPS_PROXMOX_TFVARS is not set)",
            path.display()
        ),
    };
    let vars: Vec<String> = missing
        .iter()
        .filter_map(|k| REQUIRED.iter().find(|(key, _)| key == k))
        .map(|(_, var)| {
            let set = env.get(*var).is_some_and(|v| !is_placeholder(v));
            format!("{var}{}", if set { " (set)" } else { "" })
        })
        .collect();
    let vault_line = if missing.contains(&"proxmox_token_secret") {
        let vault = root.vault_file();
        if vault_read {
            format!(
                "\n  the runtime vault {} was read and has no PROXMOX_TOKEN_SECRET",
                vault.display()
            )
        } else if vault.exists() {
            format!(
                "\n  the token secret may come from the runtime vault {} (PROXMOX_TOKEN_SECRET): set HYOPS_VAULT_PASSWORD_FILE (or ANSIBLE_VAULT_PASSWORD_FILE, HYOPS_VAULT_PASSWORD_COMMAND) so it can be read",
                vault.display()
            )
        } else {
            String::new()
        }
    } else {
        String::new()
    };
    // A key that is "missing" only because its line could not be read: say so (never the
    // value, which may be the token secret).
    let unclosed_lines: String = unclosed
        .iter()
        .filter(|u| missing.contains(&u.key.as_str()))
        .map(|u| {
            format!(
                "\n  line {} of {} sets {} but its quoted value has no closing quote, so the line was ignored",
                u.line,
                path.display(),
                u.key
            )
        })
        .collect();
    format!(
        "{file_line}{unclosed_lines}\n  environment fallbacks for the missing keys: {}{vault_line}\n  fix: run `hyops init proxmox{}` to write the credentials, or set HYOPS_PROXMOX_TFVARS or the PROXMOX_* variables",
        vars.join(", "),
        root.env().map(|e| format!(" --env {e}")).unwrap_or_default()
    )
}

/// `meta/proxmox.ready.json` (§7), read leniently.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxmoxReady {
    pub status: String,
    pub run_id: Option<String>,
    /// The Proxmox SSH / jump / tunnel host.
    pub api_ip: Option<String>,
    pub node: Option<String>,
    pub storage_vm: Option<String>,
    pub storage_iso: Option<String>,
    pub storage_snippets: Option<String>,
    pub bridge: Option<String>,
    pub ssh_public_key: Option<String>,
}

impl ProxmoxReady {
    pub fn is_ready(&self) -> bool {
        self.status.eq_ignore_ascii_case("ready")
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    match cur {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Read `meta/proxmox.ready.json`; `Ok(None)` when absent.
pub fn read_proxmox_ready(root: &RuntimeRoot) -> Result<Option<ProxmoxReady>> {
    read_proxmox_ready_at(&root.proxmox_ready_file())
}

/// [`read_proxmox_ready`] for an explicit path.
pub fn read_proxmox_ready_at(path: &Path) -> Result<Option<ProxmoxReady>> {
    let Some(v) = read_json_opt(path)? else {
        return Ok(None);
    };
    if !v.is_object() {
        return Err(HyopsError::NotAnObject {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(ProxmoxReady {
        status: str_at(&v, &["status"]).unwrap_or_default(),
        run_id: str_at(&v, &["run_id"]),
        api_ip: str_at(&v, &["runtime", "api_ip"]),
        node: str_at(&v, &["runtime", "node"]),
        storage_vm: str_at(&v, &["runtime", "storage_vm"]),
        storage_iso: str_at(&v, &["runtime", "storage_iso"]),
        storage_snippets: str_at(&v, &["runtime", "storage_snippets"]),
        bridge: str_at(&v, &["runtime", "bridge"]),
        ssh_public_key: str_at(&v, &["context", "ssh_public_key"]),
    }))
}
