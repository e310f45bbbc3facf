//! Resolution: references read over arca's HTTP API, fields extracted, mappings applied, all
//! or nothing.
//!
//! - `kv://` reads go through the Vault API: the mount is found with
//!   `GET sys/internal/ui/mounts/<path>` (as the `bao kv` commands do, remembered per path),
//!   then `GET <mount>data/<key>[?version=N]`.
//! - `sm://` reads call Secrets Manager's `GetSecretValue` on `POST /`, authenticated with the
//!   same token in `X-Vault-Token`.
//!
//! [`Resolver::resolve`] fetches each distinct [`Source`] once (so `#username` and `#password`
//! of one secret are one read, of one version), then applies every mapping; the first failure
//! fails the whole resolution and nothing is returned, so a caller never delivers half a set.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::connection::{Connection, Reply, encode_path};
use super::mapping::{Mapping, RuleError};
use super::reference::{Field, SecretRef, Source, Store};
use super::value::SecretBytes;

/// Why a reference could not be read. Messages name paths and fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The address or TLS settings are unusable.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The server is sealed.
    #[error("arca is sealed")]
    Sealed,
    /// No token to authenticate with.
    #[error("no token: set ARCA_TOKEN or configure auto-auth")]
    NoToken,
    /// The token may not read the secret (or is invalid or expired).
    #[error("permission denied")]
    Denied,
    /// The secret (or the version, or the mount) does not exist.
    #[error("secret not found")]
    NotFound,
    /// The version asked for is deleted or destroyed.
    #[error("the version is deleted or destroyed")]
    Deleted,
    /// The server refused the request.
    #[error("the server answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
    /// The `#field` is not in the value.
    #[error("the value has no field {0}")]
    NoField(String),
    /// A `#field` was asked of a value that is not a JSON object.
    #[error("the value is not a JSON object, so a #field cannot be picked from it")]
    NotJson,
    /// A transform or validation rule failed.
    #[error(transparent)]
    Rule(#[from] RuleError),
}

impl ResolveError {
    /// Whether retrying later may help (the server is down, sealed, or the token expired),
    /// as opposed to a mistake in the reference or the data.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Sealed | Self::Denied | Self::NoToken
        ) || matches!(self, Self::Server { status, .. } if *status >= 500)
    }
}

/// A mapping that could not be resolved: its name, its reference and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping {mapping} ({reference}): {source}")]
pub struct MappingError {
    /// The mapping's name.
    pub mapping: String,
    /// The reference, in canonical form.
    pub reference: String,
    /// What failed.
    #[source]
    pub source: ResolveError,
}

/// A fetched secret: its value as stored and its version.
#[derive(Clone)]
pub struct Fetched {
    data: FetchedData,
    version: String,
}

#[derive(Clone)]
enum FetchedData {
    /// A KV data object, as compact JSON.
    Object(SecretBytes),
    /// A Secrets Manager `SecretString`.
    Text(SecretBytes),
    /// A Secrets Manager `SecretBinary`.
    Binary(SecretBytes),
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Fetched {
    /// The version read: a KV version number, or a Secrets Manager version id.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The value a reference with `field` picks.
    ///
    /// # Errors
    /// [`ResolveError::NoField`], [`ResolveError::NotJson`].
    pub fn extract(&self, field: Option<&Field>) -> Result<SecretBytes, ResolveError> {
        let (json, raw) = match &self.data {
            FetchedData::Object(json) => (json, json),
            FetchedData::Text(text) => (text, text),
            FetchedData::Binary(bytes) => {
                return match field {
                    None => Ok(bytes.clone()),
                    Some(_) => Err(ResolveError::NotJson),
                };
            }
        };
        let Some(field) = field else {
            return Ok(raw.clone());
        };
        let parsed: Value =
            serde_json::from_slice(json.expose_secret()).map_err(|_| ResolveError::NotJson)?;
        if !parsed.is_object() {
            return Err(ResolveError::NotJson);
        }
        let (picked, name) = match field {
            Field::Key(key) => (parsed.get(key), key),
            Field::Pointer(pointer) => (parsed.pointer(pointer), pointer),
        };
        match picked {
            None => Err(ResolveError::NoField(name.clone())),
            Some(Value::String(text)) => Ok(SecretBytes::new(text.as_bytes().to_vec())),
            Some(other) => Ok(SecretBytes::from(Zeroizing::new(other.to_string()))),
        }
    }
}

/// One resolved mapping.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The mapping's name.
    pub name: String,
    /// The value, transformed and validated.
    pub value: SecretBytes,
    /// The version it came from.
    pub version: String,
    /// Where it came from.
    pub source: Source,
}

