//! Getting operator values onto the defaults exactly as `hyops` does (contract §1.2 steps
//! 1–4): the `--inputs` file read as UTF-8 and `yaml.safe_load`ed (YAML 1.1, see
//! [`crate::yaml`]), the `preset_ref` check on the overlay, the operator merge (mappings
//! recurse, lists and scalars replace, a blank string never erases a non-blank one), and
//! `HYOPS_INPUTS_JSON` / `HYOPS_INPUT_<path>` applied in process-environment order with
//! `json.loads` semantics. Everything works on the Python data model ([`PyValue`]); the env
//! arrives as an ordered list so this stays hermetic. Knows nothing about what any field
//! means.

use std::path::Path;

use crate::yaml::{self, json, py_strip, PyDict, PyValue, MAX_DOCUMENT_BYTES};

use super::error::InputsError;

/// Reads the `--inputs` file as `hyops` does (`yaml.safe_load(path.read_text("utf-8")) or
/// {}`, which must then be a mapping). Bounds are checked before anything is parsed.
pub fn load_overlay_file(path: &Path) -> Result<PyDict, InputsError> {
    let shown = path.display().to_string();
    let overlay_err = |reason: String| InputsError::Overlay {
        path: shown.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| overlay_err(os_error_text(&e, path)))?;
    if meta.is_file() && meta.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(overlay_err(format!(
            "the file is {} bytes; hyops-pve reads overlays of at most {MAX_DOCUMENT_BYTES} bytes",
            meta.len()
        )));
    }
    // The metadata says 0 bytes for a device, a FIFO or a /proc file: bound the read itself.
    let bytes = crate::fsread::read_at_most(path, MAX_DOCUMENT_BYTES)
        .map_err(|e| overlay_err(os_error_text(&e, path)))?
        .ok_or_else(|| {
            overlay_err(format!(
                "the file holds more than {MAX_DOCUMENT_BYTES} bytes; hyops-pve reads overlays of at most {MAX_DOCUMENT_BYTES} bytes"
            ))
        })?;
    let text = decode_utf8(&bytes).map_err(overlay_err)?;
    parse_overlay(&text).map_err(|e| match e {
        OverlayParseError::NotAMapping => InputsError::NotAMapping(shown.clone()),
        OverlayParseError::Yaml(reason) => overlay_err(reason),
    })
}

/// Why overlay text was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayParseError {
    /// The YAML could not be read (the reason, with line and column).
    Yaml(String),
    /// A truthy top level that is not a mapping (`hyops`: `invalid YAML object: <path>`).
    NotAMapping,
}

/// Parses overlay YAML text into the operator inputs: `safe_load(text) or {}`, which must be
/// a mapping. A falsy top level (`~`, `false`, `0`, `''`, `[]`) is an empty overlay, as in
/// `hyops`; the top level is never unwrapped (an `inputs:` key is just an unknown input).
pub fn parse_overlay(text: &str) -> Result<PyDict, OverlayParseError> {
    let value = yaml::safe_load(text).map_err(|e| OverlayParseError::Yaml(e.to_string()))?;
    if !value.truthy() {
        return Ok(PyDict::new());
    }
    match value {
        PyValue::Dict(d) => Ok(d),
        _ => Err(OverlayParseError::NotAMapping),
    }
}

/// `bytes.decode("utf-8")` with Python's error text.
pub fn decode_utf8(bytes: &[u8]) -> Result<String, String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let pos = e.valid_up_to();
            let byte = bytes[pos];
            let reason = match e.error_len() {
                None => "unexpected end of data",
                Some(_) if matches!(byte, 0x80..=0xc1 | 0xf5..=0xff) => "invalid start byte",
                Some(_) => "invalid continuation byte",
            };
            Err(format!(
                "'utf-8' codec can't decode byte 0x{byte:02x} in position {pos}: {reason}"
            ))
        }
    }
}

/// Python's text for an `OSError` about `path`: `[Errno 2] No such file or directory: '<path>'`.
pub fn os_error_text(e: &std::io::Error, path: &Path) -> String {
    let shown = PyValue::str(path.display().to_string()).py_repr();
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let strerror = text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text)
                .to_string();
            format!("[Errno {code}] {strerror}: {shown}")
        }
        None => format!("{e}: {shown}"),
    }
}

