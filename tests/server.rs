//! The real `arca server` binary over HTTP, as a Vault client drives it: the Shamir ceremony
//! (init 5/3, unseal in every order, duplicate, wrong and foreign shares, reset, seal), a
//! restart on the same folder, rekey through Vault's `sys/rekey/*` and OpenBao's
//! authenticated `sys/rotate/root/*`, keyring and root-key rotation, `sys/health` and
//! `sys/leader`, the passphrase and key-file seals, bad input, the refused command lines,
//! and TLS.
//!
//! Every test starts its own server on `127.0.0.1:0` in its own temporary folder; the harness
//! (`common`) stops it by PID.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use arca::seal::{KeyFileWrapper, KeyWrapper};
use common::{Api, ArcaServer, Reply, arca_cli, toml_path, write_file};
use serde_json::{Value, json};

/// The shares and root token of an init.
struct Init {
    hex: Vec<String>,
    base64: Vec<String>,
    root: String,
}

impl Init {
    /// Every secret this init produced, for checks that none of them leaks.
    fn secrets(&self) -> Vec<&str> {
        self.hex
            .iter()
            .chain(&self.base64)
            .map(String::as_str)
            .chain([self.root.as_str()])
            .collect()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn init(api: &Api, shares: u32, threshold: u32) -> Init {
    let reply = api
        .put(
            "sys/init",
            &json!({ "secret_shares": shares, "secret_threshold": threshold }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let init = Init {
        hex: strings(&reply.json["keys"]),
        base64: strings(&reply.json["keys_base64"]),
        root: reply.json["root_token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(init.hex.len(), shares as usize);
    assert_eq!(init.base64.len(), shares as usize);
    assert!(!init.root.is_empty());
    init
}

async fn seal_status(api: &Api) -> Value {
    let reply = api.get("sys/seal-status").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

/// `(sealed, progress, nonce)` from `sys/seal-status`.
async fn progress(api: &Api) -> (bool, u64, String) {
    let status = seal_status(api).await;
    (
        status["sealed"].as_bool().unwrap(),
        status["progress"].as_u64().unwrap(),
        status["nonce"].as_str().unwrap().to_owned(),
    )
}

async fn submit(api: &Api, key: &str) -> Reply {
    api.put("sys/unseal", &json!({ "key": key })).await
}

/// Submits `keys` in order, each answered 200; returns the last status.
async fn unseal(api: &Api, keys: &[&str]) -> Value {
    let mut last = Value::Null;
    for key in keys {
        let reply = submit(api, key).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        last = reply.json;
    }
    last
}

async fn seal(api: &Api, token: &str) {
    let reply = api.with_token(token).put("sys/seal", &json!({})).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert!(progress(api).await.0, "sealed after sys/seal");
}

async fn key_term(api: &Api, token: &str) -> u64 {
    let reply = api.with_token(token).get("sys/key-status").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let term = reply.json["data"]["term"].as_u64().unwrap();
    assert_eq!(
        reply.json["term"].as_u64(),
        Some(term),
        "also at the top level"
    );
    term
}

/// The body every non-`sys` path answers while sealed.
fn sealed_body() -> Value {
    json!({ "errors": ["Vault is sealed"] })
}

/// Asserts that no init secret appears in `text` (an error body, the server's logs).
#[track_caller]
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a secret leaked into: {text}");
    }
}

fn k(keys: &[String], i: usize) -> &str {
    keys[i].as_str()
}

#[tokio::test]
async fn shamir_ceremony_every_order_duplicate_wrong_share_reset_and_seal() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let other = ArcaServer::start(other_dir.path());
    let api = server.api();

    // Uninitialised: sealed, 501 health, init status false; every other path is sealed.
    assert_eq!(
        api.get("sys/init").await.json,
        json!({ "initialized": false })
    );
    let status = seal_status(&api).await;
    assert_eq!(status["initialized"], false);
    assert_eq!(status["sealed"], true);
    assert_eq!(status["type"], "shamir");
    api.put("sys/init", &json!({})).await.assert_error(400);
    api.put(
        "sys/init",
        &json!({ "secret_shares": 5, "secret_threshold": 6 }),
    )
    .await
    .assert_error(400);

    let init = init(&api, 5, 3).await;
    let foreign = self::init(&other.api(), 5, 3).await;
    other.stop();
    assert_eq!(
        api.get("sys/init").await.json,
        json!({ "initialized": true })
    );
    let again = api
        .put(
            "sys/init",
            &json!({ "secret_shares": 5, "secret_threshold": 3 }),
        )
        .await;
    assert!(again.assert_error(400).contains("already initialized"));

    let status = seal_status(&api).await;
    assert_eq!(
        (
            &status["initialized"],
            &status["sealed"],
            &status["t"],
            &status["n"],
            &status["progress"],
            &status["nonce"],
            &status["recovery_seal"],
        ),
        (
            &json!(true),
            &json!(true),
            &json!(3),
            &json!(5),
            &json!(0),
            &json!(""),
            &json!(false)
        )
    );
    assert_eq!(status["storage_type"], "redb");
    assert!(
        status.get("cluster_id").is_none(),
        "no cluster id while sealed"
    );
    assert!(
        status.get("recovery_seal_type").is_none(),
        "no recovery keys"
    );

    // While sealed: every non-sys path, and the authenticated sys paths, answer 503.
    for path in ["secret/data/app", "kv/x", "sys/key-status"] {
        let reply = api.with_token(&init.root).get(path).await;
        assert_eq!(reply.status, 503, "{path}: {}", reply.text);
        assert_eq!(reply.json, sealed_body(), "{path}");
    }

    // Unseal with every 3-subset of the 5 shares in every order, hex and base64 mixed, and
    // seal again after each; progress and nonce move as Vault's do.
    let mut orders = 0;
    for a in 0..5 {
        for b in 0..5 {
            for c in 0..5 {
                if a == b || b == c || a == c {
                    continue;
                }
                orders += 1;
                let pick = |i: usize, pos: usize| {
                    if (orders + pos).is_multiple_of(2) {
                        k(&init.hex, i)
                    } else {
                        k(&init.base64, i)
                    }
                };
                let first = submit(&api, pick(a, 0)).await;
                assert_eq!(first.status, 200, "{}", first.text);
                assert_eq!(first.json["sealed"], true);
                assert_eq!(first.json["progress"], 1);
                let nonce = first.json["nonce"].as_str().unwrap().to_owned();
                assert!(!nonce.is_empty(), "an attempt has a nonce");
                let second = submit(&api, pick(b, 1)).await;
                assert_eq!(second.json["progress"], 2, "{}", second.text);
                assert_eq!(second.json["nonce"], nonce.as_str());
                assert_eq!(progress(&api).await, (true, 2, nonce.clone()));
                let third = submit(&api, pick(c, 2)).await;
                assert_eq!(third.status, 200, "{}", third.text);
                assert_eq!(third.json["sealed"], false, "order {a}{b}{c}");
                assert_eq!(third.json["progress"], 0);
                assert_eq!(third.json["nonce"], "");
                seal(&api, &init.root).await;
            }
        }
    }
    assert_eq!(orders, 60);

    // A duplicate share (even in its other encoding) is refused and not counted.
    let nonce = submit(&api, k(&init.hex, 0)).await.json["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    for duplicate in [k(&init.hex, 0), k(&init.base64, 0)] {
        let reply = submit(&api, duplicate).await;
        assert!(reply.assert_error(400).contains("already submitted"));
        assert_no_secret(&reply.text, &init.secrets());
        assert_eq!(progress(&api).await, (true, 1, nonce.clone()));
    }

    // A share from another init: accepted as a share, but the combination does not open the
    // sealed root key; 400 and the progress starts over.
    let reply = submit(&api, k(&foreign.hex, 4)).await;
    assert_eq!(reply.json["progress"], 2, "{}", reply.text);
    let reply = submit(&api, k(&init.hex, 1)).await;
    assert!(
        reply.assert_error(400).contains("invalid"),
        "{}",
        reply.text
    );
    assert_no_secret(&reply.text, &init.secrets());
    assert_no_secret(&reply.text, &foreign.secrets());
    assert_eq!(progress(&api).await, (true, 0, String::new()));

    // A corrupted share (one byte of its value flipped) fails the same way.
    let mut corrupted = init.hex[2].clone().into_bytes();
    corrupted[10] = if corrupted[10] == b'0' { b'1' } else { b'0' };
    let corrupted = String::from_utf8(corrupted).unwrap();
    unseal(&api, &[k(&init.hex, 0), k(&init.hex, 1)]).await;
    submit(&api, &corrupted).await.assert_error(400);
    assert_eq!(progress(&api).await, (true, 0, String::new()));

    // reset: true forgets the shares submitted so far.
    unseal(&api, &[k(&init.hex, 0), k(&init.hex, 1)]).await;
    let reply = api.put("sys/unseal", &json!({ "reset": true })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["progress"], 0);
    assert_eq!(reply.json["sealed"], true);
    assert_eq!(progress(&api).await.1, 0);
    let status = unseal(&api, &[k(&init.hex, 2)]).await;
    assert_eq!(
        status["progress"], 1,
        "the shares before the reset are gone"
    );
    let status = unseal(&api, &[k(&init.hex, 3), k(&init.hex, 4)]).await;
    assert_eq!(status["sealed"], false);
    let status = seal_status(&api).await;
    assert!(
        status["cluster_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36)
    );

    // Unsealed: a share is ignored and the status returned, as Vault does; unknown paths 404.
    let reply = submit(&api, k(&init.hex, 0)).await;
    assert_eq!((reply.status, &reply.json["sealed"]), (200, &json!(false)));
    let reply = api.with_token(&init.root).get("secret/data/app").await;
    assert_eq!(reply.status, 404, "{}", reply.text);

    // Sealing needs a root token: none, or a wrong one, is 403 and leaves it unsealed.
    let reply = api.put("sys/seal", &json!({})).await;
    assert_eq!(reply.assert_error(403), "permission denied");
    let reply = api
        .with_token("arca.not-a-real-token")
        .put("sys/seal", &json!({}))
        .await;
    assert_eq!(reply.assert_error(403), "permission denied");
    let reply = api.with_token("").post("sys/seal", &json!({})).await;
    assert_eq!(reply.assert_error(403), "permission denied");
    assert!(!progress(&api).await.0, "still unsealed");
    // `Authorization: Bearer` works as well as `X-Vault-Token`; POST as well as PUT.
    let reply = api
        .with_bearer(&init.root)
        .post("sys/seal", &json!({}))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(progress(&api).await, (true, 0, String::new()));
    let reply = api.get("secret/data/app").await;
    assert_eq!((reply.status, reply.json), (503, sealed_body()));

    // The logs name paths and statuses, never a share or a token.
    let logs = server.stderr();
    assert!(logs.contains("sys/unseal"), "request logs are written");
    assert_no_secret(&logs, &init.secrets());
    assert_no_secret(&logs, &foreign.secrets());
    server.stop();
}

#[tokio::test]
async fn restart_comes_back_sealed_with_keyring_and_token_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let init = init(&api, 3, 2).await;
    unseal(&api, &[k(&init.hex, 0), k(&init.hex, 1)]).await;

    // sys/rotate and sys/rotate/keyring each add a keyring term.
    assert_eq!(key_term(&api, &init.root).await, 1);
    let reply = api.put("sys/rotate", &json!({})).await;
    assert_eq!(reply.assert_error(403), "permission denied");
    for path in ["sys/rotate", "sys/rotate/keyring"] {
        let reply = api.with_token(&init.root).put(path, &json!({})).await;
        assert_eq!(reply.status, 204, "{path}: {}", reply.text);
    }
    assert_eq!(key_term(&api, &init.root).await, 3);
    let reply = api.get("sys/key-status").await;
    assert_eq!(reply.assert_error(403), "permission denied");

    // Rotating the root key changes nothing for the operators: the same shares unseal.
    let reply = api.put("sys/rotate/root", &json!({})).await;
    assert_eq!(reply.assert_error(403), "permission denied");
    let reply = api
        .with_token(&init.root)
        .put("sys/rotate/root", &json!({}))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    seal(&api, &init.root).await;
    let status = unseal(&api, &[k(&init.base64, 2), k(&init.hex, 0)]).await;
    assert_eq!(status["sealed"], false);
    assert_eq!(key_term(&api, &init.root).await, 3);

    // A restart on the same folder: initialised, sealed, same N/T, nothing readable.
    server.stop();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let status = seal_status(&api).await;
    assert_eq!(
        (
            &status["initialized"],
            &status["sealed"],
            &status["t"],
            &status["n"],
            &status["progress"]
        ),
        (&json!(true), &json!(true), &json!(2), &json!(3), &json!(0))
    );
    assert_eq!(api.get("sys/health").await.status, 503);
    let reply = api.with_token(&init.root).get("sys/key-status").await;
    assert_eq!((reply.status, reply.json), (503, sealed_body()));

    // The same shares unseal; the keyring written before (three terms) and the root token
    // stored before are both there.
    let status = unseal(&api, &[k(&init.hex, 2), k(&init.hex, 1)]).await;
    assert_eq!(status["sealed"], false);
    assert_eq!(key_term(&api, &init.root).await, 3);
    let reply = api
        .with_token(&init.root)
        .put("sys/rotate", &json!({}))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(key_term(&api, &init.root).await, 4);
    assert_eq!(api.get("sys/health").await.status, 200);
    server.stop();
}

#[tokio::test]
async fn rekey_through_vault_sys_rekey() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let old = init(&api, 5, 3).await;
    unseal(&api, &[k(&old.hex, 0), k(&old.hex, 1), k(&old.hex, 2)]).await;

    let status = api.get("sys/rekey/init").await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(
        (&status.json["started"], &status.json["nonce"]),
        (&json!(false), &json!(""))
    );
    api.put(
        "sys/rekey/update",
        &json!({ "key": old.hex[0], "nonce": "none" }),
    )
    .await
    .assert_error(400);

    // Start, cancel, start again: a new nonce.
    let started = api
        .put(
            "sys/rekey/init",
            &json!({ "secret_shares": 3, "secret_threshold": 2 }),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.text);
    let first_nonce = started.json["nonce"].as_str().unwrap().to_owned();
    assert_eq!(started.json["started"], true);
    assert_eq!(
        (
            &started.json["n"],
            &started.json["t"],
            &started.json["required"],
            &started.json["progress"]
        ),
        (&json!(3), &json!(2), &json!(3), &json!(0))
    );
    api.put(
        "sys/rekey/init",
        &json!({ "secret_shares": 3, "secret_threshold": 2 }),
    )
    .await
    .assert_error(400);
    let reply = api.delete("sys/rekey/init").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(api.get("sys/rekey/init").await.json["started"], false);
    let started = api
        .put(
            "sys/rekey/init",
            &json!({ "secret_shares": 3, "secret_threshold": 2 }),
        )
        .await;
    let nonce = started.json["nonce"].as_str().unwrap().to_owned();
    assert_ne!(nonce, first_nonce);

    let update = |key: &str, nonce: &str| {
        let body = json!({ "key": key, "nonce": nonce });
        let api = api.clone();
        async move { api.put("sys/rekey/update", &body).await }
    };
    // A wrong nonce, a duplicate and a non-share are refused without counting.
    update(k(&old.hex, 0), "0000").await.assert_error(400);
    assert_eq!(api.get("sys/rekey/init").await.json["progress"], 0);
    let reply = update(k(&old.hex, 0), &nonce).await;
    assert_eq!(reply.json["progress"], 1, "{}", reply.text);
    update(k(&old.base64, 0), &nonce).await.assert_error(400);
    update("not a share", &nonce).await.assert_error(400);
    update(k(&old.hex, 3), &nonce).await;
    let done = update(k(&old.base64, 4), &nonce).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["complete"], true);
    assert_eq!(done.json["verification_required"], false);
    let new = Init {
        hex: strings(&done.json["keys"]),
        base64: strings(&done.json["keys_base64"]),
        root: old.root.clone(),
    };
    assert_eq!(new.hex.len(), 3);
    assert_eq!(api.get("sys/rekey/init").await.json["started"], false);

    // The new shares (2 of 3) unseal; the old ones no longer do.
    seal(&api, &old.root).await;
    let status = seal_status(&api).await;
    assert_eq!((&status["t"], &status["n"]), (&json!(2), &json!(3)));
    let status = unseal(&api, &[k(&new.hex, 2), k(&new.base64, 0)]).await;
    assert_eq!(status["sealed"], false);
    seal(&api, &old.root).await;
    unseal(&api, &[k(&old.hex, 0)]).await;
    submit(&api, k(&old.hex, 1)).await.assert_error(400);
    assert_eq!(progress(&api).await, (true, 0, String::new()));
    let status = unseal(&api, &[k(&new.hex, 1), k(&new.hex, 0)]).await;
    assert_eq!(status["sealed"], false);
    assert_no_secret(&server.stderr(), &old.secrets());
    assert_no_secret(&server.stderr(), &new.secrets());
    server.stop();
}

#[tokio::test]
async fn rekey_through_openbao_rotate_root_with_verification() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let old = init(&api, 3, 2).await;
    unseal(&api, &[k(&old.hex, 0), k(&old.hex, 1)]).await;
    let root = api.with_token(&old.root);

    // Authenticated, unlike sys/rekey: no token or a wrong one is 403.
    let reply = api.get("sys/rotate/root/init").await;
    assert_eq!(reply.assert_error(403), "permission denied");
    let reply = api
        .with_token("arca.wrong")
        .put("sys/rotate/root/init", &json!({ "secret_shares": 5 }))
        .await;
    assert_eq!(reply.assert_error(403), "permission denied");
    // A Shamir seal has no recovery keys.
    root.put(
        "sys/rotate/recovery/init",
        &json!({ "secret_shares": 5, "secret_threshold": 3 }),
    )
    .await
    .assert_error(400);

    // Start and cancel.
    let reply = root
        .put(
            "sys/rotate/root/init",
            &json!({ "secret_shares": 5, "secret_threshold": 3 }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["data"]["started"], true,
        "enveloped: {}",
        reply.text
    );
    assert_eq!(root.delete("sys/rotate/root/init").await.status, 204);
    assert_eq!(
        root.get("sys/rotate/root/init").await.json["data"]["started"],
        false
    );

    // With verification: the new shares take over only once T of them are submitted back.
    let reply = root
        .put(
            "sys/rotate/root/init",
            &json!({ "secret_shares": 5, "secret_threshold": 3, "require_verification": true }),
        )
        .await;
    let data = &reply.json["data"];
    assert_eq!(data["verification_required"], true, "{}", reply.text);
    assert_eq!(data["required"], 2);
    let nonce = data["nonce"].as_str().unwrap().to_owned();
    let body = |key: &str, nonce: &str| json!({ "key": key, "nonce": nonce });
    let reply = root
        .put("sys/rotate/root/update", &body(k(&old.hex, 2), &nonce))
        .await;
    assert_eq!(reply.json["data"]["progress"], 1, "{}", reply.text);
    let reply = root
        .put("sys/rotate/root/update", &body(k(&old.hex, 0), &nonce))
        .await;
    let data = &reply.json["data"];
    assert_eq!(data["complete"], true, "{}", reply.text);
    assert_eq!(data["verification_required"], true);
    let vnonce = data["verification_nonce"].as_str().unwrap().to_owned();
    assert!(!vnonce.is_empty());
    let new = Init {
        hex: strings(&data["keys"]),
        base64: strings(&data["keys_base64"]),
        root: old.root.clone(),
    };
    assert_eq!(new.hex.len(), 5);

    let reply = root.get("sys/rotate/root/verify").await;
    let data = &reply.json["data"];
    assert_eq!(
        (&data["started"], &data["nonce"], &data["t"], &data["n"]),
        (&json!(true), &json!(vnonce), &json!(3), &json!(5)),
        "{}",
        reply.text
    );
    root.put("sys/rotate/root/verify", &body(k(&new.hex, 0), "bad"))
        .await
        .assert_error(400);
    for (i, expect) in [(3, 1), (0, 2)] {
        let reply = root
            .put("sys/rotate/root/verify", &body(k(&new.hex, i), &vnonce))
            .await;
        assert_eq!(reply.json["data"]["progress"], expect, "{}", reply.text);
    }
    let reply = root
        .put("sys/rotate/root/verify", &body(k(&new.base64, 4), &vnonce))
        .await;
    assert_eq!(reply.json["data"]["complete"], true, "{}", reply.text);

    // In force: 3 of the 5 new shares unseal, the old ones do not.
    seal(&api, &old.root).await;
    let status = seal_status(&api).await;
    assert_eq!((&status["t"], &status["n"]), (&json!(3), &json!(5)));
    let status = unseal(&api, &[k(&new.hex, 1), k(&new.hex, 2), k(&new.hex, 4)]).await;
    assert_eq!(status["sealed"], false);
    seal(&api, &old.root).await;
    unseal(&api, &[k(&old.hex, 0), k(&old.hex, 1)]).await;
    submit(&api, k(&old.hex, 2)).await.assert_error(400);
    assert_eq!(progress(&api).await, (true, 0, String::new()));
    server.stop();
}

#[tokio::test]
async fn health_codes_overrides_and_leader() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let leader = |api: Api| async move {
        let reply = api.get("sys/leader").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["ha_enabled"], false);
        assert_eq!(reply.json["is_self"], false);
        assert_eq!(reply.json["leader_address"], "");
    };

