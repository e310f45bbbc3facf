//! Key and plaintext types.
//!
//! Every type here wipes its bytes when dropped, prints `[REDACTED]` in `Debug`, has no
//! `Display` or `Serialize`, and compares in constant time. Bytes are read through
//! `expose_secret`, so each place that touches key material says so.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The length of every symmetric key in arca, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// The operating system's random generator could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` from the operating system's CSPRNG, the only source of randomness arca uses.
///
/// # Errors
/// [`RandomError`] when the OS generator fails.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|_| RandomError)
}

/// How many bytes of the operating system's generator a thread draws at once for
/// [`fill_nonce`].
pub const NONCE_POOL_BYTES: usize = 4096;

/// Fills `buf` with bytes of the operating system's CSPRNG, like [`fill_random`], but draws
/// them from a per-thread pool refilled [`NONCE_POOL_BYTES`] at a time: one system call per
/// 170 XChaCha20 nonces instead of one per nonce, which showed as 3% of the CPU time of a
/// transit encryption.
///
/// Only for values that must be unique and unpredictable but are public once used: AEAD
/// nonces, request ids. Never for keys, whose bytes must live nowhere but in the key: the pool
/// holds bytes before they are handed out. Bytes handed out are erased from the pool, so none
/// is handed out twice. A forked child would share its parent's pool; arca forks only to
/// `exec` (child processes), never to run its own code in the child.
///
/// # Errors
/// [`RandomError`] when the OS generator fails.
pub fn fill_nonce(buf: &mut [u8]) -> Result<(), RandomError> {
    use std::cell::RefCell;
    struct Pool {
        bytes: [u8; NONCE_POOL_BYTES],
        used: usize,
    }
    thread_local! {
        static POOL: RefCell<Pool> = const {
            RefCell::new(Pool { bytes: [0; NONCE_POOL_BYTES], used: NONCE_POOL_BYTES })
        };
    }
    if buf.len() > NONCE_POOL_BYTES / 4 {
        return fill_random(buf);
    }
    POOL.with_borrow_mut(|pool| {
        if pool.used + buf.len() > NONCE_POOL_BYTES {
            fill_random(&mut pool.bytes)?;
            pool.used = 0;
        }
        let taken = &mut pool.bytes[pool.used..pool.used + buf.len()];
        buf.copy_from_slice(taken);
        taken.fill(0);
        pool.used += buf.len();
        Ok(())
    })
}

/// A key given bytes of the wrong length.
#[derive(Debug, thiserror::Error)]
#[error("a key must be exactly {KEY_LEN} bytes")]
pub struct KeyLengthError;

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// A new random key from the OS CSPRNG.
            ///
            /// # Errors
            /// [`RandomError`] when the OS generator fails.
            pub fn generate() -> Result<Self, RandomError> {
                let mut key = Self([0; KEY_LEN]);
                fill_random(&mut key.0)?;
                Ok(key)
            }

            /// Copies a key from `bytes`; the caller stays responsible for wiping its copy.
            ///
            /// # Errors
            /// [`KeyLengthError`] unless `bytes` is exactly [`KEY_LEN`] long.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyLengthError> {
                let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyLengthError)?;
                Ok(Self(*bytes))
            }

            /// The key's bytes.
            #[must_use]
            pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl Eq for $name {}
    };
}

secret_key! {
    /// The 256-bit root key: it opens the keyring and derives every purpose-bound subkey.
    /// The seal layer hands it to [`Barrier::unseal`](crate::Barrier::unseal).
    RootKey
}

secret_key! {
    /// The key of one keyring term; record keys are derived from it.
    TermKey
}

secret_key! {
    /// A purpose-bound key derived from the root key with HKDF-SHA256
    /// ([`Barrier::derive_subkey`](crate::Barrier::derive_subkey)).
    SubKey
}

impl SubKey {
    /// `HKDF-SHA256(salt = none, ikm = root, info)`.
    #[must_use]
    pub fn derive(root: &RootKey, info: &[u8]) -> Self {
        Self::derive_from(root.expose_secret(), info)
    }

    /// `HKDF-SHA256(salt = none, ikm, info)`.
    #[must_use]
    pub fn derive_from(ikm: &[u8; KEY_LEN], info: &[u8]) -> Self {
        let mut key = Self([0; KEY_LEN]);
        // 32 bytes is within HKDF-SHA256's output limit of 255 * 32 bytes.
        #[allow(clippy::expect_used)]
        hkdf::Hkdf::<sha2::Sha256>::new(None, ikm)
            .expand(info, &mut key.0)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }
}

/// A decrypted record value. Wiped on drop; `Debug` shows only its length.
#[derive(Clone, Default)]
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// Wraps bytes that are already secret.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives up the wrapper, keeping the wipe-on-drop buffer.
    #[must_use]
    pub fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl From<Zeroizing<Vec<u8>>> for Plaintext {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext([REDACTED {} bytes])", self.0.len())
    }
}

impl PartialEq for Plaintext {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for Plaintext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_never_repeat_across_pool_refills_sizes_and_threads() {
        use std::collections::HashSet;
        // Sizes that do not divide the pool, so refills happen part way through a nonce, and
        // one larger than a quarter of the pool, which goes to the system directly.
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for round in 0..3 * NONCE_POOL_BYTES / 24 {
            let len = [24, 12, 16, 7, NONCE_POOL_BYTES / 4 + 1][round % 5];
            let mut nonce = vec![0u8; len];
            fill_nonce(&mut nonce).unwrap();
            assert!(
                nonce.iter().any(|b| *b != 0),
                "an all-zero nonce of {len} bytes"
            );
            assert!(seen.insert(nonce), "a nonce repeated at round {round}");
        }
        let other: Vec<Vec<u8>> = std::thread::spawn(|| {
            (0..400)
                .map(|_| {
                    let mut nonce = vec![0u8; 24];
                    fill_nonce(&mut nonce).unwrap();
                    nonce
                })
                .collect()
        })
        .join()
        .unwrap();
        assert!(other.iter().all(|n| !seen.contains(n)));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = RootKey::from_slice(&[0xAB; KEY_LEN]).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "RootKey([REDACTED])");
        let text = Plaintext::new(b"hunter2".to_vec());
        assert_eq!(format!("{text:?}"), "Plaintext([REDACTED 7 bytes])");
    }

    #[test]
    fn keys_compare_by_value_and_refuse_wrong_lengths() {
        let a = RootKey::generate().unwrap();
        let b = RootKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a, RootKey::from_slice(a.expose_secret()).unwrap());
        assert!(RootKey::from_slice(&[0; 31]).is_err());
        assert!(RootKey::from_slice(&[0; 33]).is_err());
    }
}
