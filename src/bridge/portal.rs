//! Portals: one Matrix room per MAX chat and receiving login. Everything that
//! touches a portal (MAX pushes, Matrix events, catch-up after a reconnect)
//! goes through that portal's ordered queue, so a portal is created once and
//! its messages keep their order; portals proceed concurrently.

use super::Bridge;
use super::convert;
use super::login::LoginSession;
use crate::matrix::{CreateRoomOptions, EphemeralEvent, MatrixError, RoomEvent, RoomPreset};
use crate::store::{MessageRow, PortalKind, PortalRow};
use maxproto::types::{
    Chat, ChatType, Message, MessageLink, MsgDeleteRequest, MsgEditRequest, MsgSendRequest,
    OutgoingMessage,
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// Ghosts invited when a group portal is created; bigger chats get the
/// rest as they speak.
const MAX_INITIAL_MEMBERS: usize = 200;

/// `kv` key of the time a portal was created, the start of its catch-up.
fn since_key(chat_id: i64, receiver: i64) -> String {
    format!("portal_since:{receiver}:{chat_id}")
}

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
    /// Recent messages of a chat from a LOGIN answer: bridge those newer
    /// than the last one bridged.
    CatchUp {
        session: Arc<LoginSession>,
        chat: Box<Chat>,
        recent: Vec<Message>,
    },
    /// A new (or edited, or removed) MAX message.
    MaxMessage {
        session: Arc<LoginSession>,
        message: Box<Message>,
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
    /// An event in the portal's Matrix room.
    Matrix(Box<RoomEvent>),
    /// Typing or a read receipt in the portal's Matrix room.
    MatrixEphemeral(Box<EphemeralEvent>),
}

/// How long a portal waits for an unavailable homeserver before giving up
/// on a message (and telling the user), and the backoff between tries.
const HOMESERVER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);
const HOMESERVER_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const HOMESERVER_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a MAX typing notification shows; MAX repeats it while typing.
const TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);

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

