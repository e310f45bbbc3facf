//! Secret injection against the real binary: the server's change feed, `arca run`, `arca
//! agent` (files, sidecar, `--once`, status and revoke, failover) and the library's
//! `SecretCache`. Real processes throughout: a dev server, the agent and `arca run` as the
//! user runs them, `sh` children, and Python's `prometheus_client` parsing `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{ARCA, Api, ArcaServer, write_file};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const ROOT: &str = "inject-root";

fn dev_server(data: &Path) -> ArcaServer {
    dev_server_on(data, "127.0.0.1:0")
}

fn dev_server_on(data: &Path, listen: &str) -> ArcaServer {
    ArcaServer::start_with(&[
        "--dev".into(),
        "--data-dir".into(),
        data.into(),
        "--dev-root-token".into(),
        ROOT.into(),
        "--listen".into(),
        listen.into(),
    ])
}

fn root(server: &ArcaServer) -> Api {
    server.api().with_token(ROOT)
}

async fn kv_put(api: &Api, path: &str, data: Value) -> u64 {
    let reply = api
        .post(&format!("secret/data/{path}"), &json!({ "data": data }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["data"]["version"].as_u64().unwrap()
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns how long it took.
fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A process of the `arca` binary started by a test (`run` or `agent`): its stdout lines go
/// to a channel, its stderr is collected, and it is stopped by PID when dropped.
struct Proc {
    child: Option<Child>,
    #[allow(dead_code)] // read by the agent's tests, which come next
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(ARCA);
        command.args(args);
        for var in ["ARCA_ADDR", "ARCA_TOKEN", "ARCA_CACERT", "VAULT_TOKEN"] {
            command.env_remove(var);
        }
        let mut child = command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("arca starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child: Some(child),
            lines,
            stderr,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first stdout line starting with `prefix`, with the prefix removed.
    #[allow(dead_code)] // used by the agent's tests, which come next
    fn line_starting(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line {prefix:?}; stderr:\n{}", self.stderr());
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the exit; `None` if it is still running after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                return Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap()),
                );
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).unwrap()),
                Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped by init).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

// ------------------------------------------------------------------------------------------
// The change feed
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_change_feed_long_polls_names_versions_never_values_and_follows_policies() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(&dir.path().join("data"));
    let api = root(&server);

    let denied = server.api().get("sys/events").await;
    denied.assert_error(403);

    let start = api.get("sys/events").await;
    assert_eq!(start.status, 200, "{}", start.text);
    let cursor = start.json["data"]["cursor"].as_str().unwrap().to_owned();
    assert_eq!(start.json["data"]["events"], json!([]));

    // A write while a poll waits wakes it at once.
    let poller = {
        let api = api.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = api.get(&format!("sys/events?since={cursor}&wait=20")).await;
            (reply, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv_put(&api, "app/db", json!({"password": "feed-secret-1"})).await;
    let (reply, waited) = poller.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        waited < Duration::from_secs(5),
        "the poll waited {waited:?}"
    );
    let events = reply.json["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", reply.text);
    assert_eq!(events[0]["kind"], "kv-write");
    assert_eq!(events[0]["engine"], "kv");
    assert_eq!(events[0]["mount"], "secret/");
    assert_eq!(events[0]["path"], "app/db");
    assert_eq!(events[0]["versions"], json!([1]));
    assert!(!reply.text.contains("feed-secret"), "{}", reply.text);
    let after_write = reply.json["data"]["cursor"].as_str().unwrap().to_owned();

    // Deletes, undeletes, destroys and metadata deletes are events too.
    kv_put(&api, "other/x", json!({"v": "feed-secret-2"})).await;
    assert_eq!(
        api.post("secret/delete/app/db", &json!({"versions": [1]}))
            .await
            .status,
        204
    );
    assert_eq!(
        api.post("secret/undelete/app/db", &json!({"versions": [1]}))
            .await
            .status,
        204
    );
    assert_eq!(
        api.post("secret/destroy/app/db", &json!({"versions": [1]}))
            .await
            .status,
        204
    );
    assert_eq!(api.delete("secret/metadata/other/x").await.status, 204);
    let all = api
        .get(&format!("sys/events?since={after_write}&wait=0"))
        .await;
    let kinds: Vec<(String, String)> = all.json["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        ("kv-write", "other/x"),
        ("kv-delete", "app/db"),
        ("kv-undelete", "app/db"),
        ("kv-destroy", "app/db"),
        ("kv-metadata-delete", "other/x"),
    ];
    assert_eq!(
        kinds,
        expect
            .iter()
            .map(|(k, p)| ((*k).to_owned(), (*p).to_owned()))
            .collect::<Vec<_>>()
    );

    // A token that may read app/ only sees app/'s events.
    let policy = api
        .put(
            "sys/policies/acl/app-reader",
            &json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}),
        )
        .await;
    assert_eq!(policy.status, 204, "{}", policy.text);
    let created = api
        .post("auth/token/create", &json!({"policies": ["app-reader"]}))
        .await;
    let limited = server
        .api()
        .with_token(created.json["auth"]["client_token"].as_str().unwrap());
    let visible = limited
        .get(&format!("sys/events?since={after_write}&wait=0"))
        .await;
    assert_eq!(visible.status, 200, "{}", visible.text);
    let paths: Vec<&str> = visible.json["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["app/db", "app/db", "app/db"]);
    // Its cursor still moves past what it may not see, so it does not see them again.
    let head = visible.json["data"]["cursor"].as_str().unwrap().to_owned();
    kv_put(&api, "other/y", json!({"v": "x"})).await;
    let quiet = limited
        .get(&format!("sys/events?since={head}&wait=1"))
        .await;
    assert_eq!(quiet.json["data"]["events"], json!([]));
    assert_ne!(quiet.json["data"]["cursor"].as_str().unwrap(), head);

    // A cursor of another process: reset. A malformed one: 400.
    let reset = api.get("sys/events?since=0123abcd:5&wait=0").await;
    assert_eq!(reset.json["data"]["reset"], true, "{}", reset.text);
    api.get("sys/events?since=nonsense&wait=0")
        .await
        .assert_error(400);
    api.get(&format!("sys/events?since={head}&wait=soon"))
        .await
        .assert_error(400);
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resets_cursors_and_a_waiting_poll_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = dev_server(&data);
    let api = root(&server);
    let cursor = api.get("sys/events").await.json["data"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = {
        let api = api.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            api.send(
                reqwest::Method::GET,
                &format!("sys/events?since={cursor}&wait=60"),
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for a long poll",
        stopping.elapsed()
    );
    let _ = waiting.await;
    let server = dev_server(&data);
    let reply = root(&server)
        .get(&format!("sys/events?since={cursor}&wait=0"))
        .await;
    assert_eq!(reply.json["data"]["reset"], true, "{}", reply.text);
    server.stop();
}

// ------------------------------------------------------------------------------------------
// arca run
// ------------------------------------------------------------------------------------------

fn run_env(server: &ArcaServer) -> Vec<(&str, &str)> {
    vec![("ARCA_ADDR", server.addr()), ("ARCA_TOKEN", ROOT)]
}

#[tokio::test(flavor = "multi_thread")]
async fn run_gives_the_child_its_values_only_and_returns_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(&dir.path().join("data"));
    let api = root(&server);
    kv_put(
        &api,
        "app/db",
        json!({"username": "app", "password": "run-pw-7Q2", "b64": "aGVsbG8gd29ybGQ="}),
    )
    .await;
    let mappings = write_file(
        dir.path(),
        "env.toml",
        r#"
        DB_USER = "kv://secret/app/db#username"
        [GREETING]
        ref = "kv://secret/app/db#b64"
        transform = "base64-decode"
        regex = "^hello"
        "#,
    );
    let out = dir.path().join("child.out");
    let script = format!(
        "printf '%s|%s|%s|%s' \"$DB_USER\" \"$DB_PASSWORD\" \"$GREETING\" \"${{ARCA_TOKEN:-none}}\" > {}; \
         cat /proc/$PPID/cmdline /proc/$PPID/environ > {}.parent; exit 7",
        out.display(),
        out.display()
    );
    let run = common::run_within(
        Command::new(ARCA)
            .args([
                "run",
                "--env",
                "DB_PASSWORD=kv://secret/app/db#password",
                "--env-file",
                mappings.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &script,
            ])
            .env("ARCA_ADDR", server.addr())
            .env("ARCA_TOKEN", ROOT),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(7), "{run:?}");
    assert_eq!(read(&out), "app|run-pw-7Q2|hello world|none");
    // The values are in the child's environment only: not in arca's arguments, environment
    // or output.
    let parent = std::fs::read(dir.path().join("child.out.parent")).unwrap();
    let parent = String::from_utf8_lossy(&parent);
    assert!(parent.contains("run"), "the parent is arca run");
    for value in ["run-pw-7Q2", "hello world"] {
        assert!(!parent.contains(value), "arca's own process shows {value}");
        assert!(!run.stderr.contains(value) && !run.stdout.contains(value));
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_never_starts_the_child_when_a_mapping_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(&dir.path().join("data"));
    let api = root(&server);
    kv_put(&api, "app/db", json!({"password": "short"})).await;
    let marker = dir.path().join("started");
    let script = format!("touch {}", marker.display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--env".into(), "A=kv://secret/app/missing#password".into()],
            "mapping A (kv://secret/app/missing#password): secret not found",
        ),
        (
            vec!["--env".into(), "A=kv://secret/app/db#nofield".into()],
            "mapping A (kv://secret/app/db#nofield): the value has no field nofield",
        ),
        (
            vec!["--env".into(), "A=vault://secret/app/db".into()],
            "mapping A: a reference starts with kv://",
        ),
        (
            vec!["--env".into(), "A-B=kv://secret/app/db#password".into()],
            "mapping A-B: an environment variable name",
        ),
        (
            vec![
                "--env".into(),
                "OK=kv://secret/app/db#password".into(),
                "--env".into(),
                "B=kv://nomount/x#y".into(),
            ],
            "mapping B (kv://nomount/x#y): permission denied",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["run".to_owned()];
        all.extend(args);
        all.extend(["--".into(), "sh".into(), "-c".into(), script.clone()]);
        let run = common::run_within(
            Command::new(ARCA)
                .args(&all)
                .env("ARCA_ADDR", server.addr())
                .env("ARCA_TOKEN", ROOT),
            Duration::from_secs(60),
        );
        assert_eq!(run.code, Some(125), "{all:?}: {run:?}");
        assert!(run.stderr.contains(message), "{all:?}: {}", run.stderr);
        assert!(run.stderr.contains("not started"), "{}", run.stderr);
        assert!(!marker.exists(), "{all:?} started the child");
    }
    // A value failing a rule: named, never shown.
    let rules = write_file(
        dir.path(),
        "rules.toml",
        "[PW]\nref = \"kv://secret/app/db#password\"\nmin_length = 12\n",
    );
    let run = common::run_within(
        Command::new(ARCA)
            .args([
                "run",
                "--env-file",
                rules.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &script,
            ])
            .env("ARCA_ADDR", server.addr())
            .env("ARCA_TOKEN", ROOT),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(125), "{run:?}");
    assert!(
        run.stderr.contains("mapping PW") && run.stderr.contains("shorter than 12"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("short\n") && !marker.exists());
    // A command that does not exist: 127.
    let run = common::run_within(
        Command::new(ARCA)
            .args([
                "run",
                "--env",
                "A=kv://secret/app/db#password",
                "--",
                "/nonexistent/cmd",
            ])
            .env("ARCA_ADDR", server.addr())
            .env("ARCA_TOKEN", ROOT),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(127), "{run:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_restarts_the_child_with_the_new_value_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(&dir.path().join("data"));
    let api = root(&server);
    kv_put(&api, "app/db", json!({"password": "first"})).await;
    let out = dir.path().join("seen");
    let script = format!("echo \"$PW\" >> {}; exec sleep 1000", out.display());
    let env = run_env(&server);
    let mut run = Proc::spawn(
        &[
            "run",
            "--env",
            "PW=kv://secret/app/db#password",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &env,
    );
    wait_for(Duration::from_secs(30), "the child starts", || {
        read(&out) == "first\n"
    });
    let mut latencies = Vec::new();
    for value in ["second", "third"] {
        let before = read(&out);
        let written = Instant::now();
        kv_put(&api, "app/db", json!({"password": value})).await;
        wait_for(
            Duration::from_secs(2),
            "the child restarts with the new value",
            || read(&out) == format!("{before}{value}\n"),
        );
        latencies.push(written.elapsed());
    }
    eprintln!("rotation-to-delivery latency, arca run (env, restart): {latencies:?}");
    // A write that changes nothing the child sees does not restart it.
    kv_put(&api, "app/db", json!({"password": "third"})).await;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read(&out), "first\nsecond\nthird\n");
    assert!(!run.exited());
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait(Duration::from_secs(20)), Some(128 + 15));
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_on_change_signal_hup_signals_instead_of_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(&dir.path().join("data"));
    let api = root(&server);
    kv_put(&api, "app/db", json!({"password": "one"})).await;
    let out = dir.path().join("events");
    let script = format!(
        "trap 'echo hup-$PW >> {out}' HUP; echo start-$$ >> {out}; while :; do sleep 0.1; done",
        out = out.display()
    );
    let env = run_env(&server);
    let _run = Proc::spawn(
        &[
            "run",
            "--on-change",
            "signal:HUP",
            "--env",
            "PW=kv://secret/app/db#password",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &env,
    );
    wait_for(Duration::from_secs(30), "the child starts", || {
        read(&out).starts_with("start-")
    });
    kv_put(&api, "app/db", json!({"password": "two"})).await;
    wait_for(Duration::from_secs(2), "the child gets SIGHUP", || {
        read(&out).contains("hup-one")
    });
    // Signalled, not restarted: one start, and the environment it started with.
    assert_eq!(read(&out).matches("start-").count(), 1, "{}", read(&out));
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_run_kills_the_childs_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_server(&dir.path().join("data"));
    let api = root(&server);
    kv_put(&api, "app/db", json!({"password": "x"})).await;
    let pidfile = dir.path().join("grandchild");
    let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let env = run_env(&server);
    let mut run = Proc::spawn(
        &[
            "run",
            "--env",
            "PW=kv://secret/app/db#password",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &env,
    );
    wait_for(Duration::from_secs(30), "the grandchild starts", || {
        read(&pidfile).trim().parse::<i32>().is_ok()
    });
    let grandchild: i32 = read(&pidfile).trim().parse().unwrap();
    assert!(!gone(grandchild));
    run.signal(Signal::SIGTERM);
    let code = run.wait(Duration::from_secs(20));
    assert_eq!(code, Some(128 + 15), "stderr: {}", run.stderr());
    wait_for(Duration::from_secs(5), "the grandchild is killed", || {
        gone(grandchild)
    });
    server.stop();
}
