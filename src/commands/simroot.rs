//! `--sim`: the embedded default. Starts the simulator in-process with its cluster state kept
//! in a separate runtime root (never a real operator's `~/.hybridops/envs/<env>`), and makes
//! that root ready: credentials pointing at the simulator (with its certificate pinned), the
//! template-image state and the Proxmox readiness marker. Beside it runs the embedded NetBox
//! (its state kept in the same root), and the root is also the NetBox and SDN authority:
//! `credentials/netbox.env` (URL, token, certificate pin), a ready `platform/onprem/netbox`
//! state and a `core/onprem/network-sdn` state with the typical HybridOps vnets, so IPAM
//! overlays run end to end. Part of the CLI layer.
//!
//! The simulator writes credentials into its root, so it only ever uses a root that is new,
//! empty, or marked as a simulator root ([`SIM_ROOT_MARKER`], or the saved cluster state of
//! an older release): a real HyOps root given by `--root` or reached through
//! `HYOPS_PVE_SIM_HOME` is refused before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::commands::CliError;
use crate::hyops::seed::{seed_ready_root, ReadyRootSeed};
use crate::hyops::{acquire_lock_file, write_json_atomic, write_text_atomic, RunLock, RuntimeRoot};
use crate::sim::netbox::{NbStore, NetboxSim, NetboxSimConfig, NetboxSimHandle};
use crate::sim::{ClusterDescription, FaultPlan, SimConfig, SimHandle, SimState, Simulator};

/// The SDN of the simulated root: `(vnet, vlan_id, cidr)`, gateway `.1`, DHCP `.120–.220`
/// (the typical HybridOps topology, contract §4.3), zone `hybzone`.
pub const SIM_SDN: &[(&str, u16, &str)] = &[
    ("vnetmgmt", 10, "10.10.0.0/24"),
    ("vnetdata", 20, "10.12.0.0/24"),
    ("vnetdev", 30, "10.30.0.0/24"),
    ("vnetstag", 40, "10.40.0.0/24"),
    ("vnetprod", 50, "10.50.0.0/24"),
    ("vnetddev", 31, "10.31.0.0/24"),
    ("vnetdstg", 41, "10.41.0.0/24"),
    ("vnetdprd", 51, "10.51.0.0/24"),
];
/// The SDN zone of the simulated root.
pub const SIM_ZONE: &str = "hybzone";

fn sim_subnet(cidr: &str) -> (String, String, String) {
    let base = cidr.trim_end_matches(".0/24");
    (
        format!("{base}.1"),
        format!("{base}.120"),
        format!("{base}.220"),
    )
}

/// What the embedded NetBox holds before the first `--sim` run: what a network-sdn apply
/// with `push_to_netbox` leaves (site, role, VLANs, prefixes, static ranges).
pub fn sim_netbox_seed() -> Result<NbStore, CliError> {
    let rows: Vec<(String, String, u16, String, String, String, String)> = SIM_SDN
        .iter()
        .map(|(vnet, vid, cidr)| {
            let (gw, ds, de) = sim_subnet(cidr);
            (
                SIM_ZONE.to_string(),
                vnet.to_string(),
                *vid,
                cidr.to_string(),
                gw,
                ds,
                de,
            )
        })
        .collect();
    let refs: Vec<(&str, &str, u16, &str, &str, &str, &str)> = rows
        .iter()
        .map(|(z, v, id, c, g, s, e)| {
            (
                z.as_str(),
                v.as_str(),
                *id,
                c.as_str(),
                g.as_str(),
                s.as_str(),
                e.as_str(),
            )
        })
        .collect();
    NbStore::seeded_like_network_sdn(&refs)
        .map_err(|e| CliError::msg(format!("cannot seed the embedded NetBox: {}", e.body)))
}

