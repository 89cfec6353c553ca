//! One test per validator / addressing-contract / extension message (contract §1.9, §1.14),
//! checking the exact operator text including the wrapping.

use hyops_pve::inputs::{
    resolve_inputs_with_overlay, validate_platform_vm, FailureKind, InputsError, LifecycleCommand,
    ResolveRequest,
};
use serde_json::{json, Value};

const PFX: &str = "input validation failed for platform/onprem/platform-vm: ";
const WRAP: &str = "validator failed for module_ref=platform/onprem/platform-vm: ";

/// A valid static pool overlay to break one field at a time.
fn base() -> Value {
    json!({
        "require_ipam": false,
        "vms": {"app-01": {"interfaces": [{"bridge": "vmbr0"}]}}
    })
}

/// A valid single-VM overlay (the §1.13 static example).
fn single() -> Value {
    json!({
        "require_ipam": false,
        "name_prefix": "hyops",
        "context_id": "lab",
        "vm_name": "netbox-app-01",
        "vm_id": 1302,
        "vm_ipv4_cidr": "10.12.0.51/24",
        "vm_gateway": "10.12.0.1",
        "vm_mac": "BC:24:11:00:05:21"
    })
}

fn with(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut cur = &mut v;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur[*key] = value;
            break;
        }
        cur = &mut cur[*key];
    }
    v
}

fn nic0(nic: Value) -> Value {
    with(base(), &["vms", "app-01", "interfaces"], json!([nic]))
}

fn err(overlay: &Value) -> InputsError {
    let mut req = ResolveRequest::new(LifecycleCommand::Validate);
    req.runtime_env = Some("dev".into());
    match resolve_inputs_with_overlay(&req, overlay) {
        Ok(r) => panic!(
            "expected an error, got model with {} VMs",
            r.model.vms.len()
        ),
        Err(e) => e,
    }
}

/// A plain ValueError from the validator: wrapped twice.
fn assert_validator(overlay: Value, msg: &str) {
    let e = err(&overlay);
    assert_eq!(e.to_string(), format!("{PFX}{WRAP}{msg}"));
    assert_eq!(e.message(), msg);
}

/// A common.py helper error (ModuleValidationError): wrapped once.
fn assert_helper(overlay: Value, msg: &str) {
    let e = err(&overlay);
    assert_eq!(e.to_string(), format!("{PFX}{msg}"));
    assert_eq!(e.validation().map(|f| f.kind), Some(FailureKind::Helper));
}

/// An addressing-contract error: raised by `resolve_module` outside the validator and
/// outside its `input validation failed …` wrapping, so printed bare.
fn assert_addressing(overlay: Value, msg: &str) {
    let e = err(&overlay);
    assert_eq!(e.to_string(), msg);
    assert_eq!(
        e.validation().map(|f| f.kind),
        Some(FailureKind::Addressing)
    );
}

fn validator_direct(inputs: Value) -> hyops_pve::inputs::ValidationFailure {
    match validate_platform_vm(&inputs) {
        Ok(()) => panic!("expected a validation failure"),
        Err(f) => f,
    }
}

fn full_defaults_with(overlay: Value) -> Value {
    use hyops_pve::yaml::PyValue;
    let (PyValue::Dict(mut d), PyValue::Dict(o)) = (
        PyValue::from(&hyops_pve::inputs::spec_defaults()),
        PyValue::from(&overlay),
    ) else {
        panic!("mappings expected")
    };
    hyops_pve::inputs::merge_operator_inputs(&mut d, &o);
    PyValue::Dict(d).to_json("inputs").unwrap()
}

// ---- sanity ----

#[test]
fn base_overlays_validate() {
    let req = ResolveRequest::new(LifecycleCommand::Validate);
    assert!(resolve_inputs_with_overlay(&req, &base()).is_ok());
    assert!(resolve_inputs_with_overlay(&req, &single()).is_ok());
}

// ---- rule 1 ----

#[test]
fn inputs_must_be_a_mapping() {
    let f = validator_direct(json!(["not", "a", "mapping"]));
    assert_eq!(f.kind, FailureKind::Helper);
    assert_eq!(
        InputsError::from(f).to_string(),
        format!("{PFX}inputs must be a mapping")
    );
}

// ---- rule 2: require_ipam ----

