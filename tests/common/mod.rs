//! The harness shared by the integration tests that drive the real `arca` binary.
//!
//! [`ArcaServer`] starts `arca server` on `127.0.0.1:0` (never a fixed port, so tests run in
//! parallel), learns the port from the line the server prints once it listens, and stops the
//! process by its PID when dropped: SIGTERM first (the server shuts down gracefully), SIGKILL
//! only if it has not exited in time. [`Api`] is a small HTTP client of the Vault API that
//! returns the status and the JSON body as they are, so tests assert on exactly what a client
//! would see. [`venv`] prepares the Python clients (hvac, the `bao` CLI) for the tests that run
//! them.
//!
//! Every test crate includes this module (`mod common;`) and uses a different part of it, so
//! unused items are expected, and `pub` only marks what the tests call.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod moto;
pub mod pytest;
pub mod venv;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `arca` binary cargo built for these tests.
pub const ARCA: &str = env!("CARGO_BIN_EXE_arca");

/// How long a server may take to print its listening line (a debug build, a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `arca server` process, stopped by PID when dropped.
pub struct ArcaServer {
    child: Option<Child>,
    addr: String,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl ArcaServer {
    /// `arca server --data-dir DIR --listen 127.0.0.1:0`: a sealed Shamir server over `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(&[
            "--data-dir".into(),
            dir.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ])
    }

    /// `arca server --config FILE --listen 127.0.0.1:0`.
    pub fn start_with_config(config: &Path) -> Self {
        Self::start_with(&[
            "--config".into(),
            config.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ])
    }

    /// `arca server ARGS...`; the arguments must make it listen on an ephemeral port.
    /// Panics (with the server's stderr) when it exits or stays silent instead of listening.
    pub fn start_with(args: &[OsString]) -> Self {
        match Self::try_start_with(args) {
            Ok(server) => server,
            Err(failure) => panic!("arca server did not start: {failure}"),
        }
    }

    /// As [`ArcaServer::start_with`], but a server that exits before listening is an `Err`
    /// holding its exit status and stderr, for tests of refused configurations.
    pub fn try_start_with(args: &[OsString]) -> Result<Self, StartFailure> {
        Self::try_start_with_env(args, &[])
    }

    /// As [`ArcaServer::try_start_with`], with `env` added to the server's environment (for
    /// settings that are never put in a file, such as the KMS seal's access key).
    pub fn try_start_with_env(
        args: &[OsString],
        env: &[(&str, &str)],
    ) -> Result<Self, StartFailure> {
        let mut child = Command::new(ARCA)
            .arg("server")
            .args(args)
            .env("ARCA_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the arca binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let out_pipe = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading after the listening line so the server never blocks on a full pipe.
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("arca listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let mut server = Self {
            child: Some(child),
            addr: String::new(),
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let received = rx.recv_timeout(Duration::from_millis(50));
            if let Ok(addr) = received {
                server.addr = addr;
                return Ok(server);
            }
            // Stdout closed (the server is exiting) or still waiting: has it exited?
            let child = server.child.as_mut().expect("the child is running");
            let exited = if received == Err(mpsc::RecvTimeoutError::Disconnected) {
                wait_for_exit(child, STOP_TIMEOUT)
            } else {
                child.try_wait().expect("waitpid works")
            };
            match exited {
                Some(status) => {
                    server.child = None;
                    // Let the reader thread collect the last of stderr.
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(StartFailure {
                        status,
                        stderr: server.stderr(),
                    });
                }
                None if Instant::now() < deadline => {}
                None => {
                    let stderr = server.stderr();
                    drop(server);
                    panic!(
                        "arca server printed no listening line in {START_TIMEOUT:?}; stderr:\n{stderr}"
                    );
                }
            }
        }
    }

    /// The base address, e.g. `http://127.0.0.1:41234`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A client of this server without a token.
    pub fn api(&self) -> Api {
        Api::new(&self.addr, None)
    }

    /// What the server wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM and waits for the exit; the server must exit by itself, successfully.
    pub fn stop(mut self) {
        let status = self.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "arca server did not shut down cleanly on SIGTERM ({status:?}); stderr:\n{}",
            self.stderr()
        );
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL. Returns the exit status of a
    /// process that exited by itself, `None` if it had to be killed.
    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(status) = wait_for_exit(&mut child, STOP_TIMEOUT) {
            return Some(status);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

impl Drop for ArcaServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A server that exited instead of listening.
#[derive(Debug)]
pub struct StartFailure {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exited with {}; stderr:\n{}", self.status, self.stderr)
    }
}

/// The answer to one request: the status, the raw body, and the body as JSON (`Null` when
/// empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as received.
    pub text: String,
    /// The body parsed as JSON, or `Null`.
    pub json: Value,
}

