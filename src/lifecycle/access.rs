//! Access policies: the per-secret [`AccessPolicy`] checked against the caller's verified
//! [`Identity`] on every operation, with per-identity rate limits.
//!
//! The brief's sketch checked access against identity fields the caller sent along with the
//! request. Here the [`Identity`] is built by the server from the authenticated credential
//! (a SigV4 access key's bound identity, a token's metadata, an AppRole role), so a caller
//! cannot claim a service, environment or role it was not given. This module only decides.
//!
//! # The decision
//!
//! [`AccessGuard::check`] goes through the policy's dimensions in a fixed order and refuses at
//! the first that fails; the error names that dimension and never a value (not the caller's
//! service, not the list it was checked against), so a denial tells an attacker nothing about
//! what would pass:
//!
//! 1. **source**: `allowed_cidrs` against the connection's peer address;
//! 2. **service**, **environment**, **role**: each non-empty list must contain the caller's
//!    value, compared exactly (case-sensitive). A caller without a value on a dimension whose
//!    list is non-empty is refused;
//! 3. **operation**: when `access_patterns` is non-empty, at least one pattern must match both
//!    the secret's name (a glob, see below) and the operation (its `operations` list names it,
//!    or holds `*`);
//! 4. **rate**: every matching pattern with `max_requests_per_hour` must have room for one more
//!    request by this identity on this secret. The request is counted against each of them only
//!    when all have room, so a refused request costs nothing. A refusal here is
//!    [`SecretsError::Throttled`] (AWS's `ThrottlingException`), every other one
//!    [`SecretsError::AccessDenied`].
//!
//! An empty list allows everything along its dimension, so `AccessPolicy::default()` allows
//! every caller. Root callers are not exempt: the policy governs every operation on the
//! secret, changing the policy itself included, so a policy should keep a management identity
//! in its lists.
//!
//! # Name patterns
//!
//! `path_pattern` is a glob over the secret's name: `*` matches any run of characters within
//! one `/`-separated segment, `**` any run across segments (both may match nothing); every
//! other character matches itself. `prod/*` matches `prod/db` but not `prod/db/replica`;
//! `prod/**` matches both; `**` matches every name. Matching is linear in the product of the
//! two lengths (no backtracking blow-up).
//!
//! # Rate limits
//!
//! A sliding window of one hour, kept as 60 one-minute buckets per (secret ARN, identity
//! principal, pattern): a request is allowed when the requests counted in the current minute
//! and the 59 before it number fewer than the limit. Unlike a fixed clock-hour window, this
//! never lets through twice the limit around the top of the hour; the price is a resolution of
//! one minute (a request leaves the window between 59 and 60 minutes after it was made). Each
//! window takes a few hundred bytes and is forgotten once an hour has passed without a request
//! (a sweep at most once a minute), and at most [`MAX_TRACKED_WINDOWS`] are kept: when that many
//! identities are active at once, a new one is refused with `ThrottlingException` rather than
//! letting memory grow or resetting someone else's count. The counters live in memory only: a
//! restarted server starts every window afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use super::{AccessPattern, AccessPolicy, Identity, SecretsError};
use crate::auth::cidr;

/// The Secrets Manager operations an [`AccessPattern`] may name (besides `*`).
pub const OPERATIONS: &[&str] = &[
    "BatchGetSecretValue",
    "CancelRotateSecret",
    "CreateSecret",
    "DeleteResourcePolicy",
    "DeleteSecret",
    "DescribeSecret",
    "GetResourcePolicy",
    "GetSecretValue",
    "ListSecretVersionIds",
    "PutResourcePolicy",
    "PutSecretValue",
    "RemoveRegionsFromReplication",
    "ReplicateSecretToRegions",
    "RestoreSecret",
    "RotateSecret",
    "StopReplicationToReplica",
    "TagResource",
    "UntagResource",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "ValidateResourcePolicy",
];

/// The most rate-limit windows kept at once (see the module documentation).
pub const MAX_TRACKED_WINDOWS: usize = 65_536;

/// The most entries in each list of a policy, and the most patterns.
pub const MAX_POLICY_ENTRIES: usize = 64;

/// The longest `path_pattern`, in bytes (Secrets Manager names have at most 512).
pub const MAX_PATTERN_LEN: usize = 512;

/// The length of the rate-limit window, in seconds.
pub const WINDOW_SECS: u64 = 3600;

