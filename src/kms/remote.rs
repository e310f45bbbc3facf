//! [`RemoteKms`]: a [`KeyProvider`] that is a client of another KMS's AWS JSON API.
//!
//! Every call is `POST /` with `X-Amz-Target: TrentService.<Op>` and a JSON body, signed with
//! SigV4 ([`sign_request`]) for the service `kms` in the configured region, exactly as the AWS
//! SDKs send it. The peer may be another arca (its LocalKms keys, through `server/aws`) or
//! AWS KMS itself. TLS is the one every arca client uses (`ARCA_CACERT` adds a CA).
//!
//! AWS error codes come back as the matching [`KmsError`] variant, so a disabled key is
//! [`KmsError::Disabled`] here as it would be locally; a peer that cannot be reached, or that
//! answers something other than the AWS shape, is [`KmsError::Internal`] naming the endpoint.
//! Neither the secret access key nor any plaintext ever appears in an error, a log line or
//! `Debug`.

use std::time::{Duration, SystemTime};

use arca_storage::Plaintext;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{DataKey, DataKeySpec, Decrypted, EncryptionContext, KeyProvider, KmsError};
use crate::server::aws::CONTENT_TYPE;
use crate::server::aws::sigv4::sign_request;

/// How long one call may take before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An access key pair for SigV4. The secret is wiped on drop and never printed.
pub struct RemoteKmsCredentials {
    access_key_id: String,
    secret: Zeroizing<String>,
}

impl RemoteKmsCredentials {
    /// An access key id and its secret.
    #[must_use]
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: Zeroizing::new(secret.into()),
        }
    }

    /// The access key id (not secret).
    #[must_use]
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

impl std::fmt::Debug for RemoteKmsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKmsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// A client of a remote KMS JSON API. See the module documentation.
pub struct RemoteKms {
    http: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    endpoint: String,
    /// The `host` header as signed.
    host: String,
    region: String,
    credentials: RemoteKmsCredentials,
}

