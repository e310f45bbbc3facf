//! The seal record: the seal configuration (in clear, authenticated) and the sealed root key.
//!
//! The record lives in the backend at [`SEAL_PATH`] (`_barrier/seal`), written directly, not
//! through the barrier: the barrier is sealed whenever this record is needed, and the
//! `_barrier/` prefix keeps it out of every barrier listing and refuses it to barrier callers.
//!
//! # Why the configuration is in clear but authenticated
//!
//! Before anything is unsealed, the server must tell clients the seal kind, N and T
//! (`sys/seal-status`), and derive the passphrase key with the stored Argon2id parameters and
//! salt, so the configuration cannot be encrypted under a key it is needed to obtain. Instead the
//! configuration bytes are part of the associated data of the sealed root key: editing N, T, the
//! kind, the KDF parameters, the salt or the key id makes the root key fail to open, exactly as
//! a wrong key would. (OpenBao keeps its seal configuration in clear *and* unauthenticated.)
//!
//! # Byte layout (version 1)
//!
//! All integers are big-endian. The record is:
//!
//! ```text
//! offset   size  field
//! 0        4     magic "ARSL" (0x41 0x52 0x53 0x4C)
//! 4        1     record version: 1
//! 5        2     C = length of the configuration, u16
//! 7        C     configuration (below)
//! 7+C      72    current sealed root key: nonce (24) ‖ ciphertext (32) ‖ tag (16)
//! 79+C     1     previous-root flag: 0 = absent, 1 = present; any other value is invalid
//!          72    (flag 1 only) previous sealed root key, same layout
//!                (kinds 3 and 4 only, from here:)
//!          2     W = length of the wrapped unseal key, u16, 1..=4096
//!          W     wrapped unseal key, as the key wrapper returned it (key file: 72 bytes,
//!                nonce ‖ ciphertext ‖ tag; KMS: the KMS ciphertext blob)
//!          40    recovery check: nonce (24) ‖ tag (16) (empty plaintext)
//! ```
//!
//! and nothing after: trailing bytes make the record invalid. The configuration is:
//!
//! ```text
//! offset   size  field
//! 0        1     kind: 1 = Shamir, 2 = passphrase, 3 = key file (auto-unseal),
//!                4 = KMS key provider (auto-unseal through a remote KMS)
//! 1        1     N: unseal shares (Shamir), 1 (passphrase), recovery shares (kinds 3, 4)
//! 2        1     T: threshold, same meaning; 1 ≤ T ≤ N, T = 1 only when N = 1
//!          kind 1: nothing more                                        (C = 3)
//!          kind 2: 4  Argon2id memory cost in KiB, u32
//!                  4  Argon2id iterations, u32
//!                  4  Argon2id lanes, u32
//!                  16 salt                                             (C = 31)
//!          kind 3: 1  L = key id length, 1..=255
//!                  L  key id, UTF-8, of the key that wrapped the unseal key (C = 4 + L)
//!          kind 4: 1  L = key id length, 1..=255
//!                  L  the ARN of the KMS key that wrapped the unseal key, UTF-8, as
//!                     `DescribeKey` returned it (never an alias: aliases move) (C = 4 + L)
//! ```
//!
//! # Cryptography
//!
//! - Sealed root key (current and previous slots): XChaCha20-Poly1305 under
//!   `HKDF-SHA256(ikm = unseal key, info = "arca/seal/root/v1")`, random nonce, plaintext the
//!   32-byte root key, associated data `"arca/seal/root/v1" ‖ slot ‖ record[0 .. 7+C]` where
//!   slot is `0x00` (current) or `0x01` (previous). So the AAD covers the magic, the version,
//!   the configuration length and the whole configuration, and a sealed key cannot be swapped
//!   between slots.
//! - Unseal key: Shamir: random, split into the N shares (never stored). Passphrase:
//!   `Argon2id(passphrase, salt, m, t, p)`, 32 bytes, Argon2 version 0x13. Key file: random,
//!   wrapped by the key wrapper with associated data = the key id in UTF-8 (see
//!   `keyfile.rs`). KMS: random, the `Plaintext` of a KMS `Encrypt` under the stored ARN
//!   with the encryption context `{"arca-seal-aad": hex(key id)}` (see `kms/wrapper.rs`).
//! - Recovery check (kinds 3 and 4): XChaCha20-Poly1305 of the empty plaintext under
//!   `HKDF-SHA256(ikm = recovery key, info = "arca/seal/recovery/v1")`, associated data
//!   `"arca/seal/recovery/v1" ‖ N ‖ T`. It proves a combined recovery key right without
//!   storing anything that could open the root key. It binds only N and T (not the key id), so
//!   re-wrapping under a new key file does not need the recovery key.
//!
//! # The previous-root slot
//!
//! Root-key rotation writes two records (this one and the barrier's keyring), and a crash must
//! not strand the store between them. Rotation first writes this record with the new root key
//! in the current slot and the old one in the previous slot, then re-seals the keyring under
//! the new root key, then rewrites this record without the previous slot. Unsealing tries the
//! current slot and falls back to the previous one when the keyring does not open, then removes
//! whichever slot is stale.
//!
//! # The init marker
//!
//! Init writes several records (this one, the keyring, the root token), and its shares are
//! returned only at the end. While it runs, a second raw record `_barrier/seal-init-pending`
//! holds `SHA-256` of this record; it is written in the same atomic batch as this record and
//! deleted as init's last write. A store whose marker is present and matches this record
//! counts as uninitialised (nobody ever saw its shares), and the next init deletes what the
//! unfinished one wrote. A marker that does not match this record is ignored, so a stray or
//! damaged marker can never make a real store look uninitialised.

