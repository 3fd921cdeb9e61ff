//! Deterministic tests of the sans-IO shard: a fake clock (an `Instant` advanced by hand), exact
//! datagrams in, exact datagrams and MQTT messages out. Loss, duplication and reordering are
//! simulated by simply not delivering, delivering twice, or swapping datagrams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::shard::{IndexUpdate, Output, Peer, Publish, Shard};
use lwm2m_gateway::lwm2m::model::ObjectRegistry;
use serde_json::{json, Value};

/// Datagrams sent, MQTT publishes, index changes.
type Taken = (Vec<(Peer, Vec<u8>)>, Vec<Publish>, Vec<IndexUpdate>);
/// Query, payload, content format, expected code.
type RegisterCase<'a> = (Vec<&'a str>, &'a [u8], Option<u32>, u8);

struct Sim {
    shard: Shard,
    now: Instant,
    out: Output,
}

fn peer(port: u16) -> Peer {
    Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn xml_model() -> Arc<ObjectRegistry> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xml");
    Arc::new(ObjectRegistry::load_dir(&dir).expect("xml dir").0)
}

impl Sim {
    fn with(f: impl FnOnce(&mut Config)) -> Sim {
        let mut c = Config {
            workers: 1,
            lifetime_min: 10,
            lifetime_max: 100_000,
            ..Config::default()
        };
        f(&mut c);
        let cfg = Arc::new(c.shard_config(xml_model()).unwrap());
        Sim {
            shard: Shard::new(lwm2m_gateway::core::ids::ShardId::default(), cfg, 42),
            now: Instant::now(),
            out: Output::default(),
        }
    }
    fn new() -> Sim {
        Sim::with(|_| {})
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.shard.on_timeout(self.now, &mut self.out);
    }
    fn send(&mut self, from: Peer, bytes: &[u8]) {
        self.shard.on_datagram(self.now, from, bytes, &mut self.out);
    }
    fn command(&mut self, ep: &str, cmd: Value) {
        self.shard.on_command(
            self.now,
            ep,
            command::parse(cmd.to_string().as_bytes()),
            None,
            &mut self.out,
        );
    }
    fn take(&mut self) -> Taken {
        let t = self
            .out
            .transmits
            .drain(..)
            .map(|t| (t.peer, t.bytes))
            .collect();
        let p = self.out.publishes.drain(..).collect();
        let i = self.out.index.drain(..).collect();
        (t, p, i)
    }
    fn publishes(&mut self) -> Vec<(String, Value)> {
        self.take()
            .1
            .into_iter()
            .map(|p| (p.topic, serde_json::from_slice(&p.payload).unwrap()))
            .collect()
    }
    /// Registers `ep` and returns its location id.
    fn register(&mut self, from: Peer, ep: &str, mid: u16) -> String {
        let q = format!("ep={ep}");
        self.send(
            from,
            &request(
                MsgType::Con,
                code::POST,
                mid,
                &[7],
                &["rd"],
                &[&q, "lt=600", "lwm2m=1.1", "b=U"],
                b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>",
                Some(40),
            ),
        );
        let (t, _, _) = self.take();
        let v = MessageView::parse(&t[0].1).unwrap();
        assert_eq!(v.code(), code::CREATED);
        let loc: Vec<_> = v
            .option_values(opt::LOCATION_PATH)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        loc[1].clone()
    }
}

#[allow(clippy::too_many_arguments)]
fn request(
    t: MsgType,
    c: u8,
    mid: u16,
    token: &[u8],
    path: &[&str],
    query: &[&str],
    payload: &[u8],
    cf: Option<u32>,
) -> Vec<u8> {
    let mut b = Vec::new();
    let mut m = MessageBuilder::new(&mut b, t, c, mid, token)
        .options(opt::URI_PATH, path.iter().map(|s| s.as_bytes()));
    if let Some(cf) = cf {
        m = m.uint_option(opt::CONTENT_FORMAT, cf);
    }
    m.options(opt::URI_QUERY, query.iter().map(|s| s.as_bytes()))
        .payload(payload);
    b
}

fn response(t: MsgType, c: u8, mid: u16, token: &[u8], cf: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    let mut m = MessageBuilder::new(&mut b, t, c, mid, token);
    if let Some(cf) = cf {
        m = m.uint_option(opt::CONTENT_FORMAT, cf);
    }
    m.payload(payload);
    b
}

fn reply_of(bytes: &[u8]) -> (MsgType, u8, u16, Vec<u8>) {
    let v = MessageView::parse(bytes).unwrap();
    (v.msg_type(), v.code(), v.message_id(), v.token().to_vec())
}

#[test]
fn register_update_deregister() {
    let mut s = Sim::new();
    let p = peer(5000);
    s.send(
        p,
        &request(
            MsgType::Con,
            code::POST,
            0x10,
            &[1, 2],
            &["rd"],
            &["ep=dev1", "lt=60", "lwm2m=1.1", "b=U", "imei=42"],
            b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>",
            Some(40),
        ),
    );
    let (t, pubs, idx) = s.take();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, p);
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (v.msg_type(), v.code(), v.message_id(), v.token()),
        (MsgType::Ack, code::CREATED, 0x10, &[1u8, 2][..])
    );
    let loc: Vec<_> = v.option_values(opt::LOCATION_PATH).collect();
    assert_eq!(loc[0], b"rd");
    let id = std::str::from_utf8(loc[1]).unwrap().to_string();
    assert_eq!(idx, vec![IndexUpdate::Bind(p.addr)]);
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].topic, "lwm2m/dev1/up/resp");
    assert_eq!(pubs[0].qos, 1);
    let ev: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(
        ev,
        json!({"msgType":"register","data":{"ep":"dev1","lt":60,"lwm2m":"1.1","b":"U","imei":"42",
               "alternatePath":"/","objectList":["/1/0","/3/0"]}})
    );
    assert_eq!(s.shard.registrations(), 1);

    // Update with a new lifetime and no payload: 2.04 and an update event with the full state.
    s.send(
        p,
        &request(
            MsgType::Con,
            code::POST,
            0x11,
            &[3],
            &["rd", &id],
            &["lt=120"],
            b"",
            None,
        ),
    );
    let (t, pubs, _) = s.take();
    assert_eq!(
        reply_of(&t[0].1),
        (MsgType::Ack, code::CHANGED, 0x11, vec![3])
    );
    let ev: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(ev["msgType"], "update");
    assert_eq!(ev["data"]["lt"], 120);
    assert_eq!(ev["data"]["objectList"], json!(["/1/0", "/3/0"]));

    // Deregister from another source port (lwm2m-node-lib does this): matched by location.
    s.send(
        peer(6000),
        &request(
            MsgType::Con,
            code::DELETE,
            0x12,
            &[],
            &["rd", &id],
            &[],
            b"",
            None,
        ),
    );
    let (t, pubs, idx) = s.take();
    assert_eq!(
        reply_of(&t[0].1),
        (MsgType::Ack, code::DELETED, 0x12, vec![])
    );
    assert_eq!(t[0].0, peer(6000));
    let ev: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(
        ev,
        json!({"msgType":"deregister","data":{"ep":"dev1","reason":"deregistered"}})
    );
    assert_eq!(idx, vec![IndexUpdate::Unbind(p.addr)]);
    assert_eq!(s.shard.registrations(), 0);

    // The registration is gone: another Update gets 4.04.
    s.send(
        p,
        &request(
            MsgType::Con,
            code::POST,
            0x13,
            &[],
            &["rd", &id],
            &[],
            b"",
            None,
        ),
    );
    assert_eq!(reply_of(&s.take().0[0].1).1, code::NOT_FOUND);
}

