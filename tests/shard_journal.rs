//! The journal between snapshots (issue 12), sans-IO: after a crash, the snapshot and the
//! journal after it restore the state as of the last journal write; a graceful stop is told
//! from a crash (ids skip ahead only after a crash); a stale or damaged journal never panics and
//! never undoes the snapshot.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lwm2m_gateway::coap::code;
use lwm2m_gateway::core::shard::JournalReport;
use serde_json::json;
use support::*;

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn id(location: &str) -> u64 {
    location.parse().unwrap()
}

#[test]
fn a_crash_restores_the_snapshot_and_every_change_the_journal_holds() {
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(20));
    let (loc_a, token_a) = s.observed("alpha", 5000, 1);
    let loc_b = s.register(peer(5001), "bravo", 2);
    let (snap, mut journal) = s.checkpoint(wall());

    // After the snapshot: a new device observed, one deregistered, one re-registered from
    // another address, a command waiting for a sleeping device.
    let (loc_c, token_c) = s.observed("charlie", 5002, 3);
    let dereg = Msg::con(code::DELETE, 4).path(&["rd", &loc_b]).build();
    assert_eq!(s.reply_code(peer(5001), &dereg), code::DELETED);
    let q = Msg::con(code::POST, 5)
        .path(&["rd"])
        .query(&["ep=sleepy", "lt=600", "b=UQ"])
        .payload(b"</3/0>");
    let loc_s = s.register_with(peer(5003), &q);
    s.advance(Duration::from_secs(30));
    s.command(
        "sleepy",
        json!({"reqID": 77, "msgType": "read", "data": {"path": "/3/0/1"}}),
    );
    s.take();
    assert!(s.journal(wall(), &mut journal) >= 3);
    // Written after the last journal write: lost with the crash.
    let loc_d = s.register(peer(5004), "delta", 6);
    assert_eq!(s.registrations(), 4);

    let (mut r, report) = s.recover(Some(&snap), Some(&journal), wall(), Duration::from_secs(5));
    let report = report.unwrap();
    assert_eq!(
        (report.restored, report.observations, report.queued),
        (3, 2, 1),
        "{report:?}"
    );
    assert_eq!(
        report.journal,
        JournalReport {
            devices: 2,
            removed: 1,
            ..JournalReport::default()
        }
    );
    assert!(r.take().1.is_empty(), "no events from a restore");
    // alpha (from the snapshot) and charlie (from the journal) carry on.
    assert_eq!(r.update(peer(5000), &loc_a, 50, &[]), code::CHANGED);
    assert_eq!(r.update(peer(5002), &loc_c, 51, &[]), code::CHANGED);
    r.take();
    for (token, ep, mid) in [(&token_a, "alpha", 52), (&token_c, "charlie", 53)] {
        let port = if ep == "alpha" { 5000 } else { 5002 };
        r.send(peer(port), &notification(token, mid, 2, b"79"));
        let p = r.publishes();
        assert_eq!(p.len(), 1, "{ep}");
        assert_eq!(p[0].1["tag"], ep);
    }
    // bravo ended after the snapshot: gone.
    assert_eq!(r.update(peer(5001), &loc_b, 54, &[]), code::NOT_FOUND);
    // sleepy's command waited in the journal and goes out when it wakes.
    let wake = Msg::con(code::POST, 55).path(&["rd", &loc_s]).build();
    r.send(peer(5003), &wake);
    let (t, _, _) = r.take();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(path_of(&t[1].1), ["3", "0", "1"]);
    r.send(peer(5003), &answer(&t[1].1, code::CONTENT, Some(0), b"x"));
    assert_eq!(payload_json(&r.take().1[0])["reqID"], 77);
    // delta was lost; its location is never given to another device, which would take its
    // Updates for its own.
    assert_eq!(r.update(peer(5004), &loc_d, 56, &[]), code::NOT_FOUND);
    let loc_e = r.register(peer(5005), "echo", 57);
    assert!(id(&loc_e) > id(&loc_d) + (1 << 8), "{loc_e} after {loc_d}");
}

#[test]
fn changes_made_while_the_journal_is_written_in_chunks_are_in_it() {
    // A worker writes a storm's changes a chunk per round, handling messages in between: what
    // changes meanwhile (a device written already, one still to write, a new one) must come out
    // as it is at the end.
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(20));
    let (snap, mut journal) = s.checkpoint(wall());
    let locs: Vec<String> = (0..6u16)
        .map(|i| s.register(peer(5000 + i), &format!("dev-{i}"), i + 1))
        .collect();
    assert!(s.journal_chunk(wall(), &mut journal, 2), "4 of 6 left");
    // dev-0 (written) deregisters, dev-5 (not yet written) re-registers from a new address,
    // dev-6 is new.
    let dereg = Msg::con(code::DELETE, 20).path(&["rd", &locs[0]]).build();
    assert_eq!(s.reply_code(peer(5000), &dereg), code::DELETED);
    let loc5 = s.register(peer(5105), "dev-5", 21);
    let loc6 = s.register(peer(5006), "dev-6", 22);
    // The rest of the first batch, then a second batch: the changes logged meanwhile.
    while s.journal_chunk(wall(), &mut journal, 2) {}
    let before = journal.len();
    while s.journal_chunk(wall(), &mut journal, 2) {}
    assert!(
        journal.len() > before,
        "the second batch holds the later changes"
    );
    assert!(!s.journal_chunk(wall(), &mut journal, 2), "nothing left");

    let (mut r, report) = s.recover(Some(&snap), Some(&journal), wall(), Duration::ZERO);
    let report = report.unwrap();
    assert_eq!(report.restored, 6, "{report:?}");
    assert_eq!(r.update(peer(5000), &locs[0], 30, &[]), code::NOT_FOUND);
    assert_eq!(r.update(peer(5105), &loc5, 31, &[]), code::CHANGED);
    assert_eq!(r.update(peer(5006), &loc6, 32, &[]), code::CHANGED);
    for (i, loc) in locs.iter().enumerate().take(5).skip(1) {
        assert_eq!(
            r.update(peer(5000 + i as u16), loc, 33 + i as u16, &[]),
            code::CHANGED
        );
    }
}

