//! The appservice HTTP server: authenticates the homeserver, stores the
//! delivered events in an [`EventInbox`] before acknowledging their
//! transaction, and feeds them into per-room ordered queues that call the
//! bridge's [`AppserviceHandler`]; an event is marked done once the handler
//! returns.
//!
//! Deduplication is on event ids, never on transaction ids: a homeserver
//! does not promise unique transaction ids across its restarts (Synapse on
//! SQLite counts from 1 again). Events stored but not done when the process
//! died are handled again at start, before any newer transaction.

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
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Secret;
use super::event::{EphemeralEvent, RoomEvent};
use crate::queue::KeyedQueue;

/// Error type of [`EventInbox`] implementations; any error converts into it
/// with `?`.
pub type InboxError = Box<dyn std::error::Error + Send + Sync>;

/// A delivered room event as the inbox keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredEvent {
    pub event_id: String,
    pub room_id: String,
    /// The event's JSON as received.
    pub json: String,
}

/// Durable record of delivered events: what is stored here before the
/// transaction is acknowledged survives a crash.
pub trait EventInbox: Send + Sync + 'static {
    /// Stores `events` (in order); returns the ids of those not done: new
    /// ones, and ones an earlier attempt stored but that were never marked
    /// done (that attempt may have failed after storing). The rest are
    /// redeliveries of finished events.
    fn record(
        &self,
        events: &[DeliveredEvent],
    ) -> impl Future<Output = Result<Vec<String>, InboxError>> + Send;

    /// The handler is finished with these events.
    fn done(&self, event_ids: &[String]) -> impl Future<Output = Result<(), InboxError>> + Send;

    /// Events stored and not done, in delivery order.
    fn pending(&self) -> impl Future<Output = Result<Vec<DeliveredEvent>, InboxError>> + Send;
}

impl<T: EventInbox> EventInbox for Arc<T> {
    fn record(
        &self,
        events: &[DeliveredEvent],
    ) -> impl Future<Output = Result<Vec<String>, InboxError>> + Send {
        T::record(self, events)
    }

    fn done(&self, event_ids: &[String]) -> impl Future<Output = Result<(), InboxError>> + Send {
        T::done(self, event_ids)
    }

    fn pending(&self) -> impl Future<Output = Result<Vec<DeliveredEvent>, InboxError>> + Send {
        T::pending(self)
    }
}

/// An [`EventInbox`] that forgets on restart; for tests and tools.
#[derive(Debug, Default)]
pub struct InMemoryInbox {
    events: Mutex<InMemoryEvents>,
}

#[derive(Debug, Default)]
struct InMemoryEvents {
    seen: HashSet<String>,
    pending: Vec<DeliveredEvent>,
}

impl InMemoryInbox {
    /// An inbox holding `pending` as if a previous process had stored them.
    pub fn with_pending(pending: Vec<DeliveredEvent>) -> Self {
        let seen = pending.iter().map(|e| e.event_id.clone()).collect();
        Self {
            events: Mutex::new(InMemoryEvents { seen, pending }),
        }
    }

    /// Ids of the events stored and not done.
    pub fn pending_ids(&self) -> Vec<String> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.pending.iter().map(|e| e.event_id.clone()).collect()
    }
}

impl EventInbox for InMemoryInbox {
    async fn record(&self, events: &[DeliveredEvent]) -> Result<Vec<String>, InboxError> {
        let mut stored = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fresh = Vec::new();
        for event in events {
            if stored.seen.insert(event.event_id.clone()) {
                stored.pending.push(event.clone());
                fresh.push(event.event_id.clone());
            } else if stored.pending.iter().any(|e| e.event_id == event.event_id) {
                fresh.push(event.event_id.clone());
            }
        }
        Ok(fresh)
    }

    async fn done(&self, event_ids: &[String]) -> Result<(), InboxError> {
        let mut stored = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        stored.pending.retain(|e| !event_ids.contains(&e.event_id));
        Ok(())
    }

    async fn pending(&self) -> Result<Vec<DeliveredEvent>, InboxError> {
        let stored = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(stored.pending.clone())
    }
}

/// How long a transaction waits for the inbox (a database restarting)
/// before it is refused with 500 for the homeserver to retry later.
const RECORD_PATIENCE: Duration = Duration::from_secs(15);
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(200);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);
/// Marking done is retried this long; an event left pending is handled
/// again after a restart, which the bridge's deduplication absorbs.
const DONE_PATIENCE: Duration = Duration::from_secs(60);
/// Done marks written in one statement at most.
const DONE_BACKLOG: usize = 1024;
/// How long done marks gather before they are written: the window in which a
/// crash has an event handled again grows by this much.
const DONE_LINGER: Duration = Duration::from_millis(20);

