//! Task lists as Proxmox serves them (pve-manager `PVE/API2/Tasks.pm` `node_tasks`,
//! `PVE/API2/Cluster.pm` `tasks`): one listing answers for many running tasks, which is what
//! batched task polling relies on. Entries are checked against the `returns` schema of
//! `pve-apidoc.json` when the dump is present.

use crate::optional;
use crate::sim_support;

use serde_json::Value;
use sim_support::{start, T};
use std::time::Duration;

async fn clone_started(t: &T, newid: u32) -> String {
    let (code, v) = t
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", &newid.to_string()), ("full", "1")],
        )
        .await;
    assert_eq!(code, 200, "{v}");
    v["data"].as_str().unwrap().to_string()
}

async fn list(t: &T, q: &[(&str, &str)]) -> (Vec<Value>, u64) {
    let (code, v) = t.get("/nodes/pve1/tasks", q).await;
    assert_eq!(code, 200, "{v}");
    (
        v["data"].as_array().unwrap().clone(),
        v["total"].as_u64().unwrap(),
    )
}

fn find<'a>(rows: &'a [Value], upid: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["upid"] == upid)
}

#[tokio::test]
async fn a_running_task_is_listed_as_running_by_source_all_and_active_but_not_by_the_archive() {
    let t = start(0.01).await;
    let upid = clone_started(&t, 130).await;
    let (all, _) = list(&t, &[("source", "all")]).await;
    let row = find(&all, &upid).expect("listed by source=all");
    assert_eq!(row["status"], "RUNNING");
    assert!(row.get("endtime").is_none());
    let (active, _) = list(&t, &[("source", "active")]).await;
    assert!(find(&active, &upid).is_some());
    let (archive, _) = list(&t, &[]).await;
    assert!(
        find(&archive, &upid).is_none(),
        "the default source is the archive"
    );
    t.wait(&upid).await;
}

#[tokio::test]
async fn an_ended_task_is_listed_with_its_exit_status_and_end_time() {
    let t = start(0.001).await;
    let upid = clone_started(&t, 131).await;
    t.wait(&upid).await;
    let bad = t.post("/nodes/pve1/qemu/131/status/start", &[]).await;
    let bad = bad.1["data"].as_str().unwrap().to_string();
    t.wait(&bad).await;
    let again = t.post("/nodes/pve1/qemu/131/status/start", &[]).await;
    let again = again.1["data"].as_str().unwrap().to_string();
    t.wait(&again).await;
    let (all, total) = list(&t, &[("source", "all")]).await;
    assert_eq!(total, 3);
    let ok = find(&all, &upid).unwrap();
    assert_eq!(ok["status"], "OK");
    assert!(ok["endtime"].as_i64().unwrap() >= ok["starttime"].as_i64().unwrap());
    // the archive is newest first
    assert_eq!(all[0]["upid"], again);
    assert_eq!(all[0]["status"], "VM 131 already running");
    // a token's task: user without the token, tokenid apart
    assert_eq!(ok["user"], "root@pam");
    assert_eq!(ok["tokenid"], "hyops");
    let (errors, total) = list(&t, &[("errors", "1")]).await;
    assert_eq!(total, 1);
    assert_eq!(errors[0]["upid"], again);
    let (only_ok, _) = list(&t, &[("statusfilter", "ok")]).await;
    assert_eq!(only_ok.len(), 2);
}

