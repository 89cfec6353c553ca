//! Proxmox property strings (`netN`, `ipconfigN`, disks, `cicustom`, `memory`, `agent`, `tags`)
//! and disk sizes: lenient parsing of what the server returns, strict canonical printing of what
//! the client sends. Unknown keys are kept, in order, so nothing is lost on a round trip.
//! Knows nothing about HyOps inputs or state; only the Proxmox wire formats.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};

/// A property string or value that failed to parse. Names the property kind, the offending
/// part and the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} value {input:?}: {reason}")]
pub struct PropError {
    /// The property kind (`netN`, `ipconfigN`, `disk size`, …).
    pub kind: &'static str,
    /// The full input that was being parsed.
    pub input: String,
    /// What was wrong with it.
    pub reason: String,
}

impl PropError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// Unknown `key=value` pairs kept in their original order (a bare value has an empty key).
pub type Extra = Vec<(String, String)>;

/// Split a property string into `(key, value)` pairs; a bare item gets the key `""`.
/// Empty items (`a=1,,b=2`) are skipped.
pub fn split_property_string(s: &str) -> Vec<(String, String)> {
    property_pairs(s)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pairs of [`split_property_string`], borrowed from `s` (no allocation): for readers
/// that only look at a few keys.
pub fn property_pairs(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => ("", p),
        })
}

/// The one encoder for a user-supplied value entering a Proxmox property string
/// (`key=value,key=value`). Proxmox has no quoting: `parse_property_string` splits on every
/// `,` and `print_property_string` dies with `illegal value with commas for <key>`
/// (pve-common `JSONSchema.pm`@f665029e). So a value is sent unchanged or refused: it may not
/// be empty, contain `,` or `=` (either would add a `key=value` pair), whitespace or any
/// control character (a line break would reach the config file and cloud-init). `key` names
/// the property key for the error.
pub fn encode_value(key: &'static str, value: &str) -> Result<String, PropError> {
    let reason = if value.is_empty() {
        Some("the value is empty".to_string())
    } else {
        value
            .chars()
            .find(|c| matches!(c, ',' | '=') || c.is_whitespace() || c.is_control())
            .map(|c| {
                format!(
                    "{c:?} is not allowed: Proxmox property strings have no quoting, so it would split or extend the value"
                )
            })
    };
    match reason {
        Some(r) => Err(PropError::new(key, value, r)),
        None => Ok(value.to_string()),
    }
}

/// Lenient Proxmox boolean: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
pub fn parse_bool_str(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn bool01(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn push_extra(out: &mut Vec<String>, extra: &Extra) {
    for (k, v) in extra {
        if k.is_empty() {
            out.push(v.clone());
        } else {
            out.push(format!("{k}={v}"));
        }
    }
}

// ------------------------------------------------------------------------------------------
// MAC address and NIC model
// ------------------------------------------------------------------------------------------

/// An Ethernet MAC address; printed upper-case with colons like Proxmox does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.split([':', '-']).count() != 6 {
            return Err(PropError::new("macaddr", s, "expected 6 hex octets"));
        }
        let mut out = [0u8; 6];
        for (i, p) in s.split([':', '-']).enumerate() {
            if p.len() != 2 {
                return Err(PropError::new("macaddr", s, "each octet has 2 hex digits"));
            }
            out[i] = u8::from_str_radix(p, 16)
                .map_err(|_| PropError::new("macaddr", s, format!("octet {p:?} is not hex")))?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// The NIC models Proxmox accepts for `netN` (`model`, the default key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NicModel {
    /// `e1000`.
    E1000,
    /// `e1000-82540em`.
    E1000_82540em,
    /// `e1000-82544gc`.
    E1000_82544gc,
    /// `e1000-82545em`.
    E1000_82545em,
    /// `e1000e`.
    E1000e,
    /// `i82551`.
    I82551,
    /// `i82557b`.
    I82557b,
    /// `i82559er`.
    I82559er,
    /// `ne2k_isa`.
    Ne2kIsa,
    /// `ne2k_pci`.
    Ne2kPci,
    /// `pcnet`.
    Pcnet,
    /// `rtl8139`.
    Rtl8139,
    /// `virtio`.
    Virtio,
    /// `vmxnet3`.
    Vmxnet3,
}

impl NicModel {
    /// All models, in schema order.
    pub const ALL: [NicModel; 14] = [
        NicModel::E1000,
        NicModel::E1000_82540em,
        NicModel::E1000_82544gc,
        NicModel::E1000_82545em,
        NicModel::E1000e,
        NicModel::I82551,
        NicModel::I82557b,
        NicModel::I82559er,
        NicModel::Ne2kIsa,
        NicModel::Ne2kPci,
        NicModel::Pcnet,
        NicModel::Rtl8139,
        NicModel::Virtio,
        NicModel::Vmxnet3,
    ];

    /// The wire name (`virtio`, `e1000`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::E1000 => "e1000",
            NicModel::E1000_82540em => "e1000-82540em",
            NicModel::E1000_82544gc => "e1000-82544gc",
            NicModel::E1000_82545em => "e1000-82545em",
            NicModel::E1000e => "e1000e",
            NicModel::I82551 => "i82551",
            NicModel::I82557b => "i82557b",
            NicModel::I82559er => "i82559er",
            NicModel::Ne2kIsa => "ne2k_isa",
            NicModel::Ne2kPci => "ne2k_pci",
            NicModel::Pcnet => "pcnet",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::Virtio => "virtio",
            NicModel::Vmxnet3 => "vmxnet3",
        }
    }
}

