//! The Proxmox VE 9 simulator: the only code that pretends to be Proxmox. It serves the API
//! subset the engine uses, checks every request against the project's spec
//! (`proxmox-api-spec/endpoints.json`, built from Proxmox's schema) and models qemu-server's
//! behaviour (tasks, locks, pending config, clone races, cloud-init) as described in the PVE API
//! notes. It must not use the engine's client (`crate::pve`) or any engine assumption.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyops_pve::sim::SimError> {
//! use hyops_pve::sim::{SimConfig, Simulator};
//! let handle = Simulator::start(SimConfig { time_scale: 0.001, ..SimConfig::default() }).await?;
//! println!("{} {}", handle.url(), handle.token_header());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
pub mod bandwidth;
pub mod bound;
pub mod check;
mod clone;
pub mod cloudinit;
mod core;
pub mod faults;
pub mod latency;
pub mod locks;
mod migrate;
pub mod model;
pub mod netbox;
mod nodes;
pub mod persist;
mod server;
pub mod snippets;
pub mod spec;
pub mod ssh;
pub mod tasks;
pub mod tls;
mod vm;

pub use self::core::Counters;
pub use faults::{FaultAction, FaultFileError, FaultPlan, FaultRule, FaultWindow};
pub use latency::LatencyModel;
pub use model::{ClusterDescription, SimState, StorageUsage, Vm};
pub use persist::PersistError;

use self::core::{guard, Auth, Sim};
use crate::secret::Secret;
use faults::FaultState;
use latency::SimClock;
use locks::LockTable;
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tasks::TaskRegistry;
use tokio::sync::watch;

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub cluster: ClusterDescription,
    /// Seeds MACs, tickets and fault rates.
    pub seed: u64,
    /// Real seconds per simulated second (0.001 = a thousand times faster).
    pub time_scale: f64,
    pub latency: LatencyModel,
    pub faults: FaultPlan,
    /// API token id (`user@realm!name`) and secret.
    pub token: (String, Secret),
    /// Users that may log in with `POST /access/ticket`.
    pub users: Vec<(String, Secret)>,
    /// HTTPS with a generated self-signed certificate (false: plain HTTP, for tests).
    pub tls: bool,
    /// Address to bind; default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The in-process SSH side (node and guest sshd).
    pub ssh: ssh::SimSshConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cluster: ClusterDescription::default_cluster(),
            seed: 1,
            time_scale: 1.0,
            latency: LatencyModel::default(),
            faults: FaultPlan::default(),
            token: (
                "root@pam!hyops".to_string(),
                Secret::new("5f1c2b9e-7d43-4a8e-9c61-0b2d3e4f5a6b"),
            ),
            users: vec![("root@pam".to_string(), Secret::new("sim-root-password"))],
            tls: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ssh: ssh::SimSshConfig::default(),
        }
    }
}

/// Simulator failures.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] model::ClusterError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("simulator: cannot bind {addr}: {msg}")]
    Bind { addr: String, msg: String },
    #[error("simulator: {path}: {msg}")]
    Io { path: String, msg: String },
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Start with a fresh state built from `cfg.cluster`.
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        cfg.cluster.validate()?;
        let state = SimState::from_cluster(cfg.cluster.clone());
        Self::start_with_state(cfg, state).await
    }

    /// Start with a saved state (its cluster description replaces `cfg.cluster`).
    pub async fn start_with_state(
        cfg: SimConfig,
        mut state: SimState,
    ) -> Result<SimHandle, SimError> {
        let spec = spec::spec()?;
        state.cluster.validate()?;
        // A saved state's running VMs were running before the restart: they count as
        // started at 0 and the clock resumes once their guests have booted (agent and sshd
        // up, the slowest SSH jitter share included), as a real cluster's long-running VMs.
        let mut resumed_at = 0;
        for vm in state.vms.values_mut() {
            vm.started_at_ms = vm.running.then_some(0);
            if vm.running {
                resumed_at = cfg.latency.boot_delay_ms.max(
                    cfg.latency
                        .ssh_boot_ms
                        .saturating_add(cfg.latency.ssh_boot_jitter_ms),
                ) + 1;
            }
        }
        let cert = tls::SimCert::generate()?;
        let acceptor = if cfg.tls {
            Some(tokio_rustls::TlsAcceptor::from(cert.server_config()?))
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| SimError::Bind {
                addr: cfg.listen.to_string(),
                msg: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| SimError::Bind {
            addr: cfg.listen.to_string(),
            msg: e.to_string(),
        })?;
        let sim = Arc::new(Sim {
            spec,
            state: Mutex::new(state),
            tasks: TaskRegistry::default(),
            locks: Arc::new(LockTable::default()),
            bandwidth: Arc::new(bandwidth::BandwidthPool::default()),
            clock: SimClock::resumed(cfg.time_scale, resumed_at),
            latency: cfg.latency.clone(),
            faults: Mutex::new(FaultState::new(cfg.faults.clone(), cfg.seed)),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(cfg.seed)),
            counters: Mutex::new(Counters::default()),
            auth: Auth {
                token_id: cfg.token.0.clone(),
                token_secret: cfg.token.1.clone(),
                users: cfg.users.clone(),
                tickets: Mutex::new(HashMap::new()),
            },
            slots: Mutex::new(HashMap::new()),
        });
        let ssh = Arc::new(ssh::SimSsh::new(
            Arc::clone(&sim),
            cfg.ssh.clone(),
            cfg.seed,
        ));
        let (tx, rx) = watch::channel(false);
        let join = tokio::spawn(server::run(Arc::clone(&sim), listener, acceptor, rx));
        let scheme = if cfg.tls { "https" } else { "http" };
        Ok(SimHandle {
            sim,
            ssh,
            base: format!("{scheme}://{addr}/api2/json"),
            addr,
            token_id: cfg.token.0,
            token_secret: cfg.token.1,
            ca_pem: cert.cert_pem.clone(),
            ca_fingerprint_sha256: cert.fingerprint_hex(),
            ca_fingerprint_colon: cert.fingerprint_colon(),
            shutdown: tx,
            join: Mutex::new(Some(join)),
        })
    }
}

