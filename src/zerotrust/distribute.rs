//! The distribution flow: evidence → decision → audit → (on PERMIT) session and envelope; and
//! the later reads of a session.
//!
//! The server verifies the credentials it can see (the token, the SigV4 signature, the TLS
//! client chain, the peer address) and hands them over as [`Credentials`]; nothing here trusts
//! a header. The rest is done here, in this order:
//!
//! 1. the role is loaded and the request checked (a malformed request is a 400 before any
//!    decision);
//! 2. each factor is verified for the role: the client certificate against the role's own CA
//!    bundle, the attestation document against the role's attestors and measurements (its
//!    nonce consumed);
//! 3. the network context, the time window, the principal's rate and recent denials, the
//!    role's secret list and the caller's ACL are gathered;
//! 4. [`risk::decide`] scores and decides;
//! 5. the decision is audited (a `zerotrust` line: every contribution and reason, no value);
//!    if the audit device fails, nothing is distributed;
//! 6. on PERMIT, the value is read, a session created, and the envelope built and signed.
//!
//! # Audit lines
//!
//! ```json
//! {"type": "zerotrust", "time": "...",
//!  "zerotrust": {"operation": "zt:fetch", "role": "payments", "secret": "kv://secret/app/db#password",
//!                "session": null, "principal": "approle:web", "identities": ["approle:web"],
//!                "source": "10.1.2.3", "forwarded": true, "zone": "corp", "region": "eu-west-1",
//!                "decision": "DENY", "risk": 100, "reason": "mtls: ...",
//!                "contributions": [{"factor": "base", "points": 100, "veto": false, "reason": "..."}],
//!                "attestation": [{"check": "nonce", "passed": false, "points": 0, "reason": "..."}]}}
//! ```
//!
//! Names of roles, secrets and principals are in clear (they are not secrets; Vault keeps
//! request paths in clear too); values, keys and tokens never appear.

use std::net::IpAddr;

use rustls::pki_types::UnixTime;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::attestation::{self, Presented, Verdict};
use super::envelope::{self, Delivery, Header, SignedEnvelope, StatedMeasures, StatedSplit};
use super::keys::RecipientKey;
use super::mtls::{PeerCertificates, verify_for_role};
use super::network::{self, NetworkContext};
use super::risk::{self, Decision, Evidence, Outcome, VerifiedFactor};
use super::role::{FactorKind, Role, SplitPolicy};
use super::session::{self, Refusal, Session, SpendRefusal};
use super::{ZtError, now_secs};
use crate::Arca;
use crate::kv::VersionRead;
use crate::policy::Capability;

/// The `type` of a zero-trust audit line.
pub const EVENT_TYPE: &str = "zerotrust";

/// A verified arca token.
#[derive(Debug, Clone)]
pub struct TokenCredential {
    /// Its accessor.
    pub accessor: String,
    /// Its policies.
    pub policies: Vec<String>,
    /// The AppRole role it logged in as, when it came from an AppRole login.
    pub approle: Option<String>,
}

/// A verified SigV4 signature.
#[derive(Debug, Clone)]
pub struct AccessKeyCredential {
    /// The access key id.
    pub id: String,
    /// Its policies.
    pub policies: Vec<String>,
}

/// What the server verified about the caller. `Some(Err(reason))`: the credential was
/// presented and did not verify.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The token.
    pub token: Option<Result<TokenCredential, String>>,
    /// The SigV4 signature.
    pub access_key: Option<Result<AccessKeyCredential, String>>,
    /// The TLS client chain the handshake verified against the union of client CAs.
    pub peer_certificates: Option<PeerCertificates>,
    /// The TCP peer's address.
    pub peer: Option<IpAddr>,
    /// The `X-Forwarded-For` header, believed only from a role's trusted proxies.
    pub forwarded_for: Option<String>,
}

impl Credentials {
    /// The principal: the strongest verified primary credential's identity.
    fn principal(&self) -> String {
        match (&self.token, &self.access_key) {
            (Some(Ok(t)), _) => t.approle.as_ref().map_or_else(
                || format!("token:{}", t.accessor),
                |r| format!("approle:{r}"),
            ),
            (_, Some(Ok(k))) => format!("access-key:{}", k.id),
            _ => self
                .peer
                .map_or_else(|| "anonymous".to_owned(), |ip| format!("anonymous@{ip}")),
        }
    }
}

/// A secret reference: `kv://<mount>/<path>[#field]` (KV v2) or `sm://<name>[#field]` (a
/// Secrets Manager secret of the default region, its `AWSCURRENT` version; `#field` reads one
/// field of a JSON `SecretString`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    text: String,
    kind: RefKind,
    path: String,
    field: Option<String>,
}

/// Which store a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Kv,
    SecretsManager,
}

