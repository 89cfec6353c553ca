//! Endpoint dispatch and the read-only endpoints: version, nextid, cluster resources, ticket,
//! tasks, storage content, VM config/status/pending, guest agent interfaces and cloud-init
//! views. Writes live in `vm`. Knows nothing about the wire format (see `server`).

use super::check::parse_bool;
use super::clone;
use super::cloudinit;
use super::core::{guard, load_vm, not_on_node, ApiError, Call, Reply, Sim};
use super::migrate;
use super::model::{indexed, SimState, Vm};
use super::nodes;
use super::spec::{FormatRef, Schema};
use super::tasks::parse_upid;
use super::vm;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Route a verified call to its handler.
pub async fn dispatch(sim: &Arc<Sim>, call: &Call) -> Result<Reply, ApiError> {
    if call.params.contains_key("node") {
        sim.check_node(call.node())?;
    }
    // Qemu.pm: skiplock is for root@pam only (API tokens are `root@pam!name`, so refused).
    if call.flag("skiplock") && call.user != "root@pam" {
        return Err(ApiError::param(
            "skiplock",
            "Only root may use this option.",
        ));
    }
    let r: Value = match (call.method.as_str(), call.template.as_str()) {
        ("GET", "/version") => {
            json!({"version": "9.2.11", "release": "9.2", "repoid": "14a22df3"})
        }
        ("GET", "/cluster/nextid") => nextid(sim, call)?,
        ("GET", "/cluster/resources") => resources(&sim.state(), call.get("type")),
        ("POST", "/access/ticket") => ticket(sim, call)?,
        ("GET", "/nodes/{node}/tasks/{upid}/status") => task_status(sim, call)?,
        ("GET", "/nodes/{node}/tasks/{upid}/log") => return task_log(sim, call),
        ("GET", "/nodes/{node}/storage/{storage}/content") => storage_content(sim, call)?,
        ("GET", "/nodes/{node}/qemu/{vmid}/config") => get_config(sim, call)?,
        ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => status_current(sim, call)?,
        ("GET", "/nodes/{node}/qemu/{vmid}/pending") => pending(sim, call)?,
        ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") => {
            agent_ifaces(sim, call)?
        }
        ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit") => cloudinit_get(sim, call)?,
        ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump") => {
            let state = sim.state();
            let v = load_vm(&state, call.node(), call.vmid()?)?;
            json!(cloudinit::dump(v, call.get("type").unwrap_or("user")))
        }
        ("GET", "/nodes") => nodes::nodes(sim),
        ("GET", "/nodes/{node}/qemu") => nodes::qemu_list(sim, call),
        ("GET", "/nodes/{node}/network") => nodes::network(sim, call),
        ("GET", "/nodes/{node}/storage") => nodes::storage(sim, call)?,
        ("GET", "/nodes/{node}/capabilities/qemu/cpu") => nodes::cpu_models(sim),
        ("POST", "/nodes/{node}/qemu/{vmid}/migrate") => migrate::migrate(sim, call)?,
        ("POST", "/nodes/{node}/qemu/{vmid}/clone") => clone::clone(sim, call)?,
        ("POST", "/nodes/{node}/qemu/{vmid}/config") => vm::update_config(sim, call, true).await?,
        ("PUT", "/nodes/{node}/qemu/{vmid}/config") => vm::update_config(sim, call, false).await?,
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => vm::resize(sim, call)?,
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => vm::start(sim, call)?,
        ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => vm::shutdown(sim, call, false)?,
        ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => vm::shutdown(sim, call, true)?,
        ("DELETE", "/nodes/{node}/qemu/{vmid}") => vm::destroy(sim, call)?,
        ("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit") => vm::cloudinit_update(sim, call).await?,
        (m, p) => {
            return Err(ApiError::new(
                501,
                format!("Method '{m} {p}' not implemented"),
            ))
        }
    };
    Ok(r.into())
}

fn nextid(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    if let Some(v) = call.get("vmid") {
        let id: u32 = v
            .parse()
            .map_err(|_| ApiError::param("vmid", "invalid vmid"))?;
        if state.vms.contains_key(&id) {
            return Err(ApiError::param("vmid", format!("VM {id} already exists")));
        }
        return Ok(json!(id.to_string()));
    }
    let lower = state.cluster.next_id_lower.max(100);
    (lower..1_000_000)
        .find(|id| !state.vms.contains_key(id))
        .map(|id| json!(id.to_string()))
        .ok_or_else(|| {
            ApiError::e500(format!(
                "unable to get any free VMID in range [{lower}, 999999]"
            ))
        })
}

