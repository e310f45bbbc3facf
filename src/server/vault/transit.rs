//! Vault's transit engine at `/v1/transit/*`, over [`Transit`](crate::kms::transit::Transit).
//!
//! Request bodies are read the way Vault reads them: numbers may arrive as strings
//! (`"key_version": "2"`, as the CLI sends them), booleans as `"true"`, and `batch_input`
//! replaces the single-item fields. A batch answers every item in `batch_results`; when any
//! item failed, the status is 400 and the body still carries all the results, as in Vault.
//! Every route needs a token whose policies grant the path (`update` for operations, `read`,
//! `list` and `delete` for keys).

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{AppState, Capability, Envelope, VaultJson, authorize, envelope, rfc3339};
use crate::kms::HashAlgorithm;
use crate::kms::transit::{
    ConfigUpdate, CreateOptions, Marshaling, SignOptions, TransitError, TransitKeyInfo,
    TransitKeyType,
};
use crate::mounts::MountKind;
use crate::server::{ApiError, RequestId, no_content};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/transit/keys", any(list_keys))
        .route("/v1/transit/keys/", any(list_keys))
        .route("/v1/transit/keys/{name}", any(key))
        .route("/v1/transit/keys/{name}/config", post(config).put(config))
        .route("/v1/transit/keys/{name}/rotate", post(rotate).put(rotate))
        .route("/v1/transit/encrypt/{name}", post(encrypt).put(encrypt))
        .route("/v1/transit/decrypt/{name}", post(decrypt).put(decrypt))
        .route("/v1/transit/rewrap/{name}", post(rewrap).put(rewrap))
        .route(
            "/v1/transit/datakey/{kind}/{name}",
            post(datakey).put(datakey),
        )
        .route("/v1/transit/hmac/{name}", post(hmac).put(hmac))
        .route(
            "/v1/transit/hmac/{name}/{algorithm}",
            post(hmac_alg).put(hmac_alg),
        )
        .route("/v1/transit/sign/{name}", post(sign).put(sign))
        .route(
            "/v1/transit/sign/{name}/{algorithm}",
            post(sign_alg).put(sign_alg),
        )
        .route("/v1/transit/verify/{name}", post(verify).put(verify))
        .route(
            "/v1/transit/verify/{name}/{algorithm}",
            post(verify_alg).put(verify_alg),
        )
        .route("/v1/transit/random", post(random).put(random))
        .route("/v1/transit/random/{bytes}", post(random_n).put(random_n))
        .route("/v1/transit/hash", post(hash).put(hash))
        .route("/v1/transit/hash/{algorithm}", post(hash_alg).put(hash_alg))
}

type Body = VaultJson<Map<String, Value>>;

/// Authorises the request as [`authorize`] does, then checks that `transit/` is mounted as
/// the transit engine: like Vault, an engine that is not enabled has no routes (development
/// mode mounts it; elsewhere `bao secrets enable transit` does).
async fn authorize_transit(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    cap: Capability,
) -> Result<(), ApiError> {
    authorize(state, headers, path, cap).await?;
    let mounted = state
        .arca
        .mounts()
        .mount_of(path)
        .await
        .map_err(ApiError::from)?
        .is_some_and(|m| m.kind() == MountKind::Transit && m.path() == "transit/");
    if mounted {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no handler for route {path:?}. route entry not found."),
        ))
    }
}

fn transit_error(err: TransitError) -> ApiError {
    match err {
        TransitError::Invalid(text) => ApiError::bad_request(text),
        TransitError::Sealed => ApiError::sealed(),
        other => ApiError::internal(&other),
    }
}

