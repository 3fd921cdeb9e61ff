//! Device credentials: who may connect in which security mode, looked up the three ways a DTLS
//! handshake needs (by endpoint, by the PSK identity a client offers, by the raw public key it
//! presents), and the file they are kept in.
//!
//! # The file
//!
//! TOML (`.toml`) or JSON (`.json`, `{"devices": [ {entry}, .. ]}`); the same keys in both:
//!
//! ```toml
//! [[device]]
//! endpoint = "urn:imei:123"   # 1..=255 bytes, no control characters
//! mode = "psk"
//! identity = "dev123"         # UTF-8, or identity_hex = "..."; 1..=128 bytes
//! key_hex = "00112233..."     # or key_base64 = "..."; 1..=64 bytes
//!
//! [[device]]
//! endpoint = "sensor-7"
//! mode = "x509"               # common_name = "..." optional: the certificate CN must equal it,
//!                             # or the endpoint when absent
//! [[device]]
//! endpoint = "rpk-dev"
//! mode = "rpk"
//! public_key_base64 = "MFkw..."  # SubjectPublicKeyInfo DER (or public_key_hex), at most 2048 bytes
//!
//! [[device]]
//! endpoint = "legacy"
//! mode = "nosec"              # allowed on plain CoAP
//! ```
//!
//! # What is refused, and how
//!
//! A file that is not TOML/JSON at all, or whose top level is not a `device` array (`devices`
//! in JSON), is a [`FileError`] (with line and column when the parser gives them). Anything
//! wrong with one entry (unknown mode or key, a missing, doubled or undecodable field, a length
//! out of range, an endpoint already listed, a PSK identity or public key another endpoint
//! already has) skips that entry only and is reported as an [`EntryError`]: the gateway starts
//! with what could be read. The first of two entries wins.
//!
//! # Secrets
//!
//! A PSK key is a [`Secret`]: its `Debug` prints only its length and it compares in constant
//! time. No error here quotes a value (parser messages for TOML are reduced to their position
//! and first line for this reason). Only [`CredentialStore::to_text`] / [`CredentialStore::save`]
//! write keys, because the file is where they belong; `save` makes it mode 0600.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value as Json};

/// Longest accepted endpoint name and X.509 common name, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest accepted PSK identity, in bytes.
pub const MAX_PSK_IDENTITY: usize = 128;
/// Longest accepted PSK key, in bytes (RFC 4279 allows more; LwM2M clients use 16 or 32).
pub const MAX_PSK_KEY: usize = 64;
/// Longest accepted SubjectPublicKeyInfo: room for an RSA-8192 key, so that a wrongly pasted
/// certificate chain does not pass for a key.
pub const MAX_PUBLIC_KEY: usize = 2048;

pub use crate::core::peer::SecurityMode;

/// Key material that must not leak: `Debug` shows the length only, equality takes the same time
/// whichever byte differs (only the length may show).
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Secret {
        Secret(bytes.into())
    }

    /// The key itself, for the handshake (and the credentials file). Nothing else should call it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        if self.0.len() != other.0.len() {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keeps the optimiser from turning the fold into an early-exit comparison.
        std::hint::black_box(diff) == 0
    }
}

impl Eq for Secret {}

/// What a device must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// This endpoint is allowed on plain CoAP.
    NoSec,
    Psk {
        identity: Box<[u8]>,
        key: Secret,
    },
    /// The client certificate's CN must equal `common_name`, or the endpoint when `None`.
    X509 {
        common_name: Option<String>,
    },
    /// SubjectPublicKeyInfo, DER.
    Rpk {
        public_key: Box<[u8]>,
    },
}

impl Credential {
    pub fn mode(&self) -> SecurityMode {
        match self {
            Credential::NoSec => SecurityMode::NoSec,
            Credential::Psk { .. } => SecurityMode::Psk,
            Credential::X509 { .. } => SecurityMode::X509,
            Credential::Rpk { .. } => SecurityMode::Rpk,
        }
    }
}

/// One endpoint's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    pub endpoint: String,
    pub credential: Credential,
}

impl DeviceCredential {
    pub fn mode(&self) -> SecurityMode {
        self.credential.mode()
    }

    fn psk_identity(&self) -> Option<&[u8]> {
        match &self.credential {
            Credential::Psk { identity, .. } => Some(identity),
            _ => None,
        }
    }

