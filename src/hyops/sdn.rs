//! The SDN authority (contract §4.3): where the `core/onprem/network-sdn` state is read from
//! (`HYOPS_SDN_AUTHORITY_ROOT`, `HYOPS_SDN_AUTHORITY_ENV`, default env `shared`), the
//! managed-bridge guard for `vnet*` bridges with upstream's messages, and the typed view of
//! the state the IPAM allocator uses (zone, vnets with VLAN ids, the first subnet per vnet,
//! the static pool `gateway+1 .. dhcp_range_start-1`). Reads state files only; knows
//! nothing about NetBox, SSH or Proxmox calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

use super::paths::RuntimeRoot;

/// The default `addressing.ipam.network_state_ref`.
pub const NETWORK_SDN_REF: &str = "core/onprem/network-sdn";
/// The env whose state is the SDN authority by default.
pub const DEFAULT_SDN_AUTHORITY_ENV: &str = "shared";
/// The zone used when the SDN state publishes none (`zone_name` empty).
pub const DEFAULT_ZONE: &str = "onprem";

/// `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$` without `/`, `\` or `..` (upstream
/// `_validate_authority_env_name`), with upstream's message.
pub fn validate_authority_env_name(name: &str, label: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() {
        return Err(format!("{label} env name is empty"));
    }
    let first_ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if n.contains('/')
        || n.contains('\\')
        || n.contains("..")
        || !first_ok
        || !rest_ok
        || n.len() > 64
    {
        return Err(format!("invalid {label} env name: {}", py_repr(n)));
    }
    Ok(n.to_string())
}

/// Python's `repr()` of a string (single quotes unless the text holds one and no double).
pub fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The SDN authority's state dir: `HYOPS_SDN_AUTHORITY_ROOT` (relative → against the runtime
/// root) + `/state`, else `<home>/.hybridops/envs/<HYOPS_SDN_AUTHORITY_ENV>/state`, else
/// `<home>/.hybridops/envs/shared/state`.
pub fn sdn_authority_state_dir(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    home: &Path,
) -> Result<PathBuf, String> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(raw) = get("HYOPS_SDN_AUTHORITY_ROOT") {
        let p = expand_home(raw, home);
        let p = if p.is_absolute() {
            p
        } else {
            root.path().join(p)
        };
        return Ok(p.join("state"));
    }
    let name = match get("HYOPS_SDN_AUTHORITY_ENV") {
        Some(raw) => validate_authority_env_name(raw, "sdn authority")?,
        None => DEFAULT_SDN_AUTHORITY_ENV.to_string(),
    };
    Ok(home
        .join(".hybridops")
        .join("envs")
        .join(name)
        .join("state"))
}

fn expand_home(raw: &str, home: &Path) -> PathBuf {
    match raw.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if raw == "~" => home.to_path_buf(),
        None => PathBuf::from(raw),
    }
}

/// What reading the network-sdn state gave.
#[derive(Debug, Clone, Default)]
pub struct SdnRead {
    pub payload: Map<String, Value>,
    /// `resolved network_sdn authority state_dir=...` when the authority is not the local root.
    pub warnings: Vec<String>,
    /// The state dir the file was read from.
    pub state_dir: PathBuf,
}

/// `_read_network_sdn_state_with_authority`: refs starting with `core/onprem/network-sdn`
/// are read from the SDN authority, others from the local state dir. The error text is
/// upstream's (`failed to read <ref>: <path>` for a missing file).
pub fn read_network_sdn_state(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    home: &Path,
    network_state_ref: &str,
) -> Result<SdnRead, (Vec<String>, String)> {
    let local = root.state_dir();
    let mut out = SdnRead {
        state_dir: local.clone(),
        ..SdnRead::default()
    };
    let state_ref = network_state_ref.trim();
    if state_ref.starts_with(NETWORK_SDN_REF) {
        let dir = sdn_authority_state_dir(root, env, home).map_err(|e| (Vec::new(), e))?;
        if normalize(&dir) != normalize(&local) {
            out.warnings.push(format!(
                "resolved network_sdn authority state_dir={}",
                normalize(&dir).display()
            ));
            out.state_dir = normalize(&dir);
        }
    }
    // `read_module_state` with Python's error texts (the path alone for a missing file,
    // `json.loads`' message for a broken one).
    let fail = |warnings: &Vec<String>, e: &dyn std::fmt::Display| {
        (warnings.clone(), format!("failed to read {state_ref}: {e}"))
    };
    let dict = crate::hyops::state_refs::read_module_state(&out.state_dir, state_ref)
        .map_err(|e| fail(&out.warnings, &e))?;
    let value = crate::yaml::PyValue::Dict(dict)
        .to_json(state_ref)
        .map_err(|e| fail(&out.warnings, &e))?;
    if let Value::Object(m) = value {
        out.payload = m;
    }
    Ok(out)
}

