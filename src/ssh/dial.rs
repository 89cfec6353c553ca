//! How SSH connections reach their first hop: the [`Dialer`] abstraction. The engine uses a
//! [`TcpDialer`]; the simulator provides its own dialer that connects in-process and has no way
//! to open a socket at all, so `--sim` runs and tests can never reach a real address (a
//! simulated VM's `10.x` address included). Tests against real `sshd` use
//! [`TcpDialer::loopback_only`], which refuses any address outside 127.0.0.0/8 and `::1`
//! before a socket is created. Knows nothing about SSH itself.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream an SSH session can run over (a TCP socket, a `direct-tcpip` channel, an
/// in-process pipe).
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A boxed [`AsyncStream`].
pub type BoxStream = Box<dyn AsyncStream>;

/// Why a dial failed. The `Display` text follows the operating system's wording
/// (`Connection refused`, `No route to host`, …) because upstream's messages embed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("Connection refused")]
    Refused,
    #[error("timed out")]
    TimedOut,
    #[error("No route to host")]
    Unreachable,
    #[error("[Errno -2] Name or service not known: {host}")]
    Resolve { host: String },
    /// The dialer's policy forbids this address; nothing was sent.
    #[error("refusing to connect to {host}:{port}: {why}")]
    Forbidden {
        host: String,
        port: u16,
        why: String,
    },
    #[error("{0}")]
    Other(String),
}

impl DialError {
    /// The text Python's `socket.create_connection` gives for the same failure (upstream's
    /// TCP probe embeds `str(exc)` in its messages).
    pub fn python_text(&self) -> String {
        match self {
            DialError::Refused => "[Errno 111] Connection refused".into(),
            DialError::TimedOut => "timed out".into(),
            DialError::Unreachable => "[Errno 113] No route to host".into(),
            DialError::Resolve { .. } => "[Errno -2] Name or service not known".into(),
            other => other.to_string(),
        }
    }
}

/// Opens the first hop of a connection.
#[async_trait::async_trait]
pub trait Dialer: Send + Sync + fmt::Debug {
    /// Connect to `host:port`, giving up after `timeout`.
    async fn dial(&self, host: &str, port: u16, timeout: Duration) -> Result<BoxStream, DialError>;
}

/// Which addresses a [`TcpDialer`] may connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Any address (production).
    Any,
    /// Loopback only (tests with real `sshd`): any other address is refused before a socket
    /// exists, and a name that resolves to any non-loopback address is refused whole.
    LoopbackOnly,
}

/// Real TCP connections.
#[derive(Clone, Debug)]
pub struct TcpDialer {
    policy: AddressPolicy,
}

impl TcpDialer {
    /// Connects anywhere (the engine against real infrastructure).
    pub fn new() -> Self {
        Self {
            policy: AddressPolicy::Any,
        }
    }

    /// Connects only to loopback addresses.
    pub fn loopback_only() -> Self {
        Self {
            policy: AddressPolicy::LoopbackOnly,
        }
    }

    pub fn policy(&self) -> AddressPolicy {
        self.policy
    }

    /// Resolve `host:port` and apply the policy. Never opens a socket.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                if self.policy == AddressPolicy::LoopbackOnly && host != "localhost" {
                    return Err(DialError::Forbidden {
                        host: host.to_string(),
                        port,
                        why: "only loopback addresses are allowed by this dialer".into(),
                    });
                }
                tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|_| DialError::Resolve {
                        host: host.to_string(),
                    })?
                    .collect()
            }
        };
        if addrs.is_empty() {
            return Err(DialError::Resolve {
                host: host.to_string(),
            });
        }
        if self.policy == AddressPolicy::LoopbackOnly {
            if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(DialError::Forbidden {
                    host: host.to_string(),
                    port,
                    why: format!(
                        "{} is not a loopback address and this dialer allows loopback only",
                        bad.ip()
                    ),
                });
            }
        }
        Ok(addrs)
    }
}

impl Default for TcpDialer {
    fn default() -> Self {
        Self::new()
    }
}

fn io_dial_error(e: &std::io::Error) -> DialError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => DialError::Refused,
        ErrorKind::TimedOut => DialError::TimedOut,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => DialError::Unreachable,
        _ => DialError::Other(e.to_string()),
    }
}

#[async_trait::async_trait]
impl Dialer for TcpDialer {
    async fn dial(&self, host: &str, port: u16, timeout: Duration) -> Result<BoxStream, DialError> {
        let addrs = self.resolve(host, port).await?;
        let connect = async {
            let mut last = DialError::Unreachable;
            for a in &addrs {
                match tokio::net::TcpStream::connect(a).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Box::new(s) as BoxStream);
                    }
                    Err(e) => last = io_dial_error(&e),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(DialError::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_only_dialer_refuses_private_addresses_without_a_socket() {
        let d = TcpDialer::loopback_only();
        for host in ["10.20.0.11", "192.168.1.1", "172.16.0.1", "8.8.8.8"] {
            let e = d
                .dial(host, 22, Duration::from_secs(5))
                .await
                .err()
                .unwrap_or_else(|| panic!("{host} was dialled"));
            assert!(matches!(e, DialError::Forbidden { .. }), "{host}: {e}");
        }
        // Names are refused too (they could resolve anywhere).
        assert!(matches!(
            d.resolve("example.invalid", 22).await,
            Err(DialError::Forbidden { .. })
        ));
    }

    #[tokio::test]
    async fn loopback_only_dialer_reaches_a_loopback_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accept = tokio::spawn(async move { l.accept().await.map(|_| ()) });
        let d = TcpDialer::loopback_only();
        assert!(d
            .dial("127.0.0.1", port, Duration::from_secs(5))
            .await
            .is_ok());
        assert!(accept.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_closed_loopback_port_is_connection_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = TcpDialer::loopback_only()
            .dial("127.0.0.1", port, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(e, DialError::Refused);
        assert_eq!(e.to_string(), "Connection refused");
    }
}
