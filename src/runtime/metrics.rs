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

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

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
    pub mqtt_connected: AtomicBool,
    /// True once the broker acknowledged the command subscription of the current connection.
    pub mqtt_subscribed: AtomicBool,
}

impl Metrics {
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
