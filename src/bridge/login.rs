//! One running MAX session per logged-in Matrix user: starting it from a
//! token, pumping its pushes into the portal queues, persisting replacement
//! tokens and telling the user when the connection drops, comes back or is
//! logged out.

use super::Bridge;
use super::portal::{PortalEvent, PortalKey};
use crate::config::Config;
use crate::store::LoginRow;
use maxproto::Token;
use maxproto::client::{
    Client, ClientConfig, ClientError, ClientEvent, ClientEvents, ConnectionState,
};
use maxproto::types::{Chat, NotifReactionsChanged, NotifYouReacted, Push, User};
use ruma::OwnedUserId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// Resuming a saved login at start: attempts and backoff (about ten
/// minutes in all before giving up).
const RESUME_ATTEMPTS: u32 = 10;
const RESUME_FIRST_DELAY: std::time::Duration = std::time::Duration::from_secs(2);
const RESUME_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(120);

const OWN_EDITS_KEPT: usize = 256;
/// Chats asked for per CHATS_LIST (53) page (MAX's most).
const CHATS_PAGE: i64 = 100;
/// Pages of the chat list read at most (10,000 chats).
const CHATS_PAGES: usize = 100;

/// Login states kept in the `logins.state` column.
pub const STATE_CONNECTED: &str = "connected";
pub const STATE_LOGGED_OUT: &str = "logged_out";

/// A logged-in MAX account of one Matrix user.
pub struct LoginSession {
    pub mxid: OwnedUserId,
    pub max_user_id: i64,
    pub name: String,
    pub client: Client,
    /// Contacts seen in LOGIN and CONTACT_INFO answers, for ghost names.
    contacts: Mutex<HashMap<i64, User>>,
    /// Edits this bridge made (message id, edit time), so that MAX's notice
    /// of them is not bridged back. Bounded: echoes come within seconds.
    own_edits: Mutex<VecDeque<(i64, i64)>>,
    /// Uploads MAX has finished processing (136), and who waits for which.
    uploads: Mutex<Uploads>,
    /// The push pump and the state watcher.
    tasks: Mutex<JoinSet<()>>,
}

/// Upload readiness: 136 can come before anyone waits for it, so ready ids
/// are remembered (the latest few).
#[derive(Default)]
struct Uploads {
    ready: VecDeque<i64>,
    waiting: HashMap<i64, Vec<tokio::sync::oneshot::Sender<()>>>,
}

const READY_UPLOADS_KEPT: usize = 256;

impl std::fmt::Debug for LoginSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginSession")
            .field("mxid", &self.mxid)
            .field("max_user_id", &self.max_user_id)
            .finish_non_exhaustive()
    }
}

impl LoginSession {
    pub fn contact(&self, user_id: i64) -> Option<User> {
        self.lock_contacts().get(&user_id).cloned()
    }

    /// Known contacts whose name holds `query` (case-insensitive), by name.
    pub fn contacts_named(&self, query: &str) -> Vec<User> {
        let query = query.to_lowercase();
        let mut found: Vec<(String, User)> = self
            .lock_contacts()
            .values()
            .filter_map(|user| Some((user.display_name()?, user)))
            .filter(|(name, _)| name.to_lowercase().contains(&query))
            .map(|(name, user)| (name, user.clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.into_iter().map(|(_, user)| user).collect()
    }

    pub fn remember_contacts(&self, users: impl IntoIterator<Item = User>) {
        let mut contacts = self.lock_contacts();
        for user in users {
            contacts.insert(user.id.0, user);
        }
    }

    /// MAX announced (136) that an uploaded file or video is processed.
    pub fn upload_ready(&self, id: i64) {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if uploads.ready.len() >= READY_UPLOADS_KEPT {
            uploads.ready.pop_front();
        }
        uploads.ready.push_back(id);
        for waiter in uploads.waiting.remove(&id).unwrap_or_default() {
            let _ = waiter.send(());
        }
    }

    /// Waits for [`Self::upload_ready`] of `id` (or finds it happened).
    pub async fn wait_attach_ready(
        &self,
        id: i64,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let waiter = {
            let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            if uploads.ready.contains(&id) {
                return Ok(());
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            uploads.waiting.entry(id).or_default().push(tx);
            rx
        };
        match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                // Forget our waiter so the map does not keep it.
                let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(waiters) = uploads.waiting.get_mut(&id) {
                    waiters.retain(|w| !w.is_closed());
                    if waiters.is_empty() {
                        uploads.waiting.remove(&id);
                    }
                }
                Err("MAX did not finish processing the upload in time".to_owned())
            }
        }
    }

    pub fn remember_own_edit(&self, message_id: i64, edit_time: i64) {
        let mut edits = self.own_edits.lock().unwrap_or_else(|e| e.into_inner());
        if edits.len() >= OWN_EDITS_KEPT {
            edits.pop_front();
        }
        edits.push_back((message_id, edit_time));
    }

    pub fn is_own_edit(&self, message_id: i64, edit_time: i64) -> bool {
        self.own_edits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(message_id, edit_time))
    }

