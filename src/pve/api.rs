//! The Proxmox endpoints the engine uses, as typed async methods on [`PveClient`], plus the
//! task, lock and agent waiters (all on the one [`crate::retry::RetryPolicy`] poll loop).
//! Reads go through `retry_read`; writes are sent once. Knows nothing about HyOps.

use std::time::Instant;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::{seg, Call, Params, PveClient};
use super::error::{CallContext, ErrorClass, PveError, PveResult};
use super::lenient::value_u64;
use super::propstr::{DiskSize, DiskSlot};
use super::types::{
    ipv4_addresses, CloneParams, CloudInitKind, ClusterResource, ConfigUpdate, CpuModel,
    GuestInterface, NodeInfo, NodeNetwork, NodeStorage, PendingEntry, ResourceType, StorageVolume,
    TaskLog, TaskLogLine, TaskOutcome, TaskStatus, VersionInfo, VmConfig, VmStatus, WaitOptions,
};
use super::upid::Upid;
use crate::retry::{Classify, Disposition, RetryError};

fn decode<T: DeserializeOwned>(call_ctx: Box<CallContext>, v: Value) -> PveResult<T> {
    serde_json::from_value(v).map_err(|e| PveError::Decode {
        ctx: call_ctx,
        detail: e.to_string(),
    })
}

fn vm_path(node: &str, vmid: u32, rest: &str) -> String {
    format!("/nodes/{}/qemu/{vmid}{rest}", seg(node))
}

fn upid_from(ctx: Box<CallContext>, v: Value) -> PveResult<Upid> {
    let s = v.as_str().ok_or_else(|| PveError::Unexpected {
        ctx: ctx.clone(),
        field: "data",
        detail: format!("expected a UPID string, got {v}"),
    })?;
    s.parse().map_err(|e| PveError::Unexpected {
        ctx,
        field: "data",
        detail: format!("{e}"),
    })
}

impl PveClient {
    /// `GET /version`.
    pub async fn version(&self) -> PveResult<VersionInfo> {
        let call = Call::new(Method::GET, "/version", "/version".into());
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `GET /cluster/nextid[?vmid=X]`: the next free id, or `vmid` itself when free
    /// (a taken `vmid` is a 400 with class [`ErrorClass::VmIdTaken`]).
    pub async fn next_id(&self, vmid: Option<u32>) -> PveResult<u32> {
        let call = Call::new(Method::GET, "/cluster/nextid", "/cluster/nextid".into())
            .params(Params::new().opt("vmid", vmid));
        let ctx = call.ctx();
        let v = self.get_data(call).await?;
        value_u64(&v)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| PveError::Unexpected {
                ctx,
                field: "data",
                detail: format!("expected a VMID, got {v}"),
            })
    }

