//! Configuration: defaults, then a TOML file (`--config`), then command-line flags, merged into one
//! validated [`Config`].
//!
//! - `mod.rs` (here): the typed [`Config`] the gateway runs on, its defaults (the only place
//!   defaults are written), loading and the error type.
//! - `options.rs`: [`Options`], the one partial configuration that the file and the flags are both
//!   read into; every option is one field there with its file key, flag and help.
//! - `translators.rs`: the six `[translators.*]` sections, one shape with generated flags.
//! - `values.rs`: value types that read the same from a flag and from the file.
//! - `convert.rs`: [`Options`] → [`Config`] and back.
//! - `cli.rs`: [`Args`], whose `--help` shows each option's key and default from the above.
//! - `validate.rs`: checks of the merged configuration, each error naming the option.
//! - tests: `tests.rs` (behaviour: merging, spellings, errors), `every_option.rs` (every option
//!   has one flag, one key and its default in `--help` and README).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::coap::block::BlockOpt;
use crate::coap::TransmissionParams;
use crate::core::settings::ShardConfig;
pub use crate::core::settings::{AutoObserve, UpdatePublishCondition, WriteEncoding};
use crate::core::topics::Topics;
pub use crate::core::topics::{Translator, Translators};
use crate::lwm2m::model::ObjectRegistry;

mod cli;
mod convert;
mod options;
mod translators;
mod validate;
mod values;

#[cfg(test)]
mod every_option;
#[cfg(test)]
mod tests;

pub use cli::Args;
pub use options::{
    BlockwiseOptions, CoapOptions, DtlsOptions, HttpOptions, LimitsOptions, LogOptions,
    MqttOptions, Options, SecurityOptions, StateOptions,
};
pub use translators::{TranslatorOptions, TranslatorsOptions};
pub use validate::parse_mqtt_url;
pub use values::{HttpListen, MqttVersion, Seconds, Secret};

#[derive(Clone, PartialEq)]
pub struct MqttConfig {
    /// `None`: start the embedded broker on `broker_listen` and connect to it.
    pub url: Option<String>,
    pub version: MqttVersion,
    pub broker_listen: SocketAddr,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// QoS 1/2 publishes in flight towards the broker.
    pub inflight: u16,
    /// Capacity of the channel between workers and the MQTT connection driver.
    pub channel_capacity: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_packet_size: usize,
}

/// Like a derived `Debug`, except that a password shows as `<hidden>`.
impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url)
            .field("version", &self.version)
            .field("broker_listen", &self.broker_listen)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("keep_alive", &self.keep_alive)
            .field("inflight", &self.inflight)
            .field("channel_capacity", &self.channel_capacity)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("max_packet_size", &self.max_packet_size)
            .finish()
    }
}

/// `[dtls]`: the DTLS listeners and their limits (all workers together).
#[derive(Debug, Clone, PartialEq)]
pub struct DtlsConfig {
    pub listen: Vec<SocketAddr>,
    /// The gateway's certificate chain (PEM); without it only raw public keys are presented.
    pub certificate: Option<PathBuf>,
    /// The gateway's P-256 private key (PEM): enables the ECDHE_ECDSA suites.
    pub private_key: Option<PathBuf>,
    /// CA certificates (PEM) device certificates must lead to; none: no X.509 devices.
    pub trust_anchors: Vec<PathBuf>,
    pub max_handshakes: usize,
    pub max_sessions: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// Agree to RFC 9146 Connection IDs with devices that offer them.
    pub connection_id: bool,
}

/// `[state]`: the durable state (issue 12).
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// `None`: nothing survives a restart.
    pub dir: Option<PathBuf>,
    /// Zero: a snapshot at shutdown only.
    pub snapshot_interval: Duration,
    /// Zero: no journal between snapshots.
    pub journal_interval: Duration,
}

