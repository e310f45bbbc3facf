//! The mount table: which secrets engine answers under which path.
//!
//! Vault routes every request by the longest mount path that prefixes it (`secret/` → KV
//! version 2, `transit/` → transit), and its clients depend on that table: `bao kv` asks
//! `sys/internal/ui/mounts/<path>` which mount and which KV version a path belongs to before it
//! sends anything else. This module keeps that table behind the barrier and answers those
//! questions for the HTTP layer and for embedders alike.
//!
//! # Storage
//!
//! The whole table is one barrier record at [`MOUNT_TABLE_PATH`] (JSON, versioned), replaced
//! with a compare-and-swap, so an enable, a disable or a tune is all-or-nothing. Each mount
//! gets a random UUID when it is enabled, and everything an engine stores for that mount lives
//! under [`MountEntry::storage_prefix`] (`logical/<uuid>/`). Keying data by UUID rather than
//! by path means a mount disabled and enabled again at the same path starts empty even if the
//! purge of the old data was interrupted, and that the purge can resume later: the table
//! records the UUIDs whose data is still being removed, and the next load finishes the job.
//!
//! # Concurrency
//!
//! One process owns a store (redb locks its file), so the table is cached in memory after the
//! first read and every change goes through [`Mounts`]. Engines hold a [`MountPin`] for the
//! length of an operation; disabling a mount waits for the pins to drop, so no write can land
//! under a mount whose data is being purged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arca_storage::{Barrier, BarrierError, BarrierOp};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock, RwLockReadGuard};

/// Where the mount table lives, behind the barrier.
pub const MOUNT_TABLE_PATH: &str = "sys/mounts/table";

/// The prefix of every engine's per-mount data; the mount's UUID and a `/` follow.
pub const LOGICAL_PREFIX: &str = "logical/";

/// The longest mount path accepted, in bytes (with its trailing `/`).
pub const MAX_MOUNT_PATH_LEN: usize = 128;

/// The most mounts one store holds.
pub const MAX_MOUNTS: usize = 256;

/// Paths that belong to arca itself and can never be mounted over or under.
const RESERVED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/"];

const TABLE_VERSION: u32 = 1;

/// Records deleted per batch when a disabled mount's data is purged (a batch holds at most 100).
const PURGE_BATCH: usize = 100;

/// The kind of secrets engine a mount serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MountKind {
    /// The versioned key-value store (Vault's `kv` with `options.version = "2"`).
    KvV2,
    /// Encryption as a service (Vault's `transit`).
    Transit,
}

impl MountKind {
    /// Vault's name for the engine type, as `sys/mounts` reports it.
    #[must_use]
    pub fn type_name(self) -> &'static str {
        match self {
            Self::KvV2 => "kv",
            Self::Transit => "transit",
        }
    }

    fn accessor_prefix(self) -> &'static str {
        match self {
            Self::KvV2 => "kv",
            Self::Transit => "transit",
        }
    }
}

/// Errors of the mount table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// The mount path is malformed.
    #[error("invalid mount path: {0}")]
    InvalidPath(String),
    /// The path is reserved for arca itself.
    #[error("cannot mount under {0}")]
    Reserved(&'static str),
    /// Another mount already covers the path, or lies under it.
    #[error("path is already in use at {0}")]
    InUse(String),
    /// The engine type or one of its options is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// A request parameter is out of range.
    #[error("{0}")]
    InvalidRequest(String),
    /// No mount at that path.
    #[error("no mount at {0}")]
    NotFound(String),
    /// The table already holds [`MAX_MOUNTS`] mounts.
    #[error("the mount table is full ({MAX_MOUNTS} mounts)")]
    TableFull,
    /// The stored table does not parse. Opaque; the log says why.
    #[error("the stored mount table is damaged")]
    Corrupt,
    /// Another process changed the table at the same time; retry.
    #[error("the mount table was changed concurrently; retry")]
    Conflict,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] arca_storage::keys::RandomError),
    /// The barrier or its backend failed.
    #[error(transparent)]
    Barrier(BarrierError),
}

