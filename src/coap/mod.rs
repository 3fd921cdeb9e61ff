//! CoAP (RFC 7252) pieces the gateway needs, all pure: a checked zero-copy view over untrusted
//! datagrams ([`MessageView`]), an encoder writing messages into a buffer ([`MessageBuilder`]),
//! response-code names ([`code`]), the message-id deduplication cache ([`DedupCache`]) and the
//! confirmable-retransmission parameters ([`TransmissionParams`]).
//!
//! Full parsing of requests and responses in the workers uses coap-lite's `Packet`; the view is what
//! the event loop uses to route a datagram without allocating.

pub mod block;
pub mod code;
mod dedup;
mod encode;
mod transmission;
mod view;

pub use dedup::DedupCache;
pub use encode::MessageBuilder;
pub use transmission::TransmissionParams;
pub use view::{MessageView, OptionIter, ViewError};

/// CoAP message types (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Con = 0,
    Non = 1,
    Ack = 2,
    Rst = 3,
}

impl MsgType {
    pub fn from_bits(b: u8) -> MsgType {
        match b & 3 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }
}

/// Option numbers used by LwM2M (RFC 7252 §12.2, RFC 7641, RFC 7959).
pub mod opt {
    pub const IF_MATCH: u16 = 1;
    pub const URI_HOST: u16 = 3;
    pub const ETAG: u16 = 4;
    pub const IF_NONE_MATCH: u16 = 5;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const LOCATION_PATH: u16 = 8;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const ACCEPT: u16 = 17;
    pub const LOCATION_QUERY: u16 = 20;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
    pub const NO_RESPONSE: u16 = 258;

    /// Options this gateway understands in requests it receives. An unrecognised *critical*
    /// option (odd number) in a request must be answered with 4.02 Bad Option (RFC 7252 §5.4.1).
    pub fn is_known(n: u16) -> bool {
        matches!(
            n,
            IF_MATCH
                | URI_HOST
                | ETAG
                | IF_NONE_MATCH
                | OBSERVE
                | URI_PORT
                | LOCATION_PATH
                | URI_PATH
                | CONTENT_FORMAT
                | MAX_AGE
                | URI_QUERY
                | ACCEPT
                | LOCATION_QUERY
                | BLOCK2
                | BLOCK1
                | SIZE2
                | SIZE1
                | NO_RESPONSE
        )
    }

    pub fn is_critical(n: u16) -> bool {
        n & 1 == 1
    }
}

/// Decodes a CoAP uint option value (big-endian, leading zeros stripped, empty = 0).
pub fn decode_uint(v: &[u8]) -> Option<u32> {
    if v.len() > 4 {
        return None;
    }
    Some(v.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32))
}
