//! The simulated cluster: its description (nodes, storages, templates; loadable from YAML) and
//! its mutable state (VMs with string config maps, pending values, locks, power state).
//! Pure data and small helpers; knows nothing about HTTP, tasks or timing.
//!
//! # Cluster file format (`--cluster file.yml`, see `examples/sim-cluster.yml`)
//!
//! ```yaml
//! name: lab                 # cluster name (optional, default "sim")
//! nodes: [pve1, pve2]       # node names (pve-node format)
//! storages:
//!   - id: local-lvm         # pve-storage-id
//!     type: lvmthin         # dir | lvmthin | lvm | zfspool | rbd | nfs | cifs …
//!     shared: false         # false: one instance per node; true: one cluster-wide
//!     nodes: [pve1]         # optional; default all nodes
//!     content: [images]     # images, rootdir, iso, snippets, vztmpl, backup, import
//!     total_gb: 500         # capacity (default 1000)
//!     bandwidth_mbs: 400    # copy speed for full clones, MB/s (default 200)
//! templates:
//!   - vmid: 9000
//!     name: ubuntu-24.04
//!     node: pve1
//!     storage: local-lvm    # where scsi0 and the cloud-init drive live
//!     disk_gb: 32
//!     cores: 2              # optional, default 2
//!     memory_mb: 2048       # optional, default 2048
//!     bridge: vmbr0         # optional, default vmbr0
//!     boot_disk: scsi0      # optional, default scsi0 (virtio0, sata0, … for other buses)
//! bridges:                  # optional; default vmbr0 and vmbr1 (Linux bridges) and the
//!                           # HyOps SDN VNets (vnetmgmt, vnetdata, vnetdev, …) on every node
//!   - name: vmbr0           # pve-bridge-id
//!     nodes: [pve1]         # optional; default all nodes
//!     type: bridge          # bridge | OVSBridge | vnet (an SDN VNet); default bridge
//!     vlan_aware: true      # optional, default true
//!     mtu: 1500             # optional, default 1500
//! next_id_lower: 100        # optional, first id /cluster/nextid hands out
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A cluster to simulate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterDescription {
    #[serde(default = "default_name")]
    pub name: String,
    pub nodes: Vec<String>,
    pub storages: Vec<StorageDesc>,
    #[serde(default)]
    pub templates: Vec<TemplateDesc>,
    #[serde(default = "default_lower")]
    pub next_id_lower: u32,
    /// Bridges (and SDN VNets) a NIC may attach to; `GET /nodes/{node}/network` lists them and
    /// a VM start refuses a NIC on a bridge its node lacks.
    #[serde(default = "default_bridges")]
    pub bridges: Vec<BridgeDesc>,
}

/// One bridge (or SDN VNet) of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BridgeDesc {
    pub name: String,
    /// `None`: every node.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// `bridge`, `OVSBridge` or `vnet`.
    #[serde(rename = "type", default = "default_bridge_type")]
    pub kind: String,
    #[serde(default = "default_true")]
    pub vlan_aware: bool,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

fn default_bridge_type() -> String {
    "bridge".to_string()
}
fn default_true() -> bool {
    true
}
fn default_mtu() -> u32 {
    1500
}

/// `vmbr0`, `vmbr1` and the SDN VNets the HyOps bridge aliases name (contract §1.8), on every
/// node.
pub fn default_bridges() -> Vec<BridgeDesc> {
    let b = |name: &str, kind: &str| BridgeDesc {
        name: name.into(),
        nodes: None,
        kind: kind.into(),
        vlan_aware: true,
        mtu: 1500,
    };
    let mut out = vec![b("vmbr0", "bridge"), b("vmbr1", "bridge")];
    for v in [
        "vnetmgmt", "vnetdata", "vnetdev", "vnetstag", "vnetprod", "vnetddev", "vnetdstg",
        "vnetdprd",
    ] {
        out.push(b(v, "vnet"));
    }
    out
}

fn default_name() -> String {
    "sim".to_string()
}
fn default_lower() -> u32 {
    100
}
fn default_total() -> u64 {
    1000
}
fn default_bw() -> f64 {
    200.0
}
fn default_cores() -> u32 {
    2
}
fn default_mem() -> u64 {
    2048
}
fn default_bridge() -> String {
    "vmbr0".to_string()
}

/// A storage definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StorageDesc {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    pub content: Vec<String>,
    #[serde(default = "default_total")]
    pub total_gb: u64,
    #[serde(default = "default_bw")]
    pub bandwidth_mbs: f64,
}

