//! `arca run`: resolve every mapping, then run a command with the values in its environment,
//! and keep them fresh.
//!
//! - **All or nothing.** Every reference is resolved and validated before the child starts;
//!   one failure and the child never starts (exit code [`EXIT_ARCA_ERROR`]).
//! - **Only the child sees the values.** They go into the child's environment and nowhere
//!   else: not arca's own environment, arguments or logs. arca keeps a keyed fingerprint of
//!   each value to detect changes, not the value. arca's own token (`ARCA_TOKEN`,
//!   `VAULT_TOKEN`) is withheld from the child.
//! - **A process group.** The child leads a new process group ([`super::process`]); `SIGTERM`,
//!   `SIGINT`, `SIGQUIT`, `SIGHUP`, `SIGUSR1`, `SIGUSR2` and `SIGWINCH` sent to arca are
//!   forwarded to the child. After `SIGTERM`, `SIGINT` or `SIGQUIT`, the child has the grace
//!   period to exit before the whole group is killed; whatever the child leaves in its group
//!   when it exits is ended too. arca exits with the child's exit code (128 + N when a signal N
//!   ended it).
//! - **Refresh.** On a change of one of its secrets (the server's change feed, within about a
//!   second) and every `--refresh` interval, arca resolves again; if a value changed, it
//!   restarts the child with the new environment (`--on-change restart`, the default), sends
//!   it a signal (`signal:HUP`: the child keeps its environment and re-reads its secrets from
//!   wherever it gets them, e.g. files an agent renders), or does nothing (`none`). A refresh
//!   that fails (the server is down, a value fails validation) keeps the running child as it
//!   is and says why on stderr.
//!
//! The child is not made the terminal's foreground process group, so `arca run` suits
//! services rather than interactive programs. If arca itself is killed with `SIGKILL`, it
//! cannot stop the child. Unix only.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use super::connection::Connection;
use super::mapping::Mapping;
use super::process::{self, GroupChild};
use super::resolve::{Resolved, Resolver};
use super::value::SecretBytes;
use super::watch::{ChangeWatcher, Notice};

/// The exit code when arca itself fails before or instead of running the child (a secret
/// that cannot be resolved, a bad option), as `env` and `docker run` use 125.
pub const EXIT_ARCA_ERROR: i32 = 125;

/// What to do when a value changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop the child (grace period, then the whole group) and start it with the new values.
    Restart,
    /// Send the child this signal; its environment stays as it was.
    Signal(Signal),
    /// Nothing.
    Nothing,
}

impl std::str::FromStr for OnChange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "restart" => Ok(Self::Restart),
            "none" => Ok(Self::Nothing),
            other => match other.strip_prefix("signal:") {
                Some(name) => process::parse_signal(name).map(Self::Signal),
                None => Err(format!(
                    "unknown --on-change {other:?} (restart, signal:NAME, none)"
                )),
            },
        }
    }
}

/// How to run.
#[derive(Debug)]
pub struct RunOptions {
    /// The connection, with its token.
    pub connection: Connection,
    /// The environment variables to set, by name.
    pub mappings: Vec<Mapping>,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Resolve again at this interval (besides the change feed).
    pub refresh: Option<Duration>,
    /// What a change does.
    pub on_change: OnChange,
    /// How long the child has to exit after `SIGTERM` before its group is killed.
    pub grace: Duration,
}

/// Checks that a mapping name can be an environment variable: a letter or `_`, then
/// letters, digits and `_`.
///
/// # Errors
/// A message naming the mapping.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "mapping {name}: an environment variable name is a letter or _ followed by letters, digits or _"
        ))
    }
}

/// Keyed fingerprints of the delivered values: enough to tell whether a value changed,
/// without keeping the value.
struct Fingerprints {
    key: [u8; 32],
    digests: Vec<(String, [u8; 32])>,
}

impl Fingerprints {
    fn new() -> Self {
        let mut key = [0u8; 32];
        // Without randomness the digests are merely unkeyed; change detection still works.
        let _ = arca_storage::keys::fill_random(&mut key);
        Self {
            key,
            digests: Vec::new(),
        }
    }

    fn of(&self, resolved: &[Resolved]) -> Vec<(String, [u8; 32])> {
        resolved
            .iter()
            .map(|r| {
                let mut hasher = Sha256::new();
                hasher.update(self.key);
                hasher.update(r.value.expose_secret());
                (r.name.clone(), hasher.finalize().into())
            })
            .collect()
    }

