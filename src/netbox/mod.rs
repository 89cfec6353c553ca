//! NetBox: the REST client, IPAM allocation with upstream's identities (contract §4.4–4.6)
//! and the inventory sync after apply and destroy (§4.7–4.8). Takes typed requests (zone,
//! logical keys, bridges, static pools, VM facts) and returns typed results; reading HyOps
//! state and writing evidence stay with the caller. Must not know about Proxmox.
//!
//! Every object found through a NetBox filter is re-checked on the client ([`objects`])
//! before it is used, and nothing is PATCHed or DELETEd from a filter result without that
//! check: NetBox ignores unknown filters and answers with the whole table.

pub mod client;
pub mod error;
pub mod ipam;
pub mod objects;
pub mod probe;
pub mod retry;
pub mod sync;

pub use client::{
    token_version, LostReplyInjector, Metrics, NetboxClient, NetboxConfig, TokenVersion,
};
pub use error::NetboxError;
pub use retry::default_policy;
