//! The project's Proxmox VE API spec (`proxmox-api-spec/endpoints.json`), compiled into the
//! binary: endpoint lookup by method and concrete path, and the parameter schemas the
//! simulator checks requests against. Knows nothing about VMs, tasks or HTTP.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The spec text, embedded so the binary never needs the file at runtime.
pub const SPEC_JSON: &str = include_str!("../../proxmox-api-spec/endpoints.json");

/// A property-string format: inline key schemas, or a named format.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FormatRef {
    Named(String),
    Inline(BTreeMap<String, Schema>),
}

/// One parameter (or property-string key) schema: only machine facts.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct Schema {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub format: Option<FormatRef>,
    #[serde(rename = "enum", default)]
    pub enum_values: Option<Vec<String>>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    #[serde(rename = "maxLength", default)]
    pub max_length: Option<usize>,
    #[serde(rename = "minLength", default)]
    pub min_length: Option<usize>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub default_key: bool,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(rename = "keyAlias", default)]
    pub key_alias: Option<String>,
    #[serde(default)]
    pub requires: Option<String>,
    /// For indexed families (`net[n]`): the inclusive index range.
    #[serde(default)]
    pub index: Option<(u32, u32)>,
}

/// A named format: key schemas for property strings, or a verifier the simulator implements.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum NamedFormat {
    Keys(BTreeMap<String, Schema>),
    /// `"verifier"` (implemented in code), `"list"` (a `-list` of the base format) or `"missing"`.
    Kind(String),
}

/// One endpoint (path template + method).
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub path: String,
    pub method: String,
    pub name: String,
    pub protected: bool,
    pub allowtoken: bool,
    pub returns: String,
    pub upid: bool,
    pub params: BTreeMap<String, Schema>,
}

/// The whole project spec.
#[derive(Debug, Clone, Deserialize)]
pub struct Spec {
    pub source: String,
    pub formats: BTreeMap<String, NamedFormat>,
    pub endpoints: Vec<Endpoint>,
}

/// Errors loading the embedded spec (a build-time defect, reported instead of panicking).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("proxmox-api-spec/endpoints.json is not valid: {0}")]
    Parse(String),
}

static SPEC: OnceLock<Result<Spec, String>> = OnceLock::new();

/// The embedded spec, parsed once.
pub fn spec() -> Result<&'static Spec, SpecError> {
    SPEC.get_or_init(|| serde_json::from_str::<Spec>(SPEC_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| SpecError::Parse(e.clone()))
}

/// The outcome of matching a request path.
pub enum PathMatch<'a> {
    Found(&'a Endpoint, BTreeMap<String, String>),
    /// The path exists but not with this method, or not at all: PVE answers 501 for both.
    NotImplemented,
}

impl Spec {
    /// Find the endpoint for `method` and a concrete path (after `/api2/json`).
    pub fn find(&self, method: &str, path: &str) -> PathMatch<'_> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        for ep in &self.endpoints {
            if ep.method != method {
                continue;
            }
            if let Some(vars) = match_template(&ep.path, &parts) {
                return PathMatch::Found(ep, vars);
            }
        }
        PathMatch::NotImplemented
    }

    /// The schema of parameter `name`, resolving indexed families (`net7` → `net[n]`).
    pub fn param<'a>(&self, ep: &'a Endpoint, name: &str) -> Option<&'a Schema> {
        lookup_indexed(&ep.params, name)
    }

    /// Key schemas of a property-string format (inline or named).
    pub fn keys<'a>(&'a self, f: &'a FormatRef) -> Option<&'a BTreeMap<String, Schema>> {
        match f {
            FormatRef::Inline(k) => Some(k),
            FormatRef::Named(n) => match self.formats.get(n) {
                Some(NamedFormat::Keys(k)) => Some(k),
                _ => None,
            },
        }
    }

    /// The endpoint for an exact method and template.
    pub fn endpoint(&self, method: &str, template: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.method == method && e.path == template)
    }
}

/// Look up `name` in a parameter map that may contain indexed families.
pub fn lookup_indexed<'a>(map: &'a BTreeMap<String, Schema>, name: &str) -> Option<&'a Schema> {
    if let Some(s) = map.get(name) {
        if s.index.is_none() {
            return Some(s);
        }
    }
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits == name.len() {
        return None;
    }
    let (base, idx) = name.split_at(name.len() - digits);
    if idx.len() > 1 && idx.starts_with('0') {
        return None;
    }
    let n: u32 = idx.parse().ok()?;
    let s = map.get(&format!("{base}[n]"))?;
    let (lo, hi) = s.index?;
    (lo..=hi).contains(&n).then_some(s)
}

fn match_template(template: &str, parts: &[&str]) -> Option<BTreeMap<String, String>> {
    let tparts: Vec<&str> = template.split('/').collect();
    if tparts.len() != parts.len() {
        return None;
    }
    let mut vars = BTreeMap::new();
    for (t, p) in tparts.iter().zip(parts) {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            if p.is_empty() {
                return None;
            }
            let decoded = percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned();
            vars.insert(name.to_string(), decoded);
        } else if t != p {
            return None;
        }
    }
    Some(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_spec_parses_and_has_the_clone_endpoint() {
        let s = spec().unwrap();
        match s.find("POST", "/nodes/pve1/qemu/9000/clone") {
            PathMatch::Found(ep, vars) => {
                assert_eq!(ep.path, "/nodes/{node}/qemu/{vmid}/clone");
                assert_eq!(vars["vmid"], "9000");
                assert!(ep.upid);
            }
            PathMatch::NotImplemented => panic!("clone not found"),
        }
        assert!(matches!(
            s.find("POST", "/nodes/pve1/qemu/9000/cloudinit"),
            PathMatch::NotImplemented
        ));
    }

    #[test]
    fn indexed_params_resolve_within_their_range_only() {
        let s = spec().unwrap();
        let ep = s
            .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
            .unwrap();
        assert!(s.param(ep, "net0").is_some());
        assert!(s.param(ep, "net31").is_some());
        assert!(s.param(ep, "net32").is_none());
        assert!(s.param(ep, "net01").is_none());
        assert!(s.param(ep, "ipconfig3").is_some());
    }
}
