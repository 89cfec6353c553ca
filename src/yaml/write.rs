//! The one YAML encoder of the crate: block-style YAML for a `serde_json::Value`, written so
//! that PyYAML's `safe_load` (YAML 1.1) and YAML 1.2 readers both read back exactly the same
//! value. A string is written plain only when it is made of `[A-Za-z0-9_./-]`, does not start
//! with `-`, and reads back as a string under both YAML versions (`yes`, `010`, `1:30`,
//! `2024-01-01`, `1e3`, `0o7` are quoted); every other string is double-quoted with escapes
//! for anything PyYAML's reader would refuse or fold. Floats always carry a `.`, as YAML 1.1
//! needs (`1.0e+16`). Knows nothing about what the document means.

use std::fmt::Write as _;

use serde_json::Value;

use super::resolve::{resolve_plain, Implicit};
use super::value::float_repr;

/// The YAML text of `v` (ending with a newline).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, ind: usize) {
    let mut first = true;
    for (k, v) in m {
        if !first {
            indent(out, ind);
        }
        first = false;
        out.push_str(&string(k));
        out.push(':');
        write_value_after_key(out, v, ind);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, ind: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            indent(out, ind + 2);
            write_map(out, m, ind + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            indent(out, ind);
            write_seq(out, a, ind);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], ind: usize) {
    let mut first = true;
    for item in a {
        if !first {
            indent(out, ind);
        }
        first = false;
        out.push_str("- ");
        if is_block(item) {
            match item {
                Value::Object(m) => write_map(out, m, ind + 2),
                Value::Array(inner) => write_seq(out, inner, ind + 2),
                _ => {}
            }
        } else {
            out.push_str(&scalar(item));
            out.push('\n');
        }
    }
}

/// A scalar (or an empty collection) in flow form.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                n.to_string()
            } else {
                float_text(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A float as PyYAML's representer writes it: Python's repr, with `.0` added before an
/// exponent so YAML 1.1 reads it as a float.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let r = float_repr(f);
    if !r.contains('.') && r.contains('e') {
        r.replacen('e', ".0e", 1)
    } else {
        r
    }
}

/// True when a plain scalar would be read as a number, bool or null by a YAML 1.2 reader.
fn special_in_yaml12(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "null" | "~" | ".inf" | "-.inf" | "+.inf" | ".nan"
    ) {
        return true;
    }
    let body = s.trim_start_matches(['-', '+']);
    if let Some(o) = body.strip_prefix("0o") {
        return !o.is_empty() && o.bytes().all(|c| (b'0'..=b'7').contains(&c));
    }
    if let Some(h) = body.strip_prefix("0x") {
        return !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit());
    }
    // [-+]? ( \.[0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
                && !(a.is_empty() && b.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.trim_start_matches(['-', '+']);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

fn plain_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-'))
        && resolve_plain(s) == Implicit::Str
        && !special_in_yaml12(s)
}

/// A string scalar: plain when that is unambiguous, else double-quoted.
pub fn string(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => {
                let n = c as u32;
                let printable = matches!(n, 0x20..=0x7e | 0xa0..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
                    && !matches!(n, 0x2028 | 0x2029 | 0xfeff);
                if printable {
                    out.push(c);
                } else if n <= 0xff {
                    let _ = write!(out, "\\x{n:02x}");
                } else if n <= 0xffff {
                    let _ = write!(out, "\\u{n:04x}");
                } else {
                    let _ = write!(out, "\\U{n:08x}");
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::read::safe_load;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(v: &Value) -> Value {
        let text = to_yaml(v);
        safe_load(&text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .to_json("doc")
            .unwrap()
    }

    #[test]
    fn yaml11_lookalike_strings_are_quoted() {
        for s in [
            "yes",
            "No",
            "on",
            "010",
            "4_096",
            "1:30",
            "2024-01-01",
            "1e3",
            "0o7",
            ".5",
            "~",
            "null",
            "",
            "-a",
            "<<",
            "=",
            "a: b",
            "#x",
            "line\nbreak",
            "tab\t",
            "é",
            "\u{85}",
        ] {
            assert_eq!(round_trip(&json!(s)), json!(s), "{s:?}");
        }
        assert_eq!(string("vmbr0"), "vmbr0");
        assert_eq!(string("yes"), "\"yes\"");
    }

    #[test]
    fn floats_keep_a_dot_for_yaml11() {
        assert_eq!(to_yaml(&json!(1e16)), "1.0e+16\n");
        assert_eq!(round_trip(&json!(1e16)), json!(1e16));
        assert_eq!(round_trip(&json!(0.5)), json!(0.5));
    }

    #[test]
    fn nested_documents_round_trip() {
        let v = json!({
            "vms": {"app-01": {"interfaces": [{"bridge": "vmbr0", "ipv4": {"address": "dhcp"}}, []], "tags": [], "m": {}}},
            "list": [[1, 2], {"a": null}, true],
            "n": -3
        });
        assert_eq!(round_trip(&v), v);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            "[a-z0-9:._ -]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z0-9:._ -]{0,8}|.{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_value_reads_back_unchanged(v in arb_json()) {
            prop_assert_eq!(round_trip(&v), v);
        }
    }
}
