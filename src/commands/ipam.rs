//! The NetBox side of `validate`/`preflight`/`plan`/`apply` (contract §4.1–4.6), in the
//! order upstream's `ProxmoxVmContract.preprocess_inputs` runs it:
//! 1. the managed-bridge guard for `vnet*` bridges (every mode) against the SDN authority;
//! 2. for `addressing.mode: ipam`: the addressing-contract probe when `NETBOX_API_URL` and
//!    `NETBOX_API_TOKEN` are in the process env, NetBox readiness in the authority root,
//!    credential hydration, the reachability probe (retried; SSH tunnel seam), the SDN read,
//!    the per-NIC requests in overlay order and the §4.6 checks of explicit addresses;
//! 3. `plan`: a read-only preview (reuse / allocate first free); `apply`: the allocation,
//!    written to `ipam_allocations.json`.
//!
//! Part of the CLI layer: reads HyOps state, writes evidence; NetBox calls go through
//! [`crate::netbox`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::commands::context::Ctx;
use crate::commands::phases::Run;
use crate::commands::CliError;
use crate::hyops::claims::{collect_ipv4_claims, Ipv4Claim};
use crate::hyops::netbox_env::{
    hydrate_netbox_env, netbox_authority_root, netbox_ready, NetboxEnv,
};
use crate::hyops::sdn::{
    host_probe_skipped_warning, managed_bridge_guard, managed_bridges, py_repr, read_sdn_for_ipam,
    SdnAuthority, NETWORK_SDN_REF,
};
use crate::hyops::{read_proxmox_ready, write_json_atomic, ModuleState, ProxmoxCredentials};
use crate::inputs::model::{Addressing, Ipv4Config, LogicalVmKey, ModuleInputs, VmMode};
use crate::netbox::ipam::{
    allocate, check_explicit, preview, AllocateOptions, ExplicitRequest, IpamAction, NicDecision,
    NicRequest, Pool,
};
use crate::netbox::probe::{
    addressing_probe, probe_once, probe_with_retry, ready_after_wait_warning, JumpSpec, Tunnel,
    TunnelOpener,
};
use crate::netbox::{NetboxClient, NetboxConfig};
use crate::plan::desired::{PendingAllocations, PendingIpam};
use crate::pve::TlsMode;
use crate::retry::RetryPolicy;
use crate::secret::Secret;

