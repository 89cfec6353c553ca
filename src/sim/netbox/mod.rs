//! The embedded NetBox: an in-process, loopback-only emulation of the NetBox 4.7 REST
//! endpoints the engine uses (sites, IPAM roles, VLANs, prefixes, ip-ranges with
//! `available-ips`, IP addresses, tags, custom fields, cluster types, clusters, device
//! roles, virtual machines and their interfaces), served over the simulator's HTTPS machinery
//! (self-signed certificate, pinned by the client). It is held honest by the shared NetBox
//! test suite, which runs the same allocator and sync tests against it and against a real
//! NetBox 4.7.3 (`tests/netbox_suite.rs`); behaviour differences found there are fixed here.
//! It must not use the engine's NetBox client or any engine assumption.

mod http;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use tokio::sync::watch;

use super::tls::SimCert;
use super::SimError;
use crate::secret::Secret;
pub use store::{NbError, NbStore};

/// What a fault rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbFaultAction {
    /// Do the work, then drop the connection before answering (a lost reply).
    ResetAfterCommit,
    /// Answer with this status (and `Retry-After` seconds) without doing anything.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Hold the request at the door until the test calls [`NbGate::release`], then serve it:
    /// lets a test act "between" a client's read and its write (another writer's change),
    /// by event, never by sleeping.
    Hold(NbGate),
}

/// The door of [`NbFaultAction::Hold`]: the server signals when a request arrived and waits
/// for the test to let it through.
#[derive(Clone, Default)]
pub struct NbGate {
    inner: Arc<GateInner>,
}

#[derive(Default)]
struct GateInner {
    arrived: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl NbGate {
    pub fn new() -> NbGate {
        NbGate::default()
    }
    /// Wait until a request reached the gate (returns at once if one already did).
    pub async fn arrived(&self) {
        self.inner.arrived.notified().await;
    }
    /// Let the held request (or the next one to arrive) through.
    pub fn release(&self) {
        self.inner.release.notify_one();
    }
    pub(crate) async fn hold(&self) {
        self.inner.arrived.notify_one();
        self.inner.release.notified().await;
    }
}

impl std::fmt::Debug for NbGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NbGate")
    }
}

/// Gates compare by identity.
impl PartialEq for NbGate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
impl Eq for NbGate {}

/// Fire `action` for the next `times` requests whose method matches (any when `None`) and
/// whose path contains `path_contains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbFaultRule {
    pub method: Option<String>,
    pub path_contains: String,
    pub times: u32,
    pub action: NbFaultAction,
}

/// Request counters: all requests, writes, and per `METHOD /template`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NbCounters {
    pub total: u64,
    pub writes: u64,
    pub by_endpoint: BTreeMap<String, u64>,
}

/// Embedded NetBox settings.
#[derive(Debug, Clone)]
pub struct NetboxSimConfig {
    /// HTTPS with a generated self-signed certificate (false: plain HTTP).
    pub tls: bool,
    /// Bind address; loopback only (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The v2 token clients send (`nbt_<key>.<secret>`).
    pub token_v2: Secret,
    /// An optional v1 (40 hex) token.
    pub token_v1: Option<Secret>,
    /// Extra latency per request.
    pub latency_ms: Option<u64>,
}

impl Default for NetboxSimConfig {
    fn default() -> Self {
        NetboxSimConfig {
            tls: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_v2: Secret::new("nbt_hyopsSimKey01.5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9"),
            token_v1: Some(Secret::new("0123456789abcdef0123456789abcdef01234567")),
            latency_ms: None,
        }
    }
}

/// Shared server state.
pub(crate) struct NbShared {
    store: Mutex<NbStore>,
    counters: Mutex<NbCounters>,
    faults: Mutex<Vec<NbFaultRule>>,
    base: String,
    token_v2: Secret,
    token_v1: Option<Secret>,
    latency_ms: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl NbShared {
    pub(crate) fn store(&self) -> MutexGuard<'_, NbStore> {
        lock(&self.store)
    }
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }
    pub(crate) fn latency_ms(&self) -> Option<u64> {
        self.latency_ms
    }
    pub(crate) fn count(&self, method: &str, template: &str) {
        let mut c = lock(&self.counters);
        c.total += 1;
        if method != "GET" {
            c.writes += 1;
        }
        *c.by_endpoint
            .entry(format!("{method} {template}"))
            .or_insert(0) += 1;
    }
    pub(crate) fn fire(&self, method: &str, path: &str) -> Option<NbFaultAction> {
        let mut rules = lock(&self.faults);
        let hit = rules.iter_mut().find(|r| {
            r.times > 0
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path.contains(&r.path_contains)
        })?;
        hit.times -= 1;
        Some(hit.action.clone())
    }
}

/// A running embedded NetBox.
pub struct NetboxSimHandle {
    shared: Arc<NbShared>,
    pub addr: SocketAddr,
    /// The v2 token to send.
    pub token: Secret,
    /// SHA-256 of the certificate, lowercase hex (empty without TLS).
    pub ca_fingerprint_sha256: String,
    pub ca_pem: String,
    shutdown: watch::Sender<bool>,
    join: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Starts embedded NetBoxes.
pub struct NetboxSim;

impl NetboxSim {
    /// Start empty.
    pub async fn start(cfg: NetboxSimConfig) -> Result<NetboxSimHandle, SimError> {
        Self::start_with(cfg, NbStore::default()).await
    }