impl FromStr for NicModel {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NicModel::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| PropError::new("netN model", s, "unknown NIC model"))
    }
}

impl fmt::Display for NicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------------------------------
// netN
// ------------------------------------------------------------------------------------------

/// A `netN` value, e.g. `virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20,firewall=1`.
///
/// Parsing accepts `model=virtio,macaddr=…`, the `virtio=MAC` alias and a bare `virtio`.
/// Display prints the alias form (`virtio=MAC` or `virtio`), then known keys alphabetically
/// (as Proxmox does), then unknown keys in their original order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDevice {
    /// NIC model (the default key).
    pub model: NicModel,
    /// MAC address; the server generates one when absent.
    pub macaddr: Option<MacAddr>,
    /// Bridge (`vmbr0`).
    pub bridge: Option<String>,
    /// VLAN tag, 1–4094.
    pub tag: Option<u16>,
    /// Trunk VLAN ids (`trunks=10;20;30`).
    pub trunks: Vec<u16>,
    /// Enable the PVE firewall on this NIC.
    pub firewall: Option<bool>,
    /// Disconnect the link.
    pub link_down: Option<bool>,
    /// Rate limit in MB/s, ≥ 0.
    pub rate: Option<f64>,
    /// 0–64.
    pub queues: Option<u8>,
    /// 1–65520 (`1` = bridge MTU).
    pub mtu: Option<u32>,
    /// Unknown keys, in order.
    pub extra: Extra,
}

impl NetDevice {
    /// A NIC of `model` on `bridge` with no other options.
    pub fn new(model: NicModel, bridge: impl Into<String>) -> Self {
        Self {
            model,
            macaddr: None,
            bridge: Some(bridge.into()),
            tag: None,
            trunks: Vec::new(),
            firewall: None,
            link_down: None,
            rate: None,
            queues: None,
            mtu: None,
            extra: Vec::new(),
        }
    }
}

fn parse_ranged<T: FromStr + PartialOrd + fmt::Display + Copy>(
    kind: &'static str,
    input: &str,
    key: &str,
    v: &str,
    min: T,
    max: T,
) -> Result<T, PropError> {
    let n: T = v
        .parse()
        .map_err(|_| PropError::new(kind, input, format!("{key}={v:?} is not a number")))?;
    if n < min || n > max {
        return Err(PropError::new(
            kind,
            input,
            format!("{key}={v} is outside {min}..={max}"),
        ));
    }
    Ok(n)
}

fn parse_flag(kind: &'static str, input: &str, key: &str, v: &str) -> Result<bool, PropError> {
    parse_bool_str(v)
        .ok_or_else(|| PropError::new(kind, input, format!("{key}={v:?} is not a boolean")))
}

