//! Concurrency for the executor: permits where the work happens, sized from the observed
//! cluster and adapted while the rollout runs. Knows nothing about Proxmox calls.
//!
//! - **Windows.** A clone holds a permit of its storage instance's window (a shared storage
//!   is one instance cluster-wide, a local one one per node) and of the long-task window of
//!   the node that runs its task (the template's node); config, resize, start, shutdown and
//!   delete hold a permit of their VM's node short-task window only, so a 40 ms resize never
//!   queues behind clones. With an explicit global cap, short steps go before long ones.
//! - **Per attempt.** A step holds its permits for one attempt and gives them back before
//!   it sleeps in backoff.
//! - **Defaults from the cluster.** A shared storage starts at 4 + 2 per node (a distributed
//!   store grows with its nodes), a local one at 4; node windows at 12 long tasks (room is
//!   left for short ones) and 8 short ones.
//! - **Adaptive.** A storage window follows its clones' latency like TCP Vegas: the latency
//!   of the fastest clone seen is the base; a window whose clones take longer than the base
//!   by more than 3 queued clones' worth shrinks by one per window, one within 1 grows (by one
//!   per completion until the first sign of congestion, then by one per window). A lock
//!   timeout (`can't lock file … got timeout`, `cfs-lock … got lock request timeout`) halves
//!   the window it happened under, at most once per base latency, like a loss in TCP. Node
//!   windows grow by one per window and halve on lock timeouts. Explicit `limits` and flags
//!   cap every window. The settled sizes go into the apply report.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::inputs::model::ConcurrencyLimits;
pub use crate::plan::observed::ClusterShape;

/// Explicit caps (inputs `limits:` and the flags); `None` leaves the derived default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub global: Option<usize>,
    pub per_node: Option<usize>,
    pub per_storage: Option<usize>,
}

impl Limits {
    /// The inputs' `limits:`, then the flags (flags win); 0 counts as 1.
    pub fn resolve(inputs: &ConcurrencyLimits, flags: &ConcurrencyLimits) -> Self {
        let pick = |f: Option<usize>, i: Option<usize>| f.or(i).map(|v| v.max(1));
        Self {
            global: pick(flags.global, inputs.global),
            per_node: pick(flags.per_node, inputs.per_node),
            per_storage: pick(flags.per_storage, inputs.per_storage),
        }
    }
}

/// Initial and largest window of a shared storage on `nodes` nodes.
fn shared_storage_window(nodes: usize) -> (f64, f64) {
    let n = nodes.max(1) as f64;
    (4.0 + 2.0 * n, 8.0 * n)
}
const LOCAL_STORAGE_WINDOW: (f64, f64) = (4.0, 16.0);
const NODE_LONG_WINDOW: (f64, f64) = (12.0, 12.0);
const NODE_SHORT_WINDOW: (f64, f64) = (8.0, 32.0);
/// Vegas thresholds, in clones queued beyond what the storage serves at base latency.
const VEGAS_ALPHA: f64 = 1.0;
const VEGAS_BETA: f64 = 3.0;

/// The kind of step asking: short ones go first where both wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Long,
    Short,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    /// Latency-based (storages).
    Vegas,
    /// Loss-based only (nodes, global).
    Loss,
    /// Fixed (an explicit global cap).
    Fixed,
}

struct Waiter {
    tx: oneshot::Sender<WindowPermit>,
}

struct WinState {
    limit: f64,
    min: f64,
    max: f64,
    in_use: usize,
    high: VecDeque<Waiter>,
    low: VecDeque<Waiter>,
    /// Fastest successful step per kind (seconds).
    base: BTreeMap<&'static str, f64>,
    slow_start: bool,
    last_decrease: Option<Instant>,
    initial: f64,
    peak_in_use: usize,
    peak_limit: f64,
    congestion: u64,
    completions: u64,
}

/// One adaptive window.
pub struct Window {
    name: String,
    control: Control,
    state: Mutex<WinState>,
}

