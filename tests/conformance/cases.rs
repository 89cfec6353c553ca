//! The conformance case bodies, written once against `Target` and run against every target.
//! Each function is one behaviour, named after it; it asserts through the typed client only
//! and skips an assertion only behind a `Capabilities` flag. Knows nothing about which target
//! it runs on beyond `t.caps`, and never builds requests by hand.

use std::time::{Duration, Instant};

use hyops_pve::pve::{
    ipv4_addresses, AllocateRequest, CloneAllocation, CloneParams, ConfigUpdate, DiskSize,
    DiskSlot, DiskSpec, ErrorClass, IpConfig, Memory, NetDevice, Ownership, PveClient, PveError,
    PveResult, ResourceType, VmConfig,
};

use super::targets::Target;

/// A real ed25519 public key (`ssh-keygen -l` accepts it) whose base64 carries `+` and `/`,
/// with a comment carrying `+`, `/` and `=`: every character the `sshkeys` encoding must survive.
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAyfuRk/rKAaGqGvAx2+phQIg4UNG7CMLhaFuzc5gpI ops+ci/key=1@hyops";
const GIB: u64 = 1 << 30;

fn label(t: &Target) -> &'static str {
    t.kind.label()
}

async fn config(t: &Target, vmid: u32) -> VmConfig {
    match t.client.vm_config(&t.node, vmid, false).await {
        Ok(c) => c,
        Err(e) => panic!("[{}] config of VM {vmid}: {e}", label(t)),
    }
}

fn ok<T>(t: &Target, what: &str, r: PveResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("[{}] {what}: {e}", label(t)),
    }
}

/// The first disk that is neither a CD-ROM nor the cloud-init drive (the boot disk).
fn boot_disk(cfg: &VmConfig) -> (DiskSlot, DiskSpec) {
    cfg.disks
        .iter()
        .find(|(_, d)| !d.is_cdrom() && !d.is_cloudinit())
        .map(|(s, d)| (*s, d.clone()))
        .unwrap_or_else(|| panic!("no boot disk in config {:?}", cfg.disks))
}

fn cloudinit_drive(cfg: &VmConfig) -> Option<DiskSpec> {
    cfg.disks.values().find(|d| d.is_cloudinit()).cloned()
}

fn disk_size(t: &Target, cfg: &VmConfig) -> DiskSize {
    let (slot, disk) = boot_disk(cfg);
    disk.size
        .unwrap_or_else(|| panic!("[{}] boot disk {slot} has no size: {disk}", label(t)))
}

async fn wait_upid(t: &Target, what: &str, upid: PveResult<hyops_pve::pve::Upid>) {
    let upid = ok(t, what, upid);
    ok(t, what, t.wait(&upid).await);
}

async fn is_running(t: &Target, vmid: u32) -> bool {
    ok(t, "status/current", t.client.vm_status(&t.node, vmid).await).is_running()
}

/// A call that must fail, either synchronously or inside its task.
async fn failure(t: &Target, what: &str, r: PveResult<hyops_pve::pve::Upid>) -> PveError {
    match r {
        Err(e) => e,
        Ok(upid) => match t.wait(&upid).await {
            Err(e) => e,
            Ok(o) => panic!(
                "[{}] {what} was expected to fail, its task ended {}",
                label(t),
                o.exitstatus
            ),
        },
    }
}

// ------------------------------------------------------------------------------ cases

pub async fn version_reports_a_pve_release(t: &Target) {
    let v = ok(t, "GET /version", t.client.version().await);
    let major = v.major();
    assert!(
        major.is_some_and(|m| m >= 7),
        "[{}] version {:?} has no PVE major >= 7",
        label(t),
        v.version
    );
}

