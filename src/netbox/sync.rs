//! Inventory sync (contract §4.7) and destroy sync (§4.8), replacing upstream's
//! `export-infra` + `sync-netbox` with the same NetBox objects: the cluster (auto-created with
//! the `hyops-managed` cluster type), the VM with its `external_id` custom field, vCPUs, memory,
//! disk (MB), role (a VM device role) and tags (the VM's tags plus `ip:<assignment>` and
//! `managed:infra-csv`), one interface per NIC with its MAC, the IP assigned to it, and the
//! primary IPv4.
//!
//! Fixes over upstream: a sync touches only the VMs it is given and the ones the caller names
//! for retirement (upstream soft-retires every other managed VM of the cluster, including
//! other slots'); a NIC without a guest-agent address uses its configured address; MAC and
//! role are filled; only differing fields are written, so a second sync writes nothing.
//! Destroy soft-retires by default (`offline` + `stale:infra-csv`); a hard delete first
//! detaches the VM's IP records so the reservations survive NetBox's delete cascade.
//!
//! Every object found through a filter is re-checked on the client before it is written.
//! Knows nothing about HyOps state files or Proxmox.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::client::{Metrics, NetboxClient};
use super::error::NetboxError;
use super::objects::{
    choice_of, host_of, id_of, ref_id, slugify, str_of, tag_ids, tag_names, IpRecord,
};

/// Tag on every VM the sync manages.
pub const MANAGED_TAG: &str = "managed:infra-csv";
/// Tag added when a VM is soft-retired.
pub const STALE_TAG: &str = "stale:infra-csv";
/// Batch size for multi-value lookups.
const CHUNK: usize = 40;

/// One NIC of a VM to sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncNic {
    /// `eth0`, `eth1`, … (upstream's default interface name is `eth0`).
    pub name: String,
    pub mac: Option<String>,
    /// `10.10.0.5/24`; `None` when neither a configured nor a reported address exists.
    pub address: Option<String>,
    /// `static` (configured or allocated) or `dhcp` (reported by the guest agent).
    pub assignment: Option<String>,
}

/// One VM to sync (a dataset row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncVm {
    /// The physical VM name.
    pub name: String,
    pub cluster: String,
    /// `active` or `offline`.
    pub status: String,
    pub vcpus: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<u64>,
    pub role: Option<String>,
    /// The VM's own tags (without `ip:*` and the managed tag).
    pub tags: Vec<String>,
    /// `onprem-proxmox:<vmid>`, written to the external-id custom field. Not used to find
    /// the VM: VMIDs repeat across Proxmox clusters and after rebuilds.
    pub external_id: String,
    /// The name this VM had in the slot's previous state, when it was renamed (the sync
    /// renames that NetBox VM instead of creating a second one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_name: Option<String>,
    pub nics: Vec<SyncNic>,
}

/// A VM to retire or delete, by name within its cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VmRef {
    pub name: String,
    pub cluster: String,
}

/// Knobs (upstream env names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// Custom field holding the external id [`NETBOX_VM_EXTERNAL_ID_FIELD`, `external_id`].
    pub external_id_field: String,
    /// Create the custom field when missing [`NETBOX_VM_EXTERNAL_ID_CF_AUTO_CREATE`, true].
    pub external_id_cf_auto_create: bool,
    pub external_id_label: String,
    pub external_id_description: String,
    pub external_id_object_type: String,
    /// Create missing clusters [`NETBOX_CLUSTER_AUTO_CREATE`, true].
    pub cluster_auto_create: bool,
    /// Cluster type for new clusters [`NETBOX_CLUSTER_TYPE_ID`], else name/slug
    /// [`NETBOX_CLUSTER_TYPE_NAME`/`_SLUG`, `hyops-managed`].
    pub cluster_type_id: Option<u64>,
    pub cluster_type_name: String,
    pub cluster_type_slug: Option<String>,
    /// [`NETBOX_VM_ROLE_COLOR`, `607d8b`], [`NETBOX_TAG_COLOR`, `9e9e9e`].
    pub role_color: String,
    pub tag_color: String,
    /// VMs written at the same time [`HYOPS_NETBOX_SYNC_PARALLEL`, 8].
    pub parallel: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            external_id_field: "external_id".into(),
            external_id_cf_auto_create: true,
            external_id_label: "External ID".into(),
            external_id_description: "HybridOps provider linkage for VM reconciliation".into(),
            external_id_object_type: "virtualization.virtualmachine".into(),
            cluster_auto_create: true,
            cluster_type_id: None,
            cluster_type_name: "hyops-managed".into(),
            cluster_type_slug: None,
            role_color: "607d8b".into(),
            tag_color: "9e9e9e".into(),
            parallel: 8,
        }
    }
}

fn env_bool(env: &BTreeMap<String, String>, key: &str, default: bool) -> bool {
    match env.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => true,
        Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => false,
        _ => default,
    }
}

