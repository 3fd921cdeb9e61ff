//! The I/O shells around the sans-IO core: the mio event loop, the worker threads, the MQTT
//! connection thread, the embedded broker and the stats line. Nothing here interprets LwM2M; it
//! moves bytes between sockets, channels and [`Shard`]s and counts what it had to drop.
//!
//! Back-pressure policy: the event loop never blocks on a worker (full channel: drop and count,
//! CoAP clients retransmit); workers never block on MQTT (full request channel: drop and count);
//! the MQTT thread hands a command to a full worker queue back as a `5.03` response.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{Config, MqttVersion};
use crate::lwm2m::model::ObjectRegistry;

use crate::core::ids::ShardId;
use crate::core::router::{self, Route};
use crate::core::settings::ShardConfig;
use crate::core::shard::{IndexUpdate, Output, Peer, Shard};

use addr_index::AddrIndex;
use doorbell::Doorbell;
use mqtt::MqttClient;

pub mod addr_index;
pub mod doorbell;
pub mod mqtt;
pub mod mqtt_session;
pub mod sockopt;
pub mod udp;

/// Counters shared by every thread, read by the stats line and by tests.
#[derive(Debug, Default)]
pub struct Metrics {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// Dropped because a worker queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Malformed or unexpected datagrams dropped (event loop and workers).
    pub dropped_malformed: AtomicU64,
    /// Datagrams that could not be sent (socket buffer full, unreachable).
    pub send_errors: AtomicU64,
    pub publishes: AtomicU64,
    /// Publishes dropped because the MQTT request channel was full or closed.
    pub publish_dropped: AtomicU64,
    pub commands_in: AtomicU64,
    pub commands_dropped: AtomicU64,
    pub registrations: AtomicUsize,
    pub mqtt_connected: AtomicBool,
    /// True once the broker acknowledged the command subscription of the current connection.
    pub mqtt_subscribed: AtomicBool,
}

impl Metrics {
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "registrations={} datagrams_in={} datagrams_out={} publishes={} commands={} dropped: queue_full={} malformed={} send_errors={} publish={} commands={} mqtt={}",
            self.registrations.load(Ordering::Relaxed),
            g(&self.datagrams_in),
            g(&self.datagrams_out),
            g(&self.publishes),
            g(&self.commands_in),
            g(&self.dropped_queue_full),
            g(&self.dropped_malformed),
            g(&self.send_errors),
            g(&self.publish_dropped),
            g(&self.commands_dropped),
            if self.mqtt_connected.load(Ordering::Relaxed) { "up" } else { "down" },
        )
    }
}

pub enum WorkerMsg {
    Datagram {
        peer: Peer,
        bytes: Vec<u8>,
    },
    Command {
        endpoint: String,
        payload: Vec<u8>,
        /// MQTT 5 Message-Expiry-Interval left when the command arrived.
        expiry: Option<Duration>,
    },
    Stop,
}

/// The sending side of a worker's queue: a bounded channel plus the doorbell that wakes the
/// worker when it sleeps.
#[derive(Clone)]
pub struct WorkerTx {
    tx: Sender<WorkerMsg>,
    bell: Arc<Doorbell>,
}

impl WorkerTx {
    pub fn try_send(&self, m: WorkerMsg) -> Result<(), TrySendError<WorkerMsg>> {
        self.tx.try_send(m)?;
        self.bell.ring();
        Ok(())
    }

    fn send(&self, m: WorkerMsg) {
        if self.tx.send(m).is_ok() {
            self.bell.ring();
        }
    }
}

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    local_addrs: Vec<SocketAddr>,
    broker_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    workers: Vec<WorkerTx>,
    mqtt: MqttClient,
    threads: Vec<JoinHandle<()>>,
}

const WAKE: Token = Token(usize::MAX);

fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A burst of registrations overflows the kernel's default receive buffer; ask for more (the
    // kernel caps it at net.core.rmem_max, see README).
    if let Err(e) = s.set_recv_buffer_size(recv_buffer) {
        warn!("cannot set receive buffer of {addr} to {recv_buffer}: {e}");
    }
    let _ = s.set_send_buffer_size(recv_buffer);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    let got = s.recv_buffer_size().unwrap_or(0);
    if got < recv_buffer {
        info!("UDP receive buffer of {addr} is {got} bytes (asked {recv_buffer}; raise net.core.rmem_max for more)");
    }
    Ok(s.into())
}

/// Starts the embedded broker (rumqttd) on `addr`; port 0 picks a free port. Returns the address.
fn start_embedded_broker(
    addr: SocketAddr,
    max_packet: usize,
    version: MqttVersion,
) -> anyhow::Result<SocketAddr> {
    // rumqttd reports a busy port only in its own log: probe first so the error is clear.
    let probe = TcpListener::bind(addr)
        .with_context(|| format!("embedded MQTT broker cannot listen on {addr}"))?;
    let addr = probe.local_addr()?;
    drop(probe);
    let conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60000,
        max_payload_size: max_packet,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: conn,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 10010,
        max_outgoing_packet_count: 1000,
        // The router keeps published messages in a per-filter log of segments; bound it (10 x 4
        // MiB) so memory does not grow with traffic. Subscribers that fall further behind lose
        // the oldest messages, as with any broker queue limit.
        max_segment_size: 4 << 20,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let mut servers = std::collections::HashMap::new();
    servers.insert("1".to_string(), server);
    // One listener, speaking the protocol version the gateway was configured with.
    let (v4, v5) = match version {
        MqttVersion::V311 => (Some(servers), None),
        MqttVersion::V5 => (None, Some(servers)),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4,
        v5,
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!("embedded MQTT broker stopped: {e}");
            }
        })?;
    // Disable Nagle on the broker's listener before anyone connects (accepted sockets inherit it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockopt::set_nodelay_on_local(addr) == 0 {
        if Instant::now() > deadline {
            warn!("embedded MQTT broker: listener not found, TCP_NODELAY not set");
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    info!("embedded MQTT broker listening on {addr}");
    Ok(addr)
}

impl Gateway {
    /// Loads the object definitions, starts the broker if no URL is configured, binds the UDP
    /// listeners and starts every thread.
    pub fn start(config: Config) -> anyhow::Result<Gateway> {
        let (model, errors) = ObjectRegistry::load_dir(&config.xml_dir)
            .with_context(|| format!("cannot read xml_dir {}", config.xml_dir.display()))?;
        for e in &errors {
            warn!("object definition {} not loaded: {}", e.file, e.error);
        }
        info!(
            "loaded {} object definitions from {}",
            model.len(),
            config.xml_dir.display()
        );
        Gateway::start_with_model(config, Arc::new(model))
    }