/// `$HOME` of the command's environment (authority roots live under it).
pub fn home(ctx: &Ctx) -> PathBuf {
    ctx.env_vars
        .get("HOME")
        .filter(|h| !h.trim().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn truthy(env: &BTreeMap<String, String>, key: &str) -> bool {
    env.get(key)
        .is_some_and(|v| crate::hyops::credentials::truthy(v))
}

/// Hydrate the NetBox settings (§4.1) for this command.
pub fn hydrate(ctx: &Ctx) -> Result<(NetboxEnv, PathBuf), CliError> {
    let authority =
        netbox_authority_root(&ctx.root, &ctx.env_vars, &home(ctx)).map_err(CliError::hyops)?;
    let vault_password = match crate::hyops::password_source(&ctx.env_vars) {
        Some(src) => crate::hyops::read_password(
            &src,
            crate::hyops::netbox_env::netbox_vault_read_timeout(&ctx.env_vars),
        )
        .ok(),
        None => None,
    };
    let env = hydrate_netbox_env(
        &ctx.root,
        &authority,
        &ctx.env_vars,
        vault_password.as_ref(),
    )
    .map_err(CliError::hyops)?;
    Ok((env, authority))
}

/// The TLS mode for NetBox: a pin, a CA file, explicit skip, or the system roots.
pub fn tls_mode(env: &NetboxEnv) -> TlsMode {
    if env.skip_tls {
        TlsMode::Insecure
    } else if let Some(fp) = &env.tls_fingerprint {
        TlsMode::Fingerprint(fp.clone())
    } else if let Some(ca) = &env.ca_file {
        TlsMode::CaFile(PathBuf::from(ca))
    } else {
        TlsMode::SystemRoots
    }
}

/// [`client_for`] with a host pinned to a local address (the tunnel's named https host).
#[allow(clippy::too_many_arguments)]
pub fn client_for_resolved(
    env: &NetboxEnv,
    url: &str,
    token: &Secret,
    timeout: Duration,
    retry: RetryPolicy,
    run_id: Option<&str>,
    resolve: Option<(String, std::net::SocketAddr)>,
) -> Result<NetboxClient, CliError> {
    let mut cfg = NetboxConfig::new(url, token.clone());
    cfg.tls = tls_mode(env);
    cfg.request_timeout = timeout;
    cfg.connect_timeout = timeout.min(Duration::from_secs(5));
    cfg.retry = retry;
    cfg.changelog_message = run_id.map(|r| format!("hyops-pve {r}"));
    cfg.resolve = resolve;
    NetboxClient::new(cfg).map_err(|e| CliError::msg(e.to_string()))
}

/// A NetBox client for `url`/`token` with the hydrated TLS settings.
pub fn client_for(
    env: &NetboxEnv,
    url: &str,
    token: &Secret,
    timeout: Duration,
    retry: RetryPolicy,
    run_id: Option<&str>,
) -> Result<NetboxClient, CliError> {
    let mut cfg = NetboxConfig::new(url, token.clone());
    cfg.tls = tls_mode(env);
    cfg.request_timeout = timeout;
    cfg.connect_timeout = timeout.min(Duration::from_secs(5));
    cfg.retry = retry;
    cfg.changelog_message = run_id.map(|r| format!("hyops-pve {r}"));
    NetboxClient::new(cfg).map_err(|e| CliError::msg(e.to_string()))
}

fn secs(env: &BTreeMap<String, String>, key: &str, default: f64) -> f64 {
    env.get(key)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(default)
}

/// Bridges of every VM NIC (after alias rewrite), in order of first use.
/// `_collect_requested_bridges` on the resolved inputs (bridge aliases already rewritten):
/// `inputs.vms.*.interfaces[*].bridge` when `vms` is a non-empty map, otherwise
/// `inputs.interfaces[*].bridge` and `inputs.vm_bridge`. Only strings can name a `vnet*`
/// bridge, so only strings are kept.
fn requested_bridges(inputs: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut nic_bridges = |ifaces: Option<&Value>| {
        for nic in ifaces.and_then(Value::as_array).into_iter().flatten() {
            if let Some(b) = nic.get("bridge").and_then(Value::as_str) {
                let b = crate::yaml::py_strip(b);
                if !b.is_empty() {
                    out.push(b.to_string());
                }
            }
        }
    };
    match inputs.get("vms").and_then(Value::as_object) {
        Some(vms) if !vms.is_empty() => {
            for vm in vms.values() {
                nic_bridges(vm.get("interfaces"));
            }
        }
        _ => {
            nic_bridges(inputs.get("interfaces"));
            if let Some(b) = inputs.get("vm_bridge").and_then(Value::as_str) {
                let b = crate::yaml::py_strip(b);
                if !b.is_empty() {
                    out.push(b.to_string());
                }
            }
        }
    }
    out
}

/// The network-sdn state ref: `addressing.ipam.network_state_ref` whenever `addressing.ipam`
/// is a map (the managed-bridge guard reads it in any mode), else `core/onprem/network-sdn`.
fn bridges_state_ref(inputs: &Value) -> String {
    let ipam = inputs
        .get("addressing")
        .and_then(|a| a.get("ipam"))
        .filter(|i| i.is_object());
    let Some(ipam) = ipam else {
        return NETWORK_SDN_REF.to_string();
    };
    // `str(raw_ipam.get("network_state_ref") or "core/onprem/network-sdn").strip()`
    match ipam
        .get("network_state_ref")
        .map(crate::yaml::PyValue::from)
        .filter(crate::yaml::PyValue::truthy)
    {
        Some(v) => crate::yaml::py_strip(&v.py_str()).to_string(),
        None => NETWORK_SDN_REF.to_string(),
    }
}

/// The managed-bridge guard (§4.3) for every mode, then upstream's host-side gateway probe
/// over node SSH (when `proxmox.ready.json` publishes `api_ip` and the credentials name a
/// `proxmox_ssh_key`; otherwise upstream's "skipped" warning). Returns the warnings; a
/// missing vnet or gateway, or a drifted host gateway, is the error.
pub async fn bridge_guard(
    ctx: &Ctx,
    resolved_json: &Value,
    creds: Option<&ProxmoxCredentials>,
) -> Result<Vec<String>, CliError> {
    let bridges = requested_bridges(resolved_json);
    let managed = managed_bridges(bridges.iter().map(String::as_str));
    if managed.is_empty() {
        return Ok(Vec::new());
    }
    let sref = bridges_state_ref(resolved_json);
    let guard = managed_bridge_guard(&ctx.root, &ctx.env_vars, &home(ctx), &sref, &managed)
        .map_err(|(_w, e)| CliError::msg(e))?;
    let mut warnings = guard.warnings;
    let api_ip = read_proxmox_ready(&ctx.root)
        .ok()
        .flatten()
        .and_then(|r| r.api_ip)
        .filter(|h| !h.trim().is_empty());
    let key = creds.and_then(|c| c.ssh_key.clone());
    match (api_ip, creds, key) {
        (None, _, _) => warnings.push(host_probe_skipped_warning(None, None, None)),
        (Some(ip), _, None) | (Some(ip), None, _) => {
            warnings.push(host_probe_skipped_warning(Some(&ip), None, None))
        }
        (Some(_), Some(creds), Some(_)) => {
            let ssh = crate::commands::phases::node_ssh(ctx, creds)?;
            let expected: BTreeMap<String, Vec<String>> = guard
                .expected_gateways
                .iter()
                .map(|(b, set)| (b.clone(), set.iter().cloned().collect()))
                .collect();
            let env_name = ctx.env_name.clone().unwrap_or_else(|| "shared".into());
            let node = ssh.target().api_node.clone();
            let checked =
                crate::ssh::sdn::check_gateways(&ssh, &node, &managed, &expected, &env_name).await;
            ssh.close().await;
            match checked {
                Ok(Some(w)) => warnings.push(w),
                Ok(None) => {}
                Err(drift) => return Err(CliError::msg(drift)),
            }
        }
    }
    Ok(warnings)
}

/// What IPAM needs after the read-only checks.
pub struct IpamPrepared {
    pub client: NetboxClient,
    pub authority: SdnAuthority,
    /// NICs to allocate or reuse, in upstream order.
    pub requests: Vec<NicRequest>,
    /// Explicit addresses that passed §4.6.
    pub explicit: Vec<NicDecision>,
    /// Hosts published by ok platform-vm slots of this env.
    pub used_hosts: BTreeSet<Ipv4Addr>,
    /// The NetBox base URL (never the token).
    pub url: String,
    /// The SSH tunnel NetBox is reached through, kept open until the run ends.
    pub tunnel: Option<Tunnel>,
}

/// The IPAM result the planner consumes.
pub struct IpamOutcome {
    /// The inputs with every IPAM NIC's address filled in (reuse/allocated).
    pub model: ModuleInputs,
    pub decisions: Vec<NicDecision>,
    /// Plan only: NICs still to be allocated.
    pub pending: PendingAllocations,
}

/// VM keys in overlay order (upstream walks `inputs.vms` in insertion order), then any
/// others in key order.
fn vm_order(model: &ModuleInputs, resolved_json: &Value) -> Vec<LogicalVmKey> {
    let mut out: Vec<LogicalVmKey> = Vec::new();
    if model.mode == VmMode::Pool {
        if let Some(vms) = resolved_json.get("vms").and_then(Value::as_object) {
            for k in vms.keys() {
                let key = LogicalVmKey(k.clone());
                if model.vms.contains_key(&key) && !out.contains(&key) {
                    out.push(key);
                }
            }
        }
    }
    for k in model.vms.keys() {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
}

/// Published addresses of this slot's previous ok state: (key, 0-based NIC) → host.
fn published_addresses(ctx: &Ctx) -> BTreeMap<(String, usize), Ipv4Addr> {
    let mut out = BTreeMap::new();
    let state = ModuleState::new(&ctx.root, &ctx.module_ref, ctx.instance.as_ref());
    let Ok(Some(s)) = state.read() else {
        return out;
    };
    if s.get("status").and_then(Value::as_str) != Some("ok") {
        return out;
    }
    let Some(vms) = s
        .get("outputs")
        .and_then(|o| o.get("vms"))
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (k, vm) in vms {
        let Some(ifaces) = vm.get("interfaces_configured").and_then(Value::as_array) else {
            continue;
        };
        for (i, nic) in ifaces.iter().enumerate() {
            if let Some(h) = nic
                .get("ipv4")
                .and_then(|v| v.get("address"))
                .and_then(Value::as_str)
                .and_then(crate::netbox::objects::host_of)
            {
                out.insert((k.clone(), i), h);
            }
        }
    }
    out
}

/// Read-only IPAM preparation (validate, preflight, plan and apply). `Ok(None)` for a
/// non-IPAM overlay. `warnings` receives upstream's warnings.
pub async fn ipam_prepare(
    ctx: &Ctx,
    model: &ModuleInputs,
    resolved_json: &Value,
    warnings: &mut Vec<String>,
) -> Result<Option<IpamPrepared>, CliError> {
    let Some(Addressing::Ipam {
        ssh_proxy_jump_host,
        ssh_proxy_jump_user,
        ssh_proxy_jump_key_file,
        ..
    }) = &model.addressing
    else {
        return Ok(None);
    };
    let env = &ctx.env_vars;
    // Addressing contract (input resolution time upstream): probe when the process env
    // names NetBox, unless HYOPS_SKIP_NETBOX_PROBE.
    let env_url = env
        .get("NETBOX_API_URL")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let env_token = env
        .get("NETBOX_API_TOKEN")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    if let (Some(u), Some(t)) = (env_url, env_token) {
        if !truthy(env, "HYOPS_SKIP_NETBOX_PROBE") {
            let timeout = match env.get("HYOPS_NETBOX_PROBE_TIMEOUT_S").map(|v| v.trim()) {
                Some(v) if !v.is_empty() => v
                    .parse::<f64>()
                    .map(|f| f.max(1.0))
                    .map_err(|_| CliError::msg("HYOPS_NETBOX_PROBE_TIMEOUT_S must be a number"))?,
                _ => 5.0,
            };
            let base = u.trim_end_matches('/');
            let base = base.strip_suffix("/api").unwrap_or(base);
            let parsed = url::Url::parse(base).ok();
            if !parsed.as_ref().is_some_and(|p| {
                (p.scheme() == "http" || p.scheme() == "https") && p.host().is_some()
            }) {
                return Err(CliError::msg(
                    "NETBOX_API_URL must be an absolute http(s) URL",
                ));
            }
            let (nb_env, _) = hydrate(ctx)?;
            let c = client_for(
                &nb_env,
                base,
                &Secret::new(t),
                Duration::from_secs_f64(timeout),
                RetryPolicy::once(),
                None,
            )?;
            addressing_probe(&c).await.map_err(CliError::msg)?;
        }
    }

    // NetBox readiness in the authority root.
    let authority_root =
        netbox_authority_root(&ctx.root, env, &home(ctx)).map_err(CliError::hyops)?;
    netbox_ready(&authority_root).map_err(CliError::hyops)?;

    // Credentials and the reachability probe (§4.2).
    let (nb_env, _) = hydrate(ctx)?;
    warnings.extend(nb_env.warnings.iter().cloned());
    let (url, token) = nb_env
        .require(ctx.env_name.as_deref())
        .map_err(CliError::hyops)?;
    let probe_timeout =
        Duration::from_secs_f64(secs(env, "HYOPS_NETBOX_PROBE_TIMEOUT_S", 5.0).max(1.0));
    let wait = Duration::from_secs_f64(secs(env, "HYOPS_NETBOX_API_PROBE_WAIT_S", 30.0));
    let probe_client = client_for(
        &nb_env,
        &url,
        &token,
        probe_timeout,
        RetryPolicy::once(),
        None,
    )?;
    let (probe, elapsed) =
        probe_with_retry(|| probe_once(&probe_client), wait, Duration::from_secs(2)).await;
    let mut tunnel = None;
    let mut resolve = None;
    let base_url = match probe {
        Ok(()) => {
            warnings.extend(ready_after_wait_warning(elapsed, false));
            url.clone()
        }
        Err(err) => {
            if err.to_ascii_lowercase().contains("token is rejected") {
                return Err(CliError::msg(err));
            }
            let creds = ctx.credentials().ok();
            let api_ip = read_proxmox_ready(&ctx.root)
                .ok()
                .flatten()
                .and_then(|r| r.api_ip);
            let key = creds
                .as_ref()
                .and_then(|c| c.ssh_key.as_ref())
                .map(|k| k.display().to_string());
            let home_dir = home(ctx);
            let jump = crate::ssh::tunnel::tunnel_jump(
                ssh_proxy_jump_host.as_deref(),
                ssh_proxy_jump_user.as_deref(),
                ssh_proxy_jump_key_file.as_deref(),
                api_ip.as_deref(),
                creds.as_ref().map(|c| c.ssh_username.as_str()),
                key.as_deref(),
                Some(&home_dir),
            );
            let original = url::Url::parse(&url).ok();
            let (Some(jump), Some(original)) = (jump, original.filter(|u| u.host_str().is_some()))
            else {
                return Err(CliError::msg(crate::ssh::tunnel::unreachable_no_tunnel(
                    &err,
                )));
            };
            let spec = JumpSpec {
                host: jump.host.clone(),
                user: jump.user.clone(),
                key_file: jump.key_file.display().to_string(),
            };
            let host = original.host_str().unwrap_or_default().to_string();
            let port = original.port_or_known_default().unwrap_or(80);
            let default_opener;
            let opener: &dyn TunnelOpener = match ctx.netbox_tunnel.as_deref() {
                Some(o) => o,
                None => {
                    default_opener = SshTunnel {
                        dialer: ctx.dialer(),
                        known_hosts: ctx.known_hosts(),
                        original: original.clone(),
                    };
                    &default_opener
                }
            };
            let t = opener
                .open(&spec, &host, port)
                .await
                .map_err(|e| CliError::msg(crate::ssh::tunnel::tunnel_failed(&err, &e)))?;
            // Probe through the tunnel with the same patience.
            let tclient = client_for_resolved(
                &nb_env,
                &t.base_url,
                &token,
                probe_timeout,
                RetryPolicy::once(),
                None,
                t.resolve.clone(),
            )?;
            let (tprobe, telapsed) =
                probe_with_retry(|| probe_once(&tclient), wait, Duration::from_secs(2)).await;
            if let Err(e) = tprobe {
                return Err(CliError::msg(crate::ssh::tunnel::tunnel_probe_failed(
                    &err, &e,
                )));
            }
            warnings.push(crate::ssh::tunnel::tunnel_warning(&jump.user, &jump.host));
            warnings.extend(ready_after_wait_warning(telapsed, true));
            let base = t.base_url.clone();
            resolve = t.resolve.clone();
            tunnel = Some(t);
            base
        }
    };
    let client = client_for_resolved(
        &nb_env,
        &base_url,
        &token,
        Duration::from_secs(30),
        crate::netbox::default_policy(),
        None,
        resolve,
    )?;

    // The SDN authority as IPAM reads it.
    let sref = bridges_state_ref(resolved_json);
    let authority = read_sdn_for_ipam(&ctx.root, env, &home(ctx), &sref).map_err(|(w, e)| {
        warnings.extend(w);
        CliError::msg(e)
    })?;
    for w in &authority.warnings {
        if !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }

    let claims: BTreeMap<Ipv4Addr, Vec<Ipv4Claim>> =
        collect_ipv4_claims(&ctx.root, &ctx.module_ref).map_err(CliError::hyops)?;
    let used_hosts: BTreeSet<Ipv4Addr> = claims.keys().copied().collect();
    let published = published_addresses(ctx);
    let order = vm_order(model, resolved_json);

    // Pass 1: explicit addresses (§4.6), checked for every VM first, as upstream does.
    let mut explicit_reqs = Vec::new();
    for key in &order {
        let Some(vm) = model.vms.get(key) else {
            continue;
        };
        for (i, nic) in vm.interfaces.iter().enumerate() {
            let Some(Ipv4Config::Static { address, .. }) = &nic.ipv4 else {
                continue;
            };
            let subnet = authority.subnet_by_vnet.get(&nic.bridge).ok_or_else(|| {
                CliError::msg(format!(
                    "ipam cannot map bridge={} to a subnet from {sref}. Known vnets: [{}]",
                    py_repr(&nic.bridge),
                    authority.known_vnets()
                ))
            })?;
            let net: Ipv4Net = subnet
                .cidr
                .parse::<Ipv4Net>()
                .map(|n| n.trunc())
                .map_err(|e| {
                    CliError::msg(format!(
                        "ipam subnet for bridge={} has invalid cidr: {e}",
                        py_repr(&nic.bridge)
                    ))
                })?;
            let range = subnet
                .static_pool()
                .map(|p| p.range_text())
                .unwrap_or_default();
            explicit_reqs.push(ExplicitRequest {
                vm_key: key.0.clone(),
                bridge: nic.bridge.clone(),
                nic_index: i + 1,
                requested: *address,
                subnet: net,
                pool_range: range,
                claims: claims
                    .get(&address.addr())
                    .map(|cs| {
                        cs.iter()
                            .map(|c| (c.vm_name.clone(), c.bridge.clone(), c.nic_index, c.label()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    let explicit = check_explicit(&client, &authority.zone_name, &explicit_reqs)
        .await
        .map_err(CliError::msg)?;

    // Pass 2: NICs that need an address (no ipv4, or dhcp: replaced by a reservation).
    let mut requests = Vec::new();
    for key in &order {
        let Some(vm) = model.vms.get(key) else {
            continue;
        };
        if vm.interfaces.is_empty() {
            return Err(CliError::msg(match model.mode {
                VmMode::Pool => format!(
                    "ipam requires inputs.vms[{key}].interfaces (or module-level inputs.interfaces) so HybridOps can map bridge->subnet for allocation"
                ),
                VmMode::Single => "ipam requires inputs.interfaces (single-VM) or inputs.vms.<name>.interfaces (pool) so HybridOps can map bridge->subnet for allocation".to_string(),
            }));
        }
        for (i, nic) in vm.interfaces.iter().enumerate() {
            if matches!(nic.ipv4, Some(Ipv4Config::Static { .. })) {
                continue;
            }
            let subnet = authority.subnet_by_vnet.get(&nic.bridge).ok_or_else(|| {
                CliError::msg(format!(
                    "ipam cannot map bridge={} to a subnet from {sref}. Known vnets: [{}]",
                    py_repr(&nic.bridge),
                    authority.known_vnets()
                ))
            })?;
            if subnet.cidr.is_empty()
                || subnet.gateway.is_empty()
                || subnet.dhcp_range_start.is_empty()
            {
                return Err(CliError::msg(format!(
                    "ipam requires cidr/gateway/dhcp_range_start in subnet for bridge={}",
                    nic.bridge
                )));
            }
            let sp = subnet.static_pool().map_err(|e| {
                CliError::msg(format!(
                    "ipam static pool for bridge={} from {sref}: {e}",
                    nic.bridge
                ))
            })?;
            requests.push(NicRequest {
                vm_key: key.0.clone(),
                bridge: nic.bridge.clone(),
                nic_index: i + 1,
                pool: Pool {
                    network: sp.network,
                    gateway: sp.gateway,
                    start: sp.start,
                    end: sp.end,
                },
                vlan_id: authority.vlan_ids.get(&nic.bridge).copied(),
                published: published.get(&(key.0.clone(), i)).copied(),
            });
        }
    }
    Ok(Some(IpamPrepared {
        client,
        authority,
        requests,
        explicit,
        used_hosts,
        url: base_url,
        tunnel,
    }))
}

/// The SSH tunnel of §4.2 over the engine's SSH (node SSH's dialer and known_hosts): a
/// session to the jump host with its key, then a local forward to NetBox. The base URL keeps
/// its scheme; a named https host is pinned to the local end so TLS still checks the name.
pub struct SshTunnel {
    pub dialer: Arc<dyn crate::ssh::Dialer>,
    pub known_hosts: Arc<crate::ssh::KnownHosts>,
    pub original: url::Url,
}

impl TunnelOpener for SshTunnel {
    fn open<'a>(
        &'a self,
        jump: &'a JumpSpec,
        remote_host: &'a str,
        remote_port: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Tunnel, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let key = crate::ssh::Identities::key_file(std::path::Path::new(&jump.key_file))
                .map_err(|e| e.to_string())?;
            let ctx = crate::ssh::SshContext {
                identities: Arc::new(key),
                known_hosts: Arc::clone(&self.known_hosts),
            };
            let peer = crate::ssh::Peer {
                host: jump.host.clone(),
                port: 22,
                user: jump.user.clone(),
                identity: String::new(),
            };
            let timeout = Duration::from_secs(5);
            let session =
                crate::ssh::SshSession::connect(self.dialer.as_ref(), peer, &ctx, timeout)
                    .await
                    .map_err(|e| e.to_string())?;
            let forward = crate::ssh::tunnel::LocalForward::start(
                Arc::new(session),
                remote_host,
                remote_port,
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
            let endpoint =
                crate::ssh::tunnel::tunnel_endpoint(&self.original, forward.local_addr());
            Ok(Tunnel {
                base_url: endpoint.base_url,
                resolve: endpoint.resolve,
                guard: Box::new(forward),
            })
        })
    }
}

/// Fill every IPAM NIC with its address: NIC 0 gets the subnet gateway, others none.
fn fill(
    model: &ModuleInputs,
    decisions: &[NicDecision],
    pools: &BTreeMap<(String, usize), Pool>,
) -> Result<ModuleInputs, CliError> {
    let mut out = model.clone();
    for d in decisions {
        if d.action == IpamAction::Explicit || d.action == IpamAction::Allocate {
            continue;
        }
        let idx = d.nic_index.saturating_sub(1);
        let Some(addr) = &d.address else { continue };
        let address: Ipv4Net = addr.parse().map_err(|e| {
            CliError::msg(format!(
                "NetBox returned address {addr:?} for {} that is not IPv4/len: {e}",
                d.identity
            ))
        })?;
        let gateway = pools.get(&(d.vm_key.clone(), idx)).map(|p| p.gateway);
        if let Some(nic) = out
            .vms
            .get_mut(&LogicalVmKey(d.vm_key.clone()))
            .and_then(|vm| vm.interfaces.get_mut(idx))
        {
            nic.ipv4 = Some(Ipv4Config::Static {
                address,
                gateway: if idx == 0 { gateway } else { None },
            });
        }
    }
    Ok(out)
}

fn pools(p: &IpamPrepared) -> BTreeMap<(String, usize), Pool> {
    p.requests
        .iter()
        .map(|r| ((r.vm_key.clone(), r.nic_index - 1), r.pool))
        .collect()
}

fn ordered(p: &IpamPrepared, mut decisions: Vec<NicDecision>) -> Vec<NicDecision> {
    decisions.extend(p.explicit.iter().cloned());
    let order: Vec<&str> = {
        let mut o: Vec<&str> = Vec::new();
        for r in &p.requests {
            if !o.contains(&r.vm_key.as_str()) {
                o.push(&r.vm_key);
            }
        }
        o
    };
    decisions.sort_by_key(|d| {
        (
            order
                .iter()
                .position(|k| *k == d.vm_key)
                .unwrap_or(usize::MAX),
            d.vm_key.clone(),
            d.nic_index,
        )
    });
    decisions
}

/// `plan`/`preflight`: reuse what NetBox holds, mark the rest pending; never writes.
pub async fn ipam_preview(p: &IpamPrepared, model: &ModuleInputs) -> Result<IpamOutcome, CliError> {
    let decisions = preview(&p.client, &p.authority.zone_name, &p.requests)
        .await
        .map_err(|e| CliError::msg(e.to_string()))?;
    let pools = pools(p);
    let mut pending = PendingAllocations::new();
    for d in decisions
        .iter()
        .filter(|d| d.action == IpamAction::Allocate)
    {
        let idx = d.nic_index - 1;
        pending.insert(
            (d.vm_key.clone(), idx),
            PendingIpam {
                range: d.range.clone(),
                gateway: pools.get(&(d.vm_key.clone(), idx)).map(|p| p.gateway),
            },
        );
    }
    let model = fill(model, &decisions, &pools)?;
    Ok(IpamOutcome {
        model,
        decisions: ordered(p, decisions),
        pending,
    })
}

/// `apply`/`deploy`: reuse or reserve every IPAM NIC's address; writes
/// `ipam_allocations.json` into the evidence dir (also when allocation fails part way).
pub async fn ipam_allocate(
    p: &IpamPrepared,
    model: &ModuleInputs,
    run: &Run,
) -> Result<IpamOutcome, CliError> {
    let before = p.client.metrics();
    let opts = AllocateOptions {
        zone: p.authority.zone_name.clone(),
        used_hosts: p.used_hosts.clone(),
        settle: Duration::from_secs(10),
    };
    let result = allocate(&p.client, &opts, &p.requests).await;
    let used = p.client.metrics().since(&before);
    let (decisions, error) = match result {
        Ok(d) => (d, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let decisions = ordered(p, decisions);
    let record = json!({
        "run_id": run.run_id,
        "zone": p.authority.zone_name,
        "network_state_ref": p.authority.network_state_ref,
        "netbox": {"url": p.url, "api_version": p.client.api_version()},
        "status": if error.is_some() { "error" } else { "ok" },
        "error": error,
        "allocations": decisions,
        "requests": {"total": used.total, "writes": used.writes, "by_endpoint": used.calls},
    });
    // Nothing has changed in Proxmox yet: an allocation record that cannot be written stops
    // the run here (the reservations carry this slot's identities, so nothing is lost).
    write_json_atomic(&run.evidence.join("ipam_allocations.json"), &record).map_err(|e| {
        let e = CliError::hyops(e);
        CliError::msg(format!(
            "cannot record the NetBox IPAM allocations, so no VM was changed: {}; the addresses reserved in NetBox keep this slot's identities and the next apply reuses them",
            e.message
        ))
    })?;
    if let Some(e) = error {
        return Err(CliError::msg(e));
    }
    let model = fill(model, &decisions, &pools(p))?;
    Ok(IpamOutcome {
        model,
        decisions,
        pending: PendingAllocations::new(),
    })
}
