//! Python-semantics helpers over `serde_json::Value`, so the validator reproduces upstream's
//! `isinstance`, truthiness, `str(x or "")` and `ipaddress` behaviour (including its error
//! texts). Knows nothing about any particular input field.

use std::net::Ipv4Addr;

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
        Some(Value::String(s)) if !crate::yaml::py_strip(s).is_empty() => {
            Some(crate::yaml::py_strip(s).to_string())
        }
        _ => None,
    }
}

/// `as_bool(value, default=False)` of `hyops.runtime.coerce`: a bool; a number other than 0;
/// one of `1 true yes on` (any case, stripped); anything else is false.
pub(crate) fn as_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => matches!(
            crate::yaml::py_strip(s).to_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
        _ => false,
    }
}

/// Python `repr()` of a string.
pub(crate) fn py_repr(s: &str) -> String {
    crate::yaml::py_repr_str(s)
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

/// `ipaddress.IPv6Address(s)` accepts it: an optional non-empty `%scope` (without another
/// `%`), then Python's hextet rules (`_ip_int_from_string`): 3 to 9 `:`-separated parts, at
/// most one `::` standing for at least one hextet, a trailing dotted quad, 1–4 hex digits.
fn parse_ipv6(s: &str) -> bool {
    let addr = match s.split_once('%') {
        None => s,
        Some((a, scope)) => {
            if scope.is_empty() || scope.contains('%') {
                return false;
            }
            a
        }
    };
    if addr.is_empty() {
        return false;
    }
    let mut parts: Vec<String> = addr.split(':').map(str::to_string).collect();
    if parts.len() < 3 {
        return false;
    }
    if parts.last().is_some_and(|p| p.contains('.')) {
        let Some(v4) = parts.pop().as_deref().and_then(parse_ipv4) else {
            return false;
        };
        let n = u32::from(v4);
        parts.push(format!("{:x}", n >> 16));
        parts.push(format!("{:x}", n & 0xffff));
    }
    if parts.len() > 9 {
        return false;
    }
    let mut skip = None;
    for (i, p) in parts.iter().enumerate().take(parts.len() - 1).skip(1) {
        if p.is_empty() {
            if skip.is_some() {
                return false;
            }
            skip = Some(i);
        }
    }
    let n = parts.len();
    match skip {
        Some(i) => {
            let mut hi = i;
            let mut lo = n - i - 1;
            if parts[0].is_empty() {
                hi -= 1;
                if hi != 0 {
                    return false;
                }
            }
            if parts[n - 1].is_empty() {
                lo -= 1;
                if lo != 0 {
                    return false;
                }
            }
            if 8 < hi + lo + 1 {
                return false;
            }
        }
        None => {
            if n != 8 || parts[0].is_empty() || parts[n - 1].is_empty() {
                return false;
            }
        }
    }
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .all(|p| p.len() <= 4 && p.bytes().all(|b| b.is_ascii_hexdigit()))
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
}
