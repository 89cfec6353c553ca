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
    // Serialising a serde_json::Value to a String cannot fail (keys are strings and the
    // sorting wrapper only reorders them), so the fallback is never taken.
    let mut s = serde_json::to_string_pretty(&Sorted(value)).unwrap_or_default();
    s.push('\n');
    s
}

/// A JSON value serialised with every object's keys sorted, without copying it (what
/// `sort_keys` then serialising gives, byte for byte).
pub struct Sorted<'a>(pub &'a Value);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            Value::Object(map) => SortedMap(map).serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
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
    // a write larger than the buffer goes straight to the file (no copy)
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write a file atomically (0600) from a writer: `fill` writes into a buffered temp file,
/// which is then fsynced and renamed over `path`. Nothing is built in memory first. A failure
/// is [`HyopsError::Write`] naming `path` (not the temp file, which is removed): `path`
/// keeps its previous content.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    write_atomic_reserved(path, None, fill)
}

/// [`write_atomic_with`] into the room `reserve` set aside for `path` (see [`Reserve`]): the
/// content overwrites the reserved blocks, so it needs no new space up to the reserved size.
/// With `None`, a fresh temp file. The reserve is used up either way (removed on failure).
pub fn write_atomic_reserved(
    path: &Path,
    reserve: Option<Reserve>,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let (tmp, reserved) = match reserve.and_then(Reserve::into_parts) {
        Some((tmp, file)) => (tmp, Some(file)),
        None => (temp_name(path)?, None),
    };
    let result = (|| -> Result<()> {
        // the blocks the reserve allocated (0 without one)
        let reserved_len = match &reserved {
            Some(f) => f.metadata().map_err(|e| HyopsError::write(path, e))?.len(),
            None => 0,
        };
        let f = match reserved {
            Some(f) => f,
            None => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| HyopsError::write(path, e))?,
        };
        let mut w = std::io::BufWriter::with_capacity(256 << 10, f);
        fill(&mut w).map_err(|e| HyopsError::write(path, e))?;
        let mut f = w
            .into_inner()
            .map_err(|e| HyopsError::write(path, e.into_error()))?;
        let len = std::io::Seek::stream_position(&mut f).map_err(|e| HyopsError::write(path, e))?;
        // content that fit into reserved blocks needed no new space
        faults::check_write(path, len > reserved_len).map_err(|e| HyopsError::write(path, e))?;
        // a reserved file is longer than its new content: cut it where the content ends
        if reserved_len > len {
            f.set_len(len).map_err(|e| HyopsError::write(path, e))?;
        }
        // umask cannot widen 0600, but an inherited ACL could; pin the mode explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| HyopsError::write(path, e))?;
        f.sync_all().map_err(|e| HyopsError::write(path, e))?;
        fs::rename(&tmp, path).map_err(|e| HyopsError::write(path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Room set aside on the filesystem for a later atomic write of one file: a temp file beside
/// it, named as the writer's temp files are (so [`remove_stale_temps`] removes one a killed
/// run left), whose blocks are allocated now (`posix_fallocate(3)`). [`write_atomic_reserved`]
/// writes the content into those blocks, so that write cannot run out of space as long as it
/// fits, however full the disk has become meanwhile (on copy-on-write filesystems such as
/// btrfs or ZFS the blocks are a best effort, not a guarantee). Dropped unused, the file is
/// removed and the room given back.
#[derive(Debug)]
pub struct Reserve {
    tmp: PathBuf,
    file: Option<File>,
}

impl Reserve {
    /// Set aside `bytes` (at least one byte) for a later write of `target`. Fails, naming
    /// `target`, when the filesystem does not have them.
    pub fn new(target: &Path, bytes: u64) -> Result<Self> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        ensure_dir(dir)?;
        let tmp = temp_name(target)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| HyopsError::write(target, e))?;
        // from here on, dropping the reserve removes the temp file
        let reserve = Self {
            tmp,
            file: Some(file),
        };
        faults::check(target).map_err(|e| HyopsError::write(target, e))?;
        let len = libc::off_t::try_from(bytes.max(1)).map_err(|_| {
            HyopsError::write(
                target,
                std::io::Error::other(format!("cannot reserve {bytes} bytes")),
            )
        })?;
        if let Some(f) = &reserve.file {
            use std::os::fd::AsRawFd;
            // SAFETY: the descriptor belongs to `f`, which is open for the whole call;
            // posix_fallocate only allocates blocks of that file (it returns the errno).
            let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
            if rc != 0 {
                return Err(HyopsError::write(
                    target,
                    std::io::Error::from_raw_os_error(rc),
                ));
            }
        }
        Ok(reserve)
    }

    /// The temp file and its open handle, handed to the writer (which then owns the file).
    fn into_parts(mut self) -> Option<(PathBuf, File)> {
        let file = self.file.take()?;
        Some((std::mem::take(&mut self.tmp), file))
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Injected write failures: a seam for tests (as the simulator's fault file is for Proxmox),
/// reproducing a full disk or a failing device deterministically, file by file. A fault
/// applies only to writes under one directory (a test's own temp dir), so tests running in
/// parallel in one process never see each other's faults; without one, a write pays one
/// atomic load. Every durable write of the crate is checked: the atomic writer (after the
/// content is in its temp file, before the rename), [`Reserve::new`], the journal appends.
pub mod faults {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Writes of a file name (or of every file) under a directory fail with an OS error. A
    /// full filesystem (`ENOSPC`, `EDQUOT`) fails only writes that need new space: content
    /// written into a [`super::Reserve`] it fits is not affected, as on a real full disk.
    #[derive(Debug, Clone, Default)]
    pub struct WriteFault {
        /// Only paths under this directory are affected.
        pub under: PathBuf,
        /// The file name the fault applies to; `None`: every file under `under`.
        pub file_name: Option<String>,
        /// The fault is armed once a write of this file name under `under` was checked (the
        /// disk fills up after that file): `None`, armed from the start.
        pub armed_by: Option<String>,
        /// How many matching writes succeed before the failures start (0: the first fails).
        pub after: u32,
        /// How many matching writes fail then (`None`: every later one).
        pub failures: Option<u32>,
        /// The OS error the failing writes return (`libc::ENOSPC` for a full disk).
        pub errno: i32,
    }

    struct Active {
        id: u64,
        fault: WriteFault,
        armed: bool,
        passed: u32,
        failed: u32,
    }

    static ACTIVE: Mutex<Vec<Active>> = Mutex::new(Vec::new());
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    /// Removes its fault when dropped.
    #[must_use = "the fault is removed when the guard is dropped"]
    pub struct FaultGuard(u64);

    impl Drop for FaultGuard {
        fn drop(&mut self) {
            let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
            active.retain(|a| a.id != self.0);
            COUNT.store(active.len(), Ordering::SeqCst);
        }
    }

    /// Make matching writes fail until the guard is dropped.
    pub fn inject(fault: WriteFault) -> FaultGuard {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        active.push(Active {
            id,
            armed: fault.armed_by.is_none(),
            fault,
            passed: 0,
            failed: 0,
        });
        COUNT.store(active.len(), Ordering::SeqCst);
        FaultGuard(id)
    }

    /// The injected error for a write of `path` that needs new space, if a fault matches it.
    pub(crate) fn check(path: &Path) -> std::io::Result<()> {
        check_write(path, true)
    }

    /// The injected error for a write of `path`, if a fault matches it; `needs_space` false
    /// for content written into blocks already allocated (a full disk does not fail those).
    pub(crate) fn check_write(path: &Path, needs_space: bool) -> std::io::Result<()> {
        if COUNT.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        let name = path.file_name().and_then(|n| n.to_str());
        let full = |errno: i32| errno == libc::ENOSPC || errno == libc::EDQUOT;
        for a in active.iter_mut() {
            let f = &a.fault;
            if !path.starts_with(&f.under) {
                continue;
            }
            if !a.armed {
                a.armed = f.armed_by.as_deref().is_some_and(|n| Some(n) == name);
                continue;
            }
            let named = f.file_name.as_deref().is_none_or(|n| Some(n) == name);
            if !named || (!needs_space && full(f.errno)) {
                continue;
            }
            if a.passed < f.after {
                a.passed += 1;
                continue;
            }
            if f.failures.is_some_and(|n| a.failed >= n) {
                continue;
            }
            a.failed += 1;
            return Err(std::io::Error::from_raw_os_error(f.errno));
        }
        Ok(())
    }
}

/// Write `value` as [`render_json`] does (sorted keys, 2-space indent, final newline), with
/// `key`'s array streamed: `head` is the object without `key`, `items` yields the array's
/// elements one at a time, so only one element is ever held as a JSON value. The bytes are
/// exactly those of `render_json` on the whole object.
pub fn write_json_streamed<I>(
    w: &mut dyn Write,
    head: &Value,
    key: &str,
    items: I,
) -> std::io::Result<()>
where
    I: IntoIterator<Item = std::io::Result<Value>>,
{
    let empty = Map::new();
    let map = head.as_object().unwrap_or(&empty);
    let mut keys: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| *k != key)
        .collect();
    keys.push(key);
    keys.sort_unstable();
    // `value` pretty-printed as a member at depth 1: every line after the first indented.
    let nested = |w: &mut dyn Write, value: &Value, indent: &str| -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&Sorted(value)).map_err(std::io::Error::other)?;
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                w.write_all(b"\n")?;
                w.write_all(indent.as_bytes())?;
            }
            w.write_all(line.as_bytes())?;
        }
        Ok(())
    };
    w.write_all(b"{")?;
    for (i, k) in keys.iter().enumerate() {
        w.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        w.write_all(
            serde_json::to_string(k)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        w.write_all(b": ")?;
        if *k == key {
            let mut first = true;
            for item in items {
                let item = item?;
                w.write_all(if first { b"[\n    " } else { b",\n    " })?;
                first = false;
                nested(w, &item, "    ")?;
            }
            w.write_all(if first { b"[]" } else { b"\n  ]" })?;
            // `items` is consumed once; a second occurrence of `key` cannot happen (deduped)
            return finish(w, &keys[i + 1..], map, &nested);
        }
        nested(w, &map[*k], "  ")?;
    }
    w.write_all(if keys.is_empty() { b"}\n" } else { b"\n}\n" })
}

fn finish(
    w: &mut dyn Write,
    rest: &[&str],
    map: &Map<String, Value>,
    nested: &dyn Fn(&mut dyn Write, &Value, &str) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for k in rest {
        w.write_all(b",\n  ")?;
        w.write_all(
            serde_json::to_string(k)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        w.write_all(b": ")?;
        nested(w, &map[*k], "  ")?;
    }
    w.write_all(b"\n}\n")
}

/// Write a text file atomically (0600).
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    write_bytes_atomic(path, text.as_bytes())
}

/// Write JSON atomically (0600), sorted keys, 2-space indent. Used for every JSON file.
/// An object serialised with its keys sorted and every value [`Sorted`], without copying
/// it (what `sort_keys(&Value::Object(map.clone()))` then serialising gives).
pub struct SortedMap<'a>(pub &'a Map<String, Value>);

