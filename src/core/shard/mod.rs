//! The per-worker LwM2M server state machine, sans-IO.
//!
//! A `Shard` owns the sessions of the endpoints routed to it: registration, the one confirmable
//! request in flight (NSTART = 1), the downlink FIFO (queue mode), the observations, plus the
//! message-id dedup cache and its deadlines. It is driven by three calls, each taking `now` from
//! the caller: [`Shard::on_datagram`], [`Shard::on_command`] and [`Shard::on_timeout`]; everything
//! it wants done (datagrams to send, MQTT publishes, routing-index changes) is appended to an
//! [`Output`]. It never reads a clock, touches a socket, a channel or a lock, so tests drive it
//! with a fake clock and a lossy wire.
//!
//! Identifiers the gateway chooses carry the shard number so the event loop can route replies
//! without a lookup: registration ids are `seq * 256 + shard`, message ids `k * shards + shard`,
//! and the first byte of every token is the shard. Responses and notifications are matched by
//! token alone (never by source address), so NAT rebinding does not break observations.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use crate::coap::block::{
    Block1Sender, Block1Step, Block2Assembly, Block2Step, BlockBudget, BlockOpt, Reassembly,
};
use crate::coap::{code, decode_uint, opt, DedupCache, MessageBuilder, MessageView, MsgType};
use crate::lwm2m::link_format::{self, RegisteredObjects};
use crate::lwm2m::{codec, json, ContentFormat, Path};

use super::ids::ShardId;
use super::intmap::IntMap;
pub use super::peer::Peer;
use super::registration::{self, Registration, Rejection};
use super::request::{self as downlink, Blocks, DeviceContext, Op, Request};
use super::settings::{AutoObserve, ShardConfig, UpdatePublishCondition};
use super::timers::{Expiries, Timers};
use super::topics::Template;
use super::uplink::{self as envelope, Command, Content};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub payload: Vec<u8>,
}

/// Changes to the shared address index (address -> shard) used to route client-chosen traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUpdate {
    Bind(SocketAddr),
    Unbind(SocketAddr),
}

/// What one call asks the I/O shell to do.
#[derive(Debug, Default)]
pub struct Output {
    pub transmits: Vec<Transmit>,
    pub publishes: Vec<Publish>,
    pub index: Vec<IndexUpdate>,
    /// Datagrams this shard could not use (malformed, unexpected).
    pub dropped: u64,
}

impl Output {
    fn publish(&mut self, t: &Template, ep: &str, peerhost: Option<IpAddr>, payload: Vec<u8>) {
        self.publishes.push(Publish {
            topic: t.render_ip(ep, peerhost),
            qos: t.qos,
            payload,
        });
    }

    pub fn clear(&mut self) {
        self.transmits.clear();
        self.publishes.clear();
        self.index.clear();
        self.dropped = 0;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Exchange {
        reg: u64,
        token: u64,
    },
    /// The oldest command waiting for a sleeping device may have expired.
    Queue(u64),
    /// Block-wise transfers may have outlived EXCHANGE_LIFETIME.
    Transfers,
}

#[derive(Debug, PartialEq, Eq)]
enum ExchangeState {
    AwaitAck,
    AwaitSeparate,
}

/// The confirmable request in flight to one device (NSTART = 1).
#[derive(Debug)]
struct Exchange {
    cmd: Command,
    op: Op,
    request: Request,
    token: u64,
    mid: u16,
    bytes: Vec<u8>,
    retransmits: u32,
    timeout: Duration,
    deadline: Instant,
    state: ExchangeState,
    /// A request body too large for one datagram, sent block by block (RFC 7959 Block1).
    block1: Option<Block1Sender>,
    /// A response arriving block by block (Block2), and the block to ask for next.
    block2: Option<Block2Assembly>,
    next_block2: Option<BlockOpt>,
    /// For the fetch of a block-wise notification's remaining blocks: publish the result as a
    /// notification with this Observe sequence number.
    notify_seq: Option<Option<u32>>,
    /// The Observe value of the first block of a block-wise answer to an observe.
    first_observe: Option<u32>,
}

/// A command waiting for its turn (or for a sleeping device to wake up).
#[derive(Debug)]
struct Queued {
    cmd: Command,
    op: Op,
    request: Request,
    expires_at: Option<Instant>,
    /// Set when this is the fetch of the remaining blocks of a block-wise notification.
    continuation: Option<Continuation>,
}

/// The rest of a notification that came with Block2 (RFC 7959 §3.4 with RFC 7641): the gateway
/// fetches the remaining blocks with plain requests and publishes the whole as one notification.
#[derive(Debug)]
struct Continuation {
    assembly: Block2Assembly,
    next: BlockOpt,
    seq: Option<u32>,
}

/// An established observation, keyed by its token. Notifications echo `cmd`.
#[derive(Debug)]
struct Observation {
    cmd: Command,
    /// The notifications' invariant JSON, written once.
    head: envelope::ResponseHead,
    op: Op,
    request: Request,
    last_seq: Option<u32>,
    last_at: Instant,
}

/// What a session has going on with its device. Allocated when the first command or observation
/// arrives and dropped when all of it is over again ([`Session::settle`]): an idle registration
/// then carries 8 bytes for it instead of 64.
#[derive(Debug, Default)]
struct Work {
    /// Boxed: an observed device usually has nothing in flight.
    inflight: Option<Box<Exchange>>,
    queue: VecDeque<Queued>,
    /// Boxed: an observation is 336 bytes and the map keeps spare slots; inline, two
    /// observations cost a 4-slot table of 1.4 KB per device.
    observations: IntMap<u64, Box<Observation>>,
}

impl Work {
    fn is_idle(&self) -> bool {
        self.inflight.is_none() && self.queue.is_empty() && self.observations.is_empty()
    }
}

/// Instants a session keeps are nanoseconds since the shard's epoch ([`Shard::stamp`]): 8 bytes
/// instead of 16, and exact.
type Stamp = u64;

#[derive(Debug)]
struct Session {
    reg: Registration,
    peer: Peer,
    expires_at: Stamp,
    /// Last datagram from the device: a queue-mode device is reachable for a while after it.
    last_uplink: Stamp,
    work: Option<Box<Work>>,
}

impl Session {
    fn reachable(&self, now: Stamp, window: Duration) -> bool {
        !self.reg.queue_mode || now < self.last_uplink.saturating_add(nanos(window))
    }

    fn work_mut(&mut self) -> &mut Work {
        self.work.get_or_insert_with(Box::default)
    }

    fn inflight(&self) -> Option<&Exchange> {
        self.work.as_ref()?.inflight.as_deref()
    }

    fn inflight_mut(&mut self) -> Option<&mut Exchange> {
        self.work.as_mut()?.inflight.as_deref_mut()
    }

    fn take_inflight(&mut self) -> Option<Box<Exchange>> {
        self.work.as_mut()?.inflight.take()
    }

    /// Releases the `Work` once nothing is in flight, queued or observed.
    fn settle(&mut self) {
        if self.work.as_ref().is_some_and(|w| w.is_idle()) {
            self.work = None;
        }
    }

    fn versions(&self) -> &[(u16, Box<str>)] {
        self.reg.objects.as_ref().map_or(&[][..], |o| o.versions())
    }

