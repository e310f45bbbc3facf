//! Vault's HTTP API: the shared pieces (request bodies, tokens, the response envelope) and the
//! endpoint families, one file each.
//!
//! The wire types here are this layer's own; domain types never derive `Serialize` for it.

pub mod audit;
pub mod auth;
pub mod events;
pub mod kv;
pub mod mounts;
pub mod policy;
pub mod secrets_metrics;
pub mod sys;
pub mod transit;
pub mod wrapping;

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, RequestId};
use crate::auth::{TokenEntry, TokenKind};

/// Every Vault route this server knows.
pub(crate) fn routes() -> Router<AppState> {
    sys::routes()
        .merge(mounts::routes())
        .merge(auth::routes())
        .merge(policy::routes())
        .merge(wrapping::routes())
        .merge(audit::routes())
        .merge(transit::routes())
        .merge(events::routes())
        .merge(secrets_metrics::routes())
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

/// The token of `X-Vault-Token` alone, for the AWS APIs, where `Authorization` carries a
/// SigV4 signature rather than a bearer token.
pub(crate) fn client_token_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub(crate) use crate::policy::Capability;

/// The internal header carrying the peer's address from the connection to the handlers (set
/// by the server's outermost layer, which first removes any copy a client sent).
pub(crate) const REMOTE_ADDR_HEADER: &str = "x-arca-remote-addr";

/// Who is calling, once [`authorize`] has let a request through. Holds no secret: the token
/// itself is never kept here, only its accessor.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The accessor of the caller's token.
    pub token_accessor: String,
    /// The token's policies.
    pub policies: Vec<String>,
    /// The identity behind the token, e.g. the AppRole role name.
    pub entity: Option<String>,
    /// The token's metadata.
    // Part of the request context every handler gets; not every handler needs each field.
    #[allow(dead_code)]
    pub metadata: BTreeMap<String, String>,
    /// The peer address of the connection.
    #[allow(dead_code)]
    pub remote_addr: Option<IpAddr>,
}

