//! `agent.toml`: what the agent authenticates with and what it delivers.
//!
//! ```toml
//! address = "http://127.0.0.1:8200"   # default: ARCA_ADDR, else http://127.0.0.1:8200
//! control_socket = "agent.sock"       # for `arca agent status` / `revoke` (mode 0600)
//! cleanup = true                      # on shutdown, remove every file the jobs delivered
//! refresh_interval = "5m"             # also re-read everything at this interval
//! change_feed = true                  # follow the server's change feed (the default)
//!
//! [auth]                              # a token file ...
//! token_file = "token"
//! # ... or AppRole:
//! # role_id_file = "role-id"
//! # secret_id_file = "secret-id"
//! # approle_mount = "approle"         # the default
//!
//! [[file]]                            # a file job
//! name = "db"
//! destination = "/etc/app/db.env"
//! template = """
//! DB_USER={{ secrets.user }}
//! DB_PASSWORD={{ secrets.password }}
//! """                                 # or template_file = "db.env.j2"; or neither and one secret
//! mode = "0640"                       # default 0600
//! owner = "app"                       # user name or uid; group likewise
//! command = ["systemctl", "reload", "app"]   # run after each change (not in --once)
//! command_timeout = "30s"
//! health_check = { command = ["/usr/local/bin/db-ping"], interval = "30s" }
//! [file.secrets]
//! user = "kv://secret/app/db#username"
//! password = { ref = "kv://secret/app/db#password", min_length = 16 }
//!
//! [sidecar]                           # the HTTP sidecar job
//! listen = "127.0.0.1:8100"           # loopback only; or "unix:/run/app/arca.sock"
//! token_file = "sidecar-token"        # callers send Authorization: Bearer <its content>
//! [sidecar.secrets]
//! db_password = "sm://prod/db#password"
//! ```
//!
//! Relative paths are relative to the configuration file's folder. Everything is checked
//! before anything is fetched: mappings and references, templates (compiled), modes and
//! owners, that each destination's folder exists, that names and destinations are unique,
//! that the sidecar listens on loopback or a unix socket. An error names the job and the
//! mapping.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::super::file::FileSpec;
use super::super::mapping::Mapping;
use super::super::template::Template;

/// A configuration that cannot be used: the message names the file, the job and the mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How the agent authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// A token read from a file (re-read when it changes or stops working).
    TokenFile(PathBuf),
    /// AppRole: role id and secret id read from files.
    AppRole {
        /// The role id's file.
        role_id_file: PathBuf,
        /// The secret id's file.
        secret_id_file: PathBuf,
        /// The mount (`approle`).
        mount: String,
    },
}

/// A command run by the agent (after a change, or as a health check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

/// A health check: its failure forces a refresh of its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The command.
    pub command: CommandConfig,
    /// How often it runs.
    pub interval: Duration,
}

/// What a file job renders.
#[derive(Debug)]
pub enum Contents {
    /// A template over the job's mappings.
    Template(Box<Template>),
    /// The value of the job's only mapping, as is.
    Raw,
}

/// A file job.
#[derive(Debug)]
pub struct FileJob {
    /// The job's name.
    pub name: String,
    /// Where and how.
    pub spec: FileSpec,
    /// What.
    pub contents: Contents,
    /// The mappings.
    pub mappings: Vec<Mapping>,
    /// Run after each change.
    pub command: Option<CommandConfig>,
    /// Forces a refresh when it fails.
    pub health_check: Option<HealthCheck>,
}

/// Where the sidecar listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The sidecar job.
#[derive(Debug)]
pub struct SidecarJob {
    /// The job's name.
    pub name: String,
    /// Where it listens.
    pub listen: Listen,
    /// The file holding the bearer token.
    pub token_file: PathBuf,
    /// What it serves, by name.
    pub mappings: Vec<Mapping>,
}