/// Make `root` the NetBox and SDN authority for a NetBox at `url`: `credentials/netbox.env`
/// (URL, token, optional certificate pin), a ready `platform/onprem/netbox` state and the
/// `core/onprem/network-sdn` state of [`SIM_SDN`].
pub fn write_netbox_root(
    root: &Path,
    url: &str,
    token: &crate::secret::Secret,
    tls_fingerprint: Option<&str>,
) -> Result<(), CliError> {
    let mut env = format!(
        "# written by hyops-pve --sim (embedded NetBox)\nNETBOX_API_URL={url}/api/\nNETBOX_API_TOKEN={}\n",
        token.expose()
    );
    if let Some(fp) = tls_fingerprint.filter(|f| !f.is_empty()) {
        env.push_str(&format!("NETBOX_TLS_FINGERPRINT={fp}\n"));
    }
    crate::hyops::write_text_atomic(&root.join("credentials/netbox.env"), &env)
        .map_err(CliError::hyops)?;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let nb_state = json!({
        "module_ref": "platform/onprem/netbox",
        "status": "ok",
        "run_id": "sim",
        "updated_at": now,
        "outputs": {"netbox_url": url, "netbox_api_url": format!("{url}/api/")},
    });
    write_json_atomic(
        &root.join("state/modules/platform__onprem__netbox/latest.json"),
        &nb_state,
    )
    .map_err(CliError::hyops)?;
    write_sdn_state(root, SIM_ZONE, SIM_SDN)
}

/// Write a ready `core/onprem/network-sdn` state into `root`: `zone`, and per
/// `(vnet, vlan_id, cidr /24)` a subnet with gateway `.1` and DHCP `.120–.220`.
pub fn write_sdn_state(root: &Path, zone: &str, sdn: &[(&str, u16, &str)]) -> Result<(), CliError> {
    let mut vnets = serde_json::Map::new();
    let mut subnets = serde_json::Map::new();
    for (vnet, vid, cidr) in sdn {
        let (gw, ds, de) = sim_subnet(cidr);
        vnets.insert(vnet.to_string(), json!({"vlan_id": vid, "zone": zone}));
        subnets.insert(
            format!("{vnet}-v4"),
            json!({"vnet": vnet, "cidr": cidr, "gateway": gw, "dhcp_range_start": ds,
                   "dhcp_range_end": de, "dhcp_enabled": true}),
        );
    }
    let sdn = json!({
        "module_ref": "core/onprem/network-sdn",
        "status": "ok",
        "run_id": "sim",
        "updated_at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "outputs": {"zone_name": zone, "vnets": vnets, "subnets": subnets},
    });
    write_json_atomic(
        &root.join("state/modules/core__onprem__network-sdn/latest.json"),
        &sdn,
    )
    .map_err(CliError::hyops)
}

/// Simulated seconds run this much faster than real ones in `--sim` runs (a full clone of a
/// 32 GiB template takes ~2.5 real seconds), unless `HYOPS_PVE_SIM_TIME_SCALE` says otherwise.
const DEFAULT_TIME_SCALE: f64 = 0.01;

/// The file that marks a runtime root as the simulator's own (relative to the root).
pub const SIM_ROOT_MARKER: &str = "sim/hyops-pve-sim-root.json";

/// Which command asks for a simulator root: the refusals name it and say what to do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimRootUse {
    /// `--sim` on a module command (`--root`, `HYOPS_PVE_SIM_HOME` or the default root).
    SimFlag,
    /// `sim serve --hyops-root DIR`.
    ServeHyopsRoot,
}

