//! The `Backend` trait: where opaque bytes are kept.
//!
//! A backend stores values under string keys and knows nothing of what they mean; above it the
//! [`Barrier`](crate::Barrier) encrypts every value before it gets here. The trait is shaped by
//! the most constrained store arca is meant to run on, DynamoDB, so that code written and tested
//! against the embedded `redb` backend behaves the same when the records move there:
//!
//! - keys are UTF-8 strings of at most [`MAX_KEY_LEN`] bytes (DynamoDB's sort-key limit), so a
//!   prefix listing is a `Query` with `begins_with` on the sort key;
//! - values are at most [`MAX_VALUE_LEN`] bytes; a backend whose items are smaller (DynamoDB:
//!   400 KB) chunks larger values transparently and atomically;
//! - compare-and-swap is a conditional write;
//! - a [`Batch`] is atomic and bounded like `TransactWriteItems` (see [`Batch`] for the exact
//!   limits), and every backend enforces the same bounds, so a batch that works on redb never
//!   fails on DynamoDB for being too large.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod faulty;
pub mod memory;
pub mod redb;
#[cfg(feature = "sled")]
pub mod sled;

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;

/// The longest key a backend accepts, in bytes (DynamoDB's sort-key limit).
pub const MAX_KEY_LEN: usize = 1024;

/// The largest value a backend accepts, in bytes.
///
/// One MiB leaves room for any secret arca stores (the AWS Secrets Manager limit is 64 KiB,
/// Vault's KV values are rarely above a few KiB) while keeping every value inside one batch.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// The most weight units one [`Batch`] may carry (DynamoDB's `TransactWriteItems` item limit).
pub const MAX_BATCH_WEIGHT: usize = 100;

/// The most bytes (keys plus values) one [`Batch`] may carry (`TransactWriteItems`' 4 MB).
pub const MAX_BATCH_BYTES: usize = 4_000_000;

/// Values up to this length are stored inline in one item by every backend; longer values
/// are split into chunks of this size by backends with small items.
pub const INLINE_VALUE_LEN: usize = 350 * 1024;

/// The weight of one batch operation on a value of `value_len` bytes: one item for the record
/// itself, plus one per chunk when the value is too long to be stored inline.
#[must_use]
pub const fn op_weight(value_len: usize) -> usize {
    if value_len <= INLINE_VALUE_LEN {
        1
    } else {
        1 + value_len.div_ceil(INLINE_VALUE_LEN)
    }
}

/// Errors a backend reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The key is empty, longer than [`MAX_KEY_LEN`], or contains a NUL byte.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: &'static str,
    },
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The length of the refused value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A batch exceeds [`MAX_BATCH_WEIGHT`] or [`MAX_BATCH_BYTES`], or names one key twice.
    #[error("invalid batch: {reason}")]
    InvalidBatch {
        /// Why the batch was refused.
        reason: String,
    },
    /// The underlying store failed: an I/O error, a corrupted file, a lost connection.
    /// Nothing of the failed operation was applied.
    #[error("storage failure")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The backend has been closed or its writer stopped.
    #[error("storage backend is closed")]
    Closed,
}

impl BackendError {
    /// Wraps any error of an underlying store.
    pub fn storage(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(err))
    }
}

/// Checks a key against the limits every backend shares.
///
/// # Errors
/// [`BackendError::InvalidKey`] when the key is empty, too long, or contains NUL.
pub fn validate_key(key: &str) -> Result<(), BackendError> {
    if key.is_empty() {
        return Err(BackendError::InvalidKey { reason: "empty" });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(BackendError::InvalidKey {
            reason: "longer than 1024 bytes",
        });
    }
    if key.as_bytes().contains(&0) {
        return Err(BackendError::InvalidKey {
            reason: "contains a NUL byte",
        });
    }
    Ok(())
}

/// Checks a value against [`MAX_VALUE_LEN`].
///
/// # Errors
/// [`BackendError::ValueTooLarge`] when the value is too long.
pub fn validate_value(value: &[u8]) -> Result<(), BackendError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(BackendError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// One write inside a [`Batch`].
#[derive(Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Store `value` under `key`, replacing any value there.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`; removing an absent key is not an error.
    Delete {
        /// The key.
        key: String,
    },
}

impl BatchOp {
    /// The key this operation writes.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

impl fmt::Debug for BatchOp {
    // Values are ciphertext above the barrier, but a backend used directly may hold anything:
    // print only their length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { key, value } => write!(f, "Put({key:?}, {} bytes)", value.len()),
            Self::Delete { key } => write!(f, "Delete({key:?})"),
        }
    }
}