    fn public_key(&self) -> Option<&[u8]> {
        match &self.credential {
            Credential::Rpk { public_key } => Some(public_key),
            _ => None,
        }
    }
}

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// By extension, `.toml` or `.json` (any case).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("toml") {
            Some(Format::Toml)
        } else if ext.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    /// The top-level key holding the entries.
    fn list_key(self) -> &'static str {
        match self {
            Format::Toml => "device",
            Format::Json => "devices",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

/// Nothing of the file could be used.
#[derive(Debug)]
pub struct FileError {
    /// Set by [`CredentialStore::load`].
    pub path: Option<PathBuf>,
    /// 1-based, when the parser tells.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub kind: FileErrorKind,
}

#[derive(Debug)]
pub enum FileErrorKind {
    Io(io::Error),
    /// The extension is neither `.toml` nor `.json`.
    UnknownFormat,
    /// Not TOML/JSON at all: the parser's message, without any quoted text.
    Syntax(Format, String),
    /// Valid TOML/JSON, but not a list of devices.
    Shape(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(l) = self.line {
            write!(f, "line {l}")?;
            if let Some(c) = self.column {
                write!(f, " column {c}")?;
            }
            f.write_str(": ")?;
        }
        match &self.kind {
            FileErrorKind::Io(e) => write!(f, "cannot read: {e}"),
            FileErrorKind::UnknownFormat => {
                f.write_str("unknown credentials file format (expected .toml or .json)")
            }
            FileErrorKind::Syntax(format, m) => write!(f, "invalid {format}: {m}"),
            FileErrorKind::Shape(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            FileErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl FileError {
    fn new(kind: FileErrorKind) -> FileError {
        FileError {
            path: None,
            line: None,
            column: None,
            kind,
        }
    }
}

/// One entry that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// Position in the file's list, from 0.
    pub index: usize,
    /// When the entry had a usable one.
    pub endpoint: Option<String>,
    /// Names fields, never quotes their values.
    pub reason: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credential entry {}", self.index)?;
        if let Some(ep) = &self.endpoint {
            write!(f, " (endpoint {ep:?})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for EntryError {}

/// Which unique value is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    PskIdentity,
    PublicKey,
}

/// `endpoint`'s PSK identity or public key already belongs to `owner`: a handshake could not
/// tell the two devices apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub endpoint: String,
    pub owner: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ConflictKind::PskIdentity => "PSK identity",
            ConflictKind::PublicKey => "public key",
        };
        write!(f, "{what} already belongs to endpoint {:?}", self.owner)
    }
}

impl std::error::Error for Conflict {}

/// Every device's credential, indexed three ways. The indexes are kept in step by `insert` and
/// `remove` only; every entry in them is the same `Arc` as in `by_endpoint`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CredentialStore {
    /// Ordered, so that listing pages are stable.
    by_endpoint: BTreeMap<String, Arc<DeviceCredential>>,
    by_identity: HashMap<Box<[u8]>, Arc<DeviceCredential>>,
    by_public_key: HashMap<Box<[u8]>, Arc<DeviceCredential>>,
    /// x509 credentials that name a common name other than their endpoint.
    by_common_name: HashMap<String, Arc<DeviceCredential>>,
}

impl CredentialStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a credentials file's text: the store of every good entry, and why the others were
    /// skipped.
    pub fn parse(
        text: &str,
        format: Format,
    ) -> Result<(CredentialStore, Vec<EntryError>), FileError> {
        let mut store = CredentialStore::new();
        let mut errors = Vec::new();
        let mut first_at: HashMap<String, usize> = HashMap::new();
        let mut index = 0usize;
        let mut add = |entry: Json| {
            let c = match parse_entry(&entry) {
                Ok(c) => c,
                Err(b) => {
                    errors.push(EntryError {
                        index,
                        endpoint: b.endpoint,
                        reason: b.reason,
                    });
                    index += 1;
                    return;
                }
            };
            let endpoint = c.endpoint.clone();
            // `insert` would replace: in a file, a second entry for an endpoint is a mistake.
            if let Some(first) = first_at.get(&endpoint) {
                let reason = format!("duplicate endpoint (first listed in entry {first})");
                errors.push(EntryError {
                    index,
                    endpoint: Some(endpoint),
                    reason,
                });
                index += 1;
                return;
            }
            match store.insert(c) {
                Ok(_) => {
                    first_at.insert(endpoint, index);
                }
                Err(conflict) => errors.push(EntryError {
                    index,
                    endpoint: Some(endpoint),
                    reason: conflict.to_string(),
                }),
            }
            index += 1;
        };
        match format {
            Format::Toml => toml_entries(text, &mut add)?,
            Format::Json => json_entries(text, &mut add)?,
        }
        Ok((store, errors))
    }

    /// Reads the file at `path`, its format by extension.
    pub fn load(path: &Path) -> Result<(CredentialStore, Vec<EntryError>), FileError> {
        let with_path = |mut e: FileError| {
            e.path = Some(path.to_path_buf());
            e
        };
        let format = Format::from_path(path)
            .ok_or_else(|| with_path(FileError::new(FileErrorKind::UnknownFormat)))?;
        let text = fs::read_to_string(path)
            .map_err(|e| with_path(FileError::new(FileErrorKind::Io(e))))?;
        CredentialStore::parse(&text, format).map_err(with_path)
    }

    pub fn by_endpoint(&self, ep: &str) -> Option<&Arc<DeviceCredential>> {
        self.by_endpoint.get(ep)
    }

    pub fn by_psk_identity(&self, identity: &[u8]) -> Option<&Arc<DeviceCredential>> {
        self.by_identity.get(identity)
    }

    pub fn by_public_key(&self, spki_der: &[u8]) -> Option<&Arc<DeviceCredential>> {
        self.by_public_key.get(spki_der)
    }

    /// The x509 credential whose `common_name` is `cn` (not one that defaults to its endpoint).
    pub fn by_common_name(&self, cn: &str) -> Option<&Arc<DeviceCredential>> {
        self.by_common_name.get(cn)
    }

    /// Sets the endpoint's credential, returning the one it replaces. Refused, with the store
    /// unchanged, when its PSK identity or public key belongs to another endpoint. The value is
    /// taken as it is: the limits of the file format are checked where entries are read.
    pub fn insert(
        &mut self,
        c: DeviceCredential,
    ) -> Result<Option<Arc<DeviceCredential>>, Conflict> {
        let taken = |index: &HashMap<Box<[u8]>, Arc<DeviceCredential>>, k: Option<&[u8]>| {
            k.and_then(|k| index.get(k))
                .filter(|owner| owner.endpoint != c.endpoint)
                .map(|owner| owner.endpoint.clone())
        };
        let conflict = taken(&self.by_identity, c.psk_identity())
            .map(|o| (ConflictKind::PskIdentity, o))
            .or_else(|| {
                taken(&self.by_public_key, c.public_key()).map(|o| (ConflictKind::PublicKey, o))
            });
        if let Some((kind, owner)) = conflict {
            return Err(Conflict {
                kind,
                endpoint: c.endpoint,
                owner,
            });
        }
        let old = self.remove(&c.endpoint);
        let c = Arc::new(c);
        if let Some(id) = c.psk_identity() {
            self.by_identity.insert(id.into(), Arc::clone(&c));
        }
        if let Some(k) = c.public_key() {
            self.by_public_key.insert(k.into(), Arc::clone(&c));
        }
        if let Credential::X509 {
            common_name: Some(cn),
        } = &c.credential
        {
            self.by_common_name.insert(cn.clone(), Arc::clone(&c));
        }
        self.by_endpoint.insert(c.endpoint.clone(), c);
        Ok(old)
    }

    pub fn remove(&mut self, ep: &str) -> Option<Arc<DeviceCredential>> {
        let old = self.by_endpoint.remove(ep)?;
        if let Some(id) = old.psk_identity() {
            self.by_identity.remove(id);
        }
        if let Some(k) = old.public_key() {
            self.by_public_key.remove(k);
        }
        if let Credential::X509 {
            common_name: Some(cn),
        } = &old.credential
        {
            if self
                .by_common_name
                .get(cn)
                .is_some_and(|c| c.endpoint == old.endpoint)
            {
                self.by_common_name.remove(cn);
            }
        }
        Some(old)
    }

    pub fn len(&self) -> usize {
        self.by_endpoint.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_endpoint.is_empty()
    }

    /// Entries in endpoint order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<DeviceCredential>> {
        self.by_endpoint.values()
    }

    /// `limit` entries from position `offset`, sorted by endpoint.
    pub fn page(&self, offset: usize, limit: usize) -> Vec<Arc<DeviceCredential>> {
        self.by_endpoint
            .values()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The store as a credentials file (keys included), in endpoint order; `parse` reads it back
    /// to an equal store.
    pub fn to_text(&self, format: Format) -> String {
        match format {
            Format::Toml => {
                let mut out = String::from(
                    "# Device credentials for lwm2m-gateway. Holds PSK keys: keep it private.\n",
                );
                for c in self.iter() {
                    out.push_str("\n[[device]]\n");
                    for (k, v) in entry_json(c, true) {
                        if let Json::String(s) = v {
                            out.push_str(&k);
                            out.push_str(" = ");
                            toml_string(&mut out, &s);
                            out.push('\n');
                        }
                    }
                }
                out
            }
            Format::Json => {
                let list: Vec<Json> = self
                    .iter()
                    .map(|c| Json::Object(entry_json(c, true)))
                    .collect();
                let mut root = Map::new();
                root.insert("devices".into(), Json::Array(list));
                let mut out = serde_json::to_string_pretty(&Json::Object(root))
                    .unwrap_or_else(|_| String::from("{\"devices\":[]}"));
                out.push('\n');
                out
            }
        }
    }

    /// Writes the store to `path` (format by extension) so that the file is always either the
    /// old or the new one: a temporary file in the same directory, synced, renamed over it. The
    /// file is created mode 0600 on unix.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let format = Format::from_path(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "credentials file must end in .toml or .json",
            )
        })?;
        write_atomic(path, self.to_text(format).as_bytes())
    }
}

