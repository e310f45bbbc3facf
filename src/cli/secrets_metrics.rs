//! `arca secrets metrics NAME --since ...`: a secret's usage figures, from the server's
//! `sys/secrets-metrics/<name>` endpoint (which counts them from its file audit log).
//!
//! Needs a token (`ARCA_TOKEN`) whose policies grant `read` on `sys/secrets-metrics/<name>`.

use anyhow::Context as _;
use serde_json::Value;

use super::{ClientArgs, Format};

/// The arguments of `arca secrets metrics`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The secret's name (or ARN).
    name: String,
    /// The start of the range: RFC 3339, Unix seconds, or a duration ago (`24h`, `7d`).
    #[arg(long, default_value = "24h")]
    since: String,
    /// The end of the range, in the same forms (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this region (default: every region).
    #[arg(long)]
    region: Option<String>,
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The request path, query included.
fn metrics_path(args: &MetricsArgs) -> String {
    let name: String = args
        .name
        .split('/')
        .map(encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut path = format!("sys/secrets-metrics/{name}?since={}", encode(&args.since));
    if let Some(until) = &args.until {
        path.push_str(&format!("&until={}", encode(until)));
    }
    if let Some(region) = &args.region {
        path.push_str(&format!("&region={}", encode(region)));
    }
    path
}

/// Runs the command.
///
/// # Errors
/// The server's refusal (403 without the grant, 400 without a file audit device) or a
/// connection failure.
pub(crate) async fn run(args: MetricsArgs) -> anyhow::Result<()> {
    let api = args.client.client()?;
    let out = api
        .get(&metrics_path(&args))
        .await?
        .context("the server returned no metrics")?;
    if args.client.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let data = &out["data"];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let services: Vec<String> = data["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(&text)
        .collect();
    let operations: Vec<String> = data["by_operation"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(op, n)| format!("{op}={n}"))
        .collect();
    let peak = match &data["peak_hour"] {
        Value::Object(peak) => format!(
            "{} ({} requests)",
            text(&peak["start"]),
            text(&peak["requests"])
        ),
        _ => "-".to_owned(),
    };
    let rows = [
        ("Secret", text(&data["secret"])),
        ("Since", text(&data["since"])),
        ("Until", text(&data["until"])),
        ("Total accesses", text(&data["total_accesses"])),
        ("Denied", text(&data["denied"])),
        (
            "Unique services",
            format!("{} {}", text(&data["unique_services"]), {
                if services.is_empty() {
                    String::new()
                } else {
                    format!("({})", services.join(", "))
                }
            })
            .trim_end()
            .to_owned(),
        ),
        ("Unique principals", text(&data["unique_principals"])),
        (
            "Average per hour",
            data["average_requests_per_hour"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
        ),
        ("Peak hour", peak),
        (
            "By operation",
            if operations.is_empty() {
                "-".to_owned()
            } else {
                operations.join(", ")
            },
        ),
        ("Audit lines read", text(&data["lines_scanned"])),
    ];
    for (label, value) in rows {
        println!("{label:<18} {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MetricsArgs,
    }

    #[test]
    fn the_path_encodes_names_and_times() {
        let parsed = Wrapper::try_parse_from([
            "metrics",
            "prod/db+x",
            "--since",
            "2026-11-29T10:00:00+01:00",
            "--region",
            "eu-west-1",
        ])
        .unwrap();
        assert_eq!(
            metrics_path(&parsed.args),
            "sys/secrets-metrics/prod/db%2Bx?since=2026-11-29T10%3A00%3A00%2B01%3A00&region=eu-west-1"
        );
        let parsed = Wrapper::try_parse_from(["metrics", "app"]).unwrap();
        assert_eq!(
            metrics_path(&parsed.args),
            "sys/secrets-metrics/app?since=24h"
        );
    }
}
