//! The seal layer's error type.

use std::path::PathBuf;

use arca_storage::BarrierError;
use arca_storage::keys::RandomError;

use crate::auth::AuthError;

/// Errors of the seal layer.
///
/// No message ever contains share, key, passphrase or token material: a refused share is
/// described by its shape ("not hex or base64", "decodes to 12 bytes"), never quoted.
/// Failures to authenticate are opaque on purpose ([`SealError::InvalidShares`],
/// [`SealError::InvalidPassphrase`], [`SealError::UnwrapFailed`]): they say that the secret
/// did not open the sealed root key, never why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The store has not been initialised yet (`sys/init` first).
    #[error("the store is not initialized")]
    NotInitialized,
    /// The store is already initialised; init runs once.
    #[error("the store is already initialized")]
    AlreadyInitialized,
    /// The operation needs an unsealed store.
    #[error("the store is sealed")]
    Sealed,
    /// The submitted text is not a share: not hex or base64, wrong length, identifier 0.
    /// Progress is unchanged. The message describes the shape only.
    #[error("invalid share: {0}")]
    BadShare(String),
    /// A share with the same identifier was already submitted in this attempt; it is not
    /// counted again.
    #[error("this share was already submitted")]
    DuplicateShare,
    /// The submitted shares combined into a key that does not open the sealed root key (or the
    /// recovery check): a wrong or corrupted share, or shares from another initialisation.
    /// Progress was reset.
    #[error(
        "the submitted shares are invalid: they do not open the sealed key; progress was reset"
    )]
    InvalidShares,
    /// The passphrase does not open the sealed root key.
    #[error("the passphrase is invalid")]
    InvalidPassphrase,
    /// The key wrapper (key file, KMS) could not unwrap the unseal key: wrong key, or the
    /// wrapped key was altered.
    #[error("the unseal key could not be unwrapped with the configured key")]
    UnwrapFailed,
    /// None of the configured key wrappers has the key id the seal record was wrapped under.
    /// Key ids are not secret.
    #[error("no configured key matches the key id {stored:?} that wrapped the unseal key")]
    KeyIdMismatch {
        /// The key id recorded in the seal configuration.
        stored: String,
    },
    /// Parameters refused: share counts, thresholds, KDF parameters, a missing or short
    /// passphrase, a malformed fixed root token.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A rekey operation was called with no rekey in progress.
    #[error("no rekey is in progress")]
    RekeyNotStarted,
    /// The nonce does not name the rekey (or the verification) in progress.
    #[error("the nonce does not match the rekey in progress")]
    RekeyNonceMismatch,
    /// A rekey is already in progress; cancel it first.
    #[error("a rekey is already in progress")]
    RekeyInProgress,
    /// The new shares of this rekey are issued and await verification; current shares are no
    /// longer taken.
    #[error("the new shares await verification")]
    VerificationPending,
    /// A verification call while no new key awaits verification.
    #[error("no rekey verification is pending")]
    NoVerificationPending,
    /// The operation does not apply to this seal kind (a share submitted to a passphrase seal,
    /// an auto-unseal of a Shamir seal), or the configured kind is not the stored one.
    #[error("this operation does not apply to the configured seal kind")]
    WrongSealKind,
    /// The stored seal record is missing, malformed or of an unknown version. Opaque on
    /// purpose; the log says more.
    #[error("the stored seal configuration is missing or damaged")]
    CorruptSealRecord,
    /// The stored seal record changed while this operation ran (another writer); retry.
    #[error("the seal configuration was changed concurrently; retry")]
    Conflict,
    /// A key file could not be used.
    #[error("key file {path:?}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never its content).
        reason: String,
    },
    /// The key provider of a `kms` seal refused the call or could not be reached (the key is
    /// disabled, missing, or the KMS is down). Names the condition, never key material.
    #[error("the seal's key provider failed: {0}")]
    KeyProvider(#[source] crate::kms::KmsError),
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The barrier or its backend failed.
    #[error(transparent)]
    Barrier(BarrierError),
    /// The token store failed (creating the root token at init).
    #[error(transparent)]
    Auth(AuthError),
    /// An I/O error outside the store (reading a key file).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<BarrierError> for SealError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            BarrierError::NotInitialized => Self::NotInitialized,
            BarrierError::AlreadyInitialized => Self::AlreadyInitialized,
            other => Self::Barrier(other),
        }
    }
}

impl From<arca_storage::BackendError> for SealError {
    fn from(err: arca_storage::BackendError) -> Self {
        Self::Barrier(BarrierError::Backend(err))
    }
}

impl From<AuthError> for SealError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Sealed => Self::Sealed,
            other => Self::Auth(other),
        }
    }
}
