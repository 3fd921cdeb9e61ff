//! Hash maps for the identifiers the gateway chooses itself (registration ids, tokens, message
//! ids): keys no device or MQTT client controls, so a fast multiplicative hash is safe where the
//! standard SipHash would cost more than the lookup. Maps keyed by client-chosen data (endpoint
//! names, addresses) keep the standard, randomly keyed hasher against collision attacks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Fx-style hasher: one multiply per integer written.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(n as u64);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        let hashes: std::collections::HashSet<u64> = (0..10_000u64)
            .map(|i| {
                let mut h = IntHasher::default();
                h.write_u64((i << 8) | 1);
                h.finish() >> 57 // hashbrown's control byte comes from the top bits
            })
            .collect();
        assert!(hashes.len() > 100, "top bits vary: {}", hashes.len());
        let mut m: IntMap<u64, u64> = IntMap::default();
        m.insert(7, 1);
        assert_eq!(m.get(&7), Some(&1));
    }
}
