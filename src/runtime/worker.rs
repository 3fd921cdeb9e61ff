//! A worker: one thread (`worker-N`) owning one [`Shard`], the sans-IO state machine for the
//! devices routed to it. It takes [`WorkerMsg`]s from its queue, feeds them to the shard, and
//! carries out the shard's [`Output`]: datagrams to send, MQTT messages to publish, address
//! index updates, counters.
//!
//! Every call into the shard is in this file, the message-driven ones in [`Worker::handle`], so
//! that a change of the core's API is adapted here alone.
//!
//! Back-pressure: a worker never blocks on MQTT. A publish that does not fit the MQTT thread's
//! queue is dropped and counted (`publish_dropped`); a datagram the socket will not take is
//! counted as a send error (CoAP retransmission covers it). When its own bounded queue is full,
//! the producers drop or refuse (see `channel`). It sleeps on its doorbell only when the queue is
//! empty and no timer is due.
//!
//! Hostile traffic (issue 12): a datagram whose answer tells of the sender's error (a 4.xx, a
//! RST, a drop, a refusal for its identity, a bad DTLS record or failed handshake) counts against
//! the source's error rate (`limits.error_rate`, this worker's own limiter); over it, the source
//! goes on the shared [`Blocklist`] and the event loop drops what it sends.
//!
//! Durable state (issue 12): a worker with a [`Durable`] restores its shard when it is built
//! (before any datagram), writes its journal and snapshots when they are due, and a last
//! snapshot when it stops, after everything queued before the stop was handled.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, TryRecvError};
use log::{debug, warn};

use crate::core::command;
use crate::core::ids::ShardId;
use crate::core::limits::{self, SourceLimiter};
use crate::core::settings::ShardConfig;
use crate::core::shard::{ImportReport, IndexUpdate, Output, Peer, Shard, SnapshotKind, Transmit};
use crate::dtls::ConnKey;

use super::addr_index::AddrIndex;
use super::blocklist::Blocklist;
use super::channel::{Query, QueryAnswer, WorkerMsg, WorkerRx};
use super::doorbell::Doorbell;
use super::durable::Durable;
use super::metrics::Metrics;
use super::mqtt::MqttClient;
use super::ops::Tap;
use super::secure::SecureListener;
use super::udp;

/// Messages a worker handles between two flushes of its replies and publishes.
const FLUSH_EVERY: usize = 32;

/// Messages taken in one round before the timers run again.
const ROUND: usize = 256;

pub(super) struct Worker {
    id: u16,
    shard: Shard,
    rx: Receiver<WorkerMsg>,
    bell: Arc<Doorbell>,
    /// Every listener, indexed like `Peer::listener`: replies leave from the socket the request
    /// came in on.
    sockets: Arc<Vec<UdpSocket>>,
    mqtt: MqttClient,
    index: Arc<AddrIndex>,
    metrics: Arc<Metrics>,
    /// The shard's registration count as last added to `metrics.registrations`.
    registrations: usize,
    /// Per listener: true for DTLS, whose datagrams go through `secure`.
    dtls_listener: Arc<Vec<bool>>,
    secure: Option<SecureListener>,
    /// DTLS records the DTLS layer produced this round (handshake flights), already on the wire.
    sealed: Vec<(ConnKey, Vec<u8>)>,
    /// This worker's DTLS session count as last added to `metrics.dtls_sessions`.
    dtls_sessions: usize,
    durable: Option<Durable>,
    /// What restoring the shard asked for (index entries, waiting commands), carried out first.
    restored: Output,
    /// MQTT messages dropped since the last warning about them, and when that was.
    unlogged_drops: u64,
    drops_logged_at: Option<Instant>,
    /// Errors per source this worker saw (`None`: no limit), and where over-limit sources go.
    errors: Option<SourceLimiter>,
    blocklist: Arc<Blocklist>,
    /// The operations surface: callers waiting for answers, live event streams.
    tap: Arc<Tap>,
}

