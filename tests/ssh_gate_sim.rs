//! The readiness gate against the simulator's in-process SSH: direct and through the
//! Proxmox host (ProxyJump over `direct-tcpip`), the §5.6 messages, the evidence files, host
//! keys, cloud-init status, and the guard that the simulated network never dials out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyops_pve::sim::model::Vm;
use hyops_pve::sim::ssh::{SimSsh, SimSshConfig};
use hyops_pve::sim::{LatencyModel, SimConfig, SimHandle, Simulator};
use hyops_pve::ssh::dial::{DialError, Dialer};
use hyops_pve::ssh::gate::{run_gate, GateConfig, GateEnv, GateReport};
use hyops_pve::ssh::{Identities, KnownHosts};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use serde_json::{json, Value};

struct Key {
    path: PathBuf,
    public: String,
}

fn make_key(dir: &Path, name: &str, seed: u8) -> Key {
    let k = PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
    let path = dir.join(name);
    std::fs::write(&path, k.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    Key {
        path,
        public: k.public_key().to_openssh().unwrap(),
    }
}

struct World {
    sim: SimHandle,
    dir: tempfile::TempDir,
    key: Key,
}

async fn world(workstation_reaches_guests: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), "id_ed25519", 7);
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0005,
        latency: LatencyModel {
            ssh_boot_ms: 0,
            ssh_boot_jitter_ms: 0,
            ..LatencyModel::default()
        },
        ssh: SimSshConfig {
            node_keys: vec![("root".into(), key.public.clone())],
            workstation_reaches_guests,
            node_aliases: vec!["127.0.0.1".into()],
            bridge_addresses: BTreeMap::new(),
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    World { sim, dir, key }
}

