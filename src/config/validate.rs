//! Checks of the merged [`Config`] that a single value's parser cannot make: ranges, relations
//! between options, compiled topics, the broker URL. Each error names the option by its file key
//! (the error's `Display` adds the flag).

use std::time::Duration;

use super::translators::TRANSLATORS;
use super::{invalid, Config, ConfigError};

/// MQTT's largest packet: the Remaining Length field holds at most 268,435,455.
const MQTT_MAX_PACKET: usize = 268_435_455;

impl Config {
    fn validate_dtls(&self) -> Result<(), ConfigError> {
        let d = &self.dtls;
        if d.max_handshakes == 0 {
            return Err(invalid("dtls.max_handshakes", "must be at least 1"));
        }
        if d.max_sessions == 0 {
            return Err(invalid("dtls.max_sessions", "must be at least 1"));
        }
        if d.handshake_timeout.is_zero() {
            return Err(invalid("dtls.handshake_timeout", "must be above 0"));
        }
        if d.idle_timeout.is_zero() {
            return Err(invalid("dtls.idle_timeout", "must be above 0"));
        }
        if d.private_key.is_none() {
            if d.certificate.is_some() {
                return Err(invalid(
                    "dtls.certificate",
                    "needs dtls.private_key, the key of that certificate",
                ));
            }
            if !d.trust_anchors.is_empty() {
                return Err(invalid(
                    "dtls.trust_anchors",
                    "X.509 devices need the gateway's own key: set dtls.private_key (and dtls.certificate)",
                ));
            }
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        let Some(addr) = h.listen else {
            return Ok(());
        };
        // Kicking devices and driving them is not for whoever reaches the port.
        if !addr.ip().is_loopback() && h.token.as_deref().map_or(true, str::is_empty) {
            return Err(invalid(
                "http.token",
                format!("is required when http.listen ({addr}) is not a loopback address"),
            ));
        }
        if h.threads == 0 || h.threads > 256 {
            return Err(invalid("http.threads", "must be within 1..=256"));
        }
        if h.command_timeout.is_zero() {
            return Err(invalid("http.command_timeout", "must be above 0"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_registrations == 0 {
            return Err(invalid("limits.max_registrations", "must be at least 1"));
        }
        if l.register_rate > 0 && l.register_burst == 0 {
            return Err(invalid("limits.register_burst", "must be at least 1"));
        }
        if l.error_rate > 0 && l.error_burst == 0 {
            return Err(invalid("limits.error_burst", "must be at least 1"));
        }
        if l.error_rate > 0 && l.block_time.is_zero() {
            return Err(invalid("limits.block_time", "must be above 0"));
        }
        // The smallest CoAP request with a few options, and what one datagram may be.
        if !(64..=65_536).contains(&l.max_datagram) {
            return Err(invalid("limits.max_datagram", "must be within 64..=65536"));
        }
        if l.max_sources == 0 {
            return Err(invalid("limits.max_sources", "must be at least 1"));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        // Plain CoAP may be off (`listen = []`), when DTLS is on.
        if self.listen.is_empty() && self.dtls.listen.is_empty() {
            return Err(invalid(
                "listen",
                "at least one address is needed (here or in dtls.listen)",
            ));
        }
        self.validate_dtls()?;
        self.validate_limits()?;
        self.validate_http()?;
        if !(1..=256).contains(&self.workers) {
            return Err(invalid(
                "workers",
                format!("{} is not in 1..=256", self.workers),
            ));
        }
        if self.worker_queue == 0 {
            return Err(invalid("worker_queue", "must be at least 1"));
        }
        // Reserved up front, about 100 bytes each: a typo must not take the machine's memory.
        if self.expected_devices > 100_000_000 {
            return Err(invalid(
                "expected_devices",
                format!("{} is above 100000000", self.expected_devices),
            ));
        }
        if self.lifetime_min > self.lifetime_max {
            return Err(invalid(
                "lifetime_min",
                format!(
                    "{} is above lifetime_max {}",
                    self.lifetime_min, self.lifetime_max
                ),
            ));
        }
        self.validate_translators()?;
        let f = self.coap.ack_random_factor;
        if !(f.is_finite() && (1.0..=10.0).contains(&f)) {
            return Err(invalid(
                "coap.ack_random_factor",
                format!("{f} is not in 1.0..=10.0"),
            ));
        }
        if self.coap.max_retransmit > 20 {
            return Err(invalid("coap.max_retransmit", "above 20"));
        }
        if !(16..=1024).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            return Err(invalid(
                "blockwise.block_size",
                format!("{} is not a power of two in 16..=1024", self.block_size),
            ));
        }
        if self.block_max_body < self.block_size || self.block_total_max < self.block_max_body {
            return Err(invalid(
                "blockwise.max_body",
                "need block_size <= max_body <= total_max",
            ));
        }
        if self.downlink_queue_max == 0 {
            return Err(invalid("downlink_queue_max", "must be at least 1"));
        }
        self.validate_mqtt()?;
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace" | "off"
        ) {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not error|warn|info|debug|trace|off",
                    self.log_level
                ),
            ));
        }
        Ok(())
    }

    fn validate_translators(&self) -> Result<(), ConfigError> {
        for spec in &TRANSLATORS {
            let t = (spec.config)(&self.translators);
            if t.qos > 2 {
                return Err(invalid(spec.qos_id, format!("{} is not 0, 1 or 2", t.qos)));
            }
            if t.topic.is_empty() && self.mountpoint.is_empty() {
                return Err(invalid(spec.topic_id, "empty topic"));
            }
        }
        crate::core::topics::Topics::new(&self.mountpoint, &self.translators)
            .map_err(|e| invalid("translators.command.topic", e))?;
        Ok(())
    }

    fn validate_mqtt(&self) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        if let Some(url) = &m.url {
            super::parse_mqtt_url(url).map_err(|e| invalid("mqtt.url", e))?;
        }
        if m.keep_alive < Duration::from_secs(5) {
            return Err(invalid("mqtt.keep_alive", "must be at least 5 s"));
        }
        if m.inflight == 0 {
            return Err(invalid("mqtt.inflight", "must be at least 1"));
        }
        if m.channel_capacity == 0 {
            return Err(invalid("mqtt.channel_capacity", "must be at least 1"));
        }
        if !(1024..=MQTT_MAX_PACKET).contains(&m.max_packet_size) {
            return Err(invalid(
                "mqtt.max_packet_size",
                format!("{} is not in 1024..={MQTT_MAX_PACKET}", m.max_packet_size),
            ));
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            return Err(invalid(
                "mqtt.reconnect_min",
                format!(
                    "{:?} is not in (0, reconnect_max {:?}]",
                    m.reconnect_min, m.reconnect_max
                ),
            ));
        }
        Ok(())
    }
}

/// `mqtt://host[:port]` or `tcp://host[:port]` or `host[:port]` -> (host, port); 1883 by default.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(format!("{url:?}: only mqtt:// (plain TCP) is supported"));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    // [v6]:port, host:port or host
    if let Some(r) = rest.strip_prefix('[') {
        let (host, tail) = r
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            None if tail.is_empty() => 1883,
            None => return Err(format!("{url:?}: junk after ]")),
        };
        return Ok((host.to_string(), port));
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?;
            Ok((h.to_string(), port))
        }
        _ => Ok((rest.to_string(), 1883)),
    }
}
