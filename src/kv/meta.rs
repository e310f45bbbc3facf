//! The stored form of a key's metadata and of a mount's KV configuration.
//!
//! Both are small JSON documents behind the barrier, versioned by a `v` field so later fields
//! can be added without a migration. Times are Unix nanoseconds: Vault reports creation and
//! deletion times to the nanosecond, and clients compare them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{DeleteVersionAfter, KeyMetadata, KvConfig, KvError, VersionInfo};

/// Metadata that names where its versions' wrapped keys are (`adjacent_from`). Builds that knew
/// only version 1 refuse it as corrupt instead of looking for the records in the wrong place.
const META_VERSION: u32 = 2;
/// Metadata written before wrapped keys sat beside their data: every version has its key
/// under `dkey/`.
const META_VERSION_SPLIT: u32 = 1;
const CONFIG_VERSION: u32 = 1;

pub(crate) fn to_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn from_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    destroyed: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    v: u32,
    current: u64,
    oldest: u64,
    created: u64,
    updated: u64,
    #[serde(default)]
    max_versions: u32,
    #[serde(default)]
    cas_required: bool,
    #[serde(default)]
    delete_version_after: u64,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
    versions: BTreeMap<u64, StoredVersion>,
    /// The first version whose wrapped key sits beside its data (absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    adjacent_from: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredConfig {
    v: u32,
    max_versions: u32,
    cas_required: bool,
    /// Seconds; negative means disabled, zero unset.
    delete_version_after: i64,
}

fn corrupt(what: &str, err: &dyn std::fmt::Display) -> KvError {
    tracing::error!(error = %err, "a stored KV {what} does not parse");
    KvError::Corrupt
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<KeyMetadata, KvError> {
    let stored: StoredMeta =
        serde_json::from_slice(bytes).map_err(|err| corrupt("metadata record", &err))?;
    let adjacent_from = match stored.v {
        META_VERSION_SPLIT if stored.adjacent_from.is_none() => None,
        META_VERSION => stored.adjacent_from,
        _ => return Err(corrupt("metadata record", &"unknown version")),
    };
    Ok(KeyMetadata {
        current_version: stored.current,
        oldest_version: stored.oldest,
        created_time: from_nanos(stored.created),
        updated_time: from_nanos(stored.updated),
        max_versions: stored.max_versions,
        cas_required: stored.cas_required,
        delete_version_after: Duration::from_secs(stored.delete_version_after),
        custom_metadata: stored.custom_metadata,
        versions: stored
            .versions
            .into_iter()
            .map(|(n, v)| {
                (
                    n,
                    VersionInfo {
                        version: n,
                        created_time: from_nanos(v.created),
                        deletion_time: v.deleted.map(from_nanos),
                        destroyed: v.destroyed,
                    },
                )
            })
            .collect(),
        adjacent_from,
    })
}

pub(crate) fn encode_meta(meta: &KeyMetadata) -> Vec<u8> {
    let stored = StoredMeta {
        // Metadata that never had a version written by this build keeps version 1, so a key
        // created with `metadata/` alone stays readable by the builds before.
        v: if meta.adjacent_from.is_some() {
            META_VERSION
        } else {
            META_VERSION_SPLIT
        },
        current: meta.current_version,
        oldest: meta.oldest_version,
        created: to_nanos(meta.created_time),
        updated: to_nanos(meta.updated_time),
        max_versions: meta.max_versions,
        cas_required: meta.cas_required,
        delete_version_after: meta.delete_version_after.as_secs(),
        custom_metadata: meta.custom_metadata.clone(),
        versions: meta
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    *n,
                    StoredVersion {
                        created: to_nanos(v.created_time),
                        deleted: v.deletion_time.map(to_nanos),
                        destroyed: v.destroyed,
                    },
                )
            })
            .collect(),
        adjacent_from: meta.adjacent_from,
    };
    // Plain integers, booleans and string maps always serialize.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(&stored).expect("KV metadata serializes")
}

pub(crate) fn decode_config(bytes: &[u8]) -> Result<KvConfig, KvError> {
    let stored: StoredConfig =
        serde_json::from_slice(bytes).map_err(|err| corrupt("configuration", &err))?;
    if stored.v != CONFIG_VERSION {
        return Err(corrupt("configuration", &"unknown version"));
    }
    let delete_version_after = match stored.delete_version_after {
        0 => DeleteVersionAfter::Unset,
        n if n < 0 => DeleteVersionAfter::Disabled,
        n => DeleteVersionAfter::After(Duration::from_secs(n.unsigned_abs())),
    };
    Ok(KvConfig {
        max_versions: stored.max_versions,
        cas_required: stored.cas_required,
        delete_version_after,
    })
}

pub(crate) fn encode_config(config: &KvConfig) -> Vec<u8> {
    let stored = StoredConfig {
        v: CONFIG_VERSION,
        max_versions: config.max_versions,
        cas_required: config.cas_required,
        delete_version_after: config.delete_version_after.as_signed_secs(),
    };
    #[allow(clippy::expect_used)]
    serde_json::to_vec(&stored).expect("KV configuration serializes")
}
