//! High availability: several servers on one shared store, exactly one of them active.
//!
//! With the DynamoDB backend several arca servers can share one table. Only one may serve at
//! a time: the layers above the barrier keep state in memory (the keyring's active term and
//! count, caches of mounts and policies, the audit chain's head, in-flight rotations), which
//! would go stale if two processes wrote side by side. So the servers elect one with a
//! *lease*, as Vault's DynamoDB HA lock does: one record, [`LEASE_KEY`], written only with
//! compare-and-swap (DynamoDB conditional writes).
//!
//! # The protocol
//!
//! - The record names its holder (a random id per process), the address other servers forward
//!   to, a fresh random nonce on every write, and the holder's lease time `ttl`.
//! - A **standby** reads the record every [`HaSettings::poll_every`]. When it is absent (never
//!   held, or released by a server that stopped cleanly) the standby takes it at once with a
//!   compare-and-swap from "absent". When it is present, the standby remembers the exact bytes
//!   and when *it* first saw them, by its own monotonic clock; once the same bytes have been
//!   there for the record's `ttl`, the holder has stopped renewing, and the standby takes the
//!   lease with a compare-and-swap from those bytes. No wall clocks are compared across
//!   machines.
//! - The **active** server rewrites the record with a new nonce every
//!   [`HaSettings::renew_every`] (`ttl / 5`). If it has not renewed successfully within
//!   [`HaSettings::fail_stop_after`] (`2 ttl / 3`) of the start of its last successful renewal,
//!   or finds the record in another's hands, it **stops the process** (exit code 75): a
//!   standby may take over once `ttl` has passed since it saw that renewal, which is at least
//!   `ttl / 3` later, so two servers never serve at once as long as clocks run at roughly the
//!   same rate. Stopping rather than stepping down keeps the rule simple: a server is active
//!   for its whole life or never, and never carries state from an earlier term. Run it under
//!   a supervisor that restarts it (systemd, Kubernetes); it comes back as a standby.
//! - A server stopped cleanly (SIGTERM) deletes the record, so a standby takes over at its
//!   next poll instead of waiting for `ttl`.
//!
//! **Takeover bound**: when the active server dies without releasing, a standby becomes
//! active within `ttl + poll_every` (11 s with the default `ttl` of 10 s), plus the time to
//! open the store and unseal (one KMS call). After a clean stop, within `poll_every` plus that.
//!
//! A server becomes active only by starting afresh over the store (`Arca::open` and unseal
//! after the lease is won), so it sees the current keyring, mounts and policies: there is no
//! cache to invalidate. That is also why HA needs an auto-unseal seal (key file, `kms`,
//! `awskms`): a standby that wins the lease must unseal without an operator.
//!
//! # What the lease does not protect
//!
//! The record is not authenticated (a standby holds no key before it is active). Whoever can
//! write the table can already delete or roll back records; they could also point standbys'
//! forwarding at another address. Grant the table to arca's role only (`arca aws
//! init-table` prints that policy).

use std::sync::Arc;
use std::time::Duration;

use arca_storage::{Backend, BackendError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

/// The record holding the lease: under the barrier's reserved prefix, so the barrier never
/// lists, rewraps or hands it to anyone; written raw (it holds nothing secret).
pub const LEASE_KEY: &str = "_barrier/ha-lease";

/// The lease time when none is configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The shortest lease time allowed: below it, a slow DynamoDB call would stop the active
/// server for nothing.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// The exit code of an active server that lost its lease (`EX_TEMPFAIL`: restart it).
pub const LEASE_LOST_EXIT_CODE: i32 = 75;

/// Timing and identity of one server in an HA cluster.
#[derive(Debug, Clone)]
pub struct HaSettings {
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// The address other servers forward requests to while this one is active
    /// (`http(s)://host:port`).
    pub api_addr: String,
}

impl HaSettings {
    /// How often the active server renews: five times per lease time.
    #[must_use]
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 5
    }

    /// How often a standby reads the lease: every second, or five times per lease time when
    /// that is shorter.
    #[must_use]
    pub fn poll_every(&self) -> Duration {
        (self.lease_ttl / 5).min(Duration::from_secs(1))
    }

    /// How long the active server goes on without a successful renewal before it stops.
    #[must_use]
    pub fn fail_stop_after(&self) -> Duration {
        self.lease_ttl * 2 / 3
    }
}

