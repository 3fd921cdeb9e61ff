//! LwM2M data model: paths, typed values, object definitions (OMA DDF XML), link-format and the
//! content-format codecs.
//!
//! Contract: everything here is pure (no I/O besides the XML directory loader, no clock, no locks) and
//! never panics on bytes a device sends. Decoders are bounded by the bytes actually present and by a
//! nesting depth; they return `Err` instead of guessing. The gateway talks to this layer through a few
//! entry points only:
//! - [`Path::parse`] for paths from MQTT commands and Uri-Path;
//! - [`codec::decode`] / [`codec::encode`] keyed by [`ContentFormat`], producing/consuming flat
//!   [`Record`] lists (the shape of the MQTT `content` array);
//! - [`json`] to map records to and from the MQTT JSON contract;
//! - [`link_format`] for Register payloads and Discover responses;
//! - [`model::ObjectRegistry`] for resource types (through the [`ResourceTypes`] trait).

pub mod codec;
pub mod json;
pub mod link_format;
pub mod model;
mod path;
mod value;

pub use path::{Path, PathError};
pub use value::{ContentFormat, NoTypes, Record, ResourceType, ResourceTypes, Value};
