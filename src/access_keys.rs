//! AWS-style access keys: the credentials AWS SDKs, boto3 and the aws CLI sign requests with.
//!
//! SigV4 is a symmetric scheme: to check a signature the server recomputes it with the
//! caller's secret access key. arca therefore keeps each secret, and keeps it the way it keeps
//! every secret: as a barrier record (`aws/access-keys/<id>`), encrypted at rest and readable
//! only while unsealed. The secret is shown once, when the key is created; listing shows ids,
//! creation times and the identity the key is bound to, never secrets.
//!
//! Each key is bound to an identity (a display name) and a list of policies, the same words a
//! token carries, so the AWS API can authorise its callers like the Vault API does.
//!
//! A key may also carry a [`BoundIdentity`]: the service, environment and role its requests
//! act as when a secret's access policy is checked (`lifecycle::access`). They are set by the
//! operator who creates the key and stored with it, never taken from the request, so a caller
//! cannot claim another service by sending a header.
//!
//! Ids look like AWS's (`AKIA` and 16 characters of `A-Z2-7`), secrets are 40 characters of
//! `A-Za-z0-9+/`; both are sampled from the OS generator without modulo bias by arca's one
//! alphabet sampler, [`sample_ascii`].

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arca_storage::keys::RandomError;
use arca_storage::{Barrier, BarrierError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::lifecycle::generate::sample_ascii;

const PREFIX: &str = "aws/access-keys/";
const RECORD_VERSION: u32 = 1;
const ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Errors of the access-key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessKeyError {
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// A stored key does not parse (the log names the path).
    #[error("a stored access key is damaged")]
    Corrupt,
    /// A bound service, environment or role is malformed (the message names which).
    #[error("{0}")]
    InvalidIdentity(String),
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The barrier or its backend failed.
    #[error(transparent)]
    Barrier(BarrierError),
}

impl From<BarrierError> for AccessKeyError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Barrier(other),
        }
    }
}

/// A secret access key. Wiped on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct SecretAccessKey(Zeroizing<String>);

impl SecretAccessKey {
    /// The secret.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretAccessKey([REDACTED])")
    }
}

/// What listing shows of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessKeyInfo {
    /// The access key id.
    pub id: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The identity the key acts as.
    pub display_name: String,
    /// The policies it carries.
    pub policies: Vec<String>,
    /// The service, environment and role its requests act as.
    pub bound: BoundIdentity,
}

/// The service, environment and role an access key acts as for access policies. Not secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundIdentity {
    /// The service.
    pub service: Option<String>,
    /// The environment (`prod`, `staging`, ...).
    pub environment: Option<String>,
    /// The role.
    pub role: Option<String>,
}

impl BoundIdentity {
    /// Checks each value that is set (see [`crate::lifecycle::access::check_identity_value`]).
    ///
    /// # Errors
    /// A message naming the field that is malformed.
    pub fn validate(&self) -> Result<(), String> {
        for (dimension, value) in [
            ("service", &self.service),
            ("environment", &self.environment),
            ("role", &self.role),
        ] {
            if let Some(value) = value {
                crate::lifecycle::access::check_identity_value(dimension, value)?;
            }
        }
        Ok(())
    }
}

/// A key as the signature check needs it.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// The public part.
    pub info: AccessKeyInfo,
    /// The secret.
    pub secret: SecretAccessKey,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    secret: String,
    created: u64,
    display_name: String,
    policies: Vec<String>,
    // Added after the first records were written; absent in those, which bind nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// Access keys behind a barrier. Holds no key itself.
#[derive(Debug, Clone)]
pub struct AccessKeyStore {
    barrier: Arc<Barrier>,
}

