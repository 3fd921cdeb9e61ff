//! Interop with a real LwM2M 1.1 client built on the PyPI package `aiocoap`
//! (`tests/interop/aiocoap-client.py`): SenML JSON/CBOR reads, writes, execute, discover,
//! observe -> notifications -> cancel, composite read/write/observe, Send, queue mode.
//!
//! Needs Python 3 with `aiocoap` and `cbor2` (`tests/interop/requirements.txt`); the test
//! installs them with pip when missing. Without Python it says so and passes, except under CI.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

fn python_ready() -> bool {
    let import_ok = || {
        Command::new("python3")
            .args(["-c", "import aiocoap, cbor2"])
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
        "python3 with aiocoap is unavailable (pip install -r tests/interop/requirements.txt)",
        "the aiocoap interop test",
    );
    false
}

fn spawn(gw: &TestGateway, ep: &str, extra: &[&str]) -> ClientProcess {
    ClientProcess::lwm2m_client("python3", "aiocoap-client.py", gw, ep, 120, extra)
}

#[test]
fn aiocoap_senml_client_end_to_end() {
    if !python_ready() {
        return;
    }
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let ep = format!("aio-{}", rand_u16());
    let mut c = spawn(&gw, &ep, &[]);
    let cmd = |v: serde_json::Value| obs.command(&ep, v);

    c.expect("REGISTERED rd/");
    let (_, reg) = obs.next_of("register");
    assert_eq!(reg["data"]["lwm2m"], "1.1");
    assert_eq!(
        reg["data"]["objectList"],
        json!(["/1/0", "/3/0", "/3303/0"])
    );

    // Reads: SenML CBOR is the device's best announced 1.1 format.
    cmd(json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/3/0/0","value":"aiocoap-maker"}])
    );
    c.expect("READ /3/0/0");
    cmd(json!({"reqID": 2, "msgType": "read", "data": {"path": "/3303/0"}}));
    let (_, r) = obs.next_of("read");
    assert_eq!(
        r["data"]["content"],
        json!([{"path":"/3303/0/5700","value":21.5},{"path":"/3303/0/5701","value":"Cel"}])
    );
    c.expect("READ /3303/0");
    cmd(json!({"reqID": 3, "msgType": "read", "data": {"path": "/3/0/9", "format": "senml-json"}}));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/3/0/9","value":95}])
    );
    c.expect("READ /3/0/9");

    // Write (the device announced SenML: the write goes as SenML CBOR), execute, discover.
    cmd(
        json!({"reqID": 4, "msgType": "write", "data": {"path": "/3303/0/5701", "type": "String", "value": "Far"}}),
    );
    assert_eq!(obs.next_of("write").1["data"]["code"], "2.04");
    assert_eq!(c.expect("WRITE"), "WRITE /3303/0/5701 Far");
    cmd(json!({"reqID": 5, "msgType": "execute", "data": {"path": "/3/0/4"}}));
    assert_eq!(obs.next_of("execute").1["data"]["code"], "2.04");
    c.expect("EXECUTE /3/0/4");
    cmd(json!({"reqID": 6, "msgType": "discover", "data": {"path": "/3303/0"}}));
    let (_, d) = obs.next_of("discover");
    assert!(
        d["data"]["content"]
            .as_array()
            .unwrap()
            .contains(&json!("</3303/0/5700>")),
        "{d}"
    );

    // Observe -> notification -> cancel.
    cmd(json!({"reqID": 7, "msgType": "observe", "data": {"path": "/3303/0/5700"}}));
    let (_, o) = obs.next_of("observe");
    assert_eq!(
        o["data"]["content"],
        json!([{"path":"/3303/0/5700","value":21.5}])
    );
    c.expect("OBSERVE /3303/0/5700");
    c.say("set /3303/0/5700 30.5");
    c.expect("SET /3303/0/5700");
    let (topic, n) = obs.next_of("notify");
    assert_eq!(topic, format!("lwm2m/{ep}/up/notify"));
    assert_eq!(n["reqID"], 7);
    assert!(n["seqNum"].as_u64().is_some());
    assert_eq!(
        n["data"]["content"],
        json!([{"path":"/3303/0/5700","value":30.5}])
    );
    cmd(json!({"reqID": 8, "msgType": "cancel-observe", "data": {"path": "/3303/0/5700"}}));
    assert_eq!(obs.next_of("cancel-observe").1["data"]["code"], "2.05");
    c.expect("CANCEL /3303/0/5700");
    c.say("set /3303/0/5700 31");
    c.expect("SET");
    obs.quiet(Duration::from_millis(500));

    // Composite read and write (FETCH / iPATCH with SenML).
    cmd(
        json!({"reqID": 9, "msgType": "read-composite", "data": {"paths": ["/3/0/0", "/3303/0/5700"]}}),
    );
    let (_, rc) = obs.next_of("read-composite");
    assert_eq!(rc["data"]["code"], "2.05");
    assert_eq!(
        rc["data"]["content"],
        json!([{"path":"/3/0/0","value":"aiocoap-maker"},{"path":"/3303/0/5700","value":31.0}])
    );
    c.expect("READ");
    c.expect("READ");
    cmd(
        json!({"reqID": 10, "msgType": "write-composite", "data": {"content": [
        {"path": "/3303/0/5701", "type": "String", "value": "K"}, {"path": "/1/0/1", "type": "Integer", "value": 300}]}}),
    );
    assert_eq!(obs.next_of("write-composite").1["data"]["code"], "2.04");
    let mut writes = [c.expect("WRITE"), c.expect("WRITE")];
    writes.sort();
    assert_eq!(
        writes,
        [
            "WRITE /1/0/1 300".to_string(),
            "WRITE /3303/0/5701 K".to_string()
        ]
    );

    // Observe-composite, notification, cancel.
    cmd(
        json!({"reqID": 11, "msgType": "observe-composite", "data": {"paths": ["/3/0/9", "/3303/0/5700"]}}),
    );
    assert_eq!(obs.next_of("observe-composite").1["data"]["code"], "2.05");
    c.expect("OBSERVE");
    c.expect("OBSERVE");
    c.say("set /3/0/9 50");
    c.expect("SET");
    let (_, n) = obs.next_of("notify");
    assert_eq!(n["reqID"], 11);
    assert!(
        n["data"]["content"]
            .as_array()
            .unwrap()
            .contains(&json!({"path":"/3/0/9","value":50})),
        "{n}"
    );
    cmd(
        json!({"reqID": 12, "msgType": "cancel-observe-composite", "data": {"paths": ["/3/0/9", "/3303/0/5700"]}}),
    );
    assert_eq!(
        obs.next_of("cancel-observe-composite").1["data"]["code"],
        "2.05"
    );

    // Send.
    c.say("send /3303/0/5700");
    c.expect("CANCEL");
    c.expect("CANCEL");
    c.expect("SENT");
    let (topic, s) = obs.next_of("send");
    assert_eq!(topic, format!("lwm2m/{ep}/up/notify"));
    assert_eq!(
        s["data"]["content"],
        json!([{"path":"/3303/0/5700","value":31.0}])
    );

    c.say("deregister");
    c.expect("DEREGISTERED");
    assert_eq!(
        obs.next_of("deregister").1["data"]["reason"],
        "deregistered"
    );
}

