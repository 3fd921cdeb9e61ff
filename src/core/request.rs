//! Downlink commands (MQTT_API.md, EMQX field names) mapped to CoAP requests. Pure: a command and
//! what the gateway knows about the device in, a [`Request`] description or a reason out.

use serde_json::{Map, Value};

use crate::coap::block::BlockOpt;
use crate::coap::{code, opt};
use crate::lwm2m::{codec, json, ContentFormat, Path, Record, ResourceTypes};

use super::uplink::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Op {
    pub fn from_msg_type(t: &str) -> Option<Op> {
        Some(match t {
            "read" => Op::Read,
            "discover" => Op::Discover,
            "write" => Op::Write,
            "write-attr" => Op::WriteAttr,
            "execute" => Op::Execute,
            "create" => Op::Create,
            "delete" => Op::Delete,
            "observe" => Op::Observe,
            "cancel-observe" => Op::CancelObserve,
            "read-composite" => Op::ReadComposite,
            "write-composite" => Op::WriteComposite,
            "observe-composite" => Op::ObserveComposite,
            "cancel-observe-composite" => Op::CancelObserveComposite,
            _ => return None,
        })
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

/// A CoAP request to send to a device, before message id, token and alternate path are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub op: Op,
    pub method: u8,
    pub path: Path,
    pub query: Vec<String>,
    pub accept: Option<u16>,
    pub content_format: Option<u16>,
    pub payload: Vec<u8>,
    /// Observe option: 0 registers, 1 deregisters (RFC 7641).
    pub observe: Option<u32>,
    /// Paths of a composite operation (its `path` is the root).
    pub paths: Vec<Path>,
}

/// What the gateway knows about the target device.
pub struct DeviceContext<'a> {
    pub version: &'a str,
    pub announced_formats: &'a [u16],
    pub types: &'a dyn ResourceTypes,
}

fn str_field<'a>(data: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match data.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("data.{key} is not a string")),
        None => Err(format!("missing data.{key}")),
    }
}

/// Splits `"/3/0/1?a=b&c"` into the path and its Uri-Query pieces.
fn path_and_query(s: &str, key: &str) -> Result<(Path, Vec<String>), String> {
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
    let path = Path::parse(p).map_err(|e| format!("data.{key} {s:?}: {e}"))?;
    Ok((path, q))
}

fn format_override(data: &Map<String, Value>) -> Result<Option<ContentFormat>, String> {
    match data.get("format") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ContentFormat::from_name(s)
            .map(Some)
            .ok_or_else(|| format!("unknown data.format {s:?}")),
        Some(_) => Err("data.format is not a string".into()),
    }
}

fn hex_encoding(cmd: &Command) -> Result<bool, String> {
    match cmd.echo.get("encoding") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s == "hex" => Ok(true),
        Some(Value::String(_)) => Ok(false),
        Some(_) => Err("encoding is not a string".into()),
    }
}

