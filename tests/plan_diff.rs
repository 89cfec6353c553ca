//! Planner behaviour on hand-built observed models: what is created, updated in place,
//! resized, replaced, deleted or left alone, and which VMs count as ours.

use std::collections::BTreeMap;

use hyops_pve::inputs::model::{LogicalVmKey, ModuleInputs};
use hyops_pve::inputs::{parse_overlay, resolve_py, LifecycleCommand, ResolveRequest};
use hyops_pve::plan::desired::{desired_vm, DesiredVm, TargetDefaults, TemplateRef};
use hyops_pve::plan::diff::{diff, summarize, PlanError, VmAction};
use hyops_pve::plan::marker::OwnershipMarker;
use hyops_pve::plan::observed::{
    classify, ObservedVm, Ownership, PowerState, PriorIds, ResourceRow,
};

const OVERLAY: &str = r#"
require_ipam: false
template_vm_id: 9000
cpu_cores: 2
memory_mb: 2048
disk_size_gb: 40
tags: [platform, onprem]
vms:
  app-01:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}
  app-02:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.12/24, gateway: 10.20.0.1}
"#;

fn inputs(extra: &str) -> ModuleInputs {
    let text = format!("{OVERLAY}\n{extra}");
    let overlay = parse_overlay(&text).unwrap();
    let mut req = ResolveRequest::new(LifecycleCommand::Plan);
    req.runtime_env = Some("dev".into());
    resolve_py(&req, &overlay).1.unwrap().model
}

fn defaults() -> TargetDefaults {
    TargetDefaults {
        node: "pve1".into(),
        datastore: "local-lvm".into(),
        snippets_datastore: "local".into(),
        network_bridge: "vmbr0".into(),
        ssh_username: "opsadmin".into(),
        ssh_public_key: Some("ssh-ed25519 AAAAC3Nza+/= ops@example".into()),
    }
}

fn identity(key: &str) -> OwnershipMarker {
    OwnershipMarker {
        env: "dev".into(),
        slot: "latest".into(),
        module_ref: "platform/onprem/platform-vm".into(),
        key: key.into(),
        template_vmid: 9000,
        clone_mode: Default::default(),
    }
}

fn desired(inp: &ModuleInputs) -> BTreeMap<LogicalVmKey, DesiredVm> {
    let tpl = TemplateRef {
        vmid: 9000,
        node: "pve1".into(),
        boot_disk: "scsi0".into(),
        disk_bytes: Some(32 << 30),
        storages: vec!["local-lvm".into()],
        sockets: None,
    };
    inp.vms
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                desired_vm(
                    inp,
                    v,
                    &defaults(),
                    &tpl,
                    identity(&k.0),
                    &Default::default(),
                )
                .unwrap(),
            )
        })
        .collect()
}

/// What Proxmox would return for a VM that exactly matches `want`.
fn observed_from(want: &DesiredVm, vmid: u32) -> ObservedVm {
    let mut config = want.owned_config();
    for nic in &want.nics {
        config.insert(
            format!("net{}", nic.index),
            format!(
                "virtio=BC:24:11:00:00:{:02X},bridge={}",
                vmid % 256,
                nic.bridge
            ),
        );
    }
    // Proxmox returns tags in its own order and the disk with its size.
    config.insert(
        "tags".into(),
        want.tags
            .iter()
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(";"),
    );
    config.insert(
        "scsi0".into(),
        format!("local-lvm:vm-{vmid}-disk-0,size={}G", want.disk_size_gb),
    );
    ObservedVm {
        vmid,
        node: want.node.clone(),
        name: want.physical_name.0.clone(),
        status: PowerState::Running,
        lock: None,
        config,
        digest: format!("digest-{vmid}"),
        marker: Some(want.marker.clone()),
        pending: BTreeMap::new(),
    }
}

/// Every desired VM as Proxmox would return it, VMIDs from 100.
fn observed_all(d: &BTreeMap<LogicalVmKey, DesiredVm>) -> Vec<ObservedVm> {
    d.values()
        .enumerate()
        .map(|(i, w)| observed_from(w, 100 + i as u32))
        .collect()
}

fn rows_for(vms: &[&ObservedVm]) -> Vec<ResourceRow> {
    vms.iter()
        .map(|v| ResourceRow {
            vmid: v.vmid,
            node: v.node.clone(),
            name: v.name.clone(),
            status: v.status,
            template: false,
            lock: None,
            tags: vec!["hyops-pve".into()],
        })
        .collect()
}

