//! `auth/token/*` and `auth/approle/*`: the token store and the AppRole method over HTTP, with
//! Vault's JSON (the `auth` block of logins and token creation, the `data` of lookups).
//!
//! Every route checks the caller's policies first, with the capability Vault uses for the
//! operation (`update` for every `POST`, `read` for `GET`, `list` for listing, `sudo` on top
//! for `revoke-orphan` and for creating tokens beyond the caller's own policies). The only
//! unauthenticated route is `auth/approle/login`.
//!
//! Tokens and secret ids appear only in the responses that hand them out; errors name fields
//! and never echo values.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};

use super::{
    AppState, Caller, Capability, VaultJson, authorize, authorize_all, client_token, envelope,
    remote_addr, resolve, rfc3339,
};
use crate::auth::approle::{Role, SecretIdInfo, SecretIdRequest};
use crate::auth::cidr::{self, Cidr};
use crate::auth::duration::parse_duration_value;
use crate::auth::{AuthError, TokenEntry, TokenRequest};
use crate::server::{ApiError, RequestId, no_content};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/token/create", any(token_create))
        .route("/v1/auth/token/create-orphan", any(token_create_orphan))
        .route("/v1/auth/token/lookup", any(token_lookup))
        .route("/v1/auth/token/lookup-self", any(token_lookup_self))
        .route("/v1/auth/token/lookup-accessor", any(token_lookup_accessor))
        .route("/v1/auth/token/renew", any(token_renew))
        .route("/v1/auth/token/renew-self", any(token_renew_self))
        .route("/v1/auth/token/renew-accessor", any(token_renew_accessor))
        .route("/v1/auth/token/revoke", any(token_revoke))
        .route("/v1/auth/token/revoke-self", any(token_revoke_self))
        .route("/v1/auth/token/revoke-accessor", any(token_revoke_accessor))
        .route("/v1/auth/token/revoke-orphan", any(token_revoke_orphan))
        .route("/v1/auth/approle/login", any(approle_login))
        .route("/v1/auth/approle/role", any(approle_list))
        .route("/v1/auth/approle/role/", any(approle_list))
        .route("/v1/auth/approle/role/{name}", any(approle_role))
        .route("/v1/auth/approle/role/{name}/role-id", any(approle_role_id))
        .route(
            "/v1/auth/approle/role/{name}/secret-id",
            any(approle_secret_id),
        )
        .route(
            "/v1/auth/approle/role/{name}/secret-id/",
            any(approle_secret_id),
        )
        .route(
            "/v1/auth/approle/role/{name}/secret-id/lookup",
            any(approle_secret_id_lookup),
        )
        .route(
            "/v1/auth/approle/role/{name}/secret-id/destroy",
            any(approle_secret_id_destroy),
        )
        .route(
            "/v1/auth/approle/role/{name}/secret-id-accessor/lookup",
            any(approle_accessor_lookup),
        )
        .route(
            "/v1/auth/approle/role/{name}/secret-id-accessor/destroy",
            any(approle_accessor_destroy),
        )
}

// ---------------------------------------------------------------------------------------------
// The request: method, body fields, and typed field access with Vault's error shape.

/// What a request asks for, from its method (and `?list=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `GET`.
    Read,
    /// `LIST`, or `GET ?list=true`.
    List,
    /// `POST` or `PUT`.
    Write,
    /// `DELETE`.
    Delete,
    /// Anything else (answered 405).
    Other,
}

/// A Vault API request: its method, headers, id, and its parameters (the JSON body, or for
/// `GET` and `LIST`, the query string). Its `Debug` shows field names only: the headers hold
/// the client token and the body may hold secrets.
pub(crate) struct VaultRequest {
    pub op: Op,
    pub headers: HeaderMap,
    pub request_id: RequestId,
    pub body: Map<String, Value>,
}

