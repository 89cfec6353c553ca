//! Worker tasks as PVE shows them: UPIDs in the real format
//! (`UPID:node:PID:PSTART:STARTTIME:type:id:user:`), status running/stopped, exitstatus and log
//! lines ending `TASK OK` / `TASK ERROR: …`, and the task lists: a node's (`GET
//! /nodes/{node}/tasks`, pve-manager `PVE/API2/Tasks.pm` `node_tasks`: running tasks from the
//! `active` file first, then the archive newest first, with its filters and the `total`
//! attribute) and the cluster's (`GET /cluster/tasks`, `PVE/API2/Cluster.pm` `tasks`: the
//! lists every node's pvestatd broadcasts each 10 s cycle, `pvestatd.pm` `update_status`, at
//! most 25 tasks a node — its running ones and then the latest finished — as
//! `RESTEnvironment.pm` `active_workers` keeps them). Knows nothing about what a task does.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// One task.
#[derive(Debug, Clone)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u32,
    pub starttime: i64,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub running: bool,
    pub exitstatus: Option<String>,
    pub log: Vec<String>,
    /// Unix time the task ended.
    pub endtime: Option<i64>,
    /// Creation order.
    seq: u64,
    /// Order of ending (the archive's order).
    end_seq: u64,
}

impl Task {
    /// The `/tasks/{upid}/status` object.
    pub fn status_json(&self) -> Value {
        let mut v = json!({
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.kind, "id": self.id, "user": self.user,
            "status": if self.running { "running" } else { "stopped" },
        });
        if let Some(e) = &self.exitstatus {
            v["exitstatus"] = json!(e);
        }
        if let Some((_, tok)) = self.user.split_once('!') {
            v["tokenid"] = json!(tok);
        }
        v
    }

    /// A task-list entry (`node_tasks` / `tasks`): the decoded UPID with the token split off
    /// the user (`$convert_token_task`), `endtime` and `status` once the task ended, `status`
    /// `RUNNING` for a running one in a node's list.
    pub fn list_json(&self, running_status: bool) -> Value {
        let (user, token) = match self.user.split_once('!') {
            Some((u, t)) => (u, Some(t)),
            None => (self.user.as_str(), None),
        };
        let mut v = json!({
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.kind, "id": self.id, "user": user,
        });
        if let Some(t) = token {
            v["tokenid"] = json!(t);
        }
        if let Some(e) = self.endtime {
            v["endtime"] = json!(e);
        }
        match &self.exitstatus {
            Some(s) if !self.running => v["status"] = json!(s),
            _ if running_status => v["status"] = json!("RUNNING"),
            _ => {}
        }
        v
    }
}

/// `PVE::UPID::normalize_status_type` (pve-common `src/PVE/UPID.pm` 94–106).
pub fn status_type(status: Option<&str>) -> &'static str {
    match status {
        None | Some("") | Some("unexpected status") => "unknown",
        Some("OK") => "ok",
        Some(s)
            if s.strip_prefix("WARNINGS: ")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            "warning"
        }
        Some(_) => "error",
    }
}

/// The filters of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub start: usize,
    pub limit: usize,
    pub userfilter: Option<String>,
    pub typefilter: Option<String>,
    pub vmid: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Status types to keep (`ok`, `warning`, `error`, `unknown`).
    pub statuses: Vec<String>,
    /// `archive`, `active` or `all`.
    pub source: String,
}

