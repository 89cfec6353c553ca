//! The executor: one pipeline per VM (clone → [migrate] → config → resize → start →
//! readiness/facts; an update may end with a restart for pending config), all VMs
//! pipelining independently under the [`Scheduler`]'s windows. The steps are units in
//! [`crate::apply::steps`], each retried by the one [`RetryPolicy`] on the Proxmox error
//! table, each writing through the shared "submit, wait, re-read on unknown outcome" helper.
//! What the plan already read (the configs of existing VMs) and what a step wrote is carried
//! forward, so no config is read twice. A cancellation token (Ctrl-C) is checked between and
//! inside steps, so every journalled step ends with an `end` line. One VM's failure never
//! abandons the others: every VM's outcome is reported.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::apply::journal::Journal;
use crate::apply::limits::Scheduler;
use crate::apply::outputs::VmFacts;
use crate::apply::steps::readiness::Agent;
use crate::apply::steps::{self, VmCtx};
use crate::inputs::model::Ipv4Config;
use crate::plan::desired::DesiredVm;
use crate::plan::diff::{VmAction, VmPlan};
use crate::pve::{PveClient, PveError, WaitOptions};
use crate::retry::{CancellationToken, RetryPolicy};

/// Deadlines and pacing for the executor's steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    pub clone: Duration,
    pub config: Duration,
    pub resize: Duration,
    pub start: Duration,
    /// Graceful guest shutdown before a hard stop on destroy/replace.
    pub shutdown: Duration,
    /// Added to `shutdown` for the shutdown task itself to end.
    pub shutdown_grace: Duration,
    pub delete: Duration,
    /// How long to wait for the guest agent to report an address after a start
    /// (`post_apply_ssh_readiness.connectivity_wait_s`; 0 = a single attempt).
    pub agent_wait: Duration,
    /// How long to look for a clone whose outcome is unknown before concluding it did not
    /// happen (the cluster must stay readable throughout).
    pub unknown_settle: Duration,
    /// First retry delay; doubles with ±25 % jitter up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per step before a transient error becomes the step's failure.
    pub max_attempts: u32,
    /// Task polls start at this interval and double up to `max_poll`.
    pub initial_poll: Duration,
    pub max_poll: Duration,
    /// Real seconds per engine second (1.0 on a real cluster; a simulator's time scale).
    pub scale: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            clone: Duration::from_secs(1800),
            config: Duration::from_secs(300),
            resize: Duration::from_secs(600),
            start: Duration::from_secs(300),
            shutdown: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            delete: Duration::from_secs(600),
            agent_wait: Duration::from_secs(300),
            unknown_settle: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_attempts: 6,
            // Most config/start tasks end within ~100 ms on a healthy node: poll early, then
            // back off (doubling) so long clones cost few status reads.
            initial_poll: Duration::from_millis(50),
            max_poll: Duration::from_secs(2),
            scale: 1.0,
        }
    }
}

/// The shortest real time a scaled executor looks for a clone with an unknown outcome.
const UNKNOWN_SETTLE_FLOOR: Duration = Duration::from_millis(500);

impl Timeouts {
    /// Every duration multiplied by `factor` (a simulator running faster than real time), so
    /// deadlines, backoff and polling keep their proportions to the simulated work. The
    /// guest shutdown timeout sent to Proxmox stays in its own (simulated) seconds.
    pub fn scaled(self, factor: f64) -> Self {
        if !(factor.is_finite() && factor > 0.0) || factor == 1.0 {
            return self;
        }
        let s = |d: Duration| d.mul_f64(factor).max(Duration::from_millis(1));
        Self {
            clone: s(self.clone),
            config: s(self.config),
            resize: s(self.resize),
            start: s(self.start),
            shutdown_grace: s(self.shutdown_grace),
            delete: s(self.delete),
            agent_wait: self.agent_wait.mul_f64(factor),
            // Looking for a clone whose outcome is unknown waits on the simulator's real work
            // (its worker writing the config), so it keeps a real-time floor.
            unknown_settle: s(self.unknown_settle).max(UNKNOWN_SETTLE_FLOOR),
            initial_backoff: s(self.initial_backoff),
            max_backoff: s(self.max_backoff),
            initial_poll: s(self.initial_poll),
            max_poll: s(self.max_poll),
            scale: self.scale * factor,
            ..self
        }
    }

