//! The cryptography of the DTLS 1.2 suites the gateway offers, on RustCrypto primitives: the
//! TLS 1.2 PRF (P_SHA256, RFC 5246 §5), key expansion, and record protection for the suites
//! LwM2M names: PSK with AES-128-CCM-8 (RFC 6655) and AES-128-CBC-SHA256 (RFC 5487), ECDHE-ECDSA
//! with AES-128-CCM-8 (RFC 7251) and AES-128-GCM-SHA256 (RFC 5289).
//!
//! Keys are kept raw (16-byte AES keys, 32-byte MAC keys) and the AES key schedule is expanded
//! per record: that costs tens of nanoseconds and keeps an idle session at a few dozen bytes of
//! keys instead of several hundred of expanded schedules (1,000,000 idle devices must fit).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit};
use aes::Aes128;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::AeadInPlace;
use ccm::consts::{U12, U8};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;
type Ccm8 = ccm::Ccm<Aes128, U8, U12>;
type Aes128Gcm = aes_gcm::Aes128Gcm;

/// The cipher suites this gateway negotiates, by their IANA numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// TLS_PSK_WITH_AES_128_CCM_8 (0xC0A8): mandatory for LwM2M PSK.
    PskAes128Ccm8,
    /// TLS_PSK_WITH_AES_128_CBC_SHA256 (0x00AE).
    PskAes128CbcSha256,
    /// TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (0xC0AE): mandatory for LwM2M certificates and RPK.
    EcdheEcdsaAes128Ccm8,
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xC02B).
    EcdheEcdsaAes128GcmSha256,
}

/// How a suite protects records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    Ccm8,
    Gcm,
    CbcSha256,
}

impl Suite {
    pub const ALL: [Suite; 4] = [
        Suite::PskAes128Ccm8,
        Suite::PskAes128CbcSha256,
        Suite::EcdheEcdsaAes128Ccm8,
        Suite::EcdheEcdsaAes128GcmSha256,
    ];

    pub const fn id(self) -> u16 {
        match self {
            Suite::PskAes128Ccm8 => 0xC0A8,
            Suite::PskAes128CbcSha256 => 0x00AE,
            Suite::EcdheEcdsaAes128Ccm8 => 0xC0AE,
            Suite::EcdheEcdsaAes128GcmSha256 => 0xC02B,
        }
    }

    pub fn from_id(id: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// A PSK key exchange (else ECDHE with ECDSA authentication).
    pub const fn is_psk(self) -> bool {
        matches!(self, Suite::PskAes128Ccm8 | Suite::PskAes128CbcSha256)
    }

    const fn protection(self) -> Protection {
        match self {
            Suite::PskAes128Ccm8 | Suite::EcdheEcdsaAes128Ccm8 => Protection::Ccm8,
            Suite::EcdheEcdsaAes128GcmSha256 => Protection::Gcm,
            Suite::PskAes128CbcSha256 => Protection::CbcSha256,
        }
    }

    /// Bytes a protected record adds to its plaintext, at most.
    pub const fn overhead(self) -> usize {
        match self.protection() {
            // explicit nonce + tag
            Protection::Ccm8 => 8 + 8,
            Protection::Gcm => 8 + 16,
            // IV + MAC + up to a block of padding
            Protection::CbcSha256 => 16 + 32 + 16,
        }
    }
}

/// TLS 1.2 PRF with SHA-256 into `out` (RFC 5246 §5).
pub fn prf(secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let mac = |parts: &[&[u8]]| {
        // A key of any length is accepted by HMAC.
        let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes()
    };
    let mut seed_parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 1);
    seed_parts.push(label);
    seed_parts.extend_from_slice(seed);
    let mut a = mac(&seed_parts);
    let mut filled = 0;
    while filled < out.len() {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed_parts.len() + 1);
        parts.push(&a);
        parts.extend_from_slice(&seed_parts);
        let block = mac(&parts);
        let n = (out.len() - filled).min(block.len());
        out[filled..filled + n].copy_from_slice(&block[..n]);
        filled += n;
        a = mac(&[&a]);
    }
}

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// RFC 4279 §2: the premaster secret of a plain PSK key exchange.
pub fn psk_premaster(psk: &[u8]) -> Vec<u8> {
    let n = psk.len() as u16;
    let mut pm = Vec::with_capacity(4 + 2 * psk.len());
    pm.extend_from_slice(&n.to_be_bytes());
    pm.resize(2 + psk.len(), 0);
    pm.extend_from_slice(&n.to_be_bytes());
    pm.extend_from_slice(psk);
    pm
}

/// The write keys of one direction.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKeys {
    pub key: [u8; 16],
    /// CCM-8: the 4-byte implicit nonce part; CBC: unused.
    pub salt: [u8; 4],
    /// CBC-SHA256: the HMAC key; CCM-8: unused (zero).
    pub mac: [u8; 32],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(<redacted>)")
    }
}

