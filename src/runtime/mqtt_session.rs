//! The gateway's MQTT client protocol, sans-IO: one connection's state (CONNECT, SUBSCRIBE,
//! PUBLISH with packet ids and an in-flight window, acknowledgements, keep-alive) over bytes in and
//! bytes out. rumqttc's packet codec (`mqttbytes`, MQTT 3.1.1 and 5) encodes and decodes every
//! packet; this module decides what to send and when. [`super::mqtt`] owns the socket.
//!
//! Why not rumqttc's event loop: it writes and flushes each request on its own (one `write(2)`
//! and one broker wake-up per published message, plus an async runtime hop). Here everything the
//! workers published since the last write leaves in one buffer, which is most of the gateway's
//! CPU per notification (BENCHMARKS.md).
//!
//! Contract:
//! - [`MqttSession::start`] begins a connection (CONNECT queued). Publishing is possible once
//!   [`Event::Connected`] came out of [`MqttSession::on_read`]; until then, and while the
//!   in-flight window is full, [`MqttSession::can_publish`] is false and callers keep messages.
//! - QoS 1 and 2 publishes stay in their packet-id slot until acknowledged, and are sent again
//!   (DUP set), oldest first, after the next successful CONNACK: at-least-once across reconnects.
//! - Incoming QoS 2 commands are delivered once per packet id until PUBREL (method A of the spec).
//! - Incoming packets above `max_packet_size` are skipped whole and reported, without dropping
//!   the connection; any other malformed input is an error, and the caller reconnects.
//! - Time only enters through the `now` arguments, so the state is deterministic under test.
//! - Protocol version ([`MqttVersion`]): `3.1.1` and `5` speak that version on every connection.
//!   `auto` speaks 5 until the broker refuses it, then 3.1.1 for the rest of the session's life
//!   (the process's: a restart tries 5 again). The shell reports how each connection ended to
//!   [`MqttSession::after_failure`], which decides: a refusal of MQTT 5 (a CONNACK in 3.1.1
//!   framing, such as `20 02 00 01` "unacceptable protocol version", or an MQTT 5 CONNACK with
//!   reason 0x84 "Unsupported Protocol Version"), or the broker closing the connection before any
//!   CONNACK while MQTT 5 was never accepted in this session, means [`Retry::AtOnce`] with 3.1.1.
//!   Anything else (a forced `5` refused included) means [`Retry::Backoff`] with the same version.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::config::MqttVersion;

/// Connection parameters.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// What to speak: one version, or `Auto` (5, falling back to 3.1.1).
    pub version: MqttVersion,
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Largest packet accepted from the broker and sent to it.
    pub max_packet_size: usize,
    /// Unacknowledged QoS > 0 publishes allowed at once (packet ids 1..=inflight).
    pub inflight: u16,
}

/// The MQTT version one connection speaks on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::V311 => "MQTT 3.1.1",
            Protocol::V5 => "MQTT 5",
        })
    }
}

/// What the shell does after a connection ended (see [`MqttSession::after_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The broker refused MQTT 5 and `auto` fell back: reconnect now, with MQTT 3.1.1.
    AtOnce,
    /// Wait the reconnect backoff, then try the same version again.
    Backoff,
}

/// What the connection produced for the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Connected,
    /// The broker acknowledged a subscription; `granted` is false if it refused it.
    Subscribed {
        granted: bool,
    },
    /// A message on a subscribed topic.
    Message {
        topic: String,
        payload: Vec<u8>,
        /// MQTT 5 Message-Expiry-Interval.
        expiry: Option<Duration>,
    },
    /// An incoming message that cannot be handled (too large, unreadable topic) was skipped.
    Skipped {
        why: String,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("broker refused the connection: {0}")]
    Refused(String),
    /// The broker does not speak the protocol version of our CONNECT.
    #[error("broker refused the protocol version: {0}")]
    VersionRefused(String),
    /// The transport ended (end of stream, reset, failed read or write) before the CONNACK.
    #[error("connection closed by the broker before CONNACK: {0}")]
    ClosedBeforeConnAck(String),
    /// The transport ended after the CONNACK.
    #[error("connection closed by the broker: {0}")]
    Closed(String),
    #[error("broker closed the session: {0}")]
    ServerDisconnect(String),
    #[error("malformed MQTT packet from the broker: {0}")]
    Malformed(String),
    #[error("unexpected {0} from the broker")]
    Unexpected(&'static str),
    #[error("no PINGRESP within the keep-alive interval")]
    KeepAliveTimeout,
    #[error("no CONNACK within {0:?}")]
    ConnAckTimeout(Duration),
    #[error("publish of {len} bytes exceeds the maximum packet size {max}")]
    TooLarge { len: usize, max: usize },
}

/// A QoS > 0 publish kept until the broker acknowledges it.
#[derive(Debug)]
struct Unacked {
    topic: String,
    qos: u8,
    payload: bytes::Bytes,
    /// QoS 2 after PUBREC: only PUBREL (not the PUBLISH) is sent again.
    released: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitConnAck,
    Connected,
}

pub struct MqttSession {
    opts: SessionOptions,
    /// What this connection speaks and the next ones will: from `opts.version`, switched to
    /// 3.1.1 for good when `Auto` falls back.
    proto: Protocol,
    /// A broker accepted an MQTT 5 CONNECT in this session: it speaks 5, so a connection it
    /// closes before CONNACK later is no reason to fall back.
    v5_accepted: bool,
    phase: Phase,
    /// Bytes to write to the socket, in order.
    out: BytesMut,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// Bytes of an oversized incoming packet still to discard.
    skip: usize,
    /// Slot `pkid` holds the publish with that packet id (index 0 unused).
    slots: Vec<Option<Unacked>>,
    unacked: usize,
    next_pkid: u16,
    /// The broker's Receive Maximum (MQTT 5), capping the window below `inflight`.
    window: usize,
    /// Packet ids of incoming QoS 2 messages delivered and awaiting PUBREL.
    awaiting_rel: Vec<u16>,
    next_sub_pkid: u16,
    /// PUBACKs of received commands, held back briefly so that they leave with the next
    /// outgoing packet (typically the command's response) instead of costing a write and a
    /// broker wake-up of their own.
    acks: BytesMut,
    acks_since: Option<Instant>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    /// When the current connection's CONNECT was queued.
    connect_at: Instant,
    /// This connection's keep-alive and largest outgoing packet: ours, unless an MQTT 5
    /// broker's CONNACK lowers them (reset by every `start`).
    keep_alive: Duration,
    out_max: usize,
}

/// Above this many buffered output bytes, [`MqttSession::can_publish`] says no until the socket
/// takes some: the channel in front of the session is the queue, not this buffer.
const OUT_HIGH_WATER: usize = 1 << 20;

/// A broker that accepted the TCP connection but never answers CONNECT is given up on after this.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a received command's PUBACK waits for company (see `MqttSession::acks`).
pub const ACK_DELAY: Duration = Duration::from_millis(2);
/// Held-back PUBACK bytes (4 each) released at once regardless of the delay.
const ACKS_MAX: usize = 4 * 64;

