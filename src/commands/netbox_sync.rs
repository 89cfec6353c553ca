//! The inventory sync after apply (contract §4.7) and the destroy sync (§4.8) of the module
//! commands, in place of upstream's `export-infra` + `sync-netbox` hooks: the dataset rows
//! built from the published outputs (with the configured or allocated address, the MAC and
//! the role), the NetBox sync itself, `hook_netbox_sync.json` (upstream's keys, plus the
//! summary) and the dataset files. Non-strict as upstream: every failure is a warning in the
//! driver result, unless `HYOPS_NETBOX_SYNC_STRICT` is truthy, when it fails the run.
//! `HYOPS_NETBOX_SYNC_DESTROY_HARD_DELETE` makes destroy delete NetBox VMs instead of
//! soft-retiring them; IP reservations are never released. Part of the CLI layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::apply::engine::ApplyReport;
use crate::commands::context::Ctx;
use crate::commands::ipam::{client_for, hydrate};
use crate::commands::netbox_dataset::{
    dataset_paths, write_evidence_dataset, write_shared_dataset, DatasetRow,
};
use crate::commands::phases::Run;
use crate::commands::CliError;
use crate::hyops::fsio::object_members;
use crate::hyops::netbox_env::NETBOX_MODULE_ID;
use crate::hyops::write_json_atomic;
use crate::netbox::sync::{
    destroy_sync, infer_cluster, sync_vms, SyncNic, SyncOptions, SyncVm, VmRef,
};
use crate::netbox::NetboxClient;
use crate::plan::artifact::PlanArtifact;
use crate::plan::diff::VmAction;

/// Turns sync failures into run failures.
pub const SYNC_STRICT_ENV: &str = "HYOPS_NETBOX_SYNC_STRICT";
/// Makes destroy delete NetBox VMs instead of soft-retiring them.
pub const HARD_DELETE_ENV: &str = "HYOPS_NETBOX_SYNC_DESTROY_HARD_DELETE";

fn truthy(env: &BTreeMap<String, String>, key: &str) -> bool {
    env.get(key)
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| ["1", "true", "yes", "on"].contains(&v.as_str()))
}

