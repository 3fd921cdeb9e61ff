//! Who may register as which endpoint: the one decision the core asks of the security layer.
//!
//! Leshan's model: a Register is accepted only when the peer's authenticated identity belongs to
//! the endpoint it names, and an endpoint that has a credential can never register over plain
//! CoAP. Everything after Register (Update, De-register, Send, responses, notifications) must
//! come from the identity that registered; the shard checks that itself with
//! [`super::peer::Peer::same_identity`], because it only compares what it stored.
//!
//! The credential store lives in the runtime (`crate::security`); the core sees this trait, so
//! its tests decide with a table and stay deterministic.

use std::fmt;

use super::peer::Peer;

/// The endpoint name of the gateway itself: MQTT commands to it manage the gateway (device
/// credentials), so no device may register under it.
pub const GATEWAY_ENDPOINT: &str = "$gateway";

/// Why a Register was refused (sent to the device as the diagnostic payload of the 4.03 and
/// never carrying key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden(pub &'static str);

pub trait Authorizer: Send + Sync + fmt::Debug {
    fn authorize_register(&self, endpoint: &str, peer: &Peer) -> Result<(), Forbidden>;
}

/// No credentials at all: every endpoint may register, over any transport (the gateway without
/// a credential store, and the core's tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unrestricted;

impl Authorizer for Unrestricted {
    fn authorize_register(&self, _endpoint: &str, _peer: &Peer) -> Result<(), Forbidden> {
        Ok(())
    }
}