/// The lease record, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Format version, 1.
    pub v: u8,
    /// The holder's random id.
    pub holder: String,
    /// Where the holder serves (its `api_addr`).
    pub address: String,
    /// Random, new on every write: a renewal always changes the bytes.
    pub nonce: String,
    /// The holder's lease time, in milliseconds.
    pub ttl_ms: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        serde_json::from_slice(raw).ok().filter(|l: &Self| l.v == 1)
    }
}

/// Errors of the HA layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaError {
    /// The store failed.
    #[error("HA lease: {0}")]
    Backend(#[from] BackendError),
    /// The random generator failed.
    #[error("HA lease: {0}")]
    Random(#[from] arca_storage::keys::RandomError),
}

fn random_hex() -> Result<String, HaError> {
    let mut bytes = [0u8; 16];
    arca_storage::keys::fill_random(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// One server's part in the election. See the module documentation.
pub struct Node {
    backend: Arc<dyn Backend>,
    settings: HaSettings,
    id: String,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with a fresh random id.
    ///
    /// # Errors
    /// The random generator failed.
    pub fn new(backend: Arc<dyn Backend>, settings: HaSettings) -> Result<Self, HaError> {
        Ok(Self {
            backend,
            settings,
            id: random_hex()?,
        })
    }

    /// This node's id, as the lease names it.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn new_lease(&self) -> Result<Lease, HaError> {
        Ok(Lease {
            v: 1,
            holder: self.id.clone(),
            address: self.settings.api_addr.clone(),
            nonce: random_hex()?,
            ttl_ms: u64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Reads the lease once and publishes it on `observed`, so a standby knows the active
    /// server before it answers its first request.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn observe(&self, observed: &watch::Sender<Option<Lease>>) -> Result<(), HaError> {
        let current = self.backend.get(LEASE_KEY).await?;
        observed.send_replace(current.as_deref().and_then(Lease::decode));
        Ok(())
    }

    /// Waits as a standby until this node holds the lease, publishing the lease it sees (the
    /// active server to forward to) on `observed`. Store errors are logged and retried: a
    /// standby outlives an unreachable store.
    ///
    /// # Errors
    /// Only the random generator's failure.
    pub async fn acquire(
        self: &Arc<Self>,
        observed: &watch::Sender<Option<Lease>>,
    ) -> Result<ActiveLease, HaError> {
        // The bytes last seen and when they were first seen, by this process's clock.
        let mut seen: Option<(Vec<u8>, Instant)> = None;
        loop {
            match self.try_acquire(&mut seen, observed).await {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) => {}
                Err(HaError::Backend(err)) => {
                    tracing::warn!(error = %err, "cannot read the HA lease; retrying");
                }
                Err(err) => return Err(err),
            }
            tokio::time::sleep(self.settings.poll_every()).await;
        }
    }

    async fn try_acquire(
        self: &Arc<Self>,
        seen: &mut Option<(Vec<u8>, Instant)>,
        observed: &watch::Sender<Option<Lease>>,
    ) -> Result<Option<ActiveLease>, HaError> {
        let current = self.backend.get(LEASE_KEY).await?;
        let expired = match &current {
            None => true,
            Some(raw) => {
                let lease = Lease::decode(raw);
                observed.send_replace(lease.clone());
                // An unreadable record lasts this node's own lease time.
                let ttl =
                    lease.map_or(self.settings.lease_ttl, |l| Duration::from_millis(l.ttl_ms));
                match seen {
                    Some((bytes, since)) if bytes == raw => since.elapsed() >= ttl,
                    _ => {
                        *seen = Some((raw.clone(), Instant::now()));
                        false
                    }
                }
            }
        };
        if !expired {
            return Ok(None);
        }
        let mine = self.new_lease()?;
        let raw = mine.encode();
        let started = Instant::now();
        let swapped = self
            .backend
            .compare_and_swap(LEASE_KEY, current.as_deref(), Some(raw.clone()))
            .await?;
        if !swapped {
            // Someone else was faster: watch their lease from now on.
            *seen = None;
            return Ok(None);
        }
        tracing::info!(node = %self.id, "this server holds the HA lease: becoming active");
        observed.send_replace(Some(mine));
        Ok(Some(ActiveLease {
            node: Arc::clone(self),
            state: Arc::new(Mutex::new(Held {
                raw: Some(raw),
                renewed_at: started,
            })),
        }))
    }
}

/// What the active node knows of its lease.
struct Held {
    /// The bytes it last wrote and knows to be stored; `None` once released.
    raw: Option<Vec<u8>>,
    /// When the last successful write started.
    renewed_at: Instant,
}

/// The lease, held by this node: renew it until the process ends, release it on a clean
/// stop.
#[derive(Clone)]
pub struct ActiveLease {
    node: Arc<Node>,
    state: Arc<Mutex<Held>>,
}

impl std::fmt::Debug for ActiveLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveLease")
            .field("node", &self.node.id)
            .finish_non_exhaustive()
    }
}

/// Why the active node must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseLost {
    /// Another node holds the lease.
    #[error("another server holds the HA lease")]
    TakenOver,
    /// No renewal succeeded in time.
    #[error("the HA lease could not be renewed within {0:?}")]
    NotRenewed(Duration),
}

