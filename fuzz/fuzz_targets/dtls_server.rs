//! Stateful: one `dtls::Server` (PSK, and ECDHE with a raw key) driven by a sequence of
//! operations, with a fake clock. Genuine clients of the crate's own `dtls::client` can take
//! their next step at any point, so mutations land in every handshake state, not only at the
//! first ClientHello. Nothing a peer sends may panic the server, every datagram it sends must be
//! whole DTLS records, and the handshake and session bounds must hold.
//!
//! Operations (first byte `op`, `kind = op % 4`, peer `(op >> 2) % 2`):
//! - 0: a datagram from the peer: u16 length + bytes;
//! - 1: advance the clock by a u16 of milliseconds (seconds when `op & 0x80`), then `on_timeout`;
//! - 2: the server seals a u8-length plaintext for the peer;
//! - 3: the peer's genuine client takes its next step (ClientHello, or its answer to what the
//!   server sent it last), its datagram mangled by one XOR byte when `op & 0x80`, and sent from
//!   the other peer's address when `op & 0x40` (peer 0 uses a Connection ID: its session may
//!   move there).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fuzz_common::Reader;
use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::dtls::client::Client;
use lwm2m_gateway::dtls::record;
use lwm2m_gateway::dtls::server::{Config, Output};
use lwm2m_gateway::dtls::{Authenticator, ConnKey, Server, Suite};

struct Keys;

impl Authenticator for Keys {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        (identity == b"dev").then(|| b"0123456789abcdef".to_vec())
    }
}

fn key(p: usize) -> ConnKey {
    (0, SocketAddr::from(([127, 0, 0, 1], 40000 + p as u16)))
}

fn check(out: &Output, cfg: &Config, s: &Server) {
    for (_, d) in &out.transmits {
        assert!(!d.is_empty());
        // Peer 0's CID is 2 bytes long; records without one parse the same whatever the length.
        let whole: usize = record::records(d, 2)
            .map(|r| record::HEADER_LEN + r.cid.len() + r.fragment.len())
            .sum();
        assert_eq!(whole, d.len(), "a datagram of whole records");
    }
    assert!(s.handshakes() <= cfg.max_handshakes);
    assert!(s.sessions() <= cfg.max_sessions);
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        max_handshakes: 2,
        max_sessions: 2,
        ..Config::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut s = Server::new(cfg.clone(), now, [5; 32]);
    let mut clients: Vec<Client> = (0..2)
        .map(|i| {
            let suites = [Suite::PskAes128Ccm8, Suite::PskAes128CbcSha256];
            let c = Client::new(b"dev", b"0123456789abcdef", &suites[i..i + 1], i as u64);
            if i == 0 {
                c.with_connection_id(&[0xc1, 0xd2])
            } else {
                c
            }
        })
        .collect();
    let mut last: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut started = [false; 2];
    let mut r = Reader::new(data);
    let mut steps = 0;
    while !r.is_empty() && steps < 64 {
        steps += 1;
        let op = r.u8();
        let p = ((op >> 2) % 2) as usize;
        let mut out = Output::default();
        let from = if op % 4 == 3 && op & 0x40 != 0 {
            1 - p
        } else {
            p
        };
        let datagram = match op % 4 {
            0 => {
                let n = r.u16() as usize % 2048;
                Some(r.bytes(n).to_vec())
            }
            1 => {
                let d = r.u16() as u64;
                now += if op & 0x80 != 0 {
                    Duration::from_secs(d)
                } else {
                    Duration::from_millis(d)
                };
                s.on_timeout(now, &mut out);
                None
            }
            2 => {
                let n = r.u8() as usize;
                let _ = s.seal(&key(p), r.bytes(n));
                None
            }
            _ => {
                let c = &mut clients[p];
                let mut next = None;
                if !started[p] {
                    started[p] = true;
                    next = Some(c.connect());
                } else {
                    for d in std::mem::take(&mut last[p]) {
                        if let Some(reply) = c.on_datagram(&d, &mut |_| {}) {
                            next = Some(reply);
                        }
                    }
                    if next.is_none() && c.is_established() {
                        next = c.seal(b"\x40\x01\x00\x01");
                    }
                }
                next.map(|mut d| {
                    if op & 0x80 != 0 && !d.is_empty() {
                        let at = r.u16() as usize % d.len();
                        d[at] ^= r.u8() | 1;
                    }
                    d
                })
            }
        };
        if let Some(d) = datagram {
            s.on_datagram(now, key(from), &d, &Keys, &mut out, &mut |_, _, _| {});
        }
        check(&out, &cfg, &s);
        for (k, d) in out.transmits {
            let i = if k == key(0) { 0 } else { 1 };
            last[i].push(d);
        }
    }
});
