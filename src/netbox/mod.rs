//! NetBox IPAM allocation and inventory sync (contract §4) live here once they are built.
//! Until then this build has no NetBox code: overlays with `addressing.mode: ipam` are refused
//! by the CLI layer's preflight with a clear message, never silently switched to static.
//!
//! The seam: the allocator will take the typed inputs (`inputs::model::ModuleInputs`) and the
//! SDN authority, and return the same inputs with every NIC's `Ipv4Config` filled in, before
//! `plan::desired` runs; the planner and executor need no change. Inventory sync will read
//! the published outputs after a successful apply. This module must not know about Proxmox.
