//! The durable state decoder (issue 12): `Shard::import` of a mangled image must never panic,
//! must restore at most what the image holds, and what it restored must export and import again
//! whole (a complete image, the same registrations). The restored shard is then driven a little
//! (timers, a datagram) so that restored state is exercised, not only decoded.
//!
//! Input: first byte `mode`:
//! - 0: a genuine snapshot (three devices registered, one observed, one with queued commands,
//!   see `genuine`) and its journal (a device registered, one registered again, a command
//!   queued), then mutations of the snapshot: pairs of (u16 offset, u8 xor), and a final u16
//!   cut length when `mode & 0x80`;
//! - 2: the same, mutating the journal instead;
//! - 1: a valid snapshot header followed by the rest of the input (records by the fuzzer);
//! - 3: the genuine snapshot, and a journal header followed by the rest of the input;
//! - anything else: the rest of the input as the whole snapshot.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuzz_common::{check_datagram, registry, Reader};
use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::coap::{code, opt, MessageBuilder, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::ids::ShardId;
use lwm2m_gateway::core::settings::ShardConfig;
use lwm2m_gateway::core::shard::{NoIdentities, Output, Peer, Shard, SnapshotKind};
use lwm2m_gateway::persist::wire::{FileKind, Header};

fn shard_config() -> Arc<ShardConfig> {
    static CFG: OnceLock<Arc<ShardConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let c = Config {
            workers: 1,
            lifetime_min: 10,
            lifetime_max: 100_000,
            qmode_time_window: Duration::from_secs(5),
            ..Config::default()
        };
        Arc::new(c.shard_config(registry().clone()).expect("shard config"))
    })
    .clone()
}

fn peer(port: u16) -> Peer {
    Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn register(ep: &str, binding: &str, mid: u16) -> Vec<u8> {
    let mut b = Vec::new();
    let q = format!("ep={ep}");
    MessageBuilder::new(&mut b, MsgType::Con, code::POST, mid, &[1])
        .option(opt::URI_PATH, b"rd")
        .uint_option(opt::CONTENT_FORMAT, 40)
        .options(
            opt::URI_QUERY,
            [q.as_bytes(), b"lt=300", b"lwm2m=1.1", binding.as_bytes()],
        )
        .payload(b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</3303/0>");
    b
}

/// A genuine snapshot and journal, and the registrations and observations they restore.
struct Genuine {
    snapshot: Vec<u8>,
    journal: Vec<u8>,
    registrations: usize,
    observations: usize,
}

/// An image of a shard with three devices (one observed, its ACK answered; one asleep in queue
/// mode with two commands waiting; one idle), and the journal after it: a new device, the idle
/// one registered again from another port, one more command for the sleeping one.
fn genuine() -> &'static Genuine {
    static IMAGE: OnceLock<Genuine> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut s = Shard::new(ShardId::default(), shard_config(), 1);
        let mut out = Output::default();
        let mut now = Instant::now();
        s.on_datagram(now, peer(1000), &register("obs", "b=U", 1), &mut out);
        s.on_datagram(now, peer(1001), &register("sleepy", "b=UQ", 2), &mut out);
        s.on_datagram(now, peer(1002), &register("idle", "b=U", 3), &mut out);
        let cmd = br#"{"reqID":9,"msgType":"observe","data":{"path":"/3303/0/5700"},"x":"y"}"#;
        out.transmits.clear();
        s.on_command(now, "obs", command::parse(cmd), None, &mut out);
        if let Some(t) = out.transmits.pop() {
            let v = lwm2m_gateway::coap::MessageView::parse(&t.bytes).expect("request");
            let mut a = Vec::new();
            MessageBuilder::new(
                &mut a,
                MsgType::Ack,
                code::CONTENT,
                v.message_id(),
                v.token(),
            )
            .uint_option(opt::OBSERVE, 3)
            .uint_option(opt::CONTENT_FORMAT, 0)
            .payload(b"21.5");
            s.on_datagram(now, peer(1000), &a, &mut out);
        }
        now += Duration::from_secs(10);
        s.on_timeout(now, &mut out);
        for i in 0..2 {
            let cmd = format!(
                r#"{{"reqID":{i},"msgType":"write","data":{{"path":"/3/0/14","value":"+02"}}}}"#
            );
            s.on_command(
                now,
                "sleepy",
                command::parse(cmd.as_bytes()),
                None,
                &mut out,
            );
        }
        let snapshot = s.export(now, wall(), &NoIdentities);
        let mut journal = s.snapshot_saved(SnapshotKind::Running);
        s.track_changes();
        s.on_datagram(now, peer(1003), &register("late", "b=U", 4), &mut out);
        s.on_datagram(now, peer(1004), &register("idle", "b=U", 5), &mut out);
        let cmd = br#"{"reqID":3,"msgType":"read","data":{"path":"/3/0/0"}}"#;
        s.on_command(now, "sleepy", command::parse(cmd), None, &mut out);
        // Two at a time: the journal is written in chunks, each batch framed on its own.
        while s.export_changes(now, wall(), &NoIdentities, &mut journal, 2).1 {}
        Genuine {
            snapshot,
            journal,
            registrations: s.registrations(),
            observations: s.observations(),
        }
    })
}

