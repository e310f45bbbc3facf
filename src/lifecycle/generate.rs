//! Secret values from the OS CSPRNG: passwords, API keys, symmetric and data keys,
//! certificates and OAuth tokens, generated at creation and regenerated on rotation.
//!
//! # Randomness
//!
//! Every random byte comes from the operating system's generator
//! ([`arca_storage::keys::fill_random`]; `rcgen`'s key generation goes through `ring`, which
//! reads the same source). Characters are drawn from an alphabet by **rejection sampling**: a
//! random byte `b` is used only when `b < 256 - 256 % n` and then mapped to `b % n`, so every
//! symbol of an `n`-symbol alphabet has exactly the same probability. The naive `byte % n` (or
//! a floating-point `random() * n`) favours the first `256 % n` symbols; for the 94 characters
//! of a password alphabet that is a 25 % excess on 68 of them. [`sample_ascii`] is the one
//! sampler every generator in arca uses (access keys included).
//!
//! # Passwords
//!
//! [`PasswordPolicy`] and [`random_password`] are Secrets Manager's `GetRandomPassword`:
//! 32 characters by default (1 to 4096), drawn from upper and lower case letters, digits and the
//! 32 punctuation characters ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~`` ([`PUNCTUATION`]), minus the
//! classes and characters the policy excludes, plus the space when asked. With
//! `require_each_included_type` (the default) the password holds at least one character of
//! each included class (the space is an allowed character, not a class, as in AWS). Such a
//! password is drawn by rejection as well: whole passwords are drawn uniformly over the
//! alphabet until one holds every class, so the result is uniform over the conforming
//! passwords. Only for policies where that almost never happens (after 1000 draws: a class
//! reduced to one or two characters in a very short password) does the generator place one
//! character of each class and shuffle the password (Fisher–Yates with unbiased indices); that
//! password is still unbiased per class but no longer uniform over the whole set. A policy no
//! password can satisfy (every class excluded, or fewer characters than required classes) is
//! refused with [`SecretsError::InvalidParameter`].
//!
//! # API keys
//!
//! `ak_` + 32 base62 characters (190 bits) + `_` + an 8-hex-digit checksum. The checksum is the
//! first four bytes of `SHA-256("ak_" + body)` in lower-case hex. It lets [`validate_api_key`]
//! (and a secret scanner, offline) tell a mistyped or truncated key, or a random string of the
//! same shape, from one arca generated, without a lookup; it is not a MAC and proves nothing
//! about who made the key.
//!
//! # Values by type
//!
//! [`generate`] returns a `SecretString` holding a JSON object for every type but
//! [`SecretType::Generic`]. The non-secret generation parameters (`params`, kept with the secret
//! so rotation regenerates the same kind of value) are listed per type; an unknown parameter
//! is refused, so a misspelt one never silently falls back to a default.
//!
//! Password parameters (database credentials and generic): `password_length`,
//! `exclude_characters`, `exclude_numbers`, `exclude_punctuation`, `exclude_uppercase`,
//! `exclude_lowercase`, `include_space`, `require_each_included_type`, with
//! [`PasswordPolicy`]'s meaning and defaults.
//!
//! - `database_credentials`: parameters `engine` (default `postgres`), `host`, `port` (default
//!   5432 for postgres), `dbname`, `username` (required unless the previous value has one),
//!   `masterarn` and the password parameters; `exclude_characters` defaults to `` /@"'\ ``
//!   (characters that break connection strings, as AWS's database rotation templates exclude).
//!   On rotation every field of the previous value is kept and only the password changes.
//!   ```json
//!   {"engine": "postgres", "host": "db.internal", "port": 5432, "dbname": "app",
//!    "username": "app", "password": "..."}
//!   ```
//! - `api_key`: no parameters. `{"api_key": "ak_<32 base62>_<8 hex>"}`
//! - `symmetric_key`: no parameters. 32 random bytes in standard base64:
//!   `{"algorithm": "AES_256", "key": "<base64>"}`
//! - `encryption_key`: parameter `encryption_context` (an object of strings, default empty).
//!   A data key from the secret's KMS key (`GenerateDataKey` with `AES_256`): the plaintext to
//!   use and the wrapped copy to store beside data, which `Decrypt` opens with the same
//!   context. `{"key_id": "<KMS key ARN>", "plaintext": "<base64>", "ciphertext_blob":
//!   "<base64>", "encryption_context": {...}}`
//! - `certificate`: parameters `common_name` (default: the first subject alternative name, or
//!   `arca`), `subject_alt_names` (DNS names or IP addresses), `validity_days` (1 to 3650,
//!   default 90), `is_ca` (default false), `key_algorithm` (`ecdsa_p256` (default),
//!   `ecdsa_p384` or `ed25519`), `issuer` (the name or ARN of an arca-held CA secret, which the
//!   caller reads and passes as [`GenerateRequest::issuer`]). A fresh key pair and certificate,
//!   self-signed, or signed by the issuer (the CA secret's current value: a `certificate` value
//!   with `is_ca: true`). The serial number is 128 random bits. `certificate_chain_pem` is the leaf
//!   followed by the issuer's chain (or certificate).
//!   ```json
//!   {"certificate_pem": "-----BEGIN CERTIFICATE-----...", "private_key_pem": "-----BEGIN PRIVATE KEY-----...",
//!    "certificate_chain_pem": "...", "serial_number": "<hex>", "not_before": 1764403200,
//!    "not_after": 1772179200, "is_ca": false, "key_algorithm": "ecdsa_p256"}
//!   ```
//! - `oauth_token`: parameters `token_type` (default `Bearer`), `expires_in` (seconds, 1 to
//!   31 536 000, default 3600), `scope`. Access and refresh tokens are 32 random bytes each in
//!   unpadded base64url (RFC 6749's token characters):
//!   `{"access_token": "...", "refresh_token": "...", "token_type": "Bearer", "expires_in":
//!   3600, "expires_at": 1764406800, "scope": "read"}`
//! - `generic`: a password (the password parameters) as a plain `SecretString`; or, with
//!   `secret_string_template` (a JSON object, as text) and `generate_string_key`, that object
//!   with the password under that key, as CloudFormation's `GenerateSecretString` does.
//!
//! Nothing here keeps a value: intermediate buffers are [`Zeroizing`], and JSON is written
//! into a buffer sized up front, so no reallocation leaves a copy behind.

use std::time::{SystemTime, UNIX_EPOCH};

use arca_storage::keys::{RandomError, fill_random};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::{SecretType, SecretValue, SecretsError};
use crate::kms::{DataKeySpec, EncryptionContext, KeyProvider, KmsError};

