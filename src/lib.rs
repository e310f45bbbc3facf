//! arca: an embedded, self-contained secrets store.
//!
//! This crate is the library behind the `arca` binary. Today it carries the storage engine,
//! re-exported from [`arca_storage`] as [`storage`]; the seal, the key provider, the Vault- and
//! AWS-compatible APIs and the secret lifecycle are built on it in the modules to come.
//!
//! ```
//! use std::sync::Arc;
//! use arca::storage::{Barrier, MemoryBackend};
//!
//! let barrier = Barrier::new(Arc::new(MemoryBackend::new()));
//! assert!(barrier.is_sealed());
//! ```

pub use arca_storage as storage;

/// The version of this build, as `arca --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