/// An atomic group of puts and deletes: either all of them are applied, or none.
///
/// A `Batch` is valid by construction: every key is valid, no key appears twice (DynamoDB
/// refuses two operations on one item in a transaction), the summed [`op_weight`] stays within
/// [`MAX_BATCH_WEIGHT`] and the summed key and value bytes within [`MAX_BATCH_BYTES`]. A batch
/// too large is refused whole when it is built; arca never splits one into non-atomic pieces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
    keys: BTreeSet<String>,
    weight: usize,
    bytes: usize,
}

impl Batch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a batch from operations, checking every limit.
    ///
    /// # Errors
    /// The first limit an operation breaks.
    pub fn from_ops(ops: impl IntoIterator<Item = BatchOp>) -> Result<Self, BackendError> {
        let mut batch = Self::new();
        for op in ops {
            batch.push(op)?;
        }
        Ok(batch)
    }

    /// Adds a put.
    ///
    /// # Errors
    /// As [`Batch::push`].
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) -> Result<(), BackendError> {
        self.push(BatchOp::Put {
            key: key.into(),
            value,
        })
    }

    /// Adds a delete.
    ///
    /// # Errors
    /// As [`Batch::push`].
    pub fn delete(&mut self, key: impl Into<String>) -> Result<(), BackendError> {
        self.push(BatchOp::Delete { key: key.into() })
    }

    /// Adds an operation; the batch is unchanged when this fails.
    ///
    /// # Errors
    /// [`BackendError::InvalidKey`], [`BackendError::ValueTooLarge`], or
    /// [`BackendError::InvalidBatch`] for a repeated key or a batch over its limits.
    pub fn push(&mut self, op: BatchOp) -> Result<(), BackendError> {
        validate_key(op.key())?;
        let (weight, bytes) = match &op {
            BatchOp::Put { key, value } => {
                validate_value(value)?;
                (op_weight(value.len()), key.len() + value.len())
            }
            BatchOp::Delete { key } => (1, key.len()),
        };
        if self.keys.contains(op.key()) {
            return Err(BackendError::InvalidBatch {
                reason: format!("key {:?} appears twice", op.key()),
            });
        }
        if self.weight + weight > MAX_BATCH_WEIGHT {
            return Err(BackendError::InvalidBatch {
                reason: format!("more than {MAX_BATCH_WEIGHT} items"),
            });
        }
        if self.bytes + bytes > MAX_BATCH_BYTES {
            return Err(BackendError::InvalidBatch {
                reason: format!("more than {MAX_BATCH_BYTES} bytes"),
            });
        }
        self.keys.insert(op.key().to_owned());
        self.weight += weight;
        self.bytes += bytes;
        self.ops.push(op);
        Ok(())
    }

    /// The operations, in the order they were added.
    #[must_use]
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Consumes the batch, returning its operations.
    #[must_use]
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// The number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// One page of a prefix listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Full keys, in ascending byte order.
    pub keys: Vec<String>,
    /// `Some(last key)` when more keys may follow: pass it as `start_after` for the next page.
    pub next: Option<String>,
}

/// The most keys one [`Backend::list_page`] call returns, whatever the caller asks.
pub const MAX_LIST_PAGE: usize = 1000;

