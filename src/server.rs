//! The HTTP server: one listener for every API arca speaks.
//!
//! Handlers are thin: they parse the request into the domain's types, authenticate, call one
//! function of [`Arca`], and map its typed error to a status code (in [`error`]). Today the
//! listener serves Vault's `sys/*` endpoints for the seal ceremony ([`vault`]); every other path
//! answers 503 `Vault is sealed` while sealed and 404 after.
//!
//! Cross-cutting layers, outermost first: one envelope per request (a request id, the peer's
//! address for the audit log, a structured log line with method, path, status and latency but
//! never headers, query strings or bodies, and the handling of unread and oversized bodies),
//! a request timeout, the audit log, response wrapping, and a body size limit.

pub mod aws;
pub mod error;
pub mod standby;
pub mod vault;
pub mod zt;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

use crate::handle::Arca;
pub use error::ApiError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Development mode (enables test-harness endpoints in later APIs).
    pub dev: bool,
    /// Requests taking longer are answered 503.
    pub request_timeout: Duration,
    /// Larger bodies are answered 413.
    pub max_request_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            dev: false,
            request_timeout: Duration::from_secs(90),
            max_request_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The arca this server serves.
    pub arca: Arc<Arca>,
    /// The server's settings.
    pub options: Arc<ServerOptions>,
}

/// The request id of the current request, set by the logging layer.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the application: every route and layer, ready for [`serve`] or for
/// `tower::ServiceExt::oneshot` in tests.
pub fn app(arca: Arc<Arca>, options: ServerOptions) -> Router {
    let timeout = options.request_timeout;
    let limit = options.max_request_bytes;
    let state = AppState {
        arca,
        options: Arc::new(options),
    };
    Router::new()
        .merge(vault::routes())
        .merge(aws::routes())
        .merge(zt::routes())
        .fallback(fallback)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state, audit_and_wrapping))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        // One layer for what every request needs around it, not one each: an axum
        // middleware clones and boxes everything inside it at every request.
        .layer(middleware::from_fn(move |request, next| {
            request_envelope(request, next, limit)
        }))
}

/// The audit log and response wrapping, which see every route's answer, as one layer (each
/// axum middleware clones and boxes everything inside it at every request). The audit log is
/// outside wrapping, so it logs what the client gets (a wrapping token, redacted).
async fn audit_and_wrapping(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    vault::audit::around(&state, request, |request| {
        vault::wrapping::around(&state, request, |request| next.run(request))
    })
    .await
}

