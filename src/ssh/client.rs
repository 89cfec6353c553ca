//! One SSH client session over any byte stream: banner and key exchange (bounded by a
//! timeout), the host key checked against the engine's [`KnownHosts`], public-key
//! authentication with the configured [`Identities`], then commands, `direct-tcpip` channels
//! (ProxyJump without `nc`) and SFTP. Error texts follow OpenSSH's wording where upstream
//! classifies them (`banner exchange`, `Permission denied (publickey)`). Knows nothing about
//! the readiness gate, Proxmox or HyOps.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dial::{BoxStream, DialError, Dialer};
use super::identity::{AuthSource, Identities, IdentityError};
use super::known_hosts::{HostKeyError, HostKeyVerdict, KnownHosts};

/// Everything a connection needs besides the stream.
#[derive(Clone, Debug)]
pub struct SshContext {
    pub identities: Arc<Identities>,
    pub known_hosts: Arc<KnownHosts>,
}

/// Who we connect to, for the host key check and messages.
#[derive(Clone, Debug)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The machine the engine expects there (`vmid=…,uuid=…`), `""` for bastions and nodes.
    pub identity: String,
}

/// SSH failures. `Display` follows OpenSSH's stderr where upstream's classifier reads it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("ssh: connect to host {host} port {port}: {source}")]
    Dial {
        host: String,
        port: u16,
        #[source]
        source: DialError,
    },
    #[error(
        "Connection timed out during banner exchange\nConnection to {host} port {port} timed out"
    )]
    BannerTimeout { host: String, port: u16 },
    #[error("ssh: connect to host {host} port {port}: Connection timed out (key exchange did not finish in {secs}s)")]
    KexTimeout { host: String, port: u16, secs: u64 },
    #[error("kex_exchange_identification: Connection closed by remote host\nConnection closed by {host} port {port}")]
    ClosedBeforeBanner { host: String, port: u16 },
    /// The server spoke, but no `SSH-2.0-` identification line came (a line too long, too
    /// many lines, something else on the port). OpenSSH 9 reports it through
    /// `sshpkt_fatal(…, "banner exchange")`, which upstream's classifier reads as "ssh service
    /// did not become ready yet".
    #[error("kex_exchange_identification: no SSH version line from the server\nbanner exchange: Connection to {host} port {port}: invalid format")]
    BadBanner { host: String, port: u16 },
    #[error("{0}")]
    HostKey(#[from] HostKeyError),
    #[error("ssh handshake with {host} port {port} failed: {detail}")]
    Handshake {
        host: String,
        port: u16,
        detail: String,
    },
    #[error("{user}@{host}: Permission denied (publickey).")]
    AuthFailed { user: String, host: String },
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("channel to {target} via {via}: {detail}")]
    Channel {
        via: String,
        target: String,
        detail: String,
    },
    #[error("{what} on {host} timed out after {secs}s")]
    Timeout {
        what: String,
        host: String,
        secs: u64,
    },
    #[error("ssh session with {host} failed: {detail}")]
    Session { host: String, detail: String },
}

impl SshError {
    /// A host key mismatch: never retried.
    pub fn is_host_key_mismatch(&self) -> bool {
        matches!(self, SshError::HostKey(HostKeyError::Mismatch { .. }))
    }
}

/// The russh handler: checks the server key and keeps the verdict.
pub struct ClientHandler {
    known_hosts: Arc<KnownHosts>,
    peer: Peer,
    verdict: Arc<Mutex<Option<Result<HostKeyVerdict, HostKeyError>>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().clone().into(),
        };
        let r = self
            .known_hosts
            .check(&self.peer.host, self.peer.port, &key, &self.peer.identity);
        let ok = r.is_ok();
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(r);
        }
        Ok(ok)
    }
}

/// Tracks whether the peer sent any byte (to tell a banner timeout from a kex timeout).
struct ReadTracker<S> {
    inner: S,
    got_bytes: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadTracker<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.got_bytes.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadTracker<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The russh client configuration the engine uses.
pub fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    })
}

/// A connected, authenticated session.
pub struct SshSession {
    handle: Handle<ClientHandler>,
    pub peer: Peer,
    /// What the host key check concluded.
    pub host_key: HostKeyVerdict,
}

/// Output of one remote command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the server closed the channel without an exit status.
    pub exit_status: Option<u32>,
}

