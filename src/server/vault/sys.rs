//! Vault's `sys/*` endpoints for the seal: init, unseal, seal, status, health, leader, key
//! status, keyring rotation, root-key rotation, and rekey, both Vault's unauthenticated
//! `sys/rekey/*` (what hvac calls) and OpenBao's authenticated `sys/rotate/root/*`.
//!
//! As in Vault, `sys/init`, `sys/seal-status`, `sys/unseal`, `sys/health` and `sys/leader`
//! answer without the response envelope; the authenticated endpoints use it.

use std::time::SystemTime;

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Capability, VaultJson, authorize, authorize_all, envelope, rfc3339};
use crate::seal::{
    InitRequest, Passphrase, RekeyStatus, RekeyUpdate, RekeyVerifyStatus, RekeyVerifyUpdate,
    SealKind, SealStatus, ShareText,
};
use crate::server::{ApiError, RequestId, no_content};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/init", get(init_status).put(init).post(init))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/unseal", post(unseal).put(unseal))
        .route("/v1/sys/seal", post(seal).put(seal))
        .route("/v1/sys/health", get(health).head(health))
        .route("/v1/sys/leader", get(leader))
        .route("/v1/sys/key-status", get(key_status))
        .route("/v1/sys/rotate", post(rotate_keyring).put(rotate_keyring))
        .route(
            "/v1/sys/rotate/keyring",
            post(rotate_keyring).put(rotate_keyring),
        )
        .route("/v1/sys/rotate/root", post(rotate_root).put(rotate_root))
        // Vault's unauthenticated rekey (hvac's start_rekey / rekey).
        .route(
            "/v1/sys/rekey/init",
            get(rekey_status_plain)
                .put(rekey_init_plain)
                .post(rekey_init_plain)
                .delete(rekey_cancel_plain),
        )
        .route(
            "/v1/sys/rekey/update",
            put(rekey_update_plain).post(rekey_update_plain),
        )
        .route(
            "/v1/sys/rekey/verify",
            get(rekey_verify_status_plain)
                .put(rekey_verify_plain)
                .post(rekey_verify_plain)
                .delete(rekey_verify_cancel_plain),
        )
        // OpenBao's authenticated equivalents; `recovery` is the same flow over recovery keys
        // (the seal layer rekeys whichever the configured seal uses).
        .route(
            "/v1/sys/rotate/{which}/init",
            get(rekey_status_auth)
                .put(rekey_init_auth)
                .post(rekey_init_auth)
                .delete(rekey_cancel_auth),
        )
        .route(
            "/v1/sys/rotate/{which}/update",
            put(rekey_update_auth).post(rekey_update_auth),
        )
        .route(
            "/v1/sys/rotate/{which}/verify",
            get(rekey_verify_status_auth)
                .put(rekey_verify_auth)
                .post(rekey_verify_auth)
                .delete(rekey_verify_cancel_auth),
        )
}

use axum::routing::put;

// ---------------------------------------------------------------------------------------------
// Status

fn seal_status_json(state: &AppState, status: &SealStatus) -> Value {
    let mut body = json!({
        "type": status.kind.as_str(),
        "initialized": status.initialized,
        "sealed": status.sealed,
        "t": status.threshold,
        "n": status.shares,
        "progress": status.progress,
        "nonce": status.nonce,
        "version": crate::VERSION,
        "build_date": "",
        "migration": false,
        "recovery_seal": status.recovery_seal,
        "storage_type": state.arca.storage_type(),
    });
    if status.recovery_seal {
        // Recovery keys are Shamir shares; `bao status` prints "n/a" without this field.
        body["recovery_seal_type"] = json!("shamir");
    }
    if !status.sealed
        && let Some(id) = cluster_id(state)
    {
        body["cluster_name"] = json!("arca");
        body["cluster_id"] = json!(id);
    }
    body
}

