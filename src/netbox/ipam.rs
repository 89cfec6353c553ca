//! IPAM allocation with upstream's identities (contract §4.4–4.6).
//!
//! - Identity `hyops:<zone>:<logical_key>:<bridge>:<nic_index_1based>`, stored only in the IP
//!   address `description`. Reuse comes first: a record whose description is exactly the
//!   identity (re-checked on the client) keeps its address as-is.
//! - The objects upstream ensures: site `<zone>`, IPAM role `hyops-static`, the VLAN of the
//!   vnet, the prefix `hyops <zone> <bridge>` and the ip-range
//!   `hyops static pool <zone> <bridge>` over `gateway+1 .. dhcp_range_start-1`. They are
//!   PATCHed only when a field differs, so a re-apply writes nothing.
//! - New addresses come from one atomic `POST /api/ipam/ip-ranges/{id}/available-ips/` per
//!   range carrying every pending NIC's identity (NetBox hands out the lowest free hosts in
//!   request order under its global lock). When hosts published by other HyOps slots in the
//!   range are unknown to NetBox, the range falls back to upstream's scan: explicit
//!   `POST /api/ipam/ip-addresses/` upward, skipping published hosts, a duplicate moving on to
//!   the next host.
//! - A create whose reply is lost is resolved by re-reading the identities, never resent
//!   blindly. After creating, identities are re-read: if a racing run made a second record
//!   for the same identity, the lowest id wins and the loser deletes only the record it made.
//! - Reservations are `status: reserved` and never released.
//!
//! Knows nothing about HyOps state files or Proxmox; the caller passes published hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::NetboxClient;
use super::error::NetboxError;
use super::objects::{choice_of, host_of, id_of, ref_id, slugify, str_of, IpRecord};

/// The IPAM role of HyOps prefixes and ranges.
pub const IPAM_ROLE: &str = "hyops-static";
/// Identities per batched `?description=` lookup (keeps URLs short).
const LOOKUP_CHUNK: usize = 40;

/// `hyops:<zone>:<logical_key>:<bridge>:<nic_index_1based>`.
pub fn identity(zone: &str, vm_key: &str, bridge: &str, nic_index: usize) -> String {
    format!("hyops:{zone}:{vm_key}:{bridge}:{nic_index}")
}

/// The static pool of one bridge (from the SDN authority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub network: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    pub fn prefix_len(&self) -> u8 {
        self.network.prefix_len()
    }
    pub fn contains(&self, h: Ipv4Addr) -> bool {
        h >= self.start && h <= self.end
    }
    /// `10.10.0.2-10.10.0.119`.
    pub fn range_text(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.start)..=u32::from(self.end)).map(Ipv4Addr::from)
    }
}

/// One NIC that needs an address from NetBox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRequest {
    /// Logical VM key (or the single-VM `vm_name`).
    pub vm_key: String,
    pub bridge: String,
    /// 1-based.
    pub nic_index: usize,
    pub pool: Pool,
    /// `vnets.<bridge>.vlan_id` when > 0.
    pub vlan_id: Option<u16>,
    /// The address this NIC published in the slot's previous ok state (preferred when
    /// NetBox holds more than one record for the identity).
    pub published: Option<Ipv4Addr>,
}

/// What happens (or happened) to one NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpamAction {
    /// An existing record carries the identity: its address is used.
    Reuse,
    /// Plan only: the first free host of the range will be reserved at apply.
    Allocate,
    /// Apply: a new reservation was made in this run.
    Allocated,
    /// An explicit address, checked against NetBox (§4.6).
    Explicit,
}

/// The IPAM decision for one NIC (plan.json, `ipam_allocations.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDecision {
    pub vm_key: String,
    pub bridge: String,
    pub nic_index: usize,
    pub identity: String,
    pub action: IpamAction,
    /// `10.10.0.5/24` (absent for a pending allocation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The static pool, `start-end`.
    pub range: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netbox_id: Option<u64>,
    /// Other records found with the same identity (left alone, reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_ids: Vec<u64>,
}

impl NicDecision {
    /// `reuse 10.10.0.5/24 (hyops:…)`, `allocate (first free in …)`, … for plan text.
    pub fn describe(&self) -> String {
        let addr = self.address.as_deref().unwrap_or("?");
        match self.action {
            IpamAction::Reuse => format!("reuse {addr} ({})", self.identity),
            IpamAction::Allocate => format!("allocate (first free in {})", self.range),
            IpamAction::Allocated => format!(
                "allocated {addr} (first free in {}; {})",
                self.range, self.identity
            ),
            IpamAction::Explicit => format!("explicit {addr} ({})", self.identity),
        }
    }
}

