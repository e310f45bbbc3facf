//! Authentication: who is calling.
//!
//! - [`token`]: the token store. Tokens are random strings handed to clients and stored only
//!   as a keyed hash behind the barrier, with TTLs, use counts, renewal, parent/child
//!   revocation, accessors and response-wrapping tokens.
//! - [`approle`]: Vault's AppRole method: a role id and a secret id (both random, both kept
//!   only as keyed hashes) exchanged for a token, with use counts, TTLs and CIDR bounds.
//! - [`duration`] and [`cidr`]: Vault's duration syntax and CIDR blocks, shared by both.
//!
//! Every method ends in a [`TokenEntry`]; the server turns it into one request context and
//! checks its policies (see [`crate::policy`]).

pub mod approle;
pub mod cidr;
pub mod duration;
pub mod token;

pub use approle::AppRoleStore;
pub use token::{TokenEntry, TokenKind, TokenRequest, TokenSecret, TokenStore};

use arca_storage::BarrierError;
use arca_storage::keys::RandomError;

/// Errors of the authentication layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The store is sealed: no token can be created or looked up.
    #[error("the store is sealed")]
    Sealed,
    /// A token given to be stored (a fixed root token) is not acceptable. The message never
    /// contains the token.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The token, accessor, role or secret id named does not exist (or has expired).
    #[error("not found")]
    NotFound,
    /// The token cannot be renewed.
    #[error("lease is not renewable")]
    NotRenewable,
    /// The request is not acceptable; the message says why and holds no secret.
    #[error("{0}")]
    InvalidRequest(String),
    /// Credentials presented to log in are wrong, expired, used up, or from an address
    /// outside their bounds. Deliberately one variant: the caller learns nothing of which.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A stored token entry does not parse. Opaque; the log says which path.
    #[error("a stored token entry is damaged")]
    CorruptEntry,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The barrier or its backend failed.
    #[error(transparent)]
    Barrier(BarrierError),
}

/// Revokes expired tokens and removes expired AppRole secret ids, now and then every
/// `every`, through their expiry indexes; idle while the store is sealed. Runs until the
/// returned task is aborted.
#[must_use]
pub fn spawn_tidy(
    tokens: TokenStore,
    approle: AppRoleStore,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = token::now_secs();
            match tokens.tidy(now).await {
                Ok(0) | Err(AuthError::Sealed) => {}
                Ok(n) => tracing::info!(revoked = n, "expired tokens revoked"),
                Err(err) => tracing::warn!(error = %err, "token tidy failed"),
            }
            match approle.tidy(now).await {
                Ok(0) | Err(AuthError::Sealed) => {}
                Ok(n) => tracing::info!(removed = n, "expired AppRole secret ids removed"),
                Err(err) => tracing::warn!(error = %err, "AppRole tidy failed"),
            }
        }
    })
}

impl From<BarrierError> for AuthError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Barrier(other),
        }
    }
}
