//! Run ids: `<prefix>-<UTC %Y%m%dT%H%M%SZ>-<8 hex>` (§3.1) and the UTC timestamp formats
//! used in state files. Knows nothing about where run ids are stored.

use chrono::{DateTime, Utc};

use super::error::{HyopsError, Result};

/// The command that names a run. `Deploy` shares the `apply` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPrefix {
    Apply,
    Plan,
    Validate,
    Destroy,
    Import,
    Preflight,
    Rebuild,
}

impl RunPrefix {
    /// Map a command name to its prefix (`deploy` → `apply`).
    pub fn for_command(command: &str) -> Result<Self> {
        Ok(match command.trim().to_ascii_lowercase().as_str() {
            "apply" | "deploy" => Self::Apply,
            "plan" => Self::Plan,
            "validate" => Self::Validate,
            "destroy" => Self::Destroy,
            "import" => Self::Import,
            "preflight" => Self::Preflight,
            "rebuild" => Self::Rebuild,
            _ => return Err(HyopsError::BadRunPrefix(command.to_string())),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Plan => "plan",
            Self::Validate => "validate",
            Self::Destroy => "destroy",
            Self::Import => "import",
            Self::Preflight => "preflight",
            Self::Rebuild => "rebuild",
        }
    }
}

/// A new run id for `prefix` at the current time.
pub fn new_run_id(prefix: RunPrefix) -> String {
    run_id_at(prefix, Utc::now(), rand::random::<u32>())
}

/// A run id for a given time and random suffix (deterministic; for tests and replays).
pub fn run_id_at(prefix: RunPrefix, at: DateTime<Utc>, suffix: u32) -> String {
    format!(
        "{}-{}-{suffix:08x}",
        prefix.as_str(),
        at.format("%Y%m%dT%H%M%SZ")
    )
}

/// True when `s` has the run id shape `<prefix>-<YYYYmmddTHHMMSSZ>-<8 lowercase hex>`.
pub fn is_run_id(s: &str) -> bool {
    let mut parts = s.rsplitn(3, '-');
    let (Some(hex8), Some(ts), Some(prefix)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    RunPrefix::for_command(prefix).is_ok_and(|p| p.as_str() == prefix)
        && hex8.len() == 8
        && hex8
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%SZ").is_ok()
}

/// `updated_at` format of state files: UTC `%Y-%m-%dT%H:%M:%SZ`.
pub fn utc_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The current time as [`utc_timestamp`].
pub fn utc_now() -> String {
    utc_timestamp(Utc::now())
}
