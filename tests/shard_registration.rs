//! Deterministic tests of the sans-IO shard (the harness: `support::sim`): Register, Update and
//! Deregister, lifetime expiry, message deduplication, NAT rebinding, an endpoint registering
//! again, what a registration is refused for, and the register topic's placeholders.

mod support;

use std::time::Duration;

use lwm2m_gateway::coap::{code, opt, MsgType};
use lwm2m_gateway::core::shard::IndexUpdate;
use serde_json::json;
use support::*;

/// Query, payload, content format, expected code.
type RegisterCase<'a> = (Vec<&'a str>, &'a [u8], Option<u32>, u8);

#[test]
fn register_update_deregister() {
    let mut s = Sim::new();
    let p = peer(5000);
    let reg = Msg::con(code::POST, 0x10)
        .token(&[1, 2])
        .path(&["rd"])
        .query(&["ep=dev1", "lt=60", "lwm2m=1.1", "b=U", "imei=42"])
        .cf(40)
        .payload(b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>");
    s.send(p, &reg.build());
    let (t, pubs, idx) = s.take();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, p);
    assert_eq!(
        reply_of(&t[0].1),
        (MsgType::Ack, code::CREATED, 0x10, vec![1, 2])
    );
    let loc = option_strings(&t[0].1, opt::LOCATION_PATH);
    assert_eq!(loc[0], "rd");
    let id = loc[1].clone();
    assert_eq!(idx, vec![IndexUpdate::Bind(p.addr)]);
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].topic, "lwm2m/dev1/up/resp");
    assert_eq!(pubs[0].qos, 1);
    assert_eq!(
        payload_json(&pubs[0]),
        json!({"msgType":"register","data":{"ep":"dev1","lt":60,"lwm2m":"1.1","b":"U","imei":"42",
               "alternatePath":"/","objectList":["/1/0","/3/0"],"security":"nosec"}})
    );
    assert_eq!(s.registrations(), 1);

    // Update with a new lifetime and no payload: 2.04 and an update event with the full state.
    let upd = Msg::con(code::POST, 0x11)
        .token(&[3])
        .path(&["rd", &id])
        .query(&["lt=120"]);
    s.send(p, &upd.build());
    let (t, pubs, _) = s.take();
    assert_eq!(
        reply_of(&t[0].1),
        (MsgType::Ack, code::CHANGED, 0x11, vec![3])
    );
    let ev = payload_json(&pubs[0]);
    assert_eq!(ev["msgType"], "update");
    assert_eq!(ev["data"]["lt"], 120);
    assert_eq!(ev["data"]["objectList"], json!(["/1/0", "/3/0"]));

    // Deregister from another source port (lwm2m-node-lib does this): matched by location.
    s.send(
        peer(6000),
        &Msg::con(code::DELETE, 0x12).path(&["rd", &id]).build(),
    );
    let (t, pubs, idx) = s.take();
    assert_eq!(
        reply_of(&t[0].1),
        (MsgType::Ack, code::DELETED, 0x12, vec![])
    );
    assert_eq!(t[0].0, peer(6000));
    assert_eq!(
        payload_json(&pubs[0]),
        json!({"msgType":"deregister","data":{"ep":"dev1","reason":"deregistered"}})
    );
    assert_eq!(idx, vec![IndexUpdate::Unbind(p.addr)]);
    assert_eq!(s.registrations(), 0);

    // The registration is gone: another Update gets 4.04.
    assert_eq!(s.update(p, &id, 0x13, &[]), code::NOT_FOUND);
}

#[test]
fn duplicate_con_gets_cached_response_and_is_processed_once() {
    let mut s = Sim::new();
    let reg = Msg::con(code::POST, 0x20)
        .token(&[9])
        .path(&["rd"])
        .query(&["ep=dup"])
        .payload(b"</3/0>")
        .build();
    s.send(peer(5000), &reg);
    let (t1, p1, _) = s.take();
    assert_eq!(p1.len(), 1);
    s.advance(Duration::from_secs(30));
    s.send(peer(5000), &reg);
    let (t2, p2, _) = s.take();
    assert_eq!(t1[0].1, t2[0].1, "the duplicate gets the very same 2.01");
    assert!(p2.is_empty(), "and is not processed again");
    assert_eq!(s.registrations(), 1);
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
    s.advance(Duration::from_secs(599));
    assert!(s.publishes().is_empty());
    // Update at t=599 s: lifetime restarts.
    assert_eq!(s.update(peer(5000), &id, 2, &[]), code::CHANGED);
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
    assert_eq!(s.registrations(), 0);
    assert_eq!(s.next_deadline(), None);
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
    let rd = |mid: u16| Msg::con(code::POST, mid).path(&["rd"]);
    for (i, (q, payload, cf, expect)) in cases.into_iter().enumerate() {
        let reg = rd(100 + i as u16).query(&q).cf(cf).payload(payload);
        s.send(peer(5000), &reg.build());
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
    let reg = rd(200).query(&[&long]).build();
    assert_eq!(s.reply_code(peer(5000), &reg), code::BAD_REQUEST);
    // wrong methods and paths
    let get = Msg::con(code::GET, 201).path(&["rd"]).build();
    assert_eq!(s.reply_code(peer(5000), &get), code::METHOD_NOT_ALLOWED);
    let get = Msg::con(code::GET, 202).path(&["x"]).build();
    assert_eq!(s.reply_code(peer(5000), &get), code::NOT_FOUND);
    // unknown critical option 9
    let reg = rd(203).option(9, b"").build();
    assert_eq!(s.reply_code(peer(5000), &reg), code::BAD_OPTION);
    // a NON request gets a NON answer
    let reg = Msg::non(code::POST, 204)
        .token(&[5])
        .path(&["rd"])
        .query(&["ep="]);
    s.send(peer(5000), &reg.build());
    let (mt, c, _, tok) = reply_of(&s.take().0[0].1);
    assert_eq!((mt, c, tok), (MsgType::Non, code::BAD_REQUEST, vec![5]));
    assert_eq!(s.registrations(), 0);
    // CoAP ping
    s.send(peer(5000), &[0x40, 0, 0x12, 0x34]);
    assert_eq!(s.take().0[0].1, vec![0x70, 0, 0x12, 0x34]);
}

#[test]
fn update_from_new_address_moves_the_device() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "nat", 1);
    let upd = Msg::con(code::POST, 2).path(&["rd", &id]).query(&["b=U"]);
    s.send(peer(7000), &upd.build());
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