/// All tasks of the simulated cluster.
#[derive(Debug, Default)]
pub struct TaskRegistry {
    tasks: Mutex<HashMap<String, Task>>,
    next_pid: Mutex<u32>,
    seq: Mutex<u64>,
    /// Per node: the list its pvestatd last broadcast and when (simulated ms).
    broadcast: Mutex<HashMap<String, (u64, Vec<Value>)>>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl TaskRegistry {
    /// Register a running task and return its UPID.
    pub fn create(&self, node: &str, kind: &str, id: &str, user: &str) -> String {
        let pid = {
            let mut p = guard(&self.next_pid);
            if *p == 0 {
                *p = 4000;
            }
            *p += 1;
            *p
        };
        let pstart = 0x1B58 + node.bytes().map(u32::from).sum::<u32>();
        let starttime = chrono::Utc::now().timestamp();
        let upid =
            format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:");
        let seq = self.next_seq();
        let task = Task {
            upid: upid.clone(),
            node: node.to_string(),
            pid,
            pstart,
            starttime,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
            running: true,
            exitstatus: None,
            log: Vec::new(),
            endtime: None,
            seq,
            end_seq: 0,
        };
        guard(&self.tasks).insert(upid.clone(), task);
        upid
    }

    fn next_seq(&self) -> u64 {
        let mut s = guard(&self.seq);
        *s += 1;
        *s
    }

    pub fn log(&self, upid: &str, line: impl Into<String>) {
        if let Some(t) = guard(&self.tasks).get_mut(upid) {
            t.log.push(line.into());
        }
    }

    /// End a task: `Ok` → `TASK OK`, `Err(msg)` → `TASK ERROR: msg`.
    pub fn finish(&self, upid: &str, result: Result<(), String>) {
        let end_seq = self.next_seq();
        if let Some(t) = guard(&self.tasks).get_mut(upid) {
            t.running = false;
            t.endtime = Some(chrono::Utc::now().timestamp());
            t.end_seq = end_seq;
            match result {
                Ok(()) => {
                    t.log.push("TASK OK".into());
                    t.exitstatus = Some("OK".into());
                }
                Err(e) => {
                    let e = e.trim_end().to_string();
                    t.log.push(format!("TASK ERROR: {e}"));
                    t.exitstatus = Some(e);
                }
            }
        }
    }

    pub fn get(&self, upid: &str) -> Option<Task> {
        guard(&self.tasks).get(upid).cloned()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        guard(&self.tasks).values().filter(|t| t.running).count()
    }

    /// `GET /nodes/{node}/tasks`: the running tasks (source `active`/`all`, status
    /// `RUNNING`) in the order they started, then the ended ones (source `archive`/`all`)
    /// newest first; each filter as `node_tasks` applies it, `start`/`limit` last. Returns
    /// the page and `total` (every task that passed the filters).
    pub fn node_list(&self, node: &str, f: &TaskFilter) -> (Vec<Value>, u64) {
        let tasks = guard(&self.tasks);
        let mut active: Vec<&Task> = Vec::new();
        let mut archive: Vec<&Task> = Vec::new();
        for t in tasks.values().filter(|t| t.node == node) {
            if t.running {
                active.push(t);
            } else {
                archive.push(t);
            }
        }
        active.sort_by_key(|t| t.seq);
        archive.sort_by_key(|t| std::cmp::Reverse(t.end_seq));
        let mut ordered: Vec<&Task> = Vec::new();
        if f.source == "active" || f.source == "all" {
            ordered.extend(active);
        }
        if f.source != "active" {
            ordered.extend(archive);
        }
        let mut count = 0usize;
        let mut limit = f.limit;
        let mut out = Vec::new();
        for t in ordered {
            let user = t.user.split_once('!').map_or(t.user.as_str(), |(u, _)| u);
            if let Some(uf) = &f.userfilter {
                if !user.to_lowercase().contains(&uf.to_lowercase()) {
                    continue;
                }
            }
            if f.typefilter.as_ref().is_some_and(|k| *k != t.kind) {
                continue;
            }
            if f.vmid.as_ref().is_some_and(|v| *v != t.id) {
                continue;
            }
            if f.since.is_some_and(|s| t.starttime < s) || f.until.is_some_and(|u| t.starttime > u)
            {
                continue;
            }
            let status = if t.running {
                None
            } else {
                t.exitstatus.as_deref()
            };
            if !f.statuses.iter().any(|s| s == status_type(status)) {
                continue;
            }
            count += 1;
            if count <= f.start || limit == 0 {
                continue;
            }
            out.push(t.list_json(true));
            limit -= 1;
        }
        (out, count as u64)
    }

    /// `GET /cluster/tasks`: every node's last broadcast list. A list older than pvestatd's
    /// 10 s cycle (`now_ms` simulated) is refreshed first, so entries lag by up to 10 s: a task
    /// that just ended may still show without `status`.
    pub fn cluster_list(&self, nodes: &[String], now_ms: u64) -> Vec<Value> {
        const CYCLE_MS: u64 = 10_000;
        const MAX_FINISHED: usize = 25;
        let mut out = Vec::new();
        let mut cache = guard(&self.broadcast);
        for node in nodes {
            let fresh = cache
                .get(node)
                .is_some_and(|(at, _)| now_ms.saturating_sub(*at) < CYCLE_MS);
            if !fresh {
                let tasks = guard(&self.tasks);
                let mut running: Vec<&Task> = tasks
                    .values()
                    .filter(|t| t.node == *node && t.running)
                    .collect();
                running.sort_by_key(|t| t.seq);
                let mut ended: Vec<&Task> = tasks
                    .values()
                    .filter(|t| t.node == *node && !t.running)
                    .collect();
                ended.sort_by_key(|t| std::cmp::Reverse(t.starttime));
                let room = MAX_FINISHED.saturating_sub(running.len());
                let mut list: Vec<Value> = running
                    .into_iter()
                    .chain(ended.into_iter().take(room))
                    .map(|t| {
                        let mut v = t.list_json(false);
                        // the broadcast keeps the token in `user` (split by the API handler)
                        v["user"] = json!(t.user);
                        if let Some(m) = v.as_object_mut() {
                            m.remove("tokenid");
                            m.remove("pstart");
                        }
                        v
                    })
                    .collect();
                // `broadcast_tasklist`: at most 32 KiB of JSON, older entries dropped first
                while serde_json::to_string(&list).map_or(0, |s| s.len()) >= 32 * 1024 {
                    list.pop();
                }
                cache.insert(node.clone(), (now_ms, list));
            }
            if let Some((_, list)) = cache.get(node) {
                for t in list {
                    let mut t = t.clone();
                    let user = t["user"].as_str().unwrap_or_default().to_string();
                    if let Some((u, tok)) = user.split_once('!') {
                        t["user"] = json!(u);
                        t["tokenid"] = json!(tok);
                    }
                    out.push(t);
                }
            }
        }
        out
    }
}

/// Whether `s` is a well-formed UPID (pve-common `UPID.pm` decode regex).
pub fn parse_upid(s: &str) -> Option<(String, String, String)> {
    let re = r"UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):";
    if !super::check::pattern_matches(re, s) {
        return None;
    }
    let f: Vec<&str> = s.split(':').collect();
    Some((f[1].to_string(), f[5].to_string(), f[6].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_has_the_pve_shape_and_log_ends_with_task_status() {
        let r = TaskRegistry::default();
        let u = r.create("pve1", "qmclone", "9000", "root@pam!hyops");
        assert!(parse_upid(&u).is_some(), "{u}");
        assert!(u.ends_with(":qmclone:9000:root@pam!hyops:"));
        r.finish(&u, Err("shrinking disks is not supported\n".into()));
        let t = r.get(&u).unwrap();
        assert_eq!(
            t.exitstatus.as_deref(),
            Some("shrinking disks is not supported")
        );
        assert_eq!(
            t.log.last().unwrap(),
            "TASK ERROR: shrinking disks is not supported"
        );
        assert_eq!(t.status_json()["tokenid"], "hyops");
    }
}
