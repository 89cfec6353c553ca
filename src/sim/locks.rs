//! Simulated locks, each acquired with a timeout in simulated time, in the two ways Proxmox
//! takes them:
//! - **flock** (`PVE::Tools::lock_file_full`, pve-common `src/PVE/Tools.pm` 203–272): a
//!   blocking `flock` under an alarm, 10 s by default; waiters queue in the kernel and are
//!   served in order; on timeout `can't lock file '<path>' - got timeout`. Used for the
//!   node-local config locks `/var/lock/qemu-server/lock-<vmid>.conf` (shared or exclusive)
//!   and for a non-shared storage's `/var/lock/pve-manager/pve-storage-<id>`
//!   (pve-storage `src/PVE/Storage/Plugin.pm` 759–774, `cluster_lock_storage`).
//! - **cfs lock** (`$cfs_lock`, pve-cluster `src/PVE/Cluster.pm` 606–690): a shared storage's
//!   `storage-<id>` lock is a `mkdir` in pmxcfs, retried after sleeping
//!   `min(remaining seconds, 10) × 100 ms` (1 s while ten or more seconds remain) until the
//!   10 s timeout: no queue, whoever polls first while it is free takes it; on timeout
//!   `cfs-lock 'storage-<id>' error: got lock request timeout`.
//!
//! Too many waiters on one lock therefore time out, as users see with 4+ parallel clones
//! (peers.md §2.A). Knows nothing about HTTP or what the locks protect.

use super::latency::SimClock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Waiter {
    exclusive: bool,
    tx: oneshot::Sender<LockGuard>,
}

#[derive(Default)]
struct Holders {
    shared: u32,
    exclusive: bool,
    queue: VecDeque<Waiter>,
}

impl Holders {
    fn can_take(&self, exclusive: bool) -> bool {
        !self.exclusive && (!exclusive || self.shared == 0)
    }
    fn take(&mut self, exclusive: bool) {
        if exclusive {
            self.exclusive = true;
        } else {
            self.shared += 1;
        }
    }
    fn release(&mut self, exclusive: bool) {
        if exclusive {
            self.exclusive = false;
        } else {
            self.shared = self.shared.saturating_sub(1);
        }
    }
    fn idle(&self) -> bool {
        !self.exclusive && self.shared == 0 && self.queue.is_empty()
    }
}

/// A table of named locks.
#[derive(Default)]
pub struct LockTable {
    held: Mutex<HashMap<String, Holders>>,
}

impl std::fmt::Debug for LockTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockTable")
            .field("keys", &lock_map(&self.held).len())
            .finish()
    }
}

/// Releases its lock on drop (and hands it to the next queued waiter).
#[derive(Debug)]
pub struct LockGuard {
    table: Arc<LockTable>,
    key: String,
    exclusive: bool,
    /// False for a guard that was never handed out (its holder count was undone).
    armed: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.armed {
            self.table.release(&self.key, self.exclusive);
        }
    }
}

fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The real-time budget of a `timeout_ms` wait. At tiny time scales every holder's sleep is
/// stretched to the timer granularity (~1 ms), so the wait is floored at 10 µs real per
/// simulated ms; otherwise contention that PVE survives would time out here.
fn real_budget(clock: &SimClock, timeout_ms: u64) -> Duration {
    clock
        .real(timeout_ms)
        .max(Duration::from_micros(timeout_ms.saturating_mul(10)))
}

impl LockTable {
    fn try_take(&self, key: &str, exclusive: bool) -> bool {
        let mut held = lock_map(&self.held);
        let h = held.entry(key.to_string()).or_default();
        if h.can_take(exclusive) && h.queue.is_empty() {
            h.take(exclusive);
            true
        } else {
            if h.idle() {
                held.remove(key);
            }
            false
        }
    }

    fn release(self: &Arc<Self>, key: &str, exclusive: bool) {
        let mut held = lock_map(&self.held);
        let Some(h) = held.get_mut(key) else { return };
        h.release(exclusive);
        // Serve the queue in order while the head can take the lock.
        while let Some(w) = h.queue.front() {
            if !h.can_take(w.exclusive) {
                break;
            }
            let Some(w) = h.queue.pop_front() else { break };
            h.take(w.exclusive);
            let guard = LockGuard {
                table: Arc::clone(self),
                key: key.to_string(),
                exclusive: w.exclusive,
                armed: true,
            };
            if let Err(mut g) = w.tx.send(guard) {
                // the waiter gave up (timed out or was dropped): undo without re-entering
                g.armed = false;
                h.release(w.exclusive);
            }
        }
        if h.idle() {
            held.remove(key);
        }
    }

    /// Whether anyone holds `key`.
    pub fn is_held(&self, key: &str) -> bool {
        lock_map(&self.held)
            .get(key)
            .is_some_and(|h| h.exclusive || h.shared > 0)
    }

