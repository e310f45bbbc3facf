use std::sync::Arc;

use arca_storage::MemoryBackend;
use serde_json::json;

use super::*;
use crate::Arca;
use crate::config::StorageKind;
use crate::seal::{InitRequest, SealConfig};

async fn arca() -> (Arca, MountEntry) {
    let arca = crate::handle::test_support::unsealed_in_memory().await;
    let mount = arca
        .mounts()
        .ensure("secret/", MountKind::KvV2)
        .await
        .unwrap();
    (arca, mount)
}

fn data(v: serde_json::Value) -> SecretData {
    SecretData::from_object(v.as_object().unwrap()).unwrap()
}

async fn live(arca: &Arca, mount: &MountEntry, path: &str, version: Option<u64>) -> Value {
    match arca.kv().read(mount, path, version).await.unwrap() {
        Some(VersionRead::Live { data, .. }) => Value::Object(data.to_json().unwrap()),
        other => panic!("expected live data, got {other:?}"),
    }
}

async fn gone(arca: &Arca, mount: &MountEntry, path: &str, version: Option<u64>) -> VersionInfo {
    match arca.kv().read(mount, path, version).await.unwrap() {
        Some(VersionRead::Gone { info, .. }) => info,
        other => panic!("expected a gone version, got {other:?}"),
    }
}

async fn raw_keys(arca: &Arca, prefix: &str) -> Vec<String> {
    arca.barrier().backend().list(prefix).await.unwrap()
}

/// The data and the wrapped-key records of `path`'s versions written by this build.
async fn version_records(
    arca: &Arca,
    mount: &MountEntry,
    path: &str,
) -> (Vec<String>, Vec<String>) {
    raw_keys(arca, &format!("{}data/{path}/", mount.storage_prefix()))
        .await
        .into_iter()
        .partition(|k| !k.ends_with(WRAPPED_KEY_SUFFIX))
}

fn data_record(mount: &MountEntry, path: &str, version: u64) -> String {
    format!("{}data/{path}/{version}", mount.storage_prefix())
}

fn dkey_record(mount: &MountEntry, path: &str, version: u64) -> String {
    format!("{}{WRAPPED_KEY_SUFFIX}", data_record(mount, path, version))
}

#[tokio::test]
async fn versions_cas_and_reads() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    assert!(!kv.exists(&mount, "app/db").await.unwrap());
    let w = kv
        .write(&mount, "app/db", &data(json!({"pw": "one"})), Some(0))
        .await
        .unwrap();
    assert_eq!(w.info.version, 1);
    assert!(kv.exists(&mount, "app/db").await.unwrap());
    // cas 0 is create-only; a stale cas is refused; nothing is written by a refused write.
    assert!(matches!(
        kv.write(&mount, "app/db", &data(json!({"pw": "x"})), Some(0))
            .await,
        Err(KvError::CasMismatch)
    ));
    assert!(matches!(
        kv.write(&mount, "app/db", &data(json!({"pw": "x"})), Some(5))
            .await,
        Err(KvError::CasMismatch)
    ));
    kv.write(&mount, "app/db", &data(json!({"pw": "two"})), Some(1))
        .await
        .unwrap();
    kv.write(&mount, "app/db", &data(json!({"pw": "three"})), None)
        .await
        .unwrap();
    assert_eq!(live(&arca, &mount, "app/db", None).await["pw"], "three");
    assert_eq!(live(&arca, &mount, "app/db", Some(1)).await["pw"], "one");
    assert_eq!(live(&arca, &mount, "app/db", Some(0)).await["pw"], "three");
    assert!(kv.read(&mount, "app/db", Some(9)).await.unwrap().is_none());
    assert!(kv.read(&mount, "nope", None).await.unwrap().is_none());
    let meta = kv.read_metadata(&mount, "app/db").await.unwrap().unwrap();
    assert_eq!(meta.current_version, 3);
    assert_eq!(meta.versions.len(), 3);
}

