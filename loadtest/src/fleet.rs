//! Simulated LwM2M devices: one I/O thread owns a share of the fleet and its transport.
//!
//! Devices register (`POST /rd`), update before their lifetime runs out, deregister, answer the
//! gateway's requests (read: text/plain for one resource, SenML JSON for instances and objects;
//! write, write-attributes, execute: 2.04; create 2.01; delete 2.02; discover: link format), keep
//! observations (token + path) and emit notifications (NON, or CON with `--con`) whose timestamp
//! resource (`/3/0/13` or `/3303/0/5700`) carries the send time in nanoseconds since the harness
//! started. The device's own CONs are retransmitted RFC 7252 style (2 s, doubling, 4 times).
//!
//! Every datagram is built and parsed with `coap-lite` (see `wire.rs` for why the devices do not
//! use the gateway's codec, and what that costs).
//!
//! With DTLS (`--dtls`), a device's registration starts with a PSK handshake (the gateway
//! crate's sans-IO client, one per device, kept for the session); every CoAP datagram it sends
//! is sealed by that client and every datagram it receives is opened by it. Handshake flights
//! are retransmitted after 1 s, doubling, 4 times; a handshake counts in `--window` like the
//! Register that follows it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::option_value::OptionValueU16;
use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use crossbeam_channel::Receiver;
use lwm2m_gateway::dtls::client::Client;
use lwm2m_gateway::dtls::Suite;

use crate::net::{RxBatch, Transport, TxBatch};
use crate::stats::{now_ns, record, Stats};
use crate::wire;

const CREATED: MessageClass = MessageClass::Response(ResponseType::Created);
const DELETED: MessageClass = MessageClass::Response(ResponseType::Deleted);
const CHANGED: MessageClass = MessageClass::Response(ResponseType::Changed);
const CONTENT: MessageClass = MessageClass::Response(ResponseType::Content);
const NOT_FOUND: MessageClass = MessageClass::Response(ResponseType::NotFound);

const ACK_TIMEOUT_NS: u64 = 2_000_000_000;
const MAX_RETRANSMIT: u8 = 4;
/// DTLS handshake flights: the first retransmission after 1 s, then doubling, 4 in all (given
/// up 31 s after the last new flight, about the gateway's 30 s handshake timeout).
const HS_TIMEOUT_NS: u64 = 1_000_000_000;
const HS_MAX_RETRANSMIT: u8 = 4;
const LINKS: &[u8] = b"</>;rt=\"oma.lwm2m\",</1/0>,</3/0>,</4/0>,</3303/0>";

/// Instructions from the scenario driver.
pub enum Ctl {
    /// Register this thread's share of devices `0..upto` at `rate`/s in total (0 = as fast as
    /// `window` outstanding Registers allow).
    Register {
        upto: u32,
        rate: f64,
    },
    /// Emit notifications at `rate`/s in total over the observed devices for `duration`.
    Notify {
        rate: f64,
        duration: Duration,
    },
    /// Deregister and register again `rate` devices per second in total (0 = off).
    Churn {
        rate: f64,
    },
    /// Deregister every registered device (window-limited).
    DeregisterAll,
    Stop,
}

#[derive(Clone)]
pub struct FleetConfig {
    pub n: u32,
    pub threads: u32,
    pub thread: u32,
    pub prefix: String,
    pub lifetime: u32,
    pub con: bool,
    pub window: usize,
    pub stats: Arc<Stats>,
    /// DTLS: the suite the devices offer; `None` = plain CoAP.
    pub dtls: Option<Suite>,
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Idle,
    /// DTLS handshake in progress (the Register follows).
    Handshaking,
    Registering,
    Registered,
    Deregistering,
}

#[derive(Clone, Copy)]
struct ResPath {
    obj: u16,
    inst: Option<u16>,
    res: Option<u16>,
}

struct Obs {
    token: [u8; 8],
    tkl: u8,
    path: ResPath,
    seq: u32,
}

#[derive(Default)]
struct Device {
    state: State,
    /// Register again as soon as the Deregister is answered (churn).
    rereg: bool,
    gen: u16,
    mid: u16,
    loc_len: u8,
    loc: [u8; 30],
    obs: Vec<Obs>,
    /// DTLS: the device's client, from its first ClientHello until its session is closed.
    dtls: Option<Box<Client>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Register,
    Update,
    Deregister,
    Notify {
        token: [u8; 8],
        tkl: u8,
        ts: u64,
        seq: u32,
    },
}

struct Pending {
    kind: Kind,
    t0: u64,
    next: u64,
    attempts: u8,
}

/// A DTLS handshake in progress: when its first ClientHello went out, when to send the last
/// flight again, and how often it was.
struct Handshake {
    t0: u64,
    next: u64,
    attempts: u8,
}

/// A paced stream: how many events are due by `now`.
struct Pace {
    rate: f64,
    t0: u64,
    until: u64,
    done: u64,
}

impl Pace {
    fn due(&self, now: u64) -> u64 {
        let t = now.min(self.until).saturating_sub(self.t0);
        ((t as f64 * self.rate / 1e9) as u64).saturating_sub(self.done)
    }
}

pub struct Fleet {
    cfg: FleetConfig,
    s: Arc<Stats>,
    devs: Vec<Device>,
    pending: HashMap<u64, Pending>,
    /// DTLS handshakes in progress, by local device (at most about `window`).
    handshakes: HashMap<u32, Handshake>,
    scratch: Vec<u8>,
    /// DTLS: the application data of one datagram, and where each record's ends.
    opened: Vec<u8>,
    opened_ends: Vec<usize>,
    // registration storm
    reg_next: u32,
    reg_upto: u32,
    reg_pace: Option<Pace>,
    reg_inflight: usize,
    // notifications
    notify: Option<Pace>,
    observed: Vec<u32>,
    obs_cursor: usize,
    // updates: (due, local index, generation)
    updates: BinaryHeap<Reverse<(u64, u32, u16)>>,
    churn: Option<Pace>,
    churn_cursor: u32,
    dereg_all: bool,
    dereg_cursor: u32,
    other_inflight: usize,
    next_retx_scan: u64,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Fleet {
        let local = (cfg.n.saturating_sub(cfg.thread)).div_ceil(cfg.threads);
        Fleet {
            s: cfg.stats.clone(),
            devs: (0..local).map(|_| Device::default()).collect(),
            cfg,
            pending: HashMap::new(),
            handshakes: HashMap::new(),
            scratch: Vec::with_capacity(1024),
            opened: Vec::with_capacity(2048),
            opened_ends: Vec::new(),
            reg_next: 0,
            reg_upto: 0,
            reg_pace: None,
            reg_inflight: 0,
            notify: None,
            observed: Vec::new(),
            obs_cursor: 0,
            updates: BinaryHeap::new(),
            churn: None,
            churn_cursor: 0,
            dereg_all: false,
            dereg_cursor: 0,
            other_inflight: 0,
            next_retx_scan: 0,
        }
    }

