//! The PostgreSQL rotator: database credentials whose password is changed in the database.
//!
//! The secret's value has the shape of Secrets Manager's database secrets (`engine`, `host`,
//! `port`, `dbname`, `username`, `password`, optionally `masterarn`), whatever the secret's
//! type, so secrets written for AWS's rotation templates rotate unchanged.
//!
//! - createSecret: a new password (the database credentials generator, the secret's password
//!   parameters), every other field kept.
//! - setSecret: if the pending credentials already log in (a resumed rotation), nothing;
//!   otherwise arca connects as the administrator — the secret named by `masterarn` in the
//!   value, else `[rotation.postgres] master_secret`, else the role itself with its current
//!   credentials — and runs `ALTER ROLE "<username>" WITH PASSWORD '<SCRAM verifier>'`. The
//!   password is sent as a SCRAM-SHA-256 verifier computed here (as psql's `\password` does), so
//!   the clear password never reaches the server, its statement log or `pg_stat_activity`.
//!   `ALTER ROLE` takes no bind parameters, so the role name is quoted as an identifier and
//!   the verifier as a literal ([`quote_identifier`], [`quote_literal`]).
//! - testSecret: connects with the pending credentials and checks `current_user`.
//!
//! Connections are plain TCP or a Unix socket (a `host` starting with `/`), with the
//! configured connect timeout: use the rotator on loopback, a socket, or a network you trust.

use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use super::{Rotator, RotatorError, StepContext, builtin, current_value};
use crate::lifecycle::{SecretType, SecretValue};

/// `arca:rotator:postgres`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Postgres;

/// Connection fields of a database secret. The password is wiped on drop.
struct Credentials {
    host: String,
    port: u16,
    dbname: Option<String>,
    username: String,
    password: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Reads the connection fields of `value`; `what` names it in errors. The `masterarn` field,
/// if any, is returned beside.
fn credentials(
    value: &SecretValue,
    what: &str,
) -> Result<(Credentials, Option<String>), RotatorError> {
    let bad = |why: &str| {
        RotatorError::Config(format!("the {what} is not PostgreSQL credentials: {why}"))
    };
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(value.expose_secret())
    else {
        return Err(bad("not a JSON object"));
    };
    let password = match object.remove("password") {
        Some(Value::String(mut text)) => {
            let kept = Zeroizing::new(text.clone());
            zeroize::Zeroize::zeroize(&mut text);
            kept
        }
        _ => return Err(bad("no password")),
    };
    if let Some(engine) = object.get("engine").and_then(Value::as_str)
        && !matches!(engine, "postgres" | "postgresql" | "aurora-postgresql")
    {
        return Err(bad(&format!("engine {engine:?} is not PostgreSQL")));
    }
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    let host = text("host").ok_or_else(|| bad("no host"))?;
    let username = text("username")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("no username"))?;
    let port = match object.get("port") {
        None | Some(Value::Null) => 5432,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| bad("port out of range"))?,
        Some(Value::String(s)) => s.parse().map_err(|_| bad("port is not a number"))?,
        Some(_) => return Err(bad("port is not a number")),
    };
    let creds = Credentials {
        host,
        port,
        dbname: text("dbname"),
        username,
        password,
    };
    Ok((creds, text("masterarn")))
}

/// A session with `creds`; the connection task ends when the client drops.
async fn connect(
    creds: &Credentials,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&creds.host)
        .port(creds.port)
        .user(&creds.username)
        .password(creds.password.as_bytes())
        .application_name("arca-rotation")
        .connect_timeout(timeout);
    if let Some(dbname) = &creds.dbname {
        config.dbname(dbname);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "rotation: PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

/// A PostgreSQL error in words (the server's message; never a statement or a password).
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => err.to_string(),
    }
}