/// A running simulator.
pub struct SimHandle {
    sim: Arc<Sim>,
    ssh: Arc<ssh::SimSsh>,
    base: String,
    pub addr: SocketAddr,
    pub token_id: String,
    pub token_secret: Secret,
    /// The self-signed certificate (its own CA) in PEM.
    pub ca_pem: String,
    /// SHA-256 of the certificate, lowercase hex.
    pub ca_fingerprint_sha256: String,
    /// The same, `AB:CD:…` form.
    pub ca_fingerprint_colon: String,
    shutdown: watch::Sender<bool>,
    join: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SimHandle {
    /// Base URL ending in `/api2/json`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Real seconds per simulated second.
    pub fn time_scale(&self) -> f64 {
        self.sim.clock.time_scale()
    }

    /// The `Authorization` header value: `PVEAPIToken=<id>=<secret>`.
    pub fn token_header(&self) -> String {
        format!(
            "PVEAPIToken={}={}",
            self.token_id,
            self.token_secret.expose()
        )
    }

    /// The simulated SSH network: the engine's dialer for `--sim`, SSH faults and counters.
    pub fn ssh(&self) -> Arc<ssh::SimSsh> {
        Arc::clone(&self.ssh)
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        guard(&self.sim.counters).clone()
    }

    /// Access to the live state (tests may also edit it, e.g. to plant a stale `lock`). The
    /// simulator is blocked while the guard lives: never hold it across an `.await`.
    pub fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.sim.state()
    }

    /// A copy of the whole state (for `SimState::save_to`).
    pub fn snapshot_state(&self) -> SimState {
        self.sim.state().clone()
    }

    /// Storage instances with usage.
    pub fn storages(&self) -> Vec<StorageUsage> {
        self.sim.state().storage_usage()
    }

    /// Runtime control of the fault rules.
    pub fn faults(&self) -> FaultControl<'_> {
        FaultControl { sim: &self.sim }
    }

    /// Add a fault rule at runtime.
    pub fn add_fault(&self, rule: FaultRule) {
        guard(&self.sim.faults).add(rule);
    }

    /// Remove all fault rules.
    pub fn clear_faults(&self) {
        guard(&self.sim.faults).clear();
    }

    /// Full-clone copies moving data right now (the cost model's flows).
    pub fn copies_in_flight(&self) -> usize {
        self.sim.bandwidth.active()
    }

    /// The simulated clock: milliseconds since the simulator started (real time divided by
    /// `time_scale`), plus the boot time of a saved state's running VMs when it was
    /// resumed from one (see [`Simulator::start_with_state`]). Tests bracket a request with it to know which side of a simulated
    /// deadline the simulator was on, whatever the machine's load.
    pub fn now_ms(&self) -> u64 {
        self.sim.clock.now_ms()
    }

    /// The latency model in force (simulated milliseconds).
    pub fn latency(&self) -> &LatencyModel {
        &self.sim.latency
    }

    /// Worker tasks still running.
    pub fn running_tasks(&self) -> usize {
        self.sim.tasks.running()
    }

    /// Wait (real time) until no task runs; false if `timeout` passed first.
    pub async fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.sim.tasks.running() > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        true
    }

    /// Stop accepting connections and close open ones.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let join = guard(&self.join).take();
        if let Some(j) = join {
            let _ = j.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // stop serving when the handle goes away, even without an explicit shutdown()
        let _ = self.shutdown.send(true);
    }
}

