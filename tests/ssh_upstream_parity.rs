//! The readiness gate's pure parts against upstream hyops itself (its own Python, from
//! `../shared/upstream`): target choice and skip warnings (§5.3), evidence label tokens, the
//! classification of auth failures (§5.5), the automatic ProxyJump and its note (§5.4), and
//! the summary of a gate that probes nothing. Required in CI (`HYOPS_REQUIRE_UPSTREAM=1`);
//! python from `HYOPS_UPSTREAM_PYTHON`, default `<repo>/.venv-hyops/bin/python`.

use crate::optional;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hyops_pve::ssh::gate::{
    classify, collect_targets, effective_proxy, run_gate, safe_label_token, GateConfig, GateEnv,
};
use hyops_pve::ssh::{Identities, KnownHosts, TcpDialer};
use serde_json::{json, Value};

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
            .args(["-c", "import hyops.drivers.config.ansible.connectivity"])
            .output()
        {
            Ok(o) if o.status.success() => Ok(py),
            Ok(o) => Err(format!(
                "{} cannot import hyops: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => Err(format!(
                "cannot run {} ({e}); see ../shared/upstream/SOURCE.md",
                py.display()
            )),
        }
    })
}

const SCRIPT: &str = r#"
import json, sys, types, tempfile
from pathlib import Path
from hyops.drivers.config.ansible import connectivity as c
from hyops.drivers.iac.terragrunt._internal import post_apply_readiness as r

req = json.load(sys.stdin)
out = {}
out["targets"] = [list(r._collect_platform_vm_targets(o)) for o in req["outputs"]]
out["labels"] = [c.safe_label_token(s) for s in req["labels"]]
out["classify"] = [
    c._classify_ssh_auth_probe_failure(
        result=types.SimpleNamespace(stdout="", stderr=t), label="L", access_mode="direct",
        gcp_iap_instance="", gcp_iap_project_id="", gcp_iap_zone="")
    for t in req["classify"]
]
proxies = []
for case in req["proxy"]:
    root = Path(tempfile.mkdtemp())
    if case.get("api_ip") is not None:
        (root / "meta").mkdir()
        (root / "meta" / "proxmox.ready.json").write_text(json.dumps({"runtime": {"api_ip": case["api_ip"]}}))
    if case.get("user") is not None:
        (root / "credentials").mkdir()
        (root / "credentials" / "proxmox.credentials.tfvars").write_text('proxmox_ssh_username = "%s"\n' % case["user"])
    inputs = dict(case["inputs"])
    note = c.apply_proxy_jump_auto(inputs, root)
    proxies.append({"host": str(inputs.get("ssh_proxy_jump_host") or ""),
                    "user": str(inputs.get("ssh_proxy_jump_user") or ""), "note": note})
out["proxy"] = proxies
summaries = []
for case in req["summaries"]:
    root = Path(tempfile.mkdtemp())
    s, w, e = r.run_post_apply_ssh_readiness(
        module_ref="platform/onprem/platform-vm", command_name="apply", inputs=case["inputs"],
        outputs=case["outputs"], runtime_root=root, cwd=str(root), env={}, evidence_dir=root,
        redact=True)
    summaries.append({"summary": s, "warnings": w, "error": e})
out["summaries"] = summaries
print(json.dumps(out))
"#;

fn upstream(py: &Path, req: &Value) -> Value {
    let mut child = Command::new(py)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "upstream script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn outputs_cases() -> Vec<Value> {
    vec![
        json!({"vms": {
            "app-01": {"ipv4_address": "10.0.0.5", "ipv4_configured_primary": "10.0.0.9/24"},
            "db 01": {"ipv4_address": null, "ipv4_configured_primary": "10.0.1.5/24"},
            "w": {"is_windows": true, "ipv4_address": "10.0.2.2"},
            "d": {"ipv4_configured_primary": "dhcp", "ipv4_addresses": [["127.0.0.1"], ["10.0.3.3"]]},
            "n": {"ipv4_configured_primary": "dhcp", "ipv4_addresses": []},
            "i": {"ipv4_configured_primary": "dhcp", "interfaces_configured": [{"ipv4": {"address": "dhcp"}}, {"ipv4": {"address": "10.0.4.4/24"}}]},
            "s": {"is_windows": "true", "ipv4_address": "10.0.5.5"},
        }}),
        json!({"vms": []}),
        json!({}),
    ]
}