impl std::fmt::Debug for RemoteKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKms")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl RemoteKms {
    /// A client of the KMS API at `endpoint` (`http://` or `https://`, no path), signing for
    /// `region` with `credentials`. Connects to nothing yet.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] when the endpoint is not an http(s) URL with a host, or
    /// the region is empty; [`KmsError::Internal`] when TLS cannot be set up.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: RemoteKmsCredentials,
    ) -> Result<Self, KmsError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&endpoint).map_err(|_| {
            KmsError::InvalidArgument(format!("the KMS endpoint {endpoint:?} is not a URL"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.path() != "/" {
            return Err(KmsError::InvalidArgument(format!(
                "the KMS endpoint {endpoint:?} must be http(s)://host[:port], without a path"
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(KmsError::InvalidArgument(format!(
                    "the KMS endpoint {endpoint:?} has no host"
                )));
            }
        };
        if region.is_empty() {
            return Err(KmsError::InvalidArgument("the KMS region is empty".into()));
        }
        let http = crate::client::http_client(CALL_TIMEOUT)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(Self {
            http,
            endpoint,
            host,
            region: region.to_owned(),
            credentials,
        })
    }

    /// The endpoint this client calls.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `TrentService.<operation>` with `body` and returns the JSON answer.
    async fn call(&self, operation: &str, body: &Value) -> Result<Value, KmsError> {
        let body = Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| KmsError::Internal(e.to_string()))?,
        );
        let target = format!("TrentService.{operation}");
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", CONTENT_TYPE),
            ("x-amz-target", target.as_str()),
        ];
        let url = format!("{}/", self.endpoint);
        let signed = sign_request(
            "POST",
            &url,
            &headers,
            &body,
            &self.region,
            "kms",
            &self.credentials.access_key_id,
            self.credentials.secret.as_str(),
            SystemTime::now(),
        )
        .map_err(|e| KmsError::Internal(e.to_string()))?;
        let mut request = self.http.post(&url);
        // reqwest sets `host` itself, from the same URL.
        for (name, value) in headers.iter().skip(1) {
            request = request.header(*name, *value);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let response = request.body(body.to_vec()).send().await.map_err(|e| {
            KmsError::Internal(format!(
                "the KMS at {} cannot be reached: {}",
                self.endpoint,
                e.without_url()
            ))
        })?;
        let status = response.status();
        let text = Zeroizing::new(response.text().await.map_err(|e| {
            KmsError::Internal(format!(
                "the KMS at {} did not answer: {}",
                self.endpoint,
                e.without_url()
            ))
        })?);
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(self.aws_error(status.as_u16(), &value))
    }

    /// The [`KmsError`] for an AWS error body.
    fn aws_error(&self, status: u16, body: &Value) -> KmsError {
        // `__type` may carry a namespace prefix (`com.amazonaws.kms#NotFoundException`).
        let code = body["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .unwrap_or_default();
        let message = body["message"]
            .as_str()
            .or_else(|| body["Message"].as_str())
            .unwrap_or_default()
            .to_owned();
        if let Some(known) = known_error(code, &message) {
            return known;
        }
        match code {
            "" => KmsError::Internal(format!(
                "the KMS at {} answered HTTP {status} without an AWS error",
                self.endpoint
            )),
            other => KmsError::Internal(format!(
                "the KMS at {} refused the call: {other}: {message}",
                self.endpoint
            )),
        }
    }

    fn blob(&self, value: &Value, member: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        value[member]
            .as_str()
            .and_then(|b| STANDARD.decode(b).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| {
                KmsError::Internal(format!(
                    "the KMS at {} answered without a valid {member}",
                    self.endpoint
                ))
            })
    }

    fn string(&self, value: &Value, member: &str) -> Result<String, KmsError> {
        value[member].as_str().map(str::to_owned).ok_or_else(|| {
            KmsError::Internal(format!(
                "the KMS at {} answered without {member}",
                self.endpoint
            ))
        })
    }
}

/// The [`KmsError`] for an AWS KMS error code that has a variant of its own, shared by every
/// client of the KMS API (this one, and `AwsKms` over the AWS SDK). KMS messages name keys and
/// states, never plaintext.
pub(super) fn known_error(code: &str, message: &str) -> Option<KmsError> {
    let message = message.to_owned();
    Some(match code {
        "NotFoundException" => KmsError::NotFound(message),
        "DisabledException" => KmsError::Disabled(message),
        "KMSInvalidStateException" => KmsError::InvalidState(message),
        "InvalidCiphertextException" => KmsError::InvalidCiphertext,
        "IncorrectKeyException" => KmsError::IncorrectKey,
        "InvalidKeyUsageException" => KmsError::InvalidKeyUsage(message),
        "ValidationException" => KmsError::InvalidArgument(message),
        _ => return None,
    })
}

#[async_trait]
impl KeyProvider for RemoteKms {
    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let plaintext = Zeroizing::new(STANDARD.encode(plaintext));
        let out = self
            .call(
                "Encrypt",
                &json!({
                    "KeyId": key_id,
                    "Plaintext": plaintext.as_str(),
                    "EncryptionContext": context,
                }),
            )
            .await?;
        Ok(self.blob(&out, "CiphertextBlob")?.to_vec())
    }

    async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<Decrypted, KmsError> {
        let out = self
            .call(
                "Decrypt",
                &json!({
                    "CiphertextBlob": STANDARD.encode(blob),
                    "EncryptionContext": context,
                }),
            )
            .await?;
        let plaintext = self.blob(&out, "Plaintext")?;
        Ok(Decrypted {
            key_id: self.string(&out, "KeyId")?,
            plaintext: Plaintext::new(plaintext.to_vec()),
        })
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let mut body = json!({ "KeyId": key_id, "EncryptionContext": context });
        match spec {
            DataKeySpec::Aes256 => body["KeySpec"] = json!("AES_256"),
            DataKeySpec::Aes128 => body["KeySpec"] = json!("AES_128"),
            DataKeySpec::Bytes(_) => body["NumberOfBytes"] = json!(spec.byte_len()?),
        }
        let out = self.call("GenerateDataKey", &body).await?;
        let plaintext = self.blob(&out, "Plaintext")?;
        Ok(DataKey {
            key_id: self.string(&out, "KeyId")?,
            plaintext: Plaintext::new(plaintext.to_vec()),
            ciphertext_blob: self.blob(&out, "CiphertextBlob")?.to_vec(),
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
            .call(
                "ReEncrypt",
                &json!({
                    "CiphertextBlob": STANDARD.encode(blob),
                    "SourceEncryptionContext": source_context,
                    "DestinationKeyId": destination_key_id,
                    "DestinationEncryptionContext": destination_context,
                }),
            )
            .await?;
        Ok(self.blob(&out, "CiphertextBlob")?.to_vec())
    }

    async fn key_arn(&self, key_id: &str) -> Result<String, KmsError> {
        let out = self
            .call("DescribeKey", &json!({ "KeyId": key_id }))
            .await?;
        out["KeyMetadata"]["Arn"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                KmsError::Internal(format!(
                    "the KMS at {} answered DescribeKey without KeyMetadata.Arn",
                    self.endpoint
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::config::StorageKind;
    use crate::handle::Arca;
    use crate::seal::{InitRequest, SealConfig};
    use crate::server::{ServerOptions, app};
    use arca_storage::MemoryBackend;

    /// An unsealed in-memory arca serving its AWS API on 127.0.0.1:0 in dev mode.
    async fn serve_local() -> (String, Arc<Arca>, tokio::task::JoinHandle<()>) {
        let arca = Arc::new(
            Arca::open(
                Arc::new(MemoryBackend::new()),
                StorageKind::Memory,
                SealConfig::Shamir,
            )
            .await
            .unwrap(),
        );
        let init = arca
            .seal()
            .initialize(InitRequest {
                secret_shares: 1,
                secret_threshold: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        arca.seal().submit_share(&init.keys[0].hex).await.unwrap();
        let options = ServerOptions {
            dev: true,
            request_timeout: Duration::from_secs(30),
            max_request_bytes: 1 << 20,
        };
        let router = app(arca.clone(), options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        (address, arca, task)
    }

    #[tokio::test]
    async fn round_trips_against_a_local_kms_server() {
        let (address, arca, task) = serve_local().await;
        let arn = arca
            .kms()
            .ensure_key_for_alias("alias/remote", "remote test")
            .await
            .unwrap();
        let remote = RemoteKms::new(
            &address,
            "us-east-1",
            RemoteKmsCredentials::new("test", "very-secret-value"),
        )
        .unwrap();
        assert!(!format!("{remote:?}").contains("very-secret-value"));
        assert_eq!(remote.key_arn("alias/remote").await.unwrap(), arn);

        let mut context = EncryptionContext::new();
        context.insert("purpose".into(), "test".into());
        let blob = remote
            .encrypt("alias/remote", b"hello remote", &context)
            .await
            .unwrap();
        let opened = remote.decrypt(&blob, &context).await.unwrap();
        assert_eq!(opened.plaintext.expose_secret(), b"hello remote");
        assert_eq!(opened.key_id, arn);
        assert!(matches!(
            remote.decrypt(&blob, &EncryptionContext::new()).await,
            Err(KmsError::InvalidCiphertext)
        ));
        // The local provider opens what the remote one sealed: one key, two doors.
        let local = arca.kms().decrypt(&blob, &context).await.unwrap();
        assert_eq!(local.plaintext.expose_secret(), b"hello remote");

        let data_key = remote
            .generate_data_key(&arn, DataKeySpec::Aes256, &context)
            .await
            .unwrap();
        assert_eq!(data_key.plaintext.expose_secret().len(), 32);
        let moved = remote
            .re_encrypt(
                &data_key.ciphertext_blob,
                &context,
                &arn,
                &EncryptionContext::new(),
            )
            .await
            .unwrap();
        let again = remote
            .decrypt(&moved, &EncryptionContext::new())
            .await
            .unwrap();
        assert_eq!(
            again.plaintext.expose_secret(),
            data_key.plaintext.expose_secret()
        );

        assert!(matches!(
            remote.encrypt("alias/missing", b"x", &context).await,
            Err(KmsError::NotFound(_))
        ));
        arca.kms().default_scope().disable_key(&arn).await.unwrap();
        assert!(matches!(
            remote.encrypt(&arn, b"x", &context).await,
            Err(KmsError::Disabled(_))
        ));
        task.abort();
        let unreachable = remote.encrypt(&arn, b"x", &context).await;
        match unreachable {
            Err(KmsError::Internal(message)) => {
                assert!(message.contains(&address), "{message}");
                assert!(!message.contains("very-secret-value"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoints_are_checked() {
        for bad in ["not a url", "ftp://127.0.0.1:1", "http://127.0.0.1:1/path"] {
            assert!(
                RemoteKms::new(bad, "us-east-1", RemoteKmsCredentials::new("a", "b")).is_err(),
                "{bad}"
            );
        }
        assert!(
            RemoteKms::new(
                "http://127.0.0.1:1",
                "",
                RemoteKmsCredentials::new("a", "b")
            )
            .is_err()
        );
    }
}
