//! The audit layer over every route, and `sys/audit` (list), `sys/audit-hash/<device>`.
//!
//! [`around`] writes one line before a request reaches its handler and one after, through
//! [`crate::audit::AuditLog`]: time, request id, path, operation, the caller's identity
//! (token HMAC, accessor HMAC, policies, AppRole role), remote address, and the request and
//! response bodies with every string and number replaced by its HMAC. If the request line
//! cannot be written the handler never runs (500); if the response line cannot, the response
//! is withheld (500). Either way nothing is served unaudited. Only Vault's unauthenticated
//! status and seal endpoints (`sys/health`, `sys/seal-status`, `sys/leader`, `sys/init`,
//! `sys/unseal`) pass unaudited, as in Vault: they reach no data.
//!
//! [`record_remote_addr`] puts the peer address where handlers (AppRole CIDR bounds, token
//! CIDR bounds) can read it, after removing any copy a client sent.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};

use super::auth::{Op, VaultRequest, method_not_allowed};
use super::policy::sys_response;
use super::{AppState, Capability, REMOTE_ADDR_HEADER, authorize, authorize_all, client_token};
use crate::audit::{AuditKey, AuditLog};
use crate::server::{ApiError, RequestId};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/audit", any(list_devices))
        .route("/v1/sys/audit/", any(list_devices))
        .route("/v1/sys/audit/{*path}", any(change_device))
        .route("/v1/sys/audit-hash/{*path}", any(audit_hash))
}

/// Records the peer's address in [`REMOTE_ADDR_HEADER`], replacing any value a client sent.
pub(crate) fn record_remote_addr(request: &mut Request) {
    request.headers_mut().remove(REMOTE_ADDR_HEADER);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    if let Some(value) = peer.and_then(|p| HeaderValue::from_str(&p).ok()) {
        request.headers_mut().insert(REMOTE_ADDR_HEADER, value);
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn operation(method: &Method, query: Option<&str>) -> &'static str {
    let list = query.is_some_and(|q| q.split('&').any(|p| p == "list=true"));
    match method.as_str() {
        "GET" | "HEAD" if list => "list",
        "GET" | "HEAD" => "read",
        "LIST" => "list",
        "POST" | "PUT" => "update",
        "DELETE" => "delete",
        "PATCH" => "patch",
        _ => "unknown",
    }
}

/// A body as the log shows it: JSON with its leaves redacted, or the HMAC of its text.
fn redacted_body(key: &AuditKey, bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut value) => {
            key.redact(&mut value);
            value
        }
        Err(_) => Value::String(key.hmac(&String::from_utf8_lossy(bytes))),
    }
}

/// The identity block of a request: resolved without counting a use.
async fn identity(state: &AppState, key: &AuditKey, headers: &axum::http::HeaderMap) -> Value {
    let Some(token) = client_token(headers).filter(|t| !t.is_empty()) else {
        return Value::Null;
    };
    let mut auth = json!({ "client_token": key.hmac(token) });
    if let Ok(Some(entry)) = state.arca.tokens().lookup(token).await {
        let mut metadata = json!(entry.meta);
        key.redact(&mut metadata);
        auth["accessor"] = json!(key.hmac(&entry.accessor));
        auth["display_name"] = json!(entry.display_name);
        auth["policies"] = json!(entry.policies);
        auth["token_type"] = json!("service");
        auth["metadata"] = metadata;
        auth["role_name"] = json!(entry.entity);
    }
    auth
}

fn entry(kind: &str, auth: &Value, request: &Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("time".into(), json!(now_rfc3339()));
    map.insert("type".into(), json!(kind));
    map.insert("auth".into(), auth.clone());
    map.insert("request".into(), request.clone());
    map
}

fn audit_failure(err: &crate::audit::AuditError) -> Response {
    tracing::error!(error = %err, "audit device failed: refusing the request");
    ApiError::internal(err).into_response()
}

/// Vault's unauthenticated status and seal endpoints, which it serves outside its audited
/// router: they reach no secret data, and a load balancer's health check must still see a
/// server whose audit device is failing.
const UNAUDITED: &[&str] = &[
    "/v1/sys/health",
    "/v1/sys/seal-status",
    "/v1/sys/leader",
    "/v1/sys/init",
    "/v1/sys/unseal",
];

