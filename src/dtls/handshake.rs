//! DTLS 1.2 handshake messages (RFC 6347 §4.2, RFC 5246 §7.4): their 12-byte framing, the
//! ClientHello the server must read, and the messages it writes.
//!
//! Parsing never trusts a length: every read is checked and a malformed message is `None`
//! (the caller answers with a `decode_error` alert or drops it). Messages are written whole
//! (never fragmented): the PSK handshake's messages are far below any path MTU.

pub const CLIENT_HELLO: u8 = 1;
pub const SERVER_HELLO: u8 = 2;
pub const HELLO_VERIFY_REQUEST: u8 = 3;
pub const SERVER_HELLO_DONE: u8 = 14;
pub const CLIENT_KEY_EXCHANGE: u8 = 16;
pub const FINISHED: u8 = 20;

pub const HEADER_LEN: usize = 12;

pub const EXT_EXTENDED_MASTER_SECRET: u16 = 23;
pub const EXT_RENEGOTIATION_INFO: u16 = 0xff01;
/// RFC 9146: the CID the sender wants to receive records with.
pub const EXT_CONNECTION_ID: u16 = 54;
/// TLS_EMPTY_RENEGOTIATION_INFO_SCSV: a client's way to say it does secure renegotiation.
pub const SCSV_RENEGOTIATION: u16 = 0x00ff;

/// The framing of one handshake message (fragment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u8,
    pub length: u32,
    pub message_seq: u16,
    pub fragment_offset: u32,
    pub fragment_length: u32,
}

impl Header {
    pub fn is_whole(&self) -> bool {
        self.fragment_offset == 0 && self.fragment_length == self.length
    }
}

fn u24(b: &[u8]) -> u32 {
    (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32
}

/// Splits a handshake record's fragment into its messages (fragments), each with its body.
pub fn messages(fragment: &[u8]) -> impl Iterator<Item = (Header, &[u8])> {
    let mut rest = fragment;
    std::iter::from_fn(move || {
        if rest.len() < HEADER_LEN {
            return None;
        }
        let h = Header {
            msg_type: rest[0],
            length: u24(&rest[1..4]),
            message_seq: u16::from_be_bytes([rest[4], rest[5]]),
            fragment_offset: u24(&rest[6..9]),
            fragment_length: u24(&rest[9..12]),
        };
        let n = h.fragment_length as usize;
        if rest.len() < HEADER_LEN + n
            || h.fragment_offset as u64 + h.fragment_length as u64 > h.length as u64
        {
            rest = &[];
            return None;
        }
        let body = &rest[HEADER_LEN..HEADER_LEN + n];
        rest = &rest[HEADER_LEN + n..];
        Some((h, body))
    })
}

/// Appends a whole (unfragmented) handshake message: header then body.
pub fn write_message(out: &mut Vec<u8>, msg_type: u8, message_seq: u16, body: &[u8]) {
    let len = (body.len() as u32).to_be_bytes();
    out.push(msg_type);
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&message_seq.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(body);
}

/// A bounds-checked reader over a message body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// The parts of a ClientHello the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    pub version: [u8; 2],
    pub random: [u8; 32],
    pub session_id: &'a [u8],
    pub cookie: &'a [u8],
    /// Raw list of 2-byte suite ids.
    pub suites: &'a [u8],
    pub extended_master_secret: bool,
    /// `renegotiation_info` extension or the SCSV: answered with an empty `renegotiation_info`.
    pub secure_renegotiation: bool,
    /// What it says about groups, signatures and certificate types (the ECDHE suites).
    pub certs: super::ecdhe::CertOffer,
    /// RFC 9146 `connection_id`: the CID the client wants our records to carry (may be empty:
    /// it supports CIDs, wants none itself).
    pub connection_id: Option<&'a [u8]>,
}

impl ClientHello<'_> {
    pub fn offers(&self, suite: u16) -> bool {
        self.suites
            .chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) == suite)
    }
}

