//! The gateway's counters and the stats line.
//!
//! Owns [`Metrics`], one set of atomics shared through an `Arc` by every thread: the event loop,
//! the workers and the MQTT thread add to it, tests and the stats thread read it. All updates
//! are `Relaxed`: each counter is a statistic on its own, nothing is published through it.
//!
//! [`stats_line`] is the body of the optional `stats` thread. It only reads, so it never slows
//! the threads it reports on.
//!
//! A leaf module: it imports nothing from the rest of the runtime, so every other module may use
//! it without creating an import cycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use parking_lot::Mutex;

use crate::core::command::Op;
use crate::core::shard::{CommandEnd, CommandResult, ShardStats};

/// Upper bounds of the command round-trip buckets, in seconds (the last bucket is +Inf).
pub const RTT_BOUNDS_S: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A histogram of fixed buckets in atomics: recording is two additions, no lock.
#[derive(Debug, Default)]
pub struct RttHistogram {
    /// Per bucket (not cumulative), the last one +Inf.
    pub buckets: [AtomicU64; RTT_BOUNDS_S.len() + 1],
    pub sum_us: AtomicU64,
}

impl RttHistogram {
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = RTT_BOUNDS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(RTT_BOUNDS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters shared by every thread, read by the stats line and by tests.
#[derive(Debug, Default)]
pub struct Metrics {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// Dropped because a worker queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Malformed or unexpected datagrams dropped (event loop and workers).
    pub dropped_malformed: AtomicU64,
    /// Datagrams that could not be sent (socket buffer full, unreachable).
    pub send_errors: AtomicU64,
    pub publishes: AtomicU64,
    /// Publishes dropped because the MQTT request channel was full or closed.
    pub publish_dropped: AtomicU64,
    pub commands_in: AtomicU64,
    pub commands_dropped: AtomicU64,
    pub registrations: AtomicUsize,
    /// Uplinks refused for their identity (4.03 answers and dropped responses).
    pub forbidden: AtomicU64,
    /// Datagrams dropped unread because their source is blocked (`limits.error_rate`).
    pub dropped_blocked: AtomicU64,
    /// Datagrams above `limits.max_datagram`, dropped unread.
    pub dropped_oversized: AtomicU64,
    /// Registers answered 4.29 (`limits.register_rate`).
    pub refused_rate: AtomicU64,
    /// Registers of new endpoints answered 5.03 (`limits.max_registrations`).
    pub refused_full: AtomicU64,
    /// Sources blocked since start (`limits.error_rate`).
    pub sources_blocked: AtomicU64,
    /// Stateless HelloVerifyRequests sent (every first ClientHello gets one).
    pub dtls_hello_verify: AtomicU64,
    /// Handshakes started (ClientHellos with a valid cookie).
    pub dtls_handshakes: AtomicU64,
    /// Handshakes completed, full or abbreviated.
    pub dtls_established: AtomicU64,
    pub dtls_resumed: AtomicU64,
    /// Handshakes that failed: wrong key, unknown identity, no common suite, timeout, alert.
    pub dtls_failed: AtomicU64,
    /// ClientHellos refused because the handshake or session limit was reached.
    pub dtls_refused_busy: AtomicU64,
    /// Records dropped: not authentic, replayed, garbage, or for no session.
    pub dtls_bad_records: AtomicU64,
    /// Sessions that followed their device to a new address by its Connection ID.
    pub dtls_migrated: AtomicU64,
    /// Established DTLS sessions now.
    pub dtls_sessions: AtomicUsize,
    /// What the shards did (issue 13): registrations and their ends, notifications, CoAP
    /// retransmissions and requests that went unanswered.
    pub registered: AtomicU64,
    pub updated: AtomicU64,
    pub deregistered: AtomicU64,
    pub expired: AtomicU64,
    pub notifications: AtomicU64,
    pub retransmissions: AtomicU64,
    pub coap_timeouts: AtomicU64,
    /// Commands that ended, by operation and result.
    pub commands: Mutex<HashMap<(Option<Op>, CommandResult), u64>>,
    /// Round trips of answered commands.
    pub command_rtt: RttHistogram,
    pub mqtt_connected: AtomicBool,
    /// True once the broker acknowledged the command subscription of the current connection.
    pub mqtt_subscribed: AtomicBool,
}

/// Adds `v` to a counter (nothing when it is 0: no write to a shared cache line).
pub fn add(a: &AtomicU64, v: u64) {
    if v > 0 {
        a.fetch_add(v, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Adds a round of a shard's counters and ended commands.
    pub fn add_shard(&self, s: &ShardStats, commands: &[CommandEnd]) {
        add(&self.registered, s.registered);
        add(&self.updated, s.updated);
        add(&self.deregistered, s.deregistered);
        add(&self.expired, s.expired);
        add(&self.notifications, s.notifications);
        add(&self.retransmissions, s.retransmissions);
        add(&self.coap_timeouts, s.timeouts);
        if commands.is_empty() {
            return;
        }
        let mut m = self.commands.lock();
        for c in commands {
            *m.entry((c.op, c.result)).or_default() += 1;
            if let Some(rtt) = c.rtt {
                self.command_rtt.record(rtt);
            }
        }
    }

    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "registrations={} dtls_sessions={} datagrams_in={} datagrams_out={} publishes={} commands={} dropped: queue_full={} malformed={} send_errors={} publish={} commands={} forbidden={} blocked={} oversized={} limits: refused_rate={} refused_full={} sources_blocked={} dtls: handshakes={} failed={} bad_records={} migrated={} mqtt={}",
            self.registrations.load(Ordering::Relaxed),
            self.dtls_sessions.load(Ordering::Relaxed),
            g(&self.datagrams_in),
            g(&self.datagrams_out),
            g(&self.publishes),
            g(&self.commands_in),
            g(&self.dropped_queue_full),
            g(&self.dropped_malformed),
            g(&self.send_errors),
            g(&self.publish_dropped),
            g(&self.commands_dropped),
            g(&self.forbidden),
            g(&self.dropped_blocked),
            g(&self.dropped_oversized),
            g(&self.refused_rate),
            g(&self.refused_full),
            g(&self.sources_blocked),
            g(&self.dtls_established),
            g(&self.dtls_failed),
            g(&self.dtls_bad_records),
            g(&self.dtls_migrated),
            if self.mqtt_connected.load(Ordering::Relaxed) { "up" } else { "down" },
        )
    }
}

/// Logs [`Metrics::summary`] every `every` until `stop`; the body of the `stats` thread.
pub(super) fn stats_line(metrics: Arc<Metrics>, stop: Arc<AtomicBool>, every: Duration) {
    let mut next = Instant::now() + every;
    // Short naps instead of one sleep of `every`, so that a shutdown does not wait for it.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if Instant::now() >= next {
            info!("stats: {}", metrics.summary());
            next += every;
        }
    }
}
