//! hyops-pve: a native Proxmox VE engine for HybridOps' `platform/onprem/platform-vm` module.
//!
//! Data flows one way: **inputs → plan → apply → evidence**.
//! - [`inputs`]: overlay model, defaults, merge, env overrides, validation, naming, bridge aliases.
//! - [`hyops`]: the HyOps runtime root: credentials, template state, run ids, evidence, state files.
//! - [`pve`]: typed Proxmox VE client; knows nothing about HyOps.
//! - [`netbox`]: NetBox IPAM seam (not yet implemented beyond the error it raises).
//! - [`ssh`]: SSH readiness seam.
//! - [`plan`]: desired model, observed model, diff, plan artifact.
//! - [`apply`]: executor, journal, destroy.
//! - [`sim`]: the Proxmox VE simulator, the only code that pretends to be Proxmox.
//! - [`yaml`]: YAML/JSON read exactly as HyOps (PyYAML, `json`) reads them; the YAML writer.
//! - [`retry`]: the one retry policy (backoff, budgets, cancellation) every client uses.
//! - [`cli`]: the command line surface; thin.

pub mod apply;
pub mod cli;
pub mod commands;
pub mod fsread;
pub mod hyops;
pub mod inputs;
pub mod netbox;
pub mod plan;
pub mod pve;
pub mod retry;
pub mod secret;
pub mod sim;
pub mod ssh;
pub mod yaml;
