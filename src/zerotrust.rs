//! Zero-trust distribution: every request for a secret is hostile until arca has verified who
//! sends it, what workload it runs, and where from; then a deterministic risk score decides
//! PERMIT, DENY or STEP_UP, and what is handed out is protected (time-bound, usage-limited,
//! zone-restricted, forward-secret, split, signed).
//!
//! Nothing the caller merely asserts counts. The evidence is:
//!
//! - **identity factors** arca verifies itself ([`role::FactorKind`]): an arca token, a token
//!   from an AppRole login (it carries its role), a SigV4 signature by an arca access key, and
//!   a TLS client certificate that chains to the role's own CA bundle ([`mtls`]);
//! - **workload attestation** ([`attestation`]): a document signed by an attestor the role
//!   registers, over a one-time nonce arca issued, with measurements the role allows;
//! - **network context** ([`network`]): the TCP peer's address (forwarded-for headers only
//!   from the role's trusted proxies), mapped to a zone and region;
//! - **behaviour**: the principal's request rate and recent denials ([`risk::Activity`]);
//! - **authorisation**: the secret must be one the role distributes, and the caller's ACL
//!   policies must grant `read` on it.
//!
//! [`risk`] turns the evidence into a score with one line per factor (the table is in its
//! documentation and in the README), and a decision. Every decision, denials and step-ups
//! included, is written to the audit log with its lines and reasons and never with a value
//! ([`distribute`]). A PERMIT creates a [`session`] and an [`envelope`]: the value sealed with
//! HPKE to the requester's ephemeral X25519 key, or split with Shamir among named recipients,
//! each share sealed to its recipient; arca signs the envelope with its Ed25519 key
//! ([`keys`]), whose public half is published for offline verification. The formats are in
//! `src/zerotrust/FORMAT.md`.
//!
//! # What is stored (behind the barrier)
//!
//! | path | holds |
//! |---|---|
//! | `zt/role/<name>` | a role definition (JSON) |
//! | `zt/nonce/<nonce>`, `zt/nonce-expiry/<secs>/<nonce>` | challenge nonces and their expiry index |
//! | `zt/session/<id>`, `zt/session-expiry/<secs>/<id>` | sessions and their expiry index |
//! | `zt/signing-key` | arca's Ed25519 signing seed |
//!
//! # Limits
//!
//! Role lists hold at most 256 entries; a CA bundle at most 256 KiB; attestation documents at
//! most 16 KiB, 64 measurements, 900 s of validity; nonces live 300 s; a distribution at most
//! one day and 1,000,000 reads; split among at most 255 recipients (2 ≤ T ≤ N). Request rates
//! and recent denials are kept in memory for at most 65,536 principals and are forgotten at
//! a restart.

pub mod attestation;
pub mod distribute;
pub mod envelope;
pub mod keys;
pub mod mtls;
pub mod network;
pub mod risk;
pub mod role;
pub mod session;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arca_storage::{Barrier, BarrierError};

pub use attestation::Challenge;
pub use mtls::{ClientCaRegistry, PeerCertificates};
pub use risk::{Decision, Outcome};
pub use role::{Role, RoleDefinition};
pub use session::Session;

/// Errors of zero-trust distribution. Messages never hold a value or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZtError {
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// The request is malformed (a 400): nothing was evaluated or distributed.
    #[error("{0}")]
    InvalidRequest(String),
    /// No such role or session.
    #[error("{0}")]
    NotFound(String),
    /// A sealed value or share did not open: wrong key, other context, or a changed byte.
    #[error("the sealed value does not open with this key")]
    OpenFailed,
    /// An envelope's signature is missing or does not verify.
    #[error("the envelope's signature does not verify")]
    BadSignature,
    /// The OS random generator failed.
    #[error("the OS random generator failed")]
    Random,
    /// The decision could not be audited; nothing was distributed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Something failed inside arca; the text is for logs.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<BarrierError> for ZtError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Unix seconds now.
#[must_use]
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key of an expiry-index record: `<prefix><20-digit secs>/<id>`, so the index sorts by
/// time.
pub(crate) fn expiry_index_key(prefix: &str, secs: u64, id: &str) -> String {
    format!("{prefix}{secs:020}/{id}")
}

/// Removes every record of `record_prefix` whose index entry under `index_prefix` is at or
/// before `now`, reading the index from its start and stopping at the first later entry.
async fn purge_expired(
    barrier: &Barrier,
    index_prefix: &str,
    record_prefix: &str,
    now: u64,
) -> Result<usize, ZtError> {
    let mut purged = 0;
    loop {
        let page = barrier.list_page(index_prefix, None, 128).await?;
        if page.keys.is_empty() {
            return Ok(purged);
        }
        for key in &page.keys {
            let parsed = key
                .strip_prefix(index_prefix)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(secs, id)| secs.parse::<u64>().ok().map(|s| (s, id)));
            let Some((secs, id)) = parsed else {
                barrier.delete(key).await?;
                continue;
            };
            if secs > now {
                return Ok(purged);
            }
            let record = format!("{record_prefix}{id}");
            barrier
                .batch(&[
                    arca_storage::BarrierOp::Delete(&record),
                    arca_storage::BarrierOp::Delete(key),
                ])
                .await?;
            purged += 1;
        }
        if page.next.is_none() {
            return Ok(purged);
        }
    }
}

