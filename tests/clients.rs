//! Independent clients against `hyops-pve sim serve` (issue 8): proxmoxer and Ansible's
//! `community.proxmox` modules, written by others, run the everyday VM flow (clone,
//! cloud-init, NIC, resize, start, info, stop, delete) over verified HTTPS. A simulator and a
//! client written by the same hands can share a misunderstanding; these cannot.
//!
//! Optional targets (tests/optional): `PROXMOXER` needs `python3 -c 'import proxmoxer'`,
//! `ANSIBLE` needs `ansible-playbook` and the `community.proxmox` collection (the `ansible`
//! package from PyPI ships it). CI installs both and sets both switches.

use crate::optional;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `sim serve` child process, stopped on drop.
struct Served {
    child: Child,
    url: String,
    token: String,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
        .args([
            "sim",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.01",
        ])
        .env("TMPDIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("sim serve starts");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // keep draining after the test stopped listening, so the child never writes into
        // a closed pipe
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let done = l.starts_with("templates:");
            lines.push(l);
            if done {
                break;
            }
        }
    }
    let find = |p: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("sim serve did not print {p:?}: {lines:#?}"))
    };
    let url = find("Proxmox VE simulator listening on ");
    let token = find("Authorization: ");
    let pem = PathBuf::from(find("CA PEM written to "));
    std::fs::copy(&pem, &ca).expect("copy CA");
    Served {
        child,
        url,
        token,
        ca,
        _dir: dir,
    }
}

fn python_has(module: &str) -> Result<(), String> {
    let st = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("python3: {e}"))?;
    st.success()
        .then_some(())
        .ok_or_else(|| format!("python3 cannot import {module}"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn proxmoxer_runs_the_everyday_vm_flow_against_sim_serve() {
    let Some(()) = optional::require(
        "proxmoxer (pip install proxmoxer requests)",
        "PROXMOXER",
        || python_has("proxmoxer").and_then(|_| python_has("requests")),
    ) else {
        return;
    };
    let s = serve();
    let out = Command::new("python3")
        .arg(repo("tests/clients/proxmoxer_flow.py"))
        .env("HYOPS_SIM_URL", &s.url)
        .env("HYOPS_SIM_TOKEN", &s.token)
        .env("HYOPS_SIM_CA", &s.ca)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("proxmoxer flow ok"),
        "proxmoxer flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ansible_proxmox_kvm_runs_the_everyday_vm_flow_against_sim_serve() {
    let Some(()) = optional::require(
        "Ansible with community.proxmox (pip install ansible proxmoxer requests)",
        "ANSIBLE",
        || {
            python_has("ansible_collections.community.proxmox")
                .and_then(|_| python_has("proxmoxer"))?;
            Command::new("ansible-playbook")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("ansible-playbook: {e}"))?
                .success()
                .then_some(())
                .ok_or_else(|| "ansible-playbook --version failed".to_string())
        },
    ) else {
        return;
    };
    let s = serve();
    let port = s
        .url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("port in URL")
        .to_string();
    let tok = s.token.trim_start_matches("PVEAPIToken=");
    let (ident, secret) = tok.rsplit_once('=').expect("token id=secret");
    let (user, token_id) = ident.split_once('!').expect("user!token");
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let home = tempfile::tempdir().expect("ansible home");
    let out = Command::new("ansible-playbook")
        .args(["-i", "localhost,", "-c", "local", "-e"])
        .arg(format!("ansible_python_interpreter={python}"))
        .arg(repo("tests/clients/ansible_flow.yml"))
        .env("HYOPS_SIM_HOST", "127.0.0.1")
        .env("HYOPS_SIM_PORT", &port)
        .env("HYOPS_SIM_USER", user)
        .env("HYOPS_SIM_TOKEN_ID", token_id)
        .env("HYOPS_SIM_TOKEN_SECRET", secret)
        .env("REQUESTS_CA_BUNDLE", &s.ca)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
        .env("ANSIBLE_HOME", home.path())
        .output()
        .expect("ansible-playbook runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("failed=0"),
        "ansible flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
