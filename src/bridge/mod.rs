//! The bridge core: joins the MAX protocol client to the Matrix appservice.
//! It owns the running logins, routes Matrix events and MAX pushes into one
//! ordered queue per portal, and answers the management-room commands.
//!
//! - [`login`]: one running MAX session per logged-in Matrix user.
//! - [`portal`]: portal rooms and their ordered queues.
//! - [`message`]: messages, edits and deletions in both directions.
//! - [`activity`]: typing and read receipts in both directions.
//! - [`ghost`]: the Matrix puppets of MAX users.
//! - [`media`]: MAX media into the Matrix media repository.
//! - [`reaction`]: reactions both ways.
//! - [`commands`]: the bot's management room.
//! - [`convert`]: message content conversion.

pub mod activity;
pub mod commands;
pub mod convert;
pub mod ghost;
pub mod group;
pub mod login;
pub mod media;
pub mod message;
pub mod portal;
pub mod provision;
pub mod puppet;
pub mod reaction;
pub mod relay;
pub mod sms_login;
pub mod space;

use crate::config::Config;
use crate::matrix::{
    AppserviceHandler, Delivery, EphemeralEvent, Handled, MatrixClient, RoomEvent,
};
use crate::queue::KeyedQueue;
use crate::store::{PortalRow, Store, StoreError};
use login::LoginSession;
use portal::{PortalEvent, PortalKey};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

/// Items buffered per portal before the producer (the MAX push reader or the
/// appservice transaction) waits.
const PORTAL_QUEUE_CAPACITY: usize = 256;
/// Portals created concurrently (see `Bridge::portal_creations`).
const PORTAL_CREATIONS_AT_ONCE: usize = 8;
const PORTAL_IDLE: Duration = Duration::from_secs(120);

/// Shared state of a running bridge.
pub struct Bridge {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) matrix: MatrixClient,
    pub(crate) bot: OwnedUserId,
    /// For URLs that MAX hands out (avatars, media, upload slots): public
    /// addresses only, unless the config allows a network.
    pub(crate) http: crate::fetch::GuardedClient,
    /// Running logins by Matrix user. Locked only to look up or replace.
    logins: Mutex<HashMap<OwnedUserId, Arc<LoginSession>>>,
    /// Half-done SMS logins, by Matrix user.
    pub(crate) pending_logins: AsyncMutex<HashMap<OwnedUserId, commands::Pending>>,
    portals: KeyedQueue<PortalKey, PortalEvent>,
    /// Memberships known to be in place, so sends skip the join dance.
    joined: Mutex<HashSet<(OwnedRoomId, OwnedUserId)>>,
    /// Bumped whenever a login starts, stops or gives up resuming, so that
    /// work waiting for a login wakes up and looks again.
    logins_changed: tokio::sync::watch::Sender<u64>,
    /// Users whose saved login is being resumed (at start, after failures).
    resuming: Mutex<HashSet<OwnedUserId>>,
    /// Set once start-up has marked every saved login as resuming.
    started: std::sync::atomic::AtomicBool,
    /// Background work that must not outlive the bridge (login resumption).
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Transaction ids of sends to the homeserver whose outcome is unknown
    /// (the request may have been handled before the connection broke).
    unsure_sends: Mutex<HashSet<String>>,
    /// MAX messages currently held because the homeserver is unavailable.
    held_for_homeserver: Arc<AtomicUsize>,
    /// Avatars and chat pictures that could not be fetched lately.
    failed_pictures: ghost::FailedPictures,
    /// Portals being created at once: each creation holds requests to both
    /// sides in flight, and a login naming hundreds of chats must not open
    /// hundreds of room creations on the homeserver at the same time.
    portal_creations: tokio::sync::Semaphore,
    /// Held while a personal space is looked up or made.
    space_creation: tokio::sync::Mutex<()>,
    /// Mappings of bridged MAX messages being written behind their portal.
    records: message::InFlightRecords,
    /// What `/metrics` shows.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Where logins' states are reported, when configured.
    state_reporter: Option<crate::matrix::bridge_state::StateReporter>,
    /// MAX presence changes, shown one after the other (in the order MAX
    /// sent them), when `bridge.presence` is on.
    pub(crate) presence: Option<tokio::sync::mpsc::Sender<(i64, bool)>>,
    /// Acts as logged-in users of the bridge's homeserver themselves, when
    /// `double_puppet` is set up for it.
    double_puppet: Option<MatrixClient>,
    /// Held while a user's `m.direct` is read and written back.
    direct_updates: tokio::sync::Mutex<()>,
}