impl From<BarrierError> for MountError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Barrier(other),
        }
    }
}

/// One mounted secrets engine. Cheap to clone; read it through the getters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    path: String,
    kind: MountKind,
    uuid: String,
    accessor: String,
    description: String,
    default_lease_ttl: Duration,
    max_lease_ttl: Duration,
    force_no_cache: bool,
    listing_visibility: String,
    options: BTreeMap<String, String>,
    local: bool,
    seal_wrap: bool,
    created: SystemTime,
}

impl MountEntry {
    /// The mount path, with its trailing `/` (`secret/`).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The engine.
    #[must_use]
    pub fn kind(&self) -> MountKind {
        self.kind
    }

    /// The mount's UUID, fixed when it was enabled.
    #[must_use]
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The mount's accessor (`kv_1a2b3c4d`), as Vault reports it.
    #[must_use]
    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    /// The operator's description.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The default lease TTL (zero: the system default). arca's engines issue no leases; the
    /// value is kept for clients that read it back.
    #[must_use]
    pub fn default_lease_ttl(&self) -> Duration {
        self.default_lease_ttl
    }

    /// The maximum lease TTL (zero: the system default).
    #[must_use]
    pub fn max_lease_ttl(&self) -> Duration {
        self.max_lease_ttl
    }

    /// Vault's `force_no_cache` flag, kept as given.
    #[must_use]
    pub fn force_no_cache(&self) -> bool {
        self.force_no_cache
    }

    /// Vault's `listing_visibility` (`""`, `"hidden"` or `"unauth"`), kept as given.
    #[must_use]
    pub fn listing_visibility(&self) -> &str {
        &self.listing_visibility
    }

    /// Engine options (`version = "2"` for KV).
    #[must_use]
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.options
    }

    /// Vault's `local` flag (no replication in arca; kept as given).
    #[must_use]
    pub fn local(&self) -> bool {
        self.local
    }

    /// Vault's `seal_wrap` flag (every record is sealed by the barrier anyway; kept as given).
    #[must_use]
    pub fn seal_wrap(&self) -> bool {
        self.seal_wrap
    }

    /// When the mount was enabled.
    #[must_use]
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Where the engine keeps this mount's records: `logical/<uuid>/`. Disabling the mount
    /// removes everything under it.
    #[must_use]
    pub fn storage_prefix(&self) -> String {
        format!("{LOGICAL_PREFIX}{}/", self.uuid)
    }
}

/// What `sys/mounts/<path>` asks for when enabling an engine.
#[derive(Debug, Clone, Default)]
pub struct EnableRequest {
    /// The engine type: `kv` (with `options.version = "2"`), `kv-v2`, or `transit`.
    pub kind: String,
    /// A free-form description.
    pub description: String,
    /// The default lease TTL.
    pub default_lease_ttl: Duration,
    /// The maximum lease TTL.
    pub max_lease_ttl: Duration,
    /// Vault's `force_no_cache`.
    pub force_no_cache: bool,
    /// Engine options (`version`).
    pub options: BTreeMap<String, String>,
    /// Vault's `local` flag.
    pub local: bool,
    /// Vault's `seal_wrap` flag.
    pub seal_wrap: bool,
}

/// A change to a mount's tunable settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct TuneRequest {
    /// A new description.
    pub description: Option<String>,
    /// A new default lease TTL.
    pub default_lease_ttl: Option<Duration>,
    /// A new maximum lease TTL.
    pub max_lease_ttl: Option<Duration>,
    /// A new `force_no_cache`.
    pub force_no_cache: Option<bool>,
    /// A new `listing_visibility`: `""`, `"hidden"` or `"unauth"`.
    pub listing_visibility: Option<String>,
    /// Options to merge into the mount's options.
    pub options: Option<BTreeMap<String, String>>,
}

/// Proof that a mount existed when an operation began, held for the operation's length.
/// [`Mounts::disable`] waits until every pin is dropped.
#[derive(Debug)]
pub struct MountPin<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