    /// The device address for `${peerhost}` topics, formatted only when a topic needs it.
    fn host(&self) -> Option<IpAddr> {
        Some(self.peer.addr.ip())
    }
}

pub struct Shard {
    id: u8,
    cfg: Arc<ShardConfig>,
    /// Boxed sessions keep the map's slots small: hash maps over-allocate slots as they grow.
    sessions: IntMap<u64, Box<Session>>,
    /// Registration ids by their session's endpoint name, and by its address (the registration
    /// that bound it last). The tables hold only ids and hash and compare through the session,
    /// so a name or address is stored once, in the session. Both are chosen by devices: hashed
    /// with the randomly keyed `keys` (SipHash), never with the Fx hash of [`IntMap`].
    ///
    /// Invariant: an id in `by_endpoint` / `by_addr` has a session, hashed by its current
    /// endpoint / `peer.addr`; a session's address changes only while it is out of `by_addr`.
    by_endpoint: HashTable<u64>,
    by_addr: HashTable<u64>,
    keys: RandomState,
    /// Tokens of requests in flight and of observations.
    by_token: IntMap<u64, u64>,
    by_mid: IntMap<u16, u64>,
    dedup: DedupCache<Peer>,
    /// Memory held by Block2 reassembly, per registration and in total.
    reassembly: Reassembly<u64>,
    timers: Timers<Timer>,
    /// Registration lifetimes, apart from `timers`: one 16-byte entry per registration.
    lifetimes: Expiries,
    /// Origin of the session [`Stamp`]s: the first `now` the shard was given.
    epoch: Option<Instant>,
    next_reg_seq: u64,
    next_mid_seq: u32,
    rng: SmallRng,
    buf: Vec<u8>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn reason_bytes(r: &str) -> &[u8] {
    // Diagnostic payloads (RFC 7252 §5.5.2) are for humans; keep them short.
    &r.as_bytes()[..r.len().min(128)]
}

/// RFC 7641 §3.4: is notification (v2 at t2) newer than the last one (v1 at t1)?
fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || t2 > t1 + Duration::from_secs(128)
}

/// Objects EMQX never auto-observes with `auto_observe = true` (security, server, ACL, ...).
const AUTO_OBSERVE_SKIP: [u16; 9] = [0, 1, 2, 4, 5, 6, 7, 9, 15];

impl Shard {
    /// `seed` feeds the token / retransmission-jitter RNG (fixed in tests, random in production).
    pub fn new(id: ShardId, cfg: Arc<ShardConfig>, seed: u64) -> Shard {
        let id = id.index() as u8;
        let lifetime = cfg.transmission.exchange_lifetime();
        let max = cfg.dedup_max_entries;
        let budget = BlockBudget {
            per_peer_max: cfg.block_max_body,
            total_max: cfg.block_total_max,
        };
        let mut shard = Shard {
            id,
            cfg,
            sessions: IntMap::default(),
            by_endpoint: HashTable::new(),
            by_addr: HashTable::new(),
            keys: RandomState::new(),
            by_token: IntMap::default(),
            by_mid: IntMap::default(),
            dedup: DedupCache::new(lifetime, max),
            reassembly: Reassembly::new(budget),
            timers: Timers::new(),
            lifetimes: Expiries::default(),
            epoch: None,
            next_reg_seq: 1,
            next_mid_seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            buf: Vec::with_capacity(256),
        };
        // Growing a table rehashes all of it at once: at 57k and 114k devices that stalled
        // every registration behind it for milliseconds. A fleet of known size avoids that.
        let n = shard.cfg.expected_per_shard;
        if n > 0 {
            shard.sessions.reserve(n);
            let (sessions, keys) = (&shard.sessions, &shard.keys);
            shard.by_endpoint.reserve(n, |id| {
                sessions
                    .get(id)
                    .map_or(0, |s| keys.hash_one(&*s.reg.endpoint))
            });
            shard.by_addr.reserve(n, |id| {
                sessions.get(id).map_or(0, |s| keys.hash_one(s.peer.addr))
            });
            shard.dedup.reserve(n);
            shard.lifetimes.reserve(n);
        }
        shard
    }

    pub fn registrations(&self) -> usize {
        self.sessions.len()
    }

    /// Observations currently established on this shard.
    pub fn observations(&self) -> usize {
        self.sessions
            .values()
            .map(|s| s.work.as_ref().map_or(0, |w| w.observations.len()))
            .sum()
    }