#[test]
fn duplicate_con_gets_cached_response_and_is_processed_once() {
    let mut s = Sim::new();
    let reg = request(
        MsgType::Con,
        code::POST,
        0x20,
        &[9],
        &["rd"],
        &["ep=dup"],
        b"</3/0>",
        None,
    );
    s.send(peer(5000), &reg);
    let (t1, p1, _) = s.take();
    assert_eq!(p1.len(), 1);
    s.advance(Duration::from_secs(30));
    s.send(peer(5000), &reg);
    let (t2, p2, _) = s.take();
    assert_eq!(t1[0].1, t2[0].1, "the duplicate gets the very same 2.01");
    assert!(p2.is_empty(), "and is not processed again");
    assert_eq!(s.shard.registrations(), 1);
    // After EXCHANGE_LIFETIME (247 s) the id is fresh again: a new registration replaces the old.
    s.advance(Duration::from_secs(250));
    s.send(peer(5000), &reg);
    let pubs = s.publishes();
    let kinds: Vec<_> = pubs
        .iter()
        .map(|(_, v)| v["msgType"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["deregister", "register"]);
    assert_eq!(pubs[0].1["data"]["reason"], "replaced");
}

#[test]
fn registration_expires_after_its_lifetime_and_update_extends_it() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "exp", 1);
    s.take();
    s.advance(Duration::from_secs(599));
    assert!(s.publishes().is_empty());
    // Update at t=599 s: lifetime restarts.
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            2,
            &[],
            &["rd", &id],
            &[],
            b"",
            None,
        ),
    );
    s.take();
    s.advance(Duration::from_secs(599));
    assert!(s.publishes().is_empty(), "extended by the update");
    s.advance(Duration::from_secs(1));
    let pubs = s.publishes();
    assert_eq!(
        pubs,
        vec![(
            "lwm2m/exp/up/resp".to_string(),
            json!({"msgType":"deregister","data":{"ep":"exp","reason":"expired"}})
        )]
    );
    assert_eq!(s.shard.registrations(), 0);
    assert_eq!(s.shard.next_deadline(), None);
}

#[test]
fn register_rejections() {
    let mut s = Sim::new();
    let cases: Vec<RegisterCase> = vec![
        (
            vec!["ep=a", "lwm2m=1.3"],
            b"",
            None,
            code::PRECONDITION_FAILED,
        ),
        (
            vec!["ep=a", "lwm2m=2.0"],
            b"",
            None,
            code::PRECONDITION_FAILED,
        ),
        (vec!["lt=60"], b"", None, code::BAD_REQUEST),
        (vec!["ep="], b"", None, code::BAD_REQUEST),
        (vec!["ep=a/b"], b"", None, code::BAD_REQUEST),
        (vec!["ep=a+"], b"", None, code::BAD_REQUEST),
        (vec!["ep=#"], b"", None, code::BAD_REQUEST),
        (vec!["ep=a", "lt=5"], b"", None, code::BAD_REQUEST),
        (vec!["ep=a", "lt=100001"], b"", None, code::BAD_REQUEST),
        (vec!["ep=a", "lt=x"], b"", None, code::BAD_REQUEST),
        (vec!["ep=a"], b"</3/0", None, code::BAD_REQUEST),
        (
            vec!["ep=a"],
            b"</3/0>",
            Some(42),
            code::UNSUPPORTED_CONTENT_FORMAT,
        ),
    ];
    for (i, (q, payload, cf, expect)) in cases.into_iter().enumerate() {
        s.send(
            peer(5000),
            &request(
                MsgType::Con,
                code::POST,
                100 + i as u16,
                &[],
                &["rd"],
                &q,
                payload,
                cf,
            ),
        );
        let (t, pubs, _) = s.take();
        assert_eq!(
            reply_of(&t[0].1).1,
            expect,
            "{q:?} {:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(pubs.is_empty());
    }
    let long = format!("ep={}", "e".repeat(256));
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            200,
            &[],
            &["rd"],
            &[&long],
            b"",
            None,
        ),
    );
    assert_eq!(reply_of(&s.take().0[0].1).1, code::BAD_REQUEST);
    // wrong methods and paths
    s.send(
        peer(5000),
        &request(MsgType::Con, code::GET, 201, &[], &["rd"], &[], b"", None),
    );
    assert_eq!(reply_of(&s.take().0[0].1).1, code::METHOD_NOT_ALLOWED);
    s.send(
        peer(5000),
        &request(MsgType::Con, code::GET, 202, &[], &["x"], &[], b"", None),
    );
    assert_eq!(reply_of(&s.take().0[0].1).1, code::NOT_FOUND);
    // unknown critical option 9
    let mut b = Vec::new();
    MessageBuilder::new(&mut b, MsgType::Con, code::POST, 203, &[])
        .option(9, b"")
        .option(opt::URI_PATH, b"rd")
        .finish();
    s.send(peer(5000), &b);
    assert_eq!(reply_of(&s.take().0[0].1).1, code::BAD_OPTION);
    // a NON request gets a NON answer
    s.send(
        peer(5000),
        &request(
            MsgType::Non,
            code::POST,
            204,
            &[5],
            &["rd"],
            &["ep="],
            b"",
            None,
        ),
    );
    let (mt, c, _, tok) = reply_of(&s.take().0[0].1);
    assert_eq!((mt, c, tok), (MsgType::Non, code::BAD_REQUEST, vec![5]));
    assert_eq!(s.shard.registrations(), 0);
    // CoAP ping
    s.send(peer(5000), &[0x40, 0, 0x12, 0x34]);
    assert_eq!(s.take().0[0].1, vec![0x70, 0, 0x12, 0x34]);
}

#[test]
fn update_from_new_address_moves_the_device() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "nat", 1);
    s.send(
        peer(7000),
        &request(
            MsgType::Con,
            code::POST,
            2,
            &[],
            &["rd", &id],
            &["b=U"],
            b"",
            None,
        ),
    );
    let (_, _, idx) = s.take();
    assert_eq!(
        idx,
        vec![
            IndexUpdate::Unbind(peer(5000).addr),
            IndexUpdate::Bind(peer(7000).addr)
        ]
    );
    s.command(
        "nat",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (t, _, _) = s.take();
    assert_eq!(
        t[0].0,
        peer(7000),
        "downlinks follow the Update's source address"
    );
}

fn sent_request(t: &[(Peer, Vec<u8>)]) -> (u16, Vec<u8>, Vec<String>, Option<u32>) {
    assert_eq!(t.len(), 1, "exactly one datagram expected");
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(v.msg_type(), MsgType::Con);
    let path = v
        .option_values(opt::URI_PATH)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    (
        v.message_id(),
        v.token().to_vec(),
        path,
        v.uint_option(opt::ACCEPT),
    )
}

