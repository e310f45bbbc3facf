//! The secret lifecycle: typed secrets that are generated, versioned, rotated, revoked, guarded
//! by access policies and measured, with the semantics of AWS Secrets Manager.
//!
//! Applications written against Secrets Manager (boto3, the AWS SDKs, the aws CLI) must run
//! against arca with only an endpoint override, so the model here is Secrets Manager's, exactly:
//! a secret is a named container of versions; each version has an id (the caller's
//! `ClientRequestToken` or a fresh UUID) and zero or more staging labels; `AWSCURRENT` names
//! the value readers get, `AWSPREVIOUS` the one before, `AWSPENDING` a rotation in flight.
//! Moving `AWSCURRENT` to a version moves `AWSPREVIOUS` to the version that held it. A version
//! without labels is deprecated and pruned when a secret holds too many.
//!
//! arca adds what the brief asks of a secrets manager on top of that model: a [`SecretType`]
//! that says how to generate a value (and regenerate it on rotation), an [`AccessPolicy`] per
//! secret checked against the caller's verified [`Identity`], and rotation through pluggable
//! rotators (built-in regeneration, PostgreSQL, an external command).
//!
//! This file holds the types every part shares; the parts are:
//!
//! - `store`: secrets, versions and stages, envelope-encrypted per version, in the barrier;
//! - `generate`: values from the OS CSPRNG, without modulo bias;
//! - `rotation`: the four-step rotation, rotators and the scheduler;
//! - `access` and `metrics`: access policies, rate limits, and usage figures from the audit log;
//! - `cache`: a read-through cache for library users, invalidated on rotation.
//!
//! Nothing here knows HTTP: `server/aws/secretsmanager.rs` translates the Secrets Manager JSON
//! API onto it, and `cli/secrets.rs` is a client of that API.

pub mod access;
pub mod cache;
pub mod events;
pub mod generate;
pub mod metrics;
pub mod rotation;
pub mod store;

use std::fmt;
use std::net::IpAddr;

pub use store::*;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The staging label of the version readers get by default.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The staging label of the version that held [`AWSCURRENT`] before it moved.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// The staging label of the version a rotation is creating.
pub const AWSPENDING: &str = "AWSPENDING";

/// The largest `SecretString` or `SecretBinary`, in bytes (Secrets Manager's quota).
pub const MAX_SECRET_VALUE_BYTES: usize = 65_536;

/// A secret's value: text (`SecretString`) or bytes (`SecretBinary`), never both.
///
/// Wiped on drop; `Debug` shows only the kind and the length.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    /// `SecretString`.
    String(Zeroizing<String>),
    /// `SecretBinary`.
    Binary(Zeroizing<Vec<u8>>),
}

impl SecretValue {
    /// The value's bytes (the UTF-8 of a string).
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        match self {
            Self::String(text) => text.as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.expose_secret().len()
    }

    /// Whether the value is empty (Secrets Manager refuses empty values).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of a `SecretString`, `None` for binary.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(text) => Some(text),
            Self::Binary(_) => None,
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(text) => write!(f, "SecretValue::String(<{} bytes redacted>)", text.len()),
            Self::Binary(bytes) => {
                write!(f, "SecretValue::Binary(<{} bytes redacted>)", bytes.len())
            }
        }
    }
}

/// What a secret holds, which decides how its value is generated and regenerated on rotation.
///
/// Generated values are JSON objects in `SecretString` (the shapes are documented in
/// `generate`); [`SecretType::Generic`] is whatever the caller supplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecretType {
    /// Database credentials: engine, host, port, dbname, username, password.
    DatabaseCredentials,
    /// An API key `ak_<32 base62>_<8 hex checksum>`.
    ApiKey,
    /// A 256-bit symmetric key.
    SymmetricKey,
    /// A data key from the key provider: plaintext and the wrapped copy.
    EncryptionKey,
    /// A key pair and an X.509 certificate, self-signed or issued by an arca-held CA.
    Certificate,
    /// An OAuth token (access and refresh tokens with an expiry).
    OauthToken,
    /// A caller-supplied string or binary value.
    #[default]
    Generic,
}

