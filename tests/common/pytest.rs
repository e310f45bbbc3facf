//! Runs a pytest file of `tests/python/` in the test venv, against the `arca` binary under
//! test, and fails with pytest's output unless every test in it passed and none was skipped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{ARCA, run_within};

/// Runs `tests/python/<file>`; see the module documentation.
pub fn run(file: &str) {
    run_with_env(file, &[]);
}

/// As [`run`], with `env` set for pytest and the servers it starts (the AWS back-end tests
/// point them at moto's server this way).
pub fn run_with_env(file: &str, env: &[(&str, &str)]) {
    let venv = super::venv::ensure();
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
        // The harness modules beside the test files (conftest.py, *_harness.py).
        .env("PYTHONPATH", &dir)
        .envs(env.iter().copied())
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