#[test]
fn require_ipam_must_be_a_boolean() {
    assert_validator(
        with(base(), &["require_ipam"], json!("yes")),
        "inputs.require_ipam must be a boolean when set",
    );
}

#[test]
fn require_ipam_needs_addressing() {
    assert_validator(
        with(base(), &["require_ipam"], json!(true)),
        "inputs.addressing is required when inputs.require_ipam=true",
    );
}

#[test]
fn require_ipam_needs_ipam_mode() {
    let o = with(
        with(base(), &["require_ipam"], json!(true)),
        &["addressing"],
        json!({"mode": "static"}),
    );
    assert_validator(
        o,
        "inputs.addressing.mode must be ipam when inputs.require_ipam=true",
    );
}

#[test]
fn require_ipam_needs_ipam_mapping() {
    // The addressing contract catches this first in the pipeline; the validator rule still exists.
    let f = validator_direct(full_defaults_with(with(
        with(base(), &["require_ipam"], json!(true)),
        &["addressing"],
        json!({"mode": "ipam"}),
    )));
    assert_eq!(f.kind, FailureKind::Validator);
    assert_eq!(
        f.message,
        "inputs.addressing.ipam must be a mapping when inputs.require_ipam=true"
    );
}

#[test]
fn require_ipam_needs_netbox_provider() {
    let f = validator_direct(full_defaults_with(with(
        with(base(), &["require_ipam"], json!(true)),
        &["addressing"],
        json!({"mode": "ipam", "ipam": {"provider": "phpipam"}}),
    )));
    assert_eq!(f.kind, FailureKind::Validator);
    assert_eq!(
        f.message,
        "inputs.addressing.ipam.provider must be netbox when inputs.require_ipam=true"
    );
}

// ---- rule 3 ----

#[test]
fn allow_vm_set_replace_must_be_a_boolean() {
    assert_validator(
        with(base(), &["allow_vm_set_replace"], json!("true")),
        "inputs.allow_vm_set_replace must be a boolean when set",
    );
}

// ---- rules 4-5: template ----

#[test]
fn template_state_ref_is_required_without_template_vm_id() {
    assert_validator(
        with(base(), &["template_state_ref"], Value::Null),
        "inputs.template_state_ref is required (recommended: core/onprem/template-image); inputs.template_vm_id is only for explicit override",
    );
}

#[test]
fn template_vm_id_must_be_an_integer() {
    assert_helper(
        with(base(), &["template_vm_id"], json!("9000")),
        "inputs.template_vm_id must be an integer",
    );
}

#[test]
fn template_vm_id_must_be_at_least_one() {
    assert_helper(
        with(base(), &["template_vm_id"], json!(0)),
        "inputs.template_vm_id must be >= 1",
    );
}

#[test]
fn template_state_ref_must_be_a_string() {
    assert_validator(
        with(base(), &["template_state_ref"], json!(5)),
        "inputs.template_state_ref must be a string when set",
    );
}

#[test]
fn template_key_must_be_a_string() {
    assert_validator(
        with(base(), &["template_key"], json!(24)),
        "inputs.template_key must be a string when set",
    );
}

#[test]
fn build_image_must_be_a_boolean() {
    assert_validator(
        with(base(), &["build_image"], json!("no")),
        "inputs.build_image must be a boolean when set",
    );
}

// ---- rule 6: sizes and strings ----

#[test]
fn cpu_cores_must_be_an_integer() {
    assert_helper(
        with(base(), &["cpu_cores"], json!("two")),
        "inputs.cpu_cores must be an integer",
    );
}

#[test]
fn cpu_cores_rejects_booleans() {
    assert_helper(
        with(base(), &["cpu_cores"], json!(true)),
        "inputs.cpu_cores must be an integer",
    );
}

#[test]
fn memory_mb_must_be_at_least_one() {
    assert_helper(
        with(base(), &["memory_mb"], json!(0)),
        "inputs.memory_mb must be >= 1",
    );
}

#[test]
fn disk_size_gb_must_be_an_integer() {
    assert_helper(
        with(base(), &["disk_size_gb"], json!(40.5)),
        "inputs.disk_size_gb must be an integer",
    );
}

#[test]
fn cpu_type_must_be_a_non_empty_string() {
    assert_helper(
        with(base(), &["cpu_type"], json!(1)),
        "inputs.cpu_type must be a non-empty string",
    );
}

