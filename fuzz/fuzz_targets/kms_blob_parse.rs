//! Arbitrary bytes as a KMS ciphertext blob: `arca::kms::parse_blob` never panics, and what it
//! accepts re-assembles to the input (see `arca::kms::blob::fuzz_check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| arca::kms::blob::fuzz_check(data));