/// Adds or clears fault rules on a running simulator.
pub struct FaultControl<'a> {
    sim: &'a Sim,
}

impl FaultControl<'_> {
    pub fn add(&self, rule: FaultRule) {
        guard(&self.sim.faults).add(rule);
    }
    pub fn clear(&self) {
        guard(&self.sim.faults).clear();
    }
}

/// Options for `hyops-pve sim serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub cluster_file: Option<PathBuf>,
    pub time_scale: f64,
    pub seed: u64,
    /// Load the state from here if it exists, and save it here on Ctrl-C.
    pub state_file: Option<PathBuf>,
    /// Where to write the CA PEM; default `ca.pem` in a new private (0700) directory
    /// `<temp dir>/hyops-pve-sim-<pid>-<random>/`, which the caller removes when done.
    pub ca_pem_path: Option<PathBuf>,
    pub tls: bool,
    /// Injected faults (`--faults`).
    pub faults: FaultPlan,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8006)),
            cluster_file: None,
            time_scale: 1.0,
            seed: 1,
            state_file: None,
            ca_pem_path: None,
            tls: true,
            faults: FaultPlan::default(),
        }
    }
}

/// The human summary `sim serve` prints.
pub fn describe(handle: &SimHandle, ca_path: &std::path::Path) -> String {
    let state = handle.state();
    let mut s = format!(
        "Proxmox VE simulator listening on {}\nAuthorization: {}\nCA fingerprint (SHA-256): {}\nCA PEM written to {}\nnodes: {}\nstorages:\n",
        handle.url(),
        handle.token_header(),
        handle.ca_fingerprint_colon,
        ca_path.display(),
        state.cluster.nodes.join(", ")
    );
    for st in &state.cluster.storages {
        s.push_str(&format!(
            "  {} ({}, {}, content {}, {} MB/s, {} MB/s per copy stream)\n",
            st.id,
            st.kind,
            if st.shared { "shared" } else { "per node" },
            st.content.join(","),
            st.bandwidth_mbs,
            st.stream()
        ));
    }
    s.push_str("templates:\n");
    for v in state.vms.values().filter(|v| v.is_template()) {
        s.push_str(&format!("  {} {} on {}\n", v.vmid, v.name(), v.node));
    }
    s
}

/// The first half of `sim serve`: load the cluster (and the saved state if `state_file`
/// exists), start the simulator and write the CA PEM. Returns the handle and the PEM path.
pub async fn start_serving(opts: &ServeOptions) -> Result<(SimHandle, PathBuf), SimError> {
    let cluster = match &opts.cluster_file {
        Some(p) => ClusterDescription::from_file(p)?,
        None => ClusterDescription::default_cluster(),
    };
    let cfg = SimConfig {
        cluster,
        seed: opts.seed,
        time_scale: opts.time_scale,
        tls: opts.tls,
        listen: opts.listen,
        faults: opts.faults.clone(),
        ..SimConfig::default()
    };
    let handle = match &opts.state_file {
        Some(p) if p.exists() => Simulator::start_with_state(cfg, SimState::load_from(p)?).await?,
        _ => Simulator::start(cfg).await?,
    };
    let ca_path = match &opts.ca_pem_path {
        Some(p) => p.clone(),
        None => private_temp_dir()?.join("ca.pem"),
    };
    std::fs::write(&ca_path, &handle.ca_pem).map_err(|e| SimError::Io {
        path: ca_path.display().to_string(),
        msg: e.to_string(),
    })?;
    Ok((handle, ca_path))
}

/// The second half of `sim serve`: stop the simulator and save its state to `state_file`.
pub async fn finish_serving(handle: &SimHandle, opts: &ServeOptions) -> Result<(), SimError> {
    handle.shutdown().await;
    if let Some(p) = &opts.state_file {
        handle.snapshot_state().save_to(p)?;
    }
    Ok(())
}

/// A new private (0700) directory `<temp dir>/hyops-pve-sim-<pid>-<random>/`: never a fixed,
/// shared or pre-existing path (no clobbering between runs, no symlink games in `/tmp`).
pub fn private_temp_dir() -> Result<PathBuf, SimError> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let mut last = String::new();
    for _ in 0..8 {
        let dir = base.join(format!(
            "hyops-pve-sim-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = e.to_string(),
        }
    }
    Err(SimError::Io {
        path: base.display().to_string(),
        msg: format!("cannot create a private directory for the CA PEM: {last}"),
    })
}
