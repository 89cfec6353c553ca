//! Lenient readers for the Proxmox property strings the planner compares (`netN`,
//! `ipconfigN`, disk specs, `memory`, `cpu`, `agent`, tags). Comparison only: strict typed
//! writers live in [`crate::pve`]. Knows nothing about HyOps.

use std::collections::BTreeSet;
use std::fmt::{self, Display, Write as _};

use crate::pve::{property_pairs, split_property_string, NetDevice};

/// A parsed `key=value,key=value` string. A leading bare value is stored under the
/// default key (or `""` when the caller does not name one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyString {
    pub pairs: Vec<(String, String)>,
}

impl PropertyString {
    pub fn parse(s: &str, default_key: Option<&str>) -> Self {
        let pairs = split_property_string(s)
            .into_iter()
            .map(|(k, v)| match (k.is_empty(), default_key) {
                (true, Some(d)) => (d.to_string(), v),
                _ => (k, v),
            })
            .collect();
        PropertyString { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sorted pairs, for order-insensitive equality.
    pub fn canonical_pairs(&self) -> Vec<(String, String)> {
        let mut p = self.pairs.clone();
        p.sort();
        p
    }
}

/// `PropertyString::parse(s, default_key).get(key)` without building the pairs: the first
/// value whose key is `key`, where a bare value (or one with an empty key) counts as
/// `default_key`'s.
pub fn find_value<'a>(s: &'a str, key: &str, default_key: Option<&str>) -> Option<&'a str> {
    property_pairs(s)
        .find(|(k, _)| {
            if k.is_empty() {
                // `PropertyString::parse` names an unnamed value by the default key, if any.
                default_key.map_or(key.is_empty(), |d| d == key)
            } else {
                *k == key
            }
        })
        .map(|(_, v)| v)
}

/// The value of a property string's default key (`4096` or `current=4096`, `host` or
/// `cputype=host,flags=…`).
pub fn default_value(s: &str, default_key: &str) -> Option<String> {
    default_value_str(s, default_key).map(str::to_string)
}

/// [`default_value`], borrowed from `s`.
pub fn default_value_str<'a>(s: &'a str, default_key: &str) -> Option<&'a str> {
    find_value(s, default_key, Some(default_key))
}

/// A Proxmox boolean (`1`, `0`, `true`, `false`, `on`, `off`, `yes`, `no`), possibly as the
/// default key of a property string (`enabled=1,fstrim_cloned_disks=0`).
pub fn bool_value(s: &str, default_key: &str) -> Option<bool> {
    let v = default_value_str(s, default_key)?;
    let is = |word: &str| v.eq_ignore_ascii_case(word);
    if ["1", "true", "on", "yes"].into_iter().any(is) {
        Some(true)
    } else if ["0", "false", "off", "no"].into_iter().any(is) {
        Some(false)
    } else {
        None
    }
}

/// Whether `value` displays exactly as `s`, compared piece by piece as it is formatted (no
/// `String` is built). The planner uses it to see that an observed value is already the
/// one it would write.
pub fn renders_as(value: impl Display, s: &str) -> bool {
    /// The part of the expected text not yet matched; an error as soon as one piece differs.
    struct Expect<'a>(&'a str);
    impl fmt::Write for Expect<'_> {
        fn write_str(&mut self, piece: &str) -> fmt::Result {
            match self.0.strip_prefix(piece) {
                Some(rest) => {
                    self.0 = rest;
                    Ok(())
                }
                None => Err(fmt::Error),
            }
        }
    }
    let mut expect = Expect(s);
    write!(expect, "{value}").is_ok() && expect.0.is_empty()
}

/// `text` without a leading `n` in decimal (as `n.to_string()` writes it), or `None` when
/// it does not start with exactly that text.
pub fn strip_decimal(text: &str, mut n: u32) -> Option<&str> {
    let mut digits = [0u8; 10]; // a `u32` has at most 10 digits
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is below 10, so the cast cannot truncate
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    if text.as_bytes().starts_with(&digits[start..]) {
        text.get(len..)
    } else {
        None
    }
}

