//! Secret values (API tokens, vault passwords). Their `Debug` and `Display` never show the
//! value, so a secret cannot leak through logs, error text or evidence by accident. Knows
//! nothing about where a secret comes from.

use std::fmt;

/// A secret string. Read it with [`Secret::expose`] only at the point of use (an HTTP header).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value. Call only where the secret must go on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.to_string())
    }
}
impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("tok-1234-secret");
        assert!(!format!("{s:?}").contains("tok-1234"));
        assert!(!format!("{s}").contains("tok-1234"));
        assert_eq!(s.expose(), "tok-1234-secret");
    }
}
