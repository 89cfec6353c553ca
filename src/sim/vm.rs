//! The VM write endpoints with qemu-server's semantics: clone (sync checks, then a `qmclone`
//! task with shared/exclusive source flocks, `lock: clone`, new MACs and cloud-init volume,
//! full copy or linked volumes under storage locks), config update (POST task / PUT sync,
//! digest, delete, pending on running VMs), resize (grow only, checks in the task), start,
//! shutdown/stop, destroy and cloud-init regeneration. Knows nothing about the wire format.

use super::check::split_list;
use super::core::{check_lock, load_vm, load_vm_mut, not_on_node, ApiError, Call, Sim};
use super::latency::LatencyModel;
use super::model::{
    drive_file, drive_size, format_size, indexed, is_cloudinit_key, is_drive_key, parse_size,
    with_drive_size, Vm,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn conf_lock(node: &str, vmid: u32) -> String {
    format!("conf:{node}:{vmid}")
}

fn conf_timeout(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

async fn lock_conf(
    sim: &Arc<Sim>,
    node: &str,
    vmid: u32,
    exclusive: bool,
    timeout_ms: u64,
) -> Result<super::locks::LockGuard, String> {
    sim.locks
        .acquire(&conf_lock(node, vmid), exclusive, timeout_ms, &sim.clock)
        .await
        .map_err(|_| conf_timeout(vmid))
}

/// Fail fast on a `lock:` property before waiting for the flock the lock holder may keep.
fn precheck_lock(sim: &Sim, node: &str, vmid: u32) -> Result<(), String> {
    let state = sim.state();
    let vm = load_vm(&state, node, vmid).map_err(|e| e.message)?;
    check_lock(vm)
}

/// The VM for `check_running`-style paths (clone, status): wrong node → `unable to find …`.
fn vm_checked<'a>(
    state: &'a super::model::SimState,
    node: &str,
    vmid: u32,
) -> Result<&'a Vm, ApiError> {
    state
        .vms
        .get(&vmid)
        .filter(|v| v.node == node)
        .ok_or_else(|| not_on_node(node, vmid))
}

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
        let vm = vm_checked(&state, &node, src)?;
        check_lock(vm).map_err(ApiError::e500)?;
        if let Some(snap) = call.get("snapname") {
            return Err(ApiError::e500(format!("snapshot '{snap}' does not exist")));
        }
        if state.vms.contains_key(&newid) {
            return Err(ApiError::e500(format!(
                "unable to create VM {newid}: config file already exists"
            )));
        }
        let full = match call.get("full") {
            Some(_) => call.flag("full"),
            None => !vm.is_template(),
        };
        if !full {
            if call.get("storage").is_some() {
                return Err(ApiError::e500(
                    "parameter 'storage' not allowed for linked clones",
                ));
            }
            if call.get("format").is_some() {
                return Err(ApiError::e500(
                    "parameter 'format' not allowed for linked clones",
                ));
            }
            if !vm.is_template() {
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
        }
        let target = call
            .get("target")
            .filter(|t| *t != node)
            .map(str::to_string);
        if let Some(t) = &target {
            if !state.cluster.nodes.contains(t) {
                return Err(ApiError::e500(format!("no such cluster node '{t}'")));
            }
            let local = vm.drives().iter().any(|(_, f, _)| {
                let sid = f.split(':').next().unwrap_or_default();
                let target_sid = call.get("storage").unwrap_or(sid);
                state
                    .cluster
                    .storages
                    .iter()
                    .find(|s| s.id == target_sid)
                    .is_none_or(|s| !s.shared)
            });
            if local {
                return Err(ApiError::e500(format!(
                    "can't clone VM to node '{t}' (VM uses local storage)"
                )));
            }
        }
        if let Some(s) = call.get("storage") {
            if state
                .cluster
                .storage_on(s, target.as_deref().unwrap_or(&node))
                .is_none()
            {
                return Err(ApiError::e500(format!("storage '{s}' does not exist")));
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

fn with_drive_file(spec: &str, file: &str) -> String {
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
pub fn set_net_mac(net: &str, mac: &str, models: &[String]) -> String {
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

fn net_models(sim: &Sim) -> Vec<String> {
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
                    config.insert(k.clone(), set_net_mac(v, &sim.new_mac(), &models));
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

const CONTROL: &[&str] = &[
    "node",
    "vmid",
    "digest",
    "delete",
    "revert",
    "force",
    "skiplock",
    "background_delay",
];
const FAST_PLUG: &[&str] = &[
    "name",
    "description",
    "tags",
    "onboot",
    "protection",
    "startup",
    "lock",
    "hookscript",
];

fn hotpluggable(key: &str) -> bool {
    FAST_PLUG.contains(&key)
        || indexed(key, "net")
        || (is_drive_key(key) && !key.starts_with("unused"))
}

/// Whether the decoded `sshkeys` value is a list of OpenSSH public keys.
fn valid_ssh_keys(encoded: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(encoded).decode_utf8() else {
        return false;
    };
    decoded.lines().filter(|l| !l.trim().is_empty()).all(|l| {
        let mut f = l.split_whitespace();
        let kind = f.next().unwrap_or_default();
        let body = f.next().unwrap_or_default();
        (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            && body.len() >= 8
    })
}

struct Update {
    node: String,
    vmid: u32,
    sets: BTreeMap<String, String>,
    deletes: Vec<String>,
    digest: Option<String>,
    skiplock: bool,
}

/// `POST` (task) and `PUT` (sync) `/nodes/{node}/qemu/{vmid}/config`.
pub async fn update_config(sim: &Arc<Sim>, call: &Call, post: bool) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let sets: BTreeMap<String, String> = call
        .params
        .iter()
        .filter(|(k, _)| !CONTROL.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deletes: Vec<String> = call
        .get("delete")
        .map(|d| split_list(d).map(str::to_string).collect())
        .unwrap_or_default();
    for d in &deletes {
        if sets.contains_key(d) {
            return Err(ApiError::param(
                "delete",
                format!("you can't use '-{d}' and -delete {d}' at the same time"),
            ));
        }
    }
    if sets.is_empty() && deletes.is_empty() && call.get("revert").is_none() {
        return Err(ApiError::e500("no options specified"));
    }
    if let Some(k) = sets.get("sshkeys") {
        if !valid_ssh_keys(k) {
            return Err(ApiError::e500("SSH public key validation error"));
        }
    }
    {
        let state = sim.state();
        let vm = load_vm(&state, call.node(), vmid)?;
        if !call.flag("skiplock") {
            check_lock(vm).map_err(ApiError::e500)?;
        }
        if !post {
            if let Some(d) = call.get("digest") {
                if d != vm.digest() {
                    return Err(ApiError::e500(
                        "checksum mismatch (file change by other user?)",
                    ));
                }
            }
        }
    }
    let u = Update {
        node: call.node().to_string(),
        vmid,
        sets,
        deletes,
        digest: call.get("digest").map(str::to_string),
        skiplock: call.flag("skiplock"),
    };
    if post {
        let upid = sim.spawn_task(
            call,
            "qmconfig",
            &vmid.to_string(),
            move |sim, _upid| async move {
                let t = sim.latency.config_lock_timeout_ms;
                let _g = lock_conf(&sim, &u.node, u.vmid, true, t).await?;
                sim.clock.sleep(sim.latency.config_ms).await;
                apply_update(&sim, &u).map_err(|e| format!("failed to update VM {}: {e}", u.vmid))
            },
        );
        // `background_delay`: wait up to N seconds; a task that finished OK in time gives null.
        if let Some(secs) = call
            .get("background_delay")
            .and_then(|d| d.parse::<u64>().ok())
        {
            let deadline = sim.clock.now_ms().saturating_add(secs * 1000);
            while sim.clock.now_ms() < deadline {
                if let Some(t) = sim.tasks.get(&upid).filter(|t| !t.running) {
                    if t.exitstatus.as_deref() == Some("OK") {
                        return Ok(Value::Null);
                    }
                    break;
                }
                sim.clock.sleep(50).await;
                tokio::task::yield_now().await;
            }
        }
        Ok(json!(upid))
    } else {
        let t = sim.latency.config_lock_timeout_ms;
        let _g = lock_conf(sim, &u.node, vmid, true, t)
            .await
            .map_err(ApiError::e500)?;
        sim.clock.sleep(sim.latency.config_ms).await;
        apply_update(sim, &u).map_err(ApiError::e500)?;
        Ok(Value::Null)
    }
}

fn apply_update(sim: &Sim, u: &Update) -> Result<(), String> {
    let models = net_models(sim);
    let mut sets = u.sets.clone();
    for (k, v) in sets.iter_mut() {
        if indexed(k, "net") && super::cloudinit::net_mac(v).is_none() {
            *v = set_net_mac(v, &sim.new_mac(), &models);
        }
    }
    let mut state = sim.state();
    let vm = load_vm_mut(&mut state, &u.node, u.vmid).map_err(|e| e.message)?;
    if !u.skiplock {
        check_lock(vm)?;
    }
    if let Some(d) = &u.digest {
        if *d != vm.digest() {
            return Err("checksum mismatch (file change by other user?)".into());
        }
    }
    let view = vm.pending_view();
    let mem_of = |m: Option<&String>| {
        m.and_then(|m| m.split(',').next())
            .and_then(|m| m.trim_start_matches("current=").parse::<u64>().ok())
            .unwrap_or(512)
    };
    if let Some(b) = sets.get("balloon").and_then(|b| b.parse::<u64>().ok()) {
        let mem = mem_of(sets.get("memory").or(view.get("memory")));
        if b > mem {
            return Err("balloon value too large (must be smaller than assigned memory)".into());
        }
    }
    for (k, v) in sets {
        if vm.running && !hotpluggable(&k) {
            vm.pending_delete.remove(&k);
            vm.pending.insert(k, v);
        } else {
            vm.pending.remove(&k);
            vm.pending_delete.remove(&k);
            vm.config.insert(k, v);
        }
    }
    for k in &u.deletes {
        if vm.running && !hotpluggable(k) {
            vm.pending.remove(k);
            if vm.config.contains_key(k) {
                vm.pending_delete.insert(k.clone());
            }
        } else {
            vm.pending.remove(k);
            vm.config.remove(k);
        }
    }
    Ok(())
}

/// `PUT /nodes/{node}/qemu/{vmid}/resize`: every semantic check runs in the task.
pub fn resize(sim: &Arc<Sim>, call: &Call) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let node = call.node().to_string();
    load_vm(&sim.state(), &node, vmid)?;
    let disk = call.get("disk").unwrap_or_default().to_string();
    let size = call.get("size").unwrap_or_default().to_string();
    let digest = call.get("digest").map(str::to_string);
    let upid = sim.spawn_task(
        call,
        "resize",
        &vmid.to_string(),
        move |sim, _| async move {
            precheck_lock(&sim, &node, vmid)?;
            let _g = lock_conf(&sim, &node, vmid, true, sim.latency.config_lock_timeout_ms).await?;
            let (cur, spec) = {
                let state = sim.state();
                let vm = load_vm(&state, &node, vmid).map_err(|e| e.message)?;
                check_lock(vm)?;
                if digest.as_ref().is_some_and(|d| *d != vm.digest()) {
                    return Err("checksum mismatch (file change by other user?)".into());
                }
                let spec = vm
                    .config
                    .get(&disk)
                    .cloned()
                    .ok_or_else(|| format!("disk '{disk}' does not exist"))?;
                if spec.contains("media=cdrom") {
                    return Err("you can't resize a cdrom".into());
                }
                let file = drive_file(&spec).unwrap_or_default();
                let cur = drive_size(&spec).ok_or_else(|| {
                    format!("Could not determine current size of volume '{file}'")
                })?;
                (cur, spec)
            };
            let new = match size.strip_prefix('+') {
                Some(inc) => parse_size(inc).map(|i| cur.saturating_add(i)),
                None => parse_size(&size),
            }
            .ok_or_else(|| format!("invalid size '{size}'"))?;
            if new == cur {
                return Ok(());
            }
            if new < cur {
                return Err("shrinking disks is not supported".into());
            }
            sim.clock.sleep(sim.latency.resize_ms).await;
            let mut state = sim.state();
            let vm = load_vm_mut(&mut state, &node, vmid).map_err(|e| e.message)?;
            vm.config.insert(disk.clone(), with_drive_size(&spec, new));
            Ok(())
        },
    );
    Ok(json!(upid))
}

/// `POST …/status/start`.
pub fn start(sim: &Arc<Sim>, call: &Call) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let node = call.node().to_string();
    vm_checked(&sim.state(), &node, vmid)?;
    let upid = sim.spawn_task(
        call,
        "qmstart",
        &vmid.to_string(),
        move |sim, _| async move {
            precheck_lock(&sim, &node, vmid)?;
            let _g = lock_conf(&sim, &node, vmid, true, sim.latency.config_lock_timeout_ms).await?;
            {
                let state = sim.state();
                let vm = load_vm(&state, &node, vmid).map_err(|e| e.message)?;
                if vm.is_template() {
                    return Err("you can't start a vm if it's a template".into());
                }
                check_lock(vm)?;
                if vm.running {
                    return Err(format!("VM {vmid} already running"));
                }
            }
            sim.clock.sleep(sim.latency.start_ms).await;
            let now = sim.clock.now_ms();
            let mut state = sim.state();
            let vm = load_vm_mut(&mut state, &node, vmid).map_err(|e| e.message)?;
            vm.apply_pending();
            vm.cloudinit_baked = vm.cloudinit_values();
            vm.running = true;
            vm.started_at_ms = Some(now);
            Ok(())
        },
    );
    Ok(json!(upid))
}

/// `POST …/status/shutdown` (`stop` = false) and `…/status/stop` (`stop` = true).
pub fn shutdown(sim: &Arc<Sim>, call: &Call, stop: bool) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let node = call.node().to_string();
    vm_checked(&sim.state(), &node, vmid)?;
    let timeout_ms = call
        .get("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| t * 1000)
        .unwrap_or(60_000);
    let force = call.flag("forceStop");
    let kind = if stop { "qmstop" } else { "qmshutdown" };
    let upid = sim.spawn_task(call, kind, &vmid.to_string(), move |sim, _| async move {
        precheck_lock(&sim, &node, vmid)?;
        let _g = lock_conf(&sim, &node, vmid, true, sim.latency.config_lock_timeout_ms).await?;
        {
            let state = sim.state();
            let vm = load_vm(&state, &node, vmid).map_err(|e| e.message)?;
            check_lock(vm)?;
            if !vm.running {
                return Ok(());
            }
        }
        let lat = &sim.latency;
        if stop {
            sim.clock.sleep(lat.stop_ms).await;
        } else if lat.shutdown_ms > timeout_ms {
            sim.clock.sleep(timeout_ms).await;
            if !force {
                return Err("VM quit/powerdown failed - got timeout".into());
            }
            sim.clock.sleep(lat.stop_ms).await;
        } else {
            sim.clock.sleep(lat.shutdown_ms).await;
        }
        let mut state = sim.state();
        let vm = load_vm_mut(&mut state, &node, vmid).map_err(|e| e.message)?;
        vm.running = false;
        vm.started_at_ms = None;
        Ok(())
    });
    Ok(json!(upid))
}

/// `DELETE /nodes/{node}/qemu/{vmid}`: the config goes last, so the id stays taken until the
/// task ends.
pub fn destroy(sim: &Arc<Sim>, call: &Call) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let node = call.node().to_string();
    let skiplock = call.flag("skiplock");
    {
        let state = sim.state();
        let vm = load_vm(&state, &node, vmid)?;
        if vm.config.get("protection").is_some_and(|p| p == "1") {
            return Err(ApiError::e500(format!(
                "can't remove VM {vmid} - protection mode enabled"
            )));
        }
        if vm.running {
            return Err(ApiError::e500(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
    }
    let upid = sim.spawn_task(
        call,
        "qmdestroy",
        &vmid.to_string(),
        move |sim, _| async move {
            if !skiplock {
                precheck_lock(&sim, &node, vmid)?;
            }
            let _g = lock_conf(&sim, &node, vmid, true, sim.latency.config_lock_timeout_ms).await?;
            {
                let state = sim.state();
                let vm = load_vm(&state, &node, vmid).map_err(|e| e.message)?;
                if !skiplock {
                    check_lock(vm)?;
                }
                for (_, f, _) in vm.drives() {
                    let in_use = state.vms.values().any(|o| {
                        o.vmid != vmid
                            && o.drives().iter().any(|(_, of, _)| {
                                of.split_once('/').is_some_and(|(base, _)| base == f)
                            })
                    });
                    if in_use {
                        return Err(format!(
                            "base volume '{f}' is still in use by linked cloned"
                        ));
                    }
                }
            }
            sim.clock.sleep(sim.latency.destroy_ms).await;
            sim.state().vms.remove(&vmid);
            Ok(())
        },
    );
    Ok(json!(upid))
}

/// `PUT …/cloudinit`: apply pending cloud-init values and rebuild the ISO.
pub async fn cloudinit_update(sim: &Arc<Sim>, call: &Call) -> Result<Value, ApiError> {
    let vmid = call.vmid()?;
    let node = call.node().to_string();
    {
        let state = sim.state();
        let vm = load_vm(&state, &node, vmid)?;
        check_lock(vm).map_err(ApiError::e500)?;
    }
    let _g = lock_conf(sim, &node, vmid, true, sim.latency.config_lock_timeout_ms)
        .await
        .map_err(ApiError::e500)?;
    sim.clock.sleep(sim.latency.cloudinit_ms).await;
    let mut state = sim.state();
    let vm = load_vm_mut(&mut state, &node, vmid)?;
    let pend: Vec<(String, String)> = vm
        .pending
        .iter()
        .filter(|(k, _)| is_cloudinit_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in pend {
        vm.pending.remove(&k);
        vm.config.insert(k, v);
    }
    let dels: Vec<String> = vm
        .pending_delete
        .iter()
        .filter(|k| is_cloudinit_key(k))
        .cloned()
        .collect();
    for k in dels {
        vm.pending_delete.remove(&k);
        vm.config.remove(&k);
    }
    vm.cloudinit_baked = vm.cloudinit_values();
    Ok(Value::Null)
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

    #[test]
    fn ssh_keys_must_decode_to_openssh_lines() {
        assert!(valid_ssh_keys(
            "ssh-ed25519%20AAAAC3NzaC1%20me%0Assh-rsa%20AAAAB3NzaC1yc2E%20x"
        ));
        assert!(!valid_ssh_keys("hello%20world"));
        assert!(!valid_ssh_keys("ssh-ed25519%2520AAAAC3NzaC1"));
    }
}
