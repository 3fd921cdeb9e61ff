//! Shared helpers of the integration tests:
//!
//! - here: a gateway on ephemeral ports, a raw UDP "device", the captured real-client datagrams
//!   and real LwM2M client processes from `tests/interop`;
//! - [`mqtt`]: MQTT observer clients and a Mosquitto broker;
//! - [`coap`]: building the CoAP messages a device sends and reading those it gets;
//! - [`dtls`]: a device speaking DTLS (the gateway's own sans-IO client over a UDP socket);
//! - [`sim`]: the fake-clock harness of the sans-IO shard tests.
//!
//! Each test crate uses a subset, hence `dead_code` allowed.
#![allow(dead_code)]

pub mod coap;
pub mod dtls;
pub mod http;
pub mod mqtt;
pub mod process;
pub mod sim;

// Every test crate takes what it needs from `support::*`; none needs all of it.
#[allow(unused_imports)]
pub use {coap::*, dtls::*, http::*, mqtt::*, process::*, sim::*};

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use lwm2m_gateway::coap::{opt, MessageView};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;
use serde_json::Value;

/// `rel`, a path relative to the repository (`xml`, `tests/interop`...).
pub fn repo_path(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tool some test needs (`what`) is missing. Under CI (`CI` set), where `.ci/run` installs
/// every tool, that is a failure; elsewhere a note says that `test` did not run.
pub fn missing_tool(what: &str, test: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what}, but CI must run {test}");
    }
    eprintln!("NOTE: {what}: {test} did not run");
}

/// Makes sure Node.js runs and `dir`'s node_modules holds `package` (running `npm ci` there
/// when it is missing); `false`, with a note, when Node or npm are not installed (under CI a
/// failure: see [`missing_tool`]).
pub fn npm_ready(dir: &str, package: &str, test: &str) -> bool {
    use std::process::{Command, Stdio};
    let dir = repo_path(dir);
    let have_node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_node {
        missing_tool("Node.js is not installed", test);
        return false;
    }
    if !dir.join("node_modules").join(package).exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run npm ci");
        assert!(st.success(), "npm ci in {} failed", dir.display());
    }
    true
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `done` every 10 ms until it holds; fails with `what` after [`WAIT`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `base` (a configuration as a user writes it) made fit for a test: the UDP listener and the
/// embedded broker on ephemeral loopback ports, `broker` (else the embedded one), 2 workers, no
/// stats, the repository's `xml/`, a client id of its own. Everything else stays as in `base`.
pub fn on_loopback(base: Config, broker: Option<SocketAddr>) -> Config {
    let mut c = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        stats_interval: Duration::ZERO,
        xml_dir: repo_path("xml"),
        ..base
    };
    c.mqtt.broker_listen = "127.0.0.1:0".parse().unwrap();
    // One DTLS listener on a free loopback port, after the plain one(s) in `local_addrs`.
    c.dtls.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.mqtt.url = broker.map(|b| format!("mqtt://{b}"));
    // Tests that keep state across a restart give a directory of their own.
    c.state.dir = None;
    c.http.listen = Some("127.0.0.1:0".parse().unwrap());
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
    /// The DTLS listener, when the test left one configured.
    pub dtls: Option<SocketAddr>,
    pub broker: SocketAddr,
    /// The HTTP API, when the test left it on.
    pub http: Option<SocketAddr>,
}

impl TestGateway {
    /// Starts a gateway; `broker` = an external broker, else the embedded one.
    pub fn start(broker: Option<SocketAddr>, tweak: impl FnOnce(&mut Config)) -> TestGateway {
        TestGateway::start_from(Config::default(), broker, tweak)
    }

