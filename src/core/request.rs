//! Commands mapped to CoAP requests. Pure: a typed [`Command`] and what the gateway knows about
//! the device in, a [`Request`] description (method, path, options, body) or the reason for a
//! 4.00 out. Content formats are chosen here: the command's override, else the best format the
//! device announced for its LwM2M version.

use crate::coap::block::BlockOpt;
use crate::coap::{code, opt};
use crate::lwm2m::json::{self, WriteItem};
use crate::lwm2m::{codec, ContentFormat, Path, Record, ResourceTypes};

use super::command::{Args, Command, Op, SingleWrite, Target};
use super::settings::WriteEncoding;

/// A CoAP request to send to a device, before message id, token and alternate path are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
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

impl Request {
    /// Whether two requests address the same target (an observation and its cancel).
    pub fn same_target(&self, other: &Request) -> bool {
        self.path == other.path && self.paths == other.paths
    }
}

/// What the gateway knows about the target device.
pub struct DeviceContext<'a> {
    pub version: &'a str,
    pub announced_formats: &'a [u16],
    pub types: &'a dyn ResourceTypes,
    /// The gateway's rule for writes without a `data.format`.
    pub write_encoding: WriteEncoding,
}

impl DeviceContext<'_> {
    fn preferred(&self, write: bool) -> Option<ContentFormat> {
        codec::preferred_format(self.version, self.announced_formats, write)
    }
}

fn get(target: &Target) -> Request {
    Request {
        method: code::GET,
        path: target.path,
        query: target.query.clone(),
        accept: None,
        content_format: None,
        payload: Vec::new(),
        observe: None,
        paths: Vec::new(),
    }
}

/// Builds the CoAP request for `cmd`. `Err` is the human-readable reason of a 4.00 answer.
pub fn build(cmd: &Command, dev: &DeviceContext) -> Result<Request, String> {
    let op = cmd.op;
    let req = match &cmd.args {
        Args::Read { target, format } => Request {
            accept: format.or_else(|| dev.preferred(false)).map(|f| f.as_u16()),
            observe: match op {
                Op::Observe => Some(0),
                Op::CancelObserve => Some(1),
                _ => None,
            },
            ..get(target)
        },
        Args::Discover(target) => Request {
            accept: Some(ContentFormat::LinkFormat.as_u16()),
            ..get(target)
        },
        Args::Delete(target) => Request {
            method: code::DELETE,
            ..get(target)
        },
        Args::Execute { target, args } => Request {
            method: code::POST,
            content_format: args.as_ref().map(|_| ContentFormat::Text.as_u16()),
            payload: args.clone().map(String::into_bytes).unwrap_or_default(),
            ..get(target)
        },
        Args::WriteAttr { path, attributes } => Request {
            method: code::PUT,
            query: attributes.clone(),
            ..get(&Target {
                path: *path,
                query: Vec::new(),
            })
        },
        Args::Composite { paths, format } => {
            let cf = senml_format(*format, dev)?;
            Request {
                method: code::FETCH,
                payload: codec::encode_paths(cf, paths)
                    .map_err(|e| format!("cannot encode paths: {e}"))?,
                content_format: Some(cf.as_u16()),
                accept: Some(cf.as_u16()),
                observe: match op {
                    Op::ObserveComposite => Some(0),
                    Op::CancelObserveComposite => Some(1),
                    _ => None,
                },
                paths: paths.clone(),
                ..get(&root())
            }
        }
        Args::WriteComposite { items, format } => {
            let records = resolve(items, dev, cmd.hex)?;
            let cf = senml_format(*format, dev)?;
            Request {
                method: code::IPATCH,
                paths: records.iter().map(|r| r.path).collect(),
                payload: codec::encode(cf, &Path::ROOT, &records)
                    .map_err(|e| format!("cannot encode as {}: {e}", cf.name()))?,
                content_format: Some(cf.as_u16()),
                ..get(&root())
            }
        }
        Args::WriteSingle(w) => write_single(cmd, w, dev)?,
        Args::WriteBatch { base, items } => write_batch(cmd, base, items, dev)?,
    };
    Ok(req)
}

