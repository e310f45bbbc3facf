//! The zero-trust HTTP API, `/v1/zt/...`: a thin layer that verifies what only the server can
//! see (the token, a SigV4 signature, the TLS client chain, the peer address), parses the
//! request, and calls [`crate::zerotrust`].
//!
//! | endpoint | who | what |
//! |---|---|---|
//! | `PUT/POST/GET/DELETE /v1/zt/roles/<name>`, `GET\|LIST /v1/zt/roles` | root or sudo on `zt/roles/<name>` | roles |
//! | `POST /v1/zt/challenge` | any verified token or SigV4 signature | a one-time nonce for attestation |
//! | `GET /v1/zt/signing-key` | anyone | arca's Ed25519 public key, for offline verification |
//! | `POST /v1/zt/fetch` | decided per role | a decision and, on PERMIT, a session and a signed envelope |
//! | `POST /v1/zt/sessions/<id>/read` | the session's principal | a further read |
//! | `GET /v1/zt/sessions/<id>/validate` | the principal, or `read` on `zt/sessions/<id>` | remaining uses, expiry |
//! | `POST /v1/zt/sessions/<id>/revoke`, `DELETE /v1/zt/sessions/<id>` | the principal, or `update` on `zt/sessions/<id>` | revoke at once |
//!
//! A DENY answers 403 and a STEP_UP 401, both with Vault's `errors` array and the decision (its
//! contributions and reasons) under `data`. SigV4 requests sign with the service name `zt`
//! (`Credential=<key>/<date>/<region>/zt/aws4_request`); the signature is checked with
//! [`crate::server::aws::sigv4`] against arca's access keys, also in development mode.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use super::vault::{Capability, authorize_all, envelope, remote_addr, resolve};
use super::{AppState, RequestId, no_content};
use crate::zerotrust::attestation::{Presented, Verdict};
use crate::zerotrust::distribute::{
    AccessKeyCredential, Credentials, Distribution, FetchRequest, SecretRef, TokenCredential,
};
use crate::zerotrust::envelope::SignedEnvelope;
use crate::zerotrust::keys::RecipientKey;
use crate::zerotrust::{Decision, Outcome, PeerCertificates, RoleDefinition, Session, ZtError};

/// The SigV4 service name of this API.
pub const SIGV4_SERVICE: &str = "zt";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/zt/roles", any(list_roles))
        .route("/v1/zt/roles/", any(list_roles))
        .route("/v1/zt/roles/{name}", any(role))
        .route("/v1/zt/challenge", post(challenge))
        .route("/v1/zt/signing-key", get(signing_key))
        .route("/v1/zt/fetch", post(fetch))
        .route("/v1/zt/sessions/{id}/read", post(read))
        .route("/v1/zt/sessions/{id}/validate", get(validate))
        .route("/v1/zt/sessions/{id}/revoke", post(revoke))
        .route("/v1/zt/sessions/{id}", any(session_root))
}

impl From<ZtError> for ApiError {
    fn from(err: ZtError) -> Self {
        match err {
            ZtError::Sealed => Self::sealed(),
            ZtError::InvalidRequest(message) => Self::bad_request(message),
            ZtError::NotFound(message) => Self::new(StatusCode::NOT_FOUND, message),
            ZtError::OpenFailed | ZtError::BadSignature => Self::bad_request(err.to_string()),
            other => Self::internal(&other),
        }
    }
}

