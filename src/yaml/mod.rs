//! YAML and JSON exactly as HyOps (Python) reads them, and the crate's one YAML writer.
//!
//! - [`safe_load`]: PyYAML's `yaml.safe_load` (YAML 1.1 scalars, merge keys, repeated keys,
//!   byte-order mark) on the maintained `saphyr-parser`, into the Python data model
//!   [`PyValue`], with bounds on size, depth, value length and alias expansion.
//! - [`json::loads`]: Python's `json.loads` (`NaN`, unbounded ints, Python's error texts).
//! - [`to_yaml`]: block YAML that PyYAML and YAML 1.2 readers read back unchanged.
//!
//! Knows nothing about HyOps inputs, state files or Proxmox.

pub mod json;
mod read;
pub mod resolve;
pub mod value;
mod write;

pub use read::{plain_scalar_is_str, safe_load, YamlError, YamlErrorKind};
pub use value::{
    float_repr, json_key, py_repr_str, py_strip, CarryError, CarryErrorKind, Date, DateTime,
    PyDict, PyValue,
};
pub use write::{string as yaml_string, to_yaml};

/// Deepest nesting of lists and mappings read from YAML or JSON (real overlays nest about 5
/// levels; PyYAML itself gives up somewhere past 300).
pub const MAX_DEPTH: usize = 64;
/// Longest single string value, in bytes (a large cloud-init user-data fits many times).
pub const MAX_STRING_BYTES: usize = 1 << 20;
/// Largest YAML document read, in bytes (a 1 000-VM overlay is about 200 KB).
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;
/// Most values built from one document, aliases expanded (a 1 000-VM overlay builds about
/// 20 000).
pub const MAX_NODES: usize = 1_000_000;
