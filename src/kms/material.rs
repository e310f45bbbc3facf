//! Key specs, usages and algorithms, and the key material that implements them.
//!
//! Every spec's material is 32 random bytes from the OS generator: the AES-256 or ChaCha20 key,
//! the HMAC key, the P-256 private scalar (rejection-sampled until it is a valid scalar) or the
//! Ed25519 seed. Keeping one shape means one record format (`src/kms/FORMAT.md`) and one
//! wipe-on-drop type, [`KeyMaterial`]; the public half of a signing key is recomputed from it
//! when needed, never stored.

use std::fmt;

use aes_gcm::Aes256Gcm;
use arca_storage::keys::{RandomError, fill_random};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use hmac::Hmac;
use sha2::{Sha224, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use super::KmsError;
use super::blob::{BlobAlgorithm, NONCE_LEN};

/// The length of every key material.
pub(crate) const MATERIAL_LEN: usize = 32;

/// The first byte of a stored material record (the record's format version).
const MATERIAL_FORMAT: u8 = 1;

/// What a key is: its algorithm family and size (KMS `KeySpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySpec {
    /// AES-256-GCM (KMS `SYMMETRIC_DEFAULT`; transit `aes256-gcm96`).
    SymmetricDefault,
    /// ChaCha20-Poly1305 (transit `chacha20-poly1305`). KMS reports it as `SYMMETRIC_DEFAULT`:
    /// to a KMS client it is an encryption key like any other.
    ChaCha20Poly1305,
    /// HMAC with SHA-256 and a 256-bit key (KMS `HMAC_256`).
    Hmac256,
    /// ECDSA on NIST P-256 (KMS `ECC_NIST_P256`; transit `ecdsa-p256`).
    EccNistP256,
    /// Ed25519 (KMS `ECC_NIST_EDWARDS25519`; transit `ed25519`).
    Ed25519,
}

impl KeySpec {
    /// The KMS name of the spec.
    #[must_use]
    pub fn as_kms_str(self) -> &'static str {
        match self {
            Self::SymmetricDefault | Self::ChaCha20Poly1305 => "SYMMETRIC_DEFAULT",
            Self::Hmac256 => "HMAC_256",
            Self::EccNistP256 => "ECC_NIST_P256",
            Self::Ed25519 => "ECC_NIST_EDWARDS25519",
        }
    }

    /// Parses a KMS `KeySpec`; specs arca does not implement are refused.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for an unknown or unsupported spec.
    pub fn from_kms_str(text: &str) -> Result<Self, KmsError> {
        match text {
            "SYMMETRIC_DEFAULT" => Ok(Self::SymmetricDefault),
            "HMAC_256" => Ok(Self::Hmac256),
            "ECC_NIST_P256" => Ok(Self::EccNistP256),
            "ECC_NIST_EDWARDS25519" => Ok(Self::Ed25519),
            _ => Err(KmsError::InvalidArgument(format!(
                "KeySpec {text:?} is not supported by arca; supported: SYMMETRIC_DEFAULT, \
                 HMAC_256, ECC_NIST_P256, ECC_NIST_EDWARDS25519"
            ))),
        }
    }

    /// The name stored in key records (distinguishes the two symmetric kinds).
    pub(crate) fn storage_name(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "ARCA_CHACHA20_POLY1305",
            other => other.as_kms_str(),
        }
    }

    pub(crate) fn from_storage_name(text: &str) -> Option<Self> {
        match text {
            "ARCA_CHACHA20_POLY1305" => Some(Self::ChaCha20Poly1305),
            other => Self::from_kms_str(other).ok(),
        }
    }

    /// The only usage a key of this spec may have.
    #[must_use]
    pub fn usage(self) -> KeyUsage {
        match self {
            Self::SymmetricDefault | Self::ChaCha20Poly1305 => KeyUsage::EncryptDecrypt,
            Self::Hmac256 => KeyUsage::GenerateVerifyMac,
            Self::EccNistP256 | Self::Ed25519 => KeyUsage::SignVerify,
        }
    }

    /// Whether the spec encrypts (symmetric encryption keys).
    #[must_use]
    pub fn is_symmetric_encryption(self) -> bool {
        matches!(self, Self::SymmetricDefault | Self::ChaCha20Poly1305)
    }

    /// The blob algorithm of a symmetric encryption key.
    pub(crate) fn blob_algorithm(self) -> Option<BlobAlgorithm> {
        match self {
            Self::SymmetricDefault => Some(BlobAlgorithm::Aes256Gcm),
            Self::ChaCha20Poly1305 => Some(BlobAlgorithm::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The signing algorithms KMS lists for the spec.
    #[must_use]
    pub fn signing_algorithms(self) -> &'static [SigningAlgorithm] {
        match self {
            Self::EccNistP256 => &[SigningAlgorithm::EcdsaSha256],
            Self::Ed25519 => &[SigningAlgorithm::Ed25519Sha512],
            _ => &[],
        }
    }

    /// The MAC algorithms KMS lists for the spec.
    #[must_use]
    pub fn mac_algorithms(self) -> &'static [MacAlgorithm] {
        match self {
            Self::Hmac256 => &[MacAlgorithm::HmacSha256],
            _ => &[],
        }
    }
}

