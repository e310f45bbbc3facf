//! The seal ceremony end to end over a real redb store: init, unseal in every order, bad and
//! foreign shares, reset, seal, restart, rekey (with and without verification), root-key
//! rotation, the passphrase, key-file and KMS seals, and tampering with the stored configuration.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arca::seal::{
    InitRequest, InitResult, KdfParams, KeyFileWrapper, KeyWrapper, Passphrase, RekeyUpdate,
    RekeyVerifyUpdate, Seal, SealConfig, SealError, SealKind,
};
use arca::storage::{Barrier, BarrierError, RedbBackend};

/// Where the seal record lives in the backend (hidden from barrier users).
const SEAL_PATH: &str = "_barrier/seal";

/// Small Argon2id parameters so the passphrase tests stay fast; never for real stores.
fn test_kdf() -> KdfParams {
    KdfParams::insecure_for_tests(256, 1, 1)
}

/// Opens (or reopens, as a restart would) the redb store in `dir`.
async fn open(dir: &Path, config: SealConfig) -> Result<Seal, SealError> {
    let backend = RedbBackend::open(dir.join("arca.redb")).unwrap();
    Seal::open(Arc::new(Barrier::new(Arc::new(backend))), config).await
}

async fn init_shamir(dir: &Path, n: u8, t: u8) -> (Seal, InitResult) {
    let seal = open(dir, SealConfig::Shamir).await.unwrap();
    let init = seal
        .initialize(InitRequest {
            secret_shares: n,
            secret_threshold: t,
            ..Default::default()
        })
        .await
        .unwrap();
    (seal, init)
}

fn hex_keys(init: &InitResult) -> Vec<String> {
    init.keys.iter().map(|k| k.hex.to_string()).collect()
}

/// Submits `shares` in order and returns whether the store ended unsealed.
async fn unseal_with(seal: &Seal, shares: &[&str]) -> Result<bool, SealError> {
    let mut sealed = true;
    for share in shares {
        sealed = seal.submit_share(share).await?.sealed;
    }
    Ok(!sealed)
}

fn is_sealed_error<T: std::fmt::Debug>(result: Result<T, BarrierError>) -> bool {
    matches!(result, Err(BarrierError::Sealed))
}

