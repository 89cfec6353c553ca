//! `POST /nodes/{node}/qemu/{vmid}/migrate` with qemu-server's semantics for an offline
//! migration (`API2/Qemu.pm` `migrate_vm`, `QemuMigrate.pm`, qemu-server@e6352be6):
//! synchronous checks (target is not the local node, target exists, config on this node,
//! `lock`, a running VM needs `online`, every volume's storage enabled on the target or the
//! `targetstorage` map usable there), then the `qmigrate` task: `lock: migrate` while local
//! volumes are copied (time ∝ size / bandwidth) to the mapped storage on the target; a linked
//! clone on local storage cannot move (`can't migrate '…' as it's a clone of '…'`); at the end
//! the config moves to the target node. Knows nothing about the wire format.

use super::core::{check_lock, load_vm, ApiError, Call, Sim};
use super::latency::LatencyModel;
use super::model::drive_file;
use super::vm::lock_conf;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `targetstorage`: `STORAGE` (all volumes) or `SRC:DST[,SRC:DST…]` (pve-storage-id pairs,
/// `parse_idmap`); `1` means "the same storage ids" (identity).
fn parse_storage_map(v: &str) -> Result<(Option<String>, BTreeMap<String, String>), String> {
    let mut default = None;
    let mut map = BTreeMap::new();
    for part in super::check::split_list(v) {
        match part.split_once(':') {
            Some((a, b)) => {
                map.insert(a.to_string(), b.to_string());
            }
            None if part == "1" => {}
            None => default = Some(part.to_string()),
        }
    }
    Ok((default, map))
}

/// `POST …/migrate`.
pub fn migrate(sim: &Arc<Sim>, call: &Call) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let node = call.node().to_string();
    let target = call.get("target").unwrap_or_default().to_string();
    if target == node {
        return Err(ApiError::param("target", "target is local node."));
    }
    let (default_storage, storage_map) = match call.get("targetstorage") {
        Some(v) => parse_storage_map(v).map_err(|e| {
            ApiError::param("targetstorage", format!("failed to parse storage map: {e}"))
        })?,
        None => (None, BTreeMap::new()),
    };
    let moves: Vec<(String, String, String, u64)> = {
        let state = sim.state();
        if !state.cluster.nodes.contains(&target) {
            return Err(ApiError::e500(format!("no such cluster node '{target}'")));
        }
        let vm = load_vm(&state, &node, vmid)?;
        check_lock(vm).map_err(ApiError::e500)?;
        if vm.running && !call.flag("online") {
            return Err(ApiError::e500("can't migrate running VM without --online"));
        }
        let check_target = |sid: &str| -> Result<(), ApiError> {
            let desc = state
                .cluster
                .storages
                .iter()
                .find(|s| s.id == sid)
                .ok_or_else(|| ApiError::e500(format!("storage '{sid}' does not exist")))?;
            if state.cluster.storage_on(sid, &target).is_none() {
                return Err(ApiError::e500(format!(
                    "storage '{sid}' is not available on node '{target}'"
                )));
            }
            if !desc.content.iter().any(|c| c == "images") {
                return Err(ApiError::e500(format!(
                    "storage '{sid}' does not support vm images"
                )));
            }
            Ok(())
        };
        for sid in storage_map.values().chain(default_storage.iter()) {
            check_target(sid)?;
        }
        let mut moves = Vec::new();
        for (key, volid, size) in vm.drives() {
            let Some((sid, _)) = volid.split_once(':') else {
                continue;
            };
            let dst = storage_map
                .get(sid)
                .cloned()
                .or_else(|| default_storage.clone())
                .unwrap_or_else(|| sid.to_string());
            if default_storage.is_none() && !storage_map.contains_key(sid) {
                // check_storage_availability: the same storage must exist on the target
                check_target(sid)?;
            }
            let shared = state
                .cluster
                .storages
                .iter()
                .any(|s| s.id == sid && s.shared);
            if !shared || dst != sid {
                moves.push((key, volid, dst, size));
            }
        }
        moves
    };
    let upid = sim.spawn_task(
        call,
        "qmigrate",
        &vmid.to_string(),
        move |sim, upid| async move {
            let _g = lock_conf(&sim, &node, vmid, true, sim.latency.config_lock_timeout_ms).await?;
            {
                let mut state = sim.state();
                let vm =
                    super::core::load_vm_mut(&mut state, &node, vmid).map_err(|e| e.message)?;
                check_lock(vm)?;
                if vm.running {
                    return Err("can't migrate running VM without --online".into());
                }
                for (_, volid, _, _) in &moves {
                    if let Some((_, name)) = volid.split_once(':') {
                        if let Some((base, _)) = name.split_once('/') {
                            return Err(format!(
                                "can't migrate '{volid}' as it's a clone of '{base}'"
                            ));
                        }
                    }
                }
                vm.config.insert("lock".into(), "migrate".into());
            }
            sim.tasks.log(
                &upid,
                format!("starting migration of VM {vmid} to node '{target}'"),
            );
            for (key, volid, dst, size) in &moves {
                let bw = {
                    let state = sim.state();
                    let src = volid.split(':').next().unwrap_or_default();
                    let bw_of = |id: &str| {
                        state
                            .cluster
                            .storages
                            .iter()
                            .find(|s| s.id == id)
                            .map(|s| s.bandwidth_mbs)
                            .unwrap_or(100.0)
                    };
                    bw_of(src).min(bw_of(dst))
                };
                sim.tasks.log(
                    &upid,
                    format!("copying local disk '{volid}' ({key}) to '{dst}'"),
                );
                sim.clock.sleep(LatencyModel::copy_ms(*size, bw)).await;
            }
            let mut state = sim.state();
            let vm = state
                .vms
                .get_mut(&vmid)
                .ok_or_else(|| format!("VM {vmid} vanished during migration"))?;
            for (key, volid, dst, _) in &moves {
                if let Some(spec) = vm.config.get(key).cloned() {
                    let name = volid.split_once(':').map(|(_, n)| n).unwrap_or_default();
                    let file = drive_file(&spec).unwrap_or_default();
                    let new = spec.replacen(&file, &format!("{dst}:{name}"), 1);
                    vm.config.insert(key.clone(), new);
                }
            }
            vm.config.remove("lock");
            vm.node = target.clone();
            sim.tasks
                .log(&upid, "migration finished successfully".to_string());
            Ok(())
        },
    );
    Ok(json!(upid))
}
