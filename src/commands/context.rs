//! What every module command sets up first: the process env snapshot, the runtime root
//! (a real HyOps root, or the simulator's own root with `--sim`), the module ref and slot,
//! and the Proxmox client built from the credentials. The same frame serves the HyOps driver
//! mode ([`DriverFrame`]): there hyops has chosen the run id and evidence dir and resolved
//! the inputs, and owns the state. Part of the CLI layer.
//!
//! `--sim` never touches a real root: the simulator's root must be new, empty or already a
//! simulator root ([`crate::commands::simroot::check_sim_root`]), and the variables that could point a run at
//! real credentials (`HYOPS_PROXMOX_TFVARS`, `PROXMOX_*`, the vault password sources) are
//! dropped from the run's environment, with a note naming them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cli::ModuleArgs;
use crate::commands::simroot::{SimSession, SIM_SSH_KEY_FILE};
use crate::commands::{output, CliError};
use crate::hyops::{
    load_proxmox_credentials, password_source, read_password, read_vault_env, ModuleRef,
    ProxmoxCredentials, RootSource, RuntimeRoot, StateInstance,
};
use crate::inputs::canonical_module_ref;
use crate::pve::{PveAuth, PveClient, PveConfig, TlsMode};
use crate::secret::Secret;
use crate::ssh::{Dialer, Identities, KnownHosts, TcpDialer};
use std::sync::Arc;

/// The resolved frame of one command.
pub struct Ctx {
    pub args: ModuleArgs,
    pub env_vars: BTreeMap<String, String>,
    /// The same environment in process order (`HYOPS_INPUT_*` apply in this order, as in
    /// `hyops`).
    pub env_order: Vec<(String, String)>,
    pub root: RuntimeRoot,
    /// The runtime env name (HYOPS_ENV wins, as upstream sets it only when unset).
    pub env_name: Option<String>,
    pub module_ref: ModuleRef,
    pub instance: Option<StateInstance>,
    pub sim: Option<SimSession>,
    /// How SSH reaches hosts when set (tests and embedders running the engine against an
    /// in-process simulator without `--sim`); else [`Ctx::dialer`] decides.
    pub ssh_dialer: Option<Arc<dyn Dialer>>,
    /// The SSH tunnel fallback for an unreachable NetBox (contract §4.2). `None`: the
    /// command builds one over node SSH when a jump host is known
    /// (`crate::commands::ipam::SshTunnel`); tests may plug in their own.
    pub netbox_tunnel: Option<Arc<dyn crate::netbox::probe::TunnelOpener>>,
    /// Set when the run is a HyOps driver request (`hyops-pve driver`).
    pub driver: Option<DriverFrame>,
}

/// What a HyOps driver request fixes for the run (contract §6.3): hyops made the run id and
/// the evidence dir, resolved and validated the inputs, and writes the module state itself.
#[derive(Debug, Clone)]
pub struct DriverFrame {
    pub run_id: String,
    pub evidence_dir: PathBuf,
    /// `request.inputs`: spec defaults, overlay and env overrides already merged.
    pub inputs: Value,
}

