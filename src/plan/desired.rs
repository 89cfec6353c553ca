//! The desired model: what each logical VM should look like on Proxmox, derived from the
//! validated inputs, the resolved template and the target defaults (credentials). Pure data;
//! knows nothing about HTTP, state files or how changes are applied.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::inputs::model::{
    CloneMode, CloudInitMode, Ipv4Config, LogicalVmKey, MacAddr, ModuleInputs, PhysicalVmName,
    VmInputs,
};
use crate::plan::marker::OwnershipMarker;
use crate::plan::placement::CloneRoute;
pub use crate::plan::userdata::generated_user_data;
use crate::pve::encode_value;

/// Tag every VM created or adopted by hyops-pve carries (Proxmox tag charset).
pub const MANAGED_TAG: &str = "hyops-pve";
/// The boot disk assumed when the template's config could not be read.
pub const DEFAULT_BOOT_DISK: &str = "scsi0";

/// Defaults that come from the credentials file when the operator does not override them
/// (decided quirk: operator `node_name`, `datastore_id`, `snippets_datastore_id` and
/// `network_bridge` win over the credentials).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDefaults {
    pub node: String,
    pub datastore: String,
    pub snippets_datastore: String,
    pub network_bridge: String,
    pub ssh_username: String,
    pub ssh_public_key: Option<String>,
}

/// Where the template lives (`/cluster/resources`) and what the plan read from its config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub vmid: u32,
    pub node: String,
    /// The disk the template boots from (`boot` order, see [`crate::plan::template`]); the
    /// disk `disk_size_gb` applies to. Empty when unknown (a template that is missing in a
    /// deletion-only run).
    #[serde(default)]
    pub boot_disk: String,
    /// Size of the boot disk in bytes, when the config records it.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Storages holding the template's volumes (decides whether a clone can go straight to
    /// another node).
    #[serde(default)]
    pub storages: Vec<String>,
    /// The template's `sockets` (a clone keeps it; the engine sets only `cores`), `None` when
    /// the config does not set it (Proxmox's default 1). A VM starts with `sockets` × `cores`
    /// vCPUs.
    #[serde(default)]
    pub sockets: Option<u32>,
}

/// How the generated cloud-init user-data reaches the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudInitDelivery {
    /// `ciuser`, `sshkeys`, `ipconfigN`, `nameserver` on the VM config
    /// (`cloud_init_mode: native`).
    NativeKeys,
    /// As upstream: the user-data (and any network/meta override) as snippet files on the
    /// snippets storage, attached with `cicustom`, plus the native keys. The files are
    /// uploaded over node SSH before the config write (see [`crate::ssh::snippets`]).
    Snippets,
    /// Windows guests: no cloud-init at all.
    None,
}

/// A NIC whose address NetBox hands out at apply (IPAM mode, `plan` only): the static pool
/// it comes from and the gateway NIC 0 gets. A plan holding one is never executed; apply
/// allocates first and plans with the address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingIpam {
    /// `10.10.0.2-10.10.0.119`.
    pub range: String,
    pub gateway: Option<Ipv4Addr>,
}

/// Which `cicustom` part a snippet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnippetKind {
    User,
    Network,
    Meta,
}

impl SnippetKind {
    /// The `cicustom` key and the file-name part.
    pub fn as_str(self) -> &'static str {
        match self {
            SnippetKind::User => "user",
            SnippetKind::Network => "network",
            SnippetKind::Meta => "meta",
        }
    }
}

/// One snippet file the VM's `cicustom` points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnippetFile {
    pub kind: SnippetKind,
    /// The snippets storage (`snippets_datastore_id` or the credentials' `storage_snippets`).
    pub storage: String,
    /// `<physical>-cloud-init-<kind>-<sha256[..12]>.yaml`.
    pub file: String,
    pub content: String,
}

impl SnippetFile {
    /// `<storage>:snippets/<file>`.
    pub fn volume_id(&self) -> String {
        format!("{}:snippets/{}", self.storage, self.file)
    }
}

/// The content-addressed snippet file name: upstream's `<physical>-cloud-init-<kind>` stem
/// (contract §2.5) plus the first 12 hex digits of the content's SHA-256, so a changed
/// content is a changed `cicustom` (the plan shows it and cloud-init is regenerated in place)
/// and the same content is the same file (nothing to write).
pub fn snippet_file_name(physical: &str, kind: SnippetKind, content: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(content.as_bytes()));
    format!("{physical}-cloud-init-{}-{}.yaml", kind.as_str(), &h[..12])
}

