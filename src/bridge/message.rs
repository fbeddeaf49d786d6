//! Messages both ways in a portal: MAX messages (new, edited, deleted,
//! missed while away) into Matrix events, and the portal owner's Matrix
//! messages, edits and redactions into MAX requests. Runs on the portal's
//! queue, so a send's mapping is stored before its echo is looked at.

use super::Bridge;
use super::convert;
use super::login::LoginSession;
use super::portal::{PortalError, PortalKey, since_key};
use crate::matrix::{MatrixError, RoomEvent};
use crate::store::MessageRow;
use maxproto::types::{
    Chat, Message, MessageLink, MsgDeleteRequest, MsgEditRequest, MsgSendRequest, OutgoingMessage,
};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

/// How long a portal waits for an unavailable homeserver before giving up
/// on a message (and telling the user), and the backoff between tries.
const HOMESERVER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);
const HOMESERVER_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const HOMESERVER_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl Bridge {
    pub(crate) async fn catch_up(
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

    pub(crate) async fn on_max_message(
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
        // The text (if any) first, then one event per media attachment;
        // each is a part of the message, so edits, deletions and replies
        // find them all.
        let mut events: Vec<(&'static str, Value)> = Vec::new();
        if let Some(content) = convert::max_text_to_matrix(message) {
            events.push(("m.room.message", content));
        }
        for attach in message.attaches.iter().filter(|a| convert::is_media(a)) {
            events.push(
                self.media_event(session, key.chat_id, message, attach)
                    .await,
            );
        }
        if let Some(reply_to) = message.reply_to()
            && let Some(target) = self
                .store
                .messages()
                .by_max_id(key.chat_id, key.receiver, reply_to.0)
                .await?
                .into_iter()
                .next()
            && let Some((_, content)) = events.first_mut()
        {
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": target.event_id}});
        }
        let ts = u64::try_from(message.time).ok().filter(|t| *t > 0);
        for (part, (event_type, content)) in events.into_iter().enumerate() {
            let txn = format!(
                "max-{}-{}-{}-{part}",
                key.receiver, key.chat_id, message.id.0
            );
            let event_id = self
                .send_patiently(&author, &room, event_type, &content, &txn, ts)
                .await?;
            self.store
                .messages()
                .insert(&MessageRow {
                    chat_id: key.chat_id,
                    receiver: key.receiver,
                    max_message_id: message.id.0,
                    part: part as i32,
                    event_id: event_id.to_string(),
                    room_id: room.to_string(),
                    sender: sender.unwrap_or(0),
                    timestamp_ms: message.time,
                })
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn on_max_deleted(
        &self,
        key: PortalKey,
        message_ids: &[i64],
    ) -> Result<(), PortalError> {
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
        event_type: &str,
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
                .send_message(author, room, event_type, content, txn, ts)
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

    pub(crate) async fn on_matrix_message(
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
        let msgtype = event
            .content
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut outgoing: Vec<OutgoingMessage> = Vec::new();
        if super::media::is_media_msgtype(msgtype) {
            match self.media_to_max(&session, &event.content).await {
                Ok(attach) => {
                    let mut message = OutgoingMessage::new(0, "");
                    message.attaches.push(attach);
                    outgoing.push(message);
                }
                Err(reason) => {
                    self.send_failed(event, &reason, 0, 0).await;
                    return Ok(());
                }
            }
        } else if let Some(content) = convert::matrix_to_max(&event.content) {
            // A text over MAX's limit goes as several plain messages; offsets
            // of formatting would not survive the cut.
            if content.text.chars().count() > convert::MAX_TEXT_CHARS {
                outgoing.extend(
                    convert::split_text(&content.text)
                        .into_iter()
                        .map(|part| OutgoingMessage::new(0, part)),
                );
            } else {
                let mut message = OutgoingMessage::new(0, content.text);
                message.elements = content.elements;
                outgoing.push(message);
            }
        } else {
            self.bot_notice(
                &event.room_id,
                &format!("⚠️ Your {msgtype} message was not sent: this kind of message is not bridged to MAX yet."),
            )
            .await;
            return Ok(());
        }
        let last = outgoing.len().saturating_sub(1);
        for (index, mut message) in outgoing.into_iter().enumerate() {
            message.cid = self.next_cid();
            if index == 0 {
                message.link = reply_link.clone();
            }
            let request = MsgSendRequest::new(maxproto::types::ChatId(key.chat_id), message);
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
