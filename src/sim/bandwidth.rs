//! Shared copy bandwidth: every full-clone copy is a flow through the resources it uses (the
//! storage instance it reads and writes, the node whose `qmclone` worker moves the data), each
//! with a capacity in MB/s. Concurrent flows get max-min fair shares of those capacities
//! (progressive filling), and no flow runs faster than one copy stream. Rates are recomputed
//! whenever a flow starts or ends, so between two such events the model is exact (a fluid
//! model, as storage and network links behave under concurrent sequential streams).
//!
//! Why this shape: a single `qemu-img convert` / drive mirror is latency-bound well below
//! what a Ceph pool or a striped array serves in aggregate, while many concurrent copies split
//! that aggregate between them: concurrency pays until the storage (or the node's link) is
//! saturated and costs every copy its share beyond that (pve-api-notes.md §4 "What a clone
//! does": disks are copied one by one inside the worker; peers.md §3: full-clone time is
//! dominated by bytes copied).
//!
//! Knows nothing about HTTP, VMs, locks or tasks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::latency::SimClock;

/// One resource a flow uses: its key and its capacity (MB/s).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub key: String,
    pub capacity_mbs: f64,
}

impl Link {
    pub fn new(key: impl Into<String>, capacity_mbs: f64) -> Self {
        Link {
            key: key.into(),
            capacity_mbs,
        }
    }
}

#[derive(Debug)]
struct Flow {
    /// Bytes still to move.
    remaining: f64,
    /// Bytes per simulated millisecond one stream reaches.
    cap: f64,
    links: Vec<String>,
    /// Current bytes per simulated millisecond.
    rate: f64,
}

#[derive(Debug, Default)]
struct State {
    flows: HashMap<u64, Flow>,
    /// Bytes per simulated millisecond, per link key.
    capacity: HashMap<String, f64>,
    /// Simulated time of the last rate change (ms).
    last_ms: f64,
    next_id: u64,
}

/// MB/s → bytes per simulated millisecond.
fn per_ms(mbs: f64) -> f64 {
    mbs * 1000.0
}

impl State {
    /// Move every flow forward to `now` at its current rate.
    fn advance(&mut self, now: f64) {
        let dt = (now - self.last_ms).max(0.0);
        if dt > 0.0 {
            for f in self.flows.values_mut() {
                f.remaining = (f.remaining - f.rate * dt).max(0.0);
            }
        }
        self.last_ms = self.last_ms.max(now);
    }

    /// Max-min fair rates with per-flow caps (progressive filling): raise every unfrozen
    /// flow's rate together until a link is full or a flow reaches its stream cap; freeze
    /// those flows; repeat.
    fn recompute(&mut self) {
        let mut left: HashMap<&str, f64> = HashMap::new();
        for f in self.flows.values() {
            for l in &f.links {
                if let Some(c) = self.capacity.get(l) {
                    left.insert(l.as_str(), *c);
                }
            }
        }
        let ids: Vec<u64> = self.flows.keys().copied().collect();
        let mut rate: HashMap<u64, f64> = ids.iter().map(|i| (*i, 0.0)).collect();
        let mut frozen: HashSet<u64> = HashSet::new();
        for _ in 0..=ids.len() {
            let active: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| !frozen.contains(i))
                .collect();
            if active.is_empty() {
                break;
            }
            let mut users: HashMap<&str, usize> = HashMap::new();
            for i in &active {
                for l in &self.flows[i].links {
                    if left.contains_key(l.as_str()) {
                        *users.entry(l.as_str()).or_insert(0) += 1;
                    }
                }
            }
            let mut inc = f64::INFINITY;
            for (l, n) in &users {
                inc = inc.min(left[l] / *n as f64);
            }
            for i in &active {
                inc = inc.min(self.flows[i].cap - rate[i]);
            }
            let inc = if inc.is_finite() { inc.max(0.0) } else { 0.0 };
            for i in &active {
                if let Some(r) = rate.get_mut(i) {
                    *r += inc;
                }
                for l in &self.flows[i].links {
                    if let Some(c) = left.get_mut(l.as_str()) {
                        *c -= inc;
                    }
                }
            }
            for i in &active {
                let f = &self.flows[i];
                let capped = rate[i] >= f.cap * (1.0 - 1e-9);
                let full = f.links.iter().any(|l| {
                    left.get(l.as_str())
                        .is_some_and(|c| *c <= self.capacity[l] * 1e-9)
                });
                if capped || full {
                    frozen.insert(*i);
                }
            }
        }
        for (i, r) in rate {
            if let Some(f) = self.flows.get_mut(&i) {
                f.rate = r;
            }
        }
    }
}

/// The shared bandwidth of the simulated cluster.
#[derive(Debug, Default)]
pub struct BandwidthPool {
    state: Mutex<State>,
    changed: Notify,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Removes a flow that ends early (the copying task was dropped).
struct FlowGuard<'a> {
    pool: &'a BandwidthPool,
    clock: &'a SimClock,
    id: u64,
    done: bool,
}

impl Drop for FlowGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool.finish(self.clock, self.id);
        }
    }
}

impl BandwidthPool {
    /// Flows currently moving data.
    pub fn active(&self) -> usize {
        lock(&self.state).flows.len()
    }

    /// The current rate of every flow (MB/s), for tests and diagnostics.
    pub fn rates_mbs(&self) -> Vec<f64> {
        lock(&self.state)
            .flows
            .values()
            .map(|f| f.rate / 1000.0)
            .collect()
    }

