//! RFC 7959 block-wise transfers, pure: the Block1/Block2 option value ([`BlockOpt`]), reassembly
//! of a block-wise response body the gateway fetches from a device ([`Block2Assembly`]), slicing
//! of a large request body the gateway sends to a device ([`Block1Sender`]), and a memory budget
//! with expiry for partial transfers ([`Reassembly`]).
//!
//! Contract: no I/O and no clock (callers pass `now`), and nothing panics on what a device sends.
//! Every option value and payload is checked, and a rejected block or acknowledgement leaves the
//! transfer exactly as it was, so the caller decides whether to ignore it (a late duplicate) or
//! abandon the transfer. Transfers are sequential only (no random access to blocks): that is all
//! the gateway asks for. SZX 7 is BERT (RFC 8323, CoAP over TCP only) and is rejected as reserved.
//!
//! Block size changes follow RFC 7959 §2.3/§2.4: either side may only ever *lower* the size
//! mid-transfer, and because sizes are powers of two a lowered size always divides the byte
//! offset reached so far, so the next block number is simply `offset / new_size`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::decode_uint;

/// Largest block number: NUM is at most 20 bits (in a 3-byte option value).
pub const MAX_NUM: u32 = (1 << 20) - 1;
/// Largest SZX with a defined size (1024 bytes); 7 is reserved for BERT.
pub const MAX_SZX: u8 = 6;

/// Block size in bytes for a 3-bit SZX field. Masking keeps a malformed SZX from overflowing the
/// shift; SZX 7 maps to 2048 but never passes validation.
fn size_of(szx: u8) -> usize {
    16 << (szx & 7)
}

/// A Block1 or Block2 option value (RFC 7959 §2.2): block number, more flag, size exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOpt {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl BlockOpt {
    /// Decodes an option value of 0–3 bytes (leading zero bytes accepted, RFC 7252 §3.2).
    /// `None` for a longer value or the reserved SZX 7.
    pub fn decode(v: &[u8]) -> Option<BlockOpt> {
        if v.len() > 3 {
            return None;
        }
        let x = decode_uint(v)?;
        let szx = (x & 7) as u8;
        if szx > MAX_SZX {
            return None;
        }
        Some(BlockOpt {
            num: x >> 4,
            more: x & 8 != 0,
            szx,
        })
    }

    /// Encodes into `buf` in minimal length (the all-zero value is empty) and returns the bytes.
    /// Only a valid option (see [`BlockOpt::is_valid`]) is representable; out-of-range fields
    /// are masked to their bit widths rather than spilling into neighbouring fields.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 3]) -> &'b [u8] {
        debug_assert!(self.is_valid(), "block option out of range: {self:?}");
        let v = ((self.num & MAX_NUM) << 4) | ((self.more as u32) << 3) | (self.szx & 7) as u32;
        let [_, a, b, c] = v.to_be_bytes();
        *buf = [a, b, c];
        let skip = (v.leading_zeros() / 8) as usize - 1;
        &buf[skip.min(3)..]
    }

    /// Block size in bytes: `16 << szx`.
    pub fn size(&self) -> usize {
        size_of(self.szx)
    }

    /// The SZX of the largest block size (16..=1024, a power of two) not above `size`; sizes
    /// below 16 still get SZX 0 because no smaller block exists.
    pub fn from_size(size: usize) -> u8 {
        (size.clamp(16, 1024).ilog2() - 4) as u8
    }

    /// Byte offset of this block in the body (`num * size`), saturating for out-of-range fields.
    pub fn offset(&self) -> usize {
        (self.num as usize).saturating_mul(self.size())
    }

    /// NUM within 20 bits and SZX not reserved.
    pub fn is_valid(&self) -> bool {
        self.num <= MAX_NUM && self.szx <= MAX_SZX
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block option with reserved SZX 7 or NUM above 2^20-1")]
    Invalid,
    #[error("block at byte offset {got}, expected offset {expected}")]
    OutOfOrder { expected: usize, got: usize },
    #[error("block payload of {got} bytes where the block size is {expected}")]
    WrongSize { expected: usize, got: usize },
    #[error("block size raised from SZX {from} to {to} mid-transfer")]
    SizeIncreased { from: u8, to: u8 },
    #[error("body larger than the limit")]
    TooLarge,
    #[error("ETag changed between blocks: the representation changed mid-transfer")]
    Changed,
    #[error("transfer already complete")]
    Finished,
}