    /// Records `resolved`; returns the names whose value changed since the last record.
    fn update(&mut self, resolved: &[Resolved]) -> Vec<String> {
        let next = self.of(resolved);
        let changed = next
            .iter()
            .zip(&self.digests)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.clone())
            .collect();
        self.digests = next;
        changed
    }
}

impl Drop for Fingerprints {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

fn environment(resolved: &[Resolved]) -> Result<Vec<(String, SecretBytes)>, String> {
    resolved
        .iter()
        .map(|r| {
            if r.value.expose_secret().contains(&0) {
                Err(format!(
                    "mapping {}: the value holds a NUL byte, which an environment variable cannot carry; give it a base64-encode transform",
                    r.name
                ))
            } else {
                Ok((r.name.clone(), r.value.clone()))
            }
        })
        .collect()
}

fn say(message: &str) {
    eprintln!("arca run: {message}");
}

/// Runs the command; returns the exit code for arca to exit with.
pub async fn run(options: RunOptions) -> i32 {
    let resolver = Resolver::new(options.connection.clone());
    // The feed's cursor is read before the first resolution, so no change slips between.
    let mut watcher = if options.on_change == OnChange::Nothing {
        None
    } else {
        Some(ChangeWatcher::start(options.connection.clone()).await)
    };
    let resolved = match resolver.resolve(&options.mappings).await {
        Ok(resolved) => resolved,
        Err(err) => {
            say(&format!("{err}; the command was not started"));
            return EXIT_ARCA_ERROR;
        }
    };
    let env = match environment(&resolved) {
        Ok(env) => env,
        Err(err) => {
            say(&format!("{err}; the command was not started"));
            return EXIT_ARCA_ERROR;
        }
    };
    let mut fingerprints = Fingerprints::new();
    fingerprints.update(&resolved);
    drop(resolved);
    let mut child = match process::spawn(&options.command, &env) {
        Ok(child) => child,
        Err(err) => {
            say(&err.to_string());
            return err.exit_code();
        }
    };
    drop(env);
    match Supervisor::new(&options, resolver, fingerprints) {
        Ok(mut supervisor) => supervisor.supervise(&mut child, watcher.as_mut()).await,
        Err(err) => {
            say(&format!("cannot install signal handlers: {err}"));
            let _ = child.stop(Signal::SIGTERM, options.grace).await;
            EXIT_ARCA_ERROR
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    winch: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            winch: signal(SignalKind::window_change())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.quit.recv() => Signal::SIGQUIT,
            _ = self.hup.recv() => Signal::SIGHUP,
            _ = self.usr1.recv() => Signal::SIGUSR1,
            _ = self.usr2.recv() => Signal::SIGUSR2,
            _ = self.winch.recv() => Signal::SIGWINCH,
        }
    }
}

struct Supervisor<'a> {
    options: &'a RunOptions,
    resolver: Resolver,
    fingerprints: Fingerprints,
    signals: Signals,
}

impl<'a> Supervisor<'a> {
    fn new(
        options: &'a RunOptions,
        resolver: Resolver,
        fingerprints: Fingerprints,
    ) -> std::io::Result<Self> {
        Ok(Self {
            options,
            resolver,
            fingerprints,
            signals: Signals::install()?,
        })
    }

