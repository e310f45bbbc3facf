//! `arca kms ...`: the common KMS operations over arca's AWS API, and the access keys that API
//! checks signatures against.
//!
//! The KMS commands are an AWS client like any other ([`super::aws_api`]): they sign each
//! request with SigV4 using `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` and the region
//! `AWS_REGION` (default `us-east-1`), so they exercise exactly what boto3 or the aws CLI
//! would. `arca kms access-key ...` manages those keys through the Vault-style endpoint
//! `sys/aws/access-keys` and needs a root token (`ARCA_TOKEN`).

use std::io::{Read as _, Write as _};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::aws_api::{AwsArgs, AwsClient, Service};
use super::{ClientArgs, Format};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KmsCommand {
    /// Creates a key (CreateKey) and prints its id and ARN.
    CreateKey {
        #[command(flatten)]
        aws: AwsArgs,
        /// The description.
        #[arg(long, default_value = "")]
        description: String,
        /// SYMMETRIC_DEFAULT, HMAC_256, ECC_NIST_P256 or ECC_NIST_EDWARDS25519.
        #[arg(long, default_value = "SYMMETRIC_DEFAULT")]
        key_spec: String,
        /// Also create this alias (`alias/...`) for it.
        #[arg(long)]
        alias: Option<String>,
    },
    /// Lists the keys of the region (ListKeys, every page).
    ListKeys {
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Describes a key (DescribeKey).
    DescribeKey {
        #[command(flatten)]
        aws: AwsArgs,
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Encrypts at most 4096 bytes (Encrypt) and prints the ciphertext blob as base64.
    Encrypt {
        #[command(flatten)]
        aws: AwsArgs,
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// The plaintext; without it, standard input is read. Prefer standard input for
        /// secrets: arguments show in `ps`.
        #[arg(long)]
        plaintext: Option<String>,
        /// Encryption context pairs, `key=value` (repeatable).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE")]
        context: Vec<String>,
    },
    /// Decrypts a base64 ciphertext blob (Decrypt) and writes the plaintext to standard output.
    Decrypt {
        #[command(flatten)]
        aws: AwsArgs,
        /// The ciphertext blob, base64; without it, standard input is read.
        #[arg(long)]
        ciphertext_blob: Option<String>,
        /// Encryption context pairs, `key=value` (repeatable); must match the encryption's.
        #[arg(long = "encryption-context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// Print the plaintext as base64 instead of raw bytes.
        #[arg(long)]
        base64: bool,
    },
    /// Generates a data key (GenerateDataKey): prints the plaintext and the wrapped key, both
    /// base64.
    GenerateDataKey {
        #[command(flatten)]
        aws: AwsArgs,
        /// Key id, key ARN, alias name or alias ARN.
        #[arg(long)]
        key_id: String,
        /// AES_256 or AES_128 (default AES_256 unless --number-of-bytes is given).
        #[arg(long, conflicts_with = "number_of_bytes")]
        key_spec: Option<String>,
        /// A data key of this many bytes (1 to 1024).
        #[arg(long)]
        number_of_bytes: Option<u32>,
        /// Encryption context pairs, `key=value` (repeatable).
        #[arg(long = "encryption-context", value_name = "KEY=VALUE")]
        context: Vec<String>,
    },
    /// Manages the access keys the AWS API accepts (needs a root token).
    AccessKey {
        #[command(subcommand)]
        command: AccessKeyCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AccessKeyCommand {
    /// Creates an access key and prints its id and secret (shown only this once).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// The identity the key acts as.
        #[arg(long, default_value = "aws")]
        display_name: String,
        /// A policy the key carries (repeatable; default `root`).
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// The service the key's requests act as for secrets' access policies.
        #[arg(long)]
        service: Option<String>,
        /// The environment the key's requests act as for secrets' access policies.
        #[arg(long)]
        environment: Option<String>,
        /// The role the key's requests act as for secrets' access policies.
        #[arg(long)]
        role: Option<String>,
    },
    /// Lists access key ids (never secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deletes an access key.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The access key id.
        id: String,
    },
}

pub(crate) async fn run(command: KmsCommand) -> i32 {
    match run_inner(command).await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

fn context_map(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("encryption context {pair:?} must be KEY=VALUE"))?;
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Value::Object(map))
}

fn read_stdin() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    Ok(buf)
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run_inner(command: KmsCommand) -> anyhow::Result<()> {
    match command {
        KmsCommand::CreateKey {
            aws,
            description,
            key_spec,
            alias,
        } => {
            let client = AwsClient::new(&aws, Service::Kms)?;
            let out = client
                .call(
                    "CreateKey",
                    &json!({ "Description": description, "KeySpec": key_spec }),
                )
                .await?;
            let id = out["KeyMetadata"]["KeyId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(alias) = &alias {
                client
                    .call(
                        "CreateAlias",
                        &json!({ "AliasName": alias, "TargetKeyId": id }),
                    )
                    .await?;
            }
            if aws.format == Format::Json {
                print_json(&out)
            } else {
                println!("KeyId  {id}");
                println!(
                    "Arn    {}",
                    out["KeyMetadata"]["Arn"].as_str().unwrap_or_default()
                );
                if let Some(alias) = alias {
                    println!("Alias  {alias}");
                }
                Ok(())
            }
        }
        KmsCommand::ListKeys { aws } => {
            let client = AwsClient::new(&aws, Service::Kms)?;
            let mut keys = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let mut body = json!({ "Limit": 1000 });
                if let Some(m) = &marker {
                    body["Marker"] = json!(m);
                }
                let out = client.call("ListKeys", &body).await?;
                if let Some(page) = out["Keys"].as_array() {
                    keys.extend(page.iter().cloned());
                }
                match out["NextMarker"].as_str() {
                    Some(next) if out["Truncated"] == json!(true) => marker = Some(next.to_owned()),
                    _ => break,
                }
            }
            if aws.format == Format::Json {
                print_json(&json!({ "Keys": keys }))
            } else {
                for key in keys {
                    println!("{}", key["KeyArn"].as_str().unwrap_or_default());
                }
                Ok(())
            }
        }
        KmsCommand::DescribeKey { aws, key_id } => {
            let client = AwsClient::new(&aws, Service::Kms)?;
            let out = client
                .call("DescribeKey", &json!({ "KeyId": key_id }))
                .await?;
            if aws.format == Format::Json {
                print_json(&out)
            } else {
                let meta = &out["KeyMetadata"];
                for field in [
                    "KeyId",
                    "Arn",
                    "KeySpec",
                    "KeyUsage",
                    "KeyState",
                    "Description",
                ] {
                    println!("{field:<12} {}", meta[field].as_str().unwrap_or_default());
                }
                Ok(())
            }
        }
        KmsCommand::Encrypt {
            aws,
            key_id,
            plaintext,
            context,
        } => {
            let client = AwsClient::new(&aws, Service::Kms)?;
            let plaintext = match plaintext {
                Some(text) => Zeroizing::new(text.into_bytes()),
                None => read_stdin()?,
            };
            let body = json!({
                "KeyId": key_id,
                "Plaintext": STANDARD.encode(plaintext.as_slice()),
                "EncryptionContext": context_map(&context)?,
            });
            let out = client.call("Encrypt", &body).await?;
            if aws.format == Format::Json {
                print_json(&out)
            } else {
                println!("{}", out["CiphertextBlob"].as_str().unwrap_or_default());
                Ok(())
            }
        }
        KmsCommand::Decrypt {
            aws,
            ciphertext_blob,
            context,
            base64,
        } => {
            let client = AwsClient::new(&aws, Service::Kms)?;
            let blob = match ciphertext_blob {
                Some(text) => text,
                None => String::from_utf8(read_stdin()?.to_vec())
                    .context("the ciphertext blob on standard input must be base64 text")?,
            };
            let body = json!({
                "CiphertextBlob": blob.trim(),
                "EncryptionContext": context_map(&context)?,
            });
            let out = Zeroizing::new(client.call("Decrypt", &body).await?.to_string());
            let out: Value = serde_json::from_str(&out)?;
            let encoded = out["Plaintext"].as_str().unwrap_or_default();
            if aws.format == Format::Json {
                return print_json(&out);
            }
            if base64 {
                println!("{encoded}");
            } else {
                let plaintext = Zeroizing::new(
                    STANDARD
                        .decode(encoded)
                        .context("the server's plaintext is not base64")?,
                );
                std::io::stdout().write_all(&plaintext)?;
            }
            Ok(())
        }
        KmsCommand::GenerateDataKey {
            aws,
            key_id,
            key_spec,
            number_of_bytes,
            context,
        } => {
            let client = AwsClient::new(&aws, Service::Kms)?;
            let mut body = json!({
                "KeyId": key_id,
                "EncryptionContext": context_map(&context)?,
            });
            match (key_spec, number_of_bytes) {
                (_, Some(n)) => body["NumberOfBytes"] = json!(n),
                (spec, None) => body["KeySpec"] = json!(spec.unwrap_or_else(|| "AES_256".into())),
            }
            let out = client.call("GenerateDataKey", &body).await?;
            if aws.format == Format::Json {
                print_json(&out)
            } else {
                println!(
                    "Plaintext       {}",
                    out["Plaintext"].as_str().unwrap_or_default()
                );
                println!(
                    "CiphertextBlob  {}",
                    out["CiphertextBlob"].as_str().unwrap_or_default()
                );
                println!(
                    "KeyId           {}",
                    out["KeyId"].as_str().unwrap_or_default()
                );
                Ok(())
            }
        }
        KmsCommand::AccessKey { command } => access_key(command).await,
    }
}

