//! The one retry policy of the engine: jittered exponential backoff bounded by attempts and by
//! elapsed time, cancellable, used for every retry and every poll loop of every client (the
//! Proxmox client and executor today, the NetBox client next).
//!
//! A client adopts it by sorting its errors into three [`Disposition`]s through the small
//! [`Classify`] trait:
//! - **transient**: nothing happened on the server (or resending is idempotent): wait, retry;
//! - **outcome unknown**: a write may or may not have taken effect (reset, 595/596 on a write,
//!   unreadable task status): the caller must re-read before anything is resent, so the policy
//!   never retries it;
//! - **permanent**: retrying cannot help: fail at once with the server's text.
//!
//! Knows nothing about Proxmox, NetBox or HyOps: no client type appears here.

use std::future::Future;
use std::time::{Duration, Instant};

pub use tokio_util::sync::CancellationToken;

/// What a failed call means for the next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Retry with backoff: the server did nothing, or repeating the call is harmless.
    Transient,
    /// A write may have happened: re-read the server's state before resending anything.
    OutcomeUnknown,
    /// Fail now: repeating the call gives the same answer.
    Permanent,
}

/// Errors that know their [`Disposition`]. Implement it for any client's error type.
pub trait Classify {
    /// How the policy treats this error.
    fn disposition(&self) -> Disposition;
}

/// Jittered exponential backoff with an attempt and an elapsed-time budget.
///
/// Delays start at `initial` and grow by `multiplier` up to `max_interval`; each is spread
/// uniformly over ±`jitter` (a fraction, 0.25 = ±25 %). A retry is made only while the next
/// delay still ends within `max_elapsed` of the first attempt and fewer than `max_attempts`
/// attempts were made (`0` = no attempt limit, time only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest single delay.
    pub max_interval: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Relative spread of each delay, 0.0–1.0.
    pub jitter: f64,
    /// Time budget from the first attempt.
    pub max_elapsed: Duration,
    /// Attempt budget (`0` = unlimited within `max_elapsed`).
    pub max_attempts: u32,
    /// Attempts always made before the time budget can end the retries (`0` = none). Set by
    /// [`RetryPolicy::scaled`]: scaling shrinks the waits, never the number of tries, since an
    /// attempt's own latency (network, CPU) does not shrink with a simulator's clock.
    pub min_attempts: u32,
}

impl Default for RetryPolicy {
    /// 200 ms doubling to 5 s, ±25 %, for at most 30 s: the budget for idempotent reads.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max_interval: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.25,
            max_elapsed: Duration::from_secs(30),
            max_attempts: 0,
            min_attempts: 0,
        }
    }
}

/// Why a retried or polled operation stopped without a value.
#[derive(Debug)]
pub enum RetryError<E> {
    /// A permanent or outcome-unknown error: returned at once, never retried.
    Final {
        /// The error.
        error: E,
        /// Attempts made, this one included.
        attempts: u32,
    },
    /// Transient errors (or, when polling, "not yet") until the budget ran out.
    GaveUp {
        /// The last transient error; `None` when polling saw only "not yet".
        last: Option<E>,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
    },
    /// The cancellation token fired.
    Cancelled {
        /// The last error seen, if any.
        last: Option<E>,
        /// Attempts made.
        attempts: u32,
    },
}

impl<E> RetryError<E> {
    /// The last error, if one was seen.
    pub fn last(&self) -> Option<&E> {
        match self {
            RetryError::Final { error, .. } => Some(error),
            RetryError::GaveUp { last, .. } | RetryError::Cancelled { last, .. } => last.as_ref(),
        }
    }
    /// The last error, if one was seen.
    pub fn into_last(self) -> Option<E> {
        match self {
            RetryError::Final { error, .. } => Some(error),
            RetryError::GaveUp { last, .. } | RetryError::Cancelled { last, .. } => last,
        }
    }
    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Final { attempts, .. }
            | RetryError::GaveUp { attempts, .. }
            | RetryError::Cancelled { attempts, .. } => *attempts,
        }
    }
    /// True when the token fired.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, RetryError::Cancelled { .. })
    }
}

/// A value with the number of attempts it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted<T> {
    /// The value.
    pub value: T,
    /// Attempts (or polls) made, the successful one included.
    pub attempts: u32,
}

impl RetryPolicy {
    /// A policy that tries once.
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Every duration multiplied by `factor` (for simulators running faster than real time);
    /// delays never go below 1 ms. `factor` ≤ 0 or not finite leaves the policy unchanged.
    pub fn scaled(self, factor: f64) -> Self {
        if !(factor.is_finite() && factor > 0.0) {
            return self;
        }
        let s = |d: Duration| d.mul_f64(factor).max(Duration::from_millis(1));
        RetryPolicy {
            initial: s(self.initial),
            max_interval: s(self.max_interval),
            max_elapsed: self.max_elapsed.mul_f64(factor),
            min_attempts: if factor < 1.0 {
                self.min_attempts.max(self.attempts_in_budget())
            } else {
                self.min_attempts
            },
            ..self
        }
    }

