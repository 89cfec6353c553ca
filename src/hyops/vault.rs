//! The runtime vault `vault/bootstrap.vault.env`: ansible-vault `$ANSIBLE_VAULT;1.1;AES256`
//! decryption and encryption (PBKDF2-HMAC-SHA256 ×10000 → AES-256-CTR key, HMAC-SHA256 key,
//! IV; HMAC over the ciphertext checked in constant time; PKCS7), password sources, and
//! KEY=VALUE env-file parsing. Knows nothing about which keys the vault holds or why.
//!
//! Interoperability with the real tools (checked against `ansible-vault` in
//! `tests/hyops_vault.rs`): the vault env is written and read as upstream hyops does
//! (`hyops/runtime/vault.py` `_render_env` / `_parse_env`: `KEY="value"` with `\\`, `\"`, `\r`,
//! `\n` escaped, so multi-line secrets survive), and passwords are trimmed as ansible-vault
//! trims them (a password file: ASCII whitespace at both ends; a password command: Python's
//! `str.strip()`, which upstream applies before handing the password to ansible-vault).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::{HyopsError, Result};
use crate::secret::Secret;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

const HEADER_PREFIX: &str = "$ANSIBLE_VAULT;";
const ITERATIONS: u32 = 10_000;

fn vault_err(msg: impl Into<String>) -> HyopsError {
    HyopsError::Vault(msg.into())
}

fn derive(password: &Secret, salt: &[u8]) -> ([u8; 32], [u8; 32], [u8; 16]) {
    let mut out = [0u8; 80];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.expose().as_bytes(), salt, ITERATIONS, &mut out);
    let mut k1 = [0u8; 32];
    let mut k2 = [0u8; 32];
    let mut iv = [0u8; 16];
    k1.copy_from_slice(&out[..32]);
    k2.copy_from_slice(&out[32..64]);
    iv.copy_from_slice(&out[64..]);
    (k1, k2, iv)
}

/// True when `text` starts with an ansible-vault header.
pub fn is_vault_text(text: &str) -> bool {
    text.trim_start().starts_with(HEADER_PREFIX)
}

/// Decrypt an ansible-vault 1.1/1.2 AES256 document. A wrong password is reported as
/// "HMAC mismatch (wrong vault password?)"; the password never appears in any error.
pub fn decrypt(text: &str, password: &Secret) -> Result<Vec<u8>> {
    let mut lines = text.trim().lines();
    let header = lines.next().unwrap_or("").trim();
    let parts: Vec<&str> = header.split(';').collect();
    if parts.len() < 3 || parts[0] != "$ANSIBLE_VAULT" {
        return Err(vault_err(
            "not an ansible-vault file (missing $ANSIBLE_VAULT header)",
        ));
    }
    if !matches!(parts[1], "1.1" | "1.2") {
        return Err(vault_err(format!(
            "unsupported ansible-vault format version {:?} (expected 1.1 or 1.2)",
            parts[1]
        )));
    }
    if parts[2].trim() != "AES256" {
        return Err(vault_err(format!(
            "unsupported ansible-vault cipher {:?} (expected AES256)",
            parts[2]
        )));
    }
    let body_hex: String = lines.flat_map(|l| l.trim().chars()).collect();
    let body =
        hex::decode(&body_hex).map_err(|e| vault_err(format!("vault body is not hex: {e}")))?;
    let body = String::from_utf8(body).map_err(|_| vault_err("vault body is not text"))?;
    let mut fields = body.split('\n');
    let (Some(salt_hex), Some(hmac_hex), Some(ct_hex)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(vault_err(
            "vault body must hold salt, hmac and ciphertext on three lines",
        ));
    };
    let salt = hex::decode(salt_hex.trim()).map_err(|e| vault_err(format!("vault salt: {e}")))?;
    let tag = hex::decode(hmac_hex.trim()).map_err(|e| vault_err(format!("vault hmac: {e}")))?;
    let mut data =
        hex::decode(ct_hex.trim()).map_err(|e| vault_err(format!("vault ciphertext: {e}")))?;
    let (k1, k2, iv) = derive(password, &salt);
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(&k2).map_err(|_| vault_err("hmac key setup failed"))?;
    mac.update(&data);
    // verify_slice compares in constant time.
    mac.verify_slice(&tag)
        .map_err(|_| vault_err("HMAC mismatch (wrong vault password?)"))?;
    let mut cipher = Aes256Ctr::new(&k1.into(), &iv.into());
    cipher.apply_keystream(&mut data);
    let pad = data.last().copied().unwrap_or(0) as usize;
    if pad == 0
        || pad > 16
        || pad > data.len()
        || !data[data.len() - pad..].iter().all(|b| *b as usize == pad)
    {
        return Err(vault_err("invalid PKCS7 padding in decrypted vault"));
    }
    data.truncate(data.len() - pad);
    Ok(data)
}

