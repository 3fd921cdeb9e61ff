//! `lwm2m-loadtest`: drives a running gateway with simulated LwM2M devices and measures it end to
//! end through the MQTT broker.
//!
//! Scenario implemented so far: `register`, a storm of N registrations from a few sockets with a
//! bounded window of outstanding requests per sender, CoAP retransmission on timeout, and an MQTT
//! subscriber that waits for every `register` event. It reports registrations per second and
//! latency percentiles (hdrhistogram) both for the CoAP 2.01 and for the MQTT event, and the
//! gateway's CPU time per registration when `--gateway-pid` is given. The full fleet harness
//! (notify, command, mixed, baseline) is tracked by its own issue.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[derive(Parser, Debug)]
#[command(name = "lwm2m-loadtest", about = "Load generator for lwm2m-gateway")]
struct Args {
    /// Scenario to run (only `register` so far).
    #[arg(value_parser = ["register"])]
    scenario: String,
    /// Gateway CoAP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    gateway: SocketAddr,
    /// MQTT broker the gateway publishes to.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Topic filter carrying the gateway's register events.
    #[arg(long, default_value = "lwm2m/+/up/resp")]
    mqtt_topic: String,
    /// Number of devices.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    devices: usize,
    /// Sender threads, one UDP socket each.
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Outstanding registrations per sender.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Endpoint name prefix (a fresh one per run avoids re-registrations).
    #[arg(long)]
    prefix: Option<String>,
    /// Lifetime each device registers with.
    #[arg(long, default_value_t = 86400)]
    lifetime: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Gateway process id, to report its CPU time per registration (from /proc).
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Allow a gateway or broker outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_remote: bool,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(), "p50_us": us(0.5), "p90_us": us(0.9),
        "p99_us": us(0.99), "p999_us": us(0.999), "max_us": h.max() as f64 / 1000.0,
    })
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for addr in [a.gateway, a.mqtt] {
        if !addr.ip().is_loopback() && !a.allow_remote {
            bail!("{addr} is not a loopback address; pass --allow-remote to load a remote gateway");
        }
    }
    let prefix = a
        .prefix
        .clone()
        .unwrap_or_else(|| format!("lt{}-", std::process::id()));
    let n = a.devices;
    let start = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let seen_events = Arc::new(AtomicUsize::new(0));

    // MQTT side first, so no event is missed.
    let mut opts = MqttOptions::new(
        format!("loadtest-{}", std::process::id()),
        a.mqtt.ip().to_string(),
        a.mqtt.port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 10_000);
    let (sub_tx, sub_rx) = crossbeam_channel::bounded(1);
    let event_hist = Arc::new(parking_lot::Mutex::new(Histogram::<u64>::new(3)?));
    {
        let (client, topic, prefix, sent_at, seen, hist) = (
            client.clone(),
            a.mqtt_topic.clone(),
            prefix.clone(),
            sent_at.clone(),
            seen_events.clone(),
            event_hist.clone(),
        );
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = start.elapsed().as_nanos() as u64;
                        // Cheap match: `"ep":"<prefix><i>"` inside a register event.
                        let s = String::from_utf8_lossy(&p.payload);
                        if !s.contains("\"msgType\":\"register\"") {
                            continue;
                        }
                        let Some(i) = s.find(&format!("\"ep\":\"{prefix}")).and_then(|at| {
                            let rest = &s[at + 6 + prefix.len()..];
                            rest[..rest.find('"')?].parse::<usize>().ok()
                        }) else {
                            continue;
                        };
                        if let Some(t) = sent_at.get(i) {
                            let t0 = t.load(Ordering::Relaxed);
                            let _ = hist.lock().record(now.saturating_sub(t0).max(1));
                        }
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("mqtt: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
    }
    sub_rx
        .recv_timeout(Duration::from_secs(10))
        .context("MQTT subscription not acknowledged")?;

    let cpu0 = a.gateway_pid.and_then(cpu_ticks);
    let t_start = Instant::now();
    let deadline = t_start + Duration::from_secs(a.timeout);
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..a.senders {
        let (next, sent_at, prefix, a_gw, window, lifetime) = (
            next.clone(),
            sent_at.clone(),
            prefix.clone(),
            a.gateway,
            a.window,
            a.lifetime,
        );
        handles.push(std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, u64, u64, u64)> {
            let sock = UdpSocket::bind(if a_gw.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" })?;
            sock.set_read_timeout(Some(Duration::from_millis(5)))?;
            let mut hist = Histogram::<u64>::new(3)?;
            // outstanding: device index -> (first send, last send, attempts, datagram)
            let mut outstanding: std::collections::HashMap<u32, (Instant, Instant, u32, Vec<u8>)> = Default::default();
            let (mut ok, mut rejected, mut retransmits, mut mid) = (0u64, 0u64, 0u64, 0u16);
            let mut buf = [0u8; 1500];
            loop {
                while outstanding.len() < window {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sent_at.len() {
                        break;
                    }
                    let mut b = Vec::with_capacity(64);
                    let ep = format!("ep={prefix}{i}");
                    let lt = format!("lt={lifetime}");
                    mid = mid.wrapping_add(1);
                    MessageBuilder::new(&mut b, MsgType::Con, code::POST, mid, &(i as u32).to_be_bytes())
                        .option(opt::URI_PATH, b"rd")
                        .uint_option(opt::CONTENT_FORMAT, 40)
                        .options(opt::URI_QUERY, [ep.as_bytes(), lt.as_bytes(), b"lwm2m=1.1", b"b=U"])
                        .payload(b"</>;rt=\"oma.lwm2m\";ct=\"60 110 112 11542\",</1/0>,</3/0>,</4/0>,</3303/0>");
                    let now = Instant::now();
                    sent_at[i].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    sock.send_to(&b, a_gw)?;
                    outstanding.insert(i as u32, (now, now, 0, b));
                }
                if outstanding.is_empty() || Instant::now() > deadline {
                    break;
                }
                match sock.recv_from(&mut buf) {
                    Ok((len, _)) => {
                        let Ok(v) = MessageView::parse(&buf[..len]) else { continue };
                        let Ok(tok) = <[u8; 4]>::try_from(v.token()) else { continue };
                        let i = u32::from_be_bytes(tok);
                        if let Some((t0, _, _, _)) = outstanding.remove(&i) {
                            let _ = hist.record((t0.elapsed().as_nanos() as u64).max(1));
                            if v.code() == code::CREATED {
                                ok += 1;
                            } else {
                                rejected += 1;
                            }
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => return Err(e.into()),
                }
                // RFC 7252 retransmission: 2 s, doubling, at most 4 times.
                let now = Instant::now();
                let mut give_up = Vec::new();
                for (i, (_, last, attempts, b)) in outstanding.iter_mut() {
                    if now.duration_since(*last) >= Duration::from_secs(2u64 << *attempts) {
                        if *attempts == 4 {
                            give_up.push(*i);
                            continue;
                        }
                        *attempts += 1;
                        *last = now;
                        retransmits += 1;
                        sock.send_to(b, a_gw)?;
                    }
                }
                for i in give_up {
                    outstanding.remove(&i);
                }
            }
            Ok((hist, ok, rejected, retransmits))
        }));
    }
    let mut coap_hist = Histogram::<u64>::new(3)?;
    let (mut ok, mut rejected, mut retransmits) = (0, 0, 0);
    for h in handles {
        let (hist, o, r, rt) = h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        coap_hist.add(&hist)?;
        ok += o;
        rejected += r;
        retransmits += rt;
    }
    let coap_done = t_start.elapsed();
    while seen_events.load(Ordering::Relaxed) < ok as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let all_done = t_start.elapsed();
    let cpu1 = a.gateway_pid.and_then(cpu_ticks);
    let events = seen_events.load(Ordering::Relaxed);
    let ev_hist = event_hist.lock().clone();
    let cpu_us_per_reg = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) if ok > 0 => Some((c1 - c0) as f64 * 1e6 / 100.0 / ok as f64),
        _ => None,
    };
    let result = serde_json::json!({
        "scenario": "register",
        "devices": n,
        "senders": a.senders,
        "window": a.window,
        "registered": ok,
        "rejected": rejected,
        "lost": n as u64 - ok - rejected,
        "retransmits": retransmits,
        "mqtt_events": events,
        "coap_seconds": coap_done.as_secs_f64(),
        "end_to_end_seconds": all_done.as_secs_f64(),
        "registrations_per_s": ok as f64 / coap_done.as_secs_f64(),
        "end_to_end_per_s": events as f64 / all_done.as_secs_f64(),
        "coap_latency": percentiles(&coap_hist),
        "mqtt_event_latency": percentiles(&ev_hist),
        "gateway_cpu_us_per_registration": cpu_us_per_reg,
    });
    let l = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!(
        "register storm: {n} devices, {} senders x window {}",
        a.senders, a.window
    );
    println!(
        "  2.01 received      {ok} (rejected {rejected}, lost {}, retransmits {retransmits})",
        n as u64 - ok - rejected
    );
    println!("  MQTT events seen   {events}");
    println!(
        "  CoAP rate          {:.0} registrations/s over {:.3} s",
        ok as f64 / coap_done.as_secs_f64(),
        coap_done.as_secs_f64()
    );
    println!(
        "  end-to-end rate    {:.0} registrations/s over {:.3} s (until the last MQTT event)",
        events as f64 / all_done.as_secs_f64(),
        all_done.as_secs_f64()
    );
    println!("  latency (ms)       p50      p90      p99      p99.9    max");
    println!(
        "    2.01             {:<8.3} {:<8.3} {:<8.3} {:<8.3} {:.3}",
        l(&coap_hist, 0.5),
        l(&coap_hist, 0.9),
        l(&coap_hist, 0.99),
        l(&coap_hist, 0.999),
        coap_hist.max() as f64 / 1e6
    );
    println!(
        "    MQTT event       {:<8.3} {:<8.3} {:<8.3} {:<8.3} {:.3}",
        l(&ev_hist, 0.5),
        l(&ev_hist, 0.9),
        l(&ev_hist, 0.99),
        l(&ev_hist, 0.999),
        ev_hist.max() as f64 / 1e6
    );
    if let Some(c) = cpu_us_per_reg {
        println!("  gateway CPU        {c:.1} us per registration");
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}
