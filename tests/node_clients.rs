//! The AWS SDK for JavaScript v3 (`@aws-sdk/client-secrets-manager`, `@aws-sdk/client-kms`,
//! pinned by `tests/node/package-lock.json`) against the real `arca` binary: it runs
//! `tests/node/secrets_manager.test.mjs` against a development server this file starts on
//! `127.0.0.1:0`: create, get, rotate, get, and a KMS round trip.
//!
//! The npm packages are installed into `tests/node/node_modules` by `tests/run.sh`, or here
//! with `npm ci` when they are missing or older than the lock file; without Node.js and npm
//! the test fails, naming the command that installs them. Nothing skips.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ArcaServer, run_within};
use sha2::{Digest, Sha256};

/// The folder of the Node.js test.
fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("node")
}

/// The stamp `tests/run.sh` and this file write into `node_modules` after `npm ci`: the
/// SHA-256 of `package-lock.json`, so a changed lock file triggers a new install.
const STAMP: &str = ".arca-package-lock.sha256";

/// Makes sure `tests/node/node_modules` matches the lock file, running `npm ci` if not.
fn prepare_node_modules() {
    let dir = node_dir();
    let lock = std::fs::read(dir.join("package-lock.json")).unwrap();
    let want = hex::encode(Sha256::digest(&lock));
    let stamp = dir.join("node_modules").join(STAMP);
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have.trim() == want) {
        return;
    }
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        has("node") && has("npm"),
        "the Node.js client test needs node and npm: install them (Debian: `apt-get install \
         nodejs npm`) and run `npm ci` in tests/node, or run tests/run.sh, which does both"
    );
    let run = run_within(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
        Duration::from_secs(600),
    );
    assert_eq!(
        run.code,
        Some(0),
        "`npm ci` in tests/node failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    std::fs::write(&stamp, format!("{want}\n")).unwrap();
}

#[test]
fn javascript_sdk_v3_creates_gets_and_rotates() {
    prepare_node_modules();
    let data = tempfile::tempdir().unwrap();
    let server = ArcaServer::start_with(&[
        "--dev".into(),
        "--data-dir".into(),
        data.path().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let mut command = Command::new("node");
    command
        .args(["--test", "secrets_manager.test.mjs"])
        .current_dir(node_dir())
        .env("ARCA_ADDR", server.addr());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let run = run_within(&mut command, Duration::from_secs(300));
    println!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.code,
        Some(0),
        "node --test failed:\n{}\n{}\nserver log:\n{}",
        run.stdout,
        run.stderr,
        server.stderr()
    );
    assert!(
        run.stdout.contains("# pass 1") && run.stdout.contains("# fail 0"),
        "the Node.js test did not run exactly one passing test:\n{}",
        run.stdout
    );
    server.stop();
}