    fn global(&self, l: u32) -> u32 {
        l * self.cfg.threads + self.cfg.thread
    }

    fn key(dev: u32, mid: u16) -> u64 {
        ((dev as u64) << 16) | mid as u64
    }

    /// The I/O loop; returns when told to stop.
    pub fn run(mut self, mut tr: Box<dyn Transport>, ctl: Receiver<Ctl>) {
        let mut rx = RxBatch::new();
        let mut tx = TxBatch::new();
        loop {
            let mut stop = false;
            while let Ok(c) = ctl.try_recv() {
                let now = now_ns();
                let share = self.cfg.threads as f64;
                match c {
                    Ctl::Register { upto, rate } => {
                        self.reg_upto =
                            (upto.saturating_sub(self.cfg.thread)).div_ceil(self.cfg.threads);
                        self.reg_upto = self.reg_upto.min(self.devs.len() as u32);
                        self.reg_pace = (rate > 0.0).then(|| Pace {
                            rate: rate / share,
                            t0: now,
                            until: u64::MAX,
                            done: 0,
                        });
                    }
                    Ctl::Notify { rate, duration } => {
                        self.notify = Some(Pace {
                            rate: rate / share,
                            t0: now,
                            until: now + duration.as_nanos() as u64,
                            done: 0,
                        })
                    }
                    Ctl::Churn { rate } => {
                        self.churn = (rate > 0.0).then(|| Pace {
                            rate: rate / share,
                            t0: now,
                            until: u64::MAX,
                            done: 0,
                        })
                    }
                    Ctl::DeregisterAll => {
                        self.dereg_all = true;
                        self.churn = None;
                        self.notify = None;
                    }
                    Ctl::Stop => stop = true,
                }
            }
            if stop {
                break;
            }
            let mut got = 0;
            for _ in 0..16 {
                let k = tr.recv(&mut rx);
                got += k;
                for i in 0..k {
                    let (dev, data) = rx.get(i);
                    self.on_datagram(dev, data, &mut tx);
                }
                if tx.len() >= 256 {
                    self.flush(&mut *tr, &mut tx);
                }
                if k < crate::net::BATCH {
                    break;
                }
            }
            let now = now_ns();
            self.tick(now, &mut tx);
            self.flush(&mut *tr, &mut tx);
            if got == 0 {
                let busy = self.notify.is_some()
                    || self.churn.is_some()
                    || (self.reg_pace.is_some() && self.reg_next < self.reg_upto);
                tr.wait(Duration::from_millis(if busy { 1 } else { 20 }));
            }
        }
    }

    fn flush(&mut self, tr: &mut dyn Transport, tx: &mut TxBatch) {
        if tx.is_empty() {
            return;
        }
        let o = tr.send(tx);
        if o.errors > 0 {
            self.s.dev.send_errors.fetch_add(o.errors, Relaxed);
        }
        if o.eagain > 0 {
            self.s.dev.send_eagain.fetch_add(o.eagain, Relaxed);
        }
    }

    fn tick(&mut self, now: u64, tx: &mut TxBatch) {
        // Registration storm.
        while self.reg_next < self.reg_upto && self.reg_inflight < self.cfg.window {
            if let Some(p) = &mut self.reg_pace {
                if p.due(now) == 0 {
                    break;
                }
                p.done += 1;
            }
            let l = self.reg_next;
            self.reg_next += 1;
            if self.devs[l as usize].state == State::Idle {
                self.register(l, now, tx);
            }
        }
        // Notifications.
        if let Some(p) = &self.notify {
            let due = p.due(now);
            let ended = now >= p.until;
            for _ in 0..due {
                self.emit_notification(now, tx);
            }
            if let Some(p) = &mut self.notify {
                p.done += due;
            }
            if ended {
                self.notify = None;
            }
        }
        // Lifetime: Update at 3/4 of it.
        while let Some(&Reverse((due, l, gen))) = self.updates.peek() {
            if due > now {
                break;
            }
            self.updates.pop();
            let d = &self.devs[l as usize];
            if d.state == State::Registered && d.gen == gen {
                self.send_simple(l, Kind::Update, now, tx);
                self.s.dev.upd_sent.fetch_add(1, Relaxed);
            }
        }
        // Churn.
        if let Some(p) = &self.churn {
            let due = p.due(now);
            let n = self.devs.len() as u32;
            let mut done = 0;
            let mut tries = 0;
            while done < due && tries < n && self.other_inflight < self.cfg.window {
                let l = self.churn_cursor % n;
                self.churn_cursor = self.churn_cursor.wrapping_add(1);
                tries += 1;
                if self.devs[l as usize].state == State::Registered {
                    self.devs[l as usize].rereg = true;
                    self.send_deregister(l, now, tx);
                    done += 1;
                }
            }
            if let Some(p) = &mut self.churn {
                p.done += due;
            }
        }
        // Deregister everything.
        if self.dereg_all {
            while (self.dereg_cursor as usize) < self.devs.len()
                && self.other_inflight < self.cfg.window
            {
                let l = self.dereg_cursor;
                self.dereg_cursor += 1;
                let d = &mut self.devs[l as usize];
                d.rereg = false;
                if d.state == State::Registered {
                    self.send_deregister(l, now, tx);
                }
            }
        }
        if now >= self.next_retx_scan {
            self.next_retx_scan = now + 50_000_000;
            self.retransmit(now, tx);
        }
    }

    fn next_mid(&mut self, l: u32) -> u16 {
        let d = &mut self.devs[l as usize];
        d.mid = d.mid.wrapping_add(1);
        d.mid
    }

    /// Registers local device `l`: over its DTLS session, after a handshake when it has none.
    fn register(&mut self, l: u32, now: u64, tx: &mut TxBatch) {
        match self.cfg.dtls {
            Some(suite) if !self.session_up(l) => self.start_handshake(l, suite, now, tx),
            _ => self.send_register(l, now, tx),
        }
    }

    fn session_up(&self, l: u32) -> bool {
        self.devs[l as usize]
            .dtls
            .as_ref()
            .is_some_and(|c| c.is_established())
    }

