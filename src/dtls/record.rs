//! The DTLS 1.2 record layer's framing (RFC 6347 §4.1): splitting a datagram into records,
//! writing record headers, and the anti-replay window (§4.1.2.6).
//!
//! Records with a Connection ID (RFC 9146: outer type 25, the CID between sequence number and
//! length) are framed here too; their length cannot be parsed without knowing the CID's length,
//! which is the receiver's own choice, so [`records`] is told it.
//!
//! Pure byte handling: protection itself is [`super::crypto`]. A datagram may carry several
//! records; a record whose header is unreadable ends the datagram (its length cannot be
//! trusted), while a record that fails later checks is dropped alone, as §4.1.2.7 asks.

pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;
/// RFC 9146 `tls12_cid`: a protected record with a Connection ID.
pub const TLS12_CID: u8 = super::crypto::TLS12_CID;

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
    /// The Connection ID of a [`TLS12_CID`] record, empty for others.
    pub cid: &'a [u8],
    pub fragment: &'a [u8],
}

impl Record<'_> {
    /// The 64-bit `epoch || seq` used as MAC/AEAD sequence number.
    pub fn epoch_seq(&self) -> u64 {
        ((self.epoch as u64) << 48) | self.seq
    }
}

/// Splits a datagram into its records; stops at the first record whose header does not fit.
/// `cid_len` is the length of the Connection ID [`TLS12_CID`] records carry for this receiver.
pub fn records(datagram: &[u8], cid_len: usize) -> impl Iterator<Item = Record<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let cid_len = if rest.first() == Some(&TLS12_CID) {
            cid_len
        } else {
            0
        };
        let hdr = HEADER_LEN + cid_len;
        if rest.len() < hdr {
            rest = &[];
            return None;
        }
        let len = u16::from_be_bytes([rest[hdr - 2], rest[hdr - 1]]) as usize;
        if rest.len() < hdr + len {
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
            cid: &rest[11..11 + cid_len],
            fragment: &rest[hdr..hdr + len],
        };
        rest = &rest[hdr + len..];
        Some(r)
    })
}

/// The Connection ID of the first record of a datagram, if it is a [`TLS12_CID`] record whose
/// header holds `cid_len` bytes of it: how the event loop routes a device whose address changed.
pub fn first_cid(datagram: &[u8], cid_len: usize) -> Option<&[u8]> {
    (datagram.first() == Some(&TLS12_CID) && datagram.len() >= HEADER_LEN + cid_len)
        .then(|| &datagram[11..11 + cid_len])
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
/// appended; with the peer's Connection ID `cid`, a [`TLS12_CID`] header carrying it (`ctype`
/// then travels inside, see [`super::crypto::seal`]). Returns where the length field is.
pub fn begin_record(
    out: &mut Vec<u8>,
    ctype: u8,
    epoch: u16,
    seq: u64,
    cid: Option<&[u8]>,
) -> usize {
    out.push(if cid.is_some() { TLS12_CID } else { ctype });
    out.extend_from_slice(&VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
    out.extend_from_slice(cid.unwrap_or_default());
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

pub fn finish_record(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 2) as u16;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
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

    /// Whether `seq` is beyond every number accepted so far (RFC 9146 §6's "newer").
    pub fn is_newest(&self, seq: u64) -> bool {
        seq >= self.top
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
        let rs: Vec<Record> = records(&d, 0).collect();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].ctype, HANDSHAKE);
        assert_eq!(rs[0].seq, 5);
        assert_eq!(rs[0].fragment, &[1, 2]);
        assert_eq!(rs[1].epoch, 1);
        assert_eq!(rs[1].seq, 0x0102_0304_0506);
        assert_eq!(rs[1].epoch_seq(), 0x0001_0102_0304_0506);
        assert_eq!(records(&d[..good - 1], 0).count(), 1);
        assert_eq!(records(&[0u8; 12], 0).count(), 0);
    }

    #[test]
    fn records_with_a_connection_id_are_framed_by_the_receivers_cid_length() {
        let mut d = Vec::new();
        let at = begin_record(&mut d, APPLICATION_DATA, 1, 3, Some(&[9, 8, 7, 6]));
        d.extend_from_slice(&[1, 2, 3]);
        finish_record(&mut d, at);
        let at = begin_record(&mut d, APPLICATION_DATA, 1, 4, None);
        d.push(5);
        finish_record(&mut d, at);
        assert_eq!(first_cid(&d, 4), Some(&[9u8, 8, 7, 6][..]));
        let rs: Vec<Record> = records(&d, 4).collect();
        assert_eq!(rs.len(), 2);
        assert_eq!(
            (rs[0].ctype, rs[0].seq, rs[0].cid),
            (TLS12_CID, 3, &[9u8, 8, 7, 6][..])
        );
        assert_eq!(rs[0].fragment, &[1, 2, 3]);
        assert_eq!(
            (rs[1].ctype, rs[1].cid, rs[1].fragment),
            (APPLICATION_DATA, &[][..], &[5u8][..])
        );
        // Cut inside the CID: nothing.
        assert_eq!(records(&d[..14], 4).count(), 0);
        assert_eq!(first_cid(&d[..16], 4), None);
        assert_eq!(first_cid(&d[17..], 4), None);
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
