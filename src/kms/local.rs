//! [`LocalKms`]: KMS keys whose material lives behind the barrier.
//!
//! Records (all barrier records, so encrypted at rest; see `src/kms/FORMAT.md`):
//!
//! - `kms/<region>/key/<key-id>`: the key's metadata as JSON (spec, state, versions, rotation,
//!   tags, policy). No secret in it, but it is still sealed like every record.
//! - `kms/<region>/material/<key-id>/<version>`: one version's material (see `material.rs`).
//! - `kms/<region>/alias/<alias-name>`: the alias's target key id, as JSON.
//!
//! Writes of one `LocalKms` are serialised by an in-process lock (a store is opened by one
//! process: redb locks its file), and every multi-record change is one atomic barrier batch,
//! so a crash leaves either the old key or the new one, never a key without its material.
//!
//! `LocalKms` keeps nothing itself: each operation reads the records it needs through the
//! barrier, so sealing the barrier locks every key at once. The barrier's record cache
//! (`arca_storage::read_cache`) may hold a key's opened record between requests; it is bounded,
//! wiped on eviction and emptied by the seal, so no key material outlives the unsealed state.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use arca_storage::{Barrier, BarrierOp, Plaintext};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::blob::{self, NONCE_LEN, format_uuid, parse_blob, parse_uuid};
use super::material::{
    HashAlgorithm, KeyMaterial, MacAlgorithm, MessageType, SigningAlgorithm, random_bytes,
};
use super::{
    DataKey, DataKeySpec, Decrypted, EncryptionContext, KeyProvider, KeySpec, KeyUsage, KmsError,
};

/// KMS's limit on `Encrypt`'s plaintext (and on raw messages to sign or MAC).
pub const MAX_PLAINTEXT_LEN: usize = 4096;

/// Format version of the stored key metadata.
const KEY_RECORD_VERSION: u32 = 1;

/// AWS's limits on deletion windows and rotation periods, in days.
const DELETION_WINDOW: std::ops::RangeInclusive<u32> = 7..=30;
const DEFAULT_DELETION_WINDOW: u32 = 30;
const ROTATION_PERIOD: std::ops::RangeInclusive<u32> = 90..=2560;
const DEFAULT_ROTATION_PERIOD: u32 = 365;
const DAY: u64 = 86_400;
/// AWS allows 50 tags per key.
const MAX_TAGS: usize = 50;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The state of a key (KMS `KeyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Disabled: no cryptographic operation until enabled.
    Disabled,
    /// Scheduled for deletion at [`KeyMetadata::deletion_date`]; unusable meanwhile.
    PendingDeletion,
}

impl KeyState {
    /// The KMS name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "Enabled" => Some(Self::Enabled),
            "Disabled" => Some(Self::Disabled),
            "PendingDeletion" => Some(Self::PendingDeletion),
            _ => None,
        }
    }
}

/// What `DescribeKey` reports. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyMetadata {
    /// The key id (a UUID).
    pub key_id: String,
    /// The key ARN.
    pub arn: String,
    /// The owning account.
    pub account: String,
    /// Creation time.
    pub created: u64,
    /// The description.
    pub description: String,
    /// The spec.
    pub spec: KeySpec,
    /// The usage.
    pub usage: KeyUsage,
    /// The state.
    pub state: KeyState,
    /// When a key pending deletion will be deleted.
    pub deletion_date: Option<u64>,
    /// The current key version (1 before any rotation).
    pub current_version: u32,
    /// Whether automatic rotation is on.
    pub rotation_enabled: bool,
}

/// `GetKeyRotationStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStatus {
    /// The key ARN.
    pub key_arn: String,
    /// Whether automatic rotation is on.
    pub enabled: bool,
    /// The automatic rotation period, when on.
    pub period_days: Option<u32>,
    /// The next automatic rotation, when on.
    pub next_rotation: Option<u64>,
}

/// One completed rotation (`ListKeyRotations`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationEntry {
    /// The key id.
    pub key_id: String,
    /// When the rotation happened.
    pub date: u64,
    /// Whether it was asked for (`ON_DEMAND`) rather than scheduled (`AUTOMATIC`).
    pub on_demand: bool,
    /// The key version it created.
    pub version: u32,
}

/// One alias (`ListAliases`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AliasEntry {
    /// `alias/...`.
    pub name: String,
    /// The alias ARN.
    pub arn: String,
    /// The key id it points to.
    pub target_key_id: String,
    /// Creation time.
    pub created: u64,
    /// Last change of its target.
    pub updated: u64,
}

/// One page of a listing and the marker of the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    /// The items.
    pub items: Vec<T>,
    /// `Some` when more items follow: pass it as the next call's marker.
    pub next_marker: Option<String>,
}

/// The parameters of `CreateKey`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreateKeyRequest {
    /// The description.
    pub description: String,
    /// The spec.
    pub spec: KeySpec,
    /// The usage; must be the spec's one when given.
    pub usage: Option<KeyUsage>,
    /// Initial tags.
    pub tags: Vec<(String, String)>,
    /// A key policy document (stored, returned by `GetKeyPolicy`, not evaluated).
    pub policy: Option<String>,
}

impl CreateKeyRequest {
    /// A request for a key of `spec` with the given description and nothing else.
    #[must_use]
    pub fn new(spec: KeySpec, description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            spec,
            usage: None,
            tags: Vec::new(),
            policy: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredVersion {
    n: u32,
    created: u64,
    #[serde(default)]
    on_demand: bool,
    #[serde(default)]
    automatic: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    v: u32,
    key_id: String,
    created: u64,
    description: String,
    spec: String,
    state: String,
    deletion_date: Option<u64>,
    rotation_enabled: bool,
    rotation_period_days: u32,
    next_rotation: Option<u64>,
    versions: Vec<StoredVersion>,
    tags: BTreeMap<String, String>,
    policy: Option<String>,
}

/// A key record read from the store, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    stored: StoredKey,
    spec: KeySpec,
    state: KeyState,
    uuid: [u8; 16],
}

impl Key {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let stored: StoredKey = serde_json::from_slice(bytes).ok()?;
        if stored.v != KEY_RECORD_VERSION || stored.versions.is_empty() {
            return None;
        }
        let spec = KeySpec::from_storage_name(&stored.spec)?;
        let state = KeyState::parse(&stored.state)?;
        let uuid = parse_uuid(&stored.key_id)?;
        Some(Self {
            stored,
            spec,
            state,
            uuid,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut stored = self.stored.clone();
        stored.state = self.state.as_str().to_owned();
        // A struct of strings, numbers and maps of strings always serializes.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// The key id.
    pub(crate) fn id(&self) -> &str {
        &self.stored.key_id
    }

    /// The current version.
    pub(crate) fn current_version(&self) -> u32 {
        self.stored.versions.last().map_or(1, |v| v.n)
    }

    /// Every version and its creation time, oldest first.
    pub(crate) fn versions(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.stored.versions.iter().map(|v| (v.n, v.created))
    }

    fn has_version(&self, n: u32) -> bool {
        self.stored.versions.iter().any(|v| v.n == n)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAlias {
    target: String,
    created: u64,
    updated: u64,
}

/// The local key provider. See the module documentation.
pub struct LocalKms {
    barrier: Arc<Barrier>,
    region: String,
    account: String,
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKms")
            .field("region", &self.region)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Whether `region` looks like an AWS region name (`us-east-1`): lower-case letters, digits
/// and hyphens, 1 to 32 of them. It becomes part of storage paths.
fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl LocalKms {
    /// A key provider over `barrier`, answering for `account` with `region` as the default
    /// region (the one [`KeyProvider`] calls and unqualified ids use).
    pub fn new(barrier: Arc<Barrier>, region: &str, account: &str) -> Self {
        Self {
            barrier,
            region: if valid_region(region) {
                region.to_owned()
            } else {
                "us-east-1".to_owned()
            },
            account: account.to_owned(),
            write_lock: Mutex::new(()),
        }
    }

    /// The account id in ARNs.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The default region.
    #[must_use]
    pub fn default_region(&self) -> &str {
        &self.region
    }

    /// The keys of one region. State is kept per region, as in AWS.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] when `region` is not a region name.
    pub fn scope(&self, region: &str) -> Result<Scope<'_>, KmsError> {
        if !valid_region(region) {
            return Err(KmsError::InvalidArgument(format!(
                "{region:?} is not a valid region name"
            )));
        }
        Ok(Scope {
            kms: self,
            region: region.to_owned(),
        })
    }

    /// The default region's scope.
    #[must_use]
    pub fn default_scope(&self) -> Scope<'_> {
        Scope {
            kms: self,
            region: self.region.clone(),
        }
    }

    /// The ARN of the key `alias` points to in the default region, creating a
    /// `SYMMETRIC_DEFAULT` key with `description` and the alias first when the alias does not
    /// exist. For arca's own layers (KV envelope keys, auto-unseal) that need one named key.
    ///
    /// # Errors
    /// [`KmsError::InvalidAliasName`] for a bad alias; [`KmsError::Sealed`]; storage failures.
    pub async fn ensure_key_for_alias(
        &self,
        alias: &str,
        description: &str,
    ) -> Result<String, KmsError> {
        self.default_scope()
            .ensure_key_for_alias(alias, description)
            .await
    }

    /// Wipes every key and alias of every region, and the transit keys built on them (the
    /// development mode's `POST /moto-api/reset`).
    ///
    /// # Errors
    /// [`KmsError::Sealed`] or a storage failure.
    pub async fn reset(&self) -> Result<(), KmsError> {
        let _guard = self.write_lock.lock().await;
        delete_prefix(&self.barrier, super::transit::RECORD_PREFIX).await?;
        delete_prefix(&self.barrier, "kms/").await
    }

    /// The barrier the keys live behind.
    pub(crate) fn barrier(&self) -> &Arc<Barrier> {
        &self.barrier
    }
}

/// Deletes every record under `prefix`, a page at a time.
pub(crate) async fn delete_prefix(barrier: &Barrier, prefix: &str) -> Result<(), KmsError> {
    loop {
        let page = barrier.list_page(prefix, None, 500).await?;
        if page.keys.is_empty() {
            return Ok(());
        }
        for chunk in page.keys.chunks(100) {
            let ops: Vec<BarrierOp<'_>> = chunk.iter().map(|k| BarrierOp::Delete(k)).collect();
            barrier.batch(&ops).await?;
        }
    }
}

/// The keys of one region of a [`LocalKms`]. Cheap; make one per request.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    kms: &'a LocalKms,
    region: String,
}

/// What a key id given by a caller names.
enum KeyRef {
    Id(String),
    Alias(String),
}

impl Scope<'_> {
    /// The region.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.region
    }

