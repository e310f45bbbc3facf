//! The seal: how the root key is protected at rest and handed to the barrier.
//!
//! arca starts sealed: the [`Barrier`] holds no key and refuses every operation. The seal
//! layer owns the ceremony that changes that, and nothing else; it knows nothing of HTTP (the
//! server maps [`SealError`] to status codes).
//!
//! # Key hierarchy
//!
//! ```text
//! unseal key (256 bit)  ← T of N Shamir shares | Argon2id(passphrase, salt) | key wrapper
//!   └ root key (256 bit), sealed under the unseal key in the seal record (`_barrier/seal`)
//!       └ the barrier's keyring, and through it every record
//! ```
//!
//! The root key is generated once at init and never leaves memory unsealed except into the
//! barrier. The unseal key only protects it, so changing how the store is unsealed (a rekey,
//! a new passphrase, a new key file) re-seals one 32-byte key and touches no record, and
//! rotating the root key ([`Seal::rotate_root_key`]) re-seals only the keyring.
//!
//! # Why this shape
//!
//! - **No wrong key, ever.** Shamir shares are not authenticated: any T shares with distinct
//!   identifiers combine to *some* 32 bytes. The root key is therefore sealed with
//!   XChaCha20-Poly1305, and a combined key counts as right only when it opens it. A wrong or
//!   corrupted share, or shares from another store, fail as [`SealError::InvalidShares`] and
//!   reset the progress; they can never unseal with garbage.
//! - **Configuration authenticated, not trusted.** N, T, the kind, the Argon2id parameters
//!   and salt, and the key id must be readable while sealed (for `sys/seal-status` and to
//!   derive the key), so they are stored in clear, but they are the associated data of the
//!   sealed root key: an edit makes unsealing fail. The byte layout is specified in
//!   `src/seal/config.rs`.
//! - **Shares are shown once.** Init and rekey return the shares (hex and base64) and keep
//!   no copy. Submitted shares live only in the in-memory progress of one attempt, wiped on
//!   drop, and are discarded as soon as they have been combined.
//! - **Kinds behind one API.** [`SealConfig`] picks Shamir, passphrase, a key file or a KMS
//!   key (both auto-unseal through the [`KeyWrapper`] trait; the KMS one through
//!   [`KeyProviderWrapper`] over any [`KeyProvider`], usually another arca's KMS API).
//!   With auto-unseal, init returns Shamir *recovery* keys: a separate random key whose shares
//!   authorise a rekey, checked against a stored AEAD tag, and which cannot unseal anything.
//! - **Crash safety.** Each change is one compare-and-swap of the seal record, except
//!   init, which is marked pending until its last write (a crash leaves an uninitialised
//!   store, not one whose shares nobody has), and root-key rotation, which also rewrites the
//!   keyring and therefore keeps the old root key in a "previous" slot until the keyring has
//!   moved (see `config.rs`).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use arca::seal::{InitRequest, Seal, SealConfig};
//! use arca::storage::{Barrier, MemoryBackend};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), arca::seal::SealError> {
//! let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
//! let seal = Seal::open(barrier, SealConfig::Shamir).await?;
//! let init = seal
//!     .initialize(InitRequest { secret_shares: 3, secret_threshold: 2, ..Default::default() })
//!     .await?;
//! assert!(seal.status().await?.sealed);
//! seal.submit_share(&init.keys[0].hex).await?;
//! let status = seal.submit_share(&init.keys[2].base64).await?;
//! assert!(!status.sealed);
//! assert!(seal.tokens().lookup(init.root_token.expose_secret()).await?.is_some());
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod keyfile;
mod keys;
mod passphrase;
mod shamir;

use std::path::PathBuf;
use std::sync::Arc;

use arca_storage::keys::{RandomError, fill_random};
use arca_storage::{Barrier, BarrierError, Batch, RootKey};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use self::config::{
    MAX_KEY_ID_LEN, ResealError, SEAL_PATH, SealRecord, Slot, StoredConfig, StoredKind,
    recovery_check, verify_recovery,
};
pub use self::error::SealError;
pub use self::keyfile::{KeyFileWrapper, KeyWrapper};
use self::keys::UnsealKey;
pub use self::passphrase::{KdfParams, MAX_PASSPHRASE_LEN, MIN_PASSPHRASE_LEN, Passphrase};
pub use self::shamir::ShareText;
use self::shamir::{Share, check_parameters, combine, split};
use crate::auth::{TokenSecret, TokenStore};
use crate::kms::{KeyProvider, KeyProviderWrapper};

/// Present while an init is under way: `SHA-256` of the seal record it belongs to. An init
/// whose marker is still there after a crash never returned its shares, so the store counts
/// as uninitialised and the next init removes its leftovers. Tying the marker to the record's
/// hash keeps a stray or damaged marker from ever making a real store look uninitialised.
const INIT_PENDING_PATH: &str = "_barrier/seal-init-pending";

/// Recovery shares and threshold used for auto-unseal when init asks for none (0/0), as the
/// `bao operator init` defaults.
const DEFAULT_RECOVERY: (u8, u8) = (5, 3);

/// How a store is sealed, as stored and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKind {
    /// T of N Shamir shares of the unseal key.
    Shamir,
    /// Argon2id of a passphrase.
    Passphrase,
    /// The unseal key wrapped by a key file (auto-unseal).
    KeyFile,
    /// The unseal key encrypted by a KMS key of another arca or of AWS KMS (auto-unseal).
    Kms,
}

impl SealKind {
    /// A short lower-case name (`"shamir"`, `"passphrase"`, `"keyfile"`, `"awskms"`), for
    /// `sys/seal-status`'s `type` and logs.
    ///
    /// The KMS seal (configured as `kind = "kms"`) reports `"awskms"`, the type Vault and
    /// OpenBao report for their AWS KMS auto-unseal: it speaks the same API, and clients that
    /// know Vault's seal types show it as the auto-unseal it is.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shamir => "shamir",
            Self::Passphrase => "passphrase",
            Self::KeyFile => "keyfile",
            Self::Kms => "awskms",
        }
    }

    /// Whether the store unseals itself (key file, KMS); init then returns recovery keys.
    #[must_use]
    pub fn is_auto_unseal(self) -> bool {
        matches!(self, Self::KeyFile | Self::Kms)
    }
}

/// How the server is configured to seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealConfig {
    /// Shamir shares, submitted one at a time.
    Shamir,
    /// A passphrase, supplied at unseal time.
    Passphrase,
    /// Auto-unseal with a key file. `path` is the current key (created at init if missing);
    /// `previous`, when set, is the key being rotated away from.
    KeyFile {
        /// The current key file.
        path: PathBuf,
        /// The previous key file, tried when the stored key id is not the current one.
        previous: Option<PathBuf>,
    },
    /// Auto-unseal with a KMS key (see [`KmsSealConfig`]).
    Kms(KmsSealConfig),
}

/// The KMS seal: which key, through which provider.
///
/// The provider is usually a [`RemoteKms`](crate::kms::RemoteKms) (another arca's KMS API, or
/// AWS KMS); any [`KeyProvider`] works. Init resolves `key_id` (an id, ARN or alias) to the
/// key's ARN and records the ARN; unsealing decrypts with the recorded ARN, whatever the
/// configured `key_id` says by then, and [`Seal::rewrap`] moves the unseal key to the
/// configured key when it names another one.
#[derive(Clone)]
pub struct KmsSealConfig {
    provider: Arc<dyn KeyProvider>,
    key_id: String,
}

impl KmsSealConfig {
    /// The key `key_id` of `provider`.
    #[must_use]
    pub fn new(provider: Arc<dyn KeyProvider>, key_id: impl Into<String>) -> Self {
        Self {
            provider,
            key_id: key_id.into(),
        }
    }

    /// The configured key id (id, ARN or alias).
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl std::fmt::Debug for KmsSealConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSealConfig")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Two KMS seal configurations are equal when they name the same key of the same provider
/// instance.
impl PartialEq for KmsSealConfig {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id && Arc::ptr_eq(&self.provider, &other.provider)
    }
}

impl Eq for KmsSealConfig {}

impl SealConfig {
    /// The kind this configuration seals with.
    #[must_use]
    pub fn kind(&self) -> SealKind {
        match self {
            Self::Shamir => SealKind::Shamir,
            Self::Passphrase => SealKind::Passphrase,
            Self::KeyFile { .. } => SealKind::KeyFile,
            Self::Kms(_) => SealKind::Kms,
        }
    }
}