/// Whether `id` has the shape of an access key id (so it can be part of a storage path).
fn valid_id(id: &str) -> bool {
    (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl AccessKeyStore {
    /// A store over `barrier`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self { barrier }
    }

    /// Creates a key bound to `display_name` and `policies`; returns it with its secret, which
    /// is never shown again.
    ///
    /// # Errors
    /// [`AccessKeyError::Sealed`]; storage or random-generator failures.
    pub async fn create(
        &self,
        display_name: &str,
        policies: Vec<String>,
    ) -> Result<AccessKey, AccessKeyError> {
        self.create_bound(display_name, policies, BoundIdentity::default())
            .await
    }

    /// As [`AccessKeyStore::create`], with the service, environment and role the key's
    /// requests act as.
    ///
    /// # Errors
    /// [`AccessKeyError::InvalidIdentity`] for a malformed value; as
    /// [`AccessKeyStore::create`].
    pub async fn create_bound(
        &self,
        display_name: &str,
        policies: Vec<String>,
        bound: BoundIdentity,
    ) -> Result<AccessKey, AccessKeyError> {
        bound.validate().map_err(AccessKeyError::InvalidIdentity)?;
        let secret = sample_ascii(SECRET_ALPHABET, 40)?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        loop {
            let id = format!("AKIA{}", sample_ascii(ID_ALPHABET, 16)?.as_str());
            let stored = Stored {
                v: RECORD_VERSION,
                secret: secret.to_string(),
                created,
                display_name: display_name.to_owned(),
                policies: policies.clone(),
                service: bound.service.clone(),
                environment: bound.environment.clone(),
                role: bound.role.clone(),
            };
            let bytes =
                Zeroizing::new(serde_json::to_vec(&stored).map_err(|_| AccessKeyError::Corrupt)?);
            // A collision of 80 random bits will not happen, but the CAS makes it harmless.
            if self
                .barrier
                .compare_and_swap(&format!("{PREFIX}{id}"), None, Some(&bytes))
                .await?
            {
                tracing::info!(access_key_id = %id, display_name, "access key created");
                return Ok(AccessKey {
                    info: AccessKeyInfo {
                        id,
                        created,
                        display_name: display_name.to_owned(),
                        policies,
                        bound,
                    },
                    secret: SecretAccessKey(secret),
                });
            }
        }
    }

    /// The key `id`, with its secret, or `None`.
    ///
    /// # Errors
    /// [`AccessKeyError::Sealed`]; [`AccessKeyError::Corrupt`]; storage failures.
    pub async fn get(&self, id: &str) -> Result<Option<AccessKey>, AccessKeyError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = format!("{PREFIX}{id}");
        let Some(bytes) = self.barrier.get(&path).await? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(bytes.expose_secret()).map_err(|_| {
            tracing::warn!(path, "access key record does not parse");
            AccessKeyError::Corrupt
        })?;
        if stored.v != RECORD_VERSION {
            return Err(AccessKeyError::Corrupt);
        }
        Ok(Some(AccessKey {
            info: AccessKeyInfo {
                id: id.to_owned(),
                created: stored.created,
                display_name: stored.display_name.clone(),
                policies: stored.policies.clone(),
                bound: BoundIdentity {
                    service: stored.service.clone(),
                    environment: stored.environment.clone(),
                    role: stored.role.clone(),
                },
            },
            secret: SecretAccessKey(Zeroizing::new(stored.secret.clone())),
        }))
    }

    /// Every key, by id, without secrets.
    ///
    /// # Errors
    /// As [`AccessKeyStore::get`].
    pub async fn list(&self) -> Result<Vec<AccessKeyInfo>, AccessKeyError> {
        let mut out = Vec::new();
        for path in self.barrier.list(PREFIX).await? {
            let Some(id) = path.strip_prefix(PREFIX) else {
                continue;
            };
            if let Some(key) = self.get(id).await? {
                out.push(key.info);
            }
        }
        Ok(out)
    }

    /// Deletes key `id`; returns whether it existed.
    ///
    /// # Errors
    /// [`AccessKeyError::Sealed`]; storage failures.
    pub async fn delete(&self, id: &str) -> Result<bool, AccessKeyError> {
        if !valid_id(id) {
            return Ok(false);
        }
        let path = format!("{PREFIX}{id}");
        let existed = self.barrier.get(&path).await?.is_some();
        if existed {
            self.barrier.delete(&path).await?;
            tracing::info!(access_key_id = %id, "access key deleted");
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_storage::{Backend as _, MemoryBackend, RootKey};

    #[tokio::test]
    async fn create_get_list_delete() {
        let backend = Arc::new(MemoryBackend::new());
        let barrier = Arc::new(Barrier::new(backend.clone()));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        let store = AccessKeyStore::new(barrier);
        let key = store.create("ci", vec!["root".into()]).await.unwrap();
        assert!(key.info.id.starts_with("AKIA") && key.info.id.len() == 20);
        assert_eq!(key.secret.expose_secret().len(), 40);
        assert!(!format!("{key:?}").contains(key.secret.expose_secret()));
        let again = store.get(&key.info.id).await.unwrap().unwrap();
        assert_eq!(again.secret.expose_secret(), key.secret.expose_secret());
        assert_eq!(store.list().await.unwrap(), vec![key.info.clone()]);
        // The secret is not in the backend in clear.
        for path in backend.list("").await.unwrap() {
            let raw = backend.get(&path).await.unwrap().unwrap();
            assert!(
                !raw.windows(40)
                    .any(|w| w == key.secret.expose_secret().as_bytes())
            );
        }
        assert!(store.delete(&key.info.id).await.unwrap());
        assert!(!store.delete(&key.info.id).await.unwrap());
        assert!(store.get(&key.info.id).await.unwrap().is_none());
        assert!(store.get("../../etc").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bound_identities_are_stored_and_checked() {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        let store = AccessKeyStore::new(barrier.clone());
        let bound = BoundIdentity {
            service: Some("billing".into()),
            environment: Some("prod".into()),
            role: None,
        };
        let key = store
            .create_bound("billing", vec!["default".into()], bound.clone())
            .await
            .unwrap();
        let again = store.get(&key.info.id).await.unwrap().unwrap();
        assert_eq!(again.info.bound, bound);
        let bad = BoundIdentity {
            role: Some("has space".into()),
            ..BoundIdentity::default()
        };
        assert!(matches!(
            store.create_bound("x", Vec::new(), bad).await,
            Err(AccessKeyError::InvalidIdentity(m)) if m.starts_with("role ")
        ));
        // A record written before keys had bound identities reads as binding nothing.
        let old = br#"{"v":1,"secret":"s","created":1,"display_name":"old","policies":["root"]}"#;
        barrier
            .put("aws/access-keys/AKIAOLDRECORD2345678", old)
            .await
            .unwrap();
        let old = store.get("AKIAOLDRECORD2345678").await.unwrap().unwrap();
        assert_eq!(old.info.bound, BoundIdentity::default());
    }
}
