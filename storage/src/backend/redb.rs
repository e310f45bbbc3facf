//! The embedded default backend: one redb file, durable on return, with group commit.
//!
//! redb commits with [`redb::Durability::Immediate`]: `commit` returns only after the data and
//! the new root are fsynced. An fsync costs milliseconds, so one transaction per write would cap
//! arca at a few hundred writes per second. Instead every write goes to one writer thread, which
//! takes all requests waiting at that moment, applies them in arrival order in a single
//! transaction, commits once, and only then acknowledges each of them. N concurrent writers
//! share one fsync; a lone writer pays exactly one, with no added delay (the writer never waits
//! for a group to fill).
//!
//! Reads run in the calling task on a redb read transaction: they never wait for the writer,
//! and they see every write that has been acknowledged (MVCC snapshot of the last commit).
//!
//! If anything in a group fails (an I/O error while applying, or the commit itself), the whole
//! transaction is aborted and every request in the group gets the error: nothing of it is on
//! disk, which is exactly what an `Err` promises.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

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
    db: Arc<redb::Database>,
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
        let db = redb::Database::create(path.as_ref()).map_err(BackendError::storage)?;
        // Create the table up front so readers never meet a missing table.
        let txn = db.begin_write().map_err(BackendError::storage)?;
        txn.open_table(RECORDS).map_err(BackendError::storage)?;
        txn.commit().map_err(BackendError::storage)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("arca-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx, mode))
            .map_err(BackendError::storage)?;
        Ok(Self {
            db,
            writer: Some(tx),
            thread: Some(thread),
        })
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
    }
}

fn writer_loop(db: &redb::Database, rx: &mpsc::Receiver<WriteRequest>, mode: CommitMode) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        if mode == CommitMode::Group {
            let mut bytes = group[0].op.bytes();
            while group.len() < MAX_GROUP_REQUESTS && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += req.op.bytes();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
        }
        match apply_group(db, &group) {
            Ok(results) => {
                for (req, result) in group.into_iter().zip(results) {
                    let _ = req.reply.send(Ok(result));
                }
            }
            Err(err) => {
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
        let txn = self.db.begin_read().map_err(BackendError::storage)?;
        let table = txn.open_table(RECORDS).map_err(BackendError::storage)?;
        let value = table.get(key).map_err(BackendError::storage)?;
        Ok(value.map(|v| v.value().to_vec()))
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
        let txn = self.db.begin_read().map_err(BackendError::storage)?;
        let table = txn.open_table(RECORDS).map_err(BackendError::storage)?;
        let lower = match list_start(prefix, start_after) {
            ListStart::From(k) => Bound::Included(k),
            ListStart::After(k) => Bound::Excluded(k),
        };
        let range = table
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(BackendError::storage)?;
        // Collect the keys of one page (plus one to know whether more follow); a storage error
        // part way through fails the whole page.
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
