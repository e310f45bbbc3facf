//! The embedded default backend: one redb file, durable on return, with group commit.
//!
//! redb commits with [`redb::Durability::Immediate`]: `commit` returns only after the data and
//! the new root are fsynced. An fsync costs milliseconds, so one transaction per write would cap
//! arca at a few hundred writes per second. Instead every write goes to one writer thread, which
//! takes all requests waiting at that moment, applies them in arrival order in a single
//! transaction, commits once, and only then acknowledges each of them. N concurrent writers
//! share one fsync; a lone writer pays exactly one, with no added delay. When the previous
//! group held several writers, the writer waits up to [`STRAGGLER_WAIT`] (200 µs) for as many
//! requests before committing, since those writers were woken by the last commit and are about
//! to send again; without it, groups alternate between one request and all the others.
//!
//! Reads run in the calling task on a redb read transaction: they never wait for the writer,
//! and they see every write that has been acknowledged (MVCC snapshot of the last commit).
//!
//! If anything in a group fails (an I/O error while applying, or the commit itself), the whole
//! transaction is aborted and every request in the group gets the error: nothing of it is on
//! disk, which is exactly what an `Err` promises.
//!
//! redb 4.6 panics, instead of returning an error, on some damaged files: one flipped byte in
//! its allocator state or in a B-tree page can trip an assertion or an out-of-bounds index
//! while the file is opened, read or closed (`tests/tamper.rs` walks such flips across a whole
//! file). A damaged file must be an error for the caller, never a crash of the process, so
//! every call into redb runs inside [`contain`], which turns a panic into
//! [`BackendError::Storage`]. After a panic inside a write transaction the writer stops and
//! later writes fail with [`BackendError::Closed`]. This relies on panics unwinding, which the
//! workspace's profiles keep (`panic = "unwind"`).

use std::any::Any;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{
    Backend, BackendError, Batch, BatchOp, ListPage, ListStart, list_start, page_from_sorted,
    validate_key, validate_value,
};

/// The one table arca keeps in the file: key path → opaque bytes.
const RECORDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("arca_records");

/// The most requests one group commit takes, so a flood of writers still gets acknowledgements
/// in bounded batches.
const MAX_GROUP_REQUESTS: usize = 512;

/// The most value bytes one group commit takes.
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// The longest the writer waits for the writers of the previous group to send their next
/// request. Far below an fsync (hundreds of microseconds to milliseconds), so waiting costs
/// less than the extra commit it saves.
const STRAGGLER_WAIT: Duration = Duration::from_micros(200);

/// How writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitMode {
    /// Concurrent writes share one fsync'd commit (the default).
    #[default]
    Group,
    /// Every write is its own fsync'd transaction. Same durability, far lower throughput;
    /// kept as the baseline for benchmarks.
    PerWrite,
}

/// A [`Backend`] over one redb file.
pub struct RedbBackend {
    /// `None` only once dropped, so that `Drop` can close the database inside [`contain`].
    db: Option<Arc<redb::Database>>,
    writer: Option<mpsc::Sender<WriteRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend").finish_non_exhaustive()
    }
}

enum WriteOp {
    Put(String, Vec<u8>),
    Delete(String),
    Cas {
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    Batch(Vec<BatchOp>),
}

impl WriteOp {
    fn bytes(&self) -> usize {
        match self {
            Self::Put(_, v) => v.len(),
            Self::Delete(_) => 0,
            Self::Cas { new, .. } => new.as_ref().map_or(0, Vec::len),
            Self::Batch(ops) => ops
                .iter()
                .map(|op| match op {
                    BatchOp::Put { value, .. } => value.len(),
                    BatchOp::Delete { .. } => 0,
                })
                .sum(),
        }
    }
}

/// redb's page cache unless configured. Small on purpose: the barrier's record cache holds the
/// hot records above it and the kernel's page cache holds the file below it, so a large cache
/// here only keeps a second copy of pages. Measured on random KV reads at 16 connections, 4 MiB
/// read as fast as 64 MiB among 10,000 secrets and among 1,000,000 (17.1k against 16.8k/s),
/// with 34 MiB resident instead of 114 MiB (see the README's storage engine section). Half of
/// it bounds the pages a write transaction holds before redb flushes them early.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 4 * 1024 * 1024;

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<bool, BackendError>>,
}