impl SimRootUse {
    fn flag(self) -> &'static str {
        match self {
            SimRootUse::SimFlag => "--sim",
            SimRootUse::ServeHyopsRoot => "sim serve --hyops-root",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            SimRootUse::SimFlag => {
                "Drop --root to use the simulator's own root (~/.hyops-pve/sim/envs/<env>, or $HYOPS_PVE_SIM_HOME/envs/<env>), \
                 or give --root a new or empty directory"
            }
            SimRootUse::ServeHyopsRoot => {
                "Give --hyops-root a new or empty directory (or one an earlier `sim serve --hyops-root` or `--sim` run made), \
                 or leave --hyops-root out"
            }
        }
    }

    fn remedy_outside_real_envs(self) -> &'static str {
        match self {
            SimRootUse::SimFlag => {
                "Drop --root (and HYOPS_PVE_SIM_HOME) to use the simulator's own root (~/.hyops-pve/sim/envs/<env>), or give --root a directory outside ~/.hybridops"
            }
            SimRootUse::ServeHyopsRoot => "Give --hyops-root a directory outside ~/.hybridops",
        }
    }
}

/// Refuse to use `root` for the simulator unless it is absent, empty, or a simulator root
/// (it holds [`SIM_ROOT_MARKER`] or the simulated cluster state). The error names what the
/// root holds; nothing has been written when it is returned.
pub fn check_sim_root(root: &Path, user: SimRootUse) -> Result<(), CliError> {
    if !root.exists() {
        return Ok(());
    }
    if root.join(SIM_ROOT_MARKER).is_file() || root.join("sim/cluster-state.json").is_file() {
        return Ok(());
    }
    let entries: Vec<String> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect(),
        Err(e) => {
            return Err(CliError::msg(format!(
                "{} cannot use {} as its runtime root: {e}",
                user.flag(),
                root.display()
            )))
        }
    };
    if entries.is_empty() {
        return Ok(());
    }
    let mut found: Vec<String> = [
        "credentials/proxmox.credentials.tfvars",
        "vault/bootstrap.vault.env",
        "meta/proxmox.ready.json",
        "state",
    ]
    .iter()
    .filter(|p| root.join(p).exists())
    .map(|p| p.to_string())
    .collect();
    if found.is_empty() {
        found = entries;
        found.sort();
        found.truncate(5);
    }
    Err(CliError::msg(format!(
        "{} refuses runtime root {}: it is not a simulator root (it holds {}), and the simulator would overwrite its credentials. \
         Nothing was written. {}",
        user.flag(),
        root.display(),
        found.join(", "),
        user.remedy()
    )))
}

/// `path` made absolute, with its deepest existing ancestor resolved (symlinks, `..`) and the
/// rest normalised lexically, so two spellings of one place compare equal.
fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            // `out` is canonical wherever it exists, so a lexical `..` is the real parent.
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => {
                out.push(other);
                if let Ok(canon) = std::fs::canonicalize(&out) {
                    out = canon;
                }
            }
        }
    }
    out
}

/// Refuse a simulator root inside `$HOME/.hybridops` (the real HyOps envs), even one that does
/// not exist yet: the simulator's credentials would sit where `hyops init proxmox` and every
/// real run of that env look for them.
pub fn refuse_real_envs_tree(
    root: &Path,
    env_vars: &BTreeMap<String, String>,
    user: SimRootUse,
) -> Result<(), CliError> {
    // `$HOME` as given, and the process's home as `std::env::home_dir` finds it: HOME, else
    // the passwd entry (`getpwuid_r`), as hyops' `Path.home()` does when HOME is unset
    // (cron, systemd, `env -i`), so a root there is as real as one under `$HOME`.
    let homes: Vec<PathBuf> = env_vars
        .get("HOME")
        .filter(|h| !h.trim().is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::home_dir())
        .collect();
    let root_resolved = resolved(root);
    for home in homes {
        let real = resolved(&home.join(".hybridops"));
        if !root_resolved.starts_with(&real) {
            continue;
        }
        return Err(CliError::msg(format!(
            "{} refuses runtime root {}: it is inside {}, where the real HyOps envs live, and the simulator would write its credentials there. \
             Nothing was written. {}",
            user.flag(),
            root.display(),
            real.display(),
            user.remedy_outside_real_envs()
        )));
    }
    Ok(())
}