impl SyncOptions {
    /// From the upstream env knobs (§4.10).
    pub fn from_env(env: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let d = SyncOptions::default();
        SyncOptions {
            external_id_field: get("NETBOX_VM_EXTERNAL_ID_FIELD").unwrap_or(d.external_id_field),
            external_id_cf_auto_create: env_bool(env, "NETBOX_VM_EXTERNAL_ID_CF_AUTO_CREATE", true),
            external_id_label: get("NETBOX_VM_EXTERNAL_ID_LABEL").unwrap_or(d.external_id_label),
            external_id_description: get("NETBOX_VM_EXTERNAL_ID_DESCRIPTION")
                .unwrap_or(d.external_id_description),
            external_id_object_type: get("NETBOX_VM_EXTERNAL_ID_OBJECT_TYPE")
                .unwrap_or(d.external_id_object_type),
            cluster_auto_create: env_bool(env, "NETBOX_CLUSTER_AUTO_CREATE", true),
            cluster_type_id: get("NETBOX_CLUSTER_TYPE_ID").and_then(|v| v.parse().ok()),
            cluster_type_name: get("NETBOX_CLUSTER_TYPE_NAME").unwrap_or(d.cluster_type_name),
            cluster_type_slug: get("NETBOX_CLUSTER_TYPE_SLUG"),
            role_color: get("NETBOX_VM_ROLE_COLOR").unwrap_or(d.role_color),
            tag_color: get("NETBOX_TAG_COLOR").unwrap_or(d.tag_color),
            parallel: get("HYOPS_NETBOX_SYNC_PARALLEL")
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d.parallel),
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub total_rows: usize,
    pub processed: usize,
    pub vms_created: usize,
    pub vms_updated: usize,
    pub interfaces_written: usize,
    pub ips_created: usize,
    pub ips_assigned: usize,
    pub primary_set: usize,
    pub retired: usize,
    pub skipped_no_ip: usize,
    /// One line per failed VM (`<name>: <error>`).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// NetBox requests made, and writes among them.
    pub requests: u64,
    pub writes: u64,
}

/// What a destroy sync did (upstream's summary counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyReport {
    pub targeted: usize,
    pub retired: usize,
    pub deleted: usize,
    pub not_found: usize,
    pub errors: Vec<String>,
    /// IP records detached before a hard delete so the reservations survive.
    pub ips_detached: usize,
    pub requests: u64,
    pub writes: u64,
}

/// `onprem-<dev|staging|prod>` when one of those tags (or `production`) is present, else
/// `onprem-core` (upstream `_infer_cluster_from_vm_tags`).
pub fn infer_cluster(tags: &[String]) -> String {
    let lowered: BTreeSet<String> = tags.iter().map(|t| t.trim().to_ascii_lowercase()).collect();
    for env in ["dev", "staging", "prod", "production"] {
        if lowered.contains(env) {
            let key = if env == "production" { "prod" } else { env };
            return format!("onprem-{key}");
        }
    }
    "onprem-core".into()
}

/// Every NetBox cluster with one name. NetBox makes cluster names unique only within a
/// group or a site, so two runs creating `onprem-core` at once can leave two clusters of
/// that name: VMs are looked up across all of them, and new ones go to the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterSet {
    /// The oldest (lowest id): where VMs are created and moved to.
    primary: u64,
    all: Vec<u64>,
}

impl ClusterSet {
    fn contains(&self, id: Option<u64>) -> bool {
        id.is_some_and(|i| self.all.contains(&i))
    }
}

/// Per-run caches of shared objects.
struct Cache<'a> {
    client: &'a NetboxClient,
    opts: &'a SyncOptions,
    clusters: BTreeMap<String, Option<ClusterSet>>,
    cluster_type: Option<u64>,
    roles: BTreeMap<String, u64>,
    tags: BTreeMap<String, u64>,
    /// `Some(true)` when the external-id custom field exists (or was created).
    cf_ready: Option<bool>,
    /// VMs per cluster id, listed once.
    vms: BTreeMap<u64, Vec<Value>>,
}

async fn find_exact(
    client: &NetboxClient,
    path: &str,
    key: &str,
    value: &str,
) -> Result<Option<Value>, NetboxError> {
    let hits = client
        .list(path, &[(key.to_string(), value.to_string())])
        .await?;
    let mut hits: Vec<Value> = hits
        .into_iter()
        .filter(|v| str_of(v, key) == value)
        .collect();
    hits.sort_by_key(|v| id_of(v).unwrap_or(u64::MAX));
    Ok(hits.into_iter().next())
}

