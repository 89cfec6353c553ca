//! Simulator qemu-server semantics: clone locking and races, `lock: clone`, resize, power,
//! destroy, pending config, guest agent and cloud-init output.

use crate::sim_support;

use sim_support::{start, urlenc, T};
use std::time::Duration;

#[tokio::test]
async fn concurrent_linked_clones_of_a_stopped_template_all_succeed() {
    let t = start(0.001).await;
    let (a, b, c) = tokio::join!(
        t.clone_vm("pve1", 9000, 101, &[]),
        t.clone_vm("pve1", 9000, 102, &[]),
        t.clone_vm("pve1", 9000, 103, &[]),
    );
    assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("OK", "OK", "OK"));
    let cfg = t.config("pve1", 102).await;
    assert_eq!(
        cfg["scsi0"],
        "local-lvm:base-9000-disk-0/vm-102-disk-0,size=32G"
    );
    assert_eq!(cfg["ide2"], "local-lvm:vm-102-cloudinit,media=cdrom");
    assert!(cfg.get("template").is_none() && cfg.get("lock").is_none());
    assert_eq!(cfg["name"], "Copy-of-VM-ubuntu-24.04");
    let tpl_mac = t.config("pve1", 9000).await["net0"]
        .as_str()
        .unwrap()
        .to_string();
    let mac = cfg["net0"].as_str().unwrap();
    assert!(
        mac.starts_with("virtio=BC:24:11:") && mac != tpl_mac,
        "{mac}"
    );
}

#[tokio::test]
async fn second_concurrent_clone_of_a_running_vm_fails_in_its_task() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 110, &[]).await, "OK");
    let r = t.post("/nodes/pve1/qemu/110/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r1 = t
        .post("/nodes/pve1/qemu/110/clone", &[("newid", "111")])
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r2 = t
        .post("/nodes/pve1/qemu/110/clone", &[("newid", "112")])
        .await;
    let (s1, s2) = tokio::join!(t.task(r1), t.task(r2));
    assert_eq!(s1, "OK");
    assert_eq!(
        s2,
        "can't lock file '/var/lock/qemu-server/lock-110.conf' - got timeout"
    );
}

#[tokio::test]
async fn linked_clone_of_a_plain_vm_is_refused_synchronously() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 113, &[("full", "1")]).await, "OK");
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/113/clone",
            &[("newid", "114"), ("full", "0")],
        )
        .await;
    assert_eq!(code, 500);
    assert_eq!(
        v["message"],
        "Linked clone feature is not supported for 'local-lvm:vm-113-disk-0' (scsi0)\n"
    );
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "114"), ("storage", "ceph-vm")],
        )
        .await;
    assert_eq!(code, 500);
    assert_eq!(
        v["message"],
        "parameter 'storage' not allowed for linked clones\n"
    );
}

#[tokio::test]
async fn calls_on_a_vm_under_lock_clone_fail() {
    let t = start(0.01).await;
    let r = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "120"), ("full", "1")],
        )
        .await;
    let upid = r.1["data"].as_str().unwrap().to_string();
    loop {
        let (code, v) = t.get("/nodes/pve1/qemu/120/status/current", &[]).await;
        if code == 200 && v["data"]["lock"] == "clone" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (code, v) = t
        .put("/nodes/pve1/qemu/120/config", &[("cores", "4")])
        .await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "VM is locked (clone)\n")
    );
    let r = t.post("/nodes/pve1/qemu/120/status/start", &[]).await;
    assert_eq!(t.task(r).await, "VM is locked (clone)");
    assert_eq!(t.wait(&upid).await["exitstatus"], "OK");
    assert!(t.config("pve1", 120).await.get("lock").is_none());
}

#[tokio::test]
async fn two_clones_racing_for_one_newid_one_wins() {
    let t = start(0.001).await;
    let (r1, r2) = tokio::join!(
        t.post("/nodes/pve1/qemu/9000/clone", &[("newid", "130")]),
        t.post("/nodes/pve2/qemu/9001/clone", &[("newid", "130")]),
    );
    let mut outcomes = Vec::new();
    for r in [r1, r2] {
        if r.0 == 200 {
            outcomes.push(t.task(r).await);
        } else {
            outcomes.push(r.1["message"].as_str().unwrap().trim_end().to_string());
        }
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "OK").count(),
        1,
        "{outcomes:?}"
    );
    let loser = outcomes.iter().find(|o| *o != "OK").unwrap();
    assert!(
        loser.contains("unable to create VM 130: config file already exists")
            || loser.ends_with("got timeout"),
        "{loser}"
    );
}

