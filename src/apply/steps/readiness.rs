//! The facts and readiness of a VM: the outputs are built from what this run already knows
//! (the config read before the write, with the write applied; the power state from the plan
//! or the start task), so no re-read is needed; after a start, the guest agent is asked for
//! addresses until the readiness budget (`post_apply_ssh_readiness.connectivity_wait_s`)
//! runs out: first when the guest is expected to have booted (learned from the VMs of this
//! run that booted already), then a tenth of it later, a quarter longer each time; until
//! one VM booted, from one second on, half again longer each time.
//! An agent that never answers is not an error here: the SSH readiness gate decides
//! readiness.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::apply::executor::StepError;
use crate::apply::outputs::VmFacts;
use crate::apply::steps::{run_step, AttemptError, VmCtx};
use crate::pve::{GuestInterface, PveError};
use crate::retry::{Classify, Disposition, RetryPolicy};

/// How the guest agent is asked for addresses.
pub(crate) enum Agent {
    /// Just started: poll until addresses arrive or the readiness budget runs out.
    AfterStart,
    /// Ask once (an unchanged running VM whose addresses were not recorded).
    Once,
    /// Known already (recorded by the previous apply for an unchanged VM whose addresses
    /// cannot change without a config change).
    Known(Vec<Vec<Ipv4Addr>>),
    /// Not asked: no agent, or the VM does not run.
    Skip,
}

/// The facts of `ctx.vmid` from its known `config` and power state, asking the agent as
/// `agent` says.
pub(crate) async fn facts(
    ctx: &VmCtx<'_>,
    config: BTreeMap<String, String>,
    running: bool,
    agent: Agent,
) -> Result<VmFacts, StepError> {
    let agent_ipv4 = match agent {
        Agent::Known(a) => a,
        Agent::Skip => Vec::new(),
        _ if !running => Vec::new(),
        Agent::Once => readiness(ctx, &config, Duration::ZERO, false).await?,
        Agent::AfterStart => readiness(ctx, &config, ctx.exec.timeouts.agent_wait, true).await?,
    };
    Ok(VmFacts {
        vmid: ctx.vmid.unwrap_or_default(),
        node: ctx.node.clone(),
        config,
        running,
        agent_ipv4,
    })
}

/// An agent answer that is not (yet) useful keeps the poll going.
struct AgentPoll(PveError);
impl Classify for AgentPoll {
    fn disposition(&self) -> Disposition {
        Disposition::Transient
    }
}

/// Poll the guest agent for addresses per NIC (netN order by MAC, then others) until some
/// arrive or `budget` runs out (a budget of 0 makes one attempt). With `booting`, the first
/// poll waits for the expected boot time.
async fn readiness(
    ctx: &VmCtx<'_>,
    config: &BTreeMap<String, String>,
    budget: Duration,
    booting: bool,
) -> Result<Vec<Vec<Ipv4Addr>>, StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let macs = crate::apply::outputs::nic_macs(config);
    let scale = exec.timeouts.scale;
    let started = Instant::now();
    let learned = exec.expected_boot().filter(|_| booting);
    // a little after the expected boot, so most first looks find the agent up
    let expected = learned
        .map(|e| e.mul_f64(1.1))
        .unwrap_or(Duration::ZERO)
        .min(budget);
    let first_gap = match learned {
        // a tenth of the expected boot after it, at least a second
        Some(e) => (e / 10).max(Duration::from_secs_f64(scale)),
        None => Duration::from_secs_f64(scale),
    };
    let poll = RetryPolicy {
        initial: first_gap.max(Duration::from_millis(1)),
        max_interval: Duration::from_secs_f64(5.0 * scale).max(Duration::from_millis(1)),
        multiplier: if learned.is_some() { 1.25 } else { 1.5 },
        max_elapsed: budget.saturating_sub(expected),
        max_attempts: 0,
        min_attempts: 0,
        jitter: 0.0,
    };
    let last_miss: Mutex<Option<Instant>> = Mutex::new(None);
    run_step(ctx, "readiness", RetryPolicy::once(), None, || async {
        if !expected.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(expected.saturating_sub(started.elapsed())) => {}
                _ = exec.cancel.cancelled() => {
                    return Err(AttemptError::other("cancelled", Disposition::Permanent));
                }
            }
        }
        let polled = poll
            .poll(Some(&exec.cancel), || async {
                let answer = client.agent_network_interfaces(node, vmid).await;
                let found = match answer {
                    Ok(ifaces) => per_nic(&ifaces, &macs),
                    Err(e) => {
                        if let Ok(mut g) = last_miss.lock() {
                            *g = Some(Instant::now());
                        }
                        return Err(AgentPoll(e));
                    }
                };
                if found.is_empty() {
                    if let Ok(mut g) = last_miss.lock() {
                        *g = Some(Instant::now());
                    }
                }
                Ok::<_, AgentPoll>((!found.is_empty()).then_some(found))
            })
            .await;
        match polled {
            Ok(v) => {
                if booting {
                    // between the last look that missed and now; up at the first look, a
                    // little below that look (the estimate settles just above the boot)
                    let now = Instant::now();
                    let took = match last_miss.lock().ok().and_then(|g| *g) {
                        Some(lo) => (lo + (now - lo) / 2) - started,
                        None => (now - started).mul_f64(0.85),
                    };
                    exec.learn_boot(took);
                }
                Ok(v.value)
            }
            Err(e) if e.is_cancelled() => {
                Err(AttemptError::other("cancelled", Disposition::Permanent))
            }
            Err(e) => {
                if let Some(last) = e.last() {
                    tracing::debug!(vm = %ctx.key, error = %last.0, "guest agent gave no address");
                }
                Ok(Vec::new())
            }
        }
    })
    .await
}

fn per_nic(ifaces: &[GuestInterface], macs: &[String]) -> Vec<Vec<Ipv4Addr>> {
    let mut per_mac: Vec<Vec<Ipv4Addr>> = vec![Vec::new(); macs.len()];
    let mut others: Vec<Vec<Ipv4Addr>> = Vec::new();
    for iface in ifaces {
        let v4: Vec<Ipv4Addr> = iface
            .ip_addresses
            .iter()
            .filter_map(|ip| match ip.ip_address {
                std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_link_local() => Some(a),
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
    per_mac
}
