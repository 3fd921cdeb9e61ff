//! EMQX drop-in parity for lenient device answers to reads: a text/plain answer for an Opaque
//! resource, a TLV answer to a read of a resource instance `/o/i/r/ri` (a Resource, a Multiple
//! Resource or a Resource Instance TLV), and OMA JSON (11543) numbers and values. Each test drives
//! the sans-IO `Shard` through `support::Sim` (fake clock): the exact device datagram in, the
//! exact MQTT JSON out. One test at the end goes through real UDP and the embedded broker, as
//! `tests/loopback.rs` does.

mod support;

use lwm2m_gateway::coap::code;
use serde_json::{json, Value};
use support::*;

/// The Content-Format option of the device's answers; `device_answers_are_the_documented_bytes`
/// pins the bytes each one is written as.
const TEXT: Option<u32> = Some(0);
const NO_CF: Option<u32> = None;
const TLV: Option<u32> = Some(11542);
const OMA_JSON: Option<u32> = Some(11543);
const OMA_JSON_LEGACY: Option<u32> = Some(1543);

/// 88 07 08 | 42 00 0f a0 | 42 01 13 88: the whole Multiple Resource `/3/0/7`, instances 0 = 4000
/// and 1 = 5000.
const WHOLE_MULTIPLE_RESOURCE: &[u8] = &[
    0x88, 0x07, 0x08, 0x42, 0x00, 0x0F, 0xA0, 0x42, 0x01, 0x13, 0x88,
];

/// The Register of `ep` as a LwM2M 1.0 client that announces no content formats (so reads carry
/// no Accept and the device picks the format, as lwm2m-node-lib and older clients do).
fn register_1_0(mid: u16, token: &[u8], ep: &str, objects: &[u8]) -> Msg {
    Msg::con(code::POST, mid)
        .token(token)
        .path(&["rd"])
        .cf(40)
        .query(&[&format!("ep={ep}"), "lt=600", "lwm2m=1.0", "b=U"])
        .payload(objects)
}

/// A shard with `dev` registered from `peer(5000)` (see [`register_1_0`]).
fn sim() -> Sim {
    let mut s = Sim::new();
    s.register_with(
        peer(5000),
        &register_1_0(1, &[7], "dev", b"</0/0>,</3/0>,</6/0>"),
    );
    s
}

/// Sends a read of `path` to `dev` as command `req_id` and returns the request datagram after
/// checking it: one CON GET of `path` with an 8-byte token, and nothing published yet.
fn read(s: &mut Sim, req_id: u32, path: &str) -> Vec<u8> {
    s.command(
        "dev",
        json!({"reqID": req_id, "msgType": "read", "data": {"path": path}}),
    );
    let (t, p, _) = s.take();
    let (_, token, _, _) = sent_request(&t);
    let req = t[0].1.clone();
    assert_eq!(reply_of(&req).1, code::GET);
    assert_eq!(uri_path(&req), path);
    assert_eq!(token.len(), 8, "the gateway's tokens are 8 bytes");
    assert!(p.is_empty());
    req
}

/// Reads `path`, answers with a piggybacked 2.05 (`cf`, `payload`), returns the one MQTT message
/// published.
fn read_answered(s: &mut Sim, path: &str, cf: Option<u32>, payload: &[u8]) -> Value {
    let req = read(s, 1, path);
    s.send(peer(5000), &answer(&req, code::CONTENT, cf, payload));
    let mut p = s.publishes();
    assert_eq!(p.len(), 1, "one MQTT message");
    let (topic, v) = p.remove(0);
    assert_eq!(topic, "lwm2m/dev/up/resp");
    v
}

fn content_of(path: &str, content: Value) -> Value {
    json!({"reqID":1,"msgType":"read","data":{"reqPath":path,"code":"2.05","codeMsg":"content",
           "content":content}})
}

/// The device's piggybacked 2.05 answer, byte by byte: `68 45 mid token`, then the Content-Format
/// option (`c0` = 0 text/plain, `c2 2d 16` = 11542 TLV, `c2 2d 17` = 11543 OMA JSON, `c2 06 07` =
/// 1543; nothing without one), `ff`, the payload.
#[test]
fn device_answers_are_the_documented_bytes() {
    let req = Msg::con(code::GET, 0x1234)
        .token(&[1, 2, 3, 4, 5, 6, 7, 8])
        .path(&["3", "0", "9"])
        .build();
    for (cf, option) in [
        (TEXT, "c0"),
        (NO_CF, ""),
        (TLV, "c2 2d 16"),
        (OMA_JSON, "c2 2d 17"),
        (OMA_JSON_LEGACY, "c2 06 07"),
    ] {
        assert_eq!(
            answer(&req, code::CONTENT, cf, b"ab"),
            hex(&format!(
                "68 45 12 34 01 02 03 04 05 06 07 08 {option} ff 61 62"
            )),
            "{cf:?}"
        );
    }
}

