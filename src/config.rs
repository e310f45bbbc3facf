//! Server configuration: `arca.toml`, overridden by command-line flags.
//!
//! ```toml
//! listen = "127.0.0.1:8200"      # plain HTTP only on loopback unless insecure_listen = true
//! log_level = "info"
//! request_timeout_secs = 90
//! max_request_bytes = 33554432   # 32 MiB, Vault's default
//!
//! [storage]
//! backend = "redb"               # "redb" (default), "memory", "sled" (feature `sled`),
//!                                # "dynamodb" (feature `aws`)
//! path = "/var/lib/arca"         # a folder; redb keeps arca.redb in it
//! page_cache_bytes = 4194304     # redb's page cache (default 4 MiB)
//! record_cache_bytes = 16777216  # opened records kept in memory (default 16 MiB; 0: off)
//! # dynamodb only (credentials from the standard AWS chain, never from here):
//! # table = "arca"                # created by `arca aws init-table`
//! # namespace = "arca"            # the partition key of this store (default "arca")
//! # region = "eu-west-1"          # default: the AWS chain (AWS_REGION, profile, ...)
//! # endpoint = "http://127.0.0.1:5000"   # default: AWS_ENDPOINT_URL or DynamoDB's own
//!
//! [seal]
//! kind = "shamir"                # "shamir" (default), "passphrase", "keyfile", "kms",
//!                                # "awskms" (feature `aws`)
//! key_file = "/etc/arca/unseal.key"            # keyfile only
//! previous_key_file = "/etc/arca/unseal.old"   # keyfile only, while rotating
//! # kms only: a key of another arca's KMS API (or AWS KMS). The access key comes from the
//! # environment, ARCA_SEAL_AWS_ACCESS_KEY_ID / ARCA_SEAL_AWS_SECRET_ACCESS_KEY, never from here.
//! # kms_endpoint = "https://kms.example.internal:8200"
//! # kms_key_id = "alias/arca-seal"               # key id, key ARN or alias
//! # kms_region = "us-east-1"                     # the default
//! # awskms: a key of AWS KMS itself, through the SDK and the standard AWS credential chain
//! # (environment, profile, instance or task role): no secret in this file either.
//! # kms_key_id = "arn:aws:kms:eu-west-1:111122223333:key/..."   # required
//! # kms_region = "eu-west-1"                     # default: the AWS chain
//! # kms_endpoint = "http://127.0.0.1:5000"       # default: AWS_ENDPOINT_URL or AWS's own
//!
//! [tls]
//! cert = "/etc/arca/tls.crt"     # PEM chain
//! key = "/etc/arca/tls.key"      # PEM private key
//!
//! [audit]
//! file_path = "/var/log/arca/audit.log"   # or "stdout"; every request fails if it cannot write
//!
//! [ha]                            # several servers on one dynamodb table, one active
//! enabled = true
//! api_addr = "https://arca-1.internal:8200"   # where the others forward to (default: the
//!                                             # listener's address, if it is not 0.0.0.0)
//! lease_ttl_secs = 10             # takeover within lease_ttl + 1 s after the active dies
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::kms::{RemoteKms, RemoteKmsCredentials};
use crate::seal::{KmsSealConfig, SealConfig};

/// The environment variable holding the KMS seal's access key id.
pub const SEAL_ACCESS_KEY_ENV: &str = "ARCA_SEAL_AWS_ACCESS_KEY_ID";
/// The environment variable holding the KMS seal's secret access key.
pub const SEAL_SECRET_KEY_ENV: &str = "ARCA_SEAL_AWS_SECRET_ACCESS_KEY";

/// Errors reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Which store holds the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// One redb file, durable on return (the default).
    #[default]
    Redb,
    /// In memory: everything is lost at exit.
    Memory,
    /// sled (feature `sled`): not durable on power loss.
    Sled,
    /// One DynamoDB table (feature `aws`), shared by several servers.
    Dynamodb,
}

