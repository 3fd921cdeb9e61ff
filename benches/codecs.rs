//! Codec throughput on a realistic payload: a Device object instance (/3/0) read, 15 resources
//! including the multi-instance 6, 7 and 8, decoded with the model's types and encoded back.
//! Text is measured on one resource, since that is all the format can carry.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use lwm2m_gateway::lwm2m::codec::{decode, encode};
use lwm2m_gateway::lwm2m::json::write_content_json;
use lwm2m_gateway::lwm2m::{ContentFormat, Path, Record, ResourceType, ResourceTypes, Value};

struct DeviceTypes;
impl ResourceTypes for DeviceTypes {
    fn resource_type(&self, _object: u16, resource: u16) -> Option<ResourceType> {
        Some(match resource {
            0..=3 | 14..=19 => ResourceType::String,
            6..=11 | 20 | 21 => ResourceType::Integer,
            13 => ResourceType::Time,
            _ => return None,
        })
    }
    fn is_multiple(&self, _object: u16, resource: u16) -> Option<bool> {
        Some(matches!(resource, 6 | 7 | 8 | 11))
    }
}

fn device() -> Vec<Record> {
    let r = |p: &str, v: Value| Record::new(Path::parse(p).unwrap(), v);
    let s = |v: &str| Value::String(v.into());
    vec![
        r("/3/0/0", s("Open Mobile Alliance")),
        r("/3/0/1", s("Lightweight M2M Client")),
        r("/3/0/2", s("345000123")),
        r("/3/0/3", s("1.0")),
        r("/3/0/6/0", Value::Integer(1)),
        r("/3/0/6/1", Value::Integer(5)),
        r("/3/0/7/0", Value::Integer(3800)),
        r("/3/0/7/1", Value::Integer(5000)),
        r("/3/0/8/0", Value::Integer(125)),
        r("/3/0/8/1", Value::Integer(900)),
        r("/3/0/9", Value::Integer(100)),
        r("/3/0/10", Value::Integer(15)),
        r("/3/0/11/0", Value::Integer(0)),
        r("/3/0/13", Value::Time(1367491215)),
        r("/3/0/14", s("+02:00")),
        r("/3/0/15", s("Europe/Berlin")),
        r("/3/0/16", s("U")),
        r("/3/0/17", s("Demo Device")),
        r("/3/0/18", s("1.0.3")),
        r("/3/0/19", s("2.1.0")),
        r("/3/0/20", Value::Integer(1)),
        r("/3/0/21", Value::Integer(256000)),
    ]
}

fn codecs(c: &mut Criterion) {
    let base = Path::parse("/3/0").unwrap();
    let recs = device();
    for cf in [
        ContentFormat::Tlv,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::LwM2mCbor,
        ContentFormat::Json,
    ] {
        let bytes = encode(cf, &base, &recs).unwrap();
        let mut g = c.benchmark_group(format!("device_3_0/{}", cf.name()));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("decode", |b| {
            b.iter(|| decode(cf, black_box(&base), black_box(&bytes), &DeviceTypes).unwrap())
        });
        g.bench_function("encode", |b| {
            b.iter(|| encode(cf, black_box(&base), black_box(&recs)).unwrap())
        });
        g.finish();
    }

    let path = Path::parse("/3/0/13").unwrap();
    let one = [Record::new(path, Value::Time(1367491215))];
    let text = encode(ContentFormat::Text, &path, &one).unwrap();
    let mut g = c.benchmark_group("single_3_0_13/text");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            decode(
                ContentFormat::Text,
                black_box(&path),
                black_box(&text),
                &DeviceTypes,
            )
            .unwrap()
        })
    });
    g.bench_function("encode", |b| {
        b.iter(|| encode(ContentFormat::Text, black_box(&path), black_box(&one)).unwrap())
    });
    g.finish();

    // The MQTT side of a read: records -> `content` JSON.
    let mut g = c.benchmark_group("device_3_0/mqtt_content_json");
    g.bench_function("write_content_json", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            write_content_json(&mut out, black_box(&recs));
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
