//! Proxmox credentials (§7), NetBox env hydration (§4.1) and API-free preflight checks.

use std::collections::BTreeMap;
use std::path::Path;

use hyops_pve::hyops::netbox_env::{normalize_netbox_url, NETBOX_VAULT_LOCKED_WARNING};
use hyops_pve::hyops::preflight::disk_check;
use hyops_pve::hyops::vault::write_vault_env;
use hyops_pve::hyops::*;
use hyops_pve::secret::Secret;
use serde_json::json;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write_tfvars(root: &Path, body: &str) {
    let p = root.join("credentials/proxmox.credentials.tfvars");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

const FULL: &str = r#"
# written by hyops init proxmox
proxmox_url          = "https://10.0.0.5:8006/api2/json"
proxmox_token_id     = "automation@pam!infra-token"   # trailing comment
proxmox_token_secret = "tf-secret-1"
proxmox_node         = "pve1"
// c-style comment
storage_iso = "isos"
"#;

#[test]
fn tfvars_values_win_over_env_and_defaults_fill_the_rest() {
    let d = tempfile::tempdir().unwrap();
    write_tfvars(d.path(), FULL);
    let c = load_proxmox_credentials(
        &RuntimeRoot::at(d.path()),
        &env(&[
            ("PROXMOX_NODE", "env-node"),
            ("PROXMOX_NETWORK_BRIDGE", "vmbr9"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(c.url, "https://10.0.0.5:8006/api2/json");
    assert_eq!(c.token_id, "automation@pam!infra-token");
    assert_eq!(c.token_secret.expose(), "tf-secret-1");
    assert_eq!(c.node, "pve1");
    assert_eq!(c.network_bridge, "vmbr9", "env fills what tfvars lacks");
    assert_eq!(
        (
            c.storage_pool.as_str(),
            c.storage_iso.as_str(),
            c.storage_snippets.as_str()
        ),
        ("local-lvm", "isos", "isos")
    );
    assert_eq!(c.ssh_username, "root");
    assert_eq!(c.host().as_deref(), Some("10.0.0.5"));
    assert!(!format!("{c:?}").contains("tf-secret-1"));
}

#[test]
fn tls_is_verified_by_default() {
    let d = tempfile::tempdir().unwrap();
    write_tfvars(d.path(), FULL);
    let c = load_proxmox_credentials(&RuntimeRoot::at(d.path()), &env(&[]), None).unwrap();
    assert!(!c.tls.skip_verify);
    assert_eq!(c.tls.ca_file, None);
}

#[test]
fn tls_skip_by_tfvars_or_env_and_pin_and_ca_are_read() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    write_tfvars(d.path(), &format!("{FULL}\nproxmox_skip_tls = true\n"));
    assert!(
        load_proxmox_credentials(&r, &env(&[]), None)
            .unwrap()
            .tls
            .skip_verify
    );
    write_tfvars(d.path(), FULL);
    assert!(
        load_proxmox_credentials(&r, &env(&[("PROXMOX_SKIP_TLS", "1")]), None)
            .unwrap()
            .tls
            .skip_verify
    );
    assert!(
        !load_proxmox_credentials(&r, &env(&[("PROXMOX_SKIP_TLS", "false")]), None)
            .unwrap()
            .tls
            .skip_verify
    );
    let fp = "AB:".repeat(31) + "AB";
    let ca = d.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let c = load_proxmox_credentials(
        &r,
        &env(&[
            ("PROXMOX_TLS_FINGERPRINT", &fp),
            ("PROXMOX_CA_FILE", ca.to_str().unwrap()),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(c.tls.fingerprint_sha256, Some([0xab; 32]));
    assert_eq!(c.tls.ca_file.as_deref(), Some(ca.as_path()));
    let e = load_proxmox_credentials(&r, &env(&[("PROXMOX_CA_FILE", "/nope/ca.pem")]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxmox_ca_file=/nope/ca.pem"), "{e}");
    let e = load_proxmox_credentials(&r, &env(&[("PROXMOX_TLS_FINGERPRINT", "zz")]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxmox_tls_fingerprint"), "{e}");
}

#[test]
fn env_fallbacks_and_vault_secret_are_used() {
    let d = tempfile::tempdir().unwrap();
    write_tfvars(d.path(), "proxmox_url = \"https://h:8006/api2/json\"\nproxmox_node = \"n\"\nproxmox_token_secret = \"MISSING_PROXMOX_TOKEN_SECRET\"\n");
    let vault = BTreeMap::from([(
        "PROXMOX_TOKEN_SECRET".to_string(),
        Secret::new("from-vault"),
    )]);
    let c = load_proxmox_credentials(
        &RuntimeRoot::at(d.path()),
        &env(&[("PROXMOX_TOKEN_ID", "u@pam!t")]),
        Some(&vault),
    )
    .unwrap();
    assert_eq!(c.token_id, "u@pam!t");
    assert_eq!(
        c.token_secret.expose(),
        "from-vault",
        "placeholder never used as a value"
    );
}

#[test]
fn missing_keys_and_missing_provider_use_contract_messages() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let e = load_proxmox_credentials(&r, &env(&[]), None)
        .unwrap_err()
        .to_string();
    // The first line is upstream's text verbatim; the help lines follow it.
    assert_eq!(
        e.lines().next().unwrap(),
        format!(
            "missing required credentials: proxmox (expected credentials in {})",
            d.path().join("credentials").display()
        )
    );
    write_tfvars(
        d.path(),
        "proxmox_url = \"https://h/api2/json\"\nproxmox_node = \"MISSING_PROXMOX_NODE\"\n",
    );
    let e = load_proxmox_credentials(&r, &env(&[]), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e.lines().next().unwrap(),
        format!(
            "proxmox: credential contract missing keys in {}: proxmox_token_id, proxmox_token_secret, proxmox_node",
            d.path().join("credentials/proxmox.credentials.tfvars").display()
        )
    );
}

#[test]
fn an_unclosed_quoted_value_is_named_by_line_without_its_value() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    write_tfvars(
        d.path(),
        &FULL.replace(
            "proxmox_token_secret = \"tf-secret-1\"",
            "proxmox_token_secret = \"tf-secret-1",
        ),
    );
    let e = load_proxmox_credentials(&r, &env(&[]), None)
        .unwrap_err()
        .to_string();
    let file = d.path().join("credentials/proxmox.credentials.tfvars");
    assert_eq!(
        e.lines().next().unwrap(),
        format!(
            "proxmox: credential contract missing keys in {}: proxmox_token_secret",
            file.display()
        ),
        "the first line stays upstream's"
    );
    assert!(
        e.contains(&format!(
            "line 5 of {} sets proxmox_token_secret but its quoted value has no closing quote, so the line was ignored",
            file.display()
        )),
        "{e}"
    );
    assert!(!e.contains("tf-secret-1"), "the value is never shown: {e}");
}

#[test]
fn tfvars_parser_notes_the_lines_with_an_unclosed_quote() {
    let (m, unclosed) = parse_tfvars_noting("a = \"ok\"\nbroken = \"unterminated\n\nb = \"x\\\"\n");
    assert_eq!(m.get("a").map(String::as_str), Some("ok"));
    assert_eq!(
        unclosed,
        vec![
            UnclosedValue {
                line: 2,
                key: "broken".into()
            },
            UnclosedValue {
                line: 4,
                key: "b".into()
            },
        ]
    );
}

#[test]
fn tfvars_parser_reads_strings_bools_numbers_and_escapes() {
    let m = parse_tfvars("a = \"x \\\"q\\\" # not comment\"\nb = true # c\nc = 8802\n# d = 1\nbroken = \"unterminated\n");
    assert_eq!(m["a"], "x \"q\" # not comment");
    assert_eq!(m["b"], "true");
    assert_eq!(m["c"], "8802");
    assert!(!m.contains_key("d") && !m.contains_key("broken"));
}

#[test]
fn proxmox_ready_marker_is_read_leniently() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    assert_eq!(read_proxmox_ready(&r).unwrap(), None);
    write_json_atomic(&r.proxmox_ready_file(), &json!({"target": "proxmox", "status": "ready", "runtime": {"api_ip": "10.0.0.5", "node": "pve1", "bridge": "vmbr0"}, "context": {"ssh_public_key": "ssh-ed25519 AAA"}})).unwrap();
    let ready = read_proxmox_ready(&r).unwrap().unwrap();
    assert!(ready.is_ready());
    assert_eq!(ready.api_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(ready.ssh_public_key.as_deref(), Some("ssh-ed25519 AAA"));
}

// ---- NetBox env (§4.1) ----

fn netbox_state(root: &Path, outputs: serde_json::Value) {
    write_json_atomic(
        &root.join("state/modules/platform__onprem__netbox/latest.json"),
        &json!({"status": "ok", "outputs": outputs}),
    )
    .unwrap();
}

#[test]
fn authority_root_resolution_order() {
    let home = Path::new("/home/u");
    let r = RuntimeRoot::at(Path::new("/rt"));
    assert_eq!(
        netbox_authority_root(&r, &env(&[]), home).unwrap(),
        Path::new("/home/u/.hybridops/envs/shared")
    );
    assert_eq!(
        netbox_authority_root(&r, &env(&[("HYOPS_NETBOX_AUTHORITY_ENV", "hub")]), home).unwrap(),
        Path::new("/home/u/.hybridops/envs/hub")
    );
    assert_eq!(
        netbox_authority_root(
            &r,
            &env(&[
                ("HYOPS_NETBOX_AUTHORITY_ROOT", "rel"),
                ("HYOPS_NETBOX_AUTHORITY_ENV", "hub")
            ]),
            home
        )
        .unwrap(),
        Path::new("/rt/rel")
    );
}

#[test]
fn netbox_values_come_from_env_file_state_and_vault_and_authority_overrides() {
    let local = tempfile::tempdir().unwrap();
    let auth = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(local.path());
    let pw = Secret::new("vpw");
    netbox_state(local.path(), json!({"netbox_url": "http://local:8000"}));
    write_vault_env(
        &local.path().join("vault/bootstrap.vault.env"),
        &BTreeMap::from([("NETBOX_API_TOKEN".into(), Secret::new("local-tok"))]),
        &pw,
    )
    .unwrap();
    let nb = hydrate_netbox_env(&r, local.path(), &env(&[]), Some(&pw)).unwrap();
    assert_eq!(
        nb.api_url.as_deref(),
        Some("http://local:8000"),
        "/api/ stripped"
    );
    assert_eq!(nb.api_token.as_ref().unwrap().expose(), "local-tok");
    // authority overrides inferred values
    std::fs::create_dir_all(auth.path().join("credentials")).unwrap();
    std::fs::write(
        auth.path().join("credentials/netbox.env"),
        "NETBOX_API_URL=https://nb.auth/api\nNETBOX_API_TOKEN=auth-tok\n",
    )
    .unwrap();
    let nb = hydrate_netbox_env(&r, auth.path(), &env(&[]), Some(&pw)).unwrap();
    assert_eq!(nb.api_url.as_deref(), Some("https://nb.auth"));
    assert_eq!(nb.api_token.as_ref().unwrap().expose(), "auth-tok");
    // explicit process env wins over everything
    let nb = hydrate_netbox_env(
        &r,
        auth.path(),
        &env(&[
            ("NETBOX_API_URL", "http://explicit/api/"),
            ("NETBOX_API_TOKEN", "exp"),
        ]),
        Some(&pw),
    )
    .unwrap();
    assert_eq!(
        (nb.api_url.as_deref(), nb.api_token.unwrap().expose()),
        (Some("http://explicit"), "exp")
    );
}

#[test]
fn locked_vault_warns_and_missing_values_give_the_contract_error() {
    let local = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(local.path());
    write_vault_env(
        &local.path().join("vault/bootstrap.vault.env"),
        &BTreeMap::from([("NETBOX_API_TOKEN".into(), Secret::new("t"))]),
        &Secret::new("x"),
    )
    .unwrap();
    let nb = hydrate_netbox_env(&r, local.path(), &env(&[]), None).unwrap();
    assert_eq!(nb.warnings, vec![NETBOX_VAULT_LOCKED_WARNING.to_string()]);
    assert_eq!(
        nb.require(Some("dev")).unwrap_err().to_string(),
        "inputs.addressing.mode=ipam requires NETBOX_API_URL, NETBOX_API_TOKEN. Run: hyops secrets ensure --env dev NETBOX_API_TOKEN (and ensure NETBOX_API_URL is set via NetBox state or credentials/netbox.env)."
    );
    assert_eq!(normalize_netbox_url("https://x/api/"), "https://x");
}

#[test]
fn netbox_readiness_messages() {
    let d = tempfile::tempdir().unwrap();
    let e = netbox_ready(d.path()).unwrap_err().to_string();
    assert!(e.starts_with("ipam requires netbox ready: netbox state not found (run: hyops blueprint --env shared --ref onprem/bootstrap-netbox@v1) OR: set HYOPS_NETBOX_AUTHORITY_ENV and apply NetBox there (authority_root="), "{e}");
    write_json_atomic(
        &d.path()
            .join("state/modules/platform__onprem__netbox/latest.json"),
        &json!({"status": "error"}),
    )
    .unwrap();
    assert!(netbox_ready(d.path())
        .unwrap_err()
        .to_string()
        .ends_with("netbox state is not ready: status=error"));
    netbox_state(d.path(), json!({}));
    assert!(netbox_ready(d.path()).is_ok());
}

// ---- preflight ----

#[test]
fn disk_check_uses_the_contract_message() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(&d.path().join("not/yet/created"));
    assert!(disk_check(&r, 1).ok);
    let c = disk_check(&r, u64::MAX / 2);
    assert!(!c.ok && c.mandatory);
    assert!(
        c.detail
            .starts_with("insufficient disk space under runtime root: free="),
        "{}",
        c.detail
    );
    assert!(
        c.detail.ends_with(&format!(
            "MB required>={}MB ({})",
            u64::MAX / 2,
            r.path().display()
        )),
        "{}",
        c.detail
    );
}

#[test]
fn preflight_reports_checks_and_strict_makes_all_mandatory() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    write_tfvars(d.path(), FULL);
    let opts = PreflightOptions {
        template_state_ref: Some("core/onprem/template-image"),
        ..Default::default()
    };
    let rep = run_preflight_checks(&r, &opts);
    let names: Vec<&str> = rep.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "disk:runtime_root",
            "credentials:proxmox",
            "template:core/onprem/template-image",
            "readiness:proxmox"
        ]
    );
    assert!(!rep.ok(), "template state missing");
    write_json_atomic(
        &d.path()
            .join("state/modules/core__onprem__template-image/latest.json"),
        &json!({"status": "ok", "outputs": {"template_vm_id": 9000}}),
    )
    .unwrap();
    let rep = run_preflight_checks(&r, &opts);
    assert!(
        rep.ok(),
        "readiness marker is optional unless strict: {:?}",
        rep.failures()
    );
    let strict = run_preflight_checks(
        &r,
        &PreflightOptions {
            strict: true,
            ..opts
        },
    );
    assert!(!strict.ok());
    assert_eq!(strict.failures()[0].name, "readiness:proxmox");
}

#[test]
fn netbox_vault_timeout_defaults_and_clamps() {
    use hyops_pve::hyops::netbox_env::netbox_vault_read_timeout;
    use std::time::Duration;
    assert_eq!(netbox_vault_read_timeout(&env(&[])), Duration::from_secs(6));
    assert_eq!(
        netbox_vault_read_timeout(&env(&[("HYOPS_NETBOX_VAULT_READ_TIMEOUT_S", "1")])),
        Duration::from_secs(2)
    );
    assert_eq!(
        netbox_vault_read_timeout(&env(&[("HYOPS_NETBOX_VAULT_READ_TIMEOUT_S", "99")])),
        Duration::from_secs(30)
    );
    assert_eq!(
        netbox_vault_read_timeout(&env(&[("HYOPS_NETBOX_VAULT_READ_TIMEOUT_S", "x")])),
        Duration::from_secs(6)
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn tfvars_and_env_parsers_never_panic(text in "(?s).{0,400}") {
            let _ = parse_tfvars(&text);
            let _ = hyops_pve::hyops::vault::parse_env_file(&text);
        }

        #[test]
        fn state_instance_accepts_exactly_the_regex(s in "[a-zA-Z0-9_.\\- /]{0,70}") {
            let re = regex::Regex::new("^[a-z0-9][a-z0-9_.-]{0,63}$").unwrap();
            prop_assert_eq!(StateInstance::parse(&s).is_ok(), re.is_match(&s));
        }

        #[test]
        fn quoted_tfvars_strings_round_trip(v in "[ -~]{0,40}") {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            let m = parse_tfvars(&format!("k = \"{escaped}\" # c\n"));
            prop_assert_eq!(m.get("k").map(String::as_str), Some(v.as_str()));
        }
    }
}

#[test]
fn seeded_ready_root_loads_back_with_secret_from_the_vault() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let pw = Secret::new("seed-pw");
    let seed = ReadyRootSeed {
        url: "https://127.0.0.1:18006/api2/json".into(),
        token_id: "root@pam!sim".into(),
        token_secret: Secret::new("sim \"secret\""),
        node: "sim1".into(),
        api_ip: "127.0.0.1".into(),
        tls_fingerprint: Some("00".repeat(32)),
        vault_password: Some(pw.clone()),
        ..Default::default()
    };
    seed_ready_root(&r, &seed).unwrap();
    let tf = std::fs::read_to_string(r.proxmox_tfvars()).unwrap();
    assert!(!tf.contains("sim \\\"secret"), "secret only in the vault");
    assert_eq!(
        std::fs::metadata(r.proxmox_tfvars())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let vault = hyops_pve::hyops::vault::read_vault_env(&r.vault_file(), &pw).unwrap();
    let c = load_proxmox_credentials(&r, &env(&[]), Some(&vault)).unwrap();
    assert_eq!(
        (c.url.as_str(), c.node.as_str(), c.token_secret.expose()),
        (
            "https://127.0.0.1:18006/api2/json",
            "sim1",
            "sim \"secret\""
        )
    );
    assert_eq!(c.tls.fingerprint_sha256, Some([0; 32]));
    assert!(!c.tls.skip_verify);
    let ready = read_proxmox_ready(&r).unwrap().unwrap();
    assert!(ready.is_ready());
    assert_eq!(ready.api_ip.as_deref(), Some("127.0.0.1"));
}

#[test]
fn an_http_url_is_refused_unless_explicitly_allowed() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(d.path());
    let http = FULL.replace("https://10.0.0.5", "http://10.0.0.5");
    write_tfvars(d.path(), &http);
    let e = load_proxmox_credentials(&r, &env(&[]), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("uses http://")
            && e.contains("proxmox_allow_http = true")
            && e.contains("PROXMOX_ALLOW_HTTP=1"),
        "{e}"
    );
    assert!(!e.contains("tf-secret-1"));
    let c = load_proxmox_credentials(&r, &env(&[("PROXMOX_ALLOW_HTTP", "1")]), None).unwrap();
    assert!(
        c.allow_http && c.warnings[0].contains("clear text"),
        "{:?}",
        c.warnings
    );
    write_tfvars(d.path(), &format!("{http}proxmox_allow_http = true\n"));
    let c = load_proxmox_credentials(&r, &env(&[]), None).unwrap();
    assert!(c.allow_http);
    write_tfvars(d.path(), FULL);
    let c = load_proxmox_credentials(&r, &env(&[]), None).unwrap();
    assert!(!c.allow_http && c.warnings.is_empty());
}

#[test]
fn missing_credentials_say_where_they_were_looked_for_and_how_to_fix_it() {
    let d = tempfile::tempdir().unwrap();
    let r = RuntimeRoot::at(&d.path().join("envs/dev"));
    let elsewhere = d.path().join("elsewhere.tfvars");
    let e = load_proxmox_credentials(
        &r,
        &env(&[
            ("HYOPS_PROXMOX_TFVARS", elsewhere.to_str().unwrap()),
            ("PROXMOX_URL", "https://h:8006/api2/json"),
        ]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!(
            "looked for {} (chosen by HYOPS_PROXMOX_TFVARS): it does not exist",
            elsewhere.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET, PROXMOX_NODE"),
        "{e}"
    );
    assert!(e.contains("hyops init proxmox --env dev"), "{e}");
    // A vault that holds the secret but cannot be read without a password source says so.
    write_tfvars(
        r.path(),
        "proxmox_url = \"https://h/api2/json\"\nproxmox_token_id = \"a@pam!t\"\nproxmox_node = \"pve1\"\n",
    );
    write_vault_env(
        &r.vault_file(),
        &BTreeMap::from([("PROXMOX_TOKEN_SECRET".to_string(), Secret::new("v"))]),
        &Secret::new("pw"),
    )
    .unwrap();
    let e = load_proxmox_credentials(&r, &env(&[]), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HYOPS_VAULT_PASSWORD_FILE") && e.contains("bootstrap.vault.env"),
        "{e}"
    );
}

#[test]
fn a_tfvars_path_naming_an_endless_device_is_refused_at_the_bound() {
    // HYOPS_PROXMOX_TFVARS may name any path; /dev/zero reports 0 bytes and never ends.
    let root_dir = tempfile::tempdir().unwrap();
    let e = load_proxmox_credentials(
        &RuntimeRoot::at(root_dir.path()),
        &env(&[("HYOPS_PROXMOX_TFVARS", "/dev/zero")]),
        None,
    )
    .expect_err("refused");
    assert!(e.to_string().contains("more than 1 MiB"), "{e}");
}
