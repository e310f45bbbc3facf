//! `arca zt ...`: zero-trust distribution from the command line.
//!
//! `fetch` and `read` generate an ephemeral X25519 key pair in memory (wiped on drop, never
//! written anywhere), send the public half, open the sealed answer with the private half,
//! check arca's signature over the envelope against the key published at
//! `/v1/zt/signing-key` (or one pinned with `--signing-key`), and write the value to standard
//! output. The private key is gone when the command ends, so a recorded answer can never be
//! opened again. A client certificate (`--client-cert`, `--client-key`) adds the mTLS factor;
//! `ARCA_TOKEN` carries the token, `ARCA_CACERT` the server's CA.
//!
//! `verify`, `open-share` and `combine` work offline on a saved envelope (`--envelope-out`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::ClientArgs;
use crate::zerotrust::envelope::{self, OpenedShare};
use crate::zerotrust::keys::{RecipientSecret, decode_base64};

/// The mTLS identity a command may present.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientIdentity {
    /// A PEM client certificate (chain) for mTLS.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The PEM private key of `--client-cert`.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ZtCommand {
    /// Creates an X25519 key pair for a split recipient: the private key to FILE (0600), the
    /// public key to standard output.
    Keygen {
        /// Where to write the private key (base64).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Asks for a one-time attestation nonce.
    Challenge {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        identity: ClientIdentity,
    },
    /// Prints arca's envelope-signing public key.
    SigningKey {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manages roles (root or sudo).
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Requests a distribution and writes the value to standard output.
    Fetch {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        identity: ClientIdentity,
        /// The role to decide under.
        #[arg(long)]
        role: String,
        /// The secret: kv://<mount>/<path>[#field].
        #[arg(long)]
        secret: String,
        /// An attestation: a JSON file {"attestor", "document", "signature"}.
        #[arg(long, value_name = "FILE")]
        attestation: Option<PathBuf>,
        /// Split among these recipients only (default: all of the role's).
        #[arg(long = "split-recipient", value_name = "NAME")]
        split_recipients: Vec<String>,
        /// Save the signed envelope (JSON) here, e.g. for `combine` or `verify`.
        #[arg(long, value_name = "FILE")]
        envelope_out: Option<PathBuf>,
        /// Pin arca's signing key (base64) instead of asking the server for it.
        #[arg(long)]
        signing_key: Option<String>,
    },
    /// Reads a session again (a further use), sealed to a new ephemeral key.
    Read {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        identity: ClientIdentity,
        /// The session id.
        session: String,
        /// Save the signed envelope (JSON) here.
        #[arg(long, value_name = "FILE")]
        envelope_out: Option<PathBuf>,
        /// Pin arca's signing key (base64).
        #[arg(long)]
        signing_key: Option<String>,
    },
    /// Shows a session's remaining uses and expiry.
    Validate {
        #[command(flatten)]
        client: ClientArgs,
        /// The session id.
        session: String,
    },
    /// Revokes a session at once.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        /// The session id.
        session: String,
    },
    /// Checks an envelope's signature offline and prints what it states.
    Verify {
        /// The envelope JSON (as saved by --envelope-out).
        #[arg(long, value_name = "FILE")]
        envelope: PathBuf,
        /// arca's signing key, base64 (from `arca zt signing-key`).
        #[arg(long)]
        public_key: String,
    },
    /// Opens one recipient's share of a split envelope with its private key.
    OpenShare {
        /// The envelope JSON.
        #[arg(long, value_name = "FILE")]
        envelope: PathBuf,
        /// The recipient's name.
        #[arg(long)]
        recipient: String,
        /// The recipient's private key file (from `arca zt keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Recombines opened shares (T of them) and writes the value to standard output.
    Combine {
        /// The envelope JSON.
        #[arg(long, value_name = "FILE")]
        envelope: PathBuf,
        /// Opened shares, or `@FILE` to read one from a file.
        #[arg(required = true)]
        shares: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum RoleCommand {
    /// Writes a role from a JSON file.
    Write {
        #[command(flatten)]
        client: ClientArgs,
        /// The role's name.
        name: String,
        /// The role definition (JSON).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Prints a role.
    Read {
        #[command(flatten)]
        client: ClientArgs,
        /// The role's name.
        name: String,
    },
    /// Lists the roles.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deletes a role.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The role's name.
        name: String,
    },
}

pub(crate) async fn run(command: ZtCommand) -> i32 {
    match run_inner(command).await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

/// A client of the zero-trust API, with the mTLS identity when one is given.
struct Http {
    http: reqwest::Client,
    address: String,
    token: Option<String>,
}

impl Http {
    fn new(client: &ClientArgs, identity: Option<&ClientIdentity>) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let address = client.address.trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            bail!("the address {address:?} must start with http:// or https://");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(path) = std::env::var("ARCA_CACERT") {
            for cert in CertificateDer::pem_file_iter(&path)
                .with_context(|| format!("cannot read ARCA_CACERT {path}"))?
                .flatten()
            {
                let _ = roots.add(cert);
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS")?
            .with_root_certificates(roots);
        let tls = match identity.and_then(|i| i.client_cert.as_ref().zip(i.client_key.as_ref())) {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("cannot read {}", cert.display()))?
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("invalid certificate in {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("cannot read the private key {}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("the client certificate and key do not fit")?
            }
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(60))
            .build()
            .context("HTTP client")?;
        Ok(Self {
            http,
            address,
            token: client.token.clone(),
        })
    }

    /// Sends a request; returns the status and the JSON body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.address));
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach arca at {}", self.address))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.context("reading the answer")?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).context("the answer is not JSON")?
        };
        Ok((status, json))
    }

    /// As [`Http::send`], failing on an error status with the server's messages.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, json) = self.send(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        bail!("{status}: {}", errors(&json));
    }
}

fn errors(json: &Value) -> String {
    json["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

fn read_envelope(path: &Path) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).context("the envelope file is not JSON")?;
    let bytes = json["envelope"]
        .as_str()
        .and_then(decode_base64)
        .context("the envelope file has no base64 `envelope`")?;
    let signature = json["signature"].as_str().and_then(decode_base64);
    Ok((bytes, signature))
}

fn read_key(path: &Path) -> anyhow::Result<RecipientSecret> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let bytes = Zeroizing::new(decode_base64(&text).context("the key file is not base64")?);
    Ok(RecipientSecret::from_bytes(&bytes)?)
}

