//! A shard's sessions and every index into them, kept in step by one owner.
//!
//! Lookups: by registration id (the session map), by endpoint name (Register, commands), by
//! address (Send, queue-mode wake-ups, client-chosen traffic), by token (responses and
//! notifications) and by message id (empty ACK/RST). Every change that could leave an index
//! pointing at nothing goes through a method here (insert/remove a session, move it to a new
//! address, begin/end an exchange, add/remove an observation), so the invariants below hold after
//! each call:
//!
//! - an id in `by_endpoint` / `by_addr` has a session, hashed by its current endpoint /
//!   `peer.addr`; a session's address changes only inside [`Sessions::move_to`];
//! - `by_token[t] == reg` iff session `reg` has an exchange in flight with token `t` or an
//!   observation under `t`;
//! - `by_mid[m] == reg` iff session `reg`'s exchange in flight was last sent with message id `m`
//!   and still awaits its ACK.
//!
//! The same methods log which registrations changed ([`Sessions::touch`]) while a journal is
//! kept (`core/shard/durable.rs`): a change of durable state outside them calls `touch` itself.
//!
//! Endpoint names and addresses are chosen by devices: those tables hash with the randomly keyed
//! SipHash, and they hold only ids (hashing and comparing through the session), so a name or
//! address is stored once. The gateway's own ids use the cheap [`IntMap`].

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::core::ids::{RegId, Token};
use crate::core::intmap::IntMap;

use super::query::Kinds;
use super::session::{Exchange, Observation, Session};
use super::IndexUpdate;

#[derive(Default)]
pub(super) struct Sessions {
    /// Boxed sessions keep the map's slots small: hash maps over-allocate slots as they grow.
    map: IntMap<RegId, Box<Session>>,
    by_endpoint: HashTable<RegId>,
    by_addr: HashTable<RegId>,
    keys: RandomState,
    by_token: IntMap<Token, RegId>,
    by_mid: IntMap<u16, RegId>,
    /// Registrations changed since the journal was last written; `None`: no journal is kept.
    /// Ids repeat: they are sorted and deduplicated when written.
    changed: Option<Vec<RegId>>,
    /// Registrations by kind, for the metrics (`query.rs`).
    kinds: Kinds,
}

