//! `lwm2m::codec::decode` for every content format, untyped (`NoTypes`) and with the real object
//! model. Input: byte 0 picks the format (low 3 bits), byte 1 the request path (low 4 bits of an
//! index into `PATHS`), the rest is the payload. A successful decode is also rendered as the MQTT
//! `content` JSON, which must be valid and match the tree serializer byte for byte.
#![no_main]

use fuzz_common::{check_content_json, registry, PATHS};
use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::lwm2m::{codec, ContentFormat, NoTypes, Path, ResourceTypes};

const FORMATS: [ContentFormat; 8] = [
    ContentFormat::Text,
    ContentFormat::Opaque,
    ContentFormat::Cbor,
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Tlv,
    ContentFormat::Json,
    ContentFormat::LwM2mCbor,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cf = FORMATS[(data[0] & 7) as usize];
    let path = Path::parse(PATHS[(data[1] & 15) as usize]).unwrap();
    let payload = &data[2..];
    let model: &dyn ResourceTypes = registry().as_ref();
    for types in [&NoTypes as &dyn ResourceTypes, model] {
        if let Ok(records) = codec::decode(cf, &path, payload, types) {
            check_content_json(&records);
        }
    }
});