#[tokio::test]
async fn shamir_ceremony_restart_and_every_order() {
    let dir = tempfile::tempdir().unwrap();
    let (seal, init) = init_shamir(dir.path(), 5, 3).await;
    let keys = hex_keys(&init);
    let b64: Vec<String> = init.keys.iter().map(|k| k.base64.to_string()).collect();
    assert_eq!(keys.len(), 5);
    assert!(init.recovery_keys.is_empty());
    // Debug never shows share or token material.
    let shown = format!("{init:?}");
    assert!(keys.iter().all(|k| !shown.contains(k.as_str())));
    assert!(!shown.contains(init.root_token.expose_secret()));

    let status = seal.status().await.unwrap();
    assert!(status.initialized && status.sealed && !status.recovery_seal);
    assert_eq!(status.kind, SealKind::Shamir);
    assert_eq!(
        (status.threshold, status.shares, status.progress),
        (3, 5, 0)
    );
    assert_eq!(status.nonce, "");

    // Progress, nonce, a bad share and a duplicate along the way.
    let first = seal.submit_share(&keys[0]).await.unwrap();
    assert_eq!(first.progress, 1);
    assert_eq!(first.nonce.len(), 36);
    assert!(matches!(
        seal.submit_share("not-a-share").await,
        Err(SealError::BadShare(_))
    ));
    assert!(matches!(
        seal.submit_share(&"0f".repeat(32)).await,
        Err(SealError::BadShare(_))
    ));
    assert!(matches!(
        seal.submit_share(&b64[0]).await,
        Err(SealError::DuplicateShare)
    ));
    assert!(matches!(
        seal.submit_share(&keys[0]).await,
        Err(SealError::DuplicateShare)
    ));
    let status = seal.status().await.unwrap();
    assert_eq!(
        (status.progress, status.nonce.as_str()),
        (1, first.nonce.as_str())
    );
    let second = seal.submit_share(&b64[3]).await.unwrap();
    assert_eq!(
        (second.progress, second.nonce.as_str()),
        (2, first.nonce.as_str())
    );

    // Reset, then a fresh attempt has a new nonce.
    let reset = seal.reset_progress().await.unwrap();
    assert_eq!(
        (reset.progress, reset.nonce.as_str(), reset.sealed),
        (0, "", true)
    );
    let again = seal.submit_share(&keys[1]).await.unwrap();
    assert_ne!(again.nonce, first.nonce);
    seal.reset_progress().await.unwrap();

    // Every ordered choice of 3 of the 5 shares unseals; alternate hex and base64.
    let triples: Vec<[usize; 3]> = (0..125)
        .map(|i| [i / 25, (i / 5) % 5, i % 5])
        .filter(|[a, b, c]| a != b && b != c && a != c)
        .collect();
    let mut orders = 0;
    for [a, b, c] in triples {
        let picks = [keys[a].as_str(), b64[b].as_str(), keys[c].as_str()];
        assert!(unseal_with(&seal, &picks).await.unwrap(), "{a}{b}{c}");
        let status = seal.status().await.unwrap();
        assert!(!status.sealed);
        assert_eq!((status.progress, status.nonce.as_str()), (0, ""));
        seal.seal().await.unwrap();
        orders += 1;
    }
    assert_eq!(orders, 60);

    // Shares from another initialisation: invalid, progress reset, still sealed.
    let other_dir = tempfile::tempdir().unwrap();
    let (_other, other_init) = init_shamir(other_dir.path(), 5, 3).await;
    let foreign = hex_keys(&other_init);
    seal.submit_share(&foreign[0]).await.unwrap();
    seal.submit_share(&foreign[1]).await.unwrap();
    assert!(matches!(
        seal.submit_share(&foreign[2]).await,
        Err(SealError::InvalidShares)
    ));
    let status = seal.status().await.unwrap();
    assert!(status.sealed);
    assert_eq!((status.progress, status.nonce.as_str()), (0, ""));
    // One foreign share among good ones is just as invalid.
    seal.submit_share(&keys[0]).await.unwrap();
    seal.submit_share(&foreign[1]).await.unwrap();
    assert!(matches!(
        seal.submit_share(&keys[2]).await,
        Err(SealError::InvalidShares)
    ));
    assert_eq!(seal.status().await.unwrap().progress, 0);

    // Unseal, write, seal: nothing is readable while sealed.
    assert!(
        unseal_with(&seal, &[&keys[4], &keys[2], &keys[0]])
            .await
            .unwrap()
    );
    let root_token = init.root_token.expose_secret().to_owned();
    let entry = seal.tokens().lookup(&root_token).await.unwrap().unwrap();
    assert_eq!(entry.policies, vec!["root".to_owned()]);
    seal.barrier()
        .put("secret/app/db", b"hunter2")
        .await
        .unwrap();
    seal.seal().await.unwrap();
    assert!(seal.status().await.unwrap().sealed);
    assert!(is_sealed_error(seal.barrier().get("secret/app/db").await));
    assert!(seal.tokens().lookup(&root_token).await.is_err());

    // Restart: drop everything, reopen the file.
    drop(seal);
    let seal = open(dir.path(), SealConfig::Shamir).await.unwrap();
    let status = seal.status().await.unwrap();
    assert!(status.initialized && status.sealed);
    assert_eq!((status.threshold, status.shares), (3, 5));
    assert!(
        unseal_with(&seal, &[&b64[1], &keys[3], &b64[4]])
            .await
            .unwrap()
    );
    assert_eq!(
        seal.barrier()
            .get("secret/app/db")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"hunter2"
    );
    assert!(seal.tokens().lookup(&root_token).await.unwrap().is_some());
    assert!(matches!(
        seal.initialize(InitRequest {
            secret_shares: 1,
            secret_threshold: 1,
            ..Default::default()
        })
        .await,
        Err(SealError::AlreadyInitialized)
    ));
}

