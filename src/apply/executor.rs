//! The executor: one pipeline per VM (clone → config → resize → start → readiness → facts),
//! all VMs pipelining independently under the [`Scheduler`] limits. Each step retries the
//! retryable Proxmox errors (locks, storage locks, transient 5xx) with backoff and jitter
//! until its deadline; a write whose outcome is unknown is re-read before it is resent. One
//! VM's failure never abandons the others: every VM's outcome is reported.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::apply::journal::{now_ts, Journal, JournalEvent};
use crate::apply::limits::Scheduler;
use crate::apply::outputs::VmFacts;
use crate::inputs::model::CloneMode;
use crate::plan::desired::{net_value, DesiredVm};
use crate::plan::diff::{config_value_matches, VmAction, VmPlan};
use crate::plan::props;
use crate::pve::{
    AllocateRequest, CloneAllocation, CloneParams, ConfigUpdate, DiskSize, DiskSlot, ErrorClass,
    Ownership, PveClient, PveError, VmConfig, WaitOptions,
};

/// Deadlines and pacing for the executor's steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub clone: Duration,
    pub config: Duration,
    pub resize: Duration,
    pub start: Duration,
    /// Graceful guest shutdown before a hard stop on destroy/replace.
    pub shutdown: Duration,
    pub delete: Duration,
    /// How long to wait for the guest agent to report an address after a start
    /// (`post_apply_ssh_readiness.connectivity_wait_s`; 0 = a single attempt).
    pub agent_wait: Duration,
    /// First retry delay; doubles with jitter up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per step before a retryable error becomes the step's failure.
    pub max_attempts: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            clone: Duration::from_secs(1800),
            config: Duration::from_secs(300),
            resize: Duration::from_secs(600),
            start: Duration::from_secs(300),
            shutdown: Duration::from_secs(60),
            delete: Duration::from_secs(600),
            agent_wait: Duration::from_secs(300),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_attempts: 6,
        }
    }
}

/// A step's failure, with the context an operator needs.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{step} of VM {key} (vmid {vmid}, node {node}) failed: {source}")]
    Pve {
        step: &'static str,
        key: String,
        vmid: String,
        node: String,
        #[source]
        source: Box<PveError>,
    },
    #[error("{step} of VM {key} (vmid {vmid}, node {node}) failed: {detail}")]
    Other {
        step: &'static str,
        key: String,
        vmid: String,
        node: String,
        detail: String,
    },
}

/// Progress of one VM, for the CLI's display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressEvent {
    pub vm: String,
    pub step: String,
    /// `start`, `ok`, `error`, `retry`, `done`.
    pub status: String,
    pub detail: Option<String>,
}

/// Receives progress events.
pub type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// The final result for one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOutcome {
    pub key: String,
    pub action: VmAction,
    pub vmid: Option<u32>,
    pub node: String,
    /// `ok` or `error`.
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub api_calls: u64,
    #[serde(skip)]
    pub facts: Option<VmFacts>,
}

/// Everything the executor needs, shared by the VM pipelines.
pub struct Executor {
    pub client: PveClient,
    pub scheduler: Scheduler,
    pub journal: Arc<Journal>,
    pub timeouts: Timeouts,
    pub progress: ProgressFn,
    /// Number of write calls sent (for the "0 writes on re-apply" evidence).
    pub writes: AtomicU64,
}

/// How a step ended, for its journal line.
#[derive(Default)]
struct StepEnd {
    result: Option<&'static str>,
    started: Option<Instant>,
    attempts: Option<u32>,
    calls: Option<u64>,
    error: Option<String>,
}

/// Per-VM call accounting.
struct VmCtx<'a> {
    key: String,
    vmid: Option<u32>,
    node: String,
    calls: AtomicU64,
    exec: &'a Executor,
}