fn sealed_check(state: &AppState) -> Result<(), ApiError> {
    if state.arca.barrier().is_sealed() {
        Err(ApiError::sealed())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// Verifies every credential the request carries. A credential that is presented and fails is
/// reported as failed (it vetoes a decision), never ignored.
async fn credentials(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    peer_certificates: Option<PeerCertificates>,
) -> Result<Credentials, ApiError> {
    sealed_check(state)?;
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let sigv4 = authorization.is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"));
    let has_token = headers.contains_key("x-vault-token")
        || authorization.is_some_and(|a| a.starts_with("Bearer "));
    let token = if has_token {
        Some(match resolve(state, headers).await {
            Ok(_) => match super::vault::authenticate(state, headers).await {
                Ok(entry) => Ok(TokenCredential {
                    approle: entry
                        .entity
                        .clone()
                        .filter(|_| entry.path == "auth/approle/login"),
                    accessor: entry.accessor,
                    policies: entry.policies,
                }),
                Err(err) if err.status() == StatusCode::SERVICE_UNAVAILABLE => return Err(err),
                Err(_) => Err("the token was used up".to_owned()),
            },
            Err(err) if err.status() == StatusCode::SERVICE_UNAVAILABLE => return Err(err),
            Err(_) => {
                Err("the token is unknown, expired, or not usable from this address".to_owned())
            }
        })
    } else {
        None
    };
    let access_key = if sigv4 {
        Some(verify_sigv4(state, method, uri, headers, body).await?)
    } else {
        None
    };
    let forwarded_for = {
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    Ok(Credentials {
        token,
        access_key,
        peer_certificates,
        peer: remote_addr(headers),
        forwarded_for,
    })
}

/// Checks a SigV4 signature for the `zt` service against arca's access keys (also in
/// development mode: a zero-trust factor is never taken on trust).
async fn verify_sigv4(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<AccessKeyCredential, String>, ApiError> {
    use super::aws::sigv4;
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let auth = match sigv4::parse_authorization(header) {
        Ok(auth) => auth,
        Err(_) => return Ok(Err("the SigV4 Authorization header is malformed".into())),
    };
    if auth.service != SIGV4_SERVICE {
        return Ok(Err(format!(
            "the SigV4 credential must be scoped to the service {SIGV4_SERVICE:?}"
        )));
    }
    let Some(amz_date) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return Ok(Err("the X-Amz-Date header is missing".into()));
    };
    let Some(time) = parse_amz_date(amz_date) else {
        return Ok(Err("X-Amz-Date must have the form YYYYMMDDTHHMMSSZ".into()));
    };
    let now = SystemTime::now();
    let skew = now
        .duration_since(time)
        .or_else(|_| time.duration_since(now))
        .unwrap_or(Duration::MAX);
    if skew > sigv4::MAX_SKEW || !amz_date.starts_with(&auth.date) {
        return Ok(Err(
            "the SigV4 signature has expired or its date does not match".into(),
        ));
    }
    let key = match state.arca.access_keys().get(&auth.access_key_id).await {
        Ok(Some(key)) => key,
        Ok(None) => return Ok(Err("the access key is unknown".into())),
        Err(crate::access_keys::AccessKeyError::Sealed) => return Err(ApiError::sealed()),
        Err(other) => return Err(ApiError::internal(&other)),
    };
    let expected = match sigv4::expected_signature(
        sigv4::RequestParts {
            method,
            uri,
            headers,
            body,
        },
        &auth,
        time,
        &auth.access_key_id,
        key.secret.expose_secret(),
    ) {
        Ok(signature) => signature,
        Err(_) => return Ok(Err("the signed headers cannot be assembled".into())),
    };
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Ok(Err(format!(
            "the SigV4 signature by {} does not verify",
            auth.access_key_id
        )));
    }
    Ok(Ok(AccessKeyCredential {
        id: key.info.id.clone(),
        policies: key.info.policies.clone(),
    }))
}

/// `YYYYMMDD'T'HHMMSS'Z'`.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let date = time::Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?,
        u8::try_from(digits(6..8)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(digits(9..11)?).ok()?,
        u8::try_from(digits(11..13)?).ok()?,
        u8::try_from(digits(13..15)?).ok()?,
    )
    .ok()?;
    let secs = u64::try_from(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
    .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------------
// Roles

async fn list_roles(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // `LIST` (hvac), `GET ?list=true` (the CLI) and a plain `GET` all list.
    if method.as_str() != "LIST" && method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        ));
    }
    authorize_all(
        &state,
        &headers,
        "zt/roles",
        &[Capability::List, Capability::Sudo],
    )
    .await?;
    let keys = state.arca.zerotrust().list_roles().await?;
    Ok(axum::Json(envelope(&request_id, json!({ "keys": keys }))).into_response())
}

async fn role(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = format!("zt/roles/{name}");
    match method.as_str() {
        "PUT" | "POST" => {
            authorize_all(
                &state,
                &headers,
                &path,
                &[Capability::Update, Capability::Sudo],
            )
            .await?;
            let definition: RoleDefinition = parse_json(&body)?;
            let role = state.arca.zerotrust().put_role(&name, definition).await?;
            tracing::info!(role = role.name(), "zero-trust role written");
            Ok(no_content())
        }
        "GET" => {
            authorize_all(
                &state,
                &headers,
                &path,
                &[Capability::Read, Capability::Sudo],
            )
            .await?;
            let role = state
                .arca
                .zerotrust()
                .role(&name)
                .await?
                .ok_or_else(ApiError::not_found)?;
            let definition =
                serde_json::to_value(role.definition()).map_err(|e| ApiError::internal(&e))?;
            Ok(axum::Json(envelope(&request_id, definition)).into_response())
        }
        "DELETE" => {
            authorize_all(
                &state,
                &headers,
                &path,
                &[Capability::Delete, Capability::Sudo],
            )
            .await?;
            state.arca.zerotrust().delete_role(&name).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        )),
    }
}

