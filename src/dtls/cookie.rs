//! Stateless HelloVerifyRequest cookies (RFC 6347 §4.2.1): a ClientHello must return a cookie
//! that only the server could have made for that source address and those hello parameters
//! before the server keeps anything for the peer, so a flood of spoofed ClientHellos costs one
//! HMAC and one small reply each and allocates nothing.
//!
//! The secret rotates; a cookie made with the current or the previous secret is accepted, so a
//! cookie lives between one and two rotation periods.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::crypto::{ct_eq, hmac_sha256};
use super::handshake::ClientHello;

pub const COOKIE_LEN: usize = 16;

pub struct CookieJar {
    current: [u8; 32],
    previous: [u8; 32],
    rotated: Instant,
    period: Duration,
}

impl CookieJar {
    pub fn new(now: Instant, period: Duration, secret: [u8; 32]) -> CookieJar {
        CookieJar {
            current: secret,
            previous: secret,
            rotated: now,
            period,
        }
    }

    /// Replaces the secret when a period has passed; `fresh` supplies the new one.
    pub fn rotate_if_due(&mut self, now: Instant, fresh: impl FnOnce() -> [u8; 32]) {
        if now.saturating_duration_since(self.rotated) >= self.period {
            self.previous = self.current;
            self.current = fresh();
            self.rotated = now;
        }
    }

    fn make(secret: &[u8; 32], listener: u16, addr: SocketAddr, ch: &ClientHello) -> [u8; 16] {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        let mac = hmac_sha256(
            secret,
            &[
                &listener.to_be_bytes(),
                &ip,
                &addr.port().to_be_bytes(),
                &ch.version,
                &ch.random,
                &[ch.session_id.len() as u8],
                ch.session_id,
                ch.suites,
            ],
        );
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&mac[..COOKIE_LEN]);
        c
    }

    /// The cookie to send in a HelloVerifyRequest.
    pub fn issue(&self, listener: u16, addr: SocketAddr, ch: &ClientHello) -> [u8; 16] {
        Self::make(&self.current, listener, addr, ch)
    }

    pub fn verify(&self, listener: u16, addr: SocketAddr, ch: &ClientHello) -> bool {
        ch.cookie.len() == COOKIE_LEN
            && (ct_eq(ch.cookie, &Self::make(&self.current, listener, addr, ch))
                || ct_eq(ch.cookie, &Self::make(&self.previous, listener, addr, ch)))
    }
}
