//! Local port forwards over an SSH session (`ssh -L` without the binary), for the NetBox
//! reachability fallback of contract §4.2: when the NetBox API does not answer directly,
//! HyOps reaches it through the Proxmox host. Upstream always rewrites the base URL to
//! `http://127.0.0.1:<port>`, which breaks an https NetBox (contract §10.2 #9); here the
//! scheme is kept and, for a named https host, the client is told to resolve that name to the
//! local end ([`TunnelEndpoint::resolve`], e.g. `reqwest::ClientBuilder::resolve`) so the
//! certificate is still verified against the real name.
//!
//! Also the jump-host choice and the messages of §4.2, so the NetBox code uses the exact
//! upstream wording. Knows nothing about NetBox's API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::client::{SshError, SshSession};

/// A running local forward; stops when dropped or [`LocalForward::stop`]ped.
pub struct LocalForward {
    local: SocketAddr,
    stop: watch::Sender<bool>,
    join: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<std::sync::atomic::AtomicU64>,
}

impl LocalForward {
    /// Listen on `127.0.0.1:<free port>`; each accepted connection is carried to
    /// `target_host:target_port` through a `direct-tcpip` channel of `session` (opened within
    /// `timeout`).
    pub async fn start(
        session: Arc<SshSession>,
        target_host: &str,
        target_port: u16,
        timeout: Duration,
    ) -> Result<Self, SshError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| SshError::Session {
                host: "127.0.0.1".into(),
                detail: format!("cannot listen for the local forward: {e}"),
            })?;
        let local = listener.local_addr().map_err(|e| SshError::Session {
            host: "127.0.0.1".into(),
            detail: e.to_string(),
        })?;
        let (stop, mut stopped) = watch::channel(false);
        let host = target_host.to_string();
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = Arc::clone(&connections);
        let join = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((mut sock, _)) = accepted else { continue };
                        let session = Arc::clone(&session);
                        let host = host.clone();
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::spawn(async move {
                            match session.direct_tcpip(&host, target_port, timeout).await {
                                Ok(mut ch) => {
                                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut ch).await;
                                }
                                Err(e) => tracing::debug!(error = %e, "tunnel channel failed"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Self {
            local,
            stop,
            join: Some(join),
            connections,
        })
    }

    /// The local end (`127.0.0.1:<port>`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections carried so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stop listening (open connections finish on their own).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(j) = self.join.take() {
            let _ = j.await;
        }
    }
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How to reach an API through a local forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelEndpoint {
    /// The base URL to use instead of the original one.
    pub base_url: String,
    /// `(host, local address)` to pin in the HTTP client's resolver, when the original URL
    /// named an https host (so TLS still verifies that name).
    pub resolve: Option<(String, SocketAddr)>,
}

/// Rewrite `original` (e.g. `https://netbox.lab:8443/`) to go through `local`.
pub fn tunnel_endpoint(original: &url::Url, local: SocketAddr) -> TunnelEndpoint {
    let mut u = original.clone();
    let named_https = u.scheme() == "https" && matches!(u.host(), Some(url::Host::Domain(_)));
    if named_https {
        let host = u.host_str().unwrap_or_default().to_string();
        let _ = u.set_port(Some(local.port()));
        TunnelEndpoint {
            base_url: u.as_str().trim_end_matches('/').to_string(),
            resolve: Some((host, local)),
        }
    } else {
        let _ = u.set_host(Some(&local.ip().to_string()));
        let _ = u.set_port(Some(local.port()));
        TunnelEndpoint {
            base_url: u.as_str().trim_end_matches('/').to_string(),
            resolve: None,
        }
    }
}

/// The jump host, user and key of the NetBox tunnel (§4.2): `addressing.ipam.ssh_proxy_jump_*`
/// first, then `runtime.api_ip`, `proxmox_ssh_username` (else `root`), `proxmox_ssh_key`
/// (else `~/.ssh/id_ed25519`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelJump {
    pub host: String,
    pub user: String,
    pub key_file: PathBuf,
}

