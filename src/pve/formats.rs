//! Proxmox's own value formats, as the engine must respect them before sending anything: the
//! named format verifiers of `pve-common` (`src/PVE/JSONSchema.pm`@f665029e), the ranges of the
//! API schema (`pve-apidoc.json`, PVE 9.1) and the runtime rules of `qemu-server`
//! (`src/PVE/QemuServer.pm`@e6352be6) that a config write cannot see but a start refuses.
//! Each function cites its source. Pure predicates over strings and numbers; knows nothing
//! about HyOps, inputs or the plan. (The simulator has its own, independent verifiers in
//! `sim::check`; `tests/pve_formats.rs` holds both to the schema's patterns.)

use std::fmt;

/// Which Proxmox rule a value breaks, with the wording an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatViolation {
    /// The Proxmox format or schema rule (`dns-name`, `pve-vmid`, `mac-addr`, …).
    pub rule: &'static str,
    /// What the rule allows, in words.
    pub allows: &'static str,
}

impl fmt::Display for FormatViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxmox format {}: {}", self.rule, self.allows)
    }
}

fn violation(rule: &'static str, allows: &'static str) -> FormatViolation {
    FormatViolation { rule, allows }
}

/// `Ok(())` when `ok`, else the violation of `rule` saying what it `allows`.
fn require(ok: bool, rule: &'static str, allows: &'static str) -> Result<(), FormatViolation> {
    if ok {
        Ok(())
    } else {
        Err(violation(rule, allows))
    }
}

fn is_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `dns-name` (`pve_verify_dns_name`): dot-separated labels of letters, digits and inner `-`.
/// The VM `name` of clone and config has this format.
pub fn dns_name(s: &str) -> Result<(), FormatViolation> {
    require(
        s.split('.').all(is_label),
        "dns-name",
        "dot-separated labels of letters, digits and '-', each starting and ending with a letter or digit (no '_', no spaces)",
    )
}

/// `pve-node` (`pve_verify_node_name`): one DNS label.
pub fn node_name(s: &str) -> Result<(), FormatViolation> {
    require(
        is_label(s),
        "pve-node",
        "letters, digits and inner '-' (one DNS label)",
    )
}

/// `pve-storage-id` (`parse_id`): at least 2 characters, `[a-z][a-z0-9\-_.]*[a-z0-9]`,
/// case-insensitive.
pub fn storage_id(s: &str) -> Result<(), FormatViolation> {
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    require(
        ok,
            "pve-storage-id",
            "at least 2 characters: a letter, then letters, digits, '-', '_' or '.', ending in a letter or digit",
    )
}

/// `pve-bridge-id` (`parse_bridge_id`): `[-_.\w\d]+` (taken as ASCII here), and at most 15
/// bytes because Linux interface names cannot be longer (IFNAMSIZ), so no such bridge exists.
pub fn bridge_id(s: &str) -> Result<(), FormatViolation> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    require(
        ok,
        "pve-bridge-id",
        "1 to 15 letters, digits, '-', '_' or '.' (a Linux interface name)",
    )
}

/// The VMID range of `pve-vmid` parameters (schema `minimum` 100, `maximum` 999999999;
/// `pve_verify_vmid` is `^[1-9][0-9]{2,8}$`).
pub fn vmid(n: u64) -> Result<(), FormatViolation> {
    require(
        (100..=999_999_999).contains(&n),
        "pve-vmid",
        "an integer from 100 to 999999999",
    )
}

/// `mac-addr` (`pve_verify_mac_addr`): the I/G bit (lowest bit of the first octet) must be
/// clear, i.e. a unicast address; `octets` as parsed.
pub fn unicast_mac(octets: [u8; 6]) -> Result<(), FormatViolation> {
    require(
        octets[0] & 1 == 0,
        "mac-addr",
        "a unicast MAC address: the second hex digit must be even (0, 2, 4, 6, 8, A, C, E)",
    )
}

/// `pve-tag` (`pve_verify_tag`): `[a-z0-9_][a-z0-9_\-+.]*`, case-insensitive. A tag holding
/// `;`, `,` or a space would be split into several tags by `pve-tag-list`.
pub fn tag(s: &str) -> Result<(), FormatViolation> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.'));
    require(
        ok,
        "pve-tag",
        "a letter, digit or '_', then letters, digits, '_', '-', '+' or '.'",
    )
}

/// VLAN tag of `netN` (`tag`: integer 1–4094).
pub fn vlan(n: i128) -> Result<(), FormatViolation> {
    require(
        (1..=4094).contains(&n),
        "netN.tag",
        "an integer from 1 to 4094",
    )
}

/// MTU of `netN`: the schema allows 1–65520 ("1 = the bridge MTU", VirtIO only), and a start
/// refuses 2–575 (`netdev …: MTU '…' is smaller than the IP minimum MTU '576'`,
/// `QemuServer.pm` `print_netdevice_full`). `virtio` is whether the NIC model is VirtIO.
pub fn mtu(n: i128, virtio: bool) -> Result<(), FormatViolation> {
    if !virtio {
        return Err(violation(
            "netN.mtu",
            "only VirtIO NICs take an MTU (set model: virtio, or remove mtu)",
        ));
    }
    require(
        n == 1 || (576..=65520).contains(&n),
        "netN.mtu",
        "1 (use the bridge MTU) or 576 to 65520 (a VM start refuses anything below 576)",
    )
}

