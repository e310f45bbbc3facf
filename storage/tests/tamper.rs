//! Tamper tests on a real redb file: bytes flipped in a record, headers edited, records copied
//! between paths and stores, the file truncated or overwritten. The barrier must answer
//! `Integrity` for exactly the damaged record (or an error for a damaged file), keep serving
//! every other record, never panic, and never return wrong plaintext.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arca_storage::envelope::{Envelope, FORMAT_VERSION, HEADER_LEN, TAG_LEN};
use arca_storage::{Backend, BackendError, Barrier, BarrierError, RedbBackend, RootKey};

/// The records every store holds: distinctive values, long enough that their ciphertext is
/// unique in the file.
fn records() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("kv/alpha", "alpha"),
        ("kv/bravo", "bravo"),
        ("kv/charlie", "charlie"),
        ("other/delta", "delta"),
        ("other/echo", "echo"),
    ]
    .into_iter()
    .map(|(path, name)| {
        (
            path,
            format!("TAMPER-PLAINTEXT-{name}-").repeat(6).into_bytes(),
        )
    })
    .collect()
}

/// A store written, sealed and closed: the file, its root key, and every record's raw bytes
/// as the backend returned them before closing.
struct Closed {
    _dir: tempfile::TempDir,
    file: PathBuf,
    root: RootKey,
    raw: BTreeMap<String, Vec<u8>>,
}

impl Closed {
    /// Writes [`records`] (after one rotation for `kv/bravo` onwards, so two terms are in use)
    /// into a new redb file under a new root key, then closes everything.
    async fn create() -> Self {
        Self::create_with(RootKey::generate().unwrap()).await
    }

