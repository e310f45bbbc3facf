//! Shared by the storage tests that run against DynamoDB on moto's server: the root crate's
//! venv and moto helpers (one copy of each, included by path) and a backend per test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/common/moto.rs"]
pub mod moto;
#[path = "../../../tests/common/venv.rs"]
pub mod venv;

use std::path::Path;
use std::sync::OnceLock;

use arca_storage::DynamoDbBackend;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use sha2::{Digest, Sha256};

/// The table every storage test shares; each test has its own namespace in it.
pub const TABLE: &str = "arca-storage-tests";

/// A DynamoDB client of `endpoint` with the emulator's dummy credentials and, as the backend
/// wants, no SDK retries.
pub fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(moto::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            moto::ACCESS_KEY_ID,
            moto::SECRET_ACCESS_KEY,
            None,
            None,
            "moto",
        ))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// The shared moto server, with [`TABLE`] created in it (once per test binary).
pub fn moto() -> &'static str {
    static READY: OnceLock<String> = OnceLock::new();
    READY.get_or_init(|| {
        let endpoint = moto::Moto::shared().endpoint().to_owned();
        // Tests call this from inside their own runtime, which cannot block: create the table
        // from a thread with a runtime of its own.
        let for_thread = endpoint.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                arca_storage::backend::dynamodb::create_table(&client(&for_thread), TABLE)
                    .await
                    .unwrap();
            });
        })
        .join()
        .unwrap();
        endpoint
    })
}

/// The namespace of the store kept "in" `dir`: the same folder opens the same store again,
/// as a reopened redb file would.
pub fn namespace_for(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("t-{hex}")
}

/// A backend over the namespace of `dir` in the shared table.
pub fn backend(dir: &Path) -> DynamoDbBackend {
    DynamoDbBackend::with_client(client(moto()), TABLE, &namespace_for(dir)).unwrap()
}