impl Reply {
    /// The `errors` array of a Vault error body.
    pub fn errors(&self) -> Vec<String> {
        self.json["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not a Vault error body: {} {}", self.status, self.text))
            .iter()
            .map(|e| e.as_str().expect("errors are strings").to_owned())
            .collect()
    }

    /// Asserts the status and that the body is Vault's error shape `{"errors": [..]}` with at
    /// least one message; returns the messages joined.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let obj = self.json.as_object().expect("an error body is an object");
        assert_eq!(obj.len(), 1, "only `errors`: {}", self.text);
        let errors = self.errors();
        assert!(!errors.is_empty(), "{}", self.text);
        errors.join("; ")
    }
}

/// A minimal Vault API client over reqwest: the status and the body, nothing hidden.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    bearer: bool,
}

impl Api {
    /// A client of `base` (`http://...` or `https://...`), trusting no CA.
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self::with_roots(base, token, rustls::RootCertStore::empty())
    }

    /// A client that trusts the CA certificates in `roots`.
    pub fn with_roots(base: &str, token: Option<&str>, roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            bearer: false,
        }
    }

    /// The same client with `token` in `X-Vault-Token`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            bearer: false,
            ..self.clone()
        }
    }

    /// The same client with `token` in `Authorization: Bearer`.
    pub fn with_bearer(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            bearer: true,
            ..self.clone()
        }
    }

    /// `METHOD /v1/PATH` with an optional raw body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, reqwest::Error> {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let mut request = self.http.request(method, url);
        match (&self.token, self.bearer) {
            (Some(token), false) => request = request.header("X-Vault-Token", token),
            (Some(token), true) => request = request.bearer_auth(token),
            (None, _) => {}
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            text,
            json,
        })
    }

    /// `GET /v1/PATH`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await.unwrap()
    }

    /// `PUT /v1/PATH` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.put_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    /// `PUT /v1/PATH` with a raw body.
    pub async fn put_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body))
            .await
            .unwrap()
    }

    /// `POST /v1/PATH` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        let body = serde_json::to_vec(body).unwrap();
        self.send(reqwest::Method::POST, path, Some(body))
            .await
            .unwrap()
    }

    /// `DELETE /v1/PATH`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None)
            .await
            .unwrap()
    }
}

/// What a finished command printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `command` with no standard input and waits at most `timeout`; a command still running
/// then is killed (by its PID) and the test fails, so a hang shows as a failure, not a stuck
/// test run.
pub fn run_within(command: &mut Command, timeout: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = reader(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid works") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still ran after {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// `arca ARGS...` as a user runs it, with no `ARCA_*` variable inherited from the caller's
/// environment; `env` adds some.
pub fn arca_cli(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(ARCA);
    command.args(args);
    for var in ["ARCA_ADDR", "ARCA_TOKEN", "ARCA_CACERT", "ARCA_LOG"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    run_within(&mut command, Duration::from_secs(60))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A TOML string literal for a path.
pub fn toml_path(path: &Path) -> String {
    toml_string(&path.display().to_string())
}

fn toml_string(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}
