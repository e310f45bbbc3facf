//! The token store: random bearer tokens, kept only as a keyed hash.
//!
//! A token is `arca.` followed by 32 characters drawn uniformly from the 62 ASCII letters and
//! digits (about 190 bits) from the OS CSPRNG; each character comes from one random byte,
//! rejected when it is 248 or more so that `byte % 62` is unbiased.
//!
//! The token itself is never stored. Its entry lives behind the barrier at
//! `sys/token/id/<hex of HMAC-SHA256(k, token)>`. So:
//!
//! - a copy of the backend (even with the records decrypted) does not yield usable tokens, and
//!   the hash cannot be brute-forced offline without `k`;
//! - lookup is by exact path: no comparison of the presented token with stored secrets takes
//!   place, so there is nothing whose timing could leak how much of a guess was right.
//!
//! # The hashing key
//!
//! `k` is `HKDF-SHA256(ikm = s, info = "arca/token-hash/v1")`, where `s` is 32 random bytes
//! created with the first token and stored behind the barrier at [`TOKEN_KEY_PATH`] (Vault's
//! token store keeps a stored salt the same way). It is deliberately *not*
//! [`Barrier::derive_subkey`]: that is derived from the root key, so a root-key rotation would
//! change `k`, move every token entry out of reach and lock the operator out with an invalid
//! root token. A record behind the barrier is sealed under a keyring term key, which a
//! root-key rotation does not change, and is as unreadable without the root key as a derived
//! subkey.
//!
//! The entry is JSON (`{"v":1,"accessor":…,"policies":[…],"created":…,"display_name":…}`), so
//! later fields (TTL, parent, metadata) can be added without a migration.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arca_storage::keys::{RandomError, fill_random};
use arca_storage::{Barrier, KEY_LEN};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::AuthError;

/// Every token arca issues starts with this.
pub const TOKEN_PREFIX: &str = "arca.";

/// The random characters after the prefix.
const TOKEN_RANDOM_LEN: usize = 32;

/// Characters of an accessor.
const ACCESSOR_LEN: usize = 24;

/// The longest fixed token accepted, in bytes.
const MAX_FIXED_TOKEN_LEN: usize = 256;

/// HKDF `info` of the token-hashing key.
pub const TOKEN_HASH_INFO: &[u8] = b"arca/token-hash/v1";

/// Where the token-hashing secret `s` lives, behind the barrier.
pub const TOKEN_KEY_PATH: &str = "sys/token/hash-key";

/// Where token entries live, behind the barrier.
pub const TOKEN_ID_PREFIX: &str = "sys/token/id/";

const ENTRY_VERSION: u32 = 1;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters drawn uniformly from [A-Za-z0-9] with the OS CSPRNG, by rejection
/// sampling: bytes ≥ 248 (= 4 × 62) are discarded, so `byte % 62` is uniform.
///
/// # Errors
/// [`RandomError`] when the OS generator fails.
pub fn random_base62(len: usize) -> Result<Zeroizing<String>, RandomError> {
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        fill_random(buf.as_mut())?;
        for &b in buf.iter() {
            if out.len() == len {
                break;
            }
            if b < 248 {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// Checks a caller-chosen token: 1 to 256 bytes of visible ASCII.
///
/// # Errors
/// [`AuthError::InvalidToken`] saying which rule is broken (never quoting the token).
pub(crate) fn check_fixed_token(token: &str) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::InvalidToken("a token cannot be empty"));
    }
    if token.len() > MAX_FIXED_TOKEN_LEN {
        return Err(AuthError::InvalidToken("a token is at most 256 bytes"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::InvalidToken(
            "a token holds only visible ASCII characters",
        ));
    }
    Ok(())
}

/// A token as handed to a client. Wiped on drop; `Debug` prints `[REDACTED]`; read it with
/// [`TokenSecret::expose_secret`].
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// The token text, to send to the client once.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([REDACTED])")
    }
}

/// What a token grants. Holds no secret: the accessor names the token for audit and
/// revocation without being usable as a token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenEntry {
    /// A random, non-secret handle of the token.
    pub accessor: String,
    /// Policy names (the root token has `["root"]`).
    pub policies: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// A human-readable name (`"root"`).
    pub display_name: String,
}