impl Ctx {
    /// The frame of a driver request: an explicit root (hyops' `runtime.root`), env name,
    /// slot and resolved inputs. The env name is `HYOPS_ENV` when the process has it (the
    /// Terragrunt driver sets `HYOPS_ENV` from `runtime.env` only when unset), else
    /// `runtime.env`, else the root's `.../envs/<name>` — the CLI's order, so both name and
    /// mark the same VMs alike.
    pub fn for_driver(
        args: ModuleArgs,
        env_order: Vec<(String, String)>,
        root: RuntimeRoot,
        env_name: Option<String>,
        instance: Option<StateInstance>,
        frame: DriverFrame,
    ) -> Result<Self, CliError> {
        let env_vars: BTreeMap<String, String> = env_order.iter().cloned().collect();
        let module =
            canonical_module_ref(&args.module).map_err(|e| CliError::msg(e.to_string()))?;
        let module_ref = ModuleRef::parse(module).map_err(CliError::hyops)?;
        let env_name = env_vars
            .get("HYOPS_ENV")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| env_name.filter(|e| !e.trim().is_empty()))
            .or_else(|| root.env().map(str::to_string));
        Ok(Ctx {
            args,
            env_vars,
            env_order,
            root,
            env_name,
            module_ref,
            instance,
            sim: None,
            ssh_dialer: None,
            netbox_tunnel: None,
            driver: Some(frame),
        })
    }

    /// Resolve everything but credentials from the process environment. With `--sim`, also
    /// starts the simulator.
    pub async fn new(args: &ModuleArgs) -> Result<Self, CliError> {
        Self::build_ordered(args, super::procenv::vars()?).await
    }

    /// [`Ctx::new`] with an explicit environment (tests and the driver mode use this so
    /// nothing depends on the process environment).
    pub async fn build(
        args: &ModuleArgs,
        env_vars: BTreeMap<String, String>,
    ) -> Result<Self, CliError> {
        Self::build_ordered(args, env_vars.into_iter().collect()).await
    }

    /// [`Ctx::build`] with the environment in a given order (the process order for the CLI).
    pub async fn build_ordered(
        args: &ModuleArgs,
        mut env_order: Vec<(String, String)>,
    ) -> Result<Self, CliError> {
        let mut env_vars: BTreeMap<String, String> = env_order.iter().cloned().collect();
        let module =
            canonical_module_ref(&args.module).map_err(|e| CliError::msg(e.to_string()))?;
        let module_ref = ModuleRef::parse(module).map_err(CliError::hyops)?;
        let instance =
            StateInstance::parse_opt(args.state_instance.as_deref()).map_err(CliError::hyops)?;
        let hyops_env = env_vars
            .get("HYOPS_ENV")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let runtime_root_env = env_vars
            .get("HYOPS_RUNTIME_ROOT")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let (root, sim, env_name) = if args.sim {
            let env = args
                .env
                .clone()
                .or_else(|| hyops_env.clone())
                .unwrap_or_else(|| "dev".into());
            let ignored = scrub_for_sim(&mut env_vars);
            env_order.retain(|(k, _)| env_vars.contains_key(k));
            if !ignored.is_empty() {
                output::progress(&format!(
                    "note: --sim ignores {} (the simulator's own credentials are used)",
                    ignored.join(", ")
                ));
            }
            let session = SimSession::start(
                &env,
                args.root.as_deref(),
                args.sim_cluster.as_deref(),
                args.sim_faults.as_deref(),
                Duration::from_secs(args.lock_wait_s),
                &env_vars,
            )
            .await?;
            // The simulated root is its own NetBox and SDN authority (its embedded NetBox
            // and SDN state); an operator's NetBox settings were scrubbed above.
            let root_s = session.root().display().to_string();
            env_vars.insert("HYOPS_NETBOX_AUTHORITY_ROOT".into(), root_s.clone());
            env_vars.insert("HYOPS_SDN_AUTHORITY_ROOT".into(), root_s);
            (RuntimeRoot::at(session.root()), Some(session), Some(env))
        } else {
            // `--env` or `--root`; else HYOPS_RUNTIME_ROOT; else HYOPS_ENV (contract §6.1).
            let env_for_root = match (&args.env, &args.root, &runtime_root_env) {
                (Some(e), _, _) => Some(e.clone()),
                (None, None, None) => hyops_env.clone(),
                _ => None,
            };
            let home = env_vars.get("HOME").map(PathBuf::from);
            let root = RuntimeRoot::resolve(&RootSource {
                env: env_for_root.as_deref(),
                root: args.root.as_deref(),
                runtime_root_env: runtime_root_env.as_deref(),
                home: home.as_deref(),
            })
            .map_err(CliError::hyops)?;
            // HYOPS_ENV wins over --env for the runtime env name, as hyops sets it only when
            // unset; a root under `.../envs/<name>` names its env too.
            let env_name = hyops_env
                .clone()
                .or_else(|| args.env.clone())
                .or_else(|| root.env().map(str::to_string));
            (root, None, env_name)
        };
        Ok(Ctx {
            args: args.clone(),
            env_vars,
            env_order,
            root,
            env_name,
            module_ref,
            instance,
            sim,
            driver: None,
            ssh_dialer: None,
            netbox_tunnel: None,
        })
    }

    /// Refuse a runtime root that does not exist (a mistyped `--env` or `--root`): nothing is
    /// created, and the message names the envs that do exist.
    pub fn require_existing_root(&self) -> Result<(), CliError> {
        if self.root.path().is_dir() {
            return Ok(());
        }
        Err(CliError::msg(missing_root_message(
            self.root.path(),
            self.args.env.as_deref().or(self.env_name.as_deref()),
        )))
    }

    /// Credentials from the tfvars file, the env and the runtime vault (when a password
    /// source is configured). Never logs a value.
    pub fn credentials(&self) -> Result<ProxmoxCredentials, CliError> {
        let vault = self.vault()?;
        self.credentials_with(vault.as_ref())
    }

    /// [`Ctx::credentials`] with an already decrypted vault.
    pub fn credentials_with(
        &self,
        vault: Option<&BTreeMap<String, Secret>>,
    ) -> Result<ProxmoxCredentials, CliError> {
        load_proxmox_credentials(&self.root, &self.env_vars, vault).map_err(CliError::hyops)
    }

    /// The decrypted runtime vault, when it exists and a password source is configured.
    pub fn vault(&self) -> Result<Option<BTreeMap<String, Secret>>, CliError> {
        let file = self.root.vault_file();
        if !file.exists() {
            return Ok(None);
        }
        let Some(source) = password_source(&self.env_vars) else {
            return Ok(None);
        };
        let password = read_password(&source, Duration::from_secs(30)).map_err(CliError::hyops)?;
        read_vault_env(&file, &password)
            .map(Some)
            .map_err(CliError::hyops)
    }

    /// The Proxmox client for these credentials.
    pub fn client(&self, creds: &ProxmoxCredentials) -> Result<PveClient, CliError> {
        let tls = if creds.tls.skip_verify {
            TlsMode::Insecure
        } else if let Some(fp) = creds.tls.fingerprint_sha256 {
            TlsMode::Fingerprint(hex::encode(fp))
        } else if let Some(ca) = &creds.tls.ca_file {
            TlsMode::CaFile(ca.clone())
        } else {
            TlsMode::SystemRoots
        };
        let mut cfg = PveConfig::new(
            creds.url.clone(),
            PveAuth::Token {
                id: creds.token_id.clone(),
                secret: creds.token_secret.clone(),
            },
        );
        cfg.tls = tls;
        let scale = self.time_scale();
        // Against a time-scaled simulator the read budget shrinks with simulated time; a
        // request itself is real network work, so its timeout keeps a floor of 10 s.
        cfg.request_timeout = Duration::from_secs(90)
            .mul_f64(scale.min(1.0))
            .max(Duration::from_secs(10));
        cfg.read_retry = cfg.read_retry.scaled(scale);
        cfg.time_scale = scale;
        if let Some(v) = self.env_vars.get("HYOPS_PVE_MAX_RESPONSE_MIB") {
            let mib: u64 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                CliError::msg(format!(
                    "HYOPS_PVE_MAX_RESPONSE_MIB={v:?} must be a positive whole number of MiB"
                ))
            })?;
            cfg.max_response_bytes = mib.saturating_mul(1 << 20);
        }
        PveClient::new(cfg).map_err(|e| {
            CliError::msg(format!(
                "cannot build the Proxmox client for {}: {e}",
                creds.url
            ))
        })
    }

    /// How SSH reaches hosts: with `--sim`, the simulator's in-process network (it cannot
    /// open a socket); otherwise real TCP.
    pub fn dialer(&self) -> Arc<dyn Dialer> {
        if let Some(d) = &self.ssh_dialer {
            return Arc::clone(d);
        }
        match &self.sim {
            Some(s) => Arc::new(s.handle().ssh()),
            None => Arc::new(TcpDialer::new()),
        }
    }

    /// The engine's known_hosts file: `<root>/state/ssh/known_hosts`.
    pub fn known_hosts(&self) -> Arc<KnownHosts> {
        Arc::new(KnownHosts::new(
            self.root.state_dir().join("ssh").join("known_hosts"),
        ))
    }

    /// The identities `ssh` would use without `-i`: the agent (`SSH_AUTH_SOCK`) and
    /// `~/.ssh/id_{ed25519,ecdsa,rsa}`. A root the simulator seeded carries its own key
    /// (`credentials/sim_ssh_ed25519`), which comes first; with `--sim` it is the only one.
    pub fn default_identities(&self) -> Identities {
        let sim_key = self.root.credentials_dir().join(SIM_SSH_KEY_FILE);
        if self.sim.is_some() {
            return Identities::defaults(None, &[sim_key]);
        }
        let agent = self
            .env_vars
            .get("SSH_AUTH_SOCK")
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from);
        let mut files = vec![sim_key];
        files.extend(
            self.env_vars
                .get("HOME")
                .map(|h| Identities::default_files(std::path::Path::new(h)))
                .unwrap_or_default(),
        );
        let mut ids = Identities::defaults(None, &files);
        // The agent comes first, as with `ssh`.
        let agent = Identities::defaults(agent, &[]);
        ids.sources.splice(0..0, agent.sources);
        ids
    }

    /// Node SSH identities: the credentials' `proxmox_ssh_key` when set, else the defaults.
    pub fn node_identities(&self, creds: &ProxmoxCredentials) -> Result<Identities, CliError> {
        match &creds.ssh_key {
            Some(k) if !k.as_os_str().is_empty() => Identities::key_file(k).map_err(|e| {
                CliError::msg(format!(
                    "proxmox_ssh_key in the credentials: {e} (node SSH delivers cloud-init snippets; set cloud_init_mode: native to apply without node SSH)"
                ))
            }),
            _ => Ok(self.default_identities()),
        }
    }

    /// Real seconds per engine second: the simulator's time scale with `--sim`, else
    /// `HYOPS_PVE_ENGINE_TIME_SCALE` (for tests against a time-scaled simulator), else 1.
    /// Scales every engine deadline, backoff and poll interval.
    pub fn time_scale(&self) -> f64 {
        if let Some(s) = &self.sim {
            return s.time_scale();
        }
        self.env_vars
            .get("HYOPS_PVE_ENGINE_TIME_SCALE")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f > 0.0 && *f <= 1.0)
            .unwrap_or(1.0)
    }

    /// `latest` or `instance:<name>`.
    pub fn slot(&self) -> String {
        crate::hyops::slot_name(self.instance.as_ref())
    }

    /// The env part of the ownership identity: the env name, or a stable hash of the root.
    pub fn owner_env(&self) -> String {
        match &self.env_name {
            Some(e) => e.clone(),
            None => {
                use sha2::{Digest, Sha256};
                let h = Sha256::digest(self.root.path().display().to_string().as_bytes());
                format!("root-{}", &hex::encode(h)[..12])
            }
        }
    }

    /// Save the simulator state (with `--sim`) and stop it.
    pub async fn finish(&mut self) -> Result<(), CliError> {
        if let Some(s) = self.sim.take() {
            s.finish().await?;
        }
        Ok(())
    }
}

