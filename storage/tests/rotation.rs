//! Keyring rotation and rewrap under concurrent readers and writers, over memory and redb:
//! readers only ever see values that were written, writers never fail, and after a final
//! rewrap every record is sealed under the active term.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arca_storage::envelope::Envelope;
use arca_storage::{
    Backend, BackendError, Barrier, BarrierOp, Batch, ListPage, MemoryBackend, RedbBackend, RootKey,
};
use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 6;
const READERS: usize = 3;
const ROTATIONS: u32 = 5;

/// Every value ever written (or about to be) under each path; `None` records a delete.
type Written = Arc<Mutex<HashMap<String, HashSet<Option<Vec<u8>>>>>>;

fn record(written: &Written, path: &str, value: Option<&[u8]>) {
    written
        .lock()
        .unwrap()
        .entry(path.to_owned())
        .or_default()
        .insert(value.map(<[u8]>::to_vec));
}

fn path(writer: usize, key: usize) -> String {
    format!("w{writer}/k{key}")
}

/// One writer: rewrites its own keys with put, compare-and-swap, batch and delete, and
/// returns what each key must hold at the end. Every value is registered before it is written,
/// so a reader may see it as soon as it lands.
async fn writer(
    barrier: Arc<Barrier>,
    written: Written,
    id: usize,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, Option<Vec<u8>>>, u64) {
    let mut expected: BTreeMap<String, Option<Vec<u8>>> = (0..KEYS_PER_WRITER)
        .map(|k| {
            (
                path(id, k),
                Some(format!("{}=seed", path(id, k)).into_bytes()),
            )
        })
        .collect();
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) || round < 30 {
        round += 1;
        let key = (round as usize * 7 + id) % KEYS_PER_WRITER;
        let p = path(id, key);
        // Now and then a delete.
        if round % 15 == 2 {
            record(&written, &p, None);
            barrier.delete(&p).await.unwrap();
            expected.insert(p, None);
            tokio::task::yield_now().await;
            continue;
        }
        let value = format!("{p}=r{round}").into_bytes();
        record(&written, &p, Some(&value));
        match round % 5 {
            // Compare-and-swap against the value this writer knows is there: only this
            // writer writes the key, so it must swap, even while a rewrap re-encrypts it.
            0 => {
                let current = expected[&p].clone();
                let swapped = barrier
                    .compare_and_swap(&p, current.as_deref(), Some(&value))
                    .await
                    .unwrap();
                assert!(swapped, "{p}: compare-and-swap lost to a rewrap");
            }
            // A batch over two of its keys.
            1 => {
                let other = path(id, (key + 1) % KEYS_PER_WRITER);
                let other_value = format!("{other}=b{round}").into_bytes();
                record(&written, &other, Some(&other_value));
                barrier
                    .batch(&[
                        BarrierOp::Put(&p, &value),
                        BarrierOp::Put(&other, &other_value),
                    ])
                    .await
                    .unwrap();
                expected.insert(other, Some(other_value));
            }
            _ => barrier.put(&p, &value).await.unwrap(),
        }
        expected.insert(p, Some(value));
        tokio::task::yield_now().await;
    }
    (expected, round)
}

/// One reader: reads every key over and over; each read must succeed and return a value that
/// was written for that key.
async fn reader(barrier: Arc<Barrier>, written: Written, stop: Arc<AtomicBool>) -> u64 {
    let mut reads = 0u64;
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let p = path(n % WRITERS, (n / WRITERS) % KEYS_PER_WRITER);
        let got = match barrier.get(&p).await {
            Ok(got) => got.map(|v| v.expose_secret().to_vec()),
            Err(err) => panic!("reading {p} during rotation failed: {err:?}"),
        };
        assert!(
            written.lock().unwrap()[&p].contains(&got),
            "{p}: read a value that was never written ({:?})",
            got.map(|v| String::from_utf8_lossy(&v).into_owned())
        );
        if n.is_multiple_of(50) {
            let listed = barrier.list("w").await.unwrap();
            let written = written.lock().unwrap();
            assert!(listed.iter().all(|k| written.contains_key(k)), "{listed:?}");
        }
        reads += 1;
        tokio::task::yield_now().await;
    }
    reads
}