/// The mount table. See the module documentation.
pub struct Mounts {
    barrier: Arc<Barrier>,
    cache: RwLock<Option<Arc<Table>>>,
    write_lock: Mutex<()>,
    /// Shared by operations under a mount, exclusive while a mount is removed.
    ops: RwLock<()>,
}

impl std::fmt::Debug for Mounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounts").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
struct Table {
    mounts: Vec<MountEntry>,
    purging: Vec<String>,
    /// The stored bytes this table was read from or written as (`None`: no table stored
    /// yet), the expected value of the next compare-and-swap.
    raw: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct StoredTable {
    v: u32,
    mounts: Vec<StoredEntry>,
    #[serde(default)]
    purging: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    uuid: String,
    accessor: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default_lease_ttl: u64,
    #[serde(default)]
    max_lease_ttl: u64,
    #[serde(default)]
    force_no_cache: bool,
    #[serde(default)]
    listing_visibility: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    seal_wrap: bool,
    created: u64,
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Table {
    fn decode(bytes: &[u8]) -> Result<Self, MountError> {
        let stored: StoredTable = serde_json::from_slice(bytes).map_err(|err| {
            tracing::error!(error = %err, "the mount table does not parse");
            MountError::Corrupt
        })?;
        if stored.v != TABLE_VERSION {
            tracing::error!(version = stored.v, "unknown mount table version");
            return Err(MountError::Corrupt);
        }
        let mut mounts = Vec::with_capacity(stored.mounts.len());
        for entry in stored.mounts {
            let kind = match entry.kind.as_str() {
                "kv" => MountKind::KvV2,
                "transit" => MountKind::Transit,
                other => {
                    tracing::error!(kind = other, "unknown engine type in the mount table");
                    return Err(MountError::Corrupt);
                }
            };
            mounts.push(MountEntry {
                path: entry.path,
                kind,
                uuid: entry.uuid,
                accessor: entry.accessor,
                description: entry.description,
                default_lease_ttl: Duration::from_secs(entry.default_lease_ttl),
                max_lease_ttl: Duration::from_secs(entry.max_lease_ttl),
                force_no_cache: entry.force_no_cache,
                listing_visibility: entry.listing_visibility,
                options: entry.options,
                local: entry.local,
                seal_wrap: entry.seal_wrap,
                created: UNIX_EPOCH + Duration::from_secs(entry.created),
            });
        }
        Ok(Self {
            mounts,
            purging: stored.purging,
            raw: None,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let stored = StoredTable {
            v: TABLE_VERSION,
            mounts: self
                .mounts
                .iter()
                .map(|m| StoredEntry {
                    path: m.path.clone(),
                    kind: m.kind.type_name().to_owned(),
                    uuid: m.uuid.clone(),
                    accessor: m.accessor.clone(),
                    description: m.description.clone(),
                    default_lease_ttl: m.default_lease_ttl.as_secs(),
                    max_lease_ttl: m.max_lease_ttl.as_secs(),
                    force_no_cache: m.force_no_cache,
                    listing_visibility: m.listing_visibility.clone(),
                    options: m.options.clone(),
                    local: m.local,
                    seal_wrap: m.seal_wrap,
                    created: unix_secs(m.created),
                })
                .collect(),
            purging: self.purging.clone(),
        };
        // Serializing plain structs of strings, integers and maps with string keys cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_vec(&stored).expect("the mount table serializes")
    }

    fn exact(&self, path: &str) -> Option<&MountEntry> {
        self.mounts.iter().find(|m| m.path == path)
    }

    /// The mount whose path is the longest prefix of `path` (taken as a folder).
    fn longest_prefix(&self, path: &str) -> Option<&MountEntry> {
        let path = path.trim_start_matches('/');
        self.mounts
            .iter()
            .filter(|m| path.starts_with(m.path.as_str()) || path == m.path.trim_end_matches('/'))
            .max_by_key(|m| m.path.len())
    }
}

/// Normalizes a mount path to `a/b/` form and checks it: ASCII letters, digits, `-`, `_` and
/// `.`, segments separated by single slashes, no `.` or `..` segment, at most
/// [`MAX_MOUNT_PATH_LEN`] bytes, not under a reserved prefix.
///
/// # Errors
/// [`MountError::InvalidPath`] or [`MountError::Reserved`].
pub fn normalize_mount_path(path: &str) -> Result<String, MountError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(MountError::InvalidPath("the path is empty".into()));
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() {
            return Err(MountError::InvalidPath("empty path segment".into()));
        }
        if segment == "." || segment == ".." {
            return Err(MountError::InvalidPath(
                "`.` and `..` segments are not allowed".into(),
            ));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(MountError::InvalidPath(
                "only ASCII letters, digits, `-`, `_`, `.` and `/` are allowed".into(),
            ));
        }
    }
    let normalized = format!("{trimmed}/");
    if normalized.len() > MAX_MOUNT_PATH_LEN {
        return Err(MountError::InvalidPath(format!(
            "longer than {MAX_MOUNT_PATH_LEN} bytes"
        )));
    }
    if let Some(reserved) = RESERVED.iter().find(|r| normalized.starts_with(**r)) {
        return Err(MountError::Reserved(reserved));
    }
    Ok(normalized)
}

/// Resolves Vault's engine type and options to a [`MountKind`] and the options arca keeps.
fn resolve_kind(
    kind: &str,
    options: &BTreeMap<String, String>,
) -> Result<(MountKind, BTreeMap<String, String>), MountError> {
    match kind {
        "kv" | "kv-v2" | "generic" => {
            let version = match (kind, options.get("version").map(String::as_str)) {
                ("kv-v2", None | Some("" | "2")) | (_, Some("2")) => "2",
                (_, None | Some("" | "1")) => {
                    return Err(MountError::Unsupported(
                        "arca serves kv version 2 only: enable `kv-v2`, or `kv` with the \
                         option version=2"
                            .into(),
                    ));
                }
                (_, Some(other)) => {
                    return Err(MountError::Unsupported(format!(
                        "unknown kv version {other:?}"
                    )));
                }
            };
            let mut kept = options.clone();
            kept.insert("version".into(), version.into());
            Ok((MountKind::KvV2, kept))
        }
        "transit" => Ok((MountKind::Transit, options.clone())),
        "" => Err(MountError::InvalidRequest(
            "the engine type is required".into(),
        )),
        other => Err(MountError::Unsupported(format!(
            "plugin not found in the catalog: {other}"
        ))),
    }
}

fn random_hex(bytes: usize) -> Result<String, MountError> {
    let mut buf = vec![0u8; bytes];
    arca_storage::keys::fill_random(&mut buf)?;
    Ok(hex::encode(buf))
}

fn random_uuid() -> Result<String, MountError> {
    let mut b = [0u8; 16];
    arca_storage::keys::fill_random(&mut b)?;
    Ok(crate::kms::blob::format_uuid_v4(b))
}

impl Mounts {
    /// The mount table over `barrier`. Nothing is read until the first call.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            cache: RwLock::new(None),
            write_lock: Mutex::new(()),
            ops: RwLock::new(()),
        }
    }

