//! Real AWS and Vault clients against the real `arca` binary: boto3, the aws CLI and hvac run
//! the pytest files `tests/python/test_kms_*.py` and `test_transit_hvac.py`, which start their
//! own servers on `127.0.0.1:0` (see `tests/python/kms_harness.py`) and stop them by PID.
//!
//! The clients live in the venv `tests/run.sh` prepares; `common::venv::ensure` prepares it
//! too when missing or stale, so plain `cargo test` works. A missing client or a failed
//! install fails these tests: they never skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::pytest::run as pytest;

#[test]
fn boto3_runs_every_kms_operation() {
    pytest("test_kms_boto3.py");
}

#[test]
fn aws_cli_and_arca_kms_cli() {
    pytest("test_kms_awscli.py");
}

#[test]
fn sigv4_with_arca_access_keys() {
    pytest("test_kms_sigv4.py");
}

#[test]
fn hvac_runs_the_transit_engine() {
    pytest("test_transit_hvac.py");
}
