//! Executor steps as units: one module per step (`clone`, `config`, `resize`, `start`,
//! `readiness`, `remove`), all run by [`run_step`] (journal `start`/`end` lines, progress,
//! scheduler permits held per attempt, lock timeouts absorbed by backing off, the
//! cancellation token, and the one [`RetryPolicy`]) and all writing through
//! [`submit_wait_confirm`]: submit, wait for the task (batched per node), and when the outcome
//! is unknown re-read before anything is resent. A new step (restart for pending config,
//! post-apply verification, …) is a new module using the same two functions.
//!
//! Every request is counted by the client in the VM's call account (the pipeline runs in
//! it), so a step's `api_calls` is exact: retries, confirmations and log reads included.
//!
//! Steps know the plan's desired model and the Proxmox client; they must not know about
//! HyOps state, evidence files or flags.

pub(crate) mod clone;
pub(crate) mod config;
pub(crate) mod migrate;
pub(crate) mod readiness;
pub(crate) mod remove;
pub(crate) mod resize;
pub(crate) mod restart;
pub(crate) mod start;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::apply::executor::{Executor, ProgressEvent, StepError};
use crate::apply::journal::{now_ts, JournalEvent};
use crate::apply::limits::{Permits, Place};
use crate::pve::{CallAccount, ErrorClass, PveError, PveResult, Upid, WaitOptions};
use crate::retry::{Classify, Disposition, RetryError, RetryPolicy};

/// Per-VM context of a pipeline: identity, its call account, the executor.
pub(crate) struct VmCtx<'a> {
    pub key: String,
    pub vmid: Option<u32>,
    pub node: String,
    /// Every request of this VM's pipeline (the client counts them).
    pub account: Arc<CallAccount>,
    pub exec: &'a Executor,
}

impl<'a> VmCtx<'a> {
    pub fn new(exec: &'a Executor, key: &str, vmid: Option<u32>, node: &str) -> Self {
        VmCtx {
            key: key.to_string(),
            vmid,
            node: node.to_string(),
            account: CallAccount::new(),
            exec,
        }
    }
    pub fn vmid_str(&self) -> String {
        self.vmid
            .map(|v| v.to_string())
            .unwrap_or_else(|| "new".into())
    }
    pub fn calls(&self) -> u64 {
        self.account.calls()
    }
    fn fail(&self, step: &'static str, cause: StepCause) -> StepError {
        match cause {
            StepCause::Pve(source) => StepError::Pve {
                step,
                key: self.key.clone(),
                vmid: self.vmid_str(),
                node: self.node.clone(),
                source: Box::new(source),
            },
            StepCause::Other(detail) => self.other(step, detail),
        }
    }
    pub fn other(&self, step: &'static str, detail: String) -> StepError {
        StepError::Other {
            step,
            key: self.key.clone(),
            vmid: self.vmid_str(),
            node: self.node.clone(),
            detail,
        }
    }
    fn cancelled(&self, step: &'static str) -> StepError {
        StepError::Cancelled {
            step,
            key: self.key.clone(),
            vmid: self.vmid_str(),
            after: String::new(),
        }
    }
    pub fn journal(&self, action: &str, event: &str, end: Option<StepEnd>) {
        let end = end.unwrap_or_default();
        self.exec.journal.record(JournalEvent {
            v: 0,
            ts: now_ts(),
            run_id: String::new(),
            vm: self.key.clone(),
            vmid: self.vmid,
            node: Some(self.node.clone()),
            action: action.to_string(),
            event: event.to_string(),
            result: end.result.map(str::to_string),
            duration_ms: end.started.map(|s| s.elapsed().as_millis() as u64),
            attempts: end.attempts,
            api_calls: end.calls,
            error: end.error,
        });
    }
    pub fn progress(&self, step: &str, status: &str, detail: Option<String>) {
        (self.exec.progress)(ProgressEvent {
            vm: self.key.clone(),
            step: step.to_string(),
            status: status.to_string(),
            detail,
        });
    }
}

/// How a step ended, for its journal line.
#[derive(Default)]
pub(crate) struct StepEnd {
    pub result: Option<&'static str>,
    pub started: Option<Instant>,
    pub attempts: Option<u32>,
    pub calls: Option<u64>,
    pub error: Option<String>,
}

/// What made an attempt fail.
#[derive(Debug)]
pub(crate) enum StepCause {
    Pve(PveError),
    Other(String),
}

impl std::fmt::Display for StepCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepCause::Pve(e) => e.fmt(f),
            StepCause::Other(s) => f.write_str(s),
        }
    }
}

