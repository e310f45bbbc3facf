//! KV version 2 over HTTP, with Vault's JSON, status codes and capability checks, for any mount
//! in the mount table.
//!
//! KV mounts live at paths the operator chooses (`secret/`, `team-a/kv/`), so their routes
//! cannot be fixed in the router. One catch-all route (`/v1/{*path}`) takes every request no
//! fixed route claims, resolves its mount in the mount table and dispatches on the mount's
//! engine; a path under no mount gets the 404 (or, while sealed, the 503) of the server's
//! fallback. Fixed routes (`sys/*`, `auth/*`) always win over the catch-all.
//!
//! Each handler checks the caller's policies before it reads or writes anything, with Vault's
//! capability for the operation: a write to `data/` needs `create` when the key does not exist
//! and `update` when it does; a read `read`; HTTP PATCH `patch`; listing `list` on the
//! `metadata/` folder; `delete/`, `undelete/` and `destroy/` `update`; deleting metadata
//! `delete`.
//!
//! Values never appear in errors or logs: parse errors name fields, not contents.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{Capability, Envelope, VaultJson, authorize, authorize_create_or_update, rfc3339};
use crate::kv::duration::{format_duration, format_go, parse_secs, parse_signed_secs};
use crate::kv::{
    ConfigUpdate, DeleteVersionAfter, KeyMetadata, KvError, MetadataPatch, MetadataUpdate,
    PatchOutcome, SecretData, SubkeysRead, VersionInfo, VersionRead, Written,
};
use crate::mounts::{MountEntry, MountKind};
use crate::server::{ApiError, AppState, RequestId, no_content};

/// The catch-all route of the logical (mounted) engines.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/{*path}", any(dispatch))
}

/// Decodes `%XX` escapes of a URL path. Refuses malformed escapes, non-UTF-8 results and NUL.
pub(crate) fn percent_decode(raw: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("invalid request path");
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| bad())?;
    if text.contains('\0') {
        return Err(bad());
    }
    Ok(text)
}

/// The request path after `/v1/`, decoded.
fn logical_path(request: &Request) -> Result<String, ApiError> {
    let raw = request.uri().path();
    percent_decode(raw.strip_prefix("/v1/").unwrap_or(raw))
}

fn no_route(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no handler for route {path:?}. route entry not found."),
    )
}

async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    match dispatch_inner(&state, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn dispatch_inner(state: &AppState, request: Request) -> Result<Response, ApiError> {
    if state.arca.barrier().is_sealed() {
        return Err(ApiError::sealed());
    }
    let path = logical_path(&request)?;
    let Some(mount) = state.arca.mounts().mount_of(&path).await? else {
        return Err(no_route(&path));
    };
    match mount.kind() {
        MountKind::KvV2 => kv_request(state, mount, &path, request).await,
        // Transit's routes are fixed ones under `transit/`; a transit mount elsewhere has no
        // handler here.
        _ => Err(no_route(&path)),
    }
}

/// The operation a request asks of a KV mount, from its path and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Data,
    Metadata,
    Delete,
    Undelete,
    Destroy,
    Subkeys,
    Config,
}

fn split_endpoint(rest: &str) -> Option<(Endpoint, &str)> {
    if rest == "config" {
        return Some((Endpoint::Config, ""));
    }
    if rest == "metadata" {
        return Some((Endpoint::Metadata, ""));
    }
    let (head, tail) = rest.split_once('/')?;
    let endpoint = match head {
        "data" => Endpoint::Data,
        "metadata" => Endpoint::Metadata,
        "delete" => Endpoint::Delete,
        "undelete" => Endpoint::Undelete,
        "destroy" => Endpoint::Destroy,
        "subkeys" => Endpoint::Subkeys,
        _ => return None,
    };
    Some((endpoint, tail))
}

fn unsupported_path() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unsupported path")
}

fn unsupported_operation() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
}

/// What the HTTP method asks for. `LIST` is Vault's own verb; `GET ?list=true` is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Read,
    List,
    Write,
    Patch,
    Delete,
}

fn verb(method: &Method, query: &HashMap<String, String>) -> Result<Verb, ApiError> {
    let list = query
        .get("list")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "T" | "TRUE" | "True"));
    Ok(match method.as_str() {
        "GET" if list => Verb::List,
        "GET" => Verb::Read,
        "LIST" => Verb::List,
        "POST" | "PUT" => Verb::Write,
        "PATCH" => Verb::Patch,
        "DELETE" => Verb::Delete,
        _ => return Err(unsupported_operation()),
    })
}