impl SshSession {
    /// Run the handshake and authenticate over `stream`. `timeout` bounds the banner and key
    /// exchange, and then authentication, each.
    pub async fn establish(
        stream: BoxStream,
        peer: Peer,
        ctx: &SshContext,
        timeout: Duration,
    ) -> Result<SshSession, SshError> {
        let got_bytes = Arc::new(AtomicBool::new(false));
        let tracked = ReadTracker {
            inner: stream,
            got_bytes: Arc::clone(&got_bytes),
        };
        let verdict = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            known_hosts: Arc::clone(&ctx.known_hosts),
            peer: peer.clone(),
            verdict: Arc::clone(&verdict),
        };
        let connect = client::connect_stream(client_config(), tracked, handler);
        let mut handle = match tokio::time::timeout(timeout, connect).await {
            Err(_) if !got_bytes.load(Ordering::Relaxed) => {
                return Err(SshError::BannerTimeout {
                    host: peer.host.clone(),
                    port: peer.port,
                })
            }
            Err(_) => {
                return Err(SshError::KexTimeout {
                    host: peer.host.clone(),
                    port: peer.port,
                    secs: timeout.as_secs(),
                })
            }
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                let recorded = verdict.lock().ok().and_then(|mut v| v.take());
                if let Some(Err(hk)) = recorded {
                    return Err(SshError::HostKey(hk));
                }
                if !got_bytes.load(Ordering::Relaxed) {
                    return Err(SshError::ClosedBeforeBanner {
                        host: peer.host.clone(),
                        port: peer.port,
                    });
                }
                if matches!(e, russh::Error::Version) {
                    return Err(SshError::BadBanner {
                        host: peer.host.clone(),
                        port: peer.port,
                    });
                }
                return Err(SshError::Handshake {
                    host: peer.host.clone(),
                    port: peer.port,
                    detail: e.to_string(),
                });
            }
        };
        let host_key = verdict
            .lock()
            .ok()
            .and_then(|mut v| v.take())
            .and_then(Result::ok)
            .unwrap_or(HostKeyVerdict::Known);
        match tokio::time::timeout(timeout, authenticate(&mut handle, &peer, ctx)).await {
            Ok(Ok(())) => Ok(SshSession {
                handle,
                peer,
                host_key,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SshError::Timeout {
                what: "authentication".into(),
                host: peer.host.clone(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Dial `peer` with `dialer` (bounded by `timeout`) and establish a session.
    pub async fn connect(
        dialer: &dyn Dialer,
        peer: Peer,
        ctx: &SshContext,
        timeout: Duration,
    ) -> Result<SshSession, SshError> {
        let stream = dialer
            .dial(&peer.host, peer.port, timeout)
            .await
            .map_err(|source| SshError::Dial {
                host: peer.host.clone(),
                port: peer.port,
                source,
            })?;
        Self::establish(stream, peer, ctx, timeout).await
    }

    /// True once the transport is gone.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Open a `direct-tcpip` channel from the server to `host:port` (what `ssh -J` and
    /// `ssh -L` use; no `nc` needed on the server). Bounded by `timeout`.
    pub async fn direct_tcpip(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<BoxStream, SshError> {
        let open = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let via = format!("{}@{}:{}", self.peer.user, self.peer.host, self.peer.port);
        match tokio::time::timeout(timeout, open).await {
            Ok(Ok(ch)) => Ok(Box::new(ch.into_stream())),
            Ok(Err(e)) => Err(SshError::Channel {
                via,
                target: format!("{host}:{port}"),
                detail: channel_error_text(&e),
            }),
            Err(_) => Err(SshError::Channel {
                via,
                target: format!("{host}:{port}"),
                detail: format!("connect timed out after {}s", timeout.as_secs()),
            }),
        }
    }

    /// Run `command`, collecting stdout, stderr and the exit status, within `timeout`.
    pub async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SshError> {
        let run = async {
            let mut ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.session_err(e))?;
            ch.exec(true, command)
                .await
                .map_err(|e| self.session_err(e))?;
            let mut out = ExecOutput::default();
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    _ => {}
                }
            }
            out.stdout = String::from_utf8_lossy(&stdout).into_owned();
            out.stderr = String::from_utf8_lossy(&stderr).into_owned();
            Ok(out)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                what: format!("command `{command}`"),
                host: self.peer.host.clone(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Start the SFTP subsystem.
    pub async fn sftp(
        &self,
        timeout: Duration,
    ) -> Result<russh_sftp::client::SftpSession, SshError> {
        let start = async {
            let ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.session_err(e))?;
            ch.request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.session_err(e))?;
            russh_sftp::client::SftpSession::new(ch.into_stream())
                .await
                .map_err(|e| SshError::Session {
                    host: self.peer.host.clone(),
                    detail: format!("sftp: {e}"),
                })
        };
        match tokio::time::timeout(timeout, start).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                what: "sftp start".into(),
                host: self.peer.host.clone(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Close politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }

    fn session_err(&self, e: russh::Error) -> SshError {
        SshError::Session {
            host: self.peer.host.clone(),
            detail: e.to_string(),
        }
    }
}

/// OpenSSH-like wording for a refused channel.
fn channel_error_text(e: &russh::Error) -> String {
    match e {
        russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::ConnectFailed) => {
            "connect failed: Connection refused".into()
        }
        russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::AdministrativelyProhibited) => {
            "administratively prohibited: open failed".into()
        }
        russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::Other { reason, .. }) => {
            format!("open failed: {reason}")
        }
        other => other.to_string(),
    }
}

/// Try every identity until one is accepted.
async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    peer: &Peer,
    ctx: &SshContext,
) -> Result<(), SshError> {
    if ctx.identities.is_empty() {
        return Err(SshError::Identity(IdentityError::None));
    }
    let session_err = |e: russh::Error| SshError::Session {
        host: peer.host.clone(),
        detail: e.to_string(),
    };
    for source in &ctx.identities.sources {
        match source {
            AuthSource::KeyFile { key, .. } => {
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(session_err)?
                    .flatten();
                let res = handle
                    .authenticate_publickey(
                        peer.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::clone(key), hash),
                    )
                    .await
                    .map_err(session_err)?;
                if res.success() {
                    return Ok(());
                }
            }
            AuthSource::Agent { socket } => {
                let Ok(mut agent) = AgentClient::connect_uds(socket).await else {
                    continue;
                };
                let Ok(ids) = agent.request_identities().await else {
                    continue;
                };
                for id in ids {
                    let AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    let hash = handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(session_err)?
                        .flatten();
                    match handle
                        .authenticate_publickey_with(peer.user.clone(), key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        _ => continue,
                    }
                }
            }
        }
    }
    Err(SshError::AuthFailed {
        user: peer.user.clone(),
        host: peer.host.clone(),
    })
}