/// The width of one bucket of the window, in seconds.
const BUCKET_SECS: u64 = 60;

/// Buckets per window.
const BUCKETS: usize = 60;

/// How often expired windows are swept, in seconds.
const SWEEP_EVERY_SECS: u64 = 60;

/// The longest service, environment or role name bound to a credential.
pub const MAX_IDENTITY_VALUE_LEN: usize = 128;

/// Checks a service, environment or role name as it is bound to a credential (an access key,
/// an AppRole role): 1 to [`MAX_IDENTITY_VALUE_LEN`] letters, digits, `-`, `_`, `.`, `:`, `/`
/// or `@`. Policies compare these names exactly, so a stray space or a control character would
/// only make a credential that never matches.
///
/// # Errors
/// A message naming the `dimension` (`service`, `environment`, `role`), not the value.
pub fn check_identity_value(dimension: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_IDENTITY_VALUE_LEN
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{dimension} must be 1 to {MAX_IDENTITY_VALUE_LEN} letters, digits, '-', '_', '.', ':', '/' or '@'"
        ))
    }
}

/// Checks that `policy` is well formed, so that a stored policy never fails at check time:
/// CIDRs parse, patterns are non-empty and not too long, operations are Secrets Manager's (or
/// `*`), limits are at least 1, and no list exceeds [`MAX_POLICY_ENTRIES`].
///
/// # Errors
/// [`SecretsError::InvalidParameter`] naming the first problem.
pub fn validate(policy: &AccessPolicy) -> Result<(), SecretsError> {
    let invalid = |msg: String| Err(SecretsError::InvalidParameter(msg));
    for (field, list) in [
        ("allowed_services", &policy.allowed_services),
        ("allowed_environments", &policy.allowed_environments),
        ("allowed_roles", &policy.allowed_roles),
        ("allowed_cidrs", &policy.allowed_cidrs),
    ] {
        if list.len() > MAX_POLICY_ENTRIES {
            return invalid(format!(
                "access policy: {field} has more than {MAX_POLICY_ENTRIES} entries"
            ));
        }
        if list.iter().any(|v| v.trim().is_empty()) {
            return invalid(format!("access policy: {field} has an empty entry"));
        }
    }
    for block in &policy.allowed_cidrs {
        if block.contains(',') {
            return invalid("access policy: allowed_cidrs takes one block per entry".to_owned());
        }
        cidr::Cidr::parse(block).map_err(|_| {
            SecretsError::InvalidParameter(
                "access policy: allowed_cidrs has an invalid CIDR block".to_owned(),
            )
        })?;
    }
    if policy.access_patterns.len() > MAX_POLICY_ENTRIES {
        return invalid(format!(
            "access policy: more than {MAX_POLICY_ENTRIES} access patterns"
        ));
    }
    for pattern in &policy.access_patterns {
        if pattern.path_pattern.is_empty() || pattern.path_pattern.len() > MAX_PATTERN_LEN {
            return invalid(format!(
                "access policy: path_pattern must be 1 to {MAX_PATTERN_LEN} bytes"
            ));
        }
        if pattern.operations.is_empty() || pattern.operations.len() > MAX_POLICY_ENTRIES {
            return invalid(format!(
                "access policy: operations must list 1 to {MAX_POLICY_ENTRIES} operations"
            ));
        }
        if let Some(unknown) = pattern
            .operations
            .iter()
            .find(|op| op.as_str() != "*" && !OPERATIONS.contains(&op.as_str()))
        {
            return invalid(format!(
                "access policy: unknown operation {unknown:?} (Secrets Manager operation names, or \"*\")"
            ));
        }
        if pattern.max_requests_per_hour == Some(0) {
            return invalid(
                "access policy: max_requests_per_hour must be at least 1 (leave the operation \
                 out to refuse it)"
                    .to_owned(),
            );
        }
    }
    Ok(())
}

