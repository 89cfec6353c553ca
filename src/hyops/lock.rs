//! The per-env, per-module-slot run lock: `<root>/state/locks/<module_id>[__<inst>].lock`,
//! an OS advisory lock (`flock`) so a dead holder's lock is released by the kernel, with a
//! JSON holder record `{run_id, pid, host, started_at}` for the error message. Knows nothing
//! about what the run does.
//!
//! The lock file is the one file written in place rather than by rename: the lock lives on
//! its inode, so it must stay the same file while held.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{HyopsError, Result};
use super::fsio::ensure_dir;
use super::paths::{slot_name, ModuleRef, RuntimeRoot, StateInstance};
use super::runid::utc_now;

/// The holder record stored in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub pid: u32,
    pub host: String,
    pub started_at: String,
}

/// A held lock; released (and the file removed) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The holder record left behind by a previous holder that died without releasing
    /// (the kernel freed its flock); the caller may log it.
    pub stale_previous: Option<LockHolder>,
}

impl RunLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove while still holding the lock; waiters detect the unlinked inode and retry.
        let _ = std::fs::remove_file(&self.path);
        // SAFETY: the fd is owned by self.file and open for the whole call.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// This machine's host name (empty when unknown).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success
    // (we also bound the scan to the buffer).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// True when a process with this pid exists (EPERM counts as alive).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How long a busy lock's empty holder record is re-read before the message says `unknown`.
const HOLDER_RECORD_SETTLE: Duration = Duration::from_secs(1);

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    serde_json::from_str(s.trim()).ok()
}

fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: the fd belongs to `file`, which outlives the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Acquire the lock of a module slot for `run_id`, waiting up to `wait`.
pub fn acquire(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
    instance: Option<&StateInstance>,
    run_id: &str,
    wait: Duration,
) -> Result<RunLock> {
    let path = root.lock_file(module_ref, instance);
    acquire_at(&path, module_ref, &slot_name(instance), run_id, wait)
}

/// [`acquire`] on an explicit lock path (`slot` only names the slot in messages).
pub fn acquire_at(
    path: &Path,
    module_ref: &ModuleRef,
    slot: &str,
    run_id: &str,
    wait: Duration,
) -> Result<RunLock> {
    acquire_subject(
        path,
        &format!("the lock for {module_ref} (slot {slot})"),
        run_id,
        wait,
    )
}