    async fn create_with(root: RootKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("arca.redb");
        let backend = Arc::new(RedbBackend::open(&file).unwrap());
        let barrier = Barrier::new(Arc::clone(&backend) as Arc<dyn Backend>);
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        for (i, (path, value)) in records().iter().enumerate() {
            if i == 1 {
                assert_eq!(barrier.rotate().await.unwrap(), 2);
            }
            barrier.put(path, value).await.unwrap();
        }
        barrier.seal().await;
        let mut raw = BTreeMap::new();
        for key in backend.list("").await.unwrap() {
            raw.insert(key.clone(), backend.get(&key).await.unwrap().unwrap());
        }
        drop(barrier);
        drop(backend);
        Self {
            _dir: dir,
            file,
            root,
            raw,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap()
    }

    /// Every offset in the file where the raw record of `path` is stored. redb is copy on write,
    /// so a stale copy in a freed page may exist beside the live one.
    fn locate(&self, path: &str) -> Vec<usize> {
        let needle = &self.raw[path];
        let found = find_all(&self.bytes(), needle);
        assert!(!found.is_empty(), "record {path} not found in the file");
        found
    }

    /// Applies `edit` to every stored copy of `path`'s record in the file.
    fn edit_record(&self, path: &str, edit: impl Fn(&mut [u8])) {
        let len = self.raw[path].len();
        let mut bytes = self.bytes();
        for at in self.locate(path) {
            edit(&mut bytes[at..at + len]);
        }
        std::fs::write(&self.file, bytes).unwrap();
    }

    /// Reopens the file and unseals.
    async fn reopen(&self) -> Barrier {
        let backend = RedbBackend::open(&self.file).unwrap();
        let barrier = Barrier::new(Arc::new(backend));
        barrier.unseal(&self.root).await.unwrap();
        barrier
    }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return Vec::new();
    }
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn value_of(path: &str) -> Vec<u8> {
    records()
        .into_iter()
        .find(|(p, _)| *p == path)
        .map(|(_, v)| v)
        .unwrap()
}

/// `path` fails with `Integrity` naming exactly it; every other record reads its own value.
async fn assert_only_damaged(barrier: &Barrier, damaged: &str) {
    match barrier.get(damaged).await {
        Err(BarrierError::Integrity { path }) => assert_eq!(path, damaged),
        Err(other) => panic!("{damaged}: expected an integrity error, got {other:?}"),
        Ok(got) => panic!(
            "{damaged}: a damaged record was served ({:?})",
            got.map(|p| p.len())
        ),
    }
    for (path, value) in records() {
        if path != damaged {
            let got = barrier.get(path).await.unwrap().unwrap();
            assert_eq!(got.expose_secret(), &value[..], "{path}");
        }
    }
    // The damaged record is still listed: it is there, it just does not authenticate.
    let listed = barrier.list("").await.unwrap();
    assert_eq!(listed.len(), records().len());
    assert!(listed.iter().any(|p| p == damaged));
}

/// Where to flip a byte in a record of the given length.
type Offset = fn(usize) -> usize;

/// An edit of a stored record's bytes.
type Edit = fn(&mut [u8]);

#[tokio::test]
async fn flipped_bytes_in_a_stored_record_fail_only_that_record() {
    // One flip in each part of the envelope: version, term, nonce, ciphertext, tag.
    let flips: [(&str, Offset); 6] = [
        ("version", |_| 0),
        ("term", |_| 4),
        ("nonce", |_| 5 + 11),
        ("first ciphertext byte", |_| HEADER_LEN),
        ("middle of the ciphertext", |len| {
            HEADER_LEN + (len - HEADER_LEN - TAG_LEN) / 2
        }),
        ("last tag byte", |len| len - 1),
    ];
    for (what, offset) in flips {
        for damaged in ["kv/alpha", "kv/charlie", "other/echo"] {
            let store = Closed::create().await;
            let len = store.raw[damaged].len();
            let at = offset(len);
            store.edit_record(damaged, |record| record[at] ^= 0x01);
            let barrier = store.reopen().await;
            assert_only_damaged(&barrier, damaged).await;
            // The raw bytes read back are the flipped ones: the flip landed in the live copy.
            let raw = barrier.backend().get(damaged).await.unwrap().unwrap();
            assert_ne!(
                raw, store.raw[damaged],
                "{what}: flip did not reach {damaged}"
            );
            assert_eq!(raw.len(), len, "{what}");
        }
    }
}

#[tokio::test]
async fn edited_headers_in_the_file_fail_with_integrity() {
    // `kv/alpha` was written under term 1, the others under term 2.
    let edits: [(&str, &str, Edit); 6] = [
        ("unknown version", "kv/alpha", |r| r[0] = FORMAT_VERSION + 1),
        ("version zero", "kv/bravo", |r| r[0] = 0),
        ("unknown term", "kv/charlie", |r| {
            r[1..5].copy_from_slice(&7u32.to_be_bytes())
        }),
        ("term 1 to 2", "kv/alpha", |r| {
            r[1..5].copy_from_slice(&2u32.to_be_bytes())
        }),
        ("term 2 to 1", "kv/bravo", |r| {
            r[1..5].copy_from_slice(&1u32.to_be_bytes())
        }),
        ("term 0 (the keyring's)", "other/delta", |r| {
            r[1..5].copy_from_slice(&0u32.to_be_bytes());
        }),
    ];
    for (what, damaged, edit) in edits {
        let store = Closed::create().await;
        let before = Envelope::decode(&store.raw[damaged]).unwrap().term();
        store.edit_record(damaged, edit);
        let barrier = store.reopen().await;
        let raw = barrier.backend().get(damaged).await.unwrap().unwrap();
        assert_ne!(
            raw, store.raw[damaged],
            "{what}: edit did not reach the file"
        );
        if let Ok(envelope) = Envelope::decode(&raw) {
            assert_ne!(envelope.term(), before, "{what}");
        }
        assert_only_damaged(&barrier, damaged).await;
    }
}

#[tokio::test]
async fn a_record_copied_or_moved_to_another_path_fails_there() {
    let store = Closed::create().await;
    let barrier = store.reopen().await;
    let raw = barrier.backend();

    // Copied: the copy fails, the original is fine.
    let alpha = raw.get("kv/alpha").await.unwrap().unwrap();
    raw.put("kv/alpha-copy", alpha.clone()).await.unwrap();
    match barrier.get("kv/alpha-copy").await {
        Err(BarrierError::Integrity { path }) => assert_eq!(path, "kv/alpha-copy"),
        other => panic!("copied record: {other:?}"),
    }
    assert_eq!(
        barrier
            .get("kv/alpha")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        &value_of("kv/alpha")[..]
    );

    // Overwriting another record with it (same length class, different path).
    raw.put("kv/bravo", alpha.clone()).await.unwrap();
    match barrier.get("kv/bravo").await {
        Err(BarrierError::Integrity { path }) => assert_eq!(path, "kv/bravo"),
        other => panic!("record over another: {other:?}"),
    }

    // Moved: the old path is empty, the new one fails.
    let charlie = raw.get("kv/charlie").await.unwrap().unwrap();
    raw.put("moved/charlie", charlie).await.unwrap();
    raw.delete("kv/charlie").await.unwrap();
    assert!(barrier.get("kv/charlie").await.unwrap().is_none());
    assert!(matches!(
        barrier.get("moved/charlie").await,
        Err(BarrierError::Integrity { .. })
    ));

    // The keyring record (term 0, sealed under the root key) is no record anywhere else.
    let keyring = raw.get("_barrier/keyring").await.unwrap().unwrap();
    raw.put("kv/keyring", keyring).await.unwrap();
    assert!(matches!(
        barrier.get("kv/keyring").await,
        Err(BarrierError::Integrity { .. })
    ));

    // The untouched records, and a rewrap, are unaffected; the damaged ones are skipped.
    for path in ["kv/alpha", "other/delta", "other/echo"] {
        assert_eq!(
            barrier.get(path).await.unwrap().unwrap().expose_secret(),
            &value_of(path)[..]
        );
    }
    let report = barrier.rewrap().await.unwrap();
    assert_eq!(report.scanned, 7);
    assert_eq!(
        report.rewrapped, 1,
        "only kv/alpha is valid and on an old term"
    );
    assert_eq!(
        report.skipped, 3,
        "the copies under term 1 or 0 fail and are left alone"
    );
    assert!(matches!(
        barrier.get("kv/bravo").await,
        Err(BarrierError::Integrity { .. })
    ));
}

#[tokio::test]
async fn a_record_from_another_store_fails() {
    let ours = Closed::create().await;
    // Another store under another root key, and one under the same root key: both have their
    // own random term keys.
    let theirs = Closed::create().await;
    let same_root =
        Closed::create_with(RootKey::from_slice(ours.root.expose_secret()).unwrap()).await;

    for other in [&theirs, &same_root] {
        let barrier = ours.reopen().await;
        for path in ["kv/alpha", "kv/bravo"] {
            barrier
                .backend()
                .put(path, other.raw[path].clone())
                .await
                .unwrap();
        }
        for path in ["kv/alpha", "kv/bravo"] {
            match barrier.get(path).await {
                Err(BarrierError::Integrity { path: p }) => assert_eq!(p, path),
                res => panic!("foreign record at {path}: {:?}", res.map(|v| v.is_some())),
            }
        }
        for path in ["kv/charlie", "other/delta", "other/echo"] {
            assert_eq!(
                barrier.get(path).await.unwrap().unwrap().expose_secret(),
                &value_of(path)[..]
            );
        }
        // Put the right records back for the next round.
        for path in ["kv/alpha", "kv/bravo"] {
            barrier
                .backend()
                .put(path, ours.raw[path].clone())
                .await
                .unwrap();
        }
    }

    // A foreign keyring: under another root key it does not open at all.
    let barrier = ours.reopen().await;
    barrier
        .backend()
        .put("_barrier/keyring", theirs.raw["_barrier/keyring"].clone())
        .await
        .unwrap();
    barrier.seal().await;
    match barrier.unseal(&ours.root).await {
        Err(BarrierError::Integrity { path }) => assert_eq!(path, "_barrier/keyring"),
        other => panic!("foreign keyring: {other:?}"),
    }
    assert!(barrier.is_sealed());
    // Under the same root key it opens, but it holds other term keys: every record fails,
    // none is served with the wrong key.
    barrier
        .backend()
        .put(
            "_barrier/keyring",
            same_root.raw["_barrier/keyring"].clone(),
        )
        .await
        .unwrap();
    barrier.unseal(&ours.root).await.unwrap();
    for (path, _) in records() {
        assert!(
            matches!(barrier.get(path).await, Err(BarrierError::Integrity { .. })),
            "{path}"
        );
    }
}

/// What opening and reading a damaged file gave.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Opening the file failed.
    OpenFailed,
    /// Unsealing failed.
    UnsealFailed,
    /// It opened and unsealed; this many records read correctly, the others failed.
    Opened { intact: usize },
}