/// A field as Vault's weak decoding reads it.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(ApiError::bad_request(format!(
                "'{name}' expected type 'string'"
            ))),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("'{name}' expected type 'int'"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "error converting input {s:?} for field {name:?}: cannot parse '' as int"
                ))
            }),
            Some(_) => Err(ApiError::bad_request(format!(
                "'{name}' expected type 'int'"
            ))),
        }
    }

    /// A key version (0 when absent: the latest), with the error as text for batch items.
    fn version_text(&self, name: &str) -> Result<u32, String> {
        let value = match self.get(name) {
            None => return Ok(0),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) if s.is_empty() => return Ok(0),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match value {
            None => Err(format!("'{name}' expected type 'int'")),
            Some(v) if v < 0 => Err(format!("{name} cannot be negative")),
            Some(v) => Ok(u32::try_from(v).unwrap_or(u32::MAX)),
        }
    }

    fn version(&self, name: &str) -> Result<u32, ApiError> {
        self.version_text(name).map_err(ApiError::bad_request)
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(Some(true)),
                "false" | "0" | "f" | "F" | "FALSE" | "False" | "" => Ok(Some(false)),
                _ => Err(ApiError::bad_request(format!(
                    "'{name}' expected type 'bool'"
                ))),
            },
            Some(Value::Number(n)) => Ok(Some(n.as_i64() != Some(0))),
            Some(_) => Err(ApiError::bad_request(format!(
                "'{name}' expected type 'bool'"
            ))),
        }
    }

    /// A duration in seconds: a number, or Go's duration text (`"1h"`, `"90m"`, `"3600s"`).
    fn duration(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("'{name}' must be a non-negative duration"))
            }),
            Some(Value::String(s)) => parse_duration(s)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("'{name}' is not a valid duration"))),
            Some(_) => Err(ApiError::bad_request(format!(
                "'{name}' must be a duration"
            ))),
        }
    }

    fn batch(&self) -> Result<Option<Vec<Map<String, Value>>>, ApiError> {
        match self.get("batch_input") {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let items: Vec<Map<String, Value>> = items
                    .iter()
                    .map(|item| match item {
                        Value::Object(map) => Ok(map.clone()),
                        _ => Err(ApiError::bad_request(
                            "failed to parse batch input: items must be objects",
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                if items.is_empty() {
                    return Err(ApiError::bad_request("missing batch input to process"));
                }
                Ok(Some(items))
            }
            Some(_) => Err(ApiError::bad_request(
                "failed to parse batch input: batch_input must be a list",
            )),
        }
    }
}

/// Seconds of a Go duration string of `h`, `m` and `s` parts, or plain seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    number.is_empty().then_some(total)
}

/// Go's base64 error text, which Vault returns for a plaintext that is not base64.
fn decode_b64(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    STANDARD.decode(text).map(Zeroizing::new).map_err(|err| {
        let offset = match err {
            base64::DecodeError::InvalidByte(offset, _)
            | base64::DecodeError::InvalidLastSymbol { offset, .. } => offset,
            _ => text.len(),
        };
        format!("illegal base64 data at input byte {offset}")
    })
}

/// The decoded `associated_data` of an item (Vault's AEAD associated data), or empty.
fn associated_data(fields: &Fields<'_>) -> Result<Vec<u8>, String> {
    match fields.get("associated_data").and_then(Value::as_str) {
        None | Some("") => Ok(Vec::new()),
        Some(text) => decode_b64(text).map(|d| d.to_vec()),
    }
}

/// arca's transit keys are not derived; a `context` is refused rather than ignored, because
/// ignoring it would silently drop a binding the caller asked for.
fn refuse_context(fields: &Fields<'_>) -> Result<(), String> {
    match fields.get("context").and_then(Value::as_str) {
        None | Some("") => Ok(()),
        Some(_) => Err(
            "key derivation (a 'context') is not supported by arca's transit keys; \
                        use associated_data"
                .to_owned(),
        ),
    }
}

fn respond(request_id: &RequestId, data: impl serde::Serialize) -> Response {
    Json(Envelope::new(request_id, data)).into_response()
}

/// A batch answer: 400 with every result when any item failed, 200 otherwise.
fn respond_batch(request_id: &RequestId, results: Vec<Value>) -> Response {
    let failed = results.iter().any(|r| r.get("error").is_some());
    let body = envelope(request_id, json!({ "batch_results": results }));
    let status = if failed {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

fn with_reference(mut result: Value, item: &Map<String, Value>) -> Value {
    if let Some(reference) = item.get("reference") {
        result["reference"] = reference.clone();
    }
    result
}

fn key_json(info: &TransitKeyInfo) -> Value {
    let mut keys = Map::new();
    for v in &info.versions {
        let entry = match &v.public_key {
            None => json!(v.created),
            Some(public_key) => json!({
                "name": match info.key_type {
                    TransitKeyType::EcdsaP256 => "P-256",
                    _ => "ed25519",
                },
                "public_key": public_key,
                "creation_time": rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(v.created)
                ),
            }),
        };
        keys.insert(v.version.to_string(), entry);
    }
    let min_available = info
        .versions
        .first()
        .map_or(0, |v| v.version.saturating_sub(1));
    json!({
        "name": info.name,
        "type": info.key_type.as_str(),
        "derived": false,
        "deletion_allowed": info.deletion_allowed,
        "min_available_version": min_available,
        "min_decryption_version": info.min_decryption_version,
        "min_encryption_version": info.min_encryption_version,
        "latest_version": info.latest_version,
        "exportable": info.exportable,
        "allow_plaintext_backup": info.allow_plaintext_backup,
        "supports_encryption": info.key_type.supports_encryption(),
        "supports_decryption": info.key_type.supports_encryption(),
        "supports_signing": info.key_type.supports_signing(),
        "supports_derivation": false,
        "auto_rotate_period": info.auto_rotate_period,
        "imported_key": false,
        "keys": keys,
        "kms_key_arn": info.kms_key_arn,
    })
}

fn key_type(text: &str) -> Result<TransitKeyType, ApiError> {
    TransitKeyType::parse(text).ok_or_else(|| {
        ApiError::bad_request(match text {
            "aes128-gcm96" | "xchacha20-poly1305" | "ecdsa-p384" | "ecdsa-p521" | "rsa-2048"
            | "rsa-3072" | "rsa-4096" | "hmac" | "aes128-cmac" | "aes256-cmac" => format!(
                "key type {text} is not supported by arca; supported: aes256-gcm96, \
                 chacha20-poly1305, ed25519, ecdsa-p256"
            ),
            _ => format!("unknown key type: {text}"),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Keys

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    list: Option<String>,
}

async fn list_keys(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let listing = method.as_str() == "LIST"
        || (method == Method::GET && query.list.as_deref().is_some_and(|l| l == "true"));
    if !listing {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        ));
    }
    authorize_transit(&state, &headers, "transit/keys/", Capability::List).await?;
    let names = state
        .arca
        .kms()
        .transit()
        .list()
        .await
        .map_err(transit_error)?;
    if names.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(respond(&request_id, json!({ "keys": names })))
}

async fn key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let path = format!("transit/keys/{name}");
    let transit = state.arca.kms().transit();
    match method {
        Method::GET => {
            authorize_transit(&state, &headers, &path, Capability::Read).await?;
            let info = transit
                .read(&name)
                .await
                .map_err(transit_error)?
                .ok_or_else(ApiError::not_found)?;
            Ok(respond(&request_id, key_json(&info)))
        }
        Method::POST | Method::PUT => {
            authorize_transit(&state, &headers, &path, Capability::Update).await?;
            let body: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
                Map::new()
            } else {
                serde_json::from_slice(&body).map_err(|_| {
                    ApiError::bad_request("failed to parse JSON input: malformed JSON")
                })?
            };
            let fields = Fields(&body);
            if fields.boolean("derived")? == Some(true)
                || fields.boolean("convergent_encryption")? == Some(true)
            {
                return Err(ApiError::bad_request(
                    "derived and convergent keys are not supported by arca",
                ));
            }
            let options = CreateOptions {
                key_type: fields
                    .string("type")?
                    .as_deref()
                    .map(key_type)
                    .transpose()?,
                exportable: fields.boolean("exportable")?.unwrap_or(false),
                allow_plaintext_backup: fields.boolean("allow_plaintext_backup")?.unwrap_or(false),
                auto_rotate_period: fields.duration("auto_rotate_period")?.unwrap_or(0),
            };
            let (info, existed) = transit
                .create(&name, options)
                .await
                .map_err(transit_error)?;
            let mut response = envelope(&request_id, key_json(&info));
            if existed {
                response["warnings"] = json!([format!("key {name} already existed")]);
            }
            Ok(Json(response).into_response())
        }
        Method::DELETE => {
            authorize_transit(&state, &headers, &path, Capability::Delete).await?;
            transit.delete(&name).await.map_err(transit_error)?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        )),
    }
}

async fn config(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/keys/{name}/config"),
        Capability::Update,
    )
    .await?;
    let fields = Fields(&body);
    let update = ConfigUpdate {
        min_decryption_version: fields.int("min_decryption_version")?,
        min_encryption_version: fields.int("min_encryption_version")?,
        deletion_allowed: fields.boolean("deletion_allowed")?,
        exportable: fields.boolean("exportable")?,
        allow_plaintext_backup: fields.boolean("allow_plaintext_backup")?,
        auto_rotate_period: fields.duration("auto_rotate_period")?,
    };
    let info = state
        .arca
        .kms()
        .transit()
        .configure(&name, update)
        .await
        .map_err(transit_error)?;
    Ok(respond(&request_id, key_json(&info)))
}