#[test]
fn os_type_must_be_a_non_empty_string() {
    assert_helper(
        with(base(), &["os_type"], Value::Null),
        "inputs.os_type must be a non-empty string",
    );
}

#[test]
fn dns_domain_must_be_a_non_empty_string() {
    assert_helper(
        with(base(), &["dns_domain"], json!([])),
        "inputs.dns_domain must be a non-empty string",
    );
}

// ---- rule 7: dns_servers ----

#[test]
fn dns_servers_must_be_a_list() {
    assert_helper(
        with(base(), &["dns_servers"], json!("8.8.8.8")),
        "inputs.dns_servers must be a list",
    );
}

#[test]
fn dns_servers_items_must_be_non_empty_strings() {
    assert_helper(
        with(base(), &["dns_servers"], json!(["8.8.8.8", 5])),
        "inputs.dns_servers[2] must be a non-empty string",
    );
}

#[test]
fn dns_servers_must_contain_an_item() {
    assert_validator(
        with(base(), &["dns_servers"], json!([])),
        "inputs.dns_servers must contain at least one item",
    );
}

#[test]
fn dns_server_that_is_not_an_address_is_invalid() {
    assert_validator(
        with(base(), &["dns_servers"], json!(["dns.example"])),
        "inputs.dns_servers[1] is invalid: 'dns.example' does not appear to be an IPv4 or IPv6 address",
    );
}

#[test]
fn dns_server_must_be_ipv4() {
    assert_validator(
        with(
            base(),
            &["dns_servers"],
            json!(["1.1.1.1", "2606:4700::1111"]),
        ),
        "inputs.dns_servers[2] must be IPv4",
    );
}

// ---- rule 8 ----

#[test]
fn tags_must_contain_a_tag() {
    assert_validator(
        with(base(), &["tags"], json!([])),
        "inputs.tags must contain at least one tag",
    );
}

#[test]
fn tags_must_be_a_list() {
    assert_helper(
        with(base(), &["tags"], json!({"a": 1})),
        "inputs.tags must be a list",
    );
}

// ---- rule 9: vms / vm_name ----

#[test]
fn neither_vms_nor_vm_name_is_an_error() {
    assert_validator(
        json!({"require_ipam": false}),
        "either inputs.vms (non-empty map) or inputs.vm_name is required",
    );
}

#[test]
fn empty_vms_without_vm_name_is_an_error() {
    assert_validator(
        json!({"require_ipam": false, "vms": {}}),
        "either inputs.vms (non-empty map) or inputs.vm_name is required",
    );
}

#[test]
fn vms_must_be_a_mapping() {
    assert_validator(
        json!({"require_ipam": false, "vms": ["app-01"]}),
        "inputs.vms must be a mapping when set",
    );
}

// ---- rules 10-11: per VM ----

#[test]
fn vm_key_must_match_the_pattern() {
    assert_validator(
        json!({"require_ipam": false, "vms": {"app_01": {"interfaces": [{"bridge": "vmbr0"}]}}}),
        "inputs.vms.<name> must match ^[a-z0-9][a-z0-9-]{0,62}$",
    );
}

#[test]
fn vm_entry_must_be_a_mapping() {
    assert_helper(
        json!({"require_ipam": false, "vms": {"app-01": "big"}}),
        "inputs.vms[app-01] must be a mapping",
    );
}

#[test]
fn vm_role_must_be_a_non_empty_string() {
    assert_helper(
        with(base(), &["vms", "app-01", "role"], json!(" ")),
        "inputs.vms[app-01].role must be a non-empty string",
    );
}

#[test]
fn vm_id_must_be_positive() {
    assert_helper(
        with(base(), &["vms", "app-01", "vm_id"], json!(-3)),
        "inputs.vms[app-01].vm_id must be >= 1",
    );
}

#[test]
fn vm_interfaces_required_without_module_interfaces() {
    assert_validator(
        json!({"require_ipam": false, "vms": {"app-01": {"role": "app"}}}),
        "inputs.vms[app-01].interfaces is required when module-level inputs.interfaces is empty",
    );
}

#[test]
fn module_interfaces_cover_vms_without_their_own() {
    let o =
        json!({"require_ipam": false, "interfaces": [{"bridge": "vmbr0"}], "vms": {"app-01": {}}});
    let req = ResolveRequest::new(LifecycleCommand::Validate);
    let r = resolve_inputs_with_overlay(&req, &o).unwrap();
    assert_eq!(
        r.model.vms.values().next().unwrap().interfaces[0].bridge,
        "vmbr0"
    );
}

