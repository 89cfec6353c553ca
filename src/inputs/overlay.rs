//! Getting operator values onto the defaults (contract §1.2 steps 3–4): YAML overlay loading,
//! the operator merge (mappings recurse, lists replace, blank strings never erase), and the
//! `HYOPS_INPUTS_JSON` / `HYOPS_INPUT_<path>` env overrides. The env arrives as a map so this
//! stays hermetic. Knows nothing about what any field means.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Number, Value};

use super::error::InputsError;

/// Reads the `--inputs` file. An empty file is an empty overlay.
pub fn load_overlay_file(path: &Path) -> Result<Value, InputsError> {
    let text = std::fs::read_to_string(path).map_err(|e| InputsError::Overlay {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_overlay_yaml(&text).map_err(|reason| InputsError::Overlay {
        path: path.display().to_string(),
        reason,
    })
}

/// Parses overlay YAML text into the inputs mapping. The top level is either the inputs
/// mapping itself or a document with an `inputs:` mapping, which is unwrapped. The error is
/// the reason only (the caller adds the file name).
pub fn parse_overlay_yaml(text: &str) -> Result<Value, String> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let value = yaml_to_json(yaml)?;
    let mut map = match value {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "the top level must be a mapping of inputs, found {}",
                value_kind(&other)
            ))
        }
    };
    if let Some(Value::Object(inner)) = map.get("inputs") {
        let inner = inner.clone();
        map = inner;
    }
    Ok(Value::Object(map))
}

/// What kind of value `v` is, for messages: `a mapping`, `a list`, `a string`, ….
pub fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Converts a YAML tree into JSON. Scalar mapping keys become strings (as YAML readers that
/// key by text do); mapping or list keys are rejected; tags are dropped; non-finite floats
/// become their YAML spelling as a string.
pub(crate) fn yaml_to_json(y: serde_yaml::Value) -> Result<Value, String> {
    Ok(match y {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match Number::from_f64(f) {
                    Some(num) => Value::Number(num),
                    None => Value::String(n.to_string()),
                }
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(yaml_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Null => "null".to_string(),
                    serde_yaml::Value::Tagged(t) => match yaml_to_json(t.value)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    _ => return Err("a mapping key must be a scalar".to_string()),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value)?,
    })
}

/// Merges an operator overlay onto `base` in place (contract §1.2 step 3): mappings merge
/// recursively, lists and scalars replace, and a blank operator string never erases an
/// existing non-blank string.
pub fn merge_operator_inputs(base: &mut Value, overlay: &Value) {
    let (Value::Object(dst), Value::Object(src)) = (&mut *base, overlay) else {
        if !is_blank_over_non_blank(base, overlay) {
            *base = overlay.clone();
        }
        return;
    };
    for (k, v) in src {
        match dst.get_mut(k) {
            Some(existing @ Value::Object(_)) if v.is_object() => {
                merge_operator_inputs(existing, v)
            }
            Some(existing) => {
                if !is_blank_over_non_blank(existing, v) {
                    *existing = v.clone();
                }
            }
            None => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

fn is_blank_over_non_blank(existing: &Value, new: &Value) -> bool {
    matches!((existing, new), (Value::String(old), Value::String(s))
        if s.trim().is_empty() && !old.trim().is_empty())
}

/// Applies `HYOPS_INPUTS_JSON` (a JSON object, shallow-updated) and then every
/// `HYOPS_INPUT_<path>` variable (`__` separates nesting, keys lower-cased, value parsed as
/// JSON when possible, else kept as the string) in key order.
pub fn apply_env_overrides(
    inputs: &mut Value,
    env: &BTreeMap<String, String>,
) -> Result<(), InputsError> {
    if !inputs.is_object() {
        *inputs = Value::Object(Map::new());
    }
    let Value::Object(out) = inputs else {
        // Just made an object above.
        return Ok(());
    };
    if let Some(raw) = env.get("HYOPS_INPUTS_JSON") {
        if !raw.trim().is_empty() {
            match try_json(raw) {
                Value::Object(blob) => {
                    for (k, v) in blob {
                        out.insert(k, v);
                    }
                }
                _ => {
                    return Err(InputsError::EnvOverride(
                        "HYOPS_INPUTS_JSON must be a JSON object".to_string(),
                    ))
                }
            }
        }
    }
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("HYOPS_INPUT_") else {
            continue;
        };
        let path: Vec<String> = rest
            .trim()
            .split("__")
            .filter(|p| !p.is_empty())
            .map(|p| p.to_lowercase())
            .collect();
        if path.is_empty() {
            continue;
        }
        set_nested(out, &path, try_json(v));
    }
    Ok(())
}

/// The value as JSON when it parses, else the raw string; blank stays blank.
fn try_json(raw: &str) -> Value {
    let t = raw.trim();
    if t.is_empty() {
        return Value::String(String::new());
    }
    serde_json::from_str(t).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn set_nested(dst: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = dst;
    for key in parents {
        let slot = cur
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            // Replaced by an object just above.
            return;
        };
        cur = next;
    }
    cur.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blank_string_fills_a_missing_or_blank_slot() {
        let mut base = json!({"a": "", "b": "keep"});
        merge_operator_inputs(&mut base, &json!({"a": " ", "b": "", "c": ""}));
        assert_eq!(base, json!({"a": " ", "b": "keep", "c": ""}));
    }

    #[test]
    fn mapping_replaces_a_scalar_and_scalar_replaces_a_mapping() {
        let mut base = json!({"a": 1, "b": {"x": 1}});
        merge_operator_inputs(&mut base, &json!({"a": {"y": 2}, "b": false}));
        assert_eq!(base, json!({"a": {"y": 2}, "b": false}));
    }

    #[test]
    fn nested_env_path_replaces_a_scalar_parent() {
        let mut v = json!({"limits": 5});
        let env = [("HYOPS_INPUT_limits__global".to_string(), "2".to_string())]
            .into_iter()
            .collect();
        apply_env_overrides(&mut v, &env).unwrap();
        assert_eq!(v, json!({"limits": {"global": 2}}));
    }

    #[test]
    fn env_value_that_is_not_json_stays_a_string() {
        let mut v = json!({});
        let env = [("HYOPS_INPUT_name_prefix".to_string(), "lab-1".to_string())]
            .into_iter()
            .collect();
        apply_env_overrides(&mut v, &env).unwrap();
        assert_eq!(v, json!({"name_prefix": "lab-1"}));
    }

    #[test]
    fn yaml_scalar_keys_become_strings() {
        assert_eq!(
            parse_overlay_yaml("vms:\n  1: {}\n  true: {}\n").unwrap(),
            json!({"vms": {"1": {}, "true": {}}})
        );
    }
}