impl SecretRef {
    /// Parses a reference.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] for another scheme or a malformed path.
    pub fn parse(text: &str) -> Result<Self, ZtError> {
        if text.len() > 1024 {
            return Err(ZtError::InvalidRequest(
                "a secret reference is at most 1024 bytes".into(),
            ));
        }
        let usage = "a secret reference is kv://<mount>/<path>[#field] or sm://<name>[#field]";
        let (kind, rest) = if let Some(rest) = text.strip_prefix("kv://") {
            (RefKind::Kv, rest)
        } else if let Some(rest) = text.strip_prefix("sm://") {
            (RefKind::SecretsManager, rest)
        } else {
            return Err(ZtError::InvalidRequest(usage.into()));
        };
        let (path, field) = match rest.split_once('#') {
            Some((path, field)) if !field.is_empty() => (path, Some(field.to_owned())),
            Some(_) => {
                return Err(ZtError::InvalidRequest(
                    "the #field of a reference is empty".into(),
                ));
            }
            None => (rest, None),
        };
        let malformed = match kind {
            RefKind::Kv => {
                path.is_empty()
                    || path.starts_with('/')
                    || path.ends_with('/')
                    || !path.contains('/')
            }
            RefKind::SecretsManager => path.is_empty() || path.len() > 512,
        };
        if malformed {
            return Err(ZtError::InvalidRequest(usage.into()));
        }
        Ok(Self {
            text: text.to_owned(),
            kind,
            path: path.to_owned(),
            field,
        })
    }