// ---- 1. text/plain answers for Opaque resources ------------------------------------------------

#[test]
fn text_answer_for_an_opaque_resource_is_published_like_emqx() {
    // `/0/0/3` (Security, Public Key or Identity) and `/6/0/4` (Location, Velocity) are Opaque in
    // `xml/`. Raw text was refused with 4.00 ("\"hello world\" is not a valid Opaque"); now the
    // text's bytes are the value, base64 in the JSON as every opaque value, which is byte for byte
    // what EMQX 5.x publishes (`base64:encode(Text)`).
    for cf in [TEXT, NO_CF] {
        let mut s = sim();
        assert_eq!(
            read_answered(&mut s, "/0/0/3", cf, b"hello world"),
            content_of(
                "/0/0/3",
                json!([{"path":"/0/0/3","value":"aGVsbG8gd29ybGQ="}])
            ),
            "content format option {cf:?}"
        );
    }
    let mut s = sim();
    assert_eq!(
        read_answered(&mut s, "/6/0/4", TEXT, b"\x01\x02 km/h"),
        content_of("/6/0/4", json!([{"path":"/6/0/4","value":"AQIga20vaA=="}]))
    );
    // Not UTF-8 either: the bytes all the same.
    let mut s = sim();
    assert_eq!(
        read_answered(&mut s, "/0/0/3", TEXT, &[0xFF, 0xFE]),
        content_of("/0/0/3", json!([{"path":"/0/0/3","value":"//4="}]))
    );
}

#[test]
fn text_answer_in_the_ts_base64_form_is_unchanged() {
    // What the TS prescribes (base64 text): decoded to 01 02 03, published as the same base64, as
    // the gateway did before. EMQX would base64 the text once more ("QVFJRA=="); we keep the TS.
    let mut s = sim();
    assert_eq!(
        read_answered(&mut s, "/0/0/3", TEXT, b"AQID"),
        content_of("/0/0/3", json!([{"path":"/0/0/3","value":"AQID"}]))
    );
    // Other types are untouched: a bad Integer is still a 4.00 with the reason.
    let mut s = sim();
    assert_eq!(
        read_answered(&mut s, "/3/0/9", TEXT, b"full"),
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/9","code":"4.00",
               "codeMsg":"bad_request",
               "reason":"cannot decode text payload: value does not fit: \"full\" is not a valid Integer"}})
    );
}

// ---- 2. TLV answers to a read of a resource instance --------------------------------------------

#[test]
fn tlv_answers_to_a_resource_instance_read() {
    // `/3/0/7` (Power Source Voltage) is a multiple Integer resource; the read is of instance 1.
    let want = content_of("/3/0/7/1", json!([{"path":"/3/0/7/1","value":5000}]));
    for (what, tlv) in [
        // 42 01 13 88: Resource Instance 1 = 5000 (the TS answer).
        ("resource instance", &[0x42, 0x01, 0x13, 0x88][..]),
        // 84 07 | 42 01 13 88: its Multiple Resource holding only it.
        (
            "multiple resource with the instance",
            &[0x84, 0x07, 0x42, 0x01, 0x13, 0x88][..],
        ),
        // The whole resource: only the requested instance is published (before: 4.00 "TLV
        // resource instance id 0 does not answer the requested 1").
        ("whole multiple resource", WHOLE_MULTIPLE_RESOURCE),
        // c2 07 13 88: a plain Resource 7 = 5000, the instance's value (before: published at the
        // resource's path, "/3/0/7").
        ("resource", &[0xC2, 0x07, 0x13, 0x88][..]),
    ] {
        let mut s = sim();
        assert_eq!(read_answered(&mut s, "/3/0/7/1", TLV, tlv), want, "{what}");
    }
}

#[test]
fn tlv_answer_without_the_requested_instance_is_refused() {
    // 84 07 | 42 00 0f a0: only instance 0.
    let mut s = sim();
    assert_eq!(
        read_answered(
            &mut s,
            "/3/0/7/1",
            TLV,
            &[0x84, 0x07, 0x42, 0x00, 0x0F, 0xA0]
        ),
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/7/1","code":"4.00",
               "codeMsg":"bad_request",
               "reason":"cannot decode tlv payload: invalid payload: TLV does not contain the requested resource instance 1"}})
    );
    // A truncated TLV: 4.00 too, and the device can be read again.
    let mut s = sim();
    let v = read_answered(&mut s, "/3/0/7/1", TLV, &[0x88, 0x07, 0x08, 0x42, 0x00]);
    assert_eq!(v["data"]["code"], "4.00");
    assert_eq!(
        read_answered(&mut s, "/3/0/7/1", TLV, &[0x42, 0x01, 0x13, 0x88]),
        content_of("/3/0/7/1", json!([{"path":"/3/0/7/1","value":5000}]))
    );
}