/// The audit layer: see the module documentation.
///
/// `inner` answers the request: the layers and routes inside this one (see
/// [`crate::server::app`], which runs this layer and its neighbour as one).
pub(crate) async fn around<F, Fut>(state: &AppState, request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let log: &AuditLog = state.arca.audit();
    if !log.is_enabled() || UNAUDITED.contains(&request.uri().path()) {
        return inner(request).await;
    }
    let Ok(key) = log.key() else {
        // Sealed: no key to redact with, and nothing reachable to audit.
        return inner(request).await;
    };
    let (parts, body) = request.into_parts();
    let auth = identity(state, &key, &parts.headers).await;
    let bytes = match axum::body::to_bytes(body, state.options.max_request_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "http: request body too large",
            )
            .into_response();
        }
    };
    let mut query: Value = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|p| p.split_once('=').or(Some((p, ""))))
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect::<Map<_, _>>()
        })
        .map_or(Value::Null, Value::Object);
    key.redact(&mut query);
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let mut request_block = json!({
        "id": request_id,
        "operation": operation(&parts.method, parts.uri.query()),
        "path": parts.uri.path().strip_prefix("/v1/").unwrap_or(parts.uri.path()),
        "remote_address": remote,
        "data": redacted_body(&key, &bytes),
    });
    if !query.is_null() {
        request_block["query"] = query;
    }
    if let Some(ttl) = parts.headers.get(super::wrapping::WRAP_TTL_HEADER) {
        request_block["wrap_ttl"] = json!(ttl.to_str().unwrap_or_default());
    }
    if let Err(err) = log.write(&entry("request", &auth, &request_block)) {
        return audit_failure(&err);
    }

    let response = inner(Request::from_parts(parts, Body::from(bytes))).await;

    let (parts, body) = response.into_parts();
    let Ok(bytes): Result<Bytes, _> = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal(&"the response body could not be read").into_response();
    };
    let status = parts.status.as_u16();
    let mut line = entry("response", &auth, &request_block);
    line.insert(
        "response".into(),
        json!({ "status": status, "data": redacted_body(&key, &bytes) }),
    );
    if status >= 400
        && let Ok(body) = serde_json::from_slice::<Value>(&bytes)
        && let Some(errors) = body.get("errors").and_then(Value::as_array)
    {
        // Error texts name no values (see server::error), so they stay readable.
        let text: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
        line.insert("error".into(), json!(text.join("; ")));
    }
    if let Err(err) = log.write(&line) {
        return audit_failure(&err);
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn device_table(log: &AuditLog) -> Value {
    let mut table = Map::new();
    for device in log.devices() {
        table.insert(
            device.name().to_owned(),
            json!({
                "type": "file",
                "description": "",
                "options": { "file_path": device.file_path() },
                "local": false,
                "path": device.name(),
            }),
        );
    }
    Value::Object(table)
}

async fn list_devices(
    State(state): State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if !matches!(req.op, Op::Read | Op::List) {
        return Err(method_not_allowed());
    }
    authorize_all(
        &state,
        &req.headers,
        "sys/audit",
        &[Capability::Read, Capability::Sudo],
    )
    .await?;
    Ok(sys_response(
        &req.request_id,
        device_table(state.arca.audit()),
    ))
}

async fn change_device(
    State(state): State<AppState>,
    Path(path): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let cap = match req.op {
        Op::Write => Capability::Update,
        Op::Delete => Capability::Delete,
        _ => return Err(method_not_allowed()),
    };
    authorize_all(
        &state,
        &req.headers,
        &format!("sys/audit/{path}"),
        &[cap, Capability::Sudo],
    )
    .await?;
    Err(ApiError::bad_request(
        "audit devices are set in the server's configuration file ([audit] in arca.toml)",
    ))
}

async fn audit_hash(
    State(state): State<AppState>,
    Path(path): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        &format!("sys/audit-hash/{path}"),
        Capability::Update,
    )
    .await?;
    let name = format!("{}/", path.trim_end_matches('/'));
    if !state
        .arca
        .audit()
        .devices()
        .iter()
        .any(|d| d.name() == name)
    {
        return Err(ApiError::bad_request("unknown audit backend"));
    }
    let input = req
        .str("input")?
        .ok_or_else(|| ApiError::bad_request("the \"input\" parameter is required"))?;
    let key = state.arca.audit().key().map_err(|_| ApiError::sealed())?;
    Ok(sys_response(
        &req.request_id,
        json!({ "hash": key.hmac(&input) }),
    ))
}
