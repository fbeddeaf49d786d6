//! The *null homeserver*: answers every Client-Server API call the bridge
//! makes at once and plausibly, so that what the benchmark measures is the
//! bridge (and the simulator and PostgreSQL), not a homeserver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::env::BridgeFiles;

/// What the null homeserver has been asked, for the benchmark to wait on.
#[derive(Default)]
pub struct NullHomeserver {
    /// Requests answered so far.
    pub counter: AtomicU64,
    pub messages_sent: AtomicU64,
    /// Woken at every message sent, for the latency rounds.
    pub message_arrived: Notify,
    /// Requests answered by kind (method and path without ids).
    kinds: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl NullHomeserver {
    /// Serves on a free loopback port; returns its address.
    pub async fn start() -> (Arc<NullHomeserver>, SocketAddr) {
        let hs = Arc::new(NullHomeserver::default());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&hs));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hs, addr)
    }

    /// Requests answered so far by kind, most asked first.
    pub fn kinds(&self) -> Vec<(String, u64)> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let mut kinds: Vec<(String, u64)> = kinds.iter().map(|(k, n)| (k.clone(), *n)).collect();
        kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        kinds
    }

    /// Serves, and writes the files of a bridge that uses it.
    pub async fn start_for_bridge(
        db_url: &str,
        max_ws: &str,
    ) -> (Arc<NullHomeserver>, BridgeFiles) {
        let (hs, addr) = NullHomeserver::start().await;
        let files = BridgeFiles::write(&format!("http://{addr}"), "bench", db_url, max_ws);
        (hs, files)
    }
}

async fn answer(
    State(hs): State<Arc<NullHomeserver>>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path();
    let n = hs.counter.fetch_add(1, Ordering::Relaxed);
    // Ids (room, user, event, transaction) are left out of the kind.
    let kind: Vec<&str> = path
        .split('/')
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        })
        .collect();
    *hs.kinds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{method} /{}", kind.join("/")))
        .or_default() += 1;
    let answer = if path.ends_with("/versions") {
        json!({"versions": ["v1.11", "v1.12"], "unstable_features": {}})
    } else if path.contains("/appservice/") && path.ends_with("/ping") {
        json!({"duration_ms": 0})
    } else if path.ends_with("/register") {
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let name = body["username"].as_str().unwrap_or("x");
        json!({"user_id": format!("@{name}:bench")})
    } else if path.ends_with("/createRoom") {
        json!({"room_id": format!("!room{n}:bench")})
    } else if path.contains("/send/") {
        if path.contains("/send/m.room.message/") {
            hs.messages_sent.fetch_add(1, Ordering::Relaxed);
            hs.message_arrived.notify_waiters();
        }
        json!({"event_id": format!("$event{n}")})
    } else if path.contains("/state/") && method == Method::GET {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errcode": "M_NOT_FOUND", "error": "no state"})),
        )
            .into_response();
    } else if path.contains("/state/") || path.contains("/redact/") {
        json!({"event_id": format!("$event{n}")})
    } else if path.ends_with("/join") || path.contains("/join/") {
        let room = path
            .split('/')
            .find(|s| s.starts_with('!') || s.starts_with("%21"))
            .unwrap_or("!x:bench");
        json!({"room_id": room.replace("%21", "!").replace("%3A", ":")})
    } else if path.contains("/media/") && path.ends_with("/upload") {
        json!({"content_uri": format!("mxc://bench/media{n}")})
    } else if path.ends_with("/messages") {
        json!({"chunk": [], "start": "s0"})
    } else {
        json!({})
    };
    axum::Json(answer).into_response()
}