impl FromStr for NetDevice {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const K: &str = "netN";
        let mut model: Option<NicModel> = None;
        let mut dev = NetDevice::new(NicModel::Virtio, "");
        dev.bridge = None;
        for (k, v) in property_pairs(s) {
            match k {
                "" => {
                    model =
                        Some(v.parse().map_err(|_| {
                            PropError::new(K, s, format!("unknown NIC model {v:?}"))
                        })?)
                }
                "model" => {
                    model =
                        Some(v.parse().map_err(|_| {
                            PropError::new(K, s, format!("unknown NIC model {v:?}"))
                        })?)
                }
                "macaddr" => {
                    dev.macaddr = Some(
                        v.parse()
                            .map_err(|e: PropError| PropError::new(K, s, e.reason))?,
                    )
                }
                "bridge" => dev.bridge = Some(v.to_string()),
                "tag" => dev.tag = Some(parse_ranged(K, s, "tag", v, 1u16, 4094)?),
                "trunks" => {
                    dev.trunks = v
                        .split(';')
                        .filter(|t| !t.is_empty())
                        .map(|t| parse_ranged(K, s, "trunks", t, 1u16, 4094))
                        .collect::<Result<_, _>>()?
                }
                "firewall" => dev.firewall = Some(parse_flag(K, s, "firewall", v)?),
                "link_down" => dev.link_down = Some(parse_flag(K, s, "link_down", v)?),
                "rate" => {
                    let r: f64 = v
                        .parse()
                        .map_err(|_| PropError::new(K, s, format!("rate={v:?} is not a number")))?;
                    if !r.is_finite() || r < 0.0 {
                        return Err(PropError::new(K, s, format!("rate={v} must be >= 0")));
                    }
                    dev.rate = Some(r)
                }
                "queues" => dev.queues = Some(parse_ranged(K, s, "queues", v, 0u8, 64)?),
                "mtu" => dev.mtu = Some(parse_ranged(K, s, "mtu", v, 1u32, 65520)?),
                other => {
                    if let Ok(m) = other.parse::<NicModel>() {
                        // keyAlias: `virtio=BC:24:…`
                        model = Some(m);
                        dev.macaddr = Some(
                            v.parse()
                                .map_err(|e: PropError| PropError::new(K, s, e.reason))?,
                        );
                    } else {
                        dev.extra.push((k.to_string(), v.to_string()));
                    }
                }
            }
        }
        dev.model = model.ok_or_else(|| PropError::new(K, s, "no NIC model"))?;
        Ok(dev)
    }
}

impl fmt::Display for NetDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self.macaddr {
            Some(mac) => parts.push(format!("{}={mac}", self.model)),
            None => parts.push(self.model.to_string()),
        }
        if let Some(b) = &self.bridge {
            parts.push(format!("bridge={b}"));
        }
        if let Some(v) = self.firewall {
            parts.push(format!("firewall={}", bool01(v)));
        }
        if let Some(v) = self.link_down {
            parts.push(format!("link_down={}", bool01(v)));
        }
        if let Some(v) = self.mtu {
            parts.push(format!("mtu={v}"));
        }
        if let Some(v) = self.queues {
            parts.push(format!("queues={v}"));
        }
        if let Some(v) = self.rate {
            parts.push(format!("rate={v}"));
        }
        if let Some(v) = self.tag {
            parts.push(format!("tag={v}"));
        }
        if !self.trunks.is_empty() {
            let t: Vec<String> = self.trunks.iter().map(u16::to_string).collect();
            parts.push(format!("trunks={}", t.join(";")));
        }
        push_extra(&mut parts, &self.extra);
        f.write_str(&parts.join(","))
    }
}

// ------------------------------------------------------------------------------------------
// ipconfigN
// ------------------------------------------------------------------------------------------

/// IPv4 part of `ipconfigN`: `dhcp` or a CIDR address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Config {
    /// `dhcp`.
    Dhcp,
    /// A static address with prefix length.
    Static(Ipv4Net),
}

/// IPv6 part of `ipconfigN`: `dhcp`, `auto` (SLAAC) or a CIDR address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Config {
    /// `dhcp`.
    Dhcp,
    /// `auto` (SLAAC).
    Auto,
    /// A static address with prefix length.
    Static(Ipv6Net),
}

impl fmt::Display for Ipv4Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ipv4Config::Dhcp => f.write_str("dhcp"),
            Ipv4Config::Static(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for Ipv6Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ipv6Config::Dhcp => f.write_str("dhcp"),
            Ipv6Config::Auto => f.write_str("auto"),
            Ipv6Config::Static(n) => write!(f, "{n}"),
        }
    }
}

/// An `ipconfigN` value, e.g. `ip=10.0.0.5/24,gw=10.0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpConfig {
    /// IPv4 (`dhcp` or CIDR).
    pub ip: Option<Ipv4Config>,
    /// IPv4 gateway.
    pub gw: Option<Ipv4Addr>,
    /// IPv6 (`dhcp`, `auto` or CIDR).
    pub ip6: Option<Ipv6Config>,
    /// IPv6 gateway.
    pub gw6: Option<Ipv6Addr>,
    /// Unknown keys, in order.
    pub extra: Extra,
}