impl SecretType {
    /// Every type, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::DatabaseCredentials,
        Self::ApiKey,
        Self::SymmetricKey,
        Self::EncryptionKey,
        Self::Certificate,
        Self::OauthToken,
        Self::Generic,
    ];

    /// The name used in metadata, tags, the CLI and the API (`database_credentials`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DatabaseCredentials => "database_credentials",
            Self::ApiKey => "api_key",
            Self::SymmetricKey => "symmetric_key",
            Self::EncryptionKey => "encryption_key",
            Self::Certificate => "certificate",
            Self::OauthToken => "oauth_token",
            Self::Generic => "generic",
        }
    }

    /// The type named `name` (as [`SecretType::as_str`] spells it).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for SecretType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret's rotation schedule, as Secrets Manager's `RotationRules` carries it.
///
/// Exactly one of `automatically_after_days` and `schedule_expression` is set when rotation
/// is scheduled. `schedule_expression` is `rate(N days)`, `rate(N hours)` or
/// `cron(min hour day-of-month month day-of-week year)`; `duration` (`"3h"`) is the window
/// after each scheduled start within which a rotation may begin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RotationRules {
    /// Rotate every N days (1..=1000).
    pub automatically_after_days: Option<u32>,
    /// `rate(...)` or `cron(...)`.
    pub schedule_expression: Option<String>,
    /// The window length, `"<N>h"` (1..=24 hours).
    pub duration: Option<String>,
}

/// The outcome of the last rotation attempt that failed, kept on the secret until a rotation
/// succeeds. The message never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationFailure {
    /// Unix seconds of the failure.
    pub at: u64,
    /// The step that failed: `createSecret`, `setSecret`, `testSecret` or `finishSecret`.
    pub step: String,
    /// What went wrong, for operators.
    pub message: String,
    /// Consecutive failed attempts (drives the retry backoff).
    pub attempts: u32,
}

/// A secret's rotation state: whether and how it rotates, and when it did and will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RotationState {
    /// Whether scheduled rotation is on (`RotationEnabled`).
    pub enabled: bool,
    /// The rotator that performs the steps (`RotationLambdaARN` carries it on the wire; see
    /// `rotation` for the names it accepts). `None`: the built-in regeneration by type.
    pub rotator: Option<String>,
    /// The schedule.
    pub rules: RotationRules,
    /// Unix seconds of the last successful rotation.
    pub last_rotated: Option<u64>,
    /// Unix seconds when the next rotation is due (persisted, so rotations missed while the
    /// server was down run at startup).
    pub next_rotation: Option<u64>,
    /// The last failure, cleared by a success.
    pub last_failure: Option<RotationFailure>,
}

/// The per-secret access policy (the brief's `AccessPolicy`).
///
/// Every list that is empty allows everything along its dimension; a non-empty list must
/// contain the caller's value. A caller that lacks a value (no service bound to its identity)
/// is refused by a non-empty list. Root callers are not exempt from rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Services allowed to use the secret.
    #[serde(default)]
    pub allowed_services: Vec<String>,
    /// Environments allowed (`prod`, `staging`, ...).
    #[serde(default)]
    pub allowed_environments: Vec<String>,
    /// Roles allowed.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// Source networks allowed, as CIDRs (`10.0.0.0/8`, `::1/128`).
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Operation rules. When non-empty, an operation must match one of them.
    #[serde(default)]
    pub access_patterns: Vec<AccessPattern>,
}

/// One rule of an [`AccessPolicy`]: which operations a caller may perform on secrets whose
/// name matches `path_pattern`, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPattern {
    /// A glob over the secret's name: `*` matches within one `/` segment, `**` across them.
    pub path_pattern: String,
    /// Secrets Manager operation names (`GetSecretValue`, `PutSecretValue`, ...); `*` for all.
    pub operations: Vec<String>,
    /// The most requests per hour per identity, if limited.
    #[serde(default)]
    pub max_requests_per_hour: Option<u32>,
}