    /// `GET /cluster/resources[?type=…]`.
    pub async fn cluster_resources(
        &self,
        kind: Option<ResourceType>,
    ) -> PveResult<Vec<ClusterResource>> {
        let call = Call::new(
            Method::GET,
            "/cluster/resources",
            "/cluster/resources".into(),
        )
        .params(Params::new().opt("type", kind.map(ResourceType::as_str)));
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// The node that currently owns `vmid` (via `/cluster/resources?type=vm`); `None` if no
    /// such VM is visible.
    pub async fn vm_node(&self, vmid: u32) -> PveResult<Option<String>> {
        let all = self.cluster_resources(Some(ResourceType::Vm)).await?;
        Ok(all
            .into_iter()
            .find(|r| r.vmid == Some(vmid) && r.is_qemu())
            .and_then(|r| r.node))
    }

    /// `POST /nodes/{node}/qemu/{vmid}/clone` → the `qmclone` task.
    pub async fn clone_vm(&self, node: &str, vmid: u32, params: &CloneParams) -> PveResult<Upid> {
        let mut call = Call::new(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/clone",
            vm_path(node, vmid, "/clone"),
        )
        .vm(node, vmid);
        let p = params.to_params().map_err(|detail| PveError::Config {
            field: "clone parameters",
            detail: format!("clone of {vmid} on {node}: {detail}"),
        })?;
        call = call.params(p);
        let ctx = call.ctx();
        upid_from(ctx, self.write_data(call).await?)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config[?current=1]`.
    pub async fn vm_config(&self, node: &str, vmid: u32, current: bool) -> PveResult<VmConfig> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/qemu/{vmid}/config",
            vm_path(node, vmid, "/config"),
        )
        .vm(node, vmid)
        .params(if current {
            Params::new().flag("current", true)
        } else {
            Params::new()
        });
        let ctx = call.ctx();
        match self.get_data(call).await? {
            Value::Object(m) => Ok(VmConfig::from_map(&m)),
            other => Err(PveError::Unexpected {
                ctx,
                field: "data",
                detail: format!("expected a config object, got {other}"),
            }),
        }
    }

    /// `POST …/config` (asynchronous). Returns the `qmconfig` task, or `None` when the server
    /// finished synchronously and returned `null`.
    pub async fn update_config_async(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> PveResult<Option<Upid>> {
        let call = Call::new(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/config",
            vm_path(node, vmid, "/config"),
        )
        .vm(node, vmid)
        .params(update.to_params());
        let ctx = call.ctx();
        match self.write_data(call).await? {
            Value::Null => Ok(None),
            v => upid_from(ctx, v).map(Some),
        }
    }

    /// `PUT …/config` (synchronous).
    pub async fn update_config_sync(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> PveResult<()> {
        let call = Call::new(
            Method::PUT,
            "/nodes/{node}/qemu/{vmid}/config",
            vm_path(node, vmid, "/config"),
        )
        .vm(node, vmid)
        .params(update.to_params());
        self.write_data(call).await.map(|_| ())
    }

    /// `PUT …/resize` to an absolute size (printed as `NG`-style units or bytes; never `+`).
    /// The caller must never ask for less than the current size.
    pub async fn resize(
        &self,
        node: &str,
        vmid: u32,
        disk: DiskSlot,
        size: DiskSize,
    ) -> PveResult<Upid> {
        let call = Call::new(
            Method::PUT,
            "/nodes/{node}/qemu/{vmid}/resize",
            vm_path(node, vmid, "/resize"),
        )
        .vm(node, vmid)
        .params(Params::new().set("disk", disk).set("size", size));
        let ctx = call.ctx();
        upid_from(ctx, self.write_data(call).await?)
    }

    /// `GET …/status/current`.
    pub async fn vm_status(&self, node: &str, vmid: u32) -> PveResult<VmStatus> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/qemu/{vmid}/status/current",
            vm_path(node, vmid, "/status/current"),
        )
        .vm(node, vmid);
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    async fn power(
        &self,
        node: &str,
        vmid: u32,
        action: &'static str,
        template: &'static str,
        p: Params,
    ) -> PveResult<Upid> {
        let call = Call::new(
            Method::POST,
            template,
            vm_path(node, vmid, &format!("/status/{action}")),
        )
        .vm(node, vmid)
        .params(p);
        let ctx = call.ctx();
        upid_from(ctx, self.write_data(call).await?)
    }

    /// `POST …/status/start`.
    pub async fn start(&self, node: &str, vmid: u32) -> PveResult<Upid> {
        self.power(
            node,
            vmid,
            "start",
            "/nodes/{node}/qemu/{vmid}/status/start",
            Params::new(),
        )
        .await
    }

    /// `POST …/status/shutdown` with an optional guest timeout (s) and `forceStop`.
    pub async fn shutdown(
        &self,
        node: &str,
        vmid: u32,
        timeout_s: Option<u32>,
        force_stop: bool,
    ) -> PveResult<Upid> {
        let p = Params::new()
            .opt("timeout", timeout_s)
            .opt_flag("forceStop", force_stop.then_some(true));
        self.power(
            node,
            vmid,
            "shutdown",
            "/nodes/{node}/qemu/{vmid}/status/shutdown",
            p,
        )
        .await
    }

    /// `POST …/status/stop`.
    pub async fn stop(&self, node: &str, vmid: u32) -> PveResult<Upid> {
        self.power(
            node,
            vmid,
            "stop",
            "/nodes/{node}/qemu/{vmid}/status/stop",
            Params::new(),
        )
        .await
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` with `purge` and `destroy-unreferenced-disks`.
    pub async fn delete_vm(
        &self,
        node: &str,
        vmid: u32,
        purge: bool,
        destroy_unreferenced_disks: bool,
    ) -> PveResult<Upid> {
        let call = Call::new(
            Method::DELETE,
            "/nodes/{node}/qemu/{vmid}",
            vm_path(node, vmid, ""),
        )
        .vm(node, vmid)
        .params(
            Params::new()
                .opt_flag("purge", purge.then_some(true))
                .opt_flag(
                    "destroy-unreferenced-disks",
                    destroy_unreferenced_disks.then_some(true),
                ),
        );
        let ctx = call.ctx();
        upid_from(ctx, self.write_data(call).await?)
    }

    /// `GET /nodes/{upid.node}/tasks/{upid}/status`.
    pub async fn task_status(&self, upid: &Upid) -> PveResult<TaskStatus> {
        let call = Self::task_status_call(upid);
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    fn task_status_call(upid: &Upid) -> Call {
        Call::new(
            Method::GET,
            "/nodes/{node}/tasks/{upid}/status",
            format!(
                "/nodes/{}/tasks/{}/status",
                seg(upid.node()),
                seg(upid.as_str())
            ),
        )
        .on_node(upid.node())
    }

    /// `GET /nodes/{upid.node}/tasks/{upid}/log?start=&limit=`.
    pub async fn task_log(&self, upid: &Upid, start: u64, limit: u64) -> PveResult<TaskLog> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/tasks/{upid}/log",
            format!(
                "/nodes/{}/tasks/{}/log",
                seg(upid.node()),
                seg(upid.as_str())
            ),
        )
        .on_node(upid.node())
        .params(Params::new().set("start", start).set("limit", limit));
        let ctx = call.ctx();
        let env = self.retry_read(&call).await?;
        let total = env.get("total").and_then(value_u64);
        let lines: Vec<TaskLogLine> = decode(
            ctx,
            env.get("data").cloned().unwrap_or(Value::Array(vec![])),
        )?;
        Ok(TaskLog { lines, total })
    }

    /// The last `n` log lines of a task. Uses `total` from the envelope to jump to the tail;
    /// when the server does not send it, pages forward (at most 100 pages).
    pub async fn task_log_tail(&self, upid: &Upid, n: u64) -> PveResult<Vec<String>> {
        let n = n.max(1);
        let first = self.task_log(upid, 0, n).await?;
        let mut lines: Vec<String> = match first.total {
            Some(total) if total > n => self
                .task_log(upid, total - n, n)
                .await?
                .lines
                .into_iter()
                .map(|l| l.t)
                .collect(),
            Some(_) => first.lines.into_iter().map(|l| l.t).collect(),
            None => {
                let mut all: Vec<String> = Vec::new();
                let mut page = first.lines;
                let mut start = 0u64;
                for _ in 0..100 {
                    let got = page.len() as u64;
                    all.extend(page.into_iter().map(|l| l.t));
                    let keep = all.len().saturating_sub(n as usize);
                    all.drain(..keep);
                    if got < n {
                        break;
                    }
                    start += got;
                    page = self.task_log(upid, start, n).await?.lines;
                }
                all
            }
        };
        let keep = lines.len().saturating_sub(n as usize);
        lines.drain(..keep);
        Ok(lines)
    }

    /// Poll a task on the node in its UPID until it stops, on the one poll schedule
    /// ([`WaitOptions::policy`]: `initial_poll` doubling to `max_poll`, for `timeout`).
    /// Status reads that fail transiently (resets, timeouts, 5xx, 595/596) do not end the
    /// wait: polling goes on to the deadline, so a task is never given up on while it may
    /// still finish. A 400 / "no such task" within `not_visible_grace` is polled through.
    ///
    /// `OK` and `WARNINGS: N` are success; any other exit status is [`PveError::TaskFailed`]
    /// with the log tail. At the deadline: [`PveError::TaskTimeout`] when the task was last
    /// seen running, [`PveError::TaskUnknown`] when its status could not be read (both are
    /// "outcome unknown": re-read before resending anything the task does).
    pub async fn wait_task(&self, upid: &Upid, opts: &WaitOptions) -> PveResult<TaskOutcome> {
        let started = Instant::now();
        let policy = opts.policy();
        let grace = opts.not_visible_grace;
        let polled = policy
            .poll(None, || async {
                match self.task_status_once(upid).await {
                    Ok(st) if !st.is_running() => Ok(Some(st)),
                    Ok(_) => Ok(None),
                    Err(e)
                        if (e.status() == Some(400) || e.classify() == ErrorClass::NotFound)
                            && started.elapsed() < grace =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(StatusRead(e)),
                }
            })
            .await;
        match polled {
            Ok(done) => {
                let exit = done
                    .value
                    .exitstatus
                    .clone()
                    .unwrap_or_else(|| "unexpected status".to_string());
                self.finish_task(upid, exit, done.attempts, opts).await
            }
            Err(RetryError::Final { error, .. }) => Err(error.0),
            Err(RetryError::GaveUp { last: Some(e), .. }) => Err(PveError::TaskUnknown {
                upid: Box::new(upid.clone()),
                waited_ms: started.elapsed().as_millis(),
                last: e.0.to_string(),
            }),
            Err(_) => Err(PveError::TaskTimeout {
                upid: Box::new(upid.clone()),
                waited_ms: started.elapsed().as_millis(),
            }),
        }
    }

    /// One `GET …/tasks/{upid}/status`, no retry (the caller's poll loop is the retry).
    async fn task_status_once(&self, upid: &Upid) -> PveResult<TaskStatus> {
        let call = Self::task_status_call(upid);
        let ctx = call.ctx();
        let env = self.send(&call).await?;
        decode(ctx, env.get("data").cloned().unwrap_or(Value::Null))
    }

    async fn finish_task(
        &self,
        upid: &Upid,
        exit: String,
        polls: u32,
        opts: &WaitOptions,
    ) -> PveResult<TaskOutcome> {
        let exit = exit.trim().to_string();
        if exit == "OK" {
            return Ok(TaskOutcome {
                upid: upid.clone(),
                exitstatus: exit,
                warnings: 0,
                warning_lines: Vec::new(),
                polls,
            });
        }
        // The log is evidence only; a failure to read it must not hide the task result.
        let tail = self
            .task_log_tail(upid, opts.log_tail)
            .await
            .unwrap_or_default();
        if let Some(n) = exit.strip_prefix("WARNINGS:") {
            let warnings = n.trim().parse().unwrap_or(0);
            return Ok(TaskOutcome {
                upid: upid.clone(),
                exitstatus: exit,
                warnings,
                warning_lines: tail.into_iter().filter(|l| l.starts_with("WARN")).collect(),
                polls,
            });
        }
        Err(PveError::TaskFailed {
            upid: Box::new(upid.clone()),
            exitstatus: exit,
            log_tail: tail,
        })
    }

    /// `GET …/agent/network-get-interfaces` (the `result` list).
    pub async fn agent_network_interfaces(
        &self,
        node: &str,
        vmid: u32,
    ) -> PveResult<Vec<GuestInterface>> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
            vm_path(node, vmid, "/agent/network-get-interfaces"),
        )
        .vm(node, vmid);
        let ctx = call.ctx();
        // Agent errors are not transient for retry_read (they are 500s, but "agent not
        // running" must reach the caller's own polling loop quickly), so send once.
        let env = self.send(&call).await?;
        let data = env.get("data").cloned().unwrap_or(Value::Null);
        let list = data.get("result").cloned().unwrap_or(data);
        decode(ctx, list)
    }

    /// `PUT …/cloudinit`: regenerate the cloud-init drive.
    pub async fn cloudinit_regenerate(&self, node: &str, vmid: u32) -> PveResult<()> {
        let call = Call::new(
            Method::PUT,
            "/nodes/{node}/qemu/{vmid}/cloudinit",
            vm_path(node, vmid, "/cloudinit"),
        )
        .vm(node, vmid);
        self.write_data(call).await.map(|_| ())
    }

    /// `GET …/cloudinit/dump?type=…`: the generated YAML.
    pub async fn cloudinit_dump(
        &self,
        node: &str,
        vmid: u32,
        kind: CloudInitKind,
    ) -> PveResult<String> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/qemu/{vmid}/cloudinit/dump",
            vm_path(node, vmid, "/cloudinit/dump"),
        )
        .vm(node, vmid)
        .params(Params::new().set("type", kind.as_str()));
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `GET /nodes`: the cluster's nodes and whether they are online.
    pub async fn nodes(&self) -> PveResult<Vec<NodeInfo>> {
        let call = Call::new(Method::GET, "/nodes", "/nodes".into());
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `GET /nodes/{node}/storage[?content=…]`: the storages configured for `node`.
    pub async fn node_storages(
        &self,
        node: &str,
        content: Option<&str>,
    ) -> PveResult<Vec<NodeStorage>> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/storage",
            format!("/nodes/{}/storage", seg(node)),
        )
        .on_node(node)
        .params(Params::new().opt("content", content));
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `GET /nodes/{node}/network?type=any_bridge`: every bridge a NIC may attach to on
    /// `node` (Linux and OVS bridges and SDN VNets).
    pub async fn node_bridges(&self, node: &str) -> PveResult<Vec<NodeNetwork>> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/network",
            format!("/nodes/{}/network", seg(node)),
        )
        .on_node(node)
        .params(Params::new().set("type", "any_bridge"));
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `GET /nodes/{node}/capabilities/qemu/cpu`: the CPU models `node` accepts.
    pub async fn cpu_models(&self, node: &str) -> PveResult<Vec<CpuModel>> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/capabilities/qemu/cpu",
            format!("/nodes/{}/capabilities/qemu/cpu", seg(node)),
        )
        .on_node(node);
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/pending`: current and pending value per key.
    pub async fn vm_pending(&self, node: &str, vmid: u32) -> PveResult<Vec<PendingEntry>> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/qemu/{vmid}/pending",
            vm_path(node, vmid, "/pending"),
        )
        .vm(node, vmid);
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// `POST /nodes/{node}/qemu/{vmid}/migrate` (offline) → the `qmigrate` task.
    /// `targetstorage` maps every local volume to that storage on `target`.
    pub async fn migrate(
        &self,
        node: &str,
        vmid: u32,
        target: &str,
        targetstorage: Option<&str>,
    ) -> PveResult<Upid> {
        let call = Call::new(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/migrate",
            vm_path(node, vmid, "/migrate"),
        )
        .vm(node, vmid)
        .params(
            Params::new()
                .set("target", target)
                .opt("targetstorage", targetstorage),
        );
        let ctx = call.ctx();
        upid_from(ctx, self.write_data(call).await?)
    }

    /// `GET /nodes/{node}/storage/{storage}/content[?content=…]`.
    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
    ) -> PveResult<Vec<StorageVolume>> {
        let call = Call::new(
            Method::GET,
            "/nodes/{node}/storage/{storage}/content",
            format!("/nodes/{}/storage/{}/content", seg(node), seg(storage)),
        )
        .on_node(node)
        .params(Params::new().opt("content", content));
        let ctx = call.ctx();
        decode(ctx, self.get_data(call).await?)
    }

    /// Poll `status/current` until the VM has no `lock:` (e.g. after a clone), on the poll
    /// schedule of [`PveClient::wait_task`]. Transient read errors are polled through. Fails
    /// with [`PveError::Unexpected`] (field `lock`) naming the lock holder when
    /// `opts.timeout` passes.
    pub async fn wait_unlocked(
        &self,
        node: &str,
        vmid: u32,
        opts: &WaitOptions,
    ) -> PveResult<VmStatus> {
        let started = Instant::now();
        let holder = std::sync::Mutex::new(String::new());
        let polled = opts
            .policy()
            .poll(None, || async {
                let st = self.vm_status(node, vmid).await.map_err(StatusRead)?;
                match st.lock.clone() {
                    None => Ok::<_, StatusRead>(Some(st)),
                    Some(h) => {
                        if let Ok(mut g) = holder.lock() {
                            *g = h;
                        }
                        Ok(None)
                    }
                }
            })
            .await;
        match polled {
            Ok(st) => Ok(st.value),
            Err(RetryError::Final { error, .. }) => Err(error.0),
            Err(e) => match e.into_last() {
                Some(err) => Err(err.0),
                None => Err(PveError::Unexpected {
                    ctx: Box::new(CallContext {
                        method: "GET".into(),
                        path: vm_path(node, vmid, "/status/current"),
                        node: Some(node.to_string()),
                        vmid: Some(vmid),
                    }),
                    field: "lock",
                    detail: format!(
                        "VM is still locked ({}) after {} ms",
                        holder.lock().map(|g| g.clone()).unwrap_or_default(),
                        started.elapsed().as_millis()
                    ),
                }),
            },
        }
    }

    /// Poll the guest agent until it reports at least one usable IPv4 address (see
    /// [`ipv4_addresses`]); agent-not-ready errors are polled through until `opts.timeout`,
    /// after which the last error (or an empty-address error) is returned.
    pub async fn wait_agent_ipv4(
        &self,
        node: &str,
        vmid: u32,
        opts: &WaitOptions,
    ) -> PveResult<Vec<(String, std::net::Ipv4Addr, Option<u32>)>> {
        let started = Instant::now();
        let polled = opts
            .policy()
            .poll(None, || async {
                let ifaces = self
                    .agent_network_interfaces(node, vmid)
                    .await
                    .map_err(StatusRead)?;
                let v4 = ipv4_addresses(&ifaces);
                Ok::<_, StatusRead>(if v4.is_empty() { None } else { Some(v4) })
            })
            .await;
        match polled {
            Ok(v) => Ok(v.value),
            Err(RetryError::Final { error, .. }) => Err(error.0),
            Err(e) => match e.into_last() {
                Some(err) => Err(err.0),
                None => Err(PveError::Unexpected {
                    ctx: Box::new(CallContext {
                        method: "GET".into(),
                        path: vm_path(node, vmid, "/agent/network-get-interfaces"),
                        node: Some(node.to_string()),
                        vmid: Some(vmid),
                    }),
                    field: "ip-addresses",
                    detail: format!(
                        "no usable IPv4 address after {} ms",
                        started.elapsed().as_millis()
                    ),
                }),
            },
        }
    }
}

/// An error of a status read inside a poll loop: transient ones (per the policy table) keep
/// the poll going, whether the call was a read or not; anything else ends it.
struct StatusRead(PveError);

impl Classify for StatusRead {
    fn disposition(&self) -> Disposition {
        match self.0.disposition() {
            Disposition::OutcomeUnknown => Disposition::Transient,
            d => d,
        }
    }
}
