//! Batched task waits: every task a caller waits for on a node is answered by one listing,
//! `GET /nodes/{node}/tasks?source=all&since=…` (pve-manager `PVE/API2/Tasks.pm`
//! `node_tasks`: running tasks from the node's `active` file with status `RUNNING`, then the
//! archive with each ended task's exit status), instead of one status read per task and
//! poll. A poller per node runs while someone waits there; it polls when the earliest task
//! is expected to end (the duration of that task type on that node learned from the tasks
//! seen so far, a prior until then), gathering the tasks due shortly after into the same
//! listing, and backs off for a task that runs longer than expected.
//!
//! `GET /cluster/tasks` is not used: it serves what each node's pvestatd broadcast at its
//! last 10 s cycle, at most 25 tasks a node (`pvestatd.pm` `update_status`,
//! `RESTEnvironment.pm` `active_workers`), so it lags and drops tasks.
//!
//! The outcome rules are [`PveClient::wait_task`]'s: unreadable listings are polled through
//! to the deadline, which ends in `TaskTimeout` (last seen running) or `TaskUnknown` (never
//! read); a task missing from a complete listing past the not-visible grace, or from a
//! truncated one, is asked about directly. Knows nothing about HyOps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{oneshot, Notify};

use super::client::{CallAccount, PveClient};
use super::types::WaitOptions;
use super::upid::Upid;

/// Shortest gap between two listings of one node, real seconds at time scale 1.
const MIN_GAP_S: f64 = 0.1;
/// Longest gap while a task runs past its expected end, real seconds at time scale 1.
const MAX_GAP_S: f64 = 2.0;

/// How a watched task ended for the waiter.
#[derive(Debug)]
pub(crate) enum Watched {
    /// It stopped with this exit status.
    Ended { exit: String, polls: u32 },
    /// It is not in the listing (past the not-visible grace, or the listing was cut): ask
    /// the task itself.
    NotListed,
    /// The deadline passed: last seen running, or never read (the last error).
    Deadline {
        seen_running: bool,
        last_error: Option<String>,
    },
}

struct Waiter {
    upid: Upid,
    registered: Instant,
    /// The learned duration of this task type on this node, if one was seen.
    expected: Option<Duration>,
    /// See [`WaitOptions::eager`].
    eager: bool,
    next_check: Instant,
    deadline: Instant,
    grace_until: Instant,
    last_running: Option<Instant>,
    last_error: Option<String>,
    polls: u32,
    tx: Option<oneshot::Sender<Watched>>,
}

impl Waiter {
    fn resolve(&mut self, w: Watched) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(w);
        }
    }
}

#[derive(Default)]
struct NodeState {
    waiters: HashMap<String, Waiter>,
    poller: bool,
    last_poll: Option<Instant>,
    errors: u32,
}

#[derive(Default)]
struct NodeWatch {
    state: Mutex<NodeState>,
    wake: Notify,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Learned task durations (real seconds) per `node/type`.
type Learned = Arc<Mutex<HashMap<String, f64>>>;

/// The per-client watcher (see the module doc).
pub(crate) struct TaskWatcher {
    scale: f64,
    nodes: Mutex<HashMap<String, Arc<NodeWatch>>>,
    learned: Learned,
    calls: Arc<CallAccount>,
}

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskListEntry {
    /// The task.
    pub upid: String,
    /// `RUNNING` for a running task, else its exit status (absent while unknown).
    #[serde(default, deserialize_with = "super::lenient::de_opt_string")]
    pub status: Option<String>,
}

impl TaskWatcher {
    pub(crate) fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        TaskWatcher {
            scale,
            nodes: Mutex::new(HashMap::new()),
            learned: Arc::default(),
            calls: CallAccount::new(),
        }
    }