/// Opens `file`, unseals with `root`, reads every record. Any value returned must be the
/// one written; anything else must be an error. Runs in a task so a panic is caught and
/// reported as the finding it is.
async fn open_damaged(file: &Path, root: &RootKey) -> Outcome {
    let file = file.to_owned();
    let root = RootKey::from_slice(root.expose_secret()).unwrap();
    let task = tokio::spawn(async move {
        let backend = match RedbBackend::open(&file) {
            Ok(backend) => backend,
            Err(err) => {
                assert!(matches!(err, BackendError::Storage(_)), "{err:?}");
                return Outcome::OpenFailed;
            }
        };
        let barrier = Barrier::new(Arc::new(backend));
        if barrier.unseal(&root).await.is_err() {
            assert!(barrier.is_sealed());
            return Outcome::UnsealFailed;
        }
        let mut intact = 0;
        for (path, value) in records() {
            match barrier.get(path).await {
                Ok(Some(got)) => {
                    assert_eq!(got.expose_secret(), &value[..], "wrong plaintext at {path}");
                    intact += 1;
                }
                Ok(None)
                | Err(BarrierError::Integrity { .. })
                | Err(BarrierError::Backend(BackendError::Storage(_))) => {}
                Err(other) => panic!("{path}: unexpected error {other:?}"),
            }
        }
        // Whatever is listed either authenticates or fails; nothing else comes out.
        if let Ok(listed) = barrier.list("").await {
            for path in listed {
                if let Ok(Some(got)) = barrier.get(&path).await {
                    assert_eq!(got.expose_secret(), &value_of(&path)[..], "{path}");
                }
            }
        }
        Outcome::Opened { intact }
    });
    match task.await {
        Ok(outcome) => outcome,
        Err(err) => panic!("opening a damaged file panicked: {err}"),
    }
}