/// The punctuation characters of Secrets Manager's passwords.
pub const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const LOWERCASE: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPERCASE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The longest password `GetRandomPassword` makes.
pub const MAX_PASSWORD_LENGTH: u32 = 4096;
/// Whole-password draws before a `require_each_included_type` password is built by placement.
const MAX_PASSWORD_DRAWS: u32 = 1000;
/// The default `exclude_characters` of database passwords.
pub const DATABASE_EXCLUDED_CHARACTERS: &str = "/@\"'\\";

const API_KEY_PREFIX: &str = "ak_";
const API_KEY_BODY_LEN: usize = 32;
const API_KEY_CHECKSUM_LEN: usize = 8;
/// The length of an API key: `ak_` + 32 + `_` + 8.
pub const API_KEY_LEN: usize = API_KEY_PREFIX.len() + API_KEY_BODY_LEN + 1 + API_KEY_CHECKSUM_LEN;

/// A password policy, as Secrets Manager's `GetRandomPassword` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The number of characters, 1 to 4096 (default 32).
    pub length: u32,
    /// Characters never to use.
    pub exclude_characters: String,
    /// No digits.
    pub exclude_numbers: bool,
    /// No punctuation.
    pub exclude_punctuation: bool,
    /// No upper-case letters.
    pub exclude_uppercase: bool,
    /// No lower-case letters.
    pub exclude_lowercase: bool,
    /// The space may appear.
    pub include_space: bool,
    /// At least one character of every included class (default true).
    pub require_each_included_type: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            length: 32,
            exclude_characters: String::new(),
            exclude_numbers: false,
            exclude_punctuation: false,
            exclude_uppercase: false,
            exclude_lowercase: false,
            include_space: false,
            require_each_included_type: true,
        }
    }
}

/// The parameter names of a password policy in generation parameters.
const PASSWORD_PARAMS: [&str; 8] = [
    "password_length",
    "exclude_characters",
    "exclude_numbers",
    "exclude_punctuation",
    "exclude_uppercase",
    "exclude_lowercase",
    "include_space",
    "require_each_included_type",
];

impl PasswordPolicy {
    /// The policy the password parameters of `params` describe, over `defaults` (other keys
    /// are ignored here; [`generate`] checks them per type).
    ///
    /// # Errors
    /// [`SecretsError::InvalidParameter`] for a parameter of the wrong JSON type.
    pub fn from_params(
        params: &Map<String, Value>,
        defaults: PasswordPolicy,
    ) -> Result<Self, SecretsError> {
        let mut policy = defaults;
        if let Some(value) = params.get("password_length") {
            let length = value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid("password_length must be a whole number"))?;
            policy.length = length;
        }
        if let Some(value) = params.get("exclude_characters") {
            value
                .as_str()
                .ok_or_else(|| invalid("exclude_characters must be a string"))?
                .clone_into(&mut policy.exclude_characters);
        }
        for (name, field) in [
            ("exclude_numbers", &mut policy.exclude_numbers),
            ("exclude_punctuation", &mut policy.exclude_punctuation),
            ("exclude_uppercase", &mut policy.exclude_uppercase),
            ("exclude_lowercase", &mut policy.exclude_lowercase),
            ("include_space", &mut policy.include_space),
            (
                "require_each_included_type",
                &mut policy.require_each_included_type,
            ),
        ] {
            if let Some(value) = params.get(name) {
                *field = value
                    .as_bool()
                    .ok_or_else(|| invalid(&format!("{name} must be true or false")))?;
            }
        }
        Ok(policy)
    }

    /// The character classes this policy draws from, each minus the excluded characters;
    /// classes left empty are dropped. The space, when included, is the last entry.
    fn classes(&self) -> Vec<Vec<u8>> {
        let keep = |set: &str| -> Vec<u8> {
            set.bytes()
                .filter(|b| !self.exclude_characters.as_bytes().contains(b))
                .collect()
        };
        let mut classes = Vec::with_capacity(5);
        for (excluded, set) in [
            (self.exclude_lowercase, LOWERCASE),
            (self.exclude_uppercase, UPPERCASE),
            (self.exclude_numbers, DIGITS),
            (self.exclude_punctuation, PUNCTUATION),
        ] {
            if !excluded {
                classes.push(keep(set));
            }
        }
        classes.retain(|class| !class.is_empty());
        if self.include_space {
            let space = keep(" ");
            if !space.is_empty() {
                classes.push(space);
            }
        }
        classes
    }
}

fn invalid(message: &str) -> SecretsError {
    SecretsError::InvalidParameter(message.to_owned())
}

fn random_failed(_: RandomError) -> SecretsError {
    SecretsError::Internal("the operating system's random number generator failed".into())
}

/// Unbiased integers below a bound, from a buffer of OS random bytes that is wiped on drop.
struct Sampler {
    pool: Zeroizing<Vec<u8>>,
    next: usize,
}

impl Sampler {
    const POOL: usize = 256;

    fn new() -> Self {
        Self {
            pool: Zeroizing::new(vec![0; Self::POOL]),
            next: Self::POOL,
        }
    }

    fn byte(&mut self) -> Result<u8, RandomError> {
        if self.next == self.pool.len() {
            fill_random(&mut self.pool)?;
            self.next = 0;
        }
        let byte = self.pool[self.next];
        self.next += 1;
        Ok(byte)
    }

    /// A uniform integer in `0..n` (`n >= 1`), by rejection: values at or above the largest
    /// multiple of `n` that fits are drawn again, so no remainder favours small results.
    fn below(&mut self, n: usize) -> Result<usize, RandomError> {
        if n <= 1 {
            return Ok(0);
        }
        if n <= 256 {
            let limit = 256 - 256 % n;
            loop {
                let value = usize::from(self.byte()?);
                if value < limit {
                    return Ok(value % n);
                }
            }
        }
        let n = n as u64;
        let space = 1u64 << 32;
        let limit = space - space % n;
        loop {
            let mut word = [0u8; 4];
            for byte in &mut word {
                *byte = self.byte()?;
            }
            let value = u64::from(u32::from_le_bytes(word));
            word.zeroize();
            if value < limit {
                // value % n < n, and n came from a usize.
                return Ok(usize::try_from(value % n).unwrap_or(0));
            }
        }
    }
}

/// `len` characters drawn uniformly and independently from `alphabet` (ASCII, at most 256
/// symbols), without modulo bias. The one character sampler of arca.
///
/// # Errors
/// [`RandomError`] when the OS generator fails.
pub fn sample_ascii(alphabet: &[u8], len: usize) -> Result<Zeroizing<String>, RandomError> {
    debug_assert!(!alphabet.is_empty() && alphabet.len() <= 256 && alphabet.is_ascii());
    let mut sampler = Sampler::new();
    let mut out = Zeroizing::new(String::with_capacity(len));
    for _ in 0..len {
        out.push(char::from(alphabet[sampler.below(alphabet.len())?]));
    }
    Ok(out)
}

