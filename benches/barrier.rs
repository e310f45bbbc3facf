//! Barrier `get`/`put` against the raw backend underneath, for memory and redb, at 100 B,
//! 1 KiB and 64 KiB; and the record cipher alone. The ratio barrier/raw is the cost of
//! encryption at rest.
//!
//! Run: `cargo bench --bench barrier` (release profile: fat LTO, one codegen unit).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use arca::storage::envelope::{Envelope, RECORD_KEY_INFO, RecordCipher};
use arca::storage::{Backend, Barrier, MemoryBackend, RedbBackend, RootKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(usize, &str); 3] = [(100, "100B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
const KEYS: usize = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A new store over `backend`, opened by two barriers: one without a record cache (every get
/// reaches the backend and the cipher), one with it. Only the first one writes.
async fn unsealed(backend: Arc<dyn Backend>) -> (Barrier, Barrier) {
    let barrier = Barrier::with_cache_bytes(backend.clone(), 0);
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();
    let cached = Barrier::with_cache_bytes(backend, 64 << 20);
    cached.unseal(&root).await.unwrap();
    (barrier, cached)
}

fn cipher(c: &mut Criterion) {
    let cipher = RecordCipher::derive(&[9; 32], RECORD_KEY_INFO);
    let mut group = c.benchmark_group("cipher");
    for (size, name) in SIZES {
        let value = vec![0x5A; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("seal", name), |b| {
            b.iter(|| cipher.seal(1, "secret/data/bench/key", &value).unwrap());
        });
        let sealed = cipher.seal(1, "secret/data/bench/key", &value).unwrap();
        group.bench_function(BenchmarkId::new("open", name), |b| {
            b.iter(|| {
                let env = Envelope::decode(&sealed).unwrap();
                cipher.open(&env, "secret/data/bench/key").unwrap()
            });
        });
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new())),
        (
            "redb",
            Arc::new(RedbBackend::open(dir.path().join("bench.redb")).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group("get");
    for (backend_name, backend) in backends {
        let (barrier, cached) = rt.block_on(unsealed(backend.clone()));
        for (size, size_name) in SIZES {
            let value = vec![0x5A; size];
            let prefix = format!("get/{size_name}/");
            rt.block_on(async {
                for i in 0..KEYS {
                    barrier.put(&format!("{prefix}{i}"), &value).await.unwrap();
                }
            });
            group.throughput(Throughput::Elements(1));
            let mut i = 0usize;
            group.bench_function(
                BenchmarkId::new(format!("{backend_name}/raw"), size_name),
                |b| {
                    b.to_async(&rt).iter(|| {
                        i = (i + 1) % KEYS;
                        let key = format!("{prefix}{i}");
                        let backend = &backend;
                        async move { backend.get(&key).await.unwrap().unwrap() }
                    });
                },
            );
            group.bench_function(
                BenchmarkId::new(format!("{backend_name}/barrier"), size_name),
                |b| {
                    b.to_async(&rt).iter(|| {
                        i = (i + 1) % KEYS;
                        let key = format!("{prefix}{i}");
                        let barrier = &barrier;
                        async move { barrier.get(&key).await.unwrap().unwrap() }
                    });
                },
            );
            group.bench_function(
                BenchmarkId::new(format!("{backend_name}/barrier-cached"), size_name),
                |b| {
                    b.to_async(&rt).iter(|| {
                        i = (i + 1) % KEYS;
                        let key = format!("{prefix}{i}");
                        let cached = &cached;
                        async move { cached.get(&key).await.unwrap().unwrap() }
                    });
                },
            );
        }
    }
    group.finish();
}

fn put(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new())),
        (
            "redb",
            Arc::new(RedbBackend::open(dir.path().join("bench.redb")).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group("put");
    for (backend_name, backend) in backends {
        if backend_name == "redb" {
            // Every redb put is an fsync'd commit: fewer, longer samples.
            group.sample_size(20);
        }
        let (barrier, _) = rt.block_on(unsealed(backend.clone()));
        for (size, size_name) in SIZES {
            let value = vec![0x5A; size];
            group.throughput(Throughput::Elements(1));
            let mut i = 0usize;
            group.bench_function(
                BenchmarkId::new(format!("{backend_name}/raw"), size_name),
                |b| {
                    b.to_async(&rt).iter(|| {
                        i = (i + 1) % KEYS;
                        let key = format!("put/raw/{size_name}/{i}");
                        let (backend, value) = (&backend, value.clone());
                        async move { backend.put(&key, value).await.unwrap() }
                    });
                },
            );
            group.bench_function(
                BenchmarkId::new(format!("{backend_name}/barrier"), size_name),
                |b| {
                    b.to_async(&rt).iter(|| {
                        i = (i + 1) % KEYS;
                        let key = format!("put/barrier/{size_name}/{i}");
                        let (barrier, value) = (&barrier, &value);
                        async move { barrier.put(&key, value).await.unwrap() }
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, cipher, get, put);
criterion_main!(benches);