/// What a window settled on, for the apply report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// `storage:<id>`, `storage:<id>@<node>`, `node:<node>:long`, `node:<node>:short`, `global`.
    pub window: String,
    pub initial: usize,
    /// The window when the run ended.
    pub settled: usize,
    pub largest: usize,
    /// Most permits held at once.
    pub peak_in_flight: usize,
    /// Lock timeouts seen under it (each absorbed by backing off).
    pub lock_timeouts: u64,
    /// Steps that completed under it.
    pub completed: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Window {
    fn new(name: String, control: Control, initial: f64, max: f64) -> Arc<Self> {
        let max = max.max(1.0);
        let initial = initial.clamp(1.0, max);
        Arc::new(Window {
            name,
            control,
            state: Mutex::new(WinState {
                limit: initial,
                min: 1.0,
                max,
                in_use: 0,
                high: VecDeque::new(),
                low: VecDeque::new(),
                base: BTreeMap::new(),
                slow_start: true,
                last_decrease: None,
                initial,
                peak_in_use: 0,
                peak_limit: initial,
                congestion: 0,
                completions: 0,
            }),
        })
    }

    /// The current window (whole permits).
    pub fn limit(&self) -> usize {
        lock(&self.state).limit.floor().max(1.0) as usize
    }

    /// Wait for a permit; short steps are served before long ones.
    pub async fn acquire(self: &Arc<Self>, kind: StepKind) -> WindowPermit {
        let rx = {
            let mut st = lock(&self.state);
            let cap = st.limit.floor().max(1.0) as usize;
            let queued = !st.high.is_empty() || (kind == StepKind::Long && !st.low.is_empty());
            if st.in_use < cap && !queued {
                st.in_use += 1;
                st.peak_in_use = st.peak_in_use.max(st.in_use);
                return WindowPermit {
                    window: Arc::clone(self),
                    armed: true,
                };
            }
            let (tx, rx) = oneshot::channel();
            match kind {
                StepKind::Short => st.high.push_back(Waiter { tx }),
                StepKind::Long => st.low.push_back(Waiter { tx }),
            }
            rx
        };
        // The granter counted us in and sends the permit itself, so a step cancelled while
        // waiting never leaks one. The senders live in the window's queues: a receive error
        // cannot happen while we wait, but if it did, take a permit the plain way.
        match rx.await {
            Ok(p) => p,
            Err(_) => {
                let mut st = lock(&self.state);
                st.in_use += 1;
                WindowPermit {
                    window: Arc::clone(self),
                    armed: true,
                }
            }
        }
    }

    /// Hand free permits to the queued steps, short ones first.
    fn grant(self: &Arc<Self>, st: &mut WinState) {
        let cap = st.limit.floor().max(1.0) as usize;
        while st.in_use < cap {
            let next = match st.high.pop_front() {
                Some(w) => w,
                None => match st.low.pop_front() {
                    Some(w) => w,
                    None => break,
                },
            };
            st.in_use += 1;
            let permit = WindowPermit {
                window: Arc::clone(self),
                armed: true,
            };
            if let Err(mut p) = next.tx.send(permit) {
                // the step stopped waiting (cancelled): the permit goes to the next one
                p.armed = false;
                st.in_use -= 1;
                continue;
            }
            st.peak_in_use = st.peak_in_use.max(st.in_use);
        }
    }

    fn release(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        st.in_use = st.in_use.saturating_sub(1);
        self.grant(&mut st);
    }

    /// A step of `kind` (`clone`, `config`, …) succeeded after `took` under this window.
    pub fn on_success(self: &Arc<Self>, kind: &'static str, took: Duration) {
        let mut st = lock(&self.state);
        st.completions += 1;
        let d = took.as_secs_f64().max(1e-6);
        match self.control {
            Control::Fixed => {}
            Control::Loss => {
                let l = st.limit;
                st.limit = (l + 1.0 / l).min(st.max);
            }
            Control::Vegas => {
                let base = st.base.entry(kind).or_insert(d);
                if d < *base {
                    *base = d;
                }
                let base = *base;
                let l = st.limit;
                let queued = l * (1.0 - base / d);
                if queued < VEGAS_ALPHA {
                    st.limit = if st.slow_start { l + 1.0 } else { l + 1.0 / l };
                } else {
                    st.slow_start = false;
                    if queued > VEGAS_BETA {
                        st.limit = l - 1.0 / l;
                    }
                }
                st.limit = st.limit.clamp(st.min, st.max);
            }
        }
        st.peak_limit = st.peak_limit.max(st.limit);
        self.grant(&mut st);
    }

    /// A lock timeout under this window: halve it, at most once per `hold` (the time one
    /// step takes, so one burst of timeouts counts once).
    pub fn on_congestion(&self, hold: Duration) {
        let mut st = lock(&self.state);
        st.congestion += 1;
        if self.control == Control::Fixed {
            return;
        }
        let now = Instant::now();
        if st
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < hold)
        {
            return;
        }
        st.last_decrease = Some(now);
        st.slow_start = false;
        st.limit = (st.limit / 2.0).max(st.min);
    }

    fn report(&self) -> WindowReport {
        let st = lock(&self.state);
        WindowReport {
            window: self.name.clone(),
            initial: st.initial as usize,
            settled: st.limit.floor().max(1.0) as usize,
            largest: st.peak_limit.floor().max(1.0) as usize,
            peak_in_flight: st.peak_in_use,
            lock_timeouts: st.congestion,
            completed: st.completions,
        }
    }
}