/// A checked `agent.toml`.
#[derive(Debug)]
pub struct AgentConfig {
    /// The server.
    pub address: String,
    /// The control socket, if any.
    pub control_socket: Option<PathBuf>,
    /// Remove delivered files on shutdown.
    pub cleanup: bool,
    /// Periodic refresh.
    pub refresh_interval: Option<Duration>,
    /// Follow the change feed.
    pub change_feed: bool,
    /// Authentication.
    pub auth: AuthConfig,
    /// File jobs.
    pub files: Vec<FileJob>,
    /// The sidecar job.
    pub sidecar: Option<SidecarJob>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    address: Option<String>,
    control_socket: Option<PathBuf>,
    #[serde(default)]
    cleanup: bool,
    refresh_interval: Option<String>,
    change_feed: Option<bool>,
    auth: RawAuth,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
    sidecar: Option<RawSidecar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    token_file: Option<PathBuf>,
    role_id_file: Option<PathBuf>,
    secret_id_file: Option<PathBuf>,
    approle_mount: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    destination: PathBuf,
    template: Option<String>,
    template_file: Option<PathBuf>,
    mode: Option<toml::Value>,
    owner: Option<toml::Value>,
    group: Option<toml::Value>,
    command: Option<Vec<String>>,
    command_timeout: Option<String>,
    health_check: Option<RawHealth>,
    #[serde(default)]
    secrets: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    command: Vec<String>,
    interval: String,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    name: Option<String>,
    listen: String,
    token_file: PathBuf,
    #[serde(default)]
    secrets: toml::Table,
}

/// The default command timeout.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

fn duration(text: &str, what: &str) -> Result<Duration, ConfigError> {
    let d = crate::auth::duration::parse_duration(text)
        .map_err(|e| ConfigError(format!("{what}: {e}")))?;
    if d.is_zero() {
        return Err(ConfigError(format!("{what}: must be at least 1s")));
    }
    Ok(d)
}

fn mode_of(value: Option<&toml::Value>, job: &str) -> Result<u32, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "job {job}: mode is octal, such as \"0640\" or 0o640"
        ))
    };
    let mode = match value {
        None => return Ok(0o600),
        Some(toml::Value::String(text)) => {
            u32::from_str_radix(text.strip_prefix("0o").unwrap_or(text), 8).map_err(|_| bad())?
        }
        Some(toml::Value::Integer(n)) => u32::try_from(*n).map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    if mode > 0o777 {
        return Err(ConfigError(format!(
            "job {job}: mode {mode:o} has bits beyond 0777 (no setuid, setgid or sticky files)"
        )));
    }
    Ok(mode)
}

fn user_of(value: Option<&toml::Value>, job: &str) -> Result<Option<u32>, ConfigError> {
    match value {
        None => Ok(None),
        Some(toml::Value::Integer(n)) => u32::try_from(*n)
            .map(Some)
            .map_err(|_| ConfigError(format!("job {job}: owner {n} is not a uid"))),
        Some(toml::Value::String(name)) => match name.parse::<u32>() {
            Ok(uid) => Ok(Some(uid)),
            Err(_) => nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|user| Some(user.uid.as_raw()))
                .ok_or_else(|| ConfigError(format!("job {job}: no user named {name}"))),
        },
        Some(_) => Err(ConfigError(format!(
            "job {job}: owner is a user name or a uid"
        ))),
    }
}

fn group_of(value: Option<&toml::Value>, job: &str) -> Result<Option<u32>, ConfigError> {
    match value {
        None => Ok(None),
        Some(toml::Value::Integer(n)) => u32::try_from(*n)
            .map(Some)
            .map_err(|_| ConfigError(format!("job {job}: group {n} is not a gid"))),
        Some(toml::Value::String(name)) => match name.parse::<u32>() {
            Ok(gid) => Ok(Some(gid)),
            Err(_) => nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|group| Some(group.gid.as_raw()))
                .ok_or_else(|| ConfigError(format!("job {job}: no group named {name}"))),
        },
        Some(_) => Err(ConfigError(format!(
            "job {job}: group is a group name or a gid"
        ))),
    }
}

fn command_of(
    argv: Vec<String>,
    timeout: Option<&str>,
    what: &str,
) -> Result<CommandConfig, ConfigError> {
    if argv.first().is_none_or(String::is_empty) {
        return Err(ConfigError(format!(
            "{what}: the command is a non-empty list [program, args...]"
        )));
    }
    let timeout = match timeout {
        Some(text) => duration(text, what)?,
        None => DEFAULT_COMMAND_TIMEOUT,
    };
    Ok(CommandConfig { argv, timeout })
}

fn check_job_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "job {name:?}: a job name is 1 to 64 letters, digits, _, - or ."
        )))
    }
}

fn mappings_of(table: &toml::Table, job: &str) -> Result<Vec<Mapping>, ConfigError> {
    Mapping::all_from_toml(table).map_err(|e| ConfigError(format!("job {job}: {e}")))
}

