//! The key provider: KMS semantics over keys that live behind the barrier.
//!
//! Applications written against AWS KMS call `Encrypt`, `Decrypt` and `GenerateDataKey`; arca's
//! own layers (KV v2 envelope encryption, auto-unseal) need exactly the same operations. Both
//! go through one narrow trait, [`KeyProvider`], so a layer written against it runs unchanged
//! on [`LocalKms`] (this module: key material stored as barrier records) or, later, on AWS KMS
//! itself (feature `aws`).
//!
//! # What LocalKms keeps, and where
//!
//! Every record is a barrier record, so it is encrypted and authenticated at rest like any
//! secret; nothing here is ever written in clear. State is kept per region, as AWS does:
//!
//! ```text
//! kms/<region>/key/<key-id>              key metadata (JSON: spec, usage, state, versions, tags)
//! kms/<region>/material/<key-id>/<n>     key material of version n (raw bytes, see material.rs)
//! kms/<region>/alias/<name>              alias → key id (JSON)
//! ```
//!
//! A key's material is versioned: rotation adds version n+1 and makes it current, and old
//! versions stay, so every ciphertext ever produced still decrypts. Key state (enabled,
//! disabled, pending deletion) is checked on every use: encrypting under a disabled key fails,
//! as in AWS KMS (many emulators do not enforce this).
//!
//! # Auto-unseal
//!
//! [`KeyProviderWrapper`] makes any key of a [`KeyProvider`] a [`KeyWrapper`] for the seal:
//! the seal's associated data becomes the encryption context, so a KMS key can take the key
//! file's place.
//!
//! [`RemoteKms`] is the same trait over the AWS KMS JSON API of another arca (or AWS KMS
//! itself), signed with SigV4: with it, the seal kind `kms` auto-unseals one arca with a key
//! kept by another. `AwsKms` (feature `aws`) is the trait over AWS KMS through the official
//! SDK and the standard AWS credential chain: the seal kind `awskms`.
//!
//! [`KeyWrapper`]: crate::seal::KeyWrapper
//!
//! # Ciphertext blobs
//!
//! A `CiphertextBlob` names its key and key version, so `Decrypt` needs no key id; the
//! encryption context is the associated data, so a different context fails as
//! [`KmsError::InvalidCiphertext`]. The byte layout is in [`blob`] and `src/kms/FORMAT.md`;
//! [`parse_blob`] is the fuzzed parser.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use arca::kms::{EncryptionContext, KeyProvider, LocalKms};
//! use arca::storage::{Barrier, MemoryBackend, RootKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
//! let root = RootKey::generate()?;
//! barrier.initialize(&root).await?;
//! barrier.unseal(&root).await?;
//!
//! let kms = LocalKms::new(barrier, "us-east-1", "123456789012");
//! let key = kms.ensure_key_for_alias("alias/app", "the app's envelope key").await?;
//! let mut context = EncryptionContext::new();
//! context.insert("purpose".into(), "example".into());
//! let blob = kms.encrypt("alias/app", b"hello", &context).await?;
//! let plain = kms.decrypt(&blob, &context).await?;
//! assert_eq!(plain.plaintext.expose_secret(), b"hello");
//! assert_eq!(plain.key_id, key);
//! assert!(kms.decrypt(&blob, &EncryptionContext::new()).await.is_err());
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "aws")]
mod aws;
pub mod blob;
pub(crate) mod envelope;
mod local;
mod material;
mod remote;
pub mod transit;
mod wrapper;

use std::collections::BTreeMap;

use arca_storage::{BarrierError, Plaintext};

#[cfg(feature = "aws")]
pub use aws::AwsKms;
pub use blob::{BlobError, ParsedBlob, parse_blob};
pub use local::{
    AWS_MANAGED_ALIAS_PREFIX, AliasEntry, CreateKeyRequest, KeyMetadata, KeyState, ListPage,
    LocalKms, MAX_PLAINTEXT_LEN, RotationEntry, RotationStatus, Scope,
};
pub use material::{
    HashAlgorithm, KeySpec, KeyUsage, MacAlgorithm, MessageType, SigningAlgorithm, random_bytes,
};
pub use remote::{RemoteKms, RemoteKmsCredentials};
pub use wrapper::{KeyProviderWrapper, SEAL_CONTEXT_KEY};

/// Encryption context: non-secret key-value pairs bound to a ciphertext as associated data.
/// Decryption must present exactly the same pairs (order does not matter: a map is canonical).
pub type EncryptionContext = BTreeMap<String, String>;

/// The size of a data key for [`KeyProvider::generate_data_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeySpec {
    /// 32 bytes (KMS `AES_256`).
    Aes256,
    /// 16 bytes (KMS `AES_128`).
    Aes128,
    /// Any length from 1 to 1024 bytes (KMS `NumberOfBytes`).
    Bytes(u16),
}

impl DataKeySpec {
    /// The number of bytes, checked against KMS's 1..=1024.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for `Bytes(0)` or more than 1024 bytes.
    pub fn byte_len(self) -> Result<usize, KmsError> {
        match self {
            Self::Aes256 => Ok(32),
            Self::Aes128 => Ok(16),
            Self::Bytes(n) if (1..=1024).contains(&n) => Ok(usize::from(n)),
            Self::Bytes(_) => Err(KmsError::InvalidArgument(
                "NumberOfBytes must be between 1 and 1024".into(),
            )),
        }
    }
}

/// A fresh data key: the plaintext to use now and the wrapped form to store beside the data.
pub struct DataKey {
    /// The ARN of the key that wrapped it.
    pub key_id: String,
    /// The data key itself. Wiped on drop.
    pub plaintext: Plaintext,
    /// The data key encrypted under `key_id` (a ciphertext blob, see [`blob`]).
    pub ciphertext_blob: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext", &"[REDACTED]")
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .finish()
    }
}