/// Replaces `path` with `bytes` atomically (see [`CredentialStore::save`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A temporary left by a crash may carry looser permissions: never write into it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let result = (|| {
        let mut f = open_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn open_private(path: &Path) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o.open(path)
}

/// Makes the rename itself durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// The entries of a JSON file, each read and handed over alone (see [`super::json_entries`]).
fn json_entries(text: &str, add: &mut dyn FnMut(Json)) -> Result<(), FileError> {
    use super::json_entries::Refusal;
    let shape = |m: String| FileError::new(FileErrorKind::Shape(m));
    super::json_entries::for_each(text, add).map_err(|r| match r {
        Refusal::Syntax(e) => json_syntax(e),
        Refusal::NotObject => shape(NOT_AN_OBJECT.into()),
        Refusal::UnknownKey(k) => shape(unknown_key(&k, Format::Json.list_key())),
        Refusal::NotArray => shape("devices must be an array".into()),
    })
}

const NOT_AN_OBJECT: &str = "the top level must be an object with a \"devices\" list";

fn unknown_key(other: &str, list: &str) -> String {
    format!(
        "unknown top-level key {} (expected only {list:?})",
        name_for_message(other)
    )
}

fn json_syntax(e: serde_json::Error) -> FileError {
    // serde_json's syntax messages are fixed phrases (they never quote the input); the
    // position goes into the fields, not twice into the message.
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    FileError {
        path: None,
        line: Some(e.line()).filter(|l| *l > 0),
        column: Some(e.column()).filter(|c| *c > 0),
        kind: FileErrorKind::Syntax(Format::Json, msg),
    }
}

/// The entries of a TOML file, one `[[device]]` at a time where the file allows it (see
/// [`super::device_tables`]), in file order.
fn toml_entries(text: &str, add: &mut dyn FnMut(Json)) -> Result<(), FileError> {
    let pieces = super::device_tables::split(text).unwrap_or_else(|| vec![(0, text)]);
    for (lines_before, piece) in pieces {
        let root = parse_toml(piece).map_err(|mut e| {
            e.line = e.line.map(|l| l + lines_before);
            e
        })?;
        entry_list(root, Format::Toml)?
            .into_iter()
            .for_each(&mut *add);
    }
    Ok(())
}

fn parse_toml(text: &str) -> Result<Json, FileError> {
    match text.parse::<toml::Table>() {
        Ok(t) => Ok(toml_to_json(toml::Value::Table(t))),
        Err(e) => {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            Err(FileError {
                path: None,
                line,
                column,
                kind: FileErrorKind::Syntax(Format::Toml, scrub(e.message())),
            })
        }
    }
}

