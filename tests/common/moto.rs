//! moto's server (a local AWS emulator) for the tests of the AWS back end: DynamoDB storage
//! and AWS KMS.
//!
//! [`Moto::start`] runs `tests/python/moto_launcher.py` from the test venv (installed by
//! [`venv::ensure`](super::venv::ensure) when missing: these tests never skip) on
//! `127.0.0.1:0`, learns the port from the line moto prints, and stops the process by its PID
//! when dropped. [`Moto::shared`] keeps one server for every test of a test binary; it is never
//! dropped, and the launcher exits by itself when the test process is gone.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

/// How long moto may take to start (importing it takes a few seconds on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The dummy credentials local emulators accept.
pub const ACCESS_KEY_ID: &str = "test";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";
/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A running moto server, stopped by PID when dropped.
pub struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Starts a new moto server on an ephemeral port of 127.0.0.1.
    pub fn start() -> Self {
        let venv = super::venv::ensure();
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("tests").join("python").join("moto_launcher.py"))
            .find(|path| path.is_file())
            .expect("tests/python/moto_launcher.py is in the workspace");
        let mut child = Command::new(venv.join("bin").join("python3"))
            .arg(&launcher)
            .env_remove("AWS_ENDPOINT_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto's launcher starts");
        let stderr = child.stderr.take().expect("moto's stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading for the server's whole life: moto logs every request here, and a
            // full pipe would block it.
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(at) = line.find("Running on http://") {
                    let endpoint = line[at + "Running on ".len()..].trim().to_owned();
                    let _ = tx.send(Ok(endpoint));
                    sent = true;
                } else if !sent {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let mut early = Vec::new();
        let endpoint = loop {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(Ok(endpoint)) => break endpoint,
                Ok(Err(line)) => early.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("moto did not start:\n{}", early.join("\n"));
                }
            }
        };
        Self { child, endpoint }
    }

    /// One server shared by every test of this test binary (see the module documentation).
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The process id, for tests that stop it themselves.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL by PID: moto keeps nothing worth a graceful shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
