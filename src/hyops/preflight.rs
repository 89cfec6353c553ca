//! Preflight checks that need no Proxmox API: free disk under the runtime root (§2.8),
//! credentials present, template state ready, readiness marker. Returns structured checks;
//! `strict` makes every check mandatory. Knows nothing about Proxmox API calls or the planner.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use super::credentials::{load_proxmox_credentials, read_proxmox_ready};
use super::error::{HyopsError, Result};
use super::paths::RuntimeRoot;
use super::template::resolve_template;
use crate::secret::Secret;

/// Default `min_free_disk_mb`.
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 256;

/// One preflight check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub mandatory: bool,
}

/// The outcome of [`run_preflight_checks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightReport {
    pub checks: Vec<PreflightCheck>,
}

impl PreflightReport {
    /// False when any mandatory check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.mandatory)
    }
    /// The failed mandatory checks.
    pub fn failures(&self) -> Vec<&PreflightCheck> {
        self.checks
            .iter()
            .filter(|c| !c.ok && c.mandatory)
            .collect()
    }
}

/// Free megabytes (available to unprivileged users) on the filesystem holding `path`, or
/// its nearest existing ancestor.
pub fn free_disk_mb(path: &Path) -> Result<u64> {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| HyopsError::io(p, std::io::Error::other("path contains NUL")))?;
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(HyopsError::io(p, std::io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // field widths differ between platforms
    let bytes = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    Ok(bytes / (1024 * 1024))
}

/// The §2.8 disk check.
pub fn disk_check(root: &RuntimeRoot, min_free_mb: u64) -> PreflightCheck {
    let (ok, detail) = match free_disk_mb(root.path()) {
        Ok(free) if free >= min_free_mb => (true, format!("free={free}MB required>={min_free_mb}MB")),
        Ok(free) => (
            false,
            format!(
                "insufficient disk space under runtime root: free={free}MB required>={min_free_mb}MB ({})",
                root.path().display()
            ),
        ),
        Err(e) => (false, format!("cannot read free disk space: {e}")),
    };
    PreflightCheck {
        name: "disk:runtime_root".into(),
        ok,
        detail,
        mandatory: true,
    }
}

/// Inputs of [`run_preflight_checks`].
#[derive(Debug, Clone, Default)]
pub struct PreflightOptions<'a> {
    pub min_free_disk_mb: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub vault: Option<&'a BTreeMap<String, Secret>>,
    /// `template_state_ref` (+ key) to check, when the inputs use one.
    pub template_state_ref: Option<&'a str>,
    pub template_key: Option<&'a str>,
    pub strict: bool,
}

/// Run the API-free checks.
pub fn run_preflight_checks(root: &RuntimeRoot, opts: &PreflightOptions<'_>) -> PreflightReport {
    let mut checks = vec![disk_check(
        root,
        opts.min_free_disk_mb.unwrap_or(DEFAULT_MIN_FREE_DISK_MB),
    )];
    checks.push(
        match load_proxmox_credentials(root, &opts.env, opts.vault) {
            Ok(c) => PreflightCheck {
                name: "credentials:proxmox".into(),
                ok: true,
                detail: format!("node={} url={}", c.node, c.url),
                mandatory: true,
            },
            Err(e) => PreflightCheck {
                name: "credentials:proxmox".into(),
                ok: false,
                detail: e.to_string(),
                mandatory: true,
            },
        },
    );
    if let Some(r) = opts.template_state_ref.filter(|r| !r.trim().is_empty()) {
        checks.push(match resolve_template(root, r, opts.template_key) {
            Ok((id, _)) => PreflightCheck {
                name: format!("template:{r}"),
                ok: true,
                detail: format!("template_vm_id={id}"),
                mandatory: true,
            },
            Err(e) => PreflightCheck {
                name: format!("template:{r}"),
                ok: false,
                detail: e.to_string(),
                mandatory: true,
            },
        });
    }
    checks.push(match read_proxmox_ready(root) {
        Ok(Some(r)) if r.is_ready() => PreflightCheck {
            name: "readiness:proxmox".into(),
            ok: true,
            detail: format!("status=ready api_ip={}", r.api_ip.unwrap_or_default()),
            mandatory: false,
        },
        Ok(Some(r)) => PreflightCheck {
            name: "readiness:proxmox".into(),
            ok: false,
            detail: format!("meta/proxmox.ready.json status={}", r.status),
            mandatory: false,
        },
        Ok(None) => PreflightCheck {
            name: "readiness:proxmox".into(),
            ok: false,
            detail: "meta/proxmox.ready.json not found (run: hyops init proxmox)".into(),
            mandatory: false,
        },
        Err(e) => PreflightCheck {
            name: "readiness:proxmox".into(),
            ok: false,
            detail: e.to_string(),
            mandatory: false,
        },
    });
    if opts.strict {
        for c in &mut checks {
            c.mandatory = true;
        }
    }
    PreflightReport { checks }
}
