//! The options, defined once: [`Options`] is the partial configuration that both the TOML file
//! (serde) and the flags (clap) are read into, `None` meaning "not given".
//!
//! Contract of every field: its serde name within its section is the file key; `long` is its
//! flag; `id` is the key's dotted path (`coap.ack_timeout`), which is how help, errors and tests
//! find the key of a flag. The doc comment is the flag's help; the default is not written here
//! but appended from `Config::default()` (see `cli.rs`). Adding an option = a field here, a line
//! in each direction in `convert.rs`, a default in `Config::default()`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::translators::TranslatorsOptions;
use super::values::{HttpListen, MqttVersion, Seconds, Secret};
use super::{AutoObserve, UpdatePublishCondition, WriteEncoding};

/// Top-level keys, then one struct per `[section]`.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// UDP address to listen on for LwM2M devices; repeat the flag for several
    #[arg(id = "listen", long = "listen", value_name = "ADDR")]
    pub listen: Option<Vec<SocketAddr>>,
    /// Worker threads handling devices, 1..=256; the default is the number of CPUs
    #[arg(id = "workers", long = "workers", short = 'w', value_name = "N")]
    pub workers: Option<usize>,
    /// Registrations to make room for at start (about 100 bytes each), so that a registration
    /// storm does not stall on growing tables; 0 grows on demand
    #[arg(id = "expected_devices", long = "expected-devices", value_name = "N")]
    pub expected_devices: Option<usize>,
    /// Datagrams/commands queued per worker before the event loop drops and counts
    #[arg(id = "worker_queue", long = "worker-queue", value_name = "N")]
    pub worker_queue: Option<usize>,
    /// UDP socket receive buffer in bytes (the kernel may cap it at net.core.rmem_max)
    #[arg(id = "recv_buffer", long = "recv-buffer", value_name = "BYTES")]
    pub recv_buffer: Option<usize>,
    /// Smallest lifetime (s) a Register/Update may ask for
    #[arg(id = "lifetime_min", long = "lifetime-min", value_name = "S")]
    pub lifetime_min: Option<u32>,
    /// Largest lifetime (s) a Register/Update may ask for
    #[arg(id = "lifetime_max", long = "lifetime-max", value_name = "S")]
    pub lifetime_max: Option<u32>,
    /// Directory of OMA DDF object definitions (*.xml)
    #[arg(id = "xml_dir", long = "xml-dir", value_name = "DIR")]
    pub xml_dir: Option<PathBuf>,
    /// Topic prefix; %e or ${endpoint_name} = endpoint, %a or ${peerhost} = device IP
    #[arg(id = "mountpoint", long = "mountpoint", value_name = "PREFIX")]
    pub mountpoint: Option<String>,
    /// When to publish Update events: always, or contains_object_list (only Updates carrying an
    /// object list; contains-object-list is accepted too)
    #[arg(
        id = "update_msg_publish_condition",
        long = "update-msg-publish-condition",
        value_name = "WHEN"
    )]
    pub update_msg_publish_condition: Option<UpdatePublishCondition>,
    /// How writes are encoded when a command names no data.format: auto (the device's best
    /// announced format; text/plain single writes to a device that announced none) or tlv
    /// (always TLV, as EMQX)
    #[arg(id = "write_encoding", long = "write-encoding", value_name = "ENC")]
    pub write_encoding: Option<WriteEncoding>,
    /// Commands waiting per device behind the one in flight
    #[arg(
        id = "downlink_queue_max",
        long = "downlink-queue-max",
        value_name = "N"
    )]
    pub downlink_queue_max: Option<usize>,
    /// Seconds a waiting command stays valid before it is answered with coap_timeout; 0 = forever
    #[arg(
        id = "downlink_queue_max_age",
        long = "downlink-queue-max-age",
        value_name = "S"
    )]
    pub downlink_queue_max_age: Option<u64>,
    /// Seconds a queue-mode device stays reachable after its last message
    #[arg(id = "qmode_time_window", long = "qmode-time-window", value_name = "S")]
    pub qmode_time_window: Option<Seconds>,
    /// Observe new registrations: false, true, or object paths like /3/0,/3303/0 (in the file
    /// also a list)
    #[arg(id = "auto_observe", long = "auto-observe", value_name = "V")]
    pub auto_observe: Option<AutoObserve>,
    #[command(flatten)]
    #[serde(default)]
    pub translators: TranslatorsOptions,
    #[command(flatten)]
    #[serde(default)]
    pub blockwise: BlockwiseOptions,
    #[command(flatten)]
    #[serde(default)]
    pub coap: CoapOptions,
    #[command(flatten)]
    #[serde(default)]
    pub mqtt: MqttOptions,
    #[command(flatten)]
    #[serde(default)]
    pub dtls: DtlsOptions,
    #[command(flatten)]
    #[serde(default)]
    pub security: SecurityOptions,
    #[command(flatten)]
    #[serde(default)]
    pub state: StateOptions,
    #[command(flatten)]
    #[serde(default)]
    pub limits: LimitsOptions,
    #[command(flatten)]
    #[serde(default)]
    pub http: HttpOptions,
    #[command(flatten)]
    #[serde(default)]
    pub log: LogOptions,
}

