//! The credential store put to work: [`Identities`] interns the identities DTLS authenticates
//! into the compact ids the core compares, [`Policy`] is the core's [`Authorizer`] (which
//! identity may register as which endpoint), and [`DeviceKeys`] is the DTLS server's
//! [`Authenticator`] (PSK keys, trusted certificate chains, known raw public keys).
//!
//! All three read the shared store at the moment they decide, so a reload or an MQTT change
//! applies to the next handshake and the next Register without a restart.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::core::authorize::{Authorizer, Forbidden};
use crate::core::peer::{IdentityId, Peer, SecurityMode};
use crate::dtls::Authenticator;

use super::trust::TrustAnchors;

use super::credentials::Credential;
use super::shared::SharedCredentials;

/// Authenticated identities (mode + the identity's bytes: a PSK identity, later a certificate
/// subject or a public key) and their ids; shared by every worker. An identity keeps its id for
/// the life of the process, so a device that handshakes again is the same identity to the core.
/// Only identities that completed a handshake are interned (a credential's, or a certificate a
/// trusted CA issued), so the table is bounded by the fleet, not by what peers send.
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

/// The durable state names identities by mode and bytes, and interns them again on restore.
impl crate::core::shard::IdentityNames for Identities {
    fn name(&self, id: IdentityId) -> Option<(SecurityMode, Arc<[u8]>)> {
        self.resolve(id)
    }

    fn intern(&self, mode: SecurityMode, identity: &[u8]) -> Option<IdentityId> {
        Identities::intern(self, mode, identity)
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
            (Some(Credential::Rpk { public_key }), SecurityMode::Rpk)
                if public_key[..] == identity[..] =>
            {
                Ok(())
            }
            // A certificate from a trusted CA: its common name is the endpoint, or the one the
            // endpoint's x509 credential names.
            (Some(Credential::X509 { common_name }), SecurityMode::X509)
                if common_name.as_deref().unwrap_or(endpoint).as_bytes() == &identity[..] =>
            {
                Ok(())
            }
            // Unless an x509 credential of another endpoint claims that common name.
            (None, SecurityMode::X509)
                if endpoint.as_bytes() == &identity[..]
                    && std::str::from_utf8(&identity)
                        .map_or(true, |cn| store.by_common_name(cn).is_none()) =>
            {
                Ok(())
            }
            (None, SecurityMode::X509) => {
                Err(Forbidden("certificate common name is not the endpoint"))
            }
            (None | Some(Credential::NoSec), _) => {
                Err(Forbidden("no credential for this endpoint"))
            }
            _ => Err(Forbidden("identity belongs to another endpoint")),
        }
    }
}

/// What the DTLS server trusts, straight from the shared store (and the trust anchors).
#[derive(Debug, Clone)]
pub struct DeviceKeys {
    pub credentials: SharedCredentials,
    /// `None`: no X.509 client certificate is accepted.
    pub anchors: Option<Arc<TrustAnchors>>,
}

impl Authenticator for DeviceKeys {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let store = self.credentials.read();
        match &store.by_psk_identity(identity)?.credential {
            Credential::Psk { key, .. } => Some(key.expose().to_vec()),
            _ => None,
        }
    }

    fn verify_chain(&self, chain: &[&[u8]]) -> bool {
        self.anchors
            .as_ref()
            .is_some_and(|a| a.verify(chain, std::time::SystemTime::now()))
    }

    fn accept_raw_key(&self, spki: &[u8]) -> bool {
        self.credentials.read().by_public_key(spki).is_some()
    }
}

impl DeviceKeys {
    /// The endpoint an authenticated identity belongs to: where its session is routed after
    /// the handshake. A PSK identity and a raw public key name theirs in the store; a
    /// certificate's common name is the endpoint (or the endpoint whose x509 credential names
    /// that common name).
    pub fn endpoint_of(&self, mode: SecurityMode, identity: &[u8]) -> Option<String> {
        let store = self.credentials.read();
        match mode {
            SecurityMode::Psk => store.by_psk_identity(identity).map(|c| c.endpoint.clone()),
            SecurityMode::Rpk => store.by_public_key(identity).map(|c| c.endpoint.clone()),
            SecurityMode::X509 => {
                let cn = std::str::from_utf8(identity).ok()?;
                Some(
                    store
                        .by_common_name(cn)
                        .map_or_else(|| cn.to_string(), |c| c.endpoint.clone()),
                )
            }
            SecurityMode::NoSec => None,
        }
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
        let keys = DeviceKeys {
            credentials: p.credentials.clone(),
            anchors: None,
        };
        assert_eq!(keys.psk(b"id-a"), Some(b"key-a".to_vec()));
        assert_eq!(keys.psk(b"id-b"), None);
        assert_eq!(
            keys.endpoint_of(SecurityMode::Psk, b"id-a").as_deref(),
            Some("dev-a")
        );
        assert!(
            !keys.verify_chain(&[b"not a certificate"]),
            "no anchors: no chain"
        );
        // A certificate's common name is its endpoint.
        let cn = peer(ids.intern(SecurityMode::X509, b"newcomer"));
        assert_eq!(p.authorize_register("newcomer", &cn), Ok(()));
        assert!(p.authorize_register("dev-a", &cn).is_err());
        assert!(p.authorize_register("legacy", &cn).is_err());
    }
}