#[test]
fn module_interfaces_are_validated_with_their_own_prefix() {
    assert_validator(
        json!({"require_ipam": false, "interfaces": [{"bridge": "vmbr0", "mac_address": "zz"}], "vms": {"app-01": {}}}),
        "inputs.interfaces[1].mac_address must be a valid MAC address",
    );
}

// ---- NIC rules ----

#[test]
fn vm_interfaces_must_be_a_non_empty_list() {
    assert_validator(
        with(base(), &["vms", "app-01", "interfaces"], json!([])),
        "inputs.vms[app-01].interfaces must be a non-empty list",
    );
}

#[test]
fn nic_must_be_a_mapping() {
    assert_helper(
        with(base(), &["vms", "app-01", "interfaces"], json!(["vmbr0"])),
        "inputs.vms[app-01].interfaces[1] must be a mapping",
    );
}

#[test]
fn nic_bridge_must_be_a_non_empty_string() {
    assert_helper(
        nic0(json!({"vlan_id": 10})),
        "inputs.vms[app-01].interfaces[1].bridge must be a non-empty string",
    );
}

#[test]
fn nic_bridge_must_not_be_a_placeholder() {
    assert_validator(
        nic0(json!({"bridge": "change-me-bridge"})),
        "inputs.vms[app-01].interfaces[1].bridge must not contain placeholder values (found 'change-me-bridge')",
    );
}

#[test]
fn nic_mac_must_be_valid() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "mac_address": "BC:24:11:00:05"})),
        "inputs.vms[app-01].interfaces[1].mac_address must be a valid MAC address",
    );
}

#[test]
fn nic_mac_false_is_not_skipped() {
    // Python's str(False) is "False", which is not a MAC.
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "mac_address": false})),
        "inputs.vms[app-01].interfaces[1].mac_address must be a valid MAC address",
    );
}

#[test]
fn nic_ipv4_must_be_a_mapping() {
    assert_helper(
        nic0(json!({"bridge": "vmbr0", "ipv4": "dhcp"})),
        "inputs.vms[app-01].interfaces[1].ipv4 must be a mapping",
    );
}

#[test]
fn nic_ipv4_address_must_be_a_non_empty_string() {
    assert_helper(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"gateway": "10.0.0.1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.address must be a non-empty string",
    );
}

#[test]
fn nic_ipv4_address_must_not_be_a_placeholder() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "CHANGE_ME_IP", "gateway": "10.0.0.1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.address must not contain placeholder values (found 'CHANGE_ME_IP')",
    );
}

#[test]
fn dhcp_nic_must_not_have_a_gateway() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "DHCP", "gateway": "10.0.0.1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.gateway must be empty when address is dhcp",
    );
}

#[test]
fn nic_address_must_parse() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "10.0.0.300/24", "gateway": "10.0.0.1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.address is invalid: '10.0.0.300/24' does not appear to be an IPv4 or IPv6 interface",
    );
}

#[test]
fn nic_address_must_be_ipv4() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "fd00::5/64", "gateway": "10.0.0.1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.address must be IPv4",
    );
}

#[test]
fn static_primary_nic_needs_a_gateway() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "10.0.0.5/24"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.gateway is required for static primary NIC",
    );
}

#[test]
fn gateway_must_not_be_a_placeholder() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "10.0.0.5/24", "gateway": "REPLACE_GW"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.gateway must not contain placeholder values (found 'REPLACE_GW')",
    );
}

#[test]
fn gateway_must_parse() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "10.0.0.5/24", "gateway": "gw"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.gateway is invalid: 'gw' does not appear to be an IPv4 or IPv6 address",
    );
}

#[test]
fn gateway_must_be_ipv4() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "10.0.0.5/24", "gateway": "fd00::1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.gateway must be IPv4",
    );
}

#[test]
fn gateway_must_be_inside_the_network() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "ipv4": {"address": "10.0.0.5/24", "gateway": "10.0.1.1"}})),
        "inputs.vms[app-01].interfaces[1].ipv4.gateway must be within 10.0.0.0/24",
    );
}