/// Parses a JSON body; errors name fields, never values.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|err| {
        let message = err.to_string();
        let detail = if message.starts_with("missing field") || message.starts_with("unknown field")
        {
            message
                .split(" at line")
                .next()
                .unwrap_or_default()
                .to_owned()
        } else if err.is_syntax() || err.is_eof() {
            format!(
                "malformed JSON at line {} column {}",
                err.line(),
                err.column()
            )
        } else {
            format!(
                "a field has the wrong type or value at line {} column {}",
                err.line(),
                err.column()
            )
        };
        ApiError::bad_request(format!("failed to parse JSON input: {detail}"))
    })
}

// ---------------------------------------------------------------------------------------------
// Challenge and signing key

async fn challenge(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    peer: Option<Extension<PeerCertificates>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let creds = credentials(&state, &method, &uri, &headers, &body, peer.map(|e| e.0)).await?;
    let verified = matches!(creds.token, Some(Ok(_))) || matches!(creds.access_key, Some(Ok(_)));
    if !verified {
        return Err(ApiError::permission_denied());
    }
    let challenge = state.arca.zerotrust().challenge().await?;
    Ok(axum::Json(envelope(
        &request_id,
        json!({ "nonce": challenge.nonce, "expires_at": challenge.expires_at }),
    ))
    .into_response())
}