/// The `[storage]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Which backend.
    #[serde(default)]
    pub backend: StorageKind,
    /// The data folder (redb, sled).
    pub path: Option<PathBuf>,
    /// redb's in-memory page cache, in bytes (redb; default 4 MiB).
    pub page_cache_bytes: Option<usize>,
    /// The barrier's cache of opened records, in bytes (every backend; default 16 MiB; 0 turns
    /// it off).
    pub record_cache_bytes: Option<usize>,
    /// The DynamoDB table (dynamodb).
    pub table: Option<String>,
    /// The partition key value of this store in the table (dynamodb; default `arca`).
    pub namespace: Option<String>,
    /// The AWS region (dynamodb; default: the standard AWS chain).
    pub region: Option<String>,
    /// The DynamoDB endpoint (dynamodb; default: `AWS_ENDPOINT_URL` or DynamoDB's own).
    pub endpoint: Option<String>,
}

impl StorageSection {
    /// The DynamoDB settings of a `dynamodb` store: table, namespace, and region and endpoint
    /// when set (the standard AWS chain supplies the rest).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the table is missing or a name breaks DynamoDB's rules.
    #[cfg(feature = "aws")]
    pub fn dynamodb(&self) -> Result<arca_storage::DynamoDbConfig, ConfigError> {
        let Some(table) = self.table.clone() else {
            return Err(ConfigError::Invalid(
                "storage.table is required for the dynamodb backend".into(),
            ));
        };
        let config = arca_storage::DynamoDbConfig {
            table,
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| arca_storage::backend::dynamodb::DEFAULT_NAMESPACE.to_owned()),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        };
        config
            .check()
            .map_err(|e| ConfigError::Invalid(format!("storage: {e}")))?;
        Ok(config)
    }
}

/// The seal kinds a configuration can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealKindName {
    /// Shamir shares (the default).
    #[default]
    Shamir,
    /// A passphrase given at unseal.
    Passphrase,
    /// A local key file (auto-unseal).
    Keyfile,
    /// A key of a remote KMS API: another arca, or AWS KMS (auto-unseal).
    Kms,
    /// A key of AWS KMS through the AWS SDK and the standard credential chain (feature
    /// `aws`; auto-unseal).
    Awskms,
}

/// The `[seal]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSection {
    /// The seal kind.
    #[serde(default)]
    pub kind: SealKindName,
    /// The key file (keyfile seal).
    pub key_file: Option<PathBuf>,
    /// The previous key file while rotating (keyfile seal).
    pub previous_key_file: Option<PathBuf>,
    /// The KMS API's address, `http(s)://host[:port]` (kms seal).
    pub kms_endpoint: Option<String>,
    /// The KMS key: key id, key ARN or alias (kms seal).
    pub kms_key_id: Option<String>,
    /// The region to sign for (kms seal; default `us-east-1`).
    pub kms_region: Option<String>,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The `[audit]` table: one audit device (see [`crate::audit`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A file to append to, or `"stdout"`.
    pub file_path: PathBuf,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The listener address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Allow plain HTTP on a non-loopback address.
    #[serde(default)]
    pub insecure_listen: bool,
    /// `tracing` filter, e.g. `info` or `arca=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Requests taking longer are answered 503 and dropped.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Larger request bodies are refused with 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Storage.
    #[serde(default)]
    pub storage: StorageSection,
    /// Seal.
    #[serde(default)]
    pub seal: SealSection,
    /// TLS; plain HTTP when absent.
    pub tls: Option<TlsSection>,
    /// The audit device; no auditing when absent.
    pub audit: Option<AuditSection>,
    /// The identity the AWS-compatible APIs answer with.
    #[serde(default)]
    pub aws: AwsSection,
    /// High availability (several servers on one DynamoDB table).
    #[serde(default)]
    pub ha: HaSection,
    /// Secret rotation: command rotators, the PostgreSQL rotator, retry backoff (see
    /// [`crate::lifecycle::rotation`]).
    #[serde(default)]
    pub rotation: crate::lifecycle::rotation::RotationSettings,
}

/// The `[ha]` table: high availability, see [`crate::ha`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// Whether this server takes part in an election (needs the dynamodb backend and an
    /// auto-unseal seal).
    #[serde(default)]
    pub enabled: bool,
    /// The address other servers forward requests to while this one is active
    /// (`http(s)://host:port`); default: the listener's address.
    pub api_addr: Option<String>,
    /// The lease time in seconds (3 to 300; default 10).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
}

fn default_lease_ttl() -> u64 {
    crate::ha::DEFAULT_LEASE_TTL.as_secs()
}

