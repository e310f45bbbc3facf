//! The real Vault clients against the real `arca` binary: hvac (the Python client) and
//! OpenBao's `bao` CLI run the seal ceremony through the pytest files in `tests/python/`.
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
    let run = run_within(&mut command, Duration::from_secs(300));
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
fn hvac_runs_the_seal_ceremony() {
    pytest("test_seal_hvac.py");
}

#[test]
fn bao_cli_runs_the_seal_ceremony() {
    pytest("test_bao_cli.py");
}
