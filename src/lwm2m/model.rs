//! Object definitions from OMA DDF XML (the `LWM2M/Object` schema of the OMA registry).
//!
//! Untyped content formats (TLV, plain text) carry no type information, so the gateway needs
//! the object definitions to turn bytes into typed values. The definitions come from XML files
//! the operator controls, but they are still parsed defensively: DTDs and entity declarations are
//! refused outright (no entity expansion tricks), files are size-bounded, and one bad file is
//! reported by name without keeping the others from loading.
//!
//! Several versions of one object may be loaded side by side (e.g. Server 1.1 and 1.2), because
//! devices announce the version they implement with `ver=` at registration and a resource can
//! change between versions. [`ObjectRegistry::types_for`] binds a lookup to one device's versions.

use std::collections::BTreeMap;
use std::fmt;

use super::{ResourceType, ResourceTypes};

/// Largest XML file accepted. The biggest registry objects are well under 200 KiB; the bound
/// only exists so a stray huge file cannot exhaust memory at start-up.
pub const MAX_XML_SIZE: usize = 4 * 1024 * 1024;

/// roxmltree node budget, a second line of defence next to [`MAX_XML_SIZE`].
const MAX_XML_NODES: u32 = 1_000_000;

/// What a resource allows, from the DDF `Operations` element (`R`, `W`, `RW`, `E` or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Operations {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Operations {
    pub const NONE: Operations = Operations {
        read: false,
        write: false,
        execute: false,
    };
    pub const R: Operations = Operations {
        read: true,
        write: false,
        execute: false,
    };
    pub const W: Operations = Operations {
        read: false,
        write: true,
        execute: false,
    };
    pub const RW: Operations = Operations {
        read: true,
        write: true,
        execute: false,
    };
    pub const E: Operations = Operations {
        read: false,
        write: false,
        execute: true,
    };

    /// Parses the DDF spelling. Only the five combinations the schema allows are accepted, so a
    /// typo in a hand-written file is caught at load time instead of silently denying access.
    pub fn parse(s: &str) -> Option<Operations> {
        Some(match s.trim() {
            "" => Operations::NONE,
            "R" => Operations::R,
            "W" => Operations::W,
            "RW" => Operations::RW,
            "E" => Operations::E,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match (self.read, self.write, self.execute) {
            (true, true, _) => "RW",
            (true, false, _) => "R",
            (false, true, _) => "W",
            (false, false, true) => "E",
            (false, false, false) => "",
        }
    }
}

impl fmt::Display for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `Resources/Item` of an object definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    pub id: u16,
    pub name: String,
    pub operations: Operations,
    pub multiple: bool,
    pub mandatory: bool,
    /// `ResourceType::None` for executable resources (empty `<Type>`).
    pub resource_type: ResourceType,
    /// Free text as written in the file (`0..100`, `1..3`...); empty when absent.
    pub range_enumeration: String,
    pub units: String,
    pub description: String,
}

/// One `LWM2M/Object` definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDef {
    pub id: u16,
    pub name: String,
    pub description: String,
    /// `ObjectVersion`, `"1.0"` when the file does not say (the TS default for `ver=`).
    pub version: String,
    /// `LWM2MVersion`, `"1.0"` when absent.
    pub lwm2m_version: String,
    /// `ObjectURN`, empty when absent.
    pub urn: String,
    pub multiple: bool,
    pub mandatory: bool,
    pub resources: BTreeMap<u16, ResourceDef>,
}

impl ObjectDef {
    pub fn resource(&self, id: u16) -> Option<&ResourceDef> {
        self.resources.get(&id)
    }
}

/// A file that could not be loaded (or an object in it that was refused), by file name.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub file: String,
    pub error: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

/// Object definitions by id, each id possibly in several versions.
#[derive(Debug, Default, Clone)]
pub struct ObjectRegistry {
    /// Versions of one object sorted ascending by [`version_key`], so the last is the highest.
    objects: BTreeMap<u16, Vec<ObjectDef>>,
}

impl ObjectRegistry {
    pub fn new() -> ObjectRegistry {
        ObjectRegistry::default()
    }

