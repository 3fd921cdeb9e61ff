//! Downlink commands (MQTT_API.md, EMQX field names) parsed once, where they enter the core, into
//! a typed [`Command`]: the operation, its typed arguments, and the parts every message about it
//! echoes (the top-level fields, `reqPath`, `data`) already written as JSON.
//!
//! Nothing past this module looks at the command's JSON again: [`crate::core::request`] maps the
//! arguments to a CoAP request once the device is known, and [`crate::core::uplink`] writes the
//! echoed parts into responses byte for byte.
//!
//! Two kinds of failure, because the gateway answers them at different points (as EMQX does): an
//! unreadable envelope (not JSON, no or unknown `msgType`) is answered 4.00 before anything else;
//! bad arguments for a known operation are answered 4.00 only once the endpoint is known to be
//! registered (an unregistered endpoint gets 4.04 first).

use serde_json::{Map, Value as Json};

use crate::lwm2m::json::{self, WriteItem};
use crate::lwm2m::{ContentFormat, Path, ResourceType};

/// The LwM2M operation a command asks for (its `msgType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Discover,
    Write,
    WriteAttr,
    Execute,
    Create,
    Delete,
    Observe,
    CancelObserve,
    ReadComposite,
    WriteComposite,
    ObserveComposite,
    CancelObserveComposite,
}

const OPS: [(Op, &str); 13] = [
    (Op::Read, "read"),
    (Op::Discover, "discover"),
    (Op::Write, "write"),
    (Op::WriteAttr, "write-attr"),
    (Op::Execute, "execute"),
    (Op::Create, "create"),
    (Op::Delete, "delete"),
    (Op::Observe, "observe"),
    (Op::CancelObserve, "cancel-observe"),
    (Op::ReadComposite, "read-composite"),
    (Op::WriteComposite, "write-composite"),
    (Op::ObserveComposite, "observe-composite"),
    (Op::CancelObserveComposite, "cancel-observe-composite"),
];

impl Op {
    pub fn from_msg_type(t: &str) -> Option<Op> {
        OPS.iter().find(|(_, n)| *n == t).map(|(op, _)| *op)
    }

    /// The operation named `msg_type` (as commands spell it), if it is one.
    pub fn named(msg_type: &str) -> Option<Op> {
        OPS.iter().find(|(_, n)| *n == msg_type).map(|(op, _)| *op)
    }

    /// The `msgType` of the command, and of its response.
    pub fn msg_type(self) -> &'static str {
        OPS.iter()
            .find(|(op, _)| *op == self)
            .map_or("error", |(_, n)| n)
    }

    /// Operations whose response body is decoded into `content`.
    pub fn reads_content(self) -> bool {
        matches!(
            self,
            Op::Read
                | Op::Observe
                | Op::CancelObserve
                | Op::ReadComposite
                | Op::ObserveComposite
                | Op::CancelObserveComposite
        )
    }

    /// Operations that start an observation when the device answers with an Observe option.
    pub fn starts_observation(self) -> bool {
        matches!(self, Op::Observe | Op::ObserveComposite)
    }

    pub fn cancels_observation(self) -> bool {
        matches!(self, Op::CancelObserve | Op::CancelObserveComposite)
    }
}

/// The top-level fields of a command other than `msgType` and `data`, which every message about
/// it echoes in their original order, whatever their JSON type. Kept as the JSON text of the
/// `"key":value,` pairs; `seqNum` is remembered apart because a notification's own `seqNum`
/// replaces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    pairs: Box<[u8]>,
    /// Byte range of an echoed `"seqNum":..,` pair.
    seq_num: Option<(u32, u32)>,
}

impl Echo {
    fn new(fields: &Map<String, Json>) -> Echo {
        let mut pairs = Vec::new();
        let mut seq_num = None;
        for (k, v) in fields {
            let start = pairs.len();
            write_json(&mut pairs, k);
            pairs.push(b':');
            write_json(&mut pairs, v);
            pairs.push(b',');
            if k == "seqNum" {
                seq_num = Some((start as u32, pairs.len() as u32));
            }
        }
        Echo {
            pairs: pairs.into(),
            seq_num,
        }
    }

    /// Writes the echoed pairs (each followed by a comma), without `seqNum` when the message
    /// carries its own.
    pub fn write(&self, out: &mut Vec<u8>, own_seq_num: bool) {
        match self.seq_num {
            Some((a, b)) if own_seq_num => {
                out.extend_from_slice(&self.pairs[..a as usize]);
                out.extend_from_slice(&self.pairs[b as usize..]);
            }
            _ => out.extend_from_slice(&self.pairs),
        }
    }
}

