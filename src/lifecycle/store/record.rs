//! What the secret store writes behind the barrier, and where.
//!
//! ```text
//! sm/secret/<region>/<name>            the secret's metadata (JSON): ARN, settings, tags,
//!                                      rotation state, access policy, dates, and every
//!                                      version's id, labels, dates and KMS key
//! sm/value/<region>/<uid>/<version>    one version's value, envelope-encrypted (see below)
//! sm/due/<t:020>/<region>/<name>       rotation index: the secret's next rotation is due at t
//! sm/purge/<t:020>/<region>/<name>     deletion index: the recovery window ends at t
//! ```
//!
//! `<uid>` is a random id given to each secret at creation, so a secret created again under
//! the name of a purged one never meets its predecessor's value records. Value records are
//! always found through the metadata (never by listing), so version ids need no escaping.
//! The two indexes are ordered by their zero-padded time, so "what is due by now" is one
//! ordered page read, never a scan of every secret; each index entry is written and removed in
//! the same batch as the metadata that implies it.
//!
//! A value record is `1 (format) ‖ u32 BE length of the wrapped key ‖ wrapped key ‖
//! ciphertext`: the data key wrapped by the secret's KMS key, and the value sealed under that
//! data key (`crate::kms::envelope`). The sealed plaintext is one kind byte (`s` for a
//! `SecretString`, `b` for a `SecretBinary`) followed by the value's bytes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::lifecycle::{AccessPolicy, RotationState, SecretType, SecretValue, SecretsError};

/// The format of metadata records this build writes.
const SECRET_FORMAT: u8 = 1;
/// The format of value records this build writes.
const VALUE_FORMAT: u8 = 1;

/// The root of every record of the store.
pub(super) const ROOT: &str = "sm/";
/// The prefix of the rotation index.
pub(super) const DUE_PREFIX: &str = "sm/due/";
/// The prefix of the deletion index.
pub(super) const PURGE_PREFIX: &str = "sm/purge/";

pub(super) fn secret_prefix(region: &str) -> String {
    format!("sm/secret/{region}/")
}

pub(super) fn secret_path(region: &str, name: &str) -> String {
    format!("sm/secret/{region}/{name}")
}

pub(super) fn value_path(region: &str, uid: &str, version_id: &str) -> String {
    format!("sm/value/{region}/{uid}/{version_id}")
}

pub(super) fn due_path(at: u64, region: &str, name: &str) -> String {
    format!("{DUE_PREFIX}{at:020}/{region}/{name}")
}

pub(super) fn purge_path(at: u64, region: &str, name: &str) -> String {
    format!("{PURGE_PREFIX}{at:020}/{region}/{name}")
}

/// An entry of the rotation or deletion index: its time, region and secret name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub(super) at: u64,
    pub(super) region: String,
    pub(super) name: String,
}

/// Parses a key written by [`due_path`] or [`purge_path`] under `prefix`.
pub(super) fn parse_index_key(prefix: &str, key: &str) -> Option<IndexEntry> {
    let rest = key.strip_prefix(prefix)?;
    let (at, rest) = rest.split_once('/')?;
    let (region, name) = rest.split_once('/')?;
    if at.len() != 20 || name.is_empty() {
        return None;
    }
    Some(IndexEntry {
        at: at.parse().ok()?,
        region: region.to_owned(),
        name: name.to_owned(),
    })
}

/// One version of a secret, as its metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredVersion {
    pub(super) id: String,
    /// The order of creation within the secret (timestamps have one-second resolution).
    pub(super) seq: u64,
    pub(super) stages: Vec<String>,
    pub(super) created: u64,
    pub(super) last_accessed: Option<u64>,
    /// The ARN of the KMS key that wrapped this version's data key.
    pub(super) kms_key_arn: String,
}

/// A secret's metadata record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredSecret {
    pub(super) format: u8,
    pub(super) uid: String,
    pub(super) arn: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    /// The KMS key as the caller named it; `None`: the AWS managed `aws/secretsmanager` key.
    pub(super) kms_key_id: Option<String>,
    pub(super) secret_type: SecretType,
    pub(super) generation: Map<String, Value>,
    /// Tags in the order they were first set.
    pub(super) tags: Vec<(String, String)>,
    pub(super) rotation: RotationState,
    pub(super) access_policy: Option<AccessPolicy>,
    pub(super) created: u64,
    pub(super) last_changed: u64,
    pub(super) last_accessed: Option<u64>,
    /// When the recovery window ends (the secret is scheduled for deletion).
    pub(super) deleted: Option<u64>,
    /// Versions in creation order.
    pub(super) versions: Vec<StoredVersion>,
    /// The `seq` of the next version.
    pub(super) next_seq: u64,
}

