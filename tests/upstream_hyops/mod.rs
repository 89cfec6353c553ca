//! Running the real upstream `hyops` CLI (from `../shared/upstream`, installed with the
//! project's plug-in `integrations/hyops` into `<repo>/.venv-hyops`, see `.ci/run`) against
//! an in-process simulator: a HOME with a ready runtime root `~/.hybridops/envs/dev`, a
//! modules tree written by `hyops-pve hyops-setup`, and `HYOPS_PVE_BIN` pointing at the
//! binary under test. Optional target `UPSTREAM` (`HYOPS_REQUIRE_UPSTREAM=1` in CI).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hyops_pve::commands::simroot::write_sim_root;
use hyops_pve::sim::{SimConfig, SimHandle, Simulator};
use serde_json::Value;

use crate::optional;

/// The python of the venv holding upstream hyops and the plug-in.
pub fn python() -> PathBuf {
    std::env::var_os("HYOPS_UPSTREAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-hyops/bin/python"))
}

/// Probe: hyops importable and the `iac/proxmox-native` entry point installed.
fn probe() -> Result<PathBuf, String> {
    let py = python();
    if !py.exists() {
        return Err(format!(
            "{} does not exist (python3 -m venv .venv-hyops && .venv-hyops/bin/pip install ../shared/upstream/hybridops-core && .venv-hyops/bin/pip install -e integrations/hyops)",
            py.display()
        ));
    }
    let out = Command::new(&py)
        .args([
            "-c",
            "import hyops, hyops_pve_driver\nfrom importlib.metadata import entry_points\nassert any(e.name == 'proxmox-native' for e in entry_points().select(group='hyops.drivers')), 'entry point missing'",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} lacks hyops or the hyops-pve plug-in (pip install -e integrations/hyops): {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(py)
}

/// The demo pool (`tests/common` DEMO) for a hyops-pve *process*, which cannot reach the
/// in-process simulator's SSH: native cloud-init keys (no node SSH) and the readiness gate as
/// `gate` says (a YAML flow mapping).
pub fn pool(demo: &str, gate: &str) -> String {
    let from = "post_apply_ssh_readiness:\n  connectivity_wait_s: 30\n";
    assert!(demo.contains(from), "the demo pool changed: {demo}");
    demo.replace(
        from,
        &format!("cloud_init_mode: native\npost_apply_ssh_readiness: {gate}\n"),
    )
}

/// [`pool`] without the gate.
pub fn pool_no_gate(demo: &str) -> String {
    pool(demo, "{enabled: false}")
}

/// The venv python, or `None` after a visible SKIPPED when hyops or the plug-in is missing.
pub fn require_python() -> Option<PathBuf> {
    optional::require(
        "upstream hyops with the hyops-pve plug-in",
        "UPSTREAM",
        probe,
    )
}

/// One test's world: the simulator, HOME, the dev runtime root and the modules tree.
pub struct World {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub python: PathBuf,
    /// Extra environment for every hyops run.
    pub env: BTreeMap<String, String>,
}

/// The result of one hyops run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    /// The run id from the `run record: <dir>` line.
    pub fn run_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("run record: "))
            .and_then(|d| Path::new(d.trim()).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    pub fn assert_ok(&self) {
        assert_eq!(
            self.code, 0,
            "hyops failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

impl World {
    /// `None` (after a visible SKIPPED) when upstream hyops or the plug-in is not installed.
    pub async fn start(time_scale: f64) -> Option<Self> {
        let python = require_python()?;
        let sim = Simulator::start(SimConfig {
            time_scale,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let w = World {
            sim,
            dir,
            python,
            env: BTreeMap::new(),
        };
        write_sim_root(&w.root(), &w.sim).expect("sim root");
        let out = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
            .args(["hyops-setup", "--module-root"])
            .arg(w.modules())
            .output()
            .expect("hyops-setup runs");
        assert!(out.status.success(), "{out:?}");
        Some(w)
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    /// `~/.hybridops/envs/dev`.
    pub fn root(&self) -> PathBuf {
        self.home().join(".hybridops/envs/dev")
    }
    pub fn modules(&self) -> PathBuf {
        self.dir.path().join("modules")
    }
    pub fn overlay(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("overlay");
        p
    }

    /// The hyops command line with this world's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.python);
        c.args([
            "-c",
            "import sys\nfrom hyops.cli import main\nsys.exit(main(sys.argv[1:]))",
        ]);
        c.args(args);
        let venv_bin = self
            .python
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            venv_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("HOME", self.home())
            .env("PATH", path)
            .env("HYOPS_PVE_BIN", env!("CARGO_BIN_EXE_hyops-pve"))
            .env("HYOPS_STRICT_PLUGINS", "1")
            .env_remove("HYOPS_ENV")
            .env_remove("HYOPS_RUNTIME_ROOT")
            .env_remove("HYOPS_CORE_ROOT")
            .env_remove("HYOPS_VERBOSE")
            .current_dir(self.dir.path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run hyops (off the async runtime, so the in-process simulator keeps serving).
    pub async fn hyops(&self, args: &[&str]) -> Run {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || Run::from(c.output().expect("hyops runs")))
            .await
            .expect("join")
    }

    /// `<cmd> --env dev --module platform/onprem/platform-vm --module-root M --inputs F <extra>`.
    pub fn module_args(&self, cmd: &str, inputs: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            cmd,
            "--env",
            "dev",
            "--module",
            "platform/onprem/platform-vm",
            "--module-root",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.modules().display().to_string());
        args.push("--inputs".into());
        args.push(inputs.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `hyops` with [`World::module_args`].
    pub async fn module(&self, cmd: &str, inputs: &Path, extra: &[&str]) -> Run {
        let args = self.module_args(cmd, inputs, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.hyops(&args).await
    }

    /// The slot's state as hyops wrote it (`latest.json` or `instances/<x>.json`).
    pub fn state(&self, instance: Option<&str>) -> Value {
        let dir = self
            .root()
            .join("state/modules/platform__onprem__platform-vm");
        let p = match instance {
            None => dir.join("latest.json"),
            Some(i) => dir.join("instances").join(format!("{i}.json")),
        };
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .expect("state json")
    }

    /// Non-template VMs of the simulator: name → VMID.
    pub fn vms(&self) -> BTreeMap<String, u32> {
        let st = self.sim.state();
        st.vms
            .values()
            .filter(|v| !v.is_template())
            .map(|v| (v.name(), v.vmid))
            .collect()
    }
}