impl Worker {
    /// Worker number `id`, with a fresh shard.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: usize,
        config: Arc<ShardConfig>,
        queue: WorkerRx,
        sockets: Arc<Vec<UdpSocket>>,
        dtls_listener: Arc<Vec<bool>>,
        secure: Option<SecureListener>,
        mqtt: MqttClient,
        index: Arc<AddrIndex>,
        metrics: Arc<Metrics>,
        durable: Option<Durable>,
        (errors, blocklist): (Option<SourceLimiter>, Arc<Blocklist>),
        tap: Arc<Tap>,
    ) -> anyhow::Result<Worker> {
        let shard_id = ShardId::new(id).context("too many workers")?;
        let shard = Shard::new(shard_id, config, rand::random());
        Ok(Worker {
            id: id as u16,
            shard,
            rx: queue.rx,
            bell: queue.bell,
            sockets,
            mqtt,
            index,
            metrics,
            registrations: 0,
            dtls_listener,
            secure,
            sealed: Vec::new(),
            dtls_sessions: 0,
            durable,
            restored: Output::default(),
            unlogged_drops: 0,
            drops_logged_at: None,
            errors,
            blocklist,
            tap,
        })
    }

    /// Restores the shard (and the DTLS sessions) from the state directory, before the worker
    /// runs; what that asks for is carried out when it starts. Workers restore in parallel.
    pub(super) fn restore(&mut self) -> Option<ImportReport> {
        let d = self.durable.as_mut()?;
        d.restore(&mut self.shard, self.secure.as_mut(), &mut self.restored)
    }

    /// The last snapshot, at stop.
    fn final_snapshot(&mut self) {
        if let Some(d) = &mut self.durable {
            let sec = self.secure.as_ref();
            d.snapshot(Instant::now(), &mut self.shard, sec, SnapshotKind::Final);
        }
    }

    /// The body of the worker thread; returns on [`WorkerMsg::Stop`] or a closed queue.
    pub(super) fn run(mut self) {
        self.bell.bind_current();
        let mut out = std::mem::take(&mut self.restored);
        self.flush(&mut out);
        if let Some(d) = &mut self.durable {
            d.start(Instant::now());
        }
        loop {
            let first = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Disconnected) => {
                    self.final_snapshot();
                    return;
                }
                Err(TryRecvError::Empty) => {
                    if !self.timer_due_or_sleep() {
                        continue;
                    }
                    None
                }
            };
            let now = Instant::now();
            if let Some(m) = first {
                if !self.handle_round(now, m, &mut out) {
                    // Stopped: what was handled goes out, then the last snapshot.
                    self.flush(&mut out);
                    self.final_snapshot();
                    return;
                }
            }
            if let Some(d) = &mut self.durable {
                d.on_timeout(now, &mut self.shard, self.secure.as_ref());
            }
            self.shard.on_timeout(now, &mut out);
            if let Some(sec) = &mut self.secure {
                sec.on_timeout(now, &mut self.shard, &mut out, &mut self.sealed);
            }
            self.flush(&mut out);
        }
    }

    /// With the queue empty: true if a shard timer is due; otherwise sleeps until the next
    /// deadline or a message, and returns false.
    fn timer_due_or_sleep(&mut self) -> bool {
        let now = Instant::now();
        let deadline = [
            self.shard.next_deadline(),
            self.secure.as_ref().and_then(|s| s.next_deadline()),
            self.durable.as_ref().and_then(|d| d.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        if deadline.is_some_and(|d| d <= now) {
            return true;
        }
        let rx = &self.rx;
        self.bell.sleep(deadline.map(|d| d - now), || rx.is_empty());
        false
    }

    /// Handles `first` and whatever else is queued, up to [`ROUND`] messages so that timers still
    /// run under load. Replies leave every [`FLUSH_EVERY`] messages (one `sendmmsg` each) so the
    /// first of a burst does not wait for the whole burst. False on [`WorkerMsg::Stop`].
    fn handle_round(&mut self, now: Instant, first: WorkerMsg, out: &mut Output) -> bool {
        if !self.handle(now, first, out) {
            return false;
        }
        for i in 1..ROUND {
            let Ok(m) = self.rx.try_recv() else {
                break;
            };
            if !self.handle(now, m, out) {
                return false;
            }
            if i % FLUSH_EVERY == 0 {
                self.flush(out);
            }
        }
        true
    }

    /// Feeds one message to the shard. False on [`WorkerMsg::Stop`].
    fn handle(&mut self, now: Instant, m: WorkerMsg, out: &mut Output) -> bool {
        match m {
            WorkerMsg::Datagram { peer, bytes } => {
                let dtls = self.dtls_listener.get(peer.listener as usize) == Some(&true);
                let before = ErrorMarks::of(out, self.secure.as_ref());
                match &mut self.secure {
                    Some(sec) if dtls => sec.on_datagram(
                        now,
                        (peer.listener, peer.addr),
                        &bytes,
                        &mut self.shard,
                        out,
                        &mut self.sealed,
                    ),
                    _ => self.shard.on_datagram(now, peer, &bytes, out),
                }
                if self.errors.is_some() && before.erred(out, self.secure.as_ref(), peer) {
                    let why = "refused or malformed requests";
                    self.blocklist
                        .error(self.errors.as_mut(), peer.addr.ip(), now, why);
                }
            }
            WorkerMsg::Session { key, session } => {
                if let Some(sec) = &mut self.secure {
                    sec.adopt(key, session, &mut self.shard, out);
                }
            }
            WorkerMsg::CredentialsChanged => {
                if let Some(sec) = &mut self.secure {
                    sec.revoke_stale();
                }
            }
            WorkerMsg::Command {
                endpoint,
                payload,
                expiry,
                origin,
            } => {
                // Parsed here, at the core's edge: the shard sees typed commands only.
                let mut cmd = command::parse(&payload);
                match &mut cmd {
                    Ok(c) => c.head.origin = origin,
                    Err(e) => e.head.origin = origin,
                }
                self.shard.on_command(now, &endpoint, cmd, expiry, out)
            }
            WorkerMsg::Query { query, reply } => {
                let _ = reply.try_send(self.answer(now, query, out));
            }
            WorkerMsg::Stop => return false,
        }
        true
    }

    /// A question of the operations surface.
    fn answer(&mut self, now: Instant, q: Query, out: &mut Output) -> QueryAnswer {
        let wall = std::time::SystemTime::now();
        match q {
            Query::Devices {
                filter,
                after,
                limit,
            } => QueryAnswer::Devices(self.shard.devices(
                &filter,
                after.as_deref(),
                limit,
                now,
                wall,
            )),
            Query::Device(ep) => {
                QueryAnswer::Device(self.shard.device(&ep, now, wall).map(Box::new))
            }
            Query::Kick(ep) => QueryAnswer::Kicked(self.shard.kick(now, &ep, out)),
            Query::Census => QueryAnswer::Census(self.shard.census()),
        }
    }

    /// Carries out and clears everything `out` holds.
    fn flush(&mut self, out: &mut Output) {
        self.seal_transmits(out);
        self.send_transmits(out);
        out.transmits.clear();
        self.publish(out);
        for u in out.index.drain(..) {
            match u {
                IndexUpdate::Bind(a) => self.index.bind(a, self.id),
                IndexUpdate::Unbind(a) => self.index.unbind(a, self.id),
            }
        }
        if out.dropped > 0 {
            self.metrics
                .dropped_malformed
                .fetch_add(out.dropped, Ordering::Relaxed);
        }
        if out.forbidden > 0 {
            self.metrics
                .forbidden
                .fetch_add(out.forbidden, Ordering::Relaxed);
        }
        if out.refused_full > 0 {
            self.metrics
                .refused_full
                .fetch_add(out.refused_full, Ordering::Relaxed);
        }
        self.metrics.add_shard(&out.stats, &out.commands);
        out.clear();
        self.report_registrations();
        if let Some(sec) = &mut self.secure {
            sec.report(&self.metrics);
            let n = sec.sessions();
            let gauge = &self.metrics.dtls_sessions;
            if n > self.dtls_sessions {
                gauge.fetch_add(n - self.dtls_sessions, Ordering::Relaxed);
            } else {
                gauge.fetch_sub(self.dtls_sessions - n, Ordering::Relaxed);
            }
            self.dtls_sessions = n;
        }
    }

    /// Seals what the shard sends to DTLS peers (a peer without a session here loses it, counted
    /// as a send error: CoAP retransmission or the device's next handshake recovers) and adds
    /// the DTLS layer's own records.
    fn seal_transmits(&mut self, out: &mut Output) {
        if let Some(sec) = &mut self.secure {
            let dtls = &self.dtls_listener;
            let mut lost = 0;
            out.transmits.retain_mut(|t| {
                if dtls.get(t.peer.listener as usize) != Some(&true) {
                    return true;
                }
                match sec.seal(t) {
                    Some(b) => {
                        t.bytes = b;
                        true
                    }
                    None => {
                        lost += 1;
                        false
                    }
                }
            });
            if lost > 0 {
                self.metrics.send_errors.fetch_add(lost, Ordering::Relaxed);
            }
        }
        for ((l, addr), bytes) in self.sealed.drain(..) {
            out.transmits.push(Transmit {
                peer: Peer::plain(l, addr),
                bytes,
            });
        }
    }

    /// One `sendmmsg` per listener for everything this round produced.
    fn send_transmits(&self, out: &Output) {
        for (li, sock) in self.sockets.iter().enumerate() {
            let batch: Vec<(&[u8], SocketAddr)> = out
                .transmits
                .iter()
                .filter(|t| t.peer.listener as usize == li)
                .map(|t| (t.bytes.as_slice(), t.peer.addr))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let sent = udp::send_batch(sock, &batch);
            self.metrics
                .datagrams_out
                .fetch_add(sent as u64, Ordering::Relaxed);
            self.metrics
                .send_errors
                .fetch_add((batch.len() - sent) as u64, Ordering::Relaxed);
        }
    }

    /// Hands the round's MQTT messages to the MQTT thread. Its queue (`mqtt.channel_capacity`)
    /// is also the buffer while the broker is away: what does not fit is counted and, at most
    /// once a second, logged with the count.
    fn publish(&mut self, out: &mut Output) {
        let mut dropped = 0u64;
        for p in out.publishes.drain(..) {
            self.tap.on_publish(&p);
            match self.mqtt.try_publish(p.topic, p.qos, p.payload) {
                Ok(()) => {
                    self.metrics.publishes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    debug!("publish dropped: {e}");
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.metrics
                .publish_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            self.unlogged_drops += dropped;
        }
        let now = Instant::now();
        if self.unlogged_drops > 0
            && !self
                .drops_logged_at
                .is_some_and(|t| now < t + Duration::from_secs(1))
        {
            warn!(
                "worker {}: {} MQTT messages dropped, the MQTT queue is full (broker away or slow; mqtt.channel_capacity)",
                self.id, self.unlogged_drops
            );
            self.unlogged_drops = 0;
            self.drops_logged_at = Some(now);
        }
    }

    /// Adds the change of this shard's registration count to the gateway-wide one, which every
    /// worker updates for its own shard.
    fn report_registrations(&mut self) {
        let n = self.shard.registrations();
        if n > self.registrations {
            self.metrics
                .registrations
                .fetch_add(n - self.registrations, Ordering::Relaxed);
        } else if n < self.registrations {
            self.metrics
                .registrations
                .fetch_sub(self.registrations - n, Ordering::Relaxed);
        }
        self.registrations = n;
    }
}

/// Where a worker's output stood before one datagram: what it adds tells whether the datagram
/// was its sender's error.
struct ErrorMarks {
    transmits: usize,
    dropped: u64,
    forbidden: u64,
    dtls_failures: u64,
}

impl ErrorMarks {
    fn of(out: &Output, sec: Option<&SecureListener>) -> ErrorMarks {
        ErrorMarks {
            transmits: out.transmits.len(),
            dropped: out.dropped,
            forbidden: out.forbidden,
            dtls_failures: sec.map_or(0, |s| s.failures()),
        }
    }

    /// Whether handling a datagram of `peer` dropped it, refused its identity, failed its DTLS
    /// record or handshake, or answered it with an error.
    fn erred(&self, out: &Output, sec: Option<&SecureListener>, peer: Peer) -> bool {
        out.dropped > self.dropped
            || out.forbidden > self.forbidden
            || sec.map_or(0, |s| s.failures()) > self.dtls_failures
            || out.transmits[self.transmits.min(out.transmits.len())..]
                .iter()
                .any(|t| t.peer.addr == peer.addr && limits::is_error_answer(&t.bytes))
    }
}
