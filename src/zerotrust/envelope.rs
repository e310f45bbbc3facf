//! The distribution envelope: what a requester receives, signed by arca, and what `arca zt
//! verify`, `arca zt open-share` and `arca zt combine` read offline.
//!
//! The envelope is a JSON document ([`Envelope`]); arca signs its exact bytes (prefixed by
//! [`SIGNING_CONTEXT`]) with its Ed25519 key, and the answer carries the bytes in base64 beside
//! the signature, so verification needs no canonical form and any changed byte fails it. The
//! layout is specified in `FORMAT.md`.
//!
//! The value itself never appears in the clear in a sealed envelope. What is sealed (to the
//! requester's ephemeral key, or split and sealed to each recipient) is `salt ‖ value`, with a
//! fresh 32-byte salt; the envelope's `value_digest` is `SHA-256(salt ‖ value)`. The digest
//! thus commits arca to the value (non-repudiation: whoever opens it can show what arca sent
//! and arca's signature over it), yet tells nothing to someone holding only the envelope, not
//! even for a short value that could otherwise be guessed and hashed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use super::ZtError;
use super::keys::{
    ArcaSigningKey, HPKE_SUITE, OsRng, RecipientKey, RecipientSecret, decode_base64, seal,
};
use super::role::SplitPolicy;

/// The context string prefixed to the envelope's bytes before signing.
pub const SIGNING_CONTEXT: &[u8] = b"arca-zt-envelope-v1\0";
/// HPKE `info` prefix of a value sealed to the requester.
pub const VALUE_INFO: &[u8] = b"arca-zt-value-v1\0";
/// HPKE `info` prefix of a share sealed to a recipient.
pub const SHARE_INFO: &[u8] = b"arca-zt-share-v1\0";
/// The salt's length.
pub const SALT_LEN: usize = 32;

/// The measures as the envelope states them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatedMeasures {
    /// Unix seconds after which the distribution is refused.
    pub expires_at: u64,
    /// Reads allowed in all.
    pub max_uses: u32,
    /// Zones reads are allowed from (empty: any).
    pub zones: Vec<String>,
    /// Whether the value is sealed to an ephemeral key of the requester.
    pub forward_secrecy: bool,
    /// Split knowledge: T and the recipients' names.
    pub split: Option<StatedSplit>,
    /// Whether the envelope is signed.
    pub signed: bool,
}

/// Split knowledge as the envelope states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatedSplit {
    /// T.
    pub threshold: u8,
    /// The recipients, in share order.
    pub recipients: Vec<String>,
}

/// One share, sealed to its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    /// The recipient's name.
    pub recipient: String,
    /// HPKE `enc`, base64.
    pub enc: String,
    /// HPKE ciphertext, base64.
    pub ciphertext: String,
}

/// How the value travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// Sealed to the requester's ephemeral X25519 key.
    Hpke {
        /// [`HPKE_SUITE`].
        suite: String,
        /// HPKE `enc`, base64.
        enc: String,
        /// HPKE ciphertext of `salt ‖ value`, base64.
        ciphertext: String,
    },
    /// In the clear (only inside TLS, only when the role does not require forward secrecy).
    Plain {
        /// The salt, base64.
        salt: String,
        /// The value, base64.
        value: String,
    },
    /// Split into shares of `salt ‖ value`, each sealed to its recipient.
    Split {
        /// [`HPKE_SUITE`].
        suite: String,
        /// T.
        threshold: u8,
        /// One share per recipient.
        shares: Vec<SealedShare>,
    },
}

/// The signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Format version: 1.
    pub version: u32,
    /// The distribution (session) id.
    pub distribution_id: String,
    /// Which read of the distribution this is (1 for the first delivery).
    pub read: u32,
    /// The secret reference.
    pub secret: String,
    /// The principal it was distributed to.
    pub recipient: String,
    /// Unix seconds.
    pub issued_at: u64,
    /// The measures.
    pub measures: StatedMeasures,
    /// Hex of `SHA-256(salt ‖ value)`.
    pub value_digest: String,
    /// The value, sealed or split.
    pub payload: Payload,
}

