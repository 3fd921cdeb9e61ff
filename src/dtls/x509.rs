//! The two things the handshake reads out of an X.509 certificate itself (RFC 5280 §4.1): the
//! subject's common name (the device's identity, matched against its endpoint name) and the
//! subjectPublicKeyInfo (to check the CertificateVerify signature). A minimal DER walk; the
//! certificate's validity (chain, signatures, dates) is checked before, by the verifier the
//! caller supplies (webpki in the gateway).

/// One DER element: (tag, contents, rest after it).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| a << 8 | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The whole DER encoding of the first element of `b`.
fn raw_element(b: &[u8]) -> Option<&[u8]> {
    let (_, _, rest) = element(b)?;
    Some(&b[..b.len() - rest.len()])
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// id-at-commonName, 2.5.4.3.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// The fields of tbsCertificate up to the subject public key: (subject Name, SPKI element).
fn subject_and_spki(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (SEQUENCE, cert, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(cert)? else {
        return None;
    };
    // [0] EXPLICIT version, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, subject, rest) = element(tbs)? else {
        return None;
    };
    let spki = raw_element(rest)?;
    Some((subject, spki))
}

/// The subject's (last) common name, as its bytes (UTF8String, PrintableString...).
pub fn common_name(cert: &[u8]) -> Option<&[u8]> {
    let (mut name, _) = subject_and_spki(cert)?;
    let mut cn = None;
    while !name.is_empty() {
        let (SET, mut rdn, rest) = element(name)? else {
            return None;
        };
        name = rest;
        while !rdn.is_empty() {
            let (SEQUENCE, atv, rest) = element(rdn)? else {
                return None;
            };
            rdn = rest;
            let (0x06, oid, value) = element(atv)? else {
                return None;
            };
            if oid == CN_OID {
                cn = Some(element(value)?.1);
            }
        }
    }
    cn
}

/// The subjectPublicKeyInfo element, DER.
pub fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    subject_and_spki(cert).map(|(_, spki)| spki)
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    /// A self-signed P-256 certificate, subject O=Test, CN=dev-7 (`openssl req -x509`), and its
    /// public key (`openssl pkey -pubin -outform DER`).
    const CERT: &str = "MIIBlTCCATugAwIBAgIUH75CKh6r6m/jdVj2JPu9xzg0GEEwCgYIKoZIzj0EAwIwHzENMAsGA1UECgwEVGVzdDEOMAwGA1UEAwwFZGV2LTcwIBcNMjYxMjA0MjM1MTM5WhgPMjA1NjExMjYyMzUxMzlaMB8xDTALBgNVBAoMBFRlc3QxDjAMBgNVBAMMBWRldi03MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhuTj20aGjWPi5J1KaVxR3E+o3mhVwIIaxWJqMgtHaNH6HnTo7HA0DXluPMHVV237uqTubxzBDzHKrUKDnGFg/6NTMFEwHQYDVR0OBBYEFBI3ATUbfiIKDTZejB4JSjJr/n61MB8GA1UdIwQYMBaAFBI3ATUbfiIKDTZejB4JSjJr/n61MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAJeVhnbAd0yqzXV1hwpvLTxYFAR30qLZvKng1BdW7/iNAiAUkHGQLx7gbsQCs36BAgiVtaAdlZMd7pUlUVJlY2YsnQ==";
    const SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhuTj20aGjWPi5J1KaVxR3E+o3mhVwIIaxWJqMgtHaNH6HnTo7HA0DXluPMHVV237uqTubxzBDzHKrUKDnGFg/w==";

    #[test]
    fn the_common_name_and_public_key_are_read_from_a_real_certificate() {
        let cert = b64(CERT);
        assert_eq!(common_name(&cert), Some(&b"dev-7"[..]));
        assert_eq!(subject_public_key_info(&cert), Some(&b64(SPKI)[..]));
    }

    #[test]
    fn truncated_or_foreign_input_is_none_never_a_panic() {
        let cert = b64(CERT);
        for n in 0..cert.len() - 1 {
            assert_eq!(common_name(&cert[..n]), None, "{n}");
        }
        assert_eq!(common_name(&b64(SPKI)), None);
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
