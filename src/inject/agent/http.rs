//! The agent's two listeners.
//!
//! - The **sidecar** (loopback TCP or a unix socket): `GET /secrets/<name>` answers the
//!   value of mapping `<name>` to a caller presenting `Authorization: Bearer <token>`, where
//!   the token is the content of the configured token file; anything else gets 401 (OpenBao's
//!   agent proxy was seen serving a secret to an unauthenticated request). `/health` (JSON)
//!   and `/metrics` (Prometheus text) answer without the token: they carry names, paths and
//!   counts, never values. Values are served from memory, from the last successful refresh.
//! - The **control socket** (a unix socket, mode 0600, so only the agent's user can connect):
//!   `GET /v1/jobs` for `arca agent status`, `POST /v1/jobs/<name>/revoke` for
//!   `arca agent revoke`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use super::super::value::SecretBytes;
use super::config::Listen;
use super::status::Board;

/// The sidecar's values, by mapping name, as of the last successful refresh.
pub type Values = Arc<RwLock<BTreeMap<String, SecretBytes>>>;

#[derive(Clone)]
struct SidecarState {
    values: Values,
    names: Arc<std::collections::BTreeSet<String>>,
    token: Arc<Zeroizing<String>>,
    board: Arc<Board>,
    last_error: Arc<RwLock<Option<String>>>,
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

async fn secret(
    State(state): State<SidecarState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &state.token) {
        state.board.count_request(401);
        let mut response = json_error(StatusCode::UNAUTHORIZED, "a bearer token is required");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"arca-agent\""),
        );
        return response;
    }
    let value = state
        .values
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&name)
        .cloned();
    match value {
        Some(value) => {
            state.board.count_request(200);
            let mut response = Response::new(Body::from(value.expose_secret().to_vec()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None => {
            let pending = state
                .last_error
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if state.names.contains(&name) {
                // A known name without a value: the first refresh has not succeeded yet, or
                // the job was revoked.
                state.board.count_request(503);
                let why = pending.unwrap_or_else(|| "not resolved yet".to_owned());
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{name} is not available: {why}"),
                )
            } else {
                state.board.count_request(404);
                json_error(StatusCode::NOT_FOUND, &format!("no secret named {name}"))
            }
        }
    }
}

async fn health(State(board): State<Arc<Board>>) -> Response {
    axum::Json(board.json()).into_response()
}

async fn metrics(State(board): State<Arc<Board>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        board.metrics(),
    )
        .into_response()
}

/// A running listener; [`Server::stop`] ends it and removes its socket file.
#[derive(Debug)]
pub struct Server {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    socket: Option<PathBuf>,
    /// The address it listens on (the port chosen for `:0`).
    pub address: String,
}

impl Server {
    /// Stops accepting, lets requests in flight finish, removes the unix socket.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a unix socket at `path` with mode 0600: a stale socket there is replaced, any other
/// file is refused.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot replace the socket {}: {e}", path.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(listener)
}

async fn serve(listen: &Listen, router: Router) -> Result<Server, String> {
    let (stop, mut stopped) = watch::channel(false);
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let address = listener
                .local_addr()
                .map_err(|e| e.to_string())?
                .to_string();
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await;
            });
            Ok(Server {
                stop,
                task,
                socket: None,
                address,
            })
        }
        Listen::Unix(path) => {
            let listener = bind_unix(path)?;
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await;
            });
            Ok(Server {
                stop,
                task,
                socket: Some(path.clone()),
                address: format!("unix:{}", path.display()),
            })
        }
    }
}

/// Starts the sidecar.
///
/// # Errors
/// A message when the token file cannot be read or is empty, or the address cannot be bound.
pub async fn start_sidecar(
    listen: &Listen,
    token_file: &Path,
    names: std::collections::BTreeSet<String>,
    values: Values,
    last_error: Arc<RwLock<Option<String>>>,
    board: Arc<Board>,
) -> Result<Server, String> {
    let token = Zeroizing::new(
        std::fs::read_to_string(token_file)
            .map_err(|e| {
                format!(
                    "cannot read the sidecar token file {}: {e}",
                    token_file.display()
                )
            })?
            .trim()
            .to_owned(),
    );
    if token.is_empty() {
        return Err(format!(
            "the sidecar token file {} is empty",
            token_file.display()
        ));
    }
    let state = SidecarState {
        values,
        names: Arc::new(names),
        token: Arc::new(token),
        board: Arc::clone(&board),
        last_error,
    };
    let router = Router::new()
        .route("/secrets/{name}", get(secret).with_state(state))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(board);
    serve(listen, router).await
}

/// A request to the agent's main loop: revoke a job, answer with the files removed.
pub type RevokeRequest = (String, oneshot::Sender<Result<Vec<String>, String>>);

#[derive(Clone)]
struct ControlState {
    board: Arc<Board>,
    revoke: mpsc::Sender<RevokeRequest>,
}

async fn list_jobs(State(state): State<ControlState>) -> Response {
    axum::Json(state.board.json()).into_response()
}

async fn revoke_job(State(state): State<ControlState>, UrlPath(name): UrlPath<String>) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.revoke.send((name, tx)).await.is_err() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    }
    match rx.await {
        Ok(Ok(removed)) => {
            axum::Json(json!({ "revoked": true, "removed": removed })).into_response()
        }
        Ok(Err(message)) => json_error(StatusCode::NOT_FOUND, &message),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
    }
}

/// Starts the control socket.
///
/// # Errors
/// A message when the socket cannot be bound.
pub async fn start_control(
    path: &Path,
    board: Arc<Board>,
    revoke: mpsc::Sender<RevokeRequest>,
) -> Result<Server, String> {
    let router = Router::new()
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{name}/revoke", post(revoke_job))
        .with_state(ControlState { board, revoke });
    serve(&Listen::Unix(path.to_path_buf()), router).await
}
