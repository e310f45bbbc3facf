//! `arca server`: configuration, the development mode, and the listener.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{SealKindName, ServerConfig, StorageKind};
use crate::handle::{Arca, open_backend};
use crate::seal::{InitRequest, SealConfig, SealKind};
use crate::server::{ServerOptions, app, load_tls_with_client_auth, serve};

/// Flags of `arca server`. Flags override the configuration file.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// The configuration file (arca.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Development mode: a persistent store in ./.arca that initialises and unseals itself.
    /// Not for production: the unseal key and root token are kept beside the data.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// The listener address (default 127.0.0.1:8200).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The data folder (redb store, Shamir seal unless configured otherwise).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Development mode: use this root token instead of a random one.
    #[arg(long, value_name = "TOKEN", requires = "dev")]
    dev_root_token: Option<String>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long)]
    insecure_listen: bool,
    /// Log filter, e.g. `info`, `debug`, `arca=debug` (overrides the file and ARCA_LOG).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

/// The files development mode keeps beside its data.
const DEV_UNSEAL_FILE: &str = "dev-unseal.key";
const DEV_TOKEN_FILE: &str = "dev-root-token";

pub(crate) async fn run(args: ServerArgs) -> i32 {
    let config = match build_config(&args) {
        Ok(Some(config)) => config,
        Ok(None) => {
            eprintln!(
                "arca server needs one of:\n  --dev              a development server in \
                 ./.arca\n  --data-dir DIR     a sealed server storing in DIR\n  --config FILE \
                      a configuration file (arca.toml)"
            );
            return 2;
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            return 2;
        }
    };
    match run_inner(args, config).await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}

