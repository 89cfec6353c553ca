//! The engine's own create / no-op / destroy flow against fakepve (PyPI, an independent fake
//! Proxmox VE written by others): apply creates the pool and converges (the post-apply
//! verification reads it back), a second apply writes nothing and a plan shows no changes,
//! destroy removes exactly the pool. fakepve's documented gaps (tests/conformance/targets.rs
//! `fakepve_caps`) are kept out of the way: the disk size equals the template's (fakepve does
//! not resize), cloud-init uses the native keys and the SSH readiness gate is off (fakepve has
//! no node or guest SSH), and the CPU model is `host` (fakepve lists a placeholder model).
//!
//! Optional target `FAKEPVE` (CI installs fakepve and sets `HYOPS_REQUIRE_FAKEPVE=1`).

use crate::optional;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::{apply_inner, destroy_inner, plan_inner};
use hyops_pve::hyops::{seed_ready_root, ReadyRootSeed, RuntimeRoot};
use hyops_pve::secret::Secret;

#[derive(serde::Deserialize)]
struct Info {
    url: String,
    token_id: String,
    token_secret: String,
    node: String,
    template_vmid: u32,
    fingerprint: String,
}

/// The launcher; it stops when its stdin closes (on drop).
struct FakePve {
    child: Child,
    _stdin: ChildStdin,
    info: Info,
}

impl Drop for FakePve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch() -> Result<FakePve, String> {
    let probe = Command::new("python3")
        .args(["-c", "import fakepve, aiohttp, cryptography"])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("python3: {e}"))?;
    if !probe.success() {
        return Err(
            "python3 cannot import fakepve; python3 -m pip install 'fakepve[crypto]==0.5.0'".into(),
        );
    }
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fakepve/launch.py"
        ))
        .args(["--time-scale", "0.02"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("launch.py: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("launch.py output: {e}"))?;
    let info: Info =
        serde_json::from_str(line.trim()).map_err(|e| format!("launch.py said {line:?}: {e}"))?;
    Ok(FakePve {
        child,
        _stdin: stdin,
        info,
    })
}

const OVERLAY: &str = r#"
require_ipam: false
template_vm_id: TEMPLATE
cpu_cores: 1
memory_mb: 1024
disk_size_gb: 8
tags: [platform, fakepve]
cloud_init_mode: native
post_apply_ssh_readiness:
  enabled: false
vms:
  fp-01:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.40.0.11/24, gateway: 10.40.0.1}
  fp-02:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.40.0.12/24, gateway: 10.40.0.1}
"#;

async fn ctx(root: &Path, overlay: &Path, home: &Path) -> Ctx {
    let args = ModuleArgs {
        root: Some(root.to_path_buf()),
        module: "platform/onprem/platform-vm".into(),
        inputs: Some(overlay.to_path_buf()),
        lock_wait_s: 5,
        json: true,
        ..ModuleArgs::default()
    };
    let mut env = BTreeMap::new();
    env.insert("HYOPS_ENV".to_string(), "dev".to_string());
    env.insert("HOME".to_string(), home.display().to_string());
    Ctx::build(&args, env).await.expect("ctx")
}

fn fakepve_vms(info: &Info) -> Vec<(u32, String)> {
    let out = Command::new("curl")
        .args(["-sk", "-H"])
        .arg(format!(
            "Authorization: PVEAPIToken={}={}",
            info.token_id, info.token_secret
        ))
        .arg(format!("{}/cluster/resources?type=vm", info.url))
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut vms: Vec<(u32, String)> = v["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["template"].as_u64().unwrap_or(0) == 0)
        .filter_map(|r| Some((r["vmid"].as_u64()? as u32, r["name"].as_str()?.to_string())))
        .collect();
    vms.sort();
    vms
}

/// The `apply_report.json` of run `run_id`.
fn apply_report(root: &Path, run_id: &str) -> serde_json::Value {
    let p = root
        .join("logs/module/platform__onprem__platform-vm")
        .join(run_id)
        .join("apply_report.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_creates_converges_noops_and_destroys_on_fakepve() {
    let Some(fp) = optional::require("fakepve", "FAKEPVE", launch) else {
        return;
    };
    let info = &fp.info;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    seed_ready_root(
        &RuntimeRoot::at(&root),
        &ReadyRootSeed {
            url: info.url.clone(),
            token_id: info.token_id.clone(),
            token_secret: Secret::new(info.token_secret.clone()),
            node: info.node.clone(),
            tls_fingerprint: Some(info.fingerprint.replace(':', "").to_ascii_lowercase()),
            api_ip: "127.0.0.1".into(),
            ..ReadyRootSeed::default()
        },
    )
    .unwrap();
    let overlay = dir.path().join("o.yml");
    std::fs::write(
        &overlay,
        OVERLAY.replace("TEMPLATE", &info.template_vmid.to_string()),
    )
    .unwrap();
    let before = fakepve_vms(info);

    // create: the apply converges (post-apply verification reads Proxmox back)
    let c = ctx(&root, &overlay, dir.path()).await;
    let run = apply_inner(&c, None, None).await.expect("first apply");
    let first = apply_report(&root, &run);
    assert_eq!(first["converged"], true, "{first}");
    assert_eq!(first["summary"]["create"], 2, "{first}");
    let mut created: Vec<String> = fakepve_vms(info)
        .into_iter()
        .filter(|v| !before.contains(v))
        .map(|(_, n)| n)
        .collect();
    created.sort();
    assert_eq!(created, vec!["dev-fp-01", "dev-fp-02"]);

    // no-op: nothing to change, nothing written
    let c = ctx(&root, &overlay, dir.path()).await;
    assert_eq!(
        plan_inner(&c, true, None).await.unwrap(),
        0,
        "plan is empty"
    );
    let run = apply_inner(&c, None, None).await.expect("second apply");
    let report = apply_report(&root, &run);
    assert_eq!(report["writes"], 0, "{report}");
    assert_eq!(report["summary"]["noop"], 2, "{report}");

    // destroy: exactly the pool goes
    let c = ctx(&root, &overlay, dir.path()).await;
    destroy_inner(&c, None).await.expect("destroy");
    assert_eq!(fakepve_vms(info), before);
}
