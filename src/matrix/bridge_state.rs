//! Bridge state reports: each login's state, posted to the homeserver's
//! `status_endpoint` as the mautrix bridges post it (Beeper's bridge state
//! API), so an admin's dashboard or a client can show whether a login
//! works. Knows states and users, not what a login is connected to.

use ruma::UserId;
use serde::Serialize;
use std::time::Duration;

use super::Secret;

/// A login's state, as the bridge state API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateEvent {
    Connecting,
    Connected,
    TransientDisconnect,
    BadCredentials,
    LoggedOut,
    UnknownError,
}

/// One report.
#[derive(Debug, Serialize)]
pub struct BridgeState<'a> {
    pub state_event: StateEvent,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// How long the report holds (seconds).
    pub ttl: u64,
    pub source: &'static str,
    pub user_id: &'a str,
    /// The remote account's id and, when known, its name.
    pub remote_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<&'a str>,
    /// A short machine-readable error code, for error states.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

/// A report holds this long unless a newer one replaces it.
const TTL: Duration = Duration::from_secs(3600);
/// A report that takes longer is given up (the next one says the same).
const TIMEOUT: Duration = Duration::from_secs(10);

/// How many reports may wait for a slow endpoint; more are dropped with
/// a warning (the next change is reported again).
const QUEUE: usize = 1024;

/// One report waiting to be posted.
struct Pending {
    user: String,
    remote_id: String,
    remote_name: Option<String>,
    state_event: StateEvent,
    error: Option<(&'static str, String)>,
    at: u64,
}

/// Posts reports to the endpoint with the appservice's token, one at a
/// time and in the order they were made, so the endpoint's last word on a
/// login is the login's last state.
#[derive(Clone)]
pub struct StateReporter {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

impl StateReporter {
    /// Starts the worker that posts (on the current tokio runtime).
    pub fn start(endpoint: url::Url, as_token: Secret) -> StateReporter {
        let (queue, mut pending) = tokio::sync::mpsc::channel::<Pending>(QUEUE);
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            while let Some(report) = pending.recv().await {
                post(&http, &endpoint, &as_token, report).await;
            }
        });
        StateReporter { queue }
    }

    /// Queues one report; never waits.
    pub fn report(
        &self,
        user: &UserId,
        remote_id: String,
        remote_name: Option<String>,
        state_event: StateEvent,
        error: Option<(&'static str, String)>,
    ) {
        let pending = Pending {
            user: user.to_string(),
            remote_id,
            remote_name,
            state_event,
            error,
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        };
        if self.queue.try_send(pending).is_err() {
            tracing::warn!(user = %user, state = ?state_event, "bridge state endpoint is behind; report dropped");
        }
    }
}

/// Posts one report; a failure is logged, never returned (the state is
/// reported again at its next change).
async fn post(http: &reqwest::Client, endpoint: &url::Url, as_token: &Secret, report: Pending) {
    let state = BridgeState {
        state_event: report.state_event,
        timestamp: report.at,
        ttl: TTL.as_secs(),
        source: "bridge",
        user_id: &report.user,
        remote_id: &report.remote_id,
        remote_name: report.remote_name.as_deref(),
        error: report.error.as_ref().map(|(code, _)| *code),
        message: report.error.as_ref().map(|(_, message)| message.as_str()),
    };
    let sent = http
        .post(endpoint.clone())
        .bearer_auth(as_token.expose())
        .timeout(TIMEOUT)
        .json(&state)
        .send()
        .await;
    let user = &report.user;
    match sent {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(%user, state = ?report.state_event, "bridge state reported");
        }
        Ok(response) => {
            tracing::warn!(%user, status = %response.status(), "bridge state endpoint refused the report");
        }
        Err(error) => {
            tracing::warn!(%user, %error, "bridge state not reported");
        }
    }
}