/// `_as_preset_ref` on the operator overlay (the spec has no presets, so any non-blank
/// `preset_ref` is refused; env overrides are applied later and never checked, as upstream).
pub fn check_preset_ref(operator: &PyDict) -> Result<(), InputsError> {
    match operator.get("preset_ref") {
        None | Some(PyValue::None) => Ok(()),
        Some(PyValue::Str(s)) if py_strip(s).is_empty() => Ok(()),
        Some(PyValue::Str(_)) => Err(InputsError::PresetRefUnsupported),
        Some(_) => Err(InputsError::Resolve(
            "inputs.preset_ref must be a string when set".to_string(),
        )),
    }
}

/// `_merge_operator_inputs`: merges the operator overlay onto `target` in place. A mapping
/// onto a mapping merges recursively; a blank string over a non-blank string is skipped;
/// anything else replaces.
pub fn merge_operator_inputs(target: &mut PyDict, operator: &PyDict) {
    for (key, value) in operator.iter() {
        if let PyValue::Dict(src) = value {
            if let Some(PyValue::Dict(dst)) = target_get_mut(target, key) {
                merge_operator_inputs(dst, src);
                continue;
            }
        }
        if let PyValue::Str(s) = value {
            if py_strip(s).is_empty() {
                if let Some(PyValue::Str(cur)) = target.get_key(key) {
                    if !py_strip(cur).is_empty() {
                        continue;
                    }
                }
            }
        }
        target.insert(key.clone(), value.clone());
    }
}

fn target_get_mut<'a>(d: &'a mut PyDict, key: &PyValue) -> Option<&'a mut PyValue> {
    d.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `try_json`: the value parsed as JSON when it parses (after stripping), else the raw
/// string; a blank value is `""`. Bounds of [`json::loads`] are refusals here (Python would
/// fall back to the raw string only past its own recursion limit).
pub fn try_json(raw: &str) -> Result<PyValue, InputsError> {
    let t = py_strip(raw);
    if t.is_empty() {
        return Ok(PyValue::str(""));
    }
    match json::loads(t) {
        Ok(v) => Ok(v),
        Err(json::JsonError::Refused(why)) => Err(InputsError::EnvOverride(why)),
        Err(_) => Ok(PyValue::str(raw)),
    }
}

/// `apply_env_overrides`: `HYOPS_INPUTS_JSON` (a JSON object, shallow-updated) and then every
/// `HYOPS_INPUT_<path>` variable in the order given (the process environment's order):
/// `__` separates nesting levels, each level is lower-cased, and the value is
/// [`try_json`]-parsed. A non-mapping on the way is replaced by a mapping.
pub fn apply_env_overrides(
    inputs: &mut PyDict,
    env: &[(String, String)],
) -> Result<(), InputsError> {
    let raw_json = env
        .iter()
        .rev()
        .find(|(k, _)| k == "HYOPS_INPUTS_JSON")
        .map(|(_, v)| py_strip(v))
        .unwrap_or("");
    if !raw_json.is_empty() {
        match try_json(raw_json)? {
            PyValue::Dict(blob) => {
                for (k, v) in blob.iter() {
                    inputs.insert(k.clone(), v.clone());
                }
            }
            _ => {
                return Err(InputsError::EnvOverride(
                    "HYOPS_INPUTS_JSON must be a JSON object".to_string(),
                ))
            }
        }
    }
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("HYOPS_INPUT_") else {
            continue;
        };
        let key = py_strip(rest);
        let path: Vec<String> = key
            .split("__")
            .filter(|p| !p.is_empty())
            .map(|p| p.to_lowercase())
            .collect();
        if path.is_empty() {
            continue;
        }
        set_nested(inputs, &path, try_json(v)?);
    }
    Ok(())
}

fn set_nested(dst: &mut PyDict, path: &[String], value: PyValue) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = dst;
    for key in parents {
        if !matches!(cur.get(key), Some(PyValue::Dict(_))) {
            cur.set(key, PyValue::Dict(PyDict::new()));
        }
        let Some(PyValue::Dict(next)) = cur.get_mut(key) else {
            // Made a mapping just above.
            return;
        };
        cur = next;
    }
    cur.set(last, value);
}