/// The first line of a parser message with anything quoted in it blanked out: toml's messages
/// may quote the text around the error, which could be a key.
fn scrub(message: &str) -> String {
    let first = message.lines().next().unwrap_or("").trim();
    let mut out = String::with_capacity(first.len());
    let mut quoted = None;
    for ch in first.chars() {
        match quoted {
            Some(q) if ch == q => {
                quoted = None;
                out.push('…');
                out.push(ch);
            }
            Some(_) => {}
            None => {
                out.push(ch);
                if ch == '`' || ch == '"' || ch == '\'' {
                    quoted = Some(ch);
                }
            }
        }
    }
    if quoted.is_some() {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("syntax error");
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One shape for both formats, so that entries are read (and refused) by one function.
fn toml_to_json(v: toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(b),
        // No field takes a date: null is refused as "not a string" like any other wrong type.
        toml::Value::Datetime(_) => Json::Null,
        toml::Value::Array(a) => Json::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Json::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

fn entry_list(root: Json, format: Format) -> Result<Vec<Json>, FileError> {
    let shape = |m: String| Err(FileError::new(FileErrorKind::Shape(m)));
    let key = format.list_key();
    let Json::Object(mut root) = root else {
        return shape(NOT_AN_OBJECT.into());
    };
    let list = root.remove(key);
    // A misspelt list name would otherwise load an empty store without a word.
    if let Some(other) = root.keys().next() {
        return shape(unknown_key(other, key));
    }
    match list {
        None => Ok(Vec::new()),
        Some(Json::Array(a)) => Ok(a),
        Some(_) => match format {
            Format::Toml => shape("device must be an array of tables ([[device]])".into()),
            Format::Json => shape("devices must be an array".into()),
        },
    }
}

/// A refused entry, before it has an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadEntry {
    pub endpoint: Option<String>,
    pub reason: String,
}

#[derive(Clone, Copy)]
enum Encoding {
    Utf8,
    Hex,
    Base64,
}

/// Reads one entry (a file's `[[device]]` table, or the `data` of `credential-add`).
pub(crate) fn parse_entry(v: &Json) -> Result<DeviceCredential, BadEntry> {
    let Json::Object(m) = v else {
        return Err(BadEntry {
            endpoint: None,
            reason: "entry is not a table".into(),
        });
    };
    let endpoint = match m.get("endpoint") {
        Some(Json::String(s)) => check_name("endpoint", s).map(|()| s.clone()),
        Some(_) => Err("endpoint must be a string".to_string()),
        None => Err("missing endpoint".to_string()),
    }
    .map_err(|reason| BadEntry {
        endpoint: None,
        reason,
    })?;
    entry_fields(m)
        .map(|credential| DeviceCredential {
            endpoint: endpoint.clone(),
            credential,
        })
        .map_err(|reason| BadEntry {
            endpoint: Some(endpoint.clone()),
            reason,
        })
}

fn entry_fields(m: &Map<String, Json>) -> Result<Credential, String> {
    let mode = match m.get("mode") {
        Some(Json::String(s)) => SecurityMode::from_name(s).ok_or_else(|| {
            format!(
                "unknown mode {} (expected nosec, psk, x509 or rpk)",
                name_for_message(s)
            )
        })?,
        Some(_) => return Err("mode must be a string".into()),
        None => return Err("missing mode".into()),
    };
    let allowed: &[&str] = match mode {
        SecurityMode::NoSec => &[],
        SecurityMode::Psk => &["identity", "identity_hex", "key_hex", "key_base64"],
        SecurityMode::X509 => &["common_name"],
        SecurityMode::Rpk => &["public_key_base64", "public_key_hex"],
    };
    if let Some(k) = m
        .keys()
        .find(|k| *k != "endpoint" && *k != "mode" && !allowed.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key {} for mode {mode}",
            name_for_message(k)
        ));
    }
    match mode {
        SecurityMode::NoSec => Ok(Credential::NoSec),
        SecurityMode::Psk => {
            let identity = one_of(
                m,
                &[
                    ("identity", Encoding::Utf8),
                    ("identity_hex", Encoding::Hex),
                ],
            )?;
            check_len("identity", &identity, MAX_PSK_IDENTITY)?;
            let key = one_of(
                m,
                &[("key_hex", Encoding::Hex), ("key_base64", Encoding::Base64)],
            )?;
            check_len("key", &key, MAX_PSK_KEY)?;
            Ok(Credential::Psk {
                identity: identity.into(),
                key: Secret::new(key),
            })
        }
        SecurityMode::X509 => {
            let common_name = match m.get("common_name") {
                None => None,
                Some(Json::String(s)) => {
                    check_name("common_name", s)?;
                    Some(s.clone())
                }
                Some(_) => return Err("common_name must be a string".into()),
            };
            Ok(Credential::X509 { common_name })
        }
        SecurityMode::Rpk => {
            let public_key = one_of(
                m,
                &[
                    ("public_key_base64", Encoding::Base64),
                    ("public_key_hex", Encoding::Hex),
                ],
            )?;
            check_len("public key", &public_key, MAX_PUBLIC_KEY)?;
            if !is_der_sequence(&public_key) {
                return Err("public key is not a DER SubjectPublicKeyInfo".into());
            }
            Ok(Credential::Rpk {
                public_key: public_key.into(),
            })
        }
    }
}