fn pool_of(vms: Vec<ObservedVm>) -> hyops_pve::plan::observed::ObservedPool {
    let refs: Vec<&ObservedVm> = vms.iter().collect();
    let rows = rows_for(&refs);
    classify(&identity(""), &rows, vms.clone(), &PriorIds::default())
}

#[test]
fn absent_vms_are_created() {
    let d = desired(&inputs(""));
    let plans = diff(&d, &pool_of(vec![]), false).unwrap();
    assert_eq!(plans.len(), 2);
    assert!(plans
        .iter()
        .all(|p| p.action == VmAction::Create && p.start));
    assert_eq!(summarize(&plans).create, 2);
}

#[test]
fn matching_vms_are_noop_even_with_reordered_tags_and_generated_macs() {
    let d = desired(&inputs(""));
    let obs = observed_all(&d);
    let plans = diff(&d, &pool_of(obs), false).unwrap();
    assert!(
        plans.iter().all(|p| p.action == VmAction::Noop),
        "{plans:#?}"
    );
    assert!(!summarize(&plans).has_changes());
}

#[test]
fn changed_cores_is_an_in_place_update_of_that_field_only() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let after = desired(&inputs("cpu_cores: 4"));
    let plans = diff(&after, &pool_of(obs), false).unwrap();
    for p in &plans {
        assert_eq!(p.action, VmAction::Update);
        let fields: Vec<&str> = p.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["cores"]);
        assert_eq!(p.config_set.get("cores").map(String::as_str), Some("4"));
    }
}

#[test]
fn changed_bridge_keeps_the_generated_mac() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let mut after = desired(&inputs(""));
    for d in after.values_mut() {
        d.nics[0].bridge = "vmbr1".into();
    }
    let plans = diff(&after, &pool_of(obs), false).unwrap();
    let net0 = plans[0].config_set.get("net0").unwrap();
    assert!(
        net0.starts_with("virtio=BC:24:11:00:00:64,bridge=vmbr1"),
        "{net0}"
    );
}

#[test]
fn growing_the_disk_is_a_resize_and_a_smaller_size_keeps_the_disk_with_a_note() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let grown = diff(
        &desired(&inputs("disk_size_gb: 60")),
        &pool_of(obs.clone()),
        false,
    )
    .unwrap();
    let r = grown[0].resize.as_ref().unwrap();
    assert_eq!(r.to_bytes, 60 * 1024 * 1024 * 1024);
    assert_eq!(grown[0].action, VmAction::Update);
    let smaller = diff(&desired(&inputs("disk_size_gb: 20")), &pool_of(obs), false).unwrap();
    assert_eq!(
        smaller[0].action,
        VmAction::Noop,
        "disk_size_gb is 'at least'"
    );
    assert!(smaller[0].resize.is_none());
    assert!(
        smaller[0].notes[0].contains("disk_size_gb is 20 but boot disk scsi0 is already 40 GiB"),
        "{:?}",
        smaller[0].notes
    );
}

#[test]
fn removing_a_vm_needs_allow_vm_set_replace() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let mut after = before.clone();
    after.remove(&LogicalVmKey("app-02".into()));
    let err = diff(&after, &pool_of(obs.clone()), false).unwrap_err();
    assert!(matches!(err, PlanError::DeleteNotAllowed { .. }), "{err}");
    let plans = diff(&after, &pool_of(obs), true).unwrap();
    assert!(plans
        .iter()
        .any(|p| p.key.0 == "app-02" && p.action == VmAction::Delete));
}

#[test]
fn template_change_is_a_replacement_that_needs_allow_vm_set_replace() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let mut after = before.clone();
    for d in after.values_mut() {
        d.template.vmid = 9100;
        d.marker.template_vmid = 9100;
    }
    // both VMs need replacing: both refusals are reported at once
    match diff(&after, &pool_of(obs.clone()), false) {
        Err(PlanError::Several(errs)) => {
            assert_eq!(errs.len(), 2);
            assert!(errs
                .iter()
                .all(|e| matches!(e, PlanError::ReplaceNotAllowed { .. })));
        }
        other => panic!("expected two ReplaceNotAllowed, got {other:?}"),
    }
    let plans = diff(&after, &pool_of(obs), true).unwrap();
    assert!(plans.iter().all(|p| p.action == VmAction::Replace));
}

#[test]
fn a_foreign_vm_with_our_name_but_no_marker_is_not_ours() {
    let d = desired(&inputs(""));
    let mut foreign = observed_from(d.values().next().unwrap(), 555);
    foreign.marker = None;
    foreign.config.remove("description");
    let pool = pool_of(vec![foreign]);
    assert!(pool.managed.is_empty());
    let plans = diff(&d, &pool, false).unwrap();
    assert!(plans.iter().all(|p| p.action == VmAction::Create));
}

