//! The overlay generator of the differential test: the shipped examples of both projects,
//! then systematic mutations of every field the validator and the driver contract read
//! (types, blanks, boundaries, CIDRs, MACs, gateways per NIC, key patterns, require_ipam ×
//! addressing, bridge aliases per env, placeholders, the single-VM shorthand, readiness
//! settings, state references and guards), YAML-level variants, and `HYOPS_INPUTS_JSON` /
//! `HYOPS_INPUT_*` overrides in environment order. Overlays are built as YAML *text* so
//! YAML 1.1 spellings (`yes`, `010`, `1:30`, dates, merge keys) reach both readers as written.

#![allow(dead_code)]

use std::path::Path;

/// One case: an overlay (or none), env overrides in order, the runtime env, and the files
/// of its runtime root (state and readiness markers), relative to that root.
#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    pub category: &'static str,
    pub overlay: Option<String>,
    pub env: Vec<(String, String)>,
    pub hyops_env: Option<String>,
    pub files: Vec<(String, String)>,
    pub state_instance: Option<String>,
}

/// A YAML tree whose leaves (and keys) are raw YAML text.
#[derive(Clone, Debug)]
pub enum Y {
    Raw(String),
    Map(Vec<(String, Y)>),
    Seq(Vec<Y>),
}

pub fn raw(s: &str) -> Y {
    Y::Raw(s.to_string())
}

pub fn map(kv: &[(&str, Y)]) -> Y {
    Y::Map(kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

impl Y {
    /// Sets (or adds, at the end) the value at a path of keys; list items are addressed by
    /// their index as text (`"0"`).
    pub fn set(&mut self, path: &[&str], value: Y) {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return;
        };
        match self {
            Y::Map(kv) => {
                if let Some((_, v)) = kv.iter_mut().find(|(k, _)| k == first) {
                    v.set(rest, value);
                } else {
                    let mut v = Y::Map(Vec::new());
                    v.set(rest, value);
                    kv.push((first.to_string(), v));
                }
            }
            Y::Seq(items) => {
                let i: usize = first.parse().expect("list index");
                items[i].set(rest, value);
            }
            Y::Raw(_) => {
                *self = Y::Map(Vec::new());
                self.set(path, value);
            }
        }
    }

    /// Removes the value at a path of keys.
    pub fn remove(&mut self, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if let Y::Map(kv) = self {
            if rest.is_empty() {
                kv.retain(|(k, _)| k != first);
            } else if let Some((_, v)) = kv.iter_mut().find(|(k, _)| k == first) {
                v.remove(rest);
            }
        } else if let Y::Seq(items) = self {
            if let Ok(i) = first.parse::<usize>() {
                if rest.is_empty() {
                    items.remove(i);
                } else {
                    items[i].remove(rest);
                }
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            Y::Map(kv) if !kv.is_empty() => render_map(kv, 0, &mut out),
            Y::Seq(items) if !items.is_empty() => render_seq(items, 0, &mut out),
            Y::Map(_) => out.push_str("{}\n"),
            Y::Seq(_) => out.push_str("[]\n"),
            Y::Raw(r) => {
                out.push_str(r);
                out.push('\n');
            }
        }
        out
    }
}

fn render_value(v: &Y, indent: usize, out: &mut String) {
    match v {
        Y::Raw(r) => {
            out.push(' ');
            out.push_str(r);
            out.push('\n');
        }
        Y::Map(kv) if kv.is_empty() => out.push_str(" {}\n"),
        Y::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Y::Map(kv) => {
            out.push('\n');
            render_map(kv, indent + 2, out);
        }
        Y::Seq(items) => {
            out.push('\n');
            render_seq(items, indent + 2, out);
        }
    }
}

fn render_map(kv: &[(String, Y)], indent: usize, out: &mut String) {
    for (k, v) in kv {
        out.push_str(&" ".repeat(indent));
        out.push_str(k);
        out.push(':');
        render_value(v, indent, out);
    }
}

fn render_seq(items: &[Y], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Y::Map(kv) if !kv.is_empty() => {
                // First entry on the dash line, the rest aligned under it.
                let mut block = String::new();
                render_map(kv, indent + 2, &mut block);
                out.push(' ');
                out.push_str(block.trim_start());
            }
            other => render_value(other, indent, out),
        }
    }
}

/// A NIC: `{bridge, ipv4: {address, gateway}}`.
fn nic(bridge: &str, address: Option<&str>, gateway: Option<&str>) -> Y {
    let mut kv = vec![("bridge", raw(bridge))];
    if address.is_some() || gateway.is_some() {
        let mut ip = Vec::new();
        if let Some(a) = address {
            ip.push(("address", raw(a)));
        }
        if let Some(g) = gateway {
            ip.push(("gateway", raw(g)));
        }
        kv.push(("ipv4", map(&ip)));
    }
    map(&kv)
}

/// A valid static pool of one VM.
pub fn base_pool() -> Y {
    map(&[
        ("require_ipam", raw("false")),
        (
            "vms",
            map(&[(
                "app-01",
                map(&[
                    ("role", raw("app")),
                    (
                        "interfaces",
                        Y::Seq(vec![nic("vmbr0", Some("10.20.0.11/24"), Some("10.20.0.1"))]),
                    ),
                ]),
            )]),
        ),
    ])
}

/// A valid single-VM overlay (upstream `tests/example-inputs.yml`).
pub fn base_single() -> Y {
    map(&[
        ("require_ipam", raw("false")),
        ("name_prefix", raw("hyops")),
        ("context_id", raw("lab")),
        ("vm_name", raw("netbox-app-01")),
        ("vm_id", raw("1302")),
        ("vm_ipv4_cidr", raw("10.12.0.51/24")),
        ("vm_gateway", raw("10.12.0.1")),
        ("vm_mac", raw("BC:24:11:00:05:21")),
    ])
}

/// A valid IPAM pool (upstream `inputs.min.yml`).
pub fn base_ipam() -> Y {
    map(&[
        ("template_state_ref", raw("core/onprem/template-image")),
        ("template_key", raw("ubuntu-24.04")),
        ("require_ipam", raw("true")),
        (
            "addressing",
            map(&[
                ("mode", raw("ipam")),
                ("ipam", map(&[("provider", raw("netbox"))])),
            ]),
        ),
        (
            "vms",
            map(&[(
                "app-01",
                map(&[
                    ("role", raw("app")),
                    ("interfaces", Y::Seq(vec![nic("vnetmgmt", None, None)])),
                ]),
            )]),
        ),
    ])
}

/// Values of every YAML 1.1 kind, blanks and boundaries, as raw YAML.
pub const PALETTE: &[&str] = &[
    "~",
    "''",
    "' '",
    "true",
    "false",
    "yes",
    "No",
    "on",
    "OFF",
    "0",
    "1",
    "-1",
    "010",
    "0x1f",
    "4_096",
    "1:30",
    "1.5",
    "1.0e+3",
    "1e3",
    ".nan",
    "-.inf",
    "2024-01-01",
    "4294967297",
    "99999999999999999999999",
    "text",
    "'8'",
    "CHANGE_ME",
    "[]",
    "[8.8.8.8]",
    "{}",
    "{a: 1}",
    "\"tab\\tand 'quote'\"",
];

