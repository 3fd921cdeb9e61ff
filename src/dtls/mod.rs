//! DTLS 1.2 (RFC 6347) for the gateway's secure listener, sans-IO and deterministic: the
//! caller passes the clock and the randomness seed, feeds datagrams in and sends what comes out.
//!
//! Why our own: the spike (ARCHITECTURE.md "DTLS") compared OpenSSL driven through
//! memory buffers and the pure-Rust sans-IO `dimpl`. Neither can save and restore a live
//! session (restarts would force every device to handshake again), neither has Connection ID
//! (RFC 9146), OpenSSL's per-session footprint is tens of KiB, and `dimpl` lacks the CBC PSK
//! suite. The PSK handshake is small; the cryptography is RustCrypto's (AES, CCM, CBC, HMAC,
//! SHA-256), and real clients (libcoap with OpenSSL and GnuTLS, aiocoap with tinydtls) are the
//! interop proof in the integration tests.
//!
//! - [`crypto`]: PRF, key expansion, record protection for the suites in [`Suite`];
//! - [`record`]: record framing (with Connection IDs) and the replay window;
//! - [`handshake`]: handshake message framing and the hellos;
//! - [`cookie`]: stateless HelloVerifyRequest cookies;
//! - [`ecdhe`]: the certificate and raw-public-key messages of the ECDHE_ECDSA suites;
//! - [`server`]: one worker's associations (handshakes and sessions) keyed by peer;
//! - [`x509`]: the subject common name and public key of a certificate;
//! - [`client`]: a PSK client, for tests and the load generator.

pub mod client;
pub mod cookie;
pub mod crypto;
pub mod ecdhe;
pub mod handshake;
pub mod record;
pub mod server;
pub mod x509;

pub use crypto::Suite;
pub use server::{Authenticator, ConnKey, PeerAuth, Server};

#[cfg(test)]
mod tests;