/// A stable id for this store, derived from the keyring's derivation seed (not secret: a
/// one-way function of it), as Vault's `cluster_id`.
fn cluster_id(state: &AppState) -> Option<String> {
    let key = state
        .arca
        .barrier()
        .derive_subkey(b"arca/cluster-id/v1")
        .ok()?;
    let h = hex::encode(&key.expose_secret()[..16]);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

async fn seal_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = state.arca.seal().status().await?;
    Ok(Json(seal_status_json(&state, &status)))
}

async fn init_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = state.arca.seal().status().await?;
    Ok(Json(json!({ "initialized": status.initialized })))
}

#[derive(Debug, Deserialize)]
struct HealthQuery {
    standbyok: Option<bool>,
    activecode: Option<u16>,
    standbycode: Option<u16>,
    sealedcode: Option<u16>,
    uninitcode: Option<u16>,
    // Accepted for compatibility; arca has no performance standbys or DR secondaries.
    #[allow(dead_code)]
    perfstandbyok: Option<bool>,
    #[allow(dead_code)]
    performancestandbycode: Option<u16>,
    #[allow(dead_code)]
    drsecondarycode: Option<u16>,
}

fn status_code(code: Option<u16>, default: StatusCode) -> Result<StatusCode, ApiError> {
    match code {
        None => Ok(default),
        Some(code) => StatusCode::from_u16(code)
            .map_err(|_| ApiError::bad_request(format!("invalid status code {code}"))),
    }
}

async fn health(
    State(state): State<AppState>,
    query: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::bad_request("invalid health query"))?;
    let status = state.arca.seal().status().await?;
    let code = if !status.initialized {
        status_code(query.uninitcode, StatusCode::NOT_IMPLEMENTED)?
    } else if status.sealed {
        status_code(query.sealedcode, StatusCode::SERVICE_UNAVAILABLE)?
    } else {
        status_code(query.activecode, StatusCode::OK)?
    };
    // arca has no standbys yet; `standbyok` and `standbycode` only matter with HA.
    let _ = (query.standbyok, query.standbycode);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut body = json!({
        "initialized": status.initialized,
        "sealed": status.sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": crate::VERSION,
    });
    if !status.sealed
        && let Some(id) = cluster_id(&state)
    {
        body["cluster_name"] = json!("arca");
        body["cluster_id"] = json!(id);
    }
    Ok((code, Json(body)).into_response())
}

async fn leader() -> Json<Value> {
    Json(json!({
        "ha_enabled": false,
        "is_self": false,
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": "",
        "leader_cluster_address": "",
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
    }))
}

async fn key_status(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "sys/key-status", Capability::Read).await?;
    let status = state.arca.barrier().key_status()?;
    let data = json!({
        "term": status.term,
        "install_time": rfc3339(status.install_time),
        "encryptions": status.encryptions,
    });
    // Vault answers with the fields both at the top level and in `data`.
    let mut body = envelope(&request_id, data.clone());
    if let (Some(body), Some(data)) = (body.as_object_mut(), data.as_object()) {
        for (k, v) in data {
            body.insert(k.clone(), v.clone());
        }
    }
    Ok(Json(body))
}

// ---------------------------------------------------------------------------------------------
// Init, unseal, seal

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    secret_shares: Option<u32>,
    secret_threshold: Option<u32>,
    recovery_shares: Option<u32>,
    recovery_threshold: Option<u32>,
    stored_shares: Option<u32>,
    pgp_keys: Option<Vec<String>>,
    recovery_pgp_keys: Option<Vec<String>>,
    root_token_pgp_key: Option<String>,
    /// arca's passphrase seal: the passphrase that will unseal.
    passphrase: Option<String>,
}

fn small(value: Option<u32>, name: &str) -> Result<u8, ApiError> {
    u8::try_from(value.unwrap_or(0))
        .map_err(|_| ApiError::bad_request(format!("{name} must be at most 255")))
}

fn shares_json(shares: &[ShareText]) -> (Vec<&str>, Vec<&str>) {
    (
        shares.iter().map(|s| s.hex.as_str()).collect(),
        shares.iter().map(|s| s.base64.as_str()).collect(),
    )
}

