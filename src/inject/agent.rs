//! `arca agent --config agent.toml`: authenticates, delivers secrets as files and through a
//! sidecar listener, and keeps them fresh.
//!
//! Every delivery is a *job* ([`config`]): a `[[file]]` renders a template (or one value) to a
//! destination ([`super::file`]: atomic, 0600 by default, rewritten only on change, with an
//! optional command after each change); the `[sidecar]` serves values over HTTP
//! ([`http`]). Each job has a status ([`status`]): method, target, number of secrets, created,
//! last refresh, refresh count, last error.
//!
//! Refresh triggers: the server's change feed (a job refreshes when one of its secrets
//! changes, within about a second), `refresh_interval`, `SIGHUP` (everything), a job's
//! health-check command failing (that job), and a new login. A refresh that fails (arca
//! unreachable or sealed, a value that fails validation, a template error) leaves the last
//! good delivery in place; the job's status says why, and the job is retried every
//! [`RETRY_INTERVAL`] until it succeeds.
//!
//! `--once` (init-container mode) authenticates, resolves and renders every file job, writes
//! all the files only when every one of them could be prepared (each to a synced temporary
//! file beside its destination), and exits: 0 when all were delivered, 1 when anything failed
//! (nothing was replaced), 2 for a configuration error. It runs no command and starts no
//! sidecar.
//!
//! Revoking a job (`arca agent revoke JOB`, or shutting down with `cleanup = true`) stops it
//! and removes exactly the files it delivered, and stops the sidecar's listener. Unix only.

pub mod auth;
pub mod config;
pub mod http;
pub mod status;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::connection::Connection;
use super::file::{self, Outcome};
use super::process;
use super::resolve::{ResolveError, Resolved, Resolver};
use super::value::SecretBytes;
use super::watch::{ChangeWatcher, Notice};
use auth::AutoAuth;
use config::{AgentConfig, CommandConfig, Contents, FileJob, SidecarJob};
use http::{RevokeRequest, Server, Values};
use status::{Board, JobStatus, now};

/// How often a job whose last refresh failed is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Exit code: something could not be delivered (`--once`), or the agent could not start.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the configuration is invalid.
pub const EXIT_CONFIG: i32 = 2;

fn say(message: &str) {
    eprintln!("arca agent: {message}");
}

/// Runs the agent; returns its exit code.
pub async fn run(config_path: &Path, once: bool) -> i32 {
    let config = match AgentConfig::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            say(&err.to_string());
            return EXIT_CONFIG;
        }
    };
    let connection = match Connection::new(&config.address) {
        Ok(connection) => connection,
        Err(err) => {
            say(&err.to_string());
            return EXIT_CONFIG;
        }
    };
    let auth = AutoAuth::new(config.auth.clone(), connection.clone());
    if once {
        run_once(&config, connection, &auth).await
    } else {
        Agent::start(config, connection, auth).await
    }
}

/// Renders a file job's contents from its resolved mappings.
fn render(job: &FileJob, resolved: &[Resolved]) -> Result<SecretBytes, String> {
    match &job.contents {
        Contents::Template(template) => template.render(resolved).map_err(|e| e.to_string()),
        Contents::Raw => resolved
            .first()
            .map(|r| r.value.clone())
            .ok_or_else(|| "no value".to_owned()),
    }
}

async fn run_once(config: &AgentConfig, connection: Connection, auth: &AutoAuth) -> i32 {
    if config.sidecar.is_some() {
        say("--once renders files only; the [sidecar] is not started");
    }
    if let Err(err) = auth.login().await {
        say(&format!(
            "authentication failed: {err}; nothing was written"
        ));
        return EXIT_FAILED;
    }
    let resolver = Resolver::new(connection);
    let mut rendered = Vec::with_capacity(config.files.len());
    for job in &config.files {
        let contents = match resolver.resolve(&job.mappings).await {
            Ok(resolved) => render(job, &resolved),
            Err(err) => Err(err.to_string()),
        };
        match contents {
            Ok(contents) => rendered.push((job, contents)),
            Err(err) => {
                say(&format!("job {}: {err}; nothing was written", job.name));
                return EXIT_FAILED;
            }
        }
    }
    // Every file is prepared before any is replaced: a failure here drops the staged
    // temporary files and leaves every destination as it was.
    let mut staged = Vec::with_capacity(rendered.len());
    for (job, contents) in &rendered {
        match file::stage(&job.spec, contents.expose_secret()) {
            Ok(stage) => staged.push((*job, stage)),
            Err(err) => {
                say(&format!("job {}: {err}; nothing was written", job.name));
                return EXIT_FAILED;
            }
        }
    }
    drop(rendered);
    let (mut written, mut unchanged) = (0, 0);
    for (job, stage) in staged {
        match stage.map_or(Ok(Outcome::Unchanged), file::Staged::commit) {
            Ok(Outcome::Unchanged) => unchanged += 1,
            Ok(Outcome::Written { .. }) => written += 1,
            Err(err) => {
                say(&format!("job {}: {err}", job.name));
                return EXIT_FAILED;
            }
        }
    }
    say(&format!(
        "delivered {} files ({written} written, {unchanged} unchanged)",
        written + unchanged
    ));
    0
}

