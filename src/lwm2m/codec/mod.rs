//! Content-format codecs: device payload bytes <-> flat [`Record`] lists.
//!
//! Every decoder here reads bytes that a device (or anyone spoofing one) chose, so the rules are:
//! no panics, every length checked against the bytes actually present before it is used or
//! allocated, nesting bounded ([`cbor::MAX_DEPTH`], TLV's fixed three levels), and `Err` rather than
//! a guess when the structure is wrong. Value-level surprises in untyped formats are softer: a TLV
//! value that does not match its declared type comes out as opaque bytes flagged `type_unknown`, so
//! one odd resource does not hide the rest of a read.
//!
//! Paths in decoded records are always full paths (object/instance/resource[/instance]); encoders
//! take records at or below a base path and pick the framing from the base's depth.

mod cbor;
mod lwm2m_cbor;
mod oma_json;
mod opaque;
mod senml;
mod senml_cbor;
mod senml_json;
mod text;
mod tlv;

use std::collections::HashMap;

use super::{ContentFormat, Path, Record, ResourceType, ResourceTypes};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("payload truncated")]
    Truncated,
    #[error("invalid payload: {0}")]
    Invalid(String),
    #[error("nesting deeper than allowed")]
    TooDeep,
    #[error("content format {0} not supported here")]
    Unsupported(u16),
    #[error("value does not fit: {0}")]
    BadValue(String),
}

pub(crate) fn invalid(msg: impl Into<String>) -> CodecError {
    CodecError::Invalid(msg.into())
}

/// Decodes a device payload of format `cf` answering a request on `req_path` into flat records.
/// Untyped formats (text, opaque, TLV) get their types from `types`; self-typed formats use it
/// only to tell apart what their wire type cannot (Integer vs Time vs Unsigned, String vs Objlnk).
pub fn decode(
    cf: ContentFormat,
    req_path: &Path,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    match cf {
        ContentFormat::Text => text::decode(req_path, payload, types),
        ContentFormat::Opaque => opaque::decode(req_path, payload),
        ContentFormat::Cbor => cbor::decode_single(req_path, payload, types),
        ContentFormat::SenmlJson => senml_json::decode(payload, types),
        ContentFormat::SenmlCbor => senml_cbor::decode(payload, types),
        ContentFormat::Tlv | ContentFormat::TlvLegacy => tlv::decode(req_path, payload, types),
        ContentFormat::Json | ContentFormat::JsonLegacy => {
            oma_json::decode(req_path, payload, types)
        }
        ContentFormat::LwM2mCbor => lwm2m_cbor::decode(payload, types),
        ContentFormat::LinkFormat => Err(CodecError::Unsupported(cf.as_u16())),
    }
}

/// Encodes `records` (all at or below `base`) as a payload of format `cf` for a request on `base`.
pub fn encode(cf: ContentFormat, base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    if let Some(r) = records.iter().find(|r| !r.path.starts_with(base)) {
        return Err(invalid(format!("record {} is not under {base}", r.path)));
    }
    match cf {
        ContentFormat::Text => text::encode(base, records),
        ContentFormat::Opaque => opaque::encode(base, records),
        ContentFormat::Cbor => cbor::encode_single(base, records),
        ContentFormat::SenmlJson => senml_json::encode(base, records),
        ContentFormat::SenmlCbor => senml_cbor::encode(base, records),
        ContentFormat::Tlv | ContentFormat::TlvLegacy => tlv::encode(base, records),
        ContentFormat::Json | ContentFormat::JsonLegacy => oma_json::encode(base, records),
        ContentFormat::LwM2mCbor => lwm2m_cbor::encode(base, records),
        ContentFormat::LinkFormat => Err(CodecError::Unsupported(cf.as_u16())),
    }
}

/// The body of a Read-Composite / Observe-Composite request (FETCH): a SenML pack of names only.
/// Only the two SenML formats can carry it (TS Core §5.4.4).
pub fn encode_paths(cf: ContentFormat, paths: &[Path]) -> Result<Vec<u8>, CodecError> {
    match cf {
        ContentFormat::SenmlJson => Ok(senml_json::encode_paths(paths)),
        ContentFormat::SenmlCbor => Ok(senml_cbor::encode_paths(paths)),
        _ => Err(CodecError::Unsupported(cf.as_u16())),
    }
}

