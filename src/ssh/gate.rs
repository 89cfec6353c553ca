//! The post-apply SSH readiness gate (contract §5; upstream `post_apply_readiness.py` and
//! `connectivity.py`): targets chosen from `outputs.vms` exactly as upstream (§5.3), the
//! automatic ProxyJump through the Proxmox host (§5.4), one deadline for all targets
//! computed once, a TCP probe then an SSH authentication probe per target retried every
//! 3 s (§5.5), upstream's evidence labels and files, every failure message verbatim (§5.6) and
//! `post_apply_ssh_readiness.json` (§5.7).
//!
//! Differences from upstream, all in the operator's favour: probes run in-process (no `ssh`,
//! no `nc` on the Proxmox host: the proxy path uses `direct-tcpip` channels over one bastion
//! session), targets are probed concurrently (bounded), host keys are checked (trust on first
//! use, see [`super::known_hosts`]) instead of `StrictHostKeyChecking=no`, and
//! `connectivity_wait_s: 0` means a single attempt (decided quirk, contract §10.2 #6).
//! Optionally (`wait_cloud_init`) the gate also waits for `cloud-init status --wait`, where
//! exit 2 ("degraded") is success with a warning.
//!
//! Knows nothing about HyOps state files or Proxmox: the caller gives the outputs, the Proxmox
//! init facts (`api_ip`, `proxmox_ssh_username`), the evidence dir and the dialer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore};

use super::client::{Peer, SshContext, SshError, SshSession};
use super::dial::Dialer;
use super::files::{json_text, write_private_atomic};
use super::identity::Identities;
use super::known_hosts::KnownHosts;
use crate::hyops::evidence::EvidenceFailure;

/// The evidence group name upstream's probe input uses (`inventory_groups`).
pub const TARGET_GROUP: &str = "platform_vm_targets";
/// The summary file (§5.7).
pub const SUMMARY_FILE: &str = "post_apply_ssh_readiness.json";

/// Resolved `post_apply_ssh_readiness` settings (contract §1.12), with the top-level
/// fallbacks already applied by the inputs layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateConfig {
    pub enabled: bool,
    pub required: bool,
    pub target_user: String,
    pub target_port: u16,
    pub connectivity_timeout_s: u64,
    /// 0 = one attempt per probe.
    pub connectivity_wait_s: u64,
    pub ssh_proxy_jump_auto: bool,
    pub ssh_proxy_jump_host: String,
    pub ssh_proxy_jump_user: String,
    pub ssh_proxy_jump_port: u16,
    pub ssh_private_key_file: String,
    /// Engine extension: after authentication, wait for `cloud-init status --wait`.
    pub wait_cloud_init: bool,
}

/// What the gate needs from its caller.
#[derive(Clone, Debug)]
pub struct GateEnv {
    /// `<root>/meta/proxmox.ready.json` → `runtime.api_ip` (the auto ProxyJump host).
    pub proxmox_api_ip: Option<String>,
    /// `proxmox_ssh_username` from the credentials (the auto ProxyJump user).
    pub proxmox_ssh_username: Option<String>,
    /// Where the `connectivity_*` files and the summary go.
    pub evidence_dir: PathBuf,
    pub dialer: Arc<dyn Dialer>,
    pub known_hosts: Arc<KnownHosts>,
    /// Identities used when no `ssh_private_key_file` is set (agent, default key files).
    pub default_identities: Identities,
    /// Logical key → the VM identity host keys are recorded under (`vmid=…,uuid=…`).
    pub vm_identities: BTreeMap<String, String>,
    /// `$HOME`, for `~` in `ssh_private_key_file`.
    pub home: Option<PathBuf>,
    /// Pause between attempts (upstream: 3 s).
    pub retry_interval: Duration,
    /// Targets probed at the same time.
    pub max_parallel: usize,
    /// Real seconds per engine second (a time-scaled simulator, see `Ctx::time_scale`): scales
    /// the overall deadline (floor 10 s) and the retry pause (floor 200 ms), never the
    /// per-attempt timeout.
    pub time_scale: f64,
}

/// Counters for benchmarks and the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// SSH sessions established (bastion and targets).
    pub sessions_opened: u64,
    /// `direct-tcpip` channels opened through the bastion.
    pub channels_opened: u64,
    /// Probe attempts written to evidence.
    pub attempts: u64,
}

/// The gate's result, shaped like upstream's `(summary, warnings, error)`.
#[derive(Clone, Debug)]
pub struct GateReport {
    /// The `post_apply_ssh_readiness.json` object (§5.7).
    pub summary: Value,
    pub warnings: Vec<String>,
    /// The connectivity error when `required: true` (the run must fail). A `required: false`
    /// failure is a warning instead.
    pub error: Option<String>,
    pub stats: GateStats,
    /// Evidence files (the summary, `connectivity_*`) that could not be written; the gate
    /// itself went on. The caller reports them.
    pub evidence_failures: Vec<EvidenceFailure>,
}

impl GateReport {
    /// `skipped`, `ok` or `error`.
    pub fn status(&self) -> &str {
        self.summary
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("skipped")
    }
}

/// Upstream's driver wrapper for a required failure (§5.6).
pub fn required_failure_message(err: &str) -> String {
    format!(
        "post-apply SSH readiness failed: {err} (see post_apply_ssh_readiness.json and connectivity_* evidence)"
    )
}

