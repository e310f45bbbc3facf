//! The real Vault clients against the real `arca` binary: hvac (the Python client) and
//! OpenBao's `bao` CLI run the seal ceremony through the pytest files in `tests/python/`.
//!
//! The clients live in the venv `tests/run.sh` prepares; `common::venv::ensure` prepares it
//! too when missing or stale, so plain `cargo test` works. A missing client or a failed
//! install fails these tests: they never skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::pytest::run as pytest;

#[test]
fn hvac_runs_the_seal_ceremony() {
    pytest("test_seal_hvac.py");
}

#[test]
fn bao_cli_runs_the_seal_ceremony() {
    pytest("test_bao_cli.py");
}