async fn init(
    State(state): State<AppState>,
    VaultJson(body): VaultJson<InitBody>,
) -> Result<Json<Value>, ApiError> {
    let pgp_given = body.pgp_keys.as_ref().is_some_and(|k| !k.is_empty())
        || body
            .recovery_pgp_keys
            .as_ref()
            .is_some_and(|k| !k.is_empty())
        || body
            .root_token_pgp_key
            .as_ref()
            .is_some_and(|k| !k.is_empty());
    if pgp_given {
        return Err(ApiError::bad_request(
            "PGP-encrypted shares are not supported by arca",
        ));
    }
    if body.stored_shares.is_some_and(|s| s > 1) {
        return Err(ApiError::bad_request("stored_shares is not supported"));
    }
    let kind = state.arca.seal().config().kind();
    if kind == SealKind::Shamir && (body.secret_shares.is_none() || body.secret_threshold.is_none())
    {
        return Err(ApiError::bad_request(
            "secret_shares and secret_threshold must be specified",
        ));
    }
    let request = InitRequest {
        secret_shares: small(body.secret_shares, "secret_shares")?,
        secret_threshold: small(body.secret_threshold, "secret_threshold")?,
        recovery_shares: small(body.recovery_shares, "recovery_shares")?,
        recovery_threshold: small(body.recovery_threshold, "recovery_threshold")?,
        passphrase: body.passphrase.map(Passphrase::from),
        root_token: None,
    };
    let result = state.arca.seal().initialize(request).await?;
    let (keys, keys_base64) = shares_json(&result.keys);
    let (recovery_keys, recovery_keys_base64) = shares_json(&result.recovery_keys);
    tracing::info!(kind = kind.as_str(), "store initialized");
    Ok(Json(json!({
        "keys": keys,
        "keys_base64": keys_base64,
        "recovery_keys": recovery_keys,
        "recovery_keys_base64": recovery_keys_base64,
        "root_token": result.root_token.expose_secret(),
    })))
}

#[derive(Debug, Deserialize)]
struct UnsealBody {
    key: Option<String>,
    reset: Option<bool>,
    #[allow(dead_code)]
    migrate: Option<bool>,
}

async fn unseal(
    State(state): State<AppState>,
    VaultJson(body): VaultJson<UnsealBody>,
) -> Result<Json<Value>, ApiError> {
    let seal = state.arca.seal();
    if body.reset == Some(true) {
        let status = seal.reset_progress().await?;
        return Ok(Json(seal_status_json(&state, &status)));
    }
    let key = body.key.ok_or_else(|| {
        ApiError::bad_request(
            "'key' must be specified in request body as JSON, or 'reset' set to true",
        )
    })?;
    let status = match seal.config().kind() {
        // The passphrase travels in `key`, so `bao operator unseal` works unchanged.
        SealKind::Passphrase => {
            seal.unseal_with_passphrase(key.as_bytes()).await?;
            seal.status().await?
        }
        SealKind::KeyFile => {
            return Err(ApiError::bad_request(
                "this store unseals itself with its key file; recovery keys are not unseal keys",
            ));
        }
        SealKind::Kms => {
            return Err(ApiError::bad_request(
                "this store unseals itself through its KMS key; recovery keys are not unseal keys",
            ));
        }
        SealKind::Shamir => seal.submit_share(&key).await?,
    };
    if !status.sealed {
        tracing::info!("store unsealed");
    }
    Ok(Json(seal_status_json(&state, &status)))
}

/// Vault's rule for the privileged sys endpoints: `update` and `sudo` on the path.
const SUDO_UPDATE: &[Capability] = &[Capability::Update, Capability::Sudo];

