//! A DTLS 1.2 client (PSK, certificate or raw public key), sans-IO: the other end of [`super::server`] for the gateway's own
//! tests and for `lwm2m-loadtest`, which simulates DTLS devices with it. Interoperability is
//! shown against real clients (libcoap, aiocoap/tinydtls) in the integration tests; this one
//! exists because a load generator must be cheap per device.
//!
//! It does the full handshake with a cookie exchange, the abbreviated one for a session it
//! holds ([`Client::resume`]), and protects application data. It does not time out on its
//! own: the caller retransmits [`Client::last_flight`] when an answer is overdue.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::crypto::{self, ct_eq, DirectionKeys, Suite};
use super::ecdhe;
use super::handshake as hs;
use super::record::{self, ReplayWindow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    AwaitServerHello,
    AwaitHelloDone,
    AwaitServerFinished {
        resumed: bool,
    },
    Established,
    /// The server sent this fatal alert, or the handshake went wrong here (0).
    Failed(u8),
}

pub struct Client {
    identity: Vec<u8>,
    psk: Vec<u8>,
    suites: Vec<u16>,
    ems: bool,
    state: State,
    rng: StdRng,
    client_random: [u8; 32],
    server_random: [u8; 32],
    /// The session to resume, and its master secret.
    session: Option<(Vec<u8>, [u8; 48], Suite)>,
    offered_session: Vec<u8>,
    transcript: Sha256,
    msg_seq: u16,
    write_seq0: u64,
    write_seq1: u64,
    suite: Suite,
    master: [u8; 48],
    keys: Option<(DirectionKeys, DirectionKeys)>,
    replay: ReplayWindow,
    flight: Vec<u8>,
    /// The certificate suites: our key and chain (empty: a raw public key).
    cert: Option<ClientCert>,
    server_key: Option<p256::ecdsa::VerifyingKey>,
    server_point: Option<p256::PublicKey>,
    /// RFC 9146: the CID we offer (what the server's records to us carry; `None`: no offer).
    own_cid: Option<Vec<u8>>,
    /// The CID the server gave us for our records to it (empty: none).
    server_cid: Vec<u8>,
}

/// A client's certificate credential.
pub struct ClientCert {
    pub key: p256::ecdsa::SigningKey,
    /// DER, end-entity first; empty to authenticate with the raw public key.
    pub chain: Vec<Vec<u8>>,
    pub spki: Vec<u8>,
}

fn ecdhe_certificate(items: &[&[u8]], raw: bool) -> Vec<u8> {
    let u24 = |n: usize| {
        let b = (n as u32).to_be_bytes();
        [b[1], b[2], b[3]]
    };
    let mut b = Vec::new();
    if raw {
        b.extend_from_slice(&u24(items[0].len()));
        b.extend_from_slice(items[0]);
        return b;
    }
    let total: usize = items.iter().map(|c| 3 + c.len()).sum();
    b.extend_from_slice(&u24(total));
    for c in items {
        b.extend_from_slice(&u24(c.len()));
        b.extend_from_slice(c);
    }
    b
}

fn add(t: &mut Sha256, msg: &[u8]) {
    t.update(msg);
}

impl Client {
    pub fn new(identity: &[u8], psk: &[u8], suites: &[Suite], seed: u64) -> Client {
        Client {
            identity: identity.to_vec(),
            psk: psk.to_vec(),
            suites: suites.iter().map(|s| s.id()).collect(),
            ems: true,
            state: State::Idle,
            rng: StdRng::seed_from_u64(seed),
            client_random: [0; 32],
            server_random: [0; 32],
            session: None,
            offered_session: Vec::new(),
            transcript: Sha256::new(),
            msg_seq: 0,
            write_seq0: 0,
            write_seq1: 0,
            suite: Suite::PskAes128Ccm8,
            master: [0; 48],
            keys: None,
            replay: ReplayWindow::default(),
            flight: Vec::new(),
            cert: None,
            server_key: None,
            server_point: None,
            own_cid: None,
            server_cid: Vec::new(),
        }
    }

