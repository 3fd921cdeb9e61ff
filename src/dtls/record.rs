//! The DTLS 1.2 record layer's framing (RFC 6347 §4.1): splitting a datagram into records,
//! writing record headers, and the anti-replay window (§4.1.2.6).
//!
//! Pure byte handling: protection itself is [`super::crypto`]. A datagram may carry several
//! records; a record whose header is unreadable ends the datagram (its length cannot be
//! trusted), while a record that fails later checks is dropped alone, as §4.1.2.7 asks.

pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

pub const HEADER_LEN: usize = 13;
/// DTLS 1.2 on the wire.
pub const VERSION: [u8; 2] = [0xfe, 0xfd];
/// The largest plaintext a record may carry (2^14).
pub const MAX_PLAINTEXT: usize = 16384;

/// One record of a datagram, borrowed.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub ctype: u8,
    pub version: [u8; 2],
    pub epoch: u16,
    /// 48-bit sequence number.
    pub seq: u64,
    pub fragment: &'a [u8],
}

impl Record<'_> {
    /// The 64-bit `epoch || seq` used as MAC/AEAD sequence number.
    pub fn epoch_seq(&self) -> u64 {
        ((self.epoch as u64) << 48) | self.seq
    }
}

/// Splits a datagram into its records; stops at the first record whose header does not fit.
pub fn records(datagram: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.len() < HEADER_LEN {
            return None;
        }
        let len = u16::from_be_bytes([rest[11], rest[12]]) as usize;
        if rest.len() < HEADER_LEN + len {
            rest = &[];
            return None;
        }
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&rest[5..11]);
        let r = Record {
            ctype: rest[0],
            version: [rest[1], rest[2]],
            epoch: u16::from_be_bytes([rest[3], rest[4]]),
            seq: u64::from_be_bytes(seq),
            fragment: &rest[HEADER_LEN..HEADER_LEN + len],
        };
        rest = &rest[HEADER_LEN + len..];
        Some(r)
    })
}

/// Appends a record header; the caller appends `len` bytes of fragment after it.
pub fn write_header(out: &mut Vec<u8>, ctype: u8, epoch: u16, seq: u64, len: usize) {
    out.push(ctype);
    out.extend_from_slice(&VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

/// Writes a record header whose length is patched in by [`finish_record`] once the fragment is
/// appended. Returns where the header starts.
pub fn begin_record(out: &mut Vec<u8>, ctype: u8, epoch: u16, seq: u64) -> usize {
    let at = out.len();
    write_header(out, ctype, epoch, seq, 0);
    at
}

pub fn finish_record(out: &mut [u8], at: usize) {
    let len = (out.len() - at - HEADER_LEN) as u16;
    out[at + 11..at + 13].copy_from_slice(&len.to_be_bytes());
}

/// The sliding anti-replay window of one epoch: the highest sequence number accepted and a bit
/// per each of the 63 before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted sequence number plus one (0: nothing accepted yet).
    top: u64,
    bits: u64,
}

impl ReplayWindow {
    /// Whether `seq` may be accepted (checked before decryption, recorded only after it).
    pub fn fresh(&self, seq: u64) -> bool {
        if seq >= self.top {
            return true;
        }
        let back = self.top - 1 - seq;
        back < 64 && self.bits & (1 << back) == 0
    }

    /// Records `seq` as received (after it authenticated).
    pub fn accept(&mut self, seq: u64) {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = seq + 1;
        } else {
            let back = self.top - 1 - seq;
            if back < 64 {
                self.bits |= 1 << back;
            }
        }
    }

    /// The raw state, for saving a session.
    pub fn to_parts(self) -> (u64, u64) {
        (self.top, self.bits)
    }

    pub fn from_parts(top: u64, bits: u64) -> ReplayWindow {
        ReplayWindow { top, bits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_splits_into_its_records_and_a_truncated_tail_is_dropped() {
        let mut d = Vec::new();
        write_header(&mut d, HANDSHAKE, 0, 5, 2);
        d.extend_from_slice(&[1, 2]);
        write_header(&mut d, APPLICATION_DATA, 1, 0x0000_0102_0304_0506, 1);
        d.push(9);
        let good = d.len();
        write_header(&mut d, APPLICATION_DATA, 1, 7, 10);
        d.extend_from_slice(&[0; 3]);
        let rs: Vec<Record> = records(&d).collect();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].ctype, HANDSHAKE);
        assert_eq!(rs[0].seq, 5);
        assert_eq!(rs[0].fragment, &[1, 2]);
        assert_eq!(rs[1].epoch, 1);
        assert_eq!(rs[1].seq, 0x0102_0304_0506);
        assert_eq!(rs[1].epoch_seq(), 0x0001_0102_0304_0506);
        assert_eq!(records(&d[..good - 1]).count(), 1);
        assert_eq!(records(&[0u8; 12]).count(), 0);
    }

    #[test]
    fn the_replay_window_accepts_each_number_once_and_forgets_beyond_64() {
        let mut w = ReplayWindow::default();
        for s in [0u64, 1, 5, 3, 70] {
            assert!(w.fresh(s), "{s}");
            w.accept(s);
            assert!(!w.fresh(s), "{s} replayed");
        }
        assert!(w.fresh(10) && w.fresh(69));
        assert!(
            !w.fresh(6) && !w.fresh(4),
            "64 or more behind the top: outside the window"
        );
        assert!(w.fresh(1000));
        w.accept(1000);
        assert!(!w.fresh(70));
        let (t, b) = w.to_parts();
        assert_eq!(ReplayWindow::from_parts(t, b), w);
    }
}
