//! Deterministic tests of the sans-IO shard (the harness: `support::sim`) over a seeded bad wire:
//! loss, duplication and reordering in both directions.

mod support;

use std::time::Duration;

use lwm2m_gateway::coap::{code, MessageView, MsgType};
use serde_json::json;
use support::*;

/// A seeded lossy, duplicating, reordering wire between the shard and a simple device that
/// answers every request (piggybacked, sometimes with an empty ACK first and a separate CON
/// response). Whatever the wire does, every command must end in exactly one final MQTT message
/// (its response, `coap_timeout` or `coap_reset`), in order per device, and nothing panics.
#[test]
fn every_command_is_answered_exactly_once_on_a_bad_wire() {
    use rand::{Rng, SeedableRng};
    for seed in 0..40u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut s = Sim::with(|c| c.coap.max_retransmit = 4);
        let reg = Msg::con(code::POST, 1)
            .path(&["rd"])
            .query(&["ep=flaky", "lt=86400", "lwm2m=1.1"])
            .payload(b"</>;ct=110,</3/0>");
        s.send(peer(5000), &reg.build());
        s.take();
        let ops = [
            json!({"msgType": "read", "data": {"path": "/3/0/0"}}),
            json!({"msgType": "write", "data": {"path": "/3/0/14", "type": "String", "value": "x"}}),
            json!({"msgType": "execute", "data": {"path": "/3/0/4"}}),
            json!({"msgType": "discover", "data": {"path": "/3/0"}}),
            json!({"msgType": "delete", "data": {"path": "/5/0"}}),
            json!({"msgType": "read-composite", "data": {"paths": ["/3/0/0", "/3/0/9"]}}),
        ];
        let n = 12;
        for i in 0..n {
            let mut c = ops[i % ops.len()].clone();
            c["reqID"] = json!(i);
            s.command("flaky", c);
        }
        let mut finals: Vec<i64> = Vec::new();
        let mut to_device: Vec<Vec<u8>> = Vec::new();
        let mut to_gateway: Vec<Vec<u8>> = Vec::new();
        let loss = rng.gen_range(0.0..0.4);
        for _step in 0..4000 {
            let (t, p, _) = s.take();
            for (_, b) in t {
                if rng.gen_bool(loss) {
                    continue;
                }
                to_device.push(b.clone());
                if rng.gen_bool(0.1) {
                    to_device.push(b);
                }
            }
            for pb in p {
                let v = payload_json(&pb);
                if v["msgType"] != "ack" {
                    let id = v["reqID"].as_i64();
                    finals.push(id.unwrap_or_else(|| panic!("seed {seed}: no reqID in {v}")));
                }
            }
            if finals.len() >= n && to_device.is_empty() && to_gateway.is_empty() {
                break;
            }
            // Reorder: deliver a random pending datagram in either direction.
            let device_side = !to_device.is_empty() && (to_gateway.is_empty() || rng.gen_bool(0.5));
            if device_side {
                let b = to_device.swap_remove(rng.gen_range(0..to_device.len()));
                let v = MessageView::parse(&b).unwrap();
                if v.msg_type() == MsgType::Con && code::is_request(v.code()) {
                    let c = match v.code() {
                        code::GET | code::FETCH => code::CONTENT,
                        code::DELETE => code::DELETED,
                        _ => code::CHANGED,
                    };
                    if rng.gen_bool(0.2) {
                        // empty ACK now, separate CON response later
                        to_gateway.push(empty_ack(v.message_id()));
                        let sep = Msg::con(c, rng.gen()).token(v.token());
                        to_gateway.push(sep.cf(0).payload(b"1").build());
                    } else {
                        to_gateway.push(answer(&b, c, Some(0), b"1"));
                    }
                }
            } else if !to_gateway.is_empty() {
                let b = to_gateway.swap_remove(rng.gen_range(0..to_gateway.len()));
                if !rng.gen_bool(loss) {
                    s.send(peer(5000), &b);
                }
            } else {
                let d = s.time_to_deadline().unwrap_or(Duration::from_secs(1));
                s.advance(d.max(Duration::from_millis(1)));
            }
        }
        assert_eq!(
            finals,
            (0..n as i64).collect::<Vec<_>>(),
            "seed {seed} (loss {loss:.2}): one final answer per command, in order"
        );
    }
}
