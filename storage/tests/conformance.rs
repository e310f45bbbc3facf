//! The backend conformance suite: one set of checks of every contract written on the
//! [`Backend`] trait, instantiated for every backend (memory, redb with group and per-write
//! commit, sled behind its feature, DynamoDB on moto's server behind the feature `dynamodb`,
//! and the fault injector with no fault armed).
#![allow(clippy::unwrap_used)]

#[cfg(feature = "dynamodb")]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arca_storage::backend::faulty::FaultyBackend;
use arca_storage::backend::{
    MAX_BATCH_BYTES, MAX_BATCH_WEIGHT, MAX_KEY_LEN, MAX_LIST_PAGE, MAX_VALUE_LEN,
};
use arca_storage::{
    Backend, BackendError, Barrier, BarrierError, BarrierOp, Batch, BatchOp, CommitMode,
    MemoryBackend, RedbBackend, RootKey,
};

/// Opens (or reopens) a backend whose files, if any, live in the given folder.
type Open = fn(&Path) -> Arc<dyn Backend>;

fn open_memory(_: &Path) -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

fn open_redb_group(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(RedbBackend::open_with(dir.join("store.redb"), CommitMode::Group).unwrap())
}

fn open_redb_per_write(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(RedbBackend::open_with(dir.join("store.redb"), CommitMode::PerWrite).unwrap())
}

#[cfg(feature = "sled")]
fn open_sled(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(arca_storage::SledBackend::open(dir.join("sled")).unwrap())
}

/// A namespace of the shared table on moto's server; the same folder reopens the same store.
#[cfg(feature = "dynamodb")]
fn open_dynamodb(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(support::backend(dir))
}

fn open_faulty_memory(_: &Path) -> Arc<dyn Backend> {
    Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new())))
}

/// A backend and the temporary folder it lives in (removed on drop, after the backend).
struct Fixture {
    backend: Arc<dyn Backend>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(open: Open) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        Self { backend, _dir: dir }
    }
}

