//! Passphrase seal: the unseal key is Argon2id of a passphrase.
//!
//! Argon2id (RFC 9106) with a 16-byte random salt and the cost parameters stored in the seal
//! configuration, so a store keeps unsealing with the parameters it was created with even
//! after the defaults change. The default is m = 64 MiB, t = 3, p = 4 (RFC 9106's second
//! recommended option scaled to a server); nothing below OWASP's minimum for Argon2id,
//! m = 19 MiB, t = 2, is accepted, neither at init nor when read back from storage. A
//! store can be created with weaker parameters only through
//! [`KdfParams::insecure_for_tests`], whose name says what it is for; a seal configured with such
//! parameters is also the only one that unseals a store whose record carries them.
//!
//! Upper bounds (4 GiB, 64 iterations, 64 lanes) keep an edited record from making the server
//! allocate unbounded memory before the edit is detected.
//!
//! The derivation is CPU- and memory-bound and runs on tokio's blocking pool.

use std::fmt;

use arca_storage::KEY_LEN;
use zeroize::Zeroizing;

use super::error::SealError;
use super::keys::UnsealKey;

/// Length of the random salt, in bytes.
pub(crate) const SALT_LEN: usize = 16;

/// The shortest passphrase accepted at init, in bytes.
pub const MIN_PASSPHRASE_LEN: usize = 8;

/// The longest passphrase accepted, in bytes.
pub const MAX_PASSPHRASE_LEN: usize = 1024;

/// A passphrase. Wiped on drop; `Debug` prints `[REDACTED]`; read with
/// [`Passphrase::expose_secret`].
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Takes ownership of the passphrase bytes (UTF-8 is not required).
    #[must_use]
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The passphrase bytes.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Passphrase {
    fn from(text: String) -> Self {
        Self::new(text.into_bytes())
    }
}

impl From<&str> for Passphrase {
    fn from(text: &str) -> Self {
        Self::new(text.as_bytes())
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    insecure: bool,
}

impl Default for KdfParams {
    /// m = 64 MiB, t = 3, p = 4.
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
            insecure: false,
        }
    }
}

impl KdfParams {
    /// The least memory cost accepted, in KiB (19 MiB, OWASP's minimum for Argon2id).
    pub const MIN_M_COST_KIB: u32 = 19 * 1024;
    /// The fewest iterations accepted (OWASP's minimum at 19 MiB).
    pub const MIN_T_COST: u32 = 2;
    /// The most memory accepted, in KiB (4 GiB).
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// The most iterations accepted.
    pub const MAX_T_COST: u32 = 64;
    /// The most lanes accepted.
    pub const MAX_P_COST: u32 = 64;

    /// Parameters at or above the minimum.
    ///
    /// # Errors
    /// [`SealError::InvalidParameters`] below m = 19 MiB or t = 2, above the upper bounds, or
    /// with fewer than 8 KiB of memory per lane.
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, SealError> {
        let params = Self::from_stored(m_cost_kib, t_cost, p_cost);
        params.check(false)?;
        Ok(params)
    }

