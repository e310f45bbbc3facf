//! KV version 2 and the mount table: the real clients against the real binary (hvac and the
//! `bao` CLI, through the pytest files in `tests/python/`), development mode's mounts, and the
//! storage-level proof that `destroy` leaves nothing to decrypt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arca::Arca;
use arca::config::StorageKind;
use arca::kv::{SecretData, VersionRead};
use arca::mounts::MountKind;
use arca::seal::{InitRequest, SealConfig};
use arca::storage::{Backend, RedbBackend};
use common::ArcaServer;
use serde_json::json;

use common::pytest::run as pytest;

#[test]
fn hvac_drives_kv_v2_and_the_mount_table() {
    pytest("test_kv_hvac.py");
}

#[test]
fn bao_cli_drives_kv_v2() {
    pytest("test_kv_bao_cli.py");
}

/// Development mode mounts `secret/` (KV version 2) and `transit/` at every start, once.
#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_mounts_secret_and_transit_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = || {
        vec![
            "--dev".into(),
            "--data-dir".into(),
            data.clone().into_os_string(),
            "--dev-root-token".into(),
            "dev-root".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let server = ArcaServer::start_with(&args());
    let api = server.api().with_token("dev-root");
    let mounts = api.get("sys/mounts").await;
    assert_eq!(mounts.status, 200, "{}", mounts.text);
    assert_eq!(mounts.json["data"]["secret/"]["type"], "kv");
    assert_eq!(mounts.json["data"]["secret/"]["options"]["version"], "2");
    assert_eq!(mounts.json["data"]["transit/"]["type"], "transit");
    let uuid = mounts.json["data"]["secret/"]["uuid"].clone();
    let written = api
        .post("secret/data/app", &json!({"data": {"pw": "persisted"}}))
        .await;
    assert_eq!(written.status, 200, "{}", written.text);
    server.stop();

    let server = ArcaServer::start_with(&args());
    let api = server.api().with_token("dev-root");
    let mounts = api.get("sys/mounts").await;
    assert_eq!(mounts.json["data"]["secret/"]["uuid"], uuid);
    assert_eq!(mounts.json["data"].as_object().unwrap().len(), 2);
    let read = api.get("secret/data/app").await;
    assert_eq!(
        read.json["data"]["data"]["pw"], "persisted",
        "{}",
        read.text
    );
    server.stop();
}

/// After `destroy`, the version's ciphertext and its wrapped data key are gone from the
/// store (checked on the raw redb backend), and a copy of the ciphertext taken before the
/// destroy cannot be opened: put back, it still reads as destroyed, and no wrapped key left in
/// the store decrypts it.
#[tokio::test(flavor = "multi_thread")]
async fn destroy_leaves_nothing_to_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> =
        Arc::new(RedbBackend::open(dir.path().join("arca.redb")).unwrap());
    let arca = Arca::open(Arc::clone(&backend), StorageKind::Redb, SealConfig::Shamir)
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
    let kv = arca.kv();
    for pw in ["first", "second"] {
        let data = SecretData::from_json_text(&json!({ "pw": pw }).to_string()).unwrap();
        kv.write(&mount, "app/db", &data, None).await.unwrap();
    }

    let prefix = mount.storage_prefix();
    // A version's wrapped key sits beside its data: the data's name, U+001F and `k`.
    let data_key = format!("{prefix}data/app/db/1");
    let dkey_key = format!("{data_key}\u{1f}k");
    let raw_ciphertext = backend.get(&data_key).await.unwrap().unwrap();
    assert!(backend.get(&dkey_key).await.unwrap().is_some());
    let old_copy = arca.barrier().get(&data_key).await.unwrap().unwrap();

    kv.destroy_versions(&mount, "app/db", &[1]).await.unwrap();
    assert!(backend.get(&data_key).await.unwrap().is_none());
    assert!(backend.get(&dkey_key).await.unwrap().is_none());
    // Nothing under the mount names version 1 any more, in any record.
    for key in backend.list(&prefix).await.unwrap() {
        for record in ["/app/db/1", "/app/db/1\u{1f}k"] {
            assert!(!key.ends_with(record), "{key:?} survived the destroy");
        }
    }

    // Restore the old ciphertext record, as from a backup of the data records: the version
    // stays destroyed, and pairing it with the wrapped key that is left fails authentication.
    backend.put(&data_key, raw_ciphertext).await.unwrap();
    match kv.read(&mount, "app/db", Some(1)).await.unwrap() {
        Some(VersionRead::Gone { info, .. }) => assert!(info.destroyed),
        other => panic!("a destroyed version read as {other:?}"),
    }
    let remaining_key = arca
        .barrier()
        .get(&format!("{prefix}data/app/db/2\u{1f}k"))
        .await
        .unwrap()
        .unwrap();
    arca.barrier()
        .put(&dkey_key, remaining_key.expose_secret())
        .await
        .unwrap();
    // Even with the metadata forged back to "live", the old ciphertext does not open.
    let meta_key = format!("{prefix}meta/app/db");
    let meta = arca.barrier().get(&meta_key).await.unwrap().unwrap();
    let forged = String::from_utf8(meta.expose_secret().to_vec())
        .unwrap()
        .replacen(r#""destroyed":true"#, "", 1)
        .replace(",}", "}");
    arca.barrier()
        .put(&meta_key, forged.as_bytes())
        .await
        .unwrap();
    arca.barrier()
        .put(&data_key, old_copy.expose_secret())
        .await
        .unwrap();
    let forged_read = kv.read(&mount, "app/db", Some(1)).await;
    assert!(
        matches!(forged_read, Err(arca::kv::KvError::Integrity)),
        "{forged_read:?}"
    );
    // Version 2 is untouched.
    match kv.read(&mount, "app/db", None).await.unwrap() {
        Some(VersionRead::Live { data, .. }) => {
            assert_eq!(data.to_json().unwrap()["pw"], "second");
        }
        other => panic!("{other:?}"),
    }
}
