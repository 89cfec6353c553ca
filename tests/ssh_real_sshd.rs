//! The readiness gate, ProxyJump and SFTP snippet upload against real OpenSSH: throwaway
//! `sshd` processes on 127.0.0.1 ephemeral ports, each with its own host key, config and
//! authorized_keys (a direct target, a bastion with `AllowTcpForwarding yes` in front of a
//! target, a target with the wrong authorised key, a port that never answers). The gate must
//! pass and fail here exactly as against the simulator. Required in CI
//! (`HYOPS_REQUIRE_SSHD=1`), SKIPPED where `sshd` is not installed.

use crate::optional;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyops_pve::plan::desired::{SnippetFile, SnippetKind};
use hyops_pve::ssh::gate::{run_gate, GateConfig, GateEnv, GateReport};
use hyops_pve::ssh::{snippets, Identities, KnownHosts, Peer, SshContext, SshSession, TcpDialer};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use serde_json::{json, Value};

fn sshd_binary() -> Result<PathBuf, String> {
    for p in ["/usr/sbin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    Err("OpenSSH sshd is not installed (apt-get install openssh-server)".into())
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Key {
    path: PathBuf,
    public: String,
}

fn key(dir: &Path, name: &str, seed: u8) -> Key {
    let k = PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
    let path = dir.join(name);
    std::fs::write(&path, k.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Key {
        path,
        public: k.public_key().to_openssh().unwrap(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway sshd; killed (by its own pid) on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Start sshd with `authorized` public keys and host key seed `host_seed`.
    fn start(
        base: &Path,
        name: &str,
        authorized: &[&str],
        host_seed: u8,
        forwarding: bool,
    ) -> Sshd {
        Self::start_on(base, name, authorized, host_seed, forwarding, free_port())
    }

    fn start_on(
        base: &Path,
        name: &str,
        authorized: &[&str],
        host_seed: u8,
        forwarding: bool,
        port: u16,
    ) -> Sshd {
        let bin = sshd_binary().unwrap();
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let host = key(&dir, "host_ed25519", host_seed);
        std::fs::write(dir.join("authorized_keys"), authorized.join("\n") + "\n").unwrap();
        std::fs::create_dir_all(dir.join("snippets")).unwrap();
        // Privilege separation directory sshd insists on when started as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding {}\nSubsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100:30:200\n",
            host.path.display(),
            dir.join("authorized_keys").display(),
            if forwarding { "yes" } else { "no" },
        );
        std::fs::write(dir.join("sshd_config"), cfg).unwrap();
        let child = Command::new(bin)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("sshd.log")).unwrap(),
            ))
            .spawn()
            .expect("sshd starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd {name} did not listen on {port}: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd { child, port, dir }
    }
}

struct World {
    dir: tempfile::TempDir,
    key: Key,
    user: String,
}

fn world() -> Option<World> {
    optional::require("OpenSSH sshd", "SSHD", sshd_binary)?;
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path(), "id_ed25519", 11);
    Some(World {
        dir,
        key,
        user: user(),
    })
}

impl World {
    fn evidence(&self) -> PathBuf {
        self.dir.path().join("evidence")
    }

    fn env(&self) -> GateEnv {
        GateEnv {
            proxmox_api_ip: None,
            proxmox_ssh_username: None,
            evidence_dir: self.evidence(),
            dialer: Arc::new(TcpDialer::loopback_only()),
            known_hosts: Arc::new(KnownHosts::new(self.dir.path().join("known_hosts"))),
            default_identities: Identities::default(),
            vm_identities: BTreeMap::new(),
            home: None,
            retry_interval: Duration::from_millis(200),
            max_parallel: 4,
            time_scale: 1.0,
        }
    }

    fn cfg(&self, target_port: u16) -> GateConfig {
        GateConfig {
            enabled: true,
            required: true,
            target_user: self.user.clone(),
            target_port,
            connectivity_timeout_s: 2,
            connectivity_wait_s: 2,
            ssh_proxy_jump_auto: false,
            ssh_proxy_jump_host: String::new(),
            ssh_proxy_jump_user: String::new(),
            ssh_proxy_jump_port: 22,
            ssh_private_key_file: self.key.path.display().to_string(),
            wait_cloud_init: false,
        }
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.evidence().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    async fn gate(&self, cfg: &GateConfig) -> GateReport {
        run_gate(
            cfg,
            &json!({"vms": {"app-01": {"ipv4_address": "127.0.0.1", "is_windows": false}}}),
            &self.env(),
        )
        .await
    }
}

fn assert_evidence(w: &World, label: &str, rc: i64) {
    assert!(
        w.evidence().join(format!("{label}.stdout.txt")).exists(),
        "{label}.stdout.txt"
    );
    assert!(
        w.evidence().join(format!("{label}.stderr.txt")).exists(),
        "{label}.stderr.txt"
    );
    let r: Value = serde_json::from_str(&w.file(&format!("{label}.result.json"))).unwrap();
    assert_eq!(r["rc"], json!(rc), "{label}: {r}");
    for k in ["argv", "cwd", "rc", "duration_ms"] {
        assert!(r.get(k).is_some(), "{label}.result.json lacks {k}: {r}");
    }
}

#[tokio::test]
async fn direct_gate_passes_against_real_sshd_with_evidence() {
    let Some(w) = world() else { return };
    let t = Sshd::start(w.dir.path(), "target", &[&w.key.public], 1, false);
    let r = w.gate(&w.cfg(t.port)).await;
    assert_eq!(
        r.status(),
        "ok",
        "{:?} {}",
        r.summary,
        std::fs::read_to_string(t.dir.join("sshd.log")).unwrap_or_default()
    );
    assert_evidence(&w, "connectivity_ssh_auth.platform_vm_targets.app-01", 0);
    let s: Value = serde_json::from_str(&w.file("post_apply_ssh_readiness.json")).unwrap();
    assert_eq!(s["status"], "ok");
    assert_eq!(
        s["targets"],
        json!([{"name": "app-01", "host": "127.0.0.1"}])
    );
    // The host key was learned on first use.
    let kh = std::fs::read_to_string(w.dir.path().join("known_hosts")).unwrap();
    assert!(
        kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", t.port)),
        "{kh}"
    );
}

#[tokio::test]
async fn gate_through_a_real_bastion_uses_direct_tcpip() {
    let Some(w) = world() else { return };
    let bastion = Sshd::start(w.dir.path(), "bastion", &[&w.key.public], 2, true);
    let t = Sshd::start(w.dir.path(), "target", &[&w.key.public], 3, false);
    let cfg = GateConfig {
        ssh_proxy_jump_host: "127.0.0.1".into(),
        ssh_proxy_jump_user: w.user.clone(),
        ssh_proxy_jump_port: bastion.port,
        ..w.cfg(t.port)
    };
    let r = w.gate(&cfg).await;
    assert_eq!(r.status(), "ok", "{:?}", r.summary);
    assert_eq!(
        r.stats.sessions_opened, 2,
        "one bastion session + the target"
    );
    assert_eq!(r.summary["effective_proxy"]["port"], json!(bastion.port));
    assert_evidence(&w, "connectivity_proxy_nc.platform_vm_targets.app-01", 0);
    assert_evidence(&w, "connectivity_ssh_auth.platform_vm_targets.app-01", 0);
    let argv = w.file("connectivity_ssh_auth.platform_vm_targets.app-01.result.json");
    assert!(argv.contains("ProxyJump="), "{argv}");
}

#[tokio::test]
async fn a_bastion_without_forwarding_fails_the_proxy_port_test() {
    let Some(w) = world() else { return };
    let bastion = Sshd::start(w.dir.path(), "bastion", &[&w.key.public], 2, false);
    let t = Sshd::start(w.dir.path(), "target", &[&w.key.public], 3, false);
    let cfg = GateConfig {
        ssh_proxy_jump_host: "127.0.0.1".into(),
        ssh_proxy_jump_user: w.user.clone(),
        ssh_proxy_jump_port: bastion.port,
        ..w.cfg(t.port)
    };
    let r = w.gate(&cfg).await;
    let err = r.error.expect("fails");
    assert!(
        err.starts_with(&format!("connectivity check failed: proxy is reachable, but cannot reach the target from the proxy ({}@127.0.0.1 -> 127.0.0.1:{}) for platform_vm_targets.app-01. proxy port test failed (see connectivity_proxy_nc.platform_vm_targets.app-01", w.user, t.port)),
        "{err}"
    );
    assert_evidence(&w, "connectivity_proxy_nc.platform_vm_targets.app-01", 1);
}

#[tokio::test]
async fn a_wrong_authorised_key_fails_with_the_auth_message_direct_and_via_bastion() {
    let Some(w) = world() else { return };
    let other = key(w.dir.path(), "other", 12);
    let t = Sshd::start(w.dir.path(), "target", &[&other.public], 4, false);
    let r = w.gate(&w.cfg(t.port)).await;
    let err = r.error.expect("fails");
    assert!(
        err.starts_with(&format!("connectivity check failed: target SSH port is reachable, but authentication failed for platform_vm_targets.app-01 (host=127.0.0.1). Confirm target_user={} exists and the SSH key is authorised. ssh authentication failed (see connectivity_ssh_auth.platform_vm_targets.app-01", w.user)),
        "{err}"
    );
    let stderr = w.file("connectivity_ssh_auth.platform_vm_targets.app-01.stderr.txt");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    assert_evidence(&w, "connectivity_ssh_auth.platform_vm_targets.app-01", 255);

    let bastion = Sshd::start(w.dir.path(), "bastion", &[&w.key.public], 5, true);
    let cfg = GateConfig {
        ssh_proxy_jump_host: "127.0.0.1".into(),
        ssh_proxy_jump_user: w.user.clone(),
        ssh_proxy_jump_port: bastion.port,
        ..w.cfg(t.port)
    };
    let err = w.gate(&cfg).await.error.expect("fails via bastion");
    assert!(
        err.starts_with(&format!("connectivity check failed: target is reachable via proxy, but SSH authentication failed for platform_vm_targets.app-01 (host=127.0.0.1). Confirm target_user={} and key injection. ssh authentication failed (see ", w.user)),
        "{err}"
    );
}

#[tokio::test]
async fn a_port_that_never_answers_is_ssh_not_ready() {
    let Some(w) = world() else { return };
    // Bound and listening (the kernel completes the handshake) but never serving a banner.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let r = w.gate(&w.cfg(port)).await;
    let err = r.error.expect("fails");
    assert!(
        err.starts_with("connectivity check failed: target VM is reachable through its transport path, but SSH is not ready yet for platform_vm_targets.app-01 (host=127.0.0.1). ssh service did not become ready yet (see connectivity_ssh_auth.platform_vm_targets.app-01"),
        "{err}"
    );
    let stderr = w.file("connectivity_ssh_auth.platform_vm_targets.app-01.stderr.txt");
    assert!(stderr.contains("banner exchange"), "{stderr}");
    drop(silent);
}

/// A TCP server on loopback that answers every connection with `bytes` over and over for a
/// few seconds (never an `SSH-2.0-` line).
fn not_ssh_server(bytes: &'static [u8]) -> u16 {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(6) && s.write_all(bytes).is_ok() {}
            });
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_never_sends_an_ssh_version_line_is_ssh_not_ready_as_with_openssh() {
    let Some(w) = world() else { return };
    // A line longer than any banner, and endless lines that are not a banner: OpenSSH (what
    // upstream runs) fails both in "banner exchange", which upstream classifies as SSH not
    // ready yet, never as an authentication failure.
    static LONG: [u8; 4096] = [b'A'; 4096];
    for bytes in [&LONG[..], b"220 smtp.example ESMTP ready\r\n"] {
        let port = not_ssh_server(bytes);
        if let Ok(out) = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=3"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-p", &port.to_string(), "x@127.0.0.1", "true"])
            .stdin(Stdio::null())
            .output()
        {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("banner exchange"), "OpenSSH: {stderr}");
        }
        let err = w.gate(&w.cfg(port)).await.error.expect("fails");
        assert!(
            err.starts_with("connectivity check failed: target VM is reachable through its transport path, but SSH is not ready yet for platform_vm_targets.app-01 (host=127.0.0.1). ssh service did not become ready yet"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_closed_port_is_unreachable_from_this_machine() {
    let Some(w) = world() else { return };
    let port = free_port();
    let r = w.gate(&w.cfg(port)).await;
    assert_eq!(
        r.error.as_deref(),
        Some(format!("connectivity check failed: cannot reach platform_vm_targets.app-01 host=127.0.0.1:{port} from this machine (timeout=2s): [Errno 111] Connection refused. Ensure your workstation has L3 access to the management network (VPN/route), or configure inputs.ssh_proxy_jump_host for a bastion.").as_str())
    );
}

#[tokio::test]
async fn a_host_key_change_on_a_real_sshd_is_refused() {
    let Some(w) = world() else { return };
    let t = Sshd::start(w.dir.path(), "target", &[&w.key.public], 6, false);
    let port = t.port;
    assert_eq!(w.gate(&w.cfg(port)).await.status(), "ok");
    drop(t);
    // The same address and port now presents another host key.
    let _t2 = Sshd::start_on(w.dir.path(), "target2", &[&w.key.public], 7, false, port);
    let err = w.gate(&w.cfg(port)).await.error.expect("mismatch");
    assert!(
        err.contains(&format!("host key mismatch for [127.0.0.1]:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn snippets_upload_over_real_sftp_is_content_addressed() {
    let Some(w) = world() else { return };
    let t = Sshd::start(w.dir.path(), "node", &[&w.key.public], 8, false);
    let ctx = SshContext {
        identities: Arc::new(Identities::key_file(&w.key.path).unwrap()),
        known_hosts: Arc::new(KnownHosts::new(w.dir.path().join("known_hosts"))),
    };
    let peer = Peer {
        host: "127.0.0.1".into(),
        port: t.port,
        user: w.user.clone(),
        identity: String::new(),
    };
    let s = SshSession::connect(
        &TcpDialer::loopback_only(),
        peer,
        &ctx,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let dir = t.dir.join("snippets").display().to_string();
    let file = |content: &str| SnippetFile {
        kind: SnippetKind::User,
        storage: "local".into(),
        file: hyops_pve::plan::desired::snippet_file_name("dev-app-01", SnippetKind::User, content),
        content: content.into(),
    };
    let a = file("#cloud-config\nhostname: a\n");
    let (up, present) = snippets::upload_into(&s, &dir, &[&a]).await.unwrap();
    assert_eq!((up.len(), present), (1, 0));
    assert_eq!(
        std::fs::read_to_string(t.dir.join("snippets").join(&a.file)).unwrap(),
        a.content
    );
    // Same content again: nothing written.
    let (up, present) = snippets::upload_into(&s, &dir, &[&a]).await.unwrap();
    assert_eq!((up.len(), present), (0, 1));
    // New content: a new file; the old one is stale and goes.
    let b = file("#cloud-config\nhostname: b\n");
    snippets::upload_into(&s, &dir, &[&b]).await.unwrap();
    let names = ["dev-app-01".to_string()].into_iter().collect();
    let keep = [b.file.clone()].into_iter().collect();
    let removed = snippets::remove_in(&s, &dir, &names, &keep).await.unwrap();
    assert_eq!(removed, vec![a.file.clone()]);
    let left: Vec<String> = std::fs::read_dir(t.dir.join("snippets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![b.file.clone()]);
    // A file of another VM is never touched.
    std::fs::write(
        t.dir
            .join("snippets")
            .join("dev-app-010-cloud-init-user.yaml"),
        "x",
    )
    .unwrap();
    assert!(snippets::remove_in(&s, &dir, &names, &keep)
        .await
        .unwrap()
        .is_empty());
    s.close().await;
}