    /// Loads every `*.xml` of `dir` (not recursive) in file-name order, so that which file wins a
    /// conflict never depends on directory iteration order. A bad file is reported and skipped;
    /// an object whose id and version were already loaded from an earlier file is reported and
    /// the earlier definition kept. Only failing to list `dir` itself is an `Err`.
    pub fn load_dir(dir: &std::path::Path) -> std::io::Result<(ObjectRegistry, Vec<LoadError>)> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let is_xml = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
            if is_xml && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut registry = ObjectRegistry::new();
        let mut errors = Vec::new();
        for path in files {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            let defs = match read_bounded(&path).and_then(|text| parse_xml(&text)) {
                Ok(defs) => defs,
                Err(error) => {
                    errors.push(LoadError { file, error });
                    continue;
                }
            };
            for def in defs {
                if registry.get_exact(def.id, &def.version).is_some() {
                    errors.push(LoadError {
                        file: file.clone(),
                        error: format!(
                            "object {} version {} is already defined by an earlier file; ignored",
                            def.id, def.version
                        ),
                    });
                    continue;
                }
                registry.insert(def);
            }
        }
        Ok((registry, errors))
    }

    /// Adds a definition, replacing (and returning) one with the same id and version.
    pub fn insert(&mut self, def: ObjectDef) -> Option<ObjectDef> {
        let versions = self.objects.entry(def.id).or_default();
        if let Some(slot) = versions.iter_mut().find(|d| d.version == def.version) {
            return Some(std::mem::replace(slot, def));
        }
        versions.push(def);
        versions.sort_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
        None
    }

    /// The definition of `object` in `version` if loaded, else its highest loaded version.
    /// Falling back rather than failing keeps a device usable when it announces a version the
    /// gateway has no file for: most resources keep their type across versions.
    pub fn get(&self, object: u16, version: Option<&str>) -> Option<&ObjectDef> {
        let versions = self.objects.get(&object)?;
        version
            .and_then(|v| versions.iter().find(|d| d.version == v.trim()))
            .or_else(|| versions.last())
    }

    /// The definition of `object` in exactly `version`.
    pub fn get_exact(&self, object: u16, version: &str) -> Option<&ObjectDef> {
        self.objects
            .get(&object)?
            .iter()
            .find(|d| d.version == version)
    }

    /// Every loaded definition, by object id then ascending version.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values().flatten()
    }

    /// Loaded versions of `object`, ascending.
    pub fn versions(&self, object: u16) -> impl Iterator<Item = &str> {
        self.objects
            .get(&object)
            .into_iter()
            .flatten()
            .map(|d| d.version.as_str())
    }

    /// Number of distinct object ids (not counting extra versions).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Type lookup bound to the object versions one device announced.
    pub fn types_for<'a>(&'a self, versions: &'a [(u16, Box<str>)]) -> DeviceTypes<'a> {
        DeviceTypes {
            registry: self,
            versions,
        }
    }

    pub fn has_object(&self, object: u16) -> bool {
        self.objects.contains_key(&object)
    }
}

/// [`ResourceTypes`] over a registry, using the `ver=` a device announced for each object and
/// the highest loaded version for objects it announced none for.
pub struct DeviceTypes<'a> {
    registry: &'a ObjectRegistry,
    versions: &'a [(u16, Box<str>)],
}

impl DeviceTypes<'_> {
    /// The definition this device uses for `object`.
    pub fn object(&self, object: u16) -> Option<&ObjectDef> {
        let version = self
            .versions
            .iter()
            .find(|(id, _)| *id == object)
            .map(|(_, v)| &**v);
        self.registry.get(object, version)
    }

    fn resource(&self, object: u16, resource: u16) -> Option<&ResourceDef> {
        self.object(object)?.resource(resource)
    }
}

impl ResourceTypes for DeviceTypes<'_> {
    fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType> {
        self.resource(object, resource).map(|r| r.resource_type)
    }
    fn is_multiple(&self, object: u16, resource: u16) -> Option<bool> {
        self.resource(object, resource).map(|r| r.multiple)
    }
}