#[test]
fn devices_are_found_by_address_after_moving_and_many_registrations() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "mover", 1);
    assert_eq!(s.update(peer(7000), &id, 2, &[]), code::CHANGED);
    // Enough registrations to grow (and rehash) the address and endpoint tables several times.
    for i in 0..3000u16 {
        s.register(peer(10_000 + i), &format!("d{i}"), 100 + i);
    }
    assert_eq!(
        s.send_dp(peer(7000), 4000),
        (code::CHANGED, Some("mover".into()))
    );
    assert_eq!(
        s.send_dp(peer(5000), 4001).0,
        code::NOT_FOUND,
        "old address"
    );
    assert_eq!(
        s.send_dp(peer(12_999), 4002),
        (code::CHANGED, Some("d2999".into()))
    );
    // And back to the first address.
    assert_eq!(s.update(peer(5000), &id, 4003, &[]), code::CHANGED);
    assert_eq!(
        s.send_dp(peer(5000), 4004),
        (code::CHANGED, Some("mover".into()))
    );
    assert_eq!(s.send_dp(peer(7000), 4005).0, code::NOT_FOUND);
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
    assert_eq!(s.send_dp(peer(5000), 3), (code::CHANGED, Some("b".into())));
    // a deregistering does not unbind b's address.
    s.send(
        peer(5000),
        &Msg::con(code::DELETE, 4).path(&["rd", &a]).build(),
    );
    let (_, _, idx) = s.take();
    assert!(idx.is_empty(), "{idx:?}");
    assert_eq!(s.send_dp(peer(5000), 5), (code::CHANGED, Some("b".into())));
}

#[test]
fn registering_an_endpoint_again_replaces_the_old_registration() {
    let mut s = Sim::new();
    let old = s.register(peer(5000), "twice", 1);
    let new = s.register(peer(6000), "twice", 2);
    assert_ne!(old, new);
    assert_eq!(s.registrations(), 1);
    assert_eq!(s.update(peer(6000), &old, 3, &[]), code::NOT_FOUND);
    assert_eq!(s.send_dp(peer(5000), 4).0, code::NOT_FOUND);
    assert_eq!(
        s.send_dp(peer(6000), 5),
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
        &Msg::con(code::DELETE, 6).path(&["rd", &new]).build(),
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
    s.advance(Duration::from_secs(100));
    assert_eq!(s.update(peer(5000), &long, 3, &["lt=1000"]), code::CHANGED);
    assert_eq!(s.update(peer(5001), &short, 4, &["lt=50"]), code::CHANGED);
    // short: 100 + 50 s.
    s.advance(Duration::from_millis(49_999));
    assert!(s.publishes().is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(s.publishes()[0].1["data"]["ep"], "short");
    // long: not at its first deadline (600 s), at 100 + 1000 s.
    s.advance(Duration::from_secs(600 - 150));
    assert!(s.publishes().is_empty());
    assert_eq!(s.registrations(), 1);
    s.advance(Duration::from_millis(1_100_000 - 600_000 - 1));
    assert!(s.publishes().is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(s.publishes()[0].1["data"]["reason"], "expired");
    assert_eq!(s.registrations(), 0);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn custom_topics_and_placeholders() {
    let mut s = Sim::with(|c| {
        c.mountpoint = "gw/%a/".into();
        c.translators.register.topic = "${endpoint_name}/reg".into();
        c.translators.command.topic = "%e/dn".into();
    });
    let reg = Msg::con(code::POST, 1).path(&["rd"]).query(&["ep=t2"]);
    s.send(peer(5000), &reg.build());
    let (_, pubs, _) = s.take();
    assert_eq!(pubs[0].topic, "gw/127.0.0.1/t2/reg");
    assert_eq!(pubs[0].qos, 1);
    assert_eq!(
        payload_json(&pubs[0]),
        json!({"msgType":"register","data":{"ep":"t2","lt":86400,"security":"nosec"}}),
        "no payload: no objectList"
    );
}