    async fn table(&self) -> Result<Arc<Table>, MountError> {
        if self.barrier.is_sealed() {
            return Err(MountError::Sealed);
        }
        if let Some(table) = self.cache.read().await.as_ref() {
            return Ok(Arc::clone(table));
        }
        let _write = self.write_lock.lock().await;
        self.table_locked().await
    }

    /// Reads the stored table.
    async fn load(&self) -> Result<Table, MountError> {
        match self.barrier.get(MOUNT_TABLE_PATH).await? {
            Some(raw) => {
                let mut table = Table::decode(raw.expose_secret())?;
                table.raw = Some(raw.expose_secret().to_vec());
                Ok(table)
            }
            None => Ok(Table::default()),
        }
    }

    /// Replaces the stored table, checking it is still the one this process last read (the
    /// cached one). Called with `write_lock` held, after `table_locked`.
    async fn store(&self, mut table: Table) -> Result<Arc<Table>, MountError> {
        let expected = self.cache.read().await.as_ref().and_then(|t| t.raw.clone());
        let encoded = table.encode();
        if !self
            .barrier
            .compare_and_swap(MOUNT_TABLE_PATH, expected.as_deref(), Some(&encoded))
            .await?
        {
            return Err(MountError::Conflict);
        }
        table.raw = Some(encoded);
        let table = Arc::new(table);
        *self.cache.write().await = Some(Arc::clone(&table));
        Ok(table)
    }

