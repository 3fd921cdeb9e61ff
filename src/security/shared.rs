//! [`SharedCredentials`]: one [`CredentialStore`] for every thread. Handshakes read it, a
//! reload swaps it whole, MQTT management changes one entry and saves the file back.
//!
//! Contract: readers never wait for file I/O (saving serialises the store under a read lock and
//! writes outside it); saves happen in the order their snapshots were taken, so the file never
//! goes back to an older state; errors are returned, and the caller logs them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::credentials::{write_atomic, CredentialStore, Format};

/// A handle on the shared store; clones share it.
#[derive(Clone, Default)]
pub struct SharedCredentials {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    store: RwLock<CredentialStore>,
    /// Where MQTT changes are saved; `None`: they live in memory only.
    file: Option<PathBuf>,
    /// Held from snapshot to rename, so that two saves cannot land out of order.
    saving: Mutex<()>,
}

/// What a [`SharedCredentials::replace`] changed, endpoint by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: usize,
    pub removed: usize,
    /// Same endpoint, different credential (mode, identity, key, name or public key).
    pub changed: usize,
    pub unchanged: usize,
}

impl SharedCredentials {
    /// A store kept in memory only: [`persist`](Self::persist) does nothing.
    pub fn new(store: CredentialStore) -> Self {
        Self::build(store, None)
    }

    /// A store that [`persist`](Self::persist) saves to `path` (usually the file it was loaded
    /// from; its extension picks the format).
    pub fn with_file(store: CredentialStore, path: impl Into<PathBuf>) -> Self {
        Self::build(store, Some(path.into()))
    }

    fn build(store: CredentialStore, file: Option<PathBuf>) -> Self {
        SharedCredentials {
            inner: Arc::new(Inner {
                store: RwLock::new(store),
                file,
                saving: Mutex::new(()),
            }),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// Look-ups. Hold the guard briefly: writers wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, CredentialStore> {
        self.inner.store.read()
    }

    /// One change (an insert or remove); [`persist`](Self::persist) afterwards to keep it.
    pub fn write(&self) -> RwLockWriteGuard<'_, CredentialStore> {
        self.inner.store.write()
    }

    /// Swaps in a reloaded store. The summary compares the store that was replaced with the new
    /// one as it stands right after the swap; the old one is dropped outside the lock.
    pub fn replace(&self, new: CredentialStore) -> ReloadSummary {
        let old = std::mem::replace(&mut *self.inner.store.write(), new);
        let current = self.inner.store.read();
        let mut s = ReloadSummary::default();
        for c in current.iter() {
            match old.by_endpoint(&c.endpoint) {
                None => s.added += 1,
                Some(o) if **o == **c => s.unchanged += 1,
                Some(_) => s.changed += 1,
            }
        }
        s.removed = old
            .iter()
            .filter(|o| current.by_endpoint(&o.endpoint).is_none())
            .count();
        drop(current);
        s
    }

    /// Saves the store to its file (see [`CredentialStore::save`]). `Ok(false)` when there is
    /// no file.
    pub fn persist(&self) -> io::Result<bool> {
        let Some(path) = &self.inner.file else {
            return Ok(false);
        };
        let format = Format::from_path(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "credentials file must end in .toml or .json",
            )
        })?;
        let _order = self.inner.saving.lock();
        let text = self.inner.store.read().to_text(format);
        write_atomic(path, text.as_bytes())?;
        Ok(true)
    }
}

impl std::fmt::Debug for SharedCredentials {
    // The store's own Debug would list every entry; a handle only says what it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCredentials")
            // try_read: a Debug call made while this thread holds the write guard must not
            // deadlock.
            .field("devices", &self.inner.store.try_read().map(|s| s.len()))
            .field("file", &self.inner.file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::credentials::{Credential, DeviceCredential, Secret};

    fn psk(ep: &str, id: &str, key: &[u8]) -> DeviceCredential {
        DeviceCredential {
            endpoint: ep.into(),
            credential: Credential::Psk {
                identity: id.as_bytes().into(),
                key: Secret::new(key),
            },
        }
    }

    fn store(list: Vec<DeviceCredential>) -> CredentialStore {
        let mut s = CredentialStore::new();
        for c in list {
            s.insert(c).expect("no conflict");
        }
        s
    }

    #[test]
    fn replace_counts_each_endpoint_once() {
        let shared = SharedCredentials::new(store(vec![
            psk("a", "ia", b"k1"),
            psk("b", "ib", b"k1"),
            psk("c", "ic", b"k1"),
        ]));
        let summary = shared.replace(store(vec![
            psk("a", "ia", b"k1"), // unchanged
            psk("b", "ib", b"k2"), // key changed
            psk("d", "id", b"k1"), // added; c removed
        ]));
        assert_eq!(
            summary,
            ReloadSummary {
                added: 1,
                removed: 1,
                changed: 1,
                unchanged: 1
            }
        );
        let r = shared.read();
        assert!(r.by_endpoint("c").is_none());
        assert!(r.by_psk_identity(b"id").is_some());
    }

    #[test]
    fn clones_share_one_store() {
        let a = SharedCredentials::new(CredentialStore::new());
        let b = a.clone();
        let t =
            std::thread::spawn(move || b.write().insert(psk("x", "ix", b"k")).map(|_| ()).is_ok());
        assert!(t.join().unwrap_or(false));
        assert_eq!(a.read().len(), 1);
    }

    #[test]
    fn persist_saves_to_the_file_and_without_one_does_nothing() {
        assert!(!SharedCredentials::new(CredentialStore::new())
            .persist()
            .expect("no file, no error"));

        let dir = std::env::temp_dir().join(format!("cred-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("devices.json");
        let shared = SharedCredentials::with_file(CredentialStore::new(), &path);
        shared
            .write()
            .insert(psk("ep", "id", b"\x01\x02"))
            .expect("insert");
        assert!(shared.persist().expect("saved"));
        let (back, errors) = CredentialStore::load(&path).expect("load");
        assert!(errors.is_empty());
        assert_eq!(back, *shared.read());
        assert!(!format!("{shared:?}").contains("0102"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn persist_to_an_unknown_extension_is_an_error() {
        let shared = SharedCredentials::with_file(CredentialStore::new(), "/tmp/creds.txt");
        assert_eq!(
            shared.persist().map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::InvalidInput)
        );
    }
}
