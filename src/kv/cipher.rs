//! Envelope encryption of one KV version, with the construction of [`crate::kms::envelope`].
//!
//! Every version gets its own 256-bit data key from the key provider (`GenerateDataKey` under
//! the KV key, [`super::KV_KEY_ALIAS`]). The data key's plaintext encrypts the version's JSON
//! with XChaCha20-Poly1305 (the storage engine's record format, keyed by
//! `HKDF-SHA256(data key, "arca/kv/version/v1")`), and is then dropped; only the provider's
//! wrapped copy is kept, in its own record beside the ciphertext. Both records also pass
//! through the barrier like every other record.
//!
//! The mount's UUID, the secret's path and the version number are bound twice: as the
//! associated data of the ciphertext and as the encryption context of the data key. A version
//! record copied to another path, mount or version number, or paired with another version's
//! wrapped key, fails to open instead of yielding wrong plaintext.
//!
//! Destroying a version deletes both records. The wrapped key is the only way to the data key,
//! so a copy of the ciphertext record kept anywhere (a replica of the data records, an export,
//! a leaked page of the store) cannot be decrypted afterwards, even by someone holding the
//! barrier keys and the key provider.

use arca_storage::Plaintext;

use super::KvError;
use crate::kms::envelope::{self, EnvelopeError};
use crate::kms::{EncryptionContext, KeyProvider, KmsError};

/// HKDF `info` of the key that encrypts a version's JSON under its data key.
pub const VERSION_KEY_INFO: &[u8] = b"arca/kv/version/v1";

/// One sealed version: the ciphertext of its JSON and the wrapped data key.
pub(crate) struct SealedVersion {
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) wrapped_key: Vec<u8>,
}

/// The encryption context of a version's data key.
pub(crate) fn context(mount_uuid: &str, path: &str, version: u64) -> EncryptionContext {
    let mut context = EncryptionContext::new();
    context.insert("mount".to_owned(), mount_uuid.to_owned());
    context.insert("path".to_owned(), path.to_owned());
    context.insert("version".to_owned(), version.to_string());
    context
}

/// The associated data of a version's ciphertext (bound by the record format as its "path").
fn associated_path(mount_uuid: &str, path: &str, version: u64) -> String {
    format!("kv/{mount_uuid}/{version}/{path}")
}

pub(crate) fn kms_error(err: KmsError) -> KvError {
    match err {
        KmsError::Sealed => KvError::Sealed,
        KmsError::InvalidCiphertext | KmsError::IncorrectKey => KvError::Integrity,
        KmsError::Disabled(_) | KmsError::PendingDeletion(_) | KmsError::InvalidState(_) => {
            tracing::error!(error = %err, "the KV envelope key cannot be used");
            KvError::KeyUnavailable
        }
        other => {
            tracing::error!(error = %other, "key provider failure");
            KvError::Internal("key provider failure".into())
        }
    }
}

fn envelope_error(err: EnvelopeError) -> KvError {
    match err {
        EnvelopeError::Kms(err) => kms_error(err),
        EnvelopeError::Integrity => KvError::Integrity,
        EnvelopeError::Internal(message) => KvError::Internal(message),
    }
}

/// Seals `json` as `version` of `path` in the mount with UUID `mount_uuid`.
pub(crate) async fn seal(
    kms: &dyn KeyProvider,
    key_id: &str,
    mount_uuid: &str,
    path: &str,
    version: u64,
    json: &[u8],
) -> Result<SealedVersion, KvError> {
    let sealed = envelope::seal(
        kms,
        key_id,
        &context(mount_uuid, path, version),
        VERSION_KEY_INFO,
        &associated_path(mount_uuid, path, version),
        json,
    )
    .await
    .map_err(envelope_error)?;
    Ok(SealedVersion {
        ciphertext: sealed.ciphertext,
        wrapped_key: sealed.wrapped_key,
    })
}

/// Opens a version sealed by [`seal`].
pub(crate) async fn open(
    kms: &dyn KeyProvider,
    mount_uuid: &str,
    path: &str,
    version: u64,
    ciphertext: &[u8],
    wrapped_key: &[u8],
) -> Result<Plaintext, KvError> {
    envelope::open(
        kms,
        &context(mount_uuid, path, version),
        VERSION_KEY_INFO,
        &associated_path(mount_uuid, path, version),
        ciphertext,
        wrapped_key,
    )
    .await
    .map_err(|err| {
        if matches!(err, EnvelopeError::Integrity) {
            tracing::warn!(version, "a KV version failed its integrity check");
        }
        envelope_error(err)
    })
}
