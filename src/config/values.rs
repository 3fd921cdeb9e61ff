//! Value types of options that need more than the standard parsers: each reads the same way from
//! a flag ([`FromStr`], used by clap) and from the file (serde), rejects a bad value there, and
//! serializes back to what it reads (the help shows defaults that way), except that a password
//! never shows.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};

/// A positive, finite number of seconds below 10^9, fractions allowed: `2`, `0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Seconds(pub Duration);

impl TryFrom<f64> for Seconds {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, String> {
        if !(v.is_finite() && v > 0.0 && v < 1e9) {
            return Err(format!("{v} is not a positive number of seconds"));
        }
        Ok(Seconds(Duration::from_secs_f64(v)))
    }
}

impl From<Seconds> for f64 {
    fn from(s: Seconds) -> f64 {
        s.0.as_secs_f64()
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        Seconds::try_from(v)
    }
}

/// Where the HTTP API listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<std::net::SocketAddr>);

impl FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "off" => Ok(HttpListen(None)),
            a => a
                .parse()
                .map(|a| HttpListen(Some(a)))
                .map_err(|_| format!("{s:?} is neither an address (127.0.0.1:8080) nor off")),
        }
    }
}

impl Serialize for HttpListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str("off"),
        }
    }
}

impl<'de> Deserialize<'de> for HttpListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A password: its `Debug` and its serialization never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<hidden>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// MQTT protocol version of the gateway's connection: `auto` (MQTT 5, or 3.1.1 when the broker
/// refuses 5), `3.1.1` or `5`; EMQX's `proto_ver` spellings `v4` (= 3.1.1) and `v5` are accepted
/// too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum MqttVersion {
    /// MQTT 5 where the broker speaks it, else 3.1.1 (the fallback lasts until a restart)
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// MQTT 3.1.1 (protocol level 4) only
    #[serde(rename = "3.1.1", alias = "v4")]
    V311,
    /// MQTT 5 only: a broker that refuses it is retried with backoff, never fallen back from
    #[serde(rename = "5", alias = "v5")]
    V5,
}

/// The serde spellings above, so that a flag accepts exactly what a file does.
impl FromStr for MqttVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        MqttVersion::deserialize(s.into_deserializer())
            .map_err(|e: serde::de::value::Error| e.to_string())
    }
}