/// Runs `command` (its own process group, no secret in its environment) within its timeout;
/// returns a one-line outcome and whether it succeeded.
async fn run_command(command: &CommandConfig) -> (bool, String) {
    let argv: Vec<OsString> = command.argv.iter().map(OsString::from).collect();
    let mut child = match process::spawn(&argv, &[]) {
        Ok(child) => child,
        Err(err) => return (false, err.to_string()),
    };
    match tokio::time::timeout(command.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            child.clean_group().await;
            let code = process::exit_code(status);
            (code == 0, format!("exit {code}"))
        }
        Ok(Err(err)) => (false, format!("cannot wait for it: {err}")),
        Err(_) => {
            let _ = child.stop(Signal::SIGTERM, Duration::from_secs(1)).await;
            (
                false,
                format!("timed out after {}s", command.timeout.as_secs()),
            )
        }
    }
}

/// What wakes the main loop besides signals and the feed.
#[derive(Debug)]
enum Trigger {
    /// Auto-auth logged in (again).
    Login,
    /// A job's health check failed.
    Health(String),
}

struct FileRuntime {
    job: FileJob,
    delivered: bool,
    revoked: bool,
    health: Option<tokio::task::JoinHandle<()>>,
}

struct SidecarRuntime {
    job: SidecarJob,
    values: Values,
    last_error: Arc<RwLock<Option<String>>>,
    server: Option<Server>,
    revoked: bool,
}

struct Agent {
    resolver: Resolver,
    auth: AutoAuth,
    board: Arc<Board>,
    files: Vec<FileRuntime>,
    sidecar: Option<SidecarRuntime>,
    cleanup: bool,
}

impl Agent {
    async fn start(config: AgentConfig, connection: Connection, auth: AutoAuth) -> i32 {
        let mut statuses: Vec<JobStatus> = config
            .files
            .iter()
            .map(|j| {
                JobStatus::new(
                    &j.name,
                    "file",
                    j.spec.path.display().to_string(),
                    j.mappings.len(),
                )
            })
            .collect();
        if let Some(sidecar) = &config.sidecar {
            statuses.push(JobStatus::new(
                &sidecar.name,
                "sidecar",
                sidecar.listen.to_string(),
                sidecar.mappings.len(),
            ));
        }
        let board = Arc::new(Board::new(statuses, auth.clone()));
        let first = match auth.login().await {
            Ok(lease) => Some(lease),
            Err(err) => {
                say(&format!("authentication failed: {err}; retrying"));
                None
            }
        };
        // The feed's cursor is read before the first refresh, so no change slips between.
        let mut watcher = if config.change_feed {
            Some(ChangeWatcher::start(connection.clone()).await)
        } else {
            None
        };
        let (trigger_tx, mut triggers) = mpsc::channel::<Trigger>(64);
        let login_tx = trigger_tx.clone();
        let authenticated = first.is_some();
        let maintainer = tokio::spawn(auth.clone().maintain(first, move || {
            let _ = login_tx.try_send(Trigger::Login);
        }));
        let mut sidecar = None;
        if let Some(job) = config.sidecar {
            let values: Values = Arc::new(RwLock::new(BTreeMap::new()));
            let last_error = Arc::new(RwLock::new(None));
            let names = job.mappings.iter().map(|m| m.name().to_owned()).collect();
            match http::start_sidecar(
                &job.listen,
                &job.token_file,
                names,
                Arc::clone(&values),
                Arc::clone(&last_error),
                Arc::clone(&board),
            )
            .await
            {
                Ok(server) => {
                    // Tests and scripts read this line to learn the port of a `:0` listener.
                    println!(
                        "arca agent: sidecar {} listening on {}",
                        job.name, server.address
                    );
                    sidecar = Some(SidecarRuntime {
                        job,
                        values,
                        last_error,
                        server: Some(server),
                        revoked: false,
                    });
                }
                Err(err) => {
                    say(&format!("job {}: {err}", job.name));
                    maintainer.abort();
                    return EXIT_FAILED;
                }
            }
        }
        let (revoke_tx, mut revokes) = mpsc::channel::<RevokeRequest>(8);
        let control = match &config.control_socket {
            Some(path) => match http::start_control(path, Arc::clone(&board), revoke_tx).await {
                Ok(server) => Some(server),
                Err(err) => {
                    say(&format!("control socket: {err}"));
                    maintainer.abort();
                    if let Some(runtime) = sidecar.as_mut()
                        && let Some(server) = runtime.server.take()
                    {
                        server.stop().await;
                    }
                    return EXIT_FAILED;
                }
            },
            None => None,
        };
        let files = config
            .files
            .into_iter()
            .map(|job| {
                let health = job.health_check.clone().map(|check| {
                    let name = job.name.clone();
                    let tx = trigger_tx.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(check.interval).await;
                            let (ok, outcome) = run_command(&check.command).await;
                            if !ok {
                                say(&format!(
                                    "job {name}: health check failed ({outcome}); refreshing"
                                ));
                                if tx.send(Trigger::Health(name.clone())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    })
                });
                FileRuntime {
                    job,
                    delivered: false,
                    revoked: false,
                    health,
                }
            })
            .collect();
        drop(trigger_tx);
        let mut agent = Self {
            resolver: Resolver::new(connection),
            auth,
            board,
            files,
            sidecar,
            cleanup: config.cleanup,
        };
        if authenticated {
            agent.refresh_all().await;
        }
        say("ready");
        let code = agent
            .main_loop(
                config.refresh_interval,
                watcher.as_mut().map(|(_, rx)| rx),
                &mut triggers,
                &mut revokes,
            )
            .await;
        maintainer.abort();
        drop(watcher);
        if agent.cleanup {
            for name in agent.job_names() {
                if let Ok(removed) = agent.revoke(&name).await
                    && !removed.is_empty()
                {
                    say(&format!(
                        "cleanup: job {name} removed {}",
                        removed.join(", ")
                    ));
                }
            }
        }
        if let Some(runtime) = agent.sidecar.as_mut()
            && let Some(server) = runtime.server.take()
        {
            server.stop().await;
        }
        if let Some(control) = control {
            control.stop().await;
        }
        code
    }

