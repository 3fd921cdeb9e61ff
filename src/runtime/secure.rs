//! A worker's DTLS listener state: the [`dtls::Server`] of the peers routed to this worker, glued
//! to the shard. Decrypted datagrams go into the shard with the peer's interned identity; what
//! the shard sends to a DTLS peer is sealed here.
//!
//! Where sessions live: a handshake runs on the worker the event loop picked for the peer's
//! address (by hash, or by the DTLS index when the address is known). Once it completes, the
//! PSK identity names the endpoint, and the session moves to the worker that owns that endpoint
//! (`shard_of_endpoint`, where plain Registers of it go and where its MQTT commands arrive): the
//! session travels as a [`WorkerMsg::Session`] and the DTLS index is bound to the new worker
//! only after the message is queued, so every later record of the peer finds the session there.
//! One hop per handshake, none per message.
//!
//! A new handshake of an identity that already has a session here (from another address: NAT
//! rebinding without Connection ID) takes over: the old session is dropped and the registration
//! follows the new address ([`Shard::rebind`]). With a Connection ID no handshake is needed: the
//! event loop routes the record by its CID (the index maps CIDs to workers as it maps
//! addresses), the DTLS server moves the session to the new address, and the registration
//! follows it the same way before the datagram reaches the shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use log::debug;

use crate::core::peer::{IdentityId, Peer, SecurityMode};
use crate::core::router::shard_of_endpoint;
use crate::core::shard::{Output, Shard, Transmit};
use crate::dtls::server::{Event, Output as DtlsOutput, Session};
use crate::dtls::PeerAuth;
use crate::dtls::{self, ConnKey};
use crate::persist::wire::{self, FileKind, Header, Reader, Writer};
use crate::security::{DeviceKeys, Identities};

use super::addr_index::AddrIndex;
use super::channel::{WorkerMsg, WorkerTx};
use super::metrics::Metrics;

/// What a worker's DTLS side needs from the gateway.
pub(super) struct SecureShared {
    pub keys: DeviceKeys,
    pub identities: Arc<Identities>,
    /// Peer address -> the worker holding its DTLS session.
    pub index: Arc<AddrIndex>,
    /// Every worker's queue, for handing a session to the worker owning its endpoint.
    pub workers: Vec<WorkerTx>,
}

pub(super) struct SecureListener {
    me: u16,
    server: dtls::Server,
    shared: Arc<SecureShared>,
    by_identity: HashMap<IdentityId, ConnKey>,
    out: DtlsOutput,
}

