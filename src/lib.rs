//! lwm2m-gateway: an LwM2M server (CoAP over UDP) bridged to MQTT.
//!
//! Layers: [`coap`] and [`lwm2m`] are pure wire/data-model code; [`gateway`] holds the sans-IO
//! per-shard state machine plus the thin I/O shells (event loop, workers, MQTT thread);
//! [`config`] turns the file and flags into a validated [`config::Config`].

pub mod coap;
pub mod config;
pub mod gateway;
pub mod lwm2m;
