//! LocalKms `Encrypt`, `Decrypt` and `GenerateDataKey` per second, over the memory backend
//! (the cost of the key provider itself: two barrier reads, one AEAD) and over redb (what the
//! embedded server does), with a 32-byte plaintext and a one-pair encryption context.
//!
//! Run: `cargo bench --bench kms` (release profile: fat LTO, one codegen unit).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use arca::kms::{DataKeySpec, EncryptionContext, KeyProvider, LocalKms};
use arca::storage::{Backend, Barrier, MemoryBackend, RedbBackend, RootKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn kms(backend: Arc<dyn Backend>) -> LocalKms {
    let barrier = Arc::new(Barrier::new(backend));
    let root = RootKey::generate().unwrap();
    barrier.initialize(&root).await.unwrap();
    barrier.unseal(&root).await.unwrap();
    LocalKms::new(barrier, "us-east-1", "123456789012")
}

fn operations(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new())),
        (
            "redb",
            Arc::new(RedbBackend::open(dir.path().join("bench.redb")).unwrap()),
        ),
    ];
    let mut context = EncryptionContext::new();
    context.insert("service".into(), "bench".into());
    let plaintext = [0x5A; 32];
    let mut group = c.benchmark_group("kms");
    group.throughput(Throughput::Elements(1));
    for (name, backend) in backends {
        let kms = rt.block_on(kms(backend));
        let key = rt
            .block_on(kms.ensure_key_for_alias("alias/bench", "bench"))
            .unwrap();
        let blob = rt
            .block_on(kms.encrypt(&key, &plaintext, &context))
            .unwrap();
        group.bench_function(BenchmarkId::new("encrypt", name), |b| {
            b.to_async(&rt)
                .iter(|| async { kms.encrypt(&key, &plaintext, &context).await.unwrap() });
        });
        group.bench_function(BenchmarkId::new("encrypt-by-alias", name), |b| {
            b.to_async(&rt).iter(|| async {
                kms.encrypt("alias/bench", &plaintext, &context)
                    .await
                    .unwrap()
            });
        });
        group.bench_function(BenchmarkId::new("decrypt", name), |b| {
            b.to_async(&rt)
                .iter(|| async { kms.decrypt(&blob, &context).await.unwrap() });
        });
        group.bench_function(BenchmarkId::new("generate-data-key", name), |b| {
            b.to_async(&rt).iter(|| async {
                kms.generate_data_key(&key, DataKeySpec::Aes256, &context)
                    .await
                    .unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, operations);
criterion_main!(benches);
