//! Unknown-key warnings. `hyops` silently ignores keys it does not read; hyops-pve keeps
//! accepting them but says so once per key, with the closest known key when one is near
//! (`inputs.memroy_mb is not a platform-vm input and is ignored (did you mean memory_mb?)`),
//! at every level: the top level, each VM, each NIC and its `ipv4`, `post_apply_ssh_readiness`,
//! `addressing` and its `ipam`, and `limits`. A warning, never a refusal. Works on the merged
//! inputs; knows nothing about validation.

use crate::yaml::{PyDict, PyValue};

/// Top-level keys `hyops`, the pack, the driver contract or this engine read.
pub const TOP_LEVEL: &[&str] = &[
    // spec defaults
    "name_prefix",
    "context_id",
    "vm_role",
    "template_state_ref",
    "template_key",
    "build_image",
    "cpu_cores",
    "memory_mb",
    "disk_size_gb",
    "guest_agent_enabled",
    "cpu_type",
    "os_type",
    "on_boot",
    "dns_domain",
    "dns_servers",
    "tags",
    "require_ipam",
    "allow_vm_set_replace",
    "post_apply_ssh_readiness",
    // pool and single-VM shapes
    "vms",
    "interfaces",
    "vm_name",
    "vm_id",
    "vm_ipv4_cidr",
    "vm_gateway",
    "vm_mac",
    "vm_bridge",
    "template_vm_id",
    // cloud-init, SSH and targets
    "ssh_username",
    "ssh_keys",
    "ssh_public_key",
    "ssh_keys_from_init",
    "ssh_keys_init_target",
    "cloud_init_user_data",
    "cloud_init_network_data",
    "cloud_init_meta_data",
    "ssh_proxy_jump_host",
    "ssh_proxy_jump_user",
    "ssh_proxy_jump_port",
    "ssh_private_key_file",
    "node_name",
    "proxmox_node",
    "datastore_id",
    "storage_pool",
    "snippets_datastore_id",
    "storage_snippets",
    "network_bridge",
    "addressing",
    "preset_ref",
    // state references hyops resolves for any module
    "target_state_ref",
    "target_vm_key",
    "target_host",
    "network_state_ref",
    // engine extensions
    "clone_mode",
    "cloud_init_mode",
    "limits",
    "restart_policy",
];

/// Keys of one `vms.<key>` entry.
pub const PER_VM: &[&str] = &[
    "role",
    "vm_id",
    "vm_name",
    "interfaces",
    "cloud_init_user_data",
    "cloud_init_network_data",
    "cloud_init_meta_data",
    "node_name",
    "proxmox_node",
];

/// Keys of one NIC.
pub const NIC: &[&str] = &[
    "bridge",
    "vlan_id",
    "mac_address",
    "ipv4",
    "model",
    "firewall",
    "mtu",
];

/// Keys of a NIC's `ipv4`.
pub const IPV4: &[&str] = &["address", "gateway"];

/// Keys of `post_apply_ssh_readiness`.
pub const READINESS: &[&str] = &[
    "enabled",
    "required",
    "connectivity_timeout_s",
    "connectivity_wait_s",
    "target_user",
    "target_port",
    "ssh_proxy_jump_auto",
    "ssh_proxy_jump_host",
    "ssh_proxy_jump_user",
    "ssh_proxy_jump_port",
    "ssh_private_key_file",
    // engine extension
    "wait_cloud_init",
];

/// Keys of `addressing` and of `addressing.ipam`.
pub const ADDRESSING: &[&str] = &["mode", "ipam"];
pub const IPAM: &[&str] = &[
    "provider",
    "network_state_ref",
    "ssh_proxy_jump_host",
    "ssh_proxy_jump_user",
    "ssh_proxy_jump_key_file",
];

/// Keys of `limits`.
pub const LIMITS: &[&str] = &["global", "per_node", "per_storage"];