/// `[limits]`: what one source may cost the gateway, and how many devices it holds (issue 12:
/// hostile traffic changes nothing for well-behaved devices).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Registrations held at most (all workers); a Register of a new endpoint beyond that is
    /// answered 5.03 with Max-Age.
    pub max_registrations: usize,
    /// Registers per second per source (an IPv4 address or an IPv6 /64); 0 = no limit. Beyond
    /// it: 4.29 with Max-Age.
    pub register_rate: u32,
    pub register_burst: u32,
    /// Errors per second per source (malformed datagrams, requests for nothing, refused
    /// requests, responses to nothing); 0 = no limit. Beyond it the source is blocked.
    pub error_rate: u32,
    pub error_burst: u32,
    /// How long a blocked source's datagrams are dropped unread.
    pub block_time: Duration,
    /// Sources each limiter tracks at once (a bucket is about 50 bytes).
    pub max_sources: usize,
    /// Larger datagrams are dropped unread (each queued one holds its size in a worker queue).
    pub max_datagram: usize,
}

/// `[http]`: the operations surface (issue 13): HTTP API, metrics, live events, web page.
#[derive(Clone, PartialEq)]
pub struct HttpConfig {
    /// `None`: no HTTP listener.
    pub listen: Option<SocketAddr>,
    /// Bearer token every request but `/health` must carry; required off loopback.
    pub token: Option<String>,
    /// `Access-Control-Allow-Origin` of the API's answers; `None`: no CORS.
    pub cors_origin: Option<String>,
    /// Threads answering requests (event streams have threads of their own).
    pub threads: usize,
    /// Longest wait for a device's answer to a command (a request may ask for less).
    pub command_timeout: Duration,
    /// Event streams open at once.
    pub max_event_streams: usize,
}

/// Like a derived `Debug`, except that the token shows as `<hidden>`.
impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("cors_origin", &self.cors_origin)
            .field("threads", &self.threads)
            .field("command_timeout", &self.command_timeout)
            .field("max_event_streams", &self.max_event_streams)
            .finish()
    }
}

/// `[security]`: where device credentials come from and what plain CoAP may do.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    pub credentials: Option<PathBuf>,
    pub plain_requires_credential: bool,
    /// Zero: the file is read again only on SIGHUP.
    pub reload_interval: Duration,
}

/// The configuration the gateway runs on. Read from a file and flags by [`Config::load`]; tests
/// and embedders build it as `Config { .., ..Config::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub workers: usize,
    /// Registrations the gateway makes room for at start (0: grow on demand).
    pub expected_devices: usize,
    pub worker_queue: usize,
    pub recv_buffer: usize,
    pub lifetime_min: u32,
    pub lifetime_max: u32,
    pub xml_dir: PathBuf,
    pub mountpoint: String,
    pub translators: Translators,
    pub update_msg_publish_condition: UpdatePublishCondition,
    /// How writes are encoded when a command names no `data.format`.
    pub write_encoding: WriteEncoding,
    pub coap: TransmissionParams,
    /// How long the gateway waits for a separate response after an empty ACK.
    pub separate_response_timeout: Duration,
    pub dedup_max_entries: usize,
    /// Downlink commands waiting per device while one is in flight (NSTART = 1).
    pub downlink_queue_max: usize,
    /// How long a waiting command stays valid; `None` = forever.
    pub downlink_queue_max_age: Option<Duration>,
    /// A queue-mode device is reachable this long after its last uplink.
    pub qmode_time_window: Duration,
    pub auto_observe: AutoObserve,
    /// Block size for block-wise transfers (RFC 7959): 16..=1024, a power of two.
    pub block_size: usize,
    /// Largest block-wise body reassembled for one device.
    pub block_max_body: usize,
    /// Bytes of block-wise reassembly buffers per worker, all devices together.
    pub block_total_max: usize,
    pub mqtt: MqttConfig,
    pub dtls: DtlsConfig,
    pub security: SecurityConfig,
    pub state: StateConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub log_level: String,
    pub stats_interval: Duration,
}

