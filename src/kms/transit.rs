//! The transit engine: Vault's named-key encryption as a service, over the same keys as KMS.
//!
//! A transit key is a name bound to one [`LocalKms`](super::LocalKms) key of the default
//! region (its description says `transit key <name>`, and it carries the tag
//! `arca:transit-key = <name>`), so a key is one thing whichever API touches it: rotating it
//! through transit adds a KMS key version, disabling it through KMS stops transit from using
//! it. What only Vault has (minimum versions, deletion protection, the automatic rotation
//! period) lives in a small record of its own, `transit/keys/<name>`, behind the barrier.
//!
//! Ciphertexts have Vault's form, `vault:v<N>:` + base64(nonce ‖ ciphertext ‖ tag), with a
//! 12-byte random nonce and `associated_data` as the AEAD's associated data, so clients that
//! parse the version out of a ciphertext keep working. Signatures and HMACs are
//! `vault:v<N>:` + base64 of the raw value (base64url without padding for `jws` marshaling).
//! Every transit key has an HMAC key per version, derived from that version's material with
//! HKDF-SHA256 (`info = "arca/transit/hmac/v1"`), so it needs no storage of its own.
//!
//! Errors carry Vault's own words ([`TransitError::Invalid`]), because clients and scripts
//! match on them ("encryption key not found", "cipher: message authentication failed",
//! "ciphertext or signature version is disallowed by policy (too old)").

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::blob::NONCE_LEN;
use super::local::{CreateKeyRequest, Key, Scope};
use super::material::{HashAlgorithm, KeyMaterial, random_bytes};
use super::{KeySpec, KmsError, LocalKms};

pub(crate) const RECORD_PREFIX: &str = "transit/keys/";
const RECORD_VERSION: u32 = 1;
const HMAC_INFO: &[u8] = b"arca/transit/hmac/v1";
/// The tag that marks a KMS key as the material of a transit key.
pub const TRANSIT_TAG: &str = "arca:transit-key";
/// Vault's message for a version below `min_decryption_version`.
pub const ERR_TOO_OLD: &str = "ciphertext or signature version is disallowed by policy (too old)";
/// Vault's message for an AEAD failure (Go's `crypto/cipher` error text).
pub const ERR_AUTH_FAILED: &str = "cipher: message authentication failed";

/// Vault's transit key types that arca implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitKeyType {
    /// `aes256-gcm96`, the default.
    Aes256Gcm96,
    /// `chacha20-poly1305`.
    ChaCha20Poly1305,
    /// `ed25519` (sign/verify).
    Ed25519,
    /// `ecdsa-p256` (sign/verify).
    EcdsaP256,
}

impl TransitKeyType {
    /// Parses Vault's name.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "aes256-gcm96" => Some(Self::Aes256Gcm96),
            "chacha20-poly1305" => Some(Self::ChaCha20Poly1305),
            "ed25519" => Some(Self::Ed25519),
            "ecdsa-p256" => Some(Self::EcdsaP256),
            _ => None,
        }
    }

    /// Vault's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256Gcm96 => "aes256-gcm96",
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }

    fn spec(self) -> KeySpec {
        match self {
            Self::Aes256Gcm96 => KeySpec::SymmetricDefault,
            Self::ChaCha20Poly1305 => KeySpec::ChaCha20Poly1305,
            Self::Ed25519 => KeySpec::Ed25519,
            Self::EcdsaP256 => KeySpec::EccNistP256,
        }
    }

    /// Whether keys of this type encrypt and decrypt.
    #[must_use]
    pub fn supports_encryption(self) -> bool {
        matches!(self, Self::Aes256Gcm96 | Self::ChaCha20Poly1305)
    }

    /// Whether keys of this type sign and verify.
    #[must_use]
    pub fn supports_signing(self) -> bool {
        !self.supports_encryption()
    }
}

