//! Distribution sessions: one per PERMIT, the record every later read is checked against.
//!
//! A session is stored at `zt/session/<id>` (JSON, behind the barrier) and indexed by expiry at
//! `zt/session-expiry/<20-digit unix secs>/<id>`; both are written in one batch. Expired
//! sessions are purged through the index, oldest first, stopping at the first one still
//! alive: no scan of live sessions.
//!
//! Spending a use is a compare-and-swap of the whole record from what was read to the record
//! with one use less, retried on conflict: of two concurrent reads of the last use, exactly one
//! succeeds and the other sees the session spent. Revocation is the same kind of write, so a
//! read racing a revocation either completes before it or is refused.

use arca_storage::keys::fill_random;
use arca_storage::{Barrier, BarrierOp};
use serde::{Deserialize, Serialize};

use super::{ZtError, expiry_index_key};

/// Where sessions live.
pub const SESSION_PREFIX: &str = "zt/session/";
/// The session expiry index.
pub const SESSION_EXPIRY_PREFIX: &str = "zt/session-expiry/";

/// A distribution session. Holds no secret: the value is read again from its store at each
/// use, and the keys it was sealed to are the requester's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Record version: 1.
    pub v: u32,
    /// The id (32 hex digits).
    pub id: String,
    /// The role that decided.
    pub role: String,
    /// The secret reference.
    pub secret: String,
    /// The principal it was distributed to.
    pub principal: String,
    /// Every identity verified at the decision.
    pub identities: Vec<String>,
    /// The risk score of the decision.
    pub risk: u32,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Reads allowed in all.
    pub max_uses: u32,
    /// Reads left.
    pub remaining_uses: u32,
    /// Zones reads may come from (empty: any).
    pub zones: Vec<String>,
    /// Whether the value must be sealed to an ephemeral key.
    pub forward_secrecy: bool,
    /// Whether deliveries are split.
    pub split: bool,
    /// Whether envelopes are signed.
    pub signed: bool,
    /// Revoked (refused from then on).
    pub revoked: bool,
}

/// Why a session cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such session (or purged after expiry).
    NotFound,
    /// Past its expiry.
    Expired,
    /// No reads left.
    Spent,
    /// Revoked.
    Revoked,
}

impl Refusal {
    /// The reason, as decisions and validate answers give it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "no such session",
            Self::Expired => "the session has expired",
            Self::Spent => "the session's uses are spent",
            Self::Revoked => "the session was revoked",
        }
    }
}

impl Session {
    /// Whether it can be used at `now`, and why not.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn usable_at(&self, now: u64) -> Result<(), Refusal> {
        if self.revoked {
            Err(Refusal::Revoked)
        } else if self.expires_at <= now {
            Err(Refusal::Expired)
        } else if self.remaining_uses == 0 {
            Err(Refusal::Spent)
        } else {
            Ok(())
        }
    }

    /// Which read the next use is (1 for the first).
    #[must_use]
    pub fn next_read(&self) -> u32 {
        self.max_uses - self.remaining_uses + 1
    }
}

/// A fresh session id.
pub(crate) fn new_id() -> Result<String, ZtError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes).map_err(|_| ZtError::Random)?;
    Ok(hex::encode(bytes))
}

fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn encode(session: &Session) -> Result<Vec<u8>, ZtError> {
    serde_json::to_vec(session)
        .map_err(|e| ZtError::Internal(format!("cannot encode a session: {e}")))
}

/// Stores a new session with its index entry, in one batch.
pub(crate) async fn create(barrier: &Barrier, session: &Session) -> Result<(), ZtError> {
    let bytes = encode(session)?;
    let path = format!("{SESSION_PREFIX}{}", session.id);
    let index = expiry_index_key(SESSION_EXPIRY_PREFIX, session.expires_at, &session.id);
    barrier
        .batch(&[BarrierOp::Put(&path, &bytes), BarrierOp::Put(&index, &[])])
        .await?;
    Ok(())
}

async fn load(barrier: &Barrier, id: &str) -> Result<Option<(Session, Vec<u8>)>, ZtError> {
    if !is_id(id) {
        return Ok(None);
    }
    let Some(stored) = barrier.get(&format!("{SESSION_PREFIX}{id}")).await? else {
        return Ok(None);
    };
    let raw = stored.expose_secret().to_vec();
    let session: Session = serde_json::from_slice(&raw)
        .map_err(|_| ZtError::Internal(format!("the stored session {id} is damaged")))?;
    Ok(Some((session, raw)))
}

/// Reads a session.
pub(crate) async fn get(barrier: &Barrier, id: &str) -> Result<Option<Session>, ZtError> {
    Ok(load(barrier, id).await?.map(|(s, _)| s))
}

/// Spends one use of session `id` at `now` after `check` accepts it, atomically.
/// Returns the session as it was *before* the use (its `next_read` is this read).
pub(crate) async fn spend(
    barrier: &Barrier,
    id: &str,
    now: u64,
    check: impl Fn(&Session) -> Result<(), String>,
) -> Result<Result<Session, SpendRefusal>, ZtError> {
    loop {
        let Some((session, raw)) = load(barrier, id).await? else {
            return Ok(Err(SpendRefusal::Session(Refusal::NotFound)));
        };
        if let Err(refusal) = session.usable_at(now) {
            return Ok(Err(SpendRefusal::Session(refusal)));
        }
        if let Err(reason) = check(&session) {
            return Ok(Err(SpendRefusal::Check(reason)));
        }
        let mut next = session.clone();
        next.remaining_uses -= 1;
        if barrier
            .compare_and_swap(
                &format!("{SESSION_PREFIX}{id}"),
                Some(&raw),
                Some(&encode(&next)?),
            )
            .await?
        {
            return Ok(Ok(session));
        }
        // Another read or a revocation won the race: look again.
    }
}

/// Why a use was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpendRefusal {
    /// The session's state.
    Session(Refusal),
    /// The caller's check (principal, zone).
    Check(String),
}

/// Revokes session `id`; `Ok(false)` when there is none.
pub(crate) async fn revoke(barrier: &Barrier, id: &str) -> Result<Option<Session>, ZtError> {
    loop {
        let Some((session, raw)) = load(barrier, id).await? else {
            return Ok(None);
        };
        if session.revoked {
            return Ok(Some(session));
        }
        let mut next = session.clone();
        next.revoked = true;
        if barrier
            .compare_and_swap(
                &format!("{SESSION_PREFIX}{id}"),
                Some(&raw),
                Some(&encode(&next)?),
            )
            .await?
        {
            return Ok(Some(next));
        }
    }
}