fn listen_of(text: &str, job: &str, base: &Path) -> Result<Listen, ConfigError> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(ConfigError(format!("job {job}: unix: needs a socket path")));
        }
        return Ok(Listen::Unix(base.join(path)));
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        ConfigError(format!(
            "job {job}: listen is a loopback address such as 127.0.0.1:8100, or unix:/path"
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(ConfigError(format!(
            "job {job}: the sidecar listens on loopback only (127.0.0.1, ::1) or a unix socket, not {addr}"
        )));
    }
    Ok(Listen::Tcp(addr))
}

impl AgentConfig {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses a configuration whose relative paths are relative to `base`.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let address = raw
            .address
            .or_else(|| std::env::var("ARCA_ADDR").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8200".to_owned());
        let auth = match raw.auth {
            RawAuth {
                token_file: Some(file),
                role_id_file: None,
                secret_id_file: None,
                approle_mount: None,
            } => AuthConfig::TokenFile(base.join(file)),
            RawAuth {
                token_file: None,
                role_id_file: Some(role),
                secret_id_file: Some(secret),
                approle_mount,
            } => AuthConfig::AppRole {
                role_id_file: base.join(role),
                secret_id_file: base.join(secret),
                mount: approle_mount.unwrap_or_else(|| "approle".to_owned()),
            },
            _ => {
                return Err(ConfigError(
                    "[auth] takes either token_file, or role_id_file and secret_id_file".into(),
                ));
            }
        };
        let refresh_interval = raw
            .refresh_interval
            .as_deref()
            .map(|t| duration(t, "refresh_interval"))
            .transpose()?;
        let mut names = BTreeSet::new();
        let mut destinations = BTreeSet::new();
        let mut files = Vec::new();
        for file in raw.files {
            let name = file.name;
            check_job_name(&name)?;
            if !names.insert(name.clone()) {
                return Err(ConfigError(format!("job {name}: the name is used twice")));
            }
            let mappings = mappings_of(&file.secrets, &name)?;
            if mappings.is_empty() {
                return Err(ConfigError(format!("job {name}: [file.secrets] is empty")));
            }
            let contents = match (file.template, file.template_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError(format!(
                        "job {name}: give template or template_file, not both"
                    )));
                }
                (Some(source), None) => Contents::Template(Box::new(
                    Template::compile(&source)
                        .map_err(|e| ConfigError(format!("job {name}: {e}")))?,
                )),
                (None, Some(path)) => {
                    let path = base.join(path);
                    let source = std::fs::read_to_string(&path).map_err(|e| {
                        ConfigError(format!("job {name}: cannot read {}: {e}", path.display()))
                    })?;
                    Contents::Template(Box::new(
                        Template::compile(&source)
                            .map_err(|e| ConfigError(format!("job {name}: {e}")))?,
                    ))
                }
                (None, None) if mappings.len() == 1 => Contents::Raw,
                (None, None) => {
                    return Err(ConfigError(format!(
                        "job {name}: with several secrets, a template says how to write them"
                    )));
                }
            };
            let destination = base.join(&file.destination);
            let parent = destination
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(ConfigError(format!(
                    "job {name}: the destination's directory {} does not exist",
                    parent.display()
                )));
            }
            if destination.is_dir() {
                return Err(ConfigError(format!(
                    "job {name}: the destination {} is a directory",
                    destination.display()
                )));
            }
            if !destinations.insert(destination.clone()) {
                return Err(ConfigError(format!(
                    "job {name}: another job writes {} too",
                    destination.display()
                )));
            }
            let spec = FileSpec {
                path: destination,
                mode: mode_of(file.mode.as_ref(), &name)?,
                uid: user_of(file.owner.as_ref(), &name)?,
                gid: group_of(file.group.as_ref(), &name)?,
            };
            let command = file
                .command
                .map(|argv| {
                    command_of(
                        argv,
                        file.command_timeout.as_deref(),
                        &format!("job {name}: command"),
                    )
                })
                .transpose()?;
            let health_check = file
                .health_check
                .map(|h| {
                    let what = format!("job {name}: health_check");
                    Ok::<_, ConfigError>(HealthCheck {
                        command: command_of(h.command, h.timeout.as_deref(), &what)?,
                        interval: duration(&h.interval, &what)?,
                    })
                })
                .transpose()?;
            files.push(FileJob {
                name,
                spec,
                contents,
                mappings,
                command,
                health_check,
            });
        }
        let sidecar = match raw.sidecar {
            None => None,
            Some(sidecar) => {
                let name = sidecar.name.unwrap_or_else(|| "sidecar".to_owned());
                check_job_name(&name)?;
                if !names.insert(name.clone()) {
                    return Err(ConfigError(format!("job {name}: the name is used twice")));
                }
                let mappings = mappings_of(&sidecar.secrets, &name)?;
                Some(SidecarJob {
                    listen: listen_of(&sidecar.listen, &name, base)?,
                    token_file: base.join(sidecar.token_file),
                    mappings,
                    name,
                })
            }
        };
        if files.is_empty() && sidecar.is_none() {
            return Err(ConfigError(
                "nothing to deliver: add a [[file]] job or a [sidecar]".into(),
            ));
        }
        Ok(Self {
            address,
            control_socket: raw.control_socket.map(|p| base.join(p)),
            cleanup: raw.cleanup,
            refresh_interval,
            change_feed: raw.change_feed.unwrap_or(true),
            auth,
            files,
            sidecar,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        let dir = std::env::temp_dir();
        AgentConfig::parse(text, &dir).map_err(|e| e.0)
    }

    const AUTH: &str = "[auth]\ntoken_file = \"t\"\n";

    #[test]
    fn a_full_configuration() {
        let config = parse(&format!(
            r#"address = "http://127.0.0.1:1"
            control_socket = "c.sock"
            cleanup = true
            refresh_interval = "1m"
            {AUTH}
            [[file]]
            name = "db"
            destination = "db.env"
            template = "pw={{{{ secrets.pw }}}}\n"
            mode = "0640"
            owner = 0
            command = ["true"]
            health_check = {{ command = ["true"], interval = "5s" }}
            [file.secrets]
            pw = "kv://secret/db#pw"
            [[file]]
            name = "raw"
            destination = "raw.txt"
            mode = 0o400
            [file.secrets]
            v = "sm://x"
            [sidecar]
            listen = "127.0.0.1:0"
            token_file = "side.token"
            [sidecar.secrets]
            a = "kv://secret/a"
            "#
        ))
        .unwrap();
        assert_eq!(config.files.len(), 2);
        assert_eq!(config.files[0].spec.mode, 0o640);
        assert_eq!(config.files[0].spec.uid, Some(0));
        assert_eq!(config.files[1].spec.mode, 0o400);
        assert!(matches!(config.files[1].contents, Contents::Raw));
        assert_eq!(config.refresh_interval, Some(Duration::from_secs(60)));
        assert!(config.change_feed);
        assert_eq!(config.sidecar.unwrap().name, "sidecar");
    }

    #[test]
    fn bad_configurations_say_where() {
        let file = |extra: &str| {
            format!(
                "{AUTH}[[file]]\nname = \"db\"\ndestination = \"db.env\"\n{extra}\n[file.secrets]\npw = \"kv://secret/db#pw\"\n"
            )
        };
        for (text, why) in [
            ("[auth]\n".to_owned(), "either token_file"),
            (AUTH.to_owned(), "nothing to deliver"),
            (file("template = \"{% if %}\""), "job db: template"),
            (file("mode = \"999\""), "mode is octal"),
            (file("mode = \"4755\""), "beyond 0777"),
            (file("owner = \"no-such-user-here\""), "no user named"),
            (file("command = []"), "non-empty list"),
            (file("colour = 1"), "unknown field"),
            (
                format!(
                    "{AUTH}[[file]]\nname = \"db\"\ndestination = \"/nonexistent-dir/x\"\n[file.secrets]\npw = \"kv://secret/db#pw\"\n"
                ),
                "does not exist",
            ),
            (
                format!(
                    "{AUTH}[[file]]\nname = \"db\"\ndestination = \"x\"\n[file.secrets]\npw = \"nope://x\"\n"
                ),
                "job db: mapping pw",
            ),
            (
                format!(
                    "{AUTH}[[file]]\nname = \"db\"\ndestination = \"x\"\n[file.secrets]\na = \"kv://s/a\"\nb = \"kv://s/b\"\n"
                ),
                "a template says how",
            ),
            (
                format!("{AUTH}[sidecar]\nlisten = \"0.0.0.0:8100\"\ntoken_file = \"t\"\n"),
                "loopback only",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(why), "{text}\n=> {err}");
        }
    }
}