pub fn parse_client_hello(body: &[u8]) -> Option<ClientHello<'_>> {
    let mut r = Reader(body);
    let v = r.take(2)?;
    let mut random = [0u8; 32];
    random.copy_from_slice(r.take(32)?);
    let session_id = r.vec8()?;
    let cookie = r.vec8()?;
    let suites = r.vec16()?;
    let compression = r.vec8()?;
    if session_id.len() > 32 || suites.len() % 2 != 0 || !compression.contains(&0) {
        return None;
    }
    let mut ch = ClientHello {
        version: [v[0], v[1]],
        random,
        session_id,
        cookie,
        suites,
        extended_master_secret: false,
        secure_renegotiation: false,
        certs: super::ecdhe::CertOffer::new(),
        connection_id: None,
    };
    ch.secure_renegotiation = ch.offers(SCSV_RENEGOTIATION);
    if !r.0.is_empty() {
        let mut ext = Reader(r.vec16()?);
        while !ext.0.is_empty() {
            let t = ext.u16()?;
            let data = ext.vec16()?;
            match t {
                EXT_EXTENDED_MASTER_SECRET => ch.extended_master_secret = true,
                // An initial handshake carries an empty renegotiated_connection.
                EXT_RENEGOTIATION_INFO => ch.secure_renegotiation |= data == [0],
                EXT_CONNECTION_ID => ch.connection_id = parse_connection_id(data),
                _ => ch.certs.extension(t, data),
            }
        }
    }
    Some(ch)
}

/// The body of a `connection_id` extension: one `cid<0..2^8-1>`, nothing after it.
fn parse_connection_id(data: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(data);
    let cid = r.vec8()?;
    r.0.is_empty().then_some(cid)
}

/// A whole `connection_id` extension (type, length, body), to append to a hello's extensions.
pub fn connection_id_extension(cid: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(5 + cid.len());
    b.extend_from_slice(&EXT_CONNECTION_ID.to_be_bytes());
    b.extend_from_slice(&(cid.len() as u16 + 1).to_be_bytes());
    b.push(cid.len() as u8);
    b.extend_from_slice(cid);
    b
}

/// The HelloVerifyRequest body: DTLS 1.0's version (RFC 6347 §4.2.1 advises it) and the cookie.
pub fn hello_verify_request(cookie: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(3 + cookie.len());
    b.extend_from_slice(&[0xfe, 0xff]);
    b.push(cookie.len() as u8);
    b.extend_from_slice(cookie);
    b
}

/// The ServerHello body.
/// `extra` is more extensions, already encoded (the ECDHE ones, see `ecdhe`).
pub fn server_hello(
    random: &[u8; 32],
    session_id: &[u8],
    suite: u16,
    extended_master_secret: bool,
    secure_renegotiation: bool,
    extra: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + 32 + 1 + session_id.len() + 3 + 12);
    b.extend_from_slice(&[0xfe, 0xfd]);
    b.extend_from_slice(random);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.extend_from_slice(&suite.to_be_bytes());
    b.push(0);
    let mut ext = Vec::new();
    if extended_master_secret {
        ext.extend_from_slice(&EXT_EXTENDED_MASTER_SECRET.to_be_bytes());
        ext.extend_from_slice(&[0, 0]);
    }
    if secure_renegotiation {
        ext.extend_from_slice(&EXT_RENEGOTIATION_INFO.to_be_bytes());
        ext.extend_from_slice(&[0, 1, 0]);
    }
    ext.extend_from_slice(extra);
    if !ext.is_empty() {
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend_from_slice(&ext);
    }
    b
}

/// The PSK identity of a ClientKeyExchange (RFC 4279 §2).
pub fn parse_psk_client_key_exchange(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    let id = r.vec16()?;
    r.0.is_empty().then_some(id)
}

/// What the client side needs of a ServerHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello<'a> {
    pub random: [u8; 32],
    pub session_id: &'a [u8],
    pub suite: u16,
    pub extended_master_secret: bool,
    /// The server_certificate_type it chose (RFC 7250), if it sent one.
    pub server_cert_type: Option<u8>,
    /// The CID the server wants our records to carry (RFC 9146), if it agreed to CIDs.
    pub connection_id: Option<&'a [u8]>,
}

pub fn parse_server_hello(body: &[u8]) -> Option<ServerHello<'_>> {
    let mut r = Reader(body);
    r.take(2)?;
    let mut random = [0u8; 32];
    random.copy_from_slice(r.take(32)?);
    let session_id = r.vec8()?;
    let suite = r.u16()?;
    r.u8()?;
    let mut sh = ServerHello {
        random,
        session_id,
        suite,
        extended_master_secret: false,
        server_cert_type: None,
        connection_id: None,
    };
    if !r.0.is_empty() {
        let mut ext = Reader(r.vec16()?);
        while !ext.0.is_empty() {
            let t = ext.u16()?;
            let data = ext.vec16()?;
            sh.extended_master_secret |= t == EXT_EXTENDED_MASTER_SECRET;
            if t == super::ecdhe::EXT_SERVER_CERTIFICATE_TYPE {
                sh.server_cert_type = data.first().copied();
            }
            if t == EXT_CONNECTION_ID {
                sh.connection_id = Some(parse_connection_id(data)?);
            }
        }
    }
    Some(sh)
}