/// A running in-process simulator bound to its runtime root. It holds the lock of its
/// cluster state file from before the state is loaded until after it is saved, so two
/// `--sim` runs on one root serialise (the second waits `--lock-wait-s`, then fails naming
/// the holder) instead of one overwriting the other's cluster.
pub struct SimSession {
    handle: SimHandle,
    netbox: NetboxSimHandle,
    root: PathBuf,
    state_file: PathBuf,
    netbox_state_file: PathBuf,
    _state_lock: RunLock,
}

/// Lock `state_file` (`<state_file>.lock`) for this process, waiting up to `wait`.
pub fn lock_sim_state(state_file: &Path, wait: Duration) -> Result<RunLock, CliError> {
    let lock_path = state_file.with_extension("lock");
    let run = format!("sim-{}", std::process::id());
    acquire_lock_file(
        &lock_path,
        &format!("the simulated cluster state {}", state_file.display()),
        &run,
        wait,
    )
    .map_err(CliError::hyops)
}

/// The simulator home: `HYOPS_PVE_SIM_HOME`, else `~/.hyops-pve/sim`.
pub fn sim_home(env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(h) = env
        .get("HYOPS_PVE_SIM_HOME")
        .filter(|v| !v.trim().is_empty())
    {
        return PathBuf::from(h);
    }
    let home = env.get("HOME").cloned().unwrap_or_else(|| ".".into());
    Path::new(&home).join(".hyops-pve").join("sim")
}

/// The simulator's runtime root for `env`: `<sim home>/envs/<env>`. The env name must be one
/// path component (as for a real root): `--sim --env ../../x` would otherwise put the
/// simulator's credentials in any directory, `~/.hybridops/envs/<x>` included.
pub fn sim_env_root(env_vars: &BTreeMap<String, String>, env: &str) -> Result<PathBuf, CliError> {
    crate::hyops::check_env_name(env).map_err(CliError::hyops)?;
    Ok(sim_home(env_vars).join("envs").join(env))
}

