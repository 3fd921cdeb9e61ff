//! Device security for the DTLS listener: which endpoint may connect how, and with what.
//!
//! - [`credentials`]: the credential types, the [`CredentialStore`] with its three lookups
//!   (endpoint, PSK identity, public key), and its file format (TOML or JSON);
//! - [`shared`]: [`SharedCredentials`], the store shared between threads, reloaded whole from
//!   its file or changed one entry at a time and saved back;
//! - [`management`]: the MQTT commands that change it (`credential-add`, `-remove`, `-get`,
//!   `-list`), as a pure function from request payload to answer;
//! - [`policy`]: the store put to work: identity interning, the core's authorizer, the DTLS
//!   server's authenticator;
//! - [`trust`]: X.509 trust anchors (webpki) and the gateway's own certificate and key.
//!
//! Contract for everything here: a PSK key leaves this module only through
//! [`Secret::expose`] (for the handshake) and the credentials file itself
//! ([`CredentialStore::to_text`], [`CredentialStore::save`]). No `Debug`, `Display`, error
//! message or MQTT answer carries it. The sans-IO core never sees any of this: the DTLS layer
//! interns an authenticated identity and hands the core only its id (`core::peer`).

pub mod credentials;
mod device_tables;
mod json_entries;
pub mod management;
pub mod policy;
pub mod shared;
pub mod trust;

pub use credentials::{
    Conflict, ConflictKind, Credential, CredentialStore, DeviceCredential, EntryError, FileError,
    FileErrorKind, Format, Secret, SecurityMode,
};
pub use policy::{DeviceKeys, Identities, Policy};
pub use shared::{ReloadSummary, SharedCredentials};
pub use trust::{TrustAnchors, TrustError};
