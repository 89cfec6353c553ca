//! The process environment as hyops-pve reads it: the one place where the operating system's
//! environment (bytes on Unix) becomes the `(name, value)` text pairs every command and the
//! driver mode take. `std::env::vars()` panics on the first variable that is not valid UTF-8
//! and its panic message carries the raw value, so it is never used: one unrelated variable
//! (a Latin-1 `LANG`-era value, a binary token) crashed every command and could print a
//! secret.
//!
//! The rule: a variable hyops-pve reads ([`is_read`]: the `HYOPS_*`, `PROXMOX_*` and
//! `NETBOX_*` names the code looks up, the `HYOPS_INPUT_*` overrides, the vault password
//! variables, `HOME`, `SSH_AUTH_SOCK` and the HTTP proxy variables reqwest follows) whose name
//! or value is not valid UTF-8 is refused, naming the variable and never showing its value;
//! every other variable that is not valid UTF-8 is left out (hyops-pve never looks at it, and
//! child processes still inherit it unchanged from the process).
//!
//! Upstream hyops reads `os.environ` with Python's `surrogateescape`: such a value becomes text
//! holding lone surrogates and travels on (a `HYOPS_INPUT_name_prefix` of `caf\xe9` reaches
//! `inputs_resolved.json` as `"caf\udce9"`, which strict JSON readers refuse). Refusing it
//! here, before anything is written, is the deliberate difference.
//!
//! Knows nothing about what the variables mean, only their names.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Variables hyops-pve reads by exact name. Keep in step with the code: the unit test
/// `every_variable_name_in_the_source_is_covered` fails when a `HYOPS_*`, `PROXMOX_*` or
/// `NETBOX_*` name appears in `src/` without being listed here (or under [`READ_PREFIXES`]).
const READ: &[&str] = &[
    // runtime root, env name, logs, verbosity
    "HOME",
    "HYOPS_ENV",
    "HYOPS_RUNTIME_ROOT",
    "HYOPS_VERBOSE",
    "HYOPS_PVE_LOG",
    // inputs
    "HYOPS_INPUTS_JSON",
    // engine and simulator settings
    "HYOPS_PVE_ENGINE_TIME_SCALE",
    "HYOPS_PVE_LOCK_WAIT_S",
    "HYOPS_PVE_MAX_RESPONSE_MIB",
    "HYOPS_PVE_SIM_HOME",
    "HYOPS_PVE_SIM_TIME_SCALE",
    // Proxmox credentials and their environment fallbacks
    "HYOPS_PROXMOX_TFVARS",
    "PROXMOX_URL",
    "PROXMOX_TOKEN_ID",
    "PROXMOX_TOKEN_SECRET",
    "PROXMOX_NODE",
    "PROXMOX_ALLOW_HTTP",
    "PROXMOX_SKIP_TLS",
    "PROXMOX_CA_FILE",
    "PROXMOX_TLS_FINGERPRINT",
    "PROXMOX_SSH_USERNAME",
    "PROXMOX_SSH_KEY",
    "PROXMOX_SSH_PUBLIC_KEY",
    "PROXMOX_STORAGE_ISO",
    "PROXMOX_STORAGE_POOL",
    "PROXMOX_STORAGE_SNIPPETS",
    "PROXMOX_NETWORK_BRIDGE",
    // the runtime vault's password sources
    "HYOPS_VAULT_PASSWORD_FILE",
    "ANSIBLE_VAULT_PASSWORD_FILE",
    "HYOPS_VAULT_PASSWORD_COMMAND",
    "HYOPS_VAULT_PASS_SCRIPT",
    // NetBox connection, authority, probes and sync options
    "NETBOX_API_URL",
    "NETBOX_API_TOKEN",
    "NETBOX_TLS_FINGERPRINT",
    "NETBOX_CA_FILE",
    "NETBOX_SKIP_TLS",
    "NETBOX_CLUSTER_AUTO_CREATE",
    "NETBOX_CLUSTER_TYPE_ID",
    "NETBOX_CLUSTER_TYPE_NAME",
    "NETBOX_CLUSTER_TYPE_SLUG",
    "NETBOX_TAG_COLOR",
    "NETBOX_VM_ROLE_COLOR",
    "NETBOX_VMS_AUTO_CSV",
    "NETBOX_VMS_AUTO_JSON",
    "NETBOX_VM_EXTERNAL_ID_CF_AUTO_CREATE",
    "NETBOX_VM_EXTERNAL_ID_DESCRIPTION",
    "NETBOX_VM_EXTERNAL_ID_FIELD",
    "NETBOX_VM_EXTERNAL_ID_LABEL",
    "NETBOX_VM_EXTERNAL_ID_OBJECT_TYPE",
    "HYOPS_NETBOX_AUTHORITY_ROOT",
    "HYOPS_NETBOX_AUTHORITY_ENV",
    "HYOPS_NETBOX_API_PROBE_WAIT_S",
    "HYOPS_NETBOX_PROBE_TIMEOUT_S",
    "HYOPS_NETBOX_VAULT_READ_TIMEOUT_S",
    "HYOPS_NETBOX_SYNC_STRICT",
    "HYOPS_NETBOX_SYNC_PARALLEL",
    "HYOPS_NETBOX_SYNC_DESTROY_HARD_DELETE",
    "HYOPS_SKIP_NETBOX_PROBE",
    "HYOPS_SDN_AUTHORITY_ROOT",
    "HYOPS_SDN_AUTHORITY_ENV",
    // SSH: the agent socket
    "SSH_AUTH_SOCK",
    // The proxies reqwest (Proxmox and NetBox clients) follows: it silently ignores a value
    // that is not UTF-8, which would bypass the operator's proxy without a word.
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Families hyops-pve reads by prefix: every `HYOPS_INPUT_<path>` is an input override.
const READ_PREFIXES: &[&str] = &["HYOPS_INPUT_"];

/// Whether hyops-pve reads the variable `name` (given as the bytes of its name, so a name that
/// is not valid UTF-8 but starts like `HYOPS_INPUT_` counts too).
pub fn is_read(name: &[u8]) -> bool {
    READ.iter().any(|n| n.as_bytes() == name)
        || READ_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

/// Variables hyops-pve reads whose name or value is not valid UTF-8.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "environment variable{s} {names} {is_are} not valid UTF-8 (the value is not shown); hyops-pve reads {it_them} and takes text only: set {it_them} to UTF-8 text or unset {it_them}",
    s = if names.len() == 1 { "" } else { "s" },
    names = names.join(", "),
    is_are = if names.len() == 1 { "is" } else { "are" },
    it_them = if names.len() == 1 { "it" } else { "them" },
)]
pub struct NotUnicode {
    /// The variables' names, in environment order; a name that is not valid UTF-8 itself is
    /// shown with its other bytes as `\xNN`.
    pub names: Vec<String>,
}