#[tokio::test]
async fn cas_required_by_key_or_mount() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    kv.write_metadata(
        &mount,
        "k",
        MetadataUpdate {
            cas_required: Some(true),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        kv.write(&mount, "k", &data(json!({"a": 1})), None).await,
        Err(KvError::CasRequired)
    ));
    kv.write(&mount, "k", &data(json!({"a": 1})), Some(0))
        .await
        .unwrap();
    kv.write_config(
        &mount,
        ConfigUpdate {
            cas_required: Some(true),
            ..ConfigUpdate::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        kv.write(&mount, "other", &data(json!({"a": 1})), None)
            .await,
        Err(KvError::CasRequired)
    ));
}

#[tokio::test]
async fn max_versions_prunes_records_too() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    kv.write_metadata(
        &mount,
        "p",
        MetadataUpdate {
            max_versions: Some(3),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    for i in 1..=5 {
        kv.write(&mount, "p", &data(json!({ "i": i })), None)
            .await
            .unwrap();
    }
    let meta = kv.read_metadata(&mount, "p").await.unwrap().unwrap();
    assert_eq!(meta.versions.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(meta.oldest_version, 3);
    assert!(kv.read(&mount, "p", Some(2)).await.unwrap().is_none());
    let (data_keys, dkeys) = version_records(&arca, &mount, "p").await;
    assert_eq!(data_keys.len(), 3, "{data_keys:?}");
    assert_eq!(dkeys.len(), 3);

    // Lowering max_versions a lot prunes in several batches at the next write.
    kv.write_metadata(
        &mount,
        "q",
        MetadataUpdate {
            max_versions: Some(MAX_VERSIONS_LIMIT),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    for i in 0..120 {
        kv.write(&mount, "q", &data(json!({ "i": i })), None)
            .await
            .unwrap();
    }
    kv.write_metadata(
        &mount,
        "q",
        MetadataUpdate {
            max_versions: Some(2),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    kv.write(&mount, "q", &data(json!({"i": "last"})), None)
        .await
        .unwrap();
    let meta = kv.read_metadata(&mount, "q").await.unwrap().unwrap();
    assert_eq!(
        meta.versions.keys().copied().collect::<Vec<_>>(),
        [120, 121]
    );
    assert_eq!(meta.oldest_version, 120);
    let (left, _) = version_records(&arca, &mount, "q").await;
    assert_eq!(left.len(), 2);
}

#[tokio::test]
async fn delete_undelete_destroy() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    for i in 1..=3 {
        kv.write(&mount, "s", &data(json!({ "v": i })), None)
            .await
            .unwrap();
    }
    kv.delete_latest(&mount, "s").await.unwrap();
    let info = gone(&arca, &mount, "s", None).await;
    assert_eq!(info.version, 3);
    assert!(info.deletion_time.is_some() && !info.destroyed);
    kv.undelete_versions(&mount, "s", &[3]).await.unwrap();
    assert_eq!(live(&arca, &mount, "s", None).await["v"], 3);
    kv.delete_versions(&mount, "s", &[1, 2, 99]).await.unwrap();
    gone(&arca, &mount, "s", Some(1)).await;
    assert!(matches!(
        kv.delete_versions(&mount, "s", &[]).await,
        Err(KvError::InvalidRequest(_))
    ));

    let data_key = data_record(&mount, "s", 2);
    let dkey_key = dkey_record(&mount, "s", 2);
    let old_ciphertext = arca.barrier().get(&data_key).await.unwrap().unwrap();
    kv.destroy_versions(&mount, "s", &[2]).await.unwrap();
    let info = gone(&arca, &mount, "s", Some(2)).await;
    assert!(info.destroyed);
    assert!(arca.barrier().get(&data_key).await.unwrap().is_none());
    assert!(arca.barrier().get(&dkey_key).await.unwrap().is_none());
    // Undelete cannot bring a destroyed version back.
    kv.undelete_versions(&mount, "s", &[2]).await.unwrap();
    assert!(gone(&arca, &mount, "s", Some(2)).await.destroyed);
    // The old ciphertext cannot be opened with any wrapped key that is left.
    let other_wrapped = arca
        .barrier()
        .get(&dkey_record(&mount, "s", 3))
        .await
        .unwrap()
        .unwrap();
    for version in [2, 3] {
        assert!(matches!(
            cipher::open(
                arca.kms().as_ref(),
                mount.uuid(),
                "s",
                version,
                old_ciphertext.expose_secret(),
                other_wrapped.expose_secret(),
            )
            .await,
            Err(KvError::Integrity)
        ));
    }
}

#[tokio::test]
async fn many_versions_destroyed_and_deleted_in_batches() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    kv.write_metadata(
        &mount,
        "big",
        MetadataUpdate {
            max_versions: Some(500),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    for i in 0..130 {
        kv.write(&mount, "big", &data(json!({ "i": i })), None)
            .await
            .unwrap();
    }
    let all: Vec<u64> = (1..=130).collect();
    kv.destroy_versions(&mount, "big", &all[..100])
        .await
        .unwrap();
    let meta = kv.read_metadata(&mount, "big").await.unwrap().unwrap();
    assert_eq!(meta.versions.values().filter(|v| v.destroyed).count(), 100);
    let prefix = mount.storage_prefix();
    assert_eq!(version_records(&arca, &mount, "big").await.0.len(), 30);
    kv.delete_metadata(&mount, "big").await.unwrap();
    assert!(kv.read_metadata(&mount, "big").await.unwrap().is_none());
    assert!(raw_keys(&arca, &format!("{prefix}data/")).await.is_empty());
    assert!(raw_keys(&arca, &format!("{prefix}dkey/")).await.is_empty());
    assert!(raw_keys(&arca, &format!("{prefix}meta/")).await.is_empty());
}

#[tokio::test]
async fn patch_merges() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    let patch = json!({"b": {"y": 2}, "a": null, "c": 3});
    let patch = patch.as_object().unwrap();
    assert!(kv.patch(&mount, "m", patch, None).await.unwrap().is_none());
    kv.write(
        &mount,
        "m",
        &data(json!({"a": 1, "b": {"x": 1}, "keep": true})),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        kv.patch(&mount, "m", patch, Some(7)).await,
        Err(KvError::CasMismatch)
    ));
    match kv.patch(&mount, "m", patch, Some(1)).await.unwrap() {
        Some(PatchOutcome::Written(w)) => assert_eq!(w.info.version, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        live(&arca, &mount, "m", None).await,
        json!({"b": {"x": 1, "y": 2}, "c": 3, "keep": true})
    );
    kv.delete_latest(&mount, "m").await.unwrap();
    assert!(matches!(
        kv.patch(&mount, "m", patch, None).await.unwrap(),
        Some(PatchOutcome::Gone { .. })
    ));
}

#[tokio::test]
async fn lists_children_and_folders() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    for path in ["a", "a/b", "a/c/d", "b-x", "z/1", "z/2", "a b"] {
        kv.write(&mount, path, &data(json!({"k": "v"})), None)
            .await
            .unwrap();
    }
    assert_eq!(
        kv.list(&mount, "").await.unwrap(),
        ["a", "a b", "a/", "b-x", "z/"]
    );
    assert_eq!(kv.list(&mount, "a").await.unwrap(), ["b", "c/"]);
    assert_eq!(kv.list(&mount, "a/c/").await.unwrap(), ["d"]);
    assert!(kv.list(&mount, "nothing/").await.unwrap().is_empty());
    assert!(kv.list(&mount, "../").await.is_err());
}

#[tokio::test]
async fn delete_version_after_and_config() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    kv.write_metadata(
        &mount,
        "t",
        MetadataUpdate {
            delete_version_after: Some(Duration::from_secs(1)),
            custom_metadata: Some([("owner".to_owned(), "ops".to_owned())].into()),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    let w = kv
        .write(&mount, "t", &data(json!({"a": 1})), None)
        .await
        .unwrap();
    assert!(w.info.deletion_time.is_some());
    assert_eq!(
        w.custom_metadata.unwrap().get("owner").map(String::as_str),
        Some("ops")
    );
    assert_eq!(live(&arca, &mount, "t", None).await["a"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gone(&arca, &mount, "t", None).await;

    // A mount-wide negative value turns it off for every key.
    let config = kv
        .write_config(
            &mount,
            ConfigUpdate {
                delete_version_after: Some(DeleteVersionAfter::from_signed_secs(-5)),
                max_versions: Some(4),
                ..ConfigUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(config.delete_version_after, DeleteVersionAfter::Disabled);
    let w = kv
        .write(&mount, "t", &data(json!({"a": 2})), None)
        .await
        .unwrap();
    assert!(w.info.deletion_time.is_none());
    assert_eq!(kv.read_config(&mount).await.unwrap().max_versions, 4);
    assert!(matches!(
        kv.write_config(
            &mount,
            ConfigUpdate {
                max_versions: Some(MAX_VERSIONS_LIMIT + 1),
                ..ConfigUpdate::default()
            }
        )
        .await,
        Err(KvError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn metadata_patch_and_validation() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    assert!(
        !kv.patch_metadata(&mount, "x", MetadataPatch::default())
            .await
            .unwrap()
    );
    kv.write_metadata(
        &mount,
        "x",
        MetadataUpdate {
            custom_metadata: Some(
                [
                    ("a".to_owned(), "1".to_owned()),
                    ("b".to_owned(), "2".to_owned()),
                ]
                .into(),
            ),
            ..MetadataUpdate::default()
        },
    )
    .await
    .unwrap();
    assert!(
        kv.patch_metadata(
            &mount,
            "x",
            MetadataPatch {
                custom_metadata: Some(
                    [
                        ("a".to_owned(), None),
                        ("c".to_owned(), Some("3".to_owned()))
                    ]
                    .into()
                ),
                max_versions: Some(7),
                ..MetadataPatch::default()
            },
        )
        .await
        .unwrap()
    );
    let meta = kv.read_metadata(&mount, "x").await.unwrap().unwrap();
    assert_eq!(meta.max_versions, 7);
    assert_eq!(
        meta.custom_metadata
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
    let too_many: BTreeMap<String, String> = (0..65).map(|i| (i.to_string(), "v".into())).collect();
    assert!(matches!(
        kv.write_metadata(
            &mount,
            "x",
            MetadataUpdate {
                custom_metadata: Some(too_many),
                ..MetadataUpdate::default()
            }
        )
        .await,
        Err(KvError::InvalidRequest(_))
    ));
    // An empty update creates nothing.
    kv.write_metadata(&mount, "y", MetadataUpdate::default())
        .await
        .unwrap();
    assert!(kv.read_metadata(&mount, "y").await.unwrap().is_none());
}

#[tokio::test]
async fn limits_and_bad_paths_write_nothing() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    let big = "x".repeat(MAX_DATA_BYTES);
    assert!(matches!(
        SecretData::from_object(json!({ "v": big }).as_object().unwrap()),
        Err(KvError::TooLarge { .. })
    ));
    // Exactly at the limit is accepted.
    let fits = "x".repeat(MAX_DATA_BYTES - r#"{"v":""}"#.len());
    let fits = data(json!({ "v": fits }));
    assert_eq!(fits.len(), MAX_DATA_BYTES);
    kv.write(&mount, "big", &fits, None).await.unwrap();
    assert_eq!(
        live(&arca, &mount, "big", None).await["v"]
            .as_str()
            .unwrap()
            .len(),
        MAX_DATA_BYTES - 8
    );
    for bad in ["", "a/../b", "a//b", "a\0b", "/a", "a/"] {
        assert!(
            matches!(
                kv.write(&mount, bad, &data(json!({"a": 1})), None).await,
                Err(KvError::InvalidPath(_))
            ),
            "{bad:?}"
        );
    }
    let deep = vec!["d"; 100].join("/");
    assert!(matches!(
        kv.write(&mount, &deep, &data(json!({"a": 1})), None).await,
        Err(KvError::InvalidPath(_))
    ));
    assert_eq!(kv.list(&mount, "").await.unwrap(), ["big"]);
}

#[tokio::test]
async fn values_never_reach_the_backend_in_clear() {
    let (arca, mount) = arca().await;
    let marker = "correct-horse-battery-staple";
    arca.kv()
        .write(&mount, "clear", &data(json!({ "pw": marker })), None)
        .await
        .unwrap();
    let backend = arca.barrier().backend();
    for key in backend.list("").await.unwrap() {
        let raw = backend.get(&key).await.unwrap().unwrap();
        assert!(
            !raw.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{key} holds the value in clear"
        );
    }
}

#[tokio::test]
async fn disabled_mounts_refuse_and_lose_their_data() {
    let (arca, mount) = arca().await;
    arca.kv()
        .write(&mount, "a", &data(json!({"x": 1})), None)
        .await
        .unwrap();
    arca.mounts().disable("secret").await.unwrap();
    assert!(matches!(
        arca.kv().read(&mount, "a", None).await,
        Err(KvError::NoSuchMount(_))
    ));
    assert!(raw_keys(&arca, &mount.storage_prefix()).await.is_empty());
    let again = arca
        .mounts()
        .ensure("secret/", MountKind::KvV2)
        .await
        .unwrap();
    assert!(arca.kv().read(&again, "a", None).await.unwrap().is_none());
}

#[test]
fn subkeys_strip_values() {
    let value = json!({"a": 1, "b": {"c": "x", "d": {"e": true}}, "f": {}});
    let stripped = strip_values(value.as_object().unwrap(), 0, 1);
    assert_eq!(
        stripped,
        json!({"a": null, "b": {"c": null, "d": {"e": null}}, "f": null})
    );
    let shallow = strip_values(value.as_object().unwrap(), 1, 1);
    assert_eq!(shallow, json!({"a": null, "b": null, "f": null}));
}

#[test]
fn secret_data_debug_is_redacted() {
    let d = data(json!({"pw": "hunter2"}));
    let text = format!("{d:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_distinct_versions_and_one_create() {
    let (arca, mount) = arca().await;
    let arca = Arc::new(arca);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (arca, mount) = (Arc::clone(&arca), mount.clone());
        tasks.push(tokio::spawn(async move {
            let create = arca
                .kv()
                .write(&mount, "once", &data(json!({ "i": i })), Some(0))
                .await
                .is_ok();
            let version = arca
                .kv()
                .write(&mount, "many", &data(json!({ "i": i })), None)
                .await
                .unwrap()
                .info
                .version;
            (create, version)
        }));
    }
    let mut creates = 0;
    let mut versions = Vec::new();
    for task in tasks {
        let (created, version) = task.await.unwrap();
        creates += usize::from(created);
        versions.push(version);
    }
    assert_eq!(
        creates, 1,
        "check-and-set 0 let more than one writer create the key"
    );
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_failed_write_leaves_the_key_as_it_was() {
    use arca_storage::backend::faulty::FaultyBackend;

    let faulty = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new())));
    let arca = Arca::open(faulty.clone(), StorageKind::Memory, SealConfig::Shamir)
        .await
        .unwrap();
    let init = arca
        .seal()
        .initialize(InitRequest {
            secret_shares: 1,
            secret_threshold: 1,
            ..InitRequest::default()
        })
        .await
        .unwrap();
    arca.seal().submit_share(&init.keys[0].hex).await.unwrap();
    let mount = arca
        .mounts()
        .ensure("secret/", MountKind::KvV2)
        .await
        .unwrap();
    arca.kv()
        .write_metadata(
            &mount,
            "k",
            MetadataUpdate {
                max_versions: Some(1),
                ..MetadataUpdate::default()
            },
        )
        .await
        .unwrap();
    arca.kv()
        .write(&mount, "k", &data(json!({"v": 1})), None)
        .await
        .unwrap();
    let before = raw_keys(&arca, &mount.storage_prefix()).await;
    // Fail each call of the write in turn (reads, the key provider, the batch); every failed
    // attempt must leave the records exactly as they were. The write that finally runs
    // unharmed also prunes version 1, so the same batch both adds and deletes.
    let mut n = 1;
    loop {
        faulty.fail_nth(n);
        let result = arca
            .kv()
            .write(&mount, "k", &data(json!({"v": 2})), None)
            .await;
        faulty.disarm();
        if result.is_ok() {
            break;
        }
        assert_eq!(
            raw_keys(&arca, &mount.storage_prefix()).await,
            before,
            "call {n}"
        );
        assert_eq!(live(&arca, &mount, "k", None).await["v"], 1);
        n += 1;
        assert!(n < 50, "the write never succeeded");
    }
    assert!(n > 1, "no call of the write was failed");
    assert_eq!(live(&arca, &mount, "k", None).await["v"], 2);
    assert!(
        arca.kv()
            .read(&mount, "k", Some(1))
            .await
            .unwrap()
            .is_none()
    );
    let (after, _) = version_records(&arca, &mount, "k").await;
    assert_eq!(after.len(), 1, "{after:?}");
}

/// Stores version `n` of `path` as the builds before adjacent version records did, under
/// `data/<path>/<n>` and `dkey/<path>/<n>`.
async fn put_first_layout_version(arca: &Arca, mount: &MountEntry, path: &str, n: u64) {
    let key_id = arca.kv().key_id().await.unwrap().to_owned();
    let json = json!({ "n": n }).to_string();
    let sealed = cipher::seal(
        arca.kms().as_ref(),
        &key_id,
        mount.uuid(),
        path,
        n,
        json.as_bytes(),
    )
    .await
    .unwrap();
    let prefix = mount.storage_prefix();
    let barrier = arca.barrier();
    barrier
        .put(&format!("{prefix}data/{path}/{n}"), &sealed.ciphertext)
        .await
        .unwrap();
    barrier
        .put(&format!("{prefix}dkey/{path}/{n}"), &sealed.wrapped_key)
        .await
        .unwrap();
}

#[tokio::test]
async fn versions_of_the_first_layout_stay_readable_and_leave_with_their_key() {
    let (arca, mount) = arca().await;
    let kv = arca.kv();
    let prefix = mount.storage_prefix();
    let dkey_prefix = format!("{prefix}dkey/");
    let first_layout_keys = || raw_keys(&arca, &dkey_prefix);
    // A key as an earlier build left it: metadata version 1, wrapped keys under dkey/.
    put_first_layout_version(&arca, &mount, "old", 1).await;
    put_first_layout_version(&arca, &mount, "old", 2).await;
    let meta_v1 = json!({
        "v": 1, "current": 2, "oldest": 0, "created": 1_000, "updated": 2_000,
        "max_versions": 3,
        "versions": { "1": { "created": 1_000 }, "2": { "created": 2_000 } },
    });
    arca.barrier()
        .put(&format!("{prefix}meta/old"), meta_v1.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(live(&arca, &mount, "old", Some(1)).await["n"], 1);
    assert_eq!(live(&arca, &mount, "old", None).await["n"], 2);

    // The next write puts its key beside its data; the old versions stay where they are.
    kv.write(&mount, "old", &data(json!({ "n": 3 })), None)
        .await
        .unwrap();
    let (data_keys, dkeys) = version_records(&arca, &mount, "old").await;
    assert_eq!(data_keys.len(), 3);
    assert_eq!(dkeys, [dkey_record(&mount, "old", 3)]);
    assert_eq!(first_layout_keys().await.len(), 2);
    let stored = arca
        .barrier()
        .get(&format!("{prefix}meta/old"))
        .await
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_slice(stored.expose_secret()).unwrap();
    assert_eq!(
        (stored["v"].as_u64(), stored["adjacent_from"].as_u64()),
        (Some(2), Some(3))
    );
    for n in 1..=3 {
        assert_eq!(live(&arca, &mount, "old", Some(n)).await["n"], n);
    }

    // Destroying and pruning remove the records of the first layout.
    kv.destroy_versions(&mount, "old", &[1]).await.unwrap();
    assert_eq!(first_layout_keys().await, [format!("{prefix}dkey/old/2")]);
    assert_eq!(version_records(&arca, &mount, "old").await.0.len(), 2);
    for n in 4..=5 {
        kv.write(&mount, "old", &data(json!({ "n": n })), None)
            .await
            .unwrap();
    }
    let meta = kv.read_metadata(&mount, "old").await.unwrap().unwrap();
    assert_eq!(meta.versions.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
    assert!(first_layout_keys().await.is_empty());
    let (data_keys, dkeys) = version_records(&arca, &mount, "old").await;
    assert_eq!((data_keys.len(), dkeys.len()), (3, 3));
    kv.delete_metadata(&mount, "old").await.unwrap();
    assert!(
        raw_keys(&arca, &prefix)
            .await
            .iter()
            .all(|k| k.ends_with("config"))
    );
}

#[test]
fn metadata_versions_name_their_layout() {
    let stored = |v: u32, adjacent: Option<u64>| {
        let mut doc = json!({
            "v": v, "current": 1, "oldest": 0, "created": 1, "updated": 1,
            "versions": { "1": { "created": 1 } },
        });
        if let Some(first) = adjacent {
            doc["adjacent_from"] = first.into();
        }
        meta::decode_meta(doc.to_string().as_bytes()).map(|m| m.adjacent_from)
    };
    assert_eq!(stored(1, None).unwrap(), None);
    assert_eq!(stored(2, Some(1)).unwrap(), Some(1));
    assert!(matches!(stored(1, Some(1)), Err(KvError::Corrupt)));
    assert!(matches!(stored(3, Some(1)), Err(KvError::Corrupt)));
    // Metadata with no version written by this build stays version 1 for earlier builds.
    let mut meta = KeyMetadata::new(SystemTime::UNIX_EPOCH);
    let doc: Value = serde_json::from_slice(&meta::encode_meta(&meta)).unwrap();
    assert_eq!(doc["v"], 1);
    meta.adjacent_from = Some(4);
    let doc: Value = serde_json::from_slice(&meta::encode_meta(&meta)).unwrap();
    assert_eq!(
        (doc["v"].as_u64(), doc["adjacent_from"].as_u64()),
        (Some(2), Some(4))
    );
}

#[test]
fn secret_data_embeds_as_raw_json_only_when_it_is_an_object() {
    let data = SecretData::from_object(json!({ "b": "2", "a": 1 }).as_object().unwrap()).unwrap();
    let raw = data.as_raw_json().unwrap();
    assert_eq!(raw.get(), r#"{"a":1,"b":"2"}"#);
    assert_eq!(
        serde_json::to_string(&json!({ "data": raw })).unwrap(),
        r#"{"data":{"a":1,"b":"2"}}"#
    );
    for stored in [&b"[1,2]"[..], b"\"text\"", b"{\"a\":", b"\xff\xfe", b""] {
        let data = SecretData(Plaintext::new(stored.to_vec()));
        assert!(matches!(data.as_raw_json(), Err(KvError::Corrupt)));
        assert!(matches!(data.to_json(), Err(KvError::Corrupt)));
    }
}
