//! Diff the desired pool against the observed one and produce per-VM actions. Pure: it reads
//! the two models and returns the per-VM plans; it never calls Proxmox. Replacement happens
//! only where a change cannot be made in place (template, clone mode, an explicit VMID
//! change, the node). Besides the config writes it decides: the boot-disk size by the one
//! "at least" rule ([`disk_decision`]); which existing NIC each desired NIC is (explicit MAC,
//! then bridge and VLAN, then position), so a MAC follows its NIC; which changes a running
//! VM keeps pending and therefore need a restart (per `restart_policy`); and it refuses to
//! remove a VM with Proxmox's `protection` set. Every refusal is collected, not just the first.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::inputs::model::{Ipv4Config, LogicalVmKey};
use crate::plan::desired::{is_snippet_file_of, net_value, DesiredNic, DesiredVm, RestartPolicy};
use crate::plan::observed::{ManagedVm, ObservedPool, ObservedVm, PowerState};
use crate::plan::props::{self, NetParts, PropertyString};
use crate::plan::template::{disk_decision, format_gib, DiskDecision};
use crate::pve::hotplug::applies_live;

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
    /// A running VM takes this change only at its next start.
    #[serde(default)]
    pub needs_restart: bool,
}

/// A restart the apply performs (shutdown with a timeout, then start) so that a running VM
/// runs what the plan wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// The keys that wait for it.
    pub keys: Vec<String>,
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
    /// Restart the running VM after the writes (changes it would keep pending).
    #[serde(default)]
    pub restart: Option<Restart>,
    /// Plain-language notes for the operator (a MAC that moves, a disk larger than asked,
    /// changes left pending); each also goes into the plan's warnings once.
    #[serde(default)]
    pub notes: Vec<String>,
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
    #[error("VM {key} (vmid {vmid}, '{name}' on node {node}) has Proxmox protection enabled and the plan would {action} it; Proxmox refuses (\"can't remove VM {vmid} - protection mode enabled\"). If removing it is intended, turn protection off first (`qm set {vmid} --protection 0` on {node}, or Options > Protection in the GUI), then run again")]
    Protected {
        key: String,
        vmid: u32,
        name: String,
        node: String,
        action: &'static str,
    },
    #[error("{} problems; fix them all and run again:{}", .0.len(), .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Several(Vec<PlanError>),
}

impl PlanError {
    /// `Ok` for no errors, the error itself for one, [`PlanError::Several`] for more.
    pub fn collect(mut errors: Vec<PlanError>) -> Result<(), PlanError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(PlanError::Several(errors)),
        }
    }
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
    /// Running VMs the apply restarts so they run what was written.
    #[serde(default)]
    pub restart: usize,
}

impl PlanSummary {
    pub fn has_changes(&self) -> bool {
        self.create
            + self.update
            + self.replace
            + self.delete
            + self.resize
            + self.start
            + self.restart
            > 0
    }
}

/// Compute per-VM plans. `allow_replace` is `inputs.allow_vm_set_replace`. Every refusal
/// is reported (one error, or [`PlanError::Several`]).
pub fn diff(
    desired: &BTreeMap<LogicalVmKey, DesiredVm>,
    observed: &ObservedPool,
    allow_replace: bool,
) -> Result<Vec<VmPlan>, PlanError> {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for (key, want) in desired {
        match observed.managed.get(key) {
            None => {
                if let Some(vmid) = want.requested_vmid {
                    if let Some((node, name)) = observed.all_vms.get(&vmid) {
                        errors.push(PlanError::VmIdTaken {
                            key: key.0.clone(),
                            vmid,
                            name: name.clone(),
                            node: node.clone(),
                        });
                        continue;
                    }
                }
                plans.push(create_plan(want));
            }
            Some(have) => match diff_one(want, have, allow_replace) {
                Ok(p) => plans.push(p),
                Err(e) => errors.push(e),
            },
        }
    }
    for (key, have) in &observed.managed {
        if desired.contains_key(key) {
            continue;
        }
        if !allow_replace {
            errors.push(PlanError::DeleteNotAllowed {
                key: key.0.clone(),
                vmid: have.vm.vmid,
                name: have.vm.name.clone(),
            });
            continue;
        }
        if have.vm.protected() {
            errors.push(protected(&key.0, &have.vm, "delete"));
            continue;
        }
        plans.push(delete_plan(key.clone(), &have.vm, Vec::new()));
    }
    for (key, dup) in &observed.duplicates {
        if dup.protected() {
            errors.push(protected(&key.0, dup, "delete (a duplicate clone of)"));
            continue;
        }
        plans.push(delete_plan(
            LogicalVmKey(format!("{}#dup-{}", key.0, dup.vmid)),
            dup,
            vec![format!(
                "duplicate of {key}: an interrupted run cloned it twice; the lower VMID is kept"
            )],
        ));
    }
    PlanError::collect(errors)?;
    Ok(plans)
}

