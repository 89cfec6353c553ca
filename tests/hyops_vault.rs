//! The runtime vault: ansible-vault 1.1 AES256 encryption/decryption, password sources and
//! env-file parsing, checked against the real tools:
//! - a known-answer vector made by `ansible-vault` (tests/data/vault, always);
//! - the real `ansible-vault` both ways (optional target `ansible-vault`, switch
//!   `HYOPS_REQUIRE_ANSIBLE_VAULT`; the binary is `HYOPS_TEST_ANSIBLE_VAULT` or `ansible-vault`
//!   on PATH), with non-ASCII passwords and a multi-line value;
//! - upstream hyops' own `read_env` / `write_env` (optional target `upstream hyops`, switch
//!   `HYOPS_REQUIRE_UPSTREAM`; python from `HYOPS_UPSTREAM_PYTHON`, default
//!   `<repo>/.venv-hyops/bin/python`).

use crate::optional;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyops_pve::hyops::vault::*;
use hyops_pve::secret::Secret;
use proptest::prelude::*;

#[test]
fn encrypt_then_decrypt_round_trips_with_header_and_80_column_body() {
    let pw = Secret::new("correct horse");
    let doc = encrypt(b"PROXMOX_TOKEN_SECRET=abc\n", &pw).unwrap();
    let mut lines = doc.lines();
    assert_eq!(lines.next(), Some("$ANSIBLE_VAULT;1.1;AES256"));
    assert!(lines.all(|l| l.len() <= 80 && l.bytes().all(|b| b.is_ascii_hexdigit())));
    assert_eq!(decrypt(&doc, &pw).unwrap(), b"PROXMOX_TOKEN_SECRET=abc\n");
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let doc = encrypt(b"K=V\n", &Secret::new("right-pass-111")).unwrap();
    let e = decrypt(&doc, &Secret::new("wrong-pass-999"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("HMAC mismatch (wrong vault password?)"), "{e}");
    assert!(!e.contains("wrong-pass-999") && !e.contains("right-pass-111"));
}

#[test]
fn tampered_ciphertext_fails_hmac() {
    let pw = Secret::new("p");
    let doc = encrypt(b"KEY=VALUE\n", &pw).unwrap();
    let mut lines: Vec<String> = doc.lines().map(str::to_string).collect();
    let last = lines.last_mut().unwrap();
    let c = last.pop().unwrap();
    last.push(if c == '0' { '1' } else { '0' });
    assert!(decrypt(&lines.join("\n"), &pw).is_err());
}

#[test]
fn non_vault_text_is_rejected() {
    let e = decrypt("KEY=VALUE", &Secret::new("p"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("$ANSIBLE_VAULT"), "{e}");
    assert!(decrypt("$ANSIBLE_VAULT;1.1;AES128\n00", &Secret::new("p")).is_err());
}

#[test]
fn vault_env_file_round_trips_as_secrets_with_0600() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("vault/bootstrap.vault.env");
    let pw = Secret::new("pw");
    let entries = BTreeMap::from([
        ("PROXMOX_TOKEN_SECRET".to_string(), Secret::new("s3cr3t")),
        ("NETBOX_API_TOKEN".to_string(), Secret::new("nb")),
    ]);
    write_vault_env(&p, &entries, &pw).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!std::fs::read_to_string(&p).unwrap().contains("s3cr3t"));
    let back = read_vault_env(&p, &pw).unwrap();
    assert_eq!(back["PROXMOX_TOKEN_SECRET"].expose(), "s3cr3t");
    let e = read_vault_env(&p, &Secret::new("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bootstrap.vault.env") && e.contains("wrong vault password"),
        "{e}"
    );
}

#[test]
fn env_file_parsing_handles_comments_export_and_quotes() {
    let kv = parse_env_file("# c\n\nexport A=1\nB = \"two words\"\nC='x=y'\nnoeq\n=bad\n");
    assert_eq!(kv.len(), 3);
    assert_eq!(kv["A"], "1");
    assert_eq!(kv["B"], "two words");
    assert_eq!(kv["C"], "x=y");
}

