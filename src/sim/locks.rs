//! Simulated flocks: node-local config locks (`lock-<vmid>.conf`, shared or exclusive) and
//! storage locks, each acquired with a timeout in simulated time. Knows nothing about HTTP or
//! what the locks protect.

use super::latency::SimClock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default, Debug)]
struct Holders {
    shared: u32,
    exclusive: bool,
}

/// A table of named locks.
#[derive(Default, Debug)]
pub struct LockTable {
    held: Mutex<HashMap<String, Holders>>,
}

/// Releases its lock on drop.
#[derive(Debug)]
pub struct LockGuard {
    table: Arc<LockTable>,
    key: String,
    exclusive: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mut held = lock_map(&self.table.held);
        if let Some(h) = held.get_mut(&self.key) {
            if self.exclusive {
                h.exclusive = false;
            } else {
                h.shared = h.shared.saturating_sub(1);
            }
            if !h.exclusive && h.shared == 0 {
                held.remove(&self.key);
            }
        }
    }
}

fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl LockTable {
    fn try_take(&self, key: &str, exclusive: bool) -> bool {
        let mut held = lock_map(&self.held);
        let h = held.entry(key.to_string()).or_default();
        if h.exclusive || (exclusive && h.shared > 0) {
            return false;
        }
        if exclusive {
            h.exclusive = true;
        } else {
            h.shared += 1;
        }
        true
    }

    /// Whether anyone holds `key`.
    pub fn is_held(&self, key: &str) -> bool {
        lock_map(&self.held).contains_key(key)
    }

    /// Acquire `key`, waiting up to `timeout_ms` simulated milliseconds. `Err(())` = timeout.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &str,
        exclusive: bool,
        timeout_ms: u64,
        clock: &SimClock,
    ) -> Result<LockGuard, ()> {
        // Wait against a real-time deadline. At tiny time scales every holder's sleep is
        // stretched to the timer granularity (~1 ms), so the wait is floored at 10 µs real per
        // simulated ms; otherwise contention that PVE survives would time out here.
        let wait = clock.real(timeout_ms).max(std::time::Duration::from_micros(
            timeout_ms.saturating_mul(10),
        ));
        let deadline = std::time::Instant::now() + wait;
        let step = clock
            .real((timeout_ms / 50).max(1))
            .max(std::time::Duration::from_micros(200));
        loop {
            if self.try_take(key, exclusive) {
                return Ok(LockGuard {
                    table: Arc::clone(self),
                    key: key.to_string(),
                    exclusive,
                });
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(());
            }
            tokio::time::sleep(step.min(deadline - now)).await;
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
}
