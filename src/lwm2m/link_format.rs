//! CoRE link-format (RFC 6690). STUB: replaced by issue 3's work.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("malformed link-format: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    /// Target without the angle brackets, e.g. `/3/0`.
    pub target: String,
    /// Attributes in order; the value keeps its quotes stripped; `None` for a bare attribute.
    pub attrs: Vec<(String, Option<String>)>,
}

pub fn parse(s: &str) -> Result<Vec<Link>, LinkError> {
    let _ = s;
    Err(LinkError::Malformed("not implemented".into()))
}

/// What a Register/Update payload says about the device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegisteredObjects {
    /// `"/"` unless a link carries `rt="oma.lwm2m"`.
    pub alternate_path: String,
    /// Object/instance links, alternate path stripped (EMQX `objectList`), e.g. `"/3/0"`.
    pub object_list: Vec<String>,
    /// `ct=` of the root (`</>` or alternate path) link.
    pub content_formats: Vec<u16>,
    /// `ver=` per object id.
    pub versions: Vec<(u16, String)>,
}

pub fn parse_registration(payload: &str) -> Result<RegisteredObjects, LinkError> {
    let _ = payload;
    Err(LinkError::Malformed("not implemented".into()))
}

/// A Discover response split into link strings on every comma outside quotes (EMQX 5.x).
pub fn discover_links(payload: &str) -> Vec<String> {
    payload.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}