/// One failed attempt of a step, with the disposition the step decided for it (usually the
/// policy table's, sometimes overridden: an id conflict is transient for the clone step).
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub cause: StepCause,
    pub disposition: Disposition,
    /// A lock timeout (config flock or storage lock): contention, absorbed by backing off
    /// under a smaller window, never reported to the operator.
    pub congestion: bool,
}

impl Classify for AttemptError {
    fn disposition(&self) -> Disposition {
        self.disposition
    }
}

impl AttemptError {
    /// A Proxmox error with the table's disposition.
    pub fn pve(e: PveError) -> Self {
        let disposition = e.disposition();
        let congestion = disposition == Disposition::Transient
            && matches!(
                e.classify(),
                ErrorClass::LockTimeout { .. } | ErrorClass::StorageLockTimeout { .. }
            );
        AttemptError {
            cause: StepCause::Pve(e),
            disposition,
            congestion,
        }
    }
    /// A Proxmox error with a disposition the step decided (never congestion).
    pub fn with(e: PveError, disposition: Disposition) -> Self {
        AttemptError {
            cause: StepCause::Pve(e),
            disposition,
            congestion: false,
        }
    }
    pub fn other(detail: impl Into<String>, disposition: Disposition) -> Self {
        AttemptError {
            cause: StepCause::Other(detail.into()),
            disposition,
            congestion: false,
        }
    }
    /// The Proxmox class of the cause, if it is a Proxmox error.
    pub fn class(&self) -> Option<ErrorClass> {
        match &self.cause {
            StepCause::Pve(e) => Some(e.classify()),
            StepCause::Other(_) => None,
        }
    }
}

/// Where a step's work happens (its scheduler permits), or `None` for reads.
pub(crate) type PermitSpec<'s> = Option<Place<'s>>;

