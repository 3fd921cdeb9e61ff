//! Message-id deduplication (RFC 7252 §4.5): the response to a confirmable message is kept for
//! EXCHANGE_LIFETIME so that a retransmission gets the same bytes again instead of being processed
//! twice. Keyed by (peer, message id). Entries all live equally long, so a FIFO gives expiry order;
//! the cache is also bounded in entries, evicting the oldest first.
//!
//! After a registration storm every device has an entry here for EXCHANGE_LIFETIME (247 s by
//! default), so an entry is kept small: it is stored once, in the FIFO, with a short response
//! inline; the hash index holds only the entry's sequence number (8 bytes a slot) and finds keys
//! through the FIFO. Peers are client-chosen, so the index uses the standard keyed hasher.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use hashbrown::HashTable;

/// Responses up to this size are stored inside the entry (an empty ACK is 4 bytes, a 2.01 to a
/// Register with a 8-byte token and its Location-Path about 25).
const INLINE: usize = 30;

enum Response {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Response {
    fn new(b: &[u8]) -> Response {
        if b.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Response::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Response::Heap(b.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Response::Inline { len, bytes } => &bytes[..*len as usize],
            Response::Heap(b) => b,
        }
    }
}

struct Entry<P> {
    at: Instant,
    peer: P,
    mid: u16,
    response: Response,
}

pub struct DedupCache<P> {
    lifetime: Duration,
    max_entries: usize,
    hasher: RandomState,
    /// Sequence numbers of the entries, hashed by (peer, mid).
    index: HashTable<u64>,
    /// Entries in insertion (= expiry) order; the front one has sequence number `head`.
    entries: VecDeque<Entry<P>>,
    head: u64,
    /// Capacity kept after a storm expires (see [`DedupCache::reserve`]).
    floor: usize,
}

impl<P: Hash + Eq + Copy> DedupCache<P> {
    pub fn new(lifetime: Duration, max_entries: usize) -> Self {
        DedupCache {
            lifetime,
            max_entries: max_entries.max(1),
            hasher: RandomState::new(),
            index: HashTable::new(),
            entries: VecDeque::new(),
            head: 0,
            floor: 1024,
        }
    }

    /// Makes room for `n` entries now (a registration storm then fills the cache without
    /// reallocating it), and never shrinks below that.
    pub fn reserve(&mut self, n: usize) {
        let n = n.min(self.max_entries);
        self.floor = self.floor.max(n);
        self.entries.reserve(n);
        let (entries, head, hasher) = (&self.entries, self.head, &self.hasher);
        self.index.reserve(n, |&s| {
            entries
                .get(s.wrapping_sub(head) as usize)
                .map_or(0, |e| hasher.hash_one((e.peer, e.mid)))
        });
    }

    fn entry(&self, seq: u64) -> Option<&Entry<P>> {
        self.entries.get(seq.wrapping_sub(self.head) as usize)
    }

    /// The cached response for a duplicate, if this (peer, mid) was answered within the lifetime.
    pub fn get(&self, peer: P, mid: u16) -> Option<&[u8]> {
        let h = self.hasher.hash_one((peer, mid));
        let seq = self.index.find(h, |&s| {
            self.entry(s)
                .is_some_and(|e| e.peer == peer && e.mid == mid)
        })?;
        self.entry(*seq).map(|e| e.response.as_slice())
    }