#[test]
fn gateway_only_on_first_nic() {
    let o = with(
        base(),
        &["vms", "app-01", "interfaces"],
        json!([
            {"bridge": "vmbr0", "ipv4": {"address": "10.0.0.5/24", "gateway": "10.0.0.1"}},
            {"bridge": "vmbr1", "ipv4": {"address": "10.9.0.5/24", "gateway": "10.9.0.1"}}
        ]),
    );
    assert_validator(
        o,
        "inputs.vms[app-01].interfaces[2].ipv4.gateway is only allowed on interfaces[1]",
    );
}

// ---- single-VM rules ----

#[test]
fn single_vm_name_must_match_the_pattern() {
    assert_validator(
        with(single(), &["vm_name"], json!("-bad")),
        "inputs.vm_name must match ^[a-z0-9][a-z0-9-]{0,62}$",
    );
}

#[test]
fn single_vm_id_must_be_an_integer() {
    assert_helper(
        with(single(), &["vm_id"], json!("1302")),
        "inputs.vm_id must be an integer",
    );
}

#[test]
fn single_vm_mac_is_required() {
    let mut o = single();
    o.as_object_mut().unwrap().remove("vm_mac");
    assert_helper(o, "inputs.vm_mac must be a non-empty string");
}

#[test]
fn single_vm_mac_must_be_valid() {
    assert_validator(
        with(single(), &["vm_mac"], json!("BC-24-11-00-05-21")),
        "inputs.vm_mac must be a valid MAC address (AA:BB:CC:DD:EE:FF)",
    );
}

#[test]
fn single_vm_cidr_is_required() {
    let mut o = single();
    o.as_object_mut().unwrap().remove("vm_ipv4_cidr");
    assert_helper(o, "inputs.vm_ipv4_cidr must be a non-empty string");
}

#[test]
fn single_vm_gateway_is_required() {
    let mut o = single();
    o.as_object_mut().unwrap().remove("vm_gateway");
    assert_helper(o, "inputs.vm_gateway must be a non-empty string");
}

#[test]
fn single_vm_cidr_must_parse() {
    assert_validator(
        with(single(), &["vm_ipv4_cidr"], json!("10.12.0.51/40")),
        "inputs.vm_ipv4_cidr is invalid: '10.12.0.51/40' does not appear to be an IPv4 or IPv6 interface",
    );
}

#[test]
fn single_vm_cidr_must_be_ipv4() {
    assert_validator(
        with(single(), &["vm_ipv4_cidr"], json!("fd00::51/64")),
        "inputs.vm_ipv4_cidr must be an IPv4 interface CIDR",
    );
}

#[test]
fn single_vm_gateway_must_parse() {
    assert_validator(
        with(single(), &["vm_gateway"], json!("10.12.0")),
        "inputs.vm_gateway is invalid: '10.12.0' does not appear to be an IPv4 or IPv6 address",
    );
}

#[test]
fn single_vm_gateway_must_be_ipv4() {
    assert_validator(
        with(single(), &["vm_gateway"], json!("fd00::1")),
        "inputs.vm_gateway must be IPv4",
    );
}

#[test]
fn single_vm_gateway_must_be_inside_the_cidr() {
    assert_validator(
        with(single(), &["vm_gateway"], json!("10.13.0.1")),
        "inputs.vm_gateway must be within inputs.vm_ipv4_cidr network",
    );
}

// ---- post_apply_ssh_readiness ----

#[test]
fn readiness_must_be_bool_or_mapping() {
    assert_validator(
        with(base(), &["post_apply_ssh_readiness"], json!("yes")),
        "inputs.post_apply_ssh_readiness must be a boolean or mapping when set",
    );
}

#[test]
fn readiness_bare_bool_is_accepted() {
    let req = ResolveRequest::new(LifecycleCommand::Validate);
    let r = resolve_inputs_with_overlay(
        &req,
        &with(base(), &["post_apply_ssh_readiness"], json!(false)),
    )
    .unwrap();
    assert!(!r.model.readiness.enabled);
    assert!(r.model.readiness.required);
}

#[test]
fn readiness_bool_fields_must_be_booleans() {
    for f in ["enabled", "required", "ssh_proxy_jump_auto"] {
        assert_validator(
            with(base(), &["post_apply_ssh_readiness"], json!({ f: "true" })),
            &format!("inputs.post_apply_ssh_readiness.{f} must be a boolean when set"),
        );
    }
}