/// Create, or on a conflict / lost reply find what another writer made.
async fn create_or_find<F, Fut>(
    client: &NetboxClient,
    path: &str,
    payload: &Value,
    find: F,
) -> Result<Value, NetboxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Value>, NetboxError>>,
{
    match client.create(path, payload).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_conflict() || e.outcome_unknown() => {
            for wait_ms in [0u64, 200, 500, 1000, 2000] {
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                if let Some(v) = find().await? {
                    return Ok(v);
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Ids of the clusters named exactly `name`, oldest first.
async fn clusters_named(client: &NetboxClient, name: &str) -> Result<Vec<u64>, NetboxError> {
    let mut ids: Vec<u64> = client
        .list(
            "/api/virtualization/clusters/",
            &[("name".to_string(), name.to_string())],
        )
        .await?
        .iter()
        .filter(|v| str_of(v, "name") == name)
        .filter_map(id_of)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn need_id(v: &Value, what: &str) -> Result<u64, NetboxError> {
    id_of(v).ok_or_else(|| NetboxError::Decode {
        method: "GET".into(),
        path: what.to_string(),
        detail: "the object has no id".into(),
    })
}

impl<'a> Cache<'a> {
    async fn cluster_type(&mut self) -> Result<u64, NetboxError> {
        if let Some(id) = self.opts.cluster_type_id.or(self.cluster_type) {
            return Ok(id);
        }
        let name = self.opts.cluster_type_name.clone();
        let slug = self
            .opts
            .cluster_type_slug
            .clone()
            .unwrap_or_else(|| slugify(&name));
        let path = "/api/virtualization/cluster-types/";
        let client = self.client;
        let find = || {
            let (name, slug) = (name.clone(), slug.clone());
            async move {
                if let Some(v) = find_exact(client, path, "slug", &slug).await? {
                    return Ok(Some(v));
                }
                find_exact(client, path, "name", &name).await
            }
        };
        let v = match find().await? {
            Some(v) => v,
            None => {
                create_or_find(client, path, &json!({"name": name, "slug": slug}), find).await?
            }
        };
        let id = need_id(&v, path)?;
        self.cluster_type = Some(id);
        Ok(id)
    }

    /// Ids of the clusters named exactly `name`, oldest first.
    async fn clusters_named(&self, name: &str) -> Result<Vec<u64>, NetboxError> {
        clusters_named(self.client, name).await
    }

    /// `ensure_cluster`; `None` only for destroy lookups (`create = false`).
    async fn cluster(
        &mut self,
        name: &str,
        create: bool,
    ) -> Result<Option<ClusterSet>, NetboxError> {
        if let Some(Some(set)) = self.clusters.get(name) {
            return Ok(Some(set.clone()));
        }
        let path = "/api/virtualization/clusters/";
        let mut ids = self.clusters_named(name).await?;
        if ids.is_empty() && create {
            let type_id = if self.opts.cluster_type_id.is_some() || self.opts.cluster_auto_create {
                self.cluster_type().await?
            } else {
                return Err(NetboxError::Config {
                    field: "NETBOX_CLUSTER_AUTO_CREATE",
                    detail: format!(
                        "NetBox cluster not found: {name}. Create it in NetBox, set NETBOX_CLUSTER_TYPE_ID, or leave NETBOX_CLUSTER_AUTO_CREATE enabled (default) for HybridOps auto-create."
                    ),
                });
            };
            let client = self.client;
            let made = create_or_find(
                client,
                path,
                &json!({"name": name, "type": type_id}),
                || async move { find_exact(client, path, "name", name).await },
            )
            .await?;
            let mine = need_id(&made, path)?;
            ids = self.clusters_named(name).await?;
            if !ids.contains(&mine) {
                ids.push(mine);
                ids.sort_unstable();
            }
            // A racing run made one too: keep the oldest and remove ours while it is
            // still empty (re-checked), so VMs gather in one cluster.
            if ids.first() != Some(&mine) {
                let empty = self
                    .client
                    .list(
                        "/api/virtualization/virtual-machines/",
                        &[("cluster_id".to_string(), mine.to_string())],
                    )
                    .await?
                    .iter()
                    .all(|v| ref_id(v, "cluster") != Some(mine));
                if empty {
                    // Tidying is best effort and never fails the sync: NetBox protects a
                    // cluster that has VMs (409), and a run that wrote a VM into it between
                    // our check and the delete makes PostgreSQL's foreign key refuse the
                    // delete at commit (a 500). Either way it stays, one more member of
                    // the set; VMs still go to the oldest.
                    match self.client.delete(&format!("{path}{mine}/")).await {
                        Ok(()) => ids.retain(|i| *i != mine),
                        Err(e) => tracing::debug!(
                            cluster = name,
                            id = mine,
                            "the duplicate cluster stays: {e}"
                        ),
                    }
                }
            }
        }
        let set = ids.first().map(|p| ClusterSet {
            primary: *p,
            all: ids.clone(),
        });
        self.clusters.insert(name.to_string(), set.clone());
        Ok(set)
    }

    async fn role(&mut self, name: &str) -> Result<u64, NetboxError> {
        if let Some(id) = self.roles.get(name) {
            return Ok(*id);
        }
        let path = "/api/dcim/device-roles/";
        let slug = slugify(name);
        let client = self.client;
        let find = || {
            let slug = slug.clone();
            async move {
                if let Some(v) = find_exact(client, path, "slug", &slug).await? {
                    return Ok(Some(v));
                }
                find_exact(client, path, "name", name).await
            }
        };
        let v = match find().await? {
            Some(v) => v,
            None => {
                create_or_find(
                    client,
                    path,
                    &json!({"name": name, "slug": slug, "color": self.opts.role_color, "vm_role": true}),
                    find,
                )
                .await?
            }
        };
        let id = need_id(&v, path)?;
        self.roles.insert(name.to_string(), id);
        Ok(id)
    }

    async fn tag(&mut self, name: &str) -> Result<u64, NetboxError> {
        if let Some(id) = self.tags.get(&name.to_ascii_lowercase()) {
            return Ok(*id);
        }
        let path = "/api/extras/tags/";
        let slug = slugify(name);
        let client = self.client;
        let find = || {
            let slug = slug.clone();
            async move {
                if let Some(v) = find_exact(client, path, "slug", &slug).await? {
                    return Ok(Some(v));
                }
                find_exact(client, path, "name", name).await
            }
        };
        let v = match find().await? {
            Some(v) => v,
            None => {
                create_or_find(
                    client,
                    path,
                    &json!({"name": name, "slug": slug, "color": self.opts.tag_color}),
                    find,
                )
                .await?
            }
        };
        let id = need_id(&v, path)?;
        self.tags.insert(name.to_ascii_lowercase(), id);
        Ok(id)
    }

    async fn tag_ids(&mut self, names: &[String]) -> Result<Vec<u64>, NetboxError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for n in names {
            let n = n.trim();
            if n.is_empty() || !seen.insert(n.to_ascii_lowercase()) {
                continue;
            }
            out.push(self.tag(n).await?);
        }
        Ok(out)
    }

    /// Whether the external-id custom field can be written (creating it when allowed).
    async fn custom_field(&mut self) -> Result<bool, NetboxError> {
        if let Some(ok) = self.cf_ready {
            return Ok(ok);
        }
        let path = "/api/extras/custom-fields/";
        let name = self.opts.external_id_field.clone();
        let client = self.client;
        let find = || {
            let name = name.clone();
            async move { find_exact(client, path, "name", &name).await }
        };
        let ok = match find().await? {
            Some(_) => true,
            None if self.opts.external_id_cf_auto_create => {
                create_or_find(
                    client,
                    path,
                    &json!({
                        "name": name,
                        "label": self.opts.external_id_label,
                        "type": "text",
                        "required": false,
                        "description": self.opts.external_id_description,
                        "object_types": [self.opts.external_id_object_type],
                    }),
                    find,
                )
                .await?;
                true
            }
            None => false,
        };
        self.cf_ready = Some(ok);
        Ok(ok)
    }

    /// The VMs of every cluster in `set`, listed once per run. A cluster a racing run
    /// removed (its empty duplicate) makes NetBox refuse the filter: the set is re-read by
    /// name and the list retried (a few times: several runs may be tidying at once).
    async fn cluster_vms(
        &mut self,
        set: &mut ClusterSet,
        name: &str,
    ) -> Result<&mut Vec<Value>, NetboxError> {
        if !self.vms.contains_key(&set.primary) {
            let mut attempt = 0;
            let list = loop {
                let q: Vec<(String, String)> = set
                    .all
                    .iter()
                    .map(|id| ("cluster_id".to_string(), id.to_string()))
                    .collect();
                match self
                    .client
                    .list("/api/virtualization/virtual-machines/", &q)
                    .await
                {
                    Ok(l) => break l,
                    Err(e) if e.status() == Some(400) && attempt < 5 => {
                        attempt += 1;
                        let ids = self.clusters_named(name).await?;
                        let Some(primary) = ids.first().copied() else {
                            break Vec::new();
                        };
                        *set = ClusterSet { primary, all: ids };
                        self.clusters.insert(name.to_string(), Some(set.clone()));
                    }
                    Err(e) => return Err(e),
                }
            };
            // Re-check: an ignored filter would return every VM.
            let list = list
                .into_iter()
                .filter(|v| set.contains(ref_id(v, "cluster")))
                .collect();
            self.vms.insert(set.primary, list);
        }
        Ok(self.vms.entry(set.primary).or_default())
    }
}

/// Tag-id lists compare as sets; references by id; choices by value; vcpus numerically.
fn vm_changes(current: &Value, desired: &Map<String, Value>, cf_field: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, want) in desired {
        let same = match k.as_str() {
            "tags" => {
                let have: BTreeSet<u64> = tag_ids(current).into_iter().collect();
                let want: BTreeSet<u64> = want
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                have == want
            }
            "cluster" | "role" => ref_id(current, k) == want.as_u64(),
            "status" => choice_of(current, k) == want.as_str().unwrap_or(""),
            "custom_fields" => {
                let have = current
                    .get("custom_fields")
                    .and_then(|c| c.get(cf_field))
                    .cloned()
                    .unwrap_or(Value::Null);
                want.get(cf_field).cloned().unwrap_or(Value::Null) == have
            }
            "vcpus" | "memory" | "disk" => current.get(k).and_then(Value::as_f64) == want.as_f64(),
            _ => current.get(k) == Some(want),
        };
        if !same {
            out.insert(k.clone(), want.clone());
        }
    }
    out
}

/// Sync `vms` into NetBox and soft-retire `retire` (this slot's VMs that are gone). Never
/// fails as a whole: per-VM failures are collected in the report.
pub async fn sync_vms(
    client: &NetboxClient,
    vms: &[SyncVm],
    retire: &[VmRef],
    opts: &SyncOptions,
) -> SyncReport {
    let before = client.metrics();
    let mut report = SyncReport {
        total_rows: vms.len(),
        ..SyncReport::default()
    };
    let mut cache = Cache {
        client,
        opts,
        clusters: BTreeMap::new(),
        cluster_type: None,
        roles: BTreeMap::new(),
        tags: BTreeMap::new(),
        cf_ready: None,
        vms: BTreeMap::new(),
    };
    // Batched reads: IP records by host and, later, interfaces by VM.
    let hosts: Vec<String> = vms
        .iter()
        .flat_map(|v| v.nics.iter())
        .filter_map(|n| n.address.as_deref())
        .filter_map(host_of)
        .map(|h| h.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut ips_by_host: BTreeMap<String, Vec<IpRecord>> = BTreeMap::new();
    // (The interfaces are read once the VMs are matched, below.)
    for chunk in hosts.chunks(CHUNK) {
        let q: Vec<(String, String)> = chunk
            .iter()
            .map(|h| ("address".to_string(), h.clone()))
            .collect();
        match client.list("/api/ipam/ip-addresses/", &q).await {
            Ok(list) => {
                for r in list.iter().filter_map(IpRecord::from_value) {
                    if let Some(h) = r.host().map(|h| h.to_string()) {
                        if chunk.contains(&h) {
                            ips_by_host.entry(h).or_default().push(r);
                        }
                    }
                }
            }
            Err(e) => {
                report.errors.push(format!("NetBox IP lookup failed: {e}"));
                finish(&mut report, client, &before);
                return report;
            }
        }
    }
    let sync_names: BTreeSet<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    // Shared objects and matches, row by row (cached, so mostly reads once per run).
    let mut prepared = Vec::new();
    for vm in vms {
        if vm.nics.iter().all(|n| n.address.is_none()) {
            report.skipped_no_ip += 1;
        }
        match prepare_row(&mut cache, vm, &sync_names, &mut report.warnings).await {
            Ok(p) => prepared.push(p),
            Err(e) => report.errors.push(format!("{}: {e}", vm.name)),
        }
    }
    // The interfaces of every matched VM, in batches.
    let vm_ids: Vec<u64> = prepared
        .iter()
        .filter_map(|p| p.existing.as_ref().and_then(id_of))
        .collect();
    let mut ifaces_by_vm: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for chunk in vm_ids.chunks(CHUNK) {
        let q: Vec<(String, String)> = chunk
            .iter()
            .map(|id| ("virtual_machine_id".to_string(), id.to_string()))
            .collect();
        match client.list("/api/virtualization/interfaces/", &q).await {
            Ok(list) => {
                for i in list {
                    if let Some(vm) = ref_id(&i, "virtual_machine").filter(|v| chunk.contains(v)) {
                        ifaces_by_vm.entry(vm).or_default().push(i);
                    }
                }
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("NetBox interface lookup failed: {e}"));
                finish(&mut report, client, &before);
                return report;
            }
        }
    }
    // The writes, `opts.parallel` rows at a time.
    let ips = std::sync::Mutex::new(ips_by_host);
    let mut writes = Vec::new();
    for p in prepared {
        let ifaces = p
            .existing
            .as_ref()
            .and_then(id_of)
            .and_then(|id| ifaces_by_vm.get(&id).cloned())
            .unwrap_or_default();
        let name = p.vm.name.clone();
        let ips = &ips;
        writes.push(async move { (name, write_row(client, p, ifaces, ips).await) });
    }
    let results: Vec<(String, Result<RowReport, NetboxError>)> = futures::stream::iter(writes)
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, r) in results {
        match r {
            Ok(r) => {
                report.processed += 1;
                report.vms_created += r.vms_created;
                report.vms_updated += r.vms_updated;
                report.interfaces_written += r.interfaces_written;
                report.ips_created += r.ips_created;
                report.ips_assigned += r.ips_assigned;
                report.primary_set += r.primary_set;
                report.warnings.extend(r.warnings);
            }
            Err(e) => report.errors.push(format!("{name}: {e}")),
        }
    }
    for r in retire {
        match retire_one(&mut cache, r, false).await {
            Ok(RetireOutcome::Retired) => report.retired += 1,
            Ok(_) => {}
            Err(e) => report
                .errors
                .push(format!("{}: soft-retire failed: {e}", r.name)),
        }
    }
    finish(&mut report, client, &before);
    report
}

fn finish(report: &mut SyncReport, client: &NetboxClient, before: &Metrics) {
    let d = client.metrics().since(before);
    report.requests = d.total;
    report.writes = d.writes;
}

/// One row, after the shared objects were ensured: the VM payload and its match.
struct Prepared<'a> {
    vm: &'a SyncVm,
    desired: Map<String, Value>,
    cluster: u64,
    existing: Option<Value>,
    cf_field: String,
}

/// What writing one row did.
#[derive(Default)]
struct RowReport {
    vms_created: usize,
    vms_updated: usize,
    interfaces_written: usize,
    ips_created: usize,
    ips_assigned: usize,
    primary_set: usize,
    warnings: Vec<String>,
}

/// Sequential part of a row: cluster, role, tags, custom field (shared and cached), the
/// payload, and the existing NetBox VM it matches.
async fn prepare_row<'a>(
    cache: &mut Cache<'_>,
    vm: &'a SyncVm,
    sync_names: &BTreeSet<&str>,
    warnings: &mut Vec<String>,
) -> Result<Prepared<'a>, NetboxError> {
    let mut set = cache
        .cluster(&vm.cluster, true)
        .await?
        .ok_or_else(|| NetboxError::Config {
            field: "cluster",
            detail: format!("NetBox cluster not found: {}", vm.cluster),
        })?;
    let role_id = match vm.role.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => match cache.role(r).await {
            Ok(id) => Some(id),
            Err(e) => {
                warnings.push(format!("{}: WARN role sync skipped ({e})", vm.name));
                None
            }
        },
        None => None,
    };
    let mut tags: Vec<String> = vm.tags.clone();
    let assignment = vm
        .nics
        .first()
        .and_then(|n| n.assignment.clone())
        .filter(|a| a == "static" || a == "dhcp");
    if let Some(a) = &assignment {
        tags.push(format!("ip:{a}"));
    }
    if !tags.iter().any(|t| t == MANAGED_TAG) {
        tags.push(MANAGED_TAG.to_string());
    }
    let tag_ids = cache.tag_ids(&tags).await?;
    let cf_ok = cache.custom_field().await?;
    let cf_field = cache.opts.external_id_field.clone();
    let mut desired = Map::new();
    desired.insert("name".into(), json!(vm.name));
    desired.insert("status".into(), json!(vm.status));
    if let Some(v) = vm.vcpus {
        desired.insert("vcpus".into(), json!(v));
    }
    if let Some(v) = vm.memory_mb {
        desired.insert("memory".into(), json!(v));
    }
    if let Some(v) = vm.disk_gb {
        desired.insert("disk".into(), json!(v * 1024));
    }
    if let Some(r) = role_id {
        desired.insert("role".into(), json!(r));
    }
    if cf_ok && !vm.external_id.is_empty() {
        desired.insert(
            "custom_fields".into(),
            json!({cf_field.clone(): vm.external_id}),
        );
    }
    desired.insert("tags".into(), json!(tag_ids));

    // Match by exact name in the cluster(s); a renamed VM by its previous name from this
    // slot's state. Never by external id alone: `onprem-proxmox:<vmid>` repeats across
    // Proxmox clusters and after rebuilds (upstream matches it first and can rename another
    // cluster's VM), and never a VM another row of this sync names.
    let existing = {
        let list = cache.cluster_vms(&mut set, &vm.cluster).await?;
        list.iter()
            .find(|v| str_of(v, "name") == vm.name)
            .or_else(|| {
                vm.previous_name.as_deref().and_then(|prev| {
                    list.iter().find(|v| {
                        str_of(v, "name") == prev && !sync_names.contains(str_of(v, "name"))
                    })
                })
            })
            .cloned()
    };
    // New VMs go to (and found ones move to) the oldest cluster of that name.
    desired.insert("cluster".into(), json!(set.primary));
    Ok(Prepared {
        vm,
        desired,
        cluster: set.primary,
        existing,
        cf_field,
    })
}

