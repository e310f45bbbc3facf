//! The server's HA phases: a standby that forwards, then the active server (see [`crate::ha`]
//! for the election).
//!
//! A standby does not open the store for serving: it holds no key, reads nothing but the
//! lease, and writes nothing but its attempt to take the lease. On its listener it answers:
//!
//! - `sys/health` itself: 429 (`standby: true`), or what `standbyok` / `standbycode` ask
//!   for, as Vault's standbys do, so a load balancer's health check sends traffic to the
//!   active server only;
//! - `sys/leader` itself: `ha_enabled`, `is_self: false` and the active server's address;
//! - everything else by **forwarding** it to the active server (the address in the lease)
//!   and relaying the answer unchanged. Forwarding rather than redirecting, because it works
//!   for every client arca serves: a 307 is followed by the Vault CLI and hvac but not by
//!   the AWS SDKs, whose SigV4 signature covers the `Host` header; forwarding keeps the
//!   client's `Host`, so the active server verifies the signature the client made. The cost
//!   is one more hop, and the active server sees the standby as the request's peer address
//!   (tokens and AppRole secret ids bound to CIDRs must be used against the active server
//!   directly). A forwarded request is marked, and a marked request is never forwarded again,
//!   so two servers that each think the other is active answer 503 instead of looping.
//!   While no server is active (between a crash and the takeover), forwarded paths answer
//!   503, which clients retry.
//!
//! Once the standby holds the lease it stops serving (requests under way finish), and `arca
//! server` starts as an active server on the same listening socket: it opens the store,
//! unseals, and serves everything itself, while a task renews the lease and stops the process
//! if it cannot ([`crate::ha`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arca_storage::{Backend, Barrier};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::ha::{ActiveLease, HaSettings, LEASE_LOST_EXIT_CODE, Lease, Node};

/// Set on a request a standby forwards; such a request is never forwarded again.
const FORWARDED_HEADER: &str = "x-arca-forwarded";

/// Hop-by-hop headers (RFC 9110, section 7.6.1), which a proxy does not pass on.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What `arca server` carries from the standby phase into the active one.
#[derive(Debug, Default)]
pub struct Activation {
    listener: Option<std::net::TcpListener>,
    lease: Option<ActiveLease>,
}

impl Activation {
    /// The listening socket the standby served on, to serve on as the active server (`None`
    /// without HA: bind as usual).
    ///
    /// # Errors
    /// The socket cannot be handed to the runtime.
    pub fn take_listener(&mut self) -> std::io::Result<Option<tokio::net::TcpListener>> {
        self.listener
            .take()
            .map(tokio::net::TcpListener::from_std)
            .transpose()
    }

    /// The application, with `sys/leader` answered for an active HA server.
    pub fn layer(&self, app: Router) -> Router {
        match &self.lease {
            None => app,
            Some(lease) => {
                let leader = Arc::new(json!({
                    "ha_enabled": true,
                    "is_self": true,
                    "active_time": now_rfc3339(),
                    "leader_address": lease.settings().api_addr,
                    "leader_cluster_address": "",
                    "performance_standby": false,
                    "performance_standby_last_remote_wal": 0,
                }));
                app.layer(middleware::from_fn(move |request: Request, next: Next| {
                    let leader = Arc::clone(&leader);
                    async move {
                        if request.uri().path() == "/v1/sys/leader" {
                            return axum::Json(leader.as_ref().clone()).into_response();
                        }
                        next.run(request).await
                    }
                }))
            }
        }
    }

