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
use crate::plan::desired::{
    indexed_key, is_snippet_file_of, DesiredNic, DesiredVm, IndexedKey, NetValue, OwnedSetting,
    RestartPolicy,
};
use crate::plan::observed::{ManagedVm, ObservedPool, ObservedVm, PowerState};
use crate::plan::props::{self, renders_as, NetParts, PropertyString};
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
    /// The desired model the plan was computed from, shared with the model the diff read
    /// (serialised as the model itself).
    pub desired: Option<std::sync::Arc<DesiredVm>>,
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
pub fn diff<D: SharedDesired>(
    desired: &BTreeMap<LogicalVmKey, D>,
    observed: &ObservedPool,
    allow_replace: bool,
) -> Result<Vec<VmPlan>, PlanError> {
    let mut plans = Vec::with_capacity(desired.len());
    let mut errors = Vec::new();
    // Both maps are ordered by key: walk them side by side rather than look each key up.
    let mut managed = observed.managed.iter().peekable();
    for (key, shared) in desired {
        let want = shared.model();
        while managed.next_if(|(k, _)| *k < key).is_some() {}
        match managed.next_if(|(k, _)| *k == key).map(|(_, have)| have) {
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
                let mut p = create_plan(want);
                p.desired = Some(shared.share());
                plans.push(p);
            }
            Some(have) => match diff_one(want, have, allow_replace) {
                Ok(mut p) => {
                    p.desired = Some(shared.share());
                    plans.push(p);
                }
                Err(e) => errors.push(e),
            },
        }
    }
    let mut wanted = desired.keys().peekable();
    for (key, have) in &observed.managed {
        while wanted.next_if(|k| *k < key).is_some() {}
        if wanted.next_if(|k| *k == key).is_some() {
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

/// A desired model as the diff's input holds it: a plan shares it when it is shared
/// already (`Arc`, the engine's) and copies it once otherwise.
pub trait SharedDesired {
    fn model(&self) -> &DesiredVm;
    fn share(&self) -> std::sync::Arc<DesiredVm>;
}

impl SharedDesired for DesiredVm {
    fn model(&self) -> &DesiredVm {
        self
    }
    fn share(&self) -> std::sync::Arc<DesiredVm> {
        std::sync::Arc::new(self.clone())
    }
}

impl SharedDesired for std::sync::Arc<DesiredVm> {
    fn model(&self) -> &DesiredVm {
        self
    }
    fn share(&self) -> std::sync::Arc<DesiredVm> {
        std::sync::Arc::clone(self)
    }
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
    let disk = want.boot_disk();
    match disk_decision(want.disk_size_gb, current) {
        DiskDecision::Grow {
            from_bytes,
            to_bytes,
        } => (
            Some(Resize {
                disk: disk.to_string(),
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
        // set by `diff` (shared with its input, not copied)
        desired: None,
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
            Ipv4Config::Static { address, .. } => Some(address),
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
                let same_addr = addr
                    .zip(ip.as_deref())
                    .is_some_and(|(a, ip)| renders_as(a, ip));
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
    let mut have_nics: BTreeMap<usize, (NetParts, Option<String>)> = BTreeMap::new();
    // The `netN` keys whose value parses (so an unchanged one need not be parsed again).
    let mut parsed_net_keys: Vec<&str> = Vec::new();
    for (k, v) in &vm.config {
        let Some(idx) = indexed(k, "net") else {
            continue;
        };
        let Some(parts) = props::net_parts(v) else {
            continue;
        };
        let ip = vm
            .config
            .get(indexed_key(IndexedKey::Ipconfig, idx).as_ref())
            .and_then(|c| props::find_value(c, "ip", None).map(str::to_string));
        parsed_net_keys.push(k);
        have_nics.insert(idx, (parts, ip));
    }
    let matched = match_nics(&want.nics, &have_nics);
    // The `netN` value each desired NIC is written with (keyed by its index; a later NIC
    // with the same index wins, as the owned keys do).
    let mut net_targets: Vec<(usize, NetValue<'_>)> = Vec::with_capacity(want.nics.len());
    for (j, nic) in want.nics.iter().enumerate() {
        let slot = || indexed_key(IndexedKey::Net, nic.index);
        let carried =
            matched[j].and_then(|m| have_nics.get(&m).and_then(|(p, _)| p.mac.as_deref()));
        match (matched[j], carried) {
            (Some(m), Some(mac)) if m != nic.index => notes.push(format!(
                "VM {}: MAC {mac} moves from net{m} to {} with its NIC ({}{})",
                want.key,
                slot(),
                nic.bridge,
                nic.vlan_tag
                    .map(|t| format!(", VLAN {t}"))
                    .unwrap_or_default()
            )),
            (None, _) if nic.mac.is_none() && have_nics.contains_key(&nic.index) => {
                notes.push(format!(
                    "VM {}: {} becomes a new NIC on {}; Proxmox gives it a new MAC",
                    want.key,
                    slot(),
                    nic.bridge
                ))
            }
            _ => {}
        }
        if let (Some(explicit), Some((p, _))) = (nic.mac, have_nics.get(&nic.index)) {
            let explicit = explicit.to_string();
            if p.mac.as_deref().is_some_and(|m| m != explicit) && matched[j] != Some(nic.index) {
                notes.push(format!(
                    "VM {}: {} MAC changes from {} to {explicit} (mac_address)",
                    want.key,
                    slot(),
                    p.mac.clone().unwrap_or_default()
                ));
            }
        }
        net_targets.push((
            nic.index,
            NetValue {
                nic,
                keep_mac: carried,
            },
        ));
    }
    for (m, (p, _)) in &have_nics {
        // not kept by any desired NIC
        if !matched.contains(&Some(*m)) {
            notes.push(format!(
                "VM {}: the NIC on net{m} ({}, MAC {}) is removed",
                want.key,
                p.bridge.clone().unwrap_or_default(),
                p.mac.clone().unwrap_or_else(|| "none".into())
            ));
        }
    }

    let settings = want.owned_settings();
    // Settings and config are both in key order: one walk finds each key's observed value.
    let mut observed_config = vm.config.iter().peekable();
    for setting in &settings {
        let key = setting.key();
        let k: &str = &key;
        while observed_config
            .next_if(|(have, _)| have.as_str() < k)
            .is_some()
        {}
        let before = observed_config
            .next_if(|(have, _)| have.as_str() == k)
            .map(|(_, v)| v.as_str());
        let net_target = match setting {
            OwnedSetting::Net(nic) => net_targets
                .iter()
                .rev()
                .find(|(index, _)| *index == nic.index)
                .map(|(_, target)| target),
            _ => None,
        };
        let unchanged = match net_target {
            Some(target) => net_matches(before, target, parsed_net_keys.contains(&k)),
            None => setting_matches(setting, k, before),
        };
        if unchanged {
            continue;
        }
        // Only a key that changes is rendered.
        let write_value = match (setting, net_target) {
            (OwnedSetting::Description(_), _) => merge_description(before, &setting.to_string()),
            (_, Some(target)) => target.to_string(),
            _ => setting.to_string(),
        };
        if is_cloudinit_key(k) {
            cloudinit_changed = true;
        }
        changes.push(FieldChange {
            field: k.to_string(),
            before: before.map(|b| display_value(k, b)),
            after: Some(display_value(k, &write_value)),
            needs_restart: running && !applies_live(&vm.config, k, Some(&write_value)),
        });
        config_set.insert(key.into_owned(), write_value);
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
    let wants_cicustom = settings
        .iter()
        .any(|s| matches!(s, OwnedSetting::Cicustom(_)));
    if let (false, Some(cc)) = (wants_cicustom, vm.config.get("cicustom")) {
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
        for k in vm.pending.keys() {
            if settings.iter().any(|s| s.key() == k.as_str())
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
        // set by `diff` (shared with its input, not copied)
        desired: None,
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

/// [`config_value_matches`] for one owned setting, without rendering its value where the
/// answer is the same: the number, CPU type and flag keys compare typed values, and for the
/// other keys an observed value that is already the exact text the plan would write
/// matches (their comparison is reflexive; `description` only when the text carries a
/// marker). Anything else is rendered and compared as before.
fn setting_matches(setting: &OwnedSetting<'_>, key: &str, observed: Option<&str>) -> bool {
    let Some(obs) = observed else {
        return config_value_matches(key, None, &setting.to_string());
    };
    let count = |obs: &str| {
        props::default_value_str(obs, "current")?
            .parse::<u64>()
            .ok()
    };
    match setting {
        // compared as text by `config_value_matches`
        OwnedSetting::Name(text) | OwnedSetting::Ostype(text) | OwnedSetting::Ciuser(text) => {
            obs == *text
        }
        OwnedSetting::Cicustom(text) => obs == text,
        OwnedSetting::Ipconfig(nic) => {
            nic.ipconfig_is(obs) || config_value_matches(key, Some(obs), &setting.to_string())
        }
        OwnedSetting::Tags(tags) => {
            joined_equals(tags, ";", obs)
                || config_value_matches(key, Some(obs), &setting.to_string())
        }
        OwnedSetting::Sshkeys(keys) => {
            joined_equals(keys, "\n", obs)
                || config_value_matches(key, Some(obs), &setting.to_string())
        }
        OwnedSetting::Cores(n) => count(obs) == Some(u64::from(*n)),
        OwnedSetting::Memory(n) => count(obs) == Some(*n),
        OwnedSetting::Cpu(cpu) => props::default_value_str(obs, "cputype") == Some(*cpu),
        OwnedSetting::Agent(on) | OwnedSetting::Onboot(on) => {
            props::bool_value(obs, "enabled") == Some(*on)
        }
        // `renders_as(setting, obs) && has_marker(obs)`: when `obs` is the rendered
        // description, whether it holds a marker is known from the marker's fields.
        OwnedSetting::Description(m) => {
            (m.is_description(obs) && m.description_has_marker())
                || config_value_matches(key, Some(obs), &setting.to_string())
        }
        _ => renders_as(setting, obs) || config_value_matches(key, Some(obs), &setting.to_string()),
    }
}

/// `items.join(sep) == text`, without joining.
fn joined_equals(items: &[String], sep: &str, text: &str) -> bool {
    let mut rest = text;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            match rest.strip_prefix(sep) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match rest.strip_prefix(item.as_str()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// [`props::net_matches`] of the observed `netN` against the value the plan would write:
/// the same text matches when it parses (the comparison is reflexive for parsable values).
/// `parses` is `props::net_parts(observed).is_some()`, known from reading the NICs.
fn net_matches(observed: Option<&str>, target: &NetValue<'_>, parses: bool) -> bool {
    observed.is_some_and(|obs| {
        (parses && renders_as(target, obs)) || props::net_matches(obs, &target.to_string())
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::model::{CloneMode, MacAddr};
    use crate::plan::marker::OwnershipMarker;
    use proptest::prelude::*;

    fn marker() -> OwnershipMarker {
        OwnershipMarker::test_sample(CloneMode::Linked)
    }

    fn nic(mac: bool, tag: Option<u16>, mtu: Option<u16>, ip: Option<&str>) -> DesiredNic {
        DesiredNic {
            index: 0,
            model: "virtio".into(),
            bridge: "vmbr0".into(),
            vlan_tag: tag,
            mac: mac.then_some(MacAddr([0xbc, 0x24, 0x11, 0, 0, 1])),
            firewall: tag.is_some(),
            mtu,
            ipv4: match ip {
                Some(a) => Ipv4Config::Static {
                    address: a.parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                },
                None => Ipv4Config::Dhcp,
            },
            ipam_pending: None,
        }
    }

    /// Observed values near what the settings below render: equal, reordered, with spaces,
    /// other cases and numbers, property-string forms and garbage.
    const OBSERVED: &[&str] = &[
        "", "0", "1", "2", "4", "8192", "current=8192", " 8192 ", "8192,hotplug=1", "yes", "OFF",
        "enabled=1,fstrim_cloned_disks=0", "enabled=0", "host", "cputype=host,flags=+aes",
        "host,flags=+aes", "x86-64-v2-AES", "l26", "dev-app-01", "opsadmin",
        "app;hyops-pve;onprem", "onprem;app;hyops-pve", "APP,hyops-pve onprem", "app;hyops-pve",
        "1.1.1.1 8.8.8.8", "1.1.1.1  8.8.8.8 ", "8.8.8.8 1.1.1.1",
        "ssh-ed25519 AAAA a@b\nssh-rsa BBBB c@d", "ssh-ed25519 AAAA a@b\n\nssh-rsa BBBB c@d\n",
        "ip=10.0.0.5/24,gw=10.0.0.1", "gw=10.0.0.1,ip=10.0.0.5/24", "ip=10.0.0.5/24", "ip=dhcp",
        "virtio=BC:24:11:00:00:01,bridge=vmbr0", "virtio,bridge=vmbr0",
        "virtio=BC:24:11:00:00:02,bridge=vmbr0,firewall=1,tag=10",
        "virtio=bc:24:11:00:00:01,bridge=vmbr0,firewall=1,mtu=9000,tag=10",
        "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,mtu=9000,tag=10",
        "e1000,bridge=vmbr0", "virtio,bridge=vmbr0,tag=0", "bogus=1",
        "Managed by hyops-pve (HybridOps platform-vm). Do not edit the marker line.\nhyops-pve:v1;env=dev;module=platform/onprem/platform-vm;slot=latest;key=app-01;template=9000;clone=linked",
        "my notes\nhyops-pve:v1;env=dev;module=platform/onprem/platform-vm;slot=latest;key=app-01;template=9000;clone=linked",
        "hyops-pve:v1;env=dev;key=app-01",
    ];

    fn settings<'a>(
        m: &'a OwnershipMarker,
        nics: &'a [DesiredNic],
        tags: &'a [String],
        ns: &'a [std::net::Ipv4Addr],
        keys: &'a [String],
    ) -> Vec<OwnedSetting<'a>> {
        let mut out = vec![
            OwnedSetting::Name("dev-app-01"),
            OwnedSetting::Cores(4),
            OwnedSetting::Cores(2),
            OwnedSetting::Memory(8192),
            OwnedSetting::Cpu("host"),
            OwnedSetting::Cpu("x86-64-v2-AES"),
            OwnedSetting::Agent(true),
            OwnedSetting::Agent(false),
            OwnedSetting::Onboot(true),
            OwnedSetting::Onboot(false),
            OwnedSetting::Ostype("l26"),
            OwnedSetting::Tags(tags),
            OwnedSetting::Description(m),
            OwnedSetting::Cicustom("user=local:snippets/x.yaml".into()),
            OwnedSetting::Nameserver(ns),
            OwnedSetting::Ciuser("opsadmin"),
            OwnedSetting::Sshkeys(keys),
        ];
        out.extend(nics.iter().map(OwnedSetting::Ipconfig));
        out
    }

    /// The typed comparison answers what the string comparison it replaces answers, for
    /// every setting against every observed value (and an absent one).
    #[test]
    fn typed_setting_comparison_agrees_with_the_string_comparison() {
        let m = marker();
        let nics = [
            nic(false, None, None, None),
            nic(true, Some(10), Some(9000), Some("10.0.0.5/24")),
        ];
        let tags: Vec<String> = vec!["app".into(), "hyops-pve".into(), "onprem".into()];
        let ns = ["1.1.1.1".parse().unwrap(), "8.8.8.8".parse().unwrap()];
        let keys: Vec<String> = vec!["ssh-ed25519 AAAA a@b".into(), "ssh-rsa BBBB c@d".into()];
        for s in settings(&m, &nics, &tags, &ns, &keys) {
            let key = s.key();
            let rendered = s.to_string();
            for obs in OBSERVED
                .iter()
                .copied()
                .map(Some)
                .chain([None, Some(&rendered[..])])
            {
                assert_eq!(
                    setting_matches(&s, &key, obs),
                    config_value_matches(&key, obs, &rendered),
                    "{key} = {rendered:?} against {obs:?}"
                );
            }
        }
        for n in &nics {
            for keep_mac in [None, Some("BC:24:11:00:00:01"), Some("BC:24:11:00:00:02")] {
                let target = NetValue { nic: n, keep_mac };
                let rendered = target.to_string();
                for obs in OBSERVED
                    .iter()
                    .copied()
                    .map(Some)
                    .chain([None, Some(&rendered[..])])
                {
                    let parses = obs.is_some_and(|o| props::net_parts(o).is_some());
                    assert_eq!(
                        net_matches(obs, &target, parses),
                        config_value_matches("net0", obs, &rendered),
                        "{rendered:?} against {obs:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn joined_equals_is_join_then_compare() {
        let items: Vec<String> = vec!["a".into(), "".into(), "bc".into()];
        for text in ["a;;bc", "a;bc", "a;;bc;", "", "a;;b", ";a;;bc"] {
            assert_eq!(
                joined_equals(&items, ";", text),
                items.join(";") == text,
                "{text:?}"
            );
        }
        assert!(joined_equals(&[], ";", ""));
        assert!(!joined_equals(&[], ";", "a"));
    }

    proptest! {
        #[test]
        fn joined_equals_agrees_with_join(items in prop::collection::vec("[ab;]{0,3}", 0..4), text in "[ab;]{0,8}") {
            prop_assert_eq!(joined_equals(&items, ";", &text), items.join(";") == text);
            prop_assert!(joined_equals(&items, ";", &items.join(";")));
        }

        #[test]
        fn typed_comparison_agrees_on_arbitrary_observed_values(
            obs in "[a-zA-Z0-9=,;:. /+\n-]{0,40}",
            n in 0u32..10,
        ) {
            let m = marker();
            let nics = [nic(false, Some(10), None, Some("10.0.0.5/24"))];
            let tags: Vec<String> = vec!["a".into(), "b".into()];
            let ns = ["1.1.1.1".parse().unwrap()];
            let keys: Vec<String> = vec!["k1".into(), "k2".into()];
            let mut all = settings(&m, &nics, &tags, &ns, &keys);
            all.push(OwnedSetting::Cores(n));
            all.push(OwnedSetting::Memory(u64::from(n)));
            for s in &all {
                let key = s.key();
                prop_assert_eq!(
                    setting_matches(s, &key, Some(&obs)),
                    config_value_matches(&key, Some(&obs), &s.to_string())
                );
            }
            let target = NetValue { nic: &nics[0], keep_mac: None };
            prop_assert_eq!(
                net_matches(Some(&obs), &target, props::net_parts(&obs).is_some()),
                config_value_matches("net0", Some(&obs), &target.to_string())
            );
        }
    }
}
