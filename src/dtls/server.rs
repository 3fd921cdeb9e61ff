//! The DTLS 1.2 server of one worker, sans-IO: every peer's handshake and session, keyed by
//! (listener, address). Driven by [`Server::on_datagram`], [`Server::seal`] and
//! [`Server::on_timeout`], each taking `now` from the caller; what it wants sent comes back in
//! an [`Output`], decrypted application data through a callback.
//!
//! The handshake (RFC 6347 §4.2, RFC 4279 PSK):
//! - a ClientHello without a valid cookie gets a stateless HelloVerifyRequest ([`super::cookie`]);
//! - a ClientHello with one starts a handshake, if fewer than `max_handshakes` are in progress and
//!   fewer than `max_sessions` are established: a full one (ServerHello, ServerHelloDone), or an
//!   abbreviated one when it names a session this server still holds (ServerHello, CCS, Finished);
//! - the client's ClientKeyExchange names its PSK identity; an identity the key store does not
//!   know is not told apart from a wrong key: both end in a `decrypt_error` alert after Finished;
//! - the client's Finished, once verified, makes the handshake a [`Session`] (with
//!   extended_master_secret when the client offers it, RFC 7627).
//!
//! Connection ID (RFC 9146): a client that offers the `connection_id` extension gets a random
//! [`CID_LEN`]-byte CID of ours in the ServerHello (fresh for every handshake, resumed ones too),
//! and we send with the CID it asked for (usually none). A record carrying our CID finds its
//! session by it, wherever it came from: when it authenticates, carries application data and is
//! newer than anything received before (§6), the session moves to the new address and the
//! application callback is told where it came from, so the registration can follow. Sessions
//! are keyed by address all the same: most devices send no CID, and handshakes need the address.
//!
//! Retransmission follows §4.2.4 loosely: a peer that sends its previous flight again gets ours
//! again (the server keeps its last flight until the client's first application record), and
//! the abbreviated handshake, where the server's flight is not the last, is also retransmitted on
//! a doubling timer. A new handshake on a peer that has a session leaves the session in place
//! until the new one completes (§4.2.8). Records that fail authentication, replays and
//! anything unexpected are dropped silently and counted ([`Stats`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::cookie::CookieJar;
use super::crypto::{self, ct_eq, DirectionKeys, Suite};
use super::ecdhe::{self, ClientCredential, ServerCert};
use super::handshake as hs;
use super::record::{self, ReplayWindow};

/// (listener index, peer address): one DTLS association.
pub type ConnKey = (u16, SocketAddr);

/// Where decrypted application data goes: the session it arrived on, the key that session had
/// before if it just moved (a Connection ID from a new address), the plaintext.
pub type AppData<'a> = dyn FnMut(&Session, Option<ConnKey>, &[u8]) + 'a;

/// The length of the Connection IDs this server hands out: a constant, so records can be
/// framed (and the event loop can route them) without a lookup first.
pub const CID_LEN: usize = 8;

/// Who the server trusts: PSK keys by identity, and (for the ECDHE suites) the check of a
/// client's certificate chain or raw public key. The defaults trust no certificate at all.
pub trait Authenticator {
    /// The key of a PSK identity (`None`: unknown identity).
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>>;

    /// Whether an X.509 chain (end-entity first, DER) is valid now and leads to a trust anchor.
    fn verify_chain(&self, _chain: &[&[u8]]) -> bool {
        false
    }

    /// Whether a raw public key (subjectPublicKeyInfo, DER) is a known device's.
    fn accept_raw_key(&self, _spki: &[u8]) -> bool {
        false
    }
}

/// How the peer of a session authenticated; its identity is the PSK identity, the certificate's
/// subject common name, or the raw public key (subjectPublicKeyInfo DER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerAuth {
    Psk,
    X509,
    RawPublicKey,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// In order of preference.
    pub suites: Vec<Suite>,
    pub max_handshakes: usize,
    pub max_sessions: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub cookie_period: Duration,
    /// First retransmission of a flight the peer does not answer; doubles up to 3 times.
    pub retransmit: Duration,
    /// Our key and certificate: enables the ECDHE_ECDSA suites.
    pub certificate: Option<Arc<ServerCert>>,
    /// Client certificates may be X.509 (an [`Authenticator::verify_chain`] exists).
    pub client_x509: bool,
    /// Client certificates may be raw public keys.
    pub client_rpk: bool,
    /// Agree to Connection IDs (RFC 9146) with clients that offer them.
    pub connection_id: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            suites: vec![Suite::PskAes128Ccm8, Suite::PskAes128CbcSha256],
            max_handshakes: 10_000,
            max_sessions: 1_000_000,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(24 * 3600),
            cookie_period: Duration::from_secs(60),
            retransmit: Duration::from_secs(1),
            certificate: None,
            client_x509: false,
            client_rpk: false,
            connection_id: true,
        }
    }
}

/// An established association: the negotiated keys and what is needed to resume it.
pub struct Session {
    pub suite: Suite,
    read: DirectionKeys,
    write: DirectionKeys,
    write_seq: u64,
    replay: ReplayWindow,
    master: [u8; 48],
    session_id: [u8; 16],
    ems: bool,
    /// What the peer proved: PSK identity, certificate common name, or raw public key.
    pub identity: Box<[u8]>,
    pub auth: PeerAuth,
    /// Our last flight, until the peer's first application record shows it arrived.
    last_flight: Option<Box<[u8]>>,
    last_seen: Instant,
    /// The caller's tag for this session (the gateway keeps the interned identity here).
    pub tag: u32,
    /// Our Connection ID, the one the peer's records carry (0: none agreed).
    cid: u64,
    /// The peer's, which ours carry (empty: none).
    peer_cid: Box<[u8]>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("suite", &self.suite)
            .field("write_seq", &self.write_seq)
            .finish_non_exhaustive()
    }
}

/// Version of [`Session::to_bytes`]'s layout.
const SESSION_FORMAT: u8 = 2;
/// Sequence numbers skipped by a restored session (see [`Session::from_bytes`]).
const RESTORE_SEQ_GAP: u64 = 1 << 24;

