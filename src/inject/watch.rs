//! The client of the server's change feed (`GET /v1/sys/events`, see
//! [`crate::server::vault::events`]): a task that long-polls and tells its owner which secrets
//! changed, so `arca run`, `arca agent` and [`super::SecretCache`] refresh within a second of a
//! write or a rotation without polling every secret.
//!
//! The cursor is read *before* the owner's first resolution ([`ChangeWatcher::start`]), so a
//! change landing between that resolution and the first poll is still seen. When the server
//! says `reset` (it restarted, or the client fell too far behind), the owner gets
//! [`Notice::Reset`] and re-reads everything. While the server is unreachable the task retries
//! with a backoff of 0.5 s doubling to 10 s, and the owner gets one [`Notice::Unavailable`].

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::connection::Connection;
use super::reference::{Source, Store};

/// How long one poll asks the server to wait.
const POLL_WAIT_SECS: u64 = 25;
/// The client's timeout for one poll: the wait plus slack for a slow answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(POLL_WAIT_SECS + 15);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSubject {
    /// A KV v2 key: the mount's path followed by the key's (`secret/app/db`), as in a
    /// `kv://` reference.
    Kv(String),
    /// A Secrets Manager secret.
    Secret {
        /// Its name.
        name: String,
        /// Its ARN.
        arn: String,
    },
}

/// One event of the feed, as the server sent it (names and versions, never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// The kind (`kv-write`, `secret-rotation`, ...).
    pub kind: String,
    /// What changed.
    pub subject: FeedSubject,
    /// The versions concerned.
    pub versions: Vec<String>,
    /// The staging labels (Secrets Manager).
    pub stages: Vec<String>,
}

impl FeedEvent {
    /// Whether this change may change what `source` reads. Any change of the same secret
    /// counts, whatever the version: a pinned version can still be deleted or destroyed.
    #[must_use]
    pub fn affects(&self, source: &Source) -> bool {
        match (&self.subject, source.store) {
            (FeedSubject::Kv(path), Store::Kv) => *path == source.path,
            (FeedSubject::Secret { name, arn }, Store::SecretsManager) => {
                *name == source.path
                    || *arn == source.path
                    // A partial ARN: the ARN without its random six-character suffix.
                    || arn
                        .rsplit_once('-')
                        .is_some_and(|(partial, _)| partial == source.path)
            }
            _ => false,
        }
    }

    fn from_json(event: &Value) -> Option<Self> {
        let kind = event["kind"].as_str()?.to_owned();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let subject = match event["engine"].as_str()? {
            "kv" => FeedSubject::Kv(format!(
                "{}{}",
                event["mount"].as_str()?,
                event["path"].as_str()?
            )),
            "secretsmanager" => FeedSubject::Secret {
                name: event["name"].as_str()?.to_owned(),
                arn: event["arn"].as_str().unwrap_or_default().to_owned(),
            },
            _ => return None,
        };
        Some(Self {
            kind,
            subject,
            versions: strings(&event["versions"]),
            stages: strings(&event["stages"]),
        })
    }
}

/// What the watcher tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These secrets changed.
    Changed(Vec<FeedEvent>),
    /// The feed cannot say what changed (the server restarted, the client fell behind, or it
    /// was not reachable when the watcher started): re-read everything.
    Reset,
    /// The feed is not reachable; the watcher keeps retrying. The text says why.
    Unavailable(String),
}

/// A running watcher. Dropping it stops the task.
#[derive(Debug)]
pub struct ChangeWatcher {
    task: JoinHandle<()>,
}

impl Drop for ChangeWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Poll {
    Events {
        cursor: String,
        reset: bool,
        events: Vec<FeedEvent>,
    },
    Failed(String),
}

async fn poll(connection: &Connection, since: Option<&str>) -> Poll {
    let path = match since {
        None => "sys/events".to_owned(),
        Some(cursor) => format!(
            "sys/events?since={}&wait={POLL_WAIT_SECS}",
            super::connection::encode_path(cursor)
        ),
    };
    let reply = match connection
        .vault(reqwest::Method::GET, &path, None, Some(POLL_TIMEOUT))
        .await
    {
        Ok(reply) => reply,
        Err(e) => return Poll::Failed(e.to_string()),
    };
    if reply.status != 200 {
        return Poll::Failed(format!(
            "the change feed answered {}: {}",
            reply.status,
            reply.messages()
        ));
    }
    let Ok(body) = reply.json() else {
        return Poll::Failed("the change feed's answer is not JSON".into());
    };
    let data = &body["data"];
    let Some(cursor) = data["cursor"].as_str() else {
        return Poll::Failed("the change feed's answer has no cursor".into());
    };
    Poll::Events {
        cursor: cursor.to_owned(),
        reset: data["reset"] == true,
        events: data["events"]
            .as_array()
            .map(|events| events.iter().filter_map(FeedEvent::from_json).collect())
            .unwrap_or_default(),
    }
}

impl ChangeWatcher {
    /// Reads the feed's current cursor, then starts polling from it. Returns the watcher and
    /// the receiver of its notices. When the cursor cannot be read now, the task keeps trying
    /// and sends [`Notice::Reset`] once it can (the owner's first read may be stale by then).
    pub async fn start(connection: Connection) -> (Self, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(64);
        let first = match poll(&connection, None).await {
            Poll::Events { cursor, .. } => Some(cursor),
            Poll::Failed(_) => None,
        };
        let task = tokio::spawn(run(connection, first, tx));
        (Self { task }, rx)
    }
}

async fn run(connection: Connection, mut cursor: Option<String>, tx: mpsc::Sender<Notice>) {
    let mut backoff = BACKOFF_START;
    let mut failing = false;
    loop {
        let outcome = poll(&connection, cursor.as_deref()).await;
        let notice = match outcome {
            Poll::Events {
                cursor: next,
                reset,
                events,
            } => {
                backoff = BACKOFF_START;
                failing = false;
                let notice = if cursor.is_none() || reset {
                    Some(Notice::Reset)
                } else if events.is_empty() {
                    None
                } else {
                    Some(Notice::Changed(events))
                };
                cursor = Some(next);
                notice
            }
            Poll::Failed(why) => {
                let notice = (!failing).then_some(Notice::Unavailable(why));
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                notice
            }
        };
        if let Some(notice) = notice
            && tx.send(notice).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(store: Store, path: &str) -> Source {
        Source {
            store,
            path: path.into(),
            version: None,
            stage: None,
        }
    }

    #[test]
    fn events_match_the_sources_they_change() {
        let kv = FeedEvent::from_json(&json!({
            "kind": "kv-write", "engine": "kv", "mount": "secret/", "path": "app/db",
            "versions": [3]
        }))
        .unwrap();
        assert_eq!(kv.versions, vec!["3"]);
        assert!(kv.affects(&source(Store::Kv, "secret/app/db")));
        assert!(!kv.affects(&source(Store::Kv, "secret/app/dbx")));
        assert!(!kv.affects(&source(Store::SecretsManager, "secret/app/db")));
        let sm = FeedEvent::from_json(&json!({
            "kind": "secret-rotation", "engine": "secretsmanager", "name": "prod/db",
            "arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
            "versions": ["v1"], "stages": ["AWSCURRENT"]
        }))
        .unwrap();
        assert!(sm.affects(&source(Store::SecretsManager, "prod/db")));
        assert!(sm.affects(&source(
            Store::SecretsManager,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"
        )));
        assert!(!sm.affects(&source(Store::SecretsManager, "prod/dbx")));
        assert!(FeedEvent::from_json(&json!({"kind": "x", "engine": "other"})).is_none());
    }
}