/// Zero-trust state of an [`Arca`](crate::Arca): the stored roles, nonces and sessions
/// (behind the barrier), the client-CA registry the TLS layer verifies against, and the
/// in-memory activity counters.
#[derive(Debug)]
pub struct ZeroTrust {
    barrier: Arc<Barrier>,
    client_cas: Arc<ClientCaRegistry>,
    activity: risk::Activity,
    access_guard: crate::lifecycle::access::AccessGuard,
}

impl ZeroTrust {
    /// Zero-trust state over `barrier`.
    #[must_use]
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            client_cas: Arc::new(ClientCaRegistry::new()),
            activity: risk::Activity::default(),
            access_guard: crate::lifecycle::access::AccessGuard::new(),
        }
    }

    /// The registry of client CAs (the server's TLS configuration verifies against it).
    #[must_use]
    pub fn client_cas(&self) -> &Arc<ClientCaRegistry> {
        &self.client_cas
    }

    pub(crate) fn barrier(&self) -> &Barrier {
        &self.barrier
    }

    pub(crate) fn activity(&self) -> &risk::Activity {
        &self.activity
    }

    /// The guard of Secrets Manager secrets' access policies for zero-trust reads.
    pub(crate) fn access_guard(&self) -> &crate::lifecycle::access::AccessGuard {
        &self.access_guard
    }

    /// Writes role `name` (create or replace), and refreshes the client-CA registry.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] for a definition [`Role::parse`] refuses; storage errors.
    pub async fn put_role(&self, name: &str, definition: RoleDefinition) -> Result<Role, ZtError> {
        let role = Role::parse(name, definition)?;
        role::store(&self.barrier, &role).await?;
        self.refresh_client_cas().await?;
        Ok(role)
    }

    /// Reads role `name`.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] for a malformed name; storage errors.
    pub async fn role(&self, name: &str) -> Result<Option<Role>, ZtError> {
        role::load(&self.barrier, name).await
    }

    /// Deletes role `name`; `false` when there was none. Its sessions stay until they expire
    /// but can no longer be read (reads re-check the role).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn delete_role(&self, name: &str) -> Result<bool, ZtError> {
        role::check_name(name)?;
        let path = format!("{}{name}", role::ROLE_PREFIX);
        let existed = self.barrier.get(&path).await?.is_some();
        self.barrier.delete(&path).await?;
        self.refresh_client_cas().await?;
        Ok(existed)
    }

    /// Every role's name.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_roles(&self) -> Result<Vec<String>, ZtError> {
        role::list(&self.barrier).await
    }

    /// Rebuilds the client-CA registry from the stored roles.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn refresh_client_cas(&self) -> Result<(), ZtError> {
        let roles = role::all(&self.barrier).await?;
        self.client_cas.rebuild(&roles);
        Ok(())
    }

    /// Issues a challenge nonce.
    ///
    /// # Errors
    /// [`ZtError::Sealed`], [`ZtError::Random`], storage errors.
    pub async fn challenge(&self) -> Result<Challenge, ZtError> {
        attestation::issue(&self.barrier, now_secs()).await
    }

    /// Reads session `id`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, ZtError> {
        session::get(&self.barrier, id).await
    }

    /// Revokes session `id` at once; `None` when there is none.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn revoke_session(&self, id: &str) -> Result<Option<Session>, ZtError> {
        session::revoke(&self.barrier, id).await
    }

    /// arca's signing key (created on first use).
    ///
    /// # Errors
    /// [`ZtError::Sealed`], storage errors.
    pub async fn signing_key(&self) -> Result<keys::ArcaSigningKey, ZtError> {
        keys::ArcaSigningKey::load_or_create(&self.barrier).await
    }

    /// Removes expired nonces and sessions through their expiry indexes. Returns how many.
    ///
    /// # Errors
    /// [`ZtError::Sealed`], storage errors.
    pub async fn tidy(&self, now: u64) -> Result<usize, ZtError> {
        let nonces = purge_expired(
            &self.barrier,
            attestation::NONCE_EXPIRY_PREFIX,
            attestation::NONCE_PREFIX,
            now,
        )
        .await?;
        let sessions = purge_expired(
            &self.barrier,
            session::SESSION_EXPIRY_PREFIX,
            session::SESSION_PREFIX,
            now,
        )
        .await?;
        Ok(nonces + sessions)
    }
}

/// Keeps the client-CA registry in step with the seal (loaded after unseal, cleared on seal)
/// every second, and purges expired nonces and sessions every `every`. Runs until aborted.
#[must_use]
pub fn spawn_tidy(arca: Arc<crate::Arca>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<std::time::Instant> = None;
        loop {
            ticker.tick().await;
            let zt = arca.zerotrust();
            if arca.barrier().is_sealed() {
                if zt.client_cas().is_loaded() {
                    zt.client_cas().clear();
                }
                continue;
            }
            if !zt.client_cas().is_loaded()
                && let Err(err) = zt.refresh_client_cas().await
            {
                tracing::warn!(error = %err, "cannot load the zero-trust client CAs");
            }
            if last_purge.is_none_or(|t| t.elapsed() >= every) {
                last_purge = Some(std::time::Instant::now());
                match zt.tidy(now_secs()).await {
                    Ok(0) | Err(ZtError::Sealed) => {}
                    Ok(n) => tracing::info!(
                        removed = n,
                        "expired zero-trust nonces and sessions removed"
                    ),
                    Err(err) => tracing::warn!(error = %err, "zero-trust tidy failed"),
                }
            }
        }
    })
}