async fn access_key(command: AccessKeyCommand) -> anyhow::Result<()> {
    match command {
        AccessKeyCommand::Create {
            client,
            display_name,
            policies,
            service,
            environment,
            role,
        } => {
            let api = client.client()?;
            let mut body = json!({ "display_name": display_name });
            if !policies.is_empty() {
                body["policies"] = json!(policies);
            }
            for (field, value) in [
                ("service", service),
                ("environment", environment),
                ("role", role),
            ] {
                if let Some(value) = value {
                    body[field] = json!(value);
                }
            }
            let out = api
                .post("sys/aws/access-keys", &body)
                .await?
                .context("the server returned no access key")?;
            if client.format == Format::Json {
                return print_json(&out);
            }
            let data = &out["data"];
            println!(
                "AWS_ACCESS_KEY_ID={}",
                data["access_key_id"].as_str().unwrap_or_default()
            );
            println!(
                "AWS_SECRET_ACCESS_KEY={}",
                data["secret_access_key"].as_str().unwrap_or_default()
            );
            eprintln!("The secret access key is shown only this once.");
            Ok(())
        }
        AccessKeyCommand::List { client } => {
            let api = client.client()?;
            let out = api
                .get("sys/aws/access-keys")
                .await?
                .context("the server returned no list")?;
            if client.format == Format::Json {
                return print_json(&out);
            }
            for id in out["data"]["keys"].as_array().into_iter().flatten() {
                let id = id.as_str().unwrap_or_default();
                let info = &out["data"]["key_info"][id];
                let bound: Vec<String> = ["service", "environment", "role"]
                    .iter()
                    .filter_map(|k| info[*k].as_str().map(|v| format!("{k}={v}")))
                    .collect();
                println!(
                    "{id}  {}  {}  {}",
                    info["display_name"].as_str().unwrap_or_default(),
                    info["policies"],
                    bound.join(",")
                );
            }
            Ok(())
        }
        AccessKeyCommand::Delete { client, id } => {
            let api = client.client()?;
            api.delete(&format!("sys/aws/access-keys/{id}")).await?;
            println!("Deleted access key {id}");
            Ok(())
        }
    }
}
