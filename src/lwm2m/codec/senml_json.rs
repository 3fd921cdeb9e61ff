//! SenML JSON (110, RFC 8428 §5 with the LwM2M TS Core §7.4.4 profile).
//!
//! Decoding goes through serde with borrowed strings (serde_json's own recursion limit bounds
//! nesting; a JSON array has no declared length, so element counts are bounded by the bytes).
//! Encoding writes the JSON by hand: it is on the write path of every composite operation, and
//! the shape is fixed. `vd` is base64url without padding per RFC 8428; standard base64 is also
//! accepted on input because some clients send it.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;

use super::senml::{resolve, Num, SenmlRecord, SenmlValue};
use super::{base_name, invalid, relative_name, CodecError};
use crate::lwm2m::{Path, Record, ResourceTypes, Value};

#[derive(Deserialize)]
struct JsonRecord<'a> {
    #[serde(borrow, default)]
    bn: Option<Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    bt: Option<f64>,
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
    #[serde(default)]
    v: Option<serde_json::Number>,
    #[serde(borrow, default)]
    vs: Option<Cow<'a, str>>,
    #[serde(default)]
    vb: Option<bool>,
    #[serde(borrow, default)]
    vd: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    vlo: Option<Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    t: Option<f64>,
}

pub fn decode(payload: &[u8], types: &dyn ResourceTypes) -> Result<Vec<Record>, CodecError> {
    let pack: Vec<JsonRecord<'_>> =
        serde_json::from_slice(payload).map_err(|e| invalid(format!("SenML JSON: {e}")))?;
    let mut recs = Vec::with_capacity(pack.len());
    for j in pack {
        let mut r = SenmlRecord {
            bn: j.bn,
            n: j.n,
            value: None,
        };
        if let Some(v) = j.v {
            r.set_value(SenmlValue::Num(number(&v)?))?;
        }
        if let Some(s) = j.vs {
            r.set_value(SenmlValue::Str(s))?;
        }
        if let Some(b) = j.vb {
            r.set_value(SenmlValue::Bool(b))?;
        }
        if let Some(d) = j.vd {
            r.set_value(SenmlValue::Data(Cow::Owned(decode_b64(&d)?)))?;
        }
        if let Some(o) = j.vlo {
            r.set_value(SenmlValue::Objlnk(o))?;
        }
        recs.push(r);
    }
    resolve(recs, types)
}

pub(crate) fn number(v: &serde_json::Number) -> Result<Num, CodecError> {
    if let Some(i) = v.as_i64() {
        Ok(Num::Int(i as i128))
    } else if let Some(u) = v.as_u64() {
        Ok(Num::Int(u as i128))
    } else {
        v.as_f64()
            .map(Num::Float)
            .ok_or_else(|| invalid("bad number"))
    }
}

fn decode_b64(s: &str) -> Result<Vec<u8>, CodecError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| STANDARD.decode(s))
        .map_err(|_| invalid("SenML vd is not base64"))
}

pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let (bn, prefix) = base_name(base, records);
    let mut out = Vec::with_capacity(16 + records.len() * 24);
    let mut name = String::new();
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut first = true;
        if i == 0 {
            if let Some(bn) = &bn {
                out.extend_from_slice(b"\"bn\":");
                write_str(&mut out, bn);
                first = false;
            }
        }
        if let Some(prefix) = &prefix {
            if !first {
                out.push(b',');
            }
            relative_name(&mut name, prefix, &r.path);
            out.extend_from_slice(b"\"n\":\"");
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
            first = false;
        }
        write_value(&mut out, &r.value, first)?;
        out.push(b'}');
    }
    out.push(b']');
    Ok(out)
}

/// `"key":value` for a record's value (nothing for `Value::None`).
fn write_value(out: &mut Vec<u8>, v: &Value, first: bool) -> Result<(), CodecError> {
    if matches!(v, Value::None) {
        return Ok(());
    }
    if !first {
        out.push(b',');
    }
    match v {
        Value::Integer(i) | Value::Time(i) => {
            out.extend_from_slice(b"\"v\":");
            out.extend_from_slice(i.to_string().as_bytes());
        }
        Value::UnsignedInteger(u) => {
            out.extend_from_slice(b"\"v\":");
            out.extend_from_slice(u.to_string().as_bytes());
        }
        Value::Float(f) => {
            out.extend_from_slice(b"\"v\":");
            write_f64(out, *f)?;
        }
        Value::Boolean(b) => {
            out.extend_from_slice(if *b { b"\"vb\":true" } else { b"\"vb\":false" })
        }
        Value::String(s) | Value::Corelnk(s) => {
            out.extend_from_slice(b"\"vs\":");
            write_str(out, s);
        }
        Value::Opaque(b) => {
            out.extend_from_slice(b"\"vd\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(b)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        Value::Objlnk(o, i) => out.extend_from_slice(format!("\"vlo\":\"{o}:{i}\"").as_bytes()),
        Value::None => {}
    }
    Ok(())
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub(crate) fn write_f64(out: &mut Vec<u8>, f: f64) -> Result<(), CodecError> {
    if !f.is_finite() {
        return Err(CodecError::BadValue(format!(
            "{f} cannot be sent as a JSON number"
        )));
    }
    let _ = serde_json::to_writer(&mut *out, &f);
    Ok(())
}

/// `[{"n":"/3/0/1"},{"n":"/1/0"}]`: the body of a Read-Composite/Observe-Composite request.
pub fn encode_paths(paths: &[Path]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + paths.len() * 16);
    out.push(b'[');
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"n\":\"{p}\"}}").as_bytes());
    }
    out.push(b']');
    out
}