impl Bridge {
    pub(crate) async fn handle_portal_event(self: Arc<Self>, key: PortalKey, event: PortalEvent) {
        let result = match event {
            PortalEvent::Chat {
                session,
                chat,
                create,
            } => self.on_chat(&session, &chat, create).await,
            PortalEvent::CatchUp {
                session,
                chat,
                recent,
            } => self.catch_up(&session, &chat, recent).await,
            PortalEvent::MaxMessage { session, message } => {
                let result = self.on_max_message(&session, key, &message).await;
                if let Err(error) = &result {
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
                result
            }
            PortalEvent::MaxDeleted { message_ids } => self.on_max_deleted(key, &message_ids).await,
            PortalEvent::MaxReactions {
                session,
                message_id,
            } => self.sync_reactions(&session, key, message_id).await,
            PortalEvent::MaxTyping { session, user } => {
                self.on_max_typing(&session, key, user).await
            }
            PortalEvent::MaxRead {
                session,
                user,
                mark,
            } => self.on_max_read(&session, key, user, mark).await,
            PortalEvent::Matrix(event) => self.on_matrix_message(key, &event).await,
            PortalEvent::MatrixEphemeral(event) => self.on_matrix_ephemeral(key, &event).await,
        };
        if let Err(error) = result {
            tracing::error!(chat = key.chat_id, receiver = key.receiver, %error, "portal event failed");
        }
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
            _ if create => {
                self.create_portal(session, chat).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The portal's room, creating it from the chat when needed.
    async fn portal_room(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat_id: i64,
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
        self.create_portal(session, &chat).await
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
        // Positive ids are dialogs (a XOR b); groups and channels are negative.
        let kind = if chat_id > 0 {
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
            portal.name = session.contact(other).and_then(|c| c.display_name());
            let options = CreateRoomOptions {
                is_direct: true,
                invite: vec![self.bot.clone()],
                preset: Some(RoomPreset::PrivateChat),
                initial_state,
                ..Default::default()
            };
            let room = self.matrix.create_room(&ghost, options).await?;
            self.record_portal(&mut portal, &room).await?;
            self.mark_joined(&room, &ghost);
            self.matrix.join(&self.bot, &room).await?;
            self.mark_joined(&room, &self.bot);
            self.make_bot_admin(&ghost, &room).await?;
            self.matrix.invite(&ghost, &room, &user, true).await?;
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
            let options = CreateRoomOptions {
                name: Some(name),
                topic: portal.topic.clone(),
                avatar_url: avatar,
                invite: vec![user.clone()],
                preset: Some(RoomPreset::PrivateChat),
                initial_state,
                ..Default::default()
            };
            let room = self.matrix.create_room(&self.bot, options).await?;
            self.record_portal(&mut portal, &room).await?;
            self.mark_joined(&room, &self.bot);
            let members: Vec<i64> = chat
                .participant_ids()
                .map(|u| u.0)
                .filter(|id| *id != me)
                .take(MAX_INITIAL_MEMBERS)
                .collect();
            for member in members {
                match self.ensure_ghost(session, member).await {
                    Ok(ghost) => {
                        if let Err(error) = self.add_to_room(&room, &ghost).await {
                            tracing::warn!(room = %room, ghost = %ghost, %error, "ghost could not join");
                        }
                    }
                    Err(error) => tracing::warn!(member, %error, "ghost unavailable"),
                }
            }
            room
        };
        if let Err(error) = session.client.subscribe(chat.id, true).await {
            tracing::warn!(chat = chat.id.0, %error, "CHAT_SUBSCRIBE failed");
        }
        tracing::info!(chat = chat.id.0, room = %room, kind = kind.as_str(), "portal created");
        Ok((portal, room))
    }

    /// Saves a new portal's room and the time catch-up starts from.
    async fn record_portal(
        &self,
        portal: &mut PortalRow,
        room: &RoomId,
    ) -> Result<(), PortalError> {
        portal.room_id = Some(room.to_string());
        self.store.portals().upsert(portal).await?;
        self.store
            .kv()
            .set(
                &since_key(portal.chat_id, portal.receiver),
                &super::now_ms().to_string(),
            )
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
        if changed {
            self.store.portals().upsert(&portal).await?;
        }
        Ok(())
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
        self.matrix.join(ghost, room).await?;
        self.mark_joined(room, ghost);
        Ok(())
    }

    async fn catch_up(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        chat: &Chat,
        mut recent: Vec<Message>,
    ) -> Result<(), PortalError> {
        // Only what is newer than the last bridged message, or than the
        // portal itself: a new portal starts at its creation (no backfill).
        let latest = self
            .store
            .messages()
            .latest_in_portal(chat.id.0, session.max_user_id)
            .await?;
        let since = self
            .store
            .kv()
            .get(&since_key(chat.id.0, session.max_user_id))
            .await?
            .and_then(|t| t.parse::<i64>().ok());
        let is_new = |m: &Message| match (&latest, since) {
            (Some(latest), _) => m.id.0 > latest.max_message_id,
            (None, Some(since)) => m.time >= since,
            (None, None) => false,
        };
        if let Some(last) = &chat.last_message
            && !recent.iter().any(|m| m.id == last.id)
        {
            recent.push(last.clone());
        }
        recent.sort_by_key(|m| m.id);
        let key = session.portal_key(chat.id.0);
        for message in recent.into_iter().filter(|m| is_new(m)) {
            self.on_max_message(session, key, &message).await?;
        }
        Ok(())
    }

    async fn on_max_message(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message: &Message,
    ) -> Result<(), PortalError> {
        tracing::debug!(chat = key.chat_id, receiver = key.receiver, message = message.id.0, sender = ?message.sender, status = ?message.status, "MAX message");
        let known = self
            .store
            .messages()
            .by_max_id(key.chat_id, key.receiver, message.id.0)
            .await?;
        if message.is_removed() {
            return self.redact_bridged(&known).await;
        }
        if message.is_edited() && !known.is_empty() {
            let edit_time = message.update_time.unwrap_or(message.time);
            if session.is_own_edit(message.id.0, edit_time) {
                return Ok(());
            }
            return self.bridge_edit(session, key, message, &known).await;
        }
        if !known.is_empty() {
            return Ok(());
        }
        // The echo of a message this bridge sent was recognised above: the
        // send stored its mapping before this push could be processed,
        // since both go through this portal's queue.
        let sender = message.sender.map(|s| s.0);
        let (_, room) = self.portal_room(session, key.chat_id).await?;
        // Channel posts have no sender: they speak as the bot.
        let author = match sender {
            Some(id) => self.ensure_ghost(session, id).await?,
            None => self.bot.clone(),
        };
        self.add_to_room(&room, &author).await?;
        let mut content = convert::max_to_matrix(message);
        if let Some(reply_to) = message.reply_to()
            && let Some(target) = self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, reply_to.0)
                .await?
                .into_iter()
                .next()
        {
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": target.event_id}});
        }
        let txn = format!("max-{}-{}-{}", key.receiver, key.chat_id, message.id.0);
        let ts = u64::try_from(message.time).ok().filter(|t| *t > 0);
        let event_id = self
            .send_patiently(&author, &room, &content, &txn, ts)
            .await?;
        self.store
            .messages()
            .insert(&MessageRow {
                chat_id: key.chat_id,
                receiver: key.receiver,
                max_message_id: message.id.0,
                part: 0,
                event_id: event_id.to_string(),
                room_id: room.to_string(),
                sender: sender.unwrap_or(0),
                timestamp_ms: message.time,
            })
            .await?;
        Ok(())
    }

    async fn on_max_deleted(&self, key: PortalKey, message_ids: &[i64]) -> Result<(), PortalError> {
        for id in message_ids {
            let known = self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, *id)
                .await?;
            self.redact_bridged(&known).await?;
        }
        Ok(())
    }

    /// Sends a MAX message into Matrix, waiting out a homeserver that is
    /// down for a while (the portal waits with it, so order holds) instead
    /// of dropping the message after the client's short retry budget. The
    /// same transaction id makes the retries idempotent.
    async fn send_patiently(
        &self,
        author: &UserId,
        room: &RoomId,
        content: &Value,
        txn: &str,
        ts: Option<u64>,
    ) -> Result<ruma::OwnedEventId, MatrixError> {
        let started = tokio::time::Instant::now();
        let mut delay = HOMESERVER_RETRY_FIRST;
        let mut waiting = None;
        loop {
            match self
                .matrix
                .send_message(author, room, "m.room.message", content, txn, ts)
                .await
            {
                Err(error) if error.is_transient() && started.elapsed() < HOMESERVER_PATIENCE => {
                    if waiting.is_none() {
                        tracing::warn!(room = %room, %error, "homeserver unavailable; holding the portal's messages");
                        waiting = Some(self.waiting_for_homeserver());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(HOMESERVER_RETRY_MAX);
                }
                result => return result,
            }
        }
    }

    async fn redact_bridged(&self, known: &[MessageRow]) -> Result<(), PortalError> {
        for row in known {
            let (Some(room), Ok(event)) = (
                super::room_id(&row.room_id),
                ruma::OwnedEventId::try_from(row.event_id.as_str()),
            ) else {
                continue;
            };
            let txn = format!("redact-{}", row.event_id);
            self.matrix
                .redact(&self.bot, &room, &event, Some("Deleted on MAX"), &txn)
                .await?;
        }
        Ok(())
    }

    async fn bridge_edit(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message: &Message,
        known: &[MessageRow],
    ) -> Result<(), PortalError> {
        let Some(original) = known.first() else {
            return Ok(());
        };
        let Some(room) = super::room_id(&original.room_id) else {
            return Ok(());
        };
        let author = match message.sender {
            Some(id) => self.ensure_ghost(session, id.0).await?,
            None => self.bot.clone(),
        };
        self.add_to_room(&room, &author).await?;
        let new_content = convert::max_to_matrix(message);
        let mut content = json!({
            "msgtype": new_content["msgtype"],
            "body": format!("* {}", new_content["body"].as_str().unwrap_or_default()),
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": original.event_id},
        });
        if let Some(html) = content["m.new_content"]["formatted_body"]
            .as_str()
            .map(|html| format!("* {html}"))
        {
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(html);
        }
        let edit_time = message.update_time.unwrap_or(message.time);
        let txn = format!(
            "max-edit-{}-{}-{}-{edit_time}",
            key.receiver, key.chat_id, message.id.0
        );
        let ts = u64::try_from(edit_time).ok().filter(|t| *t > 0);
        self.matrix
            .send_message(&author, &room, "m.room.message", &content, &txn, ts)
            .await?;
        Ok(())
    }

    async fn on_matrix_message(
        self: &Arc<Self>,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let Some(session) = self.login_of(&event.sender) else {
            if let Some(login) = self.store.logins().get(event.sender.as_str()).await?
                && login.max_user_id == key.receiver
            {
                self.bot_notice(
                    &event.room_id,
                    "⚠️ Your message was not sent: you are not connected to MAX. Send `login` to the bridge bot.",
                )
                .await;
            }
            return Ok(());
        };
        if session.max_user_id != key.receiver {
            // Someone else's portal: only its owner speaks for it on MAX.
            return Ok(());
        }
        if self
            .store
            .messages()
            .by_event_id(event.event_id.as_str())
            .await?
            .is_some()
        {
            return Ok(());
        }
        match event.event_type.as_str() {
            "m.room.redaction" => return self.delete_on_max(&session, key, event).await,
            "m.reaction" => return self.react_on_max(&session, key, event).await,
            _ => {}
        }
        if event
            .content
            .pointer("/m.relates_to/rel_type")
            .and_then(Value::as_str)
            == Some("m.replace")
        {
            return self.edit_on_max(&session, key, event).await;
        }
        let Some(content) = convert::matrix_to_max(&event.content) else {
            let msgtype = event
                .content
                .get("msgtype")
                .and_then(Value::as_str)
                .unwrap_or("?");
            self.bot_notice(
                &event.room_id,
                &format!("⚠️ Your {msgtype} message was not sent: this kind of message is not bridged to MAX yet."),
            )
            .await;
            return Ok(());
        };
        let reply_link = match event
            .content
            .pointer("/m.relates_to/m.in_reply_to/event_id")
            .and_then(Value::as_str)
        {
            Some(target) => self
                .store
                .messages()
                .by_event_id(target)
                .await?
                .map(|row| MessageLink::reply(maxproto::types::MessageId(row.max_message_id))),
            None => None,
        };
        // A text over MAX's limit goes as several plain messages; offsets of
        // formatting would not survive the cut.
        let (parts, mut elements) = if content.text.chars().count() > convert::MAX_TEXT_CHARS {
            (convert::split_text(&content.text), Vec::new())
        } else {
            (vec![content.text], content.elements)
        };
        let last = parts.len().saturating_sub(1);
        for (index, part) in parts.into_iter().enumerate() {
            let cid = self.next_cid();
            let mut outgoing = OutgoingMessage::new(cid, part);
            if index == 0 {
                outgoing.link = reply_link.clone();
                outgoing.elements = std::mem::take(&mut elements);
            }
            let request = MsgSendRequest::new(maxproto::types::ChatId(key.chat_id), outgoing);
            match tokio::time::timeout(
                self.config.message_send_timeout(),
                session.client.call(&request),
            )
            .await
            {
                Ok(Ok(answer)) => {
                    self.store
                        .messages()
                        .insert(&MessageRow {
                            chat_id: key.chat_id,
                            receiver: key.receiver,
                            max_message_id: answer.message.id.0,
                            part: 0,
                            event_id: event.event_id.to_string(),
                            room_id: event.room_id.to_string(),
                            sender: session.max_user_id,
                            timestamp_ms: answer.message.time,
                        })
                        .await?;
                }
                Ok(Err(error)) => {
                    self.send_failed(event, &error.to_string(), index, last)
                        .await;
                    return Ok(());
                }
                Err(_) => {
                    self.send_failed(event, "MAX did not answer in time", index, last)
                        .await;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn send_failed(&self, event: &RoomEvent, reason: &str, index: usize, last: usize) {
        tracing::warn!(room = %event.room_id, event = %event.event_id, reason, "message not delivered to MAX");
        let what = if last > 0 {
            format!("Part {} of {} of your message", index + 1, last + 1)
        } else {
            "Your message".to_owned()
        };
        self.bot_notice(
            &event.room_id,
            &format!("⚠️ {what} was not delivered to MAX: {reason}"),
        )
        .await;
    }

    /// The room of an existing portal; typing and receipts never create one.
    async fn existing_room(&self, key: PortalKey) -> Result<Option<OwnedRoomId>, PortalError> {
        Ok(self
            .store
            .portals()
            .get(key.chat_id, key.receiver)
            .await?
            .and_then(|p| p.room_id)
            .and_then(|r| super::room_id(&r)))
    }

    async fn on_max_typing(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        user: i64,
    ) -> Result<(), PortalError> {
        let Some(room) = self.existing_room(key).await? else {
            return Ok(());
        };
        let ghost = self.ensure_ghost(session, user).await?;
        self.add_to_room(&room, &ghost).await?;
        self.matrix
            .typing(&ghost, &room, true, TYPING_TIMEOUT)
            .await?;
        Ok(())
    }

    async fn on_max_read(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        user: i64,
        mark: i64,
    ) -> Result<(), PortalError> {
        let Some(room) = self.existing_room(key).await? else {
            return Ok(());
        };
        let Some(row) = self
            .store
            .messages()
            .latest_at_or_before(key.chat_id, key.receiver, mark)
            .await?
        else {
            return Ok(());
        };
        let Ok(event) = ruma::OwnedEventId::try_from(row.event_id.as_str()) else {
            return Ok(());
        };
        let ghost = self.ensure_ghost(session, user).await?;
        self.add_to_room(&room, &ghost).await?;
        self.matrix.read_receipt(&ghost, &room, &event).await?;
        Ok(())
    }

    /// The portal owner's typing and read receipts go to MAX (65, 50).
    async fn on_matrix_ephemeral(
        self: &Arc<Self>,
        key: PortalKey,
        event: &EphemeralEvent,
    ) -> Result<(), PortalError> {
        let Some(session) = self.session_of_receiver(key.receiver) else {
            return Ok(());
        };
        let owner = session.mxid.as_str();
        let chat_id = maxproto::types::ChatId(key.chat_id);
        match event.event_type.as_str() {
            "m.typing" => {
                let typing = event
                    .content
                    .get("user_ids")
                    .and_then(Value::as_array)
                    .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(owner)));
                if typing {
                    let request = maxproto::types::MsgTypingRequest {
                        chat_id,
                        kind: Some(maxproto::types::TypingType::Text),
                        extra: Default::default(),
                    };
                    session.client.call(&request).await?;
                }
            }
            "m.receipt" => {
                let Some(receipts) = event.content.as_object() else {
                    return Ok(());
                };
                // The newest event the owner marked read in this batch.
                let mut newest: Option<MessageRow> = None;
                for (event_id, kinds) in receipts {
                    let read_by_owner = ["m.read", "m.read.private"]
                        .iter()
                        .any(|kind| kinds.get(kind).and_then(|k| k.get(owner)).is_some());
                    if !read_by_owner {
                        continue;
                    }
                    if let Some(row) = self.store.messages().by_event_id(event_id).await?
                        && row.chat_id == key.chat_id
                        && row.receiver == key.receiver
                        && newest
                            .as_ref()
                            .is_none_or(|n| row.timestamp_ms > n.timestamp_ms)
                    {
                        newest = Some(row);
                    }
                }
                if let Some(row) = newest {
                    let request = maxproto::types::ChatMarkRequest::read(
                        chat_id,
                        maxproto::types::MessageId(row.max_message_id),
                        row.timestamp_ms,
                    );
                    session.client.call(&request).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A Matrix edit of one of the user's bridged messages becomes MSG_EDIT.
    async fn edit_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let target = event
            .content
            .pointer("/m.relates_to/event_id")
            .and_then(Value::as_str);
        let new_content = event
            .content
            .get("m.new_content")
            .and_then(convert::matrix_to_max);
        let (Some(target), Some(content)) = (target, new_content) else {
            return Ok(());
        };
        let Some(original) = self.store.messages().by_event_id(target).await? else {
            return Ok(());
        };
        if original.sender != session.max_user_id {
            self.bot_notice(
                &event.room_id,
                "⚠️ Only your own messages can be edited on MAX.",
            )
            .await;
            return Ok(());
        }
        if content.text.chars().count() > convert::MAX_TEXT_CHARS {
            self.bot_notice(
                &event.room_id,
                &format!(
                    "⚠️ Your edit was not delivered to MAX: longer than {} characters.",
                    convert::MAX_TEXT_CHARS
                ),
            )
            .await;
            return Ok(());
        }
        let request = MsgEditRequest {
            chat_id: maxproto::types::ChatId(key.chat_id),
            message_id: maxproto::types::MessageId(original.max_message_id),
            text: content.text,
            elements: content.elements,
            attachments: Vec::new(),
            extra: Default::default(),
        };
        match session.client.call(&request).await {
            Ok(answer) => {
                session.remember_own_edit(
                    original.max_message_id,
                    answer.message.update_time.unwrap_or(answer.message.time),
                );
            }
            Err(error) => {
                self.bot_notice(
                    &event.room_id,
                    &format!(
                        "⚠️ Your edit was not delivered to MAX: {}",
                        super::commands::describe(&error)
                    ),
                )
                .await;
            }
        }
        Ok(())
    }

    /// A redaction of the user's bridged message deletes it on MAX for
    /// everyone (MSG_DELETE).
    async fn delete_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let Some(target) = event.redacts() else {
            return Ok(());
        };
        if self.unreact_on_max(session, key, event, target).await? {
            return Ok(());
        }
        let rows: Vec<MessageRow> = self
            .store
            .messages()
            .all_by_event_id(target)
            .await?
            .into_iter()
            .filter(|row| row.chat_id == key.chat_id && row.receiver == key.receiver)
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let request = MsgDeleteRequest {
            chat_id: maxproto::types::ChatId(key.chat_id),
            message_ids: rows
                .iter()
                .map(|row| maxproto::types::MessageId(row.max_message_id))
                .collect(),
            for_me: false,
            extra: Default::default(),
        };
        // The mapping stays: the echo of the original send may still be on
        // its way (a quick delete overtakes it), and must be recognised.
        match session.client.call(&request).await {
            Ok(_) => {}
            Err(error) => {
                self.bot_notice(
                    &event.room_id,
                    &format!(
                        "⚠️ The message was not deleted on MAX: {}",
                        super::commands::describe(&error)
                    ),
                )
                .await;
            }
        }
        Ok(())
    }
}
