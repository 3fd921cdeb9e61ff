//! `coap::MessageView::parse` on raw datagrams, every accessor of an accepted view, and
//! `gateway::router::route` (the event loop's first look at every datagram).
//!
//! CoAP's option encoding is unique (extended deltas/lengths start where the nibble range ends),
//! so an accepted message re-encoded with `MessageBuilder` from the view's fields must give back
//! the same bytes. Routing must name an existing worker, and its stateless replies must parse.
#![no_main]

use std::net::SocketAddr;

use fuzz_common::check_datagram;
use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::coap::{self, MessageBuilder, MessageView};
use lwm2m_gateway::core::router::{route, Route};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = MessageView::parse(data) {
        assert_eq!(v.bytes(), data);
        let (t, c, mid, token) = (v.msg_type(), v.code(), v.message_id(), v.token());
        assert!(token.len() <= 8);
        let _ = coap::code::to_string(c);
        let _ = coap::code::name(c);
        let mut rebuilt = Vec::new();
        let mut b = MessageBuilder::new(&mut rebuilt, t, c, mid, token);
        let mut last = 0u16;
        for (n, val) in v.options() {
            assert!(n >= last, "options out of order");
            last = n;
            assert!(v.option_values(n).next().is_some());
            assert!(v.first_option(n).is_some());
            let _ = v.uint_option(n);
            let _ = coap::decode_uint(val);
            b = b.option(n, val);
        }
        let _ = v.content_format();
        let _ = v.unknown_critical_option();
        b.payload(v.payload());
        assert_eq!(
            rebuilt, data,
            "re-encoding the view does not give the datagram back"
        );
    }
    let peer: SocketAddr = "127.0.0.1:5683".parse().unwrap();
    let hint = data.last().copied().unwrap_or(0) as usize;
    for workers in [1usize, 2, 7] {
        match route(data, peer, workers, |_| Some(hint % 9), 0x4242) {
            Route::Worker(w) | Route::Register(w) => {
                assert!(w < workers, "routed to worker {w} of {workers}")
            }
            Route::Reply(bytes) | Route::Pong(bytes) => check_datagram(&bytes),
            Route::Drop => {}
        }
    }
});
