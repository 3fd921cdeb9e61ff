//! The MQTT JSON envelope (MQTT_API.md): parsing downlink commands and building every uplink
//! message. Commands echo every top-level key except `msgType` and `data` into every message about
//! them, whatever the JSON type of `reqID`.

use serde_json::{Map, Value};

/// A parsed downlink command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Top-level keys other than `msgType` and `data`, in their original order.
    pub echo: Map<String, Value>,
    pub msg_type: String,
    pub data: Map<String, Value>,
}

/// A command that could not be parsed; carries what could be read so that the error response
/// echoes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub echo: Map<String, Value>,
    pub msg_type: Option<String>,
    pub data: Option<Value>,
    pub reason: String,
}

pub fn parse_command(payload: &[u8]) -> Result<Command, Box<CommandError>> {
    let fail = |echo, msg_type, data, reason: String| {
        Err(Box::new(CommandError {
            echo,
            msg_type,
            data,
            reason,
        }))
    };
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                Map::new(),
                None,
                None,
                format!("command is not valid JSON: {e}"),
            )
        }
    };
    let Value::Object(mut obj) = v else {
        return fail(
            Map::new(),
            None,
            None,
            "command is not a JSON object".into(),
        );
    };
    let msg_type = obj.remove("msgType");
    let data = obj.remove("data");
    let msg_type = match msg_type {
        Some(Value::String(s)) => s,
        Some(_) => return fail(obj, None, data, "msgType is not a string".into()),
        None => return fail(obj, None, data, "missing msgType".into()),
    };
    let data = match data {
        Some(Value::Object(d)) => d,
        None => Map::new(),
        Some(other) => {
            return fail(
                obj,
                Some(msg_type),
                Some(other),
                "data is not a JSON object".into(),
            )
        }
    };
    Ok(Command {
        echo: obj,
        msg_type,
        data,
    })
}

/// Serialises `{...echo, "msgType": msg_type, ["seqNum": seq,] "data": data}`.
pub fn message(
    echo: &Map<String, Value>,
    msg_type: &str,
    seq_num: Option<u32>,
    data: Value,
) -> Vec<u8> {
    let mut m = echo.clone();
    m.insert("msgType".into(), Value::String(msg_type.into()));
    if let Some(s) = seq_num {
        m.insert("seqNum".into(), Value::from(s));
    }
    m.insert("data".into(), data);
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// What goes into `data.content` of a response or notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    None,
    /// Decoded values: `[{"path":..,"value":..}]`.
    Records(Vec<crate::lwm2m::Record>),
    /// Anything else, e.g. Discover links.
    Json(Value),
}

/// A command response or notification, written straight into bytes (the hot path of every
/// read answer and notification): the same JSON as [`message`] of [`response_data`], without
/// cloning the echo or building a tree.
pub fn response(
    echo: &Map<String, Value>,
    msg_type: &str,
    seq_num: Option<u32>,
    req_path: &Value,
    code: u8,
    content: &Content,
    reason: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_head(&mut out, echo, msg_type, seq_num.is_some());
    write_tail(
        &mut out,
        seq_num,
        |o| json(o, req_path),
        code,
        content,
        reason,
    );
    out
}

/// The invariant part of an observation's notifications, computed once when it is established:
/// the JSON up to `"msgType":"notify"` and the `reqPath` value. [`ResponseHead::notify`] then
/// writes a notification without looking at the command again.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    head: Box<[u8]>,
    req_path: Box<[u8]>,
}

impl ResponseHead {
    /// For notifications carrying a `seqNum` (an echoed `seqNum` field gives way to it).
    pub fn new(echo: &Map<String, Value>, msg_type: &str, req_path: &Value) -> ResponseHead {
        let mut head = Vec::with_capacity(64);
        write_head(&mut head, echo, msg_type, true);
        let mut path = Vec::with_capacity(24);
        json(&mut path, req_path);
        ResponseHead {
            head: head.into(),
            req_path: path.into(),
        }
    }

    /// Same bytes as [`response`] with the head's echo, message type and request path.
    pub fn notify(
        &self,
        seq_num: u32,
        code: u8,
        content: &Content,
        reason: Option<&str>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + 96);
        out.extend_from_slice(&self.head);
        write_tail(
            &mut out,
            Some(seq_num),
            |o| o.extend_from_slice(&self.req_path),
            code,
            content,
            reason,
        );
        out
    }
}

