//! Deterministic tests of authorization in the sans-IO shard (the harness: `support::sim`): a
//! Register is accepted only from the identity its endpoint's credential names, an endpoint with
//! a credential never registers over plain CoAP, and everything after Register (Update,
//! De-register, Send, responses, notifications) must come from the identity that registered.
//! Refusals are 4.03 for requests, a silent drop for responses; both are counted.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use lwm2m_gateway::coap::{code, MessageView};
use lwm2m_gateway::core::authorize::{Authorizer, Forbidden};
use lwm2m_gateway::core::peer::{Peer, SecurityMode};
use lwm2m_gateway::core::shard::Peer as ShardPeer;
use serde_json::json;
use support::*;

/// Endpoint -> the identity serial its credential names; endpoints not listed have none.
#[derive(Debug)]
struct Table(HashMap<&'static str, u32>);

impl Authorizer for Table {
    fn authorize_register(&self, endpoint: &str, peer: &Peer) -> Result<(), Forbidden> {
        match (self.0.get(endpoint), peer.identity) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(Forbidden("no credential for this endpoint")),
            (Some(_), None) => Err(Forbidden("endpoint requires DTLS")),
            (Some(want), Some(id)) if id.serial() == *want => Ok(()),
            (Some(_), Some(_)) => Err(Forbidden("identity belongs to another endpoint")),
        }
    }
}

fn sim() -> Sim {
    let table = Table(HashMap::from([("dev-a", 1), ("dev-b", 2)]));
    Sim::with_authorizer(|_| {}, Some(Arc::new(table)))
}

fn a() -> ShardPeer {
    secure_peer(6001, 1, SecurityMode::Psk)
}

fn b() -> ShardPeer {
    secure_peer(6002, 2, SecurityMode::Psk)
}

fn register_msg(ep: &str, mid: u16) -> Vec<u8> {
    let q = format!("ep={ep}");
    Msg::con(code::POST, mid)
        .path(&["rd"])
        .query(&[&q, "lt=600", "lwm2m=1.1"])
        .cf(40)
        .payload(b"</3/0>")
        .build()
}

#[test]
fn a_device_registers_with_its_own_identity_and_the_event_says_how_it_is_secured() {
    let mut s = sim();
    s.send(a(), &register_msg("dev-a", 1));
    let (t, pubs, _) = s.take();
    assert_eq!(reply_of(&t[0].1).1, code::CREATED);
    assert_eq!(t[0].0, a(), "the answer goes back to the secure peer");
    assert_eq!(payload_json(&pubs[0])["data"]["security"], json!("psk"));
    // A device without a credential still registers over plain CoAP.
    s.send(peer(5000), &register_msg("legacy", 2));
    let (t, pubs, _) = s.take();
    assert_eq!(reply_of(&t[0].1).1, code::CREATED);
    assert_eq!(payload_json(&pubs[0])["data"]["security"], json!("nosec"));
    assert_eq!(s.forbidden(), 0);
}

#[test]
fn register_is_forbidden_for_another_endpoints_identity_for_plain_coap_and_for_the_gateway_name() {
    let mut s = sim();
    let cases: [(ShardPeer, &str, &str); 4] = [
        (b(), "dev-a", "identity belongs to another endpoint"),
        (peer(5000), "dev-a", "endpoint requires DTLS"),
        (a(), "legacy", "no credential for this endpoint"),
        (peer(5000), "$gateway", "reserved endpoint name"),
    ];
    for (i, (from, ep, why)) in cases.iter().enumerate() {
        s.send(*from, &register_msg(ep, 10 + i as u16));
        let (t, pubs, _) = s.take();
        let answer = MessageView::parse(&t[0].1).unwrap();
        assert_eq!(answer.code(), code::FORBIDDEN, "{ep} from {from:?}");
        assert_eq!(String::from_utf8_lossy(answer.payload()), *why);
        assert!(pubs.is_empty(), "nothing published for a refused Register");
    }
    assert_eq!(s.registrations(), 0);
    assert_eq!(s.forbidden(), 4);
}

#[test]
fn update_deregister_and_send_must_come_from_the_registered_identity() {
    let mut s = sim();
    s.send(a(), &register_msg("dev-a", 1));
    let id = location_id(&s.take().0[0].1).unwrap();
    // Another identity, and plain CoAP from the very same address, are refused.
    let same_addr_plain = ShardPeer::plain(0, a().addr);
    for (i, from) in [b(), same_addr_plain].into_iter().enumerate() {
        let mid = 20 + i as u16 * 3;
        assert_eq!(s.update(from, &id, mid, &["lt=900"]), code::FORBIDDEN);
        let del = Msg::con(code::DELETE, mid + 1).path(&["rd", &id]).build();
        assert_eq!(s.reply_code(from, &del), code::FORBIDDEN);
    }
    let dp = Msg::con(code::POST, 30)
        .path(&["dp"])
        .cf(110)
        .payload(br#"[{"bn":"/3/0/","n":"9","v":1}]"#)
        .build();
    assert_eq!(s.reply_code(same_addr_plain, &dp), code::FORBIDDEN);
    assert_eq!(s.forbidden(), 5);
    assert_eq!(s.registrations(), 1, "the registration survives");
    // The device itself still can.
    assert_eq!(s.update(a(), &id, 31, &["lt=900"]), code::CHANGED);
    assert_eq!(s.send_dp(a(), 32).0, code::CHANGED);
    let del = Msg::con(code::DELETE, 33).path(&["rd", &id]).build();
    assert_eq!(s.reply_code(a(), &del), code::DELETED);
    assert_eq!(s.registrations(), 0);
}

#[test]
fn responses_and_notifications_from_another_identity_are_dropped_and_counted() {
    let mut s = sim();
    s.send(a(), &register_msg("dev-a", 1));
    s.take();
    s.command(
        "dev-a",
        json!({"reqID": 1, "msgType": "observe", "data": {"path": "/3/0/9"}}),
    );
    let (mid, token, _, _) = sent_request(&s.take().0);
    let forged = Msg::ack(code::CONTENT, mid).token(&token).observe(1).cf(0);
    s.send(b(), &forged.payload(b"1").build());
    let (t, pubs, _) = s.take();
    assert!(
        t.is_empty() && pubs.is_empty(),
        "a forged answer is not taken"
    );
    assert_eq!(s.forbidden(), 1);
    let real = Msg::ack(code::CONTENT, mid).token(&token).observe(1).cf(0);
    s.send(a(), &real.payload(b"77").build());
    let pubs = s.publishes();
    assert_eq!(
        pubs[0].1["data"]["content"],
        json!([{"path":"/3/0/9","value":77}])
    );
    // A notification on that observation from a plain peer is dropped too.
    let notify = Msg::non(code::CONTENT, 900).token(&token).observe(2).cf(0);
    s.send(peer(5000), &notify.clone().payload(b"5").build());
    assert!(s.publishes().is_empty());
    assert_eq!(s.forbidden(), 2);
    s.send(a(), &notify.payload(b"6").build());
    assert_eq!(
        s.publishes()[0].1["data"]["content"],
        json!([{"path":"/3/0/9","value":6}])
    );
}