    /// When [`Shard::on_timeout`] next has work to do: at or up to one timer tick (10 ms) after
    /// the earliest deadline, so that deadlines close together cost one wake-up.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let lifetimes = self.lifetimes.next_deadline();
        match (self.timers.next_deadline(), lifetimes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `t` as a [`Stamp`]. Instants before the epoch (a caller's clock going backwards) count
    /// as the epoch.
    fn stamp(&self, t: Instant) -> Stamp {
        self.epoch
            .map_or(0, |e| nanos(t.saturating_duration_since(e)))
    }

    /// Fixes the epoch at the first `now` (every public entry point calls this).
    fn start_clock(&mut self, now: Instant) {
        self.epoch.get_or_insert(now);
    }

    fn endpoint_hash(&self, ep: &str) -> u64 {
        self.keys.hash_one(ep)
    }

    fn addr_hash(&self, addr: SocketAddr) -> u64 {
        self.keys.hash_one(addr)
    }

    fn find_endpoint(&self, ep: &str) -> Option<u64> {
        let sessions = &self.sessions;
        self.by_endpoint
            .find(self.endpoint_hash(ep), |r| {
                sessions.get(r).is_some_and(|s| &*s.reg.endpoint == ep)
            })
            .copied()
    }

    fn find_addr(&self, addr: SocketAddr) -> Option<u64> {
        let sessions = &self.sessions;
        self.by_addr
            .find(self.addr_hash(addr), |r| {
                sessions.get(r).is_some_and(|s| s.peer.addr == addr)
            })
            .copied()
    }

    /// Makes `reg` (whose session exists, with endpoint `ep`) the registration of `ep`.
    fn index_endpoint(&mut self, ep: &str, reg: u64) {
        let h = self.endpoint_hash(ep);
        let (sessions, keys) = (&self.sessions, &self.keys);
        let entry = self.by_endpoint.entry(
            h,
            |r| sessions.get(r).is_some_and(|s| &*s.reg.endpoint == ep),
            |r| {
                sessions
                    .get(r)
                    .map_or(0, |s| keys.hash_one(&*s.reg.endpoint))
            },
        );
        match entry {
            Entry::Occupied(mut e) => *e.get_mut() = reg,
            Entry::Vacant(e) => {
                e.insert(reg);
            }
        }
    }

    fn unindex_endpoint(&mut self, ep: &str, reg: u64) {
        let h = self.endpoint_hash(ep);
        if let Ok(e) = self.by_endpoint.find_entry(h, |&r| r == reg) {
            e.remove();
        }
    }

    fn alloc_mid(&mut self) -> u16 {
        let n = self.cfg.shards.max(1) as u32;
        let per = 65536 / n;
        let k = self.next_mid_seq % per;
        self.next_mid_seq = self.next_mid_seq.wrapping_add(1);
        (k * n + self.id as u32) as u16
    }

    fn alloc_token(&mut self) -> u64 {
        loop {
            let t = (self.rng.gen::<u64>() & 0x00ff_ffff_ffff_ffff) | ((self.id as u64) << 56);
            if !self.by_token.contains_key(&t) {
                return t;
            }
        }
    }

    /// Any datagram from the device: it is awake (queue mode), so waiting commands may go.
    fn touch(&mut self, now: Instant, reg: u64, out: &mut Output) {
        let t = self.stamp(now);
        if let Some(s) = self.sessions.get_mut(&reg) {
            s.last_uplink = t;
        }
        self.pump(now, reg, out);
    }

    // ---------------------------------------------------------------- datagrams

    pub fn on_datagram(&mut self, now: Instant, peer: Peer, bytes: &[u8], out: &mut Output) {
        self.start_clock(now);
        // The zero-copy view: the datagram was already checked by the event loop's router, and
        // parsing it again this way costs a third of coap-lite's `Packet` and allocates nothing
        // (benches/hotpath.rs).
        let Ok(pkt) = MessageView::parse(bytes) else {
            out.dropped += 1;
            return;
        };
        let mid = pkt.message_id();
        let mtype = pkt.msg_type();
        if mtype == MsgType::Con {
            if let Some(cached) = self.dedup.get(peer, mid) {
                out.transmits.push(Transmit {
                    peer,
                    bytes: cached.to_vec(),
                });
                return;
            }
        }
        let c = pkt.code();
        if c == code::EMPTY {
            self.on_empty(now, peer, &pkt, out)
        } else if code::is_request(c) {
            self.on_request(now, peer, &pkt, out)
        } else if code::is_response(c) {
            self.on_response(now, peer, &pkt, out)
        } else if matches!(mtype, MsgType::Con | MsgType::Non) {
            // Reserved code classes (RFC 7252 §4.2/4.3): reject what we cannot process.
            self.reply_rst(peer, mid, out);
        } else {
            out.dropped += 1;
        }
    }

    fn reply_rst(&mut self, peer: Peer, mid: u16, out: &mut Output) {
        let mut b = Vec::with_capacity(4);
        MessageBuilder::new(&mut b, MsgType::Rst, code::EMPTY, mid, &[]).finish();
        out.transmits.push(Transmit { peer, bytes: b });
    }

    fn ack(&mut self, now: Instant, peer: Peer, mid: u16, out: &mut Output) {
        let mut b = Vec::with_capacity(4);
        MessageBuilder::new(&mut b, MsgType::Ack, code::EMPTY, mid, &[]).finish();
        self.dedup.insert(now, peer, mid, &b);
        out.transmits.push(Transmit { peer, bytes: b });
    }

    fn on_empty(&mut self, now: Instant, peer: Peer, pkt: &MessageView, out: &mut Output) {
        let mid = pkt.message_id();
        let mtype = pkt.msg_type();
        if matches!(mtype, MsgType::Con | MsgType::Non) {
            // CoAP ping (or any empty CON/NON): answered with RST.
            return self.reply_rst(peer, mid, out);
        }
        let Some(reg) = self.by_mid.get(&mid).copied() else {
            out.dropped += 1;
            return;
        };
        let awaiting_ack = self
            .sessions
            .get(&reg)
            .and_then(|s| s.inflight())
            .is_some_and(|e| e.mid == mid && e.state == ExchangeState::AwaitAck);
        if !awaiting_ack {
            return;
        }
        if mtype == MsgType::Rst {
            self.finish_exchange(reg, out, |ex| {
                ("coap_reset", Value::Object(ex.cmd.data.clone()))
            });
            return self.touch(now, reg, out);
        }
        // Empty ACK: a separate response is coming (RFC 7252 §5.2.2). Stop retransmitting, wait.
        let deadline = now + self.cfg.separate_response_timeout;
        let t = self.stamp(now);
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        s.last_uplink = t;
        let Some(ex) = s.inflight_mut() else {
            return;
        };
        ex.state = ExchangeState::AwaitSeparate;
        ex.deadline = deadline;
        let payload = envelope::message(
            &ex.cmd.echo,
            "ack",
            None,
            Value::Object(ex.cmd.data.clone()),
        );
        let token = ex.token;
        out.publish(
            &self.cfg.topics.response,
            &s.reg.endpoint,
            s.host(),
            payload,
        );
        self.by_mid.remove(&mid);
        self.timers
            .push(now, deadline, Timer::Exchange { reg, token });
    }

    fn on_request(&mut self, now: Instant, peer: Peer, pkt: &MessageView, out: &mut Output) {
        let con = pkt.msg_type() == MsgType::Con;
        let (resp_code, location, reason) = match self.handle_request(now, peer, pkt, out) {
            Ok((c, loc)) => (c, loc, None),
            Err(r) => (r.code, None, Some(r.reason)),
        };
        let mut b = Vec::with_capacity(32);
        let (t, mid) = if con {
            (MsgType::Ack, pkt.message_id())
        } else {
            (MsgType::Non, self.alloc_mid())
        };
        let mut m = MessageBuilder::new(&mut b, t, resp_code, mid, pkt.token());
        if let Some(id) = &location {
            m = m.options(opt::LOCATION_PATH, [b"rd".as_slice(), id.as_bytes()]);
        }
        m.payload(reason.as_deref().map(reason_bytes).unwrap_or_default());
        if con {
            self.dedup.insert(now, peer, pkt.message_id(), &b);
        }
        out.transmits.push(Transmit { peer, bytes: b });
        // Commands queued for a device that just spoke may go now (after our answer).
        if let Some(reg) = self.find_addr(peer.addr) {
            self.pump(now, reg, out);
        }
    }

    /// Returns the response code and, for a Register, the registration id for Location-Path.
    fn handle_request(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<(u8, Option<String>), Rejection> {
        if let Some(n) = pkt.unknown_critical_option() {
            return Err(Rejection {
                code: code::BAD_OPTION,
                reason: format!("unsupported critical option {n}"),
            });
        }
        let method = pkt.code();
        let segs: Vec<&[u8]> = pkt.option_values(opt::URI_PATH).collect();
        let not_found = || Rejection {
            code: code::NOT_FOUND,
            reason: "no such resource".into(),
        };
        let not_allowed = || Rejection {
            code: code::METHOD_NOT_ALLOWED,
            reason: "method not allowed".into(),
        };
        match segs.as_slice() {
            [b"rd"] if method == code::POST => self
                .register(now, peer, pkt, out)
                .map(|id| (code::CREATED, Some(id))),
            [b"rd"] => Err(not_allowed()),
            [b"rd", id] => {
                let reg = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|r| self.sessions.contains_key(r));
                let Some(reg) = reg else {
                    return Err(not_found());
                };
                match method {
                    code::POST => self
                        .update(now, peer, reg, pkt, out)
                        .map(|()| (code::CHANGED, None)),
                    code::DELETE => {
                        self.remove_session(reg, "deregistered", out);
                        Ok((code::DELETED, None))
                    }
                    _ => Err(not_allowed()),
                }
            }
            [b"dp"] if method == code::POST => self
                .send(now, peer, pkt, out)
                .map(|()| (code::CHANGED, None)),
            [b"dp"] => Err(not_allowed()),
            _ => Err(not_found()),
        }
    }

    fn queries<'a>(pkt: &MessageView<'a>) -> impl Iterator<Item = &'a [u8]> {
        pkt.option_values(opt::URI_QUERY)
    }

    fn content_format(pkt: &MessageView) -> Option<u16> {
        pkt.first_option(opt::CONTENT_FORMAT)
            .and_then(decode_uint)
            .and_then(|v| u16::try_from(v).ok())
    }

    fn parse_objects(pkt: &MessageView) -> Result<Option<RegisteredObjects>, Rejection> {
        if let Some(cf) = Self::content_format(pkt) {
            if cf != ContentFormat::LinkFormat.as_u16() {
                return Err(Rejection {
                    code: code::UNSUPPORTED_CONTENT_FORMAT,
                    reason: "object list must be link-format (40)".into(),
                });
            }
        }
        if pkt.payload().is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(pkt.payload()).map_err(|_| Rejection {
            code: code::BAD_REQUEST,
            reason: "object list is not UTF-8".into(),
        })?;
        link_format::parse_registration(text)
            .map(Some)
            .map_err(|e| Rejection {
                code: code::BAD_REQUEST,
                reason: e.to_string(),
            })
    }