// Writing into a Vec cannot fail.
fn json(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// `{` echo fields, `"msgType":..`; a `seqNum` of the echo is left out when the message carries
/// its own.
fn write_head(out: &mut Vec<u8>, echo: &Map<String, Value>, msg_type: &str, own_seq: bool) {
    out.push(b'{');
    for (k, v) in echo {
        if k == "seqNum" && own_seq {
            continue;
        }
        json(out, k);
        out.push(b':');
        json(out, v);
        out.push(b',');
    }
    out.extend_from_slice(b"\"msgType\":");
    json(out, msg_type);
}

/// `,"seqNum":..,"data":{..}}` after [`write_head`]; `req_path` writes the `reqPath` value.
fn write_tail(
    out: &mut Vec<u8>,
    seq_num: Option<u32>,
    req_path: impl FnOnce(&mut Vec<u8>),
    code: u8,
    content: &Content,
    reason: Option<&str>,
) {
    if let Some(s) = seq_num {
        out.extend_from_slice(b",\"seqNum\":");
        write_u32(out, s);
    }
    out.extend_from_slice(b",\"data\":{\"reqPath\":");
    req_path(out);
    out.extend_from_slice(b",\"code\":\"");
    // "C.DD" without a String per message.
    let detail = code & 0x1f;
    out.extend_from_slice(&[
        b'0' + (code >> 5),
        b'.',
        b'0' + detail / 10,
        b'0' + detail % 10,
    ]);
    out.extend_from_slice(b"\",\"codeMsg\":\"");
    out.extend_from_slice(crate::coap::code::name(code).as_bytes());
    out.push(b'"');
    match content {
        Content::None => {}
        Content::Records(r) => {
            out.extend_from_slice(b",\"content\":");
            crate::lwm2m::json::write_content_json(out, r);
        }
        Content::Json(v) => {
            out.extend_from_slice(b",\"content\":");
            json(out, v);
        }
    }
    if let Some(r) = reason {
        out.extend_from_slice(b",\"reason\":");
        json(out, r);
    }
    out.extend_from_slice(b"}}");
}

fn write_u32(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `data` of a command response: `{reqPath, code, codeMsg[, content][, reason]}`.
pub fn response_data(
    req_path: &Value,
    code: u8,
    content: Option<Value>,
    reason: Option<&str>,
) -> Value {
    let mut d = Map::new();
    d.insert("reqPath".into(), req_path.clone());
    d.insert(
        "code".into(),
        Value::String(crate::coap::code::to_string(code)),
    );
    d.insert(
        "codeMsg".into(),
        Value::String(crate::coap::code::name(code).into()),
    );
    if let Some(c) = content {
        d.insert("content".into(), c);
    }
    if let Some(r) = reason {
        d.insert("reason".into(), Value::String(r.into()));
    }
    Value::Object(d)
}

/// The `reqPath` EMQX reports: `data.path`, else `data.basePath`, exactly as written, minus a
/// `?query` suffix; the `paths` array of a composite operation; null otherwise.
pub fn req_path_of(data: &Map<String, Value>) -> Value {
    for key in ["path", "basePath", "reqPath"] {
        if let Some(Value::String(p)) = data.get(key) {
            let p = p.split_once('?').map_or(p.as_str(), |(a, _)| a);
            return Value::String(p.to_string());
        }
    }
    // Composite operations name several paths.
    if let Some(Value::Array(paths)) = data.get("paths") {
        return Value::Array(paths.clone());
    }
    Value::Null
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notification_head_writes_the_same_bytes_as_the_general_writer() {
        let c = parse_command(
            br#"{"reqID":"a\"b","seqNum":99,"x":{"y":[1,2.5,null]},"msgType":"observe","data":{"path":"/3303/0/5700?pmin=1"}}"#,
        )
        .unwrap();
        let rp = req_path_of(&c.data);
        let head = ResponseHead::new(&c.echo, "notify", &rp);
        let records = Content::Records(vec![crate::lwm2m::Record {
            path: crate::lwm2m::Path::parse("/3303/0/5700").unwrap(),
            value: crate::lwm2m::Value::Float(21.5),
            type_unknown: false,
        }]);
        for code in [0x45u8, 0x44, 0x80, 0x84, 0x8f, 0xa0, 0xa5] {
            for (content, reason) in [(&records, None), (&Content::None, Some("why \"not\""))] {
                let fast = head.notify(4_294_967_295, code, content, reason);
                let general = response(
                    &c.echo,
                    "notify",
                    Some(4_294_967_295),
                    &rp,
                    code,
                    content,
                    reason,
                );
                assert_eq!(
                    String::from_utf8(fast.clone()).unwrap(),
                    String::from_utf8(general).unwrap()
                );
                let v: Value = serde_json::from_slice(&fast).unwrap();
                assert_eq!(v["seqNum"], json!(4_294_967_295u32));
                assert_eq!(v["data"]["code"], json!(crate::coap::code::to_string(code)));
                assert_eq!(v["data"]["reqPath"], json!("/3303/0/5700"));
                assert_eq!(v["reqID"], json!("a\"b"));
            }
        }
        let zero = head.notify(0, 0x45, &Content::None, None);
        assert_eq!(
            serde_json::from_slice::<Value>(&zero).unwrap()["seqNum"],
            json!(0)
        );
    }

    #[test]
    fn echoes_everything_but_msgtype_and_data() {
        let c = parse_command(
            br#"{"reqID":"a","cacheID":[1],"msgType":"read","data":{"path":"/3/0/1"}}"#,
        )
        .unwrap();
        assert_eq!(c.msg_type, "read");
        let out = message(
            &c.echo,
            "read",
            None,
            response_data(&req_path_of(&c.data), 0x45, Some(json!([])), None),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"reqID":"a","cacheID":[1],"msgType":"read",
                   "data":{"reqPath":"/3/0/1","code":"2.05","codeMsg":"content","content":[]}})
        );
    }

    #[test]
    fn direct_response_writer_matches_the_tree() {
        use crate::lwm2m::{Path, Record, Value as V};
        let c = parse_command(br#"{"reqID":{"a":[1,"x"]},"cacheID":"q\"","msgType":"observe","data":{"path":"/3/0/9"}}"#).unwrap();
        let recs = vec![
            Record::new(Path::parse("/3/0/9").unwrap(), V::Integer(87)),
            Record::new(Path::parse("/3/0/1").unwrap(), V::String("é\"".into())),
        ];
        let rp = req_path_of(&c.data);
        for (content, tree) in [
            (Content::None, None),
            (
                Content::Records(recs.clone()),
                Some(crate::lwm2m::json::content_json(&recs)),
            ),
            (Content::Json(json!(["</3/0>"])), Some(json!(["</3/0>"]))),
        ] {
            for (seq, reason) in [(None, None), (Some(7), Some("why \"not\""))] {
                let direct = response(&c.echo, "notify", seq, &rp, 0x45, &content, reason);
                let via_tree = message(
                    &c.echo,
                    "notify",
                    seq,
                    response_data(&rp, 0x45, tree.clone(), reason),
                );
                assert_eq!(
                    String::from_utf8(direct).unwrap(),
                    String::from_utf8(via_tree).unwrap()
                );
            }
        }
    }

    #[test]
    fn bad_commands_keep_what_was_readable() {
        assert!(parse_command(b"not json")
            .unwrap_err()
            .reason
            .contains("not valid JSON"));
        assert!(parse_command(b"[1]")
            .unwrap_err()
            .reason
            .contains("not a JSON object"));
        let e = parse_command(br#"{"reqID":7,"data":{}}"#).unwrap_err();
        assert_eq!(e.echo.get("reqID"), Some(&json!(7)));
        assert!(e.reason.contains("msgType"));
        let e = parse_command(br#"{"reqID":7,"msgType":"read","data":5}"#).unwrap_err();
        assert_eq!(e.msg_type.as_deref(), Some("read"));
    }

    #[test]
    fn req_path_is_reported_as_written() {
        let d = json!({"path":"3/0/1/?a=b"});
        assert_eq!(req_path_of(d.as_object().unwrap()), json!("3/0/1/"));
        let d = json!({"basePath":"/3/0/"});
        assert_eq!(req_path_of(d.as_object().unwrap()), json!("/3/0/"));
        assert_eq!(req_path_of(&Map::new()), Value::Null);
    }
}
