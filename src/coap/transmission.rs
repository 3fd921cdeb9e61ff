//! RFC 7252 §4.8 transmission parameters and the timeouts derived from them.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmissionParams {
    pub ack_timeout: Duration,
    pub ack_random_factor: f64,
    pub max_retransmit: u32,
}

impl Default for TransmissionParams {
    fn default() -> Self {
        TransmissionParams {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

impl TransmissionParams {
    /// Initial retransmission timeout for a CON: uniform in
    /// `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`; `unit` in `[0, 1)` comes from the caller's
    /// seeded RNG so that the core stays deterministic.
    pub fn initial_timeout(&self, unit: f64) -> Duration {
        let span = self.ack_timeout.as_secs_f64() * (self.ack_random_factor - 1.0);
        self.ack_timeout + Duration::from_secs_f64((span * unit.clamp(0.0, 1.0)).max(0.0))
    }

    /// MAX_TRANSMIT_SPAN = ACK_TIMEOUT * (2^MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR.
    pub fn max_transmit_span(&self) -> Duration {
        let factor = ((1u64 << self.max_retransmit.min(20)) - 1) as f64 * self.ack_random_factor;
        self.ack_timeout.mul_f64(factor)
    }

    /// EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY (100 s) + PROCESSING_DELAY
    /// (ACK_TIMEOUT): 247 s with the defaults. How long a message id stays a duplicate.
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + Duration::from_secs(200) + self.ack_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_defaults() {
        let p = TransmissionParams::default();
        assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(p.initial_timeout(0.0), Duration::from_secs(2));
        assert_eq!(p.initial_timeout(1.0), Duration::from_secs(3));
    }
}
