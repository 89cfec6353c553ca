//! SSH, in-process (russh, no `ssh` or `nc` binaries): the post-apply readiness gate
//! (contract §5) with ProxyJump over `direct-tcpip`, trust-on-first-use host keys, node SSH
//! for cloud-init snippets (SFTP), the NetBox tunnel facility (contract §4.2) and the
//! host-side SDN gateway probe (§4.3).
//!
//! Layers, bottom up: [`dial`] (how the first hop is reached; the simulator plugs in its own
//! dialer so `--sim` can never touch the network), [`known_hosts`], [`identity`], [`client`]
//! (one session), then the jobs built on it. This module must not know about HyOps state
//! files or Proxmox API calls: callers hand it paths, hosts and outputs.

pub mod client;
pub mod dial;
mod files;
pub mod gate;
pub mod identity;
pub mod known_hosts;
pub mod node;
pub mod sdn;
pub mod snippets;
pub mod tunnel;

pub use client::{ExecOutput, Peer, SshContext, SshError, SshSession};
pub use dial::{AddressPolicy, BoxStream, DialError, Dialer, TcpDialer};
pub use identity::{AuthSource, Identities, IdentityError};
pub use known_hosts::{HostKeyError, HostKeyVerdict, KnownHosts};
