//! The change feed: what changed in the store, in order, so that clients holding copies of
//! secrets (`arca run`, `arca agent`, [`crate::inject::SecretCache`]) refresh within a second of
//! a write or a rotation instead of polling every secret.
//!
//! The domain layers publish here after each change is committed: KV v2 writes, patches,
//! deletes, undeletes, destroys and key deletions ([`crate::kv::Kv`]), and Secrets Manager value,
//! stage, rotation, delete and restore changes (through [`ChangeFeed::secret_changed`]). The
//! HTTP layer serves the feed as a long poll at `GET /v1/sys/events` and filters it by the
//! caller's ACL policies.
//!
//! A [`Change`] names what changed (engine, path or secret name, versions, staging labels) and
//! never carries a value: the feed tells a client *what to re-read*, and the re-read goes
//! through the normal, authorised read path.
//!
//! The feed is in memory on purpose. It is a notification channel, not a log: the last
//! [`CHANGE_FEED_CAPACITY`] changes are kept in a ring buffer, each with a monotonically
//! increasing sequence number, and a [`tokio::sync::watch`] channel wakes the waiting long
//! polls. A cursor is `<epoch>:<sequence>`, where the epoch is random per process: after a
//! restart (or when a client fell more than the buffer behind) the client's cursor no longer
//! fits, the server answers `reset`, and the client re-reads everything it holds. That is
//! always correct, because a client can always re-read; it only costs one full refresh.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// How many changes the feed keeps. A client further behind than this gets a reset.
pub const CHANGE_FEED_CAPACITY: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A KV v2 version was written (a write or a patch).
    KvWrite,
    /// KV v2 versions were soft-deleted.
    KvDelete,
    /// Soft-deleted KV v2 versions were restored.
    KvUndelete,
    /// KV v2 versions were destroyed.
    KvDestroy,
    /// A KV v2 key was deleted with all its versions (`DELETE metadata/<path>`).
    KvMetadataDelete,
    /// A Secrets Manager secret was created.
    SecretCreate,
    /// A new version of a Secrets Manager secret was stored (`PutSecretValue`,
    /// `UpdateSecret` with a value).
    SecretValue,
    /// Staging labels moved (`UpdateSecretVersionStage`).
    SecretStage,
    /// A rotation finished: `AWSCURRENT` moved to the new version.
    SecretRotation,
    /// A secret was deleted (scheduled or forced) or purged.
    SecretDelete,
    /// A secret scheduled for deletion was restored.
    SecretRestore,
}

impl ChangeKind {
    /// The kind's name on the wire (`kv-write`, `secret-rotation`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KvWrite => "kv-write",
            Self::KvDelete => "kv-delete",
            Self::KvUndelete => "kv-undelete",
            Self::KvDestroy => "kv-destroy",
            Self::KvMetadataDelete => "kv-metadata-delete",
            Self::SecretCreate => "secret-create",
            Self::SecretValue => "secret-value",
            Self::SecretStage => "secret-stage",
            Self::SecretRotation => "secret-rotation",
            Self::SecretDelete => "secret-delete",
            Self::SecretRestore => "secret-restore",
        }
    }

    /// The kind named `name` on the wire.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::KvWrite,
            Self::KvDelete,
            Self::KvUndelete,
            Self::KvDestroy,
            Self::KvMetadataDelete,
            Self::SecretCreate,
            Self::SecretValue,
            Self::SecretStage,
            Self::SecretRotation,
            Self::SecretDelete,
            Self::SecretRestore,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// What a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A KV v2 key.
    Kv {
        /// The mount's path, with its trailing `/` (`secret/`).
        mount: String,
        /// The key's path inside the mount (`app/db`).
        path: String,
    },
    /// A Secrets Manager secret.
    Secret {
        /// The region the secret lives in.
        region: String,
        /// The secret's name.
        name: String,
        /// The secret's ARN.
        arn: String,
    },
}