/// What one renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// The lease is ours for another term.
    Renewed,
    /// Another node holds the lease.
    TakenOver,
    /// This process released the lease: it is stopping.
    Released,
}

impl ActiveLease {
    /// The settings of the holder.
    #[must_use]
    pub fn settings(&self) -> &HaSettings {
        &self.node.settings
    }

    /// Renews the lease every [`HaSettings::renew_every`] until it is lost or released.
    ///
    /// Returns `Err` when the lease is lost, at the latest [`HaSettings::fail_stop_after`]
    /// after the last successful renewal started: the caller must then stop serving at once.
    /// Returns `Ok` once [`ActiveLease::release`] gave the lease up: the process is stopping
    /// by its own choice, and a renewal that finds the lease gone is no loss.
    pub async fn keep(&self) -> Result<(), LeaseLost> {
        let settings = &self.node.settings;
        let lost = LeaseLost::NotRenewed(settings.fail_stop_after());
        let mut next_attempt = self.state.lock().await.renewed_at + settings.renew_every();
        loop {
            let deadline = {
                let held = self.state.lock().await;
                if held.raw.is_none() {
                    return Ok(());
                }
                held.renewed_at + settings.fail_stop_after()
            };
            tokio::time::sleep_until(next_attempt.min(deadline)).await;
            if self.state.lock().await.raw.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(lost);
            }
            match tokio::time::timeout_at(deadline, self.renew()).await {
                Ok(Ok(Renewal::Renewed)) => {
                    next_attempt = self.state.lock().await.renewed_at + settings.renew_every();
                }
                Ok(Ok(Renewal::Released)) => return Ok(()),
                Ok(Ok(Renewal::TakenOver)) => return Err(LeaseLost::TakenOver),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot renew the HA lease; retrying");
                    next_attempt = Instant::now() + settings.renew_every() / 4;
                }
                Err(_) => return Err(lost),
            }
        }
    }

    /// One renewal.
    async fn renew(&self) -> Result<Renewal, HaError> {
        let mut held = self.state.lock().await;
        let Some(current) = held.raw.clone() else {
            return Ok(Renewal::Released);
        };
        let next = self.node.new_lease()?.encode();
        let started = Instant::now();
        match self
            .node
            .backend
            .compare_and_swap(LEASE_KEY, Some(&current), Some(next.clone()))
            .await
        {
            Ok(true) => {
                held.raw = Some(next);
                held.renewed_at = started;
                Ok(Renewal::Renewed)
            }
            Ok(false) => {
                // An earlier renewal whose answer was lost may have been applied: then the
                // stored bytes are ours, and the lease is still held.
                let stored = self.node.backend.get(LEASE_KEY).await?;
                match stored.as_deref().and_then(Lease::decode) {
                    Some(lease) if lease.holder == self.node.id => {
                        held.raw = stored;
                        Ok(Renewal::Renewed)
                    }
                    _ => Ok(Renewal::TakenOver),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes the lease if this node still holds it, so a standby takes over at once. Best
    /// effort: a failure leaves the lease to expire.
    pub async fn release(&self) {
        let mut held = self.state.lock().await;
        let Some(current) = held.raw.take() else {
            return;
        };
        match self
            .node
            .backend
            .compare_and_swap(LEASE_KEY, Some(&current), None)
            .await
        {
            Ok(true) => tracing::info!("released the HA lease"),
            Ok(false) => tracing::warn!("the HA lease was no longer ours to release"),
            Err(err) => tracing::warn!(error = %err, "cannot release the HA lease; it expires"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arca_storage::MemoryBackend;

    fn settings(addr: &str) -> HaSettings {
        HaSettings {
            lease_ttl: Duration::from_secs(10),
            api_addr: addr.to_owned(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_node_is_active_and_another_takes_over_after_the_lease_time() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let a = Arc::new(Node::new(Arc::clone(&backend), settings("http://a")).unwrap());
        let b = Arc::new(Node::new(Arc::clone(&backend), settings("http://b")).unwrap());
        let (seen_a, _) = watch::channel(None);
        let (seen_b, seen_b_rx) = watch::channel(None);

        // A free lease is taken at once.
        let lease_a = a.acquire(&seen_a).await.unwrap();
        // B waits while A renews, however long, and sees A as the active node.
        let keeper = {
            let lease_a = lease_a.clone();
            tokio::spawn(async move { lease_a.keep().await })
        };
        let waiting = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.acquire(&seen_b).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished());
        assert_eq!(
            seen_b_rx.borrow().as_ref().map(|l| l.address.clone()),
            Some("http://a".to_owned())
        );

        // A stops renewing (as if killed): B takes over within ttl + poll.
        keeper.abort();
        let stopped = Instant::now();
        waiting.await.unwrap().unwrap();
        let took = stopped.elapsed();
        assert!(
            took <= Duration::from_secs(10) + Duration::from_secs(1) + Duration::from_secs(2),
            "{took:?}"
        );
        // Stopped for longer than 2 ttl / 3, A would have stopped by itself; and a renewal
        // now finds the lease in B's hands.
        assert!(matches!(
            lease_a.keep().await,
            Err(LeaseLost::NotRenewed(_))
        ));
        assert_eq!(lease_a.renew().await.unwrap(), Renewal::TakenOver);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_the_next_poll() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let a = Arc::new(Node::new(Arc::clone(&backend), settings("http://a")).unwrap());
        let b = Arc::new(Node::new(Arc::clone(&backend), settings("http://b")).unwrap());
        let (seen, _) = watch::channel(None);
        let lease_a = a.acquire(&seen).await.unwrap();
        let (seen_b, _) = watch::channel(None);
        let waiting = tokio::spawn(async move { b.acquire(&seen_b).await.map(drop) });
        tokio::time::sleep(Duration::from_secs(3)).await;
        lease_a.release().await;
        let released = Instant::now();
        waiting.await.unwrap().unwrap();
        assert!(released.elapsed() <= Duration::from_secs(1));
    }

    /// A clean stop releases the lease while the keeper still runs; the keeper's next
    /// renewal finds the lease gone. That is the stop going as planned, not a loss that
    /// would make the server exit with the fail-stop code.
    #[tokio::test(start_paused = true)]
    async fn a_released_lease_ends_its_keeper_without_a_loss() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let a = Arc::new(Node::new(Arc::clone(&backend), settings("http://a")).unwrap());
        let (seen, _) = watch::channel(None);
        let lease = a.acquire(&seen).await.unwrap();
        let keeper = {
            let lease = lease.clone();
            tokio::spawn(async move { lease.keep().await })
        };
        // Let a few renewals go through, then release between two of them.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!keeper.is_finished());
        lease.release().await;
        assert_eq!(keeper.await.unwrap(), Ok(()));
        assert_eq!(backend.get(LEASE_KEY).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_node_that_cannot_renew_stops_before_a_standby_may_take_over() {
        use arca_storage::backend::faulty::FaultyBackend;
        let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let faulty = Arc::new(FaultyBackend::new(Arc::clone(&inner)));
        let a = Arc::new(
            Node::new(
                Arc::clone(&faulty) as Arc<dyn Backend>,
                settings("http://a"),
            )
            .unwrap(),
        );
        let (seen, _) = watch::channel(None);
        let lease = a.acquire(&seen).await.unwrap();
        let since = Instant::now();
        faulty.fail_all(true);
        assert_eq!(
            lease.keep().await,
            Err(LeaseLost::NotRenewed(Duration::from_secs(10) * 2 / 3))
        );
        // It gave up within 2/3 of the lease time: a standby waits the whole of it.
        assert!(since.elapsed() <= Duration::from_secs(10) * 2 / 3 + Duration::from_millis(10));
    }
}
