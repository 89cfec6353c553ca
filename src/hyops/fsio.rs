//! Durable file writers for the runtime root: every file is written 0600 and atomically
//! (temp file in the same dir, fsync, rename, fsync dir), JSON with recursively sorted keys
//! and 2-space indent, JSONL appends for journals. Knows nothing about what the files mean.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::{HyopsError, Result};

/// Return a copy of `value` with every object's keys sorted, recursively. The crate enables
/// serde_json's `preserve_order`, so sorting must be explicit.
pub fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::with_capacity(map.len());
            for k in keys {
                if let Some(v) = map.get(k) {
                    out.insert(k.clone(), sort_keys(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Render JSON the way HyOps does: sorted keys, 2-space indent, trailing newline.
pub fn render_json(value: &Value) -> String {
    // Serialising a serde_json::Value to a String cannot fail (keys are strings and no
    // custom Serialize impl is involved), so the fallback is never taken.
    let mut s = serde_json::to_string_pretty(&sort_keys(value)).unwrap_or_default();
    s.push('\n');
    s
}

/// Create `dir` (and parents) with mode 0700 for newly created levels.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HyopsError::io(dir, e))
}

fn temp_name(path: &Path) -> Result<PathBuf> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| HyopsError::io(path, std::io::Error::other("path has no file name")))?;
    let suffix: u64 = rand::random();
    Ok(path.with_file_name(format!(
        ".{file_name}.tmp-{}-{suffix:016x}",
        std::process::id()
    )))
}

/// True when a process with this pid exists (it may belong to another user).
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Remove the temp files [`write_bytes_atomic`] left beside `path` when its writer was killed
/// (`.<name>.tmp-<pid>-<hex>` whose pid no longer exists). Call it where no other writer of
/// `path` can be running (under the slot lock). Returns the files removed; a file that cannot
/// be removed is left (the next run tries again).
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(std::result::Result::ok) {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 || pid_alive(pid) {
            continue;
        }
        let p = entry.path();
        if fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| HyopsError::io(dir, e))?;
    d.sync_all().map_err(|e| HyopsError::io(dir, e))
}

/// Write `bytes` to `path` atomically with mode 0600: a temp file in the same dir is written
/// and fsynced, renamed over the target, then the dir is fsynced. Readers see the old or the
/// new complete content, never a partial file.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = temp_name(path)?;
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| HyopsError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| HyopsError::io(&tmp, e))?;
        // umask cannot widen 0600, but an inherited ACL could; pin the mode explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| HyopsError::io(&tmp, e))?;
        f.sync_all().map_err(|e| HyopsError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| HyopsError::io(path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write a text file atomically (0600).
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    write_bytes_atomic(path, text.as_bytes())
}

/// Write JSON atomically (0600), sorted keys, 2-space indent. Used for every JSON file.
pub fn write_json_atomic(path: &Path, value: &Value) -> Result<()> {
    write_bytes_atomic(path, render_json(value).as_bytes())
}

/// Append one compact JSON line (sorted keys) to a journal file (0600), fsynced.
pub fn append_jsonl(path: &Path, value: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    let mut line = serde_json::to_string(&sort_keys(value)).map_err(|e| HyopsError::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| HyopsError::io(path, e))?;
    f.write_all(line.as_bytes())
        .map_err(|e| HyopsError::io(path, e))?;
    f.sync_data().map_err(|e| HyopsError::io(path, e))
}

/// Read a JSON file. `Ok(None)` when it does not exist.
pub fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HyopsError::Json {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HyopsError::io(path, e)),
    }
}
