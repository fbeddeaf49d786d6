//! Portals: one Matrix room per MAX chat and receiving login — creating,
//! refreshing and joining them — and the portal's ordered queue. Everything
//! that touches a portal (MAX pushes, Matrix events, catch-up after a
//! reconnect) goes through that queue, so a portal is created once and its
//! messages keep their order; portals proceed concurrently. The work itself
//! is in [`super::message`], [`super::reaction`] and [`super::activity`].

use super::Bridge;
use super::login::LoginSession;
use crate::matrix::{
    CreateRoomOptions, EphemeralEvent, Handled, MatrixError, RoomEvent, RoomPreset,
};
use crate::store::{PortalKind, PortalMark, PortalRow};
use maxproto::types::{Chat, ChatRole, ChatType, Message};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// Ghosts invited when a group portal is created; bigger chats get the
/// rest as they speak.
pub(crate) const MAX_INITIAL_MEMBERS: usize = 200;
/// The name of the room of MAX's Saved messages.
const SAVED_MESSAGES: &str = "Saved messages";

/// A portal's identity: the MAX chat and the MAX account that sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortalKey {
    pub chat_id: i64,
    pub receiver: i64,
}

/// Work for a portal's queue.
pub enum PortalEvent {
    /// A chat from LOGIN or a 135 push: create the portal (when `create`
    /// or when it has messages coming) or refresh its name.
    Chat {
        session: Arc<LoginSession>,
        chat: Box<Chat>,
        create: bool,
    },
    /// A chat as a (re)connection found it: bridge from MAX history what
    /// came after the portal's mark.
    CatchUp {
        session: Arc<LoginSession>,
        chat: Box<Chat>,
    },
    /// A new (or edited, or removed) MAX message; `prev` is the chat's
    /// message before it, as the push says, to notice a gap.
    MaxMessage {
        session: Arc<LoginSession>,
        message: Box<Message>,
        prev: Option<i64>,
    },
    /// MAX messages deleted (142).
    MaxDeleted { message_ids: Vec<i64> },
    /// The reactions on a MAX message changed.
    MaxReactions {
        session: Arc<LoginSession>,
        message_id: i64,
    },
    /// A MAX user is typing in the chat.
    MaxTyping {
        session: Arc<LoginSession>,
        user: i64,
    },
    /// A MAX user read the chat up to `mark` (ms).
    MaxRead {
        session: Arc<LoginSession>,
        user: i64,
        mark: i64,
    },
    /// An event in the portal's Matrix room. The sender is dropped (which
    /// completes its receiver) once the portal has handled it; it is done
    /// for the inbox once the last holder of its [`Handled`] (the portal,
    /// then the record of what it became) lets go.
    Matrix(
        Box<RoomEvent>,
        crate::matrix::Delivery,
        Arc<Handled>,
        tokio::sync::oneshot::Sender<()>,
    ),
    /// Typing or a read receipt in the portal's Matrix room.
    MatrixEphemeral(Box<EphemeralEvent>),
    /// The login's user asked for the dialog with `contact` (`start-chat`):
    /// create its portal if there is none, invite the user, and answer with
    /// the room.
    OpenDialog {
        session: Arc<LoginSession>,
        contact: Box<maxproto::types::User>,
        opened: tokio::sync::oneshot::Sender<Result<OwnedRoomId, String>>,
    },
    /// Remove everyone from the portal's room and forget the portal (the
    /// chat's next message makes a new room); answer when done.
    Delete {
        /// The Matrix user whose portal it is (for their space).
        owner: OwnedUserId,
        deleted: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Ghost(#[from] super::ghost::GhostError),
    #[error("MAX: {0}")]
    Max(#[from] maxproto::client::ClientError),
    #[error("stored room id {0:?} is invalid")]
    BadRoomId(String),
}

impl PortalError {
    /// Whether the same work may succeed later: the homeserver, the
    /// database or the MAX connection is down for a while.
    pub fn is_transient(&self) -> bool {
        use maxproto::client::ClientError;
        match self {
            PortalError::Matrix(e) => e.is_transient(),
            PortalError::Store(e) => e.is_transient(),
            PortalError::Ghost(super::ghost::GhostError::Matrix(e)) => e.is_transient(),
            PortalError::Ghost(super::ghost::GhostError::Store(e)) => e.is_transient(),
            PortalError::Ghost(_) => false,
            PortalError::Max(e) => matches!(
                e,
                ClientError::Timeout | ClientError::Disconnected | ClientError::WebSocket(_)
            ),
            PortalError::BadRoomId(_) => false,
        }
    }
}

/// Backoff of a portal retrying through an outage.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl Bridge {
    /// Handles one item of a portal's queue. Work that fails because
    /// something is down (homeserver, database, MAX) is retried with
    /// backoff, holding the portal so order is kept, for up to the outage
    /// patience; every step is idempotent (deterministic Matrix transaction
    /// ids, cids derived from event ids, mappings checked first).
    pub(crate) async fn handle_portal_event(self: Arc<Self>, key: PortalKey, event: PortalEvent) {
        if let PortalEvent::OpenDialog {
            session,
            contact,
            opened,
        } = event
        {
            self.settle_record(key).await;
            let room = Box::pin(self.open_dialog(&session, &contact)).await; // cold: boxed
            let _ = opened.send(room.map_err(|error| error.to_string()));
            return;
        }
        if let PortalEvent::Delete { owner, deleted } = event {
            self.settle_record(key).await;
            let _ = deleted.send(self.delete_portal_now(key, &owner).await);
            return;
        }
        let started = tokio::time::Instant::now();
        let patience = self.config.outage_patience();
        let mut delays = crate::retry::Backoff {
            first: RETRY_FIRST,
            max: RETRY_MAX,
            patience,
        }
        .delays();
        let mut held = None;
        let mut first = true;
        loop {
            let result = self.handle_portal_event_once(key, &event, first).await;
            first = false;
            let error = match result {
                Ok(()) => return,
                Err(error) => error,
            };
            let delay = delays.next().unwrap_or(RETRY_MAX);
            if error.is_transient() && started.elapsed() + delay < patience {
                if held.is_none() {
                    tracing::warn!(chat = key.chat_id, receiver = key.receiver, %error, "portal waits for an outage to end");
                    held = Some(self.waiting_for_homeserver());
                }
                tokio::time::sleep(delay).await;
                continue;
            }
            tracing::error!(chat = key.chat_id, receiver = key.receiver, %error, "portal event failed");
            let direction = match &event {
                PortalEvent::Matrix(..) => crate::metrics::Direction::MatrixToMax,
                _ => crate::metrics::Direction::MaxToMatrix,
            };
            self.metrics.failed(direction, "gave_up");
            if let PortalEvent::MaxMessage {
                session, message, ..
            } = &event
            {
                // Never lose a message silently: the user hears of it.
                let preview: String = message.text.chars().take(80).collect();
                self.tell_user(
                    &session.mxid,
                    &format!(
                        "⚠️ A MAX message (chat {}, «{preview}») could not be bridged: {error}",
                        key.chat_id
                    ),
                )
                .await;
            }
            if let PortalEvent::Matrix(event, ..) = &event {
                self.bot_notice(
                    &event.room_id,
                    &format!("⚠️ Your message could not be bridged to MAX: {error}"),
                )
                .await;
            }
            return;
        }
    }

    async fn handle_portal_event_once(
        self: &Arc<Self>,
        key: PortalKey,
        event: &PortalEvent,
        first_attempt: bool,
    ) -> Result<(), PortalError> {
        // A new message may go on while the portal's last mappings are
        // written; the rest may read them.
        let beside_records = match event {
            PortalEvent::MaxMessage { .. } => true,
            PortalEvent::Matrix(event, delivery, ..) => {
                first_attempt
                    && *delivery == crate::matrix::Delivery::New
                    && event.event_type == "m.room.message"
                    && event.content.get("m.relates_to").is_none()
            }
            _ => false,
        };
        if !beside_records {
            self.settle_record(key).await;
        }
        match event {
            PortalEvent::Chat {
                session,
                chat,
                create,
            } => Box::pin(self.on_chat(session, chat, *create)).await,
            PortalEvent::CatchUp { session, chat } => Box::pin(self.catch_up(session, chat)).await,
            PortalEvent::OpenDialog { .. } | PortalEvent::Delete { .. } => {
                // Answered in `handle_portal_event`, which owns the reply.
                Ok(())
            }
            PortalEvent::MaxMessage {
                session,
                message,
                prev,
            } => self.on_max_push(session, key, message, *prev).await,
            PortalEvent::MaxDeleted { message_ids } => self.on_max_deleted(key, message_ids).await,
            PortalEvent::MaxReactions {
                session,
                message_id,
            } => self.sync_reactions(session, key, *message_id).await,
            PortalEvent::MaxTyping { session, user } => {
                self.on_max_typing(session, key, *user).await
            }
            PortalEvent::MaxRead {
                session,
                user,
                mark,
            } => self.on_max_read(session, key, *user, *mark).await,
            PortalEvent::Matrix(event, delivery, handled, _) => {
                // Only a retry or a resumed event can have been partly sent.
                let untouched = first_attempt && *delivery == crate::matrix::Delivery::New;
                self.on_matrix_message(key, event, untouched, handled).await
            }
            PortalEvent::MatrixEphemeral(event) => self.on_matrix_ephemeral(key, event).await,
        }
    }

    /// Deletes a portal in its turn (after what its queue holds before):
    /// everyone leaves its room (the bridge's users are kicked, ghosts and
    /// the bot leave) and the bridge forgets it and its mappings. The chat
    /// on MAX stays; its next message makes a new room.
    pub(crate) async fn delete_portal(&self, key: PortalKey, owner: &UserId) -> Result<(), String> {
        let (deleted, answer) = tokio::sync::oneshot::channel();
        let owner = owner.to_owned();
        self.enqueue(key, PortalEvent::Delete { owner, deleted })
            .await;
        answer
            .await
            .unwrap_or_else(|_| Err("the portal's queue stopped".to_owned()))
    }

    async fn delete_portal_now(&self, key: PortalKey, owner: &UserId) -> Result<(), String> {
        let portal = self
            .store
            .portals()
            .get(key.chat_id, key.receiver)
            .await
            .map_err(|e| e.to_string())?;
        // Forgotten first: whatever comes next makes a new room.
        self.store
            .portals()
            .delete(key.chat_id, key.receiver)
            .await
            .map_err(|e| e.to_string())?;
        let Some(room) = portal
            .and_then(|p| p.room_id)
            .and_then(|r| OwnedRoomId::try_from(r).ok())
        else {
            return Ok(());
        };
        let members = self
            .matrix
            .joined_members(&self.bot, &room)
            .await
            .map_err(|e| e.to_string())?;
        for member in members.keys().filter(|m| **m != self.bot) {
            let gone = if self.config.is_bridge_user(member.as_str()) {
                self.matrix.leave(member, &room).await
            } else {
                self.matrix
                    .kick(&self.bot, &room, member, "The portal was deleted")
                    .await
            };
            if let Err(error) = gone {
                tracing::warn!(room = %room, %member, %error, "could not remove a member of a deleted portal");
            }
        }
        self.remove_from_space(owner, &room).await;
        if let Err(error) = self.matrix.leave(&self.bot, &room).await {
            tracing::warn!(room = %room, %error, "the bot could not leave a deleted portal");
        }
        tracing::info!(chat = key.chat_id, receiver = key.receiver, room = %room, "portal deleted");
        Ok(())
    }

    /// Opens the dialog with `contact` through its portal's queue, as
    /// everything that touches a portal; the portal's room.
    pub(crate) async fn open_dialog_portal(
        &self,
        session: &Arc<LoginSession>,
        contact: maxproto::types::User,
    ) -> Result<OwnedRoomId, String> {
        let key = session.portal_key(session.max_user_id ^ contact.id.0);
        let (opened, answer) = tokio::sync::oneshot::channel();
        self.enqueue(
            key,
            PortalEvent::OpenDialog {
                session: Arc::clone(session),
                contact: Box::new(contact),
                opened,
            },
        )
        .await;
        answer
            .await
            .unwrap_or_else(|_| Err("the bridge is stopping".to_owned()))
    }

    /// The portal of the dialog with `contact`, created (with its history)
    /// if there is none; the user is invited to it either way (they may have
    /// left it).
    async fn open_dialog(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        contact: &maxproto::types::User,
    ) -> Result<OwnedRoomId, PortalError> {
        session.remember_contacts([contact.clone()]);
        let me = session.max_user_id;
        // A dialog's id is both users' ids XORed; MAX makes it with the first
        // message, so it may not exist yet.
        let chat_id = me ^ contact.id.0;
        let key = session.portal_key(chat_id);
        if let Some(room) = self.existing_room(key).await? {
            if let Err(error) = self
                .matrix
                .invite(&self.bot, &room, &session.mxid, true)
                .await
            {
                // Already in it, most likely.
                tracing::debug!(room = %room, %error, "invite to an opened dialog failed");
            }
            return Ok(room);
        }
        let chat = Chat {
            participants: Some(
                [(maxproto::types::UserId(me), 0), (contact.id, 0)]
                    .into_iter()
                    .collect(),
            ),
            ..Chat::new(maxproto::types::ChatId(chat_id), ChatType::Dialog)
        };
        let live = PortalMark {
            message_id: 0,
            time: super::now_ms(),
        };
        let start = self.history_start(session, chat_id, live).await;
        let (_, room) = self.create_portal(session, &chat, start).await?;
        self.backfill(session, key, start, live).await?;
        Ok(room)
    }

    async fn on_chat(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat: &Chat,
        create: bool,
    ) -> Result<(), PortalError> {
        let existing = self
            .store
            .portals()
            .get(chat.id.0, session.max_user_id)
            .await?;
        match existing {
            Some(portal) if portal.room_id.is_some() => {
                // A new connection (bridge restart, new login) has no
                // subscriptions yet; the client restores them on reconnects.
                if !session.client.subscriptions().contains(&chat.id)
                    && let Err(error) = session.client.subscribe(chat.id, true).await
                {
                    tracing::warn!(chat = chat.id.0, %error, "CHAT_SUBSCRIBE failed");
                }
                self.refresh_portal(session, portal, chat).await?;
            }
            _ if create && !self.wants_portal(session, chat.id.0, Some(chat)).await => {
                tracing::debug!(
                    chat = chat.id.0,
                    "no portal: bridge.portal_filter leaves it out"
                );
            }
            _ if create => {
                // A portal starts with the chat as it is now, and the
                // newest of what came before as its history.
                let live = chat.last_message.as_ref().map_or(
                    PortalMark {
                        message_id: 0,
                        time: super::now_ms(),
                    },
                    |last| PortalMark {
                        message_id: last.id.0,
                        time: last.time,
                    },
                );
                let start = self.history_start(session, chat.id.0, live).await;
                self.create_portal(session, chat, start).await?;
                self.backfill(session, session.portal_key(chat.id.0), start, live)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the chat gets a portal on its own (`bridge.portal_filter`);
    /// `chat` when the caller has it, else MAX is asked only if the filter
    /// tells groups from channels.
    pub(crate) async fn wants_portal(
        &self,
        session: &LoginSession,
        chat_id: i64,
        chat: Option<&Chat>,
    ) -> bool {
        use crate::config::ChatKind;
        let filter = &self.config.bridge.portal_filter;
        let kind_of = |chat: &Chat| match chat.kind() {
            ChatType::Dialog => ChatKind::Dialog,
            ChatType::Channel => ChatKind::Channel,
            _ => ChatKind::Group,
        };
        let kind = match chat {
            Some(chat) => kind_of(chat),
            // Positive ids are dialogs (a XOR b), 0 Saved messages; groups
            // and channels are negative.
            None if chat_id >= 0 => ChatKind::Dialog,
            None if filter.tells_groups_from_channels() => {
                kind_of(&self.fetch_chat(session, chat_id).await)
            }
            None => ChatKind::Group,
        };
        filter.allows(chat_id, kind)
    }

    /// The portal's room, creating it from the chat when needed, with
    /// catch-up starting at `start`.
    pub(crate) async fn portal_room(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat_id: i64,
        start: PortalMark,
    ) -> Result<(PortalRow, OwnedRoomId), PortalError> {
        if let Some(portal) = self
            .store
            .portals()
            .get(chat_id, session.max_user_id)
            .await?
            && let Some(room) = portal.room_id.clone()
        {
            let room =
                OwnedRoomId::try_from(room.as_str()).map_err(|_| PortalError::BadRoomId(room))?;
            return Ok((portal, room));
        }
        let chat = self.fetch_chat(session, chat_id).await;
        self.create_portal(session, &chat, start).await
    }

    async fn fetch_chat(&self, session: &LoginSession, chat_id: i64) -> Chat {
        let request = maxproto::types::ChatInfoRequest {
            chat_ids: vec![maxproto::types::ChatId(chat_id)],
            ..Default::default()
        };
        match session.client.call(&request).await {
            Ok(answer) => {
                if let Some(chat) = answer.chats.into_iter().find(|c| c.id.0 == chat_id) {
                    return chat;
                }
                tracing::warn!(chat = chat_id, "CHAT_INFO did not return the chat");
            }
            Err(error) => tracing::warn!(chat = chat_id, %error, "CHAT_INFO failed"),
        }
        // Positive ids are dialogs (a XOR b), 0 Saved messages (a dialog
        // with oneself); groups and channels are negative.
        let kind = if chat_id >= 0 {
            ChatType::Dialog
        } else {
            ChatType::Chat
        };
        Chat::new(maxproto::types::ChatId(chat_id), kind)
    }

    async fn create_portal(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat: &Chat,
        start: PortalMark,
    ) -> Result<(PortalRow, OwnedRoomId), PortalError> {
        // The semaphore is never closed.
        let _permit = self.portal_creations.acquire().await;
        // Boxed: creation is rare and its future large; every portal's
        // event handler would otherwise carry it while waiting.
        Box::pin(self.create_portal_now(session, chat, start)).await
    }

    async fn create_portal_now(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat: &Chat,
        start: PortalMark,
    ) -> Result<(PortalRow, OwnedRoomId), PortalError> {
        let me = session.max_user_id;
        let kind = match chat.kind() {
            ChatType::Dialog => PortalKind::Dialog,
            ChatType::Channel => PortalKind::Channel,
            _ => PortalKind::Chat,
        };
        let mut portal = PortalRow::new(chat.id.0, me, kind);
        let user: OwnedUserId = session.mxid.clone();
        let bridge_info = self.bridge_info(chat);
        let initial_state = vec![
            json!({"type": "m.bridge", "state_key": bridge_info.0, "content": bridge_info.1}),
            json!({"type": "uk.half-shot.bridge", "state_key": bridge_info.0, "content": bridge_info.1}),
            // Element leaves the bot out of room names and avatars.
            json!({"type": "io.element.functional_members", "state_key": "",
                   "content": {"service_members": [self.bot.as_str()]}}),
        ];
        // The room is recorded as soon as it exists, so that a failure in
        // the steps after it never leads to a second room for the chat.
        let room = if kind == PortalKind::Dialog {
            let other = chat
                .other_participant(maxproto::types::UserId(me))
                .map_or(chat.id.0 ^ me, |u| u.0);
            portal.other_user_id = Some(other);
            let ghost = self.ensure_ghost(session, other).await?;
            // Saved messages (chat 0): the user's notes, written by their
            // own account; named, since its only other member is them.
            let notes = chat.is_saved_messages().then(|| SAVED_MESSAGES.to_owned());
            portal.name = notes
                .clone()
                .or_else(|| session.contact(other).and_then(|c| c.display_name()));
            let options = CreateRoomOptions {
                name: notes,
                is_direct: true,
                invite: vec![self.bot.clone()],
                preset: Some(RoomPreset::PrivateChat),
                initial_state,
                ..Default::default()
            };
            let room = self.matrix.create_room(&ghost, options).await?;
            self.record_portal(&mut portal, &room, start).await?;
            self.mark_joined(&room, &ghost);
            self.matrix.join(&self.bot, &room).await?;
            self.mark_joined(&room, &self.bot);
            self.make_bot_admin(&ghost, &room).await?;
            self.matrix.invite(&ghost, &room, &user, true).await?;
            self.join_for(&user, &room).await;
            self.add_direct(&user, &ghost, &room).await;
            room
        } else {
            let name = chat
                .title
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| format!("MAX chat {}", chat.id.0));
            portal.name = Some(name.clone());
            portal.topic = chat.description.clone().filter(|d| !d.is_empty());
            let mut avatar = None;
            if let Some(url) = chat.base_icon_url.as_deref().filter(|u| !u.is_empty()) {
                avatar = self.mirror_avatar(url).await;
                if let Some(mxc) = &avatar {
                    portal.avatar_url = Some(url.to_owned());
                    portal.avatar_mxc = Some(mxc.to_string());
                }
            }
            let members: Vec<i64> = chat
                .participant_ids()
                .map(|u| u.0)
                .filter(|id| *id != me)
                .take(MAX_INITIAL_MEMBERS)
                .collect();
            self.prefetch_contacts(session, &members).await;
            let mut ghosts = Vec::with_capacity(members.len());
            for member in members {
                match self.ensure_ghost(session, member).await {
                    Ok(ghost) => ghosts.push(ghost),
                    Err(error) => tracing::warn!(member, %error, "ghost unavailable"),
                }
            }
            // The members are invited by the creation itself: one request
            // instead of one per member.
            let options = CreateRoomOptions {
                name: Some(name),
                topic: portal.topic.clone(),
                avatar_url: avatar,
                invite: std::iter::once(user.clone())
                    .chain(ghosts.iter().cloned())
                    .collect(),
                preset: Some(RoomPreset::PrivateChat),
                initial_state,
                ..Default::default()
            };
            let room = self.matrix.create_room(&self.bot, options).await?;
            self.record_portal(&mut portal, &room, start).await?;
            self.mark_joined(&room, &self.bot);
            self.join_for(&user, &room).await;
            let admin = chat.role_of(maxproto::types::UserId(me)) != ChatRole::Member;
            if kind == PortalKind::Channel {
                self.channel_posting(&room, &user, admin).await?;
            } else if admin {
                self.group_power(&room, &user, admin).await?;
            }
            for ghost in ghosts {
                let joined = match self.matrix.join(&ghost, &room).await {
                    Ok(()) => {
                        self.mark_joined(&room, &ghost);
                        Ok(())
                    }
                    // The homeserver may have dropped an invite of the
                    // creation (a limit on invites): invite again.
                    Err(_) => self.add_to_room(&room, &ghost).await,
                };
                if let Err(error) = joined {
                    tracing::warn!(room = %room, ghost = %ghost, %error, "ghost could not join");
                }
            }
            room
        };
        if let Err(error) = session.client.subscribe(chat.id, true).await {
            tracing::warn!(chat = chat.id.0, %error, "CHAT_SUBSCRIBE failed");
        }
        self.add_to_space(&user, me, &room).await;
        tracing::info!(chat = chat.id.0, room = %room, kind = kind.as_str(), "portal created");
        Ok((portal, room))
    }

    /// Saves a new portal's room and where its catch-up starts (unless a
    /// failed earlier attempt already set that).
    async fn record_portal(
        &self,
        portal: &mut PortalRow,
        room: &RoomId,
        start: PortalMark,
    ) -> Result<(), PortalError> {
        portal.room_id = Some(room.to_string());
        self.store.portals().upsert(portal).await?;
        self.store
            .portals()
            .init_mark(portal.chat_id, portal.receiver, start)
            .await?;
        Ok(())
    }

    /// Gives the bot power in a room a ghost created, so that it can redact
    /// and post notices there. Done after creation by reading the power
    /// levels, because a creator may not be listed in them in room
    /// version 12 but must be in older ones.
    async fn make_bot_admin(&self, creator: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        let mut levels = self
            .matrix
            .get_state_event(creator, room, "m.room.power_levels", "")
            .await?
            .unwrap_or_else(|| json!({}));
        if !levels.get("users").is_some_and(Value::is_object) {
            levels["users"] = json!({});
        }
        levels["users"][self.bot.as_str()] = json!(100);
        self.matrix
            .send_state(creator, room, "m.room.power_levels", "", &levels)
            .await?;
        Ok(())
    }

    /// In a channel only the owner and admins post on MAX, so the room asks
    /// for power 50 to post and the user gets it only when MAX lets them
    /// (otherwise each message would fail on MAX). Ghosts (the channel's
    /// authors) post at the room's default of 50. Writes only a change.
    async fn channel_posting(
        &self,
        room: &RoomId,
        user: &UserId,
        may_post: bool,
    ) -> Result<(), MatrixError> {
        let mut levels = self.power_levels(room).await?;
        let wanted = json!(if may_post { 50 } else { 0 });
        if levels["events_default"] == 50
            && levels["users_default"] == 50
            && levels["users"][user.as_str()] == wanted
        {
            return Ok(());
        }
        levels["events_default"] = json!(50);
        levels["users_default"] = json!(50);
        levels["users"][user.as_str()] = wanted;
        self.matrix
            .send_state(&self.bot, room, "m.room.power_levels", "", &levels)
            .await?;
        Ok(())
    }

    /// The room's power levels as the bot reads them, with a `users` map.
    async fn power_levels(&self, room: &RoomId) -> Result<Value, MatrixError> {
        let mut levels = self
            .matrix
            .get_state_event(&self.bot, room, "m.room.power_levels", "")
            .await?
            .unwrap_or_else(|| json!({}));
        if !levels.get("users").is_some_and(Value::is_object) {
            levels["users"] = json!({});
        }
        Ok(levels)
    }

    /// Gives the user of a group portal the power their MAX role gives
    /// them: moderator (50: rename, topic, kick) for its owner and admins,
    /// which the bridge then makes on MAX; default for members.
    async fn group_power(
        &self,
        room: &RoomId,
        user: &UserId,
        admin: bool,
    ) -> Result<(), MatrixError> {
        let mut levels = self.power_levels(room).await?;
        let current = levels["users"][user.as_str()].as_i64().unwrap_or(0);
        let wanted = if admin { 50 } else { 0 };
        if current == wanted {
            return Ok(());
        }
        levels["users"][user.as_str()] = json!(wanted);
        self.matrix
            .send_state(&self.bot, room, "m.room.power_levels", "", &levels)
            .await?;
        Ok(())
    }

    /// `m.bridge` state key and content (MSC2346).
    fn bridge_info(&self, chat: &Chat) -> (String, Value) {
        let state_key = format!("net.maxbridge://max/{}", chat.id.0);
        let content = json!({
            "bridgebot": self.bot.as_str(),
            "protocol": {"id": "max", "displayname": "MAX"},
            "channel": {
                "id": chat.id.0.to_string(),
                "displayname": chat.title.clone().unwrap_or_default(),
            },
        });
        (state_key, content)
    }

    async fn refresh_portal(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        mut portal: PortalRow,
        chat: &Chat,
    ) -> Result<(), PortalError> {
        let Some(room) = portal.room_id.as_deref().and_then(super::room_id) else {
            return Ok(());
        };
        let inviter = match (portal.kind, portal.other_user_id) {
            (PortalKind::Dialog, Some(other)) => self.ensure_ghost(session, other).await?,
            _ => self.bot.clone(),
        };
        self.ensure_user_invited(
            &room,
            &inviter,
            &session.mxid,
            portal.kind == PortalKind::Dialog,
        )
        .await?;
        if portal.kind == PortalKind::Dialog {
            return Ok(());
        }
        // Follows the user's role (and fixes portals made before it).
        let admin = chat.role_of(maxproto::types::UserId(session.max_user_id)) != ChatRole::Member;
        if portal.kind == PortalKind::Channel {
            self.channel_posting(&room, &session.mxid, admin).await?;
        } else {
            self.group_power(&room, &session.mxid, admin).await?;
        }
        let mut changed = false;
        if let Some(title) = chat.title.as_deref().filter(|t| !t.is_empty())
            && portal.name.as_deref() != Some(title)
        {
            self.matrix
                .send_state(&self.bot, &room, "m.room.name", "", &json!({"name": title}))
                .await?;
            portal.name = Some(title.to_owned());
            changed = true;
        }
        if let Some(url) = chat.base_icon_url.as_deref().filter(|u| !u.is_empty())
            && portal.avatar_url.as_deref() != Some(url)
            && let Some(mxc) = self.mirror_avatar(url).await
        {
            self.matrix
                .send_state(&self.bot, &room, "m.room.avatar", "", &json!({"url": mxc}))
                .await?;
            portal.avatar_url = Some(url.to_owned());
            portal.avatar_mxc = Some(mxc.to_string());
            changed = true;
        }
        // Present (even empty) only when MAX says what it is.
        if let Some(description) = chat.description.as_deref() {
            let topic = Some(description).filter(|d| !d.is_empty());
            if portal.topic.as_deref() != topic {
                self.matrix
                    .send_state(
                        &self.bot,
                        &room,
                        "m.room.topic",
                        "",
                        &json!({"topic": topic.unwrap_or_default()}),
                    )
                    .await?;
                portal.topic = topic.map(str::to_owned);
                changed = true;
            }
        }
        if changed {
            self.store.portals().upsert(&portal).await?;
        }
        self.sync_pin(session.portal_key(chat.id.0), &room, chat)
            .await?;
        self.sync_members(session, &room, chat).await
    }

    /// Invites the portal's user again when they are neither in the room
    /// nor invited (an invite that failed, or a user who left): checked
    /// once per portal and process.
    async fn ensure_user_invited(
        &self,
        room: &RoomId,
        inviter: &UserId,
        user: &UserId,
        is_direct: bool,
    ) -> Result<(), MatrixError> {
        if self.is_joined(room, user) {
            return Ok(());
        }
        let member = self
            .matrix
            .get_state_event(&self.bot, room, "m.room.member", user.as_str())
            .await?;
        let membership = member
            .as_ref()
            .and_then(|m| m.get("membership"))
            .and_then(Value::as_str);
        if !matches!(membership, Some("join" | "invite")) {
            self.matrix.invite(inviter, room, user, is_direct).await?;
        }
        // A double puppet is in the room, not merely invited: the bridge
        // speaks as them there (a portal made before puppeting was set up).
        // One who left is invited again, not pulled back in.
        if matches!(membership, None | Some("invite")) && self.puppets(user) {
            self.join_for(user, room).await;
            if is_direct {
                self.add_direct(user, inviter, room).await;
            }
            return Ok(());
        }
        self.mark_joined(room, user);
        Ok(())
    }

    /// Invites (as the bot) and joins a ghost, unless already known joined.
    pub(crate) async fn add_to_room(
        &self,
        room: &RoomId,
        ghost: &UserId,
    ) -> Result<(), MatrixError> {
        if self.is_joined(room, ghost) {
            return Ok(());
        }
        if let Err(error) = self.matrix.invite(&self.bot, room, ghost, false).await {
            // Already a member (or invited) is fine; the join settles it.
            tracing::debug!(room = %room, ghost = %ghost, %error, "invite before join failed");
        }
        self.client_for(ghost).join(ghost, room).await?;
        self.mark_joined(room, ghost);
        Ok(())
    }

    /// The room of an existing portal; typing and receipts never create one.
    pub(crate) async fn existing_room(
        &self,
        key: PortalKey,
    ) -> Result<Option<OwnedRoomId>, PortalError> {
        Ok(self
            .store
            .portals()
            .get(key.chat_id, key.receiver)
            .await?
            .and_then(|p| p.room_id)
            .and_then(|r| super::room_id(&r)))
    }
}