impl FromStr for IpConfig {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const K: &str = "ipconfigN";
        let mut c = IpConfig::default();
        for (k, v) in split_property_string(s) {
            match k.as_str() {
                "ip" => {
                    c.ip = Some(if v.eq_ignore_ascii_case("dhcp") {
                        Ipv4Config::Dhcp
                    } else {
                        Ipv4Config::Static(v.parse().map_err(|_| {
                            PropError::new(K, s, format!("ip={v:?} is neither dhcp nor IPv4 CIDR"))
                        })?)
                    })
                }
                "gw" => {
                    c.gw = Some(v.parse().map_err(|_| {
                        PropError::new(K, s, format!("gw={v:?} is not an IPv4 address"))
                    })?)
                }
                "ip6" => {
                    c.ip6 = Some(if v.eq_ignore_ascii_case("dhcp") {
                        Ipv6Config::Dhcp
                    } else if v.eq_ignore_ascii_case("auto") {
                        Ipv6Config::Auto
                    } else {
                        Ipv6Config::Static(v.parse().map_err(|_| {
                            PropError::new(
                                K,
                                s,
                                format!("ip6={v:?} is neither dhcp, auto nor IPv6 CIDR"),
                            )
                        })?)
                    })
                }
                "gw6" => {
                    c.gw6 = Some(v.parse().map_err(|_| {
                        PropError::new(K, s, format!("gw6={v:?} is not an IPv6 address"))
                    })?)
                }
                _ => c.extra.push((k, v)),
            }
        }
        Ok(c)
    }
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.gw {
            parts.push(format!("gw={v}"));
        }
        if let Some(v) = &self.gw6 {
            parts.push(format!("gw6={v}"));
        }
        if let Some(v) = &self.ip {
            parts.push(format!("ip={v}"));
        }
        if let Some(v) = &self.ip6 {
            parts.push(format!("ip6={v}"));
        }
        push_extra(&mut parts, &self.extra);
        f.write_str(&parts.join(","))
    }
}

// ------------------------------------------------------------------------------------------
// Disk sizes and disk specs
// ------------------------------------------------------------------------------------------

/// A disk size in bytes. Parses `32G`, `10240M`, `1.5T`, `512K` and bare bytes (powers of 1024;
/// fractions are rounded down to whole bytes). Never accepts a relative `+N` size. Displays the
/// largest unit that divides the size exactly (`32G`, `10240M` prints as `10G`), else bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiskSize(pub u64);

const KIB: u64 = 1024;
const MIB: u64 = KIB * 1024;
const GIB: u64 = MIB * 1024;
const TIB: u64 = GIB * 1024;

impl DiskSize {
    /// A size of `n` GiB (saturating).
    pub fn gib(n: u64) -> Self {
        DiskSize(n.saturating_mul(GIB))
    }
    /// A size of `n` MiB (saturating).
    pub fn mib(n: u64) -> Self {
        DiskSize(n.saturating_mul(MIB))
    }
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for DiskSize {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const K: &str = "disk size";
        let t = s.trim();
        if t.starts_with('+') {
            return Err(PropError::new(
                K,
                s,
                "relative (+) sizes are not absolute sizes",
            ));
        }
        let (num, mult) = match t.chars().last() {
            Some(c @ ('K' | 'M' | 'G' | 'T' | 'k' | 'm' | 'g' | 't')) => {
                let mult = match c.to_ascii_uppercase() {
                    'K' => KIB,
                    'M' => MIB,
                    'G' => GIB,
                    _ => TIB,
                };
                (&t[..t.len() - 1], mult)
            }
            Some('B' | 'b') => {
                return Err(PropError::new(K, s, "use K, M, G, T or bare bytes"));
            }
            _ => (t, 1),
        };
        let valid = !num.is_empty()
            && num.chars().all(|c| c.is_ascii_digit() || c == '.')
            && num.matches('.').count() <= 1
            && !num.starts_with('.')
            && !num.ends_with('.');
        if !valid {
            return Err(PropError::new(
                K,
                s,
                "expected digits with an optional K/M/G/T unit",
            ));
        }
        match num.split_once('.') {
            None => {
                let n: u64 = num
                    .parse()
                    .map_err(|_| PropError::new(K, s, "number too large"))?;
                n.checked_mul(mult)
                    .map(DiskSize)
                    .ok_or_else(|| PropError::new(K, s, "size overflows 64 bits"))
            }
            Some((int, frac)) => {
                let i: u64 = int
                    .parse()
                    .map_err(|_| PropError::new(K, s, "number too large"))?;
                let whole = i
                    .checked_mul(mult)
                    .ok_or_else(|| PropError::new(K, s, "size overflows 64 bits"))?;
                // fraction * mult, computed in u128 to stay exact for up to 18 digits
                let frac = &frac[..frac.len().min(18)];
                let f: u128 = frac.parse().unwrap_or(0);
                let scale = 10u128.pow(frac.len() as u32);
                let part = (f * mult as u128 / scale) as u64;
                whole
                    .checked_add(part)
                    .map(DiskSize)
                    .ok_or_else(|| PropError::new(K, s, "size overflows 64 bits"))
            }
        }
    }
}

