//! Simulated LwM2M devices: one I/O thread owns a share of the fleet and its transport.
//!
//! Devices register (`POST /rd`), update before their lifetime runs out, deregister, answer the
//! gateway's requests (read: text/plain for one resource, SenML JSON for instances and objects;
//! write, write-attributes, execute: 2.04; create 2.01; delete 2.02; discover: link format), keep
//! observations (token + path) and emit notifications (NON, or CON with `--con`) whose timestamp
//! resource (`/3/0/13` or `/3303/0/5700`) carries the send time in nanoseconds since the harness
//! started. The device's own CONs are retransmitted RFC 7252 style (2 s, doubling, 4 times).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};

use crate::net::{RxBatch, Transport, TxBatch};
use crate::stats::{now_ns, record, Stats};

const ACK_TIMEOUT_NS: u64 = 2_000_000_000;
const MAX_RETRANSMIT: u8 = 4;
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
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Idle,
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
    scratch: Vec<u8>,
    query: Vec<u8>,
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
            scratch: Vec::with_capacity(1024),
            query: Vec::with_capacity(300),
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
                self.send_register(l, now, tx);
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
        match kind {
            Kind::Register => {
                self.query.clear();
                let _ = write!(self.query, "ep={}{g}", self.cfg.prefix);
                let ep_end = self.query.len();
                let _ = write!(self.query, "lt={}", self.cfg.lifetime);
                let (ep, lt) = self.query.split_at(ep_end);
                MessageBuilder::new(tx.push(g), MsgType::Con, code::POST, mid, &token)
                    .option(opt::URI_PATH, b"rd")
                    .uint_option(opt::CONTENT_FORMAT, 40)
                    .options(opt::URI_QUERY, [ep, lt, b"lwm2m=1.1", b"b=U"])
                    .payload(LINKS);
            }
            Kind::Update => {
                MessageBuilder::new(tx.push(g), MsgType::Con, code::POST, mid, &token)
                    .options(opt::URI_PATH, loc.split(|b| *b == b'/'))
                    .finish();
            }
            Kind::Deregister => {
                MessageBuilder::new(tx.push(g), MsgType::Con, code::DELETE, mid, &token)
                    .options(opt::URI_PATH, loc.split(|b| *b == b'/'))
                    .finish();
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
                let cf = write_content(&mut self.scratch, g, o.path, ts, self.cfg.lifetime);
                let t = if self.cfg.con {
                    MsgType::Con
                } else {
                    MsgType::Non
                };
                MessageBuilder::new(tx.push(g), t, code::CONTENT, mid, &token[..tkl as usize])
                    .uint_option(opt::OBSERVE, seq & 0xff_ffff)
                    .uint_option(opt::CONTENT_FORMAT, cf as u32)
                    .payload(&self.scratch);
            }
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

    fn on_datagram(&mut self, g: u32, data: &[u8], tx: &mut TxBatch) {
        if g % self.cfg.threads != self.cfg.thread || g >= self.cfg.n {
            self.s.dev.unmatched.fetch_add(1, Relaxed);
            return;
        }
        let l = g / self.cfg.threads;
        let Ok(v) = MessageView::parse(data) else {
            self.s.dev.malformed.fetch_add(1, Relaxed);
            return;
        };
        match v.msg_type() {
            MsgType::Ack | MsgType::Rst => {
                match self.pending.remove(&Self::key(g, v.message_id())) {
                    Some(p) => self.on_answer(l, p, &v, now_ns(), tx),
                    None => {
                        self.s.dev.unmatched.fetch_add(1, Relaxed);
                    }
                }
            }
            MsgType::Con | MsgType::Non => {
                if code::is_request(v.code()) {
                    self.on_request(l, g, &v, tx);
                } else if v.msg_type() == MsgType::Con {
                    // Ping or a separate response we never wait for: reset.
                    MessageBuilder::new(tx.push(g), MsgType::Rst, code::EMPTY, v.message_id(), &[])
                        .finish();
                    self.s.dev.unmatched.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn on_answer(&mut self, l: u32, p: Pending, v: &MessageView, now: u64, tx: &mut TxBatch) {
        let c = v.code();
        let rst = v.msg_type() == MsgType::Rst;
        let s = self.s.clone();
        match p.kind {
            Kind::Register => {
                self.reg_inflight -= 1;
                let d = &mut self.devs[l as usize];
                if c == code::CREATED {
                    record(&s.h_register, now - p.t0);
                    let mut len = 0usize;
                    for seg in v.option_values(opt::LOCATION_PATH) {
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
                        if rst {
                            "RST".into()
                        } else {
                            code::to_string(c)
                        }
                    ));
                }
            }
            Kind::Update => {
                self.other_inflight -= 1;
                if c == code::CHANGED {
                    record(&s.h_update, now - p.t0);
                    s.dev.upd_ok.fetch_add(1, Relaxed);
                    let gen = self.devs[l as usize].gen;
                    self.schedule_update(l, gen, now, false);
                } else {
                    s.dev.upd_err.fetch_add(1, Relaxed);
                    s.err(&format!(
                        "update {}",
                        if rst {
                            "RST".into()
                        } else {
                            code::to_string(c)
                        }
                    ));
                    if c == code::NOT_FOUND {
                        // The gateway forgot us (expired): register again.
                        self.devs[l as usize].state = State::Idle;
                        self.send_register(l, now, tx);
                    }
                }
            }
            Kind::Deregister => {
                self.other_inflight -= 1;
                let d = &mut self.devs[l as usize];
                d.state = State::Idle;
                d.obs.clear();
                if c == code::DELETED {
                    s.dev.dereg_ok.fetch_add(1, Relaxed);
                } else {
                    s.dev.dereg_err.fetch_add(1, Relaxed);
                    s.err(&format!(
                        "deregister {}",
                        if rst {
                            "RST".into()
                        } else {
                            code::to_string(c)
                        }
                    ));
                }
                if std::mem::take(&mut d.rereg) && !self.dereg_all {
                    self.send_register(l, now, tx);
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

    fn on_request(&mut self, l: u32, g: u32, v: &MessageView, tx: &mut TxBatch) {
        self.s.dev.req_in.fetch_add(1, Relaxed);
        let (rt, mid) = if v.msg_type() == MsgType::Con {
            (MsgType::Ack, v.message_id())
        } else {
            (MsgType::Non, self.next_mid(l))
        };
        let token = v.token();
        // Path: up to 3 numeric segments.
        let mut segs = [None::<u16>; 3];
        let mut bad = false;
        for (i, s) in v.option_values(opt::URI_PATH).enumerate() {
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
        let c = v.code();
        // Executable resources are not in the read tables: any resource of a known instance
        // can be executed.
        let known = !bad
            && path.is_some_and(|p| {
                objects(p.obj).is_some_and(|r| {
                    p.inst.is_none_or(|i| i == 0)
                        && p.res
                            .is_none_or(|res| c == code::POST || r.iter().any(|(id, _)| *id == res))
                })
            });
        let reply = |tx: &mut TxBatch, c: u8| {
            MessageBuilder::new(tx.push(g), rt, c, mid, token).finish();
        };
        if !known && c != code::POST {
            self.s.dev.req_not_found.fetch_add(1, Relaxed);
            return reply(tx, code::NOT_FOUND);
        }
        let now = now_ns();
        match c {
            code::GET => {
                let path = path.unwrap();
                if v.uint_option(opt::ACCEPT) == Some(40) {
                    write_links(&mut self.scratch, path);
                    MessageBuilder::new(tx.push(g), rt, code::CONTENT, mid, token)
                        .uint_option(opt::CONTENT_FORMAT, 40)
                        .payload(&self.scratch);
                    return;
                }
                let observe = v.uint_option(opt::OBSERVE);
                let cf = write_content(&mut self.scratch, g, path, now, self.cfg.lifetime);
                let d = &mut self.devs[l as usize];
                let mut seq = None;
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
                        seq = Some(1);
                    }
                    Some(1) => {
                        self.s.dev.req_cancel.fetch_add(1, Relaxed);
                        d.obs.retain(|o| o.token[..o.tkl as usize] != *token);
                    }
                    _ => {}
                }
                let mut b = MessageBuilder::new(tx.push(g), rt, code::CONTENT, mid, token);
                if let Some(s) = seq {
                    b = b.uint_option(opt::OBSERVE, s);
                }
                b.uint_option(opt::CONTENT_FORMAT, cf as u32)
                    .payload(&self.scratch);
            }
            code::PUT | code::IPATCH => reply(tx, code::CHANGED),
            code::POST => {
                if path.is_some_and(|p| p.inst.is_none()) {
                    reply(tx, code::CREATED)
                } else if known {
                    reply(tx, code::CHANGED)
                } else {
                    self.s.dev.req_not_found.fetch_add(1, Relaxed);
                    reply(tx, code::NOT_FOUND)
                }
            }
            code::DELETE => reply(tx, code::DELETED),
            code::FETCH => {
                MessageBuilder::new(tx.push(g), rt, code::CONTENT, mid, token)
                    .uint_option(opt::CONTENT_FORMAT, 110)
                    .payload(b"[]");
            }
            _ => reply(tx, code::METHOD_NOT_ALLOWED),
        }
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
fn write_content(out: &mut Vec<u8>, dev: u32, path: ResPath, ts: u64, lifetime: u32) -> u16 {
    out.clear();
    let Some(res) = objects(path.obj) else {
        return 0;
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
        return 0;
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
    110
}

fn write_links(out: &mut Vec<u8>, path: ResPath) {
    out.clear();
    let Some(res) = objects(path.obj) else { return };
    let _ = write!(out, "</{}/0>", path.obj);
    for (id, _) in res {
        let _ = write!(out, ",</{}/0/{id}>", path.obj);
    }
}
