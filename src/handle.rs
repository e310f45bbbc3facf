//! [`Arca`]: the library handle the server uses and embedders hold.
//!
//! It owns the storage backend, the barrier over it and the seal that unlocks the barrier, so
//! an embedder gets exactly what the server has: `Arca::open`, then the seal ceremony, then the
//! domain operations.

use std::sync::Arc;

use arca_storage::{Backend, Barrier, MemoryBackend, RedbBackend};

use crate::access_keys::AccessKeyStore;
use crate::config::{StorageKind, StorageSection};
use crate::kms::LocalKms;
use crate::seal::{Seal, SealConfig, SealError};

/// Errors opening an [`Arca`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The backend could not be opened (locked by another process, not a store, damaged).
    #[error("cannot open the {kind} store: {source}")]
    Backend {
        /// The backend kind.
        kind: &'static str,
        /// The error.
        source: arca_storage::BackendError,
    },
    /// The storage configuration is incomplete.
    #[error("{0}")]
    Config(String),
    /// The seal record could not be read.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The name of the redb file inside a data folder.
pub const REDB_FILE: &str = "arca.redb";

/// Opens the backend a storage section names (for DynamoDB: connects, with credentials from
/// the standard AWS chain, and checks that the table exists).
///
/// # Errors
/// [`OpenError`] when the folder or the store cannot be opened.
pub async fn open_backend(storage: &StorageSection) -> Result<Arc<dyn Backend>, OpenError> {
    let folder = || {
        let path = storage
            .path
            .clone()
            .ok_or_else(|| OpenError::Config("storage.path is required".into()))?;
        // The folder holds only ciphertext, but its names and sizes are nobody else's business.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&path)
            .map_err(|source| OpenError::DataDir {
                path: path.clone(),
                source,
            })?;
        Ok::<_, OpenError>(path)
    };
    match storage.backend {
        StorageKind::Memory => Ok(Arc::new(MemoryBackend::new())),
        StorageKind::Redb => {
            let path = folder()?.join(REDB_FILE);
            let backend = RedbBackend::open_with_cache(
                &path,
                arca_storage::CommitMode::Group,
                storage
                    .page_cache_bytes
                    .unwrap_or(arca_storage::backend::redb::DEFAULT_PAGE_CACHE_BYTES),
            )
            .map_err(|source| OpenError::Backend {
                kind: "redb",
                source,
            })?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "sled")]
        StorageKind::Sled => {
            let path = folder()?.join("sled");
            let backend =
                arca_storage::SledBackend::open(&path).map_err(|source| OpenError::Backend {
                    kind: "sled",
                    source,
                })?;
            Ok(Arc::new(backend))
        }
        #[cfg(not(feature = "sled"))]
        StorageKind::Sled => Err(OpenError::Config(
            "this build has no sled backend (build with --features sled)".into(),
        )),
        #[cfg(feature = "aws")]
        StorageKind::Dynamodb => {
            let config = storage
                .dynamodb()
                .map_err(|e| OpenError::Config(e.to_string()))?;
            let backend = arca_storage::DynamoDbBackend::connect(&config)
                .await
                .map_err(|source| OpenError::Backend {
                    kind: "dynamodb",
                    source,
                })?;
            Ok(Arc::new(backend))
        }
        #[cfg(not(feature = "aws"))]
        StorageKind::Dynamodb => Err(OpenError::Config(
            "this build has no dynamodb backend (build with --features aws)".into(),
        )),
    }
}

/// The region [`Arca::kms`] answers for by default.
pub const DEFAULT_KMS_REGION: &str = "us-east-1";
/// The account id in the ARNs of [`Arca::kms`]: the example account of the AWS documentation,
/// which local emulators use too.
pub const DEFAULT_KMS_ACCOUNT: &str = "123456789012";

