//! Mapping between records/values and the MQTT JSON contract (`docs/MQTT_API.md`, EMQX-compatible).
//!
//! Uplink: `content` arrays of `{"path","value"}` with `"type":"opaque"` beside values no model
//! described. [`write_content_json`] appends that array straight to a byte buffer because it sits
//! on the per-notification hot path; [`content_json`] builds a `serde_json::Value` for callers that
//! need to splice it into a larger document.
//!
//! Downlink: write/create values typed by the command's `type` or the model. Where EMQX is broken
//! we follow the TS instead: a JSON `true` is a Boolean (EMQX crashes), and an Integer written as
//! `"1.0"` is the integer 1 rather than an 8-byte double the device would misread; a non-integral
//! value for an Integer is an error with a reason rather than garbage on the wire.

use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use super::{Path, Record, ResourceType, ResourceTypes, Value};

/// JSON form of a value in MQTT `content` entries. Non-finite floats have no JSON number, so they
/// become the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (what JavaScript's `String()` gives).
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Integer(i) | Value::Time(i) => Json::Number((*i).into()),
        Value::UnsignedInteger(u) => Json::Number((*u).into()),
        Value::Float(f) => match Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => Json::String(non_finite(*f).to_owned()),
        },
        Value::Boolean(b) => Json::Bool(*b),
        Value::String(s) | Value::Corelnk(s) => Json::String(s.clone()),
        Value::Opaque(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Objlnk(o, i) => Json::String(format!("{o}:{i}")),
        Value::None => Json::Null,
    }
}