#[tokio::test]
async fn racing_clones_on_one_node_lose_on_the_newid_flock_or_the_config_file() {
    let t = start(0.001).await;
    let (r1, r2) = tokio::join!(
        t.post("/nodes/pve1/qemu/9000/clone", &[("newid", "131")]),
        t.post("/nodes/pve1/qemu/9000/clone", &[("newid", "131")]),
    );
    let mut outcomes = Vec::new();
    for r in [r1, r2] {
        if r.0 == 200 {
            outcomes.push(t.task(r).await);
        } else {
            outcomes.push(r.1["message"].as_str().unwrap().trim_end().to_string());
        }
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "OK").count(),
        1,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn shrinking_fails_inside_the_task_and_equal_size_is_a_no_op() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 140, &[]).await, "OK");
    let (code, r) = t
        .put(
            "/nodes/pve1/qemu/140/resize",
            &[("disk", "scsi0"), ("size", "16G")],
        )
        .await;
    assert_eq!(code, 200, "the HTTP call succeeds");
    assert_eq!(t.task((code, r)).await, "shrinking disks is not supported");
    let r = t
        .put(
            "/nodes/pve1/qemu/140/resize",
            &[("disk", "scsi0"), ("size", "32G")],
        )
        .await;
    assert_eq!(t.task(r).await, "OK");
    let r = t
        .put(
            "/nodes/pve1/qemu/140/resize",
            &[("disk", "scsi0"), ("size", "40G")],
        )
        .await;
    assert_eq!(t.task(r).await, "OK");
    assert_eq!(
        t.config("pve1", 140).await["scsi0"],
        "local-lvm:base-9000-disk-0/vm-140-disk-0,size=40G"
    );
    let r = t
        .put(
            "/nodes/pve1/qemu/140/resize",
            &[("disk", "scsi5"), ("size", "40G")],
        )
        .await;
    assert_eq!(t.task(r).await, "disk 'scsi5' does not exist");
}

#[tokio::test]
async fn starting_twice_fails_the_second_task_and_templates_cannot_start() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 150, &[]).await, "OK");
    let r = t.post("/nodes/pve1/qemu/150/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r = t.post("/nodes/pve1/qemu/150/status/start", &[]).await;
    assert_eq!(t.task(r).await, "VM 150 already running");
    let r = t.post("/nodes/pve1/qemu/9000/status/start", &[]).await;
    assert_eq!(t.task(r).await, "you can't start a vm if it's a template");
    let log = t
        .get(
            &format!(
                "/nodes/pve1/tasks/{}/log",
                urlenc(r_upid(&t, 150).await.as_str())
            ),
            &[],
        )
        .await;
    assert_eq!(
        log.1["data"].as_array().unwrap().last().unwrap()["t"],
        "TASK ERROR: VM 150 already running"
    );
}

async fn r_upid(t: &T, vmid: u32) -> String {
    let r = t
        .post(&format!("/nodes/pve1/qemu/{vmid}/status/start"), &[])
        .await;
    let u = r.1["data"].as_str().unwrap().to_string();
    t.wait(&u).await;
    u
}

