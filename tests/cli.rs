//! The `arca` binary's command line, run as a user would run it.

use std::process::Command;

fn arca(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arca"))
        .args(args)
        .output()
        .expect("the arca binary runs")
}

#[test]
fn version_prints_the_crate_version() {
    let out = arca(&["--version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim(), format!("arca {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_describes_arca() {
    let out = arca(&["--help"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("secrets store"), "{stdout}");
    assert!(stdout.contains("Usage: arca"), "{stdout}");
}

#[test]
fn unknown_arguments_fail_with_usage_error() {
    let out = arca(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}
