//! Deterministic tests of the sans-IO shard (the harness: `support::sim`): block-wise transfers
//! (RFC 7959): Block2 reads reassembled before publishing, the size limit, Block1 writes that
//! follow the device's smaller block size, block-wise observe answers and notifications, and a
//! transfer too slow to finish.

mod support;

use std::time::Duration;

use base64::Engine;
use lwm2m_gateway::coap::{code, opt, MessageView};
use serde_json::json;
use support::*;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The device's answer to `req` with block `num` of a Block2 body (1024-byte blocks, opaque).
fn block2_answer(req: &[u8], num: u32, more: bool, payload: &[u8]) -> Vec<u8> {
    Msg::ack_to(req, code::CONTENT)
        .cf(42)
        .block(opt::BLOCK2, num, more, 6)
        .payload(payload)
        .build()
}

#[test]
fn block2_read_is_reassembled_before_publishing() {
    let mut s = Sim::registered("big");
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
        let resp = block2_answer(&req, num, more, &body[offset..end]);
        offset = end;
        s.send(peer(5000), &resp);
        let (t, p, _) = s.take();
        if more {
            assert!(p.is_empty(), "nothing published before the last block");
            req = t[0].1.clone();
        } else {
            assert_eq!(
                payload_json(&p[0])["data"]["content"],
                json!([{"path": "/19/0/0", "value": b64(&body)}])
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
    s.command(
        "huge",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/19/0/0"}}),
    );
    let mut req = s.take().0.remove(0).1;
    for num in 0..3u32 {
        s.send(peer(5000), &block2_answer(&req, num, true, &[7u8; 1024]));
        let (t, p, _) = s.take();
        if num < 2 {
            req = t[0].1.clone();
        } else {
            assert_eq!(payload_json(&p[0])["data"]["code"], "4.13");
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
    let mut s = Sim::registered("fw");
    let image: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    s.command("fw", json!({"reqID": "fw", "msgType": "write", "data": {"path": "/5/0/0", "type": "Opaque", "value": b64(&image), "format": "opaque"}}));
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
            s.send(peer(5000), &answer(&req, code::CHANGED, None, b""));
            break;
        }
        // After the first block the device asks for 512-byte blocks.
        let (ack_num, ack_szx) = if first { (0, 5) } else { (num, szx) };
        first = false;
        let cont = Msg::ack_to(&req, code::CONTINUE).block(opt::BLOCK1, ack_num, true, ack_szx);
        s.send(peer(5000), &cont.build());
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
    let mut s = Sim::registered("bigobs");
    let body_a: Vec<u8> = vec![b'a'; 1500];
    let body_b: Vec<u8> = vec![b'b'; 1100];
    s.command(
        "bigobs",
        json!({"reqID": 1, "msgType": "observe", "data": {"path": "/19/0/0", "format": "opaque"}}),
    );
    let req = s.take().0.remove(0).1;
    let v = MessageView::parse(&req).unwrap();
    let token = v.token().to_vec();
    // Block 0 of an observation's body, with Observe `seq`.
    let block0 = |m: Msg, seq: u32, body: &[u8]| {
        m.token(&token)
            .observe(seq)
            .cf(42)
            .block(opt::BLOCK2, 0, true, 6)
            .payload(&body[..1024])
            .build()
    };
    // First block carries the Observe option; the follow-up GET must not.
    s.send(
        peer(5000),
        &block0(Msg::ack(code::CONTENT, v.message_id()), 3, &body_a),
    );
    let (t, p, _) = s.take();
    assert!(p.is_empty());
    let v = MessageView::parse(&t[0].1).unwrap();
    assert_eq!(
        (v.uint_option(opt::OBSERVE), block_opt(&v, opt::BLOCK2)),
        (None, Some((1, false, 6)))
    );
    s.send(
        peer(5000),
        &block2_answer(&t[0].1, 1, false, &body_a[1024..]),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].1["msgType"], "observe");
    assert_eq!(pubs[0].1["seqNum"], 3);
    assert_eq!(pubs[0].1["data"]["content"][0]["value"], b64(&body_a));
    assert_eq!(
        s.observations(),
        1,
        "the observation is on despite the block-wise answer"
    );
    // A block-wise NON notification: block 0 with the observation's token, the rest fetched.
    s.send(
        peer(5000),
        &block0(Msg::non(code::CONTENT, 500), 4, &body_b),
    );
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
        &block2_answer(&t[0].1, 1, false, &body_b[1024..]),
    );
    let pubs = s.publishes();
    assert_eq!(pubs[0].0, "lwm2m/bigobs/up/notify");
    assert_eq!(pubs[0].1["msgType"], "notify");
    assert_eq!(pubs[0].1["seqNum"], 4);
    assert_eq!(pubs[0].1["reqID"], 1);
    assert_eq!(pubs[0].1["data"]["content"][0]["value"], b64(&body_b));
    assert_eq!(s.observations(), 1);
}

#[test]
fn slow_blockwise_transfer_expires_after_exchange_lifetime() {
    let mut s = Sim::registered("slow");
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
            let v = payload_json(pb);
            assert_eq!(v["data"]["code"], "4.08");
            assert_eq!(v["data"]["reason"], "block-wise transfer expired");
            assert!(num >= 11, "expired only after about 247 s ({num} blocks)");
            break;
        }
        s.send(peer(5000), &block2_answer(&req, num, true, &[1u8; 1024]));
        num += 1;
        assert!(num < 40, "the transfer never expired");
        req = s.take().0.remove(0).1;
    }
}
