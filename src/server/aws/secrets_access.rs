//! The access-policy check of the Secrets Manager API, kept apart from the operations so that
//! each operation calls it in one line, where it knows the secret.
//!
//! For every operation on an existing secret, [`check`] runs the secret's [`AccessPolicy`]
//! against the caller's verified identity ([`Caller::identity`]) with the server's
//! [`AccessGuard`](crate::lifecycle::access::AccessGuard), and writes one `lifecycle` audit line with the decision, allowed or denied, and the
//! denial's reason (never a value). That line is what usage metrics count, so it is written
//! for secrets without a policy too. If it cannot be written, the operation is refused (500),
//! as for any request that cannot be audited.
//!
//! One exemption keeps a mistaken policy from locking a secret away for good: a caller
//! holding the `root` policy (or an unverified development-mode caller, whom nothing else
//! restricts either) may always read, replace or remove the policy itself
//! ([`POLICY_ADMINISTRATION`]). Every other operation, reading the value included, obeys the
//! policy for root too, and rate limits apply to everyone. The exemption is audited as an
//! allowed line whose reason says so.
//!
//! Denials answer `AccessDeniedException`; a rate limit reached answers `ThrottlingException`
//! (Secrets Manager's throttling error, which the AWS SDKs retry with backoff). Both are 400,
//! as AWS sends them.

use super::sigv4::Caller;
use crate::lifecycle::events::{self, Event, Outcome};
use crate::lifecycle::{AccessPolicy, SecretsError};
use crate::server::AppState;

/// The operations on a secret's access policy itself, which root may always perform.
pub const POLICY_ADMINISTRATION: &[&str] = &[
    "GetResourcePolicy",
    "PutResourcePolicy",
    "DeleteResourcePolicy",
];

/// The secret an operation is about, as far as the check needs it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The secret's name.
    pub name: &'a str,
    /// The secret's ARN.
    pub arn: &'a str,
    /// Its access policy, if it has one.
    pub policy: Option<&'a AccessPolicy>,
    /// The version the request names, if any (for the audit line).
    pub version_id: Option<&'a str>,
}

/// Checks `caller` for `operation` on `target` in `region` and audits the decision. The
/// error maps to the AWS codes above through `From<SecretsError> for AwsError`; operations that
/// report refusals per secret (`BatchGetSecretValue`'s `Errors[]`) get them the same way.
///
/// # Errors
/// [`SecretsError::AccessDenied`], [`SecretsError::Throttled`]; [`SecretsError::Internal`]
/// when the decision cannot be audited.
pub fn check(
    state: &AppState,
    caller: &Caller,
    region: &str,
    operation: &str,
    target: Target<'_>,
) -> Result<(), SecretsError> {
    let identity = caller.identity();
    let root = caller
        .policies()
        .is_none_or(|policies| policies.iter().any(|p| p == "root"));
    let administration = root && POLICY_ADMINISTRATION.contains(&operation);
    let decision = match target.policy {
        Some(_) if administration => Ok(()),
        Some(policy) => state.arca.access_guard().check(
            policy,
            &identity,
            operation,
            target.name,
            target.arn,
            crate::auth::token::now_secs(),
        ),
        None => Ok(()),
    };
    let reason = match &decision {
        Err(err) => Some(err.to_string()),
        Ok(()) if administration && target.policy.is_some() => {
            Some("root may always administer a secret's access policy".to_owned())
        }
        Ok(()) => None,
    };
    let event = Event {
        operation,
        region,
        secret_name: Some(target.name),
        secret_arn: Some(target.arn),
        version_id: target.version_id,
        identity: Some(&identity),
        outcome: if decision.is_ok() {
            Outcome::Allowed
        } else {
            Outcome::Denied
        },
        reason: reason.as_deref(),
    };
    if let Err(err) = events::record(state.arca.audit(), &event) {
        tracing::error!(error = %err, "audit device failed: refusing the Secrets Manager request");
        return Err(SecretsError::Internal(
            "the access decision could not be audited".to_owned(),
        ));
    }
    if decision.is_err() {
        tracing::info!(
            principal = %identity.principal,
            secret = target.name,
            operation,
            "Secrets Manager request refused by the secret's access policy"
        );
    }
    decision
}

/// Forgets the rate-limit windows of a secret that was deleted.
pub fn forget(state: &AppState, arn: &str) {
    state.arca.access_guard().forget(arn);
}
