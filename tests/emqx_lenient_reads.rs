//! EMQX drop-in parity for lenient device answers to reads: a text/plain answer for an Opaque
//! resource, a TLV answer to a read of a resource instance `/o/i/r/ri` (a Resource, a Multiple
//! Resource or a Resource Instance TLV), and OMA JSON (11543) numbers and values. Each test drives
//! the sans-IO `Shard` with a fake clock: the exact device datagram in, the exact MQTT JSON out.
//! The setup is a small copy of `tests/shard_sim.rs`'s. One test at the end goes through real UDP
//! and the embedded broker (`tests/support`), as `tests/loopback.rs` does.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::shard::{Output, Peer, Shard};
use lwm2m_gateway::lwm2m::model::ObjectRegistry;
use serde_json::{json, Value};

struct Sim {
    shard: Shard,
    now: Instant,
    out: Output,
}

fn peer() -> Peer {
    Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], 5000)))
}

fn xml_model() -> Arc<ObjectRegistry> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xml");
    Arc::new(ObjectRegistry::load_dir(&dir).expect("xml dir").0)
}

impl Sim {
    fn new() -> Sim {
        let c = Config {
            workers: 1,
            ..Config::default()
        };
        let cfg = Arc::new(c.shard_config(xml_model()).unwrap());
        Sim {
            shard: Shard::new(lwm2m_gateway::core::ids::ShardId::default(), cfg, 42),
            now: Instant::now(),
            out: Output::default(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.shard
            .on_datagram(self.now, peer(), bytes, &mut self.out);
    }

    fn transmits(&mut self) -> Vec<Vec<u8>> {
        self.out.transmits.drain(..).map(|t| t.bytes).collect()
    }

    fn publishes(&mut self) -> Vec<(String, Value)> {
        self.out
            .publishes
            .drain(..)
            .map(|p| (p.topic, serde_json::from_slice(&p.payload).unwrap()))
            .collect()
    }

    /// Registers `ep` as a LwM2M 1.0 client that announces no content formats (so reads carry no
    /// Accept and the device picks the format, as lwm2m-node-lib and older clients do).
    fn register(&mut self, ep: &str) {
        let q = format!("ep={ep}");
        let mut b = Vec::new();
        MessageBuilder::new(&mut b, MsgType::Con, code::POST, 1, &[7])
            .options(opt::URI_PATH, [&b"rd"[..]])
            .uint_option(opt::CONTENT_FORMAT, 40)
            .options(
                opt::URI_QUERY,
                [q.as_bytes(), b"lt=600", b"lwm2m=1.0", b"b=U"],
            )
            .payload(b"</0/0>,</3/0>,</6/0>");
        self.send(&b);
        let t = self.transmits();
        assert_eq!(MessageView::parse(&t[0]).unwrap().code(), code::CREATED);
        self.publishes();
    }

    /// Sends a read of `path` as command `req_id` and returns the request datagram's message id
    /// and token after checking its Uri-Path.
    fn read(&mut self, ep: &str, req_id: u32, path: &str) -> (u16, Vec<u8>) {
        let cmd = json!({"reqID": req_id, "msgType": "read", "data": {"path": path}});
        self.shard.on_command(
            self.now,
            ep,
            command::parse(cmd.to_string().as_bytes()),
            None,
            &mut self.out,
        );
        let t = self.transmits();
        assert_eq!(t.len(), 1, "one request datagram");
        let v = MessageView::parse(&t[0]).unwrap();
        assert_eq!((v.msg_type(), v.code()), (MsgType::Con, code::GET));
        let uri: Vec<String> = v
            .option_values(opt::URI_PATH)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        assert_eq!(format!("/{}", uri.join("/")), path);
        (v.message_id(), v.token().to_vec())
    }

    /// The device's piggybacked 2.05 answer, written out byte by byte: `68 45 mid token`, then
    /// the Content-Format option (`c0` = 0 text/plain, `c2 2d 16` = 11542 TLV, `c2 2d 17` = 11543
    /// OMA JSON, `c2 06 07` = 1543; nothing when `cf` is empty), `ff`, the payload.
    fn answer(&mut self, mid: u16, token: &[u8], cf: &[u8], payload: &[u8]) {
        self.send(&ack_205(mid, token, cf, payload));
    }

    /// Read `path`, answer with `payload`, return the one MQTT message published.
    fn read_answered(&mut self, path: &str, cf: &[u8], payload: &[u8]) -> Value {
        let (mid, token) = self.read("dev", 1, path);
        self.answer(mid, &token, cf, payload);
        let mut p = self.publishes();
        assert_eq!(p.len(), 1, "one MQTT message");
        let (topic, v) = p.remove(0);
        assert_eq!(topic, "lwm2m/dev/up/resp");
        v
    }
}

/// A piggybacked ACK 2.05 with an 8-byte token (the gateway's tokens are 8 bytes).
fn ack_205(mid: u16, token: &[u8], cf: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(token.len(), 8);
    let mut b = vec![0x68, 0x45];
    b.extend_from_slice(&mid.to_be_bytes());
    b.extend_from_slice(token);
    b.extend_from_slice(cf);
    b.push(0xFF);
    b.extend_from_slice(payload);
    b
}

const TEXT: &[u8] = &[0xC0];
const NO_CF: &[u8] = &[];
const TLV: &[u8] = &[0xC2, 0x2D, 0x16];
const OMA_JSON: &[u8] = &[0xC2, 0x2D, 0x17];
const OMA_JSON_LEGACY: &[u8] = &[0xC2, 0x06, 0x07];

fn content_of(path: &str, content: Value) -> Value {
    json!({"reqID":1,"msgType":"read","data":{"reqPath":path,"code":"2.05","codeMsg":"content",
           "content":content}})
}

fn sim() -> Sim {
    let mut s = Sim::new();
    s.register("dev");
    s
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
            s.read_answered("/0/0/3", cf, b"hello world"),
            content_of(
                "/0/0/3",
                json!([{"path":"/0/0/3","value":"aGVsbG8gd29ybGQ="}])
            ),
            "content format option {cf:02x?}"
        );
    }
    let mut s = sim();
    assert_eq!(
        s.read_answered("/6/0/4", TEXT, b"\x01\x02 km/h"),
        content_of("/6/0/4", json!([{"path":"/6/0/4","value":"AQIga20vaA=="}]))
    );
    // Not UTF-8 either: the bytes all the same.
    let mut s = sim();
    assert_eq!(
        s.read_answered("/0/0/3", TEXT, &[0xFF, 0xFE]),
        content_of("/0/0/3", json!([{"path":"/0/0/3","value":"//4="}]))
    );
}

