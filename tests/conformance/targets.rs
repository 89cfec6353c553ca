//! Conformance targets: how to reach the simulator, fakepve and a real PVE, what each one is
//! known not to model (`Capabilities`), and the harness that runs one case body against one
//! target and always cleans up the VMs the case created. Knows nothing about what the cases
//! assert; never deletes a VM whose name does not carry this run's `hyops-conf-` prefix.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use hyops_pve::pve::{
    ErrorClass, PveAuth, PveClient, PveConfig, PveError, ResourceType, TaskOutcome, TlsMode, Upid,
    WaitOptions,
};
use hyops_pve::secret::Secret;
use hyops_pve::sim::{ClusterDescription, SimConfig, SimHandle, Simulator};

/// Which Proxmox a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sim,
    FakePve,
    RealPve,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sim => "sim",
            Kind::FakePve => "fakepve",
            Kind::RealPve => "real PVE",
        }
    }
}

/// What a target models. `false` marks a verified divergence from real PVE; the cases skip only
/// the assertion behind that flag, for that target.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// `PUT …/resize` changes the `size=` of the disk.
    pub resize_changes_size: bool,
    /// A shrinking resize fails inside its task (`shrinking disks is not supported`).
    pub shrink_fails_in_task: bool,
    /// A clone gets its own cloud-init volume (`vm-<newid>-cloudinit`).
    pub cloudinit_volume_per_vm: bool,
    /// A `netN` written without a MAC gets one from the server.
    pub mac_assigned_on_config_write: bool,
    /// The guest agent of a started clone reports the configured address.
    pub agent_ips: bool,
    /// `status/shutdown` of a stopped VM is a task that ends OK (not an HTTP error).
    pub shutdown_of_stopped_vm_is_task: bool,
    /// Request counters that show whether every call passed the API spec check.
    pub spec_counters: bool,
}

/// Real PVE: every behaviour is real by definition; the agent is only checked when the
/// template has cloud-init plus qemu-guest-agent and the operator says so.
fn real_caps(agent: bool) -> Capabilities {
    Capabilities {
        resize_changes_size: true,
        shrink_fails_in_task: true,
        cloudinit_volume_per_vm: true,
        mac_assigned_on_config_write: true,
        agent_ips: agent,
        shutdown_of_stopped_vm_is_task: true,
        spec_counters: false,
    }
}

/// The simulator models everything the suite checks and exposes its request counters.
fn sim_caps() -> Capabilities {
    Capabilities {
        spec_counters: true,
        ..real_caps(true)
    }
}

/// fakepve 0.5.0 gaps, each observed on it through the launcher (curl and this suite):
fn fakepve_caps() -> Capabilities {
    Capabilities {
        // `PUT …/resize` is answered by the generic handler: any size, larger or smaller, gives a
        // UPID whose task ends OK, and the disk keeps `size=8G` (observed: size=4G and
        // size=+2G on an 8G disk both "OK", config unchanged).
        resize_changes_size: false,
        shrink_fails_in_task: false,
        // A cloud-init drive is allocated as `vm-9000-disk-0` (not `vm-9000-cloudinit`), and a
        // clone copies the template's reference unchanged
        // (`ide2: local-lvm:vm-9000-disk-0,media=cdrom` on clone 120).
        cloudinit_volume_per_vm: false,
        // `PUT/POST …/config` stores `net1=virtio,bridge=…` as written, without a MAC; PVE adds
        // a random one (Qemu.pm 2181-2185). fakepve adds MACs only on create and clone.
        mac_assigned_on_config_write: false,
        // A clone has no agent scenario: `GET …/agent/network-get-interfaces` on the running
        // clone answers 500 `QEMU guest agent is not running`.
        agent_ips: false,
        // `POST …/status/shutdown` on a stopped VM answers HTTP 500 `VM 120 not running`;
        // PVE starts a task that ends OK.
        shutdown_of_stopped_vm_is_task: false,
        spec_counters: false,
    }
}

