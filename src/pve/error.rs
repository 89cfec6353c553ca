//! Errors of the Proxmox client and their classification into what an engine does next
//! (retry, re-read, pick another id, fail) per the error catalogue in the API notes §6.
//! Messages name the call (method + path), node and vmid; never a request body or secret.
//! Knows nothing about HyOps.

use std::collections::BTreeMap;
use std::fmt;

use super::upid::Upid;

/// Which call failed: method, path and (when known) node and vmid. Never holds a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// HTTP method.
    pub method: String,
    /// Path below `/api2/json` (no query, no body).
    pub path: String,
    /// Node, when the call names one.
    pub node: Option<String>,
    /// VMID, when the call names one.
    pub vmid: Option<u32>,
}

impl fmt::Display for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        match (&self.node, self.vmid) {
            (Some(n), Some(v)) => write!(f, " (node {n}, vmid {v})"),
            (Some(n), None) => write!(f, " (node {n})"),
            (None, Some(v)) => write!(f, " (vmid {v})"),
            (None, None) => Ok(()),
        }
    }
}

fn fmt_fields(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" [{}]", parts.join("; "))
}

/// An error from the Proxmox client.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The server answered with an HTTP error status.
    #[error("{ctx}: HTTP {status}: {message}{}", fmt_fields(errors))]
    Api {
        /// The failed call.
        ctx: Box<CallContext>,
        /// HTTP status.
        status: u16,
        /// `message` from the body, else the HTTP reason phrase.
        message: String,
        /// Per-parameter errors (`errors` in the body).
        errors: BTreeMap<String, String>,
    },
    /// The request did not complete (connect error, reset, timeout).
    #[error("{ctx}: transport error: {detail}")]
    Transport {
        /// The failed call.
        ctx: Box<CallContext>,
        /// What went wrong.
        detail: String,
        /// True when nothing reached the server (connection refused / DNS / TLS handshake).
        connect: bool,
        /// True for non-GET calls: the write may or may not have happened.
        write: bool,
    },
    /// The response body could not be decoded.
    #[error("{ctx}: cannot decode response: {detail}")]
    Decode {
        /// The failed call.
        ctx: Box<CallContext>,
        /// What went wrong.
        detail: String,
    },
    /// A task ended with an exit status other than `OK` / `WARNINGS: N`.
    #[error("task {upid} on node {} failed: {exitstatus}{}", upid.node, fmt_tail(log_tail))]
    TaskFailed {
        /// The task.
        upid: Box<Upid>,
        /// The task exit status (the error text).
        exitstatus: String,
        /// The last lines of the task log.
        log_tail: Vec<String>,
    },
    /// A task did not finish before the deadline.
    #[error("task {upid} on node {} still running after {waited_ms} ms", upid.node)]
    TaskTimeout {
        /// The task.
        upid: Box<Upid>,
        /// How long we waited.
        waited_ms: u128,
    },
    /// Client configuration is invalid (base URL, CA file, fingerprint, …).
    #[error("invalid client configuration {field}: {detail}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// VMID allocation gave up.
    #[error("cannot allocate a VMID for a clone of {template} on node {node}: {detail}")]
    VmidExhausted {
        /// Node, when the call names one.
        node: String,
        /// The template being cloned.
        template: u32,
        /// What went wrong.
        detail: String,
    },
    /// A clone to `newid` chosen by VMID allocation failed after the id was picked; the VM may
    /// exist (e.g. the outcome is unknown or the task timed out), so the id is reported.
    #[error("clone to VMID {newid} on node {node}: {source}")]
    Clone {
        /// The VMID the clone was sent to.
        newid: u32,
        /// Node, when the call names one.
        node: String,
        #[source]
        /// The underlying error.
        source: Box<PveError>,
    },
    /// The task's status could not be read until the deadline (resets, timeouts, 5xx on
    /// `GET …/tasks/{upid}/status`): it may have finished either way. Re-read the cluster
    /// before doing anything the task would have done.
    #[error("task {upid} on node {}: status unreadable for {waited_ms} ms, outcome unknown (last error: {last})", upid.node)]
    TaskUnknown {
        /// The task.
        upid: Box<Upid>,
        /// How long we polled.
        waited_ms: u128,
        /// The last read error.
        last: String,
    },
    /// The response body is larger than the configured bound; it was not read further.
    #[error("{ctx}: response body exceeds the limit of {limit} bytes (if this answer is legitimate, raise the bound: HYOPS_PVE_MAX_RESPONSE_MIB for the hyops-pve CLI, `PveConfig::max_response_bytes` for the library)")]
    TooLarge {
        /// The failed call.
        ctx: Box<CallContext>,
        /// The bound in bytes.
        limit: u64,
    },
    /// A value the server returned is not what the schema says.
    #[error("{ctx}: unexpected value for {field}: {detail}")]
    Unexpected {
        /// The failed call.
        ctx: Box<CallContext>,
        /// The value that was unexpected.
        field: &'static str,
        /// What went wrong.
        detail: String,
    },
}

