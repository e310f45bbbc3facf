//! `arca run [--env NAME=REF]... [--env-file FILE] [--refresh INTERVAL]
//! [--on-change restart|signal:NAME|none] -- CMD ARGS...`: see [`crate::inject::run`].
//!
//! Exit codes: the child's (128 + N when signal N ended it); 125 when arca fails before
//! running it (a bad option or mapping, a secret that cannot be resolved: the child never
//! starts); 126 when the command cannot be run; 127 when it is not found.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::inject::connection::{Connection, Token};
use crate::inject::mapping::Mapping;
use crate::inject::run::{EXIT_ARCA_ERROR, OnChange, RunOptions, check_env_name, run as run_child};

/// `arca run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The server address.
    #[arg(long, env = "ARCA_ADDR", default_value = "http://127.0.0.1:8200")]
    address: String,
    /// The token (from ARCA_TOKEN preferably: arguments are visible to other users).
    #[arg(long, env = "ARCA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// NAME=REFERENCE: set NAME in the command's environment (repeatable), e.g.
    /// DB_PASSWORD=kv://secret/app/db#password.
    #[arg(long = "env", value_name = "NAME=REF")]
    env: Vec<String>,
    /// A TOML file of mappings (NAME = "REF", or [NAME] tables with transforms and rules).
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Also resolve again at this interval (e.g. 30s, 5m), besides the server's change feed.
    #[arg(long, value_name = "INTERVAL")]
    refresh: Option<String>,
    /// What a changed value does: restart the command, send it a signal, or nothing.
    #[arg(
        long,
        value_name = "restart|signal:NAME|none",
        default_value = "restart"
    )]
    on_change: String,
    /// How long the command has to exit after SIGTERM before its process group is killed.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    grace: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn options(args: RunArgs) -> Result<RunOptions, String> {
    let mut mappings = Vec::new();
    if let Some(file) = &args.env_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        mappings.extend(
            Mapping::all_from_toml(&table).map_err(|e| format!("{}: {e}", file.display()))?,
        );
    }
    for assignment in &args.env {
        mappings.push(Mapping::parse_assignment(assignment).map_err(|e| e.to_string())?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for mapping in &mappings {
        check_env_name(mapping.name())?;
        if !seen.insert(mapping.name().to_owned()) {
            return Err(format!("mapping {} is given twice", mapping.name()));
        }
    }
    let refresh = match &args.refresh {
        None => None,
        Some(text) => {
            let every = crate::auth::duration::parse_duration(text)
                .map_err(|e| format!("--refresh: {e}"))?;
            if every < Duration::from_secs(1) {
                return Err("--refresh must be at least 1s".into());
            }
            Some(every)
        }
    };
    let grace =
        crate::auth::duration::parse_duration(&args.grace).map_err(|e| format!("--grace: {e}"))?;
    let on_change: OnChange = args.on_change.parse()?;
    let connection = Connection::new(&args.address).map_err(|e| e.to_string())?;
    connection.set_token(args.token.as_deref().map(Token::new));
    Ok(RunOptions {
        connection,
        mappings,
        command: args.command,
        refresh,
        on_change,
        grace,
    })
}

pub(crate) async fn run(args: RunArgs) -> i32 {
    match options(args) {
        Ok(options) => run_child(options).await,
        Err(err) => {
            eprintln!("arca run: {err}; the command was not started");
            EXIT_ARCA_ERROR
        }
    }
}
