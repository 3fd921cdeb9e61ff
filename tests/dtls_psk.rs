//! The gateway over DTLS with PSK, end to end on loopback (real UDP sockets, the embedded
//! broker): a device registers, is read and observed through MQTT and deregisters; every
//! refusal the issue names is answered as specified, counted, and harmless to the devices next
//! to it; credentials change at runtime over MQTT and by editing the file.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use lwm2m_gateway::coap::{code, MessageView, MsgType};
use serde_json::json;
use support::*;

const KEY_A: &[u8] = b"key-of-dev-a-16b";
const KEY_B: &[u8] = &[0x42; 32];

fn credentials_file(extra: &str) -> (PathGuard, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("gw-creds-{}-{}", std::process::id(), rand_u16()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("credentials.toml");
    let text = format!(
        r#"
[[device]]
endpoint = "dev-a"
mode = "psk"
identity = "id-a"
key_hex = "{}"

[[device]]
endpoint = "dev-b"
mode = "psk"
identity = "id-b"
key_base64 = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="

[[device]]
endpoint = "legacy"
mode = "nosec"
{extra}"#,
        KEY_A.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    std::fs::write(&path, text).unwrap();
    (PathGuard(dir), path)
}

fn gateway(path: &std::path::Path) -> TestGateway {
    let path = path.to_path_buf();
    TestGateway::start(None, move |c| {
        c.security.credentials = Some(path);
        c.security.reload_interval = Duration::from_secs(1);
    })
}

fn register(ep: &str, mid: u16) -> Vec<u8> {
    let q = format!("ep={ep}");
    Msg::con(code::POST, mid)
        .token(&[1, 2])
        .path(&["rd"])
        .query(&[&q, "lt=300", "lwm2m=1.1", "b=U"])
        .cf(40)
        .payload(b"</1/0>,</3/0>")
        .build()
}

fn code_of(b: &[u8]) -> u8 {
    MessageView::parse(b).unwrap().code()
}

/// A PSK device of `gw` that registered as `ep`; returns it and its location.
fn registered(gw: &TestGateway, ep: &str, identity: &str, key: &[u8]) -> (DtlsDevice, String) {
    let mut d = DtlsDevice::new(gw.dtls.unwrap(), identity, key);
    assert!(d.handshake(), "handshake of {identity}");
    let answer = d.request(&register(ep, 1));
    assert_eq!(code_of(&answer), code::CREATED, "{ep} registers");
    (d, location_id(&answer).unwrap())
}

#[test]
fn a_psk_device_registers_is_read_and_observed_through_mqtt_and_deregisters() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let obs = gw.observer();
    let (mut dev, loc) = registered(&gw, "dev-a", "id-a", KEY_A);
    let (_, ev) = obs.next_of("register");
    assert_eq!(ev["data"]["ep"], "dev-a");
    assert_eq!(ev["data"]["security"], "psk");

    obs.command(
        "dev-a",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    assert_eq!(path_of(&req), ["3", "0", "0"]);
    dev.send(&answer(&req, code::CONTENT, Some(0), b"Secure Inc."));
    let (_, resp) = obs.next_of("read");
    assert_eq!(
        resp["data"]["content"],
        json!([{"path":"/3/0/0","value":"Secure Inc."}])
    );

    obs.command(
        "dev-a",
        json!({"reqID": 2, "msgType": "observe", "data": {"path": "/3/0/9"}}),
    );
    let req = dev.recv();
    let ok = Msg::ack(
        code::CONTENT,
        MessageView::parse(&req).unwrap().message_id(),
    )
    .token(MessageView::parse(&req).unwrap().token())
    .observe(1)
    .cf(0)
    .payload(b"80");
    dev.send(&ok.build());
    assert_eq!(obs.next_of("observe").1["data"]["content"][0]["value"], 80);
    let token = MessageView::parse(&req).unwrap().token().to_vec();
    let notify = Msg::non(code::CONTENT, 77)
        .token(&token)
        .observe(2)
        .cf(0)
        .payload(b"79");
    dev.send(&notify.build());
    assert_eq!(obs.next_of("notify").1["data"]["content"][0]["value"], 79);

    let del = Msg::con(code::DELETE, 9).path(&["rd", &loc]).build();
    assert_eq!(code_of(&dev.request(&del)), code::DELETED);
    assert_eq!(obs.next_of("deregister").1["data"]["ep"], "dev-a");
    let m = gw.metrics();
    assert!(m.dtls_established.load(Ordering::Relaxed) >= 1);
    assert_eq!(m.forbidden.load(Ordering::Relaxed), 0);
}

#[test]
fn wrong_key_unknown_identity_and_another_endpoints_identity_are_refused_and_counted() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let m = gw.metrics();
    // A neighbour keeps working through all of it.
    let (mut good, _) = registered(&gw, "dev-a", "id-a", KEY_A);

    let mut wrong = DtlsDevice::new(gw.dtls.unwrap(), "id-a", b"not-the-key");
    assert!(!wrong.handshake());
    assert_eq!(wrong.client.failure(), Some(51), "decrypt_error alert");
    let mut unknown = DtlsDevice::new(gw.dtls.unwrap(), "nobody", KEY_A);
    assert!(!unknown.handshake());
    assert_eq!(
        unknown.client.failure(),
        Some(51),
        "indistinguishable from a wrong key"
    );
    wait_until("both failures counted", || {
        m.dtls_failed.load(Ordering::Relaxed) >= 2
    });

    // dev-b's identity registering as dev-a: 4.03.
    let mut thief = DtlsDevice::new(gw.dtls.unwrap(), "id-b", KEY_B);
    assert!(thief.handshake());
    assert_eq!(
        code_of(&thief.request(&register("dev-a", 5))),
        code::FORBIDDEN
    );
    // A plain Register for a secured endpoint: 4.03; for the nosec one: 2.01.
    let plain = gw.device();
    plain.send(&register("dev-a", 6));
    assert_eq!(code_of(&plain.recv()), code::FORBIDDEN);
    plain.send(&register("legacy", 7));
    assert_eq!(code_of(&plain.recv()), code::CREATED);
    wait_until("both refusals counted", || {
        m.forbidden.load(Ordering::Relaxed) == 2
    });

    let ping = Msg::new(MsgType::Con, code::EMPTY, 40).build();
    assert_eq!(
        MessageView::parse(&good.request(&ping)).unwrap().msg_type(),
        MsgType::Rst
    );
}

#[test]
fn update_and_deregister_from_another_identity_are_forbidden() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let (mut a, loc_a) = registered(&gw, "dev-a", "id-a", KEY_A);
    let (mut b, _) = registered(&gw, "dev-b", "id-b", KEY_B);
    let upd = Msg::con(code::POST, 20)
        .path(&["rd", &loc_a])
        .query(&["lt=600"])
        .build();
    assert_eq!(code_of(&b.request(&upd)), code::FORBIDDEN);
    let del = Msg::con(code::DELETE, 21).path(&["rd", &loc_a]).build();
    assert_eq!(code_of(&b.request(&del)), code::FORBIDDEN);
    let plain = gw.device();
    plain.send(&Msg::con(code::POST, 22).path(&["rd", &loc_a]).build());
    assert_eq!(code_of(&plain.recv()), code::FORBIDDEN);
    wait_until("three refusals counted", || {
        gw.metrics().forbidden.load(Ordering::Relaxed) == 3
    });
    let upd = Msg::con(code::POST, 23)
        .path(&["rd", &loc_a])
        .query(&["lt=600"])
        .build();
    assert_eq!(
        code_of(&a.request(&upd)),
        code::CHANGED,
        "the owner still can"
    );
}

