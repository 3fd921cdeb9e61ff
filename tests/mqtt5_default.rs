//! MQTT 5 by default (`mqtt.version = "auto"`): the gateway speaks MQTT 5 where the broker does,
//! so a command's Message-Expiry-Interval is honoured without setting `mqtt.version`, and falls
//! back to 3.1.1 against a broker that refuses 5 (by a 3.1.1 CONNACK `20 02 00 01`, or by hanging
//! up on the CONNECT as rumqttd's 3.1.1 listener does). Forced `5` never falls back.
//!
//! Brokers: Mosquitto 2 (MQTT 5), the embedded broker, a rumqttd with only an MQTT 3.1.1
//! listener, and a proxy in front of it that answers level-5 CONNECTs with the 3.1.1 refusal and
//! reports the protocol level of every CONNECT it sees.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use lwm2m_gateway::coap::code;
use lwm2m_gateway::config::MqttVersion;
use lwm2m_gateway::runtime::Gateway;
use serde_json::json;
use support::*;

/// Registers queue-mode device `ep` and returns its registration id.
fn register(
    dev: &Device,
    ep: &str,
    binding: &str,
    uplink: impl Fn() -> serde_json::Value,
) -> String {
    let query = [format!("ep={ep}"), "lt=300".into(), format!("b={binding}")];
    let query: Vec<&str> = query.iter().map(String::as_str).collect();
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&query)
        .payload(b"</3/0>");
    dev.send(&reg.build());
    let loc = location_id(&dev.recv()).expect("Location-Path rd/<id>");
    assert_eq!(uplink()["data"]["ep"], ep);
    loc
}

/// A command's expiry (MQTT 5) ends its wait for a sleeping queue-mode device in `coap_timeout`;
/// a command without one waits for the device's Update and is answered then. Needs the gateway
/// on MQTT 5: over 3.1.1 the expiry would not reach it and the first command would wait too.
fn expiry_is_honoured(gw: &TestGateway, obs: &Observer5, ep: &str) {
    let dev = gw.device();
    let loc = register(&dev, ep, "UQ", || obs.next_of("register").1);
    // Asleep once the queue-mode window (300 ms) has passed.
    std::thread::sleep(Duration::from_millis(500));
    expiry_ends_the_wait(&dev, obs, ep, &loc, 1);
}

/// A read command from a 3.1.1 application client to an awake device, answered.
fn command_round_trip(gw: &TestGateway, obs: &Observer, ep: &str, req_id: u32) {
    let dev = gw.device();
    register(&dev, ep, "U", || obs.next_of("register").1);
    obs.command(
        ep,
        json!({"reqID": req_id, "msgType": "read", "data": {"path": "/3/0/0"}}),
    );
    let req = dev.recv();
    assert_eq!(uri_path(&req), "/3/0/0");
    dev.send(&answer(&req, code::CONTENT, None, b"gw"));
    let (topic, r) = obs.next_of("read");
    assert_eq!(topic, format!("lwm2m/{ep}/up/resp"));
    assert_eq!(
        (r["reqID"].clone(), r["data"]["content"][0]["value"].clone()),
        (json!(req_id), json!("gw"))
    );
}

fn queue_mode(c: &mut lwm2m_gateway::config::Config) {
    assert_eq!(c.mqtt.version, MqttVersion::Auto, "the default");
    c.qmode_time_window = Duration::from_millis(300);
}

#[test]
fn the_default_speaks_mqtt5_to_mosquitto_and_honours_message_expiry() {
    let Some(m) = Mosquitto::start() else { return };
    let gw = TestGateway::start(Some(m.addr), queue_mode);
    let obs = Observer5::connect(m.addr, UPLINK);
    expiry_is_honoured(&gw, &obs, "auto5");
}

/// With the default, the embedded broker keeps its MQTT 3.1.1 listener on `broker_listen` for
/// applications, and the gateway runs on MQTT 5 through a second, loopback listener: an MQTT 5
/// client there gets its commands' expiry honoured, a 3.1.1 client on `broker_listen` still
/// sends commands and sees the answers.
#[test]
fn the_default_runs_the_embedded_broker_with_an_mqtt5_listener_for_the_gateway() {
    let gw = TestGateway::start(None, queue_mode);
    let g = gw.gw.as_ref().unwrap();
    let user = g.broker_addr().unwrap();
    let v5 = g.embedded_broker_v5_addr().expect("an MQTT 5 listener");
    assert_ne!(user, v5);
    assert!(v5.ip().is_loopback(), "{v5}");
    let obs5 = Observer5::connect(v5, UPLINK);
    expiry_is_honoured(&gw, &obs5, "emb5");
    // rumqttc's 3.1.1 client, as the tests and the load harness use, on broker_listen.
    let obs = Observer::connect(user, &[UPLINK]);
    command_round_trip(&gw, &obs, "emb4", 7);
    // Both listeners share one router: what the gateway publishes reaches both clients.
    assert_eq!(obs5.next_of("register").1["data"]["ep"], "emb4");
    // A level-5 CONNECT on broker_listen is refused (one protocol per rumqttd listener).
    assert_eq!(connect_answer(user, 5), None);
    assert_eq!(connect_answer(v5, 4), None);
}