fn query(request: &Request) -> Result<HashMap<String, String>, ApiError> {
    Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .map_err(|_| ApiError::bad_request("invalid query string"))
}

fn query_u64(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "error converting input for field {name:?}: not a non-negative integer"
            ))
        }),
    }
}

/// The media type PATCH requires (RFC 7396), as Vault does.
const MERGE_PATCH: &str = "application/merge-patch+json";

fn check_merge_patch(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() == Some(MERGE_PATCH) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH requires Content-Type of {MERGE_PATCH}"),
        ))
    }
}

async fn body_object(state: &AppState, request: Request) -> Result<Map<String, Value>, ApiError> {
    let VaultJson(value) = VaultJson::<Value>::from_request(request, state).await?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::bad_request(
            "failed to parse JSON input: the body must be a JSON object",
        )),
    }
}

async fn kv_request(
    state: &AppState,
    mount: MountEntry,
    full_path: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let rest = full_path
        .strip_prefix(mount.path())
        .unwrap_or_default()
        .to_owned();
    let Some((endpoint, key)) = split_endpoint(&rest) else {
        return Err(unsupported_path());
    };
    let key = key.to_owned();
    let query = query(&request)?;
    let verb = verb(request.method(), &query)?;
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(|| RequestId(String::new()));
    let headers = request.headers().clone();
    let ctx = Ctx {
        state,
        mount: &mount,
        full_path,
        key: &key,
        headers: &headers,
        request_id: &request_id,
    };
    match (endpoint, verb) {
        (Endpoint::Data, Verb::Read) => ctx.read_data(&query).await,
        (Endpoint::Data, Verb::Write) => ctx.write_data(request).await,
        (Endpoint::Data, Verb::Patch) => ctx.patch_data(request).await,
        (Endpoint::Data, Verb::Delete) => ctx.delete_latest().await,
        (Endpoint::Metadata, Verb::List) => ctx.list().await,
        (Endpoint::Metadata, Verb::Read) => ctx.read_metadata().await,
        (Endpoint::Metadata, Verb::Write) => ctx.write_metadata(request).await,
        (Endpoint::Metadata, Verb::Patch) => ctx.patch_metadata(request).await,
        (Endpoint::Metadata, Verb::Delete) => ctx.delete_metadata().await,
        (Endpoint::Delete | Endpoint::Undelete | Endpoint::Destroy, Verb::Write) => {
            ctx.change_versions(endpoint, request).await
        }
        (Endpoint::Subkeys, Verb::Read) => ctx.subkeys(&query).await,
        (Endpoint::Config, Verb::Read) => ctx.read_config().await,
        (Endpoint::Config, Verb::Write) => ctx.write_config(request).await,
        _ => Err(unsupported_operation()),
    }
}

/// One KV request after routing.
struct Ctx<'a> {
    state: &'a AppState,
    mount: &'a MountEntry,
    /// The request path after `/v1/`, as policies see it.
    full_path: &'a str,
    /// The secret path (or folder) after the endpoint.
    key: &'a str,
    headers: &'a HeaderMap,
    request_id: &'a RequestId,
}

/// Go's `time.RFC3339Nano`: seconds, then the nanoseconds with trailing zeros trimmed.
pub(crate) fn rfc3339_nano(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let base = rfc3339(UNIX_EPOCH + Duration::from_secs(since.as_secs()));
    let nanos = since.subsec_nanos();
    if nanos == 0 {
        return base;
    }
    let fraction = format!("{nanos:09}");
    let fraction = fraction.trim_end_matches('0');
    match base.strip_suffix('Z') {
        Some(head) => format!("{head}.{fraction}Z"),
        None => base,
    }
}

fn custom_json(custom: Option<&BTreeMap<String, String>>) -> Value {
    custom.map_or(Value::Null, |c| json!(c))
}

/// A version's metadata as Vault shows it (`custom_metadata` is null when there is none).
#[derive(Serialize)]
struct VersionJson<'a> {
    created_time: String,
    custom_metadata: Option<&'a BTreeMap<String, String>>,
    deletion_time: String,
    destroyed: bool,
    version: u64,
}

fn version_json<'a>(
    info: &VersionInfo,
    custom: Option<&'a BTreeMap<String, String>>,
) -> VersionJson<'a> {
    VersionJson {
        created_time: rfc3339_nano(info.created_time),
        custom_metadata: custom,
        deletion_time: info.deletion_time.map(rfc3339_nano).unwrap_or_default(),
        destroyed: info.destroyed,
        version: info.version,
    }
}

