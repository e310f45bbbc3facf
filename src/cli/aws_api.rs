//! The client side of arca's AWS JSON 1.1 API, shared by `arca kms` and `arca secrets`.
//!
//! The commands are AWS clients like any other: each request is signed with SigV4 (the
//! `aws-sigv4` signer, through [`crate::server::aws::sigv4::sign_request`]) using
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` and the region `AWS_REGION` (default
//! `us-east-1`), so they exercise exactly what boto3 or the aws CLI would. An AWS error
//! becomes an error naming its code and message.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde_json::Value;
use zeroize::Zeroizing;

use super::Format;

/// Where the AWS API is and who signs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AwsArgs {
    /// The server address.
    #[arg(long, env = "ARCA_ADDR", default_value = "http://127.0.0.1:8200")]
    pub(crate) address: String,
    /// The region (state is kept per region).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub(crate) region: String,
    /// The access key id (`arca kms access-key create` makes one; any works with `--dev`).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub(crate) access_key_id: Option<String>,
    /// The secret access key. Prefer the environment variable: arguments show in `ps`.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub(crate) secret_access_key: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

/// The AWS services arca serves, as a client addresses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// KMS: `X-Amz-Target: TrentService.<Op>`, signing name `kms`.
    Kms,
    /// Secrets Manager: `X-Amz-Target: secretsmanager.<Op>`, signing name `secretsmanager`.
    SecretsManager,
}

impl Service {
    fn target_prefix(self) -> &'static str {
        match self {
            Self::Kms => "TrentService",
            Self::SecretsManager => "secretsmanager",
        }
    }

    fn signing_name(self) -> &'static str {
        match self {
            Self::Kms => "kms",
            Self::SecretsManager => "secretsmanager",
        }
    }
}

/// A minimal SigV4-signing client of one service of arca's AWS JSON API.
pub(crate) struct AwsClient {
    http: reqwest::Client,
    service: Service,
    address: String,
    host: String,
    region: String,
    access_key_id: String,
    secret: Zeroizing<String>,
}

impl AwsClient {
    pub(crate) fn new(args: &AwsArgs, service: Service) -> anyhow::Result<Self> {
        let address = args.address.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&address)
            .with_context(|| format!("the address {address:?} is not a URL"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => bail!("the address {address:?} has no host"),
        };
        let (Some(access_key_id), Some(secret)) =
            (args.access_key_id.clone(), args.secret_access_key.clone())
        else {
            bail!(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (create a key with `arca kms \
                 access-key create`; with a --dev server any values work)"
            );
        };
        let http = crate::client::http_client(Duration::from_secs(60))?;
        Ok(Self {
            http,
            service,
            address,
            host,
            region: args.region.clone(),
            access_key_id,
            secret: Zeroizing::new(secret),
        })
    }

    /// Calls `<Service>.<operation>` with `body`; an AWS error becomes an error naming its
    /// code and message. The raw request and answer bodies, which may hold secrets, are kept
    /// in wipe-on-drop buffers; the parsed answer (`serde_json` has no wiping representation)
    /// is an ordinary copy that lives as long as the command needs it.
    pub(crate) async fn call(&self, operation: &str, body: &Value) -> anyhow::Result<Value> {
        let body = Zeroizing::new(serde_json::to_vec(body)?);
        let target = format!("{}.{operation}", self.service.target_prefix());
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", crate::server::aws::CONTENT_TYPE),
            ("x-amz-target", target.as_str()),
        ];
        let url = format!("{}/", self.address);
        let signed = crate::server::aws::sigv4::sign_request(
            "POST",
            &url,
            &headers,
            &body,
            &self.region,
            self.service.signing_name(),
            &self.access_key_id,
            self.secret.as_str(),
            SystemTime::now(),
        )?;
        let mut request = self.http.post(format!("{}/", self.address));
        for (name, value) in headers.iter().skip(1) {
            request = request.header(*name, *value);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let response = request
            .body(body.to_vec())
            .send()
            .await
            .with_context(|| format!("cannot reach arca at {}", self.address))?;
        let status = response.status();
        let text = Zeroizing::new(response.text().await?);
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        bail!(
            "{} ({}): {}",
            value["__type"].as_str().unwrap_or("error"),
            status.as_u16(),
            value["message"].as_str().unwrap_or_default()
        )
    }
}