pub async fn nextid_returns_a_free_id(t: &Target) {
    let id = ok(t, "GET /cluster/nextid", t.client.next_id(None).await);
    assert!(id >= 100, "[{}] nextid {id} is below 100", label(t));
    let vms = ok(
        t,
        "GET /cluster/resources",
        t.client.cluster_resources(Some(ResourceType::Vm)).await,
    );
    assert!(
        vms.iter().all(|r| r.vmid != Some(id)),
        "[{}] nextid {id} is already used by a VM",
        label(t)
    );
}

pub async fn nextid_refuses_a_taken_id(t: &Target) {
    let err = match t.client.next_id(Some(t.template_vmid)).await {
        Ok(v) => panic!(
            "[{}] nextid?vmid={} (the template) answered {v}",
            label(t),
            t.template_vmid
        ),
        Err(e) => e,
    };
    assert_eq!(err.status(), Some(400), "[{}] {err}", label(t));
    assert_eq!(
        err.classify(),
        ErrorClass::VmIdTaken,
        "[{}] {err}",
        label(t)
    );
}

/// clone → wait → config → resize grow → start → agent IPs → stop → delete, checking each
/// resulting state through the client.
pub async fn clone_configure_resize_start_stop_delete_lifecycle(t: &Target) {
    let (c, n) = (&t.client, t.node.as_str());
    let tpl = config(t, t.template_vmid).await;
    let vmid = t.clone_template("life").await;

    // The clone: unlocked after its task, our name, a MAC of its own, its own cloud-init volume.
    let cloned = config(t, vmid).await;
    assert_eq!(
        cloned.lock,
        None,
        "[{}] lock after the clone task",
        label(t)
    );
    assert_eq!(cloned.name.as_deref(), Some(t.vm_name("life").as_str()));
    let net0 =
        cloned.nets.get(&0).cloned().unwrap_or_else(|| {
            panic!("[{}] clone {vmid} has no net0: {:?}", label(t), cloned.nets)
        });
    let mac = net0
        .macaddr
        .unwrap_or_else(|| panic!("[{}] clone net0 has no MAC: {net0}", label(t)));
    if let Some(tpl_mac) = tpl.nets.get(&0).and_then(|d| d.macaddr) {
        assert_ne!(
            mac,
            tpl_mac,
            "[{}] the clone kept the template's MAC",
            label(t)
        );
    }
    if t.caps.cloudinit_volume_per_vm {
        let tpl_ci = cloudinit_drive(&tpl).unwrap_or_else(|| {
            panic!(
                "[{}] template {} has no cloud-init drive (a `…-cloudinit` volume); the suite needs a cloud-init template",
                label(t),
                t.template_vmid
            )
        });
        let ci = cloudinit_drive(&cloned)
            .unwrap_or_else(|| panic!("[{}] the clone lost the cloud-init drive", label(t)));
        assert_ne!(
            ci.file,
            tpl_ci.file,
            "[{}] cloud-init volume shared",
            label(t)
        );
        assert!(
            ci.file.contains(&format!("vm-{vmid}-cloudinit")),
            "[{}] cloud-init volume {} is not the clone's",
            label(t),
            ci.file
        );
    } else {
        // Known gap (fakepve): its cloud-init drive is the template's `ide2` CD-ROM volume
        // (named like a disk), and the clone copies the reference unchanged.
        assert_eq!(
            cloned.raw.get("ide2"),
            tpl.raw.get("ide2"),
            "[{}] gap closed? update Capabilities",
            label(t)
        );
    }

    // Cloud-init and NICs, written in one asynchronous config update.
    let ip: IpConfig = ok_parse("ipconfig0", "ip=10.20.30.40/24,gw=10.20.30.1");
    let mut nic0 = net0.clone();
    nic0.bridge = Some(t.bridge.clone());
    nic0.tag = Some(20);
    let nic1: NetDevice = ok_parse("net1", &format!("virtio,bridge={},tag=30", t.bridge));
    let update = ConfigUpdate::new()
        .ciuser("hyops")
        .sshkeys(&[SSH_KEY.to_string()])
        .ipconfig(0, &ip)
        .nameserver("10.20.30.2 1.1.1.1")
        .net(0, &nic0)
        .net(1, &nic1)
        .cores(2)
        .memory(&Memory::mib(2048));
    // `None`: the server finished the update synchronously.
    if let Some(upid) = ok(
        t,
        "POST config",
        c.update_config_async(n, vmid, &update).await,
    ) {
        ok(t, "qmconfig task", t.wait(&upid).await);
    }
    let written = config(t, vmid).await;
    for key in update.keys() {
        assert!(
            written.raw.contains_key(&key),
            "[{}] {key} was written but is not in the config read back",
            label(t)
        );
    }
    assert_eq!(
        written.ciuser.as_deref(),
        Some("hyops"),
        "[{}] ciuser",
        label(t)
    );
    assert_eq!(
        written.sshkeys,
        vec![SSH_KEY.to_string()],
        "[{}] sshkeys",
        label(t)
    );
    assert_eq!(
        written.ipconfigs.get(&0),
        Some(&ip),
        "[{}] ipconfig0",
        label(t)
    );
    assert_eq!(
        written.nameserver.as_deref(),
        Some("10.20.30.2 1.1.1.1"),
        "[{}] nameserver",
        label(t)
    );
    assert_eq!(written.cores, Some(2), "[{}] cores", label(t));
    assert_eq!(written.memory.as_ref().map(|m| m.current), Some(2048));
    let w0 = written.nets.get(&0).cloned().expect("net0 after the write");
    assert_eq!(w0.macaddr, Some(mac), "[{}] net0 MAC not kept", label(t));
    assert_eq!(w0.tag, Some(20), "[{}] net0 tag", label(t));
    assert_eq!(w0.bridge.as_deref(), Some(t.bridge.as_str()));
    let w1 = written.nets.get(&1).cloned().expect("net1 after the write");
    assert_eq!(w1.tag, Some(30), "[{}] net1 tag", label(t));
    assert_eq!(w1.bridge.as_deref(), Some(t.bridge.as_str()));
    if t.caps.mac_assigned_on_config_write {
        assert!(w1.macaddr.is_some(), "[{}] net1 got no MAC: {w1}", label(t));
    }

    // Resize: grow the boot disk by 2 GiB (an absolute size on the wire).
    let (slot, _) = boot_disk(&written);
    let before = disk_size(t, &written);
    let wanted = DiskSize(before.bytes() + 2 * GIB);
    wait_upid(t, "resize", c.resize(n, vmid, slot, wanted).await).await;
    let grown = disk_size(t, &config(t, vmid).await);
    if t.caps.resize_changes_size {
        assert_eq!(grown, wanted, "[{}] {slot} after the resize", label(t));
    } else {
        // Known gap (fakepve): resize does not change the size.
        assert_eq!(
            grown,
            before,
            "[{}] gap closed? update Capabilities",
            label(t)
        );
    }

    // Start, then the agent reports the static address on the NIC with our MAC.
    wait_upid(t, "start", c.start(n, vmid).await).await;
    assert!(
        is_running(t, vmid).await,
        "[{}] not running after start",
        label(t)
    );
    if t.caps.agent_ips {
        let deadline = Instant::now() + t.wait_opts().timeout;
        loop {
            match c.agent_network_interfaces(n, vmid).await {
                Ok(ifaces) => {
                    let ips = ipv4_addresses(&ifaces);
                    assert!(
                        ips.iter().any(|(_, a, _)| a.to_string() == "10.20.30.40"),
                        "[{}] agent reports {ips:?}, not 10.20.30.40",
                        label(t)
                    );
                    let nic = ifaces
                        .iter()
                        .find(|i| {
                            i.ip_addresses
                                .iter()
                                .any(|a| a.ip_address.to_string() == "10.20.30.40")
                        })
                        .expect("interface with the static address");
                    let hw = nic.hardware_address.clone().unwrap_or_default();
                    assert!(
                        hw.eq_ignore_ascii_case(&mac.to_string()),
                        "[{}] address on {hw}, expected net0's MAC {mac}",
                        label(t)
                    );
                    break;
                }
                Err(e)
                    if e.classify() == ErrorClass::AgentNotReady && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("[{}] agent interfaces: {e}", label(t)),
            }
        }
    }

    // Stop, then delete: the VM is gone.
    wait_upid(t, "stop", c.stop(n, vmid).await).await;
    assert!(
        !is_running(t, vmid).await,
        "[{}] running after stop",
        label(t)
    );
    wait_upid(t, "delete", c.delete_vm(n, vmid, true, true).await).await;
    assert_eq!(
        ok(t, "vm_node", c.vm_node(vmid).await),
        None,
        "[{}] VM still listed",
        label(t)
    );
    match c.vm_config(n, vmid, false).await {
        Err(e) => assert_eq!(e.classify(), ErrorClass::NotFound, "[{}] {e}", label(t)),
        Ok(cfg) => panic!("[{}] config still readable after delete: {cfg:?}", label(t)),
    }
}

