//! Starting and stopping a bridge: checks the database and the homeserver,
//! serves the appservice API, registers the bot and resumes saved logins.
//! Used by the binary and, in-process, by the end-to-end tests.

use crate::bridge::{Bridge, MatrixHandler};
use crate::config::{Config, Registration};
use crate::matrix::{
    AppserviceConfig, AppserviceServer, DeliveredEvent, EventInbox, InboxError, MatrixClient,
    MatrixError, ServerOptions, UserNamespace,
};
use crate::store::{InboxRow, Store};
use ruma::OwnedServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why the bridge could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] crate::store::StoreError),
    #[error("homeserver at {url} cannot be reached: {source}")]
    Homeserver { url: String, source: MatrixError },
    #[error(
        "the homeserver cannot reach the bridge at {url} (appservice ping failed: {source}); check appservice.address and that the homeserver loaded registration.yaml"
    )]
    Ping { url: String, source: MatrixError },
    #[error(
        "the homeserver refused the bridge's as_token ({0}); is registration.yaml loaded by the homeserver?"
    )]
    AsToken(MatrixError),
    #[error("appservice listener on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
}

/// The appservice server's event inbox, in the database: events are stored
/// before their transaction is acknowledged and survive a crash.
#[derive(Clone)]
struct StoredInbox(Store);

impl EventInbox for StoredInbox {
    async fn record(&self, events: &[DeliveredEvent]) -> Result<Vec<String>, InboxError> {
        let rows: Vec<InboxRow> = events
            .iter()
            .map(|e| InboxRow {
                event_id: e.event_id.clone(),
                room_id: e.room_id.clone(),
                event: e.json.clone(),
            })
            .collect();
        Ok(self.0.inbox().record(&rows).await?)
    }

    async fn done(&self, event_ids: &[String]) -> Result<(), InboxError> {
        self.0.inbox().done_all(event_ids).await?;
        Ok(())
    }

    async fn pending(&self) -> Result<Vec<DeliveredEvent>, InboxError> {
        let rows = self.0.inbox().pending().await?;
        Ok(rows
            .into_iter()
            .map(|row| DeliveredEvent {
                event_id: row.event_id,
                room_id: row.room_id,
                json: row.event,
            })
            .collect())
    }
}

/// Handled events are remembered this long, to recognise a homeserver's
/// late redelivery; pruned at start and then daily.
const INBOX_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Ghost rows read into memory at start when there are no more of them.
const GHOSTS_PRELOADED: i64 = 100_000;
const INBOX_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

async fn prune_inbox(store: Store) {
    let mut every = tokio::time::interval(INBOX_PRUNE_EVERY);
    loop {
        every.tick().await;
        match store.inbox().prune_done_older_than(INBOX_KEPT).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "forgot old handled Matrix events"),
            Err(error) => tracing::warn!(%error, "could not prune the event inbox"),
        }
    }
}

/// A running bridge.
pub struct Running {
    pub bridge: Arc<Bridge>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops serving, closes the MAX connections and waits for the server.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.bridge.shutdown().await;
        match (&mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "appservice server ended with an error"),
            Err(error) => tracing::warn!(%error, "appservice server task failed"),
        }
        self.bridge.store().close().await;
    }

    /// Waits until the server stops on its own (it does not, normally).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

pub fn appservice_config(
    config: &Config,
    registration: &Registration,
) -> Result<AppserviceConfig, StartError> {
    let server_name = OwnedServerName::try_from(config.homeserver.domain.as_str())
        .map_err(|e| StartError::Config(format!("homeserver.domain: {e}")))?;
    let probe = config.clone();
    Ok(AppserviceConfig {
        homeserver_url: config.homeserver.address.clone(),
        server_name,
        as_token: registration.as_token.clone(),
        hs_token: registration.hs_token.clone(),
        bot_localpart: registration.sender_localpart.clone(),
        appservice_id: registration.id.clone(),
        user_namespace: UserNamespace::new(move |user| {
            probe.max_user_id_from_ghost(user.as_str()).is_some()
        }),
    })
}