/// Upstream's warn-only message (§5.6).
pub fn warn_only_message(err: &str) -> String {
    format!("post-apply SSH readiness failed (warn-only): {err}")
}

/// `safe_label_token`: `[^0-9A-Za-z_.-]+` → `_`, then `._-` stripped from both ends.
pub fn safe_label_token(raw: &str) -> String {
    let mut out = String::new();
    let mut in_bad = false;
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            out.push(c);
            in_bad = false;
        } else if !in_bad {
            out.push('_');
            in_bad = true;
        }
    }
    let t = out.trim_matches(|c| matches!(c, '.' | '_' | '-'));
    if t.is_empty() {
        "host".into()
    } else {
        t.to_string()
    }
}

/// One gate target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub host: String,
}

fn coerce_ipv4_host(raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("dhcp") {
        return None;
    }
    if let Some((addr, _)) = t.split_once('/') {
        return t
            .parse::<ipnet::Ipv4Net>()
            .ok()
            .map(|n| n.addr().to_string())
            .filter(|_| addr.parse::<std::net::Ipv4Addr>().is_ok());
    }
    t.parse::<std::net::Ipv4Addr>().ok().map(|a| a.to_string())
}

fn value_str(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn iter_strings(v: Option<&Value>, out: &mut Vec<String>) {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => out.push(s.trim().to_string()),
        Some(Value::Array(items)) => {
            for i in items {
                iter_strings(Some(i), out);
            }
        }
        _ => {}
    }
}

/// `_pick_vm_ipv4_host` (§5.3): agent address, configured primary, flattened addresses,
/// then the first static interface address.
pub fn pick_vm_ipv4_host(vm: &Value) -> Option<String> {
    if let Some(h) = coerce_ipv4_host(&value_str(vm.get("ipv4_address"))) {
        return Some(h);
    }
    if let Some(h) = coerce_ipv4_host(&value_str(vm.get("ipv4_configured_primary"))) {
        return Some(h);
    }
    let mut all = Vec::new();
    iter_strings(vm.get("ipv4_addresses"), &mut all);
    for c in all {
        if let Some(h) = coerce_ipv4_host(&c).filter(|h| !h.starts_with("127.")) {
            return Some(h);
        }
    }
    for item in vm
        .get("interfaces_configured")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let addr = value_str(item.get("ipv4").and_then(|i| i.get("address")));
        if let Some(h) = coerce_ipv4_host(&addr).filter(|h| !h.starts_with("127.")) {
            return Some(h);
        }
    }
    None
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

/// `_collect_platform_vm_targets` (§5.3): targets plus the skip warnings.
pub fn collect_targets(outputs: &Value) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut warnings = Vec::new();
    let Some(vms) = outputs.get("vms").and_then(Value::as_object) else {
        warnings.push(
            "post-apply SSH readiness skipped: outputs.vms is missing or not a map".to_string(),
        );
        return (targets, warnings);
    };
    for (raw_name, vm) in vms {
        let name = if raw_name.trim().is_empty() {
            "vm".to_string()
        } else {
            raw_name.trim().to_string()
        };
        if truthy(vm.get("is_windows")) {
            warnings.push(format!(
                "post-apply SSH readiness skipped windows VM: {name}"
            ));
            continue;
        }
        match pick_vm_ipv4_host(vm) {
            Some(host) => targets.push(Target { name, host }),
            None => warnings.push(format!(
                "post-apply SSH readiness skipped VM with no IPv4 host in outputs.vms: {name}"
            )),
        }
    }
    (targets, warnings)
}

/// The proxy after `apply_proxy_jump_auto` (§5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveProxy {
    pub host: String,
    pub user: String,
    pub port: u16,
    pub auto_note: String,
}

/// `apply_proxy_jump_auto`: the Proxmox host becomes the jump host when none is configured
/// and `ssh_proxy_jump_auto` is on and proxmox init left an `api_ip`.
pub fn effective_proxy(cfg: &GateConfig, env: &GateEnv) -> EffectiveProxy {
    let mut host = cfg.ssh_proxy_jump_host.trim().to_string();
    let mut user = cfg.ssh_proxy_jump_user.trim().to_string();
    let mut note = String::new();
    if host.is_empty() && cfg.ssh_proxy_jump_auto {
        if let Some(api_ip) = env
            .proxmox_api_ip
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            host = api_ip.to_string();
            if user.is_empty() {
                if let Some(u) = env
                    .proxmox_ssh_username
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    user = u.to_string();
                }
            }
            let shown = if user.is_empty() { "root" } else { &user };
            note = format!(
                "auto-enabled ssh proxy jump via {shown}@{host} from proxmox init metadata"
            );
        }
    }
    EffectiveProxy {
        host,
        user,
        port: cfg.ssh_proxy_jump_port,
        auto_note: note,
    }
}

/// The summary's `config` block (§5.7).
fn config_json(cfg: &GateConfig) -> Value {
    json!({
        "target_user": cfg.target_user,
        "target_port": cfg.target_port,
        "connectivity_timeout_s": cfg.connectivity_timeout_s,
        "connectivity_wait_s": cfg.connectivity_wait_s,
        "ssh_proxy_jump_auto": cfg.ssh_proxy_jump_auto,
        "ssh_proxy_jump_host": cfg.ssh_proxy_jump_host,
        "ssh_proxy_jump_user": cfg.ssh_proxy_jump_user,
        "ssh_proxy_jump_port": cfg.ssh_proxy_jump_port,
        "ssh_private_key_file": cfg.ssh_private_key_file,
    })
}