    pub fn insert(&mut self, now: Instant, peer: P, mid: u16, response: &[u8]) {
        self.expire(now);
        let h = self.hasher.hash_one((peer, mid));
        let (entries, head) = (&mut self.entries, self.head);
        let at = |s: u64| s.wrapping_sub(head) as usize;
        if let Some(&seq) = self.index.find(h, |&s| {
            entries
                .get(at(s))
                .is_some_and(|e| e.peer == peer && e.mid == mid)
        }) {
            // A second answer to the same message: keep its place (and expiry), take the bytes.
            if let Some(e) = entries.get_mut(at(seq)) {
                e.response = Response::new(response);
            }
            return;
        }
        let seq = head.wrapping_add(entries.len() as u64);
        entries.push_back(Entry {
            at: now,
            peer,
            mid,
            response: Response::new(response),
        });
        let hasher = &self.hasher;
        self.index.insert_unique(h, seq, |&s| {
            entries
                .get(at(s))
                .map_or(0, |e| hasher.hash_one((e.peer, e.mid)))
        });
        while self.entries.len() > self.max_entries {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let Some(e) = self.entries.pop_front() else {
            return;
        };
        let seq = self.head;
        self.head = self.head.wrapping_add(1);
        let h = self.hasher.hash_one((e.peer, e.mid));
        if let Ok(slot) = self.index.find_entry(h, |&s| s == seq) {
            slot.remove();
        }
    }

    pub fn expire(&mut self, now: Instant) {
        while let Some(e) = self.entries.front() {
            if now.saturating_duration_since(e.at) < self.lifetime {
                break;
            }
            self.pop_front();
        }
        // After a storm has expired, give the space back rather than keep a table sized for the
        // peak (the storm may never come again).
        if self.entries.capacity() > self.floor && self.entries.len() < self.entries.capacity() / 8
        {
            self.entries.shrink_to(self.entries.len() * 2);
            let (entries, head, hasher) = (&self.entries, self.head, &self.hasher);
            self.index.shrink_to(entries.len() * 2, |&s| {
                entries
                    .get(s.wrapping_sub(head) as usize)
                    .map_or(0, |e| hasher.hash_one((e.peer, e.mid)))
            });
        }
    }

    /// When the oldest entry expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.at + self.lifetime)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_bounds() {
        let t0 = Instant::now();
        let mut c = DedupCache::new(Duration::from_secs(10), 2);
        c.insert(t0, 1u8, 7, &[1]);
        assert_eq!(c.get(1, 7), Some(&[1u8][..]));
        assert_eq!(c.get(2, 7), None);
        c.expire(t0 + Duration::from_secs(9));
        assert_eq!(c.len(), 1);
        c.expire(t0 + Duration::from_secs(10));
        assert!(c.is_empty());
        c.insert(t0, 1, 1, &[]);
        c.insert(t0, 1, 2, &[]);
        c.insert(t0, 1, 3, &[]);
        assert_eq!(c.len(), 2);
        assert!(c.get(1, 1).is_none());
        assert_eq!(c.get(1, 3), Some(&[][..]));
    }

    #[test]
    fn long_responses_and_many_entries() {
        let t0 = Instant::now();
        let mut c = DedupCache::new(Duration::from_secs(10), 100_000);
        let long: Vec<u8> = (0..200).map(|i| i as u8).collect();
        for i in 0..5000u32 {
            let at = t0 + Duration::from_millis(i as u64);
            c.insert(at, i, i as u16, if i % 2 == 0 { &long } else { &[1, 2, 3] });
        }
        assert_eq!(c.get(4000, 4000), Some(&long[..]));
        assert_eq!(c.get(4001, 4001), Some(&[1u8, 2, 3][..]));
        assert_eq!(c.get(4001, 4000), None);
        // Re-answering keeps the entry's place.
        c.insert(t0, 10, 10, &[9]);
        assert_eq!((c.len(), c.get(10, 10)), (5000, Some(&[9u8][..])));
        c.expire(t0 + Duration::from_millis(14_000));
        assert_eq!(c.len(), 999);
        assert!(c.get(4000, 4000).is_none());
        assert_eq!(c.get(4999, 4999), Some(&[1u8, 2, 3][..]));
        c.expire(t0 + Duration::from_secs(60));
        assert!(c.is_empty());
        c.insert(t0 + Duration::from_secs(60), 1, 1, &[5]);
        assert_eq!(c.get(1, 1), Some(&[5u8][..]));
    }
}