fn ok_parse<T: std::str::FromStr>(what: &str, s: &str) -> T
where
    T::Err: std::fmt::Display,
{
    match s.parse() {
        Ok(v) => v,
        Err(e) => panic!("{what} {s:?} does not parse: {e}"),
    }
}

pub async fn shrink_fails_inside_its_task(t: &Target) {
    let vmid = t.clone_template("shrink").await;
    let cfg = config(t, vmid).await;
    let (slot, _) = boot_disk(&cfg);
    let before = disk_size(t, &cfg);
    let smaller = DiskSize(before.bytes() - GIB);
    let sent = t.client.resize(&t.node, vmid, slot, smaller).await;
    if t.caps.shrink_fails_in_task {
        // PVE: the resize call returns a UPID; the worker refuses the shrink.
        let upid = ok(t, "resize (shrink) submission", sent);
        let err = match t.wait(&upid).await {
            Err(e) => e,
            Ok(o) => panic!("[{}] shrink task ended {}", label(t), o.exitstatus),
        };
        assert!(
            matches!(err, PveError::TaskFailed { .. }),
            "[{}] shrink failed outside its task: {err}",
            label(t)
        );
        assert_eq!(
            err.classify(),
            ErrorClass::ShrinkRefused,
            "[{}] {err}",
            label(t)
        );
    } else {
        // Known gap (fakepve): the shrink task ends OK and nothing changes.
        let upid = ok(t, "resize (shrink) submission", sent);
        ok(t, "gap closed? update Capabilities", t.wait(&upid).await);
    }
    let after = disk_size(t, &config(t, vmid).await);
    assert_eq!(
        after,
        before,
        "[{}] a refused shrink changed the disk",
        label(t)
    );
}

