//! The server and client against each other in memory: every handshake path, every refusal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client::Client;
use super::server::{Config, ConnKey, Event, Failure, Output, PskStore, Server};
use super::Suite;

struct Keys(HashMap<Vec<u8>, Vec<u8>>);

impl PskStore for Keys {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.0.get(identity).cloned()
    }
}

fn keys() -> Keys {
    Keys(HashMap::from([
        (b"dev-1".to_vec(), b"secret-one-16byt".to_vec()),
        (b"dev-2".to_vec(), vec![0xab; 32]),
    ]))
}

fn key(port: u16) -> ConnKey {
    (0, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Runs datagrams back and forth until neither side has anything more to say.
struct Wire {
    server: Server,
    keys: Keys,
    now: Instant,
    received: Vec<Vec<u8>>,
    events: Vec<Event>,
}

impl Wire {
    fn new(cfg: Config) -> Wire {
        let now = Instant::now();
        Wire {
            server: Server::new(cfg, now, [7; 32]),
            keys: keys(),
            now,
            received: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Server's answers to one datagram.
    fn deliver(&mut self, k: ConnKey, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Output::default();
        let received = &mut self.received;
        self.server
            .on_datagram(self.now, k, d, &self.keys, &mut out, &mut |_, p| {
                received.push(p.to_vec())
            });
        self.events.extend(out.events);
        out.transmits
            .into_iter()
            .map(|(to, d)| {
                assert_eq!(to, k);
                d
            })
            .collect()
    }

    fn handshake(&mut self, k: ConnKey, c: &mut Client, first: Vec<u8>) {
        let mut pending = vec![first];
        for _ in 0..10 {
            let Some(d) = pending.pop() else { break };
            for answer in self.deliver(k, &d) {
                if let Some(r) = c.on_datagram(&answer, &mut |_| {}) {
                    pending.push(r);
                }
            }
        }
    }
}

#[test]
fn both_psk_suites_handshake_with_and_without_extended_master_secret_and_carry_data() {
    for suite in [Suite::PskAes128Ccm8, Suite::PskAes128CbcSha256] {
        for ems in [true, false] {
            let mut w = Wire::new(Config::default());
            let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[suite], 1)
                .with_extended_master_secret(ems);
            let hello = c.connect();
            w.handshake(key(1000), &mut c, hello);
            assert!(c.is_established(), "{suite:?} ems {ems}");
            assert_eq!(c.suite(), suite);
            assert_eq!(w.server.sessions(), 1);
            assert_eq!(w.server.handshakes(), 0);
            assert_eq!(
                w.server.session(&key(1000)).unwrap().identity[..],
                b"dev-1"[..]
            );
            assert!(w.events.contains(&Event::Established {
                key: key(1000),
                resumed: false
            }));
            // Both directions carry data.
            let up = c.seal(b"coap request").unwrap();
            assert!(w.deliver(key(1000), &up).is_empty());
            assert_eq!(w.received, vec![b"coap request".to_vec()]);
            let down = w.server.seal(&key(1000), b"coap response").unwrap();
            let mut got = Vec::new();
            c.on_datagram(&down, &mut |p| got.push(p.to_vec()));
            assert_eq!(got, vec![b"coap response".to_vec()]);
        }
    }
}

#[test]
fn the_server_prefers_ccm8_when_the_client_offers_both() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(
        b"dev-2",
        &[0xab; 32],
        &[Suite::PskAes128CbcSha256, Suite::PskAes128Ccm8],
        2,
    );
    let hello = c.connect();
    w.handshake(key(1), &mut c, hello);
    assert!(c.is_established());
    assert_eq!(c.suite(), Suite::PskAes128Ccm8);
}

#[test]
fn a_client_hello_without_cookie_gets_a_hello_verify_request_and_no_state() {
    let mut w = Wire::new(Config::default());
    for port in 1..=2000u16 {
        let mut c = Client::new(b"dev-1", b"x", &[Suite::PskAes128Ccm8], port as u64);
        let hello = c.connect();
        let answers = w.deliver(key(port), &hello);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0][13], super::handshake::HELLO_VERIFY_REQUEST);
    }
    assert_eq!(w.server.handshakes(), 0);
    assert_eq!(w.server.sessions(), 0);
    assert_eq!(w.server.take_stats().hello_verify, 2000);
}

