//! Shamir secret sharing of a 256-bit key over GF(256), byte by byte, with `vsss-rs`.
//!
//! A share is the `vsss-rs` byte encoding: one identifier byte (the evaluation point x, never
//! zero) followed by 32 bytes, the 32 polynomials evaluated at x. It is handed to the operator
//! as hex (66 characters) and as standard base64 (44 characters); both parse back.
//!
//! The scheme does not authenticate shares: T shares with distinct identifiers always combine
//! to *some* 32 bytes. That is why the seal layer never trusts a combined key until it has
//! opened the AEAD-sealed root key (or the recovery check) with it; a wrong share set fails
//! there as "invalid shares" and never yields a wrong key.
//!
//! `vsss-rs` refuses a threshold of 1, which is right: a 1-of-N split would hand N copies of
//! the key around. The one exception the seal allows is a single key (N = 1, T = 1): then the
//! polynomial is the constant secret and the one share is `0x01 ‖ key`, the same 33-byte
//! format, so nothing downstream has to special-case it.

use std::convert::Infallible;
use std::fmt;

use arca_storage::KEY_LEN;
use arca_storage::keys::fill_random;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use super::error::SealError;
use super::keys::UnsealKey;

/// The length of one share in bytes: an identifier byte and 32 value bytes.
pub(crate) const SHARE_LEN: usize = 1 + KEY_LEN;

/// The text forms of one share, as `sys/init` and `sys/rekey` return them: `keys` (hex) and
/// `keys_base64`. Both strings are wiped on drop and `Debug` prints neither.
pub struct ShareText {
    /// Lower-case hex of the 33 share bytes (66 characters).
    pub hex: Zeroizing<String>,
    /// Standard base64, padded, of the 33 share bytes (44 characters).
    pub base64: Zeroizing<String>,
}

impl fmt::Debug for ShareText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareText([REDACTED])")
    }
}

/// One parsed share. Wiped on drop; no `Debug` that prints it.
pub(crate) struct Share(Zeroizing<Vec<u8>>);

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share(id {}, [REDACTED])", self.identifier())
    }
}

impl Share {
    /// Parses a share given as hex or base64 (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`SealError::BadShare`] when the text is neither, decodes to the wrong length, or has
    /// the identifier 0 (reserved for the secret itself). The message never quotes the input.
    pub(crate) fn parse(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SealError::BadShare("empty share".into()));
        }
        let bytes =
            if text.len() == 2 * SHARE_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(
                    hex::decode(text).map_err(|_| SealError::BadShare("invalid hex".into()))?,
                )
            } else {
                // A 66-character hex string is never valid base64 of 33 bytes and vice versa
                // (base64 of 33 bytes is 44 characters), so trying hex first is unambiguous.
                Zeroizing::new(STANDARD_PAD_INDIFFERENT.decode(text).map_err(|_| {
                    SealError::BadShare("not hex or base64 of a 33-byte share".into())
                })?)
            };
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<Self, SealError> {
        if bytes.len() != SHARE_LEN {
            return Err(SealError::BadShare(format!(
                "a share is {SHARE_LEN} bytes, this one decodes to {}",
                bytes.len()
            )));
        }
        if bytes[0] == 0 {
            return Err(SealError::BadShare("share identifier 0 is invalid".into()));
        }
        Ok(Self(bytes))
    }

    /// The identifier (x coordinate). Not secret: it says which of the N shares this is.
    pub(crate) fn identifier(&self) -> u8 {
        self.0[0]
    }

    /// The text forms of this share.
    pub(crate) fn to_text(&self) -> ShareText {
        ShareText {
            hex: Zeroizing::new(hex::encode(self.0.as_slice())),
            base64: Zeroizing::new(STANDARD.encode(self.0.as_slice())),
        }
    }
}

/// A `rand_core` generator over the OS CSPRNG for `vsss-rs`.
///
/// `vsss-rs` wants an infallible generator. Rather than panic when the OS generator fails, this
/// one records the failure (and hands out zeros); [`split`] then throws the result away and
/// returns an error, so no share drawn from a failed generator ever leaves this module.
struct OsRng {
    failed: bool,
}

impl OsRng {
    fn fill(&mut self, dst: &mut [u8]) {
        if fill_random(dst).is_err() {
            self.failed = true;
            dst.fill(0);
        }
    }
}