impl std::fmt::Debug for VaultRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultRequest")
            .field("op", &self.op)
            .field("request_id", &self.request_id)
            .field("fields", &self.body.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequest<S> for VaultRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query: HashMap<String, String> = Query::try_from_uri(req.uri())
            .map(|Query(q)| q)
            .unwrap_or_default();
        let list = query.get("list").is_some_and(|v| v == "true");
        let op = match *req.method() {
            Method::GET | Method::HEAD if list => Op::List,
            Method::GET | Method::HEAD => Op::Read,
            Method::POST | Method::PUT => Op::Write,
            Method::DELETE => Op::Delete,
            ref m if m.as_str() == "LIST" => Op::List,
            _ => Op::Other,
        };
        let headers = req.headers().clone();
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(String::new()));
        let body = match op {
            Op::Read | Op::List | Op::Other => query
                .into_iter()
                .filter(|(k, _)| k != "list")
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            Op::Write | Op::Delete => {
                let VaultJson(value) = VaultJson::<Value>::from_request(req, state).await?;
                match value {
                    Value::Object(map) => map,
                    Value::Null => Map::new(),
                    _ => {
                        return Err(ApiError::bad_request(
                            "failed to parse JSON input: the body must be a JSON object",
                        ));
                    }
                }
            }
        };
        Ok(Self {
            op,
            headers,
            request_id,
            body,
        })
    }
}

fn wrong_type(name: &str, want: &str) -> ApiError {
    ApiError::bad_request(format!("invalid value for field {name:?}: expected {want}"))
}

impl VaultRequest {
    /// A string field.
    pub(crate) fn str(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A boolean field (`true`, or the strings `"true"`/`"false"`, as Vault accepts).
    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(Some(true)),
                "false" | "0" | "f" | "F" | "FALSE" | "False" | "" => Ok(Some(false)),
                _ => Err(wrong_type(name, "a boolean")),
            },
            Some(_) => Err(wrong_type(name, "a boolean")),
        }
    }

    /// A non-negative integer field (a number or a numeric string).
    pub(crate) fn uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let value = match self.body.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        match value {
            Some(v) if v < 0 => Err(ApiError::bad_request(format!("{name} cannot be negative"))),
            Some(v) => Ok(Some(v.unsigned_abs())),
            None => Err(wrong_type(name, "an integer")),
        }
    }

    /// A count that fits 32 bits.
    pub(crate) fn count(&self, name: &str) -> Result<Option<u32>, ApiError> {
        self.uint(name)?
            .map(|v| u32::try_from(v).map_err(|_| wrong_type(name, "a smaller integer")))
            .transpose()
    }

    /// A duration field in Vault's syntax, in seconds.
    pub(crate) fn duration(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => parse_duration_value(value)
                .map(|d| Some(d.as_secs()))
                .map_err(|e| {
                    ApiError::bad_request(format!("invalid value for field {name:?}: {e}"))
                }),
        }
    }

    /// A list of strings: a JSON array, or one comma-separated string.
    pub(crate) fn str_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(|s| s.trim().to_owned()))
                .collect::<Option<Vec<_>>>()
                .map(|v| Some(v.into_iter().filter(|s| !s.is_empty()).collect()))
                .ok_or_else(|| wrong_type(name, "a list of strings")),
            Some(_) => Err(wrong_type(name, "a list of strings")),
        }
    }

    /// A map of strings: a JSON object of strings, or (as AppRole's `metadata`) a string
    /// holding one.
    pub(crate) fn str_map(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        let object = match self.body.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(Some(BTreeMap::new())),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(map)) => map,
                _ => return Err(wrong_type(name, "a map of strings")),
            },
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(wrong_type(name, "a map of strings")),
        };
        object
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect::<Option<BTreeMap<_, _>>>()
            .map(Some)
            .ok_or_else(|| wrong_type(name, "a map of strings"))
    }

    /// A list of CIDR blocks.
    pub(crate) fn cidrs(&self, name: &str) -> Result<Option<Vec<Cidr>>, ApiError> {
        self.str_list(name)?
            .map(|list| cidr::parse_list(&list).map_err(ApiError::bad_request))
            .transpose()
    }
}

pub(crate) fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
}