    fn lock_contacts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, User>> {
        self.contacts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the session's tasks and closes its connection.
    pub async fn stop(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
        self.client.close().await;
    }

    pub fn portal_key(&self, chat_id: i64) -> PortalKey {
        PortalKey {
            chat_id,
            receiver: self.max_user_id,
        }
    }
}

/// The MAX client configuration of the bridge, for one login's device.
pub fn client_config(config: &Config, device_id: &str) -> ClientConfig {
    let mut client = ClientConfig::web(device_id).with_wire_format(config.max.wire_format);
    // The default endpoint is the JSON one; with binary frames and no
    // endpoint of its own, the client's binary default applies.
    let binary_on_default_endpoint = config.max.wire_format == maxproto::WireFormat::Binary
        && config.max.endpoint.as_str() == maxproto::client::JSON_ENDPOINT;
    if !binary_on_default_endpoint {
        client.endpoint = config.max.endpoint.to_string();
    }
    client.origin = config.max.origin.clone();
    client.user_agent = config.max.user_agent.clone();
    let ua = &mut client.session_init.user_agent;
    let device = &config.max.device;
    ua.device_type = device.device_type.clone();
    ua.locale = device.locale.clone();
    ua.device_locale = device.device_locale.clone();
    ua.os_version = device.os_version.clone();
    ua.device_name = device.device_name.clone();
    ua.header_user_agent = config.max.user_agent.clone();
    ua.app_version = device.app_version.clone();
    ua.screen = device.screen.clone();
    ua.timezone = device.timezone.clone();
    client.frame_limits = maxproto::codec::limits::FrameLimits {
        max_depth: config.max.frame_max_depth,
        max_values: config.max.frame_max_values,
    };
    client
}

impl Bridge {
    /// Logs in to MAX with a stored or fresh token and starts bridging for
    /// `mxid`. Saves the login, replaces a running session of that user, and
    /// creates portals for the account's chats.
    pub(crate) async fn start_login(
        self: &Arc<Self>,
        mxid: OwnedUserId,
        token: Token,
        device_id: String,
    ) -> Result<Arc<LoginSession>, ClientError> {
        let config = client_config(&self.config, &device_id);
        let (client, events, login) = Client::login(config, token.clone()).await?;
        let me = login.me().0;
        let name = login
            .profile
            .contact
            .display_name()
            .unwrap_or_else(|| me.to_string());
        let token = client.current_token().unwrap_or(token);
        let row = LoginRow {
            mxid: mxid.to_string(),
            max_user_id: me,
            token,
            device_id,
            state: STATE_CONNECTED.to_owned(),
            display_name: Some(name.clone()),
            phone: login.profile.contact.phone.as_ref().map(|p| p.digits()),
        };
        if let Err(error) = self.store.logins().upsert(&row).await {
            client.close().await;
            return Err(ClientError::UnexpectedAnswer {
                opcode: maxproto::Opcode::LOGIN,
                detail: format!("could not save the login: {error}"),
            });
        }
        let session = Arc::new(LoginSession {
            mxid: mxid.clone(),
            max_user_id: me,
            name,
            client,
            contacts: Mutex::new(HashMap::new()),
            own_edits: Mutex::new(VecDeque::new()),
            uploads: Mutex::new(Uploads::default()),
            tasks: Mutex::new(JoinSet::new()),
        });
        session.remember_contacts(login.contacts.iter().cloned());
        session.remember_contacts([login.profile.contact.clone()]);
        if let Some(previous) = self.set_login(Arc::clone(&session)) {
            previous.stop().await;
        }
        {
            let mut tasks = session.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.spawn(Arc::clone(self).pump(Arc::clone(&session), events));
            tasks.spawn(Arc::clone(self).watch_state(Arc::clone(&session)));
        }
        // Before the portals, which go into it; made once, with the
        // portals there are already.
        self.personal_space(&mxid, me).await;
        self.sync_chats(&session, &login.chats).await;
        self.sync_more_chats(&session, &login.chats, login.chat_marker);
        tracing::info!(user = %mxid, max_user = me, "MAX login running");
        Ok(session)
    }