    /// The retry policy of a step with this deadline.
    pub fn policy(&self, deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            initial: self.initial_backoff,
            max_interval: self.max_backoff,
            multiplier: 2.0,
            jitter: 0.25,
            max_elapsed: deadline,
            max_attempts: self.max_attempts,
            min_attempts: 0,
        }
    }

    /// The poll schedule (task waits, lock waits) for a wait of `deadline`.
    pub fn poll_policy(&self, deadline: Duration) -> RetryPolicy {
        self.wait_options(deadline).policy()
    }

    fn wait_options(&self, timeout: Duration) -> WaitOptions {
        WaitOptions {
            timeout,
            initial_poll: self.initial_poll,
            max_poll: self.max_poll,
            not_visible_grace: Duration::from_secs(5).mul_f64(self.scale.min(1.0)),
            ..WaitOptions::default()
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
    /// `after` says what goes on without the run, when something does (`; its clone task
    /// keeps running on node …`), else it is empty.
    #[error("{step} of VM {key} (vmid {vmid}) cancelled by the operator{after}")]
    Cancelled {
        step: &'static str,
        key: String,
        vmid: String,
        after: String,
    },
}

/// Progress of one VM, for the CLI's display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressEvent {
    pub vm: String,
    pub step: String,
    /// `start`, `ok`, `error`, `retry`, `cancelled`, `done`.
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
    /// `ok`, `error` or `cancelled`.
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub api_calls: u64,
    /// What the pipeline read back; [`crate::apply::engine::apply_plan`] builds the outputs
    /// from it and then keeps only [`VmOutcome::host_identity`].
    #[serde(skip)]
    pub facts: Option<VmFacts>,
    /// The VM's host-key identity (`vmid=…,uuid=…`, see
    /// [`crate::ssh::known_hosts::vm_identity`]) once its facts were read; what the readiness
    /// gate needs of them.
    #[serde(skip)]
    pub host_identity: Option<String>,
}

/// What the plan phase already knows about an existing VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownVm {
    /// The config as the plan read it (raw values, no digest).
    pub config: BTreeMap<String, String>,
    pub running: bool,
    /// Guest addresses the previous apply recorded, per interface.
    pub agent_ipv4: Option<Vec<Vec<Ipv4Addr>>>,
}

/// Everything the executor needs, shared by the VM pipelines.
pub struct Executor {
    pub client: PveClient,
    pub scheduler: Scheduler,
    pub journal: Arc<Journal>,
    pub timeouts: Timeouts,
    pub progress: ProgressFn,
    /// Fired on Ctrl-C: steps end (journalled) and no new step starts.
    pub cancel: CancellationToken,
    /// Existing VMs by logical key (set by the engine before `execute`).
    /// Taken by each VM's pipeline once (moved into its facts, not copied).
    pub known: std::sync::Mutex<HashMap<String, KnownVm>>,
    /// Learned real time from a start to the guest agent's first answer.
    boot: Mutex<Option<f64>>,
}

impl Executor {
    /// An executor with a fresh write counter and cancellation token.
    pub fn new(
        client: PveClient,
        scheduler: Scheduler,
        journal: Arc<Journal>,
        timeouts: Timeouts,
        progress: ProgressFn,
    ) -> Self {
        Executor {
            client,
            scheduler,
            journal,
            timeouts,
            progress,
            cancel: CancellationToken::new(),
            known: std::sync::Mutex::new(HashMap::new()),
            boot: Mutex::new(None),
        }
    }

