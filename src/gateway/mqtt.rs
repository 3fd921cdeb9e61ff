//! The MQTT side's I/O: one connection (rumqttc, MQTT 3.1.1 or 5) driven by its own thread,
//! cloned client handles for the workers to publish through, and the loop that turns incoming
//! commands into [`WorkerMsg::Command`]s for the worker owning the endpoint.
//!
//! Reconnects with exponential backoff and subscribes again after every connect (clean session).
//! With MQTT 5 a command's Message-Expiry-Interval travels with it to the worker, which drops the
//! command (answering `coap_timeout`) if it expires while waiting for a sleeping device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use log::{error, info, warn};
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::v5::mqttbytes::QoS as QoS5;

use crate::config::{parse_mqtt_url, Config, MqttVersion};

use super::envelope;
use super::router;
use super::runtime::{Metrics, WorkerMsg};
use super::topics::Topics;

/// A publishing handle, cloned into every worker.
#[derive(Clone)]
pub enum MqttClient {
    V311(rumqttc::Client),
    V5(rumqttc::v5::Client),
}

/// The connection to drive (one thread). Built once, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum MqttConnection {
    V311(rumqttc::Connection),
    V5(rumqttc::v5::Connection),
}

#[derive(Debug, thiserror::Error)]
#[error("MQTT client request channel: {0}")]
pub struct PublishError(String);

