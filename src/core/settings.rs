//! Settings of the sans-IO core: what a [`crate::core::shard::Shard`] is told at start. The
//! configuration layer (`crate::config`) reads files and flags and fills these in; the core never
//! reads the configuration itself.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, IntoDeserializer, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::coap::TransmissionParams;
use crate::lwm2m::model::ObjectRegistry;

use super::authorize::Authorizer;
use super::topics::Topics;

/// When an Update is published on MQTT (EMQX `update_msg_publish_condition`). Spelled as in EMQX
/// (`always`, `contains_object_list`); the kebab-case `contains-object-list` is accepted too, by
/// [`FromStr`] and by serde alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePublishCondition {
    Always,
    #[serde(alias = "contains-object-list")]
    ContainsObjectList,
}

/// The serde spellings above, so that a flag accepts exactly what a file does.
impl FromStr for UpdatePublishCondition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        UpdatePublishCondition::deserialize(s.into_deserializer())
            .map_err(|e: de::value::Error| e.to_string())
    }
}

/// How a write is encoded when its command names no `data.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteEncoding {
    /// The best format the device announced for its LwM2M version; a device that announced
    /// none gets single-resource writes as text/plain (opaque values as raw bytes), which
    /// text-only clients such as lwm2m-node-lib need, and batches as TLV.
    #[default]
    Auto,
    /// TLV for every write, as EMQX does.
    Tlv,
}

impl FromStr for WriteEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        WriteEncoding::deserialize(s.into_deserializer())
            .map_err(|e: de::value::Error| e.to_string())
    }
}

/// EMQX `auto_observe`: observe objects of every new registration. Read by [`FromStr`] (see
/// [`AutoObserve::parse`]) and by serde (a bool, that string, or a list of paths).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AutoObserve {
    #[default]
    Off,
    /// Every registered object/instance, except objects 0, 1, 2, 4, 5, 6, 7, 9, 15 and objects
    /// without a definition (EMQX master).
    All,
    /// These paths, in this order, when the device registered exactly that entry.
    Paths(Vec<String>),
}

impl AutoObserve {
    /// `false`/`off`, `true`/`on`, or a comma/space separated path list.
    pub fn parse(s: &str) -> Result<AutoObserve, String> {
        match s.trim() {
            "false" | "off" | "" => Ok(AutoObserve::Off),
            "true" | "on" => Ok(AutoObserve::All),
            list => AutoObserve::from_list(
                list.split([',', ' '])
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        }
    }

    pub fn from_list(paths: Vec<String>) -> Result<AutoObserve, String> {
        for p in &paths {
            let path = crate::lwm2m::Path::parse(p).map_err(|e| format!("{p:?}: {e}"))?;
            if path.is_root() || !p.starts_with('/') {
                return Err(format!("{p:?} is not an absolute object path like /3/0"));
            }
        }
        Ok(AutoObserve::Paths(paths))
    }
}

/// [`AutoObserve::parse`].
impl FromStr for AutoObserve {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AutoObserve::parse(s)
    }
}

/// `auto_observe` in a file: a bool, a string for [`AutoObserve::parse`], or a list of paths.
impl<'de> Deserialize<'de> for AutoObserve {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AutoObserve;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or object paths (\"/3/0,/3303/0\" or a list)")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AutoObserve, E> {
                Ok(if v {
                    AutoObserve::All
                } else {
                    AutoObserve::Off
                })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<AutoObserve, E> {
                AutoObserve::parse(v).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AutoObserve, A::Error> {
                let mut paths = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    paths.push(p);
                }
                AutoObserve::from_list(paths).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `false`, `true` or the list of paths: what [`Deserialize`] reads back.
impl Serialize for AutoObserve {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AutoObserve::Off => s.serialize_bool(false),
            AutoObserve::All => s.serialize_bool(true),
            AutoObserve::Paths(p) => p.serialize(s),
        }
    }
}

/// What a shard needs to know: the protocol settings taken from the configuration, the compiled
/// topics and the object model. Built by the configuration layer (`Config::shard_config`).
#[derive(Debug)]
pub struct ShardConfig {
    pub shards: u16,
    pub lifetime_range: (u32, u32),
    pub transmission: TransmissionParams,
    pub separate_response_timeout: Duration,
    pub dedup_max_entries: usize,
    /// Registrations each shard makes room for at start (`expected_devices` / workers).
    pub expected_per_shard: usize,
    pub downlink_queue_max: usize,
    pub downlink_queue_max_age: Option<Duration>,
    pub qmode_time_window: Duration,
    pub update_condition: UpdatePublishCondition,
    pub write_encoding: WriteEncoding,
    pub auto_observe: AutoObserve,
    pub block_szx: u8,
    pub block_max_body: usize,
    pub block_total_max: usize,
    /// Registrations this shard holds at most (`limits.max_registrations` / workers).
    pub max_registrations_per_shard: usize,
    pub topics: Topics,
    pub model: Arc<ObjectRegistry>,
    /// Who may register as which endpoint ([`super::authorize`]).
    pub authorizer: Arc<dyn Authorizer>,
}
