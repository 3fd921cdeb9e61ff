//! The object definitions shipped in `xml/` and the loader's behaviour on a real directory.

mod support;

use std::path::{Path as FsPath, PathBuf};

use lwm2m_gateway::lwm2m::model::{ObjectRegistry, Operations};
use lwm2m_gateway::lwm2m::{ResourceType, ResourceTypes};

fn shipped_dir() -> PathBuf {
    support::repo_path("xml")
}

fn shipped() -> ObjectRegistry {
    let (reg, errors) = ObjectRegistry::load_dir(&shipped_dir()).expect("xml/ is readable");
    assert!(
        errors.is_empty(),
        "shipped definitions failed to load: {errors:#?}"
    );
    reg
}

/// A scratch directory under the target dir, emptied first, unique per test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_shipped(dir: &FsPath, files: &[&str]) {
    for f in files {
        std::fs::copy(shipped_dir().join(f), dir.join(f)).unwrap();
    }
}

const CORE: &[(u16, &str)] = &[
    (0, "LWM2M Security"),
    (1, "LwM2M Server"),
    (2, "LwM2M Access Control"),
    (3, "Device"),
    (4, "Connectivity Monitoring"),
    (5, "Firmware Update"),
    (6, "Location"),
    (7, "Connectivity Statistics"),
    (9, "LWM2M Software Management"),
    (10, "LWM2M Cellular Connectivity"),
    (19, "BinaryAppDataContainer"),
];

const IPSO: &[(u16, &str)] = &[
    (3200, "Digital Input"),
    (3201, "Digital Output"),
    (3202, "Analog Input"),
    (3203, "Analog Output"),
    (3300, "Generic Sensor"),
    (3301, "Illuminance"),
    (3302, "Presence"),
    (3303, "Temperature"),
    (3304, "Humidity"),
    (3305, "Power Measurement"),
    (3306, "Actuation"),
    (3311, "Light Control"),
    (3312, "Power Control"),
    (3313, "Accelerometer"),
    (3314, "Magnetometer"),
    (3315, "Barometer"),
    (3316, "Voltage"),
    (3317, "Current"),
    (3318, "Frequency"),
    (3319, "Depth"),
    (3320, "Percentage"),
    (3321, "Altitude"),
    (3322, "Load"),
    (3323, "Pressure"),
    (3324, "Loudness"),
    (3325, "Concentration"),
    (3326, "Acidity"),
    (3327, "Conductivity"),
    (3328, "Power"),
    (3329, "Power Factor"),
    (3330, "Distance"),
    (3331, "Energy"),
    (3332, "Direction"),
    (3333, "Time"),
    (3334, "Gyrometer"),
    (3335, "Colour"),
    (3336, "Location"),
    (3337, "Positioner"),
    (3338, "Buzzer"),
    (3339, "Audio Clip"),
    (3340, "Timer"),
    (3341, "Addressable Text Display"),
    (3342, "On/Off switch"),
    (3343, "Dimmer"),
    (3344, "Up/Down Control"),
    (3345, "Multiple Axis Joystick"),
    (3346, "Rate"),
    (3347, "Push button"),
    (3348, "Multi-state Selector"),
    (3349, "Bitmap"),
    (3350, "Stopwatch"),
];

#[test]
fn every_shipped_file_loads_and_listed_objects_are_present() {
    let reg = shipped();
    for (id, name) in CORE.iter().chain(IPSO) {
        let def = reg
            .get(*id, None)
            .unwrap_or_else(|| panic!("object {id} missing"));
        assert_eq!(def.name, *name, "object {id}");
        assert!(
            !def.description.is_empty(),
            "object {id} has no description"
        );
        assert!(!def.resources.is_empty(), "object {id} has no resources");
    }
    assert!(reg.has_object(3303) && !reg.has_object(8));
    // Every file in the directory yields exactly one definition.
    let files = std::fs::read_dir(shipped_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "xml")
        })
        .count();
    assert_eq!(reg.objects().count(), files);
}

