//! OMA TLV (11542, and the pre-1.0 number 1542): LwM2M TS Core §7.4.3.
//!
//! A TLV is a type byte (2 bits of kind, 1 bit of id width, 2 bits of length width, 3 bits of
//! inline length), an 8/16-bit id, a 0/8/16/24-bit length, and the value. Nesting is fixed by the
//! kinds: an object instance holds resources and multiple resources, a multiple resource holds
//! resource instances, and nothing else nests; so depth is at most three by construction and the
//! decoder is not recursive. Values carry no type: the model types them, and a value the model does
//! not describe (or whose bytes do not fit the declared type) is kept as flagged opaque bytes.
//!
//! Paths: TLV ids are relative, so records get full paths from the request path plus the ids. Bare
//! resources answering a read of `/o` are taken as instance 0 (what single-instance clients send;
//! Leshan reads them the same way).
//!
//! A read of a resource instance `/o/i/r/ri` is answered in three shapes in the field: the Resource
//! Instance TLV the TS asks for (`41 ri v`, possibly inside its Multiple Resource), a Multiple
//! Resource holding every instance of `r` (the client serialises the resource it has), or a plain
//! Resource TLV `r` whose value is the instance's (clients that do not model instances on the
//! wire). All three decode to the one record at the requested path: the value is the requested
//! instance's, and instances the device volunteered besides it are left out. EMQX gives no
//! reference to copy: it answers every TLV reply to a four-segment read with 4.00 (its
//! `tlv_to_json` has no case for a top-level Resource Instance TLV and its `basename` none for a
//! four-segment path; the crash is caught as `bad_request`). So the content follows what a read
//! means in every other format: the records of the requested path, exactly what a SenML or CBOR
//! device answers, one record whatever shape the device chose. Whoever wants all the instances
//! reads `/o/i/r`. An answer without the requested instance is refused.

use super::{group_by_segment, invalid, type_of, CodecError};
use crate::lwm2m::{Path, Record, ResourceType, ResourceTypes, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ObjectInstance = 0,
    ResourceInstance = 1,
    MultipleResource = 2,
    Resource = 3,
}

struct Tlv<'a> {
    kind: Kind,
    id: u16,
    value: &'a [u8],
}

/// Splits `buf` into consecutive TLVs; every length is checked against the bytes present.
fn parse(buf: &[u8]) -> Result<Vec<Tlv<'_>>, CodecError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], CodecError> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or(CodecError::Truncated)?;
        let s = &buf[*pos..end];
        *pos = end;
        Ok(s)
    };
    while pos < buf.len() {
        let t = take(&mut pos, 1)?[0];
        let kind = match t >> 6 {
            0 => Kind::ObjectInstance,
            1 => Kind::ResourceInstance,
            2 => Kind::MultipleResource,
            _ => Kind::Resource,
        };
        let id = if t & 0x20 != 0 {
            let b = take(&mut pos, 2)?;
            u16::from_be_bytes([b[0], b[1]])
        } else {
            take(&mut pos, 1)?[0] as u16
        };
        let len_bytes = ((t >> 3) & 0x03) as usize;
        let len = if len_bytes == 0 {
            (t & 0x07) as usize
        } else {
            take(&mut pos, len_bytes)?
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize)
        };
        let value = take(&mut pos, len)?;
        out.push(Tlv { kind, id, value });
    }
    Ok(out)
}

fn child(p: &Path, id: u16) -> Result<Path, CodecError> {
    p.child(id)
        .ok_or_else(|| invalid(format!("TLV id {id} below {p} is not a valid path")))
}

fn check_id(what: &str, got: u16, want: Option<u16>) -> Result<(), CodecError> {
    match want {
        Some(w) if w != got => Err(invalid(format!(
            "TLV {what} id {got} does not answer the requested {w}"
        ))),
        _ => Ok(()),
    }
}

