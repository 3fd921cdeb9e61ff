//! The MQTT side: one subscriber connection that classifies every uplink message with a few
//! substring searches (no JSON parse on the hot path), and a publisher connection for commands
//! and the broker baseline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Sender;
use memchr::memmem::Finder;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::stats::{now_ns, record, Stats, RING};

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn options(id: String, broker: SocketAddr, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(inflight);
    o
}

/// Small publishes must not wait for Nagle + delayed ACK (40 ms steps at low rates).
fn nodelay(conn: &mut rumqttc::Connection) {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    conn.eventloop.set_network_options(n);
}

/// What the subscriber needs to classify messages.
pub struct SubConfig {
    pub broker: SocketAddr,
    pub topic: String,
    pub qos: u8,
    pub prefix: String,
    pub n: usize,
    /// The timestamp resource path, e.g. `/3303/0/5700`.
    pub ts_path: String,
    /// Where to announce devices whose register event arrived (to observe them).
    pub reg_events: Option<Sender<u32>>,
}

/// Starts the subscriber and waits for its SubAck.
pub fn subscriber(cfg: SubConfig, stats: Arc<Stats>) -> anyhow::Result<()> {
    let opts = options(
        format!("loadtest-sub-{}", std::process::id()),
        cfg.broker,
        100,
    );
    let (client, mut conn) = Client::new(opts, 1000);
    nodelay(&mut conn);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("mqtt-sub".into())
        .spawn(move || {
            let mut h = Handler::new(
                cfg.prefix.clone(),
                cfg.n,
                &cfg.ts_path,
                stats.clone(),
                cfg.reg_events,
            );
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        h.on_publish(p.topic.as_bytes(), &p.payload)
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(cfg.topic.clone(), qos(cfg.qos));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stats.mq.conn_errors.fetch_add(1, Relaxed);
                        stats.err(&format!("mqtt subscriber: {e}"));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("MQTT subscription not acknowledged within 10 s")?;
    Ok(())
}

/// Starts a publisher connection and waits for its ConnAck.
pub fn publisher(broker: SocketAddr, inflight: u16, stats: Arc<Stats>) -> anyhow::Result<Client> {
    let opts = options(
        format!("loadtest-pub-{}", std::process::id()),
        broker,
        inflight,
    );
    let (client, mut conn) = Client::new(opts, 10_000);
    nodelay(&mut conn);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("mqtt-pub".into())
        .spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stats.drv.publish_errors.fetch_add(1, Relaxed);
                        stats.err(&format!("mqtt publisher: {e}"));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("MQTT publisher not connected within 10 s")?;
    Ok(client)
}

struct Handler {
    s: Arc<Stats>,
    n: usize,
    prefix: Finder<'static>,
    prefix_len: usize,
    msg_type: Finder<'static>,
    code: Finder<'static>,
    req_id: Finder<'static>,
    ts: Finder<'static>,
    value: Finder<'static>,
    reg_events: Option<Sender<u32>>,
}

fn find(f: &Finder, hay: &[u8]) -> Option<usize> {
    f.find(hay).map(|i| i + f.needle().len())
}

/// Digits at the start of `b`.
fn uint(b: &[u8]) -> Option<u64> {
    let end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    if end == 0 || end > 19 {
        return None;
    }
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

/// A JSON number at the start of `b` (integer or float, as the gateway prints it).
fn number(b: &[u8]) -> Option<f64> {
    let end = b
        .iter()
        .position(|c| !matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
        .unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

fn quoted(b: &[u8]) -> &[u8] {
    let end = memchr::memchr(b'"', b).unwrap_or(b.len());
    &b[..end]
}

impl Handler {
    fn new(
        prefix: String,
        n: usize,
        ts_path: &str,
        s: Arc<Stats>,
        reg_events: Option<Sender<u32>>,
    ) -> Self {
        let own = |s: String| Finder::new(s.as_bytes()).into_owned();
        Handler {
            s,
            n,
            prefix_len: prefix.len(),
            prefix: own(prefix),
            msg_type: own("\"msgType\":\"".into()),
            code: own("\"code\":\"".into()),
            req_id: own("\"reqID\":".into()),
            ts: own(format!("\"{ts_path}\",\"value\":")),
            value: own("\"value\":".into()),
            reg_events,
        }
    }

    /// The device index from a topic such as `lwm2m/<prefix><i>/up/notify`.
    fn device(&self, topic: &[u8]) -> Option<usize> {
        let mut from = 0;
        while let Some(i) = self.prefix.find(&topic[from..]) {
            let at = from + i;
            if at == 0 || topic[at - 1] == b'/' {
                let rest = &topic[at + self.prefix_len..];
                let end = memchr::memchr(b'/', rest).unwrap_or(rest.len());
                return uint(&rest[..end])
                    .filter(|_| end > 0)
                    .map(|v| v as usize)
                    .filter(|&v| v < self.n);
            }
            from = at + 1;
        }
        None
    }

    fn on_publish(&mut self, topic: &[u8], p: &[u8]) {
        let now = now_ns();
        let s = &*self.s;
        s.mq.received.fetch_add(1, Relaxed);
        let Some(dev) = self.device(topic) else {
            if memchr::memmem::find(topic, b"/hostile-").is_some() {
                // An answer to the garbage flood, for an endpoint that does not exist.
                s.mq.hostile_answers.fetch_add(1, Relaxed);
            } else {
                s.mq.foreign.fetch_add(1, Relaxed);
            }
            return;
        };
        let mt = find(&self.msg_type, p)
            .map(|i| quoted(&p[i..]))
            .unwrap_or(b"");
        let code = find(&self.code, p).map(|i| quoted(&p[i..])).unwrap_or(b"");
        match mt {
            b"notify" => {
                if !code.starts_with(b"2.") {
                    s.mq.notify_err.fetch_add(1, Relaxed);
                    s.err(&format!("notify {}", String::from_utf8_lossy(code)));
                    return;
                }
                let ts = find(&self.ts, p)
                    .or_else(|| find(&self.value, p))
                    .and_then(|i| number(&p[i..]));
                match ts {
                    Some(ts) if ts >= 1.0 && (ts as u64) <= now => {
                        record(&s.h_notify, now - ts as u64);
                        s.mq.notify.fetch_add(1, Relaxed);
                    }
                    _ => {
                        s.mq.notify.fetch_add(1, Relaxed);
                        s.mq.notify_no_ts.fetch_add(1, Relaxed);
                    }
                }
            }
            b"register" => {
                s.mq.register_ev.fetch_add(1, Relaxed);
                let t0 = s.reg_sent_at[dev].load(Relaxed);
                if t0 > 0 && t0 <= now {
                    record(&s.h_register_event, now - t0);
                }
                if let Some(tx) = &self.reg_events {
                    let _ = tx.send(dev as u32);
                }
            }
            b"update" => {
                s.mq.update_ev.fetch_add(1, Relaxed);
            }
            b"deregister" => {
                s.mq.deregister_ev.fetch_add(1, Relaxed);
            }
            b"observe" => {
                if code == b"2.05" {
                    s.mq.observe_ok.fetch_add(1, Relaxed);
                } else {
                    s.mq.observe_err.fetch_add(1, Relaxed);
                    s.err(&format!("observe {}", String::from_utf8_lossy(code)));
                }
            }
            b"ack" => {
                s.mq.ack.fetch_add(1, Relaxed);
            }
            b"" => {
                s.mq.other.fetch_add(1, Relaxed);
            }
            // The answer to a command that was no command: only the garbage flood sends those.
            b"error" => {
                s.mq.hostile_answers.fetch_add(1, Relaxed);
            }
            _ => {
                // A command's answer (or its coap_timeout/coap_reset).
                let req_id = find(&self.req_id, p).and_then(|i| uint(&p[i..]));
                if req_id.is_some_and(|k| k >= crate::hostile::HOSTILE_REQ_ID) {
                    s.mq.hostile_answers.fetch_add(1, Relaxed);
                    return;
                }
                if let Some(k) = req_id {
                    let t0 = s.cmd_sent_at[k as usize % RING].load(Relaxed);
                    if t0 > 0 && t0 <= now {
                        record(&s.h_command, now - t0);
                    }
                }
                if code.starts_with(b"2.") {
                    s.mq.cmd_ok.fetch_add(1, Relaxed);
                } else {
                    s.mq.cmd_err.fetch_add(1, Relaxed);
                    s.err(&format!(
                        "{} {}",
                        String::from_utf8_lossy(mt),
                        String::from_utf8_lossy(code)
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_gateway_messages() {
        let s = Stats::new(100);
        let mut h = Handler::new("lt1-".into(), 100, "/3303/0/5700", s.clone(), None);
        assert_eq!(h.device(b"lwm2m/lt1-42/up/notify"), Some(42));
        assert_eq!(h.device(b"lwm2m/xlt1-42/up/notify"), None);
        assert_eq!(h.device(b"lwm2m/lt1-420/up/notify"), None);
        let ts = now_ns().max(1);
        std::thread::sleep(Duration::from_millis(2));
        let p = format!(
            "{{\"msgType\":\"notify\",\"seqNum\":2,\"data\":{{\"reqPath\":\"/3303/0\",\"code\":\"2.05\",\"codeMsg\":\"content\",\"content\":[{{\"path\":\"/3303/0/5700\",\"value\":{ts}.0}},{{\"path\":\"/3303/0/5701\",\"value\":\"Cel\"}}]}}}}"
        );
        h.on_publish(b"lwm2m/lt1-1/up/notify", p.as_bytes());
        assert_eq!(s.mq.notify.load(Relaxed), 1);
        assert_eq!(s.mq.notify_no_ts.load(Relaxed), 0);
        assert!(s.h_notify.lock().max() >= 2_000_000);
        h.on_publish(
            b"lwm2m/lt1-1/up/resp",
            br#"{"reqID":7,"msgType":"read","data":{"reqPath":"/3/0/9","code":"4.04","codeMsg":"not_found"}}"#,
        );
        assert_eq!(s.mq.cmd_err.load(Relaxed), 1);
        assert_eq!(s.errors.lock().get("read 4.04"), Some(&1));
        h.on_publish(
            b"lwm2m/lt1-3/up/resp",
            br#"{"msgType":"register","data":{"ep":"lt1-3","lt":300}}"#,
        );
        assert_eq!(s.mq.register_ev.load(Relaxed), 1);
    }
}