/// Choose the jump (None when neither the inputs nor proxmox init name a host).
pub fn tunnel_jump(
    ipam_host: Option<&str>,
    ipam_user: Option<&str>,
    ipam_key: Option<&str>,
    api_ip: Option<&str>,
    proxmox_ssh_username: Option<&str>,
    proxmox_ssh_key: Option<&str>,
    home: Option<&std::path::Path>,
) -> Option<TunnelJump> {
    let nonblank = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let host = nonblank(ipam_host).or_else(|| nonblank(api_ip))?;
    let user = nonblank(ipam_user)
        .or_else(|| nonblank(proxmox_ssh_username))
        .unwrap_or_else(|| "root".into());
    let key_file = nonblank(ipam_key)
        .or_else(|| nonblank(proxmox_ssh_key))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            home.map(|h| h.join(".ssh/id_ed25519"))
                .unwrap_or_else(|| PathBuf::from("~/.ssh/id_ed25519"))
        });
    Some(TunnelJump {
        host,
        user,
        key_file,
    })
}

/// `"netbox api unreachable directly; using ssh tunnel via user@host"`.
pub fn tunnel_warning(user: &str, host: &str) -> String {
    format!("netbox api unreachable directly; using ssh tunnel via {user}@{host}")
}

/// `"NetBox API unreachable ({err}); ssh tunnel failed: {e}"`.
pub fn tunnel_failed(err: &str, e: &str) -> String {
    format!("NetBox API unreachable ({err}); ssh tunnel failed: {e}")
}

/// `"NetBox API unreachable ({err}); tunnel probe failed: {e}"`.
pub fn tunnel_probe_failed(err: &str, e: &str) -> String {
    format!("NetBox API unreachable ({err}); tunnel probe failed: {e}")
}

/// `"NetBox API unreachable: {err}. Ensure …"` (no jump host known).
pub fn unreachable_no_tunnel(err: &str) -> String {
    format!("NetBox API unreachable: {err}. Ensure your workstation has L3 access to the management network, or configure a bastion/tunnel.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_names_keep_their_scheme_and_are_pinned_to_the_local_end() {
        let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let e = tunnel_endpoint(&url::Url::parse("https://netbox.lab:8443/").unwrap(), local);
        assert_eq!(e.base_url, "https://netbox.lab:40001");
        assert_eq!(e.resolve, Some(("netbox.lab".into(), local)));
        let e = tunnel_endpoint(&url::Url::parse("http://10.0.0.9:8000").unwrap(), local);
        assert_eq!(e.base_url, "http://127.0.0.1:40001");
        assert_eq!(e.resolve, None);
        let e = tunnel_endpoint(&url::Url::parse("https://10.0.0.9/").unwrap(), local);
        assert_eq!(e.base_url, "https://127.0.0.1:40001");
    }

    #[test]
    fn the_jump_follows_the_upstream_fallbacks() {
        let j = tunnel_jump(
            None,
            None,
            None,
            Some("192.0.2.10"),
            Some(""),
            None,
            Some(std::path::Path::new("/home/o")),
        )
        .unwrap();
        assert_eq!(
            j,
            TunnelJump {
                host: "192.0.2.10".into(),
                user: "root".into(),
                key_file: PathBuf::from("/home/o/.ssh/id_ed25519")
            }
        );
        let j = tunnel_jump(
            Some("bastion"),
            Some("ops"),
            Some("/k"),
            Some("192.0.2.10"),
            Some("root"),
            Some("/p"),
            None,
        )
        .unwrap();
        assert_eq!((j.host.as_str(), j.user.as_str()), ("bastion", "ops"));
        assert_eq!(j.key_file, PathBuf::from("/k"));
        assert_eq!(tunnel_jump(None, None, None, None, None, None, None), None);
    }

    #[test]
    fn messages_are_upstreams() {
        assert_eq!(
            tunnel_warning("root", "192.0.2.10"),
            "netbox api unreachable directly; using ssh tunnel via root@192.0.2.10"
        );
        assert_eq!(
            tunnel_failed("timed out", "x"),
            "NetBox API unreachable (timed out); ssh tunnel failed: x"
        );
    }
}
