//! Deterministic tests of the sans-IO shard (the harness: `support::sim`): one command, one CoAP
//! exchange with the device: piggybacked and separate responses, retransmission and timeout,
//! reset, one request in flight per device (NSTART=1) in order, writes and composite requests,
//! commands refused before anything is sent, and responses nobody asked for.

mod support;

use std::time::Duration;

use lwm2m_gateway::coap::{code, opt, MessageView};
use serde_json::{json, Value};
use support::*;

#[test]
fn read_piggybacked_response_is_published_with_echo() {
    let mut s = Sim::registered("r1");
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
    let content = Msg::ack(code::CONTENT, mid).token(&token).cf(0);
    s.send(
        peer(5000),
        &content.clone().payload(b"Open Mobile Alliance").build(),
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
    s.send(peer(5000), &content.payload(b"x").build());
    let (t, p, _) = s.take();
    assert!(t.is_empty() && p.is_empty());
}

#[test]
fn piggybacked_answer_with_a_foreign_message_id_is_matched_by_token() {
    // lwm2m-node-lib right after registering answers with its own message id (seen on the wire).
    let mut s = Sim::registered("nodelib");
    s.command(
        "nodelib",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (mid, token, _, _) = sent_request(&s.take().0);
    let foreign = Msg::ack(code::CONTENT, mid ^ 0x1ec6).token(&token);
    s.send(peer(5000), &foreign.payload(b"OMA").build());
    assert_eq!(
        s.publishes()[0].1["data"]["content"],
        json!([{"path":"/3/0/0","value":"OMA"}])
    );
}

#[test]
fn lost_ack_retransmits_then_times_out() {
    let mut s = Sim::registered("lossy");
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
        let d = s.time_to_deadline().unwrap();
        elapsed += d;
        s.advance(d);
        let (t, pubs, _) = s.take();
        if !pubs.is_empty() {
            assert_eq!(pubs[0].topic, "lwm2m/lossy/up/resp");
            assert_eq!(
                payload_json(&pubs[0]),
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
    let mut s = Sim::registered("late");
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
    let d = s.time_to_deadline().unwrap();
    s.advance(d);
    assert_eq!(s.take().0.len(), 1, "first retransmission");
    s.send(
        peer(5000),
        &Msg::ack(code::CHANGED, mid).token(&token).build(),
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
    let mut s = Sim::registered("sep");
    s.command(
        "sep",
        json!({"reqID": 2, "msgType": "discover", "data": {"path": "/3/0"}}),
    );
    let (t, _, _) = s.take();
    let (mid, token, _, accept) = sent_request(&t);
    assert_eq!(accept, Some(40));
    s.send(peer(5000), &empty_ack(mid));
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
    let sep = Msg::con(code::CONTENT, 0x7777)
        .token(&token)
        .cf(40)
        .payload(b"</3/0>,</3/0/0>,</3/0/9>")
        .build();
    s.send(peer(5000), &sep);
    let (t, pubs, _) = s.take();
    assert_eq!(
        t[0].1,
        vec![0x60, 0, 0x77, 0x77],
        "the separate response is ACKed"
    );
    assert_eq!(
        payload_json(&pubs[0]),
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
    s.command(
        "nosep",
        json!({"reqID": 3, "msgType": "delete", "data": {"path": "/5/0"}}),
    );
    let (t, _, _) = s.take();
    let (mid, _, _, _) = sent_request(&t);
    s.send(peer(5000), &empty_ack(mid));
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
    let mut s = Sim::registered("rst");
    s.command(
        "rst",
        json!({"reqID": 4, "msgType": "read", "data": {"path": "/3/0/1"}}),
    );
    let (mid, _, _, _) = sent_request(&s.take().0);
    s.send(peer(5000), &reset(mid));
    assert_eq!(
        s.publishes()[0].1,
        json!({"reqID":4,"msgType":"coap_reset","data":{"path":"/3/0/1"}})
    );
}

#[test]
fn one_request_in_flight_per_device_in_order() {
    let mut s = Sim::registered("serial");
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
    let content = Msg::ack(code::CONTENT, mid).cf(0);
    s.send(
        peer(5000),
        &content.clone().token(&other).payload(b"x").build(),
    );
    assert!(s.take().1.is_empty());
    s.send(peer(5000), &content.token(&token).payload(b"v0").build());
    let (t, pubs, _) = s.take();
    assert_eq!(pubs.len(), 1);
    let (mid, token, path, _) = sent_request(&t);
    assert_eq!(path, ["3", "0", "1"]);
    s.send(
        peer(5000),
        &Msg::ack(code::NOT_FOUND, mid).token(&token).build(),
    );
    let (t, pubs, _) = s.take();
    assert_eq!(
        payload_json(&pubs[0]),
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/1","code":"4.04","codeMsg":"not_found"}})
    );
    assert_eq!(sent_request(&t).2, ["3", "0", "2"]);
}

#[test]
fn bad_commands_get_error_responses() {
    let mut s = Sim::registered("bad");
    let mut check = |payload: &[u8], expect: Value| {
        s.command_bytes("bad", payload);
        let (t, pubs, _) = s.take();
        assert!(
            t.is_empty(),
            "nothing sent to the device for {:?}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(pubs.len(), 1);
        assert_eq!(pubs[0].topic, "lwm2m/bad/up/resp");
        let mut v = payload_json(&pubs[0]);
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
    s.command_bytes(
        "nobody",
        br#"{"reqID":9,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].0, "lwm2m/nobody/up/resp");
    assert_eq!(pubs[0].1["data"]["code"], "4.04");
    assert_eq!(pubs[0].1["data"]["reason"], "endpoint not registered");
}

#[test]
fn write_single_resource_as_tlv_and_text() {
    let mut s = Sim::registered("w");
    // EMQX example: Integer 12345 to /3/0/13 as TLV C2 0D 30 39, PUT.
    s.command("w", json!({"reqID": 1, "msgType": "write", "data": {"path": "/3/0/13", "type": "Integer", "value": 12345, "format": "tlv"}}));
    let (t, _, _) = s.take();
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(v.code(), code::PUT);
    assert_eq!(v.content_format(), Some(11542));
    assert_eq!(v.payload(), [0xC2, 0x0D, 0x30, 0x39]);
    s.send(peer(5000), &answer(&t[0].1, code::CHANGED, None, b""));
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
fn composite_read_and_write() {
    let mut s = Sim::registered("comp");
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
    let content = br#"[{"bn":"/3/0/","n":"0","vs":"ACME"},{"n":"9","v":50}]"#;
    s.send(
        peer(5000),
        &answer(&t[0].1, code::CONTENT, Some(110), content),
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
    s.send(peer(5000), &answer(&t[0].1, code::CHANGED, None, b""));
    assert_eq!(s.publishes()[0].1["data"]["code"], "2.04");
    // composite commands need SenML: a TLV override is refused
    s.command("comp", json!({"reqID": 3, "msgType": "read-composite", "data": {"paths": ["/3/0/0"], "format": "tlv"}}));
    assert_eq!(s.publishes()[0].1["data"]["code"], "4.00");
}

#[test]
fn unknown_token_con_response_gets_rst() {
    let mut s = Sim::new();
    let token = [0, 1, 2, 3, 4, 5, 6, 7];
    let stray = |m: Msg| m.token(&token).cf(0).payload(b"1").build();
    s.send(peer(5000), &stray(Msg::con(code::CONTENT, 0x99)));
    assert_eq!(s.take().0[0].1, vec![0x70, 0, 0, 0x99]);
    s.send(peer(5000), &stray(Msg::ack(code::CONTENT, 0x98)));
    assert!(s.take().0.is_empty(), "an unexpected ACK is ignored");
}