impl SimSession {
    /// Start the simulator for `env` (root `<sim home>/envs/<env>`, or `--root` when given).
    pub async fn start(
        env: &str,
        root_override: Option<&Path>,
        cluster_file: Option<&Path>,
        faults_file: Option<&Path>,
        lock_wait: Duration,
        env_vars: &BTreeMap<String, String>,
    ) -> Result<Self, CliError> {
        // Checked even with `--root`: the env name also goes into every VM name.
        let env_root = sim_env_root(env_vars, env)?;
        let root = match root_override {
            Some(r) => r.to_path_buf(),
            None => env_root,
        };
        // A root holding anything real is refused naming what it holds; one that is new or
        // empty is still refused inside the real envs tree.
        check_sim_root(&root, SimRootUse::SimFlag)?;
        refuse_real_envs_tree(&root, env_vars, SimRootUse::SimFlag)?;
        mark_sim_root(&root)?;
        let state_file = root.join("sim").join("cluster-state.json");
        let time_scale = match env_vars.get("HYOPS_PVE_SIM_TIME_SCALE") {
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| {
                    CliError::msg(format!(
                        "HYOPS_PVE_SIM_TIME_SCALE={v:?} must be a positive number (e.g. 0.01)"
                    ))
                })?,
            None => DEFAULT_TIME_SCALE,
        };
        let mut cfg = SimConfig {
            time_scale,
            ..SimConfig::default()
        };
        // The simulated nodes carry the SDN gateways of the root's network-sdn state, as a
        // reconciled Proxmox host does (the host-side gateway probe checks them).
        for (vnet, _, cidr) in SIM_SDN {
            let (gw, _, _) = sim_subnet(cidr);
            cfg.ssh
                .bridge_addresses
                .insert(vnet.to_string(), vec![format!("{gw}/24")]);
        }
        if let Some(file) = cluster_file {
            cfg.cluster =
                ClusterDescription::from_file(file).map_err(|e| CliError::msg(e.to_string()))?;
        }
        if let Some(file) = faults_file {
            cfg.faults = FaultPlan::from_file(file).map_err(|e| CliError::msg(e.to_string()))?;
        }
        // The lock comes before the load: a second run must never read a cluster the first
        // one is about to overwrite.
        let state_lock = lock_sim_state(&state_file, lock_wait)?;
        let handle = if state_file.exists() {
            let state =
                SimState::load_from(&state_file).map_err(|e| CliError::msg(e.to_string()))?;
            Simulator::start_with_state(cfg, state).await
        } else {
            Simulator::start(cfg).await
        }
        .map_err(|e| CliError::msg(format!("cannot start the simulator: {e}")))?;
        let netbox_state_file = root.join("sim").join("netbox-state.json");
        let store = if netbox_state_file.exists() {
            NbStore::load_from(&netbox_state_file).map_err(|e| CliError::msg(e.to_string()))?
        } else {
            sim_netbox_seed()?
        };
        let netbox = NetboxSim::start_with(NetboxSimConfig::default(), store)
            .await
            .map_err(|e| CliError::msg(format!("cannot start the embedded NetBox: {e}")))?;
        let session = SimSession {
            handle,
            netbox,
            root,
            state_file,
            netbox_state_file,
            _state_lock: state_lock,
        };
        write_sim_root(&session.root, &session.handle)?;
        write_netbox_root(
            &session.root,
            session.netbox.url(),
            &session.netbox.token,
            Some(&session.netbox.ca_fingerprint_sha256),
        )?;
        crate::commands::output::progress(&format!(
            "simulator: {} (runtime root {}, state {}); embedded NetBox {}",
            session.handle.url(),
            session.root.display(),
            session.state_file.display(),
            session.netbox.url()
        ));
        Ok(session)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The simulator's time scale (real seconds per simulated second).
    pub fn time_scale(&self) -> f64 {
        self.handle.time_scale()
    }

    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    /// The embedded NetBox.
    pub fn netbox(&self) -> &NetboxSimHandle {
        &self.netbox
    }

    /// Persist the simulated cluster and stop the server.
    pub async fn finish(self) -> Result<(), CliError> {
        // Let in-flight simulator tasks settle so the saved state has no half-done clone.
        for _ in 0..200 {
            if self.handle.running_tasks() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let state = self.handle.snapshot_state();
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::msg(format!("cannot create {}: {e}", dir.display())))?;
        }
        state
            .save_to(&self.state_file)
            .map_err(|e| CliError::msg(format!("cannot save the simulator state: {e}")))?;
        self.netbox
            .snapshot()
            .save_to(&self.netbox_state_file)
            .map_err(|e| CliError::msg(format!("cannot save the embedded NetBox state: {e}")))?;
        self.netbox.shutdown().await;
        self.handle.shutdown().await;
        Ok(())
    }
}

/// The simulator root's SSH key: `<root>/credentials/sim_ssh_ed25519` (created once, 0600).
/// It is the node key (`proxmox_ssh_key`), the default guest key (`ssh_public_key`) and the
/// readiness gate's default identity in `--sim` runs. Returns its path and public key line.
pub fn sim_ssh_key(root: &RuntimeRoot) -> Result<(PathBuf, String), CliError> {
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::ssh_key::LineEnding;
    use russh::keys::PrivateKey;
    let path = root.credentials_dir().join(SIM_SSH_KEY_FILE);
    let key = if path.exists() {
        russh::keys::load_secret_key(&path, None).map_err(|e| {
            CliError::msg(format!(
                "simulator SSH key {} is unreadable ({e}); delete it to create a new one",
                path.display()
            ))
        })?
    } else {
        let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
        key.set_comment("hyops-pve-sim");
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| CliError::msg(format!("cannot encode the simulator SSH key: {e}")))?;
        write_text_atomic(&path, &pem).map_err(CliError::hyops)?;
        key
    };
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| CliError::msg(format!("cannot encode the simulator SSH key: {e}")))?;
    Ok((path, public))
}