/// An open arca: storage, barrier and seal.
#[derive(Debug)]
pub struct Arca {
    seal: Seal,
    kms: Arc<LocalKms>,
    access_keys: AccessKeyStore,
    storage_kind: StorageKind,
    policies: crate::policy::PolicyStore,
    approle: crate::auth::AppRoleStore,
    audit: crate::audit::AuditLog,
    access_guard: crate::lifecycle::access::AccessGuard,
    mounts: crate::mounts::Mounts,
    kv: crate::kv::KvState,
    changes: crate::changes::ChangeFeed,
    zerotrust: crate::zerotrust::ZeroTrust,
    secrets: crate::lifecycle::Secrets,
    rotations: crate::lifecycle::rotation::Rotations,
}

impl Arca {
    /// Opens arca over `backend`, sealed, with the given seal configuration.
    ///
    /// # Errors
    /// [`OpenError::Seal`] when the stored seal record cannot be read or does not match the
    /// configured kind.
    pub async fn open(
        backend: Arc<dyn Backend>,
        storage_kind: StorageKind,
        seal: SealConfig,
    ) -> Result<Self, OpenError> {
        Self::open_with_aws(
            backend,
            storage_kind,
            seal,
            DEFAULT_KMS_REGION,
            DEFAULT_KMS_ACCOUNT,
        )
        .await
    }

    /// As [`Arca::open`], with the default region and the account id of the AWS-compatible
    /// APIs (`[aws]` in arca.toml).
    ///
    /// # Errors
    /// As [`Arca::open`].
    pub async fn open_with_aws(
        backend: Arc<dyn Backend>,
        storage_kind: StorageKind,
        seal: SealConfig,
        region: &str,
        account: &str,
    ) -> Result<Self, OpenError> {
        let barrier = Arc::new(Barrier::new(backend));
        let policies = crate::policy::PolicyStore::new(Arc::clone(&barrier));
        let audit = crate::audit::AuditLog::new(Arc::clone(&barrier));
        let approle = crate::auth::AppRoleStore::new(
            Arc::clone(&barrier),
            crate::auth::TokenStore::new(Arc::clone(&barrier)),
        );
        let access_keys = AccessKeyStore::new(Arc::clone(&barrier));
        let kms = Arc::new(LocalKms::new(Arc::clone(&barrier), region, account));
        let mounts = crate::mounts::Mounts::new(Arc::clone(&barrier));
        let changes = crate::changes::ChangeFeed::new();
        let secrets = crate::lifecycle::Secrets::new(Arc::clone(&barrier), Arc::clone(&kms))
            .with_changes(changes.clone());
        let seal = Seal::open(barrier, seal).await?;
        let zerotrust = crate::zerotrust::ZeroTrust::new(Arc::clone(seal.barrier()));
        Ok(Self {
            seal,
            kms,
            access_keys,
            storage_kind,
            policies,
            approle,
            audit,
            access_guard: crate::lifecycle::access::AccessGuard::new(),
            mounts,
            kv: crate::kv::KvState::default(),
            changes,
            zerotrust,
            secrets,
            rotations: crate::lifecycle::rotation::Rotations::default(),
        })
    }

    /// The seal: init, unseal, seal, rekey.
    #[must_use]
    pub fn seal(&self) -> &Seal {
        &self.seal
    }

    /// The barrier over the store.
    #[must_use]
    pub fn barrier(&self) -> &Arc<Barrier> {
        self.seal.barrier()
    }

    /// The key provider: KMS keys behind the barrier (the AWS KMS API, transit, and envelope
    /// encryption all use it).
    #[must_use]
    pub fn kms(&self) -> &Arc<LocalKms> {
        &self.kms
    }

    /// The AWS access keys the AWS API verifies SigV4 signatures against.
    #[must_use]
    pub fn access_keys(&self) -> &AccessKeyStore {
        &self.access_keys
    }

    /// The token store.
    #[must_use]
    pub fn tokens(&self) -> &crate::auth::TokenStore {
        self.seal.tokens()
    }

    /// The mount table: which secrets engine serves which path.
    #[must_use]
    pub fn mounts(&self) -> &crate::mounts::Mounts {
        &self.mounts
    }