async fn rotate(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/keys/{name}/rotate"),
        Capability::Update,
    )
    .await?;
    let info = state
        .arca
        .kms()
        .transit()
        .rotate(&name)
        .await
        .map_err(transit_error)?;
    Ok(respond(&request_id, key_json(&info)))
}

// ---------------------------------------------------------------------------------------------
// Encrypt, decrypt, rewrap, datakey

fn single_or_batch(body: &Map<String, Value>) -> Result<(bool, Vec<Map<String, Value>>), ApiError> {
    match Fields(body).batch()? {
        Some(items) => Ok((true, items)),
        None => Ok((false, vec![body.clone()])),
    }
}

/// Answers a one-item request from its single result: the data, or a 400 with the error.
fn single(request_id: &RequestId, result: Value) -> Result<Response, ApiError> {
    match result.get("error").and_then(Value::as_str) {
        Some(error) => Err(ApiError::bad_request(error)),
        None => {
            let mut data = result;
            if let Some(map) = data.as_object_mut() {
                map.remove("reference");
            }
            Ok(respond(request_id, data))
        }
    }
}

async fn encrypt(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/encrypt/{name}"),
        Capability::Update,
    )
    .await?;
    let (batch, items) = single_or_batch(&body)?;
    if !batch && Fields(&body).get("plaintext").is_none() {
        return Err(ApiError::bad_request("missing plaintext to encrypt"));
    }
    let create_type = Fields(&body)
        .string("type")?
        .as_deref()
        .map(key_type)
        .transpose()?;
    // Decode every item first; items that do not decode get their error, the others are
    // encrypted together with one load of the key.
    let mut results: Vec<Option<Value>> = Vec::with_capacity(items.len());
    let mut work = Vec::new();
    for item in &items {
        let fields = Fields(item);
        let decoded = (|| {
            refuse_context(&fields)?;
            let plaintext = decode_b64(
                fields
                    .get("plaintext")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            )?;
            let ad = associated_data(&fields)?;
            let version = fields.version_text("key_version")?;
            Ok::<_, String>((plaintext, ad, version))
        })();
        match decoded {
            Ok(entry) => {
                work.push(entry);
                results.push(None);
            }
            Err(error) => results.push(Some(json!({ "error": error }))),
        }
    }
    let mut encrypted = state
        .arca
        .kms()
        .transit()
        .encrypt_many(&name, &work, create_type)
        .await
        .map_err(transit_error)?
        .into_iter();
    let mut out = Vec::with_capacity(items.len());
    for (slot, item) in results.into_iter().zip(&items) {
        let result = match slot {
            Some(error) => error,
            None => match encrypted.next() {
                Some(Ok((ciphertext, version))) => {
                    json!({ "ciphertext": ciphertext, "key_version": version })
                }
                Some(Err(TransitError::Invalid(text))) => json!({ "error": text }),
                Some(Err(TransitError::Sealed)) => return Err(ApiError::sealed()),
                Some(Err(other)) => return Err(ApiError::internal(&other)),
                None => return Err(ApiError::internal(&"batch results out of step")),
            },
        };
        out.push(with_reference(result, item));
    }
    if batch {
        Ok(respond_batch(&request_id, out))
    } else {
        single(&request_id, out.into_iter().next().unwrap_or(Value::Null))
    }
}

