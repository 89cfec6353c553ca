//! Diff the desired pool against the observed one and produce per-VM actions. Pure: it reads
//! the two models and returns a [`Plan`]; it never calls Proxmox. Replacement happens only
//! where a change cannot be made in place (template, clone mode, an explicit VMID change).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inputs::model::LogicalVmKey;
use crate::plan::desired::{is_snippet_file_of, net_value, DesiredVm, BOOT_DISK};
use crate::plan::observed::{ManagedVm, ObservedPool, ObservedVm, PowerState};
use crate::plan::props::{self, PropertyString};

const GIB: u64 = 1024 * 1024 * 1024;

/// The primary action for one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmAction {
    Create,
    Update,
    Replace,
    Delete,
    Noop,
}

/// One changed config field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A disk grow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub disk: String,
    pub from_bytes: Option<u64>,
    pub to_bytes: u64,
}

/// Everything the executor must do for one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPlan {
    pub key: LogicalVmKey,
    pub physical_name: String,
    pub node: String,
    /// Existing VMID (update/replace/delete/noop) or the requested one (create), if any.
    pub vmid: Option<u32>,
    pub action: VmAction,
    /// Config changes shown to the operator.
    pub changes: Vec<FieldChange>,
    /// The exact config write: keys to set and keys to delete.
    pub config_set: BTreeMap<String, String>,
    pub config_delete: Vec<String>,
    pub resize: Option<Resize>,
    pub start: bool,
    /// Cloud-init keys changed on a VM that already ran: rebuild the drive after the write.
    pub regenerate_cloudinit: bool,
    pub replace_reasons: Vec<String>,
    /// Config digest the plan was computed from (apply refuses a stale plan).
    pub observed_digest: Option<String>,
    pub desired: Option<DesiredVm>,
}

impl VmPlan {
    /// True when this VM needs no API write.
    pub fn is_noop(&self) -> bool {
        self.action == VmAction::Noop
    }
}

/// Plan-time errors: the plan must not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("VM {key} (vmid {vmid}): disk {disk} is {current_gib} GiB but disk_size_gb asks for {requested_gib} GiB; Proxmox cannot shrink disks. Raise disk_size_gb to at least {current_gib} or replace the VM deliberately")]
    DiskShrink {
        key: String,
        vmid: u32,
        disk: String,
        current_gib: String,
        requested_gib: u64,
    },
    #[error("VM {key} (vmid {vmid}) must be replaced ({reasons}); replacement destroys the VM. Set inputs.allow_vm_set_replace=true when replacement is intentional")]
    ReplaceNotAllowed {
        key: String,
        vmid: u32,
        reasons: String,
    },
    #[error("VM {key} (vmid {vmid}, '{name}') is managed by this module slot but no longer requested; deleting it needs inputs.allow_vm_set_replace=true")]
    DeleteNotAllowed {
        key: String,
        vmid: u32,
        name: String,
    },
    #[error("inputs.vms[{key}].vm_id={vmid} is already used by VM '{name}' on node {node}, which hyops-pve does not own; choose another vm_id or remove it to let Proxmox pick one")]
    VmIdTaken {
        key: String,
        vmid: u32,
        name: String,
        node: String,
    },
    #[error("VM {key} (vmid {vmid}) is locked ({lock}) on node {node}; wait for the running task, or clear a stale lock with `qm unlock {vmid}` on the node, then plan again")]
    Locked {
        key: String,
        vmid: u32,
        node: String,
        lock: String,
    },
}

/// Counts by action, for the summary line and `--detailed-exitcode`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub noop: usize,
    pub resize: usize,
    pub start: usize,
}

impl PlanSummary {
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete + self.resize + self.start > 0
    }
}

