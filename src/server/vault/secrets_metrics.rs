//! `GET /v1/sys/secrets-metrics/<name>?since=...&until=...&region=...`: a secret's usage
//! figures, counted from the server's file audit device ([`crate::lifecycle::metrics`]).
//!
//! The caller's token needs `read` on `sys/secrets-metrics/<name>`: a dedicated ACL path, so
//! an operator can let a team see the figures of its own secrets
//! (`path "sys/secrets-metrics/team-a/*" { capabilities = ["read"] }`) without `sudo` and
//! without access to the secrets themselves. The figures name services and principals, which
//! is why a token without that grant gets 403.
//!
//! `since` and `until` take RFC 3339, Unix seconds, or a duration ago (`24h`, `7d`); the range
//! is `[since, until)`; `until` defaults to the end of the current second and `since` to 24
//! hours before `until`. Without a file audit device there is
//! nothing to count from, and the answer is a 400 that says so; a standard-output device keeps
//! no history this server can read.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{AppState, Capability, authorize, envelope, rfc3339};
use crate::audit::DeviceKind;
use crate::lifecycle::metrics::{self, MetricsError};
use crate::server::{ApiError, RequestId};

/// The ACL path prefix; the secret's name follows.
pub const METRICS_PATH: &str = "sys/secrets-metrics/";

/// How far back `since` goes by default, in seconds.
const DEFAULT_RANGE_SECS: u64 = 24 * 3600;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/sys/secrets-metrics/{*name}", get(secret_metrics))
}

#[derive(Debug, serde::Deserialize)]
struct MetricsParams {
    since: Option<String>,
    until: Option<String>,
    region: Option<String>,
}

fn query_error(err: MetricsError) -> ApiError {
    match err {
        MetricsError::InvalidQuery(msg) => ApiError::bad_request(msg),
        MetricsError::Io(err) => ApiError::internal(&err),
    }
}

async fn secret_metrics(
    State(state): State<AppState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<MetricsParams>,
) -> Result<Response, ApiError> {
    let name = name.trim_matches('/').to_owned();
    if name.is_empty() {
        return Err(ApiError::bad_request("missing secret name"));
    }
    authorize(
        &state,
        &headers,
        &format!("{METRICS_PATH}{name}"),
        Capability::Read,
    )
    .await?;
    let now = crate::auth::token::now_secs();
    let until = match &params.until {
        Some(text) => metrics::parse_time(text, now).map_err(query_error)?,
        // The current second included: a line written this second counts.
        None => now + 1,
    };
    let since = match &params.since {
        Some(text) => metrics::parse_time(text, now).map_err(query_error)?,
        None => until.saturating_sub(DEFAULT_RANGE_SECS),
    };
    let path = state
        .arca
        .audit()
        .devices()
        .iter()
        .find_map(|device| match device.kind() {
            DeviceKind::File(path) => Some(path.clone()),
            DeviceKind::Stdout => None,
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "usage metrics are counted from the audit log, and no file audit device is \
                 enabled ([audit] file_path in the server's configuration)",
            )
        })?;
    let region = params.region.clone().filter(|r| !r.is_empty());
    let secret = name.clone();
    let usage = tokio::task::spawn_blocking(move || {
        metrics::compute_file(
            &path,
            &metrics::Query {
                secret: &secret,
                region: region.as_deref(),
                since,
                until,
            },
        )
    })
    .await
    .map_err(|err| ApiError::internal(&err))?
    .map_err(query_error)?;
    let time = |secs: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let data = json!({
        "secret": name,
        "region": params.region,
        "since": time(since),
        "until": time(until),
        "total_accesses": usage.total_accesses,
        "denied": usage.denied,
        "by_operation": usage.by_operation,
        "unique_services": usage.services.len(),
        "services": usage.services,
        "unique_principals": usage.unique_principals,
        "average_requests_per_hour": usage.average_per_hour,
        "peak_hour": usage.peak_hour.map(|p| json!({
            "start": time(p.start),
            "requests": p.requests,
        })),
        "lines_scanned": usage.lines_scanned,
        "lines_skipped": usage.lines_skipped,
    });
    Ok(axum::Json(envelope(&request_id, data)).into_response())
}
