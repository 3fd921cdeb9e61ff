//! LwM2M CBOR (11544, TS Core 1.2 §7.4.7): nested CBOR maps keyed by path ids, leaves typed by
//! their CBOR type. A key is one id or an array of ids (a path fragment), so `{3: {0: {1: "x"}}}`,
//! `{[3, 0]: {1: "x"}}` and `{[3, 0, 1]: "x"}` all carry `/3/0/1`. Paths are absolute from the
//! root whatever the request path was.
//!
//! The encoder puts the base path in one array key and nests single ids below it: compact, and
//! the shape every decoder handles.

use super::cbor::{self, Cbor};
use super::{group_by_segment, invalid, type_of, CodecError};
use crate::lwm2m::{Path, Record, ResourceTypes};

pub fn decode(payload: &[u8], types: &dyn ResourceTypes) -> Result<Vec<Record>, CodecError> {
    let Cbor::Map(entries) = cbor::parse(payload)? else {
        return Err(invalid("LwM2M CBOR must be a map"));
    };
    let mut out = Vec::new();
    walk(&entries, &Path::ROOT, types, &mut out)?;
    Ok(out)
}

/// Recursion depth is bounded twice: by the CBOR parser's depth limit, and because every level
/// adds at least one id to a path of at most four.
fn walk(
    entries: &[(Cbor<'_>, Cbor<'_>)],
    prefix: &Path,
    types: &dyn ResourceTypes,
    out: &mut Vec<Record>,
) -> Result<(), CodecError> {
    for (k, v) in entries {
        let mut path = *prefix;
        let mut push = |id: &Cbor<'_>| -> Result<(), CodecError> {
            let id = match id {
                Cbor::Uint(n) if *n < u16::MAX as u64 => *n as u16,
                _ => return Err(invalid("LwM2M CBOR key is not a path id")),
            };
            path = path
                .child(id)
                .ok_or_else(|| invalid("LwM2M CBOR path longer than 4 ids"))?;
            Ok(())
        };
        match k {
            Cbor::Array(ids) if !ids.is_empty() => ids.iter().try_for_each(&mut push)?,
            Cbor::Array(_) => return Err(invalid("empty LwM2M CBOR path key")),
            id => push(id)?,
        }
        match v {
            Cbor::Map(children) => walk(children, &path, types, out)?,
            leaf => {
                if path.len() < 3 {
                    return Err(invalid(format!(
                        "LwM2M CBOR value at {path}, which is not a resource"
                    )));
                }
                out.push(Record::new(
                    path,
                    cbor::value_from_item(leaf, type_of(types, &path))?,
                ));
            }
        }
    }
    Ok(())
}

pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(8 + records.len() * 12);
    let recs: Vec<&Record> = records.iter().collect();
    if base.is_root() {
        write_level(&mut out, &recs, 0)?;
        return Ok(out);
    }
    out.push(0xA1);
    match base.ids() {
        [id] => cbor::write_head(&mut out, 0, *id as u64),
        ids => {
            cbor::write_head(&mut out, 4, ids.len() as u64);
            for id in ids {
                cbor::write_head(&mut out, 0, *id as u64);
            }
        }
    }
    match recs.as_slice() {
        [r] if r.path == *base => cbor::write_value(&mut out, &r.value),
        _ => write_level(&mut out, &recs, base.len())?,
    }
    Ok(out)
}

fn write_level(out: &mut Vec<u8>, recs: &[&Record], level: usize) -> Result<(), CodecError> {
    if let Some(r) = recs.iter().find(|r| r.path.len() <= level) {
        return Err(invalid(format!("{} has both a value and children", r.path)));
    }
    let groups = group_by_segment(recs, level);
    cbor::write_head(out, 5, groups.len() as u64);
    for (id, group) in groups {
        cbor::write_head(out, 0, id as u64);
        match group.as_slice() {
            [r] if r.path.len() == level + 1 => cbor::write_value(out, &r.value),
            _ => write_level(out, &group, level + 1)?,
        }
    }
    Ok(())
}
