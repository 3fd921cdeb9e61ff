//! SenML CBOR (112, RFC 8428 §6 with the LwM2M TS Core §7.4.5 profile): the SenML JSON model
//! with integer labels (-2 bn, -3 bt, 0 n, 2 v, 3 vs, 4 vb, 6 t, 8 vd) and the LwM2M-specific
//! text label "vlo" for object links.

use super::cbor::{self, Cbor};
use super::senml::{resolve, Num, SenmlRecord, SenmlValue};
use super::{base_name, invalid, relative_name, CodecError};
use crate::lwm2m::{Path, Record, ResourceTypes, Value};

pub fn decode(payload: &[u8], types: &dyn ResourceTypes) -> Result<Vec<Record>, CodecError> {
    let Cbor::Array(items) = cbor::parse(payload)? else {
        return Err(invalid("SenML CBOR must be an array"));
    };
    let mut recs = Vec::with_capacity(items.len());
    for item in items {
        let Cbor::Map(fields) = item else {
            return Err(invalid("SenML CBOR record must be a map"));
        };
        let mut r = SenmlRecord::default();
        for (k, v) in fields {
            match (&k, v) {
                (Cbor::Nint(1), Cbor::Text(s)) => r.bn = Some(s),
                (Cbor::Uint(0), Cbor::Text(s)) => r.n = Some(s),
                (Cbor::Uint(2), v) => r.set_value(SenmlValue::Num(match v {
                    Cbor::Float(f) => Num::Float(f),
                    ref i => Num::Int(
                        i.as_int()
                            .ok_or_else(|| invalid("SenML v must be a number"))?,
                    ),
                }))?,
                (Cbor::Uint(3), Cbor::Text(s)) => r.set_value(SenmlValue::Str(s))?,
                (Cbor::Uint(4), Cbor::Bool(b)) => r.set_value(SenmlValue::Bool(b))?,
                (Cbor::Uint(8), Cbor::Bytes(b)) => r.set_value(SenmlValue::Data(b))?,
                (Cbor::Text(t), Cbor::Text(s)) if t == "vlo" => {
                    r.set_value(SenmlValue::Objlnk(s))?
                }
                // bt, t: numbers, unused (records carry no time).
                (Cbor::Nint(2) | Cbor::Uint(6), Cbor::Uint(_) | Cbor::Nint(_) | Cbor::Float(_)) => {
                }
                (Cbor::Nint(1) | Cbor::Uint(0 | 3 | 4 | 6 | 8) | Cbor::Nint(2), _) => {
                    return Err(invalid(format!(
                        "SenML CBOR label {k:?} has the wrong type"
                    )))
                }
                (Cbor::Text(t), _) if t == "vlo" => return Err(invalid("SenML vlo must be text")),
                _ => {}
            }
        }
        recs.push(r);
    }
    resolve(recs, types)
}

pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let (bn, prefix) = base_name(base, records);
    let mut out = Vec::with_capacity(8 + records.len() * 16);
    let mut name = String::new();
    cbor::write_head(&mut out, 4, records.len() as u64);
    for (i, r) in records.iter().enumerate() {
        let with_bn = i == 0 && bn.is_some();
        let fields =
            with_bn as u64 + prefix.is_some() as u64 + !matches!(r.value, Value::None) as u64;
        cbor::write_head(&mut out, 5, fields);
        if let (true, Some(bn)) = (with_bn, &bn) {
            out.push(0x21); // -2
            cbor::write_text(&mut out, bn);
        }
        if let Some(prefix) = &prefix {
            relative_name(&mut name, prefix, &r.path);
            out.push(0x00);
            cbor::write_text(&mut out, &name);
        }
        match &r.value {
            Value::Integer(_) | Value::Time(_) | Value::UnsignedInteger(_) | Value::Float(_) => {
                out.push(0x02);
                cbor::write_value(&mut out, &r.value);
            }
            Value::String(s) | Value::Corelnk(s) => {
                out.push(0x03);
                cbor::write_text(&mut out, s);
            }
            Value::Boolean(b) => out.extend_from_slice(&[0x04, if *b { 0xF5 } else { 0xF4 }]),
            Value::Opaque(b) => {
                out.push(0x08);
                cbor::write_bytes(&mut out, b);
            }
            Value::Objlnk(o, i) => {
                cbor::write_text(&mut out, "vlo");
                cbor::write_text(&mut out, &format!("{o}:{i}"));
            }
            Value::None => {}
        }
    }
    Ok(out)
}

/// `[{0: "/3/0/1"}, ...]`: the body of a Read-Composite/Observe-Composite request.
pub fn encode_paths(paths: &[Path]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + paths.len() * 12);
    cbor::write_head(&mut out, 4, paths.len() as u64);
    for p in paths {
        out.extend_from_slice(&[0xA1, 0x00]);
        cbor::write_text(&mut out, &p.to_string());
    }
    out
}
