//! X.509 trust for the DTLS listener: the trust anchors (CA certificates) a device certificate
//! chain must lead to, and the gateway's own certificate and key. Chains are verified by rustls'
//! webpki (path building, signatures, validity dates, basic constraints, client-auth usage when
//! the certificate names a usage); the identity is then the end-entity's subject common name.
//!
//! Files are PEM. Reading them is the only I/O here; a file that cannot be used is an error that
//! names the file and never quotes key material.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::dtls::ecdhe::ServerCert;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no usable PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: not a CA certificate webpki can use: {1}")]
    BadAnchor(PathBuf, String),
    #[error("{0}: no P-256 private key in it (PKCS#8 or SEC1 PEM)")]
    BadKey(PathBuf),
}

/// The trust anchors device certificates are checked against.
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustAnchors({})", self.anchors.len())
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let text = std::fs::read(path).map_err(|e| TrustError::Read(path.into(), e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TrustError::NoCertificate(path.into()));
    }
    Ok(certs)
}

impl TrustAnchors {
    /// Every certificate in every file of `paths`.
    pub fn load(paths: &[PathBuf]) -> Result<TrustAnchors, TrustError> {
        let mut anchors = Vec::new();
        for p in paths {
            for c in certificates(p)? {
                let a = webpki::anchor_from_trusted_cert(&c)
                    .map_err(|e| TrustError::BadAnchor(p.clone(), format!("{e:?}")))?;
                anchors.push(a.to_owned());
            }
        }
        Ok(TrustAnchors { anchors })
    }

    /// Whether `chain` (end-entity first, DER) is valid at `now` and leads to an anchor.
    pub fn verify(&self, chain: &[&[u8]], now: std::time::SystemTime) -> bool {
        let Some((ee, intermediates)) = chain.split_first() else {
            return false;
        };
        let ee_der = CertificateDer::from(*ee);
        let Ok(cert) = EndEntityCert::try_from(&ee_der) else {
            return false;
        };
        let inter: Vec<CertificateDer> = intermediates
            .iter()
            .map(|c| CertificateDer::from(*c))
            .collect();
        let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &inter,
            UnixTime::since_unix_epoch(since),
            KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok()
    }
}

/// The gateway's certificate chain (PEM, end-entity first; none for raw-public-key only) and
/// its P-256 private key (PEM, PKCS#8 or SEC1).
pub fn server_cert(chain: Option<&Path>, key: &Path) -> Result<ServerCert, TrustError> {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let text = std::fs::read_to_string(key).map_err(|e| TrustError::Read(key.into(), e))?;
    let secret = p256::SecretKey::from_pkcs8_pem(&text)
        .or_else(|_| p256::SecretKey::from_sec1_pem(&text))
        .map_err(|_| TrustError::BadKey(key.into()))?;
    let spki = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| TrustError::BadKey(key.into()))?
        .into_vec();
    let chain = match chain {
        Some(p) => certificates(p)?.into_iter().map(|c| c.to_vec()).collect(),
        None => Vec::new(),
    };
    Ok(ServerCert {
        key: p256::ecdsa::SigningKey::from(secret),
        chain,
        spki,
    })
}