/// How to build another client to the same target (a second "process").
#[derive(Clone)]
struct Conn {
    url: String,
    token_id: String,
    token_secret: Secret,
    tls: TlsMode,
}

impl Conn {
    fn client(&self) -> PveClient {
        let auth = PveAuth::Token {
            id: self.token_id.clone(),
            secret: self.token_secret.clone(),
        };
        let mut cfg = PveConfig::new(self.url.clone(), auth);
        cfg.tls = self.tls.clone();
        match PveClient::new(cfg) {
            Ok(c) => c,
            Err(e) => panic!("cannot build a client for {}: {e}", self.url),
        }
    }
}

/// Everything a case body may use.
pub struct Target {
    pub kind: Kind,
    pub client: PveClient,
    pub node: String,
    pub template_vmid: u32,
    pub caps: Capabilities,
    /// Bridge for the NICs the cases write.
    pub bridge: String,
    /// A clone source whose clone task runs long enough to observe `lock: clone`, and the
    /// `full` flag to clone it with.
    pub slow_clone: (u32, Option<bool>),
    /// The simulator, for its counters (sim target only).
    pub sim: Option<SimHandle>,
    conn: Conn,
    /// Name prefix of every VM this case creates: `hyops-conf-<run>-<block>`.
    prefix: String,
    next_candidate: Mutex<u32>,
    created: Mutex<BTreeSet<u32>>,
    wait: WaitOptions,
}

impl Target {
    /// A second, independent client (its own connection pool and in-process id bookkeeping).
    pub fn new_client(&self) -> PveClient {
        self.conn.client()
    }

    /// A VM name owned by this case: `hyops-conf-<run>-<block>-<what>`.
    pub fn vm_name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Task wait options scaled to the target.
    pub fn wait_opts(&self) -> WaitOptions {
        self.wait
    }

    /// Wait for a task with the target's options.
    pub async fn wait(&self, upid: &Upid) -> Result<TaskOutcome, PveError> {
        self.client.wait_task(upid, &self.wait).await
    }

    /// Remember a VMID for the cleanup (only deleted if its name carries our prefix).
    pub fn track(&self, vmid: u32) {
        lock(&self.created).insert(vmid);
    }

    /// The next VMID in this case's block that `nextid?vmid=` confirms free.
    pub async fn fresh_vmid(&self) -> u32 {
        for _ in 0..1000 {
            // Claim the candidate before the await, so concurrent callers never probe the same id.
            let candidate = {
                let mut next = lock(&self.next_candidate);
                *next += 1;
                *next - 1
            };
            match self.client.next_id(Some(candidate)).await {
                Ok(v) if v == candidate => return candidate,
                Ok(_) => {}
                Err(e) if e.classify() == ErrorClass::VmIdTaken => {}
                Err(e) => panic!("[{}] nextid?vmid={candidate}: {e}", self.kind.label()),
            }
        }
        panic!(
            "[{}] no free VMID after 1000 probes from this case's block",
            self.kind.label()
        )
    }

    /// Submit a clone of `source` named `hyops-conf-…-<what>` to a fresh VMID; the VM is tracked
    /// for cleanup before the request is sent.
    pub async fn submit_clone(
        &self,
        source: u32,
        what: &str,
        full: Option<bool>,
    ) -> Result<(u32, Upid), PveError> {
        let vmid = self.fresh_vmid().await;
        self.track(vmid);
        let params = hyops_pve::pve::CloneParams {
            newid: vmid,
            name: Some(self.vm_name(what)),
            description: Some(format!("conformance test VM {}", self.vm_name(what))),
            full,
            ..Default::default()
        };
        let upid = self.client.clone_vm(&self.node, source, &params).await?;
        Ok((vmid, upid))
    }