#[test]
fn password_sources_follow_precedence() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(password_source(&env(&[])), None);
    assert_eq!(
        password_source(&env(&[
            ("HYOPS_VAULT_PASSWORD_COMMAND", "echo x"),
            ("ANSIBLE_VAULT_PASSWORD_FILE", "/f")
        ])),
        Some(PasswordSource::File("/f".into()))
    );
    assert_eq!(
        password_source(&env(&[
            ("HYOPS_VAULT_PASSWORD_FILE", "/h"),
            ("ANSIBLE_VAULT_PASSWORD_FILE", "/f")
        ])),
        Some(PasswordSource::File("/h".into()))
    );
    assert_eq!(
        password_source(&env(&[("HYOPS_VAULT_PASSWORD_COMMAND", "echo x")])),
        Some(PasswordSource::Command("echo x".into()))
    );
}

#[test]
fn password_file_and_command_are_trimmed() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("pw");
    std::fs::write(&f, "  filepw \n").unwrap();
    assert_eq!(
        read_password(&PasswordSource::File(f), Duration::from_secs(2))
            .unwrap()
            .expose(),
        "filepw"
    );
    let c = PasswordSource::Command("printf ' cmdpw\\n'".into());
    assert_eq!(
        read_password(&c, Duration::from_secs(5)).unwrap().expose(),
        "cmdpw"
    );
}

#[test]
fn password_command_times_out_and_failures_are_errors() {
    let t0 = std::time::Instant::now();
    let e = read_password(
        &PasswordSource::Command("sleep 5; echo late".into()),
        Duration::from_millis(300),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("timed out"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert!(read_password(
        &PasswordSource::Command("exit 3".into()),
        Duration::from_secs(2)
    )
    .is_err());
    assert!(
        read_password(
            &PasswordSource::Command("true".into()),
            Duration::from_secs(2)
        )
        .is_err(),
        "empty password"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn any_plaintext_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200), pw in "[ -~]{1,20}") {
        let pw = Secret::new(pw);
        let doc = encrypt(&data, &pw).unwrap();
        prop_assert_eq!(decrypt(&doc, &pw).unwrap(), data);
    }

    #[test]
    fn decrypt_never_panics_on_garbage(text in ".{0,300}") {
        let _ = decrypt(&text, &Secret::new("p"));
        let _ = decrypt(&format!("$ANSIBLE_VAULT;1.1;AES256\n{text}"), &Secret::new("p"));
    }
}

// ------------------------------------------------------------- interop with the real tools

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vault")
        .join(name)
}

/// The values `kat.plain.env` holds (see tests/data/vault/README.md).
fn kat_entries() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("NETBOX_API_TOKEN".to_string(), "nb-kat-0123".to_string()),
        (
            "PROXMOX_TOKEN_SECRET".to_string(),
            "kat \"quoted\" \\ backslash".to_string(),
        ),
        (
            "SSH_PRIVATE_KEY".to_string(),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
                .to_string(),
        ),
    ])
}

fn exposed(m: &BTreeMap<String, Secret>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect()
}

#[test]
fn the_ansible_vault_known_answer_vector_decrypts_to_upstreams_rendering() {
    let pw = read_password(
        &PasswordSource::File(data("kat.password")),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(pw.expose(), "kät-pässwörd 鍵");
    let doc = std::fs::read_to_string(data("kat.vault")).unwrap();
    let plain = decrypt(&doc, &pw).unwrap();
    assert_eq!(plain, std::fs::read(data("kat.plain.env")).unwrap());
    let values = read_vault_env(&data("kat.vault"), &pw).unwrap();
    assert_eq!(exposed(&values), kat_entries());
}

#[test]
fn we_render_the_vault_env_byte_for_byte_as_upstream() {
    let entries: BTreeMap<String, Secret> = kat_entries()
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    assert_eq!(
        render_vault_env(&entries),
        std::fs::read_to_string(data("kat.plain.env")).unwrap()
    );
}

/// The real `ansible-vault`, or a visible SKIPPED (a failure with HYOPS_REQUIRE_ANSIBLE_VAULT=1).
fn ansible_vault() -> Option<PathBuf> {
    optional::require("ansible-vault", "ANSIBLE_VAULT", || {
        let bin = std::env::var("HYOPS_TEST_ANSIBLE_VAULT")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("ansible-vault"));
        match Command::new(&bin).arg("--version").output() {
            Ok(o) if o.status.success() => Ok(bin),
            Ok(o) => Err(format!(
                "{} --version failed: {}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!(
                "cannot run {} ({e}); install it with: python3 -m pip install ansible-core",
                bin.display()
            )),
        }
    })
}