    /// Sends the first ClientHello of local device `l`; the handshake holds a place in the
    /// register window until it ends.
    fn start_handshake(&mut self, l: u32, suite: Suite, now: u64, tx: &mut TxBatch) {
        let g = self.global(l);
        let ep = format!("{}{g}", self.cfg.prefix);
        let key = crate::dtls::psk_key(&ep);
        let seed = ((g as u64) << 32) ^ now;
        let mut c = Box::new(Client::new(ep.as_bytes(), &key, &[suite], seed));
        tx.push(g).extend_from_slice(&c.connect());
        let d = &mut self.devs[l as usize];
        d.dtls = Some(c);
        d.state = State::Handshaking;
        self.reg_inflight += 1;
        self.handshakes.insert(
            l,
            Handshake {
                t0: now,
                next: now + HS_TIMEOUT_NS,
                attempts: 0,
            },
        );
        self.s.dev.hs_started.fetch_add(1, Relaxed);
        self.s.hs_first_at.fetch_min(now, Relaxed);
    }

    /// The handshake of `l` ended (established or not); the Register follows if it succeeded.
    fn end_handshake(&mut self, l: u32, now: u64, established: bool, tx: &mut TxBatch) {
        let Some(h) = self.handshakes.remove(&l) else {
            return;
        };
        self.reg_inflight -= 1;
        if established {
            record(&self.s.h_handshake, now.saturating_sub(h.t0));
            self.s.dev.hs_ok.fetch_add(1, Relaxed);
            self.s.hs_last_at.fetch_max(now, Relaxed);
            self.devs[l as usize].state = State::Idle;
            self.send_register(l, now, tx);
        } else {
            let d = &mut self.devs[l as usize];
            d.state = State::Idle;
            d.dtls = None;
        }
    }

    fn send_register(&mut self, l: u32, now: u64, tx: &mut TxBatch) {
        let g = self.global(l);
        let mid = self.next_mid(l);
        self.devs[l as usize].state = State::Registering;
        self.s.reg_sent_at[g as usize].store(now, Relaxed);
        self.s.dev.reg_sent.fetch_add(1, Relaxed);
        self.reg_inflight += 1;
        self.build(l, Kind::Register, mid, tx);
        self.pending.insert(
            Self::key(g, mid),
            Pending {
                kind: Kind::Register,
                t0: now,
                next: now + ACK_TIMEOUT_NS,
                attempts: 0,
            },
        );
    }

    fn send_deregister(&mut self, l: u32, now: u64, tx: &mut TxBatch) {
        self.devs[l as usize].state = State::Deregistering;
        self.s.dev.dereg_sent.fetch_add(1, Relaxed);
        self.send_simple(l, Kind::Deregister, now, tx);
    }

    fn send_simple(&mut self, l: u32, kind: Kind, now: u64, tx: &mut TxBatch) {
        let g = self.global(l);
        let mid = self.next_mid(l);
        self.other_inflight += 1;
        self.build(l, kind, mid, tx);
        self.pending.insert(
            Self::key(g, mid),
            Pending {
                kind,
                t0: now,
                next: now + ACK_TIMEOUT_NS,
                attempts: 0,
            },
        );
    }

    /// Writes the datagram of `kind` from local device `l` with message id `mid`.
    fn build(&mut self, l: u32, kind: Kind, mid: u16, tx: &mut TxBatch) {
        let g = self.global(l);
        let mut token = [0u8; 6];
        token[..4].copy_from_slice(&g.to_be_bytes());
        token[4..].copy_from_slice(&mid.to_be_bytes());
        let d = &self.devs[l as usize];
        let loc = &d.loc[..d.loc_len as usize];
        let con = MessageType::Confirmable;
        let p = match kind {
            Kind::Register => {
                let post = MessageClass::Request(RequestType::Post);
                let mut p = wire::packet(con, post, mid, &token);
                p.add_option(CoapOption::UriPath, b"rd".to_vec());
                p.set_content_format(ContentFormat::ApplicationLinkFormat);
                for q in [
                    format!("ep={}{g}", self.cfg.prefix),
                    format!("lt={}", self.cfg.lifetime),
                    "lwm2m=1.1".into(),
                    "b=U".into(),
                ] {
                    p.add_option(CoapOption::UriQuery, q.into_bytes());
                }
                p.payload = LINKS.to_vec();
                p
            }
            Kind::Update | Kind::Deregister => {
                let method = if matches!(kind, Kind::Update) {
                    RequestType::Post
                } else {
                    RequestType::Delete
                };
                let mut p = wire::packet(con, MessageClass::Request(method), mid, &token);
                for seg in loc.split(|b| *b == b'/') {
                    p.add_option(CoapOption::UriPath, seg.to_vec());
                }
                p
            }
            Kind::Notify {
                token,
                tkl,
                ts,
                seq,
            } => {
                let Some(o) = d
                    .obs
                    .iter()
                    .find(|o| o.token[..o.tkl as usize] == token[..tkl as usize])
                else {
                    return;
                };
                let t = if self.cfg.con {
                    MessageType::Confirmable
                } else {
                    MessageType::NonConfirmable
                };
                let mut p = wire::packet(t, CONTENT, mid, &token[..tkl as usize]);
                p.set_observe_value(seq & 0xff_ffff);
                let path = o.path;
                let cf = self.content(&mut p, g, path, ts);
                p.set_content_format(cf);
                p
            }
        };
        self.send(tx, g, p);
    }

    /// Writes the content of `path` into `p`'s payload (reusing the scratch buffer) and returns
    /// its content format.
    fn content(&mut self, p: &mut Packet, g: u32, path: ResPath, ts: u64) -> ContentFormat {
        p.payload = std::mem::take(&mut self.scratch);
        write_content(&mut p.payload, g, path, ts, self.cfg.lifetime)
    }

    /// Encodes `p` as the next datagram from device `g` (sealed in its DTLS session with
    /// `--dtls`); its payload buffer goes back to scratch.
    fn send(&mut self, tx: &mut TxBatch, g: u32, mut p: Packet) {
        match p.to_bytes() {
            Ok(b) if self.cfg.dtls.is_some() => {
                let l = (g / self.cfg.threads) as usize;
                match self.devs[l].dtls.as_mut().and_then(|c| c.seal(&b)) {
                    Some(rec) => tx.push(g).extend_from_slice(&rec),
                    None => {
                        self.s.dev.dtls_no_session.fetch_add(1, Relaxed);
                        self.s.err("dtls: no session to send in");
                    }
                }
            }
            Ok(b) => tx.push(g).extend_from_slice(&b),
            Err(_) => self.s.err("coap-lite encode"),
        }
        if p.payload.capacity() > self.scratch.capacity() {
            self.scratch = std::mem::take(&mut p.payload);
        }
    }