/// `file` with the mutations the rest of the input asks for.
fn mutated(mut file: Vec<u8>, r: &mut Reader, cut: bool) -> Vec<u8> {
    while r.data.len() >= 3 {
        let at = r.u16() as usize % file.len();
        file[at] ^= r.u8();
    }
    if cut {
        let n = r.u16() as usize % (file.len() + 1);
        file.truncate(n);
    }
    file
}

fn header(kind: FileKind, rest: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    Header {
        kind,
        shard: 0,
        shards: 1,
    }
    .write(&mut f);
    f.extend_from_slice(rest);
    f
}

fn check(out: &Output) {
    for t in &out.transmits {
        check_datagram(&t.bytes);
    }
    for p in &out.publishes {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
            panic!("publish on {} is not JSON ({e})", p.topic);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let g = genuine();
    let cut = mode & 0x80 != 0;
    let (image, journal) = match mode & 0x7f {
        0 => (
            mutated(g.snapshot.clone(), &mut r, cut),
            Some(g.journal.clone()),
        ),
        2 => (
            g.snapshot.clone(),
            Some(mutated(g.journal.clone(), &mut r, cut)),
        ),
        1 => (header(FileKind::Snapshot, r.data), None),
        3 => (g.snapshot.clone(), Some(header(FileKind::Journal, r.data))),
        _ => (r.data.to_vec(), None),
    };
    let now = Instant::now();
    let mut s = Shard::new(ShardId::default(), shard_config(), 2);
    let mut out = Output::default();
    let imported = s.import(
        Some(&image),
        journal.as_deref(),
        now,
        wall(),
        &NoIdentities,
        &mut out,
    );
    let Ok(report) = imported else {
        return;
    };
    check(&out);
    assert_eq!(report.restored, s.registrations());
    if data.len() <= 1 && (mode == 0 || mode == 2) {
        // The genuine files untouched: everything in them comes back.
        assert_eq!(
            (
                report.restored,
                report.observations,
                report.queued,
                report.complete
            ),
            (g.registrations, g.observations, 3, true),
            "{report:?}"
        );
        assert_eq!(
            (report.journal.devices, report.journal.removed),
            (3, 1),
            "{report:?}"
        );
    }
    // What was restored exports whole and restores the same.
    let again = s.export(now, wall(), &NoIdentities);
    let mut t = Shard::new(ShardId::default(), shard_config(), 3);
    let mut out2 = Output::default();
    let back = t
        .import(Some(&again), None, now, wall(), &NoIdentities, &mut out2)
        .expect("a re-exported image imports");
    assert!(back.complete, "{back:?}");
    assert_eq!(back.restored, report.restored);
    assert_eq!(t.observations(), s.observations());
    // The restored state works: a device wakes, timers fire, lifetimes run out.
    out.transmits.clear();
    out.publishes.clear();
    let mut b = Vec::new();
    MessageBuilder::new(&mut b, MsgType::Con, code::POST, 77, &[2])
        .option(opt::URI_PATH, b"rd")
        .option(opt::URI_PATH, b"1")
        .finish();
    s.on_datagram(now, peer(1001), &b, &mut out);
    for secs in [1u64, 60, 100_000] {
        s.on_timeout(now + Duration::from_secs(secs), &mut out);
        check(&out);
    }
});
