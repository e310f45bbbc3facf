//! The ciphertext blob: what `Encrypt` and `GenerateDataKey` return and `Decrypt` takes.
//!
//! A blob must let `Decrypt` find its key without being told (KMS semantics), so it carries
//! the key id and the key version in a small fixed header. The header is authenticated as part
//! of the associated data, so an edited key id or version cannot make a blob open under
//! another key: it fails as an invalid ciphertext.
//!
//! # Layout (version 1)
//!
//! ```text
//! offset  size  field
//! 0       2     magic "ak" (0x61 0x6b)
//! 2       1     format version = 1
//! 3       1     algorithm: 1 = AES-256-GCM, 2 = ChaCha20-Poly1305 (both: 12-byte nonce,
//!               16-byte tag)
//! 4       16    key id (the 16 bytes of the key's UUID)
//! 20      4     key version, big-endian, >= 1
//! 24      12    nonce (random)
//! 36      n     ciphertext
//! 36+n    16    tag
//! ```
//!
//! The associated data of the AEAD is
//! `"arca/kms/blob/v1" ‖ header[0..24] ‖ canonical(encryption context)`, where the canonical
//! context is a big-endian u32 count of pairs, then for each pair in byte order of the key a
//! big-endian u32 length and the key's UTF-8 bytes, then the same for the value. Two maps
//! with the same pairs have one encoding, and no two different maps share one.
//!
//! A blob is at most [`MAX_BLOB_LEN`] bytes (AWS's `CiphertextBlob` limit); the smallest
//! valid one, with an empty ciphertext, is [`MIN_BLOB_LEN`]. `src/kms/FORMAT.md` repeats this
//! layout with the record formats of the key store.

use crate::kms::EncryptionContext;

/// The first two bytes of every blob.
pub const MAGIC: [u8; 2] = *b"ak";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The header length (magic, version, algorithm, key id, key version).
pub const HEADER_LEN: usize = 24;
/// Nonce length of both algorithms.
pub const NONCE_LEN: usize = 12;
/// Tag length of both algorithms.
pub const TAG_LEN: usize = 16;
/// The shortest blob: header, nonce and tag around an empty ciphertext.
pub const MIN_BLOB_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// The longest blob accepted (KMS's `CiphertextBlob` limit).
pub const MAX_BLOB_LEN: usize = 6144;

const AAD_LABEL: &[u8] = b"arca/kms/blob/v1";

/// The AEAD of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobAlgorithm {
    /// AES-256-GCM with a 96-bit nonce (KMS `SYMMETRIC_DEFAULT`).
    Aes256Gcm = 1,
    /// ChaCha20-Poly1305 (RFC 8439), for keys created as transit `chacha20-poly1305`.
    ChaCha20Poly1305 = 2,
}

impl BlobAlgorithm {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Aes256Gcm),
            2 => Some(Self::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// Why a byte string is not a blob. Callers answer all of them alike (an invalid ciphertext);
/// the variants exist for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// Shorter than [`MIN_BLOB_LEN`] or longer than [`MAX_BLOB_LEN`].
    #[error("the blob has an invalid length")]
    Length,
    /// The magic bytes are wrong: not an arca blob.
    #[error("not an arca ciphertext blob")]
    Magic,
    /// A format version this build does not read.
    #[error("unknown blob format version")]
    Version,
    /// An unknown algorithm byte.
    #[error("unknown blob algorithm")]
    Algorithm,
    /// Key version 0.
    #[error("invalid key version")]
    KeyVersion,
}

/// A parsed blob, borrowing the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedBlob<'a> {
    algorithm: BlobAlgorithm,
    key_uuid: [u8; 16],
    key_version: u32,
    header: &'a [u8],
    nonce: &'a [u8],
    sealed: &'a [u8],
}

impl<'a> ParsedBlob<'a> {
    /// The AEAD.
    #[must_use]
    pub fn algorithm(&self) -> BlobAlgorithm {
        self.algorithm
    }

    /// The key id, as the canonical lower-case UUID string KMS key ids are.
    #[must_use]
    pub fn key_id(&self) -> String {
        format_uuid(&self.key_uuid)
    }

    /// The key version (1 for a key never rotated).
    #[must_use]
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// The 12-byte nonce.
    #[must_use]
    pub fn nonce(&self) -> &'a [u8] {
        self.nonce
    }

    /// Ciphertext followed by the 16-byte tag.
    #[must_use]
    pub fn sealed(&self) -> &'a [u8] {
        self.sealed
    }

    /// The associated data to open this blob under `context`.
    #[must_use]
    pub fn aad(&self, context: &EncryptionContext) -> Vec<u8> {
        aad(self.header, context)
    }
}

