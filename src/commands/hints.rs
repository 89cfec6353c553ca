//! Second lines for messages that must stay verbatim. Upstream validator messages name a field
//! pattern (`inputs.vms.<name> must match ^[a-z0-9][a-z0-9-]{0,62}$`) but not the value that
//! broke it; the contract keeps their text exact, so the CLI edge adds one more line naming the
//! offending key or value, found in the merged inputs (spec defaults, overlay, env overrides).
//! Presentation only: never changes a verdict. Part of the CLI layer; knows the inputs layer's
//! public merge functions and nothing about the validators' internals.

use serde_json::Value;

use crate::inputs::validate::is_vm_key;
use crate::inputs::{
    apply_env_overrides, load_overlay_file, merge_operator_inputs, spec_defaults, InputsError,
    ResolveRequest,
};
use crate::yaml::PyValue;

/// Longest rendering of an offending value.
const VALUE_MAX: usize = 200;

/// `e`'s verbatim text, plus a second line naming the offending key or value when the message
/// names an `inputs.…` field and that field can be found in the merged inputs.
pub fn explain(e: &InputsError, req: &ResolveRequest) -> String {
    let text = e.to_string();
    match (e.validation(), merged_inputs(req)) {
        (Some(f), Some(inputs)) => match offending(&f.message, &inputs) {
            Some(line) => format!("{text}\n  {line}"),
            None => text,
        },
        _ => text,
    }
}

/// The inputs as the validators saw them (before alias folding), or `None` when they cannot be
/// rebuilt or carried as JSON (then the caller has the original error anyway).
fn merged_inputs(req: &ResolveRequest) -> Option<Value> {
    let PyValue::Dict(mut inputs) = PyValue::from(&spec_defaults()) else {
        return None;
    };
    if let Some(path) = &req.overlay_path {
        merge_operator_inputs(&mut inputs, &load_overlay_file(path).ok()?);
    }
    apply_env_overrides(&mut inputs, &req.env).ok()?;
    PyValue::Dict(inputs).to_json("inputs").ok()
}

/// The second line for `message` against `inputs`.
pub fn offending(message: &str, inputs: &Value) -> Option<String> {
    let field = message
        .split_whitespace()
        .find(|w| w.starts_with("inputs."))?
        .trim_end_matches([':', ',', ';', ')']);
    if field == "inputs.vms.<name>" {
        let vms = inputs.get("vms")?.as_object()?;
        let bad = vms.keys().find(|k| !is_vm_key(&k.to_lowercase()))?;
        return Some(format!(
            "offending key: inputs.vms[{}] (a VM key is lower-case letters, digits and '-', starting with a letter or digit, at most 63 characters)",
            render(&Value::String(bad.clone()))
        ));
    }
    let value = lookup(inputs, field)?;
    let shown = if is_secret_field(field) {
        "<redacted>".to_string()
    } else {
        render(value)
    };
    Some(format!("offending value: {field} = {shown}"))
}

/// Field names whose values are never shown.
fn is_secret_field(field: &str) -> bool {
    let last = field
        .rsplit(['.', '['])
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    ["password", "secret", "token", "private"]
        .iter()
        .any(|s| last.contains(s))
}

fn render(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.chars().count() > VALUE_MAX {
        let cut: String = s.chars().take(VALUE_MAX).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Resolve `inputs.a.b[key][2].c` in `root`. List indices are 1-based, as upstream's messages
/// count them; `[x]` on a mapping is the key `x`.
fn lookup<'a>(root: &'a Value, field: &str) -> Option<&'a Value> {
    let rest = field.strip_prefix("inputs")?;
    let mut cur = root;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                cur = cur.as_object()?.get(&name)?;
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                cur = match cur {
                    Value::Array(items) => {
                        let i: usize = inner.parse().ok()?;
                        items.get(i.checked_sub(1)?)?
                    }
                    Value::Object(map) => map.get(&inner)?,
                    _ => return None,
                };
            }
            _ => return None,
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_vm_key_is_named() {
        let inputs = json!({"vms": {"app-01": {}, "App_02": {}}});
        let line = offending(
            "inputs.vms.<name> must match ^[a-z0-9][a-z0-9-]{0,62}$",
            &inputs,
        )
        .unwrap();
        assert!(line.contains("inputs.vms[\"App_02\"]"), "{line}");
    }

    #[test]
    fn a_nested_value_is_found_with_one_based_list_indices() {
        let inputs = json!({"vms": {"app-01": {"interfaces": [
            {"ipv4": {"address": "10.0.0.1/24"}},
            {"ipv4": {"address": "10.0.0.300/24"}}
        ]}}});
        let line = offending(
            "inputs.vms[app-01].interfaces[2].ipv4.address must be a CIDR",
            &inputs,
        )
        .unwrap();
        assert_eq!(
            line,
            "offending value: inputs.vms[app-01].interfaces[2].ipv4.address = \"10.0.0.300/24\""
        );
    }

    #[test]
    fn secret_fields_are_redacted() {
        let inputs = json!({"netbox_token": "abc123"});
        let line = offending("inputs.netbox_token must be a string", &inputs).unwrap();
        assert!(
            !line.contains("abc123") && line.contains("<redacted>"),
            "{line}"
        );
    }

    #[test]
    fn a_message_without_a_field_gets_no_second_line() {
        assert_eq!(offending("either vms or vm_name", &json!({})), None);
    }
}
