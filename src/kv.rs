//! The versioned key-value store (Vault's KV version 2), on the library API.
//!
//! Teams that use Vault keep their secrets in KV v2 and drive it with `bao kv`, hvac and
//! scripts that depend on its exact behaviour: every write makes a new version, check-and-set
//! guards concurrent writers, deleted versions can be restored until they are destroyed, and
//! old versions fall off after `max_versions`. This module implements those semantics, with no
//! HTTP in it: the server's `server/vault/kv.rs` only translates requests and responses, and an
//! embedder calling [`Kv`] gets the same store.
//!
//! # Storage
//!
//! Under a mount's [`storage prefix`](crate::mounts::MountEntry::storage_prefix) `P`:
//!
//! ```text
//! P config               the mount's KV configuration (max_versions, cas_required, ...)
//! P meta/<path>          the key's metadata: versions, their times and states, settings
//! P data/<path>/<n>      version n's JSON, sealed under its own data key (see cipher.rs)
//! P data/<path>/<n>␟k    version n's data key, wrapped by the key provider
//! ```
//!
//! `␟` is the control character U+001F, which no secret path may contain
//! ([`check_secret_path`]), so a version's wrapped key sorts right after its data, before any
//! other record. A write puts three records; with the version's two side by side in one B-tree
//! leaf, a group commit of N writes dirties about 2N leaves instead of 3N, and the one writer
//! thread has that much less page work (measured: 1.18 times the durable writes per second).
//! The metadata stays apart, under `meta/`: beside it, the versions would make listing a folder
//! read every version of every key in it.
//!
//! Versions written by earlier builds of arca keep their wrapped key where those builds put
//! it, `P dkey/<path>/<n>`: the metadata names the first version written with the key beside
//! its data ([`KeyMetadata::adjacent_from`]; absent before), every version below it has the
//! first layout, and nothing is moved. Such versions leave as they are pruned or destroyed.
//!
//! Every record is also sealed by the barrier. A key's version records are always found
//! through its metadata, never by listing, so `data/a/1` (version 1 of `a`) and `data/a/1/1`
//! (version 1 of `a/1`) cannot be confused.
//!
//! # All or nothing
//!
//! Each change is one atomic [`Barrier::batch`]: a write puts the metadata, the version and its
//! wrapped key together (and deletes the versions it pushes past `max_versions`); a destroy
//! marks the versions destroyed and deletes their records together. A change too large for one
//! batch (destroying hundreds of versions, or pruning after `max_versions` was lowered) is
//! split into batches that each leave a consistent key: the metadata never names a version
//! whose records are gone, and no change is reported before its last batch is stored.
//! Operations on one key are serialized by a lock per key (striped); reads take it shared.
//!
//! # What stays in memory
//!
//! A version's JSON is held in wipe-on-drop buffers ([`SecretData`]) from the request to the
//! store and back. Parsing it into `serde_json` values (to merge a patch, to list subkeys, or in
//! the HTTP layer to build a response) makes ordinary heap copies that are not wiped: serde_json
//! has no zeroizing representation. They live for one request.
//!
//! # Limits
//!
//! A version's JSON is at most [`MAX_DATA_BYTES`] (512 KiB): with the two envelopes it stays
//! well inside the backend's 1 MiB record. A key keeps at most [`MAX_VERSIONS_LIMIT`]
//! versions, so its metadata record stays small. Paths are checked by [`path`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use arca::Arca;
//! use arca::config::StorageKind;
//! use arca::kv::{SecretData, VersionRead};
//! use arca::mounts::MountKind;
//! use arca::seal::{InitRequest, SealConfig};
//! use arca::storage::MemoryBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let arca = Arca::open(Arc::new(MemoryBackend::new()), StorageKind::Memory,
//!                       SealConfig::Shamir).await?;
//! let init = arca.seal().initialize(InitRequest { secret_shares: 1, secret_threshold: 1,
//!                                                 ..InitRequest::default() }).await?;
//! arca.seal().submit_share(&init.keys[0].hex).await?;
//!
//! let mount = arca.mounts().ensure("secret/", MountKind::KvV2).await?;
//! let data = SecretData::from_json_text(r#"{"password": "hunter2"}"#)?;
//! let written = arca.kv().write(&mount, "app/db", &data, Some(0)).await?;
//! assert_eq!(written.info.version, 1);
//! match arca.kv().read(&mount, "app/db", None).await? {
//!     Some(VersionRead::Live { data, .. }) => {
//!         assert_eq!(data.to_json()?["password"], "hunter2");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod cipher;
pub mod duration;
mod meta;
pub mod path;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arca_storage::{Barrier, BarrierError, BarrierOp, Plaintext};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{OnceCell, RwLock};

use crate::changes::{ChangeFeed, ChangeKind};
use crate::kms::{KeyProvider, LocalKms};
use crate::mounts::{MountEntry, MountError, MountKind, Mounts};
pub use cipher::VERSION_KEY_INFO;
use path::{check_secret_path, folder_prefix};

/// The largest JSON document one version may hold, in bytes (compact serialization).
pub const MAX_DATA_BYTES: usize = 512 * 1024;

/// Versions kept per key when neither the key nor the mount says otherwise (Vault's default).
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

/// The largest `max_versions` accepted, for a key or a mount.
pub const MAX_VERSIONS_LIMIT: u32 = 1000;

/// The alias of the key-provider key that wraps every version's data key.
pub const KV_KEY_ALIAS: &str = "alias/arca/kv";

/// At most this many `custom_metadata` entries per key (Vault's limit).
pub const MAX_CUSTOM_METADATA_KEYS: usize = 64;
/// The longest `custom_metadata` key, in bytes (Vault's limit).
pub const MAX_CUSTOM_METADATA_KEY_LEN: usize = 128;
/// The longest `custom_metadata` value, in bytes (Vault's limit).
pub const MAX_CUSTOM_METADATA_VALUE_LEN: usize = 512;