/// `/cluster/resources` rows for VMs, storages and nodes.
pub fn resources(state: &SimState, kind: Option<&str>) -> Value {
    let mut out = Vec::new();
    if kind.is_none() || kind == Some("vm") {
        for v in state.vms.values() {
            let mem = v
                .config
                .get("memory")
                .and_then(|m| m.split(',').next())
                .and_then(|m| m.trim_start_matches("current=").parse::<u64>().ok())
                .unwrap_or(512);
            let boot_disk = v
                .drives()
                .into_iter()
                .filter(|(k, f, _)| {
                    !f.ends_with("-cloudinit")
                        && !indexed(k, "unused")
                        && !v.config[k].contains("media=cdrom")
                })
                .map(|d| d.2)
                .next()
                .unwrap_or(0);
            let mut row = json!({
                "id": format!("qemu/{}", v.vmid), "type": "qemu", "node": v.node,
                "vmid": v.vmid, "name": v.name(),
                "status": if v.running { "running" } else { "stopped" },
                "template": if v.is_template() { 1 } else { 0 },
                "maxcpu": v.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
                "maxmem": mem << 20, "maxdisk": boot_disk, "disk": 0, "mem": 0, "cpu": 0,
                "uptime": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            });
            if let Some(l) = v.lock() {
                row["lock"] = json!(l);
            }
            if let Some(t) = v.config.get("tags") {
                row["tags"] = json!(t);
            }
            out.push(row);
        }
    }
    if kind.is_none() || kind == Some("storage") {
        for s in state.storage_usage() {
            let desc = state.cluster.storages.iter().find(|d| d.id == s.storage);
            out.push(json!({
                "id": format!("storage/{}/{}", s.node, s.storage), "type": "storage",
                "node": s.node, "storage": s.storage, "plugintype": s.kind,
                "shared": if s.shared { 1 } else { 0 }, "status": "available",
                "content": desc.map(|d| d.content.join(",")).unwrap_or_default(),
                "maxdisk": s.total_bytes, "disk": s.used_bytes,
            }));
        }
    }
    if kind.is_none() || kind == Some("node") {
        for n in &state.cluster.nodes {
            out.push(json!({
                "id": format!("node/{n}"), "type": "node", "node": n, "status": "online",
                "maxcpu": super::nodes::NODE_CPUS, "maxmem": 256u64 << 30, "cpu": 0.05, "mem": 8u64 << 30,
                "uptime": 86400, "level": "",
            }));
        }
    }
    Value::Array(out)
}

fn ticket(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let mut user = call.get("username").unwrap_or_default().to_string();
    if !user.contains('@') {
        user = format!("{user}@{}", call.get("realm").unwrap_or("pam"));
    }
    let password = call.get("password").unwrap_or_default();
    let renew = guard(&sim.auth.tickets)
        .get(password)
        .is_some_and(|(u, _)| *u == user);
    let ok = renew
        || sim
            .auth
            .users
            .iter()
            .any(|(u, p)| *u == user && p.expose() == password);
    if !ok {
        return Err(ApiError::new(401, "authentication failure"));
    }
    let now = chrono::Utc::now().timestamp();
    let sig = hex::encode(sim.random_bytes::<24>());
    let ticket = format!("PVE:{user}:{now:08X}::{sig}");
    let csrf = format!("{now:08X}:{}", hex::encode(sim.random_bytes::<16>()));
    guard(&sim.auth.tickets).insert(ticket.clone(), (user.clone(), csrf.clone()));
    let cluster = sim.state().cluster.name.clone();
    Ok(
        json!({"username": user, "ticket": ticket, "CSRFPreventionToken": csrf,
              "clustername": cluster, "cap": {}}),
    )
}