/// Create the VM, or update the fields of `existing` that differ from `desired`, in
/// `cluster` (the id `desired` names).
async fn write_vm(
    client: &NetboxClient,
    vm: &SyncVm,
    existing: Option<&Value>,
    desired: &Map<String, Value>,
    cluster: u64,
    cf_field: &str,
    report: &mut RowReport,
) -> Result<Value, NetboxError> {
    let path = "/api/virtualization/virtual-machines/";
    match existing {
        Some(cur) => {
            let changes = vm_changes(cur, desired, cf_field);
            if changes.is_empty() {
                return Ok(cur.clone());
            }
            let id = need_id(cur, path)?;
            let v = client
                .update(&format!("{path}{id}/"), &Value::Object(changes))
                .await?;
            report.vms_updated += 1;
            Ok(v)
        }
        None => {
            let name = vm.name.clone();
            let v = create_or_find(client, path, &Value::Object(desired.clone()), || {
                let name = name.clone();
                async move {
                    let hits = client
                        .list(
                            path,
                            &[
                                ("name".into(), name.clone()),
                                ("cluster_id".into(), cluster.to_string()),
                            ],
                        )
                        .await?;
                    Ok(hits.into_iter().find(|v| {
                        str_of(v, "name") == name && ref_id(v, "cluster") == Some(cluster)
                    }))
                }
            })
            .await?;
            report.vms_created += 1;
            Ok(v)
        }
    }
}

