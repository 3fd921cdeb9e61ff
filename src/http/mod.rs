//! The operations surface over HTTP (issue 13): the JSON API, `/metrics`, `/events` and the web
//! page, on a listener of its own (`http.listen`, loopback by default). An I/O shell like
//! `runtime`: everything it knows about devices it asks the workers through
//! [`Ops`](crate::runtime::ops::Ops), and it never touches a shard.
//!
//! Threads: `http-N` (`http.threads` of them) take requests from tiny_http's queue and answer
//! them one at a time (a command waits for its device, up to `http.command_timeout`); each event
//! stream gets a thread of its own (`http-events`), at most `http.max_event_streams`.
//!
//! Access (`access`): every request but `/health`, `/` and the page's assets needs the bearer
//! token when one is configured (the configuration refuses an address off loopback without
//! one); CORS headers only with `http.cors_origin`. Files: `api` (devices, commands, objects,
//! credentials), `sse` (event streams), `prometheus` (metrics), `ui` (the page), `request`
//! (the small HTTP vocabulary they share).

mod access;
mod api;
mod prometheus;
mod request;
mod sse;
mod ui;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::anyhow;
use log::{debug, warn};

use crate::config::HttpConfig;
use crate::core::topics::Topics;
use crate::lwm2m::model::ObjectRegistry;
use crate::runtime::ops::Ops;
use crate::runtime::Metrics;

pub use request::{Reply, Req};

/// What the handlers work with.
pub struct Context {
    pub ops: Arc<Ops>,
    pub metrics: Arc<Metrics>,
    pub model: Arc<ObjectRegistry>,
    pub topics: Topics,
    pub token: Option<String>,
    pub cors_origin: Option<String>,
    pub command_timeout: Duration,
    pub max_streams: usize,
    /// Event streams open now.
    pub streams: AtomicUsize,
    /// Set when the gateway stops: `/ready` says no, event streams end.
    pub stopping: Arc<AtomicBool>,
    pub prometheus: prometheus::Exporter,
}

impl Context {
    pub fn new(
        cfg: &HttpConfig,
        ops: Arc<Ops>,
        metrics: Arc<Metrics>,
        model: Arc<ObjectRegistry>,
        topics: Topics,
    ) -> Context {
        Context {
            ops,
            metrics,
            model,
            topics,
            token: cfg.token.clone(),
            cors_origin: cfg.cors_origin.clone(),
            command_timeout: cfg.command_timeout,
            max_streams: cfg.max_event_streams,
            streams: AtomicUsize::new(0),
            stopping: Arc::new(AtomicBool::new(false)),
            prometheus: prometheus::Exporter::default(),
        }
    }
}

/// The running HTTP listener.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    ctx: Arc<Context>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and starts `threads` request threads.
    pub fn start(addr: SocketAddr, threads: usize, ctx: Context) -> anyhow::Result<HttpServer> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow!("cannot listen for HTTP on {addr}: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("the HTTP listener has no IP address"))?;
        let server = Arc::new(server);
        let ctx = Arc::new(ctx);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (server, ctx) = (server.clone(), ctx.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("http-{i}"))
                    .spawn(move || serve(&server, &ctx))?,
            );
        }
        Ok(HttpServer {
            server,
            addr,
            ctx,
            threads: handles,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests; event streams end at their next wake-up.
    pub fn shutdown(self) {
        self.ctx.stopping.store(true, Ordering::Relaxed);
        // One unblock wakes one thread waiting for a request.
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, ctx: &Arc<Context>) {
    while let Ok(rq) = server.recv() {
        if ctx.stopping.load(Ordering::Relaxed) {
            let _ = rq.respond(tiny_http::Response::empty(503));
            break;
        }
        handle(ctx, rq);
    }
}

/// Reads one request, answers it (or hands it to an event stream's thread).
fn handle(ctx: &Arc<Context>, mut rq: tiny_http::Request) {
    let req = match Req::read(&mut rq) {
        Ok(r) => r,
        Err(reply) => return send(ctx, rq, reply),
    };
    debug!("HTTP {} {}", req.method, req.path);
    if let Err(reply) = access::check(ctx, &req) {
        return send(ctx, rq, reply);
    }
    if req.method == "OPTIONS" {
        return send(ctx, rq, access::preflight(ctx));
    }
    let segs: Vec<&str> = req.segments();
    let reply = match (req.method.as_str(), segs.as_slice()) {
        ("GET", []) => ui::page(),
        ("GET", ["ui", file]) => ui::asset(file),
        ("GET", ["health"]) => Reply::json(200, &serde_json::json!({"status": "ok"})),
        ("GET", ["ready"]) => ready(ctx),
        ("GET", ["metrics"]) => prometheus::scrape(ctx),
        ("GET", ["events"]) => {
            return sse::open(ctx, rq, &req);
        }
        (_, ["api", "v5", "gateways", "lwm2m", rest @ ..]) => api::route(ctx, &req, rest),
        _ => Reply::error(404, "NOT_FOUND", "no such route"),
    };
    send(ctx, rq, reply);
}

/// `/ready`: the broker connection is up (subscribed) and the gateway is not stopping.
fn ready(ctx: &Context) -> Reply {
    let mqtt = ctx.metrics.mqtt_subscribed.load(Ordering::Relaxed);
    let listeners = !ctx.stopping.load(Ordering::Relaxed);
    let ok = mqtt && listeners;
    Reply::json(
        if ok { 200 } else { 503 },
        &serde_json::json!({"ready": ok, "mqtt": mqtt, "listeners": listeners}),
    )
}

fn send(ctx: &Context, rq: tiny_http::Request, reply: Reply) {
    let reply = access::with_cors(ctx, reply);
    if let Err(e) = rq.respond(reply.into_response()) {
        // The client went away: nothing to do.
        debug!("HTTP answer not sent: {e}");
    }
}

/// Warns once that the HTTP API is open to the network without TLS (the token travels in
/// clear); the configuration made sure it has a token.
pub fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        warn!("the HTTP API listens on {addr}, off loopback, without TLS: put it behind a TLS proxy or a private network (the bearer token travels in clear)");
    }
}