    /// Clone the template and wait for the clone task; panics on failure.
    pub async fn clone_template(&self, what: &str) -> u32 {
        let (vmid, upid) = match self.submit_clone(self.template_vmid, what, None).await {
            Ok(x) => x,
            Err(e) => panic!("[{}] clone of the template: {e}", self.kind.label()),
        };
        if let Err(e) = self.wait(&upid).await {
            panic!("[{}] clone task to {vmid}: {e}", self.kind.label());
        }
        vmid
    }

    /// Delete every VM this case created (tracked ids, and anything named with our prefix).
    async fn cleanup(&self) -> Vec<String> {
        let mut ids: BTreeSet<u32> = lock(&self.created).clone();
        match self.client.cluster_resources(Some(ResourceType::Vm)).await {
            Ok(all) => {
                for r in all {
                    let ours = r
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(&self.prefix));
                    if let (true, false, Some(id)) = (ours, r.template, r.vmid) {
                        ids.insert(id);
                    }
                }
            }
            Err(e) => return vec![format!("cleanup: cannot list VMs: {e}")],
        }
        let mut errors = Vec::new();
        for id in ids {
            if let Err(e) = self.destroy_ours(id).await {
                errors.push(format!("cleanup of VM {id}: {e}"));
            }
        }
        errors
    }

    /// Stop and delete `vmid` if it exists and is ours; waits out a running clone first.
    async fn destroy_ours(&self, vmid: u32) -> Result<(), String> {
        let deadline = Instant::now() + self.wait.timeout;
        loop {
            if Instant::now() > deadline {
                return Err("still locked or failing at the deadline".into());
            }
            let node = match self.client.vm_node(vmid).await {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let cfg = match self.client.vm_config(&node, vmid, false).await {
                Ok(c) => c,
                Err(e) if e.classify() == ErrorClass::NotFound => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            if cfg.lock.as_deref() == Some("clone") {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if !cfg
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&self.prefix))
                || cfg.template
            {
                // Not ours (e.g. the id was taken by someone else): never touch it.
                return Ok(());
            }
            if let Ok(st) = self.client.vm_status(&node, vmid).await {
                if st.is_running() {
                    if let Ok(upid) = self.client.stop(&node, vmid).await {
                        let _ = self.wait(&upid).await;
                    }
                }
            }
            match self.client.delete_vm(&node, vmid, true, true).await {
                Ok(upid) => match self.wait(&upid).await {
                    Ok(_) => return Ok(()),
                    Err(e) if matches!(e.classify(), ErrorClass::Locked { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                },
                Err(e) if e.classify() == ErrorClass::NotFound => return Ok(()),
                Err(e) if matches!(e.classify(), ErrorClass::Locked { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A case body: borrows the target, panics on a failed assertion.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Run one case body against one target kind: build the target (or print why it is skipped),
/// run the body, always clean up, then report the body's panic or the cleanup's failures.
pub async fn run<F>(kind: Kind, case: &'static str, body: F)
where
    F: for<'a> FnOnce(&'a Target) -> CaseFuture<'a>,
{
    let target = match build(kind).await {
        Ok(t) => t,
        Err(Unavailable::Skip(why)) => {
            // SKIPPED past output capture, or a failure when HYOPS_REQUIRE_FAKEPVE=1.
            let _: Option<()> = crate::optional::require(kind.label(), "FAKEPVE", || Err(why));
            return;
        }
        Err(Unavailable::Fail(why)) => panic!("[{}] {case}: {why}", kind.label()),
    };
    let outcome = AssertUnwindSafe(body(&target)).catch_unwind().await;
    let cleanup = if kind == Kind::Sim {
        Vec::new() // each sim test has its own simulator, dropped below
    } else {
        target.cleanup().await
    };
    if let Some(sim) = &target.sim {
        sim.shutdown().await;
    }
    if let Err(p) = outcome {
        if !cleanup.is_empty() {
            eprintln!("[{}] {case}: also {}", kind.label(), cleanup.join("; "));
        }
        std::panic::resume_unwind(p);
    }
    assert!(
        cleanup.is_empty(),
        "[{}] {case}: {}",
        kind.label(),
        cleanup.join("; ")
    );
}

enum Unavailable {
    /// Only fakepve can be missing (an optional target); the sim never is, and the real-PVE
    /// tests only run when asked for, so for them a missing setting is a failure.
    Skip(String),
    Fail(String),
}

/// Every `run` gets its own block of VMIDs and its own name prefix, so cases sharing one
/// fakepve or one real cluster never collide.
const BLOCK: u32 = 50;
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:04x}", rand::random::<u16>()))
}

fn fast_wait() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(60),
        initial_poll: Duration::from_millis(5),
        max_poll: Duration::from_millis(100),
        not_visible_grace: Duration::from_secs(5),
        log_tail: 20,
    }
}

async fn build(kind: Kind) -> Result<Target, Unavailable> {
    let block = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("hyops-conf-{}-{block}", run_id());
    match kind {
        Kind::Sim => build_sim(prefix).await,
        Kind::FakePve => {
            let info = tokio::task::spawn_blocking(fakepve_info)
                .await
                .map_err(|e| Unavailable::Fail(format!("fakepve launcher thread: {e}")))?;
            let info = match info {
                Ok(i) => i,
                Err(FakeUnavailable::Skip(why)) => return Err(Unavailable::Skip(why.clone())),
                Err(FakeUnavailable::Fail(why)) => return Err(Unavailable::Fail(why.clone())),
            };
            let conn = Conn {
                url: info.url.clone(),
                token_id: info.token_id.clone(),
                token_secret: Secret::new(info.token_secret.clone()),
                tls: TlsMode::Fingerprint(info.fingerprint.clone()),
            };
            Ok(Target {
                kind,
                client: conn.client(),
                node: info.node.clone(),
                template_vmid: info.template_vmid,
                caps: fakepve_caps(),
                bridge: "vmbr0".into(),
                slow_clone: (info.slow_template_vmid, None),
                sim: None,
                conn,
                prefix,
                next_candidate: Mutex::new(1000 + block * BLOCK),
                created: Mutex::new(BTreeSet::new()),
                wait: fast_wait(),
            })
        }
        Kind::RealPve => build_real(prefix, block),
    }
}

/// The simulator's cluster for the suite: one node, a fast storage with the template, and a
/// 2 MB/s storage whose 1 GiB template takes about half a real second to full-clone at
/// time_scale 0.001 (so `lock: clone` is observable).
const SIM_CLUSTER: &str = r#"
name: conformance
nodes: [pve1]
storages:
  - {id: local-lvm, type: lvmthin, content: [images], total_gb: 2000, bandwidth_mbs: 400}
  - {id: slow-lvm, type: lvmthin, content: [images], total_gb: 2000, bandwidth_mbs: 2}
templates:
  - {vmid: 9000, name: hyops-conf-template, node: pve1, storage: local-lvm, disk_gb: 8}
  - {vmid: 9001, name: hyops-conf-slow-template, node: pve1, storage: slow-lvm, disk_gb: 1}
next_id_lower: 100
"#;

async fn build_sim(prefix: String) -> Result<Target, Unavailable> {
    let cluster = ClusterDescription::from_yaml(SIM_CLUSTER)
        .map_err(|e| Unavailable::Fail(format!("simulator cluster description: {e}")))?;
    let cfg = SimConfig {
        cluster,
        time_scale: 0.001,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg)
        .await
        .map_err(|e| Unavailable::Fail(format!("cannot start the simulator: {e}")))?;
    let conn = Conn {
        url: sim.url().to_string(),
        token_id: sim.token_id.clone(),
        token_secret: sim.token_secret.clone(),
        tls: TlsMode::Fingerprint(sim.ca_fingerprint_colon.clone()),
    };
    Ok(Target {
        kind: Kind::Sim,
        client: conn.client(),
        node: "pve1".into(),
        template_vmid: 9000,
        caps: sim_caps(),
        bridge: "vmbr0".into(),
        slow_clone: (9001, Some(true)),
        sim: Some(sim),
        conn,
        prefix,
        next_candidate: Mutex::new(1000),
        created: Mutex::new(BTreeSet::new()),
        wait: fast_wait(),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn build_real(prefix: String, block: u32) -> Result<Target, Unavailable> {
    const VARS: [&str; 4] = [
        "HYOPS_TEST_PVE_URL",
        "HYOPS_TEST_PVE_TOKEN",
        "HYOPS_TEST_PVE_NODE",
        "HYOPS_TEST_PVE_TEMPLATE",
    ];
    let missing: Vec<&str> = VARS.iter().copied().filter(|v| env(v).is_none()).collect();
    if !missing.is_empty() {
        return Err(Unavailable::Fail(format!(
            "the real-PVE conformance tests were asked for (--ignored) but {} is not set (see docs/conformance.md)",
            missing.join(", ")
        )));
    }
    let get = |v: &str| env(v).unwrap_or_default();
    let token = get("HYOPS_TEST_PVE_TOKEN");
    let Some((token_id, token_secret)) = token.trim().rsplit_once('=') else {
        return Err(Unavailable::Fail(
            "HYOPS_TEST_PVE_TOKEN must look like user@realm!tokenid=secret (no '=' found)".into(),
        ));
    };
    if !(token_id.contains('@') && token_id.contains('!')) || token_secret.is_empty() {
        return Err(Unavailable::Fail(format!(
            "HYOPS_TEST_PVE_TOKEN must look like user@realm!tokenid=secret; the id part is {token_id:?}"
        )));
    }
    let template = get("HYOPS_TEST_PVE_TEMPLATE");
    let template_vmid: u32 = template.trim().parse().map_err(|_| {
        Unavailable::Fail(format!(
            "HYOPS_TEST_PVE_TEMPLATE must be a VMID, not {template:?}"
        ))
    })?;
    let tls = match (
        env("HYOPS_TEST_PVE_FINGERPRINT"),
        env("HYOPS_TEST_PVE_INSECURE").as_deref(),
    ) {
        (Some(fp), _) => TlsMode::Fingerprint(fp),
        (None, Some("1")) => TlsMode::Insecure,
        _ => TlsMode::SystemRoots,
    };
    let base: u32 = match env("HYOPS_TEST_PVE_VMID_BASE") {
        Some(v) => v.trim().parse().map_err(|_| {
            Unavailable::Fail(format!(
                "HYOPS_TEST_PVE_VMID_BASE must be a VMID, not {v:?}"
            ))
        })?,
        None => 990_000,
    };
    let conn = Conn {
        url: get("HYOPS_TEST_PVE_URL"),
        token_id: token_id.to_string(),
        token_secret: Secret::new(token_secret),
        tls,
    };
    let client = PveClient::new({
        let mut c = PveConfig::new(
            conn.url.clone(),
            PveAuth::Token {
                id: conn.token_id.clone(),
                secret: conn.token_secret.clone(),
            },
        );
        c.tls = conn.tls.clone();
        c
    })
    .map_err(|e| Unavailable::Fail(format!("real PVE client: {e}")))?;
    Ok(Target {
        kind: Kind::RealPve,
        client,
        node: get("HYOPS_TEST_PVE_NODE").trim().to_string(),
        template_vmid,
        caps: real_caps(env("HYOPS_TEST_PVE_AGENT").as_deref() == Some("1")),
        bridge: env("HYOPS_TEST_PVE_BRIDGE").unwrap_or_else(|| "vmbr0".into()),
        // A full clone of a real template copies its whole disk: seconds, enough to see the lock.
        slow_clone: (template_vmid, Some(true)),
        sim: None,
        conn,
        prefix,
        next_candidate: Mutex::new(base + block * BLOCK),
        created: Mutex::new(BTreeSet::new()),
        wait: WaitOptions {
            timeout: Duration::from_secs(900),
            initial_poll: Duration::from_millis(200),
            max_poll: Duration::from_secs(2),
            not_visible_grace: Duration::from_secs(5),
            log_tail: 20,
        },
    })
}

// ------------------------------------------------------------------------------- fakepve

/// What `tests/fakepve/launch.py` prints.
#[derive(Debug, serde::Deserialize)]
struct FakePveInfo {
    url: String,
    token_id: String,
    token_secret: String,
    node: String,
    template_vmid: u32,
    fingerprint: String,
    slow_template_vmid: u32,
    fakepve_version: String,
}

/// The fakepve release `fakepve_caps()` was verified against.
const FAKEPVE_VERIFIED: &str = "0.5.0";

enum FakeUnavailable {
    Skip(String),
    Fail(String),
}

/// The launcher process: kept for the life of the test binary. Its stdin closes when this
/// process exits, which stops the launcher.
#[allow(dead_code)] // held only so the pipes stay open
struct Launched(Child, ChildStdin, BufReader<ChildStdout>);

static LAUNCHED: Mutex<Option<Launched>> = Mutex::new(None);

/// One fakepve per test binary, started on first use.
fn fakepve_info() -> &'static Result<FakePveInfo, FakeUnavailable> {
    static INFO: OnceLock<Result<FakePveInfo, FakeUnavailable>> = OnceLock::new();
    INFO.get_or_init(|| {
        // "Not installed" is a skip (tests/optional decides whether that fails); a launch
        // that goes wrong once it is installed is always a failure.
        let unavailable = FakeUnavailable::Skip;
        let probe = Command::new("python3")
            .args(["-c", "import fakepve, aiohttp, cryptography"])
            .stdin(Stdio::null())
            .output();
        match probe {
            Err(e) => return Err(unavailable(format!("cannot run python3: {e}"))),
            Ok(o) if !o.status.success() => {
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.lines().last().unwrap_or("import failed").to_string();
                return Err(unavailable(format!(
                    "python3 cannot import fakepve ({last}); install it with: python3 -m pip install 'fakepve[crypto]==0.5.0'"
                )));
            }
            Ok(_) => {}
        }
        launch_fakepve().map_err(FakeUnavailable::Fail)
    })
}

fn launch_fakepve() -> Result<FakePveInfo, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakepve/launch.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--time-scale", "0.02"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {script}: {e}"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("launcher pipes missing".into());
    };
    // The launcher's log is kept in memory (its last lines, for error messages): no temp file
    // is left behind by a test run.
    let log: std::sync::Arc<Mutex<std::collections::VecDeque<String>>> = Default::default();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = lock(&log);
                if l.len() == 200 {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let _ = tx.send((read.map(|_| line), reader));
    });
    let log_tail = || lock(&log).iter().cloned().collect::<Vec<_>>().join("\n");
    let (line, reader) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok((Ok(line), reader)) if !line.trim().is_empty() => (line, reader),
        Ok(_) => {
            let _ = child.wait();
            return Err(format!(
                "launcher ended without its JSON line: {}",
                log_tail()
            ));
        }
        Err(_) => {
            let _ = child.kill();
            return Err(format!("launcher printed nothing in 60 s: {}", log_tail()));
        }
    };
    let info: FakePveInfo = serde_json::from_str(line.trim())
        .map_err(|e| format!("launcher line {line:?} is not the expected JSON: {e}"))?;
    *lock(&LAUNCHED) = Some(Launched(child, stdin, reader));
    if info.fakepve_version != FAKEPVE_VERIFIED {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE fakepve {}: its known gaps were verified on {FAKEPVE_VERIFIED}; a `gap closed?` failure means fakepve_caps() needs updating",
            info.fakepve_version
        );
    }
    Ok(info)
}