/// What a key may be used for (KMS `KeyUsage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    /// Encrypt, Decrypt, ReEncrypt, GenerateDataKey*.
    EncryptDecrypt,
    /// Sign and Verify.
    SignVerify,
    /// GenerateMac and VerifyMac.
    GenerateVerifyMac,
}

impl KeyUsage {
    /// The KMS name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EncryptDecrypt => "ENCRYPT_DECRYPT",
            Self::SignVerify => "SIGN_VERIFY",
            Self::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        }
    }

    /// Parses a KMS `KeyUsage`.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for an unknown usage.
    pub fn parse(text: &str) -> Result<Self, KmsError> {
        match text {
            "ENCRYPT_DECRYPT" => Ok(Self::EncryptDecrypt),
            "SIGN_VERIFY" => Ok(Self::SignVerify),
            "GENERATE_VERIFY_MAC" => Ok(Self::GenerateVerifyMac),
            _ => Err(KmsError::InvalidArgument(format!(
                "KeyUsage {text:?} is not supported"
            ))),
        }
    }
}

/// A KMS signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// ECDSA with SHA-256 (P-256 keys); signatures are DER.
    EcdsaSha256,
    /// Ed25519 (pure, RFC 8032); signatures are 64 raw bytes.
    Ed25519Sha512,
}

impl SigningAlgorithm {
    /// The KMS name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaSha256 => "ECDSA_SHA_256",
            Self::Ed25519Sha512 => "ED25519_SHA_512",
        }
    }

    /// Parses a KMS name.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for a name KMS does not define;
    /// [`KmsError::InvalidKeyUsage`] for one arca does not implement.
    pub fn parse(text: &str) -> Result<Self, KmsError> {
        match text {
            "ECDSA_SHA_256" => Ok(Self::EcdsaSha256),
            "ED25519_SHA_512" => Ok(Self::Ed25519Sha512),
            "RSASSA_PSS_SHA_256"
            | "RSASSA_PSS_SHA_384"
            | "RSASSA_PSS_SHA_512"
            | "RSASSA_PKCS1_V1_5_SHA_256"
            | "RSASSA_PKCS1_V1_5_SHA_384"
            | "RSASSA_PKCS1_V1_5_SHA_512"
            | "ECDSA_SHA_384"
            | "ECDSA_SHA_512"
            | "SM2DSA"
            | "ML_DSA_SHAKE_256"
            | "ED25519_PH_SHA_512" => Err(KmsError::InvalidKeyUsage(format!(
                "signing algorithm {text} is not supported for this key"
            ))),
            _ => Err(KmsError::InvalidArgument(format!(
                "1 validation error detected: Value '{text}' at 'signingAlgorithm' failed to \
                 satisfy constraint: Member must satisfy enum value set"
            ))),
        }
    }
}

