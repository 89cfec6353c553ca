//! SSH readiness gate benchmark (issue 12): the gate over 100 simulated VMs through one
//! bastion (the simulated Proxmox node, `direct-tcpip`), with the upstream 3 s retry cadence.
//! Two scenarios: the gate starts while the guests boot (their sshd comes up between 1 and 2
//! real seconds, a stable per-VM spread) — wall time against the slowest simulated boot —
//! and the guests already up (the probe cost alone). Also the SSH sessions opened and the
//! channels used. Prints figures on stderr; asserts nothing about speed.
//!
//! `cargo bench --bench ssh_gate` (runs per scenario: `HYOPS_BENCH_RUNS`, default 3; VMs:
//! `HYOPS_BENCH_VMS`, default 100).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyops_pve::sim::model::Vm;
use hyops_pve::sim::ssh::SimSshConfig;
use hyops_pve::sim::{LatencyModel, SimConfig, Simulator};
use hyops_pve::ssh::gate::{run_gate, GateConfig, GateEnv};
use hyops_pve::ssh::{Identities, KnownHosts};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use serde_json::json;

/// Real seconds per simulated second.
const SCALE: f64 = 0.05;
/// sshd comes up 20–40 simulated s after start: 1–2 real s at `SCALE`.
const SSH_BOOT_MS: u64 = 20_000;
const SSH_JITTER_MS: u64 = 20_000;

struct Figures {
    wall: Duration,
    slowest_boot: Duration,
    sessions: u64,
    channels: u64,
    attempts: u64,
    status: String,
}

async fn one(n: usize, booted: bool) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
    let key_path = dir.path().join("id_ed25519");
    std::fs::write(
        &key_path,
        key.to_openssh(LineEnding::LF).expect("key").as_bytes(),
    )
    .expect("key file");
    let public = key.public_key().to_openssh().expect("public key");
    let sim = Simulator::start(SimConfig {
        time_scale: SCALE,
        latency: LatencyModel {
            ssh_boot_ms: SSH_BOOT_MS,
            ssh_boot_jitter_ms: SSH_JITTER_MS,
            ..LatencyModel::default()
        },
        ssh: SimSshConfig {
            node_keys: vec![("root".into(), public.clone())],
            workstation_reaches_guests: false,
            node_aliases: vec!["127.0.0.1".into()],
            bridge_addresses: BTreeMap::new(),
        },
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let enc = percent_encoding::utf8_percent_encode(&public, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let mut outputs = serde_json::Map::new();
    let ssh = sim.ssh();
    let mut slowest_ms = 0;
    {
        let mut st = sim.state();
        for i in 0..n {
            let vmid = 1000 + i as u32;
            let addr = format!("10.50.{}.{}", i / 200, 10 + i % 200);
            let name = format!("bench-vm-{i:03}");
            let config = BTreeMap::from([
                ("name".to_string(), name.clone()),
                (
                    "net0".to_string(),
                    "virtio=BC:24:11:00:00:01,bridge=vmbr0".to_string(),
                ),
                (
                    "ipconfig0".to_string(),
                    format!("ip={addr}/16,gw=10.50.0.1"),
                ),
            ]);
            let baked = BTreeMap::from([
                ("ciuser".to_string(), "opsadmin".to_string()),
                ("sshkeys".to_string(), enc.clone()),
            ]);
            st.vms.insert(
                vmid,
                Vm {
                    vmid,
                    node: "pve1".into(),
                    config,
                    pending: BTreeMap::new(),
                    pending_delete: BTreeSet::new(),
                    running: true,
                    // "booted": started long ago (the simulated clock starts at 0).
                    started_at_ms: Some(0),
                    cloudinit_baked: baked,
                },
            );
            slowest_ms = slowest_ms.max(ssh.ssh_boot_ms(vmid));
            outputs.insert(
                format!("vm-{i:03}"),
                json!({"ipv4_address": addr, "is_windows": false}),
            );
        }
    }
    if booted {
        // Let every guest's sshd come up before the gate starts.
        tokio::time::sleep(
            Duration::from_secs_f64(slowest_ms as f64 / 1000.0 * SCALE)
                + Duration::from_millis(200),
        )
        .await;
    }
    let cfg = GateConfig {
        enabled: true,
        required: true,
        target_user: "opsadmin".into(),
        target_port: 22,
        connectivity_timeout_s: 5,
        connectivity_wait_s: 300,
        ssh_proxy_jump_auto: true,
        ssh_proxy_jump_host: String::new(),
        ssh_proxy_jump_user: String::new(),
        ssh_proxy_jump_port: 22,
        ssh_private_key_file: key_path.display().to_string(),
        wait_cloud_init: false,
    };
    let env = GateEnv {
        proxmox_api_ip: Some("127.0.0.1".into()),
        proxmox_ssh_username: Some("root".into()),
        evidence_dir: dir.path().join("evidence"),
        dialer: Arc::new(sim.ssh()),
        known_hosts: Arc::new(KnownHosts::new(dir.path().join("known_hosts"))),
        default_identities: Identities::default(),
        vm_identities: BTreeMap::new(),
        home: None,
        retry_interval: Duration::from_secs(3),
        max_parallel: 16,
        time_scale: 1.0,
    };
    let t = Instant::now();
    let r = run_gate(&cfg, &json!({ "vms": outputs }), &env).await;
    let wall = t.elapsed();
    sim.shutdown().await;
    Figures {
        wall,
        slowest_boot: Duration::from_secs_f64(slowest_ms as f64 / 1000.0 * SCALE),
        sessions: r.stats.sessions_opened,
        channels: r.stats.channels_opened,
        attempts: r.stats.attempts,
        status: r.status().to_string(),
    }
}

fn main() {
    let runs: usize = std::env::var("HYOPS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let n: usize = std::env::var("HYOPS_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (scenario, booted) in [("guests booting", false), ("guests already up", true)] {
        for run in 1..=runs {
            let f = rt.block_on(one(n, booted));
            eprintln!(
                "ssh gate, {n} VMs via one bastion, {scenario}, run {run}: status {}, wall {:.2} s, slowest simulated sshd boot {:.2} s (wall - slowest boot {:+.2} s), SSH sessions opened {} (1 bastion + {n} targets), direct-tcpip channels {}, probe attempts {}",
                f.status,
                f.wall.as_secs_f64(),
                f.slowest_boot.as_secs_f64(),
                f.wall.as_secs_f64() - if booted { 0.0 } else { f.slowest_boot.as_secs_f64() },
                f.sessions,
                f.channels,
                f.attempts,
            );
        }
    }
}
