//! Shared counters and histograms, /proc sampling, the live progress line and report helpers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};

static START: OnceLock<Instant> = OnceLock::new();

/// The harness clock: nanoseconds since the harness started (also what notifications carry).
pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn init_clock() {
    let _ = now_ns();
}

/// Counters written by the device I/O threads.
#[derive(Default)]
#[repr(align(128))]
pub struct DevCounters {
    pub reg_sent: AtomicU64,
    pub reg_ok: AtomicU64,
    pub reg_rejected: AtomicU64,
    pub reg_lost: AtomicU64,
    pub retransmits: AtomicU64,
    pub upd_sent: AtomicU64,
    pub upd_ok: AtomicU64,
    pub upd_err: AtomicU64,
    pub dereg_sent: AtomicU64,
    pub dereg_ok: AtomicU64,
    pub dereg_err: AtomicU64,
    pub notif_sent: AtomicU64,
    pub notif_acked: AtomicU64,
    pub notif_rst: AtomicU64,
    pub notif_lost: AtomicU64,
    pub notif_skipped: AtomicU64,
    pub req_in: AtomicU64,
    pub req_observe: AtomicU64,
    pub req_cancel: AtomicU64,
    pub req_not_found: AtomicU64,
    pub observed_devices: AtomicU64,
    pub malformed: AtomicU64,
    pub unmatched: AtomicU64,
    pub send_errors: AtomicU64,
    pub send_eagain: AtomicU64,
    /// DTLS: handshakes begun (first ClientHello sent), established, ended by an alert from
    /// the gateway (or a failed check of ours), given up after the retransmissions, and
    /// flights sent again.
    pub hs_started: AtomicU64,
    pub hs_ok: AtomicU64,
    pub hs_failed: AtomicU64,
    pub hs_timeout: AtomicU64,
    pub hs_retransmits: AtomicU64,
    /// DTLS: CoAP messages a device had no session to send in (dropped).
    pub dtls_no_session: AtomicU64,
    /// DTLS: sessions closed with close_notify after the final deregistration.
    pub dtls_closed: AtomicU64,
}

/// Counters written by the MQTT subscriber thread.
#[derive(Default)]
#[repr(align(128))]
pub struct MqCounters {
    pub received: AtomicU64,
    pub register_ev: AtomicU64,
    pub update_ev: AtomicU64,
    pub deregister_ev: AtomicU64,
    pub notify: AtomicU64,
    pub notify_no_ts: AtomicU64,
    pub notify_err: AtomicU64,
    pub observe_ok: AtomicU64,
    pub observe_err: AtomicU64,
    pub cmd_ok: AtomicU64,
    pub cmd_err: AtomicU64,
    pub ack: AtomicU64,
    pub other: AtomicU64,
    pub foreign: AtomicU64,
    /// Answers to the garbage flood (`hostile`) on the fleet's own topics.
    pub hostile_answers: AtomicU64,
    pub conn_errors: AtomicU64,
}

/// Counters written by the scenario driver (MQTT publishes).
#[derive(Default)]
#[repr(align(128))]
pub struct DrvCounters {
    pub cmd_sent: AtomicU64,
    pub observe_sent: AtomicU64,
    pub baseline_sent: AtomicU64,
    pub publish_errors: AtomicU64,
}

pub const RING: usize = 1 << 20;

