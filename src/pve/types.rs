//! Typed request parameters and responses of the Proxmox endpoints the engine uses: VM config,
//! status, cluster resources, tasks, version, guest-agent interfaces, storage content, and the
//! clone / config-update builders. Lenient on read, strict on write. Knows nothing about HyOps.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::Params;
use super::lenient::{self, value_bool, value_string, value_u64};
use super::propstr::{
    Agent, CiCustom, DiskSlot, DiskSpec, IpConfig, Memory, NetDevice, PropError, Tags,
};
use super::sshkeys::{decode_sshkeys, encode_sshkeys};
use super::upid::Upid;
use crate::secret::Secret;

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    /// Full pve-manager version, e.g. `9.2.11`.
    #[serde(deserialize_with = "de_string")]
    pub version: String,
    /// Release, e.g. `9.2`.
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    pub release: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Git commit of pve-manager.
    pub repoid: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Default console viewer.
    pub console: Option<String>,
}

impl VersionInfo {
    /// The major version number (`9` for `9.2.11`), when it parses.
    pub fn major(&self) -> Option<u32> {
        self.version.split('.').next()?.parse().ok()
    }
}

fn de_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    value_string(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a string, got {v}")))
}

/// The `type` filter of `GET /cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// `vm`: QEMU and LXC guests.
    Vm,
    /// `storage`.
    Storage,
    /// `node`.
    Node,
    /// `sdn`.
    Sdn,
}

impl ResourceType {
    /// Wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vm => "vm",
            ResourceType::Storage => "storage",
            ResourceType::Node => "node",
            ResourceType::Sdn => "sdn",
        }
    }
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClusterResource {
    /// `qemu/100`, `storage/pve1/local`, `node/pve1`, …
    #[serde(deserialize_with = "de_string")]
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `pool`, `sdn`, …
    #[serde(rename = "type", deserialize_with = "de_string")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Node name.
    pub node: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_u32")]
    /// VMID.
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Name.
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Status (`running`, `stopped`, `online`, `available`, …).
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_bool")]
    /// True for templates.
    pub template: bool,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// The config `lock:` value, if any.
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Raw tag list.
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Resource pool.
    pub pool: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// HA state, when HA-managed.
    pub hastate: Option<String>,
    /// Storage id for `type=storage`.
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    pub storage: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_f64")]
    /// CPUs.
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Memory in bytes.
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Disk size in bytes.
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Disk usage in bytes.
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Uptime in seconds.
    pub uptime: Option<u64>,
}

impl ClusterResource {
    /// True for QEMU VMs (`type == "qemu"`).
    pub fn is_qemu(&self) -> bool {
        self.kind == "qemu"
    }
    /// The tag list (empty when none).
    pub fn tag_list(&self) -> Tags {
        self.tags
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or_default()
    }
}

/// A VM configuration from `GET /nodes/{node}/qemu/{vmid}/config`: the known keys typed, every
/// key also kept raw. Values that fail to parse are listed in `unparsed` (the raw value stays in
/// `raw`), so a config read never fails on one odd key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmConfig {
    /// SHA1 digest of the config (send back as `digest` to detect concurrent changes).
    pub digest: Option<String>,
    /// The config `lock:` value, if any.
    pub lock: Option<String>,
    /// True for templates.
    pub template: bool,
    /// Name.
    pub name: Option<String>,
    /// Free-text description (where ownership markers live).
    pub description: Option<String>,
    /// Raw tag list.
    pub tags: Option<Tags>,
    /// Cores per socket.
    pub cores: Option<u32>,
    /// CPU sockets.
    pub sockets: Option<u32>,
    /// CPU model property string.
    pub cpu: Option<String>,
    /// Memory (MiB).
    pub memory: Option<Memory>,
    /// Balloon target (MiB; 0 disables).
    pub balloon: Option<u64>,
    /// Guest agent settings.
    pub agent: Option<Agent>,
    /// Guest OS type (`l26`, …).
    pub ostype: Option<String>,
    /// Start at node boot.
    pub onboot: Option<bool>,
    /// Cloud-init user.
    pub ciuser: Option<String>,
    /// Decoded public keys, one per entry.
    pub sshkeys: Vec<String>,
    /// Cloud-init DNS servers.
    pub nameserver: Option<String>,
    /// Cloud-init DNS search domain.
    pub searchdomain: Option<String>,
    /// Cloud-init custom snippets.
    pub cicustom: Option<CiCustom>,
    /// `netN` by N.
    pub nets: BTreeMap<u8, NetDevice>,
    /// `ipconfigN` by N.
    pub ipconfigs: BTreeMap<u8, IpConfig>,
    /// `scsiN`/`virtioN`/`ideN`/`sataN`.
    pub disks: BTreeMap<DiskSlot, DiskSpec>,
    /// Every key as a string (numbers printed, booleans as 0/1).
    pub raw: BTreeMap<String, String>,
    /// Keys whose value did not parse, with the reason.
    pub unparsed: Vec<(String, PropError)>,
}

