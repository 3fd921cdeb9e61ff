//! The MQTT side's I/O: one TCP connection to the broker driven by the MQTT thread, with a
//! cheap cloneable [`MqttClient`] handle through which the workers publish, and the loop that
//! turns incoming commands into [`WorkerMsg::Command`]s for the worker owning the endpoint.
//!
//! The protocol itself (rumqttc's codec for MQTT 3.1.1 and 5, packet ids, acknowledgements,
//! keep-alive) is the sans-IO [`super::mqtt_session`]; this module only moves bytes. Workers hand
//! messages over a bounded channel; the thread drains everything queued into one buffer and one
//! `write(2)`, and it is woken (an eventfd) only when it was about to sleep, so under load a
//! notification costs a channel push and a share of a batched write.
//!
//! Reconnects with exponential backoff and subscribes again after every connect (clean session);
//! QoS 1/2 messages unacknowledged when a connection drops are sent again on the next one. With
//! MQTT 5 a command's Message-Expiry-Interval travels with it to the worker, which drops the
//! command (answering `coap_timeout`) if it expires while waiting for a sleeping device.
//!
//! Version: with `mqtt.version = "auto"` (the default) the session speaks MQTT 5 until a broker
//! refuses it; then this loop reconnects at once, without backoff, and the session stays on
//! 3.1.1 until the process restarts ([`MqttSession::after_failure`] decides). A forced `5` that
//! the broker refuses is logged as an error and retried with backoff. Every CONNACK logs the
//! version in use at info.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{parse_mqtt_url, Config};

use crate::core::authorize::GATEWAY_ENDPOINT;
use crate::core::command;
use crate::core::router;
use crate::core::topics::Topics;
use crate::core::uplink::{self, Uplink};
use crate::security::SharedCredentials;

use super::channel::{WorkerMsg, WorkerTx};
use super::doorbell::Doorbell;
use super::metrics::Metrics;
use super::mqtt_session::{Event, MqttSession, Retry, SessionError, SessionOptions};

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Longest sleep of the MQTT thread, so that a stop request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Outgoing {
    Publish {
        topic: String,
        qos: u8,
        payload: Vec<u8>,
    },
    Disconnect,
}

/// A publishing handle, cloned into every worker.
#[derive(Clone)]
pub struct MqttClient {
    tx: Sender<Outgoing>,
    bell: Arc<Doorbell>,
}

/// The connection to drive (one thread).
pub struct MqttConnection {
    poll: Poll,
    rx: Receiver<Outgoing>,
    bell: Arc<Doorbell>,
    host: String,
    port: u16,
    session: MqttSession,
}