pub struct Stats {
    pub dev: DevCounters,
    pub mq: MqCounters,
    pub drv: DrvCounters,
    pub hostile: crate::hostile::HostileCounters,
    pub errors: Mutex<BTreeMap<String, u64>>,
    pub h_register: Mutex<Histogram<u64>>,
    pub h_register_event: Mutex<Histogram<u64>>,
    pub h_update: Mutex<Histogram<u64>>,
    pub h_notify: Mutex<Histogram<u64>>,
    pub h_command: Mutex<Histogram<u64>>,
    /// DTLS: first ClientHello sent -> session established.
    pub h_handshake: Mutex<Histogram<u64>>,
    /// DTLS: when the first handshake of the run began and the last one was established, ns
    /// (`u64::MAX` and 0 until then).
    pub hs_first_at: AtomicU64,
    pub hs_last_at: AtomicU64,
    /// Per device: when its (latest) Register was first sent, ns; 0 = never.
    pub reg_sent_at: Vec<AtomicU64>,
    /// Per command reqID (mod RING): when it was published, ns.
    pub cmd_sent_at: Vec<AtomicU64>,
    pub phase: Mutex<&'static str>,
    /// Every phase change, for the plot: (harness clock ns, new phase).
    pub phases: Mutex<Vec<(u64, &'static str)>>,
}

pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

impl Stats {
    pub fn new(devices: usize) -> Arc<Stats> {
        Arc::new(Stats {
            dev: Default::default(),
            mq: Default::default(),
            drv: Default::default(),
            hostile: Default::default(),
            errors: Default::default(),
            h_register: Mutex::new(hist()),
            h_register_event: Mutex::new(hist()),
            h_update: Mutex::new(hist()),
            h_notify: Mutex::new(hist()),
            h_command: Mutex::new(hist()),
            h_handshake: Mutex::new(hist()),
            hs_first_at: AtomicU64::new(u64::MAX),
            hs_last_at: AtomicU64::new(0),
            reg_sent_at: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            cmd_sent_at: (0..RING).map(|_| AtomicU64::new(0)).collect(),
            phase: Mutex::new("start"),
            phases: Mutex::new(Vec::new()),
        })
    }
    pub fn err(&self, kind: &str) {
        let mut e = self.errors.lock();
        match e.get_mut(kind) {
            Some(v) => *v += 1,
            None => {
                e.insert(kind.to_string(), 1);
            }
        }
    }
    pub fn set_phase(&self, p: &'static str) {
        let mut cur = self.phase.lock();
        let mut log = self.phases.lock();
        // Bounded because a scenario could one day switch phases in a loop; the plot only has
        // room for a few dozen markers anyway.
        if *cur != p && log.len() < 1000 {
            log.push((now_ns(), p));
        }
        *cur = p;
    }
    pub fn errors_total(&self) -> u64 {
        self.errors.lock().values().sum()
    }
}

pub fn record(h: &Mutex<Histogram<u64>>, ns: u64) {
    h.lock().saturating_record(ns.max(1));
}

/// CPU ticks and resident set of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub ticks: u64,
    pub rss_kb: u64,
    pub at: Option<Instant>,
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        ticks,
        rss_kb,
        at: Some(Instant::now()),
    })
}

/// CPU ticks of each thread of `pid`, by thread name (`/proc/<pid>/task/*/{comm,stat}`).
pub fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some((comm.trim().to_string(), ticks))
        })
        .collect()
}

/// What a gateway thread does, from its name: the gateway names its threads `event-loop`,
/// `worker-N` and `mqtt`; the embedded rumqttd runs `mqtt-broker`, `router-N` and one thread per
/// listener (`v4-1`, `v5-1`).
pub fn thread_role(name: &str) -> &'static str {
    if name == "event-loop" {
        "event loop"
    } else if name.starts_with("worker-") {
        "workers"
    } else if name == "mqtt" {
        "MQTT client"
    } else if name == "mqtt-broker"
        || name.starts_with("router-")
        || name.starts_with("v4-")
        || name.starts_with("v5-")
    {
        "embedded broker"
    } else {
        "other"
    }
}

const ROLES: [&str; 5] = [
    "event loop",
    "workers",
    "MQTT client",
    "embedded broker",
    "other",
];

/// Gateway (optional) and harness CPU over a measured phase.
#[derive(Clone)]
pub struct CpuWindow {
    gw: Option<ProcSample>,
    me: Option<ProcSample>,
    gw_pid: Option<u32>,
    gw_threads: Vec<(String, u64)>,
    /// The harness's own `devices-N` threads (the simulated devices: CoAP encoding, decoding,
    /// and their sockets), apart from its MQTT and bookkeeping threads.
    dev_ticks: u64,
}