/// Compute per-VM plans. `allow_replace` is `inputs.allow_vm_set_replace`.
pub fn diff(
    desired: &BTreeMap<LogicalVmKey, DesiredVm>,
    observed: &ObservedPool,
    allow_replace: bool,
) -> Result<Vec<VmPlan>, PlanError> {
    let mut plans = Vec::new();
    for (key, want) in desired {
        match observed.managed.get(key) {
            None => {
                if let Some(vmid) = want.requested_vmid {
                    if let Some((node, name)) = observed.all_vms.get(&vmid) {
                        return Err(PlanError::VmIdTaken {
                            key: key.0.clone(),
                            vmid,
                            name: name.clone(),
                            node: node.clone(),
                        });
                    }
                }
                plans.push(create_plan(want));
            }
            Some(have) => plans.push(diff_one(want, have, allow_replace)?),
        }
    }
    for (key, have) in &observed.managed {
        if desired.contains_key(key) {
            continue;
        }
        if !allow_replace {
            return Err(PlanError::DeleteNotAllowed {
                key: key.0.clone(),
                vmid: have.vm.vmid,
                name: have.vm.name.clone(),
            });
        }
        plans.push(delete_plan(key.clone(), &have.vm, Vec::new()));
    }
    for (key, dup) in &observed.duplicates {
        plans.push(delete_plan(
            LogicalVmKey(format!("{}#dup-{}", key.0, dup.vmid)),
            dup,
            vec![format!(
                "duplicate of {key}: an interrupted run cloned it twice; the lower VMID is kept"
            )],
        ));
    }
    Ok(plans)
}

/// Summary counts.
pub fn summarize(plans: &[VmPlan]) -> PlanSummary {
    let mut s = PlanSummary::default();
    for p in plans {
        match p.action {
            VmAction::Create => s.create += 1,
            VmAction::Update => s.update += 1,
            VmAction::Replace => s.replace += 1,
            VmAction::Delete => s.delete += 1,
            VmAction::Noop => s.noop += 1,
        }
        if p.action != VmAction::Create && p.action != VmAction::Replace {
            if p.resize.is_some() {
                s.resize += 1;
            }
            if p.start {
                s.start += 1;
            }
        }
    }
    s
}

fn delete_plan(key: LogicalVmKey, vm: &ObservedVm, reasons: Vec<String>) -> VmPlan {
    VmPlan {
        key,
        physical_name: vm.name.clone(),
        node: vm.node.clone(),
        vmid: Some(vm.vmid),
        action: VmAction::Delete,
        changes: Vec::new(),
        config_set: BTreeMap::new(),
        config_delete: Vec::new(),
        resize: None,
        start: false,
        regenerate_cloudinit: false,
        replace_reasons: reasons,
        observed_digest: Some(vm.digest.clone()),
        desired: None,
    }
}

fn create_plan(want: &DesiredVm) -> VmPlan {
    let config_set = want.owned_config();
    let changes = config_set
        .iter()
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            before: None,
            after: Some(display_value(k, v)),
        })
        .collect();
    VmPlan {
        key: want.key.clone(),
        physical_name: want.physical_name.0.clone(),
        node: want.node.clone(),
        vmid: want.requested_vmid,
        action: VmAction::Create,
        changes,
        config_set,
        config_delete: Vec::new(),
        resize: Some(Resize {
            disk: BOOT_DISK.to_string(),
            from_bytes: None,
            to_bytes: want.disk_size_gb * GIB,
        }),
        start: true,
        regenerate_cloudinit: false,
        replace_reasons: Vec::new(),
        observed_digest: None,
        desired: Some(want.clone()),
    }
}