    /// Waiters queued on `key`.
    pub fn waiting(&self, key: &str) -> usize {
        lock_map(&self.held)
            .get(key)
            .map(|h| h.queue.len())
            .unwrap_or(0)
    }

    /// A flock: take `key` at once if it is free and nobody queues, else queue behind the
    /// earlier waiters for up to `timeout_ms` simulated milliseconds. `Err(())` = timeout.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &str,
        exclusive: bool,
        timeout_ms: u64,
        clock: &SimClock,
    ) -> Result<LockGuard, ()> {
        let rx = {
            let mut held = lock_map(&self.held);
            let h = held.entry(key.to_string()).or_default();
            if h.can_take(exclusive) && h.queue.is_empty() {
                h.take(exclusive);
                return Ok(LockGuard {
                    table: Arc::clone(self),
                    key: key.to_string(),
                    exclusive,
                    armed: true,
                });
            }
            let (tx, rx) = oneshot::channel();
            h.queue.push_back(Waiter { exclusive, tx });
            rx
        };
        match tokio::time::timeout(real_budget(clock, timeout_ms), rx).await {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                // Timed out: leave the queue (a grant racing with the timeout is undone when
                // its send fails because the receiver is gone).
                let mut held = lock_map(&self.held);
                if let Some(h) = held.get_mut(key) {
                    h.queue.retain(|w| !w.tx.is_closed());
                    if h.idle() {
                        held.remove(key);
                    }
                }
                Err(())
            }
        }
    }

    /// A pmxcfs lock (`$cfs_lock`): try to take `key` exclusively; while it is held, sleep
    /// `min(remaining s, 10) × 100 ms` simulated and try again, until `timeout_ms` has passed.
    /// No queue: whoever tries first while it is free takes it. `Err(())` = timeout.
    pub async fn acquire_cfs(
        self: &Arc<Self>,
        key: &str,
        timeout_ms: u64,
        clock: &SimClock,
    ) -> Result<LockGuard, ()> {
        let started = Instant::now();
        let budget = real_budget(clock, timeout_ms);
        // real time per simulated ms of budget (≥ the clock's, see `real_budget`)
        let real_per_ms = budget.as_secs_f64() / timeout_ms.max(1) as f64;
        let timeout_s = (timeout_ms / 1000).max(1);
        loop {
            if self.try_take(key, true) {
                return Ok(LockGuard {
                    table: Arc::clone(self),
                    key: key.to_string(),
                    exclusive: true,
                    armed: true,
                });
            }
            let slept_ms = (started.elapsed().as_secs_f64() / real_per_ms) as u64;
            let remaining_s = timeout_s.saturating_sub(slept_ms / 1000).max(1);
            let sleep_ms = remaining_s.min(10) * 100;
            if (slept_ms + sleep_ms) / 1000 >= timeout_s {
                return Err(());
            }
            tokio::time::sleep(Duration::from_secs_f64(sleep_ms as f64 * real_per_ms)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_locks_coexist_and_block_exclusive() {
        let t = Arc::new(LockTable::default());
        let c = SimClock::new(0.001);
        let a = t.acquire("k", false, 100, &c).await.unwrap();
        let _b = t.acquire("k", false, 100, &c).await.unwrap();
        assert!(t.acquire("k", true, 100, &c).await.is_err());
        drop(a);
        drop(_b);
        let _x = t.acquire("k", true, 100, &c).await.unwrap();
        assert!(t.acquire("k", false, 100, &c).await.is_err());
    }

    #[tokio::test]
    async fn flock_waiters_are_served_in_order() {
        let t = Arc::new(LockTable::default());
        let c = SimClock::new(0.001);
        let first = t.acquire("k", true, 10_000, &c).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (t2, c, order) = (Arc::clone(&t), c.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _g = t2.acquire("k", true, 10_000, &c).await.unwrap();
                lock_map(&order).push(i);
            }));
            // queue them in a known order
            while t.waiting("k") < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*lock_map(&order), vec![0, 1, 2, 3, 4]);
        assert!(!t.is_held("k"));
    }

    #[tokio::test]
    async fn a_timed_out_waiter_leaves_the_queue_and_the_lock_still_passes_on() {
        let t = Arc::new(LockTable::default());
        let c = SimClock::new(0.001);
        let first = t.acquire("k", true, 10_000, &c).await.unwrap();
        assert!(t.acquire("k", true, 50, &c).await.is_err());
        assert_eq!(t.waiting("k"), 0);
        drop(first);
        assert!(t.acquire("k", true, 50, &c).await.is_ok());
    }

    #[tokio::test]
    async fn a_cfs_lock_held_past_the_timeout_times_out() {
        let t = Arc::new(LockTable::default());
        let c = SimClock::new(0.001);
        let _held = t.acquire_cfs("storage-x", 10_000, &c).await.unwrap();
        let started = Instant::now();
        assert!(t.acquire_cfs("storage-x", 10_000, &c).await.is_err());
        assert!(started.elapsed() >= real_budget(&c, 9_000));
    }
}
