//! The NetBox client's retry policy, in one place so it can move onto the engine's shared
//! retry policy type when that lands: up to 5 attempts, waits of `base·2^n` capped at `cap`
//! plus up to 250 ms of jitter, and a 429's `Retry-After` (seconds) honoured up to `cap`
//! (contract §4.4, `netbox_api._send`). Which calls may be retried is decided by the client,
//! not here. Knows nothing about HTTP.

use std::time::Duration;

/// Statuses worth another attempt (upstream `_RETRY_STATUS_CODES`).
pub const RETRY_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];

/// Bounded exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (upstream: 5).
    pub max_attempts: u32,
    /// First wait (upstream: 0.5 s).
    pub base: Duration,
    /// Longest single wait, also the cap on `Retry-After` (upstream: 10 s).
    pub cap: Duration,
    /// Random extra wait added to every computed backoff (upstream: 0–0.25 s).
    pub jitter: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            jitter: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (one attempt).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before attempt `attempt + 1` (0-based `attempt` just failed). A server
    /// `Retry-After` wins over the computed backoff, capped at `cap`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.cap);
        }
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.cap);
        let jitter_ms = self.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        };
        exp + Duration::from_millis(extra)
    }
}

/// Parse a `Retry-After` header given in seconds (the HTTP-date form is not used by NetBox
/// or the proxies in front of it; it is ignored, falling back to the computed backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            jitter: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(0, None), Duration::from_millis(500));
        assert_eq!(p.delay(1, None), Duration::from_secs(1));
        assert_eq!(p.delay(3, None), Duration::from_secs(4));
        assert_eq!(p.delay(10, None), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
