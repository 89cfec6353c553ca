//! The NetBox dataset files of the module commands (contract §4.7 step 1, upstream
//! `export-infra`): one row per VM with upstream's keys plus `interfaces`, the run's
//! `hook_netbox_sync.dataset.json` and the shared `vms.auto.json` / `vms.auto.csv` that this
//! slot's rows are merged into. Rows are typed and borrow the sync's VMs; they are rendered
//! only while the files are written (a 10 000-VM slot held its rows as JSON values: ~30 MB,
//! heaptrack). Knows nothing about NetBox's API; part of the CLI layer.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::commands::context::Ctx;
use crate::hyops::{write_json_atomic_ser, write_text_atomic, Sorted};
use crate::netbox::sync::{SyncNic, SyncVm};

/// `source` of every row this engine writes (upstream's value for Proxmox VMs).
const SOURCE: &str = "onprem-proxmox";

/// One dataset row: upstream's keys plus `interfaces` (every NIC), from a VM to sync and its
/// VMID. Serialises as a JSON object with its keys in sorted order, as every JSON file of a
/// run is written.
#[derive(Debug, Clone, Copy)]
pub struct DatasetRow<'a> {
    pub vm: &'a SyncVm,
    pub vmid: Option<u64>,
}

impl DatasetRow<'_> {
    fn first(&self) -> Option<&SyncNic> {
        self.vm.nics.first()
    }

    fn ip_address(&self) -> &str {
        self.first()
            .and_then(|n| n.address.as_deref())
            .unwrap_or("")
    }

    fn ip_assignment(&self) -> &str {
        self.first()
            .and_then(|n| n.assignment.as_deref())
            .unwrap_or("")
    }

    fn mac_address(&self) -> &str {
        self.first().and_then(|n| n.mac.as_deref()).unwrap_or("")
    }

    fn interface(&self) -> &str {
        self.first().map(|n| n.name.as_str()).unwrap_or("eth0")
    }

    fn role(&self) -> &str {
        self.vm.role.as_deref().unwrap_or("")
    }

    fn tags(&self) -> String {
        self.vm.tags.join(";")
    }

    /// The CSV cell of column `key` (one of [`CSV_HEADER`]); a column the row lacks is empty.
    fn csv_cell(&self, key: &str) -> Cow<'_, str> {
        let num = |n: Option<u64>| Cow::Owned(n.map(|n| n.to_string()).unwrap_or_default());
        match key {
            "name" => Cow::Borrowed(self.vm.name.as_str()),
            "ip_address" => Cow::Borrowed(self.ip_address()),
            "cluster" => Cow::Borrowed(self.vm.cluster.as_str()),
            "interface" => Cow::Borrowed(self.interface()),
            "role" => Cow::Borrowed(self.role()),
            "status" => Cow::Borrowed(self.vm.status.as_str()),
            "tags" => Cow::Owned(self.tags()),
            "source" => Cow::Borrowed(SOURCE),
            "external_id" => Cow::Borrowed(self.vm.external_id.as_str()),
            "tf_address" => Cow::Borrowed("."),
            "mac_address" => Cow::Borrowed(self.mac_address()),
            "ip_assignment" => Cow::Borrowed(self.ip_assignment()),
            "vm_id" => num(self.vmid),
            "cpu_cores" => num(self.vm.vcpus),
            "memory_mb" => num(self.vm.memory_mb),
            "disk_gb" => num(self.vm.disk_gb),
            _ => Cow::Borrowed(""),
        }
    }
}

