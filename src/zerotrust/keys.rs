//! The keys of zero-trust distribution and the one public-key construction every delivery uses.
//!
//! - **Recipient keys** are X25519 public keys: a requester's ephemeral key (forward secrecy) or
//!   a split recipient's registered key. They are accepted as 32 raw bytes in base64 (standard
//!   or URL-safe, padded or not) or as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) whose algorithm
//!   is X25519 (OID 1.3.101.110). Any other length, and any SubjectPublicKeyInfo of another
//!   algorithm (Ed25519, P-256, RSA, ...), is refused by name: a key of the wrong curve is an
//!   error, never reinterpreted.
//! - **Attestor keys** are Ed25519 public keys, in the same two forms (OID 1.3.101.112); a
//!   point that does not decode is refused.
//! - **Sealing** is HPKE (RFC 9180) in base mode with the suite DHKEM(X25519, HKDF-SHA256),
//!   HKDF-SHA256, ChaCha20-Poly1305 (KEM 0x0020, KDF 0x0001, AEAD 0x0003), through the `hpke`
//!   crate. The sender's ephemeral X25519 key is generated for one message and dropped, so a
//!   recorded message can be opened only with the recipient's private key; when that key is
//!   itself ephemeral (held by `arca zt fetch` in memory only), nothing that outlives the
//!   exchange can open it. `info` and `aad` bind each message to its distribution (see
//!   `FORMAT.md`).
//! - **arca's signing key** is an Ed25519 key generated on first use and kept behind the
//!   barrier at [`SIGNING_KEY_PATH`]; its public half is published at `/v1/zt/signing-key`.

use std::convert::Infallible;
use std::fmt;

use arca_storage::Barrier;
use arca_storage::keys::fill_random;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::ZtError;

/// Where arca's Ed25519 signing seed lives, behind the barrier.
pub const SIGNING_KEY_PATH: &str = "zt/signing-key";

/// The HPKE suite's name, as envelopes carry it.
pub const HPKE_SUITE: &str = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/ChaCha20Poly1305";

/// The DER of the X25519 algorithm identifier's OID, 1.3.101.110.
const OID_X25519: &str = "1.3.101.110";
/// The OID of Ed25519, 1.3.101.112.
const OID_ED25519: &str = "1.3.101.112";

/// An X25519 public key a value can be sealed to. Public: `Debug` shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RecipientKey([u8; 32]);

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientKey({})", STANDARD.encode(self.0))
    }
}

impl RecipientKey {
    /// Parses a key given as base64 of 32 raw bytes or as a PEM SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] naming what is wrong (length, algorithm, encoding); the
    /// message quotes no input.
    pub fn parse(text: &str, what: &str) -> Result<Self, ZtError> {
        let raw = parse_public_key(text, OID_X25519, "X25519", what)?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            ZtError::InvalidRequest(format!(
                "{what} must be an X25519 public key of 32 bytes, not {} bytes",
                raw.len()
            ))
        })?;
        // Refuse keys HPKE would refuse (the all-zero shared secret of a low-order point) now,
        // at parse time, so a bad key is a 400 and not a failure half-way through a delivery.
        let key = Self(bytes);
        let pk = key.hpke_key()?;
        let mut rng = OsRng::default();
        let encapsulated = X25519HkdfSha256::encap_with_rng(&pk, None, &mut rng);
        if rng.failed {
            return Err(ZtError::Random);
        }
        if encapsulated.is_err() {
            return Err(ZtError::InvalidRequest(format!(
                "{what} is not a usable X25519 public key (a low-order point)"
            )));
        }
        Ok(key)
    }

    /// The key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Standard base64 of the 32 bytes.
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn hpke_key(&self) -> Result<<X25519HkdfSha256 as hpke::Kem>::PublicKey, ZtError> {
        <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&self.0)
            .map_err(|_| ZtError::InvalidRequest("not an X25519 public key".into()))
    }
}

/// An X25519 private key (a requester's ephemeral key, or a split recipient's key). Wiped on
/// drop; `Debug` is redacted; never serialized by this crate except on the holder's request.
pub struct RecipientSecret {
    sk: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    pk: RecipientKey,
}

impl fmt::Debug for RecipientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecipientSecret([REDACTED])")
    }
}

