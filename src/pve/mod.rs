//! Typed Proxmox VE API client: property-string types, the `sshkeys` encoding, lenient JSON
//! decoding, TLS (system roots / CA file / fingerprint pin / insecure), token or ticket auth,
//! rate limiting, read-only retries, error classification, task waiting and race-safe VMID
//! allocation. Knows nothing about HyOps (no inputs, plans or state types).
//!
//! Typical per-VM sequence (API notes §7):
//!
//! ```ignore
//! let client = PveClient::new(PveConfig {
//!     tls: TlsMode::Fingerprint(pin),
//!     ..PveConfig::new("https://pve1:8006", PveAuth::Token { id, secret })
//! })?;
//! let alloc = client.allocate_vmid_and_clone(&AllocateRequest {
//!     node: "pve1", template_vmid: 9000, params: &clone_params,
//!     ownership: Ownership::Marker(&marker), start_hint: None, range: None,
//!     max_attempts: 5, wait: Some(WaitOptions::default()),
//! }).await?;
//! let vmid = alloc.vmid();
//! client.wait_unlocked("pve1", vmid, &WaitOptions::default()).await?;
//! let cfg = client.vm_config("pve1", vmid, false).await?;
//! let update = ConfigUpdate::new().cores(2).memory(&Memory::mib(4096))
//!     .sshkeys(&keys).digest(cfg.digest.as_deref().unwrap_or_default());
//! if let Some(upid) = client.update_config_async("pve1", vmid, &update).await? {
//!     client.wait_task(&upid, &WaitOptions::default()).await?;
//! }
//! let upid = client.resize("pve1", vmid, "scsi0".parse()?, DiskSize::gib(40)).await?;
//! client.wait_task(&upid, &WaitOptions::default()).await?;
//! let upid = client.start("pve1", vmid).await?;
//! client.wait_task(&upid, &WaitOptions::default()).await?;
//! ```
//!
//! Errors: match on [`PveError::classify`] ([`ErrorClass`]), never on message text; what to do
//! next comes from the one table in [`policy`] (`PveError` implements
//! [`crate::retry::Classify`]). Writes are sent once; an outcome-unknown error means "re-read
//! state first".
//! [`PveClient::metrics`] counts every HTTP request for the apply journal.

#![warn(missing_docs)]

mod api;
mod client;
mod error;
pub mod formats;
pub mod hotplug;
pub mod lenient;
pub mod policy;
mod propstr;
mod sshkeys;
mod tasks;
mod tls;
mod types;
mod upid;
mod vmid;

pub use client::{
    normalize_base_url, CallAccount, Metrics, Params, PveAuth, PveClient, PveConfig, RateLimit,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_RESPONSE_BYTES,
};
pub use error::{classify_message, CallContext, ErrorClass, PveError, PveResult};
pub use propstr::{
    encode_value, parse_bool_str, property_pairs, split_property_string, Agent, AgentType,
    CiCustom, DiskBus, DiskSize, DiskSlot, DiskSpec, Extra, IpConfig, Ipv4Config, Ipv6Config,
    MacAddr, Memory, NetDevice, NicModel, PropError, Tags,
};
pub use sshkeys::{decode_sshkeys, encode_sshkeys};
pub use tasks::TaskListEntry;
pub use tls::{client_config, fingerprint_of, parse_fingerprint, TlsMode};
pub use types::{
    ipv4_addresses, next_start_config, CloneParams, CloudInitKind, ClusterResource, ConfigUpdate,
    CpuModel, DiskFormat, GuestInterface, GuestIp, NodeInfo, NodeNetwork, NodeStorage,
    PendingEntry, ResourceType, StorageVolume, TaskLog, TaskLogLine, TaskOutcome, TaskStatus,
    VersionInfo, VmConfig, VmStatus, WaitOptions,
};
pub use upid::{Upid, UpidError};
pub use vmid::{is_id_conflict, AllocateRequest, CloneAllocation, Ownership};