/// One permit of one window; dropping it gives it back.
pub struct WindowPermit {
    window: Arc<Window>,
    /// False for a permit that was never handed out (its count was undone).
    armed: bool,
}

impl Drop for WindowPermit {
    fn drop(&mut self) {
        if self.armed {
            self.window.release();
        }
    }
}

/// Where a step's work happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    /// A clone: its storage (the target of a full clone, the template's for a linked one)
    /// and the node that runs its task (the template's).
    Clone {
        storage: &'a str,
        task_node: &'a str,
    },
    /// An offline migration: the storage written on the target node (`None`: the disks stay
    /// where they are, shared) and the source node, which runs the task.
    Migrate {
        storage: Option<&'a str>,
        from: &'a str,
        to: &'a str,
    },
    /// A short step on the VM's node.
    Node(&'a str),
}

/// The permits one step holds for one attempt, with the windows they came from.
pub struct Permits {
    held: Vec<WindowPermit>,
}

impl Permits {
    /// The windows held (to feed back the attempt's outcome).
    pub fn windows(&self) -> impl Iterator<Item = &Arc<Window>> {
        self.held.iter().map(|p| &p.window)
    }
}

/// All windows of a run.
pub struct Scheduler {
    limits: Limits,
    shape: ClusterShape,
    global: Option<Arc<Window>>,
    windows: Mutex<BTreeMap<String, Arc<Window>>>,
}