/// An envelope as it travels: its bytes and arca's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    /// The envelope's JSON bytes.
    pub bytes: Vec<u8>,
    /// Ed25519 signature over [`SIGNING_CONTEXT`] ‖ bytes, when signed.
    pub signature: Option<[u8; 64]>,
    /// The signing key's id.
    pub key_id: Option<String>,
}

/// How a delivery is protected.
#[derive(Debug)]
pub(crate) enum Delivery<'a> {
    /// Sealed to the requester's key.
    Sealed(&'a RecipientKey),
    /// In the clear, inside TLS.
    Plain,
    /// Split among recipients.
    Split(&'a SplitPolicy),
}

/// The fields of an envelope other than the payload and digest.
#[derive(Debug)]
pub(crate) struct Header<'a> {
    pub distribution_id: &'a str,
    pub read: u32,
    pub secret: &'a str,
    pub recipient: &'a str,
    pub issued_at: u64,
    pub measures: StatedMeasures,
}

fn value_info(distribution_id: &str, read: u32) -> Vec<u8> {
    let mut info = VALUE_INFO.to_vec();
    info.extend_from_slice(distribution_id.as_bytes());
    info.push(0);
    info.extend_from_slice(read.to_string().as_bytes());
    info
}

fn share_info(distribution_id: &str, read: u32, recipient: &str) -> Vec<u8> {
    let mut info = SHARE_INFO.to_vec();
    info.extend_from_slice(distribution_id.as_bytes());
    info.push(0);
    info.extend_from_slice(read.to_string().as_bytes());
    info.push(0);
    info.extend_from_slice(recipient.as_bytes());
    info
}

fn digest(salted: &[u8]) -> String {
    hex::encode(Sha256::digest(salted))
}

/// Builds and signs an envelope of `value`.
pub(crate) fn build(
    header: Header<'_>,
    value: &[u8],
    delivery: &Delivery<'_>,
    signer: Option<&ArcaSigningKey>,
) -> Result<SignedEnvelope, ZtError> {
    let mut salted = Zeroizing::new(vec![0u8; SALT_LEN]);
    arca_storage::keys::fill_random(&mut salted).map_err(|_| ZtError::Random)?;
    salted.extend_from_slice(value);
    let value_digest = digest(&salted);
    let payload = match delivery {
        Delivery::Sealed(key) => {
            let sealed = seal(
                key,
                &value_info(header.distribution_id, header.read),
                &[],
                &salted,
            )?;
            Payload::Hpke {
                suite: HPKE_SUITE.to_owned(),
                enc: STANDARD.encode(&sealed.enc),
                ciphertext: STANDARD.encode(&sealed.ciphertext),
            }
        }
        Delivery::Plain => Payload::Plain {
            salt: STANDARD.encode(&salted[..SALT_LEN]),
            value: STANDARD.encode(value),
        },
        Delivery::Split(policy) => {
            let shares = split(&salted, policy)?;
            let mut sealed_shares = Vec::with_capacity(shares.len());
            for ((name, key), share) in policy.recipients.iter().zip(shares.iter()) {
                let sealed = seal(
                    key,
                    &share_info(header.distribution_id, header.read, name),
                    &[],
                    share,
                )?;
                sealed_shares.push(SealedShare {
                    recipient: name.clone(),
                    enc: STANDARD.encode(&sealed.enc),
                    ciphertext: STANDARD.encode(&sealed.ciphertext),
                });
            }
            Payload::Split {
                suite: HPKE_SUITE.to_owned(),
                threshold: policy.threshold,
                shares: sealed_shares,
            }
        }
    };
    let envelope = Envelope {
        version: 1,
        distribution_id: header.distribution_id.to_owned(),
        read: header.read,
        secret: header.secret.to_owned(),
        recipient: header.recipient.to_owned(),
        issued_at: header.issued_at,
        measures: header.measures,
        value_digest,
        payload,
    };
    let bytes = serde_json::to_vec(&envelope)
        .map_err(|e| ZtError::Internal(format!("cannot encode an envelope: {e}")))?;
    let (signature, key_id) = match signer {
        Some(key) => {
            let mut message = SIGNING_CONTEXT.to_vec();
            message.extend_from_slice(&bytes);
            (Some(key.sign(&message)), Some(key.key_id()))
        }
        None => (None, None),
    };
    Ok(SignedEnvelope {
        bytes,
        signature,
        key_id,
    })
}