/// Acquire an exclusive lock file at `path` for `run_id`, waiting up to `wait`. `subject`
/// names what is locked in the busy message (e.g. `the simulated cluster state F`).
pub fn acquire_subject(
    path: &Path,
    subject: &str,
    run_id: &str,
    wait: Duration,
) -> Result<RunLock> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    // A wait past the end of the clock (`--lock-wait-s 18446744073709551615`) waits forever
    // instead of overflowing the deadline.
    let deadline = Instant::now().checked_add(wait);
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| HyopsError::io(path, e))?;
        if try_flock(&file).map_err(|e| HyopsError::io(path, e))? {
            if !same_inode(&file, path) {
                // The previous holder removed the file between our open and flock.
                continue;
            }
            let stale_previous = read_holder(&mut file);
            let holder = LockHolder {
                run_id: run_id.to_string(),
                pid: std::process::id(),
                host: hostname(),
                started_at: utc_now(),
            };
            let body = serde_json::to_string(&holder).map_err(|e| HyopsError::Json {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
            let write = (|| -> std::io::Result<()> {
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                file.write_all(body.as_bytes())?;
                file.write_all(b"\n")?;
                file.sync_all()
            })();
            write.map_err(|e| HyopsError::io(path, e))?;
            return Ok(RunLock {
                file,
                path: path.to_path_buf(),
                stale_previous,
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // The holder writes its record just after it takes the lock, so a record still
            // empty or half-written is read again for up to a second before it is called
            // unknown (a holder that died there released the lock with its process).
            let mut holder = read_holder(&mut file);
            let settle = Instant::now() + HOLDER_RECORD_SETTLE;
            while holder.is_none() && Instant::now() < settle {
                std::thread::sleep(Duration::from_millis(20));
                holder = read_holder(&mut file);
            }
            return Err(HyopsError::Lock(busy_message(
                path,
                subject,
                holder.as_ref(),
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn busy_message(path: &Path, subject: &str, holder: Option<&LockHolder>) -> String {
    match holder {
        Some(h) => {
            let dead = if h.host == hostname() && !pid_alive(h.pid) {
                " [holder pid is not running on this host; the lock is held by an inherited descriptor]"
            } else {
                ""
            };
            format!(
                "another hyops-pve run holds {subject}: run_id={} pid={} (started {}){dead}; wait for it or, if it is dead, remove {}",
                h.run_id,
                h.pid,
                h.started_at,
                path.display()
            )
        }
        None => format!(
            "another hyops-pve run holds {subject}: run_id=unknown pid=unknown (started unknown); wait for it or, if it is dead, remove {}",
            path.display()
        ),
    }
}

/// What [`force_unlock`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlockAction {
    /// Nobody held the lock; the holder record a dead run left behind was removed.
    RemovedStaleRecord,
    /// The lock was still held through a descriptor whose run is gone (the recorded pid is
    /// not running on this host, or the holder ran on another host); the lock file was
    /// unlinked, so the next run locks a fresh file.
    BrokeOrphanedLock,
}

/// The outcome of [`force_unlock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unlocked {
    pub action: UnlockAction,
    pub lock_file: PathBuf,
    pub holder: Option<LockHolder>,
}

/// `state unlock --lock-id ID --force`: release a stale lock of a module slot. `lock_id` must
/// be the holder's `run_id` (as the lock error names it), so a lock is never released by
/// mistake; a lock held by a live run on this host is refused (releasing it would let two
/// runs change the same VMs).
pub fn force_unlock(
    root: &RuntimeRoot,
    module_ref: &ModuleRef,
    instance: Option<&StateInstance>,
    lock_id: &str,
) -> Result<Unlocked> {
    let path = root.lock_file(module_ref, instance);
    let slot = slot_name(instance);
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HyopsError::Lock(format!(
                "no lock is held for {module_ref} (slot {slot}): {} does not exist; nothing to unlock",
                path.display()
            )))
        }
        Err(e) => return Err(HyopsError::io(&path, e)),
    };
    let holder = read_holder(&mut file);
    let mismatch = |h: Option<&LockHolder>| {
        HyopsError::Lock(format!(
            "lock id mismatch for {module_ref} (slot {slot}): the lock names run_id={}, not {lock_id}; nothing was unlocked",
            h.map_or("unknown", |h| h.run_id.as_str())
        ))
    };
    if try_flock(&file).map_err(|e| HyopsError::io(&path, e))? {
        // Nobody holds it: a record left by a run that died (the kernel freed its flock).
        if holder.as_ref().is_some_and(|h| h.run_id != lock_id) {
            return Err(mismatch(holder.as_ref()));
        }
        if same_inode(&file, &path) {
            std::fs::remove_file(&path).map_err(|e| HyopsError::io(&path, e))?;
        }
        // SAFETY: the fd belongs to `file`, which is open for the whole call.
        unsafe {
            libc::flock(file.as_raw_fd(), libc::LOCK_UN);
        }
        return Ok(Unlocked {
            action: UnlockAction::RemovedStaleRecord,
            lock_file: path,
            holder,
        });
    }
    let Some(h) = holder else {
        return Err(mismatch(None));
    };
    if h.run_id != lock_id {
        return Err(mismatch(Some(&h)));
    }
    if h.host == hostname() && pid_alive(h.pid) {
        return Err(HyopsError::Lock(format!(
            "the lock for {module_ref} (slot {slot}) is held by a live run: run_id={} pid={} (started {}); stop that run first, unlocking it would let two runs change the same VMs",
            h.run_id, h.pid, h.started_at
        )));
    }
    std::fs::remove_file(&path).map_err(|e| HyopsError::io(&path, e))?;
    Ok(Unlocked {
        action: UnlockAction::BrokeOrphanedLock,
        lock_file: path,
        holder: Some(h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_lock_names_a_holder_that_writes_its_record_just_after_taking_it() {
        // Two runs at once: the loser used to read the winner's record in the instant between
        // its flock and its write, and named the holder "run_id=unknown".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        assert!(try_flock(&file).unwrap());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let holder = LockHolder {
                run_id: "winner-run".into(),
                pid: std::process::id(),
                host: hostname(),
                started_at: utc_now(),
            };
            let mut f = &file;
            f.write_all(serde_json::to_string(&holder).unwrap().as_bytes())
                .unwrap();
            file
        });
        let err = match acquire_subject(&path, "the lock", "loser-run", Duration::ZERO) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("the lock is held"),
        };
        drop(writer.join().unwrap());
        assert!(err.contains("run_id=winner-run"), "{err}");
    }
}
