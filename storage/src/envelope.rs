//! The record format: a hand-encoded, versioned AEAD envelope.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       4     term, big-endian u32 (0 = the keyring record, sealed under the root key)
//! 5       24    XChaCha20 nonce, random per record
//! 29      n     ciphertext (same length as the plaintext)
//! 29+n    16    Poly1305 tag
//! ```
//!
//! The associated data is the 29-byte header followed by the record's logical path in UTF-8, so
//! the tag covers the version, the term, the nonce and where the record lives. A record moved to
//! another path, a header edited, or any byte flipped fails to open. `storage/FORMAT.md` is the
//! full specification, including the key derivation.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::backend::MAX_KEY_LEN;
use crate::keys::{KEY_LEN, Plaintext, RandomError, fill_nonce};

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of the header: version, term, nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// HKDF `info` for record keys derived from a term key.
pub const RECORD_KEY_INFO: &[u8] = b"arca/barrier/v1";
/// HKDF `info` for the keyring key derived from the root key.
pub const KEYRING_KEY_INFO: &[u8] = b"arca/keyring/v1";

/// Why bytes are not an envelope. The barrier reports both as one opaque integrity error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than a header and a tag.
    #[error("record too short to be an envelope")]
    TooShort,
    /// A format version this build does not know.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
}

/// A decoded envelope borrowing the stored bytes. Decoding checks only the shape; nothing is
/// trusted until [`RecordCipher::open`] has verified the tag.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    header: &'a [u8; HEADER_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    /// Splits stored bytes into header, ciphertext and tag.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are too short or of an unknown version.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < OVERHEAD {
            return Err(DecodeError::TooShort);
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let header: &[u8; HEADER_LEN] = header.try_into().map_err(|_| DecodeError::TooShort)?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| DecodeError::TooShort)?;
        if header[0] != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(header[0]));
        }
        Ok(Self {
            header,
            ciphertext,
            tag,
        })
    }

    /// The format version.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.header[0]
    }

    /// The keyring term the record claims to be sealed under.
    #[must_use]
    pub fn term(&self) -> u32 {
        u32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ])
    }

    /// The length of the plaintext inside.
    #[must_use]
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len()
    }
}

/// Writes the associated data (header ‖ path) into `buf` and returns the used part.
///
/// Paths are at most [`MAX_KEY_LEN`] bytes, so the AAD always fits on the stack.
fn associated_data<'b>(
    buf: &'b mut [u8; HEADER_LEN + MAX_KEY_LEN],
    header: &[u8; HEADER_LEN],
    path: &str,
) -> Option<&'b [u8]> {
    let total = HEADER_LEN + path.len();
    if path.len() > MAX_KEY_LEN {
        return None;
    }
    buf[..HEADER_LEN].copy_from_slice(header);
    buf[HEADER_LEN..total].copy_from_slice(path.as_bytes());
    Some(&buf[..total])
}

/// Why a record could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// No random nonce could be drawn.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The path is longer than a backend key may be.
    #[error("path longer than {MAX_KEY_LEN} bytes")]
    PathTooLong,
}

/// The record or its path does not authenticate. Deliberately says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record failed its integrity check")]
pub struct OpenError;

/// An XChaCha20-Poly1305 instance keyed for one purpose, derived with HKDF-SHA256.
///
/// The cipher wipes its key on drop (the `zeroize` feature of `chacha20poly1305`).
pub struct RecordCipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCipher([REDACTED])")
    }
}