use arca_storage::keys::RandomError;
use arca_storage::{KEY_LEN, RootKey};

use super::SealKind;
use super::keys::{self, AEAD_OVERHEAD, OpenError, SEALED_KEY_LEN, UnsealKey};
use super::passphrase::{KdfParams, SALT_LEN};

/// Where the seal record is stored in the backend.
pub(crate) const SEAL_PATH: &str = "_barrier/seal";

const MAGIC: &[u8; 4] = b"ARSL";
const RECORD_VERSION: u8 = 1;
const HEADER_FIXED: usize = 4 + 1 + 2;
const ROOT_INFO: &[u8] = b"arca/seal/root/v1";
const RECOVERY_INFO: &[u8] = b"arca/seal/recovery/v1";
const MAX_WRAPPED_LEN: usize = 4096;

const KIND_SHAMIR: u8 = 1;
const KIND_PASSPHRASE: u8 = 2;
const KIND_KEY_FILE: u8 = 3;
const KIND_KMS: u8 = 4;

/// The stored record does not parse. Deliberately carries no detail beyond a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// The kind-specific part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredKind {
    /// Shamir shares of the unseal key.
    Shamir,
    /// Argon2id of a passphrase.
    Passphrase {
        /// The KDF cost parameters.
        params: KdfParams,
        /// The random salt.
        salt: [u8; SALT_LEN],
    },
    /// The unseal key wrapped by a key wrapper.
    KeyFile {
        /// The id of the key that wrapped the unseal key.
        key_id: String,
    },
    /// The unseal key encrypted by a KMS key.
    Kms {
        /// The ARN of the KMS key that encrypted the unseal key.
        key_id: String,
    },
}

impl StoredKind {
    /// The wrapping key's id, for the auto-unseal kinds (key file, KMS).
    pub(crate) fn wrapped_key_id(&self) -> Option<&str> {
        match self {
            Self::KeyFile { key_id } | Self::Kms { key_id } => Some(key_id),
            Self::Shamir | Self::Passphrase { .. } => None,
        }
    }

    /// Whether the unseal key is wrapped (auto-unseal), so the record carries the wrapped key
    /// and a recovery check.
    pub(crate) fn is_wrapped(&self) -> bool {
        self.wrapped_key_id().is_some()
    }
}

/// The seal configuration as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredConfig {
    pub(crate) kind: StoredKind,
    /// N: unseal shares, 1 for a passphrase, recovery shares for a key file.
    pub(crate) shares: u8,
    /// T, with the same meaning as N.
    pub(crate) threshold: u8,
}