#[tokio::test]
async fn shutting_down_a_stopped_vm_is_ok_and_a_short_timeout_fails_without_force() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 160, &[]).await, "OK");
    let r = t.post("/nodes/pve1/qemu/160/status/shutdown", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r = t.post("/nodes/pve1/qemu/160/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r = t
        .post("/nodes/pve1/qemu/160/status/shutdown", &[("timeout", "1")])
        .await;
    assert_eq!(t.task(r).await, "VM quit/powerdown failed - got timeout");
    let r = t
        .post(
            "/nodes/pve1/qemu/160/status/shutdown",
            &[("timeout", "1"), ("forceStop", "1")],
        )
        .await;
    assert_eq!(t.task(r).await, "OK");
    let (_, v) = t.get("/nodes/pve1/qemu/160/status/current", &[]).await;
    assert_eq!(v["data"]["status"], "stopped");
}

#[tokio::test]
async fn deleting_a_running_vm_fails_and_a_stopped_one_frees_its_id() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 170, &[]).await, "OK");
    let r = t.post("/nodes/pve1/qemu/170/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (code, v) = t.delete("/nodes/pve1/qemu/170", &[("purge", "1")]).await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "VM 170 is running - destroy failed\n")
    );
    let r = t.post("/nodes/pve1/qemu/170/status/stop", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r = t
        .delete(
            "/nodes/pve1/qemu/170",
            &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
        )
        .await;
    assert_eq!(t.task(r).await, "OK");
    assert_eq!(t.get("/cluster/nextid", &[("vmid", "170")]).await.0, 200);
    let r = t.delete("/nodes/pve1/qemu/9000", &[]).await;
    assert_eq!(t.task(r).await, "OK", "no linked clones remain");
}

#[tokio::test]
async fn template_with_linked_clones_cannot_be_destroyed() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 175, &[]).await, "OK");
    let r = t.delete("/nodes/pve1/qemu/9000", &[]).await;
    assert_eq!(
        t.task(r).await,
        "base volume 'local-lvm:base-9000-disk-0' is still in use by linked cloned"
    );
}