/// Nagle is off on both listeners of the embedded broker and the connections they accept (see
/// `runtime::sockopt`): the gateway's own on the MQTT 5 one, an application's on the other.
#[test]
fn both_embedded_listeners_have_nagle_disabled() {
    use lwm2m_gateway::runtime::sockopt::nodelay_of_local;
    let gw = TestGateway::start(None, |_| {});
    let _obs = gw.observer();
    let g = gw.gw.as_ref().unwrap();
    for (addr, what) in [
        (g.broker_addr().unwrap(), "broker_listen"),
        (g.embedded_broker_v5_addr().unwrap(), "MQTT 5 listener"),
    ] {
        let flags = nodelay_of_local(addr);
        // The listener and the connection it accepted (the observer's, the gateway's).
        assert!(flags.len() >= 2, "{what}: sockets found: {flags:?}");
        assert!(flags.iter().all(|&nodelay| nodelay), "{what}: {flags:?}");
    }
}

#[test]
fn forced_versions_keep_one_listener_on_broker_listen() {
    for (version, v5) in [(MqttVersion::V311, false), (MqttVersion::V5, true)] {
        let gw = TestGateway::start(None, |c| c.mqtt.version = version);
        let g = gw.gw.as_ref().unwrap();
        let user = g.broker_addr().unwrap();
        assert_eq!(
            g.embedded_broker_v5_addr(),
            v5.then_some(user),
            "{version:?}"
        );
        let (ok, refused) = if v5 { (5, 4) } else { (4, 5) };
        assert_eq!(connect_answer(user, ok), Some(0), "{version:?}");
        assert_eq!(connect_answer(user, refused), None, "{version:?}");
    }
}

/// Connects to `broker` with a minimal CONNECT of protocol `level` and returns the CONNACK's
/// return code, or `None` if the broker closed the connection without one.
fn connect_answer(broker: SocketAddr, level: u8) -> Option<u8> {
    let mut s = TcpStream::connect(broker).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let id = format!("probe-{}", rand_u16());
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 10];
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend([0, id.len() as u8]);
    body.extend(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet).unwrap();
    let mut head = [0u8; 2];
    match s.read_exact(&mut head) {
        Ok(()) => {
            assert_eq!(head[0], 0x20, "a CONNACK");
            let mut rest = vec![0u8; head[1] as usize];
            s.read_exact(&mut rest).unwrap();
            Some(rest[1])
        }
        Err(_) => None,
    }
}

/// A rumqttd with only an MQTT 3.1.1 listener (it closes a level-5 connection without CONNACK),
/// on a free loopback port. It runs until the test process ends.
fn rumqttd_v311_only() -> SocketAddr {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60000,
        max_payload_size: 1 << 20,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4-test".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: conn,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 100,
        max_outgoing_packet_count: 1000,
        max_segment_size: 1 << 20,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some([("1".to_string(), server)].into_iter().collect()),
        v5: None,
        ..Default::default()
    };
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    wait_until("rumqttd listens", || TcpStream::connect(addr).is_ok());
    addr
}

/// The start of a packet: the fixed header and the remaining bytes, read whole.
fn read_packet(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut packet = vec![0u8; 1];
    s.read_exact(&mut packet)?;
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8];
        s.read_exact(&mut b)?;
        packet.push(b[0]);
        len |= ((b[0] & 0x7f) as usize) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let at = packet.len();
    packet.resize(at + len, 0);
    s.read_exact(&mut packet[at..])?;
    Ok(packet)
}

/// An MQTT 3.1.1-only broker as an old one behaves: a level-5 CONNECT gets the 3.1.1 CONNACK
/// `20 02 00 01` (unacceptable protocol version) and the connection is closed; any other
/// connection is relayed to `backend`. Every CONNECT's protocol level is reported.
struct OldBroker {
    addr: SocketAddr,
    levels: Receiver<u8>,
    /// The client side of the relayed connections, to cut them.
    relayed: Arc<Mutex<Vec<TcpStream>>>,
}

