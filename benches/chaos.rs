//! Chaos rollout benchmark (issue 7): the same 150-VM pool applied against the time-scaled
//! in-process simulator with no faults and under `examples/faults.chaos.yml`, reporting wall
//! time, applies needed, and API calls per VM (the simulator's own counter, every attempt
//! counted) side by side. Not a timed test: it prints figures and asserts nothing about speed.
//!
//! `cargo bench --bench chaos >/dev/null` (the figures go to stderr; runs per scenario: `HYOPS_BENCH_RUNS`, default 3; pool size:
//! `HYOPS_BENCH_VMS`, default 150).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::apply_inner;
use hyops_pve::commands::simroot::write_sim_root;
use hyops_pve::sim::{FaultPlan, SimConfig, Simulator};

const SCALE: f64 = 0.002;

#[path = "../tests/common/pool.rs"]
mod pool;

const POOL_HEADER: &str = "disk_size_gb: 40\npost_apply_ssh_readiness: {connectivity_wait_s: 30}\n\
     limits: {global: 32, per_node: 16, per_storage: 8}\n";

struct Run {
    wall: Duration,
    applies: u32,
    calls: u64,
}

async fn one(n: usize, faults: FaultPlan) -> Run {
    let sim = Simulator::start(SimConfig {
        time_scale: SCALE,
        faults,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    write_sim_root(&root, &sim).expect("root");
    let overlay = dir.path().join("pool.yml");
    std::fs::write(&overlay, pool::pool_overlay(n, POOL_HEADER)).expect("overlay");
    let args = ModuleArgs {
        root: Some(root),
        module: "platform/onprem/platform-vm".into(),
        inputs: Some(overlay),
        lock_wait_s: 5,
        json: true,
        ..ModuleArgs::default()
    };
    let env = BTreeMap::from([
        ("HYOPS_ENV".to_string(), "bench".to_string()),
        ("HYOPS_PVE_ENGINE_TIME_SCALE".to_string(), SCALE.to_string()),
    ]);
    let mut ctx = Ctx::build(&args, env).await.expect("ctx");
    // Snippets and the readiness gate use the simulator's in-process SSH.
    ctx.ssh_dialer = Some(std::sync::Arc::new(sim.ssh()));
    let t = Instant::now();
    let mut applies = 0;
    loop {
        applies += 1;
        match apply_inner(&ctx, None, None).await {
            Ok(_) => break,
            Err(e) if applies < 3 => eprintln!(
                "  apply {applies} failed: {}",
                e.message.chars().take(200).collect::<String>()
            ),
            Err(e) => panic!("not converged after {applies} applies: {}", e.message),
        }
    }
    let wall = t.elapsed();
    let calls = sim.counters().total;
    sim.shutdown().await;
    Run {
        wall,
        applies,
        calls,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing else.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("HYOPS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let n: usize = std::env::var("HYOPS_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let chaos_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/faults.chaos.yml");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    eprintln!(
        "chaos rollout: {n} VMs, simulator and engine time scale {SCALE}, {runs} run(s) each"
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>10}",
        "scenario", "wall_s", "applies", "api_calls", "calls/VM"
    );
    for (label, with_faults) in [("fault-free", false), ("chaos", true)] {
        let mut results = Vec::new();
        for i in 0..runs {
            let faults = if with_faults {
                let mut p = FaultPlan::from_file(&chaos_file).expect("fault file");
                p.seed = Some(7 + i as u64);
                p
            } else {
                FaultPlan::default()
            };
            let r = rt.block_on(one(n, faults));
            eprintln!(
                "{:<12} {:>10.2} {:>10} {:>12} {:>10.1}",
                format!("{label}#{i}"),
                r.wall.as_secs_f64(),
                r.applies,
                r.calls,
                r.calls as f64 / n as f64
            );
            results.push(r);
        }
        let mut walls: Vec<f64> = results.iter().map(|r| r.wall.as_secs_f64()).collect();
        walls.sort_by(f64::total_cmp);
        let calls: f64 = results.iter().map(|r| r.calls as f64).sum::<f64>() / results.len() as f64;
        let one_apply = results.iter().filter(|r| r.applies == 1).count();
        eprintln!(
            "{:<12} median wall {:.2}s, mean {:.1} API calls/VM, {one_apply}/{} converged in one apply",
            label,
            walls[walls.len() / 2],
            calls / n as f64,
            results.len()
        );
    }
}