/// Turn `(name, value)` pairs of the OS environment into text pairs, in their order: pairs
/// that are not valid UTF-8 are left out, unless [`is_read`] names them, then every such
/// variable is refused at once ([`NotUnicode`]).
pub fn text_pairs(
    pairs: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, NotUnicode> {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (name, value) in pairs {
        match (name.into_string(), value.into_string()) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            (Ok(n), Err(_)) => {
                if is_read(n.as_bytes()) {
                    refused.push(n);
                }
            }
            (Err(n), _) => {
                let bytes = n.as_encoded_bytes();
                if is_read(bytes) {
                    refused.push(escape_name(bytes));
                }
            }
        }
    }
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(NotUnicode { names: refused })
    }
}

/// The process environment as text pairs, in the process' order ([`text_pairs`]).
pub fn vars() -> Result<Vec<(String, String)>, NotUnicode> {
    text_pairs(std::env::vars_os())
}

/// The process environment as a map (the last of repeated names wins, as in `getenv`).
pub fn map() -> Result<BTreeMap<String, String>, NotUnicode> {
    Ok(vars()?.into_iter().collect())
}

/// One variable of the process environment: `None` when unset (or not valid UTF-8 and not
/// one hyops-pve reads, which callers never ask for), an error naming it when hyops-pve reads
/// it and its value is not valid UTF-8.
pub fn var(name: &str) -> Result<Option<String>, NotUnicode> {
    match std::env::var_os(name).map(OsString::into_string) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(_)) if is_read(name.as_bytes()) => Err(NotUnicode {
            names: vec![name.to_string()],
        }),
        Some(Err(_)) => Ok(None),
    }
}