fn root() -> Target {
    Target {
        path: Path::ROOT,
        query: Vec::new(),
    }
}

fn resolve(items: &[WriteItem], dev: &DeviceContext, hex: bool) -> Result<Vec<Record>, String> {
    items.iter().map(|i| i.resolve(dev.types, hex)).collect()
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
    Ok(match dev.preferred(false) {
        Some(f @ (SenmlJson | SenmlCbor | LwM2mCbor)) => f,
        _ => SenmlJson,
    })
}

/// Single write (`path`/`type`/`value`): replaces the resource (PUT).
fn write_single(cmd: &Command, w: &SingleWrite, dev: &DeviceContext) -> Result<Request, String> {
    let path = w.target.path;
    let ty = match w.ty {
        Some(t) => t,
        None => {
            let (o, r) = (path.object().unwrap_or(0), path.resource().unwrap_or(0));
            dev.types
                .resource_type(o, r)
                .ok_or_else(|| format!("no data.type and no object definition for {path}"))?
        }
    };
    let record = Record::new(path, json::value_from_json(ty, &w.value, cmd.hex)?);
    let cf = match cmd.format {
        Some(f) => f,
        None if dev.write_encoding == WriteEncoding::Tlv => ContentFormat::Tlv,
        // A device that announced no formats gets single-resource writes as plain text (opaque
        // values as raw bytes): every client reads those, while text-only clients such as
        // lwm2m-node-lib silently drop a TLV write.
        None if dev.announced_formats.is_empty() => match record.value {
            crate::lwm2m::Value::Opaque(_) => ContentFormat::Opaque,
            _ => ContentFormat::Text,
        },
        None => dev.preferred(true).unwrap_or(ContentFormat::Tlv),
    };
    encoded(get(&w.target), code::PUT, cf, &[record])
}

/// Batch write (`basePath` + `content`) and create. EMQX: a resource-level batch write replaces
/// (PUT), an instance-level one is a partial update (POST); create is POST on the object.
fn write_batch(
    cmd: &Command,
    base: &Target,
    items: &[WriteItem],
    dev: &DeviceContext,
) -> Result<Request, String> {
    let records = resolve(items, dev, cmd.hex)?;
    let method = match cmd.op {
        Op::Create => code::POST,
        _ if base.path.len() == 2 => code::POST,
        _ => code::PUT,
    };
    if cmd.op == Op::Create && records.is_empty() {
        return Ok(Request {
            method,
            ..get(base)
        });
    }
    let cf = match (cmd.format, dev.write_encoding) {
        (Some(f), _) => f,
        (None, WriteEncoding::Tlv) => ContentFormat::Tlv,
        (None, WriteEncoding::Auto) => dev.preferred(true).unwrap_or(ContentFormat::Tlv),
    };
    encoded(get(base), method, cf, &records)
}

fn encoded(
    req: Request,
    method: u8,
    cf: ContentFormat,
    records: &[Record],
) -> Result<Request, String> {
    let payload = codec::encode(cf, &req.path, records)
        .map_err(|e| format!("cannot encode as {}: {e}", cf.name()))?;
    Ok(Request {
        method,
        payload,
        content_format: Some(cf.as_u16()),
        ..req
    })
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

impl crate::persist::wire::Durable for Request {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.u8(self.method);
        w.put(&self.path);
        w.list(&self.query, |w, q| w.str(q));
        w.opt(self.accept, |w, v| w.uint(u64::from(v)));
        w.opt(self.content_format, |w, v| w.uint(u64::from(v)));
        w.bytes(&self.payload);
        w.opt(self.observe, |w, v| w.uint(u64::from(v)));
        w.list(&self.paths, |w, p| w.put(p));
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<Request> {
        Some(Request {
            method: r.u8()?,
            path: r.take()?,
            query: r.list(|r| r.str().map(String::from))?,
            accept: r.opt(|r| r.u16())?,
            content_format: r.opt(|r| r.u16())?,
            payload: r.bytes()?.to_vec(),
            observe: r.opt(|r| r.u32())?,
            paths: r.list(|r| r.take())?,
        })
    }
}