impl RecipientSecret {
    /// A fresh key pair from the OS generator (RFC 9180 `DeriveKeyPair` over 32 random bytes).
    ///
    /// # Errors
    /// [`ZtError::Random`] when the OS generator fails.
    pub fn generate() -> Result<Self, ZtError> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        fill_random(ikm.as_mut()).map_err(|_| ZtError::Random)?;
        Ok(Self::derive(ikm.as_slice()))
    }

    fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = X25519HkdfSha256::derive_keypair(ikm);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&pk.to_bytes());
        Self {
            sk,
            pk: RecipientKey(bytes),
        }
    }

    /// The key from its 32 private bytes (an X25519 scalar, clamped by X25519 itself).
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] when the bytes are not 32.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZtError> {
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(bytes)
            .map_err(|_| ZtError::InvalidRequest("an X25519 private key is 32 bytes".into()))?;
        let pk_bytes = X25519HkdfSha256::sk_to_pk(&sk).to_bytes();
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&pk_bytes);
        Ok(Self {
            sk,
            pk: RecipientKey(pk),
        })
    }

    /// The private key's 32 bytes, for the holder to store (`arca zt keygen`).
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.sk.to_bytes().to_vec())
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> &RecipientKey {
        &self.pk
    }

    /// Opens a message sealed to this key with [`seal`] under the same `info` and `aad`.
    ///
    /// # Errors
    /// [`ZtError::OpenFailed`]: the wrong key, another `info`/`aad`, or a changed byte. One
    /// variant: the cause is not told.
    pub fn open(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ZtError> {
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|_| ZtError::OpenFailed)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.sk,
            &enc,
            info,
            ciphertext,
            aad,
        )
        .map(Zeroizing::new)
        .map_err(|_| ZtError::OpenFailed)
    }
}

/// One HPKE message: the encapsulated key and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The sender's ephemeral public key (`enc`), 32 bytes.
    pub enc: Vec<u8>,
    /// The AEAD ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` to `recipient` (HPKE base mode, one shot).
///
/// # Errors
/// [`ZtError::Random`] when the OS generator fails; [`ZtError::InvalidRequest`] for a key
/// HPKE refuses.
pub fn seal(
    recipient: &RecipientKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, ZtError> {
    let pk = recipient.hpke_key()?;
    let mut rng = OsRng::default();
    let result = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
        &mut rng,
    );
    if rng.failed {
        return Err(ZtError::Random);
    }
    let (enc, ciphertext) = result.map_err(|_| {
        ZtError::InvalidRequest("the recipient key is not a usable X25519 public key".into())
    })?;
    Ok(Sealed {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// An Ed25519 public key of an attestor. Public: `Debug` shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestorKey(VerifyingKey);

impl fmt::Debug for AttestorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttestorKey({})", self.to_base64())
    }
}

impl AttestorKey {
    /// Parses an Ed25519 public key given as base64 of 32 bytes or as a PEM
    /// SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] naming the problem.
    pub fn parse(text: &str, what: &str) -> Result<Self, ZtError> {
        let raw = parse_public_key(text, OID_ED25519, "Ed25519", what)?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            ZtError::InvalidRequest(format!(
                "{what} must be an Ed25519 public key of 32 bytes, not {} bytes",
                raw.len()
            ))
        })?;
        VerifyingKey::from_bytes(&bytes).map(Self).map_err(|_| {
            ZtError::InvalidRequest(format!("{what} is not a valid Ed25519 public key"))
        })
    }

    /// Standard base64 of the 32 bytes.
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// Whether `signature` is this key's strict Ed25519 signature of `message`.
    #[must_use]
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(message, &signature).is_ok()
    }
}

/// Decodes a public key: base64 of raw bytes, or a PEM `PUBLIC KEY` whose algorithm OID must
/// be `oid`.
fn parse_public_key(text: &str, oid: &str, name: &str, what: &str) -> Result<Vec<u8>, ZtError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
            .map_err(|_| ZtError::InvalidRequest(format!("{what} is not a readable PEM block")))?;
        if pem.label != "PUBLIC KEY" {
            return Err(ZtError::InvalidRequest(format!(
                "{what} must be a PEM PUBLIC KEY, not {}",
                pem.label
            )));
        }
        let (_, spki) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
                '_,
                x509_parser::error::X509Error,
            >>::from_der(&pem.contents)
            .map_err(|_| {
                ZtError::InvalidRequest(format!("{what} is not a SubjectPublicKeyInfo"))
            })?;
        let found = spki.algorithm.algorithm.to_id_string();
        if found != oid {
            return Err(ZtError::InvalidRequest(format!(
                "{what} is a key of algorithm {found}, not {name} ({oid})"
            )));
        }
        return Ok(spki.subject_public_key.data.to_vec());
    }
    decode_base64(text).ok_or_else(|| {
        ZtError::InvalidRequest(format!(
            "{what} must be base64 of the raw {name} key or a PEM PUBLIC KEY"
        ))
    })
}

/// Standard or URL-safe base64, padded or not.
#[must_use]
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// arca's signing key, read from (or created in) the barrier. Wiped on drop.
pub struct ArcaSigningKey(SigningKey);

impl fmt::Debug for ArcaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArcaSigningKey(public {}, [REDACTED])", self.key_id())
    }
}