/// A name that is not valid UTF-8, printable: ASCII graphic bytes as they are, others `\xNN`.
fn escape_name(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn os(b: &[u8]) -> OsString {
        OsString::from_vec(b.to_vec())
    }

    #[test]
    fn unrelated_variables_that_are_not_utf8_are_left_out() {
        let got = text_pairs([
            (os(b"A"), os(b"1")),
            (os(b"LANG_OLD"), os(b"caf\xe9")),
            (os(b"\xffWEIRD"), os(b"x")),
            (os(b"B"), os(b"2")),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn a_variable_hyops_pve_reads_is_refused_by_name_without_its_value() {
        let err = text_pairs([
            (os(b"PROXMOX_TOKEN_SECRET"), os(b"s3cr\xe9t")),
            (os(b"HYOPS_INPUT_name_prefix"), os(b"caf\xe9")),
            (os(b"OTHER"), os(b"\xff")),
        ])
        .unwrap_err();
        assert_eq!(
            err.names,
            vec!["PROXMOX_TOKEN_SECRET", "HYOPS_INPUT_name_prefix"]
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "environment variables PROXMOX_TOKEN_SECRET, HYOPS_INPUT_name_prefix are not valid UTF-8"
            ),
            "{text}"
        );
        assert!(!text.contains("s3cr") && !text.contains("caf"), "{text}");
    }

    #[test]
    fn one_refused_variable_reads_in_the_singular() {
        let err = text_pairs([(os(b"HOME"), os(b"/home/\xe9"))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable HOME is not valid UTF-8 (the value is not shown); hyops-pve reads it and takes text only: set it to UTF-8 text or unset it"
        );
    }

    #[test]
    fn an_input_override_whose_name_is_not_utf8_is_refused_with_an_escaped_name() {
        let err = text_pairs([(os(b"HYOPS_INPUT_caf\xe9"), os(b"1"))]).unwrap_err();
        assert_eq!(err.names, vec!["HYOPS_INPUT_caf\\xE9"]);
    }

    #[test]
    fn the_environment_order_is_kept() {
        let got = text_pairs([
            (os(b"HYOPS_INPUT_b"), os(b"2")),
            (os(b"HYOPS_INPUT_a"), os(b"1")),
        ])
        .unwrap();
        assert_eq!(got[0].0, "HYOPS_INPUT_b");
        assert_eq!(got[1].0, "HYOPS_INPUT_a");
    }

    /// The guard on [`READ`]: every `HYOPS_*`, `PROXMOX_*` and `NETBOX_*` string literal in
    /// `src/` is a variable [`is_read`] covers, or one of the few literals that are not a
    /// variable name (a prefix tested with `starts_with`).
    #[test]
    fn every_variable_name_in_the_source_is_covered() {
        const NOT_VARIABLES: &[&str] = &["PROXMOX_"];
        let re = regex::Regex::new(r#""((?:HYOPS|PROXMOX|NETBOX)_[A-Za-z0-9_]*)""#).unwrap();
        let mut missing = std::collections::BTreeSet::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    for c in re.captures_iter(&text) {
                        let name = &c[1];
                        if !is_read(name.as_bytes()) && !NOT_VARIABLES.contains(&name) {
                            missing.insert(format!("{name} ({})", path.display()));
                        }
                    }
                }
            }
        }
        assert!(files > 50, "the source tree was not found ({files} files)");
        assert!(
            missing.is_empty(),
            "add these to procenv::READ (or NOT_VARIABLES): {missing:#?}"
        );
    }
}