/// Parses a blob without decrypting it: checks the length, magic, version, algorithm and key
/// version, and splits the rest. Never panics, for any input (the fuzz target
/// `kms_blob_parse` checks this).
///
/// # Errors
/// [`BlobError`] naming the first check that failed.
pub fn parse_blob(bytes: &[u8]) -> Result<ParsedBlob<'_>, BlobError> {
    if bytes.len() < MIN_BLOB_LEN || bytes.len() > MAX_BLOB_LEN {
        return Err(BlobError::Length);
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    if header[0..2] != MAGIC {
        return Err(BlobError::Magic);
    }
    if header[2] != FORMAT_VERSION {
        return Err(BlobError::Version);
    }
    let algorithm = BlobAlgorithm::from_byte(header[3]).ok_or(BlobError::Algorithm)?;
    let mut key_uuid = [0u8; 16];
    key_uuid.copy_from_slice(&header[4..20]);
    let mut version = [0u8; 4];
    version.copy_from_slice(&header[20..24]);
    let key_version = u32::from_be_bytes(version);
    if key_version == 0 {
        return Err(BlobError::KeyVersion);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    Ok(ParsedBlob {
        algorithm,
        key_uuid,
        key_version,
        header,
        nonce,
        sealed,
    })
}

/// The fuzz target `kms_blob_parse`: parses `input` as a blob, and again behind a valid
/// magic, version and algorithm (so the fuzzer need not discover those bytes to reach the rest
/// of the parser), checking each accepted parse against the layout. Panics only when the
/// parser breaks its contract.
pub fn fuzz_check(input: &[u8]) {
    check_parse(input);
    if let Some((&selector, rest)) = input.split_first() {
        let mut framed = Vec::with_capacity(input.len() + 3);
        framed.extend_from_slice(&MAGIC);
        framed.push(FORMAT_VERSION);
        framed.push(1 + (selector & 1));
        framed.extend_from_slice(rest);
        check_parse(&framed);
    }
}

/// Parses `bytes` and, when they parse, checks that the parts re-assemble to the input, the
/// version is not 0, the tag fits, and the key id formats and parses back.
fn check_parse(bytes: &[u8]) {
    let Ok(parsed) = parse_blob(bytes) else {
        return;
    };
    let mut rebuilt = header(parsed.algorithm, &parsed.key_uuid, parsed.key_version).to_vec();
    rebuilt.extend_from_slice(parsed.nonce);
    rebuilt.extend_from_slice(parsed.sealed);
    assert_eq!(rebuilt, bytes, "a parsed blob re-assembles to its input");
    assert!(parsed.key_version >= 1);
    assert!(parsed.sealed.len() >= TAG_LEN);
    assert_eq!(parse_uuid(&parsed.key_id()), Some(parsed.key_uuid));
    let context = EncryptionContext::new();
    assert!(parsed.aad(&context).ends_with(&[0, 0, 0, 0]));
}

/// The header of a new blob.
pub(crate) fn header(algorithm: BlobAlgorithm, key_uuid: &[u8; 16], version: u32) -> [u8; 24] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&MAGIC);
    h[2] = FORMAT_VERSION;
    h[3] = algorithm as u8;
    h[4..20].copy_from_slice(key_uuid);
    h[20..24].copy_from_slice(&version.to_be_bytes());
    h
}

/// The associated data for `header` and `context` (see the module documentation).
pub(crate) fn aad(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_LABEL.len() + header.len() + 4 + context.len() * 32);
    out.extend_from_slice(AAD_LABEL);
    out.extend_from_slice(header);
    out.extend_from_slice(&canonical_context(context));
    out
}

