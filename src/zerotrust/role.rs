//! Zero-trust roles: what a caller must prove, and what protects what it is given.
//!
//! A role is written as a [`RoleDefinition`] (JSON on `PUT /v1/zt/roles/<name>`, root or sudo
//! only) and stored as that JSON, one barrier record per role at `zt/role/<name>`, replaced in
//! one write. Every read parses it again into a [`Role`], whose keys, certificates and networks
//! are already decoded, so a definition that parsed once can never be half-valid later.
//!
//! Unknown fields are refused: a misspelt `required_factor` must not silently require nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arca_storage::Barrier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use super::ZtError;
use super::keys::{AttestorKey, RecipientKey};
use super::network::{TimeWindow, ZoneRule};
use crate::auth::cidr::Cidr;

/// Where roles live, behind the barrier.
pub const ROLE_PREFIX: &str = "zt/role/";

/// The longest role name.
pub const MAX_ROLE_NAME: usize = 128;
/// The most entries in any list of a role (factors, identities, secrets, zones, ...).
pub const MAX_LIST: usize = 256;
/// The largest client-CA bundle, in bytes of PEM.
pub const MAX_CA_BUNDLE_BYTES: usize = 256 * 1024;
/// The longest time-bound a role may give a distribution (one day).
pub const MAX_TTL_SECS: u64 = 86_400;
/// The most reads a usage limit may allow.
pub const MAX_USES: u32 = 1_000_000;
/// The most split recipients (vsss-rs shares over GF(256) have identifiers 1 to 255).
pub const MAX_SPLIT_RECIPIENTS: usize = 255;

/// An identity factor arca verifies itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// An arca token (`X-Vault-Token` or `Authorization: Bearer`).
    Token,
    /// A token issued by an AppRole login (it carries the role it logged in as).
    Approle,
    /// A SigV4 signature by an arca access key.
    Sigv4,
    /// A TLS client certificate that chains to the role's client-CA bundle.
    Mtls,
    /// A workload attestation document signed by one of the role's attestors.
    Attestation,
}

impl FactorKind {
    /// The name in roles, decisions and the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Approle => "approle",
            Self::Sigv4 => "sigv4",
            Self::Mtls => "mtls",
            Self::Attestation => "attestation",
        }
    }
}

/// Which part of a client certificate an identity rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertField {
    /// The subject's common name.
    SubjectCn,
    /// A DNS name of the subject alternative names.
    SanDns,
    /// A URI of the subject alternative names (a SPIFFE id, for example).
    SanUri,
    /// An e-mail address of the subject alternative names.
    SanEmail,
}

/// One subject/SAN → identity mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRule {
    /// The certificate field read.
    pub field: CertField,
    /// The value it must equal exactly.
    pub value: String,
    /// The identity a certificate matching it is (`cert:<identity>` in decisions).
    pub identity: String,
}

/// An attestor as a role registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestorDefinition {
    /// Its name; attestation documents name the attestor that signed them.
    pub name: String,
    /// Its Ed25519 public key: base64 of 32 bytes, or PEM.
    pub public_key: String,
}

/// A split recipient as a role registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientDefinition {
    /// Its name.
    pub name: String,
    /// Its X25519 public key: base64 of 32 bytes, or PEM.
    pub public_key: String,
}

/// Split knowledge: the value is split into one share per recipient, any `threshold` of which
/// recombine it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitDefinition {
    /// T: how many shares recombine the value (2 ≤ T ≤ N).
    pub threshold: u8,
    /// The N named recipients, each with its key.
    pub recipients: Vec<RecipientDefinition>,
}

/// The protective measures a role puts on every distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuresDefinition {
    /// Time-bound: the distribution is usable this many seconds (1 to 86400; default 300).
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Usage-limited: this many reads, the first delivery included (default 1).
    #[serde(default = "default_uses")]
    pub max_uses: u32,
    /// Zone-restricted: reads only from the zone of the request that created the distribution.
    #[serde(default)]
    pub zone_restricted: bool,
    /// Forward secrecy required: the requester must send an ephemeral X25519 key (default
    /// true). When false, a request without one gets the value in the clear inside TLS.
    #[serde(default = "default_true")]
    pub forward_secrecy: bool,
    /// Split knowledge, when set.
    #[serde(default)]
    pub split: Option<SplitDefinition>,
    /// Signed envelope: arca signs each distribution with its Ed25519 key (default true).
    #[serde(default = "default_true")]
    pub sign: bool,
}

