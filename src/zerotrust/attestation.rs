//! Workload attestation: one-time challenges and signed attestation documents.
//!
//! A workload asks `POST /v1/zt/challenge` for a nonce, has an attestor (a component that can
//! measure it: a TPM quote verifier, a confidential-computing report checker, a build
//! system's signer) sign a document naming that nonce, and presents the document with its
//! request. The format is specified in `FORMAT.md` beside this file; in short, the attestor
//! signs the exact bytes of a JSON document with Ed25519, prefixed by a context string, and the
//! request carries those bytes in base64, so no canonical form has to be agreed on: arca
//! verifies the bytes it received, then parses them.
//!
//! Each check gives its points and its reason, and the document passes only with all of them:
//!
//! | check | points | passes when |
//! |---|---|---|
//! | `signature` | 40 | the named attestor is registered for the role and its key verifies the signature (strict Ed25519) |
//! | `nonce` | 20 | arca issued the nonce, it has not expired, and this is its first use (consumed atomically) |
//! | `expiry` | 20 | `issued_at` ≤ now + 60 s, now < `expires_at`, and `expires_at − issued_at` ≤ 900 s |
//! | `platform`, `image_digest`, `measurement:<name>` | 20 together | each value is one the role allows; every measurement the role names is present |
//!
//! When the signature fails nothing else in the document is believed: the other checks report
//! "not evaluated", and the nonce is left unconsumed (so a forger who saw a nonce cannot burn
//! it).
//!
//! # Challenges
//!
//! A nonce is 32 random bytes in hex, stored at `zt/nonce/<nonce>` with its expiry
//! ([`NONCE_TTL_SECS`]) and indexed at `zt/nonce-expiry/<20-digit unix secs>/<nonce>`. Using one
//! is a compare-and-swap from the stored record to nothing, so of two requests presenting the
//! same nonce exactly one wins. Expired nonces are removed through the index, oldest first,
//! without reading any other record.

use std::collections::BTreeMap;

use arca_storage::keys::fill_random;
use arca_storage::{Barrier, BarrierOp};
use serde::Deserialize;

use super::role::Role;
use super::{ZtError, expiry_index_key};

/// How long a challenge nonce stays valid.
pub const NONCE_TTL_SECS: u64 = 300;
/// The largest attestation document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// The longest validity a document may claim (`expires_at − issued_at`).
pub const MAX_DOCUMENT_LIFETIME_SECS: u64 = 900;
/// How far in the future `issued_at` may be (clock skew between attestor and arca).
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;
/// The most measurements in one document.
pub const MAX_MEASUREMENTS: usize = 64;
/// The context string prefixed to a document's bytes before signing.
pub const SIGNING_CONTEXT: &[u8] = b"arca-zt-attestation-v1\0";

/// Where nonces live.
pub const NONCE_PREFIX: &str = "zt/nonce/";
/// The nonce expiry index.
pub const NONCE_EXPIRY_PREFIX: &str = "zt/nonce-expiry/";

/// An issued challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The nonce, 64 lower-case hex digits.
    pub nonce: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// A document as presented: still unverified.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The attestor the document names.
    pub attestor: String,
    /// The exact bytes the attestor signed (after the context string).
    pub document: Vec<u8>,
    /// The 64-byte Ed25519 signature.
    pub signature: Vec<u8>,
    /// The document, parsed (not yet believed).
    pub parsed: Document,
}

/// The attestation document (the JSON an attestor signs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Format version: 1.
    pub version: u32,
    /// The workload's identifier (a pod, a VM, a service instance).
    pub workload_id: String,
    /// The platform (`linux-amd64`, `sev-snp`, `tdx`, `nitro`, ...).
    pub platform: String,
    /// `sha256:<64 hex>` of the image or binary.
    pub image_digest: String,
    /// Named measurements (PCRs, launch digests), lower-case hex.
    #[serde(default)]
    pub measurements: BTreeMap<String, String>,
    /// The challenge nonce.
    pub nonce: String,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Whether `text` is lower-case hex of 1 to 64 bytes.
#[must_use]
pub fn is_hex_digest(text: &str) -> bool {
    (2..=128).contains(&text.len())
        && text.len().is_multiple_of(2)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `text` is `sha256:` and 64 lower-case hex digits.
#[must_use]
pub fn is_image_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && is_hex_digest(hex))
}

fn bad(message: impl Into<String>) -> ZtError {
    ZtError::InvalidRequest(message.into())
}