/// Errors of the transit engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitError {
    /// The request cannot be served as made; the text is Vault's (400).
    #[error("{0}")]
    Invalid(String),
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// Something failed inside arca; the text is for logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<KmsError> for TransitError {
    fn from(err: KmsError) -> Self {
        match err {
            KmsError::Sealed => Self::Sealed,
            KmsError::Internal(text) => Self::Internal(text),
            KmsError::Disabled(_) | KmsError::PendingDeletion(_) => {
                Self::Invalid("the key's KMS key is disabled or pending deletion".into())
            }
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<arca_storage::BarrierError> for TransitError {
    fn from(err: arca_storage::BarrierError) -> Self {
        KmsError::from(err).into()
    }
}

fn invalid(text: impl Into<String>) -> TransitError {
    TransitError::Invalid(text.into())
}

fn not_found() -> TransitError {
    invalid("encryption key not found")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    v: u32,
    kms_key_id: String,
    #[serde(rename = "type")]
    key_type: String,
    min_decryption_version: u32,
    min_encryption_version: u32,
    deletion_allowed: bool,
    exportable: bool,
    allow_plaintext_backup: bool,
    auto_rotate_period: u64,
}

/// One version of a transit key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransitVersion {
    /// The version number (from 1).
    pub version: u32,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The public key of a signing key: base64 of the 32 raw bytes (ed25519) or PEM
    /// (ecdsa-p256).
    pub public_key: Option<String>,
}

/// What `GET transit/keys/<name>` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransitKeyInfo {
    /// The name.
    pub name: String,
    /// The type.
    pub key_type: TransitKeyType,
    /// The ARN of the KMS key behind it.
    pub kms_key_arn: String,
    /// The newest version.
    pub latest_version: u32,
    /// Ciphertexts and signatures of older versions are refused.
    pub min_decryption_version: u32,
    /// Encryption to an older version is refused (0: the latest only by default).
    pub min_encryption_version: u32,
    /// Whether `DELETE` is allowed.
    pub deletion_allowed: bool,
    /// Recorded for compatibility; arca never exports key material.
    pub exportable: bool,
    /// Recorded for compatibility; arca has no plaintext backups.
    pub allow_plaintext_backup: bool,
    /// Automatic rotation period in seconds (0: off).
    pub auto_rotate_period: u64,
    /// Every version, oldest first.
    pub versions: Vec<TransitVersion>,
}

/// The options of `POST transit/keys/<name>`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The type (default `aes256-gcm96`).
    pub key_type: Option<TransitKeyType>,
    /// Recorded for compatibility.
    pub exportable: bool,
    /// Recorded for compatibility.
    pub allow_plaintext_backup: bool,
    /// Automatic rotation period in seconds (0 or at least an hour).
    pub auto_rotate_period: u64,
}

/// A change of `POST transit/keys/<name>/config`; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConfigUpdate {
    /// `min_decryption_version` (0 means 1, as in Vault).
    pub min_decryption_version: Option<i64>,
    /// `min_encryption_version`.
    pub min_encryption_version: Option<i64>,
    /// `deletion_allowed`.
    pub deletion_allowed: Option<bool>,
    /// `exportable` (can only be turned on).
    pub exportable: Option<bool>,
    /// `allow_plaintext_backup` (can only be turned on).
    pub allow_plaintext_backup: Option<bool>,
    /// `auto_rotate_period` in seconds.
    pub auto_rotate_period: Option<u64>,
}

/// One item of [`Transit::encrypt_many`]: plaintext, associated data, key version (0: the
/// latest).
pub type EncryptItem = (Zeroizing<Vec<u8>>, Vec<u8>, u32);

/// How an ECDSA signature is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Marshaling {
    /// DER (Vault's default, `asn1`).
    #[default]
    Asn1,
    /// Raw `r ‖ s`, base64url (`jws`).
    Jws,
}

/// The parameters of sign and verify beyond key and input.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SignOptions {
    /// The hash of ECDSA signatures (ignored by ed25519).
    pub hash: HashAlgorithm,
    /// Whether the input is already the hash.
    pub prehashed: bool,
    /// The ECDSA signature encoding.
    pub marshaling: Marshaling,
    /// Sign with this version (0: the latest).
    pub key_version: u32,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            hash: HashAlgorithm::Sha256,
            prehashed: false,
            marshaling: Marshaling::Asn1,
            key_version: 0,
        }
    }
}

/// The transit engine over the default region of a [`LocalKms`].
#[derive(Debug)]
pub struct Transit<'a> {
    scope: Scope<'a>,
}

/// A transit key loaded for one operation.
struct Loaded {
    record: Arc<Record>,
    key_type: TransitKeyType,
    key: Arc<Key>,
}

/// Splits `vault:v<N>:<rest>`, with Vault's messages for `what` ("ciphertext" or
/// "signature"/"HMAC").
fn split_versioned<'s>(value: &'s str, what: &str) -> Result<(u32, &'s str), TransitError> {
    let Some(rest) = value.strip_prefix("vault:v") else {
        return Err(invalid(format!("invalid {what}: no prefix")));
    };
    let Some((version, body)) = rest.split_once(':') else {
        return Err(invalid(format!("invalid {what}: wrong number of fields")));
    };
    let version: u32 = version.parse().map_err(|_| {
        invalid(format!(
            "invalid {what}: version number could not be decoded"
        ))
    })?;
    // Vault's compatibility rule: version 0 is version 1.
    Ok((version.max(1), body))
}

/// Whether `name` can name a transit key (and be part of a storage path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && name != "."
        && name != ".."
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LocalKms {
    /// The transit engine over this provider's default region.
    #[must_use]
    pub fn transit(&self) -> Transit<'_> {
        Transit {
            scope: self.default_scope(),
        }
    }
}