fn indexed(key: &str, prefix: &str) -> Option<u8> {
    let rest = key.strip_prefix(prefix)?;
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

impl VmConfig {
    /// Build from the `data` object of `GET …/config`.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        let mut c = VmConfig::default();
        for (k, v) in map {
            if let Some(s) = value_string(v) {
                c.raw.insert(k.clone(), s);
            } else if !v.is_null() {
                c.raw.insert(k.clone(), v.to_string());
            }
        }
        let raw = c.raw.clone();
        let s = |k: &str| raw.get(k).cloned().filter(|v| !v.is_empty());
        c.digest = s("digest");
        c.lock = s("lock");
        c.template = map.get("template").and_then(value_bool).unwrap_or(false);
        c.name = s("name");
        c.description = s("description");
        c.tags = s("tags").and_then(|t| t.parse().ok());
        c.cores = map
            .get("cores")
            .and_then(value_u64)
            .and_then(|n| u32::try_from(n).ok());
        c.sockets = map
            .get("sockets")
            .and_then(value_u64)
            .and_then(|n| u32::try_from(n).ok());
        c.cpu = s("cpu");
        c.balloon = map.get("balloon").and_then(value_u64);
        c.ostype = s("ostype");
        c.onboot = map.get("onboot").and_then(value_bool);
        c.ciuser = s("ciuser");
        c.sshkeys = s("sshkeys").map(|v| decode_sshkeys(&v)).unwrap_or_default();
        c.nameserver = s("nameserver");
        c.searchdomain = s("searchdomain");
        let mut unparsed = Vec::new();
        let mut note = |k: &str, e: PropError| unparsed.push((k.to_string(), e));
        if let Some(v) = s("memory") {
            match v.parse() {
                Ok(m) => c.memory = Some(m),
                Err(e) => note("memory", e),
            }
        }
        if let Some(v) = s("agent") {
            match v.parse() {
                Ok(a) => c.agent = Some(a),
                Err(e) => note("agent", e),
            }
        }
        if let Some(v) = s("cicustom") {
            match v.parse() {
                Ok(a) => c.cicustom = Some(a),
                Err(e) => note("cicustom", e),
            }
        }
        for (k, v) in &raw {
            if let Some(i) = indexed(k, "net") {
                match v.parse() {
                    Ok(n) => {
                        c.nets.insert(i, n);
                    }
                    Err(e) => note(k, e),
                }
            } else if let Some(i) = indexed(k, "ipconfig") {
                match v.parse() {
                    Ok(n) => {
                        c.ipconfigs.insert(i, n);
                    }
                    Err(e) => note(k, e),
                }
            } else if let Ok(slot) = k.parse::<DiskSlot>() {
                match v.parse() {
                    Ok(d) => {
                        c.disks.insert(slot, d);
                    }
                    Err(e) => note(k, e),
                }
            }
        }
        c.unparsed = unparsed;
        c
    }

    /// True when `description` contains `marker`.
    pub fn description_contains(&self, marker: &str) -> bool {
        !marker.is_empty()
            && self
                .description
                .as_deref()
                .is_some_and(|d| d.contains(marker))
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VmStatus {
    /// `running` or `stopped`.
    #[serde(deserialize_with = "de_string")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// QEMU status (`running`, `paused`, `prelaunch`, …).
    pub qmpstatus: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// The config `lock:` value, if any.
    pub lock: Option<String>,
    /// Guest agent enabled in the config.
    #[serde(default, deserialize_with = "lenient::de_bool")]
    pub agent: bool,
    #[serde(default, deserialize_with = "lenient::de_bool")]
    /// True for templates.
    pub template: bool,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Name.
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_u32")]
    /// QEMU process id.
    pub pid: Option<u32>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Uptime in seconds.
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Memory in bytes.
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_f64")]
    /// Usable CPUs.
    pub cpus: Option<f64>,
    /// HA state object as returned.
    #[serde(default)]
    pub ha: Value,
}

impl VmStatus {
    /// True when `status == "running"`.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    #[serde(deserialize_with = "de_string")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// `OK`, `WARNINGS: N` or the error text, once stopped.
    pub exitstatus: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::de_opt_string")]
    /// Task type (`qmclone`, …).
    pub task_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Task id.
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// User that started the task.
    pub user: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Node name.
    pub node: Option<String>,
}

impl TaskStatus {
    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskLogLine {
    #[serde(deserialize_with = "lenient::de_u64")]
    /// Line number (1-based).
    pub n: u64,
    #[serde(deserialize_with = "de_string")]
    /// Line text.
    pub t: String,
}

/// A page of a task log plus the total line count (`total` in the envelope, when sent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskLog {
    /// The lines.
    pub lines: Vec<TaskLogLine>,
    /// Total number of lines.
    pub total: Option<u64>,
}

/// How [`super::PveClient::wait_task`] polls.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// Give up after this long (`TaskTimeout`).
    pub timeout: Duration,
    /// First poll interval; doubles up to `max_poll`.
    pub initial_poll: Duration,
    /// Longest poll interval.
    pub max_poll: Duration,
    /// How long a 400 "no such task" right after start is tolerated.
    pub not_visible_grace: Duration,
    /// Log lines kept for a failure or warning report.
    pub log_tail: u64,
}

impl WaitOptions {
    /// The poll schedule as the one retry policy: `initial_poll` doubling to `max_poll`, no
    /// jitter, for `timeout`, no attempt limit.
    pub fn policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            initial: self.initial_poll,
            max_interval: self.max_poll.max(std::time::Duration::from_millis(1)),
            multiplier: 2.0,
            jitter: 0.0,
            max_elapsed: self.timeout,
            max_attempts: 0,
        }
    }
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(1800),
            initial_poll: Duration::from_millis(200),
            max_poll: Duration::from_secs(2),
            not_visible_grace: Duration::from_secs(5),
            log_tail: 20,
        }
    }
}

