//! Rollout benchmarks: a whole pool applied against the in-process simulator (time-scaled,
//! so the numbers measure the engine's scheduling and API overhead, not simulated disk
//! copies), the no-op re-apply, and the pure planner on a large pool.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::apply_inner;
use hyops_pve::commands::simroot::write_sim_root;
use hyops_pve::sim::{SimConfig, Simulator};

fn pool_overlay(n: usize) -> String {
    let mut s = String::from(
        "require_ipam: false\ntemplate_state_ref: core/onprem/template-image\ntemplate_key: ubuntu-24.04\n\
         ssh_username: opsadmin\ndisk_size_gb: 40\npost_apply_ssh_readiness: {connectivity_wait_s: 5}\nvms:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  vm-{i:03}:\n    role: app\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {{address: 10.30.{}.{}/16, gateway: 10.30.0.1}}\n",
            i / 200,
            10 + i % 200
        ));
    }
    s
}

async fn setup(n: usize) -> (hyops_pve::sim::SimHandle, tempfile::TempDir, Ctx) {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0001,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    write_sim_root(&root, &sim).expect("root");
    let overlay = dir.path().join("pool.yml");
    std::fs::write(&overlay, pool_overlay(n)).expect("overlay");
    let args = ModuleArgs {
        root: Some(root),
        module: "platform/onprem/platform-vm".into(),
        inputs: Some(overlay),
        lock_wait_s: 5,
        json: true,
        max_per_storage: Some(8),
        ..ModuleArgs::default()
    };
    let env = BTreeMap::from([("HYOPS_ENV".to_string(), "bench".to_string())]);
    let mut ctx = Ctx::build(&args, env).await.expect("ctx");
    // Snippets and the readiness gate use the simulator's in-process SSH.
    ctx.ssh_dialer = Some(std::sync::Arc::new(sim.ssh()));
    (sim, dir, ctx)
}

fn rollout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("rollout");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for n in [10usize, 50] {
        group.bench_with_input(BenchmarkId::new("create_pool", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (sim, _dir, ctx) = setup(n).await;
                    let t = Instant::now();
                    apply_inner(&ctx, None, None).await.expect("apply");
                    total += t.elapsed();
                    sim.shutdown().await;
                }
                total
            })
        });
        group.bench_with_input(BenchmarkId::new("noop_reapply", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let (sim, _dir, ctx) = setup(n).await;
                apply_inner(&ctx, None, None).await.expect("apply");
                let t = Instant::now();
                for _ in 0..iters {
                    apply_inner(&ctx, None, None).await.expect("re-apply");
                }
                let elapsed = t.elapsed();
                sim.shutdown().await;
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rollout);
criterion_main!(benches);
