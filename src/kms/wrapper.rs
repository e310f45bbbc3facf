//! A KMS key as the seal's [`KeyWrapper`]: auto-unseal through any [`KeyProvider`].
//!
//! The seal wraps its unseal key with a [`KeyWrapper`] (a key file today). This adapter lets a
//! KMS key take the key file's place: `wrap` is `Encrypt` under the key, `unwrap` is `Decrypt`,
//! and the seal's associated data travels as the encryption context
//! (`{"arca-seal-aad": <hex>}`), so it is bound exactly as the key file binds it. The provider
//! may be a [`LocalKms`](super::LocalKms) (this process's keys, for tests and embedders) or a
//! [`RemoteKms`](super::RemoteKms) (another arca's keys, or AWS KMS itself): the seal kind
//! `kms`.

use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{EncryptionContext, KeyProvider, KmsError};
use crate::seal::{KeyWrapper, SealError};

/// The encryption-context key that carries the seal's associated data.
pub const SEAL_CONTEXT_KEY: &str = "arca-seal-aad";

/// A [`KeyWrapper`] over one key of a [`KeyProvider`].
pub struct KeyProviderWrapper {
    provider: Arc<dyn KeyProvider>,
    key_id: String,
}

impl std::fmt::Debug for KeyProviderWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyProviderWrapper")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl KeyProviderWrapper {
    /// Wraps with `key_id` (an id, ARN or alias) of `provider`. The seal records `key_id` as
    /// the wrapper's id, so use the key ARN: it names the key, not a name that may move.
    #[must_use]
    pub fn new(provider: Arc<dyn KeyProvider>, key_id: impl Into<String>) -> Self {
        Self {
            provider,
            key_id: key_id.into(),
        }
    }
}

fn context(aad: &[u8]) -> EncryptionContext {
    let mut context = EncryptionContext::new();
    context.insert(SEAL_CONTEXT_KEY.to_owned(), hex::encode(aad));
    context
}

fn provider_error(err: KmsError) -> SealError {
    match err {
        KmsError::InvalidCiphertext | KmsError::IncorrectKey => SealError::UnwrapFailed,
        other => SealError::KeyProvider(other),
    }
}

#[async_trait]
impl KeyWrapper for KeyProviderWrapper {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        self.provider
            .encrypt(&self.key_id, plaintext, &context(aad))
            .await
            .map_err(provider_error)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let opened = self
            .provider
            .decrypt(wrapped, &context(aad))
            .await
            .map_err(provider_error)?;
        // The blob names its key; it must be the key this wrapper stands for, so a blob from
        // another key of the same provider is not taken for the unseal key.
        if opened.key_id != self.key_id {
            return Err(SealError::UnwrapFailed);
        }
        Ok(opened.plaintext.into_zeroizing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::LocalKms;
    use arca_storage::{Barrier, MemoryBackend, RootKey};

    #[tokio::test]
    async fn a_kms_key_wraps_like_a_key_file() {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        let kms = Arc::new(LocalKms::new(barrier, "us-east-1", "123456789012"));
        let arn = kms
            .ensure_key_for_alias("alias/seal", "seal")
            .await
            .unwrap();
        let wrapper = KeyProviderWrapper::new(kms.clone(), arn.clone());
        assert_eq!(wrapper.key_id(), arn);
        let wrapped = wrapper.wrap(&[7; 32], b"seal-aad").await.unwrap();
        assert_eq!(
            wrapper
                .unwrap(&wrapped, b"seal-aad")
                .await
                .unwrap()
                .as_slice(),
            &[7; 32]
        );
        assert!(matches!(
            wrapper.unwrap(&wrapped, b"other").await,
            Err(SealError::UnwrapFailed)
        ));
        kms.default_scope().disable_key(&arn).await.unwrap();
        assert!(matches!(
            wrapper.unwrap(&wrapped, b"seal-aad").await,
            Err(SealError::KeyProvider(KmsError::Disabled(_)))
        ));
        assert!(!format!("{wrapper:?}").contains("7, 7"));
    }
}