/// Versions handled per batch when a change spans many (each takes two deletes; a batch holds
/// at most 100 items, and the metadata and a new version take a few).
const VERSIONS_PER_BATCH: usize = 40;

const LOCK_STRIPES: usize = 64;

/// Errors of the KV store. Messages are Vault's where clients look for them; none holds a
/// secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// The mount is gone or is not a KV version 2 mount.
    #[error("no KV version 2 mount at {0}")]
    NoSuchMount(String),
    /// The secret path breaks a rule of [`path`].
    #[error(transparent)]
    InvalidPath(#[from] path::PathError),
    /// A parameter is missing, malformed or out of range. The message is for the client.
    #[error("{0}")]
    InvalidRequest(String),
    /// The check-and-set version is not the key's current version.
    #[error("check-and-set parameter did not match the current version")]
    CasMismatch,
    /// The key or the mount requires check-and-set and none was given.
    #[error("check-and-set parameter required for this call")]
    CasRequired,
    /// The version's JSON is larger than [`MAX_DATA_BYTES`].
    #[error("the secret data is {len} bytes; the limit is {MAX_DATA_BYTES} bytes")]
    TooLarge {
        /// The refused size.
        len: usize,
    },
    /// The key-provider key that wraps data keys is disabled or pending deletion.
    #[error("the KV envelope key is unavailable")]
    KeyUnavailable,
    /// A version or its wrapped key failed authentication. Opaque on purpose.
    #[error("a stored version failed its integrity check")]
    Integrity,
    /// A stored metadata or configuration record does not parse. Opaque; the log says why.
    #[error("a stored KV record is damaged")]
    Corrupt,
    /// Something failed inside arca; the text is for logs.
    #[error("internal error: {0}")]
    Internal(String),
    /// The barrier or its backend failed.
    #[error(transparent)]
    Barrier(BarrierError),
}

impl From<BarrierError> for KvError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Barrier(other),
        }
    }
}

impl From<MountError> for KvError {
    fn from(err: MountError) -> Self {
        match err {
            MountError::Sealed => Self::Sealed,
            MountError::NotFound(path) => Self::NoSuchMount(path),
            MountError::Barrier(inner) => inner.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A secret's data: a JSON object, kept as its compact serialization in a buffer that is
/// wiped on drop. `Debug` shows only the length.
#[derive(Clone)]
pub struct SecretData(Plaintext);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData([REDACTED], {} bytes)", self.0.len())
    }
}

impl SecretData {
    /// Serializes a JSON object.
    ///
    /// # Errors
    /// [`KvError::TooLarge`] past [`MAX_DATA_BYTES`].
    pub fn from_object(object: &Map<String, Value>) -> Result<Self, KvError> {
        let bytes = serde_json::to_vec(object)
            .map_err(|err| KvError::Internal(format!("serializing secret data: {err}")))?;
        Self::checked(Plaintext::new(bytes))
    }

    /// Parses JSON text that must be an object.
    ///
    /// # Errors
    /// [`KvError::InvalidRequest`] when it is not a JSON object; [`KvError::TooLarge`].
    pub fn from_json_text(text: &str) -> Result<Self, KvError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Self::from_object(&object),
            _ => Err(KvError::InvalidRequest(
                "secret data must be a JSON object".into(),
            )),
        }
    }

    fn checked(bytes: Plaintext) -> Result<Self, KvError> {
        if bytes.len() > MAX_DATA_BYTES {
            return Err(KvError::TooLarge { len: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// The data as a JSON object.
    ///
    /// # Errors
    /// [`KvError::Corrupt`] if the stored bytes are not an object (they always are when
    /// written through this type).
    pub fn to_json(&self) -> Result<Map<String, Value>, KvError> {
        match serde_json::from_slice(self.0.expose_secret()) {
            Ok(Value::Object(object)) => Ok(object),
            _ => Err(KvError::Corrupt),
        }
    }

    /// The data as raw JSON text to embed in an answer, checked to be one JSON object
    /// without building it.
    ///
    /// # Errors
    /// [`KvError::Corrupt`] if the stored bytes are not a JSON object.
    pub fn as_raw_json(&self) -> Result<&RawValue, KvError> {
        let text = std::str::from_utf8(self.0.expose_secret()).map_err(|_| KvError::Corrupt)?;
        match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) if raw.get().starts_with('{') => Ok(raw),
            _ => Err(KvError::Corrupt),
        }
    }

    /// The compact JSON bytes.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The length of the JSON in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the JSON is empty (never, for data built by this type).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The state of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version number, from 1.
    pub version: u64,
    /// When it was written.
    pub created_time: SystemTime,
    /// When it was (or will be, with `delete_version_after`) soft-deleted.
    pub deletion_time: Option<SystemTime>,
    /// Whether its data was destroyed.
    pub destroyed: bool,
}

impl VersionInfo {
    /// Whether it is soft-deleted at `now` (a deletion time in the future is not yet).
    #[must_use]
    pub fn is_deleted_at(&self, now: SystemTime) -> bool {
        self.deletion_time.is_some_and(|t| t <= now)
    }

    /// Whether its data can be read at `now`.
    #[must_use]
    pub fn is_live_at(&self, now: SystemTime) -> bool {
        !self.destroyed && !self.is_deleted_at(now)
    }
}

/// A key's metadata, as `metadata/<path>` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    /// The newest version (0 before the first write).
    pub current_version: u64,
    /// Vault's `oldest_version`: versions below it were pruned.
    pub oldest_version: u64,
    /// When the key was created.
    pub created_time: SystemTime,
    /// When the key last changed.
    pub updated_time: SystemTime,
    /// The key's own `max_versions` (0: the mount's, else [`DEFAULT_MAX_VERSIONS`]).
    pub max_versions: u32,
    /// Whether writes to this key need check-and-set.
    pub cas_required: bool,
    /// The key's own `delete_version_after` (zero: unset).
    pub delete_version_after: Duration,
    /// User-supplied pairs (`None` until set).
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// The versions still known, by number.
    pub versions: BTreeMap<u64, VersionInfo>,
    /// The first version whose wrapped key sits beside its data; the versions below it keep
    /// theirs under `dkey/`. `None` until the first write of this build, and in metadata
    /// written by earlier builds.
    pub(crate) adjacent_from: Option<u64>,
}

