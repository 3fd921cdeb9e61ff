//! Content-format codecs. STUB: replaced by the data-model work (issue 3); the signatures are the
//! contract the gateway codes against.

use super::{ContentFormat, Path, Record, ResourceTypes};

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

/// Decodes a device payload of format `cf` answering a request on `req_path` into flat records.
/// Untyped formats (text, opaque, TLV) get their types from `types`.
pub fn decode(
    cf: ContentFormat,
    req_path: &Path,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    let _ = (req_path, payload, types);
    Err(CodecError::Unsupported(cf.as_u16()))
}

/// Encodes `records` (all at or below `base`) as a payload of format `cf` for a request on `base`.
pub fn encode(cf: ContentFormat, base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let _ = (base, records);
    Err(CodecError::Unsupported(cf.as_u16()))
}

/// The format the gateway asks for (reads: Accept) or sends (writes: Content-Format) to one device,
/// given its LwM2M version and the `ct=` list of its Register. `None` = send no Accept option and
/// let the device choose (1.0 clients that announced nothing, e.g. lwm2m-node-lib).
pub fn preferred_format(
    lwm2m_version: &str,
    announced: &[u16],
    for_write: bool,
) -> Option<ContentFormat> {
    let _ = (lwm2m_version, announced, for_write);
    None
}
