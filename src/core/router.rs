//! Routing a datagram to the worker that owns its endpoint, from the few bytes routing needs
//! (pure; used by the event loop on every datagram).
//!
//! Register is routed by a hash of `ep`; everything the gateway addressed itself carries the shard
//! in an identifier it chose (registration id, message id, token), decoded by [`super::ids`]. Only traffic
//! whose identifiers the client chose falls back to the address index. Requests for paths the
//! gateway does not serve are answered here without bothering a worker.

use std::net::SocketAddr;

use crate::coap::{code, opt, MessageBuilder, MessageView, MsgType};

use super::ids::{MidAllocator, RegId, Token};

/// Where a datagram goes. `Reply` and `Drop` mean the sender did something wrong (they count
/// against its error rate, `core::limits`); `Pong` answers a CoAP ping, which is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Worker(usize),
    /// A Register for the endpoint this worker owns: subject to the sender's registration rate.
    Register(usize),
    /// A stateless error answer to send back from the event loop (4.04, 4.02, RST).
    Reply(Vec<u8>),
    /// The RST that answers a CoAP ping (an empty CON or NON).
    Pong(Vec<u8>),
    /// Malformed or unexpected: drop and count.
    Drop,
}

impl Route {
    /// Whether the datagram was the sender's error (see [`Route`]).
    pub fn is_error(&self) -> bool {
        matches!(self, Route::Reply(_) | Route::Drop)
    }
}