/// What kind of JSON value `v` is, for messages: `a mapping`, `a list`, `a string`, ….
pub fn value_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> PyDict {
        parse_overlay(text).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn blank_string_fills_a_missing_or_blank_slot() {
        let mut base = d("a: ''\nb: keep\n");
        merge_operator_inputs(&mut base, &d("a: ' '\nb: ''\nc: ''\n"));
        assert_eq!(
            PyValue::Dict(base).py_repr(),
            "{'a': ' ', 'b': 'keep', 'c': ''}"
        );
    }

    #[test]
    fn mapping_replaces_a_scalar_and_scalar_replaces_a_mapping() {
        let mut base = d("a: 1\nb: {x: 1}\n");
        merge_operator_inputs(&mut base, &d("a: {y: 2}\nb: false\n"));
        assert_eq!(PyValue::Dict(base).py_repr(), "{'a': {'y': 2}, 'b': False}");
    }

    #[test]
    fn nested_env_path_replaces_a_scalar_parent() {
        let mut v = d("limits: 5\n");
        apply_env_overrides(&mut v, &env(&[("HYOPS_INPUT_limits__global", "2")])).unwrap();
        assert_eq!(PyValue::Dict(v).py_repr(), "{'limits': {'global': 2}}");
    }

    #[test]
    fn env_value_that_is_not_json_stays_the_raw_string() {
        let mut v = PyDict::new();
        apply_env_overrides(&mut v, &env(&[("HYOPS_INPUT_name_prefix", " lab-1 ")])).unwrap();
        assert_eq!(PyValue::Dict(v).py_repr(), "{'name_prefix': ' lab-1 '}");
    }

    #[test]
    fn env_overrides_apply_in_environment_order() {
        let mut v = PyDict::new();
        apply_env_overrides(
            &mut v,
            &env(&[
                ("HYOPS_INPUT_limits", "{\"global\": 1}"),
                ("HYOPS_INPUT_LIMITS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(PyValue::Dict(v).py_repr(), "{'limits': 3}");
        let mut v = PyDict::new();
        apply_env_overrides(
            &mut v,
            &env(&[
                ("HYOPS_INPUT_LIMITS", "3"),
                ("HYOPS_INPUT_limits__global", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(PyValue::Dict(v).py_repr(), "{'limits': {'global': 1}}");
    }

    #[test]
    fn env_json_keeps_python_numbers() {
        let mut v = PyDict::new();
        apply_env_overrides(
            &mut v,
            &env(&[(
                "HYOPS_INPUTS_JSON",
                "{\"cpu_cores\": NaN, \"memory_mb\": 99999999999999999999}",
            )]),
        )
        .unwrap();
        assert_eq!(
            PyValue::Dict(v).py_repr(),
            "{'cpu_cores': nan, 'memory_mb': 99999999999999999999}"
        );
    }

    #[test]
    fn falsy_top_levels_are_empty_overlays() {
        for t in ["", "~", "false", "0", "''", "[]"] {
            assert!(parse_overlay(t).unwrap().is_empty(), "{t:?}");
        }
        assert_eq!(parse_overlay("- a\n"), Err(OverlayParseError::NotAMapping));
        assert_eq!(parse_overlay("5\n"), Err(OverlayParseError::NotAMapping));
    }

    #[test]
    fn the_top_level_is_never_unwrapped() {
        assert_eq!(
            PyValue::Dict(d("inputs:\n  cpu_cores: 6\n")).py_repr(),
            "{'inputs': {'cpu_cores': 6}}"
        );
    }

    #[test]
    fn utf8_errors_read_as_python() {
        assert_eq!(
            decode_utf8(b"a: \xff"),
            Err("'utf-8' codec can't decode byte 0xff in position 3: invalid start byte".into())
        );
        assert_eq!(
            decode_utf8(b"\xe2\x28\xa1"),
            Err(
                "'utf-8' codec can't decode byte 0xe2 in position 0: invalid continuation byte"
                    .into()
            )
        );
        assert_eq!(
            decode_utf8(b"ab\xe2\x82"),
            Err(
                "'utf-8' codec can't decode byte 0xe2 in position 2: unexpected end of data".into()
            )
        );
    }
}