/// Whether the glob `pattern` matches `name` (see the module documentation).
#[must_use]
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Token {
        Literal(u8),
        Star,
        DoubleStar,
    }
    let bytes = pattern.as_bytes();
    let mut tokens = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'*' {
            let mut run = 0;
            while i < bytes.len() && bytes[i] == b'*' {
                run += 1;
                i += 1;
            }
            tokens.push(if run >= 2 {
                Token::DoubleStar
            } else {
                Token::Star
            });
        } else {
            tokens.push(Token::Literal(bytes[i]));
            i += 1;
        }
    }
    let name = name.as_bytes();
    // matched[j]: the tokens so far match the first j bytes of the name.
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    let mut next = vec![false; name.len() + 1];
    for token in tokens {
        match token {
            Token::Literal(c) => {
                next[0] = false;
                for j in 1..=name.len() {
                    next[j] = matched[j - 1] && name[j - 1] == c;
                }
            }
            Token::Star | Token::DoubleStar => {
                let crosses = matches!(token, Token::DoubleStar);
                next[0] = matched[0];
                for j in 1..=name.len() {
                    next[j] = matched[j] || (next[j - 1] && (crosses || name[j - 1] != b'/'));
                }
            }
        }
        std::mem::swap(&mut matched, &mut next);
    }
    matched[name.len()]
}

/// Whether `pattern` applies to `operation` on the secret `name`.
fn pattern_applies(pattern: &AccessPattern, operation: &str, name: &str) -> bool {
    pattern
        .operations
        .iter()
        .any(|op| op == "*" || op == operation)
        && glob_matches(&pattern.path_pattern, name)
}

/// Whether a non-empty `allowed` list admits `value`.
fn admits(allowed: &[String], value: Option<&str>) -> bool {
    allowed.is_empty() || value.is_some_and(|v| allowed.iter().any(|a| a == v))
}

fn denied(message: &str) -> SecretsError {
    SecretsError::AccessDenied(format!(
        "access denied by the secret's access policy: {message}"
    ))
}

/// One identity's requests on one secret under one pattern over the last hour, in one-minute
/// buckets: `counts[m % 60]` holds minute `m`, for the 60 minutes up to `latest`.
#[derive(Debug, Clone)]
struct Window {
    counts: [u32; BUCKETS],
    latest: u64,
}

impl Window {
    fn new(minute: u64) -> Self {
        Self {
            counts: [0; BUCKETS],
            latest: minute,
        }
    }

    /// Moves the window forward to `minute`, emptying the buckets that fell out of it. A clock
    /// that went backwards leaves it where it is.
    fn advance(&mut self, minute: u64) {
        if minute <= self.latest {
            return;
        }
        let gap = minute - self.latest;
        if gap >= BUCKETS as u64 {
            self.counts = [0; BUCKETS];
        } else {
            for m in self.latest + 1..=minute {
                self.counts[slot(m)] = 0;
            }
        }
        self.latest = minute;
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Seconds until the oldest counted request leaves the window (`now` in seconds).
    fn retry_after(&self, now: u64) -> u64 {
        let first = self.latest.saturating_sub(BUCKETS as u64 - 1);
        let oldest = (first..=self.latest)
            .find(|&m| self.counts[slot(m)] > 0)
            .unwrap_or(self.latest);
        ((oldest + BUCKETS as u64) * BUCKET_SECS).saturating_sub(now)
    }

    fn expired(&self, minute: u64) -> bool {
        minute.saturating_sub(self.latest) >= BUCKETS as u64
    }
}

fn slot(minute: u64) -> usize {
    // The remainder is below 60.
    usize::try_from(minute % BUCKETS as u64).unwrap_or(0)
}

/// Windows by secret ARN, then by (principal, pattern).
#[derive(Debug, Default)]
struct Windows {
    by_secret: HashMap<String, HashMap<(String, String), Window>>,
    len: usize,
    last_sweep: u64,
}

impl Windows {
    /// Drops every window without a request in the last hour.
    fn sweep(&mut self, minute: u64) {
        let mut len = 0;
        self.by_secret.retain(|_, windows| {
            windows.retain(|_, w| !w.expired(minute));
            len += windows.len();
            !windows.is_empty()
        });
        self.len = len;
    }
}

/// The access-policy check, with the rate-limit windows it keeps in memory.
///
/// One guard serves a whole server (share it behind an `Arc`); its methods take `&self`.
#[derive(Debug)]
pub struct AccessGuard {
    windows: Mutex<Windows>,
    capacity: usize,
}

impl Default for AccessGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessGuard {
    /// A guard with no window yet, keeping at most [`MAX_TRACKED_WINDOWS`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(MAX_TRACKED_WINDOWS)
    }