#[test]
fn a_vm_with_another_envs_marker_is_never_adopted_even_if_prior_state_names_it() {
    let d = desired(&inputs(""));
    let mut other = observed_from(d.values().next().unwrap(), 321);
    if let Some(m) = other.marker.as_mut() {
        m.env = "prod".into();
    }
    let mut prior = PriorIds::default();
    prior.hyops.insert(
        LogicalVmKey("app-01".into()),
        (321, Some(other.name.clone())),
    );
    let rows = rows_for(&[&other]);
    let pool = classify(&identity(""), &rows, vec![other], &prior);
    assert!(pool.managed.is_empty());
    assert!(pool.warnings.iter().any(|w| w.contains("not adopting")));
}

#[test]
fn a_terraform_created_vm_without_marker_is_adopted_from_prior_state() {
    let d = desired(&inputs(""));
    let mut tf = observed_from(d.values().next().unwrap(), 4242);
    tf.marker = None;
    tf.config.remove("description");
    let mut prior = PriorIds::default();
    prior.terraform.insert(LogicalVmKey("app-01".into()), 4242);
    let rows = rows_for(&[&tf]);
    let pool = classify(&identity(""), &rows, vec![tf], &prior);
    let m = pool.managed.get(&LogicalVmKey("app-01".into())).unwrap();
    assert_eq!(m.ownership, Ownership::TerraformState);
    // Adoption writes our marker into the description.
    let plans = diff(&d, &pool, false).unwrap();
    let p = plans.iter().find(|p| p.key.0 == "app-01").unwrap();
    assert!(p.config_set.contains_key("description"));
}

#[test]
fn a_vm_recorded_in_state_under_another_name_is_not_adopted() {
    let d = desired(&inputs(""));
    let mut vm = observed_from(d.values().next().unwrap(), 777);
    vm.marker = None;
    vm.config.remove("description");
    vm.name = "somebody-else".into();
    let mut prior = PriorIds::default();
    prior.hyops.insert(
        LogicalVmKey("app-01".into()),
        (777, Some("dev-app-01".into())),
    );
    let rows = rows_for(&[&vm]);
    let pool = classify(&identity(""), &rows, vec![vm], &prior);
    assert!(pool.managed.is_empty());
}

#[test]
fn ipconfig_change_is_in_place_and_marks_cloud_init_regeneration_on_a_running_vm() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let mut after = before.clone();
    for d in after.values_mut() {
        d.nics[0].ipv4 = hyops_pve::inputs::model::Ipv4Config::Static {
            address: "10.20.0.99/24".parse().unwrap(),
            gateway: Some("10.20.0.1".parse().unwrap()),
        };
    }
    let plans = diff(&after, &pool_of(obs), false).unwrap();
    assert!(plans
        .iter()
        .all(|p| p.action == VmAction::Update && p.regenerate_cloudinit));
    assert_eq!(
        plans[0].config_set.get("ipconfig0").unwrap(),
        "ip=10.20.0.99/24,gw=10.20.0.1"
    );
}

#[test]
fn a_second_vm_with_the_same_marker_is_a_duplicate_the_plan_deletes() {
    let d = desired(&inputs(""));
    let first = observed_from(d.values().next().unwrap(), 100);
    let dup = observed_from(d.values().next().unwrap(), 105);
    let pool = pool_of(vec![first, dup]);
    assert_eq!(
        pool.managed
            .get(&LogicalVmKey("app-01".into()))
            .unwrap()
            .vm
            .vmid,
        100
    );
    assert_eq!(pool.duplicates.len(), 1);
    let plans = diff(&d, &pool, false).unwrap();
    let del: Vec<_> = plans
        .iter()
        .filter(|p| p.action == VmAction::Delete)
        .collect();
    assert_eq!(del.len(), 1);
    assert_eq!(del[0].vmid, Some(105));
}

// ------------------------------------------------------------------ issue 8: identity, pending,
// protection, boot disk

const THREE_NICS: &str = r#"
vms:
  app-01:
    role: app
    interfaces:
      - bridge: vmbr0
        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}
      - bridge: vmbr1
        ipv4: {address: 10.21.0.11/24}
      - bridge: vmbr2
        ipv4: {address: 10.22.0.11/24}
"#;

