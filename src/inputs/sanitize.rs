//! Rerun-inputs sanitising (contract §3.6): what may be written back to disk for a rerun.
//! Drops `_hyops_*` keys, secret-looking keys (unless they only name an env var, file or path)
//! and `ssh_keys` when they come from init. Knows nothing about where the result is written.

use serde_json::{Map, Value};

const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "account_key",
    "access_key",
    "sa_json",
];

/// True when a key must not be persisted.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_lowercase();
    if k.ends_with("_env") || k.ends_with("_file") || k.ends_with("_path") {
        return false;
    }
    SECRET_MARKERS.iter().any(|m| k.contains(m))
}

/// The inputs safe to persist as rerun inputs. Nested mappings are cleaned the same way.
pub fn sanitize_rerun_inputs(inputs: &Value) -> Value {
    let Value::Object(data) = inputs else {
        return inputs.clone();
    };
    let from_init = matches!(data.get("ssh_keys_from_init"), Some(Value::Bool(true)));
    let mut out = clean_map(data);
    if from_init {
        out.remove("ssh_keys");
    }
    Value::Object(out)
}

fn clean_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with("_hyops_") && !is_secret_key(k))
        .map(|(k, v)| (k.clone(), clean_value(v)))
        .collect()
}

fn clean_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(clean_value).collect()),
        other => other.clone(),
    }
}
