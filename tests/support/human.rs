//! The human on the Matrix side of end-to-end tests: a real client (matrix-sdk,
//! in-memory store, no encryption) logged in to a test [`Synapse`].
//!
//! A background task syncs continuously and keeps a per-room log of every
//! timeline event and every invite, so tests can both wait for something to
//! arrive and afterwards assert on everything seen (order, duplicates, absence).
//! Every wait has a deadline (default [`DEFAULT_WAIT`]) and panics with what
//! was seen instead of hanging.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::membership::get_member_events;
use matrix_sdk::ruma::api::client::message::get_message_events;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Room, RoomState};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::synapse::Synapse;

/// Deadline of every wait unless changed with [`Human::set_wait_timeout`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Long-poll timeout of the background sync; only bounds idle requests.
const SYNC_LONG_POLL: Duration = Duration::from_secs(2);
/// Timeline events per room and sync; large so that no test ever sees a gap.
const TIMELINE_LIMIT: u32 = 1000;
/// How often server-side state is re-read while waiting for it.
const STATE_POLL: Duration = Duration::from_millis(200);

/// An `m.room.message` event as the human saw it.
#[derive(Debug, Clone)]
pub struct Message {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    /// `m.text`, `m.notice`, `m.emote`, `m.image`, ... (empty if redacted).
    pub msgtype: String,
    /// `content.body` (empty if redacted).
    pub body: String,
    pub origin_server_ts: u64,
    /// The whole event as received from `/sync`.
    pub json: Value,
}

impl Message {
    fn from_event(event: &Value) -> Option<Message> {
        if event["type"] != "m.room.message" {
            return None;
        }
        let content = &event["content"];
        Some(Message {
            event_id: event["event_id"].as_str()?.try_into().ok()?,
            sender: event["sender"].as_str()?.try_into().ok()?,
            msgtype: content["msgtype"].as_str().unwrap_or_default().to_owned(),
            body: content["body"].as_str().unwrap_or_default().to_owned(),
            origin_server_ts: event["origin_server_ts"].as_u64().unwrap_or_default(),
            json: event.clone(),
        })
    }

    /// `content.m.relates_to.rel_type`, e.g. `m.replace` for edits.
    pub fn rel_type(&self) -> Option<&str> {
        self.json["content"]["m.relates_to"]["rel_type"].as_str()
    }
}

/// An invite as the human saw it in `/sync` (`rooms.invite`).
#[derive(Debug, Clone)]
pub struct Invite {
    pub room_id: OwnedRoomId,
    /// Sender of the human's own `m.room.member` invite event.
    pub inviter: Option<OwnedUserId>,
    /// `is_direct` of that member event.
    pub is_direct: bool,
    /// `m.room.name` from the stripped state, if the room has one.
    pub room_name: Option<String>,
    /// The stripped state events, as JSON.
    pub state: Vec<Value>,
}

/// A room member, read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
}

#[derive(Default)]
struct RoomLog {
    events: Vec<Value>,
    seen: HashSet<String>,
}

/// Everything the sync task has seen so far.
struct Seen {
    me: OwnedUserId,
    rooms: BTreeMap<OwnedRoomId, RoomLog>,
    invites: Vec<Invite>,
    joined: BTreeSet<OwnedRoomId>,
    left: BTreeSet<OwnedRoomId>,
    /// Followed rooms whose timeline came back `limited` (events may be missing).
    gaps: BTreeSet<OwnedRoomId>,
    syncs: u64,
    last_error: Option<String>,
}

impl Seen {
    fn new(me: OwnedUserId) -> Seen {
        Seen {
            me,
            rooms: BTreeMap::new(),
            invites: Vec::new(),
            joined: BTreeSet::new(),
            left: BTreeSet::new(),
            gaps: BTreeSet::new(),
            syncs: 0,
            last_error: None,
        }
    }

