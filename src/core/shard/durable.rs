//! The shard's durable image (issue 12): what a restart must keep, written out and read back
//! from one place, sans-IO. [`Shard::export`] turns the shard into a snapshot,
//! [`Shard::export_changes`] into journal records of what changed since, [`Shard::import`]
//! rebuilds a fresh shard from a snapshot and its journal; the runtime decides where the bytes
//! live and when they are written.
//!
//! Snapshot and journal: every snapshot has a generation (one more than the last saved); the
//! journal starts with the generation it follows ([`Shard::snapshot_saved`] gives its first
//! bytes), then batches of whole device records (a registration's state after its change) and
//! `gone` records, each batch led by the id generators' positions. Replay applies them in order,
//! a device record replacing the registration with its id or endpoint. A journal of an older
//! generation is stale (the snapshot holds it) and skipped. A graceful stop ends the journal with
//! a `closed` record; without it the id counters skip ahead (`REG_SEQ_SKIP`), so that ids given
//! out after the last durable point are never given out twice. The journal logs registrations,
//! Updates, deregistrations, observations started and ended, commands queued and done; not the
//! observations' sequence numbers or the last uplink (a restored observation accepts any newer
//! notification; the queue-mode window restarts closed either way).
//!
//! Kept per registration: its id (the location devices Update), the registration, the peer
//! (listener, address, and the DTLS identity by name: interned ids mean nothing to the next
//! process), expiry and last uplink as wall-clock times, the observations (token, command head
//! for the echo, request, last sequence number) and the queued commands. A command in flight
//! is kept as the first queued one (sent again after the restart: at least once). Not kept:
//! block-wise transfers, the rest of a Block2 notification being fetched, the dedup cache.
//! Kept per shard: the registration counter and the message-id position, so that ids are not
//! reused.
//!
//! Import never panics and never trusts the bytes: a record that does not decode is counted and
//! skipped, one whose registration expired while the gateway was down is dropped (counted), an
//! endpoint, id or token already taken is skipped. No `register` event is published for a
//! restored device (applications learn of the restart from the runtime's own event).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::command::{CommandHead, Op};
use crate::core::ids::{RegId, Token};
use crate::core::peer::{IdentityId, Peer, SecurityMode};
use crate::core::registration::Registration;
use crate::core::request::Request;
use crate::persist::wire::{self, FileKind, Header, HeaderError, Reader, Tail, Writer};

use super::session::{Observation, Outcome, Purpose, Queued, Session, Work};
use super::{Output, Shard};

/// How the shard's interned DTLS identities are named on disk and found again.
pub trait IdentityNames {
    fn name(&self, id: IdentityId) -> Option<(SecurityMode, Arc<[u8]>)>;
    fn intern(&self, mode: SecurityMode, identity: &[u8]) -> Option<IdentityId>;
}

/// No DTLS: every peer is plain.
pub struct NoIdentities;

impl IdentityNames for NoIdentities {
    fn name(&self, _: IdentityId) -> Option<(SecurityMode, Arc<[u8]>)> {
        None
    }
    fn intern(&self, _: SecurityMode, _: &[u8]) -> Option<IdentityId> {
        None
    }
}

/// What an import restored and what it could not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    pub restored: usize,
    pub observations: usize,
    pub queued: usize,
    /// Registrations whose lifetime ended while the gateway was down.
    pub expired: usize,
    /// Records that did not decode, or named an endpoint, id or identity that could not be used.
    pub skipped: usize,
    /// Observations dropped because their token was taken.
    pub skipped_observations: usize,
    /// Bytes after the last whole record (a cut or corrupt tail); 0 for a clean image.
    pub dropped_bytes: usize,
    /// The image ended with its end record, after as many device records as it announced.
    pub complete: bool,
    /// The journal replayed after the snapshot.
    pub journal: JournalReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportError {
    Header(HeaderError),
    /// Written by another shard, or with another number of shards (ids carry the shard number).
    Foreign {
        shard: u8,
        shards: u16,
    },
    /// Not the kind of file expected (a journal for a snapshot, or the other way round).
    WrongKind,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Header(h) => h.fmt(f),
            ImportError::Foreign { shard, shards } => write!(
                f,
                "written by shard {shard} of {shards} (the number of workers changed?)"
            ),
            ImportError::WrongKind => f.write_str("not the kind of state file expected here"),
        }
    }
}