/// One VM observed with NICs `(bridge, mac, ip)` on net0, net1, …
fn observed_with_nics(want: &DesiredVm, nics: &[(&str, &str, &str)]) -> ObservedVm {
    let mut o = observed_from(want, 100);
    o.config
        .retain(|k, _| !k.starts_with("net") && !k.starts_with("ipconfig"));
    for (i, (bridge, mac, ip)) in nics.iter().enumerate() {
        o.config
            .insert(format!("net{i}"), format!("virtio={mac},bridge={bridge}"));
        o.config.insert(format!("ipconfig{i}"), format!("ip={ip}"));
    }
    o
}

fn one_vm(extra: &str) -> BTreeMap<LogicalVmKey, DesiredVm> {
    let text = format!("require_ipam: false\ntemplate_vm_id: 9000\n{extra}");
    let overlay = parse_overlay(&text).unwrap();
    let mut req = ResolveRequest::new(LifecycleCommand::Plan);
    req.runtime_env = Some("dev".into());
    desired(&resolve_py(&req, &overlay).1.unwrap().model)
}

const MAC_A: &str = "BC:24:11:00:00:0A";
const MAC_B: &str = "BC:24:11:00:00:0B";
const MAC_C: &str = "BC:24:11:00:00:0C";

fn three_observed(want: &DesiredVm) -> ObservedVm {
    observed_with_nics(
        want,
        &[
            ("vmbr0", MAC_A, "10.20.0.11/24,gw=10.20.0.1"),
            ("vmbr1", MAC_B, "10.21.0.11/24"),
            ("vmbr2", MAC_C, "10.22.0.11/24"),
        ],
    )
}

#[test]
fn removing_nic_k_never_changes_another_nics_mac() {
    let before = one_vm(THREE_NICS);
    let obs = three_observed(before.values().next().unwrap());
    let after = one_vm(&THREE_NICS.replace(
        "      - bridge: vmbr1\n        ipv4: {address: 10.21.0.11/24}\n",
        "",
    ));
    let plans = diff(&after, &pool_of(vec![obs]), false).unwrap();
    let p = &plans[0];
    assert!(!p.config_set.contains_key("net0"), "net0 untouched: {p:#?}");
    assert_eq!(
        p.config_set.get("net1").map(String::as_str),
        Some(format!("virtio={MAC_C},bridge=vmbr2").as_str()),
        "the vmbr2 NIC keeps its MAC on its new slot"
    );
    assert_eq!(p.config_delete, vec!["ipconfig2", "net2"]);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains(&format!("MAC {MAC_C} moves from net2 to net1"))),
        "{:?}",
        p.notes
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains(&format!("net1 (vmbr1, MAC {MAC_B}) is removed"))),
        "{:?}",
        p.notes
    );
}