/// Encrypt `plaintext` as an ansible-vault 1.1 AES256 document (80-column hex lines).
pub fn encrypt(plaintext: &[u8], password: &Secret) -> Result<String> {
    let salt: [u8; 32] = rand::random();
    let (k1, k2, iv) = derive(password, &salt);
    let pad = 16 - plaintext.len() % 16;
    let mut data = plaintext.to_vec();
    data.extend(std::iter::repeat_n(pad as u8, pad));
    let mut cipher = Aes256Ctr::new(&k1.into(), &iv.into());
    cipher.apply_keystream(&mut data);
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(&k2).map_err(|_| vault_err("hmac key setup failed"))?;
    mac.update(&data);
    let tag = mac.finalize().into_bytes();
    let body = format!(
        "{}\n{}\n{}",
        hex::encode(salt),
        hex::encode(tag),
        hex::encode(&data)
    );
    let body_hex = hex::encode(body.as_bytes());
    let mut out = String::from("$ANSIBLE_VAULT;1.1;AES256\n");
    for chunk in body_hex.as_bytes().chunks(80) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    Ok(out)
}

/// Parse KEY=VALUE env-file content: blank lines and `#` comments skipped, `export `
/// stripped, matching single/double quotes removed. Lines without `=` are ignored.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = k.trim();
        if key.is_empty() {
            continue;
        }
        let mut val = v.trim();
        if val.len() >= 2
            && ((val.starts_with('"') && val.ends_with('"'))
                || (val.starts_with('\'') && val.ends_with('\'')))
        {
            val = &val[1..val.len() - 1];
        }
        out.insert(key.to_string(), val.to_string());
    }
    out
}

/// Where the vault password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(std::path::PathBuf),
    /// Run through `sh -c`.
    Command(String),
    /// An executable run without arguments (`HYOPS_VAULT_PASS_SCRIPT`).
    Script(std::path::PathBuf),
}

/// Pick the password source from an env map: `HYOPS_VAULT_PASSWORD_FILE`, then
/// `ANSIBLE_VAULT_PASSWORD_FILE`, then `HYOPS_VAULT_PASSWORD_COMMAND`, then
/// `HYOPS_VAULT_PASS_SCRIPT`. `None` when none is set.
pub fn password_source(env: &BTreeMap<String, String>) -> Option<PasswordSource> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(f) = get("HYOPS_VAULT_PASSWORD_FILE").or_else(|| get("ANSIBLE_VAULT_PASSWORD_FILE"))
    {
        return Some(PasswordSource::File(f.into()));
    }
    if let Some(c) = get("HYOPS_VAULT_PASSWORD_COMMAND") {
        return Some(PasswordSource::Command(c.to_string()));
    }
    get("HYOPS_VAULT_PASS_SCRIPT").map(|s| PasswordSource::Script(s.into()))
}