/// CPU ticks of this process's device I/O threads (`devices-N`).
fn device_thread_ticks() -> u64 {
    thread_ticks(std::process::id())
        .iter()
        .filter(|(n, _)| n.starts_with("devices-"))
        .map(|(_, t)| t)
        .sum()
}

impl CpuWindow {
    pub fn start(gw_pid: Option<u32>) -> Self {
        CpuWindow {
            gw: gw_pid.and_then(|p| proc_sample(&p.to_string())),
            me: proc_sample("self"),
            gw_pid,
            gw_threads: gw_pid.map(thread_ticks).unwrap_or_default(),
            dev_ticks: device_thread_ticks(),
        }
    }
    /// JSON and a human line; `per` = messages handled in the window, `what` names them.
    pub fn finish(&self, per: u64, what: &str) -> (Value, Vec<String>) {
        let tck = clk_tck();
        let mut j = serde_json::Map::new();
        let mut lines = Vec::new();
        let end_gw = self.gw_pid.and_then(|p| proc_sample(&p.to_string()));
        let end_me = proc_sample("self");
        let end_dev = device_thread_ticks();
        let usage = |a: ProcSample, b: ProcSample| {
            let cpu_s = (b.ticks.saturating_sub(a.ticks)) as f64 / tck;
            let wall =
                b.at.unwrap()
                    .duration_since(a.at.unwrap())
                    .as_secs_f64()
                    .max(1e-9);
            (cpu_s, cpu_s / wall * 100.0)
        };
        if let (Some(a), Some(b)) = (self.gw, end_gw) {
            let (cpu_s, pct) = usage(a, b);
            j.insert("gateway_cpu_seconds".into(), json!(cpu_s));
            j.insert("gateway_cpu_percent".into(), json!(pct));
            j.insert("gateway_rss_kb_start".into(), json!(a.rss_kb));
            j.insert("gateway_rss_kb_end".into(), json!(b.rss_kb));
            let per_msg = (per > 0).then(|| cpu_s * 1e6 / per as f64);
            j.insert(format!("gateway_cpu_us_per_{what}"), json!(per_msg));
            lines.push(format!(
                "  gateway            CPU {cpu_s:.2} s ({pct:.0}% of a core){}, RSS {} -> {} MiB",
                per_msg
                    .map(|u| format!(", {u:.1} us per {what}"))
                    .unwrap_or_default(),
                a.rss_kb / 1024,
                b.rss_kb / 1024
            ));
        }
        if let Some(pid) = self.gw_pid {
            // Per role: CPU per message and share of the gateway process's CPU, so that the
            // bottleneck has a name.
            let end = thread_ticks(pid);
            let mut by_role = [0u64; ROLES.len()];
            // Threads are matched by name (sums per name), so a thread that ended or started in
            // the window is counted approximately; the gateway's threads live as long as it does.
            let mut names: Vec<&str> = end.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                let now: u64 = end.iter().filter(|(n, _)| n == name).map(|(_, t)| t).sum();
                let then: u64 = self
                    .gw_threads
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, t)| t)
                    .sum();
                let i = ROLES
                    .iter()
                    .position(|r| *r == thread_role(name))
                    .unwrap_or(ROLES.len() - 1);
                by_role[i] += now.saturating_sub(then);
            }
            let total: u64 = by_role.iter().sum();
            if total > 0 {
                let mut parts = Vec::new();
                let mut tj = serde_json::Map::new();
                for (role, ticks) in ROLES.iter().zip(by_role) {
                    let secs = ticks as f64 / tck;
                    let share = ticks as f64 / total as f64 * 100.0;
                    let per_msg = (per > 0).then(|| secs * 1e6 / per as f64);
                    tj.insert(
                        role.to_string(),
                        json!({"cpu_seconds": secs, "share_percent": share, "us_per_message": per_msg}),
                    );
                    if ticks > 0 {
                        parts.push(match per_msg {
                            Some(u) => format!("{role} {u:.1} us ({share:.0}%)"),
                            None => format!("{role} {share:.0}%"),
                        });
                    }
                }
                j.insert("gateway_threads".into(), Value::Object(tj));
                lines.push(format!("  gateway threads    {}", parts.join(", ")));
            }
        }
        if let (Some(a), Some(b)) = (self.me, end_me) {
            let (cpu_s, pct) = usage(a, b);
            j.insert("harness_cpu_seconds".into(), json!(cpu_s));
            j.insert("harness_cpu_percent".into(), json!(pct));
            // Threads that started or ended inside the window are counted approximately (the
            // device threads live as long as the fleet).
            let dev_s = end_dev.saturating_sub(self.dev_ticks) as f64 / tck;
            j.insert("harness_device_threads_cpu_seconds".into(), json!(dev_s));
            let per_msg = (per > 0).then(|| (cpu_s * 1e6 / per as f64, dev_s * 1e6 / per as f64));
            j.insert(
                format!("harness_cpu_us_per_{what}"),
                json!(per_msg.map(|p| p.0)),
            );
            j.insert(
                format!("harness_device_threads_cpu_us_per_{what}"),
                json!(per_msg.map(|p| p.1)),
            );
            lines.push(format!(
                "  harness            CPU {cpu_s:.2} s ({pct:.0}% of a core){}, RSS {} MiB",
                per_msg
                    .map(|(all, dev)| format!(
                        ", {all:.2} us per {what} (device I/O threads {dev:.2} us)"
                    ))
                    .unwrap_or_default(),
                b.rss_kb / 1024
            ));
        }
        (Value::Object(j), lines)
    }
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": h.len(), "p50_us": us(0.5), "p90_us": us(0.9),
        "p99_us": us(0.99), "p999_us": us(0.999), "max_us": h.max() as f64 / 1000.0,
    })
}