#[test]
fn sample_resource_types() {
    let reg = shipped();
    let t = reg.types_for(&[]);
    let cases: &[(u16, u16, ResourceType)] = &[
        (0, 0, ResourceType::String),
        (0, 2, ResourceType::Integer),
        (0, 16, ResourceType::UnsignedInteger),
        (1, 0, ResourceType::Integer),
        (1, 8, ResourceType::None),
        (1, 23, ResourceType::Boolean),
        (2, 2, ResourceType::Integer),
        (3, 0, ResourceType::String),
        (3, 4, ResourceType::None),
        (3, 9, ResourceType::Integer),
        (3, 13, ResourceType::Time),
        (3, 22, ResourceType::Objlnk),
        (4, 2, ResourceType::Integer),
        (5, 0, ResourceType::Opaque),
        (5, 1, ResourceType::String),
        (5, 3, ResourceType::Integer),
        (6, 0, ResourceType::Float),
        (6, 5, ResourceType::Time),
        (9, 12, ResourceType::Boolean),
        (10, 12, ResourceType::UnsignedInteger),
        (19, 0, ResourceType::Opaque),
        (3200, 5500, ResourceType::Boolean),
        (3303, 5700, ResourceType::Float),
        (3303, 5701, ResourceType::String),
        (3303, 5605, ResourceType::None),
        (3311, 5850, ResourceType::Boolean),
        (3311, 5851, ResourceType::Integer),
        (3313, 5702, ResourceType::Float),
        (3316, 5821, ResourceType::Float),
        (3342, 5500, ResourceType::Boolean),
        (3318, 5700, ResourceType::Float),
        (3320, 5701, ResourceType::String),
        (3328, 5821, ResourceType::Float),
        (3346, 5750, ResourceType::String),
        (3305, 5800, ResourceType::Float),
        (3305, 5805, ResourceType::Float),
        (3305, 5822, ResourceType::None),
        (3306, 5850, ResourceType::Boolean),
        (3306, 5853, ResourceType::String),
        (3312, 5851, ResourceType::Integer),
        (3331, 5700, ResourceType::Float),
        (3331, 5822, ResourceType::None),
        (3314, 5705, ResourceType::Float),
        (3332, 5705, ResourceType::Float),
        (3333, 5506, ResourceType::Time),
        (3333, 5507, ResourceType::Float),
        (3334, 5513, ResourceType::Float),
        (3335, 5706, ResourceType::String),
        (3336, 5514, ResourceType::String),
        (3336, 5515, ResourceType::String),
        (3336, 5517, ResourceType::Opaque),
        (3337, 5536, ResourceType::Float),
        (3345, 5500, ResourceType::Boolean),
        (3338, 5525, ResourceType::Float),
        (3339, 5522, ResourceType::Opaque),
        (3339, 5523, ResourceType::None),
        (3340, 5521, ResourceType::Float),
        (3340, 5526, ResourceType::Integer),
        (3340, 5543, ResourceType::Boolean),
        (3341, 5527, ResourceType::String),
        (3341, 5530, ResourceType::None),
        (3343, 5548, ResourceType::Float),
        (3344, 5532, ResourceType::Boolean),
        (3348, 5547, ResourceType::Integer),
        (3349, 5910, ResourceType::Integer),
        (3349, 5912, ResourceType::String),
        (3350, 5544, ResourceType::Float),
    ];
    for &(o, r, ty) in cases {
        assert_eq!(t.resource_type(o, r), Some(ty), "/{o}/x/{r}");
    }
    assert_eq!(t.resource_type(3, 99), None);
    assert_eq!(t.resource_type(9999, 0), None);

    assert_eq!(t.is_multiple(3, 11), Some(true));
    assert_eq!(t.is_multiple(3, 9), Some(false));
    assert_eq!(t.is_multiple(19, 0), Some(true));
    assert_eq!(t.is_multiple(3349, 5912), Some(true));
    assert_eq!(t.is_multiple(3349, 5910), Some(false));

    let device = reg.get(3, None).unwrap();
    let battery = device.resource(9).unwrap();
    assert_eq!(battery.name, "Battery Level");
    assert_eq!(battery.operations, Operations::R);
    assert_eq!(
        (battery.range_enumeration.as_str(), battery.units.as_str()),
        ("0..100", "/100")
    );
    assert_eq!(device.version, "1.1");
    assert_eq!(
        device.resources.keys().copied().collect::<Vec<_>>(),
        (0..=22).collect::<Vec<u16>>()
    );
    assert!(device.resource(4).unwrap().mandatory);
    assert_eq!(
        reg.get(5, None).unwrap().resource(0).unwrap().operations,
        Operations::W
    );
    assert_eq!(
        reg.get(5, None).unwrap().resource(2).unwrap().operations,
        Operations::E
    );
    assert!(!device.multiple && reg.get(3303, None).unwrap().multiple);
}

/// IPSO single-value sensors still at version 1.0 share one resource layout, without the
/// timestamp and quality resources that version 1.1 added.
#[test]
fn ipso_10_sensors_share_one_layout() {
    let reg = shipped();
    for id in [
        3318, 3319, 3320, 3321, 3322, 3324, 3325, 3326, 3327, 3328, 3329, 3330, 3346,
    ] {
        let def = reg.get(id, None).unwrap();
        assert_eq!(def.version, "1.0", "object {id}");
        assert_eq!(def.urn, format!("urn:oma:lwm2m:ext:{id}"));
        assert!(def.multiple && !def.mandatory, "object {id}");
        assert_eq!(
            def.resources.keys().copied().collect::<Vec<_>>(),
            [5601, 5602, 5603, 5604, 5605, 5700, 5701, 5750, 5821],
            "object {id}"
        );
        let value = def.resource(5700).unwrap();
        assert_eq!(value.resource_type, ResourceType::Float, "object {id}");
        assert!(value.mandatory && value.operations == Operations::R);
        assert_eq!(
            def.resource(5821).unwrap().operations,
            Operations::RW,
            "object {id}"
        );
        assert_eq!(
            def.resource(5605).unwrap().resource_type,
            ResourceType::None
        );
    }
}