    fn barrier(&self) -> &Barrier {
        &self.kms.barrier
    }

    /// The provider this scope belongs to.
    pub(crate) fn kms(&self) -> &LocalKms {
        self.kms
    }

    /// The ARN of key `id`.
    #[must_use]
    pub fn key_arn(&self, id: &str) -> String {
        format!("arn:aws:kms:{}:{}:key/{id}", self.region, self.kms.account)
    }

    /// The ARN of alias `name` (`alias/...`).
    #[must_use]
    pub fn alias_arn(&self, name: &str) -> String {
        format!("arn:aws:kms:{}:{}:{name}", self.region, self.kms.account)
    }

    fn key_path(&self, id: &str) -> String {
        format!("kms/{}/key/{id}", self.region)
    }

    fn material_path(&self, id: &str, version: u32) -> String {
        format!("kms/{}/material/{id}/{version}", self.region)
    }

    fn material_prefix(&self, id: &str) -> String {
        format!("kms/{}/material/{id}/", self.region)
    }

    fn alias_path(&self, name: &str) -> String {
        format!("kms/{}/{name}", self.region)
    }

    fn alias_prefix(&self) -> String {
        format!("kms/{}/alias/", self.region)
    }

    /// Parses a caller's key id: id, key ARN, alias name or alias ARN. ARNs must name this
    /// region and account.
    fn parse_ref(&self, input: &str) -> Result<KeyRef, KmsError> {
        let invalid = || KmsError::NotFound(format!("Invalid keyId {input}"));
        if let Some(rest) = input.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [partition, service, region, account, resource] = parts[..] else {
                return Err(invalid());
            };
            if !partition.starts_with("aws") || service != "kms" {
                return Err(invalid());
            }
            if region != self.region || account != self.kms.account {
                return Err(KmsError::NotFound(format!(
                    "{input} does not exist in this region and account"
                )));
            }
            return if let Some(id) = resource.strip_prefix("key/") {
                parse_uuid(id)
                    .map(|u| KeyRef::Id(format_uuid(&u)))
                    .ok_or_else(invalid)
            } else if resource.starts_with("alias/") {
                Ok(KeyRef::Alias(resource.to_owned()))
            } else {
                Err(invalid())
            };
        }
        if input.starts_with("alias/") {
            return Ok(KeyRef::Alias(input.to_owned()));
        }
        parse_uuid(input)
            .map(|u| KeyRef::Id(format_uuid(&u)))
            .ok_or_else(invalid)
    }

    async fn read_alias(&self, name: &str) -> Result<Option<StoredAlias>, KmsError> {
        if check_alias_syntax(name).is_err() {
            return Ok(None);
        }
        let Some(bytes) = self.barrier().get(&self.alias_path(name)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes.expose_secret())
            .map(Some)
            .map_err(|_| KmsError::Internal(format!("alias record {name} does not parse")))
    }

    /// The key id a caller's key id names.
    async fn resolve_id(&self, input: &str) -> Result<String, KmsError> {
        match self.parse_ref(input)? {
            KeyRef::Id(id) => Ok(id),
            KeyRef::Alias(name) => {
                self.read_alias(&name)
                    .await?
                    .map(|a| a.target)
                    .ok_or_else(|| {
                        KmsError::NotFound(format!("Alias {} is not found.", self.alias_arn(&name)))
                    })
            }
        }
    }

    /// Reads key `id`; a key whose deletion date has passed is deleted now and reported
    /// missing.
    async fn read_key(&self, id: &str) -> Result<Option<Arc<Key>>, KmsError> {
        let Some(key) = self
            .barrier()
            .get_decoded(&self.key_path(id), |bytes| {
                Key::parse(bytes)
                    .ok_or_else(|| KmsError::Internal(format!("key record {id} does not parse")))
            })
            .await?
        else {
            return Ok(None);
        };
        let key = key.into_value();
        if key.state == KeyState::PendingDeletion
            && key.stored.deletion_date.is_some_and(|d| d <= now())
        {
            let _guard = self.kms.write_lock.lock().await;
            self.purge(id).await?;
            return Ok(None);
        }
        Ok(Some(key))
    }