    pub fn start_with_model(config: Config, model: Arc<ObjectRegistry>) -> anyhow::Result<Gateway> {
        let shard_cfg: Arc<ShardConfig> =
            Arc::new(config.shard_config(model).map_err(anyhow::Error::msg)?);
        let metrics = Arc::new(Metrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let index = Arc::new(AddrIndex::with_capacity(config.expected_devices));
        let mut threads = Vec::new();

        // MQTT first: workers publish through clones of its client.
        let (host, port, broker_addr) =
            match mqtt::broker_of(&config).map_err(anyhow::Error::msg)? {
                Some((h, p)) => (h, p, None),
                None => {
                    let a = start_embedded_broker(
                        config.mqtt.broker_listen,
                        config.mqtt.max_packet_size,
                        config.mqtt.version,
                    )?;
                    (a.ip().to_string(), a.port(), Some(a))
                }
            };
        let (client, connection) = MqttClient::new(&config, host, port)?;

        // UDP listeners.
        let mut sockets = Vec::new();
        let mut local_addrs = Vec::new();
        for addr in &config.listen {
            let s = bind_udp(*addr, config.recv_buffer)
                .with_context(|| format!("cannot listen on UDP {addr}"))?;
            local_addrs.push(s.local_addr()?);
            sockets.push(s);
        }
        let send_sockets: Arc<Vec<UdpSocket>> = Arc::new(
            sockets
                .iter()
                .map(|s| s.try_clone())
                .collect::<io::Result<_>>()?,
        );

        // Workers.
        let mut worker_txs = Vec::new();
        for id in 0..config.workers {
            let (tx, rx) = crossbeam_channel::bounded(config.worker_queue);
            let bell = Arc::new(Doorbell::for_thread());
            worker_txs.push(WorkerTx {
                tx,
                bell: bell.clone(),
            });
            let shard_id = ShardId::new(id).context("too many workers")?;
            let shard = Shard::new(shard_id, shard_cfg.clone(), rand::random());
            let w = Worker {
                id: id as u16,
                shard,
                rx,
                bell,
                sockets: send_sockets.clone(),
                mqtt: client.clone(),
                index: index.clone(),
                metrics: metrics.clone(),
                registrations: 0,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{id}"))
                    .spawn(move || w.run())?,
            );
        }

        // MQTT connection driver.
        {
            let topics = shard_cfg.topics.clone();
            let workers = worker_txs.clone();
            let (metrics, stop, client) = (metrics.clone(), stop.clone(), client.clone());
            let backoff = (config.mqtt.reconnect_min, config.mqtt.reconnect_max);
            threads.push(
                std::thread::Builder::new()
                    .name("mqtt".into())
                    .spawn(move || {
                        mqtt::run(connection, client, topics, workers, metrics, stop, backoff)
                    })?,
            );
        }

        // Event loop.
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        {
            let mut mio_sockets = Vec::new();
            for (i, s) in sockets.into_iter().enumerate() {
                let mut m = mio::net::UdpSocket::from_std(s);
                poll.registry()
                    .register(&mut m, Token(i), Interest::READABLE)?;
                mio_sockets.push(m);
            }
            let el = EventLoop {
                poll,
                sockets: mio_sockets,
                workers: worker_txs.clone(),
                index: index.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("event-loop".into())
                    .spawn(move || el.run())?,
            );
        }

        if !config.stats_interval.is_zero() {
            let (metrics, stop, every) = (metrics.clone(), stop.clone(), config.stats_interval);
            threads.push(
                std::thread::Builder::new()
                    .name("stats".into())
                    .spawn(move || {
                        let mut next = Instant::now() + every;
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(200));
                            if Instant::now() >= next {
                                info!("stats: {}", metrics.summary());
                                next += every;
                            }
                        }
                    })?,
            );
        }
        info!(
            "listening on {:?} with {} workers; commands on {}",
            local_addrs, config.workers, shard_cfg.topics.command_filter
        );
        Ok(Gateway {
            local_addrs,
            broker_addr,
            metrics,
            stop,
            waker,
            workers: worker_txs,
            mqtt: client,
            threads,
        })
    }

    /// The bound UDP addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The embedded broker's address, when one was started.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Blocks until the gateway stops (it only stops through [`Gateway::shutdown`] or a fatal error).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops every thread except the embedded broker's (rumqttd has no stop) and waits for them.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        for w in &self.workers {
            w.send(WorkerMsg::Stop);
        }
        self.mqtt.try_disconnect();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct EventLoop {
    poll: Poll,
    sockets: Vec<mio::net::UdpSocket>,
    workers: Vec<WorkerTx>,
    index: Arc<AddrIndex>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut batch = udp::RecvBatch::new();
        let mut nonce: u16 = 0;
        let n_workers = self.workers.len();
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("event loop poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKE {
                    continue;
                }
                let li = ev.token().0;
                let Some(sock) = self.sockets.get(li) else {
                    continue;
                };
                // Edge-triggered: drain to WouldBlock, a batch per system call.
                loop {
                    let n = match batch.recv(sock) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // ICMP port unreachable from an earlier send surfaces here on Linux.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                        Err(e) => {
                            warn!("recv on listener {li} failed: {e}");
                            break;
                        }
                    };
                    self.metrics
                        .datagrams_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    for (bytes, addr) in (0..n).filter_map(|i| batch.get(i)) {
                        nonce = nonce.wrapping_add(1);
                        let index = &self.index;
                        match router::route(
                            bytes,
                            addr,
                            n_workers,
                            |a| index.get(a).map(usize::from),
                            nonce,
                        ) {
                            Route::Worker(w) => {
                                let msg = WorkerMsg::Datagram {
                                    peer: Peer::plain(li as u16, addr),
                                    bytes: bytes.to_vec(),
                                };
                                match self.workers[w].try_send(msg) {
                                    Ok(()) => {}
                                    Err(TrySendError::Full(_)) => {
                                        self.metrics
                                            .dropped_queue_full
                                            .fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(TrySendError::Disconnected(_)) => return,
                                }
                            }
                            Route::Reply(r) => {
                                if sock.send_to(&r, addr).is_ok() {
                                    self.metrics.datagrams_out.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    self.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Route::Drop => {
                                self.metrics
                                    .dropped_malformed
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Messages a worker handles between two flushes of its replies and publishes.
const FLUSH_EVERY: usize = 32;

struct Worker {
    id: u16,
    shard: Shard,
    rx: Receiver<WorkerMsg>,
    bell: Arc<Doorbell>,
    sockets: Arc<Vec<UdpSocket>>,
    mqtt: MqttClient,
    index: Arc<AddrIndex>,
    metrics: Arc<Metrics>,
    registrations: usize,
}

impl Worker {
    fn run(mut self) {
        self.bell.bind_current();
        let mut out = Output::default();
        loop {
            let msg = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    match self.shard.next_deadline() {
                        Some(d) if d <= now => None,
                        deadline => {
                            let rx = &self.rx;
                            self.bell.sleep(deadline.map(|d| d - now), || rx.is_empty());
                            continue;
                        }
                    }
                }
            };
            let now = Instant::now();
            if let Some(m) = msg {
                if !self.handle(now, m, &mut out) {
                    return;
                }
                // Take what else is queued, bounded so timers still run; replies leave every
                // FLUSH_EVERY messages (one sendmmsg each) so that the first of a burst does not
                // wait for the whole burst to be handled.
                for i in 1..256 {
                    match self.rx.try_recv() {
                        Ok(m) => {
                            if !self.handle(now, m, &mut out) {
                                return;
                            }
                            if i % FLUSH_EVERY == 0 {
                                self.flush(&mut out);
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            self.shard.on_timeout(now, &mut out);
            self.flush(&mut out);
        }
    }

    fn handle(&mut self, now: Instant, m: WorkerMsg, out: &mut Output) -> bool {
        match m {
            WorkerMsg::Datagram { peer, bytes } => self.shard.on_datagram(now, peer, &bytes, out),
            WorkerMsg::Command {
                endpoint,
                payload,
                expiry,
            } => self
                .shard
                .on_command_with_expiry(now, &endpoint, &payload, expiry, out),
            WorkerMsg::Stop => return false,
        }
        true
    }

    fn flush(&mut self, out: &mut Output) {
        // One sendmmsg per listener for everything this round produced.
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
        out.transmits.clear();
        for p in out.publishes.drain(..) {
            match self.mqtt.try_publish(p.topic, p.qos, p.payload) {
                Ok(()) => self.metrics.publishes.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    debug!("publish dropped: {e}");
                    self.metrics.publish_dropped.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
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
        out.clear();
        let n = self.shard.registrations();
        if n != self.registrations {
            if n > self.registrations {
                self.metrics
                    .registrations
                    .fetch_add(n - self.registrations, Ordering::Relaxed);
            } else {
                self.metrics
                    .registrations
                    .fetch_sub(self.registrations - n, Ordering::Relaxed);
            }
            self.registrations = n;
        }
    }
}