    let reply = api.get("sys/health").await;
    assert_eq!(reply.status, 501);
    assert_eq!(
        (&reply.json["initialized"], &reply.json["sealed"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(api.get("sys/health?uninitcode=200").await.status, 200);
    let head = api
        .send(reqwest::Method::HEAD, "sys/health", None)
        .await
        .unwrap();
    assert_eq!((head.status, head.text.as_str()), (501, ""));
    leader(api.clone()).await;

    let init = init(&api, 1, 1).await;
    let reply = api.get("sys/health").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        (&reply.json["initialized"], &reply.json["sealed"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(api.get("sys/health?sealedcode=200").await.status, 200);
    assert_eq!(api.get("sys/health?sealedcode=299").await.status, 299);
    assert_eq!(api.get("sys/health?activecode=299").await.status, 503);
    leader(api.clone()).await;

    unseal(&api, &[k(&init.hex, 0)]).await;
    let reply = api.get("sys/health").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        (
            &reply.json["initialized"],
            &reply.json["sealed"],
            &reply.json["standby"]
        ),
        (&json!(true), &json!(false), &json!(false))
    );
    assert!(reply.json["cluster_id"].is_string());
    assert!(reply.json["server_time_utc"].is_u64());
    assert_eq!(api.get("sys/health?activecode=299").await.status, 299);
    assert_eq!(
        api.get("sys/health?standbyok=true&sealedcode=500&uninitcode=500")
            .await
            .status,
        200
    );
    api.get("sys/health?activecode=42").await.assert_error(400);
    api.get("sys/health?activecode=abc").await.assert_error(400);
    leader(api.clone()).await;
    server.stop();
}

fn config_file(dir: &Path, seal: &str) -> std::path::PathBuf {
    let text = format!(
        "[storage]\nbackend = \"redb\"\npath = {}\n\n[seal]\n{seal}\n",
        toml_path(&dir.join("data"))
    );
    write_file(dir, "arca.toml", &text)
}

#[tokio::test]
async fn passphrase_seal_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "kind = \"passphrase\"");
    let server = ArcaServer::start_with_config(&config);
    let api = server.api();
    let status = seal_status(&api).await;
    assert_eq!(
        (&status["type"], &status["initialized"]),
        (&json!("passphrase"), &json!(false))
    );

    // A passphrase is required, and a short one refused.
    api.put("sys/init", &json!({})).await.assert_error(400);
    let reply = api.put("sys/init", &json!({ "passphrase": "short" })).await;
    reply.assert_error(400);
    assert!(!reply.text.contains("short"), "{}", reply.text);

    let passphrase = "correct horse battery staple";
    let reply = api
        .put("sys/init", &json!({ "passphrase": passphrase }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["keys"], json!([]));
    let root = reply.json["root_token"].as_str().unwrap().to_owned();
    let status = seal_status(&api).await;
    assert_eq!(
        (&status["sealed"], &status["t"], &status["n"]),
        (&json!(true), &json!(1), &json!(1))
    );

    // The passphrase travels in `key`, so Vault clients unseal unchanged.
    let wrong = "incorrect horse battery staple";
    let reply = submit(&api, wrong).await;
    reply.assert_error(400);
    assert!(!reply.text.contains(wrong), "{}", reply.text);
    assert!(
        progress(&api).await.0,
        "a wrong passphrase leaves it sealed"
    );
    let status = unseal(&api, &[passphrase]).await;
    assert_eq!(status["sealed"], false);
    assert_eq!(key_term(&api, &root).await, 1);

    // Restart: sealed again, and the same passphrase opens it.
    server.stop();
    let server = ArcaServer::start_with_config(&config);
    let api = server.api();
    assert!(progress(&api).await.0, "sealed after a restart");
    submit(&api, wrong).await.assert_error(400);
    let status = unseal(&api, &[passphrase]).await;
    assert_eq!(status["sealed"], false);
    assert_eq!(key_term(&api, &root).await, 1, "the root token still works");
    let logs = server.stderr();
    assert!(!logs.contains(passphrase) && !logs.contains(wrong));
    server.stop();
}

#[tokio::test]
async fn key_file_seal_auto_unseals_and_rotates_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key1 = dir.path().join("seal-1.key");
    let key2 = dir.path().join("seal-2.key");
    let key3 = dir.path().join("seal-3.key");
    let seal_section = |key: &Path, previous: Option<&Path>| {
        let mut text = format!("kind = \"keyfile\"\nkey_file = {}\n", toml_path(key));
        if let Some(previous) = previous {
            text += &format!("previous_key_file = {}\n", toml_path(previous));
        }
        text
    };

    let config = config_file(dir.path(), &seal_section(&key1, None));
    let server = ArcaServer::start_with_config(&config);
    let api = server.api();
    let status = seal_status(&api).await;
    assert_eq!(
        (&status["type"], &status["initialized"], &status["sealed"]),
        (&json!("keyfile"), &json!(false), &json!(true))
    );

    // Init returns recovery keys, no unseal keys, and leaves the store unsealed.
    let reply = api
        .put(
            "sys/init",
            &json!({ "recovery_shares": 5, "recovery_threshold": 3 }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["keys"], json!([]));
    let recovery = strings(&reply.json["recovery_keys"]);
    assert_eq!(recovery.len(), 5);
    assert_eq!(strings(&reply.json["recovery_keys_base64"]).len(), 5);
    let root = reply.json["root_token"].as_str().unwrap().to_owned();
    assert!(key1.exists(), "init creates the key file");
    let status = seal_status(&api).await;
    assert_eq!(
        (
            &status["sealed"],
            &status["recovery_seal"],
            &status["recovery_seal_type"]
        ),
        (&json!(false), &json!(true), &json!("shamir"))
    );
    assert_eq!(api.get("sys/health").await.status, 200);
    let reply = api.put("sys/unseal", &json!({ "key": recovery[0] })).await;
    reply.assert_error(400);
    assert!(!reply.text.contains(&recovery[0]));

    // Recovery keys authorise a rekey (of themselves) through sys/rotate/recovery.
    let token = api.with_token(&root);
    token
        .put(
            "sys/rotate/root/init",
            &json!({ "secret_shares": 3, "secret_threshold": 2 }),
        )
        .await
        .assert_error(400);
    let reply = token
        .put(
            "sys/rotate/recovery/init",
            &json!({ "secret_shares": 3, "secret_threshold": 2 }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let nonce = reply.json["data"]["nonce"].as_str().unwrap().to_owned();
    let mut done = Value::Null;
    for key in &recovery[..3] {
        let reply = token
            .put(
                "sys/rotate/recovery/update",
                &json!({ "key": key, "nonce": nonce }),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        done = reply.json["data"].clone();
    }
    assert_eq!(done["complete"], true);
    assert_eq!(strings(&done["keys"]).len(), 3);
    let reply = token.put("sys/rotate", &json!({})).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(key_term(&api, &root).await, 2);

    // Restart: unsealed by itself.
    server.stop();
    let server = ArcaServer::start_with_config(&config);
    let api = server.api();
    let status = seal_status(&api).await;
    assert_eq!(
        (&status["sealed"], &status["n"]),
        (&json!(false), &json!(3))
    );
    assert_eq!(key_term(&api, &root).await, 2);
    server.stop();

    // A new key file with the old one as previous: unseals (and re-wraps under the new key).
    let id1 = KeyFileWrapper::load(&key1).unwrap().key_id();
    let id2 = KeyFileWrapper::create(&key2).unwrap().key_id();
    assert_ne!(id1, id2);
    let config = config_file(dir.path(), &seal_section(&key2, Some(&key1)));
    let server = ArcaServer::start_with_config(&config);
    assert_eq!(seal_status(&server.api()).await["sealed"], false);
    assert_eq!(key_term(&server.api(), &root).await, 2);
    server.stop();

    // The old key file is no longer needed.
    std::fs::remove_file(&key1).unwrap();
    let config = config_file(dir.path(), &seal_section(&key2, None));
    let server = ArcaServer::start_with_config(&config);
    assert_eq!(seal_status(&server.api()).await["sealed"], false);
    server.stop();

    // An unrelated key file cannot unseal it: the server says so and does not serve.
    KeyFileWrapper::create(&key3).unwrap();
    let config = config_file(dir.path(), &seal_section(&key3, None));
    let failure = ArcaServer::try_start_with(&[
        "--config".into(),
        config.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ])
    .err()
    .expect("a server whose key file does not match must not start");
    assert_eq!(failure.status.code(), Some(1), "{failure}");
    assert!(failure.stderr.contains("auto-unseal"), "{failure}");
    assert!(failure.stderr.contains(&id2), "names the key id: {failure}");
}

#[tokio::test]
async fn bad_input_is_a_clear_400_and_leaves_progress_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let init = init(&api, 5, 3).await;
    let first = submit(&api, k(&init.hex, 0)).await;
    let nonce = first.json["nonce"].as_str().unwrap().to_owned();

    let ten_mb = format!("{{\"key\": \"{}\"}}", "q".repeat(10_000_000));
    let forty_mb = format!("{{\"key\": \"{}\"}}", "q".repeat(40_000_000));
    // (what, body, status, text that must not come back)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "non-hex share of the right length",
            br#"{"key": "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00"}"#
                .to_vec(),
            400,
            "zz112233445566778899",
        ),
        (
            "32-byte hex (too short)",
            br#"{"key": "0111223344556677889900aabbccddeeff0011223344556677889900aabbccdd"}"#
                .to_vec(),
            400,
            "0111223344556677889900",
        ),
        (
            "34-byte hex (too long)",
            br#"{"key": "011122334455667788990011aabbccddeeff0011223344556677889900aabbccddee"}"#
                .to_vec(),
            400,
            "011122334455667788990011",
        ),
        (
            "identifier 0",
            br#"{"key": "00aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"}"#
                .to_vec(),
            400,
            "00aabbccddeeff0011",
        ),
        ("empty key", br#"{"key": ""}"#.to_vec(), 400, "\"\""),
        ("a number", br#"{"key": 5}"#.to_vec(), 400, "5}"),
        ("an array", b"[1,2]".to_vec(), 400, "[1,2]"),
        ("malformed JSON", br#"{"key": "abc"#.to_vec(), 400, "abc"),
        ("not JSON", b"key=secret-text".to_vec(), 400, "secret-text"),
        (
            "reset of the wrong type",
            br#"{"reset": "yes"}"#.to_vec(),
            400,
            "yes",
        ),
        ("10 MB body", ten_mb.into_bytes(), 400, "qqqqqqqq"),
        ("40 MB body", forty_mb.into_bytes(), 413, "qqqqqqqq"),
    ];
    for (what, body, status, secret) in cases {
        let reply = api.put_raw("sys/unseal", body).await;
        let message = reply.assert_error(status);
        assert!(
            !reply.text.contains(secret),
            "{what}: the body quotes the input: {}",
            reply.text
        );
        assert!(!message.is_empty(), "{what}");
        if status == 413 {
            // The rest of the body stays unread and the server closes the connection: it says
            // so, or a client would send its next request on a dead pooled connection.
            assert_eq!(
                reply.headers.get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{what}"
            );
        }
        assert_eq!(
            progress(&api).await,
            (true, 1, nonce.clone()),
            "{what}: progress changed"
        );
    }
    // The missing key is named.
    let reply = api.put("sys/unseal", &json!({})).await;
    assert!(reply.assert_error(400).contains("'key' must be specified"));
    assert!(!progress(&api).await.2.is_empty());

    // Still the same attempt: two more good shares unseal.
    let status = unseal(&api, &[k(&init.hex, 1), k(&init.hex, 2)]).await;
    assert_eq!(status["sealed"], false);
    assert_no_secret(&server.stderr(), &init.secrets());
    server.stop();
}

/// A client that writes its whole oversized body before it reads (as many do) still gets the
/// 413: the server reads the rest of the body away instead of closing on unread bytes, which
/// would reset the connection under the client's feet.
#[test]
fn an_oversized_body_is_answered_413_to_a_client_that_sends_it_all() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let host = server.addr().trim_start_matches("http://").to_owned();
    // 48 MiB: 16 MiB past the 32 MiB limit, all of it still to send when the server answers.
    let body = vec![b'q'; 48 << 20];
    let mut tcp = std::net::TcpStream::connect(&host).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "PUT /v1/sys/unseal HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(&body)
        .expect("the server reads the whole body rather than resetting the connection");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body too large"), "{answer}");
    server.stop();
}

#[test]
fn server_without_a_store_exits_2_and_says_what_it_needs() {
    let run = arca_cli(&["server"], &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    for needed in ["--dev", "--data-dir", "--config"] {
        assert!(run.stderr.contains(needed), "{run:?}");
    }
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let run = arca_cli(
        &["server", "--data-dir", data, "--listen", "0.0.0.0:0"],
        &[],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("refusing plain HTTP"), "{run:?}");
    assert!(run.stderr.contains("--insecure-listen"), "{run:?}");
    assert!(run.stdout.is_empty(), "it never listened: {run:?}");
}

#[tokio::test]
async fn tls_listener_and_the_cli_with_arca_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = write_file(dir.path(), "tls.crt", &cert_pem);
    let key_path = write_file(dir.path(), "tls.key", &cert.signing_key.serialize_pem());
    let text = format!(
        "[storage]\npath = {}\n\n[tls]\ncert = {}\nkey = {}\n",
        toml_path(&dir.path().join("data")),
        toml_path(&cert_path),
        toml_path(&key_path),
    );
    let config = write_file(dir.path(), "arca.toml", &text);
    let server = ArcaServer::start_with_config(&config);
    let addr = server.addr().to_owned();
    assert!(addr.starts_with("https://127.0.0.1:"), "{addr}");

    // A client that trusts the certificate talks to it; one that does not, or plain HTTP,
    // gets nowhere.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let api = Api::with_roots(&addr, None, roots);
    assert_eq!(api.get("sys/health").await.status, 501);
    let untrusting = Api::new(&addr, None);
    assert!(
        untrusting
            .send(reqwest::Method::GET, "sys/health", None)
            .await
            .is_err()
    );
    let plain = Api::new(&addr.replace("https://", "http://"), None);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        plain.send(reqwest::Method::GET, "sys/health", None),
    )
    .await
    .expect("plain HTTP to a TLS port fails quickly");
    assert!(result.is_err(), "plain HTTP must not be answered");

    // The CLI: ARCA_CACERT makes it trust the certificate.
    let cacert = cert_path.to_str().unwrap();
    let run = arca_cli(&["status", "--address", &addr], &[("ARCA_CACERT", cacert)]);
    assert_eq!(run.code, Some(2), "sealed: {run:?}");
    assert!(run.stdout.contains("Sealed"), "{run:?}");
    let run = arca_cli(&["status", "--address", &addr], &[]);
    assert_eq!(run.code, Some(1), "untrusted certificate: {run:?}");
    assert!(run.stderr.contains("cannot reach arca"), "{run:?}");

    let init = init(&api, 1, 1).await;
    let run = arca_cli(
        &["operator", "unseal", k(&init.base64, 0)],
        &[("ARCA_ADDR", &addr), ("ARCA_CACERT", cacert)],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let run = arca_cli(&["status", "-address", &addr], &[("ARCA_CACERT", cacert)]);
    assert_eq!(run.code, Some(0), "unsealed: {run:?}");
    server.stop();
}

/// The privileged sys endpoints follow ACL policies: `sudo` + `update` on the path opens
/// them to a non-root token; `read` on `sys/key-status` is enough for key status; anything
/// less is 403.
#[tokio::test]
async fn sys_endpoints_follow_acl_policies_not_only_root() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let api = server.api();
    let init = init(&api, 1, 1).await;
    unseal(&api, &[k(&init.hex, 0)]).await;
    let root = api.with_token(&init.root);

    let operator = r#"
        path "sys/rotate/keyring" { capabilities = ["update", "sudo"] }
        path "sys/key-status" { capabilities = ["read"] }
    "#;
    let reply = root
        .put("sys/policies/acl/operator", &json!({ "policy": operator }))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let reply = root
        .put(
            "sys/policies/acl/reader",
            &json!({ "policy": r#"path "sys/key-status" { capabilities = ["read"] }"# }),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let token = |policy: &'static str| {
        let root = root.clone();
        async move {
            let reply = root
                .post("auth/token/create", &json!({ "policies": [policy] }))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.json["auth"]["client_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let operator = token("operator").await;
    let reader = token("reader").await;

    // The operator rotates the keyring; the reader may only look.
    let before = key_term(&api, &reader).await;
    let reply = api
        .with_token(&reader)
        .put("sys/rotate/keyring", &json!({}))
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(reply.errors(), ["permission denied"]);
    let reply = api
        .with_token(&operator)
        .put("sys/rotate/keyring", &json!({}))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(key_term(&api, &operator).await, before + 1);

    // Neither may seal or rotate the root key: no policy grants those paths.
    for path in ["sys/seal", "sys/rotate/root", "sys/rotate"] {
        for token in [&operator, &reader] {
            let reply = api.with_token(token).put(path, &json!({})).await;
            assert_eq!(reply.status, 403, "{path}: {}", reply.text);
        }
    }
    assert!(!progress(&api).await.0, "still unsealed");
    server.stop();
}