    /// Removes every record under each purging UUID, then drops the UUIDs from the table.
    async fn finish_purges(&self, mut table: Table) -> Result<Table, MountError> {
        for uuid in table.purging.clone() {
            self.purge_prefix(&format!("{LOGICAL_PREFIX}{uuid}/"))
                .await?;
        }
        table.purging.clear();
        let encoded = table.encode();
        if !self
            .barrier
            .compare_and_swap(MOUNT_TABLE_PATH, table.raw.as_deref(), Some(&encoded))
            .await?
        {
            return Err(MountError::Conflict);
        }
        table.raw = Some(encoded);
        Ok(table)
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, MountError> {
        let mut removed = 0u64;
        loop {
            let page = self.barrier.list_page(prefix, None, PURGE_BATCH).await?;
            if page.keys.is_empty() {
                break;
            }
            let ops: Vec<BarrierOp<'_>> = page
                .keys
                .iter()
                .map(|k| BarrierOp::Delete(k.as_str()))
                .collect();
            self.barrier.batch(&ops).await?;
            removed += page.keys.len() as u64;
        }
        Ok(removed)
    }

    /// Every mount, sorted by path.
    ///
    /// # Errors
    /// [`MountError::Sealed`], [`MountError::Corrupt`], or a storage failure.
    pub async fn list(&self) -> Result<Vec<MountEntry>, MountError> {
        let mut mounts = self.table().await?.mounts.clone();
        mounts.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(mounts)
    }

    /// The mount at exactly `path` (normalized: `secret`, `/secret/` and `secret/` are one).
    ///
    /// # Errors
    /// As [`Mounts::list`], and [`MountError::InvalidPath`].
    pub async fn get(&self, path: &str) -> Result<Option<MountEntry>, MountError> {
        let path = normalize_mount_path(path)?;
        Ok(self.table().await?.exact(&path).cloned())
    }

    /// The mount serving a request path: the one whose path is the longest prefix of `path`
    /// (`transit/encrypt/app` → the `transit/` mount). `None` when no mount covers it.
    ///
    /// # Errors
    /// [`MountError::Sealed`], [`MountError::Corrupt`], or a storage failure.
    pub async fn mount_of(&self, path: &str) -> Result<Option<MountEntry>, MountError> {
        Ok(self.table().await?.longest_prefix(path).cloned())
    }

    /// Pins `entry` for the length of an operation: fails with [`MountError::NotFound`] when
    /// the mount was disabled (or disabled and enabled again) since `entry` was read.
    ///
    /// # Errors
    /// [`MountError::NotFound`], and as [`Mounts::list`].
    pub async fn pin(&self, entry: &MountEntry) -> Result<MountPin<'_>, MountError> {
        let guard = self.ops.read().await;
        let table = self.table().await?;
        match table.exact(&entry.path) {
            Some(current) if current.uuid == entry.uuid => Ok(MountPin { _guard: guard }),
            _ => Err(MountError::NotFound(entry.path.clone())),
        }
    }