    /// Start with `store` (a saved state, or a seed).
    pub async fn start_with(
        cfg: NetboxSimConfig,
        store: NbStore,
    ) -> Result<NetboxSimHandle, SimError> {
        if !cfg.listen.ip().is_loopback() {
            return Err(SimError::Bind {
                addr: cfg.listen.to_string(),
                msg: "the embedded NetBox listens on loopback only".into(),
            });
        }
        let cert = SimCert::generate()?;
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
        let scheme = if cfg.tls { "https" } else { "http" };
        let shared = Arc::new(NbShared {
            store: Mutex::new(store),
            counters: Mutex::new(NbCounters::default()),
            faults: Mutex::new(Vec::new()),
            base: format!("{scheme}://{addr}"),
            token_v2: cfg.token_v2.clone(),
            token_v1: cfg.token_v1.clone(),
            latency_ms: cfg.latency_ms,
        });
        let (tx, rx) = watch::channel(false);
        let join = tokio::spawn(http::run(Arc::clone(&shared), listener, acceptor, rx));
        Ok(NetboxSimHandle {
            shared,
            addr,
            token: cfg.token_v2,
            ca_fingerprint_sha256: if cfg.tls {
                cert.fingerprint_hex()
            } else {
                String::new()
            },
            ca_pem: cert.cert_pem,
            shutdown: tx,
            join: Mutex::new(Some(join)),
        })
    }
}

impl NetboxSimHandle {
    /// `https://127.0.0.1:<port>` (the base URL, without `/api`).
    pub fn url(&self) -> &str {
        &self.shared.base
    }
    /// Request counters so far.
    pub fn counters(&self) -> NbCounters {
        lock(&self.shared.counters).clone()
    }
    /// The live store (never hold the guard across an `.await`).
    pub fn store(&self) -> MutexGuard<'_, NbStore> {
        self.shared.store()
    }
    /// A copy of the store (for saving).
    pub fn snapshot(&self) -> NbStore {
        self.shared.store().clone()
    }
    /// Add a fault rule.
    pub fn add_fault(&self, rule: NbFaultRule) {
        lock(&self.shared.faults).push(rule);
    }
    /// Remove all fault rules.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }
    /// Stop serving.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let join = lock(&self.join).take();
        if let Some(j) = join {
            let _ = j.await;
        }
    }
}

impl Drop for NetboxSimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl NbStore {
    /// Write the store to `path` atomically (temp file, then rename).
    pub fn save_to(&self, path: &Path) -> Result<(), SimError> {
        let io = |e: std::io::Error| SimError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Read a store written by [`NbStore::save_to`].
    pub fn load_from(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            msg: format!("invalid embedded NetBox state: {e}"),
        })
    }

    /// What a `core/onprem/network-sdn` apply with `push_to_netbox` leaves in NetBox
    /// (upstream `_import_ipam_prefixes`): the site, the `hyops-static` role, per subnet the
    /// VLAN, the prefix and the static range — created the way upstream creates them (the
    /// range without a mask, so NetBox stores `/32`; the prefix's `site` is ignored by 4.7).
    /// `subnets` holds `(zone, vnet, vlan_id, cidr, gateway, dhcp_start, dhcp_end)`.
    pub fn seeded_like_network_sdn(
        subnets: &[(&str, &str, u16, &str, &str, &str, &str)],
    ) -> Result<Self, NbError> {
        let mut s = NbStore::default();
        let mut sites: BTreeMap<String, u64> = BTreeMap::new();
        let role = s.create(
            "ipam/roles",
            &json!({"name": "hyops-static", "slug": "hyops-static"}),
        )?;
        for (zone, vnet, vid, cidr, gw, dhcp_start, dhcp_end) in subnets {
            let site = match sites.get(*zone) {
                Some(id) => *id,
                None => {
                    let id = s.create("dcim/sites", &json!({"name": zone, "slug": zone}))?;
                    sites.insert(zone.to_string(), id);
                    id
                }
            };
            let vlan = s.create(
                "ipam/vlans",
                &json!({"name": vnet, "site": site, "vid": vid, "role": role}),
            )?;
            s.create(
                "ipam/prefixes",
                &json!({"prefix": cidr, "site": site, "status": "active", "vlan": vlan, "role": role,
                        "description": format!("{zone} {vnet}")}),
            )?;
            let start = store::parse_inet(gw)
                .map(|(h, _)| std::net::Ipv4Addr::from(u32::from(h) + 1))
                .ok_or_else(|| NbError::detail(400, format!("bad gateway {gw}")))?;
            let end = store::parse_inet(dhcp_start)
                .map(|(h, _)| std::net::Ipv4Addr::from(u32::from(h) - 1))
                .ok_or_else(|| NbError::detail(400, format!("bad dhcp start {dhcp_start}")))?;
            s.create(
                "ipam/ip-ranges",
                &json!({"start_address": start.to_string(), "end_address": end.to_string(),
                        "role": role, "status": "active",
                        "description": format!("hyops-static static pool ({start}-{end}, excludes DHCP {dhcp_start}-{dhcp_end})")}),
            )?;
        }
        Ok(s)
    }
}
