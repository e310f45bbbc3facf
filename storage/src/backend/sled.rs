//! The optional sled backend (cargo feature `sled`).
//!
//! **Not durable on power loss.** sled's `flush` writes its log with `sync_file_range`, which
//! does not flush the drive's cache or the file's metadata: a write acknowledged here survives
//! the arca process being killed, but may be lost if the machine loses power. sled is also
//! beta software and pulls in unmaintained crates. It is kept because the original design named
//! it, behind the same trait, and never as the default; use [`RedbBackend`](super::redb) for
//! anything you want to keep.
//!
//! Every write is followed by a flush; concurrent writers share sled's flushes, which gives
//! group commit without a writer thread. The flush is sled's blocking `flush`, run on tokio's
//! blocking pool, not `flush_async`: the latter blocks one of sled's own I/O threads until the
//! log buffer is written, and that write is queued on the same small pool, so seven or more
//! concurrent `flush_async` calls occupy every thread and wait forever (sled 0.34.7).

use std::path::Path;

use async_trait::async_trait;

use super::{
    Backend, BackendError, Batch, BatchOp, ListPage, page_from_sorted, validate_key, validate_value,
};

/// A [`Backend`] over a sled database folder.
#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
}

impl SledBackend {
    /// Opens (or creates) the sled database in the folder `path`.
    ///
    /// # Errors
    /// The folder cannot be opened or holds something sled cannot read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        let db = sled::open(path).map_err(BackendError::storage)?;
        Ok(Self { db })
    }

    async fn flushed(&self) -> Result<(), BackendError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(BackendError::storage)?
            .map(drop)
            .map_err(BackendError::storage)
    }
}

fn key_string(key: &sled::IVec) -> Result<String, BackendError> {
    String::from_utf8(key.to_vec()).map_err(BackendError::storage)
}

#[async_trait]
impl Backend for SledBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        validate_key(key)?;
        let value = self.db.get(key).map_err(BackendError::storage)?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        validate_key(key)?;
        validate_value(&value)?;
        self.db.insert(key, value).map_err(BackendError::storage)?;
        self.flushed().await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        self.db.remove(key).map_err(BackendError::storage)?;
        self.flushed().await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError> {
        let cap = limit.clamp(1, super::MAX_LIST_PAGE) + 1;
        let mut keys = Vec::new();
        for entry in self.db.scan_prefix(prefix) {
            let (key, _) = entry.map_err(BackendError::storage)?;
            let key = key_string(&key)?;
            if start_after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            keys.push(key);
            if keys.len() == cap {
                break;
            }
        }
        Ok(page_from_sorted(
            keys.iter().map(String::as_str),
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
        let swapped = self
            .db
            .compare_and_swap(key, expected, new)
            .map_err(BackendError::storage)?
            .is_ok();
        if swapped {
            self.flushed().await?;
        }
        Ok(swapped)
    }

    async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
        let mut sled_batch = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => sled_batch.insert(key.as_bytes(), value),
                BatchOp::Delete { key } => sled_batch.remove(key.as_bytes()),
            }
        }
        self.db
            .apply_batch(sled_batch)
            .map_err(BackendError::storage)?;
        self.flushed().await
    }

    async fn flush(&self) -> Result<(), BackendError> {
        self.flushed().await
    }
}
