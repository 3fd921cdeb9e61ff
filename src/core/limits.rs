//! Per-source rate limits (issue 12), sans-IO: a token bucket per source, the clock given by the
//! caller; and the two pieces of CoAP they need (which answers tell of an error, the 4.29 or
//! 5.03 with Max-Age that refuses a request).
//!
//! A source is an IPv4 address or an IPv6 /64 (a host gets a whole /64, so keying by address
//! would let it change address per datagram). Ports are not part of it: a sender picks them
//! freely. Devices behind one NAT share a source, so limits are per second with a burst that
//! lets a NAT's worth of devices through at once.
//!
//! Bounded: at most `max_sources` buckets. When the table is full, buckets back at their burst
//! (idle sources) are dropped, at most once a second; a new source that still finds no room is
//! let through (counted in [`SourceLimiter::untracked`]): under a storm from more sources than
//! the table holds, the limiter fails open, and the rest of the gateway's bounds (queues,
//! registration memory) apply.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::coap::{code, opt, MessageBuilder, MessageView, MsgType};

/// A sender, as rate limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(u128);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source(u128::from(u32::from(a))),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source(u128::from(u32::from(v4))),
                // The /64 prefix, tagged apart from every IPv4 address.
                None => Source((u128::from(a) >> 64) | (1 << 64)),
            },
        }
    }
}

/// `per_sec` events per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<Source, Bucket>,
    swept_at: Option<Instant>,
    untracked: u64,
}

impl SourceLimiter {
    /// `None` when `rate.per_sec` is 0: no limit.
    pub fn new(rate: Rate, max_sources: usize) -> Option<SourceLimiter> {
        (rate.per_sec > 0).then(|| SourceLimiter {
            rate: f64::from(rate.per_sec),
            burst: f64::from(rate.burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            swept_at: None,
            untracked: 0,
        })
    }

    /// Takes `n` events from `src`'s budget: false when it had less than that (the events are
    /// over the limit; nothing is taken).
    pub fn allow(&mut self, src: Source, n: u32, now: Instant) -> bool {
        let n = f64::from(n);
        if let Some(b) = self.buckets.get_mut(&src) {
            let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
            b.tokens = (b.tokens + refill).min(self.burst);
            b.at = now;
            if b.tokens < n {
                return false;
            }
            b.tokens -= n;
            return true;
        }
        if self.buckets.len() >= self.max_sources && !self.sweep(now) {
            self.untracked += 1;
            return true;
        }
        if n > self.burst {
            return false;
        }
        self.buckets.insert(
            src,
            Bucket {
                tokens: self.burst - n,
                at: now,
            },
        );
        true
    }

    /// Drops the buckets of idle sources (refilled to their burst); true if that made room.
    fn sweep(&mut self, now: Instant) -> bool {
        if self
            .swept_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.swept_at = Some(now);
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
        self.buckets.len() < self.max_sources
    }

    /// New sources let through because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Whole seconds until one event is allowed again, at least 1: the Max-Age of a refusal.
    pub fn retry_after(&self) -> u32 {
        (1.0 / self.rate).ceil().clamp(1.0, 3600.0) as u32
    }
}

/// Whether a datagram the gateway sends back to a device tells of the device's error: a 4.xx
/// answer or a RST. (A RST to a CoAP ping is not told apart here; the event loop answers pings
/// itself, so a worker's RST always refuses something.)
pub fn is_error_answer(bytes: &[u8]) -> bool {
    match bytes {
        [b0, c, ..] => (b0 >> 4) & 3 == MsgType::Rst as u8 || code::class(*c) == 4,
        _ => false,
    }
}

/// The answer to request `bytes` with `code` and a Max-Age of `max_age` seconds (when to try
/// again): piggybacked on the ACK of a CON, a NON with message id `mid` otherwise. `None` if
/// `bytes` is no request.
pub fn refusal(bytes: &[u8], code: u8, max_age: u32, mid: u16) -> Option<Vec<u8>> {
    let v = MessageView::parse(bytes).ok()?;
    let (t, mid) = match v.msg_type() {
        MsgType::Con => (MsgType::Ack, v.message_id()),
        MsgType::Non => (MsgType::Non, mid),
        _ => return None,
    };
    let mut b = Vec::with_capacity(16);
    MessageBuilder::new(&mut b, t, code, mid, v.token())
        .uint_option(opt::MAX_AGE, max_age)
        .finish();
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: u8) -> Source {
        Source::of(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = SourceLimiter::new(
            Rate {
                per_sec: 10,
                burst: 5,
            },
            100,
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!((0..8).filter(|_| l.allow(src(1), 1, t)).count(), 5);
        // Another source has its own budget.
        assert!(l.allow(src(2), 1, t));
        // 10 per second: one more after 100 ms, not two.
        let t1 = t + Duration::from_millis(100);
        assert!(l.allow(src(1), 1, t1));
        assert!(!l.allow(src(1), 1, t1));
        // Refilled to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| l.allow(src(1), 1, t2)).count(), 5);
    }

    #[test]
    fn ipv6_hosts_of_one_prefix_share_a_budget_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(m), src(1));
        assert_ne!(Source::of("::a00:1".parse().unwrap()), src(1));
    }