    fn record(&mut self, resp: &SyncResponse) {
        self.syncs += 1;
        self.last_error = None;
        for (room_id, update) in &resp.rooms.invited {
            let state: Vec<Value> = update
                .invite_state
                .events
                .iter()
                .filter_map(|raw| serde_json::from_str(raw.json().get()).ok())
                .collect();
            let invite = Invite::from_state(&self.me, room_id.clone(), state);
            match self.invites.iter_mut().find(|i| i.room_id == *room_id) {
                Some(existing) => *existing = invite,
                None => self.invites.push(invite),
            }
        }
        for (room_id, update) in &resp.rooms.joined {
            // Synapse marks a newly joined room's first timeline `limited`; only a
            // limited timeline of a room already being followed means missed events.
            let followed = self.joined.contains(room_id);
            self.joined.insert(room_id.clone());
            self.left.remove(room_id);
            if update.timeline.limited && followed {
                self.gaps.insert(room_id.clone());
            }
            self.log_events(
                room_id,
                update.timeline.events.iter().map(|e| e.raw().json()),
            );
        }
        for (room_id, update) in &resp.rooms.left {
            self.joined.remove(room_id);
            self.left.insert(room_id.clone());
            self.log_events(
                room_id,
                update.timeline.events.iter().map(|e| e.raw().json()),
            );
        }
    }

    fn log_events<'a>(
        &mut self,
        room_id: &RoomId,
        events: impl Iterator<Item = &'a serde_json::value::RawValue>,
    ) {
        let log = self.rooms.entry(room_id.to_owned()).or_default();
        for raw in events {
            let Ok(event) = serde_json::from_str::<Value>(raw.get()) else {
                continue;
            };
            // The same event can come twice (e.g. in the join sync and a later one);
            // keep the first copy so the log mirrors the room's order.
            let id = event["event_id"].as_str().unwrap_or_default().to_owned();
            if id.is_empty() || log.seen.insert(id) {
                log.events.push(event);
            }
        }
    }

    fn messages(&self, room_id: &RoomId) -> Vec<Message> {
        self.rooms
            .get(room_id)
            .map(|log| log.events.iter().filter_map(Message::from_event).collect())
            .unwrap_or_default()
    }

    fn describe(&self, room_id: Option<&RoomId>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "syncs: {}, joined: {:?}, left: {:?}",
            self.syncs, self.joined, self.left
        );
        if let Some(err) = &self.last_error {
            let _ = writeln!(out, "last sync error: {err}");
        }
        if !self.gaps.is_empty() {
            let _ = writeln!(out, "rooms with timeline gaps: {:?}", self.gaps);
        }
        let _ = writeln!(out, "invites:");
        for i in &self.invites {
            let _ = writeln!(
                out,
                "  {} from {:?} is_direct={} name={:?}",
                i.room_id, i.inviter, i.is_direct, i.room_name
            );
        }
        let rooms: Vec<&OwnedRoomId> = match room_id {
            Some(id) => self.rooms.keys().filter(|r| *r == id).collect(),
            None => self.rooms.keys().collect(),
        };
        if let Some(id) = room_id
            && rooms.is_empty()
        {
            let _ = writeln!(out, "no events seen in {id}");
        }
        for id in rooms {
            let _ = writeln!(out, "events in {id}:");
            for event in &self.rooms[id].events {
                let _ = writeln!(out, "  {}", summarize(event));
            }
        }
        out
    }
}

impl Invite {
    fn from_state(me: &UserId, room_id: OwnedRoomId, state: Vec<Value>) -> Invite {
        let own = state.iter().find(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == me.as_str()
                && e["content"]["membership"] == "invite"
        });
        let inviter = own
            .and_then(|e| e["sender"].as_str())
            .and_then(|s| OwnedUserId::try_from(s).ok());
        let is_direct = own.is_some_and(|e| e["content"]["is_direct"] == true);
        let room_name = state
            .iter()
            .find(|e| e["type"] == "m.room.name")
            .and_then(|e| e["content"]["name"].as_str())
            .map(ToOwned::to_owned);
        Invite {
            room_id,
            inviter,
            is_direct,
            room_name,
            state,
        }
    }
}

