//! The per-worker LwM2M server state machine, sans-IO.
//!
//! A `Shard` owns the sessions of the endpoints routed to it: registration, the one confirmable
//! request in flight (NSTART = 1), the downlink FIFO (queue mode), the observations, plus the
//! message-id dedup cache and its deadlines. It is driven by three calls, each taking `now` from
//! the caller: [`Shard::on_datagram`], [`Shard::on_command`] and [`Shard::on_timeout`]; everything
//! it wants done (datagrams to send, MQTT messages, routing-index changes) is appended to an
//! [`Output`]. It never reads a clock, touches a socket, a channel or a lock, so tests drive it
//! with a fake clock and a lossy wire.
//!
//! The work is split by LwM2M interface, one file each, all methods of [`Shard`]:
//! - this file: datagram dispatch and dedup, the CoAP replies, timers;
//! - `register.rs`: the registration interface (Register, Update, De-register) and Send;
//! - `queue.rs`: commands in, the downlink queue, queue mode;
//! - `exchange.rs`: the request in flight: transmission, retransmission, block-wise, its answer;
//! - `observe.rs`: notifications;
//! - `index.rs` keeps the sessions and every lookup table in step; `session.rs` is the data.
//!
//! Identifiers the gateway chooses carry the shard number ([`crate::core::ids`]) so the event
//! loop can route replies without a lookup. Responses and notifications are matched by token
//! alone (never by source address), so NAT rebinding does not break observations.

mod block1;
mod durable;
mod exchange;
mod index;
mod observe;
mod query;
mod queue;
mod register;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::coap::block::{BlockBudget, BlockOpt, Reassembly};
use crate::coap::{code, decode_uint, opt, DedupCache, MessageBuilder, MessageView, MsgType};

use super::ids::{MidAllocator, RegId, ShardId, Token};
use super::settings::ShardConfig;
use super::timers::{Expiries, Timers};
use super::uplink::{self, Uplink};

pub use super::peer::Peer;
pub use super::uplink::Publish;
pub use query::{Census, DeviceFilter, DeviceInfo, DevicePage};

pub use durable::{
    IdentityNames, ImportError, ImportReport, JournalReport, NoIdentities, SnapshotKind,
};

use block1::Block1In;
use index::Sessions;
use session::{nanos, ExchangeState, Session, Stamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Vec<u8>,
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
    /// Uplinks refused because the sender's identity may not act for the endpoint (answered
    /// 4.03 when they were requests, dropped otherwise).
    pub forbidden: u64,
    /// Registers of new endpoints refused because the shard holds its most (5.03).
    pub refused_full: u64,
    /// What happened, for the metrics (issue 13): counted here as a side effect of what the
    /// shard does anyway, so recording costs an increment.
    pub stats: ShardStats,
    /// Commands that ended: their operation and how.
    pub commands: Vec<CommandEnd>,
}

/// Counters of one round of a shard's work ([`Output::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub registered: u64,
    pub updated: u64,
    pub deregistered: u64,
    pub expired: u64,
    pub notifications: u64,
    pub retransmissions: u64,
    pub timeouts: u64,
}

/// How a command ended ([`Output::commands`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandEnd {
    /// `None`: not a command the gateway knows (answered 4.00).
    pub op: Option<crate::core::command::Op>,
    pub result: CommandResult,
    /// From the request's first transmission to the device's answer.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandResult {
    /// The device's answer, or the gateway's own refusal, with its code.
    Code(u8),
    Timeout,
    Reset,
}