/// Reads references over a [`Connection`].
#[derive(Debug, Clone)]
pub struct Resolver {
    connection: Connection,
    /// KV path → its mount's path (`secret/app/db` → `secret/`), as the server said.
    mounts: Arc<Mutex<HashMap<String, String>>>,
}

fn status_error(reply: &Reply) -> ResolveError {
    match reply.status {
        403 => ResolveError::Denied,
        404 => ResolveError::NotFound,
        503 if reply.messages().contains("sealed") => ResolveError::Sealed,
        status => ResolveError::Server {
            status,
            message: reply.messages(),
        },
    }
}

impl Resolver {
    /// A resolver over `connection`.
    #[must_use]
    pub fn new(connection: Connection) -> Self {
        Self {
            connection,
            mounts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The connection.
    #[must_use]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Reads `source`.
    ///
    /// # Errors
    /// [`ResolveError`].
    pub async fn fetch(&self, source: &Source) -> Result<Fetched, ResolveError> {
        if self.connection.token().is_none() {
            return Err(ResolveError::NoToken);
        }
        match source.store {
            Store::Kv => self.fetch_kv(source).await,
            Store::SecretsManager => self.fetch_sm(source).await,
        }
    }

    async fn mount_of(&self, path: &str) -> Result<String, ResolveError> {
        if let Some(mount) = self
            .mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Ok(mount.clone());
        }
        let reply = self
            .connection
            .vault(
                reqwest::Method::GET,
                &format!("sys/internal/ui/mounts/{}", encode_path(path)),
                None,
                None,
            )
            .await?;
        if reply.status != 200 {
            // arca answers 403 for a path under no mount, so that mounts cannot be probed.
            return Err(status_error(&reply));
        }
        let body = reply.json()?;
        let data = &body["data"];
        let mount = data["path"]
            .as_str()
            .ok_or_else(|| ResolveError::BadAnswer("the mount lookup named no path".into()))?;
        let is_kv2 = data["type"] == "kv"
            && (data["options"]["version"] == "2" || data["options"]["version"] == 2);
        if !is_kv2 {
            return Err(ResolveError::Server {
                status: 400,
                message: format!("{mount} is not a KV version 2 mount"),
            });
        }
        let mount = mount.to_owned();
        self.mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), mount.clone());
        Ok(mount)
    }

    async fn fetch_kv(&self, source: &Source) -> Result<Fetched, ResolveError> {
        let mount = self.mount_of(&source.path).await?;
        let key = source
            .path
            .strip_prefix(mount.as_str())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ResolveError::Server {
                status: 400,
                message: format!(
                    "kv://{} names the mount {mount}, not a key in it",
                    source.path
                ),
            })?;
        let mut path = format!("{mount}data/{}", encode_path(key));
        if let Some(version) = &source.version {
            path.push_str(&format!("?version={version}"));
        }
        let reply = self
            .connection
            .vault(reqwest::Method::GET, &path, None, None)
            .await?;
        if reply.status == 404 {
            // A deleted or destroyed version answers 404 with its metadata.
            let body = reply.json().unwrap_or(Value::Null);
            let metadata = &body["data"]["metadata"];
            let gone = metadata["destroyed"] == true
                || metadata["deletion_time"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty());
            return Err(if gone {
                ResolveError::Deleted
            } else {
                ResolveError::NotFound
            });
        }
        if reply.status != 200 {
            return Err(status_error(&reply));
        }
        let body = reply.json()?;
        let data = body["data"]["data"]
            .as_object()
            .ok_or_else(|| ResolveError::BadAnswer("the KV answer holds no data".into()))?;
        let version = body["data"]["metadata"]["version"]
            .as_u64()
            .ok_or_else(|| ResolveError::BadAnswer("the KV answer holds no version".into()))?;
        let json = Zeroizing::new(
            serde_json::to_string(data).map_err(|e| ResolveError::BadAnswer(e.to_string()))?,
        );
        Ok(Fetched {
            data: FetchedData::Object(SecretBytes::from(json)),
            version: version.to_string(),
        })
    }

    async fn fetch_sm(&self, source: &Source) -> Result<Fetched, ResolveError> {
        let mut request = json!({ "SecretId": source.path });
        if let Some(version) = &source.version {
            request["VersionId"] = json!(version);
        }
        if let Some(stage) = &source.stage {
            request["VersionStage"] = json!(stage);
        }
        let reply = self
            .connection
            .aws("secretsmanager.GetSecretValue", &request)
            .await?;
        if reply.status != 200 {
            let body = reply.json().unwrap_or(Value::Null);
            let kind = body["__type"].as_str().unwrap_or_default();
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            return Err(match kind {
                "ResourceNotFoundException" => ResolveError::NotFound,
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "MissingAuthenticationTokenException" => ResolveError::Denied,
                _ if reply.status == 403 => ResolveError::Denied,
                _ => ResolveError::Server {
                    status: reply.status,
                    message: if kind.is_empty() {
                        reply.messages()
                    } else {
                        format!("{kind}: {}", reply.messages())
                    },
                },
            });
        }
        let body = reply.json()?;
        let version = body["VersionId"]
            .as_str()
            .ok_or_else(|| ResolveError::BadAnswer("GetSecretValue returned no VersionId".into()))?
            .to_owned();
        let data = if let Some(text) = body["SecretString"].as_str() {
            FetchedData::Text(SecretBytes::new(text.as_bytes().to_vec()))
        } else if let Some(encoded) = body["SecretBinary"].as_str() {
            FetchedData::Binary(SecretBytes::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| ResolveError::BadAnswer("SecretBinary is not base64".into()))?,
            ))
        } else {
            return Err(ResolveError::BadAnswer(
                "GetSecretValue returned no value".into(),
            ));
        };
        Ok(Fetched { data, version })
    }

    /// Resolves a reference (no transform, no rule).
    ///
    /// # Errors
    /// [`ResolveError`].
    pub async fn get(&self, reference: &SecretRef) -> Result<SecretBytes, ResolveError> {
        self.fetch(reference.source())
            .await?
            .extract(reference.field())
    }

    /// Resolves every mapping, all or nothing: each distinct source is read once, then every
    /// mapping's field is extracted and its transforms and rules applied. The result is in
    /// the order of `mappings`.
    ///
    /// # Errors
    /// The first [`MappingError`]; nothing is returned then.
    pub async fn resolve(&self, mappings: &[Mapping]) -> Result<Vec<Resolved>, MappingError> {
        let mut fetched: BTreeMap<Source, Fetched> = BTreeMap::new();
        let mut out = Vec::with_capacity(mappings.len());
        for mapping in mappings {
            let reference = mapping.reference();
            let fail = |source: ResolveError| MappingError {
                mapping: mapping.name().to_owned(),
                reference: reference.to_string(),
                source,
            };
            let source = reference.source();
            let secret = match fetched.get(source) {
                Some(secret) => secret,
                None => {
                    let secret = self.fetch(source).await.map_err(fail)?;
                    fetched.entry(source.clone()).or_insert(secret)
                }
            };
            let raw = secret.extract(reference.field()).map_err(fail)?;
            let value = mapping.apply(raw).map_err(|e| fail(e.into()))?;
            out.push(Resolved {
                name: mapping.name().to_owned(),
                value,
                version: secret.version().to_owned(),
                source: source.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> Fetched {
        Fetched {
            data: FetchedData::Object(SecretBytes::new(json.as_bytes().to_vec())),
            version: "1".into(),
        }
    }

    #[test]
    fn fields_are_picked_from_json() {
        let f = object(r#"{"user":"app","port":5432,"nested":{"pw":"x"}}"#);
        assert_eq!(
            f.extract(Some(&Field::Key("user".into()))).unwrap(),
            SecretBytes::new(b"app".to_vec())
        );
        assert_eq!(
            f.extract(Some(&Field::Key("port".into()))).unwrap(),
            SecretBytes::new(b"5432".to_vec())
        );
        assert_eq!(
            f.extract(Some(&Field::Pointer("/nested/pw".into())))
                .unwrap(),
            SecretBytes::new(b"x".to_vec())
        );
        assert_eq!(
            f.extract(Some(&Field::Key("nested".into()))).unwrap(),
            SecretBytes::new(br#"{"pw":"x"}"#.to_vec())
        );
        assert_eq!(
            f.extract(Some(&Field::Key("missing".into()))).unwrap_err(),
            ResolveError::NoField("missing".into())
        );
        let text = Fetched {
            data: FetchedData::Text(SecretBytes::new(b"plain".to_vec())),
            version: "v".into(),
        };
        assert_eq!(
            text.extract(None).unwrap(),
            SecretBytes::new(b"plain".to_vec())
        );
        assert_eq!(
            text.extract(Some(&Field::Key("a".into()))).unwrap_err(),
            ResolveError::NotJson
        );
        assert!(!format!("{f:?}").contains("app"));
    }
}