    /// Offer a Connection ID (RFC 9146): `own` is what the server's records to us are to carry
    /// (empty: we only want to send with the server's).
    pub fn with_connection_id(mut self, own: &[u8]) -> Client {
        self.own_cid = Some(own.to_vec());
        self
    }

    /// The CID the server gave us, which our records carry (once its ServerHello arrived).
    pub fn connection_id(&self) -> Option<&[u8]> {
        (!self.server_cid.is_empty()).then_some(&self.server_cid[..])
    }

    /// The CID our records carry, if any.
    fn send_cid(&self) -> Option<&[u8]> {
        (!self.server_cid.is_empty()).then_some(&self.server_cid[..])
    }

    /// A client of the ECDHE_ECDSA `suites` that authenticates with `cert` (a raw public key
    /// when its chain is empty, asking the server for its raw key too).
    pub fn with_certificate(cert: ClientCert, suites: &[Suite], seed: u64) -> Client {
        let mut c = Client::new(b"", b"", suites, seed);
        c.cert = Some(cert);
        c
    }

    /// Offer (or not) extended_master_secret.
    pub fn with_extended_master_secret(mut self, on: bool) -> Client {
        self.ems = on;
        self
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// The fatal alert that ended the handshake, if one did.
    pub fn failure(&self) -> Option<u8> {
        match self.state {
            State::Failed(a) => Some(a),
            _ => None,
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// What was last sent, to send again when the answer is late.
    pub fn last_flight(&self) -> &[u8] {
        &self.flight
    }

    /// Starts a full handshake: the first ClientHello.
    pub fn connect(&mut self) -> Vec<u8> {
        self.session = None;
        self.start()
    }

    /// Starts an abbreviated handshake for the session established last (a full one if none).
    pub fn resume(&mut self) -> Vec<u8> {
        self.start()
    }

    fn start(&mut self) -> Vec<u8> {
        self.rng.fill_bytes(&mut self.client_random);
        self.offered_session = self
            .session
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_default();
        self.msg_seq = 0;
        self.write_seq0 = 0;
        self.write_seq1 = 0;
        self.replay = ReplayWindow::default();
        self.keys = None;
        self.server_cid.clear();
        self.state = State::AwaitServerHello;
        self.hello(&[])
    }

    fn hello(&mut self, cookie: &[u8]) -> Vec<u8> {
        let body = hs::client_hello(
            &self.client_random,
            &self.offered_session,
            cookie,
            &self.suites,
            self.ems,
            &self.hello_extensions(),
        );
        let mut msg = Vec::new();
        hs::write_message(&mut msg, hs::CLIENT_HELLO, self.msg_seq, &body);
        self.msg_seq += 1;
        self.transcript = Sha256::new();
        add(&mut self.transcript, &msg);
        let mut d = Vec::new();
        record::write_header(&mut d, record::HANDSHAKE, 0, self.write_seq0, msg.len());
        d.extend_from_slice(&msg);
        self.write_seq0 += 1;
        self.flight = d.clone();
        d
    }

    /// The extensions of our ClientHello: the CID offer, and the ECDHE ones when we have a
    /// certificate.
    fn hello_extensions(&self) -> Vec<u8> {
        let mut e = match &self.own_cid {
            Some(own) => hs::connection_id_extension(own),
            None => Vec::new(),
        };
        let Some(cert) = &self.cert else {
            return e;
        };
        for (t, data) in [
            (ecdhe::EXT_SUPPORTED_GROUPS, &[0, 2, 0, 23][..]),
            (ecdhe::EXT_EC_POINT_FORMATS, &[1, 0][..]),
            (ecdhe::EXT_SIGNATURE_ALGORITHMS, &[0, 2, 4, 3][..]),
        ] {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(data.len() as u16).to_be_bytes());
            e.extend_from_slice(data);
        }
        if cert.chain.is_empty() {
            for t in [
                ecdhe::EXT_CLIENT_CERTIFICATE_TYPE,
                ecdhe::EXT_SERVER_CERTIFICATE_TYPE,
            ] {
                e.extend_from_slice(&t.to_be_bytes());
                e.extend_from_slice(&[0, 2, 1, ecdhe::CERT_RAW_PUBLIC_KEY]);
            }
        }
        e
    }

    /// Protects one application datagram (once established).
    pub fn seal(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        let (ck, _) = self.keys.as_ref().filter(|_| self.is_established())?;
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let cid = self.send_cid();
        let mut out =
            Vec::with_capacity(record::HEADER_LEN + 9 + plain.len() + self.suite.overhead());
        let at = record::begin_record(&mut out, record::APPLICATION_DATA, 1, self.write_seq1, cid);
        crypto::seal(
            self.suite,
            ck,
            (1 << 48) | self.write_seq1,
            record::APPLICATION_DATA,
            cid,
            plain,
            iv,
            &mut out,
        );
        record::finish_record(&mut out, at);
        self.write_seq1 += 1;
        Some(out)
    }

    /// A close_notify alert for the server (once established).
    pub fn close(&mut self) -> Option<Vec<u8>> {
        let (ck, _) = self.keys.as_ref().filter(|_| self.is_established())?;
        let mut out = Vec::new();
        let cid = self.send_cid();
        let at = record::begin_record(&mut out, record::ALERT, 1, self.write_seq1, cid);
        crypto::seal(
            self.suite,
            ck,
            (1 << 48) | self.write_seq1,
            record::ALERT,
            cid,
            &[1, 0],
            [0; 16],
            &mut out,
        );
        record::finish_record(&mut out, at);
        self.write_seq1 += 1;
        Some(out)
    }

    /// Handles a datagram from the server; returns the datagram to answer with, if any.
    /// Application data goes to `app`.
    pub fn on_datagram(&mut self, bytes: &[u8], app: &mut dyn FnMut(&[u8])) -> Option<Vec<u8>> {
        let mut reply = None;
        let mut scratch = Vec::new();
        let own_len = self.own_cid.as_ref().map_or(0, Vec::len);
        for rec in record::records(bytes, own_len) {
            match (rec.epoch, rec.ctype) {
                (0, record::HANDSHAKE) => {
                    for (h, body) in hs::messages(rec.fragment) {
                        if let Some(r) = self.on_handshake(h.msg_type, h.message_seq, body) {
                            reply = Some(r);
                        }
                    }
                }
                (0, record::ALERT)
                    if rec.fragment.first() == Some(&2) && !self.is_established() =>
                {
                    self.state = State::Failed(rec.fragment.get(1).copied().unwrap_or(0));
                }
                (1, t) => {
                    let Some((_, sk)) = &self.keys else { continue };
                    if !self.replay.fresh(rec.seq) {
                        continue;
                    }
                    scratch.clear();
                    scratch.extend_from_slice(rec.fragment);
                    let cid = (t == record::TLS12_CID).then_some(rec.cid);
                    let opened =
                        crypto::open(self.suite, sk, rec.epoch_seq(), t, cid, &mut scratch);
                    let Some(r) = opened else {
                        continue;
                    };
                    let (t, plain) = match cid {
                        None => (t, scratch[r].to_vec()),
                        Some(_) => match crypto::inner_plaintext(&scratch[r]) {
                            Some((t, p)) => (t, p.to_vec()),
                            None => continue,
                        },
                    };
                    self.replay.accept(rec.seq);
                    match t {
                        record::HANDSHAKE => {
                            if let Some(r) = self.on_server_finished(&plain) {
                                reply = Some(r);
                            }
                        }
                        record::APPLICATION_DATA if self.is_established() => app(&plain),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        reply
    }

    fn on_handshake(&mut self, t: u8, seq: u16, body: &[u8]) -> Option<Vec<u8>> {
        let mut msg = Vec::new();
        match (self.state, t) {
            (State::AwaitServerHello, hs::HELLO_VERIFY_REQUEST) => {
                let cookie = hs::parse_hello_verify_request(body)?.to_vec();
                Some(self.hello(&cookie))
            }
            (State::AwaitServerHello, hs::SERVER_HELLO) => {
                let sh = hs::parse_server_hello(body)?;
                let suite = Suite::from_id(sh.suite)?;
                hs::write_message(&mut msg, t, seq, body);
                add(&mut self.transcript, &msg);
                self.server_random = sh.random;
                self.suite = suite;
                self.ems = self.ems && sh.extended_master_secret;
                // A CID only when we offered one (an unasked-for one is ignored).
                if self.own_cid.is_some() {
                    self.server_cid = sh.connection_id.unwrap_or_default().to_vec();
                }
                let resumed = match &self.session {
                    Some((id, master, _)) if !id.is_empty() && id[..] == *sh.session_id => {
                        self.master = *master;
                        true
                    }
                    _ => false,
                };
                let session_id = sh.session_id.to_vec();
                if resumed {
                    self.keys = Some(crypto::key_block(
                        suite,
                        &self.master,
                        &self.client_random,
                        &self.server_random,
                    ));
                    self.state = State::AwaitServerFinished { resumed: true };
                } else {
                    self.session = Some((session_id, [0; 48], suite));
                    self.state = State::AwaitHelloDone;
                }
                None
            }
            (State::AwaitHelloDone, ecdhe::CERTIFICATE) => {
                hs::write_message(&mut msg, t, seq, body);
                add(&mut self.transcript, &msg);
                let rpk = self.cert.as_ref().is_some_and(|c| c.chain.is_empty());
                let kind = if rpk {
                    ecdhe::CERT_RAW_PUBLIC_KEY
                } else {
                    ecdhe::CERT_X509
                };
                // The load generator and tests trust the gateway they talk to: the key is
                // taken from its certificate without checking the chain.
                let spki = match ecdhe::parse_certificate(body, kind)? {
                    ecdhe::ClientCredential::RawPublicKey(k) => k,
                    ecdhe::ClientCredential::X509(chain) => {
                        super::x509::subject_public_key_info(chain.first()?)?
                    }
                    ecdhe::ClientCredential::None => return None,
                };
                self.server_key = ecdhe::verifying_key(spki);
                None
            }
            (State::AwaitHelloDone, ecdhe::SERVER_KEY_EXCHANGE) => {
                hs::write_message(&mut msg, t, seq, body);
                add(&mut self.transcript, &msg);
                let key = self.server_key.as_ref()?;
                self.server_point = ecdhe::parse_server_key_exchange(
                    body,
                    key,
                    &self.client_random,
                    &self.server_random,
                );
                if self.server_point.is_none() {
                    self.state = State::Failed(0);
                }
                None
            }
            (State::AwaitHelloDone, ecdhe::CERTIFICATE_REQUEST) => {
                hs::write_message(&mut msg, t, seq, body);
                add(&mut self.transcript, &msg);
                None
            }
            (State::AwaitHelloDone, hs::SERVER_HELLO_DONE) => {
                hs::write_message(&mut msg, t, seq, body);
                add(&mut self.transcript, &msg);
                Some(self.key_exchange())
            }
            _ => None,
        }
    }

    /// Appends one handshake message (its own record) to `flight` and the transcript.
    fn send_message(&mut self, flight: &mut Vec<u8>, t: u8, body: &[u8]) {
        let mut m = Vec::new();
        hs::write_message(&mut m, t, self.msg_seq, body);
        self.msg_seq += 1;
        add(&mut self.transcript, &m);
        record::write_header(flight, record::HANDSHAKE, 0, self.write_seq0, m.len());
        flight.extend_from_slice(&m);
        self.write_seq0 += 1;
    }

    fn key_exchange(&mut self) -> Vec<u8> {
        let mut flight = Vec::new();
        let pm = if self.suite.is_psk() {
            let mut cke = (self.identity.len() as u16).to_be_bytes().to_vec();
            cke.extend_from_slice(&self.identity);
            self.send_message(&mut flight, hs::CLIENT_KEY_EXCHANGE, &cke);
            crypto::psk_premaster(&self.psk)
        } else {
            let (Some(cert), Some(server_point)) = (self.cert.take(), self.server_point.take())
            else {
                self.state = State::Failed(0);
                return Vec::new();
            };
            let body = match cert.chain.is_empty() {
                true => ecdhe_certificate(&[&cert.spki[..]], true),
                false => ecdhe_certificate(
                    &cert.chain.iter().map(|c| &c[..]).collect::<Vec<_>>(),
                    false,
                ),
            };
            self.send_message(&mut flight, ecdhe::CERTIFICATE, &body);
            let secret = p256::ecdh::EphemeralSecret::random(&mut self.rng);
            let point = p256::EncodedPoint::from(secret.public_key());
            let mut cke = vec![point.as_bytes().len() as u8];
            cke.extend_from_slice(point.as_bytes());
            self.send_message(&mut flight, hs::CLIENT_KEY_EXCHANGE, &cke);
            let pm = secret
                .diffie_hellman(&server_point)
                .raw_secret_bytes()
                .to_vec();
            self.derive_master(&pm);
            let hash: [u8; 32] = self.transcript.clone().finalize().into();
            let cv = ecdhe::certificate_verify(&cert.key, &hash);
            self.send_message(&mut flight, ecdhe::CERTIFICATE_VERIFY, &cv);
            self.cert = Some(cert);
            return self.finish_key_exchange(flight);
        };
        self.derive_master(&pm);
        self.finish_key_exchange(flight)
    }

    fn derive_master(&mut self, pm: &[u8]) {
        if self.ems {
            let h: [u8; 32] = self.transcript.clone().finalize().into();
            crypto::prf(pm, b"extended master secret", &[&h], &mut self.master);
        } else {
            crypto::prf(
                pm,
                b"master secret",
                &[&self.client_random, &self.server_random],
                &mut self.master,
            );
        }
    }

    fn finish_key_exchange(&mut self, mut flight: Vec<u8>) -> Vec<u8> {
        if let Some(s) = &mut self.session {
            s.1 = self.master;
        }
        self.keys = Some(crypto::key_block(
            self.suite,
            &self.master,
            &self.client_random,
            &self.server_random,
        ));
        self.client_finished(&mut flight);
        self.state = State::AwaitServerFinished { resumed: false };
        self.flight = flight.clone();
        flight
    }

    fn client_finished(&mut self, flight: &mut Vec<u8>) {
        record::write_header(flight, record::CHANGE_CIPHER_SPEC, 0, self.write_seq0, 1);
        flight.push(1);
        self.write_seq0 += 1;
        let hash: [u8; 32] = self.transcript.clone().finalize().into();
        let mut verify = [0u8; 12];
        crypto::prf(&self.master, b"client finished", &[&hash], &mut verify);
        let mut fin = Vec::new();
        hs::write_message(&mut fin, hs::FINISHED, self.msg_seq, &verify);
        self.msg_seq += 1;
        add(&mut self.transcript, &fin);
        let cid = (!self.server_cid.is_empty()).then_some(&self.server_cid[..]);
        let at = record::begin_record(flight, record::HANDSHAKE, 1, self.write_seq1, cid);
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        if let Some((ck, _)) = &self.keys {
            crypto::seal(
                self.suite,
                ck,
                1 << 48,
                record::HANDSHAKE,
                cid,
                &fin,
                iv,
                flight,
            );
        }
        record::finish_record(flight, at);
        self.write_seq1 = 1;
    }

    fn on_server_finished(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        let State::AwaitServerFinished { resumed } = self.state else {
            return None;
        };
        let (h, verify) = hs::messages(plain).next()?;
        if h.msg_type != hs::FINISHED {
            return None;
        }
        let hash: [u8; 32] = self.transcript.clone().finalize().into();
        let mut expected = [0u8; 12];
        crypto::prf(&self.master, b"server finished", &[&hash], &mut expected);
        if !ct_eq(verify, &expected) {
            self.state = State::Failed(0);
            return None;
        }
        self.state = State::Established;
        if resumed {
            let mut fin = Vec::new();
            hs::write_message(&mut fin, hs::FINISHED, h.message_seq, verify);
            add(&mut self.transcript, &fin);
            let mut flight = Vec::new();
            self.client_finished(&mut flight);
            self.flight = flight.clone();
            return Some(flight);
        }
        None
    }
}
