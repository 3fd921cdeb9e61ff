//! What SenML JSON (110) and SenML CBOR (112) share once their syntax is parsed: the record model
//! of RFC 8428 as LwM2M uses it (TS Core §7.4.4/§7.4.5), base-name resolution, and value typing.
//!
//! A pack is a list of records; `bn` sticks until the next `bn`, the name is `bn + n`, and it must
//! be an LwM2M path. Base time and time only order measurements; records have no timestamp field,
//! so times are checked for type and otherwise dropped.

use std::borrow::Cow;

use super::cbor::{int_value, text_value};
use super::{invalid, parse_objlnk, type_of, CodecError};
use crate::lwm2m::{Path, Record, ResourceTypes, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

#[derive(Debug)]
pub enum SenmlValue<'a> {
    Num(Num),
    Str(Cow<'a, str>),
    Bool(bool),
    Data(Cow<'a, [u8]>),
    Objlnk(Cow<'a, str>),
}

#[derive(Debug, Default)]
pub struct SenmlRecord<'a> {
    pub bn: Option<Cow<'a, str>>,
    pub n: Option<Cow<'a, str>>,
    pub value: Option<SenmlValue<'a>>,
}

impl<'a> SenmlRecord<'a> {
    /// Sets the value, refusing a second one (RFC 8428 §4.2: at most one value field).
    pub fn set_value(&mut self, v: SenmlValue<'a>) -> Result<(), CodecError> {
        if self.value.replace(v).is_some() {
            return Err(invalid("SenML record with more than one value"));
        }
        Ok(())
    }
}

/// Resolves names against the running base name and types the values.
pub fn resolve(
    pack: Vec<SenmlRecord<'_>>,
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    let mut out = Vec::with_capacity(pack.len());
    let mut bn: Cow<'_, str> = Cow::Borrowed("");
    let mut name = String::new();
    for rec in pack {
        if let Some(b) = rec.bn {
            bn = b;
        }
        name.clear();
        name.push_str(&bn);
        name.push_str(rec.n.as_deref().unwrap_or(""));
        let path = Path::parse(&name).map_err(|e| invalid(format!("SenML name {name:?}: {e}")))?;
        if path.is_root() {
            return Err(invalid("SenML record without a name"));
        }
        let ty = type_of(types, &path);
        let value = match rec.value {
            None => Value::None,
            Some(SenmlValue::Num(Num::Int(i))) => int_value(i, ty)?,
            Some(SenmlValue::Num(Num::Float(f))) => float_value(f, ty),
            Some(SenmlValue::Str(s)) => text_value(&s, ty),
            Some(SenmlValue::Bool(b)) => Value::Boolean(b),
            Some(SenmlValue::Data(d)) => Value::Opaque(d.into_owned()),
            Some(SenmlValue::Objlnk(s)) => {
                let (o, i) = parse_objlnk(&s).ok_or_else(|| invalid(format!("bad vlo {s:?}")))?;
                Value::Objlnk(o, i)
            }
        };
        out.push(Record::new(path, value));
    }
    Ok(out)
}

/// A float from the wire, made an integer when the model says the resource is one and the number
/// is integral (some encoders write every number as a float).
fn float_value(f: f64, ty: Option<crate::lwm2m::ResourceType>) -> Value {
    use crate::lwm2m::ResourceType as T;
    let integral = f.fract() == 0.0 && f.abs() < 9.0e15;
    match ty {
        Some(T::Integer) if integral => Value::Integer(f as i64),
        Some(T::Time) if integral => Value::Time(f as i64),
        Some(T::UnsignedInteger) if integral && f >= 0.0 => Value::UnsignedInteger(f as u64),
        _ => Value::Float(f),
    }
}