/// Lexical normalisation (`.`/`..` folded) so two spellings of one dir compare equal.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn status_of(payload: &Map<String, Value>) -> String {
    payload
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Bridges the guard looks at: those starting with `vnet` (case-insensitive), sorted.
pub fn managed_bridges<'a>(bridges: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    bridges
        .into_iter()
        .filter(|b| b.to_lowercase().starts_with("vnet"))
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// What the managed-bridge guard found: expected `gw/prefixlen` per bridge (for the
/// host-side drift probe) and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeGuard {
    pub expected_gateways: BTreeMap<String, BTreeSet<String>>,
    pub warnings: Vec<String>,
}

/// The managed-bridge guard (§4.3), in static mode too: the network-sdn state must be ok,
/// publish every requested `vnet*` bridge under `outputs.vnets`, and define an IPv4
/// `gateway/prefixlen` for each. Returns upstream's error text on failure.
pub fn managed_bridge_guard(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    home: &Path,
    network_state_ref: &str,
    bridges: &[String],
) -> Result<BridgeGuard, (Vec<String>, String)> {
    let mut guard = BridgeGuard::default();
    if bridges.is_empty() {
        return Ok(guard);
    }
    let joined = bridges.join(", ");
    let read = match read_network_sdn_state(root, env, home, network_state_ref) {
        Ok(r) => r,
        Err((w, e)) => {
            return Err((
                w,
                format!(
                "managed bridge(s) require network_sdn state: {e}. Requested bridges: [{joined}]"
            ),
            ))
        }
    };
    guard.warnings.extend(read.warnings.iter().cloned());
    let fail = |g: &BridgeGuard, msg: String| Err((g.warnings.clone(), msg));
    let st = status_of(&read.payload);
    if st != "ok" {
        return fail(
            &guard,
            format!(
                "managed bridge(s) require network_sdn state status=ok: {network_state_ref} status={} (requested bridges: [{joined}])",
                if st.is_empty() { "unknown" } else { &st }
            ),
        );
    }
    let Some(Value::Object(outputs)) = read.payload.get("outputs") else {
        return fail(
            &guard,
            format!("network_sdn state has no outputs: {network_state_ref}"),
        );
    };
    let Some(Value::Object(vnets)) = outputs.get("vnets") else {
        return fail(
            &guard,
            format!("network_sdn outputs missing vnets: {network_state_ref}"),
        );
    };
    let missing: Vec<&str> = bridges
        .iter()
        .filter(|b| !vnets.contains_key(b.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let mut known: Vec<&str> = vnets.keys().map(String::as_str).collect();
        known.sort();
        return fail(
            &guard,
            format!(
                "requested HybridOps SDN bridge(s) are not present in network_sdn state outputs: [{}]. Known vnets: [{}]",
                missing.join(", "),
                known.join(", ")
            ),
        );
    }
    let Some(Value::Object(subnets)) = outputs.get("subnets") else {
        return fail(&guard, "network_sdn outputs missing subnets".to_string());
    };
    let mut expected: BTreeMap<String, BTreeSet<String>> = bridges
        .iter()
        .map(|b| (b.clone(), BTreeSet::new()))
        .collect();
    for subnet in subnets.values() {
        let Value::Object(s) = subnet else { continue };
        let bridge = s.get("vnet").and_then(Value::as_str).unwrap_or("").trim();
        let Some(set) = expected.get_mut(bridge) else {
            continue;
        };
        let cidr = s.get("cidr").and_then(Value::as_str).unwrap_or("").trim();
        let gw = s
            .get("gateway")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        let (Some(net), Ok(gw)) = (strict_net(cidr), gw.parse::<Ipv4Addr>()) else {
            continue;
        };
        if net.contains(&gw) {
            set.insert(format!("{gw}/{}", net.prefix_len()));
        }
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k.as_str())
        .collect();
    if !missing.is_empty() {
        return fail(
            &guard,
            format!(
                "network_sdn outputs do not define expected gateway CIDRs for requested bridge(s): [{}]",
                missing.join(", ")
            ),
        );
    }
    guard.expected_gateways = expected;
    Ok(guard)
}

/// An IPv4 network given with no host bits set (Python's `ip_network(strict=True)`).
fn strict_net(cidr: &str) -> Option<Ipv4Net> {
    let net: Ipv4Net = cidr.parse().ok()?;
    (net.trunc() == net).then_some(net)
}

/// The host-side SDN gateway probe is an SSH check; without a way to run it, upstream's
/// skip warnings say why (`sdn host gateway probe skipped: ...`).
pub fn host_probe_skipped_warning(
    api_ip: Option<&str>,
    ssh_key: Option<&str>,
    reason: Option<&str>,
) -> String {
    match (api_ip.filter(|s| !s.is_empty()), ssh_key.filter(|s| !s.is_empty()), reason) {
        (None, _, _) => "sdn host gateway probe skipped: proxmox.ready.json is missing or does not publish api_ip".into(),
        (Some(_), None, _) => "sdn host gateway probe skipped: proxmox ssh key not available in runtime credentials".into(),
        (Some(_), Some(_), Some(r)) => format!("sdn host gateway probe skipped: {r}"),
        (Some(_), Some(_), None) => "sdn host gateway probe skipped: host-side SSH probe unavailable in this build".into(),
    }
}

/// One subnet of the SDN state, typed for IPAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdnSubnet {
    pub vnet: String,
    /// The raw `cidr`, `gateway` and `dhcp_range_start` strings (upstream checks presence on
    /// the strings; parsing happens in [`SdnSubnet::static_pool`]).
    pub cidr: String,
    pub gateway: String,
    pub dhcp_range_start: String,
}

