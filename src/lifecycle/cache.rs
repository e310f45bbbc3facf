//! A read-through cache of secret values for library users (code that embeds [`Arca`]).
//!
//! Reading a secret costs a barrier read and an envelope decryption (a KMS unwrap of the
//! version's data key). An application that reads the same secret on every request wants a
//! copy in memory, but a stale copy after a rotation is exactly the failure a secrets manager
//! exists to prevent. So [`SecretCache`] keeps values for at most a TTL *and* drops an entry
//! as soon as the store reports a change of its secret:
//!
//! - **How it learns of changes**: the store publishes every committed change of a secret
//!   (new value, staging labels moved, rotation finished, deleted, restored) on the change
//!   feed ([`crate::changes::ChangeFeed`], [`Arca::changes`]), each with a sequence number.
//!   The cache remembers the last sequence it has seen; before every read it asks the feed
//!   for the changes since then (one atomic load when there is none) and drops the entries of
//!   the secrets named, matched by ARN or name within the region. When it fell so far behind
//!   that the feed no longer holds those changes, it drops everything. No background task, no
//!   lock held across an await.
//! - **A read racing a change**: a value fetched while a change of its secret was being
//!   published is returned to its caller but not kept, so the cache never holds a value older
//!   than a change it has seen.
//! - **TTL**: an entry is used for at most [`CacheOptions::ttl`] after it was read from the
//!   store, whatever the feed says, which bounds staleness should a change ever go unpublished.
//! - **Size**: at most [`CacheOptions::max_entries`]; past that, expired entries go first,
//!   then the least recently used.
//!
//! Values stay wiped-on-drop: an entry holds the store's [`SecretVersion`] (whose
//! [`super::SecretValue`] zeroizes itself) behind an `Arc`, so readers share one copy and the
//! last one dropped (on eviction, invalidation, [`SecretCache::clear`] or when the cache goes)
//! wipes it. `Debug` shows counts, never values.
//!
//! The cache is a library API: it reads through [`SecretScope::get_value`] with the full
//! authority of the embedding program. Access policies, which guard the HTTP API's callers,
//! do not apply, exactly as they do not to the rest of the library API. A cache hit does not
//! update the secret's last-accessed date (the store records it at most once a day anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{SecretScope, SecretVersion, SecretsError, VersionSelector};
use crate::changes::{ChangeEvent, Subject};
use crate::handle::Arca;

/// How a [`SecretCache`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long an entry is used after it was read from the store (default 5 minutes).
    pub ttl: Duration,
    /// The most entries kept (default 1024).
    pub max_entries: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_entries: 1024,
        }
    }
}

/// What a read asked for: the same secret named by name and by ARN are two keys (both are
/// dropped by a change of the secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    region: String,
    secret_id: String,
    version_id: Option<String>,
    stage: Option<String>,
}

struct Entry {
    version: Arc<SecretVersion>,
    fetched: Instant,
    last_used: u64,
}

struct State {
    entries: HashMap<Key, Entry>,
    /// The last change-feed sequence applied.
    seen: u64,
    /// A counter for least-recently-used eviction.
    tick: u64,
}

/// Hits, misses and drops, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
    /// Entries dropped because their secret changed.
    pub invalidations: u64,
    /// Entries dropped for room or age.
    pub evictions: u64,
}