/// Variables that could point a `--sim` run at real infrastructure: the credentials file
/// override, every `PROXMOX_*` fallback, the vault password sources, and the NetBox
/// connection and authority settings (the simulated root has its own NetBox and SDN).
fn is_real_target_var(name: &str) -> bool {
    name == "HYOPS_PROXMOX_TFVARS"
        || name.starts_with("PROXMOX_")
        || matches!(
            name,
            "HYOPS_VAULT_PASSWORD_FILE"
                | "ANSIBLE_VAULT_PASSWORD_FILE"
                | "HYOPS_VAULT_PASSWORD_COMMAND"
                | "HYOPS_VAULT_PASS_SCRIPT"
                | "NETBOX_API_URL"
                | "NETBOX_API_TOKEN"
                | "NETBOX_TLS_FINGERPRINT"
                | "NETBOX_CA_FILE"
                | "NETBOX_SKIP_TLS"
                | "HYOPS_NETBOX_AUTHORITY_ROOT"
                | "HYOPS_NETBOX_AUTHORITY_ENV"
                | "HYOPS_SDN_AUTHORITY_ROOT"
                | "HYOPS_SDN_AUTHORITY_ENV"
        )
}

/// Drop [`is_real_target_var`] variables from a `--sim` run's environment; returns their names.
pub fn scrub_for_sim(env: &mut BTreeMap<String, String>) -> Vec<String> {
    let names: Vec<String> = env
        .keys()
        .filter(|k| is_real_target_var(k))
        .cloned()
        .collect();
    for n in &names {
        env.remove(n);
    }
    names
}

