//! `arca operator ...` and `arca status`: the seal ceremony over arca's HTTP API.

use anyhow::Context;
use serde_json::{Value, json};

use super::{ClientArgs, Format};
use crate::client::ClientError;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum OperatorCommand {
    /// Initialises the server: prints the unseal (or recovery) keys and the root token, once.
    Init {
        #[command(flatten)]
        client: ClientArgs,
        /// N: the number of unseal key shares.
        #[arg(long, default_value_t = 5)]
        key_shares: u32,
        /// T: the number of shares needed to unseal.
        #[arg(long, default_value_t = 3)]
        key_threshold: u32,
        /// N of the recovery shares (auto-unseal seals).
        #[arg(long, default_value_t = 0)]
        recovery_shares: u32,
        /// T of the recovery shares (auto-unseal seals).
        #[arg(long, default_value_t = 0)]
        recovery_threshold: u32,
        /// Read the passphrase of a passphrase seal from standard input (else it is prompted).
        #[arg(long)]
        passphrase_stdin: bool,
        /// The server uses the passphrase seal: ask for the passphrase.
        #[arg(long)]
        passphrase: bool,
    },
    /// Submits one unseal key share (prompted without echo when not given), or resets progress.
    Unseal {
        #[command(flatten)]
        client: ClientArgs,
        /// The share (hex or base64). Prefer the prompt: arguments show in `ps`.
        key: Option<String>,
        /// Discards the shares submitted so far.
        #[arg(long)]
        reset: bool,
    },
    /// Seals the server: every key leaves its memory.
    Seal {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replaces the unseal (or recovery) key shares, keeping the root key.
    Rekey {
        #[command(flatten)]
        client: ClientArgs,
        /// Starts a rekey.
        #[arg(long)]
        init: bool,
        /// Cancels the rekey (or, with --verify, the verification).
        #[arg(long)]
        cancel: bool,
        /// Prints the rekey's progress.
        #[arg(long)]
        status: bool,
        /// With --init: the new shares must be verified before they take over. Alone: submit a
        /// NEW share to the verification.
        #[arg(long)]
        verify: bool,
        /// N of the new shares.
        #[arg(long, default_value_t = 5)]
        key_shares: u32,
        /// T of the new shares.
        #[arg(long, default_value_t = 3)]
        key_threshold: u32,
        /// The rekey's (or verification's) nonce, printed by --init.
        #[arg(long)]
        nonce: Option<String>,
        /// A current share (or, with --verify, a new share); prompted when absent.
        key: Option<String>,
    },
    /// Rotates the barrier's encryption key (adds a keyring term).
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(crate) async fn run(command: OperatorCommand) -> i32 {
    let result = match command {
        OperatorCommand::Init {
            client,
            key_shares,
            key_threshold,
            recovery_shares,
            recovery_threshold,
            passphrase_stdin,
            passphrase,
        } => {
            init(
                &client,
                key_shares,
                key_threshold,
                recovery_shares,
                recovery_threshold,
                passphrase || passphrase_stdin,
                passphrase_stdin,
            )
            .await
        }
        OperatorCommand::Unseal { client, key, reset } => unseal(&client, key, reset).await,
        OperatorCommand::Seal { client } => seal(&client).await,
        OperatorCommand::Rekey {
            client,
            init,
            cancel,
            status,
            verify,
            key_shares,
            key_threshold,
            nonce,
            key,
        } => {
            rekey(
                &client,
                RekeyAction {
                    init,
                    cancel,
                    status,
                    verify,
                    key_shares,
                    key_threshold,
                    nonce,
                    key,
                },
            )
            .await
        }
        OperatorCommand::Rotate { client } => rotate(&client).await,
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            2
        }
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn strings(value: &Value, field: &str) -> Vec<String> {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn prompt_secret(prompt: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let value = rpassword::prompt_password(prompt).context("cannot read from the terminal")?;
    Ok(zeroize::Zeroizing::new(value))
}

async fn init(
    args: &ClientArgs,
    key_shares: u32,
    key_threshold: u32,
    recovery_shares: u32,
    recovery_threshold: u32,
    ask_passphrase: bool,
    passphrase_stdin: bool,
) -> anyhow::Result<()> {
    let client = args.client()?;
    let mut body = json!({
        "secret_shares": key_shares,
        "secret_threshold": key_threshold,
        "recovery_shares": recovery_shares,
        "recovery_threshold": recovery_threshold,
    });
    if ask_passphrase {
        let passphrase = if passphrase_stdin {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_line(&mut line)?;
            zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
        } else {
            prompt_secret("Passphrase (will be hidden): ")?
        };
        body["passphrase"] = json!(passphrase.as_str());
    }
    let response = client
        .put("sys/init", &body)
        .await?
        .context("empty answer to sys/init")?;
    if args.format == Format::Json {
        print_json(&response);
        return Ok(());
    }
    for (i, key) in strings(&response, "keys_base64").iter().enumerate() {
        println!("Unseal Key {}: {key}", i + 1);
    }
    for (i, key) in strings(&response, "recovery_keys_base64")
        .iter()
        .enumerate()
    {
        println!("Recovery Key {}: {key}", i + 1);
    }
    println!(
        "\nInitial Root Token: {}\n",
        response
            .get("root_token")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    // What comes next depends on the seal kind, which the answer tells: recovery keys mean
    // auto-unseal (already unsealed), no keys at all mean a passphrase seal.
    if !strings(&response, "recovery_keys_base64").is_empty() {
        println!(
            "arca is initialised and unsealed: it unseals itself with its key file. The recovery\n\
             keys above are shown once and never stored: keep them apart; they authorise a rekey."
        );
    } else if strings(&response, "keys_base64").is_empty() {
        println!(
            "arca is initialised and sealed. Unseal it with `arca operator unseal` and the \
             passphrase."
        );
    } else {
        println!(
            "arca is initialised and sealed. The keys above are shown once and never stored: keep\n\
             them apart. Unseal with `arca operator unseal` {key_threshold} times."
        );
    }
    Ok(())
}

async fn unseal(args: &ClientArgs, key: Option<String>, reset: bool) -> anyhow::Result<()> {
    let client = args.client()?;
    let body = if reset {
        json!({ "reset": true })
    } else {
        let key = match key {
            Some(key) => zeroize::Zeroizing::new(key),
            None => prompt_secret("Unseal Key (will be hidden): ")?,
        };
        json!({ "key": key.trim() })
    };
    let response = client
        .put("sys/unseal", &body)
        .await?
        .context("empty answer to sys/unseal")?;
    print_status(args.format, &response);
    Ok(())
}

async fn seal(args: &ClientArgs) -> anyhow::Result<()> {
    args.client()?.put("sys/seal", &json!({})).await?;
    println!("Success! arca is sealed.");
    Ok(())
}

async fn rotate(args: &ClientArgs) -> anyhow::Result<()> {
    let client = args.client()?;
    client.put("sys/rotate/keyring", &json!({})).await?;
    let status = client
        .get("sys/key-status")
        .await?
        .context("empty answer to sys/key-status")?;
    if args.format == Format::Json {
        print_json(&status);
    } else {
        println!("Success! Rotated key\n");
        println!("Key Term        {}", status["term"]);
        println!(
            "Install Time    {}",
            status["install_time"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

struct RekeyAction {
    init: bool,
    cancel: bool,
    status: bool,
    verify: bool,
    key_shares: u32,
    key_threshold: u32,
    nonce: Option<String>,
    key: Option<String>,
}

/// Rekey runs through the authenticated `sys/rotate/<root|recovery>/*` endpoints, so the
/// token is required: which of the two depends on the server's seal.
async fn rekey(args: &ClientArgs, action: RekeyAction) -> anyhow::Result<()> {
    let client = args.client()?;
    let status = client
        .get("sys/seal-status")
        .await?
        .context("empty answer to sys/seal-status")?;
    let which = if status["recovery_seal"].as_bool() == Some(true) {
        "recovery"
    } else {
        "root"
    };
    let base = format!("sys/rotate/{which}");
    let data = |v: Option<Value>| v.and_then(|mut v| v.get_mut("data").map(Value::take));

    if action.cancel {
        if action.verify {
            client.delete(&format!("{base}/verify")).await?;
        } else {
            client.delete(&format!("{base}/init")).await?;
        }
        println!("Success! Canceled.");
        return Ok(());
    }
    if action.status {
        let path = if action.verify { "verify" } else { "init" };
        let status = data(client.get(&format!("{base}/{path}")).await?).unwrap_or(Value::Null);
        print_json_or(args.format, &status);
        return Ok(());
    }
    if action.init {
        let body = json!({
            "secret_shares": action.key_shares,
            "secret_threshold": action.key_threshold,
            "require_verification": action.verify,
        });
        let status = data(client.put(&format!("{base}/init"), &body).await?).unwrap_or(Value::Null);
        if args.format == Format::Json {
            print_json(&status);
        } else {
            println!(
                "Nonce               {}",
                status["nonce"].as_str().unwrap_or("")
            );
            println!("Started             {}", status["started"]);
            println!(
                "Rekey Progress      {}/{}",
                status["progress"], status["required"]
            );
            println!("New Shares          {}", status["n"]);
            println!("New Threshold       {}", status["t"]);
            println!("Verification Required {}", status["verification_required"]);
        }
        return Ok(());
    }
    let nonce = action
        .nonce
        .context("--nonce is required (arca operator rekey --status prints it)")?;
    let key = match action.key {
        Some(key) => zeroize::Zeroizing::new(key),
        None => prompt_secret("Key (will be hidden): ")?,
    };
    let path = if action.verify { "verify" } else { "update" };
    let body = json!({ "key": key.trim(), "nonce": nonce });
    let result = data(client.put(&format!("{base}/{path}"), &body).await?).unwrap_or(Value::Null);
    if args.format == Format::Json {
        print_json(&result);
    } else if result["complete"].as_bool() == Some(true) {
        for (i, key) in strings(&result, "keys_base64").iter().enumerate() {
            println!("Key {}: {key}", i + 1);
        }
        if action.verify {
            println!("Success! The new keys are verified and in force.");
        } else if result["verification_required"].as_bool() == Some(true) {
            // The new threshold was set at --init, possibly by another operator: ask the server
            // rather than trusting this invocation's (default) --key-threshold.
            let verify = data(client.get(&format!("{base}/verify")).await?).unwrap_or(Value::Null);
            println!(
                "\nThe new keys must be verified before they take over: submit {} of them with\n\
                 `arca operator rekey --verify --nonce {}`.",
                verify["t"],
                result["verification_nonce"].as_str().unwrap_or("")
            );
        } else {
            println!("\nRekey complete: the old keys no longer work.");
        }
    } else {
        println!(
            "Progress {}/{}",
            result["progress"],
            result
                .get("required")
                .or_else(|| result.get("t"))
                .unwrap_or(&Value::Null)
        );
    }
    Ok(())
}

fn print_json_or(format: Format, value: &Value) {
    match format {
        Format::Json => print_json(value),
        Format::Table => {
            if let Some(map) = value.as_object() {
                for (k, v) in map {
                    println!("{k:<24}{v}");
                }
            }
        }
    }
}

fn print_status(format: Format, status: &Value) {
    if format == Format::Json {
        print_json(status);
        return;
    }
    let field = |k: &str| status.get(k).cloned().unwrap_or(Value::Null);
    println!("Key             Value");
    println!("---             -----");
    println!("Seal Type       {}", field("type").as_str().unwrap_or(""));
    println!("Initialized     {}", field("initialized"));
    println!("Sealed          {}", field("sealed"));
    println!("Total Shares    {}", field("n"));
    println!("Threshold       {}", field("t"));
    if field("sealed").as_bool() == Some(true) {
        println!("Unseal Progress {}/{}", field("progress"), field("t"));
        println!("Unseal Nonce    {}", field("nonce").as_str().unwrap_or(""));
    }
    println!(
        "Version         {}",
        field("version").as_str().unwrap_or("")
    );
    println!(
        "Storage Type    {}",
        field("storage_type").as_str().unwrap_or("")
    );
    if let Some(id) = status.get("cluster_id").and_then(Value::as_str) {
        println!("Cluster ID      {id}");
    }
}

/// `arca status`: exit 0 unsealed, 2 sealed, 1 error (as `vault status`).
pub(crate) async fn status(args: &ClientArgs) -> i32 {
    let client = match args.client() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("error: {err:#}");
            return 1;
        }
    };
    match client.get("sys/seal-status").await {
        Ok(Some(status)) => {
            print_status(args.format, &status);
            if status["sealed"].as_bool() == Some(false) {
                0
            } else {
                2
            }
        }
        Ok(None) => {
            eprintln!("error: empty answer to sys/seal-status");
            1
        }
        Err(err @ (ClientError::Connect { .. } | ClientError::Status { .. })) => {
            eprintln!("error: {err}");
            1
        }
        Err(err) => {
            eprintln!("error: {err}");
            1
        }
    }
}