/// A template VM present at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TemplateDesc {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub storage: String,
    pub disk_gb: u64,
    #[serde(default = "default_cores")]
    pub cores: u32,
    #[serde(default = "default_mem")]
    pub memory_mb: u64,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The boot disk slot (`scsi0`, `virtio0`, `sata0`, …); `boot: order=<slot>;ide2;net0`.
    #[serde(default = "default_boot_disk")]
    pub boot_disk: String,
}

fn default_boot_disk() -> String {
    "scsi0".to_string()
}

/// Errors in a cluster description.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster file {path}: {msg}")]
    Read { path: String, msg: String },
    #[error("cluster description: invalid YAML: {0}")]
    Yaml(String),
    #[error("cluster description: {0}")]
    Invalid(String),
}

impl ClusterDescription {
    /// The built-in cluster: pve1..pve3, local/local-lvm per node, shared ceph-vm, and the
    /// template `ubuntu-24.04` as 9000 on pve1 and 9001 on pve2.
    pub fn default_cluster() -> Self {
        let tpl = |vmid, node: &str| TemplateDesc {
            vmid,
            name: "ubuntu-24.04".into(),
            node: node.into(),
            storage: "local-lvm".into(),
            disk_gb: 32,
            cores: 2,
            memory_mb: 2048,
            bridge: "vmbr0".into(),
            boot_disk: "scsi0".into(),
        };
        Self {
            name: "sim".into(),
            nodes: vec!["pve1".into(), "pve2".into(), "pve3".into()],
            storages: vec![
                StorageDesc {
                    id: "local".into(),
                    kind: "dir".into(),
                    shared: false,
                    nodes: None,
                    content: vec!["iso".into(), "snippets".into(), "images".into()],
                    total_gb: 100,
                    bandwidth_mbs: 300.0,
                },
                StorageDesc {
                    id: "local-lvm".into(),
                    kind: "lvmthin".into(),
                    shared: false,
                    nodes: None,
                    content: vec!["images".into()],
                    total_gb: 1000,
                    bandwidth_mbs: 400.0,
                },
                StorageDesc {
                    id: "ceph-vm".into(),
                    kind: "rbd".into(),
                    shared: true,
                    nodes: None,
                    content: vec!["images".into()],
                    total_gb: 10000,
                    bandwidth_mbs: 150.0,
                },
            ],
            templates: vec![tpl(9000, "pve1"), tpl(9001, "pve2")],
            next_id_lower: 100,
            bridges: default_bridges(),
        }
    }