/// File name of the simulator root's SSH key under `credentials/`.
pub const SIM_SSH_KEY_FILE: &str = "sim_ssh_ed25519";

/// Make `root` a ready HyOps runtime root for the simulator behind `h`: credentials (token,
/// pinned certificate), the template-image state and the Proxmox readiness marker.
pub fn write_sim_root(root: &Path, h: &SimHandle) -> Result<(), CliError> {
    let state = h.snapshot_state();
    let first_node = state
        .cluster
        .nodes
        .first()
        .cloned()
        .unwrap_or_else(|| "pve1".into());
    let runtime_root = RuntimeRoot::at(root);
    // The simulated nodes accept this root's own SSH key for root, and the API address
    // reaches the first node's sshd (in-process: see `sim::ssh`).
    let (key_path, public_key) = sim_ssh_key(&runtime_root)?;
    let ssh = h.ssh();
    ssh.authorize_node_key("root", &public_key)
        .map_err(|e| CliError::msg(format!("simulator SSH key {}: {e}", key_path.display())))?;
    let api_ip = h.addr.ip().to_string();
    ssh.add_node_alias(&api_ip);
    seed_ready_root(
        &runtime_root,
        &ReadyRootSeed {
            url: h.url().to_string(),
            token_id: h.token_id.clone(),
            token_secret: h.token_secret.clone(),
            node: first_node.clone(),
            skip_tls: false,
            tls_fingerprint: Some(h.ca_fingerprint_sha256.clone()),
            api_ip,
            ssh_key: Some(key_path),
            ssh_public_key: public_key,
            ..ReadyRootSeed::default()
        },
    )
    .map_err(CliError::hyops)?;

    // Template-image state: every template of the simulated cluster by name, preferring
    // the first node's copy (the default target node).
    let mut ids = serde_json::Map::new();
    let mut templates = serde_json::Map::new();
    let mut sorted = state.cluster.templates.clone();
    sorted.sort_by_key(|t| (t.node != first_node, t.vmid));
    for t in &sorted {
        if !ids.contains_key(&t.name) {
            ids.insert(t.name.clone(), json!(t.vmid));
            templates.insert(
                t.name.clone(),
                json!({"vm_id": t.vmid, "name": format!("{}-template", t.name)}),
            );
        }
    }
    let (key, vmid) = sorted
        .first()
        .map(|t| (t.name.clone(), t.vmid))
        .unwrap_or_else(|| ("ubuntu-24.04".into(), 9000));
    let tpl_state = json!({
        "module_ref": "core/onprem/template-image",
        "status": "ok",
        "run_id": "sim",
        "updated_at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "outputs": {
            "template_key": key,
            "template_vm_id": vmid,
            "template_name": format!("{key}-template"),
            "template_vm_ids": ids,
            "templates": templates,
        }
    });
    let tpl = root.join("state/modules/core__onprem__template-image/latest.json");
    write_json_atomic(&tpl, &tpl_state).map_err(CliError::hyops)?;
    mark_sim_root(root)
}

/// Write [`SIM_ROOT_MARKER`]. Done first thing after [`check_sim_root`] accepts a root, so a
/// second `--sim` run that finds the root half-written by a first one (which holds the
/// cluster lock) recognises it as the simulator's and waits for the lock instead of refusing.
pub fn mark_sim_root(root: &Path) -> Result<(), CliError> {
    write_json_atomic(
        &root.join(SIM_ROOT_MARKER),
        &json!({
            "created_by": "hyops-pve --sim",
            "note": "this runtime root belongs to the hyops-pve simulator; its credentials point at it",
        }),
    )
    .map_err(CliError::hyops)
}
