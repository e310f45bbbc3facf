//! Auto-unseal: the unseal key wrapped by a [`KeyWrapper`], and the local key file that is the
//! first implementation of it.
//!
//! # The key wrapper contract
//!
//! A [`KeyWrapper`] holds (or reaches) one key-encryption key that never leaves it, and
//! wraps and unwraps short secrets with associated data. The seal stores only what `wrap`
//! returned, next to the key id, and hands the same bytes and associated data back to
//! `unwrap`. The trait is deliberately narrow so that a local KMS key or AWS KMS (`Encrypt` /
//! `Decrypt` with an encryption context) can take the key file's place without the seal layer
//! changing.
//!
//! # The key file
//!
//! A key file holds exactly 32 random bytes, raw. For operators who write one by hand, the
//! file may instead hold those 32 bytes as standard base64 (44 characters) or hex (64
//! characters), with optional surrounding whitespace; the lengths cannot be confused with
//! 32 raw bytes. arca creates key files raw, with mode 0600, and refuses to read a key file
//! that group or others may read or write (as ssh does with private keys).
//!
//! Its key id is derived, not stored: `"kf-"` followed by the first 8 bytes, in hex, of
//! `SHA-256("arca/keyfile-id/v1" ‖ key)`. The id therefore always names the key actually in
//! the file (no id and key to get out of step) and reveals nothing usable about the key.
//!
//! Wrapping is XChaCha20-Poly1305 under `HKDF-SHA256(ikm = file key, info =
//! "arca/keyfile/wrap/v1")` with a random nonce; the wrapped form is `nonce (24) ‖ ciphertext
//! ‖ tag (16)`, 72 bytes for a 32-byte unseal key.
//!
//! # Rotating the key file
//!
//! Configure the new file as the current key and the old one as the previous key. Unsealing
//! tries the key whose id the seal record names (current first, then previous) and, when the
//! previous one opened it, re-wraps the unseal key under the current key at once; after that
//! the old file is no longer needed. [`Seal::rewrap`](super::Seal::rewrap) does the same on
//! demand.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use arca_storage::KEY_LEN;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::error::SealError;
use super::keys::{self, UnsealKey};

const WRAP_INFO: &[u8] = b"arca/keyfile/wrap/v1";
const ID_INFO: &[u8] = b"arca/keyfile-id/v1";

/// Something that wraps the unseal key under a key it keeps: a key file, or a KMS key
/// ([`KeyProviderWrapper`](crate::kms::KeyProviderWrapper)).
///
/// Implementations must be safe to share across tasks. The seal calls `wrap` at init and when
/// re-wrapping, and `unwrap` at each auto-unseal.
#[async_trait]
pub trait KeyWrapper: Send + Sync {
    /// A stable, non-secret name of the wrapping key (at most 255 bytes of UTF-8). The seal
    /// records it beside the wrapped key to pick the right wrapper at unseal time. Two
    /// different keys must not share an id.
    fn key_id(&self) -> String;

    /// Encrypts and authenticates `plaintext`, binding `aad`. The result is stored as is; it
    /// must be at most 4096 bytes.
    ///
    /// # Errors
    /// Whatever prevents wrapping (the key is unreachable, the OS generator failed).
    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Reverses [`KeyWrapper::wrap`]: returns the plaintext only if `wrapped` was produced by
    /// this key with the same `aad`.
    ///
    /// # Errors
    /// [`SealError::UnwrapFailed`] when it was not (wrong key, altered bytes or `aad`), or
    /// whatever prevents unwrapping.
    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
}

/// A [`KeyWrapper`] over a 32-byte key read from a key file (or given in memory, for tests and
/// embedders). The key is wiped on drop; `Debug` shows the key id only.
pub struct KeyFileWrapper {
    key: UnsealKey,
    key_id: String,
}

impl fmt::Debug for KeyFileWrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFileWrapper")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn key_id_of(key: &UnsealKey) -> String {
    let mut hash = Sha256::new();
    hash.update(ID_INFO);
    hash.update(key.expose_secret());
    let digest = hash.finalize();
    format!("kf-{}", hex::encode(&digest[..8]))
}

