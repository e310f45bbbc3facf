//! Arbitrary or tampered bytes stored under a path: `Barrier::get` reports an integrity error,
//! never wrong plaintext, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| arca_fuzz::barrier_get(data));