fn protected(key: &str, vm: &ObservedVm, action: &'static str) -> PlanError {
    PlanError::Protected {
        key: key.to_string(),
        vmid: vm.vmid,
        name: vm.name.clone(),
        node: vm.node.clone(),
        action,
    }
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
            if p.restart.is_some() {
                s.restart += 1;
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
        restart: None,
        notes: Vec::new(),
    }
}

/// The boot-disk resize (and the note when the disk is larger than asked) for a disk of
/// `current` bytes: the one [`disk_decision`] rule for create and update.
fn boot_disk_plan(want: &DesiredVm, current: Option<u64>) -> (Option<Resize>, Option<String>) {
    let disk = want.boot_disk().to_string();
    match disk_decision(want.disk_size_gb, current) {
        DiskDecision::Grow {
            from_bytes,
            to_bytes,
        } => (
            Some(Resize {
                disk,
                from_bytes,
                to_bytes,
            }),
            None,
        ),
        DiskDecision::Keep => (None, None),
        DiskDecision::Larger {
            current_bytes,
            requested_bytes,
        } => (
            None,
            Some(format!(
                "VM {}: disk_size_gb is {} but boot disk {disk} is already {} GiB; disks never shrink, so it stays {} GiB (outputs report the real size). Set disk_size_gb to {} or more to silence this",
                want.key,
                format_gib(requested_bytes),
                format_gib(current_bytes),
                format_gib(current_bytes),
                crate::plan::template::whole_gib(current_bytes),
            )),
        ),
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
            needs_restart: false,
        })
        .collect();
    let (resize, note) = boot_disk_plan(want, want.template.disk_bytes);
    let mut notes: Vec<String> = note.into_iter().collect();
    if let Some(m) = &want.route.migrate {
        notes.push(format!(
            "VM {}: cloned on the template's node {} (its disks are on local storage), then migrated offline to {}{}",
            want.key,
            want.route.clone_node,
            m.node,
            m.targetstorage
                .as_deref()
                .map(|s| format!(" onto storage {s}"))
                .unwrap_or_default()
        ));
    }
    VmPlan {
        key: want.key.clone(),
        physical_name: want.physical_name.0.clone(),
        node: want.node.clone(),
        vmid: want.requested_vmid,
        action: VmAction::Create,
        changes,
        config_set,
        config_delete: Vec::new(),
        resize,
        start: true,
        regenerate_cloudinit: false,
        replace_reasons: Vec::new(),
        observed_digest: None,
        desired: Some(want.clone()),
        restart: None,
        notes,
    }
}