#[tokio::test]
async fn config_digest_mismatch_and_pending_values_on_a_running_vm() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 180, &[]).await, "OK");
    let cfg = t.config("pve1", 180).await;
    let digest = cfg["digest"].as_str().unwrap().to_string();
    let r = t
        .post(
            "/nodes/pve1/qemu/180/config",
            &[("cores", "4"), ("digest", &digest)],
        )
        .await;
    assert_eq!(t.task(r).await, "OK");
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/180/config",
            &[("cores", "8"), ("digest", &digest)],
        )
        .await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "checksum mismatch (file change by other user?)\n")
    );
    let r = t.post("/nodes/pve1/qemu/180/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (code, _) = t
        .put(
            "/nodes/pve1/qemu/180/config",
            &[("ciuser", "ops"), ("memory", "4096"), ("tags", "web;prod")],
        )
        .await;
    assert_eq!(code, 200);
    let (_, cur) = t
        .get("/nodes/pve1/qemu/180/config", &[("current", "1")])
        .await;
    assert_eq!(
        cur["data"]["ciuser"], "ops",
        "cloud-init options are fast-plug in qemu-server 9.2 ($fast_plug_option, QemuServer.pm 4609)"
    );
    assert_eq!(
        cur["data"]["memory"], "2048",
        "memory needs the memory hotplug feature"
    );
    assert_eq!(
        cur["data"]["tags"], "web;prod",
        "fast-plug option applies at once"
    );
    let cfg = t.config("pve1", 180).await;
    assert_eq!(cfg["ciuser"], "ops");
    let (_, p) = t.get("/nodes/pve1/qemu/180/pending", &[]).await;
    let mem = p["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "memory")
        .unwrap()
        .clone();
    assert_eq!(
        (mem["value"].clone(), mem["pending"].clone()),
        (serde_json::json!("2048"), serde_json::json!("4096"))
    );
    let r = t.post("/nodes/pve1/qemu/180/status/stop", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r = t.post("/nodes/pve1/qemu/180/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (_, cur) = t
        .get("/nodes/pve1/qemu/180/config", &[("current", "1")])
        .await;
    assert_eq!(cur["data"]["memory"], "4096", "pending applied at start");
    let (code, _) = t
        .put("/nodes/pve1/qemu/180/config", &[("delete", "tags")])
        .await;
    assert_eq!(code, 200);
    assert!(t.config("pve1", 180).await.get("tags").is_none());
}

#[tokio::test]
async fn guest_agent_reports_addresses_only_after_the_boot_delay() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 190, &[]).await, "OK");
    let (code, _) = t
        .put(
            "/nodes/pve1/qemu/190/config",
            &[
                ("ipconfig0", "ip=10.20.0.5/24,gw=10.20.0.1"),
                ("net1", "virtio,bridge=vmbr1"),
                ("ipconfig1", "ip=dhcp"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    let path = "/nodes/pve1/qemu/190/agent/network-get-interfaces";
    let (code, v) = t.get(path, &[]).await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "VM 190 is not running\n")
    );
    let r = t.post("/nodes/pve1/qemu/190/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    // The agent answers from `started_at + boot_delay_ms` (simulated). Each request is
    // bracketed by the simulated clock, so the assertions hold on any side of that instant
    // however long the machine's load stalls the test (no wall-clock guess).
    let up_at = t.h.state().vms[&190].started_at_ms.unwrap() + t.h.latency().boot_delay_ms;
    let v = loop {
        let before = t.h.now_ms();
        let (code, v) = t.get(path, &[]).await;
        let after = t.h.now_ms();
        if code == 200 {
            assert!(
                after >= up_at,
                "the agent answered before the boot delay: {v}"
            );
            break v;
        }
        assert_eq!(
            (code, v["message"].as_str().unwrap()),
            (500, "QEMU guest agent is not running\n")
        );
        assert!(before < up_at, "no agent after the boot delay");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res[0]["name"], "lo");
    let cfg = t.config("pve1", 190).await;
    let mac = cfg["net0"].as_str().unwrap()[7..24].to_lowercase();
    assert_eq!(res[1]["hardware-address"], mac.as_str());
    assert_eq!(res[1]["ip-addresses"][0]["ip-address"], "10.20.0.5");
    assert_eq!(res[1]["ip-addresses"][0]["prefix"], 24);
    assert!(res[2]["ip-addresses"][0]["ip-address"]
        .as_str()
        .unwrap()
        .starts_with("10.99."));
    let (code, _) = t
        .put("/nodes/pve1/qemu/190/config", &[("delete", "agent")])
        .await;
    assert_eq!(code, 200);
    let r = t.post("/nodes/pve1/qemu/190/status/stop", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let r = t.post("/nodes/pve1/qemu/190/status/start", &[]).await;
    assert_eq!(t.task(r).await, "OK");
    let (code, v) = t.get(path, &[]).await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "No QEMU guest agent configured\n")
    );
}

async fn dump(t: &T, kind: &str) -> String {
    t.get("/nodes/pve1/qemu/200/cloudinit/dump", &[("type", kind)])
        .await
        .1["data"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn cloudinit_dump_shows_what_the_guest_will_see() {
    let t = start(0.001).await;
    assert_eq!(
        t.clone_vm("pve1", 9000, 200, &[("name", "web-1")]).await,
        "OK"
    );
    let keys = urlenc("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx me@host");
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/200/config",
            &[
                ("ciuser", "ops"),
                ("sshkeys", &keys),
                ("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1"),
                ("nameserver", "1.1.1.1"),
                ("searchdomain", "lab.example"),
            ],
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let user = dump(&t, "user").await;
    assert!(
        user.contains("hostname: web-1\n") && user.contains("fqdn: web-1.lab.example\n"),
        "{user}"
    );
    assert!(user.contains("user: ops\n"));
    assert!(
        user.contains(
            "ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx me@host\n"
        ),
        "{user}"
    );
    let net = dump(&t, "network").await;
    assert!(
        net.starts_with("version: 1\nconfig:\n    - type: physical\n      name: eth0\n"),
        "{net}"
    );
    assert!(
        net.contains(
            "address: '10.0.0.5'\n        netmask: '255.255.255.0'\n        gateway: '10.0.0.1'\n"
        ),
        "{net}"
    );
    let meta = dump(&t, "meta").await;
    assert!(
        meta.starts_with("instance-id: ") && meta.trim_end().len() == "instance-id: ".len() + 40
    );
    let (code, _) = t.put("/nodes/pve1/qemu/200/cloudinit", &[]).await;
    assert_eq!(code, 200);
    let (_, ci) = t.get("/nodes/pve1/qemu/200/cloudinit", &[]).await;
    assert!(
        ci["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("pending").is_none()),
        "{ci}"
    );
}

#[tokio::test]
async fn storage_content_lists_the_clone_volumes() {
    let t = start(0.001).await;
    assert_eq!(
        t.clone_vm("pve1", 9000, 210, &[("full", "1"), ("storage", "ceph-vm")])
            .await,
        "OK"
    );
    let (_, v) = t
        .get("/nodes/pve2/storage/ceph-vm/content", &[("vmid", "210")])
        .await;
    let vols: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["volid"].as_str().unwrap())
        .collect();
    assert_eq!(
        vols,
        vec!["ceph-vm:vm-210-cloudinit", "ceph-vm:vm-210-disk-0"]
    );
    let used =
        t.h.storages()
            .into_iter()
            .find(|s| s.storage == "ceph-vm")
            .unwrap()
            .used_bytes;
    assert!(used >= 32 << 30);
}

#[tokio::test]
async fn a_locked_source_blocks_clones_synchronously() {
    let t = start(0.001).await;
    t.h.state()
        .vms
        .get_mut(&9000)
        .unwrap()
        .config
        .insert("lock".into(), "backup".into());
    let (code, v) = t
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "220")])
        .await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "VM is locked (backup)\n")
    );
    let (_, r) = t.get("/cluster/resources", &[("type", "vm")]).await;
    let row = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vmid"] == 9000)
        .unwrap()
        .clone();
    assert_eq!(row["lock"], "backup");
}

