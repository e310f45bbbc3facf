//! The AWS JSON 1.1 front door: `POST /` with `X-Amz-Target: <Service>.<Operation>`.
//!
//! AWS SDKs, boto3 and the aws CLI talk to arca exactly as to AWS once their endpoint is
//! overridden. This module does what every AWS JSON service shares, then hands the operation
//! to the service's file ([`kms`] for `TrentService.*`, [`secretsmanager`] for
//! `secretsmanager.*`):
//!
//! - **Authentication**: SigV4 ([`sigv4`]), or a Vault token in `X-Vault-Token`. The region
//!   comes from the credential scope (for a token, `X-Arca-Region` or the default), and state
//!   is kept per region. In development mode an access key arca does not know is accepted
//!   without a signature check, as local emulators do, so `AWS_ACCESS_KEY_ID=test` works.
//! - **Authorisation**: each access key and token carries arca policies; an operation is
//!   allowed when they grant `update` on `aws/<service>/<Operation>` ([`operation_path`]).
//!   The caller's verified identity ([`sigv4::Caller::identity`]) then meets each secret's
//!   access policy ([`secrets_access`]).
//! - **Errors**: AWS's shape, `{"__type": "<Code>", "message": "..."}`, with the code also in
//!   `X-Amzn-ErrorType`, the request id in `x-amzn-RequestId`, 400 for client errors and 500
//!   for server faults (which SDKs retry). Malformed JSON, a missing target or an unknown
//!   operation get these shapes too, never HTML.
//! - **Test harnesses**: with `--dev`, `POST /moto-api/reset` wipes the AWS-side state, as
//!   moto's server does, so suites written against moto run unchanged. Outside development
//!   mode the path does not exist.
//!
//! The Vault-style endpoint `sys/aws/access-keys` that manages the access keys lives here too:
//! it belongs to this API, not to Vault's.

mod input;
pub mod kms;
pub mod secrets_access;
pub mod secretsmanager;
pub mod sigv4;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::vault::{Capability, authorize_all, envelope};
use super::{AppState, RequestId, no_content};
use crate::kms::KmsError;

/// The content type of every AWS JSON 1.1 answer.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The AWS routes: `POST /`, the development reset, and the access-key endpoints.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", post(dispatch))
        .route("/moto-api/reset", post(reset))
        .route(
            "/v1/sys/aws/access-keys",
            get(list_access_keys)
                .post(create_access_key)
                .put(create_access_key)
                .fallback(list_verb_access_keys),
        )
        .route(
            "/v1/sys/aws/access-keys/{id}",
            get(read_access_key).delete(delete_access_key),
        )
}

/// The code of an internal error common to every AWS API, before a service is known.
const INTERNAL_FAILURE: &str = "InternalFailure";

/// An error answered in AWS's shape.
#[derive(Debug)]
pub struct AwsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AwsError {
    /// A 400 with `code` and `message`.
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// A 500 whose detail goes to the log only. Its code is AWS's common `InternalFailure`
    /// until [`AwsError::in_service`] names the service's own.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error in the AWS API");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: INTERNAL_FAILURE,
            message: "internal error".into(),
        }
    }

    /// The error as `service` answers it: an internal failure carries the service's own code
    /// (KMS's `KMSInternalException`, Secrets Manager's `InternalServiceError`), which its
    /// SDKs model; every other error is unchanged.
    fn in_service(mut self, service: Service) -> Self {
        if self.code == INTERNAL_FAILURE {
            self.code = match service {
                Service::Kms => "KMSInternalException",
                Service::SecretsManager => "InternalServiceError",
            };
        }
        self
    }

    /// 503 while the store is sealed (SDKs retry it, then report it).
    #[must_use]
    pub fn sealed() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "ServiceUnavailableException",
            message: "arca is sealed".into(),
        }
    }

    /// `SerializationException`: the body is not the JSON the operation takes.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    /// `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationException", message)
    }

    /// The `__type` code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The answer, carrying `request_id`.
    #[must_use]
    pub fn into_response_with(self, request_id: &str) -> Response {
        let body = json!({ "__type": self.code, "message": self.message });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert("x-amzn-requestid", id);
        }
        response
    }
}