/// The static pool `[gateway+1 .. dhcp_range_start-1]` of a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticPool {
    pub network: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl StaticPool {
    pub fn prefix_len(&self) -> u8 {
        self.network.prefix_len()
    }
    /// Number of hosts in the pool.
    pub fn size(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
    /// `10.10.0.2-10.10.0.119` (how plans show the range).
    pub fn range_text(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
    pub fn contains(&self, host: Ipv4Addr) -> bool {
        host >= self.start && host <= self.end
    }
    /// Hosts in ascending order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.start)..=u32::from(self.end)).map(Ipv4Addr::from)
    }
}

impl SdnSubnet {
    /// `_compute_static_pool` with upstream's messages.
    pub fn static_pool(&self) -> Result<StaticPool, String> {
        let network = match self.cidr.parse::<Ipv4Net>() {
            Ok(n) if n.trunc() == n => n,
            Ok(_) => return Err(format!("{} has host bits set", self.cidr)),
            Err(_) => {
                return Err(if self.cidr.contains(':') {
                    "subnet cidr must be IPv4".to_string()
                } else {
                    format!(
                        "{} does not appear to be an IPv4 or IPv6 network",
                        py_repr(&self.cidr)
                    )
                })
            }
        };
        let gw: Ipv4Addr = self
            .gateway
            .parse()
            .map_err(|_| "gateway/dhcp_start must be IPv4".to_string())?;
        let dhcp: Ipv4Addr = self
            .dhcp_range_start
            .parse()
            .map_err(|_| "gateway/dhcp_start must be IPv4".to_string())?;
        if !network.contains(&gw) {
            return Err(format!(
                "gateway {} not inside prefix {}",
                self.gateway, self.cidr
            ));
        }
        if !network.contains(&dhcp) {
            return Err(format!(
                "dhcp_range_start {} not inside prefix {}",
                self.dhcp_range_start, self.cidr
            ));
        }
        let start = u32::from(gw).checked_add(1);
        let end = u32::from(dhcp).checked_sub(1);
        match (start, end) {
            (Some(s), Some(e)) if s <= e => Ok(StaticPool {
                network,
                gateway: gw,
                start: Ipv4Addr::from(s),
                end: Ipv4Addr::from(e),
            }),
            _ => Err(format!("invalid static pool for {}: start>end", self.cidr)),
        }
    }
}

/// The SDN state as IPAM reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdnAuthority {
    pub network_state_ref: String,
    /// `outputs.zone_name`, or `onprem` when empty.
    pub zone_name: String,
    /// `vnets.<name>.vlan_id` (0 or absent → none).
    pub vlan_ids: BTreeMap<String, u16>,
    /// The first subnet listed for each vnet.
    pub subnet_by_vnet: BTreeMap<String, SdnSubnet>,
    pub warnings: Vec<String>,
}