/// The parameters of [`Seal::initialize`], as `sys/init` takes them.
#[derive(Debug, Default)]
pub struct InitRequest {
    /// N of the unseal shares (Shamir only; ignored by the other kinds).
    pub secret_shares: u8,
    /// T of the unseal shares (Shamir only; ignored by the other kinds).
    pub secret_threshold: u8,
    /// N of the recovery shares (key file only; 0 with a 0 threshold means the default 5/3;
    /// must be 0 for Shamir and passphrase).
    pub recovery_shares: u8,
    /// T of the recovery shares (same rules).
    pub recovery_threshold: u8,
    /// The passphrase (passphrase seal only, required there, refused elsewhere).
    pub passphrase: Option<Passphrase>,
    /// A fixed root token instead of a random one (development mode).
    pub root_token: Option<String>,
}

/// What [`Seal::initialize`] returns, once.
#[derive(Debug)]
pub struct InitResult {
    /// The unseal shares (Shamir; empty otherwise).
    pub keys: Vec<ShareText>,
    /// The recovery shares (key file; empty otherwise).
    pub recovery_keys: Vec<ShareText>,
    /// The initial root token.
    pub root_token: TokenSecret,
}

/// What `sys/seal-status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    /// Whether the store has been initialised.
    pub initialized: bool,
    /// Whether the store is sealed.
    pub sealed: bool,
    /// The seal kind.
    pub kind: SealKind,
    /// T: unseal threshold (Shamir), 1 (passphrase), recovery threshold (key file); 0 before
    /// init.
    pub threshold: u8,
    /// N, with the same meaning.
    pub shares: u8,
    /// Shares submitted so far in this unseal attempt.
    pub progress: u8,
    /// The current unseal attempt's nonce; empty when no attempt is under way.
    pub nonce: String,
    /// Whether the shares are recovery shares (auto-unseal).
    pub recovery_seal: bool,
}

/// What `sys/rekey/init` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyStatus {
    /// The rekey's nonce; empty when none is started.
    pub nonce: String,
    /// Whether a rekey is in progress.
    pub started: bool,
    /// The new threshold.
    pub threshold: u8,
    /// The new number of shares.
    pub shares: u8,
    /// T of the current shares: how many must be submitted to authorise the rekey.
    pub required: u8,
    /// Current shares submitted so far.
    pub progress: u8,
    /// Whether the new shares must be verified before they replace the current ones.
    pub verification_required: bool,
    /// The nonce of the verification under way, once the new shares have been issued.
    pub verification_nonce: Option<String>,
}

/// The outcome of [`Seal::rekey_update`].
#[derive(Debug)]
pub enum RekeyUpdate {
    /// More current shares are needed.
    Progress(RekeyStatus),
    /// The rekey's shares are issued. Without verification they are in force already; with
    /// verification they take over only after [`Seal::rekey_verify_update`] has received T of
    /// them.
    Complete {
        /// The rekey's nonce.
        nonce: String,
        /// The new shares, returned once.
        keys: Vec<ShareText>,
        /// Whether verification is required.
        verification_required: bool,
        /// The verification nonce, when required.
        verification_nonce: Option<String>,
    },
}

/// What `sys/rekey/verify` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyVerifyStatus {
    /// The verification nonce; empty when no verification is pending.
    pub nonce: String,
    /// Whether a verification is pending.
    pub started: bool,
    /// T of the new shares.
    pub threshold: u8,
    /// N of the new shares.
    pub shares: u8,
    /// New shares submitted so far.
    pub progress: u8,
}

/// The outcome of [`Seal::rekey_verify_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RekeyVerifyUpdate {
    /// More new shares are needed.
    Progress(RekeyVerifyStatus),
    /// The new shares are verified and in force; the old ones no longer work.
    Complete {
        /// The verification nonce.
        nonce: String,
    },
}

/// The shares of one attempt (unseal, rekey, verification), wiped on drop.
#[derive(Debug, Default)]
struct Progress {
    nonce: String,
    shares: Vec<Share>,
}

impl Progress {
    fn new() -> Result<Self, RandomError> {
        Ok(Self {
            nonce: new_nonce()?,
            shares: Vec::new(),
        })
    }

    /// Adds a share unless one with the same identifier is already in.
    fn add(&mut self, share: Share) -> Result<(), SealError> {
        if self
            .shares
            .iter()
            .any(|s| s.identifier() == share.identifier())
        {
            return Err(SealError::DuplicateShare);
        }
        self.shares.push(share);
        Ok(())
    }

    fn count(&self) -> u8 {
        u8::try_from(self.shares.len()).unwrap_or(u8::MAX)
    }
}

struct PendingVerification {
    /// The new key the issued shares split.
    key: UnsealKey,
    progress: Progress,
}

struct Rekey {
    nonce: String,
    shares: u8,
    threshold: u8,
    require_verification: bool,
    progress: Vec<Share>,
    pending: Option<PendingVerification>,
}

/// In-memory state, behind one lock so that seal operations are serialised.
#[derive(Default)]
struct State {
    /// The unseal attempt under way.
    unseal: Option<Progress>,
    /// The unseal key, held while unsealed (for rekey and root-key rotation); dropped at seal.
    unseal_key: Option<UnsealKey>,
    /// The rekey under way.
    rekey: Option<Rekey>,
}

/// The raw and decoded seal record, for compare-and-swap updates.
struct Loaded {
    raw: Vec<u8>,
    record: SealRecord,
}

/// The seal of one store. See the module documentation.
pub struct Seal {
    barrier: Arc<Barrier>,
    config: SealConfig,
    kdf: KdfParams,
    tokens: TokenStore,
    state: Mutex<State>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("config", &self.config)
            .field("kdf", &self.kdf)
            .field("barrier", &self.barrier)
            .finish_non_exhaustive()
    }
}

fn init_marker(record: &[u8]) -> Vec<u8> {
    Sha256::digest(record).to_vec()
}

/// A random UUID-v4-shaped nonce naming one attempt.
pub(crate) fn new_nonce() -> Result<String, RandomError> {
    let mut b = [0u8; 16];
    fill_random(&mut b)?;
    Ok(crate::kms::blob::format_uuid_v4(b))
}

fn reseal_error(err: ResealError) -> SealError {
    match err {
        ResealError::Open => {
            tracing::error!("the held unseal key no longer opens the seal record");
            SealError::CorruptSealRecord
        }
        ResealError::Random(e) => SealError::Random(e),
    }
}

fn check_passphrase_len(passphrase: &[u8]) -> Result<(), SealError> {
    if passphrase.len() < MIN_PASSPHRASE_LEN || passphrase.len() > MAX_PASSPHRASE_LEN {
        return Err(SealError::InvalidParameters(format!(
            "a passphrase is {MIN_PASSPHRASE_LEN} to {MAX_PASSPHRASE_LEN} bytes long"
        )));
    }
    Ok(())
}

fn check_key_id(key_id: &str) -> Result<(), SealError> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err(SealError::InvalidParameters(format!(
            "a key id is 1 to {MAX_KEY_ID_LEN} bytes"
        )));
    }
    Ok(())
}

