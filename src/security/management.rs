//! Credential management over MQTT: a request payload in, the answer payload out.
//!
//! Requests look like the gateway's other commands (README "MQTT API"):
//! `{"reqID": <any JSON>, "msgType": "credential-…", "data": {…}}`.
//!
//! | `msgType` | `data` | answers |
//! |---|---|---|
//! | `credential-add` | one entry, as in the JSON credentials file | `2.01` new, `2.04` replaced, `4.00` bad entry, `4.09` identity or public key taken |
//! | `credential-remove` | `{"endpoint"}` | `2.02`, `4.04` |
//! | `credential-get` | `{"endpoint"}` | `2.05` with `content`, `4.04` |
//! | `credential-list` | `{"offset"?, "limit"?}` (limit 0..=1000, default 100) | `2.05` with `content` (endpoint order) and `total` |
//!
//! Anything unreadable (not JSON, no or unknown `msgType`, bad arguments) is `4.00` with a
//! `reason`. The answer is `{"reqID":…, "msgType":…, "data":{"code","codeMsg"[,"content"]
//! [,"total"][,"reason"]}}`, codes and names as in device responses; `msgType` is `"error"`
//! when it could not be read.
//!
//! Contract: no answer carries key material. `content` entries are the file's entries without
//! `key_hex`/`key_base64` and without the public key; reasons name fields, never values; and
//! only `reqID` is echoed (not every top-level field as device commands do), so that a key put
//! in the wrong place is not sent back either. [`Answer::changed`] tells the caller to
//! [`SharedCredentials::persist`].

use serde_json::{Map, Value as Json};

use super::credentials::{entry_json, parse_entry};
use super::shared::SharedCredentials;
use crate::coap::code;

/// Not among `coap::code`'s constants: only management answers it.
const CONFLICT: u8 = 0x89;
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

/// The answer to publish, and whether the store changed (the caller saves it then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub payload: Vec<u8>,
    pub changed: bool,
}

/// What one request came to.
struct Reply {
    code: u8,
    reason: Option<String>,
    content: Option<Json>,
    total: Option<usize>,
    changed: bool,
}

impl Reply {
    fn code(code: u8) -> Reply {
        Reply {
            code,
            reason: None,
            content: None,
            total: None,
            changed: false,
        }
    }

    fn fail(code: u8, reason: impl Into<String>) -> Reply {
        Reply {
            reason: Some(reason.into()),
            ..Reply::code(code)
        }
    }

    fn changed(code: u8) -> Reply {
        Reply {
            changed: true,
            ..Reply::code(code)
        }
    }
}

/// Handles one management request.
pub fn handle(store: &SharedCredentials, payload: &[u8]) -> Answer {
    let v: Json = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            // serde_json's syntax messages name a position, never the input.
            let why = format!("request is not valid JSON: {e}");
            return answer(None, "error", Reply::fail(code::BAD_REQUEST, why));
        }
    };
    let Json::Object(mut obj) = v else {
        let why = "request is not a JSON object";
        return answer(None, "error", Reply::fail(code::BAD_REQUEST, why));
    };
    let req_id = obj.remove("reqID");
    let msg_type = match obj.remove("msgType") {
        Some(Json::String(s)) => s,
        Some(_) => {
            let why = "msgType is not a string";
            return answer(req_id, "error", Reply::fail(code::BAD_REQUEST, why));
        }
        None => {
            let why = "missing msgType";
            return answer(req_id, "error", Reply::fail(code::BAD_REQUEST, why));
        }
    };
    let data = match obj.remove("data") {
        None => Map::new(),
        Some(Json::Object(d)) => d,
        Some(_) => {
            let why = "data is not a JSON object";
            return answer(req_id, &msg_type, Reply::fail(code::BAD_REQUEST, why));
        }
    };
    let reply = match msg_type.as_str() {
        "credential-add" => add(store, data),
        "credential-remove" => remove(store, &data),
        "credential-get" => get(store, &data),
        "credential-list" => list(store, &data),
        other => {
            let shown: String = other.chars().take(64).collect();
            Reply::fail(code::BAD_REQUEST, format!("unknown msgType {shown:?}"))
        }
    };
    answer(req_id, &msg_type, reply)
}

