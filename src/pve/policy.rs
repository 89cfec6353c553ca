//! The one table that sorts every Proxmox answer into what the engine does next
//! ([`Disposition`]): retry with jittered backoff, re-read before resending, or fail at once
//! with the Proxmox text. Every retry in the client and the executor goes through
//! [`crate::retry::RetryPolicy`] with this classification; nothing else decides. Sources:
//! the error catalogue in `pve-api-notes.md` §6 (and §4 for locks, §5 for VMID conflicts).
//! Knows nothing about HyOps.

use super::error::{ErrorClass, PveError};
use crate::retry::{Classify, Disposition};

/// The disposition of each error class (API notes §6).
///
/// | class | disposition | why |
/// |---|---|---|
/// | generic 5xx (`Server`), `got no worker upid` | transient | the handler died before doing anything |
/// | flock `got timeout` on a VM config or a storage (`LockTimeout`, `StorageLockTimeout`) | transient | contention; it clears |
/// | `VM is locked (<holder>)` | transient | the holder (our clone, a backup) ends; bounded by the step deadline |
/// | 595/596/reset/timeout on a **read** (`Transport`) | transient | reads are idempotent |
/// | `checksum mismatch` | transient | the config step re-reads before every attempt |
/// | a task that failed for another reason (`TaskFailed`) | transient | PVE cleaned up (a failed clone removes its VM); bounded |
/// | guest agent not answering yet | transient | it boots |
/// | 595/596/reset/timeout on a **write** (`WriteOutcomeUnknown`) | outcome unknown | the write may have happened |
/// | task status unreadable until the deadline, task still running at the deadline | outcome unknown | the task may end either way |
/// | 400 with `errors` (`Param`), 401, 403, 501 | permanent | a request or credential bug |
/// | `can't clone VM to node … (VM uses local storage)` | permanent | the disk cannot be seen from the target |
/// | `protection mode enabled` | permanent | an operator protected the VM |
/// | `does not exist`, `not available on node`, `unable to find configuration file` | permanent | wrong node or gone: re-plan |
/// | TLS verification failure | permanent | the token was never sent; a retry sees the same certificate |
/// | quorum lost | permanent | needs an operator |
/// | VMID taken, shrink refused, already running, shutdown timeout | permanent | each has its own handler before the policy |
/// | oversized or undecodable body, client configuration | permanent | retrying reads the same answer |
pub fn disposition(class: &ErrorClass) -> Disposition {
    use Disposition::*;
    match class {
        ErrorClass::Server
        | ErrorClass::NoWorkerUpid
        | ErrorClass::LockTimeout { .. }
        | ErrorClass::StorageLockTimeout { .. }
        | ErrorClass::Locked { .. }
        | ErrorClass::Transport { .. }
        | ErrorClass::ChecksumMismatch
        | ErrorClass::TaskFailed
        | ErrorClass::AgentNotReady => Transient,
        ErrorClass::WriteOutcomeUnknown | ErrorClass::Timeout | ErrorClass::TaskStatusUnknown => {
            OutcomeUnknown
        }
        ErrorClass::Auth
        | ErrorClass::Permission
        | ErrorClass::Param { .. }
        | ErrorClass::NotImplemented
        | ErrorClass::LocalStorage
        | ErrorClass::Protected
        | ErrorClass::Unavailable
        | ErrorClass::NotFound
        | ErrorClass::Tls
        | ErrorClass::NoQuorum
        | ErrorClass::VmIdTaken
        | ErrorClass::ShrinkRefused
        | ErrorClass::AlreadyRunning
        | ErrorClass::ShutdownTimeout
        | ErrorClass::Client => Permanent,
    }
}

impl Classify for PveError {
    fn disposition(&self) -> Disposition {
        disposition(&self.classify())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::classify_message;
    use std::collections::BTreeMap;

    fn of(status: Option<u16>, msg: &str, write: bool) -> Disposition {
        disposition(&classify_message(status, msg, &BTreeMap::new(), write))
    }

    #[test]
    fn the_issue_7_permanent_answers_are_permanent() {
        assert_eq!(
            of(
                Some(500),
                "can't clone VM to node 'pve3' (VM uses local storage)",
                true
            ),
            Disposition::Permanent
        );
        assert_eq!(
            of(
                Some(500),
                "can't remove VM 120 - protection mode enabled",
                true
            ),
            Disposition::Permanent
        );
        assert_eq!(
            of(Some(500), "storage 'fast' does not exist", true),
            Disposition::Permanent
        );
        assert_eq!(
            of(
                Some(500),
                "storage 'nfs1' is not available on node 'pve2'",
                true
            ),
            Disposition::Permanent
        );
        assert_eq!(
            of(
                Some(500),
                "cfs-lock 'file-user_cfg' error: no quorum!",
                true
            ),
            Disposition::Permanent
        );
        assert_eq!(
            of(Some(403), "Permission check failed", false),
            Disposition::Permanent
        );
        assert_eq!(
            of(Some(501), "Method not implemented", true),
            Disposition::Permanent
        );
    }

    #[test]
    fn transient_answers_and_unknown_write_outcomes() {
        assert_eq!(
            of(Some(500), "something broke", true),
            Disposition::Transient
        );
        assert_eq!(
            of(
                None,
                "can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout",
                false
            ),
            Disposition::Transient
        );
        assert_eq!(
            of(
                None,
                "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout",
                false
            ),
            Disposition::Transient
        );
        assert_eq!(
            of(Some(500), "got no worker upid", true),
            Disposition::Transient
        );
        assert_eq!(of(Some(596), "Broken pipe", false), Disposition::Transient);
        assert_eq!(
            of(Some(595), "Connection refused", true),
            Disposition::OutcomeUnknown
        );
    }
}
