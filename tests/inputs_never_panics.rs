//! Property: arbitrary YAML overlays — including wrong types in every known field — never
//! panic the loader, validator or model builder, for any lifecycle command.

use hyops_pve::inputs::{
    parse_overlay, resolve_inputs_with_overlay, resolve_py, FailureKind, InputsError,
    LifecycleCommand, ResolveRequest,
};
use proptest::prelude::*;

/// A YAML tree rendered as block YAML with plain scalars, so YAML 1.1 resolution (`yes`,
/// `010`, `1:30`, dates, `.nan`, `~`) is exercised, keys included.
#[derive(Clone, Debug)]
enum Y {
    Scalar(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

fn render(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        Y::Scalar(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Y::Seq(items) if items.is_empty() => out.push_str("[]\n"),
        Y::Map(kv) if kv.is_empty() => out.push_str("{}\n"),
        Y::Seq(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                render(item, indent + 2, out);
            }
        }
        Y::Map(kv) => {
            out.push('\n');
            for (k, v) in kv {
                out.push_str(&pad);
                out.push_str(k);
                out.push_str(": ");
                render(v, indent + 2, out);
            }
        }
    }
}

fn text_of(y: &Y) -> String {
    match y {
        Y::Map(kv) if !kv.is_empty() => {
            let mut out = String::new();
            for (k, v) in kv {
                out.push_str(k);
                out.push_str(": ");
                render(v, 2, &mut out);
            }
            out
        }
        other => {
            let mut out = String::new();
            render(other, 0, &mut out);
            out
        }
    }
}

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
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9._/-]{1,12}",
        prop::sample::select(vec![
            "~",
            "null",
            "yes",
            "No",
            "on",
            "OFF",
            "010",
            "0x1F",
            "4_096",
            "1:30",
            ".nan",
            "-.inf",
            "2024-01-01",
            "2001-12-14t21:59:43.10-05:00",
            "99999999999999999999999",
            "4294967297",
            "'quoted'",
            "\"dq\"",
            "dhcp",
            "10.0.0.5/24",
            "10.0.0.1",
            "vnetenv",
            "vmbr0",
            "ipam",
            "static",
            "netbox",
            "BC:24:11:00:05:21",
            "52:54:00:12:34:56",
            "fd00::1/64",
            "CHANGE_ME",
            "linked",
            "virtio",
            "''",
            "[]",
            "{}",
        ])
        .prop_map(str::to_string),
    ]
    .prop_map(Y::Scalar)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => prop::sample::select(vec!["1", "yes", "null", "~", "2024-01-01", "<<", "1.5"])
            .prop_map(str::to_string),
    ]
}

fn tree() -> impl Strategy<Value = Y> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Y::Seq),
            prop::collection::vec((key(), inner), 0..6).prop_map(Y::Map),
        ]
    })
}

const COMMANDS: &[LifecycleCommand] = &[
    LifecycleCommand::Apply,
    LifecycleCommand::Plan,
    LifecycleCommand::Destroy,
    LifecycleCommand::Validate,
];

/// Errors destroy may still raise: not the validator's, only what stops any command.
fn destroy_may_fail_with(e: &InputsError) -> bool {
    match e {
        InputsError::Validation(f) => f.kind == FailureKind::Addressing,
        InputsError::PresetRefUnsupported
        | InputsError::Resolve(_)
        | InputsError::Unrecordable(_)
        | InputsError::OutOfRange(_)
        | InputsError::Contract(_) => true,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn arbitrary_overlays_never_panic(t in tree(), cmd in prop::sample::select(COMMANDS), env in prop::option::of(prop::sample::select(&["dev", "qa", ""][..]))) {
        if let Ok(overlay) = parse_overlay(&text_of(&t)) {
            let mut req = ResolveRequest::new(cmd);
            req.runtime_env = env.map(str::to_string);
            let _ = resolve_py(&req, &overlay);
        }
    }

    #[test]
    fn destroy_fails_only_on_what_stops_every_command(t in tree()) {
        if let Ok(overlay) = parse_overlay(&text_of(&t)) {
            let req = ResolveRequest::new(LifecycleCommand::Destroy);
            if let (_, Err(e)) = resolve_py(&req, &overlay) {
                prop_assert!(destroy_may_fail_with(&e), "{}", e);
            }
        }
    }

    #[test]
    fn arbitrary_env_overrides_never_panic(
        pairs in prop::collection::vec(("HYOPS_INPUT(S_JSON|_[a-zA-Z_]{0,12})", "[ -~]{0,16}"), 0..6),
        cmd in prop::sample::select(COMMANDS),
    ) {
        let mut req = ResolveRequest::new(cmd);
        req.env = pairs;
        let _ = resolve_inputs_with_overlay(&req, &serde_json::json!({}));
    }
}