    /// Starts a gateway configured by `base` (see [`on_loopback`]), changed by `tweak`.
    pub fn start_from(
        base: Config,
        broker: Option<SocketAddr>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestGateway {
        let mut c = on_loopback(base, broker);
        tweak(&mut c);
        let gw = Gateway::start(c).expect("gateway starts");
        let udp = gw.local_addrs()[0];
        let dtls = gw.dtls_addrs().first().copied();
        let http = gw.http_addr();
        let broker = broker.or(gw.broker_addr()).unwrap();
        wait_until("gateway never subscribed to its command topic", || {
            gw.metrics().mqtt_subscribed.load(Ordering::Relaxed)
        });
        TestGateway {
            gw: Some(gw),
            udp,
            dtls,
            broker,
            http,
        }
    }

    pub fn metrics(&self) -> std::sync::Arc<lwm2m_gateway::runtime::Metrics> {
        self.gw.as_ref().unwrap().metrics()
    }

    /// An MQTT observer of everything the gateway publishes.
    pub fn observer(&self) -> Observer {
        Observer::connect(self.broker, &[UPLINK])
    }

    /// A new device, on its own UDP port.
    pub fn device(&self) -> Device {
        Device::new(self.udp)
    }
}

impl TestGateway {
    /// Stops the gateway the way SIGTERM does (state written, MQTT flushed).
    pub fn stop(mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown();
        }
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

pub struct PathGuard(pub std::path::PathBuf);
impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bytes of a hex string; anything but hex digits (spaces, line breaks) is skipped.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Client->server datagrams of a capture in `tests/data/real-clients`, in order.
pub fn captured_client_datagrams(file: &str) -> Vec<Vec<u8>> {
    let path = repo_path("tests/data/real-clients").join(file);
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
    let mut m = Msg::new(v.msg_type(), v.code(), mid.unwrap_or(v.message_id()))
        .token(token.unwrap_or(v.token()));
    let mut path_index = 0;
    for (n, mut val) in v.options() {
        if n == opt::URI_PATH {
            path_index += 1;
            if path_index == 2 {
                val = location.map_or(val, str::as_bytes);
            }
        }
        m = m.option(n, val);
    }
    m.payload(v.payload()).build()
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
        let mut child = std::process::Command::new(program)
            .arg(repo_path("tests/interop").join(script))
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

    /// `program script`, an LwM2M client of `gw` registering as `ep` with lifetime `lifetime`,
    /// giving up after 90 s; `extra` are further arguments of the script.
    pub fn lwm2m_client(
        program: &str,
        script: &str,
        gw: &TestGateway,
        ep: &str,
        lifetime: u32,
        extra: &[&str],
    ) -> ClientProcess {
        let (port, lifetime) = (gw.udp.port().to_string(), lifetime.to_string());
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--ep",
            ep,
            "--lifetime",
            &lifetime,
            "--timeout",
            "90",
        ];
        args.extend_from_slice(extra);
        ClientProcess::spawn(program, script, &args)
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

/// MQTT 5 message expiry against a sleeping queue-mode device `ep` (registered at `loc`, its
/// queue-mode window already passed): command `first` (expiry 1 s) is answered `coap_timeout`,
/// command `first + 1` (no expiry) waits and reaches the device after its Update. Needs the
/// gateway on MQTT 5: over 3.1.1 the expiry would not reach it.
pub fn expiry_ends_the_wait(dev: &Device, obs: &Observer5, ep: &str, loc: &str, first: i64) {
    use lwm2m_gateway::coap::code;
    use serde_json::json;
    let read =
        |id: i64, path: &str| json!({"reqID": id, "msgType": "read", "data": {"path": path}});
    obs.command(ep, read(first, "/3/0/1"), Some(1));
    obs.command(ep, read(first + 1, "/3/0/2"), None);
    let (topic, t) = obs.next_of("coap_timeout");
    assert_eq!(topic, format!("lwm2m/{ep}/up/resp"));
    assert_eq!(
        (t["reqID"].clone(), t["data"]["reason"].clone()),
        (json!(first), json!("expired in queue"))
    );
    assert!(
        dev.try_recv(Duration::from_millis(200)).is_none(),
        "nothing reached the sleeping device"
    );
    let upd = Msg::con(code::POST, 2).token(&[2]).path(&["rd", loc]);
    dev.send(&upd.build());
    assert_eq!(reply_of(&dev.recv()).1, code::CHANGED);
    let req = dev.recv();
    assert_eq!(uri_path(&req), "/3/0/2");
    dev.send(&answer(&req, code::CONTENT, None, b"later"));
    let (_, r) = obs.next_of("read");
    assert_eq!(
        (r["reqID"].clone(), r["data"]["content"][0]["value"].clone()),
        (json!(first + 1), json!("later"))
    );
}