    /// A guard keeping at most `capacity` windows (tests use small ones).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            windows: Mutex::new(Windows::default()),
            capacity,
        }
    }

    /// Checks `identity` against `policy` for `operation` on the secret `name` (ARN `arn`) at
    /// `now` (Unix seconds), and counts the request against the rate limits that apply when
    /// it is allowed. See the module documentation for the order of the checks.
    ///
    /// # Errors
    /// [`SecretsError::AccessDenied`] naming the dimension that refused;
    /// [`SecretsError::Throttled`] when a rate limit is reached.
    pub fn check(
        &self,
        policy: &AccessPolicy,
        identity: &Identity,
        operation: &str,
        name: &str,
        arn: &str,
        now: u64,
    ) -> Result<(), SecretsError> {
        if !policy.allowed_cidrs.is_empty() {
            let blocks = cidr::parse_list(&policy.allowed_cidrs).map_err(|_| {
                // `validate` keeps such a policy from being stored; refuse rather than guess.
                denied("the policy's allowed networks do not parse")
            })?;
            if !source_allowed(&blocks, identity.source) {
                return Err(denied("the source address is not in an allowed network"));
            }
        }
        let dimensions = [
            (
                &policy.allowed_services,
                identity.service.as_deref(),
                "service",
            ),
            (
                &policy.allowed_environments,
                identity.environment.as_deref(),
                "environment",
            ),
            (&policy.allowed_roles, identity.role.as_deref(), "role"),
        ];
        for (allowed, value, dimension) in dimensions {
            if !admits(allowed, value) {
                return Err(denied(&if value.is_none() {
                    format!("the caller's identity has no {dimension}, and the policy requires one")
                } else {
                    format!("the caller's {dimension} is not allowed")
                }));
            }
        }
        if policy.access_patterns.is_empty() {
            return Ok(());
        }
        let applicable: Vec<&AccessPattern> = policy
            .access_patterns
            .iter()
            .filter(|p| pattern_applies(p, operation, name))
            .collect();
        if applicable.is_empty() {
            return Err(denied(&format!(
                "no access pattern allows {operation} on this secret"
            )));
        }
        let limited: Vec<(&str, u32)> = applicable
            .iter()
            .filter_map(|p| {
                p.max_requests_per_hour
                    .map(|n| (p.path_pattern.as_str(), n))
            })
            .collect();
        if limited.is_empty() {
            return Ok(());
        }
        self.count(arn, &identity.principal, &limited, now)
    }

    /// Counts one request against every `(pattern, limit)` of `limited`, or none if any is
    /// full.
    fn count(
        &self,
        arn: &str,
        principal: &str,
        limited: &[(&str, u32)],
        now: u64,
    ) -> Result<(), SecretsError> {
        let minute = now / BUCKET_SECS;
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if now >= windows.last_sweep.saturating_add(SWEEP_EVERY_SECS) {
            windows.sweep(minute);
            windows.last_sweep = now;
        }
        // First pass: is there room under every limit (and in the table for new windows)?
        let mut missing = 0usize;
        for &(pattern, limit) in limited {
            let window = windows
                .by_secret
                .get_mut(arn)
                .and_then(|w| w.get_mut(&(principal.to_owned(), pattern.to_owned())));
            match window {
                Some(window) => {
                    window.advance(minute);
                    if window.total() >= u64::from(limit) {
                        return Err(SecretsError::Throttled(format!(
                            "Rate exceeded: the secret's access policy limits this identity's \
                             requests per hour; retry in {} seconds",
                            window.retry_after(now).max(1)
                        )));
                    }
                }
                None => missing += 1,
            }
        }
        if missing > 0 && windows.len + missing > self.capacity {
            windows.sweep(minute);
            windows.last_sweep = now;
            if windows.len + missing > self.capacity {
                tracing::warn!(
                    capacity = self.capacity,
                    "rate-limit table full: refusing a new identity until windows expire"
                );
                return Err(SecretsError::Throttled(
                    "Rate exceeded: too many identities are being rate limited at once; retry \
                     later"
                        .to_owned(),
                ));
            }
        }
        // Second pass: count the request.
        let mut added = 0;
        let secret = windows.by_secret.entry(arn.to_owned()).or_default();
        for &(pattern, _) in limited {
            let window = secret
                .entry((principal.to_owned(), pattern.to_owned()))
                .or_insert_with(|| {
                    added += 1;
                    Window::new(minute)
                });
            window.advance(minute);
            let bucket = &mut window.counts[slot(minute)];
            *bucket = bucket.saturating_add(1);
        }
        windows.len += added;
        Ok(())
    }

    /// Forgets every window of the secret `arn` (it was deleted: a secret created later under
    /// the same name has another ARN and starts afresh anyway).
    pub fn forget(&self, arn: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(removed) = windows.by_secret.remove(arn) {
            windows.len -= removed.len();
        }
    }

    /// How many rate-limit windows are held (for tests and metrics).
    #[must_use]
    pub fn tracked_windows(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }
}

