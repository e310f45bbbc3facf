//! Authentication: who is calling.
//!
//! Today this holds the token store ([`token`]): tokens are random strings handed to clients,
//! stored only as a keyed hash behind the barrier. AppRole, SigV4 and mTLS come later and
//! resolve to the same request context.

pub mod token;

pub use token::{TokenEntry, TokenSecret, TokenStore};

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

impl From<BarrierError> for AuthError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::Sealed,
            other => Self::Barrier(other),
        }
    }
}