    /// Requests the pollers made.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.calls()
    }

    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64((s * self.scale).max(0.0))
    }

    fn expected(&self, node: &str, kind: &str) -> Option<Duration> {
        guard(&self.learned)
            .get(&format!("{node}/{kind}"))
            .map(|s| Duration::from_secs_f64(*s))
    }

    /// Start watching `upid` for `client`; the receiver gets how it ended.
    pub(crate) fn register(
        &self,
        client: &PveClient,
        upid: &Upid,
        opts: &WaitOptions,
    ) -> oneshot::Receiver<Watched> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let expected = self.expected(upid.node(), &upid.task_type);
        let node = Arc::clone(
            guard(&self.nodes)
                .entry(upid.node().to_string())
                .or_default(),
        );
        let start_poller = {
            let mut st = guard(&node.state);
            st.waiters.insert(
                upid.as_str().to_string(),
                Waiter {
                    upid: upid.clone(),
                    registered: now,
                    expected,
                    next_check: now + expected.map_or(opts.initial_poll, |e| aim(e, opts.eager)),
                    eager: opts.eager,
                    deadline: now + opts.timeout,
                    grace_until: now + opts.not_visible_grace,
                    last_running: None,
                    last_error: None,
                    polls: 0,
                    tx: Some(tx),
                },
            );
            !std::mem::replace(&mut st.poller, true)
        };
        if start_poller {
            let client = client.clone();
            let node_name = upid.node().to_string();
            let min_gap = self.secs(MIN_GAP_S);
            let max_gap = self.secs(MAX_GAP_S);
            let learned = Arc::clone(&self.learned);
            let calls = Arc::clone(&self.calls);
            let watch = Arc::clone(&node);
            tokio::spawn(PveClient::account(calls, async move {
                poll_node(client, node_name, watch, learned, min_gap, max_gap).await;
            }));
        } else {
            node.wake.notify_one();
        }
        rx
    }
}

/// The first look at a task expected to take `e`: a little after, so that most tasks are
/// seen ended by the first listing (a miss costs a request, a late look only latency); for
/// an eager waiter a little before (a late look costs it the resources it holds).
fn aim(e: Duration, eager: bool) -> Duration {
    e.mul_f64(if eager { 0.85 } else { 1.15 })
}

/// What one ended task says about its type's duration: between the last listing that saw it
/// running (or its start) and now; seen ended at the first look, a little below that look
/// (so the estimate drifts down until looks begin to miss, and settles just above it).
fn sample(registered: Instant, last_running: Option<Instant>, now: Instant) -> Duration {
    match last_running {
        Some(lo) => (lo + (now - lo) / 2) - registered,
        None => (now - registered).mul_f64(0.85),
    }
}

/// When the next listing should go out: the earliest due task, moved later to gather the
/// tasks due within a tenth of its expected duration, never sooner than `min_gap` after the
/// last listing.
fn next_poll(st: &NodeState, min_gap: Duration) -> Option<Instant> {
    let mut due: Vec<(Instant, Duration)> = st
        .waiters
        .values()
        .map(|w| {
            let span = w
                .expected
                .unwrap_or_else(|| w.next_check.saturating_duration_since(w.registered));
            (w.next_check.min(w.deadline), span)
        })
        .collect();
    due.sort();
    let (first, span) = *due.first()?;
    let slack = (span / 10).min(Duration::from_secs(2));
    let mut at = first;
    for (t, _) in &due {
        if *t <= first + slack {
            at = at.max(*t);
        }
    }
    if let Some(last) = st.last_poll {
        at = at.max(last + min_gap);
    }
    Some(at)
}

