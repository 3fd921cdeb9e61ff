//! Hostile traffic beside a scenario (`--garbage`, `--mqtt-garbage`): the soak of issue 12.
//!
//! - Datagrams, from `--garbage-sources` addresses of their own (127.0.2.1, 127.0.2.2, ...: apart
//!   from the fleet's 127.1.x.y and 127.0.0.1), at `--garbage-rate`, cycling through [`KINDS`]:
//!   random bytes, cut headers, unparsable options, requests for nothing, notifications and
//!   responses with tokens nobody gave out, Updates of registrations that do not exist, bogus
//!   Registers (`ep=junk-…`, a storm of endpoints), oversized datagrams, and CoAP pings (which are
//!   no error). Answers are read and counted.
//! - MQTT commands on the command topics, at `--mqtt-garbage-rate`: not JSON, JSON of the wrong
//!   shape, unknown operations, bad paths, nesting deeper than any parser's limit, payloads of
//!   hundreds of KiB and one above the gateway's `mqtt.max_packet_size`; half for the fleet's own
//!   endpoints (garbage that must not reach the device), half for endpoints that do not exist.
//!   Their answers carry a `reqID` of [`HOSTILE_REQ_ID`] or above, or `msgType` `error`: the
//!   subscriber counts them apart from the fleet's commands.
//! - With `--gateway-pid`: the gateway's RSS sampled every 100 ms, its peak reported.
//!
//! The good fleet's figures (notifications lost, commands unanswered) are the scenario's own.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::stats::{proc_sample, Report, Stats};

/// Command answers at or above this `reqID` answer the garbage flood, not the fleet.
pub const HOSTILE_REQ_ID: u64 = 1 << 40;

/// The kinds of garbage datagram, in the order they are sent.
pub const KINDS: [&str; 10] = [
    "random_bytes",
    "cut_header",
    "bad_options",
    "unknown_path",
    "foreign_token_notification",
    "foreign_token_response",
    "unknown_registration_update",
    "bogus_register",
    "oversized",
    "ping",
];

