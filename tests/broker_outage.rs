//! The broker goes away under a notification load and comes back (issue 12): QoS 1 messages the
//! gateway published meanwhile wait in its MQTT queue and are delivered, in order, once it
//! reconnects; nothing is dropped while the queue has room. Mosquitto, killed and restarted on
//! the same port.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lwm2m_gateway::coap::{code, MessageView, MsgType};
use serde_json::json;
use support::*;

/// A gateway on `broker` that retries the broker every 2 s and has `queue` MQTT slots, and a
/// device of it whose /3303/0/5700 is observed: (gateway, device, observation token).
fn observed(broker: &Mosquitto, queue: usize) -> (TestGateway, Device, Vec<u8>) {
    let gw = TestGateway::start(Some(broker.addr), move |c| {
        // Long enough for the application below to be back before the gateway reconnects
        // (Mosquitto keeps nothing for subscribers that are not connected).
        c.mqtt.reconnect_min = Duration::from_secs(2);
        c.mqtt.reconnect_max = Duration::from_secs(2);
        c.mqtt.channel_capacity = queue;
    });
    let obs = gw.observer();
    let dev = gw.device();
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&["ep=steady", "lt=600", "lwm2m=1.1"])
        .cf(40)
        .payload(b"</3303/0>")
        .build();
    dev.send(&reg);
    dev.recv();
    obs.next_of("register");
    obs.command(
        "steady",
        json!({"reqID": 5, "msgType": "observe", "data": {"path": "/3303/0/5700"}}),
    );
    let req = dev.recv();
    let token = MessageView::parse(&req).unwrap().token().to_vec();
    dev.send(&observe_answer(&req, 1, b"20"));
    obs.next_of("observe");
    (gw, dev, token)
}

fn notify(token: &[u8], seq: u32) -> Vec<u8> {
    Msg::new(MsgType::Non, code::CONTENT, 1000 + seq as u16)
        .token(token)
        .observe(Some(seq))
        .cf(0)
        .payload(seq.to_string().as_bytes())
        .build()
}

/// Kills `broker`, lets the device send `during` notifications (seq 102..), starts Mosquitto
/// again on the same port and connects an application before the gateway is back.
fn outage(
    gw: &TestGateway,
    dev: &Device,
    token: &[u8],
    broker: Mosquitto,
    during: u32,
) -> (Mosquitto, Observer) {
    let port = broker.addr.port();
    drop(broker);
    wait_until("the gateway noticed the broker is gone", || {
        !gw.metrics().mqtt_connected.load(Ordering::Relaxed)
    });
    for seq in 102..102 + during {
        dev.send(&notify(token, seq));
        std::thread::sleep(Duration::from_millis(5));
    }
    let broker = Mosquitto::start_on(Some(port)).expect("mosquitto again");
    let obs = Observer::connect(broker.addr, &[UPLINK]);
    wait_until("the gateway reconnected", || {
        gw.metrics().mqtt_subscribed.load(Ordering::Relaxed)
    });
    (broker, obs)
}

/// The distinct notification sequence numbers in `range` that arrive, in arrival order, until
/// `want` of them came or nothing more does.
fn received(obs: &Observer, range: std::ops::Range<u32>, want: usize) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    while seen.len() < want {
        let Some((_, n)) = obs.try_next_of("notify", Duration::from_secs(3)) else {
            break;
        };
        let seq = n["seqNum"].as_u64().unwrap() as u32;
        if range.contains(&seq) && seen.insert(seq) {
            order.push(seq);
        }
    }
    order
}

#[test]
fn notifications_published_while_the_broker_is_away_arrive_after_it_returns() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let (gw, dev, token) = observed(&broker, 65536);
    // A load before, during and after the outage: 100 notifications each.
    for seq in 2..102 {
        dev.send(&notify(&token, seq));
    }
    let (_broker, obs) = outage(&gw, &dev, &token, broker, 100);
    for seq in 202..302 {
        dev.send(&notify(&token, seq));
    }
    // Every notification from the outage on arrives (at least once: QoS 1 may repeat one that
    // was in flight), in the order sent.
    let order = received(&obs, 102..302, 200);
    let missing: Vec<u32> = (102..302).filter(|s| !order.contains(s)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "delivered in order");
    assert_eq!(gw.metrics().publish_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn what_overflows_the_queue_during_an_outage_is_counted_exactly() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    // Room for 40 messages while the broker is away; the outage brings 100.
    let (gw, dev, token) = observed(&broker, 40);
    let (_broker, obs) = outage(&gw, &dev, &token, broker, 100);
    let order = received(&obs, 102..202, 100);
    let dropped = gw.metrics().publish_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "the queue overflowed");
    // Each notification was either delivered or counted: none vanished.
    assert_eq!(
        order.len() as u64 + dropped,
        100,
        "delivered {} dropped {dropped}",
        order.len()
    );
}

#[test]
fn a_command_in_flight_when_the_broker_goes_away_is_answered_after_it_returns() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let (gw, dev, token) = observed(&broker, 65536);
    let obs = gw.observer();
    obs.command(
        "steady",
        json!({"reqID": 42, "msgType": "read", "data": {"path": "/3303/0/5700"}}),
    );
    // The read reaches the device; the device answers only once the broker is gone.
    let read = dev.recv();
    assert_eq!(path_of(&read), ["3303", "0", "5700"]);
    drop(obs);
    let port = broker.addr.port();
    drop(broker);
    wait_until("the gateway noticed the broker is gone", || {
        !gw.metrics().mqtt_connected.load(Ordering::Relaxed)
    });
    dev.send(&answer(&read, code::CONTENT, Some(0), b"21.5"));
    dev.send(&notify(&token, 2));
    let broker = Mosquitto::start_on(Some(port)).expect("mosquitto again");
    let obs = Observer::connect(broker.addr, &[UPLINK]);
    wait_until("the gateway reconnected", || {
        gw.metrics().mqtt_subscribed.load(Ordering::Relaxed)
    });
    let (_, resp) = obs.next_of("read");
    assert_eq!(resp["reqID"], 42);
    assert_eq!(resp["data"]["code"], "2.05");
    assert_eq!(resp["data"]["content"][0]["value"], 21.5);
    // And what followed it, in order.
    assert_eq!(obs.next_of("notify").1["seqNum"], 2);
}
