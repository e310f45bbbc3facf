//! The `kms` seal against a real KMS: arca B auto-unseals with a key kept by arca A's AWS KMS
//! API, both running as the real binary on `127.0.0.1:0`.
//!
//! A runs with `--dev` (any access key is accepted) and its key is created and disabled
//! through its AWS API, signed with arca's own SigV4 helper, as any AWS client would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::time::SystemTime;

use arca::server::aws::sigv4::sign_request;
use common::{ArcaServer, toml_path, write_file};
use serde_json::{Value, json};

const ACCESS_KEY: &str = "AKIDSEALTEST";
const SECRET_KEY: &str = "seal-secret-access-key-never-logged";

/// Calls `TrentService.<operation>` on `endpoint`, SigV4-signed, and returns the JSON answer.
async fn kms_call(endpoint: &str, operation: &str, body: &Value) -> Value {
    let url = format!("{endpoint}/");
    let host = endpoint.trim_start_matches("http://");
    let target = format!("TrentService.{operation}");
    let body = serde_json::to_vec(body).unwrap();
    let headers = [
        ("host", host),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let signed = sign_request(
        "POST",
        &url,
        &headers,
        &body,
        "us-east-1",
        "kms",
        "test",
        "test",
        SystemTime::now(),
    )
    .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    let mut request = http.post(&url);
    for (name, value) in headers.iter().skip(1) {
        request = request.header(*name, *value);
    }
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status();
    let value: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
    assert!(status.is_success(), "{operation}: {status} {value}");
    value
}

/// `arca server --dev` over `dir`: the KMS that holds B's seal key.
fn start_kms(dir: &Path) -> ArcaServer {
    ArcaServer::start_with(&[
        "--dev".into(),
        "--data-dir".into(),
        dir.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ])
}

/// Writes B's configuration pointing at `kms_endpoint` and starts B with the access key in
/// its environment.
fn start_sealed_by_kms(dir: &Path, kms_endpoint: &str) -> ArcaServer {
    let text = format!(
        "[storage]\nbackend = \"redb\"\npath = {}\n\n[seal]\nkind = \"kms\"\n\
         kms_endpoint = \"{kms_endpoint}\"\nkms_key_id = \"alias/arca-seal\"\n\
         kms_region = \"us-east-1\"\n",
        toml_path(&dir.join("data"))
    );
    let config = write_file(dir, "arca.toml", &text);
    let args: [OsString; 4] = [
        "--config".into(),
        config.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    ArcaServer::try_start_with_env(
        &args,
        &[
            ("ARCA_SEAL_AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("ARCA_SEAL_AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    )
    .unwrap_or_else(|failure| panic!("B did not start: {failure}"))
}

async fn seal_status(server: &ArcaServer) -> Value {
    let reply = server.api().get("sys/seal-status").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

#[tokio::test]
async fn kms_seal_unseals_through_another_arca() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();

    let a = start_kms(dir_a.path());
    let created = kms_call(
        a.addr(),
        "CreateKey",
        &json!({ "Description": "arca B's seal key" }),
    )
    .await;
    let arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    kms_call(
        a.addr(),
        "CreateAlias",
        &json!({ "AliasName": "alias/arca-seal", "TargetKeyId": arn }),
    )
    .await;

    // Init: recovery keys, no unseal keys, and B is unsealed at once.
    let b = start_sealed_by_kms(dir_b.path(), a.addr());
    let status = seal_status(&b).await;
    assert_eq!(
        (&status["type"], &status["initialized"], &status["sealed"]),
        (&json!("awskms"), &json!(false), &json!(true))
    );
    let reply = b
        .api()
        .put(
            "sys/init",
            &json!({ "recovery_shares": 3, "recovery_threshold": 2 }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["keys"], json!([]));
    assert_eq!(reply.json["recovery_keys"].as_array().unwrap().len(), 3);
    let root = reply.json["root_token"].as_str().unwrap().to_owned();
    let status = seal_status(&b).await;
    assert_eq!(
        (&status["sealed"], &status["recovery_seal"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(
        b.api()
            .with_token(&root)
            .get("auth/token/lookup-self")
            .await
            .status,
        200
    );
    b.stop();

    // Restart: B unseals itself through A.
    let b = start_sealed_by_kms(dir_b.path(), a.addr());
    assert_eq!(
        seal_status(&b).await["sealed"],
        json!(false),
        "{}",
        b.stderr()
    );
    let reply = b
        .api()
        .with_token(&root)
        .get("auth/token/lookup-self")
        .await;
    assert_eq!(
        reply.status, 200,
        "the root token made before the restart: {}",
        reply.text
    );
    b.stop();

    // A is down: B starts sealed, says why, and answers.
    let a_addr = a.addr().to_owned();
    a.stop();
    let b = start_sealed_by_kms(dir_b.path(), &a_addr);
    let status = seal_status(&b).await;
    assert_eq!(
        (&status["initialized"], &status["sealed"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(b.api().get("sys/health").await.status, 503);
    let log = b.stderr();
    assert!(
        log.contains("auto-unseal through the KMS failed") && log.contains("cannot be reached"),
        "{log}"
    );
    assert!(!log.contains(SECRET_KEY));
    b.stop();

    // A is back (on a new port): B unseals again.
    let a = start_kms(dir_a.path());
    let b = start_sealed_by_kms(dir_b.path(), a.addr());
    assert_eq!(
        seal_status(&b).await["sealed"],
        json!(false),
        "{}",
        b.stderr()
    );
    b.stop();

    // The key is disabled on A: B's restart fails to unseal, with the reason in the log.
    kms_call(a.addr(), "DisableKey", &json!({ "KeyId": arn })).await;
    let b = start_sealed_by_kms(dir_b.path(), a.addr());
    assert_eq!(seal_status(&b).await["sealed"], json!(true));
    let log = b.stderr();
    assert!(
        log.contains("auto-unseal through the KMS failed") && log.contains("disabled"),
        "{log}"
    );
    assert!(!log.contains(SECRET_KEY));
    b.stop();
    a.stop();
}

#[tokio::test]
async fn kms_seal_needs_its_access_key_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\nbackend = \"redb\"\npath = {}\n\n[seal]\nkind = \"kms\"\n\
         kms_endpoint = \"http://127.0.0.1:9\"\nkms_key_id = \"alias/arca-seal\"\n",
        toml_path(&dir.path().join("data"))
    );
    let config = write_file(dir.path(), "arca.toml", &text);
    let args: [OsString; 4] = [
        "--config".into(),
        config.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let Err(failure) = ArcaServer::try_start_with_env(
        &args,
        &[
            ("ARCA_SEAL_AWS_ACCESS_KEY_ID", ""),
            ("ARCA_SEAL_AWS_SECRET_ACCESS_KEY", ""),
        ],
    ) else {
        panic!("started without an access key");
    };
    assert!(
        failure.stderr.contains("ARCA_SEAL_AWS_SECRET_ACCESS_KEY"),
        "{}",
        failure.stderr
    );
}