fn add(store: &SharedCredentials, data: Map<String, Json>) -> Reply {
    let c = match parse_entry(&Json::Object(data)) {
        Ok(c) => c,
        Err(bad) => return Reply::fail(code::BAD_REQUEST, bad.reason),
    };
    // Bind the result first: the write guard must be gone before anything else happens.
    let inserted = store.write().insert(c);
    match inserted {
        Ok(None) => Reply::changed(code::CREATED),
        Ok(Some(_)) => Reply::changed(code::CHANGED),
        Err(conflict) => Reply::fail(CONFLICT, conflict.to_string()),
    }
}

fn remove(store: &SharedCredentials, data: &Map<String, Json>) -> Reply {
    let ep = match endpoint_arg(data) {
        Ok(ep) => ep,
        Err(why) => return Reply::fail(code::BAD_REQUEST, why),
    };
    let removed = store.write().remove(ep);
    match removed {
        Some(_) => Reply::changed(code::DELETED),
        None => Reply::fail(code::NOT_FOUND, "no credential for this endpoint"),
    }
}

fn get(store: &SharedCredentials, data: &Map<String, Json>) -> Reply {
    let ep = match endpoint_arg(data) {
        Ok(ep) => ep,
        Err(why) => return Reply::fail(code::BAD_REQUEST, why),
    };
    let entry = store
        .read()
        .by_endpoint(ep)
        .map(|c| Json::Object(entry_json(c, false)));
    match entry {
        Some(content) => Reply {
            content: Some(content),
            ..Reply::code(code::CONTENT)
        },
        None => Reply::fail(code::NOT_FOUND, "no credential for this endpoint"),
    }
}

fn list(store: &SharedCredentials, data: &Map<String, Json>) -> Reply {
    if let Some(k) = data.keys().find(|k| *k != "offset" && *k != "limit") {
        let shown: String = k.chars().take(32).collect();
        return Reply::fail(code::BAD_REQUEST, format!("unknown key {shown:?}"));
    }
    let number = |key: &str, default: u64| match data.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{key} must be a non-negative integer")),
    };
    let (offset, limit) = match (number("offset", 0), number("limit", DEFAULT_LIMIT)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(why), _) | (_, Err(why)) => return Reply::fail(code::BAD_REQUEST, why),
    };
    if limit > MAX_LIMIT {
        return Reply::fail(
            code::BAD_REQUEST,
            format!("limit must be at most {MAX_LIMIT}"),
        );
    }
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Page and total under one lock, so that they agree.
    let (page, total) = {
        let s = store.read();
        (s.page(offset, limit), s.len())
    };
    let content = page
        .iter()
        .map(|c| Json::Object(entry_json(c, false)))
        .collect();
    Reply {
        content: Some(Json::Array(content)),
        total: Some(total),
        ..Reply::code(code::CONTENT)
    }
}

/// `{"endpoint": "..."}` and nothing else.
fn endpoint_arg(data: &Map<String, Json>) -> Result<&str, String> {
    if let Some(k) = data.keys().find(|k| *k != "endpoint") {
        let shown: String = k.chars().take(32).collect();
        return Err(format!("unknown key {shown:?}"));
    }
    match data.get("endpoint") {
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err("endpoint must be a string".into()),
        None => Err("missing endpoint".into()),
    }
}

