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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config)
        .with_context(|| format!("reading the configuration {}", cli.config.display()))?;
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

/// The WebSocket library dumps whole frames at `trace`, and frames carry
/// SMS codes, passwords and tokens: its log stops at `debug` whatever the
/// configured level. The bridge's own frame traces redact those.
const SECRET_SAFE_DIRECTIVES: [&str; 2] = ["tungstenite=debug", "tokio_tungstenite=debug"];

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.logging.level))
        .context("logging.level")?;
    for directive in SECRET_SAFE_DIRECTIVES {
        filter = filter.add_directive(directive.parse().context("built-in log directive")?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
    Ok(())
}