#[test]
fn a_spoofed_client_hello_flood_and_garbage_records_allocate_nothing_and_hurt_no_one() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let m = gw.metrics();
    let (mut good, _) = registered(&gw, "dev-a", "id-a", KEY_A);
    let started = m.dtls_handshakes.load(Ordering::Relaxed);
    // 3000 first ClientHellos from 30 source ports: each gets a HelloVerifyRequest, none a
    // handshake.
    let flood: Vec<_> = (0..30)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for i in 0..3000u32 {
        let mut c = lwm2m_gateway::dtls::client::Client::new(
            b"x",
            b"y",
            &[lwm2m_gateway::dtls::Suite::PskAes128Ccm8],
            i as u64,
        );
        flood[i as usize % 30]
            .send_to(&c.connect(), gw.dtls.unwrap())
            .unwrap();
    }
    // Truncated and garbage records on the same listener.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in [
        &[0x17u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 50][..],
        b"garbage",
        &[0x16; 40],
    ] {
        junk.send_to(d, gw.dtls.unwrap()).unwrap();
    }
    // Each of the 3000 plus good's own.
    wait_until("the flood answered", || {
        m.dtls_hello_verify.load(Ordering::Relaxed) > 3000
    });
    assert_eq!(
        m.dtls_handshakes.load(Ordering::Relaxed),
        started,
        "no state for spoofed hellos"
    );
    wait_until("junk counted", || {
        m.dtls_bad_records.load(Ordering::Relaxed) >= 3
    });
    let ping = Msg::new(MsgType::Con, code::EMPTY, 41).build();
    assert_eq!(
        MessageView::parse(&good.request(&ping)).unwrap().msg_type(),
        MsgType::Rst
    );
}

