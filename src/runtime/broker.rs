//! The embedded MQTT broker (rumqttd), started when no broker URL is configured.
//!
//! Owns nothing after [`start`] returns: the broker runs on its own `mqtt-broker` thread, which
//! is never joined and never stopped (rumqttd has no stop), and the gateway reaches it over TCP
//! like any other client. Its queue limits are rumqttd's: a subscriber that falls behind loses
//! the oldest messages rather than growing the broker's memory.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{error, info, warn};

use crate::config::MqttVersion;

use super::sockopt;

/// Starts the embedded broker on `addr`; port 0 picks a free port. Returns the address.
pub(super) fn start(
    addr: SocketAddr,
    max_packet: usize,
    version: MqttVersion,
) -> anyhow::Result<SocketAddr> {
    // rumqttd reports a busy port only in its own log: probe first so the error is clear.
    let probe = TcpListener::bind(addr)
        .with_context(|| format!("embedded MQTT broker cannot listen on {addr}"))?;
    let addr = probe.local_addr()?;
    drop(probe);
    let config = config(addr, max_packet, version);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!("embedded MQTT broker stopped: {e}");
            }
        })?;
    set_nodelay_when_listening(addr);
    info!("embedded MQTT broker listening on {addr}");
    Ok(addr)
}

fn config(addr: SocketAddr, max_packet: usize, version: MqttVersion) -> rumqttd::Config {
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