    /// The boot time learned from this run's VMs (see `steps::readiness`).
    pub(crate) fn expected_boot(&self) -> Option<Duration> {
        self.boot
            .lock()
            .ok()
            .and_then(|g| *g)
            .map(Duration::from_secs_f64)
    }

    /// One VM's start-to-agent time.
    pub(crate) fn learn_boot(&self, took: Duration) {
        if let Ok(mut g) = self.boot.lock() {
            let s = took.as_secs_f64();
            *g = Some(match *g {
                Some(old) => old * 0.7 + s * 0.3,
                None => s,
            });
        }
    }

    /// Task wait options for a step with this deadline.
    pub fn wait_opts(&self, timeout: Duration) -> WaitOptions {
        self.timeouts.wait_options(timeout)
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
                    host_identity: None,
                }),
            }
        }
        out
    }

    async fn run_vm(&self, plan: &VmPlan) -> VmOutcome {
        let started = Instant::now();
        let mut ctx = VmCtx::new(self, &plan.key.0, plan.vmid, &plan.node);
        let account = Arc::clone(&ctx.account);
        // Each action's state machine is boxed: `execute` spawns every VM at once, and an
        // unboxed task would carry the largest of them (the create pipeline, ~13.5 KB) for
        // every VM, even a no-op, until its outcome is collected (135 MB at 10 000 VMs,
        // measured with heaptrack). Boxed, a task holds a pointer and the machine it runs.
        let result = PveClient::account(account, async {
            match plan.action {
                VmAction::Create => Box::pin(self.create(&mut ctx, plan)).await,
                VmAction::Update => Box::pin(self.update(&ctx, plan)).await,
                VmAction::Noop => Box::pin(self.noop(&ctx, plan)).await,
                VmAction::Delete => Box::pin(steps::remove::remove(&ctx)).await.map(|_| None),
                VmAction::Replace => match Box::pin(steps::remove::remove(&ctx)).await {
                    Ok(()) => {
                        // the old VM is gone from its node; the new one goes where the plan
                        // says
                        ctx.vmid = None;
                        if let Some(want) = &plan.desired {
                            ctx.node = want.node.clone();
                        }
                        Box::pin(self.create(&mut ctx, plan)).await
                    }
                    Err(e) => Err(e),
                },
            }
        })
        .await;
        let (status, error, facts) = match result {
            Ok(f) => ("ok", None, f),
            Err(e @ StepError::Cancelled { .. }) => ("cancelled", Some(e.to_string()), None),
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
            api_calls: ctx.calls(),
            facts,
            host_identity: None,
        }
    }

    fn desired<'p>(&self, ctx: &VmCtx<'_>, plan: &'p VmPlan) -> Result<&'p DesiredVm, StepError> {
        plan.desired.as_deref().ok_or_else(|| {
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
        let vmid = steps::clone::clone_vm(ctx, want).await?;
        ctx.vmid = Some(vmid);
        if let Some(m) = &want.route.migrate {
            let from = steps::clone::clone_node(want);
            steps::migrate::migrate(ctx, &from, &m.node, m.targetstorage.as_deref()).await?;
        }
        let mut config = steps::config::configure(ctx, want, &plan.config_set, &[]).await?;
        if let Some(r) = &plan.resize {
            steps::resize::resize(ctx, &r.disk, r.to_bytes, Some(&mut config)).await?;
        }
        steps::start::start(ctx).await?;
        let agent = if want.agent {
            Agent::AfterStart
        } else {
            Agent::Skip
        };
        steps::readiness::facts(ctx, config, true, agent)
            .await
            .map(Some)
    }

    async fn update(&self, ctx: &VmCtx<'_>, plan: &VmPlan) -> Result<Option<VmFacts>, StepError> {
        let want = self.desired(ctx, plan)?;
        let known = self.take_known(&ctx.key);
        let running_before = known.as_ref().is_some_and(|k| k.running);
        let mut config = known.map(|k| k.config);
        if !plan.config_set.is_empty() || !plan.config_delete.is_empty() {
            config = Some(
                steps::config::configure(ctx, want, &plan.config_set, &plan.config_delete).await?,
            );
            if plan.regenerate_cloudinit {
                steps::config::regenerate_cloudinit(ctx).await?;
            }
        }
        if let Some(r) = &plan.resize {
            steps::resize::resize(ctx, &r.disk, r.to_bytes, config.as_mut()).await?;
        }
        if plan.start {
            steps::start::start(ctx).await?;
        }
        if plan.restart.is_some() {
            steps::restart::restart(ctx).await?;
        }
        let restarted = plan.start || plan.restart.is_some();
        let running = restarted || running_before;
        let agent = match (want.agent, restarted) {
            (false, _) => Agent::Skip,
            (true, true) => Agent::AfterStart,
            (true, false) => Agent::Once,
        };
        let wrote = !plan.config_set.is_empty() || !plan.config_delete.is_empty();
        let config = match config {
            // A running VM that was written to and not (re)started may keep some of it
            // pending: the outputs report what runs, so ask Proxmox (`current`).
            _ if running && !restarted && wrote => self.read_config(ctx).await?,
            Some(c) => c,
            None => self.read_config(ctx).await?,
        };
        steps::readiness::facts(ctx, config, running, agent)
            .await
            .map(Some)
    }

    /// An unchanged VM: its facts are what the plan read; its guest addresses are those the
    /// previous apply recorded when they cannot have changed (static addresses only), else the
    /// agent is asked once.
    async fn noop(&self, ctx: &VmCtx<'_>, plan: &VmPlan) -> Result<Option<VmFacts>, StepError> {
        let Some(want) = plan.desired.as_ref() else {
            return Ok(None);
        };
        let known = self.take_known(&ctx.key);
        let running = known.as_ref().is_some_and(|k| k.running);
        let static_only = !want.nics.is_empty()
            && want
                .nics
                .iter()
                .all(|n| matches!(n.ipv4, Ipv4Config::Static { .. }));
        let agent = match known.as_ref().and_then(|k| k.agent_ipv4.clone()) {
            _ if !want.agent || !running => Agent::Skip,
            Some(a) if static_only && !a.is_empty() => Agent::Known(a),
            _ => Agent::Once,
        };
        let config = match known {
            Some(k) => k.config,
            None => self.read_config(ctx).await?,
        };
        steps::readiness::facts(ctx, config, running, agent)
            .await
            .map(Some)
    }

    /// What the plan read of `key`, taken (each VM's pipeline runs once).
    fn take_known(&self, key: &str) -> Option<KnownVm> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// Read the config the VM runs (`current`: not what it gets at its next start) when
    /// nothing of this run knows it (an unchanged VM the plan did not read, a running VM with
    /// changes that may be pending).
    async fn read_config(&self, ctx: &VmCtx<'_>) -> Result<BTreeMap<String, String>, StepError> {
        let vmid = ctx.vmid.unwrap_or_default();
        let node = ctx.node.clone();
        steps::run_step(
            ctx,
            "facts",
            self.timeouts.policy(self.timeouts.config),
            None,
            || async {
                let cfg = self
                    .client
                    .vm_config(&node, vmid, true)
                    .await
                    .map_err(steps::AttemptError::pve)?;
                let mut raw = cfg.raw;
                raw.remove("digest");
                Ok(raw)
            },
        )
        .await
    }

    /// Destroy one VM by id (destroy command).
    pub async fn destroy_vm(&self, key: &str, vmid: u32, node: &str) -> VmOutcome {
        let started = Instant::now();
        let ctx = VmCtx::new(self, key, Some(vmid), node);
        let account = Arc::clone(&ctx.account);
        let (status, error) = match PveClient::account(account, steps::remove::remove(&ctx)).await {
            Ok(()) => ("ok", None),
            Err(e @ StepError::Cancelled { .. }) => ("cancelled", Some(e.to_string())),
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
            api_calls: ctx.calls(),
            facts: None,
            host_identity: None,
        }
    }
}