#[test]
fn electrical_objects() {
    let reg = shipped();
    let meter = reg.get(3305, None).unwrap();
    assert_eq!(meter.version, "1.0");
    assert!(meter.resource(5800).unwrap().mandatory);
    let cal = meter.resource(5806).unwrap();
    assert_eq!((cal.operations, cal.units.as_str()), (Operations::W, "W"));
    assert_eq!(meter.resource(5815).unwrap().units, "varh");
    assert_eq!(meter.resource(5805).unwrap().units, "Wh");
    assert_eq!(meter.resources.len(), 18);
    // Energy reports its total through the generic Sensor Value, not 5805.
    let energy = reg.get(3331, None).unwrap();
    assert_eq!(
        energy.resources.keys().copied().collect::<Vec<_>>(),
        [5700, 5701, 5750, 5822]
    );
    let plug = reg.get(3312, None).unwrap().resource(5851).unwrap();
    assert_eq!(
        (plug.range_enumeration.as_str(), plug.units.as_str()),
        ("0-100", "%")
    );
    let act = reg.get(3306, None).unwrap();
    assert!(act.resource(5850).unwrap().mandatory);
    assert_eq!(act.resource(5853).unwrap().operations, Operations::RW);
}

#[test]
fn server_versions_chosen_by_announced_ver() {
    let reg = shipped();
    assert_eq!(reg.versions(1).collect::<Vec<_>>(), ["1.1", "1.2"]);
    let v11 = vec![(1u16, Box::<str>::from("1.1"))];
    let v12 = vec![(1u16, Box::<str>::from("1.2"))];
    assert_eq!(reg.types_for(&v11).resource_type(1, 27), None);
    assert_eq!(
        reg.types_for(&v12).resource_type(1, 27),
        Some(ResourceType::UnsignedInteger)
    );
    assert_eq!(
        reg.types_for(&v11).resource_type(1, 23),
        Some(ResourceType::Boolean)
    );
    assert_eq!(reg.get(1, Some("1.1")).unwrap().resources.len(), 24);
    // No ver= or an unknown one: the highest loaded version.
    assert_eq!(reg.types_for(&[]).object(1).unwrap().version, "1.2");
    let v19 = vec![(1u16, Box::<str>::from("1.9"))];
    assert_eq!(reg.types_for(&v19).object(1).unwrap().version, "1.2");
}

#[test]
fn ipso_location_versions() {
    let reg = shipped();
    assert_eq!(reg.versions(3336).collect::<Vec<_>>(), ["1.0", "1.1"]);
    let v10 = vec![(3336u16, Box::<str>::from("1.0"))];
    let t10 = reg.types_for(&v10);
    assert_eq!(t10.resource_type(3336, 6042), None);
    assert_eq!(t10.object(3336).unwrap().urn, "urn:oma:lwm2m:ext:3336");
    let d10 = t10.object(3336).unwrap().resource(5705).unwrap();
    assert_eq!(d10.units, "degree");
    let t = reg.types_for(&[]);
    assert_eq!(t.object(3336).unwrap().version, "1.1");
    assert_eq!(t.object(3336).unwrap().urn, "urn:oma:lwm2m:ext:3336:1.1");
    assert_eq!(t.resource_type(3336, 6042), Some(ResourceType::Integer));
    let loc = t.object(3336).unwrap();
    assert!(loc.resource(5514).unwrap().mandatory && loc.resource(5515).unwrap().mandatory);
    // The joystick defines no mandatory resource at all in the registry.
    assert!(reg
        .get(3345, None)
        .unwrap()
        .resources
        .values()
        .all(|r| !r.mandatory));
    assert_eq!(
        reg.get(3333, None)
            .unwrap()
            .resource(5506)
            .unwrap()
            .operations,
        Operations::RW
    );
}

