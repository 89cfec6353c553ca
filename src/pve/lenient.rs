//! Lenient decoding of Proxmox JSON: Perl stringifies numbers and booleans, so `"100"`, `100`,
//! `"1"`, `1` and `true` must all be read. Serde `deserialize_with` helpers plus plain
//! functions over `serde_json::Value`. Knows nothing about HyOps.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// A JSON value read as an unsigned integer: numbers, integral floats and numeric strings.
pub fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
        }
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

/// A JSON value read as a float: numbers and numeric strings.
pub fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A JSON value read as a boolean: `true`/`false`, `1`/`0` (number or string), `"yes"`/`"no"`,
/// `"on"`/`"off"`.
pub fn value_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => super::propstr::parse_bool_str(s),
        _ => None,
    }
}

/// A JSON value read as a string: strings as they are, numbers and booleans printed
/// (booleans as `1`/`0`, the way Proxmox config files hold them).
pub fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

fn bad<E: de::Error>(what: &str, v: &Value) -> E {
    E::custom(format!("expected {what}, got {v}"))
}

/// `deserialize_with` for `u64` that accepts strings.
pub fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    value_u64(&v).ok_or_else(|| bad("an unsigned integer", &v))
}

/// `deserialize_with` for `u32` that accepts strings.
pub fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = Value::deserialize(d)?;
    value_u64(&v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad("a 32-bit unsigned integer", &v))
}

/// `deserialize_with` for `Option<u64>` that accepts strings; `null` and absent are `None`.
pub fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() || v.as_str() == Some("") {
        return Ok(None);
    }
    value_u64(&v)
        .map(Some)
        .ok_or_else(|| bad("an unsigned integer", &v))
}

/// `deserialize_with` for an `Option<u64>` that only enables an extra check (a node's
/// `maxcpu`): any value that is not an unsigned integer is `None`, never a decode error, so an
/// odd answer skips that check instead of failing the whole listing.
pub fn de_opt_u64_hint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(value_u64(&v))
}

/// `deserialize_with` for `Option<u32>` that accepts strings.
pub fn de_opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() || v.as_str() == Some("") {
        return Ok(None);
    }
    value_u64(&v)
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| bad("a 32-bit unsigned integer", &v))
}

/// `deserialize_with` for `Option<f64>` that accepts strings.
pub fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() || v.as_str() == Some("") {
        return Ok(None);
    }
    value_f64(&v).map(Some).ok_or_else(|| bad("a number", &v))
}

/// `deserialize_with` for `bool` that accepts `0`/`1`/`"1"`/`true`; `null` is `false`.
pub fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(false);
    }
    value_bool(&v).ok_or_else(|| bad("a boolean", &v))
}

/// `deserialize_with` for `Option<bool>` that accepts `0`/`1`/`"1"`/`true`.
pub fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    value_bool(&v).map(Some).ok_or_else(|| bad("a boolean", &v))
}

/// `deserialize_with` for `Option<String>` that also accepts numbers; empty strings are `None`.
pub fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    value_string(&v)
        .map(|s| if s.is_empty() { None } else { Some(s) })
        .ok_or_else(|| bad("a string", &v))
}
