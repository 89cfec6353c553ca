//! Inputs: spec defaults, overlay merge, env overrides, validation, naming and bridge aliases
//! for `platform/onprem/platform-vm`. Produces a typed [`model::ModuleInputs`]. Knows nothing
//! about Proxmox API calls, HyOps state files or the plan.

pub mod model;