/// A smaller palette for nested fields.
pub const SMALL: &[&str] = &[
    "~",
    "''",
    "yes",
    "0",
    "1",
    "-1",
    "010",
    "1.5",
    ".nan",
    "2024-01-01",
    "70000",
    "99999999999999999999999",
    "text",
    "[]",
    "{}",
];

/// The template-image state most cases run with (`ubuntu-24.04` → 9000).
pub fn template_ok() -> (String, String) {
    (
        "state/modules/core__onprem__template-image/latest.json".into(),
        r#"{"status": "ok", "outputs": {"template_vm_ids": {"ubuntu-24.04": 9000}}}"#.into(),
    )
}

struct Gen {
    cases: Vec<Case>,
}

impl Gen {
    fn push(&mut self, category: &'static str, id: String, overlay: Option<String>) -> &mut Case {
        self.cases.push(Case {
            id,
            category,
            overlay,
            env: Vec::new(),
            hyops_env: Some("dev".into()),
            files: vec![template_ok()],
            state_instance: None,
        });
        self.cases.last_mut().expect("just pushed")
    }

    fn tree(&mut self, category: &'static str, id: String, y: &Y) -> &mut Case {
        self.push(category, id, Some(y.render()))
    }

    fn mutate(&mut self, category: &'static str, base: &Y, path: &[&str], values: &[&str]) {
        for v in values {
            let mut y = base.clone();
            y.set(path, raw(v));
            self.tree(category, format!("{category}:{}={v}", path.join(".")), &y);
        }
        let mut y = base.clone();
        y.remove(path);
        self.tree(
            category,
            format!("{category}:{}=<absent>", path.join(".")),
            &y,
        );
    }
}

/// Files of a runtime root: `(path relative to the root, content)`.
type Files = Vec<(String, String)>;

/// Every case, examples first.
pub fn all(upstream_src: &Path, repo: &Path) -> Vec<Case> {
    let mut g = Gen { cases: Vec::new() };
    examples(&mut g, upstream_src, repo);
    top_level_fields(&mut g);
    per_vm_and_keys(&mut g);
    nics(&mut g);
    single_vm(&mut g);
    readiness(&mut g);
    ipam_matrix(&mut g);
    aliases(&mut g);
    placeholders(&mut g);
    yaml_variants(&mut g);
    env_overrides(&mut g);
    state_references(&mut g);
    guards(&mut g);
    engine_fields(&mut g);
    sdn_and_netbox(&mut g);
    g.cases
}