impl Serialize for DatasetRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // the members in key order
        let vm = self.vm;
        let mut m = s.serialize_map(Some(17))?;
        m.serialize_entry("cluster", &vm.cluster)?;
        m.serialize_entry("cpu_cores", &vm.vcpus)?;
        m.serialize_entry("disk_gb", &vm.disk_gb)?;
        m.serialize_entry("external_id", &vm.external_id)?;
        m.serialize_entry("interface", self.interface())?;
        m.serialize_entry("interfaces", &Nics(&vm.nics))?;
        m.serialize_entry("ip_address", self.ip_address())?;
        m.serialize_entry("ip_assignment", self.ip_assignment())?;
        m.serialize_entry("mac_address", self.mac_address())?;
        m.serialize_entry("memory_mb", &vm.memory_mb)?;
        m.serialize_entry("name", &vm.name)?;
        m.serialize_entry("role", self.role())?;
        m.serialize_entry("source", SOURCE)?;
        m.serialize_entry("status", &vm.status)?;
        m.serialize_entry("tags", &self.tags())?;
        m.serialize_entry("tf_address", ".")?;
        m.serialize_entry("vm_id", &self.vmid)?;
        m.end()
    }
}

/// A row's NICs, each an object with sorted keys.
struct Nics<'a>(&'a [SyncNic]);

impl Serialize for Nics<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(SortedNic))
    }
}

/// One NIC of a row, its members in key order.
struct SortedNic<'a>(&'a SyncNic);

impl Serialize for SortedNic<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("address", &n.address)?;
        m.serialize_entry("assignment", &n.assignment)?;
        m.serialize_entry("mac", &n.mac)?;
        m.serialize_entry("name", &n.name)?;
        m.end()
    }
}

/// A slice of rows as a JSON array (the run's dataset evidence).
pub struct Rows<'a>(pub &'a [DatasetRow<'a>]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// A row of the shared dataset: another slot's (kept as read) or one of this run's.
enum SharedRow<'a> {
    Kept(Value),
    Ours(DatasetRow<'a>),
}

impl SharedRow<'_> {
    fn name(&self) -> Option<&str> {
        match self {
            SharedRow::Kept(v) => v.get("name").and_then(Value::as_str),
            SharedRow::Ours(r) => Some(r.vm.name.as_str()),
        }
    }

    fn csv_cell(&self, key: &str) -> Cow<'_, str> {
        match self {
            SharedRow::Kept(v) => csv_value(v.get(key).unwrap_or(&Value::Null)),
            SharedRow::Ours(r) => r.csv_cell(key),
        }
    }
}

impl Serialize for SharedRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SharedRow::Kept(v) => Sorted(v).serialize(s),
            SharedRow::Ours(r) => r.serialize(s),
        }
    }
}

/// Where the shared dataset lives: `NETBOX_VMS_AUTO_JSON`/`_CSV`, else
/// `<root>/state/netbox/vms/vms.auto.{json,csv}`; a relative setting is under the root.
pub fn dataset_paths(ctx: &Ctx) -> (PathBuf, PathBuf) {
    let root = ctx.root.path();
    let pick = |key: &str, default: &str| {
        ctx.env_vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| {
                let p = PathBuf::from(v);
                if p.is_absolute() {
                    p
                } else {
                    root.join(p)
                }
            })
            .unwrap_or_else(|| root.join(default))
    };
    (
        pick("NETBOX_VMS_AUTO_JSON", "state/netbox/vms/vms.auto.json"),
        pick("NETBOX_VMS_AUTO_CSV", "state/netbox/vms/vms.auto.csv"),
    )
}

/// The shared CSV's columns (upstream's dataset header).
pub const CSV_HEADER: &[&str] = &[
    "name",
    "ip_address",
    "cluster",
    "interface",
    "role",
    "status",
    "tags",
    "source",
    "external_id",
    "tf_address",
    "asset_tag",
    "serial",
    "mac_address",
    "ip_private",
    "ip_assignment",
    "vm_id",
    "cpu_cores",
    "memory_mb",
    "disk_gb",
];

/// A kept row's cell: null is empty, booleans as Python prints them, other values as JSON.
fn csv_value(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed(""),
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Bool(b) => Cow::Borrowed(if *b { "True" } else { "False" }),
        other => Cow::Owned(other.to_string()),
    }
}