impl MqttSession {
    pub fn new(opts: SessionOptions, now: Instant) -> MqttSession {
        let inflight = opts.inflight.max(1);
        MqttSession {
            proto: match opts.version {
                MqttVersion::V311 => Protocol::V311,
                MqttVersion::V5 | MqttVersion::Auto => Protocol::V5,
            },
            v5_accepted: false,
            slots: (0..=inflight).map(|_| None).collect(),
            window: inflight as usize,
            phase: Phase::Idle,
            out: BytesMut::with_capacity(64 * 1024),
            input: BytesMut::with_capacity(64 * 1024),
            skip: 0,
            unacked: 0,
            next_pkid: 1,
            awaiting_rel: Vec::new(),
            next_sub_pkid: 1,
            acks: BytesMut::new(),
            acks_since: None,
            last_sent: now,
            ping_sent: None,
            connect_at: now,
            keep_alive: opts.keep_alive,
            out_max: opts.max_packet_size,
            opts,
        }
    }

    /// Starts a new connection on a fresh transport: forgets partial input and output, queues
    /// CONNECT. Unacknowledged publishes are kept for after the CONNACK.
    pub fn start(&mut self, now: Instant) {
        self.out.clear();
        self.input.clear();
        self.acks.clear();
        self.acks_since = None;
        self.skip = 0;
        self.awaiting_rel.clear();
        self.ping_sent = None;
        self.window = self.slots.len() - 1;
        self.phase = Phase::AwaitConnAck;
        self.connect_at = now;
        self.keep_alive = self.opts.keep_alive;
        self.out_max = self.opts.max_packet_size;
        let keep_alive = self.opts.keep_alive.as_secs().min(u16::MAX as u64) as u16;
        match self.proto {
            Protocol::V311 => {
                let mut c = v4::Connect::new(self.opts.client_id.clone());
                c.keep_alive = keep_alive;
                c.clean_session = true;
                if let Some(u) = &self.opts.username {
                    c.set_login(u.clone(), self.opts.password.clone().unwrap_or_default());
                }
                // Encoding our own CONNECT into a BytesMut cannot fail.
                let _ = c.write(&mut self.out);
            }
            Protocol::V5 => {
                let mut props = v5::ConnectProperties::new();
                props.max_packet_size =
                    Some(self.opts.max_packet_size.min(u32::MAX as usize) as u32);
                props.receive_maximum = Some(u16::MAX);
                let c = v5::Connect {
                    keep_alive,
                    client_id: self.opts.client_id.clone(),
                    clean_start: true,
                    properties: Some(props),
                };
                let login = self.opts.username.as_ref().map(|u| {
                    v5::Login::new(u.clone(), self.opts.password.clone().unwrap_or_default())
                });
                let _ = v5::Packet::Connect(c, None, login).write(&mut self.out, None);
            }
        }
        self.last_sent = now;
    }

    /// Whether [`MqttSession::publish`] would take a QoS > 0 message now.
    pub fn can_publish(&self) -> bool {
        self.phase == Phase::Connected
            && self.unacked < self.window
            && self.slots[self.next_pkid as usize].is_none()
            && self.out.len() < OUT_HIGH_WATER
    }

    /// Queues a PUBLISH. QoS > 0 needs [`MqttSession::can_publish`]; the message is kept until
    /// acknowledged.
    pub fn publish(
        &mut self,
        topic: String,
        qos: u8,
        payload: Vec<u8>,
    ) -> Result<(), SessionError> {
        let len = topic.len() + payload.len() + 4;
        if len > self.out_max {
            return Err(SessionError::TooLarge {
                len,
                max: self.out_max,
            });
        }
        let payload = bytes::Bytes::from(payload);
        if qos == 0 {
            self.encode_publish(&topic, 0, 0, false, payload);
            return Ok(());
        }
        let pkid = self.next_pkid;
        self.encode_publish(&topic, qos.min(2), pkid, false, payload.clone());
        self.slots[pkid as usize] = Some(Unacked {
            topic,
            qos: qos.min(2),
            payload,
            released: false,
        });
        self.unacked += 1;
        self.next_pkid = if pkid as usize + 1 >= self.slots.len() {
            1
        } else {
            pkid + 1
        };
        Ok(())
    }

    /// Queues a SUBSCRIBE to `filter` (QoS 0..=2).
    pub fn subscribe(&mut self, filter: &str, qos: u8) {
        let pkid = self.next_sub_pkid;
        self.next_sub_pkid = self.next_sub_pkid.wrapping_add(1).max(1);
        match self.proto {
            Protocol::V311 => {
                let mut s = v4::Subscribe::new(filter, qos_v4(qos));
                s.pkid = pkid;
                let _ = s.write(&mut self.out);
            }
            Protocol::V5 => {
                let mut s = v5::Subscribe::new(v5::Filter::new(filter, qos_v5(qos)), None);
                s.pkid = pkid;
                let _ = v5::Packet::Subscribe(s).write(&mut self.out, None);
            }
        }
    }

