//! The portal owner's Matrix messages, edits and redactions into MAX
//! requests.

use crate::bridge::Bridge;
use crate::bridge::convert;
use crate::bridge::login::LoginSession;
use crate::bridge::portal::{PortalError, PortalKey};
use crate::matrix::{Handled, RoomEvent};
use crate::metrics::Direction;
use crate::store::MessageRow;
use maxproto::types::{
    Attach, MessageLink, MsgDeleteRequest, MsgEditRequest, MsgSendCallbackRequest, MsgSendRequest,
    OutgoingMessage,
};
use serde_json::Value;
use std::sync::Arc;

/// What became of a Matrix message, for its status event.
pub(crate) enum MessageStatus {
    Success,
    /// MAX refused it, or it could not be sent; why.
    Failed(String),
    /// This kind is not bridged.
    Unsupported(String),
}

/// Longest answer taken for a button press: a number or a button's text.
const BUTTON_ANSWER_CHARS: usize = 64;

impl Bridge {
    pub(crate) async fn on_matrix_message(
        self: &Arc<Self>,
        key: PortalKey,
        event: &RoomEvent,
        untouched: bool,
        handled: &Arc<Handled>,
    ) -> Result<(), PortalError> {
        tracing::debug!(chat = key.chat_id, receiver = key.receiver, event = %event.event_id, kind = %event.event_type, "Matrix event");
        let taken = std::time::Instant::now();
        let own = self.wait_for_login(&event.sender).await?;
        let relayed;
        let (session, event) = match own {
            Some(session) if session.max_user_id == key.receiver => (session, event),
            own => match self.relay_for(key, event).await? {
                // Someone who cannot speak for this portal on MAX, in a
                // portal that relays: through its owner, with their name.
                Some((owner, as_relayed)) => {
                    relayed = as_relayed;
                    (owner, &relayed)
                }
                None if own.is_some() => {
                    // Someone else's portal: only its owner speaks for it.
                    tracing::debug!(event = %event.event_id, "not the portal's owner; not sent");
                    return Ok(());
                }
                None => {
                    tracing::debug!(event = %event.event_id, "no MAX login to send with");
                    if let Some(login) = self.store.logins().get(event.sender.as_str()).await?
                        && login.max_user_id == key.receiver
                    {
                        let why = if login.state == crate::bridge::login::STATE_LOGGED_OUT {
                            "you are logged out of MAX. Send `login` to the bridge bot.".to_owned()
                        } else {
                            format!(
                                "the connection to MAX did not come back within {} s. Send `ping` to the bridge bot to check it.",
                                self.config.login_patience().as_secs()
                            )
                        };
                        self.bot_notice(
                            &event.room_id,
                            &format!("⚠️ Your message was not sent: {why}"),
                        )
                        .await;
                    }
                    return Ok(());
                }
            },
        };
        // How many MAX messages this event already became (a long text is
        // several): after a crash, only the rest is sent. An event new from
        // the homeserver, on its first try, became nothing yet.
        let already = if untouched {
            0
        } else {
            self.store
                .messages()
                .all_by_event_id(event.event_id.as_str())
                .await?
                .len()
        };
        if already > 0 {
            tracing::debug!(event = %event.event_id, already, "Matrix event bridged before");
        }
        if already > 0 && !matches!(event.event_type.as_str(), "m.room.message" | "m.sticker") {
            return Ok(());
        }
        match event.event_type.as_str() {
            "m.room.redaction" => return self.delete_on_max(&session, key, event).await,
            "m.reaction" => return self.react_on_max(&session, key, event).await,
            convert::POLL_RESPONSE => return self.vote_on_max(&session, key, event).await,
            "m.room.name" | "m.room.topic" => {
                return Box::pin(self.update_on_max(&session, key, event)).await;
            }
            "m.room.pinned_events" => return Box::pin(self.pin_on_max(&session, key, event)).await,
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
        let reply_to = match event
            .content
            .pointer("/m.relates_to/m.in_reply_to/event_id")
            .and_then(Value::as_str)
        {
            Some(target) => self.store.messages().by_event_id(target).await?,
            None => None,
        };
        // A short answer to someone else's message may press one of its
        // buttons (a MAX bot's keyboard).
        if let Some(target) = &reply_to
            && target.sender != session.max_user_id
            && already == 0
            && let Some(answer) = convert::matrix_to_max(&event.content)
            && answer.text.chars().count() <= BUTTON_ANSWER_CHARS
            && self
                .press_button(&session, key, event, target, &answer.text)
                .await
        {
            return Ok(());
        }
        let reply_link =
            reply_to.map(|row| MessageLink::reply(maxproto::types::MessageId(row.max_message_id)));
        // MAX stickers come from its own sets: a Matrix sticker goes as the
        // picture it is.
        let sticker;
        let content = if event.event_type == "m.sticker" {
            sticker = {
                let mut content = event.content.clone();
                content["msgtype"] = Value::from("m.image");
                content
            };
            &sticker
        } else {
            &event.content
        };
        let msgtype = content
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut outgoing: Vec<OutgoingMessage> = Vec::new();
        if crate::bridge::media::is_media_msgtype(msgtype) {
            // The caption goes with the media, as MAX shows it; one too
            // long for a MAX message follows it as text.
            let mut caption = convert::matrix_caption(content).unwrap_or_default();
            caption.rename_mentions(|user| self.max_name(&session, user));
            let (mut media, rest) = if caption.text.chars().count() > convert::MAX_TEXT_CHARS {
                (
                    OutgoingMessage::new(0, ""),
                    convert::split_text(&caption.text),
                )
            } else {
                let mut media = OutgoingMessage::new(0, caption.text);
                media.elements = caption.elements;
                (media, Vec::new())
            };
            if already > rest.len() {
                return Ok(());
            }
            // After a crash, the media is uploaded again only if its
            // message was not sent.
            if already == 0 {
                match self.media_to_max(&session, content).await {
                    Ok(attach) => media.attaches.push(attach),
                    Err(reason) => {
                        self.send_failed(event, &reason, 0, 0).await;
                        return Ok(());
                    }
                }
            }
            outgoing.push(media);
            outgoing.extend(rest.into_iter().map(|part| OutgoingMessage::new(0, part)));
        } else if msgtype == "m.location" {
            let Some(location) = convert::matrix_location_to_max(&event.content) else {
                self.send_failed(event, "its geo URI holds no coordinates", 0, 0)
                    .await;
                return Ok(());
            };
            let mut message = OutgoingMessage::new(0, "");
            message
                .attaches
                .push(maxproto::types::Attach::Location(location));
            outgoing.push(message);
        } else if let Some(mut content) = convert::matrix_to_max(&event.content) {
            content.rename_mentions(|user| self.max_name(&session, user));
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
            let status = MessageStatus::Unsupported(format!("{msgtype} is not bridged to MAX"));
            self.message_status(event, status).await;
            return Ok(());
        }
        let last = outgoing.len().saturating_sub(1);
        for (index, mut message) in outgoing.into_iter().enumerate().skip(already) {
            message.cid = crate::bridge::cid_for_event(event.event_id.as_str(), index);
            if index == 0 {
                message.link = reply_link.clone();
            }
            let request = MsgSendRequest::new(maxproto::types::ChatId(key.chat_id), message);
            match self.send_to_max(&session, &request).await {
                Ok(answer) => {
                    tracing::debug!(event = %event.event_id, part = index, message = answer.message.id.0, "sent to MAX");
                    let kind = if event.event_type == "m.sticker" {
                        "m.sticker"
                    } else {
                        msgtype
                    };
                    self.metrics.bridged(
                        Direction::MatrixToMax,
                        kind,
                        taken.elapsed(),
                        crate::metrics::age_of(event.origin_server_ts as i64),
                    );
                    let row = MessageRow {
                        chat_id: key.chat_id,
                        receiver: key.receiver,
                        max_message_id: answer.message.id.0,
                        part: 0,
                        event_id: event.event_id.to_string(),
                        room_id: event.room_id.to_string(),
                        sender: session.max_user_id,
                        timestamp_ms: answer.message.time,
                    };
                    // The event stays pending in the inbox until its
                    // mapping is written: a crash before sends it again
                    // (MAX answers a repeated cid with the same message).
                    self.record_behind(key, row, false, Some(Arc::clone(handled)))
                        .await;
                }
                Err(reason) => {
                    self.send_failed(event, &reason, index, last).await;
                    return Ok(());
                }
            }
        }
        self.message_status(event, MessageStatus::Success).await;
        Ok(())
    }

    /// Presses the button of `target`'s keyboard that `answer` names;
    /// whether it named one (then the answer is not sent as text). A
    /// message without a keyboard, or one MAX cannot show, names none.
    async fn press_button(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
        target: &MessageRow,
        answer: &str,
    ) -> bool {
        let chat = maxproto::types::ChatId(key.chat_id);
        let message_id = maxproto::types::MessageId(target.max_message_id);
        let Ok(Some(message)) = session.client.get_message(chat, message_id).await else {
            return false;
        };
        let Some((keyboard, button)) = message.attaches.iter().find_map(|a| match a {
            Attach::InlineKeyboard(keyboard) => {
                convert::chosen_button(keyboard, answer).map(|button| (keyboard, button))
            }
            _ => None,
        }) else {
            return false;
        };
        let label = button.get("text").and_then(Value::as_str).unwrap_or("?");
        let kind = button
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("CALLBACK");
        let notice = match (kind, button.get("url").and_then(Value::as_str)) {
            (_, Some(url)) => format!("«{label}» opens {url}"),
            ("CALLBACK", None) => match &keyboard.callback_id {
                Some(callback_id) => {
                    let request = MsgSendCallbackRequest {
                        callback_id: callback_id.clone(),
                        kind: "CALLBACK".to_owned(),
                        payload: button
                            .get("payload")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        timestamp: crate::bridge::now_ms(),
                        extra: Default::default(),
                    };
                    match session.client.call(&request).await {
                        Ok(_) => format!("Pressed «{label}»."),
                        Err(error) => format!(
                            "⚠️ «{label}» was not pressed: {}",
                            crate::bridge::commands::describe(&error)
                        ),
                    }
                }
                None => {
                    format!("⚠️ «{label}» was not pressed: MAX gave its keyboard no callback id.")
                }
            },
            (other, None) => {
                format!("⚠️ «{label}» is a {other} button, which cannot be pressed from Matrix.")
            }
        };
        self.bot_notice(&event.room_id, &notice).await;
        true
    }

    /// A vote in a bridged MAX poll becomes SEND_VOTE (304) with the MAX
    /// answer ids the poll start carried.
    async fn vote_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let target = event
            .content
            .pointer("/m.relates_to/event_id")
            .and_then(Value::as_str);
        let (Some(target), Some(answers)) = (target, convert::poll_response_to_max(&event.content))
        else {
            return Ok(());
        };
        let Some(row) = self.store.messages().by_event_id(target).await? else {
            return Ok(());
        };
        let chat = maxproto::types::ChatId(key.chat_id);
        let message_id = maxproto::types::MessageId(row.max_message_id);
        let voted = async {
            let message = session.client.get_message(chat, message_id).await?;
            let poll_id = message.and_then(|m| {
                m.attaches.into_iter().find_map(|a| match a {
                    Attach::Poll(poll) => poll.poll_id,
                    _ => None,
                })
            });
            let Some(poll_id) = poll_id else {
                return Ok(false);
            };
            let request = maxproto::types::SendVoteRequest {
                chat_id: chat,
                message_id,
                poll_id,
                answers_ids: answers,
                extra: Default::default(),
            };
            session.client.call(&request).await.map(|_| true)
        };
        match voted.await {
            Ok(true) => self.metrics.bridged(
                Direction::MatrixToMax,
                "vote",
                std::time::Duration::ZERO,
                crate::metrics::age_of(event.origin_server_ts as i64),
            ),
            Ok(false) => {
                self.bot_notice(
                    &event.room_id,
                    "⚠️ Your vote was not delivered to MAX: the poll is no longer there.",
                )
                .await;
            }
            Err(error) => {
                self.bot_notice(
                    &event.room_id,
                    &format!(
                        "⚠️ Your vote was not delivered to MAX: {}",
                        crate::bridge::commands::describe(&error)
                    ),
                )
                .await;
            }
        }
        Ok(())
    }

