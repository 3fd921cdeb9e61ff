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
