//! The barrier's cache of authenticated plaintexts.
//!
//! A Vault or AWS request reads the same few small records again and again: the token-hashing
//! key, the token entry, the KMS key that wraps data keys, a secret's metadata. Each barrier
//! read is a backend read plus an AEAD open; profiles of the KV read path showed a quarter of
//! the server's CPU time there. The cache keeps the opened plaintext of recently read records,
//! bounded in bytes, so a repeated read costs a hash lookup and a copy.
//!
//! # Coherence
//! Every write through the barrier invalidates the paths it touched once the backend call has
//! returned, whether it succeeded or not (a write whose outcome is unknown must not leave the
//! old value cached), in a task that runs to the end even if the caller stops waiting (see
//! `Barrier::write_through`). A read that missed takes its shard's generation *before* it reads the
//! backend and installs what it read only if the generation is unchanged, so a read that raced
//! with a write never installs the older value after the write's invalidation. A reader that
//! hits the cache between a write's commit and its invalidation sees the previous value, as it
//! would have had it arrived a moment earlier: the write has not been acknowledged yet.
//!
//! This holds because the barrier that caches is the only writer of its store: a redb file is
//! locked to one process, and on DynamoDB only the active server writes (a standby that takes
//! over opens a new barrier, with an empty cache). Records changed underneath the barrier (a
//! tool writing the backend directly) are seen once evicted, or after a restart or seal.
//!
//! # What is cached
//! Absent records too (a missing KV configuration record is read on every write). Records
//! larger than [`MAX_ENTRY_BYTES`] are not cached: the cache is for the small hot records,
//! not for bulk values. A record damaged on disk after it was read is detected at its next
//! read from the backend. Values are [`Record`]s: the [`Plaintext`], wiped when the last
//! reader lets go of an entry that was evicted, invalidated or dropped; sealing empties the
//! cache.
//!
//! # Decoded forms
//! Most hot records are JSON that every request parses again: the token entry, the KV
//! metadata, the KMS key. A [`Record`] has room for one decoded form of its plaintext, set by
//! the first reader that decodes it ([`Barrier::get_decoded`](crate::Barrier::get_decoded))
//! and shared with every later reader of the same entry. It needs no invalidation of its own:
//! a write replaces the entry, and the decoded form goes with the plaintext it came from. A
//! decoded form is charged to the budget as much again as its plaintext.
//!
//! # Eviction
//! CLOCK (second chance): a hit marks the entry; eviction walks the insertion ring, clearing
//! marks, and drops the first unmarked entry. The cache is split into [`SHARDS`] shards by a
//! hash of the path, each with its own lock and its own share of the byte budget.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::keys::Plaintext;

/// Shards, each locked on its own.
pub const SHARDS: usize = 16;

/// The largest plaintext the cache keeps.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;

/// The bookkeeping an entry costs besides its path and value, counted against the budget.
const ENTRY_OVERHEAD: usize = 128;

/// The default budget of a barrier's cache: 16 MiB of paths, plaintexts and decoded forms,
/// enough for the hot records of about 12,000 KV secrets (each read needs its metadata,
/// version and wrapped data key). Random KV reads among 10,000 secrets ran 22k/s with 8 MiB
/// and 29k/s with 16 MiB, for 6.5 MiB more resident memory after the reads.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A record's plaintext as the barrier opened it, shared by the cache and the readers that
/// hold it, with room for one decoded form (see the module documentation).
pub struct Record {
    plaintext: Plaintext,
    decoded: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Record {
    pub(crate) fn new(plaintext: Plaintext) -> Self {
        Self {
            plaintext,
            decoded: OnceLock::new(),
        }
    }

    /// The plaintext.
    #[must_use]
    pub fn plaintext(&self) -> &Plaintext {
        &self.plaintext
    }

    /// The plaintext's bytes.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        self.plaintext.expose_secret()
    }

    /// The decoded form, if one of type `T` was set.
    pub(crate) fn decoded<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        Arc::clone(self.decoded.get()?).downcast::<T>().ok()
    }

    /// Sets the decoded form unless one is set already; whether this call set it.
    pub(crate) fn set_decoded(&self, value: Arc<dyn Any + Send + Sync>) -> bool {
        self.decoded.set(value).is_ok()
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("len", &self.plaintext.len())
            .field("decoded", &self.decoded.get().is_some())
            .finish_non_exhaustive()
    }
}

struct Slot {
    /// `None`: the record is known to be absent.
    value: Option<Arc<Record>>,
    referenced: bool,
    /// Which insertion this is, so stale ring entries can be told apart.
    stamp: u64,
    cost: usize,
}

#[derive(Default)]
struct Shard {
    /// Raised by every invalidation; a miss installs its value only if it did not move.
    generation: u64,
    next_stamp: u64,
    map: HashMap<Arc<str>, Slot>,
    ring: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
}