/// IPAM failures, with upstream's wording where the contract fixes it.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// `ipam allocation failed for {vm} {bridge}: {detail}` (§4.4).
    #[error("ipam allocation failed for {vm} {bridge}: {detail}")]
    Allocation {
        vm: String,
        bridge: String,
        detail: String,
    },
    /// Ensuring a site, role, VLAN, prefix or range failed.
    #[error("ipam: cannot ensure NetBox {object}: {source}")]
    Ensure {
        object: String,
        #[source]
        source: NetboxError,
    },
    /// A lookup failed.
    #[error("ipam: NetBox lookup failed: {0}")]
    Lookup(#[source] NetboxError),
}

/// The records carrying each identity, exact description matches only, sorted by id.
pub async fn find_by_identities(
    client: &NetboxClient,
    identities: &[String],
) -> Result<BTreeMap<String, Vec<IpRecord>>, NetboxError> {
    let wanted: BTreeSet<&str> = identities.iter().map(String::as_str).collect();
    let mut out: BTreeMap<String, Vec<IpRecord>> = BTreeMap::new();
    let unique: Vec<&str> = wanted.iter().copied().collect();
    for chunk in unique.chunks(LOOKUP_CHUNK) {
        let query: Vec<(String, String)> = chunk
            .iter()
            .map(|d| ("description".to_string(), d.to_string()))
            .collect();
        for v in client.list("/api/ipam/ip-addresses/", &query).await? {
            let Some(r) = IpRecord::from_value(&v) else {
                continue;
            };
            // Client-side re-check: an ignored filter returns the whole table.
            if wanted.contains(r.description.as_str()) {
                out.entry(r.description.clone()).or_default().push(r);
            }
        }
    }
    for recs in out.values_mut() {
        recs.sort_by_key(|r| r.id);
        recs.dedup_by_key(|r| r.id);
    }
    Ok(out)
}

/// Records whose host is one of `hosts` (`?address=<host>` matches any mask), re-checked.
pub async fn find_by_hosts(
    client: &NetboxClient,
    hosts: &[Ipv4Addr],
) -> Result<BTreeMap<Ipv4Addr, Vec<IpRecord>>, NetboxError> {
    let wanted: BTreeSet<Ipv4Addr> = hosts.iter().copied().collect();
    let mut out: BTreeMap<Ipv4Addr, Vec<IpRecord>> = BTreeMap::new();
    let list: Vec<Ipv4Addr> = wanted.iter().copied().collect();
    for chunk in list.chunks(LOOKUP_CHUNK) {
        let query: Vec<(String, String)> = chunk
            .iter()
            .map(|h| ("address".to_string(), h.to_string()))
            .collect();
        for v in client.list("/api/ipam/ip-addresses/", &query).await? {
            let Some(r) = IpRecord::from_value(&v) else {
                continue;
            };
            if let Some(h) = r.host().filter(|h| wanted.contains(h)) {
                out.entry(h).or_default().push(r);
            }
        }
    }
    Ok(out)
}

/// Pick the record to use among those carrying one identity: the one whose host the slot
/// published before, else the lowest id. Returns it and the ids of the others.
fn pick(records: &[IpRecord], published: Option<Ipv4Addr>) -> Option<(&IpRecord, Vec<u64>)> {
    let chosen = published
        .and_then(|p| records.iter().find(|r| r.host() == Some(p)))
        .or_else(|| records.iter().min_by_key(|r| r.id))?;
    let others = records
        .iter()
        .filter(|r| r.id != chosen.id)
        .map(|r| r.id)
        .collect();
    Some((chosen, others))
}

/// Read-only preview for `plan`/`preflight`: reuse where a record exists, otherwise
/// "allocate (first free in <range>)". Never writes.
pub async fn preview(
    client: &NetboxClient,
    zone: &str,
    requests: &[NicRequest],
) -> Result<Vec<NicDecision>, IpamError> {
    let ids: Vec<String> = requests
        .iter()
        .map(|r| identity(zone, &r.vm_key, &r.bridge, r.nic_index))
        .collect();
    let found = find_by_identities(client, &ids)
        .await
        .map_err(IpamError::Lookup)?;
    Ok(requests
        .iter()
        .zip(ids)
        .map(|(r, id)| {
            let base = NicDecision {
                vm_key: r.vm_key.clone(),
                bridge: r.bridge.clone(),
                nic_index: r.nic_index,
                identity: id.clone(),
                action: IpamAction::Allocate,
                address: None,
                range: r.pool.range_text(),
                netbox_id: None,
                duplicate_ids: Vec::new(),
            };
            match found.get(&id).and_then(|recs| pick(recs, r.published)) {
                Some((rec, dups)) => NicDecision {
                    action: IpamAction::Reuse,
                    address: Some(rec.address.clone()),
                    netbox_id: Some(rec.id),
                    duplicate_ids: dups,
                    ..base
                },
                None => base,
            }
        })
        .collect())
}