async fn decrypt(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/decrypt/{name}"),
        Capability::Update,
    )
    .await?;
    let (batch, items) = single_or_batch(&body)?;
    if !batch && Fields(&body).get("ciphertext").is_none() {
        return Err(ApiError::bad_request("missing ciphertext to decrypt"));
    }
    let transit = state.arca.kms().transit();
    let mut out = Vec::with_capacity(items.len());
    let mut work = Vec::new();
    let mut slots = Vec::new();
    for item in &items {
        let fields = Fields(item);
        let prepared = (|| {
            refuse_context(&fields)?;
            let ciphertext = fields
                .get("ciphertext")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            Ok::<_, String>((ciphertext, associated_data(&fields)?))
        })();
        match prepared {
            Ok(entry) => {
                work.push(entry);
                slots.push(None);
            }
            Err(error) => slots.push(Some(json!({ "error": error }))),
        }
    }
    let mut opened = transit
        .decrypt_many(&name, &work)
        .await
        .map_err(transit_error)?
        .into_iter();
    for (slot, item) in slots.into_iter().zip(&items) {
        let result = match slot {
            Some(error) => error,
            None => match opened.next() {
                Some(Ok(plaintext)) => {
                    json!({ "plaintext": STANDARD.encode(plaintext.as_slice()) })
                }
                Some(Err(TransitError::Invalid(text))) => json!({ "error": text }),
                Some(Err(TransitError::Sealed)) => return Err(ApiError::sealed()),
                Some(Err(other)) => return Err(ApiError::internal(&other)),
                None => return Err(ApiError::internal(&"batch results out of step")),
            },
        };
        out.push(with_reference(result, item));
    }
    if batch {
        Ok(respond_batch(&request_id, out))
    } else {
        single(&request_id, out.into_iter().next().unwrap_or(Value::Null))
    }
}