/// The outermost layer, in this order: gives the request an id
/// ([`RequestId`], and `X-Request-Id` on the answer); records the peer's address for the
/// audit log and CIDR checks ([`vault::audit::record_remote_addr`]); drains what the handler
/// left of the body ([`drain_unread_body`]); closes the connection after a 413
/// ([`close_after_too_large`]); logs one line ([`RequestLog`]).
async fn request_envelope(mut request: Request, next: Next, limit: usize) -> Response {
    let request_id = new_request_id();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    vault::audit::record_remote_addr(&mut request);
    let logged = RequestLog::start(&request);
    let request = drain_unread_body(request, limit);
    let mut response = next.run(request).await;
    close_after_too_large(&mut response);
    if let Some(logged) = logged {
        logged.finish(&request_id, response.status());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A random UUID-v4-shaped request id, from the per-thread pool of nonces
/// ([`arca_storage::keys::fill_nonce`]): a request id must be unique, not secret. An empty id
/// if the system's generator fails.
fn new_request_id() -> String {
    let mut id = [0u8; 16];
    if arca_storage::keys::fill_nonce(&mut id).is_err() {
        return String::new();
    }
    crate::kms::blob::format_uuid_v4(id)
}

/// How long the rest of an unread request body may take to arrive and be thrown away.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and discards, after the answer, what a handler left of the request body (the rest of
/// an oversized one above all), up to `limit` more bytes or [`DRAIN_TIMEOUT`].
///
/// A connection closed with request bytes still unread is reset by the kernel, and a client
/// still sending its body then sees a broken pipe instead of the 413 it was sent. Draining
/// first lets it finish sending and read the answer; the bounds keep an endless body from
/// holding the connection.
fn drain_unread_body(request: Request, limit: usize) -> Request {
    request.map(|body| axum::body::Body::new(DrainOnDrop::new(body, limit)))
}

/// A request body that, dropped before its end, hands the rest to a task that reads it away.
struct DrainOnDrop {
    inner: Option<axum::body::Body>,
    limit: usize,
}

impl DrainOnDrop {
    fn new(inner: axum::body::Body, limit: usize) -> Self {
        Self {
            inner: Some(inner),
            limit,
        }
    }
}

impl axum::body::HttpBody for DrainOnDrop {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => std::pin::Pin::new(inner).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(axum::body::HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map_or_else(
            || hyper::body::SizeHint::with_exact(0),
            axum::body::HttpBody::size_hint,
        )
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if axum::body::HttpBody::is_end_stream(&body) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limit = self.limit;
        runtime.spawn(async move {
            let drain = async {
                let mut drained = 0usize;
                while drained <= limit {
                    let frame = std::future::poll_fn(|cx| {
                        axum::body::HttpBody::poll_frame(std::pin::Pin::new(&mut body), cx)
                    })
                    .await;
                    match frame {
                        Some(Ok(frame)) => {
                            drained += frame.data_ref().map_or(0, axum::body::Bytes::len);
                        }
                        Some(Err(_)) | None => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        });
    }
}

/// A 413 leaves the rest of the body unread, so the connection is closed after the answer.
/// Saying so with `Connection: close` (as Go's net/http, and so Vault, does) keeps a client
/// from sending its next request on a pooled connection that is about to go away; without it,
/// that next request fails with an incomplete message.
fn close_after_too_large(response: &mut Response) {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Any path no API claims: 503 while sealed (what clients expect of a sealed Vault), else 404.
async fn fallback(State(state): State<AppState>, request: Request) -> ApiError {
    if state.arca.barrier().is_sealed() {
        return ApiError::sealed();
    }
    let path = request.uri().path().trim_start_matches("/v1/");
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no handler for route {path:?}. route entry not found."),
    )
}

/// The request's log line: only the method, the path, the peer, the status and the latency,
/// never headers, query strings or bodies (paths name secrets but never hold their values).
/// Nothing is copied for it when the level leaves request lines out.
struct RequestLog {
    method: axum::http::Method,
    path: String,
    remote: String,
    started: Instant,
}

impl RequestLog {
    fn start(request: &Request) -> Option<Self> {
        if !tracing::enabled!(target: "arca::request", tracing::Level::INFO) {
            return None;
        }
        Some(Self {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            remote: request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
            started: Instant::now(),
        })
    }

    fn finish(self, request_id: &str, status: StatusCode) {
        let latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "arca::request",
            request_id = %request_id,
            method = %self.method,
            path = %self.path,
            remote = %self.remote,
            status = status.as_u16(),
            latency_us,
            "request"
        );
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (for at most 30 seconds). With `tls`, every connection is TLS.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Some(config) => serve_tls(listener, app, config, shutdown).await,
    }
}

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        // The client chain the handshake verified (zero-trust mTLS), for every request of
        // the connection.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let client_chain = tls.get_ref().1.peer_certificates().map(|chain| {
                crate::zerotrust::PeerCertificates(Arc::new(
                    chain.iter().map(|c| c.clone().into_owned()).collect(),
                ))
            });
            let service = tower::ServiceExt::map_request(
                app,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if let Some(chain) = &client_chain {
                        req.extensions_mut().insert(chain.clone());
                    }
                    req.map(axum::body::Body::new)
                },
            );
            let service = TowerToHyperService::new(service);
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown; closing them");
    }
    Ok(())
}

/// Loads a PEM certificate chain and private key into a rustls server configuration.
///
/// # Errors
/// A message naming the file that could not be read or parsed.
pub fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    load_tls_with_client_auth(
        cert,
        key,
        rustls::server::WebPkiClientVerifier::no_client_auth(),
    )
}

/// As [`load_tls`], with `client_auth` deciding on client certificates: the zero-trust
/// registry's verifier ([`crate::zerotrust::ClientCaRegistry::verifier`]) accepts optional
/// client certificates that chain to the union of the roles' client-CA bundles.
///
/// # Errors
/// As [`load_tls`].
pub fn load_tls_with_client_auth(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_auth: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_client_cert_verifier(client_auth)
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A response with no body.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_uuid_v4_strings_across_pool_refills() {
        let count = 3 * arca_storage::keys::NONCE_POOL_BYTES / 16 + 7;
        let ids: std::collections::HashSet<String> = (0..count).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), count);
        for id in &ids {
            let parsed = uuid_shape(id).unwrap_or_else(|| panic!("not a UUID: {id}"));
            assert_eq!(parsed[6] >> 4, 4, "{id}");
            assert_eq!(parsed[8] >> 6, 0b10, "{id}");
        }
        // Another thread draws from its own pool: still no repeats.
        let other: Vec<String> =
            std::thread::spawn(|| (0..300).map(|_| new_request_id()).collect())
                .join()
                .unwrap();
        assert!(other.iter().all(|id| !ids.contains(id)));
    }

    #[test]
    fn uuid_formatting_matches_the_canonical_layout() {
        let bytes = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(
            crate::kms::blob::format_uuid_v4(bytes),
            "00112233-4455-4677-8899-aabbccddeeff"
        );
        assert_eq!(
            crate::kms::blob::format_uuid(&bytes),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    fn uuid_shape(id: &str) -> Option<[u8; 16]> {
        let groups: Vec<&str> = id.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return None;
        }
        let bytes = hex::decode(groups.concat()).ok()?;
        bytes.try_into().ok()
    }
}
