//! The gateway's durable state on disk (issue 12): what a restart must not lose, in a format of
//! our own.
//!
//! - [`wire`]: the byte encoding (LEB128 integers, length-prefixed bytes), the record framing
//!   (length + CRC-32 + payload) and the file header (magic, format version, what wrote it).
//!   Decoding never panics and never trusts a length: a cut or corrupt record ends the read, and
//!   the caller learns how much was dropped.
//!
//! What is written is each shard's image (`core::shard` exports and imports it, sans-IO): one
//! record per registration, its observations and queued commands inside, and the shard's
//! generator positions in the header. Why our own format and not an embedded store: the state
//! is owned by one thread per shard, written as a whole at shutdown and as appended changes
//! between, and read once at start; a key-value store's transactions, pages and locks would be
//! paid on every registration for nothing the shard needs.

pub mod wire;