    /// Queues DISCONNECT (clean shutdown).
    pub fn disconnect(&mut self) {
        match self.proto {
            Protocol::V311 => {
                let _ = v4::Disconnect.write(&mut self.out);
            }
            Protocol::V5 => {
                let d = v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection);
                let _ = v5::Packet::Disconnect(d).write(&mut self.out, None);
            }
        }
        self.phase = Phase::Idle;
    }

    /// Bytes waiting for the socket.
    pub fn pending_output(&self) -> &[u8] {
        &self.out
    }

    /// The socket took `n` bytes of [`MqttSession::pending_output`].
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        self.out.advance(n.min(self.out.len()));
        if n > 0 {
            self.last_sent = now;
        }
    }

    /// When [`MqttSession::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Instant {
        if self.phase == Phase::AwaitConnAck {
            return self.connect_at + CONNACK_TIMEOUT;
        }
        let keep_alive = match self.ping_sent {
            Some(t) => t + self.keep_alive,
            None => self.last_sent + self.keep_alive,
        };
        match (self.acks_since, self.acks.is_empty()) {
            (_, true) => keep_alive,
            (Some(t), false) => keep_alive.min(t + ACK_DELAY),
            // Acks queued since the last tick: the next tick stamps them.
            (None, false) => self.last_sent.min(keep_alive),
        }
    }

    /// Call before writing: releases held-back PUBACKs (with other output, when
    /// [`ACK_DELAY`] has passed, or when many are waiting), and keeps the connection alive: a
    /// PINGREQ when nothing was sent for the interval, an error when the broker left the previous
    /// one unanswered for as long.
    pub fn on_tick(&mut self, now: Instant) -> Result<(), SessionError> {
        if !self.acks.is_empty() {
            let since = *self.acks_since.get_or_insert(now);
            if !self.out.is_empty() || now >= since + ACK_DELAY || self.acks.len() >= ACKS_MAX {
                self.out.unsplit(self.acks.split());
                self.acks_since = None;
            }
        }
        if self.phase == Phase::AwaitConnAck && now >= self.connect_at + CONNACK_TIMEOUT {
            return Err(SessionError::ConnAckTimeout(CONNACK_TIMEOUT));
        }
        if self.keep_alive.is_zero() || self.phase != Phase::Connected {
            return Ok(());
        }
        if let Some(sent) = self.ping_sent {
            if now >= sent + self.keep_alive {
                return Err(SessionError::KeepAliveTimeout);
            }
            return Ok(());
        }
        if now >= self.last_sent + self.keep_alive {
            match self.proto {
                Protocol::V311 => {
                    let _ = v4::PingReq.write(&mut self.out);
                }
                Protocol::V5 => {
                    let _ = v5::Packet::PingReq(v5::PingReq).write(&mut self.out, None);
                }
            }
            self.ping_sent = Some(now);
        }
        Ok(())
    }

    /// Feeds bytes read from the socket; complete packets are handled, their events appended.
    pub fn on_read(
        &mut self,
        mut data: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), SessionError> {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.input.extend_from_slice(data);
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.input.len());
                self.skip -= n;
                self.input.advance(n);
                if self.skip > 0 {
                    return Ok(());
                }
            }
            let Some((header, remaining)) = frame_header(&self.input)? else {
                return Ok(());
            };
            if remaining > self.opts.max_packet_size {
                events.push(Event::Skipped {
                    why: format!("{remaining}-byte packet above max_packet_size"),
                });
                self.skip = header + remaining;
                continue;
            }
            if self.input.len() < header + remaining {
                return Ok(());
            }
            // An MQTT 5 CONNACK always has a property length; two bytes are a 3.1.1 broker's
            // answer (typically return code 0x01, "unacceptable protocol version").
            if self.proto == Protocol::V5
                && self.phase == Phase::AwaitConnAck
                && self.input[0] == 0x20
                && remaining == 2
            {
                let code = self.input[header + 1];
                self.input.advance(header + remaining);
                return Err(SessionError::VersionRefused(format!(
                    "CONNACK in MQTT 3.1.1 framing, return code {code:#04x}"
                )));
            }
            match self.proto {
                Protocol::V311 => {
                    let p = v4::Packet::read(&mut self.input, usize::MAX)
                        .map_err(|e| SessionError::Malformed(format!("{e:?}")))?;
                    self.on_packet_v4(p, events)?;
                }
                Protocol::V5 => {
                    let p = v5::Packet::read(&mut self.input, None)
                        .map_err(|e| SessionError::Malformed(format!("{e:?}")))?;
                    self.on_packet_v5(p, events)?;
                }
            }
        }
    }

    fn on_packet_v4(&mut self, p: v4::Packet, events: &mut Vec<Event>) -> Result<(), SessionError> {
        match p {
            v4::Packet::ConnAck(a) => {
                if a.code != v4::ConnectReturnCode::Success {
                    return Err(SessionError::Refused(format!("{:?}", a.code)));
                }
                self.on_connected(events)?;
            }
            v4::Packet::SubAck(s) => events.push(Event::Subscribed {
                granted: s
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, v4::SubscribeReasonCode::Success(_))),
            }),
            v4::Packet::Publish(p) => {
                let message = Event::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    expiry: None,
                };
                self.on_message(message, p.qos as u8, p.pkid, events);
            }
            v4::Packet::PubAck(a) => self.on_acked(a.pkid, 1),
            v4::Packet::PubRec(r) => self.on_pubrec(r.pkid),
            v4::Packet::PubComp(c) => self.on_acked(c.pkid, 2),
            v4::Packet::PubRel(r) => self.on_pubrel(r.pkid),
            v4::Packet::PingResp => self.ping_sent = None,
            v4::Packet::UnsubAck(_) => {}
            v4::Packet::Disconnect => {
                return Err(SessionError::ServerDisconnect("DISCONNECT".into()))
            }
            v4::Packet::Connect(_)
            | v4::Packet::Subscribe(_)
            | v4::Packet::Unsubscribe(_)
            | v4::Packet::PingReq => return Err(SessionError::Unexpected("client packet")),
        }
        Ok(())
    }

    fn on_packet_v5(&mut self, p: v5::Packet, events: &mut Vec<Event>) -> Result<(), SessionError> {
        match p {
            v5::Packet::ConnAck(a) => {
                if a.code == v5::ConnectReturnCode::UnsupportedProtocolVersion {
                    return Err(SessionError::VersionRefused(
                        "CONNACK reason 0x84 Unsupported Protocol Version".into(),
                    ));
                }
                if a.code != v5::ConnectReturnCode::Success {
                    return Err(SessionError::Refused(format!("{:?}", a.code)));
                }
                if let Some(rm) = a.properties.as_ref().and_then(|p| p.receive_max) {
                    self.window = (rm as usize).clamp(1, self.slots.len() - 1);
                }
                if let Some(mp) = a.properties.as_ref().and_then(|p| p.max_packet_size) {
                    self.out_max = self.out_max.min(mp as usize);
                }
                // The broker may impose its own keep-alive (MQTT 5, 3.2.2.3.14).
                if let Some(ka) = a.properties.as_ref().and_then(|p| p.server_keep_alive) {
                    self.keep_alive = Duration::from_secs(ka as u64);
                }
                self.on_connected(events)?;
                self.v5_accepted = true;
            }
            v5::Packet::SubAck(s) => events.push(Event::Subscribed {
                granted: s
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, v5::SubscribeReasonCode::Success(_))),
            }),
            v5::Packet::Publish(p) => {
                let expiry = p
                    .properties
                    .as_ref()
                    .and_then(|pr| pr.message_expiry_interval)
                    .map(|s| Duration::from_secs(s as u64));
                // A topic that is not UTF-8 names no endpoint: skipped (and acknowledged, so
                // the broker does not send it again), the connection kept.
                let event = match String::from_utf8(p.topic.to_vec()) {
                    Ok(topic) => Event::Message {
                        topic,
                        payload: p.payload.to_vec(),
                        expiry,
                    },
                    Err(_) => Event::Skipped {
                        why: "topic is not UTF-8".into(),
                    },
                };
                self.on_message(event, p.qos as u8, p.pkid, events);
            }
            v5::Packet::PubAck(a) => self.on_acked(a.pkid, 1),
            v5::Packet::PubRec(r) => self.on_pubrec(r.pkid),
            v5::Packet::PubComp(c) => self.on_acked(c.pkid, 2),
            v5::Packet::PubRel(r) => self.on_pubrel(r.pkid),
            v5::Packet::PingResp(_) => self.ping_sent = None,
            v5::Packet::UnsubAck(_) | v5::Packet::Auth(_) => {}
            v5::Packet::Disconnect(d) => {
                return Err(SessionError::ServerDisconnect(format!(
                    "{:?}",
                    d.reason_code
                )))
            }
            v5::Packet::Connect(..)
            | v5::Packet::Subscribe(_)
            | v5::Packet::Unsubscribe(_)
            | v5::Packet::PingReq(_) => return Err(SessionError::Unexpected("client packet")),
        }
        Ok(())
    }

    fn on_connected(&mut self, events: &mut Vec<Event>) -> Result<(), SessionError> {
        if self.phase != Phase::AwaitConnAck {
            return Err(SessionError::Unexpected("CONNACK"));
        }
        self.phase = Phase::Connected;
        events.push(Event::Connected);
        // Resend what the previous connection left unacknowledged, oldest first: slots are
        // filled in cyclic order starting at `next_pkid`.
        let n = self.slots.len() - 1;
        for k in 0..n {
            let pkid = ((self.next_pkid as usize - 1 + k) % n + 1) as u16;
            let Some(u) = self.slots[pkid as usize].as_ref() else {
                continue;
            };
            if u.released {
                self.encode_ack(AckKind::Rel, pkid);
            } else {
                let (topic, qos, payload) = (u.topic.clone(), u.qos, u.payload.clone());
                self.encode_publish(&topic, qos, pkid, true, payload);
            }
        }
        Ok(())
    }

    /// Acknowledges an incoming PUBLISH as its QoS requires and reports `event` (the message,
    /// or why it was skipped) once: a resent QoS 2 message (same id before PUBREL) is
    /// acknowledged again, not reported again.
    fn on_message(&mut self, event: Event, qos: u8, pkid: u16, events: &mut Vec<Event>) {
        match qos {
            0 => events.push(event),
            1 => {
                write_ack(self.proto, &mut self.acks, AckKind::Ack, pkid);
                events.push(event);
            }
            _ => {
                if !self.awaiting_rel.contains(&pkid) {
                    self.awaiting_rel.push(pkid);
                    events.push(event);
                }
                self.encode_ack(AckKind::Rec, pkid);
            }
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) ends the publish in slot `pkid`. Stray ids are ignored.
    fn on_acked(&mut self, pkid: u16, qos: u8) {
        if let Some(slot) = self.slots.get_mut(pkid as usize) {
            if slot.as_ref().is_some_and(|u| u.qos == qos) {
                *slot = None;
                self.unacked -= 1;
            }
        }
    }

    fn on_pubrec(&mut self, pkid: u16) {
        if let Some(Some(u)) = self.slots.get_mut(pkid as usize) {
            if u.qos == 2 {
                u.released = true;
                // The payload is no longer needed: only PUBREL is ever sent again.
                u.payload = bytes::Bytes::new();
                self.encode_ack(AckKind::Rel, pkid);
            }
        }
    }

    fn on_pubrel(&mut self, pkid: u16) {
        self.awaiting_rel.retain(|&p| p != pkid);
        self.encode_ack(AckKind::Comp, pkid);
    }

    fn encode_publish(
        &mut self,
        topic: &str,
        qos: u8,
        pkid: u16,
        dup: bool,
        payload: bytes::Bytes,
    ) {
        match self.proto {
            Protocol::V311 => {
                let p = v4::Publish {
                    dup,
                    qos: qos_v4(qos),
                    retain: false,
                    topic: topic.to_string(),
                    pkid,
                    payload,
                };
                let _ = p.write(&mut self.out);
            }
            Protocol::V5 => {
                let p = v5::Publish {
                    dup,
                    qos: qos_v5(qos),
                    retain: false,
                    topic: bytes::Bytes::copy_from_slice(topic.as_bytes()),
                    pkid,
                    payload,
                    properties: None,
                };
                let _ = p.write(&mut self.out);
            }
        }
    }

    fn encode_ack(&mut self, kind: AckKind, pkid: u16) {
        write_ack(self.proto, &mut self.out, kind, pkid);
    }

    /// Publishes waiting for an acknowledgement.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// The version this connection speaks (and the next one will, unless it falls back).
    pub fn protocol(&self) -> Protocol {
        self.proto
    }

    /// The shell's report that the transport ended (`why`: end of stream, reset, a failed read
    /// or write); returns the error that describes it, which tells whether a CONNACK came.
    pub fn on_closed(&self, why: String) -> SessionError {
        if self.phase == Phase::AwaitConnAck {
            SessionError::ClosedBeforeConnAck(why)
        } else {
            SessionError::Closed(why)
        }
    }

    /// Decides what follows a connection that ended with `error` (from [`MqttSession::on_read`],
    /// [`MqttSession::on_tick`] or [`MqttSession::on_closed`]). With `Auto` on MQTT 5, a refusal
    /// of the version, or a close before CONNACK by a broker that never accepted 5 in this
    /// session, switches this session to 3.1.1 for good and answers [`Retry::AtOnce`].
    pub fn after_failure(&mut self, error: &SessionError) -> Retry {
        if self.opts.version != MqttVersion::Auto || !self.refuses_v5(error) {
            return Retry::Backoff;
        }
        self.proto = Protocol::V311;
        Retry::AtOnce
    }

    /// Whether a connection that ended with `error` says the broker does not take MQTT 5: it
    /// was an MQTT 5 connection, and the broker refused the version, or closed the connection
    /// before CONNACK without having accepted MQTT 5 before in this session. `Auto` falls back
    /// on it; with a forced `5` the shell reports it as a configuration error.
    pub fn refuses_v5(&self, error: &SessionError) -> bool {
        self.proto == Protocol::V5
            && match error {
                SessionError::VersionRefused(_) => true,
                SessionError::ClosedBeforeConnAck(_) => !self.v5_accepted,
                _ => false,
            }
    }
}