pub fn latency_header() -> String {
    "  latency (ms)       p50      p90      p99      p99.9    max      count".to_string()
}

pub fn latency_row(name: &str, h: &Histogram<u64>) -> String {
    let l = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    if h.is_empty() {
        return format!("    {name:<16} -");
    }
    format!(
        "    {name:<16} {:<8.3} {:<8.3} {:<8.3} {:<8.3} {:<8.3} {}",
        l(0.5),
        l(0.9),
        l(0.99),
        l(0.999),
        h.max() as f64 / 1e6,
        h.len()
    )
}

/// The counters of the progress line and of the plot's throughput panel, in `snap` order:
/// (short name for the progress line, legend name).
pub const SERIES: [(&str, &str); 10] = [
    ("reg", "registered (2.01)"),
    ("reg-ev", "register events (MQTT)"),
    ("notif-tx", "notifications sent"),
    ("notif-rx", "notifications received"),
    ("cmd-tx", "commands published"),
    ("cmd-rx", "command responses"),
    ("upd", "updates (2.04)"),
    ("dereg", "deregistrations (2.02)"),
    ("obs", "observe responses"),
    ("hs", "DTLS handshakes"),
];

/// The latency histograms sampled per second, for the plot's latency panel.
pub const LATENCIES: [&str; 5] = [
    "register 2.01",
    "register event",
    "notification",
    "command",
    "DTLS handshake",
];

/// Per-second samples kept for `--plot`: past this (more than a day of samples) the rest of the
/// run is not sampled rather than the harness growing without bound.
pub const MAX_SAMPLES: usize = 100_000;

/// One progress interval, for `--plot`.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Start and end of the interval, seconds on the harness clock. (Phases are not sampled:
    /// `set_phase` logs their exact start in `Stats::phases`.)
    pub start: f64,
    pub t: f64,
    /// Per second over the interval, in `SERIES` order.
    pub rates: [f64; SERIES.len()],
    /// p50 and p99 in ms of the latencies recorded in the interval only, in `LATENCIES` order;
    /// `None` when nothing was recorded.
    pub latency: [Option<(f64, f64)>; LATENCIES.len()],
}

fn snap(s: &Stats) -> [u64; SERIES.len()] {
    [
        s.dev.reg_ok.load(Relaxed),
        s.mq.register_ev.load(Relaxed),
        s.dev.notif_sent.load(Relaxed),
        s.mq.notify.load(Relaxed),
        s.drv.cmd_sent.load(Relaxed) + s.drv.baseline_sent.load(Relaxed),
        s.mq.cmd_ok.load(Relaxed) + s.mq.cmd_err.load(Relaxed),
        s.dev.upd_ok.load(Relaxed),
        s.dev.dereg_ok.load(Relaxed),
        s.mq.observe_ok.load(Relaxed),
        s.dev.hs_ok.load(Relaxed),
    ]
}