impl SdnAuthority {
    /// Known vnets (those with a subnet), sorted, comma-joined (for messages).
    pub fn known_vnets(&self) -> String {
        self.subnet_by_vnet
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The IPAM block's SDN read (§4.3/§4.4) with its messages (`ipam requires network_sdn …`).
pub fn read_sdn_for_ipam(
    root: &RuntimeRoot,
    env: &BTreeMap<String, String>,
    home: &Path,
    network_state_ref: &str,
) -> Result<SdnAuthority, (Vec<String>, String)> {
    let read = read_network_sdn_state(root, env, home, network_state_ref)
        .map_err(|(w, e)| (w, format!("ipam requires network_sdn state: {e}")))?;
    let warnings = read.warnings.clone();
    let st = status_of(&read.payload);
    if st != "ok" {
        return Err((
            warnings,
            format!(
                "ipam requires network_sdn state ok: {network_state_ref} status={}",
                if st.is_empty() { "missing" } else { &st }
            ),
        ));
    }
    let Some(Value::Object(outputs)) = read.payload.get("outputs") else {
        return Err((
            warnings,
            format!("ipam requires network_sdn outputs: {network_state_ref}"),
        ));
    };
    let (Some(Value::Object(vnets)), Some(Value::Object(subnets))) =
        (outputs.get("vnets"), outputs.get("subnets"))
    else {
        return Err((
            warnings,
            format!("ipam requires vnets/subnets in state outputs: {network_state_ref}"),
        ));
    };
    let zone = outputs
        .get("zone_name")
        .map(py_str)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ZONE.to_string());
    let mut vlan_ids = BTreeMap::new();
    for (name, v) in vnets {
        let vid = v
            .get("vlan_id")
            .and_then(|x| {
                x.as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .unwrap_or(0);
        if vid > 0 {
            if let Ok(v) = u16::try_from(vid) {
                vlan_ids.insert(name.clone(), v);
            }
        }
    }
    let mut subnet_by_vnet = BTreeMap::new();
    for s in subnets.values() {
        let Value::Object(s) = s else { continue };
        let vnet = s
            .get("vnet")
            .map(py_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        if vnet.is_empty() || subnet_by_vnet.contains_key(&vnet) {
            continue;
        }
        let field = |k: &str| s.get(k).map(py_str).unwrap_or_default().trim().to_string();
        subnet_by_vnet.insert(
            vnet.clone(),
            SdnSubnet {
                vnet,
                cidr: field("cidr"),
                gateway: field("gateway"),
                dhcp_range_start: field("dhcp_range_start"),
            },
        );
    }
    Ok(SdnAuthority {
        network_state_ref: network_state_ref.to_string(),
        zone_name: zone,
        vlan_ids,
        subnet_by_vnet,
        warnings,
    })
}

/// Python's `str(value or "")` for JSON scalars.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null | Value::Bool(false) => String::new(),
        Value::Number(n) if n.as_f64() == Some(0.0) => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str, gw: &str, dhcp: &str) -> SdnSubnet {
        SdnSubnet {
            vnet: "vnetmgmt".into(),
            cidr: cidr.into(),
            gateway: gw.into(),
            dhcp_range_start: dhcp.into(),
        }
    }

    #[test]
    fn static_pool_runs_from_gateway_plus_one_to_dhcp_start_minus_one() {
        let p = subnet("10.10.0.0/24", "10.10.0.1", "10.10.0.120")
            .static_pool()
            .unwrap();
        assert_eq!(p.range_text(), "10.10.0.2-10.10.0.119");
        assert_eq!(p.size(), 118);
        assert_eq!(p.prefix_len(), 24);
    }

    #[test]
    fn static_pool_errors_are_upstreams() {
        assert_eq!(
            subnet("10.10.0.0/24", "10.11.0.1", "10.10.0.120")
                .static_pool()
                .unwrap_err(),
            "gateway 10.11.0.1 not inside prefix 10.10.0.0/24"
        );
        assert_eq!(
            subnet("10.10.0.0/24", "10.10.0.1", "10.10.0.2")
                .static_pool()
                .unwrap_err(),
            "invalid static pool for 10.10.0.0/24: start>end"
        );
    }

    #[test]
    fn only_vnet_bridges_are_managed() {
        assert_eq!(
            managed_bridges(["vmbr0", "vnetmgmt", "VNETdata", "vnetmgmt"]),
            vec!["VNETdata".to_string(), "vnetmgmt".to_string()]
        );
    }

    #[test]
    fn authority_env_names_are_checked_like_upstream() {
        assert_eq!(
            validate_authority_env_name("../x", "sdn authority").unwrap_err(),
            "invalid sdn authority env name: '../x'"
        );
        assert!(validate_authority_env_name("shared", "sdn authority").is_ok());
    }
}
