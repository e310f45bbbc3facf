//! arca's encrypted storage engine.
//!
//! Every record arca keeps — secrets, keys, tokens, policies, audit state — goes through this
//! crate. It has three layers, bottom up:
//!
//! - [`backend`]: the [`Backend`] trait, a key-value store of opaque bytes, and its
//!   implementations: [`MemoryBackend`] (tests, fuzzing), [`RedbBackend`] (the embedded
//!   default: one file, durable on return, group commit), `SledBackend` (feature `sled`, not
//!   durable on power loss), `DynamoDbBackend` (feature `dynamodb`: one DynamoDB table, for
//!   several servers), and [`FaultyBackend`](backend::faulty::FaultyBackend) for tests.
//! - [`envelope`] and [`keyring`](crate::keyring): the record format (a versioned
//!   XChaCha20-Poly1305 envelope whose associated data binds the header and the record's path)
//!   and the rotating keyring of term keys. `storage/FORMAT.md` specifies both byte for byte.
//! - [`Barrier`]: the only door the rest of arca uses. Sealed until it is handed the root key;
//!   encrypts on put, authenticates on get, rotates terms and rewraps old records. It keeps
//!   recently read small records in a bounded [`read_cache`], invalidated by its own writes.
//!
//! It knows nothing of secrets, HTTP or policies.
//!
//! ```
//! use std::sync::Arc;
//! use arca_storage::{Barrier, MemoryBackend, RootKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), arca_storage::BarrierError> {
//! let barrier = Barrier::new(Arc::new(MemoryBackend::new()));
//! let root = RootKey::generate()?;
//! barrier.initialize(&root).await?;
//! barrier.unseal(&root).await?;
//!
//! barrier.put("secret/app/db", b"hunter2").await?;
//! let value = barrier.get("secret/app/db").await?.expect("just written");
//! assert_eq!(value.expose_secret(), b"hunter2");
//!
//! barrier.seal().await;
//! assert!(barrier.get("secret/app/db").await.is_err());
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod barrier;
pub mod envelope;
mod keyring;
pub mod keys;
pub mod read_cache;

#[cfg(feature = "dynamodb")]
pub use backend::dynamodb::{DynamoDbBackend, DynamoDbConfig};
pub use backend::memory::MemoryBackend;
pub use backend::redb::{CommitMode, RedbBackend};
#[cfg(feature = "sled")]
pub use backend::sled::SledBackend;
pub use backend::{Backend, BackendError, Batch, BatchOp, ListPage};
pub use barrier::{Barrier, BarrierError, BarrierOp, Decoded, KeyStatus, RewrapReport};
pub use keys::{KEY_LEN, Plaintext, RootKey, SubKey};
pub use read_cache::Record;
