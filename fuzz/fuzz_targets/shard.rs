//! Stateful: one `gateway::Shard` driven by a sequence of operations decoded from the input, with
//! a fake clock. After every operation each datagram the shard sends must parse as CoAP and each
//! MQTT publish must be valid JSON.
//!
//! Operations (first byte `op`, `kind = op % 5`):
//! - 0: datagram from peer `(op >> 3) % 3`: u16 length + bytes;
//! - 1: MQTT command for endpoint `(op >> 3) % 3` (see `EPS`): u16 length + JSON bytes;
//! - 2: advance the clock by a u16 of milliseconds (of seconds when `op & 0x80`), then `on_timeout`;
//! - 3: jump the clock to `next_deadline()`, then `on_timeout`;
//! - 4: answer the last confirmable request the shard sent to peer `(op >> 5) % 3`, reusing its
//!   message id and token: style `(op >> 3) & 3` (piggybacked ACK / empty ACK + separate CON
//!   response / NON notification / CON notification), then code byte, content-format byte (index
//!   into `CFS`), observe byte, u16 length + payload.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuzz_common::{check_datagram, registry, Reader};
use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::settings::ShardConfig;
use lwm2m_gateway::core::shard::{Output, Peer, Shard};

/// Endpoint names of the real-client captures used as seeds.
const EPS: [&str; 3] = ["wakaama-ep1", "anjay-ep1", "node-ep1"];
const PORTS: [u16; 3] = [56830, 56831, 33721];
const CFS: [Option<u32>; 12] = [
    None,
    Some(0),
    Some(40),
    Some(42),
    Some(60),
    Some(110),
    Some(112),
    Some(11542),
    Some(11543),
    Some(11544),
    Some(1542),
    Some(65535),
];

fn shard_config() -> Arc<ShardConfig> {
    static CFG: OnceLock<Arc<ShardConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let c = Config {
            workers: 1,
            lifetime_min: 10,
            lifetime_max: 100_000,
            ..Config::default()
        };
        Arc::new(c.shard_config(registry().clone()).expect("shard config"))
    })
    .clone()
}

fn peer(i: usize) -> Peer {
    Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], PORTS[i])))
}

/// Checks and forgets the output of one call, remembering the last CON request to each peer.
fn drain(out: &mut Output, last_req: &mut [Option<(u16, Vec<u8>)>; 3]) {
    for t in &out.transmits {
        check_datagram(&t.bytes);
        let v = MessageView::parse(&t.bytes).unwrap();
        if v.msg_type() == MsgType::Con && code::is_request(v.code()) {
            if let Some(i) = PORTS.iter().position(|p| *p == t.peer.addr.port()) {
                last_req[i] = Some((v.message_id(), v.token().to_vec()));
            }
        }
    }
    for p in &out.publishes {
        assert!(!p.topic.is_empty(), "publish without topic");
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
            panic!(
                "publish on {} is not JSON ({e}): {:?}",
                p.topic,
                String::from_utf8_lossy(&p.payload)
            );
        }
    }
    out.clear();
}

fuzz_target!(|data: &[u8]| {
    let mut shard = Shard::new(
        lwm2m_gateway::core::ids::ShardId::default(),
        shard_config(),
        42,
    );
    let mut now = Instant::now();
    let mut out = Output::default();
    let mut last_req: [Option<(u16, Vec<u8>)>; 3] = [None, None, None];
    let mut rd = Reader::new(data);
    let mut mid: u16 = 0x7000;
    let mut ops = 0;
    while !rd.is_empty() && ops < 256 {
        ops += 1;
        let op = rd.u8();
        match op % 5 {
            0 => {
                let p = peer((op as usize >> 3) % 3);
                let bytes = rd.long();
                shard.on_datagram(now, p, bytes, &mut out);
            }
            1 => {
                let ep = EPS[(op as usize >> 3) % 3];
                let payload = rd.long();
                shard.on_command(now, ep, command::parse(payload), None, &mut out);
            }
            2 => {
                let n = rd.u16() as u64;
                now += if op & 0x80 != 0 {
                    Duration::from_secs(n)
                } else {
                    Duration::from_millis(n)
                };
                shard.on_timeout(now, &mut out);
            }
            3 => {
                if let Some(d) = shard.next_deadline() {
                    now = now.max(d);
                }
                shard.on_timeout(now, &mut out);
            }
            _ => {
                let i = (op as usize >> 5) % 3;
                let style = (op >> 3) & 3;
                let rc = rd.u8();
                let cf = CFS[rd.u8() as usize % CFS.len()];
                let obs = rd.u8();
                let payload = rd.long();
                let Some((req_mid, token)) = last_req[i].clone() else {
                    continue;
                };
                let mut send = |t: MsgType, c: u8, m: u16, tok: &[u8], observe: bool| {
                    let mut b = Vec::new();
                    let mut mb = MessageBuilder::new(&mut b, t, c, m, tok);
                    if c == code::EMPTY {
                        mb.finish();
                    } else {
                        if observe {
                            mb = mb.uint_option(opt::OBSERVE, obs as u32);
                        }
                        if let Some(cf) = cf {
                            mb = mb.uint_option(opt::CONTENT_FORMAT, cf);
                        }
                        mb.payload(payload);
                    }
                    shard.on_datagram(now, peer(i), &b, &mut out);
                };
                mid = mid.wrapping_add(1);
                match style {
                    0 => send(MsgType::Ack, rc, req_mid, &token, false),
                    1 => {
                        send(MsgType::Ack, code::EMPTY, req_mid, &[], false);
                        send(MsgType::Con, rc, mid, &token, false);
                    }
                    2 => send(MsgType::Non, rc, mid, &token, true),
                    _ => send(MsgType::Con, rc, mid, &token, true),
                }
            }
        }
        drain(&mut out, &mut last_req);
    }
    let _ = shard.registrations();
});
