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