const TAG_SHARD: u8 = 1;
const TAG_DEVICE: u8 = 2;
/// The last record of a whole image, with the number of device records before it: a file cut
/// at a record boundary is told from a whole one.
const TAG_END: u8 = 3;
/// Journal: a registration that no longer exists.
const TAG_GONE: u8 = 4;
/// Journal: its first record, with the generation of the snapshot it follows.
const TAG_FOLLOWS: u8 = 5;
/// Journal: the gateway stopped gracefully right after the snapshot; nothing came after it.
const TAG_CLOSED: u8 = 6;

/// After a stop that was not graceful, registrations made after the last durable point are
/// lost, and their ids with them: if those ids were given out again, a lost device's Update
/// would land on another device's registration. The counter skips this far ahead instead (at
/// 2^56 ids, 2^36 crashes).
const REG_SEQ_SKIP: u64 = 1 << 20;

/// When a snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// While running: changes after it go to the journal.
    Running,
    /// At a graceful stop: the journal says so, and the next start knows nothing was lost.
    Final,
}

/// What replaying a journal over the snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalReport {
    /// Registrations written (new or changed) after the snapshot.
    pub devices: usize,
    /// Registrations ended after the snapshot.
    pub removed: usize,
    /// Bytes after the last whole record (the append a crash interrupted).
    pub dropped_bytes: usize,
    /// The journal follows an older snapshot (whose changes the newer one holds): not replayed.
    pub stale: bool,
    /// Not a journal of this shard: not replayed.
    pub unusable: Option<ImportError>,
    /// The gateway stopped gracefully after the snapshot.
    pub closed: bool,
}

impl JournalReport {
    /// The journal held changes the snapshot does not.
    pub fn replayed(&self) -> bool {
        self.devices + self.removed > 0
    }
}

/// What a restore is building up.
#[derive(Default)]
struct Restoring {
    report: ImportReport,
    /// Registrations with commands waiting: started once everything is restored.
    pending: Vec<RegId>,
}

fn dropped(tail: Tail) -> usize {
    match tail {
        Tail::Clean => 0,
        Tail::Truncated { dropped, .. } | Tail::Corrupt { dropped, .. } => dropped,
    }
}

/// Milliseconds since 1970 of the instant `t`, given that `now` is `wall`.
pub(super) fn wall_ms(t: Instant, now: Instant, wall: SystemTime) -> u64 {
    let w = if t >= now {
        wall + (t - now)
    } else {
        wall.checked_sub(now - t).unwrap_or(UNIX_EPOCH)
    };
    w.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant of wall-clock milliseconds `ms`, given that `now` is `wall`; `None` if it is not
/// after `now`.
fn instant_of(ms: u64, now: Instant, wall: SystemTime) -> Option<Instant> {
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    let ahead = at.duration_since(wall).ok().filter(|d| !d.is_zero())?;
    now.checked_add(ahead)
}

/// The same for a moment in the past: `None` if the monotonic clock cannot go back that far.
fn instant_before(ms: u64, now: Instant, wall: SystemTime) -> Option<Instant> {
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    match wall.duration_since(at) {
        Ok(ago) => now.checked_sub(ago),
        Err(_) => Some(now),
    }
}

fn put_addr(w: &mut Writer, a: &SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            w.u8(4);
            w.buf.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            w.u8(6);
            w.buf.extend_from_slice(&v6.ip().octets());
            w.uint(u64::from(v6.flowinfo()));
            w.uint(u64::from(v6.scope_id()));
        }
    }
    w.uint(u64::from(a.port()));
}

fn take_addr(r: &mut Reader<'_>) -> Option<SocketAddr> {
    let ip = match r.u8()? {
        4 => {
            let b: [u8; 4] = r.take_slice(4)?.try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(b)), None)
        }
        6 => {
            let b: [u8; 16] = r.take_slice(16)?.try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(b)), Some((r.u32()?, r.u32()?)))
        }
        _ => return None,
    };
    let port = r.u16()?;
    Some(match ip {
        (IpAddr::V6(a), Some((flow, scope))) => {
            SocketAddr::V6(SocketAddrV6::new(a, port, flow, scope))
        }
        (ip, _) => SocketAddr::new(ip, port),
    })
}