/// The shipped example overlays of both projects, in an empty root and with the template.
pub fn example_files(upstream_src: &Path, repo: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let up = upstream_src.join("modules/platform/onprem/platform-vm");
    let mut paths: Vec<_> = std::fs::read_dir(up.join("examples"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.push(up.join("tests/example-inputs.yml"));
    paths.sort();
    for p in paths {
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.push((
                format!(
                    "upstream/{}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                ),
                text,
            ));
        }
    }
    let mut ours: Vec<_> = std::fs::read_dir(repo.join("examples"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    ours.sort();
    for p in ours {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.starts_with("inputs.") {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push((format!("hyops-pve/{name}"), text));
            }
        }
    }
    out
}

fn examples(g: &mut Gen, upstream_src: &Path, repo: &Path) {
    for (name, text) in example_files(upstream_src, repo) {
        g.push(
            "examples",
            format!("example:{name}:template"),
            Some(text.clone()),
        );
        let c = g.push(
            "examples",
            format!("example:{name}:empty-root"),
            Some(text.clone()),
        );
        c.files.clear();
        let c = g.push("examples", format!("example:{name}:no-env"), Some(text));
        c.hyops_env = None;
    }
}

fn top_level_fields(g: &mut Gen) {
    let pool = base_pool();
    for field in [
        "require_ipam",
        "allow_vm_set_replace",
        "template_state_ref",
        "template_key",
        "template_vm_id",
        "build_image",
        "cpu_cores",
        "memory_mb",
        "disk_size_gb",
        "cpu_type",
        "os_type",
        "dns_domain",
        "dns_servers",
        "tags",
        "vms",
        "vm_name",
        "interfaces",
        "post_apply_ssh_readiness",
        "addressing",
        "name_prefix",
        "preset_ref",
    ] {
        g.mutate("top-level", &pool, &[field], PALETTE);
    }
    // DNS servers and tags items.
    for v in [
        "[8.8.8.8, 1.1.1.1]",
        "[' 8.8.8.8 ']",
        "[008.8.8.8]",
        "[8.8.8]",
        "[fd00::53]",
        "['fe80::1%eth0']",
        "['fe80::1%']",
        "['1::2::3']",
        "[256.1.1.1]",
        "['']",
        "[~]",
        "[8]",
        "[yes]",
        "[\"\\x1c8.8.8.8\\x1c\"]",
        "[1.1.1.1, nope]",
    ] {
        let mut y = pool.clone();
        y.set(&["dns_servers"], raw(v));
        g.tree("top-level", format!("top-level:dns_servers={v}"), &y);
    }
    for v in [
        "[a, '']",
        "[a, ' ']",
        "[a, 1]",
        "['it''s']",
        "[[a]]",
        "[a, {b: 1}]",
    ] {
        let mut y = pool.clone();
        y.set(&["tags"], raw(v));
        g.tree("top-level", format!("top-level:tags={v}"), &y);
    }
}

fn per_vm_and_keys(g: &mut Gen) {
    let pool = base_pool();
    for field in [
        "role",
        "vm_id",
        "interfaces",
        "vm_name",
        "cloud_init_user_data",
    ] {
        g.mutate("per-vm", &pool, &["vms", "app-01", field], SMALL);
    }
    for v in ["4294967295", "4294967296", "'100'", "100", "true"] {
        let mut y = pool.clone();
        y.set(&["vms", "app-01", "vm_id"], raw(v));
        g.tree("per-vm", format!("per-vm:vm_id={v}"), &y);
    }
    let cfg = match &pool {
        Y::Map(kv) => kv
            .iter()
            .find(|(k, _)| k == "vms")
            .and_then(|(_, v)| match v {
                Y::Map(vms) => vms.first().map(|(_, c)| c.clone()),
                _ => None,
            })
            .expect("base vm"),
        _ => unreachable!(),
    };
    let long = "a".repeat(63);
    let too_long = "a".repeat(64);
    for key in [
        "1",
        "yes",
        "null",
        "~",
        "010",
        "1.5",
        "2024-01-01",
        "App-01",
        "APP",
        "'  app-02  '",
        "\"\\x1capp-03\\x1c\"",
        "app_01",
        "-app",
        "app.01",
        "'app 01'",
        long.as_str(),
        too_long.as_str(),
        "'0'",
        "é",
        "\"K\"",
    ] {
        let y = map(&[
            ("require_ipam", raw("false")),
            ("vms", Y::Map(vec![(key.to_string(), cfg.clone())])),
        ]);
        g.tree("keys", format!("keys:vms key {key}"), &y);
    }
    // Two VMs: ordering of errors, keys differing by case, keys equal once trimmed.
    for (a, b) in [
        ("app-01", "App-01"),
        ("b-01", "a-01"),
        ("app", "' app'"),
        ("1", "'1'"),
    ] {
        let mut second = cfg.clone();
        second.set(&["role"], raw("''"));
        let y = map(&[
            ("require_ipam", raw("false")),
            (
                "vms",
                Y::Map(vec![(a.to_string(), cfg.clone()), (b.to_string(), second)]),
            ),
        ]);
        g.tree("keys", format!("keys:two vms {a} {b}"), &y);
    }
    // Both valid, one VM once trimmed (refused by hyops-pve, not by hyops' validator).
    let y = map(&[
        ("require_ipam", raw("false")),
        (
            "vms",
            Y::Map(vec![
                ("app".into(), cfg.clone()),
                ("' app'".into(), cfg.clone()),
            ]),
        ),
    ]);
    g.tree("keys", "keys:one vm once trimmed".into(), &y);
    // Module-level interfaces cover VMs without their own.
    let y = map(&[
        ("require_ipam", raw("false")),
        ("interfaces", Y::Seq(vec![nic("vmbr0", Some("dhcp"), None)])),
        (
            "vms",
            map(&[("a", map(&[("role", raw("x"))])), ("b", raw("{}"))]),
        ),
    ]);
    g.tree("per-vm", "per-vm:module interfaces cover".into(), &y);
    let mut y2 = y.clone();
    y2.set(&["interfaces"], raw("[]"));
    g.tree("per-vm", "per-vm:empty module interfaces".into(), &y2);
    let mut y3 = y;
    y3.set(&["interfaces"], raw("[{bridge: ''}]"));
    g.tree("per-vm", "per-vm:bad module interfaces".into(), &y3);
}

fn nics(g: &mut Gen) {
    let pool = base_pool();
    let nic0 = ["vms", "app-01", "interfaces", "0"];
    let with = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut p: Vec<&'static str> = vec!["vms", "app-01", "interfaces", "0"];
        p.extend_from_slice(rest);
        p
    };
    for field in ["bridge", "mac_address", "vlan_id", "ipv4"] {
        g.mutate("nic", &pool, &with(&[field]), SMALL);
    }
    g.mutate("nic", &pool, &with(&["ipv4", "address"]), SMALL);
    g.mutate("nic", &pool, &with(&["ipv4", "gateway"]), SMALL);
    for mac in [
        "BC:24:11:00:05:21",
        "bc:24:11:00:05:21",
        "52:54:00:12:34:56",
        "'52:54:00:12:34:56'",
        "52:54:00:aa:bb:cc",
        "BC-24-11-00-05-21",
        "BC:24:11:00:05",
        "' BC:24:11:00:05:21 '",
        "true",
        "false",
        "''",
    ] {
        let mut y = pool.clone();
        y.set(&with(&["mac_address"]), raw(mac));
        g.tree("nic", format!("nic:mac_address={mac}"), &y);
    }
    for (addr, gw) in [
        ("10.20.0.11/24", Some("10.20.0.1")),
        ("10.20.0.11/24", None),
        ("10.20.0.11/24", Some("10.21.0.1")),
        ("10.20.0.11/24", Some("fd00::1")),
        ("10.20.0.11/24", Some("10.20.0.300")),
        ("10.20.0.11/24", Some("''")),
        ("10.20.0.11", Some("10.20.0.11")),
        ("10.20.0.11/255.255.255.0", Some("10.20.0.1")),
        ("10.20.0.11/0.0.0.255", Some("10.20.0.1")),
        ("10.20.0.11/255.0.255.0", Some("10.20.0.1")),
        ("10.20.0.11/33", Some("10.20.0.1")),
        ("10.20.0.11/024", Some("10.20.0.1")),
        ("010.20.0.11/24", Some("10.20.0.1")),
        ("fd00::11/64", Some("10.20.0.1")),
        ("'fe80::1%eth0/64'", None),
        ("dhcp", None),
        ("DHCP", None),
        ("' dhcp '", None),
        ("dhcp", Some("10.20.0.1")),
        ("10.20.0.11/24", Some("' 10.20.0.1 '")),
        ("10.20.0.0/24", Some("10.20.0.255")),
        ("'10.20.0.11/'", Some("10.20.0.1")),
        ("'it''s'", Some("10.20.0.1")),
        ("\"a\\nb\"", Some("10.20.0.1")),
        ("10.20.0.11/24", Some("1.5")),
        ("10.20.0.11/24", Some("[1]")),
        ("10.20.0.11/24", Some("{a: 1}")),
        ("10.20.0.11/24", Some("yes")),
    ] {
        let mut y = pool.clone();
        y.set(&nic0, nic("vmbr0", Some(addr), gw));
        g.tree("nic", format!("nic:ipv4 {addr} gw {gw:?}"), &y);
    }
    // Gateways per NIC: only the first may carry one.
    for (second_addr, second_gw) in [
        ("dhcp", None),
        ("10.30.0.5/24", None),
        ("10.30.0.5/24", Some("10.30.0.1")),
        ("dhcp", Some("10.30.0.1")),
    ] {
        let mut y = pool.clone();
        y.set(
            &["vms", "app-01", "interfaces"],
            Y::Seq(vec![
                nic("vmbr0", Some("10.20.0.11/24"), Some("10.20.0.1")),
                nic("vmbr1", Some(second_addr), second_gw),
            ]),
        );
        g.tree(
            "nic",
            format!("nic:second nic {second_addr} {second_gw:?}"),
            &y,
        );
    }
    for v in [
        "[]",
        "[~]",
        "[a]",
        "[[]]",
        "{bridge: vmbr0}",
        "[{}]",
        "[{bridge: vmbr0, ipv4: ~}]",
    ] {
        let mut y = pool.clone();
        y.set(&["vms", "app-01", "interfaces"], raw(v));
        g.tree("nic", format!("nic:interfaces={v}"), &y);
    }
}

fn single_vm(g: &mut Gen) {
    let single = base_single();
    for field in [
        "vm_name",
        "vm_id",
        "vm_mac",
        "vm_ipv4_cidr",
        "vm_gateway",
        "cpu_type",
        "os_type",
        "dns_domain",
        "vm_role",
    ] {
        g.mutate("single-vm", &single, &[field], SMALL);
    }
    for (cidr, gw) in [
        ("10.12.0.51/24", "10.12.1.1"),
        ("10.12.0.51", "10.12.0.51"),
        ("fd00::51/64", "10.12.0.1"),
        ("10.12.0.51/24", "fd00::1"),
        ("10.12.0.51/24", "nope"),
        ("nope", "10.12.0.1"),
        ("10.12.0.51/255.255.255.0", "10.12.0.1"),
    ] {
        let mut y = single.clone();
        y.set(&["vm_ipv4_cidr"], raw(cidr));
        y.set(&["vm_gateway"], raw(gw));
        g.tree("single-vm", format!("single-vm:{cidr} {gw}"), &y);
    }
    for mac in [
        "bc:24:11:00:05:21",
        "52:54:00:12:34:56",
        "BC-24-11-00-05-21",
        "'BC:24:11:00:05:2'",
    ] {
        let mut y = single.clone();
        y.set(&["vm_mac"], raw(mac));
        g.tree("single-vm", format!("single-vm:vm_mac={mac}"), &y);
    }
    for name in ["NetBox-App-01", "netbox_app", "'  netbox-app-01 '", "1"] {
        let mut y = single.clone();
        y.set(&["vm_name"], raw(name));
        g.tree("single-vm", format!("single-vm:vm_name={name}"), &y);
    }
    // vms present but empty falls back to single-VM mode; a non-map vms never does.
    for vms in ["{}", "~", "[]", "''"] {
        let mut y = single.clone();
        y.set(&["vms"], raw(vms));
        g.tree("single-vm", format!("single-vm:vms={vms}"), &y);
    }
    let mut y = single.clone();
    y.set(
        &["interfaces"],
        Y::Seq(vec![nic("vmbr9", Some("dhcp"), None)]),
    );
    g.tree("single-vm", "single-vm:with module interfaces".into(), &y);
}

fn readiness(g: &mut Gen) {
    let pool = base_pool();
    for field in [
        "enabled",
        "required",
        "ssh_proxy_jump_auto",
        "target_port",
        "connectivity_timeout_s",
        "connectivity_wait_s",
        "ssh_proxy_jump_port",
        "target_user",
        "ssh_proxy_jump_host",
        "ssh_proxy_jump_user",
        "ssh_private_key_file",
    ] {
        g.mutate(
            "readiness",
            &pool,
            &["post_apply_ssh_readiness", field],
            SMALL,
        );
    }
    for v in ["65535", "65536", "4294967296"] {
        let mut y = pool.clone();
        y.set(&["post_apply_ssh_readiness", "target_port"], raw(v));
        g.tree("readiness", format!("readiness:target_port={v}"), &y);
    }
}

fn ipam_matrix(g: &mut Gen) {
    let addressing = [
        ("absent", None),
        ("null", Some("~")),
        ("static", Some("{mode: static}")),
        ("static-empty-ipam", Some("{mode: static, ipam: {}}")),
        ("static-null-ipam", Some("{mode: static, ipam: ~}")),
        ("static-ipam", Some("{mode: static, ipam: {provider: netbox}}")),
        ("static-upper", Some("{mode: ' STATIC '}")),
        ("ipam-no-ipam", Some("{mode: ipam}")),
        ("ipam-netbox", Some("{mode: ipam, ipam: {provider: netbox}}")),
        ("ipam-netbox-upper", Some("{mode: ipam, ipam: {provider: NetBox}}")),
        ("ipam-other", Some("{mode: ipam, ipam: {provider: phpipam}}")),
        ("ipam-list", Some("{mode: ipam, ipam: [netbox]}")),
        ("ipam-unknown", Some("{mode: ipam, ipam: {provider: netbox, zone: a, b: 1}}")),
        ("ipam-net-ref", Some("{mode: ipam, ipam: {provider: netbox, network_state_ref: core/onprem/network-sdn}}")),
        ("unknown-keys", Some("{mode: static, zzz: 1, aaa: 2}")),
        ("non-string-key", Some("{mode: static, 1: x, yes: y}")),
        ("bogus", Some("{mode: bogus}")),
        ("mode-true", Some("{mode: yes}")),
        ("list", Some("[static]")),
        ("string", Some("static")),
    ];
    for require in ["absent", "true", "false", "yes", "off", "'true'", "1"] {
        for (name, addr) in addressing {
            let mut y = base_pool();
            match require {
                "absent" => y.remove(&["require_ipam"]),
                r => y.set(&["require_ipam"], raw(r)),
            }
            if let Some(a) = addr {
                y.set(&["addressing"], raw(a));
            }
            g.tree(
                "ipam",
                format!("ipam:require_ipam={require} addressing={name}"),
                &y,
            );
        }
    }
}

fn aliases(g: &mut Gen) {
    for bridge in [
        "vnetenv",
        "vnetenvdata",
        "VnetEnv",
        "' vnetenv '",
        "vnetmgmt",
    ] {
        for env in [
            Some("dev"),
            Some("development"),
            Some("Staging"),
            Some("prod"),
            Some("shared"),
            Some("qa"),
            Some(""),
            None,
        ] {
            let mut y = base_pool();
            y.set(&["vms", "app-01", "interfaces", "0", "bridge"], raw(bridge));
            let c = g.tree("aliases", format!("aliases:{bridge} env={env:?}"), &y);
            c.hyops_env = env.map(str::to_string);
        }
    }
    for env in [Some("dev"), Some("qa"), None] {
        let mut y = base_single();
        y.set(&["vm_bridge"], raw("vnetenv"));
        let c = g.tree("aliases", format!("aliases:vm_bridge env={env:?}"), &y);
        c.hyops_env = env.map(str::to_string);
        let mut y = base_pool();
        y.set(
            &["interfaces"],
            Y::Seq(vec![nic("vnetenvdata", Some("dhcp"), None)]),
        );
        let c = g.tree(
            "aliases",
            format!("aliases:module interfaces env={env:?}"),
            &y,
        );
        c.hyops_env = env.map(str::to_string);
    }
}

fn placeholders(g: &mut Gen) {
    let pool = base_pool();
    let p = ["vms", "app-01", "interfaces", "0"];
    for v in [
        "CHANGE_ME",
        "change-me",
        "CHANGE_ME_BRIDGE",
        "vnet-change-me-1",
        "x_replace_me",
        "REPLACE_ME",
        "replace-this",
        "changeme",
        "'  change_me  '",
        "\"it's-change-me-\"",
    ] {
        let mut y = pool.clone();
        let mut path = p.to_vec();
        path.push("bridge");
        y.set(&path, raw(v));
        g.tree("placeholders", format!("placeholders:bridge={v}"), &y);
        let mut y = pool.clone();
        y.set(&p, nic("vmbr0", Some(v), Some("10.20.0.1")));
        g.tree("placeholders", format!("placeholders:address={v}"), &y);
        let mut y = pool.clone();
        y.set(&p, nic("vmbr0", Some("10.20.0.11/24"), Some(v)));
        g.tree("placeholders", format!("placeholders:gateway={v}"), &y);
    }
}

fn yaml_variants(g: &mut Gen) {
    let pool = base_pool().render();
    let texts: Vec<(&str, String)> = vec![
        ("bom", format!("\u{feff}{pool}")),
        ("crlf", pool.replace('\n', "\r\n")),
        ("doc-start", format!("---\n{pool}")),
        ("doc-end", format!("{pool}...\n")),
        ("two-docs", format!("{pool}---\ncpu_cores: 4\n")),
        ("comments", format!("# head\n{pool}# tail\n")),
        ("empty", String::new()),
        ("only-comment", "# nothing\n".into()),
        ("null-doc", "~\n".into()),
        ("false-doc", "false\n".into()),
        ("zero-doc", "0\n".into()),
        ("empty-list-doc", "[]\n".into()),
        ("list-doc", "- a\n- b\n".into()),
        ("scalar-doc", "hello\n".into()),
        ("inputs-wrapper", format!("inputs:\n{}", indent(&pool))),
        ("duplicate-key-last-wins", format!("{pool}require_ipam: true\n")),
        ("duplicate-key-first-bad", format!("cpu_cores: x\n{pool}cpu_cores: 4\n")),
        ("flow", "{require_ipam: false, vms: {app-01: {interfaces: [{bridge: vmbr0}]}}}\n".into()),
        (
            "merge-nic",
            "require_ipam: no\nnic: &nic {bridge: vmbr0, ipv4: {address: dhcp}}\nvms:\n  app-01:\n    interfaces:\n      - <<: *nic\n        bridge: vmbr1\n".into(),
        ),
        (
            "merge-list-short-keys",
            "require_ipam: no\na: &a {x: 1}\nb: &b {x: 2}\nvms:\n  app-01:\n    interfaces: [{bridge: vmbr0}]\n    <<: [*a, *b]\n".into(),
        ),
        (
            "merge-list-precedence",
            "require_ipam: no\na: &a {role: ''}\nb: &b {role: ok}\nvms:\n  app-01:\n    interfaces: [{bridge: vmbr0}]\n    <<: [*a, *b]\n".into(),
        ),
        (
            "merge-list-precedence-2",
            "require_ipam: no\na: &a {role: ok}\nb: &b {role: ''}\nvms:\n  app-01:\n    interfaces: [{bridge: vmbr0}]\n    <<: [*a, *b]\n".into(),
        ),
        (
            "merge-own-key-wins",
            "require_ipam: no\na: &a {role: ''}\nvms:\n  app-01:\n    <<: *a\n    role: ok\n    interfaces: [{bridge: vmbr0}]\n".into(),
        ),
        (
            "merge-top-level",
            "base: &base {require_ipam: no, cpu_cores: 4}\n<<: *base\nvms: {app-01: {interfaces: [{bridge: vmbr0}]}}\n".into(),
        ),
        ("merge-scalar", "<<: 1\nrequire_ipam: no\n".into()),
        ("merge-list-of-scalars", "<<: [1]\nrequire_ipam: no\n".into()),
        ("quoted-merge-key", format!("'<<': {{a: 1}}\n{pool}")),
        ("alias-reuse", "require_ipam: no\nvms:\n  a: &vm {interfaces: [{bridge: vmbr0}]}\n  b: *vm\n".into()),
        ("duplicate-anchor", "require_ipam: no\nx: &a 1\ny: &a 2\nvms: {a: {interfaces: [{bridge: vmbr0}]}}\n".into()),
        ("undefined-alias", format!("{pool}x: *nope\n")),
        ("recursive-alias", "require_ipam: no\na: &a [*a]\n".into()),
        ("tag-str", format!("{pool}cpu_cores: !!str 4\n")),
        ("tag-int", format!("{pool}cpu_cores: !!int '4'\n")),
        ("tag-int-bad", format!("{pool}cpu_cores: !!int 'four'\n")),
        ("tag-float", format!("{pool}memory_mb: !!float 4096\n")),
        ("tag-bool", format!("{pool}build_image: !!bool 'off'\n")),
        ("tag-null", format!("{pool}cpu_cores: !!null ''\n")),
        ("tag-nonspecific", format!("{pool}cpu_cores: ! '4'\n")),
        ("tag-unknown", format!("{pool}cpu_cores: !custom 4\n")),
        ("tag-binary", format!("{pool}extra: !!binary aGVsbG8=\n")),
        ("tag-set", format!("{pool}extra: !!set {{a, b}}\n")),
        ("tag-timestamp-bad", format!("{pool}extra: !!timestamp nope\n")),
        ("complex-key", format!("{pool}? [a]\n: 1\n")),
        ("value-key", format!("{pool}=: 1\n")),
        ("value-scalar", format!("{pool}extra: =\n")),
        ("tab-indent", "require_ipam: no\nvms:\n\tapp-01: {}\n".into()),
        ("control-char", format!("{pool}extra: \"\u{1}\"\n")),
        ("control-char-raw", format!("{pool}extra: a\u{1}b\n")),
        ("escaped-control", format!("{pool}name_prefix: \"\\x01\"\n")),
        ("nel", format!("{pool}name_prefix: \"a\\Nb\"\n")),
        ("raw-nel-quoted", format!("{pool}name_prefix: \"lab\u{85}  x\"\n")),
        ("raw-nel-between-keys", format!("{pool}cpu_cores: 2\u{85}memory_mb: 4096\n")),
        ("cr-only", pool.replace('\n', "\r")),
        ("crlf-quoted-continuation", format!("{pool}name_prefix: \"lab\r\n  x\"\r\n")),
        ("line-separator", format!("{pool}name_prefix: lab\u{2028}x\n")),
        ("tab-in-plain-value", format!("{pool}name_prefix: lab\tx\n")),
        ("tab-after-value", format!("{pool}cpu_cores: 2\t\n")),
        ("tab-before-comment", format!("{pool}cpu_cores: 2\t# two\n")),
        ("tab-in-comment", format!("{pool}cpu_cores: 2 # \ttwo\n")),
        ("tab-in-quoted", format!("{pool}name_prefix: \"lab\tx\"\n")),
        ("tab-in-block", format!("{pool}cloud_init_user_data: |\n  #cloud-config\n  runcmd:\n    - [\"echo\", \"a\tb\"]\n")),
        ("tab-only-line", format!("{pool}\t\ncpu_cores: 2\n")),
        ("tab-in-flow", format!("{pool}tags: [a,\tb]\n")),
        ("second-bom", format!("\u{feff}\u{feff}{pool}")),
        ("unicode", format!("{pool}name_prefix: équipe\n")),
        ("long-key", format!("{pool}{}: 1\n", "k".repeat(1100))),
        ("deep", format!("{pool}extra: {}{}\n", "[".repeat(70), "]".repeat(70))),
        ("deep-ok", format!("{pool}extra: {}{}\n", "[".repeat(40), "]".repeat(40))),
        ("timestamp-value", format!("{pool}name_prefix: 2001-12-14t21:59:43.10-05:00\n")),
        ("timestamp-bad-date", format!("{pool}name_prefix: 2001-02-30\n")),
        ("int-key-top", format!("{pool}1: one\n")),
        ("bool-key-top", format!("{pool}yes: one\n")),
        ("int-keys-only-map", format!("{pool}extra: {{1: a, 2: b}}\n")),
        ("mixed-keys-map", format!("{pool}extra: {{1: a, b: c}}\n")),
        ("null-key-alone", format!("{pool}extra: {{~: a}}\n")),
        ("date-key", format!("{pool}extra: {{2024-01-01: a}}\n")),
        ("nan-value", format!("{pool}extra: .nan\n")),
        ("big-int-value", format!("{pool}extra: 123456789012345678901234567890\n")),
        ("sexagesimal-float", format!("{pool}extra: 190:20:30.15\n")),
        ("octal-cpu", format!("{pool}cpu_cores: 010\n")),
        ("underscore-memory", format!("{pool}memory_mb: 4_096\n")),
        ("hex-disk", format!("{pool}disk_size_gb: 0x40\n")),
        ("binary-cpu", format!("{pool}cpu_cores: 0b11\n")),
        ("sexagesimal-cpu", format!("{pool}cpu_cores: 1:00\n")),
        ("on-off", format!("{pool}build_image: off\nallow_vm_set_replace: on\n")),
        ("y-is-string", format!("{pool}build_image: y\n")),
        ("quoted-yes", format!("{pool}build_image: 'yes'\n")),
        ("string-escapes", format!("{pool}vm_role: \"a\\tb\\\\c\"\n")),
        ("strip-separators", "require_ipam: no\nvms:\n  \"\\x1capp-01\\x1f\":\n    role: \"\\x1capp\\x1d\"\n    interfaces: [{bridge: \"\\x1evmbr0\"}]\n".into()),
        ("nbsp-key", "require_ipam: no\nvms:\n  \"\\u00a0app-01\":\n    interfaces: [{bridge: vmbr0}]\n".into()),
    ];
    for (name, text) in texts {
        g.push("yaml", format!("yaml:{name}"), Some(text));
    }
    let c = g.push("yaml", "yaml:no-inputs-file".into(), None);
    c.env.clear();
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn env_overrides(g: &mut Gen) {
    let pool = base_pool().render();
    let sets: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "json-object",
            vec![("HYOPS_INPUTS_JSON", r#"{"cpu_cores": 4, "tags": ["a"]}"#)],
        ),
        ("json-array", vec![("HYOPS_INPUTS_JSON", "[1, 2]")]),
        (
            "json-invalid",
            vec![("HYOPS_INPUTS_JSON", "{cpu_cores: 4}")],
        ),
        ("json-blank", vec![("HYOPS_INPUTS_JSON", "   ")]),
        (
            "json-nan",
            vec![("HYOPS_INPUTS_JSON", r#"{"cpu_cores": NaN}"#)],
        ),
        (
            "json-infinity",
            vec![("HYOPS_INPUTS_JSON", r#"{"memory_mb": Infinity}"#)],
        ),
        (
            "json-big",
            vec![(
                "HYOPS_INPUTS_JSON",
                r#"{"memory_mb": 123456789012345678901234567890}"#,
            )],
        ),
        (
            "json-float-int",
            vec![("HYOPS_INPUTS_JSON", r#"{"cpu_cores": 4.0}"#)],
        ),
        (
            "json-shallow",
            vec![(
                "HYOPS_INPUTS_JSON",
                r#"{"post_apply_ssh_readiness": {"target_port": 0}}"#,
            )],
        ),
        (
            "json-dup-key",
            vec![("HYOPS_INPUTS_JSON", r#"{"cpu_cores": "x", "cpu_cores": 3}"#)],
        ),
        (
            "json-vms",
            vec![(
                "HYOPS_INPUTS_JSON",
                r#"{"vms": {"b-01": {"interfaces": [{"bridge": "vmbr0", "mac_address": "zz"}]}}}"#,
            )],
        ),
        (
            "json-escapes",
            vec![("HYOPS_INPUTS_JSON", r#"{"name_prefix": "a\u00e9\n"}"#)],
        ),
        (
            "json-trailing",
            vec![("HYOPS_INPUTS_JSON", r#"{"cpu_cores": 4} x"#)],
        ),
        (
            "json-surrounding-space",
            vec![("HYOPS_INPUTS_JSON", "\u{1c} {\"cpu_cores\": 4} \u{1f}")],
        ),
        ("input-int", vec![("HYOPS_INPUT_cpu_cores", "6")]),
        ("input-string", vec![("HYOPS_INPUT_cpu_cores", "six")]),
        ("input-quoted-int", vec![("HYOPS_INPUT_cpu_cores", "\"6\"")]),
        ("input-blank", vec![("HYOPS_INPUT_cpu_type", "  ")]),
        (
            "input-separators",
            vec![("HYOPS_INPUT_cpu_cores", "\u{1c}4\u{1f}")],
        ),
        ("input-upper", vec![("HYOPS_INPUT_CPU_CORES", "x")]),
        (
            "input-nested",
            vec![(
                "HYOPS_INPUT_post_apply_ssh_readiness__connectivity_wait_s",
                "-1",
            )],
        ),
        (
            "input-nested-new",
            vec![("HYOPS_INPUT_vms__b-01__role", "\"\"")],
        ),
        (
            "input-nested-over-scalar",
            vec![("HYOPS_INPUT_require_ipam__x", "1")],
        ),
        ("input-null", vec![("HYOPS_INPUT_addressing", "null")]),
        ("input-list", vec![("HYOPS_INPUT_tags", "[]")]),
        (
            "input-object",
            vec![("HYOPS_INPUT_addressing", r#"{"mode": "ipam"}"#)],
        ),
        ("input-nan", vec![("HYOPS_INPUT_memory_mb", "NaN")]),
        (
            "input-big",
            vec![("HYOPS_INPUT_memory_mb", "99999999999999999999999")],
        ),
        ("input-bool-word", vec![("HYOPS_INPUT_require_ipam", "yes")]),
        ("input-true", vec![("HYOPS_INPUT_require_ipam", "true")]),
        ("input-empty-name", vec![("HYOPS_INPUT_", "1")]),
        ("input-only-separators", vec![("HYOPS_INPUT_____", "1")]),
        ("input-leading-sep", vec![("HYOPS_INPUT___cpu_cores", "x")]),
        ("input-space-name", vec![("HYOPS_INPUT_ cpu_cores ", "x")]),
        (
            "order-a",
            vec![
                ("HYOPS_INPUT_CPU_CORES", "3"),
                ("HYOPS_INPUT_cpu_cores", "x"),
            ],
        ),
        (
            "order-b",
            vec![
                ("HYOPS_INPUT_cpu_cores", "x"),
                ("HYOPS_INPUT_CPU_CORES", "3"),
            ],
        ),
        (
            "order-c",
            vec![
                ("HYOPS_INPUT_limits", "5"),
                ("HYOPS_INPUT_addressing__mode", "x"),
            ],
        ),
        (
            "order-d",
            vec![
                ("HYOPS_INPUT_addressing__mode", "x"),
                ("HYOPS_INPUT_addressing", "null"),
            ],
        ),
        (
            "order-e",
            vec![
                ("HYOPS_INPUT_addressing", "null"),
                ("HYOPS_INPUT_addressing__mode", "x"),
            ],
        ),
        (
            "json-then-input",
            vec![
                ("HYOPS_INPUTS_JSON", r#"{"cpu_cores": "x"}"#),
                ("HYOPS_INPUT_cpu_cores", "2"),
            ],
        ),
        (
            "input-then-json",
            vec![
                ("HYOPS_INPUT_cpu_cores", "2"),
                ("HYOPS_INPUTS_JSON", r#"{"cpu_cores": "x"}"#),
            ],
        ),
        ("input-preset", vec![("HYOPS_INPUT_preset_ref", "small")]),
        (
            "input-lifecycle",
            vec![
                ("HYOPS_INPUT__hyops_lifecycle_command", "destroy"),
                ("HYOPS_INPUT_cpu_cores", "x"),
            ],
        ),
        (
            "input-target-ref",
            vec![(
                "HYOPS_INPUT_target_state_ref",
                "platform/onprem/platform-vm",
            )],
        ),
        (
            "input-deep-json",
            vec![("HYOPS_INPUT_extra", "[[[[[[[[[[1]]]]]]]]]]")],
        ),
    ];
    for (name, pairs) in sets {
        let c = g.push("env", format!("env:{name}"), Some(pool.clone()));
        c.env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
}

fn state_references(g: &mut Gen) {
    let pool = base_pool();
    let tpl = "state/modules/core__onprem__template-image";
    let template_states: Vec<(&str, Files)> = vec![
        ("missing", vec![]),
        ("broken-json", vec![(format!("{tpl}/latest.json"), "{\"status\": ".into())]),
        ("not-object", vec![(format!("{tpl}/latest.json"), "[1]".into())]),
        ("bom", vec![(format!("{tpl}/latest.json"), "\u{feff}{}".into())]),
        ("not-utf8", vec![(format!("{tpl}/latest.json"), "{\"a\": \"\u{ff}\"}".into())]),
        ("running", vec![(format!("{tpl}/latest.json"), r#"{"status": "Running", "outputs": {}}"#.into())]),
        ("no-status", vec![(format!("{tpl}/latest.json"), r#"{"outputs": {}}"#.into())]),
        ("status-int", vec![(format!("{tpl}/latest.json"), r#"{"status": 1, "outputs": {}}"#.into())]),
        ("outputs-list", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": [1]}"#.into())]),
        ("key-missing", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": {"zeta": 1, "template_vm_id": 9000}}"#.into())]),
        ("id-string", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": {"vm_ids": {"ubuntu-24.04": " 9_001 "}}}"#.into())]),
        ("id-zero", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": {"vm_ids": {"ubuntu-24.04": 0}}}"#.into())]),
        ("id-bool", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": {"vm_ids": {"ubuntu-24.04": true}}}"#.into())]),
        ("id-huge", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": {"vm_ids": {"ubuntu-24.04": 99999999999}}}"#.into())]),
        ("dict-entry", vec![(format!("{tpl}/latest.json"), r#"{"status": "ok", "outputs": {"templates": {"ubuntu-24.04": {"id": 5, "vm_id": 0, "template_id": 6}}}}"#.into())]),
        ("is-dir", vec![(format!("{tpl}/latest.json/x"), "{}".into())]),
    ];
    for (name, files) in template_states {
        let c = g.tree("template-state", format!("template-state:{name}"), &pool);
        c.files = files;
    }
    for (r, key) in [
        ("core/onprem/template-image#img_22", Some("ubuntu-24.04")),
        ("core.onprem.template-image", None),
        ("Core/Onprem/Template-Image", None),
        ("core/onprem/template-image#-bad", None),
        ("''", None),
        ("' '", Some("x")),
    ] {
        let mut y = pool.clone();
        y.set(&["template_state_ref"], raw(r));
        if let Some(k) = key {
            y.set(&["template_key"], raw(k));
        }
        g.tree(
            "template-state",
            format!("template-state:ref={r} key={key:?}"),
            &y,
        );
        y.set(&["template_vm_id"], raw("9100"));
        g.tree(
            "template-state",
            format!("template-state:ref={r} key={key:?} with id"),
            &y,
        );
    }
    let mut y = pool.clone();
    y.set(&["template_key"], raw("''"));
    let c = g.tree(
        "template-state",
        "template-state:no key scalar fallback".into(),
        &y,
    );
    c.files = vec![(
        format!("{tpl}/latest.json"),
        r#"{"status": "ok", "outputs": {"vm_id": 77, "id": 78}}"#.into(),
    )];

    // ssh_keys_from_init.
    let ready = |body: &str| {
        vec![
            template_ok(),
            ("meta/proxmox.ready.json".to_string(), body.to_string()),
        ]
    };
    let cases: Vec<(&str, &str, Files)> = vec![
        (
            "no-marker",
            "{ssh_keys_from_init: true, ssh_keys_init_target: proxmox}",
            vec![template_ok()],
        ),
        (
            "gcp-default",
            "{ssh_keys_from_init: true}",
            vec![template_ok()],
        ),
        (
            "yes-string",
            "{ssh_keys_from_init: 'yes', ssh_keys_init_target: proxmox}",
            vec![template_ok()],
        ),
        (
            "false",
            "{ssh_keys_from_init: false, ssh_keys_init_target: proxmox}",
            vec![template_ok()],
        ),
        (
            "keys-given",
            "{ssh_keys_from_init: true, ssh_keys: [ssh-ed25519 AAAA x]}",
            vec![template_ok()],
        ),
        (
            "blank-keys",
            "{ssh_keys_from_init: true, ssh_keys: [' '], ssh_keys_init_target: proxmox}",
            vec![template_ok()],
        ),
        (
            "not-ready",
            "{ssh_keys_from_init: true, ssh_keys_init_target: PROXMOX}",
            ready(r#"{"status": "pending"}"#),
        ),
        (
            "no-key",
            "{ssh_keys_from_init: true, ssh_keys_init_target: proxmox}",
            ready(r#"{"status": "ready", "context": {}}"#),
        ),
        (
            "with-keys",
            "{ssh_keys_from_init: true, ssh_keys_init_target: proxmox}",
            ready(
                r#"{"status": "ready", "context": {"ssh_public_keys": ["k1", "k1", " "], "ssh_public_key": "k2"}}"#,
            ),
        ),
        (
            "marker-list",
            "{ssh_keys_from_init: true, ssh_keys_init_target: proxmox}",
            ready("[]"),
        ),
        (
            "marker-broken",
            "{ssh_keys_from_init: true, ssh_keys_init_target: proxmox}",
            ready("{"),
        ),
    ];
    for (name, extra, files) in cases {
        let text = format!("{}{}", pool.render(), flow_to_block(extra));
        let c = g.push(
            "ssh-keys-from-init",
            format!("ssh-keys-from-init:{name}"),
            Some(text),
        );
        c.files = files;
    }

    // target_state_ref / network_state_ref, which hyops resolves for every module.
    let vm_state = "state/modules/platform__onprem__platform-vm";
    let net_state = "state/modules/core__onprem__network-sdn";
    let refs: Vec<(&str, &str, Files)> = vec![
        ("target-missing", "{target_state_ref: platform/onprem/platform-vm#other, target_vm_key: a}", vec![template_ok()]),
        ("target-no-key", "{target_state_ref: platform/onprem/platform-vm}", vec![template_ok()]),
        ("target-invalid", "{target_state_ref: 'Bad/Ref', target_vm_key: a}", vec![template_ok()]),
        ("target-host-set", "{target_state_ref: nope/x, target_host: 10.0.0.1}", vec![template_ok()]),
        (
            "target-not-ready",
            "{target_state_ref: platform/onprem/platform-vm#other, target_vm_key: a}",
            vec![template_ok(), (format!("{vm_state}/instances/other.json"), r#"{"status": "error"}"#.into())],
        ),
        (
            "target-no-ip",
            "{target_state_ref: platform/onprem/platform-vm#other, target_vm_key: zz}",
            vec![template_ok(), (format!("{vm_state}/instances/other.json"), r#"{"status": "ok", "outputs": {"vms": {"b": {}, "a": {}}}}"#.into())],
        ),
        (
            "target-ok",
            "{target_state_ref: platform/onprem/platform-vm#other, target_vm_key: a}",
            vec![template_ok(), (format!("{vm_state}/instances/other.json"), r#"{"status": "ok", "outputs": {"vms": {"a": {"ipv4_address": "10.9.0.5/24"}}}}"#.into())],
        ),
        (
            "target-loopback",
            "{target_state_ref: platform/onprem/platform-vm#other, target_vm_key: a}",
            vec![template_ok(), (format!("{vm_state}/instances/other.json"), r#"{"status": "ok", "outputs": {"ipv4_addresses": {"a": ["127.0.0.1"]}}}"#.into())],
        ),
        ("network-missing", "{network_state_ref: core/onprem/network-sdn}", vec![template_ok()]),
        ("network-invalid", "{network_state_ref: '..'}", vec![template_ok()]),
        (
            "network-not-ready",
            "{network_state_ref: core/onprem/network-sdn}",
            vec![template_ok(), (format!("{net_state}/latest.json"), r#"{"status": ""}"#.into())],
        ),
        (
            "network-no-output",
            "{network_state_ref: core/onprem/network-sdn}",
            vec![template_ok(), (format!("{net_state}/latest.json"), r#"{"status": "ok", "outputs": {"vnets": {}}}"#.into())],
        ),
        (
            "network-ok",
            "{network_state_ref: core/onprem/network-sdn}",
            vec![template_ok(), (format!("{net_state}/latest.json"), r#"{"status": "ok", "outputs": {"network_name": "n"}}"#.into())],
        ),
        (
            "both-target-first",
            "{network_state_ref: core/onprem/network-sdn, target_state_ref: x/y, target_vm_key: a}",
            vec![template_ok()],
        ),
        ("ref-before-validator", "{network_state_ref: core/onprem/network-sdn, cpu_cores: x}", vec![template_ok()]),
    ];
    for (name, extra, files) in refs {
        let text = format!("{}{}", pool.render(), flow_to_block(extra));
        let c = g.push("state-refs", format!("state-refs:{name}"), Some(text));
        c.files = files;
    }
}

/// `{a: 1, b: [x, y]}` → `a: 1\nb: [x, y]\n` (top-level keys of a one-line flow mapping
/// whose values hold no `, ` outside brackets).
fn flow_to_block(flow: &str) -> String {
    let inner = flow.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = String::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in inner.chars() {
        match ch {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            out.push_str(cur.trim());
            out.push('\n');
            cur.clear();
        } else {
            cur.push(ch);
        }
    }
    if !cur.trim().is_empty() {
        out.push_str(cur.trim());
        out.push('\n');
    }
    out
}

fn guards(g: &mut Gen) {
    let vm_state = "state/modules/platform__onprem__platform-vm";
    let ok = |names: &str| format!(r#"{{"status": "ok", "outputs": {{"vms": {{{names}}}}}}}"#);
    let cases: Vec<(&str, &str, Files, Option<&str>)> = vec![
        (
            "same-set",
            "",
            vec![(format!("{vm_state}/latest.json"), ok(r#""app-01": {}"#))],
            None,
        ),
        (
            "different-set",
            "",
            vec![(format!("{vm_state}/latest.json"), ok(r#""old-01": {}"#))],
            None,
        ),
        (
            "different-set-allowed",
            "allow_vm_set_replace: true\n",
            vec![(
                format!("{vm_state}/latest.json"),
                ok(r#""old-01": {}, "app-01": {}"#),
            )],
            None,
        ),
        (
            "cross-slot",
            "",
            vec![(
                format!("{vm_state}/instances/b.json"),
                ok(r#""app-01": {}"#),
            )],
            None,
        ),
        (
            "instance-slot",
            "",
            vec![(
                format!("{vm_state}/instances/b.json"),
                ok(r#""app-01": {}"#),
            )],
            Some("b"),
        ),
        (
            "error-state-ignored",
            "",
            vec![(
                format!("{vm_state}/latest.json"),
                r#"{"status": "error", "outputs": {"vms": {"x": {}}}}"#.into(),
            )],
            None,
        ),
        (
            "vm-names-fallback",
            "",
            vec![(
                format!("{vm_state}/latest.json"),
                r#"{"status": "ok", "outputs": {"vm_names": ["zz-01"]}}"#.into(),
            )],
            None,
        ),
        (
            "broken-latest",
            "",
            vec![(format!("{vm_state}/latest.json"), "{".into())],
            None,
        ),
        (
            "names-printed-with-repr",
            "",
            vec![(
                format!("{vm_state}/latest.json"),
                ok(r#""it's-01": {}, "a\"b\\c\nd": {}, "é\u00a0x": {}"#),
            )],
            None,
        ),
        (
            "cross-slot-names-with-repr",
            "",
            vec![(
                format!("{vm_state}/instances/q.json"),
                ok(r#""app-01": {}, "it's": {}"#),
            )],
            None,
        ),
    ];
    for (name, extra, mut files, instance) in cases {
        files.push(template_ok());
        let text = format!("{}{extra}", base_pool().render());
        let c = g.push("guards", format!("guards:{name}"), Some(text));
        c.files = files;
        c.state_instance = instance.map(str::to_string);
    }
}

/// Engine extensions upstream ignores (so a refusal here is a deliberate difference).
fn engine_fields(g: &mut Gen) {
    let pool = base_pool();
    for (path, v) in [
        (vec!["clone_mode"], "linked"),
        (vec!["clone_mode"], "thin"),
        (vec!["limits"], "{global: 2}"),
        (vec!["limits"], "{global: 0}"),
        (vec!["node_name"], "pve2"),
        (vec!["node_name"], "7"),
        (vec!["vms", "app-01", "interfaces", "0", "vlan_id"], "5000"),
        (vec!["vms", "app-01", "interfaces", "0", "model"], "e1000"),
        (vec!["vms", "app-01", "interfaces", "0", "model"], "rtl"),
    ] {
        let mut y = pool.clone();
        y.set(&path, raw(v));
        g.tree("engine", format!("engine:{}={v}", path.join(".")), &y);
    }
}

/// Fixtures for the SDN authority (`~/.hybridops/envs/shared`, contract §4.3) and NetBox
/// readiness (§4.1) stages. They only bite when hyops-pve implements those stages (the
/// harness then stops stubbing them upstream); until then both sides pass them.
fn sdn_and_netbox(g: &mut Gen) {
    let sdn = "home/.hybridops/envs/shared/state/modules/core__onprem__network-sdn/latest.json";
    let mut pool = base_pool();
    pool.set(
        &["vms", "app-01", "interfaces", "0", "bridge"],
        raw("vnetmgmt"),
    );
    let states: Vec<(&str, Option<&str>)> = vec![
        ("missing", None),
        ("broken", Some("{")),
        ("not-ok", Some(r#"{"status": "running"}"#)),
        ("no-outputs", Some(r#"{"status": "ok"}"#)),
        ("no-vnets", Some(r#"{"status": "ok", "outputs": {}}"#)),
        (
            "other-vnet",
            Some(r#"{"status": "ok", "outputs": {"vnets": {"vnetdata": {}}, "subnets": {}}}"#),
        ),
        (
            "no-gateway",
            Some(r#"{"status": "ok", "outputs": {"vnets": {"vnetmgmt": {}}, "subnets": {}}}"#),
        ),
        (
            "ok",
            Some(
                r#"{"status": "ok", "outputs": {"vnets": {"vnetmgmt": {"vlan_id": 10}}, "subnets": {"s": {"vnet": "vnetmgmt", "cidr": "10.20.0.0/24", "gateway": "10.20.0.1"}}}}"#,
            ),
        ),
    ];
    for (name, body) in states {
        let c = g.tree("sdn", format!("sdn:{name}"), &pool);
        if let Some(b) = body {
            c.files.push((sdn.to_string(), b.to_string()));
        }
    }
    let netbox = "state/modules/platform__onprem__netbox/latest.json";
    let mut ipam = base_ipam();
    ipam.set(
        &["vms", "app-01", "interfaces", "0", "bridge"],
        raw("vmbr0"),
    );
    for (name, body) in [
        ("missing", None),
        ("not-ok", Some(r#"{"status": "error"}"#)),
    ] {
        let c = g.tree("netbox", format!("netbox:{name}"), &ipam);
        if let Some(b) = body {
            c.files.push((netbox.to_string(), b.to_string()));
        }
    }
}
