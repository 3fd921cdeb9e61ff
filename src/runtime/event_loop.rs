//! The event loop: one thread (`event-loop`) owning the UDP listeners, which reads every
//! datagram, routes it ([`router::route`]) and hands it to the worker owning its device.
//!
//! It keeps no per-device state: what it needs to route traffic whose identifiers the device
//! chose is the shared [`AddrIndex`], which the workers write. Stateless answers (a `RST` to a
//! CoAP ping or to a message it cannot parse, a `4.04` to a request for no known path) leave
//! straight from here.
//!
//! Hostile traffic (issue 12, `limits`): a datagram from a blocked source is dropped before it
//! is read further; an oversized one is dropped; a Register over its source's rate is answered
//! 4.29 here; malformed datagrams and stateless error answers count against the source's error
//! rate, and over it the source is blocked ([`Blocklist`]).
//!
//! Back-pressure: the loop never blocks on a worker. A full worker queue drops the datagram and
//! counts it in `dropped_queue_full`; CoAP clients retransmit. When a worker's queue is gone
//! (the worker ended), the loop ends too.
//!
//! Hot path (about 100k datagrams/s): one `recvmmsg(2)` per batch, then per datagram a route, one
//! copy of the bytes into the [`WorkerMsg`] and a channel push. That copy is the loop's only
//! allocation per datagram; keep it that way.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{error, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crossbeam_channel::TrySendError;

use crate::coap::code;
use crate::core::limits::{self, Source, SourceLimiter};
use crate::core::router::{self, Route};
use crate::core::shard::Peer;
use crate::dtls::record;
use crate::dtls::server::CID_LEN;

use super::addr_index::AddrIndex;
use super::blocklist::Blocklist;
use super::channel::{WorkerMsg, WorkerTx};
use super::metrics::Metrics;
use super::udp::RecvBatch;

/// The waker's token; listener `i` is `Token(i)`.
const WAKE: Token = Token(usize::MAX);

/// A worker's queue is disconnected: the gateway is going down.
struct WorkersGone;

/// What one source may cost the event loop (`[limits]`).
pub(super) struct SourceLimits {
    pub blocklist: Arc<Blocklist>,
    /// Registers per source; `None`: no limit.
    pub register: Option<SourceLimiter>,
    /// Errors per source seen here; `None`: no limit.
    pub errors: Option<SourceLimiter>,
    /// Larger datagrams are dropped unread: they would hold that much of a worker's queue.
    pub max_datagram: usize,
}

pub(super) struct EventLoop {
    poll: Poll,
    sockets: Vec<mio::net::UdpSocket>,
    /// Per listener: true for DTLS, whose datagrams are routed by peer address.
    dtls_listener: Vec<bool>,
    /// Peer address -> worker holding its DTLS session.
    dtls_index: Arc<AddrIndex>,
    workers: Vec<WorkerTx>,
    index: Arc<AddrIndex>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Message ids of the stateless NON answers (see [`router::route`]).
    nonce: u16,
    limits: SourceLimits,
}

