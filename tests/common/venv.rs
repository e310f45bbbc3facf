//! The Python virtual environment with the real clients (hvac, the `bao` CLI, pytest), so
//! plain `cargo test` works on a fresh machine, not only `tests/run.sh`.
//!
//! It is the same venv `tests/run.sh` prepares, with the same stamp: `target/test-venv`, and
//! `.requirements.sha256` inside it holding the SHA-256 of `tests/requirements.txt` followed by
//! the line `python3 -c 'import sys; print(sys.version, sys.base_prefix)'` prints. Whichever of
//! the two runs first installs; the other finds the stamp and does nothing. Test processes
//! take an exclusive lock on `target/test-venv.lock` first, so parallel tests install once.
//!
//! A failed installation fails the test, loudly: the client tests never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The workspace root: the folder holding `tests/requirements.txt`, from the `arca` package
/// at the root or from a member crate below it (the storage crate's DynamoDB tests).
fn root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("tests").join("requirements.txt").is_file())
        .unwrap_or(manifest)
}

/// Returns the venv directory, creating it and installing `tests/requirements.txt` first when
/// the stamp does not match. Panics with the installer's output when that fails.
pub fn ensure() -> PathBuf {
    let target = root().join("target");
    let venv = target.join("test-venv");
    let requirements = root().join("tests").join("requirements.txt");
    std::fs::create_dir_all(&target).expect("target/ can be created");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join("test-venv.lock"))
        .expect("the venv lock file opens");
    lock.lock().expect("the venv lock is taken");

    let interpreter = interpreter_line(Path::new("python3")).unwrap_or_else(|err| {
        panic!("python3 is needed for the client tests (install python3 and python3-venv): {err}")
    });
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(&requirements).expect("tests/requirements.txt is readable"));
    hasher.update(interpreter.as_bytes());
    hasher.update(b"\n");
    let want: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let python = venv.join("bin").join("python3");
    let stamp = venv.join(".requirements.sha256");
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if python.exists() && have.trim() == want {
        return venv;
    }
    if interpreter_line(&python).ok().as_deref() != Some(interpreter.as_str()) {
        eprintln!("creating {}", venv.display());
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    eprintln!("installing tests/requirements.txt into {}", venv.display());
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--requirement",
        ])
        .arg(&requirements));
    std::fs::write(&stamp, format!("{want}\n")).expect("the venv stamp is written");
    venv
}

/// What `python -c 'import sys; print(sys.version, sys.base_prefix)'` prints, without the
/// trailing newline (as the shell's `$(...)` gives it).
fn interpreter_line(python: &Path) -> Result<String, String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.version, sys.base_prefix)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_owned())
}

/// Runs a setup command; panics with its output when it fails.
fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