/// The stored form of a [`TokenEntry`] (kept apart so the domain type is not `Serialize`).
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    v: u32,
    accessor: String,
    policies: Vec<String>,
    created: u64,
    display_name: String,
}

/// Tokens behind a barrier. Holds no key itself: the hashing key is read through the barrier at
/// each call, so sealing the barrier locks the token store too.
#[derive(Debug, Clone)]
pub struct TokenStore {
    barrier: Arc<Barrier>,
}

impl TokenStore {
    /// A token store over `barrier`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self { barrier }
    }

    /// The token-hashing key `k`, creating its secret on first use.
    async fn hash_key(&self, create: bool) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, AuthError> {
        let secret = loop {
            if let Some(stored) = self.barrier.get(TOKEN_KEY_PATH).await? {
                break stored;
            }
            if !create {
                return Ok(None);
            }
            let mut fresh = Zeroizing::new([0u8; KEY_LEN]);
            fill_random(fresh.as_mut())?;
            // Two first tokens at once: one secret wins, the other re-reads it.
            self.barrier
                .compare_and_swap(TOKEN_KEY_PATH, None, Some(fresh.as_slice()))
                .await?;
        };
        if secret.len() != KEY_LEN {
            tracing::warn!(
                path = TOKEN_KEY_PATH,
                "token hashing secret has the wrong length"
            );
            return Err(AuthError::CorruptEntry);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is within HKDF-SHA256's output limit of 255 * 32 bytes.
        #[allow(clippy::expect_used)]
        Hkdf::<Sha256>::new(None, secret.expose_secret())
            .expand(TOKEN_HASH_INFO, key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(Some(key))
    }

    /// The barrier path of `token`'s entry under `key`.
    fn path_for(key: &[u8; KEY_LEN], token: &str) -> String {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{TOKEN_ID_PREFIX}{}", hex::encode(tag))
    }

    /// The path of `token`'s entry, or `None` when no token was ever created.
    async fn existing_path(&self, token: &str) -> Result<Option<String>, AuthError> {
        Ok(self
            .hash_key(false)
            .await?
            .map(|key| Self::path_for(&key, token)))
    }

    /// Creates the root token (policies `["root"]`, display name `"root"`): a new random one,
    /// or `fixed` (development mode's `--dev-root-token`), and returns it. A fixed token that
    /// already exists is replaced with a fresh entry.
    ///
    /// # Errors
    /// [`AuthError::Sealed`]; [`AuthError::InvalidToken`] when `fixed` is empty, longer than
    /// 256 bytes, or holds anything but visible ASCII; a storage failure.
    pub async fn create_root_token(&self, fixed: Option<&str>) -> Result<TokenSecret, AuthError> {
        let token = match fixed {
            Some(fixed) => {
                check_fixed_token(fixed)?;
                Zeroizing::new(fixed.to_owned())
            }
            None => {
                let random = random_base62(TOKEN_RANDOM_LEN)?;
                let mut token =
                    Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN));
                token.push_str(TOKEN_PREFIX);
                token.push_str(&random);
                token
            }
        };
        let entry = StoredEntry {
            v: ENTRY_VERSION,
            accessor: random_base62(ACCESSOR_LEN)?.to_string(),
            policies: vec!["root".to_owned()],
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            display_name: "root".to_owned(),
        };
        // Serializing a struct of strings and integers cannot fail.
        #[allow(clippy::expect_used)]
        let bytes = serde_json::to_vec(&entry).expect("a token entry serializes");
        let key = self.hash_key(true).await?.ok_or(AuthError::CorruptEntry)?;
        let path = Self::path_for(&key, &token);
        self.barrier.put(&path, &bytes).await?;
        tracing::info!(accessor = %entry.accessor, "root token created");
        Ok(TokenSecret(token))
    }

    /// The entry of `token`, or `None` when no such token exists.
    ///
    /// # Errors
    /// [`AuthError::Sealed`], [`AuthError::CorruptEntry`], or a storage failure.
    pub async fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, AuthError> {
        let Some(path) = self.existing_path(token).await? else {
            return Ok(None);
        };
        let Some(plain) = self.barrier.get(&path).await? else {
            return Ok(None);
        };
        let stored: StoredEntry = serde_json::from_slice(plain.expose_secret()).map_err(|_| {
            tracing::warn!(path, "token entry does not parse");
            AuthError::CorruptEntry
        })?;
        if stored.v != ENTRY_VERSION {
            tracing::warn!(
                path,
                version = stored.v,
                "token entry of an unknown version"
            );
            return Err(AuthError::CorruptEntry);
        }
        Ok(Some(TokenEntry {
            accessor: stored.accessor,
            policies: stored.policies,
            created: stored.created,
            display_name: stored.display_name,
        }))
    }

    /// Revokes `token`. Returns whether it existed.
    ///
    /// # Errors
    /// [`AuthError::Sealed`] or a storage failure.
    pub async fn revoke(&self, token: &str) -> Result<bool, AuthError> {
        let Some(path) = self.existing_path(token).await? else {
            return Ok(false);
        };
        let existed = self.barrier.get(&path).await?.is_some();
        if existed {
            self.barrier.delete(&path).await?;
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use arca_storage::{MemoryBackend, RootKey};

    use super::*;

    async fn store() -> (Arc<Barrier>, TokenStore) {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        (barrier.clone(), TokenStore::new(barrier))
    }

    #[test]
    fn base62_is_the_alphabet_and_roughly_uniform() {
        let s = random_base62(62 * 200).unwrap();
        let mut counts = [0usize; 62];
        for c in s.bytes() {
            let idx = BASE62.iter().position(|&a| a == c).unwrap();
            counts[idx] += 1;
        }
        // Expected 200 each; a biased sampler over 256 would push the first 8 to ~250.
        assert!(
            counts.iter().all(|&n| (120..=290).contains(&n)),
            "{counts:?}"
        );
    }

    #[tokio::test]
    async fn root_token_round_trip_and_revoke() {
        let (barrier, tokens) = store().await;
        let token = tokens.create_root_token(None).await.unwrap();
        let text = token.expose_secret();
        assert!(text.starts_with("arca.") && text.len() == 5 + 32);
        assert!(text[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(format!("{token:?}"), "TokenSecret([REDACTED])");
        let entry = tokens.lookup(text).await.unwrap().unwrap();
        assert_eq!(entry.policies, vec!["root".to_owned()]);
        assert_eq!(entry.display_name, "root");
        assert_eq!(entry.accessor.len(), 24);
        assert!(entry.created > 1_600_000_000);
        assert!(tokens.lookup("arca.nope").await.unwrap().is_none());
        // Stored only as a keyed hash: the token text appears in no path and no raw record.
        let paths = barrier.list(TOKEN_ID_PREFIX).await.unwrap();
        assert_eq!(paths.len(), 1);
        assert!(!paths[0].contains(&text[5..]));
        assert_eq!(paths[0].len(), TOKEN_ID_PREFIX.len() + 64);
        let raw = barrier.backend().get(&paths[0]).await.unwrap().unwrap();
        assert!(!raw.windows(8).any(|w| w == &text.as_bytes()[5..13]));
        assert!(tokens.revoke(text).await.unwrap());
        assert!(!tokens.revoke(text).await.unwrap());
        assert!(tokens.lookup(text).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn tokens_survive_a_root_key_rotation() {
        let (barrier, tokens) = store().await;
        let token = tokens.create_root_token(None).await.unwrap();
        barrier
            .rotate_root_key(&RootKey::generate().unwrap())
            .await
            .unwrap();
        assert!(
            tokens
                .lookup(token.expose_secret())
                .await
                .unwrap()
                .is_some()
        );
        let second = tokens.create_root_token(None).await.unwrap();
        assert!(
            tokens
                .lookup(second.expose_secret())
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(barrier.list("sys/token/").await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn fixed_tokens_are_checked_and_sealed_store_refuses() {
        let (barrier, tokens) = store().await;
        let token = tokens.create_root_token(Some("dev-root")).await.unwrap();
        assert_eq!(token.expose_secret(), "dev-root");
        assert!(tokens.lookup("dev-root").await.unwrap().is_some());
        for bad in ["", "has space", "tab\t", &"x".repeat(257)] {
            assert!(matches!(
                tokens.create_root_token(Some(bad)).await,
                Err(AuthError::InvalidToken(_))
            ));
        }
        barrier.seal().await;
        assert!(matches!(
            tokens.lookup("dev-root").await,
            Err(AuthError::Sealed)
        ));
        assert!(matches!(
            tokens.create_root_token(None).await,
            Err(AuthError::Sealed)
        ));
    }
}
