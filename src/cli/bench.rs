//! `arca bench load`: fills a KV v2 mount with many small secrets, for the comparison
//! harness's scale step (`benches/compare/run.sh --scale`) and for anyone sizing a store.
//!
//! The loader writes through the HTTP API (`PUT /v1/<mount>/data/<prefix><n>`), not straight
//! into the store file: each secret then costs exactly what a client's write costs (token
//! check, a data key from the key provider, the encrypted version and its metadata, one
//! atomic barrier batch), and the store it leaves is one a real server built. The batches are
//! the server's own: the loader keeps `--concurrency` writes in flight, the redb store's group
//! commit puts the writes that wait together into one transaction and one fsync, and every
//! secret the loader counts was acknowledged, so it is on disk. Since it speaks only Vault's
//! KV v2 API, the same command fills an OpenBao (or Vault) server for comparison.
//!
//! Names are `<prefix>` followed by the number, zero-padded to `--width` digits so that a load
//! generator can pick random existing names with a pattern such as `load/[0-9]{6}`. Values
//! are random hex, so the store's size is that of real, incompressible secrets. The first
//! failed write stops the run with its status and message (never the value), and the exit
//! code is 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::{ClientArgs, Format};
use crate::client::Client;

/// Bench helpers.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Writes COUNT secrets of about SIZE bytes of JSON each to a KV v2 mount, through the
    /// HTTP API, with CONCURRENCY writes in flight; prints the count, the time and the rate.
    Load(LoadArgs),
}

/// Flags of `arca bench load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The KV v2 mount.
    #[arg(long, default_value = "secret")]
    mount: String,
    /// The name of each secret is this prefix followed by its number.
    #[arg(long, default_value = "load/")]
    prefix: String,
    /// How many secrets to write.
    #[arg(long)]
    count: u64,
    /// The number of the first secret.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Zero-pad the numbers to this many digits (default: as many as the largest needs).
    #[arg(long)]
    width: Option<usize>,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Size in bytes of each secret's `data` object as JSON (`{"value":"<hex>"}`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(16..=65536))]
    size: u32,
}

pub(crate) async fn run(command: BenchCommand) -> i32 {
    match command {
        BenchCommand::Load(args) => match load(&args).await {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("error: {err:#}");
                1
            }
        },
    }
}

/// `{"value":""}` is 12 bytes; the hex value fills the rest of `size`.
const DATA_OVERHEAD: u32 = 12;

/// How often progress goes to standard error.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

async fn load(args: &LoadArgs) -> anyhow::Result<()> {
    if args.client.token.is_none() {
        bail!("a token is needed (--token or ARCA_TOKEN)");
    }
    let end = args
        .start
        .checked_add(args.count)
        .context("--start + --count is too large")?;
    let width = args
        .width
        .unwrap_or_else(|| end.saturating_sub(1).max(1).to_string().len());
    let mount = args.mount.trim_matches('/').to_owned();
    let client = args.client.client()?;
    let value_chars = (args.size - DATA_OVERHEAD) as usize;

    let next = Arc::new(AtomicU64::new(args.start));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let job = Job {
            client: client.clone(),
            path_prefix: format!("{mount}/data/{}", args.prefix),
            width,
            value_chars,
            end,
        };
        let (next, written) = (Arc::clone(&next), Arc::clone(&written));
        workers.spawn(async move { job.run(&next, &written).await });
    }

    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(err))) => break Err(err),
                Some(Err(err)) => break Err(anyhow::anyhow!("a writer task failed: {err}")),
            },
            _ = progress.tick() => {
                let done = written.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!("{done} of {} written, {:.0}/s", args.count, done as f64 / secs);
            }
        }
    };
    // On an error, stop the other writers: what they had acknowledged stays counted.
    workers.shutdown().await;
    let seconds = started.elapsed().as_secs_f64();
    let done = written.load(Ordering::Relaxed);
    let rate = done as f64 / seconds.max(f64::EPSILON);
    match args.client.format {
        Format::Json => println!(
            "{}",
            json!({
                "written": done,
                "seconds": seconds,
                "per_second": rate,
                "mount": mount,
                "prefix": args.prefix,
                "first": args.start,
                "width": width,
            })
        ),
        Format::Table if outcome.is_ok() && done > 0 => println!(
            "wrote {done} secrets to {mount}/data/{}[{:0width$}..{:0width$}] in {seconds:.1} s \
             ({rate:.0}/s)",
            args.prefix,
            args.start,
            end - 1,
        ),
        // After an error the numbers written need not be contiguous: only the count is sure.
        Format::Table => println!(
            "wrote {done} secrets to {mount}/data/{} in {seconds:.1} s",
            args.prefix
        ),
    }
    outcome
}

/// One writer: takes the next number until none is left.
struct Job {
    client: Client,
    path_prefix: String,
    width: usize,
    value_chars: usize,
    end: u64,
}

impl Job {
    async fn run(&self, next: &AtomicU64, written: &AtomicU64) -> anyhow::Result<()> {
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= self.end {
                return Ok(());
            }
            let random = crate::kms::random_bytes(self.value_chars.div_ceil(2))
                .context("the OS random generator failed")?;
            let mut value = hex::encode(random.as_slice());
            value.truncate(self.value_chars);
            let path = format!("{}{:0width$}", self.path_prefix, n, width = self.width);
            self.client
                .put(&path, &json!({ "data": { "value": value } }))
                .await
                .with_context(|| format!("writing {path}"))?;
            written.fetch_add(1, Ordering::Relaxed);
        }
    }
}