/// Asks for (or takes the pinned) signing key and checks the envelope with it.
async fn check_envelope(
    http: &Http,
    answer: &Value,
    pinned: Option<&str>,
) -> anyhow::Result<(envelope::Envelope, Value)> {
    let signed = answer["data"]["envelope"].clone();
    let bytes = signed["envelope"]
        .as_str()
        .and_then(decode_base64)
        .context("the answer carries no envelope")?;
    let signature = signed["signature"].as_str().and_then(decode_base64);
    let envelope = if signature.is_some() || pinned.is_some() {
        let key = match pinned {
            Some(key) => key.to_owned(),
            None => http
                .call(reqwest::Method::GET, "zt/signing-key", None)
                .await?["data"]["public_key"]
                .as_str()
                .context("no signing key in the answer")?
                .to_owned(),
        };
        let key: [u8; 32] = decode_base64(&key)
            .and_then(|k| k.try_into().ok())
            .context("the signing key is not 32 bytes of base64")?;
        envelope::verify(&bytes, signature.as_deref(), &key)
            .context("arca's signature over the envelope does not verify")?
    } else {
        envelope::parse(&bytes)?
    };
    Ok((envelope, signed))
}

/// Sends a fetch or read with a fresh ephemeral key, opens the answer and writes the value.
async fn deliver(
    http: &Http,
    path: &str,
    mut body: Value,
    envelope_out: Option<&Path>,
    pinned: Option<&str>,
) -> anyhow::Result<()> {
    let ephemeral = RecipientSecret::generate()?;
    body["ephemeral_public_key"] = json!(ephemeral.public().to_base64());
    let (status, answer) = http.send(reqwest::Method::POST, path, Some(&body)).await?;
    if status != 200 {
        let decision = &answer["data"]["decision"];
        if decision.is_object() {
            eprintln!("{}", serde_json::to_string_pretty(decision)?);
        }
        bail!("{status}: {}", errors(&answer));
    }
    let (envelope, signed) = check_envelope(http, &answer, pinned).await?;
    if let Some(out) = envelope_out {
        std::fs::write(out, serde_json::to_vec_pretty(&signed)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let session = &answer["data"]["session"];
    eprintln!(
        "session {} (risk {}, {} uses left, expires at {})",
        session["id"].as_str().unwrap_or("?"),
        answer["data"]["decision"]["risk"],
        session["remaining_uses"],
        session["expires_at"],
    );
    if matches!(envelope.payload, envelope::Payload::Split { .. }) {
        eprintln!("the value is split among its recipients: see `arca zt open-share`");
        return Ok(());
    }
    let value = envelope::open(&envelope, Some(&ephemeral))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&value)?;
    out.flush()?;
    Ok(())
}

async fn run_inner(command: ZtCommand) -> anyhow::Result<()> {
    match command {
        ZtCommand::Keygen { out } => {
            let key = RecipientSecret::generate()?;
            let text = Zeroizing::new(STANDARD.encode(key.to_bytes().as_slice()));
            write_private(&out, text.as_bytes())?;
            println!("{}", key.public().to_base64());
        }
        ZtCommand::Challenge { client, identity } => {
            let http = Http::new(&client, Some(&identity))?;
            let answer = http
                .call(reqwest::Method::POST, "zt/challenge", Some(&json!({})))
                .await?;
            match client.format {
                super::Format::Json => print_json(&answer["data"])?,
                super::Format::Table => println!(
                    "{}",
                    answer["data"]["nonce"]
                        .as_str()
                        .context("no nonce in the answer")?
                ),
            }
        }
        ZtCommand::SigningKey { client } => {
            let http = Http::new(&client, None)?;
            let answer = http
                .call(reqwest::Method::GET, "zt/signing-key", None)
                .await?;
            match client.format {
                super::Format::Json => print_json(&answer["data"])?,
                super::Format::Table => println!(
                    "{}",
                    answer["data"]["public_key"]
                        .as_str()
                        .context("no key in the answer")?
                ),
            }
        }
        ZtCommand::Role { command } => match command {
            RoleCommand::Write { client, name, file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let body: Value = serde_json::from_str(&text).context("the role is not JSON")?;
                Http::new(&client, None)?
                    .call(
                        reqwest::Method::PUT,
                        &format!("zt/roles/{name}"),
                        Some(&body),
                    )
                    .await?;
                eprintln!("role {name} written");
            }
            RoleCommand::Read { client, name } => {
                let answer = Http::new(&client, None)?
                    .call(reqwest::Method::GET, &format!("zt/roles/{name}"), None)
                    .await?;
                print_json(&answer["data"])?;
            }
            RoleCommand::List { client } => {
                let answer = Http::new(&client, None)?
                    .call(reqwest::Method::GET, "zt/roles", None)
                    .await?;
                for key in answer["data"]["keys"].as_array().into_iter().flatten() {
                    println!("{}", key.as_str().unwrap_or_default());
                }
            }
            RoleCommand::Delete { client, name } => {
                Http::new(&client, None)?
                    .call(reqwest::Method::DELETE, &format!("zt/roles/{name}"), None)
                    .await?;
                eprintln!("role {name} deleted");
            }
        },
        ZtCommand::Fetch {
            client,
            identity,
            role,
            secret,
            attestation,
            split_recipients,
            envelope_out,
            signing_key,
        } => {
            let http = Http::new(&client, Some(&identity))?;
            let mut body = json!({ "role": role, "secret": secret });
            if let Some(path) = attestation {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                body["attestation"] =
                    serde_json::from_str(&text).context("the attestation file is not JSON")?;
            }
            if !split_recipients.is_empty() {
                body["split_recipients"] = json!(split_recipients);
            }
            deliver(
                &http,
                "zt/fetch",
                body,
                envelope_out.as_deref(),
                signing_key.as_deref(),
            )
            .await?;
        }
        ZtCommand::Read {
            client,
            identity,
            session,
            envelope_out,
            signing_key,
        } => {
            let http = Http::new(&client, Some(&identity))?;
            deliver(
                &http,
                &format!("zt/sessions/{session}/read"),
                json!({}),
                envelope_out.as_deref(),
                signing_key.as_deref(),
            )
            .await?;
        }
        ZtCommand::Validate { client, session } => {
            let answer = Http::new(&client, None)?
                .call(
                    reqwest::Method::GET,
                    &format!("zt/sessions/{session}/validate"),
                    None,
                )
                .await?;
            print_json(&answer["data"])?;
            if answer["data"]["valid"] != json!(true) {
                bail!(
                    "the session is not valid: {}",
                    answer["data"]["reason"].as_str().unwrap_or_default()
                );
            }
        }
        ZtCommand::Revoke { client, session } => {
            Http::new(&client, None)?
                .call(
                    reqwest::Method::POST,
                    &format!("zt/sessions/{session}/revoke"),
                    Some(&json!({})),
                )
                .await?;
            eprintln!("session {session} revoked");
        }
        ZtCommand::Verify {
            envelope: path,
            public_key,
        } => {
            let (bytes, signature) = read_envelope(&path)?;
            let key: [u8; 32] = decode_base64(&public_key)
                .and_then(|k| k.try_into().ok())
                .context("--public-key must be 32 bytes of base64")?;
            let envelope = envelope::verify(&bytes, signature.as_deref(), &key)
                .context("the envelope's signature does not verify")?;
            print_json(&json!({
                "verified": true,
                "distribution_id": envelope.distribution_id,
                "read": envelope.read,
                "secret": envelope.secret,
                "recipient": envelope.recipient,
                "issued_at": envelope.issued_at,
                "expires_at": envelope.measures.expires_at,
                "max_uses": envelope.measures.max_uses,
                "zones": envelope.measures.zones,
                "forward_secrecy": envelope.measures.forward_secrecy,
                "split": envelope.measures.split.as_ref().map(|s| json!({
                    "threshold": s.threshold, "recipients": s.recipients,
                })),
                "value_digest": envelope.value_digest,
            }))?;
        }
        ZtCommand::OpenShare {
            envelope: path,
            recipient,
            key,
        } => {
            let (bytes, _) = read_envelope(&path)?;
            let envelope = envelope::parse(&bytes)?;
            let key = read_key(&key)?;
            let share = envelope::open_share(&envelope, &recipient, &key)?;
            let mut out = std::io::stdout().lock();
            out.write_all(share.to_text().as_bytes())?;
            out.write_all(b"\n")?;
        }
        ZtCommand::Combine {
            envelope: path,
            shares,
        } => {
            let (bytes, _) = read_envelope(&path)?;
            let envelope = envelope::parse(&bytes)?;
            let mut opened = Vec::new();
            for share in &shares {
                let text = match share.strip_prefix('@') {
                    Some(file) => Zeroizing::new(
                        std::fs::read_to_string(file)
                            .with_context(|| format!("cannot read {file}"))?,
                    ),
                    None => Zeroizing::new(share.clone()),
                };
                opened.push(OpenedShare::from_text(&text)?);
            }
            let value = envelope::combine(&envelope, &opened)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            out.flush()?;
        }
    }
    Ok(())
}