fn non_finite(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// One `content` entry: `{"path": "/3/0/1", "value": ...}` plus `"type":"opaque"` when the value's
/// type was unknown.
pub fn record_to_json(r: &Record) -> Json {
    let mut m = Map::new();
    m.insert("path".into(), Json::String(r.path.to_string()));
    m.insert("value".into(), value_to_json(&r.value));
    if r.type_unknown {
        m.insert("type".into(), Json::String("opaque".into()));
    }
    Json::Object(m)
}

/// `[{"path": "/3/0/1", "value": ...}, ...]`; entries of unknown type get `"type":"opaque"`.
pub fn content_json(records: &[Record]) -> Json {
    Json::Array(records.iter().map(record_to_json).collect())
}

/// Appends the `content` array as JSON text to `out`, byte-for-byte what serializing
/// [`content_json`] gives, without building the intermediate tree.
pub fn write_content_json(out: &mut Vec<u8>, records: &[Record]) {
    use std::io::Write;
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{{\"path\":\"{}\",\"value\":", r.path);
        write_value_json(out, &r.value);
        if r.type_unknown {
            out.extend_from_slice(b",\"type\":\"opaque\"");
        }
        out.push(b'}');
    }
    out.push(b']');
}

fn write_value_json(out: &mut Vec<u8>, v: &Value) {
    use std::io::Write;
    // Writes into a Vec cannot fail.
    let _ = match v {
        Value::Integer(i) | Value::Time(i) => write!(out, "{i}"),
        Value::UnsignedInteger(u) => write!(out, "{u}"),
        Value::Float(f) if f.is_finite() => {
            serde_json::to_writer(&mut *out, f).map_err(std::io::Error::other)
        }
        Value::Float(f) => write!(out, "\"{}\"", non_finite(*f)),
        Value::Boolean(b) => write!(out, "{b}"),
        Value::String(s) | Value::Corelnk(s) => {
            serde_json::to_writer(&mut *out, s).map_err(std::io::Error::other)
        }
        Value::Opaque(b) => write!(
            out,
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(b)
        ),
        Value::Objlnk(o, i) => write!(out, "\"{o}:{i}\""),
        Value::None => write!(out, "null"),
    };
}

/// Resource type from an MQTT `type` name ("Integer", "Float", "String", "Boolean", "Opaque",
/// "Time", "Objlnk", "Unsigned Integer", "Corelnk"; case-insensitive).
pub fn resource_type_from_name(name: &str) -> Option<ResourceType> {
    let n = name.trim();
    let is = |s: &str| n.eq_ignore_ascii_case(s);
    Some(if is("integer") {
        ResourceType::Integer
    } else if is("float") {
        ResourceType::Float
    } else if is("string") {
        ResourceType::String
    } else if is("boolean") {
        ResourceType::Boolean
    } else if is("opaque") {
        ResourceType::Opaque
    } else if is("time") {
        ResourceType::Time
    } else if is("objlnk") {
        ResourceType::Objlnk
    } else if is("unsigned integer") || is("unsignedinteger") || is("unsigned") {
        ResourceType::UnsignedInteger
    } else if is("corelnk") {
        ResourceType::Corelnk
    } else {
        return None;
    })
}

/// A write value from a command: `ty` from the command's `type`, else from the model.
/// `hex` = top-level `"encoding":"hex"`: the value is hex-decoded first, then the type rule applies
/// to the decoded text (Opaque takes the decoded bytes as they are), as in EMQX.
pub fn value_from_json(ty: ResourceType, v: &Json, hex: bool) -> Result<Value, String> {
    if hex {
        let Json::String(s) = v else {
            return Err(format!("hex-encoded value must be a string, got {v}"));
        };
        let bytes = decode_hex(s)?;
        if ty == ResourceType::Opaque {
            return Ok(Value::Opaque(bytes));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| "hex-decoded value is not UTF-8 text".to_string())?;
        return value_from_json(ty, &Json::String(text), false);
    }
    let text = match v {
        Json::String(s) => s.trim(),
        Json::Number(_) | Json::Bool(_) => "",
        _ => {
            return Err(format!(
                "{} value must be a string or a number, got {v}",
                type_name(ty)
            ))
        }
    };
    match ty {
        ResourceType::Integer | ResourceType::Time => {
            let i = json_integer(v, text)
                .ok_or_else(|| format!("{v} is not a valid {}", type_name(ty)))?;
            Ok(if ty == ResourceType::Time {
                Value::Time(i)
            } else {
                Value::Integer(i)
            })
        }
        ResourceType::UnsignedInteger => {
            let u = match v {
                Json::Number(n) => n.as_u64(),
                Json::String(_) => text.parse::<u64>().ok(),
                _ => None,
            };
            u.map(Value::UnsignedInteger)
                .ok_or_else(|| format!("{v} is not a valid Unsigned Integer"))
        }
        ResourceType::Float => {
            let f = match v {
                Json::Number(n) => n.as_f64(),
                Json::String(_) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && looks_numeric(text)),
                _ => None,
            };
            f.map(Value::Float)
                .ok_or_else(|| format!("{v} is not a valid Float"))
        }
        ResourceType::Boolean => match v {
            Json::Bool(b) => Ok(Value::Boolean(*b)),
            Json::String(_) if text == "true" => Ok(Value::Boolean(true)),
            Json::String(_) if text == "false" => Ok(Value::Boolean(false)),
            _ => Err(format!(
                "{v} is not a Boolean (true/false or \"true\"/\"false\")"
            )),
        },
        ResourceType::Opaque => match v {
            Json::String(s) => {
                use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
                STANDARD
                    .decode(s)
                    .or_else(|_| STANDARD_NO_PAD.decode(s))
                    .map(Value::Opaque)
                    .map_err(|_| format!("{v} is not base64 (use \"encoding\":\"hex\" for hex)"))
            }
            _ => Err(format!("Opaque value must be a base64 string, got {v}")),
        },
        ResourceType::String | ResourceType::Corelnk => {
            let s = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(if ty == ResourceType::String {
                Value::String(s)
            } else {
                Value::Corelnk(s)
            })
        }
        ResourceType::Objlnk => match v {
            Json::String(_) => super::codec::parse_objlnk(text)
                .map(|(o, i)| Value::Objlnk(o, i))
                .ok_or_else(|| format!("{v} is not an object link \"objId:instId\"")),
            _ => Err(format!(
                "Objlnk value must be a string \"objId:instId\", got {v}"
            )),
        },
        ResourceType::None => Err("resource is executable and takes no value".into()),
    }
}