/// Presence changes waiting to be shown; more are dropped (the next change
/// of each contact shows it again).
const PRESENCE_BACKLOG: usize = 1024;

/// Counts one held message while alive.
pub(crate) struct HeldMessage(Arc<AtomicUsize>);

impl Drop for HeldMessage {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("bot", &self.bot)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    pub fn new(
        config: Config,
        store: Store,
        matrix: MatrixClient,
        http: crate::fetch::GuardedClient,
    ) -> Arc<Bridge> {
        let bot = matrix.bot_user_id().to_owned();
        let metrics = crate::metrics::Metrics::new();
        let matrix = matrix.with_observer(Arc::new(metrics.homeserver_observer()));
        store.observe_writes(Arc::new(metrics.database_observer()));
        let state_reporter = config.homeserver.status_endpoint.clone().map(|endpoint| {
            crate::matrix::bridge_state::StateReporter::start(endpoint, matrix.as_token())
        });
        let double_puppet = config
            .double_puppet
            .as_token(&config.homeserver.domain)
            .map(|token| matrix.with_as_token(token));
        Arc::new_cyclic(|weak: &Weak<Bridge>| {
            let weak = weak.clone();
            let presence = config.bridge.presence.then(|| {
                let (changes, mut pending) = tokio::sync::mpsc::channel(PRESENCE_BACKLOG);
                let weak = weak.clone();
                tokio::spawn(async move {
                    while let Some((user, online)) = pending.recv().await {
                        let Some(bridge) = weak.upgrade() else {
                            return;
                        };
                        bridge.show_presence(user, online).await;
                    }
                });
                changes
            });
            let portals = KeyedQueue::with_options(
                PORTAL_QUEUE_CAPACITY,
                PORTAL_IDLE,
                move |key: PortalKey, event: PortalEvent| {
                    let weak = weak.clone();
                    async move {
                        if let Some(bridge) = weak.upgrade() {
                            bridge.handle_portal_event(key, event).await;
                        }
                    }
                },
            );
            Bridge {
                config,
                store,
                matrix,
                double_puppet,
                direct_updates: tokio::sync::Mutex::new(()),
                bot,
                http,
                logins: Mutex::new(HashMap::new()),
                pending_logins: AsyncMutex::new(HashMap::new()),
                portals,
                joined: Mutex::new(HashSet::new()),
                logins_changed: tokio::sync::watch::channel(0).0,
                resuming: Mutex::new(HashSet::new()),
                started: std::sync::atomic::AtomicBool::new(false),
                unsure_sends: Mutex::new(HashSet::new()),
                tasks: Mutex::new(tokio::task::JoinSet::new()),
                held_for_homeserver: Arc::new(AtomicUsize::new(0)),
                failed_pictures: ghost::FailedPictures::default(),
                portal_creations: tokio::sync::Semaphore::new(PORTAL_CREATIONS_AT_ONCE),
                space_creation: tokio::sync::Mutex::new(()),
                records: message::InFlightRecords::default(),
                metrics,
                state_reporter,
                presence,
            }
        })
    }

