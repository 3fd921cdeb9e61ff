//! Settings of the sans-IO core: what a [`crate::core::shard::Shard`] is told at start. The
//! configuration layer (`crate::config`) reads files and flags and fills these in; the core never
//! reads the configuration itself.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::coap::TransmissionParams;
use crate::lwm2m::model::ObjectRegistry;

use super::topics::Topics;

/// When an Update is published on MQTT (EMQX `update_msg_publish_condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePublishCondition {
    Always,
    ContainsObjectList,
}

/// EMQX `auto_observe`: observe objects of every new registration.
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
    pub auto_observe: AutoObserve,
    pub block_szx: u8,
    pub block_max_body: usize,
    pub block_total_max: usize,
    pub topics: Topics,
    pub model: Arc<ObjectRegistry>,
}
