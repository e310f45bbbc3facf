//! The PostgreSQL rotator against a real PostgreSQL server: rotation changes the role's
//! password (the old one stops working, the new one connects), a master secret rotates another
//! role, and a rotation whose testSecret step fails leaves AWSCURRENT where it was, records the
//! failure, and resumes with the same pending value once the database accepts it.
//!
//! The server is started for the test from the PostgreSQL binaries on this machine (`initdb`,
//! `postgres`: on PATH, /usr/local/bin or /usr/lib/postgresql/<version>/bin; tests/run.sh
//! installs Debian's `postgresql` package when none is found) in a temporary directory, on a
//! free loopback port, with SCRAM authentication. PostgreSQL refuses to run as root, so as
//! root the server runs as `nobody` (through `setpriv`) in a directory that user owns. It is
//! stopped by its PID when the test ends, pass or fail.
#![allow(clippy::unwrap_used)]

mod rotation_common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arca::lifecycle::rotation::{POSTGRES_ROTATOR, RotateRequest, RotationSettings, rotate_now};
use arca::lifecycle::{AWSPENDING, AWSPREVIOUS, SecretType, SecretsError};
use rotation_common::*;

/// The uid and gid the server runs as when the tests run as root.
const NOBODY: u32 = 65_534;

/// The directory holding `initdb` and `postgres`.
fn postgres_bin_dir() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("ARCA_POSTGRES_BIN").map(PathBuf::from) {
        assert!(
            has_tools(&dir),
            "ARCA_POSTGRES_BIN={} has no initdb and postgres",
            dir.display()
        );
        return dir;
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/local/bin"));
    // Debian keeps the server binaries out of PATH, one folder per major version: newest first.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|dir| {
        std::cmp::Reverse(
            dir.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    candidates.extend(versions);
    candidates
        .into_iter()
        .find(|dir| has_tools(dir))
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries (initdb, postgres) on PATH, in /usr/local/bin or in \
             /usr/lib/postgresql/*/bin: run tests/run.sh (it installs Debian's postgresql \
             package) or set ARCA_POSTGRES_BIN"
            )
        })
}

fn running_as_root() -> bool {
    // SAFETY-free: the effective uid from /proc, no libc call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// `program args...`, as `nobody` when running as root.
fn command_as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn chown_to_server_user(path: &Path) {
    if running_as_root() {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// A PostgreSQL server in a temporary directory, stopped by PID on drop.
struct PostgresServer {
    child: Child,
    port: u16,
    superuser_password: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        chown_to_server_user(&data);
        let superuser_password = "superuser-test-password".to_owned();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &superuser_password).unwrap();
        chown_to_server_user(&pwfile);
        let log = dir.path().join("postgres.log");
        std::fs::write(&log, "").unwrap();
        chown_to_server_user(&log);

        let initdb = command_as_server_user(&bin.join("initdb"))
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log_file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let child = command_as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "log_statement=all",
            ])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let server = Self {
            child,
            port,
            superuser_password,
            log,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut config = tokio_postgres::Config::new();
            config
                .host("127.0.0.1")
                .port(self.port)
                .user(user)
                .password(password)
                .dbname("postgres");
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return Ok(client);
                }
                // The server is still starting up.
                Err(err)
                    if err
                        .as_db_error()
                        .is_some_and(|db| db.code().code() == "57P03")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn superuser(&self) -> tokio_postgres::Client {
        self.connect("postgres", &self.superuser_password)
            .await
            .unwrap()
    }

    fn credentials(&self, user: &str, password: &str) -> String {
        serde_json::json!({
            "engine": "postgres", "host": "127.0.0.1", "port": self.port,
            "dbname": "postgres", "username": user, "password": password,
        })
        .to_string()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT) by PID; SIGKILL if it does not go within ten seconds.
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_auth_failure(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| db.code().code() == "28P01")
}

fn rotate(rotator: Option<&str>) -> RotateRequest {
    RotateRequest {
        rotator: rotator.map(str::to_owned),
        rotate_immediately: true,
        ..RotateRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotation_changes_the_password_in_the_database() {
    let server = PostgresServer::start();
    let admin = server.superuser().await;
    // A role name that needs quoting, to exercise identifier quoting.
    let role = "app \"svc\"-1";
    admin
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD 'first-password'",
            arca::lifecycle::rotation::quote_identifier(role).unwrap()
        ))
        .await
        .unwrap();
    server.connect(role, "first-password").await.unwrap();

    let arca = memory_arca().await;
    create(
        &arca,
        "prod/db",
        SecretType::DatabaseCredentials,
        &server.credentials(role, "first-password"),
        r#"{"password_length": 24}"#,
    )
    .await;
    let rotated = rotate_now(&arca, REGION, "prod/db", rotate(Some(POSTGRES_ROTATOR)))
        .await
        .unwrap();

    let now = current(&arca, "prod/db").await;
    assert_eq!(rotated.version_id.as_deref(), Some(now.version_id.as_str()));
    let fields = json_of(&now);
    let password = fields["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 24);
    assert_eq!(fields["username"], role);
    assert_eq!(fields["port"], server.port);
    assert_eq!(
        json_of(&version(&arca, "prod/db", AWSPREVIOUS).await)["password"],
        "first-password"
    );

    // The new password connects; the old one no longer does.
    let client = server.connect(role, &password).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), role);
    let old = server.connect(role, "first-password").await;
    assert!(
        old.as_ref().is_err_and(is_auth_failure),
        "old password: {:?}",
        old.err()
    );
    // The server got a SCRAM verifier, never the clear password (log_statement = all).
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("ALTER ROLE"), "the statement was not logged");
    assert!(
        !log.contains(&password),
        "the clear password reached the server's log"
    );

    // A second rotation works from the rotated credentials.
    rotate_now(&arca, REGION, "prod/db", rotate(None))
        .await
        .unwrap();
    let third = json_of(&current(&arca, "prod/db").await)["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(third, password);
    server.connect(role, &third).await.unwrap();
    assert!(
        server
            .connect(role, &password)
            .await
            .is_err_and(|e| is_auth_failure(&e))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_step_leaves_awscurrent_and_resumes_later() {
    let server = PostgresServer::start();
    let admin = server.superuser().await;
    // The role cannot log in: setSecret (done by the master) succeeds, testSecret cannot
    // connect with the new password.
    admin
        .batch_execute("CREATE ROLE reporting NOLOGIN PASSWORD 'initial'")
        .await
        .unwrap();
    let arca = memory_arca().await;
    create(
        &arca,
        "db/master",
        SecretType::DatabaseCredentials,
        &server.credentials("postgres", &server.superuser_password),
        "{}",
    )
    .await;
    let mut value: serde_json::Value =
        serde_json::from_str(&server.credentials("reporting", "initial")).unwrap();
    value["masterarn"] = "db/master".into();
    create(
        &arca,
        "db/reporting",
        SecretType::DatabaseCredentials,
        &value.to_string(),
        "{}",
    )
    .await;
    let before = current(&arca, "db/reporting").await;

    let failed = rotate_now(
        &arca,
        REGION,
        "db/reporting",
        rotate(Some(POSTGRES_ROTATOR)),
    )
    .await;
    let Err(SecretsError::InvalidRequest(message)) = failed else {
        panic!("the rotation should fail: {failed:?}");
    };
    assert!(message.contains("testSecret"), "{message}");
    assert!(message.contains("not permitted to log in"), "{message}");
    assert_eq!(
        current(&arca, "db/reporting").await.version_id,
        before.version_id
    );
    let pending = version(&arca, "db/reporting", AWSPENDING).await;
    let pending_password = json_of(&pending)["password"].as_str().unwrap().to_owned();
    assert!(!message.contains(&pending_password));
    let state = describe(&arca, "db/reporting").await.rotation;
    let failure = state.last_failure.unwrap();
    assert_eq!((failure.step.as_str(), failure.attempts), ("testSecret", 1));

    // The database is fixed; the retry resumes the same pending version and finishes.
    admin
        .batch_execute("ALTER ROLE reporting LOGIN")
        .await
        .unwrap();
    let done = rotate_now(&arca, REGION, "db/reporting", rotate(None))
        .await
        .unwrap();
    assert_eq!(
        done.version_id.as_deref(),
        Some(pending.version_id.as_str())
    );
    assert_eq!(
        json_of(&current(&arca, "db/reporting").await)["password"],
        pending_password.as_str()
    );
    assert!(
        describe(&arca, "db/reporting")
            .await
            .rotation
            .last_failure
            .is_none()
    );
    server
        .connect("reporting", &pending_password)
        .await
        .unwrap();
    assert!(
        server
            .connect("reporting", "initial")
            .await
            .is_err_and(|e| is_auth_failure(&e))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_changes_nothing() {
    let server = PostgresServer::start();
    let arca = memory_arca().await;
    let mut settings = RotationSettings::default();
    settings.postgres.connect_timeout_secs = 2;
    arca.rotations().configure(settings).unwrap();
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let value = server
        .credentials("nobody_here", "pw")
        .replace(&format!(":{}", server.port), &format!(":{closed}"));
    create(
        &arca,
        "db/gone",
        SecretType::DatabaseCredentials,
        &value,
        "{}",
    )
    .await;
    let before = current(&arca, "db/gone").await;
    let failed = rotate_now(&arca, REGION, "db/gone", rotate(Some(POSTGRES_ROTATOR))).await;
    let Err(SecretsError::InvalidRequest(message)) = failed else {
        panic!("{failed:?}");
    };
    assert!(
        message.contains("setSecret") && message.contains("cannot connect"),
        "{message}"
    );
    assert_eq!(
        current(&arca, "db/gone").await.version_id,
        before.version_id
    );
    assert_eq!(
        describe(&arca, "db/gone")
            .await
            .rotation
            .last_failure
            .unwrap()
            .step,
        "setSecret"
    );
}