impl Output {
    pub fn clear(&mut self) {
        self.transmits.clear();
        self.publishes.clear();
        self.index.clear();
        self.dropped = 0;
        self.forbidden = 0;
        self.refused_full = 0;
        self.stats = ShardStats::default();
        self.commands.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Exchange {
        reg: RegId,
        token: Token,
    },
    /// The oldest command waiting for a sleeping device may have expired.
    Queue(RegId),
    /// Block-wise transfers may have outlived EXCHANGE_LIFETIME.
    Transfers,
}

pub struct Shard {
    id: ShardId,
    cfg: Arc<ShardConfig>,
    sessions: Sessions,
    dedup: DedupCache<Peer>,
    /// Memory held by Block2 reassembly, per registration and in total.
    reassembly: Reassembly<RegId>,
    /// Request bodies arriving in Block1 blocks, and the memory they hold.
    incoming: block1::IncomingTransfers,
    incoming_budget: Reassembly<Peer>,
    timers: Timers<Timer>,
    /// Registration lifetimes, apart from `timers`: one 16-byte entry per registration.
    lifetimes: Expiries,
    /// Origin of the session [`Stamp`]s: the first `now` the shard was given.
    epoch: Option<Instant>,
    next_reg_seq: u64,
    mids: MidAllocator,
    /// The number of the last snapshot saved; a journal names the snapshot it follows.
    generation: u64,
    /// The journal's changed registrations taken from the log and not yet all written out
    /// (from `changed_at` on): [`Shard::export_changes`] writes them a bounded number at a time.
    changed: Vec<RegId>,
    changed_at: usize,
    rng: SmallRng,
    buf: Vec<u8>,
}

/// Seconds a device refused for want of room is told to wait before registering again.
const RETRY_WHEN_FULL_S: u32 = 60;

fn reason_bytes(r: &str) -> &[u8] {
    // Diagnostic payloads (RFC 7252 §5.5.2) are for humans; keep them short.
    &r.as_bytes()[..r.len().min(128)]
}

fn content_format(pkt: &MessageView) -> Option<u16> {
    pkt.first_option(opt::CONTENT_FORMAT)
        .and_then(decode_uint)
        .and_then(|v| u16::try_from(v).ok())
}

impl Shard {
    /// `seed` feeds the token / retransmission-jitter RNG (fixed in tests, random in production).
    pub fn new(id: ShardId, cfg: Arc<ShardConfig>, seed: u64) -> Shard {
        let lifetime = cfg.transmission.exchange_lifetime();
        let budget = BlockBudget {
            per_peer_max: cfg.block_max_body,
            total_max: cfg.block_total_max,
        };
        let mut shard = Shard {
            id,
            sessions: Sessions::default(),
            dedup: DedupCache::new(lifetime, cfg.dedup_max_entries),
            reassembly: Reassembly::new(budget),
            incoming: Default::default(),
            incoming_budget: Reassembly::new(budget),
            timers: Timers::new(),
            lifetimes: Expiries::default(),
            epoch: None,
            next_reg_seq: 1,
            generation: 0,
            changed: Vec::new(),
            changed_at: 0,
            mids: MidAllocator::new(id, cfg.shards as usize),
            rng: SmallRng::seed_from_u64(seed),
            buf: Vec::with_capacity(256),
            cfg,
        };
        let n = shard.cfg.expected_per_shard;
        if n > 0 {
            shard.sessions.reserve(n);
            shard.dedup.reserve(n);
            shard.lifetimes.reserve(n);
        }
        shard
    }

    pub fn id(&self) -> ShardId {
        self.id
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

    fn alloc_token(&mut self) -> Token {
        loop {
            let t = Token::new(self.rng.gen(), self.id);
            if !self.sessions.token_in_use(t) {
                return t;
            }
        }
    }

    /// Publishes `ev` about the device of session `s`.
    fn emit(cfg: &ShardConfig, s: &Session, ev: Uplink, out: &mut Output) {
        Self::publish(cfg, &s.reg.endpoint, s.host(), ev, out);
    }

    /// Renders `ev` about `endpoint` into `out` and counts it for the metrics: every uplink of
    /// the shard goes through here, so nothing is published uncounted.
    fn publish(
        cfg: &ShardConfig,
        endpoint: &str,
        host: Option<std::net::IpAddr>,
        ev: Uplink,
        out: &mut Output,
    ) {
        let ended = |cmd: &crate::core::command::CommandHead, result| CommandEnd {
            op: crate::core::command::Op::named(&cmd.msg_type),
            result,
            rtt: None,
        };
        match &ev {
            Uplink::Registered(_) => out.stats.registered += 1,
            Uplink::Deregistered { reason, .. } if *reason == "expired" => out.stats.expired += 1,
            Uplink::Deregistered { .. } => out.stats.deregistered += 1,
            Uplink::Notify { .. } => out.stats.notifications += 1,
            // A response's end is counted where its round trip is known (exchange.rs).
            Uplink::Refused { cmd, code, .. } => {
                out.commands.push(ended(cmd, CommandResult::Code(*code)))
            }
            Uplink::TimedOut { cmd, .. } => {
                out.stats.timeouts += 1;
                out.commands.push(ended(cmd, CommandResult::Timeout));
            }
            Uplink::Reset(cmd) => out.commands.push(ended(cmd, CommandResult::Reset)),
            _ => {}
        }
        out.publishes
            .push(uplink::render(&cfg.topics, endpoint, host, &ev));
    }

    /// Any datagram from the device: it is awake (queue mode), so waiting commands may go.
    fn touch(&mut self, now: Instant, reg: RegId, out: &mut Output) {
        let t = self.stamp(now);
        if let Some(s) = self.sessions.get_mut(reg) {
            s.last_uplink = t;
        }
        self.pump(now, reg, out);
    }

    // ---------------------------------------------------------------- datagrams

    pub fn on_datagram(&mut self, now: Instant, peer: Peer, bytes: &[u8], out: &mut Output) {
        self.start_clock(now);
        // The zero-copy view: the datagram was already checked by the event loop's router, and
        // parsing it again this way costs a third of a full parse and allocates nothing
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
            reply_rst(peer, mid, out);
        } else {
            out.dropped += 1;
        }
    }