#[test]
fn text_answer_in_the_ts_base64_form_is_unchanged() {
    // What the TS prescribes (base64 text): decoded to 01 02 03, published as the same base64, as
    // the gateway did before. EMQX would base64 the text once more ("QVFJRA=="); we keep the TS.
    let mut s = sim();
    assert_eq!(
        s.read_answered("/0/0/3", TEXT, b"AQID"),
        content_of("/0/0/3", json!([{"path":"/0/0/3","value":"AQID"}]))
    );
    // Other types are untouched: a bad Integer is still a 4.00 with the reason.
    let mut s = sim();
    assert_eq!(
        s.read_answered("/3/0/9", TEXT, b"full"),
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
        // 88 07 08 | 42 00 0f a0 | 42 01 13 88: the whole resource, instances 0 = 4000 and 1 =
        // 5000; only the requested instance is published (before: 4.00 "TLV resource instance id
        // 0 does not answer the requested 1").
        (
            "whole multiple resource",
            &[
                0x88, 0x07, 0x08, 0x42, 0x00, 0x0F, 0xA0, 0x42, 0x01, 0x13, 0x88,
            ][..],
        ),
        // c2 07 13 88: a plain Resource 7 = 5000, the instance's value (before: published at the
        // resource's path, "/3/0/7").
        ("resource", &[0xC2, 0x07, 0x13, 0x88][..]),
    ] {
        let mut s = sim();
        assert_eq!(s.read_answered("/3/0/7/1", TLV, tlv), want, "{what}");
    }
}

#[test]
fn tlv_answer_without_the_requested_instance_is_refused() {
    // 84 07 | 42 00 0f a0: only instance 0.
    let mut s = sim();
    assert_eq!(
        s.read_answered("/3/0/7/1", TLV, &[0x84, 0x07, 0x42, 0x00, 0x0F, 0xA0]),
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/7/1","code":"4.00",
               "codeMsg":"bad_request",
               "reason":"cannot decode tlv payload: invalid payload: TLV does not contain the requested resource instance 1"}})
    );
    // A truncated TLV: 4.00 too, and the device can be read again.
    let mut s = sim();
    let v = s.read_answered("/3/0/7/1", TLV, &[0x88, 0x07, 0x08, 0x42, 0x00]);
    assert_eq!(v["data"]["code"], "4.00");
    assert_eq!(
        s.read_answered("/3/0/7/1", TLV, &[0x42, 0x01, 0x13, 0x88]),
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
        let got = s.read_answered(req, cf, doc.as_bytes());
        assert_eq!(got, content_of(req, content), "{doc}");
        // Exact text, not just equal JSON: `123` stays an integer, `123.0` a float.
        if doc.contains("123") {
            let (mid, token) = s.read("dev", 2, req);
            s.answer(mid, &token, cf, doc.as_bytes());
            let raw = String::from_utf8(s.out.publishes.remove(0).payload.to_vec()).unwrap();
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
    use support::{reply_of, Device, Observer, TestGateway};
    let gw = TestGateway::start(None, |_| {});
    let obs = Observer::connect(gw.broker, &["lwm2m/+/up/#"]);
    let dev = Device::new(gw.udp);
    let mut reg = Vec::new();
    MessageBuilder::new(&mut reg, MsgType::Con, code::POST, 0x0101, &[1, 2])
        .options(opt::URI_PATH, [&b"rd"[..]])
        .uint_option(opt::CONTENT_FORMAT, 40)
        .options(
            opt::URI_QUERY,
            [&b"ep=lenient1"[..], b"lt=600", b"lwm2m=1.0", b"b=U"],
        )
        .payload(b"</0/0>,</3/0>");
    dev.send(&reg);
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
            &[
                0x88, 0x07, 0x08, 0x42, 0x00, 0x0F, 0xA0, 0x42, 0x01, 0x13, 0x88,
            ][..],
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
        obs.publish(
            "lwm2m/lenient1/dn",
            &json!({"reqID": id, "msgType": "read", "data": {"path": path}}).to_string(),
        );
        let req = dev.recv();
        let v = MessageView::parse(&req).unwrap();
        assert_eq!(v.code(), code::GET);
        dev.send(&ack_205(v.message_id(), v.token(), cf, payload));
        let (topic, msg) = obs.next_of("read");
        assert_eq!(topic, "lwm2m/lenient1/up/resp");
        assert_eq!(
            msg,
            json!({"reqID":id,"msgType":"read","data":{"reqPath":path,"code":"2.05",
                   "codeMsg":"content","content":content}})
        );
    }
}
