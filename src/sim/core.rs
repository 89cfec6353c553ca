//! The simulator's shared runtime: cluster state behind a mutex, tasks, locks, clock, faults,
//! the seeded RNG, counters and authentication. Handlers borrow it; it knows nothing about
//! HTTP framing or individual endpoints.

use super::check::Errors;
use super::faults::{FaultAction, FaultState};
use super::latency::{LatencyModel, SimClock};
use super::locks::LockTable;
use super::model::{SimState, Vm};
use super::spec::Spec;
use super::tasks::TaskRegistry;
use crate::secret::Secret;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;

/// Lock a std mutex, recovering from poisoning (a panicked test thread must not wedge the sim).
pub fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// An API failure as PVE reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<Errors>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
        }
    }
    pub fn e500(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn params(errors: Errors) -> Self {
        Self {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }
    pub fn param(name: &str, msg: impl Into<String>) -> Self {
        Self::params([(name.to_string(), msg.into())].into_iter().collect())
    }
}

/// A successful answer: `data`, plus `total` for paged lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub data: Value,
    pub total: Option<u64>,
}

impl From<Value> for Reply {
    fn from(data: Value) -> Self {
        Self { data, total: None }
    }
}

/// One verified API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub template: String,
    pub params: BTreeMap<String, String>,
    pub user: String,
    /// Task-level faults that fired for this call.
    pub faults: Vec<FaultAction>,
}

impl Call {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
    pub fn node(&self) -> &str {
        self.get("node").unwrap_or_default()
    }
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .and_then(super::check::parse_bool)
            .unwrap_or(false)
    }
    /// The verified `vmid` path parameter.
    pub fn vmid(&self) -> Result<u32, ApiError> {
        let v = self.get("vmid").unwrap_or_default();
        v.parse().map_err(|_| {
            ApiError::param("vmid", format!("type check ('integer') failed - got '{v}'"))
        })
    }
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// (method, path template) → calls; unknown paths count under template `?`.
    pub by_endpoint: BTreeMap<(String, String), u64>,
    pub total: u64,
    /// Non-GET calls.
    pub writes: u64,
    pub tasks_started: u64,
}

impl Counters {
    pub fn get(&self, method: &str, template: &str) -> u64 {
        self.by_endpoint
            .get(&(method.to_string(), template.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// Credentials the simulator accepts.
#[derive(Debug)]
pub struct Auth {
    pub token_id: String,
    pub token_secret: Secret,
    pub users: Vec<(String, Secret)>,
    /// ticket → (user, csrf token)
    pub tickets: Mutex<HashMap<String, (String, String)>>,
}

/// The shared runtime.
pub struct Sim {
    pub spec: &'static Spec,
    pub state: Mutex<SimState>,
    pub tasks: TaskRegistry,
    pub locks: Arc<LockTable>,
    pub clock: SimClock,
    pub latency: LatencyModel,
    pub faults: Mutex<FaultState>,
    pub rng: Mutex<StdRng>,
    pub counters: Mutex<Counters>,
    pub auth: Auth,
    pub slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Sim {
    pub fn state(&self) -> MutexGuard<'_, SimState> {
        guard(&self.state)
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        guard(&self.rng).fill(&mut b[..]);
        b
    }

    /// A new MAC in Proxmox's OUI (`BC:24:11:xx:xx:xx`, `random_ether_addr` with the
    /// datacenter `mac_prefix`), from the seeded RNG, never one a VM in `state` already uses:
    /// a simulator restarted with the same seed over a saved state must not hand out the MACs
    /// of the VMs it saved.
    /// `used` starts as [`SimState::macs_in_use`]; the new MAC is added to it.
    pub fn new_mac(&self, used: &mut std::collections::BTreeSet<String>) -> String {
        loop {
            let b: [u8; 3] = self.random_bytes();
            let mac = format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2]);
            if used.insert(mac.clone()) {
                return mac;
            }
        }
    }

    /// Fail unless `node` is a cluster node (pveproxy cannot proxy to an unknown host).
    pub fn check_node(&self, node: &str) -> Result<(), ApiError> {
        if self.state().cluster.nodes.iter().any(|n| n == node) {
            Ok(())
        } else {
            Err(ApiError::e500(format!(
                "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
            )))
        }
    }

    fn slot(&self, node: &str) -> Arc<Semaphore> {
        let n = self.latency.node_task_slots.max(1);
        Arc::clone(
            guard(&self.slots)
                .entry(node.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(n))),
        )
    }

    /// Start a worker task on `node` and return its UPID. Task-level faults of `call` apply:
    /// slow tasks wait longer, lock timeouts and task failures end the task with their error
    /// before the work runs.
    pub fn spawn_task<F, Fut>(
        self: &Arc<Self>,
        call: &Call,
        kind: &str,
        id: &str,
        work: F,
    ) -> String
    where
        F: FnOnce(Arc<Sim>, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let node = call.node().to_string();
        let upid = self.tasks.create(&node, kind, id, &call.user);
        guard(&self.counters).tasks_started += 1;
        let sim = Arc::clone(self);
        let faults = call.faults.clone();
        let vmid = call.get("vmid").unwrap_or_default().to_string();
        let task_upid = upid.clone();
        tokio::spawn(async move {
            let slot = sim.slot(&node);
            let _permit = slot.acquire_owned().await;
            let mut injected = None;
            for f in &faults {
                match f {
                    FaultAction::SlowTask { extra_ms } => sim.clock.sleep(*extra_ms).await,
                    FaultAction::LockTimeout => {
                        injected = Some(format!(
                            "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
                        ))
                    }
                    FaultAction::TaskFail { message } => injected = Some(message.clone()),
                    _ => {}
                }
            }
            let result = match injected {
                Some(e) => Err(e),
                None => work(Arc::clone(&sim), task_upid.clone()).await,
            };
            sim.tasks.finish(&task_upid, result);
        });
        upid
    }
}

/// `load_config` on the wrong node or a missing VM.
pub fn no_config_file(node: &str, vmid: u32) -> ApiError {
    ApiError::e500(format!(
        "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
    ))
}

/// `assert_config_exists_on_node` / `check_running` on the wrong node or a missing VM.
pub fn not_on_node(node: &str, vmid: u32) -> ApiError {
    ApiError::e500(format!(
        "unable to find configuration file for VM {vmid} on node '{node}'"
    ))
}

/// The VM `vmid` if its config lives on `node`; else the `load_config` error.
pub fn load_vm<'a>(state: &'a SimState, node: &str, vmid: u32) -> Result<&'a Vm, ApiError> {
    state
        .vms
        .get(&vmid)
        .filter(|v| v.node == node)
        .ok_or_else(|| no_config_file(node, vmid))
}

/// Mutable variant of [`load_vm`].
pub fn load_vm_mut<'a>(
    state: &'a mut SimState,
    node: &str,
    vmid: u32,
) -> Result<&'a mut Vm, ApiError> {
    state
        .vms
        .get_mut(&vmid)
        .filter(|v| v.node == node)
        .ok_or_else(|| no_config_file(node, vmid))
}

/// `check_lock`: `VM is locked (<lock>)`.
pub fn check_lock(vm: &Vm) -> Result<(), String> {
    match vm.lock() {
        Some(l) => Err(format!("VM is locked ({l})")),
        None => Ok(()),
    }
}