pub async fn start_of_a_running_vm_is_classified_already_running(t: &Target) {
    let vmid = t.clone_template("start2").await;
    wait_upid(t, "first start", t.client.start(&t.node, vmid).await).await;
    let err = failure(t, "second start", t.client.start(&t.node, vmid).await).await;
    assert_eq!(
        err.classify(),
        ErrorClass::AlreadyRunning,
        "[{}] {err}",
        label(t)
    );
    assert!(
        is_running(t, vmid).await,
        "[{}] second start stopped the VM",
        label(t)
    );
}

pub async fn call_on_a_vm_under_clone_lock_is_classified_locked(t: &Target) {
    let (source, full) = t.slow_clone;
    let (vmid, upid) = ok(
        t,
        "slow clone",
        t.submit_clone(source, "locked", full).await,
    );
    // The new config appears with `lock: clone` while the clone task copies the disks.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match t.client.vm_config(&t.node, vmid, false).await {
            Ok(cfg) if cfg.lock.as_deref() == Some("clone") => break,
            Ok(cfg) => panic!(
                "[{}] clone {vmid} finished before `lock: clone` could be observed (lock {:?}): the slow clone source is too fast",
                label(t),
                cfg.lock
            ),
            Err(e) if e.classify() == ErrorClass::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("[{}] config of the cloning VM {vmid}: {e}", label(t)),
        }
    }
    // Cloning from it is checked before PVE forks (no config flock involved), so every target
    // answers `VM is locked (clone)` at once.
    let probe = t.fresh_vmid().await;
    t.track(probe);
    let params = CloneParams {
        newid: probe,
        name: Some(t.vm_name("probe")),
        ..Default::default()
    };
    let err = failure(
        t,
        "clone of a VM under lock: clone",
        t.client.clone_vm(&t.node, vmid, &params).await,
    )
    .await;
    assert_eq!(
        err.classify(),
        ErrorClass::Locked {
            holder: "clone".into()
        },
        "[{}] {err}",
        label(t)
    );
    ok(t, "the slow clone task", t.wait(&upid).await);
    assert_eq!(
        config(t, vmid).await.lock,
        None,
        "[{}] lock left after the clone",
        label(t)
    );
}

