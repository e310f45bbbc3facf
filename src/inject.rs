//! Secret injection: delivering secrets to workloads without putting them in configuration
//! files, and keeping them fresh when they change.
//!
//! Injection is a *client* of arca's HTTP API, like any other: it never reaches into the
//! store, so `arca run` and `arca agent` work the same against a local or a remote arca, and
//! every read goes through the token's ACL policies and the audit log.
//!
//! - [`reference`]: one syntax for both stores: `kv://secret/app/db#password?version=3`,
//!   `sm://prod/db#password?stage=AWSPREVIOUS`;
//! - [`mapping`]: a target name bound to a reference, with base64 transforms and validation
//!   rules (non-empty, minimum length, regex);
//! - [`resolve`]: references read over HTTP and mappings applied, all or nothing;
//! - [`template`]: whole files rendered with minijinja;
//! - [`file`]: atomic file delivery (temporary file, fsync, rename), rewritten only on change;
//! - [`watch`]: the client of the server's change feed (`GET /v1/sys/events`);
//! - [`cache`]: [`SecretCache`], an in-memory read-through cache with a TTL, invalidated on
//!   change, for Rust programs;
//! - [`process`]: children in their own process group, stopped group and all;
//! - [`run`]: `arca run`, values in a child's environment, restarted or signalled on change;
//! - [`agent`]: `arca agent`, auto-auth, file jobs, the sidecar listener, `--once`, status and
//!   revocation.
//!
//! Unix only: process groups, signals, file modes and owners are Unix notions.
//!
//! ```
//! use arca::inject::{Mapping, SecretRef, Store};
//!
//! let reference: SecretRef = "kv://secret/app/db#password".parse().unwrap();
//! assert_eq!(reference.store(), Store::Kv);
//! let mapping = Mapping::parse_assignment("DB_PASSWORD=sm://prod/db#password").unwrap();
//! assert_eq!(mapping.name(), "DB_PASSWORD");
//! ```

pub mod agent;
pub mod cache;
pub mod connection;
pub mod file;
pub mod mapping;
pub mod process;
pub mod reference;
pub mod resolve;
pub mod run;
pub mod template;
pub mod value;
pub mod watch;

pub use cache::SecretCache;
pub use connection::{Connection, Token};
pub use mapping::{Mapping, Rules, Transform};
pub use reference::{SecretRef, Store};
pub use resolve::{MappingError, ResolveError, Resolved, Resolver};
pub use value::SecretBytes;
