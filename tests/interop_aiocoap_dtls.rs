//! Interop of the DTLS listener with aiocoap over tinydtls (PyPI `DTLSSocket`): the LwM2M 1.1
//! client of `tests/interop/aiocoap-client.py` registers over PSK, is read, written and
//! observed through MQTT over its DTLS session, sends, and deregisters; with a wrong key it
//! never registers.
//!
//! Needs Python 3 with aiocoap, cbor2 and DTLSSocket (`tests/interop/requirements.txt`; the test
//! installs them with pip when missing, DTLSSocket builds from source with autoconf/automake and a
//! C compiler). Without them it says so and passes, except under CI.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use serde_json::json;
use support::*;

const KEY_HEX: &str = "0102030405060708090a0b0c0d0e0f10";

fn python_ready() -> bool {
    let import_ok = || {
        Command::new("python3")
            .args(["-c", "import aiocoap, cbor2, DTLSSocket"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if import_ok() {
        return true;
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(repo_path("tests/interop/requirements.txt"))
        .status();
    if import_ok() {
        return true;
    }
    missing_tool(
        "python3 with aiocoap and DTLSSocket is unavailable (pip install -r tests/interop/requirements.txt)",
        "the aiocoap DTLS interop test",
    );
    false
}

fn gateway(ep: &str) -> (PathGuard, TestGateway) {
    let dir = std::env::temp_dir().join(format!("gw-aio-{}-{}", std::process::id(), rand_u16()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("credentials.toml");
    std::fs::write(
        &path,
        format!("[[device]]\nendpoint = \"{ep}\"\nmode = \"psk\"\nidentity = \"{ep}\"\nkey_hex = \"{KEY_HEX}\"\n"),
    )
    .unwrap();
    let gw = TestGateway::start(None, |c| c.security.credentials = Some(path));
    (PathGuard(dir), gw)
}

fn spawn(gw: &TestGateway, ep: &str, key_hex: &str, timeout: &str) -> ClientProcess {
    let port = gw.dtls.unwrap().port().to_string();
    ClientProcess::lwm2m_client(
        "python3",
        "aiocoap-client.py",
        gw,
        ep,
        120,
        &[
            "--port",
            &port,
            "--psk-identity",
            ep,
            "--psk-key-hex",
            key_hex,
            "--timeout",
            timeout,
        ],
    )
}

#[test]
fn aiocoap_over_tinydtls_registers_is_read_written_observed_and_deregisters() {
    if !python_ready() {
        return;
    }
    let ep = format!("aio-dtls-{}", rand_u16());
    let (_dir, gw) = gateway(&ep);
    let obs = gw.observer();
    let mut c = spawn(&gw, &ep, KEY_HEX, "90");
    let cmd = |v: serde_json::Value| obs.command(&ep, v);

    c.expect("REGISTERED rd/");
    let (_, reg) = obs.next_of("register");
    assert_eq!(reg["data"]["security"], "psk");
    assert_eq!(
        reg["data"]["objectList"],
        json!(["/1/0", "/3/0", "/3303/0"])
    );

    cmd(json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/3/0/0","value":"aiocoap-maker"}])
    );
    c.expect("READ /3/0/0");
    cmd(
        json!({"reqID": 2, "msgType": "write", "data": {"path": "/3303/0/5701", "type": "String", "value": "Far"}}),
    );
    assert_eq!(obs.next_of("write").1["data"]["code"], "2.04");
    assert_eq!(c.expect("WRITE"), "WRITE /3303/0/5701 Far");

    cmd(json!({"reqID": 3, "msgType": "observe", "data": {"path": "/3303/0/5700"}}));
    assert_eq!(
        obs.next_of("observe").1["data"]["content"],
        json!([{"path":"/3303/0/5700","value":21.5}])
    );
    c.expect("OBSERVE /3303/0/5700");
    c.say("set /3303/0/5700 30.5");
    c.expect("SET /3303/0/5700");
    let (_, n) = obs.next_of("notify");
    assert_eq!(
        n["data"]["content"],
        json!([{"path":"/3303/0/5700","value":30.5}])
    );

    c.say("send /3303/0/5700");
    c.expect("SENT");
    assert_eq!(
        obs.next_of("send").1["data"]["content"][0]["path"],
        "/3303/0/5700"
    );

    c.say("update");
    c.expect("UPDATED");
    c.say("deregister");
    c.expect("DEREGISTERED");
    assert_eq!(obs.next_of("deregister").1["data"]["ep"], ep.as_str());
    assert_eq!(gw.metrics().forbidden.load(Ordering::Relaxed), 0);
}

#[test]
fn aiocoap_with_a_wrong_key_never_registers() {
    if !python_ready() {
        return;
    }
    let ep = format!("aio-bad-{}", rand_u16());
    let (_dir, gw) = gateway(&ep);
    let c = spawn(&gw, &ep, "ffffffffffffffffffffffffffffffff", "20");
    let line = c.expect("ERROR");
    assert!(line.contains("register"), "{line}");
    assert!(gw.metrics().dtls_failed.load(Ordering::Relaxed) >= 1);
    assert_eq!(gw.metrics().registrations.load(Ordering::Relaxed), 0);
}