/// `[dtls]`: the DTLS 1.2 listeners (PSK) and their limits.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "DTLS")]
pub struct DtlsOptions {
    /// UDP address of a DTLS listener (coaps); repeat the flag for several; an empty list in
    /// the file turns DTLS off
    #[arg(id = "dtls.listen", long = "dtls-listen", value_name = "ADDR")]
    pub listen: Option<Vec<SocketAddr>>,
    /// The gateway's certificate chain, PEM (end-entity first); without it, with a private key,
    /// only raw public keys (RFC 7250) are presented
    #[arg(
        id = "dtls.certificate",
        long = "dtls-certificate",
        value_name = "FILE"
    )]
    pub certificate: Option<PathBuf>,
    /// The gateway's P-256 private key, PEM (PKCS#8 or SEC1): enables the certificate and
    /// raw-public-key suites (ECDHE_ECDSA with AES-128-CCM-8 or -GCM)
    #[arg(
        id = "dtls.private_key",
        long = "dtls-private-key",
        value_name = "FILE"
    )]
    pub private_key: Option<PathBuf>,
    /// CA certificates, PEM, that device certificates must lead to; repeat for several; none:
    /// no X.509 devices
    #[arg(
        id = "dtls.trust_anchors",
        long = "dtls-trust-anchors",
        value_name = "FILE"
    )]
    pub trust_anchors: Option<Vec<PathBuf>>,
    /// DTLS handshakes in progress at once, all workers together; more ClientHellos are dropped
    #[arg(
        id = "dtls.max_handshakes",
        long = "dtls-max-handshakes",
        value_name = "N"
    )]
    pub max_handshakes: Option<usize>,
    /// Established DTLS sessions, all workers together; beyond it new handshakes are refused
    #[arg(id = "dtls.max_sessions", long = "dtls-max-sessions", value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Seconds a handshake may take before its state is dropped
    #[arg(
        id = "dtls.handshake_timeout",
        long = "dtls-handshake-timeout",
        value_name = "S"
    )]
    pub handshake_timeout: Option<Seconds>,
    /// Seconds without a record from the device before its DTLS session is dropped
    #[arg(id = "dtls.idle_timeout", long = "dtls-idle-timeout", value_name = "S")]
    pub idle_timeout: Option<Seconds>,
    /// Agree to a Connection ID (RFC 9146) with devices that offer one, so that their session
    /// and registration follow them to a new address without a handshake
    #[arg(
        id = "dtls.connection_id",
        long = "dtls-connection-id",
        value_name = "BOOL"
    )]
    pub connection_id: Option<bool>,
}

/// `[security]`: device credentials and what plain CoAP may do.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Security")]
pub struct SecurityOptions {
    /// Device credentials file (.toml or .json, see README); reloaded when it changes and on
    /// SIGHUP; credentials added over MQTT are saved back to it
    #[arg(id = "security.credentials", long = "credentials", value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Plain CoAP only for endpoints whose credential says nosec (otherwise any endpoint
    /// without a credential may register over plain CoAP)
    #[arg(
        id = "security.plain_requires_credential",
        long = "plain-requires-credential",
        value_name = "BOOL"
    )]
    pub plain_requires_credential: Option<bool>,
    /// Seconds between checks of the credentials file for changes; 0 = only on SIGHUP
    #[arg(
        id = "security.reload_interval",
        long = "credentials-reload-interval",
        value_name = "S"
    )]
    pub reload_interval: Option<u64>,
}

/// `[state]`: where registrations, observations and queued commands survive a restart.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "State")]
pub struct StateOptions {
    /// Directory of the state that survives a restart (one snapshot file per worker); "" keeps
    /// nothing
    #[arg(
        id = "state.dir",
        long = "state-dir",
        value_name = "DIR",
        // Clap's path parser refuses "", which is how this option is turned off.
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from
        )
    )]
    pub dir: Option<PathBuf>,
    /// Seconds between snapshots while running (besides the one at shutdown); 0 = at shutdown
    /// only
    #[arg(
        id = "state.snapshot_interval",
        long = "state-snapshot-interval",
        value_name = "S"
    )]
    pub snapshot_interval: Option<u64>,
    /// Seconds between journal writes of what changed since (fractions allowed): how much a
    /// crash can lose; 0 = no journal (a crash goes back to the last snapshot)
    #[arg(
        id = "state.journal_interval",
        long = "state-journal-interval",
        value_name = "S"
    )]
    pub journal_interval: Option<Seconds>,
}