#[derive(Default)]
pub struct HostileCounters {
    pub sent: [AtomicU64; KINDS.len()],
    pub send_errors: AtomicU64,
    pub answers: AtomicU64,
    pub mqtt_sent: AtomicU64,
    pub mqtt_bytes: AtomicU64,
    pub mqtt_errors: AtomicU64,
    /// Peak RSS of the gateway while the garbage flowed, KiB.
    pub rss_peak_kb: AtomicU64,
    pub rss_start_kb: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct HostileConfig {
    pub datagrams: u64,
    pub rate: f64,
    pub sources: u32,
    pub gateway: SocketAddr,
    pub mqtt_messages: u64,
    pub mqtt_rate: f64,
    pub mqtt: SocketAddr,
    pub command_topic: String,
    pub prefix: String,
    pub devices: usize,
    pub gateway_pid: Option<u32>,
}

pub struct Hostile {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    cfg: HostileConfig,
}

/// xorshift64*: cheap, seeded, good enough to vary garbage.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A CoAP header: version 1, type `t`, token `tok`, code, message id.
fn header(b: &mut Vec<u8>, t: u8, code: u8, mid: u16, tok: &[u8]) {
    b.push(0x40 | (t << 4) | tok.len() as u8);
    b.push(code);
    b.extend_from_slice(&mid.to_be_bytes());
    b.extend_from_slice(tok);
}

/// Option `delta` (under 13) after the previous one, with a value of up to 268 bytes.
fn option(b: &mut Vec<u8>, delta: u8, v: &[u8]) {
    if v.len() < 13 {
        b.push((delta << 4) | v.len() as u8);
    } else {
        b.push((delta << 4) | 13);
        b.push((v.len() - 13) as u8);
    }
    b.extend_from_slice(v);
}

/// Garbage datagram number `k` (of kind `k % KINDS.len()`) from source `src`.
fn datagram(k: u64, src: u32, rng: &mut Rng, b: &mut Vec<u8>) -> usize {
    b.clear();
    let kind = (k % KINDS.len() as u64) as usize;
    let mid = k as u16;
    let r = rng.next();
    match kind {
        0 => b.extend((0..1 + r % 64).map(|i| (r >> (i % 8 * 8)) as u8 ^ i as u8)),
        1 => b.extend_from_slice(&[0x40, 0x01, 0x12][..(1 + r % 3) as usize]),
        // A CON GET whose option length nibble is the reserved 15: unparsable, answered RST.
        2 => {
            header(b, 0, 0x01, mid, &[]);
            b.extend_from_slice(&[0xBF, 1, 2, 3]);
        }
        3 => {
            header(b, 0, 0x01, mid, &[1]);
            option(b, 11, b"nothing");
        }
        // A NON 2.05 notification (Observe option) with a random 8-byte token.
        4 => {
            header(b, 1, 0x45, mid, &r.to_be_bytes());
            option(b, 6, &[(k & 0xff) as u8]);
            b.extend_from_slice(&[0xff, b'4', b'2']);
        }
        5 => {
            header(b, 2, 0x45, mid, &r.rotate_left(17).to_be_bytes());
            b.extend_from_slice(&[0xff, b'x']);
        }
        6 => {
            header(b, 0, 0x02, mid, &[2]);
            option(b, 11, b"rd");
            let id = format!("{:x}", r % 0xffff_ffff);
            option(b, 0, id.as_bytes());
        }
        7 => {
            header(b, 0, 0x02, mid, &[3]);
            option(b, 11, b"rd");
            let q = format!("ep=junk-{src}-{}", r % 1_000_000);
            option(b, 4, q.as_bytes());
            option(b, 0, b"lt=60");
            b.extend_from_slice(b"\xff</3/0>");
        }
        8 => b.resize(9000, (r & 0xff) as u8),
        _ => header(b, 0, 0x00, mid, &[]),
    }
    kind
}

/// MQTT garbage message number `k`: (topic, payload).
fn mqtt_garbage(k: u64, cfg: &HostileConfig, rng: &mut Rng) -> (String, Vec<u8>) {
    let r = rng.next();
    let ours = k.is_multiple_of(2) && cfg.devices > 0;
    let ep = if ours {
        format!("{}{}", cfg.prefix, r as usize % cfg.devices)
    } else {
        format!("hostile-{}", r % 100_000)
    };
    let topic = cfg.command_topic.replace("%e", &ep);
    let id = HOSTILE_REQ_ID + k;
    let payload: Vec<u8> = match (k / 2) % 10 {
        0 => b"{not json".to_vec(),
        1 => (0..64).map(|i| (r >> (i % 8 * 8)) as u8).collect(),
        2 => b"[1,2,3]".to_vec(),
        3 => json!({"reqID": id, "msgType": "reboot", "data": {"path": "/3/0/4"}})
            .to_string()
            .into_bytes(),
        4 => json!({"reqID": id, "msgType": "read", "data": {"path": "/3/x/0"}})
            .to_string()
            .into_bytes(),
        5 => json!({"reqID": id, "msgType": "write", "data": {"path": "/3/0/13", "type": "Nope", "value": 1}})
            .to_string()
            .into_bytes(),
        // Far deeper than serde_json's recursion limit (128).
        6 => {
            let mut v = vec![b'['; 5_000];
            v.extend(std::iter::repeat_n(b']', 5_000));
            v
        }
        7 if k % 1000 == 14 => vec![b'x'; 300 << 10],
        8 if k == 16 => {
            // Above the gateway's default mqtt.max_packet_size (1 MiB), once.
            let mut v = format!("{{\"reqID\":{id},\"msgType\":\"read\",\"data\":{{\"path\":\"/3/0/0\",\"pad\":\"").into_bytes();
            v.resize(2 << 20, b'a');
            v.extend_from_slice(b"\"}}");
            v
        }
        // For endpoints that do not exist, a well-formed read (answered 4.04); ours get a
        // command with no operation at all.
        _ if !ours => json!({"reqID": id, "msgType": "read", "data": {"path": "/3/0/0"}})
            .to_string()
            .into_bytes(),
        _ => json!({"reqID": id, "data": {"path": "/3/0/0"}})
            .to_string()
            .into_bytes(),
    };
    (topic, payload)
}

impl Hostile {
    /// Starts the garbage senders (those whose count is not 0) and the RSS sampler.
    pub fn start(cfg: HostileConfig, s: Arc<Stats>) -> anyhow::Result<Hostile> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        if let Some(pid) = cfg.gateway_pid {
            let (s, stop) = (s.clone(), stop.clone());
            if let Some(p) = proc_sample(&pid.to_string()) {
                s.hostile.rss_start_kb.store(p.rss_kb, Relaxed);
            }
            threads.push(
                std::thread::Builder::new()
                    .name("rss".into())
                    .spawn(move || {
                        while !stop.load(Relaxed) {
                            if let Some(p) = proc_sample(&pid.to_string()) {
                                s.hostile.rss_peak_kb.fetch_max(p.rss_kb, Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    })?,
            );
        }
        if cfg.datagrams > 0 {
            let socks = (1..=cfg.sources.max(1))
                .map(|i| {
                    let ip = std::net::Ipv4Addr::new(127, 0, 2, i as u8);
                    let so = UdpSocket::bind((ip, 0))?;
                    so.set_nonblocking(true)?;
                    Ok(so)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let (cfg, s, stop) = (cfg.clone(), s.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("garbage-udp".into())
                    .spawn(move || send_datagrams(&cfg, &socks, &s, &stop))?,
            );
        }
        if cfg.mqtt_messages > 0 {
            let (cfg, s, stop) = (cfg.clone(), s.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("garbage-mqtt".into())
                    .spawn(move || send_mqtt(&cfg, &s, &stop))?,
            );
        }
        Ok(Hostile {
            stop,
            threads,
            started: Instant::now(),
            cfg,
        })
    }

    /// Stops what still runs and adds the `hostile` section to the report.
    pub fn finish(self, s: &Stats, r: &mut Report) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let h = &s.hostile;
        let by_kind: serde_json::Map<String, serde_json::Value> = KINDS
            .iter()
            .zip(&h.sent)
            .map(|(k, n)| (k.to_string(), json!(n.load(Relaxed))))
            .collect();
        let sent: u64 = h.sent.iter().map(|n| n.load(Relaxed)).sum();
        let secs = self.started.elapsed().as_secs_f64();
        let (rss0, rss_peak) = (h.rss_start_kb.load(Relaxed), h.rss_peak_kb.load(Relaxed));
        r.set(
            "hostile",
            json!({
                "datagrams_sent": sent,
                "datagrams_by_kind": by_kind,
                "datagram_send_errors": h.send_errors.load(Relaxed),
                "datagram_answers": h.answers.load(Relaxed),
                "sources": self.cfg.sources,
                "mqtt_sent": h.mqtt_sent.load(Relaxed),
                "mqtt_bytes": h.mqtt_bytes.load(Relaxed),
                "mqtt_errors": h.mqtt_errors.load(Relaxed),
                "mqtt_answers": s.mq.hostile_answers.load(Relaxed),
                "gateway_rss_kb_start": rss0,
                "gateway_rss_kb_peak": rss_peak,
                "seconds": secs,
            }),
        );
        r.line(format!(
            "  hostile datagrams  {sent} from {} sources ({:.0}/s), {} answered, {} send errors",
            self.cfg.sources,
            sent as f64 / secs.max(1e-3),
            h.answers.load(Relaxed),
            h.send_errors.load(Relaxed),
        ));
        r.line(format!(
            "  hostile MQTT       {} commands ({} MiB), {} answered, {} publish errors",
            h.mqtt_sent.load(Relaxed),
            h.mqtt_bytes.load(Relaxed) >> 20,
            s.mq.hostile_answers.load(Relaxed),
            h.mqtt_errors.load(Relaxed),
        ));
        if self.cfg.gateway_pid.is_some() {
            r.line(format!(
                "  gateway RSS        {} MiB at the start of the garbage, peak {} MiB",
                rss0 >> 10,
                rss_peak >> 10
            ));
        }
    }
}

/// Sends `cfg.datagrams` garbage datagrams round-robin over `socks` at `cfg.rate` (0: as fast
/// as the sockets take them), reading whatever the gateway answers.
fn send_datagrams(cfg: &HostileConfig, socks: &[UdpSocket], s: &Stats, stop: &AtomicBool) {
    let h = &s.hostile;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut b = Vec::with_capacity(9000);
    let mut rx = vec![0u8; 65536];
    let t0 = Instant::now();
    let mut k = 0u64;
    while k < cfg.datagrams && !stop.load(Relaxed) {
        if cfg.rate > 0.0 {
            let due = (t0.elapsed().as_secs_f64() * cfg.rate) as u64;
            if k >= due {
                drain(socks, &mut rx, h);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        // A burst of up to 64 before looking at the clock again.
        for _ in 0..64 {
            if k >= cfg.datagrams {
                break;
            }
            let src = (k / KINDS.len() as u64 % socks.len() as u64) as usize;
            let kind = datagram(k, src as u32 + 1, &mut rng, &mut b);
            match socks[src].send_to(&b, cfg.gateway) {
                Ok(_) => {
                    h.sent[kind].fetch_add(1, Relaxed);
                }
                Err(_) => {
                    h.send_errors.fetch_add(1, Relaxed);
                }
            }
            k += 1;
        }
        drain(socks, &mut rx, h);
    }
    // Late answers.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until && !stop.load(Relaxed) {
        drain(socks, &mut rx, h);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drain(socks: &[UdpSocket], rx: &mut [u8], h: &HostileCounters) {
    for so in socks {
        while so.recv_from(rx).is_ok() {
            h.answers.fetch_add(1, Relaxed);
        }
    }
}

fn send_mqtt(cfg: &HostileConfig, s: &Stats, stop: &AtomicBool) {
    let h = &s.hostile;
    let mut o = MqttOptions::new(
        format!("loadtest-garbage-{}", std::process::id()),
        cfg.mqtt.ip().to_string(),
        cfg.mqtt.port(),
    );
    o.set_keep_alive(Duration::from_secs(30));
    // Larger than any broker's limit we test against: the 2 MiB message must leave here.
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut conn): (Client, _) = Client::new(o, 1000);
    let errors_stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = errors_stop.clone();
        std::thread::spawn(move || {
            let mut errors = 0u64;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => {
                        errors += 1;
                        if stop.load(Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ if stop.load(Relaxed) => break,
                    _ => {}
                }
            }
            errors
        })
    };
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let t0 = Instant::now();
    let mut k = 0u64;
    while k < cfg.mqtt_messages && !stop.load(Relaxed) {
        if cfg.mqtt_rate > 0.0 && k >= (t0.elapsed().as_secs_f64() * cfg.mqtt_rate) as u64 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let (topic, payload) = mqtt_garbage(k, cfg, &mut rng);
        let len = payload.len() as u64;
        // QoS 0: a flood does not wait for acknowledgements; the channel bounds what is queued.
        match client.publish(topic, QoS::AtMostOnce, false, payload) {
            Ok(()) => {
                h.mqtt_sent.fetch_add(1, Relaxed);
                h.mqtt_bytes.fetch_add(len, Relaxed);
            }
            Err(_) => {
                h.mqtt_errors.fetch_add(1, Relaxed);
            }
        }
        k += 1;
    }
    std::thread::sleep(Duration::from_millis(200));
    errors_stop.store(true, Relaxed);
    let _ = client.disconnect();
    if let Ok(n) = poller.join() {
        h.mqtt_errors.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_what_it_says() {
        let mut rng = Rng(7);
        let mut b = Vec::new();
        for k in 0..KINDS.len() as u64 * 3 {
            let kind = datagram(k, 1, &mut rng, &mut b);
            let parsed = coap_lite::Packet::from_bytes(&b);
            match KINDS[kind] {
                "random_bytes" | "cut_header" | "bad_options" => {}
                "oversized" => assert_eq!(b.len(), 9000),
                "bogus_register" => {
                    let p = parsed.expect("a Register parses");
                    let q: Vec<_> = p
                        .get_option(coap_lite::CoapOption::UriQuery)
                        .unwrap()
                        .iter()
                        .cloned()
                        .collect();
                    assert!(q[0].starts_with(b"ep=junk-1-"), "{q:?}");
                    assert_eq!(q[1], b"lt=60");
                }
                "unknown_registration_update" | "unknown_path" | "ping" => {
                    parsed.expect("well-formed");
                }
                "foreign_token_notification" | "foreign_token_response" => {
                    let p = parsed.expect("well-formed");
                    assert_eq!(p.get_token().len(), 8);
                }
                other => panic!("{other}"),
            }
        }
    }
}