pub async fn concurrent_clones_of_one_stopped_template_all_succeed(t: &Target) {
    const N: usize = 4;
    let names: Vec<String> = (0..N).map(|i| format!("par{i}")).collect();
    let submitted = futures::future::join_all(
        names
            .iter()
            .map(|w| t.submit_clone(t.template_vmid, w, None)),
    )
    .await;
    let mut ids = Vec::new();
    let mut waits = Vec::new();
    for (w, r) in names.iter().zip(submitted) {
        let (vmid, upid) = ok(t, &format!("clone {w}"), r);
        ids.push((vmid, w.clone()));
        waits.push(async move { (vmid, t.wait(&upid).await) });
    }
    for (vmid, r) in futures::future::join_all(waits).await {
        ok(t, &format!("clone task to {vmid}"), r);
    }
    for (vmid, w) in ids {
        let cfg = config(t, vmid).await;
        assert_eq!(cfg.lock, None, "[{}] {vmid} still locked", label(t));
        assert_eq!(cfg.name.as_deref(), Some(t.vm_name(&w).as_str()));
    }
}

pub async fn racing_allocations_get_distinct_ids_and_adopt_no_foreign_vm(t: &Target) {
    // Someone else's VM sits on the hint; its description carries no marker of ours.
    let hint = t.fresh_vmid().await;
    t.track(hint);
    let foreign = CloneParams {
        newid: hint,
        name: Some(t.vm_name("foreign")),
        description: Some("owned by another tool".into()),
        ..Default::default()
    };
    wait_upid(
        t,
        "foreign clone",
        t.client.clone_vm(&t.node, t.template_vmid, &foreign).await,
    )
    .await;
    let foreign_before = config(t, hint).await;

    // Two independent clients (two engine processes) allocate from the same hint at once.
    let racers: Vec<_> = ["race-a", "race-b"]
        .into_iter()
        .map(|who| {
            let client = t.new_client();
            let node = t.node.clone();
            let template = t.template_vmid;
            let name = t.vm_name(who);
            let marker = format!("hyops-conf-marker:{name}");
            let wait = t.wait_opts();
            tokio::spawn(async move {
                let params = CloneParams {
                    name: Some(name),
                    description: Some(marker.clone()),
                    ..Default::default()
                };
                let req = AllocateRequest {
                    node: &node,
                    template_vmid: template,
                    params: &params,
                    ownership: Ownership::Marker(&marker),
                    start_hint: Some(hint),
                    range: Some(hint..=hint + 40),
                    max_attempts: 10,
                    wait: Some(wait),
                };
                (marker.clone(), allocate(&client, &req).await)
            })
        })
        .collect();
    let mut got = Vec::new();
    for r in futures::future::join_all(racers).await {
        let (marker, alloc) = match r {
            Ok(x) => x,
            Err(e) => panic!("[{}] racing task panicked: {e}", label(t)),
        };
        let alloc = ok(t, "allocate_vmid_and_clone", alloc);
        assert!(
            matches!(alloc, CloneAllocation::Completed { .. }),
            "[{}] expected a completed clone, got {alloc:?}",
            label(t)
        );
        t.track(alloc.vmid());
        got.push((alloc.vmid(), marker));
    }
    let (a, b) = (got[0].0, got[1].0);
    assert_ne!(a, b, "[{}] both racers got VM {a}", label(t));
    assert!(
        a != hint && b != hint,
        "[{}] a racer took the foreign VM {hint}",
        label(t)
    );
    for (vmid, marker) in &got {
        let cfg = config(t, *vmid).await;
        assert!(
            cfg.description_contains(marker),
            "[{}] VM {vmid} is not the racer's own clone: {:?}",
            label(t),
            cfg.description
        );
    }
    let foreign_after = config(t, hint).await;
    assert_eq!(foreign_after.description, foreign_before.description);
    assert_eq!(foreign_after.name, foreign_before.name);
}