impl rand_core::TryRng for OsRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for OsRng {}

/// Checks a share count and threshold: 1 ≤ T ≤ N ≤ 255, and T = 1 only when N = 1.
///
/// # Errors
/// [`SealError::InvalidParameters`] naming the broken rule.
pub(crate) fn check_parameters(shares: u8, threshold: u8, what: &str) -> Result<(), SealError> {
    if shares == 0 {
        return Err(SealError::InvalidParameters(format!(
            "{what} shares must be at least 1"
        )));
    }
    if threshold == 0 {
        return Err(SealError::InvalidParameters(format!(
            "{what} threshold must be at least 1"
        )));
    }
    if threshold > shares {
        return Err(SealError::InvalidParameters(format!(
            "{what} threshold ({threshold}) cannot exceed the number of shares ({shares})"
        )));
    }
    if threshold == 1 && shares > 1 {
        return Err(SealError::InvalidParameters(format!(
            "{what} threshold must be at least 2 when there is more than one share"
        )));
    }
    Ok(())
}

/// Splits `key` into `shares` shares, any `threshold` of which recombine it.
///
/// # Errors
/// [`SealError::InvalidParameters`] for parameters [`check_parameters`] refuses;
/// [`SealError::Random`] when the OS generator failed.
pub(crate) fn split(key: &UnsealKey, shares: u8, threshold: u8) -> Result<Vec<Share>, SealError> {
    check_parameters(shares, threshold, "secret")?;
    if shares == 1 {
        let mut bytes = Zeroizing::new(Vec::with_capacity(SHARE_LEN));
        bytes.push(1);
        bytes.extend_from_slice(key.expose_secret());
        return Ok(vec![Share(bytes)]);
    }
    let mut rng = OsRng { failed: false };
    let raw = Gf256::split_bytes(
        usize::from(threshold),
        usize::from(shares),
        key.expose_secret(),
        &mut rng,
    );
    // Wrap every share before anything else can return, so all of them are wiped.
    let raw: Vec<Share> = raw
        .map_err(|_| SealError::InvalidParameters("secret sharing refused the parameters".into()))?
        .into_iter()
        .map(|s| Share(Zeroizing::new(s)))
        .collect();
    if rng.failed {
        return Err(SealError::Random(arca_storage::keys::RandomError));
    }
    if raw.len() != usize::from(shares) || raw.iter().any(|s| s.0.len() != SHARE_LEN) {
        return Err(SealError::InvalidParameters(
            "secret sharing returned malformed shares".into(),
        ));
    }
    Ok(raw)
}

