//! Physical VM names (contract §1.10). Prefix = the first non-empty of `name_prefix`,
//! `context_id`, the runtime env; name = per-VM `vm_name` override, else `<prefix>-<key>`
//! unless the key already starts with `<prefix>-`, else the key. Knows nothing else.

/// The first non-blank (trimmed) of `name_prefix`, `context_id`, `env`.
pub fn name_prefix(name_prefix: &str, context_id: &str, env: Option<&str>) -> String {
    [name_prefix, context_id, env.unwrap_or("")]
        .iter()
        .map(|s| crate::yaml::py_strip(s))
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string()
}

/// The physical Proxmox name of logical `key`.
pub fn physical_name(key: &str, prefix: &str, vm_name_override: Option<&str>) -> String {
    if let Some(name) = vm_name_override.map(str::trim).filter(|s| !s.is_empty()) {
        return name.to_string();
    }
    if !prefix.is_empty() && !key.starts_with(&format!("{prefix}-")) {
        return format!("{prefix}-{key}");
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_prefix_applies_when_no_prefix_inputs() {
        let p = name_prefix("", "", Some("dev"));
        assert_eq!(physical_name("app-01", &p, None), "dev-app-01");
    }

    #[test]
    fn name_prefix_wins_over_context_id() {
        let p = name_prefix("corp", "prod-a", Some("dev"));
        assert_eq!(
            physical_name("apps-gitops-01", &p, None),
            "corp-apps-gitops-01"
        );
    }

    #[test]
    fn no_double_prefix() {
        assert_eq!(physical_name("dev-app-01", "dev", None), "dev-app-01");
    }

    #[test]
    fn override_wins_and_empty_prefix_keeps_key() {
        assert_eq!(
            physical_name("app-01", "dev", Some("legacy-name")),
            "legacy-name"
        );
        assert_eq!(physical_name("app-01", "", None), "app-01");
        assert_eq!(physical_name("app-01", "dev", Some("  ")), "dev-app-01");
    }
}
