//! Reading files an operator names (`--inputs`, `--plan`, `--sim-cluster`, `--sim-faults`, the
//! driver request, an SSH key file) with a size bound that holds for every kind of path. A
//! size check on the metadata is not enough: a device, a FIFO or a `/proc` file reports 0
//! bytes, so `--inputs /dev/urandom` read gigabytes before any bound was checked. Knows
//! nothing about what the files hold.

use std::io::Read;
use std::path::Path;

/// The largest file [`read_at_most`] callers accept unless they say otherwise (plans, cluster
/// and fault files, driver requests: a 1 000-VM plan is a few MB).
pub const DEFAULT_LIMIT: usize = 64 << 20;

/// Read `path` whole when it holds at most `limit` bytes; `Ok(None)` when it holds more
/// (nothing past `limit + 1` bytes is read).
pub fn read_at_most(path: &Path, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut buf)?;
    Ok((buf.len() <= limit).then_some(buf))
}

/// [`read_at_most`] as UTF-8 text, with one message for every failure: the I/O error, the
/// bound (naming `limit`), or the encoding.
pub fn read_text_at_most(path: &Path, limit: usize) -> Result<String, String> {
    match read_at_most(path, limit) {
        Err(e) => Err(e.to_string()),
        Ok(None) => Err(format!(
            "the file holds more than {limit} bytes; hyops-pve reads at most {limit} bytes from it"
        )),
        Ok(Some(bytes)) => {
            String::from_utf8(bytes).map_err(|e| format!("the file is not UTF-8 text: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_device_is_cut_at_the_bound() {
        // /dev/zero reports 0 bytes in its metadata and never ends.
        assert_eq!(read_at_most(Path::new("/dev/zero"), 1024).unwrap(), None);
        let e = read_text_at_most(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.contains("more than 1024 bytes"), "{e}");
    }

    #[test]
    fn a_file_within_the_bound_is_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(read_at_most(&p, 3).unwrap().unwrap(), b"abc");
        assert_eq!(read_at_most(&p, 2).unwrap(), None);
    }
}
