//! Hostile traffic against a running gateway (issue 12, `[limits]`), over real UDP on loopback:
//! a source over its error rate is blocked and well-behaved devices on other addresses keep
//! working; Registers over a source's rate get 4.29 with Max-Age; a full gateway refuses new
//! endpoints with 5.03 and keeps serving the ones it holds; oversized datagrams are dropped.
//! Each attacker sends from an address of its own in 127.0.0.0/8.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use lwm2m_gateway::coap::{code, opt, MessageView};
use support::*;

/// A device on loopback address `ip` (127.x.y.z), its own port.
fn device_on(ip: &str, gw: SocketAddr) -> Device {
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    Device { sock, gw }
}

fn register(ep: &str, mid: u16) -> Vec<u8> {
    let q = format!("ep={ep}");
    Msg::con(code::POST, mid)
        .token(&mid.to_be_bytes())
        .path(&["rd"])
        .query(&[&q, "lt=300", "lwm2m=1.1", "b=U"])
        .payload(b"</3/0>")
        .build()
}

fn code_of(b: &[u8]) -> u8 {
    MessageView::parse(b).unwrap().code()
}

fn max_age(b: &[u8]) -> Option<u32> {
    MessageView::parse(b).unwrap().uint_option(opt::MAX_AGE)
}