    /// Parse and validate a YAML description.
    pub fn from_yaml(text: &str) -> Result<Self, ClusterError> {
        // Read as HyOps reads YAML (YAML 1.1), then typed through its JSON form.
        let doc = crate::yaml::safe_load(text).map_err(|e| ClusterError::Yaml(e.to_string()))?;
        let json = doc
            .to_json("cluster")
            .map_err(|e| ClusterError::Yaml(e.to_string()))?;
        let c: Self =
            serde_json::from_value(json).map_err(|e| ClusterError::Yaml(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Read a YAML description from a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ClusterError> {
        let text = crate::fsread::read_text_at_most(path, crate::fsread::DEFAULT_LIMIT).map_err(
            |msg| ClusterError::Read {
                path: path.display().to_string(),
                msg,
            },
        )?;
        Self::from_yaml(&text)
    }

    /// Check references between nodes, storages and templates.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.nodes.is_empty() {
            return Err(ClusterError::Invalid(
                "nodes: at least one node is needed".into(),
            ));
        }
        for s in &self.storages {
            for n in s.nodes.iter().flatten() {
                if !self.nodes.contains(n) {
                    return Err(ClusterError::Invalid(format!(
                        "storage {}: unknown node '{n}'",
                        s.id
                    )));
                }
            }
            if s.bandwidth_mbs <= 0.0 {
                return Err(ClusterError::Invalid(format!(
                    "storage {}: bandwidth_mbs must be > 0, got {}",
                    s.id, s.bandwidth_mbs
                )));
            }
        }
        for b in &self.bridges {
            for n in b.nodes.iter().flatten() {
                if !self.nodes.contains(n) {
                    return Err(ClusterError::Invalid(format!(
                        "bridge {}: unknown node '{n}'",
                        b.name
                    )));
                }
            }
            if !["bridge", "OVSBridge", "vnet"].contains(&b.kind.as_str()) {
                return Err(ClusterError::Invalid(format!(
                    "bridge {}: type must be bridge, OVSBridge or vnet, got '{}'",
                    b.name, b.kind
                )));
            }
        }
        let mut ids = BTreeSet::new();
        for t in &self.templates {
            if !ids.insert(t.vmid) || t.vmid < 100 {
                return Err(ClusterError::Invalid(format!(
                    "template {}: vmid {} is duplicate or below 100",
                    t.name, t.vmid
                )));
            }
            if !is_drive_key(&t.boot_disk)
                || t.boot_disk.starts_with("unused")
                || t.boot_disk == "ide2"
            {
                return Err(ClusterError::Invalid(format!(
                    "template {}: boot_disk '{}' is not a disk slot (scsiN, virtioN, sataN, ideN other than ide2)",
                    t.vmid, t.boot_disk
                )));
            }
            if self.bridge_on(&t.bridge, &t.node).is_none() {
                return Err(ClusterError::Invalid(format!(
                    "template {}: bridge '{}' does not exist on node '{}'",
                    t.vmid, t.bridge, t.node
                )));
            }
            if !self.nodes.contains(&t.node) {
                return Err(ClusterError::Invalid(format!(
                    "template {}: unknown node '{}'",
                    t.vmid, t.node
                )));
            }
            if self.storage_on(&t.storage, &t.node).is_none() {
                return Err(ClusterError::Invalid(format!(
                    "template {}: storage '{}' is not available on node '{}'",
                    t.vmid, t.storage, t.node
                )));
            }
        }
        Ok(())
    }

    /// The bridge (or VNet) `name` if it exists on `node`.
    pub fn bridge_on(&self, name: &str, node: &str) -> Option<&BridgeDesc> {
        self.bridges.iter().find(|b| {
            b.name == name
                && b.nodes
                    .as_ref()
                    .is_none_or(|ns| ns.iter().any(|n| n == node))
        })
    }

    /// The storage `id` if it is available on `node`.
    pub fn storage_on(&self, id: &str, node: &str) -> Option<&StorageDesc> {
        self.storages.iter().find(|s| {
            s.id == id
                && s.nodes
                    .as_ref()
                    .is_none_or(|ns| ns.iter().any(|n| n == node))
        })
    }
}

/// One VM (or template) in the simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vm {
    pub vmid: u32,
    pub node: String,
    /// The current config, every value a string as in the config file.
    pub config: BTreeMap<String, String>,
    /// Pending values (set on a running VM, applied at the next start).
    #[serde(default)]
    pub pending: BTreeMap<String, String>,
    #[serde(default)]
    pub pending_delete: BTreeSet<String>,
    #[serde(default)]
    pub running: bool,
    /// Simulated-clock milliseconds at which the VM was started (for the agent boot delay).
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// The cloud-init values baked into the current ISO.
    #[serde(default)]
    pub cloudinit_baked: BTreeMap<String, String>,
}

/// Keys that cloud-init reads (`cloudinit_pending_properties`).
pub const CLOUDINIT_KEYS: &[&str] = &[
    "ciuser",
    "cipassword",
    "sshkeys",
    "nameserver",
    "searchdomain",
    "cicustom",
    "citype",
    "ciupgrade",
    "name",
];

/// Whether `key` is a cloud-init property (including `ipconfigN` and `netN`).
pub fn is_cloudinit_key(key: &str) -> bool {
    CLOUDINIT_KEYS.contains(&key) || indexed(key, "ipconfig") || indexed(key, "net")
}

