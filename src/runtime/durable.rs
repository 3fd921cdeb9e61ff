//! A worker's durable state (issue 12): its shard's snapshot and journal and its DTLS sessions,
//! in the state directory (`state.rs` names the files). Everything here runs on the worker's own
//! thread between two rounds of messages, or before the thread starts.
//!
//! - At start ([`Durable::restore`]): the snapshot, then the journal over it. When the journal
//!   held changes (the gateway did not stop gracefully) a snapshot is written at once, so that
//!   the journal starts empty; otherwise the journal starts again after the snapshot as it is.
//! - Every `journal_every` (unless zero): the registrations changed since are encoded, a chunk
//!   per round, and the batch is handed to the journal's writer thread (`journal.rs`), one write
//!   and one `fdatasync`. That is the durable point a `kill -9` or a power cut goes back to.
//! - Every `snapshot_every`, when the journal has grown [`JOURNAL_SLACK`] past the snapshot, when
//!   an append failed, and at stop: a snapshot (atomic replace), after which the journal starts
//!   again; at stop with a mark that says nothing came after it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};

use crate::core::shard::{IdentityNames, ImportReport, Output, Shard, SnapshotKind};

use super::journal::JournalWriter;
use super::secure::SecureListener;
use super::state::StateFile;

/// How far the journal may outgrow the snapshot before a snapshot compacts it: the files stay
/// within twice the state plus this.
const JOURNAL_SLACK: u64 = 16 << 20;

/// Registrations encoded for the journal between two rounds of messages (about 1.2 µs each, so
/// 0.3 ms): the changes of a storm are encoded a short pause at a time, not in one pause of
/// tens of milliseconds per interval.
const JOURNAL_CHUNK: usize = 256;

/// Where and how often a worker's shard (and its DTLS sessions) are written out.
pub(super) struct Durable {
    pub snapshot: StateFile,
    pub journal: JournalWriter,
    /// With a DTLS listener: the sessions, so devices need no handshake after a restart.
    pub sessions: Option<StateFile>,
    pub shards: u16,
    pub snapshot_every: Duration,
    pub journal_every: Duration,
    pub names: Arc<dyn IdentityNames + Send + Sync>,
    next_snapshot: Option<Instant>,
    next_journal: Option<Instant>,
    /// Size of the last snapshot written or read.
    snapshot_len: u64,
    /// Bytes handed to the journal since it started again.
    journal_len: u64,
    buf: Vec<u8>,
}

impl Durable {
    pub(super) fn new(
        snapshot: StateFile,
        journal: JournalWriter,
        sessions: Option<StateFile>,
        shards: u16,
        (snapshot_every, journal_every): (Duration, Duration),
        names: Arc<dyn IdentityNames + Send + Sync>,
    ) -> Durable {
        Durable {
            snapshot,
            journal,
            sessions,
            shards,
            snapshot_every,
            journal_every,
            names,
            next_snapshot: None,
            next_journal: None,
            snapshot_len: 0,
            journal_len: 0,
            buf: Vec::new(),
        }
    }