/// A read version: its data embedded as stored (checked to be one JSON object, never parsed
/// into a tree and written again) and its metadata.
#[derive(Serialize)]
struct VersionData<'a> {
    data: &'a RawValue,
    metadata: VersionJson<'a>,
}

fn written_json(written: &Written) -> VersionJson<'_> {
    version_json(&written.info, written.custom_metadata.as_ref())
}

fn metadata_json(meta: &KeyMetadata) -> Value {
    let versions: Map<String, Value> = meta
        .versions
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                json!({
                    "created_time": rfc3339_nano(v.created_time),
                    "deletion_time": v.deletion_time.map(rfc3339_nano).unwrap_or_default(),
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": meta.cas_required,
        "created_time": rfc3339_nano(meta.created_time),
        "current_version": meta.current_version,
        "custom_metadata": custom_json(meta.custom_metadata.as_ref()),
        "delete_version_after": format_duration(meta.delete_version_after),
        "max_versions": meta.max_versions,
        "oldest_version": meta.oldest_version,
        "updated_time": rfc3339_nano(meta.updated_time),
        "versions": versions,
    })
}

fn respond(status: StatusCode, body: impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Lenient field parsing, as Vault's framework does: numbers may come as strings, booleans as
// "true"/"false", durations as seconds or Go strings. Messages name the field, never a value.

fn field_error(name: &str, what: &str) -> ApiError {
    ApiError::bad_request(format!("error converting input for field {name:?}: {what}"))
}

pub(crate) fn field_u64(value: &Value, name: &str) -> Result<u64, ApiError> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| field_error(name, "expected a non-negative integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| field_error(name, "expected a non-negative integer")),
        _ => Err(field_error(name, "expected a non-negative integer")),
    }
}

pub(crate) fn field_u32(value: &Value, name: &str) -> Result<u32, ApiError> {
    u32::try_from(field_u64(value, name)?).map_err(|_| field_error(name, "out of range"))
}

pub(crate) fn field_bool(value: &Value, name: &str) -> Result<bool, ApiError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim() {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
            "false" | "0" | "f" | "F" | "FALSE" | "False" | "" => Ok(false),
            _ => Err(field_error(name, "expected a boolean")),
        },
        Value::Number(n) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(field_error(name, "expected a boolean")),
        },
        _ => Err(field_error(name, "expected a boolean")),
    }
}

/// Signed whole seconds from a number of seconds or a Go duration string.
pub(crate) fn field_signed_secs(value: &Value, name: &str) -> Result<i64, ApiError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .filter(|s| s.abs() <= crate::kv::duration::MAX_DURATION_SECS)
            .ok_or_else(|| field_error(name, "expected a duration")),
        Value::String(s) => parse_signed_secs(s).map_err(|e| field_error(name, &e.to_string())),
        _ => Err(field_error(name, "expected a duration")),
    }
}

/// A non-negative duration (Vault's `TypeDurationSecond`).
pub(crate) fn field_duration(value: &Value, name: &str) -> Result<Duration, ApiError> {
    match value {
        Value::String(s) => parse_secs(s).map_err(|e| field_error(name, &e.to_string())),
        other => {
            let secs = field_signed_secs(other, name)?;
            u64::try_from(secs)
                .map(Duration::from_secs)
                .map_err(|_| field_error(name, "a negative duration is not allowed"))
        }
    }
}

/// A string from a JSON string, number or boolean (Vault's weak decoding of string maps).
fn weak_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A map of strings (Vault's `custom_metadata` and mount `options`). With `allow_null`, a
/// `null` value is kept as `None` (a merge-patch removal).
pub(crate) fn field_string_map(
    value: &Value,
    name: &str,
    allow_null: bool,
) -> Result<BTreeMap<String, Option<String>>, ApiError> {
    let Value::Object(object) = value else {
        return Err(field_error(name, "expected a map of strings"));
    };
    object
        .iter()
        .map(|(k, v)| {
            if v.is_null() && allow_null {
                return Ok((k.clone(), None));
            }
            weak_string(v)
                .map(|s| (k.clone(), Some(s)))
                .ok_or_else(|| field_error(name, "expected a map of strings"))
        })
        .collect()
}

fn present<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).filter(|v| !v.is_null())
}