    /// Reports a login's state to the status endpoint, when one is
    /// configured; queued, so a slow endpoint never holds the login back.
    pub(crate) fn report_state(
        &self,
        session: &LoginSession,
        state: crate::matrix::bridge_state::StateEvent,
        error: Option<(&'static str, String)>,
    ) {
        if let Some(reporter) = &self.state_reporter {
            reporter.report(
                &session.mxid,
                session.max_user_id.to_string(),
                Some(session.name.clone()),
                state,
                error,
            );
        }
    }

    /// The metrics in Prometheus's text format, the gauges read now.
    pub fn metrics_text(&self) -> String {
        use maxproto::client::ConnectionState;
        let sessions: Vec<Arc<LoginSession>> = self
            .logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut states = [
            ("connecting", 0),
            ("connected", 0),
            ("reconnecting", 0),
            ("logged_out", 0),
        ];
        for session in sessions {
            let index = match *session.client.state().borrow() {
                ConnectionState::Connecting => 0,
                ConnectionState::Connected => 1,
                ConnectionState::Reconnecting { .. } => 2,
                ConnectionState::LoggedOut { .. } | ConnectionState::Closed => 3,
            };
            states[index].1 += 1;
        }
        self.metrics.set_state(&states, self.portals.busy_keys());
        self.metrics.encode()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn bot_id(&self) -> ruma::OwnedUserId {
        self.bot.clone()
    }

    /// How many MAX messages wait for the homeserver to come back.
    pub fn held_for_homeserver(&self) -> usize {
        self.held_for_homeserver.load(Ordering::Relaxed)
    }

    pub(crate) fn waiting_for_homeserver(&self) -> HeldMessage {
        self.held_for_homeserver.fetch_add(1, Ordering::Relaxed);
        HeldMessage(Arc::clone(&self.held_for_homeserver))
    }

    /// The running login of a Matrix user, if any.
    pub(crate) fn login_of(&self, mxid: &UserId) -> Option<Arc<LoginSession>> {
        self.lock_logins().get(mxid).cloned()
    }

    /// The running login of the MAX account that receives a portal.
    pub(crate) fn session_of_receiver(&self, max_user_id: i64) -> Option<Arc<LoginSession>> {
        self.lock_logins()
            .values()
            .find(|s| s.max_user_id == max_user_id)
            .cloned()
    }

    pub(crate) fn set_login(&self, session: Arc<LoginSession>) -> Option<Arc<LoginSession>> {
        let previous = self.lock_logins().insert(session.mxid.clone(), session);
        self.logins_changed.send_modify(|n| *n += 1);
        previous
    }

    pub(crate) fn remove_login(&self, mxid: &UserId) -> Option<Arc<LoginSession>> {
        let removed = self.lock_logins().remove(mxid);
        self.logins_changed.send_modify(|n| *n += 1);
        removed
    }

    /// Marks a saved login as being resumed (or no longer).
    pub(crate) fn set_resuming(&self, mxid: &UserId, resuming: bool) {
        {
            let mut set = self.resuming.lock().unwrap_or_else(|e| e.into_inner());
            if resuming {
                set.insert(mxid.to_owned());
            } else {
                set.remove(mxid);
            }
        }
        self.logins_changed.send_modify(|n| *n += 1);
    }

    fn is_resuming(&self, mxid: &UserId) -> bool {
        self.resuming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(mxid)
    }

    /// The running login of `mxid`, waiting (up to the configured patience)
    /// while a saved login is still being resumed — at start, the
    /// homeserver's retried transactions come before MAX has answered.
    /// `None` only when there is no login to wait for, or it did not come
    /// back in time.
    pub(crate) async fn wait_for_login(
        &self,
        mxid: &UserId,
    ) -> Result<Option<Arc<LoginSession>>, crate::store::StoreError> {
        let deadline = tokio::time::Instant::now() + self.config.login_patience();
        let mut changed = self.logins_changed.subscribe();
        loop {
            changed.borrow_and_update();
            // Read in this order: start-up marks every saved login resuming
            // before it sets `started`, and a resumption installs the login
            // before it clears its mark. So "started and not resuming" seen
            // here means the login is running by the next line, or failed.
            let started = self.started();
            let resuming = self.is_resuming(mxid);
            if let Some(session) = self.login_of(mxid) {
                return Ok(Some(session));
            }
            let saved = self.store.logins().get(mxid.as_str()).await?;
            let resumable = saved.is_some_and(|login| login.state != login::STATE_LOGGED_OUT);
            // A saved login not (yet) being resumed is waited for only while
            // the bridge starts: resume_logins marks them all early on.
            if !resumable || (!resuming && started) {
                return Ok(None);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).min(Duration::from_secs(1));
            let _ = tokio::time::timeout(wait, changed.changed()).await;
        }
    }

    /// Whether start-up has marked the saved logins for resuming.
    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub(crate) fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
        self.logins_changed.send_modify(|n| *n += 1);
    }

    /// Drops `session` from the running logins, unless a newer login of the
    /// same user replaced it meanwhile.
    pub(crate) fn forget_login(&self, session: &Arc<LoginSession>) {
        let mut logins = self.lock_logins();
        if logins
            .get(&session.mxid)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            logins.remove(&session.mxid);
        }
        drop(logins);
        self.logins_changed.send_modify(|n| *n += 1);
    }