    /// How many attempts the undithered schedule fits into `max_elapsed` when attempts take
    /// no time (at most `max_attempts` when set; capped at 64).
    pub fn attempts_in_budget(&self) -> u32 {
        let cap = if self.max_attempts == 0 {
            64
        } else {
            self.max_attempts.min(64)
        };
        let budget = self.max_elapsed.as_secs_f64();
        let mut waited = 0.0;
        let mut n = 1;
        while n < cap {
            waited += self.base_delay(n).as_secs_f64();
            if waited > budget {
                break;
            }
            n += 1;
        }
        n
    }

    /// The undithered delay before attempt `n + 1` (n ≥ 1).
    pub fn base_delay(&self, n: u32) -> Duration {
        let m = self.multiplier.max(1.0);
        let exp = m.powi(n.saturating_sub(1).min(60) as i32);
        let d = self.initial.as_secs_f64() * exp;
        Duration::from_secs_f64(d.min(self.max_interval.as_secs_f64()))
    }

    fn jittered(&self, d: Duration) -> Duration {
        let j = self.jitter.clamp(0.0, 1.0);
        if j == 0.0 {
            return d;
        }
        let f = 1.0 - j + 2.0 * j * rand::random::<f64>();
        d.mul_f64(f)
    }

    /// The delay to sleep before the next attempt, or `None` when the budget is spent.
    fn next_delay(&self, attempts: u32, started: Instant) -> Option<Duration> {
        if self.max_attempts != 0 && attempts >= self.max_attempts {
            return None;
        }
        let elapsed = started.elapsed();
        let d = self.jittered(self.base_delay(attempts));
        if attempts < self.min_attempts {
            return Some(d);
        }
        if elapsed >= self.max_elapsed {
            return None;
        }
        // The last wait is cut short so one more attempt lands at the deadline.
        Some(d.min(self.max_elapsed.saturating_sub(elapsed)))
    }

    /// Run `op` until it succeeds, fails with a non-transient error, or the budget is spent.
    pub async fn retry<T, E, F, Fut>(&self, op: F) -> Result<Attempted<T>, RetryError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.retry_with(None, |_, _| {}, op).await
    }

    /// [`RetryPolicy::retry`] with a cancellation token (checked before each attempt and
    /// during every wait and attempt) and a callback told of each transient error before its
    /// wait (`attempt` is the 1-based number of the attempt that failed).
    pub async fn retry_with<T, E, F, Fut>(
        &self,
        cancel: Option<&CancellationToken>,
        mut on_retry: impl FnMut(&E, u32),
        mut op: F,
    ) -> Result<Attempted<T>, RetryError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut last: Option<E> = None;
        loop {
            if cancel.is_some_and(|c| c.is_cancelled()) {
                return Err(RetryError::Cancelled { last, attempts });
            }
            attempts += 1;
            let Some(result) = attempt(cancel, op()).await else {
                return Err(RetryError::Cancelled { last, attempts });
            };
            let e = match result {
                Ok(value) => return Ok(Attempted { value, attempts }),
                Err(e) => e,
            };
            if e.disposition() != Disposition::Transient {
                return Err(RetryError::Final { error: e, attempts });
            }
            let Some(delay) = self.next_delay(attempts, started) else {
                return Err(RetryError::GaveUp {
                    last: Some(e),
                    attempts,
                    elapsed: started.elapsed(),
                });
            };
            on_retry(&e, attempts);
            last = Some(e);
            if !sleep_or_cancel(delay, cancel).await {
                return Err(RetryError::Cancelled { last, attempts });
            }
        }
    }

    /// Poll `op` until it yields `Some`, with the same schedule: `Ok(None)` ("not yet") and
    /// transient errors wait and poll again until the budget is spent; other errors end the
    /// poll at once.
    pub async fn poll<T, E, F, Fut>(
        &self,
        cancel: Option<&CancellationToken>,
        mut op: F,
    ) -> Result<Attempted<T>, RetryError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut last: Option<E> = None;
        loop {
            if cancel.is_some_and(|c| c.is_cancelled()) {
                return Err(RetryError::Cancelled { last, attempts });
            }
            attempts += 1;
            let Some(result) = attempt(cancel, op()).await else {
                return Err(RetryError::Cancelled { last, attempts });
            };
            match result {
                Ok(Some(value)) => return Ok(Attempted { value, attempts }),
                Ok(None) => last = None,
                Err(e) if e.disposition() == Disposition::Transient => last = Some(e),
                Err(e) => return Err(RetryError::Final { error: e, attempts }),
            }
            let Some(delay) = self.next_delay(attempts, started) else {
                return Err(RetryError::GaveUp {
                    last,
                    attempts,
                    elapsed: started.elapsed(),
                });
            };
            if !sleep_or_cancel(delay, cancel).await {
                return Err(RetryError::Cancelled { last, attempts });
            }
        }
    }
}