/// `options.cas`: absent, or a non-negative integer (or its string).
fn cas_option(body: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    let Some(options) = present(body, "options") else {
        return Ok(None);
    };
    let Value::Object(options) = options else {
        return Err(field_error("options", "expected a map"));
    };
    match present(options, "cas") {
        None => Ok(None),
        Some(cas) => field_u64(cas, "cas")
            .map(Some)
            .map_err(|_| ApiError::bad_request("error parsing check-and-set parameter")),
    }
}

/// The `data` object of a write or patch body.
fn data_object(body: &Map<String, Value>) -> Result<&Map<String, Value>, ApiError> {
    match present(body, "data") {
        None => Err(ApiError::bad_request("no data provided")),
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(field_error("data", "expected a map")),
    }
}

/// Vault's comma-int slice: `[1, "2"]`, `3`, or `"1,2"`.
fn versions_field(body: &Map<String, Value>) -> Result<Vec<u64>, ApiError> {
    let parse_str = |s: &str| -> Result<Vec<u64>, ApiError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse()
                    .map_err(|_| field_error("versions", "expected a list of version numbers"))
            })
            .collect()
    };
    let versions = match present(body, "versions") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.extend(parse_str(s)?),
                    other => out.push(field_u64(other, "versions")?),
                }
            }
            out
        }
        Some(Value::String(s)) => parse_str(s)?,
        Some(other) => vec![field_u64(other, "versions")?],
    };
    if versions.is_empty() {
        return Err(ApiError::bad_request("No version number provided"));
    }
    Ok(versions)
}

