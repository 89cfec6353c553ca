//! Batched task waits (`PveClient::watch_task`) against the simulator: one node listing
//! answers for every task waited on there, with `wait_task`'s outcomes (OK, failure with the
//! log tail, timeout while running, unknown when nothing could be read).

use std::time::Duration;

use hyops_pve::pve::{
    CloneParams, ErrorClass, PveAuth, PveClient, PveConfig, PveError, TlsMode, Upid, WaitOptions,
};
use hyops_pve::sim::{FaultAction, FaultRule, SimConfig, SimHandle, Simulator};

const LIST: &str = "/nodes/{node}/tasks";
const STATUS: &str = "/nodes/{node}/tasks/{upid}/status";

async fn sim(scale: f64) -> SimHandle {
    Simulator::start(SimConfig {
        time_scale: scale,
        tls: false,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn client(h: &SimHandle) -> PveClient {
    let mut cfg = PveConfig::new(
        h.url(),
        PveAuth::Token {
            id: h.token_id.clone(),
            secret: h.token_secret.clone(),
        },
    );
    cfg.tls = TlsMode::Insecure;
    cfg.time_scale = h.time_scale();
    PveClient::new(cfg).unwrap()
}

fn opts(h: &SimHandle, timeout_s: f64) -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs_f64(timeout_s * h.time_scale()).max(Duration::from_millis(50)),
        initial_poll: Duration::from_millis(2),
        max_poll: Duration::from_millis(20),
        not_visible_grace: Duration::from_millis(50),
        log_tail: 20,
        eager: false,
    }
}

async fn clone_to(c: &PveClient, newid: u32) -> Upid {
    let p = CloneParams {
        newid,
        name: Some(format!("w{newid}")),
        description: None,
        full: Some(true),
        storage: None,
        format: None,
        target: None,
        pool: None,
    };
    c.clone_vm("pve1", 9000, &p).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clones_on_one_node_share_their_listings_and_read_no_task_status() {
    // 20 full clones share pve1's local-lvm: each takes ~134 simulated s; polled one by one
    // every 5 s that would be ~500 status reads
    let h = sim(0.01).await;
    let c = client(&h);
    let mut upids = Vec::new();
    for id in 200..220 {
        upids.push(clone_to(&c, id).await);
    }
    let o = opts(&h, 1800.0);
    let waits = upids.iter().map(|u| c.watch_task(u, &o));
    for r in futures::future::join_all(waits).await {
        assert_eq!(r.unwrap().exitstatus, "OK");
    }
    let counters = h.counters();
    assert_eq!(counters.get("GET", STATUS), 0);
    let listings = counters.get("GET", LIST);
    // one listing answers for every task: a few per task's lifetime, not one per task and
    // poll (a busy machine stretches the real time between looks, hence the headroom)
    assert!(
        (1..=100).contains(&listings),
        "{listings} listings for 20 tasks"
    );
    assert_eq!(c.task_poll_calls(), listings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_ends_the_watch_with_its_exit_status_and_log_tail() {
    let h = sim(0.001).await;
    let c = client(&h);
    h.add_fault(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        FaultAction::TaskFail {
            message: "clone failed: rbd error".into(),
        },
    ));
    let u = clone_to(&c, 230).await;
    match c.watch_task(&u, &opts(&h, 600.0)).await {
        Err(PveError::TaskFailed {
            exitstatus,
            log_tail,
            ..
        }) => {
            assert_eq!(exitstatus, "clone failed: rbd error");
            assert_eq!(
                log_tail.last().unwrap(),
                "TASK ERROR: clone failed: rbd error"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_listings_until_the_deadline_leave_the_outcome_unknown() {
    let h = sim(0.001).await;
    let c = client(&h);
    h.add_fault(FaultRule::on("GET", LIST, FaultAction::Reset));
    let u = clone_to(&c, 240).await;
    let e = c.watch_task(&u, &opts(&h, 60.0)).await.unwrap_err();
    assert_eq!(e.classify(), ErrorClass::TaskStatusUnknown, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_seen_running_at_the_deadline_times_out() {
    let h = sim(0.001).await;
    let c = client(&h);
    h.add_fault(FaultRule::on(
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        FaultAction::SlowTask {
            extra_ms: 10_000_000,
        },
    ));
    let u = clone_to(&c, 250).await;
    let e = c.watch_task(&u, &opts(&h, 30.0)).await.unwrap_err();
    assert!(matches!(e, PveError::TaskTimeout { .. }), "{e}");
}
