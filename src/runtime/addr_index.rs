//! The shared address index: which worker owns the device at a UDP address (and, for DTLS,
//! which worker holds the session of a Connection ID, so a device whose address changed is
//! still routed to its session). Workers write it
//! (their shard's `IndexUpdate`s), the event loop reads it to route the traffic whose identifiers
//! the device chose (`/dp` Send, responses with foreign tokens).
//!
//! It holds an entry per registered device, a million at once, so the key is compact: an IPv4
//! address and port packed into a `u64` (a 16-byte entry with the worker number, where a
//! `SocketAddr` key takes 36), IPv6 addresses whole in a map of their own. Lookups behave as
//! with `SocketAddr` keys: an IPv4 address and its IPv4-mapped IPv6 form are different keys, and
//! IPv6 keys compare flow info and scope id too. Addresses are chosen by devices, so the maps
//! keep `DashMap`'s randomly keyed SipHash.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use dashmap::DashMap;

#[derive(Debug, Default)]
pub struct AddrIndex {
    v4: DashMap<u64, u16>,
    v6: DashMap<SocketAddrV6, u16>,
    /// DTLS Connection IDs (ours, random, see `dtls::server::CID_LEN`).
    cids: DashMap<u64, u16>,
}

fn v4_key(a: &SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port())
}

impl AddrIndex {
    pub fn new() -> AddrIndex {
        AddrIndex::default()
    }

    /// Room for `n` IPv4 devices up front (see `expected_devices`).
    pub fn with_capacity(n: usize) -> AddrIndex {
        AddrIndex {
            v4: DashMap::with_capacity(n),
            v6: DashMap::new(),
            cids: DashMap::new(),
        }
    }

    /// The worker owning `addr`, if a device is registered there.
    pub fn get(&self, addr: &SocketAddr) -> Option<u16> {
        match addr {
            SocketAddr::V4(a) => self.v4.get(&v4_key(a)).map(|w| *w),
            SocketAddr::V6(a) => self.v6.get(a).map(|w| *w),
        }
    }

    /// `addr` now belongs to `worker` (whoever had it before).
    pub fn bind(&self, addr: SocketAddr, worker: u16) {
        match addr {
            SocketAddr::V4(a) => {
                self.v4.insert(v4_key(&a), worker);
            }
            SocketAddr::V6(a) => {
                self.v6.insert(a, worker);
            }
        }
    }

    /// Forgets `addr` if `worker` owns it: another worker may have bound it since.
    pub fn unbind(&self, addr: SocketAddr, worker: u16) {
        match addr {
            SocketAddr::V4(a) => {
                self.v4.remove_if(&v4_key(&a), |_, w| *w == worker);
            }
            SocketAddr::V6(a) => {
                self.v6.remove_if(&a, |_, w| *w == worker);
            }
        }
    }

    /// The worker holding the DTLS session of Connection ID `cid`.
    pub fn get_cid(&self, cid: u64) -> Option<u16> {
        self.cids.get(&cid).map(|w| *w)
    }

    pub fn bind_cid(&self, cid: u64, worker: u16) {
        self.cids.insert(cid, worker);
    }

    /// Forgets `cid` if `worker` holds it.
    pub fn unbind_cid(&self, cid: u64, worker: u16) {
        self.cids.remove_if(&cid, |_, w| *w == worker);
    }

    /// Connection IDs indexed.
    pub fn cids(&self) -> usize {
        self.cids.len()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn behaves_like_a_map_keyed_by_socket_addr() {
        let ix = AddrIndex::new();
        let a = SocketAddr::from(([10, 1, 2, 3], 5683));
        let a_port = SocketAddr::from(([10, 1, 2, 3], 5684));
        let a_ip = SocketAddr::from(([10, 1, 2, 4], 5683));
        let mapped = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(), 5683));
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5683, 0, 0));
        let v6_scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5683, 0, 3));
        ix.bind(a, 1);
        ix.bind(v6, 2);
        assert_eq!(ix.get(&a), Some(1));
        assert_eq!(ix.get(&a_port), None);
        assert_eq!(ix.get(&a_ip), None);
        assert_eq!(ix.get(&mapped), None);
        assert_eq!(ix.get(&v6), Some(2));
        assert_eq!(ix.get(&v6_scoped), None);
        ix.bind(SocketAddr::from(([255, 255, 255, 255], 65535)), 3);
        ix.bind(SocketAddr::from(([0, 0, 0, 0], 0)), 4);
        assert_eq!(
            ix.get(&SocketAddr::from(([255, 255, 255, 255], 65535))),
            Some(3)
        );
        assert_eq!(ix.get(&SocketAddr::from(([0, 0, 0, 0], 0))), Some(4));
        assert_eq!(ix.len(), 4);
        // Rebound by another worker: the first one's unbind leaves it alone.
        ix.bind(a, 5);
        ix.unbind(a, 1);
        assert_eq!(ix.get(&a), Some(5));
        ix.unbind(a, 5);
        ix.unbind(v6, 9);
        assert_eq!(ix.get(&v6), Some(2));
        ix.unbind(v6, 2);
        assert_eq!((ix.get(&a), ix.get(&v6)), (None, None));
        assert_eq!(ix.len(), 2);
        ix.bind_cid(7, 1);
        assert_eq!(ix.get_cid(7), Some(1));
        ix.bind_cid(7, 2);
        ix.unbind_cid(7, 1);
        assert_eq!(
            ix.get_cid(7),
            Some(2),
            "moved on: the old holder's unbind is ignored"
        );
        ix.unbind_cid(7, 2);
        assert_eq!((ix.get_cid(7), ix.cids()), (None, 0));
    }
}
