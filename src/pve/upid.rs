//! Proxmox task ids (UPIDs): parse per pve-common `UPID.pm`, print back byte for byte, and
//! expose the node a task must be polled on. Knows nothing about HyOps.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;

/// A UPID that does not match Proxmox's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid UPID {input:?}: expected UPID:node:pid:pstart:starttime:type:id:user:")]
pub struct UpidError {
    /// The rejected text.
    pub input: String,
}

/// A parsed task id, e.g. `UPID:pve1:000003E8:00001B58:6B06C6E0:qmclone:9000:root@pam:`.
///
/// Display prints the exact text that was parsed (so the id used in URLs is the server's);
/// [`Upid::new`] builds the canonical upper-case form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    /// The node that runs the task; poll this node.
    pub node: String,
    /// Worker process id.
    pub pid: u32,
    /// Process start time in clock ticks (8 or 9 hex digits).
    pub pstart: u64,
    /// Unix start time.
    pub starttime: u32,
    /// Task type (`qmclone`, `qmstart`, `qmconfig`, …).
    pub task_type: String,
    /// Task id (for `qmclone` the source vmid).
    pub id: String,
    /// `user@realm` or `user@realm!tokenid`.
    pub user: String,
    raw: String,
}

fn upid_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // The pattern is a literal; a failure here is a programming error caught by every test.
        #[allow(clippy::expect_used)]
        Regex::new(r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$")
            .expect("UPID regex literal is valid")
    })
}

impl Upid {
    /// Build a canonical UPID from its parts.
    pub fn new(
        node: impl Into<String>,
        pid: u32,
        pstart: u64,
        starttime: u32,
        task_type: impl Into<String>,
        id: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        let (node, task_type, id, user) = (node.into(), task_type.into(), id.into(), user.into());
        let raw =
            format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{id}:{user}:");
        Upid {
            node,
            pid,
            pstart,
            starttime,
            task_type,
            id,
            user,
            raw,
        }
    }

    /// The UPID text as the server sent it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The node in the UPID.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl FromStr for Upid {
    type Err = UpidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UpidError {
            input: s.to_string(),
        };
        let c = upid_regex().captures(s).ok_or_else(err)?;
        let hex32 = |i: usize| u32::from_str_radix(&c[i], 16).map_err(|_| err());
        Ok(Upid {
            node: c[1].to_string(),
            pid: hex32(3)?,
            pstart: u64::from_str_radix(&c[4], 16).map_err(|_| err())?,
            starttime: hex32(5)?,
            task_type: c[6].to_string(),
            id: c[7].to_string(),
            user: c[8].to_string(),
            raw: s.to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for Upid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Upid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
