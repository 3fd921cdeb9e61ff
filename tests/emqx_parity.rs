//! EMQX drop-in parity over loopback: real UDP to the running gateway and a real broker (the
//! embedded one, and Mosquitto where it is installed). Exact datagrams in, exact replies and MQTT
//! JSON out, one test per behaviour: an object list labelled text/plain, a Register and an Update
//! sent block-wise (RFC 7959 Block1, server side) and what such a transfer is refused for, a
//! command with an empty path, and `update_msg_publish_condition` spelled as EMQX does and in
//! kebab-case.
//!
//! That something was *not* published or sent is proved by order, not by waiting: the gateway
//! handles one endpoint's datagrams and commands in order, on one worker, and publishes in that
//! order, so when a later "marker" of the same endpoint is the next thing to arrive, nothing came
//! before it. (Events of different endpoints may come from different workers, in either order.)

mod support;

use std::net::SocketAddr;
use std::path::Path;

use clap::Parser;
use lwm2m_gateway::coap::{code, opt};
use lwm2m_gateway::config::{Args, Config, UpdatePublishCondition};
use serde_json::{json, Value};
use support::*;

/// The Register of `ep` (CON POST `/rd`, lt=300, lwm2m=1.0, b=U), message id `mid` and token
/// `mid`'s two bytes, without Content-Format or payload.
fn register(mid: u16, ep: &str) -> Msg {
    Msg::con(code::POST, mid)
        .token(&mid.to_be_bytes())
        .path(&["rd"])
        .query(&[&format!("ep={ep}"), "lt=300", "lwm2m=1.0", "b=U"])
}

/// The Update of registration `id` (CON POST `/rd/{id}`), message id and token as [`register`]'s,
/// without query, Content-Format or payload.
fn update(mid: u16, id: &str) -> Msg {
    Msg::con(code::POST, mid)
        .token(&mid.to_be_bytes())
        .path(&["rd", id])
}

/// Sends `req` from `dev` and asserts the answer is exactly `want`.
fn answered(dev: &Device, req: &[u8], want: Msg) {
    dev.send(req);
    let got = dev.recv();
    assert_eq!(got, want.build(), "answer {:?}", reply_of(&got));
}

/// Sends the Register `req` from `dev`, asserts the answer is exactly its 2.01 Created with
/// Location-Path `rd/{id}` (and `block1`, the Block1 option of a block-wise Register's last
/// block), and returns the id.
fn created(dev: &Device, req: &[u8], block1: Option<(u32, bool, u8)>) -> String {
    dev.send(req);
    let got = dev.recv();
    let id = location_id(&got).expect("Location-Path rd/<id>");
    let want = Msg::ack_to(req, code::CREATED)
        .option(opt::LOCATION_PATH, b"rd")
        .option(opt::LOCATION_PATH, id.as_bytes());
    let want = match block1 {
        Some((num, more, szx)) => want.block(opt::BLOCK1, num, more, szx),
        None => want,
    };
    assert_eq!(got, want.build(), "answer {:?}", reply_of(&got));
    id
}

/// The next MQTT message, which must be on `ep`'s event topic.
fn next_event(obs: &Observer, ep: &str) -> Value {
    let (topic, v) = obs.next();
    assert_eq!(topic, format!("lwm2m/{ep}/up/resp"), "{v}");
    v
}

/// The `register` or `update` event (`kind`) of `ep` registered as [`register`] does, holding
/// `objects`.
fn event(kind: &str, ep: &str, objects: &[String]) -> Value {
    json!({"msgType":kind,"data":{"ep":ep,"lt":300,"lwm2m":"1.0","b":"U","alternatePath":"/",
           "objectList":objects,"security":"nosec"}})
}

/// `paths` as a link-format object list (`</1/0>,</3/0>`) and as the event's `objectList`.
fn objects(paths: &[&str]) -> (Vec<u8>, Vec<String>) {
    let links: Vec<String> = paths.iter().map(|p| format!("<{p}>")).collect();
    let list = paths.iter().map(|p| p.to_string()).collect();
    (links.join(",").into_bytes(), list)
}

