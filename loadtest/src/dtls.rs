//! DTLS (PSK) devices: their credentials, and the credentials file the gateway loads.
//!
//! Every simulated device `<prefix><i>` has a deterministic PSK credential, so that the harness
//! and the gateway agree on it without exchanging anything but the file `--write-credentials`
//! writes:
//!
//! - identity: the endpoint name's bytes (`dtls-42` -> `b"dtls-42"`);
//! - key: 16 bytes, FNV-1a 64 of the endpoint name with the standard offset basis
//!   (`0xcbf29ce484222325`), big-endian, followed by FNV-1a 64 of the name with the offset basis
//!   `0x84222325cbf29ce4` (the standard one with its halves swapped), big-endian.
//!
//! This is a load-test credential, not a secret: anyone who knows the name knows the key.
//!
//! The handshake itself is the gateway crate's sans-IO client
//! (`lwm2m_gateway::dtls::client::Client`); `fleet.rs` drives one per device.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use lwm2m_gateway::dtls::Suite;

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const BASIS_HI: u64 = 0xcbf2_9ce4_8422_2325;
const BASIS_LO: u64 = 0x8422_2325_cbf2_9ce4;

fn fnv1a64(basis: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(basis, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

/// The PSK of the device named `endpoint` (see the module documentation).
pub fn psk_key(endpoint: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&fnv1a64(BASIS_HI, endpoint.as_bytes()).to_be_bytes());
    k[8..].copy_from_slice(&fnv1a64(BASIS_LO, endpoint.as_bytes()).to_be_bytes());
    k
}

/// The cipher suite the devices offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DtlsSuite {
    /// TLS_PSK_WITH_AES_128_CCM_8 (LwM2M's mandatory PSK suite).
    Ccm8,
    /// TLS_PSK_WITH_AES_128_CBC_SHA256.
    CbcSha256,
}

impl DtlsSuite {
    pub fn suite(self) -> Suite {
        match self {
            DtlsSuite::Ccm8 => Suite::PskAes128Ccm8,
            DtlsSuite::CbcSha256 => Suite::PskAes128CbcSha256,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DtlsSuite::Ccm8 => "TLS_PSK_WITH_AES_128_CCM_8",
            DtlsSuite::CbcSha256 => "TLS_PSK_WITH_AES_128_CBC_SHA256",
        }
    }
}

/// Writes the credentials of devices `<prefix>0..n` in the gateway's credentials-file format
/// (TOML, `[[device]]` entries with `mode = "psk"`).
pub fn write_credentials_to(out: impl Write, prefix: &str, n: usize) -> io::Result<()> {
    let mut w = BufWriter::new(out);
    writeln!(
        w,
        "# lwm2m-loadtest --write-credentials: PSK credentials of {n} simulated devices \
         {prefix}0..{prefix}{}.",
        n.saturating_sub(1)
    )?;
    writeln!(
        w,
        "# identity = endpoint name; key = FNV-1a 64 of the name (two offset bases), see loadtest/src/dtls.rs."
    )?;
    let mut hex = String::with_capacity(32);
    for i in 0..n {
        let ep = format!("{prefix}{i}");
        hex.clear();
        for b in psk_key(&ep) {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
        }
        let q = toml_string(&ep);
        writeln!(
            w,
            "\n[[device]]\nendpoint = {q}\nmode = \"psk\"\nidentity = {q}\nkey_hex = \"{hex}\""
        )?;
    }
    w.flush()
}

/// Writes the credentials file `path` (mode 0600, like the gateway's own saves).
pub fn write_credentials(path: &Path, prefix: &str, n: usize) -> io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    write_credentials_to(o.open(path)?, prefix, n)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwm2m_gateway::security::{Credential, CredentialStore, Format};

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a", "foobar".
        assert_eq!(fnv1a64(BASIS_HI, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(BASIS_HI, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(BASIS_HI, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn keys_are_deterministic_and_distinct() {
        assert_eq!(psk_key("dtls-0"), psk_key("dtls-0"));
        assert_ne!(psk_key("dtls-0"), psk_key("dtls-1"));
        let k = psk_key("foobar");
        assert_eq!(k[..8], 0x85944171f73967e8u64.to_be_bytes());
        assert_ne!(k[..8], k[8..]);
    }

    #[test]
    fn the_gateway_loads_the_written_file_with_the_harness_keys() {
        let mut text = Vec::new();
        write_credentials_to(&mut text, "lt-\"q\"-", 1000).unwrap();
        let text = String::from_utf8(text).unwrap();
        let (store, errors) = CredentialStore::parse(&text, Format::Toml).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.len(), 1000);
        for i in [0, 1, 999] {
            let ep = format!("lt-\"q\"-{i}");
            let c = store.by_endpoint(&ep).expect("listed");
            let Credential::Psk { identity, key } = &c.credential else {
                panic!("{ep}: not PSK");
            };
            assert_eq!(&identity[..], ep.as_bytes());
            assert_eq!(key.expose(), psk_key(&ep));
            assert_eq!(
                store.by_psk_identity(ep.as_bytes()).map(|c| &c.endpoint),
                Some(&ep)
            );
        }
    }

    #[test]
    fn the_file_on_disk_loads_too() {
        let dir = std::env::temp_dir().join(format!("lt-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.toml");
        write_credentials(&path, "dtls-", 3).unwrap();
        let (store, errors) = CredentialStore::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(errors.is_empty());
        assert_eq!(store.len(), 3);
        let Credential::Psk { key, .. } = &store.by_endpoint("dtls-0").unwrap().credential else {
            panic!("not PSK");
        };
        assert_eq!(key.expose(), psk_key("dtls-0"));
    }
}
