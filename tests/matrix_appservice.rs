//! HTTP-level tests of the appservice layer: the server is driven with reqwest
//! as the homeserver would, and the client is pointed at a tiny scripted fake
//! homeserver to check paths, identity assertion and retry behaviour.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use maxbridge::matrix::{
    AppserviceConfig, AppserviceHandler, AppserviceServer, DeliveredEvent, Delivery,
    EphemeralEvent, EventInbox, Handled, InMemoryInbox, MatrixClient, RetryPolicy, RoomEvent,
    Secret, ServerOptions, UserNamespace,
};
use ruma::{OwnedServerName, RoomAliasId, UserId, room_id, user_id};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const HS_TOKEN: &str = "hs-token-for-tests";
const AS_TOKEN: &str = "as-token-for-tests";
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Received {
    Event(RoomEvent),
    Ephemeral(EphemeralEvent),
}

struct Recorder {
    tx: mpsc::UnboundedSender<Received>,
}

impl AppserviceHandler for Recorder {
    async fn handle_event(&self, event: RoomEvent, _delivery: Delivery, _handled: Handled) {
        let _ = self.tx.send(Received::Event(event));
    }

    async fn handle_ephemeral(&self, event: EphemeralEvent) {
        let _ = self.tx.send(Received::Ephemeral(event));
    }

    async fn query_user(&self, user_id: &UserId) -> bool {
        user_id.localpart().starts_with("ghost_")
    }

    async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        alias.alias().starts_with("max_")
    }
}

struct TestServer {
    base: String,
    received: mpsc::UnboundedReceiver<Received>,
    http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_server_with<L: EventInbox>(log: L, options: ServerOptions) -> TestServer {
    let (tx, received) = mpsc::unbounded_channel();
    let server = AppserviceServer::new(
        Secret::new(HS_TOKEN),
        Arc::new(Recorder { tx }),
        log,
        options,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stop.await;
    }));
    TestServer {
        base: format!("http://{addr}"),
        received,
        http: reqwest::Client::new(),
        _shutdown: shutdown,
    }
}

async fn start_server() -> TestServer {
    start_server_with(InMemoryInbox::default(), ServerOptions::default()).await
}

impl TestServer {
    async fn put_txn(&self, txn: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}/_matrix/app/v1/transactions/{txn}", self.base))
            .bearer_auth(HS_TOKEN)
            .json(body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(DEADLINE, self.received.recv())
            .await
            .expect("handler called before the deadline")
            .expect("server alive")
    }

    async fn next_event(&mut self) -> RoomEvent {
        match self.next().await {
            Received::Event(event) => event,
            Received::Ephemeral(event) => panic!("expected a room event, got {event:?}"),
        }
    }
}