/// Recombines exactly `threshold` shares with distinct identifiers into a candidate key.
///
/// The result is only a candidate: the shares are not authenticated, so a wrong set yields a
/// wrong key, which the caller must detect with an AEAD check before using it.
///
/// # Errors
/// [`SealError::InvalidShares`] when the count is not `threshold` or the shares cannot be
/// combined (repeated or zero identifiers).
pub(crate) fn combine(shares: &[Share], threshold: u8) -> Result<UnsealKey, SealError> {
    if shares.len() != usize::from(threshold) || shares.is_empty() {
        return Err(SealError::InvalidShares);
    }
    if threshold == 1 {
        return UnsealKey::from_slice(&shares[0].0[1..]).map_err(|_| SealError::InvalidShares);
    }
    let raw: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(
        shares
            .iter()
            .map(|s| s.0.as_slice().to_vec())
            .collect::<Vec<_>>(),
    );
    let secret =
        Zeroizing::new(Gf256::combine_bytes(raw.as_slice()).map_err(|_| SealError::InvalidShares)?);
    UnsealKey::from_slice(&secret).map_err(|_| SealError::InvalidShares)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn key(byte: u8) -> UnsealKey {
        UnsealKey::from_slice(&[byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn parameters_follow_the_rules() {
        assert!(check_parameters(1, 1, "secret").is_ok());
        assert!(check_parameters(5, 3, "secret").is_ok());
        assert!(check_parameters(255, 255, "secret").is_ok());
        assert!(check_parameters(255, 2, "secret").is_ok());
        for (n, t) in [(0, 0), (0, 1), (1, 0), (3, 4), (5, 1), (2, 1)] {
            assert!(
                matches!(
                    check_parameters(n, t, "secret"),
                    Err(SealError::InvalidParameters(_))
                ),
                "{n}/{t}"
            );
        }
    }

    #[test]
    fn single_key_is_identifier_one_and_the_key() {
        let k = key(9);
        let shares = split(&k, 1, 1).unwrap();
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].identifier(), 1);
        assert_eq!(combine(&shares, 1).unwrap(), k);
    }

    #[test]
    fn text_forms_parse_back() {
        let k = UnsealKey::generate().unwrap();
        for share in split(&k, 5, 3).unwrap() {
            let text = share.to_text();
            assert_eq!(text.hex.len(), 66);
            assert_eq!(text.base64.len(), 44);
            let a = Share::parse(&text.hex).unwrap();
            let b = Share::parse(&format!("  {}\n", text.base64.as_str())).unwrap();
            let c = Share::parse(&text.hex.to_uppercase()).unwrap();
            assert_eq!(a.0, share.0);
            assert_eq!(b.0, share.0);
            assert_eq!(c.0, share.0);
        }
    }

    #[test]
    fn bad_text_is_refused_without_quoting_it() {
        for bad in [
            "",
            "   ",
            "zz",
            "not a share at all!",
            &"ab".repeat(32),
            &"ab".repeat(34),
            &format!("00{}", "ab".repeat(32)),
        ] {
            match Share::parse(bad) {
                Err(SealError::BadShare(msg)) => {
                    assert!(bad.len() < 8 || !msg.contains(bad), "{msg}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn debug_does_not_print_share_bytes() {
        let shares = split(&key(0xAB), 3, 2).unwrap();
        let shown = format!("{:?} {:?}", shares[0], shares[0].to_text());
        assert!(!shown.to_lowercase().contains("ab ab") && shown.contains("REDACTED"));
        assert!(!shown.contains(shares[0].to_text().hex.as_str()));
    }

    #[test]
    fn largest_split_round_trips() {
        let k = UnsealKey::generate().unwrap();
        let shares = split(&k, 255, 255).unwrap();
        let ids: BTreeSet<u8> = shares.iter().map(Share::identifier).collect();
        assert_eq!(ids.len(), 255);
        assert_eq!(combine(&shares, 255).unwrap(), k);
        let shares = split(&k, 255, 2).unwrap();
        assert_eq!(combine(&shares[253..], 2).unwrap(), k);
    }

    #[test]
    fn repeated_identifier_does_not_combine() {
        let k = UnsealKey::generate().unwrap();
        let shares = split(&k, 3, 2).unwrap();
        let again = Share(shares[0].0.clone());
        assert!(matches!(
            combine(&[again, Share(shares[0].0.clone())], 2),
            Err(SealError::InvalidShares)
        ));
        // Wrong count.
        assert!(matches!(combine(&shares, 2), Err(SealError::InvalidShares)));
    }

    /// A random N/T and a random ordering of the N shares.
    fn n_t_order() -> impl Strategy<Value = (u8, u8, Vec<usize>)> {
        (1u8..=40)
            .prop_flat_map(|n| {
                let t = if n == 1 {
                    (1u8..=1).boxed()
                } else {
                    (2u8..=n).boxed()
                };
                (Just(n), t)
            })
            .prop_flat_map(|(n, t)| {
                let order = Just((0..usize::from(n)).collect::<Vec<_>>()).prop_shuffle();
                (Just(n), Just(t), order)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any T distinct shares recombine the key; any T-1 do not.
        #[test]
        fn any_threshold_subset_recombines((n, t, order) in n_t_order(), secret in any::<[u8; 32]>()) {
            let k = UnsealKey::from_slice(&secret).unwrap();
            let shares = split(&k, n, t).unwrap();
            prop_assert_eq!(shares.len(), usize::from(n));
            let pick = |idx: &[usize]| -> Vec<Share> {
                idx.iter().map(|&i| Share(shares[i].0.clone())).collect()
            };
            let chosen = pick(&order[..usize::from(t)]);
            prop_assert!(combine(&chosen, t).unwrap() == k);
            if t >= 2 {
                let fewer = pick(&order[..usize::from(t) - 1]);
                // Too few for the threshold: refused outright...
                prop_assert!(combine(&fewer, t).is_err());
                // ...and even combined as if they were enough, they give another key.
                if let Ok(other) = combine(&fewer, t - 1) {
                    prop_assert!(other != k);
                }
            }
        }
    }
}