    /// Enables an engine at `path`.
    ///
    /// # Errors
    /// [`MountError::InvalidPath`], [`MountError::Reserved`], [`MountError::InUse`] when a
    /// mount covers the path or lies under it, [`MountError::Unsupported`] for an engine arca
    /// does not have (or KV version 1), [`MountError::TableFull`], and as [`Mounts::list`].
    pub async fn enable(
        &self,
        path: &str,
        request: EnableRequest,
    ) -> Result<MountEntry, MountError> {
        let path = normalize_mount_path(path)?;
        let (kind, options) = resolve_kind(&request.kind, &request.options)?;
        check_ttls(request.default_lease_ttl, request.max_lease_ttl)?;
        let _write = self.write_lock.lock().await;
        let mut table = (*self.table_locked().await?).clone();
        if let Some(existing) = table
            .mounts
            .iter()
            .find(|m| path.starts_with(m.path.as_str()) || m.path.starts_with(path.as_str()))
        {
            return Err(MountError::InUse(existing.path.clone()));
        }
        if table.mounts.len() >= MAX_MOUNTS {
            return Err(MountError::TableFull);
        }
        let entry = MountEntry {
            path,
            kind,
            uuid: random_uuid()?,
            accessor: format!("{}_{}", kind.accessor_prefix(), random_hex(4)?),
            description: request.description,
            default_lease_ttl: request.default_lease_ttl,
            max_lease_ttl: request.max_lease_ttl,
            force_no_cache: request.force_no_cache,
            listing_visibility: String::new(),
            options,
            local: request.local,
            seal_wrap: request.seal_wrap,
            created: SystemTime::now(),
        };
        table.mounts.push(entry.clone());
        self.store(table).await?;
        tracing::info!(path = %entry.path, kind = entry.kind.type_name(), "mount enabled");
        Ok(entry)
    }

    /// Enables `kind` at `path` unless a mount is there already; returns the mount at `path`.
    /// Used by development mode at every start.
    ///
    /// # Errors
    /// As [`Mounts::enable`]; [`MountError::InUse`] when another engine type holds the path.
    pub async fn ensure(&self, path: &str, kind: MountKind) -> Result<MountEntry, MountError> {
        if let Some(existing) = self.get(path).await? {
            if existing.kind == kind {
                return Ok(existing);
            }
            return Err(MountError::InUse(existing.path));
        }
        let mut options = BTreeMap::new();
        if kind == MountKind::KvV2 {
            options.insert("version".to_owned(), "2".to_owned());
        }
        let description = match kind {
            MountKind::KvV2 => "key/value secret storage",
            MountKind::Transit => "encryption as a service",
        };
        self.enable(
            path,
            EnableRequest {
                kind: kind.type_name().to_owned(),
                description: description.to_owned(),
                options,
                ..EnableRequest::default()
            },
        )
        .await
    }

    /// Disables the mount at `path` and removes all of its data. Returns whether a mount was
    /// there (Vault answers alike either way, so a caller cannot probe for mounts).
    ///
    /// The mount leaves the table first, in one write; its data is then removed in batches.
    /// If that is interrupted, the table still names the UUID as purging and the next load of
    /// the table finishes the purge.
    ///
    /// # Errors
    /// [`MountError::InvalidPath`], [`MountError::Reserved`], and as [`Mounts::list`].
    pub async fn disable(&self, path: &str) -> Result<bool, MountError> {
        let path = normalize_mount_path(path)?;
        // Wait for operations under any mount to finish; new ones wait for this to end.
        let _ops = self.ops.write().await;
        let _write = self.write_lock.lock().await;
        let mut table = (*self.table_locked().await?).clone();
        let Some(index) = table.mounts.iter().position(|m| m.path == path) else {
            return Ok(false);
        };
        let entry = table.mounts.remove(index);
        table.purging.push(entry.uuid.clone());
        self.store(table.clone()).await?;
        let removed = self.purge_prefix(&entry.storage_prefix()).await?;
        table.purging.retain(|u| *u != entry.uuid);
        self.store(table).await?;
        tracing::info!(path = %entry.path, records = removed, "mount disabled and its data removed");
        Ok(true)
    }

