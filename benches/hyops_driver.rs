//! The cost of the hyops wrapper: a 20-VM pool applied by `hyops apply` through the plug-in
//! (`iac/proxmox-native`: python, hyops' resolution and state writes, two `hyops-pve driver`
//! processes) against `hyops-pve apply` run directly, both as processes on the same
//! in-process simulator (time-scaled, so disk copies cost little and the difference is the
//! wrapper). Both are processes apart from the simulator, whose SSH is in-process: the pool
//! uses native cloud-init keys and no readiness gate (`examples/inputs.sim-serve.yml`). Needs
//! upstream hyops and the plug-in in `.venv-hyops` (or
//! `HYOPS_UPSTREAM_PYTHON`); without them only the direct path is measured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hyops_pve::commands::simroot::write_sim_root;
use hyops_pve::sim::{SimConfig, SimHandle, Simulator};

const POOL: usize = 20;

fn pool_overlay(n: usize) -> String {
    let mut s = String::from(
        "require_ipam: false\ntemplate_state_ref: core/onprem/template-image\ntemplate_key: ubuntu-24.04\n\
         disk_size_gb: 40\nlimits: {per_storage: 8}\n\
         cloud_init_mode: native\npost_apply_ssh_readiness: {enabled: false}\nvms:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  vm-{i:03}:\n    role: app\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {{address: 10.30.0.{}/16, gateway: 10.30.0.1}}\n",
            10 + i
        ));
    }
    s
}

fn python() -> Option<PathBuf> {
    let py = std::env::var_os("HYOPS_UPSTREAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-hyops/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import hyops, hyops_pve_driver"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED hyops+plugin path: {} cannot import hyops and hyops_pve_driver",
            py.display()
        );
    }
    ok.then_some(py)
}

/// A simulator, its runtime root, the overlay and the modules tree.
struct World {
    sim: SimHandle,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let sim = Simulator::start(SimConfig {
            time_scale: 0.0001,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        write_sim_root(&dir.path().join("root"), &sim).expect("root");
        std::fs::write(dir.path().join("pool.yml"), pool_overlay(POOL)).expect("overlay");
        let out = Command::new(env!("CARGO_BIN_EXE_hyops-pve"))
            .args(["hyops-setup", "--module-root"])
            .arg(dir.path().join("modules"))
            .output()
            .expect("hyops-setup");
        assert!(out.status.success(), "{out:?}");
        World { sim, dir }
    }

    /// The command of `path`: `hyops apply` through the plug-in, or `hyops-pve apply`.
    fn command(&self, path: &str, python: Option<&Path>) -> Command {
        match (path, python) {
            ("hyops_apply_plugin", Some(p)) => self.through_hyops(p),
            _ => self.direct(),
        }
    }

    fn direct(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hyops-pve"));
        c.args(["apply", "--json", "--root"])
            .arg(self.dir.path().join("root"))
            .arg("--inputs")
            .arg(self.dir.path().join("pool.yml"))
            .env("HYOPS_ENV", "bench");
        c
    }

    fn through_hyops(&self, python: &Path) -> Command {
        let mut c = Command::new(python);
        c.args([
            "-c",
            "import sys\nfrom hyops.cli import main\nsys.exit(main(sys.argv[1:]))",
            "apply",
            "--module",
            "platform/onprem/platform-vm",
            "--root",
        ])
        .arg(self.dir.path().join("root"))
        .arg("--module-root")
        .arg(self.dir.path().join("modules"))
        .arg("--inputs")
        .arg(self.dir.path().join("pool.yml"))
        .env("HYOPS_PVE_BIN", env!("CARGO_BIN_EXE_hyops-pve"))
        .env("HYOPS_ENV", "bench")
        .env("HYOPS_STRICT_PLUGINS", "1");
        c
    }
}

/// Run a command off the async runtime (the simulator keeps serving); panics on failure.
async fn run(mut c: Command) {
    let out = tokio::task::spawn_blocking(move || c.output().expect("spawn"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wrapper(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let python = python();
    let mut group = c.benchmark_group("hyops_wrapper");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    let mut paths: Vec<&str> = vec!["hyops-pve_apply"];
    if python.is_some() {
        paths.push("hyops_apply_plugin");
    }
    for path in paths {
        let py = python.clone();
        group.bench_with_input(
            BenchmarkId::new("create_pool_20", path),
            &path,
            |b, &path| {
                let py = py.clone();
                b.to_async(&rt).iter_custom(move |iters| {
                    let py = py.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let w = World::start().await;
                            let cmd = match (path, &py) {
                                ("hyops_apply_plugin", Some(p)) => w.through_hyops(p),
                                _ => w.direct(),
                            };
                            let t = Instant::now();
                            run(cmd).await;
                            total += t.elapsed();
                            assert_eq!(
                                w.sim
                                    .state()
                                    .vms
                                    .values()
                                    .filter(|v| !v.is_template())
                                    .count(),
                                POOL
                            );
                            w.sim.shutdown().await;
                        }
                        total
                    }
                })
            },
        );
        let py = python.clone();
        group.bench_with_input(
            BenchmarkId::new("noop_reapply_20", path),
            &path,
            |b, &path| {
                let py = py.clone();
                b.to_async(&rt).iter_custom(move |iters| {
                    let py = py.clone();
                    async move {
                        let w = World::start().await;
                        run(w.command(path, py.as_deref())).await;
                        let writes = w.sim.counters().writes;
                        let t = Instant::now();
                        for _ in 0..iters {
                            run(w.command(path, py.as_deref())).await;
                        }
                        let elapsed = t.elapsed();
                        assert_eq!(w.sim.counters().writes, writes, "a re-apply wrote");
                        w.sim.shutdown().await;
                        elapsed
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, wrapper);
criterion_main!(benches);