/// Who sent a command: an MQTT client, or an HTTP API caller waiting for its answer (the id the
/// runtime matches the answer with; see [`crate::core::uplink::Publish::reply_to`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    #[default]
    Mqtt,
    Api(u64),
}

/// What every message about a command repeats: the echo, the `msgType` as sent, the `reqPath`
/// and the `data` object, as JSON text. A [`CommandError`] has one too, so that refusals echo
/// whatever could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandHead {
    pub echo: Echo,
    pub msg_type: Box<str>,
    /// JSON text of `reqPath`: `data.path`, else `data.basePath`, exactly as written minus a
    /// `?query`; the `paths` array of a composite operation; `null` otherwise.
    pub req_path: Box<str>,
    /// JSON text of `data` (`{}` when absent), for the messages that echo it whole (`ack`,
    /// `coap_timeout`, `coap_reset`).
    pub data: Box<str>,
    /// Not kept across a restart: an API caller's wait ends with the process.
    pub origin: Origin,
}

impl CommandHead {
    fn new(echo: &Map<String, Json>, msg_type: &str, data: Option<&Map<String, Json>>) -> Self {
        let empty = Map::new();
        let d = data.unwrap_or(&empty);
        CommandHead {
            echo: Echo::new(echo),
            msg_type: msg_type.into(),
            req_path: json_text(&req_path_of(d)),
            data: json_text(d),
            origin: Origin::Mqtt,
        }
    }
}

/// A Uri-Path plus Uri-Query, from `"/3/0/1?a=b&c"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub path: Path,
    pub query: Vec<String>,
}

/// A single-resource write: `{path, type?, value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleWrite {
    pub target: Target,
    pub ty: Option<ResourceType>,
    pub value: Json,
}

/// A command's arguments, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// read, observe, cancel-observe: `path` and an optional `format` override.
    Read {
        target: Target,
        format: Option<ContentFormat>,
    },
    Discover(Target),
    Delete(Target),
    Execute {
        target: Target,
        /// Text arguments (content format text/plain).
        args: Option<String>,
    },
    WriteAttr {
        path: Path,
        /// `pmin=10` and friends, in the order EMQX writes them.
        attributes: Vec<String>,
    },
    /// Single write with `path`/`type`/`value`.
    WriteSingle(SingleWrite),
    /// Batch write (`basePath` + `content`) and create.
    WriteBatch {
        base: Target,
        items: Vec<WriteItem>,
    },
    /// read-, observe- and cancel-observe-composite.
    Composite {
        paths: Vec<Path>,
        format: Option<ContentFormat>,
    },
    WriteComposite {
        items: Vec<WriteItem>,
        format: Option<ContentFormat>,
    },
}

/// A parsed downlink command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub op: Op,
    pub head: CommandHead,
    pub args: Args,
    /// `format` of writes: the content format override (`data.format`).
    pub format: Option<ContentFormat>,
    /// Top-level `"encoding":"hex"`: write values are hex text.
    pub hex: bool,
}

/// Where a command failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not JSON, not an object, no or unknown `msgType`, `data` not an object.
    Envelope,
    /// A known operation with arguments it cannot take.
    Arguments,
}

/// A command that could not be parsed; carries what could be read so that the error response
/// echoes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub head: CommandHead,
    pub stage: Stage,
    pub reason: String,
}

impl Command {
    /// The command the gateway issues itself to observe `path` (EMQX `auto_observe`): it echoes
    /// `"is_auto_observe":true`.
    pub fn auto_observe(path: Path, text: &str) -> Command {
        let mut echo = Map::new();
        echo.insert("is_auto_observe".into(), Json::Bool(true));
        let mut data = Map::new();
        data.insert("path".into(), Json::String(text.into()));
        Command {
            op: Op::Observe,
            head: CommandHead::new(&echo, Op::Observe.msg_type(), Some(&data)),
            args: Args::Read {
                target: Target {
                    path,
                    query: Vec::new(),
                },
                format: None,
            },
            format: None,
            hex: false,
        }
    }
}

