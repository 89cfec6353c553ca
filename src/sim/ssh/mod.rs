//! The simulator's SSH side, entirely in-process:
//!
//! - every node answers SSH (`root` with the keys in [`SimSshConfig::node_keys`]): `exec` of
//!   `pvesm path`, `ip -4 -o addr show dev <bridge>` and `true`; the `sftp` subsystem into the
//!   node's snippet storages (see [`crate::sim::snippets`]); and `direct-tcpip` to the guests
//!   of the cluster and to other nodes by name (a Proxmox cluster's flat management network);
//! - every started VM answers SSH on port 22 once its boot delay
//!   ([`crate::sim::LatencyModel::ssh_boot_ms`] plus a stable per-VM jitter) has passed,
//!   accepting only the user and keys its cloud-init delivered (native `ciuser`/`sshkeys` or
//!   a `cicustom` user snippet), and runs `true` and `cloud-init status --wait`.
//!
//! [`SimSsh`] is also the engine's [`Dialer`] for `--sim`: it connects to these servers over
//! in-memory pipes and has no code path that opens a socket, so a simulated run can never
//! send a packet to a VM's (often real-looking, e.g. `10.20.0.11`) address.
//!
//! Faults: a VM that never boots SSH, slow banners, a cloud-init exit status. Knows nothing
//! about the engine.

mod sftp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use super::core::{guard, Sim};
use super::model::Vm;
use crate::ssh::dial::{BoxStream, DialError, Dialer};

/// SSH settings of a simulator.
#[derive(Clone, Debug, Default)]
pub struct SimSshConfig {
    /// `(user, public key)` pairs every node accepts (OpenSSH public key lines).
    pub node_keys: Vec<(String, String)>,
    /// Whether the machine running the engine can reach guest addresses directly (a routed
    /// management network). Off: only the nodes reach guests (the ProxyJump path).
    pub workstation_reaches_guests: bool,
    /// The addresses that reach the default (first) node, besides node names: e.g. the
    /// `api_ip` written into the runtime root.
    pub node_aliases: Vec<String>,
    /// Bridge → addresses (`gw/prefix`) on every node, for `ip -4 -o addr show dev`.
    pub bridge_addresses: BTreeMap<String, Vec<String>>,
}

/// SSH faults, by VM name (the physical name the engine gives).
#[derive(Clone, Debug, Default)]
pub struct SshFaults {
    /// VMs whose sshd never starts (connections are refused).
    pub never_boot: BTreeSet<String>,
    /// VMs whose sshd waits this many simulated ms before sending its banner.
    pub slow_banner_ms: BTreeMap<String, u64>,
    /// VMs whose `cloud-init status --wait` exits with this status (default 0).
    pub cloud_init_exit: BTreeMap<String, u32>,
}

/// Counters of the SSH side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshCounters {
    /// SSH connections accepted by nodes.
    pub node_sessions: u64,
    /// SSH connections accepted by guests.
    pub guest_sessions: u64,
    /// `direct-tcpip` channels nodes opened.
    pub direct_tcpip: u64,
    /// Snippet files written over SFTP.
    pub sftp_writes: u64,
    /// Snippet files removed over SFTP.
    pub sftp_removes: u64,
}

/// The simulated SSH network.
pub struct SimSsh {
    sim: Arc<Sim>,
    cfg: SimSshConfig,
    node_keys: Mutex<Vec<(String, PublicKey)>>,
    node_aliases: Mutex<Vec<String>>,
    seed: u64,
    faults: Mutex<SshFaults>,
    counters: Mutex<SshCounters>,
    /// Services on the management network the nodes reach and the workstation may not
    /// (e.g. NetBox behind the Proxmox host): `(host, port)` → a real loopback address.
    services: Mutex<BTreeMap<(String, u16), std::net::SocketAddr>>,
}

impl std::fmt::Debug for SimSsh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSsh").finish_non_exhaustive()
    }
}

/// A stable host key: the same machine identity always gets the same key.
fn host_key(seed: u64, identity: &str) -> PrivateKey {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("hyops-pve-sim-host-key/{seed}/{identity}").as_bytes());
    let mut s = [0u8; 32];
    s.copy_from_slice(&d);
    PrivateKey::from(Ed25519Keypair::from_seed(&s))
}