impl From<KmsError> for AwsError {
    fn from(err: KmsError) -> Self {
        use KmsError as E;
        let message = err.to_string();
        let code = match err {
            E::NotFound(_) => "NotFoundException",
            E::Disabled(_) => "DisabledException",
            E::PendingDeletion(_) | E::InvalidState(_) => "KMSInvalidStateException",
            E::InvalidCiphertext => "InvalidCiphertextException",
            E::IncorrectKey => "IncorrectKeyException",
            E::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            E::InvalidArgument(_) => "ValidationException",
            E::InvalidAliasName(_) => "InvalidAliasNameException",
            E::NotAuthorized(_) => "NotAuthorizedException",
            E::InvalidMarker => "InvalidMarkerException",
            E::Unsupported(_) => "UnsupportedOperationException",
            E::AlreadyExists(_) => "AlreadyExistsException",
            E::LimitExceeded(_) => "LimitExceededException",
            E::InvalidSignature => "KMSInvalidSignatureException",
            E::InvalidMac => "KMSInvalidMacException",
            E::Tag(_) => "TagException",
            E::Sealed => return Self::sealed(),
            E::Internal(_) => return Self::internal(&err),
        };
        Self::client(code, message)
    }
}

/// A successful AWS answer.
fn ok(body: &Value, request_id: &str) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// The services behind `POST /`, by the prefix of `X-Amz-Target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Kms,
    SecretsManager,
}

impl Service {
    /// The service's name in SigV4 credential scopes.
    fn signing_name(self) -> &'static str {
        match self {
            Self::Kms => "kms",
            Self::SecretsManager => "secretsmanager",
        }
    }
}

/// `POST /`: authenticate, parse, run the operation, answer in AWS's shape.
async fn dispatch(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = request_id.0;
    match dispatch_inner(&state, &method, &uri, &headers, &body).await {
        Ok(value) => ok(&value, &request_id),
        Err(err) => {
            tracing::debug!(code = err.code, "AWS request failed");
            err.into_response_with(&request_id)
        }
    }
}

async fn dispatch_inner(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, AwsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AwsError::client(
                "UnknownOperationException",
                "the request has no X-Amz-Target header",
            )
        })?;
    let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
    let service = match prefix {
        "TrentService" => Service::Kms,
        "secretsmanager" => Service::SecretsManager,
        _ => {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!("unknown operation {target}"),
            ));
        }
    };
    if state.arca.barrier().is_sealed() {
        return Err(AwsError::sealed());
    }
    let answer = async {
        let caller =
            sigv4::authenticate(state, method, uri, headers, body, service.signing_name()).await?;
        authorize_operation(state, headers, &caller, service, operation).await?;
        let input = parse_body(body)?;
        match service {
            Service::Kms => kms::handle(state, &caller, operation, &input).await,
            Service::SecretsManager => {
                secretsmanager::handle(state, &caller, operation, &input).await
            }
        }
    };
    answer.await.map_err(|err| err.in_service(service))
}

/// The ACL path an AWS operation is checked against: `aws/<service>/<Operation>`, for example
/// `aws/kms/Encrypt`. An access key's policies must grant `update` on it, so a policy such as
/// `path "aws/kms/*" { capabilities = ["update"] }` allows every KMS operation, and
/// `path "aws/kms/Decrypt" { ... }` only decryption. The root policy allows everything.
#[must_use]
pub fn operation_path(service: &str, operation: &str) -> String {
    format!("aws/{service}/{operation}")
}

/// Fails with `AccessDeniedException` unless the policies of the caller's access key or token
/// allow `operation` of `service` (see [`operation_path`]). Development mode's unverified
/// callers have no policies and are allowed. Operations that need another one's permission
/// as well (`BatchGetSecretValue` needs `GetSecretValue` for its secrets) call this for it.
///
/// # Errors
/// `AccessDeniedException`; 503 while sealed.
pub(crate) async fn require_operation(
    state: &AppState,
    caller: &sigv4::Caller,
    service: Service,
    operation: &str,
) -> Result<(), AwsError> {
    let Some(policies) = caller.policies() else {
        return Ok(());
    };
    let acl = state
        .arca
        .policies()
        .acl(policies)
        .await
        .map_err(|err| match err {
            crate::policy::PolicyError::Sealed => AwsError::sealed(),
            other => AwsError::internal(&other),
        })?;
    let path = operation_path(service.signing_name(), operation);
    if acl.allows(&path, Capability::Update) {
        return Ok(());
    }
    tracing::info!(principal = %caller.identity().principal, path, "AWS request denied by policy");
    let credential = if caller.token.is_some() {
        "token"
    } else {
        "access key"
    };
    Err(AwsError::client(
        "AccessDeniedException",
        format!(
            "User: arn:aws:iam::{}:user/{} is not authorized to perform: {}:{operation} \
             because no arca policy of its {credential} allows it",
            state.arca.kms().account(),
            caller.display_name(),
            service.signing_name(),
        ),
    ))
}

