//! The harness of the deterministic shard tests: one sans-IO [`Shard`] driven by a fake clock (an
//! `Instant` advanced by hand), exact datagrams in, exact datagrams and MQTT messages out. Loss,
//! duplication and reordering are simulated by not delivering, delivering twice, or swapping
//! datagrams.
//!
//! Every call into the shard's API, and the only `ShardConfig`, is here: test bodies go through
//! [`Sim`], so a change of that API is made in this file alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lwm2m_gateway::coap::{code, opt, MessageView, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::core::authorize::Authorizer;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::ids::ShardId;
use lwm2m_gateway::core::peer::{IdentityId, SecurityMode};
use lwm2m_gateway::core::settings::ShardConfig;
use lwm2m_gateway::core::shard::{
    ImportError, ImportReport, IndexUpdate, NoIdentities, Output, Peer, Publish, Shard,
    SnapshotKind,
};
use lwm2m_gateway::lwm2m::model::ObjectRegistry;
use serde_json::Value;

use super::coap::{location_id, path_of, reply_of, Msg};
use super::repo_path;

/// Datagrams sent, with their destination.
pub type Sent = Vec<(Peer, Vec<u8>)>;
/// Datagrams sent, MQTT publishes, index changes.
pub type Taken = (Sent, Vec<Publish>, Vec<IndexUpdate>);

