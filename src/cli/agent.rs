//! `arca agent --config agent.toml [--once]`, `arca agent status`, `arca agent revoke JOB`:
//! see [`crate::inject::agent`].
//!
//! `status` and `revoke` talk to a running agent through the control socket its
//! configuration names (`control_socket`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::Format;
use crate::inject::agent::config::AgentConfig;
use crate::inject::agent::{EXIT_CONFIG, EXIT_FAILED};

/// `arca agent`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// The agent's configuration (TOML).
    #[arg(long, required = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Init mode: render every file once and exit (0: all delivered; 1: a failure, nothing
    /// replaced; 2: a configuration error).
    #[arg(long)]
    once: bool,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Shows the running agent's jobs: method, target, secrets, last refresh, last error.
    Status {
        /// The agent's configuration (names the control socket).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revokes a job of the running agent: stops it and removes the files it delivered.
    Revoke {
        /// The job's name.
        job: String,
        /// The agent's configuration (names the control socket).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn control_client(config: &Path) -> Result<reqwest::Client, String> {
    let config = AgentConfig::load(config).map_err(|e| e.to_string())?;
    let socket = config.control_socket.ok_or_else(|| {
        "the configuration names no control_socket; status and revoke need one".to_owned()
    })?;
    // Plain HTTP over the socket; the TLS backend still needs a provider to be built.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .unix_socket(socket)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

async fn call(config: &Path, method: reqwest::Method, path: &str) -> Result<Value, String> {
    let client = control_client(config)?;
    let response = client
        .request(method, format!("http://agent{path}"))
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the agent's control socket: {}",
                e.without_url()
            )
        })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("unexpected answer from the agent: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["error"].as_str().unwrap_or("failed").to_owned())
    }
}

fn print_status(body: &Value) {
    let auth = &body["auth"];
    println!(
        "agent: {}   authenticated: {}   logins: {}   renewals: {}{}",
        body["status"].as_str().unwrap_or("?"),
        auth["authenticated"],
        auth["logins"],
        auth["renewals"],
        auth["last_error"]
            .as_str()
            .map(|e| format!("   auth error: {e}"))
            .unwrap_or_default()
    );
    println!(
        "{:<16} {:<8} {:<40} {:>7} {:>12} {:>9}  LAST ERROR",
        "JOB", "METHOD", "TARGET", "SECRETS", "LAST REFRESH", "REFRESHES"
    );
    for job in body["jobs"].as_array().into_iter().flatten() {
        let state = if job["revoked"] == true {
            "(revoked)".to_owned()
        } else {
            job["last_error"].as_str().unwrap_or("-").to_owned()
        };
        println!(
            "{:<16} {:<8} {:<40} {:>7} {:>12} {:>9}  {state}",
            job["name"].as_str().unwrap_or("?"),
            job["method"].as_str().unwrap_or("?"),
            job["target"].as_str().unwrap_or("?"),
            job["secrets"],
            job["last_refresh"]
                .as_u64()
                .map_or("never".to_owned(), |t| t.to_string()),
            job["refresh_count"],
        );
    }
}

pub(crate) async fn run(args: AgentArgs) -> i32 {
    match args.command {
        None => {
            let Some(config) = args.config else {
                eprintln!("arca agent: --config is required");
                return EXIT_CONFIG;
            };
            crate::inject::agent::run(&config, args.once).await
        }
        Some(AgentCommand::Status { config, format }) => {
            match call(&config, reqwest::Method::GET, "/v1/jobs").await {
                Ok(body) => {
                    if format == Format::Json {
                        println!("{body:#}");
                    } else {
                        print_status(&body);
                    }
                    0
                }
                Err(err) => {
                    eprintln!("arca agent status: {err}");
                    EXIT_FAILED
                }
            }
        }
        Some(AgentCommand::Revoke { job, config }) => {
            let path = format!(
                "/v1/jobs/{}/revoke",
                crate::inject::connection::encode_path(&job)
            );
            match call(&config, reqwest::Method::POST, &path).await {
                Ok(body) => {
                    let removed: Vec<&str> = body["removed"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    if removed.is_empty() {
                        println!("revoked job {job}");
                    } else {
                        println!("revoked job {job}; removed {}", removed.join(", "));
                    }
                    0
                }
                Err(err) => {
                    eprintln!("arca agent revoke: {err}");
                    EXIT_FAILED
                }
            }
        }
    }
}
