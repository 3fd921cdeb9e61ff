//! Message-id deduplication (RFC 7252 §4.5): the response to a confirmable message is kept for
//! EXCHANGE_LIFETIME so that a retransmission gets the same bytes again instead of being processed
//! twice. Keyed by (peer, message id). Entries all live equally long, so a FIFO gives expiry order;
//! the cache is also bounded in entries, evicting the oldest first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct DedupCache<P> {
    lifetime: Duration,
    max_entries: usize,
    map: HashMap<(P, u16), Vec<u8>>,
    order: VecDeque<(Instant, (P, u16))>,
}

impl<P: Hash + Eq + Copy> DedupCache<P> {
    pub fn new(lifetime: Duration, max_entries: usize) -> Self {
        DedupCache {
            lifetime,
            max_entries: max_entries.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached response for a duplicate, if this (peer, mid) was answered within the lifetime.
    pub fn get(&self, peer: P, mid: u16) -> Option<&[u8]> {
        self.map.get(&(peer, mid)).map(|v| v.as_slice())
    }

    pub fn insert(&mut self, now: Instant, peer: P, mid: u16, response: Vec<u8>) {
        self.expire(now);
        if self.map.insert((peer, mid), response).is_none() {
            self.order.push_back((now, (peer, mid)));
        }
        while self.map.len() > self.max_entries {
            match self.order.pop_front() {
                Some((_, k)) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
    }

    pub fn expire(&mut self, now: Instant) {
        while let Some((t, k)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.lifetime {
                break;
            }
            self.map.remove(k);
            self.order.pop_front();
        }
    }

    /// When the oldest entry expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(t, _)| *t + self.lifetime)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_bounds() {
        let t0 = Instant::now();
        let mut c = DedupCache::new(Duration::from_secs(10), 2);
        c.insert(t0, 1u8, 7, vec![1]);
        assert_eq!(c.get(1, 7), Some(&[1u8][..]));
        assert_eq!(c.get(2, 7), None);
        c.expire(t0 + Duration::from_secs(9));
        assert_eq!(c.len(), 1);
        c.expire(t0 + Duration::from_secs(10));
        assert!(c.is_empty());
        c.insert(t0, 1, 1, vec![]);
        c.insert(t0, 1, 2, vec![]);
        c.insert(t0, 1, 3, vec![]);
        assert_eq!(c.len(), 2);
        assert!(c.get(1, 1).is_none());
    }
}