    /// The reference as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A pattern over references: exact, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPattern(String);

impl SecretPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] for another scheme or a `*` that is not last.
    pub fn parse(text: &str) -> Result<Self, ZtError> {
        if !(text.starts_with("kv://") || text.starts_with("sm://")) {
            return Err(ZtError::InvalidRequest(
                "secrets patterns are kv://... or sm://..., with an optional * at the end".into(),
            ));
        }
        if text.trim_end_matches('*').contains('*') {
            return Err(ZtError::InvalidRequest(
                "a * is allowed only at the end of a secrets pattern".into(),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether `reference` matches.
    #[must_use]
    pub fn matches(&self, reference: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => reference.starts_with(prefix),
            None => reference == self.0,
        }
    }
}

/// A request for a distribution.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The role to decide under.
    pub role: String,
    /// The secret.
    pub secret: SecretRef,
    /// The requester's ephemeral X25519 key (forward secrecy).
    pub ephemeral_key: Option<RecipientKey>,
    /// An attestation document, decoded but not yet verified.
    pub attestation: Option<Presented>,
    /// For split distributions: the recipients to split among (default: all of the role's).
    pub split_recipients: Option<Vec<String>>,
}

/// What a fetch or read produced.
#[derive(Debug)]
pub struct Distribution {
    /// The decision (PERMIT for a delivered read).
    pub decision: Decision,
    /// The attestation verdict, when a document was presented.
    pub attestation: Option<Verdict>,
    /// The session after this read.
    pub session: Option<Session>,
    /// The envelope, on PERMIT.
    pub envelope: Option<SignedEnvelope>,
    /// The principal decided about.
    pub principal: String,
}

fn bad(message: impl Into<String>) -> ZtError {
    ZtError::InvalidRequest(message.into())
}

/// Runs a fetch: see the module documentation.
///
/// # Errors
/// [`ZtError::InvalidRequest`] for a malformed request or unknown role (nothing decided);
/// [`ZtError::NotFound`] when a permitted secret does not exist; [`ZtError::Audit`] when the
/// decision cannot be audited; storage errors. A DENY or STEP_UP is an `Ok` whose
/// `envelope` is `None`.
pub async fn fetch(
    arca: &Arca,
    credentials: &Credentials,
    request: FetchRequest,
) -> Result<Distribution, ZtError> {
    let zt = arca.zerotrust();
    let now = now_secs();
    let role = zt
        .role(&request.role)
        .await?
        .ok_or_else(|| bad(format!("no zero-trust role named {:?}", request.role)))?;
    let measures = &role.definition().measures;
    let split = match role.split() {
        None => {
            if request.split_recipients.is_some() {
                return Err(bad(format!("role {} does not split", role.name())));
            }
            None
        }
        Some(policy) => Some(select_recipients(
            policy,
            request.split_recipients.as_deref(),
        )?),
    };
    if split.is_none() && measures.forward_secrecy && request.ephemeral_key.is_none() {
        return Err(bad(format!(
            "role {} requires forward secrecy: send ephemeral_public_key (X25519)",
            role.name()
        )));
    }
    let principal = credentials.principal();
    let (mut evidence, identities) = gather(arca, &role, credentials, &request.secret).await?;
    let verdict = match &request.attestation {
        None => None,
        Some(presented) => {
            let verdict = attestation::verify(zt.barrier(), &role, presented, now).await?;
            if verdict.passed {
                evidence.factors.push(VerifiedFactor {
                    kind: FactorKind::Attestation,
                    identity: format!("workload:{}", verdict.workload_id),
                    detail: format!(
                        "workload {} attested, trust score {}",
                        verdict.workload_id, verdict.trust_score
                    ),
                });
            } else {
                let failed: Vec<String> = verdict
                    .checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("{}: {}", c.name, c.reason))
                    .collect();
                evidence.failed.push((
                    FactorKind::Attestation,
                    format!(
                        "trust score {} of 100: {}",
                        verdict.trust_score,
                        failed.join("; ")
                    ),
                ));
            }
            Some(verdict)
        }
    };
    let (requests, denials) = zt.activity().request(&principal, now);
    evidence.recent_requests = requests;
    evidence.recent_denials = denials;
    evidence.in_window = role
        .definition()
        .time_window
        .as_ref()
        .map(|w| w.contains(now));
    let mut decision = risk::decide(&role, &evidence);
    if decision.outcome == Outcome::Permit
        && measures.zone_restricted
        && evidence
            .network
            .as_ref()
            .and_then(|n| n.zone.as_ref())
            .is_none()
    {
        decision.outcome = Outcome::Deny;
        decision.contributions.push(risk::Contribution {
            factor: "zone".into(),
            points: 0,
            veto: true,
            reason: "a zone-restricted distribution needs a request from a known zone".into(),
        });
    }
    let mut all_identities = identities;
    all_identities.extend(
        evidence
            .factors
            .iter()
            .filter(|f| f.kind == FactorKind::Attestation)
            .map(|f| f.identity.clone()),
    );
    if decision.outcome != Outcome::Permit {
        zt.activity().denied(&principal, now);
        audit(
            arca,
            &AuditLine {
                operation: "zt:fetch",
                role: Some(role.name()),
                secret: Some(request.secret.as_str()),
                session: None,
                principal: &principal,
                identities: &all_identities,
                network: evidence.network.as_ref(),
                decision: Some(&decision),
                outcome: decision.outcome.as_str(),
                reason: &decision.summary(),
                attestation: verdict.as_ref(),
            },
        )?;
        return Ok(Distribution {
            decision,
            attestation: verdict,
            session: None,
            envelope: None,
            principal,
        });
    }
    // PERMIT: read the value first, so a missing secret creates no session.
    let value = read_value(arca, &request.secret).await?;
    let tightened = decision.risk > risk::TIGHTEN_ABOVE;
    let ttl = if tightened {
        measures.ttl_secs.min(risk::TIGHTENED_TTL_SECS)
    } else {
        measures.ttl_secs
    };
    let max_uses = if tightened { 1 } else { measures.max_uses };
    let zones = if measures.zone_restricted {
        evidence
            .network
            .as_ref()
            .and_then(|n| n.zone.clone())
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let id = session::new_id()?;
    let session = Session {
        v: 1,
        id: id.clone(),
        role: role.name().to_owned(),
        secret: request.secret.as_str().to_owned(),
        principal: principal.clone(),
        identities: all_identities.clone(),
        risk: decision.risk,
        created: now,
        expires_at: now + ttl,
        max_uses,
        remaining_uses: max_uses - 1,
        zones,
        forward_secrecy: split.is_some() || request.ephemeral_key.is_some(),
        split: split.is_some(),
        signed: measures.sign,
        revoked: false,
    };
    let delivery = match (&split, &request.ephemeral_key) {
        (Some(policy), _) => Delivery::Split(policy),
        (None, Some(key)) => Delivery::Sealed(key),
        (None, None) => Delivery::Plain,
    };
    let envelope = seal_envelope(arca, &session, 1, &value, &delivery, split.as_ref()).await?;
    audit(
        arca,
        &AuditLine {
            operation: "zt:fetch",
            role: Some(role.name()),
            secret: Some(request.secret.as_str()),
            session: Some(&id),
            principal: &principal,
            identities: &all_identities,
            network: evidence.network.as_ref(),
            decision: Some(&decision),
            outcome: decision.outcome.as_str(),
            reason: "permitted",
            attestation: verdict.as_ref(),
        },
    )?;
    session::create(zt.barrier(), &session).await?;
    Ok(Distribution {
        decision,
        attestation: verdict,
        session: Some(session),
        envelope: Some(envelope),
        principal,
    })
}

fn select_recipients(
    policy: &SplitPolicy,
    names: Option<&[String]>,
) -> Result<SplitPolicy, ZtError> {
    let Some(names) = names else {
        return Ok(policy.clone());
    };
    let mut recipients = Vec::new();
    for name in names {
        let found = policy
            .recipients
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| bad(format!("{name:?} is not a split recipient of the role")))?;
        if recipients
            .iter()
            .any(|(n, _): &(String, RecipientKey)| n == name)
        {
            return Err(bad(format!("split recipient {name:?} is named twice")));
        }
        recipients.push(found.clone());
    }
    if recipients.len() < usize::from(policy.threshold) {
        return Err(bad(format!(
            "the threshold ({}) is above the number of recipients named ({})",
            policy.threshold,
            recipients.len()
        )));
    }
    Ok(SplitPolicy {
        threshold: policy.threshold,
        recipients,
    })
}

