//! The per-worker LwM2M server state machine, sans-IO.
//!
//! A `Shard` owns the sessions of the endpoints routed to it (registration, the one confirmable
//! request in flight, the downlink FIFO), the message-id dedup cache and a deadline heap. It is
//! driven by three calls, each taking `now` from the caller: [`Shard::on_datagram`],
//! [`Shard::on_command`] and [`Shard::on_timeout`]; everything it wants done (datagrams to send,
//! MQTT publishes, routing-index changes) is appended to an [`Output`]. It never reads a clock,
//! touches a socket, a channel or a lock, so tests drive it with a fake clock and a lossy wire.
//!
//! Identifiers the gateway chooses carry the shard number so the event loop can route replies
//! without a lookup: registration ids are `seq * 256 + shard`, message ids `k * shards + shard`,
//! and the first byte of every token is the shard.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::coap::{code, opt, DedupCache, MessageBuilder, MsgType, TransmissionParams};
use crate::config::{Config, UpdatePublishCondition};
use crate::lwm2m::link_format::{self, RegisteredObjects};
use crate::lwm2m::model::ObjectRegistry;
use crate::lwm2m::{codec, json, ContentFormat};

use super::downlink::{self, DeviceContext, Op, Request};
use super::envelope::{self, Command};
use super::registration::{self, Registration, Rejection};
use super::topics::{Template, Topics};

