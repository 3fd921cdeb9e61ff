//! Sources whose datagrams are dropped for a while (issue 12): those that sent more errors than
//! `limits.error_rate` allows. The event loop finds out about its own errors (malformed
//! datagrams, requests for no path), each worker about the ones its shard answers or drops; any
//! of them adds the source here, and the event loop drops whatever the source sends until the
//! block ends, before it costs a worker anything.
//!
//! Cheap when nobody is blocked (one atomic load per datagram); a lookup under a read lock
//! otherwise. Bounded at `max` sources: beyond that a new offender is not blocked (its errors
//! are still counted and cost only what they cost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;
use parking_lot::{Mutex, RwLock};

use crate::core::limits::{Source, SourceLimiter};

use super::metrics::Metrics;

pub struct Blocklist {
    until: RwLock<HashMap<Source, Instant>>,
    /// Entries in `until` (expired ones included until the next insert sweeps them).
    len: AtomicUsize,
    max: usize,
    pub block_time: Duration,
    /// Counts the blocks imposed (`sources_blocked`).
    metrics: Arc<Metrics>,
    /// Sources blocked since the last warning, and when that was.
    unlogged: Mutex<(u64, Option<Instant>)>,
}

impl Blocklist {
    pub fn new(block_time: Duration, max: usize, metrics: Arc<Metrics>) -> Blocklist {
        Blocklist {
            until: RwLock::new(HashMap::new()),
            len: AtomicUsize::new(0),
            max,
            block_time,
            metrics,
            unlogged: Mutex::new((0, None)),
        }
    }

    /// Whether `src` is blocked at `now`.
    pub fn blocks(&self, src: Source, now: Instant) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.until.read().get(&src).is_some_and(|t| now < *t)
    }

    /// Counts one error of the source of `ip` against `errors` (the caller's limiter: the event
    /// loop and each worker have their own), blocking the source when it is over its rate.
    pub fn error(
        &self,
        errors: Option<&mut SourceLimiter>,
        ip: std::net::IpAddr,
        now: Instant,
        why: &str,
    ) {
        let Some(l) = errors else { return };
        let src = Source::of(ip);
        if !l.allow(src, 1, now) {
            self.block(src, ip, now, why);
        }
    }

    /// Blocks `src` for `block_time` from `now` (`why` goes into the log line).
    pub fn block(&self, src: Source, ip: std::net::IpAddr, now: Instant, why: &str) {
        let until = now + self.block_time;
        {
            let mut m = self.until.write();
            if m.len() >= self.max {
                m.retain(|_, t| now < *t);
            }
            if m.len() >= self.max && !m.contains_key(&src) {
                return;
            }
            if m.insert(src, until).is_some_and(|t| now < t) {
                // Already blocked (errors it sent before the block reached the event loop).
                return;
            }
            self.len.store(m.len(), Ordering::Relaxed);
        }
        self.metrics.sources_blocked.fetch_add(1, Ordering::Relaxed);
        let mut u = self.unlogged.lock();
        u.0 += 1;
        if !u.1.is_some_and(|t| now < t + Duration::from_secs(1)) {
            warn!(
                "{} source(s) blocked for {:?}, the last {ip}: {why} (limits.error_rate)",
                u.0, self.block_time
            );
            *u = (0, Some(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::limits::Rate;
    use std::net::IpAddr;

    #[test]
    fn a_source_over_its_error_rate_is_blocked_for_the_block_time() {
        let m = Arc::new(Metrics::default());
        let bl = Blocklist::new(Duration::from_secs(5), 10, m.clone());
        let mut l = SourceLimiter::new(
            Rate {
                per_sec: 1,
                burst: 3,
            },
            100,
        );
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        let t = Instant::now();
        assert!(!bl.blocks(Source::of(ip), t), "nobody is blocked at first");
        for _ in 0..3 {
            bl.error(l.as_mut(), ip, t, "test");
        }
        assert!(!bl.blocks(Source::of(ip), t), "the burst is allowed");
        bl.error(l.as_mut(), ip, t, "test");
        assert!(bl.blocks(Source::of(ip), t));
        assert!(!bl.blocks(Source::of(other), t));
        assert!(!bl.blocks(Source::of(ip), t + Duration::from_secs(5)));
        assert_eq!(m.sources_blocked.load(Ordering::Relaxed), 1);
        // No limiter: no block, however many errors.
        for _ in 0..100 {
            bl.error(None, other, t, "test");
        }
        assert!(!bl.blocks(Source::of(other), t));
    }

    #[test]
    fn the_table_is_bounded_and_expired_blocks_make_room() {
        let bl = Blocklist::new(Duration::from_secs(1), 2, Arc::default());
        let t = Instant::now();
        let ips: Vec<IpAddr> = (1..=3u8).map(|n| IpAddr::from([10, 0, 0, n])).collect();
        for ip in &ips {
            bl.block(Source::of(*ip), *ip, t, "test");
        }
        assert!(bl.blocks(Source::of(ips[0]), t) && bl.blocks(Source::of(ips[1]), t));
        assert!(!bl.blocks(Source::of(ips[2]), t), "the third did not fit");
        let later = t + Duration::from_secs(2);
        bl.block(Source::of(ips[2]), ips[2], later, "test");
        assert!(bl.blocks(Source::of(ips[2]), later));
        assert_eq!(bl.len.load(Ordering::Relaxed), 1);
    }
}
