//! The server and client against each other in memory: every handshake path, every refusal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client::Client;
use super::server::{Authenticator, Config, ConnKey, Event, Failure, Output, Server};
use super::Suite;

struct Keys(HashMap<Vec<u8>, Vec<u8>>);

impl Authenticator for Keys {
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
    /// Per datagram delivered to the application: the key its session had before, if it moved.
    moved: Vec<Option<ConnKey>>,
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
            moved: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Server's answers to one datagram.
    fn deliver(&mut self, k: ConnKey, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Output::default();
        let (received, moved) = (&mut self.received, &mut self.moved);
        self.server
            .on_datagram(self.now, k, d, &self.keys, &mut out, &mut |_, from, p| {
                received.push(p.to_vec());
                moved.push(from);
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
        w.events.contains(&Event::Closed {
            key: key(60),
            connection_id: None
        }),
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
    assert!(w.events.contains(&Event::Closed {
        key: key(71),
        connection_id: None
    }));
    assert_eq!(w.server.sessions(), 1);
    w.now += Duration::from_secs(101);
    let mut out = Output::default();
    w.server.on_timeout(w.now, &mut out);
    assert_eq!(
        out.events,
        vec![Event::Closed {
            key: key(70),
            connection_id: None
        }]
    );
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
    other.on_datagram(w.now, key(80), &up, &w.keys, &mut out, &mut |_, _, p| {
        got.push(p.to_vec())
    });
    assert_eq!(got, vec![b"moved".to_vec()]);
}

#[test]
fn a_saved_session_restored_in_a_new_server_carries_on_without_a_handshake() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(
        b"dev-1",
        b"secret-one-16byt",
        &[Suite::PskAes128CbcSha256],
        12,
    );
    let hello = c.connect();
    w.handshake(key(90), &mut c, hello);
    let up = c.seal(b"before").unwrap();
    w.deliver(key(90), &up);
    let saved = w.server.take_session(&key(90)).unwrap().to_bytes();
    // A restart: a new server, the session restored.
    let mut restarted = Server::new(Config::default(), w.now, [8; 32]);
    let s = super::server::Session::from_bytes(&saved, w.now).unwrap();
    assert_eq!(&s.identity[..], b"dev-1");
    restarted.insert_session(key(90), s);
    let mut out = Output::default();
    let mut got = Vec::new();
    // The old record is a replay for the restored window; a new one is data.
    restarted.on_datagram(w.now, key(90), &up, &w.keys, &mut out, &mut |_, _, p| {
        got.push(p.to_vec())
    });
    let next = c.seal(b"after restart").unwrap();
    restarted.on_datagram(w.now, key(90), &next, &w.keys, &mut out, &mut |_, _, p| {
        got.push(p.to_vec())
    });
    assert_eq!(got, vec![b"after restart".to_vec()]);
    let down = restarted.seal(&key(90), b"downlink").unwrap();
    let mut got = Vec::new();
    c.on_datagram(&down, &mut |p| got.push(p.to_vec()));
    assert_eq!(got, vec![b"downlink".to_vec()]);
    // Cut short, or another layout: refused, never a panic.
    for n in 0..saved.len() {
        assert!(
            super::server::Session::from_bytes(&saved[..n], w.now).is_none(),
            "{n}"
        );
    }
    let mut other = saved.clone();
    other[0] = 9;
    assert!(super::server::Session::from_bytes(&other, w.now).is_none());
}

// ---------------------------------------------------------------- certificates and raw keys

mod ecdhe_suites {
    use super::*;
    use crate::dtls::client::ClientCert;
    use crate::dtls::ecdhe::ServerCert;
    use crate::dtls::server::PeerAuth;
    use base64::Engine;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use std::sync::Arc;

    /// The self-signed certificate of `x509.rs` (CN=dev-7) and its key.
    const DEV7_CERT: &str = "MIIBlTCCATugAwIBAgIUH75CKh6r6m/jdVj2JPu9xzg0GEEwCgYIKoZIzj0EAwIwHzENMAsGA1UECgwEVGVzdDEOMAwGA1UEAwwFZGV2LTcwIBcNMjYxMjA0MjM1MTM5WhgPMjA1NjExMjYyMzUxMzlaMB8xDTALBgNVBAoMBFRlc3QxDjAMBgNVBAMMBWRldi03MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhuTj20aGjWPi5J1KaVxR3E+o3mhVwIIaxWJqMgtHaNH6HnTo7HA0DXluPMHVV237uqTubxzBDzHKrUKDnGFg/6NTMFEwHQYDVR0OBBYEFBI3ATUbfiIKDTZejB4JSjJr/n61MB8GA1UdIwQYMBaAFBI3ATUbfiIKDTZejB4JSjJr/n61MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAJeVhnbAd0yqzXV1hwpvLTxYFAR30qLZvKng1BdW7/iNAiAUkHGQLx7gbsQCs36BAgiVtaAdlZMd7pUlUVJlY2YsnQ==";
    const DEV7_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyAaa6xqGmOasZUxV
PR++PL4Ly7YXkb9FFeP0tuoOHpahRANCAASG5OPbRoaNY+LknUppXFHcT6jeaFXA
ghrFYmoyC0do0foedOjscDQNeW48wdVXbfu6pO5vHMEPMcqtQoOcYWD/
-----END PRIVATE KEY-----
";

    fn dev7() -> (SigningKey, Vec<u8>) {
        let cert = base64::engine::general_purpose::STANDARD
            .decode(DEV7_CERT)
            .unwrap();
        (SigningKey::from_pkcs8_pem(DEV7_KEY).unwrap(), cert)
    }

    fn spki(k: &SigningKey) -> Vec<u8> {
        k.verifying_key().to_public_key_der().unwrap().into_vec()
    }

    /// Trusts the dev-7 certificate and one raw key.
    struct Trust {
        raw: Vec<u8>,
    }

    impl Authenticator for Trust {
        fn psk(&self, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
        fn verify_chain(&self, chain: &[&[u8]]) -> bool {
            chain.first() == Some(&&dev7().1[..])
        }
        fn accept_raw_key(&self, spki: &[u8]) -> bool {
            spki == self.raw
        }
    }

    fn server() -> Server {
        let (key, cert) = dev7();
        let sc = ServerCert {
            spki: spki(&key),
            key,
            chain: vec![cert],
        };
        let cfg = Config {
            suites: vec![
                Suite::EcdheEcdsaAes128Ccm8,
                Suite::EcdheEcdsaAes128GcmSha256,
            ],
            certificate: Some(Arc::new(sc)),
            client_x509: true,
            client_rpk: true,
            ..Config::default()
        };
        Server::new(cfg, Instant::now(), [3; 32])
    }

    /// Runs the handshake of `c` to completion; the server's events.
    fn run(s: &mut Server, auth: &Trust, c: &mut Client) -> Vec<Event> {
        let mut pending = vec![c.connect()];
        let mut events = Vec::new();
        for _ in 0..10 {
            let Some(d) = pending.pop() else { break };
            let mut out = Output::default();
            s.on_datagram(
                Instant::now(),
                key(9),
                &d,
                auth,
                &mut out,
                &mut |_, _, _| {},
            );
            events.extend(out.events);
            for (_, answer) in out.transmits {
                if let Some(r) = c.on_datagram(&answer, &mut |_| {}) {
                    pending.push(r);
                }
            }
        }
        events
    }

    #[test]
    fn a_raw_public_key_client_handshakes_with_both_ecdhe_suites_and_is_known_by_its_key() {
        for suite in [
            Suite::EcdheEcdsaAes128Ccm8,
            Suite::EcdheEcdsaAes128GcmSha256,
        ] {
            let sk = SigningKey::from_slice(&[7; 32]).unwrap();
            let trust = Trust { raw: spki(&sk) };
            let mut s = server();
            let cert = ClientCert {
                spki: spki(&sk),
                key: sk,
                chain: Vec::new(),
            };
            let mut c = Client::with_certificate(cert, &[suite], 1);
            run(&mut s, &trust, &mut c);
            assert!(c.is_established(), "{suite:?}");
            let session = s.session(&key(9)).unwrap();
            assert_eq!(session.auth, PeerAuth::RawPublicKey);
            assert_eq!(&session.identity[..], &trust.raw[..]);
            let up = c.seal(b"rpk data").unwrap();
            let mut got = Vec::new();
            let mut out = Output::default();
            s.on_datagram(
                Instant::now(),
                key(9),
                &up,
                &trust,
                &mut out,
                &mut |_, _, p| got.push(p.to_vec()),
            );
            assert_eq!(got, vec![b"rpk data".to_vec()]);
        }
    }

    #[test]
    fn an_x509_client_is_known_by_its_certificates_common_name() {
        let (sk, cert) = dev7();
        let trust = Trust { raw: Vec::new() };
        let mut s = server();
        let cc = ClientCert {
            spki: spki(&sk),
            key: sk,
            chain: vec![cert],
        };
        let mut c = Client::with_certificate(cc, &[Suite::EcdheEcdsaAes128Ccm8], 2);
        run(&mut s, &trust, &mut c);
        assert!(c.is_established());
        let session = s.session(&key(9)).unwrap();
        assert_eq!(session.auth, PeerAuth::X509);
        assert_eq!(&session.identity[..], b"dev-7");
    }

    #[test]
    fn unknown_keys_untrusted_chains_and_forged_signatures_are_refused() {
        let stranger = SigningKey::from_slice(&[9; 32]).unwrap();
        let (dev_key, dev_cert) = dev7();
        let cases: Vec<(ClientCert, u8, &str)> = vec![
            // A raw key nobody registered: bad_certificate.
            (
                ClientCert {
                    spki: spki(&stranger),
                    key: stranger.clone(),
                    chain: Vec::new(),
                },
                42,
                "unknown raw key",
            ),
            // A certificate the authenticator does not trust (stranger's key in place of
            // dev-7's in the chain bytes would not parse; a truncated chain stands in).
            (
                ClientCert {
                    spki: spki(&dev_key),
                    key: dev_key.clone(),
                    chain: vec![dev_cert[..dev_cert.len() - 1].to_vec()],
                },
                42,
                "untrusted chain",
            ),
            // The trusted certificate, but CertificateVerify signed with another key.
            (
                ClientCert {
                    spki: spki(&dev_key),
                    key: stranger.clone(),
                    chain: vec![dev_cert.clone()],
                },
                51,
                "forged CertificateVerify",
            ),
        ];
        for (cert, alert, what) in cases {
            let trust = Trust { raw: Vec::new() };
            let mut s = server();
            let mut c = Client::with_certificate(cert, &[Suite::EcdheEcdsaAes128Ccm8], 3);
            let events = run(&mut s, &trust, &mut c);
            assert!(!c.is_established(), "{what}");
            assert_eq!(c.failure(), Some(alert), "{what}");
            assert!(
                events.contains(&Event::HandshakeFailed {
                    key: key(9),
                    why: Failure::BadCertificate
                }),
                "{what}: {events:?}"
            );
            assert_eq!(s.sessions() + s.handshakes(), 0, "{what}");
        }
    }

    #[test]
    fn without_a_server_key_a_certificate_only_client_gets_handshake_failure() {
        let sk = SigningKey::from_slice(&[7; 32]).unwrap();
        let trust = Trust { raw: spki(&sk) };
        let mut s = Server::new(Config::default(), Instant::now(), [1; 32]);
        let cert = ClientCert {
            spki: spki(&sk),
            key: sk,
            chain: Vec::new(),
        };
        let mut c = Client::with_certificate(cert, &[Suite::EcdheEcdsaAes128Ccm8], 4);
        run(&mut s, &trust, &mut c);
        assert_eq!(c.failure(), Some(40));
    }
}

// ------------------------------------------------------------------ Connection ID (RFC 9146)

fn cid_client(own: &[u8], suite: Suite, seed: u64) -> Client {
    Client::new(b"dev-1", b"secret-one-16byt", &[suite], seed).with_connection_id(own)
}

#[test]
fn a_client_offering_a_connection_id_gets_one_and_both_sides_frame_records_with_them() {
    for suite in [Suite::PskAes128Ccm8, Suite::PskAes128CbcSha256] {
        for own in [&[][..], &[0xa1, 0xa2, 0xa3][..]] {
            let mut w = Wire::new(Config::default());
            let mut c = cid_client(own, suite, 3);
            let hello = c.connect();
            w.handshake(key(1000), &mut c, hello);
            assert!(c.is_established(), "{suite:?} own cid {own:?}");
            let ours = c.connection_id().expect("the server gave a CID").to_vec();
            assert_eq!(ours.len(), super::server::CID_LEN);
            let session = w.server.session(&key(1000)).unwrap();
            assert_eq!(
                session.connection_id(),
                Some(u64::from_be_bytes(ours[..].try_into().unwrap()))
            );
            // Up: a tls12_cid record carrying the server's CID.
            let up = c.seal(b"register").unwrap();
            assert_eq!(up[0], super::record::TLS12_CID);
            assert_eq!(&up[11..19], &ours[..]);
            assert!(w.deliver(key(1000), &up).is_empty());
            assert_eq!(w.received, vec![b"register".to_vec()]);
            assert_eq!(w.moved, vec![None]);
            // Down: with the client's CID when it asked for one, the classic format when not.
            let down = w.server.seal(&key(1000), b"created").unwrap();
            if own.is_empty() {
                assert_eq!(down[0], super::record::APPLICATION_DATA);
            } else {
                assert_eq!(down[0], super::record::TLS12_CID);
                assert_eq!(&down[11..14], own);
            }
            let mut got = Vec::new();
            c.on_datagram(&down, &mut |p| got.push(p.to_vec()));
            assert_eq!(got, vec![b"created".to_vec()]);
        }
    }
}

#[test]
fn without_an_offer_or_with_connection_ids_off_no_cid_is_used() {
    let mut w = Wire::new(Config::default());
    let mut c = Client::new(b"dev-1", b"secret-one-16byt", &[Suite::PskAes128Ccm8], 4);
    let hello = c.connect();
    w.handshake(key(1), &mut c, hello);
    assert!(c.is_established() && c.connection_id().is_none());
    assert_eq!(w.server.session(&key(1)).unwrap().connection_id(), None);
    let mut w = Wire::new(Config {
        connection_id: false,
        ..Config::default()
    });
    let mut c = cid_client(&[], Suite::PskAes128Ccm8, 5);
    let hello = c.connect();
    w.handshake(key(1), &mut c, hello);
    assert!(c.is_established() && c.connection_id().is_none());
    assert_eq!(c.seal(b"x").unwrap()[0], super::record::APPLICATION_DATA);
}

#[test]
fn a_cid_record_from_a_new_address_moves_the_session_there_and_old_ones_cannot_move_it_back() {
    let mut w = Wire::new(Config::default());
    let mut c = cid_client(&[], Suite::PskAes128Ccm8, 6);
    let hello = c.connect();
    w.handshake(key(1000), &mut c, hello);
    let early = c.seal(b"sent before the NAT rebinding").unwrap();
    let moved = c.seal(b"update from the new address").unwrap();
    // The NAT rebinds: the next record arrives from port 2000.
    assert!(w.deliver(key(2000), &moved).is_empty());
    assert_eq!(w.received, vec![b"update from the new address".to_vec()]);
    assert_eq!(w.moved, vec![Some(key(1000))]);
    assert!(w.server.session(&key(1000)).is_none());
    assert!(w.server.session(&key(2000)).is_some());
    assert!(w.server.seal(&key(1000), b"x").is_none());
    let down = w.server.seal(&key(2000), b"changed").unwrap();
    let mut got = Vec::new();
    c.on_datagram(&down, &mut |p| got.push(p.to_vec()));
    assert_eq!(got, vec![b"changed".to_vec()]);
    // A record older than the newest, still in flight from the old address, authenticates but
    // does not move the session back (RFC 9146 §6).
    let bad_before = w.server.take_stats().bad_records;
    assert!(w.deliver(key(1000), &early).is_empty());
    assert_eq!(w.received.len(), 1);
    assert!(w.server.session(&key(2000)).is_some());
    assert!(w.server.session(&key(1000)).is_none());
    // The same record replayed from yet another address: refused too.
    assert!(w.deliver(key(3000), &moved).is_empty());
    assert_eq!(w.received.len(), 1);
    assert!(w.server.session(&key(2000)).is_some());
    assert_eq!(w.server.take_stats().bad_records - bad_before, 2);
    // The moved session keeps working where it is, by CID or by address.
    let next = c.seal(b"notify").unwrap();
    assert!(w.deliver(key(2000), &next).is_empty());
    assert_eq!(w.received.last().unwrap(), b"notify");
    assert_eq!(w.moved.last(), Some(&None));
}

#[test]
fn forged_or_unknown_connection_ids_move_nothing() {
    let mut w = Wire::new(Config::default());
    let mut c = cid_client(&[], Suite::PskAes128Ccm8, 7);
    let hello = c.connect();
    w.handshake(key(1000), &mut c, hello);
    let good = c.seal(b"genuine").unwrap();
    // The right CID, a tampered body: does not authenticate, does not move.
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(w.deliver(key(4000), &forged).is_empty());
    // A CID nobody has.
    let mut unknown = good.clone();
    unknown[11] ^= 0xff;
    assert!(w.deliver(key(4000), &unknown).is_empty());
    // Cut inside the CID.
    assert!(w.deliver(key(4000), &good[..15]).is_empty());
    assert!(w.received.is_empty());
    assert!(w.server.session(&key(1000)).is_some());
    assert!(w.server.session(&key(4000)).is_none());
    assert!(w.deliver(key(1000), &good).is_empty());
    assert_eq!(w.received, vec![b"genuine".to_vec()]);
}

#[test]
fn a_move_onto_an_address_another_session_holds_is_refused() {
    let mut w = Wire::new(Config::default());
    let mut a = cid_client(&[], Suite::PskAes128Ccm8, 8);
    let hello = a.connect();
    w.handshake(key(1000), &mut a, hello);
    let mut b = Client::new(b"dev-2", &[0xab; 32], &[Suite::PskAes128Ccm8], 9);
    let hello = b.connect();
    w.handshake(key(2000), &mut b, hello);
    assert_eq!(w.server.sessions(), 2);
    let up = a.seal(b"from b's address").unwrap();
    assert!(w.deliver(key(2000), &up).is_empty());
    assert!(w.received.is_empty());
    assert_eq!(
        &w.server.session(&key(2000)).unwrap().identity[..],
        b"dev-2"
    );
    assert_eq!(
        &w.server.session(&key(1000)).unwrap().identity[..],
        b"dev-1"
    );
}

#[test]
fn a_resumed_session_gets_a_fresh_connection_id_and_a_saved_one_keeps_its_own() {
    let mut w = Wire::new(Config::default());
    let mut c = cid_client(&[0x11], Suite::PskAes128Ccm8, 10);
    let hello = c.connect();
    w.handshake(key(1000), &mut c, hello);
    let first = c.connection_id().unwrap().to_vec();
    w.events.clear();
    let hello = c.resume();
    w.handshake(key(1000), &mut c, hello);
    assert!(c.is_established());
    assert!(w.events.contains(&Event::Established {
        key: key(1000),
        resumed: true
    }));
    let second = c.connection_id().unwrap().to_vec();
    assert_ne!(first, second, "negotiated afresh (RFC 9146 §3)");
    // The old CID is told closed (whoever routes by it forgets it) and no longer opens records.
    let old = u64::from_be_bytes(first[..].try_into().unwrap());
    assert!(w.events.contains(&Event::Closed {
        key: key(1000),
        connection_id: Some(old)
    }));
    // Saved and restored: same CID, and the client's records find the session by it.
    let saved = w.server.take_session(&key(1000)).unwrap().to_bytes();
    let restored = super::server::Session::from_bytes(&saved, w.now).unwrap();
    assert_eq!(
        restored.connection_id(),
        Some(u64::from_be_bytes(second[..].try_into().unwrap()))
    );
    w.server.insert_session(key(1000), restored);
    let up = c.seal(b"after restart, new address").unwrap();
    assert!(w.deliver(key(5000), &up).is_empty());
    assert_eq!(w.received.last().unwrap(), b"after restart, new address");
    assert_eq!(w.moved.last(), Some(&Some(key(1000))));
    let down = w.server.seal(&key(5000), b"ok").unwrap();
    assert_eq!(&down[11..12], &[0x11]);
    let mut got = Vec::new();
    c.on_datagram(&down, &mut |p| got.push(p.to_vec()));
    assert_eq!(got, vec![b"ok".to_vec()]);
}