fn diff_one(want: &DesiredVm, have: &ManagedVm, allow_replace: bool) -> Result<VmPlan, PlanError> {
    let vm = &have.vm;
    if let Some(lock) = &vm.lock {
        return Err(PlanError::Locked {
            key: want.key.0.clone(),
            vmid: vm.vmid,
            node: vm.node.clone(),
            lock: lock.clone(),
        });
    }
    // Changes that cannot be made in place.
    let mut reasons = Vec::new();
    if let Some(m) = &vm.marker {
        if m.template_vmid != want.template.vmid {
            reasons.push(format!(
                "template {} -> {}",
                m.template_vmid, want.template.vmid
            ));
        }
        if m.clone_mode != want.clone_mode {
            reasons.push(
                format!("clone_mode {:?} -> {:?}", m.clone_mode, want.clone_mode).to_lowercase(),
            );
        }
    }
    if let Some(id) = want.requested_vmid {
        if id != vm.vmid {
            reasons.push(format!("vm_id {} -> {}", vm.vmid, id));
        }
    }
    if vm.node != want.node {
        reasons.push(format!("node {} -> {}", vm.node, want.node));
    }
    if !reasons.is_empty() {
        if !allow_replace {
            return Err(PlanError::ReplaceNotAllowed {
                key: want.key.0.clone(),
                vmid: vm.vmid,
                reasons: reasons.join(", "),
            });
        }
        let mut plan = create_plan(want);
        plan.action = VmAction::Replace;
        plan.vmid = Some(vm.vmid);
        plan.replace_reasons = reasons;
        plan.observed_digest = Some(vm.digest.clone());
        return Ok(plan);
    }

    let mut changes = Vec::new();
    let mut config_set = BTreeMap::new();
    let mut config_delete = Vec::new();
    let mut cloudinit_changed = false;
    for (k, v) in want.owned_config() {
        let before = vm.config.get(&k);
        if config_value_matches(&k, before.map(String::as_str), &v) {
            continue;
        }
        let write_value = match k.as_str() {
            "description" => merge_description(before.map(String::as_str), &v),
            key if key.starts_with("net") => {
                // Keep the MAC Proxmox generated unless the operator asked for one.
                let keep_mac = before.and_then(|b| props::net_mac(b));
                let index: usize = key[3..].parse().unwrap_or(usize::MAX);
                match want.nics.iter().find(|n| n.index == index) {
                    Some(nic) => net_value(nic, keep_mac.as_deref()),
                    None => v.clone(),
                }
            }
            _ => v.clone(),
        };
        if is_cloudinit_key(&k) {
            cloudinit_changed = true;
        }
        changes.push(FieldChange {
            field: k.clone(),
            before: before.map(|b| display_value(&k, b)),
            after: Some(display_value(&k, &write_value)),
        });
        config_set.insert(k, write_value);
    }
    // NICs beyond the desired list go, with their ipconfig.
    for k in vm.config.keys() {
        if let Some(idx) = indexed(k, "net").or_else(|| indexed(k, "ipconfig")) {
            if idx >= want.nics.len() {
                if k.starts_with("ipconfig") {
                    cloudinit_changed = true;
                }
                changes.push(FieldChange {
                    field: k.clone(),
                    before: vm.config.get(k).cloned(),
                    after: None,
                });
                config_delete.push(k.clone());
            }
        }
    }
    // `cloud_init_mode: native` (or Windows) after snippets: drop our own `cicustom`, so the
    // guest gets the native keys again. A `cicustom` naming anything else is the operator's.
    let owned = want.owned_config();
    if let (None, Some(cc)) = (owned.get("cicustom"), vm.config.get("cicustom")) {
        let ours = cc.split(',').all(|part| {
            part.split_once('=')
                .and_then(|(_, vol)| vol.split_once(":snippets/"))
                .is_some_and(|(_, file)| is_snippet_file_of(&want.physical_name.0, file))
        });
        if ours {
            cloudinit_changed = true;
            changes.push(FieldChange {
                field: "cicustom".into(),
                before: Some(cc.clone()),
                after: None,
            });
            config_delete.push("cicustom".into());
        }
    }
    let resize = boot_disk_resize(want, vm)?;
    let start = vm.status == PowerState::Stopped;
    let action = if changes.is_empty() && resize.is_none() && !start {
        VmAction::Noop
    } else {
        VmAction::Update
    };
    Ok(VmPlan {
        key: want.key.clone(),
        physical_name: want.physical_name.0.clone(),
        node: vm.node.clone(),
        vmid: Some(vm.vmid),
        action,
        changes,
        config_set,
        config_delete,
        resize,
        start,
        regenerate_cloudinit: cloudinit_changed && vm.status == PowerState::Running,
        replace_reasons: Vec::new(),
        observed_digest: Some(vm.digest.clone()),
        desired: Some(want.clone()),
    })
}

