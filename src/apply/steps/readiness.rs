//! The readiness and facts steps: read back what the outputs need (config, power state) and,
//! after a start, wait for the guest agent to report addresses until the readiness budget
//! (`post_apply_ssh_readiness.connectivity_wait_s`) runs out. An agent that never answers is
//! not an error here: the SSH readiness gate decides readiness.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::apply::executor::StepError;
use crate::apply::outputs::VmFacts;
use crate::apply::steps::{run_step, AttemptError, VmCtx};
use crate::plan::diff::VmPlan;
use crate::pve::{GuestInterface, PveError, VmConfig};
use crate::retry::{Classify, Disposition, RetryPolicy};

/// Read back the facts of `ctx.vmid`; with `wait_agent`, poll the agent for addresses.
pub(crate) async fn facts(
    ctx: &VmCtx<'_>,
    plan: &VmPlan,
    wait_agent: bool,
) -> Result<Option<VmFacts>, StepError> {
    let Some(want) = plan.desired.as_ref() else {
        return Ok(None);
    };
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let (cfg, running) = run_step(
        ctx,
        "facts",
        exec.timeouts.policy(exec.timeouts.config),
        None,
        || async {
            ctx.read();
            // `current`: what the VM runs, not what it gets at its next start (the outputs
            // report what runs).
            let cfg = client
                .vm_config(node, vmid, true)
                .await
                .map_err(AttemptError::pve)?;
            ctx.read();
            let running = client
                .vm_status(node, vmid)
                .await
                .map_err(AttemptError::pve)?
                .is_running();
            Ok((cfg, running))
        },
    )
    .await?;
    let mut agent_ipv4 = Vec::new();
    if running && want.agent {
        let budget = if wait_agent {
            exec.timeouts.agent_wait
        } else {
            Duration::ZERO
        };
        agent_ipv4 = readiness(ctx, &cfg, budget).await?;
    }
    let mut config = cfg.raw.clone();
    config.remove("digest");
    Ok(Some(VmFacts {
        vmid,
        node: ctx.node.clone(),
        config,
        running,
        agent_ipv4,
    }))
}

/// An agent answer that is not (yet) useful keeps the poll going.
struct AgentPoll(PveError);
impl Classify for AgentPoll {
    fn disposition(&self) -> Disposition {
        Disposition::Transient
    }
}

/// Poll the guest agent for addresses per NIC (netN order by MAC, then others) until some
/// arrive or `budget` runs out (a budget of 0 makes one attempt).
async fn readiness(
    ctx: &VmCtx<'_>,
    cfg: &VmConfig,
    budget: Duration,
) -> Result<Vec<Vec<Ipv4Addr>>, StepError> {
    let exec = ctx.exec;
    let client = &exec.client;
    let vmid = ctx.vmid.unwrap_or_default();
    let node = ctx.node.as_str();
    let macs = crate::apply::outputs::nic_macs(&cfg.raw);
    let poll = RetryPolicy {
        initial: Duration::from_millis(100),
        max_interval: Duration::from_secs(5),
        max_elapsed: budget,
        max_attempts: 0,
        jitter: 0.0,
        ..RetryPolicy::default()
    }
    .scaled(exec.timeouts.scale);
    run_step(ctx, "readiness", RetryPolicy::once(), None, || async {
        let polled = poll
            .poll(Some(&exec.cancel), || async {
                ctx.read();
                let ifaces = client
                    .agent_network_interfaces(node, vmid)
                    .await
                    .map_err(AgentPoll)?;
                let found = per_nic(&ifaces, &macs);
                Ok::<_, AgentPoll>((!found.is_empty()).then_some(found))
            })
            .await;
        match polled {
            Ok(v) => Ok(v.value),
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
