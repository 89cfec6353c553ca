//! `POST /nodes/{node}/qemu/{vmid}/clone` with qemu-server's semantics: synchronous checks
//! (source on this node, source `lock`, newid free, linked clones only from templates, no
//! storage/format for linked), then the `qmclone` task: shared flock on a stopped source,
//! exclusive on a running one, an exclusive flock on the newid, `lock: clone` on the new VM while
//! disks are copied (full, time ∝ size / bandwidth) or linked under the storage lock, new MACs,
//! smbios uuid and cloud-init volume; on failure the new config is removed. Knows nothing about
//! the wire format.

use super::core::{check_lock, ApiError, Call, Sim};
use super::latency::LatencyModel;
use super::model::{drive_file, drive_size, format_size, indexed, is_drive_key, Vm};
use super::vm::{lock_conf, vm_checked};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

struct ClonePlan {
    node: String,
    src: u32,
    newid: u32,
    full: bool,
    storage: Option<String>,
    target: Option<String>,
    name: String,
    description: Option<String>,
    src_running: bool,
}

/// `POST /nodes/{node}/qemu/{vmid}/clone`.
pub fn clone(sim: &Arc<Sim>, call: &Call) -> Result<Value, ApiError> {
    let node = call.node().to_string();
    let src = call.vmid()?;
    let newid: u32 = call
        .get("newid")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::param("newid", "property is missing and it is not optional"))?;
    let plan = {
        let state = sim.state();
        // Qemu.pm clone_vm `$load_and_check`, in its order (qemu-server@e6352be6 4448–4503).
        let target = call
            .get("target")
            .filter(|t| *t != node)
            .map(str::to_string);
        if let Some(t) = &target {
            if !state.cluster.nodes.contains(t) {
                return Err(ApiError::e500(format!("no such cluster node '{t}'")));
            }
        }
        if let Some(sid) = call.get("storage") {
            // storage_check_enabled (pve-storage Storage.pm 264–291) on this node, then the
            // `images` content check as a parameter error.
            let Some(desc) = state.cluster.storages.iter().find(|s| s.id == sid) else {
                return Err(ApiError::e500(format!("storage '{sid}' does not exist")));
            };
            if state.cluster.storage_on(sid, &node).is_none() {
                return Err(ApiError::e500(format!(
                    "storage '{sid}' is not available on node '{node}'"
                )));
            }
            if !desc.content.iter().any(|c| c == "images") {
                return Err(ApiError::param(
                    "storage",
                    format!("storage '{sid}' does not support vm images"),
                ));
            }
            if let Some(t) = &target {
                if state.cluster.storage_on(sid, t).is_none() {
                    return Err(ApiError::e500(format!(
                        "storage '{sid}' is not available on node '{t}'"
                    )));
                }
                if !desc.shared {
                    return Err(ApiError::e500(format!(
                        "can't clone to non-shared storage '{sid}'"
                    )));
                }
            }
        }
        let vm = vm_checked(&state, &node, src)?;
        check_lock(vm).map_err(ApiError::e500)?;
        if let Some(snap) = call.get("snapname") {
            return Err(ApiError::e500(format!("snapshot '{snap}' does not exist")));
        }
        let full = match call.get("full") {
            Some(_) => call.flag("full"),
            None => !vm.is_template(),
        };
        if !full && call.get("storage").is_some() {
            return Err(ApiError::e500(
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if !full && call.get("format").is_some() {
            return Err(ApiError::e500(
                "parameter 'format' not allowed for linked clones",
            ));
        }
        // `$check_storage_access_clone`: the VM is "shared" only when every volume of the
        // source (CD-ROMs and the cloud-init drive included) is on shared storage; the target
        // storage does not matter.
        let sharedvm = vm.drives().iter().all(|(_, f, _)| {
            let Some((sid, _)) = f.split_once(':') else {
                return true;
            };
            state
                .cluster
                .storages
                .iter()
                .any(|s| s.id == sid && s.shared)
        });
        if let Some(t) = &target {
            if !sharedvm {
                return Err(ApiError::e500(format!(
                    "can't clone VM to node '{t}' (VM uses local storage)"
                )));
            }
        }
        if state.vms.contains_key(&newid) {
            return Err(ApiError::e500(format!(
                "unable to create VM {newid}: config file already exists"
            )));
        }
        if !full && !vm.is_template() {
            if let Some((k, f, _)) = vm.drives().into_iter().find(|(k, f, _)| {
                !f.ends_with("-cloudinit")
                    && !indexed(k, "unused")
                    && !vm.config[k].contains("media=cdrom")
            }) {
                return Err(ApiError::e500(format!(
                    "Linked clone feature is not supported for '{f}' ({k})"
                )));
            }
        }
        ClonePlan {
            node: node.clone(),
            src,
            newid,
            full,
            storage: call.get("storage").map(str::to_string),
            target,
            name: call
                .get("name")
                .map(str::to_string)
                .unwrap_or_else(|| format!("Copy-of-VM-{}", vm.name())),
            description: call.get("description").map(str::to_string),
            src_running: vm.running,
        }
    };
    let upid = sim.spawn_task(
        call,
        "qmclone",
        &src.to_string(),
        move |sim, upid| async move { clone_worker(&sim, &upid, plan).await },
    );
    Ok(json!(upid))
}

pub(super) fn with_drive_file(spec: &str, file: &str) -> String {
    let mut parts: Vec<String> = spec.split(',').map(str::to_string).collect();
    if let Some(first) = parts
        .iter_mut()
        .find(|p| !p.contains('=') || p.starts_with("file="))
    {
        *first = file.to_string();
    }
    parts.join(",")
}

/// Replace the MAC of a `netN` value (`model=MAC` form), adding one if absent.
pub(super) fn set_net_mac(net: &str, mac: &str, models: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut done = false;
    for p in net.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or(("", p));
        if k.is_empty() && models.iter().any(|m| m == v) {
            parts.push(format!("{v}={mac}"));
            done = true;
        } else if models.iter().any(|m| m == k) || k == "model" {
            let model = if k == "model" { v } else { k };
            parts.push(format!("{model}={mac}"));
            done = true;
        } else if k != "macaddr" {
            parts.push(p.to_string());
        }
    }
    if !done {
        parts.insert(0, format!("virtio={mac}"));
    }
    parts.join(",")
}

pub(super) fn net_models(sim: &Sim) -> Vec<String> {
    super::api::format_keys(sim, "net0")
        .and_then(|k| k.get("model"))
        .and_then(|m| m.enum_values.clone())
        .unwrap_or_default()
}

fn storage_lock_key(sim: &Sim, storage: &str, node: &str) -> String {
    let shared = sim
        .state()
        .cluster
        .storages
        .iter()
        .any(|s| s.id == storage && s.shared);
    if shared {
        format!("storage:{storage}")
    } else {
        format!("storage:{storage}:{node}")
    }
}

/// Run `ms` of allocation work under the storage lock.
async fn under_storage_lock(
    sim: &Arc<Sim>,
    storage: &str,
    node: &str,
    ms: u64,
) -> Result<(), String> {
    let key = storage_lock_key(sim, storage, node);
    let _g = sim
        .locks
        .acquire(&key, true, sim.latency.storage_lock_timeout_ms, &sim.clock)
        .await
        .map_err(|_| {
            format!("can't lock file '/var/lock/pve-manager/pve-storage-{storage}' - got timeout")
        })?;
    sim.clock.sleep(ms).await;
    Ok(())
}

async fn clone_worker(sim: &Arc<Sim>, upid: &str, p: ClonePlan) -> Result<(), String> {
    let t = sim.latency.clone_lock_timeout_ms;
    let _src_lock = lock_conf(sim, &p.node, p.src, p.src_running, t).await?;
    let _new_lock = lock_conf(sim, &p.node, p.newid, true, t).await?;
    let models = net_models(sim);
    let drives: Vec<(String, String)> = {
        let mut state = sim.state();
        let src = vm_checked(&state, &p.node, p.src).map_err(|e| e.message)?;
        check_lock(src)?;
        let src_config = src.config.clone();
        if state.vms.contains_key(&p.newid) {
            return Err(format!(
                "unable to create VM {}: config file already exists",
                p.newid
            ));
        }
        let mut config = BTreeMap::new();
        let mut drives = Vec::new();
        let mut used_macs = state.macs_in_use();
        for (k, v) in &src_config {
            if is_drive_key(k) {
                if !indexed(k, "unused") {
                    drives.push((k.clone(), v.clone()));
                }
                continue;
            }
            match k.as_str() {
                "template" | "lock" => {}
                "smbios1" => {
                    let b: [u8; 16] = sim.random_bytes();
                    let h = hex::encode(b);
                    config.insert(
                        k.clone(),
                        format!(
                            "uuid={}-{}-4{}-8{}-{}",
                            &h[0..8],
                            &h[8..12],
                            &h[13..16],
                            &h[17..20],
                            &h[20..32]
                        ),
                    );
                }
                _ if indexed(k, "net") => {
                    config.insert(
                        k.clone(),
                        set_net_mac(v, &sim.new_mac(&mut used_macs), &models),
                    );
                }
                _ => {
                    config.insert(k.clone(), v.clone());
                }
            }
        }
        config.insert("name".into(), p.name.clone());
        if let Some(d) = &p.description {
            config.insert("description".into(), d.clone());
        }
        config.insert("lock".into(), "clone".into());
        state.vms.insert(
            p.newid,
            Vm {
                vmid: p.newid,
                node: p.node.clone(),
                config,
                pending: BTreeMap::new(),
                pending_delete: BTreeSet::new(),
                running: false,
                started_at_ms: None,
                cloudinit_baked: BTreeMap::new(),
            },
        );
        drives
    };
    sim.tasks.log(
        upid,
        format!(
            "create {} clone of VM {} as {}",
            if p.full { "full" } else { "linked" },
            p.src,
            p.newid
        ),
    );
    sim.clock.sleep(sim.latency.clone_base_ms).await;
    match copy_drives(sim, upid, &p, drives).await {
        Ok(()) => {
            let mut state = sim.state();
            if let Some(vm) = state.vms.get_mut(&p.newid) {
                vm.config.remove("lock");
                if let Some(t) = &p.target {
                    vm.node = t.clone();
                }
            }
            Ok(())
        }
        Err(e) => {
            sim.state().vms.remove(&p.newid);
            Err(format!("clone failed: {e}"))
        }
    }
}

async fn copy_drives(
    sim: &Arc<Sim>,
    upid: &str,
    p: &ClonePlan,
    drives: Vec<(String, String)>,
) -> Result<(), String> {
    let mut disk_no = 0;
    let node_for_storage = p.target.clone().unwrap_or_else(|| p.node.clone());
    for (key, spec) in drives {
        let Some(file) = drive_file(&spec) else {
            continue;
        };
        let Some((src_storage, volname)) = file.split_once(':') else {
            // `none`, `cdrom` or a path: copied unchanged
            sim.state()
                .vms
                .get_mut(&p.newid)
                .map(|vm| vm.config.insert(key.clone(), spec.clone()));
            continue;
        };
        let is_ci = volname.ends_with("-cloudinit");
        let is_cdrom = spec.contains("media=cdrom") && !is_ci;
        let new_spec = if is_cdrom {
            spec.clone()
        } else if is_ci {
            let st = p.storage.clone().unwrap_or_else(|| src_storage.to_string());
            under_storage_lock(sim, &st, &node_for_storage, sim.latency.storage_alloc_ms).await?;
            with_drive_file(&spec, &format!("{st}:vm-{}-cloudinit", p.newid))
        } else if p.full {
            let st = p.storage.clone().unwrap_or_else(|| src_storage.to_string());
            under_storage_lock(sim, &st, &node_for_storage, sim.latency.storage_alloc_ms).await?;
            let size = drive_size(&spec).unwrap_or(0);
            let bw = {
                let state = sim.state();
                let bw_of = |id: &str| {
                    state
                        .cluster
                        .storages
                        .iter()
                        .find(|s| s.id == id)
                        .map(|s| s.bandwidth_mbs)
                        .unwrap_or(100.0)
                };
                bw_of(src_storage).min(bw_of(&st))
            };
            sim.tasks.log(
                upid,
                format!(
                    "drive mirror/copy {key}: {file} -> {st} ({})",
                    format_size(size)
                ),
            );
            sim.clock.sleep(LatencyModel::copy_ms(size, bw)).await;
            let f = format!("{st}:vm-{}-disk-{disk_no}", p.newid);
            disk_no += 1;
            with_drive_file(&spec, &f)
        } else {
            under_storage_lock(
                sim,
                src_storage,
                &node_for_storage,
                sim.latency.linked_clone_ms,
            )
            .await?;
            let base = volname.split('/').next().unwrap_or(volname);
            let f = format!("{src_storage}:{base}/vm-{}-disk-{disk_no}", p.newid);
            disk_no += 1;
            with_drive_file(&spec, &f)
        };
        let mut state = sim.state();
        let vm = state
            .vms
            .get_mut(&p.newid)
            .ok_or_else(|| format!("VM {} vanished during clone", p.newid))?;
        vm.config.insert(key, new_spec);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_net_mac_replaces_or_adds_the_model_mac() {
        let models = vec!["virtio".to_string(), "e1000".to_string()];
        assert_eq!(
            set_net_mac(
                "virtio=BC:24:11:00:00:01,bridge=vmbr0",
                "BC:24:11:AA:BB:CC",
                &models
            ),
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0"
        );
        assert_eq!(
            set_net_mac("e1000,bridge=vmbr0,tag=5", "BC:24:11:AA:BB:CC", &models),
            "e1000=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=5"
        );
        assert_eq!(
            set_net_mac(
                "model=virtio,macaddr=BC:24:11:00:00:01,bridge=vmbr0",
                "BC:24:11:AA:BB:CC",
                &models
            ),
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0"
        );
    }
}