/// Verifies the identity factors, the network and the authorisation for `role`.
async fn gather(
    arca: &Arca,
    role: &Role,
    credentials: &Credentials,
    secret: &SecretRef,
) -> Result<(Evidence, Vec<String>), ZtError> {
    let mut evidence = Evidence::default();
    let mut policy_sets: Vec<(&str, &[String])> = Vec::new();
    match &credentials.token {
        Some(Ok(token)) => {
            let factor = match &token.approle {
                Some(approle) => VerifiedFactor {
                    kind: FactorKind::Approle,
                    identity: format!("approle:{approle}"),
                    detail: format!("a token from an AppRole login as {approle}"),
                },
                None => VerifiedFactor {
                    kind: FactorKind::Token,
                    identity: format!("token:{}", token.accessor),
                    detail: format!("a valid token (accessor {})", token.accessor),
                },
            };
            evidence.factors.push(factor);
            policy_sets.push(("the token's", &token.policies));
        }
        Some(Err(reason)) => evidence.failed.push((FactorKind::Token, reason.clone())),
        None => {}
    }
    match &credentials.access_key {
        Some(Ok(key)) => {
            evidence.factors.push(VerifiedFactor {
                kind: FactorKind::Sigv4,
                identity: format!("access-key:{}", key.id),
                detail: format!("a valid SigV4 signature by access key {}", key.id),
            });
            policy_sets.push(("the access key's", &key.policies));
        }
        Some(Err(reason)) => evidence.failed.push((FactorKind::Sigv4, reason.clone())),
        None => {}
    }
    if let Some(chain) = &credentials.peer_certificates {
        match verify_for_role(role, &chain.0, UnixTime::now()) {
            Ok(identity) => evidence.factors.push(VerifiedFactor {
                kind: FactorKind::Mtls,
                identity: format!("cert:{}", identity.identity),
                detail: format!(
                    "a client certificate from the role's CA, {} → {}",
                    identity.matched, identity.identity
                ),
            }),
            Err(reason) => evidence.failed.push((FactorKind::Mtls, reason)),
        }
    }
    let (source, forwarded) = network::client_address(
        credentials.peer,
        credentials.forwarded_for.as_deref(),
        role.trusted_proxies(),
    );
    let (zone, region) = network::locate(source, role.zones());
    evidence.network = Some(NetworkContext {
        source,
        forwarded,
        zone,
        region,
    });
    let listed = role
        .definition()
        .secrets
        .iter()
        .filter_map(|p| super::distribute::SecretPattern::parse(p).ok())
        .any(|p| p.matches(secret.as_str()));
    if !listed {
        evidence.secret_refused = Some(format!(
            "{} is not among the secrets role {} distributes",
            secret.as_str(),
            role.name()
        ));
    }
    evidence.acl_refused = acl_refusal(arca, secret, &policy_sets).await?;
    if evidence.acl_refused.is_none() && secret.kind == RefKind::SecretsManager {
        let identity = crate::lifecycle::Identity {
            principal: credentials.principal(),
            service: None,
            environment: None,
            role: match &credentials.token {
                Some(Ok(token)) => token.approle.clone(),
                _ => None,
            },
            source,
        };
        evidence.acl_refused = sm_policy_refusal(arca, secret, &identity).await?;
    }
    let identities = evidence
        .factors
        .iter()
        .map(|f| f.identity.clone())
        .collect();
    Ok((evidence, identities))
}

/// The ACL path of a read of `secret`, once its mount is known.
async fn acl_path(
    arca: &Arca,
    secret: &SecretRef,
) -> Result<Option<(crate::mounts::MountEntry, String, String)>, ZtError> {
    if secret.kind != RefKind::Kv {
        return Ok(None);
    }
    let mount = arca
        .mounts()
        .mount_of(&secret.path)
        .await
        .map_err(|e| match e {
            crate::mounts::MountError::Sealed => ZtError::Sealed,
            other => ZtError::Internal(other.to_string()),
        })?;
    let Some(mount) = mount else {
        return Ok(None);
    };
    if mount.kind() != crate::mounts::MountKind::KvV2 {
        return Ok(None);
    }
    let inner = secret.path[mount.path().len()..].to_owned();
    let path = format!("{}data/{inner}", mount.path());
    Ok(Some((mount, inner, path)))
}

