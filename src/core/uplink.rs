//! What the core tells applications, as typed events ([`Uplink`]), and the one renderer that
//! turns an event into its MQTT message: the topic from the [`Topics`] templates and the EMQX JSON
//! of MQTT_API.md, written straight into bytes (this runs for every notification).
//!
//! Every message about a command echoes the command's top-level fields ([`CommandHead`]); a
//! message that carries its own `seqNum` (a notification) drops an echoed one.

use std::net::IpAddr;

use crate::coap::code;
use crate::lwm2m::Record;

use super::command::{CommandHead, Origin};
use super::registration::Registration;
use super::topics::Topics;

/// An MQTT message for the MQTT thread to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub payload: Vec<u8>,
    /// The final answer to a command an HTTP API caller waits for (`Origin::Api`): the runtime
    /// hands it to that caller too.
    pub reply_to: Option<u64>,
}

/// What goes into `data.content` of a response or notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    None,
    /// Decoded values: `[{"path":..,"value":..}]`.
    Records(Vec<Record>),
    /// A Discover answer: the link-format entries as strings.
    Links(Vec<String>),
}

/// A device's answer (or what the gateway made of it): the CoAP code for `data.code`, the
/// decoded content, and why it failed when it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub code: u8,
    pub content: Content,
    pub reason: Option<String>,
}