/// `text` without a leading `addr` as `addr.to_string()` writes it (dotted decimal).
pub fn strip_ipv4(text: &str, addr: std::net::Ipv4Addr) -> Option<&str> {
    let [a, b, c, d] = addr.octets();
    let rest = strip_decimal(text, a.into())?.strip_prefix('.')?;
    let rest = strip_decimal(rest, b.into())?.strip_prefix('.')?;
    let rest = strip_decimal(rest, c.into())?.strip_prefix('.')?;
    strip_decimal(rest, d.into())
}

/// Tags as a set (Proxmox accepts `;`, `,` and spaces as separators).
pub fn tag_set(s: &str) -> BTreeSet<String> {
    s.split([';', ',', ' '])
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The parts of a `netN` value the engine owns (parsed by the typed [`NetDevice`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetParts {
    pub model: String,
    pub mac: Option<String>,
    pub bridge: Option<String>,
    pub tag: Option<u16>,
    pub firewall: bool,
    pub mtu: Option<u32>,
}

/// Parse `virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10,firewall=1`; `None` when Proxmox
/// would not accept it either.
pub fn net_parts(s: &str) -> Option<NetParts> {
    let dev: NetDevice = s.parse().ok()?;
    Some(NetParts {
        model: dev.model.to_string(),
        mac: dev.macaddr.map(|m| m.to_string()),
        bridge: dev.bridge,
        tag: dev.tag,
        firewall: dev.firewall.unwrap_or(false),
        mtu: dev.mtu,
    })
}

/// The MAC of a `netN` value, if any.
pub fn net_mac(s: &str) -> Option<String> {
    net_parts(s)?.mac
}

/// Does the observed NIC satisfy the desired one? A desired value without a MAC accepts any
/// MAC (Proxmox generated it). An unparsable value never matches (it gets rewritten).
pub fn net_matches(observed: &str, desired: &str) -> bool {
    let (Some(o), Some(d)) = (net_parts(observed), net_parts(desired)) else {
        return false;
    };
    o.model == d.model
        && o.bridge == d.bridge
        && o.tag == d.tag
        && o.firewall == d.firewall
        && o.mtu == d.mtu
        && (d.mac.is_none() || o.mac == d.mac)
}

/// Parse a Proxmox size (`32G`, `10240M`, `512K`, `1T`, plain bytes) into bytes.
pub fn parse_size_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1024u64),
        'M' | 'm' => (&s[..s.len() - 1], 1024u64.pow(2)),
        'G' | 'g' => (&s[..s.len() - 1], 1024u64.pow(3)),
        'T' | 't' => (&s[..s.len() - 1], 1024u64.pow(4)),
        _ => (s, 1),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    Some((f * mult as f64).round() as u64)
}

/// The `size=` of a disk spec (`local-lvm:vm-100-disk-0,size=32G`).
pub fn disk_size_bytes(spec: &str) -> Option<u64> {
    find_value(spec, "size", Some("file")).and_then(parse_size_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn net_value_with_model_mac_alias_parses() {
        let p = net_parts("virtio=bc:24:11:00:00:01,bridge=vmbr0,tag=10,firewall=1").unwrap();
        assert_eq!(p.model, "virtio");
        assert_eq!(p.mac.as_deref(), Some("BC:24:11:00:00:01"));
        assert_eq!(p.tag, Some(10));
        assert!(p.firewall);
    }

    #[test]
    fn desired_nic_without_mac_matches_any_generated_mac() {
        assert!(net_matches(
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0",
            "virtio,bridge=vmbr0"
        ));
        assert!(!net_matches(
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0",
            "virtio,bridge=vmbr1"
        ));
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size_bytes("32G"), Some(32 * 1024 * 1024 * 1024));
        assert_eq!(parse_size_bytes("10240M"), Some(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size_bytes("2252M"), Some(2252 * 1024 * 1024));
        assert_eq!(parse_size_bytes("1024"), Some(1024));
        assert_eq!(
            disk_size_bytes("local-lvm:vm-100-disk-0,iothread=1,size=40G"),
            Some(40 * 1024 * 1024 * 1024)
        );
    }

    #[test]
    fn memory_and_cpu_read_their_default_key() {
        assert_eq!(
            default_value("current=4096", "current").as_deref(),
            Some("4096")
        );
        assert_eq!(default_value("4096", "current").as_deref(), Some("4096"));
        assert_eq!(
            default_value("host,flags=+aes", "cputype").as_deref(),
            Some("host")
        );
        assert_eq!(
            bool_value("enabled=1,fstrim_cloned_disks=0", "enabled"),
            Some(true)
        );
    }

    #[test]
    fn renders_as_compares_the_whole_display_output() {
        assert!(renders_as(4096, "4096"));
        assert!(!renders_as(4096, "409"));
        assert!(!renders_as(4096, "40960"));
        assert!(renders_as(format_args!("{}={}", "a", 1), "a=1"));
        assert!(!renders_as("", "x"));
        assert!(renders_as("", ""));
    }

    /// What the borrowed readers replaced: the values through a whole `PropertyString`.
    fn parsed_value(s: &str, key: &str, default_key: Option<&str>) -> Option<String> {
        PropertyString::parse(s, default_key)
            .get(key)
            .map(str::to_string)
    }

    fn parsed_bool(s: &str, default_key: &str) -> Option<bool> {
        let v = parsed_value(s, default_key, Some(default_key))?;
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Some(true),
            "0" | "false" | "off" | "no" => Some(false),
            _ => None,
        }
    }

    #[test]
    fn find_value_agrees_with_the_parsed_property_string_on_edge_cases() {
        let cases = [
            "",
            ",",
            "4096",
            "current=4096",
            " current = 4096 ",
            "=4096",
            "a=1,=2,3",
            "host,flags=+aes",
            "flags=+aes,host",
            "file=x,size=4G",
            "x,size=",
            "size=1=2",
            "enabled=1,fstrim_cloned_disks=0",
            "ip=10.0.0.2/24,gw=10.0.0.1",
            " , ip = dhcp ,",
        ];
        for s in cases {
            for key in [
                "", "current", "cputype", "size", "file", "ip", "gw", "enabled", "a",
            ] {
                for default_key in [None, Some(""), Some("current"), Some("file"), Some(key)] {
                    assert_eq!(
                        find_value(s, key, default_key).map(str::to_string),
                        parsed_value(s, key, default_key),
                        "{s:?} key {key:?} default {default_key:?}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn borrowed_readers_agree_with_the_parsed_property_string(
            s in "[a-z0-9=, .+-]{0,40}",
            key in prop::sample::select(vec!["", "current", "size", "ip", "enabled", "a"]),
            default_key in prop::option::of(prop::sample::select(vec!["", "current", "file", "a"])),
        ) {
            prop_assert_eq!(
                find_value(&s, key, default_key).map(str::to_string),
                parsed_value(&s, key, default_key)
            );
            if let Some(d) = default_key {
                prop_assert_eq!(default_value(&s, d), parsed_value(&s, d, Some(d)));
                prop_assert_eq!(bool_value(&s, d), parsed_bool(&s, d));
            }
        }

        #[test]
        fn renders_as_is_string_equality(a in ".{0,12}", b in ".{0,12}") {
            prop_assert_eq!(renders_as(&a, &b), a == b);
            let joined = format!("{a}{b}");
            let ok = renders_as(format_args!("{}{}", a, b), &joined);
            prop_assert!(ok);
        }

        #[test]
        fn strip_decimal_strips_the_display_text(n in any::<u32>(), text in "[0-9]{0,11}[.a]{0,2}") {
            let expected = text.strip_prefix(n.to_string().as_str());
            prop_assert_eq!(strip_decimal(&text, n), expected);
            let shown = format!("{n}{text}");
            prop_assert_eq!(strip_decimal(&shown, n), Some(text.as_str()));
        }

        #[test]
        fn strip_ipv4_strips_the_display_text(a in any::<[u8; 4]>(), text in "[0-9.]{0,16}") {
            let addr = std::net::Ipv4Addr::from(a);
            prop_assert_eq!(strip_ipv4(&text, addr), text.strip_prefix(addr.to_string().as_str()));
            let shown = format!("{addr}/24");
            prop_assert_eq!(strip_ipv4(&shown, addr), Some("/24"));
        }

        #[test]
        fn readers_never_panic(s in ".{0,120}") {
            let _ = net_parts(&s);
            let _ = parse_size_bytes(&s);
            let _ = disk_size_bytes(&s);
            let _ = tag_set(&s);
            let _ = bool_value(&s, "enabled");
        }
    }
}