async fn acl_refusal(
    arca: &Arca,
    secret: &SecretRef,
    policy_sets: &[(&str, &[String])],
) -> Result<Option<String>, ZtError> {
    if policy_sets.is_empty() {
        return Ok(Some(
            "no token or access key: no policy grants read on the secret".into(),
        ));
    }
    let path = match secret.kind {
        RefKind::SecretsManager => {
            crate::server::aws::operation_path("secretsmanager", SM_OPERATION)
        }
        RefKind::Kv => match acl_path(arca, secret).await? {
            Some((_, _, path)) => path,
            None => {
                return Ok(Some(format!(
                    "{} is not on a KV version 2 mount",
                    secret.as_str()
                )));
            }
        },
    };
    // Secrets Manager's AWS API asks `update` on aws/secretsmanager/<Operation>; KV, `read`.
    let capability = match secret.kind {
        RefKind::SecretsManager => Capability::Update,
        RefKind::Kv => Capability::Read,
    };
    for (whose, policies) in policy_sets {
        let acl = arca.policies().acl(policies).await.map_err(|e| match e {
            crate::policy::PolicyError::Sealed => ZtError::Sealed,
            other => ZtError::Internal(other.to_string()),
        })?;
        if !acl.allows(&path, capability) {
            return Ok(Some(format!(
                "{whose} policies do not grant {capability} on {path}"
            )));
        }
    }
    Ok(None)
}

/// Reads the value a reference names: a field (strings as their text, other JSON as JSON),
/// or the whole JSON object.
async fn read_value(arca: &Arca, secret: &SecretRef) -> Result<Zeroizing<Vec<u8>>, ZtError> {
    let missing = || ZtError::NotFound(format!("{} does not exist", secret.as_str()));
    if secret.kind == RefKind::SecretsManager {
        return read_secrets_manager(arca, secret).await;
    }
    let Some((mount, inner, _)) = acl_path(arca, secret).await? else {
        return Err(missing());
    };
    let read = arca
        .kv()
        .read(&mount, &inner, None)
        .await
        .map_err(|e| match e {
            crate::kv::KvError::Sealed => ZtError::Sealed,
            crate::kv::KvError::InvalidPath(p) => ZtError::InvalidRequest(p.to_string()),
            other => ZtError::Internal(other.to_string()),
        })?;
    let Some(VersionRead::Live { data, .. }) = read else {
        return Err(missing());
    };
    let Some(field) = &secret.field else {
        return Ok(Zeroizing::new(data.expose_secret().to_vec()));
    };
    let object = data
        .to_json()
        .map_err(|e| ZtError::Internal(e.to_string()))?;
    match object.get(field) {
        None => Err(ZtError::NotFound(format!(
            "{} has no field {field:?}",
            secret.as_str()
        ))),
        Some(Value::String(text)) => Ok(Zeroizing::new(text.as_bytes().to_vec())),
        Some(other) => Ok(Zeroizing::new(other.to_string().into_bytes())),
    }
}

/// The operation a Secrets Manager read is authorised as.
const SM_OPERATION: &str = "GetSecretValue";

fn sm_error(err: crate::lifecycle::SecretsError) -> ZtError {
    use crate::lifecycle::SecretsError as E;
    match err {
        E::Sealed => ZtError::Sealed,
        E::NotFound(message) => ZtError::NotFound(message),
        E::InvalidRequest(message) | E::InvalidParameter(message) => {
            ZtError::InvalidRequest(message)
        }
        other => ZtError::Internal(other.to_string()),
    }
}

/// The `AWSCURRENT` value of a Secrets Manager secret (or one field of its JSON string).
async fn read_secrets_manager(
    arca: &Arca,
    secret: &SecretRef,
) -> Result<Zeroizing<Vec<u8>>, ZtError> {
    let version = arca
        .secrets()
        .default_scope()
        .get_value(&secret.path, &crate::lifecycle::VersionSelector::default())
        .await
        .map_err(sm_error)?;
    let Some(field) = &secret.field else {
        return Ok(Zeroizing::new(version.value.expose_secret().to_vec()));
    };
    let text = version.value.as_str().ok_or_else(|| {
        ZtError::InvalidRequest(format!(
            "{} is binary: a #field needs a JSON SecretString",
            secret.as_str()
        ))
    })?;
    let object: Value = serde_json::from_str(text).map_err(|_| {
        ZtError::InvalidRequest(format!(
            "{} is not a JSON object: a #field cannot be read",
            secret.as_str()
        ))
    })?;
    match object.get(field) {
        None => Err(ZtError::NotFound(format!(
            "{} has no field {field:?}",
            secret.as_str()
        ))),
        Some(Value::String(text)) => Ok(Zeroizing::new(text.as_bytes().to_vec())),
        Some(other) => Ok(Zeroizing::new(other.to_string().into_bytes())),
    }
}

