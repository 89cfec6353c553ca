//! The HyOps runtime root and the paths inside it: state, logs, meta, credentials, config,
//! vault, work; module ids; state-instance validation. Pure path arithmetic plus `$HOME`
//! lookup; knows nothing about Proxmox API calls or the planner.

use std::path::{Path, PathBuf};

use super::error::{HyopsError, Result};

/// A resolved runtime root, e.g. `~/.hybridops/envs/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRoot {
    root: PathBuf,
    /// The env name, when the root came from `--env` (or is `.../envs/<name>`).
    env: Option<String>,
}

/// Where the root comes from. `env` and `root` are exclusive; `runtime_root_env` is
/// `HYOPS_RUNTIME_ROOT`, `home` is `$HOME` (both passed in, never read from the process).
#[derive(Debug, Clone, Default)]
pub struct RootSource<'a> {
    pub env: Option<&'a str>,
    pub root: Option<&'a Path>,
    pub runtime_root_env: Option<&'a str>,
    pub home: Option<&'a Path>,
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Expand a leading `~/` with `home` and make a relative path absolute against the current
/// directory (left relative only when the current directory cannot be read), so evidence
/// and state paths recorded in files are absolute.
pub fn absolutize(path: &Path, home: Option<&Path>) -> PathBuf {
    let expanded = match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(h)) => h.join(rest),
        _ => path.to_path_buf(),
    };
    if expanded.is_absolute() {
        return expanded;
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&expanded))
        .unwrap_or(expanded)
}

/// Refuse an env name that is not one path component of letters, digits, `-`, `_` and `.`
/// (e.g. `../x`, `a/b`): it would resolve to a root outside the envs directory.
pub fn check_env_name(env: &str) -> Result<()> {
    if !valid_env_name(env) {
        return Err(HyopsError::BadEnvName(env.to_string()));
    }
    Ok(())
}

/// The root for an env name: `<home>/.hybridops/envs/<env>`.
pub fn env_root(home: &Path, env: &str) -> Result<PathBuf> {
    check_env_name(env)?;
    Ok(home.join(".hybridops").join("envs").join(env))
}

impl RuntimeRoot {
    /// Resolve the root: `--env` → `$HOME/.hybridops/envs/<env>`; `--root` → that path;
    /// otherwise `HYOPS_RUNTIME_ROOT`. `--env` together with `--root` is an error.
    pub fn resolve(src: &RootSource<'_>) -> Result<Self> {
        match (src.env, src.root) {
            (Some(env), Some(root)) => Err(HyopsError::RootAndEnvBoth {
                env: env.to_string(),
                root: root.to_path_buf(),
            }),
            (Some(env), None) => {
                let home = src
                    .home
                    .ok_or_else(|| HyopsError::NoHome(env.to_string()))?;
                Ok(Self {
                    root: env_root(home, env)?,
                    env: Some(env.to_string()),
                })
            }
            (None, Some(root)) => Ok(Self::at(&absolutize(root, src.home))),
            (None, None) => match src.runtime_root_env.filter(|s| !s.trim().is_empty()) {
                Some(r) => Ok(Self::at(&absolutize(Path::new(r.trim()), src.home))),
                None => Err(HyopsError::NoRuntimeRoot),
            },
        }
    }