impl RedbBackend {
    /// Opens the store at `path`, creating the file if it does not exist, with group commit.
    ///
    /// # Errors
    /// The file cannot be opened or created, is locked by another process, or is not a redb
    /// file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        Self::open_with(path, CommitMode::Group)
    }

    /// Opens the store at `path` with the given commit mode.
    ///
    /// # Errors
    /// As [`RedbBackend::open`].
    pub fn open_with(path: impl AsRef<Path>, mode: CommitMode) -> Result<Self, BackendError> {
        Self::open_with_cache(path, mode, DEFAULT_PAGE_CACHE_BYTES)
    }

    /// Opens the store at `path` with the given commit mode and at most `page_cache_bytes` of
    /// redb's in-memory page cache (redb's own default is 1 GiB, which a store of a million
    /// secrets fills: resident memory then grows with the store).
    ///
    /// # Errors
    /// As [`RedbBackend::open`].
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        mode: CommitMode,
        page_cache_bytes: usize,
    ) -> Result<Self, BackendError> {
        let path = path.as_ref();
        if !path.exists() {
            create_atomically(path)?;
        }
        let db = contain(|| {
            let db = redb::Builder::new()
                .set_cache_size(page_cache_bytes)
                .create(path)
                .map_err(BackendError::storage)?;
            // Create the table up front so readers never meet a missing table. Only when it is
            // missing: a write transaction commits with an fsync even when it changes nothing,
            // and every start would pay for it.
            let exists = match db
                .begin_read()
                .map_err(BackendError::storage)?
                .open_table(RECORDS)
            {
                Ok(_) => true,
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(err) => return Err(BackendError::storage(err)),
            };
            if !exists {
                let txn = db.begin_write().map_err(BackendError::storage)?;
                txn.open_table(RECORDS).map_err(BackendError::storage)?;
                txn.commit().map_err(BackendError::storage)?;
            }
            Ok(db)
        })?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("arca-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx, mode))
            .map_err(BackendError::storage)?;
        Ok(Self {
            db: Some(db),
            writer: Some(tx),
            thread: Some(thread),
        })
    }

    fn db(&self) -> Result<&redb::Database, BackendError> {
        self.db.as_deref().ok_or(BackendError::Closed)
    }

    async fn submit(&self, op: WriteOp) -> Result<bool, BackendError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or(BackendError::Closed)?
            .send(WriteRequest { op, reply })
            .map_err(|_| BackendError::Closed)?;
        rx.await.map_err(|_| BackendError::Closed)?
    }
}

impl Drop for RedbBackend {
    fn drop(&mut self) {
        // Closing the channel stops the writer after the requests already queued; joining it
        // releases the file so the same path can be opened again at once.
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Closing writes the allocator state, which can panic on a damaged file.
        if let Some(db) = self.db.take() {
            let _ = contain(move || {
                drop(db);
                Ok(())
            });
        }
    }
}

/// Runs `f`, turning a panic inside redb into [`BackendError::Storage`] (see the module
/// documentation for why).
fn contain<T>(f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panicked(&*payload)))
}

fn panicked(payload: &(dyn Any + Send)) -> BackendError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(%message, "redb panicked; the database file is probably damaged");
    BackendError::Storage(format!("redb panicked: {message}").into())
}

/// Creates a new store file so that it appears at `path` only once it is complete.
///
/// redb writes a new file's header, fsyncs, and only then writes its magic number: a crash in
/// between leaves a file that redb refuses forever ("magic number mismatch"). So the file is
/// built under a temporary name in the same folder, with its table committed, then linked into
/// place (a hard link never replaces an existing file, so a concurrent creator wins cleanly),
/// and the folder is fsynced. Temporary files left by an earlier crash are removed.
fn create_atomically(path: &Path) -> Result<(), BackendError> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        BackendError::storage(std::io::Error::other("store path has no file name"))
    })?;
    let stale_prefix = format!(".{name}.creating-");
    if let Ok(entries) = std::fs::read_dir(&folder) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&stale_prefix)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let mut suffix = [0u8; 8];
    crate::keys::fill_random(&mut suffix).map_err(BackendError::storage)?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = folder.join(format!("{stale_prefix}{suffix}"));
    contain(|| {
        let db = redb::Database::create(&tmp).map_err(BackendError::storage)?;
        let txn = db.begin_write().map_err(BackendError::storage)?;
        txn.open_table(RECORDS).map_err(BackendError::storage)?;
        txn.commit().map_err(BackendError::storage)?;
        Ok(())
    })?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        // Someone else created the store first: theirs is complete, use it.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(BackendError::storage(err)),
    }
    std::fs::File::open(&folder)
        .and_then(|dir| dir.sync_all())
        .map_err(BackendError::storage)
}