/// One change, as published. Holds names and version numbers, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// To what.
    pub subject: Subject,
    /// The versions concerned: KV version numbers in decimal, or a Secrets Manager version id.
    pub versions: Vec<String>,
    /// The staging labels the (first) version holds after the change (Secrets Manager only).
    pub stages: Vec<String>,
}

/// A change with its place in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Its sequence number: 1 for the first change of this process, then +1 each.
    pub sequence: u64,
    /// When it was published, in seconds since the Unix epoch.
    pub time: u64,
    /// The change.
    pub change: Change,
}

/// A cursor that does not fit this feed: another process's epoch, or older than the oldest
/// change kept. The client has to re-read everything it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the change feed cannot resume from this cursor; re-read everything")]
pub struct CursorLost;

/// A cursor that is not of the form `<epoch>:<sequence>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a change feed cursor is <epoch>:<sequence>")]
pub struct MalformedCursor;

/// The feed. Cheap to clone: every clone is the same feed.
#[derive(Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: String,
    ring: Mutex<Ring>,
    head: watch::Sender<u64>,
    closed: watch::Sender<bool>,
}

struct Ring {
    events: VecDeque<ChangeEvent>,
    last: u64,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("epoch", &self.inner.epoch)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeFeed {
    /// An empty feed with a fresh random epoch.
    #[must_use]
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        // The epoch only has to differ from the previous process's: should the OS generator
        // fail, the start time does that too.
        let epoch = if arca_storage::keys::fill_random(&mut bytes).is_ok() {
            hex::encode(bytes)
        } else {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{nanos:x}")
        };
        let (head, _) = watch::channel(0);
        let (closed, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                epoch,
                ring: Mutex::new(Ring {
                    events: VecDeque::with_capacity(64),
                    last: 0,
                }),
                head,
                closed,
            }),
        }
    }

    /// Ends every wait on the feed: the server calls it when it shuts down, so that long polls
    /// answer at once instead of holding the graceful shutdown for their whole wait.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Resolves once [`ChangeFeed::close`] was called (at once if it already was).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        // `wait_for` fails only when the sender is gone, and the sender lives as long as `self`.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// This process's epoch: the part of a cursor that changes on restart.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// The sequence number of the newest change (0 before the first).
    #[must_use]
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// The cursor of `sequence` in this feed.
    #[must_use]
    pub fn cursor(&self, sequence: u64) -> String {
        format!("{}:{sequence}", self.inner.epoch)
    }

    /// Reads a cursor: `Ok(Some(sequence))` for one of this feed's cursors, `Ok(None)` for a
    /// well-formed cursor of another epoch (the client must re-read everything).
    ///
    /// # Errors
    /// [`MalformedCursor`] when `cursor` is not `<epoch>:<sequence>`.
    pub fn parse_cursor(&self, cursor: &str) -> Result<Option<u64>, MalformedCursor> {
        let (epoch, sequence) = cursor.split_once(':').ok_or(MalformedCursor)?;
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedCursor);
        }
        let sequence: u64 = sequence.parse().map_err(|_| MalformedCursor)?;
        Ok((epoch == self.inner.epoch).then_some(sequence))
    }

    /// Publishes a change, after it was committed. Returns its sequence number.
    pub fn publish(&self, change: Change) -> u64 {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A panic while holding this lock cannot leave the ring inconsistent (each step below
        // is a single push, pop or assignment), so a poisoned lock is still usable.
        let mut ring = self
            .inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ring.last += 1;
        let sequence = ring.last;
        if ring.events.len() == CHANGE_FEED_CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(ChangeEvent {
            sequence,
            time,
            change,
        });
        // Sent under the lock, so the watched head never runs ahead of the ring.
        self.inner.head.send_replace(sequence);
        sequence
    }

    /// Publishes a change of a Secrets Manager secret: the one call the lifecycle store makes
    /// after each committed change. `version` is the version id concerned (if any), `stages`
    /// the labels it holds afterwards.
    pub fn secret_changed(
        &self,
        kind: ChangeKind,
        region: &str,
        name: &str,
        arn: &str,
        version: Option<&str>,
        stages: &[String],
    ) -> u64 {
        self.publish(Change {
            kind,
            subject: Subject::Secret {
                region: region.to_owned(),
                name: name.to_owned(),
                arn: arn.to_owned(),
            },
            versions: version.map(str::to_owned).into_iter().collect(),
            stages: stages.to_vec(),
        })
    }

    /// Publishes a change of a KV v2 key.
    pub fn kv_changed(&self, kind: ChangeKind, mount: &str, path: &str, versions: &[u64]) -> u64 {
        self.publish(Change {
            kind,
            subject: Subject::Kv {
                mount: mount.to_owned(),
                path: path.to_owned(),
            },
            versions: versions.iter().map(u64::to_string).collect(),
            stages: Vec::new(),
        })
    }

    /// The changes after sequence `after`, oldest first (empty when there is none yet).
    ///
    /// # Errors
    /// [`CursorLost`] when changes after `after` were already dropped from the ring, or
    /// `after` is ahead of the feed (a cursor from a future this process never had).
    pub fn since(&self, after: u64) -> Result<Vec<ChangeEvent>, CursorLost> {
        let ring = self
            .inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if after > ring.last {
            return Err(CursorLost);
        }
        let oldest = ring.events.front().map_or(ring.last + 1, |e| e.sequence);
        if after + 1 < oldest {
            return Err(CursorLost);
        }
        // Sequences in the ring are consecutive, so the first wanted one is at a known index.
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        Ok(ring.events.iter().skip(skip).cloned().collect())
    }

    /// A receiver that sees the head sequence change: `changed().await` wakes on each
    /// publication.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &str, version: u64) -> Change {
        Change {
            kind: ChangeKind::KvWrite,
            subject: Subject::Kv {
                mount: "secret/".into(),
                path: path.into(),
            },
            versions: vec![version.to_string()],
            stages: vec![],
        }
    }

    #[test]
    fn changes_come_back_in_order_after_a_cursor() {
        let feed = ChangeFeed::new();
        assert_eq!(feed.head(), 0);
        assert_eq!(feed.since(0).unwrap(), vec![]);
        assert_eq!(feed.publish(write("a", 1)), 1);
        assert_eq!(feed.publish(write("b", 1)), 2);
        assert_eq!(feed.publish(write("a", 2)), 3);
        let all = feed.since(0).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].change, write("a", 2));
        let after = feed.since(2).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].sequence, 3);
        assert!(feed.since(3).unwrap().is_empty());
        assert_eq!(feed.since(4), Err(CursorLost));
    }

    #[test]
    fn a_client_further_behind_than_the_ring_is_told_to_resync() {
        let feed = ChangeFeed::new();
        for i in 0..(CHANGE_FEED_CAPACITY as u64 + 10) {
            feed.publish(write("k", i));
        }
        assert_eq!(feed.since(0), Err(CursorLost));
        assert_eq!(feed.since(9), Err(CursorLost));
        let kept = feed.since(10).unwrap();
        assert_eq!(kept.len(), CHANGE_FEED_CAPACITY);
        assert_eq!(kept[0].sequence, 11);
    }

    #[test]
    fn cursors_carry_the_epoch() {
        let feed = ChangeFeed::new();
        let other = ChangeFeed::new();
        assert_ne!(feed.epoch(), other.epoch());
        let cursor = feed.cursor(7);
        assert_eq!(feed.parse_cursor(&cursor), Ok(Some(7)));
        assert_eq!(other.parse_cursor(&cursor), Ok(None));
        for bad in ["", "7", ":7", "abc:", "abc:x", "a b:1", "abc:-1"] {
            assert_eq!(feed.parse_cursor(bad), Err(MalformedCursor), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn subscribers_wake_on_publication() {
        let feed = ChangeFeed::new();
        let mut rx = feed.subscribe();
        let publisher = feed.clone();
        tokio::spawn(async move { publisher.publish(write("x", 1)) });
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 1);
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in [
            ChangeKind::KvWrite,
            ChangeKind::KvMetadataDelete,
            ChangeKind::SecretRotation,
            ChangeKind::SecretRestore,
        ] {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("nope"), None);
    }
}
