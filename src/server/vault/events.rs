//! `GET /v1/sys/events`: the change feed ([`crate::changes`]) as a long poll.
//!
//! A long poll rather than server-sent events: it is one ordinary request at a time, so it
//! passes through the same token check, audit log, timeouts and proxies as every other call,
//! and a client resumes after any failure by sending the last cursor it saw.
//!
//! - `GET sys/events` (no `since`): the current cursor, no events, at once. A client starts
//!   here, reads what it needs, then polls from that cursor.
//! - `GET sys/events?since=<cursor>&wait=<seconds>`: the changes after `cursor` that the
//!   caller may see, as soon as there is at least one, or an empty list after `wait` seconds
//!   (default [`DEFAULT_WAIT`], at most [`MAX_WAIT`]; 0 answers at once). The answer's
//!   `cursor` is where to poll from next.
//! - A cursor of another server process (restart) or one older than the feed keeps answers
//!   `reset: true` with the current cursor: the client must re-read everything it holds.
//!
//! Any valid token may poll; each event is filtered by the caller's ACL policies: a KV event
//! is visible with `read` on `<mount>data/<path>` (the capability that reads the value), a
//! Secrets Manager event with `update` on `aws/secretsmanager/GetSecretValue` (the
//! capability that lets a token call `GetSecretValue`). Events name paths, versions and
//! labels; they never carry a value.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Capability, authenticate, envelope};
use crate::changes::{ChangeEvent, ChangeFeed, Subject};
use crate::policy::acl::Acl;
use crate::server::{ApiError, RequestId};

/// How long a poll waits for a change when the client does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// The longest wait a client may ask for (below the server's request timeout).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most events one answer carries; the cursor then points after the last one sent.
pub const MAX_EVENTS_PER_ANSWER: usize = 1000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/sys/events", get(poll))
}

#[derive(Debug, Deserialize)]
struct PollQuery {
    since: Option<String>,
    wait: Option<String>,
}

fn wait_of(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(DEFAULT_WAIT);
    };
    let digits = raw.strip_suffix('s').unwrap_or(raw);
    let secs: u64 = digits.parse().map_err(|_| {
        ApiError::bad_request("wait must be a number of seconds, such as 30 or 30s")
    })?;
    Ok(Duration::from_secs(secs).min(MAX_WAIT))
}

/// Whether a caller holding `acl` may see `event`.
fn visible(acl: &Acl, event: &ChangeEvent) -> bool {
    match &event.change.subject {
        Subject::Kv { mount, path } => acl.allows(&format!("{mount}data/{path}"), Capability::Read),
        Subject::Secret { .. } => acl.allows(
            &crate::server::aws::operation_path("secretsmanager", "GetSecretValue"),
            Capability::Update,
        ),
    }
}

fn event_json(feed: &ChangeFeed, event: &ChangeEvent) -> Value {
    let change = &event.change;
    let mut out = json!({
        "cursor": feed.cursor(event.sequence),
        "time": event.time,
        "kind": change.kind.as_str(),
    });
    match &change.subject {
        Subject::Kv { mount, path } => {
            out["engine"] = json!("kv");
            out["mount"] = json!(mount);
            out["path"] = json!(path);
            let versions: Vec<Value> = change
                .versions
                .iter()
                .map(|v| v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)))
                .collect();
            out["versions"] = json!(versions);
        }
        Subject::Secret { region, name, arn } => {
            out["engine"] = json!("secretsmanager");
            out["region"] = json!(region);
            out["name"] = json!(name);
            out["arn"] = json!(arn);
            out["versions"] = json!(change.versions);
            out["stages"] = json!(change.stages);
        }
    }
    out
}

fn answer(
    request_id: &RequestId,
    feed: &ChangeFeed,
    cursor: u64,
    reset: bool,
    events: &[&ChangeEvent],
) -> Json<Value> {
    let events: Vec<Value> = events.iter().map(|e| event_json(feed, e)).collect();
    Json(envelope(
        request_id,
        json!({ "cursor": feed.cursor(cursor), "reset": reset, "events": events }),
    ))
}

async fn poll(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Query(query): Query<PollQuery>,
) -> Result<Json<Value>, ApiError> {
    let entry = authenticate(&state, &headers).await?;
    let acl = state.arca.policies().acl(&entry.policies).await?;
    let feed = state.arca.changes();
    let wait = wait_of(query.wait.as_deref())?;
    let Some(since) = query.since.as_deref() else {
        return Ok(answer(&request_id, feed, feed.head(), false, &[]));
    };
    let Some(mut after) = feed
        .parse_cursor(since)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
    else {
        return Ok(answer(&request_id, feed, feed.head(), true, &[]));
    };
    // Subscribe before the first read, so a change published in between still wakes us.
    let mut head = feed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        head.borrow_and_update();
        let Ok(events) = feed.since(after) else {
            return Ok(answer(&request_id, feed, feed.head(), true, &[]));
        };
        let mut shown: Vec<&ChangeEvent> = Vec::new();
        for event in &events {
            if visible(&acl, event) {
                if shown.len() == MAX_EVENTS_PER_ANSWER {
                    break;
                }
                shown.push(event);
            }
            after = event.sequence;
        }
        if !shown.is_empty() {
            return Ok(answer(&request_id, feed, after, false, &shown));
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(deadline) => break,
            () = feed.closed() => break,
        }
    }
    Ok(answer(&request_id, feed, after, false, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_seconds_capped_at_the_maximum() {
        assert_eq!(wait_of(None).unwrap(), DEFAULT_WAIT);
        assert_eq!(wait_of(Some("")).unwrap(), DEFAULT_WAIT);
        assert_eq!(wait_of(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(wait_of(Some("5s")).unwrap(), Duration::from_secs(5));
        assert_eq!(wait_of(Some("9999")).unwrap(), MAX_WAIT);
        assert!(wait_of(Some("soon")).is_err());
        assert!(wait_of(Some("-1")).is_err());
    }
}