#[tokio::test]
async fn node_task_slots_serialise_tasks_on_a_node() {
    use hyops_pve::sim::{LatencyModel, SimConfig};
    let run = |slots: usize| async move {
        let t = sim_support::start_with(SimConfig {
            latency: LatencyModel {
                node_task_slots: slots,
                ..Default::default()
            },
            // a full clone copies the template's allocated data (~20 simulated s): at this
            // scale one clone outweighs a busy machine's overheads
            time_scale: 0.02,
            tls: false,
            ..SimConfig::default()
        })
        .await;
        let t0 = std::time::Instant::now();
        let (a, b) = tokio::join!(
            t.clone_vm("pve1", 9000, 230, &[("full", "1")]),
            t.clone_vm("pve1", 9000, 231, &[("full", "1"), ("storage", "ceph-vm")]),
        );
        assert_eq!((a.as_str(), b.as_str()), ("OK", "OK"));
        t0.elapsed().as_millis()
    };
    let parallel = run(4).await;
    let serial = run(1).await;
    assert!(
        serial > parallel + 50,
        "serial {serial} ms vs parallel {parallel} ms"
    );
}

#[tokio::test]
async fn wait_idle_returns_once_every_task_has_stopped() {
    let t = start(0.001).await;
    for id in ["240", "241"] {
        let (code, _) = t
            .post(
                "/nodes/pve1/qemu/9000/clone",
                &[("newid", id), ("full", "1")],
            )
            .await;
        assert_eq!(code, 200);
    }
    assert!(t.h.running_tasks() > 0);
    assert!(t.h.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(t.h.running_tasks(), 0);
    assert!(t.h.state().vms.contains_key(&241));
}

#[tokio::test]
async fn storage_colon_size_allocates_a_new_volume() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 250, &[]).await, "OK");
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/250/config",
            &[("scsi1", "local-lvm:20,discard=on")],
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        t.config("pve1", 250).await["scsi1"],
        "local-lvm:vm-250-disk-1,discard=on,size=20G"
    );
    let (code, v) = t
        .put("/nodes/pve1/qemu/250/config", &[("scsi2", "nowhere:20")])
        .await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (500, "storage 'nowhere' does not exist\n")
    );
}

#[tokio::test]
async fn a_hundred_parallel_clones_run_in_seconds_and_fail_only_on_the_storage_lock() {
    let t = start(0.001).await;
    let tr = &t;
    let t0 = std::time::Instant::now();
    let futs = (0..100u32).map(|i| async move { tr.clone_vm("pve1", 9000, 1000 + i, &[]).await });
    let res = futures::future::join_all(futs).await;
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(res.iter().any(|r| r == "OK"));
    for r in &res {
        assert!(
            r == "OK"
                || r == "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout",
            "{r}"
        );
    }
    let ok = res.iter().filter(|r| *r == "OK").count();
    let vms = t.h.state().vms.len();
    assert_eq!(vms, 2 + ok, "failed clones leave no config");
}
