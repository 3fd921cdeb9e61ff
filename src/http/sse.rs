//! `GET /events`: server-sent events, one per message the gateway publishes (registrations,
//! updates, deregistrations, notifications, command answers), optionally only those of one
//! endpoint (`?endpoint=`). Each event is one unnamed `data:` line:
//! `{"endpoint","topic","msgType","message"}`, `message` being the MQTT JSON.
//!
//! Each stream has a thread of its own (at most `http.max_event_streams`), writing straight to
//! the connection (no chunked encoding to buffer events), a `: keep-alive` comment every 15 s,
//! and `: lost N events` when it fell behind: its queue (4,096 events) is bounded and the
//! workers never wait for it. A stream ends when its client goes away or the gateway stops.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use log::debug;
use serde_json::{json, Value};

use super::{access, Context, Reply, Req};

const ROOM: usize = 4096;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn open(ctx: &Arc<Context>, rq: tiny_http::Request, req: &Req) {
    let open = ctx.streams.fetch_add(1, Ordering::Relaxed);
    if open >= ctx.max_streams {
        ctx.streams.fetch_sub(1, Ordering::Relaxed);
        let r = Reply::error(
            503,
            "UNAVAILABLE",
            "too many event streams (http.max_event_streams)",
        );
        let _ = rq.respond(access::with_cors(ctx, r).into_response());
        return;
    }
    let filter = req
        .param("endpoint")
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    let ctx2 = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("http-events".into())
        .spawn(move || {
            stream(&ctx2, rq, filter);
            ctx2.streams.fetch_sub(1, Ordering::Relaxed);
        });
    if spawned.is_err() {
        ctx.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

fn stream(ctx: &Context, rq: tiny_http::Request, filter: Option<String>) {
    let sub = ctx.ops.events().subscribe(ROOM);
    let mut w = rq.into_writer();
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n",
    );
    if let Some(o) = &ctx.cors_origin {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str("\r\n: events of lwm2m-gateway\n\n");
    if w.write_all(head.as_bytes())
        .and_then(|()| w.flush())
        .is_err()
    {
        return;
    }
    let mut lost_told = 0;
    let mut quiet_since = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    while !ctx.stopping.load(Ordering::Relaxed) {
        buf.clear();
        match sub.rx.recv_timeout(Duration::from_secs(1)) {
            Ok(ev) => {
                // Whatever else is waiting goes in the same write.
                for ev in std::iter::once(ev).chain(sub.rx.try_iter().take(256)) {
                    let Some(endpoint) = ctx.topics.endpoint_of_uplink(&ev.topic) else {
                        continue;
                    };
                    if filter.as_deref().is_some_and(|f| f != endpoint) {
                        continue;
                    }
                    let message: Value = serde_json::from_slice(&ev.payload).unwrap_or(Value::Null);
                    let msg_type = message.get("msgType").cloned().unwrap_or(Value::Null);
                    let data = json!({
                        "endpoint": endpoint,
                        "topic": ev.topic,
                        "msgType": msg_type,
                        "message": message,
                    });
                    buf.extend_from_slice(b"data: ");
                    buf.extend_from_slice(data.to_string().as_bytes());
                    buf.extend_from_slice(b"\n\n");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let lost = sub.lost.load(Ordering::Relaxed);
        if lost > lost_told {
            buf.extend_from_slice(format!(": lost {} events\n\n", lost - lost_told).as_bytes());
            lost_told = lost;
        }
        if buf.is_empty() {
            if quiet_since.elapsed() < KEEP_ALIVE {
                continue;
            }
            buf.extend_from_slice(b": keep-alive\n\n");
        }
        quiet_since = Instant::now();
        if w.write_all(&buf).and_then(|()| w.flush()).is_err() {
            debug!("event stream closed by its client");
            return;
        }
    }
}