#[test]
fn after_a_graceful_stop_ids_carry_on_and_the_journal_says_it_was_graceful() {
    let mut s = Sim::new();
    s.register(peer(5000), "alpha", 1);
    let (_, mut journal) = s.checkpoint(wall());
    let last = s.register(peer(5001), "bravo", 2);
    s.journal(wall(), &mut journal);
    let (snap, closed) = s.stop(wall());

    let (mut r, report) = s.recover(Some(&snap), Some(&closed), wall(), Duration::from_secs(5));
    let report = report.unwrap();
    assert_eq!(report.restored, 2);
    assert!(
        report.journal.closed && !report.journal.replayed(),
        "{report:?}"
    );
    // The next registration takes the next id, as if there had been no restart.
    let next = r.register(peer(5002), "charlie", 3);
    assert_eq!(id(&next), id(&last) + (1 << 8));
}

#[test]
fn a_journal_older_than_the_snapshot_is_not_replayed() {
    let mut s = Sim::new();
    s.register(peer(5000), "alpha", 1);
    let (_, mut old) = s.checkpoint(wall());
    let loc_b = s.register(peer(5001), "bravo", 2);
    s.journal(wall(), &mut old);
    // The next snapshot (without bravo) was written, then the gateway died before it started
    // the journal again: the old journal, which still holds bravo, follows an older snapshot.
    let dereg = Msg::con(code::DELETE, 3).path(&["rd", &loc_b]).build();
    assert_eq!(s.reply_code(peer(5001), &dereg), code::DELETED);
    let (snap, _) = s.checkpoint(wall());

    let (r, report) = s.recover(Some(&snap), Some(&old), wall(), Duration::ZERO);
    let report = report.unwrap();
    assert!(report.journal.stale, "{report:?}");
    assert_eq!((report.restored, r.registrations()), (1, 1));
}

#[test]
fn without_a_usable_snapshot_the_journal_restores_what_it_holds() {
    let mut s = Sim::new();
    s.register(peer(5000), "alpha", 1);
    let (_, mut journal) = s.checkpoint(wall());
    let loc = s.register(peer(5001), "bravo", 2);
    s.journal(wall(), &mut journal);
    let (mut r, report) = s.recover(None, Some(&journal), wall(), Duration::ZERO);
    assert_eq!(report.unwrap().journal.devices, 1);
    assert_eq!(r.update(peer(5001), &loc, 3, &[]), code::CHANGED);
}

#[test]
fn a_cut_or_damaged_journal_keeps_the_snapshot_and_every_whole_record_before_the_damage() {
    let mut s = Sim::new();
    for i in 0..5u16 {
        s.register(peer(5000 + i), &format!("old-{i}"), i + 1);
    }
    let (snap, mut journal) = s.checkpoint(wall());
    let start = journal.len();
    for i in 0..10u16 {
        s.register(peer(6000 + i), &format!("new-{i}"), 100 + i);
        s.journal(wall(), &mut journal);
    }
    let whole = s
        .recover(Some(&snap), Some(&journal), wall(), Duration::ZERO)
        .1
        .unwrap();
    assert_eq!((whole.restored, whole.journal.devices), (15, 10));
    let mut best = 0;
    for n in 0..journal.len() {
        let r = s
            .recover(Some(&snap), Some(&journal[..n]), wall(), Duration::ZERO)
            .1
            .unwrap();
        // The snapshot's devices are always there, the journal adds a prefix of its own.
        assert!(r.restored >= 5 && r.restored <= 15, "cut at {n}: {r:?}");
        assert!(r.restored >= best, "a longer journal never restores less");
        best = r.restored;
        if n > start {
            assert!(!r.journal.closed);
        }
    }
    for i in start..journal.len() {
        let mut bad = journal.clone();
        bad[i] ^= 0x41;
        let r = s
            .recover(Some(&snap), Some(&bad), wall(), Duration::ZERO)
            .1
            .unwrap();
        assert!(r.restored >= 5 && r.restored <= 15, "byte {i}: {r:?}");
    }
    // A journal of another shard count is not used, and says why.
    let foreign = Sim::with(|c| c.workers = 2);
    let r = foreign
        .recover(None, Some(&journal), wall(), Duration::ZERO)
        .1
        .unwrap();
    assert!(r.journal.unusable.is_some() && r.restored == 0, "{r:?}");
}