/// A KMS MAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MacAlgorithm {
    /// HMAC-SHA-256.
    HmacSha256,
}

impl MacAlgorithm {
    /// The KMS name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "HMAC_SHA_256",
        }
    }

    /// Parses a KMS name.
    ///
    /// # Errors
    /// [`KmsError::InvalidKeyUsage`] for another HMAC size (the key is HMAC_256);
    /// [`KmsError::InvalidArgument`] for a name KMS does not define.
    pub fn parse(text: &str) -> Result<Self, KmsError> {
        match text {
            "HMAC_SHA_256" => Ok(Self::HmacSha256),
            "HMAC_SHA_224" | "HMAC_SHA_384" | "HMAC_SHA_512" => Err(KmsError::InvalidKeyUsage(
                format!("MAC algorithm {text} is not supported for this key"),
            )),
            _ => Err(KmsError::InvalidArgument(format!(
                "1 validation error detected: Value '{text}' at 'macAlgorithm' failed to \
                 satisfy constraint: Member must satisfy enum value set"
            ))),
        }
    }
}

/// Whether a message to sign is the message or its digest (KMS `MessageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// The message itself (at most 4096 bytes).
    Raw,
    /// A digest made with the algorithm's hash (32 bytes for SHA-256).
    Digest,
}

impl MessageType {
    /// Parses a KMS name.
    ///
    /// # Errors
    /// [`KmsError::InvalidArgument`] for another value.
    pub fn parse(text: &str) -> Result<Self, KmsError> {
        match text {
            "RAW" => Ok(Self::Raw),
            "DIGEST" => Ok(Self::Digest),
            _ => Err(KmsError::InvalidArgument(format!(
                "MessageType {text:?} is not supported"
            ))),
        }
    }
}

