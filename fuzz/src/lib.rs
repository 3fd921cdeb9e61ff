//! Helpers shared by the fuzz targets: the real object model (loaded once), a byte reader for
//! structured inputs, and checks that gateway output is well-formed.

use std::sync::{Arc, OnceLock};

use lwm2m_gateway::coap::MessageView;
use lwm2m_gateway::lwm2m::model::ObjectRegistry;
use lwm2m_gateway::lwm2m::{json, Record};

/// The repository's `xml/` object definitions, loaded on first use and shared by every run.
pub fn registry() -> &'static Arc<ObjectRegistry> {
    static REG: OnceLock<Arc<ObjectRegistry>> = OnceLock::new();
    REG.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xml");
        let (reg, errors) = ObjectRegistry::load_dir(&dir).expect("xml dir");
        assert!(
            !reg.is_empty(),
            "no object definitions in {}",
            dir.display()
        );
        assert!(errors.is_empty(), "xml load errors: {errors:?}");
        Arc::new(reg)
    })
}

/// Request paths a device answers: root, object, instance, resource, resource instance, for
/// objects that the model defines (and a few it does not).
pub const PATHS: [&str; 16] = [
    "/",
    "/3",
    "/3/0",
    "/3/0/0",
    "/3/0/7",
    "/3/0/7/1",
    "/1/0",
    "/1/0/1",
    "/5/0/1",
    "/4/0",
    "/6/0",
    "/19/0/0",
    "/31024/10",
    "/13/26/1",
    "/3303/0/5700",
    "/65534/65533/65532/65531",
];

/// Reads a structured input front to back; runs out as zeros / empty slices, never panics.
pub struct Reader<'a> {
    pub data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_be_bytes(b)
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    /// A length-prefixed (one byte) slice.
    pub fn short(&mut self) -> &'a [u8] {
        let n = self.u8() as usize;
        self.bytes(n)
    }
    /// A length-prefixed (two bytes) slice.
    pub fn long(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }
}

/// The MQTT `content` array the gateway writes for decoded records must be valid JSON and equal to
/// what serde_json makes of [`json::content_json`] (the writer promises byte equality).
pub fn check_content_json(records: &[Record]) {
    let mut fast = Vec::new();
    json::write_content_json(&mut fast, records);
    let slow = serde_json::to_vec(&json::content_json(records)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fast),
        String::from_utf8_lossy(&slow),
        "write_content_json differs from content_json"
    );
    let _: serde_json::Value =
        serde_json::from_slice(&fast).expect("write_content_json produced invalid JSON");
}

/// Every datagram the gateway produces must parse as CoAP.
pub fn check_datagram(bytes: &[u8]) {
    if let Err(e) = MessageView::parse(bytes) {
        panic!("gateway produced a malformed datagram ({e}): {bytes:02x?}");
    }
}
