//! What every module command sets up first: the process env snapshot, the runtime root
//! (a real HyOps root, or the simulator's own root with `--sim`), the module ref and slot,
//! and the Proxmox client built from the credentials. Part of the CLI layer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ModuleArgs;
use crate::commands::simroot::SimSession;
use crate::commands::CliError;
use crate::hyops::{
    load_proxmox_credentials, password_source, read_password, read_vault_env, ModuleRef,
    ProxmoxCredentials, RootSource, RuntimeRoot, StateInstance,
};
use crate::inputs::canonical_module_ref;
use crate::pve::{PveAuth, PveClient, PveConfig, TlsMode};
use crate::secret::Secret;

/// The resolved frame of one command.
pub struct Ctx {
    pub args: ModuleArgs,
    pub env_vars: BTreeMap<String, String>,
    pub root: RuntimeRoot,
    /// The runtime env name (HYOPS_ENV wins, as upstream sets it only when unset).
    pub env_name: Option<String>,
    pub module_ref: ModuleRef,
    pub instance: Option<StateInstance>,
    pub sim: Option<SimSession>,
    /// The SSH tunnel fallback for an unreachable NetBox (contract §4.2); set by the SSH
    /// module when it provides one, `None` meanwhile (NetBox is then reported unreachable).
    pub netbox_tunnel: Option<std::sync::Arc<dyn crate::netbox::probe::TunnelOpener>>,
}

impl Ctx {
    /// Resolve everything but credentials from the process environment. With `--sim`, also
    /// starts the simulator.
    pub async fn new(args: &ModuleArgs) -> Result<Self, CliError> {
        Self::build(args, std::env::vars().collect()).await
    }

    /// [`Ctx::new`] with an explicit environment (tests and the driver mode use this so
    /// nothing depends on the process environment).
    pub async fn build(
        args: &ModuleArgs,
        env_vars: BTreeMap<String, String>,
    ) -> Result<Self, CliError> {
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
        let mut env_vars = env_vars;
        let (root, sim, env_name) = if args.sim {
            let env = args
                .env
                .clone()
                .or_else(|| hyops_env.clone())
                .unwrap_or_else(|| "dev".into());
            let session = SimSession::start(
                &env,
                args.root.as_deref(),
                args.sim_cluster.as_deref(),
                &env_vars,
            )
            .await?;
            // The simulated root is its own NetBox and SDN authority, and only its embedded
            // NetBox is ever used: an operator's NETBOX_* settings never reach it.
            let root_s = session.root().display().to_string();
            for k in [
                "NETBOX_API_URL",
                "NETBOX_API_TOKEN",
                "NETBOX_TLS_FINGERPRINT",
                "NETBOX_CA_FILE",
                "NETBOX_SKIP_TLS",
                "HYOPS_NETBOX_AUTHORITY_ENV",
                "HYOPS_SDN_AUTHORITY_ENV",
            ] {
                env_vars.remove(k);
            }
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
            root,
            env_name,
            module_ref,
            instance,
            sim,
            netbox_tunnel: None,
        })
    }

    /// Credentials from the tfvars file, the env and the runtime vault (when a password
    /// source is configured). Never logs a value.
    pub fn credentials(&self) -> Result<ProxmoxCredentials, CliError> {
        let vault = self.vault()?;
        load_proxmox_credentials(&self.root, &self.env_vars, vault.as_ref())
            .map_err(CliError::hyops)
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
        cfg.request_timeout = Duration::from_secs(90);
        PveClient::new(cfg).map_err(|e| {
            CliError::msg(format!(
                "cannot build the Proxmox client for {}: {e}",
                creds.url
            ))
        })
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