#[test]
fn a_source_over_its_error_rate_is_blocked_and_others_keep_working() {
    let gw = TestGateway::start(None, |c| {
        c.limits.error_rate = 10;
        c.limits.error_burst = 20;
        c.limits.block_time = Duration::from_secs(60);
    });
    let obs = gw.observer();
    let good = device_on("127.0.0.1", gw.udp);
    let bad = device_on("127.0.0.3", gw.udp);

    // Garbage of every kind the event loop sees: unparsable, requests for nothing, responses
    // and notifications with tokens nobody gave out.
    for i in 0..200u16 {
        match i % 3 {
            0 => bad.send(&[0x40, 0x01, 0x00]),
            1 => bad.send(&Msg::con(code::GET, i).path(&["nothing"]).build()),
            _ => bad.send(&notification(&[0xEE, i as u8, 3], i, 1, b"1")),
        }
    }
    let m = gw.metrics();
    wait_until("the attacker is never blocked", || {
        m.sources_blocked.load(Ordering::Relaxed) == 1
    });
    // Its answers stop: what it sends now is dropped unread, a valid Register included.
    while bad.try_recv(Duration::from_millis(200)).is_some() {}
    let before = m.dropped_blocked.load(Ordering::Relaxed);
    bad.send(&register("from-blocked", 900));
    assert_eq!(bad.try_recv(Duration::from_millis(500)), None);
    wait_until("the blocked datagram is not counted", || {
        m.dropped_blocked.load(Ordering::Relaxed) > before
    });

    // A device on another address registers, is read and deregisters as if nothing happened.
    good.send(&register("good-1", 1));
    let created = good.recv();
    assert_eq!(code_of(&created), code::CREATED);
    assert_eq!(obs.next_of("register").1["data"]["ep"], "good-1");
    obs.command(
        "good-1",
        serde_json::json!({"reqID": 7, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let read = good.recv();
    good.send(&answer(&read, code::CONTENT, Some(0), b"ACME"));
    let (_, resp) = obs.next_of("read");
    assert_eq!(resp["data"]["code"], "2.05");
    assert_eq!(resp["data"]["content"][0]["value"], "ACME");
    assert_eq!(m.sources_blocked.load(Ordering::Relaxed), 1);
}

#[test]
fn errors_the_workers_answer_count_too() {
    // Updates of registrations that do not exist reach a worker (the id names one) and are
    // answered 4.04 there: the worker's limiter blocks the source.
    let gw = TestGateway::start(None, |c| {
        c.workers = 1;
        c.limits.error_rate = 5;
        c.limits.error_burst = 10;
    });
    let bad = device_on("127.0.0.4", gw.udp);
    let m = gw.metrics();
    for i in 0..40u16 {
        bad.send(&Msg::con(code::POST, i).path(&["rd", "9999"]).build());
    }
    wait_until("4.04 answers of a worker never block", || {
        m.sources_blocked.load(Ordering::Relaxed) == 1
    });
    let mut not_found = 0;
    while let Some(b) = bad.try_recv(Duration::from_millis(300)) {
        assert_eq!(code_of(&b), code::NOT_FOUND);
        not_found += 1;
    }
    assert!(
        (10..40).contains(&not_found),
        "{not_found} answered: the burst, then blocked"
    );
}

#[test]
fn registers_over_a_sources_rate_get_4_29_with_max_age() {
    let gw = TestGateway::start(None, |c| {
        c.limits.register_rate = 1;
        c.limits.register_burst = 3;
        c.limits.error_rate = 0;
    });
    let storm = device_on("127.0.0.5", gw.udp);
    let mut codes = Vec::new();
    for i in 0..6u16 {
        storm.send(&register(&format!("storm-{i}"), 100 + i));
        let a = storm.recv();
        if code_of(&a) == code::TOO_MANY_REQUESTS {
            assert_eq!(max_age(&a), Some(1), "Max-Age: when a token is back");
            let v = MessageView::parse(&a).unwrap();
            assert_eq!(v.message_id(), 100 + i, "piggybacked on the ACK");
            assert_eq!(v.token(), (100 + i).to_be_bytes());
        }
        codes.push(code_of(&a));
    }
    assert_eq!(&codes[..3], [code::CREATED; 3]);
    assert_eq!(&codes[3..], [code::TOO_MANY_REQUESTS; 3]);
    let m = gw.metrics();
    wait_until("the refusals are never counted", || {
        m.refused_rate.load(Ordering::Relaxed) == 3
    });
    // Another source has its own budget.
    let other = device_on("127.0.0.6", gw.udp);
    other.send(&register("calm-1", 1));
    assert_eq!(code_of(&other.recv()), code::CREATED);
    // A second later the storm's source has one Register again.
    std::thread::sleep(Duration::from_millis(1100));
    storm.send(&register("storm-late", 200));
    assert_eq!(code_of(&storm.recv()), code::CREATED);
}

#[test]
fn a_full_gateway_refuses_new_endpoints_and_keeps_its_devices() {
    let gw = TestGateway::start(None, |c| {
        c.workers = 1;
        c.limits.max_registrations = 2;
    });
    let obs = gw.observer();
    let d = gw.device();
    d.send(&register("full-1", 1));
    assert_eq!(code_of(&d.recv()), code::CREATED);
    d.send(&register("full-2", 2));
    let second = d.recv();
    assert_eq!(code_of(&second), code::CREATED);
    d.send(&register("full-3", 3));
    let refused = d.recv();
    assert_eq!(code_of(&refused), code::SERVICE_UNAVAILABLE);
    assert_eq!(max_age(&refused), Some(60));
    // Counted when the worker flushes its round, just after the answer left.
    let m = gw.metrics();
    wait_until("the refusal is never counted", || {
        m.refused_full.load(Ordering::Relaxed) == 1
    });
    // An endpoint it holds may register again (it replaces itself), and Update as before.
    d.send(&register("full-2", 4));
    let again = d.recv();
    assert_eq!(code_of(&again), code::CREATED);
    let loc = location_id(&again).unwrap();
    d.send(&Msg::con(code::POST, 5).path(&["rd", &loc]).build());
    assert_eq!(code_of(&d.recv()), code::CHANGED);
    for ep in ["full-1", "full-2", "full-2"] {
        assert_eq!(obs.next_of("register").1["data"]["ep"], ep);
    }
    assert!(obs
        .try_next_of("register", Duration::from_millis(300))
        .is_none());
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    let gw = TestGateway::start(None, |c| c.limits.max_datagram = 1024);
    let d = gw.device();
    let big = Msg::con(code::POST, 1)
        .path(&["rd"])
        .query(&["ep=big", "lt=300"])
        .payload(&vec![b'x'; 2000])
        .build();
    d.send(&big);
    assert_eq!(d.try_recv(Duration::from_millis(500)), None);
    let m = gw.metrics();
    wait_until("the oversized datagram is never counted", || {
        m.dropped_oversized.load(Ordering::Relaxed) == 1
    });
    d.send(&register("small", 2));
    assert_eq!(code_of(&d.recv()), code::CREATED);
}