impl Ctx<'_> {
    async fn authorize(&self, cap: Capability) -> Result<(), ApiError> {
        authorize(self.state, self.headers, self.full_path, cap).await?;
        Ok(())
    }

    /// `create` when the key is new, `update` when it exists (Vault's existence check). A
    /// failure to tell (a malformed path, say) counts as new; the operation itself then
    /// reports the problem, after the capability check.
    async fn authorize_write(&self) -> Result<(), ApiError> {
        let kv = self.state.arca.kv();
        let exists = async { kv.exists(self.mount, self.key).await.unwrap_or(false) };
        authorize_create_or_update(self.state, self.headers, self.full_path, exists).await?;
        Ok(())
    }

    fn ok(&self, data: impl Serialize) -> Response {
        respond(StatusCode::OK, Envelope::new(self.request_id, data))
    }

    fn gone(&self, data: impl Serialize) -> Response {
        respond(StatusCode::NOT_FOUND, Envelope::new(self.request_id, data))
    }

    async fn read_data(&self, query: &HashMap<String, String>) -> Result<Response, ApiError> {
        self.authorize(Capability::Read).await?;
        let version = query_u64(query, "version")?;
        match self
            .state
            .arca
            .kv()
            .read(self.mount, self.key, version)
            .await?
        {
            None => Err(ApiError::not_found()),
            Some(VersionRead::Gone {
                info,
                custom_metadata,
            }) => Ok(self.gone(json!({
                "data": null,
                "metadata": version_json(&info, custom_metadata.as_ref()),
            }))),
            Some(VersionRead::Live {
                data,
                info,
                custom_metadata,
            }) => Ok(self.ok(VersionData {
                data: data.as_raw_json()?,
                metadata: version_json(&info, custom_metadata.as_ref()),
            })),
        }
    }

    async fn write_data(&self, request: Request) -> Result<Response, ApiError> {
        self.authorize_write().await?;
        let body = body_object(self.state, request).await?;
        let data = SecretData::from_object(data_object(&body)?)?;
        let cas = cas_option(&body)?;
        let written = self
            .state
            .arca
            .kv()
            .write(self.mount, self.key, &data, cas)
            .await?;
        Ok(self.ok(written_json(&written)))
    }

    async fn patch_data(&self, request: Request) -> Result<Response, ApiError> {
        self.authorize(Capability::Patch).await?;
        check_merge_patch(self.headers)?;
        let body = body_object(self.state, request).await?;
        let patch = data_object(&body)?;
        let cas = cas_option(&body)?;
        match self
            .state
            .arca
            .kv()
            .patch(self.mount, self.key, patch, cas)
            .await?
        {
            None => Err(ApiError::not_found()),
            Some(PatchOutcome::Gone {
                info,
                custom_metadata,
            }) => Ok(self.gone(version_json(&info, custom_metadata.as_ref()))),
            Some(PatchOutcome::Written(written)) => Ok(self.ok(written_json(&written))),
        }
    }

    async fn delete_latest(&self) -> Result<Response, ApiError> {
        self.authorize(Capability::Delete).await?;
        self.state
            .arca
            .kv()
            .delete_latest(self.mount, self.key)
            .await?;
        Ok(no_content())
    }

    async fn change_versions(
        &self,
        endpoint: Endpoint,
        request: Request,
    ) -> Result<Response, ApiError> {
        self.authorize(Capability::Update).await?;
        let body = body_object(self.state, request).await?;
        let versions = versions_field(&body)?;
        let kv = self.state.arca.kv();
        match endpoint {
            Endpoint::Delete => kv.delete_versions(self.mount, self.key, &versions).await?,
            Endpoint::Undelete => {
                kv.undelete_versions(self.mount, self.key, &versions)
                    .await?;
            }
            _ => kv.destroy_versions(self.mount, self.key, &versions).await?,
        }
        Ok(no_content())
    }

    async fn list(&self) -> Result<Response, ApiError> {
        // Policies see a listed folder with its trailing slash (`secret/metadata/app/`).
        let folder_path = if self.full_path.ends_with('/') {
            self.full_path.to_owned()
        } else {
            format!("{}/", self.full_path)
        };
        authorize(self.state, self.headers, &folder_path, Capability::List).await?;
        let keys = self.state.arca.kv().list(self.mount, self.key).await?;
        if keys.is_empty() {
            return Err(ApiError::not_found());
        }
        Ok(self.ok(json!({ "keys": keys })))
    }

    async fn read_metadata(&self) -> Result<Response, ApiError> {
        self.authorize(Capability::Read).await?;
        match self
            .state
            .arca
            .kv()
            .read_metadata(self.mount, self.key)
            .await?
        {
            None => Err(ApiError::not_found()),
            Some(meta) => Ok(self.ok(metadata_json(&meta))),
        }
    }

    async fn write_metadata(&self, request: Request) -> Result<Response, ApiError> {
        self.authorize_write().await?;
        let body = body_object(self.state, request).await?;
        let mut update = MetadataUpdate::default();
        if let Some(v) = present(&body, "max_versions") {
            update.max_versions = Some(field_u32(v, "max_versions")?);
        }
        if let Some(v) = present(&body, "cas_required") {
            update.cas_required = Some(field_bool(v, "cas_required")?);
        }
        if let Some(v) = present(&body, "delete_version_after") {
            update.delete_version_after = Some(field_duration(v, "delete_version_after")?);
        }
        if let Some(v) = present(&body, "custom_metadata") {
            let entries = field_string_map(v, "custom_metadata", false)?;
            update.custom_metadata = Some(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect(),
            );
        }
        self.state
            .arca
            .kv()
            .write_metadata(self.mount, self.key, update)
            .await?;
        Ok(no_content())
    }

    async fn patch_metadata(&self, request: Request) -> Result<Response, ApiError> {
        self.authorize(Capability::Patch).await?;
        check_merge_patch(self.headers)?;
        let body = body_object(self.state, request).await?;
        let mut patch = MetadataPatch::default();
        if let Some(v) = present(&body, "max_versions") {
            patch.max_versions = Some(field_u32(v, "max_versions")?);
        }
        if let Some(v) = present(&body, "cas_required") {
            patch.cas_required = Some(field_bool(v, "cas_required")?);
        }
        if let Some(v) = present(&body, "delete_version_after") {
            patch.delete_version_after = Some(field_duration(v, "delete_version_after")?);
        }
        if let Some(v) = present(&body, "custom_metadata") {
            patch.custom_metadata = Some(field_string_map(v, "custom_metadata", true)?);
        }
        if self
            .state
            .arca
            .kv()
            .patch_metadata(self.mount, self.key, patch)
            .await?
        {
            Ok(no_content())
        } else {
            Err(ApiError::not_found())
        }
    }

    async fn delete_metadata(&self) -> Result<Response, ApiError> {
        self.authorize(Capability::Delete).await?;
        self.state
            .arca
            .kv()
            .delete_metadata(self.mount, self.key)
            .await?;
        Ok(no_content())
    }

    async fn subkeys(&self, query: &HashMap<String, String>) -> Result<Response, ApiError> {
        self.authorize(Capability::Read).await?;
        let version = query_u64(query, "version")?;
        let depth = query_u64(query, "depth")?.unwrap_or(0);
        let depth = usize::try_from(depth).unwrap_or(usize::MAX);
        match self
            .state
            .arca
            .kv()
            .subkeys(self.mount, self.key, version, depth)
            .await?
        {
            None => Err(ApiError::not_found()),
            Some(SubkeysRead::Gone {
                info,
                custom_metadata,
            }) => Ok(self.gone(json!({
                "subkeys": null,
                "metadata": version_json(&info, custom_metadata.as_ref()),
            }))),
            Some(SubkeysRead::Live {
                subkeys,
                info,
                custom_metadata,
            }) => Ok(self.ok(json!({
                "subkeys": subkeys,
                "metadata": version_json(&info, custom_metadata.as_ref()),
            }))),
        }
    }

    async fn read_config(&self) -> Result<Response, ApiError> {
        self.authorize(Capability::Read).await?;
        let config = self.state.arca.kv().read_config(self.mount).await?;
        Ok(self.ok(json!({
            "cas_required": config.cas_required,
            "delete_version_after": format_go(config.delete_version_after.as_signed_secs()),
            "max_versions": config.max_versions,
        })))
    }

    async fn write_config(&self, request: Request) -> Result<Response, ApiError> {
        self.authorize(Capability::Update).await?;
        let body = body_object(self.state, request).await?;
        let mut update = ConfigUpdate::default();
        if let Some(v) = present(&body, "max_versions") {
            update.max_versions = Some(field_u32(v, "max_versions")?);
        }
        if let Some(v) = present(&body, "cas_required") {
            update.cas_required = Some(field_bool(v, "cas_required")?);
        }
        if let Some(v) = present(&body, "delete_version_after") {
            update.delete_version_after = Some(DeleteVersionAfter::from_signed_secs(
                field_signed_secs(v, "delete_version_after")?,
            ));
        }
        self.state
            .arca
            .kv()
            .write_config(self.mount, update)
            .await?;
        Ok(no_content())
    }
}

