//! Deterministic tests of the sans-IO shard (the harness: `support::sim`): commands waiting for a
//! device: the bounded downlink queue, what becomes of queued commands when the device goes away,
//! LwM2M queue mode (a sleeping device gets its commands in order when it wakes up with an
//! Update or a Send), and queued commands expiring (configured age, MQTT 5 message expiry).

mod support;

use std::time::Duration;

use lwm2m_gateway::coap::code;
use serde_json::{json, Value};
use support::*;

#[test]
fn queued_commands_are_answered_when_the_device_goes_away() {
    let mut s = Sim::new();
    let id = s.register(peer(5000), "gone", 1);
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
        &Msg::con(code::DELETE, 9).path(&["rd", &id]).build(),
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

/// Registers `ep` in queue mode (`queue`: the binding or `Q` query items) and returns the
/// answer to the Register.
fn register_queue_mode(s: &mut Sim, ep: &str, queue: &[&str]) -> Vec<u8> {
    let q = format!("ep={ep}");
    let mut query = vec![q.as_str(), "lt=600"];
    query.extend_from_slice(queue);
    let reg = Msg::con(code::POST, 1)
        .path(&["rd"])
        .query(&query)
        .payload(b"</3/0>");
    s.send(peer(5000), &reg.build());
    s.take().0.remove(0).1
}

#[test]
fn queue_mode_device_gets_queued_commands_in_order_after_update() {
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(22));
    let created = register_queue_mode(&mut s, "sleepy", &["b=UQ"]);
    let id = location_id(&created).unwrap();
    // Reachable right after registering.
    s.command(
        "sleepy",
        json!({"reqID": 0, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (t, _, _) = s.take();
    s.send(peer(5000), &answer(&t[0].1, code::CONTENT, None, b"a"));
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
        &Msg::con(code::POST, 2).path(&["rd", &id]).build(),
    );
    let (t, _, _) = s.take();
    assert_eq!(reply_of(&t[0].1).1, code::CHANGED);
    assert_eq!(t.len(), 2, "the 2.04 and then the first queued request");
    assert_eq!(t[1].0, peer(5001));
    let mut next = t[1].1.clone();
    for i in 1..=3 {
        assert_eq!(path_of(&next), ["3", "0", &i.to_string()]);
        s.send(peer(5001), &answer(&next, code::CONTENT, None, b"x"));
        let (t, p, _) = s.take();
        assert_eq!(payload_json(&p[0])["reqID"], i);
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
    register_queue_mode(&mut s, "nap", &["lwm2m=1.1", "Q"]);
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
fn mqtt5_message_expiry_bounds_the_wait_for_a_sleeping_device() {
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(10));
    register_queue_mode(&mut s, "exp5", &["b=UQ"]);
    s.advance(Duration::from_secs(11));
    s.command_with_expiry(
        "exp5",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
        Some(Duration::from_secs(5)),
    );
    s.command_with_expiry(
        "exp5",
        json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/1"}}),
        None,
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
    let dp = Msg::con(code::POST, 2)
        .path(&["dp"])
        .cf(110)
        .payload(br#"[{"bn":"/3/0/","n":"9","v":1}]"#);
    s.send(peer(5000), &dp.build());
    let (t, _, _) = s.take();
    assert_eq!(t.len(), 2, "2.04 to the Send, then the queued read");
    assert_eq!(path_of(&t[1].1), ["3", "0", "1"]);
}