/// A ClientHello body, for the client side (tests and the load generator).
/// `extra` is more extensions, already encoded.
pub fn client_hello(
    random: &[u8; 32],
    session_id: &[u8],
    cookie: &[u8],
    suites: &[u16],
    extended_master_secret: bool,
    extra: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0xfe, 0xfd]);
    b.extend_from_slice(random);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.push(cookie.len() as u8);
    b.extend_from_slice(cookie);
    b.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        b.extend_from_slice(&s.to_be_bytes());
    }
    b.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    if extended_master_secret {
        ext.extend_from_slice(&EXT_EXTENDED_MASTER_SECRET.to_be_bytes());
        ext.extend_from_slice(&[0, 0]);
    }
    ext.extend_from_slice(&EXT_RENEGOTIATION_INFO.to_be_bytes());
    ext.extend_from_slice(&[0, 1, 0]);
    ext.extend_from_slice(extra);
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    b
}

pub fn parse_hello_verify_request(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    r.take(2)?;
    r.vec8()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_round_trips_and_every_truncation_is_refused() {
        let body = client_hello(&[5; 32], &[1, 2], &[9; 16], &[0xC0A8, 0x00AE], true, &[]);
        let ch = parse_client_hello(&body).unwrap();
        assert_eq!(ch.random, [5; 32]);
        assert_eq!(ch.session_id, &[1, 2]);
        assert_eq!(ch.cookie, &[9; 16]);
        assert!(ch.offers(0xC0A8) && ch.offers(0x00AE) && !ch.offers(0xC0AE));
        assert!(ch.extended_master_secret && ch.secure_renegotiation);
        for n in 0..body.len() {
            // A cut inside the extensions block is a bad length, anywhere else a short read.
            assert!(
                parse_client_hello(&body[..n]).is_none() || n == 2 + 32 + 3 + 1 + 16 + 2 + 4 + 2,
                "{n}"
            );
        }
    }

    #[test]
    fn framing_splits_messages_and_rejects_fragments_past_their_message() {
        let mut f = Vec::new();
        write_message(&mut f, SERVER_HELLO, 1, &[1, 2, 3]);
        write_message(&mut f, SERVER_HELLO_DONE, 2, &[]);
        let m: Vec<_> = messages(&f).collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0.msg_type, SERVER_HELLO);
        assert!(m[0].0.is_whole());
        assert_eq!(m[0].1, &[1, 2, 3]);
        assert_eq!(m[1].0.message_seq, 2);
        // fragment_offset + fragment_length beyond length
        let mut bad = f.clone();
        bad[8] = 2;
        assert_eq!(messages(&bad).count(), 0);
    }

    #[test]
    fn the_connection_id_extension_round_trips_in_both_hellos() {
        let ext = connection_id_extension(&[]);
        assert_eq!(ext, [0, 54, 0, 1, 0]);
        let body = client_hello(&[5; 32], &[], &[], &[0xC0A8], false, &ext);
        assert_eq!(
            parse_client_hello(&body).unwrap().connection_id,
            Some(&[][..])
        );
        let body = client_hello(&[5; 32], &[], &[], &[0xC0A8], false, &[]);
        assert_eq!(parse_client_hello(&body).unwrap().connection_id, None);
        // A body that is not exactly one cid<0..255> is no offer.
        let bad = [0, 54, 0, 2, 3, 1];
        let body = client_hello(&[5; 32], &[], &[], &[0xC0A8], false, &bad);
        assert_eq!(parse_client_hello(&body).unwrap().connection_id, None);
        let b = server_hello(
            &[3; 32],
            &[7; 16],
            0xC0A8,
            false,
            false,
            &connection_id_extension(&[1, 2, 3]),
        );
        assert_eq!(
            parse_server_hello(&b).unwrap().connection_id,
            Some(&[1u8, 2, 3][..])
        );
    }

    #[test]
    fn server_hello_round_trips() {
        let b = server_hello(&[3; 32], &[7; 16], 0xC0A8, true, true, &[]);
        let sh = parse_server_hello(&b).unwrap();
        assert_eq!(sh.suite, 0xC0A8);
        assert_eq!(sh.session_id, &[7; 16]);
        assert!(sh.extended_master_secret);
        assert_eq!(
            parse_psk_client_key_exchange(&[0, 2, b'i', b'd']),
            Some(&b"id"[..])
        );
        assert_eq!(parse_psk_client_key_exchange(&[0, 3, b'i', b'd']), None);
    }
}