impl StoredSecret {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        uid: String,
        arn: String,
        name: String,
        description: Option<String>,
        kms_key_id: Option<String>,
        secret_type: SecretType,
        generation: Map<String, Value>,
        now: u64,
    ) -> Self {
        Self {
            format: SECRET_FORMAT,
            uid,
            arn,
            name,
            description,
            kms_key_id,
            secret_type,
            generation,
            tags: Vec::new(),
            rotation: RotationState::default(),
            access_policy: None,
            created: now,
            last_changed: now,
            last_accessed: None,
            deleted: None,
            versions: Vec::new(),
            next_seq: 1,
        }
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, SecretsError> {
        serde_json::to_vec(self)
            .map_err(|err| SecretsError::Internal(format!("encoding a secret record: {err}")))
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, SecretsError> {
        let record: Self = serde_json::from_slice(bytes).map_err(|err| {
            SecretsError::Internal(format!("a secret record does not parse: {err}"))
        })?;
        if record.format != SECRET_FORMAT {
            return Err(SecretsError::Internal(format!(
                "a secret record has format {}, this build reads {SECRET_FORMAT}",
                record.format
            )));
        }
        Ok(record)
    }

    pub(super) fn version(&self, id: &str) -> Option<&StoredVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    pub(super) fn version_mut(&mut self, id: &str) -> Option<&mut StoredVersion> {
        self.versions.iter_mut().find(|v| v.id == id)
    }

    /// The version carrying `stage`, if any (a label is on one version at most).
    pub(super) fn version_with_stage(&self, stage: &str) -> Option<&StoredVersion> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
    }

    /// Whether the secret is scheduled for deletion (whatever the time).
    pub(super) fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// Whether its recovery window has ended at `now`: it is gone, only not yet purged.
    pub(super) fn is_expired(&self, now: u64) -> bool {
        self.deleted.is_some_and(|at| at <= now)
    }

    /// The key of this secret in the rotation index, when it is scheduled to rotate.
    pub(super) fn due_key(&self, region: &str) -> Option<String> {
        if self.deleted.is_some() || !self.rotation.enabled {
            return None;
        }
        self.rotation
            .next_rotation
            .map(|at| due_path(at, region, &self.name))
    }

    /// The key of this secret in the deletion index, when it is scheduled for deletion.
    pub(super) fn purge_key(&self, region: &str) -> Option<String> {
        self.deleted.map(|at| purge_path(at, region, &self.name))
    }
}

/// The plaintext that is sealed for a value: its kind byte and its bytes, in a buffer wiped on
/// drop.
pub(super) fn value_plaintext(value: &SecretValue) -> Zeroizing<Vec<u8>> {
    let bytes = value.expose_secret();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() + 1));
    out.push(match value {
        SecretValue::String(_) => b's',
        SecretValue::Binary(_) => b'b',
    });
    out.extend_from_slice(bytes);
    out
}

/// The value a plaintext made by [`value_plaintext`] holds.
pub(super) fn value_from_plaintext(plain: &[u8]) -> Result<SecretValue, SecretsError> {
    let damaged = || SecretsError::Internal("a decrypted secret value is malformed".into());
    let (&kind, bytes) = plain.split_first().ok_or_else(damaged)?;
    match kind {
        b's' => {
            let text = std::str::from_utf8(bytes).map_err(|_| damaged())?;
            Ok(SecretValue::String(Zeroizing::new(text.to_owned())))
        }
        b'b' => Ok(SecretValue::Binary(Zeroizing::new(bytes.to_vec()))),
        _ => Err(damaged()),
    }
}

/// Encodes a value record.
pub(super) fn encode_value(wrapped_key: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, SecretsError> {
    let len = u32::try_from(wrapped_key.len())
        .map_err(|_| SecretsError::Internal("a wrapped data key is too long".into()))?;
    let mut out = Vec::with_capacity(5 + wrapped_key.len() + ciphertext.len());
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(wrapped_key);
    out.extend_from_slice(ciphertext);
    Ok(out)
}

/// Splits a value record into the wrapped key and the ciphertext.
pub(super) fn decode_value(record: &[u8]) -> Result<(&[u8], &[u8]), SecretsError> {
    let damaged = || SecretsError::Internal("a secret value record is malformed".into());
    let (&format, rest) = record.split_first().ok_or_else(damaged)?;
    if format != VALUE_FORMAT || rest.len() < 4 {
        return Err(damaged());
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let len = usize::try_from(len).map_err(|_| damaged())?;
    if rest.len() < len {
        return Err(damaged());
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_round_trip_and_sort_by_time() {
        let a = due_path(99, "us-east-1", "prod/db");
        let b = due_path(1_000, "eu-west-1", "a");
        assert!(a < b, "zero padding keeps time order");
        assert_eq!(
            parse_index_key(DUE_PREFIX, &a),
            Some(IndexEntry {
                at: 99,
                region: "us-east-1".into(),
                name: "prod/db".into()
            })
        );
        assert_eq!(parse_index_key(DUE_PREFIX, "sm/due/12/x/y"), None);
        assert_eq!(parse_index_key(PURGE_PREFIX, &a), None);
    }

    #[test]
    fn values_and_records_round_trip() {
        for value in [
            SecretValue::String(Zeroizing::new("hunter2 ✓".into())),
            SecretValue::Binary(Zeroizing::new(vec![0, 1, 255])),
        ] {
            let plain = value_plaintext(&value);
            assert_eq!(value_from_plaintext(&plain).ok(), Some(value));
        }
        assert!(value_from_plaintext(b"").is_err());
        assert!(value_from_plaintext(b"x123").is_err());
        assert!(value_from_plaintext(&[b's', 0xff]).is_err());

        let record = encode_value(b"wrapped", b"cipher").unwrap_or_default();
        assert_eq!(
            decode_value(&record).ok(),
            Some((&b"wrapped"[..], &b"cipher"[..]))
        );
        assert!(decode_value(&record[..6]).is_err());
        assert!(decode_value(&[2, 0, 0, 0, 0]).is_err());
    }
}