impl StoredConfig {
    /// The public seal kind.
    pub(crate) fn seal_kind(&self) -> SealKind {
        match self.kind {
            StoredKind::Shamir => SealKind::Shamir,
            StoredKind::Passphrase { .. } => SealKind::Passphrase,
            StoredKind::KeyFile { .. } => SealKind::KeyFile,
            StoredKind::Kms { .. } => SealKind::Kms,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match &self.kind {
            StoredKind::Shamir => {
                out.extend_from_slice(&[KIND_SHAMIR, self.shares, self.threshold]);
            }
            StoredKind::Passphrase { params, salt } => {
                out.extend_from_slice(&[KIND_PASSPHRASE, self.shares, self.threshold]);
                out.extend_from_slice(&params.m_cost_kib().to_be_bytes());
                out.extend_from_slice(&params.t_cost().to_be_bytes());
                out.extend_from_slice(&params.p_cost().to_be_bytes());
                out.extend_from_slice(salt);
            }
            StoredKind::KeyFile { key_id } | StoredKind::Kms { key_id } => {
                let kind = if matches!(self.kind, StoredKind::Kms { .. }) {
                    KIND_KMS
                } else {
                    KIND_KEY_FILE
                };
                out.extend_from_slice(&[kind, self.shares, self.threshold]);
                // Key ids are checked to be 1..=255 bytes before a config is built.
                let len = u8::try_from(key_id.len()).unwrap_or(u8::MAX);
                out.push(len);
                out.extend_from_slice(&key_id.as_bytes()[..usize::from(len)]);
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader(bytes);
        let kind = r.u8()?;
        let shares = r.u8()?;
        let threshold = r.u8()?;
        if threshold == 0 || threshold > shares || (threshold == 1 && shares != 1) {
            return Err(Corrupt);
        }
        let kind = match kind {
            KIND_SHAMIR => StoredKind::Shamir,
            KIND_PASSPHRASE => {
                if shares != 1 {
                    return Err(Corrupt);
                }
                let m = r.u32()?;
                let t = r.u32()?;
                let p = r.u32()?;
                let salt = r.array::<SALT_LEN>()?;
                StoredKind::Passphrase {
                    params: KdfParams::from_stored(m, t, p),
                    salt,
                }
            }
            KIND_KEY_FILE | KIND_KMS => {
                let len = r.u8()?;
                if len == 0 {
                    return Err(Corrupt);
                }
                let id = r.take(usize::from(len))?;
                let key_id = String::from_utf8(id.to_vec()).map_err(|_| Corrupt)?;
                if kind == KIND_KMS {
                    StoredKind::Kms { key_id }
                } else {
                    StoredKind::KeyFile { key_id }
                }
            }
            _ => return Err(Corrupt),
        };
        r.end()?;
        Ok(Self {
            kind,
            shares,
            threshold,
        })
    }
}

/// Which sealed root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The root key the keyring is sealed under (normally).
    Current = 0,
    /// The root key before an unfinished rotation.
    Previous = 1,
}

/// A decoded seal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealRecord {
    pub(crate) config: StoredConfig,
    current_root: Vec<u8>,
    previous_root: Option<Vec<u8>>,
    /// Key file only: the wrapped unseal key.
    pub(crate) wrapped_key: Option<Vec<u8>>,
    /// Key file only: the recovery check.
    pub(crate) recovery_check: Option<Vec<u8>>,
}

/// Why a record could not be re-sealed.
#[derive(Debug)]
pub(crate) enum ResealError {
    /// The old key does not open a sealed root key.
    Open,
    /// The OS random generator failed.
    Random(RandomError),
}

impl SealRecord {
    /// A record holding `root` sealed under `unseal` with `config`.
    pub(crate) fn new(
        config: StoredConfig,
        unseal: &UnsealKey,
        root: &RootKey,
        wrapped_key: Option<Vec<u8>>,
        recovery_check: Option<Vec<u8>>,
    ) -> Result<Self, RandomError> {
        let mut record = Self {
            config,
            current_root: Vec::new(),
            previous_root: None,
            wrapped_key,
            recovery_check,
        };
        record.current_root = record.seal_root(unseal, root, Slot::Current)?;
        Ok(record)
    }

