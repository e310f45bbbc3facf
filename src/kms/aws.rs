//! [`AwsKms`]: the [`KeyProvider`] over AWS KMS itself, through the official SDK (feature
//! `aws`).
//!
//! Where [`RemoteKms`](super::RemoteKms) signs requests to any KMS-compatible endpoint with an
//! arca access key, `AwsKms` is the production provider: credentials, region and endpoint come
//! from the standard AWS chain (environment, shared config, web identity, container and
//! instance roles), so a server on EC2, ECS or EKS needs no secret in its configuration, and
//! `AWS_ENDPOINT_URL` points it at a local emulator in tests. It backs the `awskms` seal
//! (auto-unseal: the unseal key wrapped by a KMS key, see [`KeyProviderWrapper`](super::KeyProviderWrapper))
//! and can hold envelope keys.
//!
//! The SDK client is built on first use, so configuring the seal needs no I/O. Every call
//! passes the encryption context, which KMS binds to the ciphertext as associated data. AWS
//! error codes map to the same [`KmsError`] variants as [`RemoteKms`](super::RemoteKms)'s;
//! other failures (no credentials, unreachable, access denied) are [`KmsError::Internal`]
//! naming the operation and the code, never a plaintext. The SDK retries throttled and
//! transient calls (its standard mode: three attempts, exponential backoff with jitter).
//!
//! Plaintext returned by KMS is moved into [`Plaintext`], which is wiped on drop; the SDK's
//! own response buffers are not under arca's control.

use std::collections::HashMap;

use arca_storage::Plaintext;
use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use tokio::sync::OnceCell;

use super::{DataKey, DataKeySpec, Decrypted, EncryptionContext, KeyProvider, KmsError};

/// AWS KMS through the SDK. See the module documentation.
pub struct AwsKms {
    region: Option<String>,
    endpoint: Option<String>,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// AWS KMS in `region` at `endpoint`; either `None` takes the standard AWS chain's
    /// (`AWS_REGION`, `AWS_ENDPOINT_URL(_KMS)`, profile, instance metadata). Connects to
    /// nothing yet.
    #[must_use]
    pub fn new(region: Option<String>, endpoint: Option<String>) -> Self {
        Self {
            region,
            endpoint,
            client: OnceCell::new(),
        }
    }

    /// A provider over a ready client (tests, embedders with their own SDK configuration).
    #[must_use]
    pub fn with_client(client: Client) -> Self {
        Self {
            region: None,
            endpoint: None,
            client: OnceCell::new_with(Some(client)),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &self.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(endpoint) = &self.endpoint {
                    loader = loader.endpoint_url(endpoint.clone());
                }
                Client::new(&loader.load().await)
            })
            .await
    }
}

fn context(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    // KMS treats an absent context and an empty one alike; send none rather than `{}`.
    (!context.is_empty()).then(|| context.clone().into_iter().collect())
}

/// The [`KmsError`] for a failed call.
fn error<E, R>(operation: &str, err: SdkError<E, R>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let code = service.err().code().unwrap_or_default();
        let message = service.err().message().unwrap_or_default();
        if let Some(known) = super::remote::known_error(code, message) {
            return known;
        }
    }
    KmsError::Internal(format!(
        "AWS KMS {operation}: {}",
        DisplayErrorContext(&err)
    ))
}

fn missing(operation: &str, member: &str) -> KmsError {
    KmsError::Internal(format!("AWS KMS {operation} answered without {member}"))
}

#[async_trait]
impl KeyProvider for AwsKms {
    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context_pairs: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let out = self
            .client()
            .await
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(context(context_pairs))
            .send()
            .await
            .map_err(|e| error("Encrypt", e))?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| missing("Encrypt", "CiphertextBlob"))
    }

    async fn decrypt(
        &self,
        blob: &[u8],
        context_pairs: &EncryptionContext,
    ) -> Result<Decrypted, KmsError> {
        let mut out = self
            .client()
            .await
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(context(context_pairs))
            .send()
            .await
            .map_err(|e| error("Decrypt", e))?;
        let plaintext = out
            .plaintext
            .take()
            .map(|b| Plaintext::new(b.into_inner()))
            .ok_or_else(|| missing("Decrypt", "Plaintext"))?;
        Ok(Decrypted {
            key_id: out.key_id.ok_or_else(|| missing("Decrypt", "KeyId"))?,
            plaintext,
        })
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        spec: DataKeySpec,
        context_pairs: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let mut request = self
            .client()
            .await
            .generate_data_key()
            .key_id(key_id)
            .set_encryption_context(context(context_pairs));
        request = match spec {
            DataKeySpec::Aes256 => request.key_spec(aws_sdk_kms::types::DataKeySpec::Aes256),
            DataKeySpec::Aes128 => request.key_spec(aws_sdk_kms::types::DataKeySpec::Aes128),
            DataKeySpec::Bytes(_) => request.number_of_bytes(
                i32::try_from(spec.byte_len()?)
                    .map_err(|_| KmsError::InvalidArgument("NumberOfBytes is too large".into()))?,
            ),
        };
        let mut out = request
            .send()
            .await
            .map_err(|e| error("GenerateDataKey", e))?;
        let plaintext = out
            .plaintext
            .take()
            .map(|b| Plaintext::new(b.into_inner()))
            .ok_or_else(|| missing("GenerateDataKey", "Plaintext"))?;
        Ok(DataKey {
            key_id: out
                .key_id
                .ok_or_else(|| missing("GenerateDataKey", "KeyId"))?,
            plaintext,
            ciphertext_blob: out
                .ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| missing("GenerateDataKey", "CiphertextBlob"))?,
        })
    }

    async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination_key_id: &str,
        destination_context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let out = self
            .client()
            .await
            .re_encrypt()
            .ciphertext_blob(Blob::new(blob))
            .set_source_encryption_context(context(source_context))
            .destination_key_id(destination_key_id)
            .set_destination_encryption_context(context(destination_context))
            .send()
            .await
            .map_err(|e| error("ReEncrypt", e))?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| missing("ReEncrypt", "CiphertextBlob"))
    }

    async fn key_arn(&self, key_id: &str) -> Result<String, KmsError> {
        let out = self
            .client()
            .await
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| error("DescribeKey", e))?;
        out.key_metadata
            .and_then(|m| m.arn)
            .ok_or_else(|| missing("DescribeKey", "KeyMetadata.Arn"))
    }
}
