//! `gateway::mqtt_session::MqttSession::on_read`: bytes from the broker, in MQTT 3.1.1 and 5,
//! after a successful CONNACK, split at a fuzzed point into two reads. Whatever arrives, the
//! session answers with an error or with events, never a panic, and what it writes back stays
//! decodable. The first byte picks the version (bit 0: 3.1.1 or 5; bit 1: `auto`, whose bytes
//! arrive before any CONNACK, where a refusal of MQTT 5 makes it fall back to 3.1.1), the second
//! the split.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::config::MqttVersion;
use lwm2m_gateway::runtime::mqtt_session::{MqttSession, Protocol, SessionOptions};

fuzz_target!(|data: &[u8]| {
    let [v, split, rest @ ..] = data else {
        return;
    };
    let before_connack = v & 2 != 0;
    let version = if before_connack {
        MqttVersion::Auto
    } else if v & 1 == 0 {
        MqttVersion::V311
    } else {
        MqttVersion::V5
    };
    let now = Instant::now();
    let mut s = MqttSession::new(
        SessionOptions {
            version,
            client_id: "fuzz".into(),
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            max_packet_size: 4096,
            inflight: 4,
        },
        now,
    );
    s.start(now);
    let mut events = Vec::new();
    let connack: &[u8] = match s.protocol() {
        Protocol::V311 => &[0x20, 0x02, 0x00, 0x00],
        Protocol::V5 => &[0x20, 0x03, 0x00, 0x00, 0x00],
    };
    if before_connack {
        // The broker's first bytes, then (after a failure) the next connection's CONNACK in
        // the version the session chose.
        if let Err(e) = s.on_read(rest, &mut events) {
            let _ = s.after_failure(&e);
            s.start(now);
            let connack: &[u8] = match s.protocol() {
                Protocol::V311 => &[0x20, 0x02, 0x00, 0x00],
                Protocol::V5 => &[0x20, 0x03, 0x00, 0x00, 0x00],
            };
            s.on_read(connack, &mut events).expect("a valid CONNACK");
        }
        let _ = s.publish("t".into(), 1, b"x".to_vec());
        let _ = s.on_tick(now + Duration::from_secs(1));
        return;
    }
    s.on_read(connack, &mut events).expect("a valid CONNACK");
    // Something in flight, so acknowledgements have a slot to hit.
    let _ = s.publish("t".into(), 1, b"x".to_vec());
    let _ = s.publish("t".into(), 2, b"y".to_vec());
    let at = (*split as usize).min(rest.len());
    if s.on_read(&rest[..at], &mut events).is_ok() {
        let _ = s.on_read(&rest[at..], &mut events);
    }
    let _ = s.on_tick(now + Duration::from_secs(1));
    let _ = s.on_tick(now + Duration::from_secs(60));
    // Everything written is well-framed MQTT: the session can read its own output back as a
    // length-prefixed stream (a broker would).
    let out = s.pending_output().to_vec();
    let mut i = 0;
    while i < out.len() {
        let mut len = 0usize;
        let mut k = 1;
        loop {
            let b = out[i + k];
            len |= ((b & 0x7f) as usize) << (7 * (k - 1));
            k += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(k <= 5, "remaining length over 4 bytes");
        }
        i += k + len;
    }
    assert_eq!(i, out.len(), "output ends on a packet boundary");
});
