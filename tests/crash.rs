//! The gateway process restarted on its state directory (issue 12), on loopback with Mosquitto:
//! 10,000 registered and observing devices survive SIGTERM and a restart (0 re-registrations,
//! every observation still published, queued commands delivered); after `kill -9` in the middle
//! of a load the state is as of the last journal write and nothing is corrupted.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_gateway::coap::{code, MessageView};
use serde_json::{json, Value};
use support::*;

fn state_dir(tag: &str) -> PathGuard {
    let dir = std::env::temp_dir().join(format!(
        "gw-crash-{tag}-{}-{}",
        std::process::id(),
        rand_u16()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    PathGuard(dir)
}

/// Devices sending in windows of this many, so that no socket buffer overflows.
const WINDOW: usize = 500;

struct Fleet {
    devices: Vec<Device>,
    locations: Vec<String>,
    tokens: Vec<Vec<u8>>,
    queue_mode: Vec<bool>,
}

fn ep(i: usize) -> String {
    format!("dev-{i:05}")
}

fn code_of(b: &[u8]) -> u8 {
    MessageView::parse(b).unwrap().code()
}

impl Fleet {
    /// `n` devices registered with `lt=600`; those `queue_mode` picks in queue mode.
    fn register(gw: std::net::SocketAddr, n: usize, queue_mode: impl Fn(usize) -> bool) -> Fleet {
        let devices: Vec<Device> = (0..n).map(|_| Device::new(gw)).collect();
        let mut locations = Vec::with_capacity(n);
        for (w, chunk) in devices.chunks(WINDOW).enumerate() {
            for (k, d) in chunk.iter().enumerate() {
                let i = w * WINDOW + k;
                let q = format!("ep={}", ep(i));
                let b = if queue_mode(i) { "b=UQ" } else { "b=U" };
                let reg = Msg::con(code::POST, 1)
                    .token(&[1])
                    .path(&["rd"])
                    .query(&[&q, "lt=600", "lwm2m=1.1", b])
                    .payload(b"</1/0>,</3/0>");
                d.send(&reg.build());
            }
            for d in chunk {
                let answer = d.recv();
                assert_eq!(code_of(&answer), code::CREATED);
                locations.push(location_id(&answer).unwrap());
            }
        }
        Fleet {
            devices,
            locations,
            tokens: Vec::new(),
            queue_mode: (0..n).map(queue_mode).collect(),
        }
    }

    /// Observes /3/0/9 on every device (reqID = its number, `tag` = its endpoint).
    fn observe_all(&mut self, obs: &Observer) {
        for (w, chunk) in self.devices.chunks(WINDOW).enumerate() {
            // Queue-mode devices registered a while ago are asleep: awake, they take the
            // command at once.
            for i in (w * WINDOW..w * WINDOW + chunk.len()).filter(|i| self.queue_mode[*i]) {
                self.wake(i);
            }
            for k in 0..chunk.len() {
                let i = w * WINDOW + k;
                obs.command(
                    &ep(i),
                    json!({"reqID": i, "msgType": "observe", "data": {"path": "/3/0/9"}, "tag": ep(i)}),
                );
            }
            for (k, d) in chunk.iter().enumerate() {
                let req = self.request_for(w * WINDOW + k, d);
                self.tokens
                    .push(MessageView::parse(&req).unwrap().token().to_vec());
                d.send(&observe_answer(&req, 1, b"90"));
            }
        }
        let answered = collect(obs, "observe", self.devices.len(), |v| v["reqID"].clone());
        assert_eq!(answered.len(), self.devices.len());
        // A wake's 2.04 may have come after the request it was not needed for.
        std::thread::sleep(Duration::from_millis(200));
        for (i, d) in self
            .devices
            .iter()
            .enumerate()
            .filter(|(i, _)| self.queue_mode[*i])
        {
            while let Some(b) = d.try_recv(Duration::from_millis(1)) {
                let m = MessageView::parse(&b).unwrap();
                assert_eq!(
                    m.code(),
                    code::CHANGED,
                    "only Update answers left for {}",
                    ep(i)
                );
            }
        }
    }

    /// Wakes queue-mode device `i` with an Update (its answer is skipped by
    /// [`Fleet::request_for`]).
    fn wake(&self, i: usize) {
        let mid = 4000 + (i % 1000) as u16;
        let update = Msg::con(code::POST, mid).path(&["rd", &self.locations[i]]);
        self.devices[i].send(&update.build());
    }

    /// The next request the gateway sends device `i`, past the answers to its Updates. A
    /// queue-mode device may have fallen asleep again before its command reached the gateway
    /// (its window is short and a loaded machine slow): then the command waits for its next
    /// Update, which this sends.
    fn request_for(&self, i: usize, d: &Device) -> Vec<u8> {
        loop {
            let b = if self.queue_mode[i] {
                match d.try_recv(Duration::from_millis(1500)) {
                    Some(b) => b,
                    None => {
                        self.wake(i);
                        continue;
                    }
                }
            } else {
                d.recv()
            };
            let m = MessageView::parse(&b).unwrap();
            if code::is_response(m.code()) {
                assert_eq!(m.code(), code::CHANGED, "Update of {}", ep(i));
                continue;
            }
            return b;
        }
    }

    /// Every device `pick` chooses sends a notification on its observation's token; returns
    /// how many.
    fn notify(&self, pick: impl Fn(usize) -> bool, seq: u32) -> usize {
        let mut n = 0;
        for (i, (d, t)) in self.devices.iter().zip(&self.tokens).enumerate() {
            if pick(i) {
                d.send(&notification(t, 7000 + (i % 1000) as u16, seq, b"77"));
                n += 1;
                if n % WINDOW == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        n
    }
}

/// The `key`s of the next `n` messages of `kind` (distinct).
fn collect(
    obs: &Observer,
    kind: &str,
    n: usize,
    key: impl Fn(&Value) -> Value,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let (_, v) = obs.next_of(kind);
        seen.insert(key(&v).to_string());
    }
    seen
}

/// Update from every device: each must be 2.04. Returns the datagrams that came after the
/// 2.04 (queued commands of waking devices), by device.
fn update_all(fleet: &Fleet) -> Vec<Vec<Vec<u8>>> {
    let mut after = vec![Vec::new(); fleet.devices.len()];
    for (w, chunk) in fleet.devices.chunks(WINDOW).enumerate() {
        for (k, d) in chunk.iter().enumerate() {
            let loc = &fleet.locations[w * WINDOW + k];
            d.send(&Msg::con(code::POST, 900).path(&["rd", loc]).build());
        }
        for (k, d) in chunk.iter().enumerate() {
            loop {
                let b = d.recv();
                let m = MessageView::parse(&b).unwrap();
                if m.message_id() == 900 && code::is_response(m.code()) {
                    assert_eq!(m.code(), code::CHANGED, "Update of {}", ep(w * WINDOW + k));
                    break;
                }
                after[w * WINDOW + k].push(b);
            }
        }
    }
    after
}

#[test]
fn ten_thousand_observing_devices_survive_a_restart_of_the_gateway_process() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    const N: usize = 10_000;
    let sleepy = |i: usize| i % 100 == 0;
    let dir = state_dir("10k");
    let udp = free_udp_addr();
    let flags = [
        "--workers",
        "2",
        "--state-snapshot-interval",
        "0",
        "--qmode-time-window",
        "1",
    ];
    let obs = Observer::connect(broker.addr, &[UPLINK]);
    let gw = GatewayProcess::start(udp, broker.addr, &dir.0, &flags);
    obs.next_of("restarted");
    let mut fleet = Fleet::register(udp, N, sleepy);
    fleet.observe_all(&obs);
    // The queue-mode devices fall asleep; a read waits for each.
    std::thread::sleep(Duration::from_millis(1500));
    let queued: Vec<usize> = (0..N).filter(|i| sleepy(*i)).collect();
    for &i in &queued {
        obs.command(
            &ep(i),
            json!({"reqID": 100_000 + i, "msgType": "read", "data": {"path": "/3/0/0"}}),
        );
    }
    // A read of an awake device after them: once it is answered, the gateway has handed every
    // command before it to the workers (in order), and a stop handles what they hold.
    obs.command(
        &ep(1),
        json!({"reqID": 99_999, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let probe = fleet.devices[1].recv();
    fleet.devices[1].send(&answer(&probe, code::CONTENT, Some(0), b"Acme"));
    assert_eq!(obs.next_of("read").1["reqID"], 99_999);
    for &i in &queued {
        assert!(
            fleet.devices[i]
                .try_recv(Duration::from_millis(1))
                .is_none(),
            "asleep"
        );
    }
    let status = gw.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}");

    let _gw = GatewayProcess::start(udp, broker.addr, &dir.0, &flags);
    let (_, restarted) = obs.next_of("restarted");
    let d = &restarted["data"];
    assert_eq!(
        (
            d["registrations"].clone(),
            d["observations"].clone(),
            d["queued"].clone(),
            d["graceful"].clone()
        ),
        (json!(N), json!(N), json!(queued.len()), json!(true)),
        "{restarted}"
    );
    // Every observation is still published, with its original echo.
    assert_eq!(fleet.notify(|_| true, 2), N);
    let notified = collect(&obs, "notify", N, |v| {
        assert_eq!(v["tag"], ep(v["reqID"].as_u64().unwrap() as usize));
        v["reqID"].clone()
    });
    assert_eq!(notified.len(), N);
    // Every Update is 2.04; the sleeping devices get their queued read after it.
    let after = update_all(&fleet);
    for &i in &queued {
        let req = after[i]
            .first()
            .cloned()
            .unwrap_or_else(|| fleet.devices[i].recv());
        assert_eq!(path_of(&req), ["3", "0", "0"], "{}", ep(i));
        fleet.devices[i].send(&answer(&req, code::CONTENT, Some(0), b"Acme"));
    }
    let answered = collect(&obs, "read", queued.len(), |v| v["reqID"].clone());
    let expected: BTreeSet<String> = queued.iter().map(|i| (100_000 + i).to_string()).collect();
    assert_eq!(answered, expected);
    // 0 re-registrations: no register event since the restart.
    assert!(obs
        .try_next_of("register", Duration::from_millis(300))
        .is_none());
}

/// Bytes in the journals of `dir`.
fn journal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".journal"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn after_kill_9_in_the_middle_of_a_load_the_state_is_as_of_the_last_journal_write() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    const N: usize = 500;
    let dir = state_dir("kill9");
    let udp = free_udp_addr();
    let flags = [
        "--workers",
        "2",
        "--state-snapshot-interval",
        "0",
        "--state-journal-interval",
        "0.05",
    ];
    let obs = Observer::connect(broker.addr, &[UPLINK]);
    let gw = GatewayProcess::start(udp, broker.addr, &dir.0, &flags);
    obs.next_of("restarted");
    let mut fleet = Fleet::register(udp, N, |_| false);
    fleet.observe_all(&obs);
    // The durable point: the journals stop growing once every change is written.
    let mut last = (journal_bytes(&dir.0), Instant::now());
    wait_until("the journals never settled", || {
        let now = journal_bytes(&dir.0);
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(500)
    });

    // The load: notifications from the fleet and new registrations, until the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut late = Vec::new();
            let mut seq = 2;
            while !stop.load(Ordering::Relaxed) && late.len() < 2000 {
                fleet.notify(|i| i % 10 == seq as usize % 10, seq);
                seq += 1;
                let d = Device::new(udp);
                let q = format!("ep=late-{}", late.len());
                let reg = Msg::con(code::POST, 1)
                    .path(&["rd"])
                    .query(&[&q, "lt=600"])
                    .payload(b"</3/0>");
                d.send(&reg.build());
                late.push(d);
            }
            (fleet, late)
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    gw.kill();
    stop.store(true, Ordering::Relaxed);
    let (fleet, late) = load.join().unwrap();

    let _gw = GatewayProcess::start(udp, broker.addr, &dir.0, &flags);
    let (_, restarted) = obs.next_of("restarted");
    let d = &restarted["data"];
    assert_eq!(d["graceful"], json!(false), "{restarted}");
    assert_eq!(d["unusable"], json!(0), "nothing corrupted: {restarted}");
    assert_eq!(d["observations"], json!(N), "{restarted}");
    let restored = d["registrations"].as_u64().unwrap() as usize;
    assert!(
        (N..=N + late.len()).contains(&restored),
        "{restored} of {N} + {} late",
        late.len()
    );
    // No file was refused.
    for e in std::fs::read_dir(&dir.0).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        assert!(!name.contains(".bad-"), "{name} set aside");
    }
    // Everything durable before the load carries on: Updates 2.04, observations published.
    for dev in &fleet.devices {
        while dev.try_recv(Duration::from_millis(1)).is_some() {}
    }
    update_all(&fleet);
    fleet.notify(|_| true, 1_000_000);
    let notified = collect(&obs, "notify", N, |v| v["reqID"].clone());
    assert_eq!(notified.len(), N);
    // A late device is restored whole or not at all: its Update is 2.04 or 4.04 (the late
    // ones learnt their location from a 2.01 that may have come before the kill).
    let mut back = 0;
    let mut given = BTreeSet::new();
    for dev in &late {
        let Some(created) = dev.try_recv(Duration::from_millis(1)) else {
            continue;
        };
        let Some(loc) = location_id(&created) else {
            continue;
        };
        given.insert(loc.clone());
        dev.send(&Msg::con(code::POST, 901).path(&["rd", &loc]).build());
        let c = code_of(&dev.recv());
        assert!(c == code::CHANGED || c == code::NOT_FOUND, "{c}");
        back += usize::from(c == code::CHANGED);
    }
    // Each 2.04 is a late device's own registration (restored), never one given out again.
    assert!(
        back <= restored - N,
        "{back} late devices back, {restored} restored"
    );
    for dev in (0..20).map(|_| Device::new(udp)) {
        let reg = Msg::con(code::POST, 2)
            .path(&["rd"])
            .query(&[
                &format!("ep=new-{}", dev.sock.local_addr().unwrap().port()),
                "lt=600",
            ])
            .payload(b"</3/0>");
        dev.send(&reg.build());
        let loc = location_id(&dev.recv()).unwrap();
        assert!(!given.contains(&loc), "location {loc} given out twice");
    }
}
