//! The sans-IO gateway core: everything that decides what the gateway does, and nothing that does
//! I/O. Entry points take `now` and bytes (a datagram, a command) and return what the shells
//! must do (datagrams to send, MQTT messages to publish, routing-index changes). No clock, socket,
//! channel or lock is touched here, so every behaviour is testable with a fake clock.
//!
//! - [`router`]: which worker a datagram belongs to, from the few bytes routing needs;
//! - [`ids`]: the identifiers the gateway chooses and the shard number they carry;
//! - [`peer`]: where a datagram came from (listener, address, authenticated identity);
//! - [`shard`]: the per-worker LwM2M server state machine;
//! - [`registration`], [`request`], [`uplink`], [`topics`]: registration parameters, commands
//!   mapped to CoAP requests, the EMQX JSON envelope, MQTT topic templates;
//! - [`settings`]: what a shard is configured with.

pub mod authorize;
pub mod command;
pub mod ids;
pub mod intmap;
pub mod limits;
pub mod peer;
pub mod registration;
pub mod request;
pub mod router;
pub mod settings;
pub mod shard;
pub mod timers;
pub mod topics;
pub mod uplink;