fn server_config(key: PrivateKey) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-OpenSSH_9.6p1 hyops-pve-sim".into()),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(5),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: Some(Duration::from_secs(600)),
        nodelay: true,
        ..Default::default()
    })
}

/// The VM identity string the simulator derives host keys from (VMID and SMBIOS UUID: a
/// re-created VM gets a new key, as cloud-init regenerates host keys per instance).
pub fn vm_identity(vm: &Vm) -> String {
    let uuid = vm
        .config
        .get("smbios1")
        .and_then(|s| s.split(',').find_map(|p| p.strip_prefix("uuid=")))
        .unwrap_or("");
    format!("vm:{}:{uuid}", vm.vmid)
}

impl SimSsh {
    pub(crate) fn new(sim: Arc<Sim>, cfg: SimSshConfig, seed: u64) -> Self {
        let node_keys = cfg
            .node_keys
            .iter()
            .filter_map(|(u, k)| PublicKey::from_openssh(k).ok().map(|k| (u.clone(), k)))
            .collect();
        Self {
            sim,
            node_aliases: Mutex::new(cfg.node_aliases.clone()),
            cfg,
            node_keys: Mutex::new(node_keys),
            seed,
            faults: Mutex::new(SshFaults::default()),
            counters: Mutex::new(SshCounters::default()),
            services: Mutex::new(BTreeMap::new()),
        }
    }

    /// Put a service on the management network: a node's `direct-tcpip` to `host:port`
    /// reaches `to` (a loopback listener), as an `ssh -L` through the Proxmox host would
    /// reach NetBox. Only loopback targets are accepted.
    pub fn add_service(
        &self,
        host: &str,
        port: u16,
        to: std::net::SocketAddr,
    ) -> Result<(), String> {
        if !to.ip().is_loopback() {
            return Err(format!("{to} is not a loopback address"));
        }
        guard(&self.services).insert((host.to_string(), port), to);
        Ok(())
    }

    /// Let `user` log in to every node with this OpenSSH public key line.
    pub fn authorize_node_key(&self, user: &str, public_key: &str) -> Result<(), String> {
        let k = PublicKey::from_openssh(public_key.trim())
            .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
        let mut keys = guard(&self.node_keys);
        if !keys
            .iter()
            .any(|(u, x)| u == user && x.key_data() == k.key_data())
        {
            keys.push((user.to_string(), k));
        }
        Ok(())
    }

    /// Make `host` reach the default (first) node (e.g. the runtime root's `api_ip`).
    pub fn add_node_alias(&self, host: &str) {
        let mut a = guard(&self.node_aliases);
        if !a.iter().any(|x| x == host) {
            a.push(host.to_string());
        }
    }

    /// Change the SSH faults at runtime.
    pub fn set_faults(&self, f: SshFaults) {
        *guard(&self.faults) = f;
    }

    /// Edit the SSH faults at runtime.
    pub fn edit_faults(&self, edit: impl FnOnce(&mut SshFaults)) {
        edit(&mut guard(&self.faults));
    }

    pub fn counters(&self) -> SshCounters {
        guard(&self.counters).clone()
    }

    /// The public host key of a node (for tests that pin it).
    pub fn node_host_key(&self, node: &str) -> PublicKey {
        host_key(self.seed, &format!("node:{node}"))
            .public_key()
            .clone()
    }

    /// The node `host` names (a node name or an alias of the default node).
    fn node_for_host(&self, host: &str) -> Option<String> {
        let state = self.sim.state();
        if state.cluster.nodes.iter().any(|n| n == host) {
            return Some(host.to_string());
        }
        if guard(&self.node_aliases).iter().any(|a| a == host) {
            return state.cluster.nodes.first().cloned();
        }
        None
    }

    /// Simulated ms after start until `vm`'s sshd accepts: base plus a stable jitter.
    pub fn ssh_boot_ms(&self, vmid: u32) -> u64 {
        use sha2::{Digest, Sha256};
        let l = &self.sim.latency;
        let d = Sha256::digest(format!("ssh-boot/{}/{vmid}", self.seed).as_bytes());
        let r = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        l.ssh_boot_ms
            + if l.ssh_boot_jitter_ms == 0 {
                0
            } else {
                r % (l.ssh_boot_jitter_ms + 1)
            }
    }

