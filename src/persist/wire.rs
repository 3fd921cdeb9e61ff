//! Bytes of the durable state: [`Writer`] and [`Reader`] for values, [`Durable`] for the types
//! that persist themselves, records framed as `len: u32 LE | crc32: u32 LE | payload`, and a
//! file [`Header`].
//!
//! Contract: every `Reader` method returns `None` instead of reading past its input or building
//! a value out of range (a string that is not UTF-8, a length beyond what is left); [`records`]
//! yields whole, checksummed payloads and stops at the first that is not, reporting where.

use std::fmt;

/// A value that writes itself to and reads itself from the durable state.
pub trait Durable: Sized {
    fn put(&self, w: &mut Writer);
    /// `None`: the bytes do not hold a valid value (the record is dropped).
    fn take(r: &mut Reader<'_>) -> Option<Self>;
}

#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    /// LEB128.
    pub fn uint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(b);
                return;
            }
            self.buf.push(b | 0x80);
        }
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.uint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// 0 for `None`, else 1 and the value.
    pub fn opt<T>(&mut self, v: Option<T>, put: impl FnOnce(&mut Writer, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
        }
    }

    pub fn put<T: Durable>(&mut self, v: &T) {
        v.put(self);
    }

    /// A count, then each item.
    pub fn list<T>(&mut self, items: &[T], mut put: impl FnMut(&mut Writer, &T)) {
        self.uint(items.len() as u64);
        for i in items {
            put(self, i);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { rest: b }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn take_slice(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Some(a)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take_slice(1)?[0])
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    pub fn uint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may hold only the top bit.
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn u16(&mut self) -> Option<u16> {
        u16::try_from(self.uint()?).ok()
    }

    pub fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.uint()?).ok()
    }

    /// A length that cannot be more than what is left: lengths are never trusted to allocate.
    pub fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.uint()?).ok()?;
        (n <= self.rest.len()).then_some(n)
    }

    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take_slice(n)
    }

    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    pub fn opt<T>(&mut self, take: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => take(self).map(Some),
            _ => None,
        }
    }

    pub fn take<T: Durable>(&mut self) -> Option<T> {
        T::take(self)
    }

    /// A count, then that many items; the count is bounded by the bytes left (every item takes
    /// at least one byte), so a forged count cannot make it allocate.
    pub fn list<T>(
        &mut self,
        mut take: impl FnMut(&mut Reader<'a>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(take(self)?);
        }
        Some(v)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for b in data {
        c = TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The largest record payload accepted on reading (a registration with its observations and
/// queued commands is a few KiB; a length beyond this is corruption, not data).
pub const MAX_RECORD: usize = 16 << 20;

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// How a sequence of records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Every byte was whole records.
    Clean,
    /// A record was cut short (a crash while appending) at this offset: `dropped` bytes follow.
    Truncated { at: usize, dropped: usize },
    /// A record's checksum or length is wrong at this offset: `dropped` bytes from there.
    Corrupt { at: usize, dropped: usize },
}

/// The payloads of the records in `b`, in order, until the first one that is not whole and
/// checksummed; then the [`Tail`].
pub fn records(b: &[u8]) -> (Vec<&[u8]>, Tail) {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = &b[at..];
        if rest.is_empty() {
            return (out, Tail::Clean);
        }
        let dropped = rest.len();
        if rest.len() < 8 {
            return (out, Tail::Truncated { at, dropped });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            return (out, Tail::Corrupt { at, dropped });
        }
        let Some(payload) = rest.get(8..8 + len) else {
            return (out, Tail::Truncated { at, dropped });
        };
        if crc32(payload) != crc {
            return (out, Tail::Corrupt { at, dropped });
        }
        out.push(payload);
        at += 8 + len;
    }
}

/// The first bytes of every state file.
pub const MAGIC: [u8; 8] = *b"LWM2MGWS";
/// Bumped when the layout changes; older formats are read by name here or refused.
pub const FORMAT_VERSION: u16 = 1;

/// What kind of file, written by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A shard's whole image.
    Snapshot = 1,
    /// Changes since a snapshot, appended.
    Journal = 2,
    /// A worker's DTLS sessions (keys included).
    DtlsSessions = 3,
}

/// A state file's header: magic, format version, kind, the shard that wrote it and how many
/// shards there were (identifiers carry the shard number, so an image belongs to its shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FileKind,
    pub shard: u8,
    pub shards: u16,
}

pub const HEADER_LEN: usize = 8 + 2 + 1 + 1 + 2;

