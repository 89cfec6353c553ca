//! Planner: the desired model (from validated inputs), the observed model (from Proxmox), the
//! diff between them, the saved plan artifact and its rendering. It decides what must change;
//! it never changes anything itself (that is [`crate::apply`]).

pub mod artifact;
pub mod checks;
pub mod desired;
pub mod diff;
pub mod marker;
pub mod observe;
pub mod observed;
pub mod placement;
pub mod props;
pub mod render;
pub mod template;
pub mod userdata;
