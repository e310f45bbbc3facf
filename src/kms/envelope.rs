//! Envelope encryption under a data key from a [`KeyProvider`]: the construction every arca
//! layer that keeps secret values uses (KV v2 versions, Secrets Manager versions).
//!
//! Each sealed item gets its own 256-bit data key (`GenerateDataKey` under the caller's KMS
//! key, with the caller's encryption context). The data key's plaintext, through
//! `HKDF-SHA256(data key, info)`, keys the storage engine's record format
//! (XChaCha20-Poly1305, [`RecordCipher`]) with `associated` as the bound path; then it is
//! dropped. Only the provider's wrapped copy is kept, beside the ciphertext.
//!
//! Callers bind the item's identity twice, as the encryption context of the data key and as
//! the associated data of the ciphertext, so an item copied elsewhere, or paired with another
//! item's wrapped key, fails to open instead of yielding wrong plaintext. Deleting the wrapped
//! key, or the KMS key that wraps it, makes the ciphertext unreadable for good.

use arca_storage::Plaintext;
use arca_storage::envelope::{Envelope, RecordCipher};

use super::{DataKeySpec, EncryptionContext, KeyProvider, KmsError};

/// One sealed item: the ciphertext, the wrapped data key, and the ARN of the key that wrapped
/// it.
pub(crate) struct Sealed {
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) wrapped_key: Vec<u8>,
    pub(crate) key_arn: String,
}

/// Why an envelope could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvelopeError {
    /// The key provider refused (key missing, disabled, pending deletion, sealed, ...).
    #[error(transparent)]
    Kms(KmsError),
    /// The ciphertext failed authentication, or does not parse. Opaque on purpose.
    #[error("the sealed item failed its integrity check")]
    Integrity,
    /// Something else failed inside arca; the text is for logs.
    #[error("internal error: {0}")]
    Internal(String),
}

fn cipher(data_key: &Plaintext, info: &[u8]) -> Result<RecordCipher, EnvelopeError> {
    let key: &[u8; 32] = data_key.expose_secret().try_into().map_err(|_| {
        tracing::error!("the key provider returned a data key that is not 32 bytes");
        EnvelopeError::Internal("unexpected data key length".into())
    })?;
    Ok(RecordCipher::derive(key, info))
}

/// Seals `plaintext` under a fresh data key from `key_id`.
pub(crate) async fn seal(
    kms: &dyn KeyProvider,
    key_id: &str,
    context: &EncryptionContext,
    info: &[u8],
    associated: &str,
    plaintext: &[u8],
) -> Result<Sealed, EnvelopeError> {
    let data_key = kms
        .generate_data_key(key_id, DataKeySpec::Aes256, context)
        .await
        .map_err(EnvelopeError::Kms)?;
    let ciphertext = cipher(&data_key.plaintext, info)?
        .seal(0, associated, plaintext)
        .map_err(|err| EnvelopeError::Internal(format!("sealing failed: {err}")))?;
    Ok(Sealed {
        ciphertext,
        wrapped_key: data_key.ciphertext_blob,
        key_arn: data_key.key_id,
    })
}

/// Opens an item sealed by [`seal`] with the same `context`, `info` and `associated`.
pub(crate) async fn open(
    kms: &dyn KeyProvider,
    context: &EncryptionContext,
    info: &[u8],
    associated: &str,
    ciphertext: &[u8],
    wrapped_key: &[u8],
) -> Result<Plaintext, EnvelopeError> {
    let data_key = kms
        .decrypt(wrapped_key, context)
        .await
        .map_err(EnvelopeError::Kms)?;
    let envelope = Envelope::decode(ciphertext).map_err(|_| EnvelopeError::Integrity)?;
    cipher(&data_key.plaintext, info)?
        .open(&envelope, associated)
        .map_err(|_| EnvelopeError::Integrity)
}