/// Vault's envelope, as JSON.
fn ok(request_id: &RequestId, data: Value) -> Response {
    Json(envelope(request_id, data)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Token JSON.

/// The `auth` block of a login, a token creation or a renewal.
pub(crate) fn auth_block(token: &str, entry: &TokenEntry, now: u64) -> Value {
    json!({
        "client_token": token,
        "accessor": entry.accessor,
        "policies": entry.policies,
        "token_policies": entry.policies,
        "metadata": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "lease_duration": entry.ttl_at(now),
        "renewable": entry.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": entry.orphan,
        "mfa_requirement": null,
        "num_uses": entry.num_uses,
    })
}

fn auth_response(
    request_id: &RequestId,
    token: &str,
    entry: &TokenEntry,
    warnings: &[String],
) -> Response {
    let mut body = envelope(request_id, Value::Null);
    body["auth"] = auth_block(token, entry, entry.issued_at());
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Json(body).into_response()
}

fn time_of(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The `data` of a token lookup. `id` is the token itself when the caller presented it.
pub(crate) fn lookup_data(entry: &TokenEntry, id: &str) -> Value {
    let now = crate::auth::token::now_secs();
    let mut data = json!({
        "accessor": entry.accessor,
        "creation_time": entry.created,
        "creation_ttl": entry.creation_ttl,
        "display_name": entry.display_name,
        "entity_id": "",
        "expire_time": entry.expire_time.map(time_of),
        "explicit_max_ttl": entry.explicit_max_ttl,
        "id": id,
        "issue_time": time_of(entry.created),
        "meta": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "num_uses": entry.num_uses,
        "orphan": entry.orphan,
        "path": entry.path,
        "policies": entry.policies,
        "renewable": entry.renewable,
        "ttl": entry.ttl_at(now),
        "type": "service",
    });
    if entry.period > 0 {
        data["period"] = json!(entry.period);
    }
    if let Some(last) = entry.last_renewal {
        data["last_renewal"] = json!(time_of(last));
        data["last_renewal_time"] = json!(last);
    }
    if !entry.bound_cidrs.is_empty() {
        data["bound_cidrs"] = json!(
            entry
                .bound_cidrs
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
        );
    }
    data
}

// ---------------------------------------------------------------------------------------------
// auth/token/create

/// Vault's policy-name normalisation: trimmed, lower-cased, deduplicated and sorted; `root`
/// alone if present.
fn sanitize_policies(mut policies: Vec<String>, add_default: bool) -> Vec<String> {
    for p in &mut policies {
        *p = p.trim().to_ascii_lowercase();
    }
    policies.retain(|p| !p.is_empty());
    if policies.iter().any(|p| p == "root") {
        return vec!["root".to_owned()];
    }
    if add_default {
        policies.push("default".to_owned());
    }
    policies.sort();
    policies.dedup();
    policies
}

async fn token_create(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    create_token(&state, req, "auth/token/create", false).await
}

async fn token_create_orphan(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    create_token(&state, req, "auth/token/create-orphan", true).await
}

async fn create_token(
    state: &AppState,
    req: VaultRequest,
    path: &str,
    orphan_endpoint: bool,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    let (caller, parent) =
        authorize_entry(state, &req.headers, path, &[Capability::Update]).await?;
    let acl = state.arca.policies().acl(&parent.policies).await?;
    let privileged = acl.is_root() || acl.allows(path, Capability::Sudo);

    if let Some(kind) = req.str("type")?
        && !matches!(kind.as_str(), "" | "service" | "default")
    {
        return Err(ApiError::bad_request(if kind == "batch" {
            "batch tokens are not supported by arca".to_owned()
        } else {
            format!("unsupported token type {kind:?}")
        }));
    }
    if req.str("role_name")?.is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(
            "token roles are not supported by arca",
        ));
    }
    let no_parent = req.bool("no_parent")?.unwrap_or(false);
    if no_parent && !privileged {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create orphan token",
        ));
    }
    let fixed = req.str("id")?.filter(|s| !s.is_empty());
    if fixed.is_some() && !privileged {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to specify token id",
        ));
    }
    let period = req.duration("period")?.unwrap_or(0);
    if period > 0 && !privileged {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create periodic token",
        ));
    }
    let no_default = req.bool("no_default_policy")?.unwrap_or(false);
    let requested = req.str_list("policies")?.unwrap_or_default();
    let policies = if requested.is_empty() {
        let inherited: Vec<String> = caller
            .policies
            .iter()
            .filter(|p| !(no_default && *p == "default"))
            .cloned()
            .collect();
        sanitize_policies(inherited, !no_default)
    } else {
        sanitize_policies(requested, !no_default)
    };
    if !privileged {
        let parent_has = |p: &String| p == "default" || caller.policies.contains(p);
        if policies.iter().any(|p| p == "root") || !policies.iter().all(parent_has) {
            return Err(ApiError::bad_request(
                "child policies must be subset of parent",
            ));
        }
    }
    let mut warnings = Vec::new();
    for name in &policies {
        if name != "root" && state.arca.policies().get(name).await?.is_none() {
            warnings.push(format!("policy {name:?} does not exist"));
        }
    }
    let display_name = match req.str("display_name")? {
        Some(name) if !name.trim().is_empty() => {
            let full: String = format!("token-{}", name.trim())
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            full.trim_end_matches('-').to_owned()
        }
        _ => "token".to_owned(),
    };
    let mut request = TokenRequest::new(policies, path);
    request.display_name = display_name;
    request.meta = req.str_map("meta")?.unwrap_or_default();
    bind_identity_meta(&mut request.meta, &parent.meta, privileged)?;
    request.ttl = req.duration("ttl")?.or(req.duration("lease")?);
    request.explicit_max_ttl = req.duration("explicit_max_ttl")?.unwrap_or(0);
    request.num_uses = req.count("num_uses")?.unwrap_or(0);
    request.renewable = req.bool("renewable")?.unwrap_or(true);
    request.period = period;
    request.parent_accessor =
        (!no_parent && !orphan_endpoint).then(|| caller.token_accessor.clone());
    request.entity = caller.entity.clone();
    let (token, entry) = state
        .arca
        .tokens()
        .create(&request, fixed.as_deref())
        .await
        .map_err(token_error)?;
    Ok(auth_response(
        &req.request_id,
        token.expose_secret(),
        &entry,
        &warnings,
    ))
}