    fn emit_notification(&mut self, now: u64, tx: &mut TxBatch) {
        // Round robin over observed devices; drop the ones that lost their observations.
        loop {
            if self.observed.is_empty() {
                self.s.dev.notif_skipped.fetch_add(1, Relaxed);
                return;
            }
            if self.obs_cursor >= self.observed.len() {
                self.obs_cursor = 0;
            }
            let l = self.observed[self.obs_cursor];
            let d = &mut self.devs[l as usize];
            if d.obs.is_empty() || d.state != State::Registered {
                self.observed.swap_remove(self.obs_cursor);
                self.s.dev.observed_devices.fetch_sub(1, Relaxed);
                continue;
            }
            self.obs_cursor += 1;
            let o = &mut d.obs[0];
            o.seq = o.seq.wrapping_add(1);
            let kind = Kind::Notify {
                token: o.token,
                tkl: o.tkl,
                ts: now,
                seq: o.seq,
            };
            let mid = self.next_mid(l);
            self.build(l, kind, mid, tx);
            self.s.dev.notif_sent.fetch_add(1, Relaxed);
            if self.cfg.con {
                self.other_inflight += 1;
                self.pending.insert(
                    Self::key(self.global(l), mid),
                    Pending {
                        kind,
                        t0: now,
                        next: now + ACK_TIMEOUT_NS,
                        attempts: 0,
                    },
                );
            }
            return;
        }
    }

    fn retransmit(&mut self, now: u64, tx: &mut TxBatch) {
        if !self.handshakes.is_empty() {
            self.retransmit_handshakes(now, tx);
        }
        let mut resend = Vec::new();
        let mut give_up = Vec::new();
        for (k, p) in self.pending.iter_mut() {
            if p.next > now {
                continue;
            }
            if p.attempts == MAX_RETRANSMIT {
                give_up.push(*k);
                continue;
            }
            p.attempts += 1;
            p.next = now + (ACK_TIMEOUT_NS << p.attempts);
            resend.push((*k, p.kind));
        }
        for (k, kind) in resend {
            let g = (k >> 16) as u32;
            self.s.dev.retransmits.fetch_add(1, Relaxed);
            self.build(g / self.cfg.threads, kind, k as u16, tx);
        }
        for k in give_up {
            let p = self.pending.remove(&k).unwrap();
            let l = ((k >> 16) as u32) / self.cfg.threads;
            let d = &mut self.devs[l as usize];
            match p.kind {
                Kind::Register => {
                    self.reg_inflight -= 1;
                    d.state = State::Idle;
                    self.s.dev.reg_lost.fetch_add(1, Relaxed);
                    self.s.err("register timeout");
                }
                Kind::Update => {
                    self.other_inflight -= 1;
                    self.s.dev.upd_err.fetch_add(1, Relaxed);
                    self.s.err("update timeout");
                }
                Kind::Deregister => {
                    self.other_inflight -= 1;
                    d.state = State::Idle;
                    d.obs.clear();
                    self.s.dev.dereg_err.fetch_add(1, Relaxed);
                    self.s.err("deregister timeout");
                }
                Kind::Notify { .. } => {
                    self.other_inflight -= 1;
                    self.s.dev.notif_lost.fetch_add(1, Relaxed);
                    self.s.err("CON notification timeout");
                }
            }
        }
    }

    fn retransmit_handshakes(&mut self, now: u64, tx: &mut TxBatch) {
        let mut resend = Vec::new();
        let mut give_up = Vec::new();
        for (&l, h) in self.handshakes.iter_mut() {
            if h.next > now {
                continue;
            }
            if h.attempts == HS_MAX_RETRANSMIT {
                give_up.push(l);
                continue;
            }
            h.attempts += 1;
            h.next = now + (HS_TIMEOUT_NS << h.attempts);
            resend.push(l);
        }
        for l in resend {
            let g = self.global(l);
            if let Some(c) = &self.devs[l as usize].dtls {
                tx.push(g).extend_from_slice(c.last_flight());
                self.s.dev.hs_retransmits.fetch_add(1, Relaxed);
            }
        }
        for l in give_up {
            self.end_handshake(l, now, false, tx);
            self.s.dev.hs_timeout.fetch_add(1, Relaxed);
            self.s.err("dtls handshake timeout");
        }
    }

    fn on_datagram(&mut self, g: u32, data: &[u8], tx: &mut TxBatch) {
        if g % self.cfg.threads != self.cfg.thread || g >= self.cfg.n {
            self.s.dev.unmatched.fetch_add(1, Relaxed);
            return;
        }
        if self.cfg.dtls.is_some() {
            return self.on_dtls_datagram(g, data, tx);
        }
        self.on_coap(g, data, tx);
    }

    /// A datagram for a DTLS device: handshake progress, or records to open and handle.
    fn on_dtls_datagram(&mut self, g: u32, data: &[u8], tx: &mut TxBatch) {
        let l = g / self.cfg.threads;
        let Some(mut c) = self.devs[l as usize].dtls.take() else {
            self.s.dev.unmatched.fetch_add(1, Relaxed);
            return;
        };
        let was_up = c.is_established();
        let mut opened = std::mem::take(&mut self.opened);
        let mut ends = std::mem::take(&mut self.opened_ends);
        opened.clear();
        ends.clear();
        let reply = c.on_datagram(data, &mut |p| {
            opened.extend_from_slice(p);
            ends.push(opened.len());
        });
        let (up, failed) = (c.is_established(), c.failure());
        self.devs[l as usize].dtls = Some(c);
        if let Some(r) = reply {
            tx.push(g).extend_from_slice(&r);
            // A new flight: its retransmission timer starts again.
            if let Some(h) = self.handshakes.get_mut(&l) {
                h.next = now_ns() + HS_TIMEOUT_NS;
                h.attempts = 0;
            }
        }
        if !was_up && up {
            self.end_handshake(l, now_ns(), true, tx);
        } else if let (false, Some(alert)) = (up, failed) {
            if self.handshakes.contains_key(&l) {
                self.end_handshake(l, now_ns(), false, tx);
                self.s.dev.hs_failed.fetch_add(1, Relaxed);
                self.s
                    .err(&format!("dtls handshake failed (alert {alert})"));
            }
        }
        let mut start = 0;
        for &end in &ends {
            self.on_coap(g, &opened[start..end], tx);
            start = end;
        }
        self.opened = opened;
        self.opened_ends = ends;
    }

