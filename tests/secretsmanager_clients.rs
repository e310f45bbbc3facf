//! Real AWS clients against arca's Secrets Manager API on the real `arca` binary: boto3 and
//! the aws CLI (with `arca secrets`) run the pytest files `tests/python/test_secretsmanager_*.py`,
//! which start their own development servers on `127.0.0.1:0` and stop them by PID. The
//! JavaScript SDK's test is `tests/node_clients.rs`.
//!
//! The Python clients come from the venv `common::venv` prepares (so plain `cargo test`
//! works); a missing client or a failed install fails these tests: they never skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::pytest::run as pytest;

#[test]
fn boto3_runs_every_secrets_manager_operation() {
    pytest("test_secretsmanager_boto3.py");
}

#[test]
fn aws_cli_and_arca_secrets_cli() {
    pytest("test_secretsmanager_awscli.py");
}
