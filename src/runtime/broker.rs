//! The embedded MQTT broker (rumqttd), started when no broker URL is configured.
//!
//! Owns nothing after [`start`] returns: the broker runs on its own `mqtt-broker` thread, which
//! is never joined and never stopped (rumqttd has no stop), and the gateway reaches it over TCP
//! like any other client. Its queue limits are rumqttd's: a subscriber that falls behind loses
//! the oldest messages rather than growing the broker's memory.
//!
//! Protocol versions: a rumqttd listener speaks one version (it closes a connection whose
//! CONNECT has another protocol level), and all listeners share one router, so a message
//! published over one version reaches subscribers on the other (MQTT 5 properties such as the
//! message expiry are dropped towards 3.1.1 subscribers). Hence, by `mqtt.version`:
//!
//! - `3.1.1`: one MQTT 3.1.1 listener on `broker_listen`;
//! - `5`: one MQTT 5 listener on `broker_listen`;
//! - `auto` (the default): the MQTT 3.1.1 listener on `broker_listen`, unchanged for the
//!   applications and tools that connect there with 3.1.1 clients, plus an MQTT 5 listener on a
//!   free loopback port that the gateway itself connects to, so that it runs on MQTT 5 and
//!   honours the Message-Expiry-Interval of commands published by MQTT 5 clients (they reach
//!   that listener through [`Listeners::gateway`], logged at start and given by
//!   `Gateway::embedded_broker_v5_addr`). rumqttd 0.20's MQTT 5 listener does what the gateway
//!   needs: the wildcard command subscription, QoS 1 both ways, and the expiry of a queued
//!   command (`tests/loopback.rs`, `tests/mqtt5_default.rs`).

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{error, info, warn};

use crate::config::MqttVersion;

use super::sockopt;

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listeners {
    /// `broker_listen`, with the port chosen when it was 0.
    pub user: SocketAddr,
    /// The one the gateway connects to: `user`, or with `auto` the MQTT 5 loopback listener.
    pub gateway: SocketAddr,
}

impl Listeners {
    /// The MQTT 5 listener, if there is one.
    pub fn v5(&self, version: MqttVersion) -> Option<SocketAddr> {
        match version {
            MqttVersion::V311 => None,
            MqttVersion::V5 | MqttVersion::Auto => Some(self.gateway),
        }
    }
}

/// Starts the embedded broker on `addr` (port 0 picks a free port), and with `Auto` its MQTT 5
/// listener for the gateway on a free loopback port.
pub(super) fn start(
    addr: SocketAddr,
    max_packet: usize,
    version: MqttVersion,
) -> anyhow::Result<Listeners> {
    // Both probes stay bound until both ports are chosen, so that they differ.
    let user_probe = probe(addr)?;
    let user = user_probe.local_addr()?;
    let gateway_probe = match version {
        MqttVersion::V311 | MqttVersion::V5 => None,
        MqttVersion::Auto => {
            let loopback = match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            Some(probe(SocketAddr::new(loopback, 0))?)
        }
    };
    let listeners = Listeners {
        user,
        gateway: match &gateway_probe {
            Some(p) => p.local_addr()?,
            None => user,
        },
    };
    drop((user_probe, gateway_probe));
    let config = config(listeners, max_packet, version);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!("embedded MQTT broker stopped: {e}");
            }
        })?;
    set_nodelay_when_listening(listeners.user);
    match version {
        MqttVersion::V311 => info!("embedded MQTT broker listening on {user} (MQTT 3.1.1)"),
        MqttVersion::V5 => info!("embedded MQTT broker listening on {user} (MQTT 5)"),
        MqttVersion::Auto => {
            set_nodelay_when_listening(listeners.gateway);
            info!(
                "embedded MQTT broker listening on {user} (MQTT 3.1.1) and on {} (MQTT 5, the \
                 gateway's connection)",
                listeners.gateway
            );
        }
    }
    Ok(listeners)
}

/// A listener on `addr` (its port chosen if 0), to drop before rumqttd binds the same address:
/// rumqttd reports a busy port only in its own log, so probing first gives a clear error.
fn probe(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("embedded MQTT broker cannot listen on {addr}"))
}

fn config(listeners: Listeners, max_packet: usize, version: MqttVersion) -> rumqttd::Config {
    let conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60000,
        max_payload_size: max_packet,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = |name: &str, listen: SocketAddr| {
        let mut servers = std::collections::HashMap::new();
        let settings = rumqttd::ServerSettings {
            name: name.into(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: conn.clone(),
        };
        servers.insert("1".to_string(), settings);
        Some(servers)
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
    let (v4, v5) = match version {
        MqttVersion::V311 => (server("v4-1", listeners.user), None),
        MqttVersion::V5 => (None, server("v5-1", listeners.user)),
        MqttVersion::Auto => (
            server("v4-1", listeners.user),
            server("v5-1", listeners.gateway),
        ),
    };
    rumqttd::Config {
        id: 0,
        router,
        v4,
        v5,
        ..Default::default()
    }
}

/// Disables Nagle on the broker's listener before anyone connects: accepted sockets inherit it,
/// and rumqttd never sets it itself (see [`sockopt`]). The listener appears once the broker
/// thread has bound it, hence the short wait.
fn set_nodelay_when_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockopt::set_nodelay_on_local(addr) == 0 {
        if Instant::now() > deadline {
            warn!("embedded MQTT broker: listener not found, TCP_NODELAY not set");
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