impl Presented {
    /// Decodes a presented attestation: `document` and `signature` in base64.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] (a 400: nothing is evaluated) when a field is missing or not
    /// base64, the signature is not 64 bytes, or the document is too large, not JSON, or not
    /// of the format (unknown or missing fields, a nonce, digest or measurement of the wrong
    /// form). The message quotes nothing of the input.
    pub fn decode(attestor: &str, document: &str, signature: &str) -> Result<Self, ZtError> {
        if attestor.is_empty() || attestor.len() > 128 {
            return Err(bad(
                "attestation.attestor must name the attestor (1 to 128 characters)",
            ));
        }
        let document = super::keys::decode_base64(document)
            .ok_or_else(|| bad("attestation.document must be base64"))?;
        if document.len() > MAX_DOCUMENT_BYTES {
            return Err(bad(format!(
                "attestation.document is larger than {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        let signature = super::keys::decode_base64(signature)
            .ok_or_else(|| bad("attestation.signature must be base64"))?;
        if signature.len() != 64 {
            return Err(bad(format!(
                "attestation.signature must be 64 bytes (Ed25519), not {}",
                signature.len()
            )));
        }
        let parsed: Document = serde_json::from_slice(&document).map_err(|err| {
            let message = err.to_string();
            let field =
                if message.starts_with("missing field") || message.starts_with("unknown field") {
                    message.split(" at line").next().unwrap_or("").to_owned()
                } else {
                    "a field has the wrong type".to_owned()
                };
            bad(format!("the attestation document is malformed: {field}"))
        })?;
        if parsed.version != 1 {
            return Err(bad("the attestation document's version must be 1"));
        }
        if parsed.workload_id.is_empty() || parsed.workload_id.len() > 256 {
            return Err(bad("workload_id must be 1 to 256 characters"));
        }
        if parsed.platform.is_empty() || parsed.platform.len() > 64 {
            return Err(bad("platform must be 1 to 64 characters"));
        }
        if !is_image_digest(&parsed.image_digest) {
            return Err(bad(
                "image_digest must be sha256:<64 lower-case hex digits>",
            ));
        }
        if parsed.measurements.len() > MAX_MEASUREMENTS {
            return Err(bad(format!("at most {MAX_MEASUREMENTS} measurements")));
        }
        if parsed
            .measurements
            .iter()
            .any(|(name, value)| name.is_empty() || name.len() > 64 || !is_hex_digest(value))
        {
            return Err(bad(
                "measurements are names of 1 to 64 characters with lower-case hex values",
            ));
        }
        if !is_nonce(&parsed.nonce) {
            return Err(bad("nonce must be 64 lower-case hex digits"));
        }
        Ok(Self {
            attestor: attestor.to_owned(),
            document,
            signature,
            parsed,
        })
    }
}

/// One check of an attestation, with its points and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `signature`, `nonce`, `expiry`, `platform`, `image_digest`, `measurement:<name>`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Points it earned (see the table in the module documentation).
    pub points: u32,
    /// Why it passed or failed.
    pub reason: String,
}

/// The verdict on one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The workload the document names (believed only when `passed`).
    pub workload_id: String,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Points earned, out of 100.
    pub trust_score: u32,
    /// Whether every check passed.
    pub passed: bool,
}

fn check(name: impl Into<String>, passed: bool, points: u32, reason: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed,
        points: if passed { points } else { 0 },
        reason: reason.into(),
    }
}

/// Verifies `presented` against `role` at unix time `now`, consuming its nonce when the
/// signature verifies.
///
/// # Errors
/// A storage failure while consuming the nonce; every verdict, passing or not, is `Ok`.
pub(crate) async fn verify(
    barrier: &Barrier,
    role: &Role,
    presented: &Presented,
    now: u64,
) -> Result<Verdict, ZtError> {
    let doc = &presented.parsed;
    let mut checks = Vec::new();
    let signature_ok = match role.attestor(&presented.attestor) {
        None => {
            checks.push(check(
                "signature",
                false,
                40,
                format!(
                    "attestor {:?} is not registered for role {}",
                    presented.attestor,
                    role.name()
                ),
            ));
            false
        }
        Some(key) => {
            let mut message = SIGNING_CONTEXT.to_vec();
            message.extend_from_slice(&presented.document);
            let ok = key.verifies(&message, &presented.signature);
            checks.push(check(
                "signature",
                ok,
                40,
                if ok {
                    format!("signed by attestor {:?}", presented.attestor)
                } else {
                    format!(
                        "the signature does not verify under attestor {:?}'s key",
                        presented.attestor
                    )
                },
            ));
            ok
        }
    };
    if !signature_ok {
        for name in ["nonce", "expiry", "workload"] {
            checks.push(check(
                name,
                false,
                20,
                "not evaluated: the signature did not verify",
            ));
        }
        return Ok(verdict(doc, checks));
    }
    let nonce = consume(barrier, &doc.nonce, now).await?;
    checks.push(match nonce {
        NonceState::Consumed => check("nonce", true, 20, "issued by arca, first use"),
        NonceState::Expired => check("nonce", false, 20, "the nonce has expired"),
        NonceState::Unknown => check(
            "nonce",
            false,
            20,
            "the nonce was never issued or was already used (replay)",
        ),
    });
    let expiry = if doc.issued_at > now + MAX_CLOCK_SKEW_SECS {
        check("expiry", false, 20, "issued_at is in the future")
    } else if doc.expires_at <= now {
        check("expiry", false, 20, "the document has expired")
    } else if doc.expires_at.saturating_sub(doc.issued_at) > MAX_DOCUMENT_LIFETIME_SECS {
        check(
            "expiry",
            false,
            20,
            format!("the document claims more than {MAX_DOCUMENT_LIFETIME_SECS} s of validity"),
        )
    } else {
        check(
            "expiry",
            true,
            20,
            format!("valid for {} more seconds", doc.expires_at - now),
        )
    };
    checks.push(expiry);
    let definition = role.definition();
    let mut workload = Vec::new();
    if !definition.platforms.is_empty() {
        let ok = definition.platforms.contains(&doc.platform);
        workload.push(check(
            "platform",
            ok,
            0,
            if ok {
                format!("platform {} is allowed", doc.platform)
            } else {
                format!("platform {} is not allowed", doc.platform)
            },
        ));
    }
    if !definition.image_digests.is_empty() {
        let ok = definition.image_digests.contains(&doc.image_digest);
        workload.push(check(
            "image_digest",
            ok,
            0,
            if ok {
                "the image digest is allowed"
            } else {
                "the image digest is not allowed"
            },
        ));
    }
    for (name, allowed) in &definition.measurements {
        let c = match doc.measurements.get(name) {
            None => check(
                format!("measurement:{name}"),
                false,
                0,
                "missing from the document",
            ),
            Some(value) if allowed.contains(value) => {
                check(format!("measurement:{name}"), true, 0, "an allowed value")
            }
            Some(_) => check(
                format!("measurement:{name}"),
                false,
                0,
                "not an allowed value",
            ),
        };
        workload.push(c);
    }
    let workload_ok = workload.iter().all(|c| c.passed);
    // The workload's 20 points go to its last check (or to a summary when the role constrains
    // nothing about the workload), so the points still add up to 100.
    if workload.is_empty() {
        workload.push(check(
            "workload",
            true,
            20,
            "the role constrains no platform, digest or measurement",
        ));
    } else if workload_ok && let Some(last) = workload.last_mut() {
        last.points = 20;
    }
    checks.extend(workload);
    Ok(verdict(doc, checks))
}

fn verdict(doc: &Document, checks: Vec<Check>) -> Verdict {
    let trust_score = checks.iter().map(|c| c.points).sum();
    let passed = checks.iter().all(|c| c.passed);
    Verdict {
        workload_id: doc.workload_id.clone(),
        checks,
        trust_score,
        passed,
    }
}

fn is_nonce(text: &str) -> bool {
    text.len() == 64 && is_hex_digest(text)
}

/// Issues a challenge valid for [`NONCE_TTL_SECS`].
///
/// # Errors
/// [`ZtError::Random`], [`ZtError::Sealed`], or a storage failure.
pub(crate) async fn issue(barrier: &Barrier, now: u64) -> Result<Challenge, ZtError> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes).map_err(|_| ZtError::Random)?;
    let nonce = hex::encode(bytes);
    let expires_at = now + NONCE_TTL_SECS;
    let record = expires_at.to_be_bytes();
    let path = format!("{NONCE_PREFIX}{nonce}");
    let index = expiry_index_key(NONCE_EXPIRY_PREFIX, expires_at, &nonce);
    barrier
        .batch(&[BarrierOp::Put(&path, &record), BarrierOp::Put(&index, &[])])
        .await?;
    Ok(Challenge { nonce, expires_at })
}