#[test]
fn read_piggybacked_response_is_published_with_echo() {
    let mut s = Sim::new();
    s.register(peer(5000), "r1", 1);
    s.take();
    s.command(
        "r1",
        json!({"reqID": "abc", "extra": [1], "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (t, pubs, _) = s.take();
    assert!(pubs.is_empty());
    let (mid, token, path, _) = sent_request(&t);
    assert_eq!(path, ["3", "0", "0"]);
    assert_eq!(token.len(), 8);
    assert_eq!(token[0], 0, "first token byte is the shard");
    s.send(
        peer(5000),
        &response(
            MsgType::Ack,
            code::CONTENT,
            mid,
            &token,
            Some(0),
            b"Open Mobile Alliance",
        ),
    );
    assert_eq!(
        s.publishes(),
        vec![(
            "lwm2m/r1/up/resp".to_string(),
            json!({"reqID":"abc","extra":[1],"msgType":"read","data":{"reqPath":"/3/0/0","code":"2.05","codeMsg":"content",
                   "content":[{"path":"/3/0/0","value":"Open Mobile Alliance"}]}})
        )]
    );
    // A late duplicate of the same ACK is ignored.
    s.send(
        peer(5000),
        &response(MsgType::Ack, code::CONTENT, mid, &token, Some(0), b"x"),
    );
    let (t, p, _) = s.take();
    assert!(t.is_empty() && p.is_empty());
}

#[test]
fn piggybacked_answer_with_a_foreign_message_id_is_matched_by_token() {
    // lwm2m-node-lib right after registering answers with its own message id (seen on the wire).
    let mut s = Sim::new();
    s.register(peer(5000), "nodelib", 1);
    s.take();
    s.command(
        "nodelib",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (mid, token, _, _) = sent_request(&s.take().0);
    s.send(
        peer(5000),
        &response(
            MsgType::Ack,
            code::CONTENT,
            mid ^ 0x1ec6,
            &token,
            None,
            b"OMA",
        ),
    );
    assert_eq!(
        s.publishes()[0].1["data"]["content"],
        json!([{"path":"/3/0/0","value":"OMA"}])
    );
}

#[test]
fn lost_ack_retransmits_then_times_out() {
    let mut s = Sim::new();
    s.register(peer(5000), "lossy", 1);
    s.take();
    s.command(
        "lossy",
        json!({"reqID": 5, "msgType": "read", "data": {"path": "/3/0/9"}}),
    );
    let (t, _, _) = s.take();
    let first = t[0].1.clone();
    // RFC 7252: 4 retransmissions with doubling timeouts (initial 2-3 s), then give up.
    let mut retransmits = 0;
    let mut elapsed = Duration::ZERO;
    loop {
        let d = s.shard.next_deadline().unwrap() - s.now;
        elapsed += d;
        s.advance(d);
        let (t, pubs, _) = s.take();
        if !pubs.is_empty() {
            let (topic, v): (String, Value) = (
                pubs[0].topic.clone(),
                serde_json::from_slice(&pubs[0].payload).unwrap(),
            );
            assert_eq!(topic, "lwm2m/lossy/up/resp");
            assert_eq!(
                v,
                json!({"reqID":5,"msgType":"coap_timeout","data":{"path":"/3/0/9"}})
            );
            assert!(t.is_empty());
            break;
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].1, first, "retransmission is byte-identical");
        retransmits += 1;
    }
    assert_eq!(retransmits, 4);
    assert!(
        elapsed >= Duration::from_secs(62) && elapsed <= Duration::from_secs(93),
        "{elapsed:?}"
    );
}

#[test]
fn retransmission_answered_late_still_completes() {
    let mut s = Sim::new();
    s.register(peer(5000), "late", 1);
    s.take();
    s.command(
        "late",
        json!({"reqID": 1, "msgType": "execute", "data": {"path": "/3/0/4", "args": "5"}}),
    );
    let (t, _, _) = s.take();
    let (mid, token, _, _) = sent_request(&t);
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(v.code(), code::POST);
    assert_eq!(v.payload(), b"5");
    assert_eq!(v.content_format(), Some(0));
    let d = s.shard.next_deadline().unwrap() - s.now;
    s.advance(d);
    assert_eq!(s.take().0.len(), 1, "first retransmission");
    s.send(
        peer(5000),
        &response(MsgType::Ack, code::CHANGED, mid, &token, None, b""),
    );
    let pubs = s.publishes();
    assert_eq!(
        pubs[0].1,
        json!({"reqID":1,"msgType":"execute","data":{"reqPath":"/3/0/4","code":"2.04","codeMsg":"changed"}})
    );
    // The stale retransmission timer fires into nothing.
    s.advance(Duration::from_secs(100));
    let (t, p, _) = s.take();
    assert!(t.is_empty() && p.is_empty());
}

#[test]
fn empty_ack_then_separate_con_response() {
    let mut s = Sim::new();
    s.register(peer(5000), "sep", 1);
    s.take();
    s.command(
        "sep",
        json!({"reqID": 2, "msgType": "discover", "data": {"path": "/3/0"}}),
    );
    let (t, _, _) = s.take();
    let (mid, token, _, accept) = sent_request(&t);
    assert_eq!(accept, Some(40));
    s.send(peer(5000), &[0x60, 0, (mid >> 8) as u8, mid as u8]);
    assert_eq!(
        s.publishes(),
        vec![(
            "lwm2m/sep/up/resp".to_string(),
            json!({"reqID":2,"msgType":"ack","data":{"path":"/3/0"}})
        )]
    );
    // No retransmission after the empty ACK.
    s.advance(Duration::from_secs(100));
    assert!(s.take().0.is_empty());
    let sep = response(
        MsgType::Con,
        code::CONTENT,
        0x7777,
        &token,
        Some(40),
        b"</3/0>,</3/0/0>,</3/0/9>",
    );
    s.send(peer(5000), &sep);
    let (t, pubs, _) = s.take();
    assert_eq!(
        t[0].1,
        vec![0x60, 0, 0x77, 0x77],
        "the separate response is ACKed"
    );
    let v: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(
        v,
        json!({"reqID":2,"msgType":"discover","data":{"reqPath":"/3/0","code":"2.05","codeMsg":"content",
                          "content":["</3/0>","</3/0/0>","</3/0/9>"]}})
    );
    // Our ACK was lost: the device retransmits; it gets the ACK again, nothing is published twice.
    s.send(peer(5000), &sep);
    let (t, pubs, _) = s.take();
    assert_eq!(t[0].1, vec![0x60, 0, 0x77, 0x77]);
    assert!(pubs.is_empty());
}

#[test]
fn separate_response_never_comes() {
    let mut s = Sim::with(|c| c.separate_response_timeout = Duration::from_secs(30));
    s.register(peer(5000), "nosep", 1);
    s.take();
    s.command(
        "nosep",
        json!({"reqID": 3, "msgType": "delete", "data": {"path": "/5/0"}}),
    );
    let (t, _, _) = s.take();
    let (mid, _, _, _) = sent_request(&t);
    s.send(peer(5000), &[0x60, 0, (mid >> 8) as u8, mid as u8]);
    s.take();
    s.advance(Duration::from_secs(29));
    assert!(s.publishes().is_empty());
    s.advance(Duration::from_secs(1));
    let pubs = s.publishes();
    assert_eq!(pubs[0].1["msgType"], "coap_timeout");
    assert_eq!(pubs[0].1["data"]["path"], "/5/0");
}

#[test]
fn reset_is_published_as_coap_reset() {
    let mut s = Sim::new();
    s.register(peer(5000), "rst", 1);
    s.take();
    s.command(
        "rst",
        json!({"reqID": 4, "msgType": "read", "data": {"path": "/3/0/1"}}),
    );
    let (mid, _, _, _) = sent_request(&s.take().0);
    s.send(peer(5000), &[0x70, 0, (mid >> 8) as u8, mid as u8]);
    assert_eq!(
        s.publishes()[0].1,
        json!({"reqID":4,"msgType":"coap_reset","data":{"path":"/3/0/1"}})
    );
}

#[test]
fn one_request_in_flight_per_device_in_order() {
    let mut s = Sim::new();
    s.register(peer(5000), "serial", 1);
    s.take();
    for i in 0..3 {
        s.command(
            "serial",
            json!({"reqID": i, "msgType": "read", "data": {"path": format!("/3/0/{i}")}}),
        );
    }
    let (t, _, _) = s.take();
    let (mid, token, path, _) = sent_request(&t);
    assert_eq!(path, ["3", "0", "0"]);
    // Reordering on the wire: an answer for a token we do not have in flight is not confused.
    let mut other = token.clone();
    other[7] ^= 1;
    s.send(
        peer(5000),
        &response(MsgType::Ack, code::CONTENT, mid, &other, Some(0), b"x"),
    );
    assert!(s.take().1.is_empty());
    s.send(
        peer(5000),
        &response(MsgType::Ack, code::CONTENT, mid, &token, Some(0), b"v0"),
    );
    let (t, pubs, _) = s.take();
    assert_eq!(pubs.len(), 1);
    let (mid, token, path, _) = sent_request(&t);
    assert_eq!(path, ["3", "0", "1"]);
    s.send(
        peer(5000),
        &response(MsgType::Ack, code::NOT_FOUND, mid, &token, None, b""),
    );
    let (t, pubs, _) = s.take();
    let v: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(
        v,
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/1","code":"4.04","codeMsg":"not_found"}})
    );
    assert_eq!(sent_request(&t).2, ["3", "0", "2"]);
}

#[test]
fn bad_commands_get_error_responses() {
    let mut s = Sim::new();
    s.register(peer(5000), "bad", 1);
    s.take();
    let mut check = |payload: &[u8], expect: Value| {
        s.shard
            .on_command(s.now, "bad", command::parse(payload), None, &mut s.out);
        let (t, pubs, _) = s.take();
        assert!(
            t.is_empty(),
            "nothing sent to the device for {:?}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(pubs.len(), 1);
        assert_eq!(pubs[0].topic, "lwm2m/bad/up/resp");
        let mut v: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
        let reason = v["data"].as_object_mut().unwrap().remove("reason");
        assert!(
            reason
                .as_ref()
                .and_then(|r| r.as_str())
                .is_some_and(|r| !r.is_empty()),
            "{v}"
        );
        assert_eq!(v, expect);
    };
    check(
        b"{not json",
        json!({"msgType":"error","data":{"reqPath":null,"code":"4.00","codeMsg":"bad_request"}}),
    );
    check(
        br#"{"reqID":1,"data":{"path":"/3/0/0"}}"#,
        json!({"reqID":1,"msgType":"error","data":{"reqPath":"/3/0/0","code":"4.00","codeMsg":"bad_request"}}),
    );
    check(
        br#"{"reqID":2,"msgType":"reboot","data":{"path":"/3/0/4"}}"#,
        json!({"reqID":2,"msgType":"reboot","data":{"reqPath":"/3/0/4","code":"4.00","codeMsg":"bad_request"}}),
    );
    check(
        br#"{"reqID":3,"msgType":"read","data":{"path":"/3/x/0"}}"#,
        json!({"reqID":3,"msgType":"read","data":{"reqPath":"/3/x/0","code":"4.00","codeMsg":"bad_request"}}),
    );
    check(
        br#"{"reqID":4,"msgType":"read","data":{}}"#,
        json!({"reqID":4,"msgType":"read","data":{"reqPath":null,"code":"4.00","codeMsg":"bad_request"}}),
    );
    check(
        br#"{"reqID":5,"msgType":"write","data":{"path":"/3/0/13","type":"Nope","value":1}}"#,
        json!({"reqID":5,"msgType":"write","data":{"reqPath":"/3/0/13","code":"4.00","codeMsg":"bad_request"}}),
    );
    check(br#"{"reqID":6,"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":"abc"}}"#, json!({"reqID":6,"msgType":"write","data":{"reqPath":"/3/0/13","code":"4.00","codeMsg":"bad_request"}}));
    check(
        br#"{"reqID":7,"msgType":"execute","data":{"path":"/3/0"}}"#,
        json!({"reqID":7,"msgType":"execute","data":{"reqPath":"/3/0","code":"4.00","codeMsg":"bad_request"}}),
    );
    check(
        br#"{"reqID":8,"msgType":"read","data":{"path":"/65535/0"}}"#,
        json!({"reqID":8,"msgType":"read","data":{"reqPath":"/65535/0","code":"4.00","codeMsg":"bad_request"}}),
    );
    s.shard.on_command(
        s.now,
        "nobody",
        command::parse(br#"{"reqID":9,"msgType":"read","data":{"path":"/3/0/0"}}"#),
        None,
        &mut s.out,
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].0, "lwm2m/nobody/up/resp");
    assert_eq!(pubs[0].1["data"]["code"], "4.04");
    assert_eq!(pubs[0].1["data"]["reason"], "endpoint not registered");
}

#[test]
fn write_single_resource_as_tlv_and_text() {
    let mut s = Sim::new();
    s.register(peer(5000), "w", 1);
    s.take();
    // EMQX example: Integer 12345 to /3/0/13 as TLV C2 0D 30 39, PUT.
    s.command("w", json!({"reqID": 1, "msgType": "write", "data": {"path": "/3/0/13", "type": "Integer", "value": 12345, "format": "tlv"}}));
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(v.code(), code::PUT);
    assert_eq!(v.content_format(), Some(11542));
    assert_eq!(v.payload(), [0xC2, 0x0D, 0x30, 0x39]);
    let (mid, token) = (v.message_id(), v.token().to_vec());
    s.send(
        peer(5000),
        &response(MsgType::Ack, code::CHANGED, mid, &token, None, b""),
    );
    assert_eq!(
        s.publishes()[0].1,
        json!({"reqID":1,"msgType":"write","data":{"reqPath":"/3/0/13","code":"2.04","codeMsg":"changed"}})
    );
    // Text, type taken from the object definition of /3/0/14 (UTC Offset, String).
    s.command("w", json!({"reqID": 2, "msgType": "write", "data": {"path": "/3/0/14", "value": "+02:00", "format": "text"}}));
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (v.code(), v.content_format(), v.payload()),
        (code::PUT, Some(0), &b"+02:00"[..])
    );
}

#[test]
fn queued_commands_are_answered_when_the_device_goes_away() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "gone", 1);
    s.take();
    s.command(
        "gone",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    s.command(
        "gone",
        json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/1"}}),
    );
    s.take();
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::DELETE,
            9,
            &[],
            &["rd", &id],
            &[],
            b"",
            None,
        ),
    );
    let pubs = s.publishes();
    let got: Vec<_> = pubs
        .iter()
        .map(|(_, v)| {
            (
                v["reqID"].clone(),
                v["msgType"].clone(),
                v["data"]["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(1), json!("read"), json!("4.04")),
            (json!(2), json!("read"), json!("4.04")),
            (Value::Null, json!("deregister"), Value::Null)
        ]
    );
}

#[test]
fn downlink_queue_is_bounded() {
    let mut s = Sim::with(|c| c.downlink_queue_max = 2);
    s.register(peer(5000), "full", 1);
    s.take();
    for i in 0..4 {
        s.command(
            "full",
            json!({"reqID": i, "msgType": "read", "data": {"path": "/3/0/0"}}),
        );
    }
    let pubs = s.publishes();
    // one in flight, two queued, the fourth refused
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].1["reqID"], 3);
    assert_eq!(pubs[0].1["data"]["code"], "5.03");
}

#[test]
fn unknown_token_con_response_gets_rst() {
    let mut s = Sim::new();
    s.send(
        peer(5000),
        &response(
            MsgType::Con,
            code::CONTENT,
            0x99,
            &[0, 1, 2, 3, 4, 5, 6, 7],
            Some(0),
            b"1",
        ),
    );
    assert_eq!(s.take().0[0].1, vec![0x70, 0, 0, 0x99]);
    s.send(
        peer(5000),
        &response(
            MsgType::Ack,
            code::CONTENT,
            0x98,
            &[0, 1, 2, 3, 4, 5, 6, 7],
            Some(0),
            b"1",
        ),
    );
    assert!(s.take().0.is_empty(), "an unexpected ACK is ignored");
}

#[test]
fn custom_topics_and_placeholders() {
    let mut s = Sim::with(|c| {
        c.mountpoint = "gw/%a/".into();
        c.translators.register.topic = "${endpoint_name}/reg".into();
        c.translators.command.topic = "%e/dn".into();
    });
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            1,
            &[],
            &["rd"],
            &["ep=t2"],
            b"",
            None,
        ),
    );
    let (_, pubs, _) = s.take();
    assert_eq!(pubs[0].topic, "gw/127.0.0.1/t2/reg");
    assert_eq!(pubs[0].qos, 1);
    let ev: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(
        ev,
        json!({"msgType":"register","data":{"ep":"t2","lt":86400}}),
        "no payload: no objectList"
    );
}