    fn not_found(&self, id: &str) -> KmsError {
        KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(id)))
    }

    /// Resolves and reads a key, or [`KmsError::NotFound`].
    pub(crate) async fn key(&self, input: &str) -> Result<Arc<Key>, KmsError> {
        let id = self.resolve_id(input).await?;
        self.read_key(&id).await?.ok_or_else(|| self.not_found(&id))
    }

    /// A key by its exact id (no alias resolution).
    pub(crate) async fn key_by_id(&self, id: &str) -> Result<Option<Arc<Key>>, KmsError> {
        self.read_key(id).await
    }

    /// Fails unless `key` may be used for cryptography now.
    fn check_usable(&self, key: &Key) -> Result<(), KmsError> {
        match key.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!(
                "{} is disabled.",
                self.key_arn(key.id())
            ))),
            KeyState::PendingDeletion => Err(KmsError::PendingDeletion(format!(
                "{} is pending deletion.",
                self.key_arn(key.id())
            ))),
        }
    }

    fn check_usage(&self, key: &Key, usage: KeyUsage, operation: &str) -> Result<(), KmsError> {
        if key.spec.usage() == usage {
            Ok(())
        } else {
            Err(KmsError::InvalidKeyUsage(format!(
                "{} key usage is {} which is not valid for {operation}.",
                self.key_arn(key.id()),
                key.spec.usage().as_str()
            )))
        }
    }

    /// The material of `version` of `key`.
    pub(crate) async fn material(&self, key: &Key, version: u32) -> Result<KeyMaterial, KmsError> {
        let stored = self
            .barrier()
            .get_record(&self.material_path(key.id(), version))
            .await?
            .ok_or_else(|| {
                KmsError::Internal(format!("material of {} v{version} is missing", key.id()))
            })?;
        KeyMaterial::decode(key.spec, stored.expose_secret()).ok_or_else(|| {
            KmsError::Internal(format!("material of {} v{version} is damaged", key.id()))
        })
    }

    /// The material of `version` of `key`, for a cryptographic operation: the key must be
    /// usable (enabled) now.
    pub(crate) async fn usable_material(
        &self,
        key: &Key,
        version: u32,
    ) -> Result<KeyMaterial, KmsError> {
        self.check_usable(key)?;
        self.material(key, version).await
    }

    /// Runs a due automatic rotation of `key` before it is used, and returns the key as it is
    /// afterwards.
    async fn rotate_if_due(&self, key: Arc<Key>) -> Result<Arc<Key>, KmsError> {
        if !(key.stored.rotation_enabled && key.stored.next_rotation.is_some_and(|t| t <= now())) {
            return Ok(key);
        }
        let _guard = self.kms.write_lock.lock().await;
        // Re-read under the lock: another task may have rotated it already.
        let Some(key) = self.read_key(key.id()).await? else {
            return Err(self.not_found(key.id()));
        };
        if key.stored.rotation_enabled && key.stored.next_rotation.is_some_and(|t| t <= now()) {
            let mut key = Arc::unwrap_or_clone(key);
            self.add_version(&mut key, false, true).await?;
            return Ok(Arc::new(key));
        }
        Ok(key)
    }

    // -----------------------------------------------------------------------------------------
    // Key lifecycle

    /// `CreateKey`.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] when the usage does not fit the spec or the description
    /// is too long; [`KmsError::Tag`] for bad tags; [`KmsError::Sealed`].
    pub async fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata, KmsError> {
        let _guard = self.kms.write_lock.lock().await;
        let key = self.create_key_locked(request).await?;
        Ok(self.metadata(&key))
    }

    async fn create_key_locked(&self, request: CreateKeyRequest) -> Result<Key, KmsError> {
        if let Some(usage) = request.usage
            && usage != request.spec.usage()
        {
            return Err(KmsError::InvalidArgument(format!(
                "KeyUsage {} is not compatible with KeySpec {}",
                usage.as_str(),
                request.spec.as_kms_str()
            )));
        }
        check_description(&request.description)?;
        let mut tags = BTreeMap::new();
        for (k, v) in request.tags {
            check_tag(&k, &v)?;
            tags.insert(k, v);
        }
        if tags.len() > MAX_TAGS {
            return Err(KmsError::Tag(format!(
                "a key may have at most {MAX_TAGS} tags"
            )));
        }
        let mut uuid = [0u8; 16];
        arca_storage::keys::fill_random(&mut uuid)?;
        // RFC 4122 version 4, variant 1: a KMS key id looks like any other random UUID.
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let id = format_uuid(&uuid);
        let created = now();
        let key = Key {
            stored: StoredKey {
                v: KEY_RECORD_VERSION,
                key_id: id.clone(),
                created,
                description: request.description,
                spec: request.spec.storage_name().to_owned(),
                state: KeyState::Enabled.as_str().to_owned(),
                deletion_date: None,
                rotation_enabled: false,
                rotation_period_days: DEFAULT_ROTATION_PERIOD,
                next_rotation: None,
                versions: vec![StoredVersion {
                    n: 1,
                    created,
                    on_demand: false,
                    automatic: false,
                }],
                tags,
                policy: request.policy,
            },
            spec: request.spec,
            state: KeyState::Enabled,
            uuid,
        };
        let material = KeyMaterial::generate(request.spec)?;
        let encoded_material = material.encode();
        let record = key.encode();
        let key_path = self.key_path(&id);
        let material_path = self.material_path(&id, 1);
        self.barrier()
            .batch(&[
                BarrierOp::Put(&material_path, &encoded_material),
                BarrierOp::Put(&key_path, &record),
            ])
            .await?;
        tracing::info!(region = %self.region, key_id = %id, spec = request.spec.as_kms_str(), "KMS key created");
        Ok(key)
    }

    /// The public description of a key.
    pub(crate) fn metadata(&self, key: &Key) -> KeyMetadata {
        KeyMetadata {
            key_id: key.id().to_owned(),
            arn: self.key_arn(key.id()),
            account: self.kms.account.clone(),
            created: key.stored.created,
            description: key.stored.description.clone(),
            spec: key.spec,
            usage: key.spec.usage(),
            state: key.state,
            deletion_date: key.stored.deletion_date,
            current_version: key.current_version(),
            rotation_enabled: key.stored.rotation_enabled,
        }
    }

    /// `DescribeKey`.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::Sealed`].
    pub async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, KmsError> {
        let key = self.key(key_id).await?;
        Ok(self.metadata(&key))
    }

    /// Applies `change` to the key named `key_id` under the write lock and stores it.
    async fn update_key<T>(
        &self,
        key_id: &str,
        change: impl FnOnce(&Self, &mut Key) -> Result<T, KmsError>,
    ) -> Result<(Key, T), KmsError> {
        let _guard = self.kms.write_lock.lock().await;
        let mut key = Arc::unwrap_or_clone(self.key(key_id).await?);
        let out = change(self, &mut key)?;
        self.barrier()
            .put(&self.key_path(key.id()), &key.encode())
            .await?;
        Ok((key, out))
    }

    fn check_not_pending(&self, key: &Key) -> Result<(), KmsError> {
        if key.state == KeyState::PendingDeletion {
            Err(KmsError::PendingDeletion(format!(
                "{} is pending deletion.",
                self.key_arn(key.id())
            )))
        } else {
            Ok(())
        }
    }

    /// `EnableKey`.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::PendingDeletion`]; [`KmsError::Sealed`].
    pub async fn enable_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.update_key(key_id, |s, key| {
            s.check_not_pending(key)?;
            key.state = KeyState::Enabled;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `DisableKey`.
    ///
    /// # Errors
    /// As [`Scope::enable_key`].
    pub async fn disable_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.update_key(key_id, |s, key| {
            s.check_not_pending(key)?;
            key.state = KeyState::Disabled;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `UpdateKeyDescription`.
    ///
    /// # Errors
    /// As [`Scope::enable_key`], and [`KmsError::InvalidArgument`] for a description longer
    /// than 8192 characters.
    pub async fn update_key_description(
        &self,
        key_id: &str,
        description: &str,
    ) -> Result<(), KmsError> {
        check_description(description)?;
        self.update_key(key_id, |s, key| {
            s.check_not_pending(key)?;
            description.clone_into(&mut key.stored.description);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `ScheduleKeyDeletion`: the key becomes unusable now and is deleted after `days` (7 to
    /// 30, default 30). Returns the metadata, with the deletion date.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for a window outside 7..=30; [`KmsError::PendingDeletion`]
    /// when already scheduled; [`KmsError::NotFound`].
    pub async fn schedule_key_deletion(
        &self,
        key_id: &str,
        days: Option<u32>,
    ) -> Result<(KeyMetadata, u32), KmsError> {
        let days = days.unwrap_or(DEFAULT_DELETION_WINDOW);
        if !DELETION_WINDOW.contains(&days) {
            return Err(KmsError::InvalidArgument(format!(
                "1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to \
                 satisfy constraint: Member must have value between 7 and 30"
            )));
        }
        let (key, ()) = self
            .update_key(key_id, |s, key| {
                s.check_not_pending(key)?;
                key.state = KeyState::PendingDeletion;
                key.stored.deletion_date = Some(now() + u64::from(days) * DAY);
                Ok(())
            })
            .await?;
        tracing::info!(region = %self.region, key_id = %key.id(), days, "KMS key scheduled for deletion");
        Ok((self.metadata(&key), days))
    }

    /// `CancelKeyDeletion`: the key stays, disabled (as in AWS).
    ///
    /// # Errors
    /// [`KmsError::InvalidState`] when it is not pending deletion; [`KmsError::NotFound`].
    pub async fn cancel_key_deletion(&self, key_id: &str) -> Result<String, KmsError> {
        let (key, ()) = self
            .update_key(key_id, |s, key| {
                if key.state != KeyState::PendingDeletion {
                    return Err(KmsError::InvalidState(format!(
                        "{} is not pending deletion.",
                        s.key_arn(key.id())
                    )));
                }
                key.state = KeyState::Disabled;
                key.stored.deletion_date = None;
                Ok(())
            })
            .await?;
        Ok(self.key_arn(key.id()))
    }

    /// Deletes key `id`, its material and its aliases. The caller holds the write lock.
    async fn purge(&self, id: &str) -> Result<(), KmsError> {
        let mut doomed = vec![self.key_path(id)];
        doomed.extend(self.barrier().list(&self.material_prefix(id)).await?);
        for alias in self.barrier().list(&self.alias_prefix()).await? {
            let Some(bytes) = self.barrier().get(&alias).await? else {
                continue;
            };
            if serde_json::from_slice::<StoredAlias>(bytes.expose_secret())
                .is_ok_and(|a| a.target == id)
            {
                doomed.push(alias);
            }
        }
        for chunk in doomed.chunks(100) {
            let ops: Vec<BarrierOp<'_>> = chunk.iter().map(|p| BarrierOp::Delete(p)).collect();
            self.barrier().batch(&ops).await?;
        }
        tracing::info!(region = %self.region, key_id = %id, "KMS key deleted");
        Ok(())
    }

    /// Deletes a key at once, without a waiting period (transit's `DELETE keys/<name>`).
    pub(crate) async fn delete_key_now(&self, id: &str) -> Result<(), KmsError> {
        let _guard = self.kms.write_lock.lock().await;
        self.purge(id).await
    }

    /// `ListKeys`: key ids in id order, `limit` (1..=1000, default 100) at a time.
    ///
    /// # Errors
    /// [`KmsError::InvalidMarker`]; [`KmsError::InvalidArgument`] for a bad limit.
    pub async fn list_keys(
        &self,
        limit: Option<u32>,
        marker: Option<&str>,
    ) -> Result<ListPage<(String, String)>, KmsError> {
        let limit = check_limit(limit)?;
        let prefix = format!("kms/{}/key/", self.region);
        let start = match marker {
            Some(m) => {
                let uuid = parse_uuid(m).ok_or(KmsError::InvalidMarker)?;
                Some(format!("{prefix}{}", format_uuid(&uuid)))
            }
            None => None,
        };
        let page = self
            .barrier()
            .list_page(&prefix, start.as_deref(), limit)
            .await?;
        let items: Vec<(String, String)> = page
            .keys
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix))
            .map(|id| (id.to_owned(), self.key_arn(id)))
            .collect();
        let next_marker = page
            .next
            .as_ref()
            .and_then(|_| items.last().map(|(id, _)| id.clone()));
        Ok(ListPage { items, next_marker })
    }

    // -----------------------------------------------------------------------------------------
    // Tags and policy

    /// `TagResource`: adds or replaces tags.
    ///
    /// # Errors
    /// [`KmsError::Tag`] for a bad tag or too many; [`KmsError::NotFound`];
    /// [`KmsError::PendingDeletion`].
    pub async fn tag_resource(
        &self,
        key_id: &str,
        tags: Vec<(String, String)>,
    ) -> Result<(), KmsError> {
        for (k, v) in &tags {
            check_tag(k, v)?;
        }
        self.update_key(key_id, |s, key| {
            s.check_not_pending(key)?;
            for (k, v) in tags {
                key.stored.tags.insert(k, v);
            }
            if key.stored.tags.len() > MAX_TAGS {
                return Err(KmsError::Tag(format!(
                    "a key may have at most {MAX_TAGS} tags"
                )));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `UntagResource`.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::PendingDeletion`].
    pub async fn untag_resource(&self, key_id: &str, keys: &[String]) -> Result<(), KmsError> {
        self.update_key(key_id, |s, key| {
            s.check_not_pending(key)?;
            for k in keys {
                key.stored.tags.remove(k);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `ListResourceTags`, sorted by tag key.
    ///
    /// # Errors
    /// [`KmsError::NotFound`].
    pub async fn list_resource_tags(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, String)>, KmsError> {
        let key = self.key(key_id).await?;
        Ok(key
            .stored
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// `GetKeyPolicy`: the stored policy, or the default one AWS gives a new key.
    ///
    /// # Errors
    /// [`KmsError::NotFound`].
    pub async fn get_key_policy(&self, key_id: &str) -> Result<String, KmsError> {
        let key = self.key(key_id).await?;
        Ok(key.stored.policy.clone().unwrap_or_else(|| {
            serde_json::json!({
                "Version": "2012-10-17",
                "Id": "key-default-1",
                "Statement": [{
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{}:root", self.kms.account)},
                    "Action": "kms:*",
                    "Resource": "*",
                }],
            })
            .to_string()
        }))
    }

    /// `PutKeyPolicy`: stores the document (arca authorises with its own policies; the KMS
    /// policy is kept for clients that read it back).
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for a document that is not JSON; [`KmsError::NotFound`].
    pub async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), KmsError> {
        if serde_json::from_str::<serde_json::Value>(policy).is_err() || policy.len() > 32_768 {
            return Err(KmsError::InvalidArgument(
                "the key policy must be a JSON document of at most 32768 characters".into(),
            ));
        }
        self.update_key(key_id, |s, key| {
            s.check_not_pending(key)?;
            key.stored.policy = Some(policy.to_owned());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    // -----------------------------------------------------------------------------------------
    // Aliases

    /// `CreateAlias`.
    ///
    /// # Errors
    /// [`KmsError::InvalidAliasName`]; [`KmsError::AlreadyExists`]; [`KmsError::NotFound`]
    /// for the target; [`KmsError::PendingDeletion`].
    pub async fn create_alias(&self, name: &str, target: &str) -> Result<(), KmsError> {
        check_alias_name(name)?;
        let _guard = self.kms.write_lock.lock().await;
        let key = self.alias_target(target).await?;
        self.check_not_pending(&key)?;
        let t = now();
        let record = serde_json::to_vec(&StoredAlias {
            target: key.id().to_owned(),
            created: t,
            updated: t,
        })
        .map_err(|e| KmsError::Internal(e.to_string()))?;
        if !self
            .barrier()
            .compare_and_swap(&self.alias_path(name), None, Some(&record))
            .await?
        {
            return Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                self.alias_arn(name)
            )));
        }
        Ok(())
    }

    /// An alias target: a key id or key ARN, never another alias.
    async fn alias_target(&self, target: &str) -> Result<Key, KmsError> {
        match self.parse_ref(target)? {
            KeyRef::Id(id) => self
                .read_key(&id)
                .await?
                .map(Arc::unwrap_or_clone)
                .ok_or_else(|| self.not_found(&id)),
            KeyRef::Alias(_) => Err(KmsError::InvalidArgument(
                "the target of an alias must be a key id or key ARN, not an alias".into(),
            )),
        }
    }

    /// `UpdateAlias`: points an existing alias at another key of the same spec and usage.
    ///
    /// # Errors
    /// As [`Scope::create_alias`], and [`KmsError::NotFound`] for a missing alias.
    pub async fn update_alias(&self, name: &str, target: &str) -> Result<(), KmsError> {
        check_alias_name(name)?;
        let _guard = self.kms.write_lock.lock().await;
        let mut alias = self.read_alias(name).await?.ok_or_else(|| {
            KmsError::NotFound(format!("Alias {} is not found.", self.alias_arn(name)))
        })?;
        let new_key = self.alias_target(target).await?;
        self.check_not_pending(&new_key)?;
        if let Some(old) = self.read_key(&alias.target).await?
            && old.spec.usage() != new_key.spec.usage()
        {
            return Err(KmsError::InvalidArgument(
                "the alias's new key must have the same key usage as its current key".into(),
            ));
        }
        alias.target = new_key.id().to_owned();
        alias.updated = now();
        let record = serde_json::to_vec(&alias).map_err(|e| KmsError::Internal(e.to_string()))?;
        self.barrier().put(&self.alias_path(name), &record).await?;
        Ok(())
    }

    /// `DeleteAlias`.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::InvalidAliasName`].
    pub async fn delete_alias(&self, name: &str) -> Result<(), KmsError> {
        check_alias_name(name)?;
        let _guard = self.kms.write_lock.lock().await;
        if self.read_alias(name).await?.is_none() {
            return Err(KmsError::NotFound(format!(
                "Alias {} is not found.",
                self.alias_arn(name)
            )));
        }
        self.barrier().delete(&self.alias_path(name)).await?;
        Ok(())
    }

    /// `ListAliases`, optionally only those of one key, in name order.
    ///
    /// # Errors
    /// [`KmsError::NotFound`] for an unknown key filter; [`KmsError::InvalidMarker`].
    pub async fn list_aliases(
        &self,
        key_id: Option<&str>,
        limit: Option<u32>,
        marker: Option<&str>,
    ) -> Result<ListPage<AliasEntry>, KmsError> {
        let limit = check_limit(limit)?;
        let filter = match key_id {
            Some(k) => Some(self.key(k).await?.id().to_owned()),
            None => None,
        };
        let prefix = self.alias_prefix();
        let mut start = match marker {
            Some(m) if m.starts_with("alias/") => Some(self.alias_path(m)),
            Some(_) => return Err(KmsError::InvalidMarker),
            None => None,
        };
        let mut items = Vec::new();
        loop {
            let page = self
                .barrier()
                .list_page(&prefix, start.as_deref(), limit)
                .await?;
            for path in &page.keys {
                let Some(bytes) = self.barrier().get(path).await? else {
                    continue;
                };
                let Ok(alias) = serde_json::from_slice::<StoredAlias>(bytes.expose_secret()) else {
                    tracing::warn!(path, "alias record does not parse");
                    continue;
                };
                if filter.as_ref().is_some_and(|f| *f != alias.target) {
                    continue;
                }
                let name = path
                    .strip_prefix(&format!("kms/{}/", self.region))
                    .unwrap_or(path)
                    .to_owned();
                items.push(AliasEntry {
                    arn: self.alias_arn(&name),
                    name,
                    target_key_id: alias.target,
                    created: alias.created,
                    updated: alias.updated,
                });
                if items.len() == limit {
                    let more = page.next.is_some() || path != page.keys.last().unwrap_or(path);
                    let next_marker = more.then(|| items.last().map(|a| a.name.clone()));
                    return Ok(ListPage {
                        items,
                        next_marker: next_marker.flatten(),
                    });
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => {
                    return Ok(ListPage {
                        items,
                        next_marker: None,
                    });
                }
            }
        }
    }

    /// The key `alias` points to, creating a `SYMMETRIC_DEFAULT` key and the alias when it
    /// does not exist. Returns the key ARN.
    ///
    /// # Errors
    /// [`KmsError::InvalidAliasName`]; [`KmsError::Sealed`]; storage failures.
    pub async fn ensure_key_for_alias(
        &self,
        alias: &str,
        description: &str,
    ) -> Result<String, KmsError> {
        check_alias_name(alias)?;
        self.ensure_key_for_checked_alias(alias, description).await
    }

    /// As [`Scope::ensure_key_for_alias`], for the alias of an AWS managed key
    /// (`alias/aws/<service>`, such as `alias/aws/secretsmanager`): the default key a service
    /// of arca encrypts with when the caller names none, as AWS creates it on first use.
    /// Callers cannot create such aliases themselves.
    ///
    /// # Errors
    /// [`KmsError::InvalidAliasName`] for a name outside `alias/aws/`; [`KmsError::Sealed`];
    /// storage failures.
    pub async fn ensure_aws_managed_key(
        &self,
        alias: &str,
        description: &str,
    ) -> Result<String, KmsError> {
        check_alias_syntax(alias)?;
        if !alias.starts_with(AWS_MANAGED_ALIAS_PREFIX) {
            return Err(KmsError::InvalidAliasName(format!(
                "{alias} is not the alias of an AWS managed key"
            )));
        }
        self.ensure_key_for_checked_alias(alias, description).await
    }

    async fn ensure_key_for_checked_alias(
        &self,
        alias: &str,
        description: &str,
    ) -> Result<String, KmsError> {
        if let Some(existing) = self.read_alias(alias).await? {
            return Ok(self.key_arn(&existing.target));
        }
        let _guard = self.kms.write_lock.lock().await;
        if let Some(existing) = self.read_alias(alias).await? {
            return Ok(self.key_arn(&existing.target));
        }
        let key = self
            .create_key_locked(CreateKeyRequest::new(
                KeySpec::SymmetricDefault,
                description,
            ))
            .await?;
        let t = now();
        let record = serde_json::to_vec(&StoredAlias {
            target: key.id().to_owned(),
            created: t,
            updated: t,
        })
        .map_err(|e| KmsError::Internal(e.to_string()))?;
        self.barrier().put(&self.alias_path(alias), &record).await?;
        Ok(self.key_arn(key.id()))
    }

    // -----------------------------------------------------------------------------------------
    // Rotation

    /// Adds a version with fresh material and makes it current. The caller holds the write
    /// lock.
    async fn add_version(
        &self,
        key: &mut Key,
        on_demand: bool,
        automatic: bool,
    ) -> Result<u32, KmsError> {
        let next = key.current_version().checked_add(1).ok_or_else(|| {
            KmsError::LimitExceeded("the key has reached its maximum number of versions".into())
        })?;
        let t = now();
        key.stored.versions.push(StoredVersion {
            n: next,
            created: t,
            on_demand,
            automatic,
        });
        if automatic || (key.stored.rotation_enabled && key.stored.next_rotation.is_some()) {
            key.stored.next_rotation = Some(t + u64::from(key.stored.rotation_period_days) * DAY);
        }
        let material = KeyMaterial::generate(key.spec)?;
        let encoded = material.encode();
        let record = key.encode();
        let material_path = self.material_path(key.id(), next);
        let key_path = self.key_path(key.id());
        self.barrier()
            .batch(&[
                BarrierOp::Put(&material_path, &encoded),
                BarrierOp::Put(&key_path, &record),
            ])
            .await?;
        tracing::info!(region = %self.region, key_id = %key.id(), version = next, "KMS key rotated");
        Ok(next)
    }

    fn check_rotatable(&self, key: &Key) -> Result<(), KmsError> {
        if key.spec.is_symmetric_encryption() {
            Ok(())
        } else {
            Err(KmsError::Unsupported(format!(
                "{} key spec {} does not support automatic or on-demand rotation.",
                self.key_arn(key.id()),
                key.spec.as_kms_str()
            )))
        }
    }

    /// `EnableKeyRotation` with a period of 90 to 2560 days (default 365).
    ///
    /// # Errors
    /// [`KmsError::Unsupported`] for a key that is not a symmetric encryption key;
    /// [`KmsError::Disabled`]; [`KmsError::PendingDeletion`]; [`KmsError::InvalidArgument`].
    pub async fn enable_key_rotation(
        &self,
        key_id: &str,
        period_days: Option<u32>,
    ) -> Result<(), KmsError> {
        let period = period_days.unwrap_or(DEFAULT_ROTATION_PERIOD);
        if !ROTATION_PERIOD.contains(&period) {
            return Err(KmsError::InvalidArgument(format!(
                "1 validation error detected: Value '{period}' at 'rotationPeriodInDays' failed \
                 to satisfy constraint: Member must have value between 90 and 2560"
            )));
        }
        self.update_key(key_id, |s, key| {
            s.check_usable(key)?;
            s.check_rotatable(key)?;
            key.stored.rotation_enabled = true;
            key.stored.rotation_period_days = period;
            key.stored.next_rotation = Some(now() + u64::from(period) * DAY);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `DisableKeyRotation`.
    ///
    /// # Errors
    /// As [`Scope::enable_key_rotation`].
    pub async fn disable_key_rotation(&self, key_id: &str) -> Result<(), KmsError> {
        self.update_key(key_id, |s, key| {
            s.check_usable(key)?;
            s.check_rotatable(key)?;
            key.stored.rotation_enabled = false;
            key.stored.next_rotation = None;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// `GetKeyRotationStatus`.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::Unsupported`] for keys that cannot rotate.
    pub async fn get_key_rotation_status(&self, key_id: &str) -> Result<RotationStatus, KmsError> {
        let key = self.key(key_id).await?;
        self.check_rotatable(&key)?;
        let enabled = key.stored.rotation_enabled;
        Ok(RotationStatus {
            key_arn: self.key_arn(key.id()),
            enabled,
            period_days: enabled.then_some(key.stored.rotation_period_days),
            next_rotation: if enabled {
                key.stored.next_rotation
            } else {
                None
            },
        })
    }

    /// `RotateKeyOnDemand`: adds a key version now. Returns the key ARN.
    ///
    /// # Errors
    /// As [`Scope::enable_key_rotation`].
    pub async fn rotate_key_on_demand(&self, key_id: &str) -> Result<String, KmsError> {
        let _guard = self.kms.write_lock.lock().await;
        let mut key = Arc::unwrap_or_clone(self.key(key_id).await?);
        self.check_usable(&key)?;
        self.check_rotatable(&key)?;
        self.add_version(&mut key, true, false).await?;
        Ok(self.key_arn(key.id()))
    }

    /// Rotates any key, whatever its spec (transit rotates signing keys too). Returns the new
    /// version.
    pub(crate) async fn rotate_any(&self, id: &str) -> Result<u32, KmsError> {
        let _guard = self.kms.write_lock.lock().await;
        let mut key =
            Arc::unwrap_or_clone(self.read_key(id).await?.ok_or_else(|| self.not_found(id))?);
        self.check_usable(&key)?;
        self.add_version(&mut key, true, false).await
    }

    /// Creates a key for another engine (transit), under the write lock.
    pub(crate) async fn create_key_internal(
        &self,
        request: CreateKeyRequest,
    ) -> Result<Key, KmsError> {
        let _guard = self.kms.write_lock.lock().await;
        self.create_key_locked(request).await
    }

    /// `ListKeyRotations`: every completed rotation, oldest first.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::Unsupported`].
    pub async fn list_key_rotations(&self, key_id: &str) -> Result<Vec<RotationEntry>, KmsError> {
        let key = self.key(key_id).await?;
        self.check_rotatable(&key)?;
        Ok(key
            .stored
            .versions
            .iter()
            .skip(1)
            .map(|v| RotationEntry {
                key_id: key.id().to_owned(),
                date: v.created,
                on_demand: v.on_demand || !v.automatic,
                version: v.n,
            })
            .collect())
    }

    // -----------------------------------------------------------------------------------------
    // Cryptography

    /// The key for an encryption under `key_id`: usable, symmetric, rotated when due.
    async fn encryption_key(&self, key_id: &str, operation: &str) -> Result<Arc<Key>, KmsError> {
        let key = self.key(key_id).await?;
        self.check_usable(&key)?;
        self.check_usage(&key, KeyUsage::EncryptDecrypt, operation)?;
        self.rotate_if_due(key).await
    }

    async fn seal_blob(
        &self,
        key: &Key,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let algorithm = key.spec.blob_algorithm().ok_or_else(|| {
            KmsError::InvalidKeyUsage("the key is not a symmetric encryption key".into())
        })?;
        let version = key.current_version();
        let material = self.material(key, version).await?;
        let header = blob::header(algorithm, &key.uuid, version);
        let mut nonce = [0u8; NONCE_LEN];
        arca_storage::keys::fill_nonce(&mut nonce)?;
        let sealed = material.aead_seal(&nonce, &blob::aad(&header, context), plaintext)?;
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// `Encrypt`: returns the blob and the key ARN.
    ///
    /// # Errors
    /// See [`KeyProvider::encrypt`].
    pub async fn encrypt_full(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), KmsError> {
        check_plaintext(plaintext, "plaintext")?;
        let key = self.encryption_key(key_id, "Encrypt").await?;
        let blob = self.seal_blob(&key, plaintext, context).await?;
        Ok((blob, self.key_arn(key.id())))
    }

    /// `Decrypt`, optionally checking that the blob's key is `expected_key`.
    ///
    /// # Errors
    /// See [`KeyProvider::decrypt`]; [`KmsError::IncorrectKey`] when `expected_key` names
    /// another key than the blob's.
    pub async fn decrypt_full(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        expected_key: Option<&str>,
    ) -> Result<Decrypted, KmsError> {
        let parsed = parse_blob(blob).map_err(|_| KmsError::InvalidCiphertext)?;
        let id = parsed.key_id();
        if let Some(expected) = expected_key {
            // The named key must exist (NotFound otherwise), and be the blob's.
            let expected = self.key(expected).await?;
            if expected.id() != id {
                return Err(KmsError::IncorrectKey);
            }
        }
        // A blob naming a key this store does not have was made elsewhere (another store, or
        // a key since deleted): it is not a ciphertext this store can vouch for.
        let key = self
            .read_key(&id)
            .await?
            .ok_or(KmsError::InvalidCiphertext)?;
        self.check_usable(&key)?;
        if key.spec.blob_algorithm() != Some(parsed.algorithm())
            || !key.has_version(parsed.key_version())
        {
            return Err(KmsError::InvalidCiphertext);
        }
        let material = self.material(&key, parsed.key_version()).await?;
        let plaintext =
            material.aead_open(parsed.nonce(), &parsed.aad(context), parsed.sealed())?;
        Ok(Decrypted {
            key_id: self.key_arn(&id),
            plaintext: Plaintext::from(plaintext),
        })
    }

    /// `GenerateDataKey` (with the plaintext) or `GenerateDataKeyWithoutPlaintext`.
    ///
    /// # Errors
    /// See [`KeyProvider::generate_data_key`].
    pub async fn generate_data_key_full(
        &self,
        key_id: &str,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let len = spec.byte_len()?;
        let key = self.encryption_key(key_id, "GenerateDataKey").await?;
        let plaintext = random_bytes(len)?;
        let ciphertext_blob = self.seal_blob(&key, &plaintext, context).await?;
        Ok(DataKey {
            key_id: self.key_arn(key.id()),
            plaintext: Plaintext::from(plaintext),
            ciphertext_blob,
        })
    }

    /// `ReEncrypt`: returns the new blob, the source key ARN and the destination key ARN.
    ///
    /// # Errors
    /// See [`KeyProvider::re_encrypt`].
    pub async fn re_encrypt_full(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        source_key: Option<&str>,
        destination_key_id: &str,
        destination_context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String, String), KmsError> {
        let destination = self.encryption_key(destination_key_id, "ReEncrypt").await?;
        let opened = self.decrypt_full(blob, source_context, source_key).await?;
        let new_blob = self
            .seal_blob(
                &destination,
                opened.plaintext.expose_secret(),
                destination_context,
            )
            .await?;
        Ok((new_blob, opened.key_id, self.key_arn(destination.id())))
    }

    /// `GenerateMac` with an `HMAC_256` key: returns the MAC and the key ARN.
    ///
    /// # Errors
    /// [`KmsError::InvalidKeyUsage`]; [`KmsError::InvalidArgument`] for an empty or too long
    /// message; key state errors.
    pub async fn generate_mac(
        &self,
        key_id: &str,
        message: &[u8],
        algorithm: MacAlgorithm,
    ) -> Result<(Vec<u8>, String), KmsError> {
        check_plaintext(message, "message")?;
        let key = self.key(key_id).await?;
        self.check_usable(&key)?;
        self.check_usage(&key, KeyUsage::GenerateVerifyMac, "GenerateMac")?;
        let MacAlgorithm::HmacSha256 = algorithm;
        let material = self.material(&key, key.current_version()).await?;
        Ok((
            material.hmac(HashAlgorithm::Sha256, message),
            self.key_arn(key.id()),
        ))
    }

    /// `VerifyMac`: `Ok(key ARN)` when the MAC is right, [`KmsError::InvalidMac`] when not.
    ///
    /// # Errors
    /// As [`Scope::generate_mac`], and [`KmsError::InvalidMac`].
    pub async fn verify_mac(
        &self,
        key_id: &str,
        message: &[u8],
        algorithm: MacAlgorithm,
        mac: &[u8],
    ) -> Result<String, KmsError> {
        check_plaintext(message, "message")?;
        let key = self.key(key_id).await?;
        self.check_usable(&key)?;
        self.check_usage(&key, KeyUsage::GenerateVerifyMac, "VerifyMac")?;
        let MacAlgorithm::HmacSha256 = algorithm;
        // Any version of the key may have made the MAC; try the newest first.
        for (version, _) in key.versions().collect::<Vec<_>>().into_iter().rev() {
            let material = self.material(&key, version).await?;
            if material.verify_hmac(HashAlgorithm::Sha256, message, mac) {
                return Ok(self.key_arn(key.id()));
            }
        }
        Err(KmsError::InvalidMac)
    }

    fn check_signing(
        &self,
        key: &Key,
        algorithm: SigningAlgorithm,
        message_type: MessageType,
        message: &[u8],
        operation: &str,
    ) -> Result<(), KmsError> {
        self.check_usable(key)?;
        self.check_usage(key, KeyUsage::SignVerify, operation)?;
        if !key.spec.signing_algorithms().contains(&algorithm) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "Algorithm {} is incompatible with key spec {}.",
                algorithm.as_str(),
                key.spec.as_kms_str()
            )));
        }
        match (message_type, algorithm) {
            (MessageType::Raw, _) => check_plaintext(message, "message"),
            (MessageType::Digest, SigningAlgorithm::EcdsaSha256) if message.len() == 32 => Ok(()),
            (MessageType::Digest, SigningAlgorithm::EcdsaSha256) => Err(KmsError::InvalidArgument(
                "Digest is invalid length for algorithm ECDSA_SHA_256.".into(),
            )),
            (MessageType::Digest, SigningAlgorithm::Ed25519Sha512) => {
                Err(KmsError::InvalidKeyUsage(
                    "ED25519_SHA_512 signs raw messages only; use MessageType RAW.".into(),
                ))
            }
        }
    }

    /// `Sign`: returns the signature (DER for ECDSA, 64 bytes for Ed25519) and the key ARN.
    ///
    /// # Errors
    /// [`KmsError::InvalidKeyUsage`] for a key or algorithm that does not sign so;
    /// [`KmsError::InvalidArgument`] for a bad message length; key state errors.
    pub async fn sign(
        &self,
        key_id: &str,
        message: &[u8],
        message_type: MessageType,
        algorithm: SigningAlgorithm,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let key = self.key(key_id).await?;
        self.check_signing(&key, algorithm, message_type, message, "Sign")?;
        let material = self.material(&key, key.current_version()).await?;
        let signature = match algorithm {
            SigningAlgorithm::EcdsaSha256 => {
                material.sign_ecdsa_der(message, message_type == MessageType::Digest)?
            }
            SigningAlgorithm::Ed25519Sha512 => material.sign_ed25519(message),
        };
        Ok((signature, self.key_arn(key.id())))
    }

    /// `Verify`: `Ok(key ARN)` for a valid signature, [`KmsError::InvalidSignature`] otherwise.
    ///
    /// # Errors
    /// As [`Scope::sign`], and [`KmsError::InvalidSignature`].
    pub async fn verify(
        &self,
        key_id: &str,
        message: &[u8],
        message_type: MessageType,
        algorithm: SigningAlgorithm,
        signature: &[u8],
    ) -> Result<String, KmsError> {
        let key = self.key(key_id).await?;
        self.check_signing(&key, algorithm, message_type, message, "Verify")?;
        let material = self.material(&key, key.current_version()).await?;
        let valid = match algorithm {
            SigningAlgorithm::EcdsaSha256 => {
                let digest = if message_type == MessageType::Digest {
                    message.to_vec()
                } else {
                    HashAlgorithm::Sha256.digest(message)
                };
                material.verify_ecdsa(&digest, signature, true)?
            }
            SigningAlgorithm::Ed25519Sha512 => material.verify_ed25519(message, signature),
        };
        if valid {
            Ok(self.key_arn(key.id()))
        } else {
            Err(KmsError::InvalidSignature)
        }
    }

    /// `GetPublicKey`: the DER `SubjectPublicKeyInfo` and the key's metadata.
    ///
    /// # Errors
    /// [`KmsError::Unsupported`] for a symmetric or HMAC key; [`KmsError::NotFound`];
    /// [`KmsError::Disabled`]; [`KmsError::PendingDeletion`].
    pub async fn get_public_key(&self, key_id: &str) -> Result<(Vec<u8>, KeyMetadata), KmsError> {
        let key = self.key(key_id).await?;
        self.check_usable(&key)?;
        if key.spec.usage() != KeyUsage::SignVerify {
            return Err(KmsError::Unsupported(format!(
                "{} key spec {} has no public key.",
                self.key_arn(key.id()),
                key.spec.as_kms_str()
            )));
        }
        let material = self.material(&key, key.current_version()).await?;
        Ok((material.public_key_der()?, self.metadata(&key)))
    }

    /// `GenerateRandom`: 1 to 1024 random bytes.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for a count outside 1..=1024.
    pub fn generate_random(&self, count: u32) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        if !(1..=1024).contains(&count) {
            return Err(KmsError::InvalidArgument(format!(
                "1 validation error detected: Value '{count}' at 'numberOfBytes' failed to \
                 satisfy constraint: Member must have value between 1 and 1024"
            )));
        }
        random_bytes(count as usize)
    }
}

fn check_plaintext(data: &[u8], what: &str) -> Result<(), KmsError> {
    if data.is_empty() || data.len() > MAX_PLAINTEXT_LEN {
        return Err(KmsError::InvalidArgument(format!(
            "1 validation error detected: Value at '{what}' failed to satisfy constraint: \
             Member must have length between 1 and {MAX_PLAINTEXT_LEN}"
        )));
    }
    Ok(())
}

fn check_limit(limit: Option<u32>) -> Result<usize, KmsError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
        Some(n) => Err(KmsError::InvalidArgument(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: \
             Member must have value between 1 and 1000"
        ))),
    }
}

fn check_description(description: &str) -> Result<(), KmsError> {
    if description.chars().count() > 8192 {
        return Err(KmsError::InvalidArgument(
            "1 validation error detected: Value at 'description' failed to satisfy \
             constraint: Member must have length less than or equal to 8192"
                .into(),
        ));
    }
    Ok(())
}

fn check_tag(key: &str, value: &str) -> Result<(), KmsError> {
    let key_len = key.chars().count();
    if key_len == 0 || key_len > 128 || value.chars().count() > 256 {
        return Err(KmsError::Tag(
            "tag keys are 1 to 128 characters and tag values at most 256".into(),
        ));
    }
    if key.starts_with("aws:") {
        return Err(KmsError::Tag(
            "tag keys starting with aws: are reserved for AWS".into(),
        ));
    }
    Ok(())
}

/// Checks an alias name: `alias/` then 1 to 250 of `[A-Za-z0-9/_-]`, and not `alias/aws/`
/// (reserved for AWS managed keys: [`KmsError::NotAuthorized`]).
/// Checks an alias name a caller may create, update or delete: well formed, and not one of the
/// names reserved for AWS managed keys.
fn check_alias_name(name: &str) -> Result<(), KmsError> {
    check_alias_syntax(name)?;
    if name.starts_with(AWS_MANAGED_ALIAS_PREFIX) {
        return Err(KmsError::NotAuthorized(
            "Alias names starting with alias/aws/ are reserved for AWS managed keys".into(),
        ));
    }
    Ok(())
}

/// The prefix of the aliases of AWS managed keys (`alias/aws/secretsmanager`): only arca's own
/// services create them.
pub const AWS_MANAGED_ALIAS_PREFIX: &str = "alias/aws/";

/// Checks that an alias name is well formed (reserved names included).
fn check_alias_syntax(name: &str) -> Result<(), KmsError> {
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(KmsError::InvalidAliasName(format!(
            "Alias must start with the prefix \"alias/\": {name}"
        )));
    };
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(KmsError::InvalidAliasName(format!(
            "{name} contains invalid characters for an alias"
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl KeyProvider for Scope<'_> {
    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.encrypt_full(key_id, plaintext, context)
            .await
            .map(|(blob, _)| blob)
    }

    async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<Decrypted, KmsError> {
        self.decrypt_full(blob, context, None).await
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.generate_data_key_full(key_id, spec, context).await
    }

    async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination_key_id: &str,
        destination_context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.re_encrypt_full(
            blob,
            source_context,
            None,
            destination_key_id,
            destination_context,
        )
        .await
        .map(|(blob, _, _)| blob)
    }

    async fn key_arn(&self, key_id: &str) -> Result<String, KmsError> {
        Ok(self.describe_key(key_id).await?.arn)
    }
}

#[async_trait::async_trait]
impl KeyProvider for LocalKms {
    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.default_scope()
            .encrypt(key_id, plaintext, context)
            .await
    }

    async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<Decrypted, KmsError> {
        self.default_scope().decrypt(blob, context).await
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.default_scope()
            .generate_data_key(key_id, spec, context)
            .await
    }

    async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination_key_id: &str,
        destination_context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.default_scope()
            .re_encrypt(
                blob,
                source_context,
                destination_key_id,
                destination_context,
            )
            .await
    }

    async fn key_arn(&self, key_id: &str) -> Result<String, KmsError> {
        KeyProvider::key_arn(&self.default_scope(), key_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_storage::{MemoryBackend, RootKey};
    use proptest::prelude::*;

    async fn kms() -> LocalKms {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        LocalKms::new(barrier, "us-east-1", "123456789012")
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    async fn symmetric(kms: &LocalKms) -> KeyMetadata {
        kms.default_scope()
            .create_key(CreateKeyRequest::new(KeySpec::SymmetricDefault, "test"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn encrypt_decrypt_binds_context_and_names_the_key() {
        let kms = kms().await;
        let key = symmetric(&kms).await;
        let c = ctx(&[("app", "x")]);
        let blob = kms.encrypt(&key.key_id, b"secret", &c).await.unwrap();
        assert_eq!(blob.len(), blob::MIN_BLOB_LEN + 6);
        let back = kms.decrypt(&blob, &c).await.unwrap();
        assert_eq!(back.plaintext.expose_secret(), b"secret");
        assert_eq!(back.key_id, key.arn);
        assert!(matches!(
            kms.decrypt(&blob, &ctx(&[("app", "y")])).await,
            Err(KmsError::InvalidCiphertext)
        ));
        assert!(matches!(
            kms.decrypt(&blob, &EncryptionContext::new()).await,
            Err(KmsError::InvalidCiphertext)
        ));
        // Every form of the key id works.
        for id in [key.key_id.clone(), key.arn.clone()] {
            assert!(kms.encrypt(&id, b"x", &c).await.is_ok(), "{id}");
        }
        // A flipped bit anywhere fails.
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(kms.decrypt(&bad, &c).await.is_err(), "byte {i}");
        }
    }

    #[tokio::test]
    async fn plaintext_limits_are_kms_limits() {
        let kms = kms().await;
        let key = symmetric(&kms).await;
        let none = EncryptionContext::new();
        assert!(kms.encrypt(&key.key_id, &[7; 4096], &none).await.is_ok());
        assert!(matches!(
            kms.encrypt(&key.key_id, &[7; 4097], &none).await,
            Err(KmsError::InvalidArgument(_))
        ));
        assert!(matches!(
            kms.encrypt(&key.key_id, b"", &none).await,
            Err(KmsError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn aliases_resolve_and_are_checked() {
        let kms = kms().await;
        let scope = kms.default_scope();
        let key = symmetric(&kms).await;
        scope.create_alias("alias/app", &key.key_id).await.unwrap();
        assert!(matches!(
            scope.create_alias("alias/app", &key.key_id).await,
            Err(KmsError::AlreadyExists(_))
        ));
        assert!(matches!(
            scope.create_alias("alias/aws/s3", &key.key_id).await,
            Err(KmsError::NotAuthorized(_))
        ));
        assert!(matches!(
            scope.create_alias("app", &key.key_id).await,
            Err(KmsError::InvalidAliasName(_))
        ));
        let none = EncryptionContext::new();
        let blob = kms.encrypt("alias/app", b"v", &none).await.unwrap();
        let arn_alias = scope.alias_arn("alias/app");
        kms.encrypt(&arn_alias, b"v", &none).await.unwrap();
        assert_eq!(kms.decrypt(&blob, &none).await.unwrap().key_id, key.arn);
        let listed = scope.list_aliases(None, None, None).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].target_key_id, key.key_id);
        scope.delete_alias("alias/app").await.unwrap();
        assert!(matches!(
            kms.encrypt("alias/app", b"v", &none).await,
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            kms.encrypt("not-a-key", b"v", &none).await,
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            kms.encrypt(
                "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-4000-8000-000000000000",
                b"v",
                &none
            )
            .await,
            Err(KmsError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn ensure_key_for_alias_is_idempotent() {
        let kms = kms().await;
        let a = kms.ensure_key_for_alias("alias/kv", "kv").await.unwrap();
        let b = kms.ensure_key_for_alias("alias/kv", "kv").await.unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("arn:aws:kms:us-east-1:123456789012:key/"));
    }

    #[tokio::test]
    async fn key_state_is_enforced() {
        let kms = kms().await;
        let scope = kms.default_scope();
        let key = symmetric(&kms).await;
        let none = EncryptionContext::new();
        let blob = kms.encrypt(&key.key_id, b"v", &none).await.unwrap();
        scope.disable_key(&key.key_id).await.unwrap();
        assert!(matches!(
            kms.encrypt(&key.key_id, b"v", &none).await,
            Err(KmsError::Disabled(_))
        ));
        assert!(matches!(
            kms.decrypt(&blob, &none).await,
            Err(KmsError::Disabled(_))
        ));
        scope.enable_key(&key.key_id).await.unwrap();
        assert!(matches!(
            scope.schedule_key_deletion(&key.key_id, Some(3)).await,
            Err(KmsError::InvalidArgument(_))
        ));
        let (meta, days) = scope
            .schedule_key_deletion(&key.key_id, None)
            .await
            .unwrap();
        assert_eq!(days, 30);
        assert_eq!(meta.state, KeyState::PendingDeletion);
        assert!(matches!(
            kms.encrypt(&key.key_id, b"v", &none).await,
            Err(KmsError::PendingDeletion(_))
        ));
        assert!(matches!(
            scope.enable_key(&key.key_id).await,
            Err(KmsError::PendingDeletion(_))
        ));
        scope.cancel_key_deletion(&key.key_id).await.unwrap();
        assert_eq!(
            scope.describe_key(&key.key_id).await.unwrap().state,
            KeyState::Disabled
        );
        assert!(matches!(
            scope.cancel_key_deletion(&key.key_id).await,
            Err(KmsError::InvalidState(_))
        ));
    }

    #[tokio::test]
    async fn rotation_keeps_old_ciphertexts_readable() {
        let kms = kms().await;
        let scope = kms.default_scope();
        let key = symmetric(&kms).await;
        let none = EncryptionContext::new();
        let old = kms.encrypt(&key.key_id, b"old", &none).await.unwrap();
        scope.rotate_key_on_demand(&key.key_id).await.unwrap();
        let new = kms.encrypt(&key.key_id, b"new", &none).await.unwrap();
        assert_eq!(parse_blob(&old).unwrap().key_version(), 1);
        assert_eq!(parse_blob(&new).unwrap().key_version(), 2);
        assert_eq!(
            kms.decrypt(&old, &none)
                .await
                .unwrap()
                .plaintext
                .expose_secret(),
            b"old"
        );
        let rewrapped = kms
            .re_encrypt(&old, &none, &key.key_id, &none)
            .await
            .unwrap();
        assert_eq!(parse_blob(&rewrapped).unwrap().key_version(), 2);
        assert_eq!(
            scope.list_key_rotations(&key.key_id).await.unwrap().len(),
            1
        );
        scope.enable_key_rotation(&key.key_id, None).await.unwrap();
        let status = scope.get_key_rotation_status(&key.key_id).await.unwrap();
        assert!(status.enabled);
        assert_eq!(status.period_days, Some(365));
    }

    #[tokio::test]
    async fn data_keys_and_incorrect_key() {
        let kms = kms().await;
        let a = symmetric(&kms).await;
        let b = symmetric(&kms).await;
        let c = ctx(&[("k", "v")]);
        let dk = kms
            .generate_data_key(&a.key_id, DataKeySpec::Aes256, &c)
            .await
            .unwrap();
        assert_eq!(dk.plaintext.len(), 32);
        let back = kms.decrypt(&dk.ciphertext_blob, &c).await.unwrap();
        assert_eq!(back.plaintext.expose_secret(), dk.plaintext.expose_secret());
        assert!(!format!("{dk:?}").contains(&hex::encode(dk.plaintext.expose_secret())));
        assert!(matches!(
            kms.default_scope()
                .decrypt_full(&dk.ciphertext_blob, &c, Some(&b.key_id))
                .await,
            Err(KmsError::IncorrectKey)
        ));
        assert!(matches!(
            kms.generate_data_key(&a.key_id, DataKeySpec::Bytes(0), &c)
                .await,
            Err(KmsError::InvalidArgument(_))
        ));
        assert!(matches!(
            kms.generate_data_key(&a.key_id, DataKeySpec::Bytes(1025), &c)
                .await,
            Err(KmsError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn blobs_of_another_store_are_invalid_ciphertexts() {
        let one = kms().await;
        let two = kms().await;
        let key = symmetric(&one).await;
        let none = EncryptionContext::new();
        let blob = one.encrypt(&key.key_id, b"v", &none).await.unwrap();
        assert!(matches!(
            two.decrypt(&blob, &none).await,
            Err(KmsError::InvalidCiphertext)
        ));
        assert!(matches!(
            one.decrypt(b"not a blob", &none).await,
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[tokio::test]
    async fn macs_and_signatures() {
        let kms = kms().await;
        let scope = kms.default_scope();
        let hmac = scope
            .create_key(CreateKeyRequest::new(KeySpec::Hmac256, "mac"))
            .await
            .unwrap();
        let (mac, _) = scope
            .generate_mac(&hmac.key_id, b"msg", MacAlgorithm::HmacSha256)
            .await
            .unwrap();
        scope
            .verify_mac(&hmac.key_id, b"msg", MacAlgorithm::HmacSha256, &mac)
            .await
            .unwrap();
        assert!(matches!(
            scope
                .verify_mac(&hmac.key_id, b"other", MacAlgorithm::HmacSha256, &mac)
                .await,
            Err(KmsError::InvalidMac)
        ));
        assert!(matches!(
            kms.encrypt(&hmac.key_id, b"x", &EncryptionContext::new())
                .await,
            Err(KmsError::InvalidKeyUsage(_))
        ));
        for (spec, alg) in [
            (KeySpec::EccNistP256, SigningAlgorithm::EcdsaSha256),
            (KeySpec::Ed25519, SigningAlgorithm::Ed25519Sha512),
        ] {
            let key = scope
                .create_key(CreateKeyRequest::new(spec, "sign"))
                .await
                .unwrap();
            let (sig, _) = scope
                .sign(&key.key_id, b"msg", MessageType::Raw, alg)
                .await
                .unwrap();
            scope
                .verify(&key.key_id, b"msg", MessageType::Raw, alg, &sig)
                .await
                .unwrap();
            assert!(matches!(
                scope
                    .verify(&key.key_id, b"msh", MessageType::Raw, alg, &sig)
                    .await,
                Err(KmsError::InvalidSignature)
            ));
            assert!(scope.get_public_key(&key.key_id).await.is_ok());
            assert!(matches!(
                scope.rotate_key_on_demand(&key.key_id).await,
                Err(KmsError::Unsupported(_))
            ));
        }
        let ecc = scope
            .create_key(CreateKeyRequest::new(KeySpec::EccNistP256, "sign"))
            .await
            .unwrap();
        let digest = HashAlgorithm::Sha256.digest(b"msg");
        let (sig, _) = scope
            .sign(
                &ecc.key_id,
                &digest,
                MessageType::Digest,
                SigningAlgorithm::EcdsaSha256,
            )
            .await
            .unwrap();
        scope
            .verify(
                &ecc.key_id,
                b"msg",
                MessageType::Raw,
                SigningAlgorithm::EcdsaSha256,
                &sig,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn listing_pages_and_tags() {
        let kms = kms().await;
        let scope = kms.default_scope();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(symmetric(&kms).await.key_id);
        }
        ids.sort();
        let first = scope.list_keys(Some(2), None).await.unwrap();
        assert_eq!(first.items.len(), 2);
        let marker = first.next_marker.unwrap();
        let second = scope.list_keys(Some(10), Some(&marker)).await.unwrap();
        assert_eq!(second.items.len(), 3);
        assert!(second.next_marker.is_none());
        assert!(matches!(
            scope.list_keys(None, Some("bogus")).await,
            Err(KmsError::InvalidMarker)
        ));
        scope
            .tag_resource(&ids[0], vec![("team".into(), "a".into())])
            .await
            .unwrap();
        assert!(matches!(
            scope
                .tag_resource(&ids[0], vec![("aws:x".into(), "a".into())])
                .await,
            Err(KmsError::Tag(_))
        ));
        assert_eq!(
            scope.list_resource_tags(&ids[0]).await.unwrap(),
            vec![("team".to_owned(), "a".to_owned())]
        );
        scope
            .untag_resource(&ids[0], &["team".into()])
            .await
            .unwrap();
        assert!(scope.list_resource_tags(&ids[0]).await.unwrap().is_empty());
        // Regions are separate.
        assert!(
            kms.scope("eu-west-1")
                .unwrap()
                .list_keys(None, None)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        kms.reset().await.unwrap();
        assert!(scope.list_keys(None, None).await.unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn material_is_never_stored_in_clear_and_sealing_locks_keys() {
        let kms = kms().await;
        let key = symmetric(&kms).await;
        let scope = kms.default_scope();
        let k = scope.key(&key.key_id).await.unwrap();
        let material = scope.material(&k, 1).await.unwrap();
        let raw = material.encode();
        let backend = kms.barrier().backend().clone();
        for path in backend.list("kms/").await.unwrap() {
            let stored = backend.get(&path).await.unwrap().unwrap();
            assert!(!stored.windows(16).any(|w| w == &raw[1..17]), "{path}");
        }
        kms.barrier().seal().await;
        assert!(matches!(
            kms.encrypt(&key.key_id, b"v", &EncryptionContext::new())
                .await,
            Err(KmsError::Sealed)
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn round_trip(
            plaintext in proptest::collection::vec(any::<u8>(), 1..=4096),
            context in proptest::collection::btree_map("[a-z]{0,8}", ".{0,8}", 0..4),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let kms = kms().await;
                let key = symmetric(&kms).await;
                let blob = kms.encrypt(&key.key_id, &plaintext, &context).await.unwrap();
                let back = kms.decrypt(&blob, &context).await.unwrap();
                assert_eq!(back.plaintext.expose_secret(), plaintext.as_slice());
            });
        }
    }
}