fn fmt_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n  log tail:\n    {}", tail.join("\n    "))
    }
}

/// What kind of failure an error is; drives the engine's next step (notes §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// 401: bad or expired credentials.
    Auth,
    /// 403: ACL.
    Permission,
    /// 400 parameter verification, with the per-field messages.
    Param {
        /// Parameter name → server message.
        fields: BTreeMap<String, String>,
    },
    /// `VM is locked (<holder>)`.
    Locked {
        /// The `lock:` value (`clone`, `backup`, `migrate`, …).
        holder: String,
    },
    /// `can't lock file '<path>' - got timeout` on a VM config flock.
    LockTimeout {
        /// The lock file path.
        path: String,
        /// The VMID of `lock-<vmid>.conf`.
        vmid: Option<u32>,
    },
    /// Storage lock contention (`pve-storage-<id>` flock or `cfs-lock 'storage-<id>'`).
    StorageLockTimeout {
        /// The storage id.
        storage: String,
    },
    /// Cluster quorum lost.
    NoQuorum,
    /// A clone to another node refused because a disk is on non-shared storage
    /// (`can't clone VM to node 'X' (VM uses local storage)`).
    LocalStorage,
    /// `can't remove VM N - protection mode enabled`.
    Protected,
    /// Something the call names does not exist or is not available on that node (a storage,
    /// a node, a snapshot): `… does not exist`, `… not available on node …`.
    Unavailable,
    /// TLS verification failed (certificate, CA or fingerprint pin): nothing was sent.
    Tls,
    /// The VMID is already used (`config file already exists`, `already exists on node`,
    /// pmxcfs `File exists`, nextid 400).
    VmIdTaken,
    /// The VM config is not on the node asked (wrong node, or the VM is gone), a task is not
    /// (yet) visible, or HTTP 404: re-resolve.
    NotFound,
    /// `digest` mismatch: re-read and re-plan.
    ChecksumMismatch,
    /// `VM N already running`: success for a start.
    AlreadyRunning,
    /// The guest agent is not (yet) answering.
    AgentNotReady,
    /// `shrinking disks is not supported`.
    ShrinkRefused,
    /// `VM quit/powerdown failed - got timeout`.
    ShutdownTimeout,
    /// `got no worker upid`: transient fork failure.
    NoWorkerUpid,
    /// 501: wrong path or method.
    NotImplemented,
    /// Transport failure of a read or proxy-hop code 595–599 (`code` when an HTTP code exists).
    Transport {
        /// The 595–599 code, if the proxy hop produced one.
        code: Option<u16>,
    },
    /// A write whose outcome is unknown (595/596/reset on a non-GET): re-read state first.
    WriteOutcomeUnknown,
    /// Any other 5xx.
    Server,
    /// A task failed for a reason not listed above.
    TaskFailed,
    /// A task exceeded its deadline (still running).
    Timeout,
    /// A task whose status could not be read until the deadline.
    TaskStatusUnknown,
    /// Client-side problem (configuration, decode, allocation gave up).
    Client,
}

impl ErrorClass {
    /// True when the one policy table ([`super::policy::disposition`]) says "retry".
    pub fn is_transient(&self) -> bool {
        super::policy::disposition(self) == crate::retry::Disposition::Transient
    }
}

fn between<'a>(msg: &'a str, start: &str, end: char) -> Option<&'a str> {
    let i = msg.find(start)? + start.len();
    let rest = &msg[i..];
    let j = rest.find(end)?;
    Some(&rest[..j])
}