impl Seal {
    /// The seal of the store behind `barrier`, configured with `config`.
    ///
    /// Reads nothing secret. When the store is initialised, checks that it was initialised
    /// with the configured kind.
    ///
    /// # Errors
    /// [`SealError::WrongSealKind`] when the store was initialised with another kind; a
    /// storage failure.
    pub async fn open(barrier: Arc<Barrier>, config: SealConfig) -> Result<Self, SealError> {
        let seal = Self {
            tokens: TokenStore::new(Arc::clone(&barrier)),
            barrier,
            config,
            kdf: KdfParams::default(),
            state: Mutex::new(State::default()),
        };
        if seal.is_initialized().await? {
            match seal.load_record().await {
                Ok(loaded) => {
                    let stored = loaded.record.config.seal_kind();
                    if stored != seal.config.kind() {
                        tracing::error!(
                            stored = stored.as_str(),
                            configured = seal.config.kind().as_str(),
                            "the store was initialised with another seal kind"
                        );
                        return Err(SealError::WrongSealKind);
                    }
                }
                // Reported by status and refused at unseal; the server can still start.
                Err(SealError::CorruptSealRecord) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(seal)
    }

    /// Sets the Argon2id parameters used when a passphrase seal is initialised (or its
    /// passphrase changed). Parameters built with [`KdfParams::insecure_for_tests`] also let
    /// this seal unseal a store whose record carries parameters below the minimum.
    #[must_use]
    pub fn with_kdf_params(mut self, params: KdfParams) -> Self {
        self.kdf = params;
        self
    }

    /// The barrier this seal unseals.
    #[must_use]
    pub fn barrier(&self) -> &Arc<Barrier> {
        &self.barrier
    }

    /// The configuration this seal was opened with.
    #[must_use]
    pub fn config(&self) -> &SealConfig {
        &self.config
    }

    /// The token store (usable while unsealed).
    #[must_use]
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    async fn load_record(&self) -> Result<Loaded, SealError> {
        let Some(raw) = self.barrier.backend().get(SEAL_PATH).await? else {
            tracing::error!(
                path = SEAL_PATH,
                "the store is initialised but has no seal record"
            );
            return Err(SealError::CorruptSealRecord);
        };
        let record = SealRecord::decode(&raw).map_err(|_| {
            tracing::error!(path = SEAL_PATH, "the seal record does not parse");
            SealError::CorruptSealRecord
        })?;
        Ok(Loaded { raw, record })
    }

    /// The seal record of an initialised store.
    async fn load(&self) -> Result<Loaded, SealError> {
        if !self.is_initialized().await? {
            return Err(SealError::NotInitialized);
        }
        self.load_record().await
    }

    /// Replaces the seal record if it is still `expected`; returns the bytes written.
    async fn store(&self, expected: &[u8], next: &SealRecord) -> Result<Vec<u8>, SealError> {
        let bytes = next.encode();
        if !self
            .barrier
            .backend()
            .compare_and_swap(SEAL_PATH, Some(expected), Some(bytes.clone()))
            .await?
        {
            return Err(SealError::Conflict);
        }
        Ok(bytes)
    }

    /// Drops key state that a seal of the barrier (by anyone) has made stale.
    fn sync(&self, st: &mut State) {
        if self.barrier.is_sealed() {
            st.unseal_key = None;
            st.rekey = None;
        }
    }

    async fn status_locked(&self, st: &State) -> Result<SealStatus, SealError> {
        let kind = self.config.kind();
        let recovery_seal = kind.is_auto_unseal();
        if !self.is_initialized().await? {
            return Ok(SealStatus {
                initialized: false,
                sealed: true,
                kind,
                threshold: 0,
                shares: 0,
                progress: 0,
                nonce: String::new(),
                recovery_seal,
            });
        }
        let (threshold, shares) = match self.load_record().await {
            Ok(loaded) => (loaded.record.config.threshold, loaded.record.config.shares),
            Err(SealError::CorruptSealRecord) => (0, 0),
            Err(e) => return Err(e),
        };
        let sealed = self.barrier.is_sealed();
        let (progress, nonce) = match (&st.unseal, sealed) {
            (Some(attempt), true) => (attempt.count(), attempt.nonce.clone()),
            _ => (0, String::new()),
        };
        Ok(SealStatus {
            initialized: true,
            sealed,
            kind,
            threshold,
            shares,
            progress,
            nonce,
            recovery_seal,
        })
    }

    /// The seal status (`sys/seal-status`).
    ///
    /// # Errors
    /// A storage failure.
    pub async fn status(&self) -> Result<SealStatus, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        self.status_locked(&st).await
    }

    /// Initialises the store: generates the root key and the unseal key, writes the seal
    /// record and the keyring, creates the root token, and returns the shares and the token.
    ///
    /// Shamir and passphrase seals leave the store sealed; a key-file seal leaves it unsealed
    /// (auto-unseal). Creates the key file if it does not exist.
    ///
    /// All or nothing: if a step after the first write fails, what was written is removed
    /// again (best effort), so init can be retried; the shares of a failed init are never
    /// returned and never usable.
    ///
    /// # Errors
    /// [`SealError::AlreadyInitialized`]; [`SealError::InvalidParameters`] for share counts
    /// outside 1 ≤ T ≤ N ≤ 255 (T = 1 only when N = 1), recovery counts with a kind other than
    /// auto-unseal, a missing, misplaced, short or long passphrase, weak KDF parameters, or a
    /// malformed fixed root token; [`SealError::KeyFile`]; a storage failure.
    pub async fn initialize(&self, req: InitRequest) -> Result<InitResult, SealError> {
        let mut st = self.state.lock().await;
        if self.is_initialized().await? {
            return Err(SealError::AlreadyInitialized);
        }
        if self.init_pending().await? {
            tracing::warn!("removing the leftovers of an init that did not finish");
            self.wipe_failed_init().await?;
        }
        if let Some(fixed) = req.root_token.as_deref() {
            crate::auth::token::check_fixed_token(fixed)
                .map_err(|e| SealError::InvalidParameters(e.to_string()))?;
        }
        let root = RootKey::generate()?;
        let unseal_key;
        let config;
        let mut wrapped = None;
        let mut check = None;
        let mut keys = Vec::new();
        let mut recovery_keys = Vec::new();
        match &self.config {
            SealConfig::Shamir => {
                check_parameters(req.secret_shares, req.secret_threshold, "secret")?;
                if req.recovery_shares != 0 || req.recovery_threshold != 0 {
                    return Err(SealError::InvalidParameters(
                        "recovery shares apply only to auto-unseal".into(),
                    ));
                }
                if req.passphrase.is_some() {
                    return Err(SealError::InvalidParameters(
                        "a passphrase applies only to a passphrase seal".into(),
                    ));
                }
                unseal_key = UnsealKey::generate()?;
                keys = split(&unseal_key, req.secret_shares, req.secret_threshold)?
                    .iter()
                    .map(Share::to_text)
                    .collect();
                config = StoredConfig {
                    kind: StoredKind::Shamir,
                    shares: req.secret_shares,
                    threshold: req.secret_threshold,
                };
            }
            SealConfig::Passphrase => {
                let passphrase = req.passphrase.as_ref().ok_or_else(|| {
                    SealError::InvalidParameters("a passphrase seal needs a passphrase".into())
                })?;
                if req.recovery_shares != 0 || req.recovery_threshold != 0 {
                    return Err(SealError::InvalidParameters(
                        "recovery shares apply only to auto-unseal".into(),
                    ));
                }
                check_passphrase_len(passphrase.expose_secret())?;
                self.kdf.check(self.kdf.is_insecure())?;
                let mut salt = [0u8; passphrase::SALT_LEN];
                fill_random(&mut salt)?;
                unseal_key =
                    passphrase::derive_blocking(passphrase.expose_secret(), salt, self.kdf).await?;
                config = StoredConfig {
                    kind: StoredKind::Passphrase {
                        params: KdfParams::from_stored(
                            self.kdf.m_cost_kib(),
                            self.kdf.t_cost(),
                            self.kdf.p_cost(),
                        ),
                        salt,
                    },
                    shares: 1,
                    threshold: 1,
                };
            }
            SealConfig::KeyFile { .. } | SealConfig::Kms(_) => {
                if req.passphrase.is_some() {
                    return Err(SealError::InvalidParameters(
                        "a passphrase applies only to a passphrase seal".into(),
                    ));
                }
                let (n, t) = if req.recovery_shares == 0 && req.recovery_threshold == 0 {
                    DEFAULT_RECOVERY
                } else {
                    (req.recovery_shares, req.recovery_threshold)
                };
                check_parameters(n, t, "recovery")?;
                let wrapper: Box<dyn KeyWrapper> = match &self.config {
                    SealConfig::KeyFile { path, .. } => {
                        Box::new(KeyFileWrapper::load_or_create(path)?)
                    }
                    _ => self.current_wrapper().await?,
                };
                let key_id = wrapper.key_id();
                check_key_id(&key_id)?;
                unseal_key = UnsealKey::generate()?;
                let recovery = UnsealKey::generate()?;
                wrapped = Some(
                    wrapper
                        .wrap(unseal_key.expose_secret(), key_id.as_bytes())
                        .await?,
                );
                check = Some(recovery_check(&recovery, n, t)?);
                recovery_keys = split(&recovery, n, t)?.iter().map(Share::to_text).collect();
                config = StoredConfig {
                    kind: self.wrapped_kind(key_id),
                    shares: n,
                    threshold: t,
                };
            }
        }
        let record = SealRecord::new(config, &unseal_key, &root, wrapped, check)?.encode();
        // The seal record and the pending marker go in together; a seal record without a
        // keyring can only be left by an init that failed before its shares were returned, so
        // it is replaced.
        let mut batch = Batch::new();
        batch.put(INIT_PENDING_PATH, init_marker(&record))?;
        batch.put(SEAL_PATH, record)?;
        self.barrier.backend().batch(batch).await?;
        let root_token = match self
            .finish_init(&root, req.root_token.as_deref(), &mut st)
            .await
        {
            Ok(token) => token,
            Err(err) => {
                self.barrier.seal().await;
                *st = State::default();
                if let Err(e) = self.wipe_failed_init().await {
                    tracing::warn!(error = %e, "could not remove the leftovers of a failed init yet");
                }
                return Err(err);
            }
        };
        if self.config.kind().is_auto_unseal() {
            st.unseal_key = Some(unseal_key);
        }
        tracing::info!(kind = self.config.kind().as_str(), "store initialised");
        Ok(InitResult {
            keys,
            recovery_keys,
            root_token,
        })
    }

    /// The steps of init after the seal record: keyring, unseal, root token, seal again
    /// (except for auto-unseal), and the commit: removing the pending marker.
    async fn finish_init(
        &self,
        root: &RootKey,
        fixed_token: Option<&str>,
        st: &mut State,
    ) -> Result<TokenSecret, SealError> {
        *st = State::default();
        self.barrier.initialize(root).await?;
        self.barrier.unseal(root).await?;
        let token = self.tokens.create_root_token(fixed_token).await?;
        if !self.config.kind().is_auto_unseal() {
            self.barrier.seal().await;
        }
        self.barrier.backend().delete(INIT_PENDING_PATH).await?;
        Ok(token)
    }

    /// Whether an init started and did not finish: the pending marker is there and names the
    /// stored seal record. Its shares were never returned, so nothing it wrote is of use.
    async fn init_pending(&self) -> Result<bool, SealError> {
        let backend = self.barrier.backend();
        let Some(marker) = backend.get(INIT_PENDING_PATH).await? else {
            return Ok(false);
        };
        let Some(record) = backend.get(SEAL_PATH).await? else {
            return Ok(false);
        };
        Ok(marker == init_marker(&record))
    }

    /// Whether the store has been initialised: a keyring exists and no init is pending.
    async fn is_initialized(&self) -> Result<bool, SealError> {
        Ok(self.barrier.is_initialized().await? && !self.init_pending().await?)
    }

    /// Removes everything an unfinished init wrote, the pending marker last (the seal record
    /// is left: without a keyring it is inert, and the next init replaces it).
    async fn wipe_failed_init(&self) -> Result<(), SealError> {
        let backend = self.barrier.backend();
        for key in backend.list("").await? {
            if key != SEAL_PATH && key != INIT_PENDING_PATH {
                backend.delete(&key).await?;
            }
        }
        backend.delete(INIT_PENDING_PATH).await?;
        Ok(())
    }

    /// Unseals with `key`: opens the root key (`wrong` when it does not open) and hands it to
    /// the barrier, falling back to the previous root key after an unfinished rotation.
    async fn unseal_with_key(
        &self,
        st: &mut State,
        loaded: &Loaded,
        key: UnsealKey,
        wrong: SealError,
    ) -> Result<(), SealError> {
        let current = loaded
            .record
            .open_root(&key, Slot::Current)
            .map_err(|_| wrong)?
            .ok_or(SealError::CorruptSealRecord)?;
        match self.barrier.unseal(&current).await {
            Ok(()) => {
                if loaded.record.has_previous() {
                    self.drop_previous_root(loaded, &key, &current).await;
                }
            }
            Err(BarrierError::Integrity { .. }) if loaded.record.has_previous() => {
                let previous = loaded
                    .record
                    .open_root(&key, Slot::Previous)
                    .ok()
                    .flatten()
                    .ok_or(SealError::CorruptSealRecord)?;
                self.barrier.unseal(&previous).await?;
                tracing::warn!(
                    "unsealed with the previous root key: the last root-key rotation did not finish"
                );
                self.drop_previous_root(loaded, &key, &previous).await;
            }
            Err(e) => return Err(e.into()),
        }
        st.unseal = None;
        st.unseal_key = Some(key);
        tracing::info!("store unsealed");
        Ok(())
    }

    /// Rewrites the record with `root` as the only root key. Best effort: unsealing works
    /// either way, and the next unseal tries again.
    async fn drop_previous_root(&self, loaded: &Loaded, key: &UnsealKey, root: &RootKey) {
        let result = match loaded.record.with_roots(key, root, None) {
            Ok(next) => self.store(&loaded.raw, &next).await.map(drop),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not drop the stale root key from the seal record");
        }
    }

    /// Submits one unseal share (hex or base64). When it completes the threshold, combines
    /// the shares and unseals. Returns the status after the share.
    ///
    /// Already unsealed: the share is ignored and the status returned, as Vault does.
    ///
    /// # Errors
    /// [`SealError::NotInitialized`]; [`SealError::WrongSealKind`] unless this is a Shamir
    /// seal; [`SealError::BadShare`] (progress unchanged); [`SealError::DuplicateShare`] (not
    /// counted); [`SealError::InvalidShares`] (progress reset); a storage failure.
    pub async fn submit_share(&self, share: &str) -> Result<SealStatus, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        if !matches!(loaded.record.config.kind, StoredKind::Shamir) {
            return Err(SealError::WrongSealKind);
        }
        if !self.barrier.is_sealed() {
            return self.status_locked(&st).await;
        }
        let share = Share::parse(share)?;
        let threshold = loaded.record.config.threshold;
        let attempt = match st.unseal.take() {
            Some(attempt) => attempt,
            None => Progress::new()?,
        };
        let attempt = st.unseal.insert(attempt);
        attempt.add(share)?;
        if attempt.count() >= threshold {
            let shares = std::mem::take(&mut attempt.shares);
            st.unseal = None;
            let key = combine(&shares, threshold)?;
            drop(shares);
            self.unseal_with_key(&mut st, &loaded, key, SealError::InvalidShares)
                .await?;
        }
        self.status_locked(&st).await
    }