/// A key-value store of opaque bytes: the one extension point below the barrier.
///
/// Contracts every implementation keeps (the conformance suite in `tests/conformance.rs`
/// checks them against each backend):
///
/// - **Durability**: a write (`put`, `delete`, `compare_and_swap` that swapped, `batch`) that
///   returns `Ok` is on stable storage, unless the backend's documentation says otherwise
///   (sled). A write that returns `Err` was not applied, or its effect is unknown only when the
///   error is [`BackendError::Storage`] from a lost acknowledgement (network backends).
/// - **Atomicity**: each call is all or nothing; no reader ever sees half of a batch or half of
///   a value.
/// - **Linearizability**: once a write returned, every later read in any task sees it.
/// - **Limits**: keys and values are checked with [`validate_key`] and [`validate_value`]
///   before anything is written.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Returns the value stored under `key`, or `None`.
    ///
    /// # Errors
    /// [`BackendError::InvalidKey`] or a storage failure.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;

    /// Stores `value` under `key`, replacing any previous value, durably.
    ///
    /// # Errors
    /// An invalid key or value, or a storage failure (then nothing was written).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError>;

    /// Removes `key`, durably. Removing an absent key succeeds.
    ///
    /// # Errors
    /// An invalid key, or a storage failure (then nothing was removed).
    async fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// Returns up to `limit` keys that start with `prefix` and sort strictly after
    /// `start_after` (when given), in ascending byte order. `limit` is clamped to
    /// `1..=`[`MAX_LIST_PAGE`]: a limit of 0 returns at most one key.
    ///
    /// # Errors
    /// A storage failure.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError>;

    /// Every key that starts with `prefix`, in ascending byte order.
    ///
    /// This walks [`Backend::list_page`]; prefer that for prefixes that may hold many keys.
    ///
    /// # Errors
    /// A storage failure.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_page(prefix, after.as_deref(), MAX_LIST_PAGE)
                .await?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Atomically replaces the value under `key` with `new` (`None` deletes it) if and only if
    /// the current value equals `expected` (`None`: the key is absent). Returns whether the swap
    /// happened; when it did not, nothing was written.
    ///
    /// # Errors
    /// An invalid key or value, or a storage failure.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, BackendError>;

    /// Applies every operation of `batch` atomically and durably, in order.
    ///
    /// # Errors
    /// A storage failure; then no operation was applied.
    async fn batch(&self, batch: Batch) -> Result<(), BackendError>;

    /// Makes every acknowledged write durable. A no-op for backends whose writes are durable on
    /// return (redb, memory); sled flushes its log.
    ///
    /// # Errors
    /// A storage failure.
    async fn flush(&self) -> Result<(), BackendError>;
}

/// The keys of a sorted map that start with `prefix` and sort after `start_after`, one page.
///
/// Shared by the in-process backends, which all keep keys in byte order.
pub(crate) fn page_from_sorted<'a>(
    keys: impl Iterator<Item = &'a str>,
    prefix: &str,
    limit: usize,
) -> ListPage {
    let limit = limit.clamp(1, MAX_LIST_PAGE);
    let mut out = Vec::new();
    let mut more = false;
    for key in keys {
        if !key.starts_with(prefix) {
            break;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(key.to_owned());
    }
    let next = if more { out.last().cloned() } else { None };
    ListPage { keys: out, next }
}

/// The first key a prefix listing should look at: just after `start_after` when it lies inside
/// the prefix's range, else the prefix itself.
pub(crate) fn list_start<'a>(prefix: &'a str, start_after: Option<&'a str>) -> ListStart<'a> {
    match start_after {
        Some(after) if after >= prefix => ListStart::After(after),
        _ => ListStart::From(prefix),
    }
}

/// Where a listing starts, see [`list_start`].
pub(crate) enum ListStart<'a> {
    /// Inclusive lower bound.
    From(&'a str),
    /// Exclusive lower bound.
    After(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_refuses_repeated_keys_and_stays_unchanged() {
        let mut batch = Batch::new();
        batch.put("a", vec![1]).unwrap();
        let err = batch.delete("a").unwrap_err();
        assert!(matches!(err, BackendError::InvalidBatch { .. }));
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn batch_of_101_items_is_refused() {
        let ops = (0..101).map(|i| BatchOp::Delete {
            key: format!("k{i}"),
        });
        assert!(matches!(
            Batch::from_ops(ops),
            Err(BackendError::InvalidBatch { .. })
        ));
        let ops = (0..100).map(|i| BatchOp::Delete {
            key: format!("k{i}"),
        });
        assert_eq!(Batch::from_ops(ops).unwrap().len(), 100);
    }

    #[test]
    fn batch_byte_limit_counts_chunks_and_bytes() {
        let mut batch = Batch::new();
        for i in 0..3 {
            batch.put(format!("k{i}"), vec![0; MAX_VALUE_LEN]).unwrap();
        }
        // 3 MiB + keys so far; a fourth MiB crosses 4 MB.
        assert!(batch.put("k3", vec![0; MAX_VALUE_LEN]).is_err());
        assert_eq!(op_weight(MAX_VALUE_LEN), 1 + 3);
        assert_eq!(op_weight(INLINE_VALUE_LEN), 1);
    }

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("").is_err());
        assert!(validate_key("a\0b").is_err());
        assert!(validate_key(&"x".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(validate_key(&"x".repeat(MAX_KEY_LEN)).is_ok());
    }
}
