//! Durable concurrent writes on redb: group commit (concurrent writers share one fsync'd
//! commit) against one fsync'd transaction per write, at 1 and 16 concurrent writers.
//! Both modes acknowledge a write only after its commit is on disk.
//!
//! Run: `cargo bench --bench group_commit`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arca::storage::{Backend, CommitMode, RedbBackend};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Writes each writer makes per measured iteration.
const WRITES_PER_WRITER: usize = 8;

fn durable_writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("durable_put");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for writers in [1usize, 16] {
        for (mode, name) in [
            (CommitMode::PerWrite, "fsync_per_write"),
            (CommitMode::Group, "group_commit"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let backend: Arc<dyn Backend> =
                Arc::new(RedbBackend::open_with(dir.path().join("gc.redb"), mode).unwrap());
            let value = vec![0x42u8; 145]; // a 100-byte plaintext once sealed
            group.throughput(Throughput::Elements((writers * WRITES_PER_WRITER) as u64));
            group.bench_function(BenchmarkId::new(name, format!("{writers}_writers")), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let backend = backend.clone();
                    let value = value.clone();
                    async move {
                        let start = Instant::now();
                        for iter in 0..iters {
                            let tasks: Vec<_> = (0..writers)
                                .map(|w| {
                                    let backend = backend.clone();
                                    let value = value.clone();
                                    tokio::spawn(async move {
                                        for n in 0..WRITES_PER_WRITER {
                                            let key = format!("w{w}/{iter}/{n}");
                                            backend.put(&key, value.clone()).await.unwrap();
                                        }
                                    })
                                })
                                .collect();
                            for task in tasks {
                                task.await.unwrap();
                            }
                        }
                        start.elapsed()
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, durable_writes);
criterion_main!(benches);
