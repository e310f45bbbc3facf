//! An in-memory backend for tests, fuzzing and ephemeral harnesses.
//!
//! Everything lives in one `BTreeMap` behind a lock and is gone when the value is dropped.
//! It keeps every contract of [`Backend`] except durability across processes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;

use super::{
    Backend, BackendError, Batch, BatchOp, ListPage, ListStart, list_start, page_from_sorted,
    validate_key, validate_value,
};

/// A [`Backend`] that keeps its records in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of records, for tests.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// A poisoned lock only means another thread panicked while holding it; every mutation below
// is a single map operation that cannot leave the map half-changed, so the data stays valid.
#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        validate_key(key)?;
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.get(key).cloned())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        validate_key(key)?;
        validate_value(&value)?;
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(key);
        Ok(())
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let lower = match list_start(prefix, start_after) {
            ListStart::From(k) => Bound::Included(k),
            ListStart::After(k) => Bound::Excluded(k),
        };
        let range = map.range::<str, _>((lower, Bound::Unbounded));
        Ok(page_from_sorted(
            range.map(|(k, _)| k.as_str()),
            prefix,
            limit,
        ))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, BackendError> {
        validate_key(key)?;
        if let Some(value) = &new {
            validate_value(value)?;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => map.insert(key.to_owned(), value),
            None => map.remove(key),
        };
        Ok(true)
    }

    async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => {
                    map.insert(key, value);
                }
                BatchOp::Delete { key } => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