async fn allocate(client: &PveClient, req: &AllocateRequest<'_>) -> PveResult<CloneAllocation> {
    client.allocate_vmid_and_clone(req).await
}

pub async fn shutdown_of_a_stopped_vm_is_not_an_http_error(t: &Target) {
    let vmid = t.clone_template("shut").await;
    let sent = t.client.shutdown(&t.node, vmid, Some(30), false).await;
    if t.caps.shutdown_of_stopped_vm_is_task {
        wait_upid(t, "shutdown of a stopped VM", sent).await;
    } else {
        // Known gap (fakepve): HTTP 500 `VM N not running`.
        let err = match sent {
            Err(e) => e,
            Ok(u) => panic!(
                "[{}] gap closed? shutdown answered {u}; update Capabilities",
                label(t)
            ),
        };
        assert_eq!(err.status(), Some(500), "[{}] {err}", label(t));
    }
    assert!(
        !is_running(t, vmid).await,
        "[{}] shutdown started the VM",
        label(t)
    );
}

/// Every request of a full engine-shaped flow reached the simulator's spec check with the
/// endpoint template the client meant, and passed it (a rejected request is a 400 that would
/// fail the call).
pub async fn every_request_passed_the_simulators_spec_check(t: &Target) {
    let Some(sim) = t.sim.as_ref().filter(|_| t.caps.spec_counters) else {
        // Only the simulator counts requests per endpoint; nothing to check elsewhere.
        return;
    };
    let (c, n) = (&t.client, t.node.as_str());
    ok(t, "version", c.version().await);
    ok(
        t,
        "resources",
        c.cluster_resources(Some(ResourceType::Vm)).await,
    );
    let vmid = t.clone_template("spec").await;
    let cfg = config(t, vmid).await;
    let nic1: NetDevice = ok_parse("net1", &format!("virtio,bridge={},tag=30", t.bridge));
    let update = ConfigUpdate::new()
        .ciuser("hyops")
        .sshkeys(&[SSH_KEY.to_string()])
        .ipconfig(0, &ok_parse("ipconfig0", "ip=10.20.30.41/24,gw=10.20.30.1"))
        .nameserver("10.20.30.2")
        .searchdomain("example.internal")
        .net(1, &nic1)
        .description("hyops-conf spec check")
        .cores(2)
        .memory(&Memory::mib(1024));
    if let Some(upid) = ok(
        t,
        "POST config",
        c.update_config_async(n, vmid, &update).await,
    ) {
        ok(t, "qmconfig", t.wait(&upid).await);
    }
    ok(
        t,
        "PUT config",
        c.update_config_sync(n, vmid, &ConfigUpdate::new().onboot(true))
            .await,
    );
    let (slot, _) = boot_disk(&cfg);
    let grown = DiskSize(disk_size(t, &cfg).bytes() + GIB);
    wait_upid(t, "resize", c.resize(n, vmid, slot, grown).await).await;
    wait_upid(t, "start", c.start(n, vmid).await).await;
    ok(t, "status", c.vm_status(n, vmid).await);
    wait_upid(t, "shutdown", c.shutdown(n, vmid, Some(30), true).await).await;
    wait_upid(t, "delete", c.delete_vm(n, vmid, true, true).await).await;

    let sent = c.metrics();
    let seen = sim.counters();
    assert_eq!(
        seen.get("GET", "?")
            + seen.get("POST", "?")
            + seen.get("PUT", "?")
            + seen.get("DELETE", "?"),
        0,
        "[{}] requests to endpoints outside the spec: {:?}",
        label(t),
        seen.by_endpoint
    );
    for (key, count) in &sent.calls {
        let (method, template) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        assert_eq!(
            seen.get(method, template),
            *count,
            "[{}] client sent {count} × {key}; the simulator's checker saw a different number ({:?})",
            label(t),
            seen.by_endpoint
        );
    }
    assert_eq!(
        seen.total,
        sent.total,
        "[{}] request totals differ",
        label(t)
    );
}

