//! The seal layer's own key type and its one AEAD construction.
//!
//! Everything the seal layer encrypts (the root key under the unseal key, the recovery check
//! under the recovery key, the unseal key under a key file) uses the same construction:
//! XChaCha20-Poly1305 with a key derived as `HKDF-SHA256(salt = none, ikm = key, info)`, where
//! `info` names the purpose, a fresh 24-byte random nonce, and caller-chosen associated data.
//! The stored form is `nonce (24) ‖ ciphertext ‖ tag (16)`. Distinct `info` strings keep a key
//! used for one purpose from opening anything sealed for another.

use std::fmt;

use arca_storage::KEY_LEN;
use arca_storage::keys::{KeyLengthError, RandomError, fill_random};
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the XChaCha20 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes the construction adds to a plaintext.
pub(crate) const AEAD_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a sealed 32-byte key.
pub(crate) const SEALED_KEY_LEN: usize = KEY_LEN + AEAD_OVERHEAD;

/// A 256-bit key of the seal layer: the unseal key, the recovery key or a key file's key.
/// Wiped on drop, `Debug` prints `[REDACTED]`, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct UnsealKey([u8; KEY_LEN]);

impl UnsealKey {
    /// A new random key from the OS CSPRNG.
    pub(crate) fn generate() -> Result<Self, RandomError> {
        let mut key = Self([0; KEY_LEN]);
        fill_random(&mut key.0)?;
        Ok(key)
    }

    /// Copies a key from `bytes`.
    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyLengthError)?;
        Ok(Self(*bytes))
    }

    /// A key filled in place by `fill` (for KDF output), so no copy is left behind.
    pub(crate) fn from_fn<E>(
        fill: impl FnOnce(&mut [u8; KEY_LEN]) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut key = Self([0; KEY_LEN]);
        fill(&mut key.0)?;
        Ok(key)
    }

    /// The key's bytes.
    pub(crate) fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for UnsealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnsealKey([REDACTED])")
    }
}

impl PartialEq for UnsealKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for UnsealKey {}

/// The AEAD did not open: wrong key, edited bytes or edited associated data. Says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenError;

fn cipher(key: &[u8; KEY_LEN], info: &[u8]) -> XChaCha20Poly1305 {
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    // 32 bytes is within HKDF-SHA256's output limit of 255 * 32 bytes.
    #[allow(clippy::expect_used)]
    Hkdf::<Sha256>::new(None, key)
        .expand(info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let okm: &[u8; KEY_LEN] = &okm;
    XChaCha20Poly1305::new(okm.into())
}

/// Seals `plaintext` under `key` for the purpose `info`, binding `aad`.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, RandomError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(plaintext.len() + AEAD_OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    // XChaCha20-Poly1305 fails only for messages over 256 GiB; these are at most a few bytes.
    #[allow(clippy::expect_used)]
    let tag = cipher(key, info)
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            InOutBuf::from(&mut out[NONCE_LEN..]),
        )
        .expect("message within XChaCha20-Poly1305 limits");
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal`] produced with the same key, purpose and associated data.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if sealed.len() < AEAD_OVERHEAD {
        return Err(OpenError);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    cipher(key, info)
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            InOutBuf::from(buf.as_mut_slice()),
            &Tag::from(tag),
        )
        .map_err(|_| OpenError)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_change_fails() {
        let key = [7u8; KEY_LEN];
        let sealed = seal(&key, b"arca/test/v1", b"aad", b"secret").unwrap();
        assert_eq!(sealed.len(), 6 + AEAD_OVERHEAD);
        assert_eq!(
            open(&key, b"arca/test/v1", b"aad", &sealed)
                .unwrap()
                .as_slice(),
            b"secret"
        );
        assert_eq!(open(&key, b"arca/test/v1", b"aaD", &sealed), Err(OpenError));
        assert_eq!(open(&key, b"arca/test/v2", b"aad", &sealed), Err(OpenError));
        assert_eq!(
            open(&[8; KEY_LEN], b"arca/test/v1", b"aad", &sealed),
            Err(OpenError)
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open(&key, b"arca/test/v1", b"aad", &bad),
                Err(OpenError),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&key, b"arca/test/v1", b"aad", &sealed[..39]),
            Err(OpenError)
        );
    }

    #[test]
    fn unseal_key_is_redacted_and_compares_by_value() {
        let a = UnsealKey::from_slice(&[0xAB; KEY_LEN]).unwrap();
        assert_eq!(format!("{a:?}"), "UnsealKey([REDACTED])");
        assert_eq!(a, UnsealKey::from_slice(&[0xAB; KEY_LEN]).unwrap());
        assert_ne!(a, UnsealKey::generate().unwrap());
        assert!(UnsealKey::from_slice(&[0; 31]).is_err());
    }
}