    fn lock_logins(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Arc<LoginSession>>> {
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event for a portal; waits while that portal's queue is full.
    pub(crate) async fn enqueue(&self, key: PortalKey, event: PortalEvent) {
        self.portals.push(key, event).await;
    }

    pub(crate) fn is_unsure_send(&self, txn: &str) -> bool {
        self.unsure_sends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(txn)
    }

    pub(crate) fn set_unsure_send(&self, txn: &str, unsure: bool) {
        let mut sends = self.unsure_sends.lock().unwrap_or_else(|e| e.into_inner());
        if unsure {
            sends.insert(txn.to_owned());
        } else {
            sends.remove(txn);
        }
    }

    pub(crate) fn is_joined(&self, room: &RoomId, user: &UserId) -> bool {
        self.joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(room.to_owned(), user.to_owned()))
    }

    pub(crate) fn mark_joined(&self, room: &RoomId, user: &UserId) {
        self.joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((room.to_owned(), user.to_owned()));
    }

    /// After `user` left `room`: the next send as them joins again.
    pub(crate) fn forget_joined(&self, room: &RoomId, user: &UserId) {
        self.joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(room.to_owned(), user.to_owned()));
    }

    /// Runs `work` in the background until it ends or the bridge shuts down.
    pub(crate) fn spawn_task(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished tasks so the set does not grow with them.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(work);
    }

    /// Stops every running login (without logging them out of MAX).
    pub async fn shutdown(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
        let sessions: Vec<_> = self.lock_logins().drain().map(|(_, s)| s).collect();
        for session in sessions {
            session.stop().await;
        }
        self.settle_all_records().await;
    }

    /// Posts a notice from the bot, logging (not failing) when that fails.
    pub(crate) async fn bot_notice(&self, room: &RoomId, text: &str) {
        let mut content = serde_json::json!({"msgtype": "m.notice", "body": text});
        if let Some(html) = render_markdown(text) {
            content["format"] = "org.matrix.custom.html".into();
            content["formatted_body"] = html.into();
        }
        let txn = format!("notice-{}", uuid::Uuid::new_v4());
        if let Err(error) = self
            .matrix
            .send_message(&self.bot, room, "m.room.message", &content, &txn, None)
            .await
        {
            tracing::warn!(room = %room, %error, "could not post a bot notice");
        }
    }