/// Whether `file` is one of this VM's snippet files (any content): for stale-file cleanup.
pub fn is_snippet_file_of(physical: &str, file: &str) -> bool {
    let Some(rest) = file.strip_prefix(&format!("{physical}-cloud-init-")) else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(".yaml") else {
        return false;
    };
    match rest.split_once('-') {
        // content-addressed names
        Some((kind, hash)) => {
            ["user", "network", "meta"].contains(&kind)
                && hash.len() == 12
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
        }
        // upstream's (Terraform-created) names
        None => ["user", "network", "meta"].contains(&rest),
    }
}

/// One desired NIC (`netN` + `ipconfigN`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredNic {
    pub index: usize,
    pub model: String,
    pub bridge: String,
    pub vlan_tag: Option<u16>,
    /// `None`: Proxmox generates one and the engine keeps whatever it generated.
    pub mac: Option<MacAddr>,
    pub firewall: bool,
    pub mtu: Option<u16>,
    pub ipv4: Ipv4Config,
    /// Set when the address is still to be allocated by NetBox (plan only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_pending: Option<PendingIpam>,
}

/// The marker that starts a pending `ipconfigN` value (never sent to Proxmox).
pub const PENDING_IPCONFIG: &str = "ip=<allocate: first free in ";

impl DesiredNic {
    /// `ipconfigN` value: gateway only on NIC 0 and never with dhcp. A pending IPAM NIC
    /// shows `ip=<allocate: first free in <range>>[,gw=<gateway>]`.
    pub fn ipconfig_value(&self) -> String {
        self.ipconfig().to_string()
    }

    /// `renders_as(self.ipconfig(), text)`, without formatting the addresses (the planner
    /// asks this of every NIC of every managed VM); a pending allocation is formatted.
    pub fn ipconfig_is(&self, text: &str) -> bool {
        use crate::plan::props::{renders_as, strip_decimal, strip_ipv4};
        if self.ipam_pending.is_some() {
            return renders_as(self.ipconfig(), text);
        }
        match &self.ipv4 {
            Ipv4Config::Dhcp => text == "ip=dhcp",
            Ipv4Config::Static { address, gateway } => {
                let Some(rest) = text
                    .strip_prefix("ip=")
                    .and_then(|r| strip_ipv4(r, address.addr()))
                    .and_then(|r| r.strip_prefix('/'))
                    .and_then(|r| strip_decimal(r, address.prefix_len().into()))
                else {
                    return false;
                };
                match gateway {
                    Some(gw) if self.index == 0 => rest
                        .strip_prefix(",gw=")
                        .and_then(|r| strip_ipv4(r, *gw))
                        .is_some_and(str::is_empty),
                    _ => rest.is_empty(),
                }
            }
        }
    }

    /// [`DesiredNic::ipconfig_value`], formatted where it is written.
    pub fn ipconfig(&self) -> impl fmt::Display + '_ {
        struct Ipconfig<'a>(&'a DesiredNic);
        impl fmt::Display for Ipconfig<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let nic = self.0;
                if let Some(p) = &nic.ipam_pending {
                    return match p.gateway {
                        Some(gw) if nic.index == 0 => {
                            write!(f, "{PENDING_IPCONFIG}{}>,gw={gw}", p.range)
                        }
                        _ => write!(f, "{PENDING_IPCONFIG}{}>", p.range),
                    };
                }
                match &nic.ipv4 {
                    Ipv4Config::Dhcp => f.write_str("ip=dhcp"),
                    Ipv4Config::Static { address, gateway } => match gateway {
                        Some(gw) if nic.index == 0 => write!(f, "ip={address},gw={gw}"),
                        _ => write!(f, "ip={address}"),
                    },
                }
            }
        }
        Ipconfig(self)
    }
}

/// Everything one VM should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVm {
    pub key: LogicalVmKey,
    pub physical_name: PhysicalVmName,
    pub node: String,
    pub template: TemplateRef,
    pub clone_mode: CloneMode,
    /// Target storage of a full clone (the effective datastore); linked clones stay on the
    /// template's storage.
    pub storage: String,
    pub requested_vmid: Option<u32>,
    pub cores: u32,
    pub cpu_type: String,
    pub memory_mb: u64,
    pub nics: Vec<DesiredNic>,
    pub nameservers: Vec<Ipv4Addr>,
    pub ciuser: String,
    pub sshkeys: Vec<String>,
    pub agent: bool,
    pub ostype: String,
    pub onboot: bool,
    /// Module tags + role + the managed tag, sorted and de-duplicated (Proxmox compares tags
    /// as a set and may reorder them).
    pub tags: Vec<String>,
    pub disk_size_gb: u64,
    pub cloud_init: CloudInitDelivery,
    /// Where snippet files go (`snippets_datastore_id` or the credentials default).
    #[serde(default)]
    pub snippets_storage: String,
    /// Generated user-data (contract §2.6), or the operator's per-VM override.
    pub user_data: Option<String>,
    pub network_data: Option<String>,
    pub meta_data: Option<String>,
    pub marker: OwnershipMarker,
    /// Inputs echoed into outputs (`cpu_cores`, `memory_mb`, `disk_gb`, `interfaces_configured`).
    pub role: String,
    /// How a new VM is made and placed (set by [`crate::plan::placement::place`]).
    #[serde(default)]
    pub route: CloneRoute,
    /// What to do when a running VM keeps changes pending (`inputs.restart_policy`).
    #[serde(default)]
    pub restart_policy: RestartPolicy,
}