/// A random password under `policy`, as Secrets Manager's `GetRandomPassword` makes it.
///
/// # Errors
/// [`SecretsError::InvalidParameter`] for a length outside 1..=4096, an
/// `exclude_characters` longer than 4096 characters, a policy that leaves no character, or one
/// that requires more classes than there are characters; [`SecretsError::Internal`] when the
/// OS generator fails.
pub fn random_password(policy: &PasswordPolicy) -> Result<Zeroizing<String>, SecretsError> {
    if !(1..=MAX_PASSWORD_LENGTH).contains(&policy.length) {
        return Err(invalid("PasswordLength must be between 1 and 4096"));
    }
    if policy.exclude_characters.chars().count() > 4096 {
        return Err(invalid(
            "ExcludeCharacters must be at most 4096 characters long",
        ));
    }
    let classes = policy.classes();
    let alphabet: Vec<u8> = classes.iter().flatten().copied().collect();
    if alphabet.is_empty() {
        return Err(invalid(
            "the password policy excludes every character; include at least one character type",
        ));
    }
    let length = policy.length as usize;
    let required: &[Vec<u8>] = if policy.require_each_included_type {
        // The space is a permitted character, not a type the password must contain.
        let types = if policy.include_space && classes.last().is_some_and(|c| c == b" ") {
            &classes[..classes.len() - 1]
        } else {
            &classes[..]
        };
        if types.len() > length {
            return Err(invalid(
                "PasswordLength is too short to include a character of each required type",
            ));
        }
        types
    } else {
        &[]
    };
    let holds_every_class = |password: &str| {
        required
            .iter()
            .all(|class| password.bytes().any(|b| class.contains(&b)))
    };
    for _ in 0..MAX_PASSWORD_DRAWS {
        let password = sample_ascii(&alphabet, length).map_err(random_failed)?;
        if holds_every_class(&password) {
            return Ok(password);
        }
    }
    placed_password(required, &alphabet, length).map_err(random_failed)
}

/// One character of each required class, the rest from the whole alphabet, shuffled.
fn placed_password(
    required: &[Vec<u8>],
    alphabet: &[u8],
    length: usize,
) -> Result<Zeroizing<String>, RandomError> {
    let mut sampler = Sampler::new();
    let mut chars = Zeroizing::new(Vec::with_capacity(length));
    for class in required {
        chars.push(class[sampler.below(class.len())?]);
    }
    while chars.len() < length {
        chars.push(alphabet[sampler.below(alphabet.len())?]);
    }
    for i in (1..chars.len()).rev() {
        let j = sampler.below(i + 1)?;
        chars.swap(i, j);
    }
    let mut out = Zeroizing::new(String::with_capacity(length));
    out.extend(chars.iter().map(|&b| char::from(b)));
    Ok(out)
}

fn api_key_checksum(prefix_and_body: &str) -> [u8; 4] {
    let digest = Sha256::digest(prefix_and_body.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A new API key: `ak_` + 32 base62 characters + `_` + the 8-hex-digit checksum (see the
/// module docs).
///
/// # Errors
/// [`SecretsError::Internal`] when the OS generator fails.
pub fn api_key() -> Result<Zeroizing<String>, SecretsError> {
    let body = sample_ascii(BASE62, API_KEY_BODY_LEN).map_err(random_failed)?;
    let mut key = Zeroizing::new(String::with_capacity(API_KEY_LEN));
    key.push_str(API_KEY_PREFIX);
    key.push_str(&body);
    let checksum = hex::encode(api_key_checksum(&key));
    key.push('_');
    key.push_str(&checksum);
    Ok(key)
}

/// Whether `key` has the shape of an arca API key and its checksum matches.
#[must_use]
pub fn validate_api_key(key: &str) -> bool {
    if key.len() != API_KEY_LEN || !key.starts_with(API_KEY_PREFIX) {
        return false;
    }
    let (head, checksum) = key.split_at(API_KEY_PREFIX.len() + API_KEY_BODY_LEN);
    let body = &head[API_KEY_PREFIX.len()..];
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let Some(checksum) = checksum.strip_prefix('_') else {
        return false;
    };
    if !checksum
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return false;
    }
    let expected = hex::encode(api_key_checksum(head));
    bool::from(expected.as_bytes().ct_eq(checksum.as_bytes()))
}

/// What to generate.
pub struct GenerateRequest<'a> {
    /// The secret's type.
    pub secret_type: SecretType,
    /// The secret's non-secret generation parameters (see the module docs, per type).
    pub params: &'a Map<String, Value>,
    /// The current value, on rotation: fields other than the secret part are kept.
    pub previous: Option<&'a SecretValue>,
    /// The current value of the CA secret that issues a certificate; `None`: self-signed.
    pub issuer: Option<&'a SecretValue>,
    /// The key provider for `encryption_key` data keys.
    pub kms: &'a dyn KeyProvider,
    /// The KMS key that wraps an `encryption_key` data key.
    pub kms_key_id: &'a str,
}

impl std::fmt::Debug for GenerateRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("secret_type", &self.secret_type)
            .field("params", &self.params)
            .field("previous", &self.previous)
            .field("issuer", &self.issuer.map(|_| "[REDACTED]"))
            .field("kms_key_id", &self.kms_key_id)
            .finish_non_exhaustive()
    }
}

/// A new value of `req.secret_type` (shapes in the module docs).
///
/// # Errors
/// [`SecretsError::InvalidParameter`] for unknown or malformed parameters, an impossible
/// password policy, a previous value or issuer that is not of the expected shape;
/// [`SecretsError::EncryptionFailure`] when the KMS key cannot make a data key (missing,
/// disabled, pending deletion); [`SecretsError::Sealed`]; [`SecretsError::Internal`] when the
/// OS generator or certificate signing fails.
pub async fn generate(req: GenerateRequest<'_>) -> Result<SecretValue, SecretsError> {
    let params = req.params;
    match req.secret_type {
        SecretType::DatabaseCredentials => database_credentials(params, req.previous),
        SecretType::ApiKey => {
            allow_params(params, SecretType::ApiKey, &[], false)?;
            let key = api_key()?;
            json_value(&[("api_key", Field::Str(&key))])
        }
        SecretType::SymmetricKey => {
            allow_params(params, SecretType::SymmetricKey, &[], false)?;
            let mut key = Zeroizing::new([0u8; 32]);
            fill_random(key.as_mut()).map_err(random_failed)?;
            let encoded = Zeroizing::new(STANDARD.encode(key.as_ref()));
            json_value(&[
                ("algorithm", Field::Str("AES_256")),
                ("key", Field::Str(&encoded)),
            ])
        }
        SecretType::EncryptionKey => encryption_key(params, req.kms, req.kms_key_id).await,
        SecretType::Certificate => certificate(params, req.issuer),
        SecretType::OauthToken => oauth_token(params),
        SecretType::Generic => generic(params),
    }
}

