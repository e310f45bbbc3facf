//! The `arca` command line: argument types and dispatch. One file per command group under
//! `cli/`; `main.rs` only calls [`run`].
//!
//! Like Vault's CLI, flags may be written with one dash (`-key-shares 5`, `-format=json`) or
//! two; [`normalize_args`] rewrites the single-dash long form before clap parses.

mod agent;
mod audit;
#[cfg(feature = "aws")]
mod aws;
mod aws_api;
mod bench;
mod kms;
mod operator;
mod run;
mod secrets;
mod secrets_metrics;
mod server;
mod zt;

use clap::{Parser, Subcommand, ValueEnum};

/// arca: an embedded, self-contained secrets store.
#[derive(Debug, Parser)]
#[command(name = "arca", version = crate::VERSION, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the arca server.
    Server(server::ServerArgs),
    /// Operator commands: init, unseal, seal, rekey, rotate.
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Prints the seal status. Exit code 0: unsealed, 2: sealed, 1: error.
    Status(ClientArgs),
    /// KMS over the AWS API (create-key, encrypt, decrypt, ...) and its access keys.
    Kms {
        #[command(subcommand)]
        command: kms::KmsCommand,
    },
    /// Secrets over the AWS Secrets Manager API (create, get, put, list, rotate, delete, ...).
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Zero-trust distribution: challenge, fetch, verify, open-share, combine, roles.
    Zt {
        #[command(subcommand)]
        command: zt::ZtCommand,
    },
    /// Audit log tools: verify a log's hash chain.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Runs a command with secrets in its environment, refreshed when they change.
    Run(run::RunArgs),
    /// The injection agent: renders secrets to files and serves them to a sidecar client,
    /// refreshed when they change; `status` and `revoke` talk to a running one.
    Agent(agent::AgentArgs),
    /// Benchmark helpers: load many secrets through the API.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// The AWS back end (feature `aws`): create the DynamoDB table, print the IAM policy.
    #[cfg(feature = "aws")]
    Aws {
        #[command(subcommand)]
        command: aws::AwsCommand,
    },
}

/// Where the server is and how to talk to it; shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server address.
    #[arg(long, env = "ARCA_ADDR", default_value = "http://127.0.0.1:8200")]
    address: String,
    /// The token (needed by authenticated commands).
    #[arg(long, env = "ARCA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// The server's JSON.
    Json,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<crate::client::Client> {
        Ok(crate::client::Client::new(
            &self.address,
            self.token.clone(),
        )?)
    }
}

/// Turns Vault-style single-dash long flags (`-key-shares`, `-format=json`) into the double-dash
/// form clap parses. Short flags (`-h`, `-V`), negative numbers, and everything after `--`
/// are left alone.
#[must_use]
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in args {
        if passthrough || arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let bytes = arg.as_bytes();
        let single_dash_long = bytes.len() > 2
            && bytes[0] == b'-'
            && bytes[1] != b'-'
            && bytes[1].is_ascii_alphabetic()
            && bytes[2].is_ascii_alphabetic();
        if single_dash_long {
            out.push(format!("-{arg}"));
        } else {
            out.push(arg);
        }
    }
    out
}

/// `arca run` and the agent stay resident beside a workload with a heap of a few hundred KiB:
/// no transparent huge pages for them. The allocator is built not to ask for them
/// (`.cargo/config.toml`), but a kernel with THP set to `always` hands them out unasked, and
/// each region the agent touches would then cost 2 MiB (measured with THP on: 6 MiB of huge
/// pages for a heap that small pages hold in 0.8 MiB). Called before the runtime starts; a
/// kernel without the setting leaves things as they are.
fn small_client_memory() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = nix::sys::prctl::set_thp_disable(true);
}

/// `arca agent ...` parsed on its own (see [`parse`]).
#[derive(Debug, Parser)]
#[command(
    name = "arca agent",
    bin_name = "arca agent",
    about = "The injection agent: renders secrets to files and serves them to a sidecar client, \
             refreshed when they change; `status` and `revoke` talk to a running one"
)]
struct AgentCli {
    #[command(flatten)]
    args: agent::AgentArgs,
}