/// Settings of one allocation run.
#[derive(Debug, Clone)]
pub struct AllocateOptions {
    pub zone: String,
    /// Hosts published by ok platform-vm slots of this env: never handed out.
    pub used_hosts: BTreeSet<Ipv4Addr>,
    /// How long a lost create reply is re-read before the create is considered absent.
    pub settle: Duration,
}

/// The objects of one bridge's pool.
#[derive(Debug, Clone, Copy)]
struct RangeObjects {
    range_id: u64,
}

/// Ensured per run: site and role (shared), and per bridge the VLAN, prefix and range.
struct Ensurer<'a> {
    client: &'a NetboxClient,
    zone: String,
    site_id: Option<u64>,
    role_id: Option<u64>,
    ranges: BTreeMap<String, RangeObjects>,
}

/// Fields of `desired` that differ from `current` (reference fields compared by id, choice
/// fields by value, strings trimmed).
fn changed_fields(current: &Value, desired: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Some(d) = desired.as_object() else {
        return out;
    };
    for (k, want) in d {
        let have = current.get(k);
        let same = match (have, want) {
            (Some(Value::Object(_)), Value::Number(n)) => ref_id(current, k) == n.as_u64(),
            (Some(Value::Object(m)), Value::String(s)) if m.contains_key("value") => {
                choice_of(current, k) == *s
            }
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Some(Value::String(a)), Value::String(b)) => a.trim() == b.trim(),
            (Some(Value::Null) | None, Value::Null) => true,
            (Some(a), b) => a == b,
            (None, _) => false,
        };
        if !same {
            out.insert(k.clone(), want.clone());
        }
    }
    out
}

/// GET a list with `query`, keep what `keep` accepts (client-side re-check), lowest id.
async fn find_one(
    client: &NetboxClient,
    path: &str,
    query: &[(&str, String)],
    keep: impl Fn(&Value) -> bool,
) -> Result<Option<Value>, NetboxError> {
    let q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut hits: Vec<Value> = client
        .list(path, &q)
        .await?
        .into_iter()
        .filter(|v| keep(v))
        .collect();
    hits.sort_by_key(|v| id_of(v).unwrap_or(u64::MAX));
    Ok(hits.into_iter().next())
}

