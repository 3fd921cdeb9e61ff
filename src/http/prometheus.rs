//! `GET /metrics`: the gateway's counters in the Prometheus text format, written by the
//! prometheus-client crate's encoder (OpenMetrics text, which Prometheus reads).
//!
//! Nothing is recorded for this: the counters are the atomics the threads keep anyway
//! (`runtime::Metrics`; a shard counts into its `Output` and its worker adds a round's worth at
//! once), read here at scrape time. The registrations by kind are counters each shard keeps in
//! step with its sessions (`core/shard/query.rs` `Kinds`), asked of the workers at most once a
//! second however often it is scraped; queue depths, the threads' CPU time and the resident
//! memory (from `/proc`, Linux) are read at scrape time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::core::shard::{Census, CommandResult};
use crate::runtime::metrics::RTT_BOUNDS_S;

use super::{Context, Reply};

/// Caches the census of registrations: scrapes closer than this share one.
const CENSUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Exporter {
    census: Mutex<Option<(Instant, Census)>>,
}

#[derive(Debug, Clone, Copy)]
enum Val {
    U(u64),
    F(f64),
}

#[derive(Debug)]
struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, Val)>,
}

#[derive(Debug, Default)]
struct Snapshot {
    series: Vec<Series>,
    /// (per-bucket counts with the +Inf one last, sum in seconds).
    rtt: (Vec<u64>, f64),
}

impl Snapshot {
    fn one(&mut self, name: &'static str, help: &'static str, kind: MetricType, v: Val) {
        self.series.push(Series {
            name,
            help,
            kind,
            samples: vec![(Vec::new(), v)],
        });
    }

    fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.one(name, help, MetricType::Counter, Val::U(v));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.one(name, help, MetricType::Gauge, Val::U(v));
    }

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        samples: Vec<(Vec<(&'static str, String)>, Val)>,
    ) {
        self.series.push(Series {
            name,
            help,
            kind,
            samples,
        });
    }
}

fn encode_val(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: MetricType,
    v: Val,
) -> Result<(), std::fmt::Error> {
    let none: Option<&Exemplar<NoLabelSet, f64>> = None;
    match (kind, v) {
        (MetricType::Counter, Val::U(v)) => m.encode_counter(&v, none),
        (MetricType::Counter, Val::F(v)) => m.encode_counter(&v, none),
        (_, Val::U(v)) => m.encode_gauge(&(v as i64)),
        (_, Val::F(v)) => m.encode_gauge(&v),
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for s in &self.series {
            let mut m = encoder.encode_descriptor(s.name, s.help, None, s.kind)?;
            for (labels, v) in &s.samples {
                if labels.is_empty() {
                    encode_val(&mut m, s.kind, *v)?;
                } else {
                    let mut f = m.encode_family(labels)?;
                    encode_val(&mut f, s.kind, *v)?;
                }
            }
        }
        let (counts, sum) = &self.rtt;
        let buckets: Vec<(f64, u64)> = RTT_BOUNDS_S
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts.iter().copied())
            .collect();
        let mut m = encoder.encode_descriptor(
            "command_rtt_seconds",
            "Round trip of answered commands, from the request's first transmission to the device's answer",
            None,
            MetricType::Histogram,
        )?;
        let none: Option<&HashMap<usize, Exemplar<NoLabelSet, f64>>> = None;
        m.encode_histogram(*sum, counts.iter().sum(), &buckets, none)
    }
}

/// Answers a scrape.
pub fn scrape(ctx: &Context) -> Reply {
    let snap = snapshot(ctx);
    let mut registry = Registry::with_prefix("lwm2m");
    registry.register_collector(Box::new(snap));
    let mut out = String::with_capacity(16 << 10);
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => Reply::new(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            out.into_bytes(),
        ),
        Err(_) => Reply::error(500, "INTERNAL", "the metrics could not be written"),
    }
}

fn census(ctx: &Context) -> Option<Census> {
    let mut c = ctx.prometheus.census.lock();
    if let Some((at, census)) = c.as_ref() {
        if at.elapsed() < CENSUS_EVERY {
            return Some(census.clone());
        }
    }
    let fresh = ctx.ops.census(Duration::from_secs(5)).ok()?;
    *c = Some((Instant::now(), fresh.clone()));
    Some(fresh)
}

