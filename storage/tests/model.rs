//! Model-based tests of the barrier: random operation sequences with faults injected at random
//! points, checked step by step against a `BTreeMap` model. An operation that returns `Err`
//! must have changed nothing; one that returns `Ok` must match the model exactly. The same
//! sequences run over memory, redb, and (feature `dynamodb`) DynamoDB on moto's server.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "dynamodb")]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arca_storage::backend::faulty::FaultyBackend;
use arca_storage::envelope::Envelope;
use arca_storage::{
    Backend, BackendError, Barrier, BarrierError, BarrierOp, CommitMode, MemoryBackend,
    RedbBackend, RootKey,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// The paths operations touch: few, with shared prefixes, so collisions and prefix boundaries
/// come up often.
const KEYS: [&str; 7] = ["a", "a/1", "a/2", "a0", "b/1", "b/2", "c"];
/// A path reserved for the barrier; every operation on it is refused.
const RESERVED: &str = "_barrier/keyring";
/// Prefixes listed.
const PREFIXES: [&str; 7] = ["", "a", "a/", "b/", "b/2", "c", "z"];

#[derive(Debug, Clone)]
enum Expect {
    /// `None`: the path is expected absent.
    Absent,
    /// Whatever the model holds now (absent or a value): the swap must happen.
    Current,
    /// A given value, which may or may not be the stored one.
    Value(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Op {
    Put(&'static str, Vec<u8>),
    Get(&'static str),
    Delete(&'static str),
    Cas(&'static str, Expect, Option<Vec<u8>>),
    /// `None` deletes.
    Batch(Vec<(&'static str, Option<Vec<u8>>)>),
    List(&'static str),
    Rotate,
    Rewrap,
    SealUnseal,
}

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![15 => proptest::sample::select(&KEYS[..]), 1 => Just(RESERVED)]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    // Tiny values from a tiny alphabet, so a guessed compare-and-swap value often matches.
    proptest::collection::vec(0u8..3, 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Absent),
        Just(Expect::Current),
        value().prop_map(Expect::Value)
    ];
    prop_oneof![
        6 => (path(), value()).prop_map(|(p, v)| Op::Put(p, v)),
        3 => path().prop_map(Op::Get),
        3 => path().prop_map(Op::Delete),
        5 => (path(), expect, proptest::option::of(value()))
            .prop_map(|(p, e, v)| Op::Cas(p, e, v)),
        3 => proptest::collection::vec((path(), proptest::option::of(value())), 0..5)
            .prop_map(Op::Batch),
        2 => proptest::sample::select(&PREFIXES[..]).prop_map(Op::List),
        1 => Just(Op::Rotate),
        1 => Just(Op::Rewrap),
        1 => Just(Op::SealUnseal),
    ]
}

/// One step: an operation, and maybe a fault on the n-th backend call it makes.
fn steps(max: usize) -> impl Strategy<Value = Vec<(Op, Option<u64>)>> {
    proptest::collection::vec((op(), proptest::option::weighted(0.3, 1u64..4)), 1..max)
}

type Model = BTreeMap<String, Vec<u8>>;

struct Harness {
    faulty: Arc<FaultyBackend<dyn Backend>>,
    barrier: Barrier,
    /// A second barrier straight over the inner store, reloaded before every check: what a
    /// fresh process would see.
    checker: Barrier,
    root: RootKey,
    term: u32,
    model: Model,
    /// Whether the barrier under test has a read cache (then a read may be answered without
    /// reaching the backend, and an injected fault need not surface).
    cached: bool,
}

fn is_fault(err: &BarrierError) -> bool {
    matches!(err, BarrierError::Backend(BackendError::Storage(_)))
}

impl Harness {
    async fn new(inner: Arc<dyn Backend>, cache_bytes: usize) -> Self {
        let faulty = Arc::new(FaultyBackend::new(Arc::clone(&inner)));
        let barrier =
            Barrier::with_cache_bytes(Arc::clone(&faulty) as Arc<dyn Backend>, cache_bytes);
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        Self {
            faulty,
            barrier,
            checker: Barrier::new(inner),
            root,
            term: 1,
            model: Model::new(),
            cached: cache_bytes > 0,
        }
    }

    /// Every raw record of the inner store, the barrier's own included.
    async fn raw(&self) -> BTreeMap<String, Vec<u8>> {
        let inner = self.faulty.inner();
        let mut out = BTreeMap::new();
        for key in inner.list("").await.unwrap() {
            let value = inner.get(&key).await.unwrap().unwrap();
            out.insert(key, value);
        }
        out
    }

    fn disarm(&self) {
        // No disarm call exists: push the armed call out of reach.
        self.faulty.fail_nth(u64::MAX / 2);
    }

    /// The store, read through both barriers, equals the model; the keyring is at `term`.
    async fn check(&self) {
        let keys: Vec<String> = self.model.keys().cloned().collect();
        assert_eq!(self.barrier.list("").await.unwrap(), keys);
        for (path, value) in &self.model {
            let got = self.barrier.get(path).await.unwrap().unwrap();
            assert_eq!(got.expose_secret(), &value[..], "{path}");
        }
        for path in KEYS {
            if !self.model.contains_key(path) {
                assert!(self.barrier.get(path).await.unwrap().is_none(), "{path}");
            }
        }
        assert_eq!(self.barrier.key_status().unwrap().term, self.term);

        self.checker.unseal(&self.root).await.unwrap();
        assert_eq!(self.checker.key_status().unwrap().term, self.term);
        assert_eq!(self.checker.list("").await.unwrap(), keys);
        for (path, value) in &self.model {
            let got = self.checker.get(path).await.unwrap().unwrap();
            assert_eq!(got.expose_secret(), &value[..], "{path}");
        }
    }

    async fn step(&mut self, op: &Op, fault: Option<u64>) {
        let before = self.raw().await;
        if let Some(n) = fault {
            self.faulty.fail_nth(n);
        }
        // Whether the operation may leave the raw bytes changed when it fails (rewrap
        // re-encrypts records without changing what they decrypt to; seal persists a count).
        let mut may_touch_raw_on_err = false;
        // Whether the operation must be refused before it reaches the backend.
        let mut refused = match op {
            Op::Put(p, _) | Op::Get(p) | Op::Delete(p) | Op::Cas(p, _, _) => *p == RESERVED,
            _ => false,
        };
        let result: Result<(), BarrierError> = match op {
            Op::Put(path, value) => {
                let r = self.barrier.put(path, value).await;
                if r.is_ok() {
                    self.model.insert((*path).to_owned(), value.clone());
                }
                r
            }
            Op::Get(path) => {
                let r = self.barrier.get(path).await;
                if let Ok(got) = &r {
                    assert_eq!(
                        got.as_ref().map(|p| p.expose_secret().to_vec()),
                        self.model.get(*path).cloned(),
                        "get {path}"
                    );
                    assert_eq!(self.raw().await, before, "a read wrote");
                }
                r.map(drop)
            }
            Op::Delete(path) => {
                let r = self.barrier.delete(path).await;
                if r.is_ok() {
                    self.model.remove(*path);
                }
                r
            }
            Op::Cas(path, expect, new) => {
                let expected = match expect {
                    Expect::Absent => None,
                    Expect::Current => self.model.get(*path).cloned(),
                    Expect::Value(v) => Some(v.clone()),
                };
                let r = self
                    .barrier
                    .compare_and_swap(path, expected.as_deref(), new.as_deref())
                    .await;
                if let Ok(swapped) = r {
                    assert_eq!(
                        swapped,
                        self.model.get(*path) == expected.as_ref(),
                        "cas {path} expected {expected:?}"
                    );
                    if matches!(expect, Expect::Current) {
                        assert!(swapped, "cas with the current value must swap");
                    }
                    if swapped {
                        match new {
                            Some(v) => self.model.insert((*path).to_owned(), v.clone()),
                            None => self.model.remove(*path),
                        };
                    } else {
                        assert_eq!(self.raw().await, before, "a failed swap wrote");
                    }
                }
                r.map(drop)
            }
            Op::Batch(ops) => {
                let barrier_ops: Vec<BarrierOp<'_>> = ops
                    .iter()
                    .map(|(p, v)| match v {
                        Some(v) => BarrierOp::Put(p, v),
                        None => BarrierOp::Delete(p),
                    })
                    .collect();
                // The first reserved or repeated path refuses the batch, whatever the faults.
                let mut seen = BTreeSet::new();
                let refusal = ops.iter().find_map(|(p, _)| {
                    if p.starts_with("_barrier/") {
                        Some("reserved")
                    } else if !seen.insert(*p) {
                        Some("repeated")
                    } else {
                        None
                    }
                });
                refused = refusal.is_some();
                let r = self.barrier.batch(&barrier_ops).await;
                match refusal {
                    Some("reserved") => {
                        assert!(matches!(r, Err(BarrierError::ReservedPath { .. })), "{r:?}")
                    }
                    Some(_) => assert!(
                        matches!(
                            r,
                            Err(BarrierError::Backend(BackendError::InvalidBatch { .. }))
                        ),
                        "{r:?}"
                    ),
                    None => {
                        if r.is_ok() {
                            for (p, v) in ops {
                                match v {
                                    Some(v) => self.model.insert((*p).to_owned(), v.clone()),
                                    None => self.model.remove(*p),
                                };
                            }
                        }
                    }
                }
                r
            }
            Op::List(prefix) => {
                let r = self.barrier.list(prefix).await;
                if let Ok(keys) = &r {
                    let expected: Vec<String> = self
                        .model
                        .keys()
                        .filter(|k| k.starts_with(prefix))
                        .cloned()
                        .collect();
                    assert_eq!(keys, &expected, "list {prefix:?}");
                }
                r.map(drop)
            }
            Op::Rotate => {
                let r = self.barrier.rotate().await;
                if let Ok(term) = r {
                    self.term += 1;
                    assert_eq!(term, self.term);
                }
                r.map(drop)
            }
            Op::Rewrap => {
                may_touch_raw_on_err = true;
                let stale = before
                    .iter()
                    .filter(|(k, _)| !k.starts_with("_barrier/"))
                    .filter(|(_, v)| Envelope::decode(v).unwrap().term() < self.term)
                    .count() as u64;
                let r = self.barrier.rewrap().await;
                if let Ok(report) = r {
                    assert_eq!(report.scanned, self.model.len() as u64);
                    assert_eq!(report.rewrapped, stale);
                    assert_eq!(report.skipped, 0);
                    for (key, raw) in self.raw().await {
                        if !key.starts_with("_barrier/") {
                            assert_eq!(Envelope::decode(&raw).unwrap().term(), self.term, "{key}");
                        }
                    }
                }
                r.map(drop)
            }
            Op::SealUnseal => {
                may_touch_raw_on_err = true;
                // Sealing never fails; its best-effort keyring write may meet the fault.
                self.barrier.seal().await;
                assert!(matches!(
                    self.barrier.get("a").await,
                    Err(BarrierError::Sealed)
                ));
                let r = self.barrier.unseal(&self.root).await;
                if r.is_err() {
                    // A failed unseal leaves the barrier sealed; unseal it for the next step.
                    assert!(self.barrier.is_sealed());
                    self.disarm();
                    self.barrier.unseal(&self.root).await.unwrap();
                }
                r
            }
        };
        self.disarm();

        match &result {
            Ok(()) => assert!(!refused, "{op:?} should have been refused"),
            Err(err) => {
                if refused {
                    // The batch arm checked its own refusal.
                    if !matches!(op, Op::Batch(_)) {
                        assert!(matches!(err, BarrierError::ReservedPath { .. }), "{err:?}");
                    }
                } else {
                    // Only an injected fault can fail a valid operation.
                    assert!(fault.is_some() && is_fault(err), "{op:?} failed: {err:?}");
                }
                if !may_touch_raw_on_err {
                    assert_eq!(self.raw().await, before, "{op:?} failed but wrote");
                }
            }
        }
        // A fault on the very first backend call always surfaces (sealing swallows its own),
        // unless the operation was refused before reaching the backend.
        let answered_from_cache = self.cached && matches!(op, Op::Get(_));
        if fault == Some(1) && !refused && !matches!(op, Op::SealUnseal) && !answered_from_cache {
            assert!(result.is_err(), "{op:?} swallowed a fault");
        }
        self.check().await;
    }
}

/// The barrier's default read cache: the model also checks that the cache never serves a
/// value the store no longer holds, whatever faults the writes met.
fn run(inner: Arc<dyn Backend>, steps: &[(Op, Option<u64>)]) {
    run_with_cache(inner, steps, arca_storage::read_cache::DEFAULT_CACHE_BYTES);
}

fn run_with_cache(inner: Arc<dyn Backend>, steps: &[(Op, Option<u64>)], cache_bytes: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut harness = Harness::new(inner, cache_bytes).await;
        for (op, fault) in steps {
            harness.step(op, *fault).await;
        }
    });
}

/// Failing cases are saved beside this file (`model.proptest-regressions`) and replayed first.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn barrier_over_faulty_memory_matches_the_model(steps in steps(50)) {
        run(Arc::new(MemoryBackend::new()), &steps);
    }

    /// Without a cache every read reaches the backend, so every injected fault must surface.
    #[test]
    fn uncached_barrier_over_faulty_memory_matches_the_model(steps in steps(50)) {
        run_with_cache(Arc::new(MemoryBackend::new()), &steps, 0);
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn barrier_over_faulty_redb_matches_the_model(steps in steps(30)) {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbBackend::open_with(dir.path().join("model.redb"), CommitMode::Group)
            .unwrap();
        run(Arc::new(redb), &steps);
    }
}

#[cfg(feature = "dynamodb")]
proptest! {
    // Every step lists and reads the whole store over HTTP twice: fewer, shorter cases.
    #![proptest_config(config(12))]

    #[test]
    fn barrier_over_faulty_dynamodb_matches_the_model(steps in steps(25)) {
        let dir = tempfile::tempdir().unwrap();
        run(Arc::new(support::backend(dir.path())), &steps);
    }
}