/// One line per event for failure messages.
fn summarize(event: &Value) -> String {
    let kind = event["type"].as_str().unwrap_or("?");
    let sender = event["sender"].as_str().unwrap_or("?");
    let content = &event["content"];
    let detail = match kind {
        "m.room.message" => format!(
            "{} {:?}",
            content["msgtype"].as_str().unwrap_or("?"),
            content["body"].as_str().unwrap_or_default()
        ),
        "m.room.member" => format!(
            "{} -> {}",
            event["state_key"].as_str().unwrap_or("?"),
            content["membership"].as_str().unwrap_or("?")
        ),
        _ => content.to_string(),
    };
    format!(
        "{} {kind} from {sender}: {detail}",
        event["event_id"].as_str().unwrap_or("?")
    )
}

/// A logged-in Matrix user driven by the test.
pub struct Human {
    client: Client,
    user_id: OwnedUserId,
    seen: Arc<watch::Sender<Seen>>,
    sync_task: JoinHandle<()>,
    wait: Duration,
}

impl std::fmt::Debug for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Human")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Human {
    fn drop(&mut self) {
        self.sync_task.abort();
    }
}

impl Human {
    /// Logs in (`user` is a localpart or a full user id), does one initial sync
    /// and starts syncing in the background.
    pub async fn login(synapse: &Synapse, user: &str, password: &str) -> Human {
        Human::login_at(&synapse.base_url(), user, password).await
    }

    /// [`Human::login`] on the homeserver at `url`.
    pub async fn login_at(url: &str, user: &str, password: &str) -> Human {
        let client = Client::builder()
            .homeserver_url(url)
            .build()
            .await
            .unwrap_or_else(|err| panic!("build Matrix client for {user}: {err}"));
        client
            .matrix_auth()
            .login_username(user, password)
            .initial_device_display_name("maxbridge test human")
            .send()
            .await
            .unwrap_or_else(|err| panic!("log in as {user}: {err}"));
        let user_id = client
            .user_id()
            .expect("logged-in client has a user id")
            .to_owned();

        let mut filter = FilterDefinition::default();
        filter.room.timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
        let settings = SyncSettings::new().filter(Filter::FilterDefinition(filter));

        let seen = Arc::new(watch::Sender::new(Seen::new(user_id.clone())));
        let initial = client
            .sync_once(settings.clone().timeout(Duration::ZERO))
            .await
            .unwrap_or_else(|err| panic!("initial sync of {user_id}: {err}"));
        seen.send_modify(|s| s.record(&initial));

        let sync_task = tokio::spawn(sync_loop(
            client.clone(),
            settings.timeout(SYNC_LONG_POLL),
            Arc::clone(&seen),
        ));
        Human {
            client,
            user_id,
            seen,
            sync_task,
            wait: DEFAULT_WAIT,
        }
    }

    /// Registers `localpart` (password `<localpart>-password`) and logs in.
    pub async fn register(synapse: &Synapse, localpart: &str) -> Human {
        let password = format!("{localpart}-password");
        synapse.register_user(localpart, &password).await;
        Human::login(synapse, localpart, &password).await
    }