/// What to do after a Block2 response was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block2Step {
    /// Request this block next (M is always 0 in a request, RFC 7959 §2.4).
    Next(BlockOpt),
    /// The whole body.
    Done(Vec<u8>),
}

/// Reassembles a block-wise response body (RFC 7959 §2.4): the gateway sent GET/FETCH, the device
/// answers 2.05 with Block2, and the gateway requests block after block until M is 0.
///
/// Errors leave the assembly unchanged. [`BlockError::OutOfOrder`] may be a late duplicate the
/// caller can ignore; [`BlockError::TooLarge`] (answer 4.13 / report) and
/// [`BlockError::Changed`] (restart from block 0) end the transfer.
#[derive(Debug, Clone)]
pub struct Block2Assembly {
    max_body: usize,
    body: Vec<u8>,
    /// The SZX last requested (or implied): the device may answer with it or smaller, never larger.
    szx: u8,
    /// ETag of the first accepted block; every later block must carry the same (or likewise none).
    etag: Option<Vec<u8>>,
    started: bool,
    done: bool,
}

impl Block2Assembly {
    /// For a transfer whose first request carried no Block2 option: the device picks any size.
    pub fn new(max_body: usize) -> Self {
        Self::with_szx(max_body, MAX_SZX)
    }

    /// For a first request that carried Block2 `0/0/szx` (early negotiation): the device must use
    /// that size or smaller (RFC 7959 §2.4).
    pub fn with_szx(max_body: usize, szx: u8) -> Self {
        Block2Assembly {
            max_body,
            body: Vec::new(),
            szx: szx.min(MAX_SZX),
            etag: None,
            started: false,
            done: false,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.body.len()
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Accepts one response block without ETag tracking (ETag compared as absent).
    pub fn push(&mut self, block: BlockOpt, payload: &[u8]) -> Result<Block2Step, BlockError> {
        self.push_with_etag(block, payload, None)
    }

    /// Accepts one response block and its ETag option, if any. A different ETag (including one
    /// appearing or disappearing) than the first block's means the resource changed mid-transfer
    /// and the pieces must not be glued together (RFC 7959 §2.4).
    pub fn push_with_etag(
        &mut self,
        block: BlockOpt,
        payload: &[u8],
        etag: Option<&[u8]>,
    ) -> Result<Block2Step, BlockError> {
        if self.done {
            return Err(BlockError::Finished);
        }
        if !block.is_valid() {
            return Err(BlockError::Invalid);
        }
        if block.szx > self.szx {
            return Err(BlockError::SizeIncreased {
                from: self.szx,
                to: block.szx,
            });
        }
        let expected = self.body.len();
        // A lowered SZX is accepted at any point (late negotiation): the offset we reached is a
        // multiple of every smaller size, so the device's NUM still names exactly that offset.
        if block.offset() != expected {
            return Err(BlockError::OutOfOrder {
                expected,
                got: block.offset(),
            });
        }
        let size = block.size();
        // All blocks but the last are exactly the block size; otherwise the next NUM would name
        // an offset that does not match the bytes we hold.
        if (block.more && payload.len() != size) || payload.len() > size {
            return Err(BlockError::WrongSize {
                expected: size,
                got: payload.len(),
            });
        }
        if self.started && self.etag.as_deref() != etag {
            return Err(BlockError::Changed);
        }
        let total = expected
            .checked_add(payload.len())
            .ok_or(BlockError::TooLarge)?;
        if total > self.max_body || (block.more && block.num >= MAX_NUM) {
            return Err(BlockError::TooLarge);
        }

        if !self.started {
            self.started = true;
            self.etag = etag.map(<[u8]>::to_vec);
        }
        self.body.extend_from_slice(payload);
        self.szx = block.szx;
        if !block.more {
            self.done = true;
            return Ok(Block2Step::Done(std::mem::take(&mut self.body)));
        }
        Ok(Block2Step::Next(BlockOpt {
            num: block.num + 1,
            more: false,
            szx: block.szx,
        }))
    }
}

/// What to do after the device acknowledged a Block1 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block1Step {
    /// Send this block (at the sender's current SZX) next: [`Block1Sender::block`].
    Send(u32),
    /// The last block was acknowledged; the response carrying that acknowledgement is the final
    /// response to the whole request.
    Done,
}

/// Slices a large request body (PUT/POST of a write or firmware package) for Block1
/// (RFC 7959 §2.3): send [`block`](Self::block)`(0)` (with Size1 = [`size1`](Self::size1)), then
/// for each success response call [`on_continue`](Self::on_continue) and send what it names.
#[derive(Debug, Clone)]
pub struct Block1Sender {
    body: Vec<u8>,
    szx: u8,
    /// Start of the block in flight (awaiting acknowledgement). Always a multiple of the current
    /// block size, and `offset / size` never exceeds [`MAX_NUM`].
    offset: usize,
    done: bool,
}

impl Block1Sender {
    /// `szx` above 6 is clamped to 6 (1024 bytes).
    pub fn new(body: Vec<u8>, szx: u8) -> Self {
        Block1Sender {
            body,
            szx: szx.min(MAX_SZX),
            offset: 0,
            done: false,
        }
    }