/// The defaults, written only here: `--help` and README show them as this function returns them.
impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["0.0.0.0:5683".parse().expect("literal")],
            expected_devices: 0,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            worker_queue: 65536,
            recv_buffer: 8 << 20,
            lifetime_min: 1,
            lifetime_max: 315_360_000,
            xml_dir: PathBuf::from("xml"),
            mountpoint: "lwm2m/%e/".to_string(),
            // EMQX's topics, defined with the topic templates in the core.
            translators: Translators::default(),
            update_msg_publish_condition: UpdatePublishCondition::Always,
            write_encoding: WriteEncoding::Auto,
            coap: TransmissionParams::default(),
            separate_response_timeout: Duration::from_secs(247),
            dedup_max_entries: 1 << 20,
            downlink_queue_max: 100,
            downlink_queue_max_age: Some(Duration::from_secs(7200)),
            qmode_time_window: Duration::from_secs(22),
            auto_observe: AutoObserve::Off,
            block_size: 1024,
            block_max_body: 4 << 20,
            block_total_max: 256 << 20,
            mqtt: MqttConfig {
                url: None,
                version: MqttVersion::Auto,
                broker_listen: "127.0.0.1:1883".parse().expect("literal"),
                client_id: "lwm2m-gateway".to_string(),
                username: None,
                password: None,
                keep_alive: Duration::from_secs(30),
                inflight: 1000,
                channel_capacity: 65536,
                reconnect_min: Duration::from_millis(100),
                reconnect_max: Duration::from_secs(30),
                max_packet_size: 1 << 20,
            },
            dtls: DtlsConfig {
                listen: vec!["0.0.0.0:5684".parse().expect("literal")],
                certificate: None,
                private_key: None,
                trust_anchors: Vec::new(),
                max_handshakes: 10_000,
                max_sessions: 2_000_000,
                handshake_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(24 * 3600),
                connection_id: true,
            },
            security: SecurityConfig {
                credentials: None,
                plain_requires_credential: false,
                reload_interval: Duration::from_secs(5),
            },
            state: StateConfig {
                dir: Some(PathBuf::from("data")),
                snapshot_interval: Duration::from_secs(60),
                journal_interval: Duration::from_secs(1),
            },
            limits: LimitsConfig {
                max_registrations: 2_000_000,
                register_rate: 1000,
                register_burst: 10_000,
                error_rate: 100,
                error_burst: 500,
                block_time: Duration::from_secs(30),
                max_sources: 100_000,
                max_datagram: 8192,
            },
            http: HttpConfig {
                listen: Some("127.0.0.1:8080".parse().expect("literal")),
                token: None,
                cors_origin: None,
                threads: 4,
                command_timeout: Duration::from_secs(30),
                max_event_streams: 16,
            },
            log_level: "info".to_string(),
            stats_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// A syntax error, a bad value or an unknown key: the message names the key and its line.
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    /// `option` is the file key; the message adds its flag.
    #[error("invalid {option}{}: {reason}", flag_hint(option))]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

fn flag_hint(key: &str) -> String {
    cli::flag_of(key).map_or_else(String::new, |f| format!(" ({f})"))
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

impl Config {
    /// Defaults, then the file named by `args.config`, then the flags; validated.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                Some((p.clone(), text))
            }
            None => None,
        };
        Config::from_parts(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), args)
    }

    /// Merges a TOML text (`file` = its name and contents) and the flags over the defaults.
    pub fn from_parts(file: Option<(&Path, &str)>, args: &Args) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some((path, text)) = file {
            let from_file: Options = toml::from_str(text)
                .map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))?;
            from_file.apply(&mut c);
        }
        args.options.clone().apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    /// The settings of the sans-IO core, with the topics compiled and the object model.
    pub fn shard_config(&self, model: Arc<ObjectRegistry>) -> Result<ShardConfig, String> {
        let c = self;
        Ok(ShardConfig {
            shards: c.workers as u16,
            lifetime_range: (c.lifetime_min, c.lifetime_max),
            transmission: c.coap,
            separate_response_timeout: c.separate_response_timeout,
            dedup_max_entries: c.dedup_max_entries,
            expected_per_shard: c.expected_devices.div_ceil(c.workers.max(1)),
            downlink_queue_max: c.downlink_queue_max,
            downlink_queue_max_age: c.downlink_queue_max_age,
            qmode_time_window: c.qmode_time_window,
            update_condition: c.update_msg_publish_condition,
            write_encoding: c.write_encoding,
            auto_observe: c.auto_observe.clone(),
            block_szx: BlockOpt::from_size(c.block_size),
            block_max_body: c.block_max_body,
            block_total_max: c.block_total_max,
            max_registrations_per_shard: c.limits.max_registrations.div_ceil(c.workers.max(1)),
            topics: Topics::new(&c.mountpoint, &c.translators)?,
            model,
            // The runtime puts the credential store's policy here when it has one.
            authorizer: Arc::new(crate::core::authorize::Unrestricted),
        })
    }
}
