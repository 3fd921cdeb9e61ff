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
//! - [`record`]: record framing and the replay window;
//! - [`handshake`]: handshake message framing and the hellos;
//! - [`cookie`]: stateless HelloVerifyRequest cookies;
//! - [`server`]: one worker's associations (handshakes and sessions) keyed by peer;
//! - [`client`]: a PSK client, for tests and the load generator.

pub mod client;
pub mod cookie;
pub mod crypto;
pub mod handshake;
pub mod record;
pub mod server;

pub use crypto::Suite;
pub use server::{ConnKey, PskStore, Server};

#[cfg(test)]
mod tests;
