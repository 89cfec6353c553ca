//! The HyOps module tree that selects this engine: a `platform/onprem/platform-vm/spec.yml`
//! with the upstream spec's inputs, requirements and publish list (contract §1.1), whose
//! `execution.driver` is `iac/proxmox-native` (§6.2, §6.3 route 2). hyops reads the driver
//! only from `spec.yml`, so pointing `--module-root` (or `HYOPS_CORE_ROOT`) at this tree is
//! what moves the module off Terragrunt. Optionally every other module of an existing tree
//! is linked in, so one tree serves all modules. Knows nothing about Proxmox or the planner.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::contract::{DRIVER_REF, MODULE_REF, PACK_ID, PROFILE, PUBLISH_KEYS};
use super::error::{HyopsError, Result};
use super::fsio::{ensure_dir, write_text_atomic};

/// The first line of every spec this engine writes (how a rewrite recognises its own file).
pub const SPEC_HEADER: &str = "# Written by hyops-pve hyops-setup";

/// The `spec.yml` document (without the header comment).
pub fn platform_vm_spec() -> Value {
    json!({
        "api_version": "hybridops/v1",
        "kind": "ModuleSpec",
        "module_ref": MODULE_REF,
        "metadata": {
            "title": "Proxmox Platform VM (Generic)",
            "description": "Creates or converges one or more generic Proxmox VMs using explicit operator inputs, natively through hyops-pve (no Terraform).",
        },
        "requirements": {"credentials": ["proxmox"]},
        "inputs": {"defaults": crate::inputs::spec_defaults()},
        "execution": {
            "driver": DRIVER_REF,
            "profile": PROFILE,
            "pack_ref": {"id": PACK_ID},
            "hooks": {"export_infra": {"enabled": true, "strict": false, "push_to_netbox": true}},
        },
        "outputs": {"publish": PUBLISH_KEYS},
        "probes": [],
        "constraints": [],
    })
}

/// The `spec.yml` text: header comment, then the document as YAML (the crate's one writer,
/// which PyYAML reads back unchanged).
pub fn platform_vm_spec_text() -> Result<String> {
    let yaml = crate::yaml::to_yaml(&platform_vm_spec());
    Ok(format!(
        "{SPEC_HEADER} {}: {MODULE_REF} runs through the {DRIVER_REF} driver\n# (the hyops-pve binary; install the hyops-pve-driver plug-in next to hyops).\n{yaml}",
        env!("CARGO_PKG_VERSION")
    ))
}

/// What [`write_module_tree`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleTree {
    pub spec: PathBuf,
    /// `false` when the spec already had this content.
    pub spec_written: bool,
    /// Module refs linked from the base tree.
    pub linked: Vec<String>,
}

/// Module refs under `base`: every directory holding a `spec.yml`, relative, `/`-separated.
fn module_refs(base: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join("spec.yml").is_file() {
            if let Ok(rel) = dir.strip_prefix(base) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| HyopsError::io(&dir, e))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !e.file_name().to_string_lossy().starts_with('.') {
                stack.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Write `<module_root>/platform/onprem/platform-vm/spec.yml` (atomically, 0600). An existing
/// spec that this engine did not write is kept unless `force`. With `link_from`, every other
/// module of that tree is symlinked in (existing entries are left alone).
pub fn write_module_tree(
    module_root: &Path,
    link_from: Option<&Path>,
    force: bool,
) -> Result<ModuleTree> {
    let dir = module_root.join(MODULE_REF);
    let spec = dir.join("spec.yml");
    let text = platform_vm_spec_text()?;
    let spec_written = match std::fs::read_to_string(&spec) {
        Ok(existing) if existing == text => false,
        Ok(existing) if !existing.starts_with(SPEC_HEADER) && !force => {
            return Err(HyopsError::Contract(format!(
                "{} exists and was not written by hyops-pve; refusing to replace it (move it away, or pass --force)",
                spec.display()
            )))
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(HyopsError::io(&spec, e)),
    };
    if spec_written {
        ensure_dir(&dir)?;
        write_text_atomic(&spec, &text)?;
    }
    let mut linked = Vec::new();
    if let Some(base) = link_from {
        let base = if base.is_absolute() {
            base.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| HyopsError::io(base, e))?
                .join(base)
        };
        for r in module_refs(&base)? {
            if r == MODULE_REF {
                continue;
            }
            let target = module_root.join(&r);
            if target.symlink_metadata().is_ok() {
                continue;
            }
            if let Some(parent) = target.parent() {
                ensure_dir(parent)?;
            }
            std::os::unix::fs::symlink(base.join(&r), &target)
                .map_err(|e| HyopsError::io(&target, e))?;
            linked.push(r);
        }
    }
    Ok(ModuleTree {
        spec,
        spec_written,
        linked,
    })
}