#[test]
fn a_cookie_made_for_another_address_is_refused() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 3);
    let hello = c.connect();
    let hvr = w.deliver(key(10), &hello);
    let second = c.on_datagram(&hvr[0], &mut |_| {}).unwrap();
    // Replayed from another address: another HelloVerifyRequest, not a handshake.
    let answers = w.deliver(key(11), &second);
    assert_eq!(answers[0][13], super::handshake::HELLO_VERIFY_REQUEST);
    assert_eq!(w.server.handshakes(), 0);
}

#[test]
fn a_wrong_key_and_an_unknown_identity_both_end_in_decrypt_error_and_are_told_apart_in_events() {
    for (identity, psk, why) in [
        (&b"dev-1"[..], &b"not-the-right-key"[..], Failure::BadKey),
        (
            &b"nobody"[..],
            &b"secret-one-16byt"[..],
            Failure::UnknownIdentity,
        ),
    ] {
        let mut w = Wire::new(Config::default());
        let mut c = Client::new(identity, psk, &[Suite::PskAes128Ccm8], 4);
        let hello = c.connect();
        w.handshake(key(20), &mut c, hello);
        assert!(!c.is_established());
        assert_eq!(c.failure(), Some(51), "decrypt_error");
        assert_eq!(w.server.sessions(), 0);
        assert_eq!(w.server.handshakes(), 0);
        assert!(w
            .events
            .contains(&Event::HandshakeFailed { key: key(20), why }));
    }
}

#[test]
fn no_common_suite_is_a_handshake_failure_alert() {
    let mut w = Wire::new(Config {
        suites: vec![Suite::PskAes128CbcSha256],
        ..Config::default()
    });
    let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 5);
    let hello = c.connect();
    w.handshake(key(30), &mut c, hello);
    assert_eq!(c.failure(), Some(40));
}

#[test]
fn replayed_tampered_and_garbage_records_are_dropped_and_counted() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 6);
    let hello = c.connect();
    w.handshake(key(40), &mut c, hello);
    w.server.take_stats();
    let up = c.seal(b"once").unwrap();
    w.deliver(key(40), &up);
    w.deliver(key(40), &up);
    let mut bad = c.seal(b"tampered").unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    w.deliver(key(40), &bad);
    w.deliver(key(40), &[0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 40]);
    w.deliver(key(40), b"not dtls at all");
    // A record for a peer without a session.
    let other = c.seal(b"elsewhere").unwrap();
    w.deliver(key(41), &other);
    assert_eq!(w.received, vec![b"once".to_vec()]);
    let stats = w.server.take_stats();
    assert_eq!(
        stats.bad_records, 5,
        "replay, tamper, truncated, garbage, no session: {stats:?}"
    );
    assert_eq!(w.server.sessions(), 1, "the session survives all of it");
    let up = c.seal(b"still fine").unwrap();
    w.deliver(key(40), &up);
    assert_eq!(w.received.last().unwrap(), b"still fine");
}

#[test]
fn a_lost_server_flight_is_sent_again_when_the_client_repeats_its_own() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 7);
    let hello = c.connect();
    let hvr = w.deliver(key(50), &hello);
    let ch2 = c.on_datagram(&hvr[0], &mut |_| {}).unwrap();
    let _lost = w.deliver(key(50), &ch2);
    let again = w.deliver(key(50), &ch2);
    assert_eq!(again.len(), 1, "flight 4 again");
    let flight5 = c.on_datagram(&again[0], &mut |_| {}).unwrap();
    let _lost = w.deliver(key(50), &flight5);
    // The client repeats flight 5: the server, now established, repeats its last flight.
    let again = w.deliver(key(50), &flight5);
    assert_eq!(again.len(), 1);
    c.on_datagram(&again[0], &mut |_| {});
    assert!(c.is_established());
    assert_eq!(w.server.sessions(), 1);
}