#[test]
fn readiness_int_fields_reject_booleans_and_strings() {
    for f in [
        "target_port",
        "connectivity_timeout_s",
        "connectivity_wait_s",
        "ssh_proxy_jump_port",
    ] {
        for bad in [json!(true), json!("22")] {
            assert_validator(
                with(base(), &["post_apply_ssh_readiness"], json!({ f: bad })),
                &format!("inputs.post_apply_ssh_readiness.{f} must be an integer when set"),
            );
        }
    }
}

#[test]
fn readiness_wait_must_not_be_negative() {
    assert_validator(
        with(
            base(),
            &["post_apply_ssh_readiness"],
            json!({"connectivity_wait_s": -1}),
        ),
        "inputs.post_apply_ssh_readiness.connectivity_wait_s must be >= 0",
    );
}

#[test]
fn readiness_other_ints_must_be_at_least_one() {
    for f in [
        "target_port",
        "connectivity_timeout_s",
        "ssh_proxy_jump_port",
    ] {
        assert_validator(
            with(base(), &["post_apply_ssh_readiness"], json!({ f: 0 })),
            &format!("inputs.post_apply_ssh_readiness.{f} must be >= 1"),
        );
    }
}

#[test]
fn readiness_string_fields_must_be_strings() {
    for f in [
        "target_user",
        "ssh_proxy_jump_host",
        "ssh_proxy_jump_user",
        "ssh_private_key_file",
    ] {
        assert_validator(
            with(base(), &["post_apply_ssh_readiness"], json!({ f: 7 })),
            &format!("inputs.post_apply_ssh_readiness.{f} must be a string when set"),
        );
    }
}

// ---- addressing contract ----

#[test]
fn addressing_must_be_a_mapping() {
    assert_addressing(
        with(base(), &["addressing"], json!("ipam")),
        "inputs.addressing must be a mapping when set",
    );
}

#[test]
fn addressing_unknown_keys_are_listed_sorted() {
    assert_addressing(
        with(
            base(),
            &["addressing"],
            json!({"mode": "static", "zeta": 1, "alpha": 2}),
        ),
        "inputs.addressing has unknown keys: alpha, zeta",
    );
}

#[test]
fn addressing_mode_must_be_known() {
    assert_addressing(
        with(base(), &["addressing"], json!({"mode": "dhcp"})),
        "inputs.addressing.mode must be one of: static, ipam",
    );
}

#[test]
fn addressing_ipam_only_in_ipam_mode() {
    assert_addressing(
        with(
            base(),
            &["addressing"],
            json!({"mode": "static", "ipam": {"provider": "netbox"}}),
        ),
        "inputs.addressing.ipam is only allowed when inputs.addressing.mode=ipam",
    );
}

#[test]
fn addressing_static_with_empty_ipam_is_fine() {
    let req = ResolveRequest::new(LifecycleCommand::Validate);
    let r = resolve_inputs_with_overlay(
        &req,
        &with(
            base(),
            &["addressing"],
            json!({"mode": "Static", "ipam": {}}),
        ),
    )
    .unwrap();
    assert_eq!(
        r.model.addressing,
        Some(hyops_pve::inputs::Addressing::Static)
    );
}

#[test]
fn addressing_ipam_must_be_a_mapping() {
    assert_addressing(
        with(base(), &["addressing"], json!({"mode": "ipam"})),
        "inputs.addressing.ipam must be a mapping when inputs.addressing.mode=ipam",
    );
}

#[test]
fn addressing_ipam_unknown_keys() {
    assert_addressing(
        with(
            base(),
            &["addressing"],
            json!({"mode": "ipam", "ipam": {"provider": "netbox", "site": "x"}}),
        ),
        "inputs.addressing.ipam has unknown keys: site",
    );
}

#[test]
fn addressing_ipam_provider_must_be_netbox() {
    assert_addressing(
        with(
            base(),
            &["addressing"],
            json!({"mode": "ipam", "ipam": {"provider": "infoblox"}}),
        ),
        "inputs.addressing.ipam.provider must be 'netbox' when inputs.addressing.mode=ipam",
    );
}

#[test]
fn addressing_contract_runs_before_the_validator() {
    // cpu_cores is broken too, but the addressing error is reported.
    let o = with(
        with(base(), &["cpu_cores"], json!("x")),
        &["addressing"],
        json!(5),
    );
    assert_addressing(o, "inputs.addressing must be a mapping when set");
}