    /// Magic, version, configuration length and configuration: the authenticated prefix.
    fn header(&self) -> Vec<u8> {
        let config = self.config.encode();
        let mut out = Vec::with_capacity(HEADER_FIXED + config.len());
        out.extend_from_slice(MAGIC);
        out.push(RECORD_VERSION);
        // A configuration is at most 4 + 255 bytes.
        out.extend_from_slice(
            &u16::try_from(config.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&config);
        out
    }

    fn root_aad(&self, slot: Slot) -> Vec<u8> {
        let header = self.header();
        let mut aad = Vec::with_capacity(ROOT_INFO.len() + 1 + header.len());
        aad.extend_from_slice(ROOT_INFO);
        aad.push(slot as u8);
        aad.extend_from_slice(&header);
        aad
    }

    fn seal_root(
        &self,
        unseal: &UnsealKey,
        root: &RootKey,
        slot: Slot,
    ) -> Result<Vec<u8>, RandomError> {
        keys::seal(
            unseal.expose_secret(),
            ROOT_INFO,
            &self.root_aad(slot),
            root.expose_secret(),
        )
    }

    /// Whether a previous root key is stored.
    pub(crate) fn has_previous(&self) -> bool {
        self.previous_root.is_some()
    }

    /// Opens the root key in `slot` with `unseal`. `Ok(None)` when the slot is empty.
    ///
    /// # Errors
    /// [`OpenError`] when the key, the configuration or the sealed bytes are not the ones it
    /// was sealed with.
    pub(crate) fn open_root(
        &self,
        unseal: &UnsealKey,
        slot: Slot,
    ) -> Result<Option<RootKey>, OpenError> {
        let sealed = match slot {
            Slot::Current => &self.current_root,
            Slot::Previous => match &self.previous_root {
                Some(sealed) => sealed,
                None => return Ok(None),
            },
        };
        let plain = keys::open(
            unseal.expose_secret(),
            ROOT_INFO,
            &self.root_aad(slot),
            sealed,
        )?;
        RootKey::from_slice(&plain).map(Some).map_err(|_| OpenError)
    }

    /// A copy with `config`, every root key re-sealed from `old` to `new`, and the given
    /// key-file fields.
    pub(crate) fn resealed(
        &self,
        old: &UnsealKey,
        new: &UnsealKey,
        config: StoredConfig,
        wrapped_key: Option<Vec<u8>>,
        recovery_check: Option<Vec<u8>>,
    ) -> Result<Self, ResealError> {
        let current = self
            .open_root(old, Slot::Current)
            .map_err(|_| ResealError::Open)?
            .ok_or(ResealError::Open)?;
        let previous = self
            .open_root(old, Slot::Previous)
            .map_err(|_| ResealError::Open)?;
        let mut next = Self::new(config, new, &current, wrapped_key, recovery_check)
            .map_err(ResealError::Random)?;
        if let Some(previous) = previous {
            next.previous_root = Some(
                next.seal_root(new, &previous, Slot::Previous)
                    .map_err(ResealError::Random)?,
            );
        }
        Ok(next)
    }

    /// A copy with `current` in the current slot and `previous` (if any) in the previous slot,
    /// both sealed under `unseal` (root-key rotation and its clean-up).
    pub(crate) fn with_roots(
        &self,
        unseal: &UnsealKey,
        current: &RootKey,
        previous: Option<&RootKey>,
    ) -> Result<Self, RandomError> {
        let mut next = Self::new(
            self.config.clone(),
            unseal,
            current,
            self.wrapped_key.clone(),
            self.recovery_check.clone(),
        )?;
        if let Some(previous) = previous {
            next.previous_root = Some(next.seal_root(unseal, previous, Slot::Previous)?);
        }
        Ok(next)
    }

    /// The stored bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.current_root);
        match &self.previous_root {
            Some(previous) => {
                out.push(1);
                out.extend_from_slice(previous);
            }
            None => out.push(0),
        }
        if self.config.kind.is_wrapped() {
            let wrapped = self.wrapped_key.as_deref().unwrap_or_default();
            out.extend_from_slice(
                &u16::try_from(wrapped.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(wrapped);
            out.extend_from_slice(self.recovery_check.as_deref().unwrap_or_default());
        }
        out
    }

    /// Parses stored bytes. Checks the shape only; nothing is trusted until a root key opens.
    ///
    /// # Errors
    /// [`Corrupt`] for anything but a well-formed version-1 record.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC || r.u8()? != RECORD_VERSION {
            return Err(Corrupt);
        }
        let config_len = r.u16()?;
        let config = StoredConfig::decode(r.take(usize::from(config_len))?)?;
        let current_root = r.take(SEALED_KEY_LEN)?.to_vec();
        let previous_root = match r.u8()? {
            0 => None,
            1 => Some(r.take(SEALED_KEY_LEN)?.to_vec()),
            _ => return Err(Corrupt),
        };
        let (wrapped_key, recovery_check) = if config.kind.is_wrapped() {
            let len = usize::from(r.u16()?);
            if len == 0 || len > MAX_WRAPPED_LEN {
                return Err(Corrupt);
            }
            let wrapped = r.take(len)?.to_vec();
            let check = r.take(AEAD_OVERHEAD)?.to_vec();
            (Some(wrapped), Some(check))
        } else {
            (None, None)
        };
        r.end()?;
        Ok(Self {
            config,
            current_root,
            previous_root,
            wrapped_key,
            recovery_check,
        })
    }
}

fn recovery_aad(shares: u8, threshold: u8) -> Vec<u8> {
    let mut aad = RECOVERY_INFO.to_vec();
    aad.extend_from_slice(&[shares, threshold]);
    aad
}

/// The recovery check for `recovery` with recovery parameters N/T.
pub(crate) fn recovery_check(
    recovery: &UnsealKey,
    shares: u8,
    threshold: u8,
) -> Result<Vec<u8>, RandomError> {
    keys::seal(
        recovery.expose_secret(),
        RECOVERY_INFO,
        &recovery_aad(shares, threshold),
        &[],
    )
}

/// Whether `recovery` is the key the stored check was made with.
pub(crate) fn verify_recovery(recovery: &UnsealKey, config: &StoredConfig, check: &[u8]) -> bool {
    keys::open(
        recovery.expose_secret(),
        RECOVERY_INFO,
        &recovery_aad(config.shares, config.threshold),
        check,
    )
    .is_ok()
}

/// The largest key id a configuration can hold.
pub(crate) const MAX_KEY_ID_LEN: usize = 255;

/// A byte reader that fails with [`Corrupt`] instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        self.take(N)?.try_into().map_err(|_| Corrupt)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn end(&self) -> Result<(), Corrupt> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Corrupt)
        }
    }
}