/// Splits `secret` into one share per recipient of `policy` (vsss-rs, GF(256), byte-wise).
fn split(secret: &[u8], policy: &SplitPolicy) -> Result<Vec<Zeroizing<Vec<u8>>>, ZtError> {
    let n = policy.recipients.len();
    let mut rng = OsRng::default();
    let raw = Gf256::split_bytes(usize::from(policy.threshold), n, secret, &mut rng);
    let shares: Vec<Zeroizing<Vec<u8>>> = raw
        .map_err(|_| ZtError::InvalidRequest("secret sharing refused the parameters".into()))?
        .into_iter()
        .map(Zeroizing::new)
        .collect();
    if rng.failed {
        return Err(ZtError::Random);
    }
    if shares.len() != n {
        return Err(ZtError::Internal(
            "secret sharing returned the wrong count".into(),
        ));
    }
    Ok(shares)
}

/// Parses an envelope's bytes and checks arca's signature over them, offline.
///
/// # Errors
/// [`ZtError::BadSignature`] when the signature is missing or does not verify under
/// `public_key` (any changed byte); [`ZtError::InvalidRequest`] when the bytes are not an
/// envelope.
pub fn verify(
    bytes: &[u8],
    signature: Option<&[u8]>,
    public_key: &[u8; 32],
) -> Result<Envelope, ZtError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|_| ZtError::InvalidRequest("the signing key is not an Ed25519 key".into()))?;
    let signature = signature
        .and_then(|s| ed25519_dalek::Signature::from_slice(s).ok())
        .ok_or(ZtError::BadSignature)?;
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(bytes);
    key.verify_strict(&message, &signature)
        .map_err(|_| ZtError::BadSignature)?;
    parse(bytes)
}

/// Parses an envelope's bytes without checking a signature (for unsigned envelopes).
///
/// # Errors
/// [`ZtError::InvalidRequest`].
pub fn parse(bytes: &[u8]) -> Result<Envelope, ZtError> {
    serde_json::from_slice(bytes)
        .map_err(|_| ZtError::InvalidRequest("the bytes are not a zero-trust envelope".into()))
}

fn decode(field: &str, what: &str) -> Result<Vec<u8>, ZtError> {
    decode_base64(field).ok_or_else(|| ZtError::InvalidRequest(format!("{what} is not base64")))
}

/// The value of an envelope sealed to `key` (or in the clear), with its digest checked.
///
/// # Errors
/// [`ZtError::OpenFailed`] with the wrong key or a changed ciphertext; a digest that does not
/// match also reads as [`ZtError::OpenFailed`]; [`ZtError::InvalidRequest`] for a split
/// envelope (use [`open_share`] and [`combine`]).
pub fn open(
    envelope: &Envelope,
    key: Option<&RecipientSecret>,
) -> Result<Zeroizing<Vec<u8>>, ZtError> {
    let salted = match &envelope.payload {
        Payload::Hpke {
            enc, ciphertext, ..
        } => {
            let key = key.ok_or_else(|| {
                ZtError::InvalidRequest("the envelope is sealed: a private key is needed".into())
            })?;
            key.open(
                &decode(enc, "enc")?,
                &decode(ciphertext, "ciphertext")?,
                &value_info(&envelope.distribution_id, envelope.read),
                &[],
            )?
        }
        Payload::Plain { salt, value } => {
            let mut salted = Zeroizing::new(decode(salt, "salt")?);
            salted.extend_from_slice(&Zeroizing::new(decode(value, "value")?));
            salted
        }
        Payload::Split { .. } => {
            return Err(ZtError::InvalidRequest(
                "the envelope is split: open the shares and combine them".into(),
            ));
        }
    };
    unsalt(envelope, &salted)
}

fn unsalt(envelope: &Envelope, salted: &[u8]) -> Result<Zeroizing<Vec<u8>>, ZtError> {
    if salted.len() < SALT_LEN {
        return Err(ZtError::OpenFailed);
    }
    let computed = digest(salted);
    if !bool::from(computed.as_bytes().ct_eq(envelope.value_digest.as_bytes())) {
        return Err(ZtError::OpenFailed);
    }
    Ok(Zeroizing::new(salted[SALT_LEN..].to_vec()))
}