/// A finished, successful task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task.
    pub upid: Upid,
    /// `OK` or `WARNINGS: N`.
    pub exitstatus: String,
    /// N of `WARNINGS: N`, 0 for `OK`.
    pub warnings: u32,
    /// The `WARN:` lines of the log tail when there were warnings.
    pub warning_lines: Vec<String>,
    /// Status polls made.
    pub polls: u32,
}

/// A disk format for full clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// `raw`.
    Raw,
    /// `qcow2`.
    Qcow2,
    /// `vmdk`.
    Vmdk,
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
        })
    }
}

/// Parameters of `POST /nodes/{node}/qemu/{vmid}/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloneParams {
    /// Target VMID (100–999999999). Ignored by `allocate_vmid_and_clone`, which picks it.
    pub newid: u32,
    /// Name.
    pub name: Option<String>,
    /// Free-text description (where ownership markers live).
    pub description: Option<String>,
    /// Full clone (default on the server: full for VMs, linked for templates).
    pub full: Option<bool>,
    /// Target storage (full clones only).
    pub storage: Option<String>,
    /// Disk format (full clones only).
    pub format: Option<DiskFormat>,
    /// Target node (all disks must be on shared storage).
    pub target: Option<String>,
    /// Resource pool.
    pub pool: Option<String>,
}

