//! Interop with a real LwM2M client nobody here wrote: the npm package `lwm2m-node-lib` (LwM2M
//! 1.0, text only), driven through `tests/interop/node-client.js`. It registers, answers reads,
//! writes, execute and discover issued from MQTT, updates from a new source port and deregisters
//! from yet another one.
//!
//! Needs Node.js and npm; `npm ci` runs here when `tests/interop/node_modules` is missing. Without
//! Node the test says so and passes, except under CI (`CI` set), where it fails.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[test]
fn lwm2m_node_lib_client_end_to_end() {
    if !npm_ready(
        "tests/interop",
        "lwm2m-node-lib",
        "the lwm2m-node-lib interop test",
    ) {
        return;
    }
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let ep = format!("node-interop-{}", rand_u16());
    let mut c = ClientProcess::lwm2m_client("node", "node-client.js", &gw, &ep, 60, &[]);
    c.expect("REGISTERED rd/");
    let (topic, ev) = obs.next_of("register");
    assert_eq!(topic, format!("lwm2m/{ep}/up/resp"));
    assert_eq!(ev["data"]["lwm2m"], "1.0");
    assert_eq!(ev["data"]["lt"], 60);
    let mut objects: Vec<String> =
        serde_json::from_value(ev["data"]["objectList"].clone()).unwrap();
    objects.sort();
    assert_eq!(objects, ["/1/0", "/3/0"]);

    let cmd = |v: serde_json::Value| obs.command(&ep, v);
    cmd(json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}));
    let (_, r) = obs.next_of("read");
    assert_eq!(
        r,
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/0","code":"2.05","codeMsg":"content",
                   "content":[{"path":"/3/0/0","value":"Open Mobile Alliance"}]}})
    );
    c.expect("READ /3/0/0");
    cmd(json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/9"}}));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/3/0/9","value":87}])
    );
    c.expect("READ /3/0/9");

    cmd(
        json!({"reqID": 3, "msgType": "write", "data": {"path": "/1/0/1", "type": "Integer", "value": 600}}),
    );
    assert_eq!(obs.next_of("write").1["data"]["code"], "2.04");
    assert_eq!(c.expect("WRITE"), "WRITE /1/0/1 600");
    cmd(json!({"reqID": 4, "msgType": "read", "data": {"path": "/1/0/1"}}));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/1/0/1","value":600}])
    );
    c.expect("READ /1/0/1");

    cmd(json!({"reqID": 5, "msgType": "execute", "data": {"path": "/3/0/4", "args": "reboot"}}));
    assert_eq!(obs.next_of("execute").1["data"]["code"], "2.04");
    assert_eq!(c.expect("EXECUTE"), "EXECUTE /3/0/4 reboot");

    cmd(json!({"reqID": 6, "msgType": "discover", "data": {"path": "/3/0"}}));
    let (_, d) = obs.next_of("discover");
    assert_eq!(d["data"]["code"], "2.05");
    let links = d["data"]["content"].as_array().unwrap();
    assert!(links.contains(&json!("</3/0/0>")), "{d}");

    // Update comes from a new source port: the gateway follows it.
    c.say("update");
    c.expect("UPDATED");
    assert_eq!(obs.next_of("update").1["data"]["ep"], ep.as_str());
    cmd(json!({"reqID": 7, "msgType": "read", "data": {"path": "/3/0/1"}}));
    assert_eq!(
        obs.next_of("read").1["data"]["content"],
        json!([{"path":"/3/0/1","value":"Lightweight M2M Client"}])
    );
    c.expect("READ /3/0/1");

    // Observe: text answers, CON notifications (ACKed by the gateway), cancel.
    cmd(json!({"reqID": 8, "msgType": "observe", "data": {"path": "/3/0/9"}}));
    let (_, o) = obs.next_of("observe");
    assert_eq!(o["data"]["content"], json!([{"path":"/3/0/9","value":87}]));
    c.expect("READ /3/0/9");
    for level in [50, 20] {
        c.say(&format!("set /3/0/9 {level}"));
        c.expect("SET /3/0/9");
        let (topic, n) = obs.next_of("notify");
        assert_eq!(topic, format!("lwm2m/{ep}/up/notify"));
        assert_eq!(n["reqID"], 8);
        assert_eq!(
            n["data"]["content"],
            json!([{"path":"/3/0/9","value":level}])
        );
    }
    // lwm2m-node-lib answers GET Observe=1 with an empty ACK only (seen on the wire): the
    // gateway reports `ack`, and the device's next notification, which carries the cancel's
    // token, completes the cancel; after that the observation is gone for good.
    cmd(json!({"reqID": 9, "msgType": "cancel-observe", "data": {"path": "/3/0/9"}}));
    assert_eq!(obs.next_of("ack").1["reqID"], 9);
    c.expect("READ /3/0/9");
    c.say("set /3/0/9 30");
    c.expect("SET /3/0/9");
    let (_, cancel) = obs.next_of("cancel-observe");
    assert_eq!(
        cancel["data"]["content"],
        json!([{"path":"/3/0/9","value":30}])
    );
    c.say("set /3/0/9 31");
    c.expect("SET /3/0/9");
    obs.quiet(Duration::from_millis(500));

    // Deregister from yet another port: matched by location.
    c.say("deregister");
    c.expect("DEREGISTERED");
    assert_eq!(
        obs.next_of("deregister").1,
        json!({"msgType":"deregister","data":{"ep":ep,"reason":"deregistered"}})
    );
}