/// `expand_existing_file`: `~` expanded; the file must exist.
fn expand_existing_file(raw: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    let t = raw.trim();
    let path = match (t.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if t == "~" => home
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(t)),
        _ => PathBuf::from(t),
    };
    if !path.exists() {
        return Err(format!("file not found: {}", path.display()));
    }
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// Run the gate. Writes the `connectivity_*` evidence and `post_apply_ssh_readiness.json`
/// into `env.evidence_dir`.
pub async fn run_gate(cfg: &GateConfig, outputs: &Value, env: &GateEnv) -> GateReport {
    let mut report = run_gate_inner(cfg, outputs, env).await;
    let summary_file = env.evidence_dir.join(SUMMARY_FILE);
    if let Err(e) = write_private_atomic(&summary_file, json_text(&report.summary).as_bytes()) {
        report
            .evidence_failures
            .push(EvidenceFailure::from_io(&summary_file, &e));
    }
    if let Some(e) = report.error.take() {
        if cfg.required {
            report.error = Some(e);
        } else {
            report.warnings.push(warn_only_message(&e));
        }
    }
    report
}

async fn run_gate_inner(cfg: &GateConfig, outputs: &Value, env: &GateEnv) -> GateReport {
    let mut summary = json!({
        "enabled": cfg.enabled,
        "required": cfg.required,
        "status": "skipped",
        "config": config_json(cfg),
        "targets": [],
    });
    let mut report = GateReport {
        summary: Value::Null,
        warnings: Vec::new(),
        error: None,
        stats: GateStats::default(),
        evidence_failures: Vec::new(),
    };
    if !cfg.enabled {
        report.summary = summary;
        return report;
    }
    let (targets, warnings) = collect_targets(outputs);
    report.warnings.extend(warnings);
    summary["targets"] = Value::Array(
        targets
            .iter()
            .map(|t| json!({"name": t.name, "host": t.host}))
            .collect(),
    );
    if targets.is_empty() {
        report.summary = summary;
        return report;
    }
    let proxy = effective_proxy(cfg, env);
    if !proxy.auto_note.is_empty() {
        report.warnings.push(proxy.auto_note.clone());
    }
    summary["effective_proxy"] = json!({
        "host": proxy.host,
        "user": proxy.user,
        "port": proxy.port,
        "auto_note": proxy.auto_note,
    });
    let probe = Probe::new(cfg, env, &proxy);
    let (result, probes) = match probe {
        Ok(p) => {
            let p = Arc::new(p);
            let r = p.check(&targets).await;
            report.stats = p.stats();
            report.evidence_failures = p.evidence_failures();
            (r, p.results())
        }
        Err(e) => (Err(e), Vec::new()),
    };
    if !probes.is_empty() {
        summary["probes"] = Value::Array(probes);
    }
    match result {
        Ok(extra_warnings) => {
            report.warnings.extend(extra_warnings);
            summary["status"] = json!("ok");
        }
        Err(e) => {
            summary["status"] = json!("error");
            summary["error"] = json!(e);
            report.error = Some(e);
        }
    }
    report.summary = summary;
    report
}

/// The outcome of one target.
#[derive(Clone, Debug)]
struct TargetResult {
    name: String,
    host: String,
    label: String,
    ok: bool,
    /// The §5.6 message on failure.
    error: Option<String>,
    warning: Option<String>,
    attempts: u32,
    duration_ms: u64,
}

/// One probe run: shared deadline, identities, bastion session.
struct Probe {
    cfg: GateConfig,
    env: GateEnv,
    proxy: EffectiveProxy,
    ctx: SshContext,
    deadline: Instant,
    timeout: Duration,
    key_file: Option<PathBuf>,
    bastion: Mutex<Option<Arc<SshSession>>>,
    sessions: AtomicU64,
    channels: AtomicU64,
    attempts: AtomicU64,
    results: std::sync::Mutex<Vec<TargetResult>>,
    /// Attempt evidence that could not be written.
    unwritten: std::sync::Mutex<Vec<EvidenceFailure>>,
}

/// One probe attempt, as written to evidence.
struct Attempt {
    label: String,
    argv: Vec<String>,
    rc: i32,
    stdout: String,
    stderr: String,
    started: Instant,
}