fn latency_hists(s: &Stats) -> [&Mutex<Histogram<u64>>; LATENCIES.len()] {
    [
        &s.h_register,
        &s.h_register_event,
        &s.h_notify,
        &s.h_command,
        &s.h_handshake,
    ]
}

/// What was recorded between two clones of a cumulative histogram. Scenarios replace a
/// histogram with an empty one when a measured phase starts; the total or some bucket then goes
/// down, and everything in the current one is taken as recorded in the interval (what was
/// recorded between the previous sample and the reset is lost, which is at most one second).
pub fn interval_hist(prev: &Histogram<u64>, cur: &Histogram<u64>) -> Histogram<u64> {
    if cur.len() < prev.len() {
        return cur.clone();
    }
    let mut d = cur.clone();
    match d.subtract(prev) {
        Ok(()) => d,
        Err(_) => cur.clone(),
    }
}

/// Collects the per-second samples behind `--plot`.
struct Sampler {
    prev_t: f64,
    prev: [u64; SERIES.len()],
    hists: [Histogram<u64>; LATENCIES.len()],
    samples: Vec<Sample>,
}

impl Sampler {
    fn new(s: &Stats) -> Sampler {
        Sampler {
            prev_t: now_ns() as f64 / 1e9,
            prev: snap(s),
            hists: latency_hists(s).map(|h| h.lock().clone()),
            samples: Vec::new(),
        }
    }

    fn sample(&mut self, s: &Stats, cur: &[u64; SERIES.len()]) {
        let t = now_ns() as f64 / 1e9;
        let dt = t - self.prev_t;
        // The last, partial interval at stop can be a few ms long: its rates would be noise.
        if dt < 0.2 || self.samples.len() >= MAX_SAMPLES {
            return;
        }
        let mut rates = [0.0; SERIES.len()];
        for (i, r) in rates.iter_mut().enumerate() {
            *r = cur[i].saturating_sub(self.prev[i]) as f64 / dt;
        }
        let mut latency = [None; LATENCIES.len()];
        for (i, h) in latency_hists(s).into_iter().enumerate() {
            // The clone holds the lock for a copy of the counts (some 270 KB), not for the
            // subtraction.
            let now = h.lock().clone();
            let d = interval_hist(&self.hists[i], &now);
            if !d.is_empty() {
                let ms = |q: f64| d.value_at_quantile(q) as f64 / 1e6;
                latency[i] = Some((ms(0.5), ms(0.99)));
            }
            self.hists[i] = now;
        }
        self.samples.push(Sample {
            start: self.prev_t,
            t,
            rates,
            latency,
        });
        self.prev_t = t;
        self.prev = *cur;
    }
}