/// Client-write and server-write keys from the key block (RFC 5246 §6.3).
pub fn key_block(
    suite: Suite,
    master: &[u8; 48],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> (DirectionKeys, DirectionKeys) {
    let mut kb = [0u8; 2 * 32 + 2 * 16 + 2 * 4];
    let (mac_len, iv_len) = match suite.protection() {
        Protection::Ccm8 | Protection::Gcm => (0, 4),
        Protection::CbcSha256 => (32, 0),
    };
    let total = 2 * mac_len + 2 * 16 + 2 * iv_len;
    prf(
        master,
        b"key expansion",
        &[server_random, client_random],
        &mut kb[..total],
    );
    let mut c = DirectionKeys {
        key: [0; 16],
        salt: [0; 4],
        mac: [0; 32],
    };
    let mut s = c.clone();
    let mut at = 0;
    let mut take = |n: usize| {
        let r = &kb[at..at + n];
        at += n;
        r.to_vec()
    };
    c.mac[..mac_len].copy_from_slice(&take(mac_len));
    s.mac[..mac_len].copy_from_slice(&take(mac_len));
    c.key.copy_from_slice(&take(16));
    s.key.copy_from_slice(&take(16));
    c.salt[..iv_len].copy_from_slice(&take(iv_len));
    s.salt[..iv_len].copy_from_slice(&take(iv_len));
    (c, s)
}

/// The additional data (AEAD) or MAC header (CBC) of a record, on the stack: RFC 5246 §6.2.3's
/// `seq_num type version length`, or for a record with a Connection ID RFC 9146 §5's
/// `seq_num_placeholder tls12_cid cid_length tls12_cid version epoch seq cid length`, where
/// `length` is the DTLSInnerPlaintext's (content, real type, padding).
struct Ad {
    b: [u8; 23 + 255],
    n: usize,
}

impl Ad {
    fn new(epoch_seq: u64, ctype: u8, cid: Option<&[u8]>, len: usize) -> Ad {
        let mut ad = Ad {
            b: [0u8; 23 + 255],
            n: 0,
        };
        let mut put = |bytes: &[u8]| {
            ad.b[ad.n..ad.n + bytes.len()].copy_from_slice(bytes);
            ad.n += bytes.len();
        };
        let len = (len as u16).to_be_bytes();
        match cid {
            None => {
                put(&epoch_seq.to_be_bytes());
                put(&[ctype, 0xfe, 0xfd]);
            }
            Some(cid) => {
                // A CID is at most 255 bytes by its encoding; longer is cut, never overrun.
                let cid = &cid[..cid.len().min(255)];
                put(&[0xff; 8]);
                put(&[TLS12_CID, cid.len() as u8, TLS12_CID, 0xfe, 0xfd]);
                put(&epoch_seq.to_be_bytes());
                put(cid);
            }
        }
        put(&len);
        ad
    }

    fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

/// The outer content type of a record carrying a Connection ID (RFC 9146).
pub const TLS12_CID: u8 = 25;

/// Protects `plain` and appends the record fragment (what follows the record header) to `out`.
/// `iv` is fresh randomness for CBC's explicit IV (ignored by CCM-8, whose nonce is the sequence).
/// With a Connection ID (`cid`, the peer's), what is protected is RFC 9146's DTLSInnerPlaintext:
/// `plain`, then `ctype` (the record's outer type is then [`TLS12_CID`]), no padding.
// The record's identity (sequence, type, CID) and the protection inputs are all distinct
// things the caller has at hand; a struct for one call site per record kind would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn seal(
    suite: Suite,
    k: &DirectionKeys,
    epoch_seq: u64,
    ctype: u8,
    cid: Option<&[u8]>,
    plain: &[u8],
    iv: [u8; 16],
    out: &mut Vec<u8>,
) {
    let inner = cid.map(|_| ctype);
    let len = plain.len() + inner.is_some() as usize;
    let ad = Ad::new(epoch_seq, ctype, cid, len);
    let ad = ad.bytes();
    match suite.protection() {
        p @ (Protection::Ccm8 | Protection::Gcm) => {
            let explicit = epoch_seq.to_be_bytes();
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&k.salt);
            nonce[4..].copy_from_slice(&explicit);
            out.extend_from_slice(&explicit);
            let start = out.len();
            out.extend_from_slice(plain);
            out.extend(inner);
            let nonce = GenericArray::from_slice(&nonce);
            let body = &mut out[start..];
            // Only a plaintext beyond the AEAD's length limit fails; records are < 2^14.
            if p == Protection::Ccm8 {
                let tag = Ccm8::new(GenericArray::from_slice(&k.key))
                    .encrypt_in_place_detached(nonce, ad, body)
                    .expect("record within CCM length limit");
                out.extend_from_slice(&tag);
            } else {
                let tag = Aes128Gcm::new(GenericArray::from_slice(&k.key))
                    .encrypt_in_place_detached(nonce, ad, body)
                    .expect("record within GCM length limit");
                out.extend_from_slice(&tag);
            }
        }
        Protection::CbcSha256 => {
            out.extend_from_slice(&iv);
            let start = out.len();
            out.extend_from_slice(plain);
            out.extend(inner);
            let mac = hmac_sha256(&k.mac, &[ad, &out[start..]]);
            out.extend_from_slice(&mac);
            let body = len + 32;
            let pad = 15 - (body % 16);
            out.extend(std::iter::repeat(pad as u8).take(pad + 1));
            let mut enc = cbc::Encryptor::<Aes128>::new(
                GenericArray::from_slice(&k.key),
                GenericArray::from_slice(&iv),
            );
            for block in out[start..].chunks_exact_mut(16) {
                enc.encrypt_block_mut(GenericArray::from_mut_slice(block));
            }
        }
    }
}

