//! SSH to the Proxmox nodes (`proxmox_ssh_username`, the credentials' key): one session to the
//! API host (`proxmox.ready.json` `runtime.api_ip`, else the `proxmox_url` host), which is the
//! credentials' node; every other node is reached by name through that session
//! (`direct-tcpip`, the cluster's own name resolution, as `pvecm` sets up). Sessions are opened
//! once and reused. Knows nothing about HyOps state files or what the commands are for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::client::{ExecOutput, Peer, SshContext, SshError, SshSession};
use super::dial::Dialer;

/// Where and as whom node SSH connects.
#[derive(Clone, Debug)]
pub struct NodeSshTarget {
    /// The API host's address.
    pub api_host: String,
    /// The node that address belongs to.
    pub api_node: String,
    pub port: u16,
    pub user: String,
}

/// Node SSH sessions, opened on demand.
pub struct NodeSsh {
    target: NodeSshTarget,
    dialer: Arc<dyn Dialer>,
    ctx: SshContext,
    timeout: Duration,
    sessions: Mutex<BTreeMap<String, Arc<SshSession>>>,
    opened: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for NodeSsh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSsh")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Node SSH failures, naming the node and the way out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeSshError {
    #[error("node SSH to {node} ({user}@{host}:{port}) failed: {source}. Check proxmox_ssh_username and the key (proxmox_ssh_key in the credentials, or ssh-agent), and that {host} accepts SSH from this machine")]
    Connect {
        node: String,
        user: String,
        host: String,
        port: u16,
        #[source]
        source: SshError,
    },
    #[error("node {node}: `{command}` failed (exit {status}): {stderr}")]
    Command {
        node: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("node {node}: {detail}")]
    Other { node: String, detail: String },
}

impl NodeSsh {
    pub fn new(
        target: NodeSshTarget,
        dialer: Arc<dyn Dialer>,
        ctx: SshContext,
        timeout: Duration,
    ) -> Self {
        Self {
            target,
            dialer,
            ctx,
            timeout,
            sessions: Mutex::new(BTreeMap::new()),
            opened: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn target(&self) -> &NodeSshTarget {
        &self.target
    }

    /// SSH sessions opened so far.
    pub fn sessions_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn connect_err(&self, node: &str, host: &str, port: u16, source: SshError) -> NodeSshError {
        NodeSshError::Connect {
            node: node.to_string(),
            user: self.target.user.clone(),
            host: host.to_string(),
            port,
            source,
        }
    }

    /// The session to `node`, opened when needed.
    pub async fn session(&self, node: &str) -> Result<Arc<SshSession>, NodeSshError> {
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(node).filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(s));
        }
        let api = match sessions
            .get(&self.target.api_node)
            .filter(|s| !s.is_closed())
        {
            Some(s) => Arc::clone(s),
            None => {
                let peer = Peer {
                    host: self.target.api_host.clone(),
                    port: self.target.port,
                    user: self.target.user.clone(),
                    identity: String::new(),
                };
                let s = SshSession::connect(self.dialer.as_ref(), peer, &self.ctx, self.timeout)
                    .await
                    .map_err(|e| {
                        self.connect_err(
                            &self.target.api_node,
                            &self.target.api_host,
                            self.target.port,
                            e,
                        )
                    })?;
                self.opened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let s = Arc::new(s);
                sessions.insert(self.target.api_node.clone(), Arc::clone(&s));
                s
            }
        };
        if node == self.target.api_node {
            return Ok(api);
        }
        let stream = api
            .direct_tcpip(node, 22, self.timeout)
            .await
            .map_err(|e| self.connect_err(node, node, 22, e))?;
        let peer = Peer {
            host: node.to_string(),
            port: 22,
            user: self.target.user.clone(),
            identity: String::new(),
        };
        let s = SshSession::establish(stream, peer, &self.ctx, self.timeout)
            .await
            .map_err(|e| self.connect_err(node, node, 22, e))?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = Arc::new(s);
        sessions.insert(node.to_string(), Arc::clone(&s));
        Ok(s)
    }

    /// Run `command` on `node`; a non-zero exit is an error carrying stderr.
    pub async fn run(&self, node: &str, command: &str) -> Result<ExecOutput, NodeSshError> {
        let s = self.session(node).await?;
        let out = s
            .exec(command, self.timeout * 4)
            .await
            .map_err(|e| NodeSshError::Other {
                node: node.to_string(),
                detail: e.to_string(),
            })?;
        if out.exit_status != Some(0) {
            return Err(NodeSshError::Command {
                node: node.to_string(),
                command: command.to_string(),
                status: out
                    .exit_status
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out)
    }

    /// Close every session.
    pub async fn close(&self) {
        let sessions = std::mem::take(&mut *self.sessions.lock().await);
        for s in sessions.values() {
            s.close().await;
        }
    }
}