/// Append one CSV cell, quoted when it holds a comma, a quote or a line break.
fn push_csv_cell(line: &mut String, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&cell.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(cell);
    }
}

/// The CSV text of `rows` under [`CSV_HEADER`].
fn csv_text(rows: &[SharedRow<'_>]) -> String {
    let mut csv = CSV_HEADER.join(",");
    csv.push('\n');
    for r in rows {
        for (i, key) in CSV_HEADER.iter().enumerate() {
            if i > 0 {
                csv.push(',');
            }
            push_csv_cell(&mut csv, &r.csv_cell(key));
        }
        csv.push('\n');
    }
    csv
}

/// A JSON array of dataset rows, keeping (as values) only the rows whose `name` is not in
/// the set; anything but an array is an error.
struct KeptRows<'a>(&'a BTreeSet<String>);

impl<'de> serde::de::DeserializeSeed<'de> for KeptRows<'_> {
    type Value = Vec<Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeptRows<'_> {
    type Value = Vec<Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of dataset rows")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut kept = Vec::new();
        while let Some(row) = seq.next_element::<Value>()? {
            let name = row.get("name").and_then(Value::as_str).unwrap_or("");
            if !self.0.contains(name) {
                kept.push(row);
            }
        }
        Ok(kept)
    }
}

/// The rows of the shared dataset at `path` whose name is not in `replaced`; an unreadable
/// or malformed file is started afresh (upstream rewrites it whole on every export).
fn kept_rows(path: &Path, replaced: &BTreeSet<String>) -> Vec<Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let mut de = serde_json::Deserializer::from_str(&text);
            serde::de::DeserializeSeed::deserialize(KeptRows(replaced), &mut de).ok()
        })
        .unwrap_or_default()
}

