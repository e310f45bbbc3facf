//! Vault's mount endpoints: `sys/mounts` (list, enable, read, disable, tune) and
//! `sys/internal/ui/mounts` (the preflight every `bao kv` / `vault kv` command sends to learn a
//! path's mount and KV version before anything else).
//!
//! Each handler checks the caller's policies first: reading the table needs `read` on
//! `sys/mounts`, enabling and tuning `update` on `sys/mounts/<path>` (and on
//! `sys/mounts/<path>/tune`), disabling `delete` on `sys/mounts/<path>`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::kv::{field_bool, field_duration, field_string_map, percent_decode};
use super::{Capability, VaultJson, authenticate, authorize, envelope};
use crate::mounts::{EnableRequest, MountEntry, MountError, TuneRequest};
use crate::server::{ApiError, AppState, RequestId, no_content};

/// Vault's system default lease TTL (768 hours), reported where a mount sets none.
const SYSTEM_DEFAULT_TTL: Duration = Duration::from_secs(768 * 3600);

/// The routes of this file and of the logical engines' catch-all.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/mounts", get(list_mounts))
        .route(
            "/v1/sys/mounts/{*path}",
            get(read_mount)
                .post(write_mount)
                .put(write_mount)
                .delete(disable_mount),
        )
        .route("/v1/sys/internal/ui/mounts", get(ui_mounts))
        .route("/v1/sys/internal/ui/mounts/{*path}", get(ui_mount))
        .merge(super::kv::routes())
}

/// A mount as `sys/mounts` reports it.
fn mount_json(entry: &MountEntry) -> Value {
    let options = if entry.options().is_empty() {
        Value::Null
    } else {
        json!(entry.options())
    };
    json!({
        "accessor": entry.accessor(),
        "config": {
            "default_lease_ttl": entry.default_lease_ttl().as_secs(),
            "force_no_cache": entry.force_no_cache(),
            "max_lease_ttl": entry.max_lease_ttl().as_secs(),
            "listing_visibility": entry.listing_visibility(),
        },
        "description": entry.description(),
        "external_entropy_access": false,
        "local": entry.local(),
        "options": options,
        "plugin_version": "",
        "running_plugin_version": format!("v{}+builtin.arca", crate::VERSION),
        "running_sha256": "",
        "seal_wrap": entry.seal_wrap(),
        "type": entry.kind().type_name(),
        "uuid": entry.uuid(),
    })
}

/// Vault answers `sys/mounts` with the table both in `data` and at the top level (older
/// clients read the latter).
fn legacy_envelope(request_id: &RequestId, data: Map<String, Value>) -> Value {
    let mut body = envelope(request_id, Value::Object(data.clone()));
    if let Value::Object(top) = &mut body {
        for (key, value) in data {
            top.entry(key).or_insert(value);
        }
    }
    body
}

async fn list_mounts(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "sys/mounts", Capability::Read).await?;
    let data: Map<String, Value> = state
        .arca
        .mounts()
        .list()
        .await?
        .iter()
        .map(|m| (m.path().to_owned(), mount_json(m)))
        .collect();
    Ok(Json(legacy_envelope(&request_id, data)))
}

/// Splits `sys/mounts/<path>` into the mount path and whether it is the `/tune` sub-path.
fn mount_target(raw: &str) -> Result<(String, bool), ApiError> {
    let path = percent_decode(raw)?;
    let path = path.trim_end_matches('/');
    match path.strip_suffix("/tune") {
        Some(mount) => Ok((mount.to_owned(), true)),
        None => Ok((path.to_owned(), false)),
    }
}

fn policy_path(mount: &str, tune: bool) -> String {
    let mount = mount.trim_matches('/');
    if tune {
        format!("sys/mounts/{mount}/tune")
    } else {
        format!("sys/mounts/{mount}")
    }
}

async fn read_mount(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (path, tune) = mount_target(&raw)?;
    authorize(
        &state,
        &headers,
        &policy_path(&path, tune),
        Capability::Read,
    )
    .await?;
    let entry = state
        .arca
        .mounts()
        .get(&path)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("no mount at {path:?}")))?;
    let data = if tune {
        tune_json(&entry)
    } else {
        mount_json(&entry)
    };
    let Value::Object(data) = data else {
        return Err(ApiError::internal(&"a mount did not render as an object"));
    };
    Ok(Json(legacy_envelope(&request_id, data)))
}