    /// Queues portal creation (or update) for every chat of a LOGIN answer,
    /// then a catch-up of each from MAX history, so that messages that came
    /// while the bridge was away or disconnected are bridged, in order. The
    /// LOGIN answer's own recent messages are not relied on: the service may
    /// send none.
    pub(crate) async fn sync_chats(self: &Arc<Self>, session: &Arc<LoginSession>, chats: &[Chat]) {
        for chat in chats {
            // Saved messages get their room once they hold something.
            if chat.is_saved_messages()
                && (!self.config.bridge.saved_messages || chat.last_message.is_none())
            {
                continue;
            }
            let key = session.portal_key(chat.id.0);
            self.enqueue(
                key,
                PortalEvent::Chat {
                    session: Arc::clone(session),
                    chat: Box::new(chat.clone()),
                    create: true,
                },
            )
            .await;
            self.enqueue(
                key,
                PortalEvent::CatchUp {
                    session: Arc::clone(session),
                    chat: Box::new(chat.clone()),
                },
            )
            .await;
        }
    }

    /// The chats past the LOGIN answer's first page (it holds the 40 most
    /// recent), read with CHATS_LIST from `marker` on and synced as the
    /// first page was, so every chat of a big account gets its portal and
    /// its catch-up. In a task of the session's own: the pump must not wait
    /// for answers, whose reading may wait for the pump.
    pub(crate) fn sync_more_chats(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        first_page: &[Chat],
        marker: Option<i64>,
    ) {
        // 0 (or none) says there is no more.
        let Some(marker) = marker.filter(|m| *m > 0) else {
            return;
        };
        let seen = first_page.iter().map(|c| c.id.0).collect();
        let bridge = Arc::clone(self);
        let paging = Arc::clone(session);
        session
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(async move {
                // A failure is logged where it happens; the next
                // reconnection or `sync` reads the list again.
                // The page ends at a time other chats may share.
                let _ = bridge
                    .sync_chats_from(&paging, marker.saturating_add(1), seen)
                    .await;
            });
    }

    /// Syncs the chat list from `marker` (a time: chats whose last event is
    /// older) to its end, but for the chats in `seen`; how many chats it
    /// found. A page ends at a time that other chats may share, and the
    /// next page starts strictly before it: so each next page is asked
    /// from just after that time, and what was seen already is left out.
    pub(crate) async fn sync_chats_from(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        mut marker: i64,
        mut seen: std::collections::HashSet<i64>,
    ) -> Result<usize, maxproto::client::ClientError> {
        let mut found = 0;
        for _ in 0..CHATS_PAGES {
            let request = maxproto::types::ChatsListRequest {
                marker,
                count: Some(CHATS_PAGE),
                ..Default::default()
            };
            let page = match session.client.call(&request).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(user = %session.mxid, marker, %error, "could not read the rest of the chat list");
                    return Err(error);
                }
            };
            let new: Vec<Chat> = page
                .chats
                .into_iter()
                .filter(|c| seen.insert(c.id.0))
                .collect();
            found += new.iter().filter(|c| !c.is_saved_messages()).count();
            self.sync_chats(session, &new).await;
            match page.marker {
                // A page with nothing new would come again and again.
                Some(next) if next > 0 && !new.is_empty() => marker = next.saturating_add(1),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn pump(self: Arc<Self>, session: Arc<LoginSession>, mut events: ClientEvents) {
        while let Some(event) = events.recv().await {
            match event {
                ClientEvent::Push(push) => match Push::parse(push.opcode, push.payload) {
                    Ok(push) => self.on_push(&session, push).await,
                    Err(error) => {
                        tracing::warn!(user = %session.mxid, %error, "MAX push does not fit its type; skipped")
                    }
                },
                ClientEvent::TokenReplaced(token) => {
                    match self
                        .store
                        .logins()
                        .set_token(session.mxid.as_str(), &token)
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(user = %session.mxid, "stored the replacement MAX token")
                        }
                        Err(error) => {
                            tracing::error!(user = %session.mxid, %error, "could not store the replacement MAX token")
                        }
                    }
                }
                ClientEvent::Reconnected(login) => {
                    self.metrics.reconnected();
                    session.remember_contacts(login.contacts.iter().cloned());
                    self.sync_chats(&session, &login.chats).await;
                    self.sync_more_chats(&session, &login.chats, login.chat_marker);
                }
            }
        }
    }