/// Parses an MQTT command payload.
pub fn parse(payload: &[u8]) -> Result<Command, Box<CommandError>> {
    let fail = |echo: &Map<String, Json>, msg_type: Option<&str>, data, stage, reason: String| {
        Err(Box::new(CommandError {
            head: CommandHead::new(echo, msg_type.unwrap_or("error"), data),
            stage,
            reason,
        }))
    };
    let empty = Map::new();
    let v: Json = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("command is not valid JSON: {e}");
            return fail(&empty, None, None, Stage::Envelope, why);
        }
    };
    let Json::Object(mut obj) = v else {
        let why = "command is not a JSON object".to_string();
        return fail(&empty, None, None, Stage::Envelope, why);
    };
    let msg_type = obj.remove("msgType");
    let data = obj.remove("data");
    let data_map = match &data {
        Some(Json::Object(d)) => Some(d),
        _ => None,
    };
    let msg_type = match &msg_type {
        Some(Json::String(s)) => s.as_str(),
        Some(_) => {
            let why = "msgType is not a string".to_string();
            return fail(&obj, None, data_map, Stage::Envelope, why);
        }
        None => {
            let why = "missing msgType".to_string();
            return fail(&obj, None, data_map, Stage::Envelope, why);
        }
    };
    let data = match (data_map, &data) {
        (Some(d), _) => d,
        (None, None) => &empty,
        (None, Some(_)) => {
            let why = "data is not a JSON object".to_string();
            return fail(&obj, Some(msg_type), None, Stage::Envelope, why);
        }
    };
    let Some(op) = Op::from_msg_type(msg_type) else {
        let why = format!("unknown msgType {msg_type:?}");
        return fail(&obj, Some(msg_type), Some(data), Stage::Envelope, why);
    };
    let parsed = (|| {
        let format = format_override(data)?;
        let writes = matches!(op, Op::Write | Op::Create | Op::WriteComposite);
        let hex = writes && hex_encoding(&obj)?;
        Ok::<_, String>((args(op, data, format)?, format, hex))
    })();
    match parsed {
        Ok((args, format, hex)) => Ok(Command {
            op,
            head: CommandHead::new(&obj, msg_type, Some(data)),
            args,
            format,
            hex,
        }),
        Err(why) => fail(&obj, Some(msg_type), Some(data), Stage::Arguments, why),
    }
}

fn args(op: Op, d: &Map<String, Json>, format: Option<ContentFormat>) -> Result<Args, String> {
    let target = || path_and_query(str_field(d, "path")?, "path");
    Ok(match op {
        Op::Read | Op::Observe | Op::CancelObserve => Args::Read {
            target: target()?,
            format,
        },
        Op::Discover => Args::Discover(target()?),
        Op::Delete => {
            let t = target()?;
            if t.path.is_root() {
                return Err("delete of the root path is not allowed".into());
            }
            Args::Delete(t)
        }
        Op::Execute => {
            let t = target()?;
            if t.path.len() != 3 {
                return Err("execute needs a resource path /object/instance/resource".into());
            }
            let args = match d.get("args") {
                None | Some(Json::Null) => None,
                Some(Json::String(s)) if s.is_empty() || s == "undefined" => None,
                Some(Json::String(s)) => Some(s.clone()),
                Some(_) => return Err("data.args is not a string".into()),
            };
            Args::Execute { target: t, args }
        }
        Op::WriteAttr => {
            let path = target()?.path;
            let mut attributes = Vec::new();
            for key in ["pmin", "pmax", "gt", "lt", "st", "epmin", "epmax"] {
                match d.get(key) {
                    None | Some(Json::Null) => {}
                    Some(Json::String(s)) => attributes.push(format!("{key}={s}")),
                    Some(Json::Number(n)) => attributes.push(format!("{key}={n}")),
                    Some(_) => return Err(format!("data.{key} is not a number or string")),
                }
            }
            Args::WriteAttr { path, attributes }
        }
        Op::ReadComposite | Op::ObserveComposite | Op::CancelObserveComposite => Args::Composite {
            paths: composite_paths(d)?,
            format,
        },
        Op::WriteComposite => {
            let content = match d.get("content") {
                Some(Json::Array(a)) if !a.is_empty() => a.as_slice(),
                Some(Json::Array(_)) => return Err("data.content is empty".into()),
                Some(_) => return Err("data.content is not an array".into()),
                None => return Err("missing data.content".into()),
            };
            let items = json::write_items(&Path::ROOT, content)?;
            if items.iter().any(|i| i.path.len() < 3) {
                return Err("write-composite paths must name resources".into());
            }
            Args::WriteComposite { items, format }
        }
        Op::Write if d.get("content").is_none() && d.get("path").is_some() => {
            let target = target()?;
            if target.path.len() < 3 {
                return Err(
                    "a single write needs a resource path; use basePath + content for several"
                        .into(),
                );
            }
            let ty = match d.get("type") {
                Some(Json::String(t)) => Some(
                    json::resource_type_from_name(t)
                        .ok_or_else(|| format!("unknown type {t:?}"))?,
                ),
                Some(_) => return Err("data.type is not a string".into()),
                None => None,
            };
            let value = d.get("value").ok_or("missing data.value")?.clone();
            Args::WriteSingle(SingleWrite { target, ty, value })
        }
        Op::Write | Op::Create => {
            let base = match d.get("basePath") {
                Some(Json::String(b)) => path_and_query(b, "basePath")?,
                Some(_) => return Err("data.basePath is not a string".into()),
                None => return Err("missing data.basePath".into()),
            };
            let content = match d.get("content") {
                Some(Json::Array(a)) => a.as_slice(),
                Some(_) => return Err("data.content is not an array".into()),
                None => return Err("missing data.content".into()),
            };
            let depth = base.path.len();
            if op == Op::Create && depth != 1 && depth != 2 {
                return Err("create needs basePath /object (or /object/instance)".into());
            }
            if op == Op::Write && !(2..=3).contains(&depth) {
                return Err(
                    "a batch write needs basePath /object/instance or /object/instance/resource"
                        .into(),
                );
            }
            let items = json::write_items(&base.path, content)?;
            Args::WriteBatch { base, items }
        }
    })
}

