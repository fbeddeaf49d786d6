//! Reactions both ways. MAX allows one reaction per user and message, and its
//! pushes (155/156, and 135 in groups) carry only counters, so the bridge asks
//! for the detailed list (181) and brings the portal's ghost reactions in line
//! with it. A Matrix user's reaction becomes MSG_REACTION (178); redacting it,
//! MSG_CANCEL_REACTION (179).

use super::Bridge;
use super::login::LoginSession;
use super::portal::{PortalError, PortalKey};
use crate::bridge::message::MessageStatus;
use crate::matrix::RoomEvent;
use crate::store::ReactionRow;
use maxproto::types::{
    ChatId, MessageId, MsgCancelReactionRequest, MsgGetDetailedReactionsRequest,
    MsgReactionRequest, Reaction,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// MAX allows at most 8 distinct reactions; a page this size holds every
/// user's on ordinary messages.
const DETAILED_PAGE: i64 = 100;

/// The emoji of a reaction as MAX sends it: a bare string, or
/// `{reactionType: "EMOJI", id}`.
fn emoji_of(reaction: &Value) -> Option<String> {
    match reaction {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl Bridge {
    /// Brings the Matrix reactions on one bridged message in line with MAX.
    pub(crate) async fn sync_reactions(
        self: &Arc<Self>,
        session: &Arc<LoginSession>,
        key: PortalKey,
        message_id: i64,
    ) -> Result<(), PortalError> {
        let Some(target) = self
            .store
            .messages()
            .by_max_id(key.chat_id, key.receiver, message_id)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let Some(room) = super::room_id(&target.room_id) else {
            return Ok(());
        };
        let request = MsgGetDetailedReactionsRequest {
            chat_id: ChatId(key.chat_id),
            message_id: MessageId(message_id),
            count: Some(DETAILED_PAGE),
            extra: Default::default(),
        };
        let answer = session.client.call(&request).await?;
        let on_max: BTreeMap<i64, String> = answer
            .reactions
            .iter()
            .filter_map(|r| Some((r.user_id.0, emoji_of(&r.reaction)?)))
            .collect();
        let bridged = self
            .store
            .reactions()
            .for_message(key.chat_id, key.receiver, message_id)
            .await?;
        for row in &bridged {
            if on_max.get(&row.max_user_id) != Some(&row.emoji) {
                self.redact_reaction(row).await?;
            }
        }
        for (user, emoji) in on_max {
            let same = bridged
                .iter()
                .any(|r| r.max_user_id == user && r.emoji == emoji);
            // The Matrix user's own reactions from other MAX devices need
            // their Matrix account to post them (double puppeting).
            if same || (user == session.max_user_id && !self.puppets(&session.mxid)) {
                continue;
            }
            let ghost = self.speaker(session, user).await?;
            self.add_to_room(&room, &ghost).await?;
            let mut content = json!({"m.relates_to": {
                "rel_type": "m.annotation",
                "event_id": target.event_id,
                "key": emoji,
            }});
            self.mark_puppet_content(&ghost, &mut content);
            let txn = format!(
                "max-reaction-{}-{}-{message_id}-{user}-{emoji}",
                key.receiver, key.chat_id
            );
            let event = self
                .client_for(&ghost)
                .send_message(&ghost, &room, "m.reaction", &content, &txn, None)
                .await?;
            self.metrics.bridged(
                crate::metrics::Direction::MaxToMatrix,
                "m.reaction",
                std::time::Duration::ZERO,
                None,
            );
            self.store
                .reactions()
                .upsert(&ReactionRow {
                    chat_id: key.chat_id,
                    receiver: key.receiver,
                    max_message_id: message_id,
                    max_user_id: user,
                    emoji,
                    event_id: event.to_string(),
                    room_id: room.to_string(),
                })
                .await?;
        }
        Ok(())
    }

    async fn redact_reaction(&self, row: &ReactionRow) -> Result<(), PortalError> {
        if let (Some(room), Ok(event)) = (
            super::room_id(&row.room_id),
            ruma::OwnedEventId::try_from(row.event_id.as_str()),
        ) {
            let txn = format!("redact-{}", row.event_id);
            self.matrix
                .redact(
                    &self.bot,
                    &room,
                    &event,
                    Some("Reaction removed on MAX"),
                    &txn,
                )
                .await?;
        }
        self.store.reactions().delete(row).await?;
        Ok(())
    }

    /// The portal owner reacted in Matrix: react on MAX. MAX keeps one
    /// reaction per user, so an earlier one of theirs goes from Matrix too.
    /// The bridged message an event relates to. Some clients put a
    /// reaction on the edit they show rather than on the original: an edit
    /// stands for the message it replaces.
    async fn bridged_target(
        &self,
        room: &ruma::RoomId,
        target: &str,
    ) -> Result<Target, PortalError> {
        if let Some(row) = self.store.messages().by_event_id(target).await? {
            return Ok(Target::Bridged(row));
        }
        let Ok(target) = ruma::EventId::parse(target) else {
            return Ok(Target::Unknown);
        };
        let Some(event) = self.matrix.get_event(&self.bot, room, &target).await? else {
            return Ok(Target::Unknown);
        };
        if event["sender"] == self.bot.as_str() {
            return Ok(Target::Bots);
        }
        let relation = &event["content"]["m.relates_to"];
        let original = match relation["event_id"].as_str() {
            Some(original) if relation["rel_type"] == "m.replace" => original,
            _ => return Ok(Target::Unknown),
        };
        Ok(match self.store.messages().by_event_id(original).await? {
            Some(row) => Target::Bridged(row),
            None => Target::Unknown,
        })
    }

    pub(crate) async fn react_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
    ) -> Result<(), PortalError> {
        let relation = event.content.get("m.relates_to");
        let target = relation
            .and_then(|r| r.get("event_id"))
            .and_then(Value::as_str);
        let emoji = relation.and_then(|r| r.get("key")).and_then(Value::as_str);
        let (Some(target), Some(emoji)) = (target, emoji) else {
            return Ok(());
        };
        let message = match self.bridged_target(&event.room_id, target).await? {
            Target::Bridged(message) => message,
            // The bot's notices are no MAX messages; reacting to one is
            // the user's own business.
            Target::Bots => return Ok(()),
            Target::Unknown => {
                self.bot_notice(
                &event.room_id,
                &format!(
                    "⚠️ Your reaction {emoji} was not delivered to MAX: the message it is on is not a bridged one."
                ),
            )
            .await;
                let why = "the message it is on is not a bridged one".to_owned();
                self.message_status(event, MessageStatus::Unsupported(why))
                    .await;
                return Ok(());
            }
        };
        let request = MsgReactionRequest {
            chat_id: ChatId(key.chat_id),
            message_id: MessageId(message.max_message_id),
            reaction: Reaction::emoji(emoji),
            extra: Default::default(),
        };
        if let Err(error) = session.client.call(&request).await {
            let why = super::commands::describe(&error);
            self.bot_notice(
                &event.room_id,
                &format!("⚠️ Your reaction {emoji} was not delivered to MAX: {why}"),
            )
            .await;
            self.message_status(event, MessageStatus::Failed(why)).await;
            // Left in place, it would show the user a reaction that the
            // other side never sees.
            let txn = format!("refused-{}", event.event_id);
            if let Err(error) = self
                .matrix
                .redact(
                    &self.bot,
                    &event.room_id,
                    &event.event_id,
                    Some("MAX did not take this reaction"),
                    &txn,
                )
                .await
            {
                tracing::warn!(event = %event.event_id, %error, "could not remove a reaction MAX refused");
            }
            return Ok(());
        }
        self.message_status(event, MessageStatus::Success).await;
        self.metrics.bridged(
            crate::metrics::Direction::MatrixToMax,
            "m.reaction",
            std::time::Duration::ZERO,
            crate::metrics::age_of(event.origin_server_ts as i64),
        );
        let previous = self
            .store
            .reactions()
            .for_message(key.chat_id, key.receiver, message.max_message_id)
            .await?
            .into_iter()
            .find(|r| r.max_user_id == session.max_user_id);
        if let Some(previous) = previous.filter(|p| p.event_id != event.event_id.as_str()) {
            self.redact_reaction(&previous).await?;
        }
        self.store
            .reactions()
            .upsert(&ReactionRow {
                chat_id: key.chat_id,
                receiver: key.receiver,
                max_message_id: message.max_message_id,
                max_user_id: session.max_user_id,
                emoji: emoji.to_owned(),
                event_id: event.event_id.to_string(),
                room_id: event.room_id.to_string(),
            })
            .await?;
        Ok(())
    }

    /// The portal owner redacted their reaction: cancel it on MAX. Returns
    /// whether the redacted event was a bridged reaction.
    pub(crate) async fn unreact_on_max(
        &self,
        session: &LoginSession,
        key: PortalKey,
        event: &RoomEvent,
        target: &str,
    ) -> Result<bool, PortalError> {
        let Some(row) = self.store.reactions().by_event_id(target).await? else {
            return Ok(false);
        };
        if row.max_user_id != session.max_user_id
            || row.chat_id != key.chat_id
            || row.receiver != key.receiver
        {
            return Ok(true);
        }
        let request = MsgCancelReactionRequest {
            chat_id: ChatId(key.chat_id),
            message_id: MessageId(row.max_message_id),
            extra: Default::default(),
        };
        match session.client.call(&request).await {
            Ok(_) => {
                self.store.reactions().delete(&row).await?;
            }
            Err(error) => {
                self.bot_notice(
                    &event.room_id,
                    &format!(
                        "⚠️ Your reaction was not removed on MAX: {}",
                        super::commands::describe(&error)
                    ),
                )
                .await;
            }
        }
        Ok(true)
    }
}

/// What a Matrix reaction is on.
enum Target {
    Bridged(crate::store::MessageRow),
    /// A notice of the bridge bot.
    Bots,
    Unknown,
}