/// What `GET sys/mounts/<path>/tune` reports: the effective TTLs (the system default where
/// the mount sets none) and the tunable settings.
fn tune_json(entry: &MountEntry) -> Value {
    let ttl = |d: Duration| {
        if d.is_zero() {
            SYSTEM_DEFAULT_TTL.as_secs()
        } else {
            d.as_secs()
        }
    };
    let mut body = json!({
        "default_lease_ttl": ttl(entry.default_lease_ttl()),
        "max_lease_ttl": ttl(entry.max_lease_ttl()),
        "force_no_cache": entry.force_no_cache(),
        "description": entry.description(),
    });
    if !entry.options().is_empty() {
        body["options"] = json!(entry.options());
    }
    if !entry.listing_visibility().is_empty() {
        body["listing_visibility"] = json!(entry.listing_visibility());
    }
    body
}

async fn write_mount(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    VaultJson(body): VaultJson<Value>,
) -> Result<Response, ApiError> {
    let (path, tune) = mount_target(&raw)?;
    authorize(
        &state,
        &headers,
        &policy_path(&path, tune),
        Capability::Update,
    )
    .await?;
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request(
            "failed to parse JSON input: the body must be a JSON object",
        ));
    };
    if tune {
        let request = tune_request(&body)?;
        state.arca.mounts().tune(&path, request).await?;
    } else {
        let request = enable_request(&body)?;
        state.arca.mounts().enable(&path, request).await?;
    }
    Ok(no_content())
}

async fn disable_mount(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let (path, tune) = mount_target(&raw)?;
    if tune {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        ));
    }
    authorize(
        &state,
        &headers,
        &policy_path(&path, false),
        Capability::Delete,
    )
    .await?;
    // Vault answers 204 whether or not a mount was there.
    state.arca.mounts().disable(&path).await?;
    Ok(no_content())
}

fn present<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).filter(|v| !v.is_null())
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match present(object, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "error converting input for field {name:?}: expected a string"
        ))),
    }
}

/// Whether a value is "nothing": null, false, zero, an empty string, list or map. Settings
/// arca does not implement are accepted only with such values, so a client that sends its
/// defaults works, and one that asks for a feature arca lacks is told so.
fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0s" || s == "0",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn unsupported(name: &str) -> ApiError {
    ApiError::bad_request(format!("arca does not support the mount setting {name:?}"))
}

fn options_field(object: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    match present(object, "options") {
        None => Ok(BTreeMap::new()),
        Some(v) => Ok(field_string_map(v, "options", true)?
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()),
    }
}

/// The TTLs and flags of a `config` block (enable) or of a tune body: `(default_lease_ttl,
/// max_lease_ttl, force_no_cache, listing_visibility)`, each `None` when absent.
type ConfigFields = (
    Option<Duration>,
    Option<Duration>,
    Option<bool>,
    Option<String>,
);

fn config_fields(object: &Map<String, Value>, ignore: &[&str]) -> Result<ConfigFields, ApiError> {
    let ttl = |name: &str| -> Result<Option<Duration>, ApiError> {
        match present(object, name) {
            None => Ok(None),
            // Vault's "system" means the system default, which a zero stands for.
            Some(Value::String(s)) if s == "system" => Ok(Some(Duration::ZERO)),
            Some(v) => field_duration(v, name).map(Some),
        }
    };
    let default_ttl = ttl("default_lease_ttl")?;
    let max_ttl = ttl("max_lease_ttl")?;
    let force_no_cache = present(object, "force_no_cache")
        .map(|v| field_bool(v, "force_no_cache"))
        .transpose()?;
    let listing_visibility = string_field(object, "listing_visibility")?;
    for (name, value) in object {
        let known = matches!(
            name.as_str(),
            "default_lease_ttl" | "max_lease_ttl" | "force_no_cache" | "listing_visibility"
        );
        if !known && !ignore.contains(&name.as_str()) && !is_empty_value(value) {
            return Err(unsupported(name));
        }
    }
    Ok((default_ttl, max_ttl, force_no_cache, listing_visibility))
}

fn enable_request(body: &Map<String, Value>) -> Result<EnableRequest, ApiError> {
    let kind = string_field(body, "type")?.unwrap_or_default();
    let mut request = EnableRequest {
        kind,
        description: string_field(body, "description")?.unwrap_or_default(),
        options: options_field(body)?,
        ..EnableRequest::default()
    };
    if let Some(v) = present(body, "local") {
        request.local = field_bool(v, "local")?;
    }
    if let Some(v) = present(body, "seal_wrap") {
        request.seal_wrap = field_bool(v, "seal_wrap")?;
    }
    match present(body, "config") {
        None => {}
        Some(Value::Object(config)) => {
            let (default_ttl, max_ttl, force_no_cache, _) = config_fields(config, &[])?;
            request.default_lease_ttl = default_ttl.unwrap_or_default();
            request.max_lease_ttl = max_ttl.unwrap_or_default();
            request.force_no_cache = force_no_cache.unwrap_or(false);
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "error converting input for field \"config\": expected a map",
            ));
        }
    }
    // `plugin_name` may repeat the type; other plugin settings are not supported.
    if let Some(name) = string_field(body, "plugin_name")?
        && !name.is_empty()
        && name != request.kind
    {
        return Err(unsupported("plugin_name"));
    }
    for name in ["external_entropy_access", "plugin_version"] {
        if let Some(v) = present(body, name)
            && !is_empty_value(v)
        {
            return Err(unsupported(name));
        }
    }
    Ok(request)
}

