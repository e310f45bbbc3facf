//! The audit log: one JSON line per request and per response, redacted and hash-chained.
//!
//! Why each property:
//!
//! - **Redacted with a keyed hash, not dropped.** Every string (and number) in request and
//!   response bodies is replaced by `hmac-sha256:<hex>`, keyed by
//!   `Barrier::derive_subkey("arca/audit-hmac/v1")`. The log never holds a secret, yet an
//!   operator can still find where a known value went: `sys/audit-hash` computes the same
//!   HMAC for a given input. The subkey comes from the keyring's derivation seed, so it is
//!   stable across term and root-key rotation and the log stays searchable.
//! - **Hash-chained.** Each line ends with `"hash"`, the SHA-256 of the line as written
//!   without that field, and carries `"prev_hash"`, the previous line's hash (64 zeros for
//!   the first). Editing, reordering or removing a line breaks the chain at that line;
//!   [`verify`] (`arca audit verify FILE`) names the first broken one. The chain detects
//!   changes by someone who cannot also rewrite every later line; a keyed MAC per line would
//!   need the key offline, which the verifier deliberately does not.
//! - **Fail closed.** If a device cannot write, [`AuditLog::write`] fails, and the server
//!   refuses the request (500) before its handler runs, or withholds the response after:
//!   nothing is served unaudited (Vault's rule).
//!
//! Requests that arrive while the store is sealed are not audited: there is no key to redact
//! them with, and no data can be reached then (every data path answers 503).
//!
//! The format of a line is specified in [`chain`]; devices are in [`device`].

pub mod chain;
pub mod device;

use std::sync::{Arc, PoisonError, RwLock};

use arca_storage::{Barrier, BarrierError, SubKey};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::Value;
use sha2::Sha256;

pub use chain::{VerifyError, verify};
pub use device::{Device, DeviceKind};

/// HKDF `info` of the audit HMAC key.
pub const AUDIT_HMAC_INFO: &[u8] = b"arca/audit-hmac/v1";

/// The prefix of every redacted value.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// Errors of the audit layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store is sealed: no key to redact with.
    #[error("the store is sealed")]
    Sealed,
    /// A device could not write (or open) its log. The request must fail.
    #[error("audit device {device} failed: {source}")]
    Device {
        /// The device's name.
        device: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The key that redacts values, held only while a request is being audited. Wiped on drop
/// (it is a [`SubKey`]).
pub struct AuditKey(SubKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([REDACTED])")
    }
}

impl AuditKey {
    /// `hmac-sha256:<hex of HMAC-SHA256(key, value)>`.
    #[must_use]
    pub fn hmac(&self, value: &str) -> String {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(value.as_bytes());
        format!("{HMAC_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Replaces every string and number leaf of `value` by its HMAC (a number by the HMAC of
    /// its JSON text). Object keys, booleans and nulls are kept: keys are field names, and
    /// the others carry a bit at most.
    pub fn redact(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.hmac(s),
            Value::Number(n) => *value = Value::String(self.hmac(&n.to_string())),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.redact(v)),
            Value::Bool(_) | Value::Null => {}
        }
    }
}

/// The audit devices of a server, and the chain each keeps.
#[derive(Debug)]
pub struct AuditLog {
    barrier: Arc<Barrier>,
    devices: RwLock<Vec<Arc<Device>>>,
}

impl AuditLog {
    /// An audit log with no device (auditing off) over `barrier`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            devices: RwLock::new(Vec::new()),
        }
    }

    /// Adds a device. Every later request is written to it.
    pub fn enable(&self, device: Device) {
        self.devices
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(device));
    }

    /// The enabled devices.
    #[must_use]
    pub fn devices(&self) -> Vec<Arc<Device>> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether any device is enabled.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        !self
            .devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The redaction key, or [`AuditError::Sealed`].
    ///
    /// # Errors
    /// [`AuditError::Sealed`].
    pub fn key(&self) -> Result<AuditKey, AuditError> {
        match self.barrier.derive_subkey(AUDIT_HMAC_INFO) {
            Ok(key) => Ok(AuditKey(key)),
            Err(BarrierError::Sealed) => Err(AuditError::Sealed),
            Err(_) => Err(AuditError::Sealed),
        }
    }

    /// Appends `entry` (already redacted) to every device, chained.
    ///
    /// # Errors
    /// [`AuditError::Device`] when any device fails: the caller must not serve the request.
    pub fn write(&self, entry: &serde_json::Map<String, Value>) -> Result<(), AuditError> {
        for device in self.devices() {
            device.append(entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arca_storage::{MemoryBackend, RootKey};
    use serde_json::json;

    use super::*;

    async fn log() -> (Arc<Barrier>, AuditLog) {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        (barrier.clone(), AuditLog::new(barrier))
    }

    #[tokio::test]
    async fn redaction_hides_values_and_is_stable_across_rotation() {
        let (barrier, log) = log().await;
        let key = log.key().unwrap();
        let mut value = json!({"password": "hunter2", "pin": 1234, "ok": true,
                               "list": ["a", {"deep": "b"}], "none": null});
        key.redact(&mut value);
        let text = value.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("1234"),
            "{text}"
        );
        assert_eq!(value["password"], json!(key.hmac("hunter2")));
        assert_eq!(value["pin"], json!(key.hmac("1234")));
        assert_eq!(value["ok"], json!(true));
        assert!(
            value["list"][1]["deep"]
                .as_str()
                .unwrap()
                .starts_with(HMAC_PREFIX)
        );
        assert_eq!(key.hmac("x").len(), HMAC_PREFIX.len() + 64);
        assert_eq!(format!("{key:?}"), "AuditKey([REDACTED])");
        let before = key.hmac("hunter2");
        barrier
            .rotate_root_key(&RootKey::generate().unwrap())
            .await
            .unwrap();
        barrier.rotate().await.unwrap();
        assert_eq!(log.key().unwrap().hmac("hunter2"), before);
        barrier.seal().await;
        assert!(matches!(log.key(), Err(AuditError::Sealed)));
    }
}