async fn seal(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize_all(&state, &headers, "sys/seal", SUDO_UPDATE).await?;
    state.arca.seal().seal().await?;
    tracing::info!("store sealed");
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Rotation

async fn rotate_keyring(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = uri.path().trim_start_matches("/v1/");
    authorize_all(&state, &headers, path, SUDO_UPDATE).await?;
    let barrier = state.arca.barrier();
    let term = barrier.rotate().await?;
    // Old records stay readable under their term; move them in the background.
    let handle = barrier.spawn_rewrap();
    tokio::spawn(async move {
        match handle.await {
            Ok(Ok(report)) => tracing::info!(term, rewrapped = report.rewrapped, "rewrap done"),
            Ok(Err(err)) => tracing::warn!(term, error = %err, "rewrap stopped"),
            Err(err) => tracing::error!(term, error = %err, "rewrap task failed"),
        }
    });
    Ok(no_content())
}

async fn rotate_root(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_all(&state, &headers, "sys/rotate/root", SUDO_UPDATE).await?;
    state.arca.seal().rotate_root_key().await?;
    tracing::info!("root key rotated");
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Rekey: one implementation, two front doors.

#[derive(Debug, Deserialize)]
struct RekeyInitBody {
    secret_shares: Option<u32>,
    secret_threshold: Option<u32>,
    pgp_keys: Option<Vec<String>>,
    backup: Option<bool>,
    require_verification: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RekeyKeyBody {
    key: Option<String>,
    nonce: Option<String>,
}

fn rekey_status_json(status: &RekeyStatus) -> Value {
    json!({
        "nonce": status.nonce,
        "started": status.started,
        "t": status.threshold,
        "n": status.shares,
        "progress": status.progress,
        "required": status.required,
        "pgp_fingerprints": null,
        "backup": false,
        "verification_required": status.verification_required,
        "verification_nonce": status.verification_nonce.clone().unwrap_or_default(),
    })
}

fn verify_status_json(status: &RekeyVerifyStatus) -> Value {
    json!({
        "nonce": status.nonce,
        "started": status.started,
        "t": status.threshold,
        "n": status.shares,
        "progress": status.progress,
    })
}

fn key_and_nonce(body: RekeyKeyBody) -> Result<(String, String), ApiError> {
    let key = body
        .key
        .ok_or_else(|| ApiError::bad_request("'key' must be specified in request body as JSON"))?;
    let nonce = body.nonce.ok_or_else(|| {
        ApiError::bad_request("'nonce' must be specified in request body as JSON")
    })?;
    Ok((key, nonce))
}

async fn do_rekey_status(state: &AppState) -> Result<Value, ApiError> {
    Ok(rekey_status_json(&state.arca.seal().rekey_status().await?))
}

async fn do_rekey_init(state: &AppState, body: RekeyInitBody) -> Result<Value, ApiError> {
    if body.pgp_keys.as_ref().is_some_and(|k| !k.is_empty()) || body.backup == Some(true) {
        return Err(ApiError::bad_request(
            "PGP-encrypted shares and backups are not supported by arca",
        ));
    }
    let shares = small(body.secret_shares, "secret_shares")?;
    let threshold = small(body.secret_threshold, "secret_threshold")?;
    let status = state
        .arca
        .seal()
        .rekey_init(
            shares,
            threshold,
            body.require_verification.unwrap_or(false),
        )
        .await?;
    Ok(rekey_status_json(&status))
}

async fn do_rekey_update(state: &AppState, body: RekeyKeyBody) -> Result<Value, ApiError> {
    let (key, nonce) = key_and_nonce(body)?;
    match state.arca.seal().rekey_update(&key, &nonce).await? {
        RekeyUpdate::Progress(status) => Ok(rekey_status_json(&status)),
        RekeyUpdate::Complete {
            nonce,
            keys,
            verification_required,
            verification_nonce,
        } => {
            let (hex, base64) = shares_json(&keys);
            tracing::info!(verification_required, "rekey complete");
            Ok(json!({
                "nonce": nonce,
                "complete": true,
                "keys": hex,
                "keys_base64": base64,
                "pgp_fingerprints": null,
                "backup": false,
                "verification_required": verification_required,
                "verification_nonce": verification_nonce.unwrap_or_default(),
            }))
        }
    }
}

async fn do_rekey_verify(state: &AppState, body: RekeyKeyBody) -> Result<Value, ApiError> {
    let (key, nonce) = key_and_nonce(body)?;
    match state.arca.seal().rekey_verify_update(&key, &nonce).await? {
        RekeyVerifyUpdate::Progress(status) => Ok(verify_status_json(&status)),
        RekeyVerifyUpdate::Complete { nonce } => {
            tracing::info!("rekey verified");
            Ok(json!({ "nonce": nonce, "complete": true }))
        }
    }
}

async fn rekey_status_plain(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(do_rekey_status(&state).await?))
}

async fn rekey_init_plain(
    State(state): State<AppState>,
    VaultJson(body): VaultJson<RekeyInitBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(do_rekey_init(&state, body).await?))
}

async fn rekey_cancel_plain(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.arca.seal().rekey_cancel().await?;
    Ok(no_content())
}

async fn rekey_update_plain(
    State(state): State<AppState>,
    VaultJson(body): VaultJson<RekeyKeyBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(do_rekey_update(&state, body).await?))
}