    /// Tells a user something in their management room, if they have one.
    pub(crate) async fn tell_user(&self, mxid: &UserId, text: &str) {
        match self.store.users().get(mxid.as_str()).await {
            Ok(Some(user)) => {
                if let Some(room) = user.management_room.as_deref().and_then(room_id) {
                    self.bot_notice(&room, text).await;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(user = %mxid, %error, "could not look up management room"),
        }
    }
}

/// The bot's words (Markdown: `commands`, **emphasis**, [links](…)) as
/// HTML, or `None` when they have no formatting. The words may quote MAX
/// (names, errors, message previews), so HTML in them is shown as text,
/// never passed through; each line stays a line.
pub(crate) fn render_markdown(text: &str) -> Option<String> {
    use pulldown_cmark::{Event, Options, Parser};
    let mut formatted = false;
    // Per open link, whether it is dropped: only web and matrix.to links
    // are made (a quoted name could hold `[x](javascript:…)`).
    let mut links: Vec<bool> = Vec::new();
    let events = Parser::new_ext(text, Options::ENABLE_STRIKETHROUGH).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(pulldown_cmark::Tag::Link { ref dest_url, .. }) => {
            let safe = dest_url.starts_with("https://") || dest_url.starts_with("http://");
            links.push(!safe);
            if safe {
                formatted = true;
                event
            } else {
                Event::Text("".into())
            }
        }
        Event::End(pulldown_cmark::TagEnd::Link) => match links.pop() {
            Some(true) => Event::Text("".into()),
            _ => event,
        },
        Event::SoftBreak => Event::HardBreak,
        Event::Start(pulldown_cmark::Tag::Paragraph)
        | Event::End(pulldown_cmark::TagEnd::Paragraph) => event,
        Event::Text(_) | Event::HardBreak => event,
        other => {
            formatted = true;
            other
        }
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    formatted.then(|| html.trim_end().to_owned())
}

pub(crate) fn room_id(text: &str) -> Option<OwnedRoomId> {
    OwnedRoomId::try_from(text).ok()
}

/// The client id (`cid`) of the `part`-th MAX message sent for a Matrix
/// event: derived from the event id, so a send retried after a crash or a
/// lost answer is recognised by MAX's cid deduplication instead of posted
/// twice. Negative (as maxrs does), so it never equals the positive
/// time-based cid of the user's own MAX apps.
pub(crate) fn cid_for_event(event_id: &str, part: usize) -> i64 {
    let name = format!("{event_id}#{part}");
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes());
    let (high, _) = uuid.as_u64_pair();
    // 62 bits keep it clear of i64::MIN and of 0.
    -((high >> 2) as i64) - 1
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The appservice side of the bridge: what the homeserver pushes lands here.
pub struct MatrixHandler {
    pub bridge: Arc<Bridge>,
}

impl AppserviceHandler for MatrixHandler {
    /// The bridge's own events (its echoes) and types it does nothing with
    /// are not stored.
    fn wants_event(&self, event: &RoomEvent) -> bool {
        !self.bridge.config.is_bridge_user(event.sender.as_str())
            && !Bridge::sent_as_puppet(&event.content)
            && matches!(
                event.event_type.as_str(),
                "m.room.member"
                    | "m.room.name"
                    | "m.room.topic"
                    | "m.room.pinned_events"
                    | "m.room.message"
                    | "m.room.redaction"
                    | "m.reaction"
                    | "m.sticker"
                    | convert::POLL_RESPONSE
            )
    }

    async fn handle_event(&self, event: RoomEvent, delivery: Delivery, handled: Handled) {
        self.bridge
            .handle_matrix_event(event, delivery, handled)
            .await;
    }

    async fn handle_ephemeral(&self, event: EphemeralEvent) {
        self.bridge.handle_matrix_ephemeral(event).await;
    }

    /// A ghost's id was looked up (someone invited or messaged it): it
    /// exists if it names a MAX user, and must then be registered before
    /// the homeserver is told so.
    async fn query_user(&self, user_id: &UserId) -> bool {
        if self
            .bridge
            .config
            .max_user_id_from_ghost(user_id.as_str())
            .is_none()
        {
            return false;
        }
        match self.bridge.matrix.register_user(user_id.localpart()).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(user = %user_id, %error, "could not register a queried ghost");
                false
            }
        }
    }
}

impl Bridge {
    /// The portal bridged to `room`, waiting out a database outage for the
    /// outage patience: an event must not be dropped because the database
    /// restarted as it came.
    async fn portal_of_room(&self, room: &str) -> Result<Option<PortalRow>, StoreError> {
        let backoff = crate::retry::Backoff {
            first: std::time::Duration::from_millis(200),
            max: std::time::Duration::from_secs(5),
            patience: self.config.outage_patience(),
        };
        crate::retry::retry(
            "portal lookup",
            backoff,
            StoreError::is_transient,
            || async { self.store.portals().get_by_room(room).await },
        )
        .await
    }

    async fn handle_matrix_event(
        self: &Arc<Self>,
        event: RoomEvent,
        delivery: Delivery,
        handled: Handled,
    ) {
        if self.config.is_bridge_user(event.sender.as_str()) {
            return;
        }
        match event.event_type.as_str() {
            "m.room.member" => self.handle_membership(event).await,
            // Room changes matter in portals only; elsewhere, having no
            // body, they are no command either.
            "m.room.name"
            | "m.room.topic"
            | "m.room.pinned_events"
            | "m.room.message"
            | "m.room.redaction"
            | "m.reaction"
            | "m.sticker"
            | convert::POLL_RESPONSE => self.handle_room_message(event, delivery, handled).await,
            _ => {}
        }
    }

    /// Typing and receipts in portal rooms go to that portal's queue, after
    /// the messages they refer to.
    async fn handle_matrix_ephemeral(self: &Arc<Self>, event: EphemeralEvent) {
        if !matches!(event.event_type.as_str(), "m.typing" | "m.receipt") {
            return;
        }
        let Some(room) = event.room_id.as_ref() else {
            return;
        };
        match self.portal_of_room(room.as_str()).await {
            Ok(Some(portal)) => {
                let key = PortalKey {
                    chat_id: portal.chat_id,
                    receiver: portal.receiver,
                };
                self.enqueue(key, PortalEvent::MatrixEphemeral(Box::new(event)))
                    .await;
            }
            Ok(None) => {}
            Err(error) => tracing::error!(room = %room, %error, "portal lookup failed"),
        }
    }