fn build_config(args: &ServerArgs) -> anyhow::Result<Option<ServerConfig>> {
    let mut config = match (&args.config, &args.data_dir, args.dev) {
        (Some(path), _, _) => ServerConfig::load(path)?,
        (None, Some(_), _) | (None, None, true) => ServerConfig::default(),
        (None, None, false) => return Ok(None),
    };
    if let Some(dir) = &args.data_dir {
        config.storage.path = Some(dir.clone());
        if args.config.is_none() {
            config.storage.backend = StorageKind::Redb;
        }
    }
    if args.dev {
        config.storage.backend = StorageKind::Redb;
        config.seal.kind = SealKindName::Shamir;
        if config.storage.path.is_none() {
            config.storage.path = Some(PathBuf::from(".arca"));
        }
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.insecure_listen {
        config.insecure_listen = true;
    }
    if let Some(level) = &args.log_level {
        config.log_level.clone_from(level);
    }
    config.check()?;
    Ok(Some(config))
}

fn init_logging(filter: &str) {
    let filter = std::env::var("ARCA_LOG")
        .ok()
        .filter(|_| filter == "info")
        .unwrap_or_else(|| filter.to_owned());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A plain level (the configuration's usual `log_level`) needs no directive parser: parsing
    // directives compiles regular expressions, which costs the idle server about a MiB of
    // resident memory for code it never runs again.
    if let Ok(level) = filter.parse::<tracing_subscriber::filter::LevelFilter>() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .try_init();
        return;
    }
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

async fn run_inner(args: ServerArgs, config: ServerConfig) -> anyhow::Result<()> {
    init_logging(&config.log_level);

    let backend = open_backend(&config.storage).await?;
    // HA: a standby forwards to the active server until it holds the lease itself.
    let Some(mut activation) =
        crate::server::standby::until_active(&config, Arc::clone(&backend), shutdown_signal())
            .await?
    else {
        return Ok(());
    };
    let arca = Arc::new(
        Arca::open_with_aws(
            backend,
            config.storage.backend,
            config.seal_config()?,
            &config.aws.region,
            &config.aws.account_id,
        )
        .await
        .context("cannot open the store")?,
    );
    if let Some(bytes) = config.storage.record_cache_bytes {
        arca.barrier().set_cache_bytes(bytes);
    }
    if let Some(audit) = &config.audit {
        let device = crate::audit::Device::from_config(&audit.file_path)
            .with_context(|| format!("cannot open the audit log {}", audit.file_path.display()))?;
        arca.audit().enable(device);
    }

    if args.dev {
        let dir = config.storage.path.clone().unwrap_or_default();
        dev_bootstrap(&arca, &dir, args.dev_root_token.as_deref()).await?;
    } else if let SealConfig::KeyFile { .. } = arca.seal().config()
        && arca.seal().status().await?.initialized
    {
        arca.seal()
            .auto_unseal()
            .await
            .context("auto-unseal with the key file failed")?;
        tracing::info!("unsealed with the key file");
    } else if let SealConfig::Kms(kms) = arca.seal().config()
        && arca.seal().status().await?.initialized
    {
        // The KMS is another service and may be down or refuse the key for a while: start
        // sealed and say why, rather than exit, so `sys/seal-status` and `sys/health` answer.
        // A restart once the KMS is back unseals.
        match arca.seal().auto_unseal().await {
            Ok(()) => tracing::info!(key = kms.key_id(), "unsealed through the KMS"),
            Err(e) => tracing::error!(
                key = kms.key_id(),
                error = %e,
                "auto-unseal through the KMS failed; the store stays sealed until a restart \
                 succeeds"
            ),
        }
    }

    let tls = match &config.tls {
        Some(tls) => Some(
            load_tls_with_client_auth(
                &tls.cert,
                &tls.key,
                arca.zerotrust().client_cas().verifier(),
            )
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let listener = match activation.take_listener()? {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?,
    };
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let options = ServerOptions {
        dev: args.dev,
        request_timeout: Duration::from_secs(config.request_timeout_secs),
        max_request_bytes: config.max_request_bytes,
    };
    let application = activation.layer(app(arca.clone(), options));
    {
        // Tests and scripts read this line to learn the port of a `:0` listener.
        let mut out = std::io::stdout().lock();
        writeln!(out, "arca listening on {scheme}://{local}")?;
        out.flush()?;
    }
    tracing::info!(address = %local, tls = tls.is_some(), "listening");
    // Expired tokens and secret ids go through their expiry indexes, at start and periodically.
    let tidy = crate::auth::spawn_tidy(
        arca.tokens().clone(),
        arca.approle().clone(),
        Duration::from_secs(5),
    );
    // Zero-trust: the client-CA registry follows the seal; expired nonces and sessions go.
    let zt_tidy = crate::zerotrust::spawn_tidy(arca.clone(), Duration::from_secs(5));
    // Rotation: arca.toml's rotators, and the scheduler that runs due rotations (those missed
    // while arca was down first) and purges deleted secrets; it idles while sealed.
    arca.rotations()
        .configure(config.rotation.clone())
        .map_err(anyhow::Error::msg)?;
    let rotation = crate::lifecycle::rotation::Scheduler::start(arca.clone());
    // On shutdown, the change feed's long polls answer at once rather than hold it up.
    let changes = arca.changes().clone();
    let shutdown = async move {
        shutdown_signal().await;
        changes.close();
    };
    serve(listener, application, tls, shutdown).await?;
    tracing::info!("shutting down");
    tidy.abort();
    zt_tidy.abort();
    // The rotation under way finishes (or is resumed at the next start).
    rotation.shutdown().await;
    arca.barrier().flush().await.ok();
    activation.release().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop arca with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Development mode: initialise a new store with one unseal share kept in a 0600 file beside
/// the data, unseal an existing one from that file, and print the root token and address.
async fn dev_bootstrap(arca: &Arca, dir: &Path, fixed_token: Option<&str>) -> anyhow::Result<()> {
    let seal = arca.seal();
    let unseal_path = dir.join(DEV_UNSEAL_FILE);
    let token_path = dir.join(DEV_TOKEN_FILE);
    let status = seal.status().await?;
    if !status.initialized {
        let result = seal
            .initialize(InitRequest {
                secret_shares: 1,
                secret_threshold: 1,
                root_token: fixed_token.map(str::to_owned),
                ..InitRequest::default()
            })
            .await
            .context("cannot initialise the development store")?;
        let share = result
            .keys
            .first()
            .context("initialisation returned no unseal key")?;
        write_private(&unseal_path, share.hex.as_bytes())?;
        write_private(&token_path, result.root_token.expose_secret().as_bytes())?;
    } else if seal.config().kind() != SealKind::Shamir {
        bail!(
            "the store in {} was not created in development mode",
            dir.display()
        );
    }
    if seal.status().await?.sealed {
        let share =
            zeroize::Zeroizing::new(std::fs::read_to_string(&unseal_path).with_context(|| {
                format!(
                    "the store in {} is initialised but {} is missing: unseal it with `arca \
                     operator unseal` or remove the folder",
                    dir.display(),
                    unseal_path.display()
                )
            })?);
        seal.submit_share(share.trim())
            .await
            .context("the development unseal key does not open this store")?;
    }
    if let Some(token) = fixed_token
        && arca.tokens().lookup(token).await?.is_none()
    {
        let token = arca.tokens().create_root_token(Some(token)).await?;
        write_private(&token_path, token.expose_secret().as_bytes())?;
    }
    // Vault's dev server mounts KV version 2 at `secret/`; arca adds `transit/`.
    for (path, kind) in [
        ("secret/", crate::mounts::MountKind::KvV2),
        ("transit/", crate::mounts::MountKind::Transit),
    ] {
        arca.mounts()
            .ensure(path, kind)
            .await
            .with_context(|| format!("cannot mount {path} in development mode"))?;
    }
    let token = zeroize::Zeroizing::new(std::fs::read_to_string(&token_path).unwrap_or_default());
    eprintln!(
        "\nWARNING: development mode. The unseal key and the root token are stored in clear in\n\
         {dir}, beside the data. Never use development mode for real secrets.\n\n\
         Data:        {dir} (persists across restarts)\n\
         Root Token:  {token}\n\n\
         export ARCA_ADDR / VAULT_ADDR to the address printed below and\n\
         export ARCA_TOKEN / VAULT_TOKEN={token}\n",
        dir = dir.display(),
        token = token.trim(),
    );
    Ok(())
}

/// Writes a file readable by its owner only (0600), replacing it atomically.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