    /// Changes a mount's tunable settings.
    ///
    /// # Errors
    /// [`MountError::NotFound`], [`MountError::InvalidRequest`] for out-of-range values,
    /// [`MountError::Unsupported`] for a KV version other than 2, and as [`Mounts::list`].
    pub async fn tune(&self, path: &str, tune: TuneRequest) -> Result<MountEntry, MountError> {
        let path = normalize_mount_path(path)?;
        let _write = self.write_lock.lock().await;
        let mut table = (*self.table_locked().await?).clone();
        let entry = table
            .mounts
            .iter_mut()
            .find(|m| m.path == path)
            .ok_or_else(|| MountError::NotFound(path.clone()))?;
        let mut next = entry.clone();
        if let Some(description) = tune.description {
            next.description = description;
        }
        if let Some(ttl) = tune.default_lease_ttl {
            next.default_lease_ttl = ttl;
        }
        if let Some(ttl) = tune.max_lease_ttl {
            next.max_lease_ttl = ttl;
        }
        check_ttls(next.default_lease_ttl, next.max_lease_ttl)?;
        if let Some(flag) = tune.force_no_cache {
            next.force_no_cache = flag;
        }
        if let Some(visibility) = tune.listing_visibility {
            if !matches!(visibility.as_str(), "" | "hidden" | "unauth") {
                return Err(MountError::InvalidRequest(format!(
                    "listing_visibility must be \"\", \"hidden\" or \"unauth\", not {visibility:?}"
                )));
            }
            next.listing_visibility = visibility;
        }
        if let Some(options) = tune.options {
            for (key, value) in options {
                if key == "version" && next.kind == MountKind::KvV2 && value != "2" {
                    return Err(MountError::Unsupported(
                        "arca serves kv version 2 only; the version cannot be changed".into(),
                    ));
                }
                next.options.insert(key, value);
            }
        }
        *entry = next.clone();
        self.store(table).await?;
        Ok(next)
    }

    /// The table, loaded if needed, for a caller holding `write_lock`.
    async fn table_locked(&self) -> Result<Arc<Table>, MountError> {
        if self.barrier.is_sealed() {
            return Err(MountError::Sealed);
        }
        if let Some(table) = self.cache.read().await.as_ref() {
            return Ok(Arc::clone(table));
        }
        let table = self.load().await?;
        let table = if table.purging.is_empty() {
            table
        } else {
            // A disable was interrupted after the mount left the table: finish its purge.
            self.finish_purges(table).await?
        };
        let table = Arc::new(table);
        *self.cache.write().await = Some(Arc::clone(&table));
        Ok(table)
    }
}

