//! Barrier operations with injected faults, checked against a `BTreeMap` model.
//!
//! A [`Step`] is one operation and, optionally, a fault: the backend fails its N-th call during
//! that operation (before the call reaches the store, as a failed write leaves a real one). The
//! barrier runs over `FaultyBackend<MemoryBackend>`; after every step the checker asserts that
//!
//! - an operation that returned an error changed nothing, and one that succeeded did exactly
//!   what the model did;
//! - errors have a reason: a storage error only when a fault was armed, `Sealed` only when the
//!   model is sealed, a validation error only for invalid input (and invalid input never
//!   succeeds), an integrity error never (except for the wrong root key);
//! - the store, read through a second barrier straight over the inner backend, equals the
//!   model, every record authenticates, and the barrier's own records are only the keyring.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use arca_storage::backend::faulty::{FaultyBackend, InjectedFault};
use arca_storage::backend::{MAX_BATCH_BYTES, MAX_BATCH_WEIGHT, op_weight, validate_key};
use arca_storage::barrier::{MAX_PLAINTEXT_LEN, RESERVED_PREFIX};
use arca_storage::envelope::{Envelope, OVERHEAD};
use arca_storage::{
    Backend, BackendError, Barrier, BarrierError, BarrierOp, KEY_LEN, MemoryBackend, RootKey,
};

use crate::{block_on, root_key};

/// A path: mostly one of sixteen in a two-level tree, so that operations meet; sometimes any
/// string, to exercise validation.
#[derive(Arbitrary, Debug, Clone)]
pub enum Key {
    /// `kv/<n % 4>/<n / 4 % 4>`.
    Known(u8),
    /// Any string, valid or not.
    Raw(String),
}

impl Key {
    fn path(&self) -> String {
        match self {
            Self::Known(n) => format!("kv/{}/{}", n % 4, n / 4 % 4),
            Self::Raw(s) => s.clone(),
        }
    }
}

/// A listing prefix.
#[derive(Arbitrary, Debug, Clone)]
pub enum Prefix {
    /// Everything.
    All,
    /// `kv/`.
    Kv,
    /// `kv/<n % 4>/`.
    Dir(u8),
    /// Any string.
    Raw(String),
}

impl Prefix {
    fn prefix(&self) -> String {
        match self {
            Self::All => String::new(),
            Self::Kv => "kv/".to_owned(),
            Self::Dir(n) => format!("kv/{}/", n % 4),
            Self::Raw(s) => s.clone(),
        }
    }
}