/// Writing part of a row (runs concurrently with other rows): the VM, its interfaces, the
/// IP assignment and the primary IPv4. `ifaces` are the VM's interfaces read in advance.
async fn write_row(
    client: &NetboxClient,
    p: Prepared<'_>,
    ifaces: Vec<Value>,
    ips_by_host: &std::sync::Mutex<BTreeMap<String, Vec<IpRecord>>>,
) -> Result<RowReport, NetboxError> {
    let mut report = RowReport::default();
    let vm = p.vm;
    let path = "/api/virtualization/virtual-machines/";
    let mut desired = p.desired;
    let mut cluster = p.cluster;
    // The cluster resolved for this run can vanish before the VM is written: a racing run
    // removes the empty duplicate it made once it sees an older one, and a cluster another
    // run saw alone (PostgreSQL can make a lower id visible after a higher one) is such a
    // duplicate. NetBox then refuses the write with a 400 on `cluster`: re-read the clusters
    // of that name and write to the oldest again (each retry needs a removal, and the
    // oldest is never removed, so this ends).
    let mut attempts = 0;
    let current = loop {
        let written = write_vm(
            client,
            vm,
            p.existing.as_ref(),
            &desired,
            cluster,
            &p.cf_field,
            &mut report,
        )
        .await;
        match written {
            Ok(v) => break v,
            Err(e) if e.status() == Some(400) && attempts < 5 => {
                let ids = clusters_named(client, &vm.cluster).await?;
                match ids.first() {
                    Some(&oldest) if !ids.contains(&cluster) => {
                        attempts += 1;
                        tracing::debug!(
                            vm = %vm.name,
                            gone = cluster,
                            now = oldest,
                            "the cluster vanished before the VM write; writing to the oldest"
                        );
                        cluster = oldest;
                        desired.insert("cluster".into(), json!(oldest));
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let vm_id = need_id(&current, path)?;
    let ipath = "/api/virtualization/interfaces/";
    // Re-check the prefetched interfaces by VM id.
    let ifaces: Vec<Value> = ifaces
        .into_iter()
        .filter(|i| ref_id(i, "virtual_machine") == Some(vm_id))
        .collect();
    let mut primary: Option<u64> = None;
    for (idx, nic) in vm.nics.iter().enumerate() {
        let existing = ifaces
            .iter()
            .find(|i| str_of(i, "name") == nic.name)
            .cloned();
        let mac = nic.mac.as_ref().map(|m| m.to_ascii_uppercase());
        let iface = match existing {
            Some(i) => {
                let have = str_of(&i, "mac_address").to_ascii_uppercase();
                match &mac {
                    Some(m) if *m != have => {
                        let id = need_id(&i, ipath)?;
                        report.interfaces_written += 1;
                        client
                            .update(&format!("{ipath}{id}/"), &json!({"mac_address": m}))
                            .await?
                    }
                    _ => i,
                }
            }
            None => {
                let mut body = json!({"virtual_machine": vm_id, "name": nic.name});
                if let Some(m) = &mac {
                    body["mac_address"] = json!(m);
                }
                let name = nic.name.clone();
                report.interfaces_written += 1;
                create_or_find(client, ipath, &body, || {
                    let name = name.clone();
                    async move {
                        let hits = client
                            .list(ipath, &[("virtual_machine_id".into(), vm_id.to_string())])
                            .await?;
                        Ok(hits.into_iter().find(|i| {
                            str_of(i, "name") == name && ref_id(i, "virtual_machine") == Some(vm_id)
                        }))
                    }
                })
                .await?
            }
        };
        let iface_id = need_id(&iface, ipath)?;
        let Some(address) = nic.address.as_deref() else {
            continue;
        };
        let Some(host) = host_of(address) else {
            continue;
        };
        let address = if address.contains('/') {
            address.to_string()
        } else {
            format!("{address}/32")
        };
        let hkey = host.to_string();
        let candidates = lock(ips_by_host).get(&hkey).cloned().unwrap_or_default();
        // Prefer the record already on this interface, then one with the same mask.
        let rec = candidates
            .iter()
            .find(|r| r.assigned_object_id == Some(iface_id))
            .or_else(|| candidates.iter().find(|r| r.address == address))
            .or_else(|| candidates.first())
            .cloned();
        let rec = match rec {
            Some(r) => r,
            None => {
                let v = create_or_find(
                    client,
                    "/api/ipam/ip-addresses/",
                    &json!({"address": address, "status": "active"}),
                    || async move {
                        let hits = client
                            .list(
                                "/api/ipam/ip-addresses/",
                                &[("address".into(), host.to_string())],
                            )
                            .await?;
                        Ok(hits
                            .into_iter()
                            .find(|v| host_of(str_of(v, "address")) == Some(host)))
                    },
                )
                .await?;
                report.ips_created += 1;
                let r = IpRecord::from_value(&v).ok_or_else(|| NetboxError::Decode {
                    method: "POST".into(),
                    path: "/api/ipam/ip-addresses/".into(),
                    detail: "the created IP has no id or address".into(),
                })?;
                lock(ips_by_host)
                    .entry(hkey.clone())
                    .or_default()
                    .push(r.clone());
                r
            }
        };
        let assigned_here = rec.assigned_object_type == "virtualization.vminterface"
            && rec.assigned_object_id == Some(iface_id);
        if !assigned_here {
            if rec.assigned_object_id.is_some() && !rec.assigned_object_type.is_empty() {
                // Assigned elsewhere: only take it over from an interface of this same VM.
                let owner_vm = if rec.assigned_object_type == "virtualization.vminterface" {
                    match rec.assigned_object_id {
                        Some(other) => client
                            .get(&format!("{ipath}{other}/"), &[])
                            .await
                            .ok()
                            .and_then(|i| ref_id(&i, "virtual_machine")),
                        None => None,
                    }
                } else {
                    None
                };
                if owner_vm != Some(vm_id) {
                    report.warnings.push(format!(
                        "{}: IP {} is assigned to another NetBox object ({} {}); not reassigned",
                        vm.name,
                        rec.address,
                        rec.assigned_object_type,
                        rec.assigned_object_id.unwrap_or(0)
                    ));
                    continue;
                }
            }
            client
                .update(
                    &format!("/api/ipam/ip-addresses/{}/", rec.id),
                    &json!({"assigned_object_type": "virtualization.vminterface", "assigned_object_id": iface_id}),
                )
                .await?;
            report.ips_assigned += 1;
            if let Some(list) = lock(ips_by_host).get_mut(&hkey) {
                for r in list.iter_mut().filter(|r| r.id == rec.id) {
                    r.assigned_object_type = "virtualization.vminterface".into();
                    r.assigned_object_id = Some(iface_id);
                }
            }
        }
        if idx == 0 {
            primary = Some(rec.id);
        }
    }
    if let Some(ip) = primary {
        if ref_id(&current, "primary_ip4") != Some(ip) {
            client
                .update(&format!("{path}{vm_id}/"), &json!({"primary_ip4": ip}))
                .await?;
            report.primary_set += 1;
        }
    }
    Ok(report)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

enum RetireOutcome {
    Retired,
    Deleted,
    Unchanged,
    NotFound,
}

/// Soft-retire (or delete) one VM found by name in its cluster.
async fn retire_one(
    cache: &mut Cache<'_>,
    target: &VmRef,
    hard_delete: bool,
) -> Result<RetireOutcome, NetboxError> {
    let client = cache.client;
    let Some(mut set) = cache.cluster(&target.cluster, false).await? else {
        return Ok(RetireOutcome::NotFound);
    };
    let found = cache
        .cluster_vms(&mut set, &target.cluster)
        .await?
        .iter()
        .find(|v| str_of(v, "name") == target.name)
        .cloned();
    let Some(vm) = found else {
        return Ok(RetireOutcome::NotFound);
    };
    let id = need_id(&vm, "/api/virtualization/virtual-machines/")?;
    let path = format!("/api/virtualization/virtual-machines/{id}/");
    // Re-read by id before writing (never write from a list result alone).
    let current = client.get(&path, &[]).await?;
    if str_of(&current, "name") != target.name || !set.contains(ref_id(&current, "cluster")) {
        return Ok(RetireOutcome::NotFound);
    }
    if hard_delete {
        return Ok(RetireOutcome::Deleted);
    }
    let mut names: Vec<String> = tag_names(&current);
    for t in [MANAGED_TAG, STALE_TAG] {
        if !names.iter().any(|n| n == t) {
            names.push(t.to_string());
        }
    }
    let tag_ids = cache.tag_ids(&names).await?;
    let mut changes = Map::new();
    if choice_of(&current, "status") != "offline" {
        changes.insert("status".into(), json!("offline"));
    }
    let have: BTreeSet<u64> = super::objects::tag_ids(&current).into_iter().collect();
    let want: BTreeSet<u64> = tag_ids.iter().copied().collect();
    if have != want {
        changes.insert("tags".into(), json!(tag_ids));
    }
    if changes.is_empty() {
        return Ok(RetireOutcome::Unchanged);
    }
    client.update(&path, &Value::Object(changes)).await?;
    Ok(RetireOutcome::Retired)
}

/// Destroy sync (§4.8): soft-retire each target (status `offline`, tags
/// `managed:infra-csv` + `stale:infra-csv`), or delete it with `hard_delete`. Before a hard
/// delete the VM's IP records are detached (NetBox would delete every IP assigned to the
/// VM's interfaces), so reservations are never released and a rebuild gets the same
/// addresses.
pub async fn destroy_sync(
    client: &NetboxClient,
    targets: &[VmRef],
    hard_delete: bool,
    opts: &SyncOptions,
) -> DestroyReport {
    let before = client.metrics();
    let mut report = DestroyReport::default();
    let mut cache = Cache {
        client,
        opts,
        clusters: BTreeMap::new(),
        cluster_type: None,
        roles: BTreeMap::new(),
        tags: BTreeMap::new(),
        cf_ready: None,
        vms: BTreeMap::new(),
    };
    let unique: BTreeSet<&VmRef> = targets.iter().collect();
    for t in unique {
        report.targeted += 1;
        let outcome = retire_one(&mut cache, t, hard_delete).await;
        match outcome {
            Ok(RetireOutcome::NotFound) => report.not_found += 1,
            Ok(RetireOutcome::Retired) | Ok(RetireOutcome::Unchanged) => report.retired += 1,
            Ok(RetireOutcome::Deleted) => match hard_delete_vm(&mut cache, t).await {
                Ok(detached) => {
                    report.deleted += 1;
                    report.ips_detached += detached;
                }
                Err(e) => report
                    .errors
                    .push(format!("{}: ERROR destroy-sync failed ({e})", t.name)),
            },
            Err(e) => report
                .errors
                .push(format!("{}: ERROR destroy-sync failed ({e})", t.name)),
        }
    }
    let d = client.metrics().since(&before);
    report.requests = d.total;
    report.writes = d.writes;
    report
}

async fn hard_delete_vm(cache: &mut Cache<'_>, t: &VmRef) -> Result<usize, NetboxError> {
    let client = cache.client;
    let Some(mut set) = cache.cluster(&t.cluster, false).await? else {
        return Ok(0);
    };
    let Some(vm) = cache
        .cluster_vms(&mut set, &t.cluster)
        .await?
        .iter()
        .find(|v| str_of(v, "name") == t.name)
        .cloned()
    else {
        return Ok(0);
    };
    let vm_id = need_id(&vm, "/api/virtualization/virtual-machines/")?;
    let vm_path = format!("/api/virtualization/virtual-machines/{vm_id}/");
    // Re-read by id; NetBox refuses to detach an IP that is the VM's primary, so unset it.
    let current = client.get(&vm_path, &[]).await?;
    if str_of(&current, "name") != t.name || !set.contains(ref_id(&current, "cluster")) {
        return Ok(0);
    }
    if ref_id(&current, "primary_ip4").is_some() {
        client
            .update(&vm_path, &json!({"primary_ip4": null}))
            .await?;
    }
    // The IPs on this VM's interfaces, re-checked through their interface's VM.
    let ifaces: BTreeSet<u64> = client
        .list(
            "/api/virtualization/interfaces/",
            &[("virtual_machine_id".into(), vm_id.to_string())],
        )
        .await?
        .into_iter()
        .filter(|i| ref_id(i, "virtual_machine") == Some(vm_id))
        .filter_map(|i| id_of(&i))
        .collect();
    let mut detached = 0;
    if !ifaces.is_empty() {
        let q: Vec<(String, String)> = ifaces
            .iter()
            .map(|i| ("vminterface_id".to_string(), i.to_string()))
            .collect();
        let ips: Vec<IpRecord> = client
            .list("/api/ipam/ip-addresses/", &q)
            .await?
            .iter()
            .filter_map(IpRecord::from_value)
            .filter(|r| {
                r.assigned_object_type == "virtualization.vminterface"
                    && r.assigned_object_id.is_some_and(|i| ifaces.contains(&i))
            })
            .collect();
        for r in ips {
            client
                .update(
                    &format!("/api/ipam/ip-addresses/{}/", r.id),
                    &json!({"assigned_object_type": null, "assigned_object_id": null}),
                )
                .await?;
            detached += 1;
        }
    }
    client.delete(&vm_path).await?;
    if let Some(list) = cache.vms.get_mut(&set.primary) {
        list.retain(|v| id_of(v) != Some(vm_id));
    }
    Ok(detached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_inferred_from_env_tags() {
        assert_eq!(
            infer_cluster(&["platform".into(), "DEV".into()]),
            "onprem-dev"
        );
        assert_eq!(infer_cluster(&["production".into()]), "onprem-prod");
        assert_eq!(infer_cluster(&["platform".into()]), "onprem-core");
    }

    #[test]
    fn unchanged_vm_fields_produce_no_patch() {
        let cur = json!({"id": 1, "name": "a", "cluster": {"id": 2}, "status": {"value": "active"},
            "vcpus": 2.0, "memory": 2048, "disk": 40960, "role": {"id": 3},
            "tags": [{"id": 5}, {"id": 4}], "custom_fields": {"external_id": "onprem-proxmox:101"}});
        let want = json!({"name": "a", "cluster": 2, "status": "active", "vcpus": 2, "memory": 2048,
            "disk": 40960, "role": 3, "tags": [4, 5], "custom_fields": {"external_id": "onprem-proxmox:101"}});
        assert!(vm_changes(&cur, want.as_object().unwrap(), "external_id").is_empty());
        let want2 = json!({"status": "offline", "tags": [4]});
        assert_eq!(
            vm_changes(&cur, want2.as_object().unwrap(), "external_id").len(),
            2
        );
    }

    #[test]
    fn options_read_upstream_knobs() {
        let env = BTreeMap::from([
            (
                "NETBOX_CLUSTER_AUTO_CREATE".to_string(),
                "false".to_string(),
            ),
            ("NETBOX_TAG_COLOR".to_string(), "ff0000".to_string()),
        ]);
        let o = SyncOptions::from_env(&env);
        assert!(!o.cluster_auto_create);
        assert_eq!(o.tag_color, "ff0000");
        assert_eq!(o.external_id_field, "external_id");
    }
}
