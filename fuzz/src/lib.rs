//! The checks behind arca-storage's fuzz targets.
//!
//! Each target in `fuzz_targets/` is one call into this crate, so the checks are ordinary,
//! readable Rust and can be replayed from a test or a debugger:
//!
//! - [`envelope_decode`]: arbitrary bytes as a stored record. Decoding reports only the two
//!   documented errors, opening with a fixed key fails or round-trips, and any bytes sealed
//!   as a plaintext open back to themselves.
//! - [`barrier_get`]: arbitrary bytes, or a genuine record with bytes flipped, cut, added or
//!   moved to another path, stored raw under a path of an unsealed [`Barrier`]: `get` answers
//!   with an integrity error, or with exactly the original plaintext when nothing changed.
//! - [`model_ops`]: a sequence of barrier operations with injected backend faults, checked
//!   step by step against a `BTreeMap` model (see [`model`]).

#![forbid(unsafe_code)]

pub mod model;

use std::sync::{Arc, OnceLock};

use arca_storage::envelope::{
    DecodeError, Envelope, FORMAT_VERSION, HEADER_LEN, NONCE_LEN, OVERHEAD, RECORD_KEY_INFO,
    RecordCipher,
};
use arca_storage::{Barrier, BarrierError, KEY_LEN, MemoryBackend, RootKey};

pub use model::model_ops;

/// The path records are opened and stored under.
const PATH: &str = "fuzz/record";
/// Another path, to which records are moved.
const OTHER_PATH: &str = "fuzz/other";
/// The plaintext of the genuine record [`barrier_get`] tampers with.
const PLAINTEXT: &[u8] = b"the plaintext of a genuine record";

/// One current-thread runtime for the whole fuzzing process: building one per input would
/// dominate the time of small inputs.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime builds")
        })
        .block_on(future)
}

/// The fixed root key of the barrier targets (test data).
pub(crate) fn root_key() -> RootKey {
    RootKey::from_slice(&[0x5A; KEY_LEN]).expect("32 bytes")
}

/// Decodes `data` as an envelope and opens it with a fixed key; then seals `data` as a
/// plaintext and opens it back. Panics on any broken promise.
pub fn envelope_decode(data: &[u8]) {
    let cipher = RecordCipher::derive(&[7; KEY_LEN], RECORD_KEY_INFO);
    match Envelope::decode(data) {
        Err(DecodeError::TooShort) => assert!(data.len() < OVERHEAD, "long enough: {data:?}"),
        Err(DecodeError::UnknownVersion(version)) => {
            assert!(data.len() >= OVERHEAD);
            assert_eq!(version, data[0]);
            assert_ne!(version, FORMAT_VERSION);
        }
        Err(other) => panic!("undocumented decode error {other:?}"),
        Ok(envelope) => {
            assert_eq!(envelope.version(), FORMAT_VERSION);
            assert_eq!(envelope.plaintext_len(), data.len() - OVERHEAD);
            assert_eq!(
                envelope.term().to_be_bytes(),
                data[1..5],
                "term is bytes 1..5, big-endian"
            );
            // Forging a tag under an unknown key is infeasible, but if the bytes do open they
            // must be exactly what sealing that plaintext with that nonce gives.
            if let Ok(plain) = cipher.open(&envelope, PATH) {
                let nonce: [u8; NONCE_LEN] = data[5..HEADER_LEN].try_into().expect("24 bytes");
                let resealed = cipher
                    .seal_with_nonce(envelope.term(), PATH, plain.expose_secret(), &nonce)
                    .expect("a short path seals");
                assert_eq!(resealed, data, "opened, but does not re-seal to itself");
            }
        }
    }

    // The other direction: `data` as a plaintext, with a term and nonce drawn from it.
    let term = data
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let mut nonce = [0u8; NONCE_LEN];
    for (n, b) in nonce.iter_mut().zip(data) {
        *n = *b;
    }
    let sealed = cipher
        .seal_with_nonce(term, PATH, data, &nonce)
        .expect("a short path seals");
    assert_eq!(sealed.len(), data.len() + OVERHEAD);
    let envelope = Envelope::decode(&sealed).expect("a sealed record decodes");
    assert_eq!(envelope.term(), term);
    let plain = cipher.open(&envelope, PATH).expect("a sealed record opens");
    assert_eq!(plain.expose_secret(), data);
    assert!(
        cipher.open(&envelope, OTHER_PATH).is_err(),
        "a record opened at another path"
    );
}

/// Stores bytes derived from `data` raw under a path of an unsealed barrier over a
/// [`MemoryBackend`] and reads them back through the barrier.
///
/// The first byte chooses the mode: bit 0 clear stores the rest of `data` as it is; bit 0 set
/// takes a genuine record of [`PLAINTEXT`] and XORs the rest of `data` into it (bytes past its
/// end are appended; bit 1 also cuts it to that length). Bit 2 stores the result under another
/// path than the one it was sealed for. Panics on any broken promise.
pub fn barrier_get(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    block_on(async {
        let barrier = Barrier::new(Arc::new(MemoryBackend::new()));
        let root = root_key();
        barrier.initialize(&root).await.expect("initialize");
        barrier.unseal(&root).await.expect("unseal");

        let (stored, genuine) = if mode & 1 == 0 {
            (rest.to_vec(), false)
        } else {
            barrier.put(PATH, PLAINTEXT).await.expect("put");
            let original = barrier
                .backend()
                .get(PATH)
                .await
                .expect("get")
                .expect("just written");
            let mut tampered = original.clone();
            for (i, b) in rest.iter().enumerate() {
                match tampered.get_mut(i) {
                    Some(t) => *t ^= b,
                    None => tampered.push(*b),
                }
            }
            if mode & 2 != 0 {
                tampered.truncate(rest.len());
            }
            let unchanged = tampered == original;
            (tampered, unchanged)
        };
        let path = if mode & 4 == 0 { PATH } else { OTHER_PATH };
        barrier
            .backend()
            .put(path, stored)
            .await
            .expect("a short value stores");

        match barrier.get(path).await {
            Ok(Some(plain)) => {
                assert!(
                    genuine && path == PATH,
                    "tampered or foreign bytes were accepted as a record"
                );
                assert_eq!(plain.expose_secret(), PLAINTEXT);
            }
            Ok(None) => panic!("a stored record reads as absent"),
            Err(BarrierError::Integrity { path: reported }) => {
                assert_eq!(reported, path);
                assert!(
                    !(genuine && path == PATH),
                    "an untouched record failed its integrity check"
                );
            }
            Err(other) => panic!("unexpected error: {other:?}"),
        }
        // The damaged record harms no other: a fresh one beside it still reads back.
        barrier.put("fuzz/beside", b"fine").await.expect("put");
        let beside = barrier.get("fuzz/beside").await.expect("get");
        assert_eq!(beside.expect("present").expose_secret(), b"fine");
    });
}