/// A plaintext.
#[derive(Arbitrary, Debug, Clone)]
pub enum Value {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` copies of `byte`; `u16::MAX` means one byte more than a record may hold.
    Filled {
        /// The length.
        len: u16,
        /// The byte.
        byte: u8,
    },
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Filled {
                len: u16::MAX,
                byte,
            } => vec![*byte; MAX_PLAINTEXT_LEN + 1],
            Self::Filled { len, byte } => vec![*byte; usize::from(*len)],
        }
    }
}

/// One barrier operation.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// `get`.
    Get(Key),
    /// `put`.
    Put(Key, Value),
    /// `delete`.
    Delete(Key),
    /// `list`.
    List(Prefix),
    /// `list_page` from `start_after`, followed page by page to the end.
    ListPages(Prefix, Option<Key>, u8),
    /// `compare_and_swap(key, expected, new)`.
    CompareAndSwap(Key, Option<Value>, Option<Value>),
    /// `batch` of puts (`Some`) and deletes (`None`).
    Batch(Vec<(Key, Option<Value>)>),
    /// `rotate`.
    Rotate,
    /// `rewrap`.
    Rewrap,
    /// `seal`.
    Seal,
    /// `unseal` with the right root key.
    Unseal,
    /// `unseal` with another key.
    UnsealWrongKey,
    /// `initialize` again.
    Initialize,
    /// `flush`.
    Flush,
}

/// An operation and the backend call (1-based, within this operation) to fail, if any.
#[derive(Arbitrary, Debug, Clone)]
pub struct Step {
    /// What to do.
    pub op: Op,
    /// Fail the backend call `fault % 8 + 1` of this operation.
    pub fault: Option<u8>,
}

/// What the store should hold and how the barrier should be.
struct Model {
    records: BTreeMap<String, Vec<u8>>,
    sealed: bool,
    term: u32,
}

/// The world one input runs in.
struct World {
    faulty: Arc<FaultyBackend<MemoryBackend>>,
    barrier: Barrier,
    root: RootKey,
    model: Model,
}

/// Runs `steps` against a fresh, unsealed barrier and checks each against the model.
/// Panics on any divergence.
pub fn model_ops(steps: &[Step]) {
    block_on(async {
        let faulty = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new())));
        let barrier = Barrier::new(faulty.clone());
        let root = root_key();
        barrier.initialize(&root).await.expect("initialize");
        barrier.unseal(&root).await.expect("unseal");
        let mut world = World {
            faulty,
            barrier,
            root,
            model: Model {
                records: BTreeMap::new(),
                sealed: false,
                term: 1,
            },
        };
        for (i, step) in steps.iter().enumerate() {
            world.step(step).await;
            world.check().await.unwrap_or_else(|e| {
                panic!("after step {i} ({step:?}): {e}");
            });
        }
    });
}

fn path_ok(path: &str) -> bool {
    !path.starts_with(RESERVED_PREFIX) && validate_key(path).is_ok()
}

fn value_ok(value: &[u8]) -> bool {
    value.len() <= MAX_PLAINTEXT_LEN
}

/// Whether the barrier must refuse this batch before writing anything.
fn batch_invalid(ops: &[(String, Option<Vec<u8>>)]) -> bool {
    let mut seen = BTreeSet::new();
    let (mut weight, mut bytes) = (0usize, 0usize);
    for (path, value) in ops {
        if !path_ok(path) || value.as_deref().is_some_and(|v| !value_ok(v)) {
            return true;
        }
        if !seen.insert(path.as_str()) {
            return true;
        }
        match value {
            Some(v) => {
                weight += op_weight(v.len() + OVERHEAD);
                bytes += path.len() + v.len() + OVERHEAD;
            }
            None => {
                weight += 1;
                bytes += path.len();
            }
        }
    }
    weight > MAX_BATCH_WEIGHT || bytes > MAX_BATCH_BYTES
}

impl World {
    /// Runs one step, checks its result against the model, and updates the model.
    async fn step(&mut self, step: &Step) {
        match step.fault {
            Some(n) => self.faulty.fail_nth(u64::from(n % 8) + 1),
            // Disarm: a call this far away is never reached.
            None => self.faulty.fail_nth(u64::MAX / 2),
        }
        let armed = step.fault.is_some();
        let sealed = self.model.sealed;
        let b = &self.barrier;
        match &step.op {
            Op::Get(key) => {
                let path = key.path();
                let result = b.get(&path).await;
                let invalid = !path_ok(&path);
                if let Ok(value) = expect(result, armed, sealed, invalid) {
                    let value = value.map(|v| v.expose_secret().to_vec());
                    assert_eq!(
                        value.as_ref(),
                        self.model.records.get(&path),
                        "get {path:?}"
                    );
                }
            }
            Op::Put(key, value) => {
                let (path, value) = (key.path(), value.bytes());
                let result = b.put(&path, &value).await;
                let invalid = !path_ok(&path) || !value_ok(&value);
                if expect(result, armed, sealed, invalid).is_ok() {
                    self.model.records.insert(path, value);
                }
            }
            Op::Delete(key) => {
                let path = key.path();
                let result = b.delete(&path).await;
                if expect(result, armed, sealed, !path_ok(&path)).is_ok() {
                    self.model.records.remove(&path);
                }
            }
            Op::List(prefix) => {
                let prefix = prefix.prefix();
                if let Ok(keys) = expect(b.list(&prefix).await, armed, sealed, false) {
                    assert_eq!(keys, self.model_keys(&prefix, None), "list {prefix:?}");
                }
            }
            Op::ListPages(prefix, start, limit) => {
                let prefix = prefix.prefix();
                let start = start.as_ref().map(Key::path);
                let expected = self.model_keys(&prefix, start.as_deref());
                let mut keys = Vec::new();
                let mut after = start.clone();
                // The keyring can take a page of its own; a page never comes back empty-handed
                // with nothing after it unless the listing is done.
                for _ in 0..expected.len() + 3 {
                    let page = b
                        .list_page(&prefix, after.as_deref(), usize::from(*limit))
                        .await;
                    let Ok(page) = expect(page, armed, sealed, false) else {
                        return;
                    };
                    assert!(page.keys.len() <= usize::from(*limit).max(1));
                    keys.extend(page.keys);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => {
                            assert_eq!(keys, expected, "pages of {prefix:?} after {start:?}");
                            return;
                        }
                    }
                }
                panic!("listing {prefix:?} did not end");
            }
            Op::CompareAndSwap(key, expected, new) => {
                let path = key.path();
                let expected = expected.as_ref().map(Value::bytes);
                let new = new.as_ref().map(Value::bytes);
                let result = b
                    .compare_and_swap(&path, expected.as_deref(), new.as_deref())
                    .await;
                let invalid = !path_ok(&path) || new.as_deref().is_some_and(|v| !value_ok(v));
                if let Ok(swapped) = expect(result, armed, sealed, invalid) {
                    let current = self.model.records.get(&path);
                    assert_eq!(
                        swapped,
                        current == expected.as_ref(),
                        "compare_and_swap {path:?}"
                    );
                    if swapped {
                        match new {
                            Some(v) => self.model.records.insert(path, v),
                            None => self.model.records.remove(&path),
                        };
                    }
                }
            }
            Op::Batch(ops) => {
                let ops: Vec<(String, Option<Vec<u8>>)> = ops
                    .iter()
                    .map(|(k, v)| (k.path(), v.as_ref().map(Value::bytes)))
                    .collect();
                let barrier_ops: Vec<BarrierOp<'_>> = ops
                    .iter()
                    .map(|(path, value)| match value {
                        Some(v) => BarrierOp::Put(path, v),
                        None => BarrierOp::Delete(path),
                    })
                    .collect();
                let result = b.batch(&barrier_ops).await;
                if expect(result, armed, sealed, batch_invalid(&ops)).is_ok() {
                    for (path, value) in ops {
                        match value {
                            Some(v) => self.model.records.insert(path, v),
                            None => self.model.records.remove(&path),
                        };
                    }
                }
            }
            Op::Rotate => {
                if let Ok(term) = expect(b.rotate().await, armed, sealed, false) {
                    assert_eq!(term, self.model.term + 1, "rotate");
                    self.model.term = term;
                }
            }
            Op::Rewrap => {
                let result = b.rewrap().await;
                // A sealed barrier answers `Sealed` at the first record it meets; over a store
                // with no record it has nothing to refuse and reports an empty pass.
                if sealed && matches!(&result, Ok(report) if report.scanned == 0) {
                    return;
                }
                if let Ok(report) = expect(result, armed, sealed, false) {
                    // Nothing runs concurrently and every record is genuine.
                    assert_eq!(report.skipped, 0, "rewrap skipped records: {report:?}");
                    for (path, raw) in self.raw_records().await {
                        let term = Envelope::decode(&raw).expect("a record decodes").term();
                        assert_eq!(term, self.model.term, "{path:?} not rewrapped");
                    }
                }
            }
            Op::Seal => {
                b.seal().await;
                self.model.sealed = true;
            }
            Op::Unseal => {
                if expect(b.unseal(&self.root).await, armed, false, false).is_ok() {
                    self.model.sealed = false;
                }
            }
            Op::UnsealWrongKey => {
                let wrong = RootKey::from_slice(&[0xA5; KEY_LEN]).expect("32 bytes");
                match b.unseal(&wrong).await {
                    Ok(()) => panic!("a wrong root key unsealed the barrier"),
                    Err(BarrierError::Integrity { .. }) => {}
                    Err(err) => assert!(injected(&err) && armed, "unseal: {err:?}"),
                }
            }
            Op::Initialize => match b.initialize(&self.root).await {
                Ok(()) => panic!("an initialized store was initialized again"),
                Err(BarrierError::AlreadyInitialized) => {}
                Err(err) => assert!(injected(&err) && armed, "initialize: {err:?}"),
            },
            Op::Flush => {
                expect(b.flush().await, armed, false, false).ok();
            }
        }
    }

    /// The model's paths under `prefix` after `start_after`.
    fn model_keys(&self, prefix: &str, start_after: Option<&str>) -> Vec<String> {
        self.model
            .records
            .keys()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|a| k.as_str() > a))
            .cloned()
            .collect()
    }

    /// Every record outside the barrier's reserved prefix, read raw from the inner backend.
    async fn raw_records(&self) -> Vec<(String, Vec<u8>)> {
        let inner = self.faulty.inner();
        let mut out = Vec::new();
        for path in inner.list("").await.expect("the inner backend lists") {
            if !path.starts_with(RESERVED_PREFIX) {
                let raw = inner.get(&path).await.expect("get").expect("listed");
                out.push((path, raw));
            }
        }
        out
    }

    /// Compares the barrier's state and the whole store with the model.
    async fn check(&self) -> Result<(), String> {
        if self.barrier.is_sealed() != self.model.sealed {
            return Err(format!("sealed is {}", self.barrier.is_sealed()));
        }
        if let Ok(status) = self.barrier.key_status()
            && status.term != self.model.term
        {
            return Err(format!(
                "active term {} != {}",
                status.term, self.model.term
            ));
        }
        let inner = self.faulty.inner();
        let reserved = inner
            .list(RESERVED_PREFIX)
            .await
            .map_err(|e| e.to_string())?;
        if reserved != [arca_storage::barrier::KEYRING_PATH] {
            return Err(format!("reserved records {reserved:?}"));
        }
        // A second barrier straight over the inner backend sees no faults and the stored
        // keyring, so it also checks that every rotation reached the store.
        let observer = Barrier::new(inner.clone());
        observer
            .unseal(&self.root)
            .await
            .map_err(|e| format!("observer unseal: {e}"))?;
        let term = observer.key_status().map_err(|e| e.to_string())?.term;
        if term != self.model.term {
            return Err(format!(
                "stored keyring at term {term} != {}",
                self.model.term
            ));
        }
        let paths = observer.list("").await.map_err(|e| e.to_string())?;
        let expected: Vec<&String> = self.model.records.keys().collect();
        if paths.iter().collect::<Vec<_>>() != expected {
            return Err(format!("store holds {paths:?}, model {expected:?}"));
        }
        for path in &paths {
            let value = observer
                .get(path)
                .await
                .map_err(|e| format!("{path:?}: {e}"))?
                .ok_or_else(|| format!("{path:?} listed but absent"))?;
            if Some(&value.expose_secret().to_vec()) != self.model.records.get(path) {
                return Err(format!("{path:?} holds another value than the model"));
            }
        }
        Ok(())
    }
}

/// Whether `err` is the fault the [`FaultyBackend`] injects.
fn injected(err: &BarrierError) -> bool {
    match err {
        BarrierError::Backend(BackendError::Storage(source)) => source.is::<InjectedFault>(),
        _ => false,
    }
}

/// Checks that `result` is an error exactly when it may be one, and of an allowed kind:
/// `Sealed` when `sealed`, a validation error when `invalid`, the injected fault when `armed`.
/// Invalid input and a sealed barrier never succeed. Returns the result for the caller's
/// model update (only on `Ok`).
fn expect<T: std::fmt::Debug>(
    result: Result<T, BarrierError>,
    armed: bool,
    sealed: bool,
    invalid: bool,
) -> Result<T, ()> {
    match result {
        Ok(value) => {
            assert!(!sealed, "succeeded while sealed: {value:?}");
            assert!(!invalid, "invalid input accepted: {value:?}");
            Ok(value)
        }
        Err(err) => {
            let allowed = match &err {
                BarrierError::Sealed => sealed,
                BarrierError::ReservedPath { .. }
                | BarrierError::ValueTooLarge { .. }
                | BarrierError::Backend(
                    BackendError::InvalidKey { .. }
                    | BackendError::InvalidBatch { .. }
                    | BackendError::ValueTooLarge { .. },
                ) => invalid,
                other => armed && injected(other),
            };
            assert!(
                allowed,
                "unexpected error {err:?} (fault armed: {armed}, sealed: {sealed}, invalid input: {invalid})"
            );
            Err(())
        }
    }
}