    fn finish(&self, clock: &SimClock, id: u64) {
        let mut st = lock(&self.state);
        st.advance(clock.now_ms_f64());
        st.flows.remove(&id);
        st.recompute();
        drop(st);
        self.changed.notify_waiters();
    }

    /// Move `bytes` through `links`, no faster than `stream_mbs`, sharing each link fairly
    /// with the other flows; returns when the last byte has moved (simulated time).
    pub async fn transfer(
        self: &Arc<Self>,
        clock: &SimClock,
        bytes: u64,
        stream_mbs: f64,
        links: &[Link],
    ) {
        if bytes == 0 || clock.time_scale() == 0.0 {
            return;
        }
        let id = {
            let mut st = lock(&self.state);
            st.advance(clock.now_ms_f64());
            for l in links {
                st.capacity.insert(l.key.clone(), per_ms(l.capacity_mbs));
            }
            let id = st.next_id;
            st.next_id += 1;
            st.flows.insert(
                id,
                Flow {
                    remaining: bytes as f64,
                    cap: per_ms(stream_mbs.max(1e-6)),
                    links: links.iter().map(|l| l.key.clone()).collect(),
                    rate: 0.0,
                },
            );
            st.recompute();
            id
        };
        self.changed.notify_waiters();
        let mut guard = FlowGuard {
            pool: self,
            clock,
            id,
            done: false,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_ms = {
                let mut st = lock(&self.state);
                st.advance(clock.now_ms_f64());
                match st.flows.get(&id) {
                    // Done within half a simulated millisecond of work (or a byte).
                    Some(f) if f.remaining <= (f.rate * 0.5).max(1.0) => None,
                    Some(f) if f.rate > 0.0 => Some(f.remaining / f.rate),
                    Some(_) => Some(1000.0),
                    None => None,
                }
            };
            let Some(wait_ms) = wait_ms else {
                guard.done = true;
                self.finish(clock, id);
                return;
            };
            let sleep = clock.real_f64(wait_ms);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = &mut notified => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_with(flows: &[(f64, &[(&str, f64)])]) -> Vec<f64> {
        let mut st = State::default();
        for (i, (cap, links)) in flows.iter().enumerate() {
            for (k, c) in links.iter() {
                st.capacity.insert(k.to_string(), per_ms(*c));
            }
            st.flows.insert(
                i as u64,
                Flow {
                    remaining: 1e9,
                    cap: per_ms(*cap),
                    links: links.iter().map(|(k, _)| k.to_string()).collect(),
                    rate: 0.0,
                },
            );
        }
        st.recompute();
        (0..flows.len() as u64)
            .map(|i| st.flows[&i].rate / 1000.0)
            .collect()
    }

    #[test]
    fn one_flow_runs_at_its_stream_rate_below_the_storage_aggregate() {
        assert_eq!(pool_with(&[(150.0, &[("s", 600.0)])]), vec![150.0]);
    }

    #[test]
    fn flows_beyond_saturation_split_the_storage_fairly() {
        let one: (f64, &[(&str, f64)]) = (150.0, &[("s", 600.0)]);
        let r = pool_with(&[one; 6]);
        for x in r {
            assert!((x - 100.0).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn a_node_link_shared_by_two_storages_caps_them_together() {
        // two storages of 600 each, both copies run on one node of 500
        let r = pool_with(&[
            (1000.0, &[("a", 600.0), ("n", 500.0)]),
            (1000.0, &[("b", 600.0), ("n", 500.0)]),
        ]);
        assert!(
            (r[0] - 250.0).abs() < 1e-6 && (r[1] - 250.0).abs() < 1e-6,
            "{r:?}"
        );
    }

    #[test]
    fn a_flow_held_back_elsewhere_leaves_its_share_to_the_others() {
        // flow 0 is bottlenecked by its node (100), flows 1 and 2 split the rest of s (500)
        let r = pool_with(&[
            (1000.0, &[("s", 600.0), ("n1", 100.0)]),
            (1000.0, &[("s", 600.0), ("n2", 1000.0)]),
            (1000.0, &[("s", 600.0), ("n2", 1000.0)]),
        ]);
        assert!((r[0] - 100.0).abs() < 1e-6, "{r:?}");
        assert!((r[1] - 250.0).abs() < 1e-6, "{r:?}");
    }

    #[tokio::test]
    async fn two_concurrent_copies_on_a_saturated_storage_take_twice_as_long() {
        let clock = SimClock::new(0.01);
        let pool = Arc::new(BandwidthPool::default());
        let links = [Link::new("s", 100.0)];
        // 100 MB at 100 MB/s = 1 simulated second alone (10 ms real)
        let t = std::time::Instant::now();
        pool.transfer(&clock, 100_000_000, 100.0, &links).await;
        let alone = t.elapsed();
        let t = std::time::Instant::now();
        tokio::join!(
            pool.transfer(&clock, 100_000_000, 100.0, &links),
            pool.transfer(&clock, 100_000_000, 100.0, &links)
        );
        let both = t.elapsed();
        let ratio = both.as_secs_f64() / alone.as_secs_f64();
        assert!(
            (1.6..2.6).contains(&ratio),
            "alone {alone:?}, both {both:?}"
        );
        assert_eq!(pool.active(), 0);
    }
}
