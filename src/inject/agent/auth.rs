//! Auto-auth: the agent gets a token, keeps it alive, and gets a new one when it stops
//! working.
//!
//! - Token file: the token is read from the file and checked with `auth/token/lookup-self`.
//! - AppRole: role id and secret id are read from their files and exchanged at
//!   `auth/<mount>/login`.
//!
//! A renewable token is renewed (`auth/token/renew-self`) when two thirds of its TTL have
//! passed; when renewal fails, or the token is not renewable, or a read was refused
//! ([`AutoAuth::nudge`]), the agent logs in again (for a token file: reads the file again, so
//! a token rotated by another process is picked up). Failures are retried with a backoff of
//! 1 s doubling to 30 s, and the status says why.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use zeroize::Zeroizing;

use super::super::connection::{Connection, Token};
use super::config::AuthConfig;

/// How often a token without expiry (from a token file) is checked again.
const UNBOUNDED_RECHECK: Duration = Duration::from_secs(300);
const RETRY_START: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A login's outcome: how long the token lives and whether it can be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    ttl: Option<Duration>,
    renewable: bool,
}

/// What `/health`, `/metrics` and `arca agent status` show of authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthStatus {
    /// Whether the agent holds a token that worked at the last check.
    pub authenticated: bool,
    /// Successful logins.
    pub logins: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The auto-auth state, shared by the agent's tasks.
#[derive(Debug, Clone)]
pub struct AutoAuth {
    config: AuthConfig,
    connection: Connection,
    status: Arc<Mutex<AuthStatus>>,
    nudge: Arc<Notify>,
}

fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(trimmed)
}

fn lease_of(auth: &Value) -> Lease {
    let secs = auth["lease_duration"].as_u64().unwrap_or(0);
    Lease {
        ttl: (secs > 0).then(|| Duration::from_secs(secs)),
        renewable: auth["renewable"] == true,
    }
}

impl AutoAuth {
    /// Auto-auth over `connection` (whose token it sets).
    #[must_use]
    pub fn new(config: AuthConfig, connection: Connection) -> Self {
        Self {
            config,
            connection,
            status: Arc::new(Mutex::new(AuthStatus::default())),
            nudge: Arc::new(Notify::new()),
        }
    }

    /// A copy of the status.
    #[must_use]
    pub fn status(&self) -> AuthStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, change: impl FnOnce(&mut AuthStatus)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Asks the maintenance task to log in again now (a read was refused).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Logs in once: sets the connection's token.
    ///
    /// # Errors
    /// A message saying why (never the token).
    pub async fn login(&self) -> Result<Lease, String> {
        let result = self.try_login().await;
        match &result {
            Ok(_) => self.record(|s| {
                s.authenticated = true;
                s.logins += 1;
                s.last_error = None;
            }),
            Err(e) => self.record(|s| {
                s.authenticated = false;
                s.last_error = Some(e.clone());
            }),
        }
        result
    }

    async fn try_login(&self) -> Result<Lease, String> {
        match &self.config {
            AuthConfig::TokenFile(path) => {
                let token = read_secret_file(path, "token")?;
                self.connection.set_token(Some(Token::new(&token)));
                let reply = self
                    .connection
                    .vault(reqwest::Method::GET, "auth/token/lookup-self", None, None)
                    .await
                    .map_err(|e| e.to_string())?;
                if reply.status != 200 {
                    return Err(format!(
                        "the token in {} does not work ({}: {})",
                        path.display(),
                        reply.status,
                        reply.messages()
                    ));
                }
                let body = reply.json().map_err(|e| e.to_string())?;
                let ttl = body["data"]["ttl"].as_u64().unwrap_or(0);
                Ok(Lease {
                    ttl: (ttl > 0).then(|| Duration::from_secs(ttl)),
                    renewable: body["data"]["renewable"] == true,
                })
            }
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id = read_secret_file(role_id_file, "role id")?;
                let secret_id = read_secret_file(secret_id_file, "secret id")?;
                let body = json!({ "role_id": *role_id, "secret_id": *secret_id });
                // The login itself is not authenticated.
                self.connection.set_token(None);
                let reply = self
                    .connection
                    .vault(
                        reqwest::Method::POST,
                        &format!("auth/{}/login", mount.trim_matches('/')),
                        Some(&body),
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if reply.status != 200 {
                    return Err(format!(
                        "AppRole login refused ({}: {})",
                        reply.status,
                        reply.messages()
                    ));
                }
                let answer = reply.json().map_err(|e| e.to_string())?;
                let token = answer["auth"]["client_token"]
                    .as_str()
                    .ok_or("the AppRole login returned no token")?;
                self.connection.set_token(Some(Token::new(token)));
                Ok(lease_of(&answer["auth"]))
            }
        }
    }

    async fn renew(&self) -> Result<Lease, String> {
        let reply = self
            .connection
            .vault(
                reqwest::Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(format!(
                "renewal refused ({}: {})",
                reply.status,
                reply.messages()
            ));
        }
        let body = reply.json().map_err(|e| e.to_string())?;
        Ok(lease_of(&body["auth"]))
    }

    /// Keeps the token alive for good, from the lease of a first [`AutoAuth::login`] (or
    /// `None`: log in first, retrying with backoff until it works). `on_login` is called after
    /// each successful login made here.
    pub async fn maintain(self, first: Option<Lease>, on_login: impl Fn() + Send + 'static) {
        let mut lease = first;
        loop {
            let Some(current) = lease else {
                let mut backoff = RETRY_START;
                loop {
                    match self.try_login().await {
                        Ok(next) => {
                            self.record(|s| {
                                s.authenticated = true;
                                s.logins += 1;
                                s.last_error = None;
                            });
                            lease = Some(next);
                            on_login();
                            break;
                        }
                        Err(e) => {
                            eprintln!("arca agent: authentication failed: {e}; retrying");
                            self.record(|s| {
                                s.authenticated = false;
                                s.last_error = Some(e);
                            });
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(RETRY_MAX);
                        }
                    }
                }
                continue;
            };
            let wait = current.ttl.map_or(UNBOUNDED_RECHECK, |ttl| {
                (ttl * 2 / 3).max(Duration::from_secs(1))
            });
            let nudged = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                () = self.nudge.notified() => true,
            };
            if !nudged && current.renewable {
                match self.renew().await {
                    Ok(next) if next.ttl.is_none_or(|ttl| ttl >= Duration::from_secs(2)) => {
                        self.record(|s| {
                            s.renewals += 1;
                            s.last_error = None;
                        });
                        lease = Some(next);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => self.record(|s| s.last_error = Some(e)),
                }
            } else if !nudged && current.ttl.is_none() {
                // A token without expiry: check that it still works (and re-read the file).
                if self.try_login().await.is_ok() {
                    continue;
                }
            }
            // Renewal impossible or refused, or a read was refused: log in again.
            lease = None;
        }
    }
}
