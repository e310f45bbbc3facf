//! A child process in its own process group, so that stopping it stops everything it started.
//!
//! `arca run` and the agent's commands start children with `process_group(0)`: the child
//! leads a new group whose id is its pid, and every process it forks stays in that group
//! unless it leaves on purpose (`setsid`, a daemon). Stopping sends `SIGTERM` to the leader,
//! waits up to a grace period for it to exit, then `SIGTERM`s whatever is left of the group
//! and `SIGKILL`s it after a short wait; so a grandchild started with `sh -c 'sleep 1000 &
//! wait'` does not outlive the stop (OpenBao's agent was seen leaving one running).
//!
//! Signals go through nix's safe wrappers over `kill(2)` (the workspace forbids `unsafe`).
//! Unix only.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::value::SecretBytes;

/// How long what is left of a group after its leader exited gets between `SIGTERM` and
/// `SIGKILL`.
pub const GROUP_GRACE: Duration = Duration::from_secs(2);

/// Environment variables a child never inherits from arca: arca's own credentials.
pub const WITHHELD_ENV: &[&str] = &["ARCA_TOKEN", "VAULT_TOKEN"];

/// A running child and its process group.
#[derive(Debug)]
pub struct GroupChild {
    child: tokio::process::Child,
    pgid: Pid,
    status: Option<ExitStatus>,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnError {
    /// The program.
    pub program: String,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl SpawnError {
    /// The exit code a shell gives for this: 127 for a command not found, 126 for one that
    /// cannot be run.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self.source.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// Starts `command` (program and arguments) in a new process group, with arca's environment
/// less [`WITHHELD_ENV`], plus `env`.
///
/// # Errors
/// [`SpawnError`].
pub fn spawn(
    command: &[OsString],
    env: &[(String, SecretBytes)],
) -> Result<GroupChild, SpawnError> {
    let Some((program, args)) = command.split_first() else {
        return Err(SpawnError {
            program: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"),
        });
    };
    let mut builder = tokio::process::Command::new(program);
    builder.args(args).process_group(0);
    for name in WITHHELD_ENV {
        builder.env_remove(name);
    }
    for (name, value) in env {
        builder.env(name, std::ffi::OsStr::from_bytes(value.expose_secret()));
    }
    let spawned = builder.spawn();
    // The builder holds copies of the values; drop it now rather than at the end of scope.
    drop(builder);
    let child = spawned.map_err(|source| SpawnError {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| SpawnError {
            program: program.to_string_lossy().into_owned(),
            source: std::io::Error::other("the child has no pid"),
        })?;
    Ok(GroupChild {
        child,
        pgid: Pid::from_raw(pid),
        status: None,
    })
}

/// The exit code a shell reports for `status`: the code, or 128 + the signal number.
#[must_use]
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

impl GroupChild {
    /// The leader's pid (also the group id).
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Sends `signal` to the leader only (a shell's `kill PID`).
    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            let _ = kill(self.pgid, signal);
        }
    }

    /// Sends `signal` to every process of the group.
    pub fn signal_group(&self, signal: Signal) {
        let _ = killpg(self.pgid, signal);
    }

    /// Whether any process of the group is still there.
    #[must_use]
    pub fn group_alive(&self) -> bool {
        killpg(self.pgid, None).is_ok()
    }

    /// Waits for the leader to exit (cancel-safe: may be raced in a `select!`).
    ///
    /// # Errors
    /// An I/O error of `waitpid`.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Ends what is left of the group once the leader has exited: `SIGTERM`, then `SIGKILL`
    /// after [`GROUP_GRACE`] if anything is still there.
    pub async fn clean_group(&self) {
        if !self.group_alive() {
            return;
        }
        self.signal_group(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + GROUP_GRACE;
        while self.group_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.group_alive() {
            self.signal_group(Signal::SIGKILL);
        }
    }

    /// Stops the child: `signal` to the leader, up to `grace` for it to exit, then `SIGKILL`
    /// to the whole group; finally what is left of the group is ended. Returns the leader's
    /// exit status.
    ///
    /// # Errors
    /// An I/O error of `waitpid`.
    pub async fn stop(&mut self, signal: Signal, grace: Duration) -> std::io::Result<ExitStatus> {
        self.signal(signal);
        let status = match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.signal_group(Signal::SIGKILL);
                self.wait().await?
            }
        };
        self.clean_group().await;
        Ok(status)
    }
}

/// Parses a signal name: `HUP`, `SIGHUP`, `hup`, or a number.
///
/// # Errors
/// A message naming the input.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("unknown signal {text}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
    }

    #[tokio::test]
    async fn stopping_ends_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        let script = format!("sleep 1000 & echo $! > {}; wait", marker.display());
        let mut child = spawn(
            &["sh".into(), "-c".into(), script.into()],
            &[("X".into(), SecretBytes::new(b"1".to_vec()))],
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let grandchild: i32 = loop {
            if let Ok(text) = std::fs::read_to_string(&marker)
                && let Ok(pid) = text.trim().parse()
            {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let status = child
            .stop(Signal::SIGTERM, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(exit_code(status), 128 + 15);
        assert!(gone(grandchild), "the grandchild is gone");
    }

    /// A process that no longer exists or is a zombie waiting for init to reap it.
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }
}
