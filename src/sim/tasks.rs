//! Worker tasks as PVE shows them: UPIDs in the real format
//! (`UPID:node:PID:PSTART:STARTTIME:type:id:user:`), status running/stopped, exitstatus and log
//! lines ending `TASK OK` / `TASK ERROR: …`. Knows nothing about what a task does.

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
}

/// All tasks of the simulated cluster.
#[derive(Debug, Default)]
pub struct TaskRegistry {
    tasks: Mutex<HashMap<String, Task>>,
    next_pid: Mutex<u32>,
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
        };
        guard(&self.tasks).insert(upid.clone(), task);
        upid
    }

    pub fn log(&self, upid: &str, line: impl Into<String>) {
        if let Some(t) = guard(&self.tasks).get_mut(upid) {
            t.log.push(line.into());
        }
    }

    /// End a task: `Ok` → `TASK OK`, `Err(msg)` → `TASK ERROR: msg`.
    pub fn finish(&self, upid: &str, result: Result<(), String>) {
        if let Some(t) = guard(&self.tasks).get_mut(upid) {
            t.running = false;
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