    /// Changes the deadline of every later wait.
    pub fn set_wait_timeout(&mut self, wait: Duration) {
        self.wait = wait;
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The underlying matrix-sdk client, for anything this API lacks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    // ----- invites and rooms -----

    /// Every invite seen so far, in arrival order.
    pub fn invites(&self) -> Vec<Invite> {
        self.seen.borrow().invites.clone()
    }

    /// Waits for an invite matching `pred` (including ones already seen).
    pub async fn wait_for_invite(&self, pred: impl Fn(&Invite) -> bool) -> Invite {
        self.wait_seen("an invite matching the predicate", None, |s| {
            s.invites.iter().find(|i| pred(i)).cloned()
        })
        .await
    }

    /// Waits for an invite sent by `inviter`.
    pub async fn wait_for_invite_from(&self, inviter: &UserId) -> Invite {
        self.wait_seen(&format!("an invite from {inviter}"), None, |s| {
            s.invites
                .iter()
                .find(|i| i.inviter.as_deref() == Some(inviter))
                .cloned()
        })
        .await
    }

    /// Joins `room` and waits until the sync shows it joined.
    pub async fn join(&self, room: &RoomId) {
        self.client
            .join_room_by_id(room)
            .await
            .unwrap_or_else(|err| panic!("{} joining {room}: {err}", self.user_id));
        self.wait_joined(room).await;
    }

    /// Waits for an invite from `inviter`, joins it and returns the room.
    pub async fn accept_invite_from(&self, inviter: &UserId) -> OwnedRoomId {
        let invite = self.wait_for_invite_from(inviter).await;
        self.join(&invite.room_id).await;
        invite.room_id
    }

    /// Joins every pending invite; returns the rooms joined.
    pub async fn accept_all_invites(&self) -> Vec<OwnedRoomId> {
        let pending: Vec<OwnedRoomId> = {
            let seen = self.seen.borrow();
            seen.invites
                .iter()
                .filter(|i| !seen.joined.contains(&i.room_id) && !seen.left.contains(&i.room_id))
                .map(|i| i.room_id.clone())
                .collect()
        };
        for room in &pending {
            self.join(room).await;
        }
        pending
    }

    pub async fn leave(&self, room: &RoomId) {
        self.room(room)
            .leave()
            .await
            .unwrap_or_else(|err| panic!("{} leaving {room}: {err}", self.user_id));
    }

    /// Creates a private room (optionally named) inviting `invite`.
    pub async fn create_room(&self, name: Option<&str>, invite: &[&UserId]) -> OwnedRoomId {
        let mut request = CreateRoomRequest::new();
        request.name = name.map(ToOwned::to_owned);
        request.invite = invite.iter().map(|u| (*u).to_owned()).collect();
        request.preset = Some(RoomPreset::PrivateChat);
        self.create(request).await
    }

    /// Creates a direct chat with `with` (`is_direct` invite, recorded in `m.direct`),
    /// the way Element starts a DM.
    pub async fn create_dm(&self, with: &UserId) -> OwnedRoomId {
        let mut request = CreateRoomRequest::new();
        request.invite = vec![with.to_owned()];
        request.is_direct = true;
        request.preset = Some(RoomPreset::TrustedPrivateChat);
        self.create(request).await
    }

    pub async fn invite(&self, room: &RoomId, user: &UserId) {
        self.room(room)
            .invite_user_by_id(user)
            .await
            .unwrap_or_else(|err| panic!("{} inviting {user} to {room}: {err}", self.user_id));
    }

    async fn create(&self, request: CreateRoomRequest) -> OwnedRoomId {
        let room = self
            .client
            .create_room(request)
            .await
            .unwrap_or_else(|err| panic!("{} creating a room: {err}", self.user_id));
        let id = room.room_id().to_owned();
        self.wait_joined(&id).await;
        id
    }

    async fn wait_joined(&self, room: &RoomId) {
        self.wait_seen(&format!("{room} to show up as joined"), Some(room), |s| {
            s.joined.contains(room).then_some(())
        })
        .await;
    }

    /// Whether the room is a DM for the human: the invite said `is_direct`,
    /// or the room is in the human's `m.direct`.
    pub async fn is_direct(&self, room: &RoomId) -> bool {
        let invited_direct = self
            .seen
            .borrow()
            .invites
            .iter()
            .any(|i| i.room_id == room && i.is_direct);
        if invited_direct {
            return true;
        }
        match self.client.get_room(room) {
            Some(r) => r
                .is_direct()
                .await
                .unwrap_or_else(|err| panic!("is_direct({room}): {err}")),
            None => false,
        }
    }

    // ----- sending -----

    pub async fn send_text(&self, room: &RoomId, body: &str) -> OwnedEventId {
        self.send_message(room, "m.text", body).await
    }

    /// Sends a text with the client transaction id `txn`, retrying (with
    /// the same id, so the homeserver never makes two events of it) while
    /// the homeserver is unavailable, up to the wait deadline.
    pub async fn send_text_until_accepted(
        &self,
        room: &RoomId,
        body: &str,
        txn: &str,
    ) -> OwnedEventId {
        let txn = matrix_sdk::ruma::OwnedTransactionId::from(txn);
        let deadline = Instant::now() + self.wait;
        loop {
            let content = json!({ "msgtype": "m.text", "body": body });
            match self
                .room(room)
                .send_raw("m.room.message", content)
                .with_transaction_id(&txn)
                .await
            {
                Ok(sent) => return sent.response.event_id,
                Err(err) => {
                    assert!(
                        Instant::now() < deadline,
                        "{} could not send {body:?} within {:?}: {err}",
                        self.user_id,
                        self.wait
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    pub async fn send_notice(&self, room: &RoomId, body: &str) -> OwnedEventId {
        self.send_message(room, "m.notice", body).await
    }

    pub async fn send_emote(&self, room: &RoomId, body: &str) -> OwnedEventId {
        self.send_message(room, "m.emote", body).await
    }

    async fn send_message(&self, room: &RoomId, msgtype: &str, body: &str) -> OwnedEventId {
        self.send_event(
            room,
            "m.room.message",
            json!({ "msgtype": msgtype, "body": body }),
        )
        .await
    }

    /// Sends a reply to `to` (with the rich-reply relation).
    pub async fn send_reply(&self, room: &RoomId, to: &EventId, body: &str) -> OwnedEventId {
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": { "m.in_reply_to": { "event_id": to } },
        });
        self.send_event(room, "m.room.message", content).await
    }

    /// Sends an edit (`m.replace`) of `original`.
    pub async fn send_edit(&self, room: &RoomId, original: &EventId, body: &str) -> OwnedEventId {
        let content = json!({
            "msgtype": "m.text",
            "body": format!("* {body}"),
            "m.new_content": { "msgtype": "m.text", "body": body },
            "m.relates_to": { "rel_type": "m.replace", "event_id": original },
        });
        self.send_event(room, "m.room.message", content).await
    }

    /// Sends an `m.reaction` annotation.
    pub async fn send_reaction(&self, room: &RoomId, to: &EventId, key: &str) -> OwnedEventId {
        let content = json!({
            "m.relates_to": { "rel_type": "m.annotation", "event_id": to, "key": key },
        });
        self.send_event(room, "m.reaction", content).await
    }

    /// Sends any message-like event with raw JSON content.
    pub async fn send_event(
        &self,
        room: &RoomId,
        event_type: &str,
        content: Value,
    ) -> OwnedEventId {
        self.room(room)
            .send_raw(event_type, content)
            .await
            .unwrap_or_else(|err| panic!("{} sending {event_type} to {room}: {err}", self.user_id))
            .response
            .event_id
    }

    /// Sets a state event with raw JSON content.
    pub async fn send_state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> OwnedEventId {
        self.room(room)
            .send_state_event_raw(event_type, state_key, content)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "{} setting {event_type}/{state_key:?} in {room}: {err}",
                    self.user_id
                )
            })
            .event_id
    }

    pub async fn redact(&self, room: &RoomId, event: &EventId, reason: Option<&str>) {
        self.room(room)
            .redact(event, reason, None)
            .await
            .unwrap_or_else(|err| panic!("{} redacting {event}: {err}", self.user_id));
    }

    // ----- what the human saw -----

    /// All `m.room.message` events seen in `room`, in timeline order, each once.
    pub fn messages(&self, room: &RoomId) -> Vec<Message> {
        self.seen.borrow().messages(room)
    }

    /// All timeline events seen in `room` (any type), in order, each once.
    pub fn events(&self, room: &RoomId) -> Vec<Value> {
        self.seen
            .borrow()
            .rooms
            .get(room)
            .map(|log| log.events.clone())
            .unwrap_or_default()
    }

    /// Waits for a message in `room` matching `pred` (including ones already seen).
    pub async fn wait_for_message(
        &self,
        room: &RoomId,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        self.wait_seen("a message matching the predicate", Some(room), |s| {
            s.messages(room).into_iter().find(|m| pred(m))
        })
        .await
    }

    /// Waits for a message in `room` whose body is exactly `body`.
    pub async fn wait_for_text(&self, room: &RoomId, body: &str) -> Message {
        self.wait_seen(&format!("a message with body {body:?}"), Some(room), |s| {
            s.messages(room).into_iter().find(|m| m.body == body)
        })
        .await
    }

    /// Waits until at least `count` messages in `room` match `pred`; returns all matching.
    pub async fn wait_for_messages(
        &self,
        room: &RoomId,
        count: usize,
        pred: impl Fn(&Message) -> bool,
    ) -> Vec<Message> {
        self.wait_seen(
            &format!("{count} messages matching the predicate"),
            Some(room),
            |s| {
                let found: Vec<Message> =
                    s.messages(room).into_iter().filter(|m| pred(m)).collect();
                (found.len() >= count).then_some(found)
            },
        )
        .await
    }

    /// Waits for any timeline event in `room` matching `pred`.
    pub async fn wait_for_event(&self, room: &RoomId, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_seen("an event matching the predicate", Some(room), |s| {
            s.rooms
                .get(room)
                .and_then(|log| log.events.iter().find(|e| pred(e)).cloned())
        })
        .await
    }

    // ----- room state, read from the server -----

    /// Content of the state event `(event_type, state_key)`, or `None` if unset.
    pub async fn state_event(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Option<Value> {
        let request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            StateEventType::from(event_type),
            state_key.to_owned(),
        );
        match self.client.send(request).await {
            Ok(resp) => Some(
                serde_json::from_str(resp.event_or_content.get())
                    .unwrap_or_else(|err| panic!("state event {event_type} is not JSON: {err}")),
            ),
            Err(err)
                if err
                    .as_client_api_error()
                    .is_some_and(|e| e.status_code == 404) =>
            {
                None
            }
            Err(err) => panic!(
                "{} reading {event_type}/{state_key:?} in {room}: {err}",
                self.user_id
            ),
        }
    }

    /// Waits until the state event exists and its content matches `pred`.
    pub async fn wait_for_state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + self.wait;
        loop {
            let current = self.state_event(room, event_type, state_key).await;
            if let Some(content) = current.as_ref().filter(|c| pred(c)) {
                return content.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {:?} waiting for state {event_type}/{state_key:?} in {room} \
                 to match; last content: {current:?}",
                self.user_id,
                self.wait
            );
            tokio::time::sleep(STATE_POLL).await;
        }
    }