/// FNV-1a: stable across runs and threads (the MQTT thread routes commands with it too).
pub fn shard_of_endpoint(ep: &[u8], workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ep {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

fn reply(t: MsgType, code: u8, mid: u16, token: &[u8]) -> Route {
    let mut b = Vec::with_capacity(12);
    MessageBuilder::new(&mut b, t, code, mid, token).finish();
    Route::Reply(b)
}

/// Decides where a datagram goes. `lookup` resolves a peer address to its shard through the
/// shared index; `nonce` gives message ids for stateless NON answers.
pub fn route(
    bytes: &[u8],
    peer: SocketAddr,
    workers: usize,
    lookup: impl Fn(&SocketAddr) -> Option<usize>,
    nonce: u16,
) -> Route {
    let v = match MessageView::parse(bytes) {
        Ok(v) => v,
        Err(_) => {
            // RFC 7252 §4.2: a confirmable message we cannot parse is rejected with RST, when the
            // header at least is readable.
            if bytes.len() >= 4
                && bytes[0] >> 6 == 1
                && MsgType::from_bits(bytes[0] >> 4) == MsgType::Con
            {
                return reply(
                    MsgType::Rst,
                    code::EMPTY,
                    u16::from_be_bytes([bytes[2], bytes[3]]),
                    &[],
                );
            }
            return Route::Drop;
        }
    };
    let t = v.msg_type();
    let c = v.code();
    let by_index_or = |fallback: Route| {
        lookup(&peer)
            .filter(|w| *w < workers)
            .map(Route::Worker)
            .unwrap_or(fallback)
    };
    if c == code::EMPTY {
        return match t {
            MsgType::Con | MsgType::Non => {
                match reply(MsgType::Rst, code::EMPTY, v.message_id(), &[]) {
                    Route::Reply(b) => Route::Pong(b),
                    other => other,
                }
            }
            MsgType::Ack | MsgType::Rst => {
                Route::Worker(MidAllocator::shard_of(v.message_id(), workers).index())
            }
        };
    }
    if code::is_request(c) {
        let answer = |rc: u8| match t {
            MsgType::Con => reply(MsgType::Ack, rc, v.message_id(), v.token()),
            _ => reply(MsgType::Non, rc, nonce, v.token()),
        };
        if matches!(t, MsgType::Ack | MsgType::Rst) {
            return Route::Drop;
        }
        // RFC 7252 §5.4.1: a request with a critical option we do not understand gets 4.02.
        if v.unknown_critical_option().is_some() {
            return answer(code::BAD_OPTION);
        }
        let mut path = v.option_values(opt::URI_PATH);
        let first = path.next();
        let second = path.next();
        let third = path.next();
        return match (first, second, third) {
            (Some(b"rd"), None, _) => {
                let ep = v
                    .option_values(opt::URI_QUERY)
                    .find_map(|q| q.strip_prefix(b"ep="))
                    .unwrap_or_default();
                let w = shard_of_endpoint(ep, workers);
                if c == code::POST {
                    Route::Register(w)
                } else {
                    Route::Worker(w)
                }
            }
            (Some(b"rd"), Some(id), None) => match RegId::parse(id).map(|r| r.shard().index()) {
                Some(s) if s < workers => Route::Worker(s),
                _ => answer(code::NOT_FOUND),
            },
            (Some(b"dp"), None, _) => by_index_or(answer(code::NOT_FOUND)),
            _ => answer(code::NOT_FOUND),
        };
    }
    if code::is_response(c) {
        let shard = Token::from_bytes(v.token()).map(|t| t.shard().index());
        if let Some(s) = shard.filter(|s| *s < workers) {
            return Route::Worker(s);
        }
        return by_index_or(match t {
            MsgType::Con | MsgType::Non => reply(MsgType::Rst, code::EMPTY, v.message_id(), &[]),
            _ => Route::Drop,
        });
    }
    // Reserved code classes 1, 6, 7.
    match t {
        MsgType::Con => reply(MsgType::Rst, code::EMPTY, v.message_id(), &[]),
        _ => Route::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn req(t: MsgType, c: u8, path: &[&str], query: &[&str], token: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        MessageBuilder::new(&mut b, t, c, 0x1234, token)
            .options(opt::URI_PATH, path.iter().map(|s| s.as_bytes()))
            .options(opt::URI_QUERY, query.iter().map(|s| s.as_bytes()))
            .finish();
        b
    }

    #[test]
    fn register_routes_by_endpoint_hash() {
        let b = req(
            MsgType::Con,
            code::POST,
            &["rd"],
            &["lt=5", "ep=dev7"],
            &[1],
        );
        assert_eq!(
            route(&b, peer(), 4, |_| None, 0),
            Route::Register(shard_of_endpoint(b"dev7", 4))
        );
        // Another method on /rd is the worker's to refuse; it is no Register.
        let b = req(MsgType::Con, code::GET, &["rd"], &["ep=dev7"], &[1]);
        assert_eq!(
            route(&b, peer(), 4, |_| None, 0),
            Route::Worker(shard_of_endpoint(b"dev7", 4))
        );
        // spread over shards
        let shards: std::collections::HashSet<_> = (0..100)
            .map(|i| shard_of_endpoint(format!("d{i}").as_bytes(), 4))
            .collect();
        assert_eq!(shards.len(), 4);
    }

    #[test]
    fn update_routes_by_registration_id() {
        let b = req(
            MsgType::Con,
            code::POST,
            &[
                "rd",
                &RegId::new(7, crate::core::ids::ShardId::new(2).unwrap()).to_string(),
            ],
            &[],
            &[],
        );
        assert_eq!(route(&b, peer(), 4, |_| None, 0), Route::Worker(2));
        // shard 9 does not exist with 4 workers: 4.04 straight away
        let b = req(MsgType::Con, code::DELETE, &["rd", "265"], &[], &[9]);
        let Route::Reply(r) = route(&b, peer(), 4, |_| None, 0) else {
            panic!()
        };
        let v = MessageView::parse(&r).unwrap();
        assert_eq!(
            (v.msg_type(), v.code(), v.message_id(), v.token()),
            (MsgType::Ack, code::NOT_FOUND, 0x1234, &[9u8][..])
        );
    }

    #[test]
    fn stateless_answers() {
        // unknown path
        let b = req(MsgType::Con, code::GET, &["x"], &[], &[]);
        assert!(
            matches!(route(&b, peer(), 2, |_| None, 0), Route::Reply(r) if r[1] == code::NOT_FOUND)
        );
        // NON request gets a NON answer with a fresh id
        let b = req(MsgType::Non, code::GET, &["x"], &[], &[]);
        let Route::Reply(r) = route(&b, peer(), 2, |_| None, 77) else {
            panic!()
        };
        assert_eq!(
            (
                MsgType::from_bits(r[0] >> 4),
                u16::from_be_bytes([r[2], r[3]])
            ),
            (MsgType::Non, 77)
        );
        // CoAP ping: answered, and no error of the sender's
        let pong = route(&[0x40, 0, 0, 5], peer(), 2, |_| None, 0);
        assert!(!pong.is_error());
        assert!(matches!(pong, Route::Pong(r) if r == [0x70, 0, 0, 5]));
        // malformed CON: RST; malformed other: drop
        assert!(
            matches!(route(&[0x40, 1, 0, 5, 0xff], peer(), 2, |_| None, 0), Route::Reply(r) if r == [0x70, 0, 0, 5])
        );
        assert_eq!(
            route(&[0x50, 1, 0, 5, 0xff], peer(), 2, |_| None, 0),
            Route::Drop
        );
        assert_eq!(route(&[1, 2], peer(), 2, |_| None, 0), Route::Drop);
    }

    #[test]
    fn unknown_critical_option_is_answered_here() {
        let mut b = Vec::new();
        MessageBuilder::new(&mut b, MsgType::Con, code::POST, 9, &[1])
            .option(9, b"")
            .option(opt::URI_PATH, b"rd")
            .finish();
        let Route::Reply(r) = route(&b, peer(), 2, |_| None, 0) else {
            panic!()
        };
        assert_eq!((r[0] >> 4 & 3, r[1]), (2, code::BAD_OPTION));
    }

    #[test]
    fn replies_route_by_gateway_chosen_ids() {
        // empty ACK: message id modulo workers
        assert_eq!(
            route(&[0x60, 0, 0, 7], peer(), 4, |_| None, 0),
            Route::Worker(3)
        );
        // piggybacked response: first token byte
        let mut b = Vec::new();
        MessageBuilder::new(
            &mut b,
            MsgType::Ack,
            code::CONTENT,
            1,
            &[1, 0, 0, 0, 0, 0, 0, 9],
        )
        .payload(b"x");
        assert_eq!(route(&b, peer(), 4, |_| None, 0), Route::Worker(1));
        // foreign token: index, else RST for CON
        MessageBuilder::new(&mut b, MsgType::Con, code::CONTENT, 1, &[200]).payload(b"x");
        assert_eq!(route(&b, peer(), 4, |_| Some(2), 0), Route::Worker(2));
        assert!(matches!(route(&b, peer(), 4, |_| None, 0), Route::Reply(r) if r[0] >> 4 == 7));
    }
}