impl serde::Serialize for SortedMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        let mut m = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            m.serialize_entry(k, &Sorted(&self.0[k]))?;
        }
        m.end()
    }
}

/// An array serialised with every element [`Sorted`], without copying it (what
/// `sort_keys(&Value::Array(items.to_vec()))` then serialising gives).
pub struct SortedSlice<'a>(pub &'a [Value]);

impl serde::Serialize for SortedSlice<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Sorted))
    }
}

/// Check that `text` is JSON a [`Value`] can hold, without building it: the same parse as
/// `serde_json::from_str::<Value>` (strings decoded, numbers in f64 range, the nesting limit),
/// so the same error at the same place. A [`serde_json::value::RawValue`] only checks the
/// syntax (`1e400`, a 400-digit integer, a lone `\ud800` and deep nesting pass it).
pub fn check_json(text: &str) -> std::result::Result<(), serde_json::Error> {
    serde_json::from_str::<Checked>(text).map(|_| ())
}

/// A JSON value parsed as a [`Value`] would be, and dropped.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_none<E>(self) -> std::result::Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_some<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Checked, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// The members of a raw JSON object, each as its raw text (borrowed; a repeated key keeps
/// its last value, as in a [`Value`]); `None` when the text is not an object.
pub fn object_members(
    raw: &serde_json::value::RawValue,
) -> Option<std::collections::BTreeMap<String, &serde_json::value::RawValue>> {
    if !raw.get().trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// A JSON text (already parsed as valid) serialised with every object's keys sorted,
/// without building it as a [`Value`]: an object or array is split into its members'
/// texts (borrowed, not copied) and each is serialised the same way; only scalars become
/// values. Gives what parsing the text into a [`Value`] and serialising it [`Sorted`]
/// gives (a repeated key keeps its last value), for a fraction of the memory: a 10 000-VM
/// state's `outputs` is ~17 MB of text and ~80 MB as values (heaptrack).
pub struct SortedRaw<'a>(pub &'a serde_json::value::RawValue);