fn find_task(sim: &Sim, call: &Call) -> Result<super::tasks::Task, ApiError> {
    let upid = call.get("upid").unwrap_or_default();
    let Some((node, _, _)) = parse_upid(upid) else {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    };
    sim.tasks
        .get(upid)
        .filter(|_| node == call.node())
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

fn task_status(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    Ok(find_task(sim, call)?.status_json())
}

fn task_log(sim: &Sim, call: &Call) -> Result<Reply, ApiError> {
    let t = find_task(sim, call)?;
    let start: usize = call.get("start").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = call.get("limit").and_then(|v| v.parse().ok()).unwrap_or(50);
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({"n": i + 1, "t": l}))
        .collect();
    Ok(Reply {
        data: Value::Array(lines),
        total: Some(t.log.len() as u64),
    })
}

fn storage_content(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let storage = call.get("storage").unwrap_or_default();
    let Some(desc) = state.cluster.storage_on(storage, call.node()) else {
        return Err(ApiError::e500(format!(
            "storage '{storage}' does not exist"
        )));
    };
    if call.get("content").is_some_and(|c| c != "images") {
        return Ok(json!([]));
    }
    let want_vmid: Option<u32> = call.get("vmid").and_then(|v| v.parse().ok());
    let mut rows = Vec::new();
    for v in state.volumes() {
        if v.storage != desc.id || (!desc.shared && v.node != call.node()) {
            continue;
        }
        if want_vmid.is_some_and(|w| w != v.vmid) {
            continue;
        }
        let mut row = json!({"volid": v.volid, "format": "raw", "size": v.size,
                             "vmid": v.vmid, "content": "images"});
        if v.linked {
            row["parent"] = json!(v
                .volid
                .split_once(':')
                .and_then(|(_, n)| n.split_once('/'))
                .map(|(b, _)| b)
                .unwrap_or(""));
        }
        rows.push(row);
    }
    Ok(Value::Array(rows))
}

/// Config values typed as PVE's GET config returns them: integers and booleans as numbers,
/// property strings and everything else as strings.
fn typed_config(
    sim: &Sim,
    config: &std::collections::BTreeMap<String, String>,
) -> Map<String, Value> {
    let ep = sim.spec.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config");
    config
        .iter()
        .map(|(k, v)| {
            let schema: Option<&Schema> = ep.and_then(|e| sim.spec.param(e, k));
            let kind = schema.and_then(|s| s.kind.as_deref());
            let val = match kind {
                Some("integer") => v.parse::<i64>().map(|n| json!(n)).unwrap_or(json!(v)),
                Some("boolean") => parse_bool(v)
                    .map(|b| json!(if b { 1 } else { 0 }))
                    .unwrap_or(json!(v)),
                _ => json!(v),
            };
            (k.clone(), val)
        })
        .collect()
}

fn get_config(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let v = load_vm(&state, call.node(), call.vmid()?)?;
    let config = if call.flag("current") {
        v.config.clone()
    } else {
        v.pending_view()
    };
    let mut m = typed_config(sim, &config);
    m.insert("digest".into(), json!(v.digest()));
    Ok(Value::Object(m))
}

fn vm_on_node<'a>(state: &'a SimState, call: &Call) -> Result<&'a Vm, ApiError> {
    let vmid = call.vmid()?;
    state
        .vms
        .get(&vmid)
        .filter(|v| v.node == call.node())
        .ok_or_else(|| not_on_node(call.node(), vmid))
}

/// Whether the `agent` property string enables the agent.
pub fn agent_enabled(vm: &Vm) -> bool {
    vm.config.get("agent").is_some_and(|a| {
        a.split(',').any(|p| {
            let v = p.strip_prefix("enabled=").unwrap_or(p);
            !v.contains('=') && parse_bool(v) == Some(true)
        })
    })
}

fn status_current(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let v = vm_on_node(&state, call)?;
    let status = if v.running { "running" } else { "stopped" };
    let mut r = json!({
        "vmid": v.vmid, "name": v.name(), "status": status, "qmpstatus": status,
        "agent": if agent_enabled(v) { 1 } else { 0 }, "ha": {"managed": 0},
        "cpus": v.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
        "uptime": if v.running { sim.clock.now_ms().saturating_sub(v.started_at_ms.unwrap_or(0)) / 1000 } else { 0 },
    });
    if let Some(l) = v.lock() {
        r["lock"] = json!(l);
    }
    if v.is_template() {
        r["template"] = json!(1);
    }
    if v.running {
        r["pid"] = json!(10_000 + v.vmid);
    }
    Ok(r)
}

