//! Where a datagram came from, as far as the core needs to know: the listener it arrived on, the
//! remote address, and the identity a security layer authenticated for it.
//!
//! Plain CoAP has no identity: the address is all there is. The DTLS listener terminates the
//! session before the core and hands over the authenticated [`Identity`]: a compact
//! [`IdentityId`] the runtime interned (PSK identity, certificate subject, public key) and how it
//! was proven; the core compares ids, never keys. The address stays separate from the identity
//! because it changes under NAT while the identity does not.

use std::net::SocketAddr;
use std::num::NonZeroU32;

impl std::fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated identity, interned by the security layer that vouches for it: a serial
/// number below 2^30 and, in the top two bits, how it was proven (so that a [`Peer`], stored
/// once per device, stays at 40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityId(NonZeroU32);

impl IdentityId {
    pub const MAX_SERIAL: u32 = (1 << 30) - 1;

    /// `None` for a serial beyond [`IdentityId::MAX_SERIAL`] or for `NoSec`, which proves nothing.
    pub fn new(serial: u32, mode: SecurityMode) -> Option<IdentityId> {
        let m = match mode {
            SecurityMode::NoSec => return None,
            SecurityMode::Psk => 1,
            SecurityMode::X509 => 2,
            SecurityMode::Rpk => 3,
        };
        (serial <= Self::MAX_SERIAL)
            .then(|| NonZeroU32::new(m << 30 | serial).map(IdentityId))
            .flatten()
    }

    /// The raw value, for a `u32` slot elsewhere (never 0).
    pub fn tag(self) -> u32 {
        self.0.get()
    }

    /// Back from [`IdentityId::tag`]; `None` for 0 or a value no identity has.
    pub fn from_tag(tag: u32) -> Option<IdentityId> {
        NonZeroU32::new(tag)
            .filter(|t| t.get() >> 30 != 0)
            .map(IdentityId)
    }

    pub fn serial(self) -> u32 {
        self.0.get() & Self::MAX_SERIAL
    }

    pub fn mode(self) -> SecurityMode {
        match self.0.get() >> 30 {
            1 => SecurityMode::Psk,
            2 => SecurityMode::X509,
            _ => SecurityMode::Rpk,
        }
    }
}

/// How a device's traffic is secured, as the LwM2M Security object names the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityMode {
    #[default]
    NoSec,
    Psk,
    X509,
    Rpk,
}

impl SecurityMode {
    pub const ALL: [SecurityMode; 4] = [
        SecurityMode::NoSec,
        SecurityMode::Psk,
        SecurityMode::X509,
        SecurityMode::Rpk,
    ];

    pub fn from_name(s: &str) -> Option<SecurityMode> {
        SecurityMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The spelling in MQTT events and credential files.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::NoSec => "nosec",
            SecurityMode::Psk => "psk",
            SecurityMode::X509 => "x509",
            SecurityMode::Rpk => "rpk",
        }
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

impl Peer {
    /// How this peer is secured.
    pub fn security(&self) -> SecurityMode {
        self.identity.map_or(SecurityMode::NoSec, IdentityId::mode)
    }

    /// Whether this datagram comes from the identity `other` proved (both plain, or the same
    /// authenticated identity): what every uplink after Register must show.
    pub fn same_identity(&self, other: &Peer) -> bool {
        self.identity == other.identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_id_keeps_its_serial_and_mode() {
        for mode in [SecurityMode::Psk, SecurityMode::X509, SecurityMode::Rpk] {
            for serial in [0, 1, IdentityId::MAX_SERIAL] {
                let id = IdentityId::new(serial, mode).unwrap();
                assert_eq!((id.serial(), id.mode()), (serial, mode));
            }
            assert!(IdentityId::new(IdentityId::MAX_SERIAL + 1, mode).is_none());
        }
        assert!(IdentityId::new(1, SecurityMode::NoSec).is_none());
        assert_eq!(std::mem::size_of::<Peer>(), 40);
    }
}