    /// The KV version 2 store, over the mount table and the key provider.
    #[must_use]
    pub fn kv(&self) -> crate::kv::Kv<'_> {
        crate::kv::Kv::new(
            self.barrier(),
            &self.mounts,
            &self.kms,
            &self.kv,
            &self.changes,
        )
    }

    /// The change feed: what changed in KV v2 and Secrets Manager, without values, for the
    /// clients that hold copies (`GET /v1/sys/events`). In memory; a restart starts a new
    /// epoch and clients re-read everything.
    #[must_use]
    pub fn changes(&self) -> &crate::changes::ChangeFeed {
        &self.changes
    }

    /// The secret store with AWS Secrets Manager's semantics (versions, staging labels,
    /// rotation state, deletion with a recovery window), per region.
    #[must_use]
    pub fn secrets(&self) -> &crate::lifecycle::Secrets {
        &self.secrets
    }

    /// Rotation: the rotators' settings, the rotations under way, and the scheduler's bell
    /// (`lifecycle::rotation`).
    #[must_use]
    pub fn rotations(&self) -> &crate::lifecycle::rotation::Rotations {
        &self.rotations
    }

    /// Zero-trust distribution: roles, challenges, sessions, the signing key, and the client
    /// CAs the TLS layer verifies certificates against.
    #[must_use]
    pub fn zerotrust(&self) -> &crate::zerotrust::ZeroTrust {
        &self.zerotrust
    }

    /// The ACL policy store.
    #[must_use]
    pub fn policies(&self) -> &crate::policy::PolicyStore {
        &self.policies
    }

    /// The AppRole method's roles and secret ids.
    #[must_use]
    pub fn approle(&self) -> &crate::auth::AppRoleStore {
        &self.approle
    }

    /// The access-policy check of secrets, with its in-memory rate-limit windows (one per
    /// server, so that every request of an identity counts against the same limit).
    #[must_use]
    pub fn access_guard(&self) -> &crate::lifecycle::access::AccessGuard {
        &self.access_guard
    }

    /// The audit log (no device until one is enabled).
    #[must_use]
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    /// The storage backend's name, as `sys/seal-status` reports it.
    #[must_use]
    pub fn storage_type(&self) -> &'static str {
        match self.storage_kind {
            StorageKind::Redb => "redb",
            StorageKind::Memory => "inmem",
            StorageKind::Sled => "sled",
            StorageKind::Dynamodb => "dynamodb",
        }
    }
}

/// Test fixtures shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::Arca;
    use crate::config::StorageKind;
    use crate::seal::{InitRequest, SealConfig};
    use crate::storage::MemoryBackend;

    /// An arca over an in-memory store, initialised with one Shamir share and unsealed.
    pub(crate) async fn unsealed_in_memory() -> Arca {
        let arca = Arca::open(
            Arc::new(MemoryBackend::new()),
            StorageKind::Memory,
            SealConfig::Shamir,
        )
        .await
        .unwrap();
        let init = arca
            .seal()
            .initialize(InitRequest {
                secret_shares: 1,
                secret_threshold: 1,
                ..InitRequest::default()
            })
            .await
            .unwrap();
        arca.seal().submit_share(&init.keys[0].hex).await.unwrap();
        arca
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_aws_identity_reaches_the_key_provider() {
        let arca = Arca::open_with_aws(
            Arc::new(MemoryBackend::new()),
            StorageKind::Memory,
            SealConfig::Shamir,
            "eu-west-3",
            "000011112222",
        )
        .await
        .unwrap();
        assert_eq!(arca.kms().account(), "000011112222");
        assert_eq!(arca.kms().default_scope().region(), "eu-west-3");
        let default = Arca::open(
            Arc::new(MemoryBackend::new()),
            StorageKind::Memory,
            SealConfig::Shamir,
        )
        .await
        .unwrap();
        assert_eq!(default.kms().account(), DEFAULT_KMS_ACCOUNT);
    }
}