/// Where a datagram came from: the listening socket it arrived on and the remote address.
/// Kept abstract so a DTLS listener can later add an authenticated identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub listener: u16,
    pub addr: SocketAddr,
}

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
    fn publish(&mut self, t: &Template, ep: &str, peerhost: &str, payload: Vec<u8>) {
        self.publishes.push(Publish {
            topic: t.render(ep, peerhost),
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

/// The part of [`Config`] a shard needs, plus the compiled topics and the object model.
#[derive(Debug)]
pub struct ShardConfig {
    pub shards: u16,
    pub lifetime_range: (u32, u32),
    pub transmission: TransmissionParams,
    pub separate_response_timeout: Duration,
    pub dedup_max_entries: usize,
    pub downlink_queue_max: usize,
    pub update_condition: UpdatePublishCondition,
    pub topics: Topics,
    pub model: Arc<ObjectRegistry>,
}

impl ShardConfig {
    pub fn new(c: &Config, model: Arc<ObjectRegistry>) -> Result<ShardConfig, String> {
        Ok(ShardConfig {
            shards: c.workers as u16,
            lifetime_range: (c.lifetime_min, c.lifetime_max),
            transmission: c.coap,
            separate_response_timeout: c.separate_response_timeout,
            dedup_max_entries: c.dedup_max_entries,
            downlink_queue_max: c.downlink_queue_max,
            update_condition: c.update_msg_publish_condition,
            topics: Topics::new(c)?,
            model,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Lifetime(u64),
    Exchange { reg: u64, token: u64 },
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
}

#[derive(Debug)]
struct Session {
    reg: Registration,
    peer: Peer,
    peerhost: String,
    expires_at: Instant,
    inflight: Option<Exchange>,
    queue: VecDeque<(Command, Op, Request)>,
}

pub struct Shard {
    id: u8,
    cfg: Arc<ShardConfig>,
    sessions: HashMap<u64, Session>,
    by_endpoint: HashMap<String, u64>,
    by_token: HashMap<u64, u64>,
    by_mid: HashMap<u16, u64>,
    dedup: DedupCache<Peer>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    next_reg_seq: u64,
    next_mid_seq: u32,
    rng: SmallRng,
    buf: Vec<u8>,
}

fn reason_bytes(r: &str) -> &[u8] {
    // Diagnostic payloads (RFC 7252 §5.5.2) are for humans; keep them short.
    &r.as_bytes()[..r.len().min(128)]
}

impl Shard {
    /// `seed` feeds the token / retransmission-jitter RNG (fixed in tests, random in production).
    pub fn new(id: u8, cfg: Arc<ShardConfig>, seed: u64) -> Shard {
        let lifetime = cfg.transmission.exchange_lifetime();
        let max = cfg.dedup_max_entries;
        Shard {
            id,
            cfg,
            sessions: HashMap::new(),
            by_endpoint: HashMap::new(),
            by_token: HashMap::new(),
            by_mid: HashMap::new(),
            dedup: DedupCache::new(lifetime, max),
            timers: BinaryHeap::new(),
            next_reg_seq: 1,
            next_mid_seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            buf: Vec::with_capacity(256),
        }
    }

    pub fn registrations(&self) -> usize {
        self.sessions.len()
    }

    /// The earliest instant at which [`Shard::on_timeout`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
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

    // ---------------------------------------------------------------- datagrams

    pub fn on_datagram(&mut self, now: Instant, peer: Peer, bytes: &[u8], out: &mut Output) {
        let Ok(pkt) = Packet::from_bytes(bytes) else {
            out.dropped += 1;
            return;
        };
        let mid = pkt.header.message_id;
        let mtype = pkt.header.get_type();
        if mtype == MessageType::Confirmable {
            if let Some(cached) = self.dedup.get(peer, mid) {
                out.transmits.push(Transmit {
                    peer,
                    bytes: cached.to_vec(),
                });
                return;
            }
        }
        match pkt.header.code {
            MessageClass::Empty => self.on_empty(now, peer, &pkt, out),
            MessageClass::Request(_) => self.on_request(now, peer, &pkt, out),
            MessageClass::Response(_) => self.on_response(now, peer, &pkt, out),
            MessageClass::Reserved(_) => {
                // RFC 7252 §4.2/4.3: reject what we cannot process.
                if matches!(
                    mtype,
                    MessageType::Confirmable | MessageType::NonConfirmable
                ) {
                    self.reply_rst(peer, mid, out);
                } else {
                    out.dropped += 1;
                }
            }
        }
    }

    fn reply_rst(&mut self, peer: Peer, mid: u16, out: &mut Output) {
        let mut b = Vec::with_capacity(4);
        MessageBuilder::new(&mut b, MsgType::Rst, code::EMPTY, mid, &[]).finish();
        out.transmits.push(Transmit { peer, bytes: b });
    }

    fn on_empty(&mut self, now: Instant, peer: Peer, pkt: &Packet, out: &mut Output) {
        let mid = pkt.header.message_id;
        match pkt.header.get_type() {
            // CoAP ping (or any empty CON/NON): answered with RST.
            MessageType::Confirmable | MessageType::NonConfirmable => {
                self.reply_rst(peer, mid, out)
            }
            MessageType::Acknowledgement => {
                let Some(reg) = self.by_mid.get(&mid).copied() else {
                    return out.dropped += 1;
                };
                let sep_timeout = self.cfg.separate_response_timeout;
                let Some(s) = self.sessions.get_mut(&reg) else {
                    return;
                };
                let Some(ex) = s
                    .inflight
                    .as_mut()
                    .filter(|e| e.mid == mid && e.state == ExchangeState::AwaitAck)
                else {
                    return;
                };
                // Separate response coming (RFC 7252 §5.2.2): stop retransmitting, keep waiting.
                ex.state = ExchangeState::AwaitSeparate;
                ex.deadline = now + sep_timeout;
                let (token, deadline) = (ex.token, ex.deadline);
                let payload = envelope::message(
                    &ex.cmd.echo,
                    "ack",
                    None,
                    Value::Object(ex.cmd.data.clone()),
                );
                let (ep, ph) = (s.reg.endpoint.clone(), s.peerhost.clone());
                self.by_mid.remove(&mid);
                self.timers
                    .push(Reverse((deadline, Timer::Exchange { reg, token })));
                out.publish(&self.cfg.topics.response, &ep, &ph, payload);
            }
            MessageType::Reset => {
                let Some(reg) = self.by_mid.get(&mid).copied() else {
                    return out.dropped += 1;
                };
                let matches = self
                    .sessions
                    .get(&reg)
                    .and_then(|s| s.inflight.as_ref())
                    .is_some_and(|e| e.mid == mid);
                if matches {
                    self.finish_exchange(now, reg, out, |ex| {
                        ("coap_reset", Value::Object(ex.cmd.data.clone()))
                    });
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, peer: Peer, pkt: &Packet, out: &mut Output) {
        let con = pkt.header.get_type() == MessageType::Confirmable;
        let (resp_code, location, reason) = match self.handle_request(now, peer, pkt, out) {
            Ok((c, loc)) => (c, loc, None),
            Err(r) => (r.code, None, Some(r.reason)),
        };
        let mut b = Vec::with_capacity(32);
        let (t, mid) = if con {
            (MsgType::Ack, pkt.header.message_id)
        } else {
            (MsgType::Non, self.alloc_mid())
        };
        let mut m = MessageBuilder::new(&mut b, t, resp_code, mid, pkt.get_token());
        if let Some(id) = &location {
            m = m.options(opt::LOCATION_PATH, [b"rd".as_slice(), id.as_bytes()]);
        }
        m.payload(reason.as_deref().map(reason_bytes).unwrap_or_default());
        if con {
            self.dedup
                .insert(now, peer, pkt.header.message_id, b.clone());
        }
        out.transmits.push(Transmit { peer, bytes: b });
    }

    /// Returns the response code and, for a Register, the registration id for Location-Path.
    fn handle_request(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &Packet,
        out: &mut Output,
    ) -> Result<(u8, Option<String>), Rejection> {
        for (n, _) in pkt.options() {
            if opt::is_critical(*n) && !opt::is_known(*n) {
                return Err(Rejection {
                    code: code::BAD_OPTION,
                    reason: format!("unsupported critical option {n}"),
                });
            }
        }
        let method: u8 = pkt.header.code.into();
        let empty = std::collections::LinkedList::new();
        let path = pkt.get_option(CoapOption::UriPath).unwrap_or(&empty);
        let segs: Vec<&[u8]> = path.iter().map(|v| v.as_slice()).collect();
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
            _ => Err(not_found()),
        }
    }

    fn queries(pkt: &Packet) -> impl Iterator<Item = &[u8]> {
        pkt.get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
            .map(|v| v.as_slice())
    }

    fn parse_objects(pkt: &Packet) -> Result<Option<RegisteredObjects>, Rejection> {
        if let Some(cf) = pkt.get_first_option(CoapOption::ContentFormat) {
            let cf = crate::coap::decode_uint(cf);
            if cf != Some(ContentFormat::LinkFormat.as_u16() as u32) {
                return Err(Rejection {
                    code: code::UNSUPPORTED_CONTENT_FORMAT,
                    reason: "object list must be link-format (40)".into(),
                });
            }
        }
        if pkt.payload.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(&pkt.payload).map_err(|_| Rejection {
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

    fn peerhost(&self, peer: Peer) -> String {
        if self.cfg.topics.needs_peerhost {
            peer.addr.ip().to_string()
        } else {
            String::new()
        }
    }

    fn register(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &Packet,
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
        let lifetime = match params.lifetime {
            Some(lt) => lt,
            None => registration::DEFAULT_LIFETIME
                .clamp(self.cfg.lifetime_range.0, self.cfg.lifetime_range.1),
        };
        let binding = params.binding.clone().unwrap_or_else(|| "U".to_string());
        let queue_mode = binding.contains('Q') || params.queue_flag;
        // The same endpoint registering again replaces its old registration; commands waiting for
        // the endpoint carry over (they address the device, not one registration of it).
        let mut carried = VecDeque::new();
        let mut carried_inflight = None;
        if let Some(old) = self.by_endpoint.get(&endpoint).copied() {
            if let Some(s) = self.sessions.get_mut(&old) {
                carried = std::mem::take(&mut s.queue);
                carried_inflight = s.inflight.take();
            }
            self.remove_session(old, "replaced", out);
        }
        let reg_id = (self.next_reg_seq << 8) | self.id as u64;
        self.next_reg_seq += 1;
        let reg = Registration {
            endpoint: endpoint.clone(),
            lifetime,
            version,
            binding,
            sms: params.sms.clone(),
            queue_mode,
            params: params.all,
            objects,
        };
        let expires_at = now + reg.lifetime_duration();
        let session = Session {
            peerhost: self.peerhost(peer),
            reg,
            peer,
            expires_at,
            inflight: None,
            queue: carried,
        };
        let data = session.reg.event_data();
        let payload = envelope::message(&serde_json::Map::new(), "register", None, data);
        out.publish(
            &self.cfg.topics.register,
            &endpoint,
            &session.peerhost,
            payload,
        );
        self.sessions.insert(reg_id, session);
        self.by_endpoint.insert(endpoint, reg_id);
        self.timers
            .push(Reverse((expires_at, Timer::Lifetime(reg_id))));
        out.index.push(IndexUpdate::Bind(peer.addr));
        if let Some(ex) = carried_inflight {
            // Re-send the interrupted request to the new registration's address.
            let (cmd, op, req) = (ex.cmd, ex.op, ex.request);
            if let Some(s) = self.sessions.get_mut(&reg_id) {
                s.queue.push_front((cmd, op, req));
            }
        }
        self.pump(now, reg_id, out);
        Ok(reg_id.to_string())
    }

    fn update(
        &mut self,
        now: Instant,
        peer: Peer,
        reg_id: u64,
        pkt: &Packet,
        out: &mut Output,
    ) -> Result<(), Rejection> {
        let params = registration::parse_query(Self::queries(pkt), self.cfg.lifetime_range)?;
        let objects = Self::parse_objects(pkt)?;
        let peerhost = self.peerhost(peer);
        let Some(s) = self.sessions.get_mut(&reg_id) else {
            return Err(Rejection {
                code: code::NOT_FOUND,
                reason: "no such registration".into(),
            });
        };
        let mut p = params.clone();
        // Endpoint and version are fixed at Register (TS §6.2.2); ignore them here.
        p.all.retain(|(k, _)| k != "ep" && k != "lwm2m");
        s.reg.apply_update(&p);
        let had_objects = objects.is_some();
        if objects.is_some() {
            s.reg.objects = objects;
        }
        // NAT rebinding: the device's address is wherever its Update came from.
        if s.peer.addr != peer.addr {
            out.index.push(IndexUpdate::Unbind(s.peer.addr));
            out.index.push(IndexUpdate::Bind(peer.addr));
        }
        s.peer = peer;
        s.peerhost = peerhost;
        s.expires_at = now + s.reg.lifetime_duration();
        let expires_at = s.expires_at;
        let publish = match self.cfg.update_condition {
            UpdatePublishCondition::Always => true,
            UpdatePublishCondition::ContainsObjectList => had_objects,
        };
        if publish {
            let payload =
                envelope::message(&serde_json::Map::new(), "update", None, s.reg.event_data());
            let (ep, ph) = (s.reg.endpoint.clone(), s.peerhost.clone());
            out.publish(&self.cfg.topics.update, &ep, &ph, payload);
        }
        self.timers
            .push(Reverse((expires_at, Timer::Lifetime(reg_id))));
        self.pump(now, reg_id, out);
        Ok(())
    }

    /// Ends a registration: publishes `deregister` with `reason`, answers every command still
    /// waiting for this device so none vanishes silently.
    fn remove_session(&mut self, reg_id: u64, reason: &str, out: &mut Output) {
        let Some(s) = self.sessions.remove(&reg_id) else {
            return;
        };
        if self.by_endpoint.get(&s.reg.endpoint) == Some(&reg_id) {
            self.by_endpoint.remove(&s.reg.endpoint);
        }
        out.index.push(IndexUpdate::Unbind(s.peer.addr));
        let (ep, ph) = (s.reg.endpoint.as_str(), s.peerhost.as_str());
        if let Some(ex) = &s.inflight {
            self.by_token.remove(&ex.token);
            self.by_mid.remove(&ex.mid);
        }
        let resp = &self.cfg.topics.response;
        let waiting = s
            .inflight
            .iter()
            .map(|e| &e.cmd)
            .chain(s.queue.iter().map(|(c, _, _)| c));
        for cmd in waiting {
            let why = format!("endpoint {reason}");
            let data = envelope::response_data(
                &envelope::req_path_of(&cmd.data),
                code::NOT_FOUND,
                None,
                Some(&why),
            );
            let payload = envelope::message(&cmd.echo, &cmd.msg_type, None, data);
            out.publish(resp, ep, ph, payload);
        }
        let mut d = serde_json::Map::new();
        d.insert("ep".into(), ep.into());
        d.insert("reason".into(), reason.into());
        let payload = envelope::message(
            &serde_json::Map::new(),
            "deregister",
            None,
            Value::Object(d),
        );
        out.publish(&self.cfg.topics.deregister, ep, ph, payload);
    }

    // ---------------------------------------------------------------- responses

    fn on_response(&mut self, now: Instant, peer: Peer, pkt: &Packet, out: &mut Output) {
        let mtype = pkt.header.get_type();
        let mid = pkt.header.message_id;
        let token = <[u8; 8]>::try_from(pkt.get_token())
            .ok()
            .map(u64::from_be_bytes);
        let reg = token.and_then(|t| self.by_token.get(&t).copied());
        let matched = reg.and_then(|r| {
            let ex = self.sessions.get(&r)?.inflight.as_ref()?;
            // Matched by our 56-bit random token alone: lwm2m-node-lib sometimes answers with a
            // piggybacked ACK carrying its own message id instead of ours (RFC 7252 §4.4 says it
            // must echo ours), and the token leaves no doubt about which request it answers.
            (Some(ex.token) == token).then_some(r)
        });
        let Some(reg) = matched else {
            match mtype {
                // Unknown CON/NON response (a stale notification, a late separate response):
                // RST tells the device to stop (RFC 7252 §4.2, RFC 7641 §3.6).
                MessageType::Confirmable | MessageType::NonConfirmable => {
                    self.reply_rst(peer, mid, out)
                }
                _ => out.dropped += 1,
            }
            return;
        };
        if mtype == MessageType::Confirmable {
            let mut b = Vec::with_capacity(4);
            MessageBuilder::new(&mut b, MsgType::Ack, code::EMPTY, mid, &[]).finish();
            self.dedup.insert(now, peer, mid, b.clone());
            out.transmits.push(Transmit { peer, bytes: b });
        }
        let resp_code: u8 = pkt.header.code.into();
        let cf = pkt
            .get_first_option(CoapOption::ContentFormat)
            .and_then(|v| crate::coap::decode_uint(v))
            .and_then(|v| u16::try_from(v).ok());
        let model = self.cfg.model.clone();
        let versions = self
            .sessions
            .get(&reg)
            .and_then(|s| s.reg.objects.as_ref())
            .map(|o| o.versions.clone())
            .unwrap_or_default();
        let payload = &pkt.payload;
        self.finish_exchange(now, reg, out, |ex| {
            let (c, content, reason) = response_content(
                ex.op,
                &ex.request,
                resp_code,
                cf,
                payload,
                &model,
                &versions,
            );
            let data = envelope::response_data(
                &envelope::req_path_of(&ex.cmd.data),
                c,
                content,
                reason.as_deref(),
            );
            (ex.cmd.msg_type.as_str(), data)
        });
    }

    /// Ends the exchange in flight for `reg`, publishes what `describe` makes of it on the response
    /// topic, and starts the next queued command.
    fn finish_exchange(
        &mut self,
        now: Instant,
        reg: u64,
        out: &mut Output,
        describe: impl FnOnce(&Exchange) -> (&str, Value),
    ) {
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some(ex) = s.inflight.take() else { return };
        self.by_token.remove(&ex.token);
        self.by_mid.remove(&ex.mid);
        let (msg_type, data) = describe(&ex);
        let payload = envelope::message(&ex.cmd.echo, msg_type, None, data);
        let (ep, ph) = (s.reg.endpoint.clone(), s.peerhost.clone());
        out.publish(&self.cfg.topics.response, &ep, &ph, payload);
        self.pump(now, reg, out);
    }

    // ---------------------------------------------------------------- commands

    /// A command from MQTT for endpoint `ep` (already extracted from the topic).
    pub fn on_command(&mut self, now: Instant, ep: &str, payload: &[u8], out: &mut Output) {
        let reg = self.by_endpoint.get(ep).copied();
        let peerhost = reg
            .and_then(|r| self.sessions.get(&r))
            .map(|s| s.peerhost.clone())
            .unwrap_or_default();
        // An Arc clone, so the closure can borrow the topic while the sessions are mutated.
        let cfg = self.cfg.clone();
        let resp = &cfg.topics.response;
        let fail = |out: &mut Output,
                    echo: &serde_json::Map<String, Value>,
                    msg_type: &str,
                    req_path: &Value,
                    c: u8,
                    why: &str| {
            let data = envelope::response_data(req_path, c, None, Some(why));
            out.publish(
                resp,
                ep,
                &peerhost,
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
                    out,
                    &e.echo,
                    e.msg_type.as_deref().unwrap_or("error"),
                    &rp,
                    code::BAD_REQUEST,
                    &e.reason,
                );
            }
        };
        let req_path = envelope::req_path_of(&cmd.data);
        let Some(op) = Op::from_msg_type(&cmd.msg_type) else {
            let why = match cmd.msg_type.as_str() {
                "observe"
                | "cancel-observe"
                | "read-composite"
                | "write-composite"
                | "observe-composite"
                | "cancel-observe-composite" => {
                    let why = format!("msgType {:?} is not implemented yet", cmd.msg_type);
                    return fail(out, &cmd.echo, &cmd.msg_type, &req_path, 0xA1, &why);
                }
                other => format!("unknown msgType {other:?}"),
            };
            return fail(
                out,
                &cmd.echo,
                &cmd.msg_type,
                &req_path,
                code::BAD_REQUEST,
                &why,
            );
        };
        let Some(reg) = reg else {
            return fail(
                out,
                &cmd.echo,
                &cmd.msg_type,
                &req_path,
                code::NOT_FOUND,
                "endpoint not registered",
            );
        };
        let Some(s) = self.sessions.get(&reg) else {
            return;
        };
        let objects = s.reg.objects.as_ref();
        let versions = objects.map_or(&[][..], |o| &o.versions[..]);
        let announced = objects.map_or(&[][..], |o| &o.content_formats[..]);
        let types = self.cfg.model.types_for(versions);
        let dev = DeviceContext {
            version: s.reg.version,
            announced_formats: announced,
            types: &types,
        };
        let request = match downlink::build(&cmd, op, &dev) {
            Ok(r) => r,
            Err(why) => {
                return fail(
                    out,
                    &cmd.echo,
                    &cmd.msg_type,
                    &req_path,
                    code::BAD_REQUEST,
                    &why,
                )
            }
        };
        let max = self.cfg.downlink_queue_max;
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        if s.queue.len() >= max {
            return fail(
                out,
                &cmd.echo,
                &cmd.msg_type,
                &req_path,
                code::SERVICE_UNAVAILABLE,
                "downlink queue full",
            );
        }
        s.queue.push_back((cmd, op, request));
        self.pump(now, reg, out);
    }

    /// Sends the next queued request if none is in flight (NSTART = 1).
    fn pump(&mut self, now: Instant, reg: u64, out: &mut Output) {
        let Some(s) = self.sessions.get(&reg) else {
            return;
        };
        if s.inflight.is_some() || s.queue.is_empty() {
            return;
        }
        let token = self.alloc_token();
        let mid = self.alloc_mid();
        let timeout = self.cfg.transmission.initial_timeout(self.rng.gen::<f64>());
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some((cmd, op, request)) = s.queue.pop_front() else {
            return;
        };
        let alt = s
            .reg
            .objects
            .as_ref()
            .map_or("/", |o| o.alternate_path.as_str());
        request.encode(&mut self.buf, mid, &token.to_be_bytes(), alt);
        let bytes = self.buf.clone();
        out.transmits.push(Transmit {
            peer: s.peer,
            bytes: bytes.clone(),
        });
        let deadline = now + timeout;
        s.inflight = Some(Exchange {
            cmd,
            op,
            request,
            token,
            mid,
            bytes,
            retransmits: 0,
            timeout,
            deadline,
            state: ExchangeState::AwaitAck,
        });
        self.by_token.insert(token, reg);
        self.by_mid.insert(mid, reg);
        self.timers
            .push(Reverse((deadline, Timer::Exchange { reg, token })));
    }

    // ---------------------------------------------------------------- timers

    pub fn on_timeout(&mut self, now: Instant, out: &mut Output) {
        self.dedup.expire(now);
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Lifetime(reg) => {
                    if self.sessions.get(&reg).is_some_and(|s| s.expires_at <= now) {
                        self.remove_session(reg, "expired", out);
                    }
                }
                Timer::Exchange { reg, token } => self.exchange_timer(now, reg, token, out),
            }
        }
    }

    fn exchange_timer(&mut self, now: Instant, reg: u64, token: u64, out: &mut Output) {
        let max = self.cfg.transmission.max_retransmit;
        let Some(s) = self.sessions.get_mut(&reg) else {
            return;
        };
        let Some(ex) = s
            .inflight
            .as_mut()
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
            self.timers
                .push(Reverse((d, Timer::Exchange { reg, token })));
            return;
        }
        self.finish_exchange(now, reg, out, |ex| {
            let mut d = ex.cmd.data.clone();
            if ex.state == ExchangeState::AwaitSeparate {
                d.insert(
                    "reason".into(),
                    "no separate response after empty ACK".into(),
                );
            }
            ("coap_timeout", Value::Object(d))
        });
    }
}

/// Maps a device response to (code, content, reason) for the MQTT response.
fn response_content(
    op: Op,
    req: &Request,
    resp_code: u8,
    cf: Option<u16>,
    payload: &[u8],
    model: &ObjectRegistry,
    versions: &[(u16, String)],
) -> (u8, Option<Value>, Option<String>) {
    if !code::is_success(resp_code) {
        return (resp_code, None, None);
    }
    match op {
        Op::Read => {
            if payload.is_empty() {
                return (resp_code, Some(Value::Array(Vec::new())), None);
            }
            // No Content-Format means text/plain (RFC 7252 §5.10.3 default is unspecified; LwM2M
            // 1.0 clients such as lwm2m-node-lib omit it for text).
            let n = cf.unwrap_or(0);
            let Some(f) = ContentFormat::from_u16(n) else {
                return (
                    code::BAD_REQUEST,
                    None,
                    Some(format!("unsupported content format {n}")),
                );
            };
            let types = model.types_for(versions);
            match codec::decode(f, &req.path, payload, &types) {
                Ok(records) => (resp_code, Some(json::content_json(&records)), None),
                Err(e) => (
                    code::BAD_REQUEST,
                    None,
                    Some(format!("cannot decode {} payload: {e}", f.name())),
                ),
            }
        }
        Op::Discover => {
            let text = String::from_utf8_lossy(payload);
            let links = link_format::discover_links(&text)
                .into_iter()
                .map(Value::String)
                .collect();
            (resp_code, Some(Value::Array(links)), None)
        }
        _ => (resp_code, None, None),
    }
}