/// The peer address the server's outer layer recorded for this request.
pub(crate) fn remote_addr(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get(REMOTE_ADDR_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Resolves the token, checks that its policies grant `cap` on `path` (the request path after
/// `/v1/`, e.g. `secret/data/app/db`; a list is checked on the path with a trailing `/`),
/// counts a use of the token, and returns the caller. 403 `permission denied` (nothing else)
/// when denied; 503 when sealed. The root policy allows everything.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    cap: Capability,
) -> Result<Caller, ApiError> {
    authorize_all(state, headers, path, &[cap]).await
}

/// As [`authorize`], requiring every capability in `caps` (e.g. `[Update, Sudo]` for a
/// root-protected endpoint). One use of the token is counted, after the check passes.
pub(crate) async fn authorize_all(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    caps: &[Capability],
) -> Result<Caller, ApiError> {
    let entry = resolve(state, headers).await?;
    let acl = state.arca.policies().acl(&entry.policies).await?;
    if !caps.iter().all(|cap| acl.allows(path, *cap)) {
        return Err(ApiError::permission_denied());
    }
    let entry = use_resolved(state, headers, entry).await?;
    Ok(caller_of(entry, headers))
}

/// As [`authorize`] for a write that needs `create` on a new key and `update` on an existing
/// one (Vault's existence check). `exists` runs only when its answer matters: when the
/// policies grant one of the two and not the other. A token that may do both (root, or a
/// policy with `create` and `update`) writes without that extra read of the key.
pub(crate) async fn authorize_create_or_update(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    exists: impl Future<Output = bool>,
) -> Result<Caller, ApiError> {
    let entry = resolve(state, headers).await?;
    let acl = state.arca.policies().acl(&entry.policies).await?;
    let allowed = match (
        acl.allows(path, Capability::Create),
        acl.allows(path, Capability::Update),
    ) {
        (true, true) => true,
        (false, false) => false,
        // Only `create`: allowed on a new key. Only `update`: on an existing one.
        (create_only, _) => create_only != exists.await,
    };
    if !allowed {
        return Err(ApiError::permission_denied());
    }
    let entry = use_resolved(state, headers, entry).await?;
    Ok(caller_of(entry, headers))
}

/// The request context of a resolved token.
pub(crate) fn caller_of(entry: TokenEntry, headers: &HeaderMap) -> Caller {
    Caller {
        token_accessor: entry.accessor,
        policies: entry.policies,
        entity: entry.entity,
        metadata: entry.meta,
        remote_addr: remote_addr(headers),
    }
}

/// Looks the request's token up without counting a use: 503 when sealed; 403 when it is
/// missing, unknown, expired, a wrapping token, or used from outside its CIDR bounds.
pub(crate) async fn resolve(state: &AppState, headers: &HeaderMap) -> Result<TokenEntry, ApiError> {
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let token = client_token(headers)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::permission_denied)?;
    let entry = state
        .arca
        .tokens()
        .lookup(token)
        .await?
        .ok_or_else(ApiError::permission_denied)?;
    if entry.kind != TokenKind::Service
        || !crate::auth::cidr::allowed(&entry.bound_cidrs, remote_addr(headers))
    {
        return Err(ApiError::permission_denied());
    }
    Ok(entry)
}

/// Counts one use of a token [`resolve`] just found, when it has a use limit. A token without
/// one (most tokens, root included) has nothing to count, and is taken as resolved rather than
/// looked up a second time (a second HMAC of the token, cache lookup and copy of its entry:
/// about a tenth of the server's CPU per KV read or transit encryption). A token revoked
/// between the two steps is served this one request, as it would be if it were revoked just
/// after the count.
async fn use_resolved(
    state: &AppState,
    headers: &HeaderMap,
    resolved: TokenEntry,
) -> Result<TokenEntry, ApiError> {
    if resolved.num_uses == 0 {
        return Ok(resolved);
    }
    use_token(state, headers).await
}

/// Counts one use of the request's token (see [`crate::auth::TokenStore::use_token`]).
async fn use_token(state: &AppState, headers: &HeaderMap) -> Result<TokenEntry, ApiError> {
    let token = client_token(headers)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::permission_denied)?;
    state
        .arca
        .tokens()
        .use_token(token)
        .await?
        .ok_or_else(ApiError::permission_denied)
}

/// Resolves the request's token and counts a use, without a policy check: for endpoints any
/// valid token may call. 503 when sealed; 403 `permission denied` when the token is missing
/// or unknown (Vault answers both alike).
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<TokenEntry, ApiError> {
    let resolved = resolve(state, headers).await?;
    use_resolved(state, headers, resolved).await
}

/// Vault's response envelope around `data`, serialized straight from its parts. The hot
/// paths (KV reads and writes, transit) answer through it: building the same answer as a
/// `Value` first costs a map and an allocated key per field. [`envelope`] is its `Value`
/// form, for answers that are edited after they are built; a test keeps the two alike.
#[derive(serde::Serialize)]
pub(crate) struct Envelope<'a, T> {
    request_id: &'a str,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u64,
    data: T,
    wrap_info: Option<()>,
    warnings: Option<()>,
    auth: Option<()>,
}

impl<'a, T: serde::Serialize> Envelope<'a, T> {
    pub(crate) fn new(request_id: &'a RequestId, data: T) -> Self {
        Self {
            request_id: &request_id.0,
            lease_id: "",
            renewable: false,
            lease_duration: 0,
            data,
            wrap_info: None,
            warnings: None,
            auth: None,
        }
    }
}

/// Vault's response envelope around `data`, as a `Value`.
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
    fn the_typed_envelope_is_the_value_envelope() {
        let id = RequestId("7f1e0c2a-0000-4000-8000-000000000000".to_owned());
        let data = json!({ "ciphertext": "vault:v1:abc", "key_version": 1 });
        let typed = serde_json::to_value(Envelope::new(&id, &data)).unwrap();
        assert_eq!(typed, envelope(&id, data));
        assert_eq!(typed["wrap_info"], Value::Null);
        assert_eq!(typed["request_id"], json!(id.0));
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
