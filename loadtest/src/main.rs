//! `lwm2m-loadtest`: simulates a fleet of LwM2M devices against a running gateway and measures it
//! end to end through the MQTT broker (device -> gateway -> broker -> subscriber, and command ->
//! device -> response).
//!
//! Scenarios: `register` (registration storm), `notify` (observations and notifications),
//! `command` (MQTT read commands), `mixed` (a fleet living for `--duration`: registrations,
//! updates, churn, notifications, commands) and `baseline` (notification-sized publishes straight
//! to the broker, no gateway involved). See `--help` and the README section "Load testing".
//!
//! Threads: one device I/O thread by default (`--io-threads`), one MQTT subscriber, one MQTT
//! publisher (when the scenario publishes), one progress printer, and the scenario driver.

mod dtls;
mod fleet;
mod hostile;
mod mqtt;
mod net;
mod plot;
mod scenarios;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Storm of N registrations: 2.01 latency and MQTT register-event latency.
    Register,
    /// N devices register and are observed, then notify at an aggregate --rate for --duration.
    Notify,
    /// MQTT `read` commands at --rate across N devices: publish-to-response round trip.
    Command,
    /// A fleet living for --duration: registrations, updates, churn, notifications, commands.
    Mixed,
    /// Notification-sized JSON published straight to the broker (no gateway): its ceiling.
    Baseline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// IP_PKTINFO on IPv4 loopback when the kernel accepts it, else one socket per device.
    Auto,
    /// One socket for many devices, each sending from its own 127.x.y.z address.
    Pktinfo,
    /// One socket per device (bounded by the open-files limit).
    Sockets,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObserveMode {
    /// The harness publishes an `observe` command for each device once its register event arrives.
    Mqtt,
    /// The gateway observes by itself (`--auto-observe`); the harness waits for the answers.
    Auto,
    /// Nobody observes (mixed: no notifications).
    None,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "lwm2m-loadtest",
    about = "Fleet simulator and MQTT driver for load-testing lwm2m-gateway"
)]
pub struct Args {
    /// Scenario to run (not needed with --write-credentials).
    #[arg(value_enum, required_unless_present = "write_credentials")]
    pub scenario: Option<Scenario>,
    /// Gateway CoAP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub gateway: SocketAddr,
    /// Every device does a DTLS 1.2 PSK handshake with --dtls-gateway first, then sends and
    /// receives all its CoAP inside the session. Identity: the endpoint name; key: derived from
    /// it (see --write-credentials). The default --prefix becomes `dtls-`.
    #[arg(long)]
    pub dtls: bool,
    /// Gateway DTLS (coaps) address, used with --dtls instead of --gateway.
    #[arg(long, default_value = "127.0.0.1:5684")]
    pub dtls_gateway: SocketAddr,
    /// Cipher suite the DTLS devices offer.
    #[arg(long, value_enum, default_value = "ccm8")]
    pub dtls_suite: dtls::DtlsSuite,
    /// Write the gateway credentials file (TOML, for its --credentials) of devices
    /// `<prefix>0..n-1` and exit: identity = endpoint name, key = FNV-1a 64 of the name with
    /// two offset bases (16 bytes, loadtest/src/dtls.rs). The default --prefix is `dtls-`.
    #[arg(long, value_name = "FILE")]
    pub write_credentials: Option<PathBuf>,
    /// MQTT broker the gateway publishes to.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Topic filter the harness subscribes to (uplink of every device).
    #[arg(long, default_value = "lwm2m/+/up/#")]
    pub mqtt_topic: String,
    /// Command topic template (`%e` = endpoint name).
    #[arg(long, default_value = "lwm2m/%e/dn")]
    pub command_topic: String,
    /// Number of devices (baseline: number of distinct topics).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub devices: usize,
    /// Aggregate rate per second: registrations (register), notifications (notify, mixed),
    /// commands (command), publishes (baseline). 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Length of the measured phase in seconds (notify, command, mixed, baseline).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Hard limit for the whole run, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Seconds to wait for messages still in flight after the measured phase.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Endpoint name prefix (default `lt<pid>-`: a fresh one per run avoids re-registrations;
    /// with --dtls or --write-credentials `dtls-`, the names the credentials file lists).
    #[arg(long)]
    pub prefix: Option<String>,
    /// register: after the storm, keep the devices registered and idle this many seconds, then
    /// read the gateway's RSS again (its idle memory per device; the storm's CoAP
    /// duplicate-detection entries expire after EXCHANGE_LIFETIME, 247 s by default).
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
    /// Lifetime each device registers with; devices send an Update at 3/4 of it.
    #[arg(long, default_value_t = 86400)]
    pub lifetime: u32,
    /// QoS of the harness's subscription and publishes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// QoS 1/2 publishes in flight on the publisher connection.
    #[arg(long, default_value_t = 1000)]
    pub mqtt_inflight: u16,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG of the run over time to this file: above, the per-second rate of every
    /// counter that moved (registrations, MQTT events, notifications sent and received, commands,
    /// updates, deregistrations); below, p50 and p99 per second of the 2.01, register-event,
    /// notification and command latencies that had data (ms, log scale). Dashed vertical lines
    /// mark phase changes.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Gateway process id: its CPU time per message and RSS (from /proc).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Allow a gateway or broker outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Device I/O threads, one socket (pktinfo) or one share of the sockets each.
    #[arg(long, alias = "senders", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub io_threads: u32,
    /// Outstanding device requests (Register, Update, Deregister) per I/O thread; also the
    /// bound on outstanding MQTT observe commands, and on commands when `--rate 0`.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// How devices send: see the values.
    #[arg(long, value_enum, default_value = "auto")]
    pub transport: TransportKind,
    /// Local port of the pktinfo socket(s) (0 = any; thread t uses port + t).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Socket buffer size asked for (SO_RCVBUFFORCE when allowed).
    #[arg(long, default_value_t = 8 << 20)]
    pub socket_buffer: i32,
    /// Registrations per second while setting up notify/command/mixed (0 = window-limited).
    #[arg(long, default_value_t = 0.0)]
    pub register_rate: f64,
    /// Who observes the devices (notify, mixed).
    #[arg(long, value_enum, default_value = "mqtt")]
    pub observe: ObserveMode,
    /// Path observed on every device; notifications carry the send time in its timestamp
    /// resource (/3/0/13 or /3303/0/5700; an instance path gets SenML JSON).
    #[arg(long, default_value = "/3303/0/5700")]
    pub observe_path: String,
    /// Confirmable notifications (default NON).
    #[arg(long)]
    pub con: bool,
    /// Path the `command` scenario reads.
    #[arg(long, default_value = "/3303/0/5700")]
    pub command_path: String,
    /// mixed: MQTT commands per second (reads, writes, executes, discovers).
    #[arg(long, default_value_t = 100.0)]
    pub command_rate: f64,
    /// mixed: devices per second that deregister and register again.
    #[arg(long, default_value_t = 10.0)]
    pub churn: f64,
    /// Deregister every device at the end (default for notify, command, mixed).
    #[arg(long, overrides_with = "no_deregister")]
    pub deregister: bool,
    /// Leave the devices registered at the end (default for register).
    #[arg(long)]
    pub no_deregister: bool,
    /// notify, mixed: garbage datagrams sent to the gateway beside the fleet (malformed,
    /// requests for nothing, foreign tokens, bogus Registers, oversized, ...; see
    /// loadtest/src/hostile.rs), from --garbage-sources addresses 127.0.2.1, 127.0.2.2, ...
    #[arg(long, default_value_t = 0)]
    pub garbage: u64,
    /// Garbage datagrams per second (0 = as fast as possible).
    #[arg(long, default_value_t = 20_000.0)]
    pub garbage_rate: f64,
    /// Source addresses the garbage comes from (1..=254).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub garbage_sources: u32,
    /// notify, mixed: garbage MQTT commands published beside the fleet's (not JSON, wrong
    /// shapes, bad paths, deep nesting, huge payloads; half for the fleet's endpoints).
    #[arg(long, default_value_t = 0)]
    pub mqtt_garbage: u64,
    /// Garbage MQTT commands per second (0 = as fast as possible).
    #[arg(long, default_value_t = 2_000.0)]
    pub mqtt_garbage_rate: f64,
}

