//! The runtime vault: ansible-vault 1.1 AES256 encryption/decryption, password sources and
//! env-file parsing. An optional cross-check runs the real `ansible-vault` when
//! `HYOPS_TEST_ANSIBLE_VAULT` names its binary.

use std::collections::BTreeMap;
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

/// A document produced by `ansible-vault encrypt` (vault 1.1, password "hyops-test"),
/// when one is available, proves interoperability; see `HYOPS_TEST_ANSIBLE_VAULT`.
#[test]
fn interoperates_with_real_ansible_vault_when_available() {
    let Ok(bin) = std::env::var("HYOPS_TEST_ANSIBLE_VAULT") else {
        eprintln!("skipped: HYOPS_TEST_ANSIBLE_VAULT not set (path to ansible-vault)");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let pwf = d.path().join("pw");
    std::fs::write(&pwf, "hyops-test\n").unwrap();
    // ansible-vault encrypts, we decrypt.
    let plain = d.path().join("plain.env");
    std::fs::write(&plain, "NETBOX_API_TOKEN=nb-123\n").unwrap();
    let st = std::process::Command::new(&bin)
        .args(["encrypt", "--vault-password-file"])
        .arg(&pwf)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(st.success());
    let doc = std::fs::read_to_string(&plain).unwrap();
    assert_eq!(
        decrypt(&doc, &Secret::new("hyops-test")).unwrap(),
        b"NETBOX_API_TOKEN=nb-123\n"
    );
    // we encrypt, ansible-vault decrypts.
    let ours = d.path().join("ours.env");
    std::fs::write(
        &ours,
        encrypt(b"A=1\n", &Secret::new("hyops-test")).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args(["view", "--vault-password-file"])
        .arg(&pwf)
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"A=1\n");
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
