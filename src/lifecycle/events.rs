//! Lifecycle events in the audit log: every access decision (allow and deny), every rotation
//! step outcome, every revoke and delete.
//!
//! The request and response lines the server's audit layer writes redact every string, the
//! secret's name included (for the AWS APIs it travels in the body). That is right for values
//! but makes the log useless for "who used `prod/db` last week". So the lifecycle writes its
//! own line per decision, with the secret's name and ARN, the version id and the caller's
//! verified identity in clear — names and identities are not secrets, exactly as Vault keeps
//! request paths in clear — and never a value. Usage metrics (`metrics`) are computed from
//! these lines.
//!
//! A line, before the chain fields the device adds:
//!
//! ```json
//! {"type": "lifecycle", "time": "2026-11-29T10:00:00Z",
//!  "lifecycle": {"operation": "GetSecretValue", "region": "us-east-1",
//!                "secret": {"name": "prod/db", "arn": "arn:aws:secretsmanager:..."},
//!                "version_id": "...", "outcome": "denied", "reason": "...",
//!                "identity": {"principal": "access-key:AKIA...", "service": "billing",
//!                             "environment": "prod", "role": null, "source": "127.0.0.1"}}}
//! ```

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::Identity;
use crate::audit::{AuditError, AuditLog};

/// The `type` of a lifecycle line.
pub const EVENT_TYPE: &str = "lifecycle";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An access the policy allowed (the operation then ran).
    Allowed,
    /// An access the policy or a rate limit refused.
    Denied,
    /// A lifecycle action (rotation step, delete, restore) that succeeded.
    Succeeded,
    /// A lifecycle action that failed.
    Failed,
}

impl Outcome {
    /// The name in the log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One lifecycle event. Borrowed fields: building one costs nothing when no device is enabled.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The operation (`GetSecretValue`, `RotateSecret`, `rotation:setSecret`, ...).
    pub operation: &'a str,
    /// The region of the secret.
    pub region: &'a str,
    /// The secret's name, when known.
    pub secret_name: Option<&'a str>,
    /// The secret's ARN, when known.
    pub secret_arn: Option<&'a str>,
    /// The version involved, when one is.
    pub version_id: Option<&'a str>,
    /// The caller (`None` for the server's own actions, such as scheduled rotation).
    pub identity: Option<&'a Identity>,
    /// What happened.
    pub outcome: Outcome,
    /// Why (a denial's reason, a failure's message). Never a value.
    pub reason: Option<&'a str>,
}

impl Event<'_> {
    /// The line's JSON object, at `time`.
    #[must_use]
    pub fn to_entry(&self, time: SystemTime) -> Map<String, Value> {
        let identity = self.identity.map_or(Value::Null, |id| {
            json!({
                "principal": id.principal,
                "service": id.service,
                "environment": id.environment,
                "role": id.role,
                "source": id.source.map(|ip| ip.to_string()),
            })
        });
        let mut entry = Map::new();
        entry.insert("type".into(), json!(EVENT_TYPE));
        entry.insert("time".into(), json!(crate::server::vault::rfc3339(time)));
        entry.insert(
            "lifecycle".into(),
            json!({
                "operation": self.operation,
                "region": self.region,
                "secret": { "name": self.secret_name, "arn": self.secret_arn },
                "version_id": self.version_id,
                "outcome": self.outcome.as_str(),
                "reason": self.reason,
                "identity": identity,
            }),
        );
        entry
    }
}

/// Writes `event` to every audit device (nothing when none is enabled).
///
/// # Errors
/// [`AuditError::Device`]: the caller must then refuse the operation, as for any request that
/// cannot be audited.
pub fn record(audit: &AuditLog, event: &Event<'_>) -> Result<(), AuditError> {
    if !audit.is_enabled() {
        return Ok(());
    }
    audit.write(&event.to_entry(SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_the_secret_and_the_caller_in_clear() {
        let identity = Identity {
            principal: "access-key:AKIAEXAMPLE".into(),
            service: Some("billing".into()),
            environment: Some("prod".into()),
            role: None,
            source: Some([127, 0, 0, 1].into()),
        };
        let event = Event {
            operation: "GetSecretValue",
            region: "us-east-1",
            secret_name: Some("prod/db"),
            secret_arn: Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"),
            version_id: None,
            identity: Some(&identity),
            outcome: Outcome::Denied,
            reason: Some("service billing is not allowed"),
        };
        let entry = Value::Object(event.to_entry(SystemTime::UNIX_EPOCH));
        assert_eq!(entry["type"], "lifecycle");
        assert_eq!(entry["time"], "1970-01-01T00:00:00Z");
        assert_eq!(entry["lifecycle"]["secret"]["name"], "prod/db");
        assert_eq!(entry["lifecycle"]["outcome"], "denied");
        assert_eq!(entry["lifecycle"]["identity"]["service"], "billing");
        assert_eq!(entry["lifecycle"]["identity"]["source"], "127.0.0.1");
        assert_eq!(entry["lifecycle"]["identity"]["role"], Value::Null);
    }
}