fn boot_disk_resize(want: &DesiredVm, vm: &ObservedVm) -> Result<Option<Resize>, PlanError> {
    let wanted = want.disk_size_gb * GIB;
    let current = vm
        .config
        .get(BOOT_DISK)
        .and_then(|spec| props::disk_size_bytes(spec));
    match current {
        Some(cur) if cur > wanted => Err(PlanError::DiskShrink {
            key: want.key.0.clone(),
            vmid: vm.vmid,
            disk: BOOT_DISK.to_string(),
            current_gib: format_gib(cur),
            requested_gib: want.disk_size_gb,
        }),
        Some(cur) if cur == wanted => Ok(None),
        Some(cur) => Ok(Some(Resize {
            disk: BOOT_DISK.to_string(),
            from_bytes: Some(cur),
            to_bytes: wanted,
        })),
        // No size recorded: an absolute resize to the wanted size is a no-op or a grow, and
        // the task itself refuses a shrink.
        None => Ok(Some(Resize {
            disk: BOOT_DISK.to_string(),
            from_bytes: None,
            to_bytes: wanted,
        })),
    }
}

fn format_gib(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        (bytes / GIB).to_string()
    } else {
        format!("{:.2}", bytes as f64 / GIB as f64)
    }
}

fn indexed(key: &str, prefix: &str) -> Option<usize> {
    let rest = key.strip_prefix(prefix)?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn is_cloudinit_key(k: &str) -> bool {
    k.starts_with("ipconfig")
        || matches!(
            k,
            "ciuser" | "sshkeys" | "nameserver" | "searchdomain" | "cicustom"
        )
}

/// Keep the operator's own description lines; replace only our marker line.
fn merge_description(before: Option<&str>, desired: &str) -> String {
    let Some(before) = before else {
        return desired.to_string();
    };
    let own: Vec<&str> = before
        .lines()
        .filter(|l| !l.trim().starts_with("hyops-pve:") && !l.starts_with("Managed by hyops-pve"))
        .collect();
    if own.iter().all(|l| l.trim().is_empty()) {
        return desired.to_string();
    }
    format!("{}\n{}", own.join("\n").trim_end(), desired)
}

/// Values shown in the plan: sshkeys by key comment, never the full key text.
fn display_value(key: &str, value: &str) -> String {
    if key == "sshkeys" {
        let n = value.lines().filter(|l| !l.trim().is_empty()).count();
        return format!("<{n} ssh key(s)>");
    }
    value.to_string()
}

/// Semantic comparison of one owned key (lenient on what Proxmox returns).
pub fn config_value_matches(key: &str, observed: Option<&str>, desired: &str) -> bool {
    let Some(obs) = observed else {
        return match key {
            // Proxmox omits defaults: onboot=0 and agent=0 read back as absent.
            "onboot" | "agent" => desired == "0",
            _ => false,
        };
    };
    match key {
        "cores" | "memory" => {
            props::default_value(obs, "current").and_then(|v| v.parse::<u64>().ok())
                == desired.parse::<u64>().ok()
        }
        "cpu" => props::default_value(obs, "cputype").as_deref() == Some(desired),
        "agent" | "onboot" => {
            props::bool_value(obs, "enabled") == props::bool_value(desired, "enabled")
        }
        "tags" => props::tag_set(obs) == props::tag_set(desired),
        "description" => {
            use crate::plan::marker::OwnershipMarker;
            OwnershipMarker::parse_description(obs) == OwnershipMarker::parse_description(desired)
                && OwnershipMarker::parse_description(desired).is_some()
        }
        "nameserver" => {
            obs.split_whitespace().collect::<Vec<_>>()
                == desired.split_whitespace().collect::<Vec<_>>()
        }
        "sshkeys" => {
            let norm = |s: &str| -> Vec<String> {
                s.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            };
            norm(obs) == norm(desired)
        }
        k if k.starts_with("net") => props::net_matches(obs, desired),
        k if k.starts_with("ipconfig") => {
            PropertyString::parse(obs, None).canonical_pairs()
                == PropertyString::parse(desired, None).canonical_pairs()
        }
        _ => obs == desired,
    }
}