impl VmCtx<'_> {
    fn vmid_str(&self) -> String {
        self.vmid
            .map(|v| v.to_string())
            .unwrap_or_else(|| "new".into())
    }
    fn pve_err(&self, step: &'static str, source: PveError) -> StepError {
        StepError::Pve {
            step,
            key: self.key.clone(),
            vmid: self.vmid_str(),
            node: self.node.clone(),
            source: Box::new(source),
        }
    }
    fn other(&self, step: &'static str, detail: String) -> StepError {
        StepError::Other {
            step,
            key: self.key.clone(),
            vmid: self.vmid_str(),
            node: self.node.clone(),
            detail,
        }
    }
    fn read(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn write(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.exec.writes.fetch_add(1, Ordering::Relaxed);
    }
    /// A task wait made `polls` status reads.
    fn polled(&self, polls: u32) {
        self.calls.fetch_add(u64::from(polls), Ordering::Relaxed);
    }
    fn journal_start(&self, action: &str) {
        self.journal(action, "start", None);
    }
    fn journal_end(&self, action: &str, end: StepEnd) {
        self.journal(action, "end", Some(end));
    }
    fn journal(&self, action: &str, event: &str, end: Option<StepEnd>) {
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
    fn progress(&self, step: &str, status: &str, detail: Option<String>) {
        (self.exec.progress)(ProgressEvent {
            vm: self.key.clone(),
            step: step.to_string(),
            status: status.to_string(),
            detail,
        });
    }
}

/// Is this error worth another attempt of the same step?
pub fn is_retryable(e: &PveError) -> bool {
    match e.classify() {
        ErrorClass::LockTimeout { .. }
        | ErrorClass::StorageLockTimeout { .. }
        | ErrorClass::NoWorkerUpid
        | ErrorClass::Server
        | ErrorClass::Transport { .. }
        // A failed task left nothing behind (PVE cleans up a failed clone; config and
        // resize are re-read before the next attempt), so it is worth a bounded retry.
        | ErrorClass::TaskFailed => true,
        // A lock held by a backup, snapshot or our own clone goes away; wait for it.
        ErrorClass::Locked { .. } => true,
        _ => false,
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    let spread = ms / 4;
    let offset = if spread == 0 {
        0
    } else {
        rand::random::<u64>() % (2 * spread + 1)
    };
    Duration::from_millis(ms.saturating_sub(spread) + offset)
}

impl Executor {
    fn wait_opts(&self, timeout: Duration) -> WaitOptions {
        // Most config/start tasks end within ~100 ms on a healthy node: poll early, then back
        // off (doubling) so long clones cost few status reads.
        WaitOptions {
            timeout,
            initial_poll: Duration::from_millis(50),
            max_poll: Duration::from_secs(2),
            ..WaitOptions::default()
        }
    }

    /// Run one step with retries. `attempt` is called until it succeeds, fails with a
    /// non-retryable error, or the deadline passes.
    async fn step<T, F, Fut>(
        &self,
        ctx: &VmCtx<'_>,
        name: &'static str,
        deadline: Duration,
        mut attempt: F,
    ) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StepOutcome>>,
    {
        let started = Instant::now();
        let calls_before = ctx.calls.load(Ordering::Relaxed);
        ctx.journal_start(name);
        ctx.progress(name, "start", None);
        let mut delay = self.timeouts.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt().await {
                Ok(v) => {
                    let calls = ctx.calls.load(Ordering::Relaxed) - calls_before;
                    ctx.journal_end(
                        name,
                        StepEnd {
                            result: Some("ok"),
                            started: Some(started),
                            attempts: Some(attempts),
                            calls: Some(calls),
                            error: None,
                        },
                    );
                    ctx.progress(name, "ok", None);
                    return Ok(v);
                }
                Err(StepOutcome::Retry(e))
                    if started.elapsed() + delay < deadline
                        && attempts < self.timeouts.max_attempts =>
                {
                    ctx.progress(name, "retry", Some(e.to_string()));
                    tracing::debug!(vm = %ctx.key, step = name, error = %e, "retrying");
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(self.timeouts.max_backoff);
                }
                Err(outcome) => {
                    let err = match outcome {
                        StepOutcome::Retry(e) | StepOutcome::Fail(e) => ctx.pve_err(name, e),
                        StepOutcome::Other(d) => ctx.other(name, d),
                    };
                    let calls = ctx.calls.load(Ordering::Relaxed) - calls_before;
                    ctx.journal_end(
                        name,
                        StepEnd {
                            result: Some("error"),
                            started: Some(started),
                            attempts: Some(attempts),
                            calls: Some(calls),
                            error: Some(err.to_string()),
                        },
                    );
                    ctx.progress(name, "error", Some(err.to_string()));
                    return Err(err);
                }
            }
        }
    }

    /// Run the plan for every VM concurrently; returns one outcome per VM, in plan order.
    pub async fn execute(self: &Arc<Self>, plans: &[VmPlan]) -> Vec<VmOutcome> {
        let mut handles = Vec::with_capacity(plans.len());
        for plan in plans {
            let plan = plan.clone();
            let me = self.clone();
            handles.push(tokio::spawn(async move { me.run_vm(&plan).await }));
        }
        let mut out = Vec::with_capacity(handles.len());
        for (h, plan) in handles.into_iter().zip(plans) {
            match h.await {
                Ok(o) => out.push(o),
                Err(e) => out.push(VmOutcome {
                    key: plan.key.0.clone(),
                    action: plan.action,
                    vmid: plan.vmid,
                    node: plan.node.clone(),
                    status: "error".into(),
                    error: Some(format!(
                        "internal error: VM pipeline task ended abnormally: {e}"
                    )),
                    duration_ms: 0,
                    api_calls: 0,
                    facts: None,
                }),
            }
        }
        out
    }

    async fn run_vm(&self, plan: &VmPlan) -> VmOutcome {
        let started = Instant::now();
        let mut ctx = VmCtx {
            key: plan.key.0.clone(),
            vmid: plan.vmid,
            node: plan.node.clone(),
            calls: AtomicU64::new(0),
            exec: self,
        };
        let result = match plan.action {
            VmAction::Create => self.create(&mut ctx, plan).await,
            VmAction::Update => self.update(&mut ctx, plan).await,
            VmAction::Noop => self.facts(&ctx, plan, false).await,
            VmAction::Delete => self.remove(&ctx).await.map(|_| None),
            VmAction::Replace => match self.remove(&ctx).await {
                Ok(()) => {
                    // the old VM is gone from its node; the new one goes where the plan says
                    ctx.vmid = None;
                    if let Some(want) = &plan.desired {
                        ctx.node = want.node.clone();
                    }
                    self.create(&mut ctx, plan).await
                }
                Err(e) => Err(e),
            },
        };
        let (status, error, facts) = match result {
            Ok(f) => ("ok", None, f),
            Err(e) => ("error", Some(e.to_string()), None),
        };
        ctx.progress("done", status, error.clone());
        VmOutcome {
            key: ctx.key.clone(),
            action: plan.action,
            vmid: ctx.vmid,
            node: ctx.node.clone(),
            status: status.into(),
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            api_calls: ctx.calls.load(Ordering::Relaxed),
            facts,
        }
    }

    fn desired<'p>(&self, ctx: &VmCtx<'_>, plan: &'p VmPlan) -> Result<&'p DesiredVm, StepError> {
        plan.desired.as_ref().ok_or_else(|| {
            ctx.other(
                "plan",
                "the plan carries no desired model for this VM".into(),
            )
        })
    }

    async fn create(
        &self,
        ctx: &mut VmCtx<'_>,
        plan: &VmPlan,
    ) -> Result<Option<VmFacts>, StepError> {
        let want = self.desired(ctx, plan)?;
        let vmid = self.clone_step(ctx, want).await?;
        ctx.vmid = Some(vmid);
        if let Some(m) = &want.route.migrate {
            self.migrate_step(
                ctx,
                &want.route.clone_node,
                &m.node,
                m.targetstorage.as_deref(),
            )
            .await?;
        }
        let cfg = self.read_config(ctx, "config").await?;
        self.config_step(ctx, want, &cfg, &plan.config_set, &[])
            .await?;
        if let Some(r) = &plan.resize {
            self.resize_step(ctx, &r.disk, r.to_bytes).await?;
        }
        self.start_step(ctx).await?;
        self.facts(ctx, plan, true).await
    }

    async fn update(
        &self,
        ctx: &mut VmCtx<'_>,
        plan: &VmPlan,
    ) -> Result<Option<VmFacts>, StepError> {
        let want = self.desired(ctx, plan)?;
        if !plan.config_set.is_empty() || !plan.config_delete.is_empty() {
            let cfg = self.read_config(ctx, "config").await?;
            self.config_step(ctx, want, &cfg, &plan.config_set, &plan.config_delete)
                .await?;
            if plan.regenerate_cloudinit {
                let client = &self.client;
                let node = ctx.node.clone();
                let vmid = ctx.vmid.unwrap_or_default();
                self.step(ctx, "cloudinit", self.timeouts.config, || async {
                    ctx.write();
                    client
                        .cloudinit_regenerate(&node, vmid)
                        .await
                        .map_err(StepOutcome::from_write)
                })
                .await?;
            }
        }
        if let Some(r) = &plan.resize {
            self.resize_step(ctx, &r.disk, r.to_bytes).await?;
        }
        if plan.start {
            self.start_step(ctx).await?;
        }
        if plan.restart.is_some() {
            // restart_policy: restart — the running VM takes its pending config at start
            self.stop_step(ctx).await?;
            self.start_step(ctx).await?;
        }
        self.facts(ctx, plan, plan.start || plan.restart.is_some())
            .await
    }

    /// Offline migration of the fresh clone from the template's node to its own node (the
    /// plan's route when Proxmox cannot clone straight there).
    async fn migrate_step(
        &self,
        ctx: &VmCtx<'_>,
        from: &str,
        to: &str,
        targetstorage: Option<&str>,
    ) -> Result<(), StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let client = &self.client;
        let wait = self.wait_opts(self.timeouts.clone);
        self.step(ctx, "migrate", self.timeouts.clone, || async {
            // Already there (a retry after an unknown outcome): done.
            ctx.read();
            match client.vm_node(vmid).await {
                Ok(Some(n)) if n == to => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(StepOutcome::from_read(e)),
            }
            let _permits = self.scheduler.acquire(to, targetstorage).await;
            ctx.write();
            let upid = client
                .migrate(from, vmid, to, targetstorage)
                .await
                .map_err(StepOutcome::from_write)?;
            client
                .wait_task(&upid, &wait)
                .await
                .map(|o| ctx.polled(o.polls))
                .map_err(StepOutcome::from_write)
        })
        .await
    }

    /// Shut a running VM down within the shutdown timeout, then stop it if the guest did not
    /// comply. A stopped VM is left as it is.
    async fn stop_step(&self, ctx: &VmCtx<'_>) -> Result<(), StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let node = ctx.node.clone();
        let client = &self.client;
        let timeout_s = self.timeouts.shutdown.as_secs().min(u32::MAX as u64) as u32;
        let wait = self.wait_opts(self.timeouts.shutdown + Duration::from_secs(30));
        let graceful = self
            .step(
                ctx,
                "shutdown",
                self.timeouts.shutdown + Duration::from_secs(30),
                || async {
                    let _p = self.scheduler.acquire(&node, None).await;
                    ctx.write();
                    let upid = client
                        .shutdown(&node, vmid, Some(timeout_s), false)
                        .await
                        .map_err(StepOutcome::from_write)?;
                    client
                        .wait_task(&upid, &wait)
                        .await
                        .map(|o| ctx.polled(o.polls))
                        .map_err(StepOutcome::Fail)
                },
            )
            .await;
        if graceful.is_ok() {
            return Ok(());
        }
        let wait = self.wait_opts(self.timeouts.delete);
        self.step(ctx, "stop", self.timeouts.delete, || async {
            let _p = self.scheduler.acquire(&node, None).await;
            ctx.write();
            let upid = client
                .stop(&node, vmid)
                .await
                .map_err(StepOutcome::from_write)?;
            client
                .wait_task(&upid, &wait)
                .await
                .map(|o| ctx.polled(o.polls))
                .map_err(StepOutcome::from_write)
        })
        .await
    }

    /// Clone the template (race-safe VMID choice); returns the new VMID.
    async fn clone_step(&self, ctx: &VmCtx<'_>, want: &DesiredVm) -> Result<u32, StepError> {
        let full = want.clone_mode == CloneMode::Full;
        // The plan's route: where the clone call goes, straight to another node only when
        // Proxmox can (shared storage), else on the template's node and migrated after.
        let route = &want.route;
        let clone_node = if route.clone_node.is_empty() {
            want.template.node.clone()
        } else {
            route.clone_node.clone()
        };
        let params = CloneParams {
            newid: want.requested_vmid.unwrap_or(0),
            name: Some(want.physical_name.0.clone()),
            description: Some(want.marker.to_description()),
            full: Some(full),
            storage: if full { route.storage.clone() } else { None },
            format: None,
            target: route.target.clone(),
            pool: None,
        };
        let marker_line = want.marker.to_line();
        let storage = if full { route.storage.clone() } else { None };
        let wait = self.wait_opts(self.timeouts.clone);
        let client = &self.client;
        self.step(ctx, "clone", self.timeouts.clone, || {
            let params = params.clone();
            let marker_line = marker_line.clone();
            let storage = storage.clone();
            let clone_node = clone_node.clone();
            async move {
                let _permits = self
                    .scheduler
                    .acquire(&clone_node, storage.as_deref())
                    .await;
                ctx.write();
                let req = AllocateRequest {
                    node: &clone_node,
                    template_vmid: want.template.vmid,
                    params: &params,
                    ownership: Ownership::Marker(&marker_line),
                    start_hint: want.requested_vmid,
                    range: want.requested_vmid.map(|v| v..=v),
                    max_attempts: if want.requested_vmid.is_some() { 1 } else { 8 },
                    wait: Some(wait),
                };
                match client.allocate_vmid_and_clone(&req).await {
                    Ok(CloneAllocation::Completed { vmid, outcome }) => {
                        // nextid, nextid?vmid=, then the task polls
                        ctx.polled(outcome.polls + 2);
                        Ok(vmid)
                    }
                    Ok(CloneAllocation::Adopted { vmid, .. }) => Ok(vmid),
                    Ok(CloneAllocation::Submitted { vmid, .. }) => Ok(vmid),
                    Err(e) if e.classify() == ErrorClass::WriteOutcomeUnknown => {
                        // The clone may have been accepted: a marker-owned VM proves it.
                        match find_marked_vm(client, &want.physical_name.0, &marker_line).await {
                            Some(vmid) => Ok(vmid),
                            None => Err(StepOutcome::Retry(e)),
                        }
                    }
                    Err(e) => Err(StepOutcome::from_write(e)),
                }
            }
        })
        .await
    }

    async fn read_config(
        &self,
        ctx: &VmCtx<'_>,
        step: &'static str,
    ) -> Result<VmConfig, StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let mut delay = self.timeouts.initial_backoff;
        let started = Instant::now();
        loop {
            ctx.read();
            match self.client.vm_config(&ctx.node, vmid, false).await {
                // Still under our own clone's lock: wait for it to go.
                Ok(cfg) if cfg.lock.is_some() && started.elapsed() < self.timeouts.config => {
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(self.timeouts.max_backoff);
                }
                Ok(cfg) => return Ok(cfg),
                Err(e) => return Err(ctx.pve_err(step, e)),
            }
        }
    }

    /// Write the owned config keys that differ from `cfg`; re-read and recompute on a digest
    /// mismatch or an unknown write outcome, so nothing is ever blindly resent.
    async fn config_step(
        &self,
        ctx: &VmCtx<'_>,
        want: &DesiredVm,
        cfg: &VmConfig,
        planned_set: &BTreeMap<String, String>,
        planned_delete: &[String],
    ) -> Result<(), StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let node = ctx.node.clone();
        let client = &self.client;
        let current = tokio::sync::Mutex::new(cfg.clone());
        let wait = self.wait_opts(self.timeouts.config);
        self.step(ctx, "config", self.timeouts.config, || async {
            let cfg = current.lock().await.clone();
            let update = build_update(want, &cfg, planned_set, planned_delete);
            let Some(update) = update else {
                return Ok(());
            };
            let _permits = self.scheduler.acquire(&node, None).await;
            ctx.write();
            let res = match client.update_config_async(&node, vmid, &update).await {
                Ok(Some(upid)) => client
                    .wait_task(&upid, &wait)
                    .await
                    .map(|o| ctx.polled(o.polls)),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => Ok(()),
                Err(e)
                    if matches!(
                        e.classify(),
                        ErrorClass::ChecksumMismatch | ErrorClass::WriteOutcomeUnknown
                    ) || is_retryable(&e) =>
                {
                    ctx.read();
                    if let Ok(fresh) = client.vm_config(&node, vmid, false).await {
                        *current.lock().await = fresh;
                    }
                    Err(StepOutcome::Retry(e))
                }
                Err(e) => Err(StepOutcome::Fail(e)),
            }
        })
        .await
    }

    async fn resize_step(
        &self,
        ctx: &VmCtx<'_>,
        disk: &str,
        to_bytes: u64,
    ) -> Result<(), StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let node = ctx.node.clone();
        let slot: DiskSlot = disk
            .parse()
            .map_err(|e| ctx.other("resize", format!("disk {disk}: {e}")))?;
        let client = &self.client;
        let wait = self.wait_opts(self.timeouts.resize);
        self.step(ctx, "resize", self.timeouts.resize, || async {
            // Re-read the size first: growing to the current size is a no-op, and the engine
            // never sends a size below the current one.
            ctx.read();
            let cfg = client
                .vm_config(&node, vmid, false)
                .await
                .map_err(StepOutcome::from_read)?;
            let spec = cfg.raw.get(disk).cloned().unwrap_or_default();
            let storage = spec.split(':').next().map(str::to_string);
            let current = props::disk_size_bytes(&spec);
            if current.is_some_and(|c| c >= to_bytes) {
                return Ok(());
            }
            let _permits = self.scheduler.acquire(&node, storage.as_deref()).await;
            ctx.write();
            let upid = client
                .resize(&node, vmid, slot, DiskSize(to_bytes))
                .await
                .map_err(StepOutcome::from_write)?;
            client
                .wait_task(&upid, &wait)
                .await
                .map(|o| ctx.polled(o.polls))
                .map_err(StepOutcome::from_write)
        })
        .await
    }

    async fn start_step(&self, ctx: &VmCtx<'_>) -> Result<(), StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let node = ctx.node.clone();
        let client = &self.client;
        let wait = self.wait_opts(self.timeouts.start);
        self.step(ctx, "start", self.timeouts.start, || async {
            let _permits = self.scheduler.acquire(&node, None).await;
            ctx.write();
            let res = match client.start(&node, vmid).await {
                Ok(upid) => client
                    .wait_task(&upid, &wait)
                    .await
                    .map(|o| ctx.polled(o.polls)),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => Ok(()),
                Err(e) if e.classify() == ErrorClass::AlreadyRunning => Ok(()),
                Err(e) if e.classify() == ErrorClass::WriteOutcomeUnknown => {
                    ctx.read();
                    match client.vm_status(&node, vmid).await {
                        Ok(st) if st.is_running() => Ok(()),
                        _ => Err(StepOutcome::Retry(e)),
                    }
                }
                Err(e) => Err(StepOutcome::from_write(e)),
            }
        })
        .await
    }

    /// Read back what the outputs need. `wait_agent`: poll the guest agent for an address
    /// (after a start) until the readiness budget runs out; a timeout is not an error here
    /// (the SSH readiness gate decides readiness).
    async fn facts(
        &self,
        ctx: &VmCtx<'_>,
        plan: &VmPlan,
        wait_agent: bool,
    ) -> Result<Option<VmFacts>, StepError> {
        let Some(want) = plan.desired.as_ref() else {
            return Ok(None);
        };
        let vmid = ctx.vmid.unwrap_or_default();
        let started = Instant::now();
        ctx.journal_start("facts");
        ctx.read();
        // `current`: what the VM runs, not what it gets at its next start (outputs report
        // what runs).
        let cfg = self
            .client
            .vm_config(&ctx.node, vmid, true)
            .await
            .map_err(|e| ctx.pve_err("facts", e))?;
        ctx.read();
        let running = self
            .client
            .vm_status(&ctx.node, vmid)
            .await
            .map(|s| s.is_running())
            .map_err(|e| ctx.pve_err("facts", e))?;
        let mut agent_ipv4 = Vec::new();
        if running && want.agent {
            let budget = if wait_agent {
                self.timeouts.agent_wait
            } else {
                Duration::ZERO
            };
            agent_ipv4 = self.agent_addresses(ctx, &cfg, budget).await;
        }
        let mut config = cfg.raw.clone();
        config.remove("digest");
        ctx.journal_end(
            "facts",
            StepEnd {
                result: Some("ok"),
                started: Some(started),
                attempts: Some(1),
                calls: None,
                error: None,
            },
        );
        Ok(Some(VmFacts {
            vmid,
            node: ctx.node.clone(),
            config,
            running,
            agent_ipv4,
        }))
    }

    async fn agent_addresses(
        &self,
        ctx: &VmCtx<'_>,
        cfg: &VmConfig,
        budget: Duration,
    ) -> Vec<Vec<Ipv4Addr>> {
        let vmid = ctx.vmid.unwrap_or_default();
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let macs: Vec<String> = crate::apply::outputs::nic_macs(&cfg.raw);
        loop {
            ctx.read();
            match self.client.agent_network_interfaces(&ctx.node, vmid).await {
                Ok(ifaces) => {
                    let mut per_mac: Vec<Vec<Ipv4Addr>> = vec![Vec::new(); macs.len()];
                    let mut others: Vec<Vec<Ipv4Addr>> = Vec::new();
                    for iface in &ifaces {
                        let v4: Vec<Ipv4Addr> = iface
                            .ip_addresses
                            .iter()
                            .filter_map(|ip| match ip.ip_address {
                                std::net::IpAddr::V4(a)
                                    if !a.is_loopback() && !a.is_link_local() =>
                                {
                                    Some(a)
                                }
                                _ => None,
                            })
                            .collect();
                        if v4.is_empty() {
                            continue;
                        }
                        let mac = iface
                            .hardware_address
                            .as_deref()
                            .map(str::to_ascii_uppercase);
                        match mac.and_then(|m| macs.iter().position(|x| *x == m)) {
                            Some(i) => per_mac[i] = v4,
                            None => others.push(v4),
                        }
                    }
                    per_mac.retain(|l| !l.is_empty());
                    per_mac.extend(others);
                    if !per_mac.is_empty() || started.elapsed() >= budget {
                        return per_mac;
                    }
                }
                Err(e) => {
                    if started.elapsed() >= budget {
                        tracing::debug!(vm = %ctx.key, error = %e, "guest agent gave no address");
                        return Vec::new();
                    }
                }
            }
            tokio::time::sleep(delay.min(budget.saturating_sub(started.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Graceful shutdown (bounded), then stop, then delete with purge.
    async fn remove(&self, ctx: &VmCtx<'_>) -> Result<(), StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let node = ctx.node.clone();
        let client = &self.client;
        ctx.read();
        let running = match client.vm_status(&node, vmid).await {
            Ok(st) => st.is_running(),
            Err(e) if e.classify() == ErrorClass::NotFound => return Ok(()),
            Err(e) => return Err(ctx.pve_err("shutdown", e)),
        };
        if running {
            let timeout_s = self.timeouts.shutdown.as_secs().min(u32::MAX as u64) as u32;
            let wait = self.wait_opts(self.timeouts.shutdown + Duration::from_secs(30));
            let graceful = self
                .step(
                    ctx,
                    "shutdown",
                    self.timeouts.shutdown + Duration::from_secs(30),
                    || async {
                        let _p = self.scheduler.acquire(&node, None).await;
                        ctx.write();
                        let upid = client
                            .shutdown(&node, vmid, Some(timeout_s), false)
                            .await
                            .map_err(StepOutcome::from_write)?;
                        client
                            .wait_task(&upid, &wait)
                            .await
                            .map(|o| ctx.polled(o.polls))
                            .map_err(StepOutcome::Fail)
                    },
                )
                .await;
            if graceful.is_err() {
                let wait = self.wait_opts(self.timeouts.delete);
                self.step(ctx, "stop", self.timeouts.delete, || async {
                    let _p = self.scheduler.acquire(&node, None).await;
                    ctx.write();
                    let upid = client
                        .stop(&node, vmid)
                        .await
                        .map_err(StepOutcome::from_write)?;
                    client
                        .wait_task(&upid, &wait)
                        .await
                        .map(|o| ctx.polled(o.polls))
                        .map_err(StepOutcome::from_write)
                })
                .await?;
            }
        }
        let wait = self.wait_opts(self.timeouts.delete);
        self.step(ctx, "delete", self.timeouts.delete, || async {
            let _p = self.scheduler.acquire(&node, None).await;
            ctx.write();
            let res = match client.delete_vm(&node, vmid, true, true).await {
                Ok(upid) => client
                    .wait_task(&upid, &wait)
                    .await
                    .map(|o| ctx.polled(o.polls)),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => Ok(()),
                Err(e) if e.classify() == ErrorClass::NotFound => Ok(()),
                Err(e) if e.classify() == ErrorClass::WriteOutcomeUnknown => {
                    ctx.read();
                    match client.vm_status(&node, vmid).await {
                        Err(e2) if e2.classify() == ErrorClass::NotFound => Ok(()),
                        _ => Err(StepOutcome::Retry(e)),
                    }
                }
                Err(e) => Err(StepOutcome::from_write(e)),
            }
        })
        .await
    }

    /// Destroy one VM by id (destroy command).
    pub async fn destroy_vm(&self, key: &str, vmid: u32, node: &str) -> VmOutcome {
        let started = Instant::now();
        let ctx = VmCtx {
            key: key.to_string(),
            vmid: Some(vmid),
            node: node.to_string(),
            calls: AtomicU64::new(0),
            exec: self,
        };
        let res = self.remove(&ctx).await;
        let (status, error) = match res {
            Ok(()) => ("ok", None),
            Err(e) => ("error", Some(e.to_string())),
        };
        ctx.progress("done", status, error.clone());
        VmOutcome {
            key: key.to_string(),
            action: VmAction::Delete,
            vmid: Some(vmid),
            node: node.to_string(),
            status: status.into(),
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            api_calls: ctx.calls.load(Ordering::Relaxed),
            facts: None,
        }
    }
}

/// How one attempt of a step ended.
pub enum StepOutcome {
    Retry(PveError),
    Fail(PveError),
    Other(String),
}

impl StepOutcome {
    fn from_write(e: PveError) -> Self {
        if is_retryable(&e) && e.classify() != ErrorClass::WriteOutcomeUnknown {
            StepOutcome::Retry(e)
        } else {
            StepOutcome::Fail(e)
        }
    }
    fn from_read(e: PveError) -> Self {
        if is_retryable(&e) {
            StepOutcome::Retry(e)
        } else {
            StepOutcome::Fail(e)
        }
    }
}

/// The config write still needed against `cfg` (None when everything already matches).
fn build_update(
    want: &DesiredVm,
    cfg: &VmConfig,
    planned_set: &BTreeMap<String, String>,
    planned_delete: &[String],
) -> Option<ConfigUpdate> {
    let mut observed = cfg.raw.clone();
    if cfg.sshkeys.is_empty() {
        observed.remove("sshkeys");
    } else {
        observed.insert("sshkeys".into(), cfg.sshkeys.join("\n"));
    }
    let mut update = ConfigUpdate::new();
    let mut any = false;
    for (k, v) in planned_set {
        let before = observed.get(k).map(String::as_str);
        let desired_now = if k.starts_with("net") && props::net_mac(v).is_some() {
            v.clone()
        } else {
            want.owned_config()
                .get(k)
                .cloned()
                .unwrap_or_else(|| v.clone())
        };
        if config_value_matches(k, before, &desired_now) {
            continue;
        }
        any = true;
        update = if k == "sshkeys" {
            let keys: Vec<String> = v.lines().map(str::to_string).collect();
            update.sshkeys(&keys)
        } else if let Some(idx) = k.strip_prefix("net").and_then(|i| i.parse::<usize>().ok()) {
            // The MAC the plan chose (the NIC's own, carried from wherever it was), else the
            // one the VM has on this slot (a clone's fresh one).
            let keep = props::net_mac(v).or_else(|| before.and_then(props::net_mac));
            match want.nics.iter().find(|n| n.index == idx) {
                Some(nic) => update.raw(k, &net_value(nic, keep.as_deref())),
                None => update.raw(k, v),
            }
        } else {
            update.raw(k, v)
        };
    }
    for k in planned_delete {
        if observed.contains_key(k) {
            any = true;
            update = update.delete(k);
        }
    }
    if let Some(d) = &cfg.digest {
        update = update.digest(d);
    }
    any.then_some(update)
}

/// Find a VM whose description carries `marker_line` (after an unknown clone outcome). Only
/// VMs bearing the clone's name, or still under a clone lock, can be that clone, so only
/// their configs are read.
async fn find_marked_vm(client: &PveClient, name: &str, marker_line: &str) -> Option<u32> {
    let rows = client
        .cluster_resources(Some(crate::pve::ResourceType::Vm))
        .await
        .ok()?;
    for r in rows {
        let (Some(vmid), Some(node)) = (r.vmid, r.node.clone()) else {
            continue;
        };
        let cloning = r.lock.as_deref() == Some("clone");
        if r.template || (r.name.as_deref() != Some(name) && !cloning) {
            continue;
        }
        if let Ok(cfg) = client.vm_config(&node, vmid, false).await {
            if cfg.description_contains(marker_line) {
                return Some(vmid);
            }
        }
    }
    None
}