/// A plain-CoAP device on loopback port `port`.
pub fn peer(port: u16) -> Peer {
    Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The object definitions shipped in `xml/`.
pub fn xml_model() -> Arc<ObjectRegistry> {
    Arc::new(
        ObjectRegistry::load_dir(&repo_path("xml"))
            .expect("xml dir")
            .0,
    )
}

pub struct Sim {
    shard: Shard,
    cfg: Arc<ShardConfig>,
    now: Instant,
    out: Output,
    forbidden: u64,
}

/// A device on loopback port `port` that authenticated over DTLS as identity `serial`.
pub fn secure_peer(port: u16, serial: u32, mode: SecurityMode) -> Peer {
    Peer {
        identity: IdentityId::new(serial, mode),
        ..Peer::plain(1, SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

impl Sim {
    /// A shard with the test defaults (lifetimes 10..=100000 s), changed by `f`.
    pub fn with(f: impl FnOnce(&mut Config)) -> Sim {
        Sim::with_authorizer(f, None)
    }

    /// Like [`Sim::with`], deciding who may register as which endpoint with `auth`.
    pub fn with_authorizer(f: impl FnOnce(&mut Config), auth: Option<Arc<dyn Authorizer>>) -> Sim {
        let mut c = Config {
            workers: 1,
            lifetime_min: 10,
            lifetime_max: 100_000,
            ..Config::default()
        };
        f(&mut c);
        let mut cfg = c.shard_config(xml_model()).unwrap();
        if let Some(a) = auth {
            cfg.authorizer = a;
        }
        let cfg = Arc::new(cfg);
        Sim {
            shard: Shard::new(ShardId::default(), cfg.clone(), 42),
            cfg,
            now: Instant::now(),
            out: Output::default(),
            forbidden: 0,
        }
    }

    pub fn new() -> Sim {
        Sim::with(|_| {})
    }

    /// A shard with the test defaults and `ep` registered from `peer(5000)` (see
    /// [`Sim::register`]).
    pub fn registered(ep: &str) -> Sim {
        let mut s = Sim::new();
        s.register(peer(5000), ep, 1);
        s
    }

    /// `ep` registered from `peer(port)` and observed on /3/0/9 (echoing `tag: ep`): its
    /// location and the observation's token.
    pub fn observed(&mut self, ep: &str, port: u16, mid: u16) -> (String, Vec<u8>) {
        let loc = self.register(peer(port), ep, mid);
        self.command(
            ep,
            serde_json::json!({"reqID": 9, "msgType": "observe", "data": {"path": "/3/0/9"}, "tag": ep}),
        );
        let (t, _, _) = self.take();
        let (_, token, path, _) = sent_request(&t);
        assert_eq!(path, ["3", "0", "9"]);
        self.send(peer(port), &super::coap::observe_answer(&t[0].1, 1, b"80"));
        assert_eq!(self.publishes()[0].1["msgType"], "observe");
        (loc, token)
    }

    /// The shard's durable image as of now, the wall clock reading `wall`.
    pub fn export(&self, wall: SystemTime) -> Vec<u8> {
        self.shard.export(self.now, wall, &NoIdentities)
    }

    /// The gateway restarted `down` after `wall`: a fresh shard of the same configuration (and
    /// another seed), restored from `image`.
    pub fn restart(
        &self,
        image: &[u8],
        wall: SystemTime,
        down: Duration,
    ) -> (Sim, Result<ImportReport, ImportError>) {
        let mut s = Sim {
            shard: Shard::new(ShardId::default(), self.cfg.clone(), 43),
            cfg: self.cfg.clone(),
            now: self.now + down,
            out: Output::default(),
            forbidden: 0,
        };
        let r = s.shard.import(
            Some(image),
            None,
            s.now,
            wall + down,
            &NoIdentities,
            &mut s.out,
        );
        (s, r)
    }

    /// The same from a snapshot and the journal after it (either may be missing), as after a
    /// crash.
    pub fn recover(
        &self,
        snapshot: Option<&[u8]>,
        journal: Option<&[u8]>,
        wall: SystemTime,
        down: Duration,
    ) -> (Sim, Result<ImportReport, ImportError>) {
        let mut s = Sim {
            shard: Shard::new(ShardId::default(), self.cfg.clone(), 44),
            cfg: self.cfg.clone(),
            now: self.now + down,
            out: Output::default(),
            forbidden: 0,
        };
        let r = s.shard.import(
            snapshot,
            journal,
            s.now,
            wall + down,
            &NoIdentities,
            &mut s.out,
        );
        (s, r)
    }

    /// A snapshot taken and saved as of now; the journal after it starts with the bytes
    /// returned, and changes are logged from here on.
    pub fn checkpoint(&mut self, wall: SystemTime) -> (Vec<u8>, Vec<u8>) {
        let image = self.shard.export(self.now, wall, &NoIdentities);
        let journal = self.shard.snapshot_saved(SnapshotKind::Running);
        self.shard.track_changes();
        (image, journal)
    }

    /// Appends the journal records of what changed since the last call to `journal`, two at a
    /// time (as a worker does, a bounded number per round).
    pub fn journal(&mut self, wall: SystemTime, journal: &mut Vec<u8>) -> usize {
        let mut n = 0;
        loop {
            let (k, more) = self
                .shard
                .export_changes(self.now, wall, &NoIdentities, journal, 2);
            n += k;
            if !more {
                return n;
            }
        }
    }

    /// One call of the worker's journal writing: at most `limit` changed registrations; true
    /// if more are left.
    pub fn journal_chunk(&mut self, wall: SystemTime, journal: &mut Vec<u8>, limit: usize) -> bool {
        let names = &NoIdentities;
        self.shard
            .export_changes(self.now, wall, names, journal, limit)
            .1
    }

    /// The snapshot of a graceful stop and the journal that says so.
    pub fn stop(&mut self, wall: SystemTime) -> (Vec<u8>, Vec<u8>) {
        let image = self.shard.export(self.now, wall, &NoIdentities);
        (image, self.shard.snapshot_saved(SnapshotKind::Final))
    }

    /// Moves the clock on by `d` and lets the shard's timers fire.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.shard.on_timeout(self.now, &mut self.out);
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.shard.next_deadline()
    }

    /// How long until the shard's next deadline (zero when it has passed).
    pub fn time_to_deadline(&mut self) -> Option<Duration> {
        let now = self.now;
        self.next_deadline()
            .map(|d| d.saturating_duration_since(now))
    }

    /// A datagram from `from`.
    pub fn send(&mut self, from: Peer, bytes: &[u8]) {
        self.shard.on_datagram(self.now, from, bytes, &mut self.out);
    }

    /// An MQTT command to `ep`.
    pub fn command(&mut self, ep: &str, cmd: Value) {
        self.command_bytes(ep, cmd.to_string().as_bytes());
    }

    /// An MQTT command to `ep` with this exact payload (which need not be JSON).
    pub fn command_bytes(&mut self, ep: &str, payload: &[u8]) {
        let cmd = command::parse(payload);
        self.shard
            .on_command(self.now, ep, cmd, None, &mut self.out);
    }

    /// An MQTT command to `ep` with an MQTT 5 message expiry.
    pub fn command_with_expiry(&mut self, ep: &str, cmd: Value, expiry: Option<Duration>) {
        let cmd = command::parse(cmd.to_string().as_bytes());
        self.shard
            .on_command(self.now, ep, cmd, expiry, &mut self.out);
    }

    /// Everything the shard asked for since the last call.
    pub fn take(&mut self) -> Taken {
        let t = self
            .out
            .transmits
            .drain(..)
            .map(|t| (t.peer, t.bytes))
            .collect();
        let p = self.out.publishes.drain(..).collect();
        let i = self.out.index.drain(..).collect();
        self.forbidden += std::mem::take(&mut self.out.forbidden);
        (t, p, i)
    }

    /// Uplinks refused for their identity so far (taken with [`Sim::take`]).
    pub fn forbidden(&mut self) -> u64 {
        self.take();
        self.forbidden
    }

    /// The MQTT messages since the last call, payloads parsed; the rest is discarded.
    pub fn publishes(&mut self) -> Vec<(String, Value)> {
        self.take()
            .1
            .into_iter()
            .map(|p| (p.topic.clone(), payload_json(&p)))
            .collect()
    }

    pub fn registrations(&self) -> usize {
        self.shard.registrations()
    }

    pub fn observations(&self) -> usize {
        self.shard.observations()
    }

    /// Sends `msg` from `from` and returns the code of the first datagram in answer; the rest is
    /// discarded.
    pub fn reply_code(&mut self, from: Peer, msg: &[u8]) -> u8 {
        self.send(from, msg);
        reply_of(&self.take().0[0].1).1
    }

    /// Registers `ep` and returns its location id.
    pub fn register(&mut self, from: Peer, ep: &str, mid: u16) -> String {
        let q = format!("ep={ep}");
        let reg = Msg::con(code::POST, mid)
            .token(&[7])
            .path(&["rd"])
            .query(&[&q, "lt=600", "lwm2m=1.1", "b=U"])
            .cf(40)
            .payload(b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>");
        self.register_with(from, &reg)
    }

    /// Sends the Register `reg` from `from`, asserts it is answered 2.01 and returns the
    /// location id; what else the shard did (the register event) is discarded.
    pub fn register_with(&mut self, from: Peer, reg: &Msg) -> String {
        self.send(from, &reg.build());
        let (t, _, _) = self.take();
        assert_eq!(reply_of(&t[0].1).1, code::CREATED);
        location_id(&t[0].1).unwrap()
    }

    /// An Update of registration `id` from `from`: the answer's code.
    pub fn update(&mut self, from: Peer, id: &str, mid: u16, query: &[&str]) -> u8 {
        let upd = Msg::con(code::POST, mid).path(&["rd", id]).query(query);
        self.reply_code(from, &upd.build())
    }

    /// A `/dp` Send from `from`: the answer code and the endpoint of the publish, if any.
    pub fn send_dp(&mut self, from: Peer, mid: u16) -> (u8, Option<String>) {
        let body = br#"[{"bn":"/3/0/","n":"9","v":1}]"#;
        let dp = Msg::con(code::POST, mid)
            .path(&["dp"])
            .cf(110)
            .payload(body);
        self.send(from, &dp.build());
        let (t, pubs, _) = self.take();
        let ep = pubs
            .first()
            .and_then(|p| p.topic.split('/').nth(1).map(str::to_string));
        (reply_of(&t[0].1).1, ep)
    }
}

/// The JSON payload of a publish.
pub fn payload_json(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).unwrap()
}

/// The one CON request among `t`: (message id, token, Uri-Path segments, Accept).
pub fn sent_request(t: &[(Peer, Vec<u8>)]) -> (u16, Vec<u8>, Vec<String>, Option<u32>) {
    assert_eq!(t.len(), 1, "exactly one datagram expected");
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(v.msg_type(), MsgType::Con);
    (
        v.message_id(),
        v.token().to_vec(),
        path_of(&t[0].1),
        v.uint_option(opt::ACCEPT),
    )
}