/// A read-through cache of secret versions over an [`Arca`]; see the module documentation.
pub struct SecretCache {
    arca: Arc<Arca>,
    options: CacheOptions,
    state: Mutex<State>,
    stats: Mutex<CacheStats>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCache")
            .field("options", &self.options)
            .field("entries", &self.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SecretCache {
    /// A cache over `arca`'s secrets. It only sees changes published after it was created,
    /// which is all it needs: it holds nothing older.
    #[must_use]
    pub fn new(arca: Arc<Arca>, options: CacheOptions) -> Self {
        let seen = arca.changes().head();
        Self {
            arca,
            options,
            state: Mutex::new(State {
                entries: HashMap::new(),
                seen,
                tick: 0,
            }),
            stats: Mutex::new(CacheStats::default()),
        }
    }

    /// The version `sel` names (default `AWSCURRENT`) of the secret `secret_id` (name, ARN or
    /// partial ARN) in `region` (`None`: the default region), from the cache when it holds a
    /// fresh copy, else from the store.
    ///
    /// # Errors
    /// As [`SecretScope::get_value`] (errors are not cached).
    pub async fn get(
        &self,
        region: Option<&str>,
        secret_id: &str,
        sel: &VersionSelector,
    ) -> Result<Arc<SecretVersion>, SecretsError> {
        let secrets = self.arca.secrets();
        let scope: SecretScope<'_> = match region {
            Some(region) => secrets.scope(region)?,
            None => secrets.default_scope(),
        };
        let key = Key {
            region: scope.region().to_owned(),
            secret_id: secret_id.to_owned(),
            version_id: sel.version_id.clone(),
            stage: sel.stage.clone(),
        };
        let before = {
            let mut state = self.lock();
            self.catch_up(&mut state);
            let now = Instant::now();
            state.tick += 1;
            let tick = state.tick;
            if let Some(entry) = state.entries.get_mut(&key) {
                if now.duration_since(entry.fetched) < self.options.ttl {
                    entry.last_used = tick;
                    let version = Arc::clone(&entry.version);
                    self.count(|s| s.hits += 1);
                    return Ok(version);
                }
                state.entries.remove(&key);
                self.count(|s| s.evictions += 1);
            }
            state.seen
        };
        self.count(|s| s.misses += 1);
        let version = Arc::new(scope.get_value(secret_id, sel).await?);
        let mut state = self.lock();
        self.catch_up(&mut state);
        // Keep it only if no change of its secret was published while it was being read.
        let changed_meanwhile = match self.arca.changes().since(before) {
            Ok(events) => events
                .iter()
                .any(|event| concerns(event, &key.region, &version)),
            Err(_) => true,
        };
        if !changed_meanwhile && self.options.max_entries > 0 {
            self.make_room(&mut state);
            state.tick += 1;
            let last_used = state.tick;
            state.entries.insert(
                key,
                Entry {
                    version: Arc::clone(&version),
                    fetched: Instant::now(),
                    last_used,
                },
            );
        }
        Ok(version)
    }

    /// The current value (`AWSCURRENT`) of `secret_id` in the default region.
    ///
    /// # Errors
    /// As [`SecretCache::get`].
    pub async fn current(&self, secret_id: &str) -> Result<Arc<SecretVersion>, SecretsError> {
        self.get(None, secret_id, &VersionSelector::default()).await
    }

    /// Drops every entry of the secret `secret_id` (as it was asked for, or by its resolved
    /// name or ARN), in every region.
    pub fn invalidate(&self, secret_id: &str) {
        let mut state = self.lock();
        let before = state.entries.len();
        state.entries.retain(|key, entry| {
            key.secret_id != secret_id
                && entry.version.name != secret_id
                && entry.version.arn != secret_id
        });
        let dropped = (before - state.entries.len()) as u64;
        self.count(|s| s.invalidations += dropped);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// How many entries are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hits, misses and drops so far.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every step under this lock leaves the map consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, change: impl FnOnce(&mut CacheStats)) {
        change(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Applies the changes published since the last call.
    fn catch_up(&self, state: &mut State) {
        let feed = self.arca.changes();
        let head = feed.head();
        if head == state.seen {
            return;
        }
        let before = state.entries.len();
        match feed.since(state.seen) {
            Ok(events) => {
                for event in &events {
                    state
                        .entries
                        .retain(|key, entry| !concerns(event, &key.region, &entry.version));
                }
                state.seen = events.last().map_or(head, |e| e.sequence);
            }
            Err(_) => {
                // Too far behind to know what changed: forget everything.
                state.entries.clear();
                state.seen = head;
            }
        }
        let dropped = (before - state.entries.len()) as u64;
        if dropped > 0 {
            self.count(|s| s.invalidations += dropped);
        }
    }

    /// Makes room for one more entry: expired entries first, then the least recently used.
    fn make_room(&self, state: &mut State) {
        if state.entries.len() < self.options.max_entries {
            return;
        }
        let now = Instant::now();
        let ttl = self.options.ttl;
        let before = state.entries.len();
        state
            .entries
            .retain(|_, entry| now.duration_since(entry.fetched) < ttl);
        while state.entries.len() >= self.options.max_entries {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            state.entries.remove(&oldest);
        }
        let dropped = (before - state.entries.len()) as u64;
        self.count(|s| s.evictions += dropped);
    }
}

/// Whether `event` is a change of the secret `version` belongs to, in `region`.
fn concerns(event: &ChangeEvent, region: &str, version: &SecretVersion) -> bool {
    match &event.change.subject {
        Subject::Secret {
            region: changed_region,
            name,
            arn,
        } => changed_region == region && (*arn == version.arn || *name == version.name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::changes::ChangeKind;
    use crate::lifecycle::{CreateSecret, DeleteMode, PutValue, SecretValue};

    async fn arca() -> Arc<Arca> {
        let arca = crate::handle::test_support::unsealed_in_memory().await;
        Arc::new(arca)
    }

    fn text(s: &str) -> SecretValue {
        SecretValue::String(Zeroizing::new(s.to_owned()))
    }

    async fn create(arca: &Arca, name: &str, value: &str) {
        arca.secrets()
            .default_scope()
            .create(CreateSecret {
                name: name.to_owned(),
                value: Some(text(value)),
                ..CreateSecret::default()
            })
            .await
            .unwrap();
    }

    async fn put(arca: &Arca, name: &str, value: &str) {
        arca.secrets()
            .default_scope()
            .put_value(
                name,
                PutValue {
                    value: text(value),
                    client_request_token: None,
                    stages: None,
                },
            )
            .await
            .unwrap();
    }

    fn shown(version: &SecretVersion) -> &str {
        version.value.as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn reads_through_and_shares_one_copy() {
        let arca = arca().await;
        create(&arca, "app/db", "v1").await;
        let cache = SecretCache::new(Arc::clone(&arca), CacheOptions::default());
        let first = cache.current("app/db").await.unwrap();
        let second = cache.current("app/db").await.unwrap();
        assert_eq!(shown(&first), "v1");
        assert!(Arc::ptr_eq(&first, &second), "a hit shares the cached copy");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
        // Errors are not cached.
        assert!(matches!(
            cache.current("missing").await,
            Err(SecretsError::NotFound(_))
        ));
        assert_eq!(cache.len(), 1);
        let debug = format!("{cache:?}");
        assert!(!debug.contains("v1"), "{debug}");
    }

    #[tokio::test]
    async fn a_new_value_a_rotation_or_a_delete_reaches_the_next_read() {
        let arca = arca().await;
        create(&arca, "app/db", "v1").await;
        let cache = SecretCache::new(Arc::clone(&arca), CacheOptions::default());
        assert_eq!(shown(&cache.current("app/db").await.unwrap()), "v1");
        // By ARN too: both keys go when the secret changes.
        let arn = cache.current("app/db").await.unwrap().arn.clone();
        assert_eq!(shown(&cache.current(&arn).await.unwrap()), "v1");
        put(&arca, "app/db", "v2").await;
        assert_eq!(shown(&cache.current("app/db").await.unwrap()), "v2");
        assert_eq!(shown(&cache.current(&arn).await.unwrap()), "v2");
        assert!(cache.stats().invalidations >= 2);
        // A rotation: the pending version is invisible until finishing moves AWSCURRENT.
        let scope = arca.secrets().default_scope();
        let pending = scope
            .put_value(
                "app/db",
                PutValue {
                    value: text("v3"),
                    client_request_token: None,
                    stages: Some(vec![crate::lifecycle::AWSPENDING.to_owned()]),
                },
            )
            .await
            .unwrap();
        assert_eq!(shown(&cache.current("app/db").await.unwrap()), "v2");
        let pending_id = pending.version_id.unwrap();
        scope
            .finish_rotation("app/db", &pending_id, 1_800_000_000, None)
            .await
            .unwrap();
        let rotated = cache.current("app/db").await.unwrap();
        assert_eq!(
            (shown(&rotated), rotated.version_id.as_str()),
            ("v3", pending_id.as_str())
        );
        arca.secrets()
            .default_scope()
            .delete("app/db", DeleteMode::Force)
            .await
            .unwrap();
        assert!(cache.current("app/db").await.is_err());
    }

    #[tokio::test]
    async fn changes_on_the_feed_drop_matching_entries_only() {
        let arca = arca().await;
        create(&arca, "a", "1").await;
        create(&arca, "b", "2").await;
        let cache = SecretCache::new(Arc::clone(&arca), CacheOptions::default());
        let a = cache.current("a").await.unwrap();
        cache.current("b").await.unwrap();
        let region = arca.secrets().default_scope().region().to_owned();
        arca.changes()
            .secret_changed(ChangeKind::SecretStage, &region, "a", &a.arn, None, &[]);
        // Another region's secret of the same name is another secret.
        arca.changes().secret_changed(
            ChangeKind::SecretValue,
            "eu-west-1",
            "b",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b-XXXXXX",
            None,
            &[],
        );
        cache.current("b").await.unwrap();
        assert_eq!(cache.len(), 1, "only a was dropped");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.invalidations), (1, 1));
        cache.invalidate("b");
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_the_size_is_bounded() {
        let arca = arca().await;
        for name in ["a", "b", "c"] {
            create(&arca, name, name).await;
        }
        let options = CacheOptions {
            ttl: Duration::from_secs(60),
            max_entries: 2,
        };
        let cache = SecretCache::new(Arc::clone(&arca), options);
        cache.current("a").await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        cache.current("a").await.unwrap();
        assert_eq!(cache.stats().hits, 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.current("a").await.unwrap();
        assert_eq!(cache.stats().misses, 2, "expired after the TTL");
        // Two entries at most: reading c evicts the least recently used (b).
        cache.current("b").await.unwrap();
        cache.current("a").await.unwrap();
        cache.current("c").await.unwrap();
        assert_eq!(cache.len(), 2);
        let misses = cache.stats().misses;
        cache.current("a").await.unwrap();
        assert_eq!(cache.stats().misses, misses, "a was kept");
        cache.current("b").await.unwrap();
        assert_eq!(cache.stats().misses, misses + 1, "b was evicted");
        cache.clear();
        assert!(cache.is_empty());
    }
}