fn tune_request(body: &Map<String, Value>) -> Result<TuneRequest, ApiError> {
    let (default_ttl, max_ttl, force_no_cache, listing_visibility) =
        config_fields(body, &["description", "options"])?;
    let options = present(body, "options")
        .is_some()
        .then(|| options_field(body))
        .transpose()?;
    Ok(TuneRequest {
        description: string_field(body, "description")?,
        default_lease_ttl: default_ttl,
        max_lease_ttl: max_ttl,
        force_no_cache,
        listing_visibility,
        options,
    })
}

/// `sys/internal/ui/mounts`: the mounts, under `secret` (auth methods are not mounts in
/// arca).
async fn ui_mounts(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "sys/mounts", Capability::Read).await?;
    let secret: Map<String, Value> = state
        .arca
        .mounts()
        .list()
        .await?
        .iter()
        .map(|m| (m.path().to_owned(), mount_json(m)))
        .collect();
    Ok(Json(envelope(
        &request_id,
        json!({ "secret": secret, "auth": {} }),
    )))
}

/// `sys/internal/ui/mounts/<path>`: the mount serving `path`, with its `path`, `type` and
/// `options.version`. Any valid token may ask (as in Vault, where the endpoint is open to
/// every token that can reach the mount); a path under no mount is 403, like a denied one, so
/// the endpoint cannot be used to enumerate mounts.
async fn ui_mount(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&state, &headers).await?;
    let path = percent_decode(&raw)?;
    let entry = state
        .arca
        .mounts()
        .mount_of(&path)
        .await?
        .ok_or_else(ApiError::permission_denied)?;
    let mut data = mount_json(&entry);
    data["path"] = json!(entry.path());
    Ok(Json(envelope(&request_id, data)))
}

impl From<MountError> for ApiError {
    fn from(err: MountError) -> Self {
        match err {
            MountError::Sealed => Self::sealed(),
            MountError::InvalidPath(_)
            | MountError::Reserved(_)
            | MountError::InUse(_)
            | MountError::Unsupported(_)
            | MountError::InvalidRequest(_)
            | MountError::NotFound(_)
            | MountError::TableFull => Self::bad_request(err.to_string()),
            MountError::Barrier(inner) => inner.into(),
            other => Self::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn enable_bodies_from_hvac_and_bao() {
        // hvac sends nulls for everything it was not given.
        let r = enable_request(&object(json!({
            "type": "kv", "description": null, "config": null,
            "options": {"version": 2}, "plugin_name": null, "local": false, "seal_wrap": false
        })))
        .unwrap();
        assert_eq!(r.kind, "kv");
        assert_eq!(r.options.get("version").unwrap(), "2");
        // bao sends its defaults in config.
        let r = enable_request(&object(json!({
            "type": "transit",
            "config": {"default_lease_ttl": "0s", "max_lease_ttl": "1h", "force_no_cache": false,
                       "audit_non_hmac_request_keys": [], "plugin_version": ""},
        })))
        .unwrap();
        assert_eq!(r.max_lease_ttl, Duration::from_secs(3600));
        assert!(
            enable_request(&object(json!({
                "type": "kv", "config": {"audit_non_hmac_request_keys": ["x"]}
            })))
            .is_err()
        );
        assert!(enable_request(&object(json!({"type": 3}))).is_err());
    }

    #[test]
    fn tune_targets() {
        assert_eq!(
            mount_target("secret/tune").unwrap(),
            ("secret".to_owned(), true)
        );
        assert_eq!(
            mount_target("team/kv/").unwrap(),
            ("team/kv".to_owned(), false)
        );
        let t = tune_request(&object(json!({
            "description": "d", "default_lease_ttl": 60, "max_lease_ttl": "system"
        })))
        .unwrap();
        assert_eq!(t.max_lease_ttl, Some(Duration::ZERO));
        assert_eq!(t.description.as_deref(), Some("d"));
    }
}