/// Get-or-create: look up, create when absent; a create that conflicts (another run made it
/// first) or whose reply was lost is resolved by looking up again.
async fn get_or_create<F, Fut>(
    client: &NetboxClient,
    path: &str,
    lookup: F,
    payload: &Value,
) -> Result<Value, NetboxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Value>, NetboxError>>,
{
    if let Some(v) = lookup().await? {
        return Ok(v);
    }
    match client.create(path, payload).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_conflict() || e.outcome_unknown() => {
            for wait_ms in [0u64, 200, 500, 1000, 2000] {
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                if let Some(v) = lookup().await? {
                    return Ok(v);
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

impl<'a> Ensurer<'a> {
    async fn site(&mut self) -> Result<u64, IpamError> {
        if let Some(id) = self.site_id {
            return Ok(id);
        }
        let zone = self.zone.clone();
        let client = self.client;
        let v = get_or_create(
            client,
            "/api/dcim/sites/",
            || {
                let zone = zone.clone();
                async move {
                    find_one(client, "/api/dcim/sites/", &[("slug", zone.clone())], |v| {
                        str_of(v, "slug") == zone
                    })
                    .await
                }
            },
            &json!({"name": zone, "slug": zone}),
        )
        .await
        .map_err(|source| IpamError::Ensure {
            object: format!("site {}", self.zone),
            source,
        })?;
        let id = id_of(&v).ok_or_else(|| IpamError::Ensure {
            object: format!("site {}", self.zone),
            source: no_id("/api/dcim/sites/"),
        })?;
        self.site_id = Some(id);
        Ok(id)
    }

    async fn role(&mut self) -> Result<u64, IpamError> {
        if let Some(id) = self.role_id {
            return Ok(id);
        }
        let slug = slugify(IPAM_ROLE);
        let client = self.client;
        let v = get_or_create(
            client,
            "/api/ipam/roles/",
            || {
                let slug = slug.clone();
                async move {
                    find_one(client, "/api/ipam/roles/", &[("slug", slug.clone())], |v| {
                        str_of(v, "slug") == slug
                    })
                    .await
                }
            },
            &json!({"name": IPAM_ROLE, "slug": slug}),
        )
        .await
        .map_err(|source| IpamError::Ensure {
            object: format!("ipam role {IPAM_ROLE}"),
            source,
        })?;
        let id = id_of(&v).ok_or_else(|| IpamError::Ensure {
            object: format!("ipam role {IPAM_ROLE}"),
            source: no_id("/api/ipam/roles/"),
        })?;
        self.role_id = Some(id);
        Ok(id)
    }

    /// Find (with `lookup`) or create, then PATCH only the fields that differ. A create
    /// refused because a racing run made the object first (or whose reply was lost) is
    /// resolved by looking up again and converging on what is there.
    async fn converge<F, Fut>(
        &self,
        object: String,
        path: &str,
        lookup: F,
        desired: Value,
    ) -> Result<Value, IpamError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Value>, NetboxError>>,
    {
        let err = |source| IpamError::Ensure {
            object: object.clone(),
            source,
        };
        let patch = |cur: Value| {
            let diff = changed_fields(&cur, &desired);
            let id = id_of(&cur);
            async move {
                if diff.is_empty() {
                    return Ok(cur);
                }
                let id = id.ok_or_else(|| no_id(path))?;
                self.client
                    .update(&format!("{path}{id}/"), &Value::Object(diff))
                    .await
            }
        };
        if let Some(cur) = lookup().await.map_err(IpamError::Lookup)? {
            return patch(cur).await.map_err(err);
        }
        match self.client.create(path, &desired).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_conflict() || e.outcome_unknown() => {
                for wait_ms in [0u64, 200, 500, 1000, 2000] {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    if let Some(cur) = lookup().await.map_err(IpamError::Lookup)? {
                        return patch(cur).await.map_err(err);
                    }
                }
                Err(err(e))
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn bridge(
        &mut self,
        bridge: &str,
        pool: &Pool,
        vlan: Option<u16>,
    ) -> Result<RangeObjects, IpamError> {
        if let Some(r) = self.ranges.get(bridge) {
            return Ok(*r);
        }
        let site = self.site().await?;
        let role = self.role().await?;
        let client = self.client;
        let zone = self.zone.clone();
        // VLAN (vid + site), named after the bridge.
        let mut vlan_obj_id = None;
        if let Some(vid) = vlan.filter(|v| *v > 0) {
            let lookup = || async move {
                find_one(
                    client,
                    "/api/ipam/vlans/",
                    &[("vid", vid.to_string()), ("site_id", site.to_string())],
                    |v| {
                        v.get("vid").and_then(Value::as_u64) == Some(u64::from(vid))
                            && ref_id(v, "site") == Some(site)
                    },
                )
                .await
            };
            let desired = json!({"name": bridge, "site": site, "vid": vid, "role": role});
            let v = self
                .converge(
                    format!("vlan {vid} ({bridge})"),
                    "/api/ipam/vlans/",
                    lookup,
                    desired,
                )
                .await?;
            vlan_obj_id = id_of(&v);
        }
        // Prefix: NetBox 4.2+ scopes prefixes (`scope_type`/`scope_id`); a `site` key is
        // ignored, so prefixes made by upstream have no scope. Look up by prefix alone and
        // prefer the one already scoped to our site, then the oldest.
        let cidr = pool.network.to_string();
        let lookup = || {
            let cidr = cidr.clone();
            async move {
                let mut hits: Vec<Value> = client
                    .list(
                        "/api/ipam/prefixes/",
                        &[("prefix".to_string(), cidr.clone())],
                    )
                    .await?
                    .into_iter()
                    .filter(|v| str_of(v, "prefix") == cidr && ref_id(v, "vrf").is_none())
                    .collect();
                hits.sort_by_key(|v| {
                    (
                        !(str_of(v, "scope_type") == "dcim.site"
                            && v.get("scope_id").and_then(Value::as_u64) == Some(site)),
                        id_of(v).unwrap_or(u64::MAX),
                    )
                });
                Ok(hits.into_iter().next())
            }
        };
        let mut desired = json!({
            "prefix": cidr,
            "scope_type": "dcim.site",
            "scope_id": site,
            "status": "active",
            "description": format!("hyops {zone} {bridge}"),
            "role": role,
        });
        if let Some(vid) = vlan_obj_id {
            desired["vlan"] = json!(vid);
        }
        self.converge(
            format!("prefix {cidr}"),
            "/api/ipam/prefixes/",
            lookup,
            desired,
        )
        .await?;
        // The static pool as an ip-range carrying the subnet's mask, so the available-ips
        // endpoint hands out `<host>/<prefixlen>` like upstream's explicit reservations.
        let start = pool.start;
        let end = pool.end;
        let lookup = || async move {
            find_one(
                client,
                "/api/ipam/ip-ranges/",
                &[
                    ("start_address", start.to_string()),
                    ("end_address", end.to_string()),
                ],
                |v| {
                    host_of(str_of(v, "start_address")) == Some(start)
                        && host_of(str_of(v, "end_address")) == Some(end)
                        && ref_id(v, "vrf").is_none()
                },
            )
            .await
        };
        let len = pool.prefix_len();
        let desired = json!({
            "start_address": format!("{start}/{len}"),
            "end_address": format!("{end}/{len}"),
            "status": "active",
            "description": format!("hyops static pool {zone} {bridge}"),
            "role": role,
        });
        let range = self
            .converge(
                format!("ip-range {}", pool.range_text()),
                "/api/ipam/ip-ranges/",
                lookup,
                desired,
            )
            .await?;
        let range_id = id_of(&range).ok_or_else(|| IpamError::Ensure {
            object: format!("ip-range {}", pool.range_text()),
            source: no_id("/api/ipam/ip-ranges/"),
        })?;
        let objs = RangeObjects { range_id };
        self.ranges.insert(bridge.to_string(), objs);
        Ok(objs)
    }
}

fn no_id(path: &str) -> NetboxError {
    NetboxError::Decode {
        method: "GET".into(),
        path: path.to_string(),
        detail: "the object has no id".into(),
    }
}

/// Allocate (apply/deploy only): reuse every identity NetBox already holds, reserve the rest,
/// in request order. Returns one decision per request, in the same order.
pub async fn allocate(
    client: &NetboxClient,
    opts: &AllocateOptions,
    requests: &[NicRequest],
) -> Result<Vec<NicDecision>, IpamError> {
    let ids: Vec<String> = requests
        .iter()
        .map(|r| identity(&opts.zone, &r.vm_key, &r.bridge, r.nic_index))
        .collect();
    let found = find_by_identities(client, &ids)
        .await
        .map_err(IpamError::Lookup)?;
    let mut decisions: Vec<Option<NicDecision>> = vec![None; requests.len()];
    let mut ensurer = Ensurer {
        client,
        zone: opts.zone.clone(),
        site_id: None,
        role_id: None,
        ranges: BTreeMap::new(),
    };
    // Pending NICs grouped by bridge, keeping request order inside each group and the order
    // in which bridges first appear.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        // Upstream ensures the pool objects for every NIC it allocates or reuses.
        ensurer.bridge(&r.bridge, &r.pool, r.vlan_id).await?;
        if let Some((rec, dups)) = found.get(&ids[i]).and_then(|recs| pick(recs, r.published)) {
            decisions[i] = Some(NicDecision {
                vm_key: r.vm_key.clone(),
                bridge: r.bridge.clone(),
                nic_index: r.nic_index,
                identity: ids[i].clone(),
                action: IpamAction::Reuse,
                address: Some(rec.address.clone()),
                range: r.pool.range_text(),
                netbox_id: Some(rec.id),
                duplicate_ids: dups,
            });
            continue;
        }
        match groups.iter_mut().find(|(b, _)| *b == r.bridge) {
            Some((_, v)) => v.push(i),
            None => groups.push((r.bridge.clone(), vec![i])),
        }
    }
    let mut used = opts.used_hosts.clone();
    for (bridge, idxs) in groups {
        let objs = ensurer
            .ranges
            .get(&bridge)
            .copied()
            .ok_or_else(|| IpamError::Ensure {
                object: format!("ip-range for {bridge}"),
                source: no_id("/api/ipam/ip-ranges/"),
            })?;
        let pool = requests[idxs[0]].pool;
        let blocked: Vec<Ipv4Addr> = used.iter().copied().filter(|h| pool.contains(*h)).collect();
        let unknown_blocked = if blocked.is_empty() {
            false
        } else {
            let known = find_by_hosts(client, &blocked)
                .await
                .map_err(IpamError::Lookup)?;
            blocked.iter().any(|h| !known.contains_key(h))
        };
        let made = if unknown_blocked {
            scan_group(client, opts, requests, &ids, &idxs, &mut used).await?
        } else {
            atomic_group(client, opts, requests, &ids, &idxs, objs.range_id).await?
        };
        for (i, rec) in made {
            if let Some(h) = rec.host() {
                used.insert(h);
            }
            decisions[i] = Some(NicDecision {
                vm_key: requests[i].vm_key.clone(),
                bridge: requests[i].bridge.clone(),
                nic_index: requests[i].nic_index,
                identity: ids[i].clone(),
                action: IpamAction::Allocated,
                address: Some(rec.address.clone()),
                range: requests[i].pool.range_text(),
                netbox_id: Some(rec.id),
                duplicate_ids: Vec::new(),
            });
        }
    }
    decisions
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            d.ok_or_else(|| IpamError::Allocation {
                vm: requests[i].vm_key.clone(),
                bridge: requests[i].bridge.clone(),
                detail: "internal error: no decision was made for this NIC".into(),
            })
        })
        .collect()
}

fn alloc_err(r: &NicRequest, detail: impl Into<String>) -> IpamError {
    IpamError::Allocation {
        vm: r.vm_key.clone(),
        bridge: r.bridge.clone(),
        detail: detail.into(),
    }
}

/// Re-read identities until each is found or `settle` has passed.
async fn settle_lookup(
    client: &NetboxClient,
    identities: &[String],
    settle: Duration,
) -> Result<BTreeMap<String, Vec<IpRecord>>, NetboxError> {
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        let found = find_by_identities(client, identities).await?;
        if identities.iter().all(|i| found.contains_key(i)) || started.elapsed() >= settle {
            return Ok(found);
        }
        tokio::time::sleep(wait.min(settle.saturating_sub(started.elapsed()))).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// After creating: if a racing run created a second record for an identity, the lowest id
/// wins; a losing record that this run made (`mine`) is deleted after re-checking it.
async fn converge_duplicates(
    client: &NetboxClient,
    mine: &mut [(usize, IpRecord)],
    ids: &[String],
) -> Result<(), NetboxError> {
    let idents: Vec<String> = mine.iter().map(|(i, _)| ids[*i].clone()).collect();
    let found = find_by_identities(client, &idents).await?;
    for (i, rec) in mine.iter_mut() {
        let Some(recs) = found.get(&ids[*i]) else {
            continue;
        };
        let Some(winner) = recs.iter().min_by_key(|r| r.id) else {
            continue;
        };
        if winner.id == rec.id {
            continue;
        }
        // Delete only our own record, and only after re-reading it by id.
        let path = format!("/api/ipam/ip-addresses/{}/", rec.id);
        let current = client.get(&path, &[]).await?;
        if IpRecord::from_value(&current)
            .is_some_and(|c| c.id == rec.id && c.description == ids[*i])
        {
            client.delete(&path).await?;
        }
        *rec = winner.clone();
    }
    Ok(())
}

/// The atomic path: one `available-ips` POST carrying every pending NIC of the range.
async fn atomic_group(
    client: &NetboxClient,
    opts: &AllocateOptions,
    requests: &[NicRequest],
    ids: &[String],
    idxs: &[usize],
    range_id: u64,
) -> Result<Vec<(usize, IpRecord)>, IpamError> {
    let path = format!("/api/ipam/ip-ranges/{range_id}/available-ips/");
    let body: Vec<Value> = idxs
        .iter()
        .map(|i| json!({"description": ids[*i], "status": "reserved"}))
        .collect();
    let mut made: Vec<(usize, IpRecord)> = Vec::new();
    let first = &requests[idxs[0]];
    match client.create(&path, &Value::Array(body)).await {
        Ok(Value::Array(items)) => {
            for v in items {
                let Some(rec) = IpRecord::from_value(&v) else {
                    continue;
                };
                // Map by identity, never by position alone.
                if let Some(i) = idxs.iter().copied().find(|i| ids[*i] == rec.description) {
                    made.push((i, rec));
                }
            }
            if made.len() != idxs.len() {
                // Anything missing is resolved one by one below.
                let got: BTreeSet<usize> = made.iter().map(|(i, _)| *i).collect();
                let rest: Vec<usize> = idxs.iter().copied().filter(|i| !got.contains(i)).collect();
                made.extend(one_by_one(client, opts, requests, ids, &rest, &path).await?);
            }
        }
        Ok(other) => {
            return Err(alloc_err(
                first,
                format!(
                    "failed to reserve IP from static pool {}: unexpected reply {}",
                    first.pool.range_text(),
                    other
                ),
            ))
        }
        // Not enough free hosts for all: go one by one so the earlier NICs still get theirs
        // and the first that cannot gets the exhausted message (upstream order).
        Err(e) if e.is_exhausted() => {
            made.extend(one_by_one(client, opts, requests, ids, idxs, &path).await?);
        }
        Err(e) if e.outcome_unknown() => {
            let wanted: Vec<String> = idxs.iter().map(|i| ids[*i].clone()).collect();
            let found = settle_lookup(client, &wanted, opts.settle)
                .await
                .map_err(IpamError::Lookup)?;
            let mut rest = Vec::new();
            for i in idxs {
                match found
                    .get(&ids[*i])
                    .and_then(|r| r.iter().min_by_key(|r| r.id))
                {
                    Some(rec) => made.push((*i, rec.clone())),
                    None => rest.push(*i),
                }
            }
            made.extend(one_by_one(client, opts, requests, ids, &rest, &path).await?);
        }
        Err(e) => {
            return Err(alloc_err(
                first,
                format!(
                    "failed to reserve IP from static pool {}: {e}",
                    first.pool.range_text()
                ),
            ))
        }
    }
    converge_duplicates(client, &mut made, ids)
        .await
        .map_err(IpamError::Lookup)?;
    made.sort_by_key(|(i, _)| *i);
    Ok(made)
}

/// One `available-ips` POST per NIC; a lost reply is resolved by re-reading the identity.
async fn one_by_one(
    client: &NetboxClient,
    opts: &AllocateOptions,
    requests: &[NicRequest],
    ids: &[String],
    idxs: &[usize],
    path: &str,
) -> Result<Vec<(usize, IpRecord)>, IpamError> {
    let mut made = Vec::new();
    for &i in idxs {
        let r = &requests[i];
        let body = json!({"description": ids[i], "status": "reserved"});
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.create(path, &body).await {
                Ok(v) => {
                    let rec = IpRecord::from_value(&v).filter(|rec| rec.description == ids[i]);
                    match rec {
                        Some(rec) => {
                            made.push((i, rec));
                            break;
                        }
                        None => {
                            return Err(alloc_err(
                                r,
                                format!(
                                    "failed to reserve IP from static pool {}: NetBox answered with an unexpected object",
                                    r.pool.range_text()
                                ),
                            ))
                        }
                    }
                }
                Err(e) if e.is_exhausted() => {
                    return Err(alloc_err(r, "no available IPs in static pool"))
                }
                Err(e) if e.outcome_unknown() && attempts < 3 => {
                    let found = settle_lookup(client, std::slice::from_ref(&ids[i]), opts.settle)
                        .await
                        .map_err(IpamError::Lookup)?;
                    if let Some(rec) = found
                        .get(&ids[i])
                        .and_then(|v| v.iter().min_by_key(|r| r.id))
                    {
                        made.push((i, rec.clone()));
                        break;
                    }
                    // Confirmed absent after the settle window: creating again is safe.
                }
                Err(e) => {
                    return Err(alloc_err(
                        r,
                        format!(
                            "failed to reserve IP from static pool {}: {e}",
                            r.pool.range_text()
                        ),
                    ))
                }
            }
        }
    }
    Ok(made)
}

/// Upstream's scan, used when hosts published by other HyOps slots in the range are unknown
/// to NetBox: explicit creates upward from the pool start, skipping published and known
/// hosts; a duplicate moves on to the next host.
async fn scan_group(
    client: &NetboxClient,
    opts: &AllocateOptions,
    requests: &[NicRequest],
    ids: &[String],
    idxs: &[usize],
    used: &mut BTreeSet<Ipv4Addr>,
) -> Result<Vec<(usize, IpRecord)>, IpamError> {
    let pool = requests[idxs[0]].pool;
    // Known records in the subnet, so the scan does not knock on every taken host.
    let taken: BTreeSet<Ipv4Addr> = client
        .list(
            "/api/ipam/ip-addresses/",
            &[("parent".to_string(), pool.network.to_string())],
        )
        .await
        .map_err(IpamError::Lookup)?
        .iter()
        .filter_map(IpRecord::from_value)
        .filter_map(|r| r.host())
        .filter(|h| pool.network.contains(h))
        .collect();
    let mut made = Vec::new();
    for &i in idxs {
        let r = &requests[i];
        let mut done = None;
        for host in pool.hosts() {
            if used.contains(&host) || taken.contains(&host) {
                continue;
            }
            let addr = format!("{host}/{}", pool.prefix_len());
            let body = json!({"address": addr, "status": "reserved", "description": ids[i]});
            match client.create("/api/ipam/ip-addresses/", &body).await {
                Ok(v) => match IpRecord::from_value(&v) {
                    Some(rec) => {
                        used.insert(host);
                        done = Some(rec);
                        break;
                    }
                    None => {
                        return Err(alloc_err(r, format!("failed to reserve IP {addr}: NetBox answered with an unexpected object")))
                    }
                },
                Err(e) if e.is_conflict() => {
                    used.insert(host);
                    continue;
                }
                Err(e) if e.outcome_unknown() => {
                    let found = settle_lookup(client, std::slice::from_ref(&ids[i]), opts.settle)
                        .await
                        .map_err(IpamError::Lookup)?;
                    if let Some(rec) = found.get(&ids[i]).and_then(|v| v.iter().min_by_key(|r| r.id)) {
                        used.insert(host);
                        done = Some(rec.clone());
                        break;
                    }
                    // Not ours; whether someone else holds the host is settled by the next
                    // create (a duplicate moves on).
                    used.insert(host);
                    continue;
                }
                Err(e) => return Err(alloc_err(r, format!("failed to reserve IP {addr}: {e}"))),
            }
        }
        match done {
            Some(rec) => made.push((i, rec)),
            None => return Err(alloc_err(r, "no available IPs in static pool")),
        }
    }
    converge_duplicates(client, &mut made, ids)
        .await
        .map_err(IpamError::Lookup)?;
    Ok(made)
}

/// An explicit address in IPAM mode (§4.6), for one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplicitRequest {
    pub vm_key: String,
    pub bridge: String,
    pub nic_index: usize,
    /// As the operator wrote it.
    pub requested: Ipv4Net,
    /// The authoritative subnet of the bridge.
    pub subnet: Ipv4Net,
    pub pool_range: String,
    /// Claims on the same host published by platform-vm slots of this env, as
    /// `(vm, bridge, nic_index, label)`.
    pub claims: Vec<(String, String, usize, String)>,
}

/// The §4.6 checks with their messages; read-only (runs on preflight, plan and validate
/// too). Returns one `Explicit` decision per request.
pub async fn check_explicit(
    client: &NetboxClient,
    zone: &str,
    requests: &[ExplicitRequest],
) -> Result<Vec<NicDecision>, String> {
    // Containment first: it needs no NetBox.
    for r in requests {
        let a = r.requested;
        if !r.subnet.contains(&a.addr()) || a.prefix_len() != r.subnet.prefix_len() {
            return Err(format!(
                "explicit IPAM address {a} for {}/{} is outside the authoritative subnet {}",
                r.vm_key, r.bridge, r.subnet
            ));
        }
    }
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = requests
        .iter()
        .map(|r| identity(zone, &r.vm_key, &r.bridge, r.nic_index))
        .collect();
    let by_identity = find_by_identities(client, &ids)
        .await
        .map_err(|e| format!("ipam: NetBox lookup failed: {e}"))?;
    let hosts: Vec<Ipv4Addr> = requests.iter().map(|r| r.requested.addr()).collect();
    let by_host = find_by_hosts(client, &hosts)
        .await
        .map_err(|e| format!("ipam: NetBox lookup failed: {e}"))?;
    let mut out = Vec::new();
    for (r, id) in requests.iter().zip(&ids) {
        let a = r.requested;
        let host = a.addr();
        let ident_recs = by_identity.get(id).cloned().unwrap_or_default();
        // `?address=<cidr>` first, then `?address=<host>` (upstream order): prefer the
        // record with the same mask.
        let host_recs = by_host.get(&host).cloned().unwrap_or_default();
        let by_address = host_recs
            .iter()
            .find(|rec| rec.address == a.to_string())
            .or_else(|| host_recs.first());
        let (Some(ident_rec), Some(addr_rec)) = (
            ident_recs
                .iter()
                .find(|rec| rec.host() == Some(host))
                .or_else(|| ident_recs.first()),
            by_address,
        ) else {
            return Err(format!(
                "explicit IPAM address {a} is not reserved in NetBox for {id}. Remove ipv4.address and let HybridOps allocate it, or create the reservation through HybridOps first."
            ));
        };
        if ident_rec.host() != Some(host) || addr_rec.description.trim() != id {
            let owner = addr_rec.description.trim();
            let owner = if owner.is_empty() { "<none>" } else { owner };
            return Err(format!(
                "explicit IPAM address {a} is owned by NetBox identity {}, not {}",
                crate::hyops::sdn::py_repr(owner),
                crate::hyops::sdn::py_repr(id)
            ));
        }
        let conflicting: Vec<&str> = r
            .claims
            .iter()
            .filter(|(vm, bridge, idx, _)| {
                !(vm == &r.vm_key && bridge == &r.bridge && *idx == r.nic_index)
            })
            .map(|(_, _, _, label)| label.as_str())
            .collect();
        if !conflicting.is_empty() {
            return Err(format!(
                "explicit IPAM address {a} is already published by another HybridOps VM state claim: {}",
                conflicting.join(", ")
            ));
        }
        out.push(NicDecision {
            vm_key: r.vm_key.clone(),
            bridge: r.bridge.clone(),
            nic_index: r.nic_index,
            identity: id.clone(),
            action: IpamAction::Explicit,
            address: Some(a.to_string()),
            range: r.pool_range.clone(),
            netbox_id: Some(addr_rec.id),
            duplicate_ids: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_upstreams_one_based_key() {
        assert_eq!(
            identity("hybzone", "app-01", "vnetmgmt", 1),
            "hyops:hybzone:app-01:vnetmgmt:1"
        );
    }

    #[test]
    fn only_differing_fields_are_patched() {
        let cur = json!({"id": 3, "status": {"value": "active", "label": "Active"},
            "role": {"id": 2, "name": "x"}, "description": "hyops z b", "vlan": null});
        let want = json!({"status": "active", "role": 2, "description": "hyops z b"});
        assert!(changed_fields(&cur, &want).is_empty());
        let want = json!({"status": "active", "role": 5, "vlan": 9});
        let d = changed_fields(&cur, &want);
        assert_eq!(d.len(), 2);
        assert_eq!(d["role"], json!(5));
    }

    #[test]
    fn published_address_wins_among_duplicates_else_lowest_id() {
        let recs = vec![
            IpRecord::from_value(&json!({"id": 4, "address": "10.0.0.9/24"})).unwrap(),
            IpRecord::from_value(&json!({"id": 9, "address": "10.0.0.3/24"})).unwrap(),
        ];
        assert_eq!(pick(&recs, None).unwrap().0.id, 4);
        let (rec, others) = pick(&recs, Some(Ipv4Addr::new(10, 0, 0, 3))).unwrap();
        assert_eq!((rec.id, others), (9, vec![4]));
    }
}