impl Scheduler {
    /// Windows sized from `shape` and capped by `limits`.
    pub fn new(limits: Limits, shape: ClusterShape) -> Self {
        let global = limits
            .global
            .map(|g| Window::new("global".into(), Control::Fixed, g as f64, g as f64));
        Self {
            limits,
            shape,
            global,
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn window(
        &self,
        key: String,
        control: Control,
        (init, max): (f64, f64),
        cap: Option<usize>,
    ) -> Arc<Window> {
        let mut w = lock(&self.windows);
        Arc::clone(w.entry(key.clone()).or_insert_with(|| {
            // an explicit cap is the window's ceiling (higher or lower than the default's)
            let max = cap.map_or(max, |c| c as f64);
            Window::new(key, control, init.min(max), max)
        }))
    }

    fn storage_window(&self, storage: &str, task_node: &str) -> Arc<Window> {
        let (key, size) = if self.shape.shared(storage) {
            (
                format!("storage:{storage}"),
                shared_storage_window(self.shape.nodes.len()),
            )
        } else {
            (
                format!("storage:{storage}@{task_node}"),
                LOCAL_STORAGE_WINDOW,
            )
        };
        self.window(key, Control::Vegas, size, self.limits.per_storage)
    }

    /// Wait for the permits of a step at `place`, in a fixed order (storage, node, global)
    /// so two steps never deadlock.
    pub async fn acquire(&self, place: &Place<'_>) -> Permits {
        let mut held = Vec::with_capacity(3);
        let kind = match place {
            Place::Clone { storage, task_node } => {
                held.push(
                    self.storage_window(storage, task_node)
                        .acquire(StepKind::Long)
                        .await,
                );
                let node = self.window(
                    format!("node:{task_node}:long"),
                    Control::Loss,
                    NODE_LONG_WINDOW,
                    self.limits.per_node,
                );
                held.push(node.acquire(StepKind::Long).await);
                StepKind::Long
            }
            Place::Migrate { storage, from, to } => {
                if let Some(storage) = storage {
                    held.push(
                        self.storage_window(storage, to)
                            .acquire(StepKind::Long)
                            .await,
                    );
                }
                let node = self.window(
                    format!("node:{from}:long"),
                    Control::Loss,
                    NODE_LONG_WINDOW,
                    self.limits.per_node,
                );
                held.push(node.acquire(StepKind::Long).await);
                StepKind::Long
            }
            Place::Node(node) => {
                let w = self.window(
                    format!("node:{node}:short"),
                    Control::Loss,
                    NODE_SHORT_WINDOW,
                    self.limits.per_node,
                );
                held.push(w.acquire(StepKind::Short).await);
                StepKind::Short
            }
        };
        if let Some(g) = &self.global {
            held.push(g.acquire(kind).await);
        }
        Permits { held }
    }

    /// What every window settled on.
    pub fn report(&self) -> Vec<WindowReport> {
        let mut out: Vec<WindowReport> = lock(&self.windows).values().map(|w| w.report()).collect();
        if let Some(g) = &self.global {
            out.push(g.report());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(nodes: usize, shared: &[&str]) -> ClusterShape {
        ClusterShape {
            nodes: (1..=nodes).map(|i| format!("pve{i}")).collect(),
            storages: shared.iter().map(|s| (s.to_string(), true)).collect(),
        }
    }

    #[test]
    fn flags_override_inputs_and_unset_caps_stay_derived() {
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
        assert_eq!(
            Limits::resolve(&inputs, &flags),
            Limits {
                global: Some(8),
                per_node: Some(5),
                per_storage: None
            }
        );
    }

    #[test]
    fn a_shared_storage_window_starts_from_the_node_count_and_a_local_one_per_node() {
        let s = Scheduler::new(Limits::default(), shape(4, &["ceph"]));
        assert_eq!(s.storage_window("ceph", "pve1").limit(), 12);
        assert_eq!(s.storage_window("local-lvm", "pve1").limit(), 4);
        // a local storage is one window per node; a shared one is one for the cluster
        assert!(!Arc::ptr_eq(
            &s.storage_window("local-lvm", "pve1"),
            &s.storage_window("local-lvm", "pve2")
        ));
        assert!(Arc::ptr_eq(
            &s.storage_window("ceph", "pve1"),
            &s.storage_window("ceph", "pve2")
        ));
    }

    #[test]
    fn an_explicit_per_storage_cap_bounds_the_window() {
        let s = Scheduler::new(
            Limits {
                per_storage: Some(3),
                ..Limits::default()
            },
            shape(4, &["ceph"]),
        );
        let w = s.storage_window("ceph", "pve1");
        assert_eq!(w.limit(), 3);
        for _ in 0..50 {
            w.on_success("clone", Duration::from_secs(1));
        }
        assert_eq!(w.limit(), 3);
    }

    #[test]
    fn clones_at_base_latency_grow_the_window_and_queued_ones_shrink_it() {
        let w = Window::new("s".into(), Control::Vegas, 4.0, 64.0);
        for _ in 0..4 {
            w.on_success("clone", Duration::from_secs(10));
        }
        assert_eq!(
            w.limit(),
            8,
            "slow start: one more per clone at base latency"
        );
        // now every clone takes twice the base: half the window is queueing
        for _ in 0..40 {
            w.on_success("clone", Duration::from_secs(20));
        }
        assert!(w.limit() < 8, "{}", w.limit());
    }

    #[test]
    fn a_lock_timeout_halves_the_window_once_per_burst() {
        let w = Window::new("s".into(), Control::Vegas, 16.0, 64.0);
        w.on_congestion(Duration::from_secs(60));
        w.on_congestion(Duration::from_secs(60));
        assert_eq!(w.limit(), 8);
        assert_eq!(w.report().lock_timeouts, 2);
    }

    #[tokio::test]
    async fn short_steps_are_served_before_queued_long_ones() {
        let w = Window::new("g".into(), Control::Fixed, 1.0, 1.0);
        let first = w.acquire(StepKind::Long).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let (w1, o1) = (Arc::clone(&w), Arc::clone(&order));
        let long = tokio::spawn(async move {
            let _p = w1.acquire(StepKind::Long).await;
            lock(&o1).push("long");
        });
        while lock(&w.state).low.is_empty() {
            tokio::task::yield_now().await;
        }
        let (w2, o2) = (Arc::clone(&w), Arc::clone(&order));
        let short = tokio::spawn(async move {
            let _p = w2.acquire(StepKind::Short).await;
            lock(&o2).push("short");
        });
        while lock(&w.state).high.is_empty() {
            tokio::task::yield_now().await;
        }
        drop(first);
        long.await.unwrap();
        short.await.unwrap();
        assert_eq!(*lock(&order), vec!["short", "long"]);
    }

    #[tokio::test]
    async fn per_node_cap_holds_under_contention() {
        let s = Arc::new(Scheduler::new(
            Limits {
                per_node: Some(2),
                ..Limits::default()
            },
            shape(1, &[]),
        ));
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (s, active, peak) = (s.clone(), active.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let _p = s.acquire(&Place::Node("pve1")).await;
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
