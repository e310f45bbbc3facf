//! The keyring: one random 256-bit key per term.
//!
//! The newest ("active") term encrypts every new record; older terms stay to decrypt records
//! written before a rotation until the background rewrap has moved them. The keyring itself is
//! one record, sealed under a key derived from the root key (term 0 in the envelope), and is
//! encoded by hand so that `storage/FORMAT.md` can specify it byte for byte.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::envelope::{RECORD_KEY_INFO, RecordCipher};
use crate::keys::{KEY_LEN, RandomError, TermKey};

/// The keyring encoding version this build writes and reads.
pub(crate) const KEYRING_VERSION: u8 = 1;

const ENTRY_LEN: usize = 4 + 8 + KEY_LEN;
const FIXED_LEN: usize = 1 + 4 + 8 + KEY_LEN + 4;

/// One term: its key, the cipher derived from it, and when it was installed.
pub(crate) struct Term {
    key: TermKey,
    cipher: RecordCipher,
    installed_at: u64,
}

impl Term {
    fn new(key: TermKey, installed_at: u64) -> Self {
        let cipher = RecordCipher::derive(key.expose_secret(), RECORD_KEY_INFO);
        Self {
            key,
            cipher,
            installed_at,
        }
    }

    pub(crate) fn cipher(&self) -> &RecordCipher {
        &self.cipher
    }
}

/// The keyring in memory. Wiped on drop through its [`TermKey`]s and ciphers.
pub(crate) struct Keyring {
    terms: BTreeMap<u32, Term>,
    active: u32,
    /// Encryptions under the active term: the count persisted at the last keyring write plus
    /// those since.
    encryptions: AtomicU64,
    /// The secret purpose-bound subkeys are derived from. Created with the keyring and never
    /// rotated with the root key, so subkeys (audit HMAC, signing seeds) outlive root-key
    /// rotation.
    derivation_seed: TermKey,
}

/// The keyring bytes could not be decoded: treated as an integrity failure by the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed keyring")]
pub(crate) struct MalformedKeyring;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Keyring {
    /// A keyring with one fresh term, 1.
    pub(crate) fn first() -> Result<Self, RandomError> {
        let mut terms = BTreeMap::new();
        terms.insert(1, Term::new(TermKey::generate()?, now_unix()));
        Ok(Self {
            terms,
            active: 1,
            encryptions: AtomicU64::new(0),
            derivation_seed: TermKey::generate()?,
        })
    }

    /// A copy of this keyring with one more term, which becomes active.
    pub(crate) fn rotated(&self) -> Result<Self, RandomError> {
        let next = self.active + 1;
        let mut terms = BTreeMap::new();
        for (&n, term) in &self.terms {
            terms.insert(n, Term::new(term.key.clone(), term.installed_at));
        }
        terms.insert(next, Term::new(TermKey::generate()?, now_unix()));
        Ok(Self {
            terms,
            active: next,
            encryptions: AtomicU64::new(0),
            derivation_seed: self.derivation_seed.clone(),
        })
    }

    pub(crate) fn active_term(&self) -> u32 {
        self.active
    }

    pub(crate) fn active(&self) -> &Term {
        // `decode` and the constructors guarantee the active term is present.
        &self.terms[&self.active]
    }

    pub(crate) fn term(&self, n: u32) -> Option<&Term> {
        self.terms.get(&n)
    }

    pub(crate) fn derivation_seed(&self) -> &TermKey {
        &self.derivation_seed
    }

    pub(crate) fn record_encryption(&self) {
        self.encryptions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn encryptions(&self) -> u64 {
        self.encryptions.load(Ordering::Relaxed)
    }

    pub(crate) fn installed_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.active().installed_at)
    }

    /// Encodes the keyring (see FORMAT.md, "Keyring"). The buffer holds keys: it is wiped on
    /// drop.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(FIXED_LEN + ENTRY_LEN * self.terms.len()));
        out.push(KEYRING_VERSION);
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(&self.encryptions().to_be_bytes());
        out.extend_from_slice(self.derivation_seed.expose_secret());
        // At most u32::MAX terms exist, since terms are u32 and unique.
        let count = u32::try_from(self.terms.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (n, term) in &self.terms {
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&term.installed_at.to_be_bytes());
            out.extend_from_slice(term.key.expose_secret());
        }
        out
    }

    /// Decodes and checks a keyring: known version, exact length, terms ascending from 1 and
    /// unique, active term present.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, MalformedKeyring> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], MalformedKeyring> {
            if bytes.len() < n {
                return Err(MalformedKeyring);
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Ok(head)
        }
        fn u32_be(b: &[u8]) -> Result<u32, MalformedKeyring> {
            Ok(u32::from_be_bytes(
                b.try_into().map_err(|_| MalformedKeyring)?,
            ))
        }
        fn u64_be(b: &[u8]) -> Result<u64, MalformedKeyring> {
            Ok(u64::from_be_bytes(
                b.try_into().map_err(|_| MalformedKeyring)?,
            ))
        }

        let mut rest = bytes;
        if take(&mut rest, 1)? != [KEYRING_VERSION] {
            return Err(MalformedKeyring);
        }
        let active = u32_be(take(&mut rest, 4)?)?;
        let encryptions = u64_be(take(&mut rest, 8)?)?;
        let derivation_seed =
            TermKey::from_slice(take(&mut rest, KEY_LEN)?).map_err(|_| MalformedKeyring)?;
        let count = u32_be(take(&mut rest, 4)?)? as usize;
        if count == 0 || rest.len() != count.checked_mul(ENTRY_LEN).ok_or(MalformedKeyring)? {
            return Err(MalformedKeyring);
        }
        let mut terms = BTreeMap::new();
        let mut previous = 0u32;
        for _ in 0..count {
            let n = u32_be(take(&mut rest, 4)?)?;
            let installed_at = u64_be(take(&mut rest, 8)?)?;
            let key =
                TermKey::from_slice(take(&mut rest, KEY_LEN)?).map_err(|_| MalformedKeyring)?;
            if n <= previous {
                return Err(MalformedKeyring);
            }
            previous = n;
            terms.insert(n, Term::new(key, installed_at));
        }
        if !terms.contains_key(&active) {
            return Err(MalformedKeyring);
        }
        Ok(Self {
            terms,
            active,
            encryptions: AtomicU64::new(encryptions),
            derivation_seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let ring = Keyring::first().unwrap().rotated().unwrap();
        ring.record_encryption();
        let bytes = ring.encode();
        let back = Keyring::decode(&bytes).unwrap();
        assert_eq!(back.active_term(), 2);
        assert_eq!(back.encryptions(), 1);
        assert_eq!(back.term(1).unwrap().key, ring.term(1).unwrap().key);
        assert_eq!(back.term(2).unwrap().key, ring.term(2).unwrap().key);
        assert_eq!(back.derivation_seed(), ring.derivation_seed());
    }

    #[test]
    fn malformed_keyrings_are_refused() {
        let bytes = Keyring::first().unwrap().encode();
        for len in 0..bytes.len() {
            assert!(Keyring::decode(&bytes[..len]).is_err());
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(Keyring::decode(&long).is_err());
        let mut wrong_active = bytes.to_vec();
        wrong_active[4] = 9;
        assert!(Keyring::decode(&wrong_active).is_err());
    }
}