impl EventLoop {
    /// Registers `sockets` (already bound and non-blocking). The returned waker makes
    /// [`EventLoop::run`] look at `stop` again.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        sockets: Vec<std::net::UdpSocket>,
        dtls_listener: Vec<bool>,
        dtls_index: Arc<AddrIndex>,
        workers: Vec<WorkerTx>,
        index: Arc<AddrIndex>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
        limits: SourceLimits,
    ) -> io::Result<(EventLoop, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut mio_sockets = Vec::with_capacity(sockets.len());
        for (i, s) in sockets.into_iter().enumerate() {
            let mut m = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut m, Token(i), Interest::READABLE)?;
            mio_sockets.push(m);
        }
        let el = EventLoop {
            poll,
            sockets: mio_sockets,
            dtls_listener,
            dtls_index,
            workers,
            index,
            metrics,
            stop,
            nonce: 0,
            limits,
        };
        Ok((el, waker))
    }

    /// The body of the event-loop thread; returns on `stop`, a failed poll or a worker gone.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut batch = RecvBatch::new();
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("event loop poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                // The waker only interrupts the poll so that `stop` is read again.
                let li = ev.token().0;
                if ev.token() == WAKE || li >= self.sockets.len() {
                    continue;
                }
                if self.drain(li, &mut batch).is_err() {
                    return;
                }
            }
        }
    }

    /// Reads listener `li` until `WouldBlock`, a batch per system call: mio is edge-triggered,
    /// so whatever is left unread now would not be signalled again.
    fn drain(&mut self, li: usize, batch: &mut RecvBatch) -> Result<(), WorkersGone> {
        loop {
            let n = match batch.recv(&self.sockets[li]) {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    // ICMP port unreachable from an earlier send surfaces here on Linux.
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionReset => continue,
                    _ => {
                        warn!("recv on listener {li} failed: {e}");
                        return Ok(());
                    }
                },
            };
            self.metrics
                .datagrams_in
                .fetch_add(n as u64, Ordering::Relaxed);
            // One clock reading per batch: the limits need no finer time.
            let now = Instant::now();
            for (bytes, addr) in (0..n).filter_map(|i| batch.get(i)) {
                self.dispatch(li, bytes, addr, now)?;
            }
        }
    }

    /// Routes one datagram of listener `li`. `bytes` borrows the receive batch.
    fn dispatch(
        &mut self,
        li: usize,
        bytes: &[u8],
        addr: SocketAddr,
        now: Instant,
    ) -> Result<(), WorkersGone> {
        let src = Source::of(addr.ip());
        if self.limits.blocklist.blocks(src, now) {
            self.metrics.dropped_blocked.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if bytes.len() > self.limits.max_datagram {
            self.metrics
                .dropped_oversized
                .fetch_add(1, Ordering::Relaxed);
            self.error(addr, now, "oversized datagrams");
            return Ok(());
        }
        if self.dtls_listener[li] {
            // Encrypted: the worker holding the peer's session (by its Connection ID when the
            // record carries one: the address may be new), or for a new peer the one its
            // address hashes to (where the handshake runs; see `secure`).
            let by_cid = record::first_cid(bytes, CID_LEN)
                .and_then(|c| <[u8; CID_LEN]>::try_from(c).ok())
                .and_then(|c| self.dtls_index.get_cid(u64::from_be_bytes(c)));
            let w = by_cid
                .or_else(|| self.dtls_index.get(&addr))
                .map(usize::from)
                .filter(|w| *w < self.workers.len())
                .unwrap_or_else(|| addr_shard(&addr, self.workers.len()));
            return self.hand_over(w, Peer::plain(li as u16, addr), bytes);
        }
        self.nonce = self.nonce.wrapping_add(1);
        let index = &self.index;
        let route = router::route(
            bytes,
            addr,
            self.workers.len(),
            |a| index.get(a).map(usize::from),
            self.nonce,
        );
        match route {
            Route::Worker(w) => return self.hand_over(w, Peer::plain(li as u16, addr), bytes),
            Route::Register(w) => {
                let allowed = match &mut self.limits.register {
                    Some(l) => l.allow(src, 1, now).then_some(()).ok_or(l.retry_after()),
                    None => Ok(()),
                };
                match allowed {
                    Ok(()) => return self.hand_over(w, Peer::plain(li as u16, addr), bytes),
                    Err(retry) => {
                        self.metrics.refused_rate.fetch_add(1, Ordering::Relaxed);
                        let nonce = self.nonce;
                        if let Some(r) =
                            limits::refusal(bytes, code::TOO_MANY_REQUESTS, retry, nonce)
                        {
                            self.reply(li, &r, addr);
                        }
                        // Hammering on regardless is an error like any other.
                        self.error(addr, now, "registrations over limits.register_rate");
                    }
                }
            }
            Route::Pong(r) => self.reply(li, &r, addr),
            Route::Reply(r) => {
                self.reply(li, &r, addr);
                self.error(addr, now, "requests for nothing");
            }
            Route::Drop => {
                self.metrics
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                self.error(addr, now, "malformed datagrams");
            }
        }
        Ok(())
    }

    /// One error of `addr`'s source, against its error rate.
    fn error(&mut self, addr: SocketAddr, now: Instant, why: &str) {
        let l = &mut self.limits;
        l.blocklist.error(l.errors.as_mut(), addr.ip(), now, why);
    }

    fn hand_over(&self, w: usize, peer: Peer, bytes: &[u8]) -> Result<(), WorkersGone> {
        // The datagram's one copy: the next `recvmmsg` overwrites the batch's buffers.
        let msg = WorkerMsg::Datagram {
            peer,
            bytes: bytes.to_vec(),
        };
        match self.workers[w].try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(WorkersGone),
        }
    }

    fn reply(&self, li: usize, bytes: &[u8], to: SocketAddr) {
        if self.sockets[li].send_to(bytes, to).is_ok() {
            self.metrics.datagrams_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A stable spread of peer addresses over `workers` (FNV-1a of IP and port).
fn addr_shard(addr: &SocketAddr, workers: usize) -> usize {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    let mut key = [0u8; 18];
    key[..16].copy_from_slice(&ip);
    key[16..].copy_from_slice(&addr.port().to_be_bytes());
    router::shard_of_endpoint(&key, workers)
}