/// Builds the CoAP request for `cmd`. `Err` is the human-readable reason of a 4.00 answer.
pub fn build(cmd: &Command, op: Op, dev: &DeviceContext) -> Result<Request, String> {
    let d = &cmd.data;
    let fmt = format_override(d)?;
    let mut req = Request {
        op,
        method: code::GET,
        path: Path::ROOT,
        query: Vec::new(),
        accept: None,
        content_format: None,
        payload: Vec::new(),
        observe: None,
        paths: Vec::new(),
    };
    match op {
        Op::Read => {
            (req.path, req.query) = path_and_query(str_field(d, "path")?, "path")?;
            req.accept = fmt
                .or_else(|| codec::preferred_format(dev.version, dev.announced_formats, false))
                .map(|f| f.as_u16());
        }
        Op::Discover => {
            (req.path, req.query) = path_and_query(str_field(d, "path")?, "path")?;
            req.accept = Some(ContentFormat::LinkFormat.as_u16());
        }
        Op::Delete => {
            (req.path, req.query) = path_and_query(str_field(d, "path")?, "path")?;
            if req.path.is_root() {
                return Err("delete of the root path is not allowed".into());
            }
            req.method = code::DELETE;
        }
        Op::Execute => {
            (req.path, req.query) = path_and_query(str_field(d, "path")?, "path")?;
            if req.path.len() != 3 {
                return Err("execute needs a resource path /object/instance/resource".into());
            }
            req.method = code::POST;
            match d.get("args") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() || s == "undefined" => {}
                Some(Value::String(s)) => {
                    req.payload = s.clone().into_bytes();
                    req.content_format = Some(ContentFormat::Text.as_u16());
                }
                Some(_) => return Err("data.args is not a string".into()),
            }
        }
        Op::WriteAttr => {
            let (path, _) = path_and_query(str_field(d, "path")?, "path")?;
            req.path = path;
            req.method = code::PUT;
            for key in ["pmin", "pmax", "gt", "lt", "st", "epmin", "epmax"] {
                match d.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => req.query.push(format!("{key}={s}")),
                    Some(Value::Number(n)) => req.query.push(format!("{key}={n}")),
                    Some(_) => return Err(format!("data.{key} is not a number or string")),
                }
            }
        }
        Op::Observe | Op::CancelObserve => {
            (req.path, req.query) = path_and_query(str_field(d, "path")?, "path")?;
            req.accept = fmt
                .or_else(|| codec::preferred_format(dev.version, dev.announced_formats, false))
                .map(|f| f.as_u16());
            req.observe = Some(if op == Op::Observe { 0 } else { 1 });
        }
        Op::ReadComposite | Op::ObserveComposite | Op::CancelObserveComposite => {
            req.paths = composite_paths(d)?;
            let cf = senml_format(fmt, dev)?;
            req.method = code::FETCH;
            req.payload = codec::encode_paths(cf, &req.paths)
                .map_err(|e| format!("cannot encode paths: {e}"))?;
            req.content_format = Some(cf.as_u16());
            req.accept = Some(cf.as_u16());
            req.observe = match op {
                Op::ObserveComposite => Some(0),
                Op::CancelObserveComposite => Some(1),
                _ => None,
            };
        }
        Op::WriteComposite => {
            let content = match d.get("content") {
                Some(Value::Array(a)) if !a.is_empty() => a.as_slice(),
                Some(Value::Array(_)) => return Err("data.content is empty".into()),
                Some(_) => return Err("data.content is not an array".into()),
                None => return Err("missing data.content".into()),
            };
            let records = json::records_from_write_content(
                &Path::ROOT,
                content,
                dev.types,
                hex_encoding(cmd)?,
            )?;
            if records.iter().any(|r| r.path.len() < 3) {
                return Err("write-composite paths must name resources".into());
            }
            let cf = senml_format(fmt, dev)?;
            req.method = code::IPATCH;
            req.paths = records.iter().map(|r| r.path).collect();
            req.payload = codec::encode(cf, &Path::ROOT, &records)
                .map_err(|e| format!("cannot encode as {}: {e}", cf.name()))?;
            req.content_format = Some(cf.as_u16());
        }
        Op::Write | Op::Create => return build_write(cmd, op, dev, fmt, req),
    }
    Ok(req)
}

/// `data.paths` of a composite command: a non-empty array of path strings.
fn composite_paths(d: &Map<String, Value>) -> Result<Vec<Path>, String> {
    let Some(Value::Array(items)) = d.get("paths") else {
        return Err("data.paths must be an array of paths".into());
    };
    if items.is_empty() {
        return Err("data.paths is empty".into());
    }
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Path::parse(s).map_err(|e| format!("data.paths {s:?}: {e}")),
            _ => Err("data.paths holds a non-string".into()),
        })
        .collect()
}

/// Composite operations need SenML (or LwM2M CBOR on 1.2): the override if it is one, else the
/// device's best announced one, else SenML JSON (what every 1.1 client we know speaks).
fn senml_format(fmt: Option<ContentFormat>, dev: &DeviceContext) -> Result<ContentFormat, String> {
    use ContentFormat::*;
    if let Some(f) = fmt {
        return match f {
            SenmlJson | SenmlCbor | LwM2mCbor => Ok(f),
            other => Err(format!(
                "composite operations need senml-json, senml-cbor or lwm2m-cbor, not {}",
                other.name()
            )),
        };
    }
    Ok(
        match codec::preferred_format(dev.version, dev.announced_formats, false) {
            Some(f @ (SenmlJson | SenmlCbor | LwM2mCbor)) => f,
            _ => SenmlJson,
        },
    )
}