fn write_ack(version: Protocol, out: &mut BytesMut, kind: AckKind, pkid: u16) {
    match version {
        Protocol::V311 => {
            let _ = match kind {
                AckKind::Ack => v4::PubAck::new(pkid).write(out),
                AckKind::Rec => v4::PubRec::new(pkid).write(out),
                AckKind::Rel => v4::PubRel::new(pkid).write(out),
                AckKind::Comp => v4::PubComp::new(pkid).write(out),
            };
        }
        Protocol::V5 => {
            let p = match kind {
                AckKind::Ack => v5::Packet::PubAck(v5::PubAck::new(pkid, None)),
                AckKind::Rec => v5::Packet::PubRec(v5::PubRec::new(pkid, None)),
                AckKind::Rel => v5::Packet::PubRel(v5::PubRel::new(pkid, None)),
                AckKind::Comp => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
            };
            let _ = p.write(out, None);
        }
    }
}

#[derive(Clone, Copy)]
/// PUBACK, PUBREC, PUBREL, PUBCOMP.
enum AckKind {
    Ack,
    Rec,
    Rel,
    Comp,
}

/// The fixed header's length and the packet's remaining length, once enough bytes are there.
fn frame_header(buf: &[u8]) -> Result<Option<(usize, usize)>, SessionError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, len)));
        }
    }
    Err(SessionError::Malformed(
        "remaining length over 4 bytes".into(),
    ))
}

