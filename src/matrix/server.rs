//! The appservice HTTP server: authenticates the homeserver, deduplicates
//! transactions through a [`TransactionLog`], and feeds events into per-room
//! ordered queues that call the bridge's [`AppserviceHandler`].
//!
//! A transaction is answered as soon as its events are enqueued, so a slow
//! room never makes the homeserver time out and redeliver.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ruma::{OwnedRoomId, RoomAliasId, UserId};
use serde_json::{Value, json};

use super::Secret;
use super::event::{EphemeralEvent, RoomEvent};
use crate::queue::KeyedQueue;

/// Error type of [`TransactionLog`] implementations; any error converts into it
/// with `?`.
pub type TransactionLogError = Box<dyn std::error::Error + Send + Sync>;

/// Remembers which transactions were handled, so a transaction the homeserver
/// redelivers (e.g. after our restart) is acknowledged without reprocessing.
pub trait TransactionLog: Send + Sync + 'static {
    fn is_handled(
        &self,
        txn_id: &str,
    ) -> impl Future<Output = Result<bool, TransactionLogError>> + Send;

    fn mark_handled(
        &self,
        txn_id: &str,
    ) -> impl Future<Output = Result<(), TransactionLogError>> + Send;
}

impl<T: TransactionLog> TransactionLog for Arc<T> {
    fn is_handled(
        &self,
        txn_id: &str,
    ) -> impl Future<Output = Result<bool, TransactionLogError>> + Send {
        T::is_handled(self, txn_id)
    }

    fn mark_handled(
        &self,
        txn_id: &str,
    ) -> impl Future<Output = Result<(), TransactionLogError>> + Send {
        T::mark_handled(self, txn_id)
    }
}

/// A [`TransactionLog`] that forgets on restart; for tests and tools.
#[derive(Debug, Default)]
pub struct InMemoryTransactionLog {
    handled: Mutex<HashSet<String>>,
}

impl TransactionLog for InMemoryTransactionLog {
    async fn is_handled(&self, txn_id: &str) -> Result<bool, TransactionLogError> {
        let handled = self.handled.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(handled.contains(txn_id))
    }

    async fn mark_handled(&self, txn_id: &str) -> Result<(), TransactionLogError> {
        let mut handled = self.handled.lock().unwrap_or_else(PoisonError::into_inner);
        handled.insert(txn_id.to_owned());
        Ok(())
    }
}

/// What the bridge does with what the homeserver pushes.
///
/// `handle_event` and `handle_ephemeral` run on per-room queue workers: calls
/// for one room never overlap and come in delivery order; rooms run
/// concurrently. Errors are the handler's to log: the transaction is already
/// acknowledged.
pub trait AppserviceHandler: Send + Sync + 'static {
    fn handle_event(&self, event: RoomEvent) -> impl Future<Output = ()> + Send;

    fn handle_ephemeral(&self, event: EphemeralEvent) -> impl Future<Output = ()> + Send {
        let _ = event;
        async {}
    }

    /// Whether `user_id` exists (creating it on demand is allowed).
    fn query_user(&self, user_id: &UserId) -> impl Future<Output = bool> + Send {
        let _ = user_id;
        async { false }
    }

    /// Whether `alias` exists (creating the room on demand is allowed).
    fn query_alias(&self, alias: &RoomAliasId) -> impl Future<Output = bool> + Send {
        let _ = alias;
        async { false }
    }
}

/// Tuning of the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Events buffered per room before a transaction waits (back-pressure
    /// towards the homeserver).
    pub queue_capacity: usize,
    /// How long a room's worker stays around without events.
    pub queue_idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            queue_capacity: 128,
            queue_idle_timeout: Duration::from_secs(60),
        }
    }
}

enum Queued {
    Room(RoomEvent),
    Ephemeral(EphemeralEvent),
}

struct Inner<H, L> {
    hs_token: Secret,
    handler: Arc<H>,
    log: L,
    /// Keyed by room; ephemeral events without a room share the `None` key.
    queue: KeyedQueue<Option<OwnedRoomId>, Queued>,
}

/// The appservice HTTP server. Build it, then [`serve`](Self::serve) it or mount
/// [`router`](Self::router) yourself.
pub struct AppserviceServer<H, L> {
    inner: Arc<Inner<H, L>>,
    max_body_bytes: usize,
}

impl<H: AppserviceHandler, L: TransactionLog> AppserviceServer<H, L> {
    pub fn new(hs_token: Secret, handler: Arc<H>, log: L, options: ServerOptions) -> Self {
        let worker_handler = Arc::clone(&handler);
        let queue = KeyedQueue::with_options(
            options.queue_capacity,
            options.queue_idle_timeout,
            move |_room, item: Queued| {
                let handler = Arc::clone(&worker_handler);
                async move {
                    match item {
                        Queued::Room(event) => handler.handle_event(event).await,
                        Queued::Ephemeral(event) => handler.handle_ephemeral(event).await,
                    }
                }
            },
        );
        Self {
            inner: Arc::new(Inner {
                hs_token,
                handler,
                log,
                queue,
            }),
            max_body_bytes: options.max_body_bytes,
        }
    }

