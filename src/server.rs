//! The HTTP server: one listener for every API arca speaks.
//!
//! Handlers are thin: they parse the request into the domain's types, authenticate, call one
//! function of [`Arca`], and map its typed error to a status code (in [`error`]). Today the
//! listener serves Vault's `sys/*` endpoints for the seal ceremony ([`vault`]); every other path
//! answers 503 `Vault is sealed` while sealed and 404 after.
//!
//! Cross-cutting layers, outermost first: a request id and a structured log line per request
//! (method, path, status, latency; never headers, query strings or bodies), a request timeout,
//! and a body size limit.

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
        // Response wrapping and the audit log see every route's answer; the audit layer is
        // outside wrapping, so it logs what the client gets (a wrapping token, redacted).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            vault::wrapping::layer,
        ))
        .layer(middleware::from_fn_with_state(state, vault::audit::layer))
        .layer(middleware::from_fn(vault::audit::record_remote_addr))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(middleware::from_fn(close_after_too_large))
        .layer(middleware::from_fn(move |request, next| {
            drain_unread_body(request, next, limit)
        }))
        .layer(middleware::from_fn(log_request))
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
async fn drain_unread_body(request: Request, next: Next, limit: usize) -> Response {
    let request = request.map(|body| axum::body::Body::new(DrainOnDrop::new(body, limit)));
    next.run(request).await
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
async fn close_after_too_large(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
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

/// Gives each request an id and logs one line when it is answered. Only the method, the path,
/// the status and the latency are logged: paths name secrets but never hold their values.
async fn log_request(mut request: Request, next: Next) -> Response {
    let request_id = crate::seal::new_nonce().unwrap_or_default();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "arca::request",
        request_id = %request_id,
        %method,
        path = %path,
        remote = %remote,
        status,
        latency_us,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
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