    fn job_names(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|f| f.job.name.clone())
            .chain(self.sidecar.iter().map(|s| s.job.name.clone()))
            .collect()
    }

    async fn main_loop(
        &mut self,
        refresh_interval: Option<Duration>,
        mut notices: Option<&mut mpsc::Receiver<Notice>>,
        triggers: &mut mpsc::Receiver<Trigger>,
        revokes: &mut mpsc::Receiver<RevokeRequest>,
    ) -> i32 {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            say("cannot install signal handlers");
            return EXIT_FAILED;
        };
        let mut interval = refresh_interval.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let mut retry =
            tokio::time::interval_at(tokio::time::Instant::now() + RETRY_INTERVAL, RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let tick = async {
                match interval.as_mut() {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let notice = async {
                match notices.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term.recv() => return 0,
                _ = int.recv() => return 0,
                _ = hup.recv() => {
                    say("SIGHUP: refreshing every job");
                    self.refresh_all().await;
                }
                () = tick => self.refresh_all().await,
                _ = retry.tick() => self.retry_failed().await,
                notice = notice => match notice {
                    Some(Notice::Changed(events)) => {
                        self.board.count_events(events.len());
                        for index in 0..self.files.len() {
                            let job = &self.files[index].job;
                            let affected = events.iter().any(|event| {
                                job.mappings.iter().any(|m| event.affects(m.reference().source()))
                            });
                            if affected {
                                self.refresh_file(index).await;
                            }
                        }
                        let sidecar_affected = self.sidecar.as_ref().is_some_and(|s| {
                            events.iter().any(|event| {
                                s.job.mappings.iter().any(|m| event.affects(m.reference().source()))
                            })
                        });
                        if sidecar_affected {
                            self.refresh_sidecar().await;
                        }
                    }
                    Some(Notice::Reset) => self.refresh_all().await,
                    Some(Notice::Unavailable(why)) => {
                        say(&format!("change feed unavailable ({why}); retrying"));
                    }
                    None => notices = None,
                },
                trigger = triggers.recv() => match trigger {
                    Some(Trigger::Login) => self.retry_failed().await,
                    Some(Trigger::Health(name)) => {
                        if let Some(index) = self.files.iter().position(|f| f.job.name == name) {
                            self.refresh_file(index).await;
                        }
                    }
                    None => {}
                },
                request = revokes.recv() => {
                    if let Some((name, reply)) = request {
                        let result = self.revoke(&name).await;
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    async fn refresh_all(&mut self) {
        for index in 0..self.files.len() {
            self.refresh_file(index).await;
        }
        self.refresh_sidecar().await;
    }

    /// Refreshes the jobs whose last refresh failed or never happened.
    async fn retry_failed(&mut self) {
        let failing: Vec<String> = self
            .board
            .jobs()
            .into_iter()
            .filter(|j| !j.revoked && (j.last_error.is_some() || j.last_refresh.is_none()))
            .map(|j| j.name)
            .collect();
        for name in failing {
            if let Some(index) = self.files.iter().position(|f| f.job.name == name) {
                self.refresh_file(index).await;
            } else if self.sidecar.as_ref().is_some_and(|s| s.job.name == name) {
                self.refresh_sidecar().await;
            }
        }
    }

    fn failed(&self, name: &str, err: &str) {
        self.board.update(name, |s| {
            s.error_count += 1;
            s.last_error = Some(err.to_owned());
        });
    }

    fn resolve_failed(&self, err: &super::resolve::MappingError) {
        if matches!(err.source, ResolveError::Denied | ResolveError::NoToken) {
            self.auth.nudge();
        }
    }

    async fn refresh_file(&mut self, index: usize) {
        let runtime = &self.files[index];
        if runtime.revoked {
            return;
        }
        let name = runtime.job.name.clone();
        let contents = match self.resolver.resolve(&runtime.job.mappings).await {
            Ok(resolved) => render(&runtime.job, &resolved),
            Err(err) => {
                self.resolve_failed(&err);
                Err(err.to_string())
            }
        };
        let spec = runtime.job.spec.clone();
        let delivered = match contents {
            Ok(contents) => tokio::task::spawn_blocking(move || {
                file::deliver(&spec, contents.expose_secret()).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the delivery task failed: {e}"))),
            Err(err) => Err(err),
        };
        let outcome = match delivered {
            Ok(outcome) => outcome,
            Err(err) => {
                let previous = self
                    .board
                    .jobs()
                    .into_iter()
                    .find(|j| j.name == name)
                    .and_then(|j| j.last_error);
                if previous.as_deref() != Some(err.as_str()) {
                    say(&format!(
                        "job {name}: refresh failed, the last good file stays: {err}"
                    ));
                }
                self.failed(&name, &err);
                return;
            }
        };
        let runtime = &mut self.files[index];
        runtime.delivered = true;
        let written = matches!(outcome, Outcome::Written { .. });
        self.board.update(&name, |s| {
            s.refresh_count += 1;
            s.last_refresh = Some(now());
            s.last_error = None;
            if written {
                s.delivery_count += 1;
            }
        });
        if written {
            say(&format!(
                "job {name}: wrote {}",
                runtime.job.spec.path.display()
            ));
            if let Some(command) = runtime.job.command.clone() {
                let (_, outcome) = run_command(&command).await;
                self.board
                    .update(&name, |s| s.last_command = Some(outcome.clone()));
            }
        }
    }

    async fn refresh_sidecar(&mut self) {
        let Some(runtime) = self.sidecar.as_ref() else {
            return;
        };
        if runtime.revoked {
            return;
        }
        let name = runtime.job.name.clone();
        match self.resolver.resolve(&runtime.job.mappings).await {
            Ok(resolved) => {
                let next: BTreeMap<String, SecretBytes> =
                    resolved.into_iter().map(|r| (r.name, r.value)).collect();
                let changed = {
                    let mut values = runtime
                        .values
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let changed = *values != next;
                    *values = next;
                    changed
                };
                *runtime
                    .last_error
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.board.update(&name, |s| {
                    s.refresh_count += 1;
                    s.last_refresh = Some(now());
                    s.last_error = None;
                    if changed {
                        s.delivery_count += 1;
                    }
                });
            }
            Err(err) => {
                self.resolve_failed(&err);
                let err = err.to_string();
                say(&format!(
                    "job {name}: refresh failed, the last good values stay: {err}"
                ));
                *runtime
                    .last_error
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.clone());
                self.failed(&name, &err);
            }
        }
    }

    /// Stops job `name` and removes what it delivered; returns the files removed.
    async fn revoke(&mut self, name: &str) -> Result<Vec<String>, String> {
        if let Some(runtime) = self.files.iter_mut().find(|f| f.job.name == name) {
            let mut removed = Vec::new();
            if let Some(health) = runtime.health.take() {
                health.abort();
            }
            if runtime.delivered {
                file::remove(&runtime.job.spec.path).map_err(|e| e.to_string())?;
                removed.push(runtime.job.spec.path.display().to_string());
                runtime.delivered = false;
            }
            runtime.revoked = true;
            self.board.update(name, |s| s.revoked = true);
            return Ok(removed);
        }
        if let Some(runtime) = self.sidecar.as_mut().filter(|s| s.job.name == name) {
            if let Some(server) = runtime.server.take() {
                server.stop().await;
            }
            runtime
                .values
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            runtime.revoked = true;
            self.board.update(name, |s| s.revoked = true);
            return Ok(Vec::new());
        }
        Err(format!("no job named {name}"))
    }
}