impl Session {
    /// Our Connection ID for this session, if one was agreed.
    pub fn connection_id(&self) -> Option<u64> {
        (self.cid != 0).then_some(self.cid)
    }

    /// The session's whole state (keys, sequence numbers, replay window, master secret for
    /// resumption, identity) as bytes, so that a restart need not cost every device a new
    /// handshake. The bytes hold key material: whoever stores them must protect them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256 + self.identity.len());
        b.push(SESSION_FORMAT);
        b.extend_from_slice(&self.suite.id().to_be_bytes());
        for k in [&self.read, &self.write] {
            b.extend_from_slice(&k.key);
            b.extend_from_slice(&k.salt);
            b.extend_from_slice(&k.mac);
        }
        b.extend_from_slice(&self.write_seq.to_be_bytes());
        let (top, bits) = self.replay.to_parts();
        b.extend_from_slice(&top.to_be_bytes());
        b.extend_from_slice(&bits.to_be_bytes());
        b.extend_from_slice(&self.master);
        b.extend_from_slice(&self.session_id);
        b.push(self.ems as u8);
        b.push(match self.auth {
            PeerAuth::Psk => 0,
            PeerAuth::X509 => 1,
            PeerAuth::RawPublicKey => 2,
        });
        b.extend_from_slice(&self.tag.to_be_bytes());
        b.extend_from_slice(&self.cid.to_be_bytes());
        b.push(self.peer_cid.len() as u8);
        b.extend_from_slice(&self.peer_cid);
        b.extend_from_slice(&(self.identity.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.identity);
        b
    }