/// The canonical encoding of an encryption context (see the module documentation).
#[must_use]
pub fn canonical_context(context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    push_len(&mut out, context.len());
    for (k, v) in context {
        push_len(&mut out, k.len());
        out.extend_from_slice(k.as_bytes());
        push_len(&mut out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Contexts come from bounded request bodies; a length beyond u32 cannot occur, and
    // saturating would still keep distinct maps distinct for every length that can.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// Formats 16 bytes as a lower-case hyphenated UUID.
#[must_use]
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Straight into one string: request ids are formatted at every request.
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// A version 4 (random) UUID from 16 random bytes: RFC 9562's version and variant bits set,
/// then formatted.
#[must_use]
pub fn format_uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format_uuid(&bytes)
}

/// Parses a hyphenated UUID (either case) into its 16 bytes.
#[must_use]
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut hex_digits = String::with_capacity(32);
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
        } else if b.is_ascii_hexdigit() {
            hex_digits.push(char::from(b.to_ascii_lowercase()));
        } else {
            return None;
        }
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(&hex_digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut blob = header(BlobAlgorithm::Aes256Gcm, &[7; 16], 3).to_vec();
        blob.extend_from_slice(&[1; NONCE_LEN]);
        blob.extend_from_slice(b"ct");
        blob.extend_from_slice(&[2; TAG_LEN]);
        blob
    }

    #[test]
    fn parses_what_it_writes() {
        let blob = sample();
        let parsed = parse_blob(&blob).unwrap();
        assert_eq!(parsed.algorithm(), BlobAlgorithm::Aes256Gcm);
        assert_eq!(parsed.key_id(), "07070707-0707-0707-0707-070707070707");
        assert_eq!(parsed.key_version(), 3);
        assert_eq!(parsed.nonce(), &[1; NONCE_LEN]);
        assert_eq!(parsed.sealed().len(), 2 + TAG_LEN);
    }

    #[test]
    fn rejects_each_malformation() {
        let blob = sample();
        assert_eq!(
            parse_blob(&blob[..MIN_BLOB_LEN - 1]),
            Err(BlobError::Length)
        );
        assert_eq!(
            parse_blob(&vec![0; MAX_BLOB_LEN + 1]),
            Err(BlobError::Length)
        );
        let mut b = blob.clone();
        b[0] = b'x';
        assert_eq!(parse_blob(&b), Err(BlobError::Magic));
        let mut b = blob.clone();
        b[2] = 2;
        assert_eq!(parse_blob(&b), Err(BlobError::Version));
        let mut b = blob.clone();
        b[3] = 9;
        assert_eq!(parse_blob(&b), Err(BlobError::Algorithm));
        let mut b = blob;
        b[20..24].copy_from_slice(&[0; 4]);
        assert_eq!(parse_blob(&b), Err(BlobError::KeyVersion));
    }

    /// `tests/data/kms-blob-v1.txt`: blobs computed by an independent implementation from the
    /// documented layout; the material, nonce and context are fixed, so the bytes must match.
    #[test]
    fn blob_known_answers() {
        use crate::kms::KeySpec;
        use crate::kms::material::KeyMaterial;
        let vectors = include_str!("../../tests/data/kms-blob-v1.txt");
        let mut checked = 0;
        for line in vectors
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split(' ').collect();
            let (algorithm, spec) = match f[0] {
                "1" => (BlobAlgorithm::Aes256Gcm, KeySpec::SymmetricDefault),
                _ => (BlobAlgorithm::ChaCha20Poly1305, KeySpec::ChaCha20Poly1305),
            };
            let material: [u8; 32] = hex::decode(f[1]).unwrap().try_into().unwrap();
            let material = KeyMaterial::from_bytes(spec, material);
            let uuid = parse_uuid(f[2]).unwrap();
            let version: u32 = f[3].parse().unwrap();
            let nonce: [u8; NONCE_LEN] = hex::decode(f[4]).unwrap().try_into().unwrap();
            let context: EncryptionContext = f[5]
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            let plaintext = f[6].replace('_', " ");
            let expected = hex::decode(f[7]).unwrap();
            let head = header(algorithm, &uuid, version);
            let sealed = material
                .aead_seal(&nonce, &aad(&head, &context), plaintext.as_bytes())
                .unwrap();
            let mut blob = head.to_vec();
            blob.extend_from_slice(&nonce);
            blob.extend_from_slice(&sealed);
            assert_eq!(hex::encode(&blob), f[7], "vector {}", f[0]);
            let parsed = parse_blob(&expected).unwrap();
            assert_eq!(parsed.key_id(), f[2]);
            let opened = material
                .aead_open(parsed.nonce(), &parsed.aad(&context), parsed.sealed())
                .unwrap();
            assert_eq!(opened.as_slice(), plaintext.as_bytes());
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    #[test]
    fn canonical_context_known_answer() {
        let mut ctx = EncryptionContext::new();
        ctx.insert("b".into(), "2".into());
        ctx.insert("a".into(), "1".into());
        assert_eq!(
            hex::encode(canonical_context(&ctx)),
            "000000020000000161000000013100000001620000000132"
        );
        assert_eq!(canonical_context(&EncryptionContext::new()), [0, 0, 0, 0]);
    }

    #[test]
    fn uuids_round_trip() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(format_uuid(&parse_uuid(id).unwrap()), id);
        assert_eq!(
            format_uuid(&parse_uuid(&id.to_uppercase()).unwrap()),
            id,
            "upper case is accepted"
        );
        assert!(parse_uuid("1234abcd12ab34cd56ef1234567890ab").is_none());
        assert!(parse_uuid("1234abcd-12ab-34cd-56ef-1234567890ag").is_none());
        assert!(parse_uuid("alias/x").is_none());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz_check(&bytes);
        }

        #[test]
        fn valid_headers_always_parse(
            uuid in any::<[u8; 16]>(),
            version in 1u32..,
            rest in proptest::collection::vec(any::<u8>(), NONCE_LEN + TAG_LEN..300),
        ) {
            let mut blob = header(BlobAlgorithm::ChaCha20Poly1305, &uuid, version).to_vec();
            blob.extend_from_slice(&rest);
            let parsed = parse_blob(&blob).unwrap();
            prop_assert_eq!(parsed.key_version(), version);
            prop_assert_eq!(parse_uuid(&parsed.key_id()), Some(uuid));
            fuzz_check(&blob);
        }

        #[test]
        fn distinct_contexts_encode_distinctly(
            a in proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..4),
            b in proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..4),
        ) {
            prop_assert_eq!(a == b, canonical_context(&a) == canonical_context(&b));
        }
    }
}