    fn ack(&mut self, now: Instant, peer: Peer, mid: u16, out: &mut Output) {
        let mut b = Vec::with_capacity(4);
        MessageBuilder::new(&mut b, MsgType::Ack, code::EMPTY, mid, &[]).finish();
        self.dedup.insert(now, peer, mid, &b);
        out.transmits.push(Transmit { peer, bytes: b });
    }

    /// A request from a device: answered here (piggybacked on the ACK of a CON, or as a NON),
    /// with the registration interface's answer or an error and its reason.
    fn on_request(&mut self, now: Instant, peer: Peer, pkt: &MessageView, out: &mut Output) {
        let (assembled, view);
        let (request, block1) = match self.block1_request(now, peer, pkt) {
            Block1In::Whole => (pkt, None),
            Block1In::Continue(b) => {
                return self.answer(now, peer, pkt, (code::CONTINUE, None, None), Some(b), out)
            }
            Block1In::Refused(r) => {
                let answer = (r.code, None, Some(r.reason));
                return self.answer(now, peer, pkt, answer, None, out);
            }
            Block1In::Assembled(bytes, b) => {
                assembled = bytes;
                match MessageView::parse(&assembled) {
                    Ok(v) => {
                        view = v;
                        (&view, Some(b))
                    }
                    Err(_) => {
                        let answer = (code::BAD_REQUEST, None, Some("malformed".to_string()));
                        return self.answer(now, peer, pkt, answer, None, out);
                    }
                }
            }
        };
        let answer = match self.handle_request(now, peer, request, out) {
            Ok((c, loc)) => (c, loc, None),
            Err(r) => (r.code, None, Some(r.reason)),
        };
        self.answer(now, peer, pkt, answer, block1, out);
        // Commands queued for a device that just spoke may go now (after our answer).
        if let Some(reg) = self.sessions.find_addr(peer.addr) {
            self.pump(now, reg, out);
        }
    }

    /// Answers request `pkt` with (code, Location-Path registration, diagnostic reason) and the
    /// Block1 option of a block-wise request.
    fn answer(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        (resp_code, location, reason): (u8, Option<RegId>, Option<String>),
        block1: Option<BlockOpt>,
        out: &mut Output,
    ) {
        let con = pkt.msg_type() == MsgType::Con;
        let mut b = Vec::with_capacity(32);
        let (t, mid) = if con {
            (MsgType::Ack, pkt.message_id())
        } else {
            (MsgType::Non, self.mids.alloc())
        };
        let mut m = MessageBuilder::new(&mut b, t, resp_code, mid, pkt.token());
        let id = location.map(|r| r.to_string());
        if let Some(id) = &id {
            m = m.options(opt::LOCATION_PATH, [b"rd".as_slice(), id.as_bytes()]);
        }
        if resp_code == code::SERVICE_UNAVAILABLE {
            // RFC 7252 §5.9.3.4: Max-Age says when to try again.
            m = m.uint_option(opt::MAX_AGE, RETRY_WHEN_FULL_S);
        }
        let mut tmp = [0u8; 3];
        if let Some(b1) = block1 {
            m = m.option(opt::BLOCK1, b1.encode(&mut tmp));
        }
        m.payload(reason.as_deref().map(reason_bytes).unwrap_or_default());
        if con {
            self.dedup.insert(now, peer, pkt.message_id(), &b);
        }
        out.transmits.push(Transmit { peer, bytes: b });
    }