impl Probe {
    fn new(cfg: &GateConfig, env: &GateEnv, proxy: &EffectiveProxy) -> Result<Self, String> {
        // One deadline for every target, computed once (§5.5).
        let scale = if env.time_scale.is_finite() && env.time_scale > 0.0 {
            env.time_scale.min(1.0)
        } else {
            1.0
        };
        // Scaled, but never below 10 real seconds (or the unscaled wait when shorter): the
        // handshakes themselves take real time.
        let wait = Duration::from_secs(cfg.connectivity_wait_s);
        let deadline = Instant::now() + wait.mul_f64(scale).max(wait.min(Duration::from_secs(10)));
        let (identities, key_file) = if cfg.ssh_private_key_file.trim().is_empty() {
            (env.default_identities.clone(), None)
        } else {
            let path = expand_existing_file(&cfg.ssh_private_key_file, env.home.as_deref())
                .map_err(|e| {
                    format!("connectivity check failed: inputs.ssh_private_key_file {e}")
                })?;
            let ids = Identities::key_file(&path).map_err(|e| {
                format!("connectivity check failed: inputs.ssh_private_key_file {e}")
            })?;
            (ids, Some(path))
        };
        Ok(Self {
            cfg: cfg.clone(),
            env: env.clone(),
            proxy: proxy.clone(),
            ctx: SshContext {
                identities: Arc::new(identities),
                known_hosts: Arc::clone(&env.known_hosts),
            },
            deadline,
            timeout: Duration::from_secs(cfg.connectivity_timeout_s.max(1)),
            key_file,
            bastion: Mutex::new(None),
            sessions: AtomicU64::new(0),
            channels: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            results: std::sync::Mutex::new(Vec::new()),
            unwritten: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn stats(&self) -> GateStats {
        GateStats {
            sessions_opened: self.sessions.load(Ordering::Relaxed),
            channels_opened: self.channels.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
        }
    }

    fn results(&self) -> Vec<Value> {
        let mut r = self.results.lock().map(|v| v.clone()).unwrap_or_default();
        r.sort_by(|a, b| a.label.cmp(&b.label));
        r.iter()
            .map(|t| {
                json!({
                    "name": t.name, "host": t.host, "label": t.label,
                    "status": if t.ok { "ok" } else { "error" },
                    "attempts": t.attempts, "duration_ms": t.duration_ms,
                    "error": t.error, "warning": t.warning,
                })
            })
            .collect()
    }

    fn proxy_user(&self) -> String {
        if self.proxy.user.is_empty() {
            "root".into()
        } else {
            self.proxy.user.clone()
        }
    }

    fn target_user(&self) -> String {
        let u = self.cfg.target_user.trim();
        if u.is_empty() {
            "root".into()
        } else {
            u.to_string()
        }
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    async fn pause(&self) {
        let scale = if self.env.time_scale.is_finite() && self.env.time_scale > 0.0 {
            self.env.time_scale.min(1.0)
        } else {
            1.0
        };
        // Scaled, but at least 200 ms (or the configured pause when shorter).
        let pause = self.env.retry_interval;
        tokio::time::sleep(
            pause
                .mul_f64(scale)
                .max(pause.min(Duration::from_millis(200))),
        )
        .await;
    }

    fn evidence_failures(&self) -> Vec<EvidenceFailure> {
        self.unwritten.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Write one evidence file of an attempt; a failure is kept for the report.
    fn write_evidence(&self, path: &Path, bytes: &[u8]) {
        if let Err(e) = write_private_atomic(path, bytes) {
            if let Ok(mut v) = self.unwritten.lock() {
                v.push(EvidenceFailure::from_io(path, &e));
            }
        }
    }

    fn record(&self, a: Attempt) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let dir = &self.env.evidence_dir;
        self.write_evidence(
            &dir.join(format!("{}.stdout.txt", a.label)),
            a.stdout.as_bytes(),
        );
        self.write_evidence(
            &dir.join(format!("{}.stderr.txt", a.label)),
            a.stderr.as_bytes(),
        );
        let result = json!({
            "argv": a.argv,
            "cwd": Value::Null,
            "rc": a.rc,
            "duration_ms": a.started.elapsed().as_millis() as u64,
            "transport": "in-process (russh); argv is the equivalent OpenSSH command",
        });
        self.write_evidence(
            &dir.join(format!("{}.result.json", a.label)),
            json_text(&result).as_bytes(),
        );
    }

    fn ssh_argv(&self, port: u16, dest: &str, jump: bool, tail: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            "ssh".into(),
            "-p".into(),
            port.to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={}", self.timeout.as_secs()),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                self.env.known_hosts.path().display()
            ),
        ];
        if jump {
            argv.push("-o".into());
            argv.push(format!(
                "ProxyJump={}@{}:{}",
                self.proxy_user(),
                self.proxy.host,
                self.proxy.port
            ));
        }
        if let Some(k) = &self.key_file {
            argv.push("-i".into());
            argv.push(k.display().to_string());
        }
        argv.push(dest.to_string());
        argv.extend(tail.iter().cloned());
        argv
    }

    fn identity_of(&self, name: &str) -> String {
        self.env
            .vm_identities
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Probe every target (bounded concurrency); the first failing target in target order
    /// decides the error. `Ok` carries extra warnings (cloud-init degraded).
    async fn check(self: &Arc<Self>, targets: &[Target]) -> Result<Vec<String>, String> {
        // Targets with the same host are probed once (upstream `seen_hosts`).
        let mut seen = BTreeSet::new();
        let mut work = Vec::new();
        for t in targets {
            if t.host == "0.0.0.0" || !seen.insert(t.host.clone()) {
                continue;
            }
            work.push((
                safe_label_token(&format!("{TARGET_GROUP}.{}", t.name)),
                t.clone(),
            ));
        }
        let proxied = !self.proxy.host.is_empty();
        if proxied {
            self.wait_tcp(&self.proxy.host.clone(), self.proxy.port)
                .await
                .map_err(|err| {
                    format!(
                        "connectivity check failed: cannot reach ssh_proxy_jump_host={}:{} (timeout={}s): {err}",
                        self.proxy.host,
                        self.proxy.port,
                        self.timeout.as_secs()
                    )
                })?;
        }
        let sem = Arc::new(Semaphore::new(self.env.max_parallel.max(1)));
        let mut handles = Vec::new();
        for (label, t) in work {
            let me = Arc::clone(self);
            let sem = Arc::clone(&sem);
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let started = Instant::now();
                let mut r = if proxied {
                    me.probe_via_proxy(&label, &t).await
                } else {
                    me.probe_direct(&label, &t).await
                };
                r.duration_ms = started.elapsed().as_millis() as u64;
                r
            }));
        }
        let mut outcomes = Vec::new();
        for h in handles {
            match h.await {
                Ok(r) => outcomes.push(r),
                Err(e) => {
                    return Err(format!(
                    "connectivity check failed: internal error: a probe task ended abnormally: {e}"
                ))
                }
            }
        }
        if let Some(b) = self.bastion.lock().await.take() {
            b.close().await;
        }
        if let Ok(mut v) = self.results.lock() {
            v.extend(outcomes.iter().cloned());
        }
        if let Some(failed) = outcomes.iter().find(|r| !r.ok) {
            return Err(failed.error.clone().unwrap_or_default());
        }
        Ok(outcomes.into_iter().filter_map(|r| r.warning).collect())
    }