    /// Connect to a guest at `addr:port` as seen from the cluster network.
    async fn connect_guest(
        self: &Arc<Self>,
        addr: &str,
        port: u16,
    ) -> Result<BoxStream, DialError> {
        let (vm, name, custom) = {
            let state = self.sim.state();
            let found = state.vms.values().find(|v| {
                !v.is_template()
                    && v.config
                        .keys()
                        .filter_map(|k| k.strip_prefix("net").and_then(|i| i.parse::<u32>().ok()))
                        .any(|i| super::cloudinit::guest_ipv4(v, i).0 == addr)
            });
            let Some(vm) = found else {
                return Err(DialError::Unreachable);
            };
            (
                vm.clone(),
                vm.name(),
                state.cloudinit_custom.get(&vm.vmid).cloned(),
            )
        };
        if !vm.running {
            return Err(DialError::Unreachable);
        }
        let faults = guard(&self.faults).clone();
        let up_at = vm
            .started_at_ms
            .unwrap_or(0)
            .saturating_add(self.ssh_boot_ms(vm.vmid));
        if port != 22 || faults.never_boot.contains(&name) || self.sim.clock.now_ms() < up_at {
            return Err(DialError::Refused);
        }
        let accounts = super::snippets::guest_accounts(&vm, custom.as_ref());
        let handler = GuestHandler {
            accounts: accounts
                .into_iter()
                .map(|(u, keys)| {
                    (
                        u,
                        keys.iter()
                            .filter_map(|k| PublicKey::from_openssh(k).ok())
                            .collect(),
                    )
                })
                .collect(),
            cloud_init_exit: faults.cloud_init_exit.get(&name).copied().unwrap_or(0),
            channels: BTreeMap::new(),
        };
        let key = host_key(self.seed, &vm_identity(&vm));
        let banner_delay = self
            .sim
            .clock
            .real(faults.slow_banner_ms.get(&name).copied().unwrap_or(0));
        guard(&self.counters).guest_sessions += 1;
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            if !banner_delay.is_zero() {
                tokio::time::sleep(banner_delay).await;
            }
            let _ = russh::server::run_stream(server_config(key), theirs, handler).await;
        });
        Ok(Box::new(ours))
    }

    /// Connect to node `node`'s sshd.
    fn connect_node(self: &Arc<Self>, node: &str) -> BoxStream {
        guard(&self.counters).node_sessions += 1;
        let handler = NodeHandler {
            net: Arc::clone(self),
            node: node.to_string(),
            user: None,
            channels: BTreeMap::new(),
        };
        let key = host_key(self.seed, &format!("node:{node}"));
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            let _ = russh::server::run_stream(server_config(key), theirs, handler).await;
        });
        Box::new(ours)
    }

    /// What a node's `exec` answers: (stdout, stderr, exit status).
    fn node_exec(&self, node: &str, command: &str) -> (String, String, u32) {
        let argv: Vec<&str> = command.split_whitespace().collect();
        match argv.as_slice() {
            ["true"] => (String::new(), String::new(), 0),
            ["pvesm", "path", volid] => {
                let state = self.sim.state();
                match volid.split_once(':') {
                    Some((storage, name)) if state.cluster.storage_on(storage, node).is_some() => {
                        match name.strip_prefix("snippets/") {
                            Some(file) => (
                                format!("{}\n", super::snippets::volume_path(storage, file)),
                                String::new(),
                                0,
                            ),
                            None => (
                                String::new(),
                                format!("unable to parse volume filename '{name}'\n"),
                                255,
                            ),
                        }
                    }
                    Some((storage, _)) => (
                        String::new(),
                        format!("storage '{storage}' does not exist\n"),
                        255,
                    ),
                    None => (
                        String::new(),
                        format!("unable to parse volume ID '{volid}'\n"),
                        255,
                    ),
                }
            }
            ["ip", "-4", "-o", "addr", "show", "dev", dev] => {
                match self.cfg.bridge_addresses.get(*dev) {
                    Some(addrs) => {
                        let out: String = addrs
                            .iter()
                            .enumerate()
                            .map(|(i, a)| {
                                format!("{}: {dev}    inet {a} scope global {dev}\\       valid_lft forever preferred_lft forever\n", 5 + i)
                            })
                            .collect();
                        (out, String::new(), 0)
                    }
                    None if *dev == "vmbr0" => (String::new(), String::new(), 0),
                    None => (
                        String::new(),
                        format!("Device \"{dev}\" does not exist.\n"),
                        1,
                    ),
                }
            }
            _ => (
                String::new(),
                format!(
                    "bash: line 1: {}: command not found\n",
                    argv.first().copied().unwrap_or("")
                ),
                127,
            ),
        }
    }
}