/// Device-side notification/response with an Observe option.
fn observe_msg(
    t: MsgType,
    c: u8,
    mid: u16,
    token: &[u8],
    seq: Option<u32>,
    cf: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    let mut m = MessageBuilder::new(&mut b, t, c, mid, token);
    if let Some(s) = seq {
        m = m.uint_option(opt::OBSERVE, s);
    }
    if let Some(cf) = cf {
        m = m.uint_option(opt::CONTENT_FORMAT, cf);
    }
    m.payload(payload);
    b
}

fn senml(bn: &str, v: i64) -> Vec<u8> {
    format!(r#"[{{"bn":"{bn}","v":{v}}}]"#).into_bytes()
}

#[test]
fn observe_notify_and_cancel() {
    let mut s = Sim::new();
    s.register(peer(5000), "obs", 1);
    s.take();
    s.command(
        "obs",
        json!({"reqID": 9, "msgType": "observe", "data": {"path": "/3/0/9"}}),
    );
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (
            v.code(),
            v.uint_option(opt::OBSERVE),
            v.uint_option(opt::ACCEPT)
        ),
        (code::GET, Some(0), Some(110))
    );
    let (mid, token) = (v.message_id(), v.token().to_vec());
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Ack,
            code::CONTENT,
            mid,
            &token,
            Some(5),
            Some(110),
            &senml("/3/0/9", 80),
        ),
    );
    assert_eq!(
        s.publishes(),
        vec![(
            "lwm2m/obs/up/resp".into(),
            json!({"reqID":9,"msgType":"observe","seqNum":5,"data":{"reqPath":"/3/0/9","code":"2.05","codeMsg":"content","content":[{"path":"/3/0/9","value":80}]}})
        )]
    );
    assert_eq!(s.shard.observations(), 1);
    // NON notification, from a new source port (NAT rebinding): matched by token.
    s.send(
        peer(5999),
        &observe_msg(
            MsgType::Non,
            code::CONTENT,
            100,
            &token,
            Some(6),
            Some(110),
            &senml("/3/0/9", 79),
        ),
    );
    assert_eq!(
        s.publishes(),
        vec![(
            "lwm2m/obs/up/notify".into(),
            json!({"reqID":9,"msgType":"notify","seqNum":6,"data":{"reqPath":"/3/0/9","code":"2.05","codeMsg":"content","content":[{"path":"/3/0/9","value":79}]}})
        )]
    );
    // Reordered older notification: stale, not published (RFC 7641 §3.4).
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Non,
            code::CONTENT,
            101,
            &token,
            Some(4),
            Some(110),
            &senml("/3/0/9", 81),
        ),
    );
    assert!(s.publishes().is_empty());
    // CON notification: ACKed; its duplicate is ACKed again but not published twice.
    let con = observe_msg(
        MsgType::Con,
        code::CONTENT,
        102,
        &token,
        Some(7),
        Some(110),
        &senml("/3/0/9", 78),
    );
    s.send(peer(5000), &con);
    let (t, p, _) = s.take();
    assert_eq!(t[0].1, vec![0x60, 0, 0, 102]);
    assert_eq!(p.len(), 1);
    s.send(peer(5000), &con);
    let (t, p, _) = s.take();
    assert_eq!(t[0].1, vec![0x60, 0, 0, 102]);
    assert!(p.is_empty());
    // Much later, a wrapped-around low sequence number is fresh again (128 s rule).
    s.advance(Duration::from_secs(200));
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Non,
            code::CONTENT,
            103,
            &token,
            Some(1),
            Some(110),
            &senml("/3/0/9", 77),
        ),
    );
    assert_eq!(s.publishes()[0].1["seqNum"], 1);
    // cancel-observe: GET Observe=1 with the observation's token.
    s.command(
        "obs",
        json!({"reqID": 10, "msgType": "cancel-observe", "data": {"path": "/3/0/9"}}),
    );
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (v.uint_option(opt::OBSERVE), v.token()),
        (Some(1), &token[..])
    );
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            &token,
            None,
            Some(110),
            &senml("/3/0/9", 77),
        ),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].1["msgType"], "cancel-observe");
    assert_eq!(pubs[0].1["data"]["content"][0]["value"], 77);
    assert_eq!(s.shard.observations(), 0);
    // A notification after the cancel gets RST.
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Con,
            code::CONTENT,
            104,
            &token,
            Some(9),
            Some(110),
            &senml("/3/0/9", 1),
        ),
    );
    assert_eq!(s.take().0[0].1, vec![0x70, 0, 0, 104]);
}

