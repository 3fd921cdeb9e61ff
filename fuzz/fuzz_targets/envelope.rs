//! `core::command::parse`: the JSON of an MQTT downlink command. A parsed command is
//! also built into a CoAP request (`core::request::build`, which runs the encoders on MQTT-supplied
//! values) for three kinds of device, as the shard does, and the request must encode to a
//! well-formed datagram.
#![no_main]

use fuzz_common::{check_datagram, registry};
use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::core::command;
use lwm2m_gateway::core::request::{self, DeviceContext};
use lwm2m_gateway::core::settings::WriteEncoding;

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = command::parse(data) else {
        return;
    };
    let versions: [(u16, Box<str>); 1] = [(3, "1.1".into())];
    let types = registry().types_for(&versions);
    let devices: [(&str, &[u16]); 3] = [
        ("1.0", &[]),
        ("1.1", &[110, 112, 11542]),
        ("1.2", &[0, 42, 60, 11542, 11543, 11544]),
    ];
    let encodings = [WriteEncoding::Auto, WriteEncoding::Tlv];
    for ((version, announced), write_encoding) in
        devices.into_iter().zip(encodings.into_iter().cycle())
    {
        let dev = DeviceContext {
            version,
            announced_formats: announced,
            types: &types,
            write_encoding,
        };
        if let Ok(req) = request::build(&cmd, &dev) {
            let mut buf = Vec::new();
            req.encode(&mut buf, 0x1234, &[1, 2, 3, 4, 5, 6, 7, 8], "/");
            check_datagram(&buf);
            req.encode(&mut buf, 7, &[], "/lwm2m");
            check_datagram(&buf);
        }
    }
});
