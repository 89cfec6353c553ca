//! The embedded NetBox's data: the objects the engine reads and writes, their validation and
//! their JSON rendering, modelled on NetBox 4.7.3 as observed on the real server (see
//! `../shared/reference/netbox-ssh-notes.md` §1 and the testbed in `tests/netbox/`):
//! - unknown query filters are ignored and the whole table is returned (§1.4);
//! - `address`/`start_address`/`end_address` filters match the exact `ip/len` when a mask
//!   is given and the host alone otherwise (`ipam.lookups.NetIn`);
//! - IP addresses are unique by host in the global table whatever the mask
//!   (`ENFORCE_GLOBAL_UNIQUE`: `Duplicate IP address found in global table: <existing>`);
//!   prefixes likewise (`Duplicate prefix found in global table: …`);
//! - an address without a mask is stored as `/32`; ranges need equal masks and must not
//!   overlap; `available-ips` hands out the lowest free hosts, excluding every address in the
//!   range whatever its status, and answers 409 when there are not enough;
//! - prefixes take `scope_type`/`scope_id` (a `site` key is silently ignored since 4.2);
//! - VM names are unique per cluster (case-insensitive); interface names per VM;
//!   `primary_ip4` must be assigned to one of the VM's interfaces; a custom field must exist
//!   before an object uses it; deleting a VM deletes its interfaces and the IPs assigned to
//!   them; choices render as `{value, label}`, references as nested objects.
//!
//! Knows nothing about HTTP or the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Object kinds by API path (`app/model-plural`).
pub const KINDS: &[&str] = &[
    "dcim/sites",
    "dcim/device-roles",
    "ipam/roles",
    "ipam/vlans",
    "ipam/prefixes",
    "ipam/ip-ranges",
    "ipam/ip-addresses",
    "extras/tags",
    "extras/custom-fields",
    "virtualization/cluster-types",
    "virtualization/clusters",
    "virtualization/virtual-machines",
    "virtualization/interfaces",
];

/// A failed request: HTTP status and NetBox's JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct NbError {
    pub status: u16,
    pub body: Value,
}

impl NbError {
    fn field(field: &str, msg: impl Into<String>) -> Self {
        NbError {
            status: 400,
            body: json!({ field: [msg.into()] }),
        }
    }
    fn all(msg: impl Into<String>) -> Self {
        Self::field("__all__", msg)
    }
    pub fn detail(status: u16, msg: impl Into<String>) -> Self {
        NbError {
            status,
            body: json!({"detail": msg.into()}),
        }
    }
    fn not_found(model: &str) -> Self {
        Self::detail(404, format!("No {model} matches the given query."))
    }
}

type Obj = Map<String, Value>;

/// Everything the embedded NetBox holds. Objects are kept in their write form (references
/// as ids, choices as raw values) and rendered on the way out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NbStore {
    pub objects: BTreeMap<String, BTreeMap<u64, Obj>>,
    pub next_ids: BTreeMap<String, u64>,
    /// Logical clock for `created`/`last_updated`.
    #[serde(default)]
    pub clock: u64,
}

/// NetBox's model name of a kind (for `No <Model> matches the given query.`).
pub fn model_name(kind: &str) -> &'static str {
    match kind {
        "dcim/sites" => "Site",
        "dcim/device-roles" => "DeviceRole",
        "ipam/roles" => "Role",
        "ipam/vlans" => "VLAN",
        "ipam/prefixes" => "Prefix",
        "ipam/ip-ranges" => "IPRange",
        "ipam/ip-addresses" => "IPAddress",
        "extras/tags" => "Tag",
        "extras/custom-fields" => "CustomField",
        "virtualization/cluster-types" => "ClusterType",
        "virtualization/clusters" => "Cluster",
        "virtualization/virtual-machines" => "VirtualMachine",
        "virtualization/interfaces" => "VMInterface",
        _ => "Object",
    }
}

/// Reference fields: field → kind it points at.
fn refs(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "ipam/vlans" => &[("site", "dcim/sites"), ("role", "ipam/roles")],
        "ipam/prefixes" => &[("vlan", "ipam/vlans"), ("role", "ipam/roles")],
        "ipam/ip-ranges" => &[("role", "ipam/roles")],
        "virtualization/clusters" => &[("type", "virtualization/cluster-types")],
        "virtualization/virtual-machines" => &[
            ("cluster", "virtualization/clusters"),
            ("role", "dcim/device-roles"),
            ("primary_ip4", "ipam/ip-addresses"),
        ],
        "virtualization/interfaces" => &[("virtual_machine", "virtualization/virtual-machines")],
        _ => &[],
    }
}

/// A writable field and its default.
type FieldDefault = (&'static str, fn() -> Value);

/// Writable fields with their defaults (anything else in a body is ignored, as DRF does).
fn fields(kind: &str) -> &'static [FieldDefault] {
    fn s() -> Value {
        json!("")
    }
    fn n() -> Value {
        Value::Null
    }
    fn active() -> Value {
        json!("active")
    }
    fn t() -> Value {
        json!(true)
    }
    fn f() -> Value {
        json!(false)
    }
    fn w() -> Value {
        json!(1000)
    }
    fn empty() -> Value {
        json!([])
    }
    fn grey() -> Value {
        json!("9e9e9e")
    }
    match kind {
        "dcim/sites" => &[
            ("name", s),
            ("slug", s),
            ("status", active),
            ("description", s),
        ],
        "dcim/device-roles" => &[
            ("name", s),
            ("slug", s),
            ("color", grey),
            ("vm_role", t),
            ("description", s),
        ],
        "ipam/roles" => &[("name", s), ("slug", s), ("weight", w), ("description", s)],
        "ipam/vlans" => &[
            ("name", s),
            ("vid", n),
            ("site", n),
            ("status", active),
            ("role", n),
            ("description", s),
        ],
        "ipam/prefixes" => &[
            ("prefix", s),
            ("vrf", n),
            ("scope_type", n),
            ("scope_id", n),
            ("vlan", n),
            ("status", active),
            ("role", n),
            ("is_pool", f),
            ("mark_utilized", f),
            ("description", s),
        ],
        "ipam/ip-ranges" => &[
            ("start_address", s),
            ("end_address", s),
            ("vrf", n),
            ("status", active),
            ("role", n),
            ("description", s),
            ("mark_populated", f),
            ("mark_utilized", f),
        ],
        "ipam/ip-addresses" => &[
            ("address", s),
            ("vrf", n),
            ("status", active),
            ("role", n),
            ("assigned_object_type", n),
            ("assigned_object_id", n),
            ("dns_name", s),
            ("description", s),
        ],
        "extras/tags" => &[
            ("name", s),
            ("slug", s),
            ("color", grey),
            ("description", s),
            ("weight", w),
            ("object_types", empty),
        ],
        "extras/custom-fields" => &[
            ("name", s),
            ("label", s),
            ("type", n),
            ("object_types", empty),
            ("description", s),
            ("required", f),
            ("unique", f),
            ("filter_logic", n),
        ],
        "virtualization/cluster-types" => &[("name", s), ("slug", s), ("description", s)],
        "virtualization/clusters" => &[
            ("name", s),
            ("type", n),
            ("status", active),
            ("description", s),
        ],
        "virtualization/virtual-machines" => &[
            ("name", s),
            ("cluster", n),
            ("status", active),
            ("role", n),
            ("vcpus", n),
            ("memory", n),
            ("disk", n),
            ("primary_ip4", n),
            ("description", s),
        ],
        "virtualization/interfaces" => &[
            ("virtual_machine", n),
            ("name", s),
            ("enabled", t),
            ("mtu", n),
            ("mac_address", n),
            ("description", s),
        ],
        _ => &[],
    }
}