/// Checks the caller's policies for the operation (see [`require_operation`]), then counts
/// one use of a token.
async fn authorize_operation(
    state: &AppState,
    headers: &HeaderMap,
    caller: &sigv4::Caller,
    service: Service,
    operation: &str,
) -> Result<(), AwsError> {
    if caller.policies().is_none() {
        return Ok(());
    }
    require_operation(state, caller, service, operation).await?;
    if caller.token.is_some() {
        // A token with a use limit spends one per authorised request, as on the Vault API.
        let token = super::vault::client_token_header(headers).unwrap_or_default();
        let used = state
            .arca
            .tokens()
            .use_token(token)
            .await
            .map_err(|err| match err {
                crate::auth::AuthError::Sealed => AwsError::sealed(),
                other => AwsError::internal(&other),
            })?;
        if used.is_none() {
            // Its last use went to a concurrent request, or it expired meanwhile.
            return Err(AwsError::client(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
    }
    Ok(())
}

/// Parses the body as a JSON object; an empty body is `{}`.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AwsError::serialization(
            "the request body must be a JSON object",
        )),
        // serde's message gives a position, never the input.
        Err(err) => Err(AwsError::serialization(format!(
            "the request body is not valid JSON (line {} column {})",
            err.line(),
            err.column()
        ))),
    }
}

/// `POST /moto-api/reset` (development mode only): wipes the Secrets Manager secrets, the KMS
/// keys, aliases and the transit keys built on them.
async fn reset(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
) -> Response {
    if !state.options.dev {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "no handler for route \"moto-api/reset\". route entry not found.",
        )
        .into_response();
    }
    // Secrets first: their values are encrypted under the KMS keys wiped next.
    let wiped = match state.arca.secrets().reset().await {
        Ok(()) => state.arca.kms().reset().await.map_err(AwsError::from),
        Err(err) => Err(AwsError::from(err)),
    };
    match wiped {
        Ok(()) => {
            tracing::info!("AWS state reset (development mode)");
            ok(&json!({ "status": "ok" }), &request_id.0)
        }
        Err(err) => err.into_response_with(&request_id.0),
    }
}

// ---------------------------------------------------------------------------------------------
// sys/aws/access-keys: Vault-style, root (sudo) only.

const ACCESS_KEYS_PATH: &str = "sys/aws/access-keys";

async fn authorize_keys(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize_all(
        state,
        headers,
        ACCESS_KEYS_PATH,
        &[Capability::Update, Capability::Sudo],
    )
    .await
    .map(|_| ())
}

fn access_key_error(err: crate::access_keys::AccessKeyError) -> ApiError {
    match err {
        crate::access_keys::AccessKeyError::Sealed => ApiError::sealed(),
        crate::access_keys::AccessKeyError::InvalidIdentity(msg) => ApiError::bad_request(msg),
        other => ApiError::internal(&other),
    }
}

#[derive(Debug, serde::Deserialize)]
struct CreateKeyBody {
    display_name: Option<String>,
    policies: Option<Vec<String>>,
    /// The identity the key's requests act as for access policies (empty = none).
    service: Option<String>,
    environment: Option<String>,
    role: Option<String>,
}

/// The public description of a key, as create, read and list show it.
fn key_data(info: &crate::access_keys::AccessKeyInfo) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("display_name".into(), json!(info.display_name));
    data.insert("policies".into(), json!(info.policies));
    data.insert("creation_time".into(), json!(info.created));
    data.insert("service".into(), json!(info.bound.service));
    data.insert("environment".into(), json!(info.bound.environment));
    data.insert("role".into(), json!(info.bound.role));
    data
}

