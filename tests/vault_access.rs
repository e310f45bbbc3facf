//! Identity and access against the real binary: tokens, AppRole, ACL policies, response
//! wrapping and the audit log, driven by hvac and OpenBao's `bao` CLI through the pytest files
//! `tests/python/test_access_*.py`. Every server in them writes an audit log, and each test
//! ends by checking that the log holds none of the secrets the test handled and that
//! `arca audit verify` finds its chain intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ARCA, run_within};

/// Runs one pytest file of `tests/python/` in the venv and fails with its output unless every
/// test in it passed (none skipped).
fn pytest(file: &str) {
    let venv = common::venv::ensure();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python");
    let bin = venv.join("bin");
    let work = tempfile::tempdir().unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut command = Command::new(bin.join("python3"));
    command
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir"])
        .arg(&dir)
        .arg(dir.join(file))
        .env("ARCA_BIN", ARCA)
        .env("PATH", path)
        .env("VIRTUAL_ENV", &venv)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .current_dir(work.path());
    for var in [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "BAO_ADDR",
        "BAO_TOKEN",
        "ARCA_ADDR",
        "ARCA_TOKEN",
    ] {
        command.env_remove(var);
    }
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
fn hvac_drives_tokens_approle_policies_wrapping_and_audit() {
    pytest("test_access_hvac.py");
}

#[test]
fn bao_cli_drives_tokens_and_policies() {
    pytest("test_access_bao_cli.py");
}

#[test]
fn audit_log_verifies_and_fails_closed() {
    pytest("test_access_audit.py");
}