/// Whether `key` is `<base><digits>`.
pub fn indexed(key: &str, base: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `key` names a drive (`scsi0`, `ide2`, `efidisk0`, `unused3`, …).
pub fn is_drive_key(key: &str) -> bool {
    [
        "ide", "sata", "scsi", "virtio", "unused", "efidisk", "tpmstate",
    ]
    .iter()
    .any(|b| indexed(key, b))
}

impl Vm {
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }
    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|v| v == "1")
    }
    pub fn name(&self) -> String {
        self.config
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM{}", self.vmid))
    }

    /// The config file text this VM would have (current section, then `[PENDING]`).
    pub fn serialize(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.config {
            s.push_str(&format!("{k}: {v}\n"));
        }
        if !self.pending.is_empty() || !self.pending_delete.is_empty() {
            s.push_str("\n[PENDING]\n");
            if !self.pending_delete.is_empty() {
                let d: Vec<&str> = self.pending_delete.iter().map(String::as_str).collect();
                s.push_str(&format!("delete: {}\n", d.join(",")));
            }
            for (k, v) in &self.pending {
                s.push_str(&format!("{k}: {v}\n"));
            }
        }
        s
    }

    /// SHA-1 of the serialized config; changes on every write.
    pub fn digest(&self) -> String {
        use sha1::{Digest, Sha1};
        hex::encode(Sha1::digest(self.serialize().as_bytes()))
    }

    /// The config with pending values applied (what GET config shows by default).
    pub fn pending_view(&self) -> BTreeMap<String, String> {
        let mut c = self.config.clone();
        for k in &self.pending_delete {
            c.remove(k);
        }
        for (k, v) in &self.pending {
            c.insert(k.clone(), v.clone());
        }
        c
    }

    /// Apply pending values to the current config (at start).
    pub fn apply_pending(&mut self) {
        self.config = self.pending_view();
        self.pending.clear();
        self.pending_delete.clear();
    }

    /// Drives of this VM: (key, volume id, size in bytes).
    pub fn drives(&self) -> Vec<(String, String, u64)> {
        self.config
            .iter()
            .filter(|(k, _)| is_drive_key(k))
            .filter_map(|(k, v)| {
                let file = drive_file(v)?;
                let size = drive_size(v).unwrap_or(0);
                Some((k.clone(), file, size))
            })
            .collect()
    }

    /// Cloud-init values as they stand in the current config.
    pub fn cloudinit_values(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .filter(|(k, _)| is_cloudinit_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The `file` of a drive spec (`local-lvm:vm-100-disk-0,size=32G` → `local-lvm:vm-100-disk-0`).
pub fn drive_file(spec: &str) -> Option<String> {
    spec.split(',').find_map(|p| match p.split_once('=') {
        None => Some(p.to_string()),
        Some(("file", v)) => Some(v.to_string()),
        _ => None,
    })
}

/// The `size=` of a drive spec, in bytes.
pub fn drive_size(spec: &str) -> Option<u64> {
    spec.split(',')
        .find_map(|p| p.strip_prefix("size="))
        .and_then(parse_size)
}

/// Replace (or add) `size=` in a drive spec.
pub fn with_drive_size(spec: &str, bytes: u64) -> String {
    let mut parts: Vec<String> = spec
        .split(',')
        .filter(|p| !p.starts_with("size="))
        .map(str::to_string)
        .collect();
    parts.push(format!("size={}", format_size(bytes)));
    parts.join(",")
}

/// Parse `32G`, `512M`, `1.5T`, `1024` (bytes) into bytes (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some((v * mult as f64) as u64)
}

/// Format bytes as PVE does (`format_size`): the largest exact unit.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

/// The whole mutable cluster state (what `--state file.json` persists).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimState {
    pub cluster: ClusterDescription,
    pub vms: BTreeMap<u32, Vm>,
    /// Snippet files per storage instance (`<storage>` when shared, `<storage>@<node>`
    /// otherwise): file name → content. Written over node SSH (see `sim::snippets`).
    #[serde(default)]
    pub snippets: BTreeMap<String, BTreeMap<String, String>>,
    /// The `cicustom` file contents baked into each VM's cloud-init drive at its last start
    /// or regenerate (`user`/`network`/`meta` → content).
    #[serde(default)]
    pub cloudinit_custom: BTreeMap<u32, BTreeMap<String, String>>,
}

/// One storage instance as seen on a node, with usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageUsage {
    pub storage: String,
    pub node: String,
    pub kind: String,
    pub shared: bool,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

impl SimState {
    /// A fresh state from a description: templates become VMs with full configs.
    pub fn from_cluster(cluster: ClusterDescription) -> Self {
        let mut vms = BTreeMap::new();
        for (i, t) in cluster.templates.iter().enumerate() {
            let mut c = BTreeMap::new();
            let set = |c: &mut BTreeMap<String, String>, k: &str, v: String| {
                c.insert(k.to_string(), v);
            };
            set(&mut c, "name", t.name.clone());
            set(&mut c, "cores", t.cores.to_string());
            set(&mut c, "sockets", "1".into());
            set(&mut c, "memory", t.memory_mb.to_string());
            set(&mut c, "agent", "1".into());
            set(&mut c, "ostype", "l26".into());
            set(&mut c, "scsihw", "virtio-scsi-single".into());
            set(&mut c, "boot", format!("order={};ide2;net0", t.boot_disk));
            set(&mut c, "serial0", "socket".into());
            set(&mut c, "vga", "serial0".into());
            set(&mut c, "template", "1".into());
            set(
                &mut c,
                &t.boot_disk,
                format!("{}:base-{}-disk-0,size={}G", t.storage, t.vmid, t.disk_gb),
            );
            set(
                &mut c,
                "ide2",
                format!("{}:vm-{}-cloudinit,media=cdrom", t.storage, t.vmid),
            );
            set(
                &mut c,
                "net0",
                format!(
                    "virtio=BC:24:11:{:02X}:{:02X}:{:02X},bridge={}",
                    0xF0,
                    (i >> 8) & 0xff,
                    i & 0xff,
                    t.bridge
                ),
            );
            set(
                &mut c,
                "smbios1",
                format!("uuid=00000000-0000-4000-8000-{:012x}", t.vmid),
            );
            let vm = Vm {
                vmid: t.vmid,
                node: t.node.clone(),
                config: c,
                pending: BTreeMap::new(),
                pending_delete: BTreeSet::new(),
                running: false,
                started_at_ms: None,
                cloudinit_baked: BTreeMap::new(),
            };
            vms.insert(t.vmid, vm);
        }
        Self {
            cluster,
            vms,
            snippets: BTreeMap::new(),
            cloudinit_custom: BTreeMap::new(),
        }
    }