/// The identity metadata (`service`, `environment`, `role`) of a new token: secrets' access
/// policies trust it, so only a root or sudo caller may choose it. Any other caller's child
/// inherits the parent's values and may not set different ones, else a token could mint a
/// child that claims another service.
fn bind_identity_meta(
    meta: &mut BTreeMap<String, String>,
    parent: &BTreeMap<String, String>,
    privileged: bool,
) -> Result<(), ApiError> {
    if privileged {
        return Ok(());
    }
    for key in crate::auth::approle::IDENTITY_META_KEYS {
        match (parent.get(key), meta.get(key)) {
            (Some(inherited), None) => {
                meta.insert(key.to_owned(), inherited.clone());
            }
            (inherited, Some(asked)) if inherited != Some(asked) => {
                return Err(ApiError::bad_request(format!(
                    "root or sudo privileges required to set the {key:?} metadata of a token \
                     to another value than its parent's"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// As [`authorize_all`], also returning the token's entry (as of this use).
async fn authorize_entry(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    caps: &[Capability],
) -> Result<(Caller, TokenEntry), ApiError> {
    let before = resolve(state, headers).await?;
    let caller = authorize_all(state, headers, path, caps).await?;
    // `authorize_all` counted the use; the entry as resolved, with the count it left.
    let mut entry = before;
    if entry.num_uses > 0 {
        entry.num_uses -= 1;
    }
    Ok((caller, entry))
}

fn token_error(err: AuthError) -> ApiError {
    match err {
        AuthError::InvalidToken(msg) => ApiError::bad_request(msg),
        AuthError::InvalidRequest(msg) => ApiError::bad_request(msg),
        AuthError::NotFound => ApiError::bad_request("invalid token"),
        AuthError::NotRenewable => ApiError::bad_request("lease is not renewable"),
        other => other.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Lookup

async fn token_lookup_self(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let cap = match req.op {
        Op::Read => Capability::Read,
        Op::Write => Capability::Update,
        _ => return Err(method_not_allowed()),
    };
    let (_, entry) =
        authorize_entry(&state, &req.headers, "auth/token/lookup-self", &[cap]).await?;
    let token = client_token(&req.headers).unwrap_or_default();
    Ok(ok(&req.request_id, lookup_data(&entry, token)))
}

async fn token_lookup(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let cap = match req.op {
        Op::Read => Capability::Read,
        Op::Write => Capability::Update,
        _ => return Err(method_not_allowed()),
    };
    authorize(&state, &req.headers, "auth/token/lookup", cap).await?;
    let token = req
        .str("token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing token"))?;
    let entry = state
        .arca
        .tokens()
        .lookup(&token)
        .await?
        .filter(|e| e.kind == crate::auth::TokenKind::Service)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "bad token"))?;
    Ok(ok(&req.request_id, lookup_data(&entry, &token)))
}

async fn token_lookup_accessor(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "auth/token/lookup-accessor",
        Capability::Update,
    )
    .await?;
    let accessor = required(&req, "accessor")?;
    let entry = state
        .arca
        .tokens()
        .lookup_accessor(&accessor)
        .await?
        .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
    Ok(ok(&req.request_id, lookup_data(&entry, "")))
}

fn required(req: &VaultRequest, name: &str) -> Result<String, ApiError> {
    req.str(name)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing {name}")))
}

// ---------------------------------------------------------------------------------------------
// Renew

async fn token_renew_self(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "auth/token/renew-self",
        Capability::Update,
    )
    .await?;
    let token = client_token(&req.headers).unwrap_or_default().to_owned();
    renew(&state, &req, &token).await
}

async fn token_renew(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(&state, &req.headers, "auth/token/renew", Capability::Update).await?;
    let token = required(&req, "token")?;
    renew(&state, &req, &token).await
}

async fn renew(state: &AppState, req: &VaultRequest, token: &str) -> Result<Response, ApiError> {
    let increment = req.duration("increment")?.unwrap_or(0);
    let renewal = state
        .arca
        .tokens()
        .renew(token, increment)
        .await
        .map_err(token_error)?;
    let warnings = renewal_warnings(&renewal);
    Ok(auth_response(
        &req.request_id,
        token,
        &renewal.entry,
        &warnings,
    ))
}

fn renewal_warnings(renewal: &crate::auth::token::Renewal) -> Vec<String> {
    if renewal.capped {
        vec!["TTL of the token was capped by its maximum TTL".to_owned()]
    } else {
        Vec::new()
    }
}

async fn token_renew_accessor(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "auth/token/renew-accessor",
        Capability::Update,
    )
    .await?;
    let accessor = required(&req, "accessor")?;
    let increment = req.duration("increment")?.unwrap_or(0);
    let renewal = state
        .arca
        .tokens()
        .renew_accessor(&accessor, increment)
        .await
        .map_err(|e| match e {
            AuthError::NotFound => ApiError::bad_request("invalid accessor"),
            other => token_error(other),
        })?;
    let warnings = renewal_warnings(&renewal);
    Ok(auth_response(
        &req.request_id,
        "",
        &renewal.entry,
        &warnings,
    ))
}

// ---------------------------------------------------------------------------------------------
// Revoke

async fn token_revoke_self(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "auth/token/revoke-self",
        Capability::Update,
    )
    .await?;
    let token = client_token(&req.headers).unwrap_or_default();
    state.arca.tokens().revoke(token).await?;
    Ok(no_content())
}

async fn token_revoke(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "auth/token/revoke",
        Capability::Update,
    )
    .await?;
    let token = required(&req, "token")?;
    state.arca.tokens().revoke(&token).await?;
    Ok(no_content())
}

async fn token_revoke_orphan(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize_all(
        &state,
        &req.headers,
        "auth/token/revoke-orphan",
        &[Capability::Update, Capability::Sudo],
    )
    .await?;
    let token = required(&req, "token")?;
    state.arca.tokens().revoke_orphan(&token).await?;
    Ok(no_content())
}

async fn token_revoke_accessor(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    authorize(
        &state,
        &req.headers,
        "auth/token/revoke-accessor",
        Capability::Update,
    )
    .await?;
    let accessor = required(&req, "accessor")?;
    if !state.arca.tokens().revoke_accessor(&accessor).await? {
        return Err(ApiError::bad_request("invalid accessor"));
    }
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// AppRole

fn approle_error(err: AuthError) -> ApiError {
    match err {
        AuthError::InvalidRequest(msg) => ApiError::bad_request(msg),
        AuthError::InvalidCredentials => ApiError::bad_request("invalid role or secret ID"),
        AuthError::NotFound => ApiError::bad_request("role not found"),
        other => other.into(),
    }
}

async fn approle_login(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let role_id = req
        .str("role_id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing role_id"))?;
    let secret_id = req.str("secret_id")?;
    let (token, entry) = state
        .arca
        .approle()
        .login(&role_id, secret_id.as_deref(), remote_addr(&req.headers))
        .await
        .map_err(approle_error)?;
    let mut body = envelope(&req.request_id, Value::Null);
    body["auth"] = auth_block(token.expose_secret(), &entry, entry.issued_at());
    Ok(Json(body).into_response())
}

async fn approle_list(
    state: axum::extract::State<AppState>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::List {
        return Err(method_not_allowed());
    }
    authorize(&state, &req.headers, "auth/approle/role/", Capability::List).await?;
    let names = state
        .arca
        .approle()
        .list_roles()
        .await
        .map_err(approle_error)?;
    if names.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(ok(&req.request_id, json!({ "keys": names })))
}

fn role_data(role: &Role) -> Value {
    let cidrs = |l: &[Cidr]| l.iter().map(Cidr::to_string).collect::<Vec<_>>();
    json!({
        "bind_secret_id": role.bind_secret_id,
        "local_secret_ids": false,
        "secret_id_bound_cidrs": cidrs(&role.secret_id_bound_cidrs),
        "secret_id_num_uses": role.secret_id_num_uses,
        "secret_id_ttl": role.secret_id_ttl,
        "token_bound_cidrs": cidrs(&role.token_bound_cidrs),
        "token_explicit_max_ttl": role.token_explicit_max_ttl,
        "token_max_ttl": role.token_max_ttl,
        "token_no_default_policy": role.token_no_default_policy,
        "token_num_uses": role.token_num_uses,
        "token_period": role.token_period,
        "token_policies": role.token_policies,
        "policies": role.token_policies,
        "token_ttl": role.token_ttl,
        "token_type": "default",
        "period": role.token_period,
        "bound_service": role.bound_service,
        "bound_environment": role.bound_environment,
    })
}

async fn approle_role(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let path = format!("auth/approle/role/{name}");
    let approle = state.arca.approle();
    match req.op {
        Op::Read => {
            authorize(&state, &req.headers, &path, Capability::Read).await?;
            let role = approle
                .read_role(&name)
                .await
                .map_err(approle_error)?
                .ok_or_else(ApiError::not_found)?;
            Ok(ok(&req.request_id, role_data(&role)))
        }
        Op::Write => {
            crate::auth::approle::check_role_name(&name).map_err(approle_error)?;
            let existing = approle.read_role(&name).await.map_err(approle_error)?;
            let cap = if existing.is_some() {
                Capability::Update
            } else {
                Capability::Create
            };
            authorize(&state, &req.headers, &path, cap).await?;
            let mut role = existing.unwrap_or_else(|| Role::new(&name));
            apply_role_fields(&mut role, &req)?;
            approle.write_role(&role).await.map_err(approle_error)?;
            Ok(no_content())
        }
        Op::Delete => {
            authorize(&state, &req.headers, &path, Capability::Delete).await?;
            approle.delete_role(&name).await.map_err(approle_error)?;
            Ok(no_content())
        }
        _ => Err(method_not_allowed()),
    }
}

fn apply_role_fields(role: &mut Role, req: &VaultRequest) -> Result<(), ApiError> {
    if let Some(v) = req.bool("bind_secret_id")? {
        role.bind_secret_id = v;
    }
    if let Some(v) = req
        .cidrs("secret_id_bound_cidrs")?
        .or(req.cidrs("bound_cidr_list")?)
    {
        role.secret_id_bound_cidrs = v;
    }
    if let Some(v) = req.count("secret_id_num_uses")? {
        role.secret_id_num_uses = v;
    }
    if let Some(v) = req.duration("secret_id_ttl")? {
        role.secret_id_ttl = v;
    }
    if let Some(v) = req
        .str_list("token_policies")?
        .or(req.str_list("policies")?)
    {
        role.token_policies = sanitize_policies(v, false);
    }
    if let Some(v) = req.bool("token_no_default_policy")? {
        role.token_no_default_policy = v;
    }
    if let Some(v) = req.duration("token_ttl")? {
        role.token_ttl = v;
    }
    if let Some(v) = req.duration("token_max_ttl")? {
        role.token_max_ttl = v;
    }
    if let Some(v) = req.duration("token_explicit_max_ttl")? {
        role.token_explicit_max_ttl = v;
    }
    if let Some(v) = req.count("token_num_uses")? {
        role.token_num_uses = v;
    }
    if let Some(v) = req.duration("token_period")?.or(req.duration("period")?) {
        role.token_period = v;
    }
    if let Some(v) = req.cidrs("token_bound_cidrs")? {
        role.token_bound_cidrs = v;
    }
    // The identity the role's tokens act as for secrets' access policies; "" unbinds.
    if let Some(v) = req.str("bound_service")? {
        role.bound_service = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(v) = req.str("bound_environment")? {
        role.bound_environment = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(kind) = req.str("token_type")?
        && !matches!(kind.as_str(), "" | "default" | "service")
    {
        return Err(ApiError::bad_request(
            "only service tokens are supported by arca (token_type \"service\" or \"default\")",
        ));
    }
    if req.bool("local_secret_ids")? == Some(true) {
        return Err(ApiError::bad_request(
            "local_secret_ids is not supported by arca",
        ));
    }
    Ok(())
}

async fn approle_role_id(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let path = format!("auth/approle/role/{name}/role-id");
    let approle = state.arca.approle();
    match req.op {
        Op::Read => {
            authorize(&state, &req.headers, &path, Capability::Read).await?;
            let role_id = approle
                .role_id(&name)
                .await
                .map_err(approle_error)?
                .ok_or_else(ApiError::not_found)?;
            Ok(ok(&req.request_id, json!({ "role_id": role_id })))
        }
        Op::Write => {
            authorize(&state, &req.headers, &path, Capability::Update).await?;
            let role_id = required(&req, "role_id")?;
            approle
                .set_role_id(&name, &role_id)
                .await
                .map_err(approle_error)?;
            Ok(no_content())
        }
        _ => Err(method_not_allowed()),
    }
}

fn secret_id_data(info: &SecretIdInfo) -> Value {
    let cidrs = |l: &[Cidr]| l.iter().map(Cidr::to_string).collect::<Vec<_>>();
    json!({
        "cidr_list": cidrs(&info.cidr_list),
        "creation_time": time_of(info.created),
        "expiration_time": info.expire_time.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), time_of),
        "last_updated_time": time_of(info.last_updated),
        "metadata": info.metadata,
        "secret_id_accessor": info.accessor,
        "secret_id_num_uses": info.num_uses,
        "secret_id_ttl": info.ttl,
        "token_bound_cidrs": cidrs(&info.token_bound_cidrs),
    })
}

async fn approle_secret_id(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    let path = format!("auth/approle/role/{name}/secret-id");
    let approle = state.arca.approle();
    match req.op {
        Op::List => {
            authorize(&state, &req.headers, &path, Capability::List).await?;
            let keys = approle
                .list_secret_ids(&name)
                .await
                .map_err(approle_error)?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(ok(&req.request_id, json!({ "keys": keys })))
        }
        Op::Write => {
            authorize(&state, &req.headers, &path, Capability::Update).await?;
            let request = SecretIdRequest {
                metadata: req.str_map("metadata")?.unwrap_or_default(),
                cidr_list: req.cidrs("cidr_list")?.unwrap_or_default(),
                token_bound_cidrs: req.cidrs("token_bound_cidrs")?.unwrap_or_default(),
                ttl: req.duration("ttl")?.unwrap_or(0),
                num_uses: req.count("num_uses")?,
            };
            let (secret, info) = approle
                .generate_secret_id(&name, &request)
                .await
                .map_err(approle_error)?;
            Ok(ok(
                &req.request_id,
                json!({
                    "secret_id": secret.expose_secret(),
                    "secret_id_accessor": info.accessor,
                    "secret_id_ttl": info.ttl,
                    "secret_id_num_uses": info.num_uses,
                }),
            ))
        }
        _ => Err(method_not_allowed()),
    }
}

async fn approle_secret_id_lookup(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    let path = format!("auth/approle/role/{name}/secret-id/lookup");
    authorize(&state, &req.headers, &path, Capability::Update).await?;
    let secret_id = required(&req, "secret_id")?;
    let info = state
        .arca
        .approle()
        .lookup_secret_id(&name, &secret_id)
        .await
        .map_err(approle_error)?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(&req.request_id, secret_id_data(&info)))
}