impl Shard {
    fn evict_to(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some((path, stamp)) = self.ring.pop_front() else {
                break;
            };
            let Some(slot) = self.map.get_mut(&path) else {
                continue;
            };
            if slot.stamp != stamp {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back((path, stamp));
            } else if let Some(slot) = self.map.remove(&path) {
                self.bytes -= slot.cost;
            }
        }
        // Invalidations leave ring entries behind; keep the ring near the map's size.
        if self.ring.len() > 2 * self.map.len() + 32 {
            let map = &self.map;
            self.ring
                .retain(|(path, stamp)| map.get(path).is_some_and(|slot| slot.stamp == *stamp));
        }
    }

    fn remove(&mut self, path: &str) {
        if let Some(slot) = self.map.remove(path) {
            self.bytes -= slot.cost;
        }
    }
}

/// A ticket for installing the result of a backend read that missed: the shard's generation
/// when the read began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MissTicket {
    shard: usize,
    generation: u64,
}

/// See the module documentation.
pub(crate) struct ReadCache {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: AtomicUsize,
    hasher: RandomState,
}

impl ReadCache {
    /// A cache of at most `bytes` (0: nothing is ever cached).
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_budget: AtomicUsize::new(bytes / SHARDS),
            hasher: RandomState::new(),
        }
    }

    /// Changes the budget to `bytes`; shards over it shrink at their next insert, and a budget
    /// of 0 empties the cache now.
    pub(crate) fn resize(&self, bytes: usize) {
        self.shard_budget.store(bytes / SHARDS, Ordering::Relaxed);
        if bytes == 0 {
            self.clear();
        }
    }

    fn shard_of(&self, path: &str) -> usize {
        // The modulo keeps the index below SHARDS, so the cast cannot truncate it.
        #[allow(clippy::cast_possible_truncation)]
        let index = (self.hasher.hash_one(path) % SHARDS as u64) as usize;
        index
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached state of `path`: `Ok(Some(_))` present, `Ok(None)` known absent, or a ticket
    /// to install the backend's answer with [`ReadCache::install`].
    pub(crate) fn lookup(&self, path: &str) -> Result<Option<Arc<Record>>, MissTicket> {
        let shard = self.shard_of(path);
        let mut guard = self.lock(shard);
        if let Some(slot) = guard.map.get_mut(path) {
            slot.referenced = true;
            return Ok(slot.value.clone());
        }
        Err(MissTicket {
            shard,
            generation: guard.generation,
        })
    }

    /// Installs what a missed read found, unless a write invalidated the shard since the
    /// ticket was taken or the value is too large to keep.
    pub(crate) fn install(&self, path: &str, ticket: MissTicket, value: Option<&Arc<Record>>) {
        let len = value.map_or(0, |record| record.plaintext.len());
        let budget = self.shard_budget.load(Ordering::Relaxed);
        if budget == 0 || len > MAX_ENTRY_BYTES {
            return;
        }
        let cost = len + path.len() + ENTRY_OVERHEAD;
        let mut guard = self.lock(ticket.shard);
        if guard.generation != ticket.generation || cost > budget {
            return;
        }
        guard.remove(path);
        let stamp = guard.next_stamp;
        guard.next_stamp += 1;
        let key: Arc<str> = Arc::from(path);
        guard.map.insert(
            Arc::clone(&key),
            Slot {
                value: value.cloned(),
                referenced: false,
                stamp,
                cost,
            },
        );
        guard.ring.push_back((key, stamp));
        guard.bytes += cost;
        guard.evict_to(budget);
    }

    /// Adds `bytes` to the cost of `path`'s entry if it still holds `record` (a decoded form
    /// was just set on it), evicting others to stay within the budget.
    pub(crate) fn charge(&self, path: &str, record: &Arc<Record>, bytes: usize) {
        let budget = self.shard_budget.load(Ordering::Relaxed);
        let mut guard = self.lock(self.shard_of(path));
        let Some(slot) = guard.map.get_mut(path) else {
            return;
        };
        if !slot
            .value
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, record))
        {
            return;
        }
        slot.cost += bytes;
        // The entry just served a read: it survives the first pass of the eviction below.
        slot.referenced = true;
        guard.bytes += bytes;
        guard.evict_to(budget);
    }

    /// Forgets `path` and makes every read of its shard that began before now unable to
    /// install its result.
    pub(crate) fn invalidate(&self, path: &str) {
        let mut guard = self.lock(self.shard_of(path));
        guard.remove(path);
        guard.generation += 1;
    }

    /// Forgets everything (the barrier was sealed or unsealed).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            guard.map.clear();
            guard.ring.clear();
            guard.bytes = 0;
            guard.generation += 1;
        }
    }

    /// Bytes held, counted as the budget counts them.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8]) -> Arc<Record> {
        Arc::new(Record::new(Plaintext::new(bytes.to_vec())))
    }

    fn cached(cache: &ReadCache, path: &str) -> Option<Option<Vec<u8>>> {
        cache
            .lookup(path)
            .ok()
            .map(|v| v.map(|record| record.expose_secret().to_vec()))
    }

    #[test]
    fn a_miss_installs_and_a_hit_returns_the_value_or_its_absence() {
        let cache = ReadCache::new(1 << 20);
        let ticket = cache.lookup("a").unwrap_err();
        cache.install("a", ticket, Some(&plain(b"one")));
        let ticket = cache.lookup("gone").unwrap_err();
        cache.install("gone", ticket, None);
        assert_eq!(cached(&cache, "a"), Some(Some(b"one".to_vec())));
        assert_eq!(cached(&cache, "gone"), Some(None));
        assert_eq!(cached(&cache, "other"), None);
    }

    #[test]
    fn a_read_that_raced_with_a_write_does_not_install_the_older_value() {
        let cache = ReadCache::new(1 << 20);
        let ticket = cache.lookup("k").unwrap_err();
        // A write lands between the reader's backend read and its install.
        cache.invalidate("k");
        cache.install("k", ticket, Some(&plain(b"old")));
        assert_eq!(cached(&cache, "k"), None);
        // A read that began after the write installs.
        let ticket = cache.lookup("k").unwrap_err();
        cache.install("k", ticket, Some(&plain(b"new")));
        assert_eq!(cached(&cache, "k"), Some(Some(b"new".to_vec())));
        cache.invalidate("k");
        assert_eq!(cached(&cache, "k"), None);
    }

    #[test]
    fn clear_forgets_everything_and_voids_outstanding_tickets() {
        let cache = ReadCache::new(1 << 20);
        let ticket = cache.lookup("a").unwrap_err();
        cache.install("a", ticket, Some(&plain(b"x")));
        let late = cache.lookup("b").unwrap_err();
        cache.clear();
        cache.install("b", late, Some(&plain(b"y")));
        assert_eq!(cached(&cache, "a"), None);
        assert_eq!(cached(&cache, "b"), None);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_budget_holds_and_recently_hit_entries_survive_eviction() {
        let budget = SHARDS * 4 * (100 + 8 + ENTRY_OVERHEAD);
        let cache = ReadCache::new(budget);
        let value = plain(&[7u8; 100]);
        let ticket = cache.lookup("hot-path").unwrap_err();
        cache.install("hot-path", ticket, Some(&value));
        for i in 0..2_000 {
            let path = format!("cold{i:04}");
            let ticket = cache.lookup(&path).unwrap_err();
            cache.install(&path, ticket, Some(&value));
            assert!(cached(&cache, "hot-path").is_some(), "evicted after {i}");
            assert!(cache.bytes() <= budget);
        }
        // Stale ring entries do not pile up under churn.
        for shard in cache.shards.iter() {
            let guard = shard.lock().unwrap();
            assert!(guard.ring.len() <= 2 * guard.map.len() + 32);
        }
    }

    #[test]
    fn a_decoded_form_is_shared_charged_and_dropped_with_its_entry() {
        let cache = ReadCache::new(1 << 20);
        let ticket = cache.lookup("k").unwrap_err();
        let record = plain(b"{\"n\":1}");
        cache.install("k", ticket, Some(&record));
        let before = cache.bytes();
        assert!(record.decoded::<u32>().is_none());
        assert!(record.set_decoded(Arc::new(1u32)));
        cache.charge("k", &record, record.plaintext().len());
        assert_eq!(cache.bytes(), before + record.plaintext().len());
        // Later readers of the entry get the same decoded form; a second one is refused, and
        // another type is not mistaken for it.
        let hit = cache.lookup("k").unwrap().unwrap();
        assert!(Arc::ptr_eq(&hit, &record));
        assert_eq!(hit.decoded::<u32>().as_deref(), Some(&1));
        assert!(hit.decoded::<String>().is_none());
        assert!(!hit.set_decoded(Arc::new(2u32)));
        // A write replaces the entry: the next reader finds no decoded form, and a late charge
        // for the old record changes nothing.
        cache.invalidate("k");
        let ticket = cache.lookup("k").unwrap_err();
        let fresh = plain(b"{\"n\":2}");
        cache.install("k", ticket, Some(&fresh));
        let installed = cache.bytes();
        cache.charge("k", &record, 1000);
        assert_eq!(cache.bytes(), installed);
        assert!(
            cache
                .lookup("k")
                .unwrap()
                .unwrap()
                .decoded::<u32>()
                .is_none()
        );
    }

    #[test]
    fn large_values_and_a_zero_budget_are_never_cached() {
        let cache = ReadCache::new(1 << 24);
        let ticket = cache.lookup("big").unwrap_err();
        cache.install("big", ticket, Some(&plain(&vec![0u8; MAX_ENTRY_BYTES + 1])));
        assert_eq!(cached(&cache, "big"), None);
        let off = ReadCache::new(0);
        let ticket = off.lookup("a").unwrap_err();
        off.install("a", ticket, Some(&plain(b"x")));
        assert_eq!(cached(&off, "a"), None);
        // Turning a cache off drops what it held.
        let ticket = cache.lookup("small").unwrap_err();
        cache.install("small", ticket, Some(&plain(b"x")));
        cache.resize(0);
        assert_eq!(cached(&cache, "small"), None);
        assert_eq!(cache.bytes(), 0);
    }
}
