//! The AWS back end end to end (feature `aws`): the real `arca` binary over DynamoDB and AWS
//! KMS on moto's server, which each test starts for itself.
//!
//! - `arca aws init-table` creates the table and prints the IAM policy;
//! - the hvac seal ceremony (Shamir) and the hvac KV tests, the same pytest files the redb
//!   server passes, run with `backend = "dynamodb"`; the KV tests also with the `awskms` seal;
//! - an `awskms` server initialises with recovery keys, unseals itself, and does so again
//!   after a restart, with its data intact;
//! - two servers on one table: one active, one standby that forwards; killing the active
//!   one makes the standby active within the documented bound, and no acknowledged write is
//!   lost; a clean stop hands over at the next poll;
//! - `AwsKms` as a key provider: Encrypt, Decrypt, GenerateDataKey, ReEncrypt and DescribeKey
//!   with encryption context.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use common::moto::{ACCESS_KEY_ID, Moto, REGION, SECRET_ACCESS_KEY};
use common::{ArcaServer, arca_cli, write_file};
use serde_json::{Value, json};

const TABLE: &str = "arca-tests";

/// The environment that points the AWS SDK at moto (and nowhere else).
fn aws_env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.endpoint().to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `arca aws init-table` against moto; returns what it printed on stdout (the policy).
fn init_table(moto: &Moto) -> Value {
    let env = aws_env(moto);
    let run = arca_cli(&["aws", "init-table", "--table", TABLE], &borrowed(&env));
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout).expect("init-table prints the IAM policy as JSON")
}

/// A symmetric key in moto's KMS, by its ARN.
async fn create_kms_key(moto: &Moto) -> String {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "moto",
        ))
        .build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let key = client
        .create_key()
        .description("arca seal (test)")
        .send()
        .await
        .unwrap();
    key.key_metadata().unwrap().arn().unwrap().to_owned()
}

fn storage_table(namespace: &str) -> String {
    format!("backend = \"dynamodb\"\ntable = \"{TABLE}\"\nnamespace = \"{namespace}\"\n")
}