async fn rekey_verify_status_plain(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(verify_status_json(
        &state.arca.seal().rekey_verify_status().await?,
    )))
}

async fn rekey_verify_plain(
    State(state): State<AppState>,
    VaultJson(body): VaultJson<RekeyKeyBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(do_rekey_verify(&state, body).await?))
}

async fn rekey_verify_cancel_plain(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(verify_status_json(
        &state.arca.seal().rekey_verify_cancel().await?,
    )))
}

/// `sys/rotate/root/*` rekeys unseal shares, `sys/rotate/recovery/*` recovery shares: check
/// that the one named is the one this seal has.
fn check_which(state: &AppState, which: &str) -> Result<(), ApiError> {
    let recovery = state.arca.seal().config().kind().is_auto_unseal();
    match (which, recovery) {
        ("root", false) | ("recovery", true) => Ok(()),
        ("root", true) => Err(ApiError::bad_request(
            "this seal has recovery keys: use sys/rotate/recovery",
        )),
        ("recovery", false) => Err(ApiError::bad_request("this seal has no recovery keys")),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

async fn authorize_rotation(
    state: &AppState,
    headers: &HeaderMap,
    which: &str,
) -> Result<(), ApiError> {
    let path = format!("sys/rotate/{which}");
    authorize_all(state, headers, &path, SUDO_UPDATE).await?;
    check_which(state, which)
}

type Which = axum::extract::Path<String>;

async fn rekey_status_auth(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
) -> Result<Json<Value>, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    Ok(Json(envelope(&request_id, do_rekey_status(&state).await?)))
}

async fn rekey_init_auth(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
    VaultJson(body): VaultJson<RekeyInitBody>,
) -> Result<Json<Value>, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    Ok(Json(envelope(
        &request_id,
        do_rekey_init(&state, body).await?,
    )))
}

async fn rekey_cancel_auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
) -> Result<Response, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    state.arca.seal().rekey_cancel().await?;
    Ok(no_content())
}

async fn rekey_update_auth(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
    VaultJson(body): VaultJson<RekeyKeyBody>,
) -> Result<Json<Value>, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    Ok(Json(envelope(
        &request_id,
        do_rekey_update(&state, body).await?,
    )))
}

async fn rekey_verify_status_auth(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
) -> Result<Json<Value>, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    let status = state.arca.seal().rekey_verify_status().await?;
    Ok(Json(envelope(&request_id, verify_status_json(&status))))
}

async fn rekey_verify_auth(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
    VaultJson(body): VaultJson<RekeyKeyBody>,
) -> Result<Json<Value>, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    Ok(Json(envelope(
        &request_id,
        do_rekey_verify(&state, body).await?,
    )))
}

async fn rekey_verify_cancel_auth(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::Path(which): Which,
) -> Result<Json<Value>, ApiError> {
    authorize_rotation(&state, &headers, &which).await?;
    let status = state.arca.seal().rekey_verify_cancel().await?;
    Ok(Json(envelope(&request_id, verify_status_json(&status))))
}