/// Who is calling, as arca verified it: never from a header the caller can set.
///
/// Built by the server from the authenticated credential: a token's metadata (`service`,
/// `environment`, `role`), an AppRole login (its role name, and the role's bound service and
/// environment), or a SigV4 access key's bound identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// A stable, non-secret name for the caller (`token:<accessor>`,
    /// `access-key:<AKIA...>`, `approle:<role>`), for audit and rate limits.
    pub principal: String,
    /// The service bound to the credential.
    pub service: Option<String>,
    /// The environment bound to the credential.
    pub environment: Option<String>,
    /// The role bound to the credential.
    pub role: Option<String>,
    /// The peer address of the connection.
    pub source: Option<IpAddr>,
}

/// Errors of the lifecycle, one per condition Secrets Manager reports, so the API maps them
/// one to one. Messages name secrets and versions, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// No such secret, version or label (`ResourceNotFoundException`).
    #[error("{0}")]
    NotFound(String),
    /// A parameter is malformed or out of range (`InvalidParameterException`).
    #[error("{0}")]
    InvalidParameter(String),
    /// The request is not valid in the secret's current state, e.g. it is scheduled for
    /// deletion (`InvalidRequestException`).
    #[error("{0}")]
    InvalidRequest(String),
    /// A secret of that name exists, or a version id was reused with another value
    /// (`ResourceExistsException`).
    #[error("{0}")]
    Exists(String),
    /// A quota was reached (`LimitExceededException`).
    #[error("{0}")]
    LimitExceeded(String),
    /// The value could not be decrypted with its KMS key (`DecryptionFailure`).
    #[error("{0}")]
    DecryptionFailure(String),
    /// The value could not be encrypted with its KMS key (`EncryptionFailure`).
    #[error("{0}")]
    EncryptionFailure(String),
    /// A pagination token this store did not issue (`InvalidNextTokenException`).
    #[error("{0}")]
    InvalidNextToken(String),
    /// The secret's access policy refuses the caller (`AccessDeniedException`).
    #[error("{0}")]
    AccessDenied(String),
    /// The caller exceeded a rate limit of the access policy (`ThrottlingException`).
    #[error("{0}")]
    Throttled(String),
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// Something failed inside arca; the text is for logs and never holds a value.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<arca_storage::BarrierError> for SecretsError {
    fn from(err: arca_storage::BarrierError) -> Self {
        match err {
            arca_storage::BarrierError::Sealed => Self::Sealed,
            other => Self::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_do_not_show_in_debug() {
        let text = SecretValue::String(Zeroizing::new("hunter2".to_owned()));
        let bytes = SecretValue::Binary(Zeroizing::new(b"hunter2".to_vec()));
        for value in [&text, &bytes] {
            let shown = format!("{value:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("7 bytes"), "{shown}");
        }
        assert_eq!(text.as_str(), Some("hunter2"));
        assert_eq!(bytes.as_str(), None);
        assert_eq!(text.expose_secret(), bytes.expose_secret());
    }

    #[test]
    fn type_names_round_trip() {
        for t in SecretType::ALL {
            assert_eq!(SecretType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(SecretType::parse("password"), None);
    }

    #[test]
    fn access_policies_refuse_unknown_fields() {
        let ok: Result<AccessPolicy, _> =
            serde_json::from_str(r#"{"allowed_services": ["billing"]}"#);
        assert_eq!(
            ok.map(|p| p.allowed_services).ok(),
            Some(vec!["billing".to_owned()])
        );
        let typo: Result<AccessPolicy, _> =
            serde_json::from_str(r#"{"allowed_service": ["billing"]}"#);
        assert!(
            typo.is_err(),
            "a misspelt field must not silently allow everything"
        );
    }
}
