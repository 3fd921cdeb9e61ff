//! The certificate side of the handshake: ECDHE key exchange on P-256 (RFC 8422) with ECDSA
//! authentication of both ends, the peer's credential being an X.509 chain or a raw public key
//! (RFC 7250). Message bodies in, message bodies out; [`super::server`] sequences them.
//!
//! Only what LwM2M asks for: the group secp256r1, ECDSA with SHA-256 (0x0403), uncompressed
//! points. The client must authenticate (CertificateRequest is always sent): a gateway has no
//! use for an anonymous device.

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use p256::PublicKey;

/// RFC 7250 certificate types.
pub const CERT_X509: u8 = 0;
pub const CERT_RAW_PUBLIC_KEY: u8 = 2;

pub const EXT_SUPPORTED_GROUPS: u16 = 10;
pub const EXT_EC_POINT_FORMATS: u16 = 11;
pub const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
pub const EXT_CLIENT_CERTIFICATE_TYPE: u16 = 19;
pub const EXT_SERVER_CERTIFICATE_TYPE: u16 = 20;

pub const CERTIFICATE: u8 = 11;
pub const SERVER_KEY_EXCHANGE: u8 = 12;
pub const CERTIFICATE_REQUEST: u8 = 13;
pub const CERTIFICATE_VERIFY: u8 = 15;

const SECP256R1: u16 = 23;
const ECDSA_SHA256: u16 = 0x0403;

/// The server's own credential: its key, and the chain it presents as X.509 (end-entity first,
/// DER; empty: raw public key only).
pub struct ServerCert {
    pub key: SigningKey,
    pub chain: Vec<Vec<u8>>,
    /// Our subjectPublicKeyInfo, presented as a raw public key.
    pub spki: Vec<u8>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// What a ClientHello says about certificates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CertOffer {
    /// supported_groups names P-256 (or is absent).
    pub p256: bool,
    /// signature_algorithms names ecdsa_secp256r1_sha256 (or is absent).
    pub ecdsa_sha256: bool,
    /// The client_certificate_type list, if the extension came.
    pub client_types: Option<Vec<u8>>,
    pub server_types: Option<Vec<u8>>,
}

impl CertOffer {
    pub fn new() -> CertOffer {
        CertOffer {
            p256: true,
            ecdsa_sha256: true,
            ..CertOffer::default()
        }
    }

    /// Reads one ClientHello extension (ignores those it has no business with).
    pub fn extension(&mut self, t: u16, data: &[u8]) {
        let list16 = |d: &[u8]| -> Vec<u16> {
            d.get(2..)
                .unwrap_or_default()
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        };
        match t {
            EXT_SUPPORTED_GROUPS => self.p256 = list16(data).contains(&SECP256R1),
            EXT_SIGNATURE_ALGORITHMS => self.ecdsa_sha256 = list16(data).contains(&ECDSA_SHA256),
            EXT_CLIENT_CERTIFICATE_TYPE => {
                self.client_types = Some(data.get(1..).unwrap_or_default().to_vec())
            }
            EXT_SERVER_CERTIFICATE_TYPE => {
                self.server_types = Some(data.get(1..).unwrap_or_default().to_vec())
            }
            _ => {}
        }
    }

    /// The certificate types for (server, client) given what we can do, or `None` if the
    /// ECDHE suites cannot be used with this client.
    pub fn agree(
        &self,
        cert: &ServerCert,
        client_x509: bool,
        client_rpk: bool,
    ) -> Option<(u8, u8)> {
        if !self.p256 || !self.ecdsa_sha256 {
            return None;
        }
        // Our raw key whenever the client takes one: a client that lists raw keys may have no
        // CA to check a chain with (libcoap's GnuTLS client with `-M` lists X.509 first).
        let server = match &self.server_types {
            None => (!cert.chain.is_empty()).then_some(CERT_X509)?,
            Some(list) if list.contains(&CERT_RAW_PUBLIC_KEY) => CERT_RAW_PUBLIC_KEY,
            Some(list) => *list
                .iter()
                .find(|t| **t == CERT_X509 && !cert.chain.is_empty())?,
        };
        let client = match &self.client_types {
            None => client_x509.then_some(CERT_X509)?,
            Some(list) => *list.iter().find(|t| {
                (**t == CERT_RAW_PUBLIC_KEY && client_rpk) || (**t == CERT_X509 && client_x509)
            })?,
        };
        Some((server, client))
    }
}