impl World {
    /// A running guest with this address whose cloud-init delivered `user` + `keys`.
    fn guest(&self, vmid: u32, name: &str, addr: &str, user: &str, keys: &[&str]) {
        let mut config = BTreeMap::new();
        config.insert("name".into(), name.to_string());
        config.insert(
            "net0".into(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0".into(),
        );
        config.insert("ipconfig0".into(), format!("ip={addr}/24,gw=10.20.0.1"));
        config.insert(
            "smbios1".into(),
            format!("uuid=00000000-0000-4000-8000-{vmid:012x}"),
        );
        let mut baked = BTreeMap::new();
        baked.insert("ciuser".to_string(), user.to_string());
        let enc: Vec<String> = keys
            .iter()
            .map(|k| {
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        baked.insert("sshkeys".to_string(), enc.join("%0A"));
        self.sim.state().vms.insert(
            vmid,
            Vm {
                vmid,
                node: "pve1".into(),
                config,
                pending: BTreeMap::new(),
                pending_delete: BTreeSet::new(),
                running: true,
                started_at_ms: Some(0),
                cloudinit_baked: baked,
            },
        );
    }

    fn evidence(&self) -> PathBuf {
        self.dir.path().join("evidence")
    }

    fn env(&self) -> GateEnv {
        GateEnv {
            proxmox_api_ip: Some("127.0.0.1".into()),
            proxmox_ssh_username: Some("root".into()),
            evidence_dir: self.evidence(),
            dialer: Arc::new(self.sim.ssh()),
            known_hosts: Arc::new(KnownHosts::new(self.dir.path().join("known_hosts"))),
            default_identities: Identities::default(),
            vm_identities: BTreeMap::new(),
            home: None,
            retry_interval: Duration::from_millis(100),
            max_parallel: 8,
            time_scale: 1.0,
        }
    }

    fn cfg(&self) -> GateConfig {
        GateConfig {
            enabled: true,
            required: true,
            target_user: "opsadmin".into(),
            target_port: 22,
            connectivity_timeout_s: 1,
            connectivity_wait_s: 1,
            ssh_proxy_jump_auto: true,
            ssh_proxy_jump_host: String::new(),
            ssh_proxy_jump_user: String::new(),
            ssh_proxy_jump_port: 22,
            ssh_private_key_file: self.key.path.display().to_string(),
            wait_cloud_init: false,
        }
    }

    fn direct_cfg(&self) -> GateConfig {
        GateConfig {
            ssh_proxy_jump_auto: false,
            ..self.cfg()
        }
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.evidence().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

fn outputs(vms: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, ip) in vms {
        m.insert(
            k.to_string(),
            json!({"ipv4_address": ip, "ipv4_configured_primary": format!("{ip}/24"), "is_windows": false}),
        );
    }
    json!({ "vms": m })
}

async fn gate(w: &World, cfg: &GateConfig, out: &Value) -> GateReport {
    run_gate(cfg, out, &w.env()).await
}

#[tokio::test]
async fn direct_gate_passes_and_writes_upstream_evidence() {
    let w = world(true).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    let r = gate(&w, &w.direct_cfg(), &outputs(&[("app-01", "10.20.0.11")])).await;
    assert_eq!(r.status(), "ok", "{:?}", r.summary);
    assert_eq!(r.error, None);
    let label = "connectivity_ssh_auth.platform_vm_targets.app-01";
    assert_eq!(w.file(&format!("{label}.stdout.txt")), "");
    assert_eq!(w.file(&format!("{label}.stderr.txt")), "");
    let res: Value = serde_json::from_str(&w.file(&format!("{label}.result.json"))).unwrap();
    assert_eq!(res["rc"], 0);
    assert!(res["argv"]
        .as_array()
        .unwrap()
        .contains(&json!("opsadmin@10.20.0.11")));
    let summary: Value = serde_json::from_str(&w.file("post_apply_ssh_readiness.json")).unwrap();
    for k in [
        "enabled",
        "required",
        "status",
        "config",
        "targets",
        "effective_proxy",
    ] {
        assert!(summary.get(k).is_some(), "missing {k}: {summary}");
    }
    assert_eq!(
        summary["targets"],
        json!([{"name": "app-01", "host": "10.20.0.11"}])
    );
    assert_eq!(summary["effective_proxy"]["host"], "");
}

#[tokio::test]
async fn auto_proxy_goes_through_the_proxmox_host_over_one_session() {
    let w = world(false).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    w.guest(
        102,
        "dev-app-02",
        "10.20.0.12",
        "opsadmin",
        &[&w.key.public],
    );
    let r = gate(
        &w,
        &w.cfg(),
        &outputs(&[("app-01", "10.20.0.11"), ("app-02", "10.20.0.12")]),
    )
    .await;
    assert_eq!(r.status(), "ok", "{:?}", r.summary);
    assert!(r.warnings.contains(
        &"auto-enabled ssh proxy jump via root@127.0.0.1 from proxmox init metadata".to_string()
    ));
    assert_eq!(r.summary["effective_proxy"]["host"], "127.0.0.1");
    assert_eq!(r.summary["effective_proxy"]["user"], "root");
    // One bastion session, one session per target.
    assert_eq!(r.stats.sessions_opened, 3, "{:?}", r.stats);
    assert_eq!(
        w.sim.ssh().counters().node_sessions,
        2,
        "TCP probe + the bastion session"
    );
    let nc = w.file("connectivity_proxy_nc.platform_vm_targets.app-02.stderr.txt");
    assert!(
        nc.contains("Connection to 10.20.0.12 22 port [tcp/ssh] succeeded!"),
        "{nc}"
    );
    w.file("connectivity_ssh_auth.platform_vm_targets.app-02.result.json");
}

#[tokio::test]
async fn a_key_the_guest_does_not_hold_fails_with_the_proxy_auth_message() {
    let w = world(false).await;
    let other = make_key(w.dir.path(), "other", 9);
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&other.public],
    );
    let r = gate(&w, &w.cfg(), &outputs(&[("app-01", "10.20.0.11")])).await;
    let err = r.error.clone().expect("required failure");
    assert!(
        err.starts_with("connectivity check failed: target is reachable via proxy, but SSH authentication failed for platform_vm_targets.app-01 (host=10.20.0.11). Confirm target_user=opsadmin and key injection. ssh authentication failed (see connectivity_ssh_auth.platform_vm_targets.app-01"),
        "{err}"
    );
    assert!(err.ends_with(".* in evidence dir)"), "{err}");
    assert_eq!(r.status(), "error");
    assert_eq!(r.summary["error"], json!(err));
    // Retried until the deadline: a .tryN label exists.
    assert!(w
        .evidence()
        .join("connectivity_ssh_auth.platform_vm_targets.app-01.try2.stderr.txt")
        .exists());
    let stderr = w.file("connectivity_ssh_auth.platform_vm_targets.app-01.stderr.txt");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_user_fails_the_same_way() {
    let w = world(true).await;
    w.guest(101, "dev-app-01", "10.20.0.11", "root", &[&w.key.public]);
    let r = gate(&w, &w.direct_cfg(), &outputs(&[("app-01", "10.20.0.11")])).await;
    let err = r.error.expect("failure");
    assert!(
        err.starts_with("connectivity check failed: target SSH port is reachable, but authentication failed for platform_vm_targets.app-01 (host=10.20.0.11). Confirm target_user=opsadmin exists and the SSH key is authorised. ssh authentication failed (see "),
        "{err}"
    );
}

#[tokio::test]
async fn required_false_turns_the_failure_into_the_warn_only_message() {
    let w = world(false).await;
    let other = make_key(w.dir.path(), "other", 9);
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&other.public],
    );
    let cfg = GateConfig {
        required: false,
        ..w.cfg()
    };
    let r = gate(&w, &cfg, &outputs(&[("app-01", "10.20.0.11")])).await;
    assert_eq!(r.error, None);
    assert_eq!(r.status(), "error");
    assert!(r
        .warnings
        .iter()
        .any(|x| x.starts_with("post-apply SSH readiness failed (warn-only): connectivity check failed: target is reachable via proxy, but SSH authentication failed for platform_vm_targets.app-01")),
        "{:?}", r.warnings);
}

#[tokio::test]
async fn a_guest_that_never_boots_ssh_fails_the_proxy_port_test() {
    let w = world(false).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    w.sim.ssh().edit_faults(|f| {
        f.never_boot.insert("dev-app-01".into());
    });
    let r = gate(&w, &w.cfg(), &outputs(&[("app-01", "10.20.0.11")])).await;
    let err = r.error.expect("failure");
    assert!(
        err.starts_with("connectivity check failed: proxy is reachable, but cannot reach the target from the proxy (root@127.0.0.1 -> 10.20.0.11:22) for platform_vm_targets.app-01. proxy port test failed (see connectivity_proxy_nc.platform_vm_targets.app-01"),
        "{err}"
    );
    let nc = w.file("connectivity_proxy_nc.platform_vm_targets.app-01.stderr.txt");
    assert!(
        nc.contains("nc: connect to 10.20.0.11 port 22 (tcp) failed"),
        "{nc}"
    );
}

#[tokio::test]
async fn a_slow_banner_is_ssh_not_ready_yet() {
    let w = world(true).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    // 10 000 simulated s at time scale 0.0005 = 5 real s, longer than the 1 s attempt timeout.
    w.sim.ssh().edit_faults(|f| {
        f.slow_banner_ms.insert("dev-app-01".into(), 10_000_000);
    });
    let r = gate(&w, &w.direct_cfg(), &outputs(&[("app-01", "10.20.0.11")])).await;
    let err = r.error.expect("failure");
    assert!(
        err.starts_with("connectivity check failed: target VM is reachable through its transport path, but SSH is not ready yet for platform_vm_targets.app-01 (host=10.20.0.11). ssh service did not become ready yet (see connectivity_ssh_auth.platform_vm_targets.app-01"),
        "{err}"
    );
    let stderr = w.file("connectivity_ssh_auth.platform_vm_targets.app-01.stderr.txt");
    assert!(
        stderr.contains("Connection timed out during banner exchange"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unrouted_guest_is_unreachable_from_this_machine_with_the_proxmox_hint() {
    let w = world(false).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    let r = gate(&w, &w.direct_cfg(), &outputs(&[("app-01", "10.20.0.11")])).await;
    assert_eq!(
        r.error.as_deref(),
        Some("connectivity check failed: cannot reach platform_vm_targets.app-01 host=10.20.0.11:22 from this machine (timeout=1s): [Errno 113] No route to host. Ensure your workstation has L3 access to the management network (VPN/route), or configure inputs.ssh_proxy_jump_host for a bastion. Hint: proxmox init detected; try ssh_proxy_jump_host=127.0.0.1.")
    );
}

#[tokio::test]
async fn an_unreachable_proxy_fails_with_the_proxy_message() {
    let w = world(false).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    let cfg = GateConfig {
        ssh_proxy_jump_host: "192.0.2.99".into(),
        ssh_proxy_jump_user: "jump".into(),
        ..w.cfg()
    };
    let r = gate(&w, &cfg, &outputs(&[("app-01", "10.20.0.11")])).await;
    assert_eq!(
        r.error.as_deref(),
        Some("connectivity check failed: cannot reach ssh_proxy_jump_host=192.0.2.99:22 (timeout=1s): [Errno 113] No route to host")
    );
}

#[tokio::test]
async fn a_changed_host_key_for_the_same_vm_is_refused_and_a_recreated_vm_is_relearned() {
    let w = world(true).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    let mut env = w.env();
    env.vm_identities.insert("app-01".into(), "vmid=101".into());
    let out = outputs(&[("app-01", "10.20.0.11")]);
    assert_eq!(run_gate(&w.direct_cfg(), &out, &env).await.status(), "ok");
    // The same VMID now answers with another key (its SMBIOS UUID changed under our feet).
    w.sim.state().vms.get_mut(&101).unwrap().config.insert(
        "smbios1".into(),
        "uuid=11111111-0000-4000-8000-000000000000".into(),
    );
    let r = run_gate(&w.direct_cfg(), &out, &env).await;
    let err = r.error.expect("mismatch");
    assert!(err.contains("host key mismatch for 10.20.0.11"), "{err}");
    assert!(err.contains("SHA256:"), "{err}");
    // The engine re-created the VM (new VMID): the entry is replaced.
    env.vm_identities.insert("app-01".into(), "vmid=105".into());
    assert_eq!(run_gate(&w.direct_cfg(), &out, &env).await.status(), "ok");
}

#[tokio::test]
async fn cloud_init_degraded_is_success_with_a_warning_and_error_is_a_failure() {
    let w = world(true).await;
    w.guest(
        101,
        "dev-app-01",
        "10.20.0.11",
        "opsadmin",
        &[&w.key.public],
    );
    let cfg = GateConfig {
        wait_cloud_init: true,
        ..w.direct_cfg()
    };
    let out = outputs(&[("app-01", "10.20.0.11")]);
    w.sim.ssh().edit_faults(|f| {
        f.cloud_init_exit.insert("dev-app-01".into(), 2);
    });
    let r = gate(&w, &cfg, &out).await;
    assert_eq!(r.status(), "ok");
    assert!(
        r.warnings
            .iter()
            .any(|x| x.contains("cloud-init status exit 2, degraded")),
        "{:?}",
        r.warnings
    );
    assert!(w
        .file("connectivity_cloud_init.platform_vm_targets.app-01.stdout.txt")
        .contains("degraded"));
    w.sim.ssh().edit_faults(|f| {
        f.cloud_init_exit.insert("dev-app-01".into(), 1);
    });
    let r = gate(&w, &cfg, &out).await;
    let err = r.error.expect("cloud-init error fails the gate");
    assert!(err.contains("cloud-init status exit 1"), "{err}");
}

#[tokio::test]
async fn the_simulated_network_never_dials_a_real_socket() {
    let w = world(true).await;
    // A real listener on loopback: the sim dialer must not reach it, whatever the address.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let ssh: Arc<SimSsh> = w.sim.ssh();
    for host in [
        "127.0.0.1",
        "127.0.0.2",
        "10.20.0.11",
        "10.0.0.1",
        "localhost",
    ] {
        let r = ssh.dial(host, port, Duration::from_millis(200)).await;
        assert!(
            matches!(r, Err(DialError::Refused) | Err(DialError::Unreachable)),
            "{host}:{port} was dialled"
        );
    }
    let accepted = tokio::time::timeout(Duration::from_millis(300), l.accept()).await;
    assert!(
        accepted.is_err(),
        "the simulated dialer reached a real socket"
    );
}

#[tokio::test]
async fn disabled_gate_probes_nothing() {
    let w = world(true).await;
    let cfg = GateConfig {
        enabled: false,
        ..w.direct_cfg()
    };
    let r = gate(&w, &cfg, &outputs(&[("app-01", "10.20.0.11")])).await;
    assert_eq!(r.status(), "skipped");
    assert_eq!(w.sim.ssh().counters().guest_sessions, 0);
    assert!(!w
        .evidence()
        .join("connectivity_ssh_auth.platform_vm_targets.app-01.result.json")
        .exists());
}

fn node_ssh(w: &World) -> hyops_pve::ssh::node::NodeSsh {
    use hyops_pve::ssh::node::{NodeSsh, NodeSshTarget};
    NodeSsh::new(
        NodeSshTarget {
            api_host: "127.0.0.1".into(),
            api_node: "pve1".into(),
            port: 22,
            user: "root".into(),
        },
        Arc::new(w.sim.ssh()),
        hyops_pve::ssh::SshContext {
            identities: Arc::new(Identities::key_file(&w.key.path).unwrap()),
            known_hosts: Arc::new(KnownHosts::new(w.dir.path().join("known_hosts"))),
        },
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn node_ssh_reaches_other_nodes_through_the_api_host() {
    let w = world(false).await;
    let ssh = node_ssh(&w);
    let out = ssh
        .run("pve2", "pvesm path local:snippets/x.yaml")
        .await
        .unwrap();
    assert_eq!(out.stdout, "/var/lib/vz/snippets/x.yaml\n");
    // One session to the API host, one to pve2 through it.
    assert_eq!(ssh.sessions_opened(), 2);
    assert_eq!(w.sim.ssh().counters().direct_tcpip, 1);
}

#[tokio::test]
async fn a_local_forward_carries_connections_through_the_node() {
    use tokio::io::AsyncReadExt;
    let w = world(false).await;
    w.guest(101, "dev-nb-01", "10.20.0.50", "opsadmin", &[&w.key.public]);
    let ssh = node_ssh(&w);
    let session = ssh.session("pve1").await.unwrap();
    let fwd = hyops_pve::ssh::tunnel::LocalForward::start(
        session,
        "10.20.0.50",
        22,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(fwd.local_addr().ip().is_loopback());
    // Whatever listens behind the node answers on the local end (here the guest's sshd).
    let mut s = tokio::net::TcpStream::connect(fwd.local_addr())
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SSH-2.0-"),
        "{:?}",
        &buf[..n]
    );
    assert_eq!(fwd.connections(), 1);
    fwd.stop().await;
}

#[tokio::test]
async fn the_sdn_gateway_probe_reports_drift_and_passes_when_the_gateway_is_there() {
    use hyops_pve::ssh::sdn::check_gateways;
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), "id", 3);
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0005,
        ssh: SimSshConfig {
            node_keys: vec![("root".into(), key.public.clone())],
            workstation_reaches_guests: false,
            node_aliases: vec!["127.0.0.1".into()],
            bridge_addresses: BTreeMap::from([(
                "vnetmgmt".to_string(),
                vec!["10.10.0.1/24".to_string()],
            )]),
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let w = World { sim, dir, key };
    let ssh = node_ssh(&w);
    let bridges = vec!["vnetmgmt".to_string()];
    let ok = BTreeMap::from([("vnetmgmt".to_string(), vec!["10.10.0.1/24".to_string()])]);
    assert_eq!(
        check_gateways(&ssh, "pve1", &bridges, &ok, "dev").await,
        Ok(None)
    );
    let drift = BTreeMap::from([("vnetmgmt".to_string(), vec!["10.10.9.1/24".to_string()])]);
    let e = check_gateways(&ssh, "pve1", &bridges, &drift, "dev")
        .await
        .unwrap_err();
    assert!(e.starts_with("host-side Proxmox SDN gateway drift detected for requested HybridOps bridge(s): vnetmgmt expected=['10.10.9.1/24'] observed=['10.10.0.1/24']"), "{e}");
    // A bridge the node lacks has no addresses.
    let missing = vec!["vnetgone".to_string()];
    let exp = BTreeMap::from([("vnetgone".to_string(), vec!["10.1.0.1/24".to_string()])]);
    let e = check_gateways(&ssh, "pve1", &missing, &exp, "dev")
        .await
        .unwrap_err();
    assert!(
        e.contains("vnetgone expected=['10.1.0.1/24'] observed=[]"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_node_makes_the_sdn_probe_a_skipped_warning() {
    use hyops_pve::ssh::node::{NodeSsh, NodeSshTarget};
    use hyops_pve::ssh::sdn::check_gateways;
    let w = world(false).await;
    let ssh = NodeSsh::new(
        NodeSshTarget {
            api_host: "192.0.2.77".into(),
            api_node: "pve1".into(),
            port: 22,
            user: "root".into(),
        },
        Arc::new(w.sim.ssh()),
        hyops_pve::ssh::SshContext {
            identities: Arc::new(Identities::key_file(&w.key.path).unwrap()),
            known_hosts: Arc::new(KnownHosts::new(w.dir.path().join("kh"))),
        },
        Duration::from_secs(1),
    );
    let r = check_gateways(&ssh, "pve1", &["vnetmgmt".into()], &BTreeMap::new(), "dev").await;
    let warning = r.unwrap().expect("skipped");
    assert!(
        warning.starts_with("sdn host gateway probe skipped: proxmox ssh probe failed: "),
        "{warning}"
    );
}