impl Transit<'_> {
    fn record_path(name: &str) -> String {
        format!("{RECORD_PREFIX}{name}")
    }

    async fn read_record(&self, name: &str) -> Result<Option<Arc<Record>>, TransitError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let decoded = self
            .scope
            .kms()
            .barrier()
            .get_decoded(&Self::record_path(name), |bytes| {
                let record: Record = serde_json::from_slice(bytes).map_err(|_| {
                    TransitError::Internal(format!("transit record {name} does not parse"))
                })?;
                if record.v != RECORD_VERSION {
                    return Err(TransitError::Internal(format!(
                        "transit record {name} has an unknown version"
                    )));
                }
                Ok(record)
            })
            .await?;
        Ok(decoded.map(arca_storage::Decoded::into_value))
    }

    async fn write_record(&self, name: &str, record: &Record) -> Result<(), TransitError> {
        let bytes =
            serde_json::to_vec(record).map_err(|e| TransitError::Internal(e.to_string()))?;
        self.scope
            .kms()
            .barrier()
            .put(&Self::record_path(name), &bytes)
            .await?;
        Ok(())
    }

    async fn load(&self, name: &str) -> Result<Option<Loaded>, TransitError> {
        let Some(record) = self.read_record(name).await? else {
            return Ok(None);
        };
        let key_type = TransitKeyType::parse(&record.key_type).ok_or_else(|| {
            TransitError::Internal(format!("transit record {name} has an unknown type"))
        })?;
        let key = self
            .scope
            .key_by_id(&record.kms_key_id)
            .await?
            .ok_or_else(|| {
                TransitError::Invalid(format!(
                    "the KMS key of transit key {name} no longer exists"
                ))
            })?;
        let mut loaded = Loaded {
            record,
            key_type,
            key,
        };
        self.rotate_if_due(name, &mut loaded).await?;
        Ok(Some(loaded))
    }

    async fn must_load(&self, name: &str) -> Result<Loaded, TransitError> {
        self.load(name).await?.ok_or_else(not_found)
    }

    /// Rotates a key whose automatic rotation period has passed since its latest version.
    async fn rotate_if_due(&self, name: &str, loaded: &mut Loaded) -> Result<(), TransitError> {
        let period = loaded.record.auto_rotate_period;
        if period == 0 {
            return Ok(());
        }
        let latest_created = loaded.key.versions().last().map_or(0, |(_, c)| c);
        if latest_created.saturating_add(period) > now() {
            return Ok(());
        }
        self.scope.rotate_any(loaded.key.id()).await?;
        loaded.key = self
            .scope
            .key_by_id(loaded.key.id())
            .await?
            .ok_or_else(|| TransitError::Invalid(format!("transit key {name} vanished")))?;
        Ok(())
    }

    async fn info(&self, name: &str, loaded: &Loaded) -> Result<TransitKeyInfo, TransitError> {
        let mut versions = Vec::new();
        for (version, created) in loaded.key.versions().collect::<Vec<_>>() {
            let public_key = match loaded.key_type {
                TransitKeyType::Ed25519 => {
                    let material = self.scope.material(&loaded.key, version).await?;
                    Some(STANDARD.encode(material.ed25519_public()))
                }
                TransitKeyType::EcdsaP256 => {
                    let material = self.scope.material(&loaded.key, version).await?;
                    Some(material.public_key_pem()?)
                }
                _ => None,
            };
            versions.push(TransitVersion {
                version,
                created,
                public_key,
            });
        }
        Ok(TransitKeyInfo {
            name: name.to_owned(),
            key_type: loaded.key_type,
            kms_key_arn: self.scope.key_arn(loaded.key.id()),
            latest_version: loaded.key.current_version(),
            min_decryption_version: loaded.record.min_decryption_version,
            min_encryption_version: loaded.record.min_encryption_version,
            deletion_allowed: loaded.record.deletion_allowed,
            exportable: loaded.record.exportable,
            allow_plaintext_backup: loaded.record.allow_plaintext_backup,
            auto_rotate_period: loaded.record.auto_rotate_period,
            versions,
        })
    }

    /// Creates key `name` (Vault's `POST transit/keys/<name>`). Returns the key and whether
    /// it existed already (then nothing changed, as in Vault).
    ///
    /// # Errors
    /// [`TransitError::Invalid`] for a bad name or period; [`TransitError::Sealed`].
    pub async fn create(
        &self,
        name: &str,
        options: CreateOptions,
    ) -> Result<(TransitKeyInfo, bool), TransitError> {
        if !valid_name(name) {
            return Err(invalid(format!("invalid key name {name:?}")));
        }
        if options.auto_rotate_period != 0 && options.auto_rotate_period < 3600 {
            return Err(invalid(
                "auto rotate period must be 0 to disable or at least an hour",
            ));
        }
        if let Some(existing) = self.load(name).await? {
            return Ok((self.info(name, &existing).await?, true));
        }
        let key_type = options.key_type.unwrap_or(TransitKeyType::Aes256Gcm96);
        let mut request = CreateKeyRequest::new(key_type.spec(), format!("transit key {name}"));
        request.tags = vec![(TRANSIT_TAG.to_owned(), name.to_owned())];
        let key = self.scope.create_key_internal(request).await?;
        let record = Record {
            v: RECORD_VERSION,
            kms_key_id: key.id().to_owned(),
            key_type: key_type.as_str().to_owned(),
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: false,
            exportable: options.exportable,
            allow_plaintext_backup: options.allow_plaintext_backup,
            auto_rotate_period: options.auto_rotate_period,
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| TransitError::Internal(e.to_string()))?;
        let created = self
            .scope
            .kms()
            .barrier()
            .compare_and_swap(&Self::record_path(name), None, Some(&bytes))
            .await?;
        if !created {
            // Another request created the name first: drop our key and report theirs.
            self.scope.delete_key_now(key.id()).await?;
            let existing = self.must_load(name).await?;
            return Ok((self.info(name, &existing).await?, true));
        }
        tracing::info!(name, key_type = key_type.as_str(), "transit key created");
        let loaded = Loaded {
            record: Arc::new(record),
            key_type,
            key: Arc::new(key),
        };
        Ok((self.info(name, &loaded).await?, false))
    }

    /// Reads key `name`, or `None`.
    ///
    /// # Errors
    /// [`TransitError::Sealed`]; storage failures.
    pub async fn read(&self, name: &str) -> Result<Option<TransitKeyInfo>, TransitError> {
        match self.load(name).await? {
            Some(loaded) => Ok(Some(self.info(name, &loaded).await?)),
            None => Ok(None),
        }
    }

    /// The names of every key, sorted.
    ///
    /// # Errors
    /// [`TransitError::Sealed`]; storage failures.
    pub async fn list(&self) -> Result<Vec<String>, TransitError> {
        let paths = self.scope.kms().barrier().list(RECORD_PREFIX).await?;
        Ok(paths
            .iter()
            .filter_map(|p| p.strip_prefix(RECORD_PREFIX))
            .map(str::to_owned)
            .collect())
    }

    /// Deletes key `name` and its KMS key, if `deletion_allowed` was set.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] with Vault's words when it does not exist or may not be
    /// deleted.
    pub async fn delete(&self, name: &str) -> Result<(), TransitError> {
        let Some(record) = self.read_record(name).await? else {
            return Err(invalid(format!(
                "error deleting policy {name}: could not delete policy; not found"
            )));
        };
        if !record.deletion_allowed {
            return Err(invalid(format!(
                "error deleting policy {name}: deletion is not allowed for this policy"
            )));
        }
        self.scope
            .kms()
            .barrier()
            .delete(&Self::record_path(name))
            .await?;
        self.scope.delete_key_now(&record.kms_key_id).await?;
        tracing::info!(name, "transit key deleted");
        Ok(())
    }

    /// Changes the settings of key `name` (Vault's `transit/keys/<name>/config`).
    ///
    /// # Errors
    /// [`TransitError::Invalid`] with Vault's words for values out of range.
    pub async fn configure(
        &self,
        name: &str,
        update: ConfigUpdate,
    ) -> Result<TransitKeyInfo, TransitError> {
        let mut loaded = self.must_load(name).await?;
        let latest = loaded.key.current_version();
        let record = Arc::make_mut(&mut loaded.record);
        if let Some(min) = update.min_decryption_version {
            if min < 0 {
                return Err(invalid("min decryption version cannot be negative"));
            }
            let min = u32::try_from(min.max(1)).unwrap_or(u32::MAX);
            if min != record.min_decryption_version && min > latest {
                return Err(invalid(format!(
                    "cannot set min decryption version of {min}, latest key version is {latest}"
                )));
            }
            record.min_decryption_version = min;
        }
        if let Some(min) = update.min_encryption_version {
            if min < 0 {
                return Err(invalid("min encryption version cannot be negative"));
            }
            let min = u32::try_from(min).unwrap_or(u32::MAX);
            if min != record.min_encryption_version && min > latest {
                return Err(invalid(format!(
                    "cannot set min encryption version of {min}, latest key version is {latest}"
                )));
            }
            record.min_encryption_version = min;
        }
        if record.min_encryption_version > 0
            && record.min_encryption_version < record.min_decryption_version
        {
            return Err(invalid(format!(
                "cannot set min encryption/decryption values; min encryption version of {} \
                 must be greater than or equal to min decryption version of {}",
                record.min_encryption_version, record.min_decryption_version
            )));
        }
        if let Some(allowed) = update.deletion_allowed {
            record.deletion_allowed = allowed;
        }
        if update.exportable == Some(true) {
            record.exportable = true;
        }
        if update.allow_plaintext_backup == Some(true) {
            record.allow_plaintext_backup = true;
        }
        if let Some(period) = update.auto_rotate_period {
            if period != 0 && period < 3600 {
                return Err(invalid(
                    "auto rotate period must be 0 to disable or at least an hour",
                ));
            }
            record.auto_rotate_period = period;
        }
        let record = record.clone();
        self.write_record(name, &record).await?;
        self.info(name, &loaded).await
    }

    /// Adds a version to key `name` and makes it the one new encryptions use.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] when the key does not exist.
    pub async fn rotate(&self, name: &str) -> Result<TransitKeyInfo, TransitError> {
        let loaded = self.must_load(name).await?;
        self.scope.rotate_any(loaded.key.id()).await?;
        tracing::info!(name, "transit key rotated");
        let loaded = self.must_load(name).await?;
        self.info(name, &loaded).await
    }

    /// The version to encrypt or sign with: `requested` (0: the latest), within the key's
    /// bounds.
    fn encryption_version(
        loaded: &Loaded,
        requested: u32,
        what: &str,
    ) -> Result<u32, TransitError> {
        let latest = loaded.key.current_version();
        let version = if requested == 0 { latest } else { requested };
        if version > latest {
            return Err(invalid(format!(
                "requested version for {what} is higher than the latest key version"
            )));
        }
        if loaded.record.min_encryption_version > 0
            && version < loaded.record.min_encryption_version
        {
            return Err(invalid(format!(
                "requested version for {what} is less than the minimum encryption key version"
            )));
        }
        Ok(version)
    }

    /// The version of a ciphertext or signature, checked against the key's bounds.
    fn decryption_version(loaded: &Loaded, version: u32, what: &str) -> Result<u32, TransitError> {
        if version > loaded.key.current_version() {
            return Err(invalid(format!("invalid {what}: version is too new")));
        }
        if version < loaded.record.min_decryption_version {
            return Err(invalid(ERR_TOO_OLD));
        }
        Ok(version)
    }

    async fn seal(
        &self,
        loaded: &Loaded,
        version: u32,
        plaintext: &[u8],
        associated_data: &[u8],
    ) -> Result<String, TransitError> {
        let material = self.scope.usable_material(&loaded.key, version).await?;
        let mut nonce = [0u8; NONCE_LEN];
        arca_storage::keys::fill_nonce(&mut nonce).map_err(KmsError::from)?;
        let sealed = material.aead_seal(&nonce, associated_data, plaintext)?;
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(format!("vault:v{version}:{}", STANDARD.encode(raw)))
    }

    fn check_encryption_type(loaded: &Loaded) -> Result<(), TransitError> {
        if loaded.key_type.supports_encryption() {
            Ok(())
        } else {
            Err(invalid(format!(
                "message encryption not supported for key type {}",
                loaded.key_type.as_str()
            )))
        }
    }

    /// Encrypts under key `name`, creating it (of `create_type`, default `aes256-gcm96`)
    /// when it does not exist, as Vault does. Returns the ciphertext and its version.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] with Vault's words.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        associated_data: &[u8],
        key_version: u32,
        create_type: Option<TransitKeyType>,
    ) -> Result<(String, u32), TransitError> {
        let loaded = match self.load(name).await? {
            Some(loaded) => loaded,
            None => {
                let options = CreateOptions {
                    key_type: create_type,
                    ..CreateOptions::default()
                };
                self.create(name, options).await?;
                self.must_load(name).await?
            }
        };
        self.encrypt_loaded(&loaded, plaintext, associated_data, key_version)
            .await
    }

    async fn encrypt_loaded(
        &self,
        loaded: &Loaded,
        plaintext: &[u8],
        associated_data: &[u8],
        key_version: u32,
    ) -> Result<(String, u32), TransitError> {
        Self::check_encryption_type(loaded)?;
        let version = Self::encryption_version(loaded, key_version, "encryption")?;
        let ciphertext = self
            .seal(loaded, version, plaintext, associated_data)
            .await?;
        Ok((ciphertext, version))
    }

    /// Encrypts a batch under one existing key (the key is loaded once).
    ///
    /// # Errors
    /// [`TransitError::Invalid`] when the key does not exist; per-item failures are in the
    /// returned vector.
    pub async fn encrypt_many(
        &self,
        name: &str,
        items: &[EncryptItem],
        create_type: Option<TransitKeyType>,
    ) -> Result<Vec<Result<(String, u32), TransitError>>, TransitError> {
        let loaded = match self.load(name).await? {
            Some(loaded) => loaded,
            None => {
                let options = CreateOptions {
                    key_type: create_type,
                    ..CreateOptions::default()
                };
                self.create(name, options).await?;
                self.must_load(name).await?
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (plaintext, associated_data, key_version) in items {
            out.push(
                self.encrypt_loaded(&loaded, plaintext, associated_data, *key_version)
                    .await,
            );
        }
        Ok(out)
    }

    async fn open(
        &self,
        loaded: &Loaded,
        ciphertext: &str,
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TransitError> {
        Self::check_decryption_type(loaded)?;
        let (version, body) = split_versioned(ciphertext, "ciphertext")?;
        let version = Self::decryption_version(loaded, version, "ciphertext")?;
        let raw = STANDARD
            .decode(body)
            .map_err(|_| invalid("invalid ciphertext: could not decode base64"))?;
        if raw.len() < NONCE_LEN {
            return Err(invalid(ERR_AUTH_FAILED));
        }
        let material = self.scope.usable_material(&loaded.key, version).await?;
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        material
            .aead_open(nonce, associated_data, sealed)
            .map_err(|err| match err {
                KmsError::InvalidCiphertext => invalid(ERR_AUTH_FAILED),
                other => other.into(),
            })
    }

    fn check_decryption_type(loaded: &Loaded) -> Result<(), TransitError> {
        if loaded.key_type.supports_encryption() {
            Ok(())
        } else {
            Err(invalid(format!(
                "message decryption not supported for key type {}",
                loaded.key_type.as_str()
            )))
        }
    }

    /// Decrypts a `vault:v<N>:` ciphertext of key `name`.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] with Vault's words ("encryption key not found", "invalid
    /// ciphertext: ...", the too-old message, "cipher: message authentication failed").
    pub async fn decrypt(
        &self,
        name: &str,
        ciphertext: &str,
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TransitError> {
        let loaded = self.must_load(name).await?;
        self.open(&loaded, ciphertext, associated_data).await
    }

    /// Decrypts a batch with one key.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] when the key does not exist; per-item failures are in the
    /// returned vector.
    pub async fn decrypt_many(
        &self,
        name: &str,
        items: &[(String, Vec<u8>)],
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>, TransitError>>, TransitError> {
        let loaded = self.must_load(name).await?;
        let mut out = Vec::with_capacity(items.len());
        for (ciphertext, associated_data) in items {
            out.push(self.open(&loaded, ciphertext, associated_data).await);
        }
        Ok(out)
    }

    /// Re-encrypts a ciphertext to `key_version` (0: the latest) without revealing it.
    ///
    /// # Errors
    /// As [`Transit::decrypt`] and [`Transit::encrypt`].
    pub async fn rewrap(
        &self,
        name: &str,
        ciphertext: &str,
        associated_data: &[u8],
        key_version: u32,
    ) -> Result<(String, u32), TransitError> {
        let loaded = self.must_load(name).await?;
        let plaintext = self.open(&loaded, ciphertext, associated_data).await?;
        self.encrypt_loaded(&loaded, &plaintext, associated_data, key_version)
            .await
    }

    /// A fresh data key of `bits` (128, 256 or 512) bits, and its ciphertext under key
    /// `name`.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] for other sizes or a missing key.
    pub async fn datakey(
        &self,
        name: &str,
        bits: u32,
        associated_data: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, String, u32), TransitError> {
        if !matches!(bits, 128 | 256 | 512) {
            return Err(invalid(format!("invalid bits value {bits}")));
        }
        let loaded = self.must_load(name).await?;
        let plaintext = random_bytes(bits as usize / 8)?;
        let (ciphertext, version) = self
            .encrypt_loaded(&loaded, &plaintext, associated_data, 0)
            .await?;
        Ok((plaintext, ciphertext, version))
    }

    async fn hmac_key(&self, loaded: &Loaded, version: u32) -> Result<KeyMaterial, TransitError> {
        Ok(self
            .scope
            .usable_material(&loaded.key, version)
            .await?
            .derived(HMAC_INFO))
    }

    /// HMAC of `input` with key `name`'s HMAC key of `key_version` (0: the latest):
    /// `vault:v<N>:` + base64.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] for a missing key or a bad version.
    pub async fn hmac(
        &self,
        name: &str,
        input: &[u8],
        hash: HashAlgorithm,
        key_version: u32,
    ) -> Result<String, TransitError> {
        let loaded = self.must_load(name).await?;
        let latest = loaded.key.current_version();
        let version = if key_version == 0 {
            latest
        } else {
            key_version
        };
        if version > latest {
            return Err(invalid(format!(
                "key version does not exist; latest key version is {latest}"
            )));
        }
        let mac = self.hmac_key(&loaded, version).await?.hmac(hash, input);
        Ok(format!("vault:v{version}:{}", STANDARD.encode(mac)))
    }

    /// Checks a `vault:v<N>:` HMAC of `input`.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] for a malformed HMAC or a too-old version.
    pub async fn verify_hmac(
        &self,
        name: &str,
        input: &[u8],
        hmac: &str,
        hash: HashAlgorithm,
    ) -> Result<bool, TransitError> {
        let loaded = self.must_load(name).await?;
        let (version, body) = split_versioned(hmac, "HMAC")?;
        let version = Self::decryption_version(&loaded, version, "HMAC")?;
        let Ok(tag) = STANDARD.decode(body) else {
            return Err(invalid("invalid HMAC: could not decode base64"));
        };
        Ok(self
            .hmac_key(&loaded, version)
            .await?
            .verify_hmac(hash, input, &tag))
    }

    /// Signs `input` with signing key `name`: `vault:v<N>:` + the encoded signature.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] with Vault's words for a key that does not sign, a bad
    /// version or a digest of the wrong length.
    pub async fn sign(
        &self,
        name: &str,
        input: &[u8],
        options: SignOptions,
    ) -> Result<(String, u32), TransitError> {
        let loaded = self.must_load(name).await?;
        if !loaded.key_type.supports_signing() {
            return Err(invalid(format!(
                "key type {} does not support signing",
                loaded.key_type.as_str()
            )));
        }
        let version = Self::encryption_version(&loaded, options.key_version, "signing")?;
        let material = self.scope.usable_material(&loaded.key, version).await?;
        let raw = match loaded.key_type {
            TransitKeyType::Ed25519 => material.sign_ed25519(input),
            _ => {
                let digest = if options.prehashed {
                    input.to_vec()
                } else {
                    options.hash.digest(input)
                };
                match options.marshaling {
                    Marshaling::Asn1 => material.sign_ecdsa_der(&digest, true)?,
                    Marshaling::Jws => material.sign_ecdsa_raw(&digest)?,
                }
            }
        };
        // As in Vault, the marshaling decides the base64 alphabet for every key type.
        let encoded = match options.marshaling {
            Marshaling::Asn1 => STANDARD.encode(raw),
            Marshaling::Jws => URL_SAFE_NO_PAD.encode(raw),
        };
        Ok((format!("vault:v{version}:{encoded}"), version))
    }

    /// Verifies a `vault:v<N>:` signature of `input` made by key `name`.
    ///
    /// # Errors
    /// [`TransitError::Invalid`] with Vault's words for a malformed signature, a too-old
    /// version or a key that does not sign.
    pub async fn verify(
        &self,
        name: &str,
        input: &[u8],
        signature: &str,
        options: SignOptions,
    ) -> Result<bool, TransitError> {
        let loaded = self.must_load(name).await?;
        if !loaded.key_type.supports_signing() {
            return Err(invalid(format!(
                "key type {} does not support verification",
                loaded.key_type.as_str()
            )));
        }
        let (version, body) = split_versioned(signature, "signature")?;
        let version = Self::decryption_version(&loaded, version, "signature")?;
        let raw = match options.marshaling {
            Marshaling::Asn1 => STANDARD.decode(body),
            Marshaling::Jws => URL_SAFE_NO_PAD.decode(body),
        }
        .map_err(|_| invalid("invalid base64 signature value"))?;
        let material = self.scope.usable_material(&loaded.key, version).await?;
        Ok(match loaded.key_type {
            TransitKeyType::Ed25519 => material.verify_ed25519(input, &raw),
            _ => {
                let digest = if options.prehashed {
                    input.to_vec()
                } else {
                    options.hash.digest(input)
                };
                material.verify_ecdsa(&digest, &raw, options.marshaling == Marshaling::Asn1)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_storage::{Barrier, MemoryBackend, RootKey};
    use std::sync::Arc;

    async fn kms() -> LocalKms {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        LocalKms::new(barrier, "us-east-1", "123456789012")
    }

    fn message(err: TransitError) -> String {
        match err {
            TransitError::Invalid(text) => text,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn encrypt_upserts_and_rotation_keeps_old_versions() {
        let kms = kms().await;
        let transit = kms.transit();
        let (ct1, v1) = transit
            .encrypt("orders", b"hello", b"", 0, None)
            .await
            .unwrap();
        assert_eq!(v1, 1);
        assert!(ct1.starts_with("vault:v1:"));
        let info = transit.read("orders").await.unwrap().unwrap();
        assert_eq!(info.key_type, TransitKeyType::Aes256Gcm96);
        transit.rotate("orders").await.unwrap();
        let (ct2, v2) = transit
            .encrypt("orders", b"hello", b"", 0, None)
            .await
            .unwrap();
        assert_eq!(v2, 2);
        assert_eq!(
            transit
                .decrypt("orders", &ct1, b"")
                .await
                .unwrap()
                .as_slice(),
            b"hello"
        );
        let (rewrapped, _) = transit.rewrap("orders", &ct1, b"", 0).await.unwrap();
        assert!(rewrapped.starts_with("vault:v2:"));
        transit
            .configure(
                "orders",
                ConfigUpdate {
                    min_decryption_version: Some(2),
                    ..ConfigUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            message(transit.decrypt("orders", &ct1, b"").await.unwrap_err()),
            ERR_TOO_OLD
        );
        assert!(transit.decrypt("orders", &ct2, b"").await.is_ok());
        // The KMS key behind it has two versions too.
        let meta = kms
            .default_scope()
            .describe_key(&info.kms_key_arn)
            .await
            .unwrap();
        assert_eq!(meta.current_version, 2);
    }

    #[tokio::test]
    async fn vault_error_words() {
        let kms = kms().await;
        let transit = kms.transit();
        assert_eq!(
            message(
                transit
                    .decrypt("none", "vault:v1:AAAA", b"")
                    .await
                    .unwrap_err()
            ),
            "encryption key not found"
        );
        let (ct, _) = transit.encrypt("k", b"x", b"ad", 0, None).await.unwrap();
        for (bad, expected) in [
            ("nope", "invalid ciphertext: no prefix"),
            ("vault:v1", "invalid ciphertext: wrong number of fields"),
            (
                "vault:vX:abc",
                "invalid ciphertext: version number could not be decoded",
            ),
            ("vault:v9:abc", "invalid ciphertext: version is too new"),
            (
                "vault:v1:!!!",
                "invalid ciphertext: could not decode base64",
            ),
        ] {
            assert_eq!(
                message(transit.decrypt("k", bad, b"ad").await.unwrap_err()),
                expected
            );
        }
        assert_eq!(
            message(transit.decrypt("k", &ct, b"other").await.unwrap_err()),
            ERR_AUTH_FAILED
        );
        assert_eq!(
            message(transit.delete("k").await.unwrap_err()),
            "error deleting policy k: deletion is not allowed for this policy"
        );
        transit
            .configure(
                "k",
                ConfigUpdate {
                    deletion_allowed: Some(true),
                    ..ConfigUpdate::default()
                },
            )
            .await
            .unwrap();
        transit.delete("k").await.unwrap();
        assert!(transit.read("k").await.unwrap().is_none());
        assert!(
            kms.default_scope()
                .list_keys(None, None)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[tokio::test]
    async fn signing_keys_sign_and_verify() {
        let kms = kms().await;
        let transit = kms.transit();
        for (name, key_type) in [
            ("ed", TransitKeyType::Ed25519),
            ("ec", TransitKeyType::EcdsaP256),
        ] {
            transit
                .create(
                    name,
                    CreateOptions {
                        key_type: Some(key_type),
                        ..CreateOptions::default()
                    },
                )
                .await
                .unwrap();
            for marshaling in [Marshaling::Asn1, Marshaling::Jws] {
                let options = SignOptions {
                    marshaling,
                    ..SignOptions::default()
                };
                let (sig, _) = transit.sign(name, b"msg", options).await.unwrap();
                assert!(transit.verify(name, b"msg", &sig, options).await.unwrap());
                assert!(!transit.verify(name, b"other", &sig, options).await.unwrap());
            }
            assert!(transit.encrypt(name, b"x", b"", 0, None).await.is_err());
            let info = transit.read(name).await.unwrap().unwrap();
            assert!(info.versions[0].public_key.is_some());
        }
        let mac = transit
            .hmac("ed", b"data", HashAlgorithm::Sha256, 0)
            .await
            .unwrap();
        assert!(
            transit
                .verify_hmac("ed", b"data", &mac, HashAlgorithm::Sha256)
                .await
                .unwrap()
        );
        assert!(
            !transit
                .verify_hmac("ed", b"datb", &mac, HashAlgorithm::Sha256)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn chacha_and_datakeys() {
        let kms = kms().await;
        let transit = kms.transit();
        let (ct, _) = transit
            .encrypt("c", b"x", b"", 0, Some(TransitKeyType::ChaCha20Poly1305))
            .await
            .unwrap();
        assert_eq!(
            transit.read("c").await.unwrap().unwrap().key_type,
            TransitKeyType::ChaCha20Poly1305
        );
        assert_eq!(
            transit.decrypt("c", &ct, b"").await.unwrap().as_slice(),
            b"x"
        );
        let (plain, wrapped, _) = transit.datakey("c", 256, b"").await.unwrap();
        assert_eq!(plain.len(), 32);
        assert_eq!(
            transit
                .decrypt("c", &wrapped, b"")
                .await
                .unwrap()
                .as_slice(),
            plain.as_slice()
        );
        assert!(transit.datakey("c", 100, b"").await.is_err());
    }
}
