//! Link-format (RFC 6690) as devices send it: `link_format::parse`, `parse_registration` (Register
//! and Update payloads) and `discover_links` (Discover responses). Also checks that what `parse`
//! accepts survives `emit` -> `parse` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::lwm2m::link_format;

fuzz_target!(|data: &[u8]| {
    // The shard hands Discover payloads over lossily and rejects non-UTF-8 registrations.
    let lossy = String::from_utf8_lossy(data);
    let _ = link_format::discover_links(&lossy);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reg) = link_format::parse_registration(text) {
        for p in reg.objects() {
            if let Some(o) = p.object() {
                let _ = reg.version(o);
            }
        }
    }
    if let Ok(links) = link_format::parse(text) {
        let emitted = link_format::emit(&links);
        let again = link_format::parse(&emitted)
            .unwrap_or_else(|e| panic!("emit output does not parse ({e}): {emitted:?}"));
        assert_eq!(
            links, again,
            "parse(emit(links)) != links; emitted {emitted:?}"
        );
    }
});