/// A Secrets Manager secret's own access policy, checked as its AWS API checks it (the
/// policy's rate limits are counted by zero-trust's own guard).
async fn sm_policy_refusal(
    arca: &Arca,
    secret: &SecretRef,
    identity: &crate::lifecycle::Identity,
) -> Result<Option<String>, ZtError> {
    let description = match arca.secrets().default_scope().describe(&secret.path).await {
        Ok(description) => description,
        // A missing secret is told after the decision (404), as for KV.
        Err(crate::lifecycle::SecretsError::NotFound(_)) => return Ok(None),
        Err(other) => return Err(sm_error(other)),
    };
    let Some(policy) = &description.access_policy else {
        return Ok(None);
    };
    match arca.zerotrust().access_guard().check(
        policy,
        identity,
        SM_OPERATION,
        &description.name,
        &description.arn,
        now_secs(),
    ) {
        Ok(()) => Ok(None),
        Err(err) => Ok(Some(format!("the secret's access policy: {err}"))),
    }
}

async fn seal_envelope(
    arca: &Arca,
    session: &Session,
    read: u32,
    value: &[u8],
    delivery: &Delivery<'_>,
    split: Option<&SplitPolicy>,
) -> Result<SignedEnvelope, ZtError> {
    let signer = if session.signed {
        Some(arca.zerotrust().signing_key().await?)
    } else {
        None
    };
    let header = Header {
        distribution_id: &session.id,
        read,
        secret: &session.secret,
        recipient: &session.principal,
        issued_at: now_secs(),
        measures: StatedMeasures {
            expires_at: session.expires_at,
            max_uses: session.max_uses,
            zones: session.zones.clone(),
            forward_secrecy: !matches!(delivery, Delivery::Plain),
            split: split.map(|p| StatedSplit {
                threshold: p.threshold,
                recipients: p.recipients.iter().map(|(n, _)| n.clone()).collect(),
            }),
            signed: session.signed,
        },
    };
    envelope::build(header, value, delivery, signer.as_ref())
}

