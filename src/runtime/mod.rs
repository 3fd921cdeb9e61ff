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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use log::{info, warn};
use mio::Waker;

use crate::config::Config;
use crate::core::settings::ShardConfig;
use crate::lwm2m::model::ObjectRegistry;

use addr_index::AddrIndex;
use event_loop::EventLoop;
use mqtt::MqttClient;
use worker::Worker;

pub use channel::{WorkerMsg, WorkerTx};
pub use metrics::Metrics;

pub mod addr_index;
mod broker;
mod channel;
pub mod doorbell;
mod event_loop;
mod metrics;
pub mod mqtt;
pub mod mqtt_session;
pub mod sockopt;
pub mod udp;
mod worker;

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    local_addrs: Vec<SocketAddr>,
    broker_addr: Option<SocketAddr>,
    broker_v5_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Wakes the event loop, which sleeps in its poll until a datagram arrives.
    waker: Arc<Waker>,
    workers: Vec<WorkerTx>,
    mqtt: MqttClient,
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
        let shard_cfg: Arc<ShardConfig> =
            Arc::new(config.shard_config(model).map_err(anyhow::Error::msg)?);
        let metrics = Arc::new(Metrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let index = Arc::new(AddrIndex::with_capacity(config.expected_devices));
        let mut threads = Vec::new();

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

        let (sockets, local_addrs) = bind_listeners(&config)?;
        // Workers send from clones of the listeners, so a reply leaves from the address the
        // device sent to, without going through the event loop.
        let send_sockets: Arc<Vec<UdpSocket>> = Arc::new(
            sockets
                .iter()
                .map(|s| s.try_clone())
                .collect::<io::Result<_>>()?,
        );

        let mut worker_txs = Vec::new();
        for id in 0..config.workers {
            let (tx, rx) = channel::worker_queue(config.worker_queue);
            worker_txs.push(tx);
            let w = Worker::new(
                id,
                shard_cfg.clone(),
                rx,
                send_sockets.clone(),
                client.clone(),
                index.clone(),
                metrics.clone(),
            )?;
            threads.push(spawn(format!("worker-{id}"), move || w.run())?);
        }

        {
            let topics = shard_cfg.topics.clone();
            let workers = worker_txs.clone();
            let (metrics, stop, client) = (metrics.clone(), stop.clone(), client.clone());
            let backoff = (config.mqtt.reconnect_min, config.mqtt.reconnect_max);
            threads.push(spawn("mqtt".into(), move || {
                mqtt::run(connection, client, topics, workers, metrics, stop, backoff)
            })?);
        }

        let (el, waker) = EventLoop::new(
            sockets,
            worker_txs.clone(),
            index.clone(),
            metrics.clone(),
            stop.clone(),
        )?;
        threads.push(spawn("event-loop".into(), move || el.run())?);

        if !config.stats_interval.is_zero() {
            let (metrics, stop, every) = (metrics.clone(), stop.clone(), config.stats_interval);
            threads.push(spawn("stats".into(), move || {
                metrics::stats_line(metrics, stop, every)
            })?);
        }
        info!(
            "listening on {:?} with {} workers; commands on {}",
            local_addrs, config.workers, shard_cfg.topics.command_filter
        );
        Ok(Gateway {
            local_addrs,
            broker_addr,
            broker_v5_addr,
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

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// Binds every configured UDP listener; returns the sockets and their actual addresses.
fn bind_listeners(config: &Config) -> anyhow::Result<(Vec<UdpSocket>, Vec<SocketAddr>)> {
    let mut sockets = Vec::new();
    let mut local_addrs = Vec::new();
    for addr in &config.listen {
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