    /// Discards the unseal attempt under way.
    ///
    /// # Errors
    /// A storage failure (reading the status).
    pub async fn reset_progress(&self) -> Result<SealStatus, SealError> {
        let mut st = self.state.lock().await;
        st.unseal = None;
        self.sync(&mut st);
        self.status_locked(&st).await
    }

    /// Unseals a passphrase seal. A no-op when already unsealed.
    ///
    /// # Errors
    /// [`SealError::NotInitialized`]; [`SealError::WrongSealKind`];
    /// [`SealError::InvalidPassphrase`]; [`SealError::InvalidParameters`] when the stored
    /// Argon2id parameters are below the minimum (or out of bounds); a storage failure.
    pub async fn unseal_with_passphrase(&self, passphrase: &[u8]) -> Result<(), SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        let StoredKind::Passphrase { params, salt } = loaded.record.config.kind.clone() else {
            return Err(SealError::WrongSealKind);
        };
        if !self.barrier.is_sealed() {
            return Ok(());
        }
        if passphrase.is_empty() || passphrase.len() > MAX_PASSPHRASE_LEN {
            return Err(SealError::InvalidPassphrase);
        }
        params.check(self.kdf.is_insecure())?;
        let key = passphrase::derive_blocking(passphrase, salt, params).await?;
        self.unseal_with_key(&mut st, &loaded, key, SealError::InvalidPassphrase)
            .await
    }

    /// Changes the passphrase of a passphrase seal (new salt, this seal's KDF parameters).
    /// Works sealed or unsealed.
    ///
    /// # Errors
    /// [`SealError::WrongSealKind`]; [`SealError::InvalidPassphrase`] when `old` is wrong;
    /// [`SealError::InvalidParameters`] for a short or long new passphrase; a storage failure.
    pub async fn change_passphrase(&self, old: &[u8], new: &Passphrase) -> Result<(), SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        let StoredKind::Passphrase { params, salt } = loaded.record.config.kind.clone() else {
            return Err(SealError::WrongSealKind);
        };
        check_passphrase_len(new.expose_secret())?;
        self.kdf.check(self.kdf.is_insecure())?;
        params.check(self.kdf.is_insecure())?;
        let old_key = passphrase::derive_blocking(old, salt, params).await?;
        if loaded.record.open_root(&old_key, Slot::Current).is_err() {
            return Err(SealError::InvalidPassphrase);
        }
        let mut new_salt = [0u8; passphrase::SALT_LEN];
        fill_random(&mut new_salt)?;
        let new_key = passphrase::derive_blocking(new.expose_secret(), new_salt, self.kdf).await?;
        let config = StoredConfig {
            kind: StoredKind::Passphrase {
                params: KdfParams::from_stored(
                    self.kdf.m_cost_kib(),
                    self.kdf.t_cost(),
                    self.kdf.p_cost(),
                ),
                salt: new_salt,
            },
            shares: 1,
            threshold: 1,
        };
        let next = loaded
            .record
            .resealed(&old_key, &new_key, config, None, None)
            .map_err(reseal_error)?;
        self.store(&loaded.raw, &next).await?;
        if st.unseal_key.is_some() {
            st.unseal_key = Some(new_key);
        }
        tracing::info!("passphrase changed");
        Ok(())
    }

    /// The stored kind for an auto-unseal seal whose wrapping key is `key_id`.
    fn wrapped_kind(&self, key_id: String) -> StoredKind {
        match &self.config {
            SealConfig::Kms(_) => StoredKind::Kms { key_id },
            _ => StoredKind::KeyFile { key_id },
        }
    }

    /// The configured wrapper: the current key file, or the configured KMS key under its ARN
    /// (asking the provider, so this needs the KMS to be reachable).
    async fn current_wrapper(&self) -> Result<Box<dyn KeyWrapper>, SealError> {
        match &self.config {
            SealConfig::KeyFile { path, .. } => Ok(Box::new(KeyFileWrapper::load(path)?)),
            SealConfig::Kms(kms) => {
                let arn = kms
                    .provider
                    .key_arn(&kms.key_id)
                    .await
                    .map_err(SealError::KeyProvider)?;
                Ok(Box::new(KeyProviderWrapper::new(
                    Arc::clone(&kms.provider),
                    arn,
                )))
            }
            _ => Err(SealError::WrongSealKind),
        }
    }

    /// The previous key file, when configured.
    fn previous_wrapper(&self) -> Result<Option<Box<dyn KeyWrapper>>, SealError> {
        match &self.config {
            SealConfig::KeyFile {
                previous: Some(path),
                ..
            } => Ok(Some(Box::new(KeyFileWrapper::load(path)?))),
            SealConfig::KeyFile { previous: None, .. } => Ok(None),
            _ => Err(SealError::WrongSealKind),
        }
    }

    /// Unwraps the unseal key with the wrapper whose key id the record names. Returns the key
    /// and whether the previous wrapper was the one.
    async fn unwrap_unseal_key(&self, record: &SealRecord) -> Result<(UnsealKey, bool), SealError> {
        let Some(key_id) = record.config.kind.wrapped_key_id() else {
            return Err(SealError::WrongSealKind);
        };
        let key_id = key_id.to_owned();
        let wrapped = record
            .wrapped_key
            .as_deref()
            .ok_or(SealError::CorruptSealRecord)?;
        if let SealConfig::Kms(kms) = &self.config {
            // A KMS blob names its key, so Decrypt needs no lookup of the configured key: the
            // recorded ARN is the one that must open it (the wrapper checks that it did).
            let wrapper = KeyProviderWrapper::new(Arc::clone(&kms.provider), key_id.clone());
            let bytes = wrapper.unwrap(wrapped, key_id.as_bytes()).await?;
            let key = UnsealKey::from_slice(&bytes).map_err(|_| SealError::UnwrapFailed)?;
            return Ok((key, false));
        }
        let current = self.current_wrapper().await?;
        let (wrapper, used_previous) = if current.key_id() == key_id {
            (current, false)
        } else {
            match self.previous_wrapper()? {
                Some(previous) if previous.key_id() == key_id => (previous, true),
                _ => {
                    return Err(SealError::KeyIdMismatch { stored: key_id });
                }
            }
        };
        let bytes = wrapper.unwrap(wrapped, key_id.as_bytes()).await?;
        let key = UnsealKey::from_slice(&bytes).map_err(|_| SealError::UnwrapFailed)?;
        Ok((key, used_previous))
    }

    /// Unseals an auto-unseal seal: with its key file, or by a KMS `Decrypt` under the recorded
    /// key ARN. A no-op when already unsealed. When the unseal key was wrapped under the
    /// previous key file, re-wraps it under the current one.
    ///
    /// # Errors
    /// [`SealError::NotInitialized`]; [`SealError::WrongSealKind`];
    /// [`SealError::KeyFile`]; [`SealError::KeyProvider`] (the KMS is unreachable or refuses
    /// the key); [`SealError::KeyIdMismatch`]; [`SealError::UnwrapFailed`];
    /// [`SealError::CorruptSealRecord`] when the record was edited; a storage failure.
    pub async fn auto_unseal(&self) -> Result<(), SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        if !loaded.record.config.kind.is_wrapped() {
            return Err(SealError::WrongSealKind);
        }
        if !self.barrier.is_sealed() {
            return Ok(());
        }
        let (key, used_previous) = self.unwrap_unseal_key(&loaded.record).await?;
        // The key file's AEAD vouches for the unseal key, so a root key that does not open
        // means the record itself was edited.
        self.unseal_with_key(&mut st, &loaded, key, SealError::CorruptSealRecord)
            .await?;
        if used_previous {
            match self.rewrap_locked().await {
                Ok(_) => tracing::info!("unseal key re-wrapped under the current key file"),
                Err(e) => tracing::warn!(error = %e, "could not re-wrap the unseal key"),
            }
        }
        Ok(())
    }

    /// Re-wraps the unseal key under the current key file when it is wrapped under the
    /// previous one, or under the configured KMS key when the recorded ARN is another key.
    /// Returns whether it did. Works sealed or unsealed.
    ///
    /// # Errors
    /// As [`Seal::auto_unseal`].
    pub async fn rewrap(&self) -> Result<bool, SealError> {
        let _st = self.state.lock().await;
        self.rewrap_locked().await
    }

    async fn rewrap_locked(&self) -> Result<bool, SealError> {
        let loaded = self.load().await?;
        let Some(key_id) = loaded.record.config.kind.wrapped_key_id() else {
            return Err(SealError::WrongSealKind);
        };
        let current = self.current_wrapper().await?;
        let new_id = current.key_id();
        if new_id == key_id {
            return Ok(false);
        }
        check_key_id(&new_id)?;
        let (key, _) = self.unwrap_unseal_key(&loaded.record).await?;
        let wrapped = current.wrap(key.expose_secret(), new_id.as_bytes()).await?;
        let config = StoredConfig {
            kind: self.wrapped_kind(new_id),
            ..loaded.record.config.clone()
        };
        let next = loaded
            .record
            .resealed(
                &key,
                &key,
                config,
                Some(wrapped),
                loaded.record.recovery_check.clone(),
            )
            .map_err(|_| SealError::CorruptSealRecord)?;
        self.store(&loaded.raw, &next).await?;
        Ok(true)
    }

    /// Seals: drops every key from memory and clears unseal and rekey progress.
    ///
    /// # Errors
    /// None today; kept fallible for seals that must notify a remote key service.
    pub async fn seal(&self) -> Result<(), SealError> {
        let mut st = self.state.lock().await;
        self.barrier.seal().await;
        *st = State::default();
        tracing::info!("store sealed");
        Ok(())
    }

    fn rekey_status_of(rekey: Option<&Rekey>, required: u8) -> RekeyStatus {
        match rekey {
            None => RekeyStatus {
                nonce: String::new(),
                started: false,
                threshold: 0,
                shares: 0,
                required,
                progress: 0,
                verification_required: false,
                verification_nonce: None,
            },
            Some(r) => RekeyStatus {
                nonce: r.nonce.clone(),
                started: true,
                threshold: r.threshold,
                shares: r.shares,
                required,
                progress: u8::try_from(r.progress.len()).unwrap_or(u8::MAX),
                verification_required: r.require_verification,
                verification_nonce: r.pending.as_ref().map(|p| p.progress.nonce.clone()),
            },
        }
    }

    fn verify_status_of(rekey: Option<&Rekey>) -> RekeyVerifyStatus {
        match rekey.and_then(|r| r.pending.as_ref().map(|p| (r, p))) {
            Some((r, pending)) => RekeyVerifyStatus {
                nonce: pending.progress.nonce.clone(),
                started: true,
                threshold: r.threshold,
                shares: r.shares,
                progress: pending.progress.count(),
            },
            None => RekeyVerifyStatus {
                nonce: String::new(),
                started: false,
                threshold: 0,
                shares: 0,
                progress: 0,
            },
        }
    }

    /// Starts a rekey to `shares`/`threshold` new shares (recovery shares for a key-file seal).
    /// Needs an unsealed store; authorised later by T current shares.
    ///
    /// # Errors
    /// [`SealError::Sealed`]; [`SealError::NotInitialized`]; [`SealError::WrongSealKind`] for a
    /// passphrase seal (use [`Seal::change_passphrase`]); [`SealError::RekeyInProgress`];
    /// [`SealError::InvalidParameters`].
    pub async fn rekey_init(
        &self,
        shares: u8,
        threshold: u8,
        require_verification: bool,
    ) -> Result<RekeyStatus, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        if self.barrier.is_sealed() {
            return Err(SealError::Sealed);
        }
        let what = match loaded.record.config.kind {
            StoredKind::Shamir => "secret",
            StoredKind::KeyFile { .. } | StoredKind::Kms { .. } => "recovery",
            StoredKind::Passphrase { .. } => return Err(SealError::WrongSealKind),
        };
        if st.rekey.is_some() {
            return Err(SealError::RekeyInProgress);
        }
        check_parameters(shares, threshold, what)?;
        st.rekey = Some(Rekey {
            nonce: new_nonce()?,
            shares,
            threshold,
            require_verification,
            progress: Vec::new(),
            pending: None,
        });
        tracing::info!(shares, threshold, require_verification, "rekey started");
        Ok(Self::rekey_status_of(
            st.rekey.as_ref(),
            loaded.record.config.threshold,
        ))
    }

    /// The rekey under way, if any.
    ///
    /// # Errors
    /// [`SealError::NotInitialized`]; a storage failure.
    pub async fn rekey_status(&self) -> Result<RekeyStatus, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        Ok(Self::rekey_status_of(
            st.rekey.as_ref(),
            loaded.record.config.threshold,
        ))
    }

    /// Submits one *current* share (unseal share, or recovery share for a key-file seal) to
    /// the rekey named by `nonce`. When T current shares open the sealed root key (or the
    /// recovery check), new shares are generated and returned: in force at once, or after
    /// verification when it was required.
    ///
    /// # Errors
    /// [`SealError::Sealed`]; [`SealError::RekeyNotStarted`]; [`SealError::RekeyNonceMismatch`];
    /// [`SealError::VerificationPending`] once the new shares are issued;
    /// [`SealError::BadShare`]; [`SealError::DuplicateShare`]; [`SealError::InvalidShares`]
    /// (progress reset); a storage failure.
    pub async fn rekey_update(&self, share: &str, nonce: &str) -> Result<RekeyUpdate, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        if self.barrier.is_sealed() {
            return Err(SealError::Sealed);
        }
        let loaded = self.load().await?;
        let required = loaded.record.config.threshold;
        let rekey = st.rekey.as_mut().ok_or(SealError::RekeyNotStarted)?;
        if nonce != rekey.nonce {
            return Err(SealError::RekeyNonceMismatch);
        }
        if rekey.pending.is_some() {
            return Err(SealError::VerificationPending);
        }
        let share = Share::parse(share)?;
        if rekey
            .progress
            .iter()
            .any(|s| s.identifier() == share.identifier())
        {
            return Err(SealError::DuplicateShare);
        }
        rekey.progress.push(share);
        if rekey.progress.len() < usize::from(required) {
            return Ok(RekeyUpdate::Progress(Self::rekey_status_of(
                Some(&*rekey),
                required,
            )));
        }
        let shares = std::mem::take(&mut rekey.progress);
        let candidate = combine(&shares, required)?;
        drop(shares);
        let authorised = match &loaded.record.config.kind {
            StoredKind::Shamir => loaded.record.open_root(&candidate, Slot::Current).is_ok(),
            StoredKind::KeyFile { .. } | StoredKind::Kms { .. } => loaded
                .record
                .recovery_check
                .as_deref()
                .is_some_and(|check| verify_recovery(&candidate, &loaded.record.config, check)),
            StoredKind::Passphrase { .. } => return Err(SealError::WrongSealKind),
        };
        drop(candidate);
        if !authorised {
            return Err(SealError::InvalidShares);
        }
        let new_key = UnsealKey::generate()?;
        let keys: Vec<ShareText> = split(&new_key, rekey.shares, rekey.threshold)?
            .iter()
            .map(Share::to_text)
            .collect();
        let nonce = rekey.nonce.clone();
        if rekey.require_verification {
            let progress = Progress::new()?;
            let verification_nonce = progress.nonce.clone();
            rekey.pending = Some(PendingVerification {
                key: new_key,
                progress,
            });
            tracing::info!("rekey shares issued; awaiting verification");
            return Ok(RekeyUpdate::Complete {
                nonce,
                keys,
                verification_required: true,
                verification_nonce: Some(verification_nonce),
            });
        }
        let (n, t) = (rekey.shares, rekey.threshold);
        self.commit_rekey(&mut st, &loaded, new_key, n, t).await?;
        st.rekey = None;
        Ok(RekeyUpdate::Complete {
            nonce,
            keys,
            verification_required: false,
            verification_nonce: None,
        })
    }

    /// Puts `new_key` (a new unseal key, or a new recovery key for a key-file seal) in force
    /// with N/T = `shares`/`threshold`.
    async fn commit_rekey(
        &self,
        st: &mut State,
        loaded: &Loaded,
        new_key: UnsealKey,
        shares: u8,
        threshold: u8,
    ) -> Result<(), SealError> {
        let held = st.unseal_key.clone().ok_or(SealError::Sealed)?;
        let config = StoredConfig {
            kind: loaded.record.config.kind.clone(),
            shares,
            threshold,
        };
        match &loaded.record.config.kind {
            StoredKind::Shamir => {
                let next = loaded
                    .record
                    .resealed(&held, &new_key, config, None, None)
                    .map_err(reseal_error)?;
                self.store(&loaded.raw, &next).await?;
                st.unseal_key = Some(new_key);
            }
            StoredKind::KeyFile { .. } | StoredKind::Kms { .. } => {
                let check = recovery_check(&new_key, shares, threshold)?;
                let next = loaded
                    .record
                    .resealed(
                        &held,
                        &held,
                        config,
                        loaded.record.wrapped_key.clone(),
                        Some(check),
                    )
                    .map_err(reseal_error)?;
                self.store(&loaded.raw, &next).await?;
            }
            StoredKind::Passphrase { .. } => return Err(SealError::WrongSealKind),
        }
        tracing::info!(
            shares,
            threshold,
            "rekey complete; the old shares no longer work"
        );
        Ok(())
    }

    /// The verification under way, if any.
    ///
    /// # Errors
    /// None today; kept fallible like the other status calls.
    pub async fn rekey_verify_status(&self) -> Result<RekeyVerifyStatus, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        Ok(Self::verify_status_of(st.rekey.as_ref()))
    }

    /// Submits one *new* share to the verification named by `nonce`. When T new shares
    /// recombine the new key, it is put in force.
    ///
    /// # Errors
    /// [`SealError::Sealed`]; [`SealError::RekeyNotStarted`];
    /// [`SealError::NoVerificationPending`]; [`SealError::RekeyNonceMismatch`];
    /// [`SealError::BadShare`]; [`SealError::DuplicateShare`]; [`SealError::InvalidShares`]
    /// (verification progress reset; the new shares stay pending); a storage failure.
    pub async fn rekey_verify_update(
        &self,
        share: &str,
        nonce: &str,
    ) -> Result<RekeyVerifyUpdate, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        if self.barrier.is_sealed() {
            return Err(SealError::Sealed);
        }
        let loaded = self.load().await?;
        let rekey = st.rekey.as_mut().ok_or(SealError::RekeyNotStarted)?;
        let (n, t) = (rekey.shares, rekey.threshold);
        let pending = rekey
            .pending
            .as_mut()
            .ok_or(SealError::NoVerificationPending)?;
        if nonce != pending.progress.nonce {
            return Err(SealError::RekeyNonceMismatch);
        }
        let share = Share::parse(share)?;
        pending.progress.add(share)?;
        if pending.progress.count() < t {
            return Ok(RekeyVerifyUpdate::Progress(Self::verify_status_of(
                st.rekey.as_ref(),
            )));
        }
        let shares = std::mem::take(&mut pending.progress.shares);
        let candidate = combine(&shares, t)?;
        drop(shares);
        if candidate != pending.key {
            return Err(SealError::InvalidShares);
        }
        let verification_nonce = pending.progress.nonce.clone();
        let new_key = pending.key.clone();
        self.commit_rekey(&mut st, &loaded, new_key, n, t).await?;
        st.rekey = None;
        Ok(RekeyVerifyUpdate::Complete {
            nonce: verification_nonce,
        })
    }

    /// Restarts the verification: clears its progress and gives it a new nonce. The new
    /// shares stay pending.
    ///
    /// # Errors
    /// [`SealError::RekeyNotStarted`]; [`SealError::NoVerificationPending`].
    pub async fn rekey_verify_cancel(&self) -> Result<RekeyVerifyStatus, SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let rekey = st.rekey.as_mut().ok_or(SealError::RekeyNotStarted)?;
        let pending = rekey
            .pending
            .as_mut()
            .ok_or(SealError::NoVerificationPending)?;
        pending.progress = Progress::new()?;
        Ok(Self::verify_status_of(st.rekey.as_ref()))
    }

    /// Cancels the rekey under way, discarding its progress and any pending new shares. A
    /// no-op when none is.
    ///
    /// # Errors
    /// None today; kept fallible like the other rekey calls.
    pub async fn rekey_cancel(&self) -> Result<(), SealError> {
        let mut st = self.state.lock().await;
        if st.rekey.take().is_some() {
            tracing::info!("rekey cancelled");
        }
        Ok(())
    }

    /// The stored root key the barrier holds now (the barrier compares; it never hands its key
    /// out).
    fn barrier_root(&self, record: &SealRecord, key: &UnsealKey) -> Result<RootKey, SealError> {
        for slot in [Slot::Current, Slot::Previous] {
            if let Ok(Some(root)) = record.open_root(key, slot)
                && self.barrier.holds_root_key(&root)?
            {
                return Ok(root);
            }
        }
        tracing::error!("no stored root key matches the barrier's");
        Err(SealError::CorruptSealRecord)
    }

    /// Replaces the root key with a new random one: the keyring is re-sealed under it and it
    /// is sealed under the same unseal key. Shares, passphrase and key file stay valid.
    ///
    /// Crash-safe: the seal record holds the old root key in its previous slot until the
    /// keyring has moved, and unsealing falls back to it.
    ///
    /// # Errors
    /// [`SealError::Sealed`]; [`SealError::CorruptSealRecord`]; a storage failure (then the
    /// old root key still unseals).
    pub async fn rotate_root_key(&self) -> Result<(), SealError> {
        let mut st = self.state.lock().await;
        self.sync(&mut st);
        let loaded = self.load().await?;
        let key = st.unseal_key.clone().ok_or(SealError::Sealed)?;
        let current = self.barrier_root(&loaded.record, &key)?;
        let new_root = RootKey::generate()?;
        let staged = loaded.record.with_roots(&key, &new_root, Some(&current))?;
        let staged_raw = self.store(&loaded.raw, &staged).await?;
        // If this fails, the record keeps both root keys and unsealing finds the right one.
        self.barrier.rotate_root_key(&new_root).await?;
        let done = staged.with_roots(&key, &new_root, None)?;
        if let Err(e) = self.store(&staged_raw, &done).await {
            tracing::warn!(error = %e, "root key rotated; the old one stays in the seal record until the next unseal");
        }
        tracing::info!("root key rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arca_storage::backend::faulty::FaultyBackend;
    use arca_storage::{Backend, BackendError, ListPage, MemoryBackend};

    use super::*;

    fn barrier() -> Arc<Barrier> {
        Arc::new(Barrier::new(Arc::new(MemoryBackend::new())))
    }

    async fn shamir(n: u8, t: u8) -> (Seal, InitResult) {
        let seal = Seal::open(barrier(), SealConfig::Shamir).await.unwrap();
        let init = seal
            .initialize(InitRequest {
                secret_shares: n,
                secret_threshold: t,
                ..Default::default()
            })
            .await
            .unwrap();
        (seal, init)
    }

    /// The server keeps the seal in shared state and awaits it from handlers on a
    /// multi-threaded runtime: the type and every future it returns must be `Send`.
    #[tokio::test]
    async fn seal_and_its_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<F: Send>(_: F) {}
        send_sync::<Seal>();
        send_sync::<SealError>();
        let seal = Seal::open(barrier(), SealConfig::Shamir).await.unwrap();
        send(seal.status());
        send(seal.initialize(InitRequest::default()));
        send(seal.submit_share(""));
        send(seal.reset_progress());
        send(seal.unseal_with_passphrase(b""));
        send(seal.change_passphrase(b"", &Passphrase::from("")));
        send(seal.auto_unseal());
        send(seal.rewrap());
        send(seal.seal());
        send(seal.rekey_init(1, 1, false));
        send(seal.rekey_status());
        send(seal.rekey_update("", ""));
        send(seal.rekey_verify_status());
        send(seal.rekey_verify_update("", ""));
        send(seal.rekey_verify_cancel());
        send(seal.rekey_cancel());
        send(seal.rotate_root_key());
        send(seal.tokens().lookup(""));
    }

    #[test]
    fn nonces_look_like_uuids_and_differ() {
        let a = new_nonce().unwrap();
        let b = new_nonce().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_eq!(a.matches('-').count(), 4);
    }

    #[tokio::test]
    async fn uninitialised_status_and_refusals() {
        let seal = Seal::open(barrier(), SealConfig::Shamir).await.unwrap();
        let status = seal.status().await.unwrap();
        assert!(!status.initialized && status.sealed);
        assert_eq!(
            (status.threshold, status.shares, status.progress),
            (0, 0, 0)
        );
        assert!(matches!(
            seal.submit_share(&"ab".repeat(33)).await,
            Err(SealError::NotInitialized)
        ));
        assert!(matches!(
            seal.rekey_init(3, 2, false).await,
            Err(SealError::NotInitialized)
        ));
    }

    #[tokio::test]
    async fn init_parameters_are_checked_and_nothing_is_written() {
        let seal = Seal::open(barrier(), SealConfig::Shamir).await.unwrap();
        for (n, t) in [(0, 0), (5, 1), (3, 4)] {
            let req = InitRequest {
                secret_shares: n,
                secret_threshold: t,
                ..Default::default()
            };
            assert!(matches!(
                seal.initialize(req).await,
                Err(SealError::InvalidParameters(_))
            ));
        }
        let req = InitRequest {
            secret_shares: 3,
            secret_threshold: 2,
            recovery_shares: 3,
            recovery_threshold: 2,
            ..Default::default()
        };
        assert!(matches!(
            seal.initialize(req).await,
            Err(SealError::InvalidParameters(_))
        ));
        let req = InitRequest {
            secret_shares: 3,
            secret_threshold: 2,
            root_token: Some("bad token".into()),
            ..Default::default()
        };
        assert!(matches!(
            seal.initialize(req).await,
            Err(SealError::InvalidParameters(_))
        ));
        assert!(seal.barrier().backend().list("").await.unwrap().is_empty());
        assert!(!seal.status().await.unwrap().initialized);
    }

    fn init_request() -> InitRequest {
        InitRequest {
            secret_shares: 3,
            secret_threshold: 2,
            ..Default::default()
        }
    }

    /// How many backend calls a clean Shamir init makes.
    async fn init_call_count() -> u64 {
        let faulty = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new())));
        let seal = Seal::open(Arc::new(Barrier::new(faulty.clone())), SealConfig::Shamir)
            .await
            .unwrap();
        let before = faulty.calls();
        seal.initialize(init_request()).await.unwrap();
        faulty.calls() - before
    }

    /// Unseals with two of the shares and checks the root token.
    async fn shares_work(seal: &Seal, init: &InitResult) {
        assert!(seal.status().await.unwrap().sealed);
        seal.submit_share(&init.keys[2].hex).await.unwrap();
        let status = seal.submit_share(&init.keys[0].hex).await.unwrap();
        assert!(!status.sealed);
        let token = init.root_token.expose_secret();
        assert!(seal.tokens().lookup(token).await.unwrap().is_some());
    }

    /// A storage failure at any step of init leaves a store that reports itself
    /// uninitialised and can be initialised again, whose shares then work.
    #[tokio::test]
    async fn a_failed_init_can_be_retried_whichever_step_failed() {
        let calls = init_call_count().await;
        assert!(calls >= 8, "{calls}");
        for n in 1..=calls {
            let faulty = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new())));
            let barrier = Arc::new(Barrier::new(faulty.clone()));
            let seal = Seal::open(barrier, SealConfig::Shamir).await.unwrap();
            faulty.fail_nth(n);
            let init = match seal.initialize(init_request()).await {
                Ok(init) => init,
                Err(_) => {
                    assert!(!seal.status().await.unwrap().initialized, "step {n}");
                    seal.initialize(init_request()).await.unwrap()
                }
            };
            shares_work(&seal, &init).await;
        }
    }

    /// A backend that stops answering after a number of calls, as if the process had died
    /// there: nothing after that point reaches storage.
    struct CrashAfter {
        inner: Arc<MemoryBackend>,
        left: std::sync::atomic::AtomicU64,
    }

    impl CrashAfter {
        fn tick(&self) -> Result<(), BackendError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .map(drop)
                .map_err(|_| BackendError::Closed)
        }
    }

    #[async_trait::async_trait]
    impl Backend for CrashAfter {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
            self.tick()?;
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
            self.tick()?;
            self.inner.put(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<(), BackendError> {
            self.tick()?;
            self.inner.delete(key).await
        }
        async fn list_page(
            &self,
            prefix: &str,
            start_after: Option<&str>,
            limit: usize,
        ) -> Result<ListPage, BackendError> {
            self.tick()?;
            self.inner.list_page(prefix, start_after, limit).await
        }
        async fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            new: Option<Vec<u8>>,
        ) -> Result<bool, BackendError> {
            self.tick()?;
            self.inner.compare_and_swap(key, expected, new).await
        }
        async fn batch(&self, batch: Batch) -> Result<(), BackendError> {
            self.tick()?;
            self.inner.batch(batch).await
        }
        async fn flush(&self) -> Result<(), BackendError> {
            self.tick()?;
            self.inner.flush().await
        }
    }

    /// A crash at any point of init (before it returned the shares) leaves a store that,
    /// after a restart, reports itself uninitialised and initialises cleanly.
    #[tokio::test]
    async fn a_crash_during_init_leaves_an_uninitialised_store() {
        let calls = init_call_count().await;
        for n in 0..calls {
            let inner = Arc::new(MemoryBackend::new());
            let crashing = Arc::new(CrashAfter {
                inner: Arc::clone(&inner),
                left: n.into(),
            });
            let seal = Seal::open(Arc::new(Barrier::new(crashing)), SealConfig::Shamir).await;
            // With no call left, even opening fails; that is a crash too.
            if let Ok(seal) = seal {
                assert!(seal.initialize(init_request()).await.is_err(), "step {n}");
            }
            // Restart on what reached storage.
            let seal = Seal::open(Arc::new(Barrier::new(inner)), SealConfig::Shamir)
                .await
                .unwrap();
            assert!(!seal.status().await.unwrap().initialized, "step {n}");
            let init = seal.initialize(init_request()).await.unwrap();
            shares_work(&seal, &init).await;
            assert!(
                seal.barrier()
                    .backend()
                    .get(INIT_PENDING_PATH)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[tokio::test]
    async fn single_key_unseals_and_second_init_is_refused() {
        let (seal, init) = shamir(1, 1).await;
        assert_eq!(init.keys.len(), 1);
        let status = seal.submit_share(&init.keys[0].hex).await.unwrap();
        assert!(!status.sealed);
        assert!(matches!(
            seal.initialize(InitRequest {
                secret_shares: 1,
                secret_threshold: 1,
                ..Default::default()
            })
            .await,
            Err(SealError::AlreadyInitialized)
        ));
        // Submitting while unsealed is ignored.
        let status = seal.submit_share("garbage").await.unwrap();
        assert!(!status.sealed);
    }

    #[tokio::test]
    async fn rekey_flow_errors() {
        let (seal, init) = shamir(3, 2).await;
        assert!(matches!(
            seal.rekey_init(3, 2, false).await,
            Err(SealError::Sealed)
        ));
        seal.submit_share(&init.keys[0].hex).await.unwrap();
        seal.submit_share(&init.keys[1].hex).await.unwrap();
        assert!(matches!(
            seal.rekey_update(&init.keys[0].hex, "x").await,
            Err(SealError::RekeyNotStarted)
        ));
        assert!(matches!(
            seal.rekey_init(2, 1, false).await,
            Err(SealError::InvalidParameters(_))
        ));
        let status = seal.rekey_init(2, 2, true).await.unwrap();
        assert!(status.started && status.required == 2 && status.verification_required);
        assert!(matches!(
            seal.rekey_init(2, 2, false).await,
            Err(SealError::RekeyInProgress)
        ));
        assert!(matches!(
            seal.rekey_update(&init.keys[0].hex, "wrong").await,
            Err(SealError::RekeyNonceMismatch)
        ));
        assert!(matches!(
            seal.rekey_verify_update(&init.keys[0].hex, "x").await,
            Err(SealError::NoVerificationPending)
        ));
        seal.rekey_update(&init.keys[0].hex, &status.nonce)
            .await
            .unwrap();
        assert!(matches!(
            seal.rekey_update(&init.keys[0].base64, &status.nonce).await,
            Err(SealError::DuplicateShare)
        ));
        assert!(matches!(
            seal.rekey_update("nope", &status.nonce).await,
            Err(SealError::BadShare(_))
        ));
        assert_eq!(seal.rekey_status().await.unwrap().progress, 1);
        let RekeyUpdate::Complete {
            keys,
            verification_nonce: Some(vnonce),
            ..
        } = seal
            .rekey_update(&init.keys[2].hex, &status.nonce)
            .await
            .unwrap()
        else {
            panic!("expected completion with verification");
        };
        assert!(matches!(
            seal.rekey_update(&init.keys[1].hex, &status.nonce).await,
            Err(SealError::VerificationPending)
        ));
        // A share that is not one of the new ones fails verification and resets it.
        seal.rekey_verify_update(&keys[0].hex, &vnonce)
            .await
            .unwrap();
        assert!(matches!(
            seal.rekey_verify_update(&init.keys[1].hex, &vnonce).await,
            Err(SealError::InvalidShares)
        ));
        assert_eq!(seal.rekey_verify_status().await.unwrap().progress, 0);
        let restarted = seal.rekey_verify_cancel().await.unwrap();
        assert_ne!(restarted.nonce, vnonce);
        seal.rekey_cancel().await.unwrap();
        assert!(!seal.rekey_status().await.unwrap().started);
        // Cancelled: the old shares still unseal.
        seal.seal().await.unwrap();
        seal.submit_share(&init.keys[0].hex).await.unwrap();
        assert!(!seal.submit_share(&init.keys[2].hex).await.unwrap().sealed);
    }

    #[tokio::test]
    async fn seal_kind_mismatch_is_refused_at_open() {
        let (seal, _) = shamir(3, 2).await;
        let barrier = Arc::clone(seal.barrier());
        assert!(matches!(
            Seal::open(barrier, SealConfig::Passphrase).await,
            Err(SealError::WrongSealKind)
        ));
        assert!(matches!(
            seal.unseal_with_passphrase(b"whatever").await,
            Err(SealError::WrongSealKind)
        ));
        assert!(matches!(
            seal.auto_unseal().await,
            Err(SealError::WrongSealKind)
        ));
    }

    #[tokio::test]
    async fn interrupted_root_rotation_falls_back_to_the_previous_root() {
        let (seal, init) = shamir(3, 2).await;
        seal.submit_share(&init.keys[0].hex).await.unwrap();
        seal.submit_share(&init.keys[1].hex).await.unwrap();
        seal.barrier().put("kv/a", b"1").await.unwrap();
        // Simulate a crash between the two writes of a rotation: the record names a new root
        // key in its current slot, the keyring is still under the old one.
        let backend = Arc::clone(seal.barrier().backend());
        let raw = backend.get(SEAL_PATH).await.unwrap().unwrap();
        let record = SealRecord::decode(&raw).unwrap();
        let key = {
            let st = seal.state.lock().await;
            st.unseal_key.clone().unwrap()
        };
        let old_root = record.open_root(&key, Slot::Current).unwrap().unwrap();
        let staged = record
            .with_roots(&key, &RootKey::generate().unwrap(), Some(&old_root))
            .unwrap();
        backend.put(SEAL_PATH, staged.encode()).await.unwrap();
        seal.seal().await.unwrap();
        seal.submit_share(&init.keys[2].hex).await.unwrap();
        assert!(!seal.submit_share(&init.keys[1].hex).await.unwrap().sealed);
        assert_eq!(
            seal.barrier()
                .get("kv/a")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            b"1"
        );
        // The stale slot was dropped.
        let raw = backend.get(SEAL_PATH).await.unwrap().unwrap();
        assert!(!SealRecord::decode(&raw).unwrap().has_previous());
        // And a rotation from here works.
        seal.rotate_root_key().await.unwrap();
        seal.seal().await.unwrap();
        seal.submit_share(&init.keys[0].hex).await.unwrap();
        assert!(!seal.submit_share(&init.keys[1].hex).await.unwrap().sealed);
    }
}