fn pending(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let v = load_vm(&state, call.node(), call.vmid()?)?;
    let mut keys: std::collections::BTreeSet<&String> = v.config.keys().collect();
    keys.extend(v.pending.keys());
    keys.extend(v.pending_delete.iter());
    let cur = typed_config(sim, &v.config);
    let pend = typed_config(sim, &v.pending);
    let rows: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let mut row = json!({"key": k});
            if let Some(c) = cur.get(k) {
                row["value"] = c.clone();
            }
            if let Some(p) = pend.get(k) {
                row["pending"] = p.clone();
            }
            if v.pending_delete.contains(k) {
                row["delete"] = json!(1);
            }
            row
        })
        .collect();
    Ok(Value::Array(rows))
}

fn agent_ifaces(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let vmid = call.vmid()?;
    let v = load_vm(&state, call.node(), vmid)?;
    if !agent_enabled(v) {
        return Err(ApiError::e500("No QEMU guest agent configured"));
    }
    if !v.running {
        return Err(ApiError::e500(format!("VM {vmid} is not running")));
    }
    let up_at = v
        .started_at_ms
        .unwrap_or(0)
        .saturating_add(sim.latency.boot_delay_ms);
    if sim.clock.now_ms() < up_at {
        return Err(ApiError::e500("QEMU guest agent is not running"));
    }
    let mut ifaces = vec![json!({
        "name": "lo", "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
            {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}],
        "statistics": {"rx-bytes": 0, "tx-bytes": 0, "rx-packets": 0, "tx-packets": 0,
                        "rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0},
    })];
    let mut nets: Vec<(u32, &String)> = v
        .config
        .iter()
        .filter(|(k, _)| indexed(k, "net"))
        .filter_map(|(k, val)| k[3..].parse().ok().map(|i| (i, val)))
        .collect();
    nets.sort();
    for (i, net) in nets {
        let mac = cloudinit::net_mac(net).unwrap_or_default().to_lowercase();
        let ipcfg = v.config.get(&format!("ipconfig{i}"));
        let mut addrs = Vec::new();
        let (a, p) = cloudinit::guest_ipv4(v, i);
        addrs.push(json!({"ip-address": a, "ip-address-type": "ipv4", "prefix": p}));
        if let Some(cidr) = cloudinit::ipconfig_field(ipcfg, "ip6").filter(|c| c.contains('/')) {
            if let Some((a, p)) = cidr.split_once('/') {
                addrs.push(json!({"ip-address": a, "ip-address-type": "ipv6", "prefix": p.parse::<u32>().unwrap_or(64)}));
            }
        }
        ifaces.push(json!({"name": format!("eth{i}"), "hardware-address": mac,
                           "ip-addresses": addrs,
                           "statistics": {"rx-bytes": 0, "tx-bytes": 0, "rx-packets": 0, "tx-packets": 0,
                                          "rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0}}));
    }
    Ok(json!({"result": ifaces}))
}

fn cloudinit_get(sim: &Sim, call: &Call) -> Result<Value, ApiError> {
    let state = sim.state();
    let v = load_vm(&state, call.node(), call.vmid()?)?;
    let now = v.cloudinit_values();
    let mut keys: std::collections::BTreeSet<&String> = now.keys().collect();
    keys.extend(v.cloudinit_baked.keys());
    Ok(Value::Array(
        keys.into_iter()
            .map(|k| {
                let mut row = json!({"key": k});
                if let Some(b) = v.cloudinit_baked.get(k) {
                    row["value"] = json!(b);
                }
                match now.get(k) {
                    Some(n) if v.cloudinit_baked.get(k) != Some(n) => row["pending"] = json!(n),
                    None => row["delete"] = json!(1),
                    _ => {}
                }
                row
            })
            .collect(),
    ))
}

/// Keys of an inline property-string format (for `vm`'s net handling).
pub fn format_keys<'a>(
    sim: &'a Sim,
    key: &str,
) -> Option<&'a std::collections::BTreeMap<String, Schema>> {
    let ep = sim
        .spec
        .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")?;
    let f: &FormatRef = sim.spec.param(ep, key)?.format.as_ref()?;
    sim.spec.keys(f)
}