fn check_ttls(default: Duration, max: Duration) -> Result<(), MountError> {
    if !max.is_zero() && default > max {
        return Err(MountError::InvalidRequest(
            "default_lease_ttl cannot be greater than max_lease_ttl".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_storage::{MemoryBackend, RootKey};

    async fn mounts() -> (Arc<Barrier>, Mounts) {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        (Arc::clone(&barrier), Mounts::new(barrier))
    }

    fn kv2() -> EnableRequest {
        EnableRequest {
            kind: "kv-v2".into(),
            ..EnableRequest::default()
        }
    }

    #[test]
    fn mount_paths_are_normalized_and_checked() {
        assert_eq!(normalize_mount_path("/secret").unwrap(), "secret/");
        assert_eq!(normalize_mount_path("team/a/").unwrap(), "team/a/");
        for bad in ["", "/", "a//b", "a/../b", "./a", "a b", "a\0b", "é"] {
            assert!(
                matches!(normalize_mount_path(bad), Err(MountError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            normalize_mount_path("sys/x"),
            Err(MountError::Reserved("sys/"))
        ));
        assert!(matches!(
            normalize_mount_path("auth"),
            Err(MountError::Reserved("auth/"))
        ));
        assert!(normalize_mount_path(&"a".repeat(200)).is_err());
    }

    #[tokio::test]
    async fn enable_list_resolve_tune_disable() {
        let (barrier, mounts) = mounts().await;
        let kv = mounts.enable("secret", kv2()).await.unwrap();
        assert_eq!(kv.path(), "secret/");
        assert_eq!(kv.kind(), MountKind::KvV2);
        assert_eq!(kv.options().get("version").unwrap(), "2");
        assert!(kv.accessor().starts_with("kv_"));
        mounts
            .enable(
                "transit",
                EnableRequest {
                    kind: "transit".into(),
                    ..EnableRequest::default()
                },
            )
            .await
            .unwrap();
        assert!(matches!(
            mounts.enable("secret/inner", kv2()).await,
            Err(MountError::InUse(p)) if p == "secret/"
        ));
        assert!(matches!(
            mounts.enable("transit", kv2()).await,
            Err(MountError::InUse(_))
        ));
        let paths: Vec<_> = mounts
            .list()
            .await
            .unwrap()
            .iter()
            .map(|m| m.path().to_owned())
            .collect();
        assert_eq!(paths, ["secret/", "transit/"]);
        assert_eq!(
            mounts
                .mount_of("transit/encrypt/app")
                .await
                .unwrap()
                .unwrap()
                .kind(),
            MountKind::Transit
        );
        assert_eq!(
            mounts.mount_of("secret").await.unwrap().unwrap().path(),
            "secret/"
        );
        assert!(mounts.mount_of("secretx/a").await.unwrap().is_none());

        let tuned = mounts
            .tune(
                "secret",
                TuneRequest {
                    description: Some("team secrets".into()),
                    max_lease_ttl: Some(Duration::from_secs(3600)),
                    ..TuneRequest::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(tuned.description(), "team secrets");
        assert!(matches!(
            mounts
                .tune(
                    "secret",
                    TuneRequest {
                        default_lease_ttl: Some(Duration::from_secs(7200)),
                        ..TuneRequest::default()
                    }
                )
                .await,
            Err(MountError::InvalidRequest(_))
        ));

        // Data under the mount goes with it.
        let prefix = kv.storage_prefix();
        barrier.put(&format!("{prefix}x"), b"1").await.unwrap();
        assert!(mounts.disable("secret/").await.unwrap());
        assert!(!mounts.disable("secret/").await.unwrap());
        assert!(barrier.list(&prefix).await.unwrap().is_empty());
        assert!(mounts.mount_of("secret/a").await.unwrap().is_none());

        // A fresh handle over the same store sees the same table.
        let again = Mounts::new(barrier);
        assert_eq!(again.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn kv_version_one_and_unknown_engines_are_refused() {
        let (_, mounts) = mounts().await;
        assert!(matches!(
            mounts
                .enable(
                    "kv1",
                    EnableRequest {
                        kind: "kv".into(),
                        ..EnableRequest::default()
                    }
                )
                .await,
            Err(MountError::Unsupported(_))
        ));
        assert!(matches!(
            mounts
                .enable(
                    "pki",
                    EnableRequest {
                        kind: "pki".into(),
                        ..EnableRequest::default()
                    }
                )
                .await,
            Err(MountError::Unsupported(_))
        ));
        assert!(mounts.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ensure_is_idempotent() {
        let (_, mounts) = mounts().await;
        let a = mounts.ensure("secret/", MountKind::KvV2).await.unwrap();
        let b = mounts.ensure("secret/", MountKind::KvV2).await.unwrap();
        assert_eq!(a.uuid(), b.uuid());
        assert!(matches!(
            mounts.ensure("secret/", MountKind::Transit).await,
            Err(MountError::InUse(_))
        ));
    }

    #[tokio::test]
    async fn an_interrupted_purge_is_finished_at_the_next_load() {
        let (barrier, mounts) = mounts().await;
        let kv = mounts.enable("secret", kv2()).await.unwrap();
        let prefix = kv.storage_prefix();
        for i in 0..250 {
            barrier.put(&format!("{prefix}k{i}"), b"v").await.unwrap();
        }
        // Simulate a crash after the mount left the table but before its data was removed.
        let mut table = (*mounts.table().await.unwrap()).clone();
        table.mounts.clear();
        table.purging.push(kv.uuid().to_owned());
        barrier
            .put(MOUNT_TABLE_PATH, &table.encode())
            .await
            .unwrap();
        let fresh = Mounts::new(Arc::clone(&barrier));
        assert!(fresh.list().await.unwrap().is_empty());
        assert!(barrier.list(&prefix).await.unwrap().is_empty());
        assert!(fresh.load().await.unwrap().purging.is_empty());
    }

    #[tokio::test]
    async fn a_sealed_table_says_so() {
        let (barrier, mounts) = mounts().await;
        barrier.seal().await;
        assert!(matches!(mounts.list().await, Err(MountError::Sealed)));
    }
}
