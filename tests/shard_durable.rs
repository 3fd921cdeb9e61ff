//! The shard's durable image (issue 12), sans-IO: a shard exported and imported into a fresh
//! one (as across a restart) keeps its registrations, observations and queued commands; what
//! expired while down is gone; a cut, corrupt or foreign image restores what it can and never
//! panics.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lwm2m_gateway::coap::code;
use lwm2m_gateway::core::shard::{ImportError, ImportReport};
use serde_json::json;
use support::*;

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn register_queue_mode(s: &mut Sim, ep: &str, port: u16) -> String {
    let q = format!("ep={ep}");
    let reg = Msg::con(code::POST, 1)
        .path(&["rd"])
        .query(&[&q, "lt=600", "b=UQ"])
        .payload(b"</3/0>");
    s.register_with(peer(port), &reg)
}

#[test]
fn a_restart_keeps_registrations_observations_and_queued_commands_without_register_events() {
    let mut s = Sim::with(|c| c.qmode_time_window = Duration::from_secs(20));
    let (loc_a, token) = s.observed("alpha", 5000, 1);
    let loc_b = register_queue_mode(&mut s, "sleepy", 5001);
    s.advance(Duration::from_secs(30));
    s.take();
    // sleepy is asleep: these wait in its queue.
    for i in 1..=2 {
        s.command(
            "sleepy",
            json!({"reqID": 100 + i, "msgType": "read", "data": {"path": format!("/3/0/{i}")}}),
        );
    }
    let (t, p, _) = s.take();
    assert!(t.is_empty() && p.is_empty());
    let image = s.export(wall());

    let (mut r, report) = s.restart(&image, wall(), Duration::from_secs(30));
    assert_eq!(
        report,
        Ok(ImportReport {
            restored: 2,
            observations: 1,
            queued: 2,
            complete: true,
            ..ImportReport::default()
        })
    );
    assert_eq!((r.registrations(), r.observations()), (2, 1));
    // Nothing is published or sent by the restore itself (sleepy is still asleep).
    let (t, p, _) = r.take();
    assert!(t.is_empty(), "{t:?}");
    assert!(p.is_empty());
    // The next Update is 2.04 at the old location; no register event, an update event.
    assert_eq!(r.update(peer(5000), &loc_a, 50, &[]), code::CHANGED);
    // A notification on the old token is published with the original echo.
    r.send(peer(5000), &notification(&token, 51, 2, b"79"));
    let pubs = r.publishes();
    let kinds: Vec<&str> = pubs
        .iter()
        .map(|(_, v)| v["msgType"].as_str().unwrap())
        .collect();
    assert!(!kinds.contains(&"register"), "{kinds:?}");
    let notify = pubs
        .iter()
        .find(|(t, _)| t.ends_with("/up/notify"))
        .unwrap();
    assert_eq!(notify.1["reqID"], 9);
    assert_eq!(notify.1["tag"], "alpha");
    assert_eq!(notify.1["seqNum"], 2);
    // A stale notification (older than the one before the restart) is not published.
    r.send(peer(5000), &notification(&token, 52, 1, b"81"));
    assert!(r.publishes().is_empty());
    // sleepy wakes up: its queued commands go out in order and are answered as the originals.
    r.send(
        peer(5009),
        &Msg::con(code::POST, 60).path(&["rd", &loc_b]).build(),
    );
    let (t, _, _) = r.take();
    assert_eq!(reply_of(&t[0].1).1, code::CHANGED);
    let mut next = t[1].1.clone();
    for i in 1..=2 {
        assert_eq!(path_of(&next), ["3", "0", &i.to_string()]);
        r.send(peer(5009), &answer(&next, code::CONTENT, Some(0), b"x"));
        let (t, p, _) = r.take();
        assert_eq!(payload_json(&p[0])["reqID"], 100 + i);
        if i < 2 {
            next = t[0].1.clone();
        }
    }
    // New registrations do not reuse a restored location.
    let loc_c = r.register(peer(5002), "gamma", 70);
    assert!(loc_c != loc_a && loc_c != loc_b);
}

#[test]
fn a_command_in_flight_is_sent_again_after_the_restart() {
    let mut s = Sim::registered("busy");
    s.command(
        "busy",
        json!({"reqID": 7, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let (t, _, _) = s.take();
    assert_eq!(t.len(), 1);
    let image = s.export(wall());
    let (mut r, report) = s.restart(&image, wall(), Duration::from_secs(5));
    assert_eq!(report.map(|r| r.queued), Ok(1));
    // Not a queue-mode device: the request goes out again at once.
    let (t, _, _) = r.take();
    let (_, _, path, _) = sent_request(&t);
    assert_eq!(path, ["3", "0", "0"]);
    r.send(
        peer(5000),
        &answer(&t[0].1, code::CONTENT, Some(0), b"Acme"),
    );
    let p = r.publishes();
    assert_eq!(p[0].1["reqID"], 7);
    assert_eq!(p[0].1["data"]["content"][0]["value"], "Acme");
}

#[test]
fn a_registration_that_expired_while_down_is_not_restored() {
    let mut s = Sim::new();
    let q = Msg::con(code::POST, 1)
        .path(&["rd"])
        .query(&["ep=brief", "lt=60"])
        .payload(b"</3/0>");
    let loc = s.register_with(peer(5000), &q);
    s.register(peer(5001), "lasting", 2);
    let image = s.export(wall());
    let (mut r, report) = s.restart(&image, wall(), Duration::from_secs(120));
    let report = report.unwrap();
    assert_eq!((report.restored, report.expired), (1, 1));
    assert_eq!(r.update(peer(5000), &loc, 3, &[]), code::NOT_FOUND);
    // The survivor still expires on time: 600 s after it registered, not 600 s after the restart.
    r.advance(Duration::from_secs(600 - 120 + 1));
    assert_eq!(r.registrations(), 0);
}

#[test]
fn cut_corrupt_and_foreign_images_restore_what_they_can_and_never_panic() {
    let mut s = Sim::new();
    for i in 0..20u16 {
        s.register(peer(5000 + i), &format!("dev-{i}"), i + 1);
    }
    let image = s.export(wall());
    let full = s.restart(&image, wall(), Duration::ZERO).1.unwrap();
    assert_eq!((full.restored, full.complete), (20, true));
    // Cut anywhere: whole records before the cut are restored, the rest is counted as dropped.
    let mut last = 0;
    for n in (0..image.len()).rev().step_by(7) {
        match s.restart(&image[..n], wall(), Duration::ZERO).1 {
            Ok(r) => {
                assert!(r.restored <= 20);
                // A cut image never passes for a whole one, even cut at a record boundary.
                assert_eq!(r.complete, n == image.len(), "cut at {n}");
                last = last.max(r.restored);
            }
            Err(ImportError::Header(_)) => assert!(n < 14),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(last >= 19);
    // One flipped byte anywhere: never a panic, at most what was there.
    for i in 0..image.len() {
        let mut bad = image.clone();
        bad[i] ^= 0x20;
        if let Ok(r) = s.restart(&bad, wall(), Duration::ZERO).1 {
            assert!(r.restored <= 20, "byte {i}");
        }
    }
    // Not a state file, or another shard's.
    let (_, e) = s.restart(b"{\"devices\": []}", wall(), Duration::ZERO);
    assert!(matches!(e, Err(ImportError::Header(_))));
    let mut other = image.clone();
    other[11] = 3;
    let (_, e) = s.restart(&other, wall(), Duration::ZERO);
    assert_eq!(
        e.unwrap_err().to_string(),
        "written by shard 3 of 1 (the number of workers changed?)"
    );
}
