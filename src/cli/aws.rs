//! `arca aws`: setting up the AWS back end (feature `aws`).
//!
//! `arca aws init-table` creates the DynamoDB table arca stores its records in (string
//! partition key `pk`, string sort key `sk`, on-demand capacity; see
//! `arca_storage::backend::dynamodb` for the layout and why) and prints the least IAM policy
//! a server needs: the item operations on that one table, and, for the `awskms` seal, the KMS
//! operations on that one key. Credentials, region and endpoint come from the standard AWS
//! chain, overridden by `arca.toml`'s `[storage]` and then by the flags.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::config::{ServerConfig, StorageKind};

/// `arca aws ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AwsCommand {
    /// Creates the DynamoDB table (on-demand capacity) and prints the IAM policy arca needs.
    InitTable(InitTableArgs),
}

/// Flags of `arca aws init-table`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitTableArgs {
    /// Take the table, region and endpoint from this arca.toml (`[storage]`, and the KMS key
    /// of `[seal]` for the policy).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The table name (overrides the file; default "arca").
    #[arg(long)]
    table: Option<String>,
    /// The AWS region (overrides the file; default: the AWS chain).
    #[arg(long)]
    region: Option<String>,
    /// The DynamoDB endpoint (overrides the file; default: AWS_ENDPOINT_URL or AWS's own).
    #[arg(long)]
    endpoint: Option<String>,
}

pub(crate) async fn run(command: AwsCommand) -> i32 {
    match command {
        AwsCommand::InitTable(args) => match init_table(args).await {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("error: {err:#}");
                1
            }
        },
    }
}

async fn init_table(args: InitTableArgs) -> anyhow::Result<()> {
    let file = args.config.as_deref().map(ServerConfig::load).transpose()?;
    let storage = file.as_ref().map(|c| &c.storage);
    if let Some(storage) = storage
        && storage.backend != StorageKind::Dynamodb
    {
        anyhow::bail!("the configuration's storage backend is not \"dynamodb\"");
    }
    let mut config = arca_storage::DynamoDbConfig::new(
        args.table
            .or_else(|| storage.and_then(|s| s.table.clone()))
            .unwrap_or_else(|| "arca".to_owned()),
    );
    config.region = args
        .region
        .or_else(|| storage.and_then(|s| s.region.clone()));
    config.endpoint = args
        .endpoint
        .or_else(|| storage.and_then(|s| s.endpoint.clone()));
    config.check().map_err(anyhow::Error::msg)?;
    let sdk = config.sdk_config().await;
    let client = arca_storage::backend::dynamodb::client(&sdk);
    let created = arca_storage::backend::dynamodb::create_table(&client, &config.table)
        .await
        .with_context(|| format!("cannot create the table {:?}", config.table))?;
    let described = client
        .describe_table()
        .table_name(&config.table)
        .send()
        .await
        .with_context(|| format!("cannot describe the table {:?}", config.table))?;
    let arn = described
        .table()
        .and_then(|t| t.table_arn())
        .map(str::to_owned)
        .context("DynamoDB did not return the table's ARN")?;
    eprintln!(
        "{} table {} ({arn})",
        if created {
            "created"
        } else {
            "found the existing"
        },
        config.table
    );
    let kms_key = file
        .as_ref()
        .filter(|c| c.seal.kind == crate::config::SealKindName::Awskms)
        .and_then(|c| c.seal.kms_key_id.clone());
    eprintln!("the least IAM policy an arca server needs:");
    let policy = serde_json::to_string_pretty(&policy(&arn, kms_key.as_deref()))?;
    println!("{policy}");
    Ok(())
}

/// The IAM policy of a server over the table `table_arn`, and the `awskms` seal's key when
/// given: nothing else, not even listing tables.
fn policy(table_arn: &str, kms_key: Option<&str>) -> serde_json::Value {
    let mut statements = vec![json!({
        "Sid": "ArcaRecords",
        "Effect": "Allow",
        // GetItem and Query read (always consistently); PutItem and DeleteItem write, alone
        // or inside TransactWriteItems, which needs no action of its own; DescribeTable is
        // the check at start-up that the table exists.
        "Action": [
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:DescribeTable"
        ],
        "Resource": table_arn
    })];
    if let Some(key) = kms_key {
        let resource = if key.starts_with("arn:") {
            key.to_owned()
        } else {
            format!("<the ARN of {key}>")
        };
        statements.push(json!({
            "Sid": "ArcaSeal",
            "Effect": "Allow",
            // Encrypt wraps the unseal key at init and rewrap; Decrypt unwraps it at every
            // start; DescribeKey resolves the configured id or alias to the key's ARN.
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"],
            "Resource": resource
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_one_table_and_one_key() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/arca";
        let p = policy(arn, None);
        assert_eq!(p["Statement"].as_array().map(Vec::len), Some(1));
        assert_eq!(p["Statement"][0]["Resource"], arn);
        let key = "arn:aws:kms:us-east-1:123456789012:key/1234";
        let p = policy(arn, Some(key));
        assert_eq!(p["Statement"][1]["Resource"], key);
        assert!(p["Statement"][1]["Action"].as_array().is_some_and(|a| {
            a.iter()
                .all(|x| x.as_str().is_some_and(|s| s.starts_with("kms:")))
        }));
    }
}