#[tokio::test]
async fn rekey_replaces_the_shares_for_the_same_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let (seal, init) = init_shamir(dir.path(), 5, 3).await;
    let old = hex_keys(&init);
    assert!(
        unseal_with(&seal, &[&old[0], &old[1], &old[2]])
            .await
            .unwrap()
    );
    seal.barrier().put("kv/a", b"before rekey").await.unwrap();

    let status = seal.rekey_init(3, 2, false).await.unwrap();
    assert!(status.started && !status.verification_required);
    assert_eq!(
        (status.shares, status.threshold, status.required),
        (3, 2, 3)
    );
    assert_eq!(status.progress, 0);
    let nonce = status.nonce.clone();
    let RekeyUpdate::Progress(p) = seal.rekey_update(&old[4], &nonce).await.unwrap() else {
        panic!("one share cannot complete a 3-of-5 rekey");
    };
    assert_eq!(p.progress, 1);
    seal.rekey_update(&old[2], &nonce).await.unwrap();
    let RekeyUpdate::Complete {
        keys,
        verification_required,
        verification_nonce,
        nonce: done_nonce,
    } = seal.rekey_update(&old[0], &nonce).await.unwrap()
    else {
        panic!("three shares complete the rekey");
    };
    assert_eq!(done_nonce, nonce);
    assert!(!verification_required && verification_nonce.is_none());
    assert_eq!(keys.len(), 3);
    assert!(!seal.rekey_status().await.unwrap().started);
    let new: Vec<String> = keys.iter().map(|k| k.hex.to_string()).collect();

    // Still unsealed; the status reports the new N/T.
    let status = seal.status().await.unwrap();
    assert!(!status.sealed);
    assert_eq!((status.threshold, status.shares), (2, 3));

    // Restart: the old shares no longer work, the new ones do.
    seal.seal().await.unwrap();
    drop(seal);
    let seal = open(dir.path(), SealConfig::Shamir).await.unwrap();
    seal.submit_share(&old[0]).await.unwrap();
    assert!(matches!(
        seal.submit_share(&old[1]).await,
        Err(SealError::InvalidShares)
    ));
    assert!(unseal_with(&seal, &[&new[2], &new[0]]).await.unwrap());
    assert_eq!(
        seal.barrier()
            .get("kv/a")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"before rekey"
    );
}