    async fn on_push(self: &Arc<Self>, session: &Arc<LoginSession>, push: Push) {
        match push {
            Push::Message(notif) => {
                let key = session.portal_key(notif.chat_id.0);
                if notif.chat_id.0 == 0 && !self.config.bridge.saved_messages {
                    return;
                }
                self.enqueue(
                    key,
                    PortalEvent::MaxMessage {
                        session: Arc::clone(session),
                        message: Box::new(notif.message),
                        prev: notif.prev_message_id.map(|id| id.0),
                    },
                )
                .await;
            }
            Push::Chat(notif) => {
                let chat: Chat = notif.chat;
                if chat.is_saved_messages() && !self.config.bridge.saved_messages {
                    return;
                }
                let key = session.portal_key(chat.id.0);
                // In groups reaction changes may come only as a chat update.
                let reacted = chat.last_reacted_message_id;
                self.enqueue(
                    key,
                    PortalEvent::Chat {
                        session: Arc::clone(session),
                        chat: Box::new(chat),
                        create: false,
                    },
                )
                .await;
                if let Some(message) = reacted {
                    self.enqueue_reactions(session, key, message.0).await;
                }
            }
            // Others' reactions (155) and the user's own from another device
            // (156) both mean: read the message's reactions again.
            Push::ReactionsChanged(NotifReactionsChanged {
                chat_id,
                message_id,
                ..
            })
            | Push::YouReacted(NotifYouReacted {
                chat_id,
                message_id,
                ..
            }) => {
                let key = session.portal_key(chat_id.0);
                self.enqueue_reactions(session, key, message_id.0).await;
            }
            Push::Presence(notif) if notif.user_id.0 != session.max_user_id => {
                // Off the pump (a slow homeserver must not hold messages
                // back), in order; dropped when far behind.
                if let Some(changes) = &self.presence {
                    let change = (notif.user_id.0, notif.presence.is_online());
                    if changes.try_send(change).is_err() {
                        tracing::debug!(
                            user = notif.user_id.0,
                            "presence change dropped: backlog full"
                        );
                    }
                }
            }
            Push::Typing(notif) if notif.user_id.0 != session.max_user_id => {
                self.enqueue(
                    session.portal_key(notif.chat_id.0),
                    PortalEvent::MaxTyping {
                        session: Arc::clone(session),
                        user: notif.user_id.0,
                    },
                )
                .await;
            }
            // The user's own read marks (other devices) need their Matrix
            // account to post receipts (double puppeting).
            Push::Mark(notif)
                if notif.user_id.0 != session.max_user_id || self.puppets(&session.mxid) =>
            {
                self.enqueue(
                    session.portal_key(notif.chat_id.0),
                    PortalEvent::MaxRead {
                        session: Arc::clone(session),
                        user: notif.user_id.0,
                        mark: notif.mark,
                    },
                )
                .await;
            }
            // The binary transports announce deletions as 142 instead of a
            // 128 with status REMOVED.
            Push::MsgDelete(notif) => {
                if let Some(chat) = notif.chat_id() {
                    self.enqueue(
                        session.portal_key(chat.0),
                        PortalEvent::MaxDeleted {
                            message_ids: notif.message_ids.iter().map(|id| id.0).collect(),
                        },
                    )
                    .await;
                }
            }
            Push::Attach(notif) => {
                for id in [notif.file_id, notif.video_id].into_iter().flatten() {
                    session.upload_ready(id);
                }
            }
            Push::Contact(notif) => {
                if let Some(contact) = notif.contact {
                    session.remember_contacts([contact]);
                }
            }
            other => {
                tracing::trace!(user = %session.mxid, push = ?std::mem::discriminant(&other), "push not bridged")
            }
        }
    }