    /// Makes `reg` the registration found at `addr`, which must be its session's address.
    fn bind_addr(&mut self, addr: SocketAddr, reg: u64, out: &mut Output) {
        let h = self.addr_hash(addr);
        let (sessions, keys) = (&self.sessions, &self.keys);
        let entry = self.by_addr.entry(
            h,
            |r| sessions.get(r).is_some_and(|s| s.peer.addr == addr),
            |r| sessions.get(r).map_or(0, |s| keys.hash_one(s.peer.addr)),
        );
        match entry {
            Entry::Occupied(mut e) => *e.get_mut() = reg,
            Entry::Vacant(e) => {
                e.insert(reg);
            }
        }
        out.index.push(IndexUpdate::Bind(addr));
    }

    /// Forgets `addr` if `reg` holds it (`addr` is, or was until now, its session's address).
    fn unbind_addr(&mut self, addr: SocketAddr, reg: u64, out: &mut Output) {
        let h = self.addr_hash(addr);
        if let Ok(e) = self.by_addr.find_entry(h, |&r| r == reg) {
            e.remove();
            out.index.push(IndexUpdate::Unbind(addr));
        }
    }

    fn register(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<String, Rejection> {
        let params = registration::parse_query(Self::queries(pkt), self.cfg.lifetime_range)?;
        let version = registration::check_version(params.version.as_deref())?;
        let Some(endpoint) = params.endpoint.clone() else {
            return Err(Rejection {
                code: code::BAD_REQUEST,
                reason: "missing ep".into(),
            });
        };
        let objects = Self::parse_objects(pkt)?;
        let lifetime = params.lifetime.unwrap_or_else(|| {
            registration::DEFAULT_LIFETIME
                .clamp(self.cfg.lifetime_range.0, self.cfg.lifetime_range.1)
        });
        // The same endpoint registering again replaces its old registration. Commands waiting for
        // the endpoint carry over (they address the device, not one registration of it), the one
        // in flight is sent again; observations end (the device forgot them, TS §6.4).
        let mut carried = VecDeque::new();
        if let Some(old) = self.find_endpoint(&endpoint) {
            if let Some(w) = self.sessions.get_mut(&old).and_then(|s| s.work.as_mut()) {
                carried = std::mem::take(&mut w.queue);
                if let Some(ex) = w.inflight.take() {
                    self.by_token.remove(&ex.token);
                    self.by_mid.remove(&ex.mid);
                    // The rest of a notification is moot: observations end with the registration.
                    if ex.notify_seq.is_none() {
                        let mut request = ex.request;
                        if let Some(b1) = ex.block1 {
                            request.payload = b1.into_body();
                        }
                        carried.push_front(Queued {
                            cmd: ex.cmd,
                            op: ex.op,
                            request,
                            expires_at: None,
                            continuation: None,
                        });
                    }
                }
            }
            self.remove_session(old, "replaced", out);
        }
        let reg_id = (self.next_reg_seq << 8) | self.id as u64;
        self.next_reg_seq += 1;
        let reg = Registration::new(&endpoint, lifetime, version, &params, objects);
        let expires_at = now + reg.lifetime_duration();
        let work = (!carried.is_empty()).then(|| {
            Box::new(Work {
                queue: carried,
                ..Work::default()
            })
        });
        let session = Session {
            reg,
            peer,
            expires_at: self.stamp(expires_at),
            last_uplink: self.stamp(now),
            work,
        };
        let payload = session.reg.event_json("register");
        out.publish(
            &self.cfg.topics.register,
            &endpoint,
            session.host(),
            payload,
        );
        let auto = self.auto_observe_paths(&session.reg);
        self.sessions.insert(reg_id, Box::new(session));
        self.index_endpoint(&endpoint, reg_id);
        self.bind_addr(peer.addr, reg_id, out);
        self.lifetimes.push(now, expires_at, reg_id);
        for path in auto {
            let mut echo = Map::new();
            echo.insert("is_auto_observe".into(), Value::Bool(true));
            let mut data = Map::new();
            data.insert("path".into(), Value::String(path));
            let cmd = Command {
                echo,
                msg_type: "observe".into(),
                data,
            };
            self.enqueue(now, reg_id, cmd, None, out);
        }
        // Queued work starts in on_request, after the 2.01 went out.
        Ok(reg_id.to_string())
    }

    /// Paths to observe for a new registration under `auto_observe` (EMQX master semantics).
    fn auto_observe_paths(&self, reg: &Registration) -> Vec<String> {
        let Some(objects) = &reg.objects else {
            return Vec::new();
        };
        let defined = |p: &str| {
            Path::parse(p)
                .ok()
                .and_then(|p| p.object())
                .is_some_and(|o| self.cfg.model.has_object(o))
        };
        match &self.cfg.auto_observe {
            AutoObserve::Off => Vec::new(),
            AutoObserve::All => objects
                .object_list()
                .filter(|p| {
                    let obj = Path::parse(p).ok().and_then(|p| p.object());
                    obj.is_some_and(|o| !AUTO_OBSERVE_SKIP.contains(&o)) && defined(p)
                })
                .map(str::to_string)
                .collect(),
            AutoObserve::Paths(list) => list
                .iter()
                .filter(|p| objects.object_list().any(|o| o == p.as_str()) && defined(p))
                .cloned()
                .collect(),
        }
    }

    fn update(
        &mut self,
        now: Instant,
        peer: Peer,
        reg_id: u64,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<(), Rejection> {
        let mut params = registration::parse_query(Self::queries(pkt), self.cfg.lifetime_range)?;
        let objects = Self::parse_objects(pkt)?;
        let Some(s) = self.sessions.get_mut(&reg_id) else {
            return Err(Rejection {
                code: code::NOT_FOUND,
                reason: "no such registration".into(),
            });
        };
        // Endpoint and version are fixed at Register (TS §6.2.2); ignore them here.
        params.all.retain(|(k, _)| k != "ep" && k != "lwm2m");
        let old_lifetime = s.reg.lifetime;
        s.reg.apply_update(&params);
        let had_objects = objects.is_some();
        if objects.is_some() {
            s.reg.objects = objects;
        }
        let old_addr = s.peer.addr;
        s.peer.listener = peer.listener;
        let expires_at = now + s.reg.lifetime_duration();
        let shorter = s.reg.lifetime < old_lifetime;
        let (t_exp, t_now) = (self.stamp(expires_at), self.stamp(now));
        let Some(s) = self.sessions.get_mut(&reg_id) else {
            return Ok(());
        };
        s.expires_at = t_exp;
        s.last_uplink = t_now;
        let publish = match self.cfg.update_condition {
            UpdatePublishCondition::Always => true,
            UpdatePublishCondition::ContainsObjectList => had_objects,
        };
        if publish {
            let payload = s.reg.event_json("update");
            out.publish(&self.cfg.topics.update, &s.reg.endpoint, s.host(), payload);
        }
        // NAT rebinding: the device's address is wherever its Update came from. Out of
        // `by_addr` under the old address first: the table hashes through the session.
        if old_addr != peer.addr {
            self.unbind_addr(old_addr, reg_id, out);
            if let Some(s) = self.sessions.get_mut(&reg_id) {
                s.peer.addr = peer.addr;
            }
            self.bind_addr(peer.addr, reg_id, out);
        }
        // The pending lifetime timer fires no later than the new expiry unless the lifetime
        // shrank; when it fires early it is set again for `expires_at` (see `on_timeout`). So
        // a registration has one entry however often it updates.
        if shorter {
            self.lifetimes.push(now, expires_at, reg_id);
        }
        Ok(())
    }

    /// LwM2M 1.1 Send (`POST /dp`): published on the notify topic as `send`.
    fn send(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<(), Rejection> {
        let Some(reg) = self.find_addr(peer.addr) else {
            return Err(Rejection {
                code: code::NOT_FOUND,
                reason: "Send from an unregistered address".into(),
            });
        };
        let cf = Self::content_format(pkt).and_then(ContentFormat::from_u16);
        let Some(
            cf @ (ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::LwM2mCbor),
        ) = cf
        else {
            return Err(Rejection {
                code: code::UNSUPPORTED_CONTENT_FORMAT,
                reason: "Send needs SenML JSON/CBOR or LwM2M CBOR".into(),
            });
        };
        let t = self.stamp(now);
        let Some(s) = self.sessions.get_mut(&reg) else {
            return Err(Rejection {
                code: code::NOT_FOUND,
                reason: "gone".into(),
            });
        };
        s.last_uplink = t;
        let types = self.cfg.model.types_for(s.versions());
        let records =
            codec::decode(cf, &Path::ROOT, pkt.payload(), &types).map_err(|e| Rejection {
                code: code::BAD_REQUEST,
                reason: format!("cannot decode {}: {e}", cf.name()),
            })?;
        let mut data = Map::new();
        data.insert("content".into(), json::content_json(&records));
        let payload = envelope::message(&Map::new(), "send", None, Value::Object(data));
        out.publish(&self.cfg.topics.notify, &s.reg.endpoint, s.host(), payload);
        Ok(())
    }

    /// Ends a registration: publishes `deregister` with `reason` and answers every command still
    /// waiting for this device, so none vanishes silently. Its observations end with it.
    fn remove_session(&mut self, reg_id: u64, reason: &str, out: &mut Output) {
        let Some(mut s) = self.sessions.remove(&reg_id) else {
            return;
        };
        self.reassembly.release(reg_id);
        self.unindex_endpoint(&s.reg.endpoint, reg_id);
        self.unbind_addr(s.peer.addr, reg_id, out);
        let w = s.work.take().map(|w| *w).unwrap_or_default();
        if let Some(ex) = &w.inflight {
            self.by_token.remove(&ex.token);
            self.by_mid.remove(&ex.mid);
        }
        for token in w.observations.keys() {
            self.by_token.remove(token);
        }
        let (ep, ph) = (&*s.reg.endpoint, s.host());
        let resp = &self.cfg.topics.response;
        let waiting = w
            .inflight
            .iter()
            .map(|e| &e.cmd)
            .chain(w.queue.iter().map(|q| &q.cmd));
        for cmd in waiting {
            let why = format!("endpoint {reason}");
            let data = envelope::response_data(
                &envelope::req_path_of(&cmd.data),
                code::NOT_FOUND,
                None,
                Some(&why),
            );
            out.publish(
                resp,
                ep,
                ph,
                envelope::message(&cmd.echo, &cmd.msg_type, None, data),
            );
        }
        let mut d = Map::new();
        d.insert("ep".into(), ep.into());
        d.insert("reason".into(), reason.into());
        let payload = envelope::message(&Map::new(), "deregister", None, Value::Object(d));
        out.publish(&self.cfg.topics.deregister, ep, ph, payload);
    }

    // ---------------------------------------------------------------- responses

    fn on_response(&mut self, now: Instant, peer: Peer, pkt: &MessageView, out: &mut Output) {
        let mtype = pkt.msg_type();
        let mid = pkt.message_id();
        let token = <[u8; 8]>::try_from(pkt.token())
            .ok()
            .map(u64::from_be_bytes);
        let found = token.and_then(|t| Some((t, self.by_token.get(&t).copied()?)));
        let Some((token, reg)) = found else {
            match mtype {
                // Unknown CON/NON response (a stale notification, a late separate response):
                // RST tells the device to stop (RFC 7252 §4.2, RFC 7641 §3.6).
                MsgType::Con | MsgType::Non => self.reply_rst(peer, mid, out),
                _ => out.dropped += 1,
            }
            return;
        };
        if mtype == MsgType::Con {
            self.ack(now, peer, mid, out);
        }
        let t = self.stamp(now);
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        s.last_uplink = t;
        // Matched by our 56-bit random token alone: lwm2m-node-lib sometimes answers with a
        // piggybacked ACK carrying its own message id instead of ours (RFC 7252 §4.4 says it must
        // echo ours), and the token leaves no doubt about which request it answers.
        if s.inflight().is_some_and(|e| e.token == token) {
            self.exchange_response(now, reg, pkt, out);
        } else if s
            .work
            .as_ref()
            .is_some_and(|w| w.observations.contains_key(&token))
        {
            self.notification(now, reg, token, pkt, out);
        }
        self.pump(now, reg, out);
    }

    fn exchange_response(&mut self, now: Instant, reg: u64, pkt: &MessageView, out: &mut Output) {
        let resp_code = pkt.code();
        let cf = Self::content_format(pkt);
        let observe = pkt.first_option(opt::OBSERVE).and_then(decode_uint);
        let body = match self.block_step(now, reg, pkt, resp_code, out) {
            BlockProgress::Continue => return,
            BlockProgress::Failed(c, why) => {
                self.reassembly.release(reg);
                self.finish_exchange(reg, out, |ex| {
                    let data = envelope::response_data(
                        &envelope::req_path_of(&ex.cmd.data),
                        c,
                        None,
                        Some(&why),
                    );
                    (ex.cmd.msg_type.as_str(), data)
                });
                return;
            }
            BlockProgress::Whole(b) => Some(b),
            BlockProgress::Single => None,
        };
        let payload = body.as_deref().unwrap_or(pkt.payload());
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some(ex) = s.inflight() else {
            return;
        };
        let observe = observe.or(ex.first_observe);
        let types = self.cfg.model.types_for(s.versions());
        let (c, content, reason) =
            response_content(ex.op, &ex.request, resp_code, cf, payload, &types);
        let req_path = envelope::req_path_of(&ex.cmd.data);
        let respond = |msg_type: &str, seq: Option<u32>| {
            envelope::response(
                &ex.cmd.echo,
                msg_type,
                seq,
                &req_path,
                c,
                &content,
                reason.as_deref(),
            )
        };
        if let Some(seq) = ex.notify_seq {
            // The remaining blocks of a notification: publish the whole as that notification.
            let payload = respond("notify", seq);
            out.publish(&self.cfg.topics.notify, &s.reg.endpoint, s.host(), payload);
            if let Some(ex) = s.take_inflight() {
                self.by_mid.remove(&ex.mid);
                self.by_token.remove(&ex.token);
            }
            return;
        }
        // EMQX 5.x adds seqNum to the first observe response when the device gave a non-zero
        // Observe value.
        let seq = observe.filter(|v| *v != 0 && ex.op.starts_observation());
        let payload = respond(&ex.cmd.msg_type, seq);
        out.publish(
            &self.cfg.topics.response,
            &s.reg.endpoint,
            s.host(),
            payload,
        );
        let Some(ex) = s.take_inflight() else { return };
        self.by_mid.remove(&ex.mid);
        let w = s.work_mut();
        if ex.op.starts_observation() && code::is_success(resp_code) && observe.is_some() {
            // RFC 7641 §3.1: an Observe option in the answer means the observation is on.
            // An older observation of the same target is replaced.
            let same: Vec<u64> = w
                .observations
                .iter()
                .filter(|(_, o)| {
                    o.request.path == ex.request.path && o.request.paths == ex.request.paths
                })
                .map(|(t, _)| *t)
                .collect();
            for t in same {
                w.observations.remove(&t);
                self.by_token.remove(&t);
            }
            w.observations.insert(
                ex.token,
                Box::new(Observation {
                    head: envelope::ResponseHead::new(
                        &ex.cmd.echo,
                        "notify",
                        &envelope::req_path_of(&ex.cmd.data),
                    ),
                    cmd: ex.cmd,
                    op: ex.op,
                    request: ex.request,
                    last_seq: observe,
                    last_at: now,
                }),
            );
        } else {
            self.by_token.remove(&ex.token);
            if ex.op.cancels_observation() && w.observations.remove(&ex.token).is_some() {
                // The cancel reused the observation's token; both are done now.
            }
        }
    }

    fn inflight_mut(&mut self, reg: u64) -> Option<&mut Exchange> {
        self.sessions.get_mut(&reg).and_then(|s| s.inflight_mut())
    }

    /// Block-wise bookkeeping of a response to the exchange in flight: asks for the next Block2 or
    /// sends the next Block1 and says `Continue`, or hands over the whole reassembled body.
    fn block_step(
        &mut self,
        now: Instant,
        reg: u64,
        pkt: &MessageView,
        resp_code: u8,
        out: &mut Output,
    ) -> BlockProgress {
        let block1 = pkt.first_option(opt::BLOCK1).and_then(BlockOpt::decode);
        let block2_raw = pkt.first_option(opt::BLOCK2);
        let block2 = block2_raw.and_then(BlockOpt::decode);
        let etag = pkt.first_option(opt::ETAG);
        let max_body = self.cfg.block_max_body;
        let Some(ex) = self.inflight_mut(reg) else {
            return BlockProgress::Single;
        };
        // Block1: the device acknowledges one block of our request body.
        if let Some(b1) = ex.block1.as_mut() {
            let step = match resp_code {
                code::CONTINUE => Some(b1.on_continue(block1)),
                code::REQUEST_ENTITY_TOO_LARGE => Some(b1.on_too_large(block1)),
                _ => None,
            };
            match step {
                Some(Ok(Block1Step::Send(_))) => {
                    self.transmit_exchange(now, reg, out);
                    return BlockProgress::Continue;
                }
                Some(Err(e)) => {
                    return BlockProgress::Failed(
                        code::REQUEST_ENTITY_INCOMPLETE,
                        format!("block-wise write: {e}"),
                    )
                }
                Some(Ok(Block1Step::Done)) | None => {}
            }
        }
        if !code::is_success(resp_code) {
            return BlockProgress::Single;
        }
        // Block2: the answer comes in blocks; fetch them all before publishing.
        if block2_raw.is_some() && block2.is_none() {
            return BlockProgress::Failed(code::BAD_OPTION, "invalid Block2 option".into());
        }
        let Some(b2) = block2 else {
            return BlockProgress::Single;
        };
        if ex.block2.is_none() {
            if b2.num == 0 && !b2.more {
                return BlockProgress::Single;
            }
            ex.block2 = Some(Block2Assembly::new(max_body));
            ex.first_observe = pkt.first_option(opt::OBSERVE).and_then(decode_uint);
            self.start_transfer(now, reg);
        }
        if !self.reassembly.try_reserve(reg, pkt.payload().len()) {
            return BlockProgress::Failed(
                code::REQUEST_ENTITY_TOO_LARGE,
                "block-wise body over the reassembly budget".into(),
            );
        }
        let Some(ex) = self.inflight_mut(reg) else {
            return BlockProgress::Single;
        };
        let Some(asm) = ex.block2.as_mut() else {
            return BlockProgress::Single;
        };
        match asm.push_with_etag(b2, pkt.payload(), etag) {
            Ok(Block2Step::Next(next)) => {
                ex.next_block2 = Some(next);
                self.transmit_exchange(now, reg, out);
                BlockProgress::Continue
            }
            Ok(Block2Step::Done(body)) => {
                self.reassembly.release(reg);
                BlockProgress::Whole(body)
            }
            Err(e) => {
                let c = match e {
                    crate::coap::block::BlockError::TooLarge => code::REQUEST_ENTITY_TOO_LARGE,
                    _ => code::REQUEST_ENTITY_INCOMPLETE,
                };
                BlockProgress::Failed(c, format!("block-wise read: {e}"))
            }
        }
    }

    /// A notification for an established observation (RFC 7641).
    fn notification(
        &mut self,
        now: Instant,
        reg: u64,
        token: u64,
        pkt: &MessageView,
        out: &mut Output,
    ) {
        let resp_code = pkt.code();
        let seq = pkt.first_option(opt::OBSERVE).and_then(decode_uint);
        let cf = Self::content_format(pkt);
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let host = s.host();
        let Some(w) = s.work.as_deref_mut() else {
            return;
        };
        let Some(obs) = w.observations.get_mut(&token) else {
            return;
        };
        if let (Some(v1), Some(v2)) = (obs.last_seq, seq) {
            if !is_fresh(v1, obs.last_at, v2, now) {
                return; // reordered: an older state than the one already published
            }
        }
        obs.last_seq = seq.or(obs.last_seq);
        obs.last_at = now;
        // A notification too large for one datagram carries its first block; fetch the rest
        // before publishing (RFC 7959 §3.4).
        let block2 = pkt.first_option(opt::BLOCK2).and_then(BlockOpt::decode);
        if let Some(b2) = block2.filter(|b| b.more && code::is_success(resp_code)) {
            let mut assembly = Block2Assembly::new(self.cfg.block_max_body);
            if let Ok(Block2Step::Next(next)) = assembly.push(b2, pkt.payload()) {
                let mut request = obs.request.clone();
                request.observe = None;
                let q = Queued {
                    cmd: obs.cmd.clone(),
                    op: obs.op,
                    request,
                    expires_at: None,
                    continuation: Some(Continuation {
                        assembly,
                        next,
                        seq,
                    }),
                };
                w.queue.push_front(q);
                self.start_transfer(now, reg);
                if !self.reassembly.try_reserve(reg, pkt.payload().len()) {
                    if let Some(w) = self.sessions.get_mut(&reg).and_then(|s| s.work.as_mut()) {
                        w.queue.pop_front();
                    }
                }
                return;
            }
        }
        let versions = s.reg.objects.as_ref().map_or(&[][..], |o| o.versions());
        let types = self.cfg.model.types_for(versions);
        let (c, content, reason) =
            response_content(obs.op, &obs.request, resp_code, cf, pkt.payload(), &types);
        let payload = match seq {
            Some(seq) => obs.head.notify(seq, c, &content, reason.as_deref()),
            None => envelope::response(
                &obs.cmd.echo,
                "notify",
                None,
                &envelope::req_path_of(&obs.cmd.data),
                c,
                &content,
                reason.as_deref(),
            ),
        };
        out.publish(&self.cfg.topics.notify, &s.reg.endpoint, host, payload);
        // An error, or a response without Observe, ends the observation (RFC 7641 §3.2, §4.2).
        if !code::is_success(resp_code) || seq.is_none() {
            w.observations.remove(&token);
            self.by_token.remove(&token);
        }
    }

    /// Ends the exchange in flight for `reg` and publishes what `describe` makes of it on the
    /// response topic.
    fn finish_exchange(
        &mut self,
        reg: u64,
        out: &mut Output,
        describe: impl FnOnce(&Exchange) -> (&str, Value),
    ) {
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some(ex) = s.take_inflight() else {
            return;
        };
        self.reassembly.release(reg);
        self.by_mid.remove(&ex.mid);
        if !s
            .work
            .as_ref()
            .is_some_and(|w| w.observations.contains_key(&ex.token))
        {
            self.by_token.remove(&ex.token);
        }
        let (msg_type, data) = describe(&ex);
        let payload = envelope::message(&ex.cmd.echo, msg_type, None, data);
        out.publish(
            &self.cfg.topics.response,
            &s.reg.endpoint,
            s.host(),
            payload,
        );
    }

    // ---------------------------------------------------------------- commands

    /// A command from MQTT for endpoint `ep` (already extracted from the topic).
    pub fn on_command(&mut self, now: Instant, ep: &str, payload: &[u8], out: &mut Output) {
        self.on_command_with_expiry(now, ep, payload, None, out)
    }

    /// A command with the MQTT 5 Message-Expiry-Interval it had left on arrival: if it has to
    /// wait for a sleeping device longer than that, it is answered `coap_timeout` instead.
    pub fn on_command_with_expiry(
        &mut self,
        now: Instant,
        ep: &str,
        payload: &[u8],
        expiry: Option<Duration>,
        out: &mut Output,
    ) {
        self.start_clock(now);
        let reg = self.find_endpoint(ep);
        let peerhost = reg
            .and_then(|r| self.sessions.get(&r))
            .and_then(|s| s.host());
        let resp = &self.cfg.topics.response;
        let mut fail =
            |echo: &Map<String, Value>, msg_type: &str, req_path: &Value, c: u8, why: &str| {
                let data = envelope::response_data(req_path, c, None, Some(why));
                out.publish(
                    resp,
                    ep,
                    peerhost,
                    envelope::message(echo, msg_type, None, data),
                );
            };
        let cmd = match envelope::parse_command(payload) {
            Ok(c) => c,
            Err(e) => {
                let rp = match &e.data {
                    Some(Value::Object(d)) => envelope::req_path_of(d),
                    _ => Value::Null,
                };
                return fail(
                    &e.echo,
                    e.msg_type.as_deref().unwrap_or("error"),
                    &rp,
                    code::BAD_REQUEST,
                    &e.reason,
                );
            }
        };
        let req_path = envelope::req_path_of(&cmd.data);
        if Op::from_msg_type(&cmd.msg_type).is_none() {
            let why = format!("unknown msgType {:?}", cmd.msg_type);
            return fail(&cmd.echo, &cmd.msg_type, &req_path, code::BAD_REQUEST, &why);
        }
        let Some(reg) = reg else {
            return fail(
                &cmd.echo,
                &cmd.msg_type,
                &req_path,
                code::NOT_FOUND,
                "endpoint not registered",
            );
        };
        self.enqueue(now, reg, cmd, expiry, out);
        self.pump(now, reg, out);
    }

    /// Validates a command for a registered device and queues it; answers it on MQTT when it
    /// cannot be carried out.
    fn enqueue(
        &mut self,
        now: Instant,
        reg: u64,
        cmd: Command,
        expiry: Option<Duration>,
        out: &mut Output,
    ) {
        let Some(s) = self.sessions.get(&reg) else {
            return;
        };
        let Some(op) = Op::from_msg_type(&cmd.msg_type) else {
            return;
        };
        let objects = s.reg.objects.as_ref();
        let announced = objects.map_or(&[][..], |o| o.content_formats());
        let types = self.cfg.model.types_for(s.versions());
        let dev = DeviceContext {
            version: s.reg.version(),
            announced_formats: announced,
            types: &types,
        };
        let built = downlink::build(&cmd, op, &dev);
        let (ep, ph) = (&*s.reg.endpoint, s.host());
        let refuse = |out: &mut Output, c: u8, why: &str| {
            let data =
                envelope::response_data(&envelope::req_path_of(&cmd.data), c, None, Some(why));
            out.publish(
                &self.cfg.topics.response,
                ep,
                ph,
                envelope::message(&cmd.echo, &cmd.msg_type, None, data),
            );
        };
        let request = match built {
            Ok(r) => r,
            Err(why) => return refuse(out, code::BAD_REQUEST, &why),
        };
        if s.work.as_ref().map_or(0, |w| w.queue.len()) >= self.cfg.downlink_queue_max {
            return refuse(out, code::SERVICE_UNAVAILABLE, "downlink queue full");
        }
        let expires_at = [self.cfg.downlink_queue_max_age, expiry]
            .into_iter()
            .flatten()
            .min()
            .map(|a| now + a);
        if let Some(s) = self.sessions.get_mut(&reg) {
            s.work_mut().queue.push_back(Queued {
                cmd,
                op,
                request,
                expires_at,
                continuation: None,
            });
        }
    }

    /// Sends the next queued request if none is in flight (NSTART = 1) and the device is
    /// reachable; answers commands that expired while waiting.
    ///
    /// Every path that ends an exchange, an observation or a queued command ends up here, so
    /// this is where a session's `Work` is released.
    fn pump(&mut self, now: Instant, reg: u64, out: &mut Output) {
        self.pump_next(now, reg, out);
        if let Some(s) = self.sessions.get_mut(&reg) {
            s.settle();
        }
    }

    fn pump_next(&mut self, now: Instant, reg: u64, out: &mut Output) {
        self.expire_queue(now, reg, out);
        let window = self.cfg.qmode_time_window;
        let t_now = self.stamp(now);
        let Some(s) = self.sessions.get(&reg) else {
            return;
        };
        let Some(w) = s.work.as_deref() else {
            return;
        };
        if w.inflight.is_some() || w.queue.is_empty() {
            return;
        }
        if !s.reachable(t_now, window) {
            if let Some(t) = w.queue.iter().filter_map(|q| q.expires_at).min() {
                self.timers.push(now, t, Timer::Queue(reg));
            }
            return;
        }
        // Cancelling an observation reuses its token (RFC 7641 §3.6).
        let reuse = w.queue.front().and_then(|q| {
            if !q.op.cancels_observation() {
                return None;
            }
            w.observations
                .iter()
                .find(|(_, o)| {
                    o.request.path == q.request.path && o.request.paths == q.request.paths
                })
                .map(|(t, _)| *t)
        });
        let token = match reuse {
            Some(t) => t,
            None => self.alloc_token(),
        };
        let block_size = 16usize << self.cfg.block_szx;
        let szx = self.cfg.block_szx;
        let Some(w) = self.sessions.get_mut(&reg).and_then(|s| s.work.as_mut()) else {
            return;
        };
        let Some(q) = w.queue.pop_front() else {
            return;
        };
        let Queued {
            cmd,
            op,
            mut request,
            continuation,
            ..
        } = q;
        let block1 = (request.payload.len() > block_size)
            .then(|| Block1Sender::new(std::mem::take(&mut request.payload), szx));
        let (block2, next_block2, notify_seq) = match continuation {
            Some(c) => (Some(c.assembly), Some(c.next), Some(c.seq)),
            None => (None, None, None),
        };
        w.inflight = Some(Box::new(Exchange {
            cmd,
            op,
            request,
            token,
            mid: 0,
            bytes: Vec::new(),
            retransmits: 0,
            timeout: Duration::ZERO,
            deadline: now,
            state: ExchangeState::AwaitAck,
            block1,
            block2,
            next_block2,
            notify_seq,
            first_observe: None,
        }));
        self.by_token.insert(token, reg);
        self.transmit_exchange(now, reg, out);
    }

    /// Sends the exchange in flight (again, for its next block) as a fresh CON: new message id,
    /// fresh retransmission timer, same token.
    fn transmit_exchange(&mut self, now: Instant, reg: u64, out: &mut Output) {
        let mid = self.alloc_mid();
        let timeout = self.cfg.transmission.initial_timeout(self.rng.gen::<f64>());
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        // Field by field: the exchange is borrowed mutably next to the registration and peer.
        let Some(ex) = s.work.as_mut().and_then(|w| w.inflight.as_deref_mut()) else {
            return;
        };
        let alt = s.reg.objects.as_ref().map_or("/", |o| o.alternate_path());
        let blocks = Blocks {
            block1: ex.block1.as_ref().map(|b| {
                let (opt, slice) = b.block(b.current());
                (opt, slice, b.size1())
            }),
            block2: ex.next_block2,
        };
        ex.request
            .encode_blocks(&mut self.buf, mid, &ex.token.to_be_bytes(), alt, &blocks);
        self.by_mid.remove(&ex.mid);
        ex.mid = mid;
        ex.bytes = self.buf.clone();
        ex.retransmits = 0;
        ex.timeout = timeout;
        ex.deadline = now + timeout;
        ex.state = ExchangeState::AwaitAck;
        out.transmits.push(Transmit {
            peer: s.peer,
            bytes: ex.bytes.clone(),
        });
        let (token, deadline) = (ex.token, ex.deadline);
        self.by_mid.insert(mid, reg);
        self.timers
            .push(now, deadline, Timer::Exchange { reg, token });
    }

    /// Answers and drops the waiting commands whose max age has passed.
    fn expire_queue(&mut self, now: Instant, reg: u64, out: &mut Output) {
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some(w) = s.work.as_mut() else {
            return;
        };
        if !w
            .queue
            .iter()
            .any(|q| q.expires_at.is_some_and(|t| t <= now))
        {
            return;
        }
        let (expired, kept): (VecDeque<Queued>, VecDeque<Queued>) = std::mem::take(&mut w.queue)
            .into_iter()
            .partition(|q| q.expires_at.is_some_and(|t| t <= now));
        w.queue = kept;
        for q in expired {
            let mut d = q.cmd.data.clone();
            d.insert("reason".into(), "expired in queue".into());
            let payload = envelope::message(&q.cmd.echo, "coap_timeout", None, Value::Object(d));
            out.publish(
                &self.cfg.topics.response,
                &s.reg.endpoint,
                s.host(),
                payload,
            );
        }
    }

    // ---------------------------------------------------------------- timers

    pub fn on_timeout(&mut self, now: Instant, out: &mut Output) {
        self.start_clock(now);
        self.dedup.expire(now);
        let t_now = self.stamp(now);
        while let Some(reg) = self.lifetimes.pop_due(now) {
            let Some(s) = self.sessions.get(&reg) else {
                continue;
            };
            if s.expires_at <= t_now {
                self.remove_session(reg, "expired", out);
            } else if let Some(e) = self.epoch {
                // An Update moved the expiry after this timer was set: set it again.
                let at = e + Duration::from_nanos(s.expires_at);
                self.lifetimes.push(now, at, reg);
            }
        }
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Exchange { reg, token } => self.exchange_timer(now, reg, token, out),
                Timer::Queue(reg) => self.pump(now, reg, out),
                Timer::Transfers => self.expire_transfers(now, out),
            }
        }
    }

    /// Accounts a new block-wise reassembly and makes sure the expiry sweep runs.
    fn start_transfer(&mut self, now: Instant, reg: u64) {
        if self.reassembly.is_empty() {
            self.timers
                .push(now, now + Duration::from_secs(1), Timer::Transfers);
        }
        self.reassembly.insert(now, reg);
    }

    /// Partial block-wise transfers expire after EXCHANGE_LIFETIME even if the device keeps
    /// answering slowly: the exchange is answered `4.08` and its memory released.
    fn expire_transfers(&mut self, now: Instant, out: &mut Output) {
        let lifetime = self.cfg.transmission.exchange_lifetime();
        for reg in self.reassembly.expired(now, lifetime) {
            self.finish_exchange(reg, out, |ex| {
                let why = "block-wise transfer expired";
                let data = envelope::response_data(
                    &envelope::req_path_of(&ex.cmd.data),
                    code::REQUEST_ENTITY_INCOMPLETE,
                    None,
                    Some(why),
                );
                (ex.cmd.msg_type.as_str(), data)
            });
            self.pump(now, reg, out);
        }
        if !self.reassembly.is_empty() {
            self.timers
                .push(now, now + Duration::from_secs(1), Timer::Transfers);
        }
    }

    fn exchange_timer(&mut self, now: Instant, reg: u64, token: u64, out: &mut Output) {
        let max = self.cfg.transmission.max_retransmit;
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some(ex) = s
            .work
            .as_mut()
            .and_then(|w| w.inflight.as_deref_mut())
            .filter(|e| e.token == token && e.deadline <= now)
        else {
            return;
        };
        if ex.state == ExchangeState::AwaitAck && ex.retransmits < max {
            ex.retransmits += 1;
            ex.timeout *= 2;
            ex.deadline = now + ex.timeout;
            out.transmits.push(Transmit {
                peer: s.peer,
                bytes: ex.bytes.clone(),
            });
            let d = ex.deadline;
            self.timers.push(now, d, Timer::Exchange { reg, token });
            return;
        }
        self.finish_exchange(reg, out, |ex| {
            let mut d = ex.cmd.data.clone();
            if ex.state == ExchangeState::AwaitSeparate {
                d.insert(
                    "reason".into(),
                    "no separate response after empty ACK".into(),
                );
            }
            ("coap_timeout", Value::Object(d))
        });
        self.pump(now, reg, out);
    }
}

/// What a response means for a block-wise exchange.
enum BlockProgress {
    /// Not block-wise (or a single block): use the datagram's payload.
    Single,
    /// More blocks are on their way; nothing to publish yet.
    Continue,
    /// The reassembled body of a Block2 transfer.
    Whole(Vec<u8>),
    /// The transfer failed: publish this code and reason.
    Failed(u8, String),
}

/// Maps a device response to (code, content, reason) for the MQTT message.
fn response_content(
    op: Op,
    req: &Request,
    resp_code: u8,
    cf: Option<u16>,
    payload: &[u8],
    types: &dyn crate::lwm2m::ResourceTypes,
) -> (u8, Content, Option<String>) {
    if !code::is_success(resp_code) {
        return (resp_code, Content::None, None);
    }
    if op == Op::Discover {
        let text = String::from_utf8_lossy(payload);
        let links = link_format::discover_links(&text)
            .into_iter()
            .map(Value::String)
            .collect();
        return (resp_code, Content::Json(Value::Array(links)), None);
    }
    if !op.reads_content() {
        return (resp_code, Content::None, None);
    }
    if payload.is_empty() {
        return (resp_code, Content::Records(Vec::new()), None);
    }
    // No Content-Format means text/plain: LwM2M 1.0 clients such as lwm2m-node-lib omit it.
    let n = cf.unwrap_or(0);
    let Some(f) = ContentFormat::from_u16(n) else {
        return (
            code::BAD_REQUEST,
            Content::None,
            Some(format!("unsupported content format {n}")),
        );
    };
    match codec::decode(f, &req.path, payload, types) {
        Ok(records) => (resp_code, Content::Records(records), None),
        Err(e) => (
            code::BAD_REQUEST,
            Content::None,
            Some(format!("cannot decode {} payload: {e}", f.name())),
        ),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A million of these live at once: growth here is memory per device.
    #[test]
    fn an_idle_session_stays_small() {
        assert!(std::mem::size_of::<Session>() <= 208);
        let mut s = Session {
            reg: Registration::new("ep", 60, "1.1", &Default::default(), None),
            peer: Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], 1))),
            expires_at: 0,
            last_uplink: 0,
            work: None,
        };
        assert!(s.inflight().is_none());
        assert!(s.work_mut().is_idle());
        assert!(s.work.is_some());
        s.settle();
        assert!(s.work.is_none(), "an empty Work is released");
    }
}