#[derive(Debug, thiserror::Error)]
#[error("MQTT client queue: {0}")]
pub struct PublishError(&'static str);

impl MqttClient {
    /// Messages waiting for the MQTT thread (the buffer while the broker is away).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Connects lazily (the connection thread does the I/O) to `host:port`.
    pub fn new(
        config: &Config,
        host: String,
        port: u16,
    ) -> io::Result<(MqttClient, MqttConnection)> {
        let m = &config.mqtt;
        let poll = Poll::new()?;
        let bell = Arc::new(Doorbell::for_poll(Waker::new(poll.registry(), WAKE)?));
        let (tx, rx) = crossbeam_channel::bounded(m.channel_capacity.max(1));
        let session = MqttSession::new(
            SessionOptions {
                version: m.version,
                client_id: m.client_id.clone(),
                keep_alive: m.keep_alive,
                username: m.username.clone(),
                password: m.password.clone(),
                max_packet_size: m.max_packet_size,
                inflight: m.inflight,
            },
            Instant::now(),
        );
        let conn = MqttConnection {
            poll,
            rx,
            bell: bell.clone(),
            host,
            port,
            session,
        };
        Ok((MqttClient { tx, bell }, conn))
    }

    /// Queues a message for the broker; fails only if the queue is full (broker slow or away).
    pub fn try_publish(
        &self,
        topic: String,
        qos: u8,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        self.tx
            .try_send(Outgoing::Publish {
                topic,
                qos,
                payload,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => PublishError("full"),
                TrySendError::Disconnected(_) => PublishError("closed"),
            })?;
        self.bell.ring();
        Ok(())
    }

    /// Asks the MQTT thread to send DISCONNECT and stop.
    pub fn try_disconnect(&self) {
        let _ = self.tx.try_send(Outgoing::Disconnect);
        self.bell.ring();
    }
}

/// Broker address from the configuration: the URL's, or `None` for the embedded broker.
pub fn broker_of(config: &Config) -> Result<Option<(String, u16)>, String> {
    config.mqtt.url.as_deref().map(parse_mqtt_url).transpose()
}

/// How a connection ended.
enum End {
    /// Stop requested (flag or [`MqttClient::try_disconnect`]).
    Stop,
    /// Failed outside the MQTT connection: resolve, TCP connect or our own poll.
    Other(String),
    /// The connection was made and then failed.
    Failed(SessionError),
}

/// Drives the connection until `stop`; the body of the MQTT thread.
#[allow(clippy::too_many_arguments)]
pub fn run(
    mut conn: MqttConnection,
    client: MqttClient,
    topics: Topics,
    workers: Vec<WorkerTx>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    (backoff_min, backoff_max): (Duration, Duration),
    credentials: SharedCredentials,
) {
    let mut backoff = backoff_min;
    let mut router = CommandRouter {
        client,
        topics,
        workers,
        metrics: metrics.clone(),
        credentials,
    };
    while !stop.load(Ordering::Relaxed) {
        let end = match connect(&conn.host, conn.port) {
            Ok(stream) => {
                let mut stream = mio::net::TcpStream::from_std(stream);
                let end = match conn.poll.registry().register(
                    &mut stream,
                    SOCKET,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => drive(
                        &mut conn,
                        &mut stream,
                        &mut router,
                        &stop,
                        &mut backoff,
                        backoff_min,
                    ),
                    Err(e) => End::Other(format!("cannot poll the socket: {e}")),
                };
                let _ = conn.poll.registry().deregister(&mut stream);
                end
            }
            Err(e) => End::Other(format!(
                "cannot connect to {}:{}: {e}",
                conn.host, conn.port
            )),
        };
        metrics.mqtt_connected.store(false, Ordering::Relaxed);
        metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
        let e = match end {
            End::Stop => break,
            End::Other(e) => e,
            End::Failed(e) => {
                let tried = conn.session.protocol();
                match conn.session.after_failure(&e) {
                    Retry::AtOnce => {
                        warn!(
                            "MQTT broker {}:{} does not take {tried} ({e}); reconnecting at once \
                             with {} (mqtt.version = \"auto\"; kept until the gateway restarts)",
                            conn.host,
                            conn.port,
                            conn.session.protocol()
                        );
                        continue;
                    }
                    Retry::Backoff => {}
                }
                // Backing off from a refusal of MQTT 5 means it is forced (`auto` fell back).
                if conn.session.refuses_v5(&e) {
                    error!(
                        "MQTT broker {}:{} does not take {tried} ({e}), which mqtt.version = \
                         \"5\" forces; set mqtt.version = \"auto\" or \"3.1.1\"",
                        conn.host, conn.port
                    );
                }
                e.to_string()
            }
        };
        warn!("MQTT connection error: {e}; retrying in {backoff:?}");
        let until = Instant::now() + backoff;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(MAX_SLEEP.min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(backoff_max);
    }
}

fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                // A response or event is one small packet that must leave now; with Nagle's
                // algorithm it waited for the broker's delayed ACK (about 40 ms at low load).
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One connection's life: CONNECT, then read / drain the workers' queue / write until it fails
/// or a stop is requested.
fn drive(
    conn: &mut MqttConnection,
    stream: &mut mio::net::TcpStream,
    router: &mut CommandRouter,
    stop: &AtomicBool,
    backoff: &mut Duration,
    backoff_min: Duration,
) -> End {
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0u8; 64 * 1024];
    let mut happened = Vec::new();
    let session = &mut conn.session;
    session.start(Instant::now());
    let mut stopping = false;
    loop {
        if stop.load(Ordering::Relaxed) && !stopping {
            session.disconnect();
            stopping = true;
        }
        // Everything the broker sent.
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return End::Failed(session.on_closed("end of stream".into())),
                Ok(n) => {
                    if let Err(e) = session.on_read(&buf[..n], &mut happened) {
                        return End::Failed(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return End::Failed(session.on_closed(e.to_string())),
            }
        }
        for ev in happened.drain(..) {
            match ev {
                Event::Connected => {
                    info!(
                        "connected to MQTT broker {}:{} with {}; subscribing to {}",
                        conn.host,
                        conn.port,
                        session.protocol(),
                        router.topics.command_filter
                    );
                    router.metrics.mqtt_connected.store(true, Ordering::Relaxed);
                    *backoff = backoff_min;
                    session.subscribe(&router.topics.command_filter, router.topics.command_qos);
                }
                Event::Subscribed { granted: true } => router
                    .metrics
                    .mqtt_subscribed
                    .store(true, Ordering::Relaxed),
                Event::Subscribed { granted: false } => {
                    error!(
                        "broker refused the subscription to {}",
                        router.topics.command_filter
                    )
                }
                Event::Message {
                    topic,
                    payload,
                    expiry,
                } => router.command(topic, payload, expiry),
                Event::Skipped { why } => {
                    router.metrics.commands_in.fetch_add(1, Ordering::Relaxed);
                    router
                        .metrics
                        .commands_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    warn!("skipped an incoming MQTT message: {why}");
                }
            }
        }
        // Everything the workers queued, as far as the in-flight window allows.
        while !stopping && session.can_publish() {
            match conn.rx.try_recv() {
                Ok(Outgoing::Publish {
                    topic,
                    qos,
                    payload,
                }) => {
                    if let Err(e) = session.publish(topic, qos, payload) {
                        router
                            .metrics
                            .publish_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        warn!("not published: {e}");
                    }
                }
                Ok(Outgoing::Disconnect) | Err(TryRecvError::Disconnected) => {
                    session.disconnect();
                    stopping = true;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        if let Err(e) = session.on_tick(now) {
            return End::Failed(e);
        }
        // One write for all of it.
        let mut blocked = false;
        while !session.pending_output().is_empty() {
            match stream.write(session.pending_output()) {
                Ok(n) => session.consume_output(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return End::Failed(session.on_closed(e.to_string())),
            }
        }
        if stopping && session.pending_output().is_empty() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return End::Stop;
        }
        if !blocked && session.can_publish() && !conn.rx.is_empty() {
            continue;
        }
        // Sleep until the socket, the doorbell or the keep-alive needs us.
        if !conn
            .bell
            .prepare_sleep(|| !session.can_publish() || conn.rx.is_empty())
        {
            continue;
        }
        let timeout = session
            .next_deadline()
            .saturating_duration_since(Instant::now())
            .min(MAX_SLEEP);
        let polled = conn.poll.poll(&mut events, Some(timeout));
        conn.bell.woke();
        if let Err(e) = polled {
            if e.kind() != io::ErrorKind::Interrupted {
                return End::Other(format!("poll: {e}"));
            }
        }
    }
}

/// Routes incoming commands to the worker owning their endpoint; commands to the gateway's own
/// endpoint ([`GATEWAY_ENDPOINT`]) manage device credentials and are answered here.
struct CommandRouter {
    client: MqttClient,
    topics: Topics,
    workers: Vec<WorkerTx>,
    metrics: Arc<Metrics>,
    credentials: SharedCredentials,
}

impl CommandRouter {
    fn command(&mut self, topic: String, payload: Vec<u8>, expiry: Option<Duration>) {
        self.metrics.commands_in.fetch_add(1, Ordering::Relaxed);
        let Some(ep) = self.topics.endpoint_of_command(&topic) else {
            warn!("command on {topic} does not name an endpoint; ignored");
            self.metrics
                .commands_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if ep == GATEWAY_ENDPOINT {
            return self.manage(&payload);
        }
        let w = router::shard_of_endpoint(ep.as_bytes(), self.workers.len());
        let msg = WorkerMsg::Command {
            endpoint: ep.to_string(),
            payload,
            expiry,
            origin: crate::core::command::Origin::Mqtt,
        };
        if let Err(e) = self.workers[w].try_send(msg) {
            self.metrics
                .commands_dropped
                .fetch_add(1, Ordering::Relaxed);
            if let TrySendError::Full(WorkerMsg::Command {
                endpoint, payload, ..
            }) = e
            {
                overloaded(&self.client, &self.topics, &endpoint, &payload);
            }
        }
    }
}

impl CommandRouter {
    /// A credential management command: answered on the gateway endpoint's response topic; a
    /// change is saved to the credentials file (if there is one) and applied by every worker.
    fn manage(&mut self, payload: &[u8]) {
        let answer = super::ops::manage_credentials(&self.credentials, &self.workers, payload);
        let t = &self.topics.response;
        let topic = t.render_ip(GATEWAY_ENDPOINT, None);
        if self
            .client
            .try_publish(topic, t.qos, answer.payload)
            .is_err()
        {
            self.metrics.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Answers a command that could not be queued to its worker.
fn overloaded(client: &MqttClient, topics: &Topics, endpoint: &str, payload: &[u8]) {
    let parsed = command::parse(payload);
    let head = match &parsed {
        Ok(c) => &c.head,
        Err(e) => &e.head,
    };
    let ev = Uplink::Refused {
        cmd: head,
        code: crate::coap::code::SERVICE_UNAVAILABLE,
        reason: "gateway overloaded",
    };
    let p = uplink::render(topics, endpoint, None, &ev);
    let _ = client.try_publish(p.topic, p.qos, p.payload);
}