/// The result of a decryption: which key opened it, and the plaintext.
pub struct Decrypted {
    /// The ARN of the key that decrypted the blob.
    pub key_id: String,
    /// The plaintext. Wiped on drop.
    pub plaintext: Plaintext,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("key_id", &self.key_id)
            .field("plaintext", &"[REDACTED]")
            .finish()
    }
}

/// Errors of the key provider. Each names the condition AWS KMS reports, so the AWS API maps
/// them one to one (see `server/aws/kms.rs`). Messages never hold key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// No key, alias or resource by that name (KMS `NotFoundException`).
    #[error("{0}")]
    NotFound(String),
    /// The key is disabled (KMS `DisabledException`).
    #[error("{0}")]
    Disabled(String),
    /// The key is pending deletion (KMS `KMSInvalidStateException`).
    #[error("{0}")]
    PendingDeletion(String),
    /// The key's state does not allow the operation for another reason (KMS
    /// `KMSInvalidStateException`).
    #[error("{0}")]
    InvalidState(String),
    /// The ciphertext is not one this store produced, was altered, or the encryption context
    /// differs. Deliberately opaque (KMS `InvalidCiphertextException`).
    #[error("the ciphertext is invalid")]
    InvalidCiphertext,
    /// The ciphertext was made by another key than the one named (KMS
    /// `IncorrectKeyException`).
    #[error("the key ID in the request does not identify the key that encrypted the ciphertext")]
    IncorrectKey,
    /// The key's usage or spec does not allow the operation (KMS `InvalidKeyUsageException`).
    #[error("{0}")]
    InvalidKeyUsage(String),
    /// A parameter is out of range or malformed (KMS `ValidationException`).
    #[error("{0}")]
    InvalidArgument(String),
    /// An alias name is not allowed (KMS `InvalidAliasNameException`).
    #[error("{0}")]
    InvalidAliasName(String),
    /// The name is reserved for AWS (`alias/aws/...`; KMS `NotAuthorizedException`).
    #[error("{0}")]
    NotAuthorized(String),
    /// A pagination marker is not one this store issued (KMS `InvalidMarkerException`).
    #[error("the marker is not valid")]
    InvalidMarker,
    /// The operation is not supported for this key (KMS `UnsupportedOperationException`).
    #[error("{0}")]
    Unsupported(String),
    /// The name exists already (KMS `AlreadyExistsException`).
    #[error("{0}")]
    AlreadyExists(String),
    /// A limit was reached (KMS `LimitExceededException`).
    #[error("{0}")]
    LimitExceeded(String),
    /// A signature does not verify (KMS `KMSInvalidSignatureException`).
    #[error("the signature is invalid")]
    InvalidSignature,
    /// A MAC does not verify (KMS `KMSInvalidMacException`).
    #[error("the MAC is invalid")]
    InvalidMac,
    /// A tag key or value breaks a rule (KMS `TagException`).
    #[error("{0}")]
    Tag(String),
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// Something failed inside arca (storage, a damaged record, the random generator). The
    /// text is for logs and never holds secret material.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<BarrierError> for KmsError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<arca_storage::keys::RandomError> for KmsError {
    fn from(err: arca_storage::keys::RandomError) -> Self {
        Self::Internal(err.to_string())
    }
}

/// A key provider with AWS KMS semantics: the narrow interface arca's own layers use for
/// envelope encryption and auto-unseal.
///
/// Key ids may be given as a key id, a key ARN, an alias name (`alias/...`) or an alias ARN.
/// Every method checks the key's state and usage before touching its material.
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync {
    /// Encrypts at most 4096 bytes under the current version of `key_id`, binding `context`.
    /// The returned blob names the key and the version.
    ///
    /// # Errors
    /// [`KmsError::NotFound`], [`KmsError::Disabled`], [`KmsError::PendingDeletion`],
    /// [`KmsError::InvalidKeyUsage`] (not a symmetric encryption key),
    /// [`KmsError::InvalidArgument`] (empty or more than 4096 bytes), [`KmsError::Sealed`].
    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError>;

    /// Decrypts a blob made by [`KeyProvider::encrypt`] (or a data-key operation) with the
    /// same `context`. The key and version are read from the blob.
    ///
    /// # Errors
    /// [`KmsError::InvalidCiphertext`] for a blob that is malformed, altered, from another store
    /// or bound to another context; [`KmsError::Disabled`] / [`KmsError::PendingDeletion`]
    /// when its key may not be used; [`KmsError::Sealed`].
    async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<Decrypted, KmsError>;

    /// A fresh random data key, returned both in clear and encrypted under `key_id`.
    ///
    /// # Errors
    /// As [`KeyProvider::encrypt`], and [`KmsError::InvalidArgument`] for a bad `spec`.
    async fn generate_data_key(
        &self,
        key_id: &str,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError>;

    /// Decrypts `blob` with `source_context` and encrypts the plaintext under
    /// `destination_key_id` with `destination_context`, without the plaintext leaving the
    /// provider.
    ///
    /// # Errors
    /// As [`KeyProvider::decrypt`] for the source and [`KeyProvider::encrypt`] for the
    /// destination.
    async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination_key_id: &str,
        destination_context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError>;

    /// The ARN of the key `key_id` names (KMS `DescribeKey`'s `KeyMetadata.Arn`): resolves an
    /// alias or a bare id to the name that stays with the key. Any key state is fine.
    ///
    /// # Errors
    /// [`KmsError::NotFound`]; [`KmsError::Sealed`].
    async fn key_arn(&self, key_id: &str) -> Result<String, KmsError>;
}