fn default_ttl() -> u64 {
    300
}
fn default_uses() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

impl Default for MeasuresDefinition {
    fn default() -> Self {
        Self {
            ttl_secs: default_ttl(),
            max_uses: default_uses(),
            zone_restricted: false,
            forward_secrecy: true,
            split: None,
            sign: true,
        }
    }
}

/// A role as written (and stored). See the README's zero-trust section for each field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RoleDefinition {
    /// Factors a caller must present, all of them (missing ones: STEP_UP).
    #[serde(default)]
    pub required_factors: Vec<FactorKind>,
    /// When non-empty, one of the caller's verified identities must be listed
    /// (`approle:<role>`, `token:<accessor>`, `access-key:<id>`, `cert:<identity>`).
    #[serde(default)]
    pub allowed_identities: Vec<String>,
    /// The secrets the role distributes: `kv://<mount>/<path>` or `sm://<name>`, a `*` at the
    /// end matching any suffix. Empty: none.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// PEM bundle of the CA certificates client certificates must chain to.
    #[serde(default)]
    pub client_ca_pem: Option<String>,
    /// Certificate subject/SAN → identity; a certificate that matches no rule is refused.
    #[serde(default)]
    pub identity_map: Vec<IdentityRule>,
    /// Attestors whose signatures the role accepts.
    #[serde(default)]
    pub attestors: Vec<AttestorDefinition>,
    /// Required measurements: name → allowed lower-case hex values.
    #[serde(default)]
    pub measurements: BTreeMap<String, Vec<String>>,
    /// Allowed platforms (empty: any).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Allowed image digests, `sha256:<hex>` (empty: any).
    #[serde(default)]
    pub image_digests: Vec<String>,
    /// Networks: CIDR → zone and region (the longest prefix wins).
    #[serde(default)]
    pub zones: Vec<ZoneRule>,
    /// Zones requests may come from (empty: any, unknown networks included).
    #[serde(default)]
    pub allowed_zones: Vec<String>,
    /// Regions requests may come from (empty: any).
    #[serde(default)]
    pub allowed_regions: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The allowed time window (UTC), when limited.
    #[serde(default)]
    pub time_window: Option<TimeWindow>,
    /// The most requests per principal per minute (0 or absent: 60).
    #[serde(default)]
    pub max_requests_per_minute: Option<u32>,
    /// The protective measures.
    #[serde(default)]
    pub measures: MeasuresDefinition,
}

/// A parsed split policy.
#[derive(Debug, Clone)]
pub struct SplitPolicy {
    /// T.
    pub threshold: u8,
    /// Name → key, in the role's order.
    pub recipients: Vec<(String, RecipientKey)>,
}

/// A parsed, valid role.
#[derive(Debug, Clone)]
pub struct Role {
    name: String,
    definition: RoleDefinition,
    client_cas: Vec<CertificateDer<'static>>,
    attestors: Vec<(String, AttestorKey)>,
    zones: Vec<(Cidr, ZoneRule)>,
    proxies: Vec<Cidr>,
    split: Option<SplitPolicy>,
}

fn bad(message: impl Into<String>) -> ZtError {
    ZtError::InvalidRequest(message.into())
}