/// ServerHello extensions of an ECDHE handshake: point format, and the certificate types when
/// the client asked for them.
pub fn server_hello_extensions(offer: &CertOffer, server: u8, client: u8, ext: &mut Vec<u8>) {
    ext.extend_from_slice(&EXT_EC_POINT_FORMATS.to_be_bytes());
    ext.extend_from_slice(&[0, 2, 1, 0]);
    if offer.client_types.is_some() {
        ext.extend_from_slice(&EXT_CLIENT_CERTIFICATE_TYPE.to_be_bytes());
        ext.extend_from_slice(&[0, 1, client]);
    }
    if offer.server_types.is_some() {
        ext.extend_from_slice(&EXT_SERVER_CERTIFICATE_TYPE.to_be_bytes());
        ext.extend_from_slice(&[0, 1, server]);
    }
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

/// The Certificate body: our chain, or our raw public key.
pub fn certificate(cert: &ServerCert, kind: u8) -> Vec<u8> {
    let mut b = Vec::new();
    if kind == CERT_RAW_PUBLIC_KEY {
        b.extend_from_slice(&u24(cert.spki.len()));
        b.extend_from_slice(&cert.spki);
        return b;
    }
    let total: usize = cert.chain.iter().map(|c| 3 + c.len()).sum();
    b.extend_from_slice(&u24(total));
    for c in &cert.chain {
        b.extend_from_slice(&u24(c.len()));
        b.extend_from_slice(c);
    }
    b
}

/// The ServerKeyExchange body: our ephemeral point, signed with our key over both randoms.
pub fn server_key_exchange(
    cert: &ServerCert,
    point: &[u8],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> Vec<u8> {
    let mut params = vec![3];
    params.extend_from_slice(&SECP256R1.to_be_bytes());
    params.push(point.len() as u8);
    params.extend_from_slice(point);
    let digest = super::crypto::sha256(&[client_random, server_random, &params]);
    // A P-256 key signs any 32-byte digest.
    let sig: Signature = cert
        .key
        .sign_prehash(&digest)
        .expect("a P-256 key signs a SHA-256 digest");
    let der = sig.to_der();
    let mut b = params;
    b.extend_from_slice(&ECDSA_SHA256.to_be_bytes());
    b.extend_from_slice(&(der.as_bytes().len() as u16).to_be_bytes());
    b.extend_from_slice(der.as_bytes());
    b
}

/// The CertificateRequest body: an ECDSA certificate, signed with SHA-256, from any CA.
pub fn certificate_request() -> Vec<u8> {
    vec![1, 64, 0, 2, 0x04, 0x03, 0, 0]
}

/// The client's credential as its Certificate message carried it.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientCredential<'a> {
    /// End-entity first.
    X509(Vec<&'a [u8]>),
    RawPublicKey(&'a [u8]),
    /// An empty certificate list: the client has none.
    None,
}

pub fn parse_certificate(body: &[u8], kind: u8) -> Option<ClientCredential<'_>> {
    let len = |b: &[u8]| -> Option<usize> {
        Some((*b.first()? as usize) << 16 | (*b.get(1)? as usize) << 8 | *b.get(2)? as usize)
    };
    let n = len(body)?;
    let mut rest = body.get(3..3 + n)?;
    if 3 + n != body.len() {
        return None;
    }
    if n == 0 {
        return Some(ClientCredential::None);
    }
    if kind == CERT_RAW_PUBLIC_KEY {
        return Some(ClientCredential::RawPublicKey(rest));
    }
    let mut chain = Vec::new();
    while !rest.is_empty() {
        let n = len(rest)?;
        chain.push(rest.get(3..3 + n)?);
        rest = &rest[3 + n..];
    }
    Some(ClientCredential::X509(chain))
}

/// The client's ephemeral point of an ECDHE ClientKeyExchange.
pub fn parse_ecdh_key_exchange(body: &[u8]) -> Option<PublicKey> {
    let (&n, point) = body.split_first()?;
    if point.len() != n as usize {
        return None;
    }
    PublicKey::from_sec1_bytes(point).ok()
}

/// A P-256 public key from its subjectPublicKeyInfo (`None` for any other kind of key).
pub fn verifying_key(spki: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_public_key_der(spki).ok()
}

/// Whether a CertificateVerify body signs `transcript_hash` (SHA-256 of the handshake so far)
/// with `key`.
pub fn certificate_verify_ok(body: &[u8], key: &VerifyingKey, transcript_hash: &[u8; 32]) -> bool {
    let Some((alg, rest)) = body.split_at_checked(2) else {
        return false;
    };
    if alg != ECDSA_SHA256.to_be_bytes() {
        return false;
    }
    let Some((n, sig)) = rest.split_at_checked(2) else {
        return false;
    };
    if u16::from_be_bytes([n[0], n[1]]) as usize != sig.len() {
        return false;
    }
    Signature::from_der(sig).is_ok_and(|s| key.verify_prehash(transcript_hash, &s).is_ok())
}

/// A CertificateVerify body signing `transcript_hash` (the client side, for tests and the load
/// generator).
pub fn certificate_verify(key: &SigningKey, transcript_hash: &[u8; 32]) -> Vec<u8> {
    let sig: Signature = key
        .sign_prehash(transcript_hash)
        .expect("a P-256 key signs a SHA-256 digest");
    let der = sig.to_der();
    let mut b = ECDSA_SHA256.to_be_bytes().to_vec();
    b.extend_from_slice(&(der.as_bytes().len() as u16).to_be_bytes());
    b.extend_from_slice(der.as_bytes());
    b
}

/// The server's point and whether its ServerKeyExchange signature verifies with `server_key`
/// (the client side).
pub fn parse_server_key_exchange(
    body: &[u8],
    server_key: &VerifyingKey,
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> Option<PublicKey> {
    if body.len() < 4 || body[0] != 3 || body[1..3] != SECP256R1.to_be_bytes() {
        return None;
    }
    let n = body[3] as usize;
    let params = body.get(..4 + n)?;
    let point = PublicKey::from_sec1_bytes(&params[4..]).ok()?;
    let digest = super::crypto::sha256(&[client_random, server_random, params]);
    certificate_verify_ok(&body[4 + n..], server_key, &digest).then_some(point)
}