/// `inputs.restart_policy` (engine extension): changes a running VM can only take at its
/// next start (cores, memory without memory hotplug, CPU type, …) are applied by restarting
/// it (`restart`, the default: shutdown with a timeout, then start), or left pending for
/// the operator's own maintenance window (`defer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    #[default]
    Restart,
    Defer,
}

impl DesiredVm {
    /// The disk `disk_size_gb` applies to: the template's boot disk.
    pub fn boot_disk(&self) -> &str {
        if self.template.boot_disk.is_empty() {
            DEFAULT_BOOT_DISK
        } else {
            &self.template.boot_disk
        }
    }
}

impl DesiredVm {
    /// The Proxmox config keys the engine owns, with their canonical values. The planner
    /// compares exactly these keys; any other key on the VM is left alone.
    pub fn owned_config(&self) -> BTreeMap<String, String> {
        self.owned_settings()
            .into_iter()
            .map(|s| (s.key().into_owned(), s.to_string()))
            .collect()
    }

    /// The keys of [`DesiredVm::owned_config`] with their values still typed, in the same
    /// (key) order: what the planner compares without rendering a string per key.
    pub fn owned_settings(&self) -> Vec<OwnedSetting<'_>> {
        // Pushed in key order (the fixed keys sort around the `ipconfigN` and `netN` groups
        // as written here), so nothing is sorted per VM.
        let cloud_init = self.cloud_init != CloudInitDelivery::None;
        // As upstream: a network-data override replaces the ipconfig and DNS keys.
        let network_override =
            self.cloud_init == CloudInitDelivery::Snippets && self.network_data.is_some();
        let mut out = Vec::with_capacity(15 + 2 * self.nics.len());
        out.push(OwnedSetting::Agent(self.agent));
        if cloud_init {
            if let Some(cc) = self.cicustom() {
                out.push(OwnedSetting::Cicustom(cc));
            }
            out.push(OwnedSetting::Ciuser(&self.ciuser));
        }
        out.push(OwnedSetting::Cores(self.cores));
        out.push(OwnedSetting::Cpu(&self.cpu_type));
        out.push(OwnedSetting::Description(&self.marker));
        if cloud_init && !network_override {
            push_nic_settings(&mut out, &self.nics, OwnedSetting::Ipconfig);
        }
        out.push(OwnedSetting::Memory(self.memory_mb));
        out.push(OwnedSetting::Name(&self.physical_name.0));
        if cloud_init && !self.nameservers.is_empty() && !network_override {
            out.push(OwnedSetting::Nameserver(&self.nameservers));
        }
        push_nic_settings(&mut out, &self.nics, OwnedSetting::Net);
        out.push(OwnedSetting::Onboot(self.onboot));
        out.push(OwnedSetting::Ostype(&self.ostype));
        if cloud_init && !self.sshkeys.is_empty() {
            out.push(OwnedSetting::Sshkeys(&self.sshkeys));
        }
        out.push(OwnedSetting::Tags(&self.tags));
        out
    }

    /// The snippet files this VM needs (empty unless delivered as snippets).
    pub fn snippet_files(&self) -> Vec<SnippetFile> {
        if self.cloud_init != CloudInitDelivery::Snippets {
            return Vec::new();
        }
        [
            (SnippetKind::User, &self.user_data),
            (SnippetKind::Network, &self.network_data),
            (SnippetKind::Meta, &self.meta_data),
        ]
        .into_iter()
        .filter_map(|(kind, content)| {
            let content = content.as_ref()?;
            Some(SnippetFile {
                kind,
                storage: self.snippets_storage.clone(),
                file: snippet_file_name(&self.physical_name.0, kind, content),
                content: content.clone(),
            })
        })
        .collect()
    }

    /// The `cicustom` value: `user=…[,network=…][,meta=…]` in that order.
    pub fn cicustom(&self) -> Option<String> {
        let parts: Vec<String> = self
            .snippet_files()
            .iter()
            .map(|f| format!("{}={}", f.kind.as_str(), f.volume_id()))
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// `netN` value. `keep_mac` is the MAC Proxmox already generated, so that rewriting a NIC
/// never changes its MAC unless the operator asked for one. The bridge went through
/// [`encode_value`] when the desired NIC was built, and every other part is typed.
pub fn net_value(nic: &DesiredNic, keep_mac: Option<&str>) -> String {
    NetValue { nic, keep_mac }.to_string()
}

/// [`net_value`], formatted where it is written.
#[derive(Clone, Copy, Debug)]
pub struct NetValue<'a> {
    pub nic: &'a DesiredNic,
    pub keep_mac: Option<&'a str>,
}

