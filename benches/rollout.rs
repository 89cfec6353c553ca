//! Rollout speed (issue 9), a bench binary (`harness = false`): each section prints its
//! figure and its ratio to the target on stdout, details on stderr. Not a timed test: it
//! asserts nothing about speed.
//!
//! ```sh
//! cargo bench --bench rollout                       # every section
//! HYOPS_BENCH=rollout,requests cargo bench --bench rollout
//! ```
//!
//! Sections (`HYOPS_BENCH`, comma separated; default all):
//! - `rollout`: 100 VMs on 4 nodes (`benches/data/cluster-4-nodes.yml`: the template on
//!   shared Ceph, full clones), default limits, simulator and engine at time scale 0.1; wall
//!   time in simulated seconds against the cost model's lower bound (`sim::bound`), the
//!   lock timeouts absorbed and surfaced, the settled concurrency, requests per VM;
//! - `requests`: the same rollout at real-time durations (time scale 1.0, ~5 minutes):
//!   requests per created VM (the simulator's own counter);
//! - `diff`: the planner's diff of 10 000 VMs (pure function, median of 15);
//! - `noop`: plan and no-op apply of 500 and 10 000 existing VMs, each a `hyops-pve`
//!   process against a real-time simulator in this process: wall time and the process's
//!   peak RSS (`wait4`), writes;
//! - `peer`: peers roll the same 100 VMs out on the same simulator (time scale 0.1, each on
//!   a fresh one), then hyops-pve does once on another; one line per peer with its wall time,
//!   its ratio to the bound, its requests per VM and how many times faster hyops-pve is (the
//!   same hyops-pve run for every ratio). `benches/peers/proxmoxer_rollout.py`: proxmoxer, a
//!   pool of 10 threads, its pauses scaled alike; needs `python3` with proxmoxer (`pip install
//!   proxmoxer requests`). `benches/peers/ansible_rollout.py`: Ansible's community.proxmox
//!   `proxmox_kvm`/`proxmox_disk` (playbook `ansible_rollout.yml`, one host per VM, forks 10,
//!   linear strategy); needs `ansible-playbook` with the collection (`pip install ansible
//!   proxmoxer requests`). Its modules poll tasks on hard-coded real seconds and its own CPU
//!   time is real time, which the time scale multiplies by ten: its figure is an upper bound
//!   of what it takes on a real cluster (the script's doc says which waits). A peer that
//!   cannot run says SKIPPED; `HYOPS_BENCH_PEERS=proxmoxer` or `=ansible` runs one.
//!
//! `HYOPS_BENCH_RUNS` repeats the rollout (default 1); `HYOPS_BENCH_NOOP` overrides the
//! no-op sizes (e.g. `500`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyops_pve::cli::ModuleArgs;
use hyops_pve::commands::context::Ctx;
use hyops_pve::commands::module::apply_inner;
use hyops_pve::commands::simroot::{write_sim_root, SIM_SSH_KEY_FILE};
use hyops_pve::sim::bound::{rollout_lower_bound, VmWork};
use hyops_pve::sim::{ClusterDescription, LatencyModel, SimConfig, SimHandle, Simulator};
use serde_json::Value;

const NODES: [&str; 4] = ["pve1", "pve2", "pve3", "pve4"];

fn cluster() -> ClusterDescription {
    ClusterDescription::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/cluster-4-nodes.yml"),
    )
    .expect("bench cluster")
}

/// `n` VMs spread over the four nodes, static addresses.
fn overlay(n: usize, header: &str) -> String {
    let mut s = format!(
        "require_ipam: false\ntemplate_state_ref: core/onprem/template-image\n\
         template_key: ubuntu-24.04\nssh_username: opsadmin\n{header}vms:\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "  vm-{i:05}:\n    role: app\n    node_name: {}\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {{address: 10.{}.{}.{}/8, gateway: 10.0.0.1}}\n",
            NODES[i % NODES.len()],
            1 + i / 60000,
            (i / 250) % 240,
            2 + i % 250,
        ));
    }
    s
}

const ROLLOUT_HEADER: &str = "datastore_id: ceph\ndisk_size_gb: 40\n\
     post_apply_ssh_readiness: {connectivity_wait_s: 300}\n";