#[test]
fn error_notification_and_deregistration_end_observations() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "obs2", 1);
    s.take();
    let mut tokens = Vec::new();
    for path in ["/3/0/9", "/3/0/13"] {
        s.command(
            "obs2",
            json!({"reqID": path, "msgType": "observe", "data": {"path": path}}),
        );
        let (t, _, _) = s.take();
        let v = MessageView::parse(&t[0].1).unwrap();
        tokens.push(v.token().to_vec());
        s.send(
            peer(5000),
            &observe_msg(
                MsgType::Ack,
                code::CONTENT,
                v.message_id(),
                v.token(),
                Some(1),
                Some(0),
                b"1",
            ),
        );
        s.take();
    }
    assert_eq!(s.shard.observations(), 2);
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Non,
            code::NOT_FOUND,
            1,
            &tokens[0],
            Some(2),
            None,
            b"",
        ),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].0, "lwm2m/obs2/up/notify");
    assert_eq!(
        pubs[0].1,
        json!({"reqID":"/3/0/9","msgType":"notify","seqNum":2,"data":{"reqPath":"/3/0/9","code":"4.04","codeMsg":"not_found"}})
    );
    assert_eq!(s.shard.observations(), 1);
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::DELETE,
            2,
            &[],
            &["rd", &id],
            &[],
            b"",
            None,
        ),
    );
    s.take();
    assert_eq!(s.shard.observations(), 0);
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Con,
            code::CONTENT,
            3,
            &tokens[1],
            Some(3),
            Some(0),
            b"2",
        ),
    );
    assert_eq!(
        s.take().0[0].1,
        vec![0x70, 0, 0, 3],
        "observations end with the registration"
    );
}

#[test]
fn composite_read_and_write() {
    let mut s = Sim::new();
    s.register(peer(5000), "comp", 1);
    s.take();
    s.command(
        "comp",
        json!({"reqID": 1, "msgType": "read-composite", "data": {"paths": ["/3/0/0", "/3/0/9"]}}),
    );
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (v.code(), v.content_format(), v.uint_option(opt::ACCEPT)),
        (code::FETCH, Some(110), Some(110))
    );
    let body: Value = serde_json::from_slice(v.payload()).unwrap();
    let names: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}{}",
                r["bn"].as_str().unwrap_or(""),
                r["n"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(names, ["/3/0/0", "/3/0/9"]);
    let answer = br#"[{"bn":"/3/0/","n":"0","vs":"ACME"},{"n":"9","v":50}]"#;
    s.send(
        peer(5000),
        &response(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            v.token(),
            Some(110),
            answer,
        ),
    );
    assert_eq!(
        s.publishes()[0].1,
        json!({"reqID":1,"msgType":"read-composite","data":{"reqPath":["/3/0/0","/3/0/9"],"code":"2.05","codeMsg":"content",
               "content":[{"path":"/3/0/0","value":"ACME"},{"path":"/3/0/9","value":50}]}})
    );
    s.command("comp", json!({"reqID": 2, "msgType": "write-composite", "data": {"content": [
        {"path": "/3/0/14", "type": "String", "value": "+02:00"}, {"path": "/1/0/1", "type": "Integer", "value": 300}]}}));
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!((v.code(), v.content_format()), (code::IPATCH, Some(110)));
    let body: Value = serde_json::from_slice(v.payload()).unwrap();
    assert_eq!(body.as_array().unwrap().len(), 2);
    s.send(
        peer(5000),
        &response(
            MsgType::Ack,
            code::CHANGED,
            v.message_id(),
            v.token(),
            None,
            b"",
        ),
    );
    assert_eq!(s.publishes()[0].1["data"]["code"], "2.04");
    // composite commands need SenML: a TLV override is refused
    s.command("comp", json!({"reqID": 3, "msgType": "read-composite", "data": {"paths": ["/3/0/0"], "format": "tlv"}}));
    assert_eq!(s.publishes()[0].1["data"]["code"], "4.00");
}

#[test]
fn send_is_published_on_the_notify_topic() {
    let mut s = Sim::new();
    s.register(peer(5000), "sender", 1);
    s.take();
    let body = br#"[{"bn":"/3/0/","n":"9","v":42}]"#;
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            7,
            &[],
            &["dp"],
            &[],
            body,
            Some(110),
        ),
    );
    let (t, pubs, _) = s.take();
    assert_eq!(reply_of(&t[0].1), (MsgType::Ack, code::CHANGED, 7, vec![]));
    assert_eq!(pubs[0].topic, "lwm2m/sender/up/notify");
    let v: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(
        v,
        json!({"msgType":"send","data":{"content":[{"path":"/3/0/9","value":42}]}})
    );
    s.send(
        peer(6000),
        &request(
            MsgType::Con,
            code::POST,
            8,
            &[],
            &["dp"],
            &[],
            body,
            Some(110),
        ),
    );
    assert_eq!(
        reply_of(&s.take().0[0].1).1,
        code::NOT_FOUND,
        "unregistered address"
    );
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            9,
            &[],
            &["dp"],
            &[],
            b"1",
            Some(0),
        ),
    );
    assert_eq!(
        reply_of(&s.take().0[0].1).1,
        code::UNSUPPORTED_CONTENT_FORMAT
    );
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            10,
            &[],
            &["dp"],
            &[],
            b"[{",
            Some(110),
        ),
    );
    assert_eq!(reply_of(&s.take().0[0].1).1, code::BAD_REQUEST);
}