// ---- engine extensions ----

#[test]
fn clone_mode_must_be_full_or_linked() {
    assert_validator(
        with(base(), &["clone_mode"], json!("thin")),
        "inputs.clone_mode must be one of: full, linked",
    );
}

#[test]
fn nic_model_must_be_a_proxmox_model() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "model": "virtio-net"})),
        "inputs.vms[app-01].interfaces[1].model must be one of: e1000, e1000-82540em, e1000-82544gc, e1000-82545em, e1000e, i82551, i82557b, i82559er, ne2k_isa, ne2k_pci, pcnet, rtl8139, virtio, vmxnet3",
    );
}

#[test]
fn nic_firewall_must_be_a_boolean() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "firewall": "on"})),
        "inputs.vms[app-01].interfaces[1].firewall must be a boolean when set",
    );
}

#[test]
fn nic_mtu_range() {
    let o = with(
        base(),
        &["vms", "app-01", "interfaces"],
        json!([{"bridge": "vmbr0"}, {"bridge": "vmbr1", "mtu": 70000}]),
    );
    assert_validator(
        o,
        "inputs.vms[app-01].interfaces[2].mtu must be between 1 and 65520",
    );
}

#[test]
fn nic_vlan_range() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "vlan_id": 4095})),
        "inputs.vms[app-01].interfaces[1].vlan_id must be between 1 and 4094",
    );
}

#[test]
fn nic_vlan_must_be_an_integer() {
    assert_validator(
        nic0(json!({"bridge": "vmbr0", "vlan_id": true})),
        "inputs.vms[app-01].interfaces[1].vlan_id must be an integer when set",
    );
}

#[test]
fn limits_must_be_positive() {
    assert_validator(
        with(base(), &["limits"], json!({"per_node": 0})),
        "inputs.limits.per_node must be >= 1",
    );
}

#[test]
fn limits_unknown_keys() {
    assert_validator(
        with(base(), &["limits"], json!({"per_cluster": 2})),
        "inputs.limits has unknown keys: per_cluster",
    );
}

#[test]
fn limits_must_be_a_mapping() {
    assert_validator(
        with(base(), &["limits"], json!(4)),
        "inputs.limits must be a mapping when set",
    );
}

#[test]
fn per_vm_node_name_must_be_a_non_empty_string() {
    assert_validator(
        with(base(), &["vms", "app-01", "node_name"], json!(3)),
        "inputs.vms[app-01].node_name must be a non-empty string",
    );
}

#[test]
fn extensions_land_in_the_model() {
    let o = json!({
        "require_ipam": false,
        "clone_mode": "linked",
        "limits": {"global": 4, "per_node": 2},
        "vms": {"app-01": {"proxmox_node": "pve02", "interfaces": [
            {"bridge": "vmbr0", "model": "E1000", "firewall": true, "mtu": 9000, "vlan_id": 20}
        ]}}
    });
    let req = ResolveRequest::new(LifecycleCommand::Validate);
    let m = resolve_inputs_with_overlay(&req, &o).unwrap().model;
    assert_eq!(m.clone_mode, hyops_pve::inputs::CloneMode::Linked);
    assert_eq!(m.limits.global, Some(4));
    assert_eq!(m.limits.per_node, Some(2));
    assert_eq!(m.limits.per_storage, None);
    let vm = m.vms.values().next().unwrap();
    assert_eq!(vm.node_name.as_deref(), Some("pve02"));
    let nic = &vm.interfaces[0];
    assert_eq!(
        (nic.model.as_str(), nic.firewall, nic.mtu, nic.vlan_id),
        ("e1000", true, Some(9000), Some(20))
    );
}

#[test]
fn nic_defaults_are_virtio_without_firewall() {
    let req = ResolveRequest::new(LifecycleCommand::Validate);
    let m = resolve_inputs_with_overlay(&req, &base()).unwrap().model;
    let nic = &m.vms.values().next().unwrap().interfaces[0];
    assert_eq!(
        (nic.model.as_str(), nic.firewall, nic.mtu, nic.vlan_id),
        ("virtio", false, None, None)
    );
    assert_eq!(m.clone_mode, hyops_pve::inputs::CloneMode::Full);
}