#[test]
fn credentials_added_and_removed_over_mqtt_apply_at_once_and_never_echo_keys() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let obs = gw.observer();
    obs.command(
        "$gateway",
        json!({"reqID": 7, "msgType": "credential-add",
               "data": {"endpoint": "dev-new", "mode": "psk", "identity": "id-new",
                        "key_hex": "00112233445566778899aabbccddeeff"}}),
    );
    let (topic, ans) = obs.next_of("credential-add");
    assert_eq!(topic, "lwm2m/$gateway/up/resp");
    assert_eq!(ans["reqID"], 7);
    assert_eq!(ans["data"]["code"], "2.01");
    let key = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    let (mut dev, _) = registered(&gw, "dev-new", "id-new", &key);
    // Saved back to the file.
    assert!(std::fs::read_to_string(&path).unwrap().contains("dev-new"));

    obs.command(
        "$gateway",
        json!({"reqID": 8, "msgType": "credential-list", "data": {}}),
    );
    let (_, list) = obs.next_of("credential-list");
    let text = list.to_string();
    assert!(text.contains("dev-new") && text.contains("dev-a"));
    assert!(
        !text.contains("00112233"),
        "no key in a list answer: {text}"
    );

    obs.command(
        "$gateway",
        json!({"reqID": 9, "msgType": "credential-remove", "data": {"endpoint": "dev-new"}}),
    );
    assert_eq!(obs.next_of("credential-remove").1["data"]["code"], "2.02");
    // The session ends: the device's requests go unanswered, a new handshake fails.
    wait_until("session revoked", || {
        gw.metrics().dtls_sessions.load(Ordering::Relaxed) == 0
    });
    dev.send(&Msg::new(MsgType::Con, code::EMPTY, 50).build());
    assert!(dev.try_recv(Duration::from_millis(500)).is_none());
    let mut again = DtlsDevice::new(gw.dtls.unwrap(), "id-new", &key);
    assert!(!again.handshake());
}

