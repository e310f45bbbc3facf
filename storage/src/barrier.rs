//! The barrier: the only door to storage for the rest of arca.
//!
//! Everything arca stores passes through here and is sealed with XChaCha20-Poly1305 before it
//! reaches a [`Backend`]; everything read is authenticated before it is returned. The barrier is
//! either sealed (it holds no key and refuses every operation with [`BarrierError::Sealed`]) or
//! unsealed (it holds the root key and the keyring). The seal layer above decides when to hand
//! it the root key; the barrier never stores it.
//!
//! A record that fails authentication (flipped bytes, a header edit, a record copied from
//! another path or another store, a truncated file) yields [`BarrierError::Integrity`] naming
//! the path, and nothing else: never wrong plaintext, never a panic, and every other record is
//! still served.
//!
//! Reads go through a bounded cache of opened plaintexts ([`crate::read_cache`]); every write
//! through the barrier invalidates what it touched. The cache assumes this barrier is the only
//! writer of its store, which is how arca runs (see that module for why it holds).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use crate::backend::{Backend, BackendError, Batch, BatchOp, ListPage, MAX_VALUE_LEN};
use crate::envelope::{Envelope, KEYRING_KEY_INFO, OVERHEAD, RecordCipher, SealError};
use crate::keyring::Keyring;
use crate::keys::{Plaintext, RandomError, RootKey, SubKey};
use crate::read_cache::{DEFAULT_CACHE_BYTES, ReadCache, Record};

/// Paths under this prefix belong to the barrier itself and are refused to callers.
pub const RESERVED_PREFIX: &str = "_barrier/";

/// Where the sealed keyring lives.
pub const KEYRING_PATH: &str = "_barrier/keyring";

/// The largest plaintext a record may hold: the backend's value limit less the envelope.
pub const MAX_PLAINTEXT_LEN: usize = MAX_VALUE_LEN - OVERHEAD;

/// Errors of barrier operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier is sealed: no key is in memory.
    #[error("the barrier is sealed")]
    Sealed,
    /// No keyring exists yet: the store was never initialised.
    #[error("the store is not initialized")]
    NotInitialized,
    /// A keyring already exists.
    #[error("the store is already initialized")]
    AlreadyInitialized,
    /// The record at `path` failed authentication, or is not a record this build can read.
    /// Deliberately opaque: it says where, never why.
    #[error("integrity check failed for the record at {path:?}")]
    Integrity {
        /// The logical path of the record.
        path: String,
    },
    /// The path is reserved for the barrier's own records.
    #[error("the path {path:?} is reserved")]
    ReservedPath {
        /// The refused path.
        path: String,
    },
    /// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("value of {len} bytes exceeds the limit of {MAX_PLAINTEXT_LEN} bytes")]
    ValueTooLarge {
        /// The refused length.
        len: usize,
    },
    /// The keyring changed underneath this process (another writer rotated it).
    #[error("the keyring was changed concurrently; retry")]
    KeyringConflict,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The backend failed; nothing of the operation was applied.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What [`Barrier::key_status`] reports about the active term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// The active term.
    pub term: u32,
    /// When the active term was installed.
    pub install_time: SystemTime,
    /// Encryptions under the active term: persisted at each keyring write and at seal, plus
    /// those since; a crash loses the increments since the last persist.
    pub encryptions: u64,
}

/// What one [`Barrier::rewrap`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Records looked at.
    pub scanned: u64,
    /// Records re-encrypted to the active term.
    pub rewrapped: u64,
    /// Records left as they were because a concurrent write replaced them first (the new value
    /// is already under a current term) or because they failed their integrity check.
    pub skipped: u64,
}

/// One write of a [`Barrier::batch`].
pub enum BarrierOp<'a> {
    /// Store a plaintext at a path.
    Put(&'a str, &'a [u8]),
    /// Remove a path.
    Delete(&'a str),
}

struct Unsealed {
    root: RootKey,
    keyring_cipher: RecordCipher,
    keyring: Keyring,
}

/// The encrypting layer over a [`Backend`]. See the module documentation.
pub struct Barrier {
    backend: Arc<dyn Backend>,
    state: RwLock<Option<Arc<Unsealed>>>,
    /// Serializes keyring writes (rotate, root-key rotation, seal) within this process.
    keyring_lock: Mutex<()>,
    /// Shared with the tasks that finish writes whose callers stopped waiting.
    cache: Arc<ReadCache>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("sealed", &self.is_sealed())
            .finish_non_exhaustive()
    }
}

fn check_path(path: &str) -> Result<(), BarrierError> {
    if path.starts_with(RESERVED_PREFIX) {
        return Err(BarrierError::ReservedPath {
            path: path.to_owned(),
        });
    }
    crate::backend::validate_key(path)?;
    Ok(())
}

fn check_len(plaintext: &[u8]) -> Result<(), BarrierError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(BarrierError::ValueTooLarge {
            len: plaintext.len(),
        });
    }
    Ok(())
}