impl KeyMetadata {
    fn new(now: SystemTime) -> Self {
        Self {
            current_version: 0,
            oldest_version: 0,
            created_time: now,
            updated_time: now,
            max_versions: 0,
            cas_required: false,
            delete_version_after: Duration::ZERO,
            custom_metadata: None,
            versions: BTreeMap::new(),
            adjacent_from: None,
        }
    }
}

/// A mount's `delete_version_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteVersionAfter {
    /// Not set: keys' own settings apply.
    #[default]
    Unset,
    /// Versions are soft-deleted this long after they are written (or the key's own setting,
    /// when shorter).
    After(Duration),
    /// Turned off for every key of the mount (Vault: a negative duration).
    Disabled,
}

impl DeleteVersionAfter {
    /// From Vault's signed seconds: negative disables, zero unsets.
    #[must_use]
    pub fn from_signed_secs(secs: i64) -> Self {
        match secs {
            0 => Self::Unset,
            n if n < 0 => Self::Disabled,
            n => Self::After(Duration::from_secs(n.unsigned_abs())),
        }
    }

    /// To Vault's signed seconds (`-1` when disabled).
    #[must_use]
    pub fn as_signed_secs(self) -> i64 {
        match self {
            Self::Unset => 0,
            Self::Disabled => -1,
            Self::After(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A mount's KV configuration (`<mount>/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvConfig {
    /// Versions kept per key (0: [`DEFAULT_MAX_VERSIONS`]).
    pub max_versions: u32,
    /// Whether every write needs check-and-set.
    pub cas_required: bool,
    /// The mount-wide `delete_version_after`.
    pub delete_version_after: DeleteVersionAfter,
}

/// A change to a mount's configuration; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigUpdate {
    /// New `max_versions`.
    pub max_versions: Option<u32>,
    /// New `cas_required`.
    pub cas_required: Option<bool>,
    /// New `delete_version_after`.
    pub delete_version_after: Option<DeleteVersionAfter>,
}

/// A change to a key's metadata (`POST metadata/<path>`); `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    /// New `max_versions` (0: the mount's).
    pub max_versions: Option<u32>,
    /// New `cas_required`.
    pub cas_required: Option<bool>,
    /// New `delete_version_after` (zero: unset).
    pub delete_version_after: Option<Duration>,
    /// Replaces the custom metadata entirely.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// A merge-patch of a key's metadata (`PATCH metadata/<path>`): as [`MetadataUpdate`], but
/// custom metadata entries are merged, and a `None` value removes an entry.
#[derive(Debug, Clone, Default)]
pub struct MetadataPatch {
    /// New `max_versions`.
    pub max_versions: Option<u32>,
    /// New `cas_required`.
    pub cas_required: Option<bool>,
    /// New `delete_version_after`.
    pub delete_version_after: Option<Duration>,
    /// Entries to set (`Some`) or remove (`None`).
    pub custom_metadata: Option<BTreeMap<String, Option<String>>>,
}

/// What a write or patch stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The new version.
    pub info: VersionInfo,
    /// The key's custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// The answer to reading one version.
#[derive(Debug)]
pub enum VersionRead {
    /// The version's data.
    Live {
        /// The data.
        data: SecretData,
        /// The version's state.
        info: VersionInfo,
        /// The key's custom metadata.
        custom_metadata: Option<BTreeMap<String, String>>,
    },
    /// The version exists but is soft-deleted or destroyed (Vault answers 404 with this).
    Gone {
        /// The version's state.
        info: VersionInfo,
        /// The key's custom metadata.
        custom_metadata: Option<BTreeMap<String, String>>,
    },
}

/// The answer to a patch.
#[derive(Debug)]
pub enum PatchOutcome {
    /// The new version.
    Written(Written),
    /// The current version is soft-deleted or destroyed: nothing to patch.
    Gone {
        /// The current version's state.
        info: VersionInfo,
        /// The key's custom metadata.
        custom_metadata: Option<BTreeMap<String, String>>,
    },
}

/// The answer to `subkeys/<path>`: the data's structure with every leaf value replaced by
/// `null`.
#[derive(Debug)]
pub enum SubkeysRead {
    /// The structure.
    Live {
        /// Nested objects; leaves are `null`.
        subkeys: Value,
        /// The version's state.
        info: VersionInfo,
        /// The key's custom metadata.
        custom_metadata: Option<BTreeMap<String, String>>,
    },
    /// The version is soft-deleted or destroyed.
    Gone {
        /// The version's state.
        info: VersionInfo,
        /// The key's custom metadata.
        custom_metadata: Option<BTreeMap<String, String>>,
    },
}

/// Per-process state of the KV store: the key locks and the KV key's id. One per [`Arca`].
///
/// [`Arca`]: crate::Arca
pub struct KvState {
    locks: Vec<RwLock<()>>,
    key_id: OnceCell<String>,
}

impl std::fmt::Debug for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvState").finish_non_exhaustive()
    }
}

impl Default for KvState {
    fn default() -> Self {
        Self {
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            key_id: OnceCell::new(),
        }
    }
}

/// The KV store: operations on KV v2 mounts. Obtained from [`Arca::kv`](crate::Arca::kv).
pub struct Kv<'a> {
    barrier: &'a Arc<Barrier>,
    mounts: &'a Mounts,
    kms: &'a LocalKms,
    state: &'a KvState,
    changes: &'a ChangeFeed,
}

impl std::fmt::Debug for Kv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