/// An opened share. Wiped on drop; `Debug` is redacted.
pub struct OpenedShare {
    /// The distribution it belongs to.
    pub distribution_id: String,
    /// Its bytes (identifier, then the share of `salt ‖ value`).
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for OpenedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenedShare({}, [REDACTED])", self.distribution_id)
    }
}

impl OpenedShare {
    /// The share as text to hand to whoever combines: `<distribution id>:<base64>`.
    #[must_use]
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{}:{}",
            self.distribution_id,
            STANDARD.encode(self.bytes.as_slice())
        ))
    }

    /// Parses [`OpenedShare::to_text`].
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`]; the message quotes nothing.
    pub fn from_text(text: &str) -> Result<Self, ZtError> {
        let (id, b64) = text.trim().split_once(':').ok_or_else(|| {
            ZtError::InvalidRequest("a share is <distribution id>:<base64>".into())
        })?;
        let bytes = Zeroizing::new(
            decode_base64(b64)
                .ok_or_else(|| ZtError::InvalidRequest("a share's bytes are not base64".into()))?,
        );
        if bytes.len() < 2 || bytes[0] == 0 {
            return Err(ZtError::InvalidRequest("a share is malformed".into()));
        }
        Ok(Self {
            distribution_id: id.to_owned(),
            bytes,
        })
    }
}

/// Opens the share of `recipient` with its private key.
///
/// # Errors
/// [`ZtError::InvalidRequest`] when the envelope is not split or names no such recipient;
/// [`ZtError::OpenFailed`] with another recipient's key or a changed byte.
pub fn open_share(
    envelope: &Envelope,
    recipient: &str,
    key: &RecipientSecret,
) -> Result<OpenedShare, ZtError> {
    let Payload::Split { shares, .. } = &envelope.payload else {
        return Err(ZtError::InvalidRequest("the envelope is not split".into()));
    };
    let share = shares
        .iter()
        .find(|s| s.recipient == recipient)
        .ok_or_else(|| {
            ZtError::InvalidRequest(format!("the envelope has no share for {recipient:?}"))
        })?;
    let bytes = key.open(
        &decode(&share.enc, "enc")?,
        &decode(&share.ciphertext, "ciphertext")?,
        &share_info(&envelope.distribution_id, envelope.read, recipient),
        &[],
    )?;
    Ok(OpenedShare {
        distribution_id: envelope.distribution_id.clone(),
        bytes,
    })
}

/// Recombines opened shares into the value, checked against the envelope's digest.
///
/// # Errors
/// [`ZtError::InvalidRequest`] with fewer than T shares, shares of another distribution or
/// repeated shares; [`ZtError::OpenFailed`] when the shares combine to something whose digest
/// is not the envelope's (a wrong or altered share).
pub fn combine(envelope: &Envelope, shares: &[OpenedShare]) -> Result<Zeroizing<Vec<u8>>, ZtError> {
    let Payload::Split { threshold, .. } = &envelope.payload else {
        return Err(ZtError::InvalidRequest("the envelope is not split".into()));
    };
    if shares
        .iter()
        .any(|s| s.distribution_id != envelope.distribution_id)
    {
        return Err(ZtError::InvalidRequest(
            "a share belongs to another distribution".into(),
        ));
    }
    if shares.len() < usize::from(*threshold) {
        return Err(ZtError::InvalidRequest(format!(
            "{} shares given; {threshold} are needed",
            shares.len()
        )));
    }
    let raw: Zeroizing<Vec<Vec<u8>>> =
        Zeroizing::new(shares.iter().map(|s| s.bytes.to_vec()).collect());
    let salted = Zeroizing::new(Gf256::combine_bytes(raw.as_slice()).map_err(|_| {
        ZtError::InvalidRequest("the shares cannot be combined (repeated or malformed)".into())
    })?);
    let mut raw = raw;
    for share in raw.iter_mut() {
        zeroize::Zeroize::zeroize(share);
    }
    unsalt(envelope, &salted)
}
