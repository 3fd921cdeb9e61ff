//! The credential store put to work: [`Identities`] interns the identities DTLS authenticates
//! into the compact ids the core compares, [`Policy`] is the core's [`Authorizer`] (which
//! identity may register as which endpoint), and [`PskKeys`] is the DTLS server's key lookup.
//!
//! All three read the shared store at the moment they decide, so a reload or an MQTT change
//! applies to the next handshake and the next Register without a restart.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::core::authorize::{Authorizer, Forbidden};
use crate::core::peer::{IdentityId, Peer, SecurityMode};
use crate::dtls::PskStore;

use super::credentials::Credential;
use super::shared::SharedCredentials;

/// Authenticated identities (mode + the identity's bytes: a PSK identity, later a certificate
/// subject or a public key) and their ids; shared by every worker. An identity keeps its id for
/// the life of the process, so a device that handshakes again is the same identity to the core.
#[derive(Debug, Default)]
pub struct Identities {
    ids: DashMap<(SecurityMode, Box<[u8]>), IdentityId>,
    names: DashMap<u32, (SecurityMode, Arc<[u8]>)>,
    next: AtomicU32,
}

impl Identities {
    /// The id of this identity, interned on first sight; `None` once 2^30 were handed out.
    pub fn intern(&self, mode: SecurityMode, identity: &[u8]) -> Option<IdentityId> {
        if let Some(id) = self.ids.get(&(mode, identity.into())) {
            return Some(*id);
        }
        let entry = self.ids.entry((mode, identity.into()));
        if let dashmap::Entry::Occupied(o) = &entry {
            return Some(*o.get());
        }
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let id = IdentityId::new(serial, mode)?;
        self.names.insert(serial, (mode, identity.into()));
        entry.or_insert(id);
        Some(id)
    }

    /// The identity behind an id.
    pub fn resolve(&self, id: IdentityId) -> Option<(SecurityMode, Arc<[u8]>)> {
        self.names.get(&id.serial()).map(|e| e.clone())
    }
}

/// Who may register as which endpoint (Leshan's `SecurityChecker`):
/// - over DTLS, only the endpoint whose credential names the peer's identity;
/// - over plain CoAP, only an endpoint without a credential (with
///   `plain_requires_credential`, only one whose credential says `nosec`).
#[derive(Debug)]
pub struct Policy {
    pub credentials: SharedCredentials,
    pub identities: Arc<Identities>,
    pub plain_requires_credential: bool,
}

impl Authorizer for Policy {
    fn authorize_register(&self, endpoint: &str, peer: &Peer) -> Result<(), Forbidden> {
        let store = self.credentials.read();
        let cred = store.by_endpoint(endpoint).map(|c| &c.credential);
        let Some(id) = peer.identity else {
            return match cred {
                None if self.plain_requires_credential => {
                    Err(Forbidden("plain CoAP needs a nosec credential"))
                }
                None | Some(Credential::NoSec) => Ok(()),
                Some(_) => Err(Forbidden("endpoint requires DTLS")),
            };
        };
        let Some((mode, identity)) = self.identities.resolve(id) else {
            return Err(Forbidden("unknown identity"));
        };
        match (cred, mode) {
            (Some(Credential::Psk { identity: want, .. }), SecurityMode::Psk)
                if want[..] == identity[..] =>
            {
                Ok(())
            }
            (None | Some(Credential::NoSec), _) => {
                Err(Forbidden("no credential for this endpoint"))
            }
            _ => Err(Forbidden("identity belongs to another endpoint")),
        }
    }
}

/// The DTLS server's PSK lookup, straight from the shared store.
#[derive(Debug, Clone)]
pub struct PskKeys(pub SharedCredentials);

impl PskStore for PskKeys {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let store = self.0.read();
        match &store.by_psk_identity(identity)?.credential {
            Credential::Psk { key, .. } => Some(key.expose().to_vec()),
            _ => None,
        }
    }
}

impl PskKeys {
    /// The endpoint a PSK identity belongs to: where its session is routed after the handshake.
    pub fn endpoint_of(&self, identity: &[u8]) -> Option<String> {
        self.0
            .read()
            .by_psk_identity(identity)
            .map(|c| c.endpoint.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::security::{CredentialStore, DeviceCredential, Secret};

    fn store() -> SharedCredentials {
        let mut s = CredentialStore::new();
        for (ep, c) in [
            (
                "dev-a",
                Credential::Psk {
                    identity: b"id-a"[..].into(),
                    key: Secret::new(&b"key-a"[..]),
                },
            ),
            ("legacy", Credential::NoSec),
        ] {
            s.insert(DeviceCredential {
                endpoint: ep.into(),
                credential: c,
            })
            .unwrap();
        }
        SharedCredentials::new(s)
    }

    fn peer(identity: Option<IdentityId>) -> Peer {
        Peer {
            identity,
            ..Peer::plain(0, SocketAddr::from(([127, 0, 0, 1], 9)))
        }
    }

    #[test]
    fn interning_is_stable_and_resolves_back() {
        let ids = Identities::default();
        let a = ids.intern(SecurityMode::Psk, b"x").unwrap();
        assert_eq!(ids.intern(SecurityMode::Psk, b"x"), Some(a));
        let b = ids.intern(SecurityMode::Psk, b"y").unwrap();
        assert_ne!(a, b);
        assert_eq!(ids.resolve(b).unwrap().1[..], b"y"[..]);
        assert_eq!(a.mode(), SecurityMode::Psk);
    }

    #[test]
    fn the_policy_binds_identities_to_endpoints_and_keeps_secured_endpoints_off_plain_coap() {
        let ids = Arc::new(Identities::default());
        let mut p = Policy {
            credentials: store(),
            identities: ids.clone(),
            plain_requires_credential: false,
        };
        let a = peer(ids.intern(SecurityMode::Psk, b"id-a"));
        let other = peer(ids.intern(SecurityMode::Psk, b"id-b"));
        let plain = peer(None);
        assert_eq!(p.authorize_register("dev-a", &a), Ok(()));
        assert!(p.authorize_register("dev-a", &other).is_err());
        assert!(p.authorize_register("dev-a", &plain).is_err());
        assert!(p.authorize_register("legacy", &a).is_err());
        assert_eq!(p.authorize_register("legacy", &plain), Ok(()));
        assert_eq!(p.authorize_register("newcomer", &plain), Ok(()));
        p.plain_requires_credential = true;
        assert!(p.authorize_register("newcomer", &plain).is_err());
        assert_eq!(p.authorize_register("legacy", &plain), Ok(()));
        let keys = PskKeys(p.credentials.clone());
        assert_eq!(keys.psk(b"id-a"), Some(b"key-a".to_vec()));
        assert_eq!(keys.psk(b"id-b"), None);
        assert_eq!(keys.endpoint_of(b"id-a").as_deref(), Some("dev-a"));
    }
}
