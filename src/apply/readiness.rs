//! The post-apply phase of an apply: the SSH readiness gate (contract §5) run on the
//! published-shape outputs after the rollout, as upstream runs it after `terragrunt output`.
//! Adapts the typed inputs and the executor's facts to [`crate::ssh::gate`]; the caller (the
//! commands layer, later the driver mode) decides what a failure does to the state.
//! Knows nothing about flags or where state lives.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::apply::executor::VmOutcome;
use crate::inputs::model::ReadinessConfig;
use crate::ssh::gate::{run_gate, GateConfig, GateEnv, GateReport};

/// The gate settings from `post_apply_ssh_readiness` (contract §1.12).
pub fn gate_config(r: &ReadinessConfig) -> GateConfig {
    GateConfig {
        enabled: r.enabled,
        required: r.required,
        target_user: r.target_user.clone().unwrap_or_else(|| "opsadmin".into()),
        target_port: r.target_port,
        connectivity_timeout_s: r.connectivity_timeout_s,
        connectivity_wait_s: r.connectivity_wait_s,
        ssh_proxy_jump_auto: r.ssh_proxy_jump_auto,
        ssh_proxy_jump_host: r.ssh_proxy_jump_host.clone().unwrap_or_default(),
        ssh_proxy_jump_user: r.ssh_proxy_jump_user.clone().unwrap_or_default(),
        ssh_proxy_jump_port: r.ssh_proxy_jump_port,
        ssh_private_key_file: r.ssh_private_key_file.clone().unwrap_or_default(),
        wait_cloud_init: r.wait_cloud_init,
    }
}

/// Logical key → host-key identity (`vmid=…,uuid=…`) of every VM the apply read back, so a
/// VM the engine re-created gets its known_hosts entry replaced, not refused. An outcome
/// still holding its facts (not yet through [`crate::apply::engine::apply_plan`]) gives the
/// identity from them.
pub fn vm_identities(outcomes: &[VmOutcome]) -> BTreeMap<String, String> {
    outcomes
        .iter()
        .filter_map(|o| {
            let id = match (&o.host_identity, &o.facts) {
                (Some(id), _) => id.clone(),
                (None, Some(f)) => f.host_identity(),
                (None, None) => return None,
            };
            Some((o.key.clone(), id))
        })
        .collect()
}

/// Run the gate over `outputs` (the module outputs of this apply).
pub async fn post_apply_readiness(
    readiness: &ReadinessConfig,
    outputs: &Value,
    outcomes: &[VmOutcome],
    mut env: GateEnv,
) -> GateReport {
    env.vm_identities = vm_identities(outcomes);
    run_gate(&gate_config(readiness), outputs, &env).await
}
