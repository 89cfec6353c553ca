//! Running the `hyops-pve` binary the way an operator does, hermetically: no inherited HyOps,
//! Proxmox or vault variables, `HOME` and the simulator home in a temp dir, and the outputs
//! split into the stdout JSON document(s) and stderr lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Variables that would make a test depend on the machine it runs on.
const SCRUB_PREFIXES: &[&str] = &["HYOPS_", "PROXMOX_", "ANSIBLE_VAULT", "NETBOX_"];

/// The binary with a clean environment and `HOME` set to `home`.
pub fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hyops-pve"));
    // by bytes: a variable that is not UTF-8 must neither panic the harness nor slip through
    for (k, _) in std::env::vars_os() {
        let name = k.as_encoded_bytes();
        if SCRUB_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
        {
            c.env_remove(k);
        }
    }
    c.env("HOME", home)
        .env("HYOPS_PVE_SIM_HOME", home.join("sim-home"))
        .env("HYOPS_PVE_SIM_TIME_SCALE", "0.0005")
        .env("TMPDIR", home.join("tmp"))
        .stdin(Stdio::null());
    let _ = std::fs::create_dir_all(home.join("tmp"));
    c
}

/// Run to completion off the async runtime's worker (the simulator may live on it).
pub async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run hyops-pve"))
        .await
        .expect("join")
}

/// Run synchronously.
pub fn run_sync(mut cmd: Command) -> Output {
    cmd.output().expect("run hyops-pve")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every JSON value on stdout, in order.
pub fn json_docs(o: &Output) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter::<serde_json::Value>()
        .map(|d| d.unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o))))
        .collect()
}

/// The one JSON document on stdout (fails when there are zero or several).
pub fn one_doc(o: &Output) -> serde_json::Value {
    let mut docs = json_docs(o);
    assert_eq!(
        docs.len(),
        1,
        "expected exactly one JSON document on stdout, got {}: {}\nstderr: {}",
        docs.len(),
        stdout(o),
        stderr(o)
    );
    docs.remove(0)
}

pub fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A temp dir whose `root/` is an existing, empty runtime root.
pub fn home_with_root() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    // The template-image state `validate` resolves, as hyops does (ubuntu-24.04 → 9000).
    let template = root.join("state/modules/core__onprem__template-image/latest.json");
    std::fs::create_dir_all(template.parent().unwrap()).unwrap();
    std::fs::write(
        &template,
        r#"{"status": "ok", "outputs": {"template_vm_ids": {"ubuntu-24.04": 9000}}}"#,
    )
    .unwrap();
    (d, root)
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}