async fn rotate_under_load(backend: Arc<dyn Backend>) {
    let barrier = Arc::new(Barrier::new(Arc::clone(&backend)));
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();

    let written: Written = Arc::default();
    for w in 0..WRITERS {
        for k in 0..KEYS_PER_WRITER {
            let p = path(w, k);
            let value = format!("{p}=seed").into_bytes();
            record(&written, &p, Some(&value));
            barrier.put(&p, &value).await.unwrap();
        }
    }

    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writer(
                Arc::clone(&barrier),
                Arc::clone(&written),
                id,
                Arc::clone(&stop_writers),
            ))
        })
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            tokio::spawn(reader(
                Arc::clone(&barrier),
                Arc::clone(&written),
                Arc::clone(&stop_readers),
            ))
        })
        .collect();

    // Rotate while they run, rewrapping inline and in the background, overlapping passes.
    let mut background = Vec::new();
    for i in 0..ROTATIONS {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(barrier.rotate().await.unwrap(), i + 2);
        if i.is_multiple_of(2) {
            background.push(barrier.spawn_rewrap());
        } else {
            let report = barrier.rewrap().await.unwrap();
            assert!(report.scanned <= (WRITERS * KEYS_PER_WRITER) as u64);
            assert!(report.rewrapped + report.skipped <= report.scanned);
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    stop_writers.store(true, Ordering::SeqCst);

    let mut expected = BTreeMap::new();
    let mut writes = 0;
    for handle in writers {
        let (map, rounds) = handle.await.unwrap();
        expected.extend(map);
        writes += rounds;
    }
    for handle in background {
        handle.await.unwrap().unwrap();
    }
    stop_readers.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for handle in readers {
        reads += handle.await.unwrap();
    }
    assert!(
        writes >= (WRITERS * 30) as u64 && reads > 0,
        "{writes} writes, {reads} reads"
    );

    // Every key holds its last written value.
    let term = barrier.key_status().unwrap().term;
    assert_eq!(term, ROTATIONS + 1);
    for (p, value) in &expected {
        let got = barrier.get(p).await.unwrap();
        assert_eq!(got.map(|v| v.expose_secret().to_vec()), *value, "{p}");
    }
    let live = expected.values().filter(|v| v.is_some()).count() as u64;

    // A final rewrap, with nothing else running, moves every record to the active term.
    let report = barrier.rewrap().await.unwrap();
    assert_eq!(report.scanned, live);
    assert_eq!(report.skipped, 0);
    let raw = barrier.backend();
    let keys = raw.list("").await.unwrap();
    assert_eq!(keys.len() as u64, live + 1, "the records and the keyring");
    for key in keys {
        let bytes = raw.get(&key).await.unwrap().unwrap();
        let envelope = Envelope::decode(&bytes).unwrap();
        if key == "_barrier/keyring" {
            assert_eq!(envelope.term(), 0);
        } else {
            assert_eq!(envelope.term(), term, "{key} is not on the active term");
        }
    }
    // Nothing left to do: a second pass rewraps nothing.
    let again = barrier.rewrap().await.unwrap();
    assert_eq!((again.rewrapped, again.skipped), (0, 0));

    // The rotated keyring and the rewrapped records survive a seal and unseal.
    barrier.seal().await;
    barrier.unseal(&root).await.unwrap();
    assert_eq!(barrier.key_status().unwrap().term, term);
    for (p, value) in &expected {
        let got = barrier.get(p).await.unwrap();
        assert_eq!(got.map(|v| v.expose_secret().to_vec()), *value, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_concurrent_reads_and_writes_memory() {
    rotate_under_load(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_concurrent_reads_and_writes_redb() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(dir.path().join("rotation.redb")).unwrap();
    rotate_under_load(Arc::new(backend)).await;
}

/// A memory backend whose reads of one path stop at a gate until the test opens it, so a
/// read can be held between the moment the barrier took its keys and the moment the record
/// comes back, as a slow network backend would hold it.
struct GatedBackend {
    inner: MemoryBackend,
    gated_path: Mutex<Option<String>>,
    arrived: Notify,
    gate: Semaphore,
}

impl GatedBackend {
    fn new() -> Self {
        Self {
            inner: MemoryBackend::new(),
            gated_path: Mutex::new(None),
            arrived: Notify::new(),
            gate: Semaphore::new(0),
        }
    }

    fn hold_next_read_of(&self, path: &str) {
        *self.gated_path.lock().unwrap() = Some(path.to_owned());
    }
}

#[async_trait]
impl Backend for GatedBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let gated = {
            let mut gated = self.gated_path.lock().unwrap();
            if gated.as_deref() == Some(key) {
                gated.take()
            } else {
                None
            }
        };
        if gated.is_some() {
            self.arrived.notify_one();
            self.gate.acquire().await.unwrap().forget();
        }
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BackendError> {
        self.inner.list_page(prefix, start_after, limit).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, BackendError> {
        self.inner.compare_and_swap(key, expected, new).await
    }
    async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
        self.inner.batch(batch).await
    }
    async fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush().await
    }
}

/// Starts `op` with its read of `k` held at the gate, rotates and rewrites `k` under the new
/// term, then lets the read finish.
async fn overlap_with_rotation<F, T>(op: F) -> T
where
    F: FnOnce(Arc<Barrier>) -> tokio::task::JoinHandle<T>,
{
    let backend = Arc::new(GatedBackend::new());
    let barrier = Arc::new(Barrier::new(Arc::clone(&backend) as Arc<dyn Backend>));
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();
    barrier.put("k", b"v1").await.unwrap();

    backend.hold_next_read_of("k");
    let arrived = backend.arrived.notified();
    let task = op(Arc::clone(&barrier));
    arrived.await;
    // The operation is inside its read of "k". Rotate and rewrite "k" under term 2.
    assert_eq!(barrier.rotate().await.unwrap(), 2);
    barrier.put("k", b"v2").await.unwrap();
    let raw = backend.inner.get("k").await.unwrap().unwrap();
    assert_eq!(Envelope::decode(&raw).unwrap().term(), 2);
    backend.gate.add_permits(1);
    task.await.unwrap()
}

#[tokio::test]
async fn a_read_overlapping_a_rotation_returns_a_written_value() {
    let got = overlap_with_rotation(|barrier| {
        tokio::spawn(async move {
            barrier
                .get("k")
                .await
                .map(|v| v.map(|p| p.expose_secret().to_vec()))
        })
    })
    .await;
    match got {
        Ok(Some(value)) => assert!(value == b"v1" || value == b"v2", "{value:?}"),
        other => panic!("a read that overlapped a rotation failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_compare_and_swap_overlapping_a_rotation_is_decided_on_the_plaintext() {
    let swapped = overlap_with_rotation(|barrier| {
        tokio::spawn(async move {
            let swapped = barrier
                .compare_and_swap("k", Some(b"v2"), Some(b"v3"))
                .await;
            let now = barrier
                .get("k")
                .await
                .unwrap()
                .unwrap()
                .expose_secret()
                .to_vec();
            (swapped.map_err(|e| format!("{e:?}")), now)
        })
    })
    .await;
    // Whichever value it read, the swap is decided on the plaintext, never an error.
    match swapped {
        (Ok(true), now) => assert_eq!(now, b"v3"),
        (Ok(false), now) => assert_eq!(now, b"v2"),
        (Err(err), _) => panic!("a compare-and-swap that overlapped a rotation failed: {err}"),
    }
}