    /// Parameters below the minimum, for tests that cannot spend 64 MiB and a second per
    /// derivation. Never use these for a store that holds anything: a passphrase behind them
    /// can be guessed orders of magnitude faster. Only the upper bounds and Argon2's own limits
    /// are checked (at use).
    #[must_use]
    pub fn insecure_for_tests(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Self {
        Self {
            m_cost_kib,
            t_cost,
            p_cost,
            insecure: true,
        }
    }

    /// Parameters as read from a seal record; checked before use.
    pub(crate) fn from_stored(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Self {
        Self {
            m_cost_kib,
            t_cost,
            p_cost,
            insecure: false,
        }
    }

    /// Memory cost in KiB.
    #[must_use]
    pub fn m_cost_kib(&self) -> u32 {
        self.m_cost_kib
    }

    /// Iterations.
    #[must_use]
    pub fn t_cost(&self) -> u32 {
        self.t_cost
    }

    /// Lanes.
    #[must_use]
    pub fn p_cost(&self) -> u32 {
        self.p_cost
    }

    /// Whether these came from [`KdfParams::insecure_for_tests`].
    #[must_use]
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Checks the bounds; `allow_weak` lifts only the lower ones.
    pub(crate) fn check(&self, allow_weak: bool) -> Result<(), SealError> {
        if !allow_weak && (self.m_cost_kib < Self::MIN_M_COST_KIB || self.t_cost < Self::MIN_T_COST)
        {
            return Err(SealError::InvalidParameters(format!(
                "Argon2id parameters m={} KiB, t={} are below the minimum m={} KiB, t={}",
                self.m_cost_kib,
                self.t_cost,
                Self::MIN_M_COST_KIB,
                Self::MIN_T_COST
            )));
        }
        if self.m_cost_kib > Self::MAX_M_COST_KIB
            || self.t_cost > Self::MAX_T_COST
            || self.p_cost > Self::MAX_P_COST
            || self.p_cost == 0
            || self.t_cost == 0
            || self.m_cost_kib < 8 * self.p_cost
        {
            return Err(SealError::InvalidParameters(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are out of range",
                self.m_cost_kib, self.t_cost, self.p_cost
            )));
        }
        Ok(())
    }
}

/// Derives the unseal key from a passphrase. Blocking: call through `spawn_blocking`.
///
/// # Errors
/// [`SealError::InvalidParameters`] when Argon2 refuses the parameters.
pub(crate) fn derive(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<UnsealKey, SealError> {
    let argon_params = argon2::Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|e| SealError::InvalidParameters(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    UnsealKey::from_fn(|out| {
        argon
            .hash_password_into(passphrase, salt, out)
            .map_err(|e| SealError::InvalidParameters(format!("Argon2id: {e}")))
    })
}

/// [`derive`] on tokio's blocking pool.
pub(crate) async fn derive_blocking(
    passphrase: &[u8],
    salt: [u8; SALT_LEN],
    params: KdfParams,
) -> Result<UnsealKey, SealError> {
    let passphrase = Zeroizing::new(passphrase.to_vec());
    tokio::task::spawn_blocking(move || derive(&passphrase, &salt, params))
        .await
        .map_err(|e| SealError::Io(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_minimums() {
        let d = KdfParams::default();
        assert_eq!((d.m_cost_kib(), d.t_cost(), d.p_cost()), (65536, 3, 4));
        assert!(d.check(false).is_ok());
        assert!(KdfParams::new(19 * 1024, 2, 1).is_ok());
        for (m, t, p) in [(19 * 1024 - 1, 2, 1), (19 * 1024, 1, 1), (8, 1, 1)] {
            assert!(
                matches!(
                    KdfParams::new(m, t, p),
                    Err(SealError::InvalidParameters(_))
                ),
                "{m} {t} {p}"
            );
        }
        assert!(KdfParams::new(u32::MAX, 3, 4).is_err());
        assert!(KdfParams::new(65536, 3, 0).is_err());
        let weak = KdfParams::insecure_for_tests(64, 1, 1);
        assert!(weak.is_insecure());
        assert!(weak.check(false).is_err());
        assert!(weak.check(true).is_ok());
    }

    #[test]
    fn derivation_is_deterministic_and_salted() {
        let params = KdfParams::insecure_for_tests(64, 1, 1);
        let a = derive(b"correct horse", &[1; SALT_LEN], params).unwrap();
        let b = derive(b"correct horse", &[1; SALT_LEN], params).unwrap();
        let c = derive(b"correct horse", &[2; SALT_LEN], params).unwrap();
        let d = derive(b"correct horsf", &[1; SALT_LEN], params).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    /// Known answers from the Argon2 reference implementation (libargon2,
    /// `argon2id_hash_raw`): Argon2id, version 0x13, no secret, no associated data, 32-byte
    /// output, which is exactly how arca derives the unseal key.
    #[test]
    fn known_answers_from_the_reference_implementation() {
        let key = derive(
            &[1; 32],
            &[2; SALT_LEN],
            KdfParams::insecure_for_tests(32, 3, 4),
        )
        .unwrap();
        assert_eq!(
            hex::encode(key.expose_secret()),
            "03aab965c12001c9d7d0d2de33192c0494b684bb148196d73c1df1acaf6d0c2e"
        );
        let salt: [u8; SALT_LEN] = core::array::from_fn(|i| i as u8);
        let key = derive(
            b"correct horse battery staple",
            &salt,
            KdfParams::new(19 * 1024, 2, 1).unwrap(),
        )
        .unwrap();
        assert_eq!(
            hex::encode(key.expose_secret()),
            "818259b6310026a8e0dbac5d2e6927abcfdb07b32258fac4f61b18b80f929085"
        );
    }

    #[test]
    fn passphrase_debug_is_redacted() {
        let p = Passphrase::from("hunter2hunter2");
        assert_eq!(format!("{p:?}"), "Passphrase([REDACTED])");
        assert_eq!(p.expose_secret(), b"hunter2hunter2");
    }
}