/// One event for applications; [`render`] makes it an MQTT message.
#[derive(Debug, Clone, Copy)]
pub enum Uplink<'a> {
    Registered(&'a Registration),
    Updated(&'a Registration),
    /// The registration ended: `deregistered`, `expired`, `replaced`.
    Deregistered {
        endpoint: &'a str,
        reason: &'a str,
    },
    /// The device's answer to a command.
    Response {
        cmd: &'a CommandHead,
        seq_num: Option<u32>,
        answer: &'a Answer,
    },
    /// A command the gateway answers itself: refused, failed, or ended with its device.
    Refused {
        cmd: &'a CommandHead,
        code: u8,
        reason: &'a str,
    },
    /// An empty ACK came: the device will answer separately (`ack`).
    Acked(&'a CommandHead),
    /// No answer in time (`coap_timeout`); `reason` when it is not the plain retransmission
    /// timeout.
    TimedOut {
        cmd: &'a CommandHead,
        reason: Option<&'a str>,
    },
    /// The device reset the request (`coap_reset`).
    Reset(&'a CommandHead),
    /// A notification of the observation `cmd` started.
    Notify {
        cmd: &'a CommandHead,
        seq_num: Option<u32>,
        answer: &'a Answer,
    },
    /// LwM2M Send (`POST /dp`).
    Sent(&'a [Record]),
}

/// The MQTT message for `ev` about the device `endpoint` at `host` (for `${peerhost}` topics).
pub fn render(topics: &Topics, endpoint: &str, host: Option<IpAddr>, ev: &Uplink) -> Publish {
    let (template, payload) = match *ev {
        Uplink::Registered(reg) => (&topics.register, reg.event_json("register")),
        Uplink::Updated(reg) => (&topics.update, reg.event_json("update")),
        Uplink::Deregistered { endpoint, reason } => {
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(b"{\"msgType\":\"deregister\",\"data\":{\"ep\":");
            write_json(&mut out, endpoint);
            out.extend_from_slice(b",\"reason\":");
            write_json(&mut out, reason);
            out.extend_from_slice(b"}}");
            (&topics.deregister, out)
        }
        Uplink::Response {
            cmd,
            seq_num,
            answer,
        } => (
            &topics.response,
            response(cmd, &cmd.msg_type, seq_num, answer),
        ),
        Uplink::Refused { cmd, code, reason } => {
            let answer = Answer {
                code,
                content: Content::None,
                reason: Some(reason.to_string()),
            };
            (
                &topics.response,
                response(cmd, &cmd.msg_type, None, &answer),
            )
        }
        Uplink::Acked(cmd) => (&topics.response, with_data(cmd, "ack", &cmd.data)),
        Uplink::Reset(cmd) => (&topics.response, with_data(cmd, "coap_reset", &cmd.data)),
        Uplink::TimedOut { cmd, reason } => {
            let data = match reason {
                None => cmd.data.to_string(),
                Some(r) => data_with_reason(&cmd.data, r),
            };
            (&topics.response, with_data(cmd, "coap_timeout", &data))
        }
        Uplink::Notify {
            cmd,
            seq_num,
            answer,
        } => (&topics.notify, response(cmd, "notify", seq_num, answer)),
        Uplink::Sent(records) => {
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(b"{\"msgType\":\"send\",\"data\":{\"content\":");
            crate::lwm2m::json::write_content_json(&mut out, records);
            out.extend_from_slice(b"}}");
            (&topics.notify, out)
        }
    };
    let reply_to = match *ev {
        Uplink::Response { cmd, .. }
        | Uplink::Refused { cmd, .. }
        | Uplink::TimedOut { cmd, .. }
        | Uplink::Reset(cmd) => match cmd.origin {
            Origin::Api(id) => Some(id),
            Origin::Mqtt => None,
        },
        _ => None,
    };
    Publish {
        topic: template.render_ip(endpoint, host),
        qos: template.qos,
        payload,
        reply_to,
    }
}

/// `{echo.., "msgType":.., "data": data}` for the messages that echo the command's `data`.
fn with_data(cmd: &CommandHead, msg_type: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + data.len());
    write_head(&mut out, cmd, msg_type, false);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    out
}

/// The command's `data` with `reason` set (replacing one it had, in its place).
fn data_with_reason(data: &str, reason: &str) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(data).unwrap_or_default();
    map.insert("reason".into(), reason.into());
    serde_json::to_string(&map).unwrap_or_default()
}

/// `{echo.., "msgType":..[, "seqNum":..], "data":{"reqPath","code","codeMsg"[,"content"][,"reason"]}}`.
fn response(cmd: &CommandHead, msg_type: &str, seq_num: Option<u32>, a: &Answer) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + cmd.req_path.len());
    write_head(&mut out, cmd, msg_type, seq_num.is_some());
    if let Some(s) = seq_num {
        out.extend_from_slice(b",\"seqNum\":");
        write_u32(&mut out, s);
    }
    out.extend_from_slice(b",\"data\":{\"reqPath\":");
    out.extend_from_slice(cmd.req_path.as_bytes());
    out.extend_from_slice(b",\"code\":\"");
    // "C.DD" without a String per message.
    let detail = a.code & 0x1f;
    out.extend_from_slice(&[
        b'0' + (a.code >> 5),
        b'.',
        b'0' + detail / 10,
        b'0' + detail % 10,
    ]);
    out.extend_from_slice(b"\",\"codeMsg\":\"");
    out.extend_from_slice(code::name(a.code).as_bytes());
    out.push(b'"');
    match &a.content {
        Content::None => {}
        Content::Records(r) => {
            out.extend_from_slice(b",\"content\":");
            crate::lwm2m::json::write_content_json(&mut out, r);
        }
        Content::Links(l) => {
            out.extend_from_slice(b",\"content\":");
            write_json(&mut out, l);
        }
    }
    if let Some(r) = &a.reason {
        out.extend_from_slice(b",\"reason\":");
        write_json(&mut out, r);
    }
    out.extend_from_slice(b"}}");
    out
}

/// `{` echo fields, `"msgType":..`.
fn write_head(out: &mut Vec<u8>, cmd: &CommandHead, msg_type: &str, own_seq_num: bool) {
    out.push(b'{');
    cmd.echo.write(out, own_seq_num);
    out.extend_from_slice(b"\"msgType\":");
    // Every operation's name is plain ASCII: no escaping to look for (an unparsed command's
    // `msgType` may be anything and takes the general path).
    if msg_type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        out.push(b'"');
        out.extend_from_slice(msg_type.as_bytes());
        out.push(b'"');
    } else {
        write_json(out, msg_type);
    }
}