/// Single write (`path`/`type`/`value`), batch write (`basePath` + `content`) and create.
fn build_write(
    cmd: &Command,
    op: Op,
    dev: &DeviceContext,
    fmt: Option<ContentFormat>,
    mut req: Request,
) -> Result<Request, String> {
    let d = &cmd.data;
    let hex = hex_encoding(cmd)?;
    let single = op == Op::Write && d.get("content").is_none() && d.get("path").is_some();
    let records: Vec<Record> = if single {
        let (path, query) = path_and_query(str_field(d, "path")?, "path")?;
        if path.len() < 3 {
            return Err(
                "a single write needs a resource path; use basePath + content for several".into(),
            );
        }
        req.path = path;
        req.query = query;
        let ty = match d.get("type") {
            Some(Value::String(t)) => {
                json::resource_type_from_name(t).ok_or_else(|| format!("unknown type {t:?}"))?
            }
            Some(_) => return Err("data.type is not a string".into()),
            None => {
                let (o, r) = (path.object().unwrap_or(0), path.resource().unwrap_or(0));
                dev.types
                    .resource_type(o, r)
                    .ok_or_else(|| format!("no data.type and no object definition for {path}"))?
            }
        };
        let value = d.get("value").ok_or("missing data.value")?;
        vec![Record::new(path, json::value_from_json(ty, value, hex)?)]
    } else {
        let base = match d.get("basePath") {
            Some(Value::String(b)) => b.as_str(),
            Some(_) => return Err("data.basePath is not a string".into()),
            None => return Err("missing data.basePath".into()),
        };
        let (base, query) = path_and_query(base, "basePath")?;
        req.path = base;
        req.query = query;
        let content = match d.get("content") {
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return Err("data.content is not an array".into()),
            None => return Err("missing data.content".into()),
        };
        if op == Op::Create && base.len() != 1 && base.len() != 2 {
            return Err("create needs basePath /object (or /object/instance)".into());
        }
        if op == Op::Write && !(2..=3).contains(&base.len()) {
            return Err(
                "a batch write needs basePath /object/instance or /object/instance/resource".into(),
            );
        }
        json::records_from_write_content(&base, content, dev.types, hex)?
    };
    // EMQX: single write and resource-level batch write replace (PUT); instance-level batch write
    // is a partial update (POST); create is POST on the object.
    req.method = match op {
        Op::Create => code::POST,
        _ if req.path.len() == 2 => code::POST,
        _ => code::PUT,
    };
    let cf = match fmt {
        Some(f) => f,
        // A device that announced no formats gets single-resource writes as plain text (opaque
        // values as raw bytes): every client reads those, while text-only clients such as
        // lwm2m-node-lib silently drop a TLV write.
        None if single && dev.announced_formats.is_empty() => {
            match records.first().map(|r| &r.value) {
                Some(crate::lwm2m::Value::Opaque(_)) => ContentFormat::Opaque,
                _ => ContentFormat::Text,
            }
        }
        None => codec::preferred_format(dev.version, dev.announced_formats, true)
            .unwrap_or(ContentFormat::Tlv),
    };
    if op == Op::Create && records.is_empty() {
        return Ok(req);
    }
    req.payload = codec::encode(cf, &req.path, &records)
        .map_err(|e| format!("cannot encode as {}: {e}", cf.name()))?;
    req.content_format = Some(cf.as_u16());
    Ok(req)
}

impl Request {
    /// Writes the request as a CON message into `buf`, with `alt_path` (the device's alternate
    /// path, `"/"` for none) before the object path.
    pub fn encode(&self, buf: &mut Vec<u8>, mid: u16, token: &[u8], alt_path: &str) {
        self.encode_blocks(buf, mid, token, alt_path, &Blocks::default());
    }

    /// Writes the request with block-wise options: `block1` replaces the payload by one block of
    /// it (plus Size1 on the first block); `block2` asks for a further block of the answer, which
    /// is a plain request again (no Observe: RFC 7959 §2.6 / RFC 7641 block follow-ups).
    pub fn encode_blocks(
        &self,
        buf: &mut Vec<u8>,
        mid: u16,
        token: &[u8],
        alt_path: &str,
        blocks: &Blocks,
    ) {
        let mut segs: Vec<String> = alt_path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        segs.extend(self.path.ids().iter().map(|i| i.to_string()));
        let mut b = crate::coap::MessageBuilder::new(
            buf,
            crate::coap::MsgType::Con,
            self.method,
            mid,
            token,
        );
        if let (Some(o), None) = (self.observe, blocks.block2) {
            b = b.uint_option(opt::OBSERVE, o);
        }
        b = b.options(opt::URI_PATH, segs.iter().map(|s| s.as_bytes()));
        if let Some(cf) = self.content_format {
            b = b.uint_option(opt::CONTENT_FORMAT, cf as u32);
        }
        b = b.options(opt::URI_QUERY, self.query.iter().map(|s| s.as_bytes()));
        if let Some(a) = self.accept {
            b = b.uint_option(opt::ACCEPT, a as u32);
        }
        let mut tmp = [0u8; 3];
        if let Some(b2) = blocks.block2 {
            b = b.option(opt::BLOCK2, b2.encode(&mut tmp));
        }
        let payload = match &blocks.block1 {
            Some((b1, slice, size1)) => {
                b = b.option(opt::BLOCK1, b1.encode(&mut tmp));
                if b1.num == 0 {
                    b = b.uint_option(opt::SIZE1, *size1);
                }
                slice
            }
            None => &self.payload[..],
        };
        b.payload(payload);
    }
}

/// Block-wise options for one transmission of a request.
#[derive(Debug, Default)]
pub struct Blocks<'a> {
    pub block1: Option<(BlockOpt, &'a [u8], u32)>,
    pub block2: Option<BlockOpt>,
}
