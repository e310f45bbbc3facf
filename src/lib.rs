//! arca: an embedded, self-contained secrets store.
//!
//! This crate is the library behind the `arca` binary. Today it carries:
//!
//! - [`storage`]: the encrypted storage engine, re-exported from [`arca_storage`];
//! - [`seal`]: init, Shamir / passphrase / key-file unseal, rekey and root-key rotation;
//! - [`auth`]: the token store (TTLs, use counts, renewal, child revocation, accessors,
//!   wrapping tokens) and AppRole;
//! - [`policy`]: ACL policies in Vault's HCL, and the access list checked on every request;
//! - [`audit`]: the hash-chained, HMAC-redacted audit log;
//! - [`mounts`]: the mount table (which secrets engine serves which path);
//! - [`kv`]: Vault's versioned key-value store (KV version 2), each version envelope-encrypted
//!   under its own data key;
//! - [`kms`]: the key provider with KMS semantics ([`kms::KeyProvider`], [`kms::LocalKms`]:
//!   versioned keys behind the barrier, aliases, rotation, MACs, signatures) and the transit
//!   engine built on it;
//! - [`access_keys`]: the AWS access keys SigV4 signatures are checked against;
//! - [`server`]: the Vault-compatible and AWS-compatible (KMS) HTTP APIs.
//! - [`ha`]: several servers on one DynamoDB table, one active through a lease (feature
//!   `aws` brings the DynamoDB backend and AWS KMS).
//!
//! - [`zerotrust`]: zero-trust distribution: verified identity factors, workload attestation,
//!   network context, a deterministic risk decision, and protected deliveries (time-bound,
//!   usage-limited, zone-restricted, forward-secret, split, signed).
//!
//! - [`lifecycle`]: the secret lifecycle with Secrets Manager's semantics: typed generation,
//!   versions and staging labels, rotation, access policies, usage metrics.
//! - [`changes`]: the change feed (what changed, never values) that `GET /v1/sys/events`
//!   serves, so that clients holding copies refresh within a second;
//! - [`inject`]: secret injection over the HTTP API: references and mappings, `arca run`,
//!   `arca agent` (files, templates, sidecar, init mode) and [`inject::SecretCache`].
//!
//! ```
//! use std::sync::Arc;
//! use arca::storage::{Barrier, MemoryBackend};
//!
//! let barrier = Barrier::new(Arc::new(MemoryBackend::new()));
//! assert!(barrier.is_sealed());
//! ```

pub use arca_storage as storage;

pub mod access_keys;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod cli;
pub mod client;
pub mod config;
pub mod ha;
mod handle;
pub mod inject;
pub mod kms;
pub mod kv;
pub mod lifecycle;
pub mod mounts;
pub mod policy;
pub mod seal;
pub mod server;
pub mod zerotrust;

pub use handle::{
    Arca, DEFAULT_KMS_ACCOUNT, DEFAULT_KMS_REGION, OpenError, REDB_FILE, open_backend,
};

/// The version of this build, as `arca --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