fn run_with_timeout(mut cmd: Command, label: &str, timeout: Duration) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| vault_err(format!("{label}: failed to start: {e}")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| vault_err(format!("{label}: no stdout pipe")))?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(vault_err(format!(
                    "{label}: timed out after {}s",
                    timeout.as_secs_f32()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(vault_err(format!("{label}: wait failed: {e}"))),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(vault_err(format!("{label}: exited with {status}")));
    }
    String::from_utf8(out).map_err(|_| vault_err(format!("{label}: output is not UTF-8")))
}

/// Python's `bytes.strip()`: ASCII space, `\t`, `\n`, `\r`, `\x0b`, `\x0c` at both ends
/// (ansible-vault reading a password file).
pub fn trim_like_ansible_file(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
}

/// Python's `str.strip()`: Unicode whitespace plus the separators `\x1c`–`\x1f` (upstream hyops
/// reading a password command's output).
pub fn trim_like_python_str(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// Read the password from a source: a file trimmed as ansible-vault trims it, or the command's
/// stdout trimmed as upstream hyops trims it (killed after `timeout`). An empty password is
/// an error.
pub fn read_password(src: &PasswordSource, timeout: Duration) -> Result<Secret> {
    let raw = match src {
        PasswordSource::File(p) => crate::fsread::read_text_at_most(p, 1 << 20)
            .map_err(|e| vault_err(format!("vault password file {}: {e}", p.display())))?,
        PasswordSource::Command(c) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(c);
            run_with_timeout(cmd, "HYOPS_VAULT_PASSWORD_COMMAND", timeout)?
        }
        PasswordSource::Script(p) => {
            run_with_timeout(Command::new(p), "HYOPS_VAULT_PASS_SCRIPT", timeout)?
        }
    };
    let pw = match src {
        PasswordSource::File(_) => trim_like_ansible_file(&raw),
        PasswordSource::Command(_) | PasswordSource::Script(_) => trim_like_python_str(&raw),
    };
    if pw.is_empty() {
        return Err(vault_err("vault password source gave an empty password"));
    }
    Ok(Secret::new(pw))
}

/// Decrypt a vault env file and parse it into secret values.
pub fn read_vault_env(path: &Path, password: &Secret) -> Result<BTreeMap<String, Secret>> {
    let text = std::fs::read_to_string(path).map_err(|e| HyopsError::io(path, e))?;
    let plain = decrypt(&text, password)
        .map_err(|e| vault_err(format!("{}: {}", path.display(), strip_prefix(&e))))?;
    let plain = String::from_utf8(plain)
        .map_err(|_| vault_err(format!("{}: decrypted vault is not UTF-8", path.display())))?;
    Ok(parse_vault_env(&plain)
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect())
}

/// Parse a decrypted vault env as upstream hyops does (`_parse_env`): [`parse_env_file`], then
/// each value unescaped (`\n`, `\r`, `\"`, `\\`; any other backslash pair kept as written).
pub fn parse_vault_env(text: &str) -> BTreeMap<String, String> {
    parse_env_file(text)
        .into_iter()
        .map(|(k, v)| (k, unescape_env_value(&v)))
        .collect()
}

fn unescape_env_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Render a vault env as upstream hyops does (`_render_env`): two comment lines and a blank
/// line, then `KEY="value"` per key in sorted order with `\\`, `"`, `\r` and `\n` escaped, so
/// every value (a multi-line SSH key included) is one line.
pub fn render_vault_env(entries: &BTreeMap<String, Secret>) -> String {
    let mut out = String::from(
        "# purpose: HybridOps.Core bootstrap vault env (ansible-vault encrypted)\n# maintainer: HybridOps.Tech\n\n",
    );
    for (k, v) in entries {
        let escaped = v
            .expose()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\r', "\\r")
            .replace('\n', "\\n");
        out.push_str(&format!("{k}=\"{escaped}\"\n"));
    }
    out
}

fn strip_prefix(e: &HyopsError) -> String {
    match e {
        HyopsError::Vault(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Write `entries` as an encrypted vault env file (0600, atomic), rendered as upstream hyops
/// renders it ([`render_vault_env`]). For fixtures and the simulator's ready root.
pub fn write_vault_env(
    path: &Path,
    entries: &BTreeMap<String, Secret>,
    password: &Secret,
) -> Result<()> {
    let plain = render_vault_env(entries);
    let doc = encrypt(plain.as_bytes(), password)?;
    super::fsio::write_text_atomic(path, &doc)
}