#[tokio::test]
async fn a_truncated_or_overwritten_file_is_an_error_never_data() {
    let store = Closed::create().await;
    let pristine = store.bytes();
    let damaged = store.file.with_file_name("damaged.redb");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                // xorshift64: deterministic garbage.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for len in [1, 9, 64, 320, 4096, pristine.len() / 2, pristine.len() - 1] {
        cases.push((format!("truncated to {len}"), pristine[..len].to_vec()));
    }
    for len in [512, 4096] {
        let mut bytes = pristine.clone();
        bytes[..len].copy_from_slice(&noise(len));
        cases.push((format!("first {len} bytes random"), bytes));
    }
    let mut zeroed = pristine.clone();
    zeroed[..320].fill(0);
    cases.push(("header zeroed".into(), zeroed));
    cases.push(("whole file random".into(), noise(pristine.len())));
    cases.push(("random bytes, 64 KiB".into(), noise(64 * 1024)));

    for (what, bytes) in cases {
        std::fs::write(&damaged, &bytes).unwrap();
        let outcome = open_damaged(&damaged, &store.root).await;
        assert!(
            matches!(outcome, Outcome::OpenFailed | Outcome::UnsealFailed),
            "{what}: expected an error on open or unseal, got {outcome:?}"
        );
    }

    // An empty file is a new, empty database: it opens, but holds no keyring to unseal.
    std::fs::write(&damaged, b"").unwrap();
    let barrier = Barrier::new(Arc::new(RedbBackend::open(&damaged).unwrap()));
    assert!(matches!(
        barrier.unseal(&store.root).await,
        Err(BarrierError::NotInitialized)
    ));
}

#[tokio::test]
async fn single_byte_flips_anywhere_in_the_file_never_yield_wrong_data() {
    let store = Closed::create().await;
    let pristine = store.bytes();
    let damaged = store.file.with_file_name("flipped.redb");
    let (mut unharmed, mut records_failed, mut refused) = (0, 0, 0);
    // A flip every 97 bytes (a prime, so it walks through every offset within a page) across
    // the whole file: redb's headers, its B-tree pages, free pages and our records.
    for at in (0..pristine.len()).step_by(97) {
        let mut bytes = pristine.clone();
        bytes[at] ^= 0x5A;
        std::fs::write(&damaged, &bytes).unwrap();
        match open_damaged(&damaged, &store.root).await {
            Outcome::Opened { intact } if intact == records().len() => unharmed += 1,
            Outcome::Opened { .. } => records_failed += 1,
            Outcome::OpenFailed | Outcome::UnsealFailed => refused += 1,
        }
    }
    // Most flips land in unused space; the sweep must also have hit records (which then fail
    // their integrity check) and redb's own structures (which fail the open).
    assert!(
        unharmed > 0 && records_failed > 0 && refused > 0,
        "{unharmed} {records_failed} {refused}"
    );
}

#[tokio::test]
async fn the_file_never_holds_plaintext_or_keys() {
    let store = Closed::create().await;
    let barrier = store.reopen().await;
    // Rewrite, rotate, rewrap and delete, so stale copies of old pages exist too.
    barrier
        .put("kv/alpha", &value_of("kv/bravo"))
        .await
        .unwrap();
    barrier.rotate().await.unwrap();
    barrier.rewrap().await.unwrap();
    barrier.delete("other/echo").await.unwrap();
    barrier.seal().await;
    drop(barrier);

    let bytes = store.bytes();
    for needle in [
        &b"TAMPER-PLAINTEXT"[..],
        &b"PLAINTEXT"[..],
        &b"alpha-TAMPER"[..],
        store.root.expose_secret(),
    ] {
        assert!(
            find_all(&bytes, needle).is_empty(),
            "found {} secret bytes in the file",
            needle.len()
        );
    }
    for (_, value) in records() {
        for window in value.chunks(12) {
            assert!(
                find_all(&bytes, window).is_empty(),
                "a piece of a value is in clear"
            );
        }
    }
    // Paths may be visible; that is documented. Check the search itself works on them.
    assert!(!find_all(&bytes, b"kv/alpha").is_empty());
}
