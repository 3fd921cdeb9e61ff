//! application/octet-stream (42): the raw bytes of one resource (instance), e.g. a firmware
//! package or a certificate. No type lookup: the format is opaque by definition.

use super::{invalid, CodecError};
use crate::lwm2m::{Path, Record, Value};

pub fn decode(req: &Path, payload: &[u8]) -> Result<Vec<Record>, CodecError> {
    if req.len() < 3 {
        return Err(invalid("opaque needs a resource path"));
    }
    Ok(vec![Record::new(*req, Value::Opaque(payload.to_vec()))])
}

pub fn encode(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let [r] = records else {
        return Err(invalid("opaque carries exactly one value"));
    };
    if r.path != *base {
        return Err(invalid("opaque carries only the value at the request path"));
    }
    match &r.value {
        Value::Opaque(b) => Ok(b.clone()),
        // A string written to an opaque resource is sent as its UTF-8 bytes (what EMQX 4.x did).
        Value::String(s) => Ok(s.clone().into_bytes()),
        v => Err(CodecError::BadValue(format!("{v:?} is not opaque data"))),
    }
}