#[tokio::test]
async fn filters_and_paging_apply_as_node_tasks_applies_them() {
    let t = start(0.001).await;
    let mut upids = Vec::new();
    for id in 140..145 {
        let u = clone_started(&t, id).await;
        t.wait(&u).await;
        upids.push(u);
    }
    let s = t.post("/nodes/pve1/qemu/142/status/start", &[]).await;
    t.wait(s.1["data"].as_str().unwrap()).await;
    let (rows, total) = list(&t, &[("typefilter", "qmstart")]).await;
    assert_eq!((rows.len(), total), (1, 1));
    let (rows, _) = list(&t, &[("vmid", "142")]).await;
    assert_eq!(rows.len(), 1, "the vmid filter matches the task id");
    let (rows, total) = list(&t, &[("limit", "2"), ("start", "1")]).await;
    assert_eq!((rows.len(), total), (2, 6), "total counts every match");
    let (rows, _) = list(&t, &[("userfilter", "ROOT@PAM")]).await;
    assert_eq!(rows.len(), 6, "the user filter ignores case");
    let (rows, _) = list(&t, &[("userfilter", "someone@pve")]).await;
    assert!(rows.is_empty());
    let future = (chrono::Utc::now().timestamp() + 3600).to_string();
    let (rows, _) = list(&t, &[("since", &future)]).await;
    assert!(rows.is_empty());
    let (code, v) = t
        .get("/nodes/pve1/tasks", &[("statusfilter", "bogus")])
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["errors"]["statusfilter"],
        "invalid format - invalid status 'bogus'"
    );
}

#[tokio::test]
async fn the_cluster_list_lags_by_up_to_one_pvestatd_cycle() {
    // pvestatd broadcasts every 10 simulated seconds (500 ms real at this scale). What the
    // listing must show depends on how old the broadcast is, so each request is bracketed by
    // the simulated clock: an assertion is made only on the side of the cycle the simulator
    // was provably on, whatever the machine's load.
    const CYCLE_MS: u64 = 10_000;
    let t = start(0.05).await;
    let upid = clone_started(&t, 150).await;
    let first = t.h.now_ms();
    let (code, v) = t.get("/cluster/tasks", &[]).await;
    assert_eq!(code, 200);
    let row = find(v["data"].as_array().unwrap(), &upid)
        .expect("a running task is broadcast")
        .clone();
    assert!(row.get("status").is_none());
    assert_eq!(row["tokenid"], "hyops");
    t.wait(&upid).await;
    let (_, v) = t.get("/cluster/tasks", &[]).await;
    let second = t.h.now_ms();
    let still = find(v["data"].as_array().unwrap(), &upid).unwrap();
    if second.saturating_sub(first) < CYCLE_MS {
        // ended, but the last broadcast is younger than a cycle: still shown without status
        assert!(still.get("status").is_none(), "{still}");
    }
    // a cycle after the broadcast the next listing is fresh and shows how the task ended
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, v) = t.get("/cluster/tasks", &[]).await;
    let now = find(v["data"].as_array().unwrap(), &upid).unwrap();
    assert_eq!(now["status"], "OK");
}

#[tokio::test]
async fn task_list_entries_have_the_fields_and_types_of_the_schema() {
    let Some(dump) = optional::require("official PVE schema", "SHARED_SPEC", || {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/proxmox-api-spec/pve-apidoc.json");
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    }) else {
        return;
    };
    let dump: Value = serde_json::from_str(&dump).unwrap();
    let mut schema = None;
    let mut stack: Vec<&Value> = dump["root"].as_array().unwrap().iter().collect();
    while let Some(n) = stack.pop() {
        if n["path"] == "/nodes/{node}/tasks" {
            schema = Some(n["info"]["GET"]["returns"]["items"]["properties"].clone());
        }
        if let Some(c) = n["children"].as_array() {
            stack.extend(c.iter());
        }
    }
    let props = schema.expect("node_tasks in the dump");
    let t = start(0.001).await;
    let running = clone_started(&t, 160).await;
    let done = clone_started(&t, 161).await;
    t.wait(&done).await;
    let (rows, _) = list(&t, &[("source", "all")]).await;
    assert!(find(&rows, &running).is_some() || find(&rows, &done).is_some());
    for row in &rows {
        for (k, s) in props.as_object().unwrap() {
            let optional = s["optional"].as_i64() == Some(1);
            match row.get(k) {
                None => assert!(optional, "{k} missing in {row}"),
                Some(v) => match s["type"].as_str().unwrap() {
                    "integer" => assert!(v.is_i64(), "{k} not an integer in {row}"),
                    "string" => assert!(v.is_string(), "{k} not a string in {row}"),
                    other => panic!("unexpected type {other}"),
                },
            }
        }
    }
}