    async fn supervise(
        &mut self,
        child: &mut GroupChild,
        mut watcher: Option<&mut (ChangeWatcher, tokio::sync::mpsc::Receiver<Notice>)>,
    ) -> i32 {
        let sources: BTreeSet<_> = self
            .options
            .mappings
            .iter()
            .map(|m| m.reference().source().clone())
            .collect();
        let mut interval = self.options.refresh.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let mut stop_deadline: Option<tokio::time::Instant> = None;
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
                match watcher.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let killing = async {
                match stop_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => {
                    let code = match status {
                        Ok(status) => process::exit_code(status),
                        Err(err) => {
                            say(&format!("cannot wait for the command: {err}"));
                            EXIT_ARCA_ERROR
                        }
                    };
                    child.clean_group().await;
                    return code;
                }
                received = self.signals.next() => {
                    child.signal(received);
                    if matches!(received, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
                        && stop_deadline.is_none()
                    {
                        stop_deadline = Some(tokio::time::Instant::now() + self.options.grace);
                    }
                }
                () = killing => {
                    say("the command did not exit in time; killing its process group");
                    child.signal_group(Signal::SIGKILL);
                    stop_deadline = None;
                }
                () = tick => {
                    if stop_deadline.is_none() && let Some(code) = self.refresh(child).await {
                        return code;
                    }
                }
                notice = notice => match notice {
                    Some(Notice::Changed(events)) => {
                        let ours = events
                            .iter()
                            .any(|event| sources.iter().any(|s| event.affects(s)));
                        if ours
                            && stop_deadline.is_none()
                            && let Some(code) = self.refresh(child).await
                        {
                            return code;
                        }
                    }
                    Some(Notice::Reset) => {
                        if stop_deadline.is_none() && let Some(code) = self.refresh(child).await {
                            return code;
                        }
                    }
                    Some(Notice::Unavailable(why)) => {
                        say(&format!("change feed unavailable ({why}); retrying"));
                    }
                    None => watcher = None,
                },
            }
        }
    }

    /// Resolves again and applies `--on-change` when a value changed. A failed resolution
    /// leaves the child as it is. `Some(code)` when arca has to exit: the old child is gone
    /// and the new one cannot start.
    async fn refresh(&mut self, child: &mut GroupChild) -> Option<i32> {
        let resolved = match self.resolver.resolve(&self.options.mappings).await {
            Ok(resolved) => resolved,
            Err(err) => {
                say(&format!(
                    "refresh failed, keeping the running command: {err}"
                ));
                return None;
            }
        };
        let env = match environment(&resolved) {
            Ok(env) => env,
            Err(err) => {
                say(&format!(
                    "refresh failed, keeping the running command: {err}"
                ));
                return None;
            }
        };
        let changed = self.fingerprints.update(&resolved);
        drop(resolved);
        if changed.is_empty() {
            return None;
        }
        let names = changed.join(", ");
        match self.options.on_change {
            OnChange::Nothing => say(&format!("{names} changed")),
            OnChange::Signal(sig) => {
                say(&format!("{names} changed; sending {sig} to the command"));
                child.signal(sig);
            }
            OnChange::Restart => {
                say(&format!("{names} changed; restarting the command"));
                if let Err(err) = child.stop(Signal::SIGTERM, self.options.grace).await {
                    say(&format!("cannot wait for the command: {err}"));
                }
                match process::spawn(&self.options.command, &env) {
                    Ok(next) => *child = next,
                    Err(err) => {
                        say(&err.to_string());
                        return Some(err.exit_code());
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::reference::{Source, Store};

    fn resolved(name: &str, value: &str) -> Resolved {
        Resolved {
            name: name.into(),
            value: SecretBytes::new(value.as_bytes().to_vec()),
            version: "1".into(),
            source: Source {
                store: Store::Kv,
                path: "s/x".into(),
                version: None,
                stage: None,
            },
        }
    }

    #[test]
    fn on_change_parses() {
        assert_eq!("restart".parse::<OnChange>().unwrap(), OnChange::Restart);
        assert_eq!("none".parse::<OnChange>().unwrap(), OnChange::Nothing);
        assert_eq!(
            "signal:HUP".parse::<OnChange>().unwrap(),
            OnChange::Signal(Signal::SIGHUP)
        );
        assert!("signal:NOPE".parse::<OnChange>().is_err());
        assert!("reload".parse::<OnChange>().is_err());
    }

    #[test]
    fn env_names_and_nul_bytes() {
        assert!(check_env_name("DB_PASSWORD").is_ok());
        assert!(check_env_name("_x1").is_ok());
        for bad in ["1X", "A-B", "a.b", ""] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
        assert!(environment(&[resolved("A", "x\0y")]).is_err());
    }

    #[test]
    fn fingerprints_name_what_changed() {
        let mut f = Fingerprints::new();
        assert!(
            f.update(&[resolved("A", "1"), resolved("B", "2")])
                .is_empty()
        );
        assert!(
            f.update(&[resolved("A", "1"), resolved("B", "2")])
                .is_empty()
        );
        assert_eq!(
            f.update(&[resolved("A", "1"), resolved("B", "3")]),
            vec!["B".to_owned()]
        );
    }
}