    /// TCP reachability, retried every `retry_interval` until the deadline.
    async fn wait_tcp(&self, host: &str, port: u16) -> Result<(), String> {
        loop {
            match self.env.dialer.dial(host, port, self.timeout).await {
                Ok(_stream) => return Ok(()),
                Err(e) => {
                    if self.expired() {
                        return Err(e.python_text());
                    }
                    self.pause().await;
                }
            }
        }
    }

    fn result(&self, label: &str, t: &Target) -> TargetResult {
        TargetResult {
            name: t.name.clone(),
            host: t.host.clone(),
            label: label.to_string(),
            ok: false,
            error: None,
            warning: None,
            attempts: 0,
            duration_ms: 0,
        }
    }

    async fn probe_direct(&self, label: &str, t: &Target) -> TargetResult {
        let mut res = self.result(label, t);
        let port = self.cfg.target_port;
        if let Err(err) = self.wait_tcp(&t.host, port).await {
            let hint = match self
                .env
                .proxmox_api_ip
                .as_deref()
                .filter(|s| !s.trim().is_empty())
            {
                Some(ip) => format!(" Hint: proxmox init detected; try ssh_proxy_jump_host={ip}."),
                None => String::new(),
            };
            res.error = Some(format!(
                "connectivity check failed: cannot reach {label} host={}:{port} from this machine (timeout={}s): {err}. Ensure your workstation has L3 access to the management network (VPN/route), or configure inputs.ssh_proxy_jump_host for a bastion.{hint}",
                t.host,
                self.timeout.as_secs()
            ));
            return res;
        }
        let user = self.target_user();
        let identity = self.identity_of(&t.name);
        let mut attempt = 1u32;
        loop {
            let alabel = attempt_label("connectivity_ssh_auth", label, attempt);
            let started = Instant::now();
            let peer = Peer {
                host: t.host.clone(),
                port,
                user: user.clone(),
                identity: identity.clone(),
            };
            let outcome =
                match SshSession::connect(self.env.dialer.as_ref(), peer, &self.ctx, self.timeout)
                    .await
                {
                    Ok(s) => {
                        self.sessions.fetch_add(1, Ordering::Relaxed);
                        self.after_auth(&s, label, &alabel, started, false).await
                    }
                    Err(e) => Err(e),
                };
            res.attempts = attempt;
            match self.settle(
                &mut res, outcome, &alabel, started, port, &user, &t.host, false,
            ) {
                Settle::Done => return res,
                Settle::Fatal(err) => {
                    res.error = Some(err);
                    return res;
                }
                Settle::Failed(err) => {
                    if self.expired() {
                        res.error = Some(
                            if err.starts_with("ssh service did not become ready yet") {
                                format!("connectivity check failed: target VM is reachable through its transport path, but SSH is not ready yet for {label} (host={}). {err}", t.host)
                            } else {
                                format!("connectivity check failed: target SSH port is reachable, but authentication failed for {label} (host={}). Confirm target_user={user} exists and the SSH key is authorised. {err}", t.host)
                            },
                        );
                        return res;
                    }
                }
            }
            attempt += 1;
            self.pause().await;
        }
    }