/// Build the sync rows from the raw outputs and the plan (role, configured addresses);
/// `prior` gives each logical key's name in the slot's previous state (renames).
pub fn rows_from_outputs(
    outputs: &Value,
    plan: &PlanArtifact,
    prior: &BTreeMap<String, (String, Vec<String>)>,
) -> Vec<(SyncVm, Option<u64>)> {
    let roles: BTreeMap<&str, &str> = plan
        .vms
        .iter()
        .filter(|v| v.action != VmAction::Delete)
        .filter_map(|v| {
            v.desired
                .as_ref()
                .map(|d| (v.key.0.as_str(), d.role.as_str()))
        })
        .collect();
    let Some(vms) = outputs.get("vms").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, vm) in vms {
        let s = |k: &str| vm.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| vm.get(k).and_then(Value::as_u64);
        let tags: Vec<String> = vm
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let macs: Vec<String> = vm
            .get("mac_addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let agent: Vec<Vec<String>> = vm
            .get("ipv4_addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|l| {
                        l.as_array()
                            .map(|x| {
                                x.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let configured: Vec<Value> = vm
            .get("interfaces_configured")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut nics = Vec::new();
        for (i, nic) in configured.iter().enumerate() {
            let conf = nic
                .get("ipv4")
                .and_then(|v| v.get("address"))
                .and_then(Value::as_str)
                .unwrap_or("");
            // The configured (or allocated) address first; the guest agent's otherwise.
            let (address, assignment) = if !conf.is_empty() && !conf.eq_ignore_ascii_case("dhcp") {
                (Some(conf.to_string()), Some("static".to_string()))
            } else {
                let reported = agent
                    .get(i)
                    .and_then(|l| {
                        l.iter().find(|a| {
                            a.parse::<std::net::Ipv4Addr>()
                                .is_ok_and(|x| !x.is_loopback())
                        })
                    })
                    .map(|a| format!("{a}/32"));
                let assign = reported.as_ref().map(|_| "dhcp".to_string());
                (reported, assign)
            };
            let mac = nic
                .get("mac_address")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| macs.get(i).cloned());
            nics.push(SyncNic {
                name: format!("eth{i}"),
                mac,
                address,
                assignment,
            });
        }
        let started = vm.get("status").and_then(Value::as_bool).unwrap_or(false);
        let name = s("vm_name");
        let name = if name.is_empty() { key.clone() } else { name };
        let previous_name = prior
            .get(key)
            .map(|(n, _)| n.clone())
            .filter(|n| *n != name);
        out.push((
            SyncVm {
                name,
                previous_name,
                cluster: infer_cluster(&tags),
                status: if started { "active" } else { "offline" }.into(),
                vcpus: n("cpu_cores"),
                memory_mb: n("memory_mb"),
                disk_gb: n("disk_gb"),
                role: roles
                    .get(key.as_str())
                    .map(|r| r.to_string())
                    .filter(|r| !r.is_empty()),
                tags,
                external_id: n("vm_id")
                    .map(|id| format!("onprem-proxmox:{id}"))
                    .unwrap_or_default(),
                nics,
            },
            n("vm_id"),
        ));
    }
    out
}

/// The VMs this slot last published (name and tags), by logical key.
///
/// Upstream reads them only from an `ok` state, so a destroy retried after a failed or
/// cancelled one (state `error`/`running`, outputs of the last good apply kept) never retires
/// the NetBox VMs. Here every state that still holds outputs counts; `destroyed` holds none.
pub(crate) fn prior_vms(
    state: Option<&Map<String, Value>>,
) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    let Some(s) = state else { return out };
    if s.get("status").and_then(Value::as_str).map(str::trim) == Some("destroyed") {
        return out;
    }
    let Some(vms) = s
        .get("outputs")
        .and_then(|o| o.get("vms"))
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (k, vm) in vms {
        if let Some(entry) = prior_vm(vm) {
            out.insert(k.clone(), entry);
        }
    }
    out
}

/// [`prior_vms`] of the state file's members as raw JSON texts (see
/// [`ModuleState::read_members`]): only the VM entries are built as values, one at a time
/// (the whole state of 10 000 VMs is ~80 MB as values).
pub(crate) fn prior_vms_of_members(
    members: &BTreeMap<String, &RawValue>,
) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    let status: Option<Value> = members
        .get("status")
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    if status.as_ref().and_then(Value::as_str).map(str::trim) == Some("destroyed") {
        return out;
    }
    let Some(vms) = members
        .get("outputs")
        .and_then(|o| object_members(o))
        .and_then(|o| o.get("vms").copied())
        .and_then(object_members)
    else {
        return out;
    };
    for (k, raw) in vms {
        let Ok(vm) = serde_json::from_str::<Value>(raw.get()) else {
            continue;
        };
        if let Some(entry) = prior_vm(&vm) {
            out.insert(k, entry);
        }
    }
    out
}

/// One `outputs.vms` entry's name and tags; `None` without a name.
fn prior_vm(vm: &Value) -> Option<(String, Vec<String>)> {
    let name = vm
        .get("vm_name")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return None;
    }
    let tags = vm
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|t| t.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    Some((name, tags))
}