impl OldBroker {
    fn start(backend: SocketAddr) -> OldBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, levels) = crossbeam_channel::unbounded();
        let relayed = Arc::new(Mutex::new(Vec::new()));
        let r2 = relayed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let Ok(connect) = read_packet(&mut client) else {
                    continue;
                };
                assert_eq!(connect[0], 0x10, "a CONNECT first: {connect:02x?}");
                let name = connect.iter().position(|&b| b == 0).unwrap();
                assert_eq!(&connect[name..name + 6], b"\x00\x04MQTT");
                let level = connect[name + 6];
                let _ = tx.send(level);
                if level != 4 {
                    let _ = client.write_all(&[0x20, 0x02, 0x00, 0x01]);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(backend) else {
                    continue;
                };
                let _ = server.write_all(&connect);
                r2.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(Shutdown::Both);
                });
            }
        });
        OldBroker {
            addr,
            levels,
            relayed,
        }
    }

    fn next_level(&self) -> u8 {
        self.levels.recv_timeout(WAIT).expect("a CONNECT")
    }

    /// Cuts every relayed connection (the gateway sees the broker go away).
    fn cut(&self) {
        for s in self.relayed.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn the_default_falls_back_to_311_on_a_311_connack_at_once() {
    let backend = rumqttd_v311_only();
    let old = OldBroker::start(backend);
    let gw = TestGateway::start(Some(old.addr), |c| {
        assert_eq!(c.mqtt.version, MqttVersion::Auto);
        // A backoff longer than the test waits: the fallback must not wait for it.
        c.mqtt.reconnect_min = Duration::from_secs(60);
        c.mqtt.reconnect_max = Duration::from_secs(120);
    });
    assert_eq!(old.next_level(), 5);
    assert_eq!(old.next_level(), 4, "reconnected with 3.1.1");
    let obs = Observer::connect(backend, &[UPLINK]);
    command_round_trip(&gw, &obs, "old1", 1);
    assert!(old.levels.is_empty(), "no other CONNECT");
}

#[test]
fn the_fallback_to_311_is_kept_across_reconnects() {
    let backend = rumqttd_v311_only();
    let old = OldBroker::start(backend);
    let gw = TestGateway::start(Some(old.addr), |c| {
        c.mqtt.reconnect_min = Duration::from_millis(20);
    });
    assert_eq!(old.next_level(), 5);
    assert_eq!(old.next_level(), 4);
    let obs = Observer::connect(backend, &[UPLINK]);
    command_round_trip(&gw, &obs, "old2", 2);
    // A dropped connection is resumed on 3.1.1, without trying 5 again.
    let metrics = gw.metrics();
    old.cut();
    wait_until("the gateway notices the broker is gone", || {
        !metrics.mqtt_connected.load(Relaxed)
    });
    assert_eq!(old.next_level(), 4);
    wait_until("the gateway subscribes again", || {
        metrics.mqtt_subscribed.load(Relaxed)
    });
    command_round_trip(&gw, &obs, "old3", 3);
    assert!(old.levels.is_empty(), "no other CONNECT");
}

#[test]
fn the_default_falls_back_to_311_when_the_broker_hangs_up_on_a_v5_connect() {
    let broker = rumqttd_v311_only();
    assert_eq!(
        connect_answer(broker, 5),
        None,
        "rumqttd's 3.1.1 listener hangs up"
    );
    let gw = TestGateway::start(Some(broker), |c| {
        c.mqtt.reconnect_min = Duration::from_secs(60);
        c.mqtt.reconnect_max = Duration::from_secs(120);
    });
    let obs = Observer::connect(broker, &[UPLINK]);
    command_round_trip(&gw, &obs, "hangup", 4);
}

/// `mqtt.version = "5"` against a 3.1.1-only broker: CONNECT after CONNECT at level 5, with
/// backoff, never connected.
#[test]
fn forced_5_never_falls_back() {
    let old = OldBroker::start(rumqttd_v311_only());
    let mut c = on_loopback(lwm2m_gateway::config::Config::default(), Some(old.addr));
    c.mqtt.version = MqttVersion::V5;
    c.mqtt.reconnect_min = Duration::from_millis(20);
    c.mqtt.reconnect_max = Duration::from_millis(40);
    let gw = Gateway::start(c).expect("gateway starts");
    for _ in 0..3 {
        assert_eq!(old.next_level(), 5);
    }
    assert!(!gw.metrics().mqtt_connected.load(Relaxed));
    gw.shutdown();
}
