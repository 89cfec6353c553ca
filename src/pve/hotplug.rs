//! Which config changes a running VM takes at once and which wait in `[PENDING]` for the next
//! start, as qemu-server 9.2 decides (`QemuServer.pm`@e6352be6: `$fast_plug_option` 4594–4611,
//! `vmconfig_hotplug_pending` 4617–4880, `parse_hotplug_features` 1136–1153,
//! `vmconfig_update_agent` 5207–5228). The plan uses it to say which changes need a restart.
//! Pure; knows nothing about HyOps.

use std::collections::BTreeMap;

/// Options written straight to the config of a running VM; the cloud-init ones reach the
/// guest at the next cloud-init drive rebuild (`PUT …/cloudinit` or a start).
const FAST_PLUG: &[&str] = &[
    "description",
    "hookscript",
    "lock",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "protection",
    "shares",
    "startup",
    "tags",
    "vmstatestorage",
    "cicustom",
    "cipassword",
    "citype",
    "ciupgrade",
    "ciuser",
    "nameserver",
    "searchdomain",
    "sshkeys",
];

fn indexed(key: &str, base: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The hotplug features of `cfg` (`hotplug`; default `network,disk,usb`, `0` none).
pub fn features(cfg: &BTreeMap<String, String>) -> Vec<String> {
    match cfg.get("hotplug").map(String::as_str).unwrap_or("1") {
        "0" => Vec::new(),
        "1" => vec!["network".into(), "disk".into(), "usb".into()],
        other => other
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// Does setting (`new = Some`) or deleting (`None`) `key` on a running VM with config `cfg`
/// take effect at once? `false` means it stays pending until the VM is restarted.
pub fn applies_live(cfg: &BTreeMap<String, String>, key: &str, new: Option<&str>) -> bool {
    if FAST_PLUG.contains(&key) || indexed(key, "ipconfig") {
        return true;
    }
    let f = features(cfg);
    let has = |x: &str| f.iter().any(|y| y == x);
    if indexed(key, "net") {
        return has("network");
    }
    let drive = ["ide", "sata", "scsi", "virtio"]
        .iter()
        .any(|b| indexed(key, b));
    if drive {
        let slow = indexed(key, "ide") || indexed(key, "sata");
        let cloudinit = new.is_some_and(|v| v.contains("cloudinit"));
        return has("disk") && !slow && !cloudinit;
    }
    match key {
        "memory" => has("memory"),
        "vcpus" => has("cpu"),
        "agent" => match (cfg.get("agent"), new) {
            (Some(old), Some(new)) => {
                let norm = |s: &str| {
                    let mut v: Vec<String> = s
                        .split(',')
                        .filter(|p| !p.starts_with("fstrim_cloned_disks="))
                        .map(|p| p.trim_start_matches("enabled=").to_string())
                        .collect();
                    v.sort();
                    v
                };
                norm(old) == norm(new)
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_memory_and_cpu_wait_for_a_restart_by_default() {
        let cfg = BTreeMap::new();
        assert!(!applies_live(&cfg, "cores", Some("4")));
        assert!(!applies_live(&cfg, "memory", Some("4096")));
        assert!(!applies_live(&cfg, "cpu", Some("host")));
        assert!(applies_live(&cfg, "net0", Some("virtio,bridge=vmbr1")));
        assert!(applies_live(&cfg, "ipconfig0", Some("ip=dhcp")));
        assert!(applies_live(&cfg, "tags", Some("a")));
    }

    #[test]
    fn memory_hotplug_makes_memory_live() {
        let cfg: BTreeMap<String, String> =
            [("hotplug".to_string(), "network,disk,memory".to_string())].into();
        assert!(applies_live(&cfg, "memory", Some("4096")));
    }
}
