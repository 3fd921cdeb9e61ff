//! Shared helpers for the loopback tests: a gateway on ephemeral ports, an MQTT observer client,
//! a raw UDP "device", and the captured real-client datagrams.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use lwm2m_gateway::coap::{MessageBuilder, MessageView, MsgType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn test_config(broker: Option<SocketAddr>) -> Config {
    let mut c = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        stats_interval: Duration::ZERO,
        xml_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xml"),
        ..Config::default()
    };
    c.mqtt.broker_listen = "127.0.0.1:0".parse().unwrap();
    c.mqtt.url = broker.map(|b| format!("mqtt://{b}"));
    c.mqtt.client_id = format!(
        "gw-test-{}",
        std::process::id() as u64 * 1000 + rand_u16() as u64
    );
    c
}

pub fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u16
}

/// A started gateway and the addresses to reach it.
pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub udp: SocketAddr,
    pub broker: SocketAddr,
}

impl TestGateway {
    /// Starts a gateway; `broker` = an external broker, else the embedded one.
    pub fn start(broker: Option<SocketAddr>, tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let mut c = test_config(broker);
        tweak(&mut c);
        let gw = Gateway::start(c).expect("gateway starts");
        let udp = gw.local_addrs()[0];
        let broker = broker.or(gw.broker_addr()).unwrap();
        let deadline = Instant::now() + WAIT;
        while !gw.metrics().mqtt_subscribed.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline,
                "gateway never subscribed to its command topic"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        TestGateway {
            gw: Some(gw),
            udp,
            broker,
        }
    }

    pub fn metrics(&self) -> std::sync::Arc<lwm2m_gateway::runtime::Metrics> {
        self.gw.as_ref().unwrap().metrics()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown();
        }
    }
}

/// An MQTT client that records every message on its subscriptions.
pub struct Observer {
    pub client: Client,
    rx: Receiver<(String, Vec<u8>)>,
}

impl Observer {
    pub fn connect(broker: SocketAddr, filters: &[&str]) -> Observer {
        let mut opts = MqttOptions::new(
            format!("obs-{}-{}", std::process::id(), rand_u16()),
            broker.ip().to_string(),
            broker.port(),
        );
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 1000);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (sub_tx, sub_rx) = crossbeam_channel::bounded(16);
        let c2 = client.clone();
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let n_filters = filters.len();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        // Wait for every SubAck so that nothing published afterwards is missed.
        for _ in 0..n_filters {
            sub_rx
                .recv_timeout(WAIT)
                .expect("observer subscription acknowledged");
        }
        Observer { client, rx }
    }

    /// The next message, parsed as JSON.
    pub fn next(&self) -> (String, Value) {
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

    /// The next message whose `msgType` is `kind`, skipping others.
    pub fn next_of(&self, kind: &str) -> (String, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no {kind} message");
            let (t, v) = self.next();
            if v["msgType"] == kind {
                return (t, v);
            }
        }
    }

    /// Asserts nothing more arrives within `d`.
    pub fn quiet(&self, d: Duration) {
        if let Ok((t, p)) = self.rx.recv_timeout(d) {
            panic!("unexpected message on {t}: {}", String::from_utf8_lossy(&p));
        }
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .unwrap();
    }
}

/// A device: one UDP socket on loopback.
pub struct Device {
    pub sock: UdpSocket,
    pub gw: SocketAddr,
}

impl Device {
    pub fn new(gw: SocketAddr) -> Device {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Device { sock, gw }
    }
    pub fn send(&self, b: &[u8]) {
        self.sock.send_to(b, self.gw).unwrap();
    }
    pub fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = self
            .sock
            .recv_from(&mut buf)
            .expect("datagram from the gateway");
        assert_eq!(from, self.gw);
        buf.truncate(n);
        buf
    }
    /// Waits at most `d` for a datagram.
    pub fn try_recv(&self, d: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(d)).unwrap();
        let mut buf = vec![0u8; 65536];
        let r = self
            .sock
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| buf[..n].to_vec());
        self.sock.set_read_timeout(Some(WAIT)).unwrap();
        r
    }
}