fn put_command(w: &mut Writer, op: Op, cmd: &CommandHead, req: &Request) {
    w.put(&op);
    w.put(cmd);
    w.put(req);
}

fn take_command(r: &mut Reader<'_>) -> Option<(Op, CommandHead, Request)> {
    Some((r.take()?, r.take()?, r.take()?))
}

impl Shard {
    /// The shard's durable image as of `now` (which is `wall` on the wall clock): the snapshot
    /// that becomes the next generation once [`Shard::snapshot_saved`] says it is on disk.
    pub fn export(&self, now: Instant, wall: SystemTime, names: &dyn IdentityNames) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.sessions.len() * 256);
        self.header(FileKind::Snapshot).write(&mut out);
        let mut w = Writer::new();
        self.put_positions(&mut w, self.generation + 1);
        wire::frame(&mut out, &w.buf);
        for (reg, s) in self.sessions.iter() {
            w.buf.clear();
            self.put_device(&mut w, reg, s, now, wall, names);
            wire::frame(&mut out, &w.buf);
        }
        w.buf.clear();
        w.u8(TAG_END);
        w.uint(self.sessions.len() as u64);
        wire::frame(&mut out, &w.buf);
        out
    }

    /// The image [`Shard::export`] made is on disk: it is the current generation, and the
    /// journal starts again with the returned bytes (replacing the old journal).
    pub fn snapshot_saved(&mut self, kind: SnapshotKind) -> Vec<u8> {
        self.generation += 1;
        self.sessions.clear_changes();
        // The image holds what was still to be written out too.
        self.changed.clear();
        self.changed_at = 0;
        self.journal_start(kind == SnapshotKind::Final)
    }

    /// The start of a journal following the current generation, for a restart that took no
    /// new snapshot (the old journal, if any, held nothing new).
    pub fn resume_journal(&self) -> Vec<u8> {
        self.journal_start(false)
    }

    /// Logs from now on which registrations change, for [`Shard::export_changes`].
    pub fn track_changes(&mut self) {
        self.sessions.track_changes();
    }

    /// Appends to `out` the journal records of registrations changed since the last call
    /// (or the last snapshot): each one's whole record, or that it is gone. At most `limit`
    /// (at least 1) per call, so that a worker writing the changes of a storm pauses a bounded
    /// time: returns how many, and whether changes taken from the log are left for the next
    /// call (a batch is whole once this says none are).
    pub fn export_changes(
        &mut self,
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> (usize, bool) {
        let mut changed = std::mem::take(&mut self.changed);
        if self.changed_at >= changed.len() {
            self.sessions.take_changes(&mut changed);
            self.changed_at = 0;
        }
        let end = changed.len().min(self.changed_at + limit.max(1));
        let chunk = &changed[self.changed_at..end];
        if !chunk.is_empty() {
            let mut w = Writer::new();
            self.put_positions(&mut w, self.generation);
            wire::frame(out, &w.buf);
            for &reg in chunk {
                w.buf.clear();
                match self.sessions.get(reg) {
                    Some(s) => self.put_device(&mut w, reg, s, now, wall, names),
                    None => {
                        w.u8(TAG_GONE);
                        w.uint(reg.as_u64());
                    }
                }
                wire::frame(out, &w.buf);
            }
        }
        let n = chunk.len();
        self.changed_at = end;
        let more = end < changed.len();
        self.changed = changed;
        (n, more)
    }

    fn header(&self, kind: FileKind) -> Header {
        Header {
            kind,
            shard: self.id.index() as u8,
            shards: self.cfg.shards,
        }
    }

    fn journal_start(&self, closed: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.header(FileKind::Journal).write(&mut out);
        let mut w = Writer::new();
        w.u8(TAG_FOLLOWS);
        w.uint(self.generation);
        wire::frame(&mut out, &w.buf);
        if closed {
            wire::frame(&mut out, &[TAG_CLOSED]);
        }
        out
    }

    /// The id generators' positions, and the generation of the image they belong to.
    fn put_positions(&self, w: &mut Writer, generation: u64) {
        w.u8(TAG_SHARD);
        w.uint(self.next_reg_seq);
        w.uint(u64::from(self.mids.position()));
        w.uint(generation);
    }

    /// Reads what [`Shard::put_positions`] wrote (after the tag); `None` if it does not decode.
    fn take_positions(&mut self, r: &mut Reader<'_>) -> Option<u64> {
        let (seq, mid) = (r.uint()?, r.u32()?);
        let generation = r.uint()?;
        self.next_reg_seq = self.next_reg_seq.max(seq);
        self.mids.set_position(mid);
        Some(generation)
    }

    fn put_device(
        &self,
        w: &mut Writer,
        reg: RegId,
        s: &Session,
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
    ) {
        let at = |stamp: u64| {
            let t = self.epoch.map_or(now, |e| e + Duration::from_nanos(stamp));
            wall_ms(t, now, wall)
        };
        w.u8(TAG_DEVICE);
        w.uint(reg.as_u64());
        w.put(&s.reg);
        w.uint(u64::from(s.peer.listener));
        put_addr(w, &s.peer.addr);
        let identity = s.peer.identity.and_then(|id| names.name(id));
        w.opt(identity, |w, (mode, bytes)| {
            w.str(mode.as_str());
            w.bytes(&bytes);
        });
        w.uint(at(s.expires_at));
        w.uint(at(s.last_uplink));
        let empty = Work::default();
        let work = s.work.as_deref().unwrap_or(&empty);
        w.uint(work.observations.len() as u64);
        for (token, o) in work.observations.iter() {
            w.uint(token.as_u64());
            put_command(w, o.op, &o.cmd, &o.request);
            w.opt(o.last_seq, |w, v| w.uint(u64::from(v)));
        }
        // The command in flight goes first: it is sent again after the restart.
        let inflight = work
            .inflight
            .as_deref()
            .filter(|e| e.outcome == Outcome::Response);
        let queued: Vec<&Queued> = work
            .queue
            .iter()
            .filter(|q| matches!(q.purpose, Purpose::Command))
            .collect();
        w.uint((queued.len() + inflight.is_some() as usize) as u64);
        if let Some(e) = inflight {
            // The Block1 sender holds the body while it is sent: the whole body goes again.
            let mut req = e.request.clone();
            if let super::session::Transfer::Block1(b) = &e.transfer {
                req.payload = b.body().to_vec();
            }
            put_command(w, e.op, &e.cmd, &req);
            w.opt(None::<u64>, |w, v| w.uint(v));
        }
        for q in queued {
            put_command(w, q.op, &q.cmd, &q.request);
            w.opt(q.expires_at.map(|t| wall_ms(t, now, wall)), |w, v| {
                w.uint(v)
            });
        }
    }

    /// Restores the last snapshot [`Shard::export`] wrote and the journal after it into this
    /// shard (fresh: nothing registered yet); either may be missing. Index changes go to
    /// `out.index`; waiting commands of reachable devices start.
    ///
    /// An unusable snapshot is an error (nothing restored: the caller sets it aside and may
    /// try again with the journal alone); an unusable journal is reported and ignored.
    pub fn import(
        &mut self,
        snapshot: Option<&[u8]>,
        journal: Option<&[u8]>,
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
        out: &mut Output,
    ) -> Result<ImportReport, ImportError> {
        // Stamps count from the epoch and cannot go below it: start it far enough back that a
        // device last heard of before the restart is out of its queue-mode window.
        if self.epoch.is_none() {
            let back = self.cfg.qmode_time_window + Duration::from_secs(1);
            self.epoch = Some(now.checked_sub(back).unwrap_or(now));
        }
        let mut st = Restoring::default();
        let base = match snapshot {
            Some(image) => Some(self.read_snapshot(image, now, wall, names, &mut st, out)?),
            None => None,
        };
        if let Some(j) = journal {
            st.report.journal = self.replay(j, base, now, wall, names, &mut st, out);
        }
        if !st.report.journal.closed {
            // Not stopped gracefully: ids given out after the last durable point are unknown.
            self.next_reg_seq += REG_SEQ_SKIP;
            self.mids.skip_ahead();
        }
        let r = &mut st.report;
        r.restored = self.sessions.len();
        for w in self.sessions.values().filter_map(|s| s.work.as_deref()) {
            r.observations += w.observations.len();
            r.queued += w.queue.len();
        }
        st.pending.sort_unstable();
        st.pending.dedup();
        for reg in std::mem::take(&mut st.pending) {
            self.pump(now, reg, out);
        }
        Ok(st.report)
    }

    /// The body of a file of `kind` written by this shard, or why not.
    fn body_of<'a>(&self, file: &'a [u8], kind: FileKind) -> Result<&'a [u8], ImportError> {
        let (h, body) = Header::read(file).map_err(ImportError::Header)?;
        if h.kind != kind {
            return Err(ImportError::WrongKind);
        }
        if usize::from(h.shard) != self.id.index() || h.shards != self.cfg.shards {
            return Err(ImportError::Foreign {
                shard: h.shard,
                shards: h.shards,
            });
        }
        Ok(body)
    }

    /// Restores a snapshot; returns its generation.
    fn read_snapshot(
        &mut self,
        image: &[u8],
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
        st: &mut Restoring,
        out: &mut Output,
    ) -> Result<u64, ImportError> {
        let body = self.body_of(image, FileKind::Snapshot)?;
        let (records, tail) = wire::records(body);
        st.report.dropped_bytes = dropped(tail);
        let mut generation = 0;
        let mut devices = 0u64;
        let mut ended = false;
        for rec in records {
            let mut r = Reader::new(rec);
            if ended {
                // Nothing follows the end record in a whole image.
                st.report.complete = false;
                st.report.skipped += 1;
                continue;
            }
            let tag = r.u8();
            devices += u64::from(tag == Some(TAG_DEVICE));
            match tag {
                Some(TAG_END) => {
                    ended = true;
                    st.report.complete = r.uint() == Some(devices) && r.is_empty();
                }
                Some(TAG_SHARD) => match self.take_positions(&mut r) {
                    Some(g) => generation = g,
                    None => st.report.skipped += 1,
                },
                Some(TAG_DEVICE) => {
                    self.restore_device(&mut r, false, now, wall, names, st, out);
                }
                _ => st.report.skipped += 1,
            }
        }
        st.report.complete &= st.report.dropped_bytes == 0;
        self.generation = generation;
        Ok(generation)
    }

    /// Replays a journal over the snapshot of generation `base` (none: whatever it holds).
    #[allow(clippy::too_many_arguments)]
    fn replay(
        &mut self,
        journal: &[u8],
        base: Option<u64>,
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
        st: &mut Restoring,
        out: &mut Output,
    ) -> JournalReport {
        let mut rep = JournalReport::default();
        let body = match self.body_of(journal, FileKind::Journal) {
            Ok(b) => b,
            Err(e) => {
                rep.unusable = Some(e);
                return rep;
            }
        };
        let (records, tail) = wire::records(body);
        rep.dropped_bytes = dropped(tail);
        let mut records = records.into_iter();
        let follows = records.next().map(|rec| {
            let mut r = Reader::new(rec);
            (r.u8() == Some(TAG_FOLLOWS)).then(|| r.uint()).flatten()
        });
        match (follows, base) {
            // Cut while it was being started: nothing in it.
            (None, _) => return rep,
            (Some(None), _) => {
                rep.unusable = Some(ImportError::WrongKind);
                return rep;
            }
            (Some(Some(g)), Some(b)) if g != b => {
                rep.stale = true;
                return rep;
            }
            (Some(Some(g)), _) => self.generation = g,
        }
        for rec in records {
            let mut r = Reader::new(rec);
            rep.closed = false;
            match r.u8() {
                Some(TAG_SHARD) => {
                    if self.take_positions(&mut r).is_none() {
                        st.report.skipped += 1;
                    }
                }
                Some(TAG_DEVICE) => {
                    if self.restore_device(&mut r, true, now, wall, names, st, out) {
                        rep.devices += 1;
                    }
                }
                Some(TAG_GONE) => match r.uint().map(RegId::from_u64) {
                    Some(reg) => {
                        rep.removed += usize::from(self.forget(reg, out));
                    }
                    None => st.report.skipped += 1,
                },
                Some(TAG_CLOSED) => rep.closed = rep.dropped_bytes == 0,
                _ => st.report.skipped += 1,
            }
        }
        rep
    }

    /// Restores one device record; with `replace` (a journal's), it replaces the registration
    /// of the same id or endpoint. True if the device was restored.
    #[allow(clippy::too_many_arguments)]
    fn restore_device(
        &mut self,
        r: &mut Reader<'_>,
        replace: bool,
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
        st: &mut Restoring,
        out: &mut Output,
    ) -> bool {
        let (reg, session, obs, queued) = match self.take_device(r, now, wall, names) {
            Some(Restored::Device(reg, session, obs, queued)) => (reg, session, obs, queued),
            Some(Restored::Expired(reg)) => {
                if replace {
                    self.forget(reg, out);
                }
                st.report.expired += 1;
                return false;
            }
            None => {
                st.report.skipped += 1;
                return false;
            }
        };
        let same_endpoint = self.sessions.find_endpoint(&session.reg.endpoint);
        if replace {
            self.forget(reg, out);
            if let Some(other) = same_endpoint.filter(|o| *o != reg) {
                self.forget(other, out);
            }
        } else if self.sessions.get(reg).is_some() || same_endpoint.is_some() {
            st.report.skipped += 1;
            return false;
        }
        self.next_reg_seq = self.next_reg_seq.max((reg.as_u64() >> 8) + 1);
        let expires = self
            .epoch
            .map_or(now, |e| e + Duration::from_nanos(session.expires_at));
        self.sessions.insert(reg, session, &mut out.index);
        self.lifetimes.push(now, expires, reg.as_u64());
        for (token, o) in obs {
            if self.sessions.token_in_use(token) || token.shard() != self.id {
                st.report.skipped_observations += 1;
                continue;
            }
            self.sessions.add_observation(reg, token, Box::new(o));
        }
        if !queued.is_empty() {
            if let Some(s) = self.sessions.get_mut(reg) {
                s.work_mut().queue = queued;
            }
            st.pending.push(reg);
        }
        true
    }

    /// Drops a restored registration without a word (it ended before the restart); true if
    /// there was one.
    fn forget(&mut self, reg: RegId, out: &mut Output) -> bool {
        self.sessions.remove(reg, &mut out.index).is_some()
    }

    fn take_device(
        &self,
        r: &mut Reader<'_>,
        now: Instant,
        wall: SystemTime,
        names: &dyn IdentityNames,
    ) -> Option<Restored> {
        let reg = RegId::from_u64(r.uint()?);
        if reg.shard() != self.id {
            return None;
        }
        let registration: Registration = r.take()?;
        let listener = r.u16()?;
        let addr = take_addr(r)?;
        let identity = r.opt(|r| {
            let mode = SecurityMode::from_name(r.str()?)?;
            Some((mode, r.bytes()?))
        })?;
        let identity = match identity {
            // An identity that cannot be interned again would leave the device unable to
            // prove it is the one that registered: the record is skipped.
            Some((mode, bytes)) => Some(names.intern(mode, bytes)?),
            None => None,
        };
        let expires_ms = r.uint()?;
        let last_uplink_ms = r.uint()?;
        let n = r.len()?;
        let mut obs = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let token = Token::from_u64(r.uint()?);
            let (op, cmd, request) = take_command(r)?;
            let last_seq = r.opt(|r| r.u32())?;
            obs.push((
                token,
                Observation {
                    op,
                    cmd,
                    request,
                    last_seq,
                    last_at: now,
                },
            ));
        }
        let n = r.len()?;
        let mut queued = VecDeque::with_capacity(n.min(64));
        for _ in 0..n {
            let (op, cmd, request) = take_command(r)?;
            let expires = r.opt(|r| r.uint())?;
            // Expired while down: answered as expired by the first pump.
            let expires_at = expires.map(|ms| instant_of(ms, now, wall).unwrap_or(now));
            queued.push_back(Queued {
                op,
                cmd,
                request,
                expires_at,
                purpose: Purpose::Command,
            });
        }
        if !r.is_empty() {
            return None;
        }
        let Some(expires) = instant_of(expires_ms, now, wall) else {
            return Some(Restored::Expired(reg));
        };
        // Before the epoch (long ago) stamps as the epoch: out of any queue-mode window.
        let last_uplink = instant_before(last_uplink_ms, now, wall)
            .and_then(|t| self.epoch.map(|e| t.max(e)))
            .unwrap_or(now);
        let session = Box::new(Session {
            reg: registration,
            peer: Peer {
                listener,
                addr,
                identity,
            },
            expires_at: self.stamp(expires),
            last_uplink: self.stamp(last_uplink),
            work: None,
        });
        Some(Restored::Device(reg, session, obs, queued))
    }
}

enum Restored {
    Device(
        RegId,
        Box<Session>,
        Vec<(Token, Observation)>,
        VecDeque<Queued>,
    ),
    Expired(RegId),
}