    #[test]
    fn the_table_is_bounded_and_idle_sources_make_room() {
        let rate = Rate {
            per_sec: 1,
            burst: 2,
        };
        let mut l = SourceLimiter::new(rate, 3).unwrap();
        let t = Instant::now();
        for n in 0..3 {
            assert!(l.allow(src(n), 2, t));
        }
        // Full of busy sources: a new one passes untracked.
        assert!(l.allow(src(9), 1, t));
        assert_eq!((l.sources(), l.untracked()), (3, 1));
        // Once they are idle again, they make room.
        let later = t + Duration::from_secs(10);
        assert!(l.allow(src(9), 1, later));
        assert_eq!(l.sources(), 1);
        assert!(SourceLimiter::new(
            Rate {
                per_sec: 0,
                burst: 9
            },
            3
        )
        .is_none());
    }

    #[test]
    fn error_answers_and_refusals() {
        let mut b = Vec::new();
        MessageBuilder::new(&mut b, MsgType::Ack, code::NOT_FOUND, 1, &[]).finish();
        assert!(is_error_answer(&b));
        MessageBuilder::new(&mut b, MsgType::Ack, code::CREATED, 1, &[]).finish();
        assert!(!is_error_answer(&b));
        MessageBuilder::new(&mut b, MsgType::Rst, code::EMPTY, 1, &[]).finish();
        assert!(is_error_answer(&b));
        MessageBuilder::new(&mut b, MsgType::Ack, code::SERVICE_UNAVAILABLE, 1, &[]).finish();
        assert!(
            !is_error_answer(&b),
            "5.03 is the gateway's trouble, not the device's"
        );

        let mut reg = Vec::new();
        MessageBuilder::new(&mut reg, MsgType::Con, code::POST, 0x1234, &[7, 7])
            .option(opt::URI_PATH, b"rd")
            .finish();
        let r = refusal(&reg, code::TOO_MANY_REQUESTS, 2, 99).unwrap();
        let v = MessageView::parse(&r).unwrap();
        assert_eq!(
            (v.msg_type(), v.code(), v.message_id(), v.token()),
            (MsgType::Ack, code::TOO_MANY_REQUESTS, 0x1234, &[7u8, 7][..])
        );
        assert_eq!(v.uint_option(opt::MAX_AGE), Some(2));
        reg[0] = (reg[0] & !0x30) | (1 << 4); // NON
        let r = refusal(&reg, code::TOO_MANY_REQUESTS, 2, 99).unwrap();
        assert_eq!(MessageView::parse(&r).unwrap().message_id(), 99);
        assert!(refusal(&[0x60, 0, 0, 1], code::TOO_MANY_REQUESTS, 1, 0).is_none());
        let l = SourceLimiter::new(
            Rate {
                per_sec: 10,
                burst: 1,
            },
            1,
        )
        .unwrap();
        assert_eq!(l.retry_after(), 1);
        let l = SourceLimiter::new(
            Rate {
                per_sec: 1,
                burst: 1,
            },
            1,
        )
        .unwrap();
        assert_eq!(l.retry_after(), 1);
    }
}