/// Verifies and decrypts a record fragment in place; returns where the plaintext is in `frag`
/// (after the explicit nonce or IV). With a Connection ID (`cid`, ours, as the record carried
/// it) that is the DTLSInnerPlaintext, which [`inner_plaintext`] splits; `ctype` is then unused.
pub fn open(
    suite: Suite,
    k: &DirectionKeys,
    epoch_seq: u64,
    ctype: u8,
    cid: Option<&[u8]>,
    frag: &mut [u8],
) -> Option<std::ops::Range<usize>> {
    match suite.protection() {
        p @ (Protection::Ccm8 | Protection::Gcm) => {
            let tag_len = if p == Protection::Ccm8 { 8 } else { 16 };
            if frag.len() < 8 + tag_len {
                return None;
            }
            let plain_len = frag.len() - 8 - tag_len;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&k.salt);
            nonce[4..].copy_from_slice(&frag[..8]);
            let ad = Ad::new(epoch_seq, ctype, cid, plain_len);
            let ad = ad.bytes();
            let (body, tag) = frag[8..].split_at_mut(plain_len);
            let nonce = GenericArray::from_slice(&nonce);
            let ok = if p == Protection::Ccm8 {
                Ccm8::new(GenericArray::from_slice(&k.key))
                    .decrypt_in_place_detached(nonce, ad, body, GenericArray::from_slice(tag))
                    .is_ok()
            } else {
                Aes128Gcm::new(GenericArray::from_slice(&k.key))
                    .decrypt_in_place_detached(nonce, ad, body, GenericArray::from_slice(tag))
                    .is_ok()
            };
            ok.then_some(8..8 + plain_len)
        }
        Protection::CbcSha256 => {
            // IV, then at least one block holding MAC and padding.
            if frag.len() < 16 + 48 || frag.len() % 16 != 0 {
                return None;
            }
            let (iv, body) = frag.split_at_mut(16);
            let mut dec = cbc::Decryptor::<Aes128>::new(
                GenericArray::from_slice(&k.key),
                GenericArray::from_slice(iv),
            );
            for block in body.chunks_exact_mut(16) {
                dec.decrypt_block_mut(GenericArray::from_mut_slice(block));
            }
            let pad = *body.last()? as usize;
            // Padding and MAC are both checked before deciding, so a bad padding and a bad MAC
            // cost the same (no padding oracle beyond what the timing of HMAC over a slightly
            // different length reveals; DTLS drops bad records silently anyway).
            let pad_ok = pad + 1 + 32 <= body.len()
                && body[body.len() - pad - 1..]
                    .iter()
                    .all(|b| *b as usize == pad);
            let cut = if pad_ok { pad + 1 } else { 0 };
            let plain_len = body.len().saturating_sub(cut + 32);
            let ad = Ad::new(epoch_seq, ctype, cid, plain_len);
            let mac = hmac_sha256(&k.mac, &[ad.bytes(), &body[..plain_len]]);
            let mac_ok = ct_eq(&mac, &body[plain_len..plain_len + 32]);
            (pad_ok && mac_ok).then_some(16..16 + plain_len)
        }
    }
}