#[async_trait::async_trait]
impl Dialer for Arc<SimSsh> {
    async fn dial(
        &self,
        host: &str,
        port: u16,
        _timeout: Duration,
    ) -> Result<BoxStream, DialError> {
        if let Some(node) = self.node_for_host(host) {
            return if port == 22 {
                Ok(self.connect_node(&node))
            } else {
                Err(DialError::Refused)
            };
        }
        if self.cfg.workstation_reaches_guests {
            return self.connect_guest(host, port).await;
        }
        // Not routed from the engine's machine: nothing answers.
        Err(DialError::Unreachable)
    }
}

/// A node's sshd session.
struct NodeHandler {
    net: Arc<SimSsh>,
    node: String,
    user: Option<String>,
    channels: BTreeMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for NodeHandler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let ok = guard(&self.net.node_keys)
            .iter()
            .any(|(u, k)| u == user && k.key_data() == key.public_key.key_data());
        if ok {
            self.user = Some(user.to_string());
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(data).into_owned();
        let (out, err, code) = self.net.node_exec(&self.node, &cmd);
        session.channel_success(channel)?;
        reply_exec(session, channel, out, err, code)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (name, self.channels.remove(&channel)) {
            ("sftp", Some(ch)) => {
                session.channel_success(channel)?;
                let handler = sftp::SnippetSftp::new(Arc::clone(&self.net), self.node.clone());
                russh_sftp::server::run(ch.into_stream(), handler).await;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let port = u16::try_from(port_to_connect).unwrap_or(0);
        let service = guard(&self.net.services)
            .get(&(host_to_connect.to_string(), port))
            .copied();
        let target = match self.net.node_for_host(host_to_connect) {
            _ if service.is_some() => match service {
                Some(to) => tokio::net::TcpStream::connect(to)
                    .await
                    .map(|s| Box::new(s) as BoxStream)
                    .map_err(|_| DialError::Refused),
                None => Err(DialError::Refused),
            },
            Some(node) if port == 22 => Ok(self.net.connect_node(&node)),
            Some(_) => Err(DialError::Refused),
            None => self.net.connect_guest(host_to_connect, port).await,
        };
        match target {
            Ok(mut stream) => {
                guard(&self.net.counters).direct_tcpip += 1;
                reply.accept().await;
                tokio::spawn(async move {
                    let mut ch = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut ch, &mut stream).await;
                });
            }
            // sshd answers a failed forward with "connect failed" (OPEN_CONNECT_FAILED).
            Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
        }
        Ok(())
    }
}

/// Answer an `exec` with output and an exit status, then close the channel.
fn reply_exec(
    session: &mut Session,
    channel: ChannelId,
    out: String,
    err: String,
    code: u32,
) -> Result<(), russh::Error> {
    if !out.is_empty() {
        session.data(channel, out.into_bytes())?;
    }
    if !err.is_empty() {
        session.extended_data(channel, 1, err.into_bytes())?;
    }
    session.exit_status_request(channel, code)?;
    session.eof(channel)?;
    session.close(channel)
}

/// A guest's sshd session.
struct GuestHandler {
    accounts: Vec<(String, Vec<PublicKey>)>,
    cloud_init_exit: u32,
    channels: BTreeMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for GuestHandler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let ok = self.accounts.iter().any(|(u, keys)| {
            u == user
                && keys
                    .iter()
                    .any(|k| k.key_data() == key.public_key.key_data())
        });
        Ok(if ok { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(data).trim().to_string();
        session.channel_success(channel)?;
        let (out, err, code) = if cmd == "true" {
            (String::new(), String::new(), 0)
        } else if cmd.starts_with("cloud-init status") {
            // cloud-init's documented return codes: 0 done, 1 error, 2 degraded (recoverable).
            let status = match self.cloud_init_exit {
                0 => "status: done\n",
                2 => "status: degraded done\n",
                _ => "status: error\n",
            };
            (status.to_string(), String::new(), self.cloud_init_exit)
        } else {
            (
                String::new(),
                format!("bash: line 1: {cmd}: command not found\n"),
                127,
            )
        };
        reply_exec(session, channel, out, err, code)
    }
}