async fn create_access_key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    super::vault::VaultJson(body): super::vault::VaultJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    authorize_keys(&state, &headers).await?;
    let display_name = body.display_name.unwrap_or_else(|| "aws".to_owned());
    let policies = body.policies.unwrap_or_else(|| vec!["root".to_owned()]);
    let set = |v: Option<String>| v.filter(|v| !v.is_empty());
    let bound = crate::access_keys::BoundIdentity {
        service: set(body.service),
        environment: set(body.environment),
        role: set(body.role),
    };
    let key = state
        .arca
        .access_keys()
        .create_bound(&display_name, policies, bound)
        .await
        .map_err(access_key_error)?;
    let mut data = key_data(&key.info);
    data.insert("access_key_id".into(), json!(key.info.id));
    data.insert(
        "secret_access_key".into(),
        json!(key.secret.expose_secret()),
    );
    Ok(axum::Json(envelope(&request_id, Value::Object(data))).into_response())
}

async fn list_access_keys_inner(
    state: &AppState,
    request_id: &RequestId,
) -> Result<Response, ApiError> {
    let keys = state
        .arca
        .access_keys()
        .list()
        .await
        .map_err(access_key_error)?;
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let info: Map<String, Value> = keys
        .iter()
        .map(|k| (k.id.clone(), Value::Object(key_data(k))))
        .collect();
    Ok(axum::Json(envelope(
        request_id,
        json!({ "keys": ids, "key_info": info }),
    ))
    .into_response())
}

async fn list_access_keys(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_keys(&state, &headers).await?;
    list_access_keys_inner(&state, &request_id).await
}

/// Vault's `LIST` verb (hvac sends it) on the collection.
async fn list_verb_access_keys(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if method.as_str() != "LIST" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        ));
    }
    authorize_keys(&state, &headers).await?;
    list_access_keys_inner(&state, &request_id).await
}

async fn read_access_key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize_keys(&state, &headers).await?;
    let key = state
        .arca
        .access_keys()
        .get(&id)
        .await
        .map_err(access_key_error)?
        .ok_or_else(ApiError::not_found)?;
    let mut data = key_data(&key.info);
    data.insert("access_key_id".into(), json!(key.info.id));
    Ok(axum::Json(envelope(&request_id, Value::Object(data))).into_response())
}

async fn delete_access_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize_keys(&state, &headers).await?;
    state
        .arca
        .access_keys()
        .delete(&id)
        .await
        .map_err(access_key_error)?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_errors_map_to_aws_codes() {
        let cases: [(KmsError, &str, u16); 6] = [
            (KmsError::NotFound("x".into()), "NotFoundException", 400),
            (
                KmsError::InvalidCiphertext,
                "InvalidCiphertextException",
                400,
            ),
            (KmsError::Disabled("x".into()), "DisabledException", 400),
            (
                KmsError::InvalidSignature,
                "KMSInvalidSignatureException",
                400,
            ),
            (
                KmsError::Internal("boom".into()),
                "KMSInternalException",
                500,
            ),
            (KmsError::Sealed, "ServiceUnavailableException", 503),
        ];
        for (err, code, status) in cases {
            let aws = AwsError::from(err).in_service(Service::Kms);
            assert_eq!(aws.code, code);
            assert_eq!(aws.status.as_u16(), status);
            assert_ne!(aws.message, "boom", "internal details are not sent");
        }
    }

    #[test]
    fn an_internal_failure_carries_the_code_of_the_service_that_answers() {
        let internal = || AwsError::internal(&"boom");
        assert_eq!(internal().code, INTERNAL_FAILURE);
        assert_eq!(
            internal().in_service(Service::Kms).code,
            "KMSInternalException"
        );
        let sm = internal().in_service(Service::SecretsManager);
        assert_eq!(sm.code, "InternalServiceError");
        assert_eq!(sm.status.as_u16(), 500);
        // Client errors keep their own code in either service.
        let denied = AwsError::client("AccessDeniedException", "no");
        assert_eq!(
            denied.in_service(Service::SecretsManager).code,
            "AccessDeniedException"
        );
    }

    #[test]
    fn bodies_parse_as_objects() {
        assert!(parse_body(b"").unwrap().is_empty());
        assert!(parse_body(b"{\"KeyId\": \"x\"}").is_ok());
        assert_eq!(
            parse_body(b"[1]").unwrap_err().code,
            "SerializationException"
        );
        let err = parse_body(b"{\"Plaintext\": \"secret").unwrap_err();
        assert_eq!(err.code, "SerializationException");
        assert!(!err.message.contains("secret"));
    }
}