    async fn handle_membership(self: &Arc<Self>, event: RoomEvent) {
        let invited_bot = event.state_key.as_deref() == Some(self.bot.as_str())
            && event.content.get("membership").and_then(|m| m.as_str()) == Some("invite");
        if invited_bot {
            commands::on_bot_invited(self, &event).await;
            return;
        }
        let invited_ghost = event
            .state_key
            .as_deref()
            .and_then(|invitee| Some((invitee, self.config.max_user_id_from_ghost(invitee)?)));
        let Some((ghost, max_user_id)) = invited_ghost else {
            return;
        };
        let Ok(ghost) = ruma::OwnedUserId::try_from(ghost) else {
            return;
        };
        // A group portal's user adding or removing a member.
        match self.on_portal_membership(&event, &ghost, max_user_id).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(room = %event.room_id, %ghost, %error, "member change not bridged");
                return;
            }
        }
        if event.content.get("membership").and_then(|m| m.as_str()) == Some("invite") {
            commands::on_ghost_invited(self, &event, &ghost, max_user_id).await;
        }
    }

    async fn handle_room_message(
        self: &Arc<Self>,
        event: RoomEvent,
        delivery: Delivery,
        handled: Handled,
    ) {
        let portal = match self.portal_of_room(event.room_id.as_str()).await {
            Ok(portal) => portal,
            Err(error) => {
                // The database was out for longer than the bridge waits:
                // the event stays in the inbox for the next start rather
                // than being dropped.
                tracing::error!(room = %event.room_id, event = %event.event_id, %error, "portal lookup failed; the event is handled again after a restart");
                self.bot_notice(
                    &event.room_id,
                    &format!("⚠️ Your message could not be bridged to MAX yet (the bridge's database is unavailable); it will be after the bridge restarts: {error}"),
                )
                .await;
                handled.keep_pending();
                return;
            }
        };
        if let Some(portal) = portal {
            // A command with the prefix is for the bot, never for MAX.
            if commands::has_prefix(&self.config, &event) {
                commands::on_room_message(self, &event).await;
                return;
            }
            let key = PortalKey {
                chat_id: portal.chat_id,
                receiver: portal.receiver,
            };
            // The room's next event comes once the portal has handled this
            // one, so that the MAX echoes of its sends, which the portal's
            // queue takes meanwhile, stay beside it; it is done (for the
            // inbox) once what it became is recorded too.
            let (returned, finished) = tokio::sync::oneshot::channel();
            let handled = Arc::new(handled);
            self.enqueue(
                key,
                PortalEvent::Matrix(Box::new(event), delivery, handled, returned),
            )
            .await;
            let _ = finished.await;
            return;
        }
        commands::on_room_message(self, &event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::render_markdown;

    #[test]
    fn the_bots_markdown_is_rendered_and_quoted_html_stays_text() {
        assert_eq!(
            render_markdown("Send `login` to connect.").as_deref(),
            Some("<p>Send <code>login</code> to connect.</p>")
        );
        assert_eq!(
            render_markdown("Room: [Boris](https://matrix.to/#/!r:hs)\nnext line").as_deref(),
            Some("<p>Room: <a href=\"https://matrix.to/#/!r:hs\">Boris</a><br />\nnext line</p>")
        );
        // A MAX name with HTML in a message that has formatting: shown, not run.
        assert_eq!(
            render_markdown("`ping` «<img src=x onerror=alert(1)>»").as_deref(),
            Some("<p><code>ping</code> «&lt;img src=x onerror=alert(1)&gt;»</p>")
        );
        assert_eq!(
            render_markdown("`x` [click](javascript:alert(1))").as_deref(),
            Some("<p><code>x</code> click</p>")
        );
        assert_eq!(render_markdown("Logged out of MAX."), None);
        assert_eq!(
            render_markdown("a <b>bold</b> claim"),
            None,
            "HTML alone is no formatting"
        );
    }
}
