//! Property: arbitrary YAML overlays — including wrong types in every known field — never
//! panic the loader, validator or model builder, for any lifecycle command.

use hyops_pve::inputs::{
    parse_overlay_yaml, resolve_inputs_with_overlay, LifecycleCommand, ResolveRequest,
};
use proptest::prelude::*;
use serde_yaml::Value as Y;

const KEYS: &[&str] = &[
    "vms",
    "vm_name",
    "vm_id",
    "vm_mac",
    "vm_ipv4_cidr",
    "vm_gateway",
    "vm_role",
    "interfaces",
    "bridge",
    "ipv4",
    "address",
    "gateway",
    "mac_address",
    "vlan_id",
    "model",
    "mtu",
    "firewall",
    "addressing",
    "mode",
    "ipam",
    "provider",
    "require_ipam",
    "post_apply_ssh_readiness",
    "enabled",
    "connectivity_wait_s",
    "target_port",
    "tags",
    "dns_servers",
    "cpu_cores",
    "template_vm_id",
    "template_state_ref",
    "limits",
    "global",
    "clone_mode",
    "node_name",
    "proxmox_node",
    "app-01",
    "inputs",
    "ssh_keys",
    "ssh_public_key",
    "build_image",
    "preset_ref",
];

fn leaf() -> impl Strategy<Value = Y> {
    prop_oneof![
        Just(Y::Null),
        any::<bool>().prop_map(Y::Bool),
        any::<i64>().prop_map(|i| Y::Number(i.into())),
        any::<f64>().prop_map(|f| Y::Number(f.into())),
        "[a-zA-Z0-9:./_ -]{0,12}".prop_map(Y::String),
        prop_oneof![
            Just("dhcp"),
            Just("10.0.0.5/24"),
            Just("10.0.0.1"),
            Just("vnetenv"),
            Just("vmbr0"),
            Just("ipam"),
            Just("static"),
            Just("netbox"),
            Just("BC:24:11:00:05:21"),
            Just("fd00::1/64"),
            Just("CHANGE_ME"),
            Just("linked"),
            Just("virtio")
        ]
        .prop_map(|s| Y::String(s.to_string())),
    ]
}

fn tree() -> impl Strategy<Value = Y> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Y::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let mut m = serde_yaml::Mapping::new();
                for (k, v) in kv {
                    m.insert(Y::String(k.to_string()), v);
                }
                Y::Mapping(m)
            }),
        ]
    })
}

const COMMANDS: &[LifecycleCommand] = &[
    LifecycleCommand::Apply,
    LifecycleCommand::Plan,
    LifecycleCommand::Destroy,
    LifecycleCommand::Validate,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn arbitrary_overlays_never_panic(t in tree(), cmd in prop::sample::select(COMMANDS), env in prop::option::of(prop::sample::select(&["dev", "qa", ""][..]))) {
        let text = serde_yaml::to_string(&t).unwrap_or_default();
        if let Ok(overlay) = parse_overlay_yaml(&text) {
            let mut req = ResolveRequest::new(cmd);
            req.runtime_env = env.map(str::to_string);
            let _ = resolve_inputs_with_overlay(&req, &overlay);
        }
    }

    #[test]
    fn destroy_always_builds_a_model_unless_addressing_or_preset_is_broken(t in tree()) {
        let text = serde_yaml::to_string(&t).unwrap_or_default();
        if let Ok(overlay) = parse_overlay_yaml(&text) {
            let req = ResolveRequest::new(LifecycleCommand::Destroy);
            match resolve_inputs_with_overlay(&req, &overlay) {
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(text.contains("inputs.addressing") || text.contains("preset_ref"), "{}", text);
                }
            }
        }
    }

    #[test]
    fn arbitrary_env_overrides_never_panic(
        pairs in prop::collection::vec(("HYOPS_INPUT(S_JSON|_[a-zA-Z_]{0,12})", "[ -~]{0,16}"), 0..6),
        cmd in prop::sample::select(COMMANDS),
    ) {
        let mut req = ResolveRequest::new(cmd);
        req.env = pairs.into_iter().collect();
        let _ = resolve_inputs_with_overlay(&req, &serde_json::json!({}));
    }
}
