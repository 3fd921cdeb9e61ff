//! The gateway restarted with its state directory (issue 12), end to end on loopback with the
//! embedded broker: registrations, observations and queued commands survive a graceful stop;
//! applications get one `restarted` event and no `register` events for restored devices; an
//! unusable state file is set aside with a clear message and the gateway starts without it.

mod support;

use std::time::Duration;

use lwm2m_gateway::coap::{code, MessageView, MsgType};
use serde_json::json;
use support::*;

fn state_dir(tag: &str) -> PathGuard {
    let dir = std::env::temp_dir().join(format!(
        "gw-state-{tag}-{}-{}",
        std::process::id(),
        rand_u16()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    PathGuard(dir)
}

/// A gateway keeping its state in `dir`, on `broker` (else its embedded one).
fn gateway(dir: &PathGuard, broker: Option<std::net::SocketAddr>) -> TestGateway {
    let path = dir.0.clone();
    TestGateway::start(broker, move |c| {
        c.state.dir = Some(path);
        c.state.snapshot_interval = Duration::ZERO;
        c.qmode_time_window = Duration::from_secs(1);
    })
}

fn register(dev: &Device, ep: &str, binding: &str) -> String {
    let q = format!("ep={ep}");
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&[&q, "lt=600", "lwm2m=1.1", binding])
        .cf(40)
        .payload(b"</1/0>,</3/0>");
    dev.send(&reg.build());
    let answer = dev.recv();
    assert_eq!(MessageView::parse(&answer).unwrap().code(), code::CREATED);
    location_id(&answer).unwrap()
}

#[test]
fn registrations_observations_and_queued_commands_survive_a_graceful_restart() {
    // The broker outlives the gateway, as in production: an application connected to it sees
    // the gateway go and come back.
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = state_dir("graceful");
    let gw = gateway(&dir, Some(broker.addr));
    let obs = gw.observer();
    let mut a = gw.device();
    let mut b = gw.device();
    let loc_a = register(&a, "keeper", "b=U");
    let loc_b = register(&b, "sleeper", "b=UQ");
    obs.next_of("register");
    obs.next_of("register");
    // keeper is observed; its answer establishes the observation.
    obs.command(
        "keeper",
        json!({"reqID": 21, "msgType": "observe", "data": {"path": "/3/0/9"}, "app": "fleet"}),
    );
    let req = a.recv();
    let token = MessageView::parse(&req).unwrap().token().to_vec();
    a.send(&observe_answer(&req, 1, b"90"));
    assert_eq!(obs.next_of("observe").1["reqID"], 21);
    // sleeper falls asleep (1 s window); a command waits for it.
    std::thread::sleep(Duration::from_millis(1500));
    obs.command(
        "sleeper",
        json!({"reqID": 22, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    assert!(
        b.try_recv(Duration::from_millis(300)).is_none(),
        "asleep: nothing sent"
    );
    gw.stop();

    let gw = gateway(&dir, Some(broker.addr));
    let (topic, restarted) = obs.next_of("restarted");
    assert_eq!(topic, "lwm2m/$gateway/up/resp");
    assert_eq!(
        restarted["data"],
        json!({"registrations": 2, "observations": 1, "queued": 1, "expired": 0, "unusable": 0, "complete": true, "graceful": true, "journaled": 0})
    );
    a.gw = gw.udp;
    b.gw = gw.udp;
    // The next Update is 2.04 at the old location.
    a.send(&Msg::con(code::POST, 30).path(&["rd", &loc_a]).build());
    assert_eq!(MessageView::parse(&a.recv()).unwrap().code(), code::CHANGED);
    assert_eq!(obs.next_of("update").1["data"]["ep"], "keeper");
    // A notification on the old token is published with the original echo.
    let notify = Msg::new(MsgType::Non, code::CONTENT, 31)
        .token(&token)
        .observe(Some(2))
        .cf(0)
        .payload(b"89")
        .build();
    a.send(&notify);
    let (_, n) = obs.next_of("notify");
    assert_eq!(
        (n["reqID"].clone(), n["app"].clone()),
        (json!(21), json!("fleet"))
    );
    assert_eq!(n["data"]["content"][0]["value"], 89);
    // sleeper wakes up: the queued read goes out and its answer is the original command's.
    b.send(&Msg::con(code::POST, 40).path(&["rd", &loc_b]).build());
    let first = b.recv();
    let second = b.recv();
    let (changed, req) = if MessageView::parse(&first).unwrap().code() == code::CHANGED {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(MessageView::parse(&changed).unwrap().code(), code::CHANGED);
    assert_eq!(path_of(&req), ["3", "0", "0"]);
    b.send(&answer(&req, code::CONTENT, Some(0), b"Acme"));
    let (_, r) = obs.next_of("read");
    assert_eq!(r["reqID"], 22);
    // No device registered again: nothing more came after the read.
    obs.quiet(Duration::from_millis(300));
}

#[test]
fn an_unusable_state_file_is_set_aside_and_the_gateway_starts_without_it() {
    let dir = state_dir("corrupt");
    std::fs::write(dir.0.join("shard-0.snap"), b"this is not a state file").unwrap();
    let gw = gateway(&dir, None);
    let kept: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().any(|n| n.starts_with("shard-0.snap.bad-")),
        "{kept:?}"
    );
    // And it works: a device registers, and a graceful stop writes a good file again.
    let dev = gw.device();
    register(&dev, "fresh", "b=U");
    gw.stop();
    let image = std::fs::read(dir.0.join("shard-0.snap")).unwrap();
    assert!(image.starts_with(b"LWM2MGWS"));
}

#[test]
fn dtls_sessions_survive_a_restart_and_devices_carry_on_without_a_handshake() {
    const KEY: &[u8] = b"restart-key-16by";
    let dir = state_dir("dtls");
    let creds = dir.0.join("credentials.toml");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        &creds,
        format!("[[device]]\nendpoint = \"secure\"\nmode = \"psk\"\nidentity = \"id-s\"\nkey_hex = \"{hex}\"\n"),
    )
    .unwrap();
    let start = |dir: &PathGuard| {
        let (path, creds) = (dir.0.clone(), creds.clone());
        TestGateway::start(None, move |c| {
            c.state.dir = Some(path);
            c.state.snapshot_interval = Duration::ZERO;
            c.security.credentials = Some(creds);
        })
    };
    let gw = start(&dir);
    let mut dev = DtlsDevice::new(gw.dtls.unwrap(), "id-s", KEY);
    assert!(dev.handshake());
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&["ep=secure", "lt=600", "lwm2m=1.1"])
        .cf(40)
        .payload(b"</3/0>")
        .build();
    let created = dev.request(&reg);
    let loc = location_id(&created).unwrap();
    gw.stop();

    let gw = start(&dir);
    dev.gw = gw.dtls.unwrap();
    // The session came back with the registration: the Update is sealed in it, no handshake.
    let upd = Msg::con(code::POST, 2).path(&["rd", &loc]).build();
    let answer = dev.request(&upd);
    assert_eq!(MessageView::parse(&answer).unwrap().code(), code::CHANGED);
    assert_eq!(
        gw.metrics()
            .dtls_handshakes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The restored registration still belongs to the identity: another one may not touch it.
    let mut other = DtlsDevice::new(gw.dtls.unwrap(), "nobody", KEY);
    assert!(!other.handshake(), "an unknown identity gets no session");
}
