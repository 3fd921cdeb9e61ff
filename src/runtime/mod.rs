//! The I/O shells around the sans-IO core: the mio event loop, the worker threads, the MQTT
//! connection thread, the embedded broker and the stats line. Nothing here interprets LwM2M; it
//! moves bytes between sockets, channels and [`Shard`](crate::core::shard::Shard)s and counts
//! what it had to drop.
//!
//! This file owns the [`Gateway`] handle: it binds the UDP listeners, starts every thread on the
//! caller's thread and stops them again. What each thread runs lives in its own module:
//! `event_loop` (thread `event-loop`), `worker` (`worker-N`), [`mqtt`] (`mqtt`), `broker`
//! (`mqtt-broker`), `metrics` (`stats`); `channel` is the worker queue the event loop and the
//! MQTT thread feed.
//!
//! Back-pressure policy: the event loop never blocks on a worker (full channel: drop and count,
//! CoAP clients retransmit); workers never block on MQTT (full request channel: drop and count);
//! the MQTT thread hands a command to a full worker queue back as a `5.03` response.
//!
//! Imports point one way, so there is no cycle: this file uses the modules below it;
//! `event_loop` uses `channel` and `metrics`; `worker` uses those and `mqtt`; `mqtt` uses
//! `channel`, `metrics`, `doorbell` and `mqtt_session`. `channel` and `metrics` use neither
//! `mqtt` nor this file.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use log::{info, warn};
use mio::Waker;

use crate::config::Config;
use crate::dtls;
use crate::lwm2m::model::ObjectRegistry;
use crate::security::{
    trust, CredentialStore, DeviceKeys, Identities, Policy, SharedCredentials, TrustAnchors,
};

use crate::core::limits::{Rate, SourceLimiter};

use addr_index::AddrIndex;
use blocklist::Blocklist;
use event_loop::{EventLoop, SourceLimits};
use mqtt::MqttClient;
use secure::{SecureListener, SecureShared};
use worker::Worker;

pub use channel::{WorkerMsg, WorkerTx};
pub use metrics::Metrics;