/// The type as error messages name it.
fn type_name(ty: ResourceType) -> &'static str {
    match ty {
        ResourceType::None => "executable",
        t => t.name(),
    }
}

fn looks_numeric(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
}

/// A JSON number or numeric string as i64; integral decimals ("1.0", 2.0) are accepted.
fn json_integer(v: &Json, text: &str) -> Option<i64> {
    let f = match v {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Some(i);
            }
            n.as_f64()?
        }
        Json::String(_) => {
            if let Ok(i) = text.parse::<i64>() {
                return Some(i);
            }
            if !looks_numeric(text) {
                return None;
            }
            text.parse::<f64>().ok()?
        }
        _ => return None,
    };
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err(format!("hex value {s:?} has an odd length"));
    }
    let nib = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| format!("{s:?} is not hex"))
}

/// One item of an EMQX batch write/create `content: [{path, type, value}]`, checked but not yet
/// typed: the type may only be known once the device's object versions are (see [`WriteItem::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteItem {
    pub path: Path,
    /// The item's `type`, if it gave one.
    pub ty: Option<ResourceType>,
    /// A JSON scalar (string, number or boolean); checked against the type by [`value_from_json`].
    pub value: Json,
}

/// The items of `content` under `base`.
///
/// `path` is relative to `base` (leading `/` ignored; missing or empty = `base` itself). When a
/// path repeats, the last item wins but keeps the first one's position (EMQX builds a map; order
/// only matters for bytes).
pub fn write_items(base: &Path, content: &[Json]) -> Result<Vec<WriteItem>, String> {
    let mut out: Vec<WriteItem> = Vec::with_capacity(content.len());
    let mut seen: std::collections::HashMap<Path, usize> = std::collections::HashMap::new();
    for (idx, item) in content.iter().enumerate() {
        let Json::Object(obj) = item else {
            return Err(format!("content[{idx}] is not an object"));
        };
        let rel = match obj.get("path") {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(s)) => s.trim_start_matches('/').to_owned(),
            Some(Json::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(format!("content[{idx}].path must be a string, got {other}"))
            }
        };
        let rel_path =
            Path::parse(&rel).map_err(|e| format!("content[{idx}].path {rel:?}: {e}"))?;
        let mut path = *base;
        for id in rel_path.ids() {
            path = path.child(*id).ok_or_else(|| {
                format!("content[{idx}].path {rel:?} makes a path longer than 4 ids under {base}")
            })?;
        }
        let ty = match obj.get("type") {
            Some(Json::String(name)) => Some(
                resource_type_from_name(name)
                    .ok_or_else(|| format!("content[{idx}].type {name:?} is not a known type"))?,
            ),
            Some(other) if !other.is_null() => {
                return Err(format!("content[{idx}].type must be a string, got {other}"))
            }
            _ => None,
        };
        let value = obj
            .get("value")
            .ok_or_else(|| format!("content[{idx}] has no value"))?
            .clone();
        let item = WriteItem { path, ty, value };
        match seen.get(&path) {
            Some(&i) => out[i] = item,
            None => {
                seen.insert(path, out.len());
                out.push(item);
            }
        }
    }
    Ok(out)
}

impl WriteItem {
    /// The record to write: the item's type, else the model's; neither is an error.
    pub fn resolve(&self, types: &dyn ResourceTypes, hex: bool) -> Result<Record, String> {
        let path = self.path;
        let ty = match self.ty {
            Some(t) => t,
            None => match (path.object(), path.resource()) {
                (Some(o), Some(r)) => types.resource_type(o, r),
                _ => None,
            }
            .ok_or_else(|| {
                format!("no type for {path}: give \"type\" or load the object definition")
            })?,
        };
        let value = value_from_json(ty, &self.value, hex).map_err(|e| format!("{path}: {e}"))?;
        Ok(Record::new(path, value))
    }
}