impl CloneParams {
    /// Wire parameters; rejects combinations Proxmox refuses (storage/format on linked clones).
    pub fn to_params(&self) -> Result<Params, String> {
        if !(100..=999_999_999).contains(&self.newid) {
            return Err(format!("newid {} is outside 100..=999999999", self.newid));
        }
        if self.full == Some(false) && (self.storage.is_some() || self.format.is_some()) {
            return Err("storage/format are only allowed for full clones".into());
        }
        Ok(Params::new()
            .set("newid", self.newid)
            .opt("name", self.name.as_ref())
            .opt("description", self.description.as_ref())
            .opt_flag("full", self.full)
            .opt("storage", self.storage.as_ref())
            .opt("format", self.format)
            .opt("target", self.target.as_ref())
            .opt("pool", self.pool.as_ref()))
    }
}

/// A typed config change for `POST`/`PUT …/config`: keys to set, keys to delete, optional
/// digest. Values are printed canonically; `sshkeys` is percent-encoded here (the form body
/// encodes it again). `Debug` never shows `cipassword`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigUpdate {
    set: Params,
    cipassword: Option<Secret>,
    delete: Vec<String>,
    digest: Option<String>,
}

impl ConfigUpdate {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }
    fn put(mut self, key: &str, value: String) -> Self {
        self.delete.retain(|k| k != key);
        self.set.put(key, value);
        self
    }
    /// Set `cores`.
    pub fn cores(self, n: u32) -> Self {
        self.put("cores", n.to_string())
    }
    /// Set `sockets`.
    pub fn sockets(self, n: u32) -> Self {
        self.put("sockets", n.to_string())
    }
    /// Set `cpu`.
    pub fn cpu(self, model: &str) -> Self {
        self.put("cpu", model.to_string())
    }
    /// Set `memory`.
    pub fn memory(self, m: &Memory) -> Self {
        self.put("memory", m.to_string())
    }
    /// Set `balloon`.
    pub fn balloon(self, mib: u64) -> Self {
        self.put("balloon", mib.to_string())
    }
    /// Set `agent`.
    pub fn agent(self, a: &Agent) -> Self {
        self.put("agent", a.to_string())
    }
    /// Set `name`.
    pub fn name(self, name: &str) -> Self {
        self.put("name", name.to_string())
    }
    /// Set `description`.
    pub fn description(self, d: &str) -> Self {
        self.put("description", d.to_string())
    }
    /// Set `tags`.
    pub fn tags(self, t: &Tags) -> Self {
        self.put("tags", t.to_string())
    }
    /// Set `onboot`.
    pub fn onboot(self, on: bool) -> Self {
        self.put("onboot", if on { "1" } else { "0" }.to_string())
    }
    /// Set `ciuser`.
    pub fn ciuser(self, user: &str) -> Self {
        self.put("ciuser", user.to_string())
    }
    /// Cloud-init password (kept as a [`Secret`]).
    pub fn cipassword(mut self, pw: Secret) -> Self {
        self.delete.retain(|k| k != "cipassword");
        self.cipassword = Some(pw);
        self
    }
    /// Public keys; percent-encoded per the `urlencoded` format.
    pub fn sshkeys(self, keys: &[String]) -> Self {
        self.put("sshkeys", encode_sshkeys(keys))
    }
    /// Set `nameserver`.
    pub fn nameserver(self, ns: &str) -> Self {
        self.put("nameserver", ns.to_string())
    }
    /// Set `searchdomain`.
    pub fn searchdomain(self, sd: &str) -> Self {
        self.put("searchdomain", sd.to_string())
    }
    /// Set `cicustom`.
    pub fn cicustom(self, c: &CiCustom) -> Self {
        self.put("cicustom", c.to_string())
    }
    /// Set `netN`.
    pub fn net(self, index: u8, n: &NetDevice) -> Self {
        self.put(&format!("net{index}"), n.to_string())
    }
    /// Set `ipconfigN`.
    pub fn ipconfig(self, index: u8, c: &IpConfig) -> Self {
        self.put(&format!("ipconfig{index}"), c.to_string())
    }
    /// Set `a disk slot (`scsiN`, …)`.
    pub fn disk(self, slot: DiskSlot, d: &DiskSpec) -> Self {
        self.put(&slot.to_string(), d.to_string())
    }
    /// Any other key, value already in wire form.
    pub fn raw(self, key: &str, value: &str) -> Self {
        self.put(key, value.to_string())
    }
    /// Delete `key` (drops a pending set of the same key).
    pub fn delete(mut self, key: &str) -> Self {
        self.set.0.retain(|(k, _)| k != key);
        if key == "cipassword" {
            self.cipassword = None;
        }
        if !self.delete.iter().any(|k| k == key) {
            self.delete.push(key.to_string());
        }
        self
    }
    /// Refuse the change if the config digest differs.
    pub fn digest(mut self, d: &str) -> Self {
        self.digest = Some(d.to_string());
        self
    }
    /// The keys this update sets or deletes (for journals), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.set.0.iter().map(|(k, _)| k.clone()).collect();
        if self.cipassword.is_some() {
            k.push("cipassword".into());
        }
        k.extend(self.delete.iter().cloned());
        k.sort();
        k
    }
    /// True when nothing is set or deleted.
    pub fn is_empty(&self) -> bool {
        self.set.0.is_empty() && self.delete.is_empty() && self.cipassword.is_none()
    }
    /// The wire parameters (contains the password when set; never log them).
    pub(crate) fn to_params(&self) -> Params {
        let mut p = self.set.clone();
        if let Some(pw) = &self.cipassword {
            p.put("cipassword", pw.expose().to_string());
        }
        if !self.delete.is_empty() {
            p.put("delete", self.delete.join(","));
        }
        if let Some(d) = &self.digest {
            p.put("digest", d.clone());
        }
        p
    }
    /// The value that will be sent for `key` (not for `cipassword`).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.set.get(key)
    }
}