/// The upstream warning when NetBox settings are missing (§4.7 step 2).
fn missing_hint(ctx: &Ctx, missing: &str) -> String {
    let mut hint = format!("push_to_netbox requires {missing}. ");
    if missing.contains("NETBOX_API_TOKEN") {
        let env = ctx.env_name.clone().unwrap_or_else(|| "<env>".into());
        hint.push_str(&format!(
            "Generate/store NETBOX_API_TOKEN in runtime vault via: hyops secrets ensure --env {env} NETBOX_API_TOKEN. (vault: {}) ",
            ctx.root.vault_file().display()
        ));
    }
    if missing.contains("NETBOX_API_URL") {
        let status = crate::hyops::fsio::read_json_opt(
            &ctx.root
                .state_dir()
                .join("modules")
                .join(NETBOX_MODULE_ID)
                .join("latest.json"),
        )
        .ok()
        .flatten()
        .and_then(|v| {
            v.get("status")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
        if !status.is_empty() && status != "ok" && status != "ready" {
            hint.push_str(&format!(
                "NetBox module state platform/onprem/netbox is not ready (status={status}); apply it to publish netbox_api_url. "
            ));
        }
    }
    hint.trim().to_string()
}

/// A connected client, or the non-strict warning / strict error.
async fn connect(ctx: &Ctx, run: &Run) -> Result<NetboxClient, String> {
    let (env, _) = hydrate(ctx).map_err(|e| e.message)?;
    let (url, token) = match (&env.api_url, &env.api_token) {
        (Some(u), Some(t)) => (u.clone(), t.clone()),
        _ => {
            let mut missing = Vec::new();
            if env.api_url.is_none() {
                missing.push("NETBOX_API_URL");
            }
            if env.api_token.is_none() {
                missing.push("NETBOX_API_TOKEN");
            }
            return Err(missing_hint(ctx, &missing.join(", ")));
        }
    };
    client_for(
        &env,
        &url,
        &token,
        Duration::from_secs(30),
        crate::netbox::default_policy(),
        Some(&run.run_id),
    )
    .map_err(|e| e.message)
}

/// Upstream `probe_client`: `GET /api/status/`, one attempt.
async fn probe(client: &NetboxClient) -> Result<(), String> {
    match client.status().await {
        Ok(_) => Ok(()),
        Err(e) => match e.status() {
            Some(code) => Err(format!("NetBox API probe failed ({code}): {e}")),
            None => Err(format!("NetBox API unreachable: {e}")),
        },
    }
}

/// `hook_netbox_sync.json`: upstream's keys (`command`, `cwd`, `dataset_json`,
/// `dataset_csv`, `rc`) and the sync's own (`engine`, `strict`, `netbox_api_version`,
/// `summary`).
fn hook_record(
    command: Vec<String>,
    run: &Run,
    (dataset_json, dataset_csv): (&Path, &Path),
    rc: i32,
    strict: bool,
    api_version: Option<String>,
    summary: Value,
) -> Value {
    json!({
        "command": command,
        "cwd": run.evidence.display().to_string(),
        "dataset_json": dataset_json.display().to_string(),
        "dataset_csv": dataset_csv.display().to_string(),
        "rc": rc,
        "engine": "hyops-pve built-in NetBox sync",
        "strict": strict,
        "netbox_api_version": api_version,
        "summary": summary,
    })
}

/// Non-strict: a warning; strict: the run fails with `error`.
fn soft(strict: bool, warning: String, error: String) -> Result<Vec<String>, CliError> {
    if strict {
        Err(CliError::msg(error))
    } else {
        Ok(vec![warning])
    }
}

/// The inventory sync after a successful apply. `prior` is [`prior_vms`] of the slot's state
/// before the run (its VMs that are gone now are retired). Returns the warnings for the driver result;
/// fails only with `HYOPS_NETBOX_SYNC_STRICT`.
pub async fn after_apply(
    ctx: &Ctx,
    run: &Run,
    plan: &PlanArtifact,
    report: &ApplyReport,
    prior: &BTreeMap<String, (String, Vec<String>)>,
) -> Result<Vec<String>, CliError> {
    let strict = truthy(&ctx.env_vars, SYNC_STRICT_ENV);
    let rows = rows_from_outputs(&report.outputs, plan, prior);
    let current: BTreeSet<String> = rows.iter().map(|(v, _)| v.name.clone()).collect();
    // This slot's VMs that are gone since the last ok state: retire them (and only them);
    // a renamed VM is not gone, the sync renames it.
    let renamed: BTreeSet<String> = rows
        .iter()
        .filter_map(|(v, _)| v.previous_name.clone())
        .collect();
    let retire: Vec<VmRef> = prior
        .values()
        .filter(|(name, _)| !current.contains(name) && !renamed.contains(name))
        .map(|(name, tags)| VmRef {
            name: name.clone(),
            cluster: infer_cluster(tags),
        })
        .collect();
    let dataset: Vec<DatasetRow<'_>> = rows
        .iter()
        .map(|(vm, vmid)| DatasetRow { vm, vmid: *vmid })
        .collect();
    // The VMs exist whether or not their dataset files can be written: a file that cannot be
    // written is reported at the run's end, and NetBox is still synced from the rows in memory.
    run.evidence_failures.keep(write_evidence_dataset(
        &run.evidence.join("hook_netbox_sync.dataset.json"),
        &dataset,
    ));
    let mut replaced: BTreeSet<String> = current.clone();
    replaced.extend(retire.iter().map(|r| r.name.clone()));
    let (dataset_json, dataset_csv) = run
        .evidence_failures
        .keep(write_shared_dataset(ctx, &dataset, &replaced))
        .unwrap_or_else(|| dataset_paths(ctx));
    drop(dataset);
    let command = vec![
        "hyops-pve".to_string(),
        "netbox-sync".to_string(),
        "--dataset".to_string(),
        dataset_json.display().to_string(),
    ];
    let client = match connect(ctx, run).await {
        Ok(c) => c,
        Err(hint) => {
            return soft(
                strict,
                format!("push_to_netbox disabled (non-strict): {hint}"),
                hint,
            )
        }
    };
    if rows.is_empty() {
        let e = format!("dataset has no rows: {}", dataset_json.display());
        return soft(
            strict,
            format!("push_to_netbox disabled (non-strict): dataset check failed: {e}"),
            format!("push_to_netbox dataset check failed: {e}"),
        );
    }
    let vms: Vec<SyncVm> = rows.into_iter().map(|(v, _)| v).collect();
    let opts = SyncOptions::from_env(&ctx.env_vars);
    let (rc, summary, warnings) = match probe(&client).await {
        Err(e) => (3, json!({"error": e}), vec![format!("netbox sync: {e}")]),
        Ok(()) => {
            let rep = sync_vms(&client, &vms, &retire, &opts).await;
            let mut w: Vec<String> = rep
                .warnings
                .iter()
                .map(|x| format!("netbox sync: {x}"))
                .collect();
            w.extend(rep.errors.iter().map(|x| format!("netbox sync: {x}")));
            let rc = if rep.errors.is_empty() { 0 } else { 4 };
            (rc, serde_json::to_value(&rep).unwrap_or(Value::Null), w)
        }
    };
    let record = hook_record(
        command,
        run,
        (&dataset_json, &dataset_csv),
        rc,
        strict,
        client.api_version(),
        summary.clone(),
    );
    finish_hook(run, &record, &summary, rc, strict, warnings)
}

/// The destroy sync (§4.8) from the prior state, before `destroyed` is written. Returns the
/// warnings; fails only with `HYOPS_NETBOX_SYNC_STRICT`.
pub async fn after_destroy(
    ctx: &Ctx,
    run: &Run,
    prior_state: Option<&Map<String, Value>>,
) -> Result<Vec<String>, CliError> {
    let strict = truthy(&ctx.env_vars, SYNC_STRICT_ENV);
    let prior = prior_vms(prior_state);
    if prior.is_empty() {
        // Upstream: no ok prior state with VMs means no destroy dataset and no sync.
        return Ok(Vec::new());
    }
    let rows: Vec<Value> = prior
        .values()
        .map(|(name, tags)| json!({"name": name, "cluster": infer_cluster(tags), "tags": tags.join(";")}))
        .collect();
    let dataset = run.evidence.join("hook_netbox_destroy_vms.dataset.json");
    // The VMs are gone whether or not this can be written: NetBox is still synced.
    run.evidence_failures
        .keep(write_json_atomic(&dataset, &Value::Array(rows)));
    let hard = truthy(&ctx.env_vars, HARD_DELETE_ENV);
    let mut command = vec![
        "hyops-pve".to_string(),
        "netbox-sync".to_string(),
        "--dataset".to_string(),
        dataset.display().to_string(),
        "--destroy-sync".to_string(),
    ];
    if hard {
        command.push("--hard-delete".into());
    }
    let client = match connect(ctx, run).await {
        Ok(c) => c,
        Err(hint) => {
            return soft(
                strict,
                format!("push_to_netbox disabled (non-strict): {hint}"),
                hint,
            )
        }
    };
    let targets: Vec<VmRef> = prior
        .values()
        .map(|(name, tags)| VmRef {
            name: name.clone(),
            cluster: infer_cluster(tags),
        })
        .collect();
    let opts = SyncOptions::from_env(&ctx.env_vars);
    let (rc, summary, warnings) = match probe(&client).await {
        Err(e) => (3, json!({"error": e}), vec![format!("netbox sync: {e}")]),
        Ok(()) => {
            let rep = destroy_sync(&client, &targets, hard, &opts).await;
            let w: Vec<String> = rep
                .errors
                .iter()
                .map(|x| format!("netbox sync: {x}"))
                .collect();
            let rc = if rep.errors.is_empty() { 0 } else { 4 };
            (rc, serde_json::to_value(&rep).unwrap_or(Value::Null), w)
        }
    };
    let (_, csv) = dataset_paths(ctx);
    let record = hook_record(
        command,
        run,
        (&dataset, &csv),
        rc,
        strict,
        client.api_version(),
        summary.clone(),
    );
    finish_hook(run, &record, &summary, rc, strict, warnings)
}

/// Write `hook_netbox_sync.json` and `hook_netbox_sync.result.json`, then apply upstream's
/// non-strict rule: a failed sync (`rc != 0`) is a leading warning, or the error with
/// `HYOPS_NETBOX_SYNC_STRICT`.
fn finish_hook(
    run: &Run,
    record: &Value,
    summary: &Value,
    rc: i32,
    strict: bool,
    mut warnings: Vec<String>,
) -> Result<Vec<String>, CliError> {
    // The sync has run: its record failing to be written is reported at the run's end.
    run.evidence_failures.keep(write_json_atomic(
        &run.evidence.join("hook_netbox_sync.json"),
        record,
    ));
    run.evidence_failures.keep(write_json_atomic(
        &run.evidence.join("hook_netbox_sync.result.json"),
        summary,
    ));
    if rc != 0 {
        if strict {
            return Err(CliError::msg(format!(
                "netbox sync failed with rc={rc}: {}",
                warnings.join("; ")
            )));
        }
        warnings.insert(0, format!("netbox sync failed (non-strict) with rc={rc}"));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    type PriorVms = BTreeMap<String, (String, Vec<String>)>;

    /// `prior_vms` of the whole state, and of its raw members, for one state text.
    fn both(text: &str) -> (PriorVms, PriorVms) {
        let whole: Value = serde_json::from_str(text).unwrap();
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let members = object_members(raw).unwrap();
        (prior_vms(whole.as_object()), prior_vms_of_members(&members))
    }

    #[test]
    fn the_prior_vms_of_a_states_raw_members_are_those_of_the_whole_state() {
        for text in [
            r#"{"status": "ok", "outputs": {"vms": {"b": {"vm_name": " dev-b ", "tags": [" x ", 1, "y"]}, "a": {"vm_name": "dev-a"}, "c": {"vm_name": ""}, "d": [1], "e": {"vm_name": 5}, "a": {"vm_name": "dev-a2", "tags": "t"}}}}"#,
            r#"{"status": " destroyed ", "outputs": {"vms": {"a": {"vm_name": "dev-a"}}}}"#,
            r#"{"status": 3, "outputs": {"vms": {"a": {"vm_name": "dev-a"}}}}"#,
            r#"{"outputs": {"vms": [1]}}"#,
            r#"{"outputs": [{"vms": {}}]}"#,
            r#"{"outputs": {"vm_names": ["a"]}}"#,
            r#"{}"#,
        ] {
            let (whole, members) = both(text);
            assert_eq!(whole, members, "{text}");
        }
        let (whole, _) = both(
            r#"{"status": "error", "outputs": {"vms": {"a": {"vm_name": "dev-a", "tags": ["env-dev"]}}}}"#,
        );
        assert_eq!(
            whole["a"],
            ("dev-a".to_string(), vec!["env-dev".to_string()])
        );
    }
}