#[test]
fn queue_mode_device_gets_queued_commands_in_order_after_update() {
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(22));
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            1,
            &[],
            &["rd"],
            &["ep=sleepy", "lt=600", "b=UQ"],
            b"</3/0>",
            None,
        ),
    );
    let (t, _, _) = s.take();
    let id = MessageView::parse(&t[0].1)
        .unwrap()
        .option_values(opt::LOCATION_PATH)
        .nth(1)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .unwrap();
    // Reachable right after registering.
    s.command(
        "sleepy",
        json!({"reqID": 0, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (t, _, _) = s.take();
    s.send(peer(5000), &answer_to(&t[0].1, code::CONTENT, b"a"));
    assert_eq!(s.publishes()[0].1["reqID"], 0);
    // Asleep after the window: commands wait, nothing is sent.
    s.advance(Duration::from_secs(25));
    for i in 1..=3 {
        s.command(
            "sleepy",
            json!({"reqID": i, "msgType": "read", "data": {"path": format!("/3/0/{i}")}}),
        );
    }
    let (t, p, _) = s.take();
    assert!(t.is_empty() && p.is_empty());
    // The device wakes up with an Update (from a new port): queued commands go out one by one, in order.
    s.send(
        peer(5001),
        &request(
            MsgType::Con,
            code::POST,
            2,
            &[],
            &["rd", &id],
            &[],
            b"",
            None,
        ),
    );
    let (t, _, _) = s.take();
    assert_eq!(reply_of(&t[0].1).1, code::CHANGED);
    assert_eq!(t.len(), 2, "the 2.04 and then the first queued request");
    assert_eq!(t[1].0, peer(5001));
    let mut next = t[1].1.clone();
    for i in 1..=3 {
        let v = MessageView::parse(&next).unwrap();
        let path: Vec<_> = v
            .option_values(opt::URI_PATH)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        assert_eq!(path, ["3", "0", &i.to_string()]);
        s.send(peer(5001), &answer_to(&next, code::CONTENT, b"x"));
        let (t, p, _) = s.take();
        assert_eq!(
            serde_json::from_slice::<Value>(&p[0].payload).unwrap()["reqID"],
            i
        );
        if i < 3 {
            next = t[0].1.clone();
        } else {
            assert!(t.is_empty());
        }
    }
}

#[test]
fn queued_commands_expire() {
    let mut s = Sim::with(|c| {
        c.qmode_time_window = Duration::from_secs(10);
        c.downlink_queue_max_age = Some(Duration::from_secs(60));
    });
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            1,
            &[],
            &["rd"],
            &["ep=nap", "lt=600", "lwm2m=1.1", "Q"],
            b"</3/0>",
            None,
        ),
    );
    s.take();
    s.advance(Duration::from_secs(11));
    s.command(
        "nap",
        json!({"reqID": "late", "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    assert!(s.take().0.is_empty());
    s.advance(Duration::from_secs(59));
    assert!(s.publishes().is_empty());
    s.advance(Duration::from_secs(1));
    assert_eq!(
        s.publishes()[0].1,
        json!({"reqID":"late","msgType":"coap_timeout","data":{"path":"/3/0/0","reason":"expired in queue"}})
    );
}

#[test]
fn auto_observe_follows_emqx_master() {
    let mut s = Sim::with(|c| c.auto_observe = lwm2m_gateway::config::AutoObserve::All);
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            1,
            &[],
            &["rd"],
            &["ep=auto", "lt=600"],
            b"</1/0>,</3/0>,</3303/0>,</31024/0>",
            None,
        ),
    );
    let (t, _, _) = s.take();
    assert_eq!(t.len(), 2, "2.01, then the first observe");
    assert_eq!(reply_of(&t[0].1).1, code::CREATED);
    let v = MessageView::parse(&t[1].1).unwrap();
    assert_eq!(v.uint_option(opt::OBSERVE), Some(0));
    let path: Vec<_> = v.option_values(opt::URI_PATH).collect();
    assert_eq!(path, [b"3".as_slice(), b"0"], "object 1 is skipped");
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            v.token(),
            Some(1),
            Some(11542),
            &[0xC1, 0x09, 0x50],
        ),
    );
    let (t, pubs, _) = s.take();
    let ev: Value = serde_json::from_slice(&pubs[0].payload).unwrap();
    assert_eq!(ev["is_auto_observe"], true);
    assert_eq!(ev["msgType"], "observe");
    let v = MessageView::parse(&t[0].1).unwrap();
    let path: Vec<_> = v.option_values(opt::URI_PATH).collect();
    assert_eq!(
        path,
        [b"3303".as_slice(), b"0"],
        "then 3303; 31024 has no definition"
    );
    s.send(
        peer(5000),
        &observe_msg(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            v.token(),
            Some(1),
            Some(11542),
            &[0xC1, 0x09, 0x50],
        ),
    );
    let (t, _, _) = s.take();
    assert!(t.is_empty());
    assert_eq!(s.shard.observations(), 2);
}

fn answer_to(req: &[u8], c: u8, payload: &[u8]) -> Vec<u8> {
    let v = MessageView::parse(req).unwrap();
    response(MsgType::Ack, c, v.message_id(), v.token(), None, payload)
}

fn block_opt(v: &MessageView, n: u16) -> Option<(u32, bool, u8)> {
    let raw = v.first_option(n)?;
    let b = lwm2m_gateway::coap::block::BlockOpt::decode(raw)?;
    Some((b.num, b.more, b.szx))
}

fn with_block(
    t: MsgType,
    c: u8,
    mid: u16,
    token: &[u8],
    cf: Option<u32>,
    block: (u16, u32, bool, u8),
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    let mut m = MessageBuilder::new(&mut b, t, c, mid, token);
    if let Some(cf) = cf {
        m = m.uint_option(opt::CONTENT_FORMAT, cf);
    }
    let (n, num, more, szx) = block;
    let opt = lwm2m_gateway::coap::block::BlockOpt { num, more, szx };
    let mut tmp = [0u8; 3];
    m.option(n, opt.encode(&mut tmp)).payload(payload);
    b
}

#[test]
fn block2_read_is_reassembled_before_publishing() {
    let mut s = Sim::new();
    s.register(peer(5000), "big", 1);
    s.take();
    let body: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    s.command(
        "big",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/19/0/0", "format": "opaque"}}),
    );
    let mut req = s.take().0.remove(0).1;
    let mut offset = 0;
    for num in 0..3u32 {
        let v = MessageView::parse(&req).unwrap();
        if num > 0 {
            assert_eq!(
                block_opt(&v, opt::BLOCK2),
                Some((num, false, 6)),
                "asks for the next block"
            );
        }
        let end = (offset + 1024).min(body.len());
        let more = end < body.len();
        let resp = with_block(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            v.token(),
            Some(42),
            (opt::BLOCK2, num, more, 6),
            &body[offset..end],
        );
        offset = end;
        s.send(peer(5000), &resp);
        let (t, p, _) = s.take();
        if more {
            assert!(p.is_empty(), "nothing published before the last block");
            req = t[0].1.clone();
        } else {
            let v: Value = serde_json::from_slice(&p[0].payload).unwrap();
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
            assert_eq!(
                v["data"]["content"],
                json!([{"path": "/19/0/0", "value": b64}])
            );
        }
    }
}