struct Env {
    sim: SimHandle,
    _dir: tempfile::TempDir,
    root: PathBuf,
    inputs: PathBuf,
}

async fn env(scale: f64, state: Option<hyops_pve::sim::SimState>, n: usize, header: &str) -> Env {
    let cfg = SimConfig {
        cluster: cluster(),
        time_scale: scale,
        ..SimConfig::default()
    };
    let sim = match state {
        Some(st) => Simulator::start_with_state(cfg, st).await,
        None => Simulator::start(cfg).await,
    }
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    // One simulator SSH key for every bench root: it is in every VM's sshkeys, so a pool
    // made by one root is unchanged for the next.
    let key = hyops_pve::hyops::RuntimeRoot::at(&root)
        .credentials_dir()
        .join(SIM_SSH_KEY_FILE);
    let cached_key = cache_dir().join(SIM_SSH_KEY_FILE);
    if cached_key.exists() {
        std::fs::create_dir_all(key.parent().expect("credentials dir")).expect("credentials");
        std::fs::copy(&cached_key, &key).expect("bench SSH key");
    }
    write_sim_root(&root, &sim).expect("root");
    if !cached_key.exists() {
        std::fs::copy(&key, &cached_key).expect("cache the bench SSH key");
    }
    let inputs = dir.path().join("pool.yml");
    std::fs::write(&inputs, overlay(n, header)).expect("overlay");
    Env {
        sim,
        _dir: dir,
        root,
        inputs,
    }
}

async fn ctx(e: &Env, scale: f64) -> Ctx {
    let args = ModuleArgs {
        root: Some(e.root.clone()),
        module: "platform/onprem/platform-vm".into(),
        inputs: Some(e.inputs.clone()),
        lock_wait_s: 5,
        json: true,
        ..ModuleArgs::default()
    };
    let env = BTreeMap::from([
        ("HYOPS_ENV".to_string(), "bench".to_string()),
        ("HYOPS_PVE_ENGINE_TIME_SCALE".to_string(), scale.to_string()),
    ]);
    let mut c = Ctx::build(&args, env).await.expect("ctx");
    // snippets and the readiness gate reach the simulator's in-process SSH network
    c.ssh_dialer = Some(std::sync::Arc::new(e.sim.ssh()));
    c
}

fn report(root: &Path, run_id: &str) -> Value {
    let p = root
        .join("logs/module/platform__onprem__platform-vm")
        .join(run_id)
        .join("apply_report.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("apply_report.json")).expect("json")
}

fn lower_bound(n: usize) -> hyops_pve::sim::bound::LowerBound {
    let work: Vec<VmWork> = (0..n)
        .map(|i| VmWork {
            template_vmid: 9000,
            full: true,
            storage: Some("ceph".into()),
            node: NODES[i % NODES.len()].into(),
            resize: true,
            start: true,
            wait_agent: true,
            // the overlay's post_apply_ssh_readiness gate waits for every guest's sshd
            wait_ssh: true,
        })
        .collect();
    rollout_lower_bound(&LatencyModel::default(), &cluster(), &work).expect("bound")
}

struct Rollout {
    sim_s: f64,
    calls: u64,
    journal_calls: u64,
    report: Value,
}

async fn one_rollout(n: usize, scale: f64) -> Rollout {
    let e = env(scale, None, n, ROLLOUT_HEADER).await;
    let c = ctx(&e, scale).await;
    let t = Instant::now();
    // sample the copies in flight every simulated second
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let samples = {
        let (sampling, sim) = (sampling.clone(), &e.sim);
        let tick = Duration::from_secs_f64(scale);
        async move {
            let mut hist: BTreeMap<usize, u64> = BTreeMap::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                *hist.entry(sim.copies_in_flight()).or_default() += 1;
                tokio::time::sleep(tick).await;
            }
            hist
        }
    };
    let work = async {
        let r = apply_inner(&c, None, None).await;
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let (run_id, hist) = tokio::join!(work, samples);
    let run_id = run_id.expect("apply");
    let wall = t.elapsed();
    eprintln!("  copies in flight (simulated seconds at each count): {hist:?}");
    let report = report(&e.root, &run_id);
    let journal = std::fs::read_to_string(
        e.root
            .join("logs/module/platform__onprem__platform-vm")
            .join(&run_id)
            .join("apply_journal.jsonl"),
    )
    .expect("journal");
    timeline(&journal, scale);
    let journal_calls = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "end")
        .filter_map(|v| v["api_calls"].as_u64())
        .sum();
    let counters = e.sim.counters();
    let calls = counters.total;
    for ((m, p), c) in &counters.by_endpoint {
        eprintln!("  {c:>6} {m} {p} ({:.2}/VM)", *c as f64 / n as f64);
    }
    e.sim.shutdown().await;
    Rollout {
        sim_s: wall.as_secs_f64() / scale,
        calls,
        journal_calls,
        report,
    }
}