/// Classify a Proxmox error message (HTTP message or task exit status).
/// `status` is the HTTP status when there is one; `write` says the call was not a GET.
pub fn classify_message(
    status: Option<u16>,
    message: &str,
    errors: &BTreeMap<String, String>,
    write: bool,
) -> ErrorClass {
    let all: String = std::iter::once(message.to_string())
        .chain(errors.values().cloned())
        .collect::<Vec<_>>()
        .join("\n");
    let m = all.as_str();
    if let Some(code @ 595..=599) = status {
        return if write {
            ErrorClass::WriteOutcomeUnknown
        } else {
            ErrorClass::Transport { code: Some(code) }
        };
    }
    if status == Some(401) {
        return ErrorClass::Auth;
    }
    if status == Some(403) || m.contains("Permission check failed") {
        return ErrorClass::Permission;
    }
    if let Some(holder) = between(m, "VM is locked (", ')') {
        return ErrorClass::Locked {
            holder: holder.to_string(),
        };
    }
    if let Some(path) = between(m, "can't lock file '", '\'') {
        if m.contains("got timeout") {
            if let Some(storage) = path
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_prefix("pve-storage-"))
            {
                return ErrorClass::StorageLockTimeout {
                    storage: storage.to_string(),
                };
            }
            let vmid = path
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_prefix("lock-"))
                .and_then(|f| f.strip_suffix(".conf"))
                .and_then(|n| n.parse().ok());
            return ErrorClass::LockTimeout {
                path: path.to_string(),
                vmid,
            };
        }
    }
    if let Some(storage) = between(m, "cfs-lock 'storage-", '\'') {
        if !m.contains("no quorum") {
            return ErrorClass::StorageLockTimeout {
                storage: storage.to_string(),
            };
        }
    }
    if m.contains("no quorum") {
        return ErrorClass::NoQuorum;
    }
    if m.contains("VM uses local storage") {
        return ErrorClass::LocalStorage;
    }
    if m.contains("protection mode enabled") {
        return ErrorClass::Protected;
    }
    if m.contains("config file already exists")
        || m.contains("already exists on node")
        || m.contains("failed: File exists")
        || (errors
            .get("vmid")
            .is_some_and(|v| v.contains("already exists")))
    {
        return ErrorClass::VmIdTaken;
    }
    if m.contains("unable to find configuration file for VM")
        || (m.contains("Configuration file '") && m.contains("does not exist"))
        || m.contains("no such task")
    {
        return ErrorClass::NotFound;
    }
    if m.contains("not available on node")
        || m.contains("does not exist")
        || m.contains("no such cluster node")
    {
        return ErrorClass::Unavailable;
    }
    if m.contains("checksum mismatch") {
        return ErrorClass::ChecksumMismatch;
    }
    if m.contains("already running") {
        return ErrorClass::AlreadyRunning;
    }
    if m.contains("QEMU guest agent is not running")
        || m.contains("No QEMU guest agent configured")
        || m.contains("'guest-ping' failed")
    {
        return ErrorClass::AgentNotReady;
    }
    if m.contains("shrinking disks is not supported") {
        return ErrorClass::ShrinkRefused;
    }
    if m.contains("powerdown failed - got timeout") {
        return ErrorClass::ShutdownTimeout;
    }
    if m.contains("got no worker upid") {
        return ErrorClass::NoWorkerUpid;
    }
    match status {
        Some(400) => ErrorClass::Param {
            fields: errors.clone(),
        },
        Some(404) => ErrorClass::NotFound,
        Some(501) => ErrorClass::NotImplemented,
        Some(s) if s >= 500 => ErrorClass::Server,
        Some(_) => ErrorClass::Client,
        None => ErrorClass::TaskFailed,
    }
}

impl PveError {
    /// Classify this error (notes §6).
    pub fn classify(&self) -> ErrorClass {
        match self {
            PveError::Api {
                ctx,
                status,
                message,
                errors,
            } => classify_message(Some(*status), message, errors, ctx.method != "GET"),
            PveError::Transport {
                write,
                connect,
                detail,
                ..
            } => {
                if is_tls_failure(detail) {
                    ErrorClass::Tls
                } else if *write && !*connect {
                    ErrorClass::WriteOutcomeUnknown
                } else {
                    ErrorClass::Transport { code: None }
                }
            }
            PveError::TaskFailed { exitstatus, .. } => {
                classify_message(None, exitstatus, &BTreeMap::new(), false)
            }
            PveError::TaskTimeout { .. } => ErrorClass::Timeout,
            PveError::TaskUnknown { .. } => ErrorClass::TaskStatusUnknown,
            PveError::Clone { source, .. } => source.classify(),
            PveError::Decode { .. }
            | PveError::TooLarge { .. }
            | PveError::Config { .. }
            | PveError::VmidExhausted { .. }
            | PveError::Unexpected { .. } => ErrorClass::Client,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            PveError::Clone { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// True when a transport error's text says certificate verification failed (rustls'
/// `invalid peer certificate`, our fingerprint pin, an unknown issuer, a name mismatch).
fn is_tls_failure(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("invalid peer certificate")
        || d.contains("certificate verify")
        || d.contains("does not match the pinned fingerprint")
        || d.contains("unknownissuer")
        || d.contains("notvalidforname")
}

/// Result type of the client.
pub type PveResult<T> = Result<T, PveError>;
