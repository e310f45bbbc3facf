//! Arbitrary bytes as a stored record: decoding and opening never panic, and what opens
//! re-seals to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| arca_fuzz::envelope_decode(data));