fn qos_v4(q: u8) -> rumqttc::mqttbytes::QoS {
    match q {
        0 => rumqttc::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_v5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS as Q4;
    use rumqttc::v5::mqttbytes::QoS as Q5;

    fn opts(version: MqttVersion, inflight: u16) -> SessionOptions {
        SessionOptions {
            version,
            client_id: "gw".into(),
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            max_packet_size: 1024,
            inflight,
        }
    }

    /// What the session wrote, decoded as the broker would (v3.1.1), and consumed.
    fn sent4(s: &mut MqttSession, now: Instant) -> Vec<v4::Packet> {
        let mut b = BytesMut::from(s.pending_output());
        s.consume_output(b.len(), now);
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(v4::Packet::read(&mut b, usize::MAX).expect("session wrote a valid packet"));
        }
        out
    }

    fn sent5(s: &mut MqttSession, now: Instant) -> Vec<v5::Packet> {
        let mut b = BytesMut::from(s.pending_output());
        s.consume_output(b.len(), now);
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(v5::Packet::read(&mut b, None).expect("session wrote a valid packet"));
        }
        out
    }

    fn bytes4(p: v4::Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        b.to_vec()
    }

    fn bytes5(p: v5::Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, None).unwrap();
        b.to_vec()
    }

    fn connected4(inflight: u16) -> (MqttSession, Instant) {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V311, inflight), now);
        s.start(now);
        assert!(matches!(sent4(&mut s, now)[..], [v4::Packet::Connect(_)]));
        let mut ev = Vec::new();
        let ack = bytes4(v4::Packet::ConnAck(v4::ConnAck::new(
            v4::ConnectReturnCode::Success,
            false,
        )));
        s.on_read(&ack, &mut ev).unwrap();
        assert_eq!(ev, vec![Event::Connected]);
        (s, now)
    }

    fn pkids4(p: &[v4::Packet]) -> Vec<(u16, bool)> {
        p.iter()
            .map(|p| match p {
                v4::Packet::Publish(p) => (p.pkid, p.dup),
                other => panic!("expected PUBLISH, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn connects_then_publishes_in_one_buffer() {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V311, 10), now);
        s.start(now);
        assert!(!s.can_publish(), "no PUBLISH before CONNACK");
        match &sent4(&mut s, now)[..] {
            [v4::Packet::Connect(c)] => {
                assert_eq!(c.client_id, "gw");
                assert_eq!(c.keep_alive, 30);
                assert!(c.clean_session);
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        let mut ev = Vec::new();
        let ack = bytes4(v4::Packet::ConnAck(v4::ConnAck::new(
            v4::ConnectReturnCode::Success,
            false,
        )));
        s.on_read(&ack, &mut ev).unwrap();
        assert_eq!(ev, vec![Event::Connected]);
        s.subscribe("lwm2m/+/dn/#", 1);
        s.publish("a".into(), 1, b"x".to_vec()).unwrap();
        s.publish("b".into(), 0, b"y".to_vec()).unwrap();
        s.publish("c".into(), 1, b"z".to_vec()).unwrap();
        let p = sent4(&mut s, now);
        assert_eq!(p.len(), 4);
        assert!(
            matches!(&p[0], v4::Packet::Subscribe(sub) if sub.filters[0].path == "lwm2m/+/dn/#")
        );
        match (&p[1], &p[2], &p[3]) {
            (v4::Packet::Publish(a), v4::Packet::Publish(b), v4::Packet::Publish(c)) => {
                assert_eq!((a.topic.as_str(), a.pkid, a.qos), ("a", 1, Q4::AtLeastOnce));
                assert_eq!((b.topic.as_str(), b.pkid, b.qos), ("b", 0, Q4::AtMostOnce));
                assert_eq!(
                    (c.topic.as_str(), c.pkid, &c.payload[..]),
                    ("c", 2, &b"z"[..])
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.unacked(), 2);
    }

    #[test]
    fn window_limits_unacked_publishes_and_acks_free_slots() {
        let (mut s, now) = connected4(2);
        s.publish("t".into(), 1, vec![1]).unwrap();
        s.publish("t".into(), 1, vec![2]).unwrap();
        assert!(!s.can_publish(), "window of 2 is full");
        let mut ev = Vec::new();
        // Out of order: acking 2 does not free the next id (1), so the window stays closed.
        s.on_read(&bytes4(v4::Packet::PubAck(v4::PubAck::new(2))), &mut ev)
            .unwrap();
        assert_eq!(s.unacked(), 1);
        assert!(!s.can_publish());
        s.on_read(&bytes4(v4::Packet::PubAck(v4::PubAck::new(1))), &mut ev)
            .unwrap();
        assert!(s.can_publish());
        // Stray and repeated acks change nothing.
        s.on_read(&bytes4(v4::Packet::PubAck(v4::PubAck::new(1))), &mut ev)
            .unwrap();
        s.on_read(&bytes4(v4::Packet::PubAck(v4::PubAck::new(999))), &mut ev)
            .unwrap();
        assert_eq!(s.unacked(), 0);
        s.publish("t".into(), 1, vec![3]).unwrap();
        assert_eq!(pkids4(&sent4(&mut s, now)[2..]), vec![(1, false)]);
        assert!(ev.is_empty());
    }

    #[test]
    fn unacked_publishes_are_resent_oldest_first_after_reconnect() {
        let (mut s, now) = connected4(3);
        for i in 0..5u8 {
            if i >= 2 {
                let mut ev = Vec::new();
                let ack = bytes4(v4::Packet::PubAck(v4::PubAck::new(i as u16 - 1)));
                s.on_read(&ack, &mut ev).unwrap();
            }
            s.publish(format!("t{i}"), 1, vec![i]).unwrap();
        }
        // ids used: 1,2,3,1,2; acked: 1 (first), 2 (first), 3 -> unacked are t3 (id 1), t4 (id 2)
        let _ = sent4(&mut s, now);
        assert_eq!(s.unacked(), 2);
        s.start(now);
        assert!(!s.can_publish());
        let mut ev = Vec::new();
        let ack = bytes4(v4::Packet::ConnAck(v4::ConnAck::new(
            v4::ConnectReturnCode::Success,
            false,
        )));
        s.on_read(&ack, &mut ev).unwrap();
        let p = sent4(&mut s, now);
        assert!(matches!(p[0], v4::Packet::Connect(_)));
        let resent: Vec<(String, u16, bool)> = p[1..]
            .iter()
            .map(|p| match p {
                v4::Packet::Publish(p) => (p.topic.clone(), p.pkid, p.dup),
                other => panic!("expected PUBLISH, got {other:?}"),
            })
            .collect();
        assert_eq!(
            resent,
            vec![("t3".to_string(), 1, true), ("t4".to_string(), 2, true)]
        );
    }

    fn connack5(props: v5::ConnAckProperties) -> Vec<u8> {
        bytes5(v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: v5::ConnectReturnCode::Success,
            properties: Some(props),
        }))
    }

    fn no_props() -> v5::ConnAckProperties {
        v5::ConnAckProperties {
            session_expiry_interval: None,
            receive_max: None,
            max_qos: None,
            retain_available: None,
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: None,
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        }
    }

    #[test]
    fn v5_broker_limits_last_one_connection() {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V5, 4), now);
        s.start(now);
        let _ = sent5(&mut s, now);
        let limited = v5::ConnAckProperties {
            server_keep_alive: Some(5),
            max_packet_size: Some(100),
            ..no_props()
        };
        s.on_read(&connack5(limited), &mut Vec::new()).unwrap();
        assert_eq!(s.next_deadline(), now + Duration::from_secs(5));
        assert!(matches!(
            s.publish("t".into(), 0, vec![0; 200]),
            Err(SessionError::TooLarge { max: 100, .. })
        ));
        // The next connection announces our own settings again and starts from them.
        s.start(now);
        match &sent5(&mut s, now)[..] {
            [v5::Packet::Connect(c, None, None)] => {
                assert_eq!(c.keep_alive, 30);
                assert_eq!(c.properties.as_ref().unwrap().max_packet_size, Some(1024));
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        s.on_read(&connack5(no_props()), &mut Vec::new()).unwrap();
        assert_eq!(s.next_deadline(), now + Duration::from_secs(30));
        s.publish("t".into(), 0, vec![0; 200]).unwrap();
    }

    #[test]
    fn v5_message_with_a_non_utf8_topic_is_skipped_and_acknowledged() {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V5, 4), now);
        s.start(now);
        let _ = sent5(&mut s, now);
        let mut ev = Vec::new();
        s.on_read(&connack5(no_props()), &mut ev).unwrap();
        let bad = v5::Publish {
            dup: false,
            qos: Q5::AtLeastOnce,
            retain: false,
            topic: bytes::Bytes::from_static(&[0xff, 0xfe, b'/', b'd', b'n']),
            pkid: 9,
            payload: bytes::Bytes::from_static(b"{}"),
            properties: None,
        };
        let good = v5::Publish::new("lwm2m/ep/dn", Q5::AtMostOnce, &b"{}"[..], None);
        let mut wire = bytes5(v5::Packet::Publish(bad));
        wire.extend(bytes5(v5::Packet::Publish(good)));
        s.on_read(&wire, &mut ev).unwrap();
        assert!(matches!(&ev[1], Event::Skipped { why } if why.contains("UTF-8")));
        assert!(matches!(&ev[2], Event::Message { topic, .. } if topic == "lwm2m/ep/dn"));
        s.on_tick(now).unwrap();
        s.on_tick(now + ACK_DELAY).unwrap();
        assert!(matches!(&sent5(&mut s, now)[..], [v5::Packet::PubAck(a)] if a.pkid == 9));
    }

    #[test]
    fn a_silent_broker_is_given_up_after_the_connack_timeout() {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V311, 4), now);
        s.start(now);
        assert_eq!(s.next_deadline(), now + CONNACK_TIMEOUT);
        s.on_tick(now + CONNACK_TIMEOUT / 2).unwrap();
        assert_eq!(
            s.on_tick(now + CONNACK_TIMEOUT),
            Err(SessionError::ConnAckTimeout(CONNACK_TIMEOUT))
        );
    }

    #[test]
    fn refused_connection_is_an_error() {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V311, 4), now);
        s.start(now);
        let nack = bytes4(v4::Packet::ConnAck(v4::ConnAck::new(
            v4::ConnectReturnCode::NotAuthorized,
            false,
        )));
        assert!(matches!(
            s.on_read(&nack, &mut Vec::new()),
            Err(SessionError::Refused(_))
        ));
    }

    #[test]
    fn incoming_commands_are_acknowledged_and_qos2_delivered_once() {
        let (mut s, now) = connected4(4);
        let mut ev = Vec::new();
        let mut p1 = v4::Publish::new("lwm2m/ep/dn", Q4::AtLeastOnce, b"{}".to_vec());
        p1.pkid = 7;
        let mut p2 = v4::Publish::new("lwm2m/ep2/dn", Q4::ExactlyOnce, b"[]".to_vec());
        p2.pkid = 8;
        // One packet split across reads, then the QoS 2 one twice (a broker resend).
        let mut wire = bytes4(v4::Packet::Publish(p1));
        wire.extend(bytes4(v4::Packet::Publish(p2.clone())));
        for b in wire.chunks(3) {
            s.on_read(b, &mut ev).unwrap();
        }
        s.on_read(&bytes4(v4::Packet::Publish(p2)), &mut ev)
            .unwrap();
        assert_eq!(
            ev,
            vec![
                Event::Message {
                    topic: "lwm2m/ep/dn".into(),
                    payload: b"{}".to_vec(),
                    expiry: None
                },
                Event::Message {
                    topic: "lwm2m/ep2/dn".into(),
                    payload: b"[]".to_vec(),
                    expiry: None
                },
            ]
        );
        s.on_read(&bytes4(v4::Packet::PubRel(v4::PubRel::new(8))), &mut ev)
            .unwrap();
        // The QoS 2 handshake answers at once; the held-back PUBACK goes along with it.
        s.on_tick(now).unwrap();
        assert_eq!(
            sent4(&mut s, now),
            vec![
                v4::Packet::PubRec(v4::PubRec::new(8)),
                v4::Packet::PubRec(v4::PubRec::new(8)),
                v4::Packet::PubComp(v4::PubComp::new(8)),
                v4::Packet::PubAck(v4::PubAck::new(7)),
            ]
        );
    }

    #[test]
    fn a_command_puback_leaves_with_the_next_publish() {
        let (mut s, now) = connected4(4);
        let mut cmd = v4::Publish::new("lwm2m/ep/dn", Q4::AtLeastOnce, b"{}".to_vec());
        cmd.pkid = 3;
        let mut ev = Vec::new();
        s.on_read(&bytes4(v4::Packet::Publish(cmd)), &mut ev)
            .unwrap();
        s.on_tick(now).unwrap();
        assert!(s.pending_output().is_empty(), "PUBACK held back");
        s.publish("lwm2m/ep/up/resp".into(), 1, b"{}".to_vec())
            .unwrap();
        s.on_tick(now).unwrap();
        let out = sent4(&mut s, now);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], v4::Packet::Publish(p) if p.topic == "lwm2m/ep/up/resp"));
        assert_eq!(out[1], v4::Packet::PubAck(v4::PubAck::new(3)));
        // Alone, a PUBACK leaves after ACK_DELAY.
        let mut cmd = v4::Publish::new("lwm2m/ep/dn", Q4::AtLeastOnce, b"{}".to_vec());
        cmd.pkid = 4;
        s.on_read(&bytes4(v4::Packet::Publish(cmd)), &mut ev)
            .unwrap();
        let t = now + Duration::from_secs(1);
        s.on_tick(t).unwrap();
        assert!(s.pending_output().is_empty());
        assert_eq!(s.next_deadline(), t + ACK_DELAY);
        s.on_tick(t + ACK_DELAY / 2).unwrap();
        assert!(s.pending_output().is_empty());
        s.on_tick(t + ACK_DELAY).unwrap();
        assert_eq!(
            sent4(&mut s, t),
            vec![v4::Packet::PubAck(v4::PubAck::new(4))]
        );
    }

    #[test]
    fn outgoing_qos2_releases_and_resends_only_pubrel() {
        let (mut s, now) = connected4(4);
        s.publish("t".into(), 2, vec![1]).unwrap();
        let _ = sent4(&mut s, now);
        let mut ev = Vec::new();
        s.on_read(&bytes4(v4::Packet::PubRec(v4::PubRec::new(1))), &mut ev)
            .unwrap();
        assert_eq!(
            sent4(&mut s, now),
            vec![v4::Packet::PubRel(v4::PubRel::new(1))]
        );
        s.start(now);
        let ack = bytes4(v4::Packet::ConnAck(v4::ConnAck::new(
            v4::ConnectReturnCode::Success,
            false,
        )));
        s.on_read(&ack, &mut ev).unwrap();
        assert_eq!(
            sent4(&mut s, now)[1..],
            [v4::Packet::PubRel(v4::PubRel::new(1))]
        );
        // A PUBACK does not end a QoS 2 exchange; PUBCOMP does.
        s.on_read(&bytes4(v4::Packet::PubAck(v4::PubAck::new(1))), &mut ev)
            .unwrap();
        assert_eq!(s.unacked(), 1);
        s.on_read(&bytes4(v4::Packet::PubComp(v4::PubComp::new(1))), &mut ev)
            .unwrap();
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn oversized_packets_are_skipped_without_losing_the_connection() {
        let (mut s, _) = connected4(4);
        let big = v4::Publish::new("lwm2m/ep/dn", Q4::AtMostOnce, vec![b'x'; 5000]);
        let small = v4::Publish::new("lwm2m/ep/dn", Q4::AtMostOnce, b"ok".to_vec());
        let mut wire = bytes4(v4::Packet::Publish(big));
        wire.extend(bytes4(v4::Packet::Publish(small)));
        let mut ev = Vec::new();
        for b in wire.chunks(700) {
            s.on_read(b, &mut ev).unwrap();
        }
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(matches!(&ev[0], Event::Skipped { why } if why.contains("max_packet_size")));
        assert_eq!(
            ev[1],
            Event::Message {
                topic: "lwm2m/ep/dn".into(),
                payload: b"ok".to_vec(),
                expiry: None
            }
        );
        assert!(matches!(
            s.publish("t".into(), 0, vec![0; 2000]),
            Err(SessionError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let (mut s, _) = connected4(4);
        assert!(s
            .on_read(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], &mut Vec::new())
            .is_err());
        let (mut s, _) = connected4(4);
        // A CONNECT is a client's packet.
        let connect = bytes4(v4::Packet::Connect(v4::Connect::new("x")));
        assert!(s.on_read(&connect, &mut Vec::new()).is_err());
    }

    #[test]
    fn keep_alive_pings_and_times_out() {
        let (mut s, t0) = connected4(4);
        let ka = Duration::from_secs(30);
        s.on_tick(t0 + ka / 2).unwrap();
        assert!(s.pending_output().is_empty());
        s.on_tick(t0 + ka).unwrap();
        assert_eq!(sent4(&mut s, t0 + ka), vec![v4::Packet::PingReq]);
        let mut ev = Vec::new();
        s.on_read(&bytes4(v4::Packet::PingResp), &mut ev).unwrap();
        s.on_tick(t0 + ka * 2).unwrap();
        assert_eq!(sent4(&mut s, t0 + ka * 2), vec![v4::Packet::PingReq]);
        assert_eq!(s.next_deadline(), t0 + ka * 3);
        assert_eq!(s.on_tick(t0 + ka * 3), Err(SessionError::KeepAliveTimeout));
    }

    #[test]
    fn v5_honours_receive_maximum_and_carries_message_expiry() {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(MqttVersion::V5, 100), now);
        s.start(now);
        match &sent5(&mut s, now)[..] {
            [v5::Packet::Connect(c, None, None)] => {
                let p = c.properties.as_ref().unwrap();
                assert_eq!(p.max_packet_size, Some(1024));
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        let props = v5::ConnAckProperties {
            receive_max: Some(2),
            ..no_props()
        };
        let mut ev = Vec::new();
        s.on_read(&connack5(props), &mut ev).unwrap();
        s.publish("a".into(), 1, vec![1]).unwrap();
        s.publish("b".into(), 1, vec![2]).unwrap();
        assert!(!s.can_publish(), "broker's Receive Maximum of 2 reached");
        let pp = v5::PublishProperties {
            message_expiry_interval: Some(9),
            ..Default::default()
        };
        let mut cmd = v5::Publish::new("lwm2m/ep/dn", Q5::AtLeastOnce, &b"{}"[..], Some(pp));
        cmd.pkid = 3;
        s.on_read(&bytes5(v5::Packet::Publish(cmd)), &mut ev)
            .unwrap();
        assert_eq!(
            ev[1],
            Event::Message {
                topic: "lwm2m/ep/dn".into(),
                payload: b"{}".to_vec(),
                expiry: Some(Duration::from_secs(9))
            }
        );
        s.on_tick(now + ACK_DELAY).unwrap();
        let out = sent5(&mut s, now);
        assert!(matches!(&out[2], v5::Packet::PubAck(a) if a.pkid == 3));
    }
}

/// The version choice: `auto`'s fallback to 3.1.1, and what does not trigger it.
#[cfg(test)]
mod version_tests {
    use super::*;

    fn opts(version: MqttVersion) -> SessionOptions {
        SessionOptions {
            version,
            client_id: "gw".into(),
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            max_packet_size: 1024,
            inflight: 4,
        }
    }

    /// The protocol level of the CONNECT the session wrote (and consumes its output).
    fn connect_level(s: &mut MqttSession, now: Instant) -> u8 {
        let out = s.pending_output().to_vec();
        s.consume_output(out.len(), now);
        assert_eq!(out[0], 0x10, "a CONNECT: {out:02x?}");
        // Fixed header (2 bytes: the CONNECT is short), protocol name "MQTT" (6), level.
        assert_eq!(&out[2..8], b"\x00\x04MQTT");
        out[8]
    }

    fn connack4() -> Vec<u8> {
        vec![0x20, 0x02, 0x00, 0x00]
    }

    /// An MQTT 5 CONNACK with `reason` and no properties.
    fn connack5(reason: u8) -> Vec<u8> {
        vec![0x20, 0x03, 0x00, reason, 0x00]
    }

    fn started(version: MqttVersion) -> (MqttSession, Instant) {
        let now = Instant::now();
        let mut s = MqttSession::new(opts(version), now);
        s.start(now);
        (s, now)
    }

    #[test]
    fn auto_connects_with_5_and_stays_there_when_accepted() {
        let (mut s, now) = started(MqttVersion::Auto);
        assert_eq!(
            (s.protocol(), connect_level(&mut s, now)),
            (Protocol::V5, 5)
        );
        let mut ev = Vec::new();
        s.on_read(&connack5(0), &mut ev).unwrap();
        assert_eq!(ev, vec![Event::Connected]);
        // Losing an established connection is no reason to change versions.
        let e = s.on_closed("reset".into());
        assert_eq!(e, SessionError::Closed("reset".into()));
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 5);
        // Nor is a close before CONNACK once this broker has accepted MQTT 5 (a restart, say).
        let e = s.on_closed("end of stream".into());
        assert_eq!(e, SessionError::ClosedBeforeConnAck("end of stream".into()));
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        assert_eq!(s.protocol(), Protocol::V5);
    }

    #[test]
    fn auto_falls_back_on_a_connack_in_311_framing_for_good() {
        let (mut s, now) = started(MqttVersion::Auto);
        assert_eq!(connect_level(&mut s, now), 5);
        let mut ev = Vec::new();
        // Split across reads: nothing until the whole packet is in.
        s.on_read(&[0x20, 0x02], &mut ev).unwrap();
        let e = s.on_read(&[0x00, 0x01], &mut ev).unwrap_err();
        assert_eq!(
            e,
            SessionError::VersionRefused("CONNACK in MQTT 3.1.1 framing, return code 0x01".into())
        );
        assert!(ev.is_empty());
        assert_eq!(s.after_failure(&e), Retry::AtOnce);
        assert_eq!(s.protocol(), Protocol::V311);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 4);
        s.on_read(&connack4(), &mut ev).unwrap();
        assert_eq!(ev, vec![Event::Connected]);
        // 3.1.1 framing from now on, and every later connection too.
        s.publish("t".into(), 1, b"x".to_vec()).unwrap();
        let mut out = BytesMut::from(s.pending_output());
        s.consume_output(out.len(), now);
        assert!(matches!(
            v4::Packet::read(&mut out, usize::MAX),
            Ok(v4::Packet::Publish(p)) if p.topic == "t" && p.pkid == 1
        ));
        let e = s.on_closed("end of stream".into());
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 4);
        let e = s.on_closed("end of stream".into());
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        assert_eq!(s.protocol(), Protocol::V311);
    }

    #[test]
    fn auto_falls_back_on_reason_0x84_and_on_a_close_before_any_connack() {
        let (mut s, now) = started(MqttVersion::Auto);
        let _ = connect_level(&mut s, now);
        let e = s.on_read(&connack5(0x84), &mut Vec::new()).unwrap_err();
        assert_eq!(
            e,
            SessionError::VersionRefused("CONNACK reason 0x84 Unsupported Protocol Version".into())
        );
        assert_eq!(s.after_failure(&e), Retry::AtOnce);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 4);

        // A broker that hangs up on a level-5 CONNECT (rumqttd's 3.1.1 listener does).
        let (mut s, now) = started(MqttVersion::Auto);
        let _ = connect_level(&mut s, now);
        let e = s.on_closed("end of stream".into());
        assert_eq!(s.after_failure(&e), Retry::AtOnce);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 4);
    }

    #[test]
    fn other_failures_of_auto_keep_5() {
        let failures = [
            SessionError::Refused("NotAuthorized".into()),
            SessionError::ConnAckTimeout(CONNACK_TIMEOUT),
            SessionError::KeepAliveTimeout,
            SessionError::Malformed("x".into()),
            SessionError::ServerDisconnect("ServerBusy".into()),
            SessionError::Closed("reset".into()),
        ];
        for e in failures {
            let (mut s, now) = started(MqttVersion::Auto);
            assert_eq!(s.after_failure(&e), Retry::Backoff, "{e}");
            s.start(now);
            assert_eq!(connect_level(&mut s, now), 5, "{e}");
        }
        // Refused for another reason, in MQTT 5 framing: 0x87 Not authorized.
        let (mut s, _) = started(MqttVersion::Auto);
        let e = s.on_read(&connack5(0x87), &mut Vec::new()).unwrap_err();
        assert!(matches!(e, SessionError::Refused(_)), "{e:?}");
        assert_eq!(s.after_failure(&e), Retry::Backoff);
    }

    #[test]
    fn a_forced_version_never_falls_back() {
        let (mut s, now) = started(MqttVersion::V5);
        assert_eq!(connect_level(&mut s, now), 5);
        let e = s
            .on_read(&[0x20, 0x02, 0x00, 0x01], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, SessionError::VersionRefused(_)), "{e:?}");
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 5);
        let e = s.on_closed("end of stream".into());
        assert!(
            s.refuses_v5(&e),
            "reported as a refusal of the forced version"
        );
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        assert_eq!(s.protocol(), Protocol::V5);
        // Once this broker accepted 5, a close before CONNACK is no longer read as a refusal.
        s.start(now);
        s.on_read(&connack5(0), &mut Vec::new()).unwrap();
        s.start(now);
        assert!(!s.refuses_v5(&s.on_closed("end of stream".into())));

        let (mut s, now) = started(MqttVersion::V311);
        assert_eq!(connect_level(&mut s, now), 4);
        // 3.1.1 reads a 3.1.1 refusal as a refusal, nothing more.
        let e = s
            .on_read(&[0x20, 0x02, 0x00, 0x01], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, SessionError::Refused(_)), "{e:?}");
        assert!(!s.refuses_v5(&e));
        assert_eq!(s.after_failure(&e), Retry::Backoff);
        assert_eq!(s.protocol(), Protocol::V311);
    }

    #[test]
    fn unacknowledged_publishes_survive_the_fallback_in_311_framing() {
        let (mut s, now) = started(MqttVersion::Auto);
        let _ = connect_level(&mut s, now);
        s.on_read(&connack5(0), &mut Vec::new()).unwrap();
        s.publish("a".into(), 1, b"x".to_vec()).unwrap();
        let n = s.pending_output().len();
        s.consume_output(n, now);
        // A new connection that lands on a 3.1.1-only broker (a failover, say) before CONNACK:
        // since this session saw MQTT 5 accepted, only an explicit refusal falls back.
        s.start(now);
        let _ = connect_level(&mut s, now);
        let e = s
            .on_read(&[0x20, 0x02, 0x00, 0x01], &mut Vec::new())
            .unwrap_err();
        assert_eq!(s.after_failure(&e), Retry::AtOnce);
        s.start(now);
        assert_eq!(connect_level(&mut s, now), 4);
        s.on_read(&connack4(), &mut Vec::new()).unwrap();
        let mut out = BytesMut::from(s.pending_output());
        match v4::Packet::read(&mut out, usize::MAX) {
            Ok(v4::Packet::Publish(p)) => {
                assert_eq!((p.topic.as_str(), p.pkid, p.dup), ("a", 1, true))
            }
            other => panic!("expected the resent PUBLISH, got {other:?}"),
        }
        assert_eq!(s.unacked(), 1);
    }

    /// Every short CONNACK a broker could send to `auto`'s first CONNECT: an error or a
    /// connection, never a panic; the next connection always starts cleanly.
    #[test]
    fn any_short_connack_is_handled() {
        let now = Instant::now();
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for wire in [vec![0x20, 0x02, a, b], vec![0x20, 0x03, a, b, 0x00]] {
                    let (mut s, _) = started(MqttVersion::Auto);
                    let mut ev = Vec::new();
                    let Err(e) = s.on_read(&wire, &mut ev) else {
                        assert_eq!(ev, vec![Event::Connected], "{wire:02x?}");
                        continue;
                    };
                    // Two bytes are 3.1.1 framing; 0x84 is MQTT 5's version refusal.
                    let (want, level) = if wire[1] == 2 || b == 0x84 {
                        (Retry::AtOnce, 4)
                    } else {
                        (Retry::Backoff, 5)
                    };
                    assert_eq!(s.after_failure(&e), want, "{wire:02x?}: {e}");
                    s.consume_output(s.pending_output().len(), now);
                    s.start(now);
                    assert_eq!(connect_level(&mut s, now), level, "{wire:02x?}");
                }
            }
        }
    }

    #[test]
    fn a_311_framed_connack_after_connecting_is_not_a_refusal() {
        let (mut s, now) = started(MqttVersion::Auto);
        let _ = connect_level(&mut s, now);
        s.on_read(&connack5(0), &mut Vec::new()).unwrap();
        // A second CONNACK is a protocol error whatever its framing, and no version refusal.
        let e = s
            .on_read(&[0x20, 0x02, 0x00, 0x01], &mut Vec::new())
            .unwrap_err();
        assert!(!matches!(e, SessionError::VersionRefused(_)), "{e:?}");
        assert_eq!(s.after_failure(&e), Retry::Backoff);
    }
}