pub fn decode(
    req: &Path,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    let obj = req
        .object()
        .ok_or_else(|| invalid("TLV needs a request path with an object id"))?;
    let obj_path = Path::ROOT
        .child(obj)
        .ok_or_else(|| invalid("bad object id"))?;
    let top = parse(payload)?;
    let mut out = Vec::with_capacity(top.len());
    if top.iter().any(|t| t.kind == Kind::ObjectInstance) {
        if top.iter().any(|t| t.kind != Kind::ObjectInstance) {
            return Err(invalid(
                "TLV object instances mixed with other TLVs at the top level",
            ));
        }
        for t in &top {
            check_id("object instance", t.id, req.instance())?;
            let inst = child(&obj_path, t.id)?;
            decode_resources(&inst, &parse(t.value)?, req, types, &mut out)?;
        }
    } else if top.iter().any(|t| t.kind == Kind::ResourceInstance) {
        if top.iter().any(|t| t.kind != Kind::ResourceInstance) {
            return Err(invalid(
                "TLV resource instances mixed with other TLVs at the top level",
            ));
        }
        if req.len() < 3 {
            return Err(invalid(
                "bare TLV resource instances need a resource request path",
            ));
        }
        let res = Path::from_ids(&req.ids()[..3]).ok_or_else(|| invalid("bad request path"))?;
        for t in top.iter().filter(|t| wanted_instance(req, t.id)) {
            out.push(typed(child(&res, t.id)?, t.value, types));
        }
    } else {
        let inst = child(&obj_path, req.instance().unwrap_or(0))?;
        decode_resources(&inst, &top, req, types, &mut out)?;
    }
    if let Some(ri) = req.resource_instance() {
        if !payload.is_empty() && out.is_empty() {
            return Err(invalid(format!(
                "TLV does not contain the requested resource instance {ri}"
            )));
        }
    }
    Ok(out)
}

/// Whether resource instance `id` belongs in the answer to a read of `req` (every instance, unless
/// `req` names one).
fn wanted_instance(req: &Path, id: u16) -> bool {
    !matches!(req.resource_instance(), Some(ri) if ri != id)
}