/// Backoff of the inbox while the database is unavailable, for at most
/// `patience`; every error of the inbox is worth another try.
async fn with_patience<T, F, Fut>(what: &str, patience: Duration, op: F) -> Result<T, InboxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, InboxError>>,
{
    let backoff = crate::retry::Backoff {
        first: RECORD_RETRY_FIRST,
        max: RECORD_RETRY_MAX,
        patience,
    };
    crate::retry::retry(what, backoff, |_| true, op).await
}

/// What the bridge does with what the homeserver pushes.
///
/// `handle_event` and `handle_ephemeral` run on per-room queue workers: calls
/// for one room never overlap and come in delivery order; rooms run
/// concurrently. Errors are the handler's to log: the transaction is already
/// acknowledged. `handle_event` returns once the event is dealt with for
/// good: the inbox then marks it done, and an event whose handling a crash
/// cut short is handled again after the restart.
pub trait AppserviceHandler: Send + Sync + 'static {
    /// Whether an event is worth storing and handling at all (the bridge's
    /// own echoes are not); checked before the inbox sees it.
    fn wants_event(&self, event: &RoomEvent) -> bool {
        let _ = event;
        true
    }

    /// Handles a room event. The event stays pending in the inbox (and is
    /// handed over again after a restart) until `handled` is dropped; a
    /// handler may keep it past its return to finish the work in the
    /// background, and the room's next event comes meanwhile.
    fn handle_event(
        &self,
        event: RoomEvent,
        delivery: Delivery,
        handled: Handled,
    ) -> impl Future<Output = ()> + Send;

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

/// Marks its event done in the inbox when dropped (see
/// [`AppserviceHandler::handle_event`]).
#[derive(Debug)]
pub struct Handled {
    event_id: String,
    writer: tokio::sync::mpsc::UnboundedSender<String>,
    in_hand: InHand,
}

impl Handled {
    /// Leaves the event pending: it is handed over again after a restart
    /// (or when the homeserver delivers it again). For an event the handler
    /// could not deal with (its database was out for longer than it waits),
    /// so that it is not lost.
    pub fn keep_pending(mut self) {
        self.in_hand.release(std::slice::from_ref(&self.event_id));
        self.event_id.clear();
    }
}

/// Events queued or being handled by this process and not yet marked done:
/// a redelivery of one of them is not queued again, while one stored by a
/// failed attempt and never queued is.
#[derive(Clone, Debug, Default)]
struct InHand(Arc<Mutex<HashSet<String>>>);

impl InHand {
    /// Takes the event in hand; false when it already is.
    fn take(&self, event_id: &str) -> bool {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ids.insert(event_id.to_owned())
    }

    fn release(&self, event_ids: &[String]) {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for id in event_ids {
            ids.remove(id);
        }
    }
}

impl Drop for Handled {
    fn drop(&mut self) {
        if self.event_id.is_empty() {
            return;
        }
        // Closed only when the runtime shuts down: the event is then
        // handled again after the restart.
        let _ = self.writer.send(std::mem::take(&mut self.event_id));
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

/// How an event reached the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// First seen in a transaction: nothing was done with it before.
    New,
    /// Left pending by a previous process, which may have done part of it.
    Resumed,
}

enum Queued {
    Room(RoomEvent, Delivery),
    Ephemeral(EphemeralEvent),
}

/// Writes done marks in the background, as many per statement as piled up
/// while the previous one ran and for [`DONE_LINGER`] after. A mark lost to a crash only means the event
/// is handled again after the restart, which the handler's deduplication
/// absorbs; so handling never waits for its mark, and a busy bridge pays one
/// statement for many events.
fn spawn_done_writer<L: EventInbox>(
    inbox: Arc<L>,
    in_hand: InHand,
) -> tokio::sync::mpsc::UnboundedSender<String> {
    // Unbounded: a mark is sent from a drop, which cannot wait; the events
    // in flight (and so the marks) are bounded by the queues.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, DONE_BACKLOG).await > 0 {
            // A moment's wait gathers the marks of a busy room too.
            tokio::time::sleep(DONE_LINGER).await;
            while batch.len() < DONE_BACKLOG
                && let Ok(event_id) = rx.try_recv()
            {
                batch.push(event_id);
            }
            let done = with_patience("done", DONE_PATIENCE, || inbox.done(&batch)).await;
            if let Err(error) = done {
                tracing::error!(events = batch.len(), %error, "could not mark events done; they will be handled again after a restart");
            }
            // Only now: until the mark is written, a redelivery finds the
            // event pending and must still see it in hand.
            in_hand.release(&batch);
            batch.clear();
        }
    });
    tx
}

