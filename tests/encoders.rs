//! The two encoders every user string passes on its way to Proxmox (issue 8, kind 2), held to
//! arbitrary strings: a property-string value either reaches Proxmox's parser as exactly one
//! value (checked with the simulator's independent parser, which follows pve-common's
//! `parse_property_string`) or is refused; a cloud-init scalar reads back as exactly the same
//! string with the project's YAML 1.1 reader and with PyYAML, the parser cloud-init itself
//! uses.

use crate::optional;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use hyops_pve::plan::userdata::{generated_user_data, yaml_scalar, YamlStyle};
use hyops_pve::pve::encode_value;
use hyops_pve::sim::check::parse_property_string;
use hyops_pve::sim::spec::spec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};

/// The project's YAML 1.1 reader (PyYAML's `safe_load`), as JSON.
fn parse_overlay_yaml(text: &str) -> Result<Value, String> {
    hyops_pve::yaml::safe_load(text)
        .map_err(|e| e.to_string())?
        .to_json("doc")
        .map_err(|e| e.to_string())
}

fn net_keys() -> &'static BTreeMap<String, hyops_pve::sim::spec::Schema> {
    let s = spec().expect("embedded spec");
    let ep = s
        .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
        .expect("config endpoint");
    let f = s
        .param(ep, "net0")
        .and_then(|p| p.format.as_ref())
        .expect("net0 format");
    s.keys(f).expect("net0 keys")
}

/// Strings that stress both encoders: separators, YAML syntax, line breaks of every kind.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[,=;: \\n\\r\\t#'\"\\-\\[\\]{}&*!|>%@`a-z0-9\u{85}\u{2028}\u{2029}\u{feff}]{0,24}",
        Just("yes".to_string()),
        Just("0x1F".to_string()),
        Just("1e3".to_string()),
        Just("~".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_property_value_is_one_value_or_refused(v in nasty()) {
        match encode_value("bridge", &v) {
            Ok(e) => {
                prop_assert_eq!(&e, &v);
                let line = format!("virtio,bridge={e},tag=5");
                let parsed = parse_property_string(net_keys(), &line)
                    .map_err(|errs| TestCaseError::fail(format!("{errs:?}")))?;
                let keys: Vec<&str> = parsed.keys().map(String::as_str).collect();
                prop_assert_eq!(keys, vec!["bridge", "model", "tag"]);
                prop_assert_eq!(parsed["bridge"].as_str(), v.as_str());
            }
            Err(err) => {
                prop_assert!(
                    v.is_empty() || v.chars().any(|c| c == ',' || c == '=' || c.is_whitespace() || c.is_control()),
                    "refused a harmless value {v:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_yaml_scalar_reads_back_as_the_same_string(s in nasty()) {
        for style in [YamlStyle::PlainIfSafe, YamlStyle::Quoted] {
            let doc = format!("k: {}\n", yaml_scalar(&s, style));
            let v = parse_overlay_yaml(&doc).map_err(|e| TestCaseError::fail(format!("{doc:?}: {e}")))?;
            prop_assert_eq!(v, json!({"k": s.clone()}), "{:?}", doc);
        }
    }

    #[test]
    fn generated_user_data_keeps_its_keys_whatever_the_values(
        domain in nasty(), user in nasty(), key in nasty()
    ) {
        let ud = generated_user_data("app-01", &domain, &user, std::slice::from_ref(&key), None);
        let v = parse_overlay_yaml(&ud).map_err(|e| TestCaseError::fail(format!("{ud:?}: {e}")))?;
        let keys: Vec<&str> = v.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        let mut keys = keys;
        keys.sort_unstable();
        prop_assert_eq!(keys, vec!["fqdn", "hostname", "manage_etc_hosts", "preserve_hostname", "runcmd", "users"]);
        prop_assert_eq!(&v["fqdn"], &json!(format!("app-01.{domain}")));
        prop_assert_eq!(&v["users"][0]["name"], &json!(user));
        prop_assert_eq!(&v["users"][0]["ssh_authorized_keys"], &json!([key]));
    }
}

/// PyYAML (YAML 1.1, what cloud-init parses user-data with) reads every encoded scalar back
/// unchanged.
#[test]
fn pyyaml_reads_every_encoded_scalar_back_unchanged() {
    let Some(()) = optional::require("PyYAML (python3 -c 'import yaml')", "PYYAML", || {
        Command::new("python3")
            .args(["-c", "import yaml"])
            .status()
            .map_err(|e| format!("python3: {e}"))
            .and_then(|s| {
                s.success()
                    .then_some(())
                    .ok_or_else(|| "PyYAML is not installed".to_string())
            })
    }) else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = nasty();
    let mut samples: Vec<String> = [
        "yes",
        "No",
        "on",
        "y",
        "~",
        "null",
        "0x10",
        "0o17",
        "010",
        "1_000",
        "1e3",
        "1.5e+3",
        ".inf",
        "12:30",
        "2001-12-14",
        "",
        " lead",
        "trail ",
        "a: b",
        "#x",
        "- x",
        "'",
        "\"",
        "\\",
        "x\u{85}y",
        "x\u{2028}y",
        "x\u{2029}y",
        "\u{feff}",
        "\u{7f}",
        "\u{80}",
        "\u{1F600}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for _ in 0..400 {
        samples.push(strat.new_tree(&mut runner).expect("strategy").current());
    }
    let mut doc = String::new();
    for (i, s) in samples.iter().enumerate() {
        doc.push_str(&format!(
            "p{i}: {}\n",
            yaml_scalar(s, YamlStyle::PlainIfSafe)
        ));
        doc.push_str(&format!("q{i}: {}\n", yaml_scalar(s, YamlStyle::Quoted)));
    }
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .expect("write doc");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "PyYAML refused the document: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json from python");
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(v[format!("p{i}")], json!(s), "plain-if-safe {s:?}");
        assert_eq!(v[format!("q{i}")], json!(s), "quoted {s:?}");
    }
}
