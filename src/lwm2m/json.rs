//! Mapping between records/values and the MQTT JSON contract. STUB: replaced by issue 3's work.

use super::{Record, ResourceType, Value};

/// JSON form of a value in MQTT `content` entries.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    let _ = v;
    serde_json::Value::Null
}

/// `[{"path": "/3/0/1", "value": ...}, ...]`; entries of unknown type get `"type":"opaque"`.
pub fn content_json(records: &[Record]) -> serde_json::Value {
    let _ = records;
    serde_json::Value::Array(Vec::new())
}

/// Resource type from an MQTT `type` name ("Integer", "Float", "String", "Boolean", "Opaque",
/// "Time", "Objlnk", "Unsigned Integer", "Corelnk"; case-insensitive).
pub fn resource_type_from_name(name: &str) -> Option<ResourceType> {
    let _ = name;
    None
}

/// A write value from a command: `ty` from the command's `type`, else from the model.
/// `hex` = top-level `"encoding":"hex"`.
pub fn value_from_json(
    ty: ResourceType,
    v: &serde_json::Value,
    hex: bool,
) -> Result<Value, String> {
    let _ = (ty, v, hex);
    Err("not implemented".into())
}

/// Records for an EMQX batch `write`/`create` (`content: [{path, type, value}]`, paths relative to
/// `base`).
pub fn records_from_write_content(
    base: &super::Path,
    content: &[serde_json::Value],
    types: &dyn super::ResourceTypes,
    hex: bool,
) -> Result<Vec<Record>, String> {
    let _ = (base, content, types, hex);
    Err("not implemented".into())
}