    /// The whole body back, e.g. to send the request again from the start.
    /// The whole body being sent.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Current SZX (lowered if the device asked for smaller blocks).
    pub fn szx(&self) -> u8 {
        self.szx
    }

    /// Size1 option value for the first block: the whole body length, so the device can refuse
    /// with 4.13 before any further block is sent. Saturates (a uint option holds 4 bytes).
    pub fn size1(&self) -> u32 {
        u32::try_from(self.body.len()).unwrap_or(u32::MAX)
    }

    /// Blocks needed at the current SZX; an empty body still takes one (empty) block.
    pub fn total_blocks(&self) -> usize {
        self.body.len().div_ceil(size_of(self.szx)).max(1)
    }

    /// The block in flight, at the current SZX (what to retransmit if the exchange is retried).
    pub fn current(&self) -> u32 {
        // Bounded by MAX_NUM: `on_continue` refuses to advance past it.
        (self.offset / size_of(self.szx)) as u32
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Block `num` at the current SZX and its payload. A `num` past the body gives an empty,
    /// final block rather than a panic.
    pub fn block(&self, num: u32) -> (BlockOpt, &[u8]) {
        let size = size_of(self.szx);
        let len = self.body.len();
        let start = (num as usize).saturating_mul(size).min(len);
        let end = start.saturating_add(size).min(len);
        let opt = BlockOpt {
            num,
            more: end < len,
            szx: self.szx,
        };
        (opt, &self.body[start..end])
    }

    /// Handles a success response to the block in flight (2.31 Continue, or the final 2.xx),
    /// given its Block1 option. The device's SZX is its preferred size for the remaining blocks;
    /// a smaller one re-slices from the byte offset reached (RFC 7959 §2.3 / Figure 7:
    /// `1:0/1/128` answered `1:0/1/32` continues with `1:4/1/32`). A larger one is ignored: the
    /// client uses the device's preference "or a smaller one", and staying put keeps offsets
    /// exact. A missing echo is taken as acknowledging the block in flight, unchanged size.
    pub fn on_continue(&mut self, resp: Option<BlockOpt>) -> Result<Block1Step, BlockError> {
        if self.done {
            return Err(BlockError::Finished);
        }
        let size = size_of(self.szx);
        let len = self.body.len();
        let end = self.offset.saturating_add(size).min(len);
        let mut szx = self.szx;
        if let Some(b) = resp {
            if !b.is_valid() {
                return Err(BlockError::Invalid);
            }
            // RFC 7959 Figure 7 echoes the request's NUM with the new SZX; some servers instead
            // name a block of their new size inside the one we sent. Both acknowledge the block
            // in flight and can never be confused with each other.
            let inside = b.szx < self.szx
                && (self.offset..self.offset.saturating_add(size)).contains(&b.offset());
            if b.num != self.current() && !inside {
                return Err(BlockError::OutOfOrder {
                    expected: self.offset,
                    got: b.offset(),
                });
            }
            szx = szx.min(b.szx);
        }
        if end >= len {
            self.done = true;
            return Ok(Block1Step::Done);
        }
        let num = end / size_of(szx);
        if num > MAX_NUM as usize {
            return Err(BlockError::TooLarge);
        }
        self.offset = end;
        self.szx = szx;
        Ok(Block1Step::Send(num as u32))
    }

    /// Handles 4.13 Request Entity Too Large. If it carries a Block1 option with a smaller SZX,
    /// the device will take the body in blocks of that size: restart from block 0, since the
    /// device has dropped whatever it had (RFC 7959 §2.9.3). Otherwise the body is simply too
    /// large for the device.
    pub fn on_too_large(&mut self, resp: Option<BlockOpt>) -> Result<Block1Step, BlockError> {
        if self.done {
            return Err(BlockError::Finished);
        }
        match resp {
            Some(b) if b.szx < self.szx => {
                self.szx = b.szx;
                self.offset = 0;
                Ok(Block1Step::Send(0))
            }
            _ => Err(BlockError::TooLarge),
        }
    }
}

/// Memory limits for partial block-wise bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockBudget {
    /// Bytes one key (normally one device) may hold in partial transfers.
    pub per_peer_max: usize,
    /// Bytes all keys together may hold.
    pub total_max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: usize,
    /// Matches the `order` record of the current stamp; older records for the key are stale.
    stamp: u64,
}

/// Bounds memory held by partial transfers across many devices and expires transfers that
/// stalled (RFC 7959 §2.4 leaves abandoned partial state to time out; EXCHANGE_LIFETIME, 247 s,
/// is the natural lifetime).
///
/// A key is stamped with [`insert`](Self::insert) when its transfer starts and only stamped keys
/// can reserve bytes, so every reservation is reclaimed by [`expired`](Self::expired) if the
/// caller never [`release`](Self::release)s it. Expiry is FIFO over stamps, which gives age order
/// as long as `now` never goes backwards (the event loop's monotonic clock); re-stamping or
/// releasing leaves a stale record that is skipped lazily and compacted away, so every operation
/// is amortised O(1).
#[derive(Debug, Clone)]
pub struct Reassembly<K> {
    budget: BlockBudget,
    entries: HashMap<K, Entry>,
    order: VecDeque<(Instant, K, u64)>,
    total: usize,
    next_stamp: u64,
}

impl<K: Hash + Eq + Copy> Reassembly<K> {
    pub fn new(budget: BlockBudget) -> Self {
        Reassembly {
            budget,
            entries: HashMap::new(),
            order: VecDeque::new(),
            total: 0,
            next_stamp: 0,
        }
    }