/// When the clones started and ended and the VMs were done, simulated seconds from the
/// first journal line.
fn timeline(journal: &str, scale: f64) {
    let lines: Vec<Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ts = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or_default())
            .map(|t| t.timestamp_millis())
            .unwrap_or(0)
    };
    let Some(t0) = lines.iter().map(ts).min() else {
        return;
    };
    let at = |action: &str, event: &str| -> Vec<f64> {
        let mut v: Vec<f64> = lines
            .iter()
            .filter(|l| l["action"] == action && l["event"] == event)
            .map(|l| (ts(l) - t0) as f64 / 1000.0 / scale)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let clone_end = at("clone", "end");
    let ready_end = at("readiness", "end");
    let first = |v: &[f64]| v.first().copied().unwrap_or(0.0);
    let last = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    let (verify_start, verify_end) = (at("verify", "start"), at("verify", "end"));
    eprintln!(
        "  timeline (simulated s): clones end {:.1}..{:.1}; VMs ready {:.1}..{:.1}; read-back {:.1}..{:.1}",
        first(&clone_end),
        last(&clone_end),
        first(&ready_end),
        last(&ready_end),
        first(&verify_start),
        last(&verify_end)
    );
}

fn print_concurrency(r: &Value) {
    for w in r["concurrency"].as_array().into_iter().flatten() {
        eprintln!(
            "  window {:<22} initial {:>3} settled {:>3} largest {:>3} peak in flight {:>3} lock timeouts {:>3} completed {:>4}",
            w["window"].as_str().unwrap_or(""),
            w["initial"], w["settled"], w["largest"], w["peak_in_flight"],
            w["lock_timeouts"], w["completed"]
        );
    }
}

