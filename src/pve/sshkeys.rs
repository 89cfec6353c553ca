//! The `sshkeys` quirk: Proxmox wants the key text RFC 3986 percent-encoded (format
//! `urlencoded`), and returns it still encoded from `GET …/config`. The form body then encodes
//! the encoded value a second time. Knows nothing about HyOps.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything except the RFC 3986 unreserved characters `A-Za-z0-9-_.~`.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Encode public keys for the `sshkeys` parameter: keys joined with `\n`, then RFC 3986
/// percent-encoded with upper-case hex (`%20` for space, `%0A` between keys, `%2B`, `%2F`, …).
/// The result matches `^[-%a-zA-Z0-9_.!~*'()]*$`.
pub fn encode_sshkeys(keys: &[String]) -> String {
    let joined = keys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    utf8_percent_encode(&joined, RFC3986).to_string()
}

/// Decode an `sshkeys` value as returned by `GET …/config` (still percent-encoded) into one
/// key per line, trimming whitespace and dropping empty lines. Invalid UTF-8 is replaced.
pub fn decode_sshkeys(value: &str) -> Vec<String> {
    percent_decode_str(value)
        .decode_utf8_lossy()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