impl ResourceTypes for ObjectRegistry {
    /// Without device context the highest loaded version answers.
    fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType> {
        self.types_for(&[]).resource_type(object, resource)
    }
    fn is_multiple(&self, object: u16, resource: u16) -> Option<bool> {
        self.types_for(&[]).is_multiple(object, resource)
    }
}

/// Orders `"1.10"` above `"1.9"`; anything not `major.minor` digits sorts first, by text.
fn version_key(v: &str) -> (u8, u32, u32, &str) {
    let numeric = v
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    match numeric {
        Some((major, minor)) => (1, major, minor, v),
        None => (0, 0, 0, v),
    }
}

fn read_bounded(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // Read one byte past the limit so an oversized file is detected without trusting metadata.
    file.take(MAX_XML_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_XML_SIZE {
        return Err(format!("file larger than {MAX_XML_SIZE} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "file is not UTF-8".to_string())
}

/// Parses one DDF document (root `LWM2M`, one or more `Object` children).
pub fn parse_xml(text: &str) -> Result<Vec<ObjectDef>, String> {
    if text.len() > MAX_XML_SIZE {
        return Err(format!("document larger than {MAX_XML_SIZE} bytes"));
    }
    // roxmltree accepts an empty `<!DOCTYPE x>` even with DTDs disabled; object definitions never
    // need one, so any declaration is refused before parsing.
    if contains_ignore_ascii_case(text, "<!DOCTYPE") || contains_ignore_ascii_case(text, "<!ENTITY")
    {
        return Err("DOCTYPE and entity declarations are not allowed".into());
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
    };
    let doc = roxmltree::Document::parse_with_options(text, options).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if root.tag_name().name() != "LWM2M" {
        return Err(format!(
            "root element is <{}>, expected <LWM2M>",
            root.tag_name().name()
        ));
    }
    let defs = root
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "Object")
        .map(parse_object)
        .collect::<Result<Vec<_>, _>>()?;
    if defs.is_empty() {
        return Err("no <Object> element".into());
    }
    Ok(defs)
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Trimmed text of the first child element called `name`; `None` when the element is absent.
fn child_text<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
        .map(|n| n.text().unwrap_or("").trim())
}

fn parse_id(s: &str, what: &str) -> Result<u16, String> {
    // 65535 is reserved as "no id" by the TS, as in `Path`.
    match s.trim().parse::<u16>() {
        Ok(id) if id != u16::MAX => Ok(id),
        _ => Err(format!("{what} {s:?} is not an id in 0..=65534")),
    }
}

fn parse_multiple(s: Option<&str>, what: &str) -> Result<bool, String> {
    match s {
        None | Some("Single") => Ok(false),
        Some("Multiple") => Ok(true),
        Some(other) => Err(format!(
            "{what}: MultipleInstances {other:?} is not Single or Multiple"
        )),
    }
}

fn parse_mandatory(s: Option<&str>, what: &str) -> Result<bool, String> {
    match s {
        None | Some("Optional") => Ok(false),
        Some("Mandatory") => Ok(true),
        Some(other) => Err(format!(
            "{what}: Mandatory {other:?} is not Mandatory or Optional"
        )),
    }
}

fn parse_type(s: &str) -> Option<ResourceType> {
    Some(match s {
        "String" => ResourceType::String,
        "Integer" => ResourceType::Integer,
        "Unsigned Integer" => ResourceType::UnsignedInteger,
        "Float" => ResourceType::Float,
        "Boolean" => ResourceType::Boolean,
        "Opaque" => ResourceType::Opaque,
        "Time" => ResourceType::Time,
        "Objlnk" => ResourceType::Objlnk,
        "Corelnk" => ResourceType::Corelnk,
        "" => ResourceType::None,
        _ => return None,
    })
}

fn check_version(v: &str, what: &str) -> Result<(), String> {
    if version_key(v).0 == 1 {
        Ok(())
    } else {
        Err(format!("{what} {v:?} is not of the form major.minor"))
    }
}

fn parse_object(node: roxmltree::Node<'_, '_>) -> Result<ObjectDef, String> {
    let id = parse_id(
        child_text(node, "ObjectID").ok_or("object without <ObjectID>")?,
        "ObjectID",
    )?;
    let what = format!("object {id}");
    let name = child_text(node, "Name").unwrap_or("");
    if name.is_empty() {
        return Err(format!("{what}: empty or missing <Name>"));
    }
    let version = match child_text(node, "ObjectVersion") {
        None | Some("") => "1.0",
        Some(v) => v,
    };
    check_version(version, &format!("{what}: ObjectVersion"))?;
    let lwm2m_version = match child_text(node, "LWM2MVersion") {
        None | Some("") => "1.0",
        Some(v) => v,
    };
    check_version(lwm2m_version, &format!("{what}: LWM2MVersion"))?;

    let mut resources = BTreeMap::new();
    let items = node
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "Resources")
        .flat_map(|r| r.children())
        .filter(|n| n.is_element() && n.tag_name().name() == "Item");
    for item in items {
        let res = parse_resource(item, &what)?;
        if resources.contains_key(&res.id) {
            return Err(format!("{what}: resource {} defined twice", res.id));
        }
        resources.insert(res.id, res);
    }

    Ok(ObjectDef {
        id,
        name: name.to_string(),
        description: child_text(node, "Description1").unwrap_or("").to_string(),
        version: version.to_string(),
        lwm2m_version: lwm2m_version.to_string(),
        urn: child_text(node, "ObjectURN").unwrap_or("").to_string(),
        multiple: parse_multiple(child_text(node, "MultipleInstances"), &what)?,
        mandatory: parse_mandatory(child_text(node, "Mandatory"), &what)?,
        resources,
    })
}

fn parse_resource(item: roxmltree::Node<'_, '_>, object: &str) -> Result<ResourceDef, String> {
    let id = parse_id(
        item.attribute("ID")
            .ok_or_else(|| format!("{object}: Item without ID"))?,
        "ID",
    )?;
    let what = format!("{object} resource {id}");
    let name = child_text(item, "Name").unwrap_or("");
    if name.is_empty() {
        return Err(format!("{what}: empty or missing <Name>"));
    }
    let ops_text = child_text(item, "Operations").unwrap_or("");
    let operations = Operations::parse(ops_text)
        .ok_or_else(|| format!("{what}: Operations {ops_text:?} is not R, W, RW, E or empty"))?;
    let type_text = child_text(item, "Type").unwrap_or("");
    let resource_type =
        parse_type(type_text).ok_or_else(|| format!("{what}: unknown Type {type_text:?}"))?;
    // A value-less resource that is not executable cannot be read, written or executed:
    // almost certainly a mistake in the file.
    if resource_type == ResourceType::None && !operations.execute {
        return Err(format!("{what}: empty Type on a non-executable resource"));
    }
    Ok(ResourceDef {
        id,
        name: name.to_string(),
        operations,
        multiple: parse_multiple(child_text(item, "MultipleInstances"), &what)?,
        mandatory: parse_mandatory(child_text(item, "Mandatory"), &what)?,
        resource_type,
        range_enumeration: child_text(item, "RangeEnumeration")
            .unwrap_or("")
            .to_string(),
        units: child_text(item, "Units").unwrap_or("").to_string(),
        description: child_text(item, "Description").unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<LWM2M xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Object ObjectType="MODefinition">
    <Name>Thing</Name>
    <Description1>A test object.</Description1>
    <ObjectID>42</ObjectID>
    <ObjectURN>urn:oma:lwm2m:x:42</ObjectURN>
    <MultipleInstances>Multiple</MultipleInstances>
    <Mandatory>Optional</Mandatory>
    <Resources>
      <Item ID="0"><Name>Value</Name><Operations>R</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Mandatory</Mandatory>
        <Type>Unsigned Integer</Type><RangeEnumeration>0..9</RangeEnumeration><Units>s</Units>
        <Description>Some value.</Description></Item>
      <Item ID="1"><Name>Go</Name><Operations>E</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
        <Type></Type><RangeEnumeration/><Units/><Description/></Item>
      <Item ID="2"><Name>List</Name><Operations>RW</Operations>
        <MultipleInstances>Multiple</MultipleInstances><Mandatory>Optional</Mandatory>
        <Type>Objlnk</Type><RangeEnumeration/><Units/><Description/></Item>
    </Resources>
  </Object>
</LWM2M>"#;

    #[test]
    fn parses_a_definition() {
        let defs = parse_xml(ONE).unwrap();
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!(
            (d.id, d.name.as_str(), d.version.as_str()),
            (42, "Thing", "1.0")
        );
        assert_eq!(d.lwm2m_version, "1.0");
        assert!(d.multiple && !d.mandatory);
        let r0 = d.resource(0).unwrap();
        assert_eq!(r0.resource_type, ResourceType::UnsignedInteger);
        assert_eq!(r0.operations, Operations::R);
        assert!(r0.mandatory && !r0.multiple);
        assert_eq!(
            (r0.range_enumeration.as_str(), r0.units.as_str()),
            ("0..9", "s")
        );
        assert_eq!(d.resource(1).unwrap().resource_type, ResourceType::None);
        assert!(d.resource(2).unwrap().multiple);
    }

    #[test]
    fn rejects_bad_documents() {
        assert!(parse_xml("").is_err());
        assert!(parse_xml("<LWM2M/>").is_err());
        assert!(parse_xml("<Other><Object/></Other>").is_err());
        assert!(parse_xml(&ONE.replace("Unsigned Integer", "Double")).is_err());
        assert!(parse_xml(
            &ONE.replace("<Operations>R</Operations>", "<Operations>X</Operations>")
        )
        .is_err());
        assert!(parse_xml(&ONE.replace("<ObjectID>42", "<ObjectID>65535")).is_err());
        assert!(parse_xml(&ONE.replace("ID=\"2\"", "ID=\"1\"")).is_err());
        assert!(parse_xml(
            &ONE.replace("<Operations>E</Operations>", "<Operations>R</Operations>")
        )
        .is_err());
        let doctype = ONE.replace("<LWM2M ", "<!DOCTYPE LWM2M>\n<LWM2M ");
        assert!(parse_xml(&doctype).unwrap_err().contains("DOCTYPE"));
        let entity = ONE.replace("<LWM2M ", "<!doctype LWM2M [<!ENTITY a \"b\">]>\n<LWM2M ");
        assert!(parse_xml(&entity).is_err());
    }

    #[test]
    fn versions_side_by_side() {
        let mut reg = ObjectRegistry::new();
        let v10 = parse_xml(ONE).unwrap().remove(0);
        let mut v12 = v10.clone();
        v12.version = "1.2".into();
        v12.resources.get_mut(&0).unwrap().resource_type = ResourceType::Integer;
        let mut v110 = v10.clone();
        v110.version = "1.10".into();
        v110.resources.get_mut(&0).unwrap().resource_type = ResourceType::String;
        assert!(reg.insert(v12).is_none());
        assert!(reg.insert(v110).is_none());
        assert!(reg.insert(v10.clone()).is_none());
        assert!(reg.insert(v10).is_some());
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.versions(42).collect::<Vec<_>>(), ["1.0", "1.2", "1.10"]);
        assert_eq!(reg.get(42, Some("1.2")).unwrap().version, "1.2");
        assert_eq!(reg.get(42, Some("1.7")).unwrap().version, "1.10");
        assert_eq!(reg.get(42, None).unwrap().version, "1.10");
        assert!(reg.get(43, None).is_none());

        let announced = vec![(42, Box::from("1.0"))];
        let t = reg.types_for(&announced);
        assert_eq!(t.resource_type(42, 0), Some(ResourceType::UnsignedInteger));
        assert_eq!(
            reg.types_for(&[]).resource_type(42, 0),
            Some(ResourceType::String)
        );
        assert_eq!(t.is_multiple(42, 2), Some(true));
        assert_eq!(t.resource_type(42, 9), None);
        assert_eq!(t.resource_type(7, 0), None);
    }
}