#[tokio::test]
async fn rekey_with_verification_takes_effect_only_when_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (seal, init) = init_shamir(dir.path(), 3, 2).await;
    let old = hex_keys(&init);
    assert!(unseal_with(&seal, &[&old[0], &old[1]]).await.unwrap());

    let status = seal.rekey_init(4, 3, true).await.unwrap();
    assert!(status.verification_required);
    seal.rekey_update(&old[2], &status.nonce).await.unwrap();
    let RekeyUpdate::Complete {
        keys,
        verification_required: true,
        verification_nonce: Some(vnonce),
        ..
    } = seal.rekey_update(&old[1], &status.nonce).await.unwrap()
    else {
        panic!("expected new shares pending verification");
    };
    let new: Vec<String> = keys.iter().map(|k| k.hex.to_string()).collect();
    assert_eq!(new.len(), 4);
    // Pending: the old configuration is still in force.
    assert_eq!(seal.status().await.unwrap().threshold, 2);
    let rekey = seal.rekey_status().await.unwrap();
    assert_eq!(rekey.verification_nonce.as_deref(), Some(vnonce.as_str()));

    assert!(matches!(
        seal.rekey_verify_update(&new[0], "wrong nonce").await,
        Err(SealError::RekeyNonceMismatch)
    ));
    let RekeyVerifyUpdate::Progress(p) = seal.rekey_verify_update(&new[3], &vnonce).await.unwrap()
    else {
        panic!("one share does not verify 3-of-4");
    };
    assert_eq!((p.progress, p.threshold, p.shares), (1, 3, 4));
    assert!(matches!(
        seal.rekey_verify_update(&new[3], &vnonce).await,
        Err(SealError::DuplicateShare)
    ));
    seal.rekey_verify_update(&new[0], &vnonce).await.unwrap();
    let done = seal.rekey_verify_update(&new[1], &vnonce).await.unwrap();
    assert_eq!(done, RekeyVerifyUpdate::Complete { nonce: vnonce });
    let status = seal.status().await.unwrap();
    assert_eq!((status.threshold, status.shares), (3, 4));

    seal.seal().await.unwrap();
    seal.submit_share(&old[0]).await.unwrap();
    seal.submit_share(&old[1]).await.unwrap();
    assert!(matches!(
        seal.submit_share(&old[2]).await,
        Err(SealError::InvalidShares)
    ));
    assert!(
        unseal_with(&seal, &[&new[2], &new[1], &new[3]])
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn root_key_rotation_keeps_data_shares_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (seal, init) = init_shamir(dir.path(), 3, 2).await;
    let keys = hex_keys(&init);
    assert!(matches!(
        seal.rotate_root_key().await,
        Err(SealError::Sealed)
    ));
    assert!(unseal_with(&seal, &[&keys[0], &keys[1]]).await.unwrap());
    seal.barrier().put("kv/a", b"1").await.unwrap();
    let before = seal
        .barrier()
        .backend()
        .get(SEAL_PATH)
        .await
        .unwrap()
        .unwrap();
    let keyring_before = seal
        .barrier()
        .backend()
        .get("_barrier/keyring")
        .await
        .unwrap()
        .unwrap();

    seal.rotate_root_key().await.unwrap();
    seal.rotate_root_key().await.unwrap();
    let after = seal
        .barrier()
        .backend()
        .get(SEAL_PATH)
        .await
        .unwrap()
        .unwrap();
    let keyring_after = seal
        .barrier()
        .backend()
        .get("_barrier/keyring")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(before, after);
    assert_eq!(
        before.len(),
        after.len(),
        "no stale root key is left behind"
    );
    assert_ne!(keyring_before, keyring_after);
    assert_eq!(
        seal.barrier()
            .get("kv/a")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"1"
    );
    let token = init.root_token.expose_secret();
    assert!(seal.tokens().lookup(token).await.unwrap().is_some());

    seal.seal().await.unwrap();
    drop(seal);
    let seal = open(dir.path(), SealConfig::Shamir).await.unwrap();
    assert!(unseal_with(&seal, &[&keys[2], &keys[0]]).await.unwrap());
    assert_eq!(
        seal.barrier()
            .get("kv/a")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"1"
    );
    assert!(seal.tokens().lookup(token).await.unwrap().is_some());
}

