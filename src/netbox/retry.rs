//! How the NetBox client uses the engine's one retry policy ([`crate::retry::RetryPolicy`]):
//! upstream's schedule as the default (5 attempts, 0.5 s doubling to 10 s, with jitter;
//! contract §4.4 `netbox_api._send`), the statuses worth another attempt, a 429's
//! `Retry-After` (seconds) honoured as the least wait, and the classification of a failed
//! call into the policy's dispositions. Knows nothing about HTTP beyond status codes.

use std::time::Duration;

use crate::retry::{Classify, Disposition, RetryPolicy};

use super::error::NetboxError;

/// Statuses worth another attempt (upstream `_RETRY_STATUS_CODES`).
pub const RETRY_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];

/// Upstream's NetBox schedule on the engine's policy: 5 attempts, 0.5 s doubling up to
/// 10 s (±25 %), within one minute.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(500),
        max_interval: Duration::from_secs(10),
        multiplier: 2.0,
        jitter: 0.25,
        max_elapsed: Duration::from_secs(60),
        max_attempts: 5,
        min_attempts: 0,
    }
}

/// Parse a `Retry-After` header given in seconds (the HTTP-date form is not used by NetBox
/// or the proxies in front of it; it is ignored, falling back to the computed backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A failed NetBox call with what the call was: an idempotent one (GET, PATCH of fixed
/// values, DELETE) is retried on transport errors and 429/5xx; a create is retried only
/// when NetBox certainly did not act (429, a connection never made), and anything else
/// after the request left is an unknown outcome the caller resolves by re-reading.
#[derive(Debug)]
pub(crate) struct CallError {
    pub error: NetboxError,
    pub idempotent: bool,
}

impl Classify for CallError {
    fn disposition(&self) -> Disposition {
        let status_retry = |s: u16| RETRY_STATUSES.contains(&s);
        match (&self.error, self.idempotent) {
            (NetboxError::Transport { .. }, true) => Disposition::Transient,
            (NetboxError::Transport { connect: true, .. }, false) => Disposition::Transient,
            (NetboxError::Transport { .. }, false) => Disposition::OutcomeUnknown,
            (NetboxError::Api { status, .. }, true) if status_retry(*status) => {
                Disposition::Transient
            }
            (NetboxError::Api { status: 429, .. }, false) => Disposition::Transient,
            (NetboxError::Api { status, .. }, false) if *status >= 500 => {
                Disposition::OutcomeUnknown
            }
            _ => Disposition::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(status: u16) -> NetboxError {
        NetboxError::Api {
            method: "POST".into(),
            path: "/x/".into(),
            status,
            detail: String::new(),
            body: Box::new(json!({})),
        }
    }

    #[test]
    fn creates_retry_only_when_netbox_did_not_act() {
        let c = |e, idempotent| {
            CallError {
                error: e,
                idempotent,
            }
            .disposition()
        };
        assert_eq!(c(api(429), false), Disposition::Transient);
        assert_eq!(c(api(502), false), Disposition::OutcomeUnknown);
        assert_eq!(c(api(400), false), Disposition::Permanent);
        assert_eq!(c(api(503), true), Disposition::Transient);
        assert_eq!(c(api(404), true), Disposition::Permanent);
        let refused = NetboxError::Transport {
            method: "POST".into(),
            path: "/x/".into(),
            connect: true,
            write: true,
            detail: String::new(),
        };
        assert_eq!(c(refused, false), Disposition::Transient);
    }

    #[test]
    fn retry_after_in_seconds_is_parsed_and_dates_are_ignored() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn the_default_schedule_is_upstreams() {
        let p = default_policy();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.base_delay(1), Duration::from_millis(500));
        assert_eq!(p.base_delay(3), Duration::from_secs(2));
        assert_eq!(p.base_delay(9), Duration::from_secs(10));
    }
}