/// The hash of a transit HMAC or signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// Parses Vault's names (`sha2-256`, also `sha256`).
    #[must_use]
    pub fn parse_vault(text: &str) -> Option<Self> {
        match text {
            "sha2-224" | "sha224" => Some(Self::Sha224),
            "sha2-256" | "sha256" => Some(Self::Sha256),
            "sha2-384" | "sha384" => Some(Self::Sha384),
            "sha2-512" | "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The digest length in bytes.
    #[must_use]
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Hashes `data`.
    #[must_use]
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Self::Sha224 => Sha224::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha384 => Sha384::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// `n` bytes from the OS generator, wiped on drop (KMS `GenerateRandom`, data keys).
///
/// # Errors
/// [`KmsError::Internal`] when the OS generator fails.
pub fn random_bytes(n: usize) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let mut out = Zeroizing::new(vec![0u8; n]);
    fill_random(&mut out)?;
    Ok(out)
}

/// One version of a key's material. Wiped on drop; `Debug` names the spec only.
pub(crate) struct KeyMaterial {
    spec: KeySpec,
    bytes: Zeroizing<[u8; MATERIAL_LEN]>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

fn crypto_failure(what: &str) -> KmsError {
    KmsError::Internal(format!("{what} failed"))
}

impl KeyMaterial {
    /// New random material for `spec`.
    pub(crate) fn generate(spec: KeySpec) -> Result<Self, RandomError> {
        let mut bytes = Zeroizing::new([0u8; MATERIAL_LEN]);
        loop {
            fill_random(bytes.as_mut())?;
            // A P-256 scalar must be in 1..n; a random 256-bit string is not one with
            // probability about 2^-32, so this loop almost never repeats.
            if spec != KeySpec::EccNistP256
                || p256::ecdsa::SigningKey::from_slice(bytes.as_slice()).is_ok()
            {
                return Ok(Self { spec, bytes });
            }
        }
    }

    /// The stored form: one format byte, then the material. The caller stores it only through
    /// the barrier.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + MATERIAL_LEN));
        out.push(MATERIAL_FORMAT);
        out.extend_from_slice(self.bytes.as_slice());
        out
    }

    /// Reads the stored form back.
    pub(crate) fn decode(spec: KeySpec, stored: &[u8]) -> Option<Self> {
        let (&format, rest) = stored.split_first()?;
        if format != MATERIAL_FORMAT || rest.len() != MATERIAL_LEN {
            return None;
        }
        let mut bytes = Zeroizing::new([0u8; MATERIAL_LEN]);
        bytes.copy_from_slice(rest);
        if spec == KeySpec::EccNistP256
            && p256::ecdsa::SigningKey::from_slice(bytes.as_slice()).is_err()
        {
            return None;
        }
        Some(Self { spec, bytes })
    }

    /// From raw bytes (tests, known-answer vectors).
    #[cfg(test)]
    pub(crate) fn from_bytes(spec: KeySpec, raw: [u8; MATERIAL_LEN]) -> Self {
        Self {
            spec,
            bytes: Zeroizing::new(raw),
        }
    }

    /// Encrypts with the spec's AEAD: `ciphertext ‖ tag`.
    pub(crate) fn aead_seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        match self.spec {
            KeySpec::SymmetricDefault => Aes256Gcm::new((&*self.bytes).into())
                .encrypt(nonce.into(), payload)
                .map_err(|_| crypto_failure("AES-GCM encryption")),
            KeySpec::ChaCha20Poly1305 => ChaCha20Poly1305::new((&*self.bytes).into())
                .encrypt(nonce.into(), payload)
                .map_err(|_| crypto_failure("ChaCha20-Poly1305 encryption")),
            _ => Err(KmsError::InvalidKeyUsage(
                "the key is not a symmetric encryption key".into(),
            )),
        }
    }

    /// Authenticates and decrypts `ciphertext ‖ tag`. Any failure is
    /// [`KmsError::InvalidCiphertext`].
    pub(crate) fn aead_open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| KmsError::InvalidCiphertext)?;
        let payload = Payload { msg: sealed, aad };
        let opened = match self.spec {
            KeySpec::SymmetricDefault => {
                Aes256Gcm::new((&*self.bytes).into()).decrypt(nonce.into(), payload)
            }
            KeySpec::ChaCha20Poly1305 => {
                ChaCha20Poly1305::new((&*self.bytes).into()).decrypt(nonce.into(), payload)
            }
            _ => return Err(KmsError::InvalidCiphertext),
        };
        opened
            .map(Zeroizing::new)
            .map_err(|_| KmsError::InvalidCiphertext)
    }

    /// HMAC of `message` under this material (or a key derived from it: see
    /// [`KeyMaterial::derived`]).
    pub(crate) fn hmac(&self, hash: HashAlgorithm, message: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        #[allow(clippy::expect_used)]
        fn mac<M: hmac::Mac + hmac::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut m =
                <M as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        let key = self.bytes.as_slice();
        match hash {
            HashAlgorithm::Sha224 => mac::<Hmac<Sha224>>(key, message),
            HashAlgorithm::Sha256 => mac::<Hmac<Sha256>>(key, message),
            HashAlgorithm::Sha384 => mac::<Hmac<Sha384>>(key, message),
            HashAlgorithm::Sha512 => mac::<Hmac<Sha512>>(key, message),
        }
    }

    /// Checks an HMAC in constant time.
    pub(crate) fn verify_hmac(&self, hash: HashAlgorithm, message: &[u8], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.hmac(hash, message);
        expected.len() == tag.len() && bool::from(expected.ct_eq(tag))
    }

    /// A purpose-bound HMAC key derived from this material (transit's per-version HMAC key,
    /// which every transit key type has): `HKDF-SHA256(material, info)`.
    pub(crate) fn derived(&self, info: &[u8]) -> Self {
        let mut bytes = Zeroizing::new([0u8; MATERIAL_LEN]);
        // 32 bytes is within HKDF-SHA256's output limit of 255 * 32 bytes.
        #[allow(clippy::expect_used)]
        hkdf::Hkdf::<Sha256>::new(None, self.bytes.as_slice())
            .expand(info, bytes.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            spec: KeySpec::Hmac256,
            bytes,
        }
    }

    fn p256(&self) -> Result<p256::ecdsa::SigningKey, KmsError> {
        p256::ecdsa::SigningKey::from_slice(self.bytes.as_slice())
            .map_err(|_| KmsError::Internal("stored P-256 key is not a valid scalar".into()))
    }

    fn ed25519(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.bytes)
    }

    /// Signs with ECDSA P-256 over SHA-256 (`message` is the message, or its 32-byte digest
    /// when `prehashed`); returns a DER signature, as KMS does.
    pub(crate) fn sign_ecdsa_der(
        &self,
        message: &[u8],
        prehashed: bool,
    ) -> Result<Vec<u8>, KmsError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let key = self.p256()?;
        let digest = if prehashed {
            message.to_vec()
        } else {
            HashAlgorithm::Sha256.digest(message)
        };
        let signature: p256::ecdsa::Signature = key
            .sign_prehash(&digest)
            .map_err(|_| KmsError::InvalidArgument("the digest has the wrong length".into()))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }

    /// Signs a raw ECDSA P-256 signature (`r ‖ s`) over a precomputed digest (transit's
    /// `jws` marshaling).
    pub(crate) fn sign_ecdsa_raw(&self, digest: &[u8]) -> Result<Vec<u8>, KmsError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let signature: p256::ecdsa::Signature = self
            .p256()?
            .sign_prehash(digest)
            .map_err(|_| KmsError::InvalidArgument("the digest has the wrong length".into()))?;
        Ok(signature.to_bytes().to_vec())
    }

    /// Verifies an ECDSA P-256 signature, DER (`der`) or raw `r ‖ s`, over a digest.
    pub(crate) fn verify_ecdsa(
        &self,
        digest: &[u8],
        signature: &[u8],
        der: bool,
    ) -> Result<bool, KmsError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        let key = self.p256()?;
        let parsed = if der {
            p256::ecdsa::Signature::from_der(signature)
        } else {
            p256::ecdsa::Signature::from_slice(signature)
        };
        let Ok(signature) = parsed else {
            return Ok(false);
        };
        Ok(key
            .verifying_key()
            .verify_prehash(digest, &signature)
            .is_ok())
    }

    /// Signs with Ed25519 (64 bytes).
    pub(crate) fn sign_ed25519(&self, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        self.ed25519().sign(message).to_bytes().to_vec()
    }

    /// Verifies an Ed25519 signature (strictly: no malleable encodings).
    pub(crate) fn verify_ed25519(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.ed25519()
            .verifying_key()
            .verify_strict(message, &signature)
            .is_ok()
    }

    /// The public key as DER `SubjectPublicKeyInfo` (KMS `GetPublicKey`).
    pub(crate) fn public_key_der(&self) -> Result<Vec<u8>, KmsError> {
        use p256::pkcs8::EncodePublicKey as _;
        match self.spec {
            KeySpec::EccNistP256 => self
                .p256()?
                .verifying_key()
                .to_public_key_der()
                .map(|d| d.as_bytes().to_vec())
                .map_err(|_| crypto_failure("public key encoding")),
            KeySpec::Ed25519 => {
                use ed25519_dalek::pkcs8::EncodePublicKey as _;
                self.ed25519()
                    .verifying_key()
                    .to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .map_err(|_| crypto_failure("public key encoding"))
            }
            _ => Err(KmsError::Unsupported(
                "the key is not an asymmetric key".into(),
            )),
        }
    }

    /// The public key as PEM (transit's `ecdsa-p256` form).
    pub(crate) fn public_key_pem(&self) -> Result<String, KmsError> {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        self.p256()?
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| crypto_failure("public key encoding"))
    }

    /// The raw 32-byte Ed25519 public key (transit's `ed25519` form).
    pub(crate) fn ed25519_public(&self) -> [u8; 32] {
        self.ed25519().verifying_key().to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_their_names() {
        for spec in [
            KeySpec::SymmetricDefault,
            KeySpec::ChaCha20Poly1305,
            KeySpec::Hmac256,
            KeySpec::EccNistP256,
            KeySpec::Ed25519,
        ] {
            assert_eq!(KeySpec::from_storage_name(spec.storage_name()), Some(spec));
        }
        assert!(KeySpec::from_kms_str("RSA_2048").is_err());
    }

    #[test]
    fn aes_gcm_known_answer() {
        // NIST GCM test vector (gcmEncryptExtIV256, Count 0 with a 16-byte all-zero
        // plaintext): key = 0^32, IV = 0^12, no AAD.
        let material = KeyMaterial::from_bytes(KeySpec::SymmetricDefault, [0; 32]);
        let out = material.aead_seal(&[0; 12], b"", &[0; 16]).unwrap();
        assert_eq!(
            hex::encode(&out),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
        let back = material.aead_open(&[0; 12], b"", &out).unwrap();
        assert_eq!(back.as_slice(), &[0; 16]);
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert!(matches!(
            material.aead_open(&[0; 12], b"", &bad),
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2 uses a 4-byte key; HMAC pads keys, so a 32-byte key holding
        // "Jefe" followed by zeros gives the same MAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let material = KeyMaterial::from_bytes(KeySpec::Hmac256, key);
        let mac = material.hmac(HashAlgorithm::Sha256, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(material.verify_hmac(HashAlgorithm::Sha256, b"what do ya want for nothing?", &mac));
        assert!(!material.verify_hmac(HashAlgorithm::Sha256, b"other", &mac));
    }

    #[test]
    fn ed25519_known_answer() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let material = KeyMaterial::from_bytes(KeySpec::Ed25519, seed);
        assert_eq!(
            hex::encode(material.ed25519_public()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = material.sign_ed25519(b"");
        assert_eq!(
            hex::encode(&sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(material.verify_ed25519(b"", &sig));
        assert!(!material.verify_ed25519(b"x", &sig));
        assert!(material.public_key_der().unwrap().len() == 44);
    }

    #[test]
    fn ecdsa_signs_and_verifies_in_both_encodings() {
        let material = KeyMaterial::generate(KeySpec::EccNistP256).unwrap();
        let der = material.sign_ecdsa_der(b"message", false).unwrap();
        let digest = HashAlgorithm::Sha256.digest(b"message");
        assert!(material.verify_ecdsa(&digest, &der, true).unwrap());
        assert!(
            !material
                .verify_ecdsa(&HashAlgorithm::Sha256.digest(b"other"), &der, true)
                .unwrap()
        );
        let raw = material.sign_ecdsa_raw(&digest).unwrap();
        assert_eq!(raw.len(), 64);
        assert!(material.verify_ecdsa(&digest, &raw, false).unwrap());
        assert!(!material.verify_ecdsa(&digest, b"garbage", true).unwrap());
        assert!(
            material
                .public_key_pem()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert_eq!(material.public_key_der().unwrap().len(), 91);
    }

    #[test]
    fn material_encoding_round_trips_and_rejects_damage() {
        let material = KeyMaterial::generate(KeySpec::SymmetricDefault).unwrap();
        let stored = material.encode();
        let back = KeyMaterial::decode(KeySpec::SymmetricDefault, &stored).unwrap();
        assert_eq!(back.bytes.as_slice(), material.bytes.as_slice());
        assert!(KeyMaterial::decode(KeySpec::SymmetricDefault, &stored[..10]).is_none());
        let mut bad = stored.to_vec();
        bad[0] = 9;
        assert!(KeyMaterial::decode(KeySpec::SymmetricDefault, &bad).is_none());
        assert_eq!(
            format!("{material:?}"),
            "KeyMaterial { spec: SymmetricDefault, .. }"
        );
    }
}
