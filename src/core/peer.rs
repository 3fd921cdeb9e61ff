//! Where a datagram came from, as far as the core needs to know: the listener it arrived on, the
//! remote address, and the identity a security layer authenticated for it.
//!
//! Plain CoAP has no identity: the address is all there is. A DTLS listener (planned) terminates
//! the session before the core and hands over the authenticated identity as a compact
//! [`IdentityId`] it interned (PSK identity, certificate subject, public key); the core compares
//! ids, never keys. The address stays separate from the identity because it changes under NAT
//! while the identity does not.

use std::net::SocketAddr;
use std::num::NonZeroU32;

/// An authenticated identity, interned by the security layer that vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityId(NonZeroU32);

impl IdentityId {
    pub fn new(n: u32) -> Option<IdentityId> {
        NonZeroU32::new(n).map(IdentityId)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// The sender of a datagram, and where answers to it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Index of the listening socket it arrived on; answers leave through the same one.
    pub listener: u16,
    pub addr: SocketAddr,
    /// `None` for plain CoAP.
    pub identity: Option<IdentityId>,
}

impl Peer {
    /// A plain-CoAP peer: known by its address only.
    pub fn plain(listener: u16, addr: SocketAddr) -> Peer {
        Peer {
            listener,
            addr,
            identity: None,
        }
    }
}