/// `cores` (integer, minimum 1) and the qemu-server limit of 8192 vCPUs per VM is far above
/// any node; the schema has no maximum, so only the minimum is checked.
pub fn cores(n: u64) -> Result<(), FormatViolation> {
    require(n >= 1, "cores", "an integer of at least 1")
}

/// `memory` (`current`: integer, minimum 16 MiB).
pub fn memory_mib(n: u64) -> Result<(), FormatViolation> {
    require(n >= 16, "memory", "at least 16 MiB")
}

/// The largest disk in GiB: QEMU's block layer refuses any image or resize beyond
/// `BDRV_MAX_LENGTH` (`include/block/block_int-common.h`: `INT64_MAX` aligned down to 1 GiB,
/// i.e. 2^63 − 2^30 bytes), so a larger `size` of `PUT …/resize` fails after the clone.
pub const DISK_GIB_MAX: u64 = (1 << 33) - 1;

/// A disk size in GiB: 1 to [`DISK_GIB_MAX`].
pub fn disk_gib(n: u64) -> Result<(), FormatViolation> {
    require(
        (1..=DISK_GIB_MAX).contains(&n),
        "disk size",
        "1 to 8589934591 GiB (QEMU's largest disk, 8 EiB)",
    )
}

/// `ostype` (schema enum of `PUT …/config`).
pub const OS_TYPES: &[&str] = &[
    "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24",
    "l26", "solaris",
];

/// `ostype`: one of [`OS_TYPES`].
pub fn os_type(s: &str) -> Result<(), FormatViolation> {
    require(
        OS_TYPES.contains(&s),
        "ostype",
        "one of other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris",
    )
}

/// The `cputype` of `pve-vm-cpu-conf` as a token: a built-in model name or `custom-<name>`
/// (`CPUConfig.pm` `validate_vm_cpu_conf`). Whether the model exists is a question for the
/// node (`GET /nodes/{node}/capabilities/qemu/cpu`), asked at plan time.
pub fn cpu_type(s: &str) -> Result<(), FormatViolation> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    require(
        ok,
            "pve-vm-cpu-conf cputype",
            "a CPU model name (letters, digits, '-', '_', '.'), e.g. host, x86-64-v2-AES or custom-<name>",
    )
}

/// The cloud-init user name (`ciuser`). qemu-server writes it unquoted into the generated
/// user-data (`Cloudinit.pm` `cloudinit_userdata`: `user: $username`), so anything but a plain
/// POSIX user name (`[a-z_][a-z0-9_-]*`, at most 32 characters, as `useradd` accepts) would
/// change the guest's cloud-config.
pub fn ciuser(s: &str) -> Result<(), FormatViolation> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'));
    require(
        ok,
            "ciuser",
            "a Linux user name: a lower-case letter or '_', then lower-case letters, digits, '_' or '-', at most 32 characters",
    )
}

/// One `sshkeys` line: an OpenSSH public key `<type> <base64> [comment]` on a single line
/// (`Tools.pm` `validate_ssh_public_keys` runs `ssh-keygen -l` on each line; a key text with a
/// line break would become two keys).
pub fn ssh_public_key(s: &str) -> Result<(), FormatViolation> {
    let bad = || {
        Err(violation(
            "sshkeys",
            "one OpenSSH public key per entry on a single line: '<type> <base64 key> [comment]' (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*)",
        ))
    };
    if s.chars().any(|c| c.is_control()) {
        return bad();
    }
    let mut parts = s.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let kind_ok = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-");
    let body_ok = body.len() >= 16
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
    if kind_ok && body_ok {
        Ok(())
    } else {
        bad()
    }
}

/// The `description` limit (schema `maxLength` 8192).
pub const DESCRIPTION_MAX: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_name_refuses_underscores_and_empty_labels() {
        assert!(dns_name("web-01").is_ok());
        assert!(dns_name("web-01.lab.example").is_ok());
        assert!(dns_name("web_01").is_err());
        assert!(dns_name("my_lab-app-01").is_err());
        assert!(dns_name("-web").is_err());
        assert!(dns_name("web.").is_err());
        assert!(dns_name("").is_err());
    }

    #[test]
    fn multicast_macs_are_refused() {
        assert!(unicast_mac([0xA3, 0xE9, 0, 0, 0, 1]).is_err());
        assert!(unicast_mac([0xBC, 0x24, 0x11, 0, 0, 1]).is_ok());
        assert!(unicast_mac([0x02, 0, 0, 0, 0, 1]).is_ok());
    }

    #[test]
    fn vmid_bounds_follow_the_schema() {
        assert!(vmid(99).is_err());
        assert!(vmid(100).is_ok());
        assert!(vmid(999_999_999).is_ok());
        assert!(vmid(1_000_000_000).is_err());
    }

    #[test]
    fn mtu_below_the_ip_minimum_is_refused_except_one() {
        assert!(mtu(1, true).is_ok());
        assert!(mtu(575, true).is_err());
        assert!(mtu(576, true).is_ok());
        assert!(mtu(9000, false).is_err());
    }

    #[test]
    fn ciuser_is_a_plain_user_name() {
        assert!(ciuser("opsadmin").is_ok());
        assert!(ciuser("ops\nruncmd: [touch /x]\nx").is_err());
        assert!(ciuser("Root").is_err());
    }

    #[test]
    fn storage_ids_need_two_characters() {
        assert!(storage_id("local-lvm").is_ok());
        assert!(storage_id("a").is_err());
        assert!(storage_id("1abc").is_err());
    }
}