    /// A root at an explicit path. The env name is inferred from `.../envs/<name>`.
    pub fn at(root: &Path) -> Self {
        let env = root
            .parent()
            .and_then(|p| p.file_name())
            .filter(|n| *n == "envs")
            .and_then(|_| root.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_string);
        Self {
            root: root.to_path_buf(),
            env,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
    pub fn env(&self) -> Option<&str> {
        self.env.as_deref()
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }
    pub fn credentials_dir(&self) -> PathBuf {
        self.root.join("credentials")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn vault_dir(&self) -> PathBuf {
        self.root.join("vault")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }
    /// `<root>/vault/bootstrap.vault.env`.
    pub fn vault_file(&self) -> PathBuf {
        self.vault_dir().join("bootstrap.vault.env")
    }
    /// `<root>/credentials/proxmox.credentials.tfvars`.
    pub fn proxmox_tfvars(&self) -> PathBuf {
        self.credentials_dir().join("proxmox.credentials.tfvars")
    }
    /// `<root>/meta/proxmox.ready.json`.
    pub fn proxmox_ready_file(&self) -> PathBuf {
        self.meta_dir().join("proxmox.ready.json")
    }
    /// `<root>/state/modules/<module_id>` (module id without instance).
    pub fn module_state_dir(&self, module_ref: &ModuleRef) -> PathBuf {
        self.state_dir()
            .join("modules")
            .join(module_ref.module_id())
    }
    /// `state/modules/<id>/latest.json` or `state/modules/<id>/instances/<inst>.json`.
    pub fn module_state_file(
        &self,
        module_ref: &ModuleRef,
        inst: Option<&StateInstance>,
    ) -> PathBuf {
        let dir = self.module_state_dir(module_ref);
        match inst {
            None => dir.join("latest.json"),
            Some(i) => dir.join("instances").join(format!("{}.json", i.as_str())),
        }
    }
    /// `config/modules/<id>/latest.inputs.yml` or `.../instances/<inst>.inputs.yml` (§3.6).
    pub fn rerun_inputs_file(
        &self,
        module_ref: &ModuleRef,
        inst: Option<&StateInstance>,
    ) -> PathBuf {
        let dir = self
            .config_dir()
            .join("modules")
            .join(module_ref.module_id());
        match inst {
            None => dir.join("latest.inputs.yml"),
            Some(i) => dir
                .join("instances")
                .join(format!("{}.inputs.yml", i.as_str())),
        }
    }
    /// `work/<module_id>[__<inst>]`: the instance is part of the work dir.
    pub fn module_work_dir(&self, module_ref: &ModuleRef, inst: Option<&StateInstance>) -> PathBuf {
        self.work_dir().join(module_ref.slot_id(inst))
    }
    /// `state/terraform/<module_id>[__<inst>].tfstate`: the instance is part of it.
    pub fn tfstate_file(&self, module_ref: &ModuleRef, inst: Option<&StateInstance>) -> PathBuf {
        self.state_dir()
            .join("terraform")
            .join(format!("{}.tfstate", module_ref.slot_id(inst)))
    }
    /// `state/detached/<module_id>[__<inst>].json`: the VMs `state detach` made the engine
    /// forget (see [`super::detached`]).
    pub fn detached_file(&self, module_ref: &ModuleRef, inst: Option<&StateInstance>) -> PathBuf {
        self.state_dir()
            .join("detached")
            .join(format!("{}.json", module_ref.slot_id(inst)))
    }
    /// `state/locks/<module_id>[__<inst>].lock`.
    pub fn lock_file(&self, module_ref: &ModuleRef, inst: Option<&StateInstance>) -> PathBuf {
        self.state_dir()
            .join("locks")
            .join(format!("{}.lock", module_ref.slot_id(inst)))
    }
}

/// A module reference such as `platform/onprem/platform-vm` (dots accepted for `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleRef(String);

impl ModuleRef {
    /// Parse `a/b/c` or `a.b.c`; every segment `[A-Za-z0-9_-]+` (after dot conversion).
    pub fn parse(value: &str) -> Result<Self> {
        let v = value.trim();
        let canonical = if v.contains('/') {
            v.to_string()
        } else {
            v.replace('.', "/")
        };
        let ok = canonical.contains('/')
            && canonical.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if !ok {
            return Err(HyopsError::BadModuleRef {
                value: value.to_string(),
            });
        }
        Ok(Self(canonical))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `platform/onprem/platform-vm` → `platform__onprem__platform-vm` (no instance).
    pub fn module_id(&self) -> String {
        self.0.replace('/', "__")
    }
    /// The module id plus `__<inst>` when an instance is set (work dir, tfstate, lock).
    pub fn slot_id(&self, inst: Option<&StateInstance>) -> String {
        module_id(self, inst)
    }
}

impl std::fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `module_id(module_ref, state_instance)`: `/`→`__`, plus `__<inst>` when set. Use
/// [`ModuleRef::module_id`] for the evidence and state dirs, which never include the instance.
pub fn module_id(module_ref: &ModuleRef, inst: Option<&StateInstance>) -> String {
    match inst {
        None => module_ref.module_id(),
        Some(i) => format!("{}__{}", module_ref.module_id(), i.as_str()),
    }
}

/// A validated `--state-instance` value (`^[a-z0-9][a-z0-9_.-]{0,63}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateInstance(String);

impl StateInstance {
    pub fn parse(value: &str) -> Result<Self> {
        let bytes = value.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = bytes.iter().skip(1).all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        });
        if !first_ok || !rest_ok || bytes.len() > 64 {
            return Err(HyopsError::BadStateInstance {
                value: value.to_string(),
            });
        }
        Ok(Self(value.to_string()))
    }
    /// Parse an optional value: `None` or `""` mean "no instance" (the latest slot).
    pub fn parse_opt(value: Option<&str>) -> Result<Option<Self>> {
        match value.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(v) => Self::parse(v).map(Some),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The state slot of a run: `latest` or `instance:<inst>` (§1.11).
pub fn slot_name(inst: Option<&StateInstance>) -> String {
    match inst {
        None => "latest".to_string(),
        Some(i) => format!("instance:{}", i.as_str()),
    }
}