/// A later read of session `id`, sealed to `ephemeral_key`.
///
/// The caller must be the session's principal (verified as at the fetch), from one of its
/// zones when it is zone-restricted, before its expiry, with a use left; the role must still
/// exist and the caller's policies must still grant read. Every read, refused or not, is
/// audited.
///
/// # Errors
/// As [`fetch`]; a refused read is an `Ok` with a DENY decision.
pub async fn read(
    arca: &Arca,
    credentials: &Credentials,
    id: &str,
    ephemeral_key: Option<RecipientKey>,
) -> Result<Distribution, ZtError> {
    let zt = arca.zerotrust();
    let now = now_secs();
    let principal = credentials.principal();
    let deny = |reason: String, session: Option<&Session>, network: Option<&NetworkContext>| {
        let decision = Decision {
            outcome: Outcome::Deny,
            risk: 100,
            contributions: vec![risk::Contribution {
                factor: "session".into(),
                points: 0,
                veto: true,
                reason: reason.clone(),
            }],
            step_up: Vec::new(),
        };
        zt.activity().denied(&principal, now);
        audit(
            arca,
            &AuditLine {
                operation: "zt:read",
                role: session.map(|s| s.role.as_str()),
                secret: session.map(|s| s.secret.as_str()),
                session: Some(id),
                principal: &principal,
                identities: &[],
                network,
                decision: Some(&decision),
                outcome: "DENY",
                reason: &reason,
                attestation: None,
            },
        )?;
        Ok::<_, ZtError>(Distribution {
            decision,
            attestation: None,
            session: session.cloned(),
            envelope: None,
            principal: principal.clone(),
        })
    };
    let Some(current) = zt.session(id).await? else {
        return deny(Refusal::NotFound.as_str().to_owned(), None, None);
    };
    let Some(role) = zt.role(&current.role).await? else {
        return deny(
            format!("role {} no longer exists", current.role),
            Some(&current),
            None,
        );
    };
    if current.forward_secrecy && !current.split && ephemeral_key.is_none() {
        return Err(bad(
            "this distribution is forward-secret: send ephemeral_public_key (X25519)",
        ));
    }
    let secret = SecretRef::parse(&current.secret)?;
    let (evidence, _) = gather(arca, &role, credentials, &secret).await?;
    let network = evidence.network.clone();
    let verified: Vec<String> = evidence
        .factors
        .iter()
        .map(|f| f.identity.clone())
        .collect();
    let spent = session::spend(zt.barrier(), id, now, |s| {
        if !verified.contains(&s.principal) && s.principal != principal {
            return Err(format!("the session belongs to {}", s.principal));
        }
        if let Some((kind, reason)) = evidence.failed.first() {
            return Err(format!("{}: {reason}", kind.as_str()));
        }
        if let Some(reason) = &evidence.acl_refused {
            return Err(reason.clone());
        }
        if !s.zones.is_empty() {
            let zone = network.as_ref().and_then(|n| n.zone.clone());
            if !zone.as_ref().is_some_and(|z| s.zones.contains(z)) {
                return Err(format!(
                    "reads are restricted to zone {}; this request is from {}",
                    s.zones.join(", "),
                    zone.unwrap_or_else(|| "no known zone".into())
                ));
            }
        }
        Ok(())
    })
    .await?;
    let before = match spent {
        Ok(session) => session,
        Err(SpendRefusal::Session(refusal)) => {
            return deny(
                refusal.as_str().to_owned(),
                Some(&current),
                network.as_ref(),
            );
        }
        Err(SpendRefusal::Check(reason)) => {
            return deny(reason, Some(&current), network.as_ref());
        }
    };
    let value = read_value(arca, &secret).await?;
    let split = role.split().cloned();
    let delivery = match (&split, &ephemeral_key) {
        (Some(policy), _) if before.split => Delivery::Split(policy),
        (_, Some(key)) => Delivery::Sealed(key),
        _ => Delivery::Plain,
    };
    let read_number = before.next_read();
    let envelope = seal_envelope(
        arca,
        &before,
        read_number,
        &value,
        &delivery,
        split.as_ref().filter(|_| before.split),
    )
    .await?;
    let mut after = before.clone();
    after.remaining_uses -= 1;
    let decision = Decision {
        outcome: Outcome::Permit,
        risk: before.risk,
        contributions: vec![risk::Contribution {
            factor: "session".into(),
            points: 0,
            veto: false,
            reason: format!(
                "read {read_number} of {} by {}, {} left",
                before.max_uses, before.principal, after.remaining_uses
            ),
        }],
        step_up: Vec::new(),
    };
    audit(
        arca,
        &AuditLine {
            operation: "zt:read",
            role: Some(&before.role),
            secret: Some(&before.secret),
            session: Some(id),
            principal: &principal,
            identities: &before.identities,
            network: network.as_ref(),
            decision: Some(&decision),
            outcome: "PERMIT",
            reason: "permitted",
            attestation: None,
        },
    )?;
    Ok(Distribution {
        decision,
        attestation: None,
        session: Some(after),
        envelope: Some(envelope),
        principal,
    })
}

/// One zero-trust audit line.
#[derive(Debug)]
pub(crate) struct AuditLine<'a> {
    pub operation: &'a str,
    pub role: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub session: Option<&'a str>,
    pub principal: &'a str,
    pub identities: &'a [String],
    pub network: Option<&'a NetworkContext>,
    pub decision: Option<&'a Decision>,
    pub outcome: &'a str,
    pub reason: &'a str,
    pub attestation: Option<&'a Verdict>,
}

