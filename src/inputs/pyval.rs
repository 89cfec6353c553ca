//! Python-semantics helpers over `serde_json::Value`, so the validator reproduces upstream's
//! `isinstance`, truthiness, `str(x or "")` and `ipaddress` behaviour (including its error
//! texts). Knows nothing about any particular input field.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

/// `dict.get(key)`, with JSON `null` (YAML `~` / empty value) read as absent like Python `None`.
pub(crate) fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// `isinstance(v, int) and not isinstance(v, bool)`, returning the value.
pub(crate) fn as_int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// Lenient integer read: an integer, or a string holding one (Proxmox-style numbers).
pub(crate) fn as_int_lenient(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => s.trim().parse::<i128>().ok(),
        other => as_int(other),
    }
}

/// A non-blank string, trimmed.
pub(crate) fn non_blank_str(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Python truthiness.
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().map(|f| f != 0.0).unwrap_or(true),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `str(v or "").strip()`.
pub(crate) fn py_str(v: Option<&Value>) -> String {
    if !truthy(v) {
        return String::new();
    }
    match v {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Bool(true)) => "True".to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `str(v).strip()` for a value that is present (no `or ""`): `False` → `"False"`, `0` → `"0"`.
pub(crate) fn py_plain_str(v: &Value) -> String {
    match v {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

/// Python `repr()` of a string: single quotes unless the text holds a single quote and no
/// double quote.
pub(crate) fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Strict dotted-quad parse as Python's `ipaddress` does it (no leading zeros, 0..=255).
pub(crate) fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if p.len() > 1 && p.starts_with('0') {
            return None;
        }
        octets[i] = p.parse::<u8>().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// An address as `ipaddress.ip_address` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpParsed {
    V4(Ipv4Addr),
    V6,
}

/// `ipaddress.ip_address(s)`; the error is Python's exception text.
pub(crate) fn ip_address(s: &str) -> Result<IpParsed, String> {
    if let Some(v4) = parse_ipv4(s) {
        return Ok(IpParsed::V4(v4));
    }
    if parse_ipv6(s) {
        return Ok(IpParsed::V6);
    }
    Err(format!(
        "{} does not appear to be an IPv4 or IPv6 address",
        py_repr(s)
    ))
}

fn parse_ipv6(s: &str) -> bool {
    let addr = s.split('%').next().unwrap_or(s);
    addr.parse::<Ipv6Addr>().is_ok()
}

/// An interface as `ipaddress.ip_interface` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfaceParsed {
    V4(Ipv4Net),
    V6,
}

/// `ipaddress.ip_interface(s)`: `a.b.c.d`, `a.b.c.d/len`, `a.b.c.d/netmask` or
/// `a.b.c.d/hostmask`; the error is Python's exception text.
pub(crate) fn ip_interface(s: &str) -> Result<IfaceParsed, String> {
    let err = || {
        format!(
            "{} does not appear to be an IPv4 or IPv6 interface",
            py_repr(s)
        )
    };
    let (addr, mask) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    if let Some(ip) = parse_ipv4(addr) {
        let prefix = match mask {
            None => 32,
            Some(m) => ipv4_prefix(m).ok_or_else(err)?,
        };
        return Ipv4Net::new(ip, prefix)
            .map(IfaceParsed::V4)
            .map_err(|_| err());
    }
    if parse_ipv6(addr) {
        let ok = match mask {
            None => true,
            Some(m) => {
                !m.is_empty()
                    && m.bytes().all(|b| b.is_ascii_digit())
                    && m.parse::<u32>().map(|p| p <= 128).unwrap_or(false)
            }
        };
        if ok {
            return Ok(IfaceParsed::V6);
        }
    }
    Err(err())
}

/// A prefix length, netmask or hostmask after the `/`.
fn ipv4_prefix(m: &str) -> Option<u8> {
    if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) {
        let p = m.parse::<u32>().ok()?;
        return if p <= 32 { Some(p as u8) } else { None };
    }
    let mask = u32::from(parse_ipv4(m)?);
    let ones = mask.leading_ones();
    if mask.checked_shl(ones).unwrap_or(0) == 0 {
        return Some(ones as u8);
    }
    let inv = !mask;
    let host_ones = inv.leading_ones();
    if inv.checked_shl(host_ones).unwrap_or(0) == 0 {
        return Some(host_ones as u8);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python_quoting() {
        assert_eq!(py_repr("foo"), "'foo'");
        assert_eq!(py_repr("it's"), "\"it's\"");
    }

    #[test]
    fn interface_accepts_bare_address_netmask_and_prefix() {
        assert_eq!(
            ip_interface("10.0.0.5"),
            Ok(IfaceParsed::V4("10.0.0.5/32".parse().unwrap()))
        );
        assert_eq!(
            ip_interface("10.0.0.5/255.255.255.0"),
            Ok(IfaceParsed::V4("10.0.0.5/24".parse().unwrap()))
        );
        assert_eq!(
            ip_interface("10.0.0.5/0.0.0.255"),
            Ok(IfaceParsed::V4("10.0.0.5/24".parse().unwrap()))
        );
        assert_eq!(ip_interface("fd00::1/64"), Ok(IfaceParsed::V6));
        assert_eq!(
            ip_interface("10.0.0.5/33"),
            Err("'10.0.0.5/33' does not appear to be an IPv4 or IPv6 interface".into())
        );
    }

    #[test]
    fn address_rejects_leading_zeros_like_python() {
        assert!(ip_address("010.0.0.1").is_err());
        assert_eq!(
            ip_address("nope"),
            Err("'nope' does not appear to be an IPv4 or IPv6 address".into())
        );
    }

    #[test]
    fn py_str_follows_truthiness() {
        assert_eq!(py_str(Some(&Value::Bool(false))), "");
        assert_eq!(py_str(Some(&Value::Bool(true))), "True");
        assert_eq!(py_str(Some(&serde_json::json!(0))), "");
        assert_eq!(py_str(Some(&serde_json::json!(" x "))), "x");
    }
}
