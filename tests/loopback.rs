//! Lock-step tests over loopback: exact datagrams to the running gateway (real UDP sockets, real
//! threads), exact replies and MQTT messages back, through the embedded broker and Mosquitto.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lwm2m_gateway::coap::{code, opt, MessageView, MsgType};
use serde_json::json;
use support::*;

/// lwm2m-node-lib's captured Register: ep=node-ep1, lt=60, lwm2m=1.0, b=U, payload
/// `</3/0>,</1/0>`, no Content-Format option.
fn node_lib() -> Vec<Vec<u8>> {
    captured_client_datagrams("lwm2m-node-lib-1.0.jsonl")
}

/// Registers the captured lwm2m-node-lib device `dev` (endpoint `node-ep1`) and waits for the
/// register event.
fn register_node_lib(dev: &Device, obs: &Observer) {
    dev.send(&node_lib()[0]);
    dev.recv();
    obs.next_of("register");
}

fn full_session(broker: Option<SocketAddr>) {
    let gw = TestGateway::start(broker, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    dev.send(&node_lib()[0]);
    let created = dev.recv();
    let (t, c, mid, token) = reply_of(&created);
    assert_eq!((t, c, mid), (MsgType::Ack, code::CREATED, 0x59cd));
    assert_eq!(token, hex("6da68917"));
    let id = location_id(&created).expect("Location-Path rd/<id>");
    let (topic, ev) = obs.next();
    assert_eq!(topic, "lwm2m/node-ep1/up/resp");
    assert_eq!(
        ev,
        json!({"msgType":"register","data":{"ep":"node-ep1","lt":60,"lwm2m":"1.0","b":"U",
               "alternatePath":"/","objectList":["/3/0","/1/0"],"security":"nosec"}})
    );

    // read: no Accept for a 1.0 device that announced no formats; text answer without CF.
    obs.command(
        "node-ep1",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!(
        (v.msg_type(), v.code(), uri_path(&req)),
        (MsgType::Con, code::GET, "/3/0/0".to_string())
    );
    assert_eq!(v.first_option(opt::ACCEPT), None, "no Accept option");
    dev.send(&answer(&req, code::CONTENT, None, b"Open Mobile Alliance"));
    let (topic, resp) = obs.next();
    assert_eq!(topic, "lwm2m/node-ep1/up/resp");
    assert_eq!(
        resp,
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/0","code":"2.05","codeMsg":"content",
               "content":[{"path":"/3/0/0","value":"Open Mobile Alliance"}]}})
    );

    // read typed through the object model: /3/0/9 battery level is an Integer.
    obs.command(
        "node-ep1",
        json!({"reqID": "b", "msgType": "read", "data": {"path": "3/0/9"}}),
    );
    let req = dev.recv();
    dev.send(&answer(&req, code::CONTENT, Some(0), b"87"));
    assert_eq!(
        obs.next().1["data"]["content"],
        json!([{"path":"/3/0/9","value":87}])
    );

    // write (text for a device without announced formats)
    obs.command(
"node-ep1",
        json!({"reqID": 2, "msgType": "write", "data": {"path": "/3/0/14", "type": "String", "value": "+01:00"}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!(
        (v.code(), v.content_format(), v.payload()),
        (code::PUT, Some(0), &b"+01:00"[..])
    );
    dev.send(&answer(&req, code::CHANGED, None, b""));
    assert_eq!(
        obs.next().1,
        json!({"reqID":2,"msgType":"write","data":{"reqPath":"/3/0/14","code":"2.04","codeMsg":"changed"}})
    );

    // write as TLV when asked (EMQX example bytes)
    obs.command(
"node-ep1",
        json!({"reqID": 3, "msgType": "write", "data": {"path": "/3/0/13", "type": "Integer", "value": "12345", "format": "tlv"}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!(
        (v.code(), v.content_format(), v.payload()),
        (code::PUT, Some(11542), &[0xC2u8, 0x0D, 0x30, 0x39][..])
    );
    dev.send(&answer(&req, code::CHANGED, None, b""));
    assert_eq!(obs.next().1["data"]["code"], "2.04");

    // execute with arguments
    obs.command(
        "node-ep1",
        json!({"reqID": 4, "msgType": "execute", "data": {"path": "/3/0/4", "args": "0"}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!(
        (v.code(), uri_path(&req), v.payload()),
        (code::POST, "/3/0/4".to_string(), &b"0"[..])
    );
    dev.send(&answer(&req, code::CHANGED, None, b""));
    assert_eq!(
        obs.next().1,
        json!({"reqID":4,"msgType":"execute","data":{"reqPath":"/3/0/4","code":"2.04","codeMsg":"changed"}})
    );

    // discover: Accept 40, content split on every comma
    obs.command(
        "node-ep1",
        json!({"reqID": 5, "msgType": "discover", "data": {"path": "/3/0"}}),
    );
    let req = dev.recv();
    assert_eq!(
        MessageView::parse(&req).unwrap().uint_option(opt::ACCEPT),
        Some(40)
    );
    dev.send(&answer(
        &req,
        code::CONTENT,
        Some(40),
        b"</3/0>,</3/0/0>,</3/0/9>;pmin=10",
    ));
    assert_eq!(
        obs.next().1["data"]["content"],
        json!(["</3/0>", "</3/0/0>", "</3/0/9>;pmin=10"])
    );

    // delete
    obs.command(
        "node-ep1",
        json!({"reqID": 6, "msgType": "delete", "data": {"path": "/5/0"}}),
    );
    let req = dev.recv();
    assert_eq!(
        (MessageView::parse(&req).unwrap().code(), uri_path(&req)),
        (code::DELETE, "/5/0".to_string())
    );
    dev.send(&answer(&req, code::DELETED, None, b""));
    assert_eq!(obs.next().1["data"]["codeMsg"], "deleted");

    // Update from a new source port (NAT rebinding): 2.04, update event, downlinks follow.
    let moved = gw.device();
    let upd = Msg::con(code::POST, 0x4242)
        .token(&[1])
        .path(&["rd", &id])
        .query(&["lt=120"]);
    moved.send(&upd.build());
    assert_eq!(reply_of(&moved.recv()).1, code::CHANGED);
    let (_, ev) = obs.next();
    assert_eq!(ev["msgType"], "update");
    assert_eq!(ev["data"]["lt"], 120);
    obs.command(
        "node-ep1",
        json!({"reqID": 7, "msgType": "read", "data": {"path": "/1/0/1"}}),
    );
    let req = moved.recv();
    moved.send(&answer(&req, code::CONTENT, None, b"300"));
    assert_eq!(
        obs.next().1["data"]["content"],
        json!([{"path":"/1/0/1","value":300}])
    );

    // Deregister: the captured datagram (from yet another port), location rewritten to ours.
    let third = gw.device();
    third.send(&rewrite(&node_lib()[3], None, None, Some(&id)));
    assert_eq!(reply_of(&third.recv()).1, code::DELETED);
    assert_eq!(
        obs.next().1,
        json!({"msgType":"deregister","data":{"ep":"node-ep1","reason":"deregistered"}})
    );

    // A command to the now unregistered endpoint is answered, not dropped.
    obs.command(
        "node-ep1",
        json!({"reqID": 8, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (_, r) = obs.next();
    assert_eq!(
        (
            r["reqID"].clone(),
            r["data"]["code"].clone(),
            r["data"]["reason"].clone()
        ),
        (json!(8), json!("4.04"), json!("endpoint not registered"))
    );
}

#[test]
fn node_lib_session_through_embedded_broker() {
    full_session(None);
}

#[test]
fn node_lib_session_through_mosquitto() {
    with_mosquitto(full_session);
}

#[test]
fn wakaama_register_and_senml_read() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    let cap = captured_client_datagrams("wakaama-1.1-session.jsonl");
    dev.send(&cap[0]);
    let created = dev.recv();
    assert_eq!(reply_of(&created).1, code::CREATED);
    let loc = location_id(&created);
    let (_, ev) = obs.next();
    assert_eq!(ev["data"]["lwm2m"], "1.1");
    assert_eq!(ev["data"]["objectList"][0], "/1");
    assert_eq!(ev["data"]["alternatePath"], "/");
    // Wakaama announced ct=110: reads ask for SenML JSON.
    obs.command(
        "wakaama-ep1",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0"}}),
    );
    let req = dev.recv();
    assert_eq!(
        MessageView::parse(&req).unwrap().uint_option(opt::ACCEPT),
        Some(110)
    );
    let v = MessageView::parse(&req).unwrap();
    // Wakaama's captured answer, re-addressed to our request.
    dev.send(&rewrite(
        &cap[1],
        Some(v.message_id()),
        Some(v.token()),
        None,
    ));
    let (_, r) = obs.next();
    assert_eq!(r["data"]["code"], "2.05");
    let content = r["data"]["content"].as_array().unwrap();
    assert!(
        content.contains(&json!({"path":"/3/0/0","value":"Open Mobile Alliance"})),
        "{r}"
    );
    assert!(
        content.contains(&json!({"path":"/3/0/9","value":100})),
        "{r}"
    );
    assert!(
        content.contains(&json!({"path":"/3/0/6/1","value":5})),
        "{r}"
    );
    // Wakaama's own Deregister of location "0", rewritten to ours.
    dev.send(&rewrite(cap.last().unwrap(), None, None, loc.as_deref()));
    assert_eq!(reply_of(&dev.recv()).1, code::DELETED);
    assert_eq!(obs.next().1["msgType"], "deregister");
}

#[test]
fn anjay_registers_with_1_2_at_first_attempt_and_reads_tlv() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    let cap = captured_client_datagrams("anjay-1.2-fallback-tlv.jsonl");
    dev.send(&cap[0]);
    let created = dev.recv();
    let loc = location_id(&created);
    assert_eq!(
        reply_of(&created).1,
        code::CREATED,
        "1.2 is accepted: no 4.12 fallback round trip"
    );
    let (_, ev) = obs.next();
    assert_eq!(ev["data"]["lwm2m"], "1.2");
    assert!(ev["data"]["objectList"]
        .as_array()
        .unwrap()
        .contains(&json!("/1/1")));
    obs.command(
        "anjay-ep1",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    // Anjay's captured TLV answer: resource 0 = "anjay".
    dev.send(&rewrite(
        &cap[2],
        Some(v.message_id()),
        Some(v.token()),
        None,
    ));
    assert_eq!(
        obs.next().1["data"]["content"],
        json!([{"path":"/3/0/0","value":"anjay"}])
    );
    // Anjay's Update with lt=120, re-addressed.
    dev.send(&rewrite(&cap[4], None, None, loc.as_deref()));
    assert_eq!(reply_of(&dev.recv()).1, code::CHANGED);
    assert_eq!(obs.next().1["data"]["lt"], 120);
}

#[test]
fn timeout_and_reset_reach_mqtt() {
    let gw = TestGateway::start(None, |c| {
        c.coap.ack_timeout = Duration::from_millis(50);
        c.coap.max_retransmit = 2;
    });
    let obs = gw.observer();
    let dev = gw.device();
    register_node_lib(&dev, &obs);
    obs.command(
        "node-ep1",
        json!({"reqID": [1, 2], "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let first = dev.recv();
    assert_eq!(dev.recv(), first, "retransmission 1");
    assert_eq!(dev.recv(), first, "retransmission 2");
    assert_eq!(
        obs.next().1,
        json!({"reqID":[1,2],"msgType":"coap_timeout","data":{"path":"/3/0/0"}})
    );
    obs.command(
        "node-ep1",
        json!({"reqID": 3, "msgType": "read", "data": {"path": "/3/0/1"}}),
    );
    let req = dev.recv();
    let mid = MessageView::parse(&req).unwrap().message_id();
    dev.send(&[0x70, 0, (mid >> 8) as u8, mid as u8]);
    assert_eq!(
        obs.next().1,
        json!({"reqID":3,"msgType":"coap_reset","data":{"path":"/3/0/1"}})
    );
}

#[test]
fn hostile_datagrams_and_commands_do_not_disturb_other_devices() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    register_node_lib(&dev, &obs);
    let attacker = gw.device();
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0x40],
        vec![0x4f, 0x01, 0, 1],
        vec![0x40, 0x02, 0, 1, 0xb2, b'r'],
        vec![0x40, 0x02, 0, 1, 0xff],
        vec![0x50, 0x02, 0, 1, 0xe0],
        vec![0x44, 0x02, 0, 1, 1, 2, 3, 4, 0xb2, b'r', b'd', 0x4f],
        vec![0x60, 0x45, 0, 1, 0xff, 1],
        vec![0x40, 0x45, 0, 1, 0xff, 1],
        vec![0x40, 0xe0, 0, 1],
        (0..2000).map(|i| i as u8).collect(),
    ];
    for j in &junk {
        attacker.send(j);
    }
    // Register of an endpoint name that would reach into other devices' topics.
    let evil = Msg::con(code::POST, 9)
        .path(&["rd"])
        .query(&["ep=node-ep1/dn"]);
    attacker.send(&evil.build());
    // Every CON answered or dropped; the good device is still served.
    let mut answers = 0;
    while let Some(r) = attacker.try_recv(Duration::from_millis(300)) {
        let v = MessageView::parse(&r).expect("gateway replies are well-formed");
        assert!(matches!(v.msg_type(), MsgType::Rst | MsgType::Ack));
        answers += 1;
    }
    assert!(
        answers >= 5,
        "CON junk is answered (RST or 4.xx): {answers}"
    );
    assert!(
        gw.metrics()
            .dropped_malformed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    // Bad commands get error responses.
    obs.publish("lwm2m/node-ep1/dn", "{{{");
    assert_eq!(obs.next().1["data"]["code"], "4.00");
    obs.publish(
        "lwm2m/node-ep1/dn/sub/topic",
        r#"{"reqID":1,"msgType":"write","data":{"path":"/3/0/1","type":"Float","value":"abc"}}"#,
    );
    let (t, r) = obs.next();
    assert_eq!(
        (t.as_str(), r["reqID"].clone(), r["data"]["code"].clone()),
        ("lwm2m/node-ep1/up/resp", json!(1), json!("4.00"))
    );
    obs.command(
        "node-ep1",
        json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    dev.send(&answer(&req, code::CONTENT, None, b"still fine"));
    assert_eq!(obs.next().1["data"]["content"][0]["value"], "still fine");
    assert_eq!(
        gw.metrics()
            .registrations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn reconnects_to_a_restarted_broker_and_subscribes_again() {
    let Some(m) = Mosquitto::start() else { return };
    let port = m.addr.port();
    let gw = TestGateway::start(Some(m.addr), |_| {});
    let metrics = gw.metrics();
    drop(m);
    use std::sync::atomic::Ordering::Relaxed;
    wait_until("the gateway notices the broker is gone", || {
        !metrics.mqtt_connected.load(Relaxed)
    });
    let _m2 = Mosquitto::start_on(Some(port)).unwrap();
    wait_until("the gateway reconnects and subscribes again", || {
        metrics.mqtt_subscribed.load(Relaxed)
    });
    let obs = gw.observer();
    let dev = gw.device();
    register_node_lib(&dev, &obs);
    obs.command(
        "node-ep1",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    dev.send(&answer(&req, code::CONTENT, None, b"back"));
    assert_eq!(obs.next_of("read").1["data"]["content"][0]["value"], "back");
}

#[test]
fn firmware_update_with_a_100_kib_blockwise_write_and_read() {
    use base64::Engine;
    use lwm2m_gateway::coap::block::BlockOpt;
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&["ep=fw-dev", "lt=300", "lwm2m=1.0"])
        .payload(b"</3/0>,</5/0>,</19/0>");
    dev.send(&reg.build());
    assert_eq!(reply_of(&dev.recv()).1, code::CREATED);
    obs.next_of("register");

    // 1. Write the 100 KiB package to /5/0/0: Block1, 1024-byte blocks.
    let image: Vec<u8> = (0..100 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    obs.command(
"fw-dev",
        json!({"reqID": "pkg", "msgType": "write", "data": {"path": "/5/0/0", "type": "Opaque", "value": b64}}),
    );
    let mut received = Vec::new();
    loop {
        let req = dev.recv();
        let v = MessageView::parse(&req).unwrap();
        assert_eq!(
            (v.code(), uri_path(&req).as_str(), v.content_format()),
            (code::PUT, "/5/0/0", Some(42))
        );
        let b1 = BlockOpt::decode(v.first_option(opt::BLOCK1).expect("Block1")).unwrap();
        assert_eq!(b1.offset(), received.len());
        received.extend_from_slice(v.payload());
        let c = if b1.more {
            code::CONTINUE
        } else {
            code::CHANGED
        };
        let ack = Msg::ack_to(&req, c).block(opt::BLOCK1, b1.num, b1.more, b1.szx);
        dev.send(&ack.build());
        if !b1.more {
            break;
        }
    }
    assert_eq!(received.len(), image.len());
    assert!(
        received == image,
        "the device got the package byte for byte"
    );
    assert_eq!(
        obs.next_of("write").1["data"],
        json!({"reqPath":"/5/0/0","code":"2.04","codeMsg":"changed"})
    );

    // 2. Observe the update state /5/0/3, 3. execute Update /5/0/2, states come as notifications.
    obs.command(
        "fw-dev",
        json!({"reqID": "state", "msgType": "observe", "data": {"path": "/5/0/3"}}),
    );
    let req = dev.recv();
    let token = MessageView::parse(&req).unwrap().token().to_vec();
    let first = Msg::ack_to(&req, code::CONTENT).observe(1).cf(0);
    dev.send(&first.payload(b"2").build());
    assert_eq!(
        obs.next_of("observe").1["data"]["content"],
        json!([{"path":"/5/0/3","value":2}])
    );
    obs.command(
        "fw-dev",
        json!({"reqID": "go", "msgType": "execute", "data": {"path": "/5/0/2"}}),
    );
    let req = dev.recv();
    assert_eq!(
        (MessageView::parse(&req).unwrap().code(), uri_path(&req)),
        (code::POST, "/5/0/2".to_string())
    );
    dev.send(&answer(&req, code::CHANGED, None, b""));
    assert_eq!(obs.next_of("execute").1["data"]["code"], "2.04");
    for (seq, state) in [(2u32, b"3"), (3, b"0")] {
        let n = Msg::non(code::CONTENT, 100 + seq as u16)
            .token(&token)
            .observe(seq)
            .cf(0)
            .payload(state);
        dev.send(&n.build());
        let (topic, v) = obs.next_of("notify");
        assert_eq!(topic, "lwm2m/fw-dev/up/notify");
        assert_eq!(v["reqID"], "state");
        assert_eq!(
            v["data"]["content"][0]["value"],
            std::str::from_utf8(state).unwrap().parse::<i64>().unwrap()
        );
    }
    obs.command(
        "fw-dev",
        json!({"reqID": "result", "msgType": "read", "data": {"path": "/5/0/5"}}),
    );
    let req = dev.recv();
    dev.send(&answer(&req, code::CONTENT, Some(0), b"1"));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/5/0/5","value":1}])
    );

    // 4. A 100 KiB read, answered with Block2 (the device picks 512-byte blocks).
    obs.command(
        "fw-dev",
        json!({"reqID": "blob", "msgType": "read", "data": {"path": "/19/0/0"}}),
    );
    loop {
        let req = dev.recv();
        let v = MessageView::parse(&req).unwrap();
        let num = v
            .first_option(opt::BLOCK2)
            .and_then(BlockOpt::decode)
            .map_or(0, |b| b.num) as usize;
        let start = num * 512;
        let end = (start + 512).min(image.len());
        let more = end < image.len();
        let block = Msg::ack_to(&req, code::CONTENT)
            .cf(42)
            .block(opt::BLOCK2, num as u32, more, 5);
        dev.send(&block.payload(&image[start..end]).build());
        if !more {
            break;
        }
    }
    let (_, r) = obs.next_of("read");
    let got = r["data"]["content"][0]["value"].as_str().unwrap();
    assert!(
        base64::engine::general_purpose::STANDARD
            .decode(got)
            .unwrap()
            == image,
        "read back byte for byte"
    );
}

#[test]
fn write_attr_create_and_batch_write_over_mqtt() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    register_node_lib(&dev, &obs);
    // write-attr: PUT with one Uri-Query per attribute, no payload (strings or numbers accepted)
    obs.command(
"node-ep1",
        json!({"reqID": 1, "msgType": "write-attr", "data": {"path": "/3/0/9", "pmin": "1", "pmax": 5, "lt": "5", "gt": null}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!((v.code(), v.payload().len()), (code::PUT, 0));
    assert_eq!(
        option_strings(&req, opt::URI_QUERY),
        ["pmin=1", "pmax=5", "lt=5"]
    );
    dev.send(&answer(&req, code::CHANGED, None, b""));
    assert_eq!(obs.next_of("write-attr").1["data"]["code"], "2.04");
    // batch write on an instance: POST (partial update), TLV, EMQX's exact bytes
    obs.command(
"node-ep1",
        json!({"reqID": 2, "msgType": "write", "data": {"basePath": "/3/0/", "content": [
        {"path": "13", "type": "Integer", "value": "12345"}, {"path": "14", "type": "String", "value": "87x"},
        {"path": "6/0", "type": "Integer", "value": "1"}]}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!(
        (v.code(), uri_path(&req).as_str(), v.content_format()),
        (code::POST, "/3/0", Some(11542))
    );
    assert_eq!(
        v.payload(),
        [0xC2, 0x0D, 0x30, 0x39, 0xC3, 0x0E, 0x38, 0x37, 0x78, 0x83, 0x06, 0x41, 0x00, 0x01]
    );
    dev.send(&answer(&req, code::CHANGED, None, b""));
    assert_eq!(obs.next_of("write").1["data"]["reqPath"], "/3/0/");
    // create: POST on the object with the new instance as TLV
    obs.command(
"node-ep1",
        json!({"reqID": 3, "msgType": "create", "data": {"basePath": "/6", "content": [
        {"path": "0/0", "type": "Float", "value": "1.5"}, {"path": "0/1", "type": "Float", "value": "2.5"}]}}),
    );
    let req = dev.recv();
    let v = MessageView::parse(&req).unwrap();
    assert_eq!(
        (v.code(), uri_path(&req).as_str(), v.content_format()),
        (code::POST, "/6", Some(11542))
    );
    assert_eq!(v.payload()[0] & 0xC0, 0x00, "an object-instance TLV");
    dev.send(&answer(&req, code::CREATED, None, b""));
    assert_eq!(
        obs.next_of("create").1["data"],
        json!({"reqPath":"/6","code":"2.01","codeMsg":"created"})
    );
}

fn mqtt5_session(broker: Option<SocketAddr>) {
    let gw = TestGateway::start(broker, |c| {
        c.mqtt.version = lwm2m_gateway::config::MqttVersion::V5;
        c.qmode_time_window = Duration::from_millis(300);
    });
    let obs = Observer5::connect(gw.broker, UPLINK);
    let dev = gw.device();
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&["ep=q5", "lt=300", "b=UQ"])
        .payload(b"</3/0>");
    dev.send(&reg.build());
    let loc = location_id(&dev.recv()).unwrap();
    assert_eq!(obs.next_of("register").1["data"]["b"], "UQ");
    // Awake: a command goes straight out.
    obs.command(
        "q5",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
        Some(60),
    );
    let req = dev.recv();
    dev.send(&answer(&req, code::CONTENT, None, b"now"));
    assert_eq!(obs.next_of("read").1["data"]["content"][0]["value"], "now");
    // Asleep: one command expires (MQTT 5 expiry 1 s), the other waits for the Update.
    std::thread::sleep(Duration::from_millis(500));
    expiry_ends_the_wait(&dev, &obs, "q5", &loc, 2);
}

#[test]
fn mqtt5_expiry_with_the_embedded_broker() {
    mqtt5_session(None);
}

#[test]
fn mqtt5_expiry_with_mosquitto() {
    with_mosquitto(mqtt5_session);
}

/// rumqttd never disables Nagle's algorithm; the gateway does it on the embedded broker's
/// listener, and every accepted connection inherits it (else each small command or event waits
/// for a delayed ACK, tens of milliseconds on loopback).
#[test]
fn embedded_broker_connections_have_nagle_disabled() {
    // One listener (the default `auto` has two: tests/mqtt5_default.rs checks those).
    let gw = TestGateway::start(None, |c| {
        c.mqtt.version = lwm2m_gateway::config::MqttVersion::V311
    });
    let _obs = gw.observer();
    let flags = lwm2m_gateway::runtime::sockopt::nodelay_of_local(gw.broker);
    // The listener, the gateway's own connection and the observer's.
    assert!(flags.len() >= 3, "broker sockets found: {flags:?}");
    assert!(flags.iter().all(|&nodelay| nodelay), "{flags:?}");
}
