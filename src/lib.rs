//! lwm2m-gateway: an LwM2M server (CoAP over UDP) bridged to MQTT.
//!
//! Layers, innermost first (ARCHITECTURE.md has the map):
//! - [`coap`] and [`lwm2m`]: pure wire formats and the LwM2M data model;
//! - [`core`]: the sans-IO gateway core (routing, the per-worker [`core::shard::Shard`] state
//!   machine, commands in, EMQX JSON out). It takes `now` and bytes and returns what to do;
//! - [`runtime`]: the I/O shells (event loop, workers, MQTT thread, embedded broker, metrics);
//! - [`config`]: files and flags turned into a validated [`config::Config`];
//! - [`security`]: device credentials for DTLS (the store, its file, its MQTT management).
//!
//! Dependencies point inwards only: `runtime` and `config` use `core`; `core` uses neither.

pub mod coap;
pub mod config;
pub mod core;
pub mod dtls;
pub mod http;
pub mod lwm2m;
pub mod persist;
pub mod runtime;
pub mod security;