/// `arca run ...` parsed on its own (see [`parse`]).
#[derive(Debug, Parser)]
#[command(
    name = "arca run",
    bin_name = "arca run",
    about = "Runs a command with secrets in its environment, refreshed when they change"
)]
struct RunCli {
    #[command(flatten)]
    args: run::RunArgs,
}

/// `arca server ...` parsed on its own (see [`parse`]).
#[derive(Debug, Parser)]
#[command(
    name = "arca server",
    bin_name = "arca server",
    about = "Runs the arca server."
)]
struct ServerCli {
    #[command(flatten)]
    args: server::ServerArgs,
}

/// The command line of the `arca-inject` binary: `arca run` and `arca agent` alone.
#[derive(Debug, Parser)]
#[command(
    name = "arca-inject",
    version = crate::VERSION,
    about = "arca's injection commands in a small binary: `arca-inject run` is `arca run`, \
             `arca-inject agent` is `arca agent`"
)]
struct InjectCli {
    #[command(subcommand)]
    command: InjectCommand,
}

/// The commands that stay resident beside a workload.
#[derive(Debug, Subcommand)]
enum InjectCommand {
    /// Runs a command with secrets in its environment, refreshed when they change.
    Run(run::RunArgs),
    /// The injection agent: renders secrets to files and serves them to a sidecar client,
    /// refreshed when they change; `status` and `revoke` talk to a running one.
    Agent(agent::AgentArgs),
}

impl From<InjectCommand> for Command {
    fn from(command: InjectCommand) -> Self {
        match command {
            InjectCommand::Run(args) => Command::Run(args),
            InjectCommand::Agent(args) => Command::Agent(args),
        }
    }
}

/// Parses `arca agent ...` and `arca run ...` with their own command only, or returns `None`
/// for every other command line. Building clap's tree of every subcommand pages in code from
/// all over the binary that the resident commands never use again; their own command accepts
/// exactly what the full tree accepts for them.
fn parse_injection(args: &[String]) -> Option<Result<InjectCommand, clap::Error>> {
    match args.get(1).map(String::as_str) {
        Some("agent") => Some(
            AgentCli::try_parse_from(args.iter().skip(1)).map(|c| InjectCommand::Agent(c.args)),
        ),
        Some("run") => {
            Some(RunCli::try_parse_from(args.iter().skip(1)).map(|c| InjectCommand::Run(c.args)))
        }
        _ => None,
    }
}

/// Parses the command line. The commands that stay resident are parsed by their own command
/// alone, for the reason [`parse_injection`] gives: `agent`, `run` and `server` (whose idle
/// resident memory is a target of the comparison harness).
fn parse(args: Vec<String>) -> Result<Command, clap::Error> {
    match parse_injection(&args) {
        Some(parsed) => parsed.map(Command::from),
        None if args.get(1).map(String::as_str) == Some("server") => {
            ServerCli::try_parse_from(args.iter().skip(1)).map(|c| Command::Server(c.args))
        }
        None => Cli::try_parse_from(args).map(|cli| cli.command),
    }
}

/// Parses the process arguments and runs the command; returns the process exit code.
pub fn run() -> i32 {
    let args = normalize_args(std::env::args());
    if let Some(parsed) = parse_injection(&args) {
        return run_injection_command(parsed);
    }
    let command = match parse(args) {
        Ok(command) => command,
        Err(err) => return print_parse_error(&err),
    };
    let runtime = match build_runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        match command {
            Command::Server(args) => server::run(args).await,
            Command::Operator { command } => operator::run(command).await,
            Command::Status(args) => operator::status(&args).await,
            Command::Kms { command } => kms::run(command).await,
            Command::Secrets { command } => secrets::run(command).await,
            Command::Audit { command } => audit::run(command),
            // Taken by `parse_injection` before the full tree is built; kept here so that a
            // future change to the parsing cannot drop them silently.
            Command::Run(args) => run::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Zt { command } => zt::run(command).await,
            Command::Bench { command } => bench::run(command).await,
            #[cfg(feature = "aws")]
            Command::Aws { command } => aws::run(command).await,
        }
    })
}

/// The entry point of the `arca-inject` binary: `arca run` and `arca agent` without the
/// server, the operator commands and the AWS and zero-trust clients. Nothing else in the
/// library is reachable from here, so link-time optimisation leaves them out and the
/// resident commands page in a fraction of the code (see the README's injection section).
pub fn run_inject_binary() -> i32 {
    let args = normalize_args(std::env::args());
    run_injection_command(InjectCli::try_parse_from(args).map(|cli| cli.command))
}