impl Sessions {
    /// Room for `n` sessions up front: growing a table rehashes all of it at once, which stalls
    /// a registration storm for milliseconds at every doubling.
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
        let (map, keys) = (&self.map, &self.keys);
        self.by_endpoint.reserve(n, |id| {
            map.get(id).map_or(0, |s| keys.hash_one(&*s.reg.endpoint))
        });
        self.by_addr.reserve(n, |id| {
            map.get(id).map_or(0, |s| keys.hash_one(s.peer.addr))
        });
    }

    /// Starts logging changed registrations (see [`Sessions::touch`]).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(Vec::new);
    }

    /// Forgets the changes logged so far (a snapshot holds them all).
    pub fn clear_changes(&mut self) {
        if let Some(c) = &mut self.changed {
            c.clear();
        }
    }

    /// `reg`'s durable state changed.
    pub fn touch(&mut self, reg: RegId) {
        if let Some(c) = &mut self.changed {
            c.push(reg);
        }
    }

    /// The registrations changed since the last call, each once, in id order; the log goes on.
    pub fn take_changes(&mut self, into: &mut Vec<RegId>) {
        into.clear();
        if let Some(c) = &mut self.changed {
            std::mem::swap(c, into);
            into.sort_unstable();
            into.dedup();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (RegId, &Session)> {
        self.map.iter().map(|(r, s)| (*r, &**s))
    }

    pub fn values(&self) -> impl Iterator<Item = &Session> {
        self.map.values().map(|s| &**s)
    }

    pub fn get(&self, reg: RegId) -> Option<&Session> {
        self.map.get(&reg).map(|s| &**s)
    }

    /// The session to change. Its endpoint and address must not change through this (they are
    /// hashed into the indexes): see [`Sessions::move_to`].
    pub fn get_mut(&mut self, reg: RegId) -> Option<&mut Session> {
        self.map.get_mut(&reg).map(|s| &mut **s)
    }

    pub fn find_endpoint(&self, ep: &str) -> Option<RegId> {
        let map = &self.map;
        self.by_endpoint
            .find(self.keys.hash_one(ep), |r| {
                map.get(r).is_some_and(|s| &*s.reg.endpoint == ep)
            })
            .copied()
    }

    pub fn find_addr(&self, addr: SocketAddr) -> Option<RegId> {
        let map = &self.map;
        self.by_addr
            .find(self.keys.hash_one(addr), |r| {
                map.get(r).is_some_and(|s| s.peer.addr == addr)
            })
            .copied()
    }

    pub fn by_token(&self, token: Token) -> Option<RegId> {
        self.by_token.get(&token).copied()
    }

    pub fn by_mid(&self, mid: u16) -> Option<RegId> {
        self.by_mid.get(&mid).copied()
    }

    pub fn token_in_use(&self, token: Token) -> bool {
        self.by_token.contains_key(&token)
    }

    /// Adds the session of a new registration `reg` (whose endpoint has no session any more) and
    /// makes it the one found at its address.
    pub fn insert(&mut self, reg: RegId, session: Box<Session>, index: &mut Vec<IndexUpdate>) {
        let (ep_hash, addr) = (
            self.keys.hash_one(&*session.reg.endpoint),
            session.peer.addr,
        );
        let tokens = session.work.iter().flat_map(|w| {
            let inflight = w.inflight.iter().map(|e| e.token);
            inflight.chain(w.observations.keys().copied())
        });
        for t in tokens {
            self.by_token.insert(t, reg);
        }
        self.kinds.add(Kinds::of(&session.reg));
        if let Some(old) = self.map.insert(reg, session) {
            self.kinds.sub(Kinds::of(&old.reg));
        }
        self.touch(reg);
        let (map, keys) = (&self.map, &self.keys);
        let entry = self.by_endpoint.entry(
            ep_hash,
            |r| *r == reg,
            |r| map.get(r).map_or(0, |s| keys.hash_one(&*s.reg.endpoint)),
        );
        if let Entry::Vacant(e) = entry {
            e.insert(reg);
        }
        self.bind_addr(addr, reg, index);
    }

    /// Removes a session and every index entry that points at it.
    pub fn remove(&mut self, reg: RegId, index: &mut Vec<IndexUpdate>) -> Option<Box<Session>> {
        let s = self.map.get(&reg)?;
        let (ep_hash, addr) = (self.keys.hash_one(&*s.reg.endpoint), s.peer.addr);
        if let Ok(e) = self.by_endpoint.find_entry(ep_hash, |&r| r == reg) {
            e.remove();
        }
        self.unbind_addr(addr, reg, index);
        let s = self.map.remove(&reg)?;
        self.kinds.sub(Kinds::of(&s.reg));
        self.touch(reg);
        if let Some(w) = &s.work {
            if let Some(ex) = &w.inflight {
                self.by_token.remove(&ex.token);
                release_mid(&mut self.by_mid, ex.mid, reg);
            }
            for t in w.observations.keys() {
                self.by_token.remove(t);
            }
        }
        Some(s)
    }

    /// The registrations by kind.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// `reg`'s registration changed kind (an Update changed its binding).
    pub fn rekind(&mut self, from: usize, to: usize) {
        if from != to {
            self.kinds.sub(from);
            self.kinds.add(to);
        }
    }

    /// NAT rebinding: the device now speaks from `addr`.
    pub fn move_to(&mut self, reg: RegId, addr: SocketAddr, index: &mut Vec<IndexUpdate>) {
        let Some(old) = self.map.get(&reg).map(|s| s.peer.addr) else {
            return;
        };
        if old == addr {
            return;
        }
        // Out of `by_addr` under the old address first: the table hashes through the session.
        self.unbind_addr(old, reg, index);
        if let Some(s) = self.map.get_mut(&reg) {
            s.peer.addr = addr;
        }
        self.touch(reg);
        self.bind_addr(addr, reg, index);
    }

    /// Makes `reg` the registration found at `addr`, which must be its session's address.
    fn bind_addr(&mut self, addr: SocketAddr, reg: RegId, index: &mut Vec<IndexUpdate>) {
        let (map, keys) = (&self.map, &self.keys);
        let entry = self.by_addr.entry(
            keys.hash_one(addr),
            |r| map.get(r).is_some_and(|s| s.peer.addr == addr),
            |r| map.get(r).map_or(0, |s| keys.hash_one(s.peer.addr)),
        );
        match entry {
            Entry::Occupied(mut e) => *e.get_mut() = reg,
            Entry::Vacant(e) => {
                e.insert(reg);
            }
        }
        index.push(IndexUpdate::Bind(addr));
    }

    /// Forgets `addr` if `reg` holds it (`addr` is, or was until now, its session's address).
    fn unbind_addr(&mut self, addr: SocketAddr, reg: RegId, index: &mut Vec<IndexUpdate>) {
        if let Ok(e) = self
            .by_addr
            .find_entry(self.keys.hash_one(addr), |&r| r == reg)
        {
            e.remove();
            index.push(IndexUpdate::Unbind(addr));
        }
    }

    /// Puts `ex` in flight for `reg` (which has nothing in flight) and routes its token there;
    /// its message id routes once it is sent ([`Sessions::resend_exchange`]).
    pub fn begin_exchange(&mut self, reg: RegId, ex: Box<Exchange>) {
        let Some(s) = self.map.get_mut(&reg) else {
            return;
        };
        self.by_token.insert(ex.token, reg);
        s.work_mut().inflight = Some(ex);
    }

    /// The exchange in flight was sent (again) with message id `mid`; the previous one no
    /// longer matches. Returns the exchange.
    pub fn resend_exchange(&mut self, reg: RegId, mid: u16) -> Option<&mut Exchange> {
        let ex = self.map.get_mut(&reg)?.inflight_mut()?;
        release_mid(&mut self.by_mid, ex.mid, reg);
        self.by_mid.insert(mid, reg);
        ex.mid = mid;
        Some(ex)
    }

    /// An empty ACK came for the exchange in flight: its message id no longer matches.
    pub fn acked_exchange(&mut self, reg: RegId) -> Option<&mut Exchange> {
        let ex = self.map.get_mut(&reg)?.inflight_mut()?;
        release_mid(&mut self.by_mid, ex.mid, reg);
        Some(ex)
    }

    /// Ends the exchange in flight. Its token keeps routing to `reg` only while an observation
    /// holds it (a cancel reuses the observation's token).
    pub fn end_exchange(&mut self, reg: RegId) -> Option<Box<Exchange>> {
        let w = self.map.get_mut(&reg)?.work.as_mut()?;
        let ex = w.inflight.take()?;
        release_mid(&mut self.by_mid, ex.mid, reg);
        if !w.observations.contains_key(&ex.token) {
            self.by_token.remove(&ex.token);
        }
        // A command done is one less to send again after a restart.
        self.touch(reg);
        Some(ex)
    }

    /// Establishes an observation under `token`, replacing any observation of the same target.
    pub fn add_observation(&mut self, reg: RegId, token: Token, obs: Box<Observation>) {
        let Some(s) = self.map.get_mut(&reg) else {
            return;
        };
        let w = s.work_mut();
        let same: Vec<Token> = w
            .observations
            .iter()
            .filter(|(t, o)| **t != token && o.request.same_target(&obs.request))
            .map(|(t, _)| *t)
            .collect();
        for t in same {
            w.observations.remove(&t);
            self.by_token.remove(&t);
        }
        w.observations.insert(token, obs);
        self.by_token.insert(token, reg);
        self.touch(reg);
    }

    /// Ends an observation (and its token's routing, unless the exchange in flight uses it).
    pub fn remove_observation(&mut self, reg: RegId, token: Token) -> Option<Box<Observation>> {
        let w = self.map.get_mut(&reg)?.work.as_mut()?;
        let obs = w.observations.remove(&token)?;
        if w.inflight.as_ref().map_or(true, |e| e.token != token) {
            self.by_token.remove(&token);
        }
        self.touch(reg);
        Some(obs)
    }
}

/// Message ids wrap around and an exchange not yet sent has none: a message id is released only
/// by the registration it routes to.
fn release_mid(by_mid: &mut IntMap<u16, RegId>, mid: u16, reg: RegId) {
    if by_mid.get(&mid) == Some(&reg) {
        by_mid.remove(&mid);
    }
}