/// The storage keys of one mount.
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(mount: &MountEntry) -> Self {
        Self {
            prefix: mount.storage_prefix(),
        }
    }
    fn config(&self) -> String {
        format!("{}config", self.prefix)
    }
    fn meta(&self, path: &str) -> String {
        format!("{}meta/{path}", self.prefix)
    }
    fn meta_prefix(&self) -> String {
        format!("{}meta/", self.prefix)
    }
    /// Version `version`'s two records, the sealed data and the wrapped data key, where
    /// `meta` says they are (see the module's storage section).
    fn version_records(&self, meta: &KeyMetadata, path: &str, version: u64) -> [String; 2] {
        let data = format!("{}data/{path}/{version}", self.prefix);
        let dkey = if meta.adjacent_from.is_some_and(|first| version >= first) {
            format!("{data}{WRAPPED_KEY_SUFFIX}")
        } else {
            format!("{}dkey/{path}/{version}", self.prefix)
        };
        [data, dkey]
    }
}

/// Appended to a version's data record name to name its wrapped key. It starts with a control
/// character, which [`check_secret_path`] refuses in paths, so no other key's record can sort
/// between a version's data and its key.
const WRAPPED_KEY_SUFFIX: &str = "\u{1f}k";

/// The deletion time a version written (or undeleted) at `from` gets: `from` plus the
/// shorter of the mount's and the key's non-zero `delete_version_after`.
fn deletion_time(from: SystemTime, config: &KvConfig, meta: &KeyMetadata) -> Option<SystemTime> {
    let mount = match config.delete_version_after {
        DeleteVersionAfter::Disabled => return None,
        DeleteVersionAfter::Unset => Duration::ZERO,
        DeleteVersionAfter::After(d) => d,
    };
    let key = meta.delete_version_after;
    let chosen = match (mount.is_zero(), key.is_zero()) {
        (true, true) => return None,
        (true, false) => key,
        (false, true) => mount,
        (false, false) => mount.min(key),
    };
    from.checked_add(chosen)
}

/// Versions kept for a key: its own setting, else the mount's, else the default.
fn effective_max_versions(config: &KvConfig, meta: &KeyMetadata) -> u32 {
    if meta.max_versions > 0 {
        meta.max_versions
    } else if config.max_versions > 0 {
        config.max_versions
    } else {
        DEFAULT_MAX_VERSIONS
    }
}

fn check_cas(cas: Option<u64>, config: &KvConfig, meta: &KeyMetadata) -> Result<(), KvError> {
    match cas {
        Some(cas) if cas != meta.current_version => Err(KvError::CasMismatch),
        Some(_) => Ok(()),
        None if config.cas_required || meta.cas_required => Err(KvError::CasRequired),
        None => Ok(()),
    }
}

fn check_max_versions(max: u32) -> Result<(), KvError> {
    if max > MAX_VERSIONS_LIMIT {
        return Err(KvError::InvalidRequest(format!(
            "max_versions must be at most {MAX_VERSIONS_LIMIT}"
        )));
    }
    Ok(())
}

/// Vault's rules for custom metadata: at most 64 entries, keys 1..=128 bytes, values
/// 1..=512 bytes, printable characters only. The message quotes no value.
fn check_custom_metadata(custom: &BTreeMap<String, String>) -> Result<(), KvError> {
    const PREFIX: &str = "custom_metadata validation failed";
    if custom.len() > MAX_CUSTOM_METADATA_KEYS {
        return Err(KvError::InvalidRequest(format!(
            "{PREFIX}: payload must contain at most {MAX_CUSTOM_METADATA_KEYS} keys, provided {}",
            custom.len()
        )));
    }
    let printable = |s: &str| !s.chars().any(char::is_control);
    for (key, value) in custom {
        if key.is_empty() || key.len() > MAX_CUSTOM_METADATA_KEY_LEN || !printable(key) {
            return Err(KvError::InvalidRequest(format!(
                "{PREFIX}: keys must be 1 to {MAX_CUSTOM_METADATA_KEY_LEN} printable bytes"
            )));
        }
        if value.is_empty() || value.len() > MAX_CUSTOM_METADATA_VALUE_LEN || !printable(value) {
            return Err(KvError::InvalidRequest(format!(
                "{PREFIX}: values must be 1 to {MAX_CUSTOM_METADATA_VALUE_LEN} printable bytes"
            )));
        }
    }
    Ok(())
}

/// RFC 7386 JSON merge patch of `patch` onto `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Replaces every leaf of `value` with `null`, keeping the nesting of non-empty objects up to
/// `depth` levels (0: no limit).
fn strip_values(value: &Map<String, Value>, depth: usize, level: usize) -> Value {
    let mut out = Map::new();
    for (key, child) in value {
        let stripped = match child {
            Value::Object(inner) if !inner.is_empty() && (depth == 0 || level < depth) => {
                strip_values(inner, depth, level + 1)
            }
            _ => Value::Null,
        };
        out.insert(key.clone(), stripped);
    }
    Value::Object(out)
}

impl<'a> Kv<'a> {
    /// The KV store over a barrier, a mount table, a key provider and the per-process state.
    /// Every committed change of a key's versions is published on `changes`.
    #[must_use]
    pub fn new(
        barrier: &'a Arc<Barrier>,
        mounts: &'a Mounts,
        kms: &'a LocalKms,
        state: &'a KvState,
        changes: &'a ChangeFeed,
    ) -> Self {
        Self {
            barrier,
            mounts,
            kms,
            state,
            changes,
        }
    }