/// Checks the database and homeserver, starts serving on
/// `appservice.hostname:port` and resumes logins.
pub async fn start(config: Config, registration: Registration) -> Result<Running, StartError> {
    let addr = format!("{}:{}", config.appservice.hostname, config.appservice.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    start_on(config, registration, listener).await
}

/// [`start`] on a listener the caller bound (systemd socket activation, or
/// tests that must keep their port between restarts).
pub async fn start_on(
    config: Config,
    registration: Registration,
    listener: tokio::net::TcpListener,
) -> Result<Running, StartError> {
    let database_url = config
        .database
        .connect_url()
        .map_err(|e| StartError::Config(format!("database.url: {e}")))?;
    let store = Store::connect(&database_url, config.database.max_connections).await?;
    tracing::info!(database = store.db().kind().as_str(), "database ready");
    // A small table is read whole (a few MiB at most), so that new ghosts
    // cost no lookup; a large one is read as ghosts are needed.
    if let Err(error) = store.ghosts().preload(GHOSTS_PRELOADED).await {
        tracing::warn!(%error, "could not read the ghosts ahead; they are read as needed");
    }
    let appservice = appservice_config(&config, &registration)?;
    let matrix = MatrixClient::new(&appservice).map_err(|source| StartError::Homeserver {
        url: config.homeserver.address.to_string(),
        source,
    })?;
    let patience = Duration::from_secs(config.homeserver.start_patience);
    let versions = patiently("homeserver versions", patience, || matrix.versions())
        .await
        .map_err(|source| StartError::Homeserver {
            url: config.homeserver.address.to_string(),
            source,
        })?;
    tracing::info!(versions = ?versions.versions, "homeserver answers");

    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: "the given listener".to_owned(),
        source,
    })?;

    let http = crate::fetch::GuardedClient::new(config.max.media.fetch_policy())
        .map_err(|e| StartError::Config(format!("max.media: {e}")))?;
    let bridge = Bridge::new(config.clone(), store.clone(), matrix.clone(), http);
    let handler = Arc::new(MatrixHandler {
        bridge: Arc::clone(&bridge),
    });
    let server = AppserviceServer::new(
        appservice.hs_token.clone(),
        handler,
        StoredInbox(store.clone()),
        ServerOptions::default(),
    );
    bridge.spawn_task(prune_inbox(store));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = server.router().merge(operations_routes(&bridge));
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let running = Running {
        bridge: Arc::clone(&bridge),
        addr: local_addr,
        stop: Some(stop_tx),
        server,
    };

    if let Err(error) = check_homeserver(&bridge, &matrix, &registration, patience).await {
        running.shutdown().await;
        return Err(error);
    }
    bridge.resume_logins().await;
    tracing::info!(addr = %local_addr, bot = %bridge.bot_id(), "bridge running");
    Ok(running)
}

/// Routes for whoever runs the bridge, beside the appservice API: a health
/// check (the process serves), the provisioning API and `/metrics` when
/// enabled.
fn operations_routes(bridge: &Arc<Bridge>) -> axum::Router {
    let mut routes = axum::Router::new().route(
        "/_maxbridge/health",
        axum::routing::get(|| async { "ok\n" }),
    );
    if let Some(provisioning) = crate::bridge::provision::routes(bridge) {
        routes = routes.merge(provisioning);
    }
    if bridge.config().metrics.enabled {
        let bridge = Arc::clone(bridge);
        routes = routes.route(
            "/metrics",
            axum::routing::get(move || {
                let bridge = Arc::clone(&bridge);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        bridge.metrics_text(),
                    )
                }
            }),
        );
    }
    routes
}

/// Runs `attempt` until it succeeds, fails for good, or `patience` runs
/// out, retrying with backoff while the homeserver is unavailable (starting
/// too, or too loaded to answer its ping in time).
async fn patiently<T, F, Fut>(what: &str, patience: Duration, attempt: F) -> Result<T, MatrixError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, MatrixError>>,
{
    let backoff = crate::retry::Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(10),
        patience,
    };
    crate::retry::retry(what, backoff, MatrixError::is_transient, attempt).await
}

async fn check_homeserver(
    bridge: &Bridge,
    matrix: &MatrixClient,
    registration: &Registration,
    patience: Duration,
) -> Result<(), StartError> {
    match patiently("appservice ping", patience, || matrix.ping()).await {
        Ok(rtt) => tracing::info!(?rtt, "homeserver reaches the appservice"),
        Err(error) if error.errcode() == Some("M_UNRECOGNIZED") => {
            tracing::warn!("homeserver has no appservice ping endpoint; skipping the check")
        }
        Err(error)
            if error.errcode() == Some("M_UNKNOWN_TOKEN")
                || error.errcode() == Some("M_FORBIDDEN") =>
        {
            return Err(StartError::AsToken(error));
        }
        Err(source) => {
            return Err(StartError::Ping {
                url: registration.url.clone(),
                source,
            });
        }
    }
    let bot = bridge.bot_id();
    matrix
        .register_user(bot.localpart())
        .await
        .map_err(StartError::AsToken)?;
    let config = bridge.config();
    let wanted = &config.appservice.bot.displayname;
    match matrix.get_profile(&bot).await {
        Ok(profile) if profile.displayname.as_deref() == Some(wanted.as_str()) => {}
        _ => {
            if let Err(error) = matrix.set_displayname(&bot, wanted).await {
                tracing::warn!(%error, "could not set the bot's display name");
            }
        }
    }
    let avatar = ruma::OwnedMxcUri::from(config.appservice.bot.avatar.as_str());
    if avatar.is_valid()
        && let Err(error) = matrix.set_avatar_url(&bot, &avatar).await
    {
        tracing::warn!(%error, "could not set the bot's avatar");
    }
    Ok(())
}
