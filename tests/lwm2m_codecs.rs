//! Codec contract tests: byte fixtures from the LwM2M TS, EMQX and other implementations, round
//! trips for every format and value type (proptest), and hostile inputs that must come back as
//! `Err` (never a panic, a hang or a huge allocation).

mod support;

use lwm2m_gateway::lwm2m::codec::{decode, encode, encode_paths, CodecError};
use lwm2m_gateway::lwm2m::json::{content_json, records_from_write_content};
use lwm2m_gateway::lwm2m::{
    ContentFormat, NoTypes, Path, Record, ResourceType, ResourceTypes, Value,
};
use proptest::prelude::*;
use serde_json::json;
use support::hex;

use ContentFormat::*;

/// Object 3 as in the TS (and EMQX's XML); any other object: the type follows `resource % 9`, so
/// generated records can cover every type.
struct TestTypes;

fn generic_type(r: u16) -> ResourceType {
    use ResourceType::*;
    [
        String,
        Integer,
        UnsignedInteger,
        Float,
        Boolean,
        Opaque,
        Time,
        Objlnk,
        Corelnk,
    ][(r % 9) as usize]
}

impl ResourceTypes for TestTypes {
    fn resource_type(&self, object: u16, resource: u16) -> Option<ResourceType> {
        use ResourceType::*;
        if object != 3 {
            return Some(generic_type(resource));
        }
        Some(match resource {
            0..=3 | 14..=17 | 19 => String,
            4 | 5 | 12 => None,
            6..=11 | 20 | 21 => Integer,
            13 => Time,
            18 => String,
            22 => Objlnk,
            _ => return Option::None,
        })
    }
    fn is_multiple(&self, object: u16, resource: u16) -> Option<bool> {
        (object == 3).then_some(matches!(resource, 6 | 7 | 8 | 11 | 22))
    }
}

fn p(s: &str) -> Path {
    Path::parse(s).unwrap()
}

fn rec(path: &str, v: Value) -> Record {
    Record::new(p(path), v)
}

/// The Device object instance of the TS TLV example (Core §7.4.3.2, "Single Object Instance").
fn device() -> Vec<Record> {
    let s = |v: &str| Value::String(v.into());
    vec![
        rec("/3/0/0", s("Open Mobile Alliance")),
        rec("/3/0/1", s("Lightweight M2M Client")),
        rec("/3/0/2", s("345000123")),
        rec("/3/0/3", s("1.0")),
        rec("/3/0/6/0", Value::Integer(1)),
        rec("/3/0/6/1", Value::Integer(5)),
        rec("/3/0/7/0", Value::Integer(3800)),
        rec("/3/0/7/1", Value::Integer(5000)),
        rec("/3/0/8/0", Value::Integer(125)),
        rec("/3/0/8/1", Value::Integer(900)),
        rec("/3/0/9", Value::Integer(100)),
        rec("/3/0/10", Value::Integer(15)),
        rec("/3/0/11/0", Value::Integer(0)),
        rec("/3/0/13", Value::Time(1367491215)),
        rec("/3/0/14", s("+02:00")),
        rec("/3/0/16", s("U")),
    ]
}

const TS_DEVICE_TLV: &str = "C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
    C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
    C8 02 09 33 34 35 30 30 30 31 32 33  C3 03 31 2E 30
    86 06 41 00 01 41 01 05  88 07 08 42 00 0E D8 42 01 13 88  87 08 41 00 7D 42 01 03 84
    C1 09 64  C1 0A 0F  83 0B 41 00 00  C4 0D 51 82 42 8F  C6 0E 2B 30 32 3A 30 30  C1 10 55";

// ---- TLV ---------------------------------------------------------------------------------------

#[test]
fn tlv_ts_device_object_example() {
    let bytes = hex(TS_DEVICE_TLV);
    assert_eq!(bytes.len(), 121);
    assert_eq!(
        decode(Tlv, &p("/3/0"), &bytes, &TestTypes).unwrap(),
        device()
    );
    assert_eq!(encode(Tlv, &p("/3/0"), &device()).unwrap(), bytes);
    // Same, wrapped in an object instance (TS "Multiple Object Instance" shape: 08 00 79 ...).
    let mut wrapped = hex("08 00 79");
    wrapped.extend_from_slice(&bytes);
    assert_eq!(
        decode(Tlv, &p("/3"), &wrapped, &TestTypes).unwrap(),
        device()
    );
    assert_eq!(
        decode(Tlv, &p("/3/0"), &wrapped, &TestTypes).unwrap(),
        device()
    );
    assert_eq!(encode(Tlv, &p("/3"), &device()).unwrap(), wrapped);
    // Legacy number, same bytes.
    assert_eq!(
        decode(TlvLegacy, &p("/3/0"), &bytes, &TestTypes).unwrap(),
        device()
    );
}