impl Args {
    /// The scenario (present unless --write-credentials, which exits before any runs).
    pub fn scenario(&self) -> Scenario {
        self.scenario.expect("a scenario")
    }

    /// Endpoint names are `<prefix><i>`.
    pub fn endpoint_prefix(&self) -> String {
        match &self.prefix {
            Some(p) => p.clone(),
            None if self.dtls || self.write_credentials.is_some() => "dtls-".into(),
            None => format!("lt{}-", std::process::id()),
        }
    }

    /// Where the devices send: the DTLS port with --dtls, else the plain one.
    pub fn device_target(&self) -> SocketAddr {
        if self.dtls {
            self.dtls_gateway
        } else {
            self.gateway
        }
    }

    pub fn deregister_at_end(&self) -> bool {
        if self.deregister {
            return true;
        }
        if self.no_deregister {
            return false;
        }
        self.scenario() != Scenario::Register
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    stats::init_clock();
    if let Some(path) = &a.write_credentials {
        if a.devices == 0 || a.devices > u32::MAX as usize / 2 {
            bail!("--devices must be within 1..{}", u32::MAX / 2);
        }
        let prefix = a.endpoint_prefix();
        dtls::write_credentials(path, &prefix, a.devices)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "wrote PSK credentials of {} devices ({prefix}0..{prefix}{}) to {}",
            a.devices,
            a.devices - 1,
            path.display()
        );
        return Ok(());
    }
    let mut addrs = vec![a.gateway, a.mqtt];
    if a.dtls {
        addrs.push(a.dtls_gateway);
    }
    for addr in addrs {
        if !addr.ip().is_loopback() && !a.allow_remote {
            bail!("{addr} is not a loopback address; pass --allow-remote to load a remote gateway");
        }
    }
    if a.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if a.devices > u32::MAX as usize / 2 {
        bail!("--devices too large");
    }
    if !(0.0..=3600.0).contains(&a.duration) || a.rate < 0.0 {
        bail!("--duration must be within 0..3600 s and --rate non-negative");
    }
    scenarios::run(a)
}