/// A Mosquitto broker on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: PathGuard,
}

pub struct PathGuard(pub std::path::PathBuf);
impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
            if std::env::var_os("CI").is_some() {
                panic!("mosquitto is not installed, but CI must exercise it (.ci/run installs it)");
            }
            eprintln!("NOTE: mosquitto not installed (apt-get install mosquitto): the Mosquitto variant of this test did not run");
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
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Client->server datagrams of a capture in `shared/testdata/real-clients`, in order.
pub fn captured_client_datagrams(file: &str) -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/real-clients")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["dir"] == "client->server")
        .map(|v| hex(v["hex"].as_str().unwrap()))
        .collect()
}

/// Rewrites a captured message for this gateway: new message id / token, and a Uri-Path
/// `rd/<old>` replaced by `rd/<location>`.
pub fn rewrite(
    bytes: &[u8],
    mid: Option<u16>,
    token: Option<&[u8]>,
    location: Option<&str>,
) -> Vec<u8> {
    let v = MessageView::parse(bytes).unwrap();
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(
        &mut out,
        v.msg_type(),
        v.code(),
        mid.unwrap_or(v.message_id()),
        token.unwrap_or(v.token()),
    );
    let mut path_index = 0;
    for (n, val) in v.options() {
        if n == 11 {
            path_index += 1;
            if path_index == 2 {
                if let Some(loc) = location {
                    b = b.option(n, loc.as_bytes());
                    continue;
                }
            }
        }
        b = b.option(n, val);
    }
    b.payload(v.payload());
    out
}

/// The (type, code, mid, token, location id) of a gateway reply.
pub fn parse_reply(b: &[u8]) -> (MsgType, u8, u16, Vec<u8>, Option<String>) {
    let v = MessageView::parse(b).unwrap();
    let loc: Vec<_> = v
        .option_values(8)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    (
        v.msg_type(),
        v.code(),
        v.message_id(),
        v.token().to_vec(),
        loc.get(1).cloned(),
    )
}

/// Path options of a request the gateway sent.
pub fn uri_path(b: &[u8]) -> String {
    let v = MessageView::parse(b).unwrap();
    let segs: Vec<_> = v
        .option_values(11)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    format!("/{}", segs.join("/"))
}

/// A piggybacked answer to a request the gateway sent.
pub fn answer(req: &[u8], code: u8, cf: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let v = MessageView::parse(req).unwrap();
    let mut out = Vec::new();
    let mut b = MessageBuilder::new(&mut out, MsgType::Ack, code, v.message_id(), v.token());
    if let Some(cf) = cf {
        b = b.uint_option(12, cf);
    }
    b.payload(payload);
    out
}

/// A real LwM2M client process from `tests/interop` speaking the line protocol documented in
/// `node-client.js` / `aiocoap-client.py`: events on stdout, commands on stdin.
pub struct ClientProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: Receiver<String>,
}

impl ClientProcess {
    pub fn spawn(program: &str, script: &str, args: &[&str]) -> ClientProcess {
        use std::io::BufRead;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        let mut child = std::process::Command::new(program)
            .arg(dir.join(script))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ClientProcess {
            child,
            stdin,
            lines,
        }
    }

    /// The next line, which must start with `prefix`.
    pub fn expect(&self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("client never printed {prefix}"));
        assert!(
            line.starts_with(prefix),
            "expected {prefix}, client said {line:?}"
        );
        line
    }

    /// Asserts the client prints nothing within `d`.
    pub fn silent(&self, d: Duration) {
        if let Ok(l) = self.lines.recv_timeout(d) {
            panic!("client unexpectedly said {l:?}");
        }
    }

    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
