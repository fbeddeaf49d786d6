//! Server pushes (§3): one struct per push with a known shape, and [`Push`],
//! the union a client dispatches on.

use super::chat::Chat;
use super::common::Presence;
use super::ids::{ChatId, MessageId, UserId, opt_int_or_string};
use super::message::{Message, ReactionCounter, ReactionInfo};
use super::messaging::TypingType;
use super::user::User;
use super::{Extra, from_payload};
use crate::frame::Frame;
use crate::opcode::Opcode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// 128 NOTIF_MESSAGE: a new message in one of your chats (also your own
/// from other devices, and on JSON edits/deletions with `message.status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifMessage {
    pub chat_id: ChatId,
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_message_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl NotifMessage {
    /// Payload of the optional ack (`cmd` 1, the push's seq, opcode 128).
    pub fn ack_payload(&self) -> Value {
        serde_json::json!({
            "chatId": self.chat_id.0,
            "messageId": self.message.id.to_string(),
        })
    }
}

/// 129 NOTIF_TYPING.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifTyping {
    pub chat_id: ChatId,
    pub user_id: UserId,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TypingType>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 130 NOTIF_MARK: someone (or your other session) read up to `mark`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifMark {
    pub chat_id: ChatId,
    pub user_id: UserId,
    /// Read up to this time (ms).
    #[serde(default)]
    pub mark: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_as_unread: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 131 NOTIF_CONTACT (shape unpublished; probably `{contact}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifContact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<User>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 132 NOTIF_PRESENCE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifPresence {
    pub user_id: UserId,
    #[serde(default)]
    pub presence: Presence,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 135 NOTIF_CHAT: a chat was created or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifChat {
    pub chat: Chat,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 136 NOTIF_ATTACH: an uploaded file or video is processed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifAttach {
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub file_id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_id: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 140 NOTIF_MSG_DELETE_RANGE (shape unverified).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifMsgDeleteRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 142 NOTIF_MSG_DELETE: `{chat, messageIds, ttl?}` (or `chatId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifMsgDelete {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<Chat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    #[serde(default)]
    pub message_ids: Vec<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl NotifMsgDelete {
    /// The chat the deletion happened in, from `chatId` or `chat.id`.
    pub fn chat_id(&self) -> Option<ChatId> {
        self.chat_id
            .or_else(|| self.chat.as_ref().map(|chat| chat.id))
    }
}

/// 155 NOTIF_MSG_REACTIONS_CHANGED: flat counters, message id as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifReactionsChanged {
    pub chat_id: ChatId,
    #[serde(serialize_with = "MessageId::serialize_number")]
    pub message_id: MessageId,
    #[serde(default)]
    pub counters: Vec<ReactionCounter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// 156 NOTIF_MSG_YOU_REACTED: `{chatId, messageId, reactionInfo}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifYouReacted {
    pub chat_id: ChatId,
    #[serde(serialize_with = "MessageId::serialize_number")]
    pub message_id: MessageId,
    #[serde(default)]
    pub reaction_info: ReactionInfo,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A push whose payload does not fit the type of its opcode.
#[derive(Debug, thiserror::Error)]
#[error("payload of push {opcode} does not fit its type: {source}")]
pub struct PushError {
    pub opcode: Opcode,
    /// The payload as received, so that the caller can log or keep it.
    pub payload: Value,
    #[source]
    pub source: serde_json::Error,
}

/// A server push (`cmd` 0 from the server), by opcode. Pushes whose shape
/// is not published carry their raw payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// 1: answer with `cmd` 1 and the same seq.
    Ping(Value),
    /// 3: drop the connection and reconnect.
    Reconnect(Value),
    Message(NotifMessage),
    Typing(NotifTyping),
    Mark(NotifMark),
    Contact(NotifContact),
    Presence(NotifPresence),
    Config(Value),
    Chat(NotifChat),
    Attach(NotifAttach),
    CallStart(Value),
    MsgDeleteRange(NotifMsgDeleteRange),
    MsgDelete(NotifMsgDelete),
    Draft(Value),
    DraftDiscard(Value),
    MsgDelayed(Value),
    ReactionsChanged(NotifReactionsChanged),
    YouReacted(NotifYouReacted),
    Profile(Value),
    Folders(Value),
    Banners(Value),
    Transcription(Value),
    /// Any other opcode; clients must ignore it, never answer with an error.
    Unknown {
        opcode: Opcode,
        payload: Value,
    },
}

impl Push {
    /// Parses the payload of a push with the given opcode. A `null`
    /// payload reads as `{}`.
    pub fn parse(opcode: Opcode, payload: Value) -> Result<Push, PushError> {
        fn typed<T: serde::de::DeserializeOwned>(
            opcode: Opcode,
            payload: Value,
            wrap: fn(T) -> Push,
        ) -> Result<Push, PushError> {
            match from_payload::<T>(payload.clone()) {
                Ok(parsed) => Ok(wrap(parsed)),
                Err(source) => Err(PushError {
                    opcode,
                    payload,
                    source,
                }),
            }
        }
        Ok(match opcode {
            Opcode::PING => Push::Ping(payload),
            Opcode::RECONNECT => Push::Reconnect(payload),
            Opcode::NOTIF_MESSAGE => return typed(opcode, payload, Push::Message),
            Opcode::NOTIF_TYPING => return typed(opcode, payload, Push::Typing),
            Opcode::NOTIF_MARK => return typed(opcode, payload, Push::Mark),
            Opcode::NOTIF_CONTACT => return typed(opcode, payload, Push::Contact),
            Opcode::NOTIF_PRESENCE => return typed(opcode, payload, Push::Presence),
            Opcode::NOTIF_CONFIG => Push::Config(payload),
            Opcode::NOTIF_CHAT => return typed(opcode, payload, Push::Chat),
            Opcode::NOTIF_ATTACH => return typed(opcode, payload, Push::Attach),
            Opcode::NOTIF_CALL_START => Push::CallStart(payload),
            Opcode::NOTIF_MSG_DELETE_RANGE => return typed(opcode, payload, Push::MsgDeleteRange),
            Opcode::NOTIF_MSG_DELETE => return typed(opcode, payload, Push::MsgDelete),
            Opcode::NOTIF_DRAFT => Push::Draft(payload),
            Opcode::NOTIF_DRAFT_DISCARD => Push::DraftDiscard(payload),
            Opcode::NOTIF_MSG_DELAYED => Push::MsgDelayed(payload),
            Opcode::NOTIF_MSG_REACTIONS_CHANGED => {
                return typed(opcode, payload, Push::ReactionsChanged);
            }
            Opcode::NOTIF_MSG_YOU_REACTED => return typed(opcode, payload, Push::YouReacted),
            Opcode::NOTIF_PROFILE => Push::Profile(payload),
            Opcode::NOTIF_FOLDERS => Push::Folders(payload),
            Opcode::NOTIF_BANNERS => Push::Banners(payload),
            Opcode::NOTIF_TRANSCRIPTION => Push::Transcription(payload),
            _ => Push::Unknown { opcode, payload },
        })
    }

    /// Parses a push frame (the caller has checked it is `cmd` 0).
    pub fn from_frame(frame: &Frame) -> Result<Push, PushError> {
        Push::parse(frame.opcode, frame.payload.clone())
    }

    /// Like [`Push::parse`], but a payload that does not fit its type
    /// becomes [`Push::Unknown`] (the error is returned alongside for
    /// logging) instead of failing.
    pub fn parse_lenient(opcode: Opcode, payload: Value) -> (Push, Option<PushError>) {
        match Push::parse(opcode, payload) {
            Ok(push) => (push, None),
            Err(err) => {
                let push = Push::Unknown {
                    opcode,
                    payload: err.payload.clone(),
                };
                (push, Some(err))
            }
        }
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            Push::Ping(_) => Opcode::PING,
            Push::Reconnect(_) => Opcode::RECONNECT,
            Push::Message(_) => Opcode::NOTIF_MESSAGE,
            Push::Typing(_) => Opcode::NOTIF_TYPING,
            Push::Mark(_) => Opcode::NOTIF_MARK,
            Push::Contact(_) => Opcode::NOTIF_CONTACT,
            Push::Presence(_) => Opcode::NOTIF_PRESENCE,
            Push::Config(_) => Opcode::NOTIF_CONFIG,
            Push::Chat(_) => Opcode::NOTIF_CHAT,
            Push::Attach(_) => Opcode::NOTIF_ATTACH,
            Push::CallStart(_) => Opcode::NOTIF_CALL_START,
            Push::MsgDeleteRange(_) => Opcode::NOTIF_MSG_DELETE_RANGE,
            Push::MsgDelete(_) => Opcode::NOTIF_MSG_DELETE,
            Push::Draft(_) => Opcode::NOTIF_DRAFT,
            Push::DraftDiscard(_) => Opcode::NOTIF_DRAFT_DISCARD,
            Push::MsgDelayed(_) => Opcode::NOTIF_MSG_DELAYED,
            Push::ReactionsChanged(_) => Opcode::NOTIF_MSG_REACTIONS_CHANGED,
            Push::YouReacted(_) => Opcode::NOTIF_MSG_YOU_REACTED,
            Push::Profile(_) => Opcode::NOTIF_PROFILE,
            Push::Folders(_) => Opcode::NOTIF_FOLDERS,
            Push::Banners(_) => Opcode::NOTIF_BANNERS,
            Push::Transcription(_) => Opcode::NOTIF_TRANSCRIPTION,
            Push::Unknown { opcode, .. } => *opcode,
        }
    }

    /// The payload to put in a push frame (for servers and tests).
    pub fn to_payload(&self) -> serde_json::Result<Value> {
        match self {
            Push::Message(p) => serde_json::to_value(p),
            Push::Typing(p) => serde_json::to_value(p),
            Push::Mark(p) => serde_json::to_value(p),
            Push::Contact(p) => serde_json::to_value(p),
            Push::Presence(p) => serde_json::to_value(p),
            Push::Chat(p) => serde_json::to_value(p),
            Push::Attach(p) => serde_json::to_value(p),
            Push::MsgDeleteRange(p) => serde_json::to_value(p),
            Push::MsgDelete(p) => serde_json::to_value(p),
            Push::ReactionsChanged(p) => serde_json::to_value(p),
            Push::YouReacted(p) => serde_json::to_value(p),
            Push::Ping(raw)
            | Push::Reconnect(raw)
            | Push::Config(raw)
            | Push::CallStart(raw)
            | Push::Draft(raw)
            | Push::DraftDiscard(raw)
            | Push::MsgDelayed(raw)
            | Push::Profile(raw)
            | Push::Folders(raw)
            | Push::Banners(raw)
            | Push::Transcription(raw)
            | Push::Unknown { payload: raw, .. } => Ok(raw.clone()),
        }
    }

    /// A push frame with the given server-side seq.
    pub fn to_frame(&self, seq: u64) -> serde_json::Result<Frame> {
        Ok(Frame::push(seq, self.opcode(), self.to_payload()?))
    }
}