    /// Stamps the start of a transfer for `key`. Stamping a key again restarts its lifetime and
    /// keeps its reservation (a new transfer for the same device, or progress the caller wants
    /// to count as activity).
    pub fn insert(&mut self, now: Instant, key: K) {
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.entries
            .entry(key)
            .and_modify(|e| e.stamp = stamp)
            .or_insert(Entry { bytes: 0, stamp });
        self.order.push_back((now, key, stamp));
        // Repeated re-stamping within one lifetime would otherwise grow `order` without bound.
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(_, k, s)| entries.get(k).is_some_and(|e| e.stamp == *s));
        }
    }

    /// Reserves `bytes` more for `key` if both limits allow; `false` (nothing reserved) if not,
    /// or if `key` was never stamped with [`insert`](Self::insert).
    pub fn try_reserve(&mut self, key: K, bytes: usize) -> bool {
        let Some(e) = self.entries.get_mut(&key) else {
            return false;
        };
        let (Some(mine), Some(total)) = (e.bytes.checked_add(bytes), self.total.checked_add(bytes))
        else {
            return false;
        };
        if mine > self.budget.per_peer_max || total > self.budget.total_max {
            return false;
        }
        e.bytes = mine;
        self.total = total;
        true
    }

    /// Frees everything `key` holds and forgets it; returns the bytes freed.
    pub fn release(&mut self, key: K) -> usize {
        match self.entries.remove(&key) {
            Some(e) => {
                self.total -= e.bytes;
                e.bytes
            }
            None => 0,
        }
    }

    /// Keys whose transfer started at least `lifetime` ago. They are released here, so the
    /// caller only drops its own transfer state for them.
    pub fn expired(&mut self, now: Instant, lifetime: Duration) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(&(t, key, stamp)) = self.order.front() {
            let live = self.entries.get(&key).is_some_and(|e| e.stamp == stamp);
            if live && now.saturating_duration_since(t) < lifetime {
                break;
            }
            self.order.pop_front();
            if live {
                self.release(key);
                out.push(key);
            }
        }
        out
    }

    /// Bytes reserved by `key`.
    pub fn reserved(&self, key: K) -> usize {
        self.entries.get(&key).map_or(0, |e| e.bytes)
    }

    /// Bytes reserved by all keys.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn contains(&self, key: K) -> bool {
        self.entries.contains_key(&key)
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
    use proptest::prelude::*;

    fn b(num: u32, more: bool, szx: u8) -> BlockOpt {
        BlockOpt { num, more, szx }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    #[test]
    fn option_round_trips_at_the_edges() {
        for szx in 0..=MAX_SZX {
            for num in [0, 15, 16, 4095, 4096, MAX_NUM] {
                for more in [false, true] {
                    let o = b(num, more, szx);
                    let mut buf = [0; 3];
                    let enc = o.encode(&mut buf).to_vec();
                    let want_len = match num {
                        0 if !more && szx == 0 => 0,
                        0..=15 => 1,
                        16..=4095 => 2,
                        _ => 3,
                    };
                    assert_eq!(enc.len(), want_len, "{o:?}");
                    assert_eq!(BlockOpt::decode(&enc), Some(o));
                    assert_eq!(o.size(), 16 << szx);
                    assert_eq!(o.offset(), num as usize * (16 << szx));
                }
            }
        }
    }

    #[test]
    fn decodes_values_of_each_length() {
        assert_eq!(BlockOpt::decode(&[]), Some(b(0, false, 0)));
        assert_eq!(BlockOpt::decode(&[0x0e]), Some(b(0, true, 6)));
        assert_eq!(BlockOpt::decode(&[0x01, 0x0a]), Some(b(16, true, 2)));
        assert_eq!(
            BlockOpt::decode(&[0xff, 0xff, 0xf6]),
            Some(b(MAX_NUM, false, 6))
        );
        // Non-minimal encodings must be accepted (RFC 7252 §3.2).
        assert_eq!(BlockOpt::decode(&[0, 0, 0x0e]), Some(b(0, true, 6)));
        assert_eq!(BlockOpt::decode(&[0, 0, 0, 0x0e]), None);
        assert_eq!(BlockOpt::decode(&[0x07]), None);
        assert_eq!(BlockOpt::decode(&[0x0f]), None);
        assert_eq!(BlockOpt::decode(&[0x12, 0x37]), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(BlockOpt::from_size(0), 0);
        assert_eq!(BlockOpt::from_size(15), 0);
        assert_eq!(BlockOpt::from_size(16), 0);
        assert_eq!(BlockOpt::from_size(31), 0);
        assert_eq!(BlockOpt::from_size(32), 1);
        assert_eq!(BlockOpt::from_size(1000), 5);
        assert_eq!(BlockOpt::from_size(1024), 6);
        assert_eq!(BlockOpt::from_size(1152), 6);
        assert_eq!(BlockOpt::from_size(usize::MAX), 6);
        for szx in 0..=MAX_SZX {
            assert_eq!(BlockOpt::from_size(16 << szx), szx);
        }
        assert_eq!(b(3, false, 2).offset(), 192);
        // Out-of-range fields do not panic.
        assert_eq!(b(u32::MAX, false, 255).size(), 2048);
        assert!(!b(MAX_NUM + 1, false, 0).is_valid());
        assert!(!b(0, false, 7).is_valid());
    }

    #[test]
    fn block2_happy_path() {
        let body = bytes(3 * 64 + 10);
        let mut a = Block2Assembly::new(4096);
        for n in 0..3u32 {
            let s = n as usize * 64;
            assert_eq!(
                a.push(b(n, true, 2), &body[s..s + 64]),
                Ok(Block2Step::Next(b(n + 1, false, 2)))
            );
        }
        assert_eq!(a.received(), 192);
        assert_eq!(
            a.push(b(3, false, 2), &body[192..]),
            Ok(Block2Step::Done(body.clone()))
        );
        assert_eq!(a.push(b(4, false, 2), &[]), Err(BlockError::Finished));
    }

    #[test]
    fn block2_single_block_and_empty_last_block() {
        let mut a = Block2Assembly::new(100);
        assert_eq!(
            a.push(b(0, false, 6), b"hello"),
            Ok(Block2Step::Done(b"hello".to_vec()))
        );
        let mut a = Block2Assembly::new(100);
        a.push(b(0, true, 0), &[1; 16]).unwrap();
        assert_eq!(
            a.push(b(1, false, 0), &[]),
            Ok(Block2Step::Done(vec![1; 16]))
        );
    }

    #[test]
    fn block2_device_lowers_size_mid_transfer() {
        let body = bytes(1024 + 256 + 100);
        let mut a = Block2Assembly::new(1 << 16);
        assert_eq!(
            a.push(b(0, true, 6), &body[..1024]),
            Ok(Block2Step::Next(b(1, false, 6)))
        );
        // We asked for 1/0/6 (offset 1024); the device answers in 256-byte blocks: 1024/256 = 4.
        assert_eq!(
            a.push(b(4, true, 4), &body[1024..1280]),
            Ok(Block2Step::Next(b(5, false, 4)))
        );
        // It may not go back up.
        assert_eq!(
            a.push(b(2, true, 6), &body[1280..]),
            Err(BlockError::SizeIncreased { from: 4, to: 6 })
        );
        assert_eq!(
            a.push(b(5, false, 4), &body[1280..]),
            Ok(Block2Step::Done(body.clone()))
        );

        // Early negotiation: asked for 64-byte blocks, the device must not answer with 128.
        let mut a = Block2Assembly::with_szx(1 << 16, 2);
        assert_eq!(
            a.push(b(0, true, 3), &body[..128]),
            Err(BlockError::SizeIncreased { from: 2, to: 3 })
        );
        assert!(
            matches!(a.push(b(0, true, 1), &body[..32]), Ok(Block2Step::Next(n)) if n == b(1, false, 1))
        );
    }

    #[test]
    fn block2_rejects_out_of_order_and_duplicates_without_losing_state() {
        let body = bytes(200);
        let mut a = Block2Assembly::new(4096);
        assert_eq!(
            a.push(b(1, true, 2), &body[64..128]),
            Err(BlockError::OutOfOrder {
                expected: 0,
                got: 64
            })
        );
        a.push(b(0, true, 2), &body[..64]).unwrap();
        assert_eq!(
            a.push(b(0, true, 2), &body[..64]),
            Err(BlockError::OutOfOrder {
                expected: 64,
                got: 0
            })
        );
        assert_eq!(
            a.push(b(2, true, 2), &body[128..192]),
            Err(BlockError::OutOfOrder {
                expected: 64,
                got: 128
            })
        );
        assert_eq!(a.received(), 64);
        a.push(b(1, true, 2), &body[64..128]).unwrap();
        a.push(b(2, true, 2), &body[128..192]).unwrap();
        assert_eq!(
            a.push(b(3, false, 2), &body[192..]),
            Ok(Block2Step::Done(body))
        );
    }

    #[test]
    fn block2_rejects_wrong_block_lengths() {
        let mut a = Block2Assembly::new(4096);
        assert_eq!(
            a.push(b(0, true, 2), &[0; 63]),
            Err(BlockError::WrongSize {
                expected: 64,
                got: 63
            })
        );
        assert_eq!(
            a.push(b(0, true, 2), &[0; 65]),
            Err(BlockError::WrongSize {
                expected: 64,
                got: 65
            })
        );
        assert_eq!(
            a.push(b(0, false, 2), &[0; 65]),
            Err(BlockError::WrongSize {
                expected: 64,
                got: 65
            })
        );
        assert_eq!(a.received(), 0);
    }

    #[test]
    fn block2_enforces_the_body_limit() {
        let mut a = Block2Assembly::new(100);
        a.push(b(0, true, 2), &[0; 64]).unwrap();
        assert_eq!(a.push(b(1, true, 2), &[0; 64]), Err(BlockError::TooLarge));
        assert_eq!(a.push(b(1, false, 2), &[0; 37]), Err(BlockError::TooLarge));
        assert_eq!(
            a.push(b(1, false, 2), &[0; 36]),
            Ok(Block2Step::Done(vec![0; 100]))
        );
        // A block number that leaves no room for the next request.
        let mut a = Block2Assembly::new(usize::MAX);
        a.body = vec![0; MAX_NUM as usize * 16];
        assert_eq!(
            a.push(b(MAX_NUM, true, 0), &[0; 16]),
            Err(BlockError::TooLarge)
        );
        assert_eq!(a.push(b(MAX_NUM, false, 0), &[0; 3]).map(|_| ()), Ok(()));
    }

    #[test]
    fn block2_detects_a_changed_representation() {
        let mut a = Block2Assembly::new(4096);
        a.push_with_etag(b(0, true, 0), &[1; 16], Some(b"v1"))
            .unwrap();
        assert_eq!(
            a.push_with_etag(b(1, true, 0), &[2; 16], Some(b"v2")),
            Err(BlockError::Changed)
        );
        assert_eq!(
            a.push_with_etag(b(1, true, 0), &[2; 16], None),
            Err(BlockError::Changed)
        );
        a.push_with_etag(b(1, true, 0), &[2; 16], Some(b"v1"))
            .unwrap();
        // No ETag on the first block: one appearing later is a change too.
        let mut a = Block2Assembly::new(4096);
        a.push(b(0, true, 0), &[1; 16]).unwrap();
        assert_eq!(
            a.push_with_etag(b(1, false, 0), &[2; 3], Some(b"v1")),
            Err(BlockError::Changed)
        );
    }

    #[test]
    fn block2_rejects_reserved_szx() {
        let mut a = Block2Assembly::new(1 << 20);
        assert_eq!(a.push(b(0, true, 7), &[0; 2048]), Err(BlockError::Invalid));
    }

    #[test]
    fn block1_splits_100_kib_into_1024_byte_blocks() {
        let body = bytes(100 * 1024);
        let mut s = Block1Sender::new(body.clone(), 6);
        assert_eq!(s.total_blocks(), 100);
        assert_eq!(s.size1(), 102_400);
        let mut num = 0;
        let mut out = Vec::new();
        loop {
            let (opt, data) = s.block(num);
            assert_eq!(opt, b(num, num < 99, 6));
            assert_eq!(data.len(), 1024);
            out.extend_from_slice(data);
            match s.on_continue(Some(opt)).unwrap() {
                Block1Step::Send(n) => {
                    assert_eq!(n, num + 1);
                    num = n;
                }
                Block1Step::Done => break,
            }
        }
        assert_eq!(num, 99);
        assert_eq!(out, body);
        assert!(s.is_done());
        assert_eq!(s.on_continue(None), Err(BlockError::Finished));

        // One byte more: a 101st block of one byte.
        let s = Block1Sender::new(bytes(100 * 1024 + 1), 6);
        assert_eq!(s.total_blocks(), 101);
        let (opt, data) = s.block(100);
        assert_eq!((opt, data.len()), (b(100, false, 6), 1));
        assert!(s.block(99).0.more);
        // Past the end: empty and final, no panic.
        assert_eq!(s.block(u32::MAX).1.len(), 0);
        assert!(!s.block(u32::MAX).0.more);
    }

    #[test]
    fn block1_reslices_when_the_device_asks_for_smaller_blocks() {
        let body = bytes(3000);
        let mut s = Block1Sender::new(body.clone(), 6);
        let (o, d) = s.block(0);
        assert_eq!((o, d.len()), (b(0, true, 6), 1024));
        // RFC 7959 Figure 7 style: the echo keeps our NUM and carries the new SZX.
        assert_eq!(s.on_continue(Some(b(0, true, 4))), Ok(Block1Step::Send(4)));
        assert_eq!(s.szx(), 4);
        assert_eq!(s.current(), 4);
        let (o, d) = s.block(4);
        assert_eq!(o, b(4, true, 4));
        assert_eq!(d, &body[1024..1280]);
        // A larger preference is not followed.
        assert_eq!(s.on_continue(Some(b(4, true, 6))), Ok(Block1Step::Send(5)));
        assert_eq!(s.szx(), 4);
        // An ack for some other block is refused and changes nothing.
        assert_eq!(
            s.on_continue(Some(b(3, true, 4))),
            Err(BlockError::OutOfOrder {
                expected: 1280,
                got: 768
            })
        );
        assert_eq!(s.current(), 5);
        // Echo naming the last 64-byte block inside our 256-byte block 5 (bytes 1280..1536).
        assert_eq!(
            s.on_continue(Some(b(23, true, 2))),
            Ok(Block1Step::Send(24))
        );
        assert_eq!(s.block(24).1, &body[1536..1600]);
        let mut got = body[..1536].to_vec();
        let mut num = 24;
        loop {
            let (o, d) = s.block(num);
            got.extend_from_slice(d);
            match s.on_continue(Some(o)).unwrap() {
                Block1Step::Send(n) => num = n,
                Block1Step::Done => break,
            }
        }
        assert_eq!(got, body);
        assert_eq!(num, (3000 - 1) / 64);
    }

    #[test]
    fn block1_empty_body_missing_echo_and_4_13() {
        let mut s = Block1Sender::new(Vec::new(), 9);
        assert_eq!(s.szx(), 6);
        assert_eq!(s.total_blocks(), 1);
        assert_eq!(s.block(0), (b(0, false, 6), &[][..]));
        assert_eq!(s.on_continue(None), Ok(Block1Step::Done));

        let mut s = Block1Sender::new(bytes(100), 6);
        assert_eq!(s.on_too_large(None), Err(BlockError::TooLarge));
        assert_eq!(
            s.on_too_large(Some(b(0, false, 6))),
            Err(BlockError::TooLarge)
        );
        assert_eq!(
            s.on_too_large(Some(b(0, false, 5))),
            Ok(Block1Step::Send(0))
        );
        assert_eq!(s.block(0).0, b(0, false, 5));
        assert_eq!(
            s.on_too_large(Some(b(0, false, 1))),
            Ok(Block1Step::Send(0))
        );
        // Without an echo the block in flight counts as acknowledged at the same size.
        assert_eq!(s.on_continue(None), Ok(Block1Step::Send(1)));
        assert_eq!(s.block(1).1.len(), 32);
        assert_eq!(s.on_continue(Some(b(1, true, 7))), Err(BlockError::Invalid));
    }

    #[test]
    fn budget_limits_per_peer_and_total() {
        let t0 = Instant::now();
        let mut r = Reassembly::new(BlockBudget {
            per_peer_max: 100,
            total_max: 150,
        });
        assert!(!r.try_reserve(1u8, 10), "unstamped keys reserve nothing");
        r.insert(t0, 1);
        r.insert(t0, 2);
        assert!(r.try_reserve(1, 60));
        assert!(r.try_reserve(1, 40));
        assert!(!r.try_reserve(1, 1), "per-peer limit");
        assert!(r.try_reserve(2, 50));
        assert!(!r.try_reserve(2, 1), "total limit");
        assert!(!r.try_reserve(2, usize::MAX));
        assert_eq!((r.reserved(1), r.reserved(2), r.total()), (100, 50, 150));
        assert_eq!(r.release(1), 100);
        assert_eq!(r.release(1), 0);
        assert!(!r.contains(1));
        assert!(r.try_reserve(2, 50));
        assert_eq!(r.total(), 100);
    }

    #[test]
    fn budget_expires_stalled_transfers() {
        let t0 = Instant::now();
        let life = Duration::from_secs(247);
        let mut r = Reassembly::new(BlockBudget {
            per_peer_max: 1000,
            total_max: 1000,
        });
        r.insert(t0, 'a');
        r.insert(t0 + Duration::from_secs(10), 'b');
        r.insert(t0 + Duration::from_secs(20), 'c');
        assert!(r.try_reserve('a', 300));
        assert!(r.try_reserve('b', 300));
        r.release('c');
        // Re-stamping 'b' restarts its lifetime.
        r.insert(t0 + Duration::from_secs(100), 'b');
        assert!(r.expired(t0 + Duration::from_secs(246), life).is_empty());
        assert_eq!(r.expired(t0 + life, life), vec!['a']);
        assert_eq!(r.total(), 300);
        assert!(r.expired(t0 + Duration::from_secs(346), life).is_empty());
        assert_eq!(r.expired(t0 + Duration::from_secs(347), life), vec!['b']);
        assert!(r.is_empty());
        assert_eq!(r.total(), 0);
    }

    #[test]
    fn budget_stale_records_stay_bounded() {
        let t0 = Instant::now();
        let mut r = Reassembly::new(BlockBudget {
            per_peer_max: 10,
            total_max: 10,
        });
        for i in 0..10_000u64 {
            r.insert(t0 + Duration::from_millis(i), 7u32);
        }
        assert!(r.order.len() <= 2 * r.len() + 17);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.expired(
                t0 + Duration::from_millis(9_999) + Duration::from_secs(1),
                Duration::from_secs(1)
            ),
            vec![7]
        );
    }

    /// Sends `body` with Block1Sender and feeds every block to Block2Assembly as if it were a
    /// response; the device side lowers the size to `lower_to` after block index `lower_at`.
    fn relay(body: &[u8], szx: u8, lower_at: usize, lower_to: u8) -> Vec<u8> {
        let mut s = Block1Sender::new(body.to_vec(), szx);
        let mut a = Block2Assembly::with_szx(body.len(), szx);
        let mut num = 0;
        for i in 0.. {
            let (opt, data) = s.block(num);
            let step = a.push(opt, data).expect("assembly accepts every block");
            let ack = BlockOpt {
                szx: if i == lower_at { lower_to } else { opt.szx },
                ..opt
            };
            match (step, s.on_continue(Some(ack)).expect("sender accepts ack")) {
                (Block2Step::Next(want), Block1Step::Send(n)) => {
                    assert_eq!(want.offset(), s.block(n).0.offset());
                    num = n;
                }
                (Block2Step::Done(got), Block1Step::Done) => return got,
                (a, s) => panic!("assembly {a:?} but sender {s:?}"),
            }
        }
        unreachable!()
    }

    proptest! {
        #[test]
        fn block1_blocks_reassemble_for_every_szx(body in proptest::collection::vec(any::<u8>(), 0..3000)) {
            for szx in 0..=MAX_SZX {
                prop_assert_eq!(relay(&body, szx, usize::MAX, szx), body.clone());
            }
        }

        #[test]
        fn reassembles_across_a_size_reduction(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            szx in 0..=MAX_SZX,
            lower_at in 0usize..8,
            by in 0u8..=6,
        ) {
            let to = szx.saturating_sub(by);
            prop_assert_eq!(relay(&body, szx, lower_at, to), body);
        }
    }
}