    async fn enqueue_reactions(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message_id: i64,
    ) {
        self.enqueue(
            key,
            PortalEvent::MaxReactions {
                session: Arc::clone(session),
                message_id,
            },
        )
        .await;
    }

    /// Follows a login's connection: reports each change of state to the
    /// status endpoint and tells the user (as `bridge.status_notices` says)
    /// about a drop (once, not per attempt), the recovery, and a
    /// server-side logout.
    async fn watch_state(self: Arc<Self>, session: Arc<LoginSession>) {
        use crate::config::StatusNotices;
        let notices = self.config.bridge.status_notices;
        let mut state = session.client.state();
        let mut reported_drop = false;
        let mut reported = None;
        loop {
            let current = state.borrow_and_update().clone();
            let (event, error) = bridge_state_of(&current);
            // Once per change of state, not per reconnection attempt.
            if reported != Some(event) {
                reported = Some(event);
                self.report_state(&session, event, error);
            }
            let tell = notices != StatusNotices::None;
            match current {
                ConnectionState::Reconnecting { last_error, .. } if !reported_drop => {
                    reported_drop = true;
                    tracing::warn!(user = %session.mxid, error = %last_error, "MAX connection lost");
                    if tell {
                        self.tell_user(
                            &session.mxid,
                            &format!("⚠️ Lost the connection to MAX ({last_error}). Reconnecting…"),
                        )
                        .await;
                    }
                }
                ConnectionState::Connected if reported_drop => {
                    reported_drop = false;
                    tracing::info!(user = %session.mxid, "MAX connection restored");
                    if tell {
                        self.tell_user(&session.mxid, "✅ Reconnected to MAX.")
                            .await;
                    }
                }
                ConnectionState::Connected if notices == StatusNotices::All => {
                    self.tell_user(
                        &session.mxid,
                        &format!("✅ Connected to MAX as {}.", session.name),
                    )
                    .await;
                }
                ConnectionState::LoggedOut { reason } => {
                    tracing::warn!(user = %session.mxid, %reason, "MAX logged the account out");
                    self.forget_login(&session);
                    if let Err(error) = self
                        .store
                        .logins()
                        .set_state(session.mxid.as_str(), STATE_LOGGED_OUT)
                        .await
                    {
                        tracing::error!(user = %session.mxid, %error, "could not record the logout");
                    }
                    if tell {
                        self.tell_user(
                            &session.mxid,
                            &format!(
                                "❌ MAX logged you out: {reason}. Send `login` to log in again."
                            ),
                        )
                        .await;
                    }
                    return;
                }
                ConnectionState::Closed => return,
                _ => {}
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Restarts the logins saved in the database (at bridge start).
    pub async fn resume_logins(self: &Arc<Self>) {
        let logins = match self.store.logins().all().await {
            Ok(logins) => logins,
            Err(error) => {
                tracing::error!(%error, "could not read the saved logins");
                self.mark_started();
                return;
            }
        };
        for login in logins {
            if login.state == STATE_LOGGED_OUT {
                continue;
            }
            let Ok(mxid) = OwnedUserId::try_from(login.mxid.as_str()) else {
                tracing::warn!(user = %login.mxid, "saved login has an invalid user id");
                continue;
            };
            self.set_resuming(&mxid, true);
            self.spawn_task(Arc::clone(self).resume_login(mxid, login.token, login.device_id));
        }
        self.mark_started();
    }

    /// Resumes one saved login. A refused token ends it (the user must log
    /// in again); anything else (MAX unreachable, rate limits) is retried
    /// with backoff for a while, telling the user once.
    async fn resume_login(self: Arc<Self>, mxid: OwnedUserId, token: Token, device_id: String) {
        self.try_resume_login(&mxid, token, device_id).await;
        self.set_resuming(&mxid, false);
    }

    async fn try_resume_login(
        self: &Arc<Self>,
        mxid: &OwnedUserId,
        token: Token,
        device_id: String,
    ) {
        let mxid = mxid.clone();
        let mut delay = RESUME_FIRST_DELAY;
        for attempt in 1..=RESUME_ATTEMPTS {
            let error = match self
                .start_login(mxid.clone(), token.clone(), device_id.clone())
                .await
            {
                Ok(_) => {
                    if attempt > 1 {
                        self.tell_user(&mxid, "✅ Reconnected to MAX.").await;
                    }
                    return;
                }
                Err(error) => error,
            };
            tracing::warn!(user = %mxid, attempt, %error, "could not resume the MAX login");
            if error.is_token_rejected() {
                if let Err(error) = self
                    .store
                    .logins()
                    .set_state(mxid.as_str(), STATE_LOGGED_OUT)
                    .await
                {
                    tracing::error!(user = %mxid, %error, "could not record the logout");
                }
                let reason = super::commands::describe(&error);
                self.tell_user(
                    &mxid,
                    &format!("❌ MAX no longer accepts your login ({reason}). Send `login` to log in again."),
                )
                .await;
                return;
            }
            if attempt == 1 {
                let reason = super::commands::describe(&error);
                self.tell_user(
                    &mxid,
                    &format!("⚠️ Could not reconnect to MAX ({reason}). Retrying…"),
                )
                .await;
            }
            if attempt < RESUME_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RESUME_MAX_DELAY);
            }
        }
        tracing::error!(user = %mxid, "gave up resuming the MAX login");
        self.tell_user(
            &mxid,
            "❌ Could not reconnect to MAX after several attempts. Send `ping` to check, or `login` to log in again.",
        )
        .await;
    }
}

/// A connection's state as the bridge state API names it, with an error
/// code and MAX's words for the error states.
pub(crate) fn bridge_state_of(
    state: &ConnectionState,
) -> (
    crate::matrix::bridge_state::StateEvent,
    Option<(&'static str, String)>,
) {
    use crate::matrix::bridge_state::StateEvent;
    match state {
        ConnectionState::Connecting => (StateEvent::Connecting, None),
        ConnectionState::Connected => (StateEvent::Connected, None),
        ConnectionState::Reconnecting { last_error, .. } => (
            StateEvent::TransientDisconnect,
            Some(("max-disconnected", last_error.clone())),
        ),
        ConnectionState::LoggedOut { reason } => (
            StateEvent::BadCredentials,
            Some(("max-logged-out", reason.clone())),
        ),
        ConnectionState::Closed => (StateEvent::LoggedOut, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: &str) -> Config {
        let yaml = format!(
            "homeserver: {{address: 'http://127.0.0.1:8008', domain: example.org}}\n\
             appservice: {{address: 'http://127.0.0.1:29340'}}\n\
             database: {{url: 'postgres://u@127.0.0.1/db'}}\n\
             max: {max}\n"
        );
        Config::parse(&yaml, "test.yaml").expect("test config parses")
    }

    #[test]
    fn client_config_follows_the_bridge_config() {
        let json = client_config(&config("{}"), "dev-1");
        assert_eq!(json.endpoint, maxproto::client::JSON_ENDPOINT);
        assert_eq!(json.wire_format, maxproto::WireFormat::Json);
        assert_eq!(json.session_init.device_id, "dev-1");
        let binary = client_config(&config("{wire_format: binary}"), "dev-1");
        assert_eq!(binary.endpoint, maxproto::client::BINARY_ENDPOINT);
        let custom = client_config(
            &config(
                "{wire_format: binary, endpoint: 'ws://127.0.0.1:1/websocket', device: {app_version: '1.2.3'}}",
            ),
            "dev-1",
        );
        assert_eq!(custom.endpoint, "ws://127.0.0.1:1/websocket");
        assert_eq!(custom.wire_format, maxproto::WireFormat::Binary);
        assert_eq!(custom.session_init.user_agent.app_version, "1.2.3");
    }
}
