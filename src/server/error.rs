//! Errors become words here, and only here: every domain error maps to a status code and a
//! Vault-shaped body `{"errors": [...]}`. Details that could help an attacker or that might
//! carry secret material are logged (without values) and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::policy::PolicyError;
use crate::seal::SealError;
use arca_storage::BarrierError;

/// The text Vault clients look for when a server is sealed.
pub const SEALED_MESSAGE: &str = "Vault is sealed";

/// An error answered to a client: a status and the messages of the `errors` array.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
}

impl ApiError {
    /// An error with one message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403 `permission denied`, and nothing else about the path.
    #[must_use]
    pub fn permission_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission denied")
    }

    /// 503 `Vault is sealed`.
    #[must_use]
    pub fn sealed() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, SEALED_MESSAGE)
    }

    /// 404 with an empty `errors` array, Vault's answer for a missing secret.
    #[must_use]
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: Vec::new(),
        }
    }

    /// 500 with a generic message; the detail goes to the log only.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errors": self.errors }))).into_response()
    }
}

impl From<BarrierError> for ApiError {
    fn from(err: BarrierError) -> Self {
        match err {
            BarrierError::Sealed => Self::sealed(),
            BarrierError::NotInitialized => {
                Self::new(StatusCode::BAD_REQUEST, "Vault is not initialized")
            }
            BarrierError::ValueTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
            }
            BarrierError::ReservedPath { .. } => Self::bad_request(err.to_string()),
            other => Self::internal(&other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Sealed => Self::sealed(),
            AuthError::InvalidToken(_) => Self::permission_denied(),
            other => Self::internal(&other),
        }
    }
}

impl From<SealError> for ApiError {
    fn from(err: SealError) -> Self {
        use SealError as E;
        match err {
            E::Sealed => Self::sealed(),
            E::NotInitialized => Self::bad_request("Vault is not initialized"),
            E::AlreadyInitialized => Self::bad_request("Vault is already initialized"),
            E::BadShare(_)
            | E::DuplicateShare
            | E::InvalidShares
            | E::InvalidPassphrase
            | E::InvalidParameters(_)
            | E::RekeyNotStarted
            | E::RekeyNonceMismatch
            | E::RekeyInProgress
            | E::VerificationPending
            | E::NoVerificationPending
            | E::WrongSealKind => Self::bad_request(err.to_string()),
            E::UnwrapFailed | E::KeyIdMismatch { .. } => {
                tracing::error!(error = %err, "auto-unseal failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }
            E::Barrier(inner) => inner.into(),
            E::Auth(inner) => inner.into(),
            other => Self::internal(&other),
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::Sealed => Self::sealed(),
            PolicyError::Parse(_) | PolicyError::InvalidName(_) | PolicyError::Protected(_) => {
                Self::bad_request(err.to_string())
            }
            PolicyError::Barrier(inner) => inner.into(),
            other => Self::internal(&other),
        }
    }
}