pub mod addr_index;
mod blocklist;
mod broker;
mod channel;
pub mod doorbell;
mod durable;
mod event_loop;
mod journal;
pub mod metrics;
pub mod mqtt;
pub mod mqtt_session;
pub mod ops;
mod reload;
mod secure;
mod signals;
pub mod sockopt;
mod state;
pub mod udp;
mod worker;

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    /// The operations surface's handle (HTTP API), and its listener when there is one.
    ops: Arc<ops::Ops>,
    http: Option<crate::http::HttpServer>,
    local_addrs: Vec<SocketAddr>,
    dtls_addrs: Vec<SocketAddr>,
    credentials: SharedCredentials,
    broker_addr: Option<SocketAddr>,
    broker_v5_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Wakes the event loop, which sleeps in its poll until a datagram arrives.
    waker: Arc<Waker>,
    workers: Vec<WorkerTx>,
    mqtt: MqttClient,
    /// Set first at shutdown: the event loop stops reading before the workers stop.
    udp_stop: Arc<AtomicBool>,
    worker_threads: Vec<JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
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
        // A Config built in code (tests, embedding) gets the same checks as one from a file.
        config.validate()?;
        let credentials = load_credentials(&config)?;
        let (server_cert, anchors) = load_certificates(&config)?;
        let identities = Arc::new(Identities::default());
        let mut shard_cfg = config.shard_config(model).map_err(anyhow::Error::msg)?;
        shard_cfg.authorizer = Arc::new(Policy {
            credentials: credentials.clone(),
            identities: identities.clone(),
            plain_requires_credential: config.security.plain_requires_credential,
        });
        let shard_cfg = Arc::new(shard_cfg);
        let metrics = Arc::new(Metrics::default());
        let tap = Arc::new(ops::Tap::default());
        let stop = Arc::new(AtomicBool::new(false));
        let index = Arc::new(AddrIndex::with_capacity(config.expected_devices));
        let mut threads = Vec::new();
        let mut worker_threads = Vec::new();
        let udp_stop = Arc::new(AtomicBool::new(false));

        // MQTT first: workers publish through clones of its client.
        let (host, port, broker_addr, broker_v5_addr) =
            match mqtt::broker_of(&config).map_err(anyhow::Error::msg)? {
                Some((h, p)) => (h, p, None, None),
                None => {
                    let l = broker::start(
                        config.mqtt.broker_listen,
                        config.mqtt.max_packet_size,
                        config.mqtt.version,
                    )?;
                    let g = l.gateway;
                    (
                        g.ip().to_string(),
                        g.port(),
                        Some(l.user),
                        l.v5(config.mqtt.version),
                    )
                }
            };
        let (client, connection) = MqttClient::new(&config, host, port)?;

        let (mut sockets, local_addrs) = bind_listeners(&config.listen, &config)?;
        let (dtls_sockets, dtls_addrs) = bind_listeners(&config.dtls.listen, &config)?;
        // Listener indexes: the plain ones first, then the DTLS ones.
        let mut dtls_listener = vec![false; sockets.len()];
        dtls_listener.extend(std::iter::repeat(true).take(dtls_sockets.len()));
        sockets.extend(dtls_sockets);
        let dtls_listener_flags = Arc::new(dtls_listener.clone());
        let dtls_index = Arc::new(AddrIndex::new());
        // Workers send from clones of the listeners, so a reply leaves from the address the
        // device sent to, without going through the event loop.
        let send_sockets: Arc<Vec<UdpSocket>> = Arc::new(
            sockets
                .iter()
                .map(|s| s.try_clone())
                .collect::<io::Result<_>>()?,
        );

        let (worker_txs, worker_rxs): (Vec<_>, Vec<_>) = (0..config.workers)
            .map(|_| channel::worker_queue(config.worker_queue))
            .unzip();
        let secure_shared = Arc::new(SecureShared {
            keys: DeviceKeys {
                credentials: credentials.clone(),
                anchors: anchors.clone(),
            },
            identities,
            index: dtls_index.clone(),
            workers: worker_txs.clone(),
        });
        let dtls_cfg = dtls_server_config(&config, server_cert, anchors.is_some());
        let lim = &config.limits;
        let blocklist = Arc::new(Blocklist::new(
            lim.block_time,
            lim.max_sources,
            metrics.clone(),
        ));
        let error_limiter = || {
            let rate = Rate {
                per_sec: lim.error_rate,
                burst: lim.error_burst,
            };
            SourceLimiter::new(rate, lim.max_sources)
        };
        let mut built = Vec::new();
        for (id, rx) in worker_rxs.into_iter().enumerate() {
            let durable = match &config.state.dir {
                Some(dir) => {
                    let ctx = || format!("cannot use the state directory {}", dir.display());
                    let sessions = match dtls_addrs.is_empty() {
                        true => None,
                        false => Some(state::StateFile::dtls_sessions(dir, id).with_context(ctx)?),
                    };
                    Some(durable::Durable::new(
                        state::StateFile::new(dir, id).with_context(ctx)?,
                        journal::JournalWriter::new(
                            state::JournalFile::new(dir, id).with_context(ctx)?,
                            id,
                        )
                        .with_context(ctx)?,
                        sessions,
                        config.workers as u16,
                        (
                            config.state.snapshot_interval,
                            config.state.journal_interval,
                        ),
                        secure_shared.identities.clone(),
                    ))
                }
                None => None,
            };
            let secure = (!dtls_addrs.is_empty()).then(|| {
                SecureListener::new(
                    id as u16,
                    dtls_cfg.clone(),
                    secure_shared.clone(),
                    std::time::Instant::now(),
                )
            });
            let w = Worker::new(
                id,
                shard_cfg.clone(),
                rx,
                send_sockets.clone(),
                dtls_listener_flags.clone(),
                secure,
                client.clone(),
                index.clone(),
                metrics.clone(),
                durable,
                (error_limiter(), blocklist.clone()),
                tap.clone(),
            )?;
            built.push(w);
        }
        // Each worker reads its own files: in parallel, so a restart of a million devices takes
        // the time of one shard's share.
        let restored: Vec<_> = std::thread::scope(|s| {
            let restoring: Vec<_> = built.iter_mut().map(|w| s.spawn(|| w.restore())).collect();
            restoring
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect()
        });
        for (id, w) in built.into_iter().enumerate() {
            worker_threads.push(spawn(format!("worker-{id}"), move || w.run())?);
        }
        if config.state.dir.is_some() {
            publish_restarted(&client, &shard_cfg.topics, &restored);
        }
        drop(secure_shared);

        if let Some(path) = credentials.file().map(Path::to_path_buf) {
            reload::install_sighup();
            let (store, workers, stop) = (credentials.clone(), worker_txs.clone(), stop.clone());
            let every = config.security.reload_interval;
            threads.push(spawn("credentials".into(), move || {
                reload::watch(path, store, workers, every, stop)
            })?);
        }

        {
            let topics = shard_cfg.topics.clone();
            let workers = worker_txs.clone();
            let (metrics, stop, client) = (metrics.clone(), stop.clone(), client.clone());
            let backoff = (config.mqtt.reconnect_min, config.mqtt.reconnect_max);
            let creds = credentials.clone();
            threads.push(spawn("mqtt".into(), move || {
                mqtt::run(
                    connection, client, topics, workers, metrics, stop, backoff, creds,
                )
            })?);
        }

        let (el, waker) = EventLoop::new(
            sockets,
            dtls_listener,
            dtls_index,
            worker_txs.clone(),
            index.clone(),
            metrics.clone(),
            udp_stop.clone(),
            SourceLimits {
                blocklist,
                register: SourceLimiter::new(
                    Rate {
                        per_sec: lim.register_rate,
                        burst: lim.register_burst,
                    },
                    lim.max_sources,
                ),
                errors: error_limiter(),
                max_datagram: lim.max_datagram,
            },
        )?;
        threads.push(spawn("event-loop".into(), move || el.run())?);

        if !config.stats_interval.is_zero() {
            let (metrics, stop, every) = (metrics.clone(), stop.clone(), config.stats_interval);
            threads.push(spawn("stats".into(), move || {
                metrics::stats_line(metrics, stop, every)
            })?);
        }
        info!(
            "listening on {:?}, DTLS on {:?}, with {} workers; commands on {}",
            local_addrs, dtls_addrs, config.workers, shard_cfg.topics.command_filter
        );
        let ops = Arc::new(ops::Ops::new(
            worker_txs.clone(),
            tap,
            client.clone(),
            credentials.clone(),
        ));
        // The operations surface last: everything it asks about is running.
        let http = match config.http.listen {
            Some(addr) => {
                let ctx = crate::http::Context::new(
                    &config.http,
                    ops.clone(),
                    metrics.clone(),
                    shard_cfg.model.clone(),
                    shard_cfg.topics.clone(),
                );
                let server = crate::http::HttpServer::start(addr, config.http.threads, ctx)?;
                crate::http::warn_if_exposed(server.local_addr());
                info!(
                    "HTTP API, metrics and web page on http://{}/",
                    server.local_addr()
                );
                Some(server)
            }
            None => None,
        };
        Ok(Gateway {
            ops,
            http,
            local_addrs,
            dtls_addrs,
            credentials,
            broker_addr,
            broker_v5_addr,
            metrics,
            stop,
            waker,
            workers: worker_txs,
            mqtt: client,
            udp_stop,
            worker_threads,
            threads,
        })
    }

    /// The bound plain-CoAP UDP addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The bound DTLS addresses.
    pub fn dtls_addrs(&self) -> &[SocketAddr] {
        &self.dtls_addrs
    }

    /// The device credentials in force (changed by reloads and MQTT management).
    pub fn credentials(&self) -> &SharedCredentials {
        &self.credentials
    }

    /// The embedded broker's address (`mqtt.broker_listen`), when one was started.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// The embedded broker's MQTT 5 listener, when one was started with one: `broker_addr`
    /// with `mqtt.version = "5"`, a loopback listener of its own with `auto` (where the gateway
    /// connects; `broker_addr` speaks 3.1.1 then), none with `3.1.1`.
    pub fn embedded_broker_v5_addr(&self) -> Option<SocketAddr> {
        self.broker_v5_addr
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The bound HTTP address (`http.listen`, useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr())
    }

    /// What the operations surface (HTTP API) asks the workers through.
    pub fn ops(&self) -> Arc<ops::Ops> {
        self.ops.clone()
    }

    /// Blocks until the gateway stops: after SIGTERM or SIGINT (a graceful [`Gateway::shutdown`],
    /// whose handlers this installs), or when its threads end on their own (a fatal error).
    pub fn wait(mut self) {
        signals::install();
        loop {
            if signals::terminate_requested() {
                info!("stopping: finishing queued work and writing the state");
                self.shutdown();
                info!("stopped");
                return;
            }
            let all_done = self.threads.iter().all(|t| t.is_finished())
                && self.worker_threads.iter().all(|t| t.is_finished());
            if all_done {
                for t in self.threads.drain(..).chain(self.worker_threads.drain(..)) {
                    let _ = t.join();
                }
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops every thread except the embedded broker's (rumqttd has no stop) and waits for them,
    /// in an order that loses nothing accepted: the event loop stops reading, the workers handle
    /// what is queued to them and write their state, then MQTT sends what they published and
    /// disconnects.
    pub fn shutdown(mut self) {
        // No new requests while the rest stops (an event stream ends at its next wake-up).
        if let Some(h) = self.http.take() {
            h.shutdown();
        }
        self.udp_stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        for w in &self.workers {
            w.send(WorkerMsg::Stop);
        }
        for t in self.worker_threads.drain(..) {
            let _ = t.join();
        }
        self.mqtt.try_disconnect();
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Tells applications that the gateway (re)started and what it restored: one message on the
/// gateway endpoint's response topic (`msgType` `restarted`). Restored devices get no
/// `register` event.
fn publish_restarted(
    client: &MqttClient,
    topics: &crate::core::topics::Topics,
    reports: &[Option<crate::core::shard::ImportReport>],
) {
    let sum = |f: fn(&crate::core::shard::ImportReport) -> usize| -> usize {
        reports.iter().flatten().map(f).sum()
    };
    let payload = serde_json::json!({
        "msgType": "restarted",
        "data": {
            "registrations": sum(|r| r.restored),
            "observations": sum(|r| r.observations),
            "queued": sum(|r| r.queued),
            "expired": sum(|r| r.expired),
            "unusable": sum(|r| r.skipped + r.skipped_observations),
            "complete": reports.iter().flatten().all(|r| r.complete),
            // False after a crash: what changed after the last journal write is lost.
            "graceful": reports.iter().flatten().all(|r| r.journal.closed),
            "journaled": sum(|r| r.journal.devices + r.journal.removed),
        }
    });
    let t = &topics.response;
    let topic = t.render_ip(crate::core::authorize::GATEWAY_ENDPOINT, None);
    if client
        .try_publish(topic, t.qos, payload.to_string().into_bytes())
        .is_err()
    {
        warn!("the restarted event could not be queued for MQTT");
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// The credentials file, or an empty store without one. A file that cannot be read at all stops
/// the start: running without the credentials it holds would let plain CoAP register the
/// endpoints it secures. Bad entries are skipped with a warning each.
fn load_credentials(config: &Config) -> anyhow::Result<SharedCredentials> {
    let Some(path) = &config.security.credentials else {
        return Ok(SharedCredentials::default());
    };
    let (store, errors) = CredentialStore::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    reload::log_entry_errors(path, &errors);
    info!("{} device credentials from {}", store.len(), path.display());
    Ok(SharedCredentials::with_file(store, path))
}

/// The gateway's key and certificate (enabling the certificate and raw-public-key suites) and
/// the CAs device certificates must lead to, as configured.
type Certificates = (
    Option<Arc<dtls::ecdhe::ServerCert>>,
    Option<Arc<TrustAnchors>>,
);

fn load_certificates(config: &Config) -> anyhow::Result<Certificates> {
    let d = &config.dtls;
    let cert = match &d.private_key {
        Some(key) => Some(Arc::new(trust::server_cert(d.certificate.as_deref(), key)?)),
        None => None,
    };
    let anchors = match d.trust_anchors.is_empty() {
        true => None,
        false => Some(Arc::new(TrustAnchors::load(&d.trust_anchors)?)),
    };
    Ok((cert, anchors))
}

/// Each worker's share of the DTLS limits, and the suites the configuration makes possible.
fn dtls_server_config(
    config: &Config,
    certificate: Option<Arc<dtls::ecdhe::ServerCert>>,
    client_x509: bool,
) -> dtls::server::Config {
    let d = &config.dtls;
    let n = config.workers.max(1);
    let mut suites = dtls::server::Config::default().suites;
    if certificate.is_some() {
        suites.extend([
            dtls::Suite::EcdheEcdsaAes128Ccm8,
            dtls::Suite::EcdheEcdsaAes128GcmSha256,
        ]);
    }
    dtls::server::Config {
        suites,
        max_handshakes: d.max_handshakes.div_ceil(n),
        max_sessions: d.max_sessions.div_ceil(n),
        handshake_timeout: d.handshake_timeout,
        idle_timeout: d.idle_timeout,
        connection_id: d.connection_id,
        client_rpk: certificate.is_some(),
        certificate,
        client_x509,
        ..dtls::server::Config::default()
    }
}

/// Binds UDP listeners on `addrs`; returns the sockets and their actual addresses.
fn bind_listeners(
    addrs: &[SocketAddr],
    config: &Config,
) -> anyhow::Result<(Vec<UdpSocket>, Vec<SocketAddr>)> {
    let mut sockets = Vec::new();
    let mut local_addrs = Vec::new();
    for addr in addrs {
        let s = bind_udp(*addr, config.recv_buffer)
            .with_context(|| format!("cannot listen on UDP {addr}"))?;
        local_addrs.push(s.local_addr()?);
        sockets.push(s);
    }
    Ok((sockets, local_addrs))
}

/// A non-blocking UDP socket bound to `addr`, with receive and send buffers of `recv_buffer`
/// bytes where the kernel allows.
fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // An IPv6 listener takes IPv6 only, so that `[::]` and `0.0.0.0` can both be configured.
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