impl fmt::Display for DiskSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b == 0 {
            return f.write_str("0");
        }
        for (unit, m) in [("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)] {
            if b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}")
    }
}

/// The bus of a disk slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiskBus {
    /// `ideN` (0–3).
    Ide,
    /// `sataN` (0–5).
    Sata,
    /// `scsiN` (0–30).
    Scsi,
    /// `virtio`.
    Virtio,
}

impl DiskBus {
    /// The wire prefix (`scsi`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Ide => "ide",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
            DiskBus::Virtio => "virtio",
        }
    }
    /// The highest index the schema allows for this bus.
    pub fn max_index(self) -> u8 {
        match self {
            DiskBus::Ide => 3,
            DiskBus::Sata => 5,
            DiskBus::Scsi => 30,
            DiskBus::Virtio => 15,
        }
    }
}

/// A disk slot key such as `scsi0`, `virtio1`, `ide2`, `sata3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskSlot {
    /// The bus.
    pub bus: DiskBus,
    /// The slot number on the bus.
    pub index: u8,
}

impl FromStr for DiskSlot {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        for bus in [DiskBus::Scsi, DiskBus::Virtio, DiskBus::Sata, DiskBus::Ide] {
            if let Some(rest) = s.strip_prefix(bus.as_str()) {
                if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) || rest.len() > 2 {
                    break;
                }
                let index: u8 = rest
                    .parse()
                    .map_err(|_| PropError::new("disk slot", s, "bad index"))?;
                if index > bus.max_index() {
                    return Err(PropError::new(
                        "disk slot",
                        s,
                        format!("{} allows indexes 0..={}", bus.as_str(), bus.max_index()),
                    ));
                }
                return Ok(DiskSlot { bus, index });
            }
        }
        Err(PropError::new(
            "disk slot",
            s,
            "expected scsiN, virtioN, sataN or ideN",
        ))
    }
}

impl fmt::Display for DiskSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.bus.as_str(), self.index)
    }
}

/// A disk spec (`scsi0: local-lvm:vm-100-disk-0,discard=on,size=32G`): the volume id (the
/// default key `file`), the size, and every other option kept in order.
/// Display prints `file`, the options in order, with `size=` placed before the first option
/// whose key sorts after `size` (so Proxmox's sorted output round-trips byte for byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Volume id (`local-lvm:vm-100-disk-0`) or allocation request (`local-lvm:32`) or `none`.
    pub file: String,
    /// `size=` (informational on the server; the resize call changes it).
    pub size: Option<DiskSize>,
    /// Other options (`discard=on`, `ssd=1`, `media=cdrom`, …) in order; bare values have key `""`.
    pub options: Extra,
}

impl DiskSpec {
    /// The value of option `key`, if present.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// True for CD-ROM drives (`media=cdrom`), including the cloud-init drive.
    pub fn is_cdrom(&self) -> bool {
        self.option("media") == Some("cdrom")
    }
    /// True when the volume is a cloud-init drive (`…-cloudinit`).
    pub fn is_cloudinit(&self) -> bool {
        self.file.contains("cloudinit")
    }
}