async fn rewrap(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/rewrap/{name}"),
        Capability::Update,
    )
    .await?;
    let (batch, items) = single_or_batch(&body)?;
    if !batch && Fields(&body).get("ciphertext").is_none() {
        return Err(ApiError::bad_request("missing ciphertext to decrypt"));
    }
    let transit = state.arca.kms().transit();
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let fields = Fields(item);
        let result = match (|| {
            refuse_context(&fields)?;
            let ad = associated_data(&fields)?;
            let version = fields.version_text("key_version")?;
            Ok::<_, String>((ad, version))
        })() {
            Err(error) => json!({ "error": error }),
            Ok((ad, version)) => {
                let ciphertext = fields
                    .get("ciphertext")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match transit.rewrap(&name, ciphertext, &ad, version).await {
                    Ok((ciphertext, version)) => {
                        json!({ "ciphertext": ciphertext, "key_version": version })
                    }
                    Err(TransitError::Invalid(text)) => json!({ "error": text }),
                    Err(other) => return Err(transit_error(other)),
                }
            }
        };
        out.push(with_reference(result, item));
    }
    if batch {
        Ok(respond_batch(&request_id, out))
    } else {
        single(&request_id, out.into_iter().next().unwrap_or(Value::Null))
    }
}

async fn datakey(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/datakey/{kind}/{name}"),
        Capability::Update,
    )
    .await?;
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => return Err(ApiError::bad_request("Invalid path")),
    };
    let fields = Fields(&body);
    refuse_context(&fields).map_err(ApiError::bad_request)?;
    let bits = fields.int("bits")?.unwrap_or(256);
    let bits = u32::try_from(bits).map_err(|_| ApiError::bad_request("invalid bits value"))?;
    let ad = associated_data(&fields).map_err(ApiError::bad_request)?;
    let (plaintext, ciphertext, version) = state
        .arca
        .kms()
        .transit()
        .datakey(&name, bits, &ad)
        .await
        .map_err(transit_error)?;
    let mut data = json!({ "ciphertext": ciphertext, "key_version": version });
    if with_plaintext {
        data["plaintext"] = json!(STANDARD.encode(plaintext.as_slice()));
    }
    Ok(respond(&request_id, data))
}

// ---------------------------------------------------------------------------------------------
// HMAC, sign, verify

fn hash_algorithm(text: Option<&str>) -> Result<HashAlgorithm, ApiError> {
    match text {
        None | Some("") => Ok(HashAlgorithm::Sha256),
        Some(t) => HashAlgorithm::parse_vault(t)
            .ok_or_else(|| ApiError::bad_request(format!("unsupported hash algorithm {t}"))),
    }
}

async fn hmac(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    hmac_inner(state, request_id, headers, name, None, body).await
}