    /// The MAX name of a mentioned ghost's MAX user, as the login knows
    /// it; `None` leaves the pill's text (a Matrix user's name).
    fn max_name(&self, session: &LoginSession, user: &str) -> Option<String> {
        let max_user = self.config.max_user_id_from_ghost(user)?;
        session.contact(max_user)?.display_name()
    }

    /// MSG_SEND, retried while MAX does not answer or the connection is
    /// being re-established, up to the outage patience. Safe to repeat: the
    /// cid is derived from the event, and MAX answers a repeated cid with
    /// the message it already created. A refusal is returned as its reason.
    async fn send_to_max(
        &self,
        session: &LoginSession,
        request: &MsgSendRequest,
    ) -> Result<maxproto::types::MsgSendResponse, String> {
        use maxproto::client::ClientError;
        let backoff = crate::retry::Backoff {
            first: std::time::Duration::from_millis(500),
            max: std::time::Duration::from_secs(30),
            patience: self.config.outage_patience(),
        };
        let attempt = || async {
            let outcome = tokio::time::timeout(
                self.config.message_send_timeout(),
                session.client.call(request),
            )
            .await;
            match outcome {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(
                    error @ (ClientError::Timeout
                    | ClientError::Disconnected
                    | ClientError::WebSocket(_)),
                )) => Err(SendFailure::transient(error.to_string())),
                Ok(Err(error)) => Err(SendFailure {
                    reason: crate::bridge::commands::describe(&error),
                    transient: false,
                }),
                Err(_) => Err(SendFailure::transient("MAX did not answer in time")),
            }
        };
        let what = "MAX send, retried with the same cid";
        crate::retry::retry(what, backoff, |f: &SendFailure| f.transient, attempt)
            .await
            .map_err(|failure| failure.reason)
    }

    async fn send_failed(&self, event: &RoomEvent, reason: &str, index: usize, last: usize) {
        self.metrics.failed(Direction::MatrixToMax, "refused");
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
        self.message_status(event, MessageStatus::Failed(reason.to_owned()))
            .await;
    }

    /// Posts the `com.beeper.message_send_status` of a Matrix message, when
    /// `bridge.message_status_events` asks for it. Its transaction id comes
    /// from the event, so a retry after a crash posts it once.
    pub(crate) async fn message_status(&self, event: &RoomEvent, status: MessageStatus) {
        if !self.config.bridge.message_status_events {
            return;
        }
        let mut content = serde_json::json!({
            "network": "max",
            "m.relates_to": {"rel_type": "m.reference", "event_id": event.event_id.as_str()},
        });
        let (code, reason, why) = match status {
            MessageStatus::Success => ("SUCCESS", None, None),
            MessageStatus::Failed(why) => {
                ("FAIL_PERMANENT", Some("m_foreign_network_error"), Some(why))
            }
            MessageStatus::Unsupported(why) => ("FAIL_PERMANENT", Some("m_unsupported"), Some(why)),
        };
        content["status"] = code.into();
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        if let Some(why) = why {
            content["message"] = why.clone().into();
            content["error"] = why.into();
        }
        let txn = format!("status-{}", event.event_id);
        if let Err(error) = self
            .matrix
            .send_message(
                &self.bot,
                &event.room_id,
                "com.beeper.message_send_status",
                &content,
                &txn,
                None,
            )
            .await
        {
            tracing::warn!(event = %event.event_id, %error, "could not post the message status");
        }
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
        let new_content = event.content.get("m.new_content");
        let new_media = new_content
            .and_then(|c| c.get("msgtype"))
            .and_then(Value::as_str)
            .is_some_and(crate::bridge::media::is_media_msgtype);
        // A media's edit changes its caption.
        let new_content = if new_media {
            new_content.map(|c| convert::matrix_caption(c).unwrap_or_default())
        } else {
            new_content.and_then(convert::matrix_to_max)
        };
        let (Some(target), Some(mut content)) = (target, new_content) else {
            return Ok(());
        };
        content.rename_mentions(|user| self.max_name(session, user));
        let Some(original) = self.store.messages().by_event_id(target).await? else {
            return Ok(());
        };
        if original.sender != session.max_user_id {
            self.bot_notice(
                &event.room_id,
                "⚠️ Only your own messages can be edited on MAX.",
            )
            .await;
            let why = "only your own messages can be edited on MAX".to_owned();
            self.message_status(event, MessageStatus::Unsupported(why))
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
            let why = format!("longer than {} characters", convert::MAX_TEXT_CHARS);
            self.message_status(event, MessageStatus::Failed(why)).await;
            return Ok(());
        }
        let chat = maxproto::types::ChatId(key.chat_id);
        let message_id = maxproto::types::MessageId(original.max_message_id);
        let edited = async {
            // MSG_EDIT replaces the media with what it is given: the
            // message's own attaches go back with the new caption.
            let attachments = if new_media {
                let message = session.client.get_message(chat, message_id).await?;
                message.map(|m| m.attaches).unwrap_or_default()
            } else {
                Vec::new()
            };
            let request = MsgEditRequest {
                chat_id: chat,
                message_id,
                text: content.text,
                elements: content.elements,
                attachments,
                extra: Default::default(),
            };
            session.client.call(&request).await
        };
        match edited.await {
            Ok(answer) => {
                self.metrics.bridged(
                    Direction::MatrixToMax,
                    "edit",
                    std::time::Duration::ZERO,
                    crate::metrics::age_of(event.origin_server_ts as i64),
                );
                let edit_time = answer.message.update_time.unwrap_or(answer.message.time);
                session.remember_own_edit(original.max_message_id, edit_time);
                // Recorded as bridged, so a catch-up does not send it back.
                self.store
                    .messages()
                    .set_edited_ms(
                        key.chat_id,
                        key.receiver,
                        original.max_message_id,
                        edit_time,
                    )
                    .await?;
                self.message_status(event, MessageStatus::Success).await;
            }
            Err(error) => {
                let why = crate::bridge::commands::describe(&error);
                self.bot_notice(
                    &event.room_id,
                    &format!("⚠️ Your edit was not delivered to MAX: {why}"),
                )
                .await;
                self.message_status(event, MessageStatus::Failed(why)).await;
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
        // Rows of a message deleted already (a redelivered redaction).
        let rows: Vec<MessageRow> = {
            let mut live = Vec::new();
            for row in rows {
                if !self
                    .store
                    .messages()
                    .is_deleted(row.chat_id, row.receiver, row.max_message_id)
                    .await?
                {
                    live.push(row);
                }
            }
            live
        };
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
            Ok(_) => {
                self.metrics.bridged(
                    Direction::MatrixToMax,
                    "m.room.redaction",
                    std::time::Duration::ZERO,
                    crate::metrics::age_of(event.origin_server_ts as i64),
                );
                for row in &rows {
                    self.store
                        .messages()
                        .set_deleted(key.chat_id, key.receiver, row.max_message_id)
                        .await?;
                }
                self.message_status(event, MessageStatus::Success).await;
            }
            Err(error) => {
                let why = crate::bridge::commands::describe(&error);
                self.bot_notice(
                    &event.room_id,
                    &format!("⚠️ The message was not deleted on MAX: {why}"),
                )
                .await;
                self.message_status(event, MessageStatus::Failed(why)).await;
            }
        }
        Ok(())
    }
}

/// Why a send to MAX did not go through, and whether the same send may
/// still succeed (MAX silent or the connection being re-established).
struct SendFailure {
    reason: String,
    transient: bool,
}

impl SendFailure {
    fn transient(reason: impl Into<String>) -> SendFailure {
        SendFailure {
            reason: reason.into(),
            transient: true,
        }
    }
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}
