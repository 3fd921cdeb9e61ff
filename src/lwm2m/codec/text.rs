//! text/plain (0): one resource (instance) value as text, typed through the object model.
//!
//! The text carries no type, so the model decides how to parse it. When no definition describes
//! the resource we report the text itself as a string (with `type_unknown: false`): a readable
//! string is what a user of a text read expects, and unlike TLV there are no raw bytes that would
//! be more faithful. Only text that is not UTF-8 falls back to flagged opaque bytes.
//!
//! Opaque resources: the TS (Core, Appendix C) writes opaque data in text as base64, so text that
//! is base64 is decoded to its bytes. Many devices send the raw value instead (a key, a name); that
//! text is the resource's bytes, taken as they are: `value` then holds the text's bytes, which the
//! MQTT JSON shows base64-encoded like every opaque value. That is exactly what EMQX 4.4/5.x
//! publish for any text answer on an Opaque resource (`emqx_lwm2m_message:text_value/3`,
//! `base64:encode(Text)`), rather than refusing the answer with 4.00.

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
    if ty == Some(ResourceType::Opaque) {
        return Ok(vec![Record::new(*req, opaque_text(payload))]);
    }
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

/// The bytes of an Opaque resource sent as text: the base64 the TS prescribes when the text is
/// that (surrounding whitespace ignored), else the payload's own bytes, UTF-8 or not.
fn opaque_text(payload: &[u8]) -> Value {
    let decoded = std::str::from_utf8(payload).ok().and_then(|t| {
        base64::engine::general_purpose::STANDARD
            .decode(t.trim())
            .ok()
    });
    Value::Opaque(decoded.unwrap_or_else(|| payload.to_vec()))
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
        ResourceType::Opaque => opaque_text(text.as_bytes()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::json::write_content_json;

    /// `/0/x/3` is Opaque (Security "Public Key or Identity"), `/3/x/9` Integer, as in `xml/`.
    struct Types;
    impl ResourceTypes for Types {
        fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType> {
            match (object, resource) {
                (0, 3) => Some(ResourceType::Opaque),
                (3, 9) => Some(ResourceType::Integer),
                _ => None,
            }
        }
        fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
            Some(false)
        }
    }

    fn content(path: &str, payload: &[u8]) -> String {
        let recs = decode(&Path::parse(path).unwrap(), payload, &Types).unwrap();
        let mut out = Vec::new();
        write_content_json(&mut out, &recs);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn opaque_raw_text_is_its_bytes() {
        // Not base64 (a space): the text's own bytes, published base64 as EMQX does.
        let recs = decode(&Path::parse("/0/0/3").unwrap(), b"hello world", &Types).unwrap();
        assert_eq!(
            recs,
            [Record::new(
                Path::parse("/0/0/3").unwrap(),
                Value::Opaque(b"hello world".to_vec())
            )]
        );
        assert_eq!(
            content("/0/0/3", b"hello world"),
            r#"[{"path":"/0/0/3","value":"aGVsbG8gd29ybGQ="}]"#
        );
        // Not UTF-8 either: still the bytes, and the type is known (no "type":"opaque").
        assert_eq!(
            content("/0/0/3", &[0xFF, 0x00, 0x41]),
            r#"[{"path":"/0/0/3","value":"/wBB"}]"#
        );
        // Base64 that is not canonical (missing padding) is raw text too.
        assert_eq!(
            content("/0/0/3", b"AQI"),
            r#"[{"path":"/0/0/3","value":"QVFJ"}]"#
        );
    }

    #[test]
    fn opaque_base64_text_is_decoded() {
        // The TS form: base64 text of the bytes 01 02 03; published as the same base64.
        let recs = decode(&Path::parse("/0/0/3").unwrap(), b" AQID\n", &Types).unwrap();
        assert_eq!(recs[0].value, Value::Opaque(vec![1, 2, 3]));
        assert_eq!(
            content("/0/0/3", b"AQID"),
            r#"[{"path":"/0/0/3","value":"AQID"}]"#
        );
        assert_eq!(
            parse_text(ResourceType::Opaque, "AQID"),
            Ok(Value::Opaque(vec![1, 2, 3]))
        );
        assert_eq!(
            parse_text(ResourceType::Opaque, "no base64"),
            Ok(Value::Opaque(b"no base64".to_vec()))
        );
    }

    #[test]
    fn other_types_unchanged() {
        assert_eq!(
            content("/3/0/9", b"95"),
            r#"[{"path":"/3/0/9","value":95}]"#
        );
        assert!(decode(&Path::parse("/3/0/9").unwrap(), b"abc", &Types).is_err());
        assert!(decode(&Path::parse("/0/0").unwrap(), b"hello", &Types).is_err());
        assert_eq!(
            content("/0/0/99", &[0xFF]),
            r#"[{"path":"/0/0/99","value":"/w==","type":"opaque"}]"#
        );
    }
}
