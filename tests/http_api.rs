//! The HTTP API (issue 13) over real HTTP against a running gateway with devices on real UDP:
//! every route, with its errors (unknown device, bad JSON, timeout, missing token → 401), and
//! the promise that a command sent over HTTP is answered with exactly the JSON published on
//! MQTT. `tests/web_ui.rs` drives the page in a browser; `tests/http_node.rs` uses a real client.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lwm2m_gateway::coap::{code, MessageView};
use serde_json::{json, Value};
use support::*;

const BASE: &str = "/api/v5/gateways/lwm2m";

fn api(gw: &TestGateway) -> SocketAddr {
    gw.http.expect("the HTTP API is on")
}

/// Registers `ep` from `d` with binding `b` and objects /1/0, /3/0, /3303/0; its location.
fn register(d: &Device, ep: &str, b: &str) -> String {
    let q = format!("ep={ep}");
    let b = format!("b={b}");
    let reg = Msg::con(code::POST, 1)
        .token(&[1])
        .path(&["rd"])
        .query(&[&q, "lt=300", "lwm2m=1.1", &b])
        .payload(b"</1/0>,</3/0>,</3303/0>")
        .build();
    d.send(&reg);
    let created = d.recv();
    assert_eq!(MessageView::parse(&created).unwrap().code(), code::CREATED);
    location_id(&created).unwrap()
}

