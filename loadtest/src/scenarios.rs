//! The scenario drivers.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::ValueEnum;
use crossbeam_channel::{Receiver, Sender};
use rumqttc::Client;
use serde_json::json;

use crate::fleet::{ts_resource, Ctl, Fleet, FleetConfig};
use crate::hostile::{Hostile, HostileConfig};
use crate::mqtt::{self, qos, SubConfig};
use crate::net::{self, Pktinfo, Sockets, Transport};
use crate::plot;
use crate::stats::{
    hist, latency_header, latency_row, now_ns, percentiles, CpuWindow, Progress, Report, Sample,
    Stats, RING,
};
use crate::{Args, ObserveMode, Scenario, TransportKind};

struct Ctx {
    a: Args,
    s: Arc<Stats>,
    prefix: String,
    deadline: Instant,
    ts_path: String,
}

impl Ctx {
    fn n(&self) -> usize {
        self.a.devices
    }
    fn topic(&self, dev: usize) -> String {
        self.a
            .command_topic
            .replace("%e", &format!("{}{dev}", self.prefix))
    }
}

/// The garbage flood beside the measured phase, when asked for (`--garbage`, `--mqtt-garbage`).
fn start_hostile(c: &Ctx) -> anyhow::Result<Option<Hostile>> {
    let a = &c.a;
    if a.garbage == 0 && a.mqtt_garbage == 0 {
        return Ok(None);
    }
    let cfg = HostileConfig {
        datagrams: a.garbage,
        rate: a.garbage_rate,
        sources: a.garbage_sources,
        gateway: a.device_target(),
        mqtt_messages: a.mqtt_garbage,
        mqtt_rate: a.mqtt_garbage_rate,
        mqtt: a.mqtt,
        command_topic: a.command_topic.clone(),
        prefix: c.prefix.clone(),
        devices: c.n(),
        gateway_pid: a.gateway_pid,
    };
    Ok(Some(Hostile::start(cfg, c.s.clone())?))
}

/// Devices whose registration ended: 2.01, refused, lost, or (DTLS) never got a session.
fn registrations_resolved(s: &Stats) -> u64 {
    s.dev.reg_ok.load(Relaxed)
        + s.dev.reg_rejected.load(Relaxed)
        + s.dev.reg_lost.load(Relaxed)
        + s.dev.hs_failed.load(Relaxed)
        + s.dev.hs_timeout.load(Relaxed)
}

/// With `--dtls`: handshakes (counts, rate from the first ClientHello to the last session
/// established, latency), in the text report and as `dtls` in the JSON. `in_table`: the
/// latency is left for the caller's latency table (see [`dtls_latency_row`]), else it gets a
/// line of its own.
fn dtls_section(c: &Ctx, r: &mut Report, in_table: bool) {
    if !c.a.dtls {
        return;
    }
    let s = &*c.s;
    let started = s.dev.hs_started.load(Relaxed);
    let ok = s.dev.hs_ok.load(Relaxed);
    let failed = s.dev.hs_failed.load(Relaxed);
    let timeout = s.dev.hs_timeout.load(Relaxed);
    let retx = s.dev.hs_retransmits.load(Relaxed);
    let (first, last) = (s.hs_first_at.load(Relaxed), s.hs_last_at.load(Relaxed));
    let span_s = (last > first).then(|| (last - first) as f64 / 1e9);
    let per_s = span_s.map(|t| ok as f64 / t);
    let h = s.h_handshake.lock().clone();
    r.set(
        "dtls",
        json!({
            "suite": c.a.dtls_suite.name(),
            "gateway": c.a.dtls_gateway.to_string(),
            "handshakes_started": started,
            "handshakes_completed": ok,
            "handshake_failures": failed + timeout,
            "handshake_alerts": failed,
            "handshake_timeouts": timeout,
            "handshake_retransmits": retx,
            "handshake_seconds": span_s,
            "handshakes_per_s": per_s,
            "handshake_latency": percentiles(&h),
            "no_session_drops": s.dev.dtls_no_session.load(Relaxed),
        }),
    );
    r.set("handshakes_per_s", json!(per_s));
    r.line(format!(
        "  DTLS handshakes    {ok} established of {started} (failed {failed}, timed out {timeout}, flights resent {retx}){}",
        match (per_s, span_s) {
            (Some(p), Some(t)) => format!(", {p:.0}/s over {t:.3} s (first ClientHello -> last established)"),
            _ => String::new(),
        }
    ));
    if !in_table && !h.is_empty() {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
        r.line(format!(
            "  handshake latency  p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1e6
        ));
    }
    let drops = s.dev.dtls_no_session.load(Relaxed);
    if drops > 0 {
        r.line(format!(
            "  DTLS no session    {drops} CoAP messages dropped (the device had no session)"
        ));
    }
}

/// The DTLS handshake row of a latency table (nothing without `--dtls`).
fn dtls_latency_row(c: &Ctx, r: &mut Report) {
    if c.a.dtls {
        r.line(latency_row("DTLS handshake", &c.s.h_handshake.lock()));
    }
}

/// Waits (polling every 2 ms) until `cond` holds or `until` passes; returns whether it held.
fn wait_until(until: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `/3303/0/5700` -> itself; `/3303/0` -> `/3303/0/5700`; `/3/0` -> `/3/0/13`.
fn ts_path(observe_path: &str) -> String {
    let p = observe_path.trim_end_matches('/');
    let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    let obj = segs.first().and_then(|s| s.parse::<u16>().ok());
    match (segs.len(), obj.and_then(ts_resource)) {
        (1, Some(r)) => format!("/{}/0/{r}", segs[0]),
        (2, Some(r)) => format!("/{}/{}/{r}", segs[0], segs[1]),
        _ => format!("/{}", segs.join("/")),
    }
}

fn observe_name(o: ObserveMode) -> &'static str {
    match o {
        ObserveMode::Mqtt => "mqtt commands",
        ObserveMode::Auto => "gateway auto-observe",
        ObserveMode::None => "none",
    }
}