/// Registers `ep` from `dev` with the object list `paths` labelled Content-Format `cf`: exactly
/// the 2.01, exactly the `register` event. Returns the registration id.
fn registered(dev: &Device, obs: &Observer, mid: u16, ep: &str, cf: u32, paths: &[&str]) -> String {
    let (list, want) = objects(paths);
    let id = created(dev, &register(mid, ep).cf(cf).payload(&list).build(), None);
    assert_eq!(next_event(obs, ep), event("register", ep, &want));
    id
}

/// Sends the Update `req` from `dev` and asserts the answer is exactly its 2.04 Changed.
fn changed(dev: &Device, req: &[u8]) {
    answered(dev, req, Msg::ack_to(req, code::CHANGED));
}

/// De-registers `ep` (registration `id`) from `dev` (CON DELETE `/rd/{id}`): exactly the 2.02,
/// and the next event is its `deregister`.
fn deregistered(dev: &Device, obs: &Observer, mid: u16, ep: &str, id: &str) {
    let req = Msg::con(code::DELETE, mid)
        .token(&mid.to_be_bytes())
        .path(&["rd", id])
        .build();
    answered(dev, &req, Msg::ack_to(&req, code::DELETED));
    assert_eq!(
        next_event(obs, ep),
        json!({"msgType":"deregister","data":{"ep":ep,"reason":"deregistered"}})
    );
}