/// Writes `line` to every audit device (nothing when none is enabled).
///
/// # Errors
/// [`ZtError::Audit`]: the caller must not distribute.
pub(crate) fn audit(arca: &Arca, line: &AuditLine<'_>) -> Result<(), ZtError> {
    if !arca.audit().is_enabled() {
        return Ok(());
    }
    let contributions: Vec<Value> = line
        .decision
        .map(|d| {
            d.contributions
                .iter()
                .map(|c| json!({"factor": c.factor, "points": c.points, "veto": c.veto, "reason": c.reason}))
                .collect()
        })
        .unwrap_or_default();
    let attestation: Value = line.attestation.map_or(Value::Null, |v| {
        Value::Array(
            v.checks
                .iter()
                .map(|c| json!({"check": c.name, "passed": c.passed, "points": c.points, "reason": c.reason}))
                .collect(),
        )
    });
    let mut entry = Map::new();
    entry.insert("type".into(), json!(EVENT_TYPE));
    entry.insert(
        "time".into(),
        json!(crate::server::vault::rfc3339(std::time::SystemTime::now())),
    );
    entry.insert(
        "zerotrust".into(),
        json!({
            "operation": line.operation,
            "role": line.role,
            "secret": line.secret,
            "session": line.session,
            "principal": line.principal,
            "identities": line.identities,
            "source": line.network.and_then(|n| n.source).map(|ip| ip.to_string()),
            "forwarded": line.network.is_some_and(|n| n.forwarded),
            "zone": line.network.and_then(|n| n.zone.clone()),
            "region": line.network.and_then(|n| n.region.clone()),
            "decision": line.outcome,
            "risk": line.decision.map(|d| d.risk),
            "reason": line.reason,
            "contributions": contributions,
            "attestation": attestation,
        }),
    );
    arca.audit().write(&entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {

    use zeroize::Zeroizing;

    use super::*;
    use crate::lifecycle::{AccessPolicy, CreateSecret, SecretValue};
    use crate::zerotrust::keys::RecipientSecret;
    use crate::zerotrust::role::RoleDefinition;

    async fn arca() -> Arca {
        crate::handle::test_support::unsealed_in_memory().await
    }

    fn credentials(policies: &[&str]) -> Credentials {
        let policies: Vec<String> = policies.iter().map(|p| (*p).to_owned()).collect();
        Credentials {
            token: Some(Ok(TokenCredential {
                accessor: "acc".into(),
                policies: policies.clone(),
                approle: Some("web".into()),
            })),
            access_key: Some(Ok(AccessKeyCredential {
                id: "AKIAEXAMPLE".into(),
                policies,
            })),
            peer: Some([127, 0, 0, 1].into()),
            ..Credentials::default()
        }
    }

    fn request(secret: &str, key: &RecipientSecret) -> FetchRequest {
        FetchRequest {
            role: "sm".into(),
            secret: SecretRef::parse(secret).unwrap(),
            ephemeral_key: Some(key.public().clone()),
            attestation: None,
            split_recipients: None,
        }
    }

    /// `sm://` references read a Secrets Manager secret's AWSCURRENT value, authorised as its
    /// AWS API authorises GetSecretValue, with the secret's own access policy applied.
    #[tokio::test]
    async fn secrets_manager_references() {
        let arca = arca().await;
        arca.policies()
            .put(
                "sm-read",
                r#"path "aws/secretsmanager/GetSecretValue" { capabilities = ["update"] }"#,
            )
            .await
            .unwrap();
        let scope = arca.secrets().default_scope();
        for (name, policy) in [
            ("prod/db", None),
            (
                "prod/batch",
                Some(AccessPolicy {
                    allowed_roles: vec!["batch".into()],
                    ..AccessPolicy::default()
                }),
            ),
        ] {
            scope
                .create(CreateSecret {
                    name: name.into(),
                    value: Some(SecretValue::String(Zeroizing::new(
                        r#"{"password": "s3cret-sm"}"#.to_owned(),
                    ))),
                    access_policy: policy,
                    ..CreateSecret::default()
                })
                .await
                .unwrap();
        }
        let definition: RoleDefinition = serde_json::from_value(serde_json::json!({
            "secrets": ["sm://prod/*"],
            "zones": [{"cidr": "127.0.0.0/8", "zone": "loopback"}],
        }))
        .unwrap();
        arca.zerotrust().put_role("sm", definition).await.unwrap();
        let key = RecipientSecret::generate().unwrap();

        let permitted = fetch(
            &arca,
            &credentials(&["sm-read"]),
            request("sm://prod/db#password", &key),
        )
        .await
        .unwrap();
        assert_eq!(permitted.decision.outcome, Outcome::Permit, "{permitted:?}");
        let signed = permitted.envelope.unwrap();
        let envelope = envelope::parse(&signed.bytes).unwrap();
        assert_eq!(envelope.secret, "sm://prod/db#password");
        assert_eq!(
            envelope::open(&envelope, Some(&key)).unwrap().as_slice(),
            b"s3cret-sm"
        );

        let whole = fetch(
            &arca,
            &credentials(&["sm-read"]),
            request("sm://prod/db", &key),
        )
        .await
        .unwrap();
        let envelope = envelope::parse(&whole.envelope.unwrap().bytes).unwrap();
        assert_eq!(
            envelope::open(&envelope, Some(&key)).unwrap().as_slice(),
            br#"{"password": "s3cret-sm"}"#
        );

        let refused = fetch(
            &arca,
            &credentials(&["default"]),
            request("sm://prod/db", &key),
        )
        .await
        .unwrap();
        assert_eq!(refused.decision.outcome, Outcome::Deny);
        assert!(
            refused
                .decision
                .summary()
                .contains("aws/secretsmanager/GetSecretValue")
        );

        let by_policy = fetch(
            &arca,
            &credentials(&["sm-read"]),
            request("sm://prod/batch", &key),
        )
        .await
        .unwrap();
        assert_eq!(by_policy.decision.outcome, Outcome::Deny);
        assert!(
            by_policy.decision.summary().contains("access policy"),
            "{}",
            by_policy.decision.summary()
        );

        let missing = fetch(
            &arca,
            &credentials(&["sm-read"]),
            request("sm://prod/none", &key),
        )
        .await;
        assert!(matches!(missing, Err(ZtError::NotFound(_))), "{missing:?}");
        assert!(SecretRef::parse("sm://").is_err());
        assert!(SecretRef::parse("sm://x#").is_err());
    }
}