impl SecureListener {
    pub(super) fn new(
        me: u16,
        cfg: dtls::server::Config,
        shared: Arc<SecureShared>,
        now: Instant,
    ) -> SecureListener {
        SecureListener {
            me,
            server: dtls::Server::new(cfg, now, rand::random()),
            shared,
            by_identity: HashMap::new(),
            out: DtlsOutput::default(),
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }

    /// A datagram from a DTLS peer: handshake records are answered, application data goes to
    /// the shard. What the DTLS layer sends back is appended to `out.transmits` already sealed
    /// (see [`SecureListener::seal_into`]).
    pub(super) fn on_datagram(
        &mut self,
        now: Instant,
        key: ConnKey,
        bytes: &[u8],
        shard: &mut Shard,
        out: &mut Output,
        sealed: &mut Vec<(ConnKey, Vec<u8>)>,
    ) {
        let shared = &self.shared;
        let (me, by_identity) = (self.me, &mut self.by_identity);
        self.server.on_datagram(
            now,
            key,
            bytes,
            &shared.keys,
            &mut self.out,
            &mut |s, moved_from, plain| {
                let identity = IdentityId::from_tag(s.tag);
                let peer = Peer {
                    identity,
                    ..Peer::plain(key.0, key.1)
                };
                if let (Some(from), Some(id)) = (moved_from, identity) {
                    // The device's address changed under its Connection ID.
                    shared.index.unbind(from.1, me);
                    shared.index.bind(key.1, me);
                    if by_identity.get(&id) == Some(&from) {
                        by_identity.insert(id, key);
                    }
                    let old = Peer {
                        identity,
                        ..Peer::plain(from.0, from.1)
                    };
                    shard.rebind(old, peer, out);
                }
                shard.on_datagram(now, peer, plain, out);
            },
        );
        self.after(now, shard, out, sealed);
    }

    pub(super) fn on_timeout(
        &mut self,
        now: Instant,
        shard: &mut Shard,
        out: &mut Output,
        sealed: &mut Vec<(ConnKey, Vec<u8>)>,
    ) {
        self.server.on_timeout(now, &mut self.out);
        self.after(now, shard, out, sealed);
    }

    /// A session established on another worker, for an endpoint of this one.
    pub(super) fn adopt(
        &mut self,
        key: ConnKey,
        session: Box<Session>,
        shard: &mut Shard,
        out: &mut Output,
    ) {
        let Some(id) = IdentityId::from_tag(session.tag) else {
            return;
        };
        self.server.insert_session(key, *session);
        self.bind_identity(key, id, shard, out);
    }

    /// Protects a datagram the shard addressed to a DTLS peer; `None` if it has no session
    /// here (it was dropped, or the device never finished a handshake).
    pub(super) fn seal(&mut self, t: &Transmit) -> Option<Vec<u8>> {
        self.server.seal(&(t.peer.listener, t.peer.addr), &t.bytes)
    }

    /// Counters since the last call, added to the gateway's.
    pub(super) fn report(&mut self, m: &Metrics) {
        let s = self.server.take_stats();
        let add = super::metrics::add;
        add(&m.dtls_hello_verify, s.hello_verify);
        add(&m.dtls_handshakes, s.handshakes_started);
        add(&m.dtls_established, s.established);
        add(&m.dtls_resumed, s.resumed);
        add(&m.dtls_failed, s.failed);
        add(&m.dtls_refused_busy, s.refused_busy);
        add(&m.dtls_bad_records, s.bad_records);
        add(&m.dtls_migrated, s.migrated);
    }

    /// Bad records and failed handshakes not yet reported (see [`SecureListener::report`]).
    pub(super) fn failures(&self) -> u64 {
        self.server.failures()
    }

    pub(super) fn sessions(&self) -> usize {
        self.server.sessions()
    }

    /// Every established session of this worker, for the state directory: a header, then one
    /// record per session (its listener and address, then [`Session::to_bytes`]). The bytes
    /// hold keys: the caller writes them where only the gateway can read (mode 0600).
    pub(super) fn export_sessions(&self, shards: u16) -> Vec<u8> {
        let mut out = Vec::new();
        Header {
            kind: FileKind::DtlsSessions,
            shard: self.me as u8,
            shards,
        }
        .write(&mut out);
        let mut w = Writer::new();
        for key in self.server.session_keys() {
            let Some(s) = self.server.session(&key) else {
                continue;
            };
            w.buf.clear();
            w.uint(u64::from(key.0));
            w.str(&key.1.to_string());
            w.bytes(&s.to_bytes());
            wire::frame(&mut out, &w.buf);
        }
        out
    }

    /// Restores sessions [`SecureListener::export_sessions`] wrote: devices carry on without a
    /// handshake. Returns (restored, unusable); a record that does not decode, or whose identity
    /// cannot be interned, is skipped.
    pub(super) fn import_sessions(
        &mut self,
        bytes: &[u8],
        shards: u16,
        now: Instant,
    ) -> Result<(usize, usize), String> {
        let (h, body) = Header::read(bytes).map_err(|e| e.to_string())?;
        if h.kind != FileKind::DtlsSessions || h.shard != self.me as u8 || h.shards != shards {
            return Err(format!(
                "written by worker {} of {} (the number of workers changed?)",
                h.shard, h.shards
            ));
        }
        let (records, _) = wire::records(body);
        let (mut restored, mut unusable) = (0, 0);
        for rec in records {
            let mut r = Reader::new(rec);
            let session = (|| {
                let listener = r.u16()?;
                let addr: std::net::SocketAddr = r.str()?.parse().ok()?;
                let s = Session::from_bytes(r.bytes()?, now)?;
                Some(((listener, addr), s))
            })();
            let Some((key, mut s)) = session else {
                unusable += 1;
                continue;
            };
            let Some(id) = self.shared.identities.intern(mode_of(s.auth), &s.identity) else {
                unusable += 1;
                continue;
            };
            s.tag = id.tag();
            let cid = s.connection_id();
            self.server.insert_session(key, s);
            self.shared.index.bind(key.1, self.me);
            if let Some(c) = cid {
                self.shared.index.bind_cid(c, self.me);
            }
            self.by_identity.insert(id, key);
            restored += 1;
        }
        Ok((restored, unusable))
    }

    /// Drops every session whose PSK identity or raw public key no longer has a credential
    /// (after a reload or an MQTT `credential-remove`): a revoked device must handshake again,
    /// and cannot. Certificate sessions stand on the CA, not on the store.
    pub(super) fn revoke_stale(&mut self) {
        for key in self.server.session_keys() {
            let gone = self.server.session(&key).is_some_and(|s| {
                s.auth != PeerAuth::X509
                    && self
                        .shared
                        .keys
                        .endpoint_of(mode_of(s.auth), &s.identity)
                        .is_none()
            });
            if gone {
                if let Some(s) = self.server.take_session(&key) {
                    if let Some(id) = IdentityId::from_tag(s.tag) {
                        self.by_identity.remove(&id);
                    }
                    if let Some(c) = s.connection_id() {
                        self.shared.index.unbind_cid(c, self.me);
                    }
                }
                self.shared.index.unbind(key.1, self.me);
                debug!("DTLS session of {} dropped: credential removed", key.1);
            }
        }
    }

    /// Carries out the DTLS layer's output: flights to send, sessions established or ended.
    fn after(
        &mut self,
        _now: Instant,
        shard: &mut Shard,
        out: &mut Output,
        sealed: &mut Vec<(ConnKey, Vec<u8>)>,
    ) {
        sealed.append(&mut self.out.transmits);
        for ev in std::mem::take(&mut self.out.events) {
            match ev {
                Event::Established { key, .. } => self.established(key, shard, out),
                Event::Closed { key, connection_id } => {
                    self.shared.index.unbind(key.1, self.me);
                    if let Some(c) = connection_id {
                        self.shared.index.unbind_cid(c, self.me);
                    }
                    self.by_identity.retain(|_, k| *k != key);
                }
                Event::HandshakeFailed { key, why } => {
                    debug!("DTLS handshake from {} failed: {why:?}", key.1);
                }
            }
        }
    }

    fn established(&mut self, key: ConnKey, shard: &mut Shard, out: &mut Output) {
        let Some(s) = self.server.session_mut(&key) else {
            return;
        };
        let mode = mode_of(s.auth);
        let Some(id) = self.shared.identities.intern(mode, &s.identity) else {
            self.server.take_session(&key);
            return;
        };
        let cid = s.connection_id();
        s.tag = id.tag();
        let owner = match self.shared.keys.endpoint_of(mode, &s.identity) {
            Some(ep) => shard_of_endpoint(ep.as_bytes(), self.shared.workers.len()) as u16,
            // The credential went away during the handshake: the session stays, any Register
            // on it is refused.
            None => self.me,
        };
        if owner == self.me {
            self.bind_identity(key, id, shard, out);
            return;
        }
        let Some(session) = self.server.take_session(&key) else {
            return;
        };
        let msg = WorkerMsg::Session {
            key,
            session: Box::new(session),
        };
        // Queued first, indexed second: a record routed by the new index entry finds the
        // session already ahead of it in the owner's queue.
        if self.shared.workers[owner as usize].try_send(msg).is_ok() {
            self.shared.index.bind(key.1, owner);
            if let Some(c) = cid {
                self.shared.index.bind_cid(c, owner);
            }
        } else {
            // The owner's queue is full: the device will handshake again.
            self.shared.index.unbind(key.1, self.me);
        }
    }

    /// `key` is now the session of identity `id` on this worker; an older session of the same
    /// identity (another address) gives way and its registration follows.
    fn bind_identity(&mut self, key: ConnKey, id: IdentityId, shard: &mut Shard, out: &mut Output) {
        self.shared.index.bind(key.1, self.me);
        if let Some(c) = self.server.session(&key).and_then(Session::connection_id) {
            self.shared.index.bind_cid(c, self.me);
        }
        if let Some(old) = self.by_identity.insert(id, key) {
            if old != key {
                if let Some(c) = self
                    .server
                    .take_session(&old)
                    .and_then(|s| s.connection_id())
                {
                    self.shared.index.unbind_cid(c, self.me);
                }
                self.shared.index.unbind(old.1, self.me);
                let peer = |k: ConnKey| Peer {
                    identity: Some(id),
                    ..Peer::plain(k.0, k.1)
                };
                shard.rebind(peer(old), peer(key), out);
            }
        }
    }
}

fn mode_of(a: PeerAuth) -> SecurityMode {
    match a {
        PeerAuth::Psk => SecurityMode::Psk,
        PeerAuth::X509 => SecurityMode::X509,
        PeerAuth::RawPublicKey => SecurityMode::Rpk,
    }
}