/// Instances `range` of object `obj` (`/3303/0`, `/3303/1`...), as [`objects`].
fn instances(obj: u16, range: std::ops::Range<u16>) -> (Vec<u8>, Vec<String>) {
    let paths: Vec<String> = range.map(|i| format!("/{obj}/{i}")).collect();
    objects(&paths.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `body` sent block-wise as `head` sends it (Block1, 64-byte blocks, SZX 2): block `n` is the
/// CON `head(mid0 + n)`, with its own message id, the first block's token, Block1 `n` (M=1 but
/// on the last) and its 64 bytes of `body`.
fn blocks(body: &[u8], mid0: u16, head: impl Fn(u16) -> Msg) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = body.chunks(64).collect();
    (0..pieces.len())
        .map(|n| {
            head(mid0 + n as u16)
                .token(&mid0.to_be_bytes())
                .block(opt::BLOCK1, n as u32, n + 1 < pieces.len(), 2)
                .payload(pieces[n])
                .build()
        })
        .collect()
}

/// Sends block `n` of `blocks` and asserts it is answered exactly 2.31 Continue, its Block1
/// echoed with M=1 and SZX 2.
fn continued(dev: &Device, blocks: &[Vec<u8>], n: usize) {
    let want = Msg::ack_to(&blocks[n], code::CONTINUE).block(opt::BLOCK1, n as u32, true, 2);
    answered(dev, &blocks[n], want);
}

// ---- 1. An object list labelled text/plain ------------------------------------------------------

fn text_plain_object_lists(broker: Option<SocketAddr>) {
    let gw = TestGateway::start(broker, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    let id = registered(&dev, &obs, 0x10, "text1", 0, &["/1/0", "/3/0"]);
    // An Update labelled so is read as link-format too.
    let (list, want) = objects(&["/1/0", "/3/0", "/5/0"]);
    let upd = update(0x11, &id).cf(0).payload(&list).build();
    changed(&dev, &upd);
    assert_eq!(next_event(&obs, "text1"), event("update", "text1", &want));
    // application/octet-stream (42) is still no object list: 4.15 with the reason, no event.
    let other = gw.device();
    let reg = register(0x12, "octet1")
        .cf(42)
        .payload(b"</1/0>,</3/0>")
        .build();
    let refused = Msg::ack_to(&reg, code::UNSUPPORTED_CONTENT_FORMAT)
        .payload(b"object list must be link-format (40)");
    answered(&other, &reg, refused);
    // The marker: the next event is octet1's Register labelled link-format, so the refused one
    // published nothing.
    registered(&other, &obs, 0x13, "octet1", 40, &["/1/0", "/3/0"]);
    deregistered(&dev, &obs, 0x14, "text1", &id);
}

#[test]
fn text_plain_object_list_register_and_update_embedded_broker() {
    text_plain_object_lists(None);
}

#[test]
fn text_plain_object_list_register_and_update_mosquitto() {
    with_mosquitto(text_plain_object_lists);
}

// ---- 2. Block1 Register and Update (RFC 7959 §2.5, server side) ---------------------------------

#[test]
fn block1_register_and_update_are_reassembled() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    // 60 instances, 649 bytes: blocks 0..=9 of 64 bytes and block 10 of 9.
    let (list, want) = instances(3303, 0..60);
    assert_eq!(list.len(), 649);
    let reg = blocks(&list, 0x100, |mid| register(mid, "blocky").cf(40));
    assert_eq!(reg.len(), 11);
    continued(&dev, &reg, 0);
    // Another device registers normally while the transfer is open.
    registered(&gw.device(), &obs, 0x200, "plain1", 40, &["/3/0"]);
    for n in 1..10 {
        continued(&dev, &reg, n);
    }
    let id = created(&dev, &reg[10], Some((10, false, 2)));
    assert_eq!(
        next_event(&obs, "blocky"),
        event("register", "blocky", &want)
    );

    // An Update block-wise: 12 instances, 121 bytes, 2.31 then 2.04 with Block1 1, M=0.
    let (list, want) = instances(3304, 0..12);
    let upd = blocks(&list, 0x120, |mid| update(mid, &id).cf(40));
    assert_eq!(upd.len(), 2);
    continued(&dev, &upd, 0);
    let changed = Msg::ack_to(&upd[1], code::CHANGED).block(opt::BLOCK1, 1, false, 2);
    answered(&dev, &upd[1], changed);
    assert_eq!(next_event(&obs, "blocky"), event("update", "blocky", &want));
}

#[test]
fn block1_register_refused_out_of_sequence_and_over_the_limit() {
    let gw = TestGateway::start(None, |c| {
        // A valid configuration has block_size <= max_body: the gateway's own blocks go down to
        // 64 bytes too. 128 bytes take two of the device's blocks and refuse a third.
        c.block_size = 64;
        c.block_max_body = 128;
    });
    let obs = gw.observer();
    let dev = gw.device();
    let (list, _) = instances(3303, 0..60);

    // Block 2 right after block 0: 4.08 Request Entity Incomplete.
    let reg = blocks(&list, 0x300, |mid| register(mid, "refused1").cf(40));
    continued(&dev, &reg, 0);
    let incomplete = Msg::ack_to(&reg[2], code::REQUEST_ENTITY_INCOMPLETE)
        .payload(b"block-wise request: block at byte offset 128, expected offset 64");
    answered(&dev, &reg[2], incomplete);

    // Blocks 0 and 1 fill the 128 bytes: block 2 is 4.13 Request Entity Too Large.
    let reg = blocks(&list, 0x320, |mid| register(mid, "refused1").cf(40));
    continued(&dev, &reg, 0);
    continued(&dev, &reg, 1);
    let too_large = Msg::ack_to(&reg[2], code::REQUEST_ENTITY_TOO_LARGE)
        .payload(b"block-wise request over the reassembly budget");
    answered(&dev, &reg[2], too_large);
    // That transfer is gone: its next block has nothing to continue.
    let incomplete = Msg::ack_to(&reg[3], code::REQUEST_ENTITY_INCOMPLETE)
        .payload(b"block-wise request: block out of sequence");
    answered(&dev, &reg[3], incomplete);

    // Another device registers normally, then the refused one within the limit (2 blocks, 99
    // bytes): that is the marker, its register event is the next of refused1's.
    registered(&gw.device(), &obs, 0x400, "plain2", 40, &["/3/0"]);
    let (list, want) = instances(3303, 0..10);
    let reg = blocks(&list, 0x340, |mid| register(mid, "refused1").cf(40));
    continued(&dev, &reg, 0);
    created(&dev, &reg[1], Some((1, false, 2)));
    assert_eq!(
        next_event(&obs, "refused1"),
        event("register", "refused1", &want)
    );
}

// ---- 3. A command with an empty path ------------------------------------------------------------

fn empty_paths(broker: Option<SocketAddr>) {
    let gw = TestGateway::start(broker, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    registered(&dev, &obs, 1, "empty1", 40, &["/3/0"]);
    for (cmd, reason) in [
        (
            json!({"reqID":1,"msgType":"read","data":{"path":""}}),
            "data.path is empty",
        ),
        (
            json!({"reqID":2,"msgType":"write","data":{"basePath":"","content":[
                {"path":"0","type":"String","value":"x"}]}}),
            "data.basePath is empty",
        ),
        (
            json!({"reqID":3,"msgType":"write","data":{"path":"","type":"String","value":"x"}}),
            "data.path is empty",
        ),
    ] {
        obs.command("empty1", cmd.clone());
        assert_eq!(
            next_event(&obs, "empty1"),
            json!({"reqID":cmd["reqID"],"msgType":cmd["msgType"],"data":{"reqPath":"",
                   "code":"4.00","codeMsg":"bad_request","reason":reason}}),
            "{cmd}"
        );
    }
    // The marker: the first datagram the device gets is the read that follows.
    obs.command(
        "empty1",
        json!({"reqID":4,"msgType":"read","data":{"path":"/3/0/0"}}),
    );
    let req = dev.recv();
    assert_eq!(
        (reply_of(&req).1, uri_path(&req)),
        (code::GET, "/3/0/0".to_string())
    );
    dev.send(&answer(&req, code::CONTENT, Some(0), b"OMA"));
    assert_eq!(
        next_event(&obs, "empty1"),
        json!({"reqID":4,"msgType":"read","data":{"reqPath":"/3/0/0","code":"2.05",
               "codeMsg":"content","content":[{"path":"/3/0/0","value":"OMA"}]}})
    );
}

#[test]
fn empty_path_is_refused_before_the_device_embedded_broker() {
    empty_paths(None);
}

#[test]
fn empty_path_is_refused_before_the_device_mosquitto() {
    with_mosquitto(empty_paths);
}

// ---- 4. update_msg_publish_condition as a user spells it ----------------------------------------

/// A configuration as the gateway reads it: the TOML text `toml` (a file `parity.toml`) and the
/// command line `flags`.
fn configured(toml: Option<&str>, flags: &[&str]) -> Config {
    let argv = std::iter::once("lwm2m-gateway").chain(flags.iter().copied());
    let file = toml.map(|t| (Path::new("parity.toml"), t));
    let c = Config::from_parts(file, &Args::parse_from(argv)).unwrap();
    assert_eq!(
        c.update_msg_publish_condition,
        UpdatePublishCondition::ContainsObjectList
    );
    c
}

/// Under `contains_object_list`: an Update without an object list is answered 2.04 and publishes
/// nothing; one with a list publishes the `update` event.
fn update_published_only_with_an_object_list(base: Config, broker: Option<SocketAddr>) {
    let gw = TestGateway::start_from(base, broker, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    let id = registered(&dev, &obs, 1, "cond1", 40, &["/1/0", "/3/0"]);
    changed(&dev, &update(2, &id).query(&["lt=300"]).build());
    // The marker: the next event is the Update with a list's.
    let (list, want) = objects(&["/1/0", "/3/0", "/5/0"]);
    changed(&dev, &update(3, &id).cf(40).payload(&list).build());
    assert_eq!(next_event(&obs, "cond1"), event("update", "cond1", &want));
    changed(&dev, &update(4, &id).build());
    deregistered(&dev, &obs, 5, "cond1", &id);
}

const EMQX_SPELLING: &str = "update_msg_publish_condition = \"contains_object_list\"\n";

#[test]
fn update_condition_from_a_toml_file_embedded_broker() {
    update_published_only_with_an_object_list(configured(Some(EMQX_SPELLING), &[]), None);
}

#[test]
fn update_condition_from_a_toml_file_mosquitto() {
    with_mosquitto(|broker| {
        update_published_only_with_an_object_list(configured(Some(EMQX_SPELLING), &[]), broker)
    });
}

#[test]
fn update_condition_kebab_spelling_from_a_flag() {
    let flags = ["--update-msg-publish-condition", "contains-object-list"];
    update_published_only_with_an_object_list(configured(None, &flags), None);
}