#[tokio::test]
async fn passphrase_seal() {
    let dir = tempfile::tempdir().unwrap();
    let seal = open(dir.path(), SealConfig::Passphrase)
        .await
        .unwrap()
        .with_kdf_params(test_kdf());
    assert!(matches!(
        seal.initialize(InitRequest::default()).await,
        Err(SealError::InvalidParameters(_))
    ));
    assert!(matches!(
        seal.initialize(InitRequest {
            passphrase: Some(Passphrase::from("short")),
            ..Default::default()
        })
        .await,
        Err(SealError::InvalidParameters(_))
    ));
    let init = seal
        .initialize(InitRequest {
            passphrase: Some(Passphrase::from("correct horse battery staple")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(init.keys.is_empty() && init.recovery_keys.is_empty());
    let status = seal.status().await.unwrap();
    assert!(status.sealed);
    assert_eq!(status.kind, SealKind::Passphrase);
    assert_eq!((status.threshold, status.shares), (1, 1));
    assert!(matches!(
        seal.submit_share(&"01".repeat(33)).await,
        Err(SealError::WrongSealKind)
    ));
    assert!(matches!(
        seal.rekey_init(3, 2, false).await,
        Err(SealError::Sealed)
    ));

    assert!(matches!(
        seal.unseal_with_passphrase(b"correct horse battery stapler")
            .await,
        Err(SealError::InvalidPassphrase)
    ));
    assert!(seal.status().await.unwrap().sealed);
    seal.unseal_with_passphrase(b"correct horse battery staple")
        .await
        .unwrap();
    assert!(!seal.status().await.unwrap().sealed);
    seal.barrier().put("kv/p", b"v").await.unwrap();
    assert!(matches!(
        seal.rekey_init(3, 2, false).await,
        Err(SealError::WrongSealKind)
    ));
    seal.seal().await.unwrap();
    drop(seal);

    // A seal with the default (secure) parameters refuses the weak stored ones.
    let strict = open(dir.path(), SealConfig::Passphrase).await.unwrap();
    assert!(matches!(
        strict
            .unseal_with_passphrase(b"correct horse battery staple")
            .await,
        Err(SealError::InvalidParameters(_))
    ));
    drop(strict);

    let seal = open(dir.path(), SealConfig::Passphrase)
        .await
        .unwrap()
        .with_kdf_params(test_kdf());
    // Changing the passphrase: the old one stops working.
    assert!(matches!(
        seal.change_passphrase(b"wrong passphrase", &Passphrase::from("a new passphrase"))
            .await,
        Err(SealError::InvalidPassphrase)
    ));
    seal.change_passphrase(
        b"correct horse battery staple",
        &Passphrase::from("a new passphrase"),
    )
    .await
    .unwrap();
    assert!(matches!(
        seal.unseal_with_passphrase(b"correct horse battery staple")
            .await,
        Err(SealError::InvalidPassphrase)
    ));
    seal.unseal_with_passphrase(b"a new passphrase")
        .await
        .unwrap();
    assert_eq!(
        seal.barrier()
            .get("kv/p")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"v"
    );

    // Weak parameters are refused without the insecure constructor.
    assert!(KdfParams::new(1024, 1, 1).is_err());
}

fn key_config(path: &Path, previous: Option<&Path>) -> SealConfig {
    SealConfig::KeyFile {
        path: path.to_owned(),
        previous: previous.map(Path::to_path_buf),
    }
}

#[tokio::test]
async fn key_file_seal_recovery_keys_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let key1: PathBuf = dir.path().join("seal-1.key");
    let key2: PathBuf = dir.path().join("seal-2.key");
    let key3: PathBuf = dir.path().join("seal-3.key");

    let seal = open(dir.path(), key_config(&key1, None)).await.unwrap();
    assert!(matches!(
        seal.auto_unseal().await,
        Err(SealError::NotInitialized)
    ));
    let init = seal.initialize(InitRequest::default()).await.unwrap();
    assert!(key1.exists(), "init creates the key file");
    assert!(init.keys.is_empty());
    assert_eq!(init.recovery_keys.len(), 5);
    let recovery: Vec<String> = init
        .recovery_keys
        .iter()
        .map(|k| k.hex.to_string())
        .collect();
    let status = seal.status().await.unwrap();
    assert!(!status.sealed && status.recovery_seal);
    assert_eq!(status.kind, SealKind::KeyFile);
    assert_eq!((status.threshold, status.shares), (3, 5));
    seal.barrier().put("kv/k", b"auto").await.unwrap();
    assert!(matches!(
        seal.submit_share(&recovery[0]).await,
        Err(SealError::WrongSealKind)
    ));

    // Recovery keys authorise a rekey, which replaces them.
    let status = seal.rekey_init(3, 2, false).await.unwrap();
    assert_eq!(status.required, 3);
    seal.rekey_update(&recovery[0], &status.nonce)
        .await
        .unwrap();
    seal.rekey_update(&recovery[4], &status.nonce)
        .await
        .unwrap();
    let RekeyUpdate::Complete { keys, .. } = seal
        .rekey_update(&recovery[2], &status.nonce)
        .await
        .unwrap()
    else {
        panic!("three recovery shares complete the rekey");
    };
    let new_recovery: Vec<String> = keys.iter().map(|k| k.hex.to_string()).collect();
    let status = seal.rekey_init(2, 2, false).await.unwrap();
    seal.rekey_update(&recovery[0], &status.nonce)
        .await
        .unwrap();
    assert!(matches!(
        seal.rekey_update(&recovery[1], &status.nonce).await,
        Err(SealError::InvalidShares)
    ));
    seal.rekey_update(&new_recovery[0], &status.nonce)
        .await
        .unwrap();
    assert!(matches!(
        seal.rekey_update(&new_recovery[1], &status.nonce).await,
        Ok(RekeyUpdate::Complete { .. })
    ));

    // Seal and auto-unseal; restart and auto-unseal.
    seal.seal().await.unwrap();
    assert!(seal.status().await.unwrap().sealed);
    seal.auto_unseal().await.unwrap();
    assert!(!seal.status().await.unwrap().sealed);
    seal.auto_unseal().await.unwrap();
    seal.seal().await.unwrap();
    drop(seal);

    // Rotate to a new key file with the old one as previous: unseals and re-wraps.
    let id1 = KeyFileWrapper::load(&key1).unwrap().key_id();
    let id2 = KeyFileWrapper::create(&key2).unwrap().key_id();
    assert_ne!(id1, id2);
    let seal = open(dir.path(), key_config(&key2, None)).await.unwrap();
    assert!(matches!(
        seal.auto_unseal().await,
        Err(SealError::KeyIdMismatch { stored }) if stored == id1
    ));
    drop(seal);
    let seal = open(dir.path(), key_config(&key2, Some(&key1)))
        .await
        .unwrap();
    seal.auto_unseal().await.unwrap();
    assert_eq!(
        seal.barrier()
            .get("kv/k")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"auto"
    );
    seal.seal().await.unwrap();
    drop(seal);
    // The old key file is no longer needed, and no longer enough.
    std::fs::remove_file(&key1).unwrap();
    let seal = open(dir.path(), key_config(&key2, None)).await.unwrap();
    seal.auto_unseal().await.unwrap();
    seal.seal().await.unwrap();
    drop(seal);

    // Explicit re-wrap while sealed.
    KeyFileWrapper::create(&key3).unwrap();
    let seal = open(dir.path(), key_config(&key3, Some(&key2)))
        .await
        .unwrap();
    assert!(seal.rewrap().await.unwrap());
    assert!(!seal.rewrap().await.unwrap());
    drop(seal);
    let seal = open(dir.path(), key_config(&key3, None)).await.unwrap();
    seal.auto_unseal().await.unwrap();
    assert_eq!(
        seal.barrier()
            .get("kv/k")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"auto"
    );
    // The root key rotates under auto-unseal too.
    seal.rotate_root_key().await.unwrap();
    seal.seal().await.unwrap();
    seal.auto_unseal().await.unwrap();
    assert_eq!(
        seal.barrier()
            .get("kv/k")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"auto"
    );

    // A different key that claims nothing: an unrelated key file cannot unwrap.
    let wrapper = KeyFileWrapper::from_key_bytes(&[7; 32]).unwrap();
    assert!(matches!(
        wrapper.unwrap(&[0; 72], b"x").await,
        Err(SealError::UnwrapFailed)
    ));
}

/// Rewrites the stored seal record with `edit` applied.
async fn tamper(seal: &Seal, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let backend = seal.barrier().backend();
    let original = backend.get(SEAL_PATH).await.unwrap().unwrap();
    let mut edited = original.clone();
    edit(&mut edited);
    backend.put(SEAL_PATH, edited).await.unwrap();
    original
}

async fn restore(seal: &Seal, original: Vec<u8>) {
    seal.barrier()
        .backend()
        .put(SEAL_PATH, original)
        .await
        .unwrap();
}

// Offsets in the record (see src/seal/config.rs): the configuration starts at 7 with the kind,
// N at 8, T at 9; passphrase parameters at 10..22 and the salt at 22..38; a key id's length
// at 10 and its bytes from 11.
const N_AT: usize = 8;
const T_AT: usize = 9;

#[tokio::test]
async fn tampering_with_the_stored_configuration_makes_unseal_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (seal, init) = init_shamir(dir.path(), 5, 3).await;
    let keys = hex_keys(&init);

    // T lowered to 2: two genuine shares combine to a wrong key.
    let original = tamper(&seal, |r| r[T_AT] = 2).await;
    assert_eq!(seal.status().await.unwrap().threshold, 2);
    seal.submit_share(&keys[0]).await.unwrap();
    assert!(matches!(
        seal.submit_share(&keys[1]).await,
        Err(SealError::InvalidShares)
    ));
    // T raised to 4: four genuine shares give the right key, but the configuration no longer
    // authenticates.
    tamper(&seal, |r| r[T_AT] = 4).await;
    assert!(matches!(
        unseal_with(&seal, &[&keys[0], &keys[1], &keys[2], &keys[3]]).await,
        Err(SealError::InvalidShares)
    ));
    // N raised to 6.
    restore(&seal, original.clone()).await;
    tamper(&seal, |r| r[N_AT] = 6).await;
    assert!(matches!(
        unseal_with(&seal, &[&keys[0], &keys[1], &keys[2]]).await,
        Err(SealError::InvalidShares)
    ));
    // T above N does not even parse.
    tamper(&seal, |r| r[T_AT] = 9).await;
    assert!(matches!(
        seal.submit_share(&keys[0]).await,
        Err(SealError::CorruptSealRecord)
    ));
    assert_eq!(seal.status().await.unwrap().threshold, 0);
    assert!(seal.status().await.unwrap().sealed);
    // Restored: the genuine shares work again.
    restore(&seal, original).await;
    assert!(
        unseal_with(&seal, &[&keys[0], &keys[1], &keys[2]])
            .await
            .unwrap()
    );
    drop(seal);

    // Passphrase: the salt and the cost parameters are authenticated too.
    let dir = tempfile::tempdir().unwrap();
    let seal = open(dir.path(), SealConfig::Passphrase)
        .await
        .unwrap()
        .with_kdf_params(test_kdf());
    seal.initialize(InitRequest {
        passphrase: Some(Passphrase::from("passphrase of a test")),
        ..Default::default()
    })
    .await
    .unwrap();
    let original = tamper(&seal, |r| r[30] ^= 0x01).await; // a salt byte
    assert!(matches!(
        seal.unseal_with_passphrase(b"passphrase of a test").await,
        Err(SealError::InvalidPassphrase)
    ));
    restore(&seal, original.clone()).await;
    tamper(&seal, |r| r[17] += 1).await; // t_cost 1 -> 2
    assert!(matches!(
        seal.unseal_with_passphrase(b"passphrase of a test").await,
        Err(SealError::InvalidPassphrase)
    ));
    restore(&seal, original).await;
    seal.unseal_with_passphrase(b"passphrase of a test")
        .await
        .unwrap();
    drop(seal);

    // Key file: recovery N, and the key id.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    let seal = open(dir.path(), key_config(&key, None)).await.unwrap();
    seal.initialize(InitRequest {
        recovery_shares: 3,
        recovery_threshold: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    seal.seal().await.unwrap();
    let original = tamper(&seal, |r| r[N_AT] = 4).await;
    assert!(matches!(
        seal.auto_unseal().await,
        Err(SealError::CorruptSealRecord)
    ));
    restore(&seal, original.clone()).await;
    tamper(&seal, |r| r[12] ^= 0x01).await; // a byte of the key id
    assert!(matches!(
        seal.auto_unseal().await,
        Err(SealError::KeyIdMismatch { .. })
    ));
    restore(&seal, original).await;
    seal.auto_unseal().await.unwrap();
}

/// The KMS seal over an in-process LocalKms (the provider a remote arca runs): init records
/// the key's ARN, not the alias; restart unseals; a disabled key refuses; `rewrap` moves the
/// unseal key to a newly configured key.
#[tokio::test]
async fn kms_seal_records_the_arn_and_rewraps_to_a_new_key() {
    use arca::kms::{KeyProvider, LocalKms};
    use arca::seal::KmsSealConfig;
    use arca::storage::{MemoryBackend, RootKey};

    let kms_barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
    let kms_root = RootKey::generate().unwrap();
    kms_barrier.initialize(&kms_root).await.unwrap();
    kms_barrier.unseal(&kms_root).await.unwrap();
    let kms = Arc::new(LocalKms::new(kms_barrier, "us-east-1", "123456789012"));
    let first = kms
        .ensure_key_for_alias("alias/seal", "first")
        .await
        .unwrap();
    let second = kms
        .ensure_key_for_alias("alias/next", "second")
        .await
        .unwrap();
    let provider: Arc<dyn KeyProvider> = kms.clone();
    let config = |key: &str| SealConfig::Kms(KmsSealConfig::new(Arc::clone(&provider), key));

    let dir = tempfile::tempdir().unwrap();
    let seal = open(dir.path(), config("alias/seal")).await.unwrap();
    assert_eq!(seal.status().await.unwrap().kind, SealKind::Kms);
    assert_eq!(SealKind::Kms.as_str(), "awskms");
    let init = seal.initialize(InitRequest::default()).await.unwrap();
    assert!(init.keys.is_empty());
    assert_eq!(init.recovery_keys.len(), 5);
    assert!(!seal.status().await.unwrap().sealed);
    let raw = seal
        .barrier()
        .backend()
        .get(SEAL_PATH)
        .await
        .unwrap()
        .unwrap();
    let record = String::from_utf8_lossy(&raw);
    assert!(record.contains(&first) && !record.contains("alias/seal"));
    drop(seal);

    // Restart: unsealed through the KMS, whatever alias is configured by then.
    let seal = open(dir.path(), config("alias/seal")).await.unwrap();
    seal.auto_unseal().await.unwrap();
    assert!(!seal.status().await.unwrap().sealed);
    assert!(!seal.rewrap().await.unwrap(), "same key: nothing to do");
    seal.seal().await.unwrap();
    drop(seal);

    // Another configured key: rewrap moves the unseal key to it, sealed.
    let seal = open(dir.path(), config(&second)).await.unwrap();
    assert!(seal.rewrap().await.unwrap());
    kms.default_scope().disable_key(&first).await.unwrap();
    seal.auto_unseal().await.unwrap();
    seal.seal().await.unwrap();
    drop(seal);

    // A disabled key: auto-unseal fails with the provider's reason, and stays sealed.
    kms.default_scope().disable_key(&second).await.unwrap();
    let seal = open(dir.path(), config(&second)).await.unwrap();
    let err = seal.auto_unseal().await.unwrap_err();
    assert!(matches!(err, SealError::KeyProvider(_)), "{err:?}");
    assert!(err.to_string().contains("disabled"), "{err}");
    assert!(seal.status().await.unwrap().sealed);
    drop(seal);

    // A key-file store is not opened with a KMS configuration, nor the reverse.
    assert!(matches!(
        open(dir.path(), key_config(&dir.path().join("k"), None)).await,
        Err(SealError::WrongSealKind)
    ));
}
