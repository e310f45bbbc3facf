//! Response wrapping: the answer to a request is kept behind a single-use, expiring token, and
//! the caller gets only that token (`wrap_info`). Whoever unwraps it first gets the answer;
//! a second unwrap, or one after the TTL, finds nothing. So a secret can travel through an
//! untrusted hand (a CI log, a ticket) and any interception shows as a failed unwrap.
//!
//! - [`around`] wraps every successful JSON answer that carries `data` or `auth` when the
//!   request has `X-Vault-Wrap-TTL` (any read, token creation, AppRole secret ids, ...);
//! - `sys/wrapping/wrap` wraps the request's own body (and insists on the header);
//! - `sys/wrapping/unwrap`, `lookup` and `rewrap` take the wrapping token in the body or as
//!   the client token.
//!
//! The wrapped answer is stored behind the barrier beside the wrapping token's entry (see
//! [`crate::auth::token`]); unwrapping removes the entry with a compare-and-swap first, so
//! two racing unwraps cannot both succeed.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use super::auth::{Op, VaultRequest, method_not_allowed};
use super::{AppState, Capability, authorize, client_token, envelope, rfc3339};
use crate::auth::TokenEntry;
use crate::auth::duration::parse_duration;
use crate::server::{ApiError, RequestId};

/// The request header asking for a wrapped answer.
pub(crate) const WRAP_TTL_HEADER: &str = "x-vault-wrap-ttl";

/// The error of a wrapping token that is unknown, used or expired.
const INVALID_WRAPPING_TOKEN: &str = "wrapping token is not valid or does not exist";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/wrapping/wrap", any(wrap))
        .route("/v1/sys/wrapping/unwrap", any(unwrap))
        .route("/v1/sys/wrapping/lookup", any(lookup))
        .route("/v1/sys/wrapping/rewrap", any(rewrap))
}

/// The `wrap_info` of a wrapping token.
fn wrap_info(token: &str, entry: &TokenEntry) -> Value {
    json!({
        "token": token,
        "accessor": entry.accessor,
        "ttl": entry.creation_ttl,
        "creation_time": rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.created)),
        "creation_path": entry.path,
        "wrapped_accessor": entry.wrapped_accessor.clone().unwrap_or_default(),
    })
}

fn wrapped_response(request_id: &RequestId, token: &str, entry: &TokenEntry) -> Response {
    let mut body = envelope(request_id, Value::Null);
    body["wrap_info"] = wrap_info(token, entry);
    Json(body).into_response()
}

/// Wraps `response` (already JSON text) in a new wrapping token.
async fn wrap_bytes(
    state: &AppState,
    ttl: u64,
    creation_path: &str,
    response: &[u8],
    wrapped_accessor: Option<String>,
) -> Result<(crate::auth::TokenSecret, TokenEntry), ApiError> {
    if ttl > crate::auth::token::MAX_TTL_SECS {
        return Err(ApiError::bad_request(
            "wrapping TTL is longer than the maximum of 768h",
        ));
    }
    state
        .arca
        .tokens()
        .create_wrapping(ttl, creation_path, response, wrapped_accessor)
        .await
        .map_err(ApiError::from)
}

/// The wrapping layer: see the module documentation.
///
/// `inner` answers the request: the layers and routes inside this one (see
/// [`crate::server::app`], which runs this layer and its neighbour as one).
pub(crate) async fn around<F, Fut>(state: &AppState, request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let Some(raw) = request.headers().get(WRAP_TTL_HEADER) else {
        return inner(request).await;
    };
    let path = request.uri().path().to_owned();
    let Some(logical) = path.strip_prefix("/v1/") else {
        return inner(request).await;
    };
    if matches!(
        logical,
        "sys/wrapping/unwrap" | "sys/wrapping/lookup" | "sys/wrapping/rewrap"
    ) {
        return inner(request).await;
    }
    let ttl = match raw
        .to_str()
        .map_err(|_| ())
        .and_then(|s| parse_duration(s).map_err(|_| ()))
    {
        Ok(ttl) => ttl.as_secs(),
        Err(()) => {
            return ApiError::bad_request("error parsing X-Vault-Wrap-TTL: invalid duration")
                .into_response();
        }
    };
    if ttl == 0 {
        return inner(request).await;
    }
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(|| RequestId(String::new()));
    let response = inner(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal(&"the response body could not be read").into_response();
    };
    let wrappable = serde_json::from_slice::<Value>(&bytes).ok().filter(|v| {
        v.get("data").is_some_and(|d| !d.is_null()) || v.get("auth").is_some_and(|a| !a.is_null())
    });
    let Some(mut original) = wrappable else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let wrapped_accessor = original
        .pointer("/auth/accessor")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The request id is the unwrapping request's, filled in at unwrap time.
    if let Some(obj) = original.as_object_mut() {
        obj.remove("request_id");
    }
    let stored = original.to_string();
    match wrap_bytes(state, ttl, logical, stored.as_bytes(), wrapped_accessor).await {
        Ok((token, entry)) => wrapped_response(&request_id, token.expose_secret(), &entry),
        Err(err) => err.into_response(),
    }
}