/// Prints clap's message for a refused command line; returns the exit code it calls for.
fn print_parse_error(err: &clap::Error) -> i32 {
    let _ = err.print();
    err.exit_code()
}

/// Builds the runtime a command runs on, or says why it cannot (exit code 1).
fn build_runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, i32> {
    builder.enable_all().build().map_err(|err| {
        eprintln!("error: cannot start the async runtime: {err}");
        1
    })
}

/// Runs `arca run` or `arca agent` once parsed.
fn run_injection_command(parsed: Result<InjectCommand, clap::Error>) -> i32 {
    small_client_memory();
    let command = match parsed {
        Ok(command) => command,
        Err(err) => return print_parse_error(&err),
    };
    // The server spreads requests over every core. `arca run` and the agent wait on a child,
    // a long poll and a few timers: one thread serves them, without the worker threads, their
    // stacks and per-thread allocator state (the agent's resident memory is a target).
    let runtime = match build_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        match command {
            InjectCommand::Run(args) => run::run(args).await,
            InjectCommand::Agent(args) => agent::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short parse of `agent`, `run` and `server` accepts and refuses exactly what the
    /// full tree does, with the same values.
    #[test]
    fn resident_commands_parse_alone_as_in_the_full_tree() {
        let cases: &[&[&str]] = &[
            &["arca", "agent", "--config", "a.toml"],
            &["arca", "agent", "--config", "a.toml", "--once"],
            &[
                "arca", "agent", "status", "--config", "a.toml", "--format", "json",
            ],
            &["arca", "agent", "revoke", "db", "--config", "a.toml"],
            &["arca", "agent"],
            &["arca", "agent", "--config", "a.toml", "status"],
            &["arca", "agent", "--bogus"],
            &[
                "arca",
                "run",
                "--env",
                "X=kv://secret/a#b",
                "--",
                "sh",
                "-c",
                "env",
            ],
            &[
                "arca",
                "run",
                "--address",
                "http://127.0.0.1:1",
                "--on-change",
                "signal:HUP",
                "--",
                "x",
            ],
            &[
                "arca",
                "run",
                "--refresh",
                "5s",
                "--env-file",
                "m.toml",
                "--",
                "x",
                "--flag",
            ],
            &["arca", "run"],
            &["arca", "run", "--on-change", "sometimes", "--", "x"],
            &["arca", "server", "--dev"],
            &["arca", "server", "--config", "arca.toml"],
            &[
                "arca",
                "server",
                "--dev",
                "--data-dir",
                "d",
                "--listen",
                "127.0.0.1:0",
                "--dev-root-token",
                "t",
            ],
            &["arca", "server", "--data-dir", "d", "--log-level", "debug"],
            &["arca", "server", "--dev", "--config", "arca.toml"],
            &["arca", "server", "--dev-root-token", "t"],
            &["arca", "server", "--bogus"],
            &["arca", "server", "--listen", "not-an-address"],
        ];
        for case in cases {
            let args: Vec<String> = case.iter().map(|s| (*s).to_owned()).collect();
            let alone = parse(args.clone());
            let full = Cli::try_parse_from(args).map(|cli| cli.command);
            match (alone, full) {
                (Ok(a), Ok(f)) => assert_eq!(format!("{a:?}"), format!("{f:?}"), "{case:?}"),
                (Err(a), Err(f)) => assert_eq!(a.kind(), f.kind(), "{case:?}"),
                (a, f) => panic!("{case:?}: alone {a:?}, full tree {f:?}"),
            }
        }
    }

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&[
                "arca",
                "operator",
                "init",
                "-key-shares",
                "5",
                "-format=json"
            ]),
            [
                "arca",
                "operator",
                "init",
                "--key-shares",
                "5",
                "--format=json"
            ]
        );
        assert_eq!(norm(&["arca", "-h"]), ["arca", "-h"]);
        assert_eq!(norm(&["arca", "--help"]), ["arca", "--help"]);
        assert_eq!(norm(&["x", "-5"]), ["x", "-5"]);
        assert_eq!(norm(&["x", "--", "-key"]), ["x", "--", "-key"]);
    }
}