/// Run one step: `start` journal line, `attempt` under `policy` (transient failures retried
/// with backoff, everything else returned), and one `end` line with `ok`, `error` or
/// `cancelled`. Each attempt holds the step's permits and gives them back before any
/// backoff; the step's time budget starts once its first permits are held. A lock timeout
/// is contention, not a failure: it shrinks the windows it happened under and the attempt
/// is repeated after a backoff, within the step's deadline, without counting against its
/// attempts and without a progress line.
pub(crate) async fn run_step<T, F, Fut>(
    ctx: &VmCtx<'_>,
    name: &'static str,
    policy: RetryPolicy,
    permits: PermitSpec<'_>,
    attempt: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let cancel = &ctx.exec.cancel;
    if cancel.is_cancelled() {
        return Err(ctx.cancelled(name));
    }
    let started = Instant::now();
    let calls_before = ctx.calls();
    ctx.journal(name, "start", None);
    ctx.progress(name, "start", None);
    let end = |result: &'static str, attempts: u32, error: Option<String>| StepEnd {
        result: Some(result),
        started: Some(started),
        attempts: Some(attempts.max(1)),
        calls: Some(ctx.calls() - calls_before),
        error,
    };
    let scheduler = &ctx.exec.scheduler;
    // The first attempt's permits are taken before the budget starts.
    let first: Mutex<Option<Permits>> = Mutex::new(None);
    if let Some(place) = &permits {
        tokio::select! {
            p = scheduler.acquire(place) => {
                if let Ok(mut g) = first.lock() {
                    *g = Some(p);
                }
            }
            _ = cancel.cancelled() => {}
        }
    }
    if cancel.is_cancelled() {
        let err = ctx.cancelled(name);
        ctx.journal(
            name,
            "end",
            Some(end("cancelled", 1, Some(err.to_string()))),
        );
        ctx.progress(name, "cancelled", None);
        return Err(err);
    }
    // The attempt closure is called from the retry loop's futures: one at a time.
    let attempt = Mutex::new(attempt);
    let budget_start = Instant::now();
    let deadline = budget_start + policy.max_elapsed;
    let backoff = RetryPolicy {
        max_elapsed: policy.max_elapsed,
        max_attempts: 0,
        ..policy
    };
    let result = policy
        .retry_with(
            Some(cancel),
            |e: &AttemptError, _| {
                ctx.progress(name, "retry", Some(e.cause.to_string()));
                tracing::debug!(vm = %ctx.key, step = name, error = %e.cause, "retrying");
            },
            || {
                let attempt = &attempt;
                let first = &first;
                let permits = &permits;
                async move {
                    let mut congested = 0u32;
                    loop {
                        let taken = first.lock().ok().and_then(|mut g| g.take());
                        let held = match (taken, permits) {
                            (Some(h), _) => Some(h),
                            (None, Some(place)) => tokio::select! {
                                p = scheduler.acquire(place) => Some(p),
                                _ = cancel.cancelled() => {
                                    return Err(AttemptError::other("cancelled", Disposition::Permanent));
                                }
                            },
                            (None, None) => None,
                        };
                        let t0 = Instant::now();
                        let fut = match attempt.lock() {
                            Ok(mut a) => (*a)(),
                            Err(p) => (*p.into_inner())(),
                        };
                        let r = fut.await;
                        let took = t0.elapsed();
                        let windows: Vec<_> = held
                            .as_ref()
                            .map(|h| h.windows().cloned().collect())
                            .unwrap_or_default();
                        drop(held);
                        match &r {
                            Ok(_) => {
                                for w in &windows {
                                    w.on_success(name, took);
                                }
                            }
                            Err(e) if e.congestion && Instant::now() < deadline => {
                                for w in &windows {
                                    w.on_congestion(took);
                                }
                                tracing::debug!(vm = %ctx.key, step = name, error = %e.cause,
                                    "lock timeout: backing off under a smaller window");
                                congested += 1;
                                let pause = backoff.base_delay(congested).mul_f64(
                                    0.75 + 0.5 * rand::random::<f64>(),
                                );
                                let left = deadline.saturating_duration_since(Instant::now());
                                tokio::select! {
                                    _ = tokio::time::sleep(pause.min(left)) => {}
                                    _ = cancel.cancelled() => return r,
                                }
                                continue;
                            }
                            Err(_) => {}
                        }
                        return r;
                    }
                }
            },
        )
        .await;
    match result {
        Ok(v) => {
            ctx.journal(name, "end", Some(end("ok", v.attempts, None)));
            ctx.progress(name, "ok", None);
            Ok(v.value)
        }
        Err(RetryError::Cancelled { attempts, .. }) => {
            let err = ctx.cancelled(name);
            ctx.journal(
                name,
                "end",
                Some(end("cancelled", attempts, Some(err.to_string()))),
            );
            ctx.progress(name, "cancelled", None);
            Err(err)
        }
        Err(e) if cancel.is_cancelled() => {
            let err = ctx.cancelled(name);
            ctx.journal(
                name,
                "end",
                Some(end("cancelled", e.attempts(), Some(err.to_string()))),
            );
            ctx.progress(name, "cancelled", None);
            Err(err)
        }
        Err(e) => {
            let attempts = e.attempts();
            let err = match e.into_last() {
                Some(a) => ctx.fail(name, a.cause),
                None => ctx.other(name, "gave up without an answer".into()),
            };
            ctx.journal(
                name,
                "end",
                Some(end("error", attempts, Some(err.to_string()))),
            );
            ctx.progress(name, "error", Some(err.to_string()));
            Err(err)
        }
    }
}

/// What a re-read says about a write whose outcome was unknown.
pub(crate) enum Confirm {
    /// The write took effect.
    Done,
    /// It did not (or not yet): resending is safe for this idempotent write.
    NotDone,
}

/// The one way a step writes to Proxmox: submit the call (a task or a synchronous write),
/// wait for its task, and when the outcome is unknown (reset, 595/596, unreadable task
/// status) re-read with `confirm` before anything is resent: `Done` is success, `NotDone`
/// is a transient failure (the step's policy may resend), an unreadable re-read stays
/// "outcome unknown" (the step fails; nothing is resent).
pub(crate) async fn submit_wait_confirm<S, SF, C, CF>(
    ctx: &VmCtx<'_>,
    wait: &WaitOptions,
    submit: S,
    mut confirm: C,
) -> Result<(), AttemptError>
where
    S: FnOnce() -> SF,
    SF: Future<Output = PveResult<Option<Upid>>>,
    C: FnMut() -> CF,
    CF: Future<Output = PveResult<Confirm>>,
{
    let result = match submit().await {
        Ok(Some(upid)) => ctx.exec.client.watch_task(&upid, wait).await.map(|_| ()),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let e = match result {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if e.disposition() != Disposition::OutcomeUnknown {
        return Err(AttemptError::pve(e));
    }
    match confirm().await {
        Ok(Confirm::Done) => Ok(()),
        Ok(Confirm::NotDone) => Err(AttemptError::with(e, Disposition::Transient)),
        Err(read) => Err(AttemptError::other(
            format!("{e}; re-reading to learn the outcome failed too: {read}"),
            Disposition::OutcomeUnknown,
        )),
    }
}