    /// A CoAP datagram for device `g` (opened from its DTLS record with `--dtls`).
    fn on_coap(&mut self, g: u32, data: &[u8], tx: &mut TxBatch) {
        let l = g / self.cfg.threads;
        let Some(p) = wire::parse(data) else {
            self.s.dev.malformed.fetch_add(1, Relaxed);
            return;
        };
        let mid = p.header.message_id;
        match p.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                match self.pending.remove(&Self::key(g, mid)) {
                    Some(pe) => self.on_answer(l, pe, &p, now_ns(), tx),
                    None => {
                        self.s.dev.unmatched.fetch_add(1, Relaxed);
                    }
                }
            }
            t @ (MessageType::Confirmable | MessageType::NonConfirmable) => {
                // Class 0 with a code other than 0.00 is a request (coap-lite names 0.01-0.07,
                // the rest are Reserved).
                let request = match p.header.code {
                    MessageClass::Request(_) => true,
                    MessageClass::Reserved(c) => c >> 5 == 0,
                    _ => false,
                };
                if request {
                    self.on_request(l, g, &p, tx);
                } else if t == MessageType::Confirmable {
                    // Ping or a separate response we never wait for: reset.
                    let rst = wire::packet(MessageType::Reset, MessageClass::Empty, mid, &[]);
                    self.send(tx, g, rst);
                    self.s.dev.unmatched.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn on_answer(&mut self, l: u32, p: Pending, v: &Packet, now: u64, tx: &mut TxBatch) {
        let c = v.header.code;
        let rst = v.header.get_type() == MessageType::Reset;
        let s = self.s.clone();
        match p.kind {
            Kind::Register => {
                self.reg_inflight -= 1;
                let d = &mut self.devs[l as usize];
                if c == CREATED {
                    record(&s.h_register, now - p.t0);
                    let mut len = 0usize;
                    for seg in wire::options(v, CoapOption::LocationPath) {
                        if len > 0 && len < d.loc.len() {
                            d.loc[len] = b'/';
                            len += 1;
                        }
                        let n = seg.len().min(d.loc.len() - len);
                        d.loc[len..len + n].copy_from_slice(&seg[..n]);
                        len += n;
                    }
                    d.loc_len = len as u8;
                    d.state = State::Registered;
                    d.gen = d.gen.wrapping_add(1);
                    d.obs.clear();
                    let gen = d.gen;
                    s.dev.reg_ok.fetch_add(1, Relaxed);
                    self.schedule_update(l, gen, now, true);
                } else {
                    d.state = State::Idle;
                    s.dev.reg_rejected.fetch_add(1, Relaxed);
                    s.err(&format!(
                        "register {}",
                        if rst { "RST".into() } else { c.to_string() }
                    ));
                }
            }
            Kind::Update => {
                self.other_inflight -= 1;
                if c == CHANGED {
                    record(&s.h_update, now - p.t0);
                    s.dev.upd_ok.fetch_add(1, Relaxed);
                    let gen = self.devs[l as usize].gen;
                    self.schedule_update(l, gen, now, false);
                } else {
                    s.dev.upd_err.fetch_add(1, Relaxed);
                    s.err(&format!(
                        "update {}",
                        if rst { "RST".into() } else { c.to_string() }
                    ));
                    if c == NOT_FOUND {
                        // The gateway forgot us (expired): register again.
                        self.devs[l as usize].state = State::Idle;
                        self.register(l, now, tx);
                    }
                }
            }
            Kind::Deregister => {
                self.other_inflight -= 1;
                let g = self.global(l);
                let d = &mut self.devs[l as usize];
                d.state = State::Idle;
                d.obs.clear();
                if c == DELETED {
                    s.dev.dereg_ok.fetch_add(1, Relaxed);
                } else {
                    s.dev.dereg_err.fetch_add(1, Relaxed);
                    s.err(&format!(
                        "deregister {}",
                        if rst { "RST".into() } else { c.to_string() }
                    ));
                }
                if std::mem::take(&mut d.rereg) && !self.dereg_all {
                    self.register(l, now, tx);
                } else if self.dereg_all {
                    // The end of the run: close the session, so the gateway drops it too.
                    if let Some(close) = d.dtls.take().and_then(|mut c| c.close()) {
                        tx.push(g).extend_from_slice(&close);
                        s.dev.dtls_closed.fetch_add(1, Relaxed);
                    }
                }
            }
            Kind::Notify { token, tkl, .. } => {
                self.other_inflight -= 1;
                if rst {
                    s.dev.notif_rst.fetch_add(1, Relaxed);
                    s.err("notification RST");
                    let d = &mut self.devs[l as usize];
                    d.obs
                        .retain(|o| o.token[..o.tkl as usize] != token[..tkl as usize]);
                } else {
                    s.dev.notif_acked.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// The next Update at 3/4 of the lifetime; the first one after a Register comes at a
    /// per-device point between 3/8 and 3/4 so that a registration storm does not turn into an
    /// update storm.
    fn schedule_update(&mut self, l: u32, gen: u16, now: u64, first: bool) {
        let every = self.cfg.lifetime as u64 * 750_000_000;
        let due = if first {
            let frac = (l as u64).wrapping_mul(2_654_435_761) % 1024;
            every / 2 + every / 2 * frac / 1024
        } else {
            every
        };
        self.updates.push(Reverse((now + due, l, gen)));
    }

    fn on_request(&mut self, l: u32, g: u32, v: &Packet, tx: &mut TxBatch) {
        self.s.dev.req_in.fetch_add(1, Relaxed);
        let (rt, mid) = if v.header.get_type() == MessageType::Confirmable {
            (MessageType::Acknowledgement, v.header.message_id)
        } else {
            (MessageType::NonConfirmable, self.next_mid(l))
        };
        let token = v.get_token();
        // Path: up to 3 numeric segments.
        let mut segs = [None::<u16>; 3];
        let mut bad = false;
        for (i, s) in wire::options(v, CoapOption::UriPath).enumerate() {
            if i == 3 {
                bad = true;
                break;
            }
            match std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
            {
                Some(n) => segs[i] = Some(n),
                None => bad = true,
            }
        }
        let path = segs[0].map(|obj| ResPath {
            obj,
            inst: segs[1],
            res: segs[2],
        });
        let method = match v.header.code {
            MessageClass::Request(m) => m,
            _ => RequestType::UnKnown,
        };
        // Executable resources are not in the read tables: any resource of a known instance
        // can be executed.
        let known = !bad
            && path.is_some_and(|p| {
                objects(p.obj).is_some_and(|r| {
                    p.inst.is_none_or(|i| i == 0)
                        && p.res.is_none_or(|res| {
                            method == RequestType::Post || r.iter().any(|(id, _)| *id == res)
                        })
                })
            });
        let response = |c: ResponseType| wire::packet(rt, MessageClass::Response(c), mid, token);
        if !known && method != RequestType::Post {
            self.s.dev.req_not_found.fetch_add(1, Relaxed);
            return self.send(tx, g, response(ResponseType::NotFound));
        }
        let now = now_ns();
        let p = match method {
            RequestType::Get => {
                // (`known` implies a path; this only keeps the answer well defined.)
                let Some(path) = path else {
                    return self.send(tx, g, response(ResponseType::NotFound));
                };
                let accept = v.get_first_option_as::<OptionValueU16>(CoapOption::Accept);
                if accept.is_some_and(|a| a.is_ok_and(|a| a.0 == 40)) {
                    let mut p = response(ResponseType::Content);
                    p.set_content_format(ContentFormat::ApplicationLinkFormat);
                    p.payload = std::mem::take(&mut self.scratch);
                    write_links(&mut p.payload, path);
                    return self.send(tx, g, p);
                }
                let observe = v.get_observe_value().and_then(Result::ok);
                let mut p = response(ResponseType::Content);
                let d = &mut self.devs[l as usize];
                match observe {
                    Some(0) => {
                        self.s.dev.req_observe.fetch_add(1, Relaxed);
                        let mut t = [0u8; 8];
                        t[..token.len()].copy_from_slice(token);
                        let same = |o: &Obs| {
                            o.path.obj == path.obj
                                && o.path.inst == path.inst
                                && o.path.res == path.res
                        };
                        d.obs.retain(|o| !same(o));
                        if d.obs.is_empty() {
                            self.observed.push(l);
                            self.s.dev.observed_devices.fetch_add(1, Relaxed);
                        }
                        d.obs.push(Obs {
                            token: t,
                            tkl: token.len() as u8,
                            path,
                            seq: 1,
                        });
                        p.set_observe_value(1);
                    }
                    Some(1) => {
                        self.s.dev.req_cancel.fetch_add(1, Relaxed);
                        d.obs.retain(|o| o.token[..o.tkl as usize] != *token);
                    }
                    _ => {}
                }
                let cf = self.content(&mut p, g, path, now);
                p.set_content_format(cf);
                p
            }
            RequestType::Put | RequestType::IPatch => response(ResponseType::Changed),
            RequestType::Post => {
                if path.is_some_and(|p| p.inst.is_none()) {
                    response(ResponseType::Created)
                } else if known {
                    response(ResponseType::Changed)
                } else {
                    self.s.dev.req_not_found.fetch_add(1, Relaxed);
                    response(ResponseType::NotFound)
                }
            }
            RequestType::Delete => response(ResponseType::Deleted),
            RequestType::Fetch => {
                let mut p = response(ResponseType::Content);
                p.set_content_format(ContentFormat::ApplicationSenmlJSON);
                p.payload = b"[]".to_vec();
                p
            }
            _ => response(ResponseType::MethodNotAllowed),
        };
        self.send(tx, g, p);
    }
}

#[derive(Clone, Copy)]
enum Val {
    Str(&'static str),
    Int(i64),
    /// The harness clock, ns.
    Ts,
    Lifetime,
    Serial,
}

const OBJ1: &[(u16, Val)] = &[(0, Val::Int(1)), (1, Val::Lifetime), (7, Val::Str("U"))];
const OBJ3: &[(u16, Val)] = &[
    (13, Val::Ts),
    (0, Val::Str("lwm2m-loadtest")),
    (1, Val::Str("sim")),
    (2, Val::Serial),
    (3, Val::Str("1.0")),
    (9, Val::Int(87)),
    (16, Val::Str("U")),
];
const OBJ4: &[(u16, Val)] = &[(0, Val::Int(41)), (2, Val::Int(-70))];
const OBJ3303: &[(u16, Val)] = &[(5700, Val::Ts), (5701, Val::Str("Cel"))];

fn objects(obj: u16) -> Option<&'static [(u16, Val)]> {
    match obj {
        1 => Some(OBJ1),
        3 => Some(OBJ3),
        4 => Some(OBJ4),
        3303 => Some(OBJ3303),
        _ => None,
    }
}

/// The timestamp resource of an object (where notifications carry their send time).
pub fn ts_resource(obj: u16) -> Option<u16> {
    match obj {
        3 => Some(13),
        3303 => Some(5700),
        _ => None,
    }
}

/// Writes the content of `path` and returns its content format: text for one resource, SenML
/// JSON for an instance or an object (instance 0).
fn write_content(
    out: &mut Vec<u8>,
    dev: u32,
    path: ResPath,
    ts: u64,
    lifetime: u32,
) -> ContentFormat {
    out.clear();
    let Some(res) = objects(path.obj) else {
        return ContentFormat::TextPlain;
    };
    let value = |out: &mut Vec<u8>, v: Val, senml: bool| {
        let _ = match v {
            Val::Str(s) if senml => write!(out, "\"vs\":\"{s}\""),
            Val::Str(s) => write!(out, "{s}"),
            Val::Int(i) if senml => write!(out, "\"v\":{i}"),
            Val::Int(i) => write!(out, "{i}"),
            Val::Ts if senml => write!(out, "\"v\":{ts}"),
            Val::Ts => write!(out, "{ts}"),
            Val::Lifetime if senml => write!(out, "\"v\":{lifetime}"),
            Val::Lifetime => write!(out, "{lifetime}"),
            Val::Serial if senml => write!(out, "\"vs\":\"SN{dev}\""),
            Val::Serial => write!(out, "SN{dev}"),
        };
    };
    if let Some(r) = path.res {
        if let Some((_, v)) = res.iter().find(|(id, _)| *id == r) {
            value(out, *v, false);
        }
        return ContentFormat::TextPlain;
    }
    out.push(b'[');
    for (i, (id, v)) in res.iter().enumerate() {
        if i == 0 {
            let _ = write!(out, "{{\"bn\":\"/{}/0/\",\"n\":\"{id}\",", path.obj);
        } else {
            let _ = write!(out, ",{{\"n\":\"{id}\",");
        }
        value(out, *v, true);
        out.push(b'}');
    }
    out.push(b']');
    ContentFormat::ApplicationSenmlJSON
}

fn write_links(out: &mut Vec<u8>, path: ResPath) {
    out.clear();
    let Some(res) = objects(path.obj) else { return };
    let _ = write!(out, "</{}/0>", path.obj);
    for (id, _) in res {
        let _ = write!(out, ",</{}/0/{id}>", path.obj);
    }
}

#[cfg(test)]
mod tests {
    //! Expected datagrams are written out by hand from RFC 7252 section 3, so that they check
    //! coap-lite's encoding (and the devices' use of it) against the standard, not against
    //! either codec.
    use super::*;

    fn fleet(con: bool) -> Fleet {
        Fleet::new(FleetConfig {
            n: 1,
            threads: 1,
            thread: 0,
            prefix: "t-".into(),
            lifetime: 100,
            con,
            window: 16,
            stats: Stats::new(1),
            dtls: None,
        })
    }

    fn take(tx: &mut TxBatch) -> Vec<Vec<u8>> {
        let v = tx.items().iter().map(|(_, b)| b.clone()).collect();
        tx.clear();
        v
    }

    /// Registers device 0 (location /rd/abc) and observes /3303/0/5700 with token AA BB.
    fn registered_and_observed(f: &mut Fleet, tx: &mut TxBatch) {
        f.send_register(0, 1, tx);
        let mut reg = take(tx).remove(0);
        reg.truncate(10); // header and token
        let mut ack = vec![0x66, 0x41, 0x00, 0x01];
        ack.extend_from_slice(&reg[4..10]);
        ack.extend_from_slice(&[0x82, b'r', b'd', 0x03, b'a', b'b', b'c']);
        f.on_datagram(0, &ack, tx);
        assert!(f.devs[0].state == State::Registered);
        let get = [
            0x42, 0x01, 0x12, 0x34, 0xAA, 0xBB, // CON GET, token AA BB
            0x60, // Observe 0 (empty uint)
            0x54, b'3', b'3', b'0', b'3', 0x01, b'0', 0x04, b'5', b'7', b'0', b'0',
        ];
        f.on_datagram(0, &get, tx);
    }

    #[test]
    fn register_bytes() {
        let mut f = fleet(false);
        let mut tx = TxBatch::new();
        f.send_register(0, 1, &mut tx);
        let mut want = vec![0x46, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x01];
        want.extend_from_slice(&[0xB2, b'r', b'd', 0x11, 40]);
        want.extend_from_slice(b"\x36ep=t-0\x06lt=100\x09lwm2m=1.1\x03b=U\xff");
        want.extend_from_slice(LINKS);
        assert_eq!(take(&mut tx), vec![want]);
    }

    #[test]
    fn update_observe_and_notification_bytes() {
        let mut f = fleet(false);
        let mut tx = TxBatch::new();
        registered_and_observed(&mut f, &mut tx);
        let resp = take(&mut tx).remove(0);
        // ACK 2.05, same MID and token, Observe 1, Content-Format 0 (empty uint), timestamp.
        let head = [0x62, 0x45, 0x12, 0x34, 0xAA, 0xBB, 0x61, 0x01, 0x60, 0xFF];
        assert_eq!(resp[..head.len()], head);
        assert!(resp[head.len()..].iter().all(u8::is_ascii_digit));

        f.send_simple(0, Kind::Update, 2, &mut tx);
        let upd = [
            0x46, 0x02, 0x00, 0x02, 0, 0, 0, 0, 0x00, 0x02, 0xB2, b'r', b'd', 0x03, b'a', b'b',
            b'c',
        ];
        assert_eq!(take(&mut tx), vec![upd.to_vec()]);

        f.emit_notification(12345, &mut tx);
        // NON 2.05, next MID, token AA BB, Observe 2, Content-Format 0, "12345".
        let notif = b"\x52\x45\x00\x03\xAA\xBB\x61\x02\x60\xff12345";
        assert_eq!(take(&mut tx), vec![notif.to_vec()]);
    }

    #[test]
    fn con_notification_is_acked() {
        let mut f = fleet(true);
        let mut tx = TxBatch::new();
        registered_and_observed(&mut f, &mut tx);
        take(&mut tx);
        f.emit_notification(7, &mut tx);
        let n = take(&mut tx).remove(0);
        assert_eq!(n[..4], [0x42, 0x45, 0x00, 0x02]);
        f.on_datagram(0, &[0x60, 0x00, 0x00, 0x02], &mut tx);
        assert_eq!(f.s.dev.notif_acked.load(Relaxed), 1);
        assert!(f.pending.is_empty());
    }

    #[test]
    fn ping_gets_reset_and_unknown_path_not_found() {
        let mut f = fleet(false);
        let mut tx = TxBatch::new();
        f.on_datagram(0, &[0x40, 0x00, 0xBE, 0xEF], &mut tx);
        // CON GET /9, token 01.
        f.on_datagram(0, &[0x41, 0x01, 0x00, 0x07, 0x01, 0xB1, b'9'], &mut tx);
        assert_eq!(
            take(&mut tx),
            vec![
                vec![0x70, 0x00, 0xBE, 0xEF],
                vec![0x61, 0x84, 0x00, 0x07, 0x01]
            ]
        );
    }

    #[test]
    fn malformed_datagrams_are_counted_and_skipped() {
        let mut f = fleet(false);
        let mut tx = TxBatch::new();
        let bad: &[&[u8]] = &[
            &[],
            &[0x40, 0x01, 0x00],                   // short header
            &[0x49, 0x01, 0x00, 0x01, 1, 2, 3],    // TKL 9
            &[0x42, 0x01, 0x00, 0x01, 0xAA],       // token cut short
            &[0x40, 0x01, 0x00, 0x01, 0xF1, 0],    // option delta 15
            &[0x40, 0x01, 0x00, 0x01, 0x1F, 0],    // option length 15
            &[0x40, 0x01, 0x00, 0x01, 0xB5, b'a'], // option value cut short
            &[0x40, 0x01, 0x00, 0x01, 0xD1],       // extended delta missing
            &[0x80, 0x01, 0x00, 0x01],             // version 2
            &[0x40, 0x01, 0x00, 0x01, 0xFF],       // payload marker, no payload
            &[0x50, 0x45, 0x00, 0x01, 0x60, 0xFF], // the same after an option
            &[0x41, 0x00, 0x00, 0x01, 0xAA],       // Empty with a token
            &[0x60, 0x00, 0x00, 0x01, 0xB1, b'x'], // Empty with an option
        ];
        for b in bad {
            f.on_datagram(0, b, &mut tx);
        }
        assert_eq!(f.s.dev.malformed.load(Relaxed), bad.len() as u64);
        assert!(tx.is_empty());
        // Random bytes: whatever they parse as, nothing panics.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut d: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if let Some(b) = d.first_mut() {
                *b = (*b & 0x3F) | 0x40;
            }
            f.on_datagram(0, &d, &mut tx);
            tx.clear();
        }
    }

    mod dtls {
        //! A DTLS device against the gateway crate's own DTLS server, in memory.
        use super::*;
        use lwm2m_gateway::dtls::server::{Config, Output, Server};
        use lwm2m_gateway::dtls::{Authenticator, ConnKey};
        use std::time::Instant;

        /// Knows `t-0` with the harness's key, or with a wrong one.
        struct Keys(bool);

        impl Authenticator for Keys {
            fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
                let mut k = crate::dtls::psk_key("t-0").to_vec();
                if !self.0 {
                    k[0] ^= 1;
                }
                (identity == b"t-0").then_some(k)
            }
        }

        struct Gw {
            server: Server,
            keys: Keys,
            /// Application data the server opened.
            app: Vec<Vec<u8>>,
        }

        const PEER: ConnKey = (
            0,
            std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::new(127, 1, 0, 0),
                40000,
            )),
        );

        impl Gw {
            fn new(right_key: bool) -> Gw {
                Gw {
                    server: Server::new(Config::default(), Instant::now(), [9; 32]),
                    keys: Keys(right_key),
                    app: Vec::new(),
                }
            }

            /// Delivers what the fleet sent, and the server's answers back, until both are
            /// quiet.
            fn exchange(&mut self, f: &mut Fleet, tx: &mut TxBatch) {
                for _ in 0..20 {
                    let sent = take(tx);
                    if sent.is_empty() {
                        return;
                    }
                    for d in sent {
                        let mut out = Output::default();
                        let app = &mut self.app;
                        self.server.on_datagram(
                            Instant::now(),
                            PEER,
                            &d,
                            &self.keys,
                            &mut out,
                            &mut |_, _, p| app.push(p.to_vec()),
                        );
                        for (_, answer) in out.transmits {
                            f.on_datagram(0, &answer, tx);
                        }
                    }
                }
                panic!("the exchange does not end");
            }
        }

        fn dtls_fleet() -> Fleet {
            let mut f = fleet(false);
            f.cfg.dtls = Some(Suite::PskAes128Ccm8);
            f
        }

        #[test]
        fn a_device_handshakes_then_registers_and_answers_inside_the_session() {
            let mut f = dtls_fleet();
            let mut gw = Gw::new(true);
            let mut tx = TxBatch::new();
            f.register(0, 1, &mut tx);
            assert!(f.devs[0].state == State::Handshaking);
            assert_eq!(f.reg_inflight, 1);
            gw.exchange(&mut f, &mut tx);
            assert_eq!(f.s.dev.hs_ok.load(Relaxed), 1);
            assert_eq!(f.s.h_handshake.lock().len(), 1);
            assert!(f.handshakes.is_empty());
            assert!(f.devs[0].state == State::Registering);
            assert_eq!(f.reg_inflight, 1, "the Register took the handshake's place");
            // The server opened exactly the plain Register.
            assert_eq!(gw.app.len(), 1);
            let reg = gw.app.pop().unwrap();
            assert_eq!(reg[..2], [0x46, 0x02]);
            assert!(reg.windows(7).any(|w| w == b"ep=t-0\x06"));

            // 2.01 with Location /rd/abc, sealed by the server.
            let mut ack = vec![0x66, 0x41];
            ack.extend_from_slice(&reg[2..10]);
            ack.extend_from_slice(&[0x82, b'r', b'd', 0x03, b'a', b'b', b'c']);
            let rec = gw.server.seal(&PEER, &ack).unwrap();
            f.on_datagram(0, &rec, &mut tx);
            assert!(f.devs[0].state == State::Registered);
            assert_eq!(f.s.dev.reg_ok.load(Relaxed), 1);

            // A plaintext datagram is not CoAP for a DTLS device: nothing happens.
            f.on_datagram(0, &ack, &mut tx);
            assert!(tx.is_empty());

            // CON GET /3/0/0 inside the session: the answer is sealed.
            let get = [
                0x41, 0x01, 0x00, 0x09, 0x07, 0xB1, b'3', 0x01, b'0', 0x01, b'0',
            ];
            let rec = gw.server.seal(&PEER, &get).unwrap();
            f.on_datagram(0, &rec, &mut tx);
            gw.exchange(&mut f, &mut tx);
            assert_eq!(gw.app.len(), 1);
            let answer = &gw.app[0];
            assert_eq!(answer[..5], [0x61, 0x45, 0x00, 0x09, 0x07]);
            assert!(answer.ends_with(b"lwm2m-loadtest"));

            // The final deregistration closes the session (close_notify).
            f.dereg_all = true;
            f.send_deregister(0, 2, &mut tx);
            gw.exchange(&mut f, &mut tx);
            let del = gw.app.pop().unwrap();
            assert_eq!(del[..2], [0x46, 0x04]);
            let mut ok = vec![0x66, 0x42];
            ok.extend_from_slice(&del[2..10]);
            let rec = gw.server.seal(&PEER, &ok).unwrap();
            f.on_datagram(0, &rec, &mut tx);
            assert_eq!(f.s.dev.dereg_ok.load(Relaxed), 1);
            assert_eq!(f.s.dev.dtls_closed.load(Relaxed), 1);
            assert!(f.devs[0].dtls.is_none());
            assert_eq!(gw.server.sessions(), 1);
            gw.exchange(&mut f, &mut tx);
            assert_eq!(
                gw.server.sessions(),
                0,
                "the server dropped the closed session"
            );
        }

        #[test]
        fn a_wrong_key_fails_the_handshake_and_frees_its_place() {
            let mut f = dtls_fleet();
            let mut gw = Gw::new(false);
            let mut tx = TxBatch::new();
            f.register(0, 1, &mut tx);
            gw.exchange(&mut f, &mut tx);
            assert_eq!(f.s.dev.hs_ok.load(Relaxed), 0);
            assert_eq!(f.s.dev.hs_failed.load(Relaxed), 1);
            assert_eq!(f.reg_inflight, 0);
            assert!(f.handshakes.is_empty());
            assert!(f.devs[0].state == State::Idle);
            assert!(f.devs[0].dtls.is_none());
            assert!(gw.app.is_empty());
        }

        #[test]
        fn lost_flights_are_sent_again_then_given_up() {
            let mut f = dtls_fleet();
            let mut tx = TxBatch::new();
            f.register(0, 0, &mut tx);
            let hello = take(&mut tx).remove(0);
            // Nothing answers: 1, 2, 4, 8 s later the same ClientHello, then the handshake ends.
            let mut t = 0;
            for i in 0..HS_MAX_RETRANSMIT {
                t += HS_TIMEOUT_NS << i;
                f.retransmit(t - 1, &mut tx);
                assert!(tx.is_empty(), "not before {t}");
                f.retransmit(t, &mut tx);
                assert_eq!(take(&mut tx), vec![hello.clone()]);
            }
            assert_eq!(f.s.dev.hs_retransmits.load(Relaxed), 4);
            f.retransmit(t + (HS_TIMEOUT_NS << HS_MAX_RETRANSMIT), &mut tx);
            assert!(tx.is_empty());
            assert_eq!(f.s.dev.hs_timeout.load(Relaxed), 1);
            assert_eq!(f.reg_inflight, 0);
            assert!(f.devs[0].state == State::Idle);
        }
    }
}