    fn lock(&self, mount: &MountEntry, path: &str) -> &RwLock<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        mount.uuid().hash(&mut hasher);
        path.hash(&mut hasher);
        // The modulo keeps the index below the stripe count, which fits in usize.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        &self.state.locks[index]
    }

    fn check_mount(mount: &MountEntry) -> Result<(), KvError> {
        if mount.kind() == MountKind::KvV2 {
            Ok(())
        } else {
            Err(KvError::NoSuchMount(mount.path().to_owned()))
        }
    }

    async fn key_id(&self) -> Result<&str, KvError> {
        let id = self
            .state
            .key_id
            .get_or_try_init(|| async {
                self.kms
                    .ensure_key_for_alias(
                        KV_KEY_ALIAS,
                        "arca KV v2: wraps the data key of every secret version",
                    )
                    .await
                    .map_err(cipher::kms_error)
            })
            .await?;
        Ok(id)
    }

    /// A key's metadata, owned, for a change.
    async fn load_meta(&self, keys: &Keys, path: &str) -> Result<Option<KeyMetadata>, KvError> {
        Ok(self
            .shared_meta(keys, path)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// A key's metadata as decoded once from its cached record and shared with every reader
    /// of the same bytes (see [`Barrier::get_decoded`]).
    async fn shared_meta(
        &self,
        keys: &Keys,
        path: &str,
    ) -> Result<Option<Arc<KeyMetadata>>, KvError> {
        Ok(self
            .barrier
            .get_decoded(&keys.meta(path), meta::decode_meta)
            .await?
            .map(arca_storage::Decoded::into_value))
    }

    async fn load_config(&self, keys: &Keys) -> Result<KvConfig, KvError> {
        match self.barrier.get(&keys.config()).await? {
            Some(raw) => meta::decode_config(raw.expose_secret()),
            None => Ok(KvConfig::default()),
        }
    }

    async fn open_version(
        &self,
        mount: &MountEntry,
        keys: &Keys,
        meta: &KeyMetadata,
        path: &str,
        version: u64,
    ) -> Result<Plaintext, KvError> {
        let [data_key, dkey_key] = keys.version_records(meta, path, version);
        let (Some(ciphertext), Some(wrapped)) = (
            self.barrier.get_record(&data_key).await?,
            self.barrier.get_record(&dkey_key).await?,
        ) else {
            tracing::error!(version, "the records of a live KV version are missing");
            return Err(KvError::Integrity);
        };
        cipher::open(
            self.kms as &dyn KeyProvider,
            mount.uuid(),
            path,
            version,
            ciphertext.expose_secret(),
            wrapped.expose_secret(),
        )
        .await
    }

    /// Whether the key has metadata (Vault's existence check: a write to an existing key
    /// needs `update`, to a new one `create`).
    ///
    /// # Errors
    /// [`KvError::InvalidPath`], [`KvError::NoSuchMount`], [`KvError::Sealed`], storage.
    pub async fn exists(&self, mount: &MountEntry, path: &str) -> Result<bool, KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        let _pin = self.mounts.pin(mount).await?;
        Ok(self.shared_meta(&Keys::new(mount), path).await?.is_some())
    }

    /// Writes a new version of `path`. With `cas`, only if the key's current version is
    /// `cas` (0: only if the key does not exist).
    ///
    /// # Errors
    /// [`KvError::CasMismatch`], [`KvError::CasRequired`], [`KvError::InvalidPath`],
    /// [`KvError::NoSuchMount`], [`KvError::Sealed`], [`KvError::KeyUnavailable`], storage.
    pub async fn write(
        &self,
        mount: &MountEntry,
        path: &str,
        data: &SecretData,
        cas: Option<u64>,
    ) -> Result<Written, KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).write().await;
        let keys = Keys::new(mount);
        let config = self.load_config(&keys).await?;
        let now = SystemTime::now();
        let meta = self
            .load_meta(&keys, path)
            .await?
            .unwrap_or_else(|| KeyMetadata::new(now));
        check_cas(cas, &config, &meta)?;
        self.commit_version(mount, &keys, path, &config, meta, data.expose_secret(), now)
            .await
    }

    /// Applies a JSON merge patch (RFC 7386) to the current version's data and writes the
    /// result as a new version. `Ok(None)` when the key or its current version does not exist.
    ///
    /// # Errors
    /// As [`Kv::write`], and [`KvError::TooLarge`] when the patched data is too large.
    pub async fn patch(
        &self,
        mount: &MountEntry,
        path: &str,
        patch: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<Option<PatchOutcome>, KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).write().await;
        let keys = Keys::new(mount);
        let Some(meta) = self.load_meta(&keys, path).await? else {
            return Ok(None);
        };
        let config = self.load_config(&keys).await?;
        check_cas(cas, &config, &meta)?;
        let Some(info) = meta.versions.get(&meta.current_version).cloned() else {
            return Ok(None);
        };
        let now = SystemTime::now();
        if !info.is_live_at(now) {
            return Ok(Some(PatchOutcome::Gone {
                info,
                custom_metadata: meta.custom_metadata,
            }));
        }
        let current = self
            .open_version(mount, &keys, &meta, path, info.version)
            .await?;
        let mut value: Value =
            serde_json::from_slice(current.expose_secret()).map_err(|_| KvError::Corrupt)?;
        merge_patch(&mut value, &Value::Object(patch.clone()));
        let Value::Object(object) = value else {
            return Err(KvError::Corrupt);
        };
        let data = SecretData::from_object(&object)?;
        let written = self
            .commit_version(mount, &keys, path, &config, meta, data.expose_secret(), now)
            .await?;
        Ok(Some(PatchOutcome::Written(written)))
    }

    /// Seals `json` as the next version of a key and stores it with the updated metadata,
    /// pruning the versions past `max_versions`. Called with the key's lock held.
    #[allow(clippy::too_many_arguments)]
    async fn commit_version(
        &self,
        mount: &MountEntry,
        keys: &Keys,
        path: &str,
        config: &KvConfig,
        mut meta: KeyMetadata,
        json: &[u8],
        now: SystemTime,
    ) -> Result<Written, KvError> {
        let version = meta.current_version + 1;
        meta.adjacent_from.get_or_insert(version);
        let key_id = self.key_id().await?.to_owned();
        let sealed = cipher::seal(
            self.kms as &dyn KeyProvider,
            &key_id,
            mount.uuid(),
            path,
            version,
            json,
        )
        .await?;
        let info = VersionInfo {
            version,
            created_time: now,
            deletion_time: deletion_time(now, config, &meta),
            destroyed: false,
        };
        meta.current_version = version;
        meta.versions.insert(version, info.clone());
        meta.updated_time = now;

        // Vault's sliding window: once the key holds `max` versions past `oldest_version`,
        // everything up to `current - max` goes.
        let max = u64::from(effective_max_versions(config, &meta));
        let mut prune: Vec<u64> = Vec::new();
        let mut new_oldest = meta.oldest_version;
        if meta.current_version - meta.oldest_version >= max {
            let last_pruned = meta.current_version - max;
            prune = meta
                .versions
                .range(..=last_pruned)
                .map(|(n, _)| *n)
                .collect();
            new_oldest = last_pruned + 1;
        }
        // The first batch carries the new version and as many prunes as fit; the rest follow
        // in batches of their own. Every batch leaves the metadata naming only versions whose
        // records exist.
        let (first, rest) = prune.split_at(prune.len().min(VERSIONS_PER_BATCH));
        for n in first {
            meta.versions.remove(n);
        }
        meta.oldest_version = rest.first().copied().unwrap_or(new_oldest);
        let owned_keys: Vec<String> = first
            .iter()
            .flat_map(|n| keys.version_records(&meta, path, *n))
            .collect();
        let encoded = meta::encode_meta(&meta);
        let [data_key, dkey_key] = keys.version_records(&meta, path, version);
        let meta_key = keys.meta(path);
        let mut ops = vec![
            BarrierOp::Put(&meta_key, &encoded),
            BarrierOp::Put(&data_key, &sealed.ciphertext),
            BarrierOp::Put(&dkey_key, &sealed.wrapped_key),
        ];
        ops.extend(owned_keys.iter().map(|k| BarrierOp::Delete(k)));
        self.barrier.batch(&ops).await?;
        // The new version is readable from here on, whatever the pruning below does.
        self.changes
            .kv_changed(ChangeKind::KvWrite, mount.path(), path, &[version]);
        let chunks: Vec<&[u64]> = rest.chunks(VERSIONS_PER_BATCH).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            for n in *chunk {
                meta.versions.remove(n);
            }
            meta.oldest_version = match chunks.get(i + 1) {
                Some(next) => next[0],
                None => new_oldest,
            };
            self.delete_version_records(keys, path, &meta, chunk)
                .await?;
        }
        Ok(Written {
            info,
            custom_metadata: meta.custom_metadata,
        })
    }

    /// Stores `meta` and deletes the records of `versions`, in one batch.
    async fn delete_version_records(
        &self,
        keys: &Keys,
        path: &str,
        meta: &KeyMetadata,
        versions: &[u64],
    ) -> Result<(), KvError> {
        let encoded = meta::encode_meta(meta);
        let meta_key = keys.meta(path);
        let owned: Vec<String> = versions
            .iter()
            .flat_map(|n| keys.version_records(meta, path, *n))
            .collect();
        let mut ops = vec![BarrierOp::Put(&meta_key, &encoded)];
        ops.extend(owned.iter().map(|k| BarrierOp::Delete(k)));
        self.barrier.batch(&ops).await?;
        Ok(())
    }

    /// Reads a version (`None`, or `Some(0)`: the current one). `Ok(None)` when the key or
    /// the version does not exist.
    ///
    /// # Errors
    /// [`KvError::InvalidPath`], [`KvError::NoSuchMount`], [`KvError::Sealed`],
    /// [`KvError::Integrity`], storage.
    pub async fn read(
        &self,
        mount: &MountEntry,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<VersionRead>, KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).read().await;
        let keys = Keys::new(mount);
        let Some(meta) = self.shared_meta(&keys, path).await? else {
            return Ok(None);
        };
        let number = version.filter(|v| *v > 0).unwrap_or(meta.current_version);
        let Some(info) = meta.versions.get(&number).cloned() else {
            return Ok(None);
        };
        if !info.is_live_at(SystemTime::now()) {
            return Ok(Some(VersionRead::Gone {
                info,
                custom_metadata: meta.custom_metadata.clone(),
            }));
        }
        // No size check here: a version stored under an earlier, larger limit still reads.
        let data = SecretData(self.open_version(mount, &keys, &meta, path, number).await?);
        Ok(Some(VersionRead::Live {
            data,
            info,
            custom_metadata: meta.custom_metadata.clone(),
        }))
    }

    /// The structure of a version's data with every value removed, nested objects kept to
    /// `depth` levels (0: all). `Ok(None)` when the key or version does not exist.
    ///
    /// # Errors
    /// As [`Kv::read`].
    pub async fn subkeys(
        &self,
        mount: &MountEntry,
        path: &str,
        version: Option<u64>,
        depth: usize,
    ) -> Result<Option<SubkeysRead>, KvError> {
        Ok(match self.read(mount, path, version).await? {
            None => None,
            Some(VersionRead::Gone {
                info,
                custom_metadata,
            }) => Some(SubkeysRead::Gone {
                info,
                custom_metadata,
            }),
            Some(VersionRead::Live {
                data,
                info,
                custom_metadata,
            }) => Some(SubkeysRead::Live {
                subkeys: strip_values(&data.to_json()?, depth, 1),
                info,
                custom_metadata,
            }),
        })
    }

    /// Soft-deletes the current version (Vault's `DELETE data/<path>`). A missing key, or a
    /// current version already deleted or destroyed, is not an error.
    ///
    /// # Errors
    /// [`KvError::InvalidPath`], [`KvError::NoSuchMount`], [`KvError::Sealed`], storage.
    pub async fn delete_latest(&self, mount: &MountEntry, path: &str) -> Result<(), KvError> {
        self.change_versions(mount, path, None, Change::Delete)
            .await
    }

    /// Soft-deletes the given versions; unknown, destroyed or already deleted ones are
    /// skipped.
    ///
    /// # Errors
    /// As [`Kv::delete_latest`], and [`KvError::InvalidRequest`] for an empty list.
    pub async fn delete_versions(
        &self,
        mount: &MountEntry,
        path: &str,
        versions: &[u64],
    ) -> Result<(), KvError> {
        self.change_versions(mount, path, Some(versions), Change::Delete)
            .await
    }

    /// Restores soft-deleted versions (destroyed ones stay destroyed).
    ///
    /// # Errors
    /// As [`Kv::delete_versions`].
    pub async fn undelete_versions(
        &self,
        mount: &MountEntry,
        path: &str,
        versions: &[u64],
    ) -> Result<(), KvError> {
        self.change_versions(mount, path, Some(versions), Change::Undelete)
            .await
    }

    /// Destroys versions: marks them destroyed and deletes their ciphertext and wrapped data
    /// key, so their data cannot be recovered.
    ///
    /// # Errors
    /// As [`Kv::delete_versions`].
    pub async fn destroy_versions(
        &self,
        mount: &MountEntry,
        path: &str,
        versions: &[u64],
    ) -> Result<(), KvError> {
        self.change_versions(mount, path, Some(versions), Change::Destroy)
            .await
    }

    async fn change_versions(
        &self,
        mount: &MountEntry,
        path: &str,
        versions: Option<&[u64]>,
        change: Change,
    ) -> Result<(), KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        if versions.is_some_and(<[u64]>::is_empty) {
            return Err(KvError::InvalidRequest("No version number provided".into()));
        }
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).write().await;
        let keys = Keys::new(mount);
        let Some(mut meta) = self.load_meta(&keys, path).await? else {
            return Ok(());
        };
        let config = self.load_config(&keys).await?;
        let now = SystemTime::now();
        let latest = [meta.current_version];
        let mut targets: Vec<u64> = versions.unwrap_or(&latest).to_vec();
        targets.sort_unstable();
        targets.dedup();
        let mut destroyed = Vec::new();
        let mut changed = Vec::new();
        for number in targets {
            let Some(info) = meta.versions.get(&number).cloned() else {
                continue;
            };
            if info.destroyed {
                continue;
            }
            let next = match change {
                Change::Delete if info.is_deleted_at(now) => continue,
                Change::Delete => VersionInfo {
                    deletion_time: Some(now),
                    ..info
                },
                Change::Undelete => VersionInfo {
                    deletion_time: deletion_time(now, &config, &meta),
                    ..info
                },
                Change::Destroy => {
                    destroyed.push(number);
                    VersionInfo {
                        destroyed: true,
                        ..info
                    }
                }
            };
            meta.versions.insert(number, next);
            changed.push(number);
        }
        if changed.is_empty() {
            return Ok(());
        }
        let kind = match change {
            Change::Delete => ChangeKind::KvDelete,
            Change::Undelete => ChangeKind::KvUndelete,
            Change::Destroy => ChangeKind::KvDestroy,
        };
        if destroyed.len() <= VERSIONS_PER_BATCH {
            self.delete_version_records(&keys, path, &meta, &destroyed)
                .await?;
            self.changes.kv_changed(kind, mount.path(), path, &changed);
            return Ok(());
        }
        // Too many for one batch: destroy in chunks, each marking exactly the versions whose
        // records it deletes, so no state names a live version without its records.
        let final_meta = meta;
        let mut partial = self
            .load_meta(&keys, path)
            .await?
            .ok_or_else(|| KvError::Internal("metadata vanished under its lock".into()))?;
        for chunk in destroyed.chunks(VERSIONS_PER_BATCH) {
            for n in chunk {
                if let Some(info) = partial.versions.get_mut(n) {
                    info.destroyed = true;
                }
            }
            let is_last = chunk.last() == destroyed.last();
            let state = if is_last { &final_meta } else { &partial };
            self.delete_version_records(&keys, path, state, chunk)
                .await?;
        }
        self.changes.kv_changed(kind, mount.path(), path, &changed);
        Ok(())
    }

    /// A key's metadata. `Ok(None)` when the key does not exist.
    ///
    /// # Errors
    /// [`KvError::InvalidPath`], [`KvError::NoSuchMount`], [`KvError::Sealed`], storage.
    pub async fn read_metadata(
        &self,
        mount: &MountEntry,
        path: &str,
    ) -> Result<Option<KeyMetadata>, KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).read().await;
        self.load_meta(&Keys::new(mount), path).await
    }

    /// Changes a key's settings, creating its metadata when the key does not exist yet. An
    /// update that sets nothing changes nothing (as Vault).
    ///
    /// # Errors
    /// [`KvError::InvalidRequest`] for a value out of range, and as [`Kv::read_metadata`].
    pub async fn write_metadata(
        &self,
        mount: &MountEntry,
        path: &str,
        update: MetadataUpdate,
    ) -> Result<(), KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        if let Some(max) = update.max_versions {
            check_max_versions(max)?;
        }
        if let Some(custom) = &update.custom_metadata {
            check_custom_metadata(custom)?;
        }
        if update.max_versions.is_none()
            && update.cas_required.is_none()
            && update.delete_version_after.is_none()
            && update.custom_metadata.is_none()
        {
            return Ok(());
        }
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).write().await;
        let keys = Keys::new(mount);
        let now = SystemTime::now();
        let mut meta = self
            .load_meta(&keys, path)
            .await?
            .unwrap_or_else(|| KeyMetadata::new(now));
        if let Some(max) = update.max_versions {
            meta.max_versions = max;
        }
        if let Some(cas) = update.cas_required {
            meta.cas_required = cas;
        }
        if let Some(after) = update.delete_version_after {
            meta.delete_version_after = after;
        }
        if let Some(custom) = update.custom_metadata {
            meta.custom_metadata = Some(custom);
        }
        meta.updated_time = now;
        self.barrier
            .put(&keys.meta(path), &meta::encode_meta(&meta))
            .await?;
        Ok(())
    }

    /// Merge-patches a key's settings. `Ok(false)` when the key does not exist.
    ///
    /// # Errors
    /// As [`Kv::write_metadata`].
    pub async fn patch_metadata(
        &self,
        mount: &MountEntry,
        path: &str,
        patch: MetadataPatch,
    ) -> Result<bool, KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        if let Some(max) = patch.max_versions {
            check_max_versions(max)?;
        }
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).write().await;
        let keys = Keys::new(mount);
        let Some(mut meta) = self.load_meta(&keys, path).await? else {
            return Ok(false);
        };
        if let Some(max) = patch.max_versions {
            meta.max_versions = max;
        }
        if let Some(cas) = patch.cas_required {
            meta.cas_required = cas;
        }
        if let Some(after) = patch.delete_version_after {
            meta.delete_version_after = after;
        }
        if let Some(entries) = patch.custom_metadata {
            let mut custom = meta.custom_metadata.take().unwrap_or_default();
            for (key, value) in entries {
                match value {
                    Some(value) => {
                        custom.insert(key, value);
                    }
                    None => {
                        custom.remove(&key);
                    }
                }
            }
            check_custom_metadata(&custom)?;
            meta.custom_metadata = Some(custom);
        }
        meta.updated_time = SystemTime::now();
        self.barrier
            .put(&keys.meta(path), &meta::encode_meta(&meta))
            .await?;
        Ok(true)
    }

    /// Deletes a key: its metadata and every version, destroyed for good. A missing key is
    /// not an error.
    ///
    /// # Errors
    /// As [`Kv::read_metadata`].
    pub async fn delete_metadata(&self, mount: &MountEntry, path: &str) -> Result<(), KvError> {
        Self::check_mount(mount)?;
        check_secret_path(path)?;
        let _pin = self.mounts.pin(mount).await?;
        let _lock = self.lock(mount, path).write().await;
        let keys = Keys::new(mount);
        let Some(mut meta) = self.load_meta(&keys, path).await? else {
            return Ok(());
        };
        let with_records: Vec<u64> = meta
            .versions
            .iter()
            .filter(|(_, v)| !v.destroyed)
            .map(|(n, _)| *n)
            .collect();
        let (head, last) =
            with_records.split_at(with_records.len().saturating_sub(VERSIONS_PER_BATCH));
        // Earlier chunks destroy versions while the key stays; the last batch removes the
        // metadata with the remaining records.
        for chunk in head.chunks(VERSIONS_PER_BATCH) {
            for n in chunk {
                if let Some(info) = meta.versions.get_mut(n) {
                    info.destroyed = true;
                }
            }
            self.delete_version_records(&keys, path, &meta, chunk)
                .await?;
        }
        let meta_key = keys.meta(path);
        let owned: Vec<String> = last
            .iter()
            .flat_map(|n| keys.version_records(&meta, path, *n))
            .collect();
        let mut ops = vec![BarrierOp::Delete(&meta_key)];
        ops.extend(owned.iter().map(|k| BarrierOp::Delete(k)));
        self.barrier.batch(&ops).await?;
        let versions: Vec<u64> = meta.versions.keys().copied().collect();
        self.changes
            .kv_changed(ChangeKind::KvMetadataDelete, mount.path(), path, &versions);
        Ok(())
    }

    /// The keys and folders (ending in `/`) directly under `folder` (`""`: the mount's root),
    /// sorted. An empty list when there is nothing there.
    ///
    /// # Errors
    /// [`KvError::InvalidPath`], [`KvError::NoSuchMount`], [`KvError::Sealed`], storage.
    pub async fn list(&self, mount: &MountEntry, folder: &str) -> Result<Vec<String>, KvError> {
        Self::check_mount(mount)?;
        let folder = folder_prefix(folder)?;
        let _pin = self.mounts.pin(mount).await?;
        let prefix = format!("{}{folder}", Keys::new(mount).meta_prefix());
        let mut out: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .barrier
                .list_page(
                    &prefix,
                    after.as_deref(),
                    arca_storage::backend::MAX_LIST_PAGE,
                )
                .await?;
            let mut skip_to: Option<String> = None;
            for key in &page.keys {
                let Some(rest) = key.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                let entry = match rest.find('/') {
                    Some(i) => &rest[..=i],
                    None => rest,
                };
                if out.last().map(String::as_str) != Some(entry) {
                    out.push(entry.to_owned());
                }
                skip_to = entry
                    .ends_with('/')
                    .then(|| format!("{prefix}{entry}{}", char::MAX));
            }
            match page.next {
                // The page ended inside a folder: jump past the rest of it.
                Some(_) if skip_to.is_some() => after = skip_to,
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The mount's KV configuration.
    ///
    /// # Errors
    /// [`KvError::NoSuchMount`], [`KvError::Sealed`], storage.
    pub async fn read_config(&self, mount: &MountEntry) -> Result<KvConfig, KvError> {
        Self::check_mount(mount)?;
        let _pin = self.mounts.pin(mount).await?;
        self.load_config(&Keys::new(mount)).await
    }

    /// Changes the mount's KV configuration.
    ///
    /// # Errors
    /// [`KvError::InvalidRequest`] for a value out of range, and as [`Kv::read_config`].
    pub async fn write_config(
        &self,
        mount: &MountEntry,
        update: ConfigUpdate,
    ) -> Result<KvConfig, KvError> {
        Self::check_mount(mount)?;
        if let Some(max) = update.max_versions {
            check_max_versions(max)?;
        }
        let _pin = self.mounts.pin(mount).await?;
        // Configuration writes are rare; one stripe serializes them per mount.
        let _lock = self.lock(mount, "").write().await;
        let keys = Keys::new(mount);
        let mut config = self.load_config(&keys).await?;
        if let Some(max) = update.max_versions {
            config.max_versions = max;
        }
        if let Some(cas) = update.cas_required {
            config.cas_required = cas;
        }
        if let Some(after) = update.delete_version_after {
            config.delete_version_after = after;
        }
        self.barrier
            .put(&keys.config(), &meta::encode_config(&config))
            .await?;
        Ok(config)
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Delete,
    Undelete,
    Destroy,
}

#[cfg(test)]
mod tests;
