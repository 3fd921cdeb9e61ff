//! text/plain (0): one resource (instance) value as text, typed through the object model.
//!
//! The text carries no type, so the model decides how to parse it. When no definition describes
//! the resource we report the text itself as a string (with `type_unknown: false`): a readable
//! string is what a user of a text read expects, and unlike TLV there are no raw bytes that would
//! be more faithful. Only text that is not UTF-8 falls back to flagged opaque bytes.

use base64::Engine;

use super::{invalid, parse_objlnk, type_of, CodecError};
use crate::lwm2m::{Path, Record, ResourceType, ResourceTypes, Value};

pub fn decode(
    req: &Path,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    if req.len() < 3 {
        return Err(invalid("text/plain needs a resource path"));
    }
    let ty = type_of(types, req);
    let Ok(text) = std::str::from_utf8(payload) else {
        return Ok(vec![Record {
            path: *req,
            value: Value::Opaque(payload.to_vec()),
            type_unknown: true,
        }]);
    };
    let value = match ty {
        None | Some(ResourceType::None) | Some(ResourceType::String) => {
            Value::String(text.to_owned())
        }
        Some(ty) => parse_text(ty, text)?,
    };
    Ok(vec![Record::new(*req, value)])
}

/// Parses a text value of a known type. Integers written with a decimal point come out as Float
/// (EMQX does the same; the device evidently sends a non-integer).
pub(crate) fn parse_text(ty: ResourceType, text: &str) -> Result<Value, CodecError> {
    let t = text.trim();
    let bad = || CodecError::BadValue(format!("{text:?} is not a valid {ty:?}"));
    Ok(match ty {
        ResourceType::Integer => match t.parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Float(parse_float(t).ok_or_else(bad)?),
        },
        ResourceType::UnsignedInteger => Value::UnsignedInteger(t.parse().map_err(|_| bad())?),
        ResourceType::Time => Value::Time(t.parse().map_err(|_| bad())?),
        ResourceType::Float => Value::Float(parse_float(t).ok_or_else(bad)?),
        ResourceType::Boolean => match t {
            "1" | "true" => Value::Boolean(true),
            "0" | "false" => Value::Boolean(false),
            _ => return Err(bad()),
        },
        ResourceType::Objlnk => {
            let (o, i) = parse_objlnk(t).ok_or_else(bad)?;
            Value::Objlnk(o, i)
        }
        ResourceType::Opaque => Value::Opaque(
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| bad())?,
        ),
        ResourceType::Corelnk => Value::Corelnk(text.to_owned()),
        ResourceType::String | ResourceType::None => Value::String(text.to_owned()),
    })
}

/// Finite decimal numbers only: Rust's parser would also take "inf"/"NaN", which no LwM2M text
/// value means.
fn parse_float(t: &str) -> Option<f64> {
    if !t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let [r] = records else {
        return Err(invalid("text/plain carries exactly one value"));
    };
    if r.path != *base || base.len() < 3 {
        return Err(invalid(
            "text/plain carries only the resource value at the request path",
        ));
    }
    Ok(match &r.value {
        Value::Integer(i) | Value::Time(i) => i.to_string().into_bytes(),
        Value::UnsignedInteger(u) => u.to_string().into_bytes(),
        Value::Float(f) if f.is_finite() => format!("{f:?}").into_bytes(),
        Value::Float(f) => return Err(CodecError::BadValue(format!("{f} has no text form"))),
        Value::Boolean(b) => vec![if *b { b'1' } else { b'0' }],
        Value::String(s) | Value::Corelnk(s) => s.clone().into_bytes(),
        Value::Opaque(b) => base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes(),
        Value::Objlnk(o, i) => format!("{o}:{i}").into_bytes(),
        Value::None => Vec::new(),
    })
}