async fn signing_key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
) -> Result<Response, ApiError> {
    sealed_check(&state)?;
    let key = state.arca.zerotrust().signing_key().await?;
    Ok(axum::Json(envelope(
        &request_id,
        json!({
            "algorithm": "Ed25519",
            "key_id": key.key_id(),
            "public_key": STANDARD.encode(key.public_bytes()),
        }),
    ))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Fetch and sessions

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationBody {
    attestor: String,
    document: String,
    signature: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchBody {
    role: String,
    secret: String,
    #[serde(default)]
    ephemeral_public_key: Option<String>,
    #[serde(default)]
    attestation: Option<AttestationBody>,
    #[serde(default)]
    split_recipients: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    #[serde(default)]
    ephemeral_public_key: Option<String>,
}

fn decision_json(decision: &Decision, attestation: Option<&Verdict>) -> Value {
    json!({
        "outcome": decision.outcome.as_str(),
        "risk": decision.risk,
        "reason": decision.summary(),
        "contributions": decision.contributions.iter().map(|c| json!({
            "factor": c.factor, "points": c.points, "veto": c.veto, "reason": c.reason,
        })).collect::<Vec<_>>(),
        "step_up": decision.step_up.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "attestation": attestation.map(|v| json!({
            "workload_id": v.workload_id,
            "trust_score": v.trust_score,
            "passed": v.passed,
            "checks": v.checks.iter().map(|c| json!({
                "check": c.name, "passed": c.passed, "points": c.points, "reason": c.reason,
            })).collect::<Vec<_>>(),
        })),
    })
}

fn session_json(session: &Session) -> Value {
    json!({
        "id": session.id,
        "role": session.role,
        "secret": session.secret,
        "principal": session.principal,
        "identities": session.identities,
        "risk": session.risk,
        "created": session.created,
        "expires_at": session.expires_at,
        "max_uses": session.max_uses,
        "remaining_uses": session.remaining_uses,
        "zones": session.zones,
        "forward_secrecy": session.forward_secrecy,
        "split": session.split,
        "signed": session.signed,
        "revoked": session.revoked,
    })
}

fn envelope_json(signed: &SignedEnvelope) -> Value {
    json!({
        "envelope": STANDARD.encode(&signed.bytes),
        "signature": signed.signature.map(|s| STANDARD.encode(s)),
        "key_id": signed.key_id,
    })
}

fn distribution_response(request_id: &RequestId, result: &Distribution) -> Response {
    let decision = decision_json(&result.decision, result.attestation.as_ref());
    match (&result.envelope, result.decision.outcome) {
        (Some(signed), Outcome::Permit) => axum::Json(envelope(
            request_id,
            json!({
                "decision": decision,
                "principal": result.principal,
                "session": result.session.as_ref().map(session_json),
                "envelope": envelope_json(signed),
            }),
        ))
        .into_response(),
        (_, outcome) => {
            let status = if outcome == Outcome::StepUp {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            let message = format!(
                "zero-trust decision {}: {}",
                outcome.as_str(),
                result.decision.summary()
            );
            (
                status,
                axum::Json(json!({
                    "errors": [message],
                    "data": { "decision": decision, "principal": result.principal },
                })),
            )
                .into_response()
        }
    }
}

fn ephemeral_key(text: Option<&str>) -> Result<Option<RecipientKey>, ApiError> {
    text.map(|t| RecipientKey::parse(t, "ephemeral_public_key"))
        .transpose()
        .map_err(ApiError::from)
}

async fn fetch(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    peer: Option<Extension<PeerCertificates>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let creds = credentials(&state, &method, &uri, &headers, &body, peer.map(|e| e.0)).await?;
    let request: FetchBody = parse_json(&body)?;
    let secret = SecretRef::parse(&request.secret)?;
    let ephemeral_key = ephemeral_key(request.ephemeral_public_key.as_deref())?;
    let attestation = request
        .attestation
        .map(|a| Presented::decode(&a.attestor, &a.document, &a.signature))
        .transpose()?;
    let result = crate::zerotrust::distribute::fetch(
        &state.arca,
        &creds,
        FetchRequest {
            role: request.role,
            secret,
            ephemeral_key,
            attestation,
            split_recipients: request.split_recipients,
        },
    )
    .await?;
    Ok(distribution_response(&request_id, &result))
}

#[allow(clippy::too_many_arguments)] // one extractor per thing the handler verifies
async fn read(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    peer: Option<Extension<PeerCertificates>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let creds = credentials(&state, &method, &uri, &headers, &body, peer.map(|e| e.0)).await?;
    let request: ReadBody = parse_json(&body)?;
    let ephemeral_key = ephemeral_key(request.ephemeral_public_key.as_deref())?;
    let result =
        crate::zerotrust::distribute::read(&state.arca, &creds, &id, ephemeral_key).await?;
    Ok(distribution_response(&request_id, &result))
}

/// The session `id`, if the caller may see it: its principal, or a token whose policies grant
/// `cap` on `zt/sessions/<id>`.
async fn authorized_session(
    state: &AppState,
    headers: &HeaderMap,
    creds: &Credentials,
    id: &str,
    cap: Capability,
) -> Result<Session, ApiError> {
    let session = state
        .arca
        .zerotrust()
        .session(id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such session"))?;
    let identities: Vec<String> = [
        creds.token.as_ref().and_then(|t| t.as_ref().ok()).map(|t| {
            t.approle.as_ref().map_or_else(
                || format!("token:{}", t.accessor),
                |r| format!("approle:{r}"),
            )
        }),
        creds
            .access_key
            .as_ref()
            .and_then(|k| k.as_ref().ok())
            .map(|k| format!("access-key:{}", k.id)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if identities.contains(&session.principal) {
        return Ok(session);
    }
    authorize_all(state, headers, &format!("zt/sessions/{id}"), &[cap]).await?;
    Ok(session)
}

async fn validate(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let creds = credentials(&state, &method, &uri, &headers, b"", None).await?;
    let session = authorized_session(&state, &headers, &creds, &id, Capability::Read).await?;
    let now = crate::zerotrust::now_secs();
    let (valid, reason) = match session.usable_at(now) {
        Ok(()) => (true, "usable".to_owned()),
        Err(refusal) => (false, refusal.as_str().to_owned()),
    };
    let mut data = session_json(&session);
    data["valid"] = json!(valid);
    data["reason"] = json!(reason);
    Ok(axum::Json(envelope(&request_id, data)).into_response())
}

async fn revoke_inner(
    state: &AppState,
    request_id: &RequestId,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, ApiError> {
    let creds = credentials(state, method, uri, headers, b"", None).await?;
    let session = authorized_session(state, headers, &creds, id, Capability::Update).await?;
    let revoked = state
        .arca
        .zerotrust()
        .revoke_session(id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such session"))?;
    let principal = match (&creds.token, &creds.access_key) {
        (Some(Ok(t)), _) => format!("token:{}", t.accessor),
        (_, Some(Ok(k))) => format!("access-key:{}", k.id),
        _ => "anonymous".to_owned(),
    };
    crate::zerotrust::distribute::audit(
        &state.arca,
        &crate::zerotrust::distribute::AuditLine {
            operation: "zt:revoke",
            role: Some(&session.role),
            secret: Some(&session.secret),
            session: Some(id),
            principal: &principal,
            identities: &[],
            network: None,
            decision: None,
            outcome: "REVOKED",
            reason: "revoked",
            attestation: None,
        },
    )?;
    Ok(axum::Json(envelope(request_id, session_json(&revoked))).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    revoke_inner(&state, &request_id, &method, &uri, &headers, &id).await
}

async fn session_root(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match method {
        Method::DELETE => revoke_inner(&state, &request_id, &method, &uri, &headers, &id).await,
        Method::GET => {
            validate(
                State(state),
                Extension(request_id),
                method,
                uri,
                headers,
                Path(id),
            )
            .await
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        )),
    }
}
