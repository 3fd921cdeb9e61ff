//! The gateway parses CoAP with its own zero-copy view (`coap::MessageView`) on the hot path; the
//! coap-lite crate is kept as an independent oracle: whatever the view accepts, coap-lite must
//! read the same way (header, token, every option in order, payload). The view is stricter
//! (e.g. it rejects a payload marker with no payload, RFC 7252 §3), never looser.

use coap_lite::Packet;
use lwm2m_gateway::coap::{MessageBuilder, MessageView, MsgType};
use proptest::prelude::*;

fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(v) = MessageView::parse(bytes) else {
        return Ok(());
    };
    let p = Packet::from_bytes(bytes).map_err(|e| {
        TestCaseError::fail(format!("coap-lite rejects what the view accepts: {e:?}"))
    })?;
    prop_assert_eq!(p.header.message_id, v.message_id());
    prop_assert_eq!(u8::from(p.header.code), v.code());
    prop_assert_eq!(p.get_token(), v.token());
    let mut lite: Vec<(u16, Vec<u8>)> = Vec::new();
    for (n, values) in p.options() {
        for val in values {
            lite.push((*n, val.clone()));
        }
    }
    let mine: Vec<(u16, Vec<u8>)> = v.options().map(|(n, val)| (n, val.to_vec())).collect();
    prop_assert_eq!(lite, mine);
    prop_assert_eq!(&p.payload[..], v.payload());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn view_agrees_with_coap_lite_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        // Force version 1 most of the time so the comparison goes past the header.
        let mut b = bytes;
        if let Some(first) = b.first_mut() {
            *first = 0x40 | (*first & 0x3f);
        }
        agree(&b)?;
    }

    #[test]
    fn view_agrees_with_coap_lite_on_built_messages(
        t in 0u8..4,
        code in any::<u8>(),
        mid in any::<u16>(),
        token in proptest::collection::vec(any::<u8>(), 0..=8),
        mut opts in proptest::collection::vec((0u16..2000, proptest::collection::vec(any::<u8>(), 0..300)), 0..6),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        opts.sort_by_key(|(n, _)| *n);
        let mut buf = Vec::new();
        let mut m = MessageBuilder::new(&mut buf, MsgType::from_bits(t), code, mid, &token);
        for (n, v) in &opts {
            m = m.option(*n, v);
        }
        m.payload(&payload);
        prop_assert!(code == 0 || MessageView::parse(&buf).is_ok(), "the view reads what the builder writes");
        agree(&buf)?;
    }
}