// ---- 3. OMA JSON values --------------------------------------------------------------------------

/// These already held before this change (the `null` the issue reports for `"v":123` does not
/// reproduce on this code); they pin the values down, `"v":123` above all.
#[test]
fn oma_json_values_are_kept() {
    for (req, cf, doc, content) in [
        // Integer `"v":123` (Battery Level).
        (
            "/3/0/9",
            OMA_JSON,
            r#"{"bn":"/3/0/9","e":[{"v":123}]}"#,
            json!([{"path":"/3/0/9","value":123}]),
        ),
        // The pre-1.0 number 1543, and `bn` + `n`.
        (
            "/3/0/9",
            OMA_JSON_LEGACY,
            r#"{"bn":"/3/0/","e":[{"n":"9","v":123}]}"#,
            json!([{"path":"/3/0/9","value":123}]),
        ),
        // An Integer written as 123.0 stays the number sent (EMQX passes it through).
        (
            "/3/0/9",
            OMA_JSON,
            r#"{"bn":"/3/0/9","e":[{"v":123.0}]}"#,
            json!([{"path":"/3/0/9","value":123.0}]),
        ),
        // Float `"v":1.5` (Latitude).
        (
            "/6/0/0",
            OMA_JSON,
            r#"{"bn":"/6/0/0","e":[{"v":1.5}]}"#,
            json!([{"path":"/6/0/0","value":1.5}]),
        ),
        // Boolean `bv` (Security, Bootstrap-Server).
        (
            "/0/0/1",
            OMA_JSON,
            r#"{"bn":"/0/0/1","e":[{"bv":false}]}"#,
            json!([{"path":"/0/0/1","value":false}]),
        ),
        // String `sv`.
        (
            "/3/0/0",
            OMA_JSON,
            r#"{"bn":"/3/0/0","e":[{"sv":"Open Mobile Alliance"}]}"#,
            json!([{"path":"/3/0/0","value":"Open Mobile Alliance"}]),
        ),
        // A whole instance: Integer, String, Time and a resource instance.
        (
            "/3/0",
            OMA_JSON,
            r#"{"bn":"/3/0/","e":[{"n":"9","v":95},{"n":"0","sv":"OMA"},{"n":"13","v":1367491215},{"n":"7/1","v":5000}]}"#,
            json!([{"path":"/3/0/9","value":95},{"path":"/3/0/0","value":"OMA"},
                   {"path":"/3/0/13","value":1367491215},{"path":"/3/0/7/1","value":5000}]),
        ),
    ] {
        let mut s = sim();
        let got = read_answered(&mut s, req, cf, doc.as_bytes());
        assert_eq!(got, content_of(req, content), "{doc}");
        // Exact text, not just equal JSON: `123` stays an integer, `123.0` a float.
        if doc.contains("123") {
            let req = read(&mut s, 2, req);
            s.send(peer(5000), &answer(&req, code::CONTENT, cf, doc.as_bytes()));
            let raw = String::from_utf8(s.take().1.remove(0).payload).unwrap();
            let want = if doc.contains("123.0") {
                "\"value\":123.0}"
            } else {
                "\"value\":123}"
            };
            assert!(raw.contains(want), "{raw}");
        }
    }
}

// ---- Over real UDP and the embedded broker --------------------------------------------------------

#[test]
fn lenient_reads_over_udp_and_mqtt() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    dev.send(&register_1_0(0x0101, &[1, 2], "lenient1", b"</0/0>,</3/0>").build());
    assert_eq!(reply_of(&dev.recv()).1, code::CREATED);
    assert_eq!(obs.next_of("register").1["data"]["ep"], "lenient1");
    for (id, path, cf, payload, content) in [
        (
            1,
            "/0/0/3",
            TEXT,
            &b"hello world"[..],
            json!([{"path":"/0/0/3","value":"aGVsbG8gd29ybGQ="}]),
        ),
        (
            2,
            "/3/0/7/1",
            TLV,
            WHOLE_MULTIPLE_RESOURCE,
            json!([{"path":"/3/0/7/1","value":5000}]),
        ),
        (
            3,
            "/3/0/9",
            OMA_JSON,
            &br#"{"bn":"/3/0/9","e":[{"v":123}]}"#[..],
            json!([{"path":"/3/0/9","value":123}]),
        ),
    ] {
        obs.command(
            "lenient1",
            json!({"reqID": id, "msgType": "read", "data": {"path": path}}),
        );
        let req = dev.recv();
        assert_eq!(reply_of(&req).1, code::GET);
        dev.send(&answer(&req, code::CONTENT, cf, payload));
        let (topic, msg) = obs.next_of("read");
        assert_eq!(topic, "lwm2m/lenient1/up/resp");
        assert_eq!(
            msg,
            json!({"reqID":id,"msgType":"read","data":{"reqPath":path,"code":"2.05",
                   "codeMsg":"content","content":content}})
        );
    }
}