fn str_field<'a>(data: &'a Map<String, Json>, key: &str) -> Result<&'a str, String> {
    match data.get(key) {
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(format!("data.{key} is not a string")),
        None => Err(format!("missing data.{key}")),
    }
}

/// Splits `"/3/0/1?a=b&c"` into the path and its Uri-Query pieces.
fn path_and_query(s: &str, key: &str) -> Result<Target, String> {
    let (p, q) = match s.split_once('?') {
        Some((p, q)) => (
            p,
            q.split('&')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => (s, Vec::new()),
    };
    // "" is no path (the root is "/"); EMQX answers it 4.00 like any other bad path.
    if p.is_empty() {
        return Err(format!("data.{key} is empty"));
    }
    let path = Path::parse(p).map_err(|e| format!("data.{key} {s:?}: {e}"))?;
    Ok(Target { path, query: q })
}

fn format_override(data: &Map<String, Json>) -> Result<Option<ContentFormat>, String> {
    match data.get("format") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => ContentFormat::from_name(s)
            .map(Some)
            .ok_or_else(|| format!("unknown data.format {s:?}")),
        Some(_) => Err("data.format is not a string".into()),
    }
}

fn hex_encoding(echo: &Map<String, Json>) -> Result<bool, String> {
    match echo.get("encoding") {
        None | Some(Json::Null) => Ok(false),
        Some(Json::String(s)) => Ok(s == "hex"),
        Some(_) => Err("encoding is not a string".into()),
    }
}

/// `data.paths` of a composite command: a non-empty array of path strings.
fn composite_paths(d: &Map<String, Json>) -> Result<Vec<Path>, String> {
    let Some(Json::Array(items)) = d.get("paths") else {
        return Err("data.paths must be an array of paths".into());
    };
    if items.is_empty() {
        return Err("data.paths is empty".into());
    }
    items
        .iter()
        .map(|v| match v {
            Json::String(s) => Path::parse(s).map_err(|e| format!("data.paths {s:?}: {e}")),
            _ => Err("data.paths holds a non-string".into()),
        })
        .collect()
}

/// The `reqPath` EMQX reports: `data.path`, else `data.basePath`, exactly as written, minus a
/// `?query` suffix; the `paths` array of a composite operation; null otherwise.
fn req_path_of(data: &Map<String, Json>) -> Json {
    for key in ["path", "basePath", "reqPath"] {
        if let Some(Json::String(p)) = data.get(key) {
            let p = p.split_once('?').map_or(p.as_str(), |(a, _)| a);
            return Json::String(p.to_string());
        }
    }
    if let Some(Json::Array(paths)) = data.get("paths") {
        return Json::Array(paths.clone());
    }
    Json::Null
}