impl FromStr for DiskSpec {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut file = None;
        let mut size = None;
        let mut options = Vec::new();
        for (k, v) in split_property_string(s) {
            match k.as_str() {
                "" | "file" if file.is_none() => file = Some(v),
                "size" => {
                    size = Some(v.parse().map_err(|e: PropError| {
                        PropError::new("disk", s, format!("size: {}", e.reason))
                    })?)
                }
                _ => options.push((k, v)),
            }
        }
        let file = file.ok_or_else(|| PropError::new("disk", s, "no volume (file) given"))?;
        Ok(DiskSpec {
            file,
            size,
            options,
        })
    }
}

impl fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![self.file.clone()];
        let mut size_done = self.size.is_none();
        for (k, v) in &self.options {
            if !size_done && k.as_str() > "size" {
                if let Some(sz) = self.size {
                    parts.push(format!("size={sz}"));
                }
                size_done = true;
            }
            if k.is_empty() {
                parts.push(v.clone());
            } else {
                parts.push(format!("{k}={v}"));
            }
        }
        if !size_done {
            if let Some(sz) = self.size {
                parts.push(format!("size={sz}"));
            }
        }
        f.write_str(&parts.join(","))
    }
}

// ------------------------------------------------------------------------------------------
// cicustom, memory, agent, tags
// ------------------------------------------------------------------------------------------

/// A `cicustom` value: snippet volume ids for the cloud-init parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CiCustom {
    /// `user=` snippet volume.
    pub user: Option<String>,
    /// `network=` snippet volume.
    pub network: Option<String>,
    /// `meta=` snippet volume.
    pub meta: Option<String>,
    /// `vendor=` snippet volume.
    pub vendor: Option<String>,
    /// Unknown keys, in order.
    pub extra: Extra,
}

impl FromStr for CiCustom {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut c = CiCustom::default();
        for (k, v) in split_property_string(s) {
            match k.as_str() {
                "user" => c.user = Some(v),
                "network" => c.network = Some(v),
                "meta" => c.meta = Some(v),
                "vendor" => c.vendor = Some(v),
                "" => return Err(PropError::new("cicustom", s, format!("bare value {v:?}"))),
                _ => c.extra.push((k, v)),
            }
        }
        Ok(c)
    }
}

impl fmt::Display for CiCustom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (k, v) in [
            ("meta", &self.meta),
            ("network", &self.network),
            ("user", &self.user),
            ("vendor", &self.vendor),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        push_extra(&mut parts, &self.extra);
        f.write_str(&parts.join(","))
    }
}

/// A `memory` value: `4096` or `current=4096` (MiB), plus unknown keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Memory in MiB.
    pub current: u64,
    /// Unknown keys, in order.
    pub extra: Extra,
}

impl Memory {
    /// `n` MiB of memory.
    pub fn mib(n: u64) -> Self {
        Memory {
            current: n,
            extra: Vec::new(),
        }
    }
}

impl FromStr for Memory {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut current = None;
        let mut extra = Vec::new();
        for (k, v) in split_property_string(s) {
            match k.as_str() {
                "" | "current" => {
                    current = Some(v.parse::<u64>().map_err(|_| {
                        PropError::new("memory", s, format!("{v:?} is not a number of MiB"))
                    })?)
                }
                _ => extra.push((k, v)),
            }
        }
        let current = current.ok_or_else(|| PropError::new("memory", s, "no size given"))?;
        Ok(Memory { current, extra })
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![self.current.to_string()];
        push_extra(&mut parts, &self.extra);
        f.write_str(&parts.join(","))
    }
}

/// The guest agent transport type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentType {
    /// `virtio`.
    Virtio,
    /// `isa`.
    Isa,
}

/// An `agent` value: `1`, `enabled=1,fstrim_cloned_disks=1,type=virtio`, …
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    /// Agent enabled (the default key).
    pub enabled: bool,
    /// Run fstrim after cloning/moving a disk.
    pub fstrim_cloned_disks: Option<bool>,
    /// `type=virtio|isa`.
    pub agent_type: Option<AgentType>,
    /// `guest-fsfreeze`: freeze filesystems on backup.
    pub guest_fsfreeze: Option<bool>,
    /// Unknown keys, in order.
    pub extra: Extra,
}

impl Agent {
    /// `agent=1` (or `0`) with no other options.
    pub fn enabled(enabled: bool) -> Self {
        Agent {
            enabled,
            ..Default::default()
        }
    }
}

