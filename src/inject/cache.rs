//! [`SecretCache`]: an in-memory read-through cache of secrets for Rust programs that talk to
//! arca (or embed it and serve its API), with a TTL and invalidation on change.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use arca::inject::{Connection, Resolver, SecretCache, Token};
//!
//! let connection = Connection::new("http://127.0.0.1:8200")?;
//! connection.set_token(Some(Token::new(&std::env::var("ARCA_TOKEN")?)));
//! let cache = SecretCache::with_change_feed(Resolver::new(connection), Duration::from_secs(300)).await;
//! let password = cache.get(&"kv://secret/app/db#password".parse()?).await?;
//! # let _ = password;
//! # Ok(()) }
//! ```
//!
//! Entries are keyed by what is fetched (store, path, version selectors), so every field of a
//! secret is served from one read. An entry is dropped when its TTL passes, when the change
//! feed reports a change of that secret (any version: a pinned version can still be deleted),
//! or on [`SecretCache::invalidate_all`]. While the feed is unreachable, the TTL alone bounds
//! how stale a value can be. Values are held as [`SecretBytes`] (wiped when dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::mapping::Mapping;
use super::reference::{SecretRef, Source};
use super::resolve::{Fetched, MappingError, ResolveError, Resolver};
use super::value::SecretBytes;
use super::watch::{ChangeWatcher, FeedEvent, Notice};

/// A read-through cache of secrets. Cheap to clone: clones share the entries.
#[derive(Clone)]
pub struct SecretCache {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Resolver,
    ttl: Duration,
    entries: Mutex<HashMap<Source, (Fetched, Instant)>>,
    watcher: Mutex<Option<ChangeWatcher>>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCache")
            .field("ttl", &self.inner.ttl)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl SecretCache {
    /// A cache over `resolver` whose entries live at most `ttl`.
    #[must_use]
    pub fn new(resolver: Resolver, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                resolver,
                ttl,
                entries: Mutex::new(HashMap::new()),
                watcher: Mutex::new(None),
            }),
        }
    }

    /// As [`SecretCache::new`], and follows the server's change feed: a change of a cached
    /// secret drops its entry at once. The watcher stops when the last clone is dropped.
    pub async fn with_change_feed(resolver: Resolver, ttl: Duration) -> Self {
        let cache = Self::new(resolver, ttl);
        let (watcher, mut notices) =
            ChangeWatcher::start(cache.inner.resolver.connection().clone()).await;
        *cache
            .inner
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(watcher);
        let weak: Weak<Inner> = Arc::downgrade(&cache.inner);
        tokio::spawn(async move {
            while let Some(notice) = notices.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let cache = Self { inner };
                match notice {
                    Notice::Changed(events) => {
                        for event in &events {
                            cache.invalidate(event);
                        }
                    }
                    Notice::Reset => cache.invalidate_all(),
                    Notice::Unavailable(_) => {}
                }
            }
        });
        cache
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Source, (Fetched, Instant)>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn fetched(&self, source: &Source) -> Result<Fetched, ResolveError> {
        if let Some((fetched, at)) = self.entries().get(source)
            && at.elapsed() < self.inner.ttl
        {
            return Ok(fetched.clone());
        }
        let fetched = self.inner.resolver.fetch(source).await?;
        self.entries()
            .insert(source.clone(), (fetched.clone(), Instant::now()));
        Ok(fetched)
    }

    /// The value `reference` names, from the cache when fresh, else read and cached.
    ///
    /// # Errors
    /// [`ResolveError`]; failures are not cached.
    pub async fn get(&self, reference: &SecretRef) -> Result<SecretBytes, ResolveError> {
        self.fetched(reference.source())
            .await?
            .extract(reference.field())
    }

    /// The value of `mapping`, transformed and validated.
    ///
    /// # Errors
    /// [`MappingError`].
    pub async fn get_mapping(&self, mapping: &Mapping) -> Result<SecretBytes, MappingError> {
        let fail = |source: ResolveError| MappingError {
            mapping: mapping.name().to_owned(),
            reference: mapping.reference().to_string(),
            source,
        };
        let raw = self.get(mapping.reference()).await.map_err(fail)?;
        mapping.apply(raw).map_err(|e| fail(e.into()))
    }

    /// Drops the entries `event` concerns; returns how many.
    pub fn invalidate(&self, event: &FeedEvent) -> usize {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|source, _| !event.affects(source));
        before - entries.len()
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.entries().clear();
    }

    /// How many secrets are cached (fresh or not).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
