//! The `maxbridge` binary: runs the bridge (telling systemd when it is
//! ready, when asked to), writes its appservice registration (`-g`), prints
//! the example config (`-e`), or sets up a container's `/data` on first run
//! (`--generate-missing`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use maxbridge::config::{Config, EXAMPLE, LogFormat, Registration, generate_registration};
use std::path::PathBuf;

/// mimalloc instead of glibc's allocator: the message path allocates and
/// frees many small buffers across threads, where glibc's malloc showed as
/// 13 % of the bridge's CPU in a profile of the benchmark (its arenas,
/// consolidation and `free` lists).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// First run in a container: a missing config file is written from the
    /// example (listening on all interfaces), a missing registration is
    /// generated; each time the bridge says what to do next and exits. With
    /// both in place it runs.
    #[arg(long)]
    generate_missing: bool,
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

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", said_once(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many errors repeat
/// their source in their own words, and no backtrace is wanted here (even
/// with RUST_BACKTRACE set) — the words say what to fix.
fn said_once(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.example {
        print!("{EXAMPLE}");
        return Ok(());
    }
    if cli.generate_missing && !cli.config.exists() {
        return write_first_config(&cli.config);
    }
    // Its errors name the file (and the key).
    let config = Config::load(&cli.config)?;
    if let Some((key, problem)) = config.placeholder() {
        anyhow::bail!("{}: {key} {problem}", cli.config.display());
    }
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

    let missing_registration = cli.generate_missing && !registration_path.exists();
    if cli.generate
        || missing_registration
        || matches!(cli.command, Some(Command::GenerateRegistration))
    {
        let mut config = config;
        config.appservice.registration = registration_path.clone();
        let registration = generate_registration(&config)?;
        registration
            .save(&registration_path)
            .with_context(|| format!("writing {}", registration_path.display()))?;
        println!(
            "Wrote {}. Add it to the homeserver (Synapse: app_service_config_files) and restart it{}.",
            registration_path.display(),
            if missing_registration {
                ", then start the bridge again"
            } else {
                ""
            }
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
    let _watchdog = tell_service_manager_ready();
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result.context("waiting for Ctrl-C")?;
            tracing::info!("stopping");
        }
        _ = terminate() => tracing::info!("terminated; stopping"),
    }
    notify_service_manager(sd_notify::NotifyState::Stopping);
    running.shutdown().await;
    Ok(())
}

/// Writes the example config to `path` for a container (listening on all
/// interfaces, since the homeserver reaches the bridge from outside it; the
/// SQLite database beside the config, in the volume) and says what to edit.
fn write_first_config(path: &std::path::Path) -> anyhow::Result<()> {
    let beside = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("maxbridge.db"))
        .unwrap_or_else(|| "maxbridge.db".into());
    let text = EXAMPLE
        .replacen("hostname: 127.0.0.1", "hostname: 0.0.0.0", 1)
        .replacen(
            "url: sqlite:maxbridge.db",
            &format!("url: sqlite:{}", beside.display()),
            1,
        );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Wrote the example configuration to {}. Edit it (at least homeserver.address, \
         homeserver.domain, appservice.address and bridge.permissions; the database is SQLite \
         beside it unless database says otherwise), then start \
         the bridge again: it will write the registration next.",
        path.display()
    );
    Ok(())
}

/// Tells systemd (`Type=notify`) that the bridge serves, and keeps its
/// watchdog fed (`WatchdogSec=`) from the runtime, so a hung runtime gets
/// the process restarted. Nothing happens outside systemd.
fn tell_service_manager_ready() -> Option<tokio::task::JoinHandle<()>> {
    notify_service_manager(sd_notify::NotifyState::Ready);
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    // Twice per period, as sd_watchdog_enabled(3) advises.
    let every = std::time::Duration::from_micros(usec / 2);
    tracing::info!(period = ?std::time::Duration::from_micros(usec), "feeding the systemd watchdog");
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            notify_service_manager(sd_notify::NotifyState::Watchdog);
        }
    }))
}

/// Sends one notification from a blocking thread: the datagram send blocks
/// while the service manager's queue is full, which must never stall the
/// runtime. While an earlier one is still stuck, nothing more is sent.
fn notify_service_manager(state: sd_notify::NotifyState<'static>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SENDING: AtomicBool = AtomicBool::new(false);
    if SENDING.swap(true, Ordering::AcqRel) {
        tracing::trace!(
            ?state,
            "the service manager has not taken the last notification; skipped"
        );
        return;
    }
    tokio::task::spawn_blocking(move || {
        if let Err(error) = sd_notify::notify(false, &[state]) {
            tracing::warn!(%error, "could not notify the service manager");
        }
        SENDING.store(false, Ordering::Release);
    });
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
