//! Shared by the rotation tests: an unsealed in-memory arca and secret helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use arca::Arca;
use arca::config::StorageKind;
use arca::lifecycle::{
    AWSCURRENT, CreateSecret, SecretDescription, SecretType, SecretValue, SecretVersion,
    VersionSelector,
};
use arca::seal::{InitRequest, SealConfig};
use arca::storage::{Backend, MemoryBackend};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

pub(crate) const REGION: &str = "us-east-1";

/// An arca over `backend`, initialised (when new) and unsealed with `share` (returned).
pub(crate) async fn open_unsealed(
    backend: Arc<dyn Backend>,
    share: Option<String>,
) -> (Arc<Arca>, String) {
    let arca = Arc::new(
        Arca::open(backend, StorageKind::Memory, SealConfig::Shamir)
            .await
            .unwrap(),
    );
    let share = match share {
        Some(share) => share,
        None => {
            let init = arca
                .seal()
                .initialize(InitRequest {
                    secret_shares: 1,
                    secret_threshold: 1,
                    ..InitRequest::default()
                })
                .await
                .unwrap();
            init.keys[0].hex.to_string()
        }
    };
    let status = arca.seal().submit_share(&share).await.unwrap();
    assert!(!status.sealed);
    (arca, share)
}

/// A fresh in-memory arca, unsealed.
pub(crate) async fn memory_arca() -> Arc<Arca> {
    open_unsealed(Arc::new(MemoryBackend::new()), None).await.0
}

pub(crate) fn text(value: &str) -> SecretValue {
    SecretValue::String(Zeroizing::new(value.to_owned()))
}

pub(crate) fn params(json: &str) -> Map<String, Value> {
    serde_json::from_str(json).unwrap()
}

pub(crate) async fn create(
    arca: &Arca,
    name: &str,
    secret_type: SecretType,
    value: &str,
    generation: &str,
) -> SecretDescription {
    let scope = arca.secrets().scope(REGION).unwrap();
    scope
        .create(CreateSecret {
            name: name.into(),
            value: Some(text(value)),
            secret_type,
            generation: params(generation),
            ..CreateSecret::default()
        })
        .await
        .unwrap();
    scope.describe(name).await.unwrap()
}

pub(crate) async fn version(arca: &Arca, name: &str, stage: &str) -> SecretVersion {
    arca.secrets()
        .scope(REGION)
        .unwrap()
        .get_value(
            name,
            &VersionSelector {
                version_id: None,
                stage: Some(stage.into()),
            },
        )
        .await
        .unwrap()
}

pub(crate) async fn current(arca: &Arca, name: &str) -> SecretVersion {
    version(arca, name, AWSCURRENT).await
}

pub(crate) async fn describe(arca: &Arca, name: &str) -> SecretDescription {
    arca.secrets()
        .scope(REGION)
        .unwrap()
        .describe(name)
        .await
        .unwrap()
}

pub(crate) fn value_text(version: &SecretVersion) -> String {
    version.value.as_str().unwrap().to_owned()
}

pub(crate) fn json_of(version: &SecretVersion) -> Map<String, Value> {
    serde_json::from_slice(version.value.expose_secret()).unwrap()
}