struct Inner<H, L> {
    hs_token: Secret,
    handler: Arc<H>,
    /// Keyed by room; ephemeral events without a room share the `None` key.
    queue: KeyedQueue<Option<OwnedRoomId>, Queued>,
    inbox: Arc<L>,
    /// True once the events left pending by a previous process are queued;
    /// transactions wait for it so that nothing newer overtakes them.
    resumed: watch::Receiver<bool>,
    in_hand: InHand,
}

/// The appservice HTTP server. Build it, then [`serve`](Self::serve) it or mount
/// [`router`](Self::router) yourself.
pub struct AppserviceServer<H, L> {
    inner: Arc<Inner<H, L>>,
    max_body_bytes: usize,
}

impl<H: AppserviceHandler, L: EventInbox> AppserviceServer<H, L> {
    /// Builds the server and, in the background, queues the events that
    /// `inbox` holds as pending (a previous process did not finish them).
    /// Must be called within a tokio runtime.
    pub fn new(hs_token: Secret, handler: Arc<H>, inbox: L, options: ServerOptions) -> Self {
        let worker_handler = Arc::clone(&handler);
        let inbox = Arc::new(inbox);
        let in_hand = InHand::default();
        let done_writer = spawn_done_writer(Arc::clone(&inbox), in_hand.clone());
        let worker_in_hand = in_hand.clone();
        let queue = KeyedQueue::with_options(
            options.queue_capacity,
            options.queue_idle_timeout,
            move |_room, item: Queued| {
                let handler = Arc::clone(&worker_handler);
                let done_writer = done_writer.clone();
                let in_hand = worker_in_hand.clone();
                async move {
                    match item {
                        Queued::Room(event, delivery) => {
                            let handled = Handled {
                                event_id: event.event_id.to_string(),
                                writer: done_writer,
                                in_hand,
                            };
                            handler.handle_event(event, delivery, handled).await;
                        }
                        Queued::Ephemeral(event) => handler.handle_ephemeral(event).await,
                    }
                }
            },
        );
        let (resumed_tx, resumed) = watch::channel(false);
        tokio::spawn(resume_pending(
            Arc::clone(&inbox),
            queue.clone(),
            resumed_tx,
            in_hand.clone(),
        ));
        Self {
            inner: Arc::new(Inner {
                hs_token,
                handler,
                queue,
                inbox,
                resumed,
                in_hand,
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

/// A transaction as the homeserver sends it, its events still unparsed.
#[derive(serde::Deserialize)]
struct TransactionBody<'a> {
    #[serde(borrow, default)]
    events: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    ephemeral: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default, rename = "de.sorunome.msc2409.ephemeral")]
    ephemeral_unstable: Option<Vec<&'a RawValue>>,
}

fn parse_room_event(raw: &RawValue) -> Result<RoomEvent, String> {
    let value = serde_json::from_str::<Value>(raw.get()).map_err(|e| e.to_string())?;
    RoomEvent::from_json(value).map_err(|e| e.to_string())
}

/// The `event_id` of an event that could not be parsed, for the log; the
/// rest of it is skipped without building it (serde_json skips any depth).
fn event_id_of(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: Option<String>,
    }
    serde_json::from_str::<Id>(raw.get())
        .ok()
        .and_then(|id| id.event_id)
}

async fn put_transaction<H: AppserviceHandler, L: EventInbox>(
    State(state): State<Arc<Inner<H, L>>>,
    Path(txn_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_rejection(&rejection),
    };
    // The body is read without building its events: each is parsed on its
    // own below, so one that cannot be (nested too deep, malformed) is
    // skipped instead of refusing the transaction, which the homeserver
    // would retry forever with nothing behind it delivered.
    let body = match serde_json::from_slice::<TransactionBody<'_>>(&body) {
        Ok(body) => body,
        Err(error) if error.is_syntax() || error.is_eof() => {
            tracing::warn!(txn_id, %error, "transaction body is not JSON; refused");
            return matrix_error(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Body is not JSON");
        }
        Err(error) => {
            tracing::warn!(txn_id, %error, "transaction body has the wrong shape; refused");
            return matrix_error(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                "`events` and `ephemeral` must be arrays",
            );
        }
    };
    let events = body.events.unwrap_or_default();
    // Prefer the stable key; a homeserver sending both must not get each
    // ephemeral event handled twice.
    let ephemeral = body
        .ephemeral
        .or(body.ephemeral_unstable)
        .unwrap_or_default();
    tracing::debug!(
        txn_id,
        events = events.len(),
        ephemeral = ephemeral.len(),
        "transaction received"
    );

    // Newer events must not overtake those a previous process left pending.
    let mut resumed = state.resumed.clone();
    if resumed.wait_for(|done| *done).await.is_err() {
        return matrix_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "Resuming pending events failed",
        );
    }