/// Prints one progress line per second on stderr until dropped or finished; with `record`, also
/// keeps a sample per second for `--plot`.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Progress {
    pub fn start(stats: Arc<Stats>, gw_pid: Option<u32>, record: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || progress_loop(&stats, gw_pid, &s2, record))
            .expect("spawn progress thread");
        Progress {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the thread; the samples (empty unless recording).
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn progress_loop(s: &Stats, gw_pid: Option<u32>, stop: &AtomicBool, record: bool) -> Vec<Sample> {
    let t0 = Instant::now();
    let tck = clk_tck();
    let mut sampler = record.then(|| Sampler::new(s));
    let mut prev = snap(s);
    let mut prev_gw = gw_pid.and_then(|p| proc_sample(&p.to_string()));
    let mut prev_me = proc_sample("self");
    let mut next = t0 + Duration::from_secs(1);
    while !stop.load(Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += Duration::from_secs(1);
        let cur = snap(s);
        if let Some(sm) = sampler.as_mut() {
            sm.sample(s, &cur);
        }
        let d = |i: usize| cur[i] - prev[i];
        let mut line = format!("[{:>4}s {:<9}]", t0.elapsed().as_secs(), *s.phase.lock());
        for (i, (name, _)) in SERIES.iter().enumerate() {
            if cur[i] > 0 {
                line.push_str(&format!(" {name} {} (+{})", cur[i], d(i)));
            }
        }
        let errs = s.errors_total();
        if errs > 0 {
            line.push_str(&format!(" errors {errs}"));
        }
        let gw = gw_pid.and_then(|p| proc_sample(&p.to_string()));
        if let (Some(a), Some(b)) = (prev_gw, gw) {
            line.push_str(&format!(
                " | gw cpu {:.0}% rss {} MiB",
                (b.ticks - a.ticks) as f64 / tck * 100.0,
                b.rss_kb / 1024
            ));
        }
        let me = proc_sample("self");
        if let (Some(a), Some(b)) = (prev_me, me) {
            line.push_str(&format!(
                " | harness cpu {:.0}%",
                (b.ticks - a.ticks) as f64 / tck * 100.0
            ));
        }
        eprintln!("{line}");
        prev = cur;
        prev_gw = gw;
        prev_me = me;
    }
    match sampler {
        Some(mut sm) => {
            // The tail since the last whole second (the end of a drain, say).
            sm.sample(s, &snap(s));
            sm.samples
        }
        None => Vec::new(),
    }
}

/// Collects the human summary (stdout) and the JSON result (`--json`).
pub struct Report {
    pub json: serde_json::Map<String, Value>,
    pub lines: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        let mut json = serde_json::Map::new();
        json.insert("scenario".into(), json!(scenario));
        Report {
            json,
            lines: Vec::new(),
        }
    }
    pub fn set(&mut self, k: &str, v: impl Into<Value>) {
        self.json.insert(k.to_string(), v.into());
    }
    pub fn line(&mut self, l: impl Into<String>) {
        self.lines.push(l.into());
    }
    pub fn merge(&mut self, v: Value) {
        if let Value::Object(m) = v {
            self.json.extend(m);
        }
    }
    pub fn errors(&mut self, s: &Stats) {
        let e = s.errors.lock().clone();
        if !e.is_empty() {
            self.line("  errors by kind");
            for (k, v) in &e {
                self.line(format!("    {k:<28} {v}"));
            }
        }
        self.set("errors", json!(e));
        // Datagrams the devices could not parse (coap-lite rejected them) or could not match to
        // a device, an exchange or a request (late ACKs after a retransmission, pings).
        let malformed = s.dev.malformed.load(Relaxed);
        let unmatched = s.dev.unmatched.load(Relaxed);
        if malformed + unmatched > 0 {
            self.line(format!(
                "  device datagrams   {malformed} malformed, {unmatched} unmatched (skipped)"
            ));
        }
        self.set("device_malformed_datagrams", malformed);
        self.set("device_unmatched_datagrams", unmatched);
    }
    pub fn finish(self, path: Option<&std::path::Path>) -> anyhow::Result<()> {
        for l in &self.lines {
            println!("{l}");
        }
        if let Some(p) = path {
            std::fs::write(p, serde_json::to_vec_pretty(&Value::Object(self.json))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_histogram_and_reset() {
        let mut h = hist();
        for v in [1_000, 2_000, 3_000] {
            h.record(v).unwrap();
        }
        let prev = h.clone();
        for v in [1_000_000, 2_000_000] {
            h.record(v).unwrap();
        }
        let d = interval_hist(&prev, &h);
        assert_eq!(d.len(), 2);
        assert!(d.min() >= 999_000);

        // Reset with fewer values since: the count went down.
        let mut r = hist();
        r.record(5_000).unwrap();
        let d = interval_hist(&h, &r);
        assert_eq!((d.len(), d.max() / 1000), (1, 5));

        // Reset and more values than before, but not in the same buckets: subtraction fails.
        let mut r = hist();
        for _ in 0..10 {
            r.record(7_000_000).unwrap();
        }
        let d = interval_hist(&h, &r);
        assert_eq!(d.len(), 10);
    }
}
