//! Catch before write (issue 8, kinds 1 and 2): values Proxmox would refuse, and values that
//! would inject into a property string or cloud-init, are refused before the plan with the
//! field, the value and the rule, every problem at once; an apply on the simulator then sends
//! nothing at all.

use crate::common;

use common::{Harness, DEMO};
use hyops_pve::commands::module::{apply_inner, validate_inner};
use hyops_pve::inputs::{resolve_inputs_with_overlay, LifecycleCommand, ResolveRequest};
use hyops_pve::plan::checks::{check_inputs, CheckFailure};
use hyops_pve::plan::desired::TargetDefaults;
use serde_json::{json, Value};

fn defaults() -> TargetDefaults {
    TargetDefaults {
        node: "pve1".into(),
        datastore: "local-lvm".into(),
        snippets_datastore: "local".into(),
        network_bridge: "vmbr0".into(),
        ssh_username: "opsadmin".into(),
        ssh_public_key: None,
    }
}

fn pool(extra: Value) -> Value {
    let mut v = json!({
        "require_ipam": false,
        "vms": {"app-01": {"interfaces": [{"bridge": "vmbr0"}]}}
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut v, extra) {
        for (k, x) in extra {
            base.insert(k, x);
        }
    }
    v
}

fn check(overlay: &Value) -> Result<(), CheckFailure> {
    let mut req = ResolveRequest::new(LifecycleCommand::Validate);
    req.runtime_env = Some("dev".into());
    let resolved = resolve_inputs_with_overlay(&req, overlay).expect("upstream rules pass");
    check_inputs(&resolved.model, Some(&defaults()))
}

fn problems(overlay: &Value) -> Vec<String> {
    match check(overlay) {
        Ok(()) => panic!("expected Proxmox-rule problems for {overlay}"),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_valid_pool_passes() {
    check(&pool(json!({}))).unwrap();
}

#[test]
fn a_vm_name_with_an_underscore_is_refused_naming_the_field() {
    let p = problems(&pool(json!({
        "vms": {"web-01": {"vm_name": "web_01", "interfaces": [{"bridge": "vmbr0"}]}}
    })));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("inputs.vms[web-01].vm_name=\"web_01\": Proxmox format dns-name"),
        "{}",
        p[0]
    );
}

#[test]
fn a_name_prefix_with_an_underscore_is_refused_for_every_vm() {
    let p = problems(&pool(json!({
        "name_prefix": "my_lab",
        "vms": {
            "app-01": {"interfaces": [{"bridge": "vmbr0"}]},
            "app-02": {"interfaces": [{"bridge": "vmbr0"}]}
        }
    })));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("inputs.name_prefix (makes the VM name of app-01)=\"my_lab-app-01\""),
        "{}",
        p[0]
    );
}

#[test]
fn a_multicast_mac_is_refused() {
    let p = problems(&pool(json!({
        "vms": {"app-01": {"interfaces": [{"bridge": "vmbr0", "mac_address": "A3:E9:00:00:00:01"}]}}
    })));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("A3:E9:00:00:00:01") && p[0].contains("unicast"),
        "{}",
        p[0]
    );
}

#[test]
fn a_disk_larger_than_qemu_can_hold_is_refused_not_saturated() {
    // 2^63-1 GiB became u64::MAX bytes (16 EiB) and reached the resize after the clone.
    let p = problems(&pool(json!({"disk_size_gb": 9223372036854775807u64})));
    assert_eq!(
        p,
        ["inputs.disk_size_gb=\"9223372036854775807\": Proxmox format disk size: 1 to 8589934591 GiB (QEMU's largest disk, 8 EiB)"]
    );
    check(&pool(json!({"disk_size_gb": 8589934591u64}))).unwrap();
}

#[test]
fn a_newline_in_ssh_username_is_refused() {
    let p = problems(&pool(json!({"ssh_username": "ops\nruncmd: [touch /x]\nx"})));
    assert!(p[0].starts_with("inputs.ssh_username="), "{p:?}");
    assert!(p[0].contains("Linux user name"), "{p:?}");
}

#[test]
fn a_newline_in_dns_domain_is_refused() {
    let p = problems(&pool(json!({"dns_domain": "lab\nruncmd: [touch /x]"})));
    assert!(p[0].starts_with("inputs.dns_domain="), "{p:?}");
}

#[test]
fn a_tag_with_a_separator_is_refused_because_it_would_add_a_tag() {
    let p = problems(&pool(json!({"tags": ["platform", "on prem;x"]})));
    assert!(p[0].starts_with("inputs.tags[2]="), "{p:?}");
}

#[test]
fn an_ssh_key_holding_two_lines_is_refused() {
    let p = problems(&pool(json!({
        "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx me\nssh-rsa AAAAB3NzaC1yc2EAAAADAQAB evil"]
    })));
    assert!(p[0].starts_with("inputs.ssh_keys[1]="), "{p:?}");
}

#[test]
fn vmid_below_100_and_mtu_below_576_are_refused() {
    let p = problems(&pool(json!({
        "vms": {"app-01": {"vm_id": 42, "interfaces": [{"bridge": "vmbr0", "mtu": 500}]}}
    })));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("inputs.vms[app-01].vm_id=\"42\""), "{p:?}");
    assert!(p[1].contains("mtu") && p[1].contains("576"), "{p:?}");
}

#[test]
fn two_vms_with_one_name_or_one_vmid_are_refused() {
    let p = problems(&pool(json!({
        "vms": {
            "a": {"vm_name": "web", "vm_id": 500, "interfaces": [{"bridge": "vmbr0"}]},
            "b": {"vm_name": "web", "vm_id": 500, "interfaces": [{"bridge": "vmbr0"}]}
        }
    })));
    assert!(
        p.iter()
            .any(|x| x.contains("a, b resolve to the same Proxmox VM name")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|x| x.contains("a, b ask for the same vm_id")),
        "{p:?}"
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let p = problems(&pool(json!({
        "name_prefix": "my_lab",
        "cpu_type": "host,flags=+aes",
        "os_type": "linux",
        "tags": ["Bad Tag"],
        "vms": {"app-01": {"role": "web server", "interfaces": [
            {"bridge": "vmbr0,tag=5", "mac_address": "A3:E9:00:00:00:01"}
        ]}}
    })));
    assert!(p.len() >= 7, "{p:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_with_a_refused_value_sends_nothing_to_proxmox() {
    let h = Harness::start().await;
    let bad = DEMO.replace(
        "  app-01:\n    role: app\n",
        "  app-01:\n    role: app\n    vm_name: web_01\n",
    );
    let ctx = h.ctx(&h.overlay("bad.yml", &bad)).await;
    let before = h.sim.counters();
    let err = apply_inner(&ctx, None, None).await.unwrap_err();
    assert!(
        err.message
            .contains("inputs.vms[app-01].vm_name=\"web_01\""),
        "{}",
        err.message
    );
    assert_eq!(
        h.sim.counters().writes,
        before.writes,
        "nothing was written"
    );
    assert!(h.vms().is_empty(), "no VM was cloned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_the_same_refusal() {
    let h = Harness::start().await;
    let bad = DEMO.replace(
        "require_ipam: false\n",
        "require_ipam: false\nname_prefix: my_lab\n",
    );
    let ctx = h.ctx(&h.overlay("bad.yml", &bad)).await;
    let err = validate_inner(&ctx).await.unwrap_err();
    assert!(
        err.message
            .contains("3 value(s) would be refused by Proxmox"),
        "{}",
        err.message
    );
}