/// The format the gateway asks for (reads: Accept) or sends (writes: Content-Format) to one device,
/// given its LwM2M version and the `ct=` list of its Register. `None` = send no Accept option and
/// let the device choose (1.0 clients that announced nothing, e.g. lwm2m-node-lib).
///
/// With an announced list, the first format of the version's preference order that the device
/// listed wins: 1.2 prefers LwM2M CBOR (most compact, made for 1.2), 1.1 SenML CBOR (the first
/// 1.1 format that can carry composite operations), 1.0 TLV (the only multi-resource format every
/// 1.0 client has). Without a usable announcement a read sends no Accept (the device answers in
/// whatever it supports, and every decoder is available), while a write must pick something: TLV
/// for 1.0/1.1 (what EMQX always sends, so what devices deployed behind EMQX accept) and SenML CBOR
/// for 1.2, where TLV became optional. A caller doing a single-resource write to a device that only
/// lists text/plain can use `ContentFormat::Text` itself; this table does not know the write shape.
pub fn preferred_format(
    lwm2m_version: &str,
    announced: &[u16],
    for_write: bool,
) -> Option<ContentFormat> {
    use ContentFormat::*;
    let minor = version_minor(lwm2m_version);
    let order: &[ContentFormat] = match minor {
        0 => &[Tlv, TlvLegacy, Json, JsonLegacy],
        1 => &[SenmlCbor, SenmlJson, Tlv, LwM2mCbor],
        _ => &[LwM2mCbor, SenmlCbor, SenmlJson, Tlv],
    };
    if let Some(cf) = order
        .iter()
        .copied()
        .find(|cf| announced.contains(&cf.as_u16()))
    {
        return Some(cf);
    }
    if !for_write {
        return None;
    }
    Some(if minor >= 2 { SenmlCbor } else { Tlv })
}

/// `"1"`, `"1.0"` -> 0, `"1.1"` -> 1, `"1.2"`/`"1.2.1"` -> 2; anything unparsable counts as 1.0, the
/// most conservative choice (TLV is what an unknown client most likely speaks). Later majors are
/// treated as the newest minor we know.
fn version_minor(v: &str) -> u32 {
    let mut parts = v.trim().split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if major > 1 {
        2
    } else {
        minor.min(2)
    }
}

/// Resource type of the resource a (3- or 4-segment) path points into.
pub(crate) fn type_of(types: &dyn ResourceTypes, path: &Path) -> Option<ResourceType> {
    match (path.object(), path.resource()) {
        (Some(o), Some(r)) => types.resource_type(o, r),
        _ => None,
    }
}

/// `"3:0"` -> (3, 0). Strict digits only; 65535 is allowed (`65535:65535` is the TS's null link).
pub(crate) fn parse_objlnk(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once(':')?;
    Some((parse_u16(a)?, parse_u16(b)?))
}

