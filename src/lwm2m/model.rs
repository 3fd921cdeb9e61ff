//! Object definitions from OMA DDF XML. STUB: replaced by issue 3's work.

use super::{ResourceType, ResourceTypes};

#[derive(Debug, Default)]
pub struct ObjectRegistry {}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub file: String,
    pub error: String,
}

impl ObjectRegistry {
    /// Loads every `*.xml` of `dir`; a bad file is reported and skipped.
    pub fn load_dir(dir: &std::path::Path) -> std::io::Result<(ObjectRegistry, Vec<LoadError>)> {
        let _ = dir;
        Ok((ObjectRegistry::default(), Vec::new()))
    }
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    /// Type lookup bound to the object versions one device announced.
    pub fn types_for<'a>(&'a self, versions: &'a [(u16, String)]) -> DeviceTypes<'a> {
        DeviceTypes { registry: self, versions }
    }
    pub fn has_object(&self, object: u16) -> bool {
        let _ = object;
        false
    }
}

pub struct DeviceTypes<'a> {
    #[allow(dead_code)]
    registry: &'a ObjectRegistry,
    #[allow(dead_code)]
    versions: &'a [(u16, String)],
}

impl ResourceTypes for DeviceTypes<'_> {
    fn resource_type(&self, _: u16, _: u16) -> Option<ResourceType> {
        None
    }
    fn is_multiple(&self, _: u16, _: u16) -> Option<bool> {
        None
    }
}