async fn wrap(State(state): State<AppState>, req: VaultRequest) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "sys/wrapping/wrap",
        Capability::Update,
    )
    .await?;
    let wanted = req
        .headers
        .get(WRAP_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_duration(v).ok())
        .is_some_and(|d| !d.is_zero());
    if !wanted {
        return Err(ApiError::bad_request(
            "endpoint requires response wrapping to be used",
        ));
    }
    // The layer wraps this answer on its way out.
    Ok(Json(envelope(&req.request_id, Value::Object(req.body))).into_response())
}

/// The wrapping token a request names: the `token` field, or else the client token. When
/// both are given and differ, the client token must be allowed `update` on `path`.
async fn wrapping_token(
    state: &AppState,
    req: &VaultRequest,
    path: &str,
) -> Result<String, ApiError> {
    let header = client_token(&req.headers).filter(|t| !t.is_empty());
    match req.str("token")?.filter(|t| !t.is_empty()) {
        Some(body) => {
            if header.is_some_and(|h| h != body) {
                authorize(state, &req.headers, path, Capability::Update).await?;
            }
            Ok(body)
        }
        None => header
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(INVALID_WRAPPING_TOKEN)),
    }
}

async fn unwrap(State(state): State<AppState>, req: VaultRequest) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let token = wrapping_token(&state, &req, "sys/wrapping/unwrap").await?;
    let stored = state
        .arca
        .tokens()
        .unwrap(&token)
        .await?
        .ok_or_else(|| ApiError::bad_request(INVALID_WRAPPING_TOKEN))?;
    let mut body: Value = serde_json::from_slice(stored.expose_secret())
        .map_err(|_| ApiError::internal(&"a wrapped response does not parse"))?;
    body["request_id"] = json!(req.request_id.0);
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn wrapping_entry(state: &AppState, token: &str) -> Result<TokenEntry, ApiError> {
    state
        .arca
        .tokens()
        .lookup(token)
        .await?
        .filter(|e| e.kind == crate::auth::TokenKind::Wrapping)
        .ok_or_else(|| ApiError::bad_request(INVALID_WRAPPING_TOKEN))
}

async fn lookup(State(state): State<AppState>, req: VaultRequest) -> Result<Response, ApiError> {
    if !matches!(req.op, Op::Write | Op::Read) {
        return Err(method_not_allowed());
    }
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let token = wrapping_token(&state, &req, "sys/wrapping/lookup").await?;
    let entry = wrapping_entry(&state, &token).await?;
    let data = json!({
        "creation_path": entry.path,
        "creation_time": rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.created)),
        "creation_ttl": entry.creation_ttl,
    });
    Ok(Json(envelope(&req.request_id, data)).into_response())
}

async fn rewrap(State(state): State<AppState>, req: VaultRequest) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let token = wrapping_token(&state, &req, "sys/wrapping/rewrap").await?;
    let entry = wrapping_entry(&state, &token).await?;
    let stored = state
        .arca
        .tokens()
        .unwrap(&token)
        .await?
        .ok_or_else(|| ApiError::bad_request(INVALID_WRAPPING_TOKEN))?;
    let (new_token, new_entry) = wrap_bytes(
        &state,
        entry.creation_ttl,
        &entry.path,
        stored.expose_secret(),
        entry.wrapped_accessor.clone(),
    )
    .await?;
    Ok(wrapped_response(
        &req.request_id,
        new_token.expose_secret(),
        &new_entry,
    ))
}