/// "runtime root … does not exist" with the envs that do exist beside it.
pub fn missing_root_message(root: &std::path::Path, env: Option<&str>) -> String {
    let mut msg = format!(
        "runtime root {} does not exist; nothing was created",
        root.display()
    );
    let parent = root.parent();
    let known: Vec<String> = parent
        .and_then(|p| std::fs::read_dir(p).ok())
        .map(|rd| {
            let mut v: Vec<String> = rd
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    match env {
        Some(e) => {
            if let (false, Some(p)) = (known.is_empty(), parent) {
                msg.push_str(&format!(
                    ". Envs in {}: {}",
                    p.display(),
                    known.join(", ")
                ));
            } else {
                msg.push_str(". No HyOps env exists on this machine yet");
            }
            msg.push_str(&format!(
                ". Check the spelling of --env {e}, or create the env with `hyops init proxmox --env {e}`"
            ));
        }
        None => msg.push_str(
            ". Check the --root / HYOPS_RUNTIME_ROOT path, or create the root with `hyops init proxmox`",
        ),
    }
    msg
}

/// Commands that resolve inputs need an operator overlay: `--inputs`, or `HYOPS_INPUTS_JSON` /
/// `HYOPS_INPUT_<path>`. Checked before anything else, so the operator reads this and not a
/// validation message about what the missing overlay would have said.
pub fn require_inputs(
    args: &ModuleArgs,
    env: &BTreeMap<String, String>,
    command: &str,
) -> Result<(), CliError> {
    crate::inputs::canonical_module_ref(&args.module).map_err(|e| CliError::msg(e.to_string()))?;
    let from_env = env.iter().any(|(k, v)| {
        (k == "HYOPS_INPUTS_JSON" || k.starts_with("HYOPS_INPUT_")) && !v.trim().is_empty()
    });
    if args.inputs.is_some() || from_env {
        return Ok(());
    }
    Err(CliError::msg(format!(
        "{command} needs the operator inputs: add --inputs FILE (your overlay, e.g. examples/inputs.typical.yml); \
         HYOPS_INPUTS_JSON or HYOPS_INPUT_<path> may supply them instead"
    )))
}