    /// After authentication: `true` (upstream's command), then optionally cloud-init.
    async fn after_auth(
        &self,
        s: &SshSession,
        label: &str,
        alabel: &str,
        started: Instant,
        jump: bool,
    ) -> Result<AuthOutcome, SshError> {
        let out = s.exec("true", self.timeout + Duration::from_secs(5)).await;
        let rc = match &out {
            Ok(o) => o.exit_status.map(|c| c as i32).unwrap_or(255),
            Err(_) => 255,
        };
        self.record(Attempt {
            label: alabel.to_string(),
            argv: self.ssh_argv(
                s.peer.port,
                &format!("{}@{}", s.peer.user, s.peer.host),
                jump,
                &["true".to_string()],
            ),
            rc,
            stdout: out.as_ref().map(|o| o.stdout.clone()).unwrap_or_default(),
            stderr: match &out {
                Ok(o) => o.stderr.clone(),
                Err(e) => e.to_string(),
            },
            started,
        });
        out?;
        let mut outcome = AuthOutcome {
            rc,
            warning: None,
            fatal: None,
        };
        if rc == 0 && self.cfg.wait_cloud_init {
            let ci_label = format!("connectivity_cloud_init.{label}");
            let budget = self
                .deadline
                .saturating_duration_since(Instant::now())
                .max(self.timeout);
            let ci_started = Instant::now();
            let cmd = "cloud-init status --wait";
            let r = s.exec(cmd, budget).await;
            let (rc_ci, stdout, stderr) = match &r {
                Ok(o) => (
                    o.exit_status.map(|c| c as i32).unwrap_or(255),
                    o.stdout.clone(),
                    o.stderr.clone(),
                ),
                Err(e) => (255, String::new(), e.to_string()),
            };
            self.record(Attempt {
                label: ci_label.clone(),
                argv: self.ssh_argv(
                    s.peer.port,
                    &format!("{}@{}", s.peer.user, s.peer.host),
                    jump,
                    &[cmd.to_string()],
                ),
                rc: rc_ci,
                stdout,
                stderr,
                started: ci_started,
            });
            match rc_ci {
                0 => {}
                2 => {
                    outcome.warning = Some(format!(
                        "post-apply SSH readiness: cloud-init on {label} (host={}) finished with recoverable errors (cloud-init status exit 2, degraded; see {ci_label}.* in evidence dir)",
                        s.peer.host
                    ))
                }
                127 => {
                    outcome.warning = Some(format!(
                        "post-apply SSH readiness: {label} (host={}) has no cloud-init command; cloud-init was not waited for (see {ci_label}.* in evidence dir)",
                        s.peer.host
                    ))
                }
                _ => {
                    outcome.fatal = Some(format!(
                        "connectivity check failed: SSH is ready for {label} (host={}), but cloud-init did not finish cleanly (cloud-init status exit {rc_ci}; see {ci_label}.* in evidence dir)",
                        s.peer.host
                    ))
                }
            }
        }
        s.close().await;
        Ok(outcome)
    }