impl From<KvError> for ApiError {
    fn from(err: KvError) -> Self {
        match err {
            KvError::Sealed => Self::sealed(),
            KvError::NoSuchMount(path) => no_route(&path),
            KvError::InvalidPath(_)
            | KvError::InvalidRequest(_)
            | KvError::CasMismatch
            | KvError::CasRequired => Self::bad_request(err.to_string()),
            KvError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string()),
            KvError::KeyUnavailable => {
                tracing::error!(error = %err, "KV request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }
            KvError::Barrier(inner) => inner.into(),
            other => Self::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("secret/data/a%20b").unwrap(),
            "secret/data/a b"
        );
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert!(percent_decode("a%00b").is_err());
        assert!(percent_decode("a%zz").is_err());
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(split_endpoint("data/a/b"), Some((Endpoint::Data, "a/b")));
        assert_eq!(split_endpoint("metadata/"), Some((Endpoint::Metadata, "")));
        assert_eq!(split_endpoint("metadata"), Some((Endpoint::Metadata, "")));
        assert_eq!(split_endpoint("config"), Some((Endpoint::Config, "")));
        assert_eq!(split_endpoint("destroy/x"), Some((Endpoint::Destroy, "x")));
        assert_eq!(split_endpoint("other/x"), None);
        assert_eq!(split_endpoint("data"), None);
    }

    #[test]
    fn times_as_go_prints_them() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 945_319_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.945319Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn versions_in_every_form() {
        let body = |v: Value| json!({ "versions": v }).as_object().unwrap().clone();
        assert_eq!(versions_field(&body(json!([1, "2"]))).unwrap(), [1, 2]);
        assert_eq!(versions_field(&body(json!("3,4"))).unwrap(), [3, 4]);
        assert_eq!(versions_field(&body(json!(5))).unwrap(), [5]);
        assert!(versions_field(&body(json!([]))).is_err());
        assert!(versions_field(&body(json!(["x"]))).is_err());
        assert!(versions_field(&body(json!([-1]))).is_err());
        assert!(versions_field(&Map::new()).is_err());
    }

    #[test]
    fn lenient_fields() {
        assert_eq!(field_u64(&json!("7"), "f").unwrap(), 7);
        assert!(field_u64(&json!(-7), "f").is_err());
        assert!(field_bool(&json!("true"), "f").unwrap());
        assert!(field_bool(&json!("yes"), "f").is_err());
        assert_eq!(
            field_duration(&json!("1h"), "f").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            field_duration(&json!(30), "f").unwrap(),
            Duration::from_secs(30)
        );
        assert!(field_duration(&json!("-1s"), "f").is_err());
        assert_eq!(field_signed_secs(&json!("-1s"), "f").unwrap(), -1);
    }
}