fn endpoints(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint_name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn devices_are_listed_paged_filtered_and_shown() {
    let gw = TestGateway::start(None, |c| c.qmode_time_window = Duration::from_millis(500));
    let obs = gw.observer();
    let a = api(&gw);
    let names = ["alpha-1", "alpha-2", "beta-1", "beta-2", "gamma"];
    let devices: Vec<Device> = names.iter().map(|_| gw.device()).collect();
    let mut locations = Vec::new();
    for (d, ep) in devices.iter().zip(names) {
        let b = if ep == "beta-2" { "UQ" } else { "U" };
        locations.push(register(d, ep, b));
        obs.next_of("register");
    }

    let page1 = get(a, &format!("{BASE}/clients?limit=2")).json();
    assert_eq!(endpoints(&page1), ["alpha-1", "alpha-2"]);
    assert_eq!(
        page1["meta"],
        json!({"page": 1, "limit": 2, "count": 5, "hasnext": true})
    );
    let page3 = get(a, &format!("{BASE}/clients?limit=2&page=3")).json();
    assert_eq!(endpoints(&page3), ["gamma"]);
    assert_eq!(page3["meta"]["hasnext"], false);
    let after = get(a, &format!("{BASE}/clients?limit=2&after=alpha-2")).json();
    assert_eq!(endpoints(&after), ["beta-1", "beta-2"]);
    let prefix = get(a, &format!("{BASE}/clients?endpoint_prefix=beta")).json();
    assert_eq!(endpoints(&prefix), ["beta-1", "beta-2"]);
    assert_eq!(prefix["meta"]["count"], 2);
    let like = get(a, &format!("{BASE}/clients?like_endpoint_name=-1")).json();
    assert_eq!(endpoints(&like), ["alpha-1", "beta-1"]);
    let queue = get(a, &format!("{BASE}/clients?queue_mode=true")).json();
    assert_eq!(endpoints(&queue), ["beta-2"]);
    // The queue-mode device falls asleep after its 0.5 s window.
    std::thread::sleep(Duration::from_millis(700));
    let asleep = get(a, &format!("{BASE}/clients?online=false")).json();
    assert_eq!(endpoints(&asleep), ["beta-2"]);
    assert_eq!(asleep["data"][0]["online"], false);
    let awake = get(a, &format!("{BASE}/clients?online=true")).json();
    assert_eq!(awake["meta"]["count"], 4);

    for bad in [
        "limit=0",
        "limit=1001",
        "page=0",
        "online=maybe",
        "limit=x",
        "page=1000&limit=1000",
    ] {
        let r = get(a, &format!("{BASE}/clients?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["code"], "BAD_REQUEST");
    }

    let one = get(a, &format!("{BASE}/clients/alpha-2"));
    assert_eq!(one.status, 200);
    assert_eq!(one.header("Content-Type"), Some("application/json"));
    let d = one.json();
    let addr = devices[1].sock.local_addr().unwrap();
    assert_eq!(d["endpoint_name"], "alpha-2");
    assert_eq!(d["clientid"], "alpha-2");
    assert_eq!(d["proto_name"], "LwM2M");
    assert_eq!(d["proto_ver"], "1.1");
    assert_eq!(d["lifetime"], 300);
    assert_eq!(d["binding"], "U");
    assert_eq!(d["security"], "nosec");
    assert_eq!(d["ip_address"], addr.ip().to_string());
    assert_eq!(d["port"], addr.port());
    assert_eq!(d["registration_id"], locations[1]);
    assert_eq!(d["object_list"], json!(["/1/0", "/3/0", "/3303/0"]));
    assert_eq!(d["observations"], json!([]));
    assert_eq!(d["queued_commands"], 0);
    let expires = d["expires_at"].as_u64().unwrap();
    let seen = d["last_seen"].as_u64().unwrap();
    assert!(
        (expires - seen).abs_diff(300_000) < 2_000,
        "{seen} {expires}"
    );

    let missing = get(a, &format!("{BASE}/clients/nobody"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "NOT_FOUND");
    // Percent-encoded endpoint names reach the device they name.
    let d = gw.device();
    register(&d, "odd name?é", "U");
    let odd = get(a, &format!("{BASE}/clients/odd%20name%3F%C3%A9"));
    assert_eq!(odd.json()["endpoint_name"], "odd name?é");
}

/// Sends `cmd` over HTTP while `device` answers the request it gets with `respond`; the HTTP
/// answer must be the JSON published on MQTT for it.
fn exchange(
    gw: &TestGateway,
    obs: &Observer,
    device: &Device,
    ep: &str,
    cmd: Value,
    respond: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Value {
    let a = api(gw);
    let path = format!("{BASE}/clients/{ep}/commands");
    let body = cmd.to_string();
    let http_call = std::thread::spawn(move || post(a, &path, &body));
    let req = device.recv();
    device.send(&respond(&req));
    let reply = http_call.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Its answer's msgType is the command's; a register event the observer caught late is not.
    let (topic, published) = obs.next_of(cmd["msgType"].as_str().unwrap());
    assert_eq!(topic, format!("lwm2m/{ep}/up/resp"));
    let answered = reply.json();
    assert_eq!(answered, published, "the HTTP answer is the MQTT message");
    answered
}

#[test]
fn every_operation_over_http_answers_with_the_json_mqtt_gets() {
    let gw = TestGateway::start(None, |_| {});
    let dev = gw.device();
    register(&dev, "ops", "U");
    let obs = gw.observer();
    let r = exchange(
        &gw,
        &obs,
        &dev,
        "ops",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
        |q| answer(q, code::CONTENT, Some(0), b"ACME"),
    );
    assert_eq!(
        r["data"]["content"],
        json!([{"path": "/3/0/0", "value": "ACME"}])
    );
    assert_eq!(r["reqID"], 1);
    // Without a reqID the answer has none, as on MQTT.
    let r = exchange(
        &gw,
        &obs,
        &dev,
        "ops",
        json!({"msgType": "read", "data": {"path": "/3303/0/5700"}}),
        |q| answer(q, code::CONTENT, Some(0), b"21.5"),
    );
    assert!(r.get("reqID").is_none());
    assert_eq!(r["data"]["content"][0]["value"], 21.5);
    // (command, the device's code, content format and payload, the code the answer shows)
    type Case = (Value, u8, Option<u32>, &'static [u8], &'static str);
    let cases: Vec<Case> = vec![
        (
            json!({"reqID": 2, "msgType": "write", "data": {"path": "/1/0/1", "type": "Integer", "value": 600}}),
            code::CHANGED,
            None,
            b"",
            "2.04",
        ),
        (
            json!({"reqID": 3, "msgType": "execute", "data": {"path": "/3/0/4", "args": ""}}),
            code::CHANGED,
            None,
            b"",
            "2.04",
        ),
        (
            json!({"reqID": 4, "msgType": "discover", "data": {"path": "/3/0"}}),
            code::CONTENT,
            Some(40),
            b"</3/0>,</3/0/0>",
            "2.05",
        ),
        (
            json!({"reqID": 5, "msgType": "write-attr", "data": {"path": "/3/0/9", "pmin": "5", "pmax": "60"}}),
            code::CHANGED,
            None,
            b"",
            "2.04",
        ),
        (
            json!({"reqID": 6, "msgType": "create", "data": {"basePath": "/3303", "content": [{"path": "/3303/1/5700", "type": "Float", "value": 1.5}]}}),
            code::CREATED,
            None,
            b"",
            "2.01",
        ),
        (
            json!({"reqID": 7, "msgType": "delete", "data": {"path": "/3303/1"}}),
            code::DELETED,
            None,
            b"",
            "2.02",
        ),
        (
            json!({"reqID": 8, "msgType": "read-composite", "data": {"paths": ["/3/0/0", "/3/0/1"]}}),
            code::CONTENT,
            Some(110),
            br#"[{"bn":"/3/0/","n":"0","vs":"ACME"},{"n":"1","vs":"X1"}]"#,
            "2.05",
        ),
        (
            json!({"reqID": 9, "msgType": "write-composite", "data": {"content": [{"path": "/1/0/1", "type": "Integer", "value": 60}]}}),
            code::CHANGED,
            None,
            b"",
            "2.04",
        ),
    ];
    for (cmd, c, cf, payload, want) in cases {
        let r = exchange(&gw, &obs, &dev, "ops", cmd.clone(), |q| {
            answer(q, c, cf, payload)
        });
        assert_eq!(r["data"]["code"], want, "{cmd}");
        assert_eq!(r["msgType"], cmd["msgType"]);
    }
    // A device's error answer is still 200: the JSON carries it.
    let r = exchange(
        &gw,
        &obs,
        &dev,
        "ops",
        json!({"reqID": 10, "msgType": "read", "data": {"path": "/5/0/1"}}),
        |q| answer(q, code::NOT_FOUND, None, b""),
    );
    assert_eq!(r["data"]["code"], "4.04");

    // Observe: the observation shows on the device; cancel ends it.
    let mut token = Vec::new();
    let r = exchange(
        &gw,
        &obs,
        &dev,
        "ops",
        json!({"reqID": 11, "msgType": "observe", "data": {"path": "/3303/0/5700"}}),
        |q| {
            token = MessageView::parse(q).unwrap().token().to_vec();
            observe_answer(q, 1, b"20")
        },
    );
    assert_eq!(r["data"]["code"], "2.05");
    let d = get(api(&gw), &format!("{BASE}/clients/ops")).json();
    assert_eq!(d["observations"], json!([{"path": "/3303/0/5700"}]));
    // Its notifications go to MQTT as usual.
    dev.send(&notification(&token, 77, 2, b"21"));
    assert_eq!(obs.next_of("notify").1["reqID"], 11);
    let r = exchange(
        &gw,
        &obs,
        &dev,
        "ops",
        json!({"reqID": 12, "msgType": "cancel-observe", "data": {"path": "/3303/0/5700"}}),
        |q| answer(q, code::CONTENT, Some(0), b"21"),
    );
    assert_eq!(r["msgType"], "cancel-observe");
    let d = get(api(&gw), &format!("{BASE}/clients/ops")).json();
    assert_eq!(d["observations"], json!([]));
}

#[test]
fn command_errors_unknown_device_bad_json_timeout_and_limits() {
    let gw = TestGateway::start(None, |c| c.http.command_timeout = Duration::from_secs(5));
    let a = api(&gw);
    let dev = gw.device();
    register(&dev, "quiet", "U");
    let read = r#"{"reqID":1,"msgType":"read","data":{"path":"/3/0/0"}}"#;

    let r = post(a, &format!("{BASE}/clients/nobody/commands"), read);
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("NOT_FOUND"))
    );
    for bad in [
        "{not json",
        "[1,2]",
        r#"{"msgType":"reboot","data":{}}"#,
        r#"{"msgType":"read","data":{"path":"/x"}}"#,
        "",
    ] {
        let r = post(a, &format!("{BASE}/clients/quiet/commands"), bad);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
        assert_eq!(r.json()["code"], "BAD_REQUEST");
    }
    assert!(
        dev.try_recv(Duration::from_millis(200)).is_none(),
        "nothing reached the device"
    );
    // The device never answers: 504 after the timeout asked for.
    let started = std::time::Instant::now();
    let r = post(
        a,
        &format!("{BASE}/clients/quiet/commands?timeout=0.5"),
        read,
    );
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (504, json!("TIMEOUT"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        dev.try_recv(Duration::from_secs(1)).is_some(),
        "the read went out"
    );
    for bad in ["timeout=0", "timeout=-1", "timeout=abc"] {
        let r = post(a, &format!("{BASE}/clients/quiet/commands?{bad}"), read);
        assert_eq!(r.status, 400, "{bad}");
    }
    let huge = vec![b' '; (1 << 20) + 10];
    let r = http(
        a,
        "POST",
        &format!("{BASE}/clients/quiet/commands"),
        &[],
        &huge,
    );
    assert_eq!(r.status, 413);
    assert_eq!(
        get(a, &format!("{BASE}/clients/quiet/commands")).status,
        405
    );
    assert_eq!(get(a, &format!("{BASE}/nothing")).status, 404);
    assert_eq!(get(a, "/nothing/at/all").status, 404);
}

#[test]
fn kick_ends_the_registration_with_a_deregister_event() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let a = api(&gw);
    let dev = gw.device();
    let loc = register(&dev, "kickme", "U");
    obs.next_of("register");
    let r = http(a, "DELETE", &format!("{BASE}/clients/kickme"), &[], b"");
    assert_eq!(r.status, 204);
    let (_, ev) = obs.next_of("deregister");
    assert_eq!(ev["data"], json!({"ep": "kickme", "reason": "kicked"}));
    dev.send(&Msg::con(code::POST, 9).path(&["rd", &loc]).build());
    assert_eq!(
        MessageView::parse(&dev.recv()).unwrap().code(),
        code::NOT_FOUND
    );
    assert_eq!(
        http(a, "DELETE", &format!("{BASE}/clients/kickme"), &[], b"").status,
        404
    );
    assert_eq!(get(a, &format!("{BASE}/clients/kickme")).status, 404);
}

#[test]
fn emqx_lwm2m_routes_answer_like_commands() {
    let gw = TestGateway::start(None, |_| {});
    let obs = gw.observer();
    let dev = gw.device();
    register(&dev, "emqx", "U");
    let a = api(&gw);
    let call = |method: &'static str, path: String, respond: Vec<u8>| {
        let t = std::thread::spawn(move || http(a, method, &path, &[], b""));
        let req = dev.recv();
        let v = MessageView::parse(&req).unwrap();
        let reply = Msg::ack_to(&req, respond[0])
            .cf(Some(0))
            .payload(&respond[1..])
            .build();
        dev.send(&reply);
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        (v.code(), uri_path(&req), r.json())
    };
    let (m, p, r) = call(
        "POST",
        format!("{BASE}/clients/emqx/read?path=/3/0/0"),
        [&[code::CONTENT][..], b"ACME"].concat(),
    );
    assert_eq!((m, p.as_str()), (code::GET, "/3/0/0"));
    assert_eq!(r["data"]["content"][0]["value"], "ACME");
    let (m, _, r) = call(
        "POST",
        format!("{BASE}/clients/emqx/write?path=/1/0/1&type=Integer&value=120"),
        vec![code::CHANGED],
    );
    assert_eq!((m, r["msgType"].clone()), (code::PUT, json!("write")));
    let (_, _, r) = call(
        "GET",
        format!("{BASE}/clients/emqx/lookup?path=/3/0&action=discover"),
        [&[code::CONTENT][..], b"</3/0>"].concat(),
    );
    assert_eq!(r["msgType"], "discover");
    let (_, _, r) = call(
        "POST",
        format!("{BASE}/clients/emqx/observe?path=/3/0/9&enable=true"),
        [&[code::CONTENT][..], b"90"].concat(),
    );
    assert_eq!(r["msgType"], "observe");
    // Each was published on MQTT as well.
    for kind in ["read", "write", "discover", "observe"] {
        assert_eq!(obs.next_of(kind).0, "lwm2m/emqx/up/resp");
    }
    assert_eq!(
        post(a, &format!("{BASE}/clients/emqx/read"), "").status,
        400,
        "path is required"
    );
    assert_eq!(
        post(a, &format!("{BASE}/clients/emqx/write?path=/1/0/1"), "").status,
        400,
        "type and value are required"
    );
}

#[test]
fn object_definitions_name_objects_and_resources() {
    let gw = TestGateway::start(None, |_| {});
    let a = api(&gw);
    let list = get(a, &format!("{BASE}/objects")).json();
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&3) && ids.contains(&3303), "{ids:?}");
    let dev = get(a, &format!("{BASE}/objects/3")).json();
    assert_eq!(dev["name"], "Device");
    let reboot = dev["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 4)
        .unwrap();
    assert_eq!(
        (reboot["name"].clone(), reboot["operations"].clone()),
        (json!("Reboot"), json!("E"))
    );
    let temp = get(a, &format!("{BASE}/objects/3303")).json();
    let value = temp["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 5700)
        .unwrap();
    assert_eq!(
        (value["type"].clone(), value["operations"].clone()),
        (json!("Float"), json!("R"))
    );
    assert_eq!(get(a, &format!("{BASE}/objects/64999")).status, 404);
    assert_eq!(get(a, &format!("{BASE}/objects/x")).status, 404);
}

#[test]
fn credentials_are_managed_without_showing_keys() {
    let gw = TestGateway::start(None, |_| {});
    let a = api(&gw);
    let key = "000102030405060708090a0b0c0d0e0f";
    let entry = json!({"mode": "psk", "identity": "id-cred-1", "key_hex": key}).to_string();
    let put = |body: &str| {
        http(
            a,
            "PUT",
            &format!("{BASE}/credentials/cred-1"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = put(&entry);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(put(&entry).status, 200, "replaced");
    let got = get(a, &format!("{BASE}/credentials/cred-1"));
    assert_eq!(got.status, 200);
    assert!(!got.text().contains(key), "no key material: {}", got.text());
    assert_eq!(got.json()["content"]["identity"], "id-cred-1");
    let list = get(a, &format!("{BASE}/credentials?limit=10")).json();
    assert_eq!(list["total"], 1);
    assert!(!list.to_string().contains(key));
    // The endpoint is the path's.
    let other = json!({"endpoint": "someone-else", "mode": "psk", "identity": "x", "key_hex": key});
    assert_eq!(put(&other.to_string()).status, 400);
    assert_eq!(put("{not json").status, 400);
    let bad = put(&json!({"mode": "psk", "identity": "x"}).to_string());
    assert_eq!(bad.status, 400);
    assert!(!bad.text().contains(key));
    // The identity is taken by cred-1.
    let taken = json!({"mode": "psk", "identity": "id-cred-1", "key_hex": key}).to_string();
    let r = http(
        a,
        "PUT",
        &format!("{BASE}/credentials/cred-2"),
        &[],
        taken.as_bytes(),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        http(a, "DELETE", &format!("{BASE}/credentials/cred-1"), &[], b"").status,
        204
    );
    assert_eq!(get(a, &format!("{BASE}/credentials/cred-1")).status, 404);
    assert_eq!(
        http(a, "DELETE", &format!("{BASE}/credentials/cred-1"), &[], b"").status,
        404
    );
    assert!(gw.gw.as_ref().unwrap().credentials().read().is_empty());
}

#[test]
fn a_token_guards_everything_but_health_and_the_page() {
    let gw = TestGateway::start(None, |c| c.http.token = Some("s3cret-token".into()));
    let a = api(&gw);
    let dev = gw.device();
    register(&dev, "guarded", "U");
    for path in [
        format!("{BASE}/clients"),
        format!("{BASE}/clients/guarded"),
        format!("{BASE}/objects"),
        "/metrics".to_string(),
        "/ready".to_string(),
        "/events".to_string(),
    ] {
        let r = get(a, &path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        assert_eq!(r.json()["code"], "UNAUTHORIZED");
        assert!(!r.text().contains("s3cret"), "the token is never echoed");
        let wrong = http(
            a,
            "GET",
            &path,
            &[("Authorization", "Bearer s3cret-tokeN")],
            b"",
        );
        assert_eq!(wrong.status, 401, "{path}");
    }
    let kick = http(a, "DELETE", &format!("{BASE}/clients/guarded"), &[], b"");
    assert_eq!(kick.status, 401, "nothing happens without the token");
    let ok = http(
        a,
        "GET",
        &format!("{BASE}/clients"),
        &[("Authorization", "Bearer s3cret-token")],
        b"",
    );
    assert_eq!(
        (ok.status, endpoints(&ok.json())),
        (200, vec!["guarded".to_string()])
    );
    assert_eq!(
        get(a, &format!("{BASE}/clients?token=s3cret-token")).status,
        200
    );
    assert_eq!(get(a, "/health").status, 200);
    assert_eq!(get(a, "/").status, 200);
    assert_eq!(get(a, "/ui/app.js").status, 200);
    // No CORS unless configured.
    assert_eq!(
        get(a, "/health").header("Access-Control-Allow-Origin"),
        None
    );
}

#[test]
fn cors_headers_only_with_an_origin_configured() {
    let gw = TestGateway::start(None, |c| {
        c.http.cors_origin = Some("https://ops.example".into())
    });
    let a = api(&gw);
    let r = get(a, &format!("{BASE}/clients"));
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://ops.example")
    );
    let pre = http(
        a,
        "OPTIONS",
        &format!("{BASE}/clients"),
        &[("Origin", "https://ops.example")],
        b"",
    );
    assert_eq!(pre.status, 204);
    assert!(pre
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("DELETE"));
    assert!(pre
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Authorization"));
    let off = TestGateway::start(None, |_| {});
    assert_eq!(
        http(api(&off), "OPTIONS", &format!("{BASE}/clients"), &[], b"").status,
        405
    );
}

#[test]
fn live_events_stream_registrations_answers_and_notifications_by_endpoint() {
    let gw = TestGateway::start(None, |_| {});
    let a = api(&gw);
    let mut all = EventStream::open(a, "/events", &[]);
    let mut only_b = EventStream::open(a, "/events?endpoint=ev-b", &[]);
    let (da, db) = (gw.device(), gw.device());
    register(&da, "ev-a", "U");
    register(&db, "ev-b", "U");
    let ev = all.next_where(|v| v["msgType"] == "register");
    assert_eq!(ev["endpoint"], "ev-a");
    assert_eq!(ev["topic"], "lwm2m/ev-a/up/resp");
    assert_eq!(ev["message"]["data"]["ep"], "ev-a");
    let ev = only_b.next_where(|_| true);
    assert_eq!(
        (ev["endpoint"].clone(), ev["msgType"].clone()),
        (json!("ev-b"), json!("register"))
    );
    // A command's answer (sent over HTTP) and a notification appear too.
    let t = std::thread::spawn(move || {
        post(
            a,
            &format!("{BASE}/clients/ev-b/commands"),
            r#"{"reqID":5,"msgType":"observe","data":{"path":"/3/0/9"}}"#,
        )
    });
    let req = db.recv();
    let token = MessageView::parse(&req).unwrap().token().to_vec();
    db.send(&observe_answer(&req, 1, b"80"));
    assert_eq!(t.join().unwrap().status, 200);
    let ev = only_b.next_where(|v| v["msgType"] == "observe");
    assert_eq!(ev["message"]["reqID"], 5);
    db.send(&notification(&token, 40, 2, b"79"));
    let ev = only_b.next_where(|v| v["msgType"] == "notify");
    assert_eq!(ev["message"]["data"]["content"][0]["value"], 79);
    // ev-a's deregistration reaches the unfiltered stream, never the filtered one.
    let loc = get(a, &format!("{BASE}/clients/ev-a")).json()["registration_id"]
        .as_str()
        .unwrap()
        .to_string();
    da.send(&Msg::con(code::DELETE, 3).path(&["rd", &loc]).build());
    let ev = all.next_where(|v| v["msgType"] == "deregister");
    assert_eq!(ev["endpoint"], "ev-a");
    // The streams are bounded in number.
    let limited = TestGateway::start(None, |c| c.http.max_event_streams = 1);
    let _one = EventStream::open(api(&limited), "/events", &[]);
    let r = get(api(&limited), "/events");
    assert_eq!(r.status, 503);
}

/// The value of the Prometheus sample `name` (with its labels, as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_count_registrations_commands_and_round_trips() {
    let gw = TestGateway::start(None, |_| {});
    let a = api(&gw);
    let (d1, d2) = (gw.device(), gw.device());
    register(&d1, "m-1", "U");
    register(&d2, "m-2", "UQ");
    // Queue mode by LwM2M 1.1's Q parameter, apart from b=: counted as queue mode all the same.
    let d3 = gw.device();
    let q = Msg::con(code::POST, 1)
        .path(&["rd"])
        .query(&["ep=m-3", "lt=300", "lwm2m=1.1", "b=U", "Q"])
        .payload(b"</3/0>");
    d3.send(&q.build());
    assert_eq!(
        MessageView::parse(&d3.recv()).unwrap().code(),
        code::CREATED
    );
    let obs = gw.observer();
    exchange(
        &gw,
        &obs,
        &d1,
        "m-1",
        json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}),
        |q| answer(q, code::CONTENT, Some(0), b"ACME"),
    );
    exchange(
        &gw,
        &obs,
        &d1,
        "m-1",
        json!({"reqID": 2, "msgType": "read", "data": {"path": "/3/0/9"}}),
        |q| answer(q, code::NOT_FOUND, None, b""),
    );
    // A notification, and a command the gateway refuses itself (no such endpoint).
    let mut token = Vec::new();
    exchange(
        &gw,
        &obs,
        &d1,
        "m-1",
        json!({"reqID": 3, "msgType": "observe", "data": {"path": "/3303/0/5700"}}),
        |q| {
            token = MessageView::parse(q).unwrap().token().to_vec();
            observe_answer(q, 1, b"20")
        },
    );
    d1.send(&notification(&token, 60, 2, b"21"));
    obs.next_of("notify");
    obs.command(
        "nobody",
        json!({"reqID": 4, "msgType": "discover", "data": {"path": "/3/0"}}),
    );
    assert_eq!(obs.next_of("discover").1["data"]["code"], "4.04");
    let r = get(a, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let t = r.text();
    assert!(
        t.contains("# TYPE lwm2m_command_rtt_seconds histogram"),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            r#"lwm2m_registrations{version="1.1",binding="U",queue_mode="false"}"#
        ),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(
            &t,
            r#"lwm2m_registrations{version="1.1",binding="UQ",queue_mode="true"}"#
        ),
        Some(2.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, r#"lwm2m_registration_events_total{event="registered"}"#),
        Some(3.0)
    );
    assert_eq!(sample(&t, "lwm2m_notifications_total"), Some(1.0), "{t}");
    assert_eq!(
        sample(&t, r#"lwm2m_commands_total{type="observe",result="2.05"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, r#"lwm2m_commands_total{type="discover",result="4.04"}"#),
        Some(1.0),
        "the gateway's own refusals count too: {t}"
    );
    assert_eq!(
        sample(&t, r#"lwm2m_commands_total{type="read",result="2.05"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, r#"lwm2m_commands_total{type="read",result="4.04"}"#),
        Some(1.0)
    );
    // Round trips of the three answers from the device (not of the refusal).
    assert_eq!(sample(&t, "lwm2m_command_rtt_seconds_count"), Some(3.0));
    assert_eq!(
        sample(&t, r#"lwm2m_command_rtt_seconds_bucket{le="+Inf"}"#),
        Some(3.0)
    );
    assert!(sample(&t, "lwm2m_datagrams_received_total").unwrap() >= 4.0);
    assert_eq!(sample(&t, "lwm2m_mqtt_connected"), Some(1.0));
    assert_eq!(
        sample(&t, r#"lwm2m_worker_queue_depth{worker="0"}"#),
        Some(0.0)
    );
    assert!(
        t.contains(r#"lwm2m_thread_cpu_seconds_total{thread="event-loop"}"#),
        "{t}"
    );
    assert!(sample(&t, "lwm2m_resident_memory_bytes").unwrap() > 1e6);
    assert!(t.trim_end().ends_with("# EOF"));
    // The counts follow an Update that changes the binding, and a deregistration (a scrape
    // reuses the census of the last second).
    let loc = |ep: &str| {
        let d = get(a, &format!("{BASE}/clients/{ep}")).json();
        d["registration_id"].as_str().unwrap().to_string()
    };
    let (loc1, loc2) = (loc("m-1"), loc("m-2"));
    let update = Msg::con(code::POST, 50)
        .path(&["rd", &loc1])
        .query(&["b=UQ"]);
    d1.send(&update.build());
    assert_eq!(
        MessageView::parse(&d1.recv()).unwrap().code(),
        code::CHANGED
    );
    d2.send(&Msg::con(code::DELETE, 51).path(&["rd", &loc2]).build());
    assert_eq!(
        MessageView::parse(&d2.recv()).unwrap().code(),
        code::DELETED
    );
    std::thread::sleep(Duration::from_millis(1100));
    let t = get(a, "/metrics").text();
    let uq = r#"lwm2m_registrations{version="1.1",binding="UQ",queue_mode="true"}"#;
    let u = r#"lwm2m_registrations{version="1.1",binding="U",queue_mode="false"}"#;
    assert_eq!((sample(&t, uq), sample(&t, u)), (Some(2.0), None), "{t}");
    let ev = |e: &str| {
        sample(
            &t,
            &format!("lwm2m_registration_events_total{{event=\"{e}\"}}"),
        )
    };
    assert_eq!((ev("updated"), ev("deregistered")), (Some(1.0), Some(1.0)));
    let ready = get(a, "/ready");
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"ready": true, "mqtt": true, "listeners": true}))
    );
    assert_eq!(get(a, "/health").json(), json!({"status": "ok"}));
}

#[test]
fn ready_says_no_while_the_broker_is_away() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let gw = TestGateway::start(Some(broker.addr), |c| {
        c.mqtt.reconnect_min = Duration::from_secs(30);
        c.mqtt.reconnect_max = Duration::from_secs(30);
    });
    let a = api(&gw);
    assert_eq!(get(a, "/ready").status, 200);
    drop(broker);
    wait_until("/ready never said no", || get(a, "/ready").status == 503);
    let r = get(a, "/ready").json();
    assert_eq!(r, json!({"ready": false, "mqtt": false, "listeners": true}));
    assert_eq!(get(a, "/health").status, 200, "alive all the same");
}

#[test]
fn a_real_client_driven_over_http() {
    if !npm_ready(
        "tests/interop",
        "lwm2m-node-lib",
        "the HTTP test with lwm2m-node-lib",
    ) {
        return;
    }
    let gw = TestGateway::start(None, |_| {});
    let a = api(&gw);
    let ep = format!("node-http-{}", rand_u16());
    let mut c = ClientProcess::lwm2m_client("node", "node-client.js", &gw, &ep, 300, &[]);
    c.expect("REGISTERED rd/");
    let listed = get(a, &format!("{BASE}/clients?endpoint_prefix={ep}")).json();
    assert_eq!(listed["data"][0]["proto_ver"], "1.0");
    let cmd = |body: Value| {
        let r = post(
            a,
            &format!("{BASE}/clients/{ep}/commands?timeout=20"),
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let r = cmd(json!({"reqID": 1, "msgType": "read", "data": {"path": "/3/0/0"}}));
    assert_eq!(
        r,
        json!({"reqID":1,"msgType":"read","data":{"reqPath":"/3/0/0","code":"2.05","codeMsg":"content",
                   "content":[{"path":"/3/0/0","value":"Open Mobile Alliance"}]}})
    );
    c.expect("READ /3/0/0");
    let r = cmd(
        json!({"reqID": 2, "msgType": "write", "data": {"path": "/1/0/1", "type": "Integer", "value": 600}}),
    );
    assert_eq!(r["data"]["code"], "2.04");
    assert_eq!(c.expect("WRITE"), "WRITE /1/0/1 600");
    let r =
        cmd(json!({"reqID": 3, "msgType": "execute", "data": {"path": "/3/0/4", "args": "now"}}));
    assert_eq!(r["data"]["code"], "2.04");
    assert_eq!(c.expect("EXECUTE"), "EXECUTE /3/0/4 now");
    let r = cmd(json!({"reqID": 4, "msgType": "discover", "data": {"path": "/3/0"}}));
    assert!(
        r["data"]["content"]
            .as_array()
            .unwrap()
            .contains(&json!("</3/0/0>")),
        "{r}"
    );
    // EMQX's route reads back what was written.
    let r = post(a, &format!("{BASE}/clients/{ep}/read?path=/1/0/1"), "");
    assert_eq!(r.json()["data"]["content"][0]["value"], 600);
    c.expect("READ /1/0/1");
    // Kicked: the gateway forgets it.
    assert_eq!(
        http(a, "DELETE", &format!("{BASE}/clients/{ep}"), &[], b"").status,
        204
    );
    assert_eq!(get(a, &format!("{BASE}/clients/{ep}")).status, 404);
    c.say("deregister");
}