/// One address reported by the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestIp {
    #[serde(rename = "ip-address")]
    /// The address.
    pub ip_address: IpAddr,
    #[serde(rename = "ip-address-type", default)]
    /// `ipv4` or `ipv6`.
    pub ip_address_type: String,
    #[serde(default, deserialize_with = "lenient::de_opt_u32")]
    /// Prefix length.
    pub prefix: Option<u32>,
}

/// One interface reported by `agent/network-get-interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestInterface {
    /// Name.
    pub name: String,
    #[serde(rename = "hardware-address", default)]
    /// MAC address (lower case), matches a `netN` MAC.
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    /// Addresses on the interface.
    pub ip_addresses: Vec<GuestIp>,
}

/// Usable IPv4 addresses of a guest: skips `lo`, docker/bridge/veth interfaces, loopback and
/// link-local (169.254/16) addresses. Returns `(interface, address, prefix)` in report order.
pub fn ipv4_addresses(ifaces: &[GuestInterface]) -> Vec<(String, Ipv4Addr, Option<u32>)> {
    let skip_iface = |n: &str| {
        n == "lo" || n.starts_with("docker") || n.starts_with("br-") || n.starts_with("veth")
    };
    ifaces
        .iter()
        .filter(|i| !skip_iface(&i.name))
        .flat_map(|i| {
            i.ip_addresses
                .iter()
                .filter_map(move |a| match a.ip_address {
                    IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => {
                        Some((i.name.clone(), v4, a.prefix))
                    }
                    _ => None,
                })
        })
        .collect()
}

