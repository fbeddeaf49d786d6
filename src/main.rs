//! The `maxbridge` binary: runs the bridge, or writes its appservice
//! registration (`-g` / `generate-registration`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use maxbridge::config::{Config, LogFormat, Registration, generate_registration};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "A Matrix appservice bridge to the MAX messenger")]
struct Cli {
    /// Path of the configuration file.
    #[arg(short, long, default_value = "config.yaml")]
    config: PathBuf,
    /// Write the appservice registration and exit (as mautrix bridges' -g).
    #[arg(short = 'g', long = "generate-registration")]
    generate: bool,
    /// Print the example configuration (every key, documented) and exit.
    #[arg(short = 'e', long = "example-config")]
    example: bool,
    /// Where to write the registration (default: appservice.registration of the config).
    #[arg(short, long)]
    registration: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write the appservice registration (tokens are kept when it exists) and exit.
    GenerateRegistration,
    /// Ask the running bridge of this configuration whether it serves
    /// (exit status 0) or not (1): a container's health check.
    Health,
}

/// GET `/_maxbridge/health` on the configured listener (a wildcard address
/// is asked on loopback).
async fn health(config: &Config) -> anyhow::Result<()> {
    let host = match config.appservice.hostname.as_str() {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "[::1]",
        host if host.contains(':') => &format!("[{host}]"),
        host => host,
    };
    let url = format!("http://{host}:{}/_maxbridge/health", config.appservice.port);
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    println!("ok");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.example {
        print!("{}", include_str!("../config.yaml.example"));
        return Ok(());
    }
    let config = Config::load(&cli.config)
        .with_context(|| format!("reading the configuration {}", cli.config.display()))?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime.worker_threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli, config))
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    let registration_path = cli
        .registration
        .clone()
        .unwrap_or_else(|| config.appservice.registration.clone());

    if cli.generate || matches!(cli.command, Some(Command::GenerateRegistration)) {
        let mut config = config;
        config.appservice.registration = registration_path.clone();
        let registration = generate_registration(&config)?;
        registration
            .save(&registration_path)
            .with_context(|| format!("writing {}", registration_path.display()))?;
        println!(
            "Wrote {}. Add it to the homeserver (Synapse: app_service_config_files) and restart it.",
            registration_path.display()
        );
        return Ok(());
    }

    if matches!(cli.command, Some(Command::Health)) {
        return health(&config).await;
    }

    init_logging(&config)?;
    let registration = Registration::load(&registration_path).with_context(|| {
        format!(
            "reading the registration {} (create it with `maxbridge -g -c {}`)",
            registration_path.display(),
            cli.config.display()
        )
    })?;
    let running = maxbridge::app::start(config, registration)
        .await
        .context("the bridge could not start")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result.context("waiting for Ctrl-C")?;
            tracing::info!("stopping");
        }
        _ = terminate() => tracing::info!("terminated; stopping"),
    }
    running.shutdown().await;
    Ok(())
}

async fn terminate() {
    #[cfg(unix)]
    {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// Whether an event may be logged whatever the configured level: the
/// WebSocket library dumps whole frames at `trace`, and frames carry SMS
/// codes, passwords and tokens, so its events stop at `debug`. (This only
/// lowers; the configured filter applies too. The bridge's own frame
/// traces redact those.)
fn secret_safe(meta: &tracing::Metadata<'_>) -> bool {
    let websocket =
        meta.target().starts_with("tungstenite") || meta.target().starts_with("tokio_tungstenite");
    !websocket || *meta.level() <= tracing::Level::DEBUG
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let configured = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.logging.level))
        .context("logging.level")?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let safe = tracing_subscriber::filter::filter_fn(secret_safe);
    let layer = match config.logging.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_filter(safe)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_filter(safe)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(configured)
        .with(layer)
        .try_init()
        .context("installing the logger")?;
    Ok(())
}