#[test]
fn an_edited_credentials_file_is_reloaded_without_a_restart() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let mut before = DtlsDevice::new(gw.dtls.unwrap(), "id-late", b"late-key");
    assert!(!before.handshake());
    let (_d2, with_late) = credentials_file(
        "\n[[device]]\nendpoint = \"dev-late\"\nmode = \"psk\"\nidentity = \"id-late\"\nkey_hex = \"6c6174652d6b6579\"\n",
    );
    std::fs::copy(&with_late, &path).unwrap();
    wait_until("reloaded", || {
        gw.gw
            .as_ref()
            .unwrap()
            .credentials()
            .read()
            .by_endpoint("dev-late")
            .is_some()
    });
    registered(&gw, "dev-late", "id-late", b"late-key");
}

#[test]
fn a_new_handshake_from_a_new_address_takes_over_the_registration() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let obs = gw.observer();
    let (_old, _) = registered(&gw, "dev-a", "id-a", KEY_A);
    obs.next_of("register");
    // The NAT gave the device a new port: it handshakes again and does not re-register.
    let mut moved = DtlsDevice::new(gw.dtls.unwrap(), "id-a", KEY_A);
    assert!(moved.handshake());
    obs.command(
        "dev-a",
        json!({"reqID": 3, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = moved.recv();
    assert_eq!(path_of(&req), ["3", "0", "0"]);
    moved.send(&answer(&req, code::CONTENT, Some(0), b"moved"));
    assert_eq!(
        obs.next_of("read").1["data"]["content"][0]["value"],
        "moved"
    );
}

#[test]
fn with_a_connection_id_the_registration_follows_a_new_address_without_a_handshake() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let obs = gw.observer();
    let mut dev = DtlsDevice::with_connection_id(gw.dtls.unwrap(), "id-a", KEY_A);
    assert!(dev.handshake());
    assert!(
        dev.client.connection_id().is_some(),
        "the gateway agreed to a CID"
    );
    let (mut other, other_loc) = registered(&gw, "dev-b", "id-b", KEY_B);
    let loc = location_id(&dev.request(&register("dev-a", 1))).unwrap();
    obs.next_of("register");
    // Several rebindings, so that some new ports hash to another worker than the session's:
    // the event loop must route by the CID, not the address.
    for mid in 31..35 {
        let old_port = dev.sock.local_addr().unwrap();
        dev.rebind();
        assert_ne!(dev.sock.local_addr().unwrap(), old_port);
        // The first record from the new port is an Update: answered there, no handshake.
        let upd = Msg::con(code::POST, mid).path(&["rd", &loc]).build();
        assert_eq!(code_of(&dev.request(&upd)), code::CHANGED);
        assert_eq!(obs.next_of("update").1["data"]["ep"], "dev-a");
    }
    // Commands now reach the new address.
    obs.command(
        "dev-a",
        json!({"reqID": 4, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    assert_eq!(path_of(&req), ["3", "0", "0"]);
    dev.send(&answer(&req, code::CONTENT, Some(0), b"rebound"));
    assert_eq!(
        obs.next_of("read").1["data"]["content"][0]["value"],
        "rebound"
    );
    wait_until("the move counted", || {
        gw.metrics().dtls_migrated.load(Ordering::Relaxed) == 4
    });
    assert_eq!(gw.metrics().dtls_handshakes.load(Ordering::Relaxed), 2);
    // The neighbour did not notice.
    let upd = Msg::con(code::POST, 40).path(&["rd", &other_loc]).build();
    assert_eq!(code_of(&other.request(&upd)), code::CHANGED);
}

#[test]
fn an_abbreviated_handshake_resumes_the_session() {
    let (_dir, path) = credentials_file("");
    let gw = gateway(&path);
    let (mut dev, loc) = registered(&gw, "dev-b", "id-b", KEY_B);
    assert!(dev.resume());
    let upd = Msg::con(code::POST, 30).path(&["rd", &loc]).build();
    assert_eq!(code_of(&dev.request(&upd)), code::CHANGED);
    // Counters are added after the round's datagrams went out.
    wait_until("the resumption counted", || {
        gw.metrics().dtls_resumed.load(Ordering::Relaxed) >= 1
    });
}