impl fmt::Display for NetValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nic = self.nic;
        match (nic.mac, self.keep_mac) {
            (Some(mac), _) => write!(f, "{}={}", nic.model, mac)?,
            (None, Some(mac)) => write!(f, "{}={}", nic.model, mac)?,
            (None, None) => f.write_str(&nic.model)?,
        }
        write!(f, ",bridge={}", nic.bridge)?;
        if nic.firewall {
            f.write_str(",firewall=1")?;
        }
        if let Some(mtu) = nic.mtu {
            write!(f, ",mtu={mtu}")?;
        }
        if let Some(tag) = nic.vlan_tag {
            write!(f, ",tag={tag}")?;
        }
        Ok(())
    }
}

/// Push one setting per NIC (`netN` or `ipconfigN`) in key order; a key given twice keeps
/// the later NIC's value, as a map would.
fn push_nic_settings<'a>(
    out: &mut Vec<OwnedSetting<'a>>,
    nics: &'a [DesiredNic],
    setting: fn(&'a DesiredNic) -> OwnedSetting<'a>,
) {
    // Indexes 0..9 in increasing order (every pool but a very wide VM): already key order.
    let in_order =
        nics.iter().all(|n| n.index < 10) && nics.windows(2).all(|w| w[0].index < w[1].index);
    if in_order {
        out.extend(nics.iter().map(setting));
        return;
    }
    let mut group: Vec<OwnedSetting<'a>> = nics.iter().map(setting).collect();
    // Stable: of two NICs with one index, the later stays later.
    group.sort_by(|a, b| a.key().cmp(&b.key()));
    // The later setting's value moves into the kept slot before the later slot is dropped.
    group.dedup_by(|later, kept| {
        let same = later.key() == kept.key();
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    out.append(&mut group);
}

/// One key the engine owns, its desired value kept typed and borrowed from the
/// [`DesiredVm`]. `Display` prints the canonical value [`DesiredVm::owned_config`] holds;
/// [`OwnedSetting::key`] is the Proxmox config key.
#[derive(Clone, Debug)]
pub enum OwnedSetting<'a> {
    Name(&'a str),
    Cores(u32),
    Cpu(&'a str),
    /// MiB.
    Memory(u64),
    Agent(bool),
    Ostype(&'a str),
    Onboot(bool),
    /// Sorted, de-duplicated tags (joined by `;`).
    Tags(&'a [String]),
    Description(&'a OwnershipMarker),
    /// `net<index>` without a MAC the operator did not ask for.
    Net(&'a DesiredNic),
    /// `ipconfig<index>`.
    Ipconfig(&'a DesiredNic),
    Cicustom(String),
    /// Joined by spaces.
    Nameserver(&'a [Ipv4Addr]),
    Ciuser(&'a str),
    /// One key a line.
    Sshkeys(&'a [String]),
}

impl OwnedSetting<'_> {
    /// The Proxmox config key.
    pub fn key(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            OwnedSetting::Name(_) => "name",
            OwnedSetting::Cores(_) => "cores",
            OwnedSetting::Cpu(_) => "cpu",
            OwnedSetting::Memory(_) => "memory",
            OwnedSetting::Agent(_) => "agent",
            OwnedSetting::Ostype(_) => "ostype",
            OwnedSetting::Onboot(_) => "onboot",
            OwnedSetting::Tags(_) => "tags",
            OwnedSetting::Description(_) => "description",
            OwnedSetting::Net(nic) => return indexed_key(IndexedKey::Net, nic.index),
            OwnedSetting::Ipconfig(nic) => return indexed_key(IndexedKey::Ipconfig, nic.index),
            OwnedSetting::Cicustom(_) => "cicustom",
            OwnedSetting::Nameserver(_) => "nameserver",
            OwnedSetting::Ciuser(_) => "ciuser",
            OwnedSetting::Sshkeys(_) => "sshkeys",
        })
    }
}

impl fmt::Display for OwnedSetting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// `items` with `sep` between them.
        fn joined<T: fmt::Display>(
            f: &mut fmt::Formatter<'_>,
            items: &[T],
            sep: &str,
        ) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        let flag = |b: bool| if b { "1" } else { "0" };
        match self {
            OwnedSetting::Name(s)
            | OwnedSetting::Cpu(s)
            | OwnedSetting::Ostype(s)
            | OwnedSetting::Ciuser(s) => f.write_str(s),
            OwnedSetting::Cicustom(s) => f.write_str(s),
            OwnedSetting::Cores(n) => write!(f, "{n}"),
            OwnedSetting::Memory(n) => write!(f, "{n}"),
            OwnedSetting::Agent(b) | OwnedSetting::Onboot(b) => f.write_str(flag(*b)),
            OwnedSetting::Tags(tags) => joined(f, tags, ";"),
            OwnedSetting::Description(m) => write!(f, "{}", m.description()),
            OwnedSetting::Net(nic) => write!(
                f,
                "{}",
                NetValue {
                    nic,
                    keep_mac: None
                }
            ),
            OwnedSetting::Ipconfig(nic) => write!(f, "{}", nic.ipconfig()),
            OwnedSetting::Nameserver(addrs) => joined(f, addrs, " "),
            OwnedSetting::Sshkeys(keys) => joined(f, keys, "\n"),
        }
    }
}

/// The config keys that carry a NIC's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexedKey {
    Net,
    Ipconfig,
}

/// `net<i>` / `ipconfig<i>`: a static string for the indexes Proxmox allows (0–31), so the
/// planner names a NIC's keys without allocating; a formatted one beyond.
pub fn indexed_key(kind: IndexedKey, i: usize) -> Cow<'static, str> {
    const NET: [&str; 32] = [
        "net0", "net1", "net2", "net3", "net4", "net5", "net6", "net7", "net8", "net9", "net10",
        "net11", "net12", "net13", "net14", "net15", "net16", "net17", "net18", "net19", "net20",
        "net21", "net22", "net23", "net24", "net25", "net26", "net27", "net28", "net29", "net30",
        "net31",
    ];
    const IPCONFIG: [&str; 32] = [
        "ipconfig0",
        "ipconfig1",
        "ipconfig2",
        "ipconfig3",
        "ipconfig4",
        "ipconfig5",
        "ipconfig6",
        "ipconfig7",
        "ipconfig8",
        "ipconfig9",
        "ipconfig10",
        "ipconfig11",
        "ipconfig12",
        "ipconfig13",
        "ipconfig14",
        "ipconfig15",
        "ipconfig16",
        "ipconfig17",
        "ipconfig18",
        "ipconfig19",
        "ipconfig20",
        "ipconfig21",
        "ipconfig22",
        "ipconfig23",
        "ipconfig24",
        "ipconfig25",
        "ipconfig26",
        "ipconfig27",
        "ipconfig28",
        "ipconfig29",
        "ipconfig30",
        "ipconfig31",
    ];
    let (table, prefix) = match kind {
        IndexedKey::Net => (&NET, "net"),
        IndexedKey::Ipconfig => (&IPCONFIG, "ipconfig"),
    };
    match table.get(i) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(format!("{prefix}{i}")),
    }
}

/// Errors building the desired model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    #[error("VM {key}: interfaces[{index}] has no address: addressing.mode=ipam needs the NetBox allocation to run before planning (internal error; run plan or apply again and report it if it persists)")]
    IpamNotAvailable { key: String, index: usize },
    #[error("VM {key}: {field} cannot be sent to Proxmox: {source}")]
    Encoding {
        key: String,
        field: String,
        #[source]
        source: crate::pve::PropError,
    },
}

/// IPAM NICs still to be allocated, by (logical key, 0-based NIC index).
pub type PendingAllocations = BTreeMap<(String, usize), PendingIpam>;

/// Build the desired VM for one input entry. `pending` names the IPAM NICs whose address
/// is allocated at apply (plan only).
pub fn desired_vm(
    inputs: &ModuleInputs,
    vm: &VmInputs,
    defaults: &TargetDefaults,
    template: &TemplateRef,
    marker: OwnershipMarker,
    pending: &PendingAllocations,
) -> Result<DesiredVm, DesiredError> {
    let node = vm
        .node_name
        .clone()
        .or_else(|| inputs.node_name.clone())
        .unwrap_or_else(|| defaults.node.clone());
    let storage = inputs
        .datastore_id
        .clone()
        .unwrap_or_else(|| defaults.datastore.clone());
    let route = CloneRoute {
        clone_node: template.node.clone(),
        target: (node != template.node).then(|| node.clone()),
        storage: (inputs.clone_mode == CloneMode::Full).then(|| storage.clone()),
        migrate: None,
    };
    let windows = inputs.is_windows();
    let mut nics = Vec::with_capacity(vm.interfaces.len());
    for (index, nic) in vm.interfaces.iter().enumerate() {
        let ipam_pending = pending.get(&(vm.key.0.clone(), index)).cloned();
        let ipv4 = match (&nic.ipv4, inputs.uses_ipam()) {
            // In IPAM mode `dhcp` is replaced by a reservation: without one, it is pending.
            _ if ipam_pending.is_some() => Ipv4Config::Dhcp,
            (Some(Ipv4Config::Dhcp) | None, true) => {
                return Err(DesiredError::IpamNotAvailable {
                    key: vm.key.0.clone(),
                    index: index + 1,
                })
            }
            (Some(cfg), _) => cfg.clone(),
            (None, false) => Ipv4Config::Dhcp,
        };
        let bridge =
            encode_value("bridge", &nic.bridge).map_err(|source| DesiredError::Encoding {
                key: vm.key.0.clone(),
                field: format!("interfaces[{}].bridge", index + 1),
                source,
            })?;
        nics.push(DesiredNic {
            index,
            model: nic.model.clone(),
            bridge,
            vlan_tag: nic.vlan_id,
            mac: nic.mac_address,
            firewall: nic.firewall,
            mtu: nic.mtu,
            ipv4,
            ipam_pending,
        });
    }
    let ciuser = inputs
        .ssh_username
        .clone()
        .unwrap_or_else(|| defaults.ssh_username.clone());
    let sshkeys: Vec<String> = if inputs.ssh_keys.is_empty() {
        defaults.ssh_public_key.iter().cloned().collect()
    } else {
        inputs.ssh_keys.clone()
    };
    let mut tags: Vec<String> = inputs
        .tags
        .iter()
        .chain(std::iter::once(&vm.role))
        .map(|t| t.to_ascii_lowercase())
        .collect();
    tags.push(MANAGED_TAG.to_string());
    tags.sort();
    tags.dedup();
    // `tags` is a `pve-tag-list`: a tag holding a separator would add tags.
    for t in &tags {
        crate::pve::formats::tag(t).map_err(|v| DesiredError::Encoding {
            key: vm.key.0.clone(),
            field: "tags".into(),
            source: crate::pve::PropError {
                kind: "tags",
                input: t.clone(),
                reason: v.to_string(),
            },
        })?;
    }
    let user_data = if windows {
        None
    } else {
        Some(generated_user_data(
            &vm.key.0,
            &inputs.dns_domain,
            &ciuser,
            &sshkeys,
            vm.cloud_init_user_data.as_deref(),
        ))
    };
    Ok(DesiredVm {
        key: vm.key.clone(),
        physical_name: vm.physical_name.clone(),
        node,
        template: template.clone(),
        clone_mode: inputs.clone_mode,
        storage,
        requested_vmid: vm.vm_id,
        cores: inputs.cpu_cores,
        cpu_type: encode_value("cputype", &inputs.cpu_type).map_err(|source| {
            DesiredError::Encoding {
                key: vm.key.0.clone(),
                field: "cpu_type".into(),
                source,
            }
        })?,
        memory_mb: inputs.memory_mb,
        nics,
        nameservers: inputs.dns_servers.clone(),
        ciuser,
        sshkeys,
        agent: inputs.guest_agent_enabled,
        ostype: inputs.os_type.clone(),
        onboot: inputs.on_boot,
        tags,
        disk_size_gb: inputs.disk_size_gb,
        cloud_init: match (windows, inputs.cloud_init_mode) {
            (true, _) => CloudInitDelivery::None,
            (false, CloudInitMode::Native) => CloudInitDelivery::NativeKeys,
            (false, CloudInitMode::Snippets) => CloudInitDelivery::Snippets,
        },
        snippets_storage: inputs
            .snippets_datastore_id
            .clone()
            .unwrap_or_else(|| defaults.snippets_datastore.clone()),
        user_data,
        network_data: vm.cloud_init_network_data.clone().filter(|_| !windows),
        meta_data: vm.cloud_init_meta_data.clone().filter(|_| !windows),
        route,
        restart_policy: if inputs.restart_policy.trim().eq_ignore_ascii_case("defer") {
            RestartPolicy::Defer
        } else {
            RestartPolicy::Restart
        },
        marker,
        role: vm.role.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `owned_config` as it was when each value was formatted into its own `String` (the
    /// reference the typed settings must reproduce byte for byte).
    fn owned_config_as_strings(vm: &DesiredVm) -> BTreeMap<String, String> {
        fn net(nic: &DesiredNic) -> String {
            let mut out = match nic.mac {
                Some(mac) => format!("{}={}", nic.model, mac),
                None => nic.model.clone(),
            };
            out.push_str(&format!(",bridge={}", nic.bridge));
            if nic.firewall {
                out.push_str(",firewall=1");
            }
            if let Some(mtu) = nic.mtu {
                out.push_str(&format!(",mtu={mtu}"));
            }
            if let Some(tag) = nic.vlan_tag {
                out.push_str(&format!(",tag={tag}"));
            }
            out
        }
        fn ipconfig(nic: &DesiredNic) -> String {
            if let Some(p) = &nic.ipam_pending {
                return match p.gateway {
                    Some(gw) if nic.index == 0 => {
                        format!("{PENDING_IPCONFIG}{}>,gw={gw}", p.range)
                    }
                    _ => format!("{PENDING_IPCONFIG}{}>", p.range),
                };
            }
            match &nic.ipv4 {
                Ipv4Config::Dhcp => "ip=dhcp".to_string(),
                Ipv4Config::Static { address, gateway } => match gateway {
                    Some(gw) if nic.index == 0 => format!("ip={address},gw={gw}"),
                    _ => format!("ip={address}"),
                },
            }
        }
        let mut cfg = BTreeMap::new();
        cfg.insert("name".into(), vm.physical_name.0.clone());
        cfg.insert("cores".into(), vm.cores.to_string());
        cfg.insert("cpu".into(), vm.cpu_type.clone());
        cfg.insert("memory".into(), vm.memory_mb.to_string());
        cfg.insert("agent".into(), if vm.agent { "1" } else { "0" }.into());
        cfg.insert("ostype".into(), vm.ostype.clone());
        cfg.insert("onboot".into(), if vm.onboot { "1" } else { "0" }.into());
        cfg.insert("tags".into(), vm.tags.join(";"));
        cfg.insert(
            "description".into(),
            format!(
                "Managed by hyops-pve (HybridOps platform-vm). Do not edit the marker line.\n{}",
                vm.marker.to_line()
            ),
        );
        for nic in &vm.nics {
            cfg.insert(format!("net{}", nic.index), net(nic));
        }
        if vm.cloud_init != CloudInitDelivery::None {
            let network_override =
                vm.cloud_init == CloudInitDelivery::Snippets && vm.network_data.is_some();
            if !network_override {
                for nic in &vm.nics {
                    cfg.insert(format!("ipconfig{}", nic.index), ipconfig(nic));
                }
            }
            if let Some(cc) = vm.cicustom() {
                cfg.insert("cicustom".into(), cc);
            }
            if !vm.nameservers.is_empty() && !network_override {
                let ns: Vec<String> = vm.nameservers.iter().map(|a| a.to_string()).collect();
                cfg.insert("nameserver".into(), ns.join(" "));
            }
            cfg.insert("ciuser".into(), vm.ciuser.clone());
            if !vm.sshkeys.is_empty() {
                cfg.insert("sshkeys".into(), vm.sshkeys.join("\n"));
            }
        }
        cfg
    }

    fn nic(index: usize) -> DesiredNic {
        DesiredNic {
            index,
            model: "virtio".into(),
            bridge: format!("vmbr{index}"),
            vlan_tag: (index % 2 == 1).then_some(10 + index as u16),
            mac: (index % 3 == 2).then_some(MacAddr([0xbc, 0x24, 0x11, 0, 0, index as u8])),
            firewall: index.is_multiple_of(2),
            mtu: (index % 4 == 3).then_some(9000),
            ipv4: if index.is_multiple_of(3) {
                Ipv4Config::Dhcp
            } else {
                Ipv4Config::Static {
                    address: format!("10.0.{index}.5/24").parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                }
            },
            ipam_pending: (index == 4).then(|| PendingIpam {
                range: "10.10.0.2-10.10.0.119".into(),
                gateway: Some("10.10.0.1".parse().unwrap()),
            }),
        }
    }

    fn vm(nics: usize, cloud_init: CloudInitDelivery) -> DesiredVm {
        DesiredVm {
            key: LogicalVmKey("app-01".into()),
            physical_name: PhysicalVmName("dev-app-01".into()),
            node: "pve1".into(),
            template: TemplateRef::default(),
            clone_mode: CloneMode::Linked,
            storage: "local-lvm".into(),
            requested_vmid: None,
            cores: 4,
            cpu_type: "x86-64-v2-AES".into(),
            memory_mb: 8192,
            nics: (0..nics).map(nic).collect(),
            nameservers: vec!["1.1.1.1".parse().unwrap(), "8.8.8.8".parse().unwrap()],
            ciuser: "opsadmin".into(),
            sshkeys: vec!["ssh-ed25519 AAAA a@b".into(), "ssh-rsa BBBB c@d".into()],
            agent: true,
            ostype: "l26".into(),
            onboot: false,
            tags: vec!["app".into(), "hyops-pve".into(), "onprem".into()],
            disk_size_gb: 40,
            cloud_init,
            snippets_storage: "local".into(),
            user_data: Some("#cloud-config\n".into()),
            network_data: None,
            meta_data: Some("instance-id: x\n".into()),
            marker: OwnershipMarker::test_sample(CloneMode::Linked),
            role: "app".into(),
            route: CloneRoute::default(),
            restart_policy: RestartPolicy::Restart,
        }
    }

    #[test]
    fn typed_settings_render_the_same_config_as_formatted_strings() {
        let mut cases = Vec::new();
        for nics in [0, 1, 2, 5, 12, 33] {
            for ci in [
                CloudInitDelivery::NativeKeys,
                CloudInitDelivery::Snippets,
                CloudInitDelivery::None,
            ] {
                cases.push(vm(nics, ci));
            }
        }
        let mut bare = vm(1, CloudInitDelivery::Snippets);
        bare.nameservers.clear();
        bare.sshkeys.clear();
        bare.tags.clear();
        bare.network_data = Some("version: 2\n".into());
        cases.push(bare);
        let mut twice = vm(2, CloudInitDelivery::NativeKeys);
        twice.nics[1].index = 0; // a key given twice: the last value wins, as in a map
        cases.push(twice);
        let mut thrice = vm(3, CloudInitDelivery::Snippets);
        thrice.nics[0].index = 1;
        thrice.nics[2].index = 1;
        cases.push(thrice);
        let mut reversed = vm(4, CloudInitDelivery::NativeKeys);
        reversed.nics.reverse();
        cases.push(reversed);
        let mut wide = vm(3, CloudInitDelivery::NativeKeys);
        wide.nics[0].index = 10;
        cases.push(wide);
        let mut no_ciuser = vm(2, CloudInitDelivery::NativeKeys);
        no_ciuser.ciuser.clear();
        no_ciuser.nameservers.clear();
        cases.push(no_ciuser);
        for want in &cases {
            assert_eq!(want.owned_config(), owned_config_as_strings(want));
            let settings = want.owned_settings();
            let keys: Vec<String> = settings.iter().map(|s| s.key().into_owned()).collect();
            let expected: Vec<String> = owned_config_as_strings(want).into_keys().collect();
            assert_eq!(keys, expected, "settings come in key order");
        }
    }

    #[test]
    fn indexed_keys_beyond_the_table_are_formatted() {
        assert_eq!(indexed_key(IndexedKey::Net, 0), "net0");
        assert_eq!(indexed_key(IndexedKey::Ipconfig, 31), "ipconfig31");
        assert_eq!(indexed_key(IndexedKey::Net, 32), "net32");
        assert_eq!(indexed_key(IndexedKey::Ipconfig, 100), "ipconfig100");
    }

    #[test]
    fn snippet_names_are_content_addressed_and_recognised() {
        let a = snippet_file_name("dev-app-01", SnippetKind::User, "x");
        let b = snippet_file_name("dev-app-01", SnippetKind::User, "y");
        assert_ne!(a, b);
        assert!(
            a.starts_with("dev-app-01-cloud-init-user-") && a.ends_with(".yaml"),
            "{a}"
        );
        assert!(is_snippet_file_of("dev-app-01", &a));
        assert!(is_snippet_file_of(
            "dev-app-01",
            "dev-app-01-cloud-init-user.yaml"
        ));
        assert!(!is_snippet_file_of("dev-app", &a));
        assert!(!is_snippet_file_of(
            "dev-app-01",
            "dev-app-01-cloud-init-user-notahash.yaml"
        ));
        assert!(!is_snippet_file_of("dev-app-01-x", &a));
    }

    proptest::proptest! {
        /// The direct comparison answers what comparing the rendered text answers.
        #[test]
        fn ipconfig_is_agrees_with_the_rendered_ipconfig(
            addr in proptest::prelude::any::<[u8; 4]>(),
            prefix in 0u8..=32,
            gw in proptest::option::of(proptest::prelude::any::<[u8; 4]>()),
            index in 0usize..2,
            dhcp in proptest::prelude::any::<bool>(),
            cut in 0usize..40,
            extra in "[0-9./a-z=,]{0,3}",
        ) {
            let address = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), prefix).unwrap();
            let nic = DesiredNic {
                index,
                model: "virtio".into(),
                bridge: "vmbr0".into(),
                vlan_tag: None,
                mac: None,
                firewall: false,
                mtu: None,
                ipv4: if dhcp {
                    Ipv4Config::Dhcp
                } else {
                    Ipv4Config::Static { address, gateway: gw.map(Ipv4Addr::from) }
                },
                ipam_pending: None,
            };
            let shown = nic.ipconfig().to_string();
            proptest::prop_assert!(nic.ipconfig_is(&shown));
            let other = format!("{}{extra}", &shown[..cut.min(shown.len())]);
            proptest::prop_assert_eq!(nic.ipconfig_is(&other), other == shown);
        }
    }
}