fn answer(req_id: Option<Json>, msg_type: &str, r: Reply) -> Answer {
    let mut d = Map::new();
    d.insert("code".into(), Json::String(code::to_string(r.code)));
    d.insert("codeMsg".into(), Json::String(code::name(r.code).into()));
    if let Some(c) = r.content {
        d.insert("content".into(), c);
    }
    if let Some(t) = r.total {
        d.insert("total".into(), Json::from(t));
    }
    if let Some(why) = r.reason {
        d.insert("reason".into(), Json::String(why));
    }
    let mut m = Map::new();
    if let Some(id) = req_id {
        m.insert("reqID".into(), id);
    }
    m.insert("msgType".into(), Json::String(msg_type.into()));
    m.insert("data".into(), Json::Object(d));
    Answer {
        // Serialising a Value into a Vec cannot fail.
        payload: serde_json::to_vec(&Json::Object(m)).unwrap_or_default(),
        changed: r.changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::credentials::tests::{assert_no_key, psk, spki, KEY, KEY_HEX};
    use crate::security::credentials::CredentialStore;
    use serde_json::json;

    fn shared() -> SharedCredentials {
        let mut s = CredentialStore::new();
        s.insert(psk("dev-1", b"id-1", &KEY)).expect("insert");
        s.insert(psk("dev-2", &[0xff, 0xfe], &KEY)).expect("insert");
        SharedCredentials::new(s)
    }

    /// Runs a request; returns the answer's JSON and `changed`, having checked it holds no key.
    fn call(store: &SharedCredentials, request: &str) -> (Json, bool) {
        let a = handle(store, request.as_bytes());
        let text = String::from_utf8(a.payload).expect("UTF-8 answer");
        assert_no_key(&text);
        (serde_json::from_str(&text).expect("JSON answer"), a.changed)
    }

    fn req(msg_type: &str, data: Json) -> String {
        json!({"reqID": {"n": 7}, "msgType": msg_type, "data": data}).to_string()
    }

    #[test]
    fn add_creates_then_replaces() {
        let s = shared();
        let entry =
            json!({"endpoint": "new", "mode": "psk", "identity": "id-new", "key_hex": KEY_HEX});
        let (a, changed) = call(&s, &req("credential-add", entry.clone()));
        assert_eq!(
            a,
            json!({"reqID": {"n": 7}, "msgType": "credential-add",
                   "data": {"code": "2.01", "codeMsg": "created"}})
        );
        assert!(changed);
        assert_eq!(
            s.read()
                .by_psk_identity(b"id-new")
                .map(|c| c.endpoint.clone()),
            Some("new".into())
        );
        let (a, changed) = call(
            &s,
            &req("credential-add", json!({"endpoint": "new", "mode": "x509"})),
        );
        assert_eq!(a["data"], json!({"code": "2.04", "codeMsg": "changed"}));
        assert!(changed);
        assert!(s.read().by_psk_identity(b"id-new").is_none());
    }

    #[test]
    fn add_refuses_a_bad_entry_with_400_and_a_taken_identity_with_409() {
        let s = shared();
        let bad = json!({"endpoint": "x", "mode": "psk", "identity": "i", "key_hex": format!("{KEY_HEX}zz")});
        let (a, changed) = call(&s, &req("credential-add", bad));
        assert_eq!(
            a["data"],
            json!({"code": "4.00", "codeMsg": "bad_request", "reason": "key_hex is not valid hex"})
        );
        assert!(!changed);
        let taken = json!({"endpoint": "x", "mode": "psk", "identity": "id-1", "key_hex": KEY_HEX});
        let (a, changed) = call(&s, &req("credential-add", taken));
        assert_eq!(
            a["data"],
            json!({"code": "4.09", "codeMsg": "conflict",
                   "reason": "PSK identity already belongs to endpoint \"dev-1\""})
        );
        assert!(!changed);
        let key_taken =
            json!({"endpoint": "y", "mode": "rpk", "public_key_base64": BASE64_SPKI.as_str()});
        assert_eq!(
            call(&s, &req("credential-add", key_taken.clone())).0["data"]["code"],
            "2.01"
        );
        let again =
            json!({"endpoint": "z", "mode": "rpk", "public_key_base64": BASE64_SPKI.as_str()});
        assert_eq!(
            call(&s, &req("credential-add", again)).0["data"]["code"],
            "4.09"
        );
        assert_eq!(s.read().len(), 3);
    }

    static BASE64_SPKI: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(spki(9))
    });

    #[test]
    fn remove_answers_202_then_404() {
        let s = shared();
        let r = req("credential-remove", json!({"endpoint": "dev-1"}));
        let (a, changed) = call(&s, &r);
        assert_eq!(a["data"], json!({"code": "2.02", "codeMsg": "deleted"}));
        assert!(changed);
        assert!(s.read().by_psk_identity(b"id-1").is_none());
        let (a, changed) = call(&s, &r);
        assert_eq!(a["data"]["code"], "4.04");
        assert_eq!(a["data"]["codeMsg"], "not_found");
        assert!(!changed);
    }

    #[test]
    fn get_shows_the_entry_without_its_key() {
        let s = shared();
        let (a, changed) = call(&s, &req("credential-get", json!({"endpoint": "dev-1"})));
        assert_eq!(
            a,
            json!({"reqID": {"n": 7}, "msgType": "credential-get",
                   "data": {"code": "2.05", "codeMsg": "content",
                            "content": {"endpoint": "dev-1", "mode": "psk", "identity": "id-1"}}})
        );
        assert!(!changed);
        // An identity that is not UTF-8 is shown in hex.
        let (a, _) = call(&s, &req("credential-get", json!({"endpoint": "dev-2"})));
        assert_eq!(
            a["data"]["content"],
            json!({"endpoint": "dev-2", "mode": "psk", "identity_hex": "fffe"})
        );
        let (a, _) = call(&s, &req("credential-get", json!({"endpoint": "nobody"})));
        assert_eq!(a["data"]["code"], "4.04");
    }

    #[test]
    fn get_of_rpk_and_x509_shows_no_public_key() {
        let s = SharedCredentials::new(CredentialStore::new());
        let add = |e: Json| call(&s, &req("credential-add", e)).0["data"]["code"].clone();
        assert_eq!(
            add(json!({"endpoint": "r", "mode": "rpk", "public_key_base64": BASE64_SPKI.as_str()})),
            "2.01"
        );
        assert_eq!(
            add(json!({"endpoint": "x", "mode": "x509", "common_name": "cn"})),
            "2.01"
        );
        let (a, _) = call(&s, &req("credential-get", json!({"endpoint": "r"})));
        assert_eq!(
            a["data"]["content"],
            json!({"endpoint": "r", "mode": "rpk"})
        );
        let (a, _) = call(&s, &req("credential-get", json!({"endpoint": "x"})));
        assert_eq!(
            a["data"]["content"],
            json!({"endpoint": "x", "mode": "x509", "common_name": "cn"})
        );
    }

    #[test]
    fn list_pages_in_endpoint_order_with_the_total() {
        let s = shared();
        for ep in ["c", "a", "b"] {
            s.write()
                .insert(crate::security::DeviceCredential {
                    endpoint: ep.into(),
                    credential: crate::security::Credential::NoSec,
                })
                .expect("insert");
        }
        let (a, changed) = call(
            &s,
            &req("credential-list", json!({"offset": 1, "limit": 2})),
        );
        assert_eq!(
            a["data"],
            json!({"code": "2.05", "codeMsg": "content",
                   "content": [{"endpoint": "b", "mode": "nosec"}, {"endpoint": "c", "mode": "nosec"}],
                   "total": 5})
        );
        assert!(!changed);
        // Defaults: everything from the start; data may be left out.
        let r = json!({"reqID": 1, "msgType": "credential-list"}).to_string();
        let (a, _) = call(&s, &r);
        let eps: Vec<&str> = a["data"]["content"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|e| e["endpoint"].as_str())
            .collect();
        assert_eq!(eps, ["a", "b", "c", "dev-1", "dev-2"]);
        let (a, _) = call(&s, &req("credential-list", json!({"offset": 99})));
        assert_eq!(a["data"]["content"], json!([]));
        assert_eq!(a["data"]["total"], 5);
    }

    #[test]
    fn list_arguments_are_checked() {
        let s = shared();
        for (data, reason) in [
            (json!({"limit": 1001}), "limit must be at most 1000"),
            (json!({"limit": -1}), "limit must be a non-negative integer"),
            (
                json!({"offset": "0"}),
                "offset must be a non-negative integer",
            ),
            (json!({"page": 2}), "unknown key \"page\""),
        ] {
            let (a, _) = call(&s, &req("credential-list", data));
            assert_eq!(a["data"]["code"], "4.00");
            assert_eq!(a["data"]["reason"], reason);
        }
        let (a, _) = call(&s, &req("credential-list", json!({"limit": 1000})));
        assert_eq!(a["data"]["code"], "2.05");
    }

    #[test]
    fn endpoint_arguments_are_checked() {
        let s = shared();
        for msg_type in ["credential-get", "credential-remove"] {
            for (data, reason) in [
                (json!({}), "missing endpoint"),
                (json!({"endpoint": 1}), "endpoint must be a string"),
                (
                    json!({"endpoint": "dev-1", "key_hex": KEY_HEX}),
                    "unknown key \"key_hex\"",
                ),
            ] {
                let (a, changed) = call(&s, &req(msg_type, data));
                assert_eq!(a["msgType"], msg_type);
                assert_eq!(a["data"]["code"], "4.00");
                assert_eq!(a["data"]["reason"], reason);
                assert!(!changed);
            }
        }
        assert_eq!(s.read().len(), 2);
    }

    #[test]
    fn unreadable_requests_are_400_echoing_what_could_be_read() {
        let s = shared();
        let cases = [
            (
                "not json",
                json!(null),
                "error",
                "request is not valid JSON",
            ),
            ("[1]", json!(null), "error", "request is not a JSON object"),
            (r#"{"reqID":"r1"}"#, json!("r1"), "error", "missing msgType"),
            (
                r#"{"reqID":"r1","msgType":5}"#,
                json!("r1"),
                "error",
                "msgType is not a string",
            ),
            (
                r#"{"reqID":[1],"msgType":"credential-add","data":"x"}"#,
                json!([1]),
                "credential-add",
                "data is not a JSON object",
            ),
            (
                r#"{"reqID":2,"msgType":"credential-rotate","data":{}}"#,
                json!(2),
                "credential-rotate",
                "unknown msgType \"credential-rotate\"",
            ),
        ];
        for (request, req_id, msg_type, reason) in cases {
            let (a, changed) = call(&s, request);
            assert_eq!(
                a.get("reqID").cloned().unwrap_or(Json::Null),
                req_id,
                "{request}"
            );
            assert_eq!(a["msgType"], msg_type, "{request}");
            assert_eq!(a["data"]["code"], "4.00", "{request}");
            assert_eq!(a["data"]["codeMsg"], "bad_request", "{request}");
            let why = a["data"]["reason"].as_str().unwrap_or_default();
            assert!(why.starts_with(reason), "{request}: {why}");
            assert!(!changed);
        }
    }

    #[test]
    fn only_req_id_is_echoed_so_a_misplaced_key_is_not_sent_back() {
        let s = shared();
        let r = json!({"reqID": 3, "key_hex": KEY_HEX, "msgType": "credential-get",
                       "data": {"endpoint": "dev-1"}})
        .to_string();
        let (a, _) = call(&s, &r);
        assert_eq!(a["reqID"], 3);
        assert!(a.get("key_hex").is_none());
        // An unreadable request carrying a key: the parser's message does not quote it.
        let broken = format!(
            r#"{{"reqID":1,"msgType":"credential-add","data":{{"key_hex":"{KEY_HEX}" x}}}}"#
        );
        let (a, _) = call(&s, &broken);
        assert_eq!(a["data"]["code"], "4.00");
    }
}