fn snapshot(ctx: &Context) -> Snapshot {
    use MetricType::{Counter, Gauge};
    let m = &*ctx.metrics;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut s = Snapshot::default();
    let lab = |k: &'static str, v: &str| vec![(k, v.to_string())];

    if let Some(c) = census(ctx) {
        let samples = c
            .by_kind
            .iter()
            .map(|((v, b, q), n)| {
                (
                    vec![
                        ("version", v.to_string()),
                        ("binding", b.clone()),
                        ("queue_mode", q.to_string()),
                    ],
                    Val::U(*n),
                )
            })
            .collect();
        s.family(
            "registrations",
            "Registered devices, by LwM2M version, binding and queue mode",
            Gauge,
            samples,
        );
    }
    s.family(
        "registration_events",
        "Registrations begun, updated, deregistered (or kicked, or replaced) and expired",
        Counter,
        vec![
            (lab("event", "registered"), Val::U(g(&m.registered))),
            (lab("event", "updated"), Val::U(g(&m.updated))),
            (lab("event", "deregistered"), Val::U(g(&m.deregistered))),
            (lab("event", "expired"), Val::U(g(&m.expired))),
        ],
    );
    s.family(
        "registrations_refused",
        "Registers refused: over their source's rate (4.29), or the gateway full (5.03)",
        Counter,
        vec![
            (lab("cause", "rate"), Val::U(g(&m.refused_rate))),
            (lab("cause", "full"), Val::U(g(&m.refused_full))),
        ],
    );
    // The plain counters: (name, help, the atomic behind it).
    let counters: [(&str, &str, &AtomicU64); 13] = [
        (
            "datagrams_received",
            "UDP datagrams read (CoAP and DTLS)",
            &m.datagrams_in,
        ),
        ("datagrams_sent", "UDP datagrams sent", &m.datagrams_out),
        (
            "datagram_send_errors",
            "Datagrams the socket did not take",
            &m.send_errors,
        ),
        (
            "sources_blocked",
            "Sources blocked for their error rate",
            &m.sources_blocked,
        ),
        (
            "coap_retransmissions",
            "Confirmable requests sent again for want of an ACK",
            &m.retransmissions,
        ),
        (
            "coap_timeouts",
            "Requests to devices that ended unanswered",
            &m.coap_timeouts,
        ),
        ("notifications", "Notifications published", &m.notifications),
        (
            "commands_received",
            "Commands received from MQTT",
            &m.commands_in,
        ),
        (
            "commands_dropped",
            "Commands answered 5.03 because their worker's queue was full",
            &m.commands_dropped,
        ),
        (
            "mqtt_publishes",
            "Messages handed to the MQTT connection",
            &m.publishes,
        ),
        (
            "mqtt_publishes_dropped",
            "Messages dropped because the MQTT queue was full",
            &m.publish_dropped,
        ),
        (
            "dtls_bad_records",
            "DTLS records dropped: not authentic, replayed, for no session",
            &m.dtls_bad_records,
        ),
        (
            "dtls_migrated",
            "DTLS sessions that followed their device to a new address (Connection ID)",
            &m.dtls_migrated,
        ),
    ];
    for (name, help, a) in counters {
        s.counter(name, help, g(a));
    }
    s.family(
        "datagrams_dropped",
        "Datagrams dropped, by cause",
        Counter,
        vec![
            (lab("cause", "queue_full"), Val::U(g(&m.dropped_queue_full))),
            (lab("cause", "malformed"), Val::U(g(&m.dropped_malformed))),
            (lab("cause", "blocked"), Val::U(g(&m.dropped_blocked))),
            (lab("cause", "oversized"), Val::U(g(&m.dropped_oversized))),
            (lab("cause", "forbidden"), Val::U(g(&m.forbidden))),
        ],
    );
    let commands: Vec<_> = {
        let map = m.commands.lock();
        let mut v: Vec<_> = map
            .iter()
            .map(|((op, result), n)| {
                let op = op.map_or("invalid", |o| o.msg_type());
                let result = match result {
                    CommandResult::Code(c) => crate::coap::code::to_string(*c),
                    CommandResult::Timeout => "timeout".to_string(),
                    CommandResult::Reset => "reset".to_string(),
                };
                (
                    vec![("type", op.to_string()), ("result", result)],
                    Val::U(*n),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    s.family(
        "commands",
        "Commands ended, by type and result (a CoAP code, timeout or reset)",
        Counter,
        commands,
    );
    s.rtt = (
        m.command_rtt
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        m.command_rtt.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
    s.gauge(
        "mqtt_connected",
        "1 while the broker connection is up and subscribed",
        u64::from(m.mqtt_subscribed.load(Ordering::Relaxed)),
    );
    s.gauge(
        "mqtt_queue_depth",
        "Messages waiting for the MQTT connection",
        ctx.ops.mqtt_queued() as u64,
    );
    let depths = ctx
        .ops
        .queue_depths()
        .into_iter()
        .enumerate()
        .map(|(i, d)| (lab("worker", &i.to_string()), Val::U(d as u64)))
        .collect();
    s.family(
        "worker_queue_depth",
        "Messages waiting in each worker's queue",
        Gauge,
        depths,
    );
    s.gauge(
        "dtls_sessions",
        "Established DTLS sessions",
        m.dtls_sessions.load(Ordering::Relaxed) as u64,
    );
    s.family(
        "dtls_handshakes",
        "DTLS handshakes, by outcome",
        Counter,
        vec![
            (lab("result", "started"), Val::U(g(&m.dtls_handshakes))),
            (lab("result", "established"), Val::U(g(&m.dtls_established))),
            (lab("result", "resumed"), Val::U(g(&m.dtls_resumed))),
            (lab("result", "failed"), Val::U(g(&m.dtls_failed))),
            (
                lab("result", "refused_busy"),
                Val::U(g(&m.dtls_refused_busy)),
            ),
        ],
    );
    s.gauge(
        "http_event_streams",
        "Open /events streams",
        ctx.streams.load(Ordering::Relaxed) as u64,
    );
    let cpu: Vec<_> = thread_cpu()
        .into_iter()
        .map(|(name, secs)| (lab("thread", &name), Val::F(secs)))
        .collect();
    if !cpu.is_empty() {
        s.family(
            "thread_cpu_seconds",
            "CPU time of each gateway thread (user + system)",
            Counter,
            cpu,
        );
    }
    if let Some(rss) = resident_bytes() {
        s.gauge(
            "resident_memory_bytes",
            "Resident memory of the gateway process",
            rss,
        );
    }
    s
}

/// CPU seconds of each thread of this process, by name, summed over threads of one name (e.g.
/// `http-0`, `worker-1`); empty where /proc is not there.
fn thread_cpu() -> Vec<(String, f64)> {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    for t in dir.flatten() {
        let p = t.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(p.join("stat")),
            std::fs::read_to_string(p.join("comm")),
        ) else {
            continue;
        };
        // Fields after the `(comm)` part: utime and stime are the 12th and 13th.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| f.get(*i).and_then(|v| v.parse::<u64>().ok()))
            .sum();
        *by.entry(comm.trim().to_string()).or_default() += ticks as f64 / tck;
    }
    by.into_iter().collect()
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
