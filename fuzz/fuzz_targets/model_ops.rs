//! Random barrier operations with injected backend faults, checked against a `BTreeMap` model.
#![no_main]

libfuzzer_sys::fuzz_target!(|steps: Vec<arca_fuzz::model::Step>| arca_fuzz::model_ops(&steps));