impl RecordCipher {
    /// Derives the cipher key as `HKDF-SHA256(salt = none, ikm, info)`.
    #[must_use]
    pub fn derive(ikm: &[u8; KEY_LEN], info: &[u8]) -> Self {
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        // Expanding 32 bytes from SHA-256 cannot exceed HKDF's 255 * 32 byte limit.
        #[allow(clippy::expect_used)]
        Hkdf::<Sha256>::new(None, ikm)
            .expand(info, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let key: &[u8; KEY_LEN] = &okm;
        let aead = XChaCha20Poly1305::new(key.into());
        Self { aead }
    }

    /// Seals `plaintext` for `path` under `term` with a fresh random nonce.
    ///
    /// # Errors
    /// [`SealError`] when the OS generator fails or the path is too long.
    pub fn seal(&self, term: u32, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_nonce(&mut nonce)?;
        self.seal_with_nonce(term, path, plaintext, &nonce)
    }

    /// Seals with a caller-chosen nonce. Only for known-answer tests: a nonce must never be
    /// used twice with one key, which [`RecordCipher::seal`] guarantees by drawing 192 random
    /// bits.
    ///
    /// # Errors
    /// [`SealError::PathTooLong`].
    #[doc(hidden)]
    pub fn seal_with_nonce(
        &self,
        term: u32,
        path: &str,
        plaintext: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, SealError> {
        let mut header = [0u8; HEADER_LEN];
        header[0] = FORMAT_VERSION;
        header[1..5].copy_from_slice(&term.to_be_bytes());
        header[5..].copy_from_slice(nonce);
        let mut aad_buf = [0u8; HEADER_LEN + MAX_KEY_LEN];
        let aad = associated_data(&mut aad_buf, &header, path).ok_or(SealError::PathTooLong)?;

        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(plaintext);
        let body = &mut out[HEADER_LEN..];
        // XChaCha20-Poly1305 fails only for messages over 256 GiB; values are at most 1 MiB.
        #[allow(clippy::expect_used)]
        let tag = self
            .aead
            .encrypt_inout_detached(&XNonce::from(*nonce), aad, InOutBuf::from(body))
            .expect("message within XChaCha20-Poly1305 limits");
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Authenticates and decrypts an envelope stored at `path`.
    ///
    /// # Errors
    /// [`OpenError`] when the tag does not verify for this key, header and path.
    pub fn open(&self, envelope: &Envelope<'_>, path: &str) -> Result<Plaintext, OpenError> {
        let mut aad_buf = [0u8; HEADER_LEN + MAX_KEY_LEN];
        let aad = associated_data(&mut aad_buf, envelope.header, path).ok_or(OpenError)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&envelope.header[5..]);
        let nonce = XNonce::from(nonce);
        let tag = Tag::from(*envelope.tag);
        let mut buf = Zeroizing::new(envelope.ciphertext.to_vec());
        self.aead
            .decrypt_inout_detached(&nonce, aad, InOutBuf::from(buf.as_mut_slice()), &tag)
            .map_err(|_| OpenError)?;
        Ok(Plaintext::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> RecordCipher {
        RecordCipher::derive(&[7; KEY_LEN], RECORD_KEY_INFO)
    }

    #[test]
    fn round_trip_and_layout() {
        let c = cipher();
        let sealed = c.seal(3, "kv/a", b"value").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 5);
        assert_eq!(sealed[0], FORMAT_VERSION);
        assert_eq!(&sealed[1..5], &3u32.to_be_bytes());
        let env = Envelope::decode(&sealed).unwrap();
        assert_eq!(env.term(), 3);
        assert_eq!(c.open(&env, "kv/a").unwrap().expose_secret(), b"value");
    }

    #[test]
    fn every_flipped_bit_and_other_path_is_rejected() {
        let c = cipher();
        let sealed = c.seal(1, "p", b"secret bytes").unwrap();
        let env = Envelope::decode(&sealed).unwrap();
        assert_eq!(c.open(&env, "q"), Err(OpenError));
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                if let Ok(env) = Envelope::decode(&bad) {
                    assert_eq!(c.open(&env, "p"), Err(OpenError), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn short_and_unknown_versions_do_not_decode() {
        assert_eq!(
            Envelope::decode(&[1; OVERHEAD - 1]).unwrap_err(),
            DecodeError::TooShort
        );
        let mut bytes = vec![0; OVERHEAD];
        bytes[0] = 2;
        assert_eq!(
            Envelope::decode(&bytes).unwrap_err(),
            DecodeError::UnknownVersion(2)
        );
    }
}