impl Default for HaSection {
    fn default() -> Self {
        Self {
            enabled: false,
            api_addr: None,
            lease_ttl_secs: default_lease_ttl(),
        }
    }
}

/// The `[aws]` table: the account and default region of arca's AWS-compatible APIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// The 12-digit account id in ARNs (default 123456789012, the example account of the AWS
    /// documentation, which local emulators use too).
    #[serde(default = "default_account")]
    pub account_id: String,
    /// The region of requests whose signature names none, and of the library API.
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_account() -> String {
    crate::handle::DEFAULT_KMS_ACCOUNT.to_owned()
}

fn default_region() -> String {
    crate::handle::DEFAULT_KMS_REGION.to_owned()
}

impl Default for AwsSection {
    fn default() -> Self {
        Self {
            account_id: default_account(),
            region: default_region(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8200))
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_timeout() -> u64 {
    90
}

fn default_max_request_bytes() -> usize {
    32 * 1024 * 1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            insecure_listen: false,
            log_level: default_log_level(),
            request_timeout_secs: default_timeout(),
            max_request_bytes: default_max_request_bytes(),
            storage: StorageSection::default(),
            seal: SealSection::default(),
            tls: None,
            audit: None,
            aws: AwsSection::default(),
            ha: HaSection::default(),
            rotation: crate::lifecycle::rotation::RotationSettings::default(),
        }
    }
}