#[test]
fn tlv_untyped_values_are_flagged_opaque() {
    let recs = decode(
        Tlv,
        &p("/3/0"),
        &hex("C8 00 03 41 42 43 C1 09 64"),
        &NoTypes,
    )
    .unwrap();
    assert_eq!(
        recs[0],
        Record {
            path: p("/3/0/0"),
            value: Value::Opaque(b"ABC".to_vec()),
            type_unknown: true
        }
    );
    assert!(recs[1].type_unknown);
    assert_eq!(
        content_json(&recs)[0],
        json!({"path": "/3/0/0", "value": "QUJD", "type": "opaque"})
    );
    // A declared type the bytes do not fit (a 3-byte boolean, bad UTF-8 in a string) is kept, flagged.
    let recs = decode(Tlv, &p("/3/0"), &hex("C3 00 FF FE FD"), &TestTypes).unwrap();
    assert_eq!(recs[0].value, Value::Opaque(vec![0xFF, 0xFE, 0xFD]));
    assert!(recs[0].type_unknown);
}

#[test]
fn tlv_emqx_write_examples() {
    // Single write: {"path":"/3/0/13","type":"Integer","value":"12345"} -> PUT /3/0/13 C2 0D 30 39.
    let single = records_from_write_content(
        &p("/3/0/13"),
        &[json!({"type": "Integer", "value": "12345"})],
        &NoTypes,
        false,
    )
    .unwrap();
    assert_eq!(
        encode(Tlv, &p("/3/0/13"), &single).unwrap(),
        hex("C2 0D 30 39")
    );

    // Batch write under /3/0/ keeps the content order.
    let content = [
        json!({"path": "13", "type": "Integer", "value": "12345"}),
        json!({"path": "14", "type": "String", "value": "87x"}),
        json!({"path": "6/0", "type": "Integer", "value": "1"}),
    ];
    let recs = records_from_write_content(&p("/3/0/"), &content, &NoTypes, false).unwrap();
    let bytes = encode(Tlv, &p("/3/0"), &recs).unwrap();
    assert_eq!(bytes, hex("C2 0D 30 39 C3 0E 38 37 78 83 06 41 00 01"));
    let back = decode(Tlv, &p("/3/0"), &bytes, &TestTypes).unwrap();
    assert_eq!(back[0], rec("/3/0/13", Value::Time(12345))); // the model calls /3/0/13 a Time
    assert_eq!(back[1..], recs[1..]);

    // Multiple resource of object links.
    let content = [
        json!({"path": "0", "type": "Objlnk", "value": "1:2"}),
        json!({"path": "1", "type": "Objlnk", "value": "1:4"}),
    ];
    let recs = records_from_write_content(&p("/3/0/22"), &content, &NoTypes, false).unwrap();
    let bytes = encode(Tlv, &p("/3/0/22"), &recs).unwrap();
    assert_eq!(bytes, hex("88 16 0C 44 00 00 01 00 02 44 01 00 01 00 04"));
    assert_eq!(
        decode(Tlv, &p("/3/0/22"), &bytes, &TestTypes).unwrap(),
        recs
    );

    // Create /6 with two instances.
    let content = [
        json!({"path": "0/0", "type": "Float", "value": "1.5"}),
        json!({"path": "1/0", "type": "Float", "value": "2.5"}),
    ];
    let recs = records_from_write_content(&p("/6"), &content, &NoTypes, false).unwrap();
    let bytes = encode(Tlv, &p("/6"), &recs).unwrap();
    assert_eq!(
        bytes,
        hex("08 00 0B C8 00 08 3F F8 00 00 00 00 00 00 08 01 0B C8 00 08 40 04 00 00 00 00 00 00")
    );
    let back = decode(Tlv, &p("/6"), &bytes, &TestTypes).unwrap();
    assert_eq!(
        back.iter().map(|r| r.path.to_string()).collect::<Vec<_>>(),
        ["/6/0/0", "/6/1/0"]
    );

    // 129 stays 129 (signed 2 bytes, EMQX 4.4 behaviour, not 5.x's `81`).
    let bytes = encode(Tlv, &p("/3/0/13"), &[rec("/3/0/13", Value::Integer(129))]).unwrap();
    assert_eq!(bytes, hex("C2 0D 00 81"));
    // "12345.0" as a Float is an 8-byte double.
    let bytes = encode(Tlv, &p("/3/0/13"), &[rec("/3/0/13", Value::Float(12345.0))]).unwrap();
    assert_eq!(bytes, hex("C8 0D 08 40 C8 1C 80 00 00 00 00"));
}

#[test]
fn tlv_emqx_case11_read() {
    let mut bytes = hex("08 00 3C C8 00 14");
    bytes.extend_from_slice(b"Open Mobile Alliance");
    bytes.extend_from_slice(&hex("C8 01 16"));
    bytes.extend_from_slice(b"Lightweight M2M Client");
    bytes.extend_from_slice(&hex("C8 02 09"));
    bytes.extend_from_slice(b"345000123");
    let recs = decode(Tlv, &p("/3/0"), &bytes, &TestTypes).unwrap();
    assert_eq!(
        content_json(&recs),
        json!([
            {"path": "/3/0/0", "value": "Open Mobile Alliance"},
            {"path": "/3/0/1", "value": "Lightweight M2M Client"},
            {"path": "/3/0/2", "value": "345000123"}
        ])
    );
    assert_eq!(encode(Tlv, &p("/3"), &recs).unwrap(), bytes);
}