// The sealed root key is a 32-byte key plus the AEAD overhead.
const _: () = assert!(SEALED_KEY_LEN == KEY_LEN + AEAD_OVERHEAD);

#[cfg(test)]
mod tests {
    use super::*;

    fn shamir(n: u8, t: u8) -> StoredConfig {
        StoredConfig {
            kind: StoredKind::Shamir,
            shares: n,
            threshold: t,
        }
    }

    #[test]
    fn shamir_record_layout_is_as_documented() {
        let unseal = UnsealKey::generate().unwrap();
        let root = RootKey::generate().unwrap();
        let record = SealRecord::new(shamir(5, 3), &unseal, &root, None, None).unwrap();
        let bytes = record.encode();
        assert_eq!(&bytes[..4], b"ARSL");
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[5..7], &[0, 3]);
        assert_eq!(&bytes[7..10], &[1, 5, 3]);
        assert_eq!(bytes.len(), 10 + 72 + 1);
        assert_eq!(bytes[10 + 72], 0);
        let decoded = SealRecord::decode(&bytes).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(
            decoded.open_root(&unseal, Slot::Current).unwrap(),
            Some(root)
        );
        assert_eq!(decoded.open_root(&unseal, Slot::Previous).unwrap(), None);
    }

    #[test]
    fn passphrase_and_key_file_layouts_round_trip() {
        let unseal = UnsealKey::generate().unwrap();
        let root = RootKey::generate().unwrap();
        let pass = StoredConfig {
            kind: StoredKind::Passphrase {
                params: KdfParams::from_stored(65536, 3, 4),
                salt: [9; SALT_LEN],
            },
            shares: 1,
            threshold: 1,
        };
        let record = SealRecord::new(pass, &unseal, &root, None, None).unwrap();
        let bytes = record.encode();
        assert_eq!(&bytes[5..7], &[0, 31]);
        assert_eq!(&bytes[10..14], &65536u32.to_be_bytes());
        assert_eq!(&bytes[22..38], &[9; SALT_LEN]);
        assert_eq!(SealRecord::decode(&bytes).unwrap(), record);

        let recovery = UnsealKey::generate().unwrap();
        let kf = StoredConfig {
            kind: StoredKind::KeyFile {
                key_id: "kf-0011223344556677".into(),
            },
            shares: 5,
            threshold: 3,
        };
        let check = recovery_check(&recovery, 5, 3).unwrap();
        let record = SealRecord::new(kf, &unseal, &root, Some(vec![7; 72]), Some(check)).unwrap();
        let bytes = record.encode();
        assert_eq!(bytes[10], 19);
        let decoded = SealRecord::decode(&bytes).unwrap();
        assert_eq!(decoded, record);
        assert!(verify_recovery(
            &recovery,
            &decoded.config,
            decoded.recovery_check.as_deref().unwrap()
        ));
        assert!(!verify_recovery(
            &unseal,
            &decoded.config,
            decoded.recovery_check.as_deref().unwrap()
        ));

        let arn = "arn:aws:kms:us-east-1:123456789012:key/0b1c";
        let kms = StoredConfig {
            kind: StoredKind::Kms { key_id: arn.into() },
            shares: 5,
            threshold: 3,
        };
        let check = recovery_check(&recovery, 5, 3).unwrap();
        let record = SealRecord::new(kms, &unseal, &root, Some(vec![8; 150]), Some(check)).unwrap();
        let bytes = record.encode();
        assert_eq!(bytes[7], 4, "kind byte of the KMS seal");
        assert_eq!(usize::from(bytes[10]), arn.len());
        let decoded = SealRecord::decode(&bytes).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.config.kind.wrapped_key_id(), Some(arn));
        assert!(decoded.open_root(&unseal, Slot::Current).is_ok());
        // A KMS record relabelled as a key-file record no longer opens: the kind is in the AAD.
        let mut relabelled = bytes.clone();
        relabelled[7] = 3;
        let decoded = SealRecord::decode(&relabelled).unwrap();
        assert!(decoded.open_root(&unseal, Slot::Current).is_err());
    }

    #[test]
    fn every_byte_edit_fails_to_decode_or_to_open() {
        let unseal = UnsealKey::generate().unwrap();
        let root = RootKey::generate().unwrap();
        let record = SealRecord::new(shamir(5, 3), &unseal, &root, None, None).unwrap();
        let bytes = record.encode();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                if let Ok(decoded) = SealRecord::decode(&bad) {
                    assert!(
                        decoded.open_root(&unseal, Slot::Current).is_err(),
                        "byte {i} flip {flip:#x} still opens"
                    );
                }
            }
        }
        // Truncation and trailing bytes.
        assert_eq!(SealRecord::decode(&bytes[..bytes.len() - 1]), Err(Corrupt));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(SealRecord::decode(&long), Err(Corrupt));
    }

    #[test]
    fn invalid_configurations_do_not_decode() {
        for (n, t) in [(0, 0), (3, 4), (5, 1), (3, 0)] {
            assert_eq!(
                StoredConfig::decode(&[KIND_SHAMIR, n, t]),
                Err(Corrupt),
                "{n}/{t}"
            );
        }
        assert_eq!(StoredConfig::decode(&[9, 1, 1]), Err(Corrupt));
        assert_eq!(
            StoredConfig::decode(&[KIND_KEY_FILE, 1, 1, 0]),
            Err(Corrupt)
        );
        assert_eq!(StoredConfig::decode(&[KIND_SHAMIR, 1, 1, 0]), Err(Corrupt));
    }

    #[test]
    fn slots_cannot_be_swapped_and_reseal_keeps_both() {
        let a = UnsealKey::generate().unwrap();
        let b = UnsealKey::generate().unwrap();
        let old_root = RootKey::generate().unwrap();
        let new_root = RootKey::generate().unwrap();
        let record = SealRecord::new(shamir(3, 2), &a, &old_root, None, None)
            .unwrap()
            .with_roots(&a, &new_root, Some(&old_root))
            .unwrap();
        assert!(record.has_previous());
        let mut swapped = record.clone();
        std::mem::swap(
            &mut swapped.current_root,
            swapped.previous_root.as_mut().unwrap(),
        );
        assert!(swapped.open_root(&a, Slot::Current).is_err());
        let resealed = record.resealed(&a, &b, shamir(4, 2), None, None).unwrap();
        assert_eq!(
            resealed.open_root(&b, Slot::Current).unwrap(),
            Some(new_root)
        );
        assert_eq!(
            resealed.open_root(&b, Slot::Previous).unwrap(),
            Some(old_root)
        );
        assert!(resealed.open_root(&a, Slot::Current).is_err());
        assert!(matches!(
            record.resealed(&b, &a, shamir(3, 2), None, None),
            Err(ResealError::Open)
        ));
    }
}