/// ansible-vault's own temp dir inside the test's dir (a shared ~/.ansible may not be writable).
fn ansible(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_HOME", dir.join("ansible-home"));
    c
}

/// Passwords as operators write them into password files: ASCII, non-ASCII, and one ending in
/// an ideographic space, which ansible-vault keeps (it strips ASCII whitespace only).
const PASSWORDS: &[&str] = &["hyops-test", "kät-pässwörd 鍵 🔑", "パスワード\u{3000}"];

/// Plaintexts: one line, and a multi-line value (raw and as upstream's escaped env line).
const PLAINTEXTS: &[&str] = &[
    "NETBOX_API_TOKEN=nb-123\n",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    "SSH_PRIVATE_KEY=\"line one\\nline two\"\nTOKEN=\"t\"\n",
];

/// Run `ansible-vault <action> --vault-password-file <pwf> <files…>` (one process per
/// password: each start of ansible costs about a second).
fn ansible_on(bin: &Path, dir: &Path, action: &str, pwf: &Path, files: &[PathBuf]) {
    let out = ansible(bin, dir)
        .args([action, "--vault-password-file"])
        .arg(pwf)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-vault {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn files_ansible_vault_encrypts_decrypt_here() {
    let Some(bin) = ansible_vault() else { return };
    let d = tempfile::tempdir().unwrap();
    for (i, pw) in PASSWORDS.iter().enumerate() {
        let pwf = d.path().join(format!("pw{i}"));
        std::fs::write(&pwf, format!("{pw}\n")).unwrap();
        let files: Vec<PathBuf> = PLAINTEXTS
            .iter()
            .enumerate()
            .map(|(j, plain)| {
                let f = d.path().join(format!("a{i}-{j}.env"));
                std::fs::write(&f, plain).unwrap();
                f
            })
            .collect();
        ansible_on(&bin, d.path(), "encrypt", &pwf, &files);
        let ours = read_password(&PasswordSource::File(pwf), Duration::from_secs(2)).unwrap();
        for (j, (f, plain)) in files.iter().zip(PLAINTEXTS).enumerate() {
            let doc = std::fs::read_to_string(f).unwrap();
            assert!(doc.starts_with("$ANSIBLE_VAULT;1.1;AES256"));
            assert_eq!(
                decrypt(&doc, &ours).unwrap(),
                plain.as_bytes(),
                "password #{i}, plaintext #{j}"
            );
        }
    }
}

#[test]
fn files_written_here_decrypt_with_ansible_vault() {
    let Some(bin) = ansible_vault() else { return };
    let d = tempfile::tempdir().unwrap();
    for (i, pw) in PASSWORDS.iter().enumerate() {
        let pwf = d.path().join(format!("pw{i}"));
        std::fs::write(&pwf, format!("{pw}\n")).unwrap();
        let files: Vec<PathBuf> = PLAINTEXTS
            .iter()
            .enumerate()
            .map(|(j, plain)| {
                let f = d.path().join(format!("b{i}-{j}.vault"));
                std::fs::write(&f, encrypt(plain.as_bytes(), &Secret::new(*pw)).unwrap()).unwrap();
                f
            })
            .collect();
        ansible_on(&bin, d.path(), "decrypt", &pwf, &files);
        for (j, (f, plain)) in files.iter().zip(PLAINTEXTS).enumerate() {
            assert_eq!(
                std::fs::read(f).unwrap(),
                plain.as_bytes(),
                "password #{i}, plaintext #{j}"
            );
        }
    }
}

#[test]
fn a_vault_env_written_here_with_a_multi_line_value_reads_back_through_ansible_vault() {
    let Some(bin) = ansible_vault() else { return };
    let d = tempfile::tempdir().unwrap();
    let pw = "kät-pässwörd 鍵 🔑";
    let pwf = d.path().join("pw");
    std::fs::write(&pwf, pw).unwrap();
    let entries: BTreeMap<String, Secret> = kat_entries()
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    let f = d.path().join("vault/bootstrap.vault.env");
    write_vault_env(&f, &entries, &Secret::new(pw)).unwrap();
    let out = ansible(&bin, d.path())
        .args(["view", "--vault-password-file"])
        .arg(&pwf)
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What ansible-vault shows parses (upstream's way) back to the same values.
    assert_eq!(
        parse_vault_env(&String::from_utf8(out.stdout).unwrap()),
        kat_entries()
    );
}

/// Upstream hyops' python, or a visible SKIPPED (a failure with HYOPS_REQUIRE_UPSTREAM=1).
fn upstream_python() -> Option<PathBuf> {
    optional::require("upstream hyops", "UPSTREAM", || {
        let py = std::env::var("HYOPS_UPSTREAM_PYTHON")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-hyops/bin/python")
            });
        match Command::new(&py)
            .args(["-c", "import hyops.runtime.vault"])
            .output()
        {
            Ok(o) if o.status.success() => Ok(py),
            Ok(o) => Err(format!(
                "{} cannot import hyops: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            )),
            Err(e) => Err(format!(
                "cannot run {} ({e}); see ../shared/upstream/SOURCE.md (python3 -m venv .venv-hyops && .venv-hyops/bin/pip install ../shared/upstream/hybridops-core)",
                py.display()
            )),
        }
    })
}

/// Run upstream's vault module in `py` with `ansible-vault` (from `bin`) on PATH.
fn upstream(py: &Path, bin: &Path, dir: &Path, script: &str) -> std::process::Output {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(parent) = bin.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut p = parent.as_os_str().to_owned();
        p.push(":");
        p.push(&path);
        path = p;
    }
    Command::new(py)
        .args(["-c", script])
        .env("PATH", path)
        .env("TMPDIR", dir)
        .env_remove("HYOPS_VAULT_PASSWORD_FILE")
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .output()
        .unwrap()
}

#[test]
fn upstream_hyops_reads_the_vault_we_write() {
    let (Some(bin), Some(py)) = (ansible_vault(), upstream_python()) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let pwf = d.path().join("pw");
    std::fs::write(&pwf, "kät-pässwörd 鍵 🔑\n").unwrap();
    let entries: BTreeMap<String, Secret> = kat_entries()
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    let f = d.path().join("bootstrap.vault.env");
    write_vault_env(&f, &entries, &Secret::new("kät-pässwörd 鍵 🔑")).unwrap();
    let out = upstream(
        &py,
        &bin,
        d.path(),
        &format!(
            "import json, pathlib\nfrom hyops.runtime.vault import read_env, VaultAuth\nprint(json.dumps(read_env(pathlib.Path({:?}), VaultAuth(password_file={:?}))))",
            f.display().to_string(),
            pwf.display().to_string()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read, kat_entries());
}

#[test]
fn we_read_the_vault_upstream_hyops_writes() {
    let (Some(bin), Some(py)) = (ansible_vault(), upstream_python()) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let pwf = d.path().join("pw");
    std::fs::write(&pwf, "パスワード\u{3000}\n").unwrap();
    let f = d.path().join("bootstrap.vault.env");
    let values = serde_json::to_string(&kat_entries()).unwrap();
    let out = upstream(
        &py,
        &bin,
        d.path(),
        &format!(
            "import json, pathlib\nfrom hyops.runtime.vault import write_env, VaultAuth\nwrite_env(pathlib.Path({:?}), VaultAuth(password_file={:?}), json.loads({:?}))",
            f.display().to_string(),
            pwf.display().to_string(),
            values
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pw = read_password(&PasswordSource::File(pwf), Duration::from_secs(2)).unwrap();
    assert_eq!(exposed(&read_vault_env(&f, &pw).unwrap()), kat_entries());
}

#[test]
fn password_sources_are_trimmed_as_ansible_and_upstream_trim_them() {
    assert_eq!(trim_like_ansible_file(" \tpw \x0b\x0c\r\n"), "pw");
    assert_eq!(
        trim_like_ansible_file("パスワード\u{3000}\n"),
        "パスワード\u{3000}"
    );
    assert_eq!(trim_like_python_str("\u{3000}pw\x1c\x1f \n"), "pw");
}