impl FromStr for Agent {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const K: &str = "agent";
        let mut a = Agent::default();
        for (k, v) in split_property_string(s) {
            match k.as_str() {
                "" | "enabled" => a.enabled = parse_flag(K, s, "enabled", &v)?,
                "fstrim_cloned_disks" => a.fstrim_cloned_disks = Some(parse_flag(K, s, &k, &v)?),
                "guest-fsfreeze" => a.guest_fsfreeze = Some(parse_flag(K, s, &k, &v)?),
                "type" => {
                    a.agent_type = Some(match v.as_str() {
                        "virtio" => AgentType::Virtio,
                        "isa" => AgentType::Isa,
                        _ => {
                            return Err(PropError::new(
                                K,
                                s,
                                format!("type={v:?} is not virtio|isa"),
                            ))
                        }
                    })
                }
                _ => a.extra.push((k, v)),
            }
        }
        Ok(a)
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![bool01(self.enabled).to_string()];
        if let Some(v) = self.fstrim_cloned_disks {
            parts.push(format!("fstrim_cloned_disks={}", bool01(v)));
        }
        if let Some(v) = self.guest_fsfreeze {
            parts.push(format!("guest-fsfreeze={}", bool01(v)));
        }
        if let Some(t) = self.agent_type {
            parts.push(format!(
                "type={}",
                match t {
                    AgentType::Virtio => "virtio",
                    AgentType::Isa => "isa",
                }
            ));
        }
        push_extra(&mut parts, &self.extra);
        f.write_str(&parts.join(","))
    }
}

/// A `tags` value. Proxmox stores the list as given, split on `;`, `,` or whitespace;
/// compare two lists with [`Tags::same_set`]. Display joins with `;` in the stored order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(pub Vec<String>);

impl Tags {
    /// Build a tag list, checking every tag against `pve-tag`: `[a-z0-9_][a-z0-9_\-+.]*`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(tags: I) -> Result<Self, PropError> {
        let tags: Vec<String> = tags.into_iter().map(Into::into).collect();
        for t in &tags {
            let ok = t.chars().enumerate().all(|(i, c)| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || c == '_'
                    || (i > 0 && matches!(c, '-' | '+' | '.'))
            });
            if t.is_empty() || !ok {
                return Err(PropError::new(
                    "tags",
                    t,
                    "a tag is [a-z0-9_] followed by [a-z0-9_-+.]",
                ));
            }
        }
        Ok(Tags(tags))
    }
    /// The tags as a set (order and duplicates ignored).
    pub fn as_set(&self) -> BTreeSet<&str> {
        self.0.iter().map(String::as_str).collect()
    }
    /// True when both lists hold the same tags, ignoring order and duplicates.
    pub fn same_set(&self, other: &Tags) -> bool {
        self.as_set() == other.as_set()
    }
    /// True when `tag` is in the list.
    pub fn contains(&self, tag: &str) -> bool {
        self.0.iter().any(|t| t == tag)
    }
}

impl FromStr for Tags {
    type Err = PropError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Tags(
            s.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_alias_form_parses_model_and_mac() {
        let n: NetDevice = "virtio=bc:24:11:00:00:01,bridge=vmbr0,tag=20,firewall=1"
            .parse()
            .unwrap();
        assert_eq!(n.model, NicModel::Virtio);
        assert_eq!(n.macaddr.unwrap().to_string(), "BC:24:11:00:00:01");
        assert_eq!(
            n.to_string(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20"
        );
    }

    #[test]
    fn net_tag_out_of_range_is_an_error_naming_the_key() {
        let e = "virtio,bridge=vmbr0,tag=4095"
            .parse::<NetDevice>()
            .unwrap_err();
        assert!(e.to_string().contains("tag=4095"), "{e}");
    }

    #[test]
    fn disk_spec_round_trips_proxmox_sorted_output() {
        let s = "local-lvm:vm-100-disk-0,discard=on,iothread=1,size=32G,ssd=1";
        let d: DiskSpec = s.parse().unwrap();
        assert_eq!(d.size, Some(DiskSize::gib(32)));
        assert_eq!(d.to_string(), s);
    }

    #[test]
    fn disk_size_units_are_1024_based() {
        assert_eq!("10240M".parse::<DiskSize>().unwrap(), DiskSize::gib(10));
        assert_eq!("1.5K".parse::<DiskSize>().unwrap(), DiskSize(1536));
        assert_eq!("2048".parse::<DiskSize>().unwrap(), DiskSize(2048));
        assert!("+10G".parse::<DiskSize>().is_err());
        assert_eq!(DiskSize::mib(10240).to_string(), "10G");
    }
}
