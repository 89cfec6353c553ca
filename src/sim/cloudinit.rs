//! What PVE's nocloud generator (`QemuServer/Cloudinit.pm`) writes for a VM config: user-data,
//! network-data (version 1) and meta-data (instance-id = sha1 of user + network data). Pure
//! functions of the config; knows nothing about HTTP or tasks.

use super::model::{indexed, Vm};
use std::collections::BTreeMap;

/// The MAC of a `netN` value (`virtio=BC:24:…` or `macaddr=…`).
pub fn net_mac(net: &str) -> Option<String> {
    net.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let mac_shaped = v.len() == 17
            && v.split(':').count() == 6
            && v.split(':')
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
        (mac_shaped && k != "bridge").then(|| v.to_string())
    })
}

/// A field of an `ipconfigN` value (`ip`, `gw`, `ip6`, `gw6`).
pub fn ipconfig_field(ipconfig: Option<&String>, field: &str) -> Option<String> {
    ipconfig?.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == field).then(|| v.to_string())
    })
}

fn netmask(prefix: u8) -> String {
    let m: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    std::net::Ipv4Addr::from(m).to_string()
}

fn hostname_fqdn(vm: &Vm) -> (String, Option<String>) {
    let name = vm.name();
    if let Some((h, d)) = name.split_once('.') {
        return (h.to_string(), Some(name.clone()).filter(|_| !d.is_empty()));
    }
    let domain = vm.config.get("searchdomain").and_then(|s| {
        s.split([',', ' ', ';'])
            .find(|x| !x.is_empty())
            .map(str::to_string)
    });
    let fqdn = domain.map(|d| format!("{name}.{d}"));
    (name, fqdn)
}

/// The IPv4 address (and prefix) guest NIC `index` has: the static `ipconfigN` address, or
/// a stable DHCP lease in 10.99.0.0/16 derived from VMID and NIC index.
pub fn guest_ipv4(vm: &Vm, index: u32) -> (String, u32) {
    let ipcfg = vm.config.get(&format!("ipconfig{index}"));
    if let Some(cidr) = ipconfig_field(ipcfg, "ip").filter(|c| c != "dhcp") {
        if let Some((a, p)) = cidr.split_once('/') {
            return (a.to_string(), p.parse::<u32>().unwrap_or(24));
        }
    }
    use sha1::{Digest, Sha1};
    let h = Sha1::digest(format!("{}/{index}", vm.vmid).as_bytes());
    let (a, b) = (h[0], h[1].clamp(2, 254));
    (format!("10.99.{a}.{b}"), 16)
}

/// `#cloud-config` user-data.
pub fn user_data(vm: &Vm) -> String {
    let c = &vm.config;
    let (hostname, fqdn) = hostname_fqdn(vm);
    let mut s = String::from("#cloud-config\n");
    s.push_str(&format!("hostname: {hostname}\n"));
    s.push_str("manage_etc_hosts: true\n");
    if let Some(f) = fqdn {
        s.push_str(&format!("fqdn: {f}\n"));
    }
    let user = c.get("ciuser");
    if let Some(u) = user {
        s.push_str(&format!("user: {u}\n"));
        if u == "root" {
            s.push_str("disable_root: False\n");
        }
    }
    if let Some(p) = c.get("cipassword") {
        s.push_str(&format!("password: {p}\n"));
    }
    if let Some(keys) = c.get("sshkeys") {
        let decoded = percent_encoding::percent_decode_str(keys).decode_utf8_lossy();
        let keys: Vec<&str> = decoded
            .split('\n')
            .map(str::trim_end)
            .filter(|k| !k.trim().is_empty())
            .collect();
        s.push_str("ssh_authorized_keys:\n");
        for k in keys {
            s.push_str(&format!("  - {k}\n"));
        }
    }
    s.push_str("chpasswd:\n  expire: False\n");
    if user.is_none_or(|u| u != "root") {
        s.push_str("users:\n  - default\n");
    }
    if c.get("ciupgrade").is_none_or(|v| v != "0") {
        s.push_str("package_upgrade: true\n");
    }
    s
}

