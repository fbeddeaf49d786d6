//! Groups and channels as their members and admins change them, both ways:
//! MAX member lists followed by the portal's ghosts, and the portal user's
//! Matrix renames, topics, invites and kicks made on MAX (55 CHAT_UPDATE,
//! 77 CHAT_MEMBERS_UPDATE), with MAX's refusal told and undone in the room.

use super::Bridge;
use super::commands::describe;
use super::login::LoginSession;
use super::portal::{MAX_INITIAL_MEMBERS, PortalError, PortalKey};
use crate::matrix::RoomEvent;
use crate::store::{PortalKind, PortalRow};
use maxproto::types::{
    Chat, ChatId, ChatMembersUpdateRequest, ChatUpdateRequest, UserId as MaxUserId,
};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

impl Bridge {
    /// Brings the room's members in line with the MAX chat's: ghosts of new
    /// members join (in chats small enough to have them all, as at
    /// creation), ghosts of members gone leave, and the user is removed
    /// from a chat they are no longer in. Removals only from a complete
    /// member list (big chats come with a part of it).
    pub(crate) async fn sync_members(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        room: &RoomId,
        chat: &Chat,
    ) -> Result<(), PortalError> {
        // A chat always has its user: an empty list says nothing.
        let Some(participants) = chat.participants.as_ref().filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let complete = chat
            .participants_count
            .is_some_and(|count| usize::try_from(count).is_ok_and(|n| n == participants.len()));
        let me = session.max_user_id;
        let members: HashSet<i64> = participants.keys().map(|u| u.0).collect();
        let joined = self.matrix.joined_members(&self.bot, room).await?;
        if complete {
            for user in joined.keys() {
                let Some(max_user) = self.config.max_user_id_from_ghost(user.as_str()) else {
                    continue;
                };
                // The user's own ghost speaks for them without double
                // puppeting; it stays while they do.
                if max_user == me || members.contains(&max_user) {
                    self.mark_joined(room, user);
                    continue;
                }
                tracing::info!(room = %room, ghost = %user, "left the MAX chat");
                self.matrix
                    .leave_saying(user, room, "Left the MAX chat")
                    .await?;
                self.forget_joined(room, user);
            }
            if !members.contains(&me) && joined.contains_key(&session.mxid) {
                tracing::info!(room = %room, user = %session.mxid, "no longer in the MAX chat");
                self.matrix
                    .kick(
                        &self.bot,
                        room,
                        &session.mxid,
                        "You are no longer a member of this MAX chat",
                    )
                    .await?;
                return Ok(());
            }
        }
        if members.len() > MAX_INITIAL_MEMBERS {
            return Ok(());
        }
        let new: Vec<i64> = members
            .iter()
            .copied()
            .filter(|id| *id != me)
            .filter(|id| {
                OwnedUserId::try_from(self.config.ghost_user_id(*id))
                    .is_ok_and(|ghost| !joined.contains_key(&ghost))
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.prefetch_contacts(session, &new).await;
        for id in new {
            let ghost = self.ensure_ghost(session, id).await?;
            tracing::info!(room = %room, ghost = %ghost, "joined the MAX chat");
            self.add_to_room(room, &ghost).await?;
        }
        Ok(())
    }

    /// The chat's pinned message as the room's pinned event (MAX pins one
    /// at a time); unpinned when MAX shows none. Only bridged messages can
    /// be pinned in Matrix.
    pub(crate) async fn sync_pin(
        &self,
        key: PortalKey,
        room: &RoomId,
        chat: &Chat,
    ) -> Result<(), PortalError> {
        let wanted: Vec<String> = match &chat.pinned_message {
            Some(message) => self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, message.id.0)
                .await?
                .into_iter()
                .take(1)
                .map(|row| row.event_id)
                .collect(),
            None => Vec::new(),
        };
        let current: Vec<String> = self
            .matrix
            .get_state_event(&self.bot, room, "m.room.pinned_events", "")
            .await?
            .and_then(|content| serde_json::from_value(content["pinned"].clone()).ok())
            .unwrap_or_default();
        if current != wanted && (chat.pinned_message.is_none() || !wanted.is_empty()) {
            self.matrix
                .send_state(
                    &self.bot,
                    room,
                    "m.room.pinned_events",
                    "",
                    &serde_json::json!({"pinned": wanted}),
                )
                .await?;
        }
        Ok(())
    }

    /// The portal's user pinned or unpinned events: the newest pinned one
    /// becomes MAX's pinned message (MAX pins one), none unpins.
    pub(crate) async fn pin_on_max(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let pinned = event
            .content
            .get("pinned")
            .and_then(Value::as_array)
            .and_then(|events| events.last())
            .and_then(Value::as_str);
        let message = match pinned {
            Some(event_id) => match self.store.messages().by_event_id(event_id).await? {
                Some(row) if row.chat_id == key.chat_id && row.receiver == key.receiver => {
                    row.max_message_id
                }
                _ => {
                    self.bot_notice(
                        &event.room_id,
                        "⚠️ Only messages that are on MAX can be pinned there.",
                    )
                    .await;
                    return Ok(());
                }
            },
            None => 0,
        };
        let request = ChatUpdateRequest {
            chat_id: ChatId(key.chat_id),
            pin_message_id: Some(message),
            notify_pin: Some(false),
            ..Default::default()
        };
        if let Err(error) = session.client.call(&request).await {
            tracing::info!(chat = key.chat_id, %error, "MAX refused a pin");
            self.bot_notice(
                &event.room_id,
                &format!("⚠️ MAX did not take the pin: {}", describe(&error)),
            )
            .await;
        }
        Ok(())
    }

    /// The portal's user renamed the room or changed its topic: the same
    /// on MAX. A refusal is told in the room.
    pub(crate) async fn update_on_max(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let Some(mut portal) = self.store.portals().get(key.chat_id, key.receiver).await? else {
            return Ok(());
        };
        if portal.kind == PortalKind::Dialog {
            return Ok(());
        }
        let field = |name: &str| {
            event
                .content
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut request = ChatUpdateRequest {
            chat_id: ChatId(key.chat_id),
            ..Default::default()
        };
        match event.event_type.as_str() {
            "m.room.name" => {
                let name = field("name");
                // MAX has no nameless groups; and ours, echoed, changes nothing.
                if name.is_empty() || portal.name.as_deref() == Some(name.as_str()) {
                    return Ok(());
                }
                request.theme = Some(name.clone());
                portal.name = Some(name);
            }
            _ => {
                let topic = field("topic");
                if portal.topic.as_deref().unwrap_or_default() == topic {
                    return Ok(());
                }
                request.description = Some(topic.clone());
                portal.topic = Some(topic).filter(|t| !t.is_empty());
            }
        }
        match session.client.call(&request).await {
            Ok(_) => {
                // Known now, so MAX's echo of the change sends nothing back.
                self.store.portals().upsert(&portal).await?;
                Ok(())
            }
            Err(error) => {
                tracing::info!(chat = key.chat_id, %error, "MAX refused a chat change");
                self.bot_notice(
                    &event.room_id,
                    &format!("⚠️ MAX did not take the change: {}", describe(&error)),
                )
                .await;
                Ok(())
            }
        }
    }

    /// The portal's user invited a ghost into a group portal (`add`) or
    /// kicked one from it: the same on MAX. Whether MAX took it; a refusal
    /// is told in the room.
    pub(crate) async fn members_on_max(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        portal: &PortalRow,
        room: &RoomId,
        max_user: i64,
        add: bool,
    ) -> bool {
        let chat = ChatId(portal.chat_id);
        let users = vec![MaxUserId(max_user)];
        let request = if add {
            ChatMembersUpdateRequest::add(chat, users)
        } else {
            ChatMembersUpdateRequest::remove(chat, users)
        };
        match session.client.call(&request).await {
            Ok(_) => true,
            Err(error) => {
                tracing::info!(chat = portal.chat_id, max_user, add, %error, "MAX refused a member change");
                let what = if add { "add" } else { "remove" };
                self.bot_notice(
                    room,
                    &format!("⚠️ MAX did not {what} that member: {}", describe(&error)),
                )
                .await;
                false
            }
        }
    }

    /// A membership change in a portal made by its user: a ghost invited
    /// (added on MAX, then joined) or kicked (removed on MAX; back in the
    /// room when MAX refuses). Whether it was one.
    pub(crate) async fn on_portal_membership(
        self: &Arc<Self>,
        event: &RoomEvent,
        ghost: &UserId,
        max_user: i64,
    ) -> Result<bool, PortalError> {
        let membership = event.content.get("membership").and_then(Value::as_str);
        let add = match membership {
            Some("invite") => true,
            // A ghost leaving by itself is the bridge's own doing.
            Some("leave") if event.sender != *ghost => false,
            _ => return Ok(false),
        };
        let Some(portal) = self
            .store
            .portals()
            .get_by_room(event.room_id.as_str())
            .await?
        else {
            return Ok(false);
        };
        let Some(session) = self.login_of(&event.sender) else {
            return Ok(false);
        };
        if portal.kind == PortalKind::Dialog || session.max_user_id != portal.receiver {
            return Ok(false);
        }
        let taken = self
            .members_on_max(&session, &portal, &event.room_id, max_user, add)
            .await;
        let ghost: OwnedUserId = ghost.to_owned();
        match (add, taken) {
            // Invited and added on MAX: the ghost accepts.
            (true, true) => self.add_to_room(&event.room_id, &ghost).await?,
            (true, false) => {
                self.matrix
                    .leave_saying(&ghost, &event.room_id, "MAX did not add this member")
                    .await?;
            }
            (false, true) => self.forget_joined(&event.room_id, &ghost),
            // Still a member on MAX: back in the room.
            (false, false) => {
                self.forget_joined(&event.room_id, &ghost);
                self.add_to_room(&event.room_id, &ghost).await?;
            }
        }
        Ok(true)
    }
}