/// `text` as a PostgreSQL identifier: in double quotes, inner double quotes doubled.
///
/// # Errors
/// [`RotatorError::Config`] for an empty name or one containing NUL (PostgreSQL cannot hold
/// it).
pub fn quote_identifier(text: &str) -> Result<String, RotatorError> {
    if text.is_empty() || text.contains('\0') {
        return Err(RotatorError::Config(
            "a role name must be non-empty and free of NUL".into(),
        ));
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

/// `text` as a PostgreSQL string literal, right whatever `standard_conforming_strings` says:
/// single quotes doubled and, when the text has a backslash, the escape-string form
/// `E'...'` with backslashes doubled (as libpq's `PQescapeLiteral` does).
///
/// # Errors
/// [`RotatorError::Config`] for text containing NUL.
pub fn quote_literal(text: &str) -> Result<Zeroizing<String>, RotatorError> {
    if text.contains('\0') {
        return Err(RotatorError::Config("a literal cannot hold NUL".into()));
    }
    let mut quoted = Zeroizing::new(String::with_capacity(text.len() + 3));
    if text.contains('\\') {
        quoted.push_str(" E");
    }
    quoted.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    Ok(quoted)
}

impl Postgres {
    fn timeout(ctx: &StepContext<'_>) -> Duration {
        Duration::from_secs(ctx.settings.postgres.connect_timeout_secs)
    }

    /// The administrator's credentials: `masterarn`, the configured master secret, or none
    /// (the role's own current credentials).
    async fn admin(
        ctx: &StepContext<'_>,
        masterarn: Option<String>,
    ) -> Result<Option<Credentials>, RotatorError> {
        let Some(master_id) = masterarn.or_else(|| ctx.settings.postgres.master_secret.clone())
        else {
            return Ok(None);
        };
        let scope = ctx.arca.secrets().scope(ctx.region)?;
        let value = current_value(&scope, &master_id).await?.ok_or_else(|| {
            RotatorError::Config(format!(
                "the master secret {master_id} has no current value"
            ))
        })?;
        credentials(&value, "master secret").map(|(creds, _)| Some(creds))
    }
}

#[async_trait::async_trait]
impl Rotator for Postgres {
    async fn create_secret(&self, ctx: &StepContext<'_>) -> Result<SecretValue, RotatorError> {
        let current = ctx.current.ok_or_else(|| {
            RotatorError::Config(
                "the secret has no current value: put the database credentials first".into(),
            )
        })?;
        credentials(current, "current value")?;
        // Only the password parameters of the secret carry over: the rest of the value is
        // the current one's.
        let params = if ctx.secret.secret_type == SecretType::DatabaseCredentials {
            ctx.secret.generation.clone()
        } else {
            ctx.secret
                .generation
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("password_")
                        || k.starts_with("exclude_")
                        || *k == "include_space"
                        || *k == "require_each_included_type"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        builtin::regenerate(ctx, SecretType::DatabaseCredentials, &params).await
    }

    async fn set_secret(&self, ctx: &StepContext<'_>) -> Result<(), RotatorError> {
        let timeout = Self::timeout(ctx);
        let (pending, masterarn) = credentials(ctx.pending()?, "pending value")?;
        // A resumed rotation may have set the password already.
        if connect(&pending, timeout).await.is_ok() {
            return Ok(());
        }
        let admin = match Self::admin(ctx, masterarn).await? {
            Some(admin) => admin,
            None => {
                let current = ctx.current.ok_or_else(|| {
                    RotatorError::Config("no current credentials and no master secret".into())
                })?;
                credentials(current, "current value")?.0
            }
        };
        let client = connect(&admin, timeout).await.map_err(|e| {
            RotatorError::Target(format!(
                "cannot connect to {}:{} as {}: {}",
                admin.host,
                admin.port,
                admin.username,
                describe(&e)
            ))
        })?;
        let verifier = Zeroizing::new(postgres_protocol::password::scram_sha_256(
            pending.password.as_bytes(),
        ));
        let statement = Zeroizing::new(format!(
            "ALTER ROLE {} WITH PASSWORD {}",
            quote_identifier(&pending.username)?,
            quote_literal(&verifier)?.as_str()
        ));
        client.batch_execute(&statement).await.map_err(|e| {
            RotatorError::Target(format!(
                "ALTER ROLE {} failed: {}",
                pending.username,
                describe(&e)
            ))
        })
    }

    async fn test_secret(&self, ctx: &StepContext<'_>) -> Result<(), RotatorError> {
        let (pending, _) = credentials(ctx.pending()?, "pending value")?;
        let client = connect(&pending, Self::timeout(ctx)).await.map_err(|e| {
            RotatorError::Target(format!(
                "cannot connect to {}:{} as {} with the pending password: {}",
                pending.host,
                pending.port,
                pending.username,
                describe(&e)
            ))
        })?;
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(|e| {
                RotatorError::Target(format!("the test query failed: {}", describe(&e)))
            })?;
        let user: String = row.get(0);
        if user != pending.username {
            return Err(RotatorError::Target(format!(
                "connected as {user}, not {}",
                pending.username
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("app").unwrap(), "\"app\"");
        assert_eq!(quote_identifier("Mixed Case").unwrap(), "\"Mixed Case\"");
        assert_eq!(
            quote_identifier("x\"; DROP ROLE admin; --").unwrap(),
            "\"x\"\"; DROP ROLE admin; --\""
        );
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier("a\0b").is_err());
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("abc").unwrap().as_str(), "'abc'");
        assert_eq!(quote_literal("it's").unwrap().as_str(), "'it''s'");
        assert_eq!(quote_literal("a\\'b").unwrap().as_str(), " E'a\\\\''b'");
        assert!(quote_literal("a\0").is_err());
    }

    #[test]
    fn credentials_are_read_and_redacted() {
        let value = SecretValue::String(Zeroizing::new(
            r#"{"engine": "postgres", "host": "127.0.0.1", "port": "6543", "username": "app", "password": "hunter2", "masterarn": "admin"}"#.into(),
        ));
        let (creds, master) = credentials(&value, "value").unwrap();
        assert_eq!(creds.port, 6543);
        assert_eq!(creds.password.as_str(), "hunter2");
        assert_eq!(master.as_deref(), Some("admin"));
        assert!(!format!("{creds:?}").contains("hunter2"));
        let mysql = SecretValue::String(Zeroizing::new(
            r#"{"engine": "mysql", "host": "h", "username": "u", "password": "p"}"#.into(),
        ));
        assert!(credentials(&mysql, "value").is_err());
    }
}