async fn poll_node(
    client: PveClient,
    node: String,
    watch: Arc<NodeWatch>,
    learned: Learned,
    min_gap: Duration,
    max_gap: Duration,
) {
    loop {
        let at = {
            let mut st = guard(&watch.state);
            let now = Instant::now();
            st.waiters
                .retain(|_, w| w.tx.as_ref().is_some_and(|t| !t.is_closed()));
            for w in st.waiters.values_mut() {
                if now >= w.deadline {
                    let (seen, err) = (w.last_running.is_some(), w.last_error.clone());
                    w.resolve(Watched::Deadline {
                        seen_running: seen,
                        last_error: err,
                    });
                }
            }
            st.waiters.retain(|_, w| w.tx.is_some());
            match next_poll(&st, min_gap) {
                Some(at) => at,
                None => {
                    st.poller = false;
                    return;
                }
            }
        };
        let now = Instant::now();
        if at > now {
            tokio::select! {
                _ = tokio::time::sleep(at - now) => {}
                // a new task registered: it may be due sooner
                _ = watch.wake.notified() => continue,
            }
        }
        let sent = Instant::now();
        let (since, user, count) = {
            let mut st = guard(&watch.state);
            st.last_poll = Some(sent);
            let since = st.waiters.values().map(|w| w.upid.starttime).min();
            let user = st.waiters.values().next().map(|w| {
                w.upid
                    .user
                    .split('!')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            });
            (since, user, st.waiters.len())
        };
        let Some(since) = since else { continue };
        let limit = (2 * count + 50) as u64;
        let listed = client
            .node_tasks(&node, since, user.as_deref(), limit)
            .await;
        let now = Instant::now();
        let mut st = guard(&watch.state);
        match listed {
            Ok((rows, total)) => {
                st.errors = 0;
                let complete = total.is_none_or(|t| t <= rows.len() as u64);
                let by_upid: HashMap<&str, &TaskListEntry> =
                    rows.iter().map(|r| (r.upid.as_str(), r)).collect();
                for w in st.waiters.values_mut() {
                    if w.registered > sent {
                        // its task may have started after the listing was taken
                        continue;
                    }
                    if w.next_check > now + min_gap && w.deadline > now {
                        // not due yet: still learn from this listing if it ended
                        match by_upid.get(w.upid.as_str()) {
                            Some(r) if r.status.as_deref().is_some_and(|s| s != "RUNNING") => {}
                            _ => continue,
                        }
                    }
                    w.polls += 1;
                    match by_upid.get(w.upid.as_str()) {
                        Some(r) => match r.status.as_deref() {
                            Some(s) if s != "RUNNING" => {
                                let took = sample(w.registered, w.last_running, now);
                                learn(&learned, &node, &w.upid.task_type, took);
                                let polls = w.polls;
                                w.resolve(Watched::Ended {
                                    exit: s.to_string(),
                                    polls,
                                });
                            }
                            _ => {
                                w.last_running = Some(now);
                                let elapsed = now - w.registered;
                                // past its expected end: a fifth of the time waited; never
                                // seen end: double the wait
                                let gap = match w.expected {
                                    Some(e) if w.eager => e / 20,
                                    Some(e) => elapsed.max(e) / 5,
                                    None => elapsed,
                                };
                                w.next_check = now + gap.clamp(min_gap, max_gap);
                            }
                        },
                        None if complete && now < w.grace_until => {
                            w.next_check = now + min_gap;
                        }
                        None => w.resolve(Watched::NotListed),
                    }
                }
                st.waiters.retain(|_, w| w.tx.is_some());
            }
            Err(e) => {
                st.errors = st.errors.saturating_add(1);
                let backoff = (min_gap * 2u32.saturating_pow(st.errors.min(5))).min(max_gap);
                let text = e.to_string();
                for w in st.waiters.values_mut() {
                    w.polls += 1;
                    w.last_error = Some(text.clone());
                    w.next_check = w.next_check.max(now + backoff);
                }
            }
        }
    }
}

fn learn(learned: &Learned, node: &str, kind: &str, took: Duration) {
    let mut l = guard(learned);
    let key = format!("{node}/{kind}");
    let s = took.as_secs_f64();
    let v = match l.get(&key) {
        Some(old) => old * 0.7 + s * 0.3,
        None => s,
    };
    l.insert(key, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(due_ms: u64, expected_ms: u64, base: Instant) -> Waiter {
        let upid: Upid = "UPID:pve1:00000001:00000001:00000001:qmstart:100:root@pam:"
            .parse()
            .unwrap();
        Waiter {
            upid,
            registered: base,
            expected: Some(Duration::from_millis(expected_ms)),
            eager: false,
            next_check: base + Duration::from_millis(due_ms),
            deadline: base + Duration::from_secs(3600),
            grace_until: base,
            last_running: None,
            last_error: None,
            polls: 0,
            tx: None,
        }
    }

    #[test]
    fn tasks_due_within_a_tenth_of_the_first_ones_duration_share_one_listing() {
        let base = Instant::now();
        let mut st = NodeState::default();
        st.waiters.insert("a".into(), waiter(10_000, 10_000, base));
        st.waiters.insert("b".into(), waiter(10_800, 10_000, base));
        st.waiters.insert("c".into(), waiter(12_000, 10_000, base));
        let at = next_poll(&st, Duration::from_millis(200)).unwrap();
        assert_eq!(at, base + Duration::from_millis(10_800));
    }

    #[test]
    fn listings_of_one_node_keep_the_minimum_gap() {
        let base = Instant::now();
        let mut st = NodeState::default();
        st.waiters.insert("a".into(), waiter(0, 100, base));
        st.last_poll = Some(base);
        let at = next_poll(&st, Duration::from_millis(200)).unwrap();
        assert_eq!(at, base + Duration::from_millis(200));
    }
}