/// Write the run's dataset evidence (`rows` as they are, in sync order).
pub fn write_evidence_dataset(path: &Path, rows: &[DatasetRow<'_>]) -> crate::hyops::Result<()> {
    write_json_atomic_ser(path, &Rows(rows))
}

/// Merge this slot's rows into the shared dataset: rows of other modules and slots stay
/// (upstream keeps only the module that ran last); rows whose name is in `replaced_names`
/// (this slot's VMs, current and retired) are replaced. The merged rows are sorted by name
/// (rows without one first). Returns the JSON and CSV paths.
pub fn write_shared_dataset(
    ctx: &Ctx,
    rows: &[DatasetRow<'_>],
    replaced_names: &BTreeSet<String>,
) -> crate::hyops::Result<(PathBuf, PathBuf)> {
    let (json_path, csv_path) = dataset_paths(ctx);
    let mut merged: Vec<SharedRow<'_>> = kept_rows(&json_path, replaced_names)
        .into_iter()
        .map(SharedRow::Kept)
        .collect();
    merged.extend(rows.iter().copied().map(SharedRow::Ours));
    // stable: rows of equal name keep their order (kept rows first)
    merged.sort_by(|a, b| a.name().cmp(&b.name()));
    write_json_atomic_ser(&json_path, &merged)?;
    write_text_atomic(&csv_path, &csv_text(&merged))?;
    Ok((json_path, csv_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeSeed;
    use serde_json::json;

    fn kept(text: &str, replaced: &[&str]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let set: BTreeSet<String> = replaced.iter().map(|s| s.to_string()).collect();
        KeptRows(&set).deserialize(&mut serde_json::Deserializer::from_str(text))
    }

    fn vm(nics: Vec<SyncNic>) -> SyncVm {
        SyncVm {
            name: "app-01".into(),
            previous_name: None,
            cluster: "onprem-core".into(),
            status: "active".into(),
            vcpus: Some(2),
            memory_mb: Some(4096),
            disk_gb: None,
            role: Some("app,\"web\"".into()),
            tags: vec!["env-dev".into(), "app".into()],
            external_id: "onprem-proxmox:101".into(),
            nics,
        }
    }

    fn nic(name: &str, mac: Option<&str>, address: Option<&str>) -> SyncNic {
        SyncNic {
            name: name.into(),
            mac: mac.map(str::to_string),
            address: address.map(str::to_string),
            assignment: address.map(|_| "static".to_string()),
        }
    }

    /// The row as upstream's keys give it, built as a JSON value (the shape the typed row
    /// replaced).
    fn as_value(vm: &SyncVm, vmid: Option<u64>) -> Value {
        let first = vm.nics.first();
        json!({
            "name": vm.name,
            "vm_id": vmid,
            "cpu_cores": vm.vcpus,
            "memory_mb": vm.memory_mb,
            "disk_gb": vm.disk_gb,
            "ip_address": first.and_then(|n| n.address.clone()).unwrap_or_default(),
            "ip_assignment": first.and_then(|n| n.assignment.clone()).unwrap_or_default(),
            "mac_address": first.and_then(|n| n.mac.clone()).unwrap_or_default(),
            "role": vm.role.clone().unwrap_or_default(),
            "tags": vm.tags.join(";"),
            "status": vm.status,
            "tf_address": ".",
            "interface": first.map(|n| n.name.clone()).unwrap_or_else(|| "eth0".into()),
            "source": "onprem-proxmox",
            "cluster": vm.cluster,
            "external_id": vm.external_id,
            "interfaces": vm.nics,
        })
    }

    #[test]
    fn a_dataset_row_is_the_sorted_json_of_upstreams_keys_plus_interfaces() {
        for v in [
            vm(vec![
                nic("eth0", Some("BC:24:11:00:00:01"), Some("10.0.0.5/24")),
                nic("eth1", None, None),
            ]),
            vm(Vec::new()),
        ] {
            for vmid in [Some(101), None] {
                let row = DatasetRow { vm: &v, vmid };
                assert_eq!(
                    serde_json::to_string_pretty(&row).unwrap(),
                    serde_json::to_string_pretty(&Sorted(&as_value(&v, vmid))).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_dataset_rows_csv_cells_are_its_json_values_quoted_when_needed() {
        let v = vm(vec![nic(
            "eth0",
            Some("BC:24:11:00:00:01"),
            Some("10.0.0.5/24"),
        )]);
        let ours = SharedRow::Ours(DatasetRow {
            vm: &v,
            vmid: Some(101),
        });
        let same_as_kept = SharedRow::Kept(as_value(&v, Some(101)));
        assert_eq!(
            csv_text(std::slice::from_ref(&ours)),
            csv_text(std::slice::from_ref(&same_as_kept))
        );
        let text = csv_text(&[ours]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("app-01,10.0.0.5/24,onprem-core,eth0,\"app,\"\"web\"\"\",active,env-dev;app,onprem-proxmox,onprem-proxmox:101,.,,,BC:24:11:00:00:01,,static,101,2,4096,"), "{line}");
    }

    #[test]
    fn a_kept_rows_csv_cells_print_booleans_as_python_and_null_as_empty() {
        let row =
            SharedRow::Kept(json!({"name": "x", "status": true, "vm_id": null, "role": false}));
        let text = csv_text(&[row]);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line, "x,,,,False,True,,,,,,,,,,,,,");
    }

    #[test]
    fn the_shared_dataset_keeps_other_slots_rows_and_drops_this_slots() {
        let text = json!([
            {"name": "other-01", "vm_id": 1},
            {"name": "mine-01", "vm_id": 2},
            {"vm_id": 3},
            {"name": "other-02", "vm_id": 4},
        ])
        .to_string();
        let rows = kept(&text, &["mine-01"]).unwrap();
        let names: Vec<_> = rows.iter().map(|r| r["vm_id"].clone()).collect();
        assert_eq!(names, vec![json!(1), json!(3), json!(4)]);
    }

    #[test]
    fn a_shared_dataset_that_is_not_an_array_is_refused() {
        assert!(kept(r#"{"name": "x"}"#, &[]).is_err());
        assert!(kept("[1, ", &[]).is_err());
    }
}