    /// All appservice routes (current and legacy paths) behind hs_token auth.
    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.inner);
        let authenticated = Router::new()
            .route(
                "/_matrix/app/v1/transactions/{txn_id}",
                put(put_transaction::<H, L>),
            )
            .route("/transactions/{txn_id}", put(put_transaction::<H, L>))
            .route("/_matrix/app/v1/users/{user_id}", get(query_user::<H, L>))
            .route("/users/{user_id}", get(query_user::<H, L>))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_alias::<H, L>))
            .route("/rooms/{alias}", get(query_alias::<H, L>))
            .route("/_matrix/app/v1/ping", post(ping))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                authenticate::<H, L>,
            ))
            .method_not_allowed_fallback(method_not_allowed);
        authenticated
            .fallback(unrecognized)
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn matrix_error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "errcode": errcode, "error": message })),
    )
        .into_response()
}

fn empty_ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

async fn unrecognized() -> Response {
    matrix_error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "Unrecognized request",
    )
}

async fn method_not_allowed() -> Response {
    matrix_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
        "Method not allowed",
    )
}

/// Extracts the homeserver's token: the `Authorization: Bearer` header, or
/// the deprecated `access_token` query parameter.
fn presented_token(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
}

async fn authenticate<H, L>(
    State(state): State<Arc<Inner<H, L>>>,
    request: Request,
    next: Next,
) -> Response {
    match presented_token(&request) {
        None => matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing access token",
        ),
        Some(token) if !state.hs_token.matches(&token) => {
            tracing::warn!(path = %request.uri().path(), "request with a wrong hs_token refused");
            matrix_error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Invalid access token")
        }
        Some(_) => next.run(request).await,
    }
}

fn body_rejection(rejection: &BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        matrix_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "Request body too large",
        )
    } else {
        matrix_error(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "Could not read request body",
        )
    }
}

/// Takes the array under `key`; absent counts as empty, anything but an array
/// is malformed.
fn event_array(body: &mut serde_json::Map<String, Value>, key: &str) -> Result<Vec<Value>, ()> {
    match body.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(events)) => Ok(events),
        Some(_) => Err(()),
    }
}

async fn put_transaction<H: AppserviceHandler, L: TransactionLog>(
    State(state): State<Arc<Inner<H, L>>>,
    Path(txn_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_rejection(&rejection),
    };
    match state.log.is_handled(&txn_id).await {
        Ok(true) => {
            tracing::debug!(txn_id, "transaction already handled; acknowledging again");
            return empty_ok();
        }
        Ok(false) => {}
        Err(error) => {
            tracing::error!(txn_id, %error, "could not look up transaction log");
            return matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Transaction log unavailable",
            );
        }
    }
    let mut body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => {
            return matrix_error(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                "Body is not a JSON object",
            );
        }
        Err(_) => {
            return matrix_error(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Body is not JSON");
        }
    };
    let Ok(events) = event_array(&mut body, "events") else {
        return matrix_error(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "`events` is not an array",
        );
    };
    // Prefer the stable key; a homeserver sending both must not get each
    // ephemeral event handled twice.
    let ephemeral_key = if body.contains_key("ephemeral") {
        "ephemeral"
    } else {
        "de.sorunome.msc2409.ephemeral"
    };
    let Ok(ephemeral) = event_array(&mut body, ephemeral_key) else {
        return matrix_error(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "`ephemeral` is not an array",
        );
    };
    tracing::debug!(
        txn_id,
        events = events.len(),
        ephemeral = ephemeral.len(),
        "transaction received"
    );

    for raw in events {
        let event_id = raw
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match RoomEvent::from_json(raw) {
            Ok(event) => {
                let room = Some(event.room_id.clone());
                state.queue.push(room, Queued::Room(event)).await;
            }
            Err(error) => {
                tracing::warn!(txn_id, event_id, %error, "skipping unparsable event");
            }
        }
    }
    for raw in ephemeral {
        match EphemeralEvent::from_json(raw) {
            Ok(event) => {
                let room = event.room_id.clone();
                state.queue.push(room, Queued::Ephemeral(event)).await;
            }
            Err(error) => {
                tracing::warn!(txn_id, %error, "skipping unparsable ephemeral event");
            }
        }
    }

    if let Err(error) = state.log.mark_handled(&txn_id).await {
        // The events are already queued; failing here would make the
        // homeserver redeliver them, so acknowledge and accept that a restart
        // right now could reprocess this transaction.
        tracing::error!(txn_id, %error, "could not record handled transaction");
    }
    empty_ok()
}

async fn query_user<H: AppserviceHandler, L: TransactionLog>(
    State(state): State<Arc<Inner<H, L>>>,
    Path(user_id): Path<String>,
) -> Response {
    let Ok(user_id) = UserId::parse(user_id.as_str()) else {
        return matrix_error(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Invalid user id",
        );
    };
    if state.handler.query_user(&user_id).await {
        empty_ok()
    } else {
        matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such user")
    }
}

async fn query_alias<H: AppserviceHandler, L: TransactionLog>(
    State(state): State<Arc<Inner<H, L>>>,
    Path(alias): Path<String>,
) -> Response {
    let Ok(alias) = RoomAliasId::parse(alias.as_str()) else {
        return matrix_error(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Invalid room alias",
        );
    };
    if state.handler.query_alias(&alias).await {
        empty_ok()
    } else {
        matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such room alias")
    }
}

async fn ping(body: Result<Bytes, BytesRejection>) -> Response {
    let transaction_id = body
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v.get("transaction_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    tracing::info!(transaction_id, "ping from the homeserver");
    empty_ok()
}