fn rollout(rt: &tokio::runtime::Runtime, scale: f64, label: &str) {
    let n = 100;
    let runs: usize = std::env::var("HYOPS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let lb = lower_bound(n);
    eprintln!(
        "{label}: {n} VMs on 4 nodes, default limits, time scale {scale}; lower bound {:.1} s ({})",
        lb.total_ms / 1000.0,
        lb.binding
    );
    for (t, ms) in lb.terms.iter().take(4) {
        eprintln!("  bound term {t}: {:.1} s", ms / 1000.0);
    }
    for i in 0..runs {
        let r = rt.block_on(one_rollout(n, scale));
        let ratio = r.sim_s * 1000.0 / lb.total_ms;
        let failed = r.report["vms"]
            .as_array()
            .map(|v| v.iter().filter(|o| o["status"] != "ok").count())
            .unwrap_or(n);
        let absorbed: u64 = r.report["concurrency"]
            .as_array()
            .map(|a| a.iter().filter_map(|w| w["lock_timeouts"].as_u64()).sum())
            .unwrap_or(0);
        println!(
            "{label:<9} run {i}: {:.1} simulated s = {ratio:.3}x the lower bound ({:.1} s); {} requests = {:.2}/VM (journal {}, report {}); lock timeouts absorbed {absorbed}, surfaced {failed}",
            r.sim_s,
            lb.total_ms / 1000.0,
            r.calls,
            r.calls as f64 / n as f64,
            r.journal_calls,
            r.report["api_calls"]
        );
        print_concurrency(&r.report);
    }
}

// ------------------------------------------------------------------ the planner's diff

fn diff_bench() {
    use hyops_pve::plan::desired::DesiredVm;
    // Plan 10 000 VMs once on a fast simulator, then time the pure diff on the observed pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n = 10_000;
    let (desired, observed) = rt.block_on(noop_state_with_models(n));
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let plan = hyops_pve::plan::diff::diff(&desired, &observed, false).expect("diff");
        times.push(t.elapsed());
        assert_eq!(plan.len(), n);
        if let Some(p) = plan.iter().find(|p| !p.is_noop()) {
            panic!(
                "{} of {n} VMs are not unchanged, e.g. {}: {:?} {:?} resize {:?} start {} restart {:?}",
                plan.iter().filter(|p| !p.is_noop()).count(),
                p.key.0,
                p.action,
                p.changes,
                p.resize,
                p.start,
                p.restart
            );
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let _: Option<&DesiredVm> = desired.values().next().map(|d| &**d);
    println!(
        "diff      {n} VMs: median {:.1} ms = {:.2}x the 50 ms target",
        median.as_secs_f64() * 1000.0,
        median.as_secs_f64() * 1000.0 / 50.0
    );
}

/// The desired models and the observed pool of `n` existing VMs (made once by an apply on a
/// fast simulator, cached as a simulator state).
async fn noop_state_with_models(
    n: usize,
) -> (
    BTreeMap<
        hyops_pve::inputs::model::LogicalVmKey,
        std::sync::Arc<hyops_pve::plan::desired::DesiredVm>,
    >,
    hyops_pve::plan::observed::ObservedPool,
) {
    let state = existing_pool(n).await;
    let e = env(0.0, Some(state), n, NOOP_HEADER).await;
    let c = ctx(&e, 1.0).await;
    let dump = hyops_pve::commands::module::plan_models(&c)
        .await
        .expect("plan models");
    e.sim.shutdown().await;
    dump
}

// ------------------------------------------------------------------ no-op at scale

/// The no-op runs are `hyops-pve` processes, which cannot reach the bench's in-process SSH
/// network: cloud-init goes as native keys and the SSH readiness gate is off (its own speed
/// is `benches/ssh_gate.rs`); what is measured is observing, planning and the no-op apply.
const NOOP_HEADER: &str = "clone_mode: linked\ncloud_init_mode: native\n\
     post_apply_ssh_readiness: {enabled: false}\n";

fn cache_dir() -> PathBuf {
    let base = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let d = base.join("bench-cache");
    std::fs::create_dir_all(&d).expect("cache dir");
    d
}

/// A simulator state holding `n` VMs of the no-op pool, made by one apply on a fast
/// simulator the first time and cached under the target dir.
async fn existing_pool(n: usize) -> hyops_pve::sim::SimState {
    let file = cache_dir().join(format!("noop-{n}-v3.json"));
    if let Ok(st) = hyops_pve::sim::SimState::load_from(&file) {
        return st;
    }
    eprintln!(
        "creating the {n}-VM pool once (cached in {})",
        file.display()
    );
    let scale = 0.001;
    let e = env(scale, None, n, NOOP_HEADER).await;
    let c = ctx(&e, scale).await;
    let t = Instant::now();
    // On a busy machine a few starts can outlive their scaled deadline; the next apply
    // converges them (the pool only has to exist, how fast is not measured).
    let mut last = None;
    for _ in 0..3 {
        match apply_inner(&c, None, None).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(err) => {
                eprintln!("  the pool is not complete yet ({err:?}); applying again");
                last = Some(err);
            }
        }
    }
    if let Some(err) = last {
        panic!("creating the pool: {err:?}");
    }
    eprintln!("  created in {:.1} s", t.elapsed().as_secs_f64());
    let st = e.sim.snapshot_state();
    e.sim.shutdown().await;
    st.save_to(&file).expect("cache");
    st
}

/// Run `hyops-pve <args>`; returns (wall, peak RSS in MiB, exit code, stdout).
///
/// The peak RSS comes from `wait4` in a small Python parent that forks the child. Not from
/// this process: Linux carries the spawning process's high-water mark into a child across
/// `vfork`+`exec` (`exec_mmap` folds the old mm's `hiwater_rss` into `signal->maxrss`), so a
/// child spawned by this bench, which holds a 10 000-VM simulator, would report this
/// process's peak instead of its own. Without `python3` the RSS is reported as NaN.
fn measured(args: &[&str], root: &Path) -> (Duration, f64, i32, String) {
    const WRAPPER: &str = "import os, sys\n\
pid = os.fork()\n\
if pid == 0:\n    os.execv(sys.argv[2], sys.argv[2:])\n\
_, status, ru = os.wait4(pid, 0)\n\
open(sys.argv[1], 'w').write(str(ru.ru_maxrss))\n\
sys.exit(os.waitstatus_to_exitcode(status))\n";
    let out = tempfile::NamedTempFile::new().expect("tmp");
    let rss_file = tempfile::NamedTempFile::new().expect("tmp");
    let t = Instant::now();
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(WRAPPER)
        .arg(rss_file.path())
        .arg(env!("CARGO_BIN_EXE_hyops-pve"))
        .args(args)
        .arg("--root")
        .arg(root)
        .env("HYOPS_ENV", "bench")
        .stdout(out.reopen().expect("reopen"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn python3 (the RSS-measuring parent)");
    let wall = t.elapsed();
    let code = status.code().unwrap_or(-1);
    let rss_kib: f64 = std::fs::read_to_string(rss_file.path())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let stdout = std::fs::read_to_string(out.path()).unwrap_or_default();
    (wall, rss_kib / 1024.0, code, stdout)
}

fn noop_bench() {
    let sizes: Vec<usize> = std::env::var("HYOPS_BENCH_NOOP")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![500, 10_000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        let state = rt.block_on(existing_pool(n));
        // the simulator runs in this process at real-time durations; hyops-pve is a child
        let e = rt.block_on(env(1.0, Some(state), n, NOOP_HEADER));
        let inputs = e.inputs.display().to_string();
        // adopt once (records the state the next runs plan against)
        let (_, _, code, _) = measured(&["apply", "--json", "--inputs", &inputs], &e.root);
        assert_eq!(code, 0, "adopting apply");
        let (plan_wall, plan_rss, code, _) =
            measured(&["plan", "--json", "--inputs", &inputs], &e.root);
        assert_eq!(code, 0, "plan");
        let before = e.sim.counters();
        let (wall, rss, code, stdout) =
            measured(&["apply", "--json", "--inputs", &inputs], &e.root);
        assert_eq!(code, 0, "no-op apply");
        let after = e.sim.counters();
        // the requests besides the per-VM reads, by endpoint (stderr)
        for ((method, path), count) in &after.by_endpoint {
            let was = before
                .by_endpoint
                .get(&(method.clone(), path.clone()))
                .copied()
                .unwrap_or(0);
            if count - was > 0 && count - was < n as u64 / 2 {
                eprintln!("  no-op {n}: {} x {method} {path}", count - was);
            }
        }
        let env: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        println!(
            "plan      {n:>6} VMs: {:.2} s ({:.2}x the 5 s target), peak RSS {:.0} MiB",
            plan_wall.as_secs_f64(),
            plan_wall.as_secs_f64() / 5.0,
            plan_rss
        );
        println!(
            "no-op     {n:>6} VMs: {:.2} s ({:.2}x the 5 s target), peak RSS {:.0} MiB ({:.2}x the 200 MB target), {} writes, {} requests",
            wall.as_secs_f64(),
            wall.as_secs_f64() / 5.0,
            rss,
            rss * 1048576.0 / 200e6,
            after.writes - before.writes,
            env["api_calls"]
        );
        rt.block_on(e.sim.shutdown());
    }
}

// ------------------------------------------------------------------ a peer on the same sim

/// What a peer script printed last: its wall time in simulated seconds, failures, and the
/// requests the simulator served it.
struct PeerRun {
    sim_s: f64,
    failed: Value,
    calls: u64,
}

/// `true` when `program args…` runs and exits 0 (its output discarded).
fn probe(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `benches/peers/<script>` against a fresh simulator of the bench cluster at `scale`;
/// `Err` holds the script's output when it printed no result line.
fn run_peer(
    rt: &tokio::runtime::Runtime,
    script: &str,
    args: &[&str],
    n: usize,
    scale: f64,
) -> Result<PeerRun, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/peers")
        .join(script);
    let sim = rt
        .block_on(Simulator::start(SimConfig {
            cluster: cluster(),
            time_scale: scale,
            ..SimConfig::default()
        }))
        .expect("simulator");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--url", sim.url(), "--token-id", &sim.token_id])
        .args(["--token-secret", sim.token_secret.expose()])
        .args(["--vms", &n.to_string()])
        .args(args)
        .args(["--time-scale", &scale.to_string()])
        .output()
        .expect("run the peer script");
    let calls = sim.counters().total;
    for ((m, p), c) in &sim.counters().by_endpoint {
        eprintln!("  {c:>6} {m} {p} ({:.2}/VM)", *c as f64 / n as f64);
    }
    rt.block_on(sim.shutdown());
    let text = String::from_utf8_lossy(&out.stdout);
    let last: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    match last["sim_s"].as_f64() {
        Some(sim_s) => Ok(PeerRun {
            sim_s,
            failed: last["failed"].clone(),
            calls,
        }),
        None => Err(format!(
            "{}\n{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn peer(rt: &tokio::runtime::Runtime) {
    let scale = 0.1;
    let n = 100;
    let mut runs: Vec<(&str, PeerRun)> = Vec::new();
    let wanted = std::env::var("HYOPS_BENCH_PEERS").unwrap_or_else(|_| "proxmoxer,ansible".into());
    let wanted = |p: &str| wanted.split(',').any(|w| w.trim() == p);
    // each peer on its own fresh simulator, then hyops-pve once on another; both ratios use
    // the same hyops-pve figure
    if wanted("proxmoxer") {
        if !probe("python3", &["-c", "import proxmoxer, requests"]) {
            println!(
                "peer      SKIPPED: proxmoxer peer: python3 with proxmoxer and requests is not installed"
            );
        } else {
            match run_peer(rt, "proxmoxer_rollout.py", &["--threads", "10"], n, scale) {
                Ok(r) => runs.push(("proxmoxer, 10 threads", r)),
                Err(e) => println!("peer      FAILED: proxmoxer peer: {e}"),
            }
        }
    }
    if wanted("ansible") {
        let modules = "import ansible_collections.community.proxmox, proxmoxer, requests";
        if !probe("ansible-playbook", &["--version"]) || !probe("python3", &["-c", modules]) {
            println!(
                "peer      SKIPPED: ansible peer: ansible-playbook with community.proxmox, proxmoxer and requests is not installed (pip install ansible proxmoxer requests)"
            );
        } else {
            match run_peer(rt, "ansible_rollout.py", &["--forks", "10"], n, scale) {
                Ok(r) => runs.push(("ansible proxmox_kvm, forks 10", r)),
                Err(e) => println!("peer      FAILED: ansible peer: {e}"),
            }
        }
    }
    if runs.is_empty() {
        return;
    }
    let ours = rt.block_on(one_rollout(n, scale));
    let lb = lower_bound(n).total_ms / 1000.0;
    for (label, r) in runs {
        println!(
            "peer      {label}: {:.1} simulated s ({:.2}x the bound, {} failed, {:.1} requests/VM); hyops-pve: {:.1} s ({:.2}x the bound); hyops-pve is {:.2}x faster",
            r.sim_s,
            r.sim_s / lb,
            r.failed,
            r.calls as f64 / n as f64,
            ours.sim_s,
            ours.sim_s / lb,
            r.sim_s / ours.sim_s
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sections = std::env::var("HYOPS_BENCH").unwrap_or_else(|_| "rollout,diff,noop,peer".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for s in sections.split(',').map(str::trim) {
        match s {
            "rollout" => rollout(&rt, 0.1, "rollout"),
            "requests" => rollout(&rt, 1.0, "requests"),
            "diff" => diff_bench(),
            "noop" => noop_bench(),
            "peer" => peer(&rt),
            other => eprintln!("unknown section {other:?} (rollout, requests, diff, noop, peer)"),
        }
    }
}
