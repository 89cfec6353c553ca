//! The typed, validated input model for `platform/onprem/platform-vm`. Everything past the
//! inputs layer reads this model; no YAML value travels further. Knows nothing about Proxmox
//! API calls, HyOps state files or the plan.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A logical VM key (`inputs.vms` key, or the single-VM `vm_name`). Matches
/// `^[a-z0-9][a-z0-9-]{0,62}$`. It is the key of every output map and the guest hostname.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogicalVmKey(pub String);

impl fmt::Display for LogicalVmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The physical Proxmox VM name (contract §1.10): the per-VM `vm_name` override, or
/// `<prefix>-<key>`, or the key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhysicalVmName(pub String);

impl fmt::Display for PhysicalVmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A MAC address, printed upper-case `AA:BB:CC:DD:EE:FF` as Proxmox does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("invalid MAC address: {s}"));
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("invalid MAC address: {s}"));
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address: {s}"))?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// IPv4 configuration of one NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ipv4Config {
    /// `address: dhcp`, or an `ipv4` block without address, or no `ipv4` at all.
    Dhcp,
    /// A static interface address; `gateway` only on the first NIC.
    Static {
        address: Ipv4Net,
        gateway: Option<Ipv4Addr>,
    },
}

/// One NIC, in order: index 0 is `net0` / `ipconfig0`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInputs {
    /// The bridge after alias resolution (`vnetenv` → `vnetdev`, …).
    pub bridge: String,
    pub vlan_id: Option<u16>,
    pub mac_address: Option<MacAddr>,
    /// `None` when the overlay had no `ipv4` block (dhcp in static mode, allocated in IPAM mode).
    pub ipv4: Option<Ipv4Config>,
    /// Engine extension: NIC model, `virtio` by default.
    pub model: String,
    /// Engine extension: Proxmox firewall flag, off by default.
    pub firewall: bool,
    /// Engine extension: MTU (1 = inherit the bridge MTU).
    pub mtu: Option<u16>,
}

/// Where the template VMID comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateSource {
    /// `template_vm_id` given: the state is not read.
    ExplicitVmId { vm_id: u32 },
    /// `template_state_ref` (`core/onprem/template-image[#instance]`) plus optional `template_key`.
    StateRef {
        state_ref: String,
        key: Option<String>,
    },
}

/// How a VM is cloned from its template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CloneMode {
    #[default]
    Full,
    Linked,
}

/// `addressing` block (contract §1.9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Addressing {
    Static,
    Ipam {
        provider: String,
        network_state_ref: Option<String>,
        ssh_proxy_jump_host: Option<String>,
        ssh_proxy_jump_user: Option<String>,
        ssh_proxy_jump_key_file: Option<String>,
    },
}

/// `post_apply_ssh_readiness` (contract §1.12), with top-level fallbacks applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessConfig {
    pub enabled: bool,
    pub required: bool,
    pub connectivity_timeout_s: u64,
    /// 0 means a single attempt (decided quirk, contract §10.2 #6).
    pub connectivity_wait_s: u64,
    pub target_user: Option<String>,
    pub target_port: u16,
    pub ssh_proxy_jump_auto: bool,
    pub ssh_proxy_jump_host: Option<String>,
    pub ssh_proxy_jump_user: Option<String>,
    pub ssh_proxy_jump_port: u16,
    pub ssh_private_key_file: Option<String>,
    /// Engine extension: after authentication, wait for `cloud-init status --wait` (exit 2,
    /// "degraded", is success with a warning). Default false (upstream only runs `true`).
    #[serde(default)]
    pub wait_cloud_init: bool,
}

/// How cloud-init reaches the guests (engine extension `cloud_init_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CloudInitMode {
    /// As upstream: the generated user-data (and any network/meta overrides) uploaded as
    /// snippets over node SSH and attached with `cicustom`, plus the native keys.
    #[default]
    Snippets,
    /// Native keys only (`ciuser`, `sshkeys`, `ipconfigN`, `nameserver`); no node SSH. Per-VM
    /// `cloud_init_*` overrides cannot be delivered in this mode (plan error).
    Native,
}

/// Engine scheduling limits (inputs `limits:`; flags may override). `None` = engine default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConcurrencyLimits {
    pub global: Option<usize>,
    pub per_node: Option<usize>,
    pub per_storage: Option<usize>,
}

/// Whether the overlay used pool mode (`vms`) or the single-VM shorthand (`vm_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmMode {
    Pool,
    Single,
}

/// One VM as the operator asked for it (after defaults, aliases and naming).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInputs {
    pub key: LogicalVmKey,
    pub physical_name: PhysicalVmName,
    /// Appended to the Proxmox tags. Pool default `platform-vm`; single mode `vm_role`.
    pub role: String,
    pub vm_id: Option<u32>,
    /// Engine extension: per-VM node. `None` = the module node (operator or credentials).
    pub node_name: Option<String>,
    /// Per-VM NICs, or the module-level list when the VM has none.
    pub interfaces: Vec<NicInputs>,
    pub cloud_init_user_data: Option<String>,
    /// Per-VM value, falling back to the module-level one.
    pub cloud_init_network_data: Option<String>,
    pub cloud_init_meta_data: Option<String>,
}

/// The whole validated module input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInputs {
    pub mode: VmMode,
    /// Ordered by logical key (the order of Terraform's JSON maps).
    pub vms: BTreeMap<LogicalVmKey, VmInputs>,
    pub name_prefix: String,
    pub context_id: String,
    pub template: TemplateSource,
    pub build_image: bool,
    pub clone_mode: CloneMode,
    /// Engine extension: `snippets` (default, as upstream) or `native`.
    #[serde(default)]
    pub cloud_init_mode: CloudInitMode,
    pub cpu_cores: u32,
    pub cpu_type: String,
    pub memory_mb: u64,
    pub disk_size_gb: u64,
    pub guest_agent_enabled: bool,
    pub os_type: String,
    pub on_boot: bool,
    pub dns_domain: String,
    pub dns_servers: Vec<Ipv4Addr>,
    /// Module tags, without the role.
    pub tags: Vec<String>,
    pub ssh_username: Option<String>,
    pub ssh_keys: Vec<String>,
    pub cloud_init_user_data: Option<String>,
    /// Operator overrides of the credentials defaults (decided quirk: they DO win).
    pub node_name: Option<String>,
    pub datastore_id: Option<String>,
    pub snippets_datastore_id: Option<String>,
    pub network_bridge: Option<String>,
    pub require_ipam: bool,
    /// `None` when the overlay has no `addressing` block.
    pub addressing: Option<Addressing>,
    pub allow_vm_set_replace: bool,
    pub readiness: ReadinessConfig,
    pub limits: ConcurrencyLimits,
    /// Engine extension `restart_policy`: `restart` (default) or `defer`, as written
    /// (checked with the Proxmox rules in `plan::checks`).
    #[serde(default = "default_restart_policy")]
    pub restart_policy: String,
}

fn default_restart_policy() -> String {
    "restart".to_string()
}

impl ModuleInputs {
    /// True for `os_type` matching `^win` (no cloud-init, no snippets).
    pub fn is_windows(&self) -> bool {
        self.os_type.to_ascii_lowercase().starts_with("win")
    }
    /// True when IPAM allocation must run (`addressing.mode == ipam`, whatever `require_ipam`).
    pub fn uses_ipam(&self) -> bool {
        matches!(self.addressing, Some(Addressing::Ipam { .. }))
    }
}