/// RFC 9146's DTLSInnerPlaintext split into its real content type and content: the last
/// non-zero byte is the type, zeros after it are padding. `None` for all zeros.
pub fn inner_plaintext(inner: &[u8]) -> Option<(u8, &[u8])> {
    let end = inner.iter().rposition(|b| *b != 0)?;
    Some((inner[end], &inner[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prf_matches_the_published_tls12_sha256_vector() {
        // The widely used TLS 1.2 PRF-SHA256 test vector (IETF TLS WG mailing list, 2009).
        let secret = hex("9bbe436ba940f017b17652849a71db35");
        let seed = hex("a0ba9f936cda311827a6f796ffd5198c");
        let mut out = [0u8; 100];
        prf(&secret, b"test label", &[&seed], &mut out);
        let want = hex(concat!(
            "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a",
            "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab",
            "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701",
            "87347b66"
        ));
        assert_eq!(&out[..], &want[..]);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn keys() -> DirectionKeys {
        DirectionKeys {
            key: [7; 16],
            salt: [1, 2, 3, 4],
            mac: [9; 32],
        }
    }

    #[test]
    fn both_suites_round_trip_and_reject_any_flipped_bit() {
        for suite in Suite::ALL {
            for len in [0usize, 1, 15, 16, 17, 100] {
                let plain: Vec<u8> = (0..len as u8).collect();
                let mut frag = Vec::new();
                seal(
                    suite,
                    &keys(),
                    0x0001_0000_0000_0005,
                    23,
                    None,
                    &plain,
                    [3; 16],
                    &mut frag,
                );
                assert!(frag.len() <= plain.len() + suite.overhead());
                let mut copy = frag.clone();
                let r = open(suite, &keys(), 0x0001_0000_0000_0005, 23, None, &mut copy).unwrap();
                assert_eq!(&copy[r], &plain[..], "{suite:?} len {len}");
                // Another sequence number or content type is another record.
                let mut copy = frag.clone();
                assert!(open(suite, &keys(), 0x0001_0000_0000_0006, 23, None, &mut copy).is_none());
                let mut copy = frag.clone();
                assert!(open(suite, &keys(), 0x0001_0000_0000_0005, 22, None, &mut copy).is_none());
                for i in 0..frag.len() {
                    let mut bad = frag.clone();
                    bad[i] ^= 0x10;
                    assert!(
                        open(suite, &keys(), 0x0001_0000_0000_0005, 23, None, &mut bad).is_none(),
                        "{suite:?} len {len} flipped byte {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_or_misaligned_fragments_are_refused() {
        for n in [0usize, 7, 15, 16 + 47, 16 + 49] {
            let mut f = vec![0u8; n];
            assert!(open(Suite::PskAes128CbcSha256, &keys(), 1, 23, None, &mut f).is_none());
            let mut f = vec![0u8; n.min(15)];
            assert!(open(Suite::PskAes128Ccm8, &keys(), 1, 23, None, &mut f).is_none());
        }
    }

    #[test]
    fn the_connection_id_additional_data_is_laid_out_as_rfc_9146_section_5_says() {
        let ad = Ad::new(0x0001_0000_0000_0203, 23, Some(&[0xaa, 0xbb, 0xcc]), 0x0102);
        let want = [
            &[0xff; 8][..],            // seq_num_placeholder
            &[25, 3, 25],              // tls12_cid, cid_length, tls12_cid
            &[0xfe, 0xfd],             // version
            &[0, 1, 0, 0, 0, 0, 2, 3], // epoch, sequence_number
            &[0xaa, 0xbb, 0xcc],       // cid
            &[1, 2],                   // length_of_DTLSInnerPlaintext
        ]
        .concat();
        assert_eq!(ad.bytes(), &want[..]);
        let classic = Ad::new(0x0001_0000_0000_0203, 23, None, 0x0102);
        assert_eq!(
            classic.bytes(),
            &[0, 1, 0, 0, 0, 0, 2, 3, 23, 0xfe, 0xfd, 1, 2][..]
        );
    }

    #[test]
    fn records_with_a_connection_id_round_trip_and_bind_the_cid_and_real_type() {
        let cid = [1u8, 2, 3, 4, 5, 6, 7, 8];
        for suite in Suite::ALL {
            let plain = b"coap over a connection id".to_vec();
            let mut frag = Vec::new();
            let es = 0x0001_0000_0000_0009;
            seal(
                suite,
                &keys(),
                es,
                23,
                Some(&cid),
                &plain,
                [5; 16],
                &mut frag,
            );
            assert!(frag.len() <= plain.len() + 1 + suite.overhead());
            let mut copy = frag.clone();
            let r = open(suite, &keys(), es, 0, Some(&cid), &mut copy).unwrap();
            assert_eq!(inner_plaintext(&copy[r]), Some((23, &plain[..])));
            // The CID is authenticated: another one, or none, does not open it.
            let mut copy = frag.clone();
            assert!(open(
                suite,
                &keys(),
                es,
                0,
                Some(&[1, 2, 3, 4, 5, 6, 7, 9]),
                &mut copy
            )
            .is_none());
            let mut copy = frag.clone();
            assert!(open(suite, &keys(), es, 23, None, &mut copy).is_none());
        }
        assert_eq!(inner_plaintext(&[7, 23, 0, 0]), Some((23, &[7u8][..])));
        assert_eq!(inner_plaintext(&[0, 0]), None);
        assert_eq!(inner_plaintext(&[]), None);
    }
}