/// The value of exactly one of `choices`, decoded. Errors name the fields, never the value.
fn one_of(m: &Map<String, Json>, choices: &[(&str, Encoding)]) -> Result<Vec<u8>, String> {
    let names = || {
        choices
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let mut present = choices.iter().filter(|(n, _)| m.contains_key(*n));
    let Some(&(name, encoding)) = present.next() else {
        return Err(format!("missing {}", names()));
    };
    if present.next().is_some() {
        return Err(format!("give only one of {}", names()));
    }
    let Some(Json::String(s)) = m.get(name) else {
        return Err(format!("{name} must be a string"));
    };
    match encoding {
        Encoding::Utf8 => Ok(s.as_bytes().to_vec()),
        Encoding::Hex => from_hex(s).ok_or_else(|| format!("{name} is not valid hex")),
        Encoding::Base64 => BASE64
            .decode(s)
            .map_err(|_| format!("{name} is not valid base64")),
    }
}

fn check_len(what: &str, bytes: &[u8], max: usize) -> Result<(), String> {
    if bytes.is_empty() {
        Err(format!("{what} is empty"))
    } else if bytes.len() > max {
        Err(format!("{what} is longer than {max} bytes"))
    } else {
        Ok(())
    }
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    check_len(what, s.as_bytes(), MAX_NAME)?;
    if s.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// A DER SEQUENCE whose length covers exactly the bytes given: catches a certificate, a PEM
/// body pasted whole, or a bare EC point, without parsing the key.
fn is_der_sequence(b: &[u8]) -> bool {
    let (len, header) = match b {
        [0x30, n, ..] if *n < 0x80 => (*n as usize, 2),
        [0x30, 0x81, n, ..] => (*n as usize, 3),
        [0x30, 0x82, hi, lo, ..] => (((*hi as usize) << 8) | *lo as usize, 4),
        _ => return false,
    };
    header + len == b.len()
}

/// A key name or mode from the input, safe to quote in a message: escaped and cut short.
fn name_for_message(s: &str) -> String {
    let cut: String = s.chars().take(32).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// An entry in the file's keys, in the file's order; without keys (`with_keys == false`) it is
/// what MQTT answers show: no PSK key and no public key.
pub(crate) fn entry_json(c: &DeviceCredential, with_keys: bool) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("endpoint".into(), Json::String(c.endpoint.clone()));
    m.insert("mode".into(), Json::String(c.mode().as_str().into()));
    match &c.credential {
        Credential::NoSec => {}
        Credential::Psk { identity, key } => {
            match std::str::from_utf8(identity) {
                Ok(s) => m.insert("identity".into(), Json::String(s.into())),
                Err(_) => m.insert("identity_hex".into(), Json::String(to_hex(identity))),
            };
            if with_keys {
                m.insert("key_hex".into(), Json::String(to_hex(key.expose())));
            }
        }
        Credential::X509 { common_name } => {
            if let Some(cn) = common_name {
                m.insert("common_name".into(), Json::String(cn.clone()));
            }
        }
        Credential::Rpk { public_key } => {
            if with_keys {
                m.insert(
                    "public_key_base64".into(),
                    Json::String(BASE64.encode(public_key)),
                );
            }
        }
    }
    m
}

/// A TOML basic string.
fn toml_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn to_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 0xf) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some((digit(p[0])? << 4) | digit(p[1])?))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A key no test output may contain, in any spelling.
    pub(crate) const KEY: [u8; 16] = [
        0xde, 0xad, 0xbe, 0xef, 0x5e, 0xc7, 0xe7, 0x42, 0x13, 0x37, 0xc0, 0xde, 0xfe, 0xed, 0xfa,
        0xce,
    ];
    pub(crate) const KEY_HEX: &str = "deadbeef5ec7e7421337c0defeedface";

    pub(crate) fn assert_no_key(text: &str) {
        let b64 = BASE64.encode(KEY);
        let b64_unpadded = b64.trim_end_matches('=');
        let decimal = "222, 173, 190, 239";
        for spelling in [KEY_HEX, &KEY_HEX.to_uppercase(), b64_unpadded, decimal] {
            assert!(
                !text.contains(spelling),
                "key material ({spelling}) in: {text}"
            );
        }
        // Even a prefix would be a leak.
        assert!(!text.contains("deadbeef"), "key prefix in: {text}");
    }

    /// A P-256 SubjectPublicKeyInfo with `seed` as its point.
    pub(crate) fn spki(seed: u8) -> Vec<u8> {
        let mut k = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
        ];
        k.extend(std::iter::repeat(seed).take(64));
        k
    }

    pub(crate) fn psk(ep: &str, identity: &[u8], key: &[u8]) -> DeviceCredential {
        DeviceCredential {
            endpoint: ep.into(),
            credential: Credential::Psk {
                identity: identity.into(),
                key: Secret::new(key),
            },
        }
    }

    fn rpk(ep: &str, seed: u8) -> DeviceCredential {
        DeviceCredential {
            endpoint: ep.into(),
            credential: Credential::Rpk {
                public_key: spki(seed).into(),
            },
        }
    }

    fn parse_json_ok(v: Json) -> (CredentialStore, Vec<EntryError>) {
        CredentialStore::parse(&v.to_string(), Format::Json).expect("valid JSON file")
    }

    const SAMPLE_TOML: &str = r#"
[[device]]
endpoint = "urn:imei:123"
mode = "psk"
identity = "dev123"
key_hex = "deadbeef5ec7e7421337c0defeedface"

[[device]]
endpoint = "bin-id"
mode = "psk"
identity_hex = "00ff10"
key_base64 = "AQID"

[[device]]
endpoint = "sensor-7"
mode = "x509"

[[device]]
endpoint = "sensor-8"
mode = "x509"
common_name = "CN-8"

[[device]]
endpoint = "rpk-dev"
mode = "rpk"
public_key_base64 = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBw=="