// Writing into a Vec cannot fail.
fn write_json(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(&mut *out, v);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::parse;
    use crate::lwm2m::{Path, Value as V};
    use serde_json::{json, Value};

    fn topics() -> Topics {
        Topics::new("lwm2m/%e/", &crate::core::topics::Translators::default()).unwrap()
    }

    fn json_of(ev: &Uplink) -> (String, Value) {
        let p = render(&topics(), "ep1", None, ev);
        (p.topic, serde_json::from_slice(&p.payload).unwrap())
    }

    #[test]
    fn responses_echo_every_field_but_msgtype_and_data() {
        let c = parse(
            br#"{"reqID":{"a":[1,"x"]},"cacheID":"q\"","msgType":"read","data":{"path":"/3/0/9?x"}}"#,
        )
        .unwrap();
        let answer = Answer {
            code: 0x45,
            content: Content::Records(vec![
                Record::new(Path::parse("/3/0/9").unwrap(), V::Integer(87)),
                Record::new(Path::parse("/3/0/1").unwrap(), V::String("é\"".into())),
            ]),
            reason: None,
        };
        let (topic, v) = json_of(&Uplink::Response {
            cmd: &c.head,
            seq_num: None,
            answer: &answer,
        });
        assert_eq!(topic, "lwm2m/ep1/up/resp");
        assert_eq!(
            v,
            json!({"reqID":{"a":[1,"x"]},"cacheID":"q\"","msgType":"read",
                   "data":{"reqPath":"/3/0/9","code":"2.05","codeMsg":"content",
                           "content":[{"path":"/3/0/9","value":87},{"path":"/3/0/1","value":"é\""}]}})
        );
    }

    #[test]
    fn a_notification_replaces_an_echoed_seqnum_with_its_own() {
        let c = parse(br#"{"seqNum":99,"reqID":1,"msgType":"observe","data":{"path":"/3/0/9"}}"#)
            .unwrap();
        let answer = Answer {
            code: 0x45,
            content: Content::None,
            reason: Some("why \"not\"".into()),
        };
        let p = render(
            &topics(),
            "ep1",
            None,
            &Uplink::Notify {
                cmd: &c.head,
                seq_num: Some(4_294_967_295),
                answer: &answer,
            },
        );
        assert_eq!(p.topic, "lwm2m/ep1/up/notify");
        assert_eq!(
            String::from_utf8(p.payload).unwrap(),
            r#"{"reqID":1,"msgType":"notify","seqNum":4294967295,"data":{"reqPath":"/3/0/9","code":"2.05","codeMsg":"content","reason":"why \"not\""}}"#
        );
    }

    #[test]
    fn gateway_answers_echo_the_data() {
        let c = parse(br#"{"reqID":"r","msgType":"read","data":{"path":"/3/0","reason":"x"}}"#)
            .unwrap();
        let (_, v) = json_of(&Uplink::TimedOut {
            cmd: &c.head,
            reason: Some("expired in queue"),
        });
        assert_eq!(
            v,
            json!({"reqID":"r","msgType":"coap_timeout","data":{"path":"/3/0","reason":"expired in queue"}})
        );
        let (_, v) = json_of(&Uplink::Acked(&c.head));
        assert_eq!(v["msgType"], "ack");
        assert_eq!(v["data"], json!({"path":"/3/0","reason":"x"}));
        let (_, v) = json_of(&Uplink::Refused {
            cmd: &c.head,
            code: 0x84,
            reason: "endpoint not registered",
        });
        assert_eq!(
            v,
            json!({"reqID":"r","msgType":"read","data":{"reqPath":"/3/0","code":"4.04","codeMsg":"not_found","reason":"endpoint not registered"}})
        );
        let (_, v) = json_of(&Uplink::Deregistered {
            endpoint: "ep1",
            reason: "expired",
        });
        assert_eq!(
            v,
            json!({"msgType":"deregister","data":{"ep":"ep1","reason":"expired"}})
        );
    }
}