/// `[limits]`: what one source (an IPv4 address or an IPv6 /64) may cost, and how many devices
/// the gateway holds.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Limits")]
pub struct LimitsOptions {
    /// Registrations held at most, all workers together; a new endpoint beyond it gets 5.03
    #[arg(
        id = "limits.max_registrations",
        long = "limits-max-registrations",
        value_name = "N"
    )]
    pub max_registrations: Option<usize>,
    /// Registers per second per source; beyond it 4.29 (with Max-Age); 0 = no limit
    #[arg(
        id = "limits.register_rate",
        long = "limits-register-rate",
        value_name = "N"
    )]
    pub register_rate: Option<u32>,
    /// Registers a source may send at once before its rate applies
    #[arg(
        id = "limits.register_burst",
        long = "limits-register-burst",
        value_name = "N"
    )]
    pub register_burst: Option<u32>,
    /// Errors per second per source (malformed datagrams, requests for nothing, refused
    /// requests, responses to nothing) before the source is blocked; 0 = no limit
    #[arg(id = "limits.error_rate", long = "limits-error-rate", value_name = "N")]
    pub error_rate: Option<u32>,
    /// Errors a source may make at once before its rate applies
    #[arg(
        id = "limits.error_burst",
        long = "limits-error-burst",
        value_name = "N"
    )]
    pub error_burst: Option<u32>,
    /// Seconds a blocked source's datagrams are dropped unread
    #[arg(id = "limits.block_time", long = "limits-block-time", value_name = "S")]
    pub block_time: Option<u64>,
    /// Sources each rate limiter tracks at once (about 50 bytes each); beyond it new sources
    /// pass unlimited
    #[arg(
        id = "limits.max_sources",
        long = "limits-max-sources",
        value_name = "N"
    )]
    pub max_sources: Option<usize>,
    /// Largest datagram read, bytes (CoAP and DTLS); larger ones are dropped (a queued datagram
    /// holds its size in a worker queue: worker_queue x this bounds it)
    #[arg(
        id = "limits.max_datagram",
        long = "limits-max-datagram",
        value_name = "BYTES"
    )]
    pub max_datagram: Option<usize>,
}

/// `[http]`: the HTTP API, Prometheus metrics, live events and the web page.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "HTTP API")]
pub struct HttpOptions {
    /// Address of the HTTP API, metrics and web page, or off; an address off loopback needs
    /// http.token
    #[arg(id = "http.listen", long = "http-listen", value_name = "ADDR|off")]
    pub listen: Option<HttpListen>,
    /// Bearer token every request but /health must carry (Authorization: Bearer, or ?token=)
    #[arg(
        id = "http.token",
        long = "http-token",
        value_name = "TOKEN",
        env = "LWM2M_GATEWAY_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Secret>,
    /// Origin allowed to call the API from a browser (CORS), e.g. https://ops.example.com, or *
    #[arg(
        id = "http.cors_origin",
        long = "http-cors-origin",
        value_name = "ORIGIN"
    )]
    pub cors_origin: Option<String>,
    /// Threads answering HTTP requests (event streams have threads of their own)
    #[arg(id = "http.threads", long = "http-threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Longest wait in seconds for a device's answer to an HTTP command (?timeout= asks for less)
    #[arg(
        id = "http.command_timeout",
        long = "http-command-timeout",
        value_name = "S"
    )]
    pub command_timeout: Option<u64>,
    /// Live event streams (GET /events) open at once
    #[arg(
        id = "http.max_event_streams",
        long = "http-max-event-streams",
        value_name = "N"
    )]
    pub max_event_streams: Option<usize>,
}

/// `[blockwise]`: block-wise transfers (RFC 7959).
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Block-wise transfers")]
pub struct BlockwiseOptions {
    /// Block size, a power of two in 16..=1024
    #[arg(id = "blockwise.block_size", long = "block-size", value_name = "BYTES")]
    pub block_size: Option<usize>,
    /// Largest block-wise body reassembled per device, bytes
    #[arg(
        id = "blockwise.max_body",
        long = "block-max-body",
        value_name = "BYTES"
    )]
    pub max_body: Option<usize>,
    /// Block-wise reassembly memory per worker, bytes
    #[arg(
        id = "blockwise.total_max",
        long = "block-total-max",
        value_name = "BYTES"
    )]
    pub total_max: Option<usize>,
}

