//! Identifiers the gateway chooses, and the shard number each carries so that the event loop can
//! route a device's answer to the worker that owns the device without a lookup.
//!
//! This file is the one place where a shard number is put into an identifier or read out of one:
//! - registration ids (`/rd/{id}`): `seq << 8 | shard`;
//! - tokens of the gateway's requests: 8 bytes, the first is the shard, 56 random bits after it;
//! - message ids of the gateway's requests: `k * shards + shard`.

use std::fmt;

/// The number of a worker and of the [`crate::core::shard::Shard`] it runs: `0..shards`, at most
/// [`ShardId::MAX_SHARDS`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ShardId(u8);

impl ShardId {
    /// Registration ids and tokens carry the shard in one byte.
    pub const MAX_SHARDS: usize = 256;

    pub fn new(n: usize) -> Option<ShardId> {
        u8::try_from(n).ok().map(ShardId)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Every shard of a gateway with `shards` workers.
    pub fn all(shards: usize) -> impl Iterator<Item = ShardId> {
        (0..shards.min(Self::MAX_SHARDS)).map(|n| ShardId(n as u8))
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registration: its decimal form is the Location-Path `/rd/{id}` the device was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegId(u64);

impl RegId {
    /// The `seq`-th registration of `shard` (`seq` below 2^56).
    pub fn new(seq: u64, shard: ShardId) -> RegId {
        RegId((seq << 8) | shard.0 as u64)
    }

    pub fn shard(self) -> ShardId {
        ShardId(self.0 as u8)
    }

    /// The id in a `/rd/{id}` Uri-Path segment, if it is one.
    pub fn parse(segment: &[u8]) -> Option<RegId> {
        let s = std::str::from_utf8(segment).ok()?;
        // u64::from_str accepts a leading '+', which no id the gateway gave out has.
        if s.starts_with('+') {
            return None;
        }
        s.parse().ok().map(RegId)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(v: u64) -> RegId {
        RegId(v)
    }
}

impl fmt::Display for RegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The token of a request the gateway sent: always 8 bytes, the first one the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(u64);

impl Token {
    /// A token for `shard` from 56 random bits of `random`.
    pub fn new(random: u64, shard: ShardId) -> Token {
        Token((random & 0x00ff_ffff_ffff_ffff) | ((shard.0 as u64) << 56))
    }

    /// The token of a device's message, if it has the shape of one the gateway chose.
    pub fn from_bytes(b: &[u8]) -> Option<Token> {
        <[u8; 8]>::try_from(b)
            .ok()
            .map(u64::from_be_bytes)
            .map(Token)
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn shard(self) -> ShardId {
        ShardId((self.0 >> 56) as u8)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(v: u64) -> Token {
        Token(v)
    }
}

/// Message ids of one shard's requests: `k * shards + shard`, so that an empty ACK (which carries
/// nothing but the message id) routes back to the shard that sent the request.
#[derive(Debug, Clone)]
pub struct MidAllocator {
    shard: ShardId,
    shards: u32,
    next: u32,
}

impl MidAllocator {
    pub fn new(shard: ShardId, shards: usize) -> MidAllocator {
        MidAllocator {
            shard,
            shards: shards.clamp(1, ShardId::MAX_SHARDS) as u32,
            next: 0,
        }
    }

    pub fn alloc(&mut self) -> u16 {
        let per = 65536 / self.shards;
        let k = self.next % per;
        self.next = self.next.wrapping_add(1);
        (k * self.shards + self.shard.0 as u32) as u16
    }

    /// The shard that allocated `mid` in a gateway of `shards` workers.
    pub fn shard_of(mid: u16, shards: usize) -> ShardId {
        ShardId((mid as usize % shards.clamp(1, ShardId::MAX_SHARDS)) as u8)
    }

    /// Where the sequence stands (for saving and restoring a shard's state).
    pub fn position(&self) -> u32 {
        self.next
    }

    pub fn set_position(&mut self, next: u32) {
        self.next = next;
    }

    /// Moves half the id space ahead: after a crash, the ids given out since the position was
    /// saved are unknown, and a device may still hold one in its dedup cache.
    pub fn skip_ahead(&mut self) {
        self.next = self.next.wrapping_add(65536 / self.shards / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_routes_back_to_its_shard() {
        for shards in [1usize, 2, 3, 7, 256] {
            for s in ShardId::all(shards) {
                let reg = RegId::new(12345, s);
                assert_eq!(RegId::parse(reg.to_string().as_bytes()), Some(reg));
                assert_eq!(reg.shard(), s);
                let t = Token::new(u64::MAX, s);
                assert_eq!(Token::from_bytes(&t.to_bytes()).map(Token::shard), Some(s));
                let mut m = MidAllocator::new(s, shards);
                for _ in 0..70_000 {
                    assert_eq!(MidAllocator::shard_of(m.alloc(), shards), s);
                }
            }
        }
        assert_eq!(RegId::parse(b"+5"), None);
        assert_eq!(RegId::parse(b"x"), None);
        assert_eq!(Token::from_bytes(&[1, 2, 3]), None);
    }
}