/// Refuses any parameter of `params` not in `allowed` (nor a password parameter, when
/// `passwords`).
fn allow_params(
    params: &Map<String, Value>,
    secret_type: SecretType,
    allowed: &[&str],
    passwords: bool,
) -> Result<(), SecretsError> {
    for name in params.keys() {
        let known = allowed.contains(&name.as_str())
            || (passwords && PASSWORD_PARAMS.contains(&name.as_str()));
        if !known {
            return Err(SecretsError::InvalidParameter(format!(
                "unknown generation parameter {name:?} for secrets of type {secret_type}"
            )));
        }
    }
    Ok(())
}

fn string_param<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, SecretsError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(SecretsError::InvalidParameter(format!(
            "{name} must be a string"
        ))),
    }
}

fn u64_param(
    params: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, SecretsError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                SecretsError::InvalidParameter(format!(
                    "{name} must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ))
            }),
    }
}

fn bool_param(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, SecretsError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(SecretsError::InvalidParameter(format!(
            "{name} must be true or false"
        ))),
    }
}

/// One field of a generated JSON object.
enum Field<'a> {
    Str(&'a str),
    Num(u64),
    Bool(bool),
    Json(&'a Value),
}

impl serde::Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(text) => serializer.serialize_str(text),
            Self::Num(n) => serializer.serialize_u64(*n),
            Self::Bool(flag) => serializer.serialize_bool(*flag),
            Self::Json(value) => value.serialize(serializer),
        }
    }
}

/// Serializes `value` into a buffer large enough that it never reallocates (a JSON string is
/// at most six times its text, for `\u00XX` escapes), so no unwiped copy of a secret is left.
fn to_secret_json(
    value: &impl serde::Serialize,
    text_len: usize,
) -> Result<SecretValue, SecretsError> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(text_len * 6 + 256));
    serde_json::to_writer(&mut *buffer, value)
        .map_err(|e| SecretsError::Internal(format!("encoding a generated value: {e}")))?;
    let text = std::str::from_utf8(&buffer)
        .map_err(|_| SecretsError::Internal("a generated value is not UTF-8".into()))?;
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    out.push_str(text);
    Ok(SecretValue::String(out))
}

fn field_len(field: &Field<'_>) -> usize {
    match field {
        Field::Str(text) => text.len(),
        Field::Num(_) | Field::Bool(_) => 20,
        Field::Json(value) => value.to_string().len(),
    }
}