#[test]
fn target_choice_labels_and_classification_match_upstream() {
    let Some(py) = upstream_python() else { return };
    let labels = vec![
        "platform_vm_targets.app-01",
        "platform_vm_targets.db 01",
        "  weird/name!! ",
        "...",
        "platform_vm_targets.ünïcode",
    ];
    let classify_cases = vec![
        "Connection timed out during banner exchange",
        "ssh: connect to host 10.0.0.1 port 22: Connection timed out",
        "opsadmin@10.0.0.1: Permission denied (publickey).",
        "kex_exchange_identification: Connection closed by remote host",
        "channel 0: open failed: connect failed: Connection refused",
    ];
    let req = json!({
        "outputs": outputs_cases(),
        "labels": labels,
        "classify": classify_cases,
        "proxy": [],
        "summaries": [],
    });
    let up = upstream(&py, &req);
    for (i, o) in outputs_cases().iter().enumerate() {
        let (t, w) = collect_targets(o);
        let ours = json!([
            t.iter()
                .map(|t| json!({"name": t.name, "host": t.host}))
                .collect::<Vec<_>>(),
            w
        ]);
        assert_eq!(ours, up["targets"][i], "outputs case {i}");
    }
    for (i, l) in labels.iter().enumerate() {
        assert_eq!(json!(safe_label_token(l)), up["labels"][i], "label {l:?}");
    }
    for (i, c) in classify_cases.iter().enumerate() {
        assert_eq!(json!(classify(c, "L")), up["classify"][i], "classify {c:?}");
    }
}

fn cfg() -> GateConfig {
    GateConfig {
        enabled: true,
        required: true,
        target_user: "ops".into(),
        target_port: 22,
        connectivity_timeout_s: 5,
        connectivity_wait_s: 300,
        ssh_proxy_jump_auto: true,
        ssh_proxy_jump_host: String::new(),
        ssh_proxy_jump_user: String::new(),
        ssh_proxy_jump_port: 22,
        ssh_private_key_file: String::new(),
        wait_cloud_init: false,
    }
}

fn env(api_ip: Option<&str>, user: Option<&str>, dir: &Path) -> GateEnv {
    GateEnv {
        proxmox_api_ip: api_ip.map(str::to_string),
        proxmox_ssh_username: user.map(str::to_string),
        evidence_dir: dir.to_path_buf(),
        dialer: Arc::new(TcpDialer::loopback_only()),
        known_hosts: Arc::new(KnownHosts::new(dir.join("kh"))),
        default_identities: Identities::default(),
        vm_identities: BTreeMap::new(),
        home: None,
        retry_interval: Duration::from_secs(3),
        max_parallel: 4,
        time_scale: 1.0,
    }
}

#[test]
fn the_auto_proxy_jump_and_its_note_match_upstream() {
    let Some(py) = upstream_python() else { return };
    let d = tempfile::tempdir().unwrap();
    // (api_ip, tfvars user, explicit host, explicit user, auto)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a str, &'a str, bool);
    let cases: Vec<Case> = vec![
        (Some("192.0.2.10"), Some("root"), "", "", true),
        (Some("192.0.2.10"), Some("pveops"), "", "", true),
        (Some("192.0.2.10"), None, "", "", true),
        (Some("192.0.2.10"), Some("root"), "", "jumper", true),
        (Some("192.0.2.10"), Some("root"), "bastion.lab", "", true),
        (Some("192.0.2.10"), Some("root"), "", "", false),
        (None, Some("root"), "", "", true),
    ];
    let req = json!({
        "outputs": [], "labels": [], "classify": [], "summaries": [],
        "proxy": cases.iter().map(|(ip, user, h, u, auto)| json!({
            "api_ip": ip, "user": user,
            "inputs": {"ssh_proxy_jump_host": h, "ssh_proxy_jump_user": u, "ssh_proxy_jump_auto": auto},
        })).collect::<Vec<_>>(),
    });
    let up = upstream(&py, &req);
    for (i, (ip, user, h, u, auto)) in cases.iter().enumerate() {
        let c = GateConfig {
            ssh_proxy_jump_host: h.to_string(),
            ssh_proxy_jump_user: u.to_string(),
            ssh_proxy_jump_auto: *auto,
            ..cfg()
        };
        let p = effective_proxy(&c, &env(*ip, *user, d.path()));
        assert_eq!(
            json!({"host": p.host, "user": p.user, "note": p.auto_note}),
            up["proxy"][i],
            "proxy case {i}"
        );
    }
}

#[tokio::test]
async fn a_gate_that_probes_nothing_writes_upstreams_summary() {
    let Some(py) = upstream_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let windows_only = json!({"vms": {"w": {"is_windows": true, "ipv4_address": "10.0.2.2"}}});
    let req = json!({
        "outputs": [], "labels": [], "classify": [], "proxy": [],
        "summaries": [
            {"inputs": {"ssh_username": "ops", "post_apply_ssh_readiness": {"enabled": false}}, "outputs": windows_only},
            {"inputs": {"ssh_username": "ops", "post_apply_ssh_readiness": {"required": false, "connectivity_timeout_s": 7, "target_port": 2222}}, "outputs": windows_only},
        ],
    });
    let up = upstream(&py, &req);
    let cases = [
        GateConfig {
            enabled: false,
            ..cfg()
        },
        GateConfig {
            required: false,
            connectivity_timeout_s: 7,
            target_port: 2222,
            ..cfg()
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let r = run_gate(c, &windows_only, &env(None, None, d.path())).await;
        assert_eq!(r.summary, up["summaries"][i]["summary"], "summary case {i}");
        assert_eq!(
            json!(r.warnings),
            up["summaries"][i]["warnings"],
            "warnings case {i}"
        );
        assert_eq!(
            r.error.unwrap_or_default(),
            up["summaries"][i]["error"].as_str().unwrap_or("")
        );
    }
}