    let mut wanted: Vec<(RoomEvent, DeliveredEvent)> = Vec::with_capacity(events.len());
    for raw in events {
        match parse_room_event(raw) {
            Ok(event) if state.handler.wants_event(&event) => {
                let delivered = DeliveredEvent {
                    event_id: event.event_id.to_string(),
                    room_id: event.room_id.to_string(),
                    json: raw.get().to_owned(),
                };
                wanted.push((event, delivered));
            }
            Ok(_) => {}
            Err(error) => {
                let event_id = event_id_of(raw);
                tracing::warn!(txn_id, event_id, %error, "skipping unparsable event");
            }
        }
    }
    // Stored and queued by a task of its own, which runs to its end even
    // when the homeserver drops the request meanwhile (it does when it
    // restarts, or gives up waiting on a full queue): events stored but
    // never queued would be taken for redeliveries when they come again,
    // and wait for the bridge's next start.
    let inner = Arc::clone(&state);
    let txn = txn_id.clone();
    match tokio::spawn(async move { store_and_queue(&inner, &txn, wanted).await }).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            // Not acknowledged: the homeserver delivers it again later.
            tracing::error!(txn_id, %error, "could not store the transaction's events");
            return matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Event store unavailable",
            );
        }
        Err(error) => {
            tracing::error!(txn_id, %error, "storing the transaction's events failed");
            return matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Event store failed",
            );
        }
    }
    for raw in ephemeral {
        let event = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|value| EphemeralEvent::from_json(value).map_err(|e| e.to_string()));
        match event {
            Ok(event) => {
                let room = event.room_id.clone();
                state.queue.push(room, Queued::Ephemeral(event)).await;
            }
            Err(error) => {
                tracing::warn!(txn_id, %error, "skipping unparsable ephemeral event");
            }
        }
    }
    empty_ok()
}

/// Stores a transaction's events and queues those not done and not in
/// hand already (the rest are redeliveries).
async fn store_and_queue<H: AppserviceHandler, L: EventInbox>(
    state: &Inner<H, L>,
    txn_id: &str,
    wanted: Vec<(RoomEvent, DeliveredEvent)>,
) -> Result<(), InboxError> {
    let delivered: Vec<DeliveredEvent> = wanted.iter().map(|(_, d)| d.clone()).collect();
    let fresh = with_patience("record", RECORD_PATIENCE, || state.inbox.record(&delivered))
        .await?
        .into_iter()
        .collect::<HashSet<String>>();
    for (event, _) in wanted {
        if fresh.contains(event.event_id.as_str()) && state.in_hand.take(event.event_id.as_str()) {
            tracing::debug!(txn_id, event_id = %event.event_id, "event stored");
            let room = Some(event.room_id.clone());
            state
                .queue
                .push(room, Queued::Room(event, Delivery::New))
                .await;
        } else {
            tracing::debug!(txn_id, event_id = %event.event_id, "event delivered before; skipped");
        }
    }
    Ok(())
}

/// Queues the events a previous process stored but did not finish, in
/// delivery order, then lets transactions through.
async fn resume_pending<L: EventInbox>(
    inbox: Arc<L>,
    queue: KeyedQueue<Option<OwnedRoomId>, Queued>,
    resumed: watch::Sender<bool>,
    in_hand: InHand,
) {
    let pending = loop {
        match inbox.pending().await {
            Ok(pending) => break pending,
            Err(error) => {
                tracing::warn!(%error, "could not read pending events; retrying");
                tokio::time::sleep(RECORD_RETRY_MAX).await;
            }
        }
    };
    if !pending.is_empty() {
        tracing::info!(
            events = pending.len(),
            "handling events left pending by the last run"
        );
    }
    for delivered in pending {
        let event = serde_json::from_str::<Value>(&delivered.json)
            .map_err(|e| e.to_string())
            .and_then(|raw| RoomEvent::from_json(raw).map_err(|e| e.to_string()));
        match event {
            Ok(event) => {
                tracing::debug!(event_id = %event.event_id, "event resumed");
                in_hand.take(event.event_id.as_str());
                let room = Some(event.room_id.clone());
                queue
                    .push(room, Queued::Room(event, Delivery::Resumed))
                    .await;
            }
            Err(error) => {
                tracing::warn!(event_id = delivered.event_id, %error, "pending event unreadable; dropped");
                if let Err(error) = inbox.done(std::slice::from_ref(&delivered.event_id)).await {
                    tracing::warn!(event_id = delivered.event_id, %error, "could not mark it done");
                }
            }
        }
    }
    resumed.send_replace(true);
}

async fn query_user<H: AppserviceHandler, L: EventInbox>(
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

async fn query_alias<H: AppserviceHandler, L: EventInbox>(
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