impl MqttClient {
    /// Connects lazily (the connection thread does the I/O) to `host:port`.
    pub fn new(config: &Config, host: String, port: u16) -> (MqttClient, MqttConnection) {
        let m = &config.mqtt;
        match m.version {
            MqttVersion::V311 => {
                let mut o = rumqttc::MqttOptions::new(m.client_id.clone(), host, port);
                o.set_keep_alive(m.keep_alive);
                o.set_inflight(m.inflight);
                o.set_max_packet_size(m.max_packet_size, m.max_packet_size);
                o.set_clean_session(true);
                if let Some(u) = &m.username {
                    o.set_credentials(u.clone(), m.password.clone().unwrap_or_default());
                }
                let (c, mut conn) = rumqttc::Client::new(o, m.channel_capacity);
                conn.eventloop.set_network_options(network_options());
                (MqttClient::V311(c), MqttConnection::V311(conn))
            }
            MqttVersion::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(m.client_id.clone(), host, port);
                o.set_keep_alive(m.keep_alive);
                o.set_outgoing_inflight_upper_limit(m.inflight);
                o.set_max_packet_size(Some(m.max_packet_size as u32));
                o.set_clean_start(true);
                o.set_network_options(network_options());
                if let Some(u) = &m.username {
                    o.set_credentials(u.clone(), m.password.clone().unwrap_or_default());
                }
                let (c, conn) = rumqttc::v5::Client::new(o, m.channel_capacity);
                (MqttClient::V5(c), MqttConnection::V5(conn))
            }
        }
    }

    pub fn try_publish(
        &self,
        topic: String,
        qos: u8,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        match self {
            MqttClient::V311(c) => c
                .try_publish(topic, qos311(qos), false, payload)
                .map_err(|e| PublishError(e.to_string())),
            MqttClient::V5(c) => c
                .try_publish(topic, qos5(qos), false, payload)
                .map_err(|e| PublishError(e.to_string())),
        }
    }

    fn try_subscribe(&self, filter: String, qos: u8) -> Result<(), PublishError> {
        match self {
            MqttClient::V311(c) => c
                .try_subscribe(filter, qos311(qos))
                .map_err(|e| PublishError(e.to_string())),
            MqttClient::V5(c) => c
                .try_subscribe(filter, qos5(qos))
                .map_err(|e| PublishError(e.to_string())),
        }
    }

    pub fn try_disconnect(&self) {
        let _ = match self {
            MqttClient::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            MqttClient::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

/// TCP_NODELAY: a response or event is one small packet that must leave now; Nagle's algorithm
/// held them back behind the broker's delayed ACKs (about 40 ms per exchange at low load).
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

fn qos311(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> QoS5 {
    match q {
        0 => QoS5::AtMostOnce,
        1 => QoS5::AtLeastOnce,
        _ => QoS5::ExactlyOnce,
    }
}

/// Broker address from the configuration: the URL's, or `None` for the embedded broker.
pub fn broker_of(config: &Config) -> Result<Option<(String, u16)>, String> {
    config.mqtt.url.as_deref().map(parse_mqtt_url).transpose()
}

/// What one connection event means to the loop, whatever the protocol version.
enum Step {
    Connected,
    Subscribed,
    Command {
        topic: String,
        payload: Vec<u8>,
        expiry: Option<Duration>,
    },
    Other,
    Failed(String),
}

/// Drives the connection until `stop`; the body of the MQTT thread.
pub fn run(
    connection: MqttConnection,
    client: MqttClient,
    topics: Topics,
    workers: Vec<Sender<WorkerMsg>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    (backoff_min, backoff_max): (Duration, Duration),
) {
    let mut backoff = backoff_min;
    let mut handle = |step: Step| -> bool {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match step {
            Step::Connected => {
                info!(
                    "connected to MQTT broker; subscribing to {}",
                    topics.command_filter
                );
                metrics.mqtt_connected.store(true, Ordering::Relaxed);
                backoff = backoff_min;
                // Clean session: subscribe again after every (re)connect.
                if let Err(e) =
                    client.try_subscribe(topics.command_filter.clone(), topics.command_qos)
                {
                    error!("cannot subscribe to {}: {e}", topics.command_filter);
                }
            }
            Step::Subscribed => metrics.mqtt_subscribed.store(true, Ordering::Relaxed),
            Step::Command {
                topic,
                payload,
                expiry,
            } => {
                metrics.commands_in.fetch_add(1, Ordering::Relaxed);
                let Some(ep) = topics.endpoint_of_command(&topic) else {
                    warn!("command on {topic} does not name an endpoint; ignored");
                    metrics.commands_dropped.fetch_add(1, Ordering::Relaxed);
                    return true;
                };
                let w = router::shard_of_endpoint(ep.as_bytes(), workers.len());
                let msg = WorkerMsg::Command {
                    endpoint: ep.to_string(),
                    payload,
                    expiry,
                };
                if let Err(e) = workers[w].try_send(msg) {
                    metrics.commands_dropped.fetch_add(1, Ordering::Relaxed);
                    if let TrySendError::Full(WorkerMsg::Command {
                        endpoint, payload, ..
                    }) = e
                    {
                        overloaded(&client, &topics, &endpoint, &payload);
                    }
                }
            }
            Step::Other => {}
            Step::Failed(e) => {
                metrics.mqtt_connected.store(false, Ordering::Relaxed);
                metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
                warn!("MQTT connection error: {e}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(backoff_max);
            }
        }
        true
    };
    match connection {
        MqttConnection::V311(mut conn) => {
            use rumqttc::{Event, Packet};
            for ev in conn.iter() {
                let step = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Step::Connected,
                    Ok(Event::Incoming(Packet::SubAck(_))) => Step::Subscribed,
                    Ok(Event::Incoming(Packet::Publish(p))) => Step::Command {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        expiry: None,
                    },
                    Ok(_) => Step::Other,
                    Err(e) => Step::Failed(e.to_string()),
                };
                if !handle(step) {
                    break;
                }
            }
        }
        MqttConnection::V5(mut conn) => {
            use rumqttc::v5::Event;
            for ev in conn.iter() {
                let step = match ev {
                    Ok(Event::Incoming(Packet5::ConnAck(_))) => Step::Connected,
                    Ok(Event::Incoming(Packet5::SubAck(_))) => Step::Subscribed,
                    Ok(Event::Incoming(Packet5::Publish(p))) => Step::Command {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        expiry: p
                            .properties
                            .as_ref()
                            .and_then(|pr| pr.message_expiry_interval)
                            .map(|s| Duration::from_secs(s as u64)),
                    },
                    Ok(_) => Step::Other,
                    Err(e) => Step::Failed(e.to_string()),
                };
                if !handle(step) {
                    break;
                }
            }
        }
    }
    metrics.mqtt_connected.store(false, Ordering::Relaxed);
}

/// Answers a command that could not be queued to its worker.
fn overloaded(client: &MqttClient, topics: &Topics, endpoint: &str, payload: &[u8]) {
    let (echo, msg_type, req_path) = match envelope::parse_command(payload) {
        Ok(c) => {
            let rp = envelope::req_path_of(&c.data);
            (c.echo, c.msg_type, rp)
        }
        Err(e) => (
            e.echo,
            e.msg_type.unwrap_or_else(|| "error".into()),
            serde_json::Value::Null,
        ),
    };
    let data = envelope::response_data(
        &req_path,
        crate::coap::code::SERVICE_UNAVAILABLE,
        None,
        Some("gateway overloaded"),
    );
    let msg = envelope::message(&echo, &msg_type, None, data);
    let t = &topics.response;
    let _ = client.try_publish(t.render(endpoint, ""), t.qos, msg);
}
