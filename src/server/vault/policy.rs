//! ACL policy endpoints: `sys/policies/acl/<name>` (the current API, what `bao policy` and
//! hvac's `*_acl_policy` use), the legacy `sys/policy/<name>` (hvac's `sys.*_policy`), and
//! `sys/capabilities-self`, `sys/capabilities`, `sys/capabilities-accessor`.
//!
//! A policy that does not parse is refused with 400 and the parser's message, and nothing is
//! stored. As Vault's `sys/` endpoints do, answers repeat the fields of `data` at the top
//! level, for old clients that read them there.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};

use super::auth::{Op, VaultRequest, method_not_allowed};
use super::{AppState, Capability, authorize, envelope, resolve};
use crate::policy::store::normalize_name;
use crate::server::{ApiError, RequestId, no_content};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/policies/acl", any(acl_list))
        .route("/v1/sys/policies/acl/", any(acl_list))
        .route("/v1/sys/policies/acl/{name}", any(acl_policy))
        .route("/v1/sys/policy", any(legacy_list))
        .route("/v1/sys/policy/", any(legacy_list))
        .route("/v1/sys/policy/{name}", any(legacy_policy))
        .route("/v1/sys/capabilities-self", any(capabilities_self))
        .route("/v1/sys/capabilities", any(capabilities_token))
        .route("/v1/sys/capabilities-accessor", any(capabilities_accessor))
}

/// Vault's envelope with the fields of `data` also at the top level.
pub(crate) fn sys_response(request_id: &RequestId, data: Value) -> Response {
    let mut body = envelope(request_id, data.clone());
    if let (Some(top), Value::Object(fields)) = (body.as_object_mut(), data) {
        for (k, v) in fields {
            top.entry(k).or_insert(v);
        }
    }
    Json(body).into_response()
}

fn policy_text(req: &VaultRequest, legacy: bool) -> Result<String, ApiError> {
    let text = match req.str("policy")? {
        Some(text) => Some(text),
        None if legacy => req.str("rules")?,
        None => None,
    };
    text.filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("'policy' parameter not supplied or empty"))
}

async fn list_names(
    state: &AppState,
    req: &VaultRequest,
    path: &str,
) -> Result<Vec<String>, ApiError> {
    authorize(state, &req.headers, path, Capability::List).await?;
    Ok(state.arca.policies().list().await?)
}

async fn acl_list(State(state): State<AppState>, req: VaultRequest) -> Result<Response, ApiError> {
    if req.op != Op::List {
        return Err(method_not_allowed());
    }
    let names = list_names(&state, &req, "sys/policies/acl/").await?;
    Ok(sys_response(&req.request_id, json!({ "keys": names })))
}

async fn legacy_list(
    State(state): State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let path = "sys/policy";
    let names = match req.op {
        Op::List => list_names(&state, &req, "sys/policy/").await?,
        Op::Read => {
            authorize(&state, &req.headers, path, Capability::Read).await?;
            state.arca.policies().list().await?
        }
        _ => return Err(method_not_allowed()),
    };
    Ok(sys_response(
        &req.request_id,
        json!({ "keys": names, "policies": names }),
    ))
}

async fn acl_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    one_policy(&state, &name, req, "sys/policies/acl", false).await
}

async fn legacy_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    one_policy(&state, &name, req, "sys/policy", true).await
}

async fn one_policy(
    state: &AppState,
    name: &str,
    req: VaultRequest,
    base: &str,
    legacy: bool,
) -> Result<Response, ApiError> {
    let path = format!("{base}/{name}");
    let store = state.arca.policies();
    match req.op {
        Op::Read => {
            authorize(state, &req.headers, &path, Capability::Read).await?;
            let name = normalize_name(name).map_err(|_| ApiError::not_found())?;
            let policy = store.get(&name).await?.ok_or_else(ApiError::not_found)?;
            let text = if name == "default" && policy.raw().is_empty() {
                crate::policy::DEFAULT_POLICY.to_owned()
            } else {
                policy.raw().to_owned()
            };
            let mut data = Map::new();
            data.insert("name".into(), json!(name));
            data.insert(if legacy { "rules" } else { "policy" }.into(), json!(text));
            Ok(sys_response(&req.request_id, Value::Object(data)))
        }
        Op::Write => {
            authorize(state, &req.headers, &path, Capability::Update).await?;
            let text = policy_text(&req, legacy)?;
            store.put(name, &text).await?;
            Ok(no_content())
        }
        Op::Delete => {
            authorize(state, &req.headers, &path, Capability::Delete).await?;
            store.delete(name).await?;
            Ok(no_content())
        }
        _ => Err(method_not_allowed()),
    }
}

fn paths_of(req: &VaultRequest) -> Result<Vec<String>, ApiError> {
    let mut paths = req.str_list("paths")?.unwrap_or_default();
    if let Some(path) = req.str("path")? {
        paths.push(path);
    }
    if paths.is_empty() {
        return Err(ApiError::bad_request("missing paths"));
    }
    Ok(paths)
}

async fn capabilities_answer(
    state: &AppState,
    req: &VaultRequest,
    policies: &[String],
) -> Result<Response, ApiError> {
    let paths = paths_of(req)?;
    let acl = state.arca.policies().acl(policies).await?;
    let mut data = Map::new();
    for path in &paths {
        data.insert(path.clone(), json!(acl.capabilities(path)));
    }
    if let [only] = paths.as_slice() {
        data.insert("capabilities".into(), json!(acl.capabilities(only)));
    }
    Ok(sys_response(&req.request_id, Value::Object(data)))
}

async fn capabilities_self(
    State(state): State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    let entry = resolve(&state, &req.headers).await?;
    authorize(
        &state,
        &req.headers,
        "sys/capabilities-self",
        Capability::Update,
    )
    .await?;
    capabilities_answer(&state, &req, &entry.policies).await
}

async fn capabilities_token(
    State(state): State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(&state, &req.headers, "sys/capabilities", Capability::Update).await?;
    let token = req
        .str("token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing token"))?;
    let entry = state
        .arca
        .tokens()
        .lookup(&token)
        .await?
        .ok_or_else(|| ApiError::bad_request("invalid token"))?;
    capabilities_answer(&state, &req, &entry.policies).await
}

async fn capabilities_accessor(
    State(state): State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "sys/capabilities-accessor",
        Capability::Update,
    )
    .await?;
    let accessor = req
        .str("accessor")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing accessor"))?;
    let entry = state
        .arca
        .tokens()
        .lookup_accessor(&accessor)
        .await?
        .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
    capabilities_answer(&state, &req, &entry.policies).await
}