    /// A session back from [`Session::to_bytes`]; `None` for bytes of another layout or cut
    /// short. It counts as seen at `now`.
    pub fn from_bytes(b: &[u8], now: Instant) -> Option<Session> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let r = b.get(at..at + n)?;
            at += n;
            Some(r)
        };
        let arr = |s: &[u8]| -> [u8; 8] { s.try_into().unwrap_or([0; 8]) };
        if take(1)? != [SESSION_FORMAT] {
            return None;
        }
        let id = take(2)?;
        let suite = Suite::from_id(u16::from_be_bytes([id[0], id[1]]))?;
        let mut keys = Vec::with_capacity(2);
        for _ in 0..2 {
            let mut k = DirectionKeys {
                key: [0; 16],
                salt: [0; 4],
                mac: [0; 32],
            };
            k.key.copy_from_slice(take(16)?);
            k.salt.copy_from_slice(take(4)?);
            k.mac.copy_from_slice(take(32)?);
            keys.push(k);
        }
        let write_seq = u64::from_be_bytes(arr(take(8)?));
        let top = u64::from_be_bytes(arr(take(8)?));
        let bits = u64::from_be_bytes(arr(take(8)?));
        let mut master = [0u8; 48];
        master.copy_from_slice(take(48)?);
        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(take(16)?);
        let ems = take(1)?[0] != 0;
        let auth = match take(1)?[0] {
            0 => PeerAuth::Psk,
            1 => PeerAuth::X509,
            2 => PeerAuth::RawPublicKey,
            _ => return None,
        };
        let t = take(4)?;
        let tag = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        let cid = u64::from_be_bytes(arr(take(8)?));
        let n = take(1)?[0] as usize;
        let peer_cid: Box<[u8]> = take(n)?.into();
        let n = take(2)?;
        let identity: Box<[u8]> = take(u16::from_be_bytes([n[0], n[1]]) as usize)?.into();
        if at != b.len() {
            return None;
        }
        let write = keys.pop()?;
        let read = keys.pop()?;
        Some(Session {
            suite,
            read,
            write,
            // The bytes may be older than the last record sent (a periodic snapshot and a
            // crash): never send a sequence number twice under the same key (an AEAD nonce
            // reused), so skip well past anything sent since. The peer's replay window only
            // moves forward.
            write_seq: write_seq.checked_add(RESTORE_SEQ_GAP)?,
            replay: ReplayWindow::from_parts(top, bits),
            master,
            session_id,
            ems,
            identity,
            auth,
            last_flight: None,
            last_seen: now,
            tag,
            cid,
            peer_cid,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Finished did not verify: a wrong key, or an identity the store does not know.
    BadKey,
    /// A certificate chain that does not verify, a raw key nobody knows, a bad signature, or
    /// no certificate at all.
    BadCertificate,
    UnknownIdentity,
    NoCommonSuite,
    Malformed,
    Timeout,
    /// The peer sent a fatal alert.
    Alert(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Established {
        key: ConnKey,
        resumed: bool,
    },
    HandshakeFailed {
        key: ConnKey,
        why: Failure,
    },
    /// The session ended: close_notify or a fatal alert from the peer, or idle.
    Closed {
        key: ConnKey,
        /// Its Connection ID, if it had one (for whoever routes by it).
        connection_id: Option<u64>,
    },
}

/// Counters since the last [`Server::take_stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub hello_verify: u64,
    pub handshakes_started: u64,
    pub established: u64,
    pub resumed: u64,
    pub failed: u64,
    /// ClientHellos refused because `max_handshakes` or `max_sessions` was reached.
    pub refused_busy: u64,
    /// Records that did not authenticate, replays, records for no session, garbage.
    pub bad_records: u64,
    pub app_records: u64,
    /// Sessions that followed their peer to a new address by its Connection ID.
    pub migrated: u64,
}

#[derive(Debug, Default)]
pub struct Output {
    pub transmits: Vec<(ConnKey, Vec<u8>)>,
    pub events: Vec<Event>,
}

/// What an abbreviated handshake takes over from the session it resumes: suite, master secret,
/// session id, identity and how it was proven.
type Resumable = (Suite, [u8; 48], [u8; 16], Box<[u8]>, PeerAuth);

/// What the handshake waits for next.
enum Stage {
    /// Full handshake: ServerHelloDone sent, waiting for ClientKeyExchange.
    KeyExchange,
    /// ECDHE: keys derived, waiting for the client's CertificateVerify.
    CertificateVerify,
    /// Keys derived, waiting for the client's Finished.
    Finished { unknown_identity: bool },
    /// Abbreviated handshake: our Finished sent, waiting for the client's.
    ResumedFinished,
}

struct Handshake {
    stage: Stage,
    suite: Suite,
    client_random: [u8; 32],
    server_random: [u8; 32],
    session_id: [u8; 16],
    ems: bool,
    transcript: Sha256,
    next_recv_seq: u16,
    next_send_seq: u16,
    /// Epoch-0 record sequence for what we send.
    write_seq0: u64,
    master: [u8; 48],
    client_keys: Option<(DirectionKeys, DirectionKeys)>,
    identity: Box<[u8]>,
    auth: PeerAuth,
    /// The ECDHE suites' state.
    ecdhe: Option<Box<Ecdhe>>,
    /// A handshake message arriving in fragments: (message_seq, type, bytes so far).
    reassembly: Option<(u16, u8, Vec<u8>)>,
    /// The Connection IDs agreed: ours (0: none) and the client's.
    cid: u64,
    peer_cid: Box<[u8]>,
    flight: Vec<u8>,
    started: Instant,
    retransmit_at: Option<Instant>,
    retransmits: u8,
}

struct Ecdhe {
    secret: p256::ecdh::EphemeralSecret,
    /// The certificate type agreed for the client.
    client_type: u8,
    /// The client's key, once its Certificate arrived.
    peer_key: Option<p256::ecdsa::VerifyingKey>,
}

pub struct Server {
    cfg: Config,
    handshakes: HashMap<ConnKey, Box<Handshake>>,
    sessions: HashMap<ConnKey, Session>,
    by_session_id: HashMap<[u8; 16], ConnKey>,
    by_cid: HashMap<u64, ConnKey>,
    cookies: CookieJar,
    /// A CSPRNG: server randoms, session ids, cookie secrets, CBC IVs, ECDHE keys.
    rng: StdRng,
    stats: Stats,
    next_sweep: Instant,
    /// The earliest handshake timeout or retransmission (see [`Server::next_deadline`]).
    handshake_deadline: Option<Instant>,
}

const ALERT_FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const HANDSHAKE_FAILURE: u8 = 40;
const DECODE_ERROR: u8 = 50;
const DECRYPT_ERROR: u8 = 51;
const BAD_CERTIFICATE: u8 = 42;
/// The largest handshake message reassembled (a client's certificate chain).
const MAX_HANDSHAKE_MESSAGE: usize = 16 * 1024;

fn transcript_add(t: &mut Sha256, msg_type: u8, seq: u16, body: &[u8]) {
    let mut h = Vec::with_capacity(hs::HEADER_LEN);
    hs::write_message(&mut h, msg_type, seq, &[]);
    let len = (body.len() as u32).to_be_bytes();
    h[1..4].copy_from_slice(&len[1..]);
    h[9..12].copy_from_slice(&len[1..]);
    t.update(&h);
    t.update(body);
}

fn finished(master: &[u8; 48], label: &[u8], t: &Sha256) -> [u8; 12] {
    let hash: [u8; 32] = t.clone().finalize().into();
    let mut v = [0u8; 12];
    crypto::prf(master, label, &[&hash], &mut v);
    v
}

fn plain_record(out: &mut Vec<u8>, ctype: u8, seq: &mut u64, body: &[u8]) {
    record::write_header(out, ctype, 0, *seq, body.len());
    out.extend_from_slice(body);
    *seq += 1;
}

fn alert(level: u8, desc: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(15);
    record::write_header(&mut out, record::ALERT, 0, 0, 2);
    out.extend_from_slice(&[level, desc]);
    out
}

impl Server {
    /// `seed` must come from the OS's entropy in production (tests pass a fixed one).
    pub fn new(cfg: Config, now: Instant, seed: [u8; 32]) -> Server {
        let mut rng = StdRng::from_seed(seed);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Server {
            cookies: CookieJar::new(now, cfg.cookie_period, secret),
            next_sweep: now + cfg.idle_timeout.min(Duration::from_secs(60)),
            cfg,
            handshakes: HashMap::new(),
            sessions: HashMap::new(),
            by_session_id: HashMap::new(),
            by_cid: HashMap::new(),
            rng,
            stats: Stats::default(),
            handshake_deadline: None,
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.len()
    }

    pub fn session(&self, key: &ConnKey) -> Option<&Session> {
        self.sessions.get(key)
    }

    pub fn session_mut(&mut self, key: &ConnKey) -> Option<&mut Session> {
        self.sessions.get_mut(key)
    }

    /// Every session's key (for a sweep over them, e.g. after credentials changed).
    pub fn session_keys(&self) -> Vec<ConnKey> {
        self.sessions.keys().copied().collect()
    }

    /// Records and handshakes that failed since the last [`Server::take_stats`]: what a peer
    /// did wrong (the caller's error-rate limit counts it).
    pub fn failures(&self) -> u64 {
        self.stats.bad_records + self.stats.failed
    }

    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    /// Removes a session (it moves to another worker, or its peer is gone).
    pub fn take_session(&mut self, key: &ConnKey) -> Option<Session> {
        let s = self.sessions.remove(key)?;
        self.forget(key, &s);
        Some(s)
    }

    fn forget(&mut self, key: &ConnKey, s: &Session) {
        if self.by_session_id.get(&s.session_id) == Some(key) {
            self.by_session_id.remove(&s.session_id);
        }
        if s.cid != 0 && self.by_cid.get(&s.cid) == Some(key) {
            self.by_cid.remove(&s.cid);
        }
    }

    /// Adopts a session established elsewhere (another worker of the same gateway).
    pub fn insert_session(&mut self, key: ConnKey, s: Session) {
        self.by_session_id.insert(s.session_id, key);
        if s.cid != 0 {
            self.by_cid.insert(s.cid, key);
        }
        if let Some(old) = self.sessions.insert(key, s) {
            self.forget(&key, &old);
        }
    }

    /// The session moves from `from` to `to` (its peer's address changed).
    fn move_session(&mut self, from: ConnKey, to: ConnKey) {
        if let Some(s) = self.sessions.remove(&from) {
            self.forget(&from, &s);
            self.insert_session(to, s);
            self.stats.migrated += 1;
        }
    }

    /// A fresh Connection ID of ours: random, never 0, not in use here.
    fn new_cid(&mut self) -> u64 {
        loop {
            let c = self.rng.next_u64();
            if c != 0 && !self.by_cid.contains_key(&c) {
                return c;
            }
        }
    }

    /// The earliest moment [`Server::on_timeout`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Kept, not computed: the worker asks every time its queue runs empty, and thousands
        // of handshakes may be in progress. It may be early (a handshake that ended since),
        // never late; `on_timeout` computes it afresh.
        let hs = self
            .handshake_deadline
            .filter(|_| !self.handshakes.is_empty());
        let sweep = (!self.sessions.is_empty()).then_some(self.next_sweep);
        match (hs, sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn earliest_handshake_deadline(&self) -> Option<Instant> {
        self.handshakes
            .values()
            .map(|h| {
                let end = h.started + self.cfg.handshake_timeout;
                h.retransmit_at.map_or(end, |r| r.min(end))
            })
            .min()
    }

    fn expire_handshakes(&mut self, now: Instant, out: &mut Output) {
        let timeout = self.cfg.handshake_timeout;
        let mut expired = Vec::new();
        for (k, h) in self.handshakes.iter_mut() {
            if h.started + timeout <= now {
                expired.push(*k);
            } else if h.retransmit_at.is_some_and(|r| r <= now) {
                out.transmits.push((*k, h.flight.clone()));
                h.retransmits += 1;
                h.retransmit_at =
                    (h.retransmits < 4).then(|| now + self.cfg.retransmit * (1 << h.retransmits));
            }
        }
        for k in expired {
            self.handshakes.remove(&k);
            self.stats.failed += 1;
            out.events.push(Event::HandshakeFailed {
                key: k,
                why: Failure::Timeout,
            });
        }
    }

    /// Expires handshakes, retransmits flights, drops idle sessions.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Output) {
        let rng = &mut self.rng;
        self.cookies.rotate_if_due(now, || {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            s
        });
        // Called after every round of the worker: the handshake table is walked only when
        // something in it is due.
        if self.handshake_deadline.is_some_and(|d| d <= now) {
            self.expire_handshakes(now, out);
            self.handshake_deadline = self.earliest_handshake_deadline();
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.cfg.idle_timeout.min(Duration::from_secs(60));
            let idle = self.cfg.idle_timeout;
            let gone: Vec<ConnKey> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.last_seen + idle <= now)
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                if let Some(s) = self.take_session(&k) {
                    out.events.push(Event::Closed {
                        key: k,
                        connection_id: s.connection_id(),
                    });
                }
            }
        }
    }

    /// Protects one application datagram for the peer; `None` if it has no session.
    pub fn seal(&mut self, key: &ConnKey, plain: &[u8]) -> Option<Vec<u8>> {
        let s = self.sessions.get_mut(key)?;
        let cid = (!s.peer_cid.is_empty()).then_some(&s.peer_cid[..]);
        let mut out = Vec::with_capacity(
            record::HEADER_LEN + s.peer_cid.len() + 1 + plain.len() + s.suite.overhead(),
        );
        let at = record::begin_record(&mut out, record::APPLICATION_DATA, 1, s.write_seq, cid);
        let mut iv = [0u8; 16];
        if s.suite == Suite::PskAes128CbcSha256 {
            self.rng.fill_bytes(&mut iv);
        }
        crypto::seal(
            s.suite,
            &s.write,
            (1 << 48) | s.write_seq,
            record::APPLICATION_DATA,
            cid,
            plain,
            iv,
            &mut out,
        );
        record::finish_record(&mut out, at);
        s.write_seq += 1;
        Some(out)
    }

    /// Handles one datagram from `key`. Decrypted application data goes to `app` with the
    /// session it arrived on, and the key that session had before if it just moved to `key`
    /// (a Connection ID from a new address).
    pub fn on_datagram(
        &mut self,
        now: Instant,
        key: ConnKey,
        bytes: &[u8],
        keys: &dyn Authenticator,
        out: &mut Output,
        app: &mut AppData,
    ) {
        let mut scratch = Vec::new();
        let mut any = false;
        for rec in record::records(bytes, CID_LEN) {
            any = true;
            if rec.version[0] != 0xfe {
                self.stats.bad_records += 1;
                continue;
            }
            if rec.epoch == 0 {
                self.on_plain_record(now, key, &rec, keys, out);
            } else if rec.epoch == 1 {
                self.on_protected_record(now, key, &rec, &mut scratch, out, app);
            } else {
                self.stats.bad_records += 1;
            }
        }
        if !any {
            self.stats.bad_records += 1;
        }
    }

    fn on_plain_record(
        &mut self,
        now: Instant,
        key: ConnKey,
        rec: &record::Record,
        keys: &dyn Authenticator,
        out: &mut Output,
    ) {
        match rec.ctype {
            record::HANDSHAKE => {
                for (h, body) in hs::messages(rec.fragment) {
                    let assembled;
                    let (h, body) = if h.is_whole() {
                        (h, body)
                    } else {
                        match self.reassemble(key, &h, body) {
                            Some(whole) => {
                                assembled = whole;
                                let h = hs::Header {
                                    fragment_offset: 0,
                                    fragment_length: h.length,
                                    ..h
                                };
                                (h, &assembled[..])
                            }
                            None => continue,
                        }
                    };
                    match h.msg_type {
                        hs::CLIENT_HELLO => self.on_client_hello(now, key, rec, &h, body, out),
                        hs::CLIENT_KEY_EXCHANGE => self.on_key_exchange(key, &h, body, keys, out),
                        ecdhe::CERTIFICATE => self.on_certificate(key, &h, body, keys, out),
                        ecdhe::CERTIFICATE_VERIFY => self.on_certificate_verify(key, &h, body, out),
                        _ => self.stats.bad_records += 1,
                    }
                }
            }
            record::CHANGE_CIPHER_SPEC => {
                // The keys switch by epoch number; the CCS itself carries nothing we need.
                if rec.fragment != [1] {
                    self.stats.bad_records += 1;
                }
            }
            record::ALERT => {
                // An unauthenticated alert may end a handshake, never a session.
                if rec.fragment.first() == Some(&ALERT_FATAL)
                    && self.handshakes.remove(&key).is_some()
                {
                    self.stats.failed += 1;
                    out.events.push(Event::HandshakeFailed {
                        key,
                        why: Failure::Alert(rec.fragment.get(1).copied().unwrap_or(0)),
                    });
                }
            }
            _ => self.stats.bad_records += 1,
        }
    }

    /// Collects the fragments of a handshake message in order (clients fragment to their MTU,
    /// libcoap cuts a CertificateVerify at 63 bytes); the whole message once complete. An
    /// out-of-order fragment is dropped: the peer retransmits its flight. A ClientHello is never
    /// reassembled (there is no state before the cookie).
    fn reassemble(&mut self, key: ConnKey, h: &hs::Header, body: &[u8]) -> Option<Vec<u8>> {
        let Some(state) = self.handshakes.get_mut(&key) else {
            self.stats.bad_records += 1;
            return None;
        };
        if h.length as usize > MAX_HANDSHAKE_MESSAGE || h.message_seq != state.next_recv_seq {
            self.stats.bad_records += 1;
            return None;
        }
        let r = match &mut state.reassembly {
            Some(r) if r.0 == h.message_seq && r.1 == h.msg_type => r,
            r => {
                if h.fragment_offset != 0 {
                    self.stats.bad_records += 1;
                    return None;
                }
                r.insert((
                    h.message_seq,
                    h.msg_type,
                    Vec::with_capacity(h.length as usize),
                ))
            }
        };
        if h.fragment_offset as usize != r.2.len() {
            // A retransmitted or reordered piece: what we have stays, this one is dropped.
            return None;
        }
        r.2.extend_from_slice(body);
        if r.2.len() < h.length as usize {
            return None;
        }
        state.reassembly.take().map(|r| r.2)
    }

    fn on_client_hello(
        &mut self,
        now: Instant,
        key: ConnKey,
        rec: &record::Record,
        h: &hs::Header,
        body: &[u8],
        out: &mut Output,
    ) {
        let Some(ch) = hs::parse_client_hello(body) else {
            self.stats.bad_records += 1;
            return;
        };
        if let Some(existing) = self.handshakes.get(&key) {
            if existing.client_random == ch.random {
                // The peer did not get our flight: send it again.
                out.transmits.push((key, existing.flight.clone()));
                return;
            }
        }
        if !self.cookies.verify(key.0, key.1, &ch) {
            let cookie = self.cookies.issue(key.0, key.1, &ch);
            let mut msg = Vec::new();
            hs::write_message(
                &mut msg,
                hs::HELLO_VERIFY_REQUEST,
                h.message_seq,
                &hs::hello_verify_request(&cookie),
            );
            let mut d = Vec::with_capacity(record::HEADER_LEN + msg.len());
            let mut seq = rec.seq;
            plain_record(&mut d, record::HANDSHAKE, &mut seq, &msg);
            out.transmits.push((key, d));
            self.stats.hello_verify += 1;
            return;
        }
        if self.handshakes.len() >= self.cfg.max_handshakes
            || (self.sessions.len() >= self.cfg.max_sessions && !self.sessions.contains_key(&key))
        {
            self.stats.refused_busy += 1;
            return;
        }
        // The first of our suites the client offers and can use: the ECDHE ones need our
        // certificate and certificate types both sides can do.
        let cert = self.cfg.certificate.clone();
        let (x509, rpk) = (self.cfg.client_x509, self.cfg.client_rpk);
        let chosen = self.cfg.suites.iter().copied().find_map(|s| {
            if !ch.offers(s.id()) {
                return None;
            }
            if s.is_psk() {
                return Some((s, None));
            }
            let types = ch.certs.agree(cert.as_deref()?, x509, rpk)?;
            Some((s, Some(types)))
        });
        let Some((suite, cert_types)) = chosen else {
            out.transmits
                .push((key, alert(ALERT_FATAL, HANDSHAKE_FAILURE)));
            self.stats.failed += 1;
            out.events.push(Event::HandshakeFailed {
                key,
                why: Failure::NoCommonSuite,
            });
            return;
        };
        self.stats.handshakes_started += 1;
        let mut server_random = [0u8; 32];
        self.rng.fill_bytes(&mut server_random);
        let mut transcript = Sha256::new();
        transcript_add(&mut transcript, hs::CLIENT_HELLO, h.message_seq, body);
        let resumable = self.resumable(&ch);
        let (cid, peer_cid) = match ch.connection_id {
            Some(theirs) if self.cfg.connection_id => (self.new_cid(), theirs.into()),
            _ => (0, Box::default()),
        };
        let mut cid_ext = Vec::new();
        if cid != 0 {
            cid_ext = hs::connection_id_extension(&cid.to_be_bytes());
        }
        let mut hs_state = Box::new(Handshake {
            stage: Stage::KeyExchange,
            suite,
            client_random: ch.random,
            server_random,
            session_id: [0; 16],
            ems: ch.extended_master_secret,
            transcript,
            next_recv_seq: h.message_seq.wrapping_add(1),
            next_send_seq: h.message_seq,
            write_seq0: rec.seq,
            master: [0; 48],
            client_keys: None,
            identity: Box::default(),
            auth: PeerAuth::Psk,
            ecdhe: None,
            reassembly: None,
            cid,
            peer_cid,
            flight: Vec::new(),
            started: now,
            retransmit_at: None,
            retransmits: 0,
        });
        let hs_ref = &mut *hs_state;
        let mut flight = Vec::new();
        if let Some((suite, master, session_id, identity, auth)) = resumable {
            hs_ref.suite = suite;
            hs_ref.master = master;
            hs_ref.session_id = session_id;
            hs_ref.identity = identity;
            hs_ref.auth = auth;
            let sh = hs::server_hello(
                &server_random,
                &session_id,
                suite.id(),
                hs_ref.ems,
                ch.secure_renegotiation,
                &cid_ext,
            );
            self.server_flight_resumed(hs_ref, &sh, &mut flight);
            hs_ref.stage = Stage::ResumedFinished;
            hs_ref.retransmit_at = Some(now + self.cfg.retransmit);
        } else {
            self.rng.fill_bytes(&mut hs_ref.session_id);
            let mut extra = cid_ext;
            let mut messages: Vec<(u8, Vec<u8>)> = Vec::new();
            if let (Some((server_type, client_type)), Some(cert)) = (cert_types, &cert) {
                ecdhe::server_hello_extensions(&ch.certs, server_type, client_type, &mut extra);
                let secret = p256::ecdh::EphemeralSecret::random(&mut self.rng);
                let point = p256::EncodedPoint::from(secret.public_key());
                messages.push((ecdhe::CERTIFICATE, ecdhe::certificate(cert, server_type)));
                messages.push((
                    ecdhe::SERVER_KEY_EXCHANGE,
                    ecdhe::server_key_exchange(cert, point.as_bytes(), &ch.random, &server_random),
                ));
                messages.push((ecdhe::CERTIFICATE_REQUEST, ecdhe::certificate_request()));
                hs_ref.ecdhe = Some(Box::new(Ecdhe {
                    secret,
                    client_type,
                    peer_key: None,
                }));
            }
            let sh = hs::server_hello(
                &server_random,
                &hs_ref.session_id,
                suite.id(),
                hs_ref.ems,
                ch.secure_renegotiation,
                &extra,
            );
            messages.insert(0, (hs::SERVER_HELLO, sh));
            messages.push((hs::SERVER_HELLO_DONE, Vec::new()));
            for (t, b) in &messages {
                let (t, b) = (*t, &b[..]);
                let mut m = Vec::new();
                hs::write_message(&mut m, t, hs_ref.next_send_seq, b);
                transcript_add(&mut hs_ref.transcript, t, hs_ref.next_send_seq, b);
                hs_ref.next_send_seq = hs_ref.next_send_seq.wrapping_add(1);
                plain_record(&mut flight, record::HANDSHAKE, &mut hs_ref.write_seq0, &m);
            }
        }
        hs_ref.flight = flight.clone();
        out.transmits.push((key, flight));
        let end = hs_state.started + self.cfg.handshake_timeout;
        let due = hs_state.retransmit_at.map_or(end, |r| r.min(end));
        self.handshake_deadline = Some(self.handshake_deadline.map_or(due, |d| d.min(due)));
        self.handshakes.insert(key, hs_state);
    }

    /// The session a ClientHello asks to resume, if this server still holds it and its
    /// parameters still fit (same suite offered, same extended_master_secret use).
    fn resumable(&self, ch: &hs::ClientHello) -> Option<Resumable> {
        let id: [u8; 16] = ch.session_id.try_into().ok()?;
        let key = self.by_session_id.get(&id)?;
        let s = self.sessions.get(key)?;
        (ch.offers(s.suite.id()) && s.ems == ch.extended_master_secret)
            .then(|| (s.suite, s.master, s.session_id, s.identity.clone(), s.auth))
    }

    fn server_flight_resumed(&mut self, h: &mut Handshake, sh: &[u8], flight: &mut Vec<u8>) {
        let mut m = Vec::new();
        hs::write_message(&mut m, hs::SERVER_HELLO, h.next_send_seq, sh);
        transcript_add(&mut h.transcript, hs::SERVER_HELLO, h.next_send_seq, sh);
        h.next_send_seq = h.next_send_seq.wrapping_add(1);
        plain_record(flight, record::HANDSHAKE, &mut h.write_seq0, &m);
        let keys = crypto::key_block(h.suite, &h.master, &h.client_random, &h.server_random);
        let verify = finished(&h.master, b"server finished", &h.transcript);
        self.finish_flight(h, &keys.1, &verify, flight);
        h.client_keys = Some(keys);
    }

    /// Appends CCS and our Finished (epoch 1, sequence 0) to `flight`.
    fn finish_flight(
        &mut self,
        h: &mut Handshake,
        server_keys: &DirectionKeys,
        verify: &[u8; 12],
        flight: &mut Vec<u8>,
    ) {
        plain_record(flight, record::CHANGE_CIPHER_SPEC, &mut h.write_seq0, &[1]);
        let mut fin = Vec::new();
        hs::write_message(&mut fin, hs::FINISHED, h.next_send_seq, verify);
        transcript_add(&mut h.transcript, hs::FINISHED, h.next_send_seq, verify);
        h.next_send_seq = h.next_send_seq.wrapping_add(1);
        let cid = (!h.peer_cid.is_empty()).then_some(&h.peer_cid[..]);
        let at = record::begin_record(flight, record::HANDSHAKE, 1, 0, cid);
        let mut iv = [0u8; 16];
        if h.suite == Suite::PskAes128CbcSha256 {
            self.rng.fill_bytes(&mut iv);
        }
        crypto::seal(
            h.suite,
            server_keys,
            1 << 48,
            record::HANDSHAKE,
            cid,
            &fin,
            iv,
            flight,
        );
        record::finish_record(flight, at);
    }

    fn on_key_exchange(
        &mut self,
        key: ConnKey,
        h: &hs::Header,
        body: &[u8],
        keys: &dyn Authenticator,
        out: &mut Output,
    ) {
        let Some(state) = self.handshakes.get_mut(&key) else {
            // A retransmitted flight after we finished: our last flight was lost.
            match self.sessions.get(&key).and_then(|s| s.last_flight.as_ref()) {
                Some(f) => out.transmits.push((key, f.to_vec())),
                None => self.stats.bad_records += 1,
            }
            return;
        };
        if !matches!(state.stage, Stage::KeyExchange) || h.message_seq != state.next_recv_seq {
            return;
        }
        let (premaster, unknown) = if let Some(e) = &state.ecdhe {
            // ECDHE: the client's Certificate must have come first.
            let point = ecdhe::parse_ecdh_key_exchange(body);
            let (Some(point), Some(_)) = (point, &e.peer_key) else {
                let why = if e.peer_key.is_none() {
                    Failure::BadCertificate
                } else {
                    Failure::Malformed
                };
                return self.fail(key, why, HANDSHAKE_FAILURE, out);
            };
            let shared = e.secret.diffie_hellman(&point);
            (shared.raw_secret_bytes().to_vec(), false)
        } else {
            let Some(identity) = hs::parse_psk_client_key_exchange(body) else {
                return self.fail(key, Failure::Malformed, DECODE_ERROR, out);
            };
            state.identity = identity.into();
            state.auth = PeerAuth::Psk;
            match keys.psk(identity) {
                Some(k) => (crypto::psk_premaster(&k), false),
                None => {
                    // Go on with a key nobody has: the client's Finished then fails like a
                    // wrong key would, and the peer cannot tell an unknown identity from a bad
                    // key.
                    let mut k = vec![0u8; 16];
                    self.rng.fill_bytes(&mut k);
                    (crypto::psk_premaster(&k), true)
                }
            }
        };
        transcript_add(
            &mut state.transcript,
            hs::CLIENT_KEY_EXCHANGE,
            h.message_seq,
            body,
        );
        state.next_recv_seq = state.next_recv_seq.wrapping_add(1);
        if state.ems {
            let session_hash: [u8; 32] = state.transcript.clone().finalize().into();
            crypto::prf(
                &premaster,
                b"extended master secret",
                &[&session_hash],
                &mut state.master,
            );
        } else {
            crypto::prf(
                &premaster,
                b"master secret",
                &[&state.client_random, &state.server_random],
                &mut state.master,
            );
        }
        state.client_keys = Some(crypto::key_block(
            state.suite,
            &state.master,
            &state.client_random,
            &state.server_random,
        ));
        state.stage = if state.ecdhe.is_some() {
            Stage::CertificateVerify
        } else {
            Stage::Finished {
                unknown_identity: unknown,
            }
        };
    }

    /// The client's Certificate (ECDHE suites): an X.509 chain the authenticator trusts, or a
    /// raw public key it knows. Its identity is the certificate's subject common name or the key.
    fn on_certificate(
        &mut self,
        key: ConnKey,
        h: &hs::Header,
        body: &[u8],
        keys: &dyn Authenticator,
        out: &mut Output,
    ) {
        let Some(state) = self.handshakes.get_mut(&key) else {
            self.stats.bad_records += 1;
            return;
        };
        let Some(e) = &mut state.ecdhe else {
            return self.fail(key, Failure::Malformed, DECODE_ERROR, out);
        };
        if !matches!(state.stage, Stage::KeyExchange)
            || h.message_seq != state.next_recv_seq
            || e.peer_key.is_some()
        {
            return;
        }
        let accepted = match ecdhe::parse_certificate(body, e.client_type) {
            Some(ClientCredential::X509(chain)) if keys.verify_chain(&chain) => {
                let ee = chain[0];
                let cn = super::x509::common_name(ee);
                let spki = super::x509::subject_public_key_info(ee);
                match (cn, spki.and_then(ecdhe::verifying_key)) {
                    (Some(cn), Some(k)) => Some((cn.to_vec(), k, PeerAuth::X509)),
                    _ => None,
                }
            }
            Some(ClientCredential::RawPublicKey(spki)) if keys.accept_raw_key(spki) => {
                ecdhe::verifying_key(spki).map(|k| (spki.to_vec(), k, PeerAuth::RawPublicKey))
            }
            _ => None,
        };
        let Some((identity, peer_key, auth)) = accepted else {
            return self.fail(key, Failure::BadCertificate, BAD_CERTIFICATE, out);
        };
        e.peer_key = Some(peer_key);
        state.identity = identity.into();
        state.auth = auth;
        transcript_add(
            &mut state.transcript,
            ecdhe::CERTIFICATE,
            h.message_seq,
            body,
        );
        state.next_recv_seq = state.next_recv_seq.wrapping_add(1);
    }

    /// The client's CertificateVerify: its key signed the handshake so far.
    fn on_certificate_verify(
        &mut self,
        key: ConnKey,
        h: &hs::Header,
        body: &[u8],
        out: &mut Output,
    ) {
        let Some(state) = self.handshakes.get_mut(&key) else {
            self.stats.bad_records += 1;
            return;
        };
        if !matches!(state.stage, Stage::CertificateVerify) || h.message_seq != state.next_recv_seq
        {
            return;
        }
        let hash: [u8; 32] = state.transcript.clone().finalize().into();
        let ok = state
            .ecdhe
            .as_ref()
            .and_then(|e| e.peer_key.as_ref())
            .is_some_and(|k| ecdhe::certificate_verify_ok(body, k, &hash));
        if !ok {
            return self.fail(key, Failure::BadCertificate, DECRYPT_ERROR, out);
        }
        transcript_add(
            &mut state.transcript,
            ecdhe::CERTIFICATE_VERIFY,
            h.message_seq,
            body,
        );
        state.next_recv_seq = state.next_recv_seq.wrapping_add(1);
        state.stage = Stage::Finished {
            unknown_identity: false,
        };
        // The ephemeral secret is spent.
        state.ecdhe = None;
    }

    fn on_protected_record(
        &mut self,
        now: Instant,
        key: ConnKey,
        rec: &record::Record,
        scratch: &mut Vec<u8>,
        out: &mut Output,
        app: &mut AppData,
    ) {
        let cid = (rec.ctype == record::TLS12_CID).then_some(rec.cid);
        if let Some(h) = self.handshakes.get(&key) {
            let finishing = match cid {
                None => rec.ctype == record::HANDSHAKE,
                Some(c) => h.cid != 0 && c == h.cid.to_be_bytes(),
            };
            if finishing {
                self.on_client_finished(now, key, rec, cid, scratch, out);
                return;
            }
        }
        let skey = match cid {
            None => Some(key),
            Some(c) => <[u8; CID_LEN]>::try_from(c)
                .ok()
                .and_then(|c| self.by_cid.get(&u64::from_be_bytes(c)).copied()),
        };
        let Some(skey) = skey else {
            self.stats.bad_records += 1;
            return;
        };
        let address_taken = skey != key && self.sessions.contains_key(&key);
        let Some(s) = self.sessions.get_mut(&skey) else {
            self.stats.bad_records += 1;
            return;
        };
        if !s.replay.fresh(rec.seq) {
            self.stats.bad_records += 1;
            return;
        }
        scratch.clear();
        scratch.extend_from_slice(rec.fragment);
        let Some(range) = crypto::open(s.suite, &s.read, rec.epoch_seq(), rec.ctype, cid, scratch)
        else {
            self.stats.bad_records += 1;
            return;
        };
        let (ctype, range) = match cid {
            None => (rec.ctype, range),
            Some(_) => match crypto::inner_plaintext(&scratch[range.clone()]) {
                Some((t, content)) => (t, range.start..range.start + content.len()),
                None => {
                    self.stats.bad_records += 1;
                    return;
                }
            },
        };
        let mut moved_from = None;
        if skey != key {
            // RFC 9146 §6: the peer's address changes only for an authenticated record newer
            // than any before it (a reordered or replayed one cannot move it back); we also ask
            // for application data (a CoAP message, whose answer shows the new path works) and
            // an address no other session holds.
            if ctype != record::APPLICATION_DATA || !s.replay.is_newest(rec.seq) || address_taken {
                self.stats.bad_records += 1;
                return;
            }
            moved_from = Some(skey);
            self.move_session(skey, key);
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.replay.accept(rec.seq);
        s.last_seen = now;
        match ctype {
            record::APPLICATION_DATA => {
                s.last_flight = None;
                self.stats.app_records += 1;
                app(s, moved_from, &scratch[range]);
            }
            record::ALERT => {
                let p = &scratch[range];
                if p.first() == Some(&ALERT_FATAL) || p.get(1) == Some(&CLOSE_NOTIFY) {
                    if let Some(s) = self.take_session(&key) {
                        out.events.push(Event::Closed {
                            key,
                            connection_id: s.connection_id(),
                        });
                    }
                }
            }
            record::HANDSHAKE => {
                // The peer's Finished again: it did not get ours.
                if let Some(f) = &s.last_flight {
                    out.transmits.push((key, f.to_vec()));
                }
            }
            _ => self.stats.bad_records += 1,
        }
    }

    fn fail(&mut self, key: ConnKey, why: Failure, desc: u8, out: &mut Output) {
        self.handshakes.remove(&key);
        out.transmits.push((key, alert(ALERT_FATAL, desc)));
        self.stats.failed += 1;
        out.events.push(Event::HandshakeFailed { key, why });
    }

    fn on_client_finished(
        &mut self,
        now: Instant,
        key: ConnKey,
        rec: &record::Record,
        cid: Option<&[u8]>,
        scratch: &mut Vec<u8>,
        out: &mut Output,
    ) {
        let Some(state) = self.handshakes.get_mut(&key) else {
            return;
        };
        // Only after everything that authenticates the client: a Finished that skips the
        // CertificateVerify proves nothing about the certificate's key.
        if !matches!(state.stage, Stage::Finished { .. } | Stage::ResumedFinished) {
            return self.fail(key, Failure::BadCertificate, HANDSHAKE_FAILURE, out);
        }
        let Some((ck, _)) = &state.client_keys else {
            self.stats.bad_records += 1;
            return;
        };
        scratch.clear();
        scratch.extend_from_slice(rec.fragment);
        let opened = crypto::open(state.suite, ck, rec.epoch_seq(), rec.ctype, cid, scratch);
        // With a CID, the real content type is inside and must be a handshake's.
        let opened = opened.and_then(|r| match cid {
            None => Some(r),
            Some(_) => match crypto::inner_plaintext(&scratch[r.clone()]) {
                Some((record::HANDSHAKE, m)) => Some(r.start..r.start + m.len()),
                _ => None,
            },
        });
        let Some(range) = opened else {
            // A wrong key shows here already (the record does not authenticate).
            let why = match state.stage {
                Stage::Finished {
                    unknown_identity: true,
                } => Failure::UnknownIdentity,
                _ => Failure::BadKey,
            };
            self.fail(key, why, DECRYPT_ERROR, out);
            return;
        };
        let msg = &scratch[range];
        let Some((h, verify)) = hs::messages(msg).next() else {
            self.fail(key, Failure::Malformed, DECODE_ERROR, out);
            return;
        };
        if h.msg_type != hs::FINISHED || !h.is_whole() {
            self.fail(key, Failure::Malformed, DECODE_ERROR, out);
            return;
        }
        let expected = finished(&state.master, b"client finished", &state.transcript);
        if !ct_eq(verify, &expected) {
            let why = match state.stage {
                Stage::Finished {
                    unknown_identity: true,
                } => Failure::UnknownIdentity,
                _ => Failure::BadKey,
            };
            self.fail(key, why, DECRYPT_ERROR, out);
            return;
        }
        let Some(mut state) = self.handshakes.remove(&key) else {
            return;
        };
        let resumed = matches!(state.stage, Stage::ResumedFinished);
        transcript_add(&mut state.transcript, hs::FINISHED, h.message_seq, verify);
        let Some((client_keys, server_keys)) = state.client_keys.take() else {
            return;
        };
        let mut flight = Vec::new();
        if !resumed {
            let verify = finished(&state.master, b"server finished", &state.transcript);
            self.finish_flight(&mut state, &server_keys, &verify, &mut flight);
            out.transmits.push((key, flight.clone()));
        }
        let mut replay = ReplayWindow::default();
        replay.accept(rec.seq);
        let session = Session {
            suite: state.suite,
            read: client_keys,
            write: server_keys,
            write_seq: 1,
            replay,
            master: state.master,
            session_id: state.session_id,
            ems: state.ems,
            identity: std::mem::take(&mut state.identity),
            auth: state.auth,
            last_flight: (!flight.is_empty()).then(|| flight.into_boxed_slice()),
            last_seen: now,
            tag: 0,
            cid: state.cid,
            peer_cid: std::mem::take(&mut state.peer_cid),
        };
        if resumed {
            // The resumed session replaces the one it came from, wherever that peer was.
            if let Some(old) = self.by_session_id.get(&session.session_id).copied() {
                // Told even when it was this peer's own: its CID is no longer routable.
                if let Some(s) = self.take_session(&old) {
                    out.events.push(Event::Closed {
                        key: old,
                        connection_id: s.connection_id(),
                    });
                }
            }
            self.stats.resumed += 1;
        }
        self.stats.established += 1;
        self.insert_session(key, session);
        out.events.push(Event::Established { key, resumed });
    }
}