/// Checks a role name: 1 to 128 characters of `A-Za-z0-9._-`.
///
/// # Errors
/// [`ZtError::InvalidRequest`].
pub fn check_name(name: &str) -> Result<(), ZtError> {
    if name.is_empty()
        || name.len() > MAX_ROLE_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || name.starts_with('.')
    {
        return Err(bad(
            "a role name is 1 to 128 characters of letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

fn check_list<T>(list: &[T], what: &str) -> Result<(), ZtError> {
    if list.len() > MAX_LIST {
        return Err(bad(format!("{what}: at most {MAX_LIST} entries")));
    }
    Ok(())
}

impl Role {
    /// Parses and checks `definition` as role `name`.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] naming the first problem: a malformed key, CA bundle, CIDR,
    /// measurement or time window, a threshold above the number of recipients, a requirement
    /// the role cannot meet (mTLS without a CA bundle, attestation without attestors).
    pub fn parse(name: &str, definition: RoleDefinition) -> Result<Self, ZtError> {
        check_name(name)?;
        let d = &definition;
        check_list(&d.required_factors, "required_factors")?;
        check_list(&d.allowed_identities, "allowed_identities")?;
        check_list(&d.secrets, "secrets")?;
        check_list(&d.identity_map, "identity_map")?;
        check_list(&d.attestors, "attestors")?;
        check_list(&d.platforms, "platforms")?;
        check_list(&d.image_digests, "image_digests")?;
        check_list(&d.zones, "zones")?;
        check_list(&d.allowed_zones, "allowed_zones")?;
        check_list(&d.allowed_regions, "allowed_regions")?;
        check_list(&d.trusted_proxies, "trusted_proxies")?;
        if d.measurements.len() > MAX_LIST {
            return Err(bad(format!("measurements: at most {MAX_LIST} entries")));
        }
        for secret in &d.secrets {
            super::distribute::SecretPattern::parse(secret)?;
        }
        let client_cas = match &d.client_ca_pem {
            None => Vec::new(),
            Some(pem) => parse_ca_bundle(pem)?,
        };
        for rule in &d.identity_map {
            if rule.value.is_empty() || rule.identity.is_empty() {
                return Err(bad("identity_map: value and identity must not be empty"));
            }
        }
        let mut attestors = Vec::new();
        let mut seen = BTreeSet::new();
        for attestor in &d.attestors {
            if attestor.name.is_empty() || !seen.insert(attestor.name.clone()) {
                return Err(bad("attestors: names must be non-empty and distinct"));
            }
            let key = AttestorKey::parse(
                &attestor.public_key,
                &format!("the public key of attestor {:?}", attestor.name),
            )?;
            attestors.push((attestor.name.clone(), key));
        }
        for (measurement, values) in &d.measurements {
            if measurement.is_empty() || measurement.len() > 64 {
                return Err(bad("a measurement name is 1 to 64 characters"));
            }
            if values.is_empty() {
                return Err(bad(format!(
                    "measurement {measurement:?} allows no value: list at least one"
                )));
            }
            for value in values {
                if !super::attestation::is_hex_digest(value) {
                    return Err(bad(format!(
                        "measurement {measurement:?}: values are lower-case hex, 2 to 128 digits"
                    )));
                }
            }
        }
        for digest in &d.image_digests {
            if !super::attestation::is_image_digest(digest) {
                return Err(bad("image_digests are sha256:<64 lower-case hex digits>"));
            }
        }
        let mut zones = Vec::new();
        for zone in &d.zones {
            let cidr = Cidr::parse(&zone.cidr).map_err(bad)?;
            if zone.zone.is_empty() {
                return Err(bad("zones: every network needs a zone name"));
            }
            zones.push((cidr, zone.clone()));
        }
        let proxies = d
            .trusted_proxies
            .iter()
            .map(|p| Cidr::parse(p).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(window) = &d.time_window {
            window.check()?;
        }
        if d.max_requests_per_minute.is_some_and(|n| n > 100_000) {
            return Err(bad("max_requests_per_minute: at most 100000"));
        }
        let m = &d.measures;
        if m.ttl_secs == 0 || m.ttl_secs > MAX_TTL_SECS {
            return Err(bad(format!(
                "measures.ttl_secs must be 1 to {MAX_TTL_SECS}"
            )));
        }
        if m.max_uses == 0 || m.max_uses > MAX_USES {
            return Err(bad(format!("measures.max_uses must be 1 to {MAX_USES}")));
        }
        let split = match &m.split {
            None => None,
            Some(split) => Some(parse_split(split)?),
        };
        if d.required_factors.contains(&FactorKind::Mtls) && client_cas.is_empty() {
            return Err(bad("the role requires mtls but has no client_ca_pem"));
        }
        if d.required_factors.contains(&FactorKind::Attestation) && attestors.is_empty() {
            return Err(bad(
                "the role requires attestation but registers no attestor",
            ));
        }
        if m.zone_restricted && zones.is_empty() {
            return Err(bad("measures.zone_restricted needs zones to restrict to"));
        }
        Ok(Self {
            name: name.to_owned(),
            definition,
            client_cas,
            attestors,
            zones,
            proxies,
            split,
        })
    }

    /// The role's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition it was parsed from.
    #[must_use]
    pub fn definition(&self) -> &RoleDefinition {
        &self.definition
    }

    /// The client-CA certificates.
    #[must_use]
    pub fn client_cas(&self) -> &[CertificateDer<'static>] {
        &self.client_cas
    }

    /// The attestor named `name`.
    #[must_use]
    pub fn attestor(&self, name: &str) -> Option<&AttestorKey> {
        self.attestors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, key)| key)
    }

    /// Whether the role registers any attestor.
    #[must_use]
    pub fn has_attestors(&self) -> bool {
        !self.attestors.is_empty()
    }

    /// The networks, parsed.
    #[must_use]
    pub fn zones(&self) -> &[(Cidr, ZoneRule)] {
        &self.zones
    }

    /// The trusted proxies.
    #[must_use]
    pub fn trusted_proxies(&self) -> &[Cidr] {
        &self.proxies
    }

    /// The split policy, parsed.
    #[must_use]
    pub fn split(&self) -> Option<&SplitPolicy> {
        self.split.as_ref()
    }

    /// The request budget per principal per minute.
    #[must_use]
    pub fn rate_limit(&self) -> u32 {
        match self.definition.max_requests_per_minute {
            None | Some(0) => 60,
            Some(n) => n,
        }
    }
}

fn parse_split(split: &SplitDefinition) -> Result<SplitPolicy, ZtError> {
    let n = split.recipients.len();
    if n > MAX_SPLIT_RECIPIENTS {
        return Err(bad(format!(
            "measures.split: at most {MAX_SPLIT_RECIPIENTS} recipients"
        )));
    }
    if split.threshold < 2 {
        return Err(bad(
            "measures.split.threshold must be at least 2 (a threshold of 1 hands out copies)",
        ));
    }
    if usize::from(split.threshold) > n {
        return Err(bad(format!(
            "measures.split.threshold ({}) is above the number of recipients ({n})",
            split.threshold
        )));
    }
    let mut seen = BTreeSet::new();
    let mut recipients = Vec::with_capacity(n);
    for recipient in &split.recipients {
        if recipient.name.is_empty() || recipient.name.len() > 128 || !seen.insert(&recipient.name)
        {
            return Err(bad(
                "measures.split.recipients: names must be 1 to 128 characters and distinct",
            ));
        }
        let key = RecipientKey::parse(
            &recipient.public_key,
            &format!("the public key of recipient {:?}", recipient.name),
        )?;
        recipients.push((recipient.name.clone(), key));
    }
    Ok(SplitPolicy {
        threshold: split.threshold,
        recipients,
    })
}

/// Parses a PEM bundle of CA certificates; each must parse as X.509 and be a CA.
fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, ZtError> {
    if pem.len() > MAX_CA_BUNDLE_BYTES {
        return Err(bad(format!(
            "client_ca_pem: at most {MAX_CA_BUNDLE_BYTES} bytes"
        )));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("client_ca_pem is not a PEM bundle of certificates"))?;
    if certs.is_empty() {
        return Err(bad("client_ca_pem holds no certificate"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|_| bad("client_ca_pem holds a certificate that is not a usable CA"))?;
    }
    Ok(certs)
}

/// Reads role `name`.
pub(crate) async fn load(barrier: &Barrier, name: &str) -> Result<Option<Role>, ZtError> {
    check_name(name)?;
    let Some(stored) = barrier.get(&format!("{ROLE_PREFIX}{name}")).await? else {
        return Ok(None);
    };
    let definition: RoleDefinition = serde_json::from_slice(stored.expose_secret())
        .map_err(|_| ZtError::Internal(format!("the stored zero-trust role {name} is damaged")))?;
    Role::parse(name, definition)
        .map(Some)
        .map_err(|_| ZtError::Internal(format!("the stored zero-trust role {name} is damaged")))
}

/// Writes a parsed role (one record, one write).
pub(crate) async fn store(barrier: &Barrier, role: &Role) -> Result<(), ZtError> {
    let bytes = serde_json::to_vec(role.definition())
        .map_err(|e| ZtError::Internal(format!("cannot encode a role: {e}")))?;
    barrier
        .put(&format!("{ROLE_PREFIX}{}", role.name()), &bytes)
        .await?;
    Ok(())
}

/// Every role's name, sorted.
pub(crate) async fn list(barrier: &Barrier) -> Result<Vec<String>, ZtError> {
    Ok(barrier
        .list(ROLE_PREFIX)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(ROLE_PREFIX).map(str::to_owned))
        .collect())
}

/// Every role, parsed (for the TLS layer's union of client CAs).
pub(crate) async fn all(barrier: &Barrier) -> Result<Vec<Arc<Role>>, ZtError> {
    let mut roles = Vec::new();
    for name in list(barrier).await? {
        if let Some(role) = load(barrier, &name).await? {
            roles.push(Arc::new(role));
        }
    }
    Ok(roles)
}
