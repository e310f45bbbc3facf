//! Vault's HTTP API: the shared pieces (request bodies, tokens, the response envelope) and the
//! endpoint families, one file each.
//!
//! The wire types here are this layer's own; domain types never derive `Serialize` for it.

pub mod kv;
pub mod mounts;
pub mod sys;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, RequestId};
use crate::auth::TokenEntry;

/// Every Vault route this server knows.
pub(crate) fn routes() -> Router<AppState> {
    sys::routes().merge(mounts::routes())
}

/// A JSON request body, parsed with Vault's error shape: malformed JSON and wrong types are 400,
/// an oversized body 413, and an empty body reads as `{}`.
///
/// Parse errors never quote the input: a mistyped field might hold a secret.
#[derive(Debug)]
pub struct VaultJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for VaultJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "http: request body too large",
                )
            } else {
                ApiError::bad_request("failed to read the request body")
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body)
            .map(VaultJson)
            .map_err(|err| ApiError::bad_request(describe_json_error(&err)))
    }
}

/// Describes a JSON error without quoting any value from the input.
fn describe_json_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", err.line(), err.column());
    match err.classify() {
        Category::Syntax | Category::Eof => {
            format!("failed to parse JSON input: malformed JSON at {at}")
        }
        Category::Data => {
            let message = err.to_string();
            // serde's "missing field `x`" and "unknown field `x`" name fields, never values.
            if message.starts_with("missing field") || message.starts_with("unknown field") {
                let field = message.split(" at line").next().unwrap_or(&message);
                format!("failed to parse JSON input: {field}")
            } else {
                format!("failed to parse JSON input: a field has the wrong type or value at {at}")
            }
        }
        Category::Io => "failed to read the request body".to_owned(),
    }
}

/// The client token: `X-Vault-Token`, or `Authorization: Bearer`.
pub(crate) fn client_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim());
    }
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Resolves the request's token. 503 when sealed; 403 `permission denied` when the token is
/// missing or unknown (Vault answers both alike).
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<TokenEntry, ApiError> {
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let token = client_token(headers).ok_or_else(ApiError::permission_denied)?;
    if token.is_empty() {
        return Err(ApiError::permission_denied());
    }
    state
        .arca
        .tokens()
        .lookup(token)
        .await?
        .ok_or_else(ApiError::permission_denied)
}

/// As [`authenticate`], and the token must hold `sudo` on the path. Until ACL policies exist,
/// only the `root` policy grants it.
pub(crate) async fn authenticate_sudo(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<TokenEntry, ApiError> {
    let entry = authenticate(state, headers).await?;
    if entry.policies.iter().any(|p| p == "root") {
        Ok(entry)
    } else {
        Err(ApiError::permission_denied())
    }
}

/// Vault's response envelope around `data`.
pub(crate) fn envelope(request_id: &RequestId, data: Value) -> Value {
    json!({
        "request_id": request_id.0,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

/// RFC 3339 in UTC with seconds, as Vault formats times.
pub(crate) fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            key: String,
        }
        let err = serde_json::from_slice::<Body>(br#"{"key": 123456789}"#).unwrap_err();
        let text = describe_json_error(&err);
        assert!(!text.contains("123456789"), "{text}");
        let err = serde_json::from_slice::<Body>(br#"{}"#).unwrap_err();
        assert_eq!(
            describe_json_error(&err),
            "failed to parse JSON input: missing field `key`"
        );
        let err = serde_json::from_slice::<Body>(br#"{"key": "#).unwrap_err();
        assert!(describe_json_error(&err).contains("malformed JSON"));
    }

    #[test]
    fn tokens_come_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_token(&headers), None);
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(client_token(&headers), Some("abc"));
        headers.insert("x-vault-token", "xyz".parse().unwrap());
        assert_eq!(client_token(&headers), Some("xyz"));
    }

    #[test]
    fn times_are_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