#[test]
fn a_held_session_resumes_with_an_abbreviated_handshake_even_from_a_new_address() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(b"dev-2", &[0xab; 32], &[Suite::PskAes128Ccm8], 8);
    let hello = c.connect();
    w.handshake(key(60), &mut c, hello);
    assert!(c.is_established());
    for port in [60, 61] {
        let hello = c.resume();
        w.events.clear();
        w.handshake(key(port), &mut c, hello);
        assert!(c.is_established(), "resumed from port {port}");
        assert!(w.events.contains(&Event::Established {
            key: key(port),
            resumed: true
        }));
        let up = c.seal(b"after resumption").unwrap();
        w.deliver(key(port), &up);
        assert_eq!(w.received.last().unwrap(), b"after resumption");
    }
    assert!(
        w.events.contains(&Event::Closed { key: key(60) }),
        "the old address's session ends"
    );
    assert_eq!(w.server.sessions(), 1);
    assert_eq!(w.server.take_stats().resumed, 2);
}

#[test]
fn handshakes_in_progress_and_sessions_are_bounded() {
    let mut w = Wire::new(Config {
        max_handshakes: 3,
        max_sessions: 5,
        ..Config::default()
    });
    // Four peers stop after ServerHelloDone: the fourth is refused.
    for port in 0..4u16 {
        let mut c = Client::new(
            b"dev-1",
            b"secret-one-16byt",
            &[Suite::PskAes128Ccm8],
            port as u64,
        );
        let hello = c.connect();
        let hvr = w.deliver(key(100 + port), &hello);
        let ch2 = c.on_datagram(&hvr[0], &mut |_| {}).unwrap();
        let answers = w.deliver(key(100 + port), &ch2);
        assert_eq!(answers.is_empty(), port == 3, "peer {port}");
    }
    assert_eq!(w.server.handshakes(), 3);
    assert_eq!(w.server.take_stats().refused_busy, 1);
    // They time out and make room.
    w.now += Duration::from_secs(31);
    let mut out = Output::default();
    w.server.on_timeout(w.now, &mut out);
    assert_eq!(w.server.handshakes(), 0);
    assert_eq!(out.events.len(), 3);
    for port in 0..7u16 {
        let mut c = Client::new(
            b"dev-1",
            b"secret-one-16byt",
            &[Suite::PskAes128Ccm8],
            port as u64,
        );
        let hello = c.connect();
        w.handshake(key(200 + port), &mut c, hello);
        assert_eq!(c.is_established(), port < 5, "peer {port}");
    }
    assert_eq!(w.server.sessions(), 5);
}

#[test]
fn idle_sessions_expire_and_close_notify_ends_a_session() {
    let mut w = Wire::new(Config {
        idle_timeout: Duration::from_secs(100),
        ..Config::default()
    });
    let mut a = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 9);
    let mut b = Client::new(b"dev-2", &[0xab; 32], &[Suite::PskAes128Ccm8], 10);
    let (ha, hb) = (a.connect(), b.connect());
    w.handshake(key(70), &mut a, ha);
    w.handshake(key(71), &mut b, hb);
    let bye = b.close().unwrap();
    w.deliver(key(71), &bye);
    assert!(w.events.contains(&Event::Closed { key: key(71) }));
    assert_eq!(w.server.sessions(), 1);
    w.now += Duration::from_secs(101);
    let mut out = Output::default();
    w.server.on_timeout(w.now, &mut out);
    assert_eq!(out.events, vec![Event::Closed { key: key(70) }]);
    assert_eq!(w.server.sessions(), 0);
}

#[test]
fn a_session_moves_between_servers_and_keeps_working() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 11);
    let hello = c.connect();
    w.handshake(key(80), &mut c, hello);
    let s = w.server.take_session(&key(80)).unwrap();
    let mut other = Server::new(Config::default(), w.now, [99; 32]);
    other.insert_session(key(80), s);
    let up = c.seal(b"moved").unwrap();
    let mut out = Output::default();
    let mut got = Vec::new();
    other.on_datagram(w.now, key(80), &up, &w.keys, &mut out, &mut |_, p| {
        got.push(p.to_vec())
    });
    assert_eq!(got, vec![b"moved".to_vec()]);
}