fn key_file_error(path: &Path, reason: impl Into<String>) -> SealError {
    SealError::KeyFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl KeyFileWrapper {
    /// A wrapper over a key held in memory.
    ///
    /// # Errors
    /// [`SealError::InvalidParameters`] unless `key` is exactly 32 bytes.
    pub fn from_key_bytes(key: &[u8]) -> Result<Self, SealError> {
        let key = UnsealKey::from_slice(key)
            .map_err(|_| SealError::InvalidParameters("a key file key is 32 bytes".into()))?;
        let key_id = key_id_of(&key);
        Ok(Self { key, key_id })
    }

    /// Reads the key file at `path` (see the module documentation for the accepted forms).
    ///
    /// # Errors
    /// [`SealError::KeyFile`] when the file is missing, unreadable, readable by group or others,
    /// or does not hold a 32-byte key.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = std::fs::metadata(path).map_err(|e| key_file_error(path, e.to_string()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(key_file_error(
                    path,
                    "group or others may access it; run chmod 600 on it",
                ));
            }
        }
        let content =
            Zeroizing::new(std::fs::read(path).map_err(|e| key_file_error(path, e.to_string()))?);
        let key = Self::parse(&content).ok_or_else(|| {
            key_file_error(path, "expected 32 raw bytes, or 32 bytes as base64 or hex")
        })?;
        let key_id = key_id_of(&key);
        Ok(Self { key, key_id })
    }

    fn parse(content: &[u8]) -> Option<UnsealKey> {
        if content.len() == KEY_LEN {
            return UnsealKey::from_slice(content).ok();
        }
        let text = std::str::from_utf8(content).ok()?.trim();
        let bytes = Zeroizing::new(match text.len() {
            64 => hex::decode(text).ok()?,
            43 | 44 => STANDARD_PAD_INDIFFERENT.decode(text).ok()?,
            _ => return None,
        });
        UnsealKey::from_slice(&bytes).ok()
    }

    /// Creates a new key file at `path` holding 32 random bytes, with mode 0600, and fsyncs
    /// it. Never overwrites: an existing file is an error.
    ///
    /// # Errors
    /// [`SealError::KeyFile`] when the file exists or cannot be written;
    /// [`SealError::Random`] when the OS generator fails.
    pub fn create(path: &Path) -> Result<Self, SealError> {
        let key = UnsealKey::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| key_file_error(path, format!("cannot create: {e}")))?;
        file.write_all(key.expose_secret())
            .and_then(|()| file.sync_all())
            .map_err(|e| key_file_error(path, format!("cannot write: {e}")))?;
        // Make the new directory entry durable too.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        let key_id = key_id_of(&key);
        tracing::info!(path = %path.display(), key_id, "created a new seal key file");
        Ok(Self { key, key_id })
    }

    /// [`KeyFileWrapper::load`] when the file exists, else [`KeyFileWrapper::create`].
    ///
    /// # Errors
    /// As those two.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        if path.exists() {
            Self::load(path)
        } else {
            Self::create(path)
        }
    }
}

#[async_trait]
impl KeyWrapper for KeyFileWrapper {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        Ok(keys::seal(
            self.key.expose_secret(),
            WRAP_INFO,
            aad,
            plaintext,
        )?)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        keys::open(self.key.expose_secret(), WRAP_INFO, aad, wrapped)
            .map_err(|_| SealError::UnwrapFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrap_round_trip_binds_aad_and_key() {
        let a = KeyFileWrapper::from_key_bytes(&[1; 32]).unwrap();
        let b = KeyFileWrapper::from_key_bytes(&[2; 32]).unwrap();
        assert_ne!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("kf-") && a.key_id().len() == 19);
        let wrapped = a.wrap(b"unseal key bytes", b"id").await.unwrap();
        assert_eq!(wrapped.len(), 16 + 40);
        assert_eq!(
            a.unwrap(&wrapped, b"id").await.unwrap().as_slice(),
            b"unseal key bytes"
        );
        assert!(matches!(
            a.unwrap(&wrapped, b"other").await,
            Err(SealError::UnwrapFailed)
        ));
        assert!(matches!(
            b.unwrap(&wrapped, b"id").await,
            Err(SealError::UnwrapFailed)
        ));
        assert!(!format!("{a:?}").contains("[1,"));
    }

    #[test]
    fn create_load_permissions_and_text_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let created = KeyFileWrapper::create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        assert!(KeyFileWrapper::create(&path).is_err(), "never overwrites");
        let loaded = KeyFileWrapper::load(&path).unwrap();
        assert_eq!(loaded.key_id(), created.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                KeyFileWrapper::load(&path),
                Err(SealError::KeyFile { .. })
            ));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        let b64 = dir.path().join("b64.key");
        let hexf = dir.path().join("hex.key");
        let bad = dir.path().join("bad.key");
        for (p, content) in [
            (
                &b64,
                format!(
                    "{}\n",
                    base64::engine::general_purpose::STANDARD.encode(&raw)
                ),
            ),
            (&hexf, hex::encode(&raw)),
            (&bad, "too short".to_owned()),
        ] {
            std::fs::write(p, content).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        assert_eq!(
            KeyFileWrapper::load(&b64).unwrap().key_id(),
            created.key_id()
        );
        assert_eq!(
            KeyFileWrapper::load(&hexf).unwrap().key_id(),
            created.key_id()
        );
        match KeyFileWrapper::load(&bad) {
            Err(SealError::KeyFile { reason, .. }) => assert!(!reason.contains("too short")),
            other => panic!("{other:?}"),
        }
        assert!(KeyFileWrapper::load(&dir.path().join("missing")).is_err());
        let again = KeyFileWrapper::load_or_create(&dir.path().join("new.key")).unwrap();
        assert_ne!(again.key_id(), created.key_id());
    }
}
