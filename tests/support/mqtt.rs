//! The MQTT side of the loopback tests: observer clients (MQTT 3.1.1 and MQTT 5) that record
//! what the gateway publishes and send it commands, and a Mosquitto broker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::Value;

use super::{missing_tool, rand_u16, wait_until, PathGuard, WAIT};

/// The topic filter every observer of the tests subscribes to: all of the gateway's uplink.
pub const UPLINK: &str = "lwm2m/+/up/#";

/// What an MQTT client's event loop saw, as far as an observer cares.
enum Seen {
    ConnAck,
    SubAck,
    Publish(String, Vec<u8>),
    Other,
    Error,
}

/// Messages an observer received, in order: (topic, payload).
struct Inbox {
    rx: Receiver<(String, Vec<u8>)>,
}

impl Inbox {
    /// Runs `event_loop` on its own thread, handing everything it sees to `on_seen`: every
    /// CONNACK (re)subscribes with `subscribe`, every PUBLISH goes to the inbox. Returns once
    /// `subacks` SUBACKs are in, so that nothing published afterwards is missed.
    fn run(
        subacks: usize,
        subscribe: impl Fn() + Send + 'static,
        event_loop: impl FnOnce(&mut dyn FnMut(Seen) -> bool) + Send + 'static,
    ) -> Inbox {
        let (tx, rx): (Sender<(String, Vec<u8>)>, _) = crossbeam_channel::unbounded();
        let (sub_tx, sub_rx) = crossbeam_channel::bounded(16);
        std::thread::spawn(move || {
            event_loop(&mut |seen| {
                match seen {
                    Seen::ConnAck => subscribe(),
                    Seen::SubAck => {
                        let _ = sub_tx.try_send(());
                    }
                    Seen::Publish(topic, payload) => return tx.send((topic, payload)).is_ok(),
                    Seen::Other => {}
                    Seen::Error => std::thread::sleep(Duration::from_millis(50)),
                }
                true
            })
        });
        for _ in 0..subacks {
            sub_rx
                .recv_timeout(WAIT)
                .expect("observer subscription acknowledged");
        }
        Inbox { rx }
    }

    fn next(&self) -> (String, Value) {
        match self.rx.recv_timeout(WAIT) {
            Ok((t, p)) => {
                let v =
                    serde_json::from_slice(&p).unwrap_or_else(|e| panic!("not JSON on {t}: {e}"));
                (t, v)
            }
            Err(RecvTimeoutError::Timeout) => panic!("no MQTT message within {WAIT:?}"),
            Err(e) => panic!("observer gone: {e}"),
        }
    }

    fn next_of(&self, kind: &str) -> (String, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no {kind} message");
            let (t, v) = self.next();
            if v["msgType"] == kind {
                return (t, v);
            }
        }
    }

    /// The next message whose `msgType` is `kind` within `d`, skipping others; `None` if none.
    fn try_next_of(&self, kind: &str, d: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (t, p) = self.rx.recv_timeout(left).ok()?;
            let v: Value =
                serde_json::from_slice(&p).unwrap_or_else(|e| panic!("not JSON on {t}: {e}"));
            if v["msgType"] == kind {
                return Some((t, v));
            }
        }
    }

    fn quiet(&self, d: Duration) {
        if let Ok((t, p)) = self.rx.recv_timeout(d) {
            panic!("unexpected message on {t}: {}", String::from_utf8_lossy(&p));
        }
    }
}

/// The command topic of endpoint `ep`.
pub fn command_topic(ep: &str) -> String {
    format!("lwm2m/{ep}/dn")
}

/// An MQTT 3.1.1 client that records every message on its subscriptions.
pub struct Observer {
    pub client: rumqttc::Client,
    inbox: Inbox,
}

