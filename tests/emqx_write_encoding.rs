//! `write_encoding`: EMQX's exact TLV writes when asked, the per-device choice by default, and a
//! command's `data.format` over either. Real UDP and the embedded broker; the device is the
//! captured lwm2m-node-lib client, which announces no content formats.

mod support;

use lwm2m_gateway::coap::{code, MessageView};
use lwm2m_gateway::config::WriteEncoding;
use serde_json::{json, Value};
use support::*;

/// Registers the captured lwm2m-node-lib device (endpoint `node-ep1`) on a gateway with
/// `encoding`, sends each write command and returns the (method, Content-Format, payload) the
/// device received for each, answering each 2.04 and checking its response.
fn writes_seen(encoding: WriteEncoding, commands: &[Value]) -> Vec<(u8, Option<u16>, Vec<u8>)> {
    let gw = TestGateway::start(None, |c| c.write_encoding = encoding);
    let obs = gw.observer();
    let dev = gw.device();
    dev.send(&captured_client_datagrams("lwm2m-node-lib-1.0.jsonl")[0]);
    assert_eq!(reply_of(&dev.recv()).1, code::CREATED);
    obs.next_of("register");
    let mut seen = Vec::new();
    for cmd in commands {
        obs.command("node-ep1", cmd.clone());
        let req = dev.recv();
        let v = MessageView::parse(&req).unwrap();
        seen.push((v.code(), v.content_format(), v.payload().to_vec()));
        dev.send(&answer(&req, code::CHANGED, None, b""));
        let (_, resp) = obs.next_of("write");
        assert_eq!(resp["reqID"], cmd["reqID"]);
        assert_eq!(resp["data"]["code"], "2.04");
    }
    seen
}

fn commands() -> Vec<Value> {
    vec![
        json!({"reqID": 1, "msgType": "write", "data": {"path": "/3/0/14", "type": "String", "value": "+01:00"}}),
        json!({"reqID": 2, "msgType": "write", "data": {"path": "/3/0/13", "type": "Integer", "value": "12345"}}),
        json!({"reqID": 3, "msgType": "write", "data": {"path": "/3/0/14", "type": "String", "value": "Z", "format": "text"}}),
        json!({"reqID": 4, "msgType": "write", "data": {"basePath": "/3/0", "content": [{"path": "13", "type": "Integer", "value": 7}]}}),
    ]
}

#[test]
fn tlv_writes_every_value_as_emqx_does() {
    let seen = writes_seen(WriteEncoding::Tlv, &commands());
    let tlv = Some(11542);
    assert_eq!(
        seen,
        vec![
            // Resource 14, 6-byte value: C6 0E "+01:00" (EMQX's bytes).
            (code::PUT, tlv, [&[0xC6, 0x0E][..], b"+01:00"].concat()),
            (code::PUT, tlv, vec![0xC2, 0x0D, 0x30, 0x39]),
            // data.format wins over the setting.
            (code::PUT, Some(0), b"Z".to_vec()),
            // Instance-level batch: POST, partial update.
            (code::POST, tlv, vec![0xC1, 0x0D, 0x07]),
        ]
    );
}

#[test]
fn auto_writes_text_to_a_device_that_announced_no_formats() {
    let seen = writes_seen(WriteEncoding::Auto, &commands());
    assert_eq!(
        seen,
        vec![
            (code::PUT, Some(0), b"+01:00".to_vec()),
            (code::PUT, Some(0), b"12345".to_vec()),
            (code::PUT, Some(0), b"Z".to_vec()),
            // Several resources have no text form: TLV.
            (code::POST, Some(11542), vec![0xC1, 0x0D, 0x07]),
        ]
    );
}