/// Network config version 1: one physical NIC per `netN` (matched by MAC), then nameservers.
pub fn network_data(vm: &Vm) -> String {
    let c = &vm.config;
    let mut s = String::from("version: 1\nconfig:\n");
    let mut nets: BTreeMap<u32, &String> = BTreeMap::new();
    for (k, v) in c {
        if indexed(k, "net") {
            if let Ok(i) = k[3..].parse() {
                nets.insert(i, v);
            }
        }
    }
    for (i, net) in nets {
        let mac = net_mac(net).unwrap_or_default().to_lowercase();
        s.push_str(&format!(
            "    - type: physical\n      name: eth{i}\n      mac_address: '{mac}'\n"
        ));
        let ipc = c.get(&format!("ipconfig{i}"));
        let ip = ipconfig_field(ipc, "ip").or_else(|| ipc.is_none().then(|| "dhcp".into()));
        let ip6 = ipconfig_field(ipc, "ip6");
        if ip.is_none() && ip6.is_none() {
            continue;
        }
        s.push_str("      subnets:\n");
        match ip.as_deref() {
            Some("dhcp") => s.push_str("      - type: dhcp4\n"),
            Some(cidr) => {
                if let Ok(n) = cidr.parse::<ipnet::Ipv4Net>() {
                    s.push_str(&format!(
                        "      - type: static\n        address: '{}'\n        netmask: '{}'\n",
                        n.addr(),
                        netmask(n.prefix_len())
                    ));
                    if let Some(gw) = ipconfig_field(ipc, "gw") {
                        s.push_str(&format!("        gateway: '{gw}'\n"));
                    }
                }
            }
            None => {}
        }
        match ip6.as_deref() {
            Some("dhcp") => s.push_str("      - type: dhcp6\n"),
            Some("auto") => s.push_str("      - type: ipv6_slaac\n"),
            Some(cidr) => {
                s.push_str(&format!(
                    "      - type: static6\n        address: '{cidr}'\n"
                ));
                if let Some(gw) = ipconfig_field(ipc, "gw6") {
                    s.push_str(&format!("        gateway: '{gw}'\n"));
                }
            }
            None => {}
        }
    }
    let split = |v: Option<&String>| -> Vec<String> {
        v.map(|x| {
            x.split([',', ';', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    };
    let ns = split(c.get("nameserver"));
    let sd = split(c.get("searchdomain"));
    if !ns.is_empty() || !sd.is_empty() {
        s.push_str("    - type: nameserver\n");
        if !ns.is_empty() {
            s.push_str("      address:\n");
            for n in &ns {
                s.push_str(&format!("      - '{n}'\n"));
            }
        }
        if !sd.is_empty() {
            s.push_str("      search:\n");
            for d in &sd {
                s.push_str(&format!("      - '{d}'\n"));
            }
        }
    }
    s
}

/// `instance-id: sha1(user-data . network-data)`.
pub fn meta_data(vm: &Vm) -> String {
    use sha1::{Digest, Sha1};
    let id = hex::encode(Sha1::digest(
        format!("{}{}", user_data(vm), network_data(vm)).as_bytes(),
    ));
    format!("instance-id: {id}\n")
}

/// `cloudinit/dump?type=…`.
pub fn dump(vm: &Vm, kind: &str) -> String {
    match kind {
        "network" => network_data(vm),
        "meta" => meta_data(vm),
        _ => user_data(vm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::{ClusterDescription, SimState};

    fn vm() -> Vm {
        let mut v =
            SimState::from_cluster(ClusterDescription::default_cluster()).vms[&9000].clone();
        v.config.insert("name".into(), "web-1".into());
        v.config.insert("ciuser".into(), "ops".into());
        v.config
            .insert("sshkeys".into(), "ssh-ed25519%20AAAAC3x%20me%40h%0A".into());
        v.config
            .insert("ipconfig0".into(), "ip=10.0.0.5/24,gw=10.0.0.1".into());
        v.config.insert("nameserver".into(), "1.1.1.1".into());
        v.config.insert("searchdomain".into(), "lab.example".into());
        v
    }

    #[test]
    fn user_data_has_host_user_and_decoded_keys() {
        let u = user_data(&vm());
        assert!(u.starts_with("#cloud-config\nhostname: web-1\nmanage_etc_hosts: true\nfqdn: web-1.lab.example\nuser: ops\n"), "{u}");
        assert!(
            u.contains("ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3x me@h\n"),
            "{u}"
        );
        assert!(u.ends_with("package_upgrade: true\n"));
    }

    #[test]
    fn network_data_has_static_subnet_by_mac_and_nameservers() {
        let n = network_data(&vm());
        assert!(n.contains("mac_address: 'bc:24:11:f0:00:00'"), "{n}");
        assert!(n.contains("address: '10.0.0.5'\n        netmask: '255.255.255.0'\n        gateway: '10.0.0.1'"), "{n}");
        assert!(n.contains("    - type: nameserver\n      address:\n      - '1.1.1.1'\n      search:\n      - 'lab.example'\n"), "{n}");
    }

    #[test]
    fn instance_id_changes_with_user_data() {
        let a = meta_data(&vm());
        let mut v = vm();
        v.config.insert("ciuser".into(), "other".into());
        assert_ne!(a, meta_data(&v));
    }
}