/// Instantiates every check of [`suite`] for one backend; `durable` adds the reopen checks.
macro_rules! conformance {
    ($name:ident, $open:expr $(, $durable:ident)?) => {
        mod $name {
            use super::*;

            const OPEN: Open = $open;

            #[tokio::test]
            async fn get_put_delete() {
                suite::get_put_delete(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn empty_values_are_not_absent() {
                suite::empty_values_are_not_absent(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn value_limits() {
                suite::value_limits(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn invalid_keys_are_refused() {
                suite::invalid_keys_are_refused(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn list_is_sorted_and_respects_prefix_boundaries() {
                suite::list_is_sorted_and_respects_prefix_boundaries(&Fixture::new(OPEN).backend)
                    .await;
            }

            #[tokio::test]
            async fn list_page_paginates() {
                suite::list_page_paginates(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn list_page_start_after() {
                suite::list_page_start_after(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn list_page_limit_is_clamped() {
                suite::list_page_limit_is_clamped(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn compare_and_swap() {
                suite::compare_and_swap(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn batch_applies_everything() {
                suite::batch_applies_everything(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn invalid_batches_are_refused_whole() {
                suite::invalid_batches_are_refused_whole(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn largest_batches_are_accepted() {
                suite::largest_batches_are_accepted(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_are_all_visible() {
                suite::concurrent_writers_are_all_visible(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_cas_increments_lose_nothing() {
                suite::concurrent_cas_increments_lose_nothing(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn readers_never_see_half_a_write() {
                suite::readers_never_see_half_a_write(&Fixture::new(OPEN).backend).await;
            }

            #[tokio::test]
            async fn barrier_over_backend() {
                suite::barrier_over_backend(Arc::clone(&Fixture::new(OPEN).backend)).await;
            }

            $(conformance!(@$durable);)?
        }
    };
    (@durable) => {
        #[tokio::test]
        async fn writes_survive_reopen() {
            suite::writes_survive_reopen(OPEN).await;
        }

        #[tokio::test]
        async fn barrier_survives_reopen() {
            suite::barrier_survives_reopen(OPEN).await;
        }
    };
}

conformance!(memory, open_memory);
conformance!(redb_group, open_redb_group, durable);
conformance!(redb_per_write, open_redb_per_write, durable);
#[cfg(feature = "sled")]
conformance!(sled, open_sled, durable);
conformance!(faulty_unarmed, open_faulty_memory);
#[cfg(feature = "dynamodb")]
conformance!(dynamodb, open_dynamodb, durable);

/// The fault injector itself: the armed call fails before reaching the inner store, the others
/// go through.
#[tokio::test]
async fn faulty_backend_fails_only_the_armed_call() {
    let inner = Arc::new(MemoryBackend::new());
    let faulty = FaultyBackend::new(Arc::clone(&inner));
    faulty.put("a", b"1".to_vec()).await.unwrap();
    faulty.fail_nth(2);
    faulty.put("b", b"2".to_vec()).await.unwrap();
    let err = faulty.put("c", b"3".to_vec()).await.unwrap_err();
    assert!(matches!(err, BackendError::Storage(_)), "{err:?}");
    assert_eq!(inner.get("c").await.unwrap(), None);
    faulty.put("c", b"3".to_vec()).await.unwrap();
    assert_eq!(inner.len(), 3);

    faulty.fail_all(true);
    assert!(faulty.get("a").await.is_err());
    assert!(faulty.delete("a").await.is_err());
    assert!(faulty.batch(Batch::new()).await.is_err());
    assert!(faulty.flush().await.is_err());
    assert!(faulty.list("").await.is_err());
    assert!(
        faulty
            .compare_and_swap("a", Some(b"1"), None)
            .await
            .is_err()
    );
    assert_eq!(inner.get("a").await.unwrap(), Some(b"1".to_vec()));
    faulty.fail_all(false);
    faulty.delete("a").await.unwrap();
    assert_eq!(inner.get("a").await.unwrap(), None);
}

mod suite {
    use super::*;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    async fn put_all(b: &Arc<dyn Backend>, keys: &[&str]) {
        for chunk in keys.chunks(MAX_BATCH_WEIGHT) {
            let mut batch = Batch::new();
            for key in chunk {
                batch.put(*key, key.as_bytes().to_vec()).unwrap();
            }
            b.batch(batch).await.unwrap();
        }
    }

    /// Walks `list_page` to the end with `limit`, checking the shape of every page.
    async fn walk(b: &Arc<dyn Backend>, prefix: &str, limit: usize) -> Vec<String> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = b.list_page(prefix, after.as_deref(), limit).await.unwrap();
            assert!(page.keys.len() <= limit, "page longer than its limit");
            if let Some(next) = &page.next {
                assert_eq!(Some(next), page.keys.last(), "next must be the last key");
            }
            all.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => return all,
            }
        }
    }

    pub(super) async fn get_put_delete(b: &Arc<dyn Backend>) {
        assert_eq!(b.get("k").await.unwrap(), None);
        b.put("k", v("one")).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), Some(v("one")));
        b.put("k", v("two")).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), Some(v("two")));
        b.put("k2", vec![0, 255, 0]).await.unwrap();
        assert_eq!(b.get("k2").await.unwrap(), Some(vec![0, 255, 0]));

        b.delete("k").await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None);
        // Deleting an absent key, twice, succeeds and touches nothing else.
        b.delete("k").await.unwrap();
        b.delete("never-written").await.unwrap();
        assert_eq!(b.get("k2").await.unwrap(), Some(vec![0, 255, 0]));
        assert_eq!(b.list("").await.unwrap(), vec!["k2".to_owned()]);
        b.flush().await.unwrap();
    }

    pub(super) async fn empty_values_are_not_absent(b: &Arc<dyn Backend>) {
        b.put("e", Vec::new()).await.unwrap();
        assert_eq!(b.get("e").await.unwrap(), Some(Vec::new()));
        assert_eq!(b.list("").await.unwrap(), vec!["e".to_owned()]);
        // An empty value is not "absent" for compare-and-swap, in either direction.
        assert!(!b.compare_and_swap("e", None, Some(v("x"))).await.unwrap());
        assert!(
            !b.compare_and_swap("absent", Some(b""), Some(v("x")))
                .await
                .unwrap()
        );
        assert_eq!(b.get("absent").await.unwrap(), None);
        assert!(
            b.compare_and_swap("e", Some(b""), Some(v("x")))
                .await
                .unwrap()
        );
        assert_eq!(b.get("e").await.unwrap(), Some(v("x")));
        assert!(
            b.compare_and_swap("e", Some(b"x"), Some(Vec::new()))
                .await
                .unwrap()
        );
        assert_eq!(b.get("e").await.unwrap(), Some(Vec::new()));

        let mut batch = Batch::new();
        batch.put("f", Vec::new()).unwrap();
        b.batch(batch).await.unwrap();
        assert_eq!(b.get("f").await.unwrap(), Some(Vec::new()));
    }

    pub(super) async fn value_limits(b: &Arc<dyn Backend>) {
        let largest: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i % 251) as u8).collect();
        b.put("big", largest.clone()).await.unwrap();
        assert_eq!(b.get("big").await.unwrap().as_deref(), Some(&largest[..]));

        let too_large = vec![7u8; MAX_VALUE_LEN + 1];
        let is_too_large = |err: &BackendError| {
            matches!(err, BackendError::ValueTooLarge { len, max }
                if *len == MAX_VALUE_LEN + 1 && *max == MAX_VALUE_LEN)
        };

        // put: refused, neither a new key nor an existing one is touched.
        let err = b.put("new", too_large.clone()).await.unwrap_err();
        assert!(is_too_large(&err), "{err:?}");
        assert_eq!(b.get("new").await.unwrap(), None);
        let err = b.put("big", too_large.clone()).await.unwrap_err();
        assert!(is_too_large(&err), "{err:?}");
        assert_eq!(b.get("big").await.unwrap().as_deref(), Some(&largest[..]));

        // compare_and_swap: refused even when the expectation holds.
        let err = b
            .compare_and_swap("big", Some(&largest), Some(too_large.clone()))
            .await
            .unwrap_err();
        assert!(is_too_large(&err), "{err:?}");
        let err = b
            .compare_and_swap("new", None, Some(too_large.clone()))
            .await
            .unwrap_err();
        assert!(is_too_large(&err), "{err:?}");
        assert_eq!(b.get("big").await.unwrap().as_deref(), Some(&largest[..]));
        assert_eq!(b.get("new").await.unwrap(), None);

        // A batch cannot even hold one.
        let mut batch = Batch::new();
        let err = batch.put("new", too_large).unwrap_err();
        assert!(is_too_large(&err), "{err:?}");
        assert!(batch.is_empty());

        // The largest value also swaps.
        let mut other = largest.clone();
        other[0] ^= 1;
        assert!(
            b.compare_and_swap("big", Some(&largest), Some(other.clone()))
                .await
                .unwrap()
        );
        assert_eq!(b.get("big").await.unwrap(), Some(other));
        assert_eq!(b.list("").await.unwrap(), vec!["big".to_owned()]);
    }

    pub(super) async fn invalid_keys_are_refused(b: &Arc<dyn Backend>) {
        let too_long = "x".repeat(MAX_KEY_LEN + 1);
        // 513 two-byte characters: under the limit in characters, over it in bytes.
        let too_long_in_bytes = "é".repeat(MAX_KEY_LEN / 2 + 1);
        assert!(too_long_in_bytes.chars().count() < MAX_KEY_LEN);
        for key in [
            "",
            "a\0b",
            "\0",
            too_long.as_str(),
            too_long_in_bytes.as_str(),
        ] {
            let invalid = |r: Result<(), BackendError>| {
                let err = r.unwrap_err();
                assert!(matches!(err, BackendError::InvalidKey { .. }), "{err:?}");
            };
            invalid(b.get(key).await.map(drop));
            invalid(b.put(key, v("value")).await);
            invalid(b.delete(key).await);
            invalid(
                b.compare_and_swap(key, None, Some(v("value")))
                    .await
                    .map(drop),
            );
            invalid(b.compare_and_swap(key, None, None).await.map(drop));
            let mut batch = Batch::new();
            invalid(batch.put(key, v("value")));
            invalid(batch.delete(key));
            assert!(batch.is_empty());
        }
        assert_eq!(b.list("").await.unwrap(), Vec::<String>::new());

        // The limit is inclusive.
        let longest = "y".repeat(MAX_KEY_LEN);
        b.put(&longest, v("fits")).await.unwrap();
        assert_eq!(b.get(&longest).await.unwrap(), Some(v("fits")));
        let longest_multibyte = "é".repeat(MAX_KEY_LEN / 2);
        b.put(&longest_multibyte, v("fits too")).await.unwrap();
        assert_eq!(
            b.get(&longest_multibyte).await.unwrap(),
            Some(v("fits too"))
        );
        assert_eq!(b.list("").await.unwrap(), vec![longest, longest_multibyte]);
    }

    pub(super) async fn list_is_sorted_and_respects_prefix_boundaries(b: &Arc<dyn Backend>) {
        let keys = [
            "a",
            "a/",
            "a/b",
            "a/c/d",
            "a0",
            "a.",
            "a/\u{7f}",
            "a/é",
            "a/Z",
            "b",
            "A",
            "ab",
            "_barrier/keyring",
            "_barrier/other",
        ];
        // Write them out of order, one by one.
        for key in keys.iter().rev() {
            b.put(key, v(key)).await.unwrap();
        }
        let sorted: BTreeSet<&str> = keys.iter().copied().collect();
        let expect = |prefix: &str| -> Vec<String> {
            sorted
                .iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| (*k).to_owned())
                .collect()
        };
        // Byte order, spelled out: upper case and '_' before lower case, '.' < '/' < '0',
        // ASCII before multi-byte UTF-8.
        assert_eq!(
            b.list("").await.unwrap(),
            vec![
                "A",
                "_barrier/keyring",
                "_barrier/other",
                "a",
                "a.",
                "a/",
                "a/Z",
                "a/b",
                "a/c/d",
                "a/\u{7f}",
                "a/é",
                "a0",
                "ab",
                "b"
            ]
        );
        assert_eq!(
            b.list("a/").await.unwrap(),
            vec!["a/", "a/Z", "a/b", "a/c/d", "a/\u{7f}", "a/é"]
        );
        for prefix in [
            "",
            "a",
            "a/",
            "a/c",
            "a/c/d",
            "a/c/d/",
            "a0",
            "a.",
            "b",
            "c",
            "_barrier/",
        ] {
            assert_eq!(
                b.list(prefix).await.unwrap(),
                expect(prefix),
                "prefix {prefix:?}"
            );
            assert_eq!(
                walk(b, prefix, 2).await,
                expect(prefix),
                "prefix {prefix:?}"
            );
        }
        // The backend reserves nothing: the barrier's prefix is ordinary to it.
        assert_eq!(
            b.list("_barrier/").await.unwrap(),
            vec!["_barrier/keyring", "_barrier/other"]
        );
        assert_eq!(
            b.get("_barrier/keyring").await.unwrap(),
            Some(v("_barrier/keyring"))
        );
    }

    pub(super) async fn list_page_paginates(b: &Arc<dyn Backend>) {
        let inside: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
        let mut keys: Vec<&str> = inside.iter().map(String::as_str).collect();
        keys.extend(["p/", "p", "p0", "o", "q", "p.x"]);
        put_all(b, &keys).await;
        let mut expected = vec!["p/".to_owned()];
        expected.extend(inside.iter().cloned());

        for limit in [1, 2, 7, 25, 26, 27, 1000] {
            assert_eq!(walk(b, "p/", limit).await, expected, "limit {limit}");
        }
        let first = b.list_page("p/", None, 7).await.unwrap();
        assert_eq!(first.keys, expected[..7]);
        assert_eq!(first.next.as_deref(), Some("p/05"));
        let second = b.list_page("p/", Some("p/05"), 7).await.unwrap();
        assert_eq!(second.keys, expected[7..14]);
        // A page that holds everything left says so.
        let all = b.list_page("p/", None, 100).await.unwrap();
        assert_eq!(all.keys, expected);
        assert_eq!(all.next, None);
        let empty = b.list_page("nothing/", None, 10).await.unwrap();
        assert_eq!(empty, arca_storage::ListPage::default());
    }

    pub(super) async fn list_page_start_after(b: &Arc<dyn Backend>) {
        put_all(b, &["p/", "p/a", "p/b", "p/c", "p", "p0", "o", "q", "pa"]).await;
        let keys = |page: arca_storage::ListPage| page.keys;
        let after = |s: &'static str| Some(s);
        let page = |start_after: Option<&'static str>| {
            let b = Arc::clone(b);
            async move { b.list_page("p/", start_after, 10).await.unwrap() }
        };
        // Inside the prefix: strictly after, whether or not the key exists.
        assert_eq!(keys(page(after("p/a")).await), ["p/b", "p/c"]);
        assert_eq!(keys(page(after("p/aa")).await), ["p/b", "p/c"]);
        assert_eq!(keys(page(after("p/")).await), ["p/a", "p/b", "p/c"]);
        assert_eq!(keys(page(after("p/c")).await), Vec::<String>::new());
        // Before the prefix: the whole prefix.
        for before in ["", "a", "o", "p", "p.", "p.zzz"] {
            let got = b.list_page("p/", Some(before), 10).await.unwrap();
            assert_eq!(
                got.keys,
                ["p/", "p/a", "p/b", "p/c"],
                "start_after {before:?}"
            );
            assert_eq!(got.next, None);
        }
        // After the prefix's range: nothing, and no next page.
        for beyond in ["p0", "p/\u{10ffff}", "q", "z"] {
            let got = b.list_page("p/", Some(beyond), 10).await.unwrap();
            assert_eq!(
                got,
                arca_storage::ListPage::default(),
                "start_after {beyond:?}"
            );
        }
        // Empty prefix with start_after walks the rest of the store.
        assert_eq!(
            b.list_page("", Some("p/c"), 10).await.unwrap().keys,
            ["p0", "pa", "q"]
        );
    }

    pub(super) async fn list_page_limit_is_clamped(b: &Arc<dyn Backend>) {
        let names: Vec<String> = (0..MAX_LIST_PAGE + 5)
            .map(|i| format!("L/{i:05}"))
            .collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        put_all(b, &keys).await;
        for limit in [MAX_LIST_PAGE + 1, 5000, usize::MAX] {
            let page = b.list_page("L/", None, limit).await.unwrap();
            assert_eq!(page.keys.len(), MAX_LIST_PAGE, "limit {limit}");
            assert_eq!(page.keys, names[..MAX_LIST_PAGE]);
            assert_eq!(
                page.next.as_deref(),
                Some(names[MAX_LIST_PAGE - 1].as_str())
            );
        }
        let exact = b.list_page("L/", None, MAX_LIST_PAGE).await.unwrap();
        assert_eq!(exact.keys.len(), MAX_LIST_PAGE);
        // `list` walks past one page.
        assert_eq!(b.list("L/").await.unwrap(), names);
        assert_eq!(walk(b, "L/", MAX_LIST_PAGE).await, names);
        // A limit of zero is raised to one, so a paging loop always progresses.
        let zero = b.list_page("L/", None, 0).await.unwrap();
        assert_eq!(zero.keys, names[..1]);
        assert_eq!(zero.next.as_deref(), Some(names[0].as_str()));
    }

    pub(super) async fn compare_and_swap(b: &Arc<dyn Backend>) {
        // Absent → create.
        assert!(b.compare_and_swap("c", None, Some(v("1"))).await.unwrap());
        assert_eq!(b.get("c").await.unwrap(), Some(v("1")));
        // Expected absent, but present: no swap, nothing written.
        assert!(!b.compare_and_swap("c", None, Some(v("2"))).await.unwrap());
        assert_eq!(b.get("c").await.unwrap(), Some(v("1")));
        // Mismatches, including a prefix and an extension of the stored value.
        for wrong in ["0", "", "10", "1\0"] {
            assert!(
                !b.compare_and_swap("c", Some(wrong.as_bytes()), Some(v("2")))
                    .await
                    .unwrap()
            );
            assert!(
                !b.compare_and_swap("c", Some(wrong.as_bytes()), None)
                    .await
                    .unwrap()
            );
            assert_eq!(b.get("c").await.unwrap(), Some(v("1")));
        }
        // Match → replace.
        assert!(
            b.compare_and_swap("c", Some(b"1"), Some(v("2")))
                .await
                .unwrap()
        );
        assert_eq!(b.get("c").await.unwrap(), Some(v("2")));
        // Match with None → delete.
        assert!(b.compare_and_swap("c", Some(b"2"), None).await.unwrap());
        assert_eq!(b.get("c").await.unwrap(), None);
        assert_eq!(b.list("").await.unwrap(), Vec::<String>::new());
        // Expected a value, but absent: no swap, nothing created.
        assert!(
            !b.compare_and_swap("c", Some(b"2"), Some(v("3")))
                .await
                .unwrap()
        );
        assert!(!b.compare_and_swap("c", Some(b"2"), None).await.unwrap());
        assert_eq!(b.get("c").await.unwrap(), None);
        // Absent and expected absent, deleting: the condition holds, nothing to remove.
        assert!(b.compare_and_swap("c", None, None).await.unwrap());
        assert_eq!(b.get("c").await.unwrap(), None);
        assert_eq!(b.list("").await.unwrap(), Vec::<String>::new());
        // A swap on one key leaves its neighbours alone.
        b.put("c0", v("n")).await.unwrap();
        assert!(b.compare_and_swap("c", None, Some(v("4"))).await.unwrap());
        assert_eq!(b.get("c0").await.unwrap(), Some(v("n")));
    }

    pub(super) async fn batch_applies_everything(b: &Arc<dyn Backend>) {
        b.put("d", v("old")).await.unwrap();
        b.put("a", v("old-a")).await.unwrap();
        let ops = vec![
            BatchOp::Put {
                key: "c".into(),
                value: v("3"),
            },
            BatchOp::Delete { key: "d".into() },
            BatchOp::Put {
                key: "a".into(),
                value: v("1"),
            },
            BatchOp::Delete {
                key: "absent".into(),
            },
            BatchOp::Put {
                key: "b".into(),
                value: v("2"),
            },
        ];
        let batch = Batch::from_ops(ops.clone()).unwrap();
        // Operations keep the order they were added in.
        assert_eq!(batch.ops(), &ops[..]);
        assert_eq!(batch.len(), 5);
        b.batch(batch).await.unwrap();
        assert_eq!(b.get("a").await.unwrap(), Some(v("1")));
        assert_eq!(b.get("b").await.unwrap(), Some(v("2")));
        assert_eq!(b.get("c").await.unwrap(), Some(v("3")));
        assert_eq!(b.get("d").await.unwrap(), None);
        assert_eq!(b.list("").await.unwrap(), ["a", "b", "c"]);
        // An empty batch is a no-op.
        b.batch(Batch::new()).await.unwrap();
        assert_eq!(b.list("").await.unwrap(), ["a", "b", "c"]);
    }

    pub(super) async fn invalid_batches_are_refused_whole(b: &Arc<dyn Backend>) {
        b.put("keep", v("kept")).await.unwrap();
        let put = |key: &str| BatchOp::Put {
            key: key.to_owned(),
            value: v("new"),
        };
        let refused: Vec<(Vec<BatchOp>, &str)> = vec![
            (vec![put("x"), put("keep"), put("x")], "repeated key"),
            (
                vec![
                    put("x"),
                    BatchOp::Delete {
                        key: "x".to_owned(),
                    },
                ],
                "put and delete of one key",
            ),
            (
                (0..=MAX_BATCH_WEIGHT)
                    .map(|i| put(&format!("w{i}")))
                    .collect(),
                "too many items",
            ),
            (
                (0..4)
                    .map(|i| BatchOp::Put {
                        key: format!("big{i}"),
                        value: vec![0; MAX_VALUE_LEN],
                    })
                    .collect(),
                "too many bytes",
            ),
        ];
        for (ops, why) in refused {
            let err = Batch::from_ops(ops.clone()).unwrap_err();
            assert!(
                matches!(err, BackendError::InvalidBatch { .. }),
                "{why}: {err:?}"
            );
            // The operations before the failing one form a valid batch, and the refused
            // operation is not in it.
            let mut partial = Batch::new();
            let mut accepted = 0;
            for op in ops {
                if partial.push(op).is_err() {
                    break;
                }
                accepted += 1;
            }
            assert_eq!(partial.len(), accepted, "{why}");
        }
        let err = Batch::from_ops([put("x"), put(""), put("y")]).unwrap_err();
        assert!(matches!(err, BackendError::InvalidKey { .. }), "{err:?}");
        let err = Batch::from_ops([
            put("x"),
            BatchOp::Put {
                key: "y".into(),
                value: vec![0; MAX_VALUE_LEN + 1],
            },
        ])
        .unwrap_err();
        assert!(matches!(err, BackendError::ValueTooLarge { .. }), "{err:?}");
        // None of it reached the store.
        assert_eq!(b.list("").await.unwrap(), ["keep"]);
        assert_eq!(b.get("keep").await.unwrap(), Some(v("kept")));
    }

    pub(super) async fn largest_batches_are_accepted(b: &Arc<dyn Backend>) {
        // The most items...
        let mut batch = Batch::new();
        for i in 0..MAX_BATCH_WEIGHT {
            batch.put(format!("w/{i:03}"), vec![i as u8; 10]).unwrap();
        }
        b.batch(batch).await.unwrap();
        let listed = b.list("w/").await.unwrap();
        assert_eq!(listed.len(), MAX_BATCH_WEIGHT);
        for (i, key) in listed.iter().enumerate() {
            assert_eq!(b.get(key).await.unwrap(), Some(vec![i as u8; 10]));
        }
        // ...and the most bytes: three values of the largest size, a delete, and one more
        // value that brings keys and values to exactly the byte limit.
        let mut batch = Batch::new();
        let mut used = 0;
        for i in 0..3u8 {
            let key = format!("big{i}");
            used += key.len() + MAX_VALUE_LEN;
            batch.put(key, vec![i; MAX_VALUE_LEN]).unwrap();
        }
        batch.delete("w/000").unwrap();
        used += "w/000".len() + "fill".len();
        let fill = vec![0xF1; MAX_BATCH_BYTES - used];
        batch.put("fill", fill.clone()).unwrap();
        let mut over = batch.clone();
        let err = over.put("x", Vec::new()).unwrap_err();
        assert!(matches!(err, BackendError::InvalidBatch { .. }), "{err:?}");
        b.batch(batch).await.unwrap();
        for i in 0..3u8 {
            assert_eq!(
                b.get(&format!("big{i}")).await.unwrap(),
                Some(vec![i; MAX_VALUE_LEN])
            );
        }
        assert_eq!(b.get("fill").await.unwrap(), Some(fill));
        assert_eq!(b.get("w/000").await.unwrap(), None);
    }

    pub(super) async fn concurrent_writers_are_all_visible(b: &Arc<dyn Backend>) {
        const TASKS: usize = 16;
        const PUTS: usize = 50;
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let b = Arc::clone(b);
            handles.push(tokio::spawn(async move {
                for i in 0..PUTS {
                    let key = format!("w/{t:02}/{i:03}");
                    b.put(&key, v(&format!("value {t} {i}"))).await.unwrap();
                    // Once acknowledged, a write is visible to the next read.
                    assert_eq!(
                        b.get(&key).await.unwrap(),
                        Some(v(&format!("value {t} {i}")))
                    );
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let listed = b.list("w/").await.unwrap();
        assert_eq!(listed.len(), TASKS * PUTS);
        for t in 0..TASKS {
            for i in 0..PUTS {
                let key = format!("w/{t:02}/{i:03}");
                assert_eq!(
                    b.get(&key).await.unwrap(),
                    Some(v(&format!("value {t} {i}"))),
                    "{key}"
                );
            }
        }
    }

    pub(super) async fn concurrent_cas_increments_lose_nothing(b: &Arc<dyn Backend>) {
        const TASKS: u64 = 8;
        const INCREMENTS: u64 = 25;
        b.put("counter", 0u64.to_be_bytes().to_vec()).await.unwrap();
        let mut handles = Vec::new();
        for _ in 0..TASKS {
            let b = Arc::clone(b);
            handles.push(tokio::spawn(async move {
                let mut swaps = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let current = b.get("counter").await.unwrap().unwrap();
                        let n = u64::from_be_bytes(current.as_slice().try_into().unwrap());
                        let next = (n + 1).to_be_bytes().to_vec();
                        if b.compare_and_swap("counter", Some(&current), Some(next))
                            .await
                            .unwrap()
                        {
                            swaps += 1;
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                swaps
            }));
        }
        let mut swaps = 0;
        for handle in handles {
            swaps += handle.await.unwrap();
        }
        assert_eq!(swaps, TASKS * INCREMENTS);
        let stored = b.get("counter").await.unwrap().unwrap();
        assert_eq!(
            u64::from_be_bytes(stored.as_slice().try_into().unwrap()),
            TASKS * INCREMENTS
        );
    }

    /// Values are never torn, and a batch is never seen half applied: the batch writes `y`
    /// before `x`, so a reader that reads `y` and then `x` would see `x` behind `y` if the
    /// batch were visible in pieces.
    pub(super) async fn readers_never_see_half_a_write(b: &Arc<dyn Backend>) {
        const ROUNDS: u32 = 60;
        const VALUE_LEN: usize = 64 * 1024;
        let n = |bytes: Option<Vec<u8>>| -> u32 {
            bytes.map_or(0, |b| u32::from_be_bytes(b[..4].try_into().unwrap()))
        };
        let writer = {
            let b = Arc::clone(b);
            tokio::spawn(async move {
                for i in 1..=ROUNDS {
                    let mut batch = Batch::new();
                    batch.put("y", i.to_be_bytes().to_vec()).unwrap();
                    batch.put("x", i.to_be_bytes().to_vec()).unwrap();
                    b.batch(batch).await.unwrap();
                    b.put("blob", vec![i as u8; VALUE_LEN]).await.unwrap();
                }
            })
        };
        let mut readers = Vec::new();
        for _ in 0..3 {
            let b = Arc::clone(b);
            readers.push(tokio::spawn(async move {
                let mut last_blob = 0u8;
                loop {
                    let y = n(b.get("y").await.unwrap());
                    let x = n(b.get("x").await.unwrap());
                    assert!(x >= y, "saw y = {y} but then x = {x}: half a batch");
                    if let Some(blob) = b.get("blob").await.unwrap() {
                        assert_eq!(blob.len(), VALUE_LEN);
                        assert!(blob.iter().all(|&byte| byte == blob[0]), "torn value");
                        assert!(blob[0] >= last_blob, "a read went back in time");
                        last_blob = blob[0];
                    }
                    if y == ROUNDS {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        writer.await.unwrap();
        for reader in readers {
            reader.await.unwrap();
        }
    }

    /// The barrier works the same over every backend: round trip, atomic batches, nothing in
    /// clear underneath.
    pub(super) async fn barrier_over_backend(b: Arc<dyn Backend>) {
        let barrier = Barrier::new(Arc::clone(&b));
        let root = RootKey::generate().unwrap();
        assert!(!barrier.is_initialized().await.unwrap());
        barrier.initialize(&root).await.unwrap();
        assert!(matches!(
            barrier.initialize(&root).await,
            Err(BarrierError::AlreadyInitialized)
        ));
        barrier.unseal(&root).await.unwrap();

        barrier
            .put("app/one", b"conformance-plain-1")
            .await
            .unwrap();
        barrier.put("app/empty", b"").await.unwrap();
        barrier
            .batch(&[
                BarrierOp::Put("app/two", b"conformance-plain-2"),
                BarrierOp::Delete("app/empty"),
            ])
            .await
            .unwrap();
        // One refused operation refuses the whole batch.
        let refusals: [&[BarrierOp<'_>]; 3] = [
            &[
                BarrierOp::Put("app/three", b"3"),
                BarrierOp::Put("_barrier/x", b"x"),
            ],
            &[
                BarrierOp::Put("app/three", b"3"),
                BarrierOp::Delete("app/three"),
            ],
            &[BarrierOp::Delete("app/one"), BarrierOp::Put("", b"x")],
        ];
        for ops in refusals {
            assert!(barrier.batch(ops).await.is_err());
        }
        assert_eq!(barrier.list("").await.unwrap(), ["app/one", "app/two"]);
        assert_eq!(
            barrier
                .get("app/one")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            b"conformance-plain-1"
        );
        assert_eq!(
            barrier
                .get("app/two")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            b"conformance-plain-2"
        );
        for key in b.list("").await.unwrap() {
            let raw = b.get(&key).await.unwrap().unwrap();
            assert!(
                !raw.windows(16).any(|w| w == b"conformance-plai"),
                "{key} in clear"
            );
        }
        assert!(
            b.list("")
                .await
                .unwrap()
                .contains(&"_barrier/keyring".to_owned())
        );
    }

    pub(super) async fn writes_survive_reopen(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(dir.path());
            b.put("a", v("1")).await.unwrap();
            b.put("gone", v("x")).await.unwrap();
            b.put("empty", Vec::new()).await.unwrap();
            b.delete("gone").await.unwrap();
            assert!(b.compare_and_swap("c", None, Some(v("cas"))).await.unwrap());
            let mut batch = Batch::new();
            batch.put("b/1", v("batch 1")).unwrap();
            batch.put("b/2", vec![9; MAX_VALUE_LEN]).unwrap();
            batch.delete("a").unwrap();
            b.batch(batch).await.unwrap();
            b.put("a", v("2")).await.unwrap();
            b.flush().await.unwrap();
        }
        // Everything was dropped: the same path opens again and holds every write.
        let b = open(dir.path());
        assert_eq!(b.list("").await.unwrap(), ["a", "b/1", "b/2", "c", "empty"]);
        assert_eq!(b.get("a").await.unwrap(), Some(v("2")));
        assert_eq!(b.get("b/1").await.unwrap(), Some(v("batch 1")));
        assert_eq!(b.get("b/2").await.unwrap(), Some(vec![9; MAX_VALUE_LEN]));
        assert_eq!(b.get("c").await.unwrap(), Some(v("cas")));
        assert_eq!(b.get("empty").await.unwrap(), Some(Vec::new()));
        assert_eq!(b.get("gone").await.unwrap(), None);
        // And it keeps working after the reopen.
        b.put("after", v("reopen")).await.unwrap();
        drop(b);
        let b = open(dir.path());
        assert_eq!(b.get("after").await.unwrap(), Some(v("reopen")));
        assert_eq!(b.list("").await.unwrap().len(), 6);
    }

    pub(super) async fn barrier_survives_reopen(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::generate().unwrap();
        {
            let barrier = Barrier::new(open(dir.path()));
            barrier.initialize(&root).await.unwrap();
            barrier.unseal(&root).await.unwrap();
            barrier.put("old", b"before rotation").await.unwrap();
            assert_eq!(barrier.rotate().await.unwrap(), 2);
            barrier.put("new", b"after rotation").await.unwrap();
            barrier.seal().await;
        }
        let barrier = Barrier::new(open(dir.path()));
        assert!(barrier.is_initialized().await.unwrap());
        assert!(matches!(
            barrier.get("old").await,
            Err(BarrierError::Sealed)
        ));
        barrier.unseal(&root).await.unwrap();
        assert_eq!(barrier.key_status().unwrap().term, 2);
        assert_eq!(
            barrier.get("old").await.unwrap().unwrap().expose_secret(),
            b"before rotation"
        );
        assert_eq!(
            barrier.get("new").await.unwrap().unwrap().expose_secret(),
            b"after rotation"
        );
    }
}