async fn approle_secret_id_destroy(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if !matches!(req.op, Op::Write | Op::Delete) {
        return Err(method_not_allowed());
    }
    let path = format!("auth/approle/role/{name}/secret-id/destroy");
    let cap = if req.op == Op::Delete {
        Capability::Delete
    } else {
        Capability::Update
    };
    authorize(&state, &req.headers, &path, cap).await?;
    let secret_id = required(&req, "secret_id")?;
    state
        .arca
        .approle()
        .destroy_secret_id(&name, &secret_id)
        .await
        .map_err(approle_error)?;
    Ok(no_content())
}

async fn approle_accessor_lookup(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if req.op != Op::Write {
        return Err(method_not_allowed());
    }
    let path = format!("auth/approle/role/{name}/secret-id-accessor/lookup");
    authorize(&state, &req.headers, &path, Capability::Update).await?;
    let accessor = required(&req, "secret_id_accessor")?;
    let info = state
        .arca
        .approle()
        .lookup_secret_id_accessor(&name, &accessor)
        .await
        .map_err(approle_error)?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(&req.request_id, secret_id_data(&info)))
}

async fn approle_accessor_destroy(
    state: axum::extract::State<AppState>,
    Path(name): Path<String>,
    req: VaultRequest,
) -> Result<Response, ApiError> {
    if !matches!(req.op, Op::Write | Op::Delete) {
        return Err(method_not_allowed());
    }
    let path = format!("auth/approle/role/{name}/secret-id-accessor/destroy");
    let cap = if req.op == Op::Delete {
        Capability::Delete
    } else {
        Capability::Update
    };
    authorize(&state, &req.headers, &path, cap).await?;
    let accessor = required(&req, "secret_id_accessor")?;
    if !state
        .arca
        .approle()
        .destroy_secret_id_accessor(&name, &accessor)
        .await
        .map_err(approle_error)?
    {
        return Err(ApiError::bad_request(
            "failed to find accessor entry for secret_id_accessor",
        ));
    }
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_token_and_no_value() {
        let mut headers = HeaderMap::new();
        headers.insert("x-vault-token", "arca.secret-token".parse().unwrap());
        let mut body = Map::new();
        body.insert("secret_id".into(), json!("s3cr3t-value"));
        let req = VaultRequest {
            op: Op::Write,
            headers,
            request_id: RequestId("rid".into()),
            body,
        };
        let text = format!("{req:?}");
        assert!(
            text.contains("secret_id") && text.contains("Write"),
            "{text}"
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains("arca.secret-token"),
            "{text}"
        );
    }

    #[test]
    fn policies_are_sanitized_like_vault() {
        assert_eq!(
            sanitize_policies(vec![" B".into(), "a".into(), "a".into()], true),
            ["a", "b", "default"]
        );
        assert_eq!(
            sanitize_policies(vec!["root".into(), "x".into()], true),
            ["root"]
        );
        assert_eq!(sanitize_policies(vec![], false), Vec::<String>::new());
    }

    #[test]
    fn only_privileged_callers_choose_identity_metadata() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let parent = map(&[("service", "billing"), ("team", "a")]);
        // A child inherits, may repeat the parent's value, and may set other keys.
        let mut child = map(&[("team", "b")]);
        bind_identity_meta(&mut child, &parent, false).unwrap();
        assert_eq!(child, map(&[("service", "billing"), ("team", "b")]));
        let mut same = map(&[("service", "billing")]);
        assert!(bind_identity_meta(&mut same, &parent, false).is_ok());
        // It may not claim another value, nor one its parent lacks.
        for claim in [
            ("service", "admin"),
            ("role", "admin"),
            ("environment", "prod"),
        ] {
            let mut child = map(&[claim]);
            let err = bind_identity_meta(&mut child, &parent, false).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
        // Root or sudo chooses freely.
        let mut child = map(&[("service", "admin")]);
        bind_identity_meta(&mut child, &parent, true).unwrap();
        assert_eq!(child, map(&[("service", "admin")]));
    }
}