async fn hmac_alg(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path((name, algorithm)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    hmac_inner(state, request_id, headers, name, Some(algorithm), body).await
}

async fn hmac_inner(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    name: String,
    path_algorithm: Option<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/hmac/{name}"),
        Capability::Update,
    )
    .await?;
    let fields = Fields(&body);
    let algorithm = path_algorithm.or(fields.string("algorithm")?);
    let hash = hash_algorithm(algorithm.as_deref())?;
    let (batch, items) = single_or_batch(&body)?;
    if !batch && fields.get("input").is_none() {
        return Err(ApiError::bad_request("missing input for HMAC"));
    }
    let transit = state.arca.kms().transit();
    let mut out = Vec::new();
    for item in &items {
        let item_fields = Fields(item);
        let version = item_fields.version("key_version")?;
        let result = match decode_b64(
            item_fields
                .get("input")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ) {
            Err(_) => json!({ "error": "unable to decode input as base64" }),
            Ok(input) => match transit.hmac(&name, &input, hash, version).await {
                Ok(mac) => json!({ "hmac": mac }),
                Err(TransitError::Invalid(text)) => json!({ "error": text }),
                Err(other) => return Err(transit_error(other)),
            },
        };
        out.push(with_reference(result, item));
    }
    if batch {
        Ok(respond_batch(&request_id, out))
    } else {
        single(&request_id, out.into_iter().next().unwrap_or(Value::Null))
    }
}

fn sign_options(fields: &Fields<'_>, path_hash: Option<String>) -> Result<SignOptions, ApiError> {
    let hash_text = path_hash.or(fields
        .string("hash_algorithm")?
        .or(fields.string("algorithm")?));
    let marshaling = match fields.string("marshaling_algorithm")?.as_deref() {
        None | Some("" | "asn1") => Marshaling::Asn1,
        Some("jws") => Marshaling::Jws,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid marshaling type {other}"
            )));
        }
    };
    Ok(SignOptions {
        hash: hash_algorithm(hash_text.as_deref())?,
        prehashed: fields.boolean("prehashed")?.unwrap_or(false),
        marshaling,
        key_version: fields.version("key_version")?,
    })
}

async fn sign(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    sign_inner(state, request_id, headers, name, None, body).await
}

async fn sign_alg(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path((name, algorithm)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    sign_inner(state, request_id, headers, name, Some(algorithm), body).await
}

async fn sign_inner(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    name: String,
    path_hash: Option<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/sign/{name}"),
        Capability::Update,
    )
    .await?;
    let options = sign_options(&Fields(&body), path_hash)?;
    let (batch, items) = single_or_batch(&body)?;
    let transit = state.arca.kms().transit();
    let mut out = Vec::new();
    for item in &items {
        let item_fields = Fields(item);
        let result = match decode_b64(
            item_fields
                .get("input")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ) {
            Err(_) => json!({ "error": "unable to decode input as base64" }),
            Ok(input) => match transit.sign(&name, &input, options).await {
                Ok((signature, version)) => {
                    json!({ "signature": signature, "key_version": version })
                }
                Err(TransitError::Invalid(text)) => json!({ "error": text }),
                Err(other) => return Err(transit_error(other)),
            },
        };
        out.push(with_reference(result, item));
    }
    if batch {
        Ok(respond_batch(&request_id, out))
    } else {
        single(&request_id, out.into_iter().next().unwrap_or(Value::Null))
    }
}

async fn verify(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    verify_inner(state, request_id, headers, name, None, body).await
}