/// The reads the plan's placement checks and pending detection use answer with the shapes the
/// client decodes: the node is listed online, the target's bridge and the template's storage
/// are on it (the storage holding VM images), and a running VM's non-hot-pluggable change is
/// reported pending (`GET …/pending`) until the VM restarts.
pub async fn placement_reads_and_pending_answer_what_the_plan_needs(t: &Target) {
    let (c, n) = (&t.client, t.node.as_str());
    let nodes = ok(t, "GET /nodes", c.nodes().await);
    assert!(
        nodes.iter().any(|x| x.node == n && x.is_online()),
        "[{}] {nodes:?}",
        label(t)
    );
    let bridges = ok(t, "GET /nodes/{node}/network", c.node_bridges(n).await);
    assert!(
        bridges.iter().any(|b| b.iface == t.bridge),
        "[{}] bridge {} not listed: {bridges:?}",
        label(t),
        t.bridge
    );
    let tcfg = config(t, t.template_vmid).await;
    let (_, disk) = boot_disk(&tcfg);
    let sid = disk.file.split(':').next().unwrap_or_default().to_string();
    let storages = ok(
        t,
        "GET /nodes/{node}/storage",
        c.node_storages(n, None).await,
    );
    let st = storages
        .iter()
        .find(|s| s.storage == sid)
        .unwrap_or_else(|| panic!("[{}] storage {sid} not listed: {storages:?}", label(t)));
    assert!(
        st.has_content("images") && st.usable(),
        "[{}] {st:?}",
        label(t)
    );

    let vmid = t.clone_template("pending").await;
    wait_upid(t, "start", c.start(n, vmid).await).await;
    let before = ok(t, "pending", c.vm_pending(n, vmid).await);
    assert!(
        !before.iter().any(|p| p.is_pending()),
        "[{}] nothing pending after a start: {before:?}",
        label(t)
    );
    let update = ConfigUpdate::new().cores(3);
    if let Some(upid) = ok(
        t,
        "POST config",
        c.update_config_async(n, vmid, &update).await,
    ) {
        ok(t, "qmconfig", t.wait(&upid).await);
    }
    let after = ok(t, "pending", c.vm_pending(n, vmid).await);
    let cores = after
        .iter()
        .find(|p| p.key == "cores")
        .unwrap_or_else(|| panic!("[{}] no cores row: {after:?}", label(t)));
    assert!(
        cores.is_pending(),
        "[{}] cores not pending: {cores:?}",
        label(t)
    );
    assert_eq!(cores.pending.as_deref(), Some("3"), "[{}]", label(t));
}