/// Optimal-string-alignment edit distance (a transposition counts as one edit).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The known key closest to `key`, when it is near enough to be a likely typo: the same
/// key in another case or with `-` for `_`, the start of a known key (3 characters or
/// more), or within 1 edit (keys up to 4 characters),
/// 2 edits (up to 9) or 3 edits (longer). Ties go to the earlier key in `known`.
pub fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let norm = key.trim().to_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| **k == norm) {
        return Some(k);
    }
    // A shortened key (`mac` for `mac_address`, `timeout` is not one: it must be a prefix).
    if norm.chars().count() >= 3 {
        if let Some(k) = known.iter().find(|k| k.starts_with(norm.as_str())) {
            return Some(k);
        }
    }
    let limit = match norm.chars().count() {
        0..=4 => 1,
        5..=9 => 2,
        _ => 3,
    };
    known
        .iter()
        .map(|k| (distance(&norm, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn warn_level(d: &PyDict, known: &[&str], path: &str, what: &str, out: &mut Vec<String>) {
    for k in d.keys() {
        let name = match k {
            PyValue::Str(s) => s.clone(),
            other => other.py_repr(),
        };
        if matches!(k, PyValue::Str(s) if known.contains(&s.as_str())) {
            continue;
        }
        let mut msg = format!("{path}.{name} is not {what} and is ignored");
        if known == PER_VM && TOP_LEVEL.contains(&name.as_str()) {
            msg.push_str(&format!(
                " ({name} is a module-level input: set inputs.{name}, it applies to every VM)"
            ));
        } else if let Some(best) = closest(&name, known) {
            msg.push_str(&format!(" (did you mean {best}?)"));
        } else if path == "inputs" && name == "inputs" {
            msg.push_str(" (hyops reads the overlay's top level as the inputs: move these keys up one level)");
        }
        out.push(msg);
    }
}

fn nics(v: Option<&PyValue>, path: &str, out: &mut Vec<String>) {
    let Some(PyValue::List(items)) = v else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let Some(nic) = item.as_dict() else { continue };
        let nic_path = format!("{path}[{}]", i + 1);
        warn_level(nic, NIC, &nic_path, "a NIC setting", out);
        if let Some(PyValue::Dict(ipv4)) = nic.get("ipv4") {
            warn_level(
                ipv4,
                IPV4,
                &format!("{nic_path}.ipv4"),
                "an ipv4 setting",
                out,
            );
        }
    }
}

/// One warning per key that nothing reads, in the order the keys appear.
pub fn unknown_key_warnings(inputs: &PyDict) -> Vec<String> {
    let mut out = Vec::new();
    warn_level(inputs, TOP_LEVEL, "inputs", "a platform-vm input", &mut out);
    nics(inputs.get("interfaces"), "inputs.interfaces", &mut out);
    if let Some(PyValue::Dict(vms)) = inputs.get("vms") {
        for (key, cfg) in vms.iter() {
            let Some(cfg) = cfg.as_dict() else { continue };
            let shown = match key {
                PyValue::Str(s) => s.clone(),
                other => other.py_repr(),
            };
            let vm_path = format!("inputs.vms[{shown}]");
            warn_level(cfg, PER_VM, &vm_path, "a per-VM setting", &mut out);
            nics(
                cfg.get("interfaces"),
                &format!("{vm_path}.interfaces"),
                &mut out,
            );
        }
    }
    if let Some(PyValue::Dict(r)) = inputs.get("post_apply_ssh_readiness") {
        warn_level(
            r,
            READINESS,
            "inputs.post_apply_ssh_readiness",
            "a readiness setting",
            &mut out,
        );
    }
    if let Some(PyValue::Dict(a)) = inputs.get("addressing") {
        warn_level(
            a,
            ADDRESSING,
            "inputs.addressing",
            "an addressing setting",
            &mut out,
        );
        if let Some(PyValue::Dict(ipam)) = a.get("ipam") {
            warn_level(
                ipam,
                IPAM,
                "inputs.addressing.ipam",
                "an IPAM setting",
                &mut out,
            );
        }
    }
    if let Some(PyValue::Dict(l)) = inputs.get("limits") {
        warn_level(l, LIMITS, "inputs.limits", "a limits setting", &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::safe_load;

    fn warnings(text: &str) -> Vec<String> {
        let v = safe_load(text).unwrap();
        unknown_key_warnings(v.as_dict().unwrap())
    }

    #[test]
    fn a_top_level_typo_names_the_closest_key() {
        assert_eq!(
            warnings("memroy_mb: 8192\n"),
            ["inputs.memroy_mb is not a platform-vm input and is ignored (did you mean memory_mb?)"]
        );
    }

    #[test]
    fn a_key_with_nothing_close_gets_no_suggestion() {
        assert_eq!(
            warnings("favourite_colour: blue\n"),
            ["inputs.favourite_colour is not a platform-vm input and is ignored"]
        );
    }

    #[test]
    fn per_vm_keys_are_checked() {
        assert_eq!(
            warnings("vms:\n  app-01:\n    rol: app\n    interfaces: []\n"),
            ["inputs.vms[app-01].rol is not a per-VM setting and is ignored (did you mean role?)"]
        );
    }

    #[test]
    fn a_module_level_input_set_per_vm_says_where_it_belongs() {
        assert_eq!(
            warnings("vms:\n  a:\n    cpu_cores: 8\n"),
            ["inputs.vms[a].cpu_cores is not a per-VM setting and is ignored (cpu_cores is a module-level input: set inputs.cpu_cores, it applies to every VM)"]
        );
    }

    #[test]
    fn nic_and_ipv4_keys_are_checked_at_both_levels() {
        let w = warnings(
            "interfaces:\n- {bridge: vmbr0, mac: x}\nvms:\n  a:\n    interfaces:\n    - {bridge: vmbr0, ipv4: {adress: dhcp}}\n",
        );
        assert_eq!(
            w,
            [
                "inputs.interfaces[1].mac is not a NIC setting and is ignored (did you mean mac_address?)",
                "inputs.vms[a].interfaces[1].ipv4.adress is not an ipv4 setting and is ignored (did you mean address?)",
            ]
        );
    }

    #[test]
    fn readiness_addressing_and_limits_keys_are_checked() {
        let w = warnings(
            "post_apply_ssh_readiness: {conectivity_wait_s: 5}\naddressing: {mode: ipam, ipam: {provder: netbox}}\nlimits: {per_nod: 2}\n",
        );
        assert_eq!(
            w,
            [
                "inputs.post_apply_ssh_readiness.conectivity_wait_s is not a readiness setting and is ignored (did you mean connectivity_wait_s?)",
                "inputs.addressing.ipam.provder is not an IPAM setting and is ignored (did you mean provider?)",
                "inputs.limits.per_nod is not a limits setting and is ignored (did you mean per_node?)",
            ]
        );
    }

    #[test]
    fn case_and_dash_variants_are_suggested() {
        assert_eq!(closest("CPU-Cores", TOP_LEVEL), Some("cpu_cores"));
    }

    #[test]
    fn a_wrapping_inputs_key_explains_itself() {
        assert_eq!(
            warnings("inputs: {cpu_cores: 4}\n"),
            ["inputs.inputs is not a platform-vm input and is ignored (hyops reads the overlay's top level as the inputs: move these keys up one level)"]
        );
    }

    #[test]
    fn known_keys_and_non_string_keys() {
        assert!(warnings("cpu_cores: 2\nclone_mode: full\n").is_empty());
        assert_eq!(
            warnings("1: x\n"),
            ["inputs.1 is not a platform-vm input and is ignored"]
        );
    }

    #[test]
    fn restart_policy_is_a_known_key() {
        assert!(warnings("restart_policy: defer\n").is_empty());
    }

    /// Every key the input readers look up is declared known at some level, so no key the
    /// engine honours is ever called "ignored" (`restart_policy` was). The readers are scanned
    /// for the literal keys of `get(<dict>, "key")`, `.get("key")`, `.contains("key")` and
    /// `.remove("key")`.
    #[test]
    fn every_key_the_readers_look_up_is_known() {
        let sources = [
            ("build.rs", include_str!("build.rs")),
            ("validate.rs", include_str!("validate.rs")),
            ("aliases.rs", include_str!("aliases.rs")),
            ("sanitize.rs", include_str!("sanitize.rs")),
            ("overlay.rs", include_str!("overlay.rs")),
            ("upstream.rs", include_str!("upstream.rs")),
        ];
        let known: Vec<&str> = [
            TOP_LEVEL, PER_VM, NIC, IPV4, READINESS, ADDRESSING, IPAM, LIMITS,
        ]
        .concat();
        let mut unknown = Vec::new();
        for (file, text) in sources {
            for (i, _) in text.match_indices('"') {
                let before = &text[..i];
                let looked_up = before.ends_with(".get(")
                    || before.ends_with(".contains(")
                    || before.ends_with(".remove(")
                    || (before.ends_with(", ")
                        && before
                            .rfind("get(")
                            .is_some_and(|g| !before[g..].contains(['\n', ')'])));
                if !looked_up {
                    continue;
                }
                let rest = &text[i + 1..];
                let Some(end) = rest.find('"') else { continue };
                let key = &rest[..end];
                let plain = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if plain && !key.starts_with('_') && !known.contains(&key) {
                    unknown.push(format!("{file}: {key}"));
                }
            }
        }
        unknown.sort();
        unknown.dedup();
        assert!(
            unknown.is_empty(),
            "read by the engine but warned as ignored: {unknown:?}"
        );
    }
}