/// `[coap]`: RFC 7252 transmission parameters and the caches built on them.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "CoAP")]
pub struct CoapOptions {
    /// CoAP ACK_TIMEOUT in seconds
    #[arg(id = "coap.ack_timeout", long = "coap-ack-timeout", value_name = "S")]
    pub ack_timeout: Option<Seconds>,
    /// CoAP ACK_RANDOM_FACTOR, 1.0..=10.0
    #[arg(
        id = "coap.ack_random_factor",
        long = "coap-ack-random-factor",
        value_name = "F"
    )]
    pub ack_random_factor: Option<f64>,
    /// CoAP MAX_RETRANSMIT, at most 20
    #[arg(
        id = "coap.max_retransmit",
        long = "coap-max-retransmit",
        value_name = "N"
    )]
    pub max_retransmit: Option<u32>,
    /// Seconds to wait for a separate response after an empty ACK
    #[arg(
        id = "coap.separate_response_timeout",
        long = "coap-separate-response-timeout",
        value_name = "S"
    )]
    pub separate_response_timeout: Option<Seconds>,
    /// Entries in each worker's message-id deduplication cache
    #[arg(
        id = "coap.dedup_max_entries",
        long = "coap-dedup-max-entries",
        value_name = "N"
    )]
    pub dedup_max_entries: Option<usize>,
}

/// `[mqtt]`: the gateway's MQTT connection, and the embedded broker used without `url`.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "MQTT")]
pub struct MqttOptions {
    /// External broker, mqtt://host[:port]; without it an embedded broker is started
    #[arg(id = "mqtt.url", long = "mqtt-url", value_name = "URL")]
    pub url: Option<String>,
    /// MQTT protocol version: auto (5, or 3.1.1 when the broker refuses 5), 3.1.1 or 5 (EMQX's
    /// v4 and v5 work too); with 5 commands' Message-Expiry-Interval is honoured
    #[arg(id = "mqtt.version", long = "mqtt-version", value_name = "VERSION")]
    pub version: Option<MqttVersion>,
    /// Listen address of the embedded broker
    #[arg(id = "mqtt.broker_listen", long = "broker-listen", value_name = "ADDR")]
    pub broker_listen: Option<SocketAddr>,
    /// MQTT client id of the gateway
    #[arg(id = "mqtt.client_id", long = "mqtt-client-id", value_name = "ID")]
    pub client_id: Option<String>,
    /// MQTT user name
    #[arg(id = "mqtt.username", long = "mqtt-username", value_name = "NAME")]
    pub username: Option<String>,
    /// MQTT password
    #[arg(
        id = "mqtt.password",
        long = "mqtt-password",
        value_name = "PASSWORD",
        env = "LWM2M_GATEWAY_MQTT_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Secret>,
    /// MQTT keep-alive in seconds, at least 5
    #[arg(id = "mqtt.keep_alive", long = "mqtt-keep-alive", value_name = "S")]
    pub keep_alive: Option<u64>,
    /// QoS 1/2 publishes in flight to the broker
    #[arg(id = "mqtt.inflight", long = "mqtt-inflight", value_name = "N")]
    pub inflight: Option<u16>,
    /// Publishes buffered towards the MQTT connection (kept while the broker is away) before
    /// dropping and counting
    #[arg(
        id = "mqtt.channel_capacity",
        long = "mqtt-channel-capacity",
        value_name = "N"
    )]
    pub channel_capacity: Option<usize>,
    /// Largest MQTT packet sent or accepted, bytes (also the embedded broker's limit)
    #[arg(
        id = "mqtt.max_packet_size",
        long = "mqtt-max-packet-size",
        value_name = "BYTES"
    )]
    pub max_packet_size: Option<usize>,
    /// Seconds before the first reconnect after the connection is lost; doubles on every failure
    #[arg(
        id = "mqtt.reconnect_min",
        long = "mqtt-reconnect-min",
        value_name = "S"
    )]
    pub reconnect_min: Option<Seconds>,
    /// Longest wait between reconnects, seconds
    #[arg(
        id = "mqtt.reconnect_max",
        long = "mqtt-reconnect-max",
        value_name = "S"
    )]
    pub reconnect_max: Option<Seconds>,
}

/// `[log]`.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Logging")]
pub struct LogOptions {
    /// Log level: error, warn, info, debug, trace or off; RUST_LOG overrides
    #[arg(id = "log.level", long = "log-level", value_name = "LEVEL")]
    pub level: Option<String>,
    /// Seconds between one-line stats summaries at info level; 0 disables
    #[arg(id = "log.stats_interval", long = "stats-interval", value_name = "S")]
    pub stats_interval: Option<u64>,
}