impl ServerConfig {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read, parsed, or checked.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses configuration text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks cross-field rules: a folder for persistent stores, key files for the keyfile
    /// seal, plain HTTP only on loopback unless allowed, sane limits.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the rule.
    pub fn check(&self) -> Result<(), ConfigError> {
        let dynamodb = self.storage.backend == StorageKind::Dynamodb;
        if !dynamodb && self.storage.backend != StorageKind::Memory && self.storage.path.is_none() {
            return Err(ConfigError::Invalid(
                "storage.path is required for the redb and sled backends".into(),
            ));
        }
        let s = &self.storage;
        if !dynamodb
            && (s.table.is_some()
                || s.namespace.is_some()
                || s.region.is_some()
                || s.endpoint.is_some())
        {
            return Err(ConfigError::Invalid(
                "storage.table, namespace, region and endpoint apply only to backend = \"dynamodb\""
                    .into(),
            ));
        }
        if dynamodb {
            #[cfg(feature = "aws")]
            self.storage.dynamodb()?;
            #[cfg(not(feature = "aws"))]
            return Err(ConfigError::Invalid(
                "this build has no dynamodb backend (build with --features aws)".into(),
            ));
        }
        if self.seal.kind == SealKindName::Keyfile && self.seal.key_file.is_none() {
            return Err(ConfigError::Invalid(
                "seal.key_file is required for the keyfile seal".into(),
            ));
        }
        if self.seal.kind != SealKindName::Keyfile
            && (self.seal.key_file.is_some() || self.seal.previous_key_file.is_some())
        {
            return Err(ConfigError::Invalid(
                "seal.key_file applies only to kind = \"keyfile\"".into(),
            ));
        }
        if self.seal.kind == SealKindName::Kms {
            if self.seal.kms_endpoint.as_deref().is_none_or(str::is_empty)
                || self.seal.kms_key_id.as_deref().is_none_or(str::is_empty)
            {
                return Err(ConfigError::Invalid(
                    "seal.kms_endpoint and seal.kms_key_id are required for the kms seal".into(),
                ));
            }
        } else if self.seal.kind == SealKindName::Awskms {
            if self.seal.kms_key_id.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid(
                    "seal.kms_key_id is required for the awskms seal".into(),
                ));
            }
            if !cfg!(feature = "aws") {
                return Err(ConfigError::Invalid(
                    "this build has no awskms seal (build with --features aws)".into(),
                ));
            }
        } else if self.seal.kms_endpoint.is_some()
            || self.seal.kms_key_id.is_some()
            || self.seal.kms_region.is_some()
        {
            return Err(ConfigError::Invalid(
                "seal.kms_* apply only to kind = \"kms\" or \"awskms\"".into(),
            ));
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.insecure_listen {
            return Err(ConfigError::Invalid(format!(
                "refusing plain HTTP on the non-loopback address {}: configure [tls] or pass \
                 --insecure-listen",
                self.listen
            )));
        }
        if self.aws.account_id.len() != 12
            || !self.aws.account_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ConfigError::Invalid(
                "aws.account_id must be 12 digits".into(),
            ));
        }
        let region_ok = !self.aws.region.is_empty()
            && self.aws.region.len() <= 32
            && self
                .aws
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(ConfigError::Invalid(
                "aws.region must look like an AWS region (e.g. us-east-1)".into(),
            ));
        }
        if self.ha.enabled {
            if self.storage.backend != StorageKind::Dynamodb {
                return Err(ConfigError::Invalid(
                    "ha needs storage shared by the servers: backend = \"dynamodb\"".into(),
                ));
            }
            if !matches!(
                self.seal.kind,
                SealKindName::Keyfile | SealKindName::Kms | SealKindName::Awskms
            ) {
                return Err(ConfigError::Invalid(
                    "ha needs an auto-unseal seal (keyfile, kms, awskms): a standby that takes \
                     over must unseal without an operator"
                        .into(),
                ));
            }
            let min = crate::ha::MIN_LEASE_TTL.as_secs();
            if !(min..=300).contains(&self.ha.lease_ttl_secs) {
                return Err(ConfigError::Invalid(format!(
                    "ha.lease_ttl_secs must be between {min} and 300"
                )));
            }
            match &self.ha.api_addr {
                Some(addr) if !(addr.starts_with("http://") || addr.starts_with("https://")) => {
                    return Err(ConfigError::Invalid(
                        "ha.api_addr must be an http(s)://host:port address".into(),
                    ));
                }
                None if self.listen.ip().is_unspecified() => {
                    return Err(ConfigError::Invalid(format!(
                        "ha.api_addr is required when listening on {}: the other servers need \
                         an address to forward to",
                        self.listen
                    )));
                }
                _ => {}
            }
        } else if self.ha.api_addr.is_some() {
            return Err(ConfigError::Invalid(
                "ha.api_addr applies only with ha.enabled = true".into(),
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "request_timeout_secs must be at least 1".into(),
            ));
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_request_bytes must be at least 1024".into(),
            ));
        }
        if let Some(audit) = &self.audit
            && audit.file_path.as_os_str().is_empty()
        {
            return Err(ConfigError::Invalid(
                "audit.file_path must name a file or \"stdout\"".into(),
            ));
        }
        if self.storage.backend == StorageKind::Sled && !cfg!(feature = "sled") {
            return Err(ConfigError::Invalid(
                "this build has no sled backend (build with --features sled)".into(),
            ));
        }
        self.rotation.check().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The seal configuration the seal layer takes. The kms seal reads its access key from
    /// [`SEAL_ACCESS_KEY_ENV`] and [`SEAL_SECRET_KEY_ENV`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the kms seal's access key is not in the environment or
    /// its endpoint is unusable.
    pub fn seal_config(&self) -> Result<SealConfig, ConfigError> {
        self.seal_config_from(|name| std::env::var(name).ok())
    }

    /// [`ServerConfig::seal_config`] with the environment given as a lookup.
    fn seal_config_from(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SealConfig, ConfigError> {
        Ok(match self.seal.kind {
            SealKindName::Shamir => SealConfig::Shamir,
            SealKindName::Passphrase => SealConfig::Passphrase,
            SealKindName::Keyfile => SealConfig::KeyFile {
                path: self.seal.key_file.clone().unwrap_or_default(),
                previous: self.seal.previous_key_file.clone(),
            },
            SealKindName::Kms => {
                let (Some(id), Some(secret)) = (
                    env(SEAL_ACCESS_KEY_ENV).filter(|v| !v.is_empty()),
                    env(SEAL_SECRET_KEY_ENV).filter(|v| !v.is_empty()),
                ) else {
                    return Err(ConfigError::Invalid(format!(
                        "the kms seal signs with an access key from the environment: set \
                         {SEAL_ACCESS_KEY_ENV} and {SEAL_SECRET_KEY_ENV}"
                    )));
                };
                let provider = RemoteKms::new(
                    self.seal.kms_endpoint.as_deref().unwrap_or_default(),
                    self.seal.kms_region.as_deref().unwrap_or("us-east-1"),
                    RemoteKmsCredentials::new(id, secret),
                )
                .map_err(|e| ConfigError::Invalid(format!("seal: {e}")))?;
                SealConfig::Kms(KmsSealConfig::new(
                    std::sync::Arc::new(provider),
                    self.seal.kms_key_id.clone().unwrap_or_default(),
                ))
            }
            #[cfg(feature = "aws")]
            SealKindName::Awskms => SealConfig::Kms(KmsSealConfig::new(
                std::sync::Arc::new(crate::kms::AwsKms::new(
                    self.seal.kms_region.clone(),
                    self.seal.kms_endpoint.clone(),
                )),
                self.seal.kms_key_id.clone().unwrap_or_default(),
            )),
            #[cfg(not(feature = "aws"))]
            SealKindName::Awskms => {
                return Err(ConfigError::Invalid(
                    "this build has no awskms seal (build with --features aws)".into(),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_file_parse() {
        let config = ServerConfig::parse("[storage]\npath = \"/tmp/x\"\n").unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.storage.backend, StorageKind::Redb);
        assert_eq!(config.seal_config().unwrap(), SealConfig::Shamir);

        let config = ServerConfig::parse(
            r#"
            listen = "127.0.0.1:18200"
            log_level = "debug"
            [storage]
            backend = "redb"
            path = "/tmp/d"
            page_cache_bytes = 1048576
            record_cache_bytes = 0
            [seal]
            kind = "keyfile"
            key_file = "/tmp/k"
            [audit]
            file_path = "/tmp/audit.log"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 18200);
        assert_eq!(config.storage.page_cache_bytes, Some(1_048_576));
        assert_eq!(config.storage.record_cache_bytes, Some(0));
        assert_eq!(
            config.audit.as_ref().unwrap().file_path,
            std::path::Path::new("/tmp/audit.log")
        );
        assert!(matches!(
            config.seal_config().unwrap(),
            SealConfig::KeyFile { .. }
        ));
    }

    #[test]
    fn kms_seal_takes_its_access_key_from_the_environment() {
        let config = ServerConfig::parse(
            r#"
            [storage]
            backend = "memory"
            [seal]
            kind = "kms"
            kms_endpoint = "http://127.0.0.1:8200"
            kms_key_id = "alias/arca-seal"
            "#,
        )
        .unwrap();
        let missing = config.seal_config_from(|_| None).unwrap_err();
        assert!(
            missing.to_string().contains(SEAL_SECRET_KEY_ENV),
            "{missing}"
        );
        let seal = config
            .seal_config_from(|name| match name {
                SEAL_ACCESS_KEY_ENV => Some("AKIDEXAMPLE".into()),
                SEAL_SECRET_KEY_ENV => Some("super-secret-value".into()),
                _ => None,
            })
            .unwrap();
        match &seal {
            SealConfig::Kms(kms) => assert_eq!(kms.key_id(), "alias/arca-seal"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{seal:?}").contains("super-secret-value"));
    }

    #[test]
    fn dynamodb_storage_and_awskms_seal_are_checked() {
        let text = r#"
            [storage]
            backend = "dynamodb"
            table = "arca-prod"
            namespace = "team-a"
            region = "eu-west-1"
            endpoint = "http://127.0.0.1:5000"
            [seal]
            kind = "awskms"
            kms_key_id = "alias/arca-seal"
            "#;
        let parsed = ServerConfig::parse(text);
        if cfg!(feature = "aws") {
            let config = parsed.unwrap();
            assert_eq!(config.storage.backend, StorageKind::Dynamodb);
            #[cfg(feature = "aws")]
            {
                let dynamodb = config.storage.dynamodb().unwrap();
                assert_eq!(dynamodb.table, "arca-prod");
                assert_eq!(dynamodb.namespace, "team-a");
                assert_eq!(dynamodb.region.as_deref(), Some("eu-west-1"));
                match config.seal_config().unwrap() {
                    SealConfig::Kms(kms) => assert_eq!(kms.key_id(), "alias/arca-seal"),
                    other => panic!("{other:?}"),
                }
            }
        } else {
            assert!(parsed.unwrap_err().to_string().contains("--features aws"));
        }
        for bad in [
            // No table.
            "[storage]\nbackend = \"dynamodb\"\n",
            // A table name DynamoDB refuses.
            "[storage]\nbackend = \"dynamodb\"\ntable = \"no spaces\"\n",
            // DynamoDB settings on another backend.
            "[storage]\npath = \"/x\"\ntable = \"arca\"\n",
            // The awskms seal without a key.
            "[storage]\nbackend = \"memory\"\n[seal]\nkind = \"awskms\"\n",
        ] {
            assert!(ServerConfig::parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn ha_needs_shared_storage_an_auto_unseal_seal_and_an_address() {
        let base = "[storage]\nbackend = \"dynamodb\"\ntable = \"arca\"\n[seal]\nkind = \"awskms\"\nkms_key_id = \"alias/k\"\n";
        let with = |extra: &str| ServerConfig::parse(&format!("{base}{extra}"));
        if cfg!(feature = "aws") {
            let config = with("[ha]\nenabled = true\n").unwrap();
            assert_eq!(config.ha.lease_ttl_secs, 10);
            assert!(with("[ha]\nenabled = true\nlease_ttl_secs = 2\n").is_err());
            assert!(with("[ha]\nenabled = true\napi_addr = \"arca:8200\"\n").is_err());
            // 0.0.0.0 is no address to forward to.
            assert!(
                with("listen = \"0.0.0.0:8200\"\ninsecure_listen = true\n[ha]\nenabled = true\n")
                    .is_err()
            );
            assert!(with("[ha]\napi_addr = \"http://a:8200\"\n").is_err());
        }
        for bad in [
            "[storage]\npath = \"/x\"\n[ha]\nenabled = true\n",
            "[storage]\nbackend = \"memory\"\n[seal]\nkind = \"keyfile\"\nkey_file = \"/k\"\n[ha]\nenabled = true\n",
        ] {
            assert!(ServerConfig::parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn aws_identity_is_configurable_and_checked() {
        let config = ServerConfig::parse("[storage]\nbackend = \"memory\"\n").unwrap();
        assert_eq!(config.aws.account_id, "123456789012");
        assert_eq!(config.aws.region, "us-east-1");
        let config = ServerConfig::parse(
            "[storage]\nbackend = \"memory\"\n[aws]\naccount_id = \"000011112222\"\nregion = \"eu-west-3\"\n",
        )
        .unwrap();
        assert_eq!(config.aws.account_id, "000011112222");
        assert_eq!(config.aws.region, "eu-west-3");
        for bad in [
            "account_id = \"12345\"",
            "account_id = \"abcdefghijkl\"",
            "region = \"US East\"",
        ] {
            let text = format!("[storage]\nbackend = \"memory\"\n[aws]\n{bad}\n");
            assert!(ServerConfig::parse(&text).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        for text in [
            "[storage]\nbackend = \"redb\"\n",                        // no path
            "[storage]\npath = \"/x\"\n[seal]\nkind = \"keyfile\"\n", // no key file
            "listen = \"0.0.0.0:8200\"\n[storage]\npath = \"/x\"\n",  // plain HTTP off loopback
            "[storage]\npath = \"/x\"\nunknown = 1\n",                // unknown field
            "listen = \"not an address\"\n",
            "[storage]\npath = \"/x\"\n[audit]\nfile_path = \"\"\n",
            "[storage]\npath = \"/x\"\n[audit]\npath = \"/a\"\n",
            "[storage]\npath = \"/x\"\n[seal]\nkind = \"kms\"\nkms_key_id = \"alias/a\"\n", // no endpoint
            "[storage]\npath = \"/x\"\n[seal]\nkms_endpoint = \"http://127.0.0.1:1\"\n", // not kms
            "[storage]\npath = \"/x\"\n[seal]\nkind = \"kms\"\nkms_endpoint = \"http://a\"\nkms_key_id = \"k\"\nkms_secret = \"s\"\n", // no secrets in the file
        ] {
            assert!(ServerConfig::parse(text).is_err(), "accepted: {text}");
        }
        let allowed =
            "listen = \"0.0.0.0:8200\"\ninsecure_listen = true\n[storage]\npath = \"/x\"\n";
        assert!(ServerConfig::parse(allowed).is_ok());
    }
}