fn parse_u16(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Groups records by their path segment at `level`, keeping the order in which each id first
/// appears (EMQX's batch write bytes depend on that order). The index map keeps it linear.
pub(crate) fn group_by_segment<'r>(
    recs: &[&'r Record],
    level: usize,
) -> Vec<(u16, Vec<&'r Record>)> {
    let mut groups: Vec<(u16, Vec<&'r Record>)> = Vec::new();
    let mut index: HashMap<u16, usize> = HashMap::new();
    for r in recs {
        let Some(&id) = r.path.ids().get(level) else {
            continue;
        };
        match index.get(&id) {
            Some(&i) => groups[i].1.push(r),
            None => {
                index.insert(id, groups.len());
                groups.push((id, vec![*r]));
            }
        }
    }
    groups
}

/// Common SenML / OMA JSON naming of an encoded pack: `(bn, prefix)` where each record's name is
/// its path below `prefix`. A single record exactly at `base` is named by `bn` alone; a root prefix
/// gets no `bn` at all and absolute names (the composite-operation shape).
pub(crate) fn base_name(base: &Path, records: &[Record]) -> (Option<String>, Option<Path>) {
    if records.len() == 1 && records[0].path == *base && !base.is_root() {
        return (Some(base.to_string()), None);
    }
    let prefix = if records.iter().any(|r| r.path == *base) {
        base.parent()
    } else {
        *base
    };
    if prefix.is_root() {
        (None, Some(prefix))
    } else {
        (Some(format!("{prefix}/")), Some(prefix))
    }
}

/// Writes the name of `path` below `prefix` (`"7/0"`), or the absolute path when `prefix` is root.
pub(crate) fn relative_name(out: &mut String, prefix: &Path, path: &Path) {
    use std::fmt::Write;
    out.clear();
    let ids = &path.ids()[prefix.len()..];
    for (i, id) in ids.iter().enumerate() {
        if i > 0 || prefix.is_root() {
            out.push('/');
        }
        let _ = write!(out, "{id}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContentFormat::*;

    #[test]
    fn preferred_format_table() {
        let all = [0u16, 40, 42, 60, 110, 112, 1542, 1543, 11542, 11543, 11544];
        assert_eq!(preferred_format("1.2", &all, false), Some(LwM2mCbor));
        assert_eq!(
            preferred_format("1.2", &[110, 112, 11542], false),
            Some(SenmlCbor)
        );
        assert_eq!(
            preferred_format("1.2", &[110, 11542], true),
            Some(SenmlJson)
        );
        assert_eq!(preferred_format("1.1", &all, false), Some(SenmlCbor));
        assert_eq!(
            preferred_format("1.1", &[11542, 110], false),
            Some(SenmlJson)
        );
        assert_eq!(preferred_format("1.1", &[11542, 11544], false), Some(Tlv));
        assert_eq!(preferred_format("1.1", &[11544], false), Some(LwM2mCbor));
        assert_eq!(preferred_format("1.0", &all, false), Some(Tlv));
        assert_eq!(preferred_format("1.0", &[1542], false), Some(TlvLegacy));
        assert_eq!(preferred_format("1.0", &[11543], false), Some(Json));
        assert_eq!(preferred_format("1", &[11542], false), Some(Tlv));
        // Nothing announced: reads let the device choose, writes fall back per version.
        assert_eq!(preferred_format("1.0", &[], false), None);
        assert_eq!(preferred_format("1.1", &[], false), None);
        assert_eq!(preferred_format("1.2", &[], false), None);
        assert_eq!(preferred_format("1.0", &[], true), Some(Tlv));
        assert_eq!(preferred_format("1.1", &[], true), Some(Tlv));
        assert_eq!(preferred_format("1.2", &[], true), Some(SenmlCbor));
        // Announced but nothing usable (text only) behaves like nothing announced.
        assert_eq!(preferred_format("1.1", &[0], false), None);
        assert_eq!(preferred_format("1.1", &[0], true), Some(Tlv));
        assert_eq!(preferred_format("1.2.1", &[112], false), Some(SenmlCbor));
        assert_eq!(preferred_format("garbage", &[], true), Some(Tlv));
    }

    #[test]
    fn objlnk_parse() {
        assert_eq!(parse_objlnk("3:0"), Some((3, 0)));
        assert_eq!(parse_objlnk("65535:65535"), Some((65535, 65535)));
        assert_eq!(parse_objlnk("+3:0"), None);
        assert_eq!(parse_objlnk("3:"), None);
        assert_eq!(parse_objlnk("65536:0"), None);
    }

    #[test]
    fn link_format_is_not_a_codec() {
        let p = Path::parse("/3/0").unwrap();
        assert_eq!(
            decode(LinkFormat, &p, b"</3/0>", &crate::lwm2m::NoTypes),
            Err(CodecError::Unsupported(40))
        );
        assert_eq!(
            encode(LinkFormat, &p, &[]),
            Err(CodecError::Unsupported(40))
        );
        assert_eq!(encode_paths(Tlv, &[p]), Err(CodecError::Unsupported(11542)));
    }
}
