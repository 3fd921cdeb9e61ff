//! The gateway proper: the sans-IO core ([`shard`], [`registration`], [`downlink`], [`envelope`],
//! [`topics`], [`router`], [`intmap`], [`timers`], [`addr_index`]) and the I/O shells around it ([`runtime`]: event loop,
//! workers, embedded broker; [`mqtt`]: the MQTT connection over the sans-IO [`mqtt_session`]; [`udp`]: batched datagram I/O; [`sockopt`]: TCP_NODELAY for the embedded broker).

pub mod addr_index;
pub mod doorbell;
pub mod downlink;
pub mod envelope;
pub mod intmap;
pub mod mqtt;
pub mod mqtt_session;
pub mod registration;
pub mod router;
pub mod runtime;
pub mod shard;
pub mod sockopt;
pub mod timers;
pub mod topics;
pub mod udp;

pub use shard::{IndexUpdate, Output, Peer, Publish, Shard, ShardConfig, Transmit};