fn start(config: &Path, moto: &Moto) -> ArcaServer {
    let env = aws_env(moto);
    let args: Vec<OsString> = vec![
        "--config".into(),
        config.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    ArcaServer::try_start_with_env(&args, &borrowed(&env))
        .unwrap_or_else(|failure| panic!("arca server did not start: {failure}"))
}

#[test]
fn init_table_creates_the_table_and_prints_the_least_policy() {
    let moto = Moto::start();
    let policy = init_table(&moto);
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Resource"],
        format!("arn:aws:dynamodb:{REGION}:123456789012:table/{TABLE}")
    );
    let actions: Vec<&str> = statement["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(actions.contains(&"dynamodb:Query"));
    assert!(!actions.iter().any(|a| a.contains('*')));
    // A second run finds the table and says so; the policy is the same.
    assert_eq!(init_table(&moto), policy);
}

#[test]
fn hvac_seal_ceremony_over_dynamodb() {
    let moto = Moto::start();
    init_table(&moto);
    let mut env = aws_env(&moto);
    env.push(("ARCA_TEST_STORAGE", storage_table("$NS")));
    common::pytest::run_with_env("test_seal_hvac.py", &borrowed(&env));
}

#[test]
fn hvac_kv_over_dynamodb_with_the_awskms_seal() {
    let moto = Moto::start();
    init_table(&moto);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(create_kms_key(&moto));
    let mut env = aws_env(&moto);
    env.push(("ARCA_TEST_STORAGE", storage_table("$NS")));
    env.push((
        "ARCA_TEST_SEAL",
        format!("kind = \"awskms\"\nkms_key_id = \"{key}\"\n"),
    ));
    common::pytest::run_with_env("test_kv_hvac.py", &borrowed(&env));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awskms_server_unseals_itself_and_again_after_a_restart() {
    let moto = Moto::start();
    init_table(&moto);
    let key = create_kms_key(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "arca.toml",
        &format!(
            "[storage]\n{}\n[seal]\nkind = \"awskms\"\nkms_key_id = \"{key}\"\n",
            storage_table("awskms")
        ),
    );
    let server = start(&config, &moto);
    let api = server.api();
    let status = api.get("sys/seal-status").await;
    assert_eq!(
        status.json["type"],
        "awskms",
        "{}: {}\n{}",
        status.status,
        status.text,
        server.stderr()
    );
    assert_eq!(status.json["storage_type"], "dynamodb");
    assert_eq!(status.json["initialized"], false);

    let init = api
        .put(
            "sys/init",
            &json!({"recovery_shares": 3, "recovery_threshold": 2}),
        )
        .await;
    assert_eq!(init.status, 200, "{}", init.text);
    assert_eq!(init.json["recovery_keys"].as_array().unwrap().len(), 3);
    assert_eq!(init.json["keys"], json!([]));
    let token = init.json["root_token"].as_str().unwrap().to_owned();
    let status = api.get("sys/seal-status").await;
    assert_eq!(status.json["sealed"], false, "{}", status.text);
    assert_eq!(status.json["recovery_seal"], true);

    let api = api.with_token(&token);
    let mount = api
        .post(
            "sys/mounts/secret",
            &json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
    assert!(mount.status < 300, "{}", mount.text);
    // Over 350 KiB once encrypted: stored in chunks.
    let big = "x".repeat(400 * 1024);
    for (path, value) in [("app/db", "hunter2"), ("app/big", big.as_str())] {
        let put = api
            .post(
                &format!("secret/data/{path}"),
                &json!({"data": {"v": value}}),
            )
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
    }
    server.stop();

    // A restart unseals through KMS by itself, and everything is there.
    let server = start(&config, &moto);
    let api = server.api().with_token(&token);
    let status = api.get("sys/seal-status").await;
    assert_eq!(status.json["sealed"], false, "{}", server.stderr());
    let read = api.get("secret/data/app/db").await;
    assert_eq!(read.json["data"]["data"]["v"], "hunter2", "{}", read.text);
    let read = api.get("secret/data/app/big").await;
    assert_eq!(read.json["data"]["data"]["v"].as_str(), Some(big.as_str()));
    // Nothing of the plaintext is in the table, nor is the unseal key's KMS ciphertext any
    // use without KMS: the seal record names the key's ARN.
    assert!(!server.stderr().contains("hunter2"));
    server.stop();
}

/// `sys/health`'s status code, or 0 when the server does not answer.
async fn health(server: &ArcaServer) -> u16 {
    server.api().get("sys/health").await.status
}

/// Waits until `check` holds, polling every 100 ms, for at most `limit`; returns how long.
async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_fail_over_without_losing_an_acknowledged_write() {
    const TTL: u64 = 3;
    let moto = Moto::start();
    init_table(&moto);
    let key = create_kms_key(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "arca.toml",
        &format!(
            "[storage]\n{}\n[seal]\nkind = \"awskms\"\nkms_key_id = \"{key}\"\n\n[ha]\nenabled = true\nlease_ttl_secs = {TTL}\n",
            storage_table("ha")
        ),
    );
    let a = start(&config, &moto);
    // A took the free lease at once; B finds it held and stands by.
    wait_for(Duration::from_secs(30), || async {
        health(&a).await == 501
    })
    .await;
    let b = start(&config, &moto);
    let leader = b.api().get("sys/leader").await;
    assert_eq!(leader.json["ha_enabled"], true);
    assert_eq!(leader.json["is_self"], false);
    assert_eq!(leader.json["leader_address"], a.addr());

    // Initialise through the standby: it forwards to the active server.
    let init = b
        .api()
        .put(
            "sys/init",
            &json!({"recovery_shares": 1, "recovery_threshold": 1}),
        )
        .await;
    assert_eq!(init.status, 200, "{}", init.text);
    let token = init.json["root_token"].as_str().unwrap().to_owned();
    assert_eq!(health(&a).await, 200);
    let standby = b.api().get("sys/health").await;
    assert_eq!(standby.status, 429, "{}", standby.text);
    assert_eq!(standby.json["standby"], true);
    assert_eq!(b.api().get("sys/health?standbyok=true").await.status, 200);
    let leader = a.api().get("sys/leader").await;
    assert_eq!(leader.json["is_self"], true);

    // Writes through both servers; every acknowledged one must survive the fail-over.
    let mount = a
        .api()
        .with_token(&token)
        .post(
            "sys/mounts/secret",
            &json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
    assert!(mount.status < 300, "{}", mount.text);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { &a } else { &b };
        let put = via
            .api()
            .with_token(&token)
            .post(&format!("secret/data/k{i}"), &json!({"data": {"i": i}}))
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
        acknowledged.push(i);
    }

    // The active server dies without a word: B takes over within ttl + poll (+ start-up).
    a.kill();
    let bound = Duration::from_secs(TTL) + Duration::from_secs(1);
    let took = wait_for(bound + Duration::from_secs(15), || async {
        health(&b).await == 200
    })
    .await;
    eprintln!("fail-over after a crash took {took:?} (lease {TTL} s)");
    assert!(
        took >= Duration::from_secs(TTL) / 2,
        "took over too early: {took:?}"
    );
    let leader = b.api().get("sys/leader").await;
    assert_eq!(leader.json["is_self"], true);
    let api = b.api().with_token(&token);
    for i in &acknowledged {
        let read = api.get(&format!("secret/data/k{i}")).await;
        assert_eq!(read.status, 200, "k{i} lost: {}", read.text);
        assert_eq!(read.json["data"]["data"]["i"], *i);
    }
    let put = api
        .post(
            "secret/data/after",
            &json!({"data": {"v": "after fail-over"}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);

    // A comes back as a standby; a clean stop of B hands over at A's next poll.
    let a = start(&config, &moto);
    wait_for(Duration::from_secs(10), || async {
        health(&a).await == 429
    })
    .await;
    let via_standby = a.api().with_token(&token).get("secret/data/after").await;
    assert_eq!(via_standby.json["data"]["data"]["v"], "after fail-over");
    b.stop();
    let took = wait_for(Duration::from_secs(15), || async {
        health(&a).await == 200
    })
    .await;
    eprintln!("hand-over after a clean stop took {took:?}");
    let read = a.api().with_token(&token).get("secret/data/k19").await;
    assert_eq!(read.json["data"]["data"]["i"], 19);
    a.stop();
}

#[tokio::test]
async fn aws_kms_provider_round_trips_with_encryption_context() {
    use arca::kms::{AwsKms, DataKeySpec, EncryptionContext, KeyProvider, KmsError};
    let moto = Moto::start();
    let first = create_kms_key(&moto).await;
    let second = create_kms_key(&moto).await;
    // Through the SDK, as the awskms seal uses it (the servers above reach it through the
    // standard credential chain; here the client is given explicitly).
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "moto",
        ))
        .build();
    let kms = AwsKms::with_client(aws_sdk_kms::Client::from_conf(config));
    let mut context = EncryptionContext::new();
    context.insert("secret".into(), "app/db".into());

    assert_eq!(kms.key_arn(&first).await.unwrap(), first);
    let blob = kms.encrypt(&first, b"hunter2", &context).await.unwrap();
    let opened = kms.decrypt(&blob, &context).await.unwrap();
    assert_eq!(opened.plaintext.expose_secret(), b"hunter2");
    assert_eq!(opened.key_id, first);
    assert!(!format!("{opened:?}").contains("hunter2"));
    // Another context does not open it.
    assert!(matches!(
        kms.decrypt(&blob, &EncryptionContext::new()).await,
        Err(KmsError::InvalidCiphertext)
    ));

    let data_key = kms
        .generate_data_key(&first, DataKeySpec::Aes256, &context)
        .await
        .unwrap();
    assert_eq!(data_key.plaintext.len(), 32);
    let unwrapped = kms
        .decrypt(&data_key.ciphertext_blob, &context)
        .await
        .unwrap();
    assert_eq!(unwrapped.plaintext, data_key.plaintext);

    // ReEncrypt moves it under the second key with a new context.
    let mut moved_context = EncryptionContext::new();
    moved_context.insert("secret".into(), "app/db-moved".into());
    let moved = kms
        .re_encrypt(&data_key.ciphertext_blob, &context, &second, &moved_context)
        .await
        .unwrap();
    let reopened = kms.decrypt(&moved, &moved_context).await.unwrap();
    assert_eq!(reopened.key_id, second);
    assert_eq!(reopened.plaintext, data_key.plaintext);

    assert!(matches!(
        kms.key_arn("alias/does-not-exist").await,
        Err(KmsError::NotFound(_))
    ));
}