struct FleetHandle {
    ctl: Vec<Sender<Ctl>>,
    joins: Vec<JoinHandle<()>>,
    mode: String,
}

impl FleetHandle {
    fn send(&self, f: impl Fn() -> Ctl) {
        for c in &self.ctl {
            let _ = c.send(f());
        }
    }
    fn stop(self) {
        self.send(|| Ctl::Stop);
        for j in self.joins {
            let _ = j.join();
        }
    }
}

fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        1024
    }
}

fn start_fleet(c: &Ctx) -> anyhow::Result<FleetHandle> {
    let a = &c.a;
    let n = c.n();
    let target = a.device_target();
    let pktinfo_ok = |why: &mut String| -> bool {
        if !target.is_ipv4() || !target.ip().is_loopback() {
            *why = "the gateway is not on IPv4 loopback".into();
            return false;
        }
        if n > net::MAX_PKTINFO_DEVICES {
            *why = format!("more than {} devices", net::MAX_PKTINFO_DEVICES);
            return false;
        }
        match Pktinfo::new(target, 0, 1 << 16).and_then(|mut p| p.probe(n as u32 - 1)) {
            Ok(()) => true,
            Err(e) => {
                *why = format!("IP_PKTINFO probe failed: {e}");
                false
            }
        }
    };
    let mut why = String::new();
    let use_pktinfo = match a.transport {
        TransportKind::Sockets => false,
        TransportKind::Pktinfo => {
            if !pktinfo_ok(&mut why) {
                bail!("--transport pktinfo: {why}");
            }
            true
        }
        TransportKind::Auto => pktinfo_ok(&mut why),
    };
    if !use_pktinfo {
        let limit = nofile_limit();
        if n as u64 + 200 > limit {
            bail!(
                "one socket per device needs {n} descriptors but the open-files limit is {limit} \
                 ({why}); lower --devices or raise `ulimit -n`"
            );
        }
        if a.transport == TransportKind::Auto {
            eprintln!("NOTE: {why}; falling back to one UDP socket per device ({n} sockets)");
        }
    }
    let threads = a.io_threads.min(n as u32).max(1);
    let mut ctl = Vec::new();
    let mut joins = Vec::new();
    let mut ports = Vec::new();
    for t in 0..threads {
        let cfg = FleetConfig {
            n: n as u32,
            threads,
            thread: t,
            prefix: c.prefix.clone(),
            lifetime: a.lifetime,
            con: a.con,
            window: a.window,
            stats: c.s.clone(),
            dtls: a.dtls.then(|| a.dtls_suite.suite()),
        };
        let (tx, rx): (Sender<Ctl>, Receiver<Ctl>) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<String, String>>(1);
        let (gw, port, buf) = (
            target,
            if a.port == 0 { 0 } else { a.port + t as u16 },
            a.socket_buffer,
        );
        let j = std::thread::Builder::new()
            .name(format!("devices-{t}"))
            .spawn(move || {
                let tr: Result<(Box<dyn Transport>, String), std::io::Error> = if use_pktinfo {
                    Pktinfo::new(gw, port, buf).map(|p| {
                        let port = p.local_port();
                        (Box::new(p) as Box<dyn Transport>, format!("0.0.0.0:{port}"))
                    })
                } else {
                    Sockets::new(gw, cfg.n, cfg.threads, cfg.thread, buf)
                        .map(|s| (Box::new(s) as Box<dyn Transport>, String::new()))
                };
                match tr {
                    Ok((tr, desc)) => {
                        let _ = ready_tx.send(Ok(desc));
                        Fleet::new(cfg).run(tr, rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(desc)) => ports.push(desc),
            Ok(Err(e)) => bail!("device transport: {e}"),
            Err(_) => bail!("device thread died"),
        }
        ctl.push(tx);
        joins.push(j);
    }
    let mut mode = if use_pktinfo {
        format!(
            "IP_PKTINFO, {threads} socket(s) on {} sending from 127.1.0.0..{}",
            ports.join(", "),
            net::device_ip(n as u32 - 1)
        )
    } else {
        format!("one socket per device ({n} sockets, {threads} thread(s))")
    };
    if a.dtls {
        mode.push_str(&format!(
            "; DTLS 1.2 PSK ({}) to {}",
            a.dtls_suite.name(),
            a.dtls_gateway
        ));
    }
    Ok(FleetHandle { ctl, joins, mode })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let prefix = a.endpoint_prefix();
    let s = Stats::new(a.devices);
    let c = Ctx {
        deadline: Instant::now() + Duration::from_secs(a.timeout),
        ts_path: ts_path(&a.observe_path),
        a,
        s,
        prefix,
    };
    let progress = Progress::start(c.s.clone(), c.a.gateway_pid, c.a.plot.is_some());
    let mut report = match c.a.scenario() {
        Scenario::Register => register(&c)?,
        Scenario::Notify => notify(&c)?,
        Scenario::Command => command(&c)?,
        Scenario::Mixed => mixed(&c)?,
        Scenario::Baseline => baseline(&c)?,
    };
    let samples = progress.finish();
    if let Some(path) = &c.a.plot {
        write_plot(&c, path, &samples)?;
        report.line(format!("  plot written to {}", path.display()));
        report.set("plot", path.display().to_string());
    }
    report.finish(c.a.json.as_deref())
}

fn write_plot(c: &Ctx, path: &std::path::Path, samples: &[Sample]) -> anyhow::Result<()> {
    let a = &c.a;
    let scenario = a.scenario();
    let name = scenario
        .to_possible_value()
        .map_or_else(|| format!("{scenario:?}"), |v| v.get_name().to_string());
    let mut title = format!("lwm2m-loadtest {name}: {} devices", a.devices);
    if a.dtls {
        title.push_str(", DTLS PSK");
    }
    if a.rate > 0.0 {
        title.push_str(&format!(", rate {}/s", a.rate));
    }
    if scenario != Scenario::Register {
        title.push_str(&format!(", {} s", a.duration));
    }
    let phases: Vec<(f64, &str)> =
        c.s.phases
            .lock()
            .iter()
            .map(|&(ns, p)| (ns as f64 / 1e9, p))
            .collect();
    std::fs::write(path, plot::svg(&title, samples, &phases))
        .with_context(|| format!("writing the plot to {}", path.display()))
}

fn subscribe(c: &Ctx, reg_events: Option<Sender<u32>>) -> anyhow::Result<()> {
    mqtt::subscriber(
        SubConfig {
            broker: c.a.mqtt,
            topic: c.a.mqtt_topic.clone(),
            qos: c.a.qos,
            prefix: c.prefix.clone(),
            n: c.n(),
            ts_path: c.ts_path.clone(),
            reg_events,
        },
        c.s.clone(),
    )
}

fn register(c: &Ctx) -> anyhow::Result<Report> {
    let (a, s, n) = (&c.a, &*c.s, c.n() as u64);
    s.set_phase("connect");
    subscribe(c, None)?;
    let fleet = start_fleet(c)?;
    s.set_phase("register");
    let cpu = CpuWindow::start(a.gateway_pid);
    let t_start = Instant::now();
    fleet.send(|| Ctl::Register {
        upto: n as u32,
        rate: a.rate,
    });
    let resolved = || registrations_resolved(s);
    wait_until(c.deadline, || resolved() >= n);
    let coap_done = t_start.elapsed();
    let ok = s.dev.reg_ok.load(Relaxed);
    wait_until(c.deadline, || s.mq.register_ev.load(Relaxed) >= ok);
    let all_done = t_start.elapsed();
    let (cpu_json, cpu_lines) = cpu.finish(ok, "registration");
    let rejected = s.dev.reg_rejected.load(Relaxed);
    let events = s.mq.register_ev.load(Relaxed);
    let retransmits = s.dev.retransmits.load(Relaxed);
    let coap_hist = s.h_register.lock().clone();
    let ev_hist = s.h_register_event.lock().clone();
    let mut r = Report::new("register");
    r.set("devices", n);
    r.set("transport", fleet.mode.clone());
    r.set("senders", fleet.ctl.len());
    r.set("window", a.window);
    r.set("registered", ok);
    r.set("rejected", rejected);
    r.set("lost", n - ok - rejected);
    r.set("retransmits", retransmits);
    r.set("mqtt_events", events);
    r.set("coap_seconds", coap_done.as_secs_f64());
    r.set("end_to_end_seconds", all_done.as_secs_f64());
    r.set("registrations_per_s", ok as f64 / coap_done.as_secs_f64());
    r.set("end_to_end_per_s", events as f64 / all_done.as_secs_f64());
    r.set("coap_latency", percentiles(&coap_hist));
    r.set("mqtt_event_latency", percentiles(&ev_hist));
    r.set(
        "gateway_cpu_us_per_registration",
        cpu_json
            .get("gateway_cpu_us_per_registration")
            .cloned()
            .unwrap_or_default(),
    );
    let rss = |k: &str| cpu_json.get(k).and_then(|v| v.as_u64());
    let per_dev = match (rss("gateway_rss_kb_start"), rss("gateway_rss_kb_end")) {
        (Some(a0), Some(a1)) if ok > 0 => Some((a1 as f64 - a0 as f64) * 1024.0 / ok as f64),
        _ => None,
    };
    r.set("gateway_rss_bytes_per_device", json!(per_dev));
    let rss_start = rss("gateway_rss_kb_start");
    r.merge(cpu_json);
    r.line(format!(
        "register storm: {n} devices, {} sender(s) x window {}, rate {}",
        fleet.ctl.len(),
        a.window,
        if a.rate > 0.0 {
            format!("{}/s", a.rate)
        } else {
            "max".into()
        }
    ));
    r.line(format!("  transport          {}", fleet.mode));
    r.line(format!(
        "  2.01 received      {ok} (rejected {rejected}, lost {}, retransmits {retransmits})",
        n - ok - rejected
    ));
    r.line(format!("  MQTT events seen   {events}"));
    dtls_section(c, &mut r, true);
    r.line(format!(
        "  CoAP rate          {:.0} registrations/s over {:.3} s",
        ok as f64 / coap_done.as_secs_f64(),
        coap_done.as_secs_f64()
    ));
    r.line(format!(
        "  end-to-end rate    {:.0} registrations/s over {:.3} s (until the last MQTT event)",
        events as f64 / all_done.as_secs_f64(),
        all_done.as_secs_f64()
    ));
    r.line(latency_header());
    r.line(latency_row("2.01", &coap_hist));
    r.line(latency_row("MQTT event", &ev_hist));
    dtls_latency_row(c, &mut r);
    for l in cpu_lines {
        r.line(l);
    }
    if let Some(b) = per_dev {
        r.line(format!(
            "  gateway RSS growth {:.0} bytes per registered device",
            b
        ));
    }
    // Idle memory: the storm's transient state (CoAP duplicate-detection entries kept for
    // EXCHANGE_LIFETIME, queues) is gone after a while; what stays is the per-device cost.
    if a.settle > 0.0 {
        if let (Some(pid), Some(a0)) = (a.gateway_pid, rss_start) {
            s.set_phase("idle");
            let until = (Instant::now() + Duration::from_secs_f64(a.settle)).min(c.deadline);
            wait_until(until, || false);
            if let Some(p) = crate::stats::proc_sample(&pid.to_string()) {
                let idle = (p.rss_kb as f64 - a0 as f64) * 1024.0 / ok.max(1) as f64;
                r.set("gateway_rss_bytes_per_device_idle", json!(idle));
                r.set("idle_seconds", a.settle);
                r.line(format!(
                    "  gateway RSS idle   {idle:.0} bytes per registered device after {:.0} s idle (RSS {} MiB)",
                    a.settle,
                    p.rss_kb / 1024
                ));
            }
        }
    }
    finish_fleet(c, fleet, &mut r);
    r.errors(s);
    Ok(r)
}

/// Deregisters (when asked) and stops the device threads.
fn finish_fleet(c: &Ctx, fleet: FleetHandle, r: &mut Report) {
    let s = &*c.s;
    if c.a.deregister_at_end() {
        s.set_phase("deregister");
        let t = Instant::now();
        let before = s.dev.dereg_ok.load(Relaxed) + s.dev.dereg_err.load(Relaxed);
        let sent_before = s.dev.dereg_sent.load(Relaxed);
        fleet.send(|| Ctl::DeregisterAll);
        // Every Registered device gets one DELETE; wait for the counts to settle.
        let until = (Instant::now() + Duration::from_secs(15))
            .min(c.deadline.max(Instant::now() + Duration::from_secs(2)));
        let mut last = (before, Instant::now(), sent_before);
        wait_until(until, || {
            let done = s.dev.dereg_ok.load(Relaxed) + s.dev.dereg_err.load(Relaxed);
            let sent = s.dev.dereg_sent.load(Relaxed);
            if done != last.0 {
                last = (done, Instant::now(), last.2);
            }
            // Not settled before the device threads started (they may still be working off
            // a saturated notification phase): the DELETEs must have gone out first.
            if sent != last.2 {
                last = (done, Instant::now(), sent);
            }
            (sent > sent_before && done >= sent && last.1.elapsed() > Duration::from_millis(300))
                || last.1.elapsed() > Duration::from_secs(3)
        });
        let ok = s.dev.dereg_ok.load(Relaxed) + s.dev.dereg_err.load(Relaxed) - before;
        let closed = s.dev.dtls_closed.load(Relaxed);
        r.line(format!(
            "  deregistered       {ok} at the end in {:.2} s{}",
            t.elapsed().as_secs_f64(),
            if c.a.dtls {
                format!(" (DTLS sessions closed {closed})")
            } else {
                String::new()
            }
        ));
        r.set("deregistered", ok);
        if c.a.dtls {
            r.set("dtls_sessions_closed", closed);
        }
    }
    fleet.stop();
}

/// Registers every device (and observes them when asked) before a measured phase. Returns the
/// receiver of register events for scenarios that keep observing re-registered devices.
fn setup(
    c: &Ctx,
    fleet: &FleetHandle,
    observe: ObserveMode,
    publ: Option<&Client>,
    events: &Receiver<u32>,
) -> anyhow::Result<f64> {
    let (a, s, n) = (&c.a, &*c.s, c.n() as u64);
    let t = Instant::now();
    s.set_phase("setup");
    fleet.send(|| Ctl::Register {
        upto: n as u32,
        rate: a.register_rate,
    });
    let mut observed_sent = 0u64;
    let mut last_progress = (0u64, Instant::now());
    loop {
        let reg_done = registrations_resolved(s) >= n;
        let ok = s.dev.reg_ok.load(Relaxed);
        let ev = s.mq.register_ev.load(Relaxed);
        let answered = s.mq.observe_ok.load(Relaxed) + s.mq.observe_err.load(Relaxed);
        if observe == ObserveMode::Mqtt {
            let publ = publ.expect("publisher");
            while observed_sent < answered + a.window as u64 {
                let Ok(dev) = events.try_recv() else { break };
                observe_cmd(c, publ, dev as usize);
                observed_sent += 1;
            }
        }
        let done = match observe {
            ObserveMode::None => reg_done && ev >= ok,
            _ => reg_done && ev >= ok && answered >= ok,
        };
        if done {
            break;
        }
        let progress = ok + ev + answered;
        if progress != last_progress.0 {
            last_progress = (progress, Instant::now());
        }
        if Instant::now() >= c.deadline {
            eprintln!("WARNING: setup did not finish before --timeout");
            break;
        }
        if reg_done && last_progress.1.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "WARNING: setup stalled ({ok} registered, {ev} register events, {answered} observe answers){}",
                if observe == ObserveMode::Auto { "; is the gateway started with --auto-observe covering --observe-path?" } else { "" }
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(t.elapsed().as_secs_f64())
}

fn observe_cmd(c: &Ctx, publ: &Client, dev: usize) {
    let payload = format!(
        "{{\"reqID\":{dev},\"msgType\":\"observe\",\"data\":{{\"path\":\"{}\"}}}}",
        c.a.observe_path
    );
    if publ
        .publish(c.topic(dev), qos(c.a.qos), false, payload)
        .is_err()
    {
        c.s.err("publish observe failed");
    }
    c.s.drv.observe_sent.fetch_add(1, Relaxed);
}

/// Sleeps until `until`, feeding observe commands for re-registered devices meanwhile.
fn pump_until(
    c: &Ctx,
    until: Instant,
    publ: Option<&Client>,
    events: &Receiver<u32>,
    mut tick: impl FnMut(),
) {
    while Instant::now() < until.min(c.deadline) {
        if let Some(p) = publ {
            while let Ok(dev) = events.try_recv() {
                observe_cmd(c, p, dev as usize);
            }
        }
        tick();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn notif_section(c: &Ctx, r: &mut Report, sent: u64, window_s: f64) {
    let s = &*c.s;
    let recv = s.mq.notify.load(Relaxed);
    let no_ts = s.mq.notify_no_ts.load(Relaxed);
    let h = s.h_notify.lock().clone();
    let delivered = if sent > 0 {
        recv as f64 * 100.0 / sent as f64
    } else {
        0.0
    };
    r.set("notifications_sent", sent);
    r.set("notifications_received", recv);
    r.set("notifications_without_timestamp", no_ts);
    r.set("delivered_percent", delivered);
    r.set("notifications_lost", sent.saturating_sub(recv));
    r.set("sent_per_s", sent as f64 / window_s);
    r.set("received_per_s", recv as f64 / window_s);
    r.set("notify_latency", percentiles(&h));
    r.set("con_acked", s.dev.notif_acked.load(Relaxed));
    r.set("con_rst", s.dev.notif_rst.load(Relaxed));
    r.set("con_timeouts", s.dev.notif_lost.load(Relaxed));
    r.set("skipped_no_observation", s.dev.notif_skipped.load(Relaxed));
    r.line(format!(
        "  notifications      sent {sent} ({:.0}/s), received {recv} ({:.0}/s), delivered {delivered:.2}%, lost {}",
        sent as f64 / window_s,
        recv as f64 / window_s,
        sent.saturating_sub(recv)
    ));
    if no_ts > 0 {
        r.line(format!(
            "  without timestamp  {no_ts} (latency not measured)"
        ));
    }
    if c.a.con {
        r.line(format!(
            "  CON                acked {}, RST {}, timed out {}, retransmits {}",
            s.dev.notif_acked.load(Relaxed),
            s.dev.notif_rst.load(Relaxed),
            s.dev.notif_lost.load(Relaxed),
            s.dev.retransmits.load(Relaxed)
        ));
    }
    let skipped = s.dev.notif_skipped.load(Relaxed);
    if skipped > 0 {
        r.line(format!(
            "  skipped            {skipped} (no observed device)"
        ));
    }
    r.line(latency_header());
    r.line(latency_row("notify e2e", &h));
}

fn notify(c: &Ctx) -> anyhow::Result<Report> {
    let (a, s, n) = (&c.a, &*c.s, c.n() as u64);
    s.set_phase("connect");
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let mqtt_observe = a.observe == ObserveMode::Mqtt;
    subscribe(c, mqtt_observe.then_some(ev_tx))?;
    let publ = if mqtt_observe {
        Some(mqtt::publisher(a.mqtt, a.mqtt_inflight, c.s.clone())?)
    } else {
        None
    };
    if a.observe == ObserveMode::None {
        bail!("notify needs observations: --observe mqtt or auto");
    }
    let fleet = start_fleet(c)?;
    let setup_s = setup(c, &fleet, a.observe, publ.as_ref(), &ev_rx)?;
    let observed = s.dev.observed_devices.load(Relaxed);
    // The measured phase starts clean.
    *s.h_notify.lock() = hist();
    let recv0 = s.mq.notify.load(Relaxed);
    let rate = if a.rate > 0.0 { a.rate } else { 1e9 };
    s.set_phase("notify");
    let cpu = CpuWindow::start(a.gateway_pid);
    let hostile = start_hostile(c)?;
    let t0 = Instant::now();
    fleet.send(|| Ctl::Notify {
        rate,
        duration: Duration::from_secs_f64(a.duration),
    });
    let end = t0 + Duration::from_secs_f64(a.duration);
    pump_until(c, end + Duration::from_millis(100), None, &ev_rx, || {});
    s.set_phase("drain");
    let drain_until = (Instant::now() + Duration::from_secs_f64(a.drain)).min(c.deadline);
    wait_until(drain_until, || {
        s.mq.notify.load(Relaxed) - recv0 >= s.dev.notif_sent.load(Relaxed)
    });
    let sent = s.dev.notif_sent.load(Relaxed);
    let window_s = a.duration.max(1e-3);
    let recv = s.mq.notify.load(Relaxed) - recv0;
    let (cpu_json, cpu_lines) = cpu.finish(recv, "notification");
    let mut r = Report::new("notify");
    r.set("devices", n);
    r.set("transport", fleet.mode.clone());
    r.set("observe", observe_name(a.observe));
    r.set("observe_path", a.observe_path.clone());
    r.set("observed_devices", observed);
    r.set("setup_seconds", setup_s);
    r.set("rate", a.rate);
    r.set("duration", a.duration);
    r.set("con", a.con);
    r.line(format!(
        "notify: {n} devices ({} registered, {observed} observing {} via {}), {} {} notifications for {} s",
        s.dev.reg_ok.load(Relaxed),
        a.observe_path,
        observe_name(a.observe),
        if a.rate > 0.0 { format!("{}/s", a.rate) } else { "max".into() },
        if a.con { "CON" } else { "NON" },
        a.duration
    ));
    r.line(format!("  transport          {}", fleet.mode));
    r.line(format!(
        "  setup              {setup_s:.2} s (register + observe)"
    ));
    dtls_section(c, &mut r, false);
    if let Some(h) = hostile {
        h.finish(s, &mut r);
    }
    notif_section(c, &mut r, sent, window_s);
    r.merge(cpu_json);
    for l in cpu_lines {
        r.line(l);
    }
    finish_fleet(c, fleet, &mut r);
    r.errors(s);
    Ok(r)
}

/// Publishes paced commands until `end`; `make(k)` gives (device, payload) of command k.
fn drive_commands(
    c: &Ctx,
    publ: &Client,
    rate: f64,
    end: Instant,
    events: Option<(&Receiver<u32>, bool)>,
    mut make: impl FnMut(u64) -> (usize, String),
) -> u64 {
    let s = &*c.s;
    let t0 = Instant::now();
    let mut k = 0u64;
    let window = c.a.window as u64;
    while Instant::now() < end.min(c.deadline) {
        if let Some((ev, true)) = events {
            while let Ok(dev) = ev.try_recv() {
                observe_cmd(c, publ, dev as usize);
            }
        }
        let due = if rate > 0.0 {
            (t0.elapsed().as_secs_f64() * rate) as u64
        } else {
            // Closed loop: keep `window` commands outstanding.
            (s.mq.cmd_ok.load(Relaxed) + s.mq.cmd_err.load(Relaxed) + window).min(k + 1000)
        };
        while k < due {
            let id = s.drv.cmd_sent.load(Relaxed);
            let (dev, payload) = make(id);
            s.cmd_sent_at[id as usize % RING].store(now_ns(), Relaxed);
            if publ
                .publish(c.topic(dev), qos(c.a.qos), false, payload)
                .is_err()
            {
                s.err("publish command failed");
            }
            s.drv.cmd_sent.fetch_add(1, Relaxed);
            k += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    k
}

fn command_rows(c: &Ctx, r: &mut Report, sent: u64, window_s: f64) {
    let s = &*c.s;
    let ok = s.mq.cmd_ok.load(Relaxed);
    let err = s.mq.cmd_err.load(Relaxed);
    let h = s.h_command.lock().clone();
    r.set("commands_sent", sent);
    r.set("commands_ok", ok);
    r.set("commands_error", err);
    r.set("commands_unanswered", sent.saturating_sub(ok + err));
    r.set("commands_answered_per_s", (ok + err) as f64 / window_s);
    r.set("command_rtt", percentiles(&h));
    r.set("device_requests", s.dev.req_in.load(Relaxed));
    r.line(format!(
        "  commands           sent {sent} ({:.0}/s), answered {} ({:.0}/s): ok {ok}, error {err}, unanswered {}",
        sent as f64 / window_s,
        ok + err,
        (ok + err) as f64 / window_s,
        sent.saturating_sub(ok + err)
    ));
    r.line(format!(
        "  device requests    {} received by the devices",
        s.dev.req_in.load(Relaxed)
    ));
    r.line(latency_header());
    r.line(latency_row("command RTT", &h));
}

fn command(c: &Ctx) -> anyhow::Result<Report> {
    let (a, s, n) = (&c.a, &*c.s, c.n() as u64);
    s.set_phase("connect");
    let (_ev_tx, ev_rx) = crossbeam_channel::unbounded();
    subscribe(c, None)?;
    let publ = mqtt::publisher(a.mqtt, a.mqtt_inflight, c.s.clone())?;
    let fleet = start_fleet(c)?;
    let setup_s = setup(c, &fleet, ObserveMode::None, None, &ev_rx)?;
    s.set_phase("command");
    let cpu = CpuWindow::start(a.gateway_pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.duration);
    let path = a.command_path.clone();
    let sent = drive_commands(c, &publ, a.rate, end, None, |k| {
        let dev = (k % n) as usize;
        (
            dev,
            format!("{{\"reqID\":{k},\"msgType\":\"read\",\"data\":{{\"path\":\"{path}\"}}}}"),
        )
    });
    let send_s = t0.elapsed().as_secs_f64();
    s.set_phase("drain");
    let drain_until = (Instant::now() + Duration::from_secs_f64(a.drain)).min(c.deadline);
    wait_until(drain_until, || {
        s.mq.cmd_ok.load(Relaxed) + s.mq.cmd_err.load(Relaxed) >= sent
    });
    let answered = s.mq.cmd_ok.load(Relaxed) + s.mq.cmd_err.load(Relaxed);
    let (cpu_json, cpu_lines) = cpu.finish(answered, "command");
    let mut r = Report::new("command");
    r.set("devices", n);
    r.set("transport", fleet.mode.clone());
    r.set("setup_seconds", setup_s);
    r.set("rate", a.rate);
    r.set("duration", a.duration);
    r.set("command_path", a.command_path.clone());
    r.line(format!(
        "command: {n} devices ({} registered), read {} at {} for {} s",
        s.dev.reg_ok.load(Relaxed),
        a.command_path,
        if a.rate > 0.0 {
            format!("{}/s", a.rate)
        } else {
            format!("max ({} outstanding)", a.window)
        },
        a.duration
    ));
    r.line(format!("  transport          {}", fleet.mode));
    r.line(format!("  setup              {setup_s:.2} s (register)"));
    dtls_section(c, &mut r, false);
    command_rows(c, &mut r, sent, send_s.max(1e-3));
    r.merge(cpu_json);
    for l in cpu_lines {
        r.line(l);
    }
    finish_fleet(c, fleet, &mut r);
    r.errors(s);
    Ok(r)
}

fn mixed(c: &Ctx) -> anyhow::Result<Report> {
    let (a, s, n) = (&c.a, &*c.s, c.n() as u64);
    s.set_phase("connect");
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let mqtt_observe = a.observe == ObserveMode::Mqtt;
    subscribe(c, mqtt_observe.then_some(ev_tx))?;
    let publ = mqtt::publisher(a.mqtt, a.mqtt_inflight, c.s.clone())?;
    let fleet = start_fleet(c)?;
    let setup_s = setup(c, &fleet, a.observe, Some(&publ), &ev_rx)?;
    *s.h_notify.lock() = hist();
    *s.h_register.lock() = hist();
    *s.h_register_event.lock() = hist();
    let base = (
        s.dev.reg_ok.load(Relaxed),
        s.mq.register_ev.load(Relaxed),
        s.mq.notify.load(Relaxed),
        s.mq.observe_ok.load(Relaxed),
    );
    s.set_phase("mixed");
    let cpu = CpuWindow::start(a.gateway_pid);
    let hostile = start_hostile(c)?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.duration);
    if a.observe != ObserveMode::None && a.rate > 0.0 {
        fleet.send(|| Ctl::Notify {
            rate: a.rate,
            duration: Duration::from_secs_f64(a.duration),
        });
    }
    fleet.send(|| Ctl::Churn { rate: a.churn });
    let path = a.command_path.clone();
    let sent = if a.command_rate > 0.0 {
        drive_commands(
            c,
            &publ,
            a.command_rate,
            end,
            Some((&ev_rx, mqtt_observe)),
            |k| {
                let dev = ((k.wrapping_mul(2_654_435_761)) % n) as usize;
                let p = match k % 10 {
                0..=5 => format!("{{\"reqID\":{k},\"msgType\":\"read\",\"data\":{{\"path\":\"{path}\"}}}}"),
                6 | 7 => format!(
                    "{{\"reqID\":{k},\"msgType\":\"write\",\"data\":{{\"path\":\"/3/0/13\",\"type\":\"Integer\",\"value\":{k}}}}}"
                ),
                8 => format!("{{\"reqID\":{k},\"msgType\":\"execute\",\"data\":{{\"path\":\"/3/0/4\"}}}}"),
                _ => format!("{{\"reqID\":{k},\"msgType\":\"discover\",\"data\":{{\"path\":\"/3/0\"}}}}"),
            };
                (dev, p)
            },
        )
    } else {
        pump_until(c, end, mqtt_observe.then_some(&publ), &ev_rx, || {});
        0
    };
    fleet.send(|| Ctl::Churn { rate: 0.0 });
    pump_until(
        c,
        Instant::now() + Duration::from_millis(100),
        None,
        &ev_rx,
        || {},
    );
    s.set_phase("drain");
    let drain_until = (Instant::now() + Duration::from_secs_f64(a.drain)).min(c.deadline);
    wait_until(drain_until, || {
        s.mq.notify.load(Relaxed) - base.2 >= s.dev.notif_sent.load(Relaxed)
            && s.mq.cmd_ok.load(Relaxed) + s.mq.cmd_err.load(Relaxed) >= sent
            && s.mq.register_ev.load(Relaxed) >= s.dev.reg_ok.load(Relaxed)
    });
    let notif_sent = s.dev.notif_sent.load(Relaxed);
    let handled = s.dev.reg_ok.load(Relaxed) - base.0
        + s.dev.upd_ok.load(Relaxed)
        + s.dev.dereg_ok.load(Relaxed)
        + s.mq.notify.load(Relaxed)
        - base.2
        + s.mq.cmd_ok.load(Relaxed)
        + s.mq.cmd_err.load(Relaxed);
    let (cpu_json, cpu_lines) = cpu.finish(handled, "message");
    let window_s = a.duration.max(1e-3);
    let mut r = Report::new("mixed");
    r.set("devices", n);
    r.set("transport", fleet.mode.clone());
    r.set("setup_seconds", setup_s);
    r.set("duration", a.duration);
    r.set("lifetime", a.lifetime);
    r.line(format!(
        "mixed: {n} devices for {} s: notifications {}/s ({} observe of {}), commands {}/s, churn {}/s, lifetime {} s",
        a.duration, a.rate, observe_name(a.observe), a.observe_path, a.command_rate, a.churn, a.lifetime
    ));
    r.line(format!("  transport          {}", fleet.mode));
    r.line(format!(
        "  setup              {setup_s:.2} s ({} registered)",
        base.0
    ));
    dtls_section(c, &mut r, false);
    let rereg = s.dev.reg_ok.load(Relaxed) - base.0;
    let rereg_ev = s.mq.register_ev.load(Relaxed) - base.1;
    r.set("reregistrations", rereg);
    r.set("reregister_events", rereg_ev);
    r.set("updates_ok", s.dev.upd_ok.load(Relaxed));
    r.set("updates_error", s.dev.upd_err.load(Relaxed));
    r.set("update_events", s.mq.update_ev.load(Relaxed));
    r.set("deregistrations_ok", s.dev.dereg_ok.load(Relaxed));
    r.set("deregister_events", s.mq.deregister_ev.load(Relaxed));
    r.set("observe_answers", s.mq.observe_ok.load(Relaxed) - base.3);
    r.set("register_latency", percentiles(&s.h_register.lock()));
    r.set(
        "register_event_latency",
        percentiles(&s.h_register_event.lock()),
    );
    r.set("update_latency", percentiles(&s.h_update.lock()));
    r.line(format!(
        "  churn              {} deregistered ({} events), {rereg} registered again ({rereg_ev} events), {} re-observed",
        s.dev.dereg_ok.load(Relaxed),
        s.mq.deregister_ev.load(Relaxed),
        s.mq.observe_ok.load(Relaxed) - base.3
    ));
    r.line(format!(
        "  updates            {} ok, {} errors, {} update events",
        s.dev.upd_ok.load(Relaxed),
        s.dev.upd_err.load(Relaxed),
        s.mq.update_ev.load(Relaxed)
    ));
    let recv = s.mq.notify.load(Relaxed) - base.2;
    let h = s.h_notify.lock().clone();
    r.set("notifications_sent", notif_sent);
    r.set("notifications_received", recv);
    r.set("notify_latency", percentiles(&h));
    r.line(format!(
        "  notifications      sent {notif_sent} ({:.0}/s), received {recv}, delivered {:.2}%",
        notif_sent as f64 / window_s,
        if notif_sent > 0 {
            recv as f64 * 100.0 / notif_sent as f64
        } else {
            0.0
        }
    ));
    if let Some(hs) = hostile {
        hs.finish(s, &mut r);
    }
    command_rows(c, &mut r, sent, window_s);
    r.line(latency_row("notify e2e", &h));
    r.line(latency_row("register 2.01", &s.h_register.lock()));
    r.line(latency_row("register event", &s.h_register_event.lock()));
    r.line(latency_row("update 2.04", &s.h_update.lock()));
    r.merge(cpu_json);
    for l in cpu_lines {
        r.line(l);
    }
    finish_fleet(c, fleet, &mut r);
    r.errors(s);
    Ok(r)
}

fn baseline(c: &Ctx) -> anyhow::Result<Report> {
    let (a, s, n) = (&c.a, &*c.s, c.n() as u64);
    s.set_phase("connect");
    subscribe(c, None)?;
    let publ = mqtt::publisher(a.mqtt, a.mqtt_inflight, c.s.clone())?;
    s.set_phase("baseline");
    let cpu = CpuWindow::start(a.gateway_pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.duration);
    let instance = c.ts_path != a.observe_path.trim_end_matches('/');
    let topics: Vec<String> = (0..n.min(100_000))
        .map(|i| format!("lwm2m/{}{i}/up/notify", c.prefix))
        .collect();
    let mut k = 0u64;
    while Instant::now() < end.min(c.deadline) {
        let due = if a.rate > 0.0 {
            (t0.elapsed().as_secs_f64() * a.rate) as u64
        } else {
            k + 256
        };
        while k < due {
            let ts = now_ns();
            let extra = if instance {
                ",{\"path\":\"/3303/0/5701\",\"value\":\"Cel\"}"
            } else {
                ""
            };
            let payload = format!(
                "{{\"reqID\":{k},\"msgType\":\"notify\",\"seqNum\":{k},\"data\":{{\"reqPath\":\"{}\",\"code\":\"2.05\",\"codeMsg\":\"content\",\"content\":[{{\"path\":\"{}\",\"value\":{ts}.0}}{extra}]}}}}",
                a.observe_path, c.ts_path
            );
            let topic = topics[(k % topics.len() as u64) as usize].clone();
            if publ.publish(topic, qos(a.qos), false, payload).is_err() {
                s.err("publish failed");
            }
            s.drv.baseline_sent.fetch_add(1, Relaxed);
            k += 1;
        }
        if a.rate > 0.0 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let send_s = t0.elapsed().as_secs_f64();
    s.set_phase("drain");
    let drain_until = (Instant::now() + Duration::from_secs_f64(a.drain)).min(c.deadline);
    wait_until(drain_until, || s.mq.notify.load(Relaxed) >= k);
    let recv = s.mq.notify.load(Relaxed);
    let all_s = t0.elapsed().as_secs_f64();
    let (cpu_json, cpu_lines) = cpu.finish(recv, "message");
    let h = s.h_notify.lock().clone();
    let mut r = Report::new("baseline");
    r.set("topics", topics.len());
    r.set("rate", a.rate);
    r.set("duration", a.duration);
    r.set("qos", a.qos);
    r.set("published", k);
    r.set("received", recv);
    r.set(
        "delivered_percent",
        if k > 0 {
            recv as f64 * 100.0 / k as f64
        } else {
            0.0
        },
    );
    r.set("published_per_s", k as f64 / send_s);
    r.set("received_per_s", recv as f64 / all_s);
    r.set("latency", percentiles(&h));
    r.line(format!(
        "baseline: broker {} only, {} topics, QoS {}, {} for {} s (same subscriber code path as notify)",
        a.mqtt,
        topics.len(),
        a.qos,
        if a.rate > 0.0 { format!("{}/s", a.rate) } else { "max".into() },
        a.duration
    ));
    r.line(format!(
        "  published          {k} ({:.0}/s over {send_s:.2} s)",
        k as f64 / send_s
    ));
    r.line(format!(
        "  received           {recv} ({:.0}/s until the end of the drain, {all_s:.2} s), delivered {:.2}%",
        recv as f64 / all_s,
        if k > 0 { recv as f64 * 100.0 / k as f64 } else { 0.0 }
    ));
    r.line(latency_header());
    r.line(latency_row("publish->recv", &h));
    r.merge(cpu_json);
    for l in cpu_lines {
        r.line(l);
    }
    r.errors(s);
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_paths() {
        assert_eq!(super::ts_path("/3303/0/5700"), "/3303/0/5700");
        assert_eq!(super::ts_path("/3303/0"), "/3303/0/5700");
        assert_eq!(super::ts_path("/3/0/"), "/3/0/13");
        assert_eq!(super::ts_path("3/0/9"), "/3/0/9");
    }
}
