//! OMA LwM2M JSON (11543, pre-1.0 number 1543; TS 1.0 §6.4.4): `{"bn":..,"bt":..,"e":[..]}` with
//! elements `{"n", "v"|"bv"|"sv"|"ov", "t"}`.
//!
//! Names resolve like EMQX does (`bn` without trailing `/`, then `/`, then `n` without leading
//! `/`), so `"bn":"/3/0/"` + `"n":"1"` and `"bn":"/3/0"` + `"n":"/1"` both give `/3/0/1`. Without
//! `bn`, a name starting with `/` is absolute and any other is relative to the request path. Opaque
//! values travel base64 in `sv`; the model says when an `sv` is opaque.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;

use super::cbor::{int_value, text_value};
use super::senml::Num;
use super::senml_json::{number, write_f64, write_str};
use super::{base_name, invalid, parse_objlnk, relative_name, type_of, CodecError};
use crate::lwm2m::{Path, Record, ResourceType, ResourceTypes, Value};

#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(borrow, default)]
    bn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    e: Vec<Elem<'a>>,
}

#[derive(Deserialize)]
struct Elem<'a> {
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
    #[serde(default)]
    v: Option<serde_json::Number>,
    #[serde(default)]
    bv: Option<bool>,
    #[serde(borrow, default)]
    sv: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ov: Option<Cow<'a, str>>,
}

pub fn decode(
    req: &Path,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    let doc: Doc<'_> =
        serde_json::from_slice(payload).map_err(|e| invalid(format!("OMA JSON: {e}")))?;
    let req_name = req.to_string();
    let mut out = Vec::with_capacity(doc.e.len());
    let mut name = String::new();
    for e in doc.e {
        let n = e.n.as_deref().unwrap_or("");
        name.clear();
        match (&doc.bn, n.starts_with('/')) {
            (None, true) => name.push_str(n),
            (bn, _) => {
                name.push_str(bn.as_deref().unwrap_or(&req_name).trim_end_matches('/'));
                name.push('/');
                name.push_str(n.trim_start_matches('/'));
            }
        }
        let path =
            Path::parse(&name).map_err(|err| invalid(format!("OMA JSON name {name:?}: {err}")))?;
        if path.is_root() {
            return Err(invalid("OMA JSON element without a name"));
        }
        let ty = type_of(types, &path);
        let count = e.v.is_some() as u8
            + e.bv.is_some() as u8
            + e.sv.is_some() as u8
            + e.ov.is_some() as u8;
        if count > 1 {
            return Err(invalid(format!(
                "OMA JSON element {name} has more than one value"
            )));
        }
        let value = if let Some(v) = e.v {
            match number(&v)? {
                Num::Int(i) => int_value(i, ty)?,
                Num::Float(f) => Value::Float(f),
            }
        } else if let Some(b) = e.bv {
            Value::Boolean(b)
        } else if let Some(s) = e.sv {
            match ty {
                Some(ResourceType::Opaque) => {
                    match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                        Ok(b) => Value::Opaque(b),
                        Err(_) => Value::String(s.into_owned()),
                    }
                }
                _ => text_value(&s, ty),
            }
        } else if let Some(o) = e.ov {
            let (o, i) = parse_objlnk(&o).ok_or_else(|| invalid(format!("bad ov {o:?}")))?;
            Value::Objlnk(o, i)
        } else {
            Value::None
        };
        out.push(Record::new(path, value));
    }
    Ok(out)
}

pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let (bn, prefix) = base_name(base, records);
    let mut out = Vec::with_capacity(24 + records.len() * 24);
    let mut name = String::new();
    out.push(b'{');
    if let Some(bn) = &bn {
        out.extend_from_slice(b"\"bn\":");
        write_str(&mut out, bn);
        out.push(b',');
    }
    out.extend_from_slice(b"\"e\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut first = true;
        if let Some(prefix) = &prefix {
            relative_name(&mut name, prefix, &r.path);
            out.extend_from_slice(b"\"n\":\"");
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
            first = false;
        }
        if !matches!(r.value, Value::None) && !first {
            out.push(b',');
        }
        match &r.value {
            Value::Integer(i) | Value::Time(i) => {
                out.extend_from_slice(format!("\"v\":{i}").as_bytes())
            }
            Value::UnsignedInteger(u) => out.extend_from_slice(format!("\"v\":{u}").as_bytes()),
            Value::Float(f) => {
                out.extend_from_slice(b"\"v\":");
                write_f64(&mut out, *f)?;
            }
            Value::Boolean(b) => {
                out.extend_from_slice(if *b { b"\"bv\":true" } else { b"\"bv\":false" })
            }
            Value::String(s) | Value::Corelnk(s) => {
                out.extend_from_slice(b"\"sv\":");
                write_str(&mut out, s);
            }
            Value::Opaque(b) => {
                out.extend_from_slice(b"\"sv\":\"");
                out.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(b)
                        .as_bytes(),
                );
                out.push(b'"');
            }
            Value::Objlnk(o, i) => out.extend_from_slice(format!("\"ov\":\"{o}:{i}\"").as_bytes()),
            Value::None => {}
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::json::write_content_json;

    /// Types as in `xml/`: `/3/x/9` Battery Level Integer, `/3/x/13` Current Time Time, `/3/x/0`
    /// Manufacturer String, `/6/x/0` Latitude Float, `/0/x/1` Bootstrap-Server Boolean, `/0/x/3`
    /// Opaque.
    struct Types;
    impl ResourceTypes for Types {
        fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType> {
            Some(match (object, resource) {
                (3, 9) => ResourceType::Integer,
                (3, 13) => ResourceType::Time,
                (3, 0) => ResourceType::String,
                (6, 0) => ResourceType::Float,
                (0, 1) => ResourceType::Boolean,
                (0, 3) => ResourceType::Opaque,
                _ => return None,
            })
        }
        fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
            Some(false)
        }
    }

    /// The MQTT `content` array for an 11543 answer to a read of `req`.
    fn content(req: &str, payload: &str) -> String {
        let recs = decode(&Path::parse(req).unwrap(), payload.as_bytes(), &Types).unwrap();
        let mut out = Vec::new();
        write_content_json(&mut out, &recs);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integer_values_are_kept() {
        let recs = decode(
            &Path::parse("/3/0/9").unwrap(),
            br#"{"bn":"/3/0/9","e":[{"v":123}]}"#,
            &Types,
        )
        .unwrap();
        assert_eq!(
            recs,
            [Record::new(
                Path::parse("/3/0/9").unwrap(),
                Value::Integer(123)
            )]
        );
        assert_eq!(
            content("/3/0/9", r#"{"bn":"/3/0/9","e":[{"v":123}]}"#),
            r#"[{"path":"/3/0/9","value":123}]"#
        );
        assert_eq!(
            content("/3/0/9", r#"{"bn":"/3/0/","e":[{"n":"9","v":-7}]}"#),
            r#"[{"path":"/3/0/9","value":-7}]"#
        );
        assert_eq!(
            content("/3/0/13", r#"{"bn":"/3/0/13","e":[{"v":1367491215}]}"#),
            r#"[{"path":"/3/0/13","value":1367491215}]"#
        );
        // No model for the resource: the integer as sent.
        assert_eq!(
            content("/3/0/99", r#"{"e":[{"n":"","v":5}]}"#),
            r#"[{"path":"/3/0/99","value":5}]"#
        );
    }

    #[test]
    fn float_looking_integer_stays_the_number_sent() {
        // EMQX passes the JSON number through: 123.0 stays 123.0 (as text/plain "123.0" does).
        let recs = decode(
            &Path::parse("/3/0/9").unwrap(),
            br#"{"bn":"/3/0/9","e":[{"v":123.0}]}"#,
            &Types,
        )
        .unwrap();
        assert_eq!(recs[0].value, Value::Float(123.0));
        assert_eq!(
            content("/3/0/9", r#"{"bn":"/3/0/9","e":[{"v":123.0}]}"#),
            r#"[{"path":"/3/0/9","value":123.0}]"#
        );
    }

    #[test]
    fn float_bool_string_and_opaque_values() {
        assert_eq!(
            content("/6/0/0", r#"{"bn":"/6/0/0","e":[{"v":1.5}]}"#),
            r#"[{"path":"/6/0/0","value":1.5}]"#
        );
        assert_eq!(
            content("/0/0/1", r#"{"bn":"/0/0/1","e":[{"bv":true}]}"#),
            r#"[{"path":"/0/0/1","value":true}]"#
        );
        assert_eq!(
            content(
                "/3/0/0",
                r#"{"bn":"/3/0/0","e":[{"sv":"Open Mobile Alliance"}]}"#
            ),
            r#"[{"path":"/3/0/0","value":"Open Mobile Alliance"}]"#
        );
        assert_eq!(
            content("/0/0/3", r#"{"bn":"/0/0/3","e":[{"sv":"AQID"}]}"#),
            r#"[{"path":"/0/0/3","value":"AQID"}]"#
        );
        // A whole instance, mixed kinds, `bn` with a trailing slash and names with a leading one.
        assert_eq!(
            content(
                "/3/0",
                r#"{"bn":"/3/0/","e":[{"n":"0","sv":"OMA"},{"n":"/9","v":95},{"n":"13","v":0}]}"#
            ),
            r#"[{"path":"/3/0/0","value":"OMA"},{"path":"/3/0/9","value":95},{"path":"/3/0/13","value":0}]"#
        );
    }

    #[test]
    fn bad_documents_are_errors() {
        let d = |s: &str| decode(&Path::parse("/3/0/9").unwrap(), s.as_bytes(), &Types);
        assert!(d(r#"{"bn":"/3/0/9","e":[{"v":1,"sv":"x"}]}"#).is_err());
        assert!(d(r#"{"bn":"/3/0/9","e":[{"v":"123"}]}"#).is_err());
        assert!(d(r#"{"bn":"/3/x/","e":[{"n":"9","v":1}]}"#).is_err());
        assert!(d(r#"{"bn":"/3/0/9","e":[{"v":1e999}]}"#).is_err());
        assert!(d(r#"{"bn":"/3/0/9""#).is_err());
    }
}
