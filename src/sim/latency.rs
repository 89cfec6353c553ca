//! Simulated time: per-operation base durations, clone time from disk size and storage
//! bandwidth, lock timeouts, per-node task slots and the `time_scale` that maps simulated
//! milliseconds to real ones. Knows nothing about HTTP or the VM model.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Durations in simulated milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LatencyModel {
    /// Every synchronous request.
    pub request_ms: u64,
    /// Extra delay for a failed authentication or login: PVE delays every 401 by 3 s
    /// (pve-http-server `AnyEvent.pm` 1618, 1038; API notes §0).
    pub auth_failure_ms: u64,
    /// Fixed part of any clone task.
    pub clone_base_ms: u64,
    /// Creating one linked-clone volume (under the storage lock).
    pub linked_clone_ms: u64,
    /// Allocating one volume (under the storage lock).
    pub storage_alloc_ms: u64,
    pub config_ms: u64,
    pub resize_ms: u64,
    pub start_ms: u64,
    pub shutdown_ms: u64,
    pub stop_ms: u64,
    pub destroy_ms: u64,
    pub cloudinit_ms: u64,
    /// Time after start until the guest agent answers.
    pub boot_delay_ms: u64,
    /// Time after start until the guest's sshd accepts connections (cloud-init has written
    /// the keys by then); each VM adds a stable share of `ssh_boot_jitter_ms`.
    pub ssh_boot_ms: u64,
    pub ssh_boot_jitter_ms: u64,
    /// Storage lock acquire timeout (`cluster_lock_storage`, 10 s).
    pub storage_lock_timeout_ms: u64,
    /// Config flock timeout in the clone worker (1 s).
    pub clone_lock_timeout_ms: u64,
    /// Config flock timeout for `lock_config` (10 s).
    pub config_lock_timeout_ms: u64,
    /// Concurrent workers per node; further tasks queue.
    pub node_task_slots: usize,
}

impl Default for LatencyModel {
    fn default() -> Self {
        Self {
            request_ms: 5,
            auth_failure_ms: 3000,
            clone_base_ms: 1500,
            linked_clone_ms: 800,
            storage_alloc_ms: 300,
            config_ms: 200,
            resize_ms: 400,
            start_ms: 2500,
            shutdown_ms: 4000,
            stop_ms: 800,
            destroy_ms: 1200,
            cloudinit_ms: 300,
            boot_delay_ms: 15000,
            ssh_boot_ms: 18000,
            ssh_boot_jitter_ms: 6000,
            storage_lock_timeout_ms: 10_000,
            clone_lock_timeout_ms: 1000,
            config_lock_timeout_ms: 10_000,
            node_task_slots: 16,
        }
    }
}

impl LatencyModel {
    /// Simulated time to copy `bytes` at `bandwidth_mbs` MB/s.
    pub fn copy_ms(bytes: u64, bandwidth_mbs: f64) -> u64 {
        let mb = bytes as f64 / 1_000_000.0;
        (mb / bandwidth_mbs.max(0.001) * 1000.0) as u64
    }
}

/// Maps simulated time to real time.
#[derive(Debug, Clone)]
pub struct SimClock {
    time_scale: f64,
    origin: Instant,
    /// Simulated milliseconds already on the clock when it started (see [`SimClock::resumed`]).
    offset_ms: f64,
}

impl SimClock {
    /// `time_scale` 1.0 = real time, 0.001 = a thousand times faster. Negative or NaN
    /// scales are treated as 0 (no waiting).
    pub fn new(time_scale: f64) -> Self {
        let time_scale = if time_scale.is_finite() && time_scale > 0.0 {
            time_scale
        } else {
            0.0
        };
        Self {
            time_scale,
            origin: Instant::now(),
            offset_ms: 0.0,
        }
    }

    /// A clock that starts at `at_ms` simulated milliseconds instead of 0: a simulator
    /// resumed from a saved state, whose running VMs were started before it (at 0) and have
    /// booted by `at_ms`.
    pub fn resumed(time_scale: f64, at_ms: u64) -> Self {
        Self {
            offset_ms: at_ms as f64,
            ..Self::new(time_scale)
        }
    }

    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Real duration of `sim_ms` simulated milliseconds.
    pub fn real(&self, sim_ms: u64) -> Duration {
        Duration::from_secs_f64(sim_ms as f64 / 1000.0 * self.time_scale)
    }

    /// Real duration of `sim_ms` simulated milliseconds (fractional).
    pub fn real_f64(&self, sim_ms: f64) -> Duration {
        Duration::from_secs_f64((sim_ms.max(0.0) / 1000.0 * self.time_scale).min(1e9))
    }

    /// Simulated milliseconds since the simulator started, fractional.
    pub fn now_ms_f64(&self) -> f64 {
        if self.time_scale == 0.0 {
            return (u64::MAX / 4) as f64;
        }
        self.offset_ms + self.origin.elapsed().as_secs_f64() * 1000.0 / self.time_scale
    }

    /// Simulated milliseconds since the simulator started (plus the resumed offset).
    pub fn now_ms(&self) -> u64 {
        if self.time_scale == 0.0 {
            return u64::MAX / 4;
        }
        self.now_ms_f64() as u64
    }

    /// Sleep for `sim_ms` simulated milliseconds.
    pub async fn sleep(&self, sim_ms: u64) {
        let d = self.real(sim_ms);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_time_is_proportional_to_size_over_bandwidth() {
        assert_eq!(LatencyModel::copy_ms(400_000_000, 400.0), 1000);
        assert_eq!(LatencyModel::copy_ms(800_000_000, 400.0), 2000);
    }

    #[test]
    fn a_resumed_clock_starts_at_its_offset() {
        let c = SimClock::resumed(1.0, 30_000);
        assert!(c.now_ms() >= 30_000 && c.now_ms() < 40_000);
        assert!(SimClock::new(1.0).now_ms() < 10_000);
    }

    #[test]
    fn time_scale_shrinks_real_durations() {
        let c = SimClock::new(0.001);
        assert_eq!(c.real(10_000), Duration::from_millis(10));
        assert_eq!(SimClock::new(-1.0).real(10_000), Duration::ZERO);
    }
}