fn source_allowed(blocks: &[cidr::Cidr], source: Option<IpAddr>) -> bool {
    cidr::allowed(blocks, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
    const NAME: &str = "prod/db";
    const T0: u64 = 1_800_000_000;

    fn identity(service: Option<&str>, environment: Option<&str>, role: Option<&str>) -> Identity {
        Identity {
            principal: "access-key:AKIAEXAMPLE".into(),
            service: service.map(Into::into),
            environment: environment.map(Into::into),
            role: role.map(Into::into),
            source: Some([10, 1, 2, 3].into()),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn pattern(glob: &str, ops: &[&str], limit: Option<u32>) -> AccessPattern {
        AccessPattern {
            path_pattern: glob.into(),
            operations: strings(ops),
            max_requests_per_hour: limit,
        }
    }

    fn kind(result: &Result<(), SecretsError>) -> &'static str {
        match result {
            Ok(()) => "allow",
            Err(SecretsError::AccessDenied(_)) => "deny",
            Err(SecretsError::Throttled(_)) => "throttle",
            Err(_) => "other",
        }
    }

    #[test]
    fn decision_table() {
        let full = AccessPolicy {
            allowed_services: strings(&["billing", "orders"]),
            allowed_environments: strings(&["prod"]),
            allowed_roles: strings(&["reader"]),
            allowed_cidrs: strings(&["10.0.0.0/8", "::1/128"]),
            access_patterns: vec![pattern(
                "prod/*",
                &["GetSecretValue", "DescribeSecret"],
                None,
            )],
        };
        let good = identity(Some("billing"), Some("prod"), Some("reader"));
        let with = |f: &dyn Fn(&mut Identity)| {
            let mut id = good.clone();
            f(&mut id);
            id
        };
        let cases: Vec<(&str, AccessPolicy, Identity, &str, &str, &str, &str)> = vec![
            // (case, policy, identity, operation, name, expected, word in the reason)
            (
                "empty policy allows anyone",
                AccessPolicy::default(),
                Identity::default(),
                "PutSecretValue",
                NAME,
                "allow",
                "",
            ),
            (
                "all dimensions pass",
                full.clone(),
                good.clone(),
                "GetSecretValue",
                NAME,
                "allow",
                "",
            ),
            (
                "other listed service",
                full.clone(),
                with(&|i| i.service = Some("orders".into())),
                "GetSecretValue",
                NAME,
                "allow",
                "",
            ),
            (
                "service not listed",
                full.clone(),
                with(&|i| i.service = Some("web".into())),
                "GetSecretValue",
                NAME,
                "deny",
                "service",
            ),
            (
                "no service bound",
                full.clone(),
                with(&|i| i.service = None),
                "GetSecretValue",
                NAME,
                "deny",
                "no service",
            ),
            (
                "service case matters",
                full.clone(),
                with(&|i| i.service = Some("Billing".into())),
                "GetSecretValue",
                NAME,
                "deny",
                "service",
            ),
            (
                "environment not listed",
                full.clone(),
                with(&|i| i.environment = Some("staging".into())),
                "GetSecretValue",
                NAME,
                "deny",
                "environment",
            ),
            (
                "no environment bound",
                full.clone(),
                with(&|i| i.environment = None),
                "GetSecretValue",
                NAME,
                "deny",
                "no environment",
            ),
            (
                "role not listed",
                full.clone(),
                with(&|i| i.role = Some("admin".into())),
                "GetSecretValue",
                NAME,
                "deny",
                "role",
            ),
            (
                "no role bound",
                full.clone(),
                with(&|i| i.role = None),
                "GetSecretValue",
                NAME,
                "deny",
                "no role",
            ),
            (
                "source outside the networks",
                full.clone(),
                with(&|i| i.source = Some([192, 168, 0, 1].into())),
                "GetSecretValue",
                NAME,
                "deny",
                "source address",
            ),
            (
                "unknown source",
                full.clone(),
                with(&|i| i.source = None),
                "GetSecretValue",
                NAME,
                "deny",
                "source address",
            ),
            (
                "IPv6 loopback listed",
                full.clone(),
                with(&|i| i.source = Some("::1".parse().unwrap())),
                "GetSecretValue",
                NAME,
                "allow",
                "",
            ),
            (
                "IPv4-mapped address in an IPv4 block",
                full.clone(),
                with(&|i| i.source = Some("::ffff:10.9.9.9".parse().unwrap())),
                "GetSecretValue",
                NAME,
                "allow",
                "",
            ),
            (
                "operation not in the pattern",
                full.clone(),
                good.clone(),
                "PutSecretValue",
                NAME,
                "deny",
                "PutSecretValue",
            ),
            (
                "name outside the pattern",
                full.clone(),
                good.clone(),
                "GetSecretValue",
                "staging/db",
                "deny",
                "no access pattern",
            ),
            (
                "* stays within a segment",
                full.clone(),
                good.clone(),
                "GetSecretValue",
                "prod/db/replica",
                "deny",
                "no access pattern",
            ),
            (
                "source is checked first",
                full.clone(),
                with(&|i| {
                    i.source = None;
                    i.service = None;
                }),
                "PutSecretValue",
                NAME,
                "deny",
                "source address",
            ),
            (
                "wildcard operation",
                AccessPolicy {
                    access_patterns: vec![pattern("**", &["*"], None)],
                    ..AccessPolicy::default()
                },
                Identity::default(),
                "DeleteSecret",
                "a/b/c",
                "allow",
                "",
            ),
            (
                "one of several patterns",
                AccessPolicy {
                    access_patterns: vec![
                        pattern("dev/**", &["*"], None),
                        pattern("prod/db", &["DescribeSecret"], None),
                    ],
                    ..AccessPolicy::default()
                },
                Identity::default(),
                "DescribeSecret",
                NAME,
                "allow",
                "",
            ),
        ];
        for (case, policy, identity, operation, name, expected, word) in cases {
            let guard = AccessGuard::new();
            let result = guard.check(&policy, &identity, operation, name, ARN, T0);
            assert_eq!(kind(&result), expected, "{case}: {result:?}");
            if let Err(err) = result {
                let text = err.to_string();
                assert!(text.contains(word), "{case}: {text}");
                for value in [
                    "billing", "orders", "web", "Billing", "staging", "admin", "reader", "10.",
                    "192.168", "prod/*",
                ] {
                    assert!(
                        !text.contains(value),
                        "{case}: the reason shows a value: {text}"
                    );
                }
            }
        }
    }

    #[test]
    fn globs() {
        let table = [
            ("prod/db", "prod/db", true),
            ("prod/db", "prod/dbx", false),
            ("prod/*", "prod/db", true),
            ("prod/*", "prod/", true),
            ("prod/*", "prod/db/replica", false),
            ("prod/**", "prod/db/replica", true),
            ("prod/**", "prod", false),
            ("**", "", true),
            ("**", "a/b/c", true),
            ("*", "a/b", false),
            ("*", "ab", true),
            ("prod/*/password", "prod/db/password", true),
            ("prod/*/password", "prod/db/x/password", false),
            ("prod/**/password", "prod/db/x/password", true),
            ("prod/**/password", "prod/password", false),
            ("*-db", "orders-db", true),
            ("*-db", "team/orders-db", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("***", "x/y", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, name, expected) in table {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
        }
        // No exponential backtracking on adversarial input.
        let long = "a".repeat(512);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(200)), &long));
    }

    fn limited(limit: u32) -> AccessPolicy {
        AccessPolicy {
            access_patterns: vec![pattern("prod/**", &["GetSecretValue"], Some(limit))],
            ..AccessPolicy::default()
        }
    }

    #[test]
    fn rate_limits_slide_over_an_hour() {
        let guard = AccessGuard::new();
        let policy = limited(3);
        let caller = identity(None, None, None);
        let check = |now| kind(&guard.check(&policy, &caller, "GetSecretValue", NAME, ARN, now));
        // Three at minute 0, 10 and 59: the fourth at 59:30 is refused.
        assert_eq!(check(T0), "allow");
        assert_eq!(check(T0 + 600), "allow");
        assert_eq!(check(T0 + 3540), "allow");
        assert_eq!(check(T0 + 3570), "throttle");
        // The refusal was not counted; once the first request is an hour old, there is room
        // for exactly one more.
        let first_minute_end = (T0 / 60 + 60) * 60;
        assert_eq!(check(first_minute_end), "allow");
        assert_eq!(check(first_minute_end + 1), "throttle");
        // No doubling around a clock hour: a burst at the end of one hour and the start of the
        // next is one window.
        let guard = AccessGuard::new();
        let hour = (T0 / 3600 + 1) * 3600;
        let check = |now| kind(&guard.check(&policy, &caller, "GetSecretValue", NAME, ARN, now));
        assert_eq!(check(hour - 5), "allow");
        assert_eq!(check(hour - 4), "allow");
        assert_eq!(check(hour - 3), "allow");
        assert_eq!(check(hour + 1), "throttle");
        assert_eq!(check(hour + 3000), "throttle");
    }

    #[test]
    fn limits_are_per_identity_per_secret_and_only_for_matching_operations() {
        let guard = AccessGuard::new();
        let policy = AccessPolicy {
            access_patterns: vec![
                pattern("prod/**", &["GetSecretValue"], Some(1)),
                pattern("prod/**", &["DescribeSecret"], None),
            ],
            ..AccessPolicy::default()
        };
        let alice = identity(None, None, None);
        let bob = Identity {
            principal: "token:bob".into(),
            ..alice.clone()
        };
        let get = |id: &Identity, arn: &str| {
            kind(&guard.check(&policy, id, "GetSecretValue", NAME, arn, T0))
        };
        assert_eq!(get(&alice, ARN), "allow");
        assert_eq!(get(&alice, ARN), "throttle");
        assert_eq!(get(&bob, ARN), "allow");
        assert_eq!(get(&alice, "arn:other"), "allow");
        // DescribeSecret has no limit.
        for _ in 0..10 {
            assert_eq!(
                kind(&guard.check(&policy, &alice, "DescribeSecret", NAME, ARN, T0)),
                "allow"
            );
        }
        // forget() on delete clears the secret's windows.
        assert_eq!(guard.tracked_windows(), 3);
        guard.forget(ARN);
        assert_eq!(guard.tracked_windows(), 1);
        assert_eq!(get(&alice, ARN), "allow");
    }

    #[test]
    fn every_matching_limit_applies_and_a_refusal_costs_nothing() {
        let guard = AccessGuard::new();
        let policy = AccessPolicy {
            access_patterns: vec![
                pattern("**", &["*"], Some(3)),
                pattern("prod/db", &["GetSecretValue"], Some(1)),
            ],
            ..AccessPolicy::default()
        };
        let caller = identity(None, None, None);
        let run = |op: &str, name: &str| kind(&guard.check(&policy, &caller, op, name, ARN, T0));
        assert_eq!(run("GetSecretValue", NAME), "allow"); // both count: 1/3 and 1/1
        assert_eq!(run("GetSecretValue", NAME), "throttle"); // the narrow one is full
        assert_eq!(run("DescribeSecret", NAME), "allow"); // 2/3: the refusal did not count
        assert_eq!(run("DescribeSecret", NAME), "allow"); // 3/3
        assert_eq!(run("DescribeSecret", NAME), "throttle");
    }

    #[test]
    fn memory_is_bounded_and_windows_expire() {
        let guard = AccessGuard::with_capacity(3);
        let policy = limited(100);
        let caller = |n: u32| Identity {
            principal: format!("token:{n}"),
            ..Identity::default()
        };
        for n in 0..3 {
            assert_eq!(
                kind(&guard.check(&policy, &caller(n), "GetSecretValue", NAME, ARN, T0)),
                "allow"
            );
        }
        assert_eq!(guard.tracked_windows(), 3);
        // A fourth identity does not fit while the others are active...
        let err = guard.check(&policy, &caller(3), "GetSecretValue", NAME, ARN, T0 + 60);
        assert_eq!(kind(&err), "throttle");
        // ...but known ones keep working,
        assert_eq!(
            kind(&guard.check(&policy, &caller(0), "GetSecretValue", NAME, ARN, T0 + 60)),
            "allow"
        );
        // and an hour of silence frees their windows.
        let later = T0 + 3 * 3600;
        assert_eq!(
            kind(&guard.check(&policy, &caller(3), "GetSecretValue", NAME, ARN, later)),
            "allow"
        );
        assert_eq!(guard.tracked_windows(), 1);
        // Unlimited patterns keep no window at all.
        let guard = AccessGuard::with_capacity(1);
        let open = AccessPolicy {
            access_patterns: vec![pattern("**", &["*"], None)],
            ..AccessPolicy::default()
        };
        for n in 0..10 {
            assert_eq!(
                kind(&guard.check(&open, &caller(n), "GetSecretValue", NAME, ARN, T0)),
                "allow"
            );
        }
        assert_eq!(guard.tracked_windows(), 0);
    }

    #[test]
    fn a_backwards_clock_does_not_reset_a_window() {
        let guard = AccessGuard::new();
        let policy = limited(2);
        let caller = identity(None, None, None);
        let check = |now| kind(&guard.check(&policy, &caller, "GetSecretValue", NAME, ARN, now));
        assert_eq!(check(T0), "allow");
        assert_eq!(check(T0 + 120), "allow");
        assert_eq!(check(T0 - 600), "throttle");
    }

    #[test]
    fn throttling_says_when_to_retry() {
        let guard = AccessGuard::new();
        let policy = limited(1);
        let caller = identity(None, None, None);
        let minute_start = T0 / 60 * 60;
        guard
            .check(
                &policy,
                &caller,
                "GetSecretValue",
                NAME,
                ARN,
                minute_start + 10,
            )
            .unwrap();
        let err = guard
            .check(
                &policy,
                &caller,
                "GetSecretValue",
                NAME,
                ARN,
                minute_start + 70,
            )
            .unwrap_err();
        assert!(err.to_string().contains("retry in 3530 seconds"), "{err}");
    }

    #[test]
    fn identity_values_are_checked() {
        for good in [
            "billing",
            "prod",
            "team/db-reader",
            "svc@example.com",
            "a:b.c_d",
        ] {
            assert!(check_identity_value("service", good).is_ok(), "{good}");
        }
        let long = "x".repeat(MAX_IDENTITY_VALUE_LEN + 1);
        for bad in [
            "",
            " billing",
            "bill ing",
            "caf\u{e9}",
            "a\nb",
            long.as_str(),
        ] {
            let err = check_identity_value("role", bad).unwrap_err();
            assert!(err.starts_with("role "), "{err}");
        }
    }

    #[test]
    fn validation_catches_what_would_fail_later() {
        assert!(validate(&AccessPolicy::default()).is_ok());
        let good = AccessPolicy {
            allowed_services: strings(&["billing"]),
            allowed_cidrs: strings(&["10.0.0.0/8", "::1"]),
            access_patterns: vec![pattern("prod/**", &["GetSecretValue", "*"], Some(5))],
            ..AccessPolicy::default()
        };
        assert!(validate(&good).is_ok());
        let bad: Vec<(&str, AccessPolicy)> = vec![
            (
                "CIDR",
                AccessPolicy {
                    allowed_cidrs: strings(&["10.0.0.0/33"]),
                    ..good.clone()
                },
            ),
            (
                "comma",
                AccessPolicy {
                    allowed_cidrs: strings(&["10.0.0.0/8,::1"]),
                    ..good.clone()
                },
            ),
            (
                "empty service",
                AccessPolicy {
                    allowed_services: strings(&[" "]),
                    ..good.clone()
                },
            ),
            (
                "operation",
                AccessPolicy {
                    access_patterns: vec![pattern("x", &["GetSecret"], None)],
                    ..good.clone()
                },
            ),
            (
                "no operation",
                AccessPolicy {
                    access_patterns: vec![pattern("x", &[], None)],
                    ..good.clone()
                },
            ),
            (
                "empty pattern",
                AccessPolicy {
                    access_patterns: vec![pattern("", &["*"], None)],
                    ..good.clone()
                },
            ),
            (
                "zero limit",
                AccessPolicy {
                    access_patterns: vec![pattern("x", &["*"], Some(0))],
                    ..good.clone()
                },
            ),
            (
                "too many",
                AccessPolicy {
                    allowed_roles: (0..=MAX_POLICY_ENTRIES).map(|n| n.to_string()).collect(),
                    ..good.clone()
                },
            ),
        ];
        for (case, policy) in bad {
            assert!(
                matches!(validate(&policy), Err(SecretsError::InvalidParameter(_))),
                "{case}"
            );
        }
    }
}