impl serde::Serialize for SortedRaw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        use serde_json::value::RawValue;
        let text = self.0.get();
        match text.trim_start().as_bytes().first() {
            Some(b'{') => {
                let members: std::collections::BTreeMap<String, &RawValue> =
                    serde_json::from_str(text).map_err(S::Error::custom)?;
                let mut m = s.serialize_map(Some(members.len()))?;
                for (k, v) in &members {
                    m.serialize_entry(k, &SortedRaw(v))?;
                }
                m.end()
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_str(text).map_err(S::Error::custom)?;
                s.collect_seq(items.into_iter().map(SortedRaw))
            }
            _ => serde::Serialize::serialize(
                &serde_json::from_str::<Value>(text).map_err(S::Error::custom)?,
                s,
            ),
        }
    }
}

/// The object `head` with one more member `key: value`, serialised with sorted keys and
/// nothing copied: a large member (a state's `outputs`) is written from where it lives.
/// A `key` already in `head` is replaced by `value`.
pub struct SortedWith<'a, V: serde::Serialize> {
    pub head: &'a Map<String, Value>,
    pub key: &'a str,
    pub value: V,
}

impl<V: serde::Serialize> serde::Serialize for SortedWith<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut keys: Vec<&str> = self
            .head
            .keys()
            .map(String::as_str)
            .filter(|k| *k != self.key)
            .collect();
        keys.push(self.key);
        keys.sort_unstable();
        let mut m = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            if k == self.key {
                m.serialize_entry(k, &self.value)?;
            } else {
                m.serialize_entry(k, &Sorted(&self.head[k]))?;
            }
        }
        m.end()
    }
}