    /// The worker starts running: the periodic writes count from now.
    pub(super) fn start(&mut self, now: Instant) {
        self.next_snapshot = after(now, self.snapshot_every);
        self.next_journal = after(now, self.journal_every);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.next_snapshot, self.next_journal]
            .into_iter()
            .flatten()
            .min()
    }

    /// Writes what is due at `now`: the journal's new records, a snapshot.
    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        shard: &mut Shard,
        secure: Option<&SecureListener>,
    ) {
        if self.next_journal.is_some_and(|t| now >= t) {
            self.next_journal = after(now, self.journal_every);
            self.append_changes(now, shard);
        }
        if self.journal.take_failure() {
            // The batch that failed is lost to the journal: a snapshot holds it.
            self.next_snapshot = Some(now);
        }
        if self.next_snapshot.is_some_and(|t| now >= t) {
            self.snapshot(now, shard, secure, SnapshotKind::Running);
        }
    }

    /// Encodes the next chunk of changes; once none are left, hands the batch to the journal's
    /// writer (one write, one `fdatasync`, on its thread). With more left, it is due again
    /// after the next round.
    fn append_changes(&mut self, now: Instant, shard: &mut Shard) {
        let names = &*self.names;
        let (_, more) =
            shard.export_changes(now, SystemTime::now(), names, &mut self.buf, JOURNAL_CHUNK);
        if more {
            self.next_journal = Some(now);
            return;
        }
        if self.buf.is_empty() {
            return;
        }
        self.journal_len += self.buf.len() as u64;
        self.journal.append(std::mem::take(&mut self.buf));
        if self.journal_len > self.snapshot_len + JOURNAL_SLACK {
            self.next_snapshot = Some(now);
        }
    }

    /// Writes the shard's image (and the DTLS sessions), then starts the journal again.
    pub(super) fn snapshot(
        &mut self,
        now: Instant,
        shard: &mut Shard,
        secure: Option<&SecureListener>,
        kind: SnapshotKind,
    ) {
        self.next_snapshot = after(now, self.snapshot_every);
        let started = Instant::now();
        let image = shard.export(now, SystemTime::now(), &*self.names);
        if let (Some(f), Some(sec)) = (&self.sessions, secure) {
            if let Err(e) = f.write(&sec.export_sessions(self.shards)) {
                error!(
                    "cannot write the DTLS sessions file {}: {e}",
                    f.path().display()
                );
            }
        }
        if let Err(e) = self.snapshot.write(&image) {
            // The journal goes on after the previous snapshot: nothing is lost yet.
            error!(
                "cannot write the state file {}: {e}",
                self.snapshot.path().display()
            );
            return;
        }
        self.snapshot_len = image.len() as u64;
        // Changes encoded for the journal but not written yet are in the image.
        self.buf.clear();
        let start = shard.snapshot_saved(kind);
        self.journal_len = start.len() as u64;
        if let Err(e) = self.journal.restart(&start) {
            error!(
                "cannot start the journal {} again: {e}",
                self.journal.file().path().display()
            );
        }
        let took = started.elapsed();
        // The worker handles nothing meanwhile: a long pause is worth a line.
        let level = if took > Duration::from_millis(100) {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "state of worker {} written in {:.0} ms: {} registrations, {} bytes",
            shard.id(),
            took.as_secs_f64() * 1000.0,
            shard.registrations(),
            image.len()
        );
    }

    /// Restores the shard (and the DTLS sessions) before the worker runs, and leaves the files
    /// ready for it: what restoring asks for (index entries, waiting commands) is in `out`.
    pub(super) fn restore(
        &mut self,
        shard: &mut Shard,
        secure: Option<&mut SecureListener>,
        out: &mut Output,
    ) -> Option<ImportReport> {
        if let Some(sec) = secure {
            self.restore_sessions(sec);
        }
        let snapshot = read(&self.snapshot);
        let journal = read(self.journal.file());
        self.snapshot_len = snapshot.as_ref().map_or(0, |b| b.len() as u64);
        let report = match (&snapshot, &journal) {
            (None, None) => None,
            _ => self.import(shard, snapshot.as_deref(), journal.as_deref(), out),
        };
        let now = Instant::now();
        match report {
            // Changes only the journal holds, or a file set aside: a snapshot holds them now.
            Some(r) if r.journal.replayed() || r.journal.unusable.is_some() => {
                self.snapshot(now, shard, None, SnapshotKind::Running);
            }
            None if snapshot.is_some() => self.snapshot(now, shard, None, SnapshotKind::Running),
            _ => {
                let start = shard.resume_journal();
                self.journal_len = start.len() as u64;
                if let Err(e) = self.journal.restart(&start) {
                    error!(
                        "cannot start the journal {}: {e}",
                        self.journal.file().path().display()
                    );
                }
            }
        }
        if !self.journal_every.is_zero() {
            shard.track_changes();
        }
        report
    }

    fn import(
        &self,
        shard: &mut Shard,
        snapshot: Option<&[u8]>,
        journal: Option<&[u8]>,
        out: &mut Output,
    ) -> Option<ImportReport> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let path = self.snapshot.path().display();
        let r = match shard.import(snapshot, journal, now, wall, &*self.names, out) {
            Ok(r) => r,
            // A refusal is of the whole file: it is kept aside for the operator, not
            // overwritten, and the journal alone gives what it can.
            Err(e) => {
                set_aside(&self.snapshot, &e.to_string());
                shard
                    .import(None, journal, now, wall, &*self.names, out)
                    .ok()?
            }
        };
        info!(
            "state restored from {path}: {} registrations, {} observations, {} queued commands; {} expired while down",
            r.restored, r.observations, r.queued, r.expired
        );
        if r.skipped + r.skipped_observations > 0 || (snapshot.is_some() && !r.complete) {
            warn!(
                "state file {path} was not whole: {} records and {} observations could not be used, {} bytes after the last whole record{}",
                r.skipped,
                r.skipped_observations,
                r.dropped_bytes,
                if r.complete { "" } else { " (the file is cut short or damaged)" }
            );
        }
        let j = &r.journal;
        let jpath = self.journal.file().path().display();
        if let Some(e) = &j.unusable {
            set_aside(self.journal.file(), &e.to_string());
        } else if j.replayed() || j.dropped_bytes > 0 {
            warn!(
                "the gateway did not stop gracefully: {} registrations changed and {} ended after the last snapshot, from {jpath}{}",
                j.devices,
                j.removed,
                match j.dropped_bytes {
                    0 => String::new(),
                    n => format!(" ({n} bytes of an interrupted write dropped)"),
                }
            );
        } else if !j.closed {
            warn!("the gateway did not stop gracefully: state as of the last snapshot ({jpath} held nothing after it)");
        } else {
            debug!("{jpath}: the last stop was graceful");
        }
        Some(r)
    }

    /// Restores the worker's DTLS sessions, if a file of them exists; logs what happened.
    fn restore_sessions(&self, sec: &mut SecureListener) {
        let Some(f) = &self.sessions else {
            return;
        };
        let path = f.path().display();
        let Some(b) = read(f) else {
            return;
        };
        match sec.import_sessions(&b, self.shards, Instant::now()) {
            Ok((n, bad)) => {
                info!("{n} DTLS sessions restored from {path}");
                if bad > 0 {
                    warn!("{bad} DTLS sessions in {path} could not be used (those devices handshake again)");
                }
            }
            Err(e) => warn!("DTLS sessions file {path} not used: {e}; devices handshake again"),
        }
    }
}

fn after(now: Instant, every: Duration) -> Option<Instant> {
    (!every.is_zero()).then(|| now + every)
}

/// The file's bytes; `None` when it does not exist or cannot be read (logged).
fn read(f: &StateFile) -> Option<Vec<u8>> {
    f.read().unwrap_or_else(|e| {
        error!(
            "cannot read the state file {}: {e}; starting without it",
            f.path().display()
        );
        None
    })
}

fn set_aside(f: &StateFile, why: &str) {
    let path = f.path().display();
    match f.set_aside() {
        Ok(to) => error!(
            "state file {path} not used: {why}; kept as {}, starting without it",
            to.display()
        ),
        Err(io) => error!("state file {path} not used: {why} (and not set aside: {io})"),
    }
}