impl Observer {
    pub fn connect(broker: SocketAddr, filters: &[&str]) -> Observer {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(
            format!("obs-{}-{}", std::process::id(), rand_u16()),
            broker.ip().to_string(),
            broker.port(),
        );
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 1000);
        let c2 = client.clone();
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let n_filters = filters.len();
        let subscribe = move || {
            for f in &filters {
                let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
            }
        };
        let inbox = Inbox::run(n_filters, subscribe, move |on_seen| {
            for ev in conn.iter() {
                let seen = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::ConnAck,
                    Ok(Event::Incoming(Packet::SubAck(_))) => Seen::SubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Seen::Publish(p.topic.clone(), p.payload.to_vec())
                    }
                    Ok(_) => Seen::Other,
                    Err(_) => Seen::Error,
                };
                if !on_seen(seen) {
                    return;
                }
            }
        });
        Observer { client, inbox }
    }

    /// The next message, parsed as JSON.
    pub fn next(&self) -> (String, Value) {
        self.inbox.next()
    }

    /// The next message whose `msgType` is `kind`, skipping others.
    pub fn next_of(&self, kind: &str) -> (String, Value) {
        self.inbox.next_of(kind)
    }

    /// The next message whose `msgType` is `kind` within `d`, or `None`.
    pub fn try_next_of(&self, kind: &str, d: Duration) -> Option<(String, Value)> {
        self.inbox.try_next_of(kind, d)
    }

    /// Asserts nothing more arrives within `d`.
    pub fn quiet(&self, d: Duration) {
        self.inbox.quiet(d)
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .unwrap();
    }

    /// Publishes `cmd` on the command topic of `ep`.
    pub fn command(&self, ep: &str, cmd: Value) {
        self.publish(&command_topic(ep), &cmd.to_string());
    }
}

/// An MQTT 5 client that records every message on its subscription and publishes commands with
/// a message expiry.
pub struct Observer5 {
    client: rumqttc::v5::Client,
    inbox: Inbox,
}

impl Observer5 {
    pub fn connect(broker: SocketAddr, filter: &str) -> Observer5 {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{Client, Event, MqttOptions};
        let mut o = MqttOptions::new(
            format!("obs5-{}", rand_u16()),
            broker.ip().to_string(),
            broker.port(),
        );
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut conn) = Client::new(o, 100);
        let (c2, f) = (client.clone(), filter.to_string());
        let subscribe = move || {
            let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
        };
        let inbox = Inbox::run(1, subscribe, move |on_seen| {
            for ev in conn.iter() {
                let seen = match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::ConnAck,
                    Ok(Event::Incoming(Packet::SubAck(_))) => Seen::SubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Publish(
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    ),
                    Ok(_) => Seen::Other,
                    Err(_) => Seen::Error,
                };
                if !on_seen(seen) {
                    return;
                }
            }
        });
        Observer5 { client, inbox }
    }

    /// The next message whose `msgType` is `kind`, skipping others.
    pub fn next_of(&self, kind: &str) -> (String, Value) {
        self.inbox.next_of(kind)
    }

    /// Publishes `cmd` on the command topic of `ep`, with message expiry `expiry` (seconds).
    pub fn command(&self, ep: &str, cmd: Value, expiry: Option<u32>) {
        use rumqttc::v5::mqttbytes::v5::PublishProperties;
        use rumqttc::v5::mqttbytes::QoS;
        let props = PublishProperties {
            message_expiry_interval: expiry,
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                command_topic(ep),
                QoS::AtLeastOnce,
                false,
                cmd.to_string().into_bytes(),
                props,
            )
            .unwrap();
    }
}

/// A Mosquitto broker on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: PathGuard,
}

impl Mosquitto {
    /// Starts `mosquitto`. When it is not installed: `None` with a clear note, except under CI
    /// (`CI` set), where `.ci/run` installs it and its absence is a failure.
    pub fn start() -> Option<Mosquitto> {
        Mosquitto::start_on(None)
    }

    /// Starts Mosquitto on `port` (a free one when `None`).
    pub fn start_on(port: Option<u16>) -> Option<Mosquitto> {
        let bin = [
            "mosquitto",
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("-h")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok()
        });
        let Some(bin) = bin else {
            missing_tool(
                "mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)",
                "the Mosquitto variant of this test",
            );
            return None;
        };
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let dir = std::env::temp_dir().join(format!("gw-mosq-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\nmax_queued_messages 100000\n")).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until(
            &format!("mosquitto did not start listening on {addr}"),
            || std::net::TcpStream::connect(addr).is_ok(),
        );
        Some(Mosquitto {
            child,
            addr,
            _dir: PathGuard(dir),
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `session` against a fresh Mosquitto, when there is one (see [`Mosquitto::start`]).
pub fn with_mosquitto(session: impl FnOnce(Option<SocketAddr>)) {
    if let Some(m) = Mosquitto::start() {
        session(Some(m.addr));
    }
}