[[device]]
endpoint = "legacy"
mode = "nosec"
"#;

    fn check_sample(store: &CredentialStore) {
        assert_eq!(store.len(), 6);
        let c = store.by_psk_identity(b"dev123").expect("by identity");
        assert_eq!(c.endpoint, "urn:imei:123");
        assert_eq!(c.mode(), SecurityMode::Psk);
        match &c.credential {
            Credential::Psk { key, .. } => assert_eq!(key.expose(), KEY),
            other => panic!("not psk: {other:?}"),
        }
        assert_eq!(
            **store.by_psk_identity(&[0x00, 0xff, 0x10]).expect("hex id"),
            psk("bin-id", &[0x00, 0xff, 0x10], &[1, 2, 3])
        );
        assert_eq!(
            store.by_endpoint("sensor-7").map(|c| c.credential.clone()),
            Some(Credential::X509 { common_name: None })
        );
        assert_eq!(
            store.by_endpoint("sensor-8").map(|c| c.credential.clone()),
            Some(Credential::X509 {
                common_name: Some("CN-8".into())
            })
        );
        assert_eq!(
            store.by_public_key(&spki(7)).map(|c| c.endpoint.as_str()),
            Some("rpk-dev")
        );
        assert_eq!(
            store.by_endpoint("legacy").map(|c| c.mode()),
            Some(SecurityMode::NoSec)
        );
        assert!(store.by_psk_identity(b"nobody").is_none());
        assert!(store.by_public_key(&spki(8)).is_none());
        assert!(store.by_endpoint("nobody").is_none());
    }

    #[test]
    fn reads_every_mode_from_toml() {
        let (store, errors) = CredentialStore::parse(SAMPLE_TOML, Format::Toml).expect("parses");
        assert_eq!(errors, vec![]);
        check_sample(&store);
    }

    #[test]
    fn reads_every_mode_from_json() {
        let (store, errors) = parse_json_ok(json!({"devices": [
            {"endpoint": "urn:imei:123", "mode": "psk", "identity": "dev123", "key_hex": KEY_HEX},
            {"endpoint": "bin-id", "mode": "psk", "identity_hex": "00FF10", "key_base64": "AQID"},
            {"endpoint": "sensor-7", "mode": "x509"},
            {"endpoint": "sensor-8", "mode": "x509", "common_name": "CN-8"},
            {"endpoint": "rpk-dev", "mode": "rpk", "public_key_hex": to_hex(&spki(7))},
            {"endpoint": "legacy", "mode": "nosec"},
        ]}));
        assert_eq!(errors, vec![]);
        check_sample(&store);
    }

    #[test]
    fn an_empty_file_is_an_empty_store() {
        for (text, format) in [
            ("", Format::Toml),
            ("# nothing yet\n", Format::Toml),
            ("{}", Format::Json),
            (r#"{"devices": []}"#, Format::Json),
        ] {
            let (store, errors) = CredentialStore::parse(text, format).expect("parses");
            assert!(store.is_empty() && errors.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn each_bad_entry_is_skipped_and_reported_and_the_rest_loads() {
        let long_ep = "e".repeat(256);
        let cases: Vec<(Json, Option<&str>, &str)> = vec![
            (
                json!({"endpoint": "b", "mode": "tls"}),
                Some("b"),
                "unknown mode",
            ),
            (json!({"endpoint": "b"}), Some("b"), "missing mode"),
            (
                json!({"endpoint": "b", "mode": 1}),
                Some("b"),
                "mode must be a string",
            ),
            (json!({"mode": "nosec"}), None, "missing endpoint"),
            (
                json!({"endpoint": 7, "mode": "nosec"}),
                None,
                "endpoint must be a string",
            ),
            (
                json!({"endpoint": "", "mode": "nosec"}),
                None,
                "endpoint is empty",
            ),
            (
                json!({"endpoint": long_ep, "mode": "nosec"}),
                None,
                "longer than 255",
            ),
            (
                json!({"endpoint": "a\nb", "mode": "nosec"}),
                None,
                "control character",
            ),
            (json!("not a table"), None, "not a table"),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i"}),
                Some("b"),
                "missing key_hex or key_base64",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "key_hex": KEY_HEX}),
                Some("b"),
                "missing identity",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "identity_hex": "69", "key_hex": KEY_HEX}),
                Some("b"),
                "only one of identity or identity_hex",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_hex": KEY_HEX, "key_base64": "3q2+7w=="}),
                Some("b"),
                "only one of key_hex or key_base64",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_hex": ""}),
                Some("b"),
                "key is empty",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "", "key_hex": KEY_HEX}),
                Some("b"),
                "identity is empty",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_hex": "ab".repeat(65)}),
                Some("b"),
                "key is longer than 64 bytes",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i".repeat(129), "key_hex": KEY_HEX}),
                Some("b"),
                "identity is longer than 128 bytes",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_hex": "deadbeef5"}),
                Some("b"),
                "key_hex is not valid hex",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_hex": "deadbeefzz"}),
                Some("b"),
                "key_hex is not valid hex",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_base64": "3q2+7w=!"}),
                Some("b"),
                "key_base64 is not valid base64",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity_hex": "6", "key_hex": KEY_HEX}),
                Some("b"),
                "identity_hex is not valid hex",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key_hex": 5}),
                Some("b"),
                "key_hex must be a string",
            ),
            (
                json!({"endpoint": "b", "mode": "psk", "identity": "i", "key": KEY_HEX}),
                Some("b"),
                "unknown key \"key\" for mode psk",
            ),
            (
                json!({"endpoint": "b", "mode": "x509", "key_hex": KEY_HEX}),
                Some("b"),
                "unknown key \"key_hex\" for mode x509",
            ),
            (
                json!({"endpoint": "b", "mode": "nosec", "identity": "i"}),
                Some("b"),
                "unknown key \"identity\" for mode nosec",
            ),
            (
                json!({"endpoint": "b", "mode": "x509", "common_name": ""}),
                Some("b"),
                "common_name is empty",
            ),
            (
                json!({"endpoint": "b", "mode": "x509", "common_name": null}),
                Some("b"),
                "common_name must be a string",
            ),
            (
                json!({"endpoint": "b", "mode": "rpk"}),
                Some("b"),
                "missing public_key_base64 or public_key_hex",
            ),
            (
                json!({"endpoint": "b", "mode": "rpk", "public_key_hex": KEY_HEX}),
                Some("b"),
                "not a DER SubjectPublicKeyInfo",
            ),
            (
                json!({"endpoint": "b", "mode": "rpk", "public_key_hex": ""}),
                Some("b"),
                "public key is empty",
            ),
            (
                json!({"endpoint": "b", "mode": "rpk", "public_key_base64": "MFkw"}),
                Some("b"),
                "not a DER SubjectPublicKeyInfo",
            ),
        ];
        for (bad, endpoint, reason) in cases {
            let good = json!({"endpoint": "a", "mode": "nosec"});
            let after = json!({"endpoint": "c", "mode": "x509"});
            let (store, errors) = parse_json_ok(json!({"devices": [good, bad.clone(), after]}));
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            let e = &errors[0];
            assert_eq!(e.index, 1, "{bad}");
            assert_eq!(e.endpoint.as_deref(), endpoint, "{bad}");
            assert!(e.reason.contains(reason), "{bad}: {:?}", e.reason);
            assert_no_key(&e.to_string());
            assert_no_key(&format!("{e:?}"));
            assert_eq!(store.len(), 2, "{bad}");
            assert!(store.by_endpoint("a").is_some() && store.by_endpoint("c").is_some());
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let (store, errors) = parse_json_ok(json!({"devices": [
            {"endpoint": "e".repeat(255), "mode": "psk", "identity": "i".repeat(128), "key_hex": "ab".repeat(64)},
        ]}));
        assert_eq!(errors, vec![]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn duplicates_and_taken_identities_keep_the_first_entry() {
        let k2 = "00".repeat(16);
        let (store, errors) = parse_json_ok(json!({"devices": [
            {"endpoint": "a", "mode": "psk", "identity": "shared", "key_hex": KEY_HEX},
            {"endpoint": "a", "mode": "nosec"},
            {"endpoint": "b", "mode": "psk", "identity": "shared", "key_hex": k2},
            {"endpoint": "r1", "mode": "rpk", "public_key_hex": to_hex(&spki(1))},
            {"endpoint": "r2", "mode": "rpk", "public_key_hex": to_hex(&spki(1))},
        ]}));
        let summary: Vec<(usize, Option<&str>, &str)> = errors
            .iter()
            .map(|e| (e.index, e.endpoint.as_deref(), e.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, Some("a"), "duplicate endpoint (first listed in entry 0)"),
                (
                    2,
                    Some("b"),
                    "PSK identity already belongs to endpoint \"a\""
                ),
                (
                    4,
                    Some("r2"),
                    "public key already belongs to endpoint \"r1\""
                ),
            ]
        );
        assert_eq!(
            store.by_endpoint("a").map(|c| c.mode()),
            Some(SecurityMode::Psk)
        );
        assert!(store.by_endpoint("b").is_none() && store.by_endpoint("r2").is_none());
        assert_eq!(
            store
                .by_psk_identity(b"shared")
                .map(|c| c.endpoint.as_str()),
            Some("a")
        );
    }

    #[test]
    fn toml_entries_are_refused_like_json_ones() {
        let text = format!(
            r#"
[[device]]
endpoint = "ok"
mode = "nosec"

[[device]]
endpoint = "when"
mode = "x509"
common_name = 1979-05-27

[[device]]
endpoint = "typo"
mode = "psk"
identity = "i"
kye_hex = "{KEY_HEX}"

[[device]]
endpoint = "ok"
mode = "x509"
"#
        );
        let (store, errors) = CredentialStore::parse(&text, Format::Toml).expect("valid TOML");
        let summary: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.index, e.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "common_name must be a string"),
                (2, "unknown key \"kye_hex\" for mode psk"),
                (3, "duplicate endpoint (first listed in entry 0)"),
            ]
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn files_that_are_not_a_device_list_are_file_errors() {
        let cases = [
            (
                format!("[[device]]\nendpoint = \"a\"\nkey_hex = \"{KEY_HEX}\n"),
                Format::Toml,
                Some((3, 44)),
            ),
            (
                "[[device]]\nendpoint = \"a\"\nendpoint = \"b\"\n".to_string(),
                Format::Toml,
                Some((3, 1)),
            ),
            // In a later entry: the position counts the lines of the entries before it.
            (
                "# two\n[[device]]\nendpoint = \"a\"\n\n[[device]]\nendpoint = \"b\"\nendpoint = \"c\"\n"
                    .to_string(),
                Format::Toml,
                Some((7, 1)),
            ),
            (
                format!("{{\"devices\": [\n  {{\"key_hex\": \"{KEY_HEX}\" \"x\"}}]}}"),
                Format::Json,
                Some((2, 50)),
            ),
            ("{\"devices\": ".to_string(), Format::Json, Some((1, 12))),
        ];
        for (text, format, position) in cases {
            let e = CredentialStore::parse(&text, format).expect_err("not parsable");
            assert!(
                matches!(e.kind, FileErrorKind::Syntax(f, _) if f == format),
                "{e:?}"
            );
            assert_eq!(e.line.zip(e.column), position, "{text:?}: {e}");
            assert_no_key(&e.to_string());
            assert_no_key(&format!("{e:?}"));
        }
        let shapes = [
            (
                "[device]\nendpoint = \"a\"\n",
                Format::Toml,
                "array of tables",
            ),
            (
                "[[devices]]\nendpoint = \"a\"\n",
                Format::Toml,
                "unknown top-level key \"devices\"",
            ),
            ("device = 1", Format::Toml, "array of tables"),
            ("[1]", Format::Json, "top level must be an object"),
            (
                "{\"device\": []}",
                Format::Json,
                "unknown top-level key \"device\"",
            ),
            (
                "{\"devices\": {}}",
                Format::Json,
                "devices must be an array",
            ),
        ];
        for (text, format, reason) in shapes {
            let e = CredentialStore::parse(text, format).expect_err("wrong shape");
            assert!(matches!(e.kind, FileErrorKind::Shape(_)), "{e:?}");
            assert!(e.to_string().contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn toml_messages_lose_what_they_quote() {
        assert_eq!(
            scrub("duplicate key `deadbeef` in table `device`"),
            "duplicate key `…` in table `…`"
        );
        assert_eq!(scrub("invalid string\nexpected `\"`"), "invalid string");
        assert_eq!(scrub("unterminated 'dead"), "unterminated '…");
        assert_eq!(scrub(""), "syntax error");
    }

    #[test]
    fn insert_replaces_and_keeps_the_indexes_in_step() {
        let mut s = CredentialStore::new();
        assert_eq!(s.insert(psk("a", b"id-a", &KEY)), Ok(None));
        // Replacing with a new identity frees the old one.
        let old = s.insert(psk("a", b"id-a2", b"k")).expect("same endpoint");
        assert_eq!(old.as_deref(), Some(&psk("a", b"id-a", &KEY)));
        assert!(s.by_psk_identity(b"id-a").is_none());
        assert_eq!(
            s.by_psk_identity(b"id-a2").map(|c| c.endpoint.as_str()),
            Some("a")
        );
        // Keeping one's own identity is no conflict.
        assert!(s.insert(psk("a", b"id-a2", b"k2")).is_ok());
        // A change of mode drops it from the PSK index.
        assert!(s.insert(rpk("a", 1)).is_ok());
        assert!(s.by_psk_identity(b"id-a2").is_none());
        assert_eq!(
            s.by_public_key(&spki(1)).map(|c| c.endpoint.as_str()),
            Some("a")
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn insert_refuses_another_endpoints_identity_or_key_and_changes_nothing() {
        let mut s = CredentialStore::new();
        s.insert(psk("a", b"id", &KEY)).expect("first");
        s.insert(rpk("r", 1)).expect("first");
        s.insert(psk("b", b"id-b", b"k")).expect("first");
        let before = format!("{s:?}");
        assert_eq!(
            s.insert(psk("b", b"id", b"k")),
            Err(Conflict {
                kind: ConflictKind::PskIdentity,
                endpoint: "b".into(),
                owner: "a".into()
            })
        );
        assert_eq!(
            s.insert(rpk("b", 1)).map_err(|c| (c.kind, c.owner)),
            Err((ConflictKind::PublicKey, "r".to_string()))
        );
        assert_eq!(format!("{s:?}"), before);
        assert_eq!(
            s.by_psk_identity(b"id-b").map(|c| c.endpoint.as_str()),
            Some("b")
        );
    }

    #[test]
    fn remove_frees_the_endpoint_its_identity_and_its_key() {
        let mut s = CredentialStore::new();
        s.insert(psk("a", b"id", &KEY)).expect("insert");
        s.insert(rpk("r", 1)).expect("insert");
        assert_eq!(s.remove("a").map(|c| c.endpoint.clone()), Some("a".into()));
        assert_eq!(s.remove("a"), None);
        assert!(s.by_psk_identity(b"id").is_none());
        assert!(s.remove("r").is_some());
        assert!(s.by_public_key(&spki(1)).is_none());
        assert!(s.is_empty());
        // What was freed can be taken by another endpoint.
        assert!(s.insert(psk("b", b"id", b"k")).is_ok());
    }

    #[test]
    fn pages_follow_endpoint_order() {
        let mut s = CredentialStore::new();
        for ep in ["m", "b", "z", "a", "k"] {
            s.insert(DeviceCredential {
                endpoint: ep.into(),
                credential: Credential::NoSec,
            })
            .expect("insert");
        }
        let names = |v: Vec<Arc<DeviceCredential>>| {
            v.iter().map(|c| c.endpoint.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(s.page(0, 2)), ["a", "b"]);
        assert_eq!(names(s.page(2, 2)), ["k", "m"]);
        assert_eq!(names(s.page(4, 2)), ["z"]);
        assert!(s.page(5, 2).is_empty());
        assert!(s.page(0, 0).is_empty());
        assert_eq!(names(s.page(0, usize::MAX)), ["a", "b", "k", "m", "z"]);
    }

    fn awkward_store() -> CredentialStore {
        let mut s = CredentialStore::new();
        for c in [
            psk("urn:imei:123", b"dev123", &KEY),
            psk("bin", &[0xff, 0x00, 0x80], &[1]),
            psk(
                "quotes \"\\ ü",
                "id \"q\" \\ \u{1}\t\u{7f}".as_bytes(),
                &[0; 64],
            ),
            DeviceCredential {
                endpoint: "x-default".into(),
                credential: Credential::X509 { common_name: None },
            },
            DeviceCredential {
                endpoint: "x-named".into(),
                credential: Credential::X509 {
                    common_name: Some("CN \"x\"".into()),
                },
            },
            rpk("rpk", 3),
            DeviceCredential {
                endpoint: "legacy".into(),
                credential: Credential::NoSec,
            },
        ] {
            s.insert(c).expect("no conflict");
        }
        s
    }

    #[test]
    fn to_text_reads_back_to_an_equal_store() {
        let s = awkward_store();
        for format in [Format::Toml, Format::Json] {
            let text = s.to_text(format);
            let (back, errors) = CredentialStore::parse(&text, format).expect("own output parses");
            assert_eq!(errors, vec![], "{text}");
            assert_eq!(back, s, "{text}");
        }
        assert!(s
            .to_text(Format::Toml)
            .contains(&format!("key_hex = \"{KEY_HEX}\"")));
        let empty = CredentialStore::new();
        for format in [Format::Toml, Format::Json] {
            let (back, _) = CredentialStore::parse(&empty.to_text(format), format).expect("parses");
            assert!(back.is_empty());
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cred-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn save_replaces_the_file_privately_and_load_reads_it() {
        let dir = temp_dir("save");
        let s = awkward_store();
        for name in ["devices.toml", "devices.JSON"] {
            let path = dir.join(name);
            fs::write(&path, "old contents").expect("old file");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            }
            s.save(&path).expect("saved");
            let (back, errors) = CredentialStore::load(&path).expect("loads");
            assert!(errors.is_empty());
            assert_eq!(back, s);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = fs::metadata(&path).expect("stat").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
        }
        // Nothing but the two files: no temporary left behind.
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["devices.JSON", "devices.toml"]);

        let bad = s
            .save(&dir.join("devices.txt"))
            .expect_err("unknown extension");
        assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
        let missing_dir = s.save(&dir.join("no/such/dir.toml"));
        assert!(missing_dir.is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = temp_dir("load");
        let e = CredentialStore::load(&dir.join("creds.yaml")).expect_err("unknown format");
        assert!(matches!(e.kind, FileErrorKind::UnknownFormat));
        let missing = dir.join("absent.toml");
        let e = CredentialStore::load(&missing).expect_err("missing");
        assert!(matches!(e.kind, FileErrorKind::Io(_)));
        assert!(e.to_string().starts_with(&missing.display().to_string()));
        let broken = dir.join("broken.json");
        fs::write(&broken, "{\n\"devices\": [\n}").expect("write");
        let e = CredentialStore::load(&broken).expect_err("broken");
        assert_eq!((e.line, e.column), (Some(3), Some(1)));
        assert!(
            e.to_string().starts_with(&format!(
                "{}: line 3 column 1: invalid JSON",
                broken.display()
            )),
            "{e}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let (store, _) = CredentialStore::parse(SAMPLE_TOML, Format::Toml).expect("parses");
        assert_no_key(&format!("{store:?}"));
        assert_no_key(&format!("{store:#?}"));
        let c = store.by_endpoint("urn:imei:123").expect("present");
        assert_no_key(&format!("{c:?}"));
        assert_eq!(format!("{:?}", Secret::new(KEY)), "Secret(<16 bytes>)");
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(Secret::new(KEY), Secret::new(KEY.to_vec()));
        let mut other = KEY;
        other[15] ^= 1;
        assert_ne!(Secret::new(KEY), Secret::new(other));
        assert_ne!(Secret::new(&KEY[..15]), Secret::new(KEY));
    }

    #[test]
    fn mode_names_round_trip() {
        for m in SecurityMode::ALL {
            assert_eq!(SecurityMode::from_name(m.as_str()), Some(m));
        }
        assert_eq!(SecurityMode::from_name("PSK"), None);
        assert_eq!(
            SecurityMode::ALL.map(SecurityMode::as_str),
            ["nosec", "psk", "x509", "rpk"]
        );
    }
}