/// The content of one object instance: resources and multiple resources only.
fn decode_resources(
    inst: &Path,
    items: &[Tlv<'_>],
    req: &Path,
    types: &dyn ResourceTypes,
    out: &mut Vec<Record>,
) -> Result<(), CodecError> {
    for t in items {
        check_id("resource", t.id, req.resource())?;
        let res = child(inst, t.id)?;
        match t.kind {
            // A single value answering a read of `/o/i/r/ri` is that instance's value.
            Kind::Resource => match req.resource_instance() {
                Some(ri) => out.push(typed(child(&res, ri)?, t.value, types)),
                None => out.push(typed(res, t.value, types)),
            },
            Kind::MultipleResource => {
                for ri in parse(t.value)? {
                    if ri.kind != Kind::ResourceInstance {
                        return Err(invalid(
                            "a TLV multiple resource may only contain resource instances",
                        ));
                    }
                    if wanted_instance(req, ri.id) {
                        out.push(typed(child(&res, ri.id)?, ri.value, types));
                    }
                }
            }
            _ => return Err(invalid("a TLV object instance may only contain resources")),
        }
    }
    Ok(())
}

fn typed(path: Path, bytes: &[u8], types: &dyn ResourceTypes) -> Record {
    match type_of(types, &path).and_then(|ty| value_of(ty, bytes)) {
        Some(value) => Record::new(path, value),
        None => Record {
            path,
            value: Value::Opaque(bytes.to_vec()),
            type_unknown: true,
        },
    }
}

fn be_signed(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    let init: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    Some(b.iter().fold(init, |acc, &x| (acc << 8) | x as i64))
}

/// Bytes as a value of `ty`; `None` when they cannot be one (wrong length, bad UTF-8...).
/// Integer lengths other than the TS's 1/2/4/8 are accepted: some clients (and EMQX 5.x writes)
/// use minimal big-endian lengths.
fn value_of(ty: ResourceType, b: &[u8]) -> Option<Value> {
    Some(match ty {
        ResourceType::Integer => Value::Integer(be_signed(b)?),
        ResourceType::Time => Value::Time(be_signed(b)?),
        ResourceType::UnsignedInteger => {
            if b.is_empty() || b.len() > 8 {
                return None;
            }
            Value::UnsignedInteger(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
        }
        ResourceType::Float => match *b {
            [a, b1, c, d] => Value::Float(f32::from_be_bytes([a, b1, c, d]) as f64),
            [a, b1, c, d, e, f, g, h] => {
                Value::Float(f64::from_be_bytes([a, b1, c, d, e, f, g, h]))
            }
            _ => return None,
        },
        ResourceType::Boolean => match b {
            [0] => Value::Boolean(false),
            [1] => Value::Boolean(true),
            _ => return None,
        },
        ResourceType::Objlnk => match *b {
            [a, b1, c, d] => Value::Objlnk(u16::from_be_bytes([a, b1]), u16::from_be_bytes([c, d])),
            _ => return None,
        },
        ResourceType::String => Value::String(String::from_utf8(b.to_vec()).ok()?),
        ResourceType::Corelnk => Value::Corelnk(String::from_utf8(b.to_vec()).ok()?),
        ResourceType::Opaque => Value::Opaque(b.to_vec()),
        ResourceType::None => return None,
    })
}

// ---- encoder ----------------------------------------------------------------------------------

/// Encodes records under `base`: `/o` -> object instance(s), `/o/i` -> resources (4-segment records
/// grouped into multiple resources), `/o/i/r` -> one resource or one multiple resource,
/// `/o/i/r/ri` -> one resource instance. Groups keep the order of first appearance.
pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let recs: Vec<&Record> = records.iter().collect();
    let mut out = Vec::with_capacity(records.len() * 8);
    match base.len() {
        1 => {
            for (inst, group) in group_by_segment(&recs, 1) {
                let start = out.len();
                let below: Vec<&Record> =
                    group.iter().copied().filter(|r| r.path.len() > 2).collect();
                if let Some(r) = group
                    .iter()
                    .find(|r| r.path.len() == 2 && r.value != Value::None)
                {
                    return Err(invalid(format!(
                        "{} is an object instance and cannot hold a value",
                        r.path
                    )));
                }
                write_resources(&mut out, &below)?;
                finish(&mut out, start, Kind::ObjectInstance, inst)?;
            }
            if recs.iter().any(|r| r.path.len() < 2) {
                return Err(invalid("records below an object must name an instance"));
            }
        }
        2 => {
            if recs.iter().any(|r| r.path.len() < 3) {
                return Err(invalid(
                    "records below an object instance must name a resource",
                ));
            }
            write_resources(&mut out, &recs)?;
        }
        3 => {
            let id = base.last().unwrap_or_default();
            if let [r] = recs.as_slice() {
                if r.path.len() == 3 {
                    leaf(&mut out, Kind::Resource, id, &r.value)?;
                    return Ok(out);
                }
            }
            multiple(&mut out, id, &recs)?;
        }
        4 => {
            let [r] = recs.as_slice() else {
                return Err(invalid("a resource instance write carries one value"));
            };
            leaf(
                &mut out,
                Kind::ResourceInstance,
                base.last().unwrap_or_default(),
                &r.value,
            )?;
        }
        _ => return Err(invalid("TLV needs at least an object in the base path")),
    }
    Ok(out)
}

fn write_resources(out: &mut Vec<u8>, recs: &[&Record]) -> Result<(), CodecError> {
    for (id, group) in group_by_segment(recs, 2) {
        match group.as_slice() {
            [r] if r.path.len() == 3 => leaf(out, Kind::Resource, id, &r.value)?,
            _ => multiple(out, id, &group)?,
        }
    }
    Ok(())
}

fn multiple(out: &mut Vec<u8>, id: u16, recs: &[&Record]) -> Result<(), CodecError> {
    let start = out.len();
    for r in recs {
        let ri = r.path.resource_instance().ok_or_else(|| {
            invalid(format!(
                "{} mixes a single value with resource instances",
                r.path
            ))
        })?;
        leaf(out, Kind::ResourceInstance, ri, &r.value)?;
    }
    finish(out, start, Kind::MultipleResource, id)
}

fn leaf(out: &mut Vec<u8>, kind: Kind, id: u16, v: &Value) -> Result<(), CodecError> {
    let start = out.len();
    match v {
        Value::Integer(i) | Value::Time(i) => {
            let n = if *i as i8 as i64 == *i {
                1
            } else if *i as i16 as i64 == *i {
                2
            } else if *i as i32 as i64 == *i {
                4
            } else {
                8
            };
            out.extend_from_slice(&i.to_be_bytes()[8 - n..]);
        }
        Value::UnsignedInteger(u) => {
            let n = if *u <= u8::MAX as u64 {
                1
            } else if *u <= u16::MAX as u64 {
                2
            } else if *u <= u32::MAX as u64 {
                4
            } else {
                8
            };
            out.extend_from_slice(&u.to_be_bytes()[8 - n..]);
        }
        // Always 8 bytes, as EMQX and Leshan send: no precision is ever lost.
        Value::Float(f) => out.extend_from_slice(&f.to_be_bytes()),
        Value::Boolean(b) => out.push(*b as u8),
        Value::String(s) | Value::Corelnk(s) => out.extend_from_slice(s.as_bytes()),
        Value::Opaque(b) => out.extend_from_slice(b),
        Value::Objlnk(o, i) => {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&i.to_be_bytes());
        }
        Value::None => {}
    }
    finish(out, start, kind, id)
}

