//! The token store: random bearer tokens, kept only as a keyed hash.
//!
//! A token is `arca.` followed by 32 characters drawn uniformly from the 62 ASCII letters and
//! digits (about 190 bits) from the OS CSPRNG; each character comes from one random byte,
//! rejected when it is 248 or more so that `byte % 62` is unbiased.
//!
//! The token itself is never stored. Its entry lives behind the barrier at
//! `sys/token/id/<id>`, where the id is the hex of `HMAC-SHA256(k, token)`. So:
//!
//! - a copy of the backend (even with the records decrypted) does not yield usable tokens, and
//!   the hash cannot be brute-forced offline without `k`;
//! - lookup is by exact path: the presented token is never compared with stored secrets, so
//!   there is nothing whose timing could leak how much of a guess was right. The entry found
//!   repeats its id, which is checked against the computed one in constant time, binding the
//!   entry to the token that was presented.
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
//! subkey. The same key, with a purpose prefix, hashes accessors and AppRole credentials.
//!
//! # Records
//!
//! | path | holds |
//! |---|---|
//! | `sys/token/id/<id>` | the entry (JSON): policies, TTL, uses left, parent, metadata |
//! | `sys/token/accessor/<HMAC(k, "accessor\0" ‖ accessor)>` | the id, for lookup and revocation by accessor |
//! | `sys/token/parent/<parent id>/<child id>` | nothing: the child index, so revoking a token revokes its children |
//! | `sys/token/expiry/<20-digit unix secs>/<id>` | nothing: the expiry index |
//! | `sys/token/wrapped/<id>` | the response a wrapping token stands for |
//!
//! The expiry index sorts by time, so [`TokenStore::tidy`] reads it from the start up to
//! *now* and stops: expired tokens are cleaned up at startup and periodically without a scan
//! of all tokens. A token read after its expiry and before a tidy is treated as absent and
//! revoked on the spot.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arca_storage::keys::{RandomError, fill_random};
use arca_storage::{Barrier, BarrierOp, Decoded, KEY_LEN, Plaintext};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::AuthError;
use super::cidr::Cidr;

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

/// The accessor index.
pub const ACCESSOR_PREFIX: &str = "sys/token/accessor/";

/// The child index.
pub const PARENT_PREFIX: &str = "sys/token/parent/";

/// The expiry index.
pub const EXPIRY_PREFIX: &str = "sys/token/expiry/";

/// Responses held by wrapping tokens.
pub const WRAPPED_PREFIX: &str = "sys/token/wrapped/";

/// The TTL of a token created without one (Vault's system default, 32 days).
pub const DEFAULT_TTL_SECS: u64 = 768 * 3600;

/// The longest a non-periodic token lives, renewals included (Vault's system maximum).
pub const MAX_TTL_SECS: u64 = 768 * 3600;

/// The policy name of wrapping tokens; no stored policy may take it.
pub const WRAPPING_POLICY: &str = "response-wrapping";

const ENTRY_VERSION: u32 = 2;

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

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    fn generate() -> Result<Self, RandomError> {
        let random = random_base62(TOKEN_RANDOM_LEN)?;
        let mut token =
            Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN));
        token.push_str(TOKEN_PREFIX);
        token.push_str(&random);
        Ok(Self(token))
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([REDACTED])")
    }
}

/// What kind of token an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenKind {
    /// An ordinary (Vault "service") token.
    #[default]
    Service,
    /// A response-wrapping token: good only for unwrapping its response, once.
    Wrapping,
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
    /// A human-readable name (`"root"`, `"token"`, `"approle"`).
    pub display_name: String,
    /// The TTL it was created with, in seconds; 0 when it never expires.
    pub creation_ttl: u64,
    /// When it expires (Unix seconds), or `None`.
    pub expire_time: Option<u64>,
    /// A hard limit on its life from creation, renewals included; 0 for none.
    pub explicit_max_ttl: u64,
    /// Uses left; 0 means unlimited.
    pub num_uses: u32,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// For a periodic token, the TTL every renewal resets it to.
    pub period: u64,
    /// Whether it has no parent (and so survives its creator's revocation).
    pub orphan: bool,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// The identity it was issued to (the AppRole role name), if any.
    pub entity: Option<String>,
    /// The path that created it (`auth/token/create`, `auth/approle/login`, ...).
    pub path: String,
    /// Addresses allowed to use it; empty for any.
    pub bound_cidrs: Vec<Cidr>,
    /// Service or wrapping.
    pub kind: TokenKind,
    /// The last renewal, Unix seconds.
    pub last_renewal: Option<u64>,
    /// The accessor of the token it was issued from (for a wrapping token of a token, the
    /// wrapped token's accessor); shown, never used for access.
    pub wrapped_accessor: Option<String>,
    id: String,
    parent: Option<String>,
}

impl TokenEntry {
    /// When it was created or last renewed, Unix seconds: the moment a create, login or
    /// renewal answer describes, so the TTL it reports is the one granted, even when the
    /// clock passed a second boundary before the answer was written.
    #[must_use]
    pub fn issued_at(&self) -> u64 {
        self.last_renewal
            .map_or(self.created, |renewed| renewed.max(self.created))
    }

    /// Seconds left to live at `now`; 0 when it never expires.
    #[must_use]
    pub fn ttl_at(&self, now: u64) -> u64 {
        self.expire_time.map_or(0, |e| e.saturating_sub(now))
    }

    /// Whether it has expired at `now`.
    #[must_use]
    pub fn expired_at(&self, now: u64) -> bool {
        self.expire_time.is_some_and(|e| e <= now)
    }
}

