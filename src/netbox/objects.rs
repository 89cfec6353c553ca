//! Typed views of the NetBox objects the engine reads (IP addresses, VMs, interfaces, tags)
//! and the client-side re-checks every filtered result goes through: NetBox ignores unknown
//! filters and answers with the whole table, so nothing found through a filter is used
//! before its fields are compared here. Pure data; no HTTP.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

/// The numeric `id` of an object.
pub fn id_of(v: &Value) -> Option<u64> {
    v.get("id").and_then(Value::as_u64)
}

/// A reference field that NetBox renders as a nested object (`{"id": 3, …}`) on reads and
/// accepts as a bare id on writes.
pub fn ref_id(v: &Value, field: &str) -> Option<u64> {
    match v.get(field)? {
        Value::Number(n) => n.as_u64(),
        Value::Object(m) => m.get("id").and_then(Value::as_u64),
        _ => None,
    }
}

/// A string field (`""` when absent or null).
pub fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// A choice field: NetBox renders `{"value": "active", "label": "Active"}`; older or
/// custom serializers may give the bare value.
pub fn choice_of(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::Object(m)) => m
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Tag names of an object (`tags` is a list of nested tags).
pub fn tag_names(v: &Value) -> Vec<String> {
    v.get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| match t {
                    Value::Object(m) => m.get("name").and_then(Value::as_str).map(str::to_string),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Tag ids of an object.
pub fn tag_ids(v: &Value) -> Vec<u64> {
    v.get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| match t {
                    Value::Object(m) => m.get("id").and_then(Value::as_u64),
                    Value::Number(n) => n.as_u64(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One `ipam.IPAddress` as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRecord {
    pub id: u64,
    /// As NetBox stores it, with its mask (`10.10.0.5/24`).
    pub address: String,
    pub description: String,
    pub status: String,
    pub vrf_id: Option<u64>,
    pub assigned_object_type: String,
    pub assigned_object_id: Option<u64>,
}

impl IpRecord {
    /// Parse a NetBox IP address object; `None` if it has no id or address.
    pub fn from_value(v: &Value) -> Option<Self> {
        Some(IpRecord {
            id: id_of(v)?,
            address: v.get("address")?.as_str()?.to_string(),
            description: str_of(v, "description").to_string(),
            status: choice_of(v, "status"),
            vrf_id: ref_id(v, "vrf"),
            assigned_object_type: str_of(v, "assigned_object_type").to_string(),
            assigned_object_id: v.get("assigned_object_id").and_then(Value::as_u64),
        })
    }

    /// The host part (`10.10.0.5`), if it is IPv4.
    pub fn host(&self) -> Option<Ipv4Addr> {
        host_of(&self.address)
    }

    /// The IPv4 interface (`10.10.0.5/24`), if it parses.
    pub fn ipv4(&self) -> Option<Ipv4Net> {
        self.address.parse().ok()
    }
}

/// The IPv4 host of `a.b.c.d[/len]`.
pub fn host_of(address: &str) -> Option<Ipv4Addr> {
    address.split('/').next()?.trim().parse().ok()
}

/// Keep only the IP records whose description is exactly `identity` (filters can be ignored
/// by NetBox; descriptions are compared on the client, byte for byte).
pub fn exact_description<'a>(records: &'a [IpRecord], identity: &str) -> Vec<&'a IpRecord> {
    records
        .iter()
        .filter(|r| r.description == identity)
        .collect()
}

/// Keep only the IP records whose host equals `host` (any mask).
pub fn same_host(records: &[IpRecord], host: Ipv4Addr) -> Vec<&IpRecord> {
    records.iter().filter(|r| r.host() == Some(host)).collect()
}

/// `[^a-z0-9]+` → `-`, trimmed; `hyops` when empty (upstream `_slugify`).
pub fn slugify(value: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in value.trim().to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    let t = out.trim_end_matches('-').to_string();
    if t.is_empty() {
        "hyops".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slugify_matches_upstream() {
        assert_eq!(slugify("hyops-static"), "hyops-static");
        assert_eq!(slugify("  Hy Ops__Static "), "hy-ops-static");
        assert_eq!(slugify("managed:infra-csv"), "managed-infra-csv");
        assert_eq!(slugify("***"), "hyops");
    }

    #[test]
    fn ip_records_parse_nested_and_choice_fields() {
        let v = json!({"id": 7, "address": "10.10.0.5/24", "description": "hyops:z:a:b:1",
            "status": {"value": "reserved", "label": "Reserved"}, "vrf": null,
            "assigned_object_type": null, "assigned_object_id": null});
        let r = IpRecord::from_value(&v).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.status, "reserved");
        assert_eq!(r.host(), Some(Ipv4Addr::new(10, 10, 0, 5)));
        assert_eq!(r.vrf_id, None);
    }

    #[test]
    fn filtered_results_are_rechecked_exactly() {
        let recs: Vec<IpRecord> = [
            json!({"id": 1, "address": "10.0.0.2/24", "description": "hyops:z:a:vnet:1"}),
            json!({"id": 2, "address": "10.0.0.3/24", "description": "hyops:z:a:vnet:10"}),
            json!({"id": 3, "address": "10.0.0.4/32", "description": "HYOPS:z:a:vnet:1"}),
        ]
        .iter()
        .filter_map(IpRecord::from_value)
        .collect();
        let hits = exact_description(&recs, "hyops:z:a:vnet:1");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, 1);
        assert_eq!(same_host(&recs, Ipv4Addr::new(10, 0, 0, 4)).len(), 1);
    }
}