/// Prepends the TLV header to the value written at `out[start..]`. The value is written first
/// because its length decides the header size; rotating it into place costs one copy.
fn finish(out: &mut Vec<u8>, start: usize, kind: Kind, id: u16) -> Result<(), CodecError> {
    let len = out.len() - start;
    let mut hdr = [0u8; 6];
    let mut t = (kind as u8) << 6;
    let mut n = 1;
    if id > u8::MAX as u16 {
        t |= 0x20;
        hdr[1..3].copy_from_slice(&id.to_be_bytes());
        n = 3;
    } else {
        hdr[1] = id as u8;
        n += 1;
    }
    if len < 8 {
        t |= len as u8;
    } else {
        let width = if len <= 0xFF {
            1
        } else if len <= 0xFFFF {
            2
        } else if len <= 0xFF_FFFF {
            3
        } else {
            return Err(CodecError::BadValue(format!(
                "TLV value of {len} bytes exceeds the 24-bit length"
            )));
        };
        t |= (width as u8) << 3;
        hdr[n..n + width].copy_from_slice(&(len as u32).to_be_bytes()[4 - width..]);
        n += width;
    }
    hdr[0] = t;
    out.extend_from_slice(&hdr[..n]);
    out[start..].rotate_right(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::NoTypes;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn header_widths() {
        for (len, hdr_len) in [
            (0usize, 2usize),
            (7, 2),
            (8, 3),
            (255, 3),
            (256, 4),
            (65535, 4),
            (65536, 5),
        ] {
            let rec = Record::new(p("/3/0/1"), Value::Opaque(vec![0xAB; len]));
            let bytes = encode(&p("/3/0/1"), std::slice::from_ref(&rec)).unwrap();
            assert_eq!(bytes.len(), len + hdr_len, "len {len}");
            let back = decode(&p("/3/0/1"), &bytes, &NoTypes).unwrap();
            assert_eq!(back[0].value, rec.value);
        }
        let rec = Record::new(p("/3/0/300"), Value::Boolean(true));
        let bytes = encode(&p("/3/0"), &[rec]).unwrap();
        assert_eq!(bytes, [0xE1, 0x01, 0x2C, 0x01]);
    }

    #[test]
    fn integer_widths() {
        for (i, want) in [
            (0i64, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x00, 0x80]),
            (129, vec![0x00, 0x81]),
            (-129, vec![0xFF, 0x7F]),
            (32768, vec![0, 0, 0x80, 0]),
            (1i64 << 40, vec![0, 0, 1, 0, 0, 0, 0, 0]),
        ] {
            let bytes = encode(
                &p("/3/0/13"),
                &[Record::new(p("/3/0/13"), Value::Integer(i))],
            )
            .unwrap();
            assert_eq!(&bytes[bytes.len() - want.len()..], &want[..], "{i}");
            assert_eq!(be_signed(&want), Some(i));
        }
    }

    /// `/3/x/7` (Power Source Voltage) is a multiple Integer resource, as in `xml/3.xml`.
    struct Types;
    impl ResourceTypes for Types {
        fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType> {
            (object == 3 && resource == 7).then_some(ResourceType::Integer)
        }
        fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
            Some(true)
        }
    }

    fn ri_read(payload: &[u8]) -> Result<Vec<Record>, CodecError> {
        decode(&p("/3/0/7/1"), payload, &Types)
    }

    fn want(v: i64) -> Vec<Record> {
        vec![Record::new(p("/3/0/7/1"), Value::Integer(v))]
    }

    #[test]
    fn resource_instance_read_answered_with_an_instance_tlv() {
        // 41 01 0F: Resource Instance 1 = 15.
        assert_eq!(ri_read(&[0x41, 0x01, 0x0F]), Ok(want(15)));
        // Inside its Multiple Resource: 83 07 | 41 01 0F.
        assert_eq!(ri_read(&[0x83, 0x07, 0x41, 0x01, 0x0F]), Ok(want(15)));
        // Inside its object instance too: 05 00 | 83 07 41 01 0F.
        assert_eq!(
            ri_read(&[0x05, 0x00, 0x83, 0x07, 0x41, 0x01, 0x0F]),
            Ok(want(15))
        );
    }

    #[test]
    fn resource_instance_read_answered_with_the_whole_resource() {
        // 86 07 | 41 00 01 | 41 01 0F: instances 0 = 1 and 1 = 15; only the requested one is kept.
        let all = [0x86, 0x07, 0x41, 0x00, 0x01, 0x41, 0x01, 0x0F];
        assert_eq!(ri_read(&all), Ok(want(15)));
        // Bare instance TLVs, both sent: 41 00 01 | 41 01 0F.
        assert_eq!(ri_read(&[0x41, 0x00, 0x01, 0x41, 0x01, 0x0F]), Ok(want(15)));
        // The resource read still gets every instance.
        let recs = decode(&p("/3/0/7"), &all, &Types).unwrap();
        assert_eq!(
            recs,
            [
                Record::new(p("/3/0/7/0"), Value::Integer(1)),
                Record::new(p("/3/0/7/1"), Value::Integer(15)),
            ]
        );
    }

    #[test]
    fn resource_instance_read_answered_with_a_resource_tlv() {
        // C1 07 0F: Resource 7 = 15, the value of the requested instance.
        assert_eq!(ri_read(&[0xC1, 0x07, 0x0F]), Ok(want(15)));
        // 16-bit value: C2 07 01 2C = 300.
        assert_eq!(ri_read(&[0xC2, 0x07, 0x01, 0x2C]), Ok(want(300)));
    }

    #[test]
    fn resource_instance_read_with_something_else_is_refused() {
        // Only instance 0 sent.
        assert!(ri_read(&[0x83, 0x07, 0x41, 0x00, 0x01]).is_err());
        assert!(ri_read(&[0x41, 0x00, 0x01]).is_err());
        // An empty multiple resource.
        assert!(ri_read(&[0x80, 0x07]).is_err());
        // Another resource (8), as a Resource or a Multiple Resource.
        assert!(ri_read(&[0xC1, 0x08, 0x0F]).is_err());
        assert!(ri_read(&[0x83, 0x08, 0x41, 0x01, 0x0F]).is_err());
        // Another object instance.
        assert!(ri_read(&[0x05, 0x01, 0x83, 0x07, 0x41, 0x01, 0x0F]).is_err());
        // Truncated and malformed bytes stay errors, never panics.
        assert_eq!(
            ri_read(&[0x86, 0x07, 0x41, 0x00]),
            Err(CodecError::Truncated)
        );
        assert!(ri_read(&[0x83, 0x07, 0xC1, 0x01, 0x0F]).is_err());
        for n in 0..8 {
            let _ = ri_read(&[0x86, 0x07, 0x41, 0x00, 0x01, 0x41, 0x01, 0x0F][..n]);
        }
    }
}