/// Which observed `netN` each desired NIC is: an explicit MAC first; then the same bridge
/// and VLAN (ties broken by the same static address, then the same position); then the same
/// position among what is left. Returns, per desired NIC, the matched observed index.
pub fn match_nics(
    want: &[DesiredNic],
    have: &BTreeMap<usize, (NetParts, Option<String>)>,
) -> Vec<Option<usize>> {
    let mut out: Vec<Option<usize>> = vec![None; want.len()];
    let mut taken: BTreeSet<usize> = BTreeSet::new();
    // 1. explicit MAC
    for (j, nic) in want.iter().enumerate() {
        let Some(mac) = nic.mac else { continue };
        let mac = mac.to_string();
        if let Some((&m, _)) = have
            .iter()
            .find(|(m, (p, _))| !taken.contains(m) && p.mac.as_deref() == Some(mac.as_str()))
        {
            out[j] = Some(m);
            taken.insert(m);
        }
    }
    // 2. bridge + VLAN (address, then position, break ties)
    for (j, nic) in want.iter().enumerate() {
        if out[j].is_some() || nic.mac.is_some() {
            continue;
        }
        let addr = match &nic.ipv4 {
            Ipv4Config::Static { address, .. } => Some(address.to_string()),
            Ipv4Config::Dhcp => None,
        };
        let mut candidates: Vec<(u8, usize, usize)> = have
            .iter()
            .filter(|(m, (p, _))| {
                !taken.contains(m)
                    && p.bridge.as_deref() == Some(nic.bridge.as_str())
                    && p.tag == nic.vlan_tag
            })
            .map(|(&m, (_, ip))| {
                let same_addr = addr.is_some() && ip.as_deref() == addr.as_deref();
                (u8::from(!same_addr), m.abs_diff(j), m)
            })
            .collect();
        candidates.sort();
        if let Some(&(_, _, m)) = candidates.first() {
            out[j] = Some(m);
            taken.insert(m);
        }
    }
    // 3. position
    for (j, nic) in want.iter().enumerate() {
        if out[j].is_some() || nic.mac.is_some() {
            continue;
        }
        if have.contains_key(&j) && !taken.contains(&j) {
            out[j] = Some(j);
            taken.insert(j);
        }
    }
    out
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
        if vm.protected() {
            return Err(protected(
                &want.key.0,
                vm,
                "replace (destroy and re-create)",
            ));
        }
        let mut plan = create_plan(want);
        plan.action = VmAction::Replace;
        plan.vmid = Some(vm.vmid);
        // the VM to remove lives where it is, not where its replacement goes
        plan.node = vm.node.clone();
        plan.replace_reasons = reasons;
        plan.observed_digest = Some(vm.digest.clone());
        return Ok(plan);
    }

    let running = vm.status == PowerState::Running;
    let mut changes = Vec::new();
    let mut config_set = BTreeMap::new();
    let mut config_delete = Vec::new();
    let mut notes = Vec::new();
    let mut cloudinit_changed = false;

    // NIC identity: each desired NIC keeps the MAC of the NIC it is.
    let have_nics: BTreeMap<usize, (NetParts, Option<String>)> = vm
        .config
        .iter()
        .filter_map(|(k, v)| {
            let idx = indexed(k, "net")?;
            let parts = props::net_parts(v)?;
            let ip = vm
                .config
                .get(&format!("ipconfig{idx}"))
                .and_then(|c| PropertyString::parse(c, None).get("ip").map(str::to_string));
            Some((idx, (parts, ip)))
        })
        .collect();
    let matched = match_nics(&want.nics, &have_nics);
    let mut net_values: BTreeMap<String, String> = BTreeMap::new();
    for (j, nic) in want.nics.iter().enumerate() {
        let slot = format!("net{}", nic.index);
        let carried = matched[j].and_then(|m| have_nics.get(&m).and_then(|(p, _)| p.mac.clone()));
        let value = net_value(nic, carried.as_deref());
        match (matched[j], &carried) {
            (Some(m), Some(mac)) if m != nic.index => notes.push(format!(
                "VM {}: MAC {mac} moves from net{m} to {slot} with its NIC ({}{})",
                want.key,
                nic.bridge,
                nic.vlan_tag
                    .map(|t| format!(", VLAN {t}"))
                    .unwrap_or_default()
            )),
            (None, _) if nic.mac.is_none() && have_nics.contains_key(&nic.index) => {
                notes.push(format!(
                    "VM {}: {slot} becomes a new NIC on {}; Proxmox gives it a new MAC",
                    want.key, nic.bridge
                ))
            }
            _ => {}
        }
        if let (Some(explicit), Some((p, _))) = (nic.mac, have_nics.get(&nic.index)) {
            let explicit = explicit.to_string();
            if p.mac.as_deref().is_some_and(|m| m != explicit) && matched[j] != Some(nic.index) {
                notes.push(format!(
                    "VM {}: {slot} MAC changes from {} to {explicit} (mac_address)",
                    want.key,
                    p.mac.clone().unwrap_or_default()
                ));
            }
        }
        net_values.insert(slot, value);
    }
    let kept: BTreeSet<usize> = matched.iter().flatten().copied().collect();
    for (m, (p, _)) in &have_nics {
        if !kept.contains(m) {
            notes.push(format!(
                "VM {}: the NIC on net{m} ({}, MAC {}) is removed",
                want.key,
                p.bridge.clone().unwrap_or_default(),
                p.mac.clone().unwrap_or_else(|| "none".into())
            ));
        }
    }

    for (k, v) in want.owned_config() {
        let before = vm.config.get(&k);
        let target = net_values.get(&k).cloned().unwrap_or_else(|| v.clone());
        if config_value_matches(&k, before.map(String::as_str), &target) {
            continue;
        }
        let write_value = match k.as_str() {
            "description" => merge_description(before.map(String::as_str), &v),
            _ => target,
        };
        if is_cloudinit_key(&k) {
            cloudinit_changed = true;
        }
        changes.push(FieldChange {
            field: k.clone(),
            before: before.map(|b| display_value(&k, b)),
            after: Some(display_value(&k, &write_value)),
            needs_restart: running && !applies_live(&vm.config, &k, Some(&write_value)),
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
                    needs_restart: running && !applies_live(&vm.config, k, None),
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
                needs_restart: false,
            });
            config_delete.push("cicustom".into());
        }
    }
    let current = vm
        .config
        .get(want.boot_disk())
        .and_then(|spec| props::disk_size_bytes(spec));
    let (resize, disk_note) = boot_disk_plan(want, current);
    notes.extend(disk_note);

    // What the running VM will not run until it restarts: keys already pending, and the
    // planned changes it cannot take live.
    let mut restart_keys: BTreeSet<String> = BTreeSet::new();
    if running {
        let owned = want.owned_config();
        for k in vm.pending.keys() {
            if owned.contains_key(k)
                || indexed(k, "net").is_some()
                || indexed(k, "ipconfig").is_some()
            {
                restart_keys.insert(k.clone());
            } else {
                notes.push(format!(
                    "VM {}: {k} is pending on Proxmox (not set by hyops-pve); the VM's next restart applies it",
                    want.key
                ));
            }
        }
        restart_keys.extend(
            changes
                .iter()
                .filter(|c| c.needs_restart)
                .map(|c| c.field.clone()),
        );
        for (k, p) in &vm.pending {
            if restart_keys.contains(k) && !changes.iter().any(|c| &c.field == k) {
                changes.push(FieldChange {
                    field: k.clone(),
                    before: p.current.as_deref().map(|b| display_value(k, b)),
                    after: p.pending.as_deref().map(|a| display_value(k, a)),
                    needs_restart: true,
                });
            }
        }
    }
    let restart = if restart_keys.is_empty() {
        None
    } else {
        let keys: Vec<String> = restart_keys.into_iter().collect();
        match want.restart_policy {
            RestartPolicy::Restart => Some(Restart { keys }),
            RestartPolicy::Defer => {
                notes.push(format!(
                    "VM {}: {} stay pending until the VM restarts (restart_policy: defer); it runs the old values until then",
                    want.key,
                    keys.join(", ")
                ));
                None
            }
        }
    };
    let start = vm.status == PowerState::Stopped;
    let action = if config_set.is_empty()
        && config_delete.is_empty()
        && resize.is_none()
        && !start
        && restart.is_none()
    {
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
        regenerate_cloudinit: cloudinit_changed && running,
        replace_reasons: Vec::new(),
        observed_digest: Some(vm.digest.clone()),
        desired: Some(want.clone()),
        restart,
        notes,
    })
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
pub fn merge_description(before: Option<&str>, desired: &str) -> String {
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