fn tagged(kind: &str) -> bool {
    !matches!(kind, "extras/tags" | "extras/custom-fields")
}

fn custom_fielded(kind: &str) -> bool {
    !matches!(kind, "extras/tags" | "extras/custom-fields")
}

/// Choices per (kind, field).
fn choices(kind: &str, field: &str) -> Option<&'static [&'static str]> {
    Some(match (kind, field) {
        ("dcim/sites", "status") => &["planned", "staging", "active", "decommissioning", "retired"],
        ("ipam/vlans", "status") => &["active", "reserved", "deprecated"],
        ("ipam/prefixes", "status") => &["container", "active", "reserved", "deprecated"],
        ("ipam/ip-ranges", "status") => &["active", "reserved", "deprecated"],
        ("ipam/ip-addresses", "status") => &["active", "reserved", "deprecated", "dhcp", "slaac"],
        ("virtualization/clusters", "status") => {
            &["planned", "staging", "active", "decommissioning", "offline"]
        }
        ("virtualization/virtual-machines", "status") => &[
            "offline",
            "active",
            "planned",
            "staged",
            "failed",
            "decommissioning",
            "paused",
        ],
        _ => return None,
    })
}

fn title(v: &str) -> String {
    let mut c = v.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// `a.b.c.d[/len]` → host and mask (a bare host is `/32`, as NetBox stores it).
pub fn parse_inet(s: &str) -> Option<(Ipv4Addr, u8)> {
    let s = s.trim();
    match s.split_once('/') {
        Some((h, l)) => {
            let len: u8 = l.parse().ok().filter(|l| *l <= 32)?;
            Some((h.parse().ok()?, len))
        }
        None => Some((s.parse().ok()?, 32)),
    }
}

fn inet_text(h: Ipv4Addr, len: u8) -> String {
    format!("{h}/{len}")
}

/// NetIn semantics: with a mask, the exact `ip/len`; without, the host.
fn net_in(stored: &str, wanted: &[String]) -> bool {
    let Some((h, len)) = parse_inet(stored) else {
        return false;
    };
    wanted.iter().any(|w| {
        if w.contains('/') {
            parse_inet(w) == Some((h, len))
        } else {
            w.trim().parse::<Ipv4Addr>().ok() == Some(h)
        }
    })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What list filtering got: `key → values` (repeated keys OR together).
pub type Query = BTreeMap<String, Vec<String>>;

impl NbStore {
    fn table(&self, kind: &str) -> impl Iterator<Item = (&u64, &Obj)> {
        self.objects.get(kind).into_iter().flat_map(|t| t.iter())
    }

    fn get(&self, kind: &str, id: u64) -> Option<&Obj> {
        self.objects.get(kind)?.get(&id)
    }

    fn exists(&self, kind: &str, id: u64) -> bool {
        self.get(kind, id).is_some()
    }

    fn tick(&mut self) -> String {
        self.clock += 1;
        let secs = self.clock;
        format!(
            "2026-01-01T{:02}:{:02}:{:02}.{:06}Z",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            secs % 1_000_000
        )
    }

    /// The tag id for a write value: an id, or `{"name"}`/`{"slug"}` of an existing tag.
    fn resolve_tag(&self, v: &Value) -> Result<u64, NbError> {
        let found = match v {
            Value::Number(_) | Value::String(_) => {
                as_u64(v).filter(|id| self.exists("extras/tags", *id))
            }
            Value::Object(m) => {
                if let Some(id) = m.get("id").and_then(as_u64) {
                    Some(id).filter(|id| self.exists("extras/tags", *id))
                } else {
                    self.table("extras/tags")
                        .find(|(_, t)| {
                            m.iter()
                                .all(|(k, want)| t.get(k).is_some_and(|have| have == want))
                        })
                        .map(|(id, _)| *id)
                }
            }
            _ => None,
        };
        found.ok_or_else(|| {
            NbError::field(
                "tags",
                format!(
                    "Related object not found using the provided attributes: {}",
                    v
                ),
            )
        })
    }

    /// Custom fields that apply to `kind` (`object_types` holds `app.model`).
    fn custom_fields_for(&self, kind: &str) -> Vec<String> {
        let ot = object_type(kind);
        self.table("extras/custom-fields")
            .filter(|(_, cf)| {
                cf.get("object_types")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(ot.as_str())))
            })
            .filter_map(|(_, cf)| cf.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// Apply a write body onto `obj` (create: defaults first). Validates fields and refs.
    fn apply_body(
        &self,
        kind: &str,
        obj: &mut Obj,
        body: &Obj,
        create: bool,
    ) -> Result<(), NbError> {
        if create {
            for (f, def) in fields(kind) {
                obj.insert(f.to_string(), def());
            }
            if tagged(kind) {
                obj.insert("tags".into(), json!([]));
            }
            if custom_fielded(kind) {
                obj.insert("custom_fields".into(), json!({}));
            }
        }
        let mut errors = Map::new();
        for (k, v) in body {
            let known = fields(kind).iter().any(|(f, _)| f == k);
            if known {
                let v = if v.is_null() { Value::Null } else { v.clone() };
                if let Some(allowed) = choices(kind, k) {
                    match v.as_str() {
                        Some(s) if allowed.contains(&s) => {}
                        _ => {
                            errors.insert(
                                k.clone(),
                                json!([format!(
                                    "\"{}\" is not a valid choice.",
                                    v.as_str().unwrap_or(&v.to_string())
                                )]),
                            );
                            continue;
                        }
                    }
                }
                if let Some((_, target)) = refs(kind).iter().find(|(f, _)| f == k) {
                    if !v.is_null() {
                        match as_u64(&v).or_else(|| v.get("id").and_then(as_u64)) {
                            Some(id) if self.exists(target, id) => {
                                obj.insert(k.clone(), json!(id));
                                continue;
                            }
                            _ => {
                                errors.insert(
                                    k.clone(),
                                    json!([format!(
                                        "Related object not found using the provided numeric ID: {}",
                                        v
                                    )]),
                                );
                                continue;
                            }
                        }
                    }
                }
                obj.insert(k.clone(), v);
            } else if k == "tags" && tagged(kind) {
                let Some(list) = v.as_array() else {
                    errors.insert("tags".into(), json!(["Expected a list of items."]));
                    continue;
                };
                let mut ids = Vec::new();
                for t in list {
                    match self.resolve_tag(t) {
                        Ok(id) => ids.push(json!(id)),
                        Err(e) => return Err(e),
                    }
                }
                obj.insert("tags".into(), Value::Array(ids));
            } else if k == "custom_fields" && custom_fielded(kind) {
                let Some(m) = v.as_object() else {
                    errors.insert("custom_fields".into(), json!(["Invalid data."]));
                    continue;
                };
                let known_cf = self.custom_fields_for(kind);
                let mut cf = obj
                    .get("custom_fields")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (name, value) in m {
                    if !known_cf.contains(name) {
                        return Err(NbError {
                            status: 400,
                            body: json!({"custom_fields": {name.clone(): format!("Custom field '{name}' does not exist for this object type.")}}),
                        });
                    }
                    cf.insert(name.clone(), value.clone());
                }
                obj.insert("custom_fields".into(), Value::Object(cf));
            }
            // Anything else (including `site` on prefixes and `changelog_message`) is
            // ignored, as DRF ignores unknown fields.
        }
        if !errors.is_empty() {
            return Err(NbError {
                status: 400,
                body: Value::Object(errors),
            });
        }
        Ok(())
    }

    /// Model validation (after the body is applied), `id` is the object's own id.
    fn validate(&self, kind: &str, id: u64, obj: &mut Obj) -> Result<(), NbError> {
        let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let others = || self.table(kind).filter(move |(oid, _)| **oid != id);
        let required = |k: &str| -> Result<(), NbError> {
            match obj.get(k) {
                Some(Value::String(v)) if !v.trim().is_empty() => Ok(()),
                Some(Value::Number(_)) | Some(Value::Bool(_)) | Some(Value::Array(_)) => Ok(()),
                _ => Err(NbError::field(k, "This field is required.")),
            }
        };
        let unique = |k: &str, model: &str, ci: bool| -> Result<(), NbError> {
            let mine = s(k);
            let clash = others().any(|(_, o)| {
                let theirs = o.get(k).and_then(Value::as_str).unwrap_or("");
                if ci {
                    theirs.eq_ignore_ascii_case(&mine)
                } else {
                    theirs == mine
                }
            });
            if clash {
                Err(NbError::field(
                    k,
                    format!("{model} with this {k} already exists."),
                ))
            } else {
                Ok(())
            }
        };
        match kind {
            "dcim/sites" | "ipam/roles" | "virtualization/cluster-types" | "dcim/device-roles" => {
                required("name")?;
                required("slug")?;
                let model = match kind {
                    "dcim/sites" => "site",
                    "ipam/roles" => "role",
                    "virtualization/cluster-types" => "cluster type",
                    _ => "device role",
                };
                let mut errs = Map::new();
                for k in ["name", "slug"] {
                    if let Err(e) = unique(k, model, false) {
                        errs.extend(e.body.as_object().cloned().unwrap_or_default());
                    }
                }
                if !errs.is_empty() {
                    return Err(NbError {
                        status: 400,
                        body: Value::Object(errs),
                    });
                }
            }
            "extras/tags" => {
                required("name")?;
                required("slug")?;
                unique("name", "tag", false)?;
                unique("slug", "tag", false)?;
            }
            "extras/custom-fields" => {
                required("name")?;
                unique("name", "custom field", false)?;
                if obj.get("type").is_none_or(Value::is_null) {
                    obj.insert("type".into(), json!("text"));
                }
                if obj.get("filter_logic").is_none_or(Value::is_null) {
                    obj.insert("filter_logic".into(), json!("loose"));
                }
            }
            "ipam/vlans" => {
                required("name")?;
                let vid = obj.get("vid").and_then(as_u64);
                match vid {
                    Some(v) if (1..=4094).contains(&v) => {}
                    _ => {
                        return Err(NbError::field(
                            "vid",
                            "Ensure this value is between 1 and 4094.",
                        ))
                    }
                }
            }
            "ipam/prefixes" => {
                let p = s("prefix");
                let net: Ipv4Net = p.parse().map_err(|_| {
                    NbError::field("prefix", format!("Invalid IP prefix format: {p}"))
                })?;
                if net.trunc() != net {
                    return Err(NbError::field(
                        "prefix",
                        format!("{p} is not a valid prefix. Did you mean {}?", net.trunc()),
                    ));
                }
                // ENFORCE_GLOBAL_UNIQUE (global table: no VRF).
                if obj.get("vrf").is_none_or(Value::is_null)
                    && others().any(|(_, o)| {
                        o.get("vrf").is_none_or(Value::is_null)
                            && o.get("prefix").and_then(Value::as_str) == Some(p.as_str())
                    })
                {
                    return Err(NbError::field(
                        "prefix",
                        format!("Duplicate prefix found in global table: {p}"),
                    ));
                }
                let st = obj.get("scope_type").cloned().unwrap_or(Value::Null);
                let sid = obj.get("scope_id").cloned().unwrap_or(Value::Null);
                match (&st, &sid) {
                    (Value::Null, Value::Null) => {}
                    (Value::String(t), v) if t == "dcim.site" => match as_u64(v) {
                        Some(sid) if self.exists("dcim/sites", sid) => {
                            obj.insert("scope_id".into(), json!(sid));
                        }
                        _ => return Err(NbError::field("scope", "Please select a site.")),
                    },
                    (Value::String(t), _) => {
                        return Err(NbError::field(
                            "scope_type",
                            format!("Invalid scope type: {t}"),
                        ))
                    }
                    _ => return Err(NbError::field("scope_type", "Please select a scope type.")),
                }
            }
            "ipam/ip-ranges" => {
                let (sh, sl) = parse_inet(&s("start_address")).ok_or_else(|| {
                    NbError::field(
                        "start_address",
                        "Enter a valid IPv4 or IPv6 address with optional mask.",
                    )
                })?;
                let (eh, el) = parse_inet(&s("end_address")).ok_or_else(|| {
                    NbError::field(
                        "end_address",
                        "Enter a valid IPv4 or IPv6 address with optional mask.",
                    )
                })?;
                obj.insert("start_address".into(), json!(inet_text(sh, sl)));
                obj.insert("end_address".into(), json!(inet_text(eh, el)));
                if sl != el {
                    return Err(NbError::field(
                        "end_address",
                        "Starting and ending IP address masks must match",
                    ));
                }
                if eh < sh {
                    return Err(NbError::field(
                        "end_address",
                        format!("Ending address must be greater than or equal to the starting address ({})", inet_text(sh, sl)),
                    ));
                }
                let vrf = obj.get("vrf").cloned().unwrap_or(Value::Null);
                for (_, o) in others() {
                    if o.get("vrf").cloned().unwrap_or(Value::Null) != vrf {
                        continue;
                    }
                    let (Some((os, ol)), Some((oe, _))) = (
                        parse_inet(o.get("start_address").and_then(Value::as_str).unwrap_or("")),
                        parse_inet(o.get("end_address").and_then(Value::as_str).unwrap_or("")),
                    ) else {
                        continue;
                    };
                    let overlap =
                        (os >= sh && os <= eh) || (oe >= sh && oe <= eh) || (os <= sh && oe >= eh);
                    if overlap {
                        return Err(NbError::all(format!(
                            "Defined addresses overlap with range {} in VRF {}",
                            range_name(os, oe, ol),
                            if vrf.is_null() {
                                "None".to_string()
                            } else {
                                vrf.to_string()
                            }
                        )));
                    }
                }
            }
            "ipam/ip-addresses" => {
                let (h, l) = parse_inet(&s("address")).ok_or_else(|| {
                    NbError::field(
                        "address",
                        "Enter a valid IPv4 or IPv6 address with optional mask.",
                    )
                })?;
                obj.insert("address".into(), json!(inet_text(h, l)));
                if obj.get("vrf").is_none_or(Value::is_null) {
                    if let Some((_, dup)) = others().find(|(_, o)| {
                        o.get("vrf").is_none_or(Value::is_null)
                            && o.get("address")
                                .and_then(Value::as_str)
                                .and_then(parse_inet)
                                .is_some_and(|(oh, _)| oh == h)
                    }) {
                        return Err(NbError::field(
                            "address",
                            format!(
                                "Duplicate IP address found in global table: {}",
                                dup.get("address").and_then(Value::as_str).unwrap_or("")
                            ),
                        ));
                    }
                }
                let at = obj
                    .get("assigned_object_type")
                    .cloned()
                    .unwrap_or(Value::Null);
                let aid = obj
                    .get("assigned_object_id")
                    .cloned()
                    .unwrap_or(Value::Null);
                match (&at, &aid) {
                    (Value::Null, Value::Null) => {}
                    (Value::String(t), v) if t == "virtualization.vminterface" => match as_u64(v) {
                        Some(iid) if self.exists("virtualization/interfaces", iid) => {
                            obj.insert("assigned_object_id".into(), json!(iid));
                        }
                        _ => {
                            return Err(NbError::field(
                                "assigned_object_id",
                                "Related object not found using the provided numeric ID",
                            ))
                        }
                    },
                    _ => {
                        return Err(NbError::field(
                            "assigned_object_type",
                            "Unsupported assigned object type",
                        ))
                    }
                }
                // `IPAddress.clean`: the primary IP of a VM may only move between that VM's
                // own interfaces.
                let parent_vm = |rec: &Obj| {
                    (rec.get("assigned_object_type").and_then(Value::as_str)
                        == Some("virtualization.vminterface"))
                    .then(|| rec.get("assigned_object_id").and_then(as_u64))
                    .flatten()
                    .and_then(|iid| self.get("virtualization/interfaces", iid))
                    .and_then(|i| i.get("virtual_machine").and_then(as_u64))
                };
                if let Some(original) = self.get(kind, id) {
                    let original_parent = parent_vm(original);
                    let is_primary = original_parent.is_some_and(|vm| {
                        self.get("virtualization/virtual-machines", vm)
                            .and_then(|v| v.get("primary_ip4").and_then(as_u64))
                            == Some(id)
                    });
                    if is_primary && parent_vm(obj) != original_parent {
                        return Err(NbError::all(
                            "Cannot reassign IP address while it is designated as the primary IP for the parent object",
                        ));
                    }
                }
            }
            "virtualization/clusters" => {
                required("name")?;
                if obj.get("type").is_none_or(Value::is_null) {
                    return Err(NbError::field("type", "This field is required."));
                }
                // Cluster names are unique only within a group or a site
                // (`virtualization.Cluster` constraints, nulls distinct); neither is
                // modelled here, so two clusters may share a name, as on NetBox.
            }
            "virtualization/virtual-machines" => {
                required("name")?;
                let cluster = obj.get("cluster").and_then(as_u64);
                let Some(cluster) = cluster else {
                    return Err(NbError::all(
                        "A virtual machine must be assigned to a site, cluster, or device.",
                    ));
                };
                let name = s("name");
                if others().any(|(_, o)| {
                    o.get("cluster").and_then(as_u64) == Some(cluster)
                        && o.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                }) {
                    return Err(NbError::all(
                        "Virtual machine name must be unique per cluster and tenant.",
                    ));
                }
                if let Some(ip) = obj.get("primary_ip4").and_then(as_u64) {
                    let assigned_here = self.get("ipam/ip-addresses", ip).is_some_and(|rec| {
                        rec.get("assigned_object_type").and_then(Value::as_str)
                            == Some("virtualization.vminterface")
                            && rec
                                .get("assigned_object_id")
                                .and_then(as_u64)
                                .and_then(|iid| self.get("virtualization/interfaces", iid))
                                .and_then(|i| i.get("virtual_machine").and_then(as_u64))
                                == Some(id)
                    });
                    if !assigned_here {
                        let addr = self
                            .get("ipam/ip-addresses", ip)
                            .and_then(|r| r.get("address").and_then(Value::as_str))
                            .unwrap_or("")
                            .to_string();
                        return Err(NbError::field(
                            "primary_ip4",
                            format!(
                                "The specified IP address ({addr}) is not assigned to this VM."
                            ),
                        ));
                    }
                }
                // NetBox stores vcpus as a decimal.
                if let Some(v) = obj.get("vcpus").and_then(Value::as_f64) {
                    obj.insert("vcpus".into(), json!(v));
                }
            }
            "virtualization/interfaces" => {
                required("name")?;
                let vm = obj
                    .get("virtual_machine")
                    .and_then(as_u64)
                    .ok_or_else(|| NbError::field("virtual_machine", "This field is required."))?;
                let name = s("name");
                if others().any(|(_, o)| {
                    o.get("virtual_machine").and_then(as_u64) == Some(vm)
                        && o.get("name").and_then(Value::as_str) == Some(name.as_str())
                }) {
                    return Err(NbError::all(
                        "Interface with this Virtual machine and Name already exists.",
                    ));
                }
                if let Some(mac) = obj.get("mac_address").and_then(Value::as_str) {
                    let ok = mac.split(':').count() == 6
                        && mac
                            .split(':')
                            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
                    if !ok {
                        return Err(NbError::field(
                            "mac_address",
                            format!("Invalid MAC address format: {mac}"),
                        ));
                    }
                    obj.insert("mac_address".into(), json!(mac.to_ascii_uppercase()));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Create one object from a JSON body; returns its id.
    pub fn create(&mut self, kind: &str, body: &Value) -> Result<u64, NbError> {
        let Some(body) = body.as_object() else {
            return Err(NbError::field(
                "non_field_errors",
                "Invalid data. Expected a dictionary, but got list.",
            ));
        };
        let id = self.next_ids.get(kind).copied().unwrap_or(0) + 1;
        let mut obj = Obj::new();
        self.apply_body(kind, &mut obj, body, true)?;
        self.validate(kind, id, &mut obj)?;
        let now = self.tick();
        obj.insert("created".into(), json!(now));
        obj.insert("last_updated".into(), json!(now));
        self.next_ids.insert(kind.to_string(), id);
        self.objects
            .entry(kind.to_string())
            .or_default()
            .insert(id, obj);
        Ok(id)
    }

    /// Create a list atomically (all or none), as NetBox's bulk create does.
    pub fn create_many(&mut self, kind: &str, items: &[Value]) -> Result<Vec<u64>, NbError> {
        let snapshot = self.clone();
        let mut ids = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.create(kind, item) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    *self = snapshot;
                    let mut positional = vec![json!({}); items.len()];
                    positional[i] = e.body;
                    return Err(NbError {
                        status: 400,
                        body: Value::Array(positional),
                    });
                }
            }
        }
        Ok(ids)
    }

    /// PATCH one object.
    pub fn update(&mut self, kind: &str, id: u64, body: &Value) -> Result<(), NbError> {
        let Some(body) = body.as_object() else {
            return Err(NbError::field("non_field_errors", "Invalid data."));
        };
        let mut obj = self
            .get(kind, id)
            .cloned()
            .ok_or_else(|| NbError::not_found(model_name(kind)))?;
        self.apply_body(kind, &mut obj, body, false)?;
        self.validate(kind, id, &mut obj)?;
        obj.insert("last_updated".into(), json!(self.tick()));
        if let Some(t) = self.objects.get_mut(kind) {
            t.insert(id, obj);
        }
        Ok(())
    }

    /// DELETE one object, with NetBox's cascades (VM → interfaces → assigned IPs; an IP
    /// that was a VM's primary leaves it unset).
    pub fn delete(&mut self, kind: &str, id: u64) -> Result<(), NbError> {
        if !self.exists(kind, id) {
            return Err(NbError::not_found(model_name(kind)));
        }
        match kind {
            // `VirtualMachine.cluster` is `on_delete=PROTECT`.
            "virtualization/clusters" => {
                let n = self
                    .table("virtualization/virtual-machines")
                    .filter(|(_, v)| v.get("cluster").and_then(as_u64) == Some(id))
                    .count();
                if n > 0 {
                    return Err(NbError::detail(
                        409,
                        format!("Unable to delete object. {n} dependent objects were found: virtual machines"),
                    ));
                }
            }
            "virtualization/virtual-machines" => {
                let ifaces: Vec<u64> = self
                    .table("virtualization/interfaces")
                    .filter(|(_, i)| i.get("virtual_machine").and_then(as_u64) == Some(id))
                    .map(|(iid, _)| *iid)
                    .collect();
                for iid in ifaces {
                    self.delete("virtualization/interfaces", iid)?;
                }
            }
            "virtualization/interfaces" => {
                let ips: Vec<u64> = self
                    .table("ipam/ip-addresses")
                    .filter(|(_, r)| {
                        r.get("assigned_object_type").and_then(Value::as_str)
                            == Some("virtualization.vminterface")
                            && r.get("assigned_object_id").and_then(as_u64) == Some(id)
                    })
                    .map(|(rid, _)| *rid)
                    .collect();
                for rid in ips {
                    self.delete("ipam/ip-addresses", rid)?;
                }
            }
            "ipam/ip-addresses" => {
                if let Some(vms) = self.objects.get_mut("virtualization/virtual-machines") {
                    for vm in vms.values_mut() {
                        if vm.get("primary_ip4").and_then(as_u64) == Some(id) {
                            vm.insert("primary_ip4".into(), Value::Null);
                        }
                    }
                }
            }
            _ => {}
        }
        if let Some(t) = self.objects.get_mut(kind) {
            t.remove(&id);
        }
        Ok(())
    }

    /// Free hosts of an ip-range, lowest first (none when `mark_populated`).
    pub fn range_available(&self, id: u64, limit: usize) -> Result<Vec<String>, NbError> {
        let r = self
            .get("ipam/ip-ranges", id)
            .ok_or_else(|| NbError::not_found("IPRange"))?;
        if r.get("mark_populated").and_then(Value::as_bool) == Some(true) {
            return Ok(Vec::new());
        }
        let (sh, len) = parse_inet(r.get("start_address").and_then(Value::as_str).unwrap_or(""))
            .ok_or_else(|| NbError::detail(500, "range without start"))?;
        let (eh, _) = parse_inet(r.get("end_address").and_then(Value::as_str).unwrap_or(""))
            .ok_or_else(|| NbError::detail(500, "range without end"))?;
        let vrf = r.get("vrf").cloned().unwrap_or(Value::Null);
        let used: BTreeSet<Ipv4Addr> = self
            .table("ipam/ip-addresses")
            .filter(|(_, o)| o.get("vrf").cloned().unwrap_or(Value::Null) == vrf)
            .filter_map(|(_, o)| {
                o.get("address")
                    .and_then(Value::as_str)
                    .and_then(parse_inet)
            })
            .map(|(h, _)| h)
            .collect();
        Ok((u32::from(sh)..=u32::from(eh))
            .map(Ipv4Addr::from)
            .filter(|h| !used.contains(h))
            .take(limit)
            .map(|h| inet_text(h, len))
            .collect())
    }

    /// `POST …/ip-ranges/{id}/available-ips/` for `items` (already a list): fills `address`
    /// (and forces the range's VRF) and creates them all or none.
    pub fn range_allocate(&mut self, id: u64, items: &[Value]) -> Result<Vec<u64>, NbError> {
        let r = self
            .get("ipam/ip-ranges", id)
            .ok_or_else(|| NbError::not_found("IPRange"))?
            .clone();
        let (_, mask) = parse_inet(r.get("start_address").and_then(Value::as_str).unwrap_or(""))
            .ok_or_else(|| NbError::detail(500, "range without start"))?;
        let mut prepared = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(m) = item.as_object() else {
                let mut positional = vec![json!({}); items.len()];
                positional[i] = json!({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]});
                return Err(NbError {
                    status: 400,
                    body: Value::Array(positional),
                });
            };
            let len = match m.get("prefix_length").and_then(as_u64) {
                Some(l) if l < u64::from(mask) => {
                    let mut positional = vec![json!({}); items.len()];
                    positional[i] = json!({"prefix_length": [format!("Prefix length must be greater than or equal to the parent mask length ({mask})")]});
                    return Err(NbError {
                        status: 400,
                        body: Value::Array(positional),
                    });
                }
                Some(l) if l > 32 => {
                    let mut positional = vec![json!({}); items.len()];
                    positional[i] =
                        json!({"prefix_length": ["Invalid prefix length (32) for IPv4"]});
                    return Err(NbError {
                        status: 400,
                        body: Value::Array(positional),
                    });
                }
                Some(l) => l as u8,
                None => mask,
            };
            let mut m = m.clone();
            m.remove("prefix_length");
            prepared.push((m, len));
        }
        let free = self.range_available(id, prepared.len())?;
        if free.len() < prepared.len() {
            return Err(NbError::detail(
                409,
                "Insufficient resources are available to satisfy the request",
            ));
        }
        let bodies: Vec<Value> = prepared
            .into_iter()
            .zip(free)
            .map(|((mut m, len), addr)| {
                let host = addr.split('/').next().unwrap_or("").to_string();
                m.insert("address".into(), json!(format!("{host}/{len}")));
                m.insert("vrf".into(), r.get("vrf").cloned().unwrap_or(Value::Null));
                Value::Object(m)
            })
            .collect();
        self.create_many("ipam/ip-addresses", &bodies)
    }

    /// Objects of `kind` that pass `query`'s known filters (unknown keys are ignored, as
    /// NetBox does), in NetBox's default ordering. A reference filter naming an object that
    /// does not exist is a 400, as django-filter's model choice filters answer.
    pub fn list(&self, kind: &str, query: &Query) -> Result<Vec<u64>, NbError> {
        for (key, target) in choice_filters(kind) {
            if let Some(values) = query.get(*key) {
                for v in values {
                    let ok = v
                        .parse::<u64>()
                        .ok()
                        .is_some_and(|id| self.exists(target, id));
                    if !ok {
                        return Err(NbError::field(
                            key,
                            format!(
                                "Select a valid choice. {v} is not one of the available choices."
                            ),
                        ));
                    }
                }
            }
        }
        let mut ids: Vec<u64> = self
            .table(kind)
            .filter(|(id, o)| self.matches(kind, **id, o, query))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_by_key(|id| self.order_key(kind, *id));
        Ok(ids)
    }

    fn order_key(&self, kind: &str, id: u64) -> (u64, String, u64) {
        let Some(o) = self.get(kind, id) else {
            return (0, String::new(), id);
        };
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match kind {
            "ipam/ip-addresses" => {
                let (h, l) = parse_inet(&s("address")).unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                (
                    u64::from(u32::from(h)) << 8 | u64::from(l),
                    String::new(),
                    id,
                )
            }
            "ipam/prefixes" => {
                let n: Option<Ipv4Net> = s("prefix").parse().ok();
                let k =
                    n.map(|n| u64::from(u32::from(n.network())) << 8 | u64::from(n.prefix_len()));
                (k.unwrap_or(0), String::new(), id)
            }
            "ipam/ip-ranges" => {
                let (h, _) = parse_inet(&s("start_address")).unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                (u64::from(u32::from(h)), String::new(), id)
            }
            "ipam/vlans" => (
                o.get("vid").and_then(as_u64).unwrap_or(0),
                String::new(),
                id,
            ),
            "virtualization/interfaces" => (
                o.get("virtual_machine").and_then(as_u64).unwrap_or(0),
                s("name"),
                id,
            ),
            _ if o.contains_key("name") => (0, s("name").to_ascii_lowercase(), id),
            _ => (0, String::new(), id),
        }
    }

    fn matches(&self, kind: &str, id: u64, o: &Obj, query: &Query) -> bool {
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let num = |k: &str| o.get(k).and_then(as_u64);
        for (key, values) in query {
            let ok = match (kind, key.as_str()) {
                (_, "id") => values.iter().any(|v| v.parse::<u64>().ok() == Some(id)),
                (_, "name") if o.contains_key("name") => values.iter().any(|v| *v == s("name")),
                (_, "slug") if o.contains_key("slug") => values.iter().any(|v| *v == s("slug")),
                (_, "description") if o.contains_key("description") => {
                    values.iter().any(|v| *v == s("description"))
                }
                (_, "tag") if tagged(kind) => {
                    // Tags AND together; an unknown slug is a 400 in NetBox (not modelled:
                    // the engine never filters by tag).
                    let mine: Vec<String> = o
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(as_u64)
                                .filter_map(|t| self.get("extras/tags", t))
                                .filter_map(|t| {
                                    t.get("slug").and_then(Value::as_str).map(str::to_string)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    values.iter().all(|v| mine.contains(v))
                }
                ("ipam/vlans", "vid") => values.iter().any(|v| v.parse::<u64>().ok() == num("vid")),
                ("ipam/vlans", "site_id") => {
                    values.iter().any(|v| v.parse::<u64>().ok() == num("site"))
                }
                ("ipam/prefixes", "prefix") => values.iter().any(|v| *v == s("prefix")),
                ("ipam/prefixes", "site_id") => values.iter().any(|v| {
                    s("scope_type") == "dcim.site" && v.parse::<u64>().ok() == num("scope_id")
                }),
                ("ipam/ip-ranges", "start_address") => net_in(&s("start_address"), values),
                ("ipam/ip-ranges", "end_address") => net_in(&s("end_address"), values),
                ("ipam/ip-addresses", "address") => net_in(&s("address"), values),
                ("ipam/ip-addresses", "parent") => values.iter().any(|v| {
                    let (Ok(net), Some((h, _))) = (v.parse::<Ipv4Net>(), parse_inet(&s("address")))
                    else {
                        return false;
                    };
                    net.contains(&h)
                }),
                ("ipam/ip-addresses", "status") => values.iter().any(|v| *v == s("status")),
                ("ipam/ip-addresses", "vminterface_id" | "assigned_object_id") => values
                    .iter()
                    .any(|v| v.parse::<u64>().ok() == num("assigned_object_id")),
                ("ipam/ip-addresses", "virtual_machine_id") => values.iter().any(|v| {
                    let vm = num("assigned_object_id")
                        .and_then(|i| self.get("virtualization/interfaces", i))
                        .and_then(|i| i.get("virtual_machine").and_then(as_u64));
                    v.parse::<u64>().ok().is_some() && v.parse::<u64>().ok() == vm
                }),
                ("virtualization/clusters", "type_id") => {
                    values.iter().any(|v| v.parse::<u64>().ok() == num("type"))
                }
                ("virtualization/virtual-machines", "cluster_id") => values
                    .iter()
                    .any(|v| v.parse::<u64>().ok() == num("cluster")),
                ("virtualization/virtual-machines", "status") => {
                    values.iter().any(|v| *v == s("status"))
                }
                ("virtualization/virtual-machines", k) if k.starts_with("cf_") => {
                    let name = &k[3..];
                    if !self.custom_fields_for(kind).iter().any(|n| n == name) {
                        true // an unknown custom field filter is ignored
                    } else {
                        let have = o
                            .get("custom_fields")
                            .and_then(|c| c.get(name))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        // `loose` logic (the default): case-insensitive substring.
                        values
                            .iter()
                            .any(|v| have.contains(&v.to_ascii_lowercase()))
                    }
                }
                ("virtualization/interfaces", "virtual_machine_id") => values
                    .iter()
                    .any(|v| v.parse::<u64>().ok() == num("virtual_machine")),
                _ => true, // unknown filters are ignored
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// The JSON NetBox renders for one object.
    pub fn render(&self, base: &str, kind: &str, id: u64) -> Option<Value> {
        let o = self.get(kind, id)?;
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        out.insert("url".into(), json!(format!("{base}/api/{kind}/{id}/")));
        out.insert("display_url".into(), json!(format!("{base}/{kind}/{id}/")));
        out.insert("display".into(), json!(self.display(kind, o)));
        for (k, v) in o {
            let rendered = if let Some((_, target)) = refs(kind).iter().find(|(f, _)| f == k) {
                match as_u64(v) {
                    Some(rid) => self.nested(base, target, rid),
                    None => Value::Null,
                }
            } else if choices(kind, k).is_some() {
                let raw = v.as_str().unwrap_or("");
                json!({"value": raw, "label": title(raw)})
            } else if k == "tags" {
                Value::Array(
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(as_u64)
                                .map(|t| self.nested(base, "extras/tags", t))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            } else if k == "custom_fields" {
                let mut cf = Map::new();
                for name in self.custom_fields_for(kind) {
                    cf.insert(name.clone(), v.get(&name).cloned().unwrap_or(Value::Null));
                }
                Value::Object(cf)
            } else if kind == "extras/custom-fields" && (k == "type" || k == "filter_logic") {
                let raw = v.as_str().unwrap_or("");
                json!({"value": raw, "label": title(raw)})
            } else {
                v.clone()
            };
            out.insert(k.clone(), rendered);
        }
        match kind {
            "ipam/ip-addresses" | "ipam/prefixes" | "ipam/ip-ranges" => {
                out.insert("family".into(), json!({"value": 4, "label": "IPv4"}));
            }
            _ => {}
        }
        if kind == "ipam/ip-ranges" {
            let size = match (
                parse_inet(o.get("start_address").and_then(Value::as_str).unwrap_or("")),
                parse_inet(o.get("end_address").and_then(Value::as_str).unwrap_or("")),
            ) {
                (Some((s, _)), Some((e, _))) => u32::from(e).saturating_sub(u32::from(s)) + 1,
                _ => 0,
            };
            out.insert("size".into(), json!(size));
        }
        if kind == "ipam/ip-addresses" {
            let assigned = match (
                o.get("assigned_object_type").and_then(Value::as_str),
                o.get("assigned_object_id").and_then(as_u64),
            ) {
                (Some("virtualization.vminterface"), Some(iid)) => {
                    self.nested(base, "virtualization/interfaces", iid)
                }
                _ => Value::Null,
            };
            out.insert("assigned_object".into(), assigned);
        }
        if kind == "ipam/prefixes" {
            let scope = match (
                o.get("scope_type").and_then(Value::as_str),
                o.get("scope_id").and_then(as_u64),
            ) {
                (Some("dcim.site"), Some(sid)) => self.nested(base, "dcim/sites", sid),
                _ => Value::Null,
            };
            out.insert("scope".into(), scope);
        }
        if kind == "virtualization/virtual-machines" {
            out.insert(
                "primary_ip".into(),
                out.get("primary_ip4").cloned().unwrap_or(Value::Null),
            );
            out.insert("site".into(), Value::Null);
            let count = self
                .table("virtualization/interfaces")
                .filter(|(_, i)| i.get("virtual_machine").and_then(as_u64) == Some(id))
                .count();
            out.insert("interface_count".into(), json!(count));
        }
        if kind == "virtualization/interfaces" {
            let mac = o.get("mac_address").cloned().unwrap_or(Value::Null);
            let nested_mac = if mac.is_null() {
                Value::Null
            } else {
                json!({"mac_address": mac, "display": mac})
            };
            out.insert("primary_mac_address".into(), nested_mac.clone());
            out.insert(
                "mac_addresses".into(),
                if nested_mac.is_null() {
                    json!([])
                } else {
                    json!([nested_mac])
                },
            );
        }
        Some(Value::Object(out))
    }

    fn display(&self, kind: &str, o: &Obj) -> String {
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match kind {
            "ipam/prefixes" => s("prefix"),
            "ipam/ip-addresses" => s("address"),
            "ipam/ip-ranges" => match (
                parse_inet(&s("start_address")),
                parse_inet(&s("end_address")),
            ) {
                (Some((a, l)), Some((b, _))) => range_name(a, b, l),
                _ => String::new(),
            },
            "extras/custom-fields" => {
                let l = s("label");
                if l.is_empty() {
                    s("name")
                } else {
                    l
                }
            }
            _ => s("name"),
        }
    }

    /// A nested reference as NetBox renders it (`id`, `url`, `display` and identifying
    /// fields).
    fn nested(&self, base: &str, kind: &str, id: u64) -> Value {
        let Some(o) = self.get(kind, id) else {
            return Value::Null;
        };
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("url".into(), json!(format!("{base}/api/{kind}/{id}/")));
        m.insert("display".into(), json!(self.display(kind, o)));
        for k in [
            "name",
            "slug",
            "address",
            "prefix",
            "vid",
            "color",
            "description",
        ] {
            if let Some(v) = o.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        if kind == "virtualization/interfaces" {
            if let Some(vm) = o.get("virtual_machine").and_then(as_u64) {
                m.insert(
                    "virtual_machine".into(),
                    self.nested(base, "virtualization/virtual-machines", vm),
                );
            }
        }
        Value::Object(m)
    }

    /// Object counts by kind (for tests).
    pub fn count(&self, kind: &str) -> usize {
        self.objects.get(kind).map(|t| t.len()).unwrap_or(0)
    }
}

/// Filters that name another object by id (`ModelMultipleChoiceFilter`), per kind.
fn choice_filters(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "virtualization/virtual-machines" => &[("cluster_id", "virtualization/clusters")],
        "virtualization/interfaces" => &[("virtual_machine_id", "virtualization/virtual-machines")],
        "virtualization/clusters" => &[("type_id", "virtualization/cluster-types")],
        "ipam/vlans" => &[("site_id", "dcim/sites")],
        "ipam/prefixes" => &[("site_id", "dcim/sites")],
        "ipam/ip-addresses" => &[
            ("vminterface_id", "virtualization/interfaces"),
            ("virtual_machine_id", "virtualization/virtual-machines"),
        ],
        _ => &[],
    }
}

fn object_type(kind: &str) -> String {
    let (app, plural) = kind.split_once('/').unwrap_or(("", kind));
    let model = match plural {
        "virtual-machines" => "virtualmachine",
        "interfaces" if app == "virtualization" => "vminterface",
        "ip-addresses" => "ipaddress",
        "ip-ranges" => "iprange",
        "prefixes" => "prefix",
        "vlans" => "vlan",
        "sites" => "site",
        "clusters" => "cluster",
        other => other.trim_end_matches('s'),
    };
    format!("{app}.{model}")
}

/// `10.10.0.2-119/24` (NetBox's compact range name).
fn range_name(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> String {
    if a == b {
        return format!("{a}-{b}/{len}");
    }
    let ao = a.octets();
    let bo = b.octets();
    let common = ao.iter().zip(bo.iter()).take_while(|(x, y)| x == y).count();
    let base: Vec<String> = ao[..common].iter().map(|o| o.to_string()).collect();
    let start: Vec<String> = ao[common..].iter().map(|o| o.to_string()).collect();
    let end: Vec<String> = bo[common..].iter().map(|o| o.to_string()).collect();
    format!(
        "{}{}{}-{}/{len}",
        base.join("."),
        if base.is_empty() { "" } else { "." },
        start.join("."),
        end.join(".")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        let mut out = Query::new();
        for (k, v) in pairs {
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
        out
    }

    #[test]
    fn a_bare_range_address_gets_a_32_mask_and_ranges_may_not_overlap() {
        let mut s = NbStore::default();
        let id = s
            .create(
                "ipam/ip-ranges",
                &json!({"start_address": "10.0.0.2", "end_address": "10.0.0.9"}),
            )
            .unwrap();
        assert_eq!(
            s.render("", "ipam/ip-ranges", id).unwrap()["start_address"],
            "10.0.0.2/32"
        );
        let e = s
            .create(
                "ipam/ip-ranges",
                &json!({"start_address": "10.0.0.5/24", "end_address": "10.0.0.20/24"}),
            )
            .unwrap_err();
        assert!(e.body["__all__"][0]
            .as_str()
            .unwrap()
            .starts_with("Defined addresses overlap with range 10.0.0.2-9/32"));
    }

    #[test]
    fn duplicate_hosts_are_refused_whatever_the_mask() {
        let mut s = NbStore::default();
        s.create("ipam/ip-addresses", &json!({"address": "10.0.0.2/24"}))
            .unwrap();
        let e = s
            .create("ipam/ip-addresses", &json!({"address": "10.0.0.2/32"}))
            .unwrap_err();
        assert_eq!(
            e.body,
            json!({"address": ["Duplicate IP address found in global table: 10.0.0.2/24"]})
        );
    }

    #[test]
    fn available_ips_skip_every_existing_record_and_answer_409_when_short() {
        let mut s = NbStore::default();
        let r = s
            .create(
                "ipam/ip-ranges",
                &json!({"start_address": "10.0.0.2/24", "end_address": "10.0.0.4/24"}),
            )
            .unwrap();
        s.create(
            "ipam/ip-addresses",
            &json!({"address": "10.0.0.3/24", "status": "deprecated"}),
        )
        .unwrap();
        let ids = s.range_allocate(r, &[json!({"description": "a"})]).unwrap();
        assert_eq!(
            s.render("", "ipam/ip-addresses", ids[0]).unwrap()["address"],
            "10.0.0.2/24"
        );
        let e = s
            .range_allocate(
                r,
                &[json!({"description": "b"}), json!({"description": "c"})],
            )
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(s.count("ipam/ip-addresses"), 2, "all or none");
    }

    #[test]
    fn address_filter_follows_netin_and_unknown_filters_are_ignored() {
        let mut s = NbStore::default();
        s.create("ipam/ip-addresses", &json!({"address": "10.0.0.2/24"}))
            .unwrap();
        s.create("ipam/ip-addresses", &json!({"address": "10.0.0.3/24"}))
            .unwrap();
        assert_eq!(
            s.list("ipam/ip-addresses", &q(&[("address", "10.0.0.2")]))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.list("ipam/ip-addresses", &q(&[("address", "10.0.0.2/32")]))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            s.list("ipam/ip-addresses", &q(&[("descriptionx", "zzz")]))
                .unwrap()
                .len(),
            2
        );
        let e = s
            .list(
                "virtualization/virtual-machines",
                &q(&[("cluster_id", "5")]),
            )
            .unwrap_err();
        assert_eq!(
            e.body,
            json!({"cluster_id": ["Select a valid choice. 5 is not one of the available choices."]})
        );
    }

    #[test]
    fn deleting_a_vm_cascades_to_its_interfaces_and_their_ips() {
        let mut s = NbStore::default();
        let ct = s
            .create(
                "virtualization/cluster-types",
                &json!({"name": "t", "slug": "t"}),
            )
            .unwrap();
        let c = s
            .create("virtualization/clusters", &json!({"name": "c", "type": ct}))
            .unwrap();
        let vm = s
            .create(
                "virtualization/virtual-machines",
                &json!({"name": "a", "cluster": c}),
            )
            .unwrap();
        let i = s
            .create(
                "virtualization/interfaces",
                &json!({"name": "eth0", "virtual_machine": vm}),
            )
            .unwrap();
        s.create(
            "ipam/ip-addresses",
            &json!({"address": "10.0.0.2/24",
            "assigned_object_type": "virtualization.vminterface", "assigned_object_id": i}),
        )
        .unwrap();
        s.delete("virtualization/virtual-machines", vm).unwrap();
        assert_eq!(s.count("ipam/ip-addresses"), 0);
    }

    #[test]
    fn a_primary_ip_cannot_leave_its_vm() {
        let mut s = NbStore::default();
        let ct = s
            .create(
                "virtualization/cluster-types",
                &json!({"name": "t", "slug": "t"}),
            )
            .unwrap();
        let c = s
            .create("virtualization/clusters", &json!({"name": "c", "type": ct}))
            .unwrap();
        let vm = s
            .create(
                "virtualization/virtual-machines",
                &json!({"name": "a", "cluster": c}),
            )
            .unwrap();
        let i = s
            .create(
                "virtualization/interfaces",
                &json!({"name": "eth0", "virtual_machine": vm}),
            )
            .unwrap();
        let ip = s
            .create(
                "ipam/ip-addresses",
                &json!({"address": "10.0.0.2/24",
            "assigned_object_type": "virtualization.vminterface", "assigned_object_id": i}),
            )
            .unwrap();
        s.update(
            "virtualization/virtual-machines",
            vm,
            &json!({"primary_ip4": ip}),
        )
        .unwrap();
        let e = s
            .update(
                "ipam/ip-addresses",
                ip,
                &json!({"assigned_object_type": null, "assigned_object_id": null}),
            )
            .unwrap_err();
        assert!(e.body["__all__"][0]
            .as_str()
            .unwrap()
            .starts_with("Cannot reassign IP address"));
        s.update(
            "virtualization/virtual-machines",
            vm,
            &json!({"primary_ip4": null}),
        )
        .unwrap();
        s.update(
            "ipam/ip-addresses",
            ip,
            &json!({"assigned_object_type": null, "assigned_object_id": null}),
        )
        .unwrap();
    }

    #[test]
    fn range_names_are_compact() {
        assert_eq!(
            range_name(
                Ipv4Addr::new(10, 10, 0, 2),
                Ipv4Addr::new(10, 10, 0, 119),
                24
            ),
            "10.10.0.2-119/24"
        );
    }
}