fn seal_error(err: SealError, path: &str) -> BarrierError {
    match err {
        SealError::Random(e) => BarrierError::Random(e),
        SealError::PathTooLong => BarrierError::Backend(BackendError::InvalidKey {
            reason: "longer than 1024 bytes",
        }),
    }
    .log_path(path)
}

impl BarrierError {
    fn log_path(self, path: &str) -> Self {
        tracing::debug!(path, error = %self, "barrier operation failed");
        self
    }
}

impl Unsealed {
    fn seal(&self, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, BarrierError> {
        let term = self.keyring.active();
        let sealed = term
            .cipher()
            .seal(self.keyring.active_term(), path, plaintext)
            .map_err(|e| seal_error(e, path))?;
        self.keyring.record_encryption();
        Ok(sealed)
    }

    fn open(&self, path: &str, stored: &[u8]) -> Result<Plaintext, BarrierError> {
        let integrity = || {
            tracing::warn!(path, "record failed its integrity check");
            BarrierError::Integrity {
                path: path.to_owned(),
            }
        };
        let envelope = Envelope::decode(stored).map_err(|_| integrity())?;
        let term = self.keyring.term(envelope.term()).ok_or_else(integrity)?;
        term.cipher().open(&envelope, path).map_err(|_| integrity())
    }

    fn sealed_keyring(&self, keyring: &Keyring) -> Result<Vec<u8>, BarrierError> {
        self.keyring_cipher
            .seal(0, KEYRING_PATH, &keyring.encode())
            .map_err(|e| seal_error(e, KEYRING_PATH))
    }
}

/// A record read by [`Barrier::get_decoded`]: its decoded form, shared with other readers,
/// and the plaintext it was decoded from (for a compare-and-swap on it).
pub struct Decoded<T> {
    value: Arc<T>,
    record: Arc<Record>,
}

impl<T> Decoded<T> {
    /// The decoded form.
    #[must_use]
    pub fn value(&self) -> &Arc<T> {
        &self.value
    }

    /// The decoded form, without the plaintext.
    #[must_use]
    pub fn into_value(self) -> Arc<T> {
        self.value
    }

