//! The SFTP subsystem of a simulated node: the snippet directories of the storages that hold
//! `snippets` on that node (`<root>/snippets/`, see [`crate::sim::snippets`]), backed by the
//! simulator state. Supports what an uploader needs: stat, list, open/write/read/close,
//! rename (no overwrite, as SFTPv3 / OpenSSH's `rename`), remove, realpath. Other paths answer
//! "No such file"; writes elsewhere answer "Permission denied".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};

use super::SimSsh;
use crate::sim::core::guard;
use crate::sim::snippets;

/// One open handle.
enum Open {
    File {
        bucket: String,
        name: String,
        buf: Vec<u8>,
        write: bool,
    },
    Dir {
        entries: Vec<String>,
        done: bool,
    },
}

pub struct SnippetSftp {
    net: Arc<SimSsh>,
    node: String,
    handles: HashMap<String, Open>,
    next: u64,
}

impl SnippetSftp {
    pub fn new(net: Arc<SimSsh>, node: String) -> Self {
        Self {
            net,
            node,
            handles: HashMap::new(),
            next: 0,
        }
    }

    fn ok(id: u32) -> Status {
        Status {
            id,
            status_code: StatusCode::Ok,
            error_message: "Ok".into(),
            language_tag: "en-US".into(),
        }
    }

    fn handle(&mut self, open: Open) -> String {
        self.next += 1;
        let h = format!("h{}", self.next);
        self.handles.insert(h.clone(), open);
        h
    }

    fn file_attrs(size: u64) -> FileAttributes {
        FileAttributes {
            size: Some(size),
            permissions: Some(0o100644),
            ..Default::default()
        }
    }

    fn dir_attrs() -> FileAttributes {
        FileAttributes {
            permissions: Some(0o040755),
            ..Default::default()
        }
    }

    fn files(&self, bucket: &str) -> BTreeMap<String, String> {
        self.net
            .sim
            .state()
            .snippets
            .get(bucket)
            .cloned()
            .unwrap_or_default()
    }
}

impl russh_sftp::server::Handler for SnippetSftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = if path == "." || path.is_empty() {
            "/root".to_string()
        } else {
            path
        };
        Ok(Name {
            id,
            files: vec![File::dummy(p)],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let state = self.net.sim.state();
        if snippets::dir_to_bucket(&state, &self.node, &path).is_some() {
            return Ok(Attrs {
                id,
                attrs: Self::dir_attrs(),
            });
        }
        let (bucket, name) =
            snippets::path_to_bucket(&state, &self.node, &path).ok_or(StatusCode::NoSuchFile)?;
        let size = state
            .snippets
            .get(&bucket)
            .and_then(|f| f.get(&name))
            .map(|c| c.len() as u64)
            .ok_or(StatusCode::NoSuchFile)?;
        Ok(Attrs {
            id,
            attrs: Self::file_attrs(size),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let bucket = {
            let state = self.net.sim.state();
            snippets::dir_to_bucket(&state, &self.node, &path).ok_or(StatusCode::NoSuchFile)?
        };
        let entries = self.files(&bucket).into_keys().collect();
        let handle = self.handle(Open::Dir {
            entries,
            done: false,
        });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir { entries, done }) if !*done => {
                *done = true;
                let files = entries
                    .iter()
                    .map(|n| File::new(n.clone(), Self::file_attrs(0)))
                    .collect();
                Ok(Name { id, files })
            }
            Some(Open::Dir { .. }) => Err(StatusCode::Eof),
            _ => Err(StatusCode::Failure),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let (bucket, name) = {
            let state = self.net.sim.state();
            snippets::path_to_bucket(&state, &self.node, &filename).ok_or(
                if pflags.contains(OpenFlags::WRITE) {
                    StatusCode::PermissionDenied
                } else {
                    StatusCode::NoSuchFile
                },
            )?
        };
        let existing = self.files(&bucket).get(&name).cloned();
        let write = pflags.contains(OpenFlags::WRITE);
        let buf = match (existing, write) {
            (None, false) => return Err(StatusCode::NoSuchFile),
            (None, true) if !pflags.contains(OpenFlags::CREATE) => {
                return Err(StatusCode::NoSuchFile)
            }
            (Some(_), true) if pflags.contains(OpenFlags::EXCLUDE) => {
                return Err(StatusCode::Failure)
            }
            (Some(_), true) if pflags.contains(OpenFlags::TRUNCATE) => Vec::new(),
            (Some(c), _) => c.into_bytes(),
            (None, true) => Vec::new(),
        };
        let handle = self.handle(Open::File {
            bucket,
            name,
            buf,
            write,
        });
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::File {
                buf, write: true, ..
            }) => {
                let off = usize::try_from(offset).map_err(|_| StatusCode::Failure)?;
                if buf.len() < off + data.len() {
                    buf.resize(off + data.len(), 0);
                }
                buf[off..off + data.len()].copy_from_slice(&data);
                Ok(Self::ok(id))
            }
            _ => Err(StatusCode::PermissionDenied),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        match self.handles.get(&handle) {
            Some(Open::File { buf, .. }) => {
                let off = usize::try_from(offset).map_err(|_| StatusCode::Failure)?;
                if off >= buf.len() {
                    return Err(StatusCode::Eof);
                }
                let end = (off + len as usize).min(buf.len());
                Ok(Data {
                    id,
                    data: buf[off..end].to_vec(),
                })
            }
            _ => Err(StatusCode::Failure),
        }
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match self.handles.get(&handle) {
            Some(Open::File { buf, .. }) => Ok(Attrs {
                id,
                attrs: Self::file_attrs(buf.len() as u64),
            }),
            Some(Open::Dir { .. }) => Ok(Attrs {
                id,
                attrs: Self::dir_attrs(),
            }),
            None => Err(StatusCode::Failure),
        }
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File {
                bucket,
                name,
                buf,
                write: true,
            }) => {
                let content = String::from_utf8(buf).map_err(|_| StatusCode::Failure)?;
                self.net
                    .sim
                    .state()
                    .snippets
                    .entry(bucket)
                    .or_default()
                    .insert(name, content);
                guard(&self.net.counters).sftp_writes += 1;
                Ok(Self::ok(id))
            }
            Some(_) => Ok(Self::ok(id)),
            None => Err(StatusCode::Failure),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let mut state = self.net.sim.state();
        let (bucket, name) = snippets::path_to_bucket(&state, &self.node, &filename)
            .ok_or(StatusCode::NoSuchFile)?;
        state
            .snippets
            .get_mut(&bucket)
            .and_then(|f| f.remove(&name))
            .ok_or(StatusCode::NoSuchFile)?;
        guard(&self.net.counters).sftp_removes += 1;
        Ok(Self::ok(id))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let mut state = self.net.sim.state();
        let (ob, on) =
            snippets::path_to_bucket(&state, &self.node, &oldpath).ok_or(StatusCode::NoSuchFile)?;
        let (nb, nn) = snippets::path_to_bucket(&state, &self.node, &newpath)
            .ok_or(StatusCode::PermissionDenied)?;
        if state.snippets.get(&nb).is_some_and(|f| f.contains_key(&nn)) {
            // SFTPv3 rename never overwrites (OpenSSH answers "Failure").
            return Err(StatusCode::Failure);
        }
        let content = state
            .snippets
            .get_mut(&ob)
            .and_then(|f| f.remove(&on))
            .ok_or(StatusCode::NoSuchFile)?;
        state.snippets.entry(nb).or_default().insert(nn, content);
        Ok(Self::ok(id))
    }
}