#[test]
fn controls_and_actuators() {
    let reg = shipped();
    // The buzzer is the one object here whose Minimum Off-time is mandatory.
    let buzzer = reg.get(3338, None).unwrap();
    assert!(buzzer.resource(5850).unwrap().mandatory && buzzer.resource(5525).unwrap().mandatory);
    assert!(
        !reg.get(3340, None)
            .unwrap()
            .resource(5525)
            .unwrap()
            .mandatory
    );
    let up_down = reg.get(3344, None).unwrap();
    assert!(up_down.resource(5532).unwrap().mandatory && up_down.resource(5533).unwrap().mandatory);
    let timer = reg.get(3340, None).unwrap();
    assert_eq!(timer.resources.len(), 11);
    assert_eq!(timer.resource(5526).unwrap().range_enumeration, "0-4");
    assert_eq!(timer.resource(5538).unwrap().operations, Operations::R);
    let display = reg.get(3341, None).unwrap();
    assert_eq!(display.resource(5545).unwrap().operations, Operations::R);
    assert_eq!(display.resource(5528).unwrap().operations, Operations::RW);
    assert_eq!(
        reg.get(3349, None)
            .unwrap()
            .resource(5911)
            .unwrap()
            .operations,
        Operations::E
    );
    for id in [3338, 3339, 3340, 3341, 3343, 3344, 3348, 3349, 3350] {
        assert_eq!(reg.get(id, None).unwrap().version, "1.0", "object {id}");
    }
}

#[test]
fn versions_from_a_registration_payload() {
    let reg = shipped();
    let r = lwm2m_gateway::lwm2m::link_format::parse_registration(
        r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>"#,
    )
    .unwrap();
    let types = reg.types_for(r.versions());
    assert_eq!(types.object(1).unwrap().version, "1.1");
    assert_eq!(types.resource_type(3, 9), Some(ResourceType::Integer));
}

#[test]
fn broken_file_is_reported_by_name_and_others_still_load() {
    let dir = scratch("model_broken");
    copy_shipped(&dir, &["3.xml", "3303.xml"]);
    std::fs::write(
        dir.join("50-broken.xml"),
        "<LWM2M><Object><ObjectID>50</Obj",
    )
    .unwrap();
    let bad_type = std::fs::read_to_string(dir.join("3.xml"))
        .unwrap()
        .replace("<ObjectID>3</ObjectID>", "<ObjectID>51</ObjectID>")
        .replacen("<Type>String</Type>", "<Type>Text</Type>", 1);
    std::fs::write(dir.join("51-badtype.xml"), bad_type).unwrap();
    std::fs::write(dir.join("notes.txt"), "not xml, ignored").unwrap();
    let (reg, errors) = ObjectRegistry::load_dir(&dir).unwrap();
    let names: Vec<_> = errors.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(names, ["50-broken.xml", "51-badtype.xml"], "{errors:#?}");
    assert!(errors[1].error.contains("Text"), "{}", errors[1]);
    assert_eq!(reg.len(), 2);
    assert!(reg.has_object(3) && reg.has_object(3303) && !reg.has_object(50));
}

#[test]
fn doctype_file_is_rejected() {
    let dir = scratch("model_doctype");
    copy_shipped(&dir, &["6.xml"]);
    let evil = std::fs::read_to_string(shipped_dir().join("7.xml"))
        .unwrap()
        .replace(
            "<LWM2M ",
            "<!DOCTYPE LWM2M [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>\n<LWM2M ",
        );
    std::fs::write(dir.join("7.xml"), evil).unwrap();
    let (reg, errors) = ObjectRegistry::load_dir(&dir).unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "7.xml");
    assert!(errors[0].error.contains("DOCTYPE"));
    assert!(reg.has_object(6) && !reg.has_object(7));
}

#[test]
fn duplicate_version_in_a_later_file_is_reported_and_first_kept() {
    let dir = scratch("model_dup");
    copy_shipped(&dir, &["3303.xml"]);
    let copy = std::fs::read_to_string(dir.join("3303.xml"))
        .unwrap()
        .replace("Temperature", "Other");
    std::fs::write(dir.join("3303-copy.xml"), copy).unwrap();
    let (reg, errors) = ObjectRegistry::load_dir(&dir).unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].file, "3303.xml",
        "sorted order: 3303-copy.xml loads first"
    );
    assert_eq!(reg.get(3303, None).unwrap().name, "Other");
}

#[test]
fn oversized_file_is_rejected() {
    let dir = scratch("model_big");
    let mut big = std::fs::read_to_string(shipped_dir().join("6.xml")).unwrap();
    big.push_str(&"<!-- padding -->".repeat(300_000));
    std::fs::write(dir.join("6.xml"), big).unwrap();
    let (reg, errors) = ObjectRegistry::load_dir(&dir).unwrap();
    assert!(reg.is_empty());
    assert!(errors[0].error.contains("larger"), "{}", errors[0]);
}

#[test]
fn missing_directory_is_an_io_error() {
    assert!(ObjectRegistry::load_dir(FsPath::new("/nonexistent/xml-dir")).is_err());
}
