//! A fault-injecting wrapper for tests and fuzzing.
//!
//! [`FaultyBackend`] forwards every call to another backend, counting them; when told to, it
//! fails the N-th call (or every call) with [`BackendError::Storage`] *before* the call reaches
//! the inner backend, the way a failed write leaves a real store: unchanged. Tests use it to
//! check that the layers above never half-apply an operation and report the failure. It can
//! also slow every write down, like a busy store, so tests can give up on a write under way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{Backend, BackendError, Batch, ListPage};

/// The error an injected fault reports.
#[derive(Debug, thiserror::Error)]
#[error("injected fault")]
pub struct InjectedFault;

/// A [`Backend`] that fails on command. See the module documentation.
#[derive(Debug)]
pub struct FaultyBackend<B: ?Sized> {
    inner: Arc<B>,
    calls: AtomicU64,
    /// Fail the call whose 1-based number equals this; 0 = none.
    fail_at: AtomicU64,
    fail_all: AtomicBool,
    /// How long every write waits before it reaches the inner backend, in microseconds.
    write_delay_us: AtomicU64,
}

impl<B: Backend + ?Sized> FaultyBackend<B> {
    /// Wraps `inner`; no fault is armed.
    pub fn new(inner: Arc<B>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            fail_all: AtomicBool::new(false),
            write_delay_us: AtomicU64::new(0),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    /// Arms a fault for the `n`-th call from now (1 = the next call).
    pub fn fail_nth(&self, n: u64) {
        let now = self.calls.load(Ordering::SeqCst);
        self.fail_at.store(now + n.max(1), Ordering::SeqCst);
    }

    /// Disarms a fault armed with [`FaultyBackend::fail_nth`] that has not fired yet.
    pub fn disarm(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
    }

    /// Fails every call while `on` is true.
    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    /// Makes every later write (put, delete, compare-and-swap, batch) wait `delay` before it
    /// reaches the inner backend; `Duration::ZERO` turns it off.
    pub fn delay_writes(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.write_delay_us.store(micros, Ordering::SeqCst);
    }

    async fn write_delay(&self) {
        let micros = self.write_delay_us.load(Ordering::SeqCst);
        if micros > 0 {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
    }

    /// The number of calls seen so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), BackendError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_all.load(Ordering::SeqCst) || self.fail_at.load(Ordering::SeqCst) == n {
            return Err(BackendError::storage(InjectedFault));
        }
        Ok(())
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for FaultyBackend<B> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        self.check()?;
        self.write_delay().await;
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.check()?;
        self.write_delay().await;
        self.inner.delete(key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError> {
        self.check()?;
        self.inner.list_page(prefix, start_after, limit).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, BackendError> {
        self.check()?;
        self.write_delay().await;
        self.inner.compare_and_swap(key, expected, new).await
    }

    async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
        self.check()?;
        self.write_delay().await;
        self.inner.batch(batch).await
    }

    async fn flush(&self) -> Result<(), BackendError> {
        self.check()?;
        self.inner.flush().await
    }
}