/// The stored form of a [`TokenEntry`] (kept apart so the domain type is not `Serialize`).
/// Fields added after version 1 default, so the version-1 root tokens of older stores load.
#[derive(Serialize, Deserialize, Clone)]
struct StoredEntry {
    v: u32,
    #[serde(default)]
    id: String,
    accessor: String,
    policies: Vec<String>,
    created: u64,
    display_name: String,
    #[serde(default)]
    creation_ttl: u64,
    #[serde(default)]
    expire_time: Option<u64>,
    #[serde(default)]
    explicit_max_ttl: u64,
    #[serde(default)]
    num_uses: u32,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    period: u64,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    path: String,
    #[serde(default)]
    bound_cidrs: Vec<String>,
    #[serde(default)]
    wrapping: bool,
    #[serde(default)]
    last_renewal: Option<u64>,
    #[serde(default)]
    wrapped_accessor: Option<String>,
}

impl StoredEntry {
    fn to_entry(&self) -> Result<TokenEntry, AuthError> {
        let bound_cidrs = self
            .bound_cidrs
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<_, _>>()
            .map_err(|_| AuthError::CorruptEntry)?;
        Ok(TokenEntry {
            accessor: self.accessor.clone(),
            policies: self.policies.clone(),
            created: self.created,
            display_name: self.display_name.clone(),
            creation_ttl: self.creation_ttl,
            expire_time: self.expire_time,
            explicit_max_ttl: self.explicit_max_ttl,
            num_uses: self.num_uses,
            renewable: self.renewable,
            period: self.period,
            orphan: self.parent.is_none(),
            meta: self.meta.clone(),
            entity: self.entity.clone(),
            path: self.path.clone(),
            bound_cidrs,
            kind: if self.wrapping {
                TokenKind::Wrapping
            } else {
                TokenKind::Service
            },
            last_renewal: self.last_renewal,
            wrapped_accessor: self.wrapped_accessor.clone(),
            id: self.id.clone(),
            parent: self.parent.clone(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings, integers and maps of strings cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_vec(self).expect("a token entry serializes")
    }
}

/// What a new token should be. The caller (the HTTP layer, AppRole) has already decided the
/// policies and checked that the parent may grant them.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TokenRequest {
    /// Policy names, as they will be stored.
    pub policies: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Display name (Vault prefixes `token-`; the caller does that).
    pub display_name: String,
    /// TTL in seconds; `None` or 0 for the default (none for a root-policy token).
    pub ttl: Option<u64>,
    /// Hard limit on the token's life, seconds; 0 for none.
    pub explicit_max_ttl: u64,
    /// Uses allowed; 0 for unlimited.
    pub num_uses: u32,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Periodic TTL in seconds; 0 for none.
    pub period: u64,
    /// The accessor of the parent token; `None` for an orphan.
    pub parent_accessor: Option<String>,
    /// The identity it is issued to.
    pub entity: Option<String>,
    /// The creating path.
    pub path: String,
    /// Addresses allowed to use it.
    pub bound_cidrs: Vec<Cidr>,
}

impl TokenRequest {
    /// A request for a token with `policies`, created at `path`, renewable, with the default
    /// TTL and no parent.
    #[must_use]
    pub fn new(policies: Vec<String>, path: &str) -> Self {
        Self {
            policies,
            path: path.to_owned(),
            renewable: true,
            display_name: "token".to_owned(),
            ..Self::default()
        }
    }
}

/// The outcome of a renewal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Renewal {
    /// The entry after renewal.
    pub entry: TokenEntry,
    /// Set when the TTL asked for was cut by a maximum.
    pub capped: bool,
}

/// Tokens behind a barrier. Holds no key itself: the hashing key is read through the barrier at
/// each call, so sealing the barrier locks the token store too.
#[derive(Debug, Clone)]
pub struct TokenStore {
    barrier: Arc<Barrier>,
}

fn mac_hex(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn entry_path(id: &str) -> String {
    format!("{TOKEN_ID_PREFIX}{id}")
}

fn expiry_path(expire: u64, id: &str) -> String {
    format!("{EXPIRY_PREFIX}{expire:020}/{id}")
}

/// `k = HKDF-SHA256(secret, TOKEN_HASH_INFO)` from the stored token-hashing secret.
fn derive_hash_key(secret: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, AuthError> {
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
    Hkdf::<Sha256>::new(None, secret)
        .expand(TOKEN_HASH_INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(key)
}

impl TokenStore {
    /// A token store over `barrier`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self { barrier }
    }

    /// The token-hashing key `k`, creating its secret on first use. The derivation runs once
    /// per cached secret record, not once per request (see [`Barrier::get_decoded`]).
    async fn hash_key(&self, create: bool) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, AuthError> {
        let derived = loop {
            if let Some(derived) = self
                .barrier
                .get_decoded(TOKEN_KEY_PATH, derive_hash_key)
                .await?
            {
                break derived;
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
        Ok(Some(Zeroizing::new(***derived.value())))
    }

    async fn key(&self) -> Result<Zeroizing<[u8; KEY_LEN]>, AuthError> {
        self.hash_key(true).await?.ok_or(AuthError::CorruptEntry)
    }

    /// The hex HMAC of `value` under the store's hashing key, separated by `purpose`: how
    /// AppRole keeps role ids and secret ids, and how accessors are indexed.
    ///
    /// # Errors
    /// [`AuthError::Sealed`] or a storage failure.
    pub async fn keyed_hash(&self, purpose: &str, value: &str) -> Result<String, AuthError> {
        let key = self.key().await?;
        Ok(mac_hex(
            &key,
            &[purpose.as_bytes(), b"\0", value.as_bytes()],
        ))
    }

    fn accessor_path(key: &[u8; KEY_LEN], accessor: &str) -> String {
        format!(
            "{ACCESSOR_PREFIX}{}",
            mac_hex(key, &[b"accessor\0", accessor.as_bytes()])
        )
    }

    /// Loads the entry with `id`, checking that it names itself. The parsed entry is shared
    /// with other readers of the same stored bytes (see [`Barrier::get_decoded`]); the
    /// record's bytes are there for a compare-and-swap.
    async fn load(&self, id: &str) -> Result<Option<Decoded<StoredEntry>>, AuthError> {
        let path = entry_path(id);
        self.barrier
            .get_decoded(&path, |bytes| {
                let mut stored: StoredEntry = serde_json::from_slice(bytes).map_err(|_| {
                    tracing::warn!(path, "token entry does not parse");
                    AuthError::CorruptEntry
                })?;
                if stored.v == 1 && stored.id.is_empty() {
                    // Version 1 (root tokens only) did not repeat the id.
                    stored.id = id.to_owned();
                } else if stored.v != ENTRY_VERSION {
                    tracing::warn!(
                        path,
                        version = stored.v,
                        "token entry of an unknown version"
                    );
                    return Err(AuthError::CorruptEntry);
                }
                if !bool::from(stored.id.as_bytes().ct_eq(id.as_bytes())) {
                    tracing::warn!(path, "token entry names another token");
                    return Err(AuthError::CorruptEntry);
                }
                Ok(stored)
            })
            .await
    }

    /// The id of `token`, or `None` when no token was ever created.
    async fn id_of(&self, token: &str) -> Result<Option<String>, AuthError> {
        Ok(self
            .hash_key(false)
            .await?
            .map(|key| mac_hex(&key, &[token.as_bytes()])))
    }

    async fn id_of_accessor(&self, accessor: &str) -> Result<Option<String>, AuthError> {
        let Some(key) = self.hash_key(false).await? else {
            return Ok(None);
        };
        let Some(plain) = self
            .barrier
            .get(&Self::accessor_path(&key, accessor))
            .await?
        else {
            return Ok(None);
        };
        Ok(std::str::from_utf8(plain.expose_secret())
            .ok()
            .map(str::to_owned))
    }

    /// Loads a live entry: an expired one is revoked on the spot and reads as absent.
    async fn live(&self, id: &str, now: u64) -> Result<Option<Decoded<StoredEntry>>, AuthError> {
        let Some(loaded) = self.load(id).await? else {
            return Ok(None);
        };
        if loaded.expire_time.is_some_and(|e| e <= now) {
            self.revoke_id(id, false).await?;
            return Ok(None);
        }
        Ok(Some(loaded))
    }

    /// Stores a new entry for `token` with its indexes, in one atomic batch.
    async fn insert(
        &self,
        key: &[u8; KEY_LEN],
        token: &str,
        mut stored: StoredEntry,
        extra: Option<(&str, &[u8])>,
    ) -> Result<TokenEntry, AuthError> {
        let id = mac_hex(key, &[token.as_bytes()]);
        stored.id.clone_from(&id);
        let bytes = stored.encode();
        let entry = entry_path(&id);
        let accessor = Self::accessor_path(key, &stored.accessor);
        let expiry = stored.expire_time.map(|e| expiry_path(e, &id));
        let parent = stored
            .parent
            .as_ref()
            .map(|p| format!("{PARENT_PREFIX}{p}/{id}"));
        let mut ops = vec![
            BarrierOp::Put(&entry, &bytes),
            BarrierOp::Put(&accessor, id.as_bytes()),
        ];
        if let Some(expiry) = &expiry {
            ops.push(BarrierOp::Put(expiry, b""));
        }
        if let Some(parent) = &parent {
            ops.push(BarrierOp::Put(parent, b""));
        }
        if let Some((path, value)) = extra {
            ops.push(BarrierOp::Put(path, value));
        }
        self.barrier.batch(&ops).await?;
        stored.to_entry()
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
                TokenSecret(Zeroizing::new(fixed.to_owned()))
            }
            None => TokenSecret::generate()?,
        };
        let key = self.key().await?;
        // A fixed token may already exist: replace it, children and all.
        let id = mac_hex(&key, &[token.expose_secret().as_bytes()]);
        if self.load(&id).await?.is_some() {
            self.revoke_id(&id, false).await?;
        }
        let stored = StoredEntry {
            v: ENTRY_VERSION,
            id: String::new(),
            accessor: random_base62(ACCESSOR_LEN)?.to_string(),
            policies: vec!["root".to_owned()],
            created: now_secs(),
            display_name: "root".to_owned(),
            creation_ttl: 0,
            expire_time: None,
            explicit_max_ttl: 0,
            num_uses: 0,
            renewable: false,
            period: 0,
            parent: None,
            meta: BTreeMap::new(),
            entity: None,
            path: "auth/token/root".to_owned(),
            bound_cidrs: Vec::new(),
            wrapping: false,
            last_renewal: None,
            wrapped_accessor: None,
        };
        let entry = self
            .insert(&key, token.expose_secret(), stored, None)
            .await?;
        tracing::info!(accessor = %entry.accessor, "root token created");
        Ok(token)
    }

    /// Creates a token as `request` says, with the caller-chosen text `fixed` if given.
    ///
    /// # Errors
    /// [`AuthError::Sealed`]; [`AuthError::InvalidToken`] for a bad or already used `fixed`;
    /// [`AuthError::InvalidRequest`] when the parent is gone; a storage failure.
    pub async fn create(
        &self,
        request: &TokenRequest,
        fixed: Option<&str>,
    ) -> Result<(TokenSecret, TokenEntry), AuthError> {
        self.create_at(request, fixed, now_secs()).await
    }

    async fn create_at(
        &self,
        request: &TokenRequest,
        fixed: Option<&str>,
        now: u64,
    ) -> Result<(TokenSecret, TokenEntry), AuthError> {
        let token = match fixed {
            Some(fixed) => {
                check_fixed_token(fixed)?;
                TokenSecret(Zeroizing::new(fixed.to_owned()))
            }
            None => TokenSecret::generate()?,
        };
        let key = self.key().await?;
        if fixed.is_some() {
            let id = mac_hex(&key, &[token.expose_secret().as_bytes()]);
            if self.load(&id).await?.is_some() {
                return Err(AuthError::InvalidToken(
                    "a token with this ID already exists",
                ));
            }
        }
        let parent = match &request.parent_accessor {
            Some(accessor) => {
                let id = self.id_of_accessor(accessor).await?;
                let live = match &id {
                    Some(id) => self.live(id, now).await?.is_some(),
                    None => false,
                };
                if !live {
                    return Err(AuthError::InvalidRequest(
                        "the parent token is no longer valid".to_owned(),
                    ));
                }
                id
            }
            None => None,
        };
        let is_root = request.policies.iter().any(|p| p == "root");
        let mut ttl = match request.ttl {
            Some(ttl) if ttl > 0 => ttl,
            _ if request.period > 0 => request.period,
            _ if is_root => 0,
            _ => DEFAULT_TTL_SECS,
        };
        if request.explicit_max_ttl > 0 && (ttl == 0 || ttl > request.explicit_max_ttl) {
            ttl = request.explicit_max_ttl;
        }
        if request.period == 0 && !is_root && ttl > MAX_TTL_SECS {
            ttl = MAX_TTL_SECS;
        }
        let stored = StoredEntry {
            v: ENTRY_VERSION,
            id: String::new(),
            accessor: random_base62(ACCESSOR_LEN)?.to_string(),
            policies: request.policies.clone(),
            created: now,
            display_name: request.display_name.clone(),
            creation_ttl: ttl,
            expire_time: (ttl > 0).then(|| now + ttl),
            explicit_max_ttl: request.explicit_max_ttl,
            num_uses: request.num_uses,
            // A token that never expires has nothing to renew.
            renewable: request.renewable && ttl > 0,
            period: request.period,
            parent,
            meta: request.meta.clone(),
            entity: request.entity.clone(),
            path: request.path.clone(),
            bound_cidrs: request.bound_cidrs.iter().map(Cidr::to_string).collect(),
            wrapping: false,
            last_renewal: None,
            wrapped_accessor: None,
        };
        let entry = self
            .insert(&key, token.expose_secret(), stored, None)
            .await?;
        tracing::debug!(accessor = %entry.accessor, "token created");
        Ok((token, entry))
    }

    /// Creates a wrapping token that holds `response` (bytes the caller will get back from
    /// [`TokenStore::unwrap`]) for `ttl` seconds. `creation_path` is the path whose response
    /// it wraps; `wrapped_accessor` the accessor of a wrapped token, if the response is one.
    ///
    /// # Errors
    /// [`AuthError::Sealed`], [`AuthError::InvalidRequest`] for a zero TTL, or a storage
    /// failure.
    pub async fn create_wrapping(
        &self,
        ttl: u64,
        creation_path: &str,
        response: &[u8],
        wrapped_accessor: Option<String>,
    ) -> Result<(TokenSecret, TokenEntry), AuthError> {
        self.create_wrapping_at(ttl, creation_path, response, wrapped_accessor, now_secs())
            .await
    }

    async fn create_wrapping_at(
        &self,
        ttl: u64,
        creation_path: &str,
        response: &[u8],
        wrapped_accessor: Option<String>,
        now: u64,
    ) -> Result<(TokenSecret, TokenEntry), AuthError> {
        if ttl == 0 {
            return Err(AuthError::InvalidRequest(
                "a wrapping TTL must be at least one second".to_owned(),
            ));
        }
        let token = TokenSecret::generate()?;
        let key = self.key().await?;
        let id = mac_hex(&key, &[token.expose_secret().as_bytes()]);
        let stored = StoredEntry {
            v: ENTRY_VERSION,
            id: String::new(),
            accessor: random_base62(ACCESSOR_LEN)?.to_string(),
            policies: vec![WRAPPING_POLICY.to_owned()],
            created: now,
            display_name: String::new(),
            creation_ttl: ttl,
            expire_time: Some(now + ttl),
            explicit_max_ttl: 0,
            num_uses: 1,
            renewable: false,
            period: 0,
            parent: None,
            meta: BTreeMap::new(),
            entity: None,
            path: creation_path.to_owned(),
            bound_cidrs: Vec::new(),
            wrapping: true,
            last_renewal: None,
            wrapped_accessor,
        };
        let wrapped = format!("{WRAPPED_PREFIX}{id}");
        let entry = self
            .insert(
                &key,
                token.expose_secret(),
                stored,
                Some((&wrapped, response)),
            )
            .await?;
        Ok((token, entry))
    }

    /// The entry of `token`, or `None` when no such token exists (or it has expired).
    ///
    /// # Errors
    /// [`AuthError::Sealed`], [`AuthError::CorruptEntry`], or a storage failure.
    pub async fn lookup(&self, token: &str) -> Result<Option<TokenEntry>, AuthError> {
        self.lookup_at(token, now_secs()).await
    }

    async fn lookup_at(&self, token: &str, now: u64) -> Result<Option<TokenEntry>, AuthError> {
        let Some(id) = self.id_of(token).await? else {
            return Ok(None);
        };
        self.live(&id, now)
            .await?
            .map(|loaded| loaded.to_entry())
            .transpose()
    }

    /// The entry whose accessor is `accessor`, or `None`.
    ///
    /// # Errors
    /// As [`TokenStore::lookup`].
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Option<TokenEntry>, AuthError> {
        let Some(id) = self.id_of_accessor(accessor).await? else {
            return Ok(None);
        };
        self.live(&id, now_secs())
            .await?
            .map(|loaded| loaded.to_entry())
            .transpose()
    }

    /// Looks `token` up and counts one use of it. A token on its last use is revoked (its
    /// entry removed first, atomically, so two requests racing for the last use cannot both
    /// have it) and its entry returned with no uses left. Wrapping tokens are not used this
    /// way: they read as absent.
    ///
    /// # Errors
    /// As [`TokenStore::lookup`].
    pub async fn use_token(&self, token: &str) -> Result<Option<TokenEntry>, AuthError> {
        self.use_token_at(token, now_secs()).await
    }

    async fn use_token_at(&self, token: &str, now: u64) -> Result<Option<TokenEntry>, AuthError> {
        let Some(id) = self.id_of(token).await? else {
            return Ok(None);
        };
        loop {
            let Some(loaded) = self.live(&id, now).await? else {
                return Ok(None);
            };
            if loaded.wrapping {
                return Ok(None);
            }
            if loaded.num_uses == 0 {
                return loaded.to_entry().map(Some);
            }
            let plain = loaded.record().plaintext();
            let mut stored = StoredEntry::clone(&loaded);
            stored.num_uses -= 1;
            let path = entry_path(&id);
            if stored.num_uses == 0 {
                // The last use: take the entry away, then clean up after it.
                if self
                    .barrier
                    .compare_and_swap(&path, Some(plain.expose_secret()), None)
                    .await?
                {
                    self.remove_tree(&stored, false).await?;
                    return stored.to_entry().map(Some);
                }
            } else if self
                .barrier
                .compare_and_swap(&path, Some(plain.expose_secret()), Some(&stored.encode()))
                .await?
            {
                return stored.to_entry().map(Some);
            }
            // Another request used the token meanwhile: count again.
        }
    }

    /// Renews `token` by `increment` seconds (0: by its creation TTL, or its period).
    ///
    /// # Errors
    /// [`AuthError::NotFound`], [`AuthError::NotRenewable`], or a storage failure.
    pub async fn renew(&self, token: &str, increment: u64) -> Result<Renewal, AuthError> {
        let id = self.id_of(token).await?.ok_or(AuthError::NotFound)?;
        self.renew_id(&id, increment, now_secs()).await
    }

    /// As [`TokenStore::renew`], naming the token by accessor.
    ///
    /// # Errors
    /// As [`TokenStore::renew`].
    pub async fn renew_accessor(
        &self,
        accessor: &str,
        increment: u64,
    ) -> Result<Renewal, AuthError> {
        let id = self
            .id_of_accessor(accessor)
            .await?
            .ok_or(AuthError::NotFound)?;
        self.renew_id(&id, increment, now_secs()).await
    }

    async fn renew_id(&self, id: &str, increment: u64, now: u64) -> Result<Renewal, AuthError> {
        loop {
            let Some(loaded) = self.live(id, now).await? else {
                return Err(AuthError::NotFound);
            };
            let plain = loaded.record().plaintext();
            let mut stored = StoredEntry::clone(&loaded);
            if !stored.renewable || stored.wrapping {
                return Err(AuthError::NotRenewable);
            }
            let Some(old_expire) = stored.expire_time else {
                return Err(AuthError::NotRenewable);
            };
            let wanted = if stored.period > 0 {
                stored.period
            } else if increment > 0 {
                increment
            } else {
                stored.creation_ttl
            };
            let mut expire = now + wanted;
            let mut capped = false;
            let mut limit = if stored.period > 0 {
                u64::MAX
            } else {
                stored.created + MAX_TTL_SECS
            };
            if stored.explicit_max_ttl > 0 {
                limit = limit.min(stored.created + stored.explicit_max_ttl);
            }
            if expire > limit {
                expire = limit;
                capped = true;
            }
            stored.expire_time = Some(expire);
            stored.last_renewal = Some(now);
            let path = entry_path(id);
            let bytes = stored.encode();
            let old_index = expiry_path(old_expire, id);
            let new_index = expiry_path(expire, id);
            // The entry first, by compare-and-swap so a concurrent use or revocation wins;
            // then the index. A crash between the two leaves an index record that tidy
            // finds early and skips (the entry says the token lives on) or late, when the
            // entry's own expiry is still honoured at every lookup.
            if self
                .barrier
                .compare_and_swap(&path, Some(plain.expose_secret()), Some(&bytes))
                .await?
            {
                if old_index != new_index {
                    self.barrier
                        .batch(&[
                            BarrierOp::Put(&new_index, b""),
                            BarrierOp::Delete(&old_index),
                        ])
                        .await?;
                }
                return Ok(Renewal {
                    entry: stored.to_entry()?,
                    capped,
                });
            }
        }
    }

    /// Revokes `token` and every token created from it. Returns whether it existed.
    ///
    /// # Errors
    /// [`AuthError::Sealed`] or a storage failure.
    pub async fn revoke(&self, token: &str) -> Result<bool, AuthError> {
        let Some(id) = self.id_of(token).await? else {
            return Ok(false);
        };
        self.revoke_id(&id, false).await
    }

    /// Revokes `token` only: its children become orphans.
    ///
    /// # Errors
    /// As [`TokenStore::revoke`].
    pub async fn revoke_orphan(&self, token: &str) -> Result<bool, AuthError> {
        let Some(id) = self.id_of(token).await? else {
            return Ok(false);
        };
        self.revoke_id(&id, true).await
    }

    /// Revokes the token with `accessor` and its children. Returns whether it existed.
    ///
    /// # Errors
    /// As [`TokenStore::revoke`].
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<bool, AuthError> {
        let Some(id) = self.id_of_accessor(accessor).await? else {
            return Ok(false);
        };
        self.revoke_id(&id, false).await
    }

    async fn revoke_id(&self, id: &str, orphan_children: bool) -> Result<bool, AuthError> {
        let Some(stored) = self.load(id).await? else {
            return Ok(false);
        };
        self.barrier.delete(&entry_path(id)).await?;
        self.remove_tree(&stored, orphan_children).await?;
        Ok(true)
    }

    /// With `root`'s entry already gone: removes its indexes and wrapped response, and
    /// revokes (or orphans) its descendants, depth first without recursion.
    async fn remove_tree(
        &self,
        root: &StoredEntry,
        orphan_children: bool,
    ) -> Result<(), AuthError> {
        let key = self.key().await?;
        let mut pending = vec![root.clone()];
        let mut first = true;
        while let Some(entry) = pending.pop() {
            let children_prefix = format!("{PARENT_PREFIX}{}/", entry.id);
            let children = self.barrier.list(&children_prefix).await?;
            for link in &children {
                let Some(child_id) = link.strip_prefix(&children_prefix) else {
                    continue;
                };
                let Some(loaded) = self.load(child_id).await? else {
                    self.barrier.delete(link).await?;
                    continue;
                };
                let plain = loaded.record().plaintext();
                let mut child = StoredEntry::clone(&loaded);
                if first && orphan_children {
                    child.parent = None;
                    let path = entry_path(child_id);
                    // Lost races (a concurrent use) are retried once by rereading; a child
                    // revoked meanwhile needs nothing.
                    if !self
                        .barrier
                        .compare_and_swap(&path, Some(plain.expose_secret()), Some(&child.encode()))
                        .await?
                        && let Some(reloaded) = self.load(child_id).await?
                    {
                        let plain = reloaded.record().plaintext();
                        let mut again = StoredEntry::clone(&reloaded);
                        again.parent = None;
                        self.barrier
                            .compare_and_swap(
                                &path,
                                Some(plain.expose_secret()),
                                Some(&again.encode()),
                            )
                            .await?;
                    }
                    self.barrier.delete(link).await?;
                } else {
                    self.barrier.delete(&entry_path(child_id)).await?;
                    pending.push(child);
                }
            }
            let accessor = Self::accessor_path(&key, &entry.accessor);
            let wrapped = format!("{WRAPPED_PREFIX}{}", entry.id);
            let entry_record = entry_path(&entry.id);
            let expiry = entry.expire_time.map(|e| expiry_path(e, &entry.id));
            let parent = entry
                .parent
                .as_ref()
                .map(|p| format!("{PARENT_PREFIX}{p}/{}", entry.id));
            let mut ops = vec![
                BarrierOp::Delete(&entry_record),
                BarrierOp::Delete(&accessor),
                BarrierOp::Delete(&wrapped),
            ];
            if let Some(expiry) = &expiry {
                ops.push(BarrierOp::Delete(expiry));
            }
            if let Some(parent) = &parent {
                ops.push(BarrierOp::Delete(parent));
            }
            self.barrier.batch(&ops).await?;
            first = false;
        }
        Ok(())
    }

    /// Takes the response a wrapping token holds, once: the token is revoked as it is read, so
    /// a second unwrap finds nothing. `None` when the token is unknown, expired, already
    /// used, or not a wrapping token.
    ///
    /// # Errors
    /// As [`TokenStore::lookup`].
    pub async fn unwrap(&self, token: &str) -> Result<Option<Plaintext>, AuthError> {
        self.unwrap_at(token, now_secs()).await
    }

    async fn unwrap_at(&self, token: &str, now: u64) -> Result<Option<Plaintext>, AuthError> {
        let Some(id) = self.id_of(token).await? else {
            return Ok(None);
        };
        let Some(stored) = self.live(&id, now).await? else {
            return Ok(None);
        };
        let plain = stored.record().plaintext();
        if !stored.wrapping {
            return Ok(None);
        }
        // Whoever removes the entry owns the response.
        if !self
            .barrier
            .compare_and_swap(&entry_path(&id), Some(plain.expose_secret()), None)
            .await?
        {
            return Ok(None);
        }
        let response = self.barrier.get(&format!("{WRAPPED_PREFIX}{id}")).await?;
        self.remove_tree(&stored, false).await?;
        Ok(response)
    }

    /// Revokes every token whose expiry is at or before `now`, reading the expiry index from
    /// its start and stopping at the first later record. Returns how many were revoked.
    ///
    /// # Errors
    /// [`AuthError::Sealed`] or a storage failure.
    pub async fn tidy(&self, now: u64) -> Result<usize, AuthError> {
        let mut revoked = 0;
        loop {
            // Each pass re-reads the index from its start: what was revoked is gone from it.
            let page = self.barrier.list_page(EXPIRY_PREFIX, None, 128).await?;
            let mut progressed = false;
            for key in &page.keys {
                let Some((secs, id)) = key
                    .strip_prefix(EXPIRY_PREFIX)
                    .and_then(|rest| rest.split_once('/'))
                else {
                    self.barrier.delete(key).await?;
                    continue;
                };
                let Ok(secs) = secs.parse::<u64>() else {
                    self.barrier.delete(key).await?;
                    continue;
                };
                if secs > now {
                    return Ok(revoked);
                }
                match self.load(id).await? {
                    Some(stored) if stored.expire_time.is_some_and(|e| e <= now) => {
                        self.revoke_id(id, false).await?;
                        revoked += 1;
                    }
                    _ => {}
                }
                // A stale record (renewed or revoked token) or one just handled.
                self.barrier.delete(key).await?;
                progressed = true;
            }
            if page.next.is_none() || !progressed {
                return Ok(revoked);
            }
        }
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

    fn request(policies: &[&str]) -> TokenRequest {
        TokenRequest::new(
            policies.iter().map(|s| (*s).to_owned()).collect(),
            "auth/token/create",
        )
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
        assert!(entry.expire_time.is_none() && !entry.renewable && entry.orphan);
        assert!(tokens.lookup("arca.nope").await.unwrap().is_none());
        // Stored only as a keyed hash: the token text appears in no path and no raw record.
        let paths = barrier.list(TOKEN_ID_PREFIX).await.unwrap();
        assert_eq!(paths.len(), 1);
        assert!(!paths[0].contains(&text[5..]));
        assert_eq!(paths[0].len(), TOKEN_ID_PREFIX.len() + 64);
        for path in barrier.list("sys/token/").await.unwrap() {
            assert!(!path.contains(&entry.accessor), "{path}");
            let raw = barrier.backend().get(&path).await.unwrap().unwrap();
            assert!(!raw.windows(8).any(|w| w == &text.as_bytes()[5..13]));
        }
        assert!(tokens.revoke(text).await.unwrap());
        assert!(!tokens.revoke(text).await.unwrap());
        assert!(tokens.lookup(text).await.unwrap().is_none());
        // Only the hashing secret remains.
        assert_eq!(barrier.list("sys/token/").await.unwrap(), [TOKEN_KEY_PATH]);
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
    }

    #[tokio::test]
    async fn fixed_tokens_are_checked_and_sealed_store_refuses() {
        let (barrier, tokens) = store().await;
        let token = tokens.create_root_token(Some("dev-root")).await.unwrap();
        assert_eq!(token.expose_secret(), "dev-root");
        assert!(tokens.lookup("dev-root").await.unwrap().is_some());
        // Recreating a fixed root token replaces it.
        tokens.create_root_token(Some("dev-root")).await.unwrap();
        assert_eq!(barrier.list(TOKEN_ID_PREFIX).await.unwrap().len(), 1);
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

    #[tokio::test]
    async fn ttl_expiry_and_tidy_use_the_index() {
        let (barrier, tokens) = store().await;
        let now = 1_800_000_000;
        let mut short = request(&["a"]);
        short.ttl = Some(10);
        let (t1, e1) = tokens.create_at(&short, None, now).await.unwrap();
        assert_eq!(e1.expire_time, Some(now + 10));
        assert_eq!(e1.ttl_at(now + 4), 6);
        let mut long = request(&["a"]);
        long.ttl = Some(1000);
        let (t2, _) = tokens.create_at(&long, None, now).await.unwrap();
        assert!(
            tokens
                .lookup_at(t1.expose_secret(), now + 9)
                .await
                .unwrap()
                .is_some()
        );
        // Expired: reads as absent and is revoked on the spot.
        assert!(
            tokens
                .lookup_at(t1.expose_secret(), now + 10)
                .await
                .unwrap()
                .is_none()
        );
        assert!(tokens.load(&e1.id).await.unwrap().is_none());
        // Tidy revokes what expired and stops at the first later record.
        let (t3, _) = tokens.create_at(&short, None, now).await.unwrap();
        assert_eq!(tokens.tidy(now + 5).await.unwrap(), 0);
        assert_eq!(tokens.tidy(now + 11).await.unwrap(), 1);
        assert!(
            tokens
                .lookup_at(t3.expose_secret(), now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            tokens
                .lookup_at(t2.expose_secret(), now + 11)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(barrier.list(EXPIRY_PREFIX).await.unwrap().len(), 1);
        // A root-policy token without a TTL never expires.
        let (_, root) = tokens
            .create_at(&request(&["root"]), None, now)
            .await
            .unwrap();
        assert!(root.expire_time.is_none() && !root.renewable);
        // The default TTL and the explicit maximum.
        let (_, d) = tokens.create_at(&request(&["a"]), None, now).await.unwrap();
        assert_eq!(d.creation_ttl, DEFAULT_TTL_SECS);
        let mut capped = request(&["a"]);
        capped.ttl = Some(100);
        capped.explicit_max_ttl = 50;
        let (_, c) = tokens.create_at(&capped, None, now).await.unwrap();
        assert_eq!(c.creation_ttl, 50);
    }

    #[tokio::test]
    async fn num_uses_count_down_and_the_last_use_revokes() {
        let (_, tokens) = store().await;
        let mut req = request(&["a"]);
        req.num_uses = 2;
        let (token, _) = tokens.create(&req, None).await.unwrap();
        let t = token.expose_secret();
        assert_eq!(tokens.lookup(t).await.unwrap().unwrap().num_uses, 2);
        assert_eq!(tokens.use_token(t).await.unwrap().unwrap().num_uses, 1);
        assert_eq!(tokens.use_token(t).await.unwrap().unwrap().num_uses, 0);
        assert!(tokens.use_token(t).await.unwrap().is_none());
        assert!(tokens.lookup(t).await.unwrap().is_none());
        // Unlimited tokens are not written at each use.
        let (token, _) = tokens.create(&request(&["a"]), None).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                tokens
                    .use_token(token.expose_secret())
                    .await
                    .unwrap()
                    .unwrap()
                    .num_uses,
                0
            );
        }
    }

    #[tokio::test]
    async fn renewal_moves_expiry_within_the_maximum() {
        let (barrier, tokens) = store().await;
        let now = 1_800_000_000;
        let mut req = request(&["a"]);
        req.ttl = Some(60);
        req.explicit_max_ttl = 300;
        let (token, entry) = tokens.create_at(&req, None, now).await.unwrap();
        // A creation or renewal answer reports the TTL granted, whenever it is written.
        assert_eq!(entry.issued_at(), now);
        assert_eq!(entry.ttl_at(entry.issued_at()), 60);
        let renewed = tokens.renew_id(&entry.id, 120, now + 30).await.unwrap();
        assert_eq!(renewed.entry.expire_time, Some(now + 150));
        assert_eq!(renewed.entry.issued_at(), now + 30);
        assert_eq!(renewed.entry.ttl_at(renewed.entry.issued_at()), 120);
        assert!(!renewed.capped);
        let renewed = tokens.renew_id(&entry.id, 1000, now + 40).await.unwrap();
        assert_eq!(renewed.entry.expire_time, Some(now + 300));
        assert!(renewed.capped);
        // Increment 0 renews by the creation TTL.
        let renewed = tokens.renew_id(&entry.id, 0, now + 100).await.unwrap();
        assert_eq!(renewed.entry.expire_time, Some(now + 160));
        // The index follows: one record, at the new time.
        let index = barrier.list(EXPIRY_PREFIX).await.unwrap();
        assert_eq!(index, [expiry_path(now + 160, &entry.id)]);
        let mut fixed = request(&["a"]);
        fixed.renewable = false;
        let (other, _) = tokens.create(&fixed, None).await.unwrap();
        assert!(matches!(
            tokens.renew(other.expose_secret(), 10).await,
            Err(AuthError::NotRenewable)
        ));
        assert!(matches!(
            tokens.renew("arca.unknown", 10).await,
            Err(AuthError::NotFound)
        ));
        drop(token);
    }

    #[tokio::test]
    async fn revocation_takes_children_unless_orphaned() {
        let (barrier, tokens) = store().await;
        let (parent, pe) = tokens.create(&request(&["a"]), None).await.unwrap();
        let mut child_req = request(&["a"]);
        child_req.parent_accessor = Some(pe.accessor.clone());
        let (child, ce) = tokens.create(&child_req, None).await.unwrap();
        assert!(!ce.orphan);
        let mut grandchild_req = request(&["a"]);
        grandchild_req.parent_accessor = Some(ce.accessor.clone());
        let (grandchild, _) = tokens.create(&grandchild_req, None).await.unwrap();
        assert!(tokens.revoke(parent.expose_secret()).await.unwrap());
        for t in [&parent, &child, &grandchild] {
            assert!(tokens.lookup(t.expose_secret()).await.unwrap().is_none());
        }
        let (parent, pe) = tokens.create(&request(&["a"]), None).await.unwrap();
        let mut child_req = request(&["a"]);
        child_req.parent_accessor = Some(pe.accessor.clone());
        let (child, _) = tokens.create(&child_req, None).await.unwrap();
        assert!(tokens.revoke_orphan(parent.expose_secret()).await.unwrap());
        let orphan = tokens.lookup(child.expose_secret()).await.unwrap().unwrap();
        assert!(orphan.orphan);
        assert!(
            tokens
                .lookup_accessor(&orphan.accessor)
                .await
                .unwrap()
                .is_some()
        );
        assert!(tokens.revoke_accessor(&orphan.accessor).await.unwrap());
        assert!(
            tokens
                .lookup(child.expose_secret())
                .await
                .unwrap()
                .is_none()
        );
        // Everything is cleaned up: no entry, no index record left behind.
        let left: Vec<String> = barrier
            .list("sys/token/")
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p != TOKEN_KEY_PATH)
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A child of a revoked parent cannot be created.
        let mut orphaned_req = request(&["a"]);
        orphaned_req.parent_accessor = Some(pe.accessor);
        assert!(matches!(
            tokens.create(&orphaned_req, None).await,
            Err(AuthError::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn wrapping_tokens_unwrap_once_and_expire() {
        let (barrier, tokens) = store().await;
        let now = now_secs();
        let (wrap, entry) = tokens
            .create_wrapping_at(60, "auth/token/lookup-self", b"{\"data\":1}", None, now)
            .await
            .unwrap();
        assert_eq!(entry.kind, TokenKind::Wrapping);
        // Not usable as an ordinary token.
        assert!(
            tokens
                .use_token(wrap.expose_secret())
                .await
                .unwrap()
                .is_none()
        );
        let body = tokens.unwrap(wrap.expose_secret()).await.unwrap().unwrap();
        assert_eq!(body.expose_secret(), b"{\"data\":1}");
        assert!(tokens.unwrap(wrap.expose_secret()).await.unwrap().is_none());
        assert!(barrier.list(WRAPPED_PREFIX).await.unwrap().is_empty());
        let (wrap, _) = tokens
            .create_wrapping_at(5, "x", b"{}", None, now - 10)
            .await
            .unwrap();
        assert!(tokens.unwrap(wrap.expose_secret()).await.unwrap().is_none());
        assert!(barrier.list(WRAPPED_PREFIX).await.unwrap().is_empty());
        // An ordinary token does not unwrap.
        let (plain, _) = tokens.create(&request(&["a"]), None).await.unwrap();
        assert!(
            tokens
                .unwrap(plain.expose_secret())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            tokens
                .lookup(plain.expose_secret())
                .await
                .unwrap()
                .is_some()
        );
    }
}
