//! What the plan reads from the template: its boot disk (from the `boot` order, then the
//! first disk of that order; item 4 of issue 8) with the disk's size and the storages its
//! volumes live on; and the one function that decides what `disk_size_gb` means for a disk
//! of a known size ("at least": grow when smaller, keep and warn when larger; item 5). Pure:
//! reads config maps, never calls Proxmox.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::props;

const GIB: u64 = 1024 * 1024 * 1024;

/// Why the boot disk of a template cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {vmid} on node {node}: {detail}; make the template boot from a disk (qm set {vmid} --boot order=<disk>) or point template_vm_id / template_state_ref at a bootable template")]
pub struct BootDiskError {
    pub vmid: u32,
    pub node: String,
    pub detail: String,
}

/// True for a disk slot (`ideN`, `sataN`, `scsiN`, `virtioN`): the buses a boot disk is on.
fn is_disk_slot(key: &str) -> bool {
    ["ide", "sata", "scsi", "virtio"].iter().any(|b| {
        key.strip_prefix(b)
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// A disk (not a CD-ROM, not the cloud-init drive) at `key`.
fn is_hard_disk(cfg: &BTreeMap<String, String>, key: &str) -> bool {
    is_disk_slot(key)
        && cfg.get(key).is_some_and(|v| {
            let file = v.split(',').next().unwrap_or_default();
            !v.split(',').any(|p| p == "media=cdrom")
                && !file.contains("cloudinit")
                && file != "none"
        })
}

/// The disk a VM with config `cfg` boots from. qemu-server (`QemuServer.pm`
/// `get_default_bootdevices` / `print_bootorder`): the `boot: order=a;b;c` list, its first
/// entry that is a hard disk; the legacy `boot: [acdn]` form uses `bootdisk`; without `boot`
/// the first hard disk in drive order (ide, sata, scsi, virtio).
pub fn boot_disk(cfg: &BTreeMap<String, String>) -> Option<String> {
    if let Some(boot) = cfg.get("boot") {
        if let Some(order) = boot
            .split(',')
            .find_map(|p| p.trim().strip_prefix("order="))
        {
            return order
                .split(';')
                .map(str::trim)
                .find(|d| is_hard_disk(cfg, d))
                .map(str::to_string);
        }
        // legacy `boot: cdn` (or empty): the `bootdisk` key names the disk
        if let Some(d) = cfg.get("bootdisk").filter(|d| is_hard_disk(cfg, d)) {
            return Some(d.clone());
        }
    } else if let Some(d) = cfg.get("bootdisk").filter(|d| is_hard_disk(cfg, d)) {
        return Some(d.clone());
    }
    let mut disks: Vec<(usize, u32, &String)> = cfg
        .keys()
        .filter(|k| is_hard_disk(cfg, k))
        .filter_map(|k| {
            let bus = ["ide", "sata", "scsi", "virtio"]
                .iter()
                .position(|b| k.starts_with(b))?;
            let idx: u32 = k
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .parse()
                .ok()?;
            Some((bus, idx, k))
        })
        .collect();
    disks.sort();
    disks.first().map(|(_, _, k)| (*k).clone())
}

/// The boot disk of a template, or an error naming the template.
pub fn template_boot_disk(
    vmid: u32,
    node: &str,
    cfg: &BTreeMap<String, String>,
) -> Result<String, BootDiskError> {
    boot_disk(cfg).ok_or_else(|| BootDiskError {
        vmid,
        node: node.to_string(),
        detail: match cfg.get("boot") {
            Some(b) => format!("its boot order '{b}' names no disk"),
            None => "it has no disk to boot from".to_string(),
        },
    })
}

/// The storages holding a config's volumes (`local-lvm:vm-1-disk-0` → `local-lvm`),
/// CD-ROM images and the cloud-init drive included, in key order.
pub fn volume_storages(cfg: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = cfg
        .iter()
        .filter(|(k, _)| is_disk_slot(k) || k.starts_with("efidisk") || k.starts_with("tpmstate"))
        .filter_map(|(_, v)| {
            let file = v.split(',').next()?;
            let (sid, _) = file.split_once(':')?;
            Some(sid.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What `disk_size_gb` means for a boot disk of `current_bytes` (`None`: unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiskDecision {
    /// Grow to `to_bytes` (an absolute size; the resize step re-reads and never shrinks).
    Grow {
        from_bytes: Option<u64>,
        to_bytes: u64,
    },
    /// Exactly the requested size.
    Keep,
    /// The disk is already larger than asked: it stays as it is (disks never shrink) and the
    /// plan and the result warn once.
    Larger {
        current_bytes: u64,
        requested_bytes: u64,
    },
}

/// The one rule for create and update: `disk_size_gb` is "at least". Upstream hyops ignores
/// `disk_size_gb` on clones (contract §10.2 #2), so an overlay keeping the default 40 on a
/// larger template must still work.
pub fn disk_decision(requested_gib: u64, current_bytes: Option<u64>) -> DiskDecision {
    let requested = requested_gib.saturating_mul(GIB);
    match current_bytes {
        None => DiskDecision::Grow {
            from_bytes: None,
            to_bytes: requested,
        },
        Some(c) if c < requested => DiskDecision::Grow {
            from_bytes: Some(c),
            to_bytes: requested,
        },
        Some(c) if c == requested => DiskDecision::Keep,
        Some(c) => DiskDecision::Larger {
            current_bytes: c,
            requested_bytes: requested,
        },
    }
}

/// Size in whole GiB, rounded up (what the outputs publish as `disk_gb`).
pub fn whole_gib(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

/// A size for messages: `32` for whole GiB, else two decimals.
pub fn format_gib(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        (bytes / GIB).to_string()
    } else {
        format!("{:.2}", bytes as f64 / GIB as f64)
    }
}

/// The size of `disk` in `cfg`, if recorded.
pub fn disk_bytes(cfg: &BTreeMap<String, String>, disk: &str) -> Option<u64> {
    cfg.get(disk).and_then(|spec| props::disk_size_bytes(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn boot_order_names_the_boot_disk() {
        let c = cfg(&[
            ("boot", "order=ide2;virtio0;net0"),
            ("ide2", "local-lvm:vm-9000-cloudinit,media=cdrom"),
            ("virtio0", "local-lvm:base-9000-disk-0,size=32G"),
            ("scsi0", "local-lvm:base-9000-disk-1,size=8G"),
        ]);
        assert_eq!(boot_disk(&c).as_deref(), Some("virtio0"));
    }

    #[test]
    fn legacy_bootdisk_and_no_boot_key_fall_back_in_drive_order() {
        let c = cfg(&[
            ("boot", "cdn"),
            ("bootdisk", "sata0"),
            ("sata0", "l:v,size=1G"),
        ]);
        assert_eq!(boot_disk(&c).as_deref(), Some("sata0"));
        let c = cfg(&[("virtio1", "l:a,size=1G"), ("scsi3", "l:b,size=1G")]);
        assert_eq!(boot_disk(&c).as_deref(), Some("scsi3"));
    }

    #[test]
    fn a_boot_order_of_only_cdrom_and_net_has_no_disk() {
        let c = cfg(&[("boot", "order=ide2;net0"), ("ide2", "none,media=cdrom")]);
        assert_eq!(boot_disk(&c), None);
    }

    #[test]
    fn disk_size_is_at_least() {
        let g = |n: u64| n * GIB;
        assert_eq!(
            disk_decision(40, Some(g(32))),
            DiskDecision::Grow {
                from_bytes: Some(g(32)),
                to_bytes: g(40)
            }
        );
        assert_eq!(disk_decision(32, Some(g(32))), DiskDecision::Keep);
        assert_eq!(
            disk_decision(20, Some(g(32))),
            DiskDecision::Larger {
                current_bytes: g(32),
                requested_bytes: g(20)
            }
        );
    }
}