#[test]
fn block2_over_the_size_limit_is_refused() {
    let mut s = Sim::with(|c| {
        c.block_max_body = 2048;
        c.block_total_max = 2048;
    });
    s.register(peer(5000), "huge", 1);
    s.take();
    s.command(
        "huge",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/19/0/0"}}),
    );
    let mut req = s.take().0.remove(0).1;
    for num in 0..3u32 {
        let v = MessageView::parse(&req).unwrap();
        s.send(
            peer(5000),
            &with_block(
                MsgType::Ack,
                code::CONTENT,
                v.message_id(),
                v.token(),
                Some(42),
                (opt::BLOCK2, num, true, 6),
                &[7u8; 1024],
            ),
        );
        let (t, p, _) = s.take();
        if num < 2 {
            req = t[0].1.clone();
        } else {
            let v: Value = serde_json::from_slice(&p[0].payload).unwrap();
            assert_eq!(v["data"]["code"], "4.13");
            assert!(t.is_empty());
        }
    }
    // The device is free for the next command.
    s.command(
        "huge",
        json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    assert_eq!(s.take().0.len(), 1);
}

#[test]
fn block1_write_sends_blocks_and_follows_a_smaller_size() {
    let mut s = Sim::new();
    s.register(peer(5000), "fw", 1);
    s.take();
    let image: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    s.command("fw", json!({"reqID": "fw", "msgType": "write", "data": {"path": "/5/0/0", "type": "Opaque", "value": b64, "format": "opaque"}}));
    let mut got = Vec::new();
    let mut req = s.take().0.remove(0).1;
    let mut first = true;
    loop {
        let v = MessageView::parse(&req).unwrap();
        assert_eq!(v.code(), code::PUT);
        let (num, more, szx) = block_opt(&v, opt::BLOCK1).expect("Block1 option");
        if num == 0 {
            assert_eq!(v.uint_option(opt::SIZE1), Some(3000));
        }
        got.extend_from_slice(v.payload());
        if !more {
            s.send(
                peer(5000),
                &response(
                    MsgType::Ack,
                    code::CHANGED,
                    v.message_id(),
                    v.token(),
                    None,
                    b"",
                ),
            );
            break;
        }
        // After the first block the device asks for 512-byte blocks.
        let (ack_num, ack_szx) = if first { (0, 5) } else { (num, szx) };
        first = false;
        s.send(
            peer(5000),
            &with_block(
                MsgType::Ack,
                code::CONTINUE,
                v.message_id(),
                v.token(),
                None,
                (opt::BLOCK1, ack_num, true, ack_szx),
                b"",
            ),
        );
        let (t, p, _) = s.take();
        assert!(p.is_empty());
        req = t[0].1.clone();
    }
    assert_eq!(
        got.len(),
        1024 + (3000 - 1024),
        "the first 1024-byte block, then the rest in 512-byte blocks"
    );
    assert_eq!(got, image);
    let p = s.publishes();
    assert_eq!(
        p[0].1,
        json!({"reqID":"fw","msgType":"write","data":{"reqPath":"/5/0/0","code":"2.04","codeMsg":"changed"}})
    );
}

#[test]
fn blockwise_observe_response_and_notification_are_reassembled() {
    let mut s = Sim::new();
    s.register(peer(5000), "bigobs", 1);
    s.take();
    let body_a: Vec<u8> = vec![b'a'; 1500];
    let body_b: Vec<u8> = vec![b'b'; 1100];
    s.command(
        "bigobs",
        json!({"reqID": 1, "msgType": "observe", "data": {"path": "/19/0/0", "format": "opaque"}}),
    );
    let req = s.take().0.remove(0).1;
    let v = MessageView::parse(&req).unwrap();
    let token = v.token().to_vec();
    // First block carries the Observe option; the follow-up GET must not.
    let mut first = Vec::new();
    let mut tmp = [0u8; 3];
    MessageBuilder::new(
        &mut first,
        MsgType::Ack,
        code::CONTENT,
        v.message_id(),
        &token,
    )
    .uint_option(opt::OBSERVE, 3)
    .uint_option(opt::CONTENT_FORMAT, 42)
    .option(
        opt::BLOCK2,
        lwm2m_gateway::coap::block::BlockOpt {
            num: 0,
            more: true,
            szx: 6,
        }
        .encode(&mut tmp),
    )
    .payload(&body_a[..1024]);
    s.send(peer(5000), &first);
    let (t, p, _) = s.take();
    assert!(p.is_empty());
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (v.uint_option(opt::OBSERVE), block_opt(&v, opt::BLOCK2)),
        (None, Some((1, false, 6)))
    );
    s.send(
        peer(5000),
        &with_block(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            v.token(),
            Some(42),
            (opt::BLOCK2, 1, false, 6),
            &body_a[1024..],
        ),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].1["msgType"], "observe");
    assert_eq!(pubs[0].1["seqNum"], 3);
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert_eq!(pubs[0].1["data"]["content"][0]["value"], b64(&body_a));
    assert_eq!(
        s.shard.observations(),
        1,
        "the observation is on despite the block-wise answer"
    );
    // A block-wise NON notification: block 0 with the observation's token, the rest fetched.
    let mut n = Vec::new();
    MessageBuilder::new(&mut n, MsgType::Non, code::CONTENT, 500, &token)
        .uint_option(opt::OBSERVE, 4)
        .uint_option(opt::CONTENT_FORMAT, 42)
        .option(
            opt::BLOCK2,
            lwm2m_gateway::coap::block::BlockOpt {
                num: 0,
                more: true,
                szx: 6,
            }
            .encode(&mut tmp),
        )
        .payload(&body_b[..1024]);
    s.send(peer(5000), &n);
    let (t, p, _) = s.take();
    assert!(p.is_empty());
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_ne!(
        v.token(),
        &token[..],
        "the rest is fetched with a fresh token"
    );
    assert_eq!(block_opt(&v, opt::BLOCK2), Some((1, false, 6)));
    s.send(
        peer(5000),
        &with_block(
            MsgType::Ack,
            code::CONTENT,
            v.message_id(),
            v.token(),
            Some(42),
            (opt::BLOCK2, 1, false, 6),
            &body_b[1024..],
        ),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].0, "lwm2m/bigobs/up/notify");
    assert_eq!(pubs[0].1["msgType"], "notify");
    assert_eq!(pubs[0].1["seqNum"], 4);
    assert_eq!(pubs[0].1["reqID"], 1);
    assert_eq!(pubs[0].1["data"]["content"][0]["value"], b64(&body_b));
    assert_eq!(s.shard.observations(), 1);
}

#[test]
fn mqtt5_message_expiry_bounds_the_wait_for_a_sleeping_device() {
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(10));
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            1,
            &[],
            &["rd"],
            &["ep=exp5", "lt=600", "b=UQ"],
            b"</3/0>",
            None,
        ),
    );
    s.take();
    s.advance(Duration::from_secs(11));
    let cmd = json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}).to_string();
    s.shard.on_command(
        s.now,
        "exp5",
        command::parse(cmd.as_bytes()),
        Some(Duration::from_secs(5)),
        &mut s.out,
    );
    let cmd2 = json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/1"}}).to_string();
    s.shard.on_command(
        s.now,
        "exp5",
        command::parse(cmd2.as_bytes()),
        None,
        &mut s.out,
    );
    assert!(s.take().0.is_empty());
    s.advance(Duration::from_secs(5));
    let pubs = s.publishes();
    assert_eq!(pubs.len(), 1);
    assert_eq!(
        pubs[0].1,
        json!({"reqID":1,"msgType":"coap_timeout","data":{"path":"/3/0/0","reason":"expired in queue"}})
    );
    // The command without expiry still waits and goes out when the device speaks.
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::POST,
            2,
            &[],
            &["dp"],
            &[],
            br#"[{"bn":"/3/0/","n":"9","v":1}]"#,
            Some(110),
        ),
    );
    let (t, _, _) = s.take();
    assert_eq!(t.len(), 2, "2.04 to the Send, then the queued read");
    let v = MessageView::parse(&t[1].1).unwrap();
    assert_eq!(
        v.option_values(opt::URI_PATH).collect::<Vec<_>>(),
        [b"3".as_slice(), b"0", b"1"]
    );
}

/// A seeded lossy, duplicating, reordering wire between the shard and a simple device that
/// answers every request (piggybacked, sometimes with an empty ACK first and a separate CON
/// response). Whatever the wire does, every command must end in exactly one final MQTT message
/// (its response, `coap_timeout` or `coap_reset`), in order per device, and nothing panics.
#[test]
fn every_command_is_answered_exactly_once_on_a_bad_wire() {
    use rand::{Rng, SeedableRng};
    for seed in 0..40u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut s = Sim::with(|c| c.coap.max_retransmit = 4);
        let reg = request(
            MsgType::Con,
            code::POST,
            1,
            &[],
            &["rd"],
            &["ep=flaky", "lt=86400", "lwm2m=1.1"],
            b"</>;ct=110,</3/0>",
            None,
        );
        s.send(peer(5000), &reg);
        s.take();
        let ops = [
            json!({"msgType": "read", "data": {"path": "/3/0/0"}}),
            json!({"msgType": "write", "data": {"path": "/3/0/14", "type": "String", "value": "x"}}),
            json!({"msgType": "execute", "data": {"path": "/3/0/4"}}),
            json!({"msgType": "discover", "data": {"path": "/3/0"}}),
            json!({"msgType": "delete", "data": {"path": "/5/0"}}),
            json!({"msgType": "read-composite", "data": {"paths": ["/3/0/0", "/3/0/9"]}}),
        ];
        let n = 12;
        for i in 0..n {
            let mut c = ops[i % ops.len()].clone();
            c["reqID"] = json!(i);
            s.command("flaky", c);
        }
        let mut finals: Vec<i64> = Vec::new();
        let mut to_device: Vec<Vec<u8>> = Vec::new();
        let mut to_gateway: Vec<Vec<u8>> = Vec::new();
        let loss = rng.gen_range(0.0..0.4);
        for _step in 0..4000 {
            let (t, p, _) = s.take();
            for (_, b) in t {
                if rng.gen_bool(loss) {
                    continue;
                }
                to_device.push(b.clone());
                if rng.gen_bool(0.1) {
                    to_device.push(b);
                }
            }
            for pb in p {
                let v: Value = serde_json::from_slice(&pb.payload).unwrap();
                if v["msgType"] != "ack" {
                    let id = v["reqID"].as_i64();
                    finals.push(id.unwrap_or_else(|| panic!("seed {seed}: no reqID in {v}")));
                }
            }
            if finals.len() >= n && to_device.is_empty() && to_gateway.is_empty() {
                break;
            }
            // Reorder: deliver a random pending datagram in either direction.
            let device_side = !to_device.is_empty() && (to_gateway.is_empty() || rng.gen_bool(0.5));
            if device_side {
                let b = to_device.swap_remove(rng.gen_range(0..to_device.len()));
                let v = MessageView::parse(&b).unwrap();
                if v.msg_type() == MsgType::Con && code::is_request(v.code()) {
                    let c = match v.code() {
                        code::GET | code::FETCH => code::CONTENT,
                        code::DELETE => code::DELETED,
                        _ => code::CHANGED,
                    };
                    if rng.gen_bool(0.2) {
                        // empty ACK now, separate CON response later
                        to_gateway.push(vec![0x60, 0, b[2], b[3]]);
                        to_gateway.push(response(
                            MsgType::Con,
                            c,
                            rng.gen(),
                            v.token(),
                            Some(0),
                            b"1",
                        ));
                    } else {
                        to_gateway.push(response(
                            MsgType::Ack,
                            c,
                            v.message_id(),
                            v.token(),
                            Some(0),
                            b"1",
                        ));
                    }
                }
            } else if !to_gateway.is_empty() {
                let b = to_gateway.swap_remove(rng.gen_range(0..to_gateway.len()));
                if !rng.gen_bool(loss) {
                    s.send(peer(5000), &b);
                }
            } else {
                let d = s.shard.next_deadline().map_or(Duration::from_secs(1), |d| {
                    d.saturating_duration_since(s.now)
                });
                s.advance(d.max(Duration::from_millis(1)));
            }
        }
        assert_eq!(
            finals,
            (0..n as i64).collect::<Vec<_>>(),
            "seed {seed} (loss {loss:.2}): one final answer per command, in order"
        );
    }
}

