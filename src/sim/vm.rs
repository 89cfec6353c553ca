//! The VM write endpoints with qemu-server's semantics (clone is in `clone`): config update
//! (POST task / PUT sync, digest, delete, skiplock, pending on running VMs), resize (grow only,
//! checks in the task), start, shutdown/stop, destroy and cloud-init regeneration, plus the
//! config-lock helpers they share. Knows nothing about the wire format.

use super::check::split_list;
use super::clone::{net_models, set_net_mac, with_drive_file};
use super::core::{check_lock, load_vm, load_vm_mut, not_on_node, ApiError, Call, Sim};
use super::model::{
    drive_file, drive_size, indexed, is_cloudinit_key, is_drive_key, parse_size, with_drive_size,
    Vm,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn conf_lock(node: &str, vmid: u32) -> String {
    format!("conf:{node}:{vmid}")
}

pub(super) fn conf_timeout(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

pub(super) async fn lock_conf(
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
pub(super) fn precheck_lock(sim: &Sim, node: &str, vmid: u32) -> Result<(), String> {
    let state = sim.state();
    let vm = load_vm(&state, node, vmid).map_err(|e| e.message)?;
    check_lock(vm)
}

/// The VM for `check_running`-style paths (clone, status): wrong node → `unable to find …`.
pub(super) fn vm_checked<'a>(
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
/// `$fast_plug_option` of qemu-server 9.2.6 (`QemuServer.pm` 4594–4611): applied to the
/// config at once even on a running VM. The cloud-init options are among them (they are
/// recorded as changed and reach the guest at the next ISO rebuild).
const FAST_PLUG: &[&str] = &[
    "description",
    "hookscript",
    "lock",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "protection",
    "shares",
    "startup",
    "tags",
    "vmstatestorage",
    "citype",
    "ciuser",
    "cipassword",
    "ciupgrade",
    "cicustom",
    "searchdomain",
    "nameserver",
    "sshkeys",
];

/// The `hotplug` features of a config (`parse_hotplug_features`): default
/// `network,disk,usb`, `0` none, `1` the default.
fn hotplug_features(cfg: &BTreeMap<String, String>) -> Vec<String> {
    let v = cfg.get("hotplug").map(String::as_str).unwrap_or("1");
    match v {
        "0" => Vec::new(),
        "1" => vec!["network".into(), "disk".into(), "usb".into()],
        other => split_list(other).map(str::to_string).collect(),
    }
}

/// Would qemu-server apply `key = value` to a running VM at once (`vmconfig_hotplug_pending`,
/// `QemuServer.pm` 4617–4880)? Everything else stays in `[PENDING]` until the next start.
fn hotpluggable(cfg: &BTreeMap<String, String>, key: &str, value: Option<&str>) -> bool {
    if FAST_PLUG.contains(&key) || indexed(key, "ipconfig") {
        return true;
    }
    let features = hotplug_features(cfg);
    let has = |f: &str| features.iter().any(|x| x == f);
    if indexed(key, "net") {
        return has("network");
    }
    if is_drive_key(key) && !key.starts_with("unused") {
        let slow = ["efidisk", "ide", "sata", "tpmstate"]
            .iter()
            .any(|b| indexed(key, b));
        let cloudinit = value.is_some_and(|v| v.contains("cloudinit"));
        return has("disk") && !slow && !cloudinit;
    }
    match key {
        "memory" => has("memory"),
        "vcpus" => has("cpu"),
        // vmconfig_update_agent: only `fstrim_cloned_disks` changes hotplug, on a VM that
        // already has an agent setting.
        "agent" => match (cfg.get("agent"), value) {
            (Some(old), Some(new)) => {
                let strip = |s: &str| -> Vec<String> {
                    let mut v: Vec<String> = s
                        .split(',')
                        .filter(|p| !p.starts_with("fstrim_cloned_disks="))
                        .map(|p| p.trim_start_matches("enabled=").to_string())
                        .collect();
                    v.sort();
                    v
                };
                strip(old) == strip(new)
            }
            _ => false,
        },
        _ => false,
    }
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
    let mut state = sim.state();
    let mut used = state.macs_in_use();
    for (k, v) in sets.iter_mut() {
        if indexed(k, "net") && super::cloudinit::net_mac(v).is_none() {
            *v = set_net_mac(v, &sim.new_mac(&mut used), &models);
        }
    }
    let state_storages: Vec<String> = state
        .cluster
        .storages
        .iter()
        .filter(|s| state.cluster.storage_on(&s.id, &u.node).is_some())
        .map(|s| s.id.clone())
        .collect();
    let bridges = node_bridges(&state, &u.node);
    let vm = load_vm_mut(&mut state, &u.node, u.vmid).map_err(|e| e.message)?;
    if !u.skiplock {
        check_lock(vm)?;
    }
    if let Some(d) = &u.digest {
        if *d != vm.digest() {
            return Err("checksum mismatch (file change by other user?)".into());
        }
    }
    allocate_new_disks(&mut sets, vm, &state_storages)?;
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
    let mut hotplug_errors = Vec::new();
    for (k, v) in sets {
        if vm.running && !hotpluggable(&vm.config, &k, Some(&v)) {
            vm.pending_delete.remove(&k);
            vm.pending.insert(k, v);
        } else if vm.running && indexed(&k, "net") && net_bridge_missing(&bridges, &v).is_some() {
            // vmconfig_update_net → tap_plug: the value stays pending, the call reports it
            let b = net_bridge_missing(&bridges, &v).unwrap_or_default();
            hotplug_errors.push(format!(
                "{k}: hotplug problem - bridge '{b}' does not exist"
            ));
            vm.pending_delete.remove(&k);
            vm.pending.insert(k, v);
        } else {
            vm.pending.remove(&k);
            vm.pending_delete.remove(&k);
            vm.config.insert(k, v);
        }
    }
    for k in &u.deletes {
        if vm.running && !hotpluggable(&vm.config, k, None) {
            vm.pending.remove(k);
            if vm.config.contains_key(k) {
                vm.pending_delete.insert(k.clone());
            }
        } else {
            vm.pending.remove(k);
            vm.config.remove(k);
        }
    }
    if !hotplug_errors.is_empty() {
        return Err(hotplug_errors.join("; "));
    }
    Ok(())
}

/// The bridge of a `netN` value when it does not exist in `bridges` (the node's bridges).
fn net_bridge_missing(bridges: &[String], net: &str) -> Option<String> {
    let b = net.split(',').find_map(|p| p.strip_prefix("bridge="))?;
    (!bridges.iter().any(|x| x == b)).then(|| b.to_string())
}

/// The bridges (and VNets) of `node`.
pub(super) fn node_bridges(state: &super::model::SimState, node: &str) -> Vec<String> {
    state
        .cluster
        .bridges
        .iter()
        .filter(|b| state.cluster.bridge_on(&b.name, node).is_some())
        .map(|b| b.name.clone())
        .collect()
}

/// `scsi1: local-lvm:20` allocates a new 20 GiB volume `vm-<vmid>-disk-<n>` (PVE's
/// `STORAGE:SIZE_GiB` syntax) on a storage available on the VM's node.
fn allocate_new_disks(
    sets: &mut BTreeMap<String, String>,
    vm: &Vm,
    storages: &[String],
) -> Result<(), String> {
    let mut used: Vec<u32> = vm
        .drives()
        .iter()
        .filter_map(|(_, f, _)| f.rsplit("-disk-").next().and_then(|n| n.parse().ok()))
        .collect();
    for (k, v) in sets.iter_mut() {
        if !is_drive_key(k) || indexed(k, "unused") || v.contains("media=cdrom") {
            continue;
        }
        let Some(file) = drive_file(v) else { continue };
        let Some((storage, size)) = file.split_once(':') else {
            continue;
        };
        let Ok(gib) = size.parse::<f64>() else {
            continue;
        };
        if !storages.iter().any(|s| s == storage) {
            return Err(format!("storage '{storage}' does not exist"));
        }
        let n = (0..).find(|n| !used.contains(n)).unwrap_or(0);
        used.push(n);
        let bytes = (gib * (1u64 << 30) as f64) as u64;
        let spec = with_drive_file(v, &format!("{storage}:vm-{}-disk-{n}", vm.vmid));
        *v = with_drive_size(&spec, bytes);
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
                check_nets_for_start(&state, &node, &vm.pending_view())?;
                check_vcpus_for_start(&vm.pending_view())?;
            }
            sim.clock.sleep(sim.latency.start_ms).await;
            let now = sim.clock.now_ms();
            let mut state = sim.state();
            // The cloud-init drive is built at start, reading any `cicustom` snippet files.
            let custom = {
                let vm = load_vm(&state, &node, vmid).map_err(|e| e.message)?;
                super::snippets::bake_custom(&state, &node, &vm.pending_view())?
            };
            state.cloudinit_custom.insert(vmid, custom);
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

/// `config_to_command` (qemu-server `QemuServer.pm`): a VM starts with `sockets` × `cores`
/// vCPUs (defaults 1) and dies with "MAX $allowed_vcpus vcpus allowed per VM on this node"
/// when that exceeds the node's CPU count ([`super::nodes::NODE_CPUS`]).
fn check_vcpus_for_start(cfg: &BTreeMap<String, String>) -> Result<(), String> {
    let get = |k: &str| {
        cfg.get(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1)
    };
    let allowed = super::nodes::NODE_CPUS;
    if get("sockets").saturating_mul(get("cores")) > allowed {
        return Err(format!("MAX {allowed} vcpus allowed per VM on this node"));
    }
    Ok(())
}

/// What `config_to_command` refuses about the NICs of a VM being started
/// (`QemuServer.pm` `print_netdevice_full` 1358–1380, pve-common `Network.pm`
/// `read_bridge_mtu`): a missing bridge, and a VirtIO MTU below 576 or above the bridge MTU.
fn check_nets_for_start(
    state: &super::model::SimState,
    node: &str,
    cfg: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, v) in cfg.iter().filter(|(k, _)| indexed(k, "net")) {
        let Some(bridge) = v.split(',').find_map(|p| p.strip_prefix("bridge=")) else {
            continue;
        };
        let Some(desc) = state.cluster.bridge_on(bridge, node) else {
            return Err(format!("bridge '{bridge}' does not exist"));
        };
        let virtio = v.starts_with("virtio") || v.contains("model=virtio");
        let mtu = v
            .split(',')
            .find_map(|p| p.strip_prefix("mtu="))
            .and_then(|m| m.parse::<u32>().ok());
        if let (true, Some(mtu)) = (virtio, mtu) {
            if mtu != 1 && mtu < 576 {
                return Err(format!(
                    "netdev {k}: MTU '{mtu}' is smaller than the IP minimum MTU '576'"
                ));
            }
            if mtu > desc.mtu {
                return Err(format!(
                    "netdev {k}: MTU '{mtu}' is bigger than the bridge MTU '{}' - adjust the MTU for the network device in the VM configuration, while ensuring that the bridge is configured as desired.",
                    desc.mtu
                ));
            }
        }
    }
    Ok(())
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
        if vm
            .config
            .get("protection")
            .and_then(|p| super::check::parse_bool(p))
            .unwrap_or(false)
        {
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
            let mut state = sim.state();
            state.vms.remove(&vmid);
            state.cloudinit_custom.remove(&vmid);
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
    let cfg = vm.config.clone();
    let custom = super::snippets::bake_custom(&state, &node, &cfg).map_err(ApiError::e500)?;
    state.cloudinit_custom.insert(vmid, custom);
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_keys_must_decode_to_openssh_lines() {
        assert!(valid_ssh_keys(
            "ssh-ed25519%20AAAAC3NzaC1%20me%0Assh-rsa%20AAAAB3NzaC1yc2E%20x"
        ));
        assert!(!valid_ssh_keys("hello%20world"));
        assert!(!valid_ssh_keys("ssh-ed25519%2520AAAAC3NzaC1"));
    }
}