    /// Turn one authentication attempt into evidence and a verdict.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        res: &mut TargetResult,
        outcome: Result<AuthOutcome, SshError>,
        alabel: &str,
        started: Instant,
        port: u16,
        user: &str,
        host: &str,
        jump: bool,
    ) -> Settle {
        match outcome {
            Ok(o) if o.rc == 0 => {
                if let Some(f) = o.fatal {
                    return Settle::Fatal(f);
                }
                res.ok = true;
                res.warning = o.warning;
                Settle::Done
            }
            Ok(o) => Settle::Failed(classify(
                &format!("remote command exited with status {}", o.rc),
                alabel,
            )),
            Err(e) => {
                // A failed session: evidence of what happened (the success path wrote its own).
                let stderr = e.to_string();
                self.record(Attempt {
                    label: alabel.to_string(),
                    argv: self.ssh_argv(port, &format!("{user}@{host}"), jump, &["true".into()]),
                    rc: 255,
                    stdout: String::new(),
                    stderr: stderr.clone(),
                    started,
                });
                if e.is_host_key_mismatch() {
                    return Settle::Fatal(format!(
                        "connectivity check failed: {stderr} (see {alabel}.* in evidence dir)"
                    ));
                }
                Settle::Failed(classify(&stderr, alabel))
            }
        }
    }

    /// The shared bastion session, (re)connected when missing or closed.
    async fn bastion(&self) -> Result<Arc<SshSession>, SshError> {
        let mut guard = self.bastion.lock().await;
        if let Some(b) = guard.as_ref().filter(|b| !b.is_closed()) {
            return Ok(Arc::clone(b));
        }
        let peer = Peer {
            host: self.proxy.host.clone(),
            port: self.proxy.port,
            user: self.proxy_user(),
            identity: String::new(),
        };
        let s = Arc::new(
            SshSession::connect(self.env.dialer.as_ref(), peer, &self.ctx, self.timeout).await?,
        );
        self.sessions.fetch_add(1, Ordering::Relaxed);
        *guard = Some(Arc::clone(&s));
        Ok(s)
    }

    async fn open_channel(
        &self,
        host: &str,
        port: u16,
    ) -> Result<super::dial::BoxStream, SshError> {
        let b = self.bastion().await?;
        let ch = b.direct_tcpip(host, port, self.timeout).await?;
        self.channels.fetch_add(1, Ordering::Relaxed);
        Ok(ch)
    }

    async fn probe_via_proxy(&self, label: &str, t: &Target) -> TargetResult {
        let mut res = self.result(label, t);
        let port = self.cfg.target_port;
        let puser = self.proxy_user();
        // 1. The port test through the proxy (upstream: `nc -vz` on the proxy).
        let mut attempt = 1u32;
        loop {
            let nlabel = attempt_label("connectivity_proxy_nc", label, attempt);
            let started = Instant::now();
            let r = self.open_channel(&t.host, port).await;
            let (rc, stderr) = match &r {
                Ok(_) => (
                    0,
                    format!(
                        "Connection to {} {port} port [tcp/ssh] succeeded!\n",
                        t.host
                    ),
                ),
                Err(SshError::Channel { detail, .. }) => (
                    1,
                    format!(
                        "nc: connect to {} port {port} (tcp) failed: {detail}\n",
                        t.host
                    ),
                ),
                Err(e) => (255, format!("{e}\n")),
            };
            self.record(Attempt {
                label: nlabel.clone(),
                argv: {
                    let mut a = self.ssh_argv(
                        self.proxy.port,
                        &format!("{puser}@{}", self.proxy.host),
                        false,
                        &[],
                    );
                    a.insert(a.len() - 1, "-W".into());
                    a.insert(a.len() - 1, format!("{}:{port}", t.host));
                    a
                },
                rc,
                stdout: String::new(),
                stderr,
                started,
            });
            res.attempts = attempt;
            match r {
                Ok(_) => break,
                Err(e) if e.is_host_key_mismatch() => {
                    res.error = Some(format!(
                        "connectivity check failed: {e} (see {nlabel}.* in evidence dir)"
                    ));
                    return res;
                }
                Err(_) if self.expired() => {
                    res.error = Some(format!(
                        "connectivity check failed: proxy is reachable, but cannot reach the target from the proxy ({puser}@{} -> {}:{port}) for {label}. proxy port test failed (see {nlabel}.* in evidence dir)",
                        self.proxy.host, t.host
                    ));
                    return res;
                }
                Err(_) => {}
            }
            attempt += 1;
            self.pause().await;
        }
        // 2. SSH authentication through the proxy.
        let user = self.target_user();
        let identity = self.identity_of(&t.name);
        let mut attempt = 1u32;
        loop {
            let alabel = attempt_label("connectivity_ssh_auth", label, attempt);
            let started = Instant::now();
            let peer = Peer {
                host: t.host.clone(),
                port,
                user: user.clone(),
                identity: identity.clone(),
            };
            let outcome = match self.open_channel(&t.host, port).await {
                Ok(stream) => {
                    match SshSession::establish(stream, peer, &self.ctx, self.timeout).await {
                        Ok(s) => {
                            self.sessions.fetch_add(1, Ordering::Relaxed);
                            self.after_auth(&s, label, &alabel, started, true).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            res.attempts += 1;
            match self.settle(
                &mut res, outcome, &alabel, started, port, &user, &t.host, true,
            ) {
                Settle::Done => return res,
                Settle::Fatal(err) => {
                    res.error = Some(err);
                    return res;
                }
                Settle::Failed(err) => {
                    if self.expired() {
                        res.error = Some(format!(
                            "connectivity check failed: target is reachable via proxy, but SSH authentication failed for {label} (host={}). Confirm target_user={user} and key injection. {err}",
                            t.host
                        ));
                        return res;
                    }
                }
            }
            attempt += 1;
            self.pause().await;
        }
    }
}

/// A successful authentication's follow-up.
struct AuthOutcome {
    rc: i32,
    warning: Option<String>,
    fatal: Option<String>,
}

enum Settle {
    Done,
    /// Do not retry (host key mismatch, cloud-init critical error).
    Fatal(String),
    /// Retry until the deadline; the classified text.
    Failed(String),
}

/// `<base>.<label>` for the first attempt, `<base>.<label>.tryN` after.
fn attempt_label(base: &str, label: &str, attempt: u32) -> String {
    if attempt <= 1 {
        format!("{base}.{label}")
    } else {
        format!("{base}.{label}.try{attempt}")
    }
}

/// `_classify_ssh_auth_probe_failure` on the attempt's output.
pub fn classify(output: &str, label: &str) -> String {
    let combined = output.to_lowercase();
    if combined.contains("banner exchange") || combined.contains("connection timed out") {
        return format!("ssh service did not become ready yet (see {label}.* in evidence dir)");
    }
    if combined.contains("permission denied")
        || combined.contains("publickey")
        || combined.contains("authentication failed")
    {
        return format!("ssh authentication failed (see {label}.* in evidence dir)");
    }
    format!("ssh auth probe failed (see {label}.* in evidence dir)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_made_safe_as_upstream_does() {
        assert_eq!(
            safe_label_token("platform_vm_targets.app-01"),
            "platform_vm_targets.app-01"
        );
        assert_eq!(safe_label_token("a b/c"), "a_b_c");
        assert_eq!(safe_label_token("  .-x-. "), "x");
        assert_eq!(safe_label_token("***"), "host");
    }

    #[test]
    fn host_choice_follows_the_upstream_order() {
        let vm = json!({"ipv4_address": null, "ipv4_configured_primary": "10.0.0.5/24"});
        assert_eq!(pick_vm_ipv4_host(&vm).as_deref(), Some("10.0.0.5"));
        let vm = json!({"ipv4_address": "10.9.9.9", "ipv4_configured_primary": "10.0.0.5/24"});
        assert_eq!(pick_vm_ipv4_host(&vm).as_deref(), Some("10.9.9.9"));
        let vm = json!({"ipv4_configured_primary": "dhcp", "ipv4_addresses": [["127.0.0.1", "10.1.1.1"]]});
        assert_eq!(pick_vm_ipv4_host(&vm).as_deref(), Some("10.1.1.1"));
        let vm = json!({"ipv4_configured_primary": "dhcp",
                        "interfaces_configured": [{"ipv4": {"address": "dhcp"}}, {"ipv4": {"address": "10.2.2.2/24"}}]});
        assert_eq!(pick_vm_ipv4_host(&vm).as_deref(), Some("10.2.2.2"));
        assert_eq!(
            pick_vm_ipv4_host(&json!({"ipv4_configured_primary": "dhcp"})),
            None
        );
    }

    #[test]
    fn targets_skip_windows_and_addressless_vms_with_upstream_warnings() {
        let outputs = json!({"vms": {
            "a": {"ipv4_configured_primary": "10.0.0.1/24"},
            "w": {"is_windows": true, "ipv4_configured_primary": "10.0.0.2/24"},
            "d": {"ipv4_configured_primary": "dhcp"},
        }});
        let (t, w) = collect_targets(&outputs);
        assert_eq!(
            t,
            vec![Target {
                name: "a".into(),
                host: "10.0.0.1".into()
            }]
        );
        assert_eq!(
            w,
            vec![
                "post-apply SSH readiness skipped windows VM: w",
                "post-apply SSH readiness skipped VM with no IPv4 host in outputs.vms: d",
            ]
        );
        let (t, w) = collect_targets(&json!({"vms": []}));
        assert!(t.is_empty());
        assert_eq!(
            w,
            vec!["post-apply SSH readiness skipped: outputs.vms is missing or not a map"]
        );
    }

    #[test]
    fn auth_failures_are_classified_as_upstream_does() {
        assert_eq!(
            classify("Connection timed out during banner exchange", "L"),
            "ssh service did not become ready yet (see L.* in evidence dir)"
        );
        assert_eq!(
            classify("ops@10.0.0.1: Permission denied (publickey).", "L"),
            "ssh authentication failed (see L.* in evidence dir)"
        );
        assert_eq!(
            classify(
                "kex_exchange_identification: Connection closed by remote host",
                "L"
            ),
            "ssh auth probe failed (see L.* in evidence dir)"
        );
    }

    fn gate_cfg() -> GateConfig {
        GateConfig {
            enabled: true,
            required: true,
            target_user: "opsadmin".into(),
            target_port: 22,
            connectivity_timeout_s: 5,
            connectivity_wait_s: 300,
            ssh_proxy_jump_auto: true,
            ssh_proxy_jump_host: String::new(),
            ssh_proxy_jump_user: String::new(),
            ssh_proxy_jump_port: 22,
            ssh_private_key_file: String::new(),
            wait_cloud_init: false,
        }
    }

    fn env(api_ip: Option<&str>, user: Option<&str>) -> GateEnv {
        GateEnv {
            proxmox_api_ip: api_ip.map(str::to_string),
            proxmox_ssh_username: user.map(str::to_string),
            evidence_dir: PathBuf::from("/nonexistent"),
            dialer: Arc::new(super::super::dial::TcpDialer::loopback_only()),
            known_hosts: Arc::new(KnownHosts::new("/nonexistent/kh")),
            default_identities: Identities::default(),
            vm_identities: BTreeMap::new(),
            home: None,
            retry_interval: Duration::from_secs(3),
            max_parallel: 4,
            time_scale: 1.0,
        }
    }

    #[test]
    fn the_proxmox_host_becomes_the_jump_host_with_the_upstream_note() {
        let p = effective_proxy(&gate_cfg(), &env(Some("192.0.2.10"), Some("root")));
        assert_eq!(p.host, "192.0.2.10");
        assert_eq!(p.user, "root");
        assert_eq!(
            p.auto_note,
            "auto-enabled ssh proxy jump via root@192.0.2.10 from proxmox init metadata"
        );
        // No user in the credentials: the note says root, the effective user stays empty.
        let p = effective_proxy(&gate_cfg(), &env(Some("192.0.2.10"), None));
        assert_eq!(p.user, "");
        assert!(p.auto_note.contains("root@192.0.2.10"));
    }

    #[test]
    fn an_explicit_jump_host_or_auto_off_disables_the_auto_proxy() {
        let mut cfg = gate_cfg();
        cfg.ssh_proxy_jump_host = "bastion".into();
        let p = effective_proxy(&cfg, &env(Some("192.0.2.10"), Some("root")));
        assert_eq!((p.host.as_str(), p.auto_note.as_str()), ("bastion", ""));
        let mut cfg = gate_cfg();
        cfg.ssh_proxy_jump_auto = false;
        let p = effective_proxy(&cfg, &env(Some("192.0.2.10"), Some("root")));
        assert_eq!(p.host, "");
    }

    #[tokio::test]
    async fn disabled_gate_is_skipped_without_targets() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(None, None);
        e.evidence_dir = d.path().to_path_buf();
        let mut cfg = gate_cfg();
        cfg.enabled = false;
        let r = run_gate(
            &cfg,
            &json!({"vms": {"a": {"ipv4_address": "10.0.0.1"}}}),
            &e,
        )
        .await;
        assert_eq!(r.status(), "skipped");
        assert_eq!(r.summary["targets"], json!([]));
        assert!(r.summary.get("effective_proxy").is_none());
        assert!(d.path().join(SUMMARY_FILE).exists());
    }

    #[tokio::test]
    async fn a_missing_key_file_fails_with_the_upstream_message() {
        let d = tempfile::tempdir().unwrap();
        let mut e = env(None, None);
        e.evidence_dir = d.path().to_path_buf();
        let mut cfg = gate_cfg();
        cfg.ssh_private_key_file = "/nonexistent/id_ed25519".into();
        let r = run_gate(
            &cfg,
            &json!({"vms": {"a": {"ipv4_address": "127.0.0.1"}}}),
            &e,
        )
        .await;
        assert_eq!(
            r.error.as_deref(),
            Some("connectivity check failed: inputs.ssh_private_key_file file not found: /nonexistent/id_ed25519")
        );
        assert_eq!(r.status(), "error");
    }
}
