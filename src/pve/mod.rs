//! Typed Proxmox VE API client: property-string types, the `sshkeys` encoding, lenient JSON
//! decoding, TLS (system roots / CA file / fingerprint pin / insecure), token or ticket auth,
//! rate limiting, read-only retries, error classification, task waiting and race-safe VMID
//! allocation. Knows nothing about HyOps (no inputs, plans or state types).

#![warn(missing_docs)]

mod api;
mod client;
mod error;
pub mod lenient;
mod propstr;
mod sshkeys;
mod tls;
mod types;
mod upid;
mod vmid;

pub use client::{
    normalize_base_url, Metrics, Params, PveAuth, PveClient, PveConfig, RateLimit, ReadRetry,
};
pub use error::{classify_message, CallContext, ErrorClass, PveError, PveResult};
pub use propstr::{
    parse_bool_str, split_property_string, Agent, AgentType, CiCustom, DiskBus, DiskSize, DiskSlot,
    DiskSpec, Extra, IpConfig, Ipv4Config, Ipv6Config, MacAddr, Memory, NetDevice, NicModel,
    PropError, Tags,
};
pub use sshkeys::{decode_sshkeys, encode_sshkeys};
pub use tls::{fingerprint_of, parse_fingerprint, TlsMode};
pub use types::{
    ipv4_addresses, CloneParams, CloudInitKind, ClusterResource, ConfigUpdate, DiskFormat,
    GuestInterface, GuestIp, ResourceType, StorageVolume, TaskLog, TaskLogLine, TaskOutcome,
    TaskStatus, VersionInfo, VmConfig, VmStatus, WaitOptions,
};
pub use upid::{Upid, UpidError};
pub use vmid::{is_id_conflict, AllocateRequest, CloneAllocation, Ownership};