#[test]
fn aiocoap_queue_mode_client_gets_commands_in_order_after_waking() {
    if !python_ready() {
        return;
    }
    let gw = TestGateway::start(None, |c| c.qmode_time_window = Duration::from_millis(800));
    let obs = gw.observer();
    let ep = format!("aioq-{}", rand_u16());
    let mut c = spawn(&gw, &ep, &["--queue"]);
    let cmd = |v: serde_json::Value| obs.command(&ep, v);
    c.expect("REGISTERED");
    let (_, reg) = obs.next_of("register");
    assert_eq!(reg["data"]["Q"], "");
    c.say("sleep");
    std::thread::sleep(Duration::from_millis(1200));
    for i in 0..3 {
        cmd(json!({"reqID": i, "msgType": "read", "data": {"path": "/3/0/9"}}));
    }
    // Asleep: nothing reaches the device, nothing comes back.
    obs.quiet(Duration::from_millis(800));
    c.say("wake");
    // The queued reads may be served before the client prints UPDATED.
    let mut lines: Vec<String> = (0..4).map(|_| c.expect("")).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["READ /3/0/9", "READ /3/0/9", "READ /3/0/9", "UPDATED"]
    );
    obs.next_of("update");
    for i in 0..3 {
        let (_, r) = obs.next_of("read");
        assert_eq!(r["reqID"], i, "queued commands arrive in order");
        assert_eq!(r["data"]["content"], json!([{"path":"/3/0/9","value":95}]));
    }
    c.say("deregister");
    c.expect("DEREGISTERED");
}
