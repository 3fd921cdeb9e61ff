//! Reads a credentials file in JSON entry by entry: each element of `devices` is handed over as
//! soon as it is parsed, and no tree of the whole document is built (serde_json's would cost
//! about 1.4 KB per device at its peak, 1.4 GB for a million).
//!
//! Contract: the same file is accepted or refused as `serde_json::from_str` followed by a check
//! of its shape would accept or refuse it: a syntax error anywhere is [`Refusal::Syntax`]; a top
//! level that is not an object, a key other than `devices`, or a `devices` that is not an array
//! is a shape refusal. Entries before a refusal have already been handed over; the caller
//! discards them with the file.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub(crate) enum Refusal {
    Syntax(serde_json::Error),
    NotObject,
    UnknownKey(String),
    NotArray,
}

/// Calls `add` with each element of the top-level `devices` array, in order.
pub(crate) fn for_each(text: &str, add: &mut dyn FnMut(Value)) -> Result<(), Refusal> {
    if !text.trim_start().starts_with('{') {
        // Valid JSON of another shape, or no JSON at all.
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Refusal::NotObject,
            Err(e) => Refusal::Syntax(e),
        });
    }
    let mut shape = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let read = Root {
        add,
        shape: &mut shape,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (shape, read) {
        (Some(s), _) => Err(s),
        (None, Err(e)) => Err(Refusal::Syntax(e)),
        (None, Ok(())) => Ok(()),
    }
}

struct Root<'a, 'b> {
    add: &'a mut dyn FnMut(Value),
    shape: &'b mut Option<Refusal>,
}

impl<'de> DeserializeSeed<'de> for Root<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Root<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a \"devices\" list")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        while let Some(key) = m.next_key::<String>()? {
            if key != "devices" {
                *self.shape = Some(Refusal::UnknownKey(key));
                return Err(de::Error::custom("shape"));
            }
            m.next_value_seed(List {
                add: &mut *self.add,
                shape: &mut *self.shape,
            })?;
        }
        Ok(())
    }
}

struct List<'a, 'b> {
    add: &'a mut dyn FnMut(Value),
    shape: &'b mut Option<Refusal>,
}

impl List<'_, '_> {
    fn not_array<E: de::Error>(self) -> Result<(), E> {
        *self.shape = Some(Refusal::NotArray);
        Err(E::custom("shape"))
    }
}

impl<'de> DeserializeSeed<'de> for List<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for List<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of devices")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<(), S::Error> {
        while let Some(entry) = s.next_element::<Value>()? {
            (self.add)(entry);
        }
        Ok(())
    }

    fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<(), M::Error> {
        self.not_array()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_array()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_array()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_array()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_array()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_array()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_array()
    }
}
