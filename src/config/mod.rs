//! Configuration: defaults, then a TOML file (`--config`), then command-line flags, merged into one
//! validated [`Config`]. Every option has a flag; `lwm2m-gateway --help` lists them and README.md
//! documents the file keys. Validation happens once at start with errors that name the option.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::coap::block::BlockOpt;
use crate::coap::TransmissionParams;
use crate::core::settings::ShardConfig;
pub use crate::core::settings::{AutoObserve, UpdatePublishCondition};
use crate::core::topics::Topics;
pub use crate::core::topics::{Translator, Translators};
use crate::lwm2m::model::ObjectRegistry;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileAutoObserve {
    Flag(bool),
    Text(String),
    List(Vec<String>),
}

/// MQTT protocol version of the gateway's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4)
    #[default]
    #[serde(rename = "3.1.1")]
    #[value(name = "3.1.1")]
    V311,
    /// MQTT 5: commands' Message-Expiry-Interval is honoured
    #[serde(rename = "5")]
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Clone, PartialEq)]
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
    pub log_level: String,
    pub stats_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let t = |topic: &str| Translator {
            topic: topic.to_string(),
            qos: 1,
        };
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
            translators: Translators {
                command: t("dn/#"),
                response: t("up/resp"),
                notify: t("up/notify"),
                register: t("up/resp"),
                update: t("up/resp"),
                deregister: t("up/resp"),
            },
            update_msg_publish_condition: UpdatePublishCondition::Always,
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
                version: MqttVersion::V311,
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
            log_level: "info".to_string(),
            stats_interval: Duration::from_secs(10),
        }
    }
}