    /// Releases the lease after a clean stop, so a standby takes over at once.
    pub async fn release(&self) {
        if let Some(lease) = &self.lease {
            lease.release().await;
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Without HA, returns at once. With HA, binds the listener, prints the address line, and
/// serves as a standby until this server holds the lease (`Some`, with the listener and the
/// lease, whose renewal task now runs and stops the process if the lease is lost) or
/// `shutdown` resolves first (`None`).
///
/// # Errors
/// The listener cannot be bound, or TLS cannot be loaded.
pub async fn until_active(
    config: &ServerConfig,
    backend: Arc<dyn Backend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<Activation>> {
    if !config.ha.enabled {
        return Ok(Some(Activation::default()));
    }
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let tls = match &config.tls {
        Some(tls) => {
            Some(crate::server::load_tls(&tls.cert, &tls.key).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let settings = HaSettings {
        lease_ttl: Duration::from_secs(config.ha.lease_ttl_secs),
        api_addr: config
            .ha
            .api_addr
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{local}")),
    };
    let node = Arc::new(Node::new(Arc::clone(&backend), settings.clone())?);
    let (observed, leader) = watch::channel(None);
    node.observe(&observed)
        .await
        .context("cannot read the HA lease")?;
    {
        use std::io::Write as _;
        // Tests and scripts read this line to learn the port of a `:0` listener.
        let mut out = std::io::stdout().lock();
        writeln!(out, "arca listening on {scheme}://{local}")?;
        out.flush()?;
    }
    tracing::info!(
        address = %local,
        api_addr = %settings.api_addr,
        node = node.id(),
        "standby: forwarding to the active server until this one holds the HA lease"
    );
    let standby = Standby {
        leader,
        own_id: node.id().to_owned(),
        backend,
        http: crate::client::http_client(Duration::from_secs(config.request_timeout_secs))
            .map_err(anyhow::Error::msg)?,
        max_request_bytes: config.max_request_bytes,
    };
    let (promoted_tx, promoted_rx) = tokio::sync::oneshot::channel::<()>();
    let election = {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let lease = node.acquire(&observed).await?;
            // Renewals start the moment the lease is won, not once the standby's requests
            // have drained, so a slow drain cannot let the lease lapse.
            let keeper = lease.clone();
            tokio::spawn(async move {
                let Err(lost) = keeper.keep().await else {
                    // Released by a clean stop, which ends the process by itself.
                    return;
                };
                // Fail-stop (see crate::ha): another server may become active from now on.
                tracing::error!(error = %lost, "stopping: this server is no longer the active one");
                eprintln!("arca: {lost}; stopping so that only one server is active");
                std::process::exit(LEASE_LOST_EXIT_CODE);
            });
            let _ = promoted_tx.send(());
            Ok::<_, crate::ha::HaError>(lease)
        })
    };
    let (stopped_tx, mut stopped_rx) = watch::channel(false);
    let stop_serving = async move {
        tokio::select! {
            _ = promoted_rx => {}
            () = shutdown => { let _ = stopped_tx.send(true); }
        }
    };
    let served = listener.try_clone()?;
    crate::server::serve(
        tokio::net::TcpListener::from_std(served)?,
        routes(standby),
        tls,
        stop_serving,
    )
    .await?;
    if *stopped_rx.borrow_and_update() {
        election.abort();
        return Ok(None);
    }
    let lease = election.await.context("the election task failed")??;
    Ok(Some(Activation {
        listener: Some(listener),
        lease: Some(lease),
    }))
}

/// The standby's state.
#[derive(Clone)]
struct Standby {
    leader: watch::Receiver<Option<Lease>>,
    own_id: String,
    backend: Arc<dyn Backend>,
    http: reqwest::Client,
    max_request_bytes: usize,
}

fn routes(standby: Standby) -> Router {
    Router::new()
        .route("/v1/sys/health", get(health).head(health))
        .route("/v1/sys/leader", get(leader))
        .fallback(forward)
        .with_state(standby)
}

fn errors(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "errors": [message] }))).into_response()
}

#[derive(Debug, Deserialize)]
struct HealthQuery {
    standbyok: Option<bool>,
    standbycode: Option<u16>,
    activecode: Option<u16>,
    uninitcode: Option<u16>,
}

async fn health(
    State(standby): State<Standby>,
    query: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return errors(StatusCode::BAD_REQUEST, "invalid health query");
    };
    let initialized = match Barrier::new(Arc::clone(&standby.backend))
        .is_initialized()
        .await
    {
        Ok(initialized) => initialized,
        Err(err) => {
            tracing::warn!(error = %err, "standby health: cannot read the store");
            return errors(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store cannot be read",
            );
        }
    };
    let code = if !initialized {
        query.uninitcode.unwrap_or(501)
    } else if query.standbyok == Some(true) {
        query.activecode.unwrap_or(200)
    } else {
        query.standbycode.unwrap_or(429)
    };
    let Ok(code) = StatusCode::from_u16(code) else {
        return errors(StatusCode::BAD_REQUEST, "invalid status code");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "initialized": initialized,
        // A standby holds no key; it unseals itself when it takes over (HA needs an
        // auto-unseal seal), so it is reported ready rather than sealed, as Vault does.
        "sealed": false,
        "standby": true,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": crate::VERSION,
    });
    (code, axum::Json(body)).into_response()
}

async fn leader(State(standby): State<Standby>) -> Response {
    let address = standby
        .leader
        .borrow()
        .as_ref()
        .filter(|lease| lease.holder != standby.own_id)
        .map(|lease| lease.address.clone())
        .unwrap_or_default();
    axum::Json(json!({
        "ha_enabled": true,
        "is_self": false,
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": address,
        "leader_cluster_address": "",
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
    }))
    .into_response()
}

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Relays a request to the active server and its answer back, unchanged but for hop-by-hop
/// headers.
async fn forward(State(standby): State<Standby>, request: Request) -> Response {
    if request.headers().contains_key(FORWARDED_HEADER) {
        return errors(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server is a standby and the request was already forwarded once",
        );
    }
    let target = standby
        .leader
        .borrow()
        .as_ref()
        .filter(|lease| lease.holder != standby.own_id)
        .map(|lease| lease.address.trim_end_matches('/').to_owned());
    let Some(target) = target else {
        return errors(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server is a standby and no server is active yet; retry shortly",
        );
    };
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    let url = format!("{target}{path}");
    let body = match axum::body::to_bytes(body, standby.max_request_bytes).await {
        Ok(body) => body,
        Err(_) => return errors(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != header::CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        HeaderName::from_static(FORWARDED_HEADER),
        axum::http::HeaderValue::from_static("1"),
    );
    // The client's Host header stays (headers set explicitly win over the URL's), so a
    // SigV4 signature, which covers it, still verifies at the active server.
    let sent = standby
        .http
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(err) => {
            tracing::warn!(active = %target, error = %err.without_url(), "cannot forward to the active server");
            return errors(
                StatusCode::SERVICE_UNAVAILABLE,
                "the active server cannot be reached; retry shortly",
            );
        }
    };
    let status = answer.status();
    let mut relayed = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) && name != header::CONTENT_LENGTH {
            relayed.append(name.clone(), value.clone());
        }
    }
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(active = %target, error = %err.without_url(), "the active server's answer broke off");
            return errors(
                StatusCode::BAD_GATEWAY,
                "the active server's answer broke off",
            );
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = relayed;
    response
}