/// What happened to a presented nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceState {
    /// It was valid and is now used up.
    Consumed,
    /// It had expired (and is now removed).
    Expired,
    /// arca never issued it, or it was used already.
    Unknown,
}

/// Uses `nonce` once: exactly one of several concurrent callers gets
/// [`NonceState::Consumed`].
pub(crate) async fn consume(
    barrier: &Barrier,
    nonce: &str,
    now: u64,
) -> Result<NonceState, ZtError> {
    if !is_nonce(nonce) {
        return Ok(NonceState::Unknown);
    }
    let path = format!("{NONCE_PREFIX}{nonce}");
    let Some(stored) = barrier.get(&path).await? else {
        return Ok(NonceState::Unknown);
    };
    let expires_at = <[u8; 8]>::try_from(stored.expose_secret())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    if !barrier
        .compare_and_swap(&path, Some(stored.expose_secret()), None)
        .await?
    {
        return Ok(NonceState::Unknown);
    }
    // The nonce is gone; its index entry is now stale and the purge drops it.
    let index = expiry_index_key(NONCE_EXPIRY_PREFIX, expires_at, nonce);
    barrier.delete(&index).await?;
    if expires_at <= now {
        return Ok(NonceState::Expired);
    }
    Ok(NonceState::Consumed)
}