    fn on_empty(&mut self, now: Instant, peer: Peer, pkt: &MessageView, out: &mut Output) {
        let mid = pkt.message_id();
        let mtype = pkt.msg_type();
        if matches!(mtype, MsgType::Con | MsgType::Non) {
            // CoAP ping (or any empty CON/NON): answered with RST.
            return reply_rst(peer, mid, out);
        }
        let Some(reg) = self.sessions.by_mid(mid) else {
            out.dropped += 1;
            return;
        };
        if !self.sent_by_registrant(reg, &peer, out) {
            return;
        }
        let awaiting_ack = self.sessions.get(reg).and_then(|s| s.inflight());
        if !awaiting_ack.is_some_and(|e| e.mid == mid && e.state == ExchangeState::AwaitAck) {
            return;
        }
        if mtype == MsgType::Rst {
            self.finish_exchange(reg, exchange::Ending::Reset, out);
            return self.touch(now, reg, out);
        }
        self.on_empty_ack(now, reg, out);
    }

    fn on_response(&mut self, now: Instant, peer: Peer, pkt: &MessageView, out: &mut Output) {
        let mtype = pkt.msg_type();
        let mid = pkt.message_id();
        let found =
            Token::from_bytes(pkt.token()).and_then(|t| Some((t, self.sessions.by_token(t)?)));
        let Some((token, reg)) = found else {
            match mtype {
                // Unknown CON/NON response (a stale notification, a late separate response):
                // RST tells the device to stop (RFC 7252 §4.2, RFC 7641 §3.6).
                MsgType::Con | MsgType::Non => reply_rst(peer, mid, out),
                _ => out.dropped += 1,
            }
            return;
        };
        if !self.sent_by_registrant(reg, &peer, out) {
            return;
        }
        if mtype == MsgType::Con {
            self.ack(now, peer, mid, out);
        }
        let t = self.stamp(now);
        let Some(s) = self.sessions.get_mut(reg) else {
            return;
        };
        s.last_uplink = t;
        // Matched by our 56-bit random token alone: lwm2m-node-lib sometimes answers with a
        // piggybacked ACK carrying its own message id instead of ours (RFC 7252 §4.4 says it must
        // echo ours), and the token leaves no doubt about which request it answers.
        if s.inflight().is_some_and(|e| e.token == token) {
            self.exchange_response(now, reg, pkt, out);
        } else if s.observation(token).is_some() {
            self.notification(now, reg, token, pkt, out);
        }
        self.pump(now, reg, out);
    }

    /// The identity that registered from `old` now speaks from `new` (a new DTLS handshake after
    /// NAT rebinding): its registration follows, so downlinks reach the new address at once.
    /// Nothing happens if `old` holds no registration of that same identity.
    pub fn rebind(&mut self, old: Peer, new: Peer, out: &mut Output) {
        let Some(reg) = self.sessions.find_addr(old.addr) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(reg) else {
            return;
        };
        if !s.peer.same_identity(&new) || s.peer.listener != old.listener {
            return;
        }
        s.peer.listener = new.listener;
        self.sessions.touch(reg);
        self.sessions.move_to(reg, new.addr, &mut out.index);
    }

    /// Whether `peer` is the identity that registered `reg` (see [`crate::core::authorize`]);
    /// counts it when not.
    fn sent_by_registrant(&self, reg: RegId, peer: &Peer, out: &mut Output) -> bool {
        let ok = self
            .sessions
            .get(reg)
            .is_some_and(|s| s.peer.same_identity(peer));
        if !ok {
            out.forbidden += 1;
        }
        ok
    }

    // ---------------------------------------------------------------- timers

    pub fn on_timeout(&mut self, now: Instant, out: &mut Output) {
        self.start_clock(now);
        self.dedup.expire(now);
        let t_now = self.stamp(now);
        while let Some(id) = self.lifetimes.pop_due(now) {
            let reg = RegId::from_u64(id);
            let Some(s) = self.sessions.get(reg) else {
                continue;
            };
            if s.expires_at <= t_now {
                self.remove_session(reg, "expired", out);
            } else if let Some(e) = self.epoch {
                // An Update moved the expiry after this timer was set: set it again.
                let at = e + Duration::from_nanos(s.expires_at);
                self.lifetimes.push(now, at, id);
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
}

fn reply_rst(peer: Peer, mid: u16, out: &mut Output) {
    let mut b = Vec::with_capacity(4);
    MessageBuilder::new(&mut b, MsgType::Rst, code::EMPTY, mid, &[]).finish();
    out.transmits.push(Transmit { peer, bytes: b });
}

#[cfg(test)]
mod tests {
    use super::session::Work;
    use super::*;
    use crate::core::registration::Registration;

    /// A million of these live at once: growth here is memory per device.
    #[test]
    fn an_idle_session_stays_small() {
        assert!(
            std::mem::size_of::<Session>() <= 208,
            "{}",
            std::mem::size_of::<Session>()
        );
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
        let _ = Work::default();
    }
}