async fn split(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn event(room: &str, id: &str, body: &str) -> Value {
    json!({
        "room_id": room,
        "event_id": id,
        "sender": "@alice:example.org",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": body},
        "origin_server_ts": 1_700_000_000_000u64,
    })
}

#[tokio::test]
async fn missing_token_is_401_and_wrong_token_is_403() {
    let mut server = start_server().await;
    let url = format!("{}/_matrix/app/v1/transactions/1", server.base);
    let body = json!({"events": [event("!a", "$refused", "x")]});

    let (status, error) = split(
        server
            .http
            .put(&url)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["errcode"], "M_UNAUTHORIZED");

    let (status, error) = split(
        server
            .http
            .put(&url)
            .bearer_auth("wrong")
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["errcode"], "M_FORBIDDEN");

    let (status, error) = split(
        server
            .http
            .put(format!("{url}?access_token=wrong"))
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["errcode"], "M_FORBIDDEN");

    // The refused transaction id is still free and nothing was handled: the
    // first event the handler sees is the accepted one.
    let (status, _) = server
        .put_txn("1", &json!({"events": [event("!a", "$accepted", "y")]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$accepted");
}

#[tokio::test]
async fn events_reach_the_handler_in_per_room_order() {
    let mut server = start_server().await;
    let mut events = Vec::new();
    for n in 0..30 {
        let room = if n % 2 == 0 {
            "!even"
        } else {
            "!odd:example.org"
        };
        events.push(event(room, &format!("${n}"), &n.to_string()));
    }
    let (status, body) = server.put_txn("t1", &json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({}));

    let mut per_room: HashMap<String, Vec<u32>> = HashMap::new();
    for _ in 0..30 {
        let event = server.next_event().await;
        let n: u32 = event.content["body"]
            .as_str()
            .and_then(|b| b.parse().ok())
            .expect("numbered body");
        per_room
            .entry(event.room_id.to_string())
            .or_default()
            .push(n);
    }
    let evens: Vec<u32> = (0..30).filter(|n| n % 2 == 0).collect();
    let odds: Vec<u32> = (0..30).filter(|n| n % 2 == 1).collect();
    assert_eq!(per_room["!even"], evens);
    assert_eq!(per_room["!odd:example.org"], odds);
}

#[tokio::test]
async fn a_repeated_transaction_is_acknowledged_but_not_reprocessed() {
    let mut server = start_server().await;
    let txn = json!({"events": [event("!r", "$first", "1")]});
    assert_eq!(server.put_txn("7", &txn).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$first");

    let (status, body) = server.put_txn("7", &txn).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({}));

    // Same room, so had the repeat been processed it would arrive first.
    let next = json!({"events": [event("!r", "$second", "2")]});
    assert_eq!(server.put_txn("8", &next).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$second");
}

#[tokio::test]
async fn an_event_handled_before_a_restart_is_not_reprocessed() {
    let log = Arc::new(InMemoryInbox::default());
    let txn = json!({"events": [event("!r", "$before", "1")]});
    {
        let mut first = start_server_with(Arc::clone(&log), ServerOptions::default()).await;
        assert_eq!(first.put_txn("42", &txn).await.0, StatusCode::OK);
        assert_eq!(first.next_event().await.event_id.as_str(), "$before");
        wait_until_done(&log).await;
    }
    let mut second = start_server_with(Arc::clone(&log), ServerOptions::default()).await;
    // Redelivered under another transaction id: still recognised.
    assert_eq!(second.put_txn("900", &txn).await.0, StatusCode::OK);
    let next = json!({"events": [event("!r", "$after", "2")]});
    assert_eq!(second.put_txn("43", &next).await.0, StatusCode::OK);
    assert_eq!(second.next_event().await.event_id.as_str(), "$after");
}

/// What an inbox's first `record` does after storing the events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterStoring {
    /// Holds its answer until the test lets it go, and tells when it was
    /// dropped unfinished.
    Hold,
    /// Fails, as a database connection lost after the commit does.
    Fail,
}

/// An inbox whose first `record` stores the events and then misbehaves as
/// `fault` says; later ones behave.
struct FaultyInbox {
    inner: InMemoryInbox,
    fault: AfterStoring,
    armed: std::sync::atomic::AtomicBool,
    stored: tokio::sync::Notify,
    release: tokio::sync::Notify,
    dropped: tokio::sync::Notify,
}

impl FaultyInbox {
    fn new(fault: AfterStoring) -> FaultyInbox {
        FaultyInbox {
            inner: InMemoryInbox::default(),
            fault,
            armed: std::sync::atomic::AtomicBool::new(true),
            stored: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
            dropped: tokio::sync::Notify::new(),
        }
    }
}

/// Notifies when dropped before it was disarmed.
struct DropAlarm<'a>(Option<&'a tokio::sync::Notify>);

impl Drop for DropAlarm<'_> {
    fn drop(&mut self) {
        if let Some(alarm) = self.0 {
            alarm.notify_one();
        }
    }
}

impl EventInbox for FaultyInbox {
    async fn record(
        &self,
        events: &[DeliveredEvent],
    ) -> Result<Vec<String>, maxbridge::matrix::InboxError> {
        let fresh = self.inner.record(events).await?;
        if !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(fresh);
        }
        if self.fault == AfterStoring::Fail {
            return Err("connection lost after commit".into());
        }
        let mut alarm = DropAlarm(Some(&self.dropped));
        self.stored.notify_one();
        self.release.notified().await;
        alarm.0 = None;
        Ok(fresh)
    }

    async fn done(&self, event_ids: &[String]) -> Result<(), maxbridge::matrix::InboxError> {
        self.inner.done(event_ids).await
    }

    async fn pending(&self) -> Result<Vec<DeliveredEvent>, maxbridge::matrix::InboxError> {
        self.inner.pending().await
    }
}

/// The homeserver drops its request (it restarts) after the events were
/// stored but before the answer: they must still be handled, once, and
/// not be taken for redeliveries when the transaction comes again.
#[tokio::test]
async fn events_stored_when_the_homeserver_hangs_up_are_still_handled_once() {
    let inbox = Arc::new(FaultyInbox::new(AfterStoring::Hold));
    let mut server = start_server_with(Arc::clone(&inbox), ServerOptions::default()).await;
    let txn = json!({"events": [event("!r", "$cut", "1")]});
    let request = server
        .http
        .put(format!("{}/_matrix/app/v1/transactions/5", server.base))
        .bearer_auth(HS_TOKEN)
        .json(&txn)
        .send();
    let hung_up = tokio::spawn(request);
    tokio::time::timeout(DEADLINE, inbox.stored.notified())
        .await
        .expect("the events are stored");
    hung_up.abort();
    // A server that drops its work with the request drops the held record
    // now; one that does not keeps holding it.
    let _ = tokio::time::timeout(Duration::from_secs(2), inbox.dropped.notified()).await;
    inbox.release.notify_one();
    assert_eq!(server.next_event().await.event_id.as_str(), "$cut");

    // Delivered again under a new id (Synapse after its restart): known,
    // acknowledged, not handled twice.
    let (status, _) = server.put_txn("6", &txn).await;
    assert_eq!(status, StatusCode::OK);
    // Same room: had the repeat been handled, it would come first.
    let next = json!({"events": [event("!r", "$next", "2")]});
    assert_eq!(server.put_txn("7", &next).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$next");
}

/// Events an attempt stored before failing are handled when the
/// transaction comes again, once, though the inbox knows them already.
#[tokio::test]
async fn events_stored_by_a_failed_attempt_are_handled_once_on_redelivery() {
    let inbox = FaultyInbox::new(AfterStoring::Fail);
    let mut server = start_server_with(inbox, ServerOptions::default()).await;
    let txn = json!({"events": [event("!r", "$stored", "1")]});
    // The server retries the inbox within the request: the retry finds the
    // event stored and not done, and queues it.
    assert_eq!(server.put_txn("1", &txn).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$stored");
    // Delivered again while in hand or after it is done: not again.
    assert_eq!(server.put_txn("1", &txn).await.0, StatusCode::OK);
    let next = json!({"events": [event("!r", "$next", "2")]});
    assert_eq!(server.put_txn("2", &next).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$next");
}

/// Synapse on SQLite counts transaction ids from 1 again after a restart:
/// a known id with new events is new work.
#[tokio::test]
async fn a_reused_transaction_id_with_new_events_is_processed() {
    let mut server = start_server().await;
    let first = json!({"events": [event("!r", "$one", "1")]});
    assert_eq!(server.put_txn("1", &first).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$one");
    let again = json!({"events": [event("!r", "$two", "2")]});
    assert_eq!(server.put_txn("1", &again).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$two");
}

/// What a crashed process stored but did not finish is handled at start,
/// before anything delivered later in the same room.
#[tokio::test]
async fn pending_events_are_handled_first_after_a_restart() {
    let pending = ["$p1", "$p2"]
        .iter()
        .map(|id| DeliveredEvent {
            event_id: (*id).to_owned(),
            room_id: "!r".to_owned(),
            json: event("!r", id, "old").to_string(),
        })
        .collect();
    let log = Arc::new(InMemoryInbox::with_pending(pending));
    let mut server = start_server_with(Arc::clone(&log), ServerOptions::default()).await;
    let next = json!({"events": [event("!r", "$new", "new"), event("!r", "$p1", "old")]});
    assert_eq!(server.put_txn("5", &next).await.0, StatusCode::OK);
    let order: Vec<String> = [
        server.next_event().await,
        server.next_event().await,
        server.next_event().await,
    ]
    .iter()
    .map(|e| e.event_id.to_string())
    .collect();
    assert_eq!(order, ["$p1", "$p2", "$new"]);
    wait_until_done(&log).await;
}

/// Waits until the inbox has no event left to handle.
async fn wait_until_done(log: &InMemoryInbox) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !log.pending_ids().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events still pending: {:?}",
            log.pending_ids()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_malformed_event_is_skipped_and_the_others_processed() {
    let mut server = start_server().await;
    let body = json!({"events": [
        event("!r", "$good1", "1"),
        {"type": "m.room.message", "content": {"body": "no room, no id"}},
        "not even an object",
        event("!r", "$good2", "2"),
    ]});
    let (status, _) = server.put_txn("m1", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$good1");
    assert_eq!(server.next_event().await.event_id.as_str(), "$good2");
}

/// An event nested deeper than any JSON parser's limit (Synapse accepts
/// such content from any local user) is skipped, not the transaction: a
/// refused transaction would be retried forever and block every later one.
#[tokio::test]
async fn a_deeply_nested_event_is_skipped_and_the_transaction_acknowledged() {
    let mut server = start_server().await;
    for depth in [125, 5000] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep = format!(
            r#"{{"type":"m.room.member","room_id":"!r","event_id":"$deep{depth}","sender":"@u:hs","state_key":"@bot:hs","content":{{"membership":"invite","x":{nested}}}}}"#
        );
        let good =
            serde_json::to_string(&event("!r", &format!("$after{depth}"), "1")).expect("json");
        let body = format!(r#"{{"events":[{deep},{good}],"ephemeral":[{nested}]}}"#);
        let response = server
            .http
            .put(format!(
                "{}/_matrix/app/v1/transactions/deep{depth}",
                server.base
            ))
            .bearer_auth(HS_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "depth {depth}");
        assert_eq!(
            server.next_event().await.event_id.as_str(),
            format!("$after{depth}")
        );
    }
}

#[tokio::test]
async fn ephemeral_events_reach_the_handler() {
    let mut server = start_server().await;
    let body = json!({
        "events": [event("!r", "$msg", "1")],
        "de.sorunome.msc2409.ephemeral": [
            {"type": "m.typing", "room_id": "!r", "content": {"user_ids": ["@alice:example.org"]}}
        ],
    });
    assert_eq!(server.put_txn("e1", &body).await.0, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$msg");
    match server.next().await {
        Received::Ephemeral(event) => {
            assert_eq!(event.event_type, "m.typing");
            assert_eq!(event.room_id.as_ref().map(|r| r.as_str()), Some("!r"));
        }
        other => panic!("expected the typing event, got {other:?}"),
    }

    let stable = json!({"events": [], "ephemeral": [
        {"type": "m.receipt", "room_id": "!r", "content": {}}
    ]});
    assert_eq!(server.put_txn("e2", &stable).await.0, StatusCode::OK);
    match server.next().await {
        Received::Ephemeral(event) => assert_eq!(event.event_type, "m.receipt"),
        other => panic!("expected the receipt, got {other:?}"),
    }
}

#[tokio::test]
async fn legacy_paths_and_query_token_are_accepted() {
    let mut server = start_server().await;
    let response = server
        .http
        .put(format!(
            "{}/transactions/legacy1?access_token={HS_TOKEN}",
            server.base
        ))
        .json(&json!({"events": [event("!r", "$legacy", "1")]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$legacy");

    for path in [
        "/users/@ghost_1:example.org",
        "/rooms/%23max_chat:example.org",
    ] {
        let response = server
            .http
            .get(format!("{}{path}", server.base))
            .bearer_auth(HS_TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn user_and_alias_queries_ask_the_handler() {
    let server = start_server().await;
    let get = |path: &str| {
        server
            .http
            .get(format!("{}/_matrix/app/v1{path}", server.base))
            .bearer_auth(HS_TOKEN)
            .send()
    };
    let (status, body) = split(get("/users/@ghost_7:example.org").await.expect("send")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = split(get("/users/@alice:example.org").await.expect("send")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let (status, _) = split(get("/rooms/%23max_1:example.org").await.expect("send")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = split(get("/rooms/%23other:example.org").await.expect("send")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    let unauthenticated = server
        .http
        .get(format!(
            "{}/_matrix/app/v1/users/@ghost_7:example.org",
            server.base
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ping_and_unknown_endpoints() {
    let server = start_server().await;
    let (status, body) = split(
        server
            .http
            .post(format!("{}/_matrix/app/v1/ping", server.base))
            .bearer_auth(HS_TOKEN)
            .json(&json!({"transaction_id": "ping-1"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    let (status, body) = split(
        server
            .http
            .get(format!(
                "{}/_matrix/app/v1/thirdparty/protocol/x",
                server.base
            ))
            .bearer_auth(HS_TOKEN)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");

    let (status, body) = split(
        server
            .http
            .get(format!("{}/_matrix/app/v1/ping", server.base))
            .bearer_auth(HS_TOKEN)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let options = ServerOptions {
        max_body_bytes: 4096,
        ..ServerOptions::default()
    };
    let mut server = start_server_with(InMemoryInbox::default(), options).await;
    let put_raw = |txn: &str, body: Vec<u8>| {
        server
            .http
            .put(format!("{}/_matrix/app/v1/transactions/{txn}", server.base))
            .bearer_auth(HS_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = split(put_raw("b1", b"{not json".to_vec()).await.expect("send")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_NOT_JSON");

    let (status, body) = split(
        put_raw("b2", br#"{"events": 5}"#.to_vec())
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_BAD_JSON");

    let huge = serde_json::to_vec(&json!({"events": [event("!r", "$big", &"x".repeat(8192))]}))
        .expect("serialize");
    let (status, body) = split(put_raw("b3", huge).await.expect("send")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errcode"], "M_TOO_LARGE");

    // None of the refused transactions was marked handled: a retry of b2
    // with a valid body is processed.
    let (status, _) = server
        .put_txn("b2", &json!({"events": [event("!r", "$fixed", "1")]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.next_event().await.event_id.as_str(), "$fixed");
}

// ---------------------------------------------------------------------------
// Client against a scripted fake homeserver.

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: HashMap<String, String>,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Script {
    responses: Mutex<VecDeque<(StatusCode, Value)>>,
    seen: Mutex<Vec<Seen>>,
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct FakeHomeserver {
    script: Arc<Script>,
    client: MatrixClient,
}

impl FakeHomeserver {
    async fn start(responses: Vec<(StatusCode, Value)>) -> Self {
        let script = Arc::new(Script {
            responses: Mutex::new(responses.into()),
            seen: Mutex::default(),
        });
        let handler_script = Arc::clone(&script);
        let app = Router::new().fallback(move |request: Request| {
            let script = Arc::clone(&handler_script);
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let query =
                    url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                        .into_owned()
                        .collect();
                script.seen.lock().expect("lock").push(Seen {
                    method: parts.method.to_string(),
                    path: percent_decode(parts.uri.path()),
                    query,
                    authorization: parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                });
                let next = script.responses.lock().expect("lock").pop_front();
                let (status, body) = next.unwrap_or((StatusCode::OK, json!({})));
                (status, axum::Json(body)).into_response()
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let server_name: OwnedServerName = "example.org".try_into().expect("server name");
        let config = AppserviceConfig {
            homeserver_url: format!("http://{addr}").parse().expect("url"),
            server_name: server_name.clone(),
            as_token: Secret::new(AS_TOKEN),
            hs_token: Secret::new(HS_TOKEN),
            bot_localpart: "maxbot".into(),
            appservice_id: "maxbridge".into(),
            user_namespace: UserNamespace::localpart_prefix("max_", server_name),
        };
        let client = MatrixClient::new(&config)
            .expect("client")
            .with_retry_policy(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                max_total: Duration::from_secs(10),
            });
        Self { script, client }
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().expect("lock").clone()
    }
}

#[tokio::test]
async fn client_retries_429_and_500_then_succeeds() {
    let fake = FakeHomeserver::start(vec![
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 20}),
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errcode": "M_UNKNOWN", "error": "oops"}),
        ),
        (StatusCode::OK, json!({"event_id": "$sent"})),
    ])
    .await;
    let ghost = user_id!("@max_123:example.org");
    let event_id = fake
        .client
        .send_message(
            ghost,
            room_id!("!OcXK_5de"),
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "hello"}),
            "txn-1",
            Some(1_700_000_000_123),
        )
        .await
        .expect("sent after retries");
    assert_eq!(event_id.as_str(), "$sent");

    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "one first attempt and two retries");
    for request in &seen {
        assert_eq!(request.method, "PUT");
        assert_eq!(
            request.path,
            "/_matrix/client/v3/rooms/!OcXK_5de/send/m.room.message/txn-1"
        );
        assert_eq!(
            request.query.get("user_id").map(String::as_str),
            Some(ghost.as_str())
        );
        assert_eq!(
            request.query.get("ts").map(String::as_str),
            Some("1700000000123")
        );
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {AS_TOKEN}").as_str())
        );
        assert_eq!(request.body["body"], "hello");
    }
}

#[tokio::test]
async fn client_gives_up_after_bounded_retries_naming_the_request() {
    let failures = (0..5)
        .map(|_| {
            (
                StatusCode::BAD_GATEWAY,
                json!({"errcode": "M_UNKNOWN", "error": "down"}),
            )
        })
        .collect();
    let fake = FakeHomeserver::start(failures).await;
    let bot = fake.client.bot_user_id().to_owned();
    let error = fake
        .client
        .join(&bot, room_id!("!room"))
        .await
        .expect_err("homeserver keeps failing");
    assert_eq!(error.status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(fake.seen().len(), 3, "max_attempts bounds the retries");
    let text = error.to_string();
    assert!(text.contains("join") && text.contains("down"), "{text}");
    // Acting as the bot needs no identity assertion.
    assert!(!fake.seen()[0].query.contains_key("user_id"));
}

#[tokio::test]
async fn client_returns_other_4xx_at_once() {
    let fake = FakeHomeserver::start(vec![(
        StatusCode::FORBIDDEN,
        json!({"errcode": "M_FORBIDDEN", "error": "not in room"}),
    )])
    .await;
    let error = fake
        .client
        .send_state(
            user_id!("@max_1:example.org"),
            room_id!("!room"),
            "m.room.name",
            "",
            &json!({"name": "x"}),
        )
        .await
        .expect_err("forbidden");
    assert_eq!(error.errcode(), Some("M_FORBIDDEN"));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn register_treats_user_in_use_as_success() {
    let fake = FakeHomeserver::start(vec![(
        StatusCode::BAD_REQUEST,
        json!({"errcode": "M_USER_IN_USE", "error": "taken"}),
    )])
    .await;
    let user = fake
        .client
        .register_user("max_55")
        .await
        .expect("in use is fine");
    assert_eq!(user.as_str(), "@max_55:example.org");
    let seen = fake.seen();
    assert_eq!(seen[0].path, "/_matrix/client/v3/register");
    assert_eq!(seen[0].body["type"], "m.login.application_service");
    assert_eq!(seen[0].body["username"], "max_55");
}

#[tokio::test]
async fn ping_reports_connection_failed_without_retrying() {
    let fake = FakeHomeserver::start(vec![(
        StatusCode::BAD_GATEWAY,
        json!({"errcode": "M_CONNECTION_FAILED", "error": "cannot reach appservice"}),
    )])
    .await;
    let error = fake.client.ping().await.expect_err("unreachable");
    assert_eq!(error.errcode(), Some("M_CONNECTION_FAILED"));
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/_matrix/client/v1/appservice/maxbridge/ping");
}

#[tokio::test]
async fn client_builds_rooms_invites_and_reads_state() {
    let fake = FakeHomeserver::start(vec![
        (StatusCode::OK, json!({"room_id": "!new"})),
        (StatusCode::OK, json!({"event_id": "$invite"})),
        (
            StatusCode::NOT_FOUND,
            json!({"errcode": "M_NOT_FOUND", "error": "no state"}),
        ),
        (StatusCode::OK, json!({"name": "Chat"})),
    ])
    .await;
    let bot = fake.client.bot_user_id().to_owned();
    let alice = user_id!("@alice:example.org");
    let room = fake
        .client
        .create_room(
            &bot,
            maxbridge::matrix::CreateRoomOptions {
                name: Some("Chat".into()),
                is_direct: true,
                invite: vec![alice.to_owned()],
                avatar_url: Some("mxc://example.org/abc".into()),
                initial_state: vec![json!({
                    "type": "m.bridge", "state_key": "max://1", "content": {"protocol": {"id": "max"}}
                })],
                power_level_content_override: Some(json!({"users": {"@maxbot:example.org": 100}})),
                ..Default::default()
            },
        )
        .await
        .expect("created");
    assert_eq!(room.as_str(), "!new");
    fake.client
        .invite(&bot, &room, alice, true)
        .await
        .expect("invited");
    assert_eq!(
        fake.client
            .get_state_event(&bot, &room, "m.room.topic", "")
            .await
            .expect("missing state is not an error"),
        None
    );
    assert_eq!(
        fake.client
            .get_state_event(&bot, &room, "m.room.name", "")
            .await
            .expect("state"),
        Some(json!({"name": "Chat"}))
    );

    let seen = fake.seen();
    assert_eq!(seen[0].path, "/_matrix/client/v3/createRoom");
    let create = &seen[0].body;
    assert_eq!(create["name"], "Chat");
    assert_eq!(create["is_direct"], true);
    assert_eq!(create["invite"], json!(["@alice:example.org"]));
    assert_eq!(
        create["power_level_content_override"]["users"]["@maxbot:example.org"],
        100
    );
    let state_types: Vec<&str> = create["initial_state"]
        .as_array()
        .expect("initial_state")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(state_types, vec!["m.bridge", "m.room.avatar"]);

    assert_eq!(
        seen[1].path,
        "/_matrix/client/v3/rooms/!new/state/m.room.member/@alice:example.org"
    );
    assert_eq!(
        seen[1].body,
        json!({"membership": "invite", "is_direct": true})
    );
}

/// Keeps what it is handed, as the bridge keeps an event whose mapping is
/// still being written.
struct Keeper {
    tx: mpsc::UnboundedSender<(String, Handled)>,
}

impl AppserviceHandler for Keeper {
    async fn handle_event(&self, event: RoomEvent, _delivery: Delivery, handled: Handled) {
        let _ = self.tx.send((event.event_id.to_string(), handled));
    }
}

/// The room's next event comes while the handler still holds the one before,
/// and each stays pending in the inbox (so a crash hands it over again)
/// until its holder lets go; one the handler gave up on (`keep_pending`)
/// stays for the next start.
#[tokio::test]
async fn an_event_is_pending_until_its_handler_lets_go_and_the_room_goes_on_meanwhile() {
    let log = Arc::new(InMemoryInbox::default());
    let (tx, mut kept) = mpsc::unbounded_channel();
    let server = AppserviceServer::new(
        Secret::new(HS_TOKEN),
        Arc::new(Keeper { tx }),
        Arc::clone(&log),
        ServerOptions::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(server.serve(listener, std::future::pending()));
    let txn = json!({"events": [
        event("!r", "$first", "1"),
        event("!r", "$second", "2"),
        event("!r", "$third", "3"),
    ]});
    let response = reqwest::Client::new()
        .put(format!("{base}/_matrix/app/v1/transactions/1"))
        .bearer_auth(HS_TOKEN)
        .json(&txn)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let mut next = async || {
        tokio::time::timeout(DEADLINE, kept.recv())
            .await
            .expect("handed over before the deadline")
            .expect("server alive")
    };
    let (first, first_handled) = next().await;
    let (second, second_handled) = next().await;
    let (third, third_handled) = next().await;
    assert_eq!(
        [first.as_str(), second.as_str(), third.as_str()],
        ["$first", "$second", "$third"]
    );
    let pending = || {
        let mut pending = log.pending_ids();
        pending.sort();
        pending
    };
    assert_eq!(pending(), ["$first", "$second", "$third"]);

    third_handled.keep_pending();
    drop(first_handled);
    let wait_for = |expected: &'static [&'static str]| async move {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while pending() != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pending: {:?}, expected {expected:?}",
                pending()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(&["$second", "$third"]).await;
    drop(second_handled);
    wait_for(&["$third"]).await;
}