    /// The plaintext the form was decoded from.
    #[must_use]
    pub fn record(&self) -> &Arc<Record> {
        &self.record
    }
}

impl<T> std::ops::Deref for Decoded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::fmt::Debug for Decoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The decoded form may hold secrets: show only the record's shape.
        f.debug_struct("Decoded")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// A sealed barrier over `backend`, with a read cache of
    /// [`DEFAULT_CACHE_BYTES`](crate::read_cache::DEFAULT_CACHE_BYTES).
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_cache_bytes(backend, DEFAULT_CACHE_BYTES)
    }

    /// A sealed barrier over `backend` whose read cache holds at most `cache_bytes` of paths
    /// and plaintexts (0: no cache, every read goes to the backend).
    pub fn with_cache_bytes(backend: Arc<dyn Backend>, cache_bytes: usize) -> Self {
        Self {
            backend,
            state: RwLock::new(None),
            keyring_lock: Mutex::new(()),
            cache: Arc::new(ReadCache::new(cache_bytes)),
        }
    }

    /// Changes the read cache's budget (0 turns it off and empties it).
    pub fn set_cache_bytes(&self, cache_bytes: usize) {
        self.cache.resize(cache_bytes);
    }

    /// The backend underneath, for tools that inspect raw records (tests, `arca` diagnostics).
    /// Records read this way are ciphertext.
    #[must_use]
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn unsealed(&self) -> Result<Arc<Unsealed>, BarrierError> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(BarrierError::Sealed)
    }

    fn install(&self, state: Option<Arc<Unsealed>>) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// Runs a backend write and then forgets the cached state of `paths`, whether the write
    /// succeeded or not (a failed write may still have landed).
    ///
    /// Both run in a task of their own, so they finish even when the caller stops waiting (a
    /// request cancelled by its client or by the request timeout): the backend may still apply
    /// a write whose future was dropped (redb's writer thread does), and the invalidation must
    /// come after it, or a read in between would cache the old value for good.
    async fn write_through<T: Send + 'static>(
        &self,
        paths: Vec<String>,
        write: impl Future<Output = Result<T, BackendError>> + Send + 'static,
    ) -> Result<T, BackendError> {
        let cache = Arc::clone(&self.cache);
        let forget = paths.clone();
        let task = tokio::spawn(async move {
            let result = write.await;
            for path in &forget {
                cache.invalidate(path);
            }
            result
        });
        match task.await {
            Ok(result) => result,
            Err(err) => {
                // The task panicked or the runtime is shutting down: the write's fate is
                // unknown, so forget the paths here too.
                for path in &paths {
                    self.cache.invalidate(path);
                }
                if err.is_panic() {
                    std::panic::resume_unwind(err.into_panic());
                }
                Err(BackendError::Closed)
            }
        }
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_sealed(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Whether a keyring exists in the backend.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn is_initialized(&self) -> Result<bool, BarrierError> {
        Ok(self.backend.get(KEYRING_PATH).await?.is_some())
    }

    /// Creates the keyring (term 1) sealed under `root`. The barrier stays sealed.
    ///
    /// # Errors
    /// [`BarrierError::AlreadyInitialized`] when a keyring exists; a backend failure.
    pub async fn initialize(&self, root: &RootKey) -> Result<(), BarrierError> {
        let _guard = self.keyring_lock.lock().await;
        let keyring_cipher = RecordCipher::derive(root.expose_secret(), KEYRING_KEY_INFO);
        let keyring = Keyring::first()?;
        let sealed = keyring_cipher
            .seal(0, KEYRING_PATH, &keyring.encode())
            .map_err(|e| seal_error(e, KEYRING_PATH))?;
        if !self
            .backend
            .compare_and_swap(KEYRING_PATH, None, Some(sealed))
            .await?
        {
            return Err(BarrierError::AlreadyInitialized);
        }
        Ok(())
    }

    /// Loads the keyring with `root` and unseals. Unsealing an unsealed barrier replaces its
    /// state with the one loaded now.
    ///
    /// # Errors
    /// [`BarrierError::NotInitialized`]; [`BarrierError::Integrity`] on the keyring path when
    /// `root` is not the key it was sealed with or the keyring record is damaged.
    pub async fn unseal(&self, root: &RootKey) -> Result<(), BarrierError> {
        let _guard = self.keyring_lock.lock().await;
        let stored = self
            .backend
            .get(KEYRING_PATH)
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        let keyring_cipher = RecordCipher::derive(root.expose_secret(), KEYRING_KEY_INFO);
        let integrity = || BarrierError::Integrity {
            path: KEYRING_PATH.to_owned(),
        };
        let envelope = Envelope::decode(&stored).map_err(|_| integrity())?;
        if envelope.term() != 0 {
            return Err(integrity());
        }
        let plain = keyring_cipher
            .open(&envelope, KEYRING_PATH)
            .map_err(|_| integrity())?;
        let keyring = Keyring::decode(plain.expose_secret()).map_err(|_| integrity())?;
        self.cache.clear();
        self.install(Some(Arc::new(Unsealed {
            root: root.clone(),
            keyring_cipher,
            keyring,
        })));
        Ok(())
    }

    /// Drops every key from memory. The encryption count of the active term is persisted
    /// first, best effort. Operations already under way finish with the keys they hold; every
    /// later one gets [`BarrierError::Sealed`].
    pub async fn seal(&self) {
        let _guard = self.keyring_lock.lock().await;
        let state = self
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.cache.clear();
        // The keys are wiped when the last `Arc` (ours, or an in-flight operation's) drops.
        if let Some(state) = state
            && let Err(err) = self.persist_keyring(&state, &state.keyring).await
        {
            tracing::warn!(error = %err, "could not persist the keyring's encryption count");
        }
    }

    /// Writes `keyring` sealed under `state`'s root key, replacing the stored keyring only if
    /// it is still the one `state` was loaded from (same active term).
    async fn persist_keyring(
        &self,
        state: &Unsealed,
        keyring: &Keyring,
    ) -> Result<(), BarrierError> {
        let current = self
            .backend
            .get(KEYRING_PATH)
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        // Check that the stored keyring is the one in memory before replacing it.
        let envelope = Envelope::decode(&current).map_err(|_| BarrierError::KeyringConflict)?;
        let stored = state
            .keyring_cipher
            .open(&envelope, KEYRING_PATH)
            .map_err(|_| BarrierError::KeyringConflict)?;
        let stored =
            Keyring::decode(stored.expose_secret()).map_err(|_| BarrierError::KeyringConflict)?;
        if stored.active_term() != state.keyring.active_term() {
            return Err(BarrierError::KeyringConflict);
        }
        let sealed = state.sealed_keyring(keyring)?;
        if !self
            .backend
            .compare_and_swap(KEYRING_PATH, Some(&current), Some(sealed))
            .await?
        {
            return Err(BarrierError::KeyringConflict);
        }
        Ok(())
    }

    /// Adds a keyring term with a fresh random key; new writes use it at once. Old records stay
    /// readable; [`Barrier::rewrap`] moves them to the new term. Returns the new term.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`], [`BarrierError::KeyringConflict`], or a backend failure (then
    /// the keyring is unchanged).
    pub async fn rotate(&self) -> Result<u32, BarrierError> {
        let _guard = self.keyring_lock.lock().await;
        let state = self.unsealed()?;
        let keyring = state.keyring.rotated()?;
        let term = keyring.active_term();
        self.persist_keyring(&state, &keyring).await?;
        let keyring_cipher = RecordCipher::derive(state.root.expose_secret(), KEYRING_KEY_INFO);
        self.install(Some(Arc::new(Unsealed {
            root: state.root.clone(),
            keyring_cipher,
            keyring,
        })));
        tracing::info!(term, "barrier keyring rotated");
        Ok(term)
    }

    /// Re-seals the keyring under `new_root` (root-key rotation). Records are untouched: they
    /// are sealed under term keys, which do not change.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`], [`BarrierError::KeyringConflict`], or a backend failure (then
    /// the old root key still opens the store).
    pub async fn rotate_root_key(&self, new_root: &RootKey) -> Result<(), BarrierError> {
        let _guard = self.keyring_lock.lock().await;
        let state = self.unsealed()?;
        let next = Unsealed {
            root: new_root.clone(),
            keyring_cipher: RecordCipher::derive(new_root.expose_secret(), KEYRING_KEY_INFO),
            keyring: Keyring::decode(&state.keyring.encode())
                .map_err(|_| BarrierError::KeyringConflict)?,
        };
        // The CAS checks the stored keyring under the old root; the new record is sealed under
        // the new one.
        let current = self
            .backend
            .get(KEYRING_PATH)
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        let envelope = Envelope::decode(&current).map_err(|_| BarrierError::KeyringConflict)?;
        state
            .keyring_cipher
            .open(&envelope, KEYRING_PATH)
            .map_err(|_| BarrierError::KeyringConflict)?;
        let sealed = next.sealed_keyring(&next.keyring)?;
        if !self
            .backend
            .compare_and_swap(KEYRING_PATH, Some(&current), Some(sealed))
            .await?
        {
            return Err(BarrierError::KeyringConflict);
        }
        self.install(Some(Arc::new(next)));
        Ok(())
    }

    /// Whether `candidate` is the root key this barrier was unsealed with (compared in
    /// constant time). Lets the seal layer tell which of its stored root keys is in force
    /// without the barrier ever handing its key out.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`].
    pub fn holds_root_key(&self, candidate: &RootKey) -> Result<bool, BarrierError> {
        let state = self.unsealed()?;
        Ok(state.root == *candidate)
    }

    /// Derives a purpose-bound 256-bit subkey, `HKDF-SHA256(derivation seed, info)`, for the
    /// layers above (audit HMAC, token hashing, signing seeds). The seed lives in the keyring
    /// and survives both term rotation and root-key rotation, so a subkey is stable for the
    /// life of the store. Distinct `info` strings give independent keys; use
    /// `"arca/<purpose>/v<n>"`.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`].
    pub fn derive_subkey(&self, info: &[u8]) -> Result<SubKey, BarrierError> {
        let state = self.unsealed()?;
        Ok(SubKey::derive_from(
            state.keyring.derivation_seed().expose_secret(),
            info,
        ))
    }

    /// The active term, when it was installed, and how many encryptions it has done.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`].
    pub fn key_status(&self) -> Result<KeyStatus, BarrierError> {
        let state = self.unsealed()?;
        Ok(KeyStatus {
            term: state.keyring.active_term(),
            install_time: state.keyring.installed_at(),
            encryptions: state.keyring.encryptions(),
        })
    }

    /// Reads and authenticates the record at `path`.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`], [`BarrierError::ReservedPath`], [`BarrierError::Integrity`],
    /// or a backend failure.
    pub async fn get(&self, path: &str) -> Result<Option<Plaintext>, BarrierError> {
        Ok(self
            .get_record(path)
            .await?
            .map(|record| record.plaintext().clone()))
    }

    /// Reads and authenticates the record at `path`, shared with the read cache instead of
    /// copied out of it.
    ///
    /// # Errors
    /// As [`Barrier::get`].
    pub async fn get_record(&self, path: &str) -> Result<Option<Arc<Record>>, BarrierError> {
        check_path(path)?;
        self.unsealed()?;
        let ticket = match self.cache.lookup(path) {
            Ok(cached) => return Ok(cached),
            Err(ticket) => ticket,
        };
        let stored = self.backend.get(path).await?;
        // Take the keys after the read, not before: a record sealed under a term that a
        // concurrent rotation installed while the read was under way must find that term.
        let state = self.unsealed()?;
        let record = match stored {
            Some(stored) => Some(Arc::new(Record::new(state.open(path, &stored)?))),
            None => None,
        };
        self.cache.install(path, ticket, record.as_ref());
        Ok(record)
    }

    /// Reads the record at `path` and decodes it with `decode`, or reuses the form an earlier
    /// reader decoded from the same cached plaintext (see
    /// [`read_cache`](crate::read_cache#decoded-forms)).
    ///
    /// `decode` must depend on the bytes alone (no clock, no other record): its result is
    /// shared for as long as the plaintext stays cached. A record holds one decoded form; a
    /// second type decoded from the same path is decoded at every read. A decoding error is
    /// returned and nothing is kept.
    ///
    /// # Errors
    /// As [`Barrier::get`], converted into `E`, or what `decode` returned.
    pub async fn get_decoded<T, E>(
        &self,
        path: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<Decoded<T>>, E>
    where
        T: std::any::Any + Send + Sync,
        E: From<BarrierError>,
    {
        let Some(record) = self.get_record(path).await? else {
            return Ok(None);
        };
        if let Some(value) = record.decoded::<T>() {
            return Ok(Some(Decoded { value, record }));
        }
        let value = Arc::new(decode(record.expose_secret())?);
        if record.set_decoded(Arc::clone(&value) as Arc<dyn std::any::Any + Send + Sync>) {
            self.cache.charge(path, &record, record.plaintext().len());
        }
        Ok(Some(Decoded { value, record }))
    }

    /// Seals `plaintext` and stores it at `path`, durably.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`], [`BarrierError::ReservedPath`],
    /// [`BarrierError::ValueTooLarge`], or a backend failure (then nothing was written).
    pub async fn put(&self, path: &str, plaintext: &[u8]) -> Result<(), BarrierError> {
        check_path(path)?;
        check_len(plaintext)?;
        let state = self.unsealed()?;
        let sealed = state.seal(path, plaintext)?;
        let backend = Arc::clone(&self.backend);
        let key = path.to_owned();
        self.write_through(
            vec![key.clone()],
            async move { backend.put(&key, sealed).await },
        )
        .await?;
        Ok(())
    }

    /// Removes `path`, durably; removing an absent path succeeds.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`], [`BarrierError::ReservedPath`], or a backend failure.
    pub async fn delete(&self, path: &str) -> Result<(), BarrierError> {
        check_path(path)?;
        self.unsealed()?;
        let backend = Arc::clone(&self.backend);
        let key = path.to_owned();
        self.write_through(vec![key.clone()], async move { backend.delete(&key).await })
            .await?;
        Ok(())
    }

    /// Every path under `prefix`, sorted, except the barrier's own records.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`] or a backend failure.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.unsealed()?;
        let mut keys = self.backend.list(prefix).await?;
        keys.retain(|k| !k.starts_with(RESERVED_PREFIX));
        Ok(keys)
    }

    /// One page of paths under `prefix` after `start_after`, as [`Backend::list_page`],
    /// without the barrier's own records.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`] or a backend failure.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, BarrierError> {
        self.unsealed()?;
        let mut page = self.backend.list_page(prefix, start_after, limit).await?;
        page.keys.retain(|k| !k.starts_with(RESERVED_PREFIX));
        Ok(page)
    }

    /// Replaces the plaintext at `path` with `new` (`None` removes it) if the current plaintext
    /// equals `expected` (`None`: absent). Returns whether it did. Plaintexts are compared in
    /// constant time; a concurrent rewrap of the same record does not make it fail.
    ///
    /// # Errors
    /// As [`Barrier::get`] and [`Barrier::put`].
    pub async fn compare_and_swap(
        &self,
        path: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, BarrierError> {
        check_path(path)?;
        if let Some(new) = new {
            check_len(new)?;
        }
        self.unsealed()?;
        // A backend CAS can fail because the ciphertext changed while the plaintext did not (a
        // rewrap); retry while the plaintext still matches. Each retry means another writer
        // made progress, so this terminates.
        loop {
            let current = self.backend.get(path).await?;
            // The keys are taken after each read, as in `get`: the record may have been
            // rewrapped under a term installed since this call began.
            let state = self.unsealed()?;
            let matches = match (&current, expected) {
                (None, None) => true,
                (Some(stored), Some(expected)) => {
                    let plain = state.open(path, stored)?;
                    bool::from(plain.expose_secret().ct_eq(expected))
                }
                _ => false,
            };
            if !matches {
                return Ok(false);
            }
            let sealed = new.map(|n| state.seal(path, n)).transpose()?;
            let backend = Arc::clone(&self.backend);
            let key = path.to_owned();
            let swapped = self
                .write_through(vec![key.clone()], async move {
                    backend
                        .compare_and_swap(&key, current.as_deref(), sealed)
                        .await
                })
                .await?;
            if swapped {
                return Ok(true);
            }
        }
    }

    /// Seals and applies every operation atomically: all are stored, or none.
    ///
    /// # Errors
    /// As [`Barrier::put`], and [`BackendError::InvalidBatch`] when the batch breaks a
    /// [`Batch`] limit (then nothing is written).
    pub async fn batch(&self, ops: &[BarrierOp<'_>]) -> Result<(), BarrierError> {
        let state = self.unsealed()?;
        let mut batch = Batch::new();
        for op in ops {
            match *op {
                BarrierOp::Put(path, plaintext) => {
                    check_path(path)?;
                    check_len(plaintext)?;
                    batch.push(BatchOp::Put {
                        key: path.to_owned(),
                        value: state.seal(path, plaintext)?,
                    })?;
                }
                BarrierOp::Delete(path) => {
                    check_path(path)?;
                    batch.push(BatchOp::Delete {
                        key: path.to_owned(),
                    })?;
                }
            }
        }
        let paths = ops
            .iter()
            .map(|op| match *op {
                BarrierOp::Put(path, _) | BarrierOp::Delete(path) => path.to_owned(),
            })
            .collect();
        let backend = Arc::clone(&self.backend);
        self.write_through(paths, async move { backend.batch(batch).await })
            .await?;
        Ok(())
    }

    /// Makes every acknowledged write durable (see [`Backend::flush`]).
    ///
    /// # Errors
    /// A backend failure.
    pub async fn flush(&self) -> Result<(), BarrierError> {
        self.backend.flush().await?;
        Ok(())
    }

    /// Re-encrypts every record sealed under an older term to the active term, one page at a
    /// time, with a compare-and-swap per record so a concurrent write always wins. Readers are
    /// never blocked: until a record is rewrapped, its old term still opens it.
    ///
    /// Records that fail their integrity check are left untouched and counted as skipped.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`] (the pass stops) or a backend failure.
    pub async fn rewrap(&self) -> Result<RewrapReport, BarrierError> {
        let mut report = RewrapReport::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .backend
                .list_page("", after.as_deref(), crate::backend::MAX_LIST_PAGE)
                .await?;
            for path in &page.keys {
                if path.starts_with(RESERVED_PREFIX) {
                    continue;
                }
                report.scanned += 1;
                // Re-read the state for every record so a seal stops the pass promptly.
                let state = self.unsealed()?;
                let Some(stored) = self.backend.get(path).await? else {
                    continue;
                };
                let Ok(envelope) = Envelope::decode(&stored) else {
                    report.skipped += 1;
                    continue;
                };
                if envelope.term() >= state.keyring.active_term() {
                    continue;
                }
                let Ok(plain) = state.open(path, &stored) else {
                    report.skipped += 1;
                    continue;
                };
                let sealed = state.seal(path, plain.expose_secret())?;
                if self
                    .backend
                    .compare_and_swap(path, Some(&stored), Some(sealed))
                    .await?
                {
                    report.rewrapped += 1;
                } else {
                    report.skipped += 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        tracing::info!(
            scanned = report.scanned,
            rewrapped = report.rewrapped,
            skipped = report.skipped,
            "barrier rewrap pass finished"
        );
        Ok(report)
    }

    /// Starts [`Barrier::rewrap`] on the tokio runtime and returns at once.
    pub fn spawn_rewrap(
        self: &Arc<Self>,
    ) -> tokio::task::JoinHandle<Result<RewrapReport, BarrierError>> {
        let barrier = Arc::clone(self);
        tokio::spawn(async move { barrier.rewrap().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    async fn unsealed() -> (Arc<MemoryBackend>, Barrier, RootKey) {
        let backend = Arc::new(MemoryBackend::new());
        let barrier = Barrier::new(backend.clone());
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        (backend, barrier, root)
    }

    #[tokio::test]
    async fn sealed_barrier_refuses_everything() {
        let (_, barrier, root) = unsealed().await;
        barrier.put("a", b"1").await.unwrap();
        barrier.seal().await;
        assert!(matches!(barrier.get("a").await, Err(BarrierError::Sealed)));
        assert!(matches!(
            barrier.put("a", b"2").await,
            Err(BarrierError::Sealed)
        ));
        assert!(matches!(barrier.list("").await, Err(BarrierError::Sealed)));
        assert!(matches!(barrier.rotate().await, Err(BarrierError::Sealed)));
        barrier.unseal(&root).await.unwrap();
        assert_eq!(
            barrier.get("a").await.unwrap().unwrap().expose_secret(),
            b"1"
        );
    }

    #[tokio::test]
    async fn values_are_not_stored_in_clear() {
        let (backend, barrier, _) = unsealed().await;
        barrier.put("kv/x", b"correct horse battery").await.unwrap();
        let raw = backend.get("kv/x").await.unwrap().unwrap();
        assert!(
            !raw.windows(7).any(|w| w == b"correct"),
            "plaintext found in the stored record"
        );
    }

    #[tokio::test]
    async fn wrong_root_key_does_not_unseal() {
        let (_, barrier, _) = unsealed().await;
        barrier.seal().await;
        let other = RootKey::generate().unwrap();
        assert!(matches!(
            barrier.unseal(&other).await,
            Err(BarrierError::Integrity { .. })
        ));
        assert!(barrier.is_sealed());
    }

    #[tokio::test]
    async fn reserved_paths_are_refused() {
        let (_, barrier, _) = unsealed().await;
        assert!(matches!(
            barrier.put(KEYRING_PATH, b"x").await,
            Err(BarrierError::ReservedPath { .. })
        ));
        assert!(barrier.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rotation_keeps_old_records_and_rewrap_moves_them() {
        let (backend, barrier, root) = unsealed().await;
        barrier.put("a", b"old").await.unwrap();
        assert_eq!(barrier.rotate().await.unwrap(), 2);
        barrier.put("b", b"new").await.unwrap();
        assert_eq!(
            barrier.get("a").await.unwrap().unwrap().expose_secret(),
            b"old"
        );
        let raw_b = backend.get("b").await.unwrap().unwrap();
        assert_eq!(Envelope::decode(&raw_b).unwrap().term(), 2);
        let report = barrier.rewrap().await.unwrap();
        assert_eq!(report.rewrapped, 1);
        let raw_a = backend.get("a").await.unwrap().unwrap();
        assert_eq!(Envelope::decode(&raw_a).unwrap().term(), 2);
        // The rotated keyring survives a seal/unseal.
        barrier.seal().await;
        barrier.unseal(&root).await.unwrap();
        assert_eq!(barrier.key_status().unwrap().term, 2);
        assert_eq!(
            barrier.get("a").await.unwrap().unwrap().expose_secret(),
            b"old"
        );
    }

    #[tokio::test]
    async fn root_key_rotation_changes_which_key_unseals() {
        let (_, barrier, old_root) = unsealed().await;
        barrier.put("a", b"v").await.unwrap();
        let new_root = RootKey::generate().unwrap();
        barrier.rotate_root_key(&new_root).await.unwrap();
        barrier.seal().await;
        assert!(barrier.unseal(&old_root).await.is_err());
        barrier.unseal(&new_root).await.unwrap();
        assert_eq!(
            barrier.get("a").await.unwrap().unwrap().expose_secret(),
            b"v"
        );
    }

    #[tokio::test]
    async fn subkeys_survive_term_and_root_key_rotation() {
        let (_, barrier, _) = unsealed().await;
        let before = barrier.derive_subkey(b"arca/test/v1").unwrap();
        assert_ne!(before, barrier.derive_subkey(b"arca/other/v1").unwrap());
        barrier.rotate().await.unwrap();
        let new_root = RootKey::generate().unwrap();
        barrier.rotate_root_key(&new_root).await.unwrap();
        barrier.seal().await;
        assert!(matches!(
            barrier.derive_subkey(b"arca/test/v1"),
            Err(BarrierError::Sealed)
        ));
        barrier.unseal(&new_root).await.unwrap();
        assert_eq!(before, barrier.derive_subkey(b"arca/test/v1").unwrap());
    }

    #[tokio::test]
    async fn encryption_count_persists_across_seal() {
        let (_, barrier, root) = unsealed().await;
        for i in 0..5 {
            barrier.put(&format!("k{i}"), b"v").await.unwrap();
        }
        assert_eq!(barrier.key_status().unwrap().encryptions, 5);
        barrier.seal().await;
        barrier.unseal(&root).await.unwrap();
        assert_eq!(barrier.key_status().unwrap().encryptions, 5);
    }

    #[tokio::test]
    async fn compare_and_swap_on_plaintext() {
        let (_, barrier, _) = unsealed().await;
        assert!(
            barrier
                .compare_and_swap("c", None, Some(b"1"))
                .await
                .unwrap()
        );
        assert!(
            !barrier
                .compare_and_swap("c", None, Some(b"2"))
                .await
                .unwrap()
        );
        assert!(
            !barrier
                .compare_and_swap("c", Some(b"0"), Some(b"2"))
                .await
                .unwrap()
        );
        assert!(
            barrier
                .compare_and_swap("c", Some(b"1"), Some(b"2"))
                .await
                .unwrap()
        );
        assert!(
            barrier
                .compare_and_swap("c", Some(b"2"), None)
                .await
                .unwrap()
        );
        assert!(barrier.get("c").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn every_kind_of_write_is_seen_by_the_next_read_through_the_cache() {
        let (backend, barrier, root) = unsealed().await;
        let read = |path: &'static str| {
            let barrier = &barrier;
            async move {
                barrier
                    .get(path)
                    .await
                    .unwrap()
                    .map(|p| p.expose_secret().to_vec())
            }
        };
        // Each read below first fills the cache, then a write must replace what it holds.
        assert_eq!(read("k").await, None);
        barrier.put("k", b"1").await.unwrap();
        assert_eq!(read("k").await.as_deref(), Some(&b"1"[..]));
        barrier
            .batch(&[BarrierOp::Put("k", b"2"), BarrierOp::Put("j", b"x")])
            .await
            .unwrap();
        assert_eq!(read("k").await.as_deref(), Some(&b"2"[..]));
        assert!(
            barrier
                .compare_and_swap("k", Some(b"2"), Some(b"3"))
                .await
                .unwrap()
        );
        assert_eq!(read("k").await.as_deref(), Some(&b"3"[..]));
        barrier.batch(&[BarrierOp::Delete("k")]).await.unwrap();
        assert_eq!(read("k").await, None);
        barrier.put("k", b"4").await.unwrap();
        assert_eq!(read("k").await.as_deref(), Some(&b"4"[..]));
        barrier.delete("k").await.unwrap();
        assert_eq!(read("k").await, None);

        // A refused write changes nothing, in the store or in the cache.
        barrier.put("k", b"5").await.unwrap();
        assert_eq!(read("k").await.as_deref(), Some(&b"5"[..]));
        let too_many: Vec<String> = (0..=crate::backend::MAX_BATCH_WEIGHT)
            .map(|i| format!("n{i}"))
            .collect();
        let mut ops: Vec<BarrierOp<'_>> = too_many.iter().map(|p| BarrierOp::Delete(p)).collect();
        ops.push(BarrierOp::Put("k", b"6"));
        assert!(barrier.batch(&ops).await.is_err());
        assert_eq!(read("k").await.as_deref(), Some(&b"5"[..]));

        // Sealing empties the cache: nothing is served sealed, and a record damaged in the
        // backend meanwhile is caught at the first read after unsealing.
        barrier.seal().await;
        assert!(matches!(barrier.get("k").await, Err(BarrierError::Sealed)));
        let mut raw = backend.get("k").await.unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        backend.put("k", raw).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        assert!(matches!(
            barrier.get("k").await,
            Err(BarrierError::Integrity { .. })
        ));
    }

    /// A decoded form is made once per cached plaintext and follows every write.
    #[tokio::test]
    async fn get_decoded_decodes_once_per_plaintext_and_follows_writes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_, barrier, _) = unsealed().await;
        let decodes = AtomicUsize::new(0);
        let read = || async {
            barrier
                .get_decoded("n", |bytes| {
                    decodes.fetch_add(1, Ordering::Relaxed);
                    std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok())
                        .ok_or(BarrierError::Integrity {
                            path: "n".to_owned(),
                        })
                })
                .await
                .unwrap()
                .map(|decoded| **decoded.value())
        };
        assert_eq!(read().await, None);
        barrier.put("n", b"41").await.unwrap();
        assert_eq!(read().await, Some(41));
        assert_eq!(read().await, Some(41));
        assert_eq!(decodes.load(Ordering::Relaxed), 1);
        barrier.put("n", b"42").await.unwrap();
        assert_eq!(read().await, Some(42));
        assert_eq!(read().await, Some(42));
        assert_eq!(decodes.load(Ordering::Relaxed), 2);
        // A form that fails to decode is an error every time, never cached.
        barrier.put("n", b"not a number").await.unwrap();
        for _ in 0..2 {
            assert!(
                barrier
                    .get_decoded("n", |_| Err::<u64, _>(BarrierError::Sealed))
                    .await
                    .is_err()
            );
        }
        // Without a cache every read decodes, and still sees every write.
        barrier.set_cache_bytes(0);
        barrier.put("n", b"7").await.unwrap();
        assert_eq!(read().await, Some(7));
        assert_eq!(read().await, Some(7));
        assert_eq!(decodes.load(Ordering::Relaxed), 4);
    }

    /// One writer counts up while readers read: a reader never sees the count go back, and
    /// the writer always reads back at least what it last wrote. A cache that installed a
    /// value read before a write's invalidation would break both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_readers_never_see_a_value_older_than_one_they_saw() {
        let (_, barrier, _) = unsealed().await;
        let barrier = Arc::new(barrier);
        barrier.put("counter", &0u32.to_be_bytes()).await.unwrap();
        let value =
            |p: Plaintext| u32::from_be_bytes(p.expose_secret().try_into().expect("four bytes"));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let mut last = 0;
                    while last < 2_000 {
                        let seen = value(barrier.get("counter").await.unwrap().unwrap());
                        assert!(seen >= last, "went back from {last} to {seen}");
                        last = seen;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for n in 1..=2_000u32 {
            barrier.put("counter", &n.to_be_bytes()).await.unwrap();
            let seen = value(barrier.get("counter").await.unwrap().unwrap());
            assert!(seen >= n, "wrote {n}, read back {seen}");
            tokio::task::yield_now().await;
        }
        for reader in readers {
            reader.await.unwrap();
        }
    }

    /// A caller that stops waiting for its write (a cancelled request) must not leave the
    /// old value cached once the write lands.
    #[tokio::test]
    async fn a_write_whose_caller_gave_up_still_invalidates_when_it_lands() {
        let slow = Arc::new(crate::backend::faulty::FaultyBackend::new(Arc::new(
            MemoryBackend::new(),
        )));
        let barrier = Barrier::new(slow.clone());
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        barrier.put("k", b"old").await.unwrap();
        // Writes now take a while, like redb's writer thread under load.
        slow.delay_writes(std::time::Duration::from_millis(50));
        assert_eq!(
            barrier.get("k").await.unwrap().unwrap().expose_secret(),
            b"old"
        );
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(5),
            barrier.put("k", b"new"),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "the write should still have been under way"
        );
        // A read while the write is under way caches what the store still holds.
        assert_eq!(
            barrier.get("k").await.unwrap().unwrap().expose_secret(),
            b"old"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            barrier.get("k").await.unwrap().unwrap().expose_secret(),
            b"new"
        );
    }
}