// Writing into a Vec cannot fail.
fn write_json(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn json_text(v: &(impl serde::Serialize + ?Sized)) -> Box<str> {
    serde_json::to_string(v).unwrap_or_default().into()
}

// The durable state (issue 12): observations and queued commands keep their command's head so
// that what they publish after a restart echoes what the application sent.

impl crate::persist::wire::Durable for Op {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.str(self.msg_type());
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<Op> {
        Op::from_msg_type(r.str()?)
    }
}

impl crate::persist::wire::Durable for Echo {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.bytes(&self.pairs);
        w.opt(self.seq_num, |w, (a, b)| {
            w.uint(u64::from(a));
            w.uint(u64::from(b));
        });
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<Echo> {
        let pairs: Box<[u8]> = r.bytes()?.into();
        let seq_num = r.opt(|r| Some((r.u32()?, r.u32()?)))?;
        // `write` slices at these offsets.
        if seq_num.is_some_and(|(a, b)| a > b || b as usize > pairs.len()) {
            return None;
        }
        Some(Echo { pairs, seq_num })
    }
}

impl crate::persist::wire::Durable for CommandHead {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.put(&self.echo);
        w.str(&self.msg_type);
        w.str(&self.req_path);
        w.str(&self.data);
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<CommandHead> {
        Some(CommandHead {
            echo: r.take()?,
            msg_type: r.str()?.into(),
            req_path: r.str()?.into(),
            data: r.str()?.into(),
            origin: Origin::Mqtt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_keeps_order_and_types_and_drops_seqnum_on_request() {
        let c = parse(
            br#"{"reqID":{"a":[1,"x"]},"seqNum":9,"cacheID":"q\"","msgType":"read","data":{"path":"/3/0/1?x=1"}}"#,
        )
        .unwrap();
        assert_eq!(c.op, Op::Read);
        let mut all = Vec::new();
        c.head.echo.write(&mut all, false);
        assert_eq!(
            String::from_utf8(all).unwrap(),
            r#""reqID":{"a":[1,"x"]},"seqNum":9,"cacheID":"q\"","#
        );
        let mut own = Vec::new();
        c.head.echo.write(&mut own, true);
        assert_eq!(
            String::from_utf8(own).unwrap(),
            r#""reqID":{"a":[1,"x"]},"cacheID":"q\"","#
        );
        assert_eq!(&*c.head.req_path, r#""/3/0/1""#);
        assert_eq!(&*c.head.data, r#"{"path":"/3/0/1?x=1"}"#);
        let Args::Read { target, .. } = c.args else {
            panic!("{:?}", c.args)
        };
        assert_eq!(target.query, vec!["x=1".to_string()]);
    }

    #[test]
    fn failures_say_their_stage_and_keep_what_was_readable() {
        let e = parse(b"not json").unwrap_err();
        assert_eq!(e.stage, Stage::Envelope);
        assert!(e.reason.contains("not valid JSON"));
        assert_eq!(&*e.head.msg_type, "error");
        assert!(parse(b"[1]")
            .unwrap_err()
            .reason
            .contains("not a JSON object"));
        let e = parse(br#"{"reqID":7,"data":{}}"#).unwrap_err();
        assert!(e.reason.contains("msgType"));
        let mut echo = Vec::new();
        e.head.echo.write(&mut echo, false);
        assert_eq!(echo, br#""reqID":7,"#);
        let e = parse(br#"{"reqID":7,"msgType":"read","data":5}"#).unwrap_err();
        assert_eq!((&*e.head.msg_type, e.stage), ("read", Stage::Envelope));
        let e = parse(br#"{"msgType":"fly","data":{"path":"/1"}}"#).unwrap_err();
        assert_eq!((&*e.head.msg_type, e.stage), ("fly", Stage::Envelope));
        assert_eq!(&*e.head.req_path, r#""/1""#);
        let e = parse(br#"{"msgType":"execute","data":{"path":"/3/0"}}"#).unwrap_err();
        assert_eq!(e.stage, Stage::Arguments);
        assert!(e.reason.contains("resource path"));
    }

    #[test]
    fn req_path_is_reported_as_written() {
        let rp = |d: &str| {
            let cmd = format!(r#"{{"msgType":"read","data":{d}}}"#);
            match parse(cmd.as_bytes()) {
                Ok(c) => c.head.req_path,
                Err(e) => e.head.req_path,
            }
        };
        assert_eq!(&*rp(r#"{"path":"3/0/1/?a=b"}"#), r#""3/0/1/""#);
        assert_eq!(&*rp(r#"{"basePath":"/3/0/"}"#), r#""/3/0/""#);
        assert_eq!(&*rp(r#"{"paths":["/1","/2"]}"#), r#"["/1","/2"]"#);
        assert_eq!(&*rp("{}"), "null");
    }

    #[test]
    fn every_op_name_round_trips() {
        for (op, name) in OPS {
            assert_eq!(Op::from_msg_type(name), Some(op));
            assert_eq!(op.msg_type(), name);
        }
    }
}
