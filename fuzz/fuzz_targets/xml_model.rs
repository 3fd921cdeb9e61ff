//! The OMA DDF XML loader (`ObjectRegistry::load_dir` reads each file and hands it to
//! `model::parse_xml`). Parsed definitions are inserted into a registry and queried.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::lwm2m::model::{parse_xml, ObjectRegistry};
use lwm2m_gateway::lwm2m::ResourceTypes;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(defs) = parse_xml(text) else {
        return;
    };
    let mut reg = ObjectRegistry::new();
    let ids: Vec<(u16, Vec<u16>)> = defs
        .iter()
        .map(|d| (d.id, d.resources.keys().copied().collect()))
        .collect();
    for d in defs {
        reg.insert(d);
    }
    for (obj, res) in ids {
        assert!(reg.has_object(obj));
        for r in res {
            let _ = reg.resource_type(obj, r);
            let _ = reg.is_multiple(obj, r);
        }
        let _ = reg.versions(obj).count();
    }
});
