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
fn growing_the_disk_is_a_resize_and_shrinking_is_a_plan_error() {
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
    let err = diff(&desired(&inputs("disk_size_gb: 20")), &pool_of(obs), false).unwrap_err();
    assert!(matches!(err, PlanError::DiskShrink { .. }));
    assert!(err.to_string().contains("cannot shrink"), "{err}");
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
    assert!(matches!(
        diff(&after, &pool_of(obs.clone()), false),
        Err(PlanError::ReplaceNotAllowed { .. })
    ));
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
