//! Real AWS and Vault clients against the real `arca` binary: boto3, the aws CLI and hvac run
//! the pytest files `tests/python/test_kms_*.py` and `test_transit_hvac.py`, which start their
//! own servers on `127.0.0.1:0` (see `tests/python/kms_harness.py`) and stop them by PID.
//!
//! The clients live in the venv `tests/run.sh` prepares; `common::venv::ensure` prepares it
//! too when missing or stale, so plain `cargo test` works. A missing client or a failed
//! install fails these tests: they never skip.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ARCA, run_within};

/// Runs one pytest file of `tests/python/` in the venv and fails with its output unless every
/// test in it passed.
fn pytest(file: &str) {
    let venv = common::venv::ensure();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python");
    let bin = venv.join("bin");
    // Run from an empty folder, so nothing a client writes lands in the source tree.
    let work = tempfile::tempdir().unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut command = Command::new(bin.join("python3"));
    // No client configuration leaks in from the caller's environment.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if ["AWS_", "VAULT_", "BAO_", "ARCA_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(&name);
        }
    }
    command
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir"])
        .arg(&dir)
        .arg(dir.join(file))
        .env("ARCA_BIN", ARCA)
        .env("PATH", path)
        .env("VIRTUAL_ENV", &venv)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONPATH", &dir)
        .current_dir(work.path());
    let run = run_within(&mut command, Duration::from_secs(600));
    println!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.code,
        Some(0),
        "pytest {file} failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains(" passed") && !run.stdout.contains("skipped"),
        "pytest {file} ran no test or skipped some:\n{}",
        run.stdout
    );
}

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