fn writer_loop(db: &redb::Database, rx: &mpsc::Receiver<WriteRequest>, mode: CommitMode) {
    // The concurrency the writer currently expects: the size of recent groups, lowered by one
    // per commit when fewer arrive, so one late writer does not halve the next group.
    let mut expected = 1usize;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        if mode == CommitMode::Group {
            let mut bytes = group[0].op.bytes();
            let full = |group: &Vec<WriteRequest>, bytes: usize| {
                group.len() >= MAX_GROUP_REQUESTS || bytes >= MAX_GROUP_BYTES
            };
            while !full(&group, bytes) {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += req.op.bytes();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            // Writers acknowledged by the previous commit are still waking up and sending
            // their next request. Wait briefly for as many as took part last time, so the
            // group does not commit with the first one or two alone and leave the rest for
            // another fsync. A lone writer (last group of one) never waits.
            if group.len() < expected {
                let deadline = Instant::now() + STRAGGLER_WAIT;
                while group.len() < expected && !full(&group, bytes) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(req) => {
                            bytes += req.op.bytes();
                            group.push(req);
                        }
                        Err(_) => break,
                    }
                }
            }
            expected = group.len().max(expected.saturating_sub(1));
        }
        match catch_unwind(AssertUnwindSafe(|| apply_group(db, &group))) {
            Ok(Ok(results)) => {
                for (req, result) in group.into_iter().zip(results) {
                    let _ = req.reply.send(Ok(result));
                }
            }
            Err(payload) => {
                // redb's state after a panic inside a write transaction is unknown: answer
                // this group with the error and stop, so later writes fail as `Closed`.
                let message = panicked(&*payload).to_string();
                for req in group {
                    let _ = req
                        .reply
                        .send(Err(BackendError::Storage(message.clone().into())));
                }
                return;
            }
            Ok(Err(err)) => {
                let message = err.to_string();
                tracing::error!(error = %message, requests = group.len(), "redb commit failed");
                for req in group {
                    let _ = req
                        .reply
                        .send(Err(BackendError::Storage(message.clone().into())));
                }
            }
        }
    }
}

/// Applies every request of a group in one transaction and commits it; returns each request's
/// result (whether a compare-and-swap swapped; `true` for the others).
fn apply_group(db: &redb::Database, group: &[WriteRequest]) -> Result<Vec<bool>, redb::Error> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(group.len());
    {
        let mut table = txn.open_table(RECORDS)?;
        for req in group {
            let result = match &req.op {
                WriteOp::Put(key, value) => {
                    table.insert(key.as_str(), value.as_slice())?;
                    true
                }
                WriteOp::Delete(key) => {
                    table.remove(key.as_str())?;
                    true
                }
                WriteOp::Cas { key, expected, new } => {
                    let current = table.get(key.as_str())?;
                    let matches = current.as_ref().map(|v| v.value()) == expected.as_deref();
                    drop(current);
                    if matches {
                        match new {
                            Some(value) => {
                                table.insert(key.as_str(), value.as_slice())?;
                            }
                            None => {
                                table.remove(key.as_str())?;
                            }
                        }
                    }
                    matches
                }
                WriteOp::Batch(ops) => {
                    for op in ops {
                        match op {
                            BatchOp::Put { key, value } => {
                                table.insert(key.as_str(), value.as_slice())?;
                            }
                            BatchOp::Delete { key } => {
                                table.remove(key.as_str())?;
                            }
                        }
                    }
                    true
                }
            };
            results.push(result);
        }
    }
    txn.commit()?;
    Ok(results)
}

#[async_trait]
impl Backend for RedbBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        validate_key(key)?;
        let db = self.db()?;
        contain(|| {
            let txn = db.begin_read().map_err(BackendError::storage)?;
            let table = txn.open_table(RECORDS).map_err(BackendError::storage)?;
            let value = table.get(key).map_err(BackendError::storage)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        validate_key(key)?;
        validate_value(&value)?;
        self.submit(WriteOp::Put(key.to_owned(), value))
            .await
            .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        validate_key(key)?;
        self.submit(WriteOp::Delete(key.to_owned())).await.map(drop)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError> {
        let db = self.db()?;
        let keys = contain(|| {
            let txn = db.begin_read().map_err(BackendError::storage)?;
            let table = txn.open_table(RECORDS).map_err(BackendError::storage)?;
            let lower = match list_start(prefix, start_after) {
                ListStart::From(k) => Bound::Included(k),
                ListStart::After(k) => Bound::Excluded(k),
            };
            let range = table
                .range::<&str>((lower, Bound::Unbounded))
                .map_err(BackendError::storage)?;
            // Collect the keys of one page (plus one to know whether more follow); a storage
            // error part way through fails the whole page.
            let mut keys = Vec::new();
            let cap = limit.clamp(1, super::MAX_LIST_PAGE) + 1;
            for entry in range {
                let (key, _) = entry.map_err(BackendError::storage)?;
                let key = key.value();
                if !key.starts_with(prefix) || keys.len() == cap {
                    break;
                }
                keys.push(key.to_owned());
            }
            Ok(keys)
        })?;
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
        self.submit(WriteOp::Cas {
            key: key.to_owned(),
            expected: expected.map(<[u8]>::to_vec),
            new,
        })
        .await
    }

    async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.submit(WriteOp::Batch(batch.into_ops()))
            .await
            .map(drop)
    }

    async fn flush(&self) -> Result<(), BackendError> {
        // Every acknowledged write was committed with Durability::Immediate.
        Ok(())
    }
}