#[test]
fn slow_blockwise_transfer_expires_after_exchange_lifetime() {
    let mut s = Sim::new();
    s.register(peer(5000), "slow", 1);
    s.take();
    s.command(
        "slow",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/19/0/0"}}),
    );
    let mut req = s.take().0.remove(0).1;
    let mut num = 0u32;
    loop {
        // The device takes 20 s per block (the gateway retransmits meanwhile; those are ignored).
        s.advance(Duration::from_secs(20));
        let (t, p, _) = s.take();
        if let Some(last) = t.last() {
            req = last.1.clone();
        }
        if let Some(pb) = p.first() {
            let v: Value = serde_json::from_slice(&pb.payload).unwrap();
            assert_eq!(v["data"]["code"], "4.08");
            assert_eq!(v["data"]["reason"], "block-wise transfer expired");
            assert!(num >= 11, "expired only after about 247 s ({num} blocks)");
            break;
        }
        let v = MessageView::parse(&req).unwrap();
        s.send(
            peer(5000),
            &with_block(
                MsgType::Ack,
                code::CONTENT,
                v.message_id(),
                v.token(),
                Some(42),
                (opt::BLOCK2, num, true, 6),
                &[1u8; 1024],
            ),
        );
        num += 1;
        assert!(num < 40, "the transfer never expired");
        req = s.take().0.remove(0).1;
    }
}

/// A `/dp` Send from `from`: the answer code and the endpoint of the publish, if any.
fn send_dp(s: &mut Sim, from: Peer, mid: u16) -> (u8, Option<String>) {
    let body = br#"[{"bn":"/3/0/","n":"9","v":1}]"#;
    s.send(
        from,
        &request(
            MsgType::Con,
            code::POST,
            mid,
            &[],
            &["dp"],
            &[],
            body,
            Some(110),
        ),
    );
    let (t, pubs, _) = s.take();
    let ep = pubs
        .first()
        .and_then(|p| p.topic.split('/').nth(1).map(str::to_string));
    (reply_of(&t[0].1).1, ep)
}

fn update_from(s: &mut Sim, from: Peer, id: &str, mid: u16, query: &[&str]) -> u8 {
    s.send(
        from,
        &request(
            MsgType::Con,
            code::POST,
            mid,
            &[],
            &["rd", id],
            query,
            b"",
            None,
        ),
    );
    reply_of(&s.take().0[0].1).1
}

#[test]
fn devices_are_found_by_address_after_moving_and_many_registrations() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "mover", 1);
    assert_eq!(update_from(&mut s, peer(7000), &id, 2, &[]), code::CHANGED);
    // Enough registrations to grow (and rehash) the address and endpoint tables several times.
    for i in 0..3000u16 {
        s.register(peer(10_000 + i), &format!("d{i}"), 100 + i);
    }
    assert_eq!(
        send_dp(&mut s, peer(7000), 4000),
        (code::CHANGED, Some("mover".into()))
    );
    assert_eq!(
        send_dp(&mut s, peer(5000), 4001).0,
        code::NOT_FOUND,
        "old address"
    );
    assert_eq!(
        send_dp(&mut s, peer(12_999), 4002),
        (code::CHANGED, Some("d2999".into()))
    );
    // And back to the first address.
    assert_eq!(
        update_from(&mut s, peer(5000), &id, 4003, &[]),
        code::CHANGED
    );
    assert_eq!(
        send_dp(&mut s, peer(5000), 4004),
        (code::CHANGED, Some("mover".into()))
    );
    assert_eq!(send_dp(&mut s, peer(7000), 4005).0, code::NOT_FOUND);
    s.command(
        "d1500",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (t, _, _) = s.take();
    assert_eq!(t[0].0, peer(11_500), "found by endpoint name");
}

#[test]
fn an_address_taken_over_by_another_device_stays_with_it() {
    let mut s = Sim::new();
    let a = s.register(peer(5000), "a", 1);
    // NAT hands a's old address to b; a is still registered but no longer reachable there.
    s.register(peer(5000), "b", 2);
    assert_eq!(
        send_dp(&mut s, peer(5000), 3),
        (code::CHANGED, Some("b".into()))
    );
    // a deregistering does not unbind b's address.
    s.send(
        peer(5000),
        &request(
            MsgType::Con,
            code::DELETE,
            4,
            &[],
            &["rd", &a],
            &[],
            b"",
            None,
        ),
    );
    let (_, _, idx) = s.take();
    assert!(idx.is_empty(), "{idx:?}");
    assert_eq!(
        send_dp(&mut s, peer(5000), 5),
        (code::CHANGED, Some("b".into()))
    );
}

#[test]
fn registering_an_endpoint_again_replaces_the_old_registration() {
    let mut s = Sim::new();
    let old = s.register(peer(5000), "twice", 1);
    let new = s.register(peer(6000), "twice", 2);
    assert_ne!(old, new);
    assert_eq!(s.shard.registrations(), 1);
    assert_eq!(
        update_from(&mut s, peer(6000), &old, 3, &[]),
        code::NOT_FOUND
    );
    assert_eq!(send_dp(&mut s, peer(5000), 4).0, code::NOT_FOUND);
    assert_eq!(
        send_dp(&mut s, peer(6000), 5),
        (code::CHANGED, Some("twice".into()))
    );
    s.command(
        "twice",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    assert_eq!(s.take().0[0].0, peer(6000));
    // Deregistering the new one leaves nothing behind under the name.
    s.send(
        peer(6000),
        &request(
            MsgType::Con,
            code::DELETE,
            6,
            &[],
            &["rd", &new],
            &[],
            b"",
            None,
        ),
    );
    s.take();
    s.command(
        "twice",
        json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].1["data"]["code"], "4.04");
}

#[test]
fn updates_that_lengthen_or_shorten_the_lifetime_expire_exactly() {
    let mut s = Sim::new();
    let long = s.register(peer(5000), "long", 1); // lt=600
    let short = s.register(peer(5001), "short", 2);
    s.take();
    s.advance(Duration::from_secs(100));
    assert_eq!(
        update_from(&mut s, peer(5000), &long, 3, &["lt=1000"]),
        code::CHANGED
    );
    assert_eq!(
        update_from(&mut s, peer(5001), &short, 4, &["lt=50"]),
        code::CHANGED
    );
    // short: 100 + 50 s.
    s.advance(Duration::from_millis(49_999));
    assert!(s.publishes().is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(s.publishes()[0].1["data"]["ep"], "short");
    // long: not at its first deadline (600 s), at 100 + 1000 s.
    s.advance(Duration::from_secs(600 - 150));
    assert!(s.publishes().is_empty());
    assert_eq!(s.shard.registrations(), 1);
    s.advance(Duration::from_millis(1_100_000 - 600_000 - 1));
    assert!(s.publishes().is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(s.publishes()[0].1["data"]["reason"], "expired");
    assert_eq!(s.shard.registrations(), 0);
    assert_eq!(s.shard.next_deadline(), None);
}
