//! Concurrency limits for the executor: a global cap, a cap per node and a cap per storage.
//! Each VM pipeline step takes the permits it needs only for its own duration, so VMs
//! pipeline independently with no stage barrier across the pool. Knows nothing about Proxmox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::inputs::model::ConcurrencyLimits;

/// Engine defaults: PVE serialises allocations per storage (10 s storage lock) and a node's
/// pvedaemon has a small worker pool, so the node and storage caps matter more than the
/// global one.
pub const DEFAULT_GLOBAL: usize = 16;
pub const DEFAULT_PER_NODE: usize = 6;
pub const DEFAULT_PER_STORAGE: usize = 3;

/// Effective limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub global: usize,
    pub per_node: usize,
    pub per_storage: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            global: DEFAULT_GLOBAL,
            per_node: DEFAULT_PER_NODE,
            per_storage: DEFAULT_PER_STORAGE,
        }
    }
}

impl Limits {
    /// Defaults, then the inputs' `limits:`, then the flags (flags win).
    pub fn resolve(inputs: &ConcurrencyLimits, flags: &ConcurrencyLimits) -> Self {
        let d = Self::default();
        let pick = |f: Option<usize>, i: Option<usize>, def: usize| f.or(i).unwrap_or(def).max(1);
        Self {
            global: pick(flags.global, inputs.global, d.global),
            per_node: pick(flags.per_node, inputs.per_node, d.per_node),
            per_storage: pick(flags.per_storage, inputs.per_storage, d.per_storage),
        }
    }
}

/// The permits one step holds; dropping it releases them.
pub struct Permits {
    _held: Vec<OwnedSemaphorePermit>,
}

/// Shared semaphores.
pub struct Scheduler {
    limits: Limits,
    global: Arc<Semaphore>,
    nodes: Mutex<HashMap<String, Arc<Semaphore>>>,
    storages: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            global: Arc::new(Semaphore::new(limits.global)),
            nodes: Mutex::new(HashMap::new()),
            storages: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn sem(map: &Mutex<HashMap<String, Arc<Semaphore>>>, key: &str, n: usize) -> Arc<Semaphore> {
        let mut g = match map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(n)))
            .clone()
    }

    /// Acquire in a fixed order (storage, node, global) so two steps never deadlock.
    pub async fn acquire(&self, node: &str, storage: Option<&str>) -> Permits {
        let mut held = Vec::with_capacity(3);
        if let Some(s) = storage {
            let sem = Self::sem(&self.storages, s, self.limits.per_storage);
            if let Ok(p) = sem.acquire_owned().await {
                held.push(p);
            }
        }
        let sem = Self::sem(&self.nodes, node, self.limits.per_node);
        if let Ok(p) = sem.acquire_owned().await {
            held.push(p);
        }
        if let Ok(p) = self.global.clone().acquire_owned().await {
            held.push(p);
        }
        Permits { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_inputs_override_defaults() {
        let inputs = ConcurrencyLimits {
            global: Some(8),
            per_node: Some(2),
            per_storage: None,
        };
        let flags = ConcurrencyLimits {
            global: None,
            per_node: Some(5),
            per_storage: None,
        };
        let l = Limits::resolve(&inputs, &flags);
        assert_eq!(
            l,
            Limits {
                global: 8,
                per_node: 5,
                per_storage: DEFAULT_PER_STORAGE
            }
        );
    }

    #[tokio::test]
    async fn per_node_cap_holds_under_contention() {
        let s = Arc::new(Scheduler::new(Limits {
            global: 10,
            per_node: 2,
            per_storage: 10,
        }));
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (s, active, peak) = (s.clone(), active.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let _p = s.acquire("pve1", None).await;
                let now = active.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