#[test]
fn tlv_paths_from_the_request() {
    // Single resource answering /3/0/1.
    let recs = decode(Tlv, &p("/3/0/1"), &hex("C3 01 41 42 43"), &TestTypes).unwrap();
    assert_eq!(recs, [rec("/3/0/1", Value::String("ABC".into()))]);
    // Multiple resource under /3/0 and under /3/0/7, bare resource instances under /3/0/7.
    let multi = hex("88 07 08 42 00 0E D8 42 01 13 88");
    let want = [
        rec("/3/0/7/0", Value::Integer(3800)),
        rec("/3/0/7/1", Value::Integer(5000)),
    ];
    assert_eq!(decode(Tlv, &p("/3/0"), &multi, &TestTypes).unwrap(), want);
    assert_eq!(decode(Tlv, &p("/3/0/7"), &multi, &TestTypes).unwrap(), want);
    assert_eq!(
        decode(
            Tlv,
            &p("/3/0/7"),
            &hex("42 00 0E D8 42 01 13 88"),
            &TestTypes
        )
        .unwrap(),
        want
    );
    assert_eq!(
        decode(Tlv, &p("/3/0/7/1"), &hex("42 01 13 88"), &TestTypes).unwrap(),
        want[1..]
    );
    // Bare resources answering an object read: instance 0.
    assert_eq!(
        decode(Tlv, &p("/3"), &hex("C1 09 64"), &TestTypes).unwrap(),
        [rec("/3/0/9", Value::Integer(100))]
    );
    // Two object instances: every path gets its leading slash (EMQX drops it; we don't).
    let two = decode(
        Tlv,
        &p("/3"),
        &hex("08 00 03 C1 09 64 08 01 03 C1 09 32"),
        &TestTypes,
    )
    .unwrap();
    assert_eq!(
        content_json(&two),
        json!([{"path": "/3/0/9", "value": 100}, {"path": "/3/1/9", "value": 50}])
    );
    // An answer for another resource than the one asked for is an error.
    assert!(decode(Tlv, &p("/3/0/1"), &hex("C3 02 41 42 43"), &TestTypes).is_err());
    assert!(decode(Tlv, &p("/3/1"), &hex("08 00 03 C1 09 64"), &TestTypes).is_err());
}

#[test]
fn tlv_encode_shapes() {
    // Resource instance write.
    assert_eq!(
        encode(Tlv, &p("/3/0/7/1"), &[rec("/3/0/7/1", Value::Integer(5))]).unwrap(),
        hex("41 01 05")
    );
    // Every type.
    let recs = [
        rec("/9/0/0", Value::Boolean(true)),
        rec("/9/0/1", Value::UnsignedInteger(300)),
        rec("/9/0/2", Value::Objlnk(3, 0)),
        rec("/9/0/3", Value::Opaque(vec![])),
        rec("/9/0/4", Value::Time(-1)),
    ];
    assert_eq!(
        encode(Tlv, &p("/9/0"), &recs).unwrap(),
        hex("C1 00 01 C2 01 01 2C C4 02 00 03 00 00 C0 03 C1 04 FF")
    );
    // Empty object instance for create.
    assert_eq!(
        encode(Tlv, &p("/9"), &[rec("/9/4", Value::None)]).unwrap(),
        hex("00 04")
    );
    // A record not under the base, or a value at an instance path, is refused.
    assert!(encode(Tlv, &p("/3/0"), &[rec("/4/0/1", Value::Integer(1))]).is_err());
    assert!(encode(Tlv, &p("/3"), &[rec("/3/0", Value::Integer(1))]).is_err());
    assert!(encode(
        Tlv,
        &p("/3/0/7"),
        &[
            rec("/3/0/7", Value::Integer(1)),
            rec("/3/0/7/1", Value::Integer(1))
        ]
    )
    .is_err());
    assert!(encode(Tlv, &Path::ROOT, &device()).is_err());
}

// ---- SenML ---------------------------------------------------------------------------------------

const TS_DEVICE_SENML_JSON: &str = concat!(
    r#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"1","vs":"Lightweight M2M Client"},"#,
    r#"{"n":"2","vs":"345000123"},{"n":"3","vs":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},"#,
    r#"{"n":"7/0","v":3800},{"n":"7/1","v":5000},{"n":"8/0","v":125},{"n":"8/1","v":900},"#,
    r#"{"n":"9","v":100},{"n":"10","v":15},{"n":"11/0","v":0},{"n":"13","v":1367491215},"#,
    r#"{"n":"14","vs":"+02:00"},{"n":"16","vs":"U"}]"#
);

/// SenML CBOR of the same pack (generated with Python cbor2 as an independent encoder).
const TS_DEVICE_SENML_CBOR: &str = "90a321652f332f302f00613003744f70656e204d6f62696c6520416c6c69616e6365a200613103764c69676874776569676874204d324d20436c69656e74a20061320369333435303030313233a20061330363312e30a20063362f300201a20063362f310205a20063372f3002190ed8a20063372f3102191388a20063382f3002187da20063382f3102190384a2006139021864a200623130020fa2006431312f300200a200623133021a5182428fa20062313403662b30323a3030a200623136036155";