/// Records of an EMQX batch write/create `content` under `base` ([`write_items`], each resolved).
pub fn records_from_write_content(
    base: &Path,
    content: &[Json],
    types: &dyn ResourceTypes,
    hex: bool,
) -> Result<Vec<Record>, String> {
    write_items(base, content)?
        .iter()
        .map(|i| i.resolve(types, hex))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::NoTypes;
    use serde_json::json;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn values_to_json() {
        assert_eq!(value_to_json(&Value::Integer(-3)), json!(-3));
        assert_eq!(
            value_to_json(&Value::UnsignedInteger(u64::MAX)),
            json!(u64::MAX)
        );
        assert_eq!(value_to_json(&Value::Float(1.5)), json!(1.5));
        assert_eq!(value_to_json(&Value::Float(f64::NAN)), json!("NaN"));
        assert_eq!(
            value_to_json(&Value::Float(f64::NEG_INFINITY)),
            json!("-Infinity")
        );
        assert_eq!(value_to_json(&Value::Opaque(vec![1, 2, 3])), json!("AQID"));
        assert_eq!(value_to_json(&Value::Objlnk(3, 0)), json!("3:0"));
        assert_eq!(value_to_json(&Value::None), Json::Null);
    }

    #[test]
    fn content_writer_matches_tree() {
        let recs = vec![
            Record::new(p("/3/0/1"), Value::String("Light \"M2M\"\n".into())),
            Record {
                path: p("/9723/0/0"),
                value: Value::Opaque(vec![0xFF]),
                type_unknown: true,
            },
            Record::new(p("/3/0/9"), Value::Float(f64::INFINITY)),
            Record::new(p("/3/0/13"), Value::Time(1367491215)),
            Record::new(p("/3/0/7/0"), Value::Float(0.1)),
            Record::new(p("/3/0/5"), Value::None),
        ];
        let mut out = Vec::new();
        write_content_json(&mut out, &recs);
        let parsed: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, content_json(&recs));
        assert_eq!(serde_json::to_vec(&content_json(&recs)).unwrap(), out);
        assert_eq!(
            parsed[1],
            json!({"path": "/9723/0/0", "value": "/w==", "type": "opaque"})
        );
    }

    #[test]
    fn type_names() {
        for (n, t) in [
            ("Integer", ResourceType::Integer),
            ("integer", ResourceType::Integer),
            ("FLOAT", ResourceType::Float),
            ("Unsigned Integer", ResourceType::UnsignedInteger),
            ("UnsignedInteger", ResourceType::UnsignedInteger),
            ("Corelnk", ResourceType::Corelnk),
            ("Objlnk", ResourceType::Objlnk),
            ("Time", ResourceType::Time),
            ("Opaque", ResourceType::Opaque),
            ("Boolean", ResourceType::Boolean),
            ("String", ResourceType::String),
        ] {
            assert_eq!(resource_type_from_name(n), Some(t), "{n}");
        }
        assert_eq!(resource_type_from_name("Int"), None);
    }

    #[test]
    fn write_values() {
        use ResourceType as T;
        let ok = |t, v: Json| value_from_json(t, &v, false).unwrap();
        assert_eq!(ok(T::Integer, json!("12345")), Value::Integer(12345));
        assert_eq!(ok(T::Integer, json!(129)), Value::Integer(129));
        assert_eq!(ok(T::Integer, json!("1.0")), Value::Integer(1));
        assert!(value_from_json(T::Integer, &json!("1.5"), false).is_err());
        assert!(value_from_json(T::Integer, &json!("abc"), false).is_err());
        assert!(value_from_json(T::Integer, &json!(u64::MAX), false).is_err());
        assert_eq!(ok(T::Time, json!(1367491215)), Value::Time(1367491215));
        assert_eq!(ok(T::Float, json!("12345.0")), Value::Float(12345.0));
        assert_eq!(ok(T::Float, json!(1)), Value::Float(1.0));
        assert!(value_from_json(T::Float, &json!("inf"), false).is_err());
        assert_eq!(ok(T::Boolean, json!(true)), Value::Boolean(true));
        assert_eq!(ok(T::Boolean, json!("false")), Value::Boolean(false));
        assert!(value_from_json(T::Boolean, &json!("yes"), false).is_err());
        assert_eq!(ok(T::Opaque, json!("AQID")), Value::Opaque(vec![1, 2, 3]));
        assert!(value_from_json(T::Opaque, &json!("!!"), false).is_err());
        assert_eq!(ok(T::Objlnk, json!("1:2")), Value::Objlnk(1, 2));
        assert!(value_from_json(T::Objlnk, &json!("1-2"), false).is_err());
        assert_eq!(ok(T::String, json!("87x")), Value::String("87x".into()));
        assert_eq!(ok(T::String, json!(5)), Value::String("5".into()));
        assert_eq!(
            ok(T::UnsignedInteger, json!("18446744073709551615")),
            Value::UnsignedInteger(u64::MAX)
        );
        assert!(value_from_json(T::UnsignedInteger, &json!(-1), false).is_err());
        assert!(value_from_json(T::Integer, &json!(null), false).is_err());
        assert!(value_from_json(T::None, &json!("x"), false).is_err());
        // hex
        assert_eq!(
            value_from_json(T::String, &json!("383778"), true).unwrap(),
            Value::String("87x".into())
        );
        assert_eq!(
            value_from_json(T::Opaque, &json!("00ff"), true).unwrap(),
            Value::Opaque(vec![0, 255])
        );
        assert_eq!(
            value_from_json(T::Integer, &json!("3132"), true).unwrap(),
            Value::Integer(12)
        );
        assert!(value_from_json(T::String, &json!("abc"), true).is_err());
        assert!(value_from_json(T::String, &json!("zz"), true).is_err());
        assert!(value_from_json(T::String, &json!(12), true).is_err());
    }

    #[test]
    fn batch_content() {
        let content = vec![
            json!({"path": "13", "type": "Integer", "value": "12345"}),
            json!({"path": "/14", "type": "String", "value": "87x"}),
            json!({"path": "6/0", "type": "Integer", "value": "1"}),
            json!({"path": "13", "type": "Integer", "value": "7"}),
        ];
        let recs = records_from_write_content(&p("/3/0/"), &content, &NoTypes, false).unwrap();
        assert_eq!(
            recs,
            vec![
                Record::new(p("/3/0/13"), Value::Integer(7)),
                Record::new(p("/3/0/14"), Value::String("87x".into())),
                Record::new(p("/3/0/6/0"), Value::Integer(1)),
            ]
        );
        let err = records_from_write_content(
            &p("/3/0"),
            &[json!({"path": "13", "value": "1"})],
            &NoTypes,
            false,
        );
        assert!(err.unwrap_err().contains("no type for /3/0/13"));
        let err = records_from_write_content(
            &p("/3/0"),
            &[json!({"path": "13", "type": "Int", "value": "1"})],
            &NoTypes,
            false,
        );
        assert!(err.unwrap_err().contains("not a known type"));
        let err = records_from_write_content(
            &p("/3/0/1"),
            &[json!({"path": "1/2", "type": "Integer", "value": 1})],
            &NoTypes,
            false,
        );
        assert!(err.is_err());
        let err = records_from_write_content(
            &p("/3/0"),
            &[json!({"path": "9", "type": "Integer", "value": "x"})],
            &NoTypes,
            false,
        );
        assert!(err.unwrap_err().starts_with("/3/0/9: "));
    }
}
