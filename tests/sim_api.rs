//! Simulator wire behaviour: authentication, parameter verification, unknown methods, wrong
//! node, nextid, resources, fault injection, time scale, TLS and state persistence.

use crate::sim_support;

use hyops_pve::sim::{FaultAction, FaultRule, SimConfig, SimState, Simulator};
use sim_support::{start, start_with, T};
use std::time::Instant;

#[tokio::test]
async fn api_token_authenticates_and_a_wrong_secret_gets_401() {
    let t = start(0.001).await;
    let (code, v) = t.get("/version", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(v["data"]["release"], "9.2");
    let r =
        t.c.get(t.url("/version"))
            .header(
                "Authorization",
                format!("PVEAPIToken={}=wrong", t.h.token_id),
            )
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = t.c.get(t.url("/version")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

async fn login(t: &T) -> (String, String) {
    let r =
        t.c.post(t.url("/access/ticket"))
            .form(&[("username", "root@pam"), ("password", "sim-root-password")])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["data"]["ticket"].as_str().unwrap().to_string(),
        v["data"]["CSRFPreventionToken"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn ticket_needs_csrf_for_writes_but_not_for_reads() {
    let t = start(0.001).await;
    let (ticket, csrf) = login(&t).await;
    let cookie = format!("PVEAuthCookie={ticket}");
    let r =
        t.c.get(t.url("/cluster/nextid"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let put = |with_csrf: bool| {
        let mut rb =
            t.c.put(t.url("/nodes/pve1/qemu/9000/config"))
                .header("Cookie", &cookie)
                .form(&[("description", "x")]);
        if with_csrf {
            rb = rb.header("CSRFPreventionToken", &csrf);
        }
        rb.send()
    };
    let r = put(false).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Permission denied - invalid csrf token\n");
    assert_eq!(put(true).await.unwrap().status().as_u16(), 200);
    let bad =
        t.c.post(t.url("/access/ticket"))
            .form(&[("username", "root@pam"), ("password", "nope")])
            .send()
            .await
            .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
}

#[tokio::test]
async fn unknown_parameter_is_refused_with_pve_message() {
    let t = start(0.001).await;
    let (code, v) = t
        .put("/nodes/pve1/qemu/9000/config", &[("bogus", "1")])
        .await;
    assert_eq!(code, 400);
    assert_eq!(v["message"], "Parameter verification failed.\n");
    assert_eq!(
        v["errors"]["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert!(v["data"].is_null());
}

#[tokio::test]
async fn vlan_tag_out_of_range_is_refused() {
    let t = start(0.001).await;
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/9000/config",
            &[("net0", "virtio,bridge=vmbr0,tag=4095")],
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        v["errors"]["net0.tag"],
        "value must have a maximum value of 4094"
    );
}

#[tokio::test]
async fn raw_sshkeys_fail_and_double_encoded_form_passes() {
    let t = start(0.001).await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx me@host";
    let (code, v) = t
        .put("/nodes/pve1/qemu/9000/config", &[("sshkeys", key)])
        .await;
    assert_eq!(code, 400);
    assert!(
        v["errors"]["sshkeys"]
            .as_str()
            .unwrap()
            .starts_with("invalid format - invalid urlencoded string: ssh-ed25519 "),
        "{v}"
    );
    // single percent-encoding (RFC 3986), then form-encoded again by reqwest
    let once = sim_support::urlenc(key);
    let (code, v) = t
        .put("/nodes/pve1/qemu/9000/config", &[("sshkeys", &once)])
        .await;
    assert_eq!(code, 200, "{v}");
    let cfg = t.config("pve1", 9000).await;
    assert_eq!(
        cfg["sshkeys"],
        once.as_str(),
        "stored still percent-encoded"
    );
}

#[tokio::test]
async fn plus_in_a_raw_form_body_fails_the_size_pattern_but_encoded_plus_passes() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 120, &[]).await, "OK");
    let (code, v) = t
        .raw(
            reqwest::Method::PUT,
            "/nodes/pve1/qemu/120/resize",
            "disk=scsi0&size=+10G",
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        v["errors"]["size"],
        "value does not match the regex pattern"
    );
    let r = t
        .raw(
            reqwest::Method::PUT,
            "/nodes/pve1/qemu/120/resize",
            "disk=scsi0&size=%2B10G",
        )
        .await;
    assert_eq!(t.task(r).await, "OK");
    assert!(t.config("pve1", 120).await["scsi0"]
        .as_str()
        .unwrap()
        .contains("size=42G"));
}

#[tokio::test]
async fn json_bodies_are_accepted() {
    let t = start(0.001).await;
    let r =
        t.c.put(t.url("/nodes/pve1/qemu/9000/config"))
            .header("Authorization", t.h.token_header())
            .json(&serde_json::json!({"cores": 4, "onboot": true}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cfg = t.config("pve1", 9000).await;
    assert_eq!(cfg["cores"], 4);
    assert_eq!(cfg["onboot"], 1);
    assert_eq!(
        cfg["memory"], "2048",
        "memory is a property string, returned as a string"
    );
}

#[tokio::test]
async fn unknown_method_or_path_is_501() {
    let t = start(0.001).await;
    let (code, v) = t.post("/nodes/pve1/qemu/9000/cloudinit", &[]).await;
    assert_eq!(code, 501);
    assert_eq!(
        v["message"],
        "Method 'POST /nodes/pve1/qemu/9000/cloudinit' not implemented\n"
    );
    assert_eq!(t.h.counters().get("POST", "?"), 1);
}

#[tokio::test]
async fn wrong_node_gives_the_load_config_or_find_config_message() {
    let t = start(0.001).await;
    let (code, v) = t.get("/nodes/pve2/qemu/9000/config", &[]).await;
    assert_eq!(code, 500);
    assert_eq!(
        v["message"],
        "Configuration file 'nodes/pve2/qemu-server/9000.conf' does not exist\n"
    );
    let (code, v) = t
        .post("/nodes/pve2/qemu/9000/clone", &[("newid", "130")])
        .await;
    assert_eq!(code, 500);
    assert_eq!(
        v["message"],
        "unable to find configuration file for VM 9000 on node 'pve2'\n"
    );
    let (code, _) = t.get("/nodes/pve2/qemu/9000/status/current", &[]).await;
    assert_eq!(code, 500);
}

#[tokio::test]
async fn nextid_reserves_nothing_and_reports_taken_ids() {
    let t = start(0.001).await;
    let (_, a) = t.get("/cluster/nextid", &[]).await;
    let (_, b) = t.get("/cluster/nextid", &[]).await;
    assert_eq!(a["data"], "100", "a JSON string");
    assert_eq!(a, b);
    let (code, v) = t.get("/cluster/nextid", &[("vmid", "9000")]).await;
    assert_eq!(code, 400);
    assert_eq!(v["errors"]["vmid"], "VM 9000 already exists");
    let (code, v) = t.get("/cluster/nextid", &[("vmid", "555")]).await;
    assert_eq!((code, v["data"].clone()), (200, serde_json::json!("555")));
}

#[tokio::test]
async fn cluster_resources_lists_vms_storages_and_nodes_with_pve_types() {
    let t = start(0.001).await;
    let (_, v) = t.get("/cluster/resources", &[("type", "vm")]).await;
    let rows = v["data"].as_array().unwrap();
    let tpl = rows.iter().find(|r| r["vmid"] == 9001).unwrap();
    assert_eq!(tpl["node"], "pve2");
    assert_eq!(tpl["template"], 1);
    assert_eq!(tpl["maxdisk"], 32u64 << 30);
    let (_, v) = t.get("/cluster/resources", &[("type", "storage")]).await;
    let n = v["data"].as_array().unwrap().len();
    assert_eq!(
        n, 9,
        "local + local-lvm per node, ceph-vm seen from each node"
    );
    let (code, _) = t.get("/cluster/resources", &[("type", "bogus")]).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn fault_rule_on_nth_call_returns_its_status_and_message() {
    let t = start(0.001).await;
    t.h.add_fault(
        FaultRule::on(
            "GET",
            "/version",
            FaultAction::Http {
                status: 596,
                message: "Connection timed out".into(),
            },
        )
        .nth(2),
    );
    assert_eq!(t.get("/version", &[]).await.0, 200);
    let (code, v) = t.get("/version", &[]).await;
    assert_eq!(code, 596);
    assert_eq!(v["message"], "Connection timed out\n");
    assert_eq!(t.get("/version", &[]).await.0, 200);
}

#[tokio::test]
async fn connection_reset_fault_closes_without_a_response() {
    let t = start(0.001).await;
    t.h.add_fault(FaultRule::on("GET", "/cluster/nextid", FaultAction::Reset));
    let r =
        t.c.get(t.url("/cluster/nextid"))
            .header("Authorization", t.h.token_header())
            .send()
            .await;
    assert!(r.is_err(), "expected a transport error, got {r:?}");
}

#[tokio::test]
async fn task_fault_fails_inside_the_task_for_one_vmid() {
    let t = start(0.001).await;
    t.h.add_fault(
        FaultRule::on(
            "POST",
            "/nodes/{node}/qemu/{vmid}/clone",
            FaultAction::LockTimeout,
        )
        .vmid(9000),
    );
    let status = t.clone_vm("pve1", 9000, 140, &[]).await;
    assert_eq!(
        status,
        "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    );
    assert_eq!(t.clone_vm("pve2", 9001, 141, &[]).await, "OK");
    t.h.clear_faults();
    t.h.add_fault(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/status/start",
        FaultAction::TaskFail {
            message: "start failed: QEMU exited with code 1".into(),
        },
    ));
    let r = t.post("/nodes/pve2/qemu/141/status/start", &[]).await;
    assert_eq!(t.task(r).await, "start failed: QEMU exited with code 1");
}

async fn failures_with_seed(seed: u64) -> Vec<bool> {
    let t = start_with(SimConfig {
        time_scale: 0.001,
        tls: false,
        seed,
        ..SimConfig::default()
    })
    .await;
    t.h.add_fault(
        FaultRule::on(
            "GET",
            "/version",
            FaultAction::Http {
                status: 500,
                message: "boom".into(),
            },
        )
        .rate(0.5),
    );
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(t.get("/version", &[]).await.0 == 500);
    }
    out
}

#[tokio::test]
async fn fault_rate_is_seeded_and_roughly_the_rate() {
    let a = failures_with_seed(42).await;
    assert_eq!(a, failures_with_seed(42).await);
    let n = a.iter().filter(|x| **x).count();
    assert!((8..=32).contains(&n), "{n} of 40");
}

#[tokio::test]
async fn time_scale_makes_a_full_clone_take_proportional_real_time() {
    // The template's 2.5 GiB of allocated data at 400 MB/s ≈ 6.7 s simulated, plus 1.5 s of
    // fixed work and two 0.3 s allocations ≈ 8.8 s; at 0.01 that is ~88 ms real.
    let t = start(0.01).await;
    let t0 = Instant::now();
    assert_eq!(t.clone_vm("pve1", 9000, 150, &[("full", "1")]).await, "OK");
    let el = t0.elapsed().as_millis();
    assert!((80..5000).contains(&el), "{el} ms");
}

#[tokio::test]
async fn counters_count_by_template_and_writes() {
    let t = start(0.001).await;
    t.get("/version", &[]).await;
    t.put("/nodes/pve1/qemu/9000/config", &[("cores", "3")])
        .await;
    let c = t.h.counters();
    assert_eq!(c.get("GET", "/version"), 1);
    assert_eq!(c.get("PUT", "/nodes/{node}/qemu/{vmid}/config"), 1);
    assert_eq!(c.writes, 1);
    assert_eq!(c.total, 2);
}

#[tokio::test]
async fn state_save_and_load_round_trips_the_cluster() {
    let t = start(0.001).await;
    assert_eq!(
        t.clone_vm("pve1", 9000, 160, &[("name", "keep-me")]).await,
        "OK"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    t.h.snapshot_state().save_to(&path).unwrap();
    t.h.shutdown().await;
    let loaded = SimState::load_from(&path).unwrap();
    let t2 = T {
        h: Simulator::start_with_state(
            SimConfig {
                time_scale: 0.001,
                tls: false,
                ..SimConfig::default()
            },
            loaded,
        )
        .await
        .unwrap(),
        c: reqwest::Client::new(),
    };
    assert_eq!(t2.config("pve1", 160).await["name"], "keep-me");
    let (code, _) = t2.get("/cluster/nextid", &[("vmid", "160")]).await;
    assert_eq!(code, 400, "id 160 stays taken");
}

#[tokio::test]
async fn https_serves_the_certificate_whose_fingerprint_is_published() {
    let h = Simulator::start(SimConfig {
        time_scale: 0.001,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    assert!(h.url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(h.ca_pem.as_bytes()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = h.url().to_string();
    let r = c
        .get(format!("{url}/version"))
        .header("Authorization", h.token_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(h.ca_fingerprint_sha256.len(), 64);
    h.shutdown().await;
}

#[tokio::test]
async fn example_cluster_file_loads_and_serves_its_templates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sim-cluster.yml");
    let cluster = hyops_pve::sim::ClusterDescription::from_file(&path).unwrap();
    let t = start_with(SimConfig {
        cluster,
        time_scale: 0.001,
        tls: false,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(t.get("/cluster/nextid", &[]).await.1["data"], "1000");
    assert_eq!(
        t.clone_vm("pve-b", 9100, 1000, &[("target", "pve-a")])
            .await,
        "OK"
    );
    assert_eq!(
        t.config("pve-a", 1000).await["scsi0"],
        "nfs-vm:base-9100-disk-0/vm-1000-disk-0,size=20G"
    );
    let (code, v) = t
        .post(
            "/nodes/pve-a/qemu/9000/clone",
            &[("newid", "1001"), ("target", "pve-b")],
        )
        .await;
    assert_eq!(
        (code, v["message"].as_str().unwrap()),
        (
            500,
            "can't clone VM to node 'pve-b' (VM uses local storage)\n"
        )
    );
}

#[tokio::test]
async fn parallel_allocations_on_one_storage_time_out_on_the_storage_lock() {
    let latency = hyops_pve::sim::LatencyModel {
        storage_alloc_ms: 4000,
        ..Default::default()
    };
    let t = start_with(SimConfig {
        latency,
        time_scale: 0.01,
        tls: false,
        ..SimConfig::default()
    })
    .await;
    let ids = ["301", "302", "303", "304", "305"];
    let mut upids = Vec::new();
    for id in ids {
        let r = t
            .post(
                "/nodes/pve1/qemu/9000/clone",
                &[("newid", id), ("full", "1")],
            )
            .await;
        upids.push(r.1["data"].as_str().unwrap().to_string());
    }
    let mut results = Vec::new();
    for u in &upids {
        results.push(t.wait(u).await["exitstatus"].as_str().unwrap().to_string());
    }
    assert!(results.iter().any(|r| r == "OK"), "{results:?}");
    assert!(
        results.iter().any(|r| r == "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"),
        "{results:?}"
    );
    let failed: Vec<&str> = ids
        .iter()
        .zip(&results)
        .filter(|(_, r)| *r != "OK")
        .map(|(i, _)| *i)
        .collect();
    for id in failed {
        assert_eq!(
            t.get("/cluster/nextid", &[("vmid", id)]).await.0,
            200,
            "failed clone {id} leaves no config"
        );
    }
}

#[tokio::test]
async fn slow_task_fault_delays_the_task_and_faults_are_settable_at_runtime() {
    let t = start(0.001).await;
    t.h.faults().add(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        FaultAction::SlowTask { extra_ms: 300_000 },
    ));
    let t0 = Instant::now();
    assert_eq!(t.clone_vm("pve1", 9000, 170, &[]).await, "OK");
    assert!(
        t0.elapsed().as_millis() >= 300,
        "5 simulated minutes = 300 ms at 0.001"
    );
    t.h.faults().clear();
    let t0 = Instant::now();
    assert_eq!(t.clone_vm("pve1", 9000, 171, &[]).await, "OK");
    assert!(t0.elapsed().as_millis() < 300);
}

#[tokio::test]
async fn config_post_with_background_delay_returns_null_when_done_in_time() {
    let t = start(0.001).await;
    // 30 s, the schema's maximum, is 30 ms of real time here: the task (200 ms simulated)
    // normally ends well inside it. The request is bracketed by the simulated clock: only
    // when the machine's load stalled it past the whole delay may a UPID come back.
    let before = t.h.now_ms();
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/config",
            &[("cores", "3"), ("background_delay", "30")],
        )
        .await;
    let after = t.h.now_ms();
    assert_eq!(code, 200, "{v}");
    if !v["data"].is_null() {
        assert!(
            after - before >= 30_000,
            "a UPID before the background delay ran out: {v}"
        );
        assert_eq!(t.task((code, v)).await, "OK");
    }
    assert_eq!(t.config("pve1", 9000).await["cores"], 3);
    let r = t
        .post("/nodes/pve1/qemu/9000/config", &[("cores", "4")])
        .await;
    assert_eq!(t.task(r).await, "OK");
}

#[tokio::test]
async fn serve_summary_names_url_token_fingerprint_and_templates() {
    let t = start(0.001).await;
    let s = hyops_pve::sim::describe(&t.h, std::path::Path::new("/tmp/ca.pem"));
    assert!(s.contains(t.h.url()));
    assert!(s.contains("Authorization: PVEAPIToken=root@pam!hyops="));
    assert!(s.contains(&t.h.ca_fingerprint_colon));
    assert!(
        s.contains("9000 ubuntu-24.04 on pve1") && s.contains("9001 ubuntu-24.04 on pve2"),
        "{s}"
    );
    assert!(s.contains("ceph-vm (rbd, shared"));
}

#[tokio::test]
async fn skiplock_is_refused_for_tokens_and_clears_a_stale_lock_for_root() {
    let t = start(0.001).await;
    assert_eq!(t.clone_vm("pve1", 9000, 180, &[]).await, "OK");
    t.h.state()
        .vms
        .get_mut(&180)
        .unwrap()
        .config
        .insert("lock".into(), "clone".into());
    let (code, v) = t
        .put(
            "/nodes/pve1/qemu/180/config",
            &[("delete", "lock"), ("skiplock", "1")],
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(v["errors"]["skiplock"], "Only root may use this option.");
    let (ticket, csrf) = login(&t).await;
    let r =
        t.c.put(t.url("/nodes/pve1/qemu/180/config"))
            .header("Cookie", format!("PVEAuthCookie={ticket}"))
            .header("CSRFPreventionToken", csrf)
            .form(&[("delete", "lock"), ("skiplock", "1")])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(t.config("pve1", 180).await.get("lock").is_none());
}

#[tokio::test]
async fn error_message_is_also_in_the_http_reason_phrase() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = start(0.001).await;
    let mut s = tokio::net::TcpStream::connect(t.h.addr).await.unwrap();
    let req = format!(
        "GET /api2/json/nodes/pve2/qemu/9000/config HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        t.h.token_header()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(
        buf.starts_with(
            "HTTP/1.1 500 Configuration file 'nodes/pve2/qemu-server/9000.conf' does not exist\r\n"
        ),
        "{buf}"
    );
}

#[tokio::test]
async fn serve_keeps_the_cluster_between_runs_through_the_state_file() {
    use hyops_pve::sim::{finish_serving, start_serving, ServeOptions};
    let dir = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        time_scale: 0.001,
        tls: false,
        state_file: Some(dir.path().join("state.json")),
        ca_pem_path: Some(dir.path().join("ca.pem")),
        ..ServeOptions::default()
    };
    let (h, ca) = start_serving(&opts).await.unwrap();
    assert!(std::fs::read_to_string(ca)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let t = T {
        h,
        c: reqwest::Client::new(),
    };
    assert_eq!(
        t.clone_vm("pve1", 9000, 250, &[("name", "persisted")])
            .await,
        "OK"
    );
    finish_serving(&t.h, &opts).await.unwrap();
    let (h2, _) = start_serving(&opts).await.unwrap();
    let t2 = T {
        h: h2,
        c: reqwest::Client::new(),
    };
    assert_eq!(t2.config("pve1", 250).await["name"], "persisted");
    finish_serving(&t2.h, &opts).await.unwrap();
}

#[tokio::test]
async fn authentication_failures_wait_as_long_as_the_latency_model_says() {
    let latency = hyops_pve::sim::LatencyModel {
        auth_failure_ms: 3000,
        ..Default::default()
    };
    let t = start_with(SimConfig {
        latency,
        time_scale: 0.05,
        tls: false,
        ..SimConfig::default()
    })
    .await;
    let t0 = Instant::now();
    let r = t.c.get(t.url("/version")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        t0.elapsed().as_millis() >= 150,
        "3 s simulated at 0.05 = 150 ms"
    );
    let t0 = Instant::now();
    assert_eq!(t.get("/version", &[]).await.0, 200);
    assert!(t0.elapsed().as_millis() < 150);
}
