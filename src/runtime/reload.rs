//! Reloading the device credentials file without a restart: the `credentials` thread reads it
//! again on SIGHUP and, every `security.reload_interval`, when its modification time or size
//! changed. A file that no longer parses keeps the store as it was (logged as an error); bad
//! entries are skipped with a warning each, as at start. After a reload every worker is told,
//! so that sessions of removed credentials end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};

use crate::security::{CredentialStore, EntryError, SharedCredentials};

use super::channel::{WorkerMsg, WorkerTx};

/// Set by the SIGHUP handler, taken by the `credentials` thread.
static SIGHUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    SIGHUP.store(true, Ordering::Relaxed);
}

/// Routes SIGHUP to [`watch`] (instead of ending the process).
pub(super) fn install_sighup() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sighup as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut()) != 0 {
            warn!("cannot install the SIGHUP handler; the credentials file reloads on change only");
        }
    }
}

pub(super) fn log_entry_errors(path: &Path, errors: &[EntryError]) {
    for e in errors {
        warn!(
            "credentials file {}: entry {} ({}) skipped: {}",
            path.display(),
            e.index,
            e.endpoint.as_deref().unwrap_or("?"),
            e.reason
        );
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads `path` into `store`; true if it was read (even with skipped entries) and removed or
/// changed a credential (which may end sessions).
pub fn reload(path: &Path, store: &SharedCredentials) -> bool {
    match CredentialStore::load(path) {
        Ok((new, errors)) => {
            log_entry_errors(path, &errors);
            let s = store.replace(new);
            info!(
                "credentials reloaded from {}: {} added, {} removed, {} changed, {} unchanged",
                path.display(),
                s.added,
                s.removed,
                s.changed,
                s.unchanged
            );
            s.removed + s.changed > 0
        }
        Err(e) => {
            error!("credentials file not reloaded, keeping the previous credentials: {e}");
            false
        }
    }
}

/// The body of the `credentials` thread.
pub(super) fn watch(
    path: PathBuf,
    store: SharedCredentials,
    workers: Vec<WorkerTx>,
    every: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut last = stamp(&path);
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let hup = SIGHUP.swap(false, Ordering::Relaxed);
        let due = !every.is_zero() && Instant::now() >= next;
        if !hup && !due {
            continue;
        }
        next = Instant::now() + every;
        let now = stamp(&path);
        if !hup && now == last {
            continue;
        }
        last = now;
        if reload(&path, &store) {
            for w in &workers {
                let _ = w.try_send(WorkerMsg::CredentialsChanged);
            }
        }
    }
}
