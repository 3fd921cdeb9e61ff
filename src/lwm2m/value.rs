//! Typed LwM2M values, resource types, content formats, and the flat `Record` list that every codec
//! decodes to and encodes from.

use super::Path;

/// LwM2M resource data types (TS Core, Appendix C), as declared in object definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    String,
    Integer,
    UnsignedInteger,
    Float,
    Boolean,
    Opaque,
    Time,
    Objlnk,
    Corelnk,
    /// Executable resources have no value type.
    None,
}

impl ResourceType {
    /// The type as object definitions and the MQTT `type` field spell it; `none` for an
    /// executable resource.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::String => "String",
            ResourceType::Integer => "Integer",
            ResourceType::UnsignedInteger => "Unsigned Integer",
            ResourceType::Float => "Float",
            ResourceType::Boolean => "Boolean",
            ResourceType::Opaque => "Opaque",
            ResourceType::Time => "Time",
            ResourceType::Objlnk => "Objlnk",
            ResourceType::Corelnk => "Corelnk",
            ResourceType::None => "none",
        }
    }
}

/// A typed value. `Time` is seconds since the Unix epoch (signed, as in the TS).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Integer(i64),
    UnsignedInteger(u64),
    Float(f64),
    Boolean(bool),
    String(String),
    Opaque(Vec<u8>),
    Time(i64),
    /// Object link `objectId:instanceId`.
    Objlnk(u16, u16),
    Corelnk(String),
    /// A resource reported without a value (OMA JSON element without a value, executable...).
    None,
}

/// One resource (or resource instance) value at a full path: what the MQTT `content` array holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub path: Path,
    pub value: Value,
    /// True when the payload format carried no type (TLV, text, opaque) and no object definition
    /// describes this resource: `value` then holds the raw bytes as `Value::Opaque`, and the MQTT
    /// message marks it with `"type":"opaque"` instead of failing the whole payload.
    pub type_unknown: bool,
}

impl Record {
    pub fn new(path: Path, value: Value) -> Record {
        Record {
            path,
            value,
            type_unknown: false,
        }
    }
}

/// Where untyped formats get resource types from. The gateway implements it over
/// `model::ObjectRegistry` bound to the object versions a device announced (`ver=`).
pub trait ResourceTypes {
    /// Type of resource `resource` of object `object`; `None` when no definition describes it.
    fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType>;
    /// Whether the resource is declared multiple-instance; `None` when unknown.
    fn is_multiple(&self, object: u16, resource: u16) -> Option<bool>;
}

/// A lookup that knows nothing: every value of an untyped format comes out as opaque.
pub struct NoTypes;
impl ResourceTypes for NoTypes {
    fn resource_type(&self, _: u16, _: u16) -> Option<ResourceType> {
        None
    }
    fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
        None
    }
}

/// CoAP Content-Format numbers used by LwM2M (IANA CoAP registry, LwM2M TS Transport §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentFormat {
    Text,
    LinkFormat,
    Opaque,
    Cbor,
    SenmlJson,
    SenmlCbor,
    /// Pre-1.0 TLV number (1542).
    TlvLegacy,
    /// Pre-1.0 OMA JSON number (1543).
    JsonLegacy,
    Tlv,
    Json,
    LwM2mCbor,
}

impl ContentFormat {
    pub const ALL: [ContentFormat; 11] = [
        ContentFormat::Text,
        ContentFormat::LinkFormat,
        ContentFormat::Opaque,
        ContentFormat::Cbor,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::TlvLegacy,
        ContentFormat::JsonLegacy,
        ContentFormat::Tlv,
        ContentFormat::Json,
        ContentFormat::LwM2mCbor,
    ];

    pub fn from_u16(n: u16) -> Option<ContentFormat> {
        Some(match n {
            0 => ContentFormat::Text,
            40 => ContentFormat::LinkFormat,
            42 => ContentFormat::Opaque,
            60 => ContentFormat::Cbor,
            110 => ContentFormat::SenmlJson,
            112 => ContentFormat::SenmlCbor,
            1542 => ContentFormat::TlvLegacy,
            1543 => ContentFormat::JsonLegacy,
            11542 => ContentFormat::Tlv,
            11543 => ContentFormat::Json,
            11544 => ContentFormat::LwM2mCbor,
            _ => return None,
        })
    }

    pub fn as_u16(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::TlvLegacy => 1542,
            ContentFormat::JsonLegacy => 1543,
            ContentFormat::Tlv => 11542,
            ContentFormat::Json => 11543,
            ContentFormat::LwM2mCbor => 11544,
        }
    }

    /// Names accepted in the MQTT `data.format` field.
    pub fn from_name(name: &str) -> Option<ContentFormat> {
        Some(match name {
            "text" => ContentFormat::Text,
            "link" => ContentFormat::LinkFormat,
            "opaque" => ContentFormat::Opaque,
            "cbor" => ContentFormat::Cbor,
            "senml-json" => ContentFormat::SenmlJson,
            "senml-cbor" => ContentFormat::SenmlCbor,
            "tlv" => ContentFormat::Tlv,
            "json" => ContentFormat::Json,
            "lwm2m-cbor" => ContentFormat::LwM2mCbor,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ContentFormat::Text => "text",
            ContentFormat::LinkFormat => "link",
            ContentFormat::Opaque => "opaque",
            ContentFormat::Cbor => "cbor",
            ContentFormat::SenmlJson => "senml-json",
            ContentFormat::SenmlCbor => "senml-cbor",
            ContentFormat::TlvLegacy | ContentFormat::Tlv => "tlv",
            ContentFormat::JsonLegacy | ContentFormat::Json => "json",
            ContentFormat::LwM2mCbor => "lwm2m-cbor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_format_numbers_round_trip() {
        for cf in ContentFormat::ALL {
            assert_eq!(ContentFormat::from_u16(cf.as_u16()), Some(cf));
        }
        assert_eq!(ContentFormat::from_u16(41), None);
        assert_eq!(
            ContentFormat::from_name("senml-cbor"),
            Some(ContentFormat::SenmlCbor)
        );
    }
}