impl Header {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(self.kind as u8);
        out.push(self.shard);
        out.extend_from_slice(&self.shards.to_le_bytes());
    }

    /// The header and what follows it.
    pub fn read(b: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
        if b.len() < HEADER_LEN {
            return Err(HeaderError::Short);
        }
        if b[..8] != MAGIC {
            return Err(HeaderError::NotAStateFile);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let kind = match b[10] {
            1 => FileKind::Snapshot,
            2 => FileKind::Journal,
            3 => FileKind::DtlsSessions,
            k => return Err(HeaderError::Kind(k)),
        };
        let h = Header {
            kind,
            shard: b[11],
            shards: u16::from_le_bytes([b[12], b[13]]),
        };
        Ok((h, &b[HEADER_LEN..]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    NotAStateFile,
    Version(u16),
    Kind(u8),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short => f.write_str("too short for a state file header"),
            HeaderError::NotAStateFile => f.write_str("not a gateway state file (bad magic)"),
            HeaderError::Version(v) => write!(
                f,
                "state format version {v}, this gateway reads version {FORMAT_VERSION}"
            ),
            HeaderError::Kind(k) => write!(f, "unknown state file kind {k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_bytes_and_options_round_trip_and_truncations_are_none() {
        let mut w = Writer::new();
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            w.uint(v);
        }
        w.str("héllo");
        w.opt(Some(7u64), |w, v| w.uint(v));
        w.opt(None::<u64>, |w, v| w.uint(v));
        w.list(&[1u64, 2, 3], |w, v| w.uint(*v));
        let b = w.buf.clone();
        let mut r = Reader::new(&b);
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            assert_eq!(r.uint(), Some(v));
        }
        assert_eq!(r.str(), Some("héllo"));
        assert_eq!(r.opt(|r| r.uint()), Some(Some(7)));
        assert_eq!(r.opt(|r| r.uint()), Some(None));
        assert_eq!(r.list(|r| r.uint()), Some(vec![1, 2, 3]));
        assert!(r.is_empty());
        // Every cut is a None somewhere, never a panic.
        for n in 0..b.len() {
            let mut r = Reader::new(&b[..n]);
            let mut ok = true;
            for _ in 0..7 {
                ok &= r.uint().is_some();
            }
            ok &= r.str().is_some();
            ok &= r.opt(|r| r.uint()).is_some();
            ok &= r.opt(|r| r.uint()).is_some();
            ok &= r.list(|r| r.uint()).is_some();
            assert!(!ok, "cut at {n} read as whole");
        }
        // An 11-byte or overflowing varint, a forged length, bad UTF-8.
        assert_eq!(Reader::new(&[0xff; 11]).uint(), None);
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).uint(),
            None
        );
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0x0f, 1, 2]).bytes(), None);
        assert_eq!(Reader::new(&[2, 0xc3, 0x28]).str(), None);
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0x0f]).list(|r| r.u8()),
            None
        );
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn records_stop_at_the_first_cut_or_corrupt_one() {
        let mut b = Vec::new();
        frame(&mut b, b"one");
        frame(&mut b, b"");
        frame(&mut b, b"three");
        let whole = b.len();
        let (r, t) = records(&b);
        assert_eq!((r, t), (vec![&b"one"[..], b"", b"three"], Tail::Clean));
        let (r, t) = records(&b[..whole - 1]);
        assert_eq!(r.len(), 2);
        assert_eq!(
            t,
            Tail::Truncated {
                at: 19,
                dropped: 12
            }
        );
        let mut bad = b.clone();
        bad[9] ^= 1;
        let (r, t) = records(&bad);
        assert!(r.is_empty());
        assert_eq!(
            t,
            Tail::Corrupt {
                at: 0,
                dropped: whole
            }
        );
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(records(&huge).1, Tail::Corrupt { at: 0, dropped: 8 });
    }

    #[test]
    fn the_header_names_what_is_wrong() {
        let h = Header {
            kind: FileKind::Journal,
            shard: 3,
            shards: 4,
        };
        let mut b = Vec::new();
        h.write(&mut b);
        b.extend_from_slice(b"rest");
        assert_eq!(Header::read(&b), Ok((h, &b"rest"[..])));
        assert_eq!(Header::read(&b[..5]), Err(HeaderError::Short));
        assert_eq!(
            Header::read(b"PK\x03\x04 zip file.."),
            Err(HeaderError::NotAStateFile)
        );
        let mut v2 = b.clone();
        v2[8] = 2;
        assert_eq!(Header::read(&v2), Err(HeaderError::Version(2)));
        assert!(HeaderError::Version(2).to_string().contains("version 2"));
        let mut k = b.clone();
        k[10] = 9;
        assert_eq!(Header::read(&k), Err(HeaderError::Kind(9)));
    }
}