/// Run one attempt; `None` when the token fired first.
async fn attempt<R>(cancel: Option<&CancellationToken>, fut: impl Future<Output = R>) -> Option<R> {
    match cancel {
        Some(c) => tokio::select! {
            r = fut => Some(r),
            _ = c.cancelled() => None,
        },
        None => Some(fut.await),
    }
}

/// Sleep `d`; false when the token fired first.
pub async fn sleep_or_cancel(d: Duration, cancel: Option<&CancellationToken>) -> bool {
    match cancel {
        Some(c) => tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = c.cancelled() => false,
        },
        None => {
            tokio::time::sleep(d).await;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    struct E(Disposition);
    impl Classify for E {
        fn disposition(&self) -> Disposition {
            self.0
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(2),
            jitter: 0.0,
            max_elapsed: Duration::from_secs(5),
            max_attempts: 4,
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn a_scaled_policy_keeps_its_attempts_when_each_attempt_is_slower_than_the_scaled_budget()
    {
        // 200 ms doubling to 5 s within 30 s: waits 0.2+0.4+0.8+1.6+3.2+5×4 = 26.2 s fit, so
        // 10 attempts. Scaled by 0.002 the budget is 60 ms; attempts that each take 20 ms (a
        // loaded machine) must still get all 10 tries.
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.attempts_in_budget(), 10);
        let scaled = p.scaled(0.002);
        let n = AtomicU32::new(0);
        let r: Result<Attempted<()>, _> = scaled
            .retry(|| async {
                n.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(E(Disposition::Transient))
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 10);
        assert!(matches!(r, Err(RetryError::GaveUp { attempts: 10, .. })));
    }

    #[test]
    fn an_unscaled_policy_has_no_attempt_floor() {
        assert_eq!(RetryPolicy::default().scaled(1.0).min_attempts, 0);
        assert_eq!(fast().attempts_in_budget(), 4, "capped by max_attempts");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_attempt_budget() {
        let n = AtomicU32::new(0);
        let r: Result<Attempted<()>, _> = fast()
            .retry(|| async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(E(Disposition::Transient))
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 4);
        assert!(matches!(r, Err(RetryError::GaveUp { attempts: 4, .. })));
    }

    #[tokio::test]
    async fn permanent_and_unknown_outcomes_are_never_retried() {
        for d in [Disposition::Permanent, Disposition::OutcomeUnknown] {
            let n = AtomicU32::new(0);
            let r: Result<Attempted<()>, _> = fast()
                .retry(|| async {
                    n.fetch_add(1, Ordering::SeqCst);
                    Err(E(d))
                })
                .await;
            assert_eq!(n.load(Ordering::SeqCst), 1, "{d:?}");
            assert!(matches!(r, Err(RetryError::Final { attempts: 1, .. })));
        }
    }

    #[tokio::test]
    async fn success_after_transient_errors_reports_the_attempts() {
        let n = AtomicU32::new(0);
        let r = fast()
            .retry(|| async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(E(Disposition::Transient))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(
            r,
            Attempted {
                value: 7,
                attempts: 3
            }
        );
    }

    #[tokio::test]
    async fn the_time_budget_ends_polling_even_without_an_attempt_limit() {
        let p = RetryPolicy {
            max_attempts: 0,
            max_elapsed: Duration::from_millis(30),
            ..fast()
        };
        let r: Result<Attempted<()>, RetryError<E>> = p.poll(None, || async { Ok(None) }).await;
        match r {
            Err(RetryError::GaveUp { last, attempts, .. }) => {
                assert!(last.is_none());
                assert!(attempts > 3, "{attempts}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn polling_keeps_going_through_transient_errors() {
        let n = AtomicU32::new(0);
        let r = RetryPolicy {
            max_attempts: 0,
            ..fast()
        }
        .poll(None, || async {
            match n.fetch_add(1, Ordering::SeqCst) {
                0..=4 => Err(E(Disposition::Transient)),
                5 => Ok(None),
                _ => Ok(Some("done")),
            }
        })
        .await
        .unwrap();
        assert_eq!(r.value, "done");
        assert_eq!(r.attempts, 7);
    }

    #[tokio::test]
    async fn cancellation_stops_a_wait_at_once() {
        let token = CancellationToken::new();
        let p = RetryPolicy {
            initial: Duration::from_secs(60),
            max_interval: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(600),
            max_attempts: 0,
            ..fast()
        };
        let t2 = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t2.cancel();
        });
        let started = Instant::now();
        let r: Result<Attempted<()>, _> = p
            .retry_with(
                Some(&token),
                |_, _| {},
                || async { Err(E(Disposition::Transient)) },
            )
            .await;
        assert!(matches!(r, Err(RetryError::Cancelled { attempts: 1, .. })));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn delays_double_up_to_the_cap_and_scale_with_simulated_time() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max_interval: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        let d: Vec<u128> = (1..=4).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
        let s = p.scaled(0.01);
        assert_eq!(s.initial, Duration::from_millis(1));
        assert_eq!(s.max_elapsed, Duration::from_millis(300));
    }
}
