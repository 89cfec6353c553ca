//! NetBox client errors. Every error names the method and the path template of the call; a
//! write whose outcome is unknown (the request may have reached NetBox) is its own kind so
//! callers resolve it by re-reading by identity instead of sending it again. Never carries
//! the token or a request header.

use serde_json::Value;

/// One NetBox call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetboxError {
    /// Bad client configuration (URL, token shape, TLS).
    #[error("NetBox client configuration: {field}: {detail}")]
    Config { field: &'static str, detail: String },
    /// The request could not be completed on the wire. `connect` means it never reached the
    /// server (so a write certainly did not happen).
    #[error("NetBox {method} {path}: {detail}")]
    Transport {
        method: String,
        path: String,
        connect: bool,
        write: bool,
        detail: String,
    },
    /// NetBox answered with an error status.
    #[error("NetBox {method} {path} failed ({status}): {detail}")]
    Api {
        method: String,
        path: String,
        status: u16,
        /// A short text made from the JSON error body (`detail`, field errors, `__all__`).
        detail: String,
        /// The JSON error body (boxed: errors travel by value through many layers).
        body: Box<Value>,
    },
    /// The reply was not the JSON NetBox sends.
    #[error("NetBox {method} {path}: unexpected reply: {detail}")]
    Decode {
        method: String,
        path: String,
        detail: String,
    },
}

impl NetboxError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            NetboxError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// NetBox rejects bad, expired and read-only tokens with 403 (never 401), and a proxy may
    /// say 401: both mean the token was refused.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401) | Some(403))
    }

    /// A write that may have been carried out although no reply arrived: a transport failure
    /// after the request was sent, or a gateway/server error (502/503/504 from a proxy, or a
    /// 500 after the commit). Resolve by re-reading by identity; never resend blindly.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            NetboxError::Transport { write, connect, .. } => *write && !*connect,
            NetboxError::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// A 400 that says the object already exists: NetBox's uniqueness messages
    /// ("Duplicate IP address found in global table", "… with this Slug already exists.",
    /// "must be unique", "Defined addresses overlap with range").
    pub fn is_conflict(&self) -> bool {
        match self {
            NetboxError::Api {
                status: 400,
                body,
                detail,
                ..
            } => {
                let text = format!("{detail} {body}").to_ascii_lowercase();
                ["duplicate", "already exists", "unique", "overlap"]
                    .iter()
                    .any(|w| text.contains(w))
            }
            _ => false,
        }
    }

    /// 409 from an `available-*` endpoint: not enough free objects.
    pub fn is_exhausted(&self) -> bool {
        self.status() == Some(409)
    }
}

/// A short, single-line description of a NetBox error body: `detail`, then `__all__` /
/// `non_field_errors`, then `field: message` pairs; positional (4.7 list) bodies are flattened.
pub fn body_summary(body: &Value) -> String {
    fn strings(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().flat_map(strings).collect(),
            Value::Object(_) => vec![body_summary(v)],
            Value::Null => vec![],
            other => vec![other.to_string()],
        }
    }
    let out = match body {
        Value::Object(m) => {
            let mut parts = Vec::new();
            if let Some(d) = m.get("detail") {
                parts.extend(strings(d));
            }
            for key in ["__all__", "non_field_errors"] {
                if let Some(v) = m.get(key) {
                    parts.extend(strings(v));
                }
            }
            if let Some(errors) = m.get("errors") {
                parts.extend(strings(errors));
            }
            for (k, v) in m {
                if ["detail", "__all__", "non_field_errors", "errors"].contains(&k.as_str()) {
                    continue;
                }
                let s = strings(v).join("; ");
                if !s.is_empty() {
                    parts.push(format!("{k}: {s}"));
                }
            }
            parts.join("; ")
        }
        Value::Array(a) => a
            .iter()
            .map(body_summary)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let one_line: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 600 {
        let cut: String = one_line.chars().take(600).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_reads_detail_field_and_positional_errors() {
        assert_eq!(
            body_summary(
                &json!({"detail": "Insufficient resources are available to satisfy the request"})
            ),
            "Insufficient resources are available to satisfy the request"
        );
        assert_eq!(
            body_summary(
                &json!({"address": ["Duplicate IP address found in global table: 10.0.0.2/24"]})
            ),
            "address: Duplicate IP address found in global table: 10.0.0.2/24"
        );
        assert_eq!(
            body_summary(&json!([{}, {"tags": ["Related object not found"]}])),
            "tags: Related object not found"
        );
    }

    #[test]
    fn duplicate_address_is_a_conflict_and_409_is_exhaustion() {
        let dup = NetboxError::Api {
            method: "POST".into(),
            path: "/api/ipam/ip-addresses/".into(),
            status: 400,
            detail: "address: Duplicate IP address found in global table: 10.0.0.2/24".into(),
            body: Box::new(json!({})),
        };
        assert!(dup.is_conflict());
        assert!(!dup.outcome_unknown());
        let full = NetboxError::Api {
            method: "POST".into(),
            path: "/api/ipam/ip-ranges/{id}/available-ips/".into(),
            status: 409,
            detail: String::new(),
            body: Box::new(json!({})),
        };
        assert!(full.is_exhausted() && !full.is_conflict());
    }

    #[test]
    fn a_reset_after_sending_a_write_is_an_unknown_outcome_but_a_refused_connect_is_not() {
        let reset = NetboxError::Transport {
            method: "POST".into(),
            path: "/x/".into(),
            connect: false,
            write: true,
            detail: "reset".into(),
        };
        let refused = NetboxError::Transport {
            method: "POST".into(),
            path: "/x/".into(),
            connect: true,
            write: true,
            detail: "refused".into(),
        };
        assert!(reset.outcome_unknown());
        assert!(!refused.outcome_unknown());
    }
}