/// `type` of `GET …/cloudinit/dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudInitKind {
    /// `user`.
    User,
    /// `network`.
    Network,
    /// `meta`.
    Meta,
}

impl CloudInitKind {
    /// Wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudInitKind::User => "user",
            CloudInitKind::Network => "network",
            CloudInitKind::Meta => "meta",
        }
    }
}

/// One volume of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StorageVolume {
    #[serde(deserialize_with = "de_string")]
    /// Volume id (`local:iso/x.iso`).
    pub volid: String,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Format (`raw`, `qcow2`, `iso`, …).
    pub format: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Content type (`images`, `iso`, `snippets`, …).
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Size in bytes.
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_u32")]
    /// VMID.
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Creation time (Unix).
    pub ctime: Option<u64>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Base volume of a linked clone.
    pub parent: Option<String>,
}

/// One row of `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeInfo {
    #[serde(deserialize_with = "de_string")]
    /// Node name.
    pub node: String,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// `online`, `offline` or `unknown`.
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64_hint")]
    /// "Number of available CPUs" (schema of `GET /nodes`): qemu-server's `$cpuinfo->{cpus}`,
    /// the most vCPUs (`sockets` × `cores`) a VM on this node may start with.
    pub maxcpu: Option<u64>,
}

impl NodeInfo {
    /// True unless the node reports itself offline or unknown.
    pub fn is_online(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "online")
    }
}

/// One row of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeStorage {
    #[serde(deserialize_with = "de_string")]
    /// Storage id.
    pub storage: String,
    #[serde(rename = "type", default, deserialize_with = "lenient::de_opt_string")]
    /// Plugin type (`lvmthin`, `rbd`, `dir`, …).
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Allowed content types, comma-separated (`images,rootdir`).
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_bool")]
    /// Shared between nodes.
    pub shared: bool,
    #[serde(default, deserialize_with = "lenient::de_opt_bool")]
    /// Accessible right now (absent on some releases: treated as active).
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "lenient::de_opt_bool")]
    /// Enabled (not `disable`d).
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::de_opt_u64")]
    /// Free bytes.
    pub avail: Option<u64>,
}

impl NodeStorage {
    /// True when `content` lists `kind` (`images`, `snippets`, …).
    pub fn has_content(&self, kind: &str) -> bool {
        self.content
            .as_deref()
            .is_some_and(|c| c.split([',', ';', ' ']).any(|x| x.trim() == kind))
    }
    /// Usable now: enabled and active unless the server says otherwise.
    pub fn usable(&self) -> bool {
        self.active != Some(false) && self.enabled != Some(false)
    }
}

/// One row of `GET /nodes/{node}/network`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeNetwork {
    #[serde(deserialize_with = "de_string")]
    /// Interface name (`vmbr0`, `vnetmgmt`).
    pub iface: String,
    #[serde(rename = "type", default, deserialize_with = "lenient::de_opt_string")]
    /// `bridge`, `OVSBridge`, `vnet`, `eth`, …
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_u32")]
    /// MTU, when configured.
    pub mtu: Option<u32>,
}

/// One row of `GET /nodes/{node}/capabilities/qemu/cpu`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CpuModel {
    #[serde(deserialize_with = "de_string")]
    /// Model name (`host`, `x86-64-v2-AES`, `custom-…`).
    pub name: String,
}

/// One row of `GET /nodes/{node}/qemu/{vmid}/pending`: the current `value` and the `pending`
/// one (absent when nothing is pending), or `delete` (1 or 2) for a pending removal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PendingEntry {
    #[serde(deserialize_with = "de_string")]
    /// Config key.
    pub key: String,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Value the VM runs with.
    pub value: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    /// Value applied at the next start.
    pub pending: Option<String>,
    #[serde(default, deserialize_with = "lenient::de_opt_u32")]
    /// 1 or 2 when the key is removed at the next start.
    pub delete: Option<u32>,
}

impl PendingEntry {
    /// True when something about this key waits for the next start.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.delete.unwrap_or(0) > 0
    }
}