#[test]
fn inserting_a_nic_first_moves_no_mac_to_another_nic() {
    let before = one_vm(THREE_NICS);
    let obs = three_observed(before.values().next().unwrap());
    let after = one_vm(&THREE_NICS.replace(
        "    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}\n",
        "    interfaces:\n      - bridge: vmbr3\n        ipv4: {address: 10.23.0.11/24, gateway: 10.23.0.1}\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.11/24}\n",
    ));
    let plans = diff(&after, &pool_of(vec![obs]), false).unwrap();
    let p = &plans[0];
    let mac_of = |k: &str| {
        p.config_set
            .get(k)
            .and_then(|v| v.split(',').next())
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(
        mac_of("net0"),
        "virtio",
        "the new NIC gets a MAC from Proxmox"
    );
    assert_eq!(mac_of("net1"), format!("virtio={MAC_A}"));
    assert_eq!(mac_of("net2"), format!("virtio={MAC_B}"));
    assert_eq!(mac_of("net3"), format!("virtio={MAC_C}"));
}

#[test]
fn two_nics_on_one_bridge_are_told_apart_by_their_address() {
    let yaml = "vms:\n  app-01:\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.11/24, gateway: 10.20.0.1}\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.12/24}\n";
    let before = one_vm(yaml);
    let obs = observed_with_nics(
        before.values().next().unwrap(),
        &[
            ("vmbr0", MAC_A, "10.20.0.11/24,gw=10.20.0.1"),
            ("vmbr0", MAC_B, "10.20.0.12/24"),
        ],
    );
    // drop the first NIC: the remaining one is the .12 NIC, with its own MAC
    let after = one_vm(
        "vms:\n  app-01:\n    interfaces:\n      - bridge: vmbr0\n        ipv4: {address: 10.20.0.12/24, gateway: 10.20.0.1}\n",
    );
    let plans = diff(&after, &pool_of(vec![obs]), false).unwrap();
    assert!(
        plans[0].config_set["net0"].starts_with(&format!("virtio={MAC_B},bridge=vmbr0")),
        "{:#?}",
        plans[0]
    );
}

#[test]
fn an_explicit_mac_identifies_its_nic_wherever_it_is() {
    let before = one_vm(THREE_NICS);
    let obs = three_observed(before.values().next().unwrap());
    let after = one_vm(&format!(
        "vms:\n  app-01:\n    interfaces:\n      - bridge: vmbr2\n        mac_address: {MAC_C}\n        ipv4: {{address: 10.22.0.11/24, gateway: 10.22.0.1}}\n"
    ));
    let plans = diff(&after, &pool_of(vec![obs]), false).unwrap();
    assert!(plans[0].config_set["net0"].starts_with(&format!("virtio={MAC_C},bridge=vmbr2")));
}

#[test]
fn values_pending_on_a_running_vm_need_a_restart() {
    let d = desired(&inputs(""));
    let mut obs = observed_all(&d);
    obs[0].pending.insert(
        "cores".into(),
        hyops_pve::plan::observed::PendingValue {
            current: Some("1".into()),
            pending: Some("2".into()),
        },
    );
    let plans = diff(&d, &pool_of(obs.clone()), false).unwrap();
    let p = &plans[0];
    assert_eq!(p.action, VmAction::Update);
    assert_eq!(p.restart.as_ref().unwrap().keys, vec!["cores"]);
    assert!(p
        .changes
        .iter()
        .any(|c| c.field == "cores" && c.needs_restart));
    assert_eq!(summarize(&plans).restart, 1);
}

#[test]
fn restart_policy_defer_leaves_pending_values_with_a_note_and_no_change() {
    let d = desired(&inputs("restart_policy: defer"));
    let mut obs = observed_all(&d);
    obs[0].pending.insert(
        "memory".into(),
        hyops_pve::plan::observed::PendingValue {
            current: Some("1024".into()),
            pending: Some("2048".into()),
        },
    );
    let plans = diff(&d, &pool_of(obs), false).unwrap();
    assert_eq!(plans[0].action, VmAction::Noop, "{:#?}", plans[0]);
    assert!(plans[0].notes[0].contains("memory stay pending until the VM restarts"));
}

#[test]
fn raising_cores_on_a_running_vm_is_marked_needs_restart() {
    let before = desired(&inputs(""));
    let obs = observed_all(&before);
    let plans = diff(&desired(&inputs("cpu_cores: 4")), &pool_of(obs), false).unwrap();
    assert!(plans[0].changes[0].needs_restart);
    assert!(plans[0].restart.is_some());
}

#[test]
fn deleting_a_protected_vm_is_refused_with_the_way_out() {
    let d = desired(&inputs(""));
    let mut obs = observed_all(&d);
    obs[1].config.insert("protection".into(), "1".into());
    let fewer = desired(&inputs(
        "vms:\n  app-01:\n    interfaces: [{bridge: vmbr0}]\n",
    ));
    let err = diff(&fewer, &pool_of(obs), true).unwrap_err();
    assert!(matches!(err, PlanError::Protected { .. }), "{err}");
    assert!(
        err.to_string().contains("qm set 101 --protection 0"),
        "{err}"
    );
}

#[test]
fn the_resize_targets_the_templates_boot_disk() {
    let mut d = desired(&inputs("disk_size_gb: 64"));
    for w in d.values_mut() {
        w.template.boot_disk = "virtio0".into();
    }
    let mut obs = observed_all(&d);
    for o in &mut obs {
        let spec = o.config.remove("scsi0").unwrap();
        o.config
            .insert("virtio0".into(), spec.replace("size=64G", "size=32G"));
    }
    let plans = diff(&d, &pool_of(obs), false).unwrap();
    assert_eq!(plans[0].resize.as_ref().unwrap().disk, "virtio0");
    assert_eq!(plans[0].resize.as_ref().unwrap().from_bytes, Some(32 << 30));
    let created = diff(&d, &pool_of(vec![]), false).unwrap();
    assert_eq!(created[0].resize.as_ref().unwrap().disk, "virtio0");
}

#[test]
fn replacing_a_protected_vm_is_refused() {
    let before = desired(&inputs(""));
    let mut obs = observed_all(&before);
    obs[0].config.insert("protection".into(), "1".into());
    let mut after = before.clone();
    for d in after.values_mut() {
        d.template.vmid = 9100;
        d.marker.template_vmid = 9100;
    }
    let err = diff(&after, &pool_of(obs), true).unwrap_err();
    assert!(
        matches!(&err, PlanError::Protected { action, .. } if action.starts_with("replace")),
        "{err}"
    );
}