    /// The room's `m.room.name`, read from the server.
    pub async fn room_name(&self, room: &RoomId) -> Option<String> {
        self.state_event(room, "m.room.name", "")
            .await
            .and_then(|c| c["name"].as_str().map(ToOwned::to_owned))
            .filter(|name| !name.is_empty())
    }

    /// Every member with any membership, read from the server.
    pub async fn all_members(&self, room: &RoomId) -> Vec<Member> {
        let resp = self
            .client
            .send(get_member_events::v3::Request::new(room.to_owned()))
            .await
            .unwrap_or_else(|err| panic!("{} reading members of {room}: {err}", self.user_id));
        resp.chunk
            .iter()
            .filter_map(|raw| serde_json::from_str::<Value>(raw.json().get()).ok())
            .filter_map(|event| {
                Some(Member {
                    user_id: event["state_key"].as_str()?.try_into().ok()?,
                    display_name: event["content"]["displayname"]
                        .as_str()
                        .map(ToOwned::to_owned),
                    membership: event["content"]["membership"].as_str()?.to_owned(),
                })
            })
            .collect()
    }

    /// The room's events as the server has them (`/messages`, newest
    /// first, up to `limit`): what a test compares with what the sync
    /// showed, when something seems missing.
    pub async fn history_on_server(&self, room: &RoomId, limit: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = None;
        while events.len() < limit {
            let mut request = get_message_events::v3::Request::backward(room.to_owned());
            request.from = from.take();
            request.limit = UInt::from(500u32);
            let resp =
                self.client.send(request).await.unwrap_or_else(|err| {
                    panic!("{} reading history of {room}: {err}", self.user_id)
                });
            let page = resp.chunk.len();
            events.extend(
                resp.chunk
                    .iter()
                    .filter_map(|raw| serde_json::from_str::<Value>(raw.json().get()).ok()),
            );
            match resp.end {
                Some(end) if page > 0 => from = Some(end),
                _ => break,
            }
        }
        events
    }

