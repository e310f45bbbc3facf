//! The `arca` binary's command line, run as a user would run it: version and help, then the
//! operator commands (`init`, `unseal`, `seal`, `rotate`, `rekey`) and `status` against a real
//! `arca server` on `127.0.0.1:0`, with Vault's single-dash flags.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ARCA, ArcaServer, Run, arca_cli, run_within};
use serde_json::{Value, json};

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

/// `arca ...` against `server`, with its address in `ARCA_ADDR` and an optional token in
/// `ARCA_TOKEN`.
fn arca_at(server: &ArcaServer, token: Option<&str>, args: &[&str]) -> Run {
    let mut env = vec![("ARCA_ADDR", server.addr())];
    if let Some(token) = token {
        env.push(("ARCA_TOKEN", token));
    }
    arca_cli(args, &env)
}

/// Parses the JSON a `-format=json` command printed.
fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn operator_init_unseal_status_and_seal() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());

    // Uninitialised counts as sealed.
    let run = arca_cli(&["status", "--address", server.addr()], &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stdout.contains("Initialized     false"), "{run:?}");

    // Vault's single-dash flags.
    let run = arca_at(
        &server,
        None,
        &[
            "operator",
            "init",
            "-key-shares",
            "3",
            "-key-threshold",
            "2",
            "-format=json",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let init = json_of(&run);
    let keys = strings(&init["keys_base64"]);
    assert_eq!(keys.len(), 3);
    let root = init["root_token"].as_str().unwrap().to_owned();
    let run = arca_at(&server, None, &["operator", "init", "-key-shares", "3"]);
    assert_ne!(run.code, Some(0), "a second init fails: {run:?}");
    assert!(run.stderr.contains("already initialized"), "{run:?}");

    let run = arca_at(&server, None, &["status", "-format=json"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let status = json_of(&run);
    assert_eq!((&status["t"], &status["n"]), (&json!(2), &json!(3)));

    // Unseal twice (hex then base64); the text output shows the progress.
    let hex = strings(&init["keys"]);
    let run = arca_at(&server, None, &["operator", "unseal", &hex[2]]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Unseal Progress 1/2"), "{run:?}");
    assert!(!run.stdout.contains(&hex[2]), "the share is not echoed");
    let run = arca_at(&server, None, &["status"]);
    assert_eq!(run.code, Some(2), "still sealed: {run:?}");
    let run = arca_at(&server, None, &["operator", "unseal", &keys[0]]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Sealed          false"), "{run:?}");
    let run = arca_at(&server, None, &["status"]);
    assert_eq!(run.code, Some(0), "unsealed: {run:?}");
    assert!(run.stdout.contains("Cluster ID"), "{run:?}");

    // Seal: the token is required.
    let run = arca_at(&server, None, &["operator", "seal"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("permission denied"), "{run:?}");
    assert_eq!(arca_at(&server, None, &["status"]).code, Some(0));
    let run = arca_at(&server, Some(&root), &["operator", "seal"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(arca_at(&server, None, &["status"]).code, Some(2));

    // A bad share is refused with the server's words; --reset forgets progress.
    let run = arca_at(&server, None, &["operator", "unseal", "not-a-share"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("invalid share"), "{run:?}");
    arca_at(&server, None, &["operator", "unseal", &keys[1]]);
    let run = arca_at(&server, None, &["operator", "unseal", "--reset"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Unseal Progress 0/2"), "{run:?}");
    server.stop();
}

#[test]
fn status_is_1_when_the_server_is_unreachable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("http://127.0.0.1:{port}");
    let run = arca_cli(&["status", "--address", &address], &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("cannot reach arca"), "{run:?}");
    let run = arca_cli(&["status", "--address", "ftp://example"], &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
}

#[test]
fn operator_rotate_and_rekey() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let init = json_of(&arca_at(
        &server,
        None,
        &[
            "operator",
            "init",
            "-key-shares=3",
            "-key-threshold=2",
            "-format=json",
        ],
    ));
    let old = strings(&init["keys"]);
    let root = init["root_token"].as_str().unwrap().to_owned();
    for key in &old[..2] {
        assert_eq!(
            arca_at(&server, None, &["operator", "unseal", key]).code,
            Some(0)
        );
    }

    // rotate: a new keyring term, needing the token.
    let run = arca_at(&server, None, &["operator", "rotate"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("permission denied"), "{run:?}");
    let run = arca_at(&server, Some(&root), &["operator", "rotate"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Key Term        2"), "{run:?}");
    let run = arca_at(
        &server,
        Some(&root),
        &["operator", "rotate", "-format=json"],
    );
    assert_eq!(json_of(&run)["term"], 3, "{run:?}");

    // rekey: init, status, cancel, init again, two current shares, new shares in force.
    let rekey = |args: &[&str]| {
        let mut all = vec!["operator", "rekey"];
        all.extend_from_slice(args);
        arca_at(&server, Some(&root), &all)
    };
    let run = rekey(&[
        "--init",
        "-key-shares",
        "5",
        "-key-threshold",
        "3",
        "-format=json",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let started = json_of(&run);
    assert_eq!(
        (&started["started"], &started["n"], &started["t"]),
        (&json!(true), &json!(5), &json!(3))
    );
    let run = rekey(&["--status", "-format=json"]);
    assert_eq!(json_of(&run)["nonce"], started["nonce"], "{run:?}");
    assert_eq!(rekey(&["--cancel"]).code, Some(0));
    assert_eq!(
        json_of(&rekey(&["--status", "-format=json"]))["started"],
        false
    );

    let run = rekey(&["--init", "--key-shares", "5", "--key-threshold", "3"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let nonce = json_of(&rekey(&["--status", "-format=json"]))["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(run.stdout.contains(&nonce), "the nonce is printed: {run:?}");
    let run = rekey(&["--nonce", "wrong", &old[0]]);
    assert_ne!(run.code, Some(0), "{run:?}");
    let run = rekey(&["--nonce", &nonce, &old[0]]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Progress 1/2"), "{run:?}");
    let run = rekey(&["--nonce", &nonce, "-format=json", &old[2]]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let done = json_of(&run);
    assert_eq!(done["complete"], true);
    let new = strings(&done["keys"]);
    assert_eq!(new.len(), 5);

    assert_eq!(
        arca_at(&server, Some(&root), &["operator", "seal"]).code,
        Some(0)
    );
    for key in [&new[4], &new[0], &new[2]] {
        assert_eq!(
            arca_at(&server, None, &["operator", "unseal", key]).code,
            Some(0)
        );
    }
    assert_eq!(
        arca_at(&server, None, &["status"]).code,
        Some(0),
        "new shares unseal"
    );
    server.stop();
}

#[test]
fn unseal_without_a_key_or_a_terminal_fails_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let init = json_of(&arca_at(
        &server,
        None,
        &[
            "operator",
            "init",
            "-key-shares=3",
            "-key-threshold=2",
            "-format=json",
        ],
    ));
    let key = strings(&init["keys"])[0].clone();
    assert_eq!(
        arca_at(&server, None, &["operator", "unseal", &key]).code,
        Some(0)
    );

    // `setsid` puts arca in a new session with no controlling terminal, and stdin is empty:
    // there is nobody to prompt, wherever the test itself runs.
    let mut command = Command::new("setsid");
    command
        .args(["--wait", ARCA, "operator", "unseal"])
        .env("ARCA_ADDR", server.addr())
        .env_remove("ARCA_TOKEN");
    let run = run_within(&mut command, Duration::from_secs(20));
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("terminal"), "says why: {run:?}");
    let status = json_of(&arca_at(&server, None, &["status", "-format=json"]));
    assert_eq!(status["progress"], 1, "nothing was submitted");
    server.stop();
}

#[test]
fn operator_rekey_with_verification_names_the_new_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArcaServer::start(dir.path());
    let init = json_of(&arca_at(
        &server,
        None,
        &[
            "operator",
            "init",
            "-key-shares=3",
            "-key-threshold=2",
            "-format=json",
        ],
    ));
    let old = strings(&init["keys"]);
    let root = init["root_token"].as_str().unwrap().to_owned();
    for key in &old[..2] {
        assert_eq!(
            arca_at(&server, None, &["operator", "unseal", key]).code,
            Some(0)
        );
    }
    let rekey = |args: &[&str]| {
        let mut all = vec!["operator", "rekey"];
        all.extend_from_slice(args);
        arca_at(&server, Some(&root), &all)
    };
    let run = rekey(&["--init", "--verify", "-key-shares=4", "-key-threshold=2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Verification Required true"), "{run:?}");
    let nonce = json_of(&rekey(&["--status", "-format=json"]))["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rekey(&["--nonce", &nonce, &old[1]]).code, Some(0));
    // The update is a separate invocation, without --key-threshold: the message must still
    // name the threshold chosen at --init (2), not this invocation's default.
    let run = rekey(&["--nonce", &nonce, &old[2]]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("submit 2 of them"), "{run:?}");
    let new: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Key ").and_then(|l| l.split_once(": ")))
        .map(|(_, key)| key.to_owned())
        .collect();
    assert_eq!(new.len(), 4, "{run:?}");
    let vnonce = json_of(&rekey(&["--status", "--verify", "-format=json"]))["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = rekey(&["--verify", "--nonce", &vnonce, &new[3]]);
    assert!(run.stdout.contains("Progress 1/2"), "{run:?}");
    let run = rekey(&["--verify", "--nonce", &vnonce, &new[0]]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("verified and in force"), "{run:?}");

    assert_eq!(rekey(&[]).code, Some(2), "no nonce: {:?}", rekey(&[]));
    assert_eq!(
        arca_at(&server, Some(&root), &["operator", "seal"]).code,
        Some(0)
    );
    for key in [&new[1], &new[2]] {
        assert_eq!(
            arca_at(&server, None, &["operator", "unseal", key]).code,
            Some(0)
        );
    }
    assert_eq!(arca_at(&server, None, &["status"]).code, Some(0));
    server.stop();
}

#[test]
fn operator_init_on_a_key_file_seal_says_it_is_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_file(
        dir.path(),
        "arca.toml",
        &format!(
            "[storage]\npath = {}\n[seal]\nkind = \"keyfile\"\nkey_file = {}\n",
            common::toml_path(&dir.path().join("data")),
            common::toml_path(&dir.path().join("seal.key")),
        ),
    );
    let server = ArcaServer::start_with_config(&config);
    let run = arca_at(&server, None, &["operator", "init"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.matches("Recovery Key ").count(), 5, "{run:?}");
    assert!(!run.stdout.contains("Unseal Key"), "{run:?}");
    assert!(run.stdout.contains("initialised and unsealed"), "{run:?}");
    assert_eq!(arca_at(&server, None, &["status"]).code, Some(0));
    server.stop();
}
