//! Hot-path micro-benchmarks of the gateway's per-message work, each measured alone:
//! - routing a datagram in the event loop (`router::route`),
//! - parsing CoAP (the zero-copy view the event loop uses, and coap-lite's `Packet` the shard uses),
//! - a whole registration in the shard (Register -> 2.01 + `register` event, then Deregister),
//! - a notification in the shard (matched by token, decoded, `notify` JSON built),
//! - building the MQTT JSON envelope of a read response.
//!
//! `cargo bench --bench hotpath`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::router::{route, shard_of_endpoint};
use lwm2m_gateway::core::shard::{Output, Peer, Shard};
use lwm2m_gateway::core::topics::Topics;
use lwm2m_gateway::core::uplink::{self, Answer, Content, Uplink};
use lwm2m_gateway::lwm2m::model::ObjectRegistry;
use lwm2m_gateway::lwm2m::{Path, Record, Value};
use serde_json::json;

fn register_datagram(ep: &str, mid: u16) -> Vec<u8> {
    let mut b = Vec::new();
    let q = format!("ep={ep}");
    MessageBuilder::new(&mut b, MsgType::Con, code::POST, mid, &[1, 2, 3, 4])
        .option(opt::URI_PATH, b"rd")
        .uint_option(opt::CONTENT_FORMAT, 40)
        .options(
            opt::URI_QUERY,
            [q.as_bytes(), b"lt=86400", b"lwm2m=1.1", b"b=U"],
        )
        .payload(b"</>;rt=\"oma.lwm2m\";ct=\"60 110 112 11542\",</1/0>,</3/0>,</4/0>,</3303/0>");
    b
}

fn shard() -> Shard {
    let c = Config {
        workers: 1,
        ..Config::default()
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xml");
    let model = Arc::new(ObjectRegistry::load_dir(&dir).unwrap().0);
    Shard::new(
        lwm2m_gateway::core::ids::ShardId::default(),
        Arc::new(c.shard_config(model).unwrap()),
        1,
    )
}

fn peer() -> Peer {
    Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], 40000)))
}

fn routing_and_parsing(c: &mut Criterion) {
    let reg = register_datagram("bench-device-000001", 7);
    let addr = peer().addr;
    c.bench_function("route/register", |b| {
        b.iter(|| route(black_box(&reg), addr, 4, |_| None, 0))
    });
    let mut notif = Vec::new();
    MessageBuilder::new(
        &mut notif,
        MsgType::Non,
        code::CONTENT,
        9,
        &[2, 9, 9, 9, 9, 9, 9, 9],
    )
    .uint_option(opt::OBSERVE, 12)
    .uint_option(opt::CONTENT_FORMAT, 0)
    .payload(b"21.5");
    c.bench_function("route/notification", |b| {
        b.iter(|| route(black_box(&notif), addr, 4, |_| None, 0))
    });
    c.bench_function("route/endpoint_hash", |b| {
        b.iter(|| shard_of_endpoint(black_box(b"bench-device-000001"), 4))
    });
    c.bench_function("coap/view_parse_register", |b| {
        b.iter(|| {
            let v = MessageView::parse(black_box(&reg)).unwrap();
            v.option_values(opt::URI_QUERY).count()
        })
    });
    c.bench_function("coap/coap_lite_parse_register", |b| {
        b.iter(|| coap_lite::Packet::from_bytes(black_box(&reg)).unwrap())
    });
}

fn shard_work(c: &mut Criterion) {
    let mut s = shard();
    let mut out = Output::default();
    let now = Instant::now();
    let mut mid = 0u16;
    c.bench_function("shard/register_then_deregister", |b| {
        b.iter(|| {
            mid = mid.wrapping_add(2);
            s.on_datagram(now, peer(), &register_datagram("bench-dev", mid), &mut out);
            let loc = MessageView::parse(&out.transmits[0].bytes).unwrap();
            let id: Vec<u8> = loc
                .option_values(opt::LOCATION_PATH)
                .nth(1)
                .unwrap()
                .to_vec();
            let mut d = Vec::new();
            MessageBuilder::new(&mut d, MsgType::Con, code::DELETE, mid.wrapping_add(1), &[])
                .options(opt::URI_PATH, [b"rd".as_slice(), &id])
                .finish();
            s.on_datagram(now, peer(), &d, &mut out);
            out.clear();
        })
    });

    // One registered device with an established observation of /3303/0/5700.
    let mut s = shard();
    s.on_datagram(now, peer(), &register_datagram("obs-dev", 1), &mut out);
    out.clear();
    let cmd = json!({"reqID": 1, "msgType": "observe", "data": {"path": "/3303/0/5700", "format": "text"}}).to_string();
    s.on_command(
        now,
        "obs-dev",
        command::parse(cmd.as_bytes()),
        None,
        &mut out,
    );
    let req = out.transmits[0].bytes.clone();
    let v = MessageView::parse(&req).unwrap();
    let token = v.token().to_vec();
    let mut ack = Vec::new();
    MessageBuilder::new(
        &mut ack,
        MsgType::Ack,
        code::CONTENT,
        v.message_id(),
        &token,
    )
    .uint_option(opt::OBSERVE, 1)
    .uint_option(opt::CONTENT_FORMAT, 0)
    .payload(b"20.0");
    s.on_datagram(now, peer(), &ack, &mut out);
    out.clear();
    let mut seq = 1u32;
    let mut n = Vec::new();
    c.bench_function("shard/notification_to_json", |b| {
        b.iter(|| {
            seq += 1;
            MessageBuilder::new(&mut n, MsgType::Non, code::CONTENT, seq as u16, &token)
                .uint_option(opt::OBSERVE, seq)
                .uint_option(opt::CONTENT_FORMAT, 0)
                .payload(b"21.5");
            s.on_datagram(now, peer(), &n, &mut out);
            assert_eq!(out.publishes.len(), 1);
            out.clear();
        })
    });
}

fn envelope_json(c: &mut Criterion) {
    let cmd = command::parse(br#"{"reqID":42,"msgType":"read","data":{"path":"/3/0/9"}}"#).unwrap();
    let cfg = Config::default();
    let topics = Topics::new(&cfg.mountpoint, &cfg.translators).unwrap();
    let answer = Answer {
        code: code::CONTENT,
        content: Content::Records(vec![Record::new(
            Path::parse("/3/0/9").unwrap(),
            Value::Integer(87),
        )]),
        reason: None,
    };
    c.bench_function("envelope/read_response", |b| {
        b.iter(|| {
            let ev = Uplink::Response {
                cmd: black_box(&cmd.head),
                seq_num: None,
                answer: &answer,
            };
            uplink::render(&topics, "ep", None, &ev)
        })
    });
    c.bench_function("envelope/parse_command", |b| {
        b.iter(|| {
            command::parse(black_box(
                br#"{"reqID":42,"msgType":"read","data":{"path":"/3/0/9"}}"#,
            ))
            .unwrap()
        })
    });
}

criterion_group!(benches, routing_and_parsing, shard_work, envelope_json);
criterion_main!(benches);