    /// Every MAC a VM's `netN` holds (current and pending), upper-case.
    pub fn macs_in_use(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for vm in self.vms.values() {
            for (k, v) in vm.config.iter().chain(vm.pending.iter()) {
                if indexed(k, "net") {
                    if let Some(m) = super::cloudinit::net_mac(v) {
                        out.insert(m.to_ascii_uppercase());
                    }
                }
            }
        }
        out
    }

    /// Storage instances with their usage. Linked-clone volumes (`base-…/vm-…`) use no space.
    pub fn storage_usage(&self) -> Vec<StorageUsage> {
        let mut out = Vec::new();
        for s in &self.cluster.storages {
            let nodes: Vec<String> = s
                .nodes
                .clone()
                .unwrap_or_else(|| self.cluster.nodes.clone());
            for node in nodes {
                let used = self
                    .volumes()
                    .iter()
                    .filter(|v| v.storage == s.id && (s.shared || v.node == node) && !v.linked)
                    .map(|v| v.size)
                    .sum();
                out.push(StorageUsage {
                    storage: s.id.clone(),
                    node,
                    kind: s.kind.clone(),
                    shared: s.shared,
                    total_bytes: s.total_gb << 30,
                    used_bytes: used,
                });
            }
        }
        out
    }

    /// Every volume referenced by a VM config.
    pub fn volumes(&self) -> Vec<Volume> {
        let mut out = Vec::new();
        for vm in self.vms.values() {
            for (_, volid, size) in vm.drives() {
                let Some((storage, name)) = volid.split_once(':') else {
                    continue;
                };
                let size = if name.ends_with("-cloudinit") {
                    4 << 20
                } else {
                    size
                };
                out.push(Volume {
                    volid: volid.clone(),
                    storage: storage.to_string(),
                    node: vm.node.clone(),
                    vmid: vm.vmid,
                    size,
                    linked: name.contains('/'),
                });
            }
        }
        out
    }
}

/// A volume on a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub volid: String,
    pub storage: String,
    pub node: String,
    pub vmid: u32,
    pub size: u64,
    pub linked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster_has_the_documented_templates() {
        let s = SimState::from_cluster(ClusterDescription::default_cluster());
        let t = &s.vms[&9000];
        assert_eq!(t.node, "pve1");
        assert_eq!(t.config["ide2"], "local-lvm:vm-9000-cloudinit,media=cdrom");
        assert_eq!(
            t.drives().iter().find(|d| d.0 == "scsi0").unwrap().2,
            32 << 30
        );
        assert_eq!(s.vms[&9001].node, "pve2");
    }

    #[test]
    fn digest_changes_with_every_value() {
        let mut s = SimState::from_cluster(ClusterDescription::default_cluster());
        let vm = s.vms.get_mut(&9000).unwrap();
        let d1 = vm.digest();
        vm.config.insert("cores".into(), "4".into());
        assert_ne!(d1, vm.digest());
    }

    #[test]
    fn sizes_round_trip_as_pve_formats_them() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(format_size(32 << 30), "32G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(parse_size("20"), Some(20));
        assert_eq!(
            with_drive_size("local-lvm:vm-1-disk-0,iothread=1,size=32G", 40 << 30),
            "local-lvm:vm-1-disk-0,iothread=1,size=40G"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn format_size_round_trips_through_parse_size(b in 0u64..(1u64 << 50)) {
            proptest::prop_assert_eq!(parse_size(&format_size(b)), Some(b));
        }

        #[test]
        fn parse_size_never_panics(s in ".{0,12}") {
            let _ = parse_size(&s);
        }
    }

    #[test]
    fn yaml_with_unknown_node_is_refused() {
        let y = "nodes: [a]\nstorages: []\ntemplates:\n  - {vmid: 9000, name: t, node: b, storage: s, disk_gb: 1}\n";
        assert!(ClusterDescription::from_yaml(y).is_err());
    }
}
