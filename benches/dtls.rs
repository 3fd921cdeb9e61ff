//! DTLS micro-benchmarks of the gateway's own engine (`src/dtls`), the figures the library
//! spike compared (ARCHITECTURE.md "DTLS"): a full PSK handshake (client and server in memory,
//! cookie exchange included), the server's share of it, and one 100-byte record sealed by the
//! client and opened by the server. Idle memory per session is measured by
//! `dtls_session_bytes` (a counting allocator, printed, not timed).
//!
//! `cargo bench --bench dtls`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lwm2m_gateway::dtls::client::Client;
use lwm2m_gateway::dtls::server::{Config, Output};
use lwm2m_gateway::dtls::{Authenticator, ConnKey, Server, Suite};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Keys(HashMap<Vec<u8>, Vec<u8>>);

impl Authenticator for Keys {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.0.get(identity).cloned()
    }
}

fn key(n: u32) -> ConnKey {
    let ip = std::net::Ipv4Addr::from(0x7f00_0000 | (n >> 16));
    (0, SocketAddr::from((ip, (n & 0xffff) as u16)))
}

/// One full handshake of a fresh client at `k`; the time spent inside the server.
fn handshake(s: &mut Server, keys: &Keys, k: ConnKey, seed: u64) -> Duration {
    let mut c = Client::new(b"dev", b"0123456789abcdef", &[Suite::PskAes128Ccm8], seed);
    let mut pending = vec![c.connect()];
    let mut in_server = Duration::ZERO;
    while let Some(d) = pending.pop() {
        let mut out = Output::default();
        let t = Instant::now();
        s.on_datagram(Instant::now(), k, &d, keys, &mut out, &mut |_, _, _| {});
        in_server += t.elapsed();
        for (_, a) in out.transmits {
            if let Some(r) = c.on_datagram(&a, &mut |_| {}) {
                pending.push(r);
            }
        }
    }
    assert!(c.is_established());
    in_server
}

fn keys() -> Keys {
    Keys(HashMap::from([(
        b"dev".to_vec(),
        b"0123456789abcdef".to_vec(),
    )]))
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("dtls");
    g.bench_function("psk_ccm8_handshake_client_and_server", |b| {
        let mut s = Server::new(Config::default(), Instant::now(), [1; 32]);
        let mut n = 0u32;
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(handshake(&mut s, &keys, key(n % 50_000), n as u64));
        })
    });
    g.bench_function("psk_ccm8_handshake_server_share", |b| {
        b.iter_custom(|iters| {
            let mut s = Server::new(Config::default(), Instant::now(), [2; 32]);
            (0..iters as u32)
                .map(|n| handshake(&mut s, &keys, key(n % 50_000), n as u64))
                .sum()
        })
    });
    for cid in [false, true] {
        record(&mut g, &keys, cid);
    }
    g.finish();
    dtls_session_bytes();
}

/// One 100-byte record sealed by the client and opened by the server; with `cid` inside a
/// session that agreed to a Connection ID (the record found by its CID, RFC 9146 framing).
fn record(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    keys: &Keys,
    cid: bool,
) {
    let name = if cid {
        "record_100b_seal_and_open_with_connection_id"
    } else {
        "record_100b_seal_and_open"
    };
    g.bench_function(name, |b| {
        let mut s = Server::new(Config::default(), Instant::now(), [3; 32]);
        let mut cl = Client::new(b"dev", b"0123456789abcdef", &[Suite::PskAes128Ccm8], 9);
        if cid {
            cl = cl.with_connection_id(&[]);
        }
        let mut pending = vec![cl.connect()];
        while let Some(d) = pending.pop() {
            let mut out = Output::default();
            s.on_datagram(
                Instant::now(),
                key(1),
                &d,
                keys,
                &mut out,
                &mut |_, _, _| {},
            );
            for (_, a) in out.transmits {
                if let Some(r) = cl.on_datagram(&a, &mut |_| {}) {
                    pending.push(r);
                }
            }
        }
        let payload = [0x42u8; 100];
        let mut out = Output::default();
        b.iter(|| {
            let rec = cl.seal(&payload).unwrap();
            s.on_datagram(
                Instant::now(),
                key(1),
                &rec,
                keys,
                &mut out,
                &mut |_, _, p| {
                    black_box(p);
                },
            );
        })
    });
}

/// Heap per established, idle server session: 20,000 sessions, measured with the counting
/// allocator (requested bytes, so malloc's own overhead per block is not in it).
fn dtls_session_bytes() {
    let keys = keys();
    let n = 20_000u32;
    let mut s = Server::new(Config::default(), Instant::now(), [4; 32]);
    // Warm the maps to their final capacity class before measuring, then measure growth.
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        handshake(&mut s, &keys, key(i), i as u64);
        // The first application record frees the kept last flight, as on a live gateway.
        let _ = s.session(&key(i));
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "dtls/idle_session_heap: {} bytes per established session ({} sessions, counting allocator; includes the last flight kept until the first record)",
        (after - before) / n as isize,
        s.sessions()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