/// Command-line flags. Every flag overrides the same key of the config file.
#[derive(Debug, Default, Parser)]
#[command(
    name = "lwm2m-gateway",
    version,
    about = "LwM2M (CoAP/UDP) to MQTT gateway, EMQX-compatible MQTT API"
)]
pub struct Args {
    /// TOML configuration file; flags override its keys.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on for LwM2M devices (repeatable) [default: 0.0.0.0:5683].
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Worker threads handling devices [default: number of CPUs].
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Registrations to make room for at start, so that a registration storm does not stall on
    /// growing tables; 0 grows on demand [default: 0].
    #[arg(long)]
    pub expected_devices: Option<usize>,
    /// Datagrams/commands queued per worker before the event loop drops and counts [default: 65536].
    #[arg(long)]
    pub worker_queue: Option<usize>,
    /// UDP socket receive buffer in bytes (the kernel may cap it at net.core.rmem_max) [default: 8388608].
    #[arg(long)]
    pub recv_buffer: Option<usize>,
    /// Smallest lifetime (s) a Register/Update may ask for [default: 1].
    #[arg(long)]
    pub lifetime_min: Option<u32>,
    /// Largest lifetime (s) a Register/Update may ask for [default: 315360000].
    #[arg(long)]
    pub lifetime_max: Option<u32>,
    /// Directory of OMA DDF object definitions (*.xml) [default: xml].
    #[arg(long)]
    pub xml_dir: Option<PathBuf>,
    /// Topic prefix; %e/${endpoint_name} = endpoint, %a/${peerhost} = device IP [default: lwm2m/%e/].
    #[arg(long)]
    pub mountpoint: Option<String>,
    /// Command topic the gateway subscribes to, under the mountpoint [default: dn/#].
    #[arg(long)]
    pub topic_command: Option<String>,
    /// Response topic [default: up/resp].
    #[arg(long)]
    pub topic_response: Option<String>,
    /// Notification topic [default: up/notify].
    #[arg(long)]
    pub topic_notify: Option<String>,
    /// Register event topic [default: up/resp].
    #[arg(long)]
    pub topic_register: Option<String>,
    /// Update event topic [default: up/resp].
    #[arg(long)]
    pub topic_update: Option<String>,
    /// Deregister event topic [default: up/resp].
    #[arg(long)]
    pub topic_deregister: Option<String>,
    /// QoS of the command subscription [default: 1].
    #[arg(long)]
    pub qos_command: Option<u8>,
    /// QoS of responses [default: 1].
    #[arg(long)]
    pub qos_response: Option<u8>,
    /// QoS of notifications [default: 1].
    #[arg(long)]
    pub qos_notify: Option<u8>,
    /// QoS of register events [default: 1].
    #[arg(long)]
    pub qos_register: Option<u8>,
    /// QoS of update events [default: 1].
    #[arg(long)]
    pub qos_update: Option<u8>,
    /// QoS of deregister events [default: 1].
    #[arg(long)]
    pub qos_deregister: Option<u8>,
    /// When to publish Update events [default: always].
    #[arg(long, value_enum)]
    pub update_msg_publish_condition: Option<UpdatePublishCondition>,
    /// CoAP ACK_TIMEOUT in seconds [default: 2].
    #[arg(long)]
    pub coap_ack_timeout: Option<f64>,
    /// CoAP ACK_RANDOM_FACTOR [default: 1.5].
    #[arg(long)]
    pub coap_ack_random_factor: Option<f64>,
    /// CoAP MAX_RETRANSMIT [default: 4].
    #[arg(long)]
    pub coap_max_retransmit: Option<u32>,
    /// Seconds to wait for a separate response after an empty ACK [default: 247].
    #[arg(long)]
    pub coap_separate_response_timeout: Option<f64>,
    /// Entries in each worker's message-id deduplication cache [default: 1048576].
    #[arg(long)]
    pub coap_dedup_max_entries: Option<usize>,
    /// Commands waiting per device behind the one in flight [default: 100].
    #[arg(long)]
    pub downlink_queue_max: Option<usize>,
    /// Seconds a waiting command stays valid before it is answered with coap_timeout; 0 = forever [default: 7200].
    #[arg(long)]
    pub downlink_queue_max_age: Option<u64>,
    /// Seconds a queue-mode device stays reachable after its last message [default: 22].
    #[arg(long)]
    pub qmode_time_window: Option<f64>,
    /// Observe new registrations: false, true, or a comma-separated path list like /3/0,/3303/0 [default: false].
    #[arg(long)]
    pub auto_observe: Option<String>,
    /// Block-wise transfer block size, a power of two in 16..=1024 [default: 1024].
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Largest block-wise body reassembled per device, bytes [default: 4194304].
    #[arg(long)]
    pub block_max_body: Option<usize>,
    /// Block-wise reassembly memory per worker, bytes [default: 268435456].
    #[arg(long)]
    pub block_total_max: Option<usize>,
    /// External broker, e.g. mqtt://host:1883; without it an embedded broker is started.
    #[arg(long)]
    pub mqtt_url: Option<String>,
    /// MQTT protocol version: 3.1.1 or 5 (5 honours commands' message expiry) [default: 3.1.1].
    #[arg(long, value_enum)]
    pub mqtt_version: Option<MqttVersion>,
    /// Listen address of the embedded broker [default: 127.0.0.1:1883].
    #[arg(long)]
    pub broker_listen: Option<SocketAddr>,
    /// MQTT client id of the gateway [default: lwm2m-gateway].
    #[arg(long)]
    pub mqtt_client_id: Option<String>,
    #[arg(long)]
    pub mqtt_username: Option<String>,
    #[arg(long, env = "LWM2M_GATEWAY_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// MQTT keep-alive in seconds [default: 30].
    #[arg(long)]
    pub mqtt_keep_alive: Option<u64>,
    /// QoS>0 publishes in flight to the broker [default: 1000].
    #[arg(long)]
    pub mqtt_inflight: Option<u16>,
    /// Publishes buffered towards the MQTT connection before dropping and counting [default: 65536].
    #[arg(long)]
    pub mqtt_channel_capacity: Option<usize>,
    /// Log level: error, warn, info, debug, trace [default: info; RUST_LOG overrides].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Seconds between one-line stats summaries at info level; 0 disables [default: 10].
    #[arg(long)]
    pub stats_interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<SocketAddr>>,
    workers: Option<usize>,
    expected_devices: Option<usize>,
    worker_queue: Option<usize>,
    recv_buffer: Option<usize>,
    lifetime_min: Option<u32>,
    lifetime_max: Option<u32>,
    xml_dir: Option<PathBuf>,
    mountpoint: Option<String>,
    update_msg_publish_condition: Option<UpdatePublishCondition>,
    downlink_queue_max: Option<usize>,
    downlink_queue_max_age: Option<u64>,
    qmode_time_window: Option<f64>,
    auto_observe: Option<FileAutoObserve>,
    blockwise: Option<FileBlockwise>,
    translators: Option<FileTranslators>,
    coap: Option<FileCoap>,
    mqtt: Option<FileMqtt>,
    log: Option<FileLog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTranslators {
    command: Option<FileTranslator>,
    response: Option<FileTranslator>,
    notify: Option<FileTranslator>,
    register: Option<FileTranslator>,
    update: Option<FileTranslator>,
    deregister: Option<FileTranslator>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTranslator {
    topic: Option<String>,
    qos: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBlockwise {
    block_size: Option<usize>,
    max_body: Option<usize>,
    total_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCoap {
    ack_timeout: Option<f64>,
    ack_random_factor: Option<f64>,
    max_retransmit: Option<u32>,
    separate_response_timeout: Option<f64>,
    dedup_max_entries: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMqtt {
    url: Option<String>,
    version: Option<MqttVersion>,
    broker_listen: Option<SocketAddr>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    keep_alive: Option<u64>,
    inflight: Option<u16>,
    channel_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<String>,
    stats_interval: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid {option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

fn secs_f64(option: &'static str, v: f64) -> Result<Duration, ConfigError> {
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(invalid(
            option,
            format!("{v} is not a positive number of seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
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

    /// Merges a TOML text (`file` = its name and contents) and flags over the defaults.
    pub fn from_parts(
        file: Option<(&std::path::Path, &str)>,
        args: &Args,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some((path, text)) = file {
            let f: FileConfig = toml::from_str(text)
                .map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))?;
            c.apply_file(f)?;
        }
        c.apply_args(args)?;
        c.validate()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        set(&mut self.listen, f.listen);
        set(&mut self.workers, f.workers);
        set(&mut self.expected_devices, f.expected_devices);
        set(&mut self.worker_queue, f.worker_queue);
        set(&mut self.recv_buffer, f.recv_buffer);
        set(&mut self.lifetime_min, f.lifetime_min);
        set(&mut self.lifetime_max, f.lifetime_max);
        set(&mut self.xml_dir, f.xml_dir);
        set(&mut self.mountpoint, f.mountpoint);
        set(
            &mut self.update_msg_publish_condition,
            f.update_msg_publish_condition,
        );
        set(&mut self.downlink_queue_max, f.downlink_queue_max);
        if let Some(a) = f.downlink_queue_max_age {
            self.downlink_queue_max_age = (a > 0).then(|| Duration::from_secs(a));
        }
        if let Some(w) = f.qmode_time_window {
            self.qmode_time_window = secs_f64("qmode_time_window", w)?;
        }
        if let Some(a) = f.auto_observe {
            self.auto_observe = match a {
                FileAutoObserve::Flag(true) => AutoObserve::All,
                FileAutoObserve::Flag(false) => AutoObserve::Off,
                FileAutoObserve::Text(t) => {
                    AutoObserve::parse(&t).map_err(|e| invalid("auto_observe", e))?
                }
                FileAutoObserve::List(l) => {
                    AutoObserve::from_list(l).map_err(|e| invalid("auto_observe", e))?
                }
            };
        }
        if let Some(b) = f.blockwise {
            set(&mut self.block_size, b.block_size);
            set(&mut self.block_max_body, b.max_body);
            set(&mut self.block_total_max, b.total_max);
        }
        if let Some(t) = f.translators {
            let tr = &mut self.translators;
            for (slot, ft) in [
                (&mut tr.command, t.command),
                (&mut tr.response, t.response),
                (&mut tr.notify, t.notify),
                (&mut tr.register, t.register),
                (&mut tr.update, t.update),
                (&mut tr.deregister, t.deregister),
            ] {
                if let Some(ft) = ft {
                    set(&mut slot.topic, ft.topic);
                    set(&mut slot.qos, ft.qos);
                }
            }
        }
        if let Some(co) = f.coap {
            if let Some(v) = co.ack_timeout {
                self.coap.ack_timeout = secs_f64("coap.ack_timeout", v)?;
            }
            set(&mut self.coap.ack_random_factor, co.ack_random_factor);
            set(&mut self.coap.max_retransmit, co.max_retransmit);
            if let Some(v) = co.separate_response_timeout {
                self.separate_response_timeout = secs_f64("coap.separate_response_timeout", v)?;
            }
            set(&mut self.dedup_max_entries, co.dedup_max_entries);
        }
        if let Some(m) = f.mqtt {
            if m.url.is_some() {
                self.mqtt.url = m.url;
            }
            set(&mut self.mqtt.version, m.version);
            set(&mut self.mqtt.broker_listen, m.broker_listen);
            set(&mut self.mqtt.client_id, m.client_id);
            if m.username.is_some() {
                self.mqtt.username = m.username;
            }
            if m.password.is_some() {
                self.mqtt.password = m.password;
            }
            set(
                &mut self.mqtt.keep_alive,
                m.keep_alive.map(Duration::from_secs),
            );
            set(&mut self.mqtt.inflight, m.inflight);
            set(&mut self.mqtt.channel_capacity, m.channel_capacity);
        }
        if let Some(l) = f.log {
            set(&mut self.log_level, l.level);
            set(
                &mut self.stats_interval,
                l.stats_interval.map(Duration::from_secs),
            );
        }
        Ok(())
    }

    fn apply_args(&mut self, a: &Args) -> Result<(), ConfigError> {
        if !a.listen.is_empty() {
            self.listen = a.listen.clone();
        }
        set(&mut self.workers, a.workers);
        set(&mut self.expected_devices, a.expected_devices);
        set(&mut self.worker_queue, a.worker_queue);
        set(&mut self.recv_buffer, a.recv_buffer);
        set(&mut self.lifetime_min, a.lifetime_min);
        set(&mut self.lifetime_max, a.lifetime_max);
        set(&mut self.xml_dir, a.xml_dir.clone());
        set(&mut self.mountpoint, a.mountpoint.clone());
        let tr = &mut self.translators;
        set(&mut tr.command.topic, a.topic_command.clone());
        set(&mut tr.response.topic, a.topic_response.clone());
        set(&mut tr.notify.topic, a.topic_notify.clone());
        set(&mut tr.register.topic, a.topic_register.clone());
        set(&mut tr.update.topic, a.topic_update.clone());
        set(&mut tr.deregister.topic, a.topic_deregister.clone());
        set(&mut tr.command.qos, a.qos_command);
        set(&mut tr.response.qos, a.qos_response);
        set(&mut tr.notify.qos, a.qos_notify);
        set(&mut tr.register.qos, a.qos_register);
        set(&mut tr.update.qos, a.qos_update);
        set(&mut tr.deregister.qos, a.qos_deregister);
        set(
            &mut self.update_msg_publish_condition,
            a.update_msg_publish_condition,
        );
        if let Some(v) = a.coap_ack_timeout {
            self.coap.ack_timeout = secs_f64("--coap-ack-timeout", v)?;
        }
        set(&mut self.coap.ack_random_factor, a.coap_ack_random_factor);
        set(&mut self.coap.max_retransmit, a.coap_max_retransmit);
        if let Some(v) = a.coap_separate_response_timeout {
            self.separate_response_timeout = secs_f64("--coap-separate-response-timeout", v)?;
        }
        set(&mut self.dedup_max_entries, a.coap_dedup_max_entries);
        set(&mut self.downlink_queue_max, a.downlink_queue_max);
        if let Some(age) = a.downlink_queue_max_age {
            self.downlink_queue_max_age = (age > 0).then(|| Duration::from_secs(age));
        }
        if let Some(w) = a.qmode_time_window {
            self.qmode_time_window = secs_f64("--qmode-time-window", w)?;
        }
        if let Some(ao) = &a.auto_observe {
            self.auto_observe = AutoObserve::parse(ao).map_err(|e| invalid("--auto-observe", e))?;
        }
        set(&mut self.block_size, a.block_size);
        set(&mut self.block_max_body, a.block_max_body);
        set(&mut self.block_total_max, a.block_total_max);
        if a.mqtt_url.is_some() {
            self.mqtt.url = a.mqtt_url.clone();
        }
        set(&mut self.mqtt.version, a.mqtt_version);
        set(&mut self.mqtt.broker_listen, a.broker_listen);
        set(&mut self.mqtt.client_id, a.mqtt_client_id.clone());
        if a.mqtt_username.is_some() {
            self.mqtt.username = a.mqtt_username.clone();
        }
        if a.mqtt_password.is_some() {
            self.mqtt.password = a.mqtt_password.clone();
        }
        set(
            &mut self.mqtt.keep_alive,
            a.mqtt_keep_alive.map(Duration::from_secs),
        );
        set(&mut self.mqtt.inflight, a.mqtt_inflight);
        set(&mut self.mqtt.channel_capacity, a.mqtt_channel_capacity);
        set(&mut self.log_level, a.log_level.clone());
        set(
            &mut self.stats_interval,
            a.stats_interval.map(Duration::from_secs),
        );
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        if !(1..=256).contains(&self.workers) {
            return Err(invalid(
                "workers",
                format!("{} is not in 1..=256", self.workers),
            ));
        }
        if self.worker_queue == 0 {
            return Err(invalid("worker_queue", "must be at least 1"));
        }
        // Reserved up front, about 100 bytes each: a typo must not take the machine's memory.
        if self.expected_devices > 100_000_000 {
            return Err(invalid(
                "expected_devices",
                format!("{} is above 100000000", self.expected_devices),
            ));
        }
        if self.lifetime_min > self.lifetime_max {
            return Err(invalid(
                "lifetime_min",
                format!(
                    "{} is above lifetime_max {}",
                    self.lifetime_min, self.lifetime_max
                ),
            ));
        }
        let tr = &self.translators;
        for (name, t) in [
            ("translators.command", &tr.command),
            ("translators.response", &tr.response),
            ("translators.notify", &tr.notify),
            ("translators.register", &tr.register),
            ("translators.update", &tr.update),
            ("translators.deregister", &tr.deregister),
        ] {
            if t.qos > 2 {
                return Err(invalid(name, format!("qos {} is not 0, 1 or 2", t.qos)));
            }
            if t.topic.is_empty() && self.mountpoint.is_empty() {
                return Err(invalid(name, "empty topic"));
            }
        }
        crate::core::topics::Topics::new(&self.mountpoint, &self.translators)
            .map_err(|e| invalid("translators.command", e))?;
        let f = self.coap.ack_random_factor;
        if !(f.is_finite() && (1.0..=10.0).contains(&f)) {
            return Err(invalid(
                "coap.ack_random_factor",
                format!("{f} is not in 1.0..=10.0"),
            ));
        }
        if self.coap.max_retransmit > 20 {
            return Err(invalid("coap.max_retransmit", "above 20"));
        }
        if !(16..=1024).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            return Err(invalid(
                "blockwise.block_size",
                format!("{} is not a power of two in 16..=1024", self.block_size),
            ));
        }
        if self.block_max_body < self.block_size || self.block_total_max < self.block_max_body {
            return Err(invalid(
                "blockwise.max_body",
                "need block_size <= max_body <= total_max",
            ));
        }
        if self.downlink_queue_max == 0 {
            return Err(invalid("downlink_queue_max", "must be at least 1"));
        }
        if let Some(url) = &self.mqtt.url {
            parse_mqtt_url(url).map_err(|e| invalid("mqtt.url", e))?;
        }
        if self.mqtt.keep_alive < Duration::from_secs(5) {
            return Err(invalid("mqtt.keep_alive", "must be at least 5 s"));
        }
        if self.mqtt.inflight == 0 || self.mqtt.channel_capacity == 0 {
            return Err(invalid(
                "mqtt.inflight",
                "inflight and channel_capacity must be at least 1",
            ));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace" | "off"
        ) {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not error|warn|info|debug|trace|off",
                    self.log_level
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
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
            auto_observe: c.auto_observe.clone(),
            block_szx: BlockOpt::from_size(c.block_size),
            block_max_body: c.block_max_body,
            block_total_max: c.block_total_max,
            topics: Topics::new(&c.mountpoint, &c.translators)?,
            model,
        })
    }
}

/// `mqtt://host[:port]` or `tcp://host[:port]` or `host[:port]` -> (host, port); 1883 by default.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(format!("{url:?}: only mqtt:// (plain TCP) is supported"));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    // [v6]:port, host:port or host
    if let Some(r) = rest.strip_prefix('[') {
        let (host, tail) = r
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            None if tail.is_empty() => 1883,
            None => return Err(format!("{url:?}: junk after ]")),
        };
        return Ok((host.to_string(), port));
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?;
            Ok((h.to_string(), port))
        }
        _ => Ok((rest.to_string(), 1883)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        let mut all = vec!["lwm2m-gateway"];
        all.extend_from_slice(v);
        Args::parse_from(all)
    }

    #[test]
    fn defaults_are_valid_and_emqx_compatible() {
        let c = Config::from_parts(None, &args(&[])).unwrap();
        assert_eq!(c.mountpoint, "lwm2m/%e/");
        assert_eq!(c.translators.command.topic, "dn/#");
        assert_eq!(c.translators.notify.topic, "up/notify");
        assert_eq!(c.translators.register.qos, 1);
        assert_eq!(c.mqtt.url, None);
    }

    #[test]
    fn flags_override_file() {
        let toml = r#"
            workers = 3
            lifetime_max = 1000
            mountpoint = "gw/%e/"
            [translators.notify]
            topic = "up/n"
            qos = 0
            [coap]
            ack_timeout = 0.5
            [mqtt]
            url = "mqtt://broker:1884"
            [log]
            level = "debug"
        "#;
        let c = Config::from_parts(
            Some((std::path::Path::new("t.toml"), toml)),
            &args(&["--workers", "5", "--qos-notify", "2"]),
        )
        .unwrap();
        assert_eq!(c.workers, 5);
        assert_eq!(c.lifetime_max, 1000);
        assert_eq!(c.mountpoint, "gw/%e/");
        assert_eq!(
            c.translators.notify,
            Translator {
                topic: "up/n".into(),
                qos: 2
            }
        );
        assert_eq!(c.coap.ack_timeout, Duration::from_millis(500));
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://broker:1884"));
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn rejects_bad_values_with_the_option_name() {
        let e = Config::from_parts(None, &args(&["--workers", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers"), "{e}");
        let e = Config::from_parts(
            None,
            &args(&["--lifetime-min", "10", "--lifetime-max", "5"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lifetime_min"), "{e}");
        let e = Config::from_parts(None, &args(&["--qos-response", "3"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("translators.response"), "{e}");
        let e = Config::from_parts(None, &args(&["--mqtt-url", "ws://x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt.url"), "{e}");
        let e = Config::from_parts(
            None,
            &args(&["--topic-command", "dn/#", "--mountpoint", "lwm2m/"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("translators.command"), "{e}");
        let e = Config::from_parts(
            Some((std::path::Path::new("x.toml"), "wokers = 1")),
            &args(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml") && e.contains("wokers"), "{e}");
    }

    #[test]
    fn readme_example_config_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml example") + 8;
        let end = start + readme[start..].find("```").unwrap();
        let c = Config::from_parts(
            Some((std::path::Path::new("README.md"), &readme[start..end])),
            &args(&[]),
        )
        .unwrap();
        assert_eq!(c.workers, 4);
        assert_eq!(c.expected_devices, 100_000);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
    }

    #[test]
    fn auto_observe_spellings() {
        let file = |t: &str| {
            Config::from_parts(Some((std::path::Path::new("a.toml"), t)), &args(&[]))
                .map(|c| c.auto_observe)
        };
        assert_eq!(file("auto_observe = true").unwrap(), AutoObserve::All);
        assert_eq!(file("auto_observe = \"off\"").unwrap(), AutoObserve::Off);
        assert_eq!(
            file("auto_observe = [\"/3/0\", \"/3303/0/5700\"]").unwrap(),
            AutoObserve::Paths(vec!["/3/0".into(), "/3303/0/5700".into()])
        );
        assert_eq!(
            file("auto_observe = \"/3/0, /4\"").unwrap(),
            AutoObserve::Paths(vec!["/3/0".into(), "/4".into()])
        );
        assert!(file("auto_observe = [\"/3/x\"]")
            .unwrap_err()
            .to_string()
            .contains("auto_observe"));
        let c = Config::from_parts(
            None,
            &args(&[
                "--auto-observe",
                "on",
                "--qmode-time-window",
                "5",
                "--downlink-queue-max-age",
                "0",
            ]),
        )
        .unwrap();
        assert_eq!(
            (
                c.auto_observe,
                c.qmode_time_window,
                c.downlink_queue_max_age
            ),
            (AutoObserve::All, Duration::from_secs(5), None)
        );
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(parse_mqtt_url("mqtt://h:1884").unwrap(), ("h".into(), 1884));
        assert_eq!(parse_mqtt_url("h").unwrap(), ("h".into(), 1883));
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1900").unwrap(),
            ("::1".into(), 1900)
        );
        assert!(parse_mqtt_url("mqtts://h").is_err());
        assert!(parse_mqtt_url("mqtt://h:x").is_err());
    }
}
