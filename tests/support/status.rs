//! A bridge state endpoint for tests: records every report the bridge
//! posts, with the token it presented.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use tokio::sync::Notify;

/// One report as received.
#[derive(Clone, Debug)]
pub struct Report {
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

impl Report {
    pub fn state(&self) -> &str {
        self.body["state_event"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Received {
    reports: Mutex<Vec<Report>>,
    changed: Notify,
}

pub struct StatusSink {
    received: Arc<Received>,
    url: String,
    _server: tokio::task::JoinHandle<()>,
}

impl StatusSink {
    pub async fn start() -> StatusSink {
        let received = Arc::new(Received::default());
        let app = axum::Router::new()
            .route("/status", axum::routing::post(record))
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("status endpoint binds");
        let url = format!(
            "http://{}/status",
            listener.local_addr().expect("bound address")
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("status endpoint serves");
        });
        StatusSink {
            received,
            url,
            _server: server,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn reports(&self) -> Vec<Report> {
        self.received
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (up to a deadline) until the reports after the first `skip`
    /// hold one in `state`, and returns it.
    pub async fn wait_for_state(&self, skip: usize, state: &str) -> Report {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let changed = self.received.changed.notified();
            if let Some(found) = self
                .reports()
                .into_iter()
                .skip(skip)
                .find(|r| r.state() == state)
            {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "no {state} report after the first {skip}; received: {:#?}",
                    self.reports()
                );
            }
        }
    }
}

async fn record(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<serde_json::Value>,
) {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    received
        .reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Report {
            authorization,
            body,
        });
    received.changed.notify_waiters();
}