#[test]
fn senml_json_ts_device_example() {
    assert_eq!(
        decode(
            SenmlJson,
            &p("/3/0"),
            TS_DEVICE_SENML_JSON.as_bytes(),
            &TestTypes
        )
        .unwrap(),
        device()
    );
    assert_eq!(
        String::from_utf8(encode(SenmlJson, &p("/3/0"), &device()).unwrap()).unwrap(),
        TS_DEVICE_SENML_JSON
    );
}

#[test]
fn senml_cbor_device_example() {
    let bytes = hex(TS_DEVICE_SENML_CBOR);
    assert_eq!(
        decode(SenmlCbor, &p("/3/0"), &bytes, &TestTypes).unwrap(),
        device()
    );
    assert_eq!(encode(SenmlCbor, &p("/3/0"), &device()).unwrap(), bytes);
}

#[test]
fn senml_names_values_and_times() {
    // bn sticks until replaced; bt/t accepted; vlo, vd, vb; untyped integers stay Integer.
    let pack = r#"[{"bn":"/3/0/","bt":1.5e9,"n":"7/0","v":3800,"t":1},{"n":"7/1","v":5000.0},
        {"bn":"/1/0/","n":"1","v":86400},{"n":"6","vb":true},{"bn":"/9/0/","n":"5","vd":"AQID"},
        {"n":"7","vlo":"3:0"},{"n":"2","vs":"x"},{"bn":"","n":"/5/0/1","vs":"pkg"}]"#;
    let recs = decode(SenmlJson, &Path::ROOT, pack.as_bytes(), &NoTypes).unwrap();
    assert_eq!(
        recs,
        [
            rec("/3/0/7/0", Value::Integer(3800)),
            rec("/3/0/7/1", Value::Float(5000.0)),
            rec("/1/0/1", Value::Integer(86400)),
            rec("/1/0/6", Value::Boolean(true)),
            rec("/9/0/5", Value::Opaque(vec![1, 2, 3])),
            rec("/9/0/7", Value::Objlnk(3, 0)),
            rec("/9/0/2", Value::String("x".into())),
            rec("/5/0/1", Value::String("pkg".into())),
        ]
    );
    // The model refines numbers: 5000.0 of an Integer resource is the integer 5000.
    let recs = decode(SenmlJson, &Path::ROOT, pack.as_bytes(), &TestTypes).unwrap();
    assert_eq!(recs[1].value, Value::Integer(5000));
    // Single resource: bn is the full path, no n.
    let one = [rec("/3/0/0", Value::String("OMA".into()))];
    assert_eq!(
        encode(SenmlJson, &p("/3/0/0"), &one).unwrap(),
        br#"[{"bn":"/3/0/0","vs":"OMA"}]"#
    );
    // Anjay's SenML CBOR fixture: [{0: "/13/26/1", 2: 42}], and the same with an indefinite map.
    let recs = decode(
        SenmlCbor,
        &p("/13/26/1"),
        &hex("81 A2 00 68 2F31332F32362F31 02 18 2A"),
        &NoTypes,
    )
    .unwrap();
    assert_eq!(recs, [rec("/13/26/1", Value::Integer(42))]);
    let recs = decode(
        SenmlCbor,
        &p("/13/26/1"),
        &hex("9F BF 00 68 2F31332F32362F31 02 18 2A FF FF"),
        &NoTypes,
    )
    .unwrap();
    assert_eq!(recs, [rec("/13/26/1", Value::Integer(42))]);
    // Two values in one record, a non-path name, a bad objlnk: errors.
    assert!(decode(
        SenmlJson,
        &Path::ROOT,
        br#"[{"n":"/3/0/1","v":1,"vs":"a"}]"#,
        &NoTypes
    )
    .is_err());
    assert!(decode(
        SenmlJson,
        &Path::ROOT,
        br#"[{"n":"urn:dev:1","v":1}]"#,
        &NoTypes
    )
    .is_err());
    assert!(decode(
        SenmlJson,
        &Path::ROOT,
        br#"[{"n":"/3/0/1","vlo":"3"}]"#,
        &NoTypes
    )
    .is_err());
    assert!(decode(SenmlJson, &Path::ROOT, br#"[{"v":1}]"#, &NoTypes).is_err());
    assert!(decode(
        SenmlJson,
        &Path::ROOT,
        br#"[{"bn":"/9/0/","n":"/2","v":1}]"#,
        &NoTypes
    )
    .is_err());
}

#[test]
fn senml_composite_read_request() {
    let paths = [p("/3/0/1"), p("/1/0"), p("/5")];
    let body = encode_paths(SenmlJson, &paths).unwrap();
    assert_eq!(body, br#"[{"n":"/3/0/1"},{"n":"/1/0"},{"n":"/5"}]"#);
    let body = encode_paths(SenmlCbor, &paths).unwrap();
    assert_eq!(
        body,
        hex("83 A1 00 66 2F332F302F31 A1 00 64 2F312F30 A1 00 62 2F35")
    );
    // Composite records (root base) come out with absolute names and no bn.
    let recs = [
        rec("/3/0/1", Value::String("a".into())),
        rec("/1/0/1", Value::Integer(300)),
    ];
    let body = encode(SenmlJson, &Path::ROOT, &recs).unwrap();
    assert_eq!(body, br#"[{"n":"/3/0/1","vs":"a"},{"n":"/1/0/1","v":300}]"#);
    assert_eq!(
        decode(SenmlJson, &Path::ROOT, &body, &NoTypes).unwrap(),
        recs
    );
    let body = encode(SenmlCbor, &Path::ROOT, &recs).unwrap();
    assert_eq!(
        decode(SenmlCbor, &Path::ROOT, &body, &NoTypes).unwrap(),
        recs
    );
}

// ---- LwM2M CBOR -------------------------------------------------------------------------------------

#[test]
fn lwm2m_cbor_fixtures() {
    let one = [rec("/13/26/1", Value::Integer(42))];
    for fixture in [
        "A1 83 0D 18 1A 01 18 2A",             // {[13, 26, 1]: 42}
        "BF 9F 0D 18 1A 01 FF 18 2A FF",       // same, indefinite
        "A1 0D A1 18 1A A1 01 18 2A",          // {13: {26: {1: 42}}}
        "A1 81 0D A1 81 18 1A A1 81 01 18 2A", // {[13]: {[26]: {[1]: 42}}}
    ] {
        assert_eq!(
            decode(LwM2mCbor, &p("/13/26/1"), &hex(fixture), &NoTypes).unwrap(),
            one,
            "{fixture}"
        );
    }
    assert_eq!(
        encode(LwM2mCbor, &p("/13/26/1"), &one).unwrap(),
        hex("A1 83 0D 18 1A 01 18 2A")
    );
    let two = [
        rec("/13/26/1", Value::Integer(42)),
        rec("/13/26/2", Value::Integer(21)),
    ];
    for fixture in [
        "A1 82 0D 18 1A A2 01 18 2A 02 15",
        "A2 83 0D 18 1A 01 18 2A 83 0D 18 1A 02 15",
        "A2 82 0D 18 1A A1 01 18 2A 83 0D 18 1A 02 15",
    ] {
        assert_eq!(
            decode(LwM2mCbor, &p("/13/26"), &hex(fixture), &NoTypes).unwrap(),
            two,
            "{fixture}"
        );
    }
    assert_eq!(
        encode(LwM2mCbor, &p("/13/26"), &two).unwrap(),
        hex("A1 82 0D 18 1A A2 01 18 2A 02 15")
    );
    // Null and a decimal fraction (tag 4: 45e-1).
    let recs = decode(
        LwM2mCbor,
        &p("/13/26/1"),
        &hex("A1 83 0D 18 1A 01 A2 02 F6 03 C4 82 20 18 2D"),
        &NoTypes,
    )
    .unwrap();
    assert_eq!(
        recs,
        [
            rec("/13/26/1/2", Value::None),
            rec("/13/26/1/3", Value::Float(4.5))
        ]
    );
    // The device object, checked against a Python cbor2 encoding of {[3, 0]: {...}}.
    let want = hex("a1820300ad00744f70656e204d6f62696c6520416c6c69616e636501764c69676874776569676874204d324d20436c69656e7402693334353030303132330363312e3006a20001010507a200190ed80119138808a200187d011903840918640a0f0ba100000d1a5182428f0e662b30323a3030106155");
    assert_eq!(encode(LwM2mCbor, &p("/3/0"), &device()).unwrap(), want);
    assert_eq!(
        decode(LwM2mCbor, &p("/3/0"), &want, &TestTypes).unwrap(),
        device()
    );
    // Values above resource level only; ids < 65535; paths of at most 4 ids.
    assert!(decode(LwM2mCbor, &p("/3"), &hex("A1 82 03 00 01"), &NoTypes).is_err());
    assert!(decode(
        LwM2mCbor,
        &p("/3"),
        &hex("A1 84 03 00 01 02 A1 00 01"),
        &NoTypes
    )
    .is_err());
    assert!(decode(
        LwM2mCbor,
        &p("/3"),
        &hex("A1 83 03 00 19 FF FF 01"),
        &NoTypes
    )
    .is_err());
    assert!(decode(LwM2mCbor, &p("/3"), &hex("A1 80 01"), &NoTypes).is_err());
}

// ---- OMA JSON, text, opaque, CBOR --------------------------------------------------------------------

#[test]
fn oma_json() {
    let doc = br#"{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"9","v":95},
        {"n":"6/0","v":1},{"n":"13","v":1367491215,"t":0},{"n":"22/0","ov":"1:2"},{"n":"5"}]}"#;
    let recs = decode(Json, &p("/3/0"), doc, &TestTypes).unwrap();
    assert_eq!(
        recs,
        [
            rec("/3/0/0", Value::String("Open Mobile Alliance".into())),
            rec("/3/0/9", Value::Integer(95)),
            rec("/3/0/6/0", Value::Integer(1)),
            rec("/3/0/13", Value::Time(1367491215)),
            rec("/3/0/22/0", Value::Objlnk(1, 2)),
            rec("/3/0/5", Value::None),
        ]
    );
    // EMQX's joining: "/3/0" + "/1" is /3/0/1; no bn: relative to the request path.
    let recs = decode(
        JsonLegacy,
        &p("/3/0"),
        br#"{"bn":"/3/0","e":[{"n":"/1","bv":true}]}"#,
        &NoTypes,
    )
    .unwrap();
    assert_eq!(recs, [rec("/3/0/1", Value::Boolean(true))]);
    let recs = decode(
        Json,
        &p("/3/0"),
        br#"{"e":[{"n":"1","sv":"x"},{"n":"/4/0/1","v":1.5}]}"#,
        &NoTypes,
    )
    .unwrap();
    assert_eq!(
        recs,
        [
            rec("/3/0/1", Value::String("x".into())),
            rec("/4/0/1", Value::Float(1.5))
        ]
    );
    // Encode.
    let recs = [
        rec("/3/0/0", Value::String("OMA".into())),
        rec("/3/0/7/0", Value::Integer(3800)),
        rec("/3/0/22/0", Value::Objlnk(1, 2)),
    ];
    let body = encode(Json, &p("/3/0"), &recs).unwrap();
    assert_eq!(body, br#"{"bn":"/3/0/","e":[{"n":"0","sv":"OMA"},{"n":"7/0","v":3800},{"n":"22/0","ov":"1:2"}]}"#);
    assert_eq!(decode(Json, &p("/3/0"), &body, &TestTypes).unwrap(), recs);
    assert!(decode(
        Json,
        &p("/3/0"),
        br#"{"e":[{"n":"1","v":1,"bv":true}]}"#,
        &NoTypes
    )
    .is_err());
    assert!(decode(Json, &p("/3/0"), br#"[]"#, &NoTypes).is_err());
}

#[test]
fn text_plain() {
    let t = |path: &str, body: &str| decode(Text, &p(path), body.as_bytes(), &TestTypes);
    assert_eq!(
        t("/3/0/9", "95").unwrap(),
        [rec("/3/0/9", Value::Integer(95))]
    );
    assert_eq!(
        t("/3/0/9", "9.5").unwrap(),
        [rec("/3/0/9", Value::Float(9.5))]
    );
    assert_eq!(
        t("/3/0/13", "1367491215").unwrap(),
        [rec("/3/0/13", Value::Time(1367491215))]
    );
    assert_eq!(
        t("/3/0/0", " OMA ").unwrap(),
        [rec("/3/0/0", Value::String(" OMA ".into()))]
    );
    assert_eq!(
        t("/3/0/22/0", "3:0").unwrap(),
        [rec("/3/0/22/0", Value::Objlnk(3, 0))]
    );
    assert_eq!(t("/9/0/4", "true").unwrap()[0].value, Value::Boolean(true));
    assert_eq!(t("/9/0/4", "0").unwrap()[0].value, Value::Boolean(false));
    assert_eq!(
        t("/9/0/5", "AQID").unwrap()[0].value,
        Value::Opaque(vec![1, 2, 3])
    );
    assert_eq!(
        t("/9/0/3", "-1.25e3").unwrap()[0].value,
        Value::Float(-1250.0)
    );
    assert_eq!(
        t("/9/0/2", "18446744073709551615").unwrap()[0].value,
        Value::UnsignedInteger(u64::MAX)
    );
    assert!(t("/3/0/9", "abc").is_err());
    assert!(t("/9/0/3", "inf").is_err());
    assert!(t("/9/0/4", "yes").is_err());
    assert!(t("/3/0", "95").is_err());
    // Unknown resource: the text as a string; non-UTF-8: flagged opaque.
    assert_eq!(
        decode(Text, &p("/3/0/99"), b"hello", &TestTypes).unwrap(),
        [rec("/3/0/99", Value::String("hello".into()))]
    );
    let r = decode(Text, &p("/3/0/0"), &[0xFF, 0x00], &TestTypes).unwrap();
    assert_eq!(
        r,
        [Record {
            path: p("/3/0/0"),
            value: Value::Opaque(vec![0xFF, 0]),
            type_unknown: true
        }]
    );
    // Encode.
    assert_eq!(
        encode(Text, &p("/3/0/13"), &[rec("/3/0/13", Value::Float(1.0))]).unwrap(),
        b"1.0"
    );
    assert_eq!(
        encode(Text, &p("/9/0/4"), &[rec("/9/0/4", Value::Boolean(true))]).unwrap(),
        b"1"
    );
    assert!(encode(Text, &p("/3/0"), &device()).is_err());
}

#[test]
fn opaque_and_single_cbor() {
    let r = decode(Opaque, &p("/5/0/0"), &[0, 1, 2], &NoTypes).unwrap();
    assert_eq!(r, [rec("/5/0/0", Value::Opaque(vec![0, 1, 2]))]);
    assert_eq!(encode(Opaque, &p("/5/0/0"), &r).unwrap(), [0, 1, 2]);
    assert!(encode(Opaque, &p("/5/0/0"), &[rec("/5/0/0", Value::Integer(1))]).is_err());
    assert_eq!(
        decode(Cbor, &p("/3/0/9"), &hex("18 64"), &TestTypes).unwrap(),
        [rec("/3/0/9", Value::Integer(100))]
    );
    assert_eq!(
        decode(Cbor, &p("/3/0/13"), &hex("C1 1A 51 82 42 8F"), &TestTypes).unwrap()[0].value,
        Value::Time(1367491215)
    );
    assert_eq!(
        encode(
            Cbor,
            &p("/3/0/0"),
            &[rec("/3/0/0", Value::String("a".into()))]
        )
        .unwrap(),
        hex("61 61")
    );
}

// ---- hostile inputs -------------------------------------------------------------------------------

#[test]
fn hostile_tlv() {
    let d = |b: &str| decode(Tlv, &p("/3/0"), &hex(b), &TestTypes);
    assert_eq!(d("C8 00 14 41 42 43"), Err(CodecError::Truncated)); // length beyond payload
    assert_eq!(d("D8 00 FF FF FF 00"), Err(CodecError::Truncated)); // 24-bit length, 1 byte present
    assert_eq!(d("F0 00"), Err(CodecError::Truncated)); // 16-bit id cut short
    assert_eq!(d("C8"), Err(CodecError::Truncated));
    assert!(d("08 00 06 08 01 03 C1 00 01").is_err()); // object instance inside object instance
    assert!(d("88 06 03 C1 00 01").is_err()); // resource inside a multiple resource
    assert!(d("88 06 05 86 00 02 41 00").is_err()); // multiple resource inside a multiple resource
    assert!(d("08 00 03 C1 00 01 C1 01 01").is_err()); // instance mixed with a resource
    assert!(d("41 00 01").is_err()); // resource instance answering an instance read
    assert!(decode(Tlv, &p("/3"), &hex("28 FF FF 00"), &TestTypes).is_err()); // instance id 65535
    assert!(decode(Tlv, &Path::ROOT, &hex("C1 00 01"), &TestTypes).is_err());
    // A legitimate 24-bit length.
    let big = rec("/9/0/5", Value::Opaque(vec![7; 70_000]));
    let bytes = encode(Tlv, &p("/9/0/5"), std::slice::from_ref(&big)).unwrap();
    assert_eq!(&bytes[..5], &hex("D8 05 01 11 70")[..]);
    assert!(decode(Tlv, &p("/9/0/5"), &bytes, &TestTypes).unwrap() == [big]);
    // Larger than the 24-bit length field: an encode error, not a wrapped length.
    let huge = rec("/5/0/0", Value::Opaque(vec![0; 1 << 24]));
    assert!(matches!(
        encode(Tlv, &p("/5/0/0"), &[huge]),
        Err(CodecError::BadValue(_))
    ));
}

#[test]
fn hostile_cbor_nesting_and_lengths() {
    for cf in [SenmlCbor, LwM2mCbor, Cbor] {
        for lead in [0x81u8, 0x9F, 0xA1, 0xC6] {
            let mut deep = vec![lead; 10_000];
            deep.push(0);
            assert!(
                decode(cf, &p("/3/0/1"), &deep, &NoTypes).is_err(),
                "{cf:?} {lead:02X}"
            );
        }
        // An array claiming 2^32 elements, a string claiming 2^64 bytes.
        assert!(decode(cf, &p("/3/0/1"), &hex("9A FF FF FF FF 00"), &NoTypes).is_err());
        assert!(decode(
            cf,
            &p("/3/0/1"),
            &hex("7B FF FF FF FF FF FF FF FF 00"),
            &NoTypes
        )
        .is_err());
        // Invalid UTF-8 in a text string.
        assert!(decode(cf, &p("/3/0/1"), &hex("81 A1 00 62 C3 28"), &NoTypes).is_err());
    }
    assert_eq!(
        decode(SenmlCbor, &p("/3/0/1"), &[0x81; 10_000], &NoTypes),
        Err(CodecError::TooDeep)
    );
}

#[test]
fn hostile_senml_json() {
    // Deep JSON nesting hits serde_json's recursion limit, not the stack.
    let deep = "[".repeat(100_000);
    assert!(decode(SenmlJson, &Path::ROOT, deep.as_bytes(), &NoTypes).is_err());
    let deep_field = format!(r#"[{{"n":"/3/0/1","x":{}}}]"#, "[".repeat(100_000));
    assert!(decode(SenmlJson, &Path::ROOT, deep_field.as_bytes(), &NoTypes).is_err());
    // Invalid UTF-8.
    assert!(decode(
        SenmlJson,
        &Path::ROOT,
        b"[{\"n\":\"/3/0/1\",\"vs\":\"\xFF\"}]",
        &NoTypes
    )
    .is_err());
    assert!(decode(
        Json,
        &Path::ROOT,
        b"{\"e\":[{\"n\":\"/3/0/1\",\"sv\":\"\xFF\"}]}",
        &NoTypes
    )
    .is_err());
    // A huge pack costs what its bytes cost: 200k records decode, 200k empty ones fail fast.
    let big = format!("[{}]", vec![r#"{"n":"/3/0/1","v":1}"#; 200_000].join(","));
    assert_eq!(
        decode(SenmlJson, &Path::ROOT, big.as_bytes(), &NoTypes)
            .unwrap()
            .len(),
        200_000
    );
    let empty = format!("[{}]", vec!["{}"; 200_000].join(","));
    assert!(decode(SenmlJson, &Path::ROOT, empty.as_bytes(), &NoTypes).is_err());
}

// ---- proptest ------------------------------------------------------------------------------------------

fn value_of(ty: ResourceType) -> BoxedStrategy<Value> {
    use ResourceType as T;
    let finite = prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO;
    match ty {
        T::String => ".{0,40}".prop_map(Value::String).boxed(),
        T::Corelnk => "[ -~]{0,40}".prop_map(Value::Corelnk).boxed(),
        T::Integer => any::<i64>().prop_map(Value::Integer).boxed(),
        T::Time => any::<i64>().prop_map(Value::Time).boxed(),
        T::UnsignedInteger => any::<u64>().prop_map(Value::UnsignedInteger).boxed(),
        T::Float => finite.prop_map(Value::Float).boxed(),
        T::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        T::Opaque => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(Value::Opaque)
            .boxed(),
        T::Objlnk => (any::<u16>(), any::<u16>())
            .prop_map(|(o, i)| Value::Objlnk(o, i))
            .boxed(),
        T::None => Just(Value::None).boxed(),
    }
}

/// Records of one instance of object 9999: single and multiple resources, every type.
fn instance_records() -> impl Strategy<Value = Vec<Record>> {
    prop::collection::btree_map(
        0u16..300,
        prop::option::of(prop::collection::btree_set(0u16..300, 1..4)),
        1..10,
    )
    .prop_flat_map(|m| {
        let mut paths = Vec::new();
        for (r, ris) in m {
            match ris {
                None => paths.push(Path::from_ids(&[9999, 0, r]).unwrap()),
                Some(ris) => paths.extend(
                    ris.into_iter()
                        .map(|ri| Path::from_ids(&[9999, 0, r, ri]).unwrap()),
                ),
            }
        }
        let values: Vec<BoxedStrategy<Value>> = paths
            .iter()
            .map(|p| value_of(generic_type(p.resource().unwrap())))
            .collect();
        (Just(paths), values)
    })
    .prop_map(|(paths, values)| {
        paths
            .into_iter()
            .zip(values)
            .map(|(p, v)| Record::new(p, v))
            .collect()
    })
}

const MULTI_FORMATS: [ContentFormat; 5] = [Tlv, SenmlJson, SenmlCbor, LwM2mCbor, Json];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_multi_formats(recs in instance_records()) {
        let base = p("/9999/0");
        for cf in MULTI_FORMATS {
            let bytes = encode(cf, &base, &recs).unwrap();
            let back = decode(cf, &base, &bytes, &TestTypes).unwrap();
            prop_assert_eq!(&recs, &back, "{:?}", cf);
        }
    }

    #[test]
    fn round_trip_single_value_formats(v in (0u16..9).prop_flat_map(|r| value_of(generic_type(r)).prop_map(move |v| (r, v)))) {
        let (res, value) = v;
        let path = Path::from_ids(&[9999, 0, res]).unwrap();
        let recs = [Record::new(path, value.clone())];
        for cf in [Text, Cbor, Tlv, SenmlJson, SenmlCbor, LwM2mCbor, Json] {
            let bytes = encode(cf, &path, &recs).unwrap();
            let back = decode(cf, &path, &bytes, &TestTypes).unwrap();
            prop_assert_eq!(&recs[..], &back[..], "{:?}", cf);
        }
        if matches!(value, Value::Opaque(_)) {
            let bytes = encode(Opaque, &path, &recs).unwrap();
            prop_assert_eq!(decode(Opaque, &path, &bytes, &TestTypes).unwrap(), recs.to_vec());
        }
    }

    #[test]
    fn round_trip_object_level_tlv(a in instance_records(), b in instance_records()) {
        let mut recs = a;
        recs.extend(b.into_iter().map(|r| {
            let mut ids = r.path.ids().to_vec();
            ids[1] = 1;
            Record::new(Path::from_ids(&ids).unwrap(), r.value)
        }));
        let base = p("/9999");
        for cf in [Tlv, SenmlCbor, LwM2mCbor] {
            let bytes = encode(cf, &base, &recs).unwrap();
            prop_assert_eq!(decode(cf, &base, &bytes, &TestTypes).unwrap(), recs.clone());
        }
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), depth in 0usize..5) {
        let req = Path::from_ids(&[3, 0, 7, 1][..depth.min(4)]).unwrap();
        for cf in ContentFormat::ALL {
            let _ = decode(cf, &req, &bytes, &NoTypes);
            let _ = decode(cf, &req, &bytes, &TestTypes);
        }
    }

    #[test]
    fn mutated_payloads_never_panic(recs in instance_records(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let base = p("/9999/0");
        for cf in MULTI_FORMATS {
            let mut bytes = encode(cf, &base, &recs).unwrap();
            for (i, b) in &flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b;
            }
            let _ = decode(cf, &base, &bytes, &TestTypes);
            let _ = decode(cf, &base, &bytes, &NoTypes);
            let n = cut.index(bytes.len());
            let _ = decode(cf, &base, &bytes[..n], &TestTypes);
        }
    }
}