    /// How the background sync has gone: syncs done, the last error (if
    /// the last sync failed) and the rooms whose timeline came back with a
    /// gap.
    pub fn sync_report(&self) -> String {
        let seen = self.seen.borrow();
        format!(
            "{} syncs, last error {:?}, gaps in {:?}",
            seen.syncs, seen.last_error, seen.gaps
        )
    }

    /// Joined and invited members, read from the server.
    pub async fn room_members(&self, room: &RoomId) -> Vec<Member> {
        let mut members = self.all_members(room).await;
        members.retain(|m| m.membership == "join" || m.membership == "invite");
        members
    }

    /// Waits until `user` has `membership` (`join`, `invite`, `leave`, ...) in `room`.
    pub async fn wait_for_membership(
        &self,
        room: &RoomId,
        user: &UserId,
        membership: &str,
    ) -> Member {
        let deadline = Instant::now() + self.wait;
        loop {
            let members = self.all_members(room).await;
            if let Some(m) = members
                .iter()
                .find(|m| m.user_id == user && m.membership == membership)
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {:?} waiting for {user} to be {membership:?} in {room}; \
                 members: {members:?}",
                self.user_id,
                self.wait
            );
            tokio::time::sleep(STATE_POLL).await;
        }
    }

    // ----- internals -----

    fn room(&self, room: &RoomId) -> Room {
        let r = self.client.get_room(room).unwrap_or_else(|| {
            panic!(
                "{} does not know room {room}\n{}",
                self.user_id,
                self.seen.borrow().describe(None)
            )
        });
        assert!(
            r.state() == RoomState::Joined,
            "{} is not joined to {room} (state {:?})",
            self.user_id,
            r.state()
        );
        r
    }

    /// Waits until `check` finds something in what the sync task has seen.
    async fn wait_seen<T>(
        &self,
        what: &str,
        room: Option<&RoomId>,
        mut check: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + self.wait;
        let mut changes = self.seen.subscribe();
        loop {
            if let Some(found) = check(&changes.borrow_and_update()) {
                return found;
            }
            let woke = tokio::time::timeout_at(deadline, changes.changed()).await;
            if woke.is_err() || self.sync_task.is_finished() {
                panic!(
                    "{}: timed out after {:?} waiting for {what}{}\n{}",
                    self.user_id,
                    self.wait,
                    if self.sync_task.is_finished() {
                        " (sync task died)"
                    } else {
                        ""
                    },
                    self.seen.borrow().describe(room)
                );
            }
        }
    }
}

async fn sync_loop(client: Client, settings: SyncSettings, seen: Arc<watch::Sender<Seen>>) {
    loop {
        match client.sync_once(settings.clone()).await {
            Ok(resp) => seen.send_modify(|s| s.record(&resp)),
            Err(err) => {
                // Transient while Synapse restarts; waits report it if it persists.
                seen.send_modify(|s| s.last_error = Some(err.to_string()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
