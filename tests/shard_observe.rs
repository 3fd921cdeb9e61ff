//! Deterministic tests of the sans-IO shard (the harness: `support::sim`): observations and what
//! the device reports on its own: observe, notifications (stale, duplicated, from a new port),
//! cancel, error notifications, auto-observe after registering, and the `/dp` Send.

mod support;

use std::time::Duration;

use lwm2m_gateway::coap::{code, opt, MessageView, MsgType};
use serde_json::json;
use support::*;

#[test]
fn observe_notify_and_cancel() {
    let mut s = Sim::registered("obs");
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
    // The device's answers: battery level `level` in SenML JSON, Observe `seq`.
    let battery = |t: MsgType, mid: u16, seq: Option<u32>, level: i64| {
        Msg::new(t, code::CONTENT, mid)
            .token(&token)
            .observe(seq)
            .cf(110)
            .payload(&senml("/3/0/9", level))
            .build()
    };
    s.send(peer(5000), &battery(MsgType::Ack, mid, Some(5), 80));
    assert_eq!(
        s.publishes(),
        vec![(
            "lwm2m/obs/up/resp".into(),
            json!({"reqID":9,"msgType":"observe","seqNum":5,"data":{"reqPath":"/3/0/9","code":"2.05","codeMsg":"content","content":[{"path":"/3/0/9","value":80}]}})
        )]
    );
    assert_eq!(s.observations(), 1);
    // NON notification, from a new source port (NAT rebinding): matched by token.
    s.send(peer(5999), &battery(MsgType::Non, 100, Some(6), 79));
    assert_eq!(
        s.publishes(),
        vec![(
            "lwm2m/obs/up/notify".into(),
            json!({"reqID":9,"msgType":"notify","seqNum":6,"data":{"reqPath":"/3/0/9","code":"2.05","codeMsg":"content","content":[{"path":"/3/0/9","value":79}]}})
        )]
    );
    // Reordered older notification: stale, not published (RFC 7641 §3.4).
    s.send(peer(5000), &battery(MsgType::Non, 101, Some(4), 81));
    assert!(s.publishes().is_empty());
    // CON notification: ACKed; its duplicate is ACKed again but not published twice.
    let con = battery(MsgType::Con, 102, Some(7), 78);
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
    s.send(peer(5000), &battery(MsgType::Non, 103, Some(1), 77));
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
    s.send(peer(5000), &battery(MsgType::Ack, v.message_id(), None, 77));
    let pubs = s.publishes();
    assert_eq!(pubs[0].1["msgType"], "cancel-observe");
    assert_eq!(pubs[0].1["data"]["content"][0]["value"], 77);
    assert_eq!(s.observations(), 0);
    // A notification after the cancel gets RST.
    s.send(peer(5000), &battery(MsgType::Con, 104, Some(9), 1));
    assert_eq!(s.take().0[0].1, vec![0x70, 0, 0, 104]);
}

#[test]
fn error_notification_and_deregistration_end_observations() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "obs2", 1);
    let mut tokens = Vec::new();
    for path in ["/3/0/9", "/3/0/13"] {
        s.command(
            "obs2",
            json!({"reqID": path, "msgType": "observe", "data": {"path": path}}),
        );
        let (t, _, _) = s.take();
        tokens.push(MessageView::parse(&t[0].1).unwrap().token().to_vec());
        let first = Msg::ack_to(&t[0].1, code::CONTENT).observe(1).cf(0);
        s.send(peer(5000), &first.payload(b"1").build());
        s.take();
    }
    assert_eq!(s.observations(), 2);
    let gone = Msg::non(code::NOT_FOUND, 1).token(&tokens[0]).observe(2);
    s.send(peer(5000), &gone.build());
    let pubs = s.publishes();
    assert_eq!(pubs[0].0, "lwm2m/obs2/up/notify");
    assert_eq!(
        pubs[0].1,
        json!({"reqID":"/3/0/9","msgType":"notify","seqNum":2,"data":{"reqPath":"/3/0/9","code":"4.04","codeMsg":"not_found"}})
    );
    assert_eq!(s.observations(), 1);
    s.send(
        peer(5000),
        &Msg::con(code::DELETE, 2).path(&["rd", &id]).build(),
    );
    s.take();
    assert_eq!(s.observations(), 0);
    let late = Msg::con(code::CONTENT, 3)
        .token(&tokens[1])
        .observe(3)
        .cf(0)
        .payload(b"2");
    s.send(peer(5000), &late.build());
    assert_eq!(
        s.take().0[0].1,
        vec![0x70, 0, 0, 3],
        "observations end with the registration"
    );
}

#[test]
fn send_is_published_on_the_notify_topic() {
    let mut s = Sim::registered("sender");
    let dp = |mid: u16, cf: u32, body: &[u8]| {
        Msg::con(code::POST, mid)
            .path(&["dp"])
            .cf(cf)
            .payload(body)
            .build()
    };
    let body = br#"[{"bn":"/3/0/","n":"9","v":42}]"#;
    s.send(peer(5000), &dp(7, 110, body));
    let (t, pubs, _) = s.take();
    assert_eq!(reply_of(&t[0].1), (MsgType::Ack, code::CHANGED, 7, vec![]));
    assert_eq!(pubs[0].topic, "lwm2m/sender/up/notify");
    assert_eq!(
        payload_json(&pubs[0]),
        json!({"msgType":"send","data":{"content":[{"path":"/3/0/9","value":42}]}})
    );
    assert_eq!(
        s.reply_code(peer(6000), &dp(8, 110, body)),
        code::NOT_FOUND,
        "unregistered address"
    );
    assert_eq!(
        s.reply_code(peer(5000), &dp(9, 0, b"1")),
        code::UNSUPPORTED_CONTENT_FORMAT
    );
    assert_eq!(
        s.reply_code(peer(5000), &dp(10, 110, b"[{")),
        code::BAD_REQUEST
    );
}

#[test]
fn auto_observe_follows_emqx_master() {
    let mut s = Sim::with(|c| c.auto_observe = lwm2m_gateway::config::AutoObserve::All);
    let reg = Msg::con(code::POST, 1)
        .path(&["rd"])
        .query(&["ep=auto", "lt=600"])
        .payload(b"</1/0>,</3/0>,</3303/0>,</31024/0>");
    s.send(peer(5000), &reg.build());
    let (t, _, _) = s.take();
    assert_eq!(t.len(), 2, "2.01, then the first observe");
    assert_eq!(reply_of(&t[0].1).1, code::CREATED);
    let v = MessageView::parse(&t[1].1).unwrap();
    assert_eq!(v.uint_option(opt::OBSERVE), Some(0));
    assert_eq!(path_of(&t[1].1), ["3", "0"], "object 1 is skipped");
    // The device's first answer to an observe: a TLV integer, Observe 1.
    let first = |req: &[u8]| {
        Msg::ack_to(req, code::CONTENT)
            .observe(1)
            .cf(11542)
            .payload(&[0xC1, 0x09, 0x50])
            .build()
    };
    s.send(peer(5000), &first(&t[1].1));
    let (t, pubs, _) = s.take();
    let ev = payload_json(&pubs[0]);
    assert_eq!(ev["is_auto_observe"], true);
    assert_eq!(ev["msgType"], "observe");
    assert_eq!(
        path_of(&t[0].1),
        ["3303", "0"],
        "then 3303; 31024 has no definition"
    );
    s.send(peer(5000), &first(&t[0].1));
    let (t, _, _) = s.take();
    assert!(t.is_empty());
    assert_eq!(s.observations(), 2);
}