/// [`write_json_atomic`] for any serialisable value whose serialisation already sorts its
/// keys ([`Sorted`], [`SortedMap`], [`SortedWith`], a struct with fields in key order):
/// streamed to the file, 2-space indent, trailing newline.
pub fn write_json_atomic_ser<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic_with(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
}

pub fn write_json_atomic(path: &Path, value: &Value) -> Result<()> {
    // streamed: the file is written as it is serialised, never held as a string
    write_json_atomic_ser(path, &Sorted(value))
}

/// Append `line` to `f` (the file at `path`, opened for appending by this one writer) whole or
/// not at all: a write that fails part-way (a disk filling up mid-line) is cut back to the
/// file's previous length, so the file never ends in half a line.
pub fn append_whole(f: &mut File, path: &Path, line: &[u8]) -> std::io::Result<()> {
    let before = f.metadata()?.len();
    let written = match faults::check(path) {
        Ok(()) => f.write_all(line),
        // an injected fault fails as a full disk does: after part of the line is written
        Err(e) => f.write_all(&line[..line.len() / 2]).and(Err(e)),
    };
    written.inspect_err(|_| {
        let _ = f.set_len(before);
    })
}

/// Append one compact JSON line (sorted keys) to a journal file (0600), fsynced.
pub fn append_jsonl(path: &Path, value: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    let mut line = serde_json::to_string(&Sorted(value)).map_err(|e| HyopsError::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| HyopsError::write(path, e))?;
    append_whole(&mut f, path, line.as_bytes()).map_err(|e| HyopsError::write(path, e))?;
    f.sync_data().map_err(|e| HyopsError::write(path, e))
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

#[cfg(test)]
mod tests {
    /// Objects whose keys are in reverse order at every level (the crate preserves insertion
    /// order, so only explicit sorting sorts them).
    fn unsorted() -> serde_json::Value {
        serde_json::json!({
            "z": {"b": [1, {"y": 2, "x": []}], "a": {}},
            "vms": {"vm-2": {"z": 1, "a": [{"k": 1, "b": 2}]}, "vm-1": {}},
            "a": "s", "m": [],
        })
    }

    fn pretty<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string_pretty(v).unwrap()
    }

    #[test]
    fn a_sorted_map_writes_what_sorting_a_copy_writes() {
        let v = unsorted();
        let m = v.as_object().unwrap();
        assert_eq!(pretty(&super::SortedMap(m)), pretty(&super::sort_keys(&v)));
    }

    #[test]
    fn a_sorted_slice_writes_what_sorting_a_copy_writes() {
        let items = vec![unsorted(), serde_json::json!(3), unsorted()];
        assert_eq!(
            pretty(&super::SortedSlice(&items)),
            pretty(&super::sort_keys(&serde_json::Value::Array(items.clone())))
        );
    }

    #[test]
    fn a_head_with_a_member_writes_what_the_whole_object_sorted_writes() {
        let whole = unsorted();
        let mut head = whole.as_object().unwrap().clone();
        let vms = head.shift_remove("vms").unwrap();
        let with = super::SortedWith {
            head: &head,
            key: "vms",
            value: super::SortedMap(vms.as_object().unwrap()),
        };
        assert_eq!(pretty(&with), pretty(&super::sort_keys(&whole)));
        // a key already in the head is replaced, not repeated
        head.insert("vms".into(), serde_json::json!("stale"));
        let with = super::SortedWith {
            head: &head,
            key: "vms",
            value: super::SortedMap(vms.as_object().unwrap()),
        };
        assert_eq!(pretty(&with), pretty(&super::sort_keys(&whole)));
    }

    #[test]
    fn a_streamed_array_writes_the_same_bytes_as_rendering_the_whole_object() {
        use serde_json::json;
        let whole = json!({
            "z": {"b": [1, {"y": 2, "x": []}], "a": {}},
            "vms": [{"k": "b", "a": [1, 2]}, {"c": {"d": "e"}}],
            "a": "s", "m": [],
        });
        let mut head = whole.clone();
        let items = head
            .as_object_mut()
            .and_then(|m| m.remove("vms"))
            .and_then(|v| v.as_array().cloned())
            .unwrap();
        let mut out = Vec::new();
        super::write_json_streamed(&mut out, &head, "vms", items.into_iter().map(Ok)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), super::render_json(&whole));
        let mut out = Vec::new();
        super::write_json_streamed(&mut out, &head, "vms", std::iter::empty()).unwrap();
        let mut empty = whole.clone();
        empty["vms"] = json!([]);
        assert_eq!(String::from_utf8(out).unwrap(), super::render_json(&empty));
    }

    fn full_disk(under: &std::path::Path, name: Option<&str>) -> super::faults::FaultGuard {
        super::faults::inject(super::faults::WriteFault {
            under: under.to_path_buf(),
            file_name: name.map(str::to_string),
            armed_by: None,
            after: 0,
            failures: None,
            errno: libc::ENOSPC,
        })
    }

    fn temps(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn a_failed_atomic_write_names_its_target_keeps_the_old_content_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("apply_report.json");
        super::write_bytes_atomic(&target, b"old").unwrap();
        let _fault = full_disk(d.path(), Some("apply_report.json"));
        let e = super::write_bytes_atomic(&target, b"new").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot write {}: No space left on device (os error 28)",
                target.display()
            )
        );
        assert!(e.storage_full());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
    }

    #[test]
    fn an_injected_fault_touches_only_its_directory_and_file_name() {
        let d = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let _fault = full_disk(d.path(), Some("plan.json"));
        super::write_bytes_atomic(&other.path().join("plan.json"), b"x").unwrap();
        super::write_bytes_atomic(&d.path().join("plan.txt"), b"x").unwrap();
        assert!(super::write_bytes_atomic(&d.path().join("plan.json"), b"x").is_err());
    }

    #[test]
    fn a_fault_after_n_writes_lets_them_through_then_fails_as_many_times_as_told() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("latest.json");
        let _fault = super::faults::inject(super::faults::WriteFault {
            under: d.path().to_path_buf(),
            file_name: Some("latest.json".into()),
            armed_by: None,
            after: 2,
            failures: Some(1),
            errno: libc::EIO,
        });
        let results: Vec<bool> = (0..4)
            .map(|_| super::write_bytes_atomic(&target, b"x").is_ok())
            .collect();
        assert_eq!(results, [true, true, false, true]);
    }

    #[test]
    fn a_reserved_write_replaces_the_target_with_exactly_its_content() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("latest.json");
        super::write_bytes_atomic(&target, b"old").unwrap();
        let reserve = super::Reserve::new(&target, 64 << 10).unwrap();
        let held = temps(d.path());
        assert_eq!(
            held.len(),
            1,
            "the reserve is a temp file beside the target"
        );
        let size = std::fs::metadata(d.path().join(&held[0])).unwrap().len();
        assert_eq!(size, 64 << 10, "its blocks are allocated");
        super::write_atomic_reserved(&target, Some(reserve), |w| w.write_all(b"{\"new\": 1}\n"))
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"new\": 1}\n");
        assert!(temps(d.path()).is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_unused_reserve_is_removed_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let reserve = super::Reserve::new(&d.path().join("latest.json"), 4096).unwrap();
        assert_eq!(temps(d.path()).len(), 1);
        drop(reserve);
        assert!(temps(d.path()).is_empty());
    }

    #[test]
    fn a_reserve_the_disk_cannot_hold_fails_naming_the_target_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("latest.json");
        let _fault = full_disk(d.path(), Some("latest.json"));
        let e = super::Reserve::new(&target, 4096).unwrap_err();
        assert!(e.to_string().contains(&target.display().to_string()), "{e}");
        assert!(e.storage_full());
        assert!(temps(d.path()).is_empty());
    }

    #[test]
    fn a_failed_append_leaves_no_half_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("j.jsonl");
        super::append_jsonl(&path, &serde_json::json!({"n": 1})).unwrap();
        {
            let _fault = full_disk(d.path(), Some("j.jsonl"));
            assert!(super::append_jsonl(&path, &serde_json::json!({"n": 2})).is_err());
        }
        super::append_jsonl(&path, &serde_json::json!({"n": 3})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":3}\n"
        );
    }

    #[test]
    fn a_full_disk_does_not_fail_content_written_into_a_reserve_it_fits() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("latest.json");
        let reserve = super::Reserve::new(&target, 4096).unwrap();
        let _full = full_disk(d.path(), None);
        assert!(super::write_bytes_atomic(&d.path().join("other.json"), b"x").is_err());
        super::write_atomic_reserved(&target, Some(reserve), |w| w.write_all(b"fits")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"fits");
        let reserve = super::Reserve::new(&d.path().join("b.json"), 1);
        assert!(reserve.is_err(), "a new reserve needs new space");
    }

    #[test]
    fn content_beyond_its_reserve_needs_new_space() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("latest.json");
        let reserve = super::Reserve::new(&target, 4).unwrap();
        let _full = full_disk(d.path(), None);
        let big =
            super::write_atomic_reserved(&target, Some(reserve), |w| w.write_all(b"too long"));
        assert!(big.unwrap_err().storage_full());
        assert!(temps(d.path()).is_empty());
    }

    #[test]
    fn a_fault_armed_by_a_file_lets_every_write_through_until_that_file_is_written() {
        let d = tempfile::tempdir().unwrap();
        let _fault = super::faults::inject(super::faults::WriteFault {
            under: d.path().to_path_buf(),
            file_name: None,
            armed_by: Some("plan.txt".into()),
            after: 0,
            failures: None,
            errno: libc::ENOSPC,
        });
        let write = |name: &str| super::write_bytes_atomic(&d.path().join(name), b"x").is_ok();
        assert!(write("meta.json"));
        assert!(write("plan.txt"));
        assert!(!write("apply_report.json"));
    }
}