async fn verify_alg(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path((name, algorithm)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    verify_inner(state, request_id, headers, name, Some(algorithm), body).await
}

async fn verify_inner(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    name: String,
    path_hash: Option<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(
        &state,
        &headers,
        &format!("transit/verify/{name}"),
        Capability::Update,
    )
    .await?;
    let options = sign_options(&Fields(&body), path_hash)?;
    let (batch, items) = single_or_batch(&body)?;
    let transit = state.arca.kms().transit();
    let mut out = Vec::new();
    for item in &items {
        let item_fields = Fields(item);
        let signature = item_fields.get("signature").and_then(Value::as_str);
        let hmac = item_fields.get("hmac").and_then(Value::as_str);
        let input = decode_b64(
            item_fields
                .get("input")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let result = match (input, signature, hmac) {
            (Err(_), _, _) => json!({ "error": "unable to decode input as base64" }),
            (Ok(_), None, None) => json!({ "error": "missing signature or hmac to verify" }),
            (Ok(_), Some(_), Some(_)) => {
                json!({ "error": "provide one of 'signature' or 'hmac', not both" })
            }
            (Ok(input), Some(signature), None) => {
                match transit.verify(&name, &input, signature, options).await {
                    Ok(valid) => json!({ "valid": valid }),
                    Err(TransitError::Invalid(text)) => json!({ "error": text }),
                    Err(other) => return Err(transit_error(other)),
                }
            }
            (Ok(input), None, Some(hmac)) => {
                match transit.verify_hmac(&name, &input, hmac, options.hash).await {
                    Ok(valid) => json!({ "valid": valid }),
                    Err(TransitError::Invalid(text)) => json!({ "error": text }),
                    Err(other) => return Err(transit_error(other)),
                }
            }
        };
        out.push(with_reference(result, item));
    }
    if batch {
        Ok(respond_batch(&request_id, out))
    } else {
        single(&request_id, out.into_iter().next().unwrap_or(Value::Null))
    }
}

// ---------------------------------------------------------------------------------------------
// Random and hash (no key involved)

/// The largest `random` answer (Vault's limit is 128 KiB).
const MAX_RANDOM: i64 = 128 * 1024;

fn encode_output(bytes: &[u8], format: Option<&str>) -> Result<String, ApiError> {
    match format {
        None | Some("" | "base64") => Ok(STANDARD.encode(bytes)),
        Some("hex") => Ok(hex::encode(bytes)),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported encoding format {other}; must be \"hex\" or \"base64\""
        ))),
    }
}

async fn random(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    random_inner(state, request_id, headers, None, body).await
}

async fn random_n(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path(bytes): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    random_inner(state, request_id, headers, Some(bytes), body).await
}

async fn random_inner(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    path_bytes: Option<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(&state, &headers, "transit/random", Capability::Update).await?;
    let fields = Fields(&body);
    // `random/<n>` may also be `random/hex` or `random/base64` (the format).
    let (path_count, path_format) = match path_bytes.as_deref() {
        Some(p @ ("hex" | "base64")) => (None, Some(p.to_owned())),
        Some(p) => (
            Some(p.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("unable to parse bytes as integer: {p}"))
            })?),
            None,
        ),
        None => (None, None),
    };
    let count = path_count.or(fields.int("bytes")?).unwrap_or(32);
    if !(1..=MAX_RANDOM).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "bytes must be between 1 and {MAX_RANDOM}"
        )));
    }
    let format = path_format.or(fields.string("format")?);
    let bytes = crate::kms::random_bytes(usize::try_from(count).unwrap_or(32))
        .map_err(|e| ApiError::internal(&e))?;
    let encoded = encode_output(&bytes, format.as_deref())?;
    Ok(respond(&request_id, json!({ "random_bytes": encoded })))
}

async fn hash(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    hash_inner(state, request_id, headers, None, body).await
}

async fn hash_alg(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    Path(algorithm): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    hash_inner(state, request_id, headers, Some(algorithm), body).await
}

async fn hash_inner(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    path_algorithm: Option<String>,
    VaultJson(body): Body,
) -> Result<Response, ApiError> {
    authorize_transit(&state, &headers, "transit/hash", Capability::Update).await?;
    let fields = Fields(&body);
    let input = fields
        .get("input")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("missing input to hash"))?;
    let input =
        decode_b64(input).map_err(|_| ApiError::bad_request("unable to decode input as base64"))?;
    let algorithm = path_algorithm.or(fields.string("algorithm")?);
    let hash = hash_algorithm(algorithm.as_deref())?;
    let sum = encode_output(
        &hash.digest(&input),
        fields.string("format")?.as_deref().or(Some("hex")),
    )?;
    Ok(respond(&request_id, json!({ "sum": sum })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn base64_errors_name_the_byte_not_the_value() {
        assert_eq!(
            decode_b64("ab!d").unwrap_err(),
            "illegal base64 data at input byte 2"
        );
        assert_eq!(decode_b64("aGk=").unwrap().as_slice(), b"hi");
    }

    #[test]
    fn weak_typing_reads_strings_as_numbers_and_booleans() {
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"v": "2", "b": "true", "n": 3, "x": [1]}"#).unwrap();
        let f = Fields(&body);
        assert_eq!(f.int("v").unwrap(), Some(2));
        assert_eq!(f.int("n").unwrap(), Some(3));
        assert_eq!(f.boolean("b").unwrap(), Some(true));
        assert!(f.int("x").is_err());
        assert_eq!(f.int("missing").unwrap(), None);
    }
}