/// A JSON object of `fields`, in order, as a `SecretString`.
fn json_value(fields: &[(&str, Field<'_>)]) -> Result<SecretValue, SecretsError> {
    struct Object<'a, 'b>(&'a [(&'a str, Field<'b>)]);
    impl serde::Serialize for Object<'_, '_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap as _;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (key, value) in self.0 {
                map.serialize_entry(key, value)?;
            }
            map.end()
        }
    }
    let text_len = fields
        .iter()
        .map(|(key, value)| key.len() + field_len(value) + 4)
        .sum();
    to_secret_json(&Object(fields), text_len)
}

/// Parses a previous value as a JSON object; its `password` (if any) is wiped and removed.
fn previous_object(previous: &SecretValue, what: &str) -> Result<Map<String, Value>, SecretsError> {
    let parsed: Result<Value, _> = serde_json::from_slice(previous.expose_secret());
    match parsed {
        Ok(Value::Object(mut object)) => {
            if let Some(Value::String(mut password)) = object.remove("password") {
                password.zeroize();
            }
            Ok(object)
        }
        _ => Err(SecretsError::InvalidParameter(format!(
            "the current value of this {what} secret is not a JSON object; put a value of the \
             documented shape before rotating"
        ))),
    }
}

fn database_credentials(
    params: &Map<String, Value>,
    previous: Option<&SecretValue>,
) -> Result<SecretValue, SecretsError> {
    const FIELDS: [&str; 6] = ["engine", "host", "port", "dbname", "username", "masterarn"];
    allow_params(params, SecretType::DatabaseCredentials, &FIELDS, true)?;
    let policy = PasswordPolicy::from_params(
        params,
        PasswordPolicy {
            exclude_characters: DATABASE_EXCLUDED_CHARACTERS.to_owned(),
            ..PasswordPolicy::default()
        },
    )?;
    // The previous value wins over the creation parameters: an operator may have moved the
    // database (put a value with a new host) since the secret was created.
    let mut object = match previous {
        Some(value) => previous_object(value, "database_credentials")?,
        None => Map::new(),
    };
    for name in FIELDS {
        if object.contains_key(name) {
            continue;
        }
        match params.get(name) {
            Some(Value::String(text)) => {
                object.insert(name.to_owned(), Value::String(text.clone()));
            }
            Some(Value::Number(n)) if name == "port" => {
                object.insert(name.to_owned(), Value::Number(n.clone()));
            }
            Some(Value::Null) | None => {}
            Some(_) => {
                return Err(SecretsError::InvalidParameter(format!(
                    "{name} must be a string{}",
                    if name == "port" { " or a number" } else { "" }
                )));
            }
        }
    }
    if !object.contains_key("engine") {
        object.insert("engine".into(), Value::String("postgres".into()));
    }
    if !object.contains_key("port")
        && object.get("engine").and_then(Value::as_str) == Some("postgres")
    {
        object.insert("port".into(), Value::from(5432));
    }
    match object.get("username") {
        Some(Value::String(name)) if !name.is_empty() => {}
        _ => {
            return Err(invalid(
                "database_credentials need a username (generation parameter `username`)",
            ));
        }
    }
    let password = random_password(&policy)?;
    let mut fields: Vec<(&str, Field<'_>)> = object
        .iter()
        .map(|(key, value)| (key.as_str(), Field::Json(value)))
        .collect();
    fields.push(("password", Field::Str(&password)));
    json_value(&fields)
}

fn kms_failure(err: KmsError) -> SecretsError {
    match err {
        KmsError::Sealed => SecretsError::Sealed,
        KmsError::InvalidArgument(message) => SecretsError::InvalidParameter(message),
        KmsError::NotFound(message)
        | KmsError::Disabled(message)
        | KmsError::PendingDeletion(message)
        | KmsError::InvalidState(message)
        | KmsError::InvalidKeyUsage(message) => SecretsError::EncryptionFailure(message),
        other => SecretsError::Internal(other.to_string()),
    }
}

async fn encryption_key(
    params: &Map<String, Value>,
    kms: &dyn KeyProvider,
    kms_key_id: &str,
) -> Result<SecretValue, SecretsError> {
    allow_params(
        params,
        SecretType::EncryptionKey,
        &["encryption_context"],
        false,
    )?;
    let mut context = EncryptionContext::new();
    match params.get("encryption_context") {
        None | Some(Value::Null) => {}
        Some(Value::Object(pairs)) => {
            for (key, value) in pairs {
                let Value::String(value) = value else {
                    return Err(invalid("encryption_context values must be strings"));
                };
                context.insert(key.clone(), value.clone());
            }
        }
        Some(_) => return Err(invalid("encryption_context must be an object of strings")),
    }
    let key = kms
        .generate_data_key(kms_key_id, DataKeySpec::Aes256, &context)
        .await
        .map_err(kms_failure)?;
    let plaintext = Zeroizing::new(STANDARD.encode(key.plaintext.expose_secret()));
    let wrapped = STANDARD.encode(&key.ciphertext_blob);
    let context = Value::Object(
        context
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    );
    json_value(&[
        ("key_id", Field::Str(&key.key_id)),
        ("plaintext", Field::Str(&plaintext)),
        ("ciphertext_blob", Field::Str(&wrapped)),
        ("encryption_context", Field::Json(&context)),
    ])
}

/// The parts of a CA secret's value a certificate is issued with.
#[derive(Deserialize)]
struct IssuerValue {
    certificate_pem: String,
    private_key_pem: String,
    #[serde(default)]
    certificate_chain_pem: Option<String>,
    #[serde(default)]
    is_ca: bool,
}

impl Drop for IssuerValue {
    fn drop(&mut self) {
        self.private_key_pem.zeroize();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn certificate(
    params: &Map<String, Value>,
    issuer: Option<&SecretValue>,
) -> Result<SecretValue, SecretsError> {
    allow_params(
        params,
        SecretType::Certificate,
        &[
            "common_name",
            "subject_alt_names",
            "validity_days",
            "is_ca",
            "key_algorithm",
            "issuer",
        ],
        false,
    )?;
    // `issuer` names the CA secret; the caller reads it and passes its value. Without the
    // value, refuse rather than silently self-sign.
    if params.contains_key("issuer") && issuer.is_none() {
        return Err(invalid(
            "the issuer secret's value was not supplied (the issuer parameter names the CA secret)",
        ));
    }
    let names: Vec<String> = match params.get("subject_alt_names") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("subject_alt_names must be an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("subject_alt_names must be an array of strings")),
    };
    let common_name = string_param(params, "common_name")?
        .map(str::to_owned)
        .or_else(|| names.first().cloned())
        .unwrap_or_else(|| "arca".to_owned());
    let validity_days = u64_param(params, "validity_days", 1..=3650)?.unwrap_or(90);
    let is_ca = bool_param(params, "is_ca")?.unwrap_or(false);
    let algorithm_name = string_param(params, "key_algorithm")?.unwrap_or("ecdsa_p256");
    let algorithm = match algorithm_name {
        "ecdsa_p256" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "ecdsa_p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ed25519" => &rcgen::PKCS_ED25519,
        other => {
            return Err(SecretsError::InvalidParameter(format!(
                "key_algorithm {other:?} is not one of ecdsa_p256, ecdsa_p384, ed25519"
            )));
        }
    };

    let mut cert_params = rcgen::CertificateParams::new(names).map_err(|e| {
        SecretsError::InvalidParameter(format!("subject_alt_names are not valid names: {e}"))
    })?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, common_name);
    cert_params.distinguished_name = subject;
    let now = unix_now();
    let not_after = now.saturating_add(validity_days * 86_400);
    cert_params.not_before = offset_time(now)?;
    cert_params.not_after = offset_time(not_after)?;
    let mut serial = [0u8; 16];
    fill_random(&mut serial).map_err(random_failed)?;
    serial[0] &= 0x7f; // a positive INTEGER, as RFC 5280 asks
    cert_params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    if is_ca {
        cert_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        cert_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        cert_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        cert_params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
    }

    let key = Zeroizing::new(
        rcgen::KeyPair::generate_for(algorithm)
            .map_err(|e| SecretsError::Internal(format!("generating a key pair: {e}")))?,
    );
    let (cert, chain) = match issuer {
        None => {
            let cert = cert_params
                .self_signed(&*key)
                .map_err(|e| SecretsError::Internal(format!("signing a certificate: {e}")))?;
            let pem = cert.pem();
            (pem.clone(), pem)
        }
        Some(value) => {
            let ca: IssuerValue = serde_json::from_slice(value.expose_secret()).map_err(|_| {
                invalid("the issuer's value is not a certificate secret (certificate_pem, private_key_pem)")
            })?;
            if !ca.is_ca {
                return Err(invalid(
                    "the issuer is not a CA: generate it with the parameter is_ca = true",
                ));
            }
            let ca_key = Zeroizing::new(
                rcgen::KeyPair::from_pem(&ca.private_key_pem)
                    .map_err(|_| invalid("the issuer's private key does not parse"))?,
            );
            let ca_issuer = rcgen::Issuer::from_ca_cert_pem(&ca.certificate_pem, &*ca_key)
                .map_err(|_| invalid("the issuer's certificate does not parse"))?;
            cert_params.use_authority_key_identifier_extension = true;
            let cert = cert_params
                .signed_by(&*key, &ca_issuer)
                .map_err(|e| SecretsError::Internal(format!("signing a certificate: {e}")))?;
            let pem = cert.pem();
            let upstream = ca
                .certificate_chain_pem
                .as_deref()
                .unwrap_or(&ca.certificate_pem);
            let chain = format!("{pem}{upstream}");
            (pem, chain)
        }
    };
    let private_key = Zeroizing::new(key.serialize_pem());
    let serial_hex = hex::encode(serial);
    json_value(&[
        ("certificate_pem", Field::Str(&cert)),
        ("private_key_pem", Field::Str(&private_key)),
        ("certificate_chain_pem", Field::Str(&chain)),
        ("serial_number", Field::Str(&serial_hex)),
        ("not_before", Field::Num(now)),
        ("not_after", Field::Num(not_after)),
        ("is_ca", Field::Bool(is_ca)),
        ("key_algorithm", Field::Str(algorithm_name)),
    ])
}

fn offset_time(unix: u64) -> Result<time::OffsetDateTime, SecretsError> {
    i64::try_from(unix)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| SecretsError::Internal("a certificate date is out of range".into()))
}

fn oauth_token(params: &Map<String, Value>) -> Result<SecretValue, SecretsError> {
    allow_params(
        params,
        SecretType::OauthToken,
        &["token_type", "expires_in", "scope"],
        false,
    )?;
    let token_type = string_param(params, "token_type")?.unwrap_or("Bearer");
    let expires_in = u64_param(params, "expires_in", 1..=31_536_000)?.unwrap_or(3600);
    let scope = string_param(params, "scope")?;
    let token = || -> Result<Zeroizing<String>, SecretsError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(bytes.as_mut()).map_err(random_failed)?;
        Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
    };
    let access = token()?;
    let refresh = token()?;
    let expires_at = unix_now().saturating_add(expires_in);
    let mut fields = vec![
        ("access_token", Field::Str(&access)),
        ("refresh_token", Field::Str(&refresh)),
        ("token_type", Field::Str(token_type)),
        ("expires_in", Field::Num(expires_in)),
        ("expires_at", Field::Num(expires_at)),
    ];
    if let Some(scope) = scope {
        fields.push(("scope", Field::Str(scope)));
    }
    json_value(&fields)
}

fn generic(params: &Map<String, Value>) -> Result<SecretValue, SecretsError> {
    allow_params(
        params,
        SecretType::Generic,
        &["secret_string_template", "generate_string_key"],
        true,
    )?;
    let policy = PasswordPolicy::from_params(params, PasswordPolicy::default())?;
    let template = string_param(params, "secret_string_template")?;
    let key = string_param(params, "generate_string_key")?;
    match (template, key) {
        (None, None) => Ok(SecretValue::String(random_password(&policy)?)),
        (Some(template), Some(key)) => {
            let Ok(Value::Object(object)) = serde_json::from_str::<Value>(template) else {
                return Err(invalid("secret_string_template must be a JSON object"));
            };
            if key.is_empty() {
                return Err(invalid("generate_string_key must not be empty"));
            }
            let password = random_password(&policy)?;
            let mut fields: Vec<(&str, Field<'_>)> = object
                .iter()
                .filter(|(name, _)| name.as_str() != key)
                .map(|(name, value)| (name.as_str(), Field::Json(value)))
                .collect();
            fields.push((key, Field::Str(&password)));
            json_value(&fields)
        }
        _ => Err(invalid(
            "secret_string_template and generate_string_key go together",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::kms::LocalKms;
    use arca_storage::{Barrier, MemoryBackend, RootKey};

    /// Pearson's chi-square statistic of `counts` against a uniform distribution.
    fn chi_square(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| {
                let d = c as f64 - expected;
                d * d / expected
            })
            .sum()
    }

    /// The bound for the statistics below: with k - 1 degrees of freedom the statistic has
    /// mean k - 1 and standard deviation sqrt(2(k - 1)); mean + 8 sd is exceeded by a uniform
    /// sampler with probability far below 1e-9, while `byte % n` on these alphabets scores in
    /// the thousands.
    fn generous_bound(symbols: usize) -> f64 {
        let dof = (symbols - 1) as f64;
        dof + 8.0 * (2.0 * dof).sqrt()
    }

    #[test]
    fn alphabet_sampling_has_no_modulo_bias() {
        // 62 and 94 symbols: 256 % 62 = 8 and 256 % 94 = 68, so a modulo sampler would favour
        // 8 (resp. 68) symbols by 25 % (resp. 50 %).
        let full: Vec<u8> = PasswordPolicy::default()
            .classes()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(full.len(), 94);
        for alphabet in [&BASE62[..], &full[..]] {
            let per_symbol = 4000;
            let text = sample_ascii(alphabet, alphabet.len() * per_symbol).unwrap();
            let mut counts = vec![0u64; alphabet.len()];
            for b in text.bytes() {
                let index = alphabet.iter().position(|&a| a == b).unwrap();
                counts[index] += 1;
            }
            let statistic = chi_square(&counts);
            assert!(
                statistic < generous_bound(alphabet.len()),
                "chi-square {statistic} over {} symbols",
                alphabet.len()
            );
        }
    }

    #[test]
    fn the_chi_square_check_catches_a_modulo_sampler() {
        // The same check on `byte % 62` fails, so the test above can fail.
        let mut bytes = vec![0u8; 62 * 4000];
        fill_random(&mut bytes).unwrap();
        let mut counts = vec![0u64; 62];
        for b in bytes {
            counts[usize::from(b) % 62] += 1;
        }
        assert!(chi_square(&counts) > generous_bound(62) * 4.0);
    }

    #[test]
    fn large_bounds_are_uniform_too() {
        // Indices above 256 (password shuffles up to 4096) use 32-bit words.
        let mut sampler = Sampler::new();
        let n = 1000;
        let mut counts = vec![0u64; n];
        for _ in 0..n * 200 {
            counts[sampler.below(n).unwrap()] += 1;
        }
        assert!(chi_square(&counts) < generous_bound(n));
    }

    #[test]
    fn default_policy_matches_aws() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.length, 32);
        assert!(policy.require_each_included_type);
        assert!(!policy.include_space);
        assert_eq!(PUNCTUATION.len(), 32);
        for _ in 0..200 {
            let password = random_password(&policy).unwrap();
            assert_eq!(password.len(), 32);
            assert!(password.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(password.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(password.bytes().any(|b| b.is_ascii_digit()));
            assert!(
                password
                    .bytes()
                    .any(|b| PUNCTUATION.as_bytes().contains(&b))
            );
            assert!(!password.contains(' '));
        }
    }

    #[test]
    fn policies_exclude_and_require() {
        let policy = PasswordPolicy {
            length: 64,
            exclude_characters: "abcdef0123".into(),
            exclude_punctuation: true,
            exclude_uppercase: true,
            include_space: true,
            ..PasswordPolicy::default()
        };
        let mut saw_space = false;
        for _ in 0..200 {
            let password = random_password(&policy).unwrap();
            assert_eq!(password.len(), 64);
            for b in password.bytes() {
                assert!(
                    (b'g'..=b'z').contains(&b) || (b'4'..=b'9').contains(&b) || b == b' ',
                    "unexpected {:?}",
                    char::from(b)
                );
            }
            assert!(password.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(password.bytes().any(|b| b.is_ascii_digit()));
            saw_space |= password.contains(' ');
        }
        assert!(saw_space);

        // Lengths 1 and 4096 are allowed; one character of each of four classes fits in 4.
        let one = PasswordPolicy {
            length: 1,
            require_each_included_type: false,
            ..PasswordPolicy::default()
        };
        assert_eq!(random_password(&one).unwrap().len(), 1);
        let longest = PasswordPolicy {
            length: 4096,
            ..PasswordPolicy::default()
        };
        assert_eq!(random_password(&longest).unwrap().len(), 4096);
        let four = PasswordPolicy {
            length: 4,
            ..PasswordPolicy::default()
        };
        for _ in 0..50 {
            let password = random_password(&four).unwrap();
            assert!(password.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(password.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(password.bytes().any(|b| b.is_ascii_digit()));
            assert!(
                password
                    .bytes()
                    .any(|b| PUNCTUATION.as_bytes().contains(&b))
            );
        }
    }

    #[test]
    fn rare_classes_are_placed_when_rejection_would_take_too_long() {
        // Punctuation reduced to `!` in a two-character password of 63 symbols: a uniform draw
        // holds both classes rarely enough that placement may be used; either way the result
        // conforms.
        let excluded: String = PUNCTUATION.chars().filter(|&c| c != '!').collect();
        let policy = PasswordPolicy {
            length: 2,
            exclude_characters: excluded,
            exclude_uppercase: true,
            exclude_numbers: true,
            ..PasswordPolicy::default()
        };
        for _ in 0..20 {
            let password = random_password(&policy).unwrap();
            assert!(password.contains('!'), "{}", password.len());
            assert!(password.bytes().any(|b| b.is_ascii_lowercase()));
        }
        let placed =
            placed_password(&[b"!".to_vec(), LOWERCASE.as_bytes().to_vec()], b"!abc", 5).unwrap();
        assert_eq!(placed.len(), 5);
        assert!(placed.contains('!'));
    }

    #[test]
    fn impossible_policies_are_refused() {
        let cases = [
            PasswordPolicy {
                length: 0,
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                length: 4097,
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                length: 3,
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                exclude_lowercase: true,
                exclude_uppercase: true,
                exclude_numbers: true,
                exclude_punctuation: true,
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                exclude_characters: format!("{LOWERCASE}{UPPERCASE}{DIGITS}{PUNCTUATION}"),
                ..PasswordPolicy::default()
            },
        ];
        for policy in cases {
            let result = random_password(&policy);
            assert!(
                matches!(result, Err(SecretsError::InvalidParameter(_))),
                "{policy:?} gave {result:?}"
            );
        }
        // A class emptied by exclude_characters is no longer required.
        let no_digits = PasswordPolicy {
            length: 3,
            exclude_characters: DIGITS.into(),
            ..PasswordPolicy::default()
        };
        let password = random_password(&no_digits).unwrap();
        assert!(!password.bytes().any(|b| b.is_ascii_digit()));
    }

    #[test]
    fn policies_read_from_parameters() {
        let params: Map<String, Value> = serde_json::from_str(
            r#"{"password_length": 12, "exclude_punctuation": true, "exclude_characters": "xyz"}"#,
        )
        .unwrap();
        let policy = PasswordPolicy::from_params(&params, PasswordPolicy::default()).unwrap();
        assert_eq!(policy.length, 12);
        assert!(policy.exclude_punctuation);
        assert_eq!(policy.exclude_characters, "xyz");
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"exclude_numbers": "yes"}"#).unwrap();
        assert!(PasswordPolicy::from_params(&bad, PasswordPolicy::default()).is_err());
    }

    #[test]
    fn api_keys_carry_a_checksum() {
        for _ in 0..100 {
            let key = api_key().unwrap();
            assert_eq!(key.len(), API_KEY_LEN);
            assert!(key.starts_with("ak_"));
            assert!(validate_api_key(&key), "{}", key.len());
        }
        let key = api_key().unwrap();
        // Every single-character change of the body or the checksum is caught.
        for position in 3..key.len() {
            if position == 35 {
                continue;
            }
            let mut altered = key.as_bytes().to_vec();
            altered[position] = if altered[position] == b'a' {
                b'b'
            } else {
                b'a'
            };
            let altered = String::from_utf8(altered).unwrap();
            assert!(!validate_api_key(&altered), "change at {position} accepted");
        }
        assert!(!validate_api_key(&key[..key.len() - 1]));
        assert!(!validate_api_key(&key.replacen("ak_", "ak-", 1)));
        assert!(!validate_api_key(&key.to_uppercase()));
        assert!(!validate_api_key(""));
        // A fixed vector pins the construction: SHA-256("ak_" + body)[..4] in hex.
        let body = "0123456789abcdefghijABCDEFGHIJkl";
        let digest = Sha256::digest(format!("ak_{body}").as_bytes());
        let fixed = format!("ak_{body}_{}", hex::encode(&digest[..4]));
        assert!(validate_api_key(&fixed));
    }

    async fn kms() -> LocalKms {
        let barrier = Arc::new(Barrier::new(Arc::new(MemoryBackend::new())));
        let root = RootKey::generate().unwrap();
        barrier.initialize(&root).await.unwrap();
        barrier.unseal(&root).await.unwrap();
        let kms = LocalKms::new(barrier, "us-east-1", "123456789012");
        kms.ensure_key_for_alias("alias/test", "test")
            .await
            .unwrap();
        kms
    }

    async fn make(
        kms: &LocalKms,
        secret_type: SecretType,
        params: &str,
        previous: Option<&SecretValue>,
        issuer: Option<&SecretValue>,
    ) -> Result<SecretValue, SecretsError> {
        let params: Map<String, Value> = serde_json::from_str(params).unwrap();
        generate(GenerateRequest {
            secret_type,
            params: &params,
            previous,
            issuer,
            kms,
            kms_key_id: "alias/test",
        })
        .await
    }

    fn object(value: &SecretValue) -> Map<String, Value> {
        serde_json::from_slice(value.expose_secret()).unwrap()
    }

    #[tokio::test]
    async fn database_credentials_keep_their_fields_on_rotation() {
        let kms = kms().await;
        let params =
            r#"{"host": "db.internal", "dbname": "app", "username": "app", "password_length": 20}"#;
        let first = make(&kms, SecretType::DatabaseCredentials, params, None, None)
            .await
            .unwrap();
        let fields = object(&first);
        assert_eq!(fields["engine"], "postgres");
        assert_eq!(fields["port"], 5432);
        assert_eq!(fields["host"], "db.internal");
        let password = fields["password"].as_str().unwrap().to_owned();
        assert_eq!(password.len(), 20);
        assert!(
            !password
                .chars()
                .any(|c| DATABASE_EXCLUDED_CHARACTERS.contains(c))
        );

        // The operator moved the database; rotation keeps the new host and changes only the
        // password.
        let moved = SecretValue::String(Zeroizing::new(
            first
                .as_str()
                .unwrap()
                .replace("db.internal", "db2.internal"),
        ));
        let second = make(
            &kms,
            SecretType::DatabaseCredentials,
            params,
            Some(&moved),
            None,
        )
        .await
        .unwrap();
        let rotated = object(&second);
        assert_eq!(rotated["host"], "db2.internal");
        assert_eq!(rotated["username"], "app");
        assert_ne!(rotated["password"], password.as_str());

        let missing = make(&kms, SecretType::DatabaseCredentials, "{}", None, None).await;
        assert!(matches!(missing, Err(SecretsError::InvalidParameter(_))));
        let typo = make(
            &kms,
            SecretType::DatabaseCredentials,
            r#"{"username": "a", "pasword_length": 8}"#,
            None,
            None,
        )
        .await;
        assert!(
            matches!(typo, Err(SecretsError::InvalidParameter(m)) if m.contains("pasword_length"))
        );
    }

    #[tokio::test]
    async fn keys_and_tokens_have_their_shapes() {
        let kms = kms().await;
        let api = object(
            &make(&kms, SecretType::ApiKey, "{}", None, None)
                .await
                .unwrap(),
        );
        assert!(validate_api_key(api["api_key"].as_str().unwrap()));

        let symmetric = object(
            &make(&kms, SecretType::SymmetricKey, "{}", None, None)
                .await
                .unwrap(),
        );
        let key = STANDARD.decode(symmetric["key"].as_str().unwrap()).unwrap();
        assert_eq!(key.len(), 32);

        let context = r#"{"encryption_context": {"app": "billing"}}"#;
        let data_key = object(
            &make(&kms, SecretType::EncryptionKey, context, None, None)
                .await
                .unwrap(),
        );
        let plaintext = STANDARD
            .decode(data_key["plaintext"].as_str().unwrap())
            .unwrap();
        let blob = STANDARD
            .decode(data_key["ciphertext_blob"].as_str().unwrap())
            .unwrap();
        let mut ctx = EncryptionContext::new();
        ctx.insert("app".into(), "billing".into());
        let opened = kms.decrypt(&blob, &ctx).await.unwrap();
        assert_eq!(opened.plaintext.expose_secret(), plaintext.as_slice());
        assert_eq!(data_key["key_id"].as_str(), Some(opened.key_id.as_str()));
        let params: Map<String, Value> = Map::new();
        let missing_key = generate(GenerateRequest {
            secret_type: SecretType::EncryptionKey,
            params: &params,
            previous: None,
            issuer: None,
            kms: &kms,
            kms_key_id: "alias/none",
        })
        .await;
        assert!(matches!(
            missing_key,
            Err(SecretsError::EncryptionFailure(_))
        ));

        let oauth = object(
            &make(
                &kms,
                SecretType::OauthToken,
                r#"{"scope": "read", "expires_in": 60}"#,
                None,
                None,
            )
            .await
            .unwrap(),
        );
        assert_eq!(oauth["token_type"], "Bearer");
        assert_eq!(oauth["expires_in"], 60);
        assert_eq!(oauth["scope"], "read");
        assert_eq!(oauth["access_token"].as_str().unwrap().len(), 43);
        assert_ne!(oauth["access_token"], oauth["refresh_token"]);

        let generic = make(
            &kms,
            SecretType::Generic,
            r#"{"password_length": 40}"#,
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(generic.len(), 40);
        let templated = object(
            &make(
                &kms,
                SecretType::Generic,
                r#"{"secret_string_template": "{\"username\": \"svc\"}", "generate_string_key": "password"}"#,
                None,
                None,
            )
            .await
            .unwrap(),
        );
        assert_eq!(templated["username"], "svc");
        assert_eq!(templated["password"].as_str().unwrap().len(), 32);
        let half = make(
            &kms,
            SecretType::Generic,
            r#"{"generate_string_key": "k"}"#,
            None,
            None,
        )
        .await;
        assert!(matches!(half, Err(SecretsError::InvalidParameter(_))));
    }

    #[tokio::test]
    async fn certificates_parse_back_and_chain_to_their_ca() {
        use x509_parser::prelude::{FromDer as _, X509Certificate};

        let kms = kms().await;
        let ca = make(
            &kms,
            SecretType::Certificate,
            r#"{"common_name": "arca test CA", "is_ca": true, "validity_days": 365}"#,
            None,
            None,
        )
        .await
        .unwrap();
        let leaf = make(
            &kms,
            SecretType::Certificate,
            r#"{"subject_alt_names": ["svc.internal", "127.0.0.1"], "key_algorithm": "ed25519"}"#,
            None,
            Some(&ca),
        )
        .await
        .unwrap();
        let ca_fields = object(&ca);
        let leaf_fields = object(&leaf);
        assert!(!format!("{leaf:?}").contains("PRIVATE"));

        let der = |text: &str| {
            let (_, block) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
            block.contents
        };
        let ca_der = der(ca_fields["certificate_pem"].as_str().unwrap());
        let leaf_der = der(leaf_fields["certificate_pem"].as_str().unwrap());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        let (_, leaf_cert) = X509Certificate::from_der(&leaf_der).unwrap();

        assert!(ca_cert.is_ca());
        assert!(!leaf_cert.is_ca());
        assert_eq!(leaf_cert.issuer(), ca_cert.subject());
        assert_eq!(
            leaf_cert
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "svc.internal"
        );
        let sans = leaf_cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 2);
        // The CA's key signed the leaf; the CA signed itself.
        leaf_cert
            .verify_signature(Some(ca_cert.public_key()))
            .unwrap();
        ca_cert.verify_signature(None).unwrap();
        assert_eq!(
            hex::encode(leaf_cert.raw_serial()).trim_start_matches('0'),
            leaf_fields["serial_number"]
                .as_str()
                .unwrap()
                .trim_start_matches('0')
        );
        let validity = leaf_cert.validity();
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            90 * 86_400
        );
        // The private key matches the certificate's public key.
        let key =
            rcgen::KeyPair::from_pem(leaf_fields["private_key_pem"].as_str().unwrap()).unwrap();
        assert_eq!(
            key.public_key_raw(),
            leaf_cert.public_key().subject_public_key.data.as_ref()
        );
        let chain = leaf_fields["certificate_chain_pem"].as_str().unwrap();
        let blocks = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes()).count();
        assert_eq!(blocks, 2);

        // A leaf cannot issue.
        let refused = make(&kms, SecretType::Certificate, "{}", None, Some(&leaf)).await;
        assert!(matches!(refused, Err(SecretsError::InvalidParameter(_))));
        let bad_algorithm = make(
            &kms,
            SecretType::Certificate,
            r#"{"key_algorithm": "rsa"}"#,
            None,
            None,
        )
        .await;
        assert!(matches!(
            bad_algorithm,
            Err(SecretsError::InvalidParameter(_))
        ));
    }
}