impl ArcaSigningKey {
    /// Reads the key, creating it on first use (compare-and-swap on an absent record, so two
    /// servers or requests racing to create it end with one key).
    ///
    /// # Errors
    /// [`ZtError::Sealed`], [`ZtError::Random`], or a storage failure.
    pub(crate) async fn load_or_create(barrier: &Barrier) -> Result<Self, ZtError> {
        loop {
            if let Some(stored) = barrier.get(SIGNING_KEY_PATH).await? {
                let seed: [u8; 32] = stored.expose_secret().try_into().map_err(|_| {
                    ZtError::Internal("the stored zero-trust signing key is damaged".into())
                })?;
                let seed = Zeroizing::new(seed);
                return Ok(Self(SigningKey::from_bytes(&seed)));
            }
            let mut seed = Zeroizing::new([0u8; 32]);
            fill_random(seed.as_mut()).map_err(|_| ZtError::Random)?;
            if barrier
                .compare_and_swap(SIGNING_KEY_PATH, None, Some(seed.as_slice()))
                .await?
            {
                return Ok(Self(SigningKey::from_bytes(&seed)));
            }
        }
    }

    /// Signs `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The public key's 32 bytes.
    #[must_use]
    pub fn public_bytes(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The key id: the first 16 hex digits of SHA-256 of the public key.
    #[must_use]
    pub fn key_id(&self) -> String {
        key_id(&self.public_bytes())
    }
}

/// The id of an Ed25519 public key: the first 16 hex digits of its SHA-256.
#[must_use]
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// A `rand_core` generator over the OS CSPRNG for `hpke` and `vsss-rs`, which want an
/// infallible one. A failure is recorded (and zeros handed out); every caller checks `failed`
/// and throws the result away, so nothing drawn from a failed generator leaves this module
/// (the seal's Shamir split does the same).
#[derive(Default)]
pub(crate) struct OsRng {
    pub(crate) failed: bool,
}

impl OsRng {
    fn fill(&mut self, dst: &mut [u8]) {
        if fill_random(dst).is_err() {
            self.failed = true;
            dst.fill(0);
        }
    }
}

impl rand_core::TryRng for OsRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for OsRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_recipient_key_and_context() {
        let alice = RecipientSecret::generate().unwrap();
        let bob = RecipientSecret::generate().unwrap();
        let sealed = seal(alice.public(), b"info", b"aad", b"hunter2").unwrap();
        assert_eq!(
            alice
                .open(&sealed.enc, &sealed.ciphertext, b"info", b"aad")
                .unwrap()
                .as_slice(),
            b"hunter2"
        );
        assert!(
            bob.open(&sealed.enc, &sealed.ciphertext, b"info", b"aad")
                .is_err()
        );
        assert!(
            alice
                .open(&sealed.enc, &sealed.ciphertext, b"other", b"aad")
                .is_err()
        );
        assert!(
            alice
                .open(&sealed.enc, &sealed.ciphertext, b"info", b"x")
                .is_err()
        );
        let mut flipped = sealed.ciphertext.clone();
        flipped[0] ^= 1;
        assert!(alice.open(&sealed.enc, &flipped, b"info", b"aad").is_err());
        assert_eq!(format!("{alice:?}"), "RecipientSecret([REDACTED])");
    }

    /// RFC 9180 appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305,
    /// base mode, sequence number 0: the recipient's key, `enc`, `info`, `aad` and the
    /// ciphertext of the first message.
    #[test]
    fn opens_the_rfc_9180_known_answer() {
        let sk_r = hex::decode("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
            .unwrap();
        let enc = hex::decode("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
            .unwrap();
        let info = hex::decode("4f6465206f6e2061204772656369616e2055726e").unwrap();
        let aad = hex::decode("436f756e742d30").unwrap();
        let ct = hex::decode(
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
        )
        .unwrap();
        let key = RecipientSecret::from_bytes(&sk_r).unwrap();
        assert_eq!(
            hex::encode(key.public().as_bytes()),
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
        );
        let pt = key.open(&enc, &ct, &info, &aad).unwrap();
        assert_eq!(pt.as_slice(), b"Beauty is truth, truth beauty");
    }

    #[test]
    fn keys_of_the_wrong_length_or_curve_are_refused() {
        let good = RecipientSecret::generate().unwrap();
        assert!(RecipientKey::parse(&good.public().to_base64(), "key").is_ok());
        let short = STANDARD.encode([7u8; 31]);
        let err = RecipientKey::parse(&short, "key").unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
        // A P-256 public key in a SubjectPublicKeyInfo: the right form, the wrong curve.
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = RecipientKey::parse(&p256.public_key_pem(), "key")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not X25519"), "{err}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(AttestorKey::parse(&ed.public_key_pem(), "attestor").is_ok());
        assert!(RecipientKey::parse(&ed.public_key_pem(), "key").is_err());
        // The all-zero point is of low order: HPKE would derive a zero secret.
        let err = RecipientKey::parse(&STANDARD.encode([0u8; 32]), "key")
            .unwrap_err()
            .to_string();
        assert!(err.contains("low-order"), "{err}");
        assert!(RecipientKey::parse("not base64 !!", "key").is_err());
    }
}
