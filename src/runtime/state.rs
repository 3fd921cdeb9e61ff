//! Where each worker's durable state lives (issue 12): `<state.dir>/shard-<N>.snap`, the image
//! [`Shard::export`](crate::core::shard::Shard::export) writes, replaced atomically (temporary
//! file, fsync, rename, fsync of the directory; mode 0600) at every snapshot, so a crash leaves
//! the previous snapshot or the new one, never a mix. Beside it, `dtls-<N>.sessions` holds the
//! worker's DTLS sessions (keys included), and `shard-<N>.journal` the changes since the
//! snapshot ([`JournalFile`]): started again by an atomic replace after every snapshot, then
//! appended to, each append followed by `fdatasync`. A crash in the middle of an append leaves
//! a cut last record, which the reader drops.
//!
//! A file that cannot be used (not a state file, another format version, another shard count)
//! is set aside as `shard-<N>.snap.bad-<unix seconds>` before the first snapshot replaces it: the
//! operator can look at it, and nothing is silently lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::security::credentials::write_atomic;

#[derive(Debug, Clone)]
pub(super) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Worker `worker`'s snapshot in `dir`, which is created if missing.
    pub(super) fn new(dir: &Path, worker: usize) -> io::Result<StateFile> {
        StateFile::named(dir, &format!("shard-{worker}.snap"))
    }

    /// Worker `worker`'s DTLS sessions in `dir` (key material: mode 0600 like every state file).
    pub(super) fn dtls_sessions(dir: &Path, worker: usize) -> io::Result<StateFile> {
        StateFile::named(dir, &format!("dtls-{worker}.sessions"))
    }

    fn named(dir: &Path, name: &str) -> io::Result<StateFile> {
        fs::create_dir_all(dir)?;
        Ok(StateFile {
            path: dir.join(name),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The last snapshot, `None` when there is none yet.
    pub(super) fn read(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) fn write(&self, image: &[u8]) -> io::Result<()> {
        write_atomic(&self.path, image)
    }

    /// Moves an unusable file out of the way; returns where it went.
    pub(super) fn set_aside(&self) -> io::Result<PathBuf> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".bad-{secs}"));
        let to = PathBuf::from(name);
        fs::rename(&self.path, &to)?;
        Ok(to)
    }
}

/// A worker's journal: written whole by [`JournalFile::restart`], then appended to.
pub(super) struct JournalFile {
    file: StateFile,
    /// Open for appending since the last restart (or the first append).
    open: Option<File>,
}

impl JournalFile {
    pub(super) fn new(dir: &Path, worker: usize) -> io::Result<JournalFile> {
        let file = StateFile::named(dir, &format!("shard-{worker}.journal"))?;
        Ok(JournalFile { file, open: None })
    }

    pub(super) fn file(&self) -> &StateFile {
        &self.file
    }

    /// Replaces the journal with `start` (atomically: a crash leaves the old one or this).
    pub(super) fn restart(&mut self, start: &[u8]) -> io::Result<()> {
        self.open = None;
        self.file.write(start)
    }

    /// Appends `records` and waits for them to be on disk.
    pub(super) fn append(&mut self, records: &[u8]) -> io::Result<()> {
        let f = match &mut self.open {
            Some(f) => f,
            None => self
                .open
                .insert(OpenOptions::new().append(true).open(self.file.path())?),
        };
        f.write_all(records)?;
        f.sync_data()
    }
}
